// Reference quantization with an importance matrix, as llama-quantize does it at this commit:
// the file read by llama.cpp's own common_imatrix_load, its sums divided by their counts (GGUF:
// per expert, 1 where a count is 0; legacy: by the number of calls), handed to
// llama_model_quantize with the quantize.imatrix.* metadata llama-quantize writes.
//
// usage: quantize_imatrix INPUT OUTPUT FTYPE IMATRIX THREADS
#include "imatrix-loader.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

static llama_model_kv_override kv_str(const char * key, const std::string & value) {
    llama_model_kv_override o{};
    std::strcpy(o.key, key);
    o.tag = LLAMA_KV_OVERRIDE_TYPE_STR;
    std::strncpy(o.val_str, value.c_str(), 127);
    o.val_str[127] = '\0';
    return o;
}

static llama_model_kv_override kv_int(const char * key, int64_t value) {
    llama_model_kv_override o{};
    std::strcpy(o.key, key);
    o.tag = LLAMA_KV_OVERRIDE_TYPE_INT;
    o.val_i64 = value;
    return o;
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        std::fprintf(stderr, "usage: %s INPUT OUTPUT FTYPE IMATRIX THREADS\n", argv[0]);
        return 2;
    }
    common_imatrix loaded;
    if (!common_imatrix_load(argv[4], loaded)) {
        std::fprintf(stderr, "failed to load the imatrix\n");
        return 1;
    }
    std::unordered_map<std::string, std::vector<float>> data;
    for (const auto & [name, entry] : loaded.entries) {
        std::vector<float> & e = data[name];
        e.resize(entry.sums.size());
        if (!loaded.is_legacy) {
            const int64_t n = (int64_t) entry.counts.size();
            const int64_t ne0 = (int64_t) entry.sums.size() / n;
            for (int64_t j = 0; j < n; ++j) {
                const float count = (float) entry.counts[j];
                for (int64_t i = 0; i < ne0; ++i) {
                    e[j * ne0 + i] = count > 0.0f ? entry.sums[j * ne0 + i] / count : 1.0f;
                }
            }
        } else {
            const int64_t ncall = entry.counts.empty() ? 0 : entry.counts[0];
            for (size_t i = 0; i < entry.sums.size(); ++i) {
                e[i] = ncall > 0 ? entry.sums[i] / ncall : entry.sums[i];
            }
        }
    }
    std::vector<llama_model_imatrix_data> i_data;
    for (const auto & kv : data) {
        i_data.push_back({kv.first.c_str(), kv.second.data(), kv.second.size()});
    }
    i_data.push_back({nullptr, nullptr, 0});
    std::vector<llama_model_kv_override> kvs;
    kvs.push_back(kv_str("quantize.imatrix.file", argv[4]));
    if (!loaded.datasets.empty()) {
        kvs.push_back(kv_str("quantize.imatrix.dataset", loaded.datasets[0]));
    }
    kvs.push_back(kv_int("quantize.imatrix.entries_count", (int64_t) data.size()));
    if (loaded.chunk_count > 0) {
        kvs.push_back(kv_int("quantize.imatrix.chunks_count", loaded.chunk_count));
    }
    kvs.emplace_back();
    kvs.back().key[0] = 0;

    llama_backend_init();
    llama_model_quantize_params params = llama_model_quantize_default_params();
    params.ftype = (enum llama_ftype) std::atoi(argv[3]);
    params.nthread = std::atoi(argv[5]);
    params.imatrix = i_data.data();
    params.kv_overrides = kvs.data();
    const uint32_t status = llama_model_quantize(argv[1], argv[2], &params);
    llama_backend_free();
    return status == 0 ? 0 : 1;
}

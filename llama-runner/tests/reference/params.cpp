// What llama.cpp's own command-line parser builds for a set of flags, printed field by field.
//
// Runs common_params_parse (common/arg.cpp) on the flags given here, lowers the result with
// common_model_params_to_llama / common_context_params_to_llama (common/common.cpp) and the CPU
// placement with ggml_threadpool_params_from_cpu_params, and prints every field the runner sets as
// `key=value` lines on stdout. The test lowers the same flags with llama_runner::params and
// compares the two dumps key by key. Nothing is loaded: the parser only needs `-m` to exist.
//
// usage: params [llama.cpp flags...]
//
// The parser runs as LLAMA_EXAMPLE_PARALLEL: it inherits every common option, has `-kvu` (which
// LLAMA_EXAMPLE_COMMON lacks) and keeps the plain `-np` default of 1 (LLAMA_EXAMPLE_SERVER turns
// it into -1, "auto", resolved later by the server).
#include "arg.h"
#include "common.h"
#include "llama.h"

#include <cstdio>
#include <string>

static void quiet(enum ggml_log_level, const char *, void *) {}

static const char * b(bool v) { return v ? "true" : "false"; }

static std::string mask(const bool * m) {
    std::string out;
    for (int i = 0; i < GGML_MAX_N_THREADS; i++) {
        if (m[i]) {
            if (!out.empty()) out += ",";
            out += std::to_string(i);
        }
    }
    return out.empty() ? "none" : out;
}

static void print_pool(const char * prefix, const ggml_threadpool_params & p) {
    std::printf("%s.n_threads=%d\n", prefix, p.n_threads);
    std::printf("%s.cpumask=%s\n", prefix, mask(p.cpumask).c_str());
    std::printf("%s.strict_cpu=%s\n", prefix, b(p.strict_cpu));
    std::printf("%s.prio=%d\n", prefix, (int) p.prio);
    std::printf("%s.poll=%u\n", prefix, p.poll);
}

int main(int argc, char ** argv) {
    llama_log_set(quiet, nullptr);
    llama_backend_init();

    common_params params;
    if (!common_params_parse(argc, argv, params, LLAMA_EXAMPLE_PARALLEL)) {
        std::fprintf(stderr, "common_params_parse rejected the flags\n");
        return 2;
    }
    llama_model_params mp = common_model_params_to_llama(params);
    llama_context_params cp = common_context_params_to_llama(params);

    // llama_model_params
    if (mp.devices == nullptr) {
        std::printf("devices=default\n");
    } else {
        std::string names;
        for (ggml_backend_dev_t * d = mp.devices; *d; ++d) {
            if (!names.empty()) names += ",";
            names += ggml_backend_dev_name(*d);
        }
        std::printf("devices=[%s]\n", names.c_str());
    }
    std::printf("n_gpu_layers=%d\n", mp.n_gpu_layers);
    std::printf("split_mode=%d\n", (int) mp.split_mode);
    std::printf("main_gpu=%d\n", mp.main_gpu);
    std::printf("load_mode=%d\n", (int) mp.load_mode);
    std::printf("use_extra_bufts=%s\n", b(mp.use_extra_bufts));
    std::printf("no_host=%s\n", b(mp.no_host));
    std::printf("check_tensors=%s\n", b(mp.check_tensors));
    std::printf("vocab_only=%s\n", b(mp.vocab_only));
    std::printf("no_alloc=%s\n", b(mp.no_alloc));
    // The overrides up to the terminator (common pads the array with terminators).
    int n = 0;
    for (const llama_model_tensor_buft_override * o = mp.tensor_buft_overrides; o && o->pattern; ++o, ++n) {
        std::printf("override.%d=%s=%s\n", n, o->pattern, ggml_backend_buft_name(o->buft));
    }
    std::printf("overrides=%d\n", n);
    // llama.cpp reads llama_max_devices() entries; NULL means all zero.
    std::string split;
    for (size_t i = 0; i < llama_max_devices(); i++) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%s%g", i ? "," : "", mp.tensor_split ? mp.tensor_split[i] : 0.0f);
        split += buf;
    }
    std::printf("tensor_split=%s\n", split.c_str());

    // llama_context_params
    std::printf("n_ctx=%u\n", cp.n_ctx);
    std::printf("n_batch=%u\n", cp.n_batch);
    std::printf("n_ubatch=%u\n", cp.n_ubatch);
    std::printf("n_seq_max=%u\n", cp.n_seq_max);
    std::printf("n_threads=%d\n", cp.n_threads);
    std::printf("n_threads_batch=%d\n", cp.n_threads_batch);
    std::printf("flash_attn_type=%d\n", (int) cp.flash_attn_type);
    std::printf("type_k=%s\n", ggml_type_name(cp.type_k));
    std::printf("type_v=%s\n", ggml_type_name(cp.type_v));
    std::printf("offload_kqv=%s\n", b(cp.offload_kqv));
    std::printf("op_offload=%s\n", b(cp.op_offload));
    std::printf("swa_full=%s\n", b(cp.swa_full));
    std::printf("kv_unified=%s\n", b(cp.kv_unified));
    std::printf("no_perf=%s\n", b(cp.no_perf));
    std::printf("embeddings=%s\n", b(cp.embeddings));

    // CPU placement: the threadpools llama.cpp's tools create for generation and for batches.
    print_pool("pool", ggml_threadpool_params_from_cpu_params(params.cpuparams));
    print_pool("pool_batch", ggml_threadpool_params_from_cpu_params(params.cpuparams_batch));
    return 0;
}

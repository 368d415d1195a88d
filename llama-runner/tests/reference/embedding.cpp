// Reference embeddings computed with llama.h only, as llama.cpp's embedding tool does: every
// prompt tokenized (add_special and parse_special on), one sequence each, all in one batch with
// every token an output, then llama_get_embeddings_seq per sequence (pooled) or
// llama_get_embeddings_ith per token (pooling none), normalised as common_embd_normalize.
//
// usage: embedding MODEL POOLING NORMALIZE N_CTX N_UBATCH THREADS PROMPT...
//   POOLING: -1 unspecified, 0 none, 1 mean, 2 cls, 3 last, 4 rank (enum llama_pooling_type)
// prints "tokens S: id id ..." per prompt, then "pooling: N" (the context's actual pooling) and
// "embd S: v v ..." (pooled) or "embd S T: v v ..." (per token), values with %.9g.
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// common_embd_normalize (common/common.cpp), copied verbatim in its arithmetic.
static void embd_normalize(const float * inp, float * out, int n, int embd_norm) {
    double sum = 0.0;
    switch (embd_norm) {
        case -1:
            sum = 1.0;
            break;
        case 0:
            for (int i = 0; i < n; i++) {
                if (sum < std::abs(inp[i])) {
                    sum = std::abs(inp[i]);
                }
            }
            sum /= 32760.0;
            break;
        case 2:
            for (int i = 0; i < n; i++) {
                sum += inp[i] * inp[i];
            }
            sum = std::sqrt(sum);
            break;
        default:
            for (int i = 0; i < n; i++) {
                sum += std::pow(std::abs(inp[i]), embd_norm);
            }
            sum = std::pow(sum, 1.0 / embd_norm);
            break;
    }
    const float norm = sum > 0.0 ? 1.0 / sum : 0.0f;
    for (int i = 0; i < n; i++) {
        out[i] = inp[i] * norm;
    }
}

static void print_vec(const float * v, int n, int norm) {
    std::vector<float> out(n);
    embd_normalize(v, out.data(), n, norm);
    for (int i = 0; i < n; i++) {
        std::printf(" %.9g", out[i]);
    }
    std::printf("\n");
}

int main(int argc, char ** argv) {
    if (argc < 8) {
        std::fprintf(stderr, "usage: %s MODEL POOLING NORMALIZE N_CTX N_UBATCH THREADS PROMPT...\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int pooling = std::atoi(argv[2]);
    const int norm = std::atoi(argv[3]);
    const int n_ctx = std::atoi(argv[4]);
    const int n_ubatch = std::atoi(argv[5]);
    const int threads = std::atoi(argv[6]);
    const int n_prompts = argc - 7;

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) {
        std::fprintf(stderr, "load failed\n");
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::vector<std::vector<llama_token>> prompts;
    size_t total = 0;
    for (int s = 0; s < n_prompts; s++) {
        const std::string text = argv[7 + s];
        std::vector<llama_token> toks(text.size() + 8);
        int n = llama_tokenize(vocab, text.c_str(), (int) text.size(), toks.data(), (int) toks.size(), true, true);
        if (n < 0) {
            toks.resize(-n);
            n = llama_tokenize(vocab, text.c_str(), (int) text.size(), toks.data(), (int) toks.size(), true, true);
        }
        toks.resize(n);
        total += toks.size();
        std::printf("tokens %d:", s);
        for (llama_token t : toks) {
            std::printf(" %d", t);
        }
        std::printf("\n");
        prompts.push_back(toks);
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ubatch;
    cp.n_ubatch = n_ubatch;
    cp.n_seq_max = n_prompts;
    cp.kv_unified = true;
    cp.swa_full = false;  // the runner's (and the CLI's) default
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.embeddings = true;
    cp.pooling_type = (enum llama_pooling_type) pooling;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "context failed\n");
        return 1;
    }
    const enum llama_pooling_type actual = llama_pooling_type(ctx);
    std::printf("pooling: %d\n", (int) actual);

    llama_batch batch = llama_batch_init((int) total, 0, 1);
    for (int s = 0; s < n_prompts; s++) {
        for (size_t i = 0; i < prompts[s].size(); i++) {
            const int k = batch.n_tokens++;
            batch.token[k] = prompts[s][i];
            batch.pos[k] = (llama_pos) i;
            batch.n_seq_id[k] = 1;
            batch.seq_id[k][0] = s;
            batch.logits[k] = 1;
        }
    }
    if (llama_decode(ctx, batch) != 0) {
        std::fprintf(stderr, "decode failed\n");
        return 1;
    }
    const int n_embd = actual == LLAMA_POOLING_TYPE_RANK ? (int) llama_model_n_cls_out(model) : llama_model_n_embd_out(model);
    int idx = 0;
    for (int s = 0; s < n_prompts; s++) {
        if (actual == LLAMA_POOLING_TYPE_NONE) {
            for (size_t t = 0; t < prompts[s].size(); t++, idx++) {
                const float * v = llama_get_embeddings_ith(ctx, idx);
                if (!v) {
                    std::fprintf(stderr, "no embedding for batch index %d\n", idx);
                    return 1;
                }
                std::printf("embd %d %zu:", s, t);
                print_vec(v, n_embd, norm);
            }
        } else {
            const float * v = llama_get_embeddings_seq(ctx, s);
            if (!v) {
                std::fprintf(stderr, "no embedding for sequence %d\n", s);
                return 1;
            }
            std::printf("embd %d:", s);
            print_vec(v, n_embd, norm);
        }
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}

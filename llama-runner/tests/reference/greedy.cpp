// Reference greedy generation written directly against llama.h, compiled by the tests against the
// very libraries llama-runner links. Prints the prompt and generated token ids so the test can
// compare them with the runner's output id by id.
//
// usage: greedy MODEL N_PREDICT N_THREADS N_CTX PROMPT
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static void quiet(enum ggml_log_level, const char *, void *) {}

int main(int argc, char ** argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: %s MODEL N_PREDICT N_THREADS N_CTX PROMPT\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int n_predict = std::atoi(argv[2]);
    const int n_threads = std::atoi(argv[3]);
    const int n_ctx = std::atoi(argv[4]);
    const char * prompt = argv[5];

    llama_log_set(quiet, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) { std::fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::vector<llama_token> tokens(std::strlen(prompt) + 2);
    int n = llama_tokenize(vocab, prompt, (int) std::strlen(prompt), tokens.data(), (int) tokens.size(), true, true);
    if (n < 0) {
        tokens.resize(-n);
        n = llama_tokenize(vocab, prompt, (int) std::strlen(prompt), tokens.data(), (int) tokens.size(), true, true);
    }
    if (n < 0) { std::fprintf(stderr, "tokenize failed\n"); return 1; }
    tokens.resize(n);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.swa_full = false; // the CLI default, as the runner uses
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { std::fprintf(stderr, "context failed\n"); return 1; }

    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    const int n_batch = (int) llama_n_batch(ctx);
    for (int i = 0; i < (int) tokens.size(); i += n_batch) {
        int len = std::min(n_batch, (int) tokens.size() - i);
        if (llama_decode(ctx, llama_batch_get_one(tokens.data() + i, len)) != 0) { std::fprintf(stderr, "decode failed\n"); return 1; }
    }

    std::printf("prompt:");
    for (llama_token t : tokens) std::printf(" %d", t);
    std::printf("\ngenerated:");
    for (int i = 0; i < n_predict; i++) {
        llama_token t = llama_sampler_sample(smpl, ctx, -1);
        if (llama_vocab_is_eog(vocab, t)) break;
        std::printf(" %d", t);
        if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) { std::fprintf(stderr, "decode failed\n"); return 1; }
    }
    std::printf("\n");

    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}

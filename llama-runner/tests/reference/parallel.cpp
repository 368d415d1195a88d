// Reference parallel greedy generation written directly against llama.h's batch API, compiled by
// the tests against the very libraries llama-runner links. The batch composition is the one
// llama_runner::parallel::Parallel uses when every prompt fits one batch: first all prompts (one
// sequence each, in order, logits for each prompt's last token), then per step the last token of
// every unfinished sequence, in sequence order. Each sequence has its own greedy sampler and
// stops at an end-of-generation token or after N_PREDICT tokens (the last one not decoded).
//
// usage: parallel MODEL N_PREDICT N_THREADS N_CTX N_BATCH PROMPT...
// prints one line per prompt: "seq I: ids..."
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static void quiet(enum ggml_log_level, const char *, void *) {}

int main(int argc, char ** argv) {
    if (argc < 7) {
        std::fprintf(stderr, "usage: %s MODEL N_PREDICT N_THREADS N_CTX N_BATCH PROMPT...\n", argv[0]);
        return 2;
    }
    const int n_predict = std::atoi(argv[2]);
    const int n_threads = std::atoi(argv[3]);
    const int n_ctx     = std::atoi(argv[4]);
    const int n_batch   = std::atoi(argv[5]);
    const int n_seq     = argc - 6;
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { std::fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::vector<std::vector<llama_token>> prompts(n_seq);
    int total = 0;
    for (int s = 0; s < n_seq; s++) {
        const char * text = argv[6 + s];
        std::vector<llama_token> t(std::strlen(text) + 2);
        int n = llama_tokenize(vocab, text, (int) std::strlen(text), t.data(), (int) t.size(), true, true);
        if (n < 0) { std::fprintf(stderr, "tokenize failed\n"); return 1; }
        t.resize(n);
        prompts[s] = t;
        total += n;
    }
    if (total > n_batch) { std::fprintf(stderr, "the prompts do not fit one batch\n"); return 1; }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = n_ctx;
    cp.n_batch         = n_batch;
    cp.n_ubatch        = n_batch < 512 ? n_batch : 512;
    cp.n_seq_max       = n_seq;
    cp.n_threads       = n_threads;
    cp.n_threads_batch = n_threads;
    cp.swa_full        = false; // the CLI default, as the runner uses
    cp.kv_unified      = false;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { std::fprintf(stderr, "context failed\n"); return 1; }

    std::vector<llama_sampler *> samplers(n_seq);
    for (auto & s : samplers) {
        s = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(s, llama_sampler_init_greedy());
    }
    llama_batch batch = llama_batch_init(total > n_seq ? total : n_seq, 0, 1);
    std::vector<int> out_idx(n_seq, -1);
    for (int s = 0; s < n_seq; s++) {
        for (int i = 0; i < (int) prompts[s].size(); i++) {
            const int k = batch.n_tokens++;
            batch.token[k] = prompts[s][i];
            batch.pos[k] = i;
            batch.n_seq_id[k] = 1;
            batch.seq_id[k][0] = s;
            batch.logits[k] = i + 1 == (int) prompts[s].size();
            if (batch.logits[k]) out_idx[s] = k;
        }
    }
    std::vector<std::vector<llama_token>> generated(n_seq);
    std::vector<bool> done(n_seq, false);
    while (batch.n_tokens > 0) {
        if (llama_decode(ctx, batch) != 0) { std::fprintf(stderr, "decode failed\n"); return 1; }
        std::vector<int> idx = out_idx;
        batch.n_tokens = 0;
        for (int s = 0; s < n_seq; s++) {
            if (done[s] || idx[s] < 0) continue;
            const llama_token t = llama_sampler_sample(samplers[s], ctx, idx[s]);
            if (llama_vocab_is_eog(vocab, t)) { done[s] = true; continue; }
            generated[s].push_back(t);
            if ((int) generated[s].size() >= n_predict) { done[s] = true; continue; }
            const int k = batch.n_tokens++;
            batch.token[k] = t;
            batch.pos[k] = (int) (prompts[s].size() + generated[s].size() - 1);
            batch.n_seq_id[k] = 1;
            batch.seq_id[k][0] = s;
            batch.logits[k] = 1;
            out_idx[s] = k;
        }
    }
    for (int s = 0; s < n_seq; s++) {
        std::printf("seq %d:", s);
        for (llama_token t : generated[s]) std::printf(" %d", t);
        std::printf("\n");
    }
    llama_batch_free(batch);
    for (auto * s : samplers) llama_sampler_free(s);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}

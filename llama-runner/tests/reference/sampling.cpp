// Reference sampling with llama.cpp's own common sampler, compiled by the tests against the very
// libraries llama-runner links (and llama.cpp's common library).
//
// The sampling flags go through common_params_parse (common/arg.cpp), so llama.cpp's own parser
// reads them; --ignore-eos then gets the EOG biases common_init_from_params adds. The chain is
// common_sampler_init's; each token comes from common_sampler_sample and is accepted once with
// common_sampler_accept, as llama.cpp's tools do. Prints the parsed options as `key=value`
// lines, the chain's sampler names and the generated ids.
//
// usage: sampling dump MODEL [llama.cpp sampling flags...]
//        sampling dump-model MODEL [llama.cpp sampling flags...]   (after common_init_from_params,
//            which fills what the flags leave unset from the model's general.sampling.* keys)
//        sampling run MODEL N_PREDICT N_CTX ACCEPT_PROMPT PROMPT [llama.cpp sampling flags...]
//
// ACCEPT_PROMPT 1 accepts the prompt tokens into the sampler first (common_sampler_accept with
// is_generated = false). One thread, chunks of n_batch, as the runner's test context.
#include "arg.h"
#include "common.h"
#include "llama.h"
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet(enum ggml_log_level, const char *, void *) {}

static std::string escape(const std::string & s) {
    std::string out;
    for (char c : s) {
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\\') {
            out += "\\\\";
        } else if (c == ',') {
            out += "\\,";
        } else {
            out += c;
        }
    }
    return out;
}

static void dump(const common_params_sampling & s) {
    std::printf("seed=%u\n", s.seed);
    std::printf("min_keep=%d\n", s.min_keep);
    std::printf("top_k=%d\n", s.top_k);
    std::printf("top_p=%.9g\n", s.top_p);
    std::printf("min_p=%.9g\n", s.min_p);
    std::printf("xtc_probability=%.9g\n", s.xtc_probability);
    std::printf("xtc_threshold=%.9g\n", s.xtc_threshold);
    std::printf("typ_p=%.9g\n", s.typ_p);
    std::printf("temp=%.9g\n", s.temp);
    std::printf("dynatemp_range=%.9g\n", s.dynatemp_range);
    std::printf("dynatemp_exponent=%.9g\n", s.dynatemp_exponent);
    std::printf("penalty_last_n=%d\n", s.penalty_last_n);
    std::printf("penalty_repeat=%.9g\n", s.penalty_repeat);
    std::printf("penalty_freq=%.9g\n", s.penalty_freq);
    std::printf("penalty_present=%.9g\n", s.penalty_present);
    std::printf("dry_multiplier=%.9g\n", s.dry_multiplier);
    std::printf("dry_base=%.9g\n", s.dry_base);
    std::printf("dry_allowed_length=%d\n", s.dry_allowed_length);
    std::printf("dry_penalty_last_n=%d\n", s.dry_penalty_last_n);
    std::string breakers;
    for (size_t i = 0; i < s.dry_sequence_breakers.size(); i++) {
        breakers += (i ? "," : "") + escape(s.dry_sequence_breakers[i]);
    }
    std::printf("dry_sequence_breakers=%s\n", breakers.c_str());
    std::printf("adaptive_target=%.9g\n", s.adaptive_target);
    std::printf("adaptive_decay=%.9g\n", s.adaptive_decay);
    std::printf("mirostat=%d\n", s.mirostat);
    std::printf("top_n_sigma=%.9g\n", s.top_n_sigma);
    std::printf("mirostat_tau=%.9g\n", s.mirostat_tau);
    std::printf("mirostat_eta=%.9g\n", s.mirostat_eta);
    std::printf("ignore_eos=%s\n", s.ignore_eos ? "true" : "false");
    std::printf("no_perf=%s\n", s.no_perf ? "true" : "false");
    std::string samplers;
    for (size_t i = 0; i < s.samplers.size(); i++) {
        samplers += (i ? ";" : "") + common_sampler_type_to_str(s.samplers[i]);
    }
    std::printf("samplers=%s\n", samplers.c_str());
    std::string biases;
    for (size_t i = 0; i < s.logit_bias.size(); i++) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%s%d:%.9g", i ? "," : "", s.logit_bias[i].token, s.logit_bias[i].bias);
        biases += buf;
    }
    std::printf("logit_bias=%s\n", biases.c_str());
}

// Parses the sampling flags with llama.cpp's parser (`-m MODEL` first, which it wants).
static bool parse(const char * argv0, const char * model, int n, char ** flags, common_params & params) {
    std::vector<char *> args = { const_cast<char *>(argv0), const_cast<char *>("-m"), const_cast<char *>(model) };
    args.insert(args.end(), flags, flags + n);
    return common_params_parse((int) args.size(), args.data(), params, LLAMA_EXAMPLE_COMPLETION);
}

int main(int argc, char ** argv) {
    llama_log_set(quiet, nullptr);
    if (argc >= 3 && std::strcmp(argv[1], "dump") == 0) {
        common_params params;
        if (!parse(argv[0], argv[2], argc - 3, argv + 3, params)) {
            std::fprintf(stderr, "common_params_parse rejected the flags\n");
            return 2;
        }
        dump(params.sampling);
        return 0;
    }
    if (argc >= 3 && std::strcmp(argv[1], "dump-model") == 0) {
        common_params params;
        if (!parse(argv[0], argv[2], argc - 3, argv + 3, params)) {
            std::fprintf(stderr, "common_params_parse rejected the flags\n");
            return 2;
        }
        params.n_ctx = 256;
        params.fit_params = false;
        llama_backend_init();
        common_init_result_ptr init = common_init_from_params(params);
        if (!init || !init->model()) {
            std::fprintf(stderr, "common_init_from_params failed\n");
            return 1;
        }
        dump(params.sampling);
        return 0;
    }
    if (argc < 7 || std::strcmp(argv[1], "run") != 0) {
        std::fprintf(stderr, "usage: %s dump MODEL [flags...] | run MODEL N_PREDICT N_CTX ACCEPT_PROMPT PROMPT [flags...]\n", argv[0]);
        return 2;
    }
    const char * path = argv[2];
    const int n_predict = std::atoi(argv[3]);
    const int n_ctx = std::atoi(argv[4]);
    const bool accept_prompt = std::atoi(argv[5]) != 0;
    const char * prompt = argv[6];
    common_params params;
    if (!parse(argv[0], path, argc - 7, argv + 7, params)) {
        std::fprintf(stderr, "common_params_parse rejected the flags\n");
        return 2;
    }

    llama_backend_init();
    llama_model * model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) { std::fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    // What common_init_from_params does with --ignore-eos.
    common_params_sampling & sp = params.sampling;
    if (sp.ignore_eos && llama_vocab_eos(vocab) == LLAMA_TOKEN_NULL) {
        sp.ignore_eos = false;
    }
    if (sp.ignore_eos) {
        for (llama_token i = 0; i < llama_vocab_n_tokens(vocab); i++) {
            if (llama_vocab_is_eog(vocab, i)) {
                sp.logit_bias.push_back({i, -INFINITY});
            }
        }
    }
    dump(sp);

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
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.swa_full = false;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { std::fprintf(stderr, "context failed\n"); return 1; }

    common_sampler * smpl = common_sampler_init(model, sp);
    if (!smpl) { std::fprintf(stderr, "sampler failed\n"); return 1; }
    llama_sampler * chain = common_sampler_get(smpl);
    std::printf("chain:");
    for (int i = 0; i < llama_sampler_chain_n(chain); i++) {
        std::printf(" %s", llama_sampler_name(llama_sampler_chain_get(chain, i)));
    }
    std::printf("\n");
    if (accept_prompt) {
        for (llama_token t : tokens) {
            common_sampler_accept(smpl, t, false);
        }
    }

    const int n_batch = (int) llama_n_batch(ctx);
    for (int i = 0; i < (int) tokens.size(); i += n_batch) {
        int len = std::min(n_batch, (int) tokens.size() - i);
        if (llama_decode(ctx, llama_batch_get_one(tokens.data() + i, len)) != 0) { std::fprintf(stderr, "decode failed\n"); return 1; }
    }

    std::printf("generated:");
    // The generation loop's wall time, on stderr (scripts/sampling-cost.sh compares it).
    const int64_t t_gen = ggml_time_us();
    int n_gen = 0;
    for (int i = 0; i < n_predict; i++) {
        llama_token t = common_sampler_sample(smpl, ctx, -1);
        common_sampler_accept(smpl, t, true);
        if (!sp.ignore_eos && llama_vocab_is_eog(vocab, t)) break;
        std::printf(" %d", t);
        n_gen++;
        if (i + 1 < n_predict && llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) { std::fprintf(stderr, "decode failed\n"); return 1; }
    }
    std::printf("\n");
    std::fprintf(stderr, "gen_us=%lld n_gen=%d\n", (long long) (ggml_time_us() - t_gen), n_gen);

    common_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}

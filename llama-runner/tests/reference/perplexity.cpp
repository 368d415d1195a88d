// Reference perplexity and KL divergence computed with llama.h only, with llama-perplexity's
// method (tools/perplexity/perplexity.cpp at the pin), written independently of it:
//
// - the text tokenized whole (add_special on, parse_special off); at least 2 * n_ctx tokens;
// - n_chunk = min(CHUNKS, n_tokens / n_ctx) chunks (CHUNKS < 0: all), each decoded on an empty
//   cache from position 0, its first token replaced by BOS when the vocabulary adds one;
// - n_seq = max(1, n_batch / n_ctx) chunks per decode (one sequence each) when n_batch is a
//   multiple of n_ctx, else batches of n_batch tokens per chunk;
// - logits asked for at positions n_ctx/2 .. n_ctx-1, the positions n_ctx/2 .. n_ctx-2 scored;
// - the context as llama-perplexity makes it: n_ctx = n_seq * n_ctx, n_seq_max = n_seq,
//   n_batch = min(n_batch, n_ctx), n_ubatch 512, swa_full off.
//
// Sums are taken in token order (llama-perplexity sums on threads, in a varying order).
//
// usage:
//   perplexity ppl MODEL N_CTX N_BATCH THREADS CHUNKS TEXT_FILE [BASE_OUT]
//     prints "tokens: N", "chunk I: PPL" (running, after each chunk), "final: PPL ERR";
//     with BASE_OUT writes llama-perplexity's --kl-divergence-base file (and its PPL is the one
//     of that pass, from the f32 log-sum).
//   perplexity kld MODEL N_BATCH THREADS BASE_IN [TYPE_K]
//     (TYPE_K: the K cache's ggml_type number, default f16) prints "chunk I: PPL ERR LNRATIO ERR KLD ERR RMS ERR TOP ERR" (running) and the final
//     "name: value [err]" lines; values with %.17g.
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static void die(const char * msg) {
    std::fprintf(stderr, "error: %s\n", msg);
    std::exit(1);
}

static void quiet_log(ggml_log_level, const char *, void *) {}

struct Run {
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    const llama_vocab * vocab = nullptr;
    int n_vocab = 0;
    int n_ctx = 0;
    int n_batch = 0;
    int n_seq = 1;
};

static Run open_run(const char * path, int n_ctx, int n_batch, int threads, int type_k = GGML_TYPE_F16) {
    Run r;
    llama_model_params mp = llama_model_default_params();
    r.model = llama_model_load_from_file(path, mp);
    if (!r.model) die("model load failed");
    r.vocab = llama_model_get_vocab(r.model);
    r.n_vocab = llama_vocab_n_tokens(r.vocab);
    r.n_ctx = n_ctx;
    r.n_seq = std::max(1, n_batch / n_ctx);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (r.n_seq * n_ctx);
    cp.n_seq_max = (uint32_t) r.n_seq;
    cp.n_batch = (uint32_t) std::min(n_batch, r.n_seq * n_ctx);
    cp.n_ubatch = 512;
    cp.swa_full = false;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = (ggml_type) type_k;
    r.ctx = llama_init_from_model(r.model, cp);
    if (!r.ctx) die("context creation failed");
    r.n_batch = (int) llama_n_batch(r.ctx);
    if (!(r.n_batch < n_ctx || r.n_batch % n_ctx == 0)) die("n_batch neither below nor a multiple of n_ctx");
    return r;
}

// Decodes chunks [i, i + n_seq_batch) of `tokens` and calls `score(seq, row, logits)` for each
// scored row (row 0 = position n_ctx/2), in order.
template <typename F>
static void decode_group(Run & r, const std::vector<llama_token> & tokens, int i, int n_seq_batch, F score) {
    const int n_ctx = r.n_ctx;
    const int first = n_ctx / 2;
    const int n_batches = (n_ctx + r.n_batch - 1) / r.n_batch;
    const bool add_bos = llama_vocab_get_add_bos(r.vocab);
    llama_memory_clear(llama_get_memory(r.ctx), true);
    llama_batch batch = llama_batch_init(std::min(r.n_batch, n_ctx * r.n_seq), 0, 1);
    std::vector<float> kept;  // output rows of every decode of the chunk when it takes several
    for (int j = 0; j < n_batches; ++j) {
        const int p0 = j * r.n_batch;
        const int size = std::min(n_ctx - p0, r.n_batch);
        batch.n_tokens = 0;
        int n_out = 0;
        for (int s = 0; s < n_seq_batch; ++s) {
            const size_t base = size_t(i + s) * n_ctx;
            for (int k = 0; k < size; ++k) {
                const int pos = p0 + k;
                const int b = batch.n_tokens++;
                batch.token[b] = (pos == 0 && add_bos) ? llama_vocab_bos(r.vocab) : tokens[base + pos];
                batch.pos[b] = pos;
                batch.n_seq_id[b] = 1;
                batch.seq_id[b][0] = s;
                batch.logits[b] = pos >= first;
                n_out += pos >= first;
            }
        }
        if (llama_decode(r.ctx, batch) != 0) die("llama_decode failed");
        if (n_batches > 1 && n_out > 0) {
            const float * l = llama_get_logits(r.ctx);
            kept.insert(kept.end(), l, l + size_t(n_out) * r.n_vocab);
        }
    }
    for (int s = 0; s < n_seq_batch; ++s) {
        const float * rows = n_batches > 1 ? kept.data() : llama_get_logits_ith(r.ctx, s * n_ctx + first);
        for (int row = 0; row < n_ctx - 1 - first; ++row) {
            score(s, row, rows + size_t(row) * r.n_vocab);
        }
    }
    llama_batch_free(batch);
}

static int quant(float x) {
    // round to nearest (ties to even) through the float mantissa, as the tool rounds
    float v = x + 12582912.f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int run_ppl(int argc, char ** argv) {
    if (argc < 8) die("usage: ppl MODEL N_CTX N_BATCH THREADS CHUNKS TEXT_FILE [BASE_OUT]");
    const int n_ctx = std::atoi(argv[3]);
    Run r = open_run(argv[2], n_ctx, std::atoi(argv[4]), std::atoi(argv[5]));
    const int chunks = std::atoi(argv[6]);
    std::ifstream f(argv[7], std::ios::binary);
    if (!f) die("cannot read the text");
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    std::vector<llama_token> tokens(text.size() + 2);
    int n = llama_tokenize(r.vocab, text.data(), (int) text.size(), tokens.data(), (int) tokens.size(), true, false);
    if (n < 0) die("tokenize failed");
    tokens.resize(n);
    std::printf("tokens: %d\n", n);
    if (n < 2 * n_ctx) die("text too short");
    const int n_chunk = chunks < 0 ? n / n_ctx : std::min(chunks, n / n_ctx);
    const int first = n_ctx / 2;

    std::ofstream out;
    const int nv = 2 * ((r.n_vocab + 1) / 2) + 4;
    std::vector<uint16_t> qrow(nv);
    if (argc > 8) {
        out.open(argv[8], std::ios::binary);
        if (!out) die("cannot write the base file");
        out.write("_logits_", 8);
        out.write((const char *) &n_ctx, 4);
        out.write((const char *) &r.n_vocab, 4);
        out.write((const char *) &n_chunk, 4);
        out.write((const char *) tokens.data(), size_t(n_chunk) * n_ctx * 4);
    }

    double nll = 0, nll2 = 0;
    long count = 0;
    for (int i = 0; i < n_chunk; i += r.n_seq) {
        const int n_seq_batch = std::min(r.n_seq, n_chunk - i);
        std::vector<double> seq_done;
        decode_group(r, tokens, i, n_seq_batch, [&](int s, int row, const float * l) {
            const llama_token target = tokens[size_t(i + s) * n_ctx + first + row + 1];
            float mx = l[0], mn = l[0];
            for (int t = 1; t < r.n_vocab; ++t) {
                mx = std::max(mx, l[t]);
                mn = std::min(mn, l[t]);
            }
            double se = 0;
            for (int t = 0; t < r.n_vocab; ++t) se += expf(l[t] - mx);
            double v;
            if (out.is_open()) {
                mn = std::max(mn, mx - 16);
                const float lse = log(se);
                const float min_lp = mn - mx - lse;
                const float scale = (mx - mn) / 65535.f;
                std::fill(qrow.begin(), qrow.end(), 0);
                std::memcpy(qrow.data(), &scale, 4);
                std::memcpy(qrow.data() + 2, &min_lp, 4);
                if (scale) {
                    const float inv = 1 / scale;
                    for (int t = 0; t < r.n_vocab; ++t) qrow[4 + t] = l[t] > mn ? (uint16_t) quant(inv * (l[t] - mn)) : 0;
                }
                out.write((const char *) qrow.data(), nv * 2);
                const float fv = mx + lse - l[target];
                v = fv;
            } else {
                v = -(double(l[target] - mx) - log(se));
            }
            nll += v;
            nll2 += v * v;
            ++count;
            if (row == n_ctx - 2 - first) {
                std::printf("chunk %d: %.17g\n", i + s + 1, std::exp(nll / count));
            }
        });
    }
    const double m = nll / count;
    const double ppl = std::exp(m);
    double var = nll2 / count - m * m;
    std::printf("final: %.17g %.17g\n", ppl, var > 0 ? std::sqrt(var / (count - 1)) * ppl : -1.0);
    llama_free(r.ctx);
    llama_model_free(r.model);
    return 0;
}

struct Sums {
    double nll = 0, nll2 = 0, b = 0, b2 = 0, nb = 0, kld = 0, kld2 = 0, pd = 0, pd2 = 0, pd4 = 0;
    long same = 0, count = 0;
};

static void mean_err(double sum, double sum2, long count, double & f, double & df) {
    f = sum / count;
    df = sum2 / count - f * f;
    df = (df > 0 && count > 10) ? std::sqrt(df / (count - 1)) : 0.0;
}

static double cov(const Sums & s) {
    if (s.count < 10) return 0.0;
    return (s.nb / s.count - (s.nll / s.count) * (s.b / s.count)) / (s.count - 1);
}

static float pct(const std::vector<float> & v, float fraction) {
    if (fraction <= 0) return v.front();
    if (fraction >= 1) return v.back();
    float p = fraction * (v.size() - 1);
    size_t ip = (size_t) p;
    p -= ip;
    return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
}

static float median(const std::vector<float> & v) {
    size_t n = v.size();
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

static int run_kld(int argc, char ** argv) {
    if (argc < 6) die("usage: kld MODEL N_BATCH THREADS BASE_IN");
    std::ifstream in(argv[5], std::ios::binary);
    char magic[8];
    int32_t n_ctx, n_vocab, n_chunk;
    in.read(magic, 8);
    in.read((char *) &n_ctx, 4);
    in.read((char *) &n_vocab, 4);
    in.read((char *) &n_chunk, 4);
    if (!in || std::memcmp(magic, "_logits_", 8) != 0) die("not a base file");
    std::vector<llama_token> tokens(size_t(n_ctx) * n_chunk);
    in.read((char *) tokens.data(), tokens.size() * 4);
    if (!in) die("truncated tokens");
    Run r = open_run(argv[2], n_ctx, std::atoi(argv[3]), std::atoi(argv[4]), argc > 6 ? std::atoi(argv[6]) : GGML_TYPE_F16);
    if (r.n_vocab != n_vocab) die("vocabulary differs");
    const int first = n_ctx / 2;
    const int nv = 2 * ((n_vocab + 1) / 2) + 4;
    std::vector<uint16_t> row_q(nv);
    Sums s;
    std::vector<float> klds, pdiffs;
    for (int i = 0; i < n_chunk; i += r.n_seq) {
        const int n_seq_batch = std::min(r.n_seq, n_chunk - i);
        decode_group(r, tokens, i, n_seq_batch, [&](int sq, int row, const float * l) {
            in.read((char *) row_q.data(), nv * 2);
            if (!in) die("truncated log-probabilities");
            const llama_token target = tokens[size_t(i + sq) * n_ctx + first + row + 1];
            float mx = l[0];
            int imax = 0;
            for (int t = 1; t < n_vocab; ++t) {
                if (l[t] > mx) {
                    mx = l[t];
                    imax = t;
                }
            }
            double se = 0;
            for (int t = 0; t < n_vocab; ++t) se += expf(l[t] - mx);
            const float lse = log(se);
            float scale, min_lp;
            std::memcpy(&scale, row_q.data(), 4);
            std::memcpy(&min_lp, row_q.data() + 2, 4);
            const uint16_t * q = row_q.data() + 4;
            const float nll = mx + lse - l[target];
            const float nll_b = -(scale * q[target] + min_lp);
            s.nll += nll;
            s.nll2 += nll * nll;
            s.b += nll_b;
            s.b2 += nll_b * nll_b;
            s.nb += nll * nll_b;
            const float mlse = mx + lse;
            double kl = 0;
            int imax_b = -1;
            float best = 0;
            for (int t = 0; t < n_vocab; ++t) {
                const float lb = scale * q[t] + min_lp;
                if (t == 0 || lb > best) {
                    best = lb;
                    imax_b = t;
                }
                if (lb > -16.f) {
                    const float pb = expf(lb);
                    kl += pb * (lb - l[t] + mlse);
                }
            }
            s.kld += kl;
            s.kld2 += kl * kl;
            ++s.count;
            s.same += imax == imax_b;
            const float pdiff = expf(-nll) - expf(-nll_b);
            s.pd += pdiff;
            const double pd2 = pdiff * pdiff;
            s.pd2 += pd2;
            s.pd4 += pd2 * pd2;
            klds.push_back((float) kl);
            pdiffs.push_back(pdiff);
            if (row == n_ctx - 2 - first) {
                double lp, dlp, lb, dlb, k, dk, mse, dmse;
                mean_err(s.nll, s.nll2, s.count, lp, dlp);
                mean_err(s.b, s.b2, s.count, lb, dlb);
                mean_err(s.kld, s.kld2, s.count, k, dk);
                mean_err(s.pd2, s.pd4, s.count, mse, dmse);
                const double ppl = std::exp(lp);
                const double top = double(s.same) / s.count;
                std::printf("chunk %d: %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n", i + sq + 1, ppl,
                            ppl * dlp, lp - lb, std::sqrt(dlp * dlp + dlb * dlb - 2 * cov(s)), k, dk, std::sqrt(mse),
                            0.5 / std::sqrt(mse) * dmse, top, std::sqrt(top * (1 - top) / (s.count - 1)));
            }
        });
    }
    double lp, dlp, lb, dlb, k, dk, pd, dpd;
    mean_err(s.nll, s.nll2, s.count, lp, dlp);
    mean_err(s.b, s.b2, s.count, lb, dlb);
    mean_err(s.kld, s.kld2, s.count, k, dk);
    mean_err(s.pd, s.pd2, s.count, pd, dpd);
    std::printf("ppl: %.17g %.17g\n", std::exp(lp), std::exp(lp) * dlp);
    std::printf("ppl_base: %.17g %.17g\n", std::exp(lb), std::exp(lb) * dlb);
    std::printf("cor: %.17g\n", cov(s) / (dlp * dlb));
    std::printf("kld: %.17g %.17g\n", k, dk);
    std::printf("delta_p: %.17g %.17g\n", pd, dpd);
    std::sort(klds.begin(), klds.end());
    std::sort(pdiffs.begin(), pdiffs.end());
    std::printf("kld_pct: %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g\n", klds.back(), pct(klds, 0.999f),
                pct(klds, 0.99f), pct(klds, 0.95f), pct(klds, 0.9f), median(klds), pct(klds, 0.1f),
                pct(klds, 0.05f), pct(klds, 0.01f), pct(klds, 0.001f), klds.front());
    std::printf("dp_pct: %.9g %.9g %.9g\n", pdiffs.back(), median(pdiffs), pdiffs.front());
    std::printf("same_top: %ld %ld\n", s.same, s.count);
    llama_free(r.ctx);
    llama_model_free(r.model);
    return 0;
}

int main(int argc, char ** argv) {
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    if (argc < 2) die("usage: perplexity ppl|kld ...");
    const std::string mode = argv[1];
    int rc = mode == "ppl" ? run_ppl(argc, argv) : mode == "kld" ? run_kld(argc, argv) : (die("unknown mode"), 1);
    llama_backend_free();
    return rc;
}

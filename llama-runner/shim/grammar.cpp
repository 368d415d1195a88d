// llama.cpp's grammar sampler throws C++ exceptions from its accept callback
// (llama_grammar_accept_token: "Unexpected empty grammar stack after accepting piece"), which
// must never unwind into Rust. The accept function is passed in as a pointer (the Rust
// bindings' llama_sampler_accept), so this file declares nothing of llama.h by hand.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>

struct llama_sampler;

typedef void (*llama_runner_accept_fn)(struct llama_sampler *, int32_t);

extern "C" int llama_runner_accept_catching(llama_runner_accept_fn accept, struct llama_sampler * smpl, int32_t token,
                                            char * err, size_t err_len) {
    try {
        accept(smpl, token);
        return 0;
    } catch (const std::exception & e) {
        std::snprintf(err, err_len, "%s", e.what());
        return 1;
    } catch (...) {
        std::snprintf(err, err_len, "unknown C++ exception");
        return 1;
    }
}

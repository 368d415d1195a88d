// A C entry point over llama.cpp's C++ memory breakdown (src/llama-ext.h, a staging header):
// what a context's buffers take per buffer type, for the safe layer's memory check before a
// context is allocated (a context created from a model loaded with no_alloc simulates its
// allocations). Compiled only when the header declares llama_get_memory_breakdown.

#include "llama.h"
#include "llama-ext.h"
#include "ggml-backend.h"

#include <cstddef>
#include <cstdint>

extern "C" {

// One buffer type's share: `host` is 1 for host memory; `device` names the device otherwise.
struct llama_sys_buft_memory {
    int32_t host;
    ggml_backend_dev_t device;
    size_t model;
    size_t context;
    size_t compute;
};

// Writes up to `cap` entries of the context's memory breakdown to `out`; returns how many
// there are (more than `cap` when `out` was too short), or SIZE_MAX if llama.cpp threw.
size_t llama_sys_memory_breakdown(const struct llama_context * ctx, struct llama_sys_buft_memory * out, size_t cap) noexcept {
    try {
        const llama_memory_breakdown mb = llama_get_memory_breakdown(ctx);
        size_t i = 0;
        for (const auto & entry : mb) {
            if (i < cap) {
                out[i].host    = ggml_backend_buft_is_host(entry.first) ? 1 : 0;
                out[i].device  = ggml_backend_buft_get_device(entry.first);
                out[i].model   = entry.second.model;
                out[i].context = entry.second.context;
                out[i].compute = entry.second.compute;
            }
            i++;
        }
        return i;
    } catch (...) {
        return SIZE_MAX;
    }
}

}

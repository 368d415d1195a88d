// The C API that llama-sys binds: libllama plus the ggml backend and CPU declarations the runner
// needs (devices, buffer types, threadpools, NUMA, build info).
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

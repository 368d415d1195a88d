#!/usr/bin/env bash
# Prepares, on a machine with Rust, what scripts/gpu-bench.sh needs on a GPU machine without
# Rust: the `llama-runner` command built with `dynamic-link` (it finds the llama.cpp libraries
# at run time) and the `tiny-gguf` model generator, copied into .cache/gpu-carry/.
#
#   scripts/gpu-prepare.sh        # then carry vendor/llama.cpp and .cache/gpu-carry (docs/cuda.md)
#   LLAMA_BENCH_SRC=/path/to/llama-bench.cpp scripts/gpu-prepare.sh   # also for gpu-bench's peer mode
#
# The binaries need no CUDA here: the GPU machine builds llama.cpp with CUDA from the same
# vendor/llama.cpp, and libggml.so loads its CUDA backend; the runner checks at start that those
# libraries report the commit it was compiled against.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { echo "gpu-prepare: $*" >&2; }

# Build trees of the same sources share ccache entries only with paths made relative.
export CCACHE_BASEDIR="$root"
carry="$root/.cache/gpu-carry"
target=${CARGO_TARGET_DIR:-$root/target/dynlink}
mkdir -p "$carry"
say "building llama-runner (dynamic-link) and tiny-gguf in $target"
CARGO_TARGET_DIR="$target" nice -n 10 cargo build --release --quiet -p llama-workbench --features dynamic-link
CARGO_TARGET_DIR="$target" nice -n 10 cargo build --release --quiet -p tiny-gguf
for bin in llama-runner tiny-gguf; do
    cp "$target/release/$bin" "$carry/$bin"
    strip "$carry/$bin" 2>/dev/null || true
done
# Peer mode of gpu-bench.sh: the user's copy of llama-bench.cpp travels in the carry folder
# (ignored by git; never committed).
if [ -n "${LLAMA_BENCH_SRC:-}" ]; then
    cp "$LLAMA_BENCH_SRC" "$carry/llama-bench.cpp"
    say "llama-bench.cpp copied: run with GPU_BENCH_LLAMA_BENCH=.cache/gpu-carry/llama-bench.cpp"
fi
# The commit the runner was compiled against, for the device script's own check.
"$carry/llama-runner" info 2>/dev/null | sed -n '1p' >"$carry/BUILT_AGAINST" || true
du -sh "$carry" "$root/vendor/llama.cpp" >&2
say "ready: carry [\"vendor/llama.cpp\", \".cache/gpu-carry\"] and run scripts/gpu-bench.sh"

#!/usr/bin/env bash
# Compiles and links `llama-runner --features cuda` without a GPU or driver, against the PyPI
# toolkit of scripts/cuda-toolkit-from-pypi.sh (or any CUDA_PATH), for one architecture, then
# checks what the binary links and that it starts and reports no CUDA device on this machine.
#
#   scripts/cuda-compile-check.sh                 # dynamic runtime and cuBLAS (the default)
#   LINK_MODES="0 cudart" scripts/cuda-compile-check.sh   # also the static runtime
#   LLAMA_SYS_CUDA_ARCHS=89 scripts/cuda-compile-check.sh # another architecture (default 90)
#
# The first build compiles ggml-cuda (nvcc through ccache); see docs/cuda.md for the times.
# Later link modes reuse the CMake build: LLAMA_SYS_CUDA_STATIC changes only the link lines.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { echo "cuda-compile-check: $*" >&2; }

export CUDA_PATH=${CUDA_PATH:-$root/.cache/cuda}
[ -x "$CUDA_PATH/bin/nvcc" ] || scripts/cuda-toolkit-from-pypi.sh --prefix "$CUDA_PATH"
export LLAMA_SYS_CUDA_ARCHS=${LLAMA_SYS_CUDA_ARCHS:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
unset LD_LIBRARY_PATH
bin="$CARGO_TARGET_DIR/release/llama-runner"

say "a clear error without a toolkit:"
if CUDA_PATH=/nonexistent/cuda cargo build --quiet --release -p llama-workbench --features cuda 2>"$CARGO_TARGET_DIR.no-toolkit.log"; then
    say "building with CUDA_PATH=/nonexistent/cuda succeeded?"; exit 1
fi
grep -A4 'feature `cuda`' "$CARGO_TARGET_DIR.no-toolkit.log" | sed 's/^/    /' >&2 || tail -n 20 "$CARGO_TARGET_DIR.no-toolkit.log" >&2

for mode in ${LINK_MODES:-0}; do
    t=$SECONDS
    say "LLAMA_SYS_CUDA_STATIC=$mode: cargo build --release -p llama-workbench --features cuda (arch $LLAMA_SYS_CUDA_ARCHS)"
    LLAMA_SYS_CUDA_STATIC=$mode nice -n 10 cargo build --quiet --release -p llama-workbench --features cuda
    say "  built in $((SECONDS - t)) s"
    say "  NEEDED: $(readelf -d "$bin" | sed -nE 's/.*Shared library: \[(.*)\]/\1/p' | tr '\n' ' ')"
    say "  RUNPATH: $(readelf -d "$bin" | sed -nE 's/.*(RPATH|RUNPATH).*\[(.*)\]/\2/p')"
    ldd "$bin" | grep -E 'cuda|cublas|not found' | sed 's/^/    /' >&2 || true
    say "  linked in statically: $(nm "$bin" 2>/dev/null | grep -cE ' [tT] cudaMalloc$' || true) cudaMalloc, $(nm "$bin" 2>/dev/null | grep -cE ' [tT] cublasCreate_v2$' || true) cublasCreate_v2 (1 = in the binary, 0 = from a shared library)"
    set +e
    out=$("$bin" info 2>&1)
    rc=$?
    set -e
    say "  llama-runner info: exit $rc"
    echo "$out" | sed 's/^/    /' | head -n 20 >&2
    cp "$bin" "$CARGO_TARGET_DIR/llama-runner.cuda-static-$mode"
done

# The driver loader on its own (llama-sys/build/cuda_driver.rs): ggml's driver calls through the
# generated trampolines. Without a driver each returns CUDA_ERROR_NO_DEVICE (100); with one they
# succeed (docs/cuda.md has the run on an H100).
shim=$(ls -t "$CARGO_TARGET_DIR"/release/build/llama-sys-*/out/cuda-driver/libllama_sys_cuda_driver.a 2>/dev/null | head -n 1)
if [ -n "$shim" ]; then
    cc -O1 -Wall -I"$CUDA_PATH/include" scripts/cuda-driver-check.c "$shim" -ldl -o "$CARGO_TARGET_DIR/cuda-driver-check"
    say "driver loader: $(readelf -d "$CARGO_TARGET_DIR/cuda-driver-check" | grep -c NEEDED) NEEDED entry (libc only), then:"
    set +e
    "$CARGO_TARGET_DIR/cuda-driver-check" 2>&1 | head -n 3 | sed 's/^/    /' >&2
    set -e
else
    say "no driver loader built (LLAMA_SYS_CUDA_DRIVER=link?)"
fi

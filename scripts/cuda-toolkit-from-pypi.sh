#!/usr/bin/env bash
# Installs a CUDA toolkit (nvcc, CUDA runtime, cuBLAS, CCCL) from NVIDIA's PyPI wheels into a
# private prefix laid out like /usr/local/cuda, for compiling and linking `--features cuda`
# on a machine without a GPU, a driver or a system CUDA installation.
#
#   scripts/cuda-toolkit-from-pypi.sh                  # CUDA 13.0 into .cache/cuda
#   scripts/cuda-toolkit-from-pypi.sh --prefix DIR     # elsewhere
#   CUDA_PATH=$PWD/.cache/cuda cargo build -p llama-workbench --features cuda
#
# Why 13.0: the CUDA 12 wheels (nvidia-cuda-nvcc-cu12) ship only ptxas and libnvvm, no nvcc; the
# CUDA 13 wheels ship a complete compiler (nvcc, cicc, cudafe++, fatbinary, nvlink) under
# nvidia/cu13/, and 13.0 is what the device machine's nvcc and driver (580) are.
#
# What the prefix holds afterwards:
#   bin/        nvcc (a copy, so that nvcc.profile resolves TOP to the prefix) and the other tools
#   nvvm/       cicc and libdevice (nvidia-nvvm)
#   include/    CUDA runtime, cuBLAS, crt and CCCL (include/cccl) headers
#   lib64/      libcudart.so(.13), libcudart_static.a, libculibos.a, libcublas(Lt).so(.13),
#               with the unversioned development links the wheels lack
#   lib64/stubs/libcuda.so  a link-time stub of the driver API (soname libcuda.so.1), generated
#               from cuda.h: a toolkit never ships the driver, and no wheel ships NVIDIA's stub
#   targets/x86_64-linux/{include,lib}  the paths nvcc.profile and CMake's FindCUDAToolkit expect
#   pypi/       the wheels as pip installed them (what everything above points into)
#   .toolkit    the package set it was built from (a rerun with the same set does nothing)
#
# Not there: static cuBLAS (libcublas_static.a / libcublasLt_static.a) - NVIDIA publishes no wheel
# with it; LLAMA_SYS_CUDA_STATIC=cudart (static runtime, dynamic cuBLAS) works with this prefix,
# LLAMA_SYS_CUDA_STATIC=1 (everything static) needs a toolkit from NVIDIA's installers.
#
# Checks at the end: the host compiler (g++) is inside the range this nvcc accepts
# (include/crt/host_config.h), and nvcc compiles and links a small kernel for one architecture.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix="$root/.cache/cuda"
version=13.0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "cuda-toolkit-from-pypi: unknown argument $1" >&2; exit 2 ;;
    esac
done
say() { echo "cuda-toolkit-from-pypi: $*" >&2; }

# One release's wheels, version for version (CUDA 13.0 update 2). Another release: add a case.
case "$version" in
    13.0)
        packages=(
            nvidia-cuda-nvcc==13.0.88
            nvidia-nvvm==13.0.88
            nvidia-cuda-crt==13.0.88
            nvidia-cuda-runtime==13.0.96
            nvidia-cuda-cccl==13.0.85
            nvidia-cuda-culibos==13.0.85
            nvidia-cublas==13.0.2.14
        )
        wheel_root=nvidia/cu13
        ;;
    *) say "no package set for CUDA $version (known: 13.0)"; exit 2 ;;
esac

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { say "needs $python with pip"; exit 1; }
command -v g++ >/dev/null || { say "needs g++ (the host compiler nvcc drives)"; exit 1; }

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
stamp="$prefix/.toolkit"
want="${packages[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$prefix/bin/nvcc" ]; then
    say "$prefix already holds CUDA $version ($want)"
else
    wheels="$root/.cache/cuda-wheels"
    mkdir -p "$wheels"
    say "downloading ${#packages[@]} wheels into $wheels (about 700 MB, cuBLAS most of it)"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        -d "$wheels" "${packages[@]}"
    rm -rf "$prefix/pypi"
    say "installing into $prefix/pypi"
    "$python" -m pip install --quiet --no-deps --no-index --find-links "$wheels" --no-compile \
        --target "$prefix/pypi" "${packages[@]}"
    src="$prefix/pypi/$wheel_root"
    [ -x "$src/bin/nvcc" ] || { say "the wheels installed no $wheel_root/bin/nvcc"; exit 1; }

    # The CUDA_PATH-style tree. Directories are real, files are links into pypi/, except nvcc and
    # its profile: nvcc finds its siblings relative to its own resolved path, which must be here.
    for d in bin lib64 lib64/stubs targets; do rm -rf "${prefix:?}/$d"; done
    rm -rf "$prefix/include" "$prefix/nvvm" "$prefix/lib"
    mkdir -p "$prefix/bin" "$prefix/lib64/stubs" "$prefix/targets/x86_64-linux"
    for f in "$src"/bin/*; do ln -s "$f" "$prefix/bin/"; done
    rm "$prefix/bin/nvcc" "$prefix/bin/nvcc.profile"
    cp "$src/bin/nvcc" "$src/bin/nvcc.profile" "$prefix/bin/"
    ln -s "$src/nvvm" "$prefix/nvvm"
    ln -s "$src/include" "$prefix/include"
    for f in "$src"/lib/*; do ln -s "$f" "$prefix/lib64/"; done
    # Development links (the wheels carry only the sonames).
    for so in "$prefix"/lib64/*.so.*; do
        base=$(basename "$so"); dev=${base%%.so.*}.so
        [ -e "$prefix/lib64/$dev" ] || ln -s "$base" "$prefix/lib64/$dev"
    done
    ln -s lib64 "$prefix/lib"
    ln -s ../../include "$prefix/targets/x86_64-linux/include"
    ln -s ../../lib64 "$prefix/targets/x86_64-linux/lib"

    # The driver stub: every CUresult-returning function cuda.h declares, each returning
    # CUDA_ERROR_STUB_LIBRARY (34) like NVIDIA's own stub. It only satisfies the linker; at run
    # time the soname libcuda.so.1 resolves to the installed driver (never put this directory on
    # LD_LIBRARY_PATH).
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo '#include <cuda.h>' >"$work/h.c"
    gcc -E -P -I "$prefix/include" "$work/h.c" \
        | tr '\n' ' ' | grep -oE 'CUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/CUresult +//; s/ *\($//' \
        | sort -u >"$work/names"
    [ "$(wc -l <"$work/names")" -gt 100 ] || { say "found too few driver functions in cuda.h"; exit 1; }
    sed 's/.*/int &(void) { return 34; }/' "$work/names" >"$work/stub.c"
    gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$prefix/lib64/stubs/libcuda.so" "$work/stub.c"
    say "driver stub: $(wc -l <"$work/names") functions in lib64/stubs/libcuda.so"
    echo "$want" >"$stamp"
fi

# Host compiler range: host_config.h rejects GNU versions above a bound with #error.
nvcc_version=$("$prefix/bin/nvcc" --version | sed -nE 's/.*release ([0-9.]+),.*/\1/p')
gcc_major=$(g++ -dumpversion | cut -d. -f1)
max_gnu=$(sed -nE 's/^#if __GNUC__ > ([0-9]+).*/\1/p' "$prefix/include/crt/host_config.h" | head -n 1)
if [ -n "$max_gnu" ] && [ "$gcc_major" -gt "$max_gnu" ]; then
    say "g++ $gcc_major is newer than nvcc $nvcc_version accepts (at most $max_gnu): install an older g++ and set CUDAHOSTCXX=/path/to/g++-N"
    exit 1
fi
say "nvcc $nvcc_version, host g++ $gcc_major (accepted up to ${max_gnu:-?})"

# Smoke test: a kernel for one architecture, linked twice: with the static runtime (run here: with
# no driver it must say so, not crash), and with the shared runtime, cuBLAS and the driver stub
# (linked only: it needs the real libcuda.so.1 to start).
if [ "${CUDA_TOOLKIT_SKIP_SMOKE:-0}" != 1 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cat >"$work/k.cu" <<'CU'
#include <cstdio>
#include <cublas_v2.h>
#include <cub/cub.cuh>
__global__ void add(float *x) { x[threadIdx.x] += 1.0f; }
#ifdef WITH_DRIVER
extern "C" int driver_version(void);
#endif
int main() {
#ifdef WITH_DRIVER
    std::printf("driver %d\n", driver_version());
#endif
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    std::printf("cudaGetDeviceCount: %s, %d device(s)\n", cudaGetErrorString(e), e == cudaSuccess ? n : 0);
    return 0;
}
CU
    echo '#include <cuda.h>
int driver_version(void) { int v = 0; return cuDriverGetVersion(&v) == CUDA_SUCCESS ? v : -1; }' >"$work/d.c"
    "$prefix/bin/nvcc" -arch=sm_90 -o "$work/k" "$work/k.cu"
    say "smoke test (static cudart) says: $("$work/k" 2>&1 || true)"
    gcc -c -I "$prefix/include" -o "$work/d.o" "$work/d.c"
    "$prefix/bin/nvcc" -arch=sm_90 -cudart shared -DWITH_DRIVER -o "$work/k2" "$work/k.cu" "$work/d.o" -lcublas -lcuda
    say "smoke test (shared cudart, cuBLAS, driver stub) links: $(readelf -d "$work/k2" | grep -oE 'lib(cudart|cublas|cuda)\.so[.0-9]*' | sort -u | tr '\n' ' ')"
fi
say "done: export CUDA_PATH=$prefix"

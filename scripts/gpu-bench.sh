#!/usr/bin/env bash
# The CUDA path on a GPU machine that has nvcc and CMake but no Rust (the `device` tool's
# machine): builds llama.cpp with CUDA from vendor/llama.cpp as shared libraries, with the
# options llama-sys uses, then runs the carried `llama-runner` (built elsewhere with
# `dynamic-link` by scripts/gpu-prepare.sh) against them on a generated MoE model (~300 MB,
# Q8_0), all layers on the GPU and with the experts on the CPU (-cmoe).
#
#   bash scripts/gpu-bench.sh        # in the repository root; writes into $OUT (default /tmp/gpu-bench)
#
# Needs, besides the tracked files: vendor/llama.cpp (the sources) and .cache/gpu-carry/
# (llama-runner, tiny-gguf). Budget: under 10 minutes on 16 cores, most of it the CUDA build
# for one architecture (the GPU's own, from nvidia-smi; GPU_BENCH_ARCH overrides).
# Peer mode (GPU_BENCH_LLAMA_BENCH=<path of llama-bench.cpp>, carried from the user's copy by
# scripts/gpu-prepare.sh; llama-bench's source is never committed here): also builds llama.cpp's
# common library and llama-bench against the same CUDA libraries, and instead of the three
# settings runs llama-runner and llama-bench interleaved, GPU_BENCH_ROUNDS rounds, on `-ngl 99`
# and on `-ngl 99 -ot exps=CPU`, pp512 and tg128: parity.md and samples.tsv (as
# scripts/peer-compare.sh writes them, with `llama-runner peer-samples` / `peer-table`).
#
# Resumable: the build tree lives in .cache/gpu-work (GPU_BENCH_WORK), which the device tool
# keeps between calls while the machine is warm. When the build does not finish within its
# budget the script exits 3 ("RESUME"); running it again at once continues the build where it
# stopped and goes on to the benchmarks.
#
# Writes at most 8 files into $OUT (the device tool's limit):
#   summary.txt    what ran, the timings, the commit, tokens/s and VRAM per device
#   env.txt        nvidia-smi, nvcc and CMake versions; `llama-runner info` against the CUDA
#                  libraries (commit check, devices)
#   build.log      the end of the CMake configure and build output
#   bench-gpu.json, bench-cmoe.json, bench-cmoe-q8.json   the result records
#   compare.md     the records side by side
#   run.log        stderr of the runs
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
work=${GPU_BENCH_WORK:-$root/.cache/gpu-work}
mkdir -p "$work"
budget=${GPU_BENCH_BUDGET_S:-570}   # the whole script; the device tool's limit is 600 s a command
bench_reserve=${GPU_BENCH_RESERVE_S:-150}   # kept for model generation and the benchmarks
reps=${GPU_BENCH_REPETITIONS:-3}
workloads=${GPU_BENCH_WORKLOADS:-medium long}   # pp512/tg128 and pp2048/tg128
preset=${GPU_BENCH_PRESET:-large-moe}    # tiny-gguf preset: ~300 MB Q8_0 qwen3moe
# GPU_BENCH_CUDA=OFF: a dry run of everything but CUDA on a machine without GPU (with fake
# nvidia-smi/nvcc on PATH), to check the script itself.
cuda=${GPU_BENCH_CUDA:-ON}
peer_src=${GPU_BENCH_LLAMA_BENCH:-}
rounds=${GPU_BENCH_ROUNDS:-3}
common=OFF
if [ -n "$peer_src" ]; then
    common=ON
fi
summary="$OUT/summary.txt"
log() { echo "[+${SECONDS}s] $*" | tee -a "$summary" >&2; }
fail() { log "FAILED: $*"; exit 1; }

carry=.cache/gpu-carry
src=vendor/llama.cpp
[ -f "$src/CMakeLists.txt" ] || fail "no $src (carry it: the device tool sends submodule paths only when named in carry)"
[ -x "$carry/llama-runner" ] && [ -x "$carry/tiny-gguf" ] || fail "no $carry/llama-runner or tiny-gguf (run scripts/gpu-prepare.sh, carry .cache/gpu-carry)"

# The commit: the provisioning marker, else the pin (same as llama-sys's source.rs).
commit=$(sed -n 's/^commit=//p' "$src/.llama-cpp-source" 2>/dev/null)
number=$(sed -n 's/^build_number=//p' "$src/.llama-cpp-source" 2>/dev/null)
[ -n "$commit" ] || commit=$(sed -n 's/^LLAMA_CPP_COMMIT=//p' vendor/llama.cpp.pin)
[ -n "$number" ] || number=$(sed -n 's/^LLAMA_CPP_BUILD_NUMBER=//p' vendor/llama.cpp.pin)
log "llama.cpp $commit (b$number); runner compiled against: $(cat "$carry/BUILT_AGAINST" 2>/dev/null || echo '?')"

# Tools: the image has nvcc under /usr/local/cuda and CMake/ninja possibly only in Python's venv.
for d in /usr/local/cuda/bin /opt/torch/.venv/bin; do
    [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH
command -v nvcc >/dev/null || fail "no nvcc"
command -v cmake >/dev/null || fail "no cmake"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
{
    nvidia-smi
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,memory.used --format=csv
    nvcc --version
    cmake --version | head -n 1
    echo "ninja: $(ninja --version 2>/dev/null || echo none); cores: $(nproc)"
} >"$OUT/env.txt" 2>&1
arch=${GPU_BENCH_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')}
[ -n "$arch" ] || fail "no GPU architecture (nvidia-smi gave none; set GPU_BENCH_ARCH)"
log "GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1); arch $arch; $(nvcc --version | tail -n 1)"

# Configure and build: llama-sys's options (llama-sys/build/cmake.rs), shared libraries, CUDA,
# one architecture. Common/tools/tests are not needed here.
bdir="$work/build"; prefix="$work/install"
export CCACHE_BASEDIR="$root"   # where ccache exists (not on the device machine), reuse across trees
t0=$SECONDS
[ -f "$bdir/CMakeCache.txt" ] && log "resuming the build in $bdir"
cmake -S "$src" -B "$bdir" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON="$common" -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DGGML_OPENMP=ON -DGGML_NATIVE=ON -DGGML_CUDA="$cuda" -DGGML_CUDA_NCCL=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DLLAMA_BUILD_COMMIT="$commit" -DLLAMA_BUILD_NUMBER="$number" -DGIT_EXE=OFF \
    >"$work/configure.log" 2>&1 || { tail -n 40 "$work/configure.log" >"$OUT/build.log"; fail "CMake configure"; }
log "configured in $((SECONDS - t0)) s"
t1=$SECONDS
build_budget=$((budget - bench_reserve - SECONDS))
[ $build_budget -gt 30 ] || build_budget=30
timeout "$build_budget" cmake --build "$bdir" --config Release -j "$(nproc)" >"$work/build-output.log" 2>&1
rc=$?
{ tail -n 30 "$work/configure.log"; echo ...; tail -n 60 "$work/build-output.log"; } >"$OUT/build.log"
if [ $rc = 124 ]; then
    done_n=$(grep -cE '\[[0-9]+/[0-9]+\]|%\]' "$work/build-output.log" || true)
    log "RESUME: the build did not finish within ${build_budget} s ($done_n steps this call); run the script again at once to continue"
    exit 3
fi
[ $rc = 0 ] || fail "CMake build (exit $rc)"
cmake --install "$bdir" >/dev/null 2>&1 || fail "CMake install"
log "built in $((SECONDS - t1)) s: $(ls "$prefix/lib" | grep -E '^lib(llama|ggml).*\.so$' | tr '\n' ' ')"
export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The runner against these libraries: its commit check, the devices it sees.
runner="$carry/llama-runner"
"$runner" info >"$work/info.txt" 2>>"$OUT/run.log" || { cat "$work/info.txt" >>"$OUT/env.txt"; fail "llama-runner info (see env.txt, run.log)"; }
{ echo; echo "== llama-runner info"; cat "$work/info.txt"; } >>"$OUT/env.txt"
grep -E 'library reports|^device' "$work/info.txt" | tee -a "$summary" >&2
[ "$cuda" = OFF ] || grep -q '^device CUDA' "$work/info.txt" || fail "no CUDA device registered"

# The model: ~300 MB Q8_0 qwen3moe, deterministic.
t2=$SECONDS
model=$("$carry/tiny-gguf" --preset "$preset" --out-dir "$work/models" 2>>"$OUT/run.log" | tail -n 1)
[ -f "$model" ] || fail "model generation"
log "model $(basename "$model") ($(du -m "$model" | cut -f1) MiB) in $((SECONDS - t2)) s"

run_bench() { # name, flags
    local left=$((budget - SECONDS))
    [ $left -gt 30 ] || { log "skipped $1: ${left} s left"; return 1; }
    t=$SECONDS
    local wl=(); for w in $workloads; do wl+=(--workload "$w"); done
    timeout "$left" "$runner" bench --flags "-m $model $2" --name "$1" "${wl[@]}" \
        --repetitions "$reps" --record "$work/bench-$1.json" >>"$OUT/run.log" 2>&1 \
        || { log "bench $1 failed (run.log)"; return 1; }
    cp "$work/bench-$1.json" "$OUT/"   # not the .jsonl beside it: 8 files come back at most
    log "bench $1 ($2): $((SECONDS - t)) s"
}
if [ -n "$peer_src" ]; then
    [ -f "$peer_src" ] || fail "GPU_BENCH_LLAMA_BENCH=$peer_src: no such file"
    # llama-bench's main() lives in a separate file in recent trees (as in scripts/peer-compare.sh).
    lb_srcs=("$peer_src")
    if ! grep -q 'int main(' "$peer_src"; then
        printf 'int llama_bench(int argc, char ** argv);\nint main(int argc, char ** argv) { return llama_bench(argc, argv); }\n' \
            >"$work/llama-bench-main.cpp"
        lb_srcs+=("$work/llama-bench-main.cpp")
    fi
    common_so=$(find "$bdir" -name 'libllama-common.so' | head -n 1)
    common_base=$(find "$bdir" -name 'libllama-common-base.a' | head -n 1)
    [ -n "$common_so" ] && [ -n "$common_base" ] || fail "no libllama-common.so / libllama-common-base.a in $bdir"
    t=$SECONDS
    g++ -O3 -DNDEBUG -std=c++17 -I"$prefix/include" -I"$src/common" "${lb_srcs[@]}" \
        -L"$(dirname "$common_so")" -L"$(dirname "$common_base")" -L"$prefix/lib" \
        -lllama-common -lllama-common-base -lllama -lggml -lggml-base -fopenmp -lpthread -ldl \
        -Wl,-rpath,"$(dirname "$common_so")" -o "$work/llama-bench" >>"$OUT/run.log" 2>&1 \
        || fail "compiling llama-bench (run.log)"
    export LD_LIBRARY_PATH="$(dirname "$common_so"):$LD_LIBRARY_PATH"
    log "llama-bench built in $((SECONDS - t)) s"
    threads=${GPU_BENCH_THREADS:-$(nproc)}
    samples="$OUT/samples.tsv"; : >"$samples"
    # Samples and table come from the command (src/peer.rs), as in scripts/peer-compare.sh.
    jsonl() { # label runner file round
        "$runner" peer-samples --model "$1" --runner "$2" --round "$4" "$3" || log "no samples in $3 (run.log)"
    }
    for k in $(seq 1 "$rounds"); do
        for setting in "-ngl 99" "-ngl 99 -ot exps=CPU"; do
            label="$preset $setting"
            [ $((budget - SECONDS)) -gt 20 ] || { log "round $k: out of time"; break 2; }
            tag="r$k-$(echo "$setting" | tr -c 'a-z0-9' '_')"
            timeout 120 "$runner" bench --flags "-m $model -t $threads $setting" --workload medium \
                --repetitions "$reps" --record "$work/runner-$tag.json" >>"$OUT/run.log" 2>&1 \
                || log "llama-runner $setting round $k failed (run.log)"
            [ -f "$work/runner-$tag.jsonl" ] && jsonl "$label" llama-runner "$work/runner-$tag.jsonl" "$k" >>"$samples"
            timeout 120 "$work/llama-bench" -m "$model" -t "$threads" $setting -p 512 -n 128 -r "$reps" -o jsonl \
                >"$work/bench-$tag.jsonl" 2>>"$OUT/run.log" || log "llama-bench $setting round $k failed (run.log)"
            jsonl "$label" llama-bench "$work/bench-$tag.jsonl" "$k" >>"$samples"
            log "round $k, $setting: done"
        done
    done
    "$runner" peer-table "$samples" >"$OUT/parity.md"
    cat "$OUT/parity.md" >>"$summary"
    for f in "$work"/runner-r"$rounds"-*.json; do [ -f "$f" ] && cp "$f" "$OUT/"; done
    log "done in ${SECONDS} s"
    exit 0
fi

# llama.cpp's own log of where the weights went, with and without -cmoe (buffer sizes per device).
for f in "-ngl 99" "-ngl 99 -cmoe"; do
    echo "== generate $f: llama.cpp log (buffers, offload)" >>"$summary"
    timeout 60 "$runner" generate -vv --flags "-m $model $f" -p "hello" -n 8 >"$work/generate.log" 2>&1 || true
    grep -E 'offload|buffer size' "$work/generate.log" | head -n 20 >>"$summary"
    echo "tensors overridden: $(grep -c 'buffer type overridden' "$work/generate.log")" >>"$summary"
done
run_bench gpu "-ngl 99"
run_bench cmoe "-ngl 99 -cmoe"
# The users' own setting: experts on the CPU, flash attention, q8_0 K and V caches.
run_bench cmoe-q8 "-ngl 99 -cmoe -fa on -ctk q8_0 -ctv q8_0"

# Tokens/s and VRAM per device from the records.
for r in "$OUT"/bench-*.json; do
    [ -f "$r" ] || continue
    python3 - "$r" >>"$summary" 2>&1 <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
b = r.get("build", {})
print(f"== {r.get('config')} ({r.get('flags')}): commit {b.get('commit')}, library {b.get('library_commit')}, "
      f"runtime backends {b.get('runtime_backends')}")
for w in r.get("workloads", []):
    parts = []
    for k in ("pp", "tg"):
        st = w.get(k)
        if st:
            parts.append(f"{k}{st['n_tokens']} {st['avg_ts']:.1f} ± {st['stddev_ts']:.1f} t/s")
    print(f"  {w['workload']['name']}: " + ", ".join(parts))
for snap in r.get("memory", []):
    devs = ", ".join(f"{d['name']} {(d['memory_total'] - d['memory_free']) >> 20} of {d['memory_total'] >> 20} MiB used"
                     for d in snap.get("devices", []) if d.get("kind") != "cpu")
    print(f"  VRAM {snap.get('stage')}: {devs}; process RSS {snap.get('process_rss', 0) >> 20} MiB")
PY
done
records=(); for n in gpu cmoe cmoe-q8; do [ -f "$OUT/bench-$n.json" ] && records+=("$OUT/bench-$n.json"); done
[ ${#records[@]} -ge 2 ] && "$runner" compare "${records[@]}" >"$OUT/compare.md" 2>>"$OUT/run.log"
log "done in ${SECONDS} s"

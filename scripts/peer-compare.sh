#!/usr/bin/env bash
# Peer comparison: llama-runner against llama.cpp's own llama-bench and the `llama-cpp-2` crate,
# same model, same threads, pp512 and tg128, runners interleaved and rotated (A B C, B C A,
# C A B, ...) so that drift of the machine and the slot in a round spread over all of them.
# Prints a markdown table (mean ± n-1 standard deviation over every repetition of every round)
# and the ratios of llama-runner to the others.
#
#   LLAMA_BENCH_SRC=/path/to/llama-bench.cpp scripts/peer-compare.sh [MODEL ...]
#   scripts/peer-compare.sh --table .cache/peer-compare/*/samples.tsv   # table of earlier runs, pooled
#   scripts/peer-compare.sh --jsonl-samples LABEL RUNNER FILE.jsonl [ROUND]   # sample lines of one JSONL
#
# Models default to the real model (.cache/models/gemma-3-270m-q4_k_m.gguf, see
# scripts/fetch-real-model.sh) and the generated bench-moe model (made here if missing).
#
# Environment:
#   THREADS=2          threads for every runner (-t)
#   REPS=5             repetitions per test per run
#   ROUNDS=2           interleaved rounds (each round runs every runner once per model)
#   LLAMA_BENCH_SRC    llama.cpp's tools/llama-bench/llama-bench.cpp (not shipped here: its source
#                      is not in the packaged llama.cpp sources). Copied to .cache/llama-bench/ and
#                      built against this workspace's installed llama.cpp libraries. Unset: reuse
#                      .cache/llama-bench/llama-bench if it was built before, else skip llama-bench.
#   PEER_NATIVE=0      1: also build and run llama-cpp-2 with RUSTFLAGS="-C target-cpu=native"
#                      (its default build has GGML_NATIVE=OFF; this separates the flag's effect
#                      from wrapper overhead). Adds a ~7 minute build on a small machine.
#   OUT=.cache/peer-compare/<timestamp>   where the raw outputs go
#   BUILD=1            0: skip the cargo builds and use the binaries already in target/ (llama-bench
#                      is still built when LLAMA_BENCH_SRC is set)
#
# pp/tg sizes are fixed at 512/128: llama-runner runs its `medium` workload preset.
set -euo pipefail

cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
REPS="${REPS:-5}"
ROUNDS="${ROUNDS:-2}"
PEER_NATIVE="${PEER_NATIVE:-0}"
BUILD="${BUILD:-1}"
N_PROMPT=512
N_GEN=128
OUT="${OUT:-.cache/peer-compare/$(date -u +%Y%m%dT%H%M%SZ)}"

log() { printf '%s\n' "$*" >&2; }

# The numbers come from the llama-runner command (src/peer.rs), not from this script:
# `llama-runner peer-samples` turns one runner's output file into sample lines
# (model<TAB>runner<TAB>test<TAB>tokens/s per repetition<TAB>round), and `llama-runner peer-table`
# makes the markdown table of sample files: mean and n-1 standard deviation over all repetitions
# of all rounds, and llama-runner's ratio to each peer: the ratio of the pooled means, and where
# rounds are known the mean ± standard error of the per-round ratios (each round's means, runs
# minutes apart). Before the build below, an earlier release build (or cargo run) serves.
RUNNER=${LLAMA_RUNNER:-target/release/llama-runner}
runner_tool() {
    if [ -x "$RUNNER" ]; then
        "$RUNNER" "$@"
    else
        cargo run -q --release -p llama-workbench --bin llama-runner -- "$@"
    fi
}
table() { runner_tool peer-table "$@"; }
# llama-bench JSONL (llama-bench itself, and the one llama-runner writes next to its record)
jsonl_samples() { # model runner file [round]
    runner_tool peer-samples --model "$1" --runner "$2" ${4:+--round "$4"} "$3"
}
# the llama-cpp-2 peer's JSON lines: {"test":"pp512",...,"samples_ns":[...]}
peer_samples() { # model runner file round
    runner_tool peer-samples --format peer --model "$1" --runner "$2" --round "$4" "$3"
}

# `scripts/peer-compare.sh --jsonl-samples LABEL RUNNER FILE [ROUND]`: sample lines of one JSONL file.
if [ "${1:-}" = "--jsonl-samples" ]; then
    shift
    jsonl_samples "$@"
    exit 0
fi

# `scripts/peer-compare.sh --table SAMPLES.tsv...`: only the table, from earlier runs' samples.
if [ "${1:-}" = "--table" ]; then
    shift
    table "$@"
    exit 0
fi

# --- builds ------------------------------------------------------------------------------------
mkdir -p "$OUT"
if [ "$BUILD" = 1 ]; then
    log "== building llama-runner (release)"
    cargo build --release -p llama-workbench >&2
fi

PREFIX="$(ls -dt target/release/build/llama-sys-*/out/llama.cpp-* 2>/dev/null | head -n 1 || true)"
if [ -z "$PREFIX" ] || [ ! -f "$PREFIX/lib/libllama.a" ]; then
    log "error: no installed llama.cpp under target/release/build/llama-sys-*/out/llama.cpp-*"
    exit 1
fi
log "== llama.cpp libraries: $PREFIX"

LB_DIR=.cache/llama-bench
LLAMA_BENCH="$LB_DIR/llama-bench"
if [ -n "${LLAMA_BENCH_SRC:-}" ]; then
    log "== building llama-bench from $LLAMA_BENCH_SRC"
    mkdir -p "$LB_DIR"
    if [ "$(cd "$(dirname "$LLAMA_BENCH_SRC")" && pwd)/$(basename "$LLAMA_BENCH_SRC")" != "$(pwd)/$LB_DIR/llama-bench.cpp" ]; then
        cp "$LLAMA_BENCH_SRC" "$LB_DIR/llama-bench.cpp"
    fi
    SRCS=("$LB_DIR/llama-bench.cpp")
    # Recent llama-bench.cpp defines llama_bench() and leaves main() to a separate file.
    if ! grep -q 'int main(' "$LB_DIR/llama-bench.cpp"; then
        printf 'int llama_bench(int argc, char ** argv);\nint main(int argc, char ** argv) { return llama_bench(argc, argv); }\n' \
            > "$LB_DIR/main.cpp"
        SRCS+=("$LB_DIR/main.cpp")
    fi
    # -DNDEBUG as in llama.cpp's CMake Release build (otherwise llama-bench warns "asserts enabled").
    g++ -O3 -DNDEBUG -std=c++17 -I"$PREFIX/include" -Ivendor/llama.cpp/common "${SRCS[@]}" \
        -L"$PREFIX/lib" -lllama-common -lllama-common-base -lcpp-httplib -lllama -lggml -lggml-cpu -lggml-base \
        -fopenmp -lpthread -ldl -o "$LLAMA_BENCH"
fi
if [ ! -x "$LLAMA_BENCH" ]; then
    log "warning: no llama-bench (set LLAMA_BENCH_SRC=/path/to/llama-bench.cpp); skipping it"
    LLAMA_BENCH=""
fi

PEER_DIR=peers/llama-cpp-2-bench
if [ "$BUILD" = 1 ]; then
    log "== building llama-cpp-2 peer (default build)"
    (cd "$PEER_DIR" && cargo build --release >&2)
fi
PEER="$PEER_DIR/target/release/llama-cpp-2-bench"
PEER_NAT=""
if [ "$PEER_NATIVE" = 1 ]; then
    if [ "$BUILD" = 1 ]; then
        log "== building llama-cpp-2 peer (RUSTFLAGS=-C target-cpu=native)"
        (cd "$PEER_DIR" && RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target-native cargo build --release >&2)
    fi
    PEER_NAT="$PEER_DIR/target-native/release/llama-cpp-2-bench"
fi

# --- models ------------------------------------------------------------------------------------
if [ "$#" -gt 0 ]; then
    MODELS=("$@")
else
    MODELS=()
    if [ -f .cache/models/gemma-3-270m-q4_k_m.gguf ]; then
        MODELS+=(.cache/models/gemma-3-270m-q4_k_m.gguf)
    else
        log "warning: .cache/models/gemma-3-270m-q4_k_m.gguf missing (scripts/fetch-real-model.sh); skipping it"
    fi
    MOE="$(ls .cache/models/generated/qwen3moe-q8_0-e512-l6-h8-kv4-x8u2-f768-c4096-s42.gguf 2>/dev/null || true)"
    if [ -z "$MOE" ]; then
        MOE="$(cargo run -q --release -p tiny-gguf -- --preset bench-moe --out-dir .cache/models/generated | tail -n 1)"
    fi
    MODELS+=("$MOE")
fi

# --- runs --------------------------------------------------------------------------------------
# Every repetition becomes one line of $SAMPLES: model<TAB>runner<TAB>test<TAB>tokens/s.
SAMPLES="$OUT/samples.tsv"
: > "$SAMPLES"

run_one() { # model runner round
    local m="$1" r="$2" k="$3" tag
    tag="$(basename "$m" .gguf)-$r-$k"
    log "-- $(date -u +%H:%M:%S) $r on $(basename "$m"), round $k (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    case "$r" in
        llama-runner)
            "$RUNNER" bench --flags "-m $m -t $THREADS" --workload medium --repetitions "$REPS" \
                --record "$OUT/$tag.json" > "$OUT/$tag.out" 2>&1
            jsonl_samples "$m" "$r" "$OUT/$tag.jsonl" "$k" >> "$SAMPLES"
            ;;
        llama-bench)
            "$LLAMA_BENCH" -m "$m" -t "$THREADS" -p "$N_PROMPT" -n "$N_GEN" -r "$REPS" -o jsonl \
                > "$OUT/$tag.jsonl" 2> "$OUT/$tag.err"
            jsonl_samples "$m" "$r" "$OUT/$tag.jsonl" "$k" >> "$SAMPLES"
            ;;
        llama-cpp-2)
            "$PEER" "$m" "$THREADS" "$N_PROMPT" "$N_GEN" "$REPS" > "$OUT/$tag.jsonl" 2> "$OUT/$tag.err"
            peer_samples "$m" "$r" "$OUT/$tag.jsonl" "$k" >> "$SAMPLES"
            ;;
        llama-cpp-2-native)
            "$PEER_NAT" "$m" "$THREADS" "$N_PROMPT" "$N_GEN" "$REPS" > "$OUT/$tag.jsonl" 2> "$OUT/$tag.err"
            peer_samples "$m" "$r" "$OUT/$tag.jsonl" "$k" >> "$SAMPLES"
            ;;
    esac
}

RUNNERS=(llama-runner)
[ -n "$LLAMA_BENCH" ] && RUNNERS+=(llama-bench)
RUNNERS+=(llama-cpp-2)
[ -n "$PEER_NAT" ] && RUNNERS+=(llama-cpp-2-native)

log "== cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; threads $THREADS, $REPS reps x $ROUNDS rounds"
# Each round starts with the next runner (A B C D, B C D A, ...): the slot a runner runs in
# matters on a small VM, so no runner always goes first.
for m in "${MODELS[@]}"; do
    for k in $(seq 1 "$ROUNDS"); do
        for i in $(seq 0 $((${#RUNNERS[@]} - 1))); do
            run_one "$m" "${RUNNERS[$(((i + k - 1) % ${#RUNNERS[@]}))]}" "$k"
        done
    done
done

# --- table -------------------------------------------------------------------------------------
table "$SAMPLES" | tee "$OUT/table.md"
log "raw outputs: $OUT"

#!/usr/bin/env bash
# Parallel generation against llama.cpp's own llama-batched-bench: the same model, threads and
# context settings, 1 and NPL sequences (a prompt of N_PROMPT tokens each, then N_GEN steps of one
# batch holding the next token of every sequence), the two tools interleaved in rounds (the order
# rotated each round). Prints a markdown table: S_PP and S_TG (aggregate tokens/s over all
# sequences, as llama-batched-bench names them), mean ± n-1 standard deviation over every
# repetition of every round, and the ratios llama-runner / llama-batched-bench (of the pooled
# means, and the mean ± standard error of the per-round ratios), from `llama-runner peer-table`.
#
#   LLAMA_BATCHED_BENCH_SRC=/path/to/batched-bench.cpp scripts/batched-bench-compare.sh [MODEL]
#   LLAMA_CPP_GIT=/path/to/llama.cpp/.git scripts/batched-bench-compare.sh   # source from git at the pin
#   scripts/batched-bench-compare.sh --table OUT/samples.tsv ...             # table of earlier runs, pooled
#
# MODEL defaults to the real model (.cache/models/gemma-3-270m-q4_k_m.gguf, scripts/fetch-real-model.sh).
#
# Environment:
#   THREADS=2 ROUNDS=3 REPS=3   threads (-t), interleaved rounds, timed repetitions per tool per round
#   N_PROMPT=128 N_GEN=64 NPL=8 prompt and generated tokens per sequence, sequences of the parallel case
#   N_CTX=2048 N_BATCH=512 N_UBATCH=512   -c -b -ub (those of configs/cpu-gemma-throughput.toml)
#   RUNNER_KVU=1               1: the runner's configuration has -kvu (one unified KV cache, as the
#                              -kvu column); 0: without, one KV stream per sequence, as the
#                              default column (the runner follows the configuration's -kvu)
#   BB_DEFAULT_KV=1            1: also run llama-batched-bench as it runs by default at the pin,
#                              without -kvu (one KV stream per sequence), as a third column
#   LLAMA_BATCHED_BENCH_SRC    llama.cpp's tools/batched-bench/batched-bench.cpp at the workspace's
#                              pin (a file, or a llama.cpp tree holding it). It is not among the
#                              sources the workspace vendors; it is copied to .cache/batched-bench/
#                              (git-ignored, never committed) and built there against this
#                              workspace's installed llama.cpp libraries (the common library
#                              included), so both tools run the very same ggml kernels.
#   LLAMA_CPP_GIT              instead: a llama.cpp git directory (bare or not) holding the pin
#                              (vendor/llama.cpp.pin); the file is read with `git show PIN:...`.
#                              Neither set: reuse .cache/batched-bench/llama-batched-bench.
#   BUILD=1                    0: skip the cargo build and use $CARGO_TARGET_DIR/release/llama-runner
#   LLAMA_RUNNER               a llama-runner binary to use instead (its llama.cpp libraries must be
#                              the ones under $CARGO_TARGET_DIR/release/build, or pass LLAMA_PREFIX)
#   LLAMA_PREFIX               the installed llama.cpp (include/, lib/) to build batched-bench against
#   OUT=.cache/batched-bench-compare/<timestamp>   where the raw outputs go
#
# The settings, side by side (llama-batched-bench at 5f55650a; llama-runner's `parallel = N`
# workload, src/measure.rs run_parallel, and its one-sequence llama-bench tests):
#   same:   -t 2 for n_threads and n_threads_batch; n_ctx 2048 (-c; the runner keeps the larger of
#           -c and what the workload needs); n_batch 512, n_ubatch 512; flash attention auto (-1,
#           both); f16 K and V; mmap, no mlock; kv_unified on (-kvu for both with RUNNER_KVU=1;
#           off for the runner with RUNNER_KVU=0, to match the default column); n_seq_max NPL for the parallel case; random token ids; for pp
#           logits for the last token of each sequence, for tg logits for every token; the tg
#           step is one batch of one token per sequence at position N_PROMPT + i, timed over
#           all N_GEN steps after the prompts; S_PP = npl*pp/t_pp, S_TG = npl*tg/t_tg.
#   differ: (1) kv_unified is OFF by default in llama-batched-bench at the pin (common_params'
#           default; -kvu turns it on): the matched run passes -kvu, the BB_DEFAULT_KV column
#           shows the default (one 256-cell stream per sequence instead of one shared 2048-cell
#           stream).
#           (2) The prompts of the parallel case: both put all npl prompts in one batch and
#           decode it in views of n_batch (8 x 128 = 1024 tokens: 2 decodes of 512, 4 sequences
#           each), one sync at the end (the runner decoded one sequence's prompt at a time
#           before 2026-12-03).
#           (3) npl 1: llama-batched-bench's context has n_seq_max = max(npl) = NPL, pp then tg
#           on one context; the runner's one-sequence figures are two llama-bench tests, pp of
#           N_PROMPT at depth 0 and tg of N_GEN at depth N_PROMPT, each on a fresh context with
#           n_seq_max 1 (same positions; with a unified cache the same single 2048-cell stream).
#           (4) Repetitions: llama-batched-bench measures each npl once, after a 16-token
#           warm-up. Here it is given each npl REPS+1 times (-npl 1,1,1,1,8,8,8,8) and the first
#           of each is dropped as a warm-up, as the runner runs one untimed repetition first.
#           (5) llama-batched-bench synchronizes after every tg decode, the runner once after
#           the tg loop (decodes on the CPU backend are synchronous anyway); its context keeps
#           libllama's perf timers on (common's no_perf = false), the runner's are off, as
#           llama-bench's; the runner's prompts start with BOS.
set -euo pipefail

cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
REPS="${REPS:-3}"
N_PROMPT="${N_PROMPT:-128}"
N_GEN="${N_GEN:-64}"
NPL="${NPL:-8}"
N_CTX="${N_CTX:-2048}"
N_BATCH="${N_BATCH:-512}"
N_UBATCH="${N_UBATCH:-512}"
BB_DEFAULT_KV="${BB_DEFAULT_KV:-1}"
RUNNER_KVU="${RUNNER_KVU:-1}"
RUNNER_KV_FLAG=""
[ "$RUNNER_KVU" = 1 ] && RUNNER_KV_FLAG=" -kvu"
BUILD="${BUILD:-1}"
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-.cache/batched-bench-compare/$(date -u +%Y%m%dT%H%M%SZ)}"

log() { printf '%s\n' "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# The numbers come from the llama-runner command (src/peer.rs), not from this script:
# `llama-runner peer-samples --format record|batched-bench` turns a runner's output into sample
# lines (model, runner, test `S_PP npl<N>` / `S_TG npl<N>`, tokens/s per repetition, round; the
# first llama-batched-bench line of each npl is its warm-up and dropped), and `llama-runner
# peer-table` pools them: mean ± n-1 sd per tool and test, and llama-runner's ratio to each
# other tool (of the pooled means, and the mean ± standard error of the per-round ratios).
runner_cmd() {
    local bin="${LLAMA_RUNNER:-$TARGET/release/llama-runner}"
    if [ -x "$bin" ]; then "$bin" "$@"; else cargo run -q --release -p llama-workbench --bin llama-runner -- "$@"; fi
}

table() { runner_cmd peer-table "$@"; }

if [ "${1:-}" = "--table" ]; then
    shift
    table "$@"
    exit 0
fi

MODEL="${1:-.cache/models/gemma-3-270m-q4_k_m.gguf}"
[ -f "$MODEL" ] || { log "error: no model $MODEL (scripts/fetch-real-model.sh)"; exit 1; }
MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
mkdir -p "$OUT"

# --- builds ------------------------------------------------------------------------------------
if [ -z "${LLAMA_RUNNER:-}" ] && [ "$BUILD" = 1 ]; then
    log "== building llama-runner (release)"
    cargo build --release -p llama-workbench --bin llama-runner >&2
fi
RUNNER_SRC="${LLAMA_RUNNER:-$TARGET/release/llama-runner}"
[ -x "$RUNNER_SRC" ] || { log "error: no $RUNNER_SRC (build it, or set CARGO_TARGET_DIR / LLAMA_RUNNER)"; exit 1; }
# A copy: a cargo build elsewhere in the workspace must not swap the binary between rounds.
mkdir -p "$OUT/bin"
cp "$RUNNER_SRC" "$OUT/bin/llama-runner"
RUNNER="$OUT/bin/llama-runner"

PREFIX="${LLAMA_PREFIX:-$(ls -dt "$TARGET"/release/build/llama-sys-*/out/llama.cpp-* 2>/dev/null | head -n 1 || true)}"
if [ -z "$PREFIX" ] || [ ! -f "$PREFIX/lib/libllama.a" ]; then
    log "error: no installed llama.cpp under $TARGET/release/build/llama-sys-*/out/llama.cpp-* (or LLAMA_PREFIX)"
    exit 1
fi
if [ ! -f "$PREFIX/lib/libllama-common.a" ]; then
    log "error: llama.cpp's common library was not built (LLAMA_SYS_BUILD_COMMON=ON, see .cargo/config.toml)"
    exit 1
fi
if [ "$PREFIX/lib/libggml-cpu.a" -nt "$RUNNER_SRC" ]; then
    log "warning: $PREFIX/lib/libggml-cpu.a is newer than $RUNNER_SRC: the runner may hold other kernels (rebuild it)"
fi
log "== llama.cpp libraries: $PREFIX"

BB_DIR=.cache/batched-bench
BB="$BB_DIR/llama-batched-bench"
PIN="$(sed -n 's/^LLAMA_CPP_COMMIT=//p' vendor/llama.cpp.pin)"
mkdir -p "$BB_DIR"
SRC_NEW=""
if [ -n "${LLAMA_BATCHED_BENCH_SRC:-}" ]; then
    SRC_FILE="$LLAMA_BATCHED_BENCH_SRC"
    [ -d "$SRC_FILE" ] && SRC_FILE="$SRC_FILE/tools/batched-bench/batched-bench.cpp"
    [ -f "$SRC_FILE" ] || { log "error: no $SRC_FILE"; exit 1; }
    if [ "$(cd "$(dirname "$SRC_FILE")" && pwd)/$(basename "$SRC_FILE")" != "$(pwd)/$BB_DIR/batched-bench.cpp" ]; then
        cp "$SRC_FILE" "$BB_DIR/batched-bench.cpp"
    fi
    SRC_NEW="$SRC_FILE"
elif [ -n "${LLAMA_CPP_GIT:-}" ]; then
    git -C "$LLAMA_CPP_GIT" show "$PIN:tools/batched-bench/batched-bench.cpp" > "$BB_DIR/batched-bench.cpp.new" \
        || { log "error: no tools/batched-bench/batched-bench.cpp at $PIN in $LLAMA_CPP_GIT"; exit 1; }
    mv "$BB_DIR/batched-bench.cpp.new" "$BB_DIR/batched-bench.cpp"
    SRC_NEW="$LLAMA_CPP_GIT at $PIN"
fi
if [ -n "$SRC_NEW" ] || [ ! -x "$BB" ] || { [ -f "$BB_DIR/batched-bench.cpp" ] && [ "$PREFIX/lib/libllama.a" -nt "$BB" ]; }; then
    [ -f "$BB_DIR/batched-bench.cpp" ] || {
        log "error: no llama-batched-bench source: set LLAMA_BATCHED_BENCH_SRC=/path/to/batched-bench.cpp or LLAMA_CPP_GIT"
        exit 1
    }
    log "== building llama-batched-bench from ${SRC_NEW:-$BB_DIR/batched-bench.cpp}"
    SRCS=("$BB_DIR/batched-bench.cpp")
    # At the pin the tool defines llama_batched_bench() and leaves main() to a separate file.
    if ! grep -q 'int main(' "$BB_DIR/batched-bench.cpp"; then
        printf 'int llama_batched_bench(int argc, char ** argv);\nint main(int argc, char ** argv) { return llama_batched_bench(argc, argv); }\n' \
            > "$BB_DIR/main.cpp"
        SRCS+=("$BB_DIR/main.cpp")
    fi
    # -DNDEBUG as in llama.cpp's CMake Release build.
    g++ -O3 -DNDEBUG -std=c++17 -I"$PREFIX/include" -Ivendor/llama.cpp/common "${SRCS[@]}" \
        -L"$PREFIX/lib" -lllama-common -lllama-common-base -lcpp-httplib -lllama -lggml -lggml-cpu -lggml-base \
        -fopenmp -lpthread -ldl -o "$BB"
fi

# --- the runner's configuration (the settings above, as a file) ----------------------------------
CONFIG="$OUT/runner.toml"
cat > "$CONFIG" <<EOF
# written by scripts/batched-bench-compare.sh: llama-batched-bench -npp $N_PROMPT -ntg $N_GEN -npl 1,$NPL
name = "batched-bench-compare"
model_path = "$MODEL"
flags = "-t $THREADS -c $N_CTX -b $N_BATCH -ub $N_UBATCH$RUNNER_KV_FLAG"

# npl 1: the prompt from an empty cache, generation after the prompt's $N_PROMPT tokens
[[workload]]
name = "pp1"
n_prompt = $N_PROMPT
n_gen = 0
repetitions = $REPS

[[workload]]
name = "tg1"
n_prompt = 0
n_gen = $N_GEN
n_depth = $N_PROMPT
repetitions = $REPS

[[workload]]
name = "par$NPL"
n_prompt = $N_PROMPT
n_gen = $N_GEN
parallel = $NPL
repetitions = $REPS
EOF

NPL_LIST="$(for _ in $(seq 0 "$REPS"); do printf '1,'; done; for _ in $(seq 0 "$REPS"); do printf '%s,' "$NPL"; done)"
NPL_LIST="${NPL_LIST%,}"
BB_ARGS=(-m "$MODEL" -t "$THREADS" -c "$N_CTX" -b "$N_BATCH" -ub "$N_UBATCH" -npp "$N_PROMPT" -ntg "$N_GEN" -npl "$NPL_LIST" --output-format jsonl)

SAMPLES="$OUT/samples.tsv"
: > "$SAMPLES"
LOADS="$OUT/load.txt"
: > "$LOADS"

run_one() { # tool round
    local t="$1" k="$2" tag
    tag="$(echo "$t" | tr -c 'A-Za-z0-9_.\n-' '_')-$k"
    log "-- $(date -u +%H:%M:%S) $t, round $k (load: $(load))"
    printf '%s\t%s\tbefore\t%s\n' "$t" "$k" "$(load)" >> "$LOADS"
    case "$t" in
        llama-runner)
            "$RUNNER" bench --config "$CONFIG" --record "$OUT/$tag.json" > "$OUT/$tag.out" 2>&1
            "$RUNNER" peer-samples --format record --model "$MODEL" --runner llama-runner --round "$k" \
                "$OUT/$tag.json" >> "$SAMPLES"
            ;;
        "llama-batched-bench -kvu")
            "$BB" "${BB_ARGS[@]}" -kvu > "$OUT/$tag.jsonl" 2> "$OUT/$tag.err"
            "$RUNNER" peer-samples --format batched-bench --model "$MODEL" --runner "$t" --round "$k" \
                "$OUT/$tag.jsonl" >> "$SAMPLES"
            ;;
        "llama-batched-bench")
            "$BB" "${BB_ARGS[@]}" > "$OUT/$tag.jsonl" 2> "$OUT/$tag.err"
            "$RUNNER" peer-samples --format batched-bench --model "$MODEL" --runner "$t" --round "$k" \
                "$OUT/$tag.jsonl" >> "$SAMPLES"
            ;;
    esac
    printf '%s\t%s\tafter\t%s\n' "$t" "$k" "$(load)" >> "$LOADS"
}

TOOLS=(llama-runner "llama-batched-bench -kvu")
[ "$BB_DEFAULT_KV" = 1 ] && TOOLS+=("llama-batched-bench")

LOAD_START="$(load)"
log "== $("$RUNNER" info 2>/dev/null | head -n 1)"
log "== cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; threads $THREADS, $REPS reps x $ROUNDS rounds; load $LOAD_START"
log "== llama-batched-bench ${BB_ARGS[*]} [-kvu]"
# Each round starts with the next tool (A B C, B C A, ...), so that no tool always runs first.
for k in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $((${#TOOLS[@]} - 1))); do
        run_one "${TOOLS[$(((i + k - 1) % ${#TOOLS[@]}))]}" "$k"
    done
done
LOAD_END="$(load)"

{
    table "$SAMPLES"
    printf 'load average (1, 5, 15 min) at the start %s, at the end %s; %s cores, %s threads\n' \
        "$LOAD_START" "$LOAD_END" "$(nproc)" "$THREADS"
} | tee "$OUT/table.md"
log "raw outputs: $OUT"

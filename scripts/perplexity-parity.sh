#!/usr/bin/env bash
# Parity of `llama-runner perplexity` with llama.cpp's own llama-perplexity: same model, text,
# -c, -b, threads; perplexity, then the base file of log-probabilities written by each and read
# by the other (--kl-divergence-base / --kl-divergence), so that both directions of the file
# format are exercised. Prints the two outputs side by side and the PPL lines of each.
#
#   LLAMA_PERPLEXITY_SRC=/path/to/llama.cpp scripts/perplexity-parity.sh [MODEL [TEXT]]
#
# MODEL defaults to the real model (.cache/models/gemma-3-270m-q4_k_m.gguf, see
# scripts/fetch-real-model.sh), TEXT to Debian's /usr/share/common-licenses/GPL-3.
#
# Environment:
#   LLAMA_PERPLEXITY_SRC  a llama.cpp source tree at the workspace's pin (its tools/perplexity/
#                         is not among the sources the workspace vendors), e.g. extracted with
#                         `git -C LLAMA_CPP_GIT archive 5f55650a | tar -x -C DIR`. Its
#                         perplexity.cpp is copied to .cache/llama-perplexity/ and built against
#                         this workspace's installed llama.cpp libraries (the common library
#                         included). Unset: reuse .cache/llama-perplexity/llama-perplexity.
#   N_CTX=128 N_BATCH=128 CHUNKS=4 THREADS=2
#   KLD_FLAGS="-ctk q8_0"  flags of the second configuration the KL divergence measures
#   PROFILE=release        the cargo profile of llama-runner (debug reuses a `cargo test` build)
#   BUILD=1                0: skip the cargo build
#   OUT=.cache/perplexity-parity/<timestamp>   where the outputs and base files go
set -euo pipefail

cd "$(dirname "$0")/.."

N_CTX="${N_CTX:-128}"
N_BATCH="${N_BATCH:-128}"
CHUNKS="${CHUNKS:-4}"
THREADS="${THREADS:-2}"
KLD_FLAGS="${KLD_FLAGS:--ctk q8_0}"
PROFILE="${PROFILE:-release}"
BUILD="${BUILD:-1}"
MODEL="${1:-.cache/models/gemma-3-270m-q4_k_m.gguf}"
TEXT="${2:-/usr/share/common-licenses/GPL-3}"
OUT="${OUT:-.cache/perplexity-parity/$(date -u +%Y%m%dT%H%M%SZ)}"
TARGET="${CARGO_TARGET_DIR:-target}"

log() { printf '%s\n' "$*" >&2; }

[ -f "$MODEL" ] || { log "error: no model $MODEL (scripts/fetch-real-model.sh)"; exit 1; }
[ -f "$TEXT" ] || { log "error: no text $TEXT"; exit 1; }
mkdir -p "$OUT"

# --- builds ------------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "== building llama-runner ($PROFILE)"
    if [ "$PROFILE" = release ]; then
        cargo build --release -p llama-workbench >&2
    else
        cargo build -p llama-workbench >&2
    fi
fi
RUNNER="$TARGET/$PROFILE/llama-runner"
[ -x "$RUNNER" ] || { log "error: no $RUNNER (build it, or set PROFILE/CARGO_TARGET_DIR)"; exit 1; }
PREFIX="$(ls -dt "$TARGET/$PROFILE"/build/llama-sys-*/out/llama.cpp-* 2>/dev/null | head -n 1 || true)"
if [ -z "$PREFIX" ] || [ ! -f "$PREFIX/lib/libllama.a" ]; then
    log "error: no installed llama.cpp under $TARGET/$PROFILE/build/llama-sys-*/out/llama.cpp-*"
    exit 1
fi
if [ ! -f "$PREFIX/lib/libllama-common.a" ]; then
    log "error: llama.cpp's common library was not built (LLAMA_SYS_BUILD_COMMON=ON, see .cargo/config.toml)"
    exit 1
fi
log "== llama.cpp libraries: $PREFIX"

LP_DIR=.cache/llama-perplexity
LLAMA_PERPLEXITY="$LP_DIR/llama-perplexity"
if [ -n "${LLAMA_PERPLEXITY_SRC:-}" ]; then
    SRC_FILE="$LLAMA_PERPLEXITY_SRC/tools/perplexity/perplexity.cpp"
    [ -f "$SRC_FILE" ] || { log "error: no $SRC_FILE"; exit 1; }
    log "== building llama-perplexity from $SRC_FILE"
    mkdir -p "$LP_DIR"
    cp "$SRC_FILE" "$LP_DIR/perplexity.cpp"
    SRCS=("$LP_DIR/perplexity.cpp")
    # At the pin the tool defines llama_perplexity() and leaves main() to a separate file.
    if ! grep -q 'int main(' "$LP_DIR/perplexity.cpp"; then
        printf 'int llama_perplexity(int argc, char ** argv);\nint main(int argc, char ** argv) { return llama_perplexity(argc, argv); }\n' \
            > "$LP_DIR/main.cpp"
        SRCS+=("$LP_DIR/main.cpp")
    fi
    # The common headers are not installed: take them from the tree that was built (the
    # workspace's vendor/llama.cpp, or LLAMA_CPP_DIR).
    COMMON_SRC="${LLAMA_CPP_DIR:-vendor/llama.cpp}"
    g++ -O3 -DNDEBUG -std=c++17 -I"$PREFIX/include" -I"$COMMON_SRC/common" -I"$COMMON_SRC/vendor" "${SRCS[@]}" \
        -L"$PREFIX/lib" -lllama-common -lllama-common-base -lcpp-httplib -lllama -lggml -lggml-cpu -lggml-base \
        -fopenmp -lpthread -ldl -o "$LLAMA_PERPLEXITY"
fi
[ -x "$LLAMA_PERPLEXITY" ] || { log "error: no llama-perplexity (set LLAMA_PERPLEXITY_SRC=/path/to/llama.cpp)"; exit 1; }

# --- runs --------------------------------------------------------------------------------------
FLAGS="-m $MODEL -c $N_CTX -b $N_BATCH -t $THREADS"
lp() { "$LLAMA_PERPLEXITY" $FLAGS --chunks "$CHUNKS" "$@"; }
# llama-perplexity logs to stderr and stdout; keep its result lines (the per-chunk values, the
# final estimate, the KL table and statistics), and drop the load log.
results() { sed -E 's/^[0-9]+\.[0-9.]+ [A-Z] //' "$1" | grep -E '^\[1\]|Final estimate|^chunk |^ +[0-9]+ +[0-9]|^=+|^(Mean|Maximum|Minimum|Median|Cor|RMS|Same| ?[0-9.]+%)' || true; }

log "== perplexity"
lp -f "$TEXT" > "$OUT/lp-ppl.txt" 2>&1
"$RUNNER" perplexity --flags "$FLAGS" -f "$TEXT" --chunks "$CHUNKS" > "$OUT/lr-ppl.txt" 2>&1

log "== base files (each tool writes one)"
lp -f "$TEXT" --kl-divergence-base "$OUT/lp.kld" > "$OUT/lp-base.txt" 2>&1
"$RUNNER" perplexity --flags "$FLAGS" -f "$TEXT" --chunks "$CHUNKS" --kl-divergence-base "$OUT/lr.kld" \
    > "$OUT/lr-base.txt" 2>&1
if cmp -s "$OUT/lp.kld" "$OUT/lr.kld"; then BASES="identical"; else BASES="DIFFERENT"; fi

log "== KL divergence of \"$KLD_FLAGS\", each reading the other's base"
"$LLAMA_PERPLEXITY" $FLAGS $KLD_FLAGS --kl-divergence-base "$OUT/lr.kld" --kl-divergence > "$OUT/lp-kld.txt" 2>&1
"$RUNNER" perplexity --flags "$FLAGS $KLD_FLAGS" --kl-divergence-base "$OUT/lp.kld" --kl-divergence \
    > "$OUT/lr-kld.txt" 2>&1

side() { # title lp-file lr-file
    printf '\n### %s\n\n' "$1"
    paste -d '|' <(results "$2" | cut -c1-140) <(results "$3" | cut -c1-140) \
        | awk -F'|' '{ printf "%-140s | %s\n", $1, $2 }'
}
{
    printf '# perplexity parity: %s, %s, -c %s -b %s -t %s, %s chunks\n' \
        "$(basename "$MODEL")" "$(basename "$TEXT")" "$N_CTX" "$N_BATCH" "$THREADS" "$CHUNKS"
    printf 'left: llama-perplexity, right: llama-runner perplexity\n'
    side "perplexity" "$OUT/lp-ppl.txt" "$OUT/lr-ppl.txt"
    side "perplexity, writing the base file" "$OUT/lp-base.txt" "$OUT/lr-base.txt"
    printf '\nbase files: %s (%s bytes)\n' "$BASES" "$(stat -c %s "$OUT/lr.kld")"
    side "KL divergence of $KLD_FLAGS (left reads llama-runner's base, right llama-perplexity's)" \
        "$OUT/lp-kld.txt" "$OUT/lr-kld.txt"
} | tee "$OUT/side-by-side.md"
log "== outputs in $OUT"

#!/usr/bin/env bash
# The quality cost of KV cache types and the sanity of placement options, on one model: a base
# run (f16 K/V, flash attention off) writes llama-perplexity's base file, then every variant is
# measured against it (mean KLD, 99th percentile, same top token, PPL ratio) with
# `llama-runner perplexity`. Placement options that do not change the maths (threads, mmap,
# repacking) should show a KLD of ~0: a check of the method.
#
#   scripts/kv-quality.sh [MODEL] [TEXT]
#   N_CTX=512 CHUNKS=4 THREADS=2 OUT=.cache/kv-quality
#
# Prints a markdown table; the raw outputs stay in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:-.cache/models/gemma-3-270m-q4_k_m.gguf}"
TEXT="${2:-/usr/share/common-licenses/GPL-3}"
N_CTX="${N_CTX:-512}"
CHUNKS="${CHUNKS:-4}"
THREADS="${THREADS:-2}"
OUT="${OUT:-.cache/kv-quality}"
mkdir -p "$OUT"

cargo build -q --release --bin llama-runner
RUNNER=target/release/llama-runner
BASE_OFF="$OUT/base-f16.kld"
BASE_ON="$OUT/base-f16-fa.kld"
COMMON="-m $MODEL -c $N_CTX -b $N_CTX -t $THREADS"

run() { # $1: label, $2: extra flags, $3: extra args (the base run's include --chunks)
    local out
    out="$OUT/$(echo "$1" | tr -c 'A-Za-z0-9_.\n-' '_').txt"
    # shellcheck disable=SC2086
    if ! "$RUNNER" perplexity --flags "$COMMON $2" -f "$TEXT" $3 > "$out" 2> "$out.log"; then
        echo "$1 failed:" >&2
        cat "$out.log" >&2
        return 1
    fi
    echo "$out"
}

echo "bases: f16 K/V with -fa off and with -fa on" >&2
[ -f "$BASE_OFF" ] || run base "-fa off" "--chunks $CHUNKS --kl-divergence-base $BASE_OFF" > /dev/null
[ -f "$BASE_ON" ] || run base-fa "-fa on" "--chunks $CHUNKS --kl-divergence-base $BASE_ON" > /dev/null
echo "| configuration | base | flags | mean KLD | KLD 99% | same top | ln(PPL(Q)/PPL(base)) |"
echo "|---|---|---|---:|---:|---:|---:|"
# Requantized variants of the model (REQUANT="Q8_0 Q4_0 ..."; empty: none) against the same
# base: what each quantization loses against the shipped file.
for t in ${REQUANT:-}; do
    variant="$OUT/requant-$t.gguf"
    [ -f "$variant" ] || "$RUNNER" quantize "$MODEL" "$variant" "$t" --allow-requantize > "$OUT/requant-$t.log" 2>&1
    echo "requantized $t" >&2
    f=$(run "requant-$t" "-fa off -m $variant" "--kl-divergence-base $BASE_OFF --kl-divergence") || exit 1
    kld=$(sed -n 's/^Mean    KLD: *\([^ ]*\) *± *\([^ ]*\)/\1 ± \2/p' "$f")
    p99=$(sed -n 's/^99.0%   KLD: *\([^ ]*\)/\1/p' "$f")
    top=$(sed -n 's/^Same top p: *\(.*\)/\1/p' "$f")
    ratio=$(sed -n 's/^Mean ln(PPL(Q)\/PPL(base)) *: *\(.*\)/\1/p' "$f")
    size=$(stat -c %s "$variant")
    echo "| the model requantized to $t ($((size >> 20)) MiB) | f16, -fa off | \`quantize --allow-requantize\` | $kld | $p99 | $top | $ratio |"
done
[ "${SKIP_KV:-0}" = 1 ] && exit 0
while IFS='|' read -r base label flags; do
    [ -n "$label" ] || continue
    echo "$label (against f16 -fa $base)" >&2
    if [ "$base" = on ]; then b=$BASE_ON; else b=$BASE_OFF; fi
    f=$(run "$label-vs-$base" "$flags" "--kl-divergence-base $b --kl-divergence") || exit 1
    kld=$(sed -n 's/^Mean    KLD: *\([^ ]*\) *± *\([^ ]*\)/\1 ± \2/p' "$f")
    p99=$(sed -n 's/^99.0%   KLD: *\([^ ]*\)/\1/p' "$f")
    top=$(sed -n 's/^Same top p: *\(.*\)/\1/p' "$f")
    ratio=$(sed -n 's/^Mean ln(PPL(Q)\/PPL(base)) *: *\(.*\)/\1/p' "$f")
    echo "| $label | f16, -fa $base | \`$flags\` | $kld | $p99 | $top | $ratio |"
done <<'VARIANTS'
off|f16 K/V, -fa on|-fa on
off|q8_0 K, f16 V|-fa off -ctk q8_0
off|q8_0 K/V|-fa on -ctk q8_0 -ctv q8_0
on|q8_0 K/V|-fa on -ctk q8_0 -ctv q8_0
off|q4_0 K/V|-fa on -ctk q4_0 -ctv q4_0
on|q4_0 K/V|-fa on -ctk q4_0 -ctv q4_0
on|q4_0 K, q8_0 V|-fa on -ctk q4_0 -ctv q8_0
off|1 thread (sanity)|-fa off -t 1
off|no mmap (sanity)|-fa off --no-mmap
off|no repack|-fa off -nr
VARIANTS

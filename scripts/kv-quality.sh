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
BASE="$OUT/base-f16.kld"
COMMON="-m $MODEL -c $N_CTX -b $N_CTX -t $THREADS"

run() { # $1: label, $2: extra flags, $3: extra args
    local out="$OUT/$(echo "$1" | tr ' /=' '___').txt"
    # shellcheck disable=SC2086
    "$RUNNER" perplexity --flags "$COMMON $2" -f "$TEXT" --chunks "$CHUNKS" $3 > "$out" 2> "$out.log"
    echo "$out"
}

echo "base: f16 K/V, -fa off" >&2
run base "-fa off" "--kl-divergence-base $BASE" > /dev/null
echo "| configuration | flags | mean KLD | KLD 99% | same top | ln(PPL(Q)/PPL(base)) |"
echo "|---|---|---:|---:|---:|---:|"
while IFS='|' read -r label flags; do
    [ -n "$label" ] || continue
    echo "$label" >&2
    f=$(run "$label" "$flags" "--kl-divergence-base $BASE --kl-divergence")
    kld=$(sed -n 's/^Mean    KLD: *\([^ ]*\) *± *\([^ ]*\)/\1 ± \2/p' "$f")
    p99=$(sed -n 's/^99.0%   KLD: *\([^ ]*\)/\1/p' "$f")
    top=$(sed -n 's/^Same top p: *\(.*\)/\1/p' "$f")
    ratio=$(sed -n 's/^Mean ln(PPL(Q)\/PPL(base)) *: *\(.*\)/\1/p' "$f")
    echo "| $label | \`$flags\` | $kld | $p99 | $top | $ratio |"
done <<'VARIANTS'
f16 K/V, -fa on|-fa on
q8_0 K, f16 V|-fa off -ctk q8_0
q8_0 K/V|-fa on -ctk q8_0 -ctv q8_0
q4_0 K/V|-fa on -ctk q4_0 -ctv q4_0
q4_0 K, q8_0 V|-fa on -ctk q4_0 -ctv q8_0
1 thread (sanity)|-fa off -t 1
no mmap (sanity)|-fa off --no-mmap
no repack (sanity)|-fa off -nr
VARIANTS

#!/usr/bin/env bash
# What the sampling path costs in generation: tg128 on one thread with the greedy sampler and
# with llama.cpp's usual chain (top-k 40, top-p 0.95, min-p 0.05, temp 0.8), through the
# runner's `generate` and through llama.cpp's own common sampler loop (the reference program
# tests/reference/sampling.cpp, which `cargo test -p llama-runner --test sampling` compiles),
# interleaved round by round so that machine drift hits every variant alike.
#
#   scripts/sampling-cost.sh [MODEL]     (default: the real test model)
#   ROUNDS=5 N=128 THREADS=1
#
# Prints each variant's mean generation tokens/s (sampling included) and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:-.cache/models/gemma-3-270m-q4_k_m.gguf}"
ROUNDS="${ROUNDS:-5}"
N="${N:-128}"
THREADS="${THREADS:-1}"
PROMPT="The history of the city begins"
CHAIN="--top-k 40 --top-p 0.95 --min-p 0.05 --temp 0.8 -s 1"

cargo build -q --release --bin llama-runner
RUNNER=target/release/llama-runner
REF=$(ls -t target/tmp/llama-runner-tests/sampling-* 2>/dev/null | head -n 1 || true)
if [ -z "$REF" ]; then
    echo "no reference program: run \`cargo test -p llama-runner --test sampling\` first (it needs llama.cpp's common library)" >&2
    exit 2
fi
if [ "$THREADS" != 1 ]; then
    echo "note: the reference program runs on one thread; THREADS=$THREADS compares unlike things" >&2
fi

runner() { # $1: sampling flags
    "$RUNNER" generate --flags "-m $MODEL -c 512 -t $THREADS --ignore-eos $1" -p "$PROMPT" -n "$N" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["gen_tps"])'
}
reference() { # $1: sampling flags
    # shellcheck disable=SC2086
    "$REF" run "$MODEL" "$N" 512 0 "$PROMPT" --ignore-eos $1 2>&1 >/dev/null |
        sed -n 's/^gen_us=\([0-9]*\) n_gen=\([0-9]*\)$/\1 \2/p' |
        awk '{ print $2 / ($1 / 1e6) }'
}

declare -A SUM
VARIANTS=("runner greedy" "runner chain" "llama.cpp greedy" "llama.cpp chain")
for r in $(seq 1 "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
        case $v in
            "runner greedy") t=$(runner "--temp 0") ;;
            "runner chain") t=$(runner "$CHAIN") ;;
            "llama.cpp greedy") t=$(reference "--temp 0") ;;
            "llama.cpp chain") t=$(reference "$CHAIN") ;;
        esac
        printf 'round %d  %-17s %8.2f t/s\n' "$r" "$v" "$t"
        SUM[$v]=$(python3 -c "print(${SUM[$v]:-0} + $t)")
    done
done
echo
for v in "${VARIANTS[@]}"; do
    printf '%-17s mean %8.2f t/s\n' "$v" "$(python3 -c "print(${SUM[$v]} / $ROUNDS)")"
done
python3 - "${SUM[runner greedy]}" "${SUM[runner chain]}" "${SUM[llama.cpp greedy]}" "${SUM[llama.cpp chain]}" <<'PY'
import sys
rg, rc, lg, lc = map(float, sys.argv[1:])
print(f"runner chain / runner greedy:       {rc / rg:.3f}")
print(f"runner chain / llama.cpp chain:     {rc / lc:.3f}")
print(f"runner greedy / llama.cpp greedy:   {rg / lg:.3f}")
print(f"llama.cpp chain / llama.cpp greedy: {lc / lg:.3f}")
PY

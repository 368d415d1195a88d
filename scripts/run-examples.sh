#!/usr/bin/env bash
# Runs every example of the llama-runner crate on a generated model (tiny-gguf's tiny-llama
# preset), as CI does: each must exit 0 and print what it is for.
#
#   scripts/run-examples.sh            # debug builds
#   PROFILE=--release scripts/run-examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${LLAMA_MODELS_DIR:-.cache/models}/generated"
mkdir -p "$DIR"
MODEL=$(cargo run -q ${PROFILE:-} -p tiny-gguf -- --preset tiny-llama --out-dir "$DIR" | tail -n 1)
test -f "$MODEL" || { echo "tiny-gguf did not write a model (got: $MODEL)"; exit 1; }

example() {
    local name=$1; shift
    echo "--- example $name"
    local out
    out=$(cargo run -q ${PROFILE:-} -p llama-runner ${FEATURES:-} --example "$name" -- "$@" 2>&1) || {
        echo "$out"; echo "example $name failed"; exit 1;
    }
    printf '%s\n' "$out" | tail -n 6
}

example generate "$MODEL" "Once upon a time" 16
example stream "$MODEL" "Once upon a time" 32 "e"
example cancel "$MODEL" "$(printf 'a long prompt %.0s' $(seq 1 100))" 5
example speculative "$MODEL" "abc abc abc abc abc abc" 24 0
for extra in json_schema chat parallel; do
    [ -f "llama-runner/examples/$extra.rs" ] || continue
    case $extra in
        json_schema) FEATURES="--features json-schema" example json_schema "$MODEL" ;;
        chat) printf 'hello\nhow are you?\n' | example chat "$MODEL" ;;
        parallel) example parallel "$MODEL" ;;
    esac
done
echo "--- every example ran"

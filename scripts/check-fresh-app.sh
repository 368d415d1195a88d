#!/usr/bin/env bash
# A new application that depends only on llama-runner (path dependency, default features), as
# its users start: builds the README's library example, checks that none of the workbench's
# tooling crates is in its dependency tree, and runs it on a model.
#
#   scripts/check-fresh-app.sh [MODEL.gguf]    (default: the real test model in .cache/models)
#
# The app lives in a temporary directory outside this workspace, so it reads none of the
# workspace's Cargo configuration. It shares this workspace's target directory (same llama-sys
# package and features, so llama.cpp is not built twice); LLAMA_SYS_BUILD_COMMON is passed as
# the workspace sets it for the same reason (a library user without it builds less).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-${LLAMA_MODELS_DIR:-$root/.cache/models}/gemma-3-270m-q4_k_m.gguf}"
[ -f "$model" ] || { echo "check-fresh-app: no model at $model (scripts/fetch-real-model.sh)" >&2; exit 2; }
app="$(mktemp -d)"
trap 'rm -rf "$app"' EXIT
mkdir -p "$app/src"
cat >"$app/Cargo.toml" <<TOML
[package]
name = "fresh-app"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
llama-runner = { path = "$root/llama-runner" }

[workspace]
TOML
# The README's library example, verbatim between its fences, inside main.
{
    echo 'fn main() -> Result<(), llama_runner::Error> {'
    echo '    let _ = std::env::set_current_dir(std::env::args().nth(1).expect("a directory with model.gguf"));'
    awk '/^```rust,no_run$/ && !done {on=1; next} on && /^```$/ {on=0; done=1} on' "$root/README.md" |
        grep -v '^# Ok::<' | sed 's/^/    /'
    echo '    Ok(())'
    echo '}'
} >"$app/src/main.rs"
# The workspace's lock file, so that llama-sys and its build dependencies resolve to the same
# versions and the shared target directory's llama.cpp build is reused.
cp "$root/Cargo.lock" "$app/Cargo.lock"
ln -s "$(cd "$(dirname "$model")" && pwd)/$(basename "$model")" "$app/model.gguf"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" LLAMA_SYS_BUILD_COMMON="${LLAMA_SYS_BUILD_COMMON:-ON}"
cd "$app"
cargo build --quiet
tooling='^(clap|anyhow|env_logger|indicatif|tiny-gguf|statrs|nalgebra|sysinfo|sha2|toml|serde_json|criterion|fastrand|serde) '
if cargo tree -e normal --prefix none | grep -E "$tooling"; then
    echo "check-fresh-app: tooling crates in a library user's dependency tree (above)" >&2
    exit 1
fi
echo "check-fresh-app: dependency tree of a library user: $(cargo tree -e normal --prefix none | sort -u | wc -l) crates, no tooling crate"
out="$("$CARGO_TARGET_DIR/debug/fresh-app" "$app")"
echo "$out"
[ -n "$out" ] || { echo "check-fresh-app: the example printed nothing" >&2; exit 1; }

#!/usr/bin/env bash
# Provisions vendor/llama.cpp with the pinned llama.cpp sources (vendor/llama.cpp.pin).
#
#   scripts/provision-llama-cpp.sh            # submodule if GitHub is reachable, else crates.io
#   scripts/provision-llama-cpp.sh --offline  # skip the submodule attempt, use crates.io directly
#
# 1. Already there (a checkout of the pinned commit, or files recorded as it): nothing to do.
# 2. `git submodule update --init` when the upstream repository can be reached.
# 3. Otherwise the crates.io package named in the pin file, which bundles exactly that commit's
#    files, downloaded by cargo itself; the commit is recorded beside the files in
#    vendor/llama.cpp/.llama-cpp-source. The superproject stays clean (git status shows nothing):
#    git ignores the contents of a submodule path that is not itself a repository.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../vendor/llama.cpp.pin
. "$root/vendor/llama.cpp.pin"
dest="$root/vendor/llama.cpp"
marker="$dest/.llama-cpp-source"
offline=0
[ "${1:-}" = "--offline" ] && offline=1

say() { echo "provision-llama-cpp: $*" >&2; }

if [ -e "$dest/.git" ] && [ "$(git -C "$dest" rev-parse HEAD 2>/dev/null)" = "$LLAMA_CPP_COMMIT" ]; then
    say "vendor/llama.cpp is a checkout of $LLAMA_CPP_COMMIT; nothing to do"; exit 0
fi
if [ -f "$marker" ] && grep -qx "commit=$LLAMA_CPP_COMMIT" "$marker" && [ -f "$dest/include/llama.h" ]; then
    say "vendor/llama.cpp holds $LLAMA_CPP_COMMIT ($(grep ^source= "$marker" | cut -d= -f2-)); nothing to do"; exit 0
fi

if [ "$offline" = 0 ]; then
    say "trying the submodule ($LLAMA_CPP_REPO)"
    if GIT_TERMINAL_PROMPT=0 timeout 120 git -C "$root" submodule update --init --depth 1 vendor/llama.cpp >&2 2>&1 \
        || GIT_TERMINAL_PROMPT=0 timeout 300 git -C "$root" submodule update --init vendor/llama.cpp >&2 2>&1; then
        say "submodule checked out at $(git -C "$dest" rev-parse HEAD)"; exit 0
    fi
    say "the submodule cannot be fetched; falling back to crates.io"
fi

# Let cargo download the package into its registry cache (no build, no network if cached).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat >"$work/Cargo.toml" <<TOML
[package]
name = "llama-cpp-source-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
$LLAMA_CPP_CRATE = "=$LLAMA_CPP_CRATE_VERSION"
TOML
: >"$work/src/lib.rs"
say "downloading $LLAMA_CPP_CRATE $LLAMA_CPP_CRATE_VERSION with cargo"
(cd "$work" && cargo fetch --quiet)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
pkg=$(ls -d "$cargo_home"/registry/src/*/"$LLAMA_CPP_CRATE-$LLAMA_CPP_CRATE_VERSION" 2>/dev/null | head -n 1)
if [ -z "$pkg" ] || [ ! -f "$pkg/llama.cpp/include/llama.h" ]; then
    say "cargo fetched $LLAMA_CPP_CRATE $LLAMA_CPP_CRATE_VERSION but its llama.cpp/ sources were not found"; exit 1
fi

# Replace the folder's contents (never the folder itself: it may be a submodule path git knows).
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
cp -a "$pkg/llama.cpp/." "$dest/"
cat >"$marker" <<MARK
# Written by scripts/provision-llama-cpp.sh: these files are upstream llama.cpp at this commit.
commit=$LLAMA_CPP_COMMIT
build_number=$LLAMA_CPP_BUILD_NUMBER
source=crates.io $LLAMA_CPP_CRATE $LLAMA_CPP_CRATE_VERSION
MARK
say "vendor/llama.cpp filled from $LLAMA_CPP_CRATE $LLAMA_CPP_CRATE_VERSION ($LLAMA_CPP_COMMIT)"

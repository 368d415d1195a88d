#!/usr/bin/env bash
# Builds a local git repository of upstream llama.cpp snapshots, one commit per snapshot in date
# order, from the crates.io packages that bundle them (scripts/llama-cpp-snapshots.tsv), so that
# `git bisect` and performance history work without GitHub.
#
#   scripts/build-snapshot-history.sh [DEST]     # default: .cache/llama.cpp-history
#
# Each commit's message names the upstream commit, and the tree carries the provisioning marker
# (.llama-cpp-source), so llama-sys reports the upstream commit, not the local one. Rerunning
# adds only the snapshots not yet in DEST. Needs cargo (downloads) and git.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/llama.cpp-history}
table="$root/scripts/llama-cpp-snapshots.tsv"
. "$root/vendor/llama.cpp.pin"
cargo_home=${CARGO_HOME:-$HOME/.cargo}

mkdir -p "$dest"
if [ ! -d "$dest/.git" ]; then
    git -C "$dest" init -q -b main
    git -C "$dest" config user.name "llama.cpp snapshots"
    git -C "$dest" config user.email "snapshots@localhost"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The rows of the table, as the command parses them (the parser `llama-runner history` uses).
rows=$(cd "$root" && env -u LLAMA_CPP_DIR CARGO_TARGET_DIR="$root/target" \
    cargo run -q -p llama-workbench --bin llama-runner -- snapshots --file "$table" list --long)
printf '%s\n' "$rows" | while IFS=$'\t' read -r version commit number date; do
    [ -n "$version" ] || continue
    if git -C "$dest" log --format=%B 2>/dev/null | grep -q "^upstream: $commit"; then
        echo "have $commit ($version)"; continue
    fi
    mkdir -p "$work/$version/src"; : >"$work/$version/src/lib.rs"
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
        "$LLAMA_CPP_CRATE" "$version" >"$work/$version/Cargo.toml"
    (cd "$work/$version" && cargo fetch --quiet)
    pkg=$(ls -d "$cargo_home"/registry/src/*/"$LLAMA_CPP_CRATE-$version" | head -n 1)
    # Replace the tree with this snapshot (keeping .git).
    find "$dest" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
    cp -a "$pkg/llama.cpp/." "$dest/"
    printf 'commit=%s\nbuild_number=%s\nsource=crates.io %s %s\n' "$commit" "$number" "$LLAMA_CPP_CRATE" "$version" \
        >"$dest/.llama-cpp-source"
    git -C "$dest" add -A
    GIT_AUTHOR_DATE="$date 12:00:00 +0000" GIT_COMMITTER_DATE="$date 12:00:00 +0000" \
        git -C "$dest" commit -q -m "llama.cpp ${commit:0:8} (from $LLAMA_CPP_CRATE $version)" \
        -m "upstream: $commit" -m "build_number: $number"
    echo "added $commit ($version, $date)"
done
git -C "$dest" log --format='%h %ad %s' --date=short

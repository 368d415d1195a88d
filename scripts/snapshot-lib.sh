# Shared by scripts/check-snapshots.sh and scripts/perf-history.sh (source it, do not run it):
# resolving snapshot commits, making worktrees of the local snapshot history, and building the
# runner against one snapshot.
#
# Environment:
#   SNAP_HISTORY      the snapshot repository (default .cache/llama.cpp-history, made by
#                     scripts/build-snapshot-history.sh)
#   SNAP_WORKTREES    where worktrees go (default .cache; one wt-<short sha> per snapshot)
#   CARGO_TARGET_DIR  default target/compat: one target dir for every snapshot, so llama-sys keeps
#                     one CMake build tree per worktree in it and a rebuild is incremental. Keep
#                     it apart from the main target/, or switching trees there rebuilds Rust.

snap_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
snap_table="$snap_root/scripts/llama-cpp-snapshots.tsv"
SNAP_HISTORY=${SNAP_HISTORY:-$snap_root/.cache/llama.cpp-history}
SNAP_WORKTREES=${SNAP_WORKTREES:-$snap_root/.cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$snap_root/target/compat}

# The table is read by `llama-runner snapshots` (the parser `llama-runner history` uses too),
# run from the workspace's own build: never the snapshots' target dir, nor another llama.cpp.
snap_tool() {
    (cd "$snap_root" && env -u LLAMA_CPP_DIR CARGO_TARGET_DIR="$snap_root/target" \
        cargo run -q -p llama-workbench --bin llama-runner -- snapshots --file "$snap_table" "$@")
}

# Every snapshot commit in the table, oldest first.
snap_all() {
    snap_tool list
}

# The full commit for a (unique) prefix, from the table; fails otherwise.
snap_resolve() {
    snap_tool show --field commit "$1"
}

# Date of a snapshot commit (YYYY-MM-DD).
snap_date() {
    snap_tool show --field date "$1"
}

# Path of the worktree of a snapshot (full commit), made on first use.
snap_worktree() {
    local commit=$1 short=${1:0:8} dir local_commit
    dir="$SNAP_WORKTREES/wt-$short"
    if [ -f "$dir/include/llama.h" ]; then
        echo "$dir"; return 0
    fi
    if [ ! -d "$SNAP_HISTORY/.git" ]; then
        echo "no snapshot history at $SNAP_HISTORY: run scripts/build-snapshot-history.sh" >&2; return 1
    fi
    local_commit=$(git -C "$SNAP_HISTORY" log --all --format=%H --grep="^upstream: $commit" | head -n 1)
    if [ -z "$local_commit" ]; then
        echo "$commit is not in $SNAP_HISTORY: rerun scripts/build-snapshot-history.sh" >&2; return 1
    fi
    git -C "$SNAP_HISTORY" worktree add -q --detach "$dir" "$local_commit" >&2
    echo "$dir"
}

# Builds the runner (release, generated bindings) against a snapshot and copies the binary to
# $2. The build log goes to $3. Prints the build's wall time in seconds; returns cargo's status.
snap_build() {
    local commit=$1 bin=$2 log=$3 dir start status
    dir=$(snap_worktree "$commit") || return 1
    mkdir -p "$(dirname "$bin")" "$(dirname "$log")"
    start=$(date +%s)
    (cd "$snap_root" && LLAMA_SYS_BUILD_COMMON=OFF LLAMA_CPP_DIR="$dir" cargo build --release -p llama-workbench \
        --features llama-runner/bindgen) >"$log" 2>&1
    status=$?
    echo $(($(date +%s) - start))
    if [ $status -eq 0 ]; then
        cp "$CARGO_TARGET_DIR/release/llama-runner" "$bin"
    fi
    return $status
}

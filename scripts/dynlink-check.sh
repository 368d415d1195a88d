#!/usr/bin/env bash
# Feature `dynamic-link`, proven: builds the shared llama.cpp libraries and the runner, runs
# llama-sys's tests, then builds the same sources as another commit (LLAMA_SYS_BUILD_COMMIT, so
# the libraries report a different ggml_commit()) and checks that the runner refuses them with
# its message, while it runs against a copy of its own libraries placed elsewhere.
#
#   scripts/dynlink-check.sh            # target dirs target/dynlink and target/dynlink-foreign
#
# Another snapshot works the same way: LLAMA_CPP_DIR=/path/to/other/llama.cpp for the foreign
# build. (A much older snapshot may lack functions the runner imports; the loader then stops the
# process before main with "undefined symbol", which the commit check cannot intercept.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { echo "dynlink-check: $*" >&2; }
# Two build trees of the same sources share ccache entries only with paths made relative.
export CCACHE_BASEDIR="$root"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
own="$root/target/dynlink"
foreign="$root/target/dynlink-foreign"
foreign_commit=${FOREIGN_COMMIT:-deadbeefdeadbeefdeadbeefdeadbeefdeadbeef}

lib_dir_of() { # target dir -> the lib_dir llama-sys's build script reported
    local out
    out=$(ls -t "$1"/debug/build/llama-sys-*/output 2>/dev/null | head -n 1)
    [ -n "$out" ] && sed -n 's/^cargo:lib_dir=//p' "$out"
}

t=$SECONDS
say "llama-sys tests with dynamic-link"
CARGO_TARGET_DIR="$own" nice -n 10 cargo test --quiet -p llama-sys --features dynamic-link
say "  ($((SECONDS - t)) s)"
lib=$(lib_dir_of "$own")
say "libraries: $lib"
ls "$lib" | grep -E '\.so' >&2
runner_test() {
    CARGO_TARGET_DIR="$own" nice -n 10 cargo test --quiet -p llama-workbench --features dynamic-link --test dynamic_link "$@"
}

t=$SECONDS
say "foreign libraries: the same sources recorded as commit $foreign_commit"
LLAMA_SYS_BUILD_COMMIT=$foreign_commit CARGO_TARGET_DIR="$foreign" nice -n 10 cargo build --quiet -p llama-sys --features dynamic-link
flib=$(lib_dir_of "$foreign")
say "  ($((SECONDS - t)) s) in $flib"

say "runner tests (copy of own libraries elsewhere, refusal of the foreign ones)"
LLAMA_FOREIGN_LIB_DIR="$flib" runner_test -- --nocapture

runner="$own/debug/llama-runner"
say "what a user sees: LD_LIBRARY_PATH=<foreign> llama-runner info"
set +e
LD_LIBRARY_PATH="$flib" "$runner" info
rc=$?
set -e
say "exit status $rc (2: refused with the message above)"
[ $rc = 2 ]

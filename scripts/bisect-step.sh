#!/usr/bin/env bash
# One step of `git bisect run` over llama.cpp: builds this workspace against the llama.cpp tree
# in the current directory, measures one workload of a configuration, and judges its speed.
#
#   cd <llama.cpp tree>            # a worktree, .cache/llama.cpp-history, or vendor/llama.cpp
#   git bisect start BAD GOOD
#   git bisect run <workspace>/scripts/bisect-step.sh --config configs/cpu-bench-moe.toml \
#       --workload medium-cpu --baseline results/good.json --margin 0.1
#
# Criterion (one of):
#   --baseline RECORD [--margin 0.1] [--metric tg|pp]   bad if below baseline x (1 - margin)
#   --min-tg TPS | --min-pp TPS                        bad if below an absolute tokens/s floor
#   --measure-only                                     no verdict (e.g. with --keep-record to
#                                                      make the baseline at the good commit)
# Other options:
#   --stat mean|median|best   statistic of the repetitions compared (default mean; best resists
#                             interference from other work on the machine)
#   --repetitions N           override the workload's repetitions
#   --keep-record FILE        copy the step's record there
#   --features LIST           extra cargo features (e.g. llama-runner/cuda)
#   --no-bindgen              use the checked-in bindings (only the pinned headers match them)
#   --target-dir DIR          cargo target dir (default $LLAMA_BISECT_TARGET_DIR, else
#                             <workspace>/target/bisect): never the main build's
#   --log FILE                build and bench output (default <target dir>/bisect-step.log)
#   --tree DIR                the llama.cpp tree (default: the current directory)
# Relative paths (config, baseline, keep-record, log, target dir) are relative to the workspace
# root, so that nothing is ever written into the llama.cpp tree.
#
# The step itself (arguments, the tree and its commit, build, bench, verdict) is
# `llama-runner bisect-step`; this script only finds that command: $LLAMA_RUNNER, else the
# workspace's dev build, the one `cargo build` and `cargo test` make (built here if needed, against
# the workspace's own llama.cpp, not the tree bisected; the step's measured build is its own).
# Bisecting vendor/llama.cpp itself, set LLAMA_RUNNER to a command built before.
#
# Exit status, as `git bisect run` reads it: 0 good, 1 bad, 125 skip (the tree does not build,
# or the bench fails: the model does not load), 128 the step itself is misused (aborts the
# bisection). Prints exactly one line on stdout:
#   <commit>: <workload> tg 41.20 t/s (mean of 3), threshold 37.08 t/s (baseline 41.20 - 10%): good [build 52 s, bench 9 s]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runner=${LLAMA_RUNNER:-}
if [ -z "$runner" ]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    mkdir -p "$target"
    if ! (cd "$root" && env -u LLAMA_CPP_DIR -u LLAMA_SYS_BUILD_COMMIT -u LLAMA_SYS_BUILD_NUMBER \
        cargo build -q -p llama-workbench --bin llama-runner) >"$target/bisect-driver.log" 2>&1; then
        echo "bisect-step: error: cannot build the llama-runner command (see $target/bisect-driver.log; or set LLAMA_RUNNER)"
        exit 128
    fi
    runner=$target/debug/llama-runner
fi
exec "$runner" bisect-step --workspace "$root" "$@"

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
# Exit status, as `git bisect run` reads it: 0 good, 1 bad, 125 skip (the tree does not build,
# or the bench fails: the model does not load), 128 the step itself is misused (aborts the
# bisection). Prints exactly one line on stdout:
#   <commit>: <workload> tg 41.20 t/s (mean of 3), threshold 37.08 t/s (baseline 41.20 - 10%): good [build 52 s, bench 9 s]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start_dir=$PWD

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
}
die() { # the one line, on stdout like every verdict; 128 stops `git bisect run`
    echo "bisect-step: error: $*"
    exit 128
}
need() { [ "$1" -ge 2 ] || die "$2 needs a value"; }
abs() { # a path relative to the workspace root, made absolute
    case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$root/$1" ;; esac
}

config= workload= tree=$start_dir log= keep= reps= stat=mean bindgen=llama-runner/bindgen features=
target=${LLAMA_BISECT_TARGET_DIR:-target/bisect}
criterion=() metric=() measure_only=
while [ $# -gt 0 ]; do
    case $1 in
        --config) need $# "$1"; config=$2; shift ;;
        --workload) need $# "$1"; workload=$2; shift ;;
        --baseline) need $# "$1"; criterion+=(--baseline "$(abs "$2")"); shift ;;
        --margin) need $# "$1"; criterion+=(--margin "$2"); shift ;;
        --min-tg | --min-pp) need $# "$1"; criterion+=("$1" "$2"); shift ;;
        --metric) need $# "$1"; metric=(--metric "$2"); shift ;;
        --measure-only) measure_only=1 ;;
        --stat) need $# "$1"; stat=$2; shift ;;
        --repetitions) need $# "$1"; reps=$2; shift ;;
        --keep-record) need $# "$1"; keep=$(abs "$2"); shift ;;
        --features) need $# "$1"; features="$features,$2"; shift ;;
        --no-bindgen) bindgen= ;;
        --target-dir) need $# "$1"; target=$2; shift ;;
        --log) need $# "$1"; log=$2; shift ;;
        --tree) need $# "$1"; tree=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
    shift
done

[ -n "$config" ] || die "--config is required"
[ -n "$workload" ] || die "--workload is required"
config=$(abs "$config")
[ -f "$config" ] || die "no configuration $config"
if [ -z "$measure_only" ] && [ ${#criterion[@]} -eq 0 ]; then
    die "name a criterion: --baseline RECORD, --min-tg TPS or --min-pp TPS (or --measure-only)"
fi
[ -d "$tree" ] || die "no directory $tree"
tree=$(cd "$tree" && pwd -P)
[ -f "$tree/include/llama.h" ] && [ -f "$tree/CMakeLists.txt" ] || die "$tree is not a llama.cpp tree"
target=$(abs "$target")
log=$(abs "${log:-$target/bisect-step.log}")
mkdir -p "$target" "$(dirname "$log")"

# The step's name: the commit git bisect checked out, plus the upstream commit the tree's
# provisioning marker names (snapshot history); without git, the marker's commit alone.
marker_commit=$(sed -n 's/^commit=//p' "$tree/.llama-cpp-source" 2>/dev/null | head -n 1 || true)
if [ "$(git -C "$tree" rev-parse --show-toplevel 2>/dev/null || true)" = "$tree" ]; then
    is_git=1
    name=$(git -C "$tree" rev-parse --short=12 HEAD)
    label=$name${marker_commit:+ (llama.cpp ${marker_commit:0:12})}
else
    is_git=
    name=${marker_commit:0:12}
    name=${name:-$(basename "$tree")}
    label="llama.cpp $name"
fi

# Build noise goes to the log; each step starts with a header there.
{
    echo
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) step $label in $tree"
    [ -z "$is_git" ] || git -C "$tree" log -1 --format='    %H %s' || true
} >>"$log" 2>&1

# The commit must come from the tree itself (git or its marker), never from the caller.
unset LLAMA_SYS_BUILD_COMMIT LLAMA_SYS_BUILD_NUMBER
# Every step changes llama-sys (the commit is a constant in it), so llama-runner and the command
# recompile each time: incremental compilation makes that about 4 s instead of 30 s (the Rust
# code is not what is measured; the C++ is always built by CMake in Release).
export CARGO_PROFILE_RELEASE_INCREMENTAL=${CARGO_PROFILE_RELEASE_INCREMENTAL:-true}
features=$bindgen$features
t0=$SECONDS
if ! (cd "$root" && LLAMA_CPP_DIR=$tree CARGO_TARGET_DIR=$target \
    cargo build --release -p llama-workbench --bin llama-runner --features "${features#,}") >>"$log" 2>&1; then
    echo "$label: skip (does not build; see $log) [build $((SECONDS - t0)) s]"
    exit 125
fi
t_build=$((SECONDS - t0))
bin=$target/release/llama-runner

records=$target/bisect-records
mkdir -p "$records"
record=$records/$name.json
rm -f "$record"
t1=$SECONDS
log_lines=$(wc -l <"$log")
bench=("$bin" bench --config "$config" --workload "$workload" --record "$record")
[ -z "$reps" ] || bench+=(--repetitions "$reps")
# An inner shell, so that a crash (abort, segfault) is reported in the log, not on the terminal.
if ! bash -c 'cd "$1" && shift && "$@" || exit' bisect-step "$root" "${bench[@]}" >>"$log" 2>&1 ||
    [ ! -f "$record" ]; then
    reason=$(tail -n +"$((log_lines + 1))" "$log" | grep '^error:' | tail -n 1 || true)
    echo "$label: skip (bench failed${reason:+: ${reason#error: }}; see $log) [build $t_build s, bench $((SECONDS - t1)) s]"
    exit 125
fi
t_bench=$((SECONDS - t1))
[ -z "$keep" ] || { mkdir -p "$(dirname "$keep")" && cp "$record" "$keep"; }

status=0
line=$("$bin" judge --record "$record" --workload "$workload" --stat "$stat" --label "$label" \
    ${criterion[@]+"${criterion[@]}"} ${metric[@]+"${metric[@]}"} 2>>"$log") || status=$?
case $status in
    0 | 1) echo "$line [build $t_build s, bench $t_bench s]"; exit "$status" ;;
    *) die "judge failed (exit $status): $(tail -n 1 "$log")" ;;
esac

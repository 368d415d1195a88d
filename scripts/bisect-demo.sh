#!/usr/bin/env bash
# Proof that scripts/bisect-step.sh finds a performance regression: builds a local llama.cpp
# history with a slowdown planted in one commit, bisects it, and checks the answer.
#
#   scripts/bisect-demo.sh [--dir DIR] [--clean]
#
# The history (DIR/llama.cpp, default .cache/bisect-demo/llama.cpp, recreated on every run with
# fixed dates, so its commit ids are the same every time):
#   1    the pinned sources of vendor/llama.cpp, without the provisioning marker, so the
#        commits are identified by git
#   2-9  one harmless comment each, in a different file of src/; commit 5 also computes every
#        ubatch's graph three more times in llama_context::process_ubatch (the planted
#        slowdown: prompt processing and generation about 4x slower; that large, so that the
#        verdicts stay right on a machine shared with other work, where even one-thread
#        timings of the same code differ by up to 1.6x from one step to the next)
# Then: a baseline record at commit 1 (the first, full build), one step at commit 2 (what a step
# that moves one commit touching one file costs), and
#   git bisect start <commit 9> <commit 1>
#   git bisect run scripts/bisect-step.sh --config configs/cpu-bisect.toml --workload bisect \
#       --baseline DIR/baseline.json --margin 0.5 --stat best --repetitions 10
# Exits 0 when the first bad commit is the planted one, 1 otherwise.
#
# Cargo builds go to DIR/target (kept between runs; --clean removes it first, to measure a
# first step from nothing), the build and bench output to DIR/step.log. Takes a few minutes:
# the first build of the demo tree (llama.cpp, then the workspace in release) dominates.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=.cache/bisect-demo
clean=
while [ $# -gt 0 ]; do
    case $1 in
        --dir) [ $# -ge 2 ] || { echo "--dir needs a value" >&2; exit 2; }; demo=$2; shift ;;
        --clean) clean=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
case $demo in /*) ;; *) demo=$root/$demo ;; esac
repo=$demo/llama.cpp
src=$root/vendor/llama.cpp
step=$root/scripts/bisect-step.sh
config=configs/cpu-bisect.toml
workload=bisect
step_args=(--config "$config" --workload "$workload" --repetitions 10 --stat best
    --target-dir "$demo/target" --log "$demo/step.log")

[ -f "$src/include/llama.h" ] || { echo "no llama.cpp sources in $src: run scripts/provision-llama-cpp.sh" >&2; exit 2; }
say() { echo "bisect-demo: $*"; }
started=$SECONDS

mkdir -p "$demo"
[ -z "$clean" ] || rm -rf "$demo/target"
rm -rf "$repo" "$demo/baseline.json" "$demo/step.log"

# --- the history -----------------------------------------------------------------------------
say "building the history in $repo"
mkdir -p "$repo"
(cd "$src" && tar --exclude=./.git --exclude=./.llama-cpp-source -cf - .) | (cd "$repo" && tar -xf -)
git -C "$repo" init -q -b master
n=0 head=
commit() { # commits everything with a fixed date, so the ids are the same on every run
    n=$((n + 1))
    local date="2025-01-01T00:$(printf '%02d' "$n"):00Z"
    git -C "$repo" add -A -f
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$repo" \
        -c user.name="bisect demo" -c user.email="bisect-demo@localhost" -c commit.gpgsign=false \
        commit -q -m "$1"
    head=$(git -C "$repo" rev-parse HEAD)
}
harmless() { # appends a comment to one file and commits
    echo "// bisect demo: harmless change $((n + 1))" >>"$repo/$1"
    commit "$1: comment"
}
commit "pinned llama.cpp sources ($(sed -n 's/^commit=//p' "$src/.llama-cpp-source" 2>/dev/null || echo unknown))"
good=$head
harmless src/llama-io.cpp
first_step_commit=$head
harmless src/llama-memory.cpp
harmless src/llama-adapter.cpp

# The planted slowdown: every ubatch's graph is computed four times (same inputs, same outputs:
# the inputs are set again, as the graph allocator reuses their memory for intermediate results).
ctx=$repo/src/llama-context.cpp
line='    const auto status = graph_compute(res->get_gf(), ubatch.n_tokens > 1);'
[ "$(grep -cxF "$line" "$ctx")" = 1 ] || { echo "cannot plant the slowdown: $ctx has no line '$line'" >&2; exit 2; }
sed -i "s/^    const auto status = graph_compute(res->get_gf(), ubatch.n_tokens > 1);\$/\
    \/\/ double-check: set the inputs again and recompute the graph three times (bisect demo:\n\
    \/\/ the planted slowdown)\n\
    auto status = graph_compute(res->get_gf(), ubatch.n_tokens > 1);\n\
    for (int check = 0; check < 3 \&\& status == GGML_STATUS_SUCCESS; ++check) {\n\
        ggml_backend_sched_synchronize(sched.get());\n\
        res->set_inputs(\&ubatch);\n\
        status = graph_compute(res->get_gf(), ubatch.n_tokens > 1);\n\
    }/" "$ctx"
grep -q 'the planted slowdown' "$ctx" || { echo "planting the slowdown in $ctx failed" >&2; exit 2; }
echo "// bisect demo: harmless change $((n + 1))" >>"$ctx"
commit "llama-context: double-check graph results"
planted=$head
harmless src/llama-hparams.cpp
harmless src/llama-batch.cpp
harmless src/llama-chat.cpp
harmless src/llama-mmap.cpp
bad=$head
git -C "$repo" log --format='  %h %s'
say "good ${good:0:12}, bad ${bad:0:12}, planted ${planted:0:12}"

# --- baseline and one incremental step -----------------------------------------------------
cd "$repo"
git checkout -q "$good"
say "baseline at the good commit (the first step: full build)"
"$step" "${step_args[@]}" --measure-only --keep-record "$demo/baseline.json" || {
    echo "bisect-demo: the baseline step failed (exit $?); see $demo/step.log" >&2
    exit 1
}
git checkout -q "$first_step_commit"
say "one commit later, one file changed (the cost of an incremental step)"
"$step" "${step_args[@]}" --measure-only

# --- the bisection -----------------------------------------------------------------------------
say "git bisect start ${bad:0:12} ${good:0:12}; git bisect run scripts/bisect-step.sh ..."
git bisect start "$bad" "$good" >/dev/null
set +e
git bisect run "$step" "${step_args[@]}" --baseline "$demo/baseline.json" --margin 0.5 2>&1 |
    tee "$demo/bisect-run.log"
status=${PIPESTATUS[0]}
set -e
first_bad=$(git rev-parse -q --verify refs/bisect/bad || true)
git bisect log >"$demo/bisect.log"
git bisect reset >/dev/null 2>&1
say "bisect run exit $status; its output: $demo/bisect-run.log; build and bench output: $demo/step.log"
say "total $((SECONDS - started)) s"
if [ "$status" = 0 ] && [ "$first_bad" = "$planted" ]; then
    say "found the planted commit ${planted:0:12} ($(git log -1 --format=%s "$planted"))"
    exit 0
fi
say "FAILED: first bad commit ${first_bad:-none}, planted $planted"
exit 1

#!/usr/bin/env bash
# Performance history: one configuration measured against many llama.cpp snapshots, as a
# markdown table and an SVG plot ordered by snapshot date.
#
#   scripts/perf-history.sh [--config CONFIG] [--rounds N] [--repetitions N] [--workload NAME]...
#                           [--wait-load L] [--out DIR] [--rebuild] [--build-only] [COMMIT...]
#
# COMMIT: snapshot commits or unique prefixes from scripts/llama-cpp-snapshots.tsv (default: all
# of them; those that fail to build are reported and left out). CONFIG defaults to
# configs/cpu-bench-moe.toml.
#
# 1. Build: for each commit, a release build of the runner with generated bindings against a
#    worktree of the local snapshot history (see scripts/snapshot-lib.sh; one CMake build tree
#    per worktree, reused), the binary kept as DIR/bin/llama-runner-<short>. An existing binary
#    is reused unless --rebuild. --build-only stops after this step (measure later, when the
#    machine is quiet: a second call reuses the binaries).
# 2. Measure, after all builds so no compile runs beside a measurement: N rounds (default 1);
#    each round runs `llama-runner bench --config CONFIG` once per commit, in snapshot order,
#    so slow drifts of the machine spread over all commits. Records: DIR/records/<short>-r<k>.json.
#    With --wait-load L, each run first waits (up to 10 minutes) for the 1-minute load average
#    to drop below L, so that other work on a shared machine does not land in the numbers.
# 3. Report: `llama-runner history DIR/records --md DIR/perf-history.md --svg DIR/perf-history.svg`.
#
# DIR defaults to results/perf-history. Environment as for scripts/snapshot-lib.sh, plus
# LLAMA_MODELS_DIR for generated models (default .cache/models).
set -uo pipefail
. "$(dirname "$0")/snapshot-lib.sh"
cd "$snap_root"

config=configs/cpu-bench-moe.toml
rounds=1
repetitions=""
workloads=()
out=results/perf-history
rebuild=0
build_only=0
wait_load=""
commits=()
while [ $# -gt 0 ]; do
    case $1 in
        --config) config=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --repetitions) repetitions=$2; shift 2 ;;
        --workload) workloads+=("$2"); shift 2 ;;
        --wait-load) wait_load=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --rebuild) rebuild=1; shift ;;
        --build-only) build_only=1; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) c=$(snap_resolve "$1") || exit 2; commits+=("$c"); shift ;;
    esac
done
[ ${#commits[@]} -gt 0 ] || mapfile -t commits < <(snap_all)
[ -f "$config" ] || { echo "no configuration $config" >&2; exit 2; }
export LLAMA_MODELS_DIR=${LLAMA_MODELS_DIR:-$snap_root/.cache/models}
mkdir -p "$out/bin" "$out/logs" "$out/records"

# 1. Build.
# DIR/builds.tsv collects every build made here: commit, date, status, seconds.
built=()
for commit in "${commits[@]}"; do
    short=${commit:0:8}
    bin="$out/bin/llama-runner-$short"
    if [ $rebuild -eq 0 ] && [ -x "$bin" ]; then
        echo "== $short: reusing $bin" >&2
        built+=("$commit"); continue
    fi
    echo "== $short: building" >&2
    if secs=$(snap_build "$commit" "$bin" "$out/logs/$short.build.log"); then
        printf '%s\t%s\tok\t%s\n' "$short" "$(snap_date "$commit")" "$secs" >>"$out/builds.tsv"
        built+=("$commit")
    else
        echo "   $short: build failed, left out (see $out/logs/$short.build.log)" >&2
        printf '%s\t%s\tfailed\t%s\n' "$short" "$(snap_date "$commit")" "$secs" >>"$out/builds.tsv"
    fi
done
[ ${#built[@]} -gt 0 ] || { echo "nothing built" >&2; exit 1; }
if [ $build_only -eq 1 ]; then
    [ -f "$out/builds.tsv" ] && column -t -s $'\t' "$out/builds.tsv"
    exit 0
fi

# 2. Measure.
extra=()
[ -n "$repetitions" ] && extra+=(--repetitions "$repetitions")
for w in "${workloads[@]}"; do extra+=(--workload "$w"); done
for round in $(seq 1 "$rounds"); do
    for commit in "${built[@]}"; do
        short=${commit:0:8}
        echo "== round $round/$rounds: $short" >&2
        if [ -n "$wait_load" ]; then
            for _ in $(seq 60); do
                awk -v l="$wait_load" '{ exit !($1 >= l) }' /proc/loadavg || break
                sleep 10
            done
            echo "   load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
        fi
        "$out/bin/llama-runner-$short" bench --config "$config" --record "$out/records/$short-r$round.json" \
            "${extra[@]}" >"$out/logs/$short-r$round.bench.log" 2>&1 ||
            echo "   $short: bench failed (see $out/logs/$short-r$round.bench.log)" >&2
    done
done

# 3. Report, with the newest binary (any of them can read every record).
last=${built[-1]:0:8}
"$out/bin/llama-runner-$last" history "$out/records" --snapshots "$snap_table" \
    --md "$out/perf-history.md" --svg "$out/perf-history.svg"
cat "$out/perf-history.md"

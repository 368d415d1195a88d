#!/usr/bin/env bash
# Checks that the runner builds and runs against llama.cpp snapshots (the compat set). Not for CI:
# each snapshot is a llama.cpp build of several minutes (incremental on reruns).
#
#   scripts/check-snapshots.sh [--bench CONFIG] [--out DIR] [--bin-dir DIR] [COMMIT...]
#
# COMMIT: snapshot commits or unique prefixes from scripts/llama-cpp-snapshots.tsv; default the
# oldest, a middle one (1051ecd2), e21cdc11, 9e3b928f and the newest. `all` means every snapshot.
# For each: a worktree of the local snapshot history (scripts/build-snapshot-history.sh), a
# release build with generated bindings (`LLAMA_CPP_DIR=<worktree> cargo build --release -p
# llama-runner --features llama-runner/bindgen`), `llama-runner info` (the linked library must
# report the commit), and greedy generation on a generated tiny-llama model; with --bench also
# `llama-runner bench --config CONFIG`. Prints a markdown table; logs, binaries and records go to
# DIR (default results/snapshots). With --bin-dir, a binary already built there
# (llama-runner-<short>, as scripts/perf-history.sh leaves them) is checked instead of building.
# Exits non-zero if any snapshot failed.
#
# Environment: CARGO_TARGET_DIR (default target/compat), LLAMA_MODELS_DIR (default
# .cache/models), and those of scripts/snapshot-lib.sh.
set -uo pipefail
. "$(dirname "$0")/snapshot-lib.sh"
cd "$snap_root"

bench_config=""
bin_dir=""
out=results/snapshots
commits=()
while [ $# -gt 0 ]; do
    case $1 in
        --bench) bench_config=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        all) mapfile -t commits < <(snap_all); shift ;;
        *) c=$(snap_resolve "$1") || exit 2; commits+=("$c"); shift ;;
    esac
done
if [ ${#commits[@]} -eq 0 ]; then
    for c in 9515c613 1051ecd2 e21cdc11 9e3b928f 5f55650a; do commits+=("$(snap_resolve "$c")"); done
fi
export LLAMA_MODELS_DIR=${LLAMA_MODELS_DIR:-$snap_root/.cache/models}
mkdir -p "$out/logs" "$out/bin" "$out/records" "$LLAMA_MODELS_DIR"

model="$LLAMA_MODELS_DIR/tiny-llama.gguf"
if [ ! -f "$model" ]; then
    echo "generating $model" >&2
    cargo run --quiet --release -p tiny-gguf -- --preset tiny-llama --out "$model" >&2 || exit 1
fi

rows=()
failed=0
for commit in "${commits[@]}"; do
    short=${commit:0:8}
    date=$(snap_date "$commit")
    bin="$out/bin/llama-runner-$short"
    build=fail info=– gen=– tokens=– bench=–
    built=0
    if [ -n "$bin_dir" ] && [ -x "$bin_dir/llama-runner-$short" ]; then
        echo "== $short ($date): using $bin_dir/llama-runner-$short" >&2
        bin="$bin_dir/llama-runner-$short"
        build="ok (prebuilt)" built=1
    else
        echo "== $short ($date): building" >&2
        if secs=$(snap_build "$commit" "$bin" "$out/logs/$short.build.log"); then
            build="ok (${secs} s)" built=1
        else
            build="fail (${secs} s, see $out/logs/$short.build.log)"
        fi
    fi
    if [ $built -eq 1 ]; then
        if "$bin" info >"$out/logs/$short.info.log" 2>&1 &&
            grep -q "library reports commit $commit" "$out/logs/$short.info.log"; then
            info=ok
        else
            info=fail
        fi
        if "$bin" generate --flags "-m $model -t 2" -p hello -n 8 >"$out/logs/$short.generate.log" 2>&1; then
            tokens=$(sed -n 's/.*generated: \([0-9]*\) tokens.*/\1/p' "$out/logs/$short.generate.log")
            gen=ok
        else
            gen=fail
        fi
        if [ -n "$bench_config" ]; then
            if "$bin" bench --config "$bench_config" --record "$out/records/$short.json" \
                >"$out/logs/$short.bench.log" 2>&1; then
                bench=ok
            else
                bench=fail
            fi
        fi
    fi
    case "$build $info $gen $bench" in *fail*) failed=$((failed + 1)) ;; esac
    rows+=("| $short | $date | $build | $info | $gen | $tokens | $bench |")
    echo "${rows[-1]}" >&2
done

echo "| commit | date | build | info | generate | tokens | bench |"
echo "|---|---|---|---|---|---:|---|"
printf '%s\n' "${rows[@]}"
exit $((failed > 0))

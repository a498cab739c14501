#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c, clang with fuzzer, address and undefined
# sanitizers: tests/fuzz/fuzz.mk) and runs each for FUZZ_SECONDS (default 60), FUZZ_JOBS of them
# at a time (default 2). A target starts from its seeds (written by the target itself from the
# library's encoders) and its committed corpus tests/fuzz/corpus/<target>/ (read only); the inputs
# it finds go to $FUZZ_BUILD/corpus/<target>/. docs/fuzzing.md is the manual.
#   tests/fuzz/run.sh [target...]          run (default: every target)
#   tests/fuzz/run.sh --merge [target...]  add what the runs found that adds coverage to the
#                                          committed corpus (libFuzzer -merge=1, minimized)
#   tests/fuzz/run.sh --seeds [target...]  rewrite the committed seeds (corpus/<target>/seed-*)
# Exit status: 0 when every target ran its time without a crash, 77 when clang is missing.
set -euo pipefail
CLANG=${CLANG:-clang}
SECONDS_EACH=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-2}
OUT=${FUZZ_BUILD:-build/fuzz}
HERE=tests/fuzz
command -v "$CLANG" >/dev/null || {
    echo "SKIP: $CLANG not found"
    exit 77
}
mode=run
case "${1:-}" in
--merge | --seeds)
    mode=${1#--}
    shift
    ;;
esac
all=$(cd "$HERE" && for f in fuzz_*.c; do echo "${f%.c}"; done)
targets=${*:-$all}
for t in $targets; do
    [ -f "$HERE/$t.c" ] || {
        echo "run.sh: no target $t" >&2
        exit 2
    }
done

echo "== building $(echo "$targets" | wc -w) fuzz targets in $OUT"
mkdir -p "$OUT/logs"
# shellcheck disable=SC2046
make --no-print-directory -s -f "$HERE/fuzz.mk" -j"$JOBS" OUT="$OUT" CLANG="$CLANG" \
    $(for t in $targets; do echo "$OUT/$t"; done)

opts() { # libFuzzer options of target $1
    local o="-max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1"
    [ -f "$HERE/dict/$1.dict" ] && o="$o -dict=$HERE/dict/$1.dict"
    echo "$o"
}

if [ "$mode" = seeds ]; then
    for t in $targets; do
        mkdir -p "$HERE/corpus/$t"
        rm -f "$HERE/corpus/$t"/seed-*
        ECCL_FUZZ_SEEDS="$HERE/corpus/$t" "$OUT/$t"
        echo "$t: $(find "$HERE/corpus/$t" -name 'seed-*' | wc -l) seeds"
    done
    exit 0
fi
if [ "$mode" = merge ]; then
    for t in $targets; do
        # A fresh minimal set: the seeds and reproducers, then what adds coverage to them out of
        # the committed corpus and the runs' finds.
        c=$HERE/corpus/$t m=$OUT/merge/$t
        mkdir -p "$c" "$OUT/corpus/$t"
        rm -rf "$m"
        mkdir -p "$m"
        find "$c" -type f \( -name 'seed-*' -o -name 'repro-*' \) -exec cp {} "$m/" \;
        before=$(find "$c" -type f | wc -l)
        # shellcheck disable=SC2046
        ECCL_DEBUG=NONE "$OUT/$t" -merge=1 $(opts "$t") "$m" "$c" "$OUT/corpus/$t" \
            >"$OUT/logs/merge-$t.log" 2>&1 || {
            tail -20 "$OUT/logs/merge-$t.log"
            exit 1
        }
        rm -f "$c"/*
        cp "$m"/* "$c/"
        n=$(find "$c" -type f | wc -l)
        echo "$t: corpus $before -> $n files"
        [ "$n" -lt 200 ] || echo "$t: keep the committed corpus under 200 files (docs/fuzzing.md)"
    done
    exit 0
fi

run_one() { # runs target $1 for SECONDS_EACH; its log goes to $OUT/logs/$1.log
    local t=$1 log=$OUT/logs/$1.log
    rm -rf "$OUT/seeds/$t"
    mkdir -p "$OUT/seeds/$t" "$OUT/corpus/$t" "$OUT/crashes" "$HERE/corpus/$t"
    ECCL_FUZZ_SEEDS="$OUT/seeds/$t" "$OUT/$t" >"$log" 2>&1
    # shellcheck disable=SC2046
    ECCL_DEBUG=NONE "$OUT/$t" -max_total_time="$SECONDS_EACH" $(opts "$t") \
        -artifact_prefix="$OUT/crashes/$t-" "$OUT/corpus/$t" "$OUT/seeds/$t" "$HERE/corpus/$t" \
        >>"$log" 2>&1
}

declare -A pids=()
failed=0
report() { # prints the outcome of target $1 whose run returned $2
    local t=$1 rc=$2 log=$OUT/logs/$1.log
    local stats
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 |
        sed -E 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+/\1 executions, /; s/[[:space:]]+/ /g' ||
        true)
    if [ "$rc" = 0 ]; then
        echo "$t: ok, ${stats:-no stats}"
    else
        failed=$((failed + 1))
        echo "$t: FAILED (exit $rc); the end of $log:"
        tail -40 "$log"
        echo "reproduce: $OUT/$t $OUT/crashes/$t-<crash file> (docs/fuzzing.md)"
    fi
}
echo "== running each target for ${SECONDS_EACH}s, $JOBS at a time"
for t in $targets; do
    while [ "${#pids[@]}" -ge "$JOBS" ]; do
        wait -n || true
        for k in "${!pids[@]}"; do
            if ! kill -0 "${pids[$k]}" 2>/dev/null; then
                rc=0
                wait "${pids[$k]}" || rc=$?
                report "$k" "$rc"
                unset "pids[$k]"
            fi
        done
    done
    run_one "$t" &
    pids[$t]=$!
done
for k in "${!pids[@]}"; do
    rc=0
    wait "${pids[$k]}" || rc=$?
    report "$k" "$rc"
done
[ $failed = 0 ] || {
    echo "$failed fuzz target(s) failed"
    exit 1
}
echo "every fuzz target ran ${SECONDS_EACH}s without a crash"

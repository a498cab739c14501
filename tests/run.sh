#!/usr/bin/env bash
# Runs every test binary under build/tests (or $ECCL_BUILD/tests) with a timeout, one at a time,
# and ends with the line "N passed, N failed, N skipped". A binary passes with exit 0, skips with
# exit 77, fails otherwise (a timeout is a failure). Output of failing tests is shown; the rest
# goes to build/tests/logs/.
#   tests/run.sh [pattern]    only binaries whose path contains pattern
#   TEST_TIMEOUT=seconds      per binary (default 300)
#   tests/run.sh --torture [pattern]   fault sweeps of tests/torture.sh (a FAULT=1 build)
set -u
# --torture [pattern]: the allocation and system-call torture of tests/torture.sh instead.
[ "${1:-}" = --torture ] && shift && exec "$(dirname "$0")/torture.sh" "$@"
build=${ECCL_BUILD:-build}
pattern=${1:-}
timeout_s=${TEST_TIMEOUT:-300}
logs="$build/tests/logs"
mkdir -p "$logs"

# Traffic stays on loopback; the bootstrap picks the loopback interface.
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}
export ECCL_BUILD="$build"
if [ -n "${SAN:-}" ]; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:protect_shadow_gap=0}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi

pass=0 fail=0 skip=0
failed=()
bins=$(find "$build/tests" -type f -perm -u+x -name 'test_*' ! -path '*/logs/*' | sort)
# GPU tests are run by tests/gpu/run.sh; here they skip by themselves where no GPU is present.
for bin in $bins; do
    name=${bin#"$build/tests/"}
    case "$name" in *"$pattern"*) ;; *) continue ;; esac
    log="$logs/$(echo "$name" | tr '/' '_').log"
    start=$(date +%s.%N)
    timeout --kill-after=10 "$timeout_s" "$bin" >"$log" 2>&1
    rc=$?
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1))
        printf 'PASS  %-50s %6ss\n' "$name" "$secs"
    elif [ $rc -eq 77 ]; then
        skip=$((skip + 1))
        printf 'SKIP  %-50s %6ss  %s\n' "$name" "$secs" "$(tail -n 1 "$log")"
    else
        fail=$((fail + 1))
        failed+=("$name")
        [ $rc -eq 124 ] && why="timed out after ${timeout_s}s" || why="exit $rc"
        printf 'FAIL  %-50s %6ss  (%s)\n' "$name" "$secs" "$why"
        # The lines that say what failed first (a long log's tail may not hold them), then the tail.
        grep -E 'FAIL|failed|ASSERT|ERROR' "$log" | head -n 12 | sed 's/^/      ! /'
        tail -n 60 "$log" | sed 's/^/      | /'
    fi
done
[ ${#failed[@]} -gt 0 ] && printf 'failed: %s\n' "${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] && [ $((pass + skip)) -gt 0 ]

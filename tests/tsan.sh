#!/usr/bin/env bash
# tests/tsan.sh - runs test binaries of a SAN=thread build under ThreadSanitizer (make test-tsan).
#
#   ECCL_BUILD=build/tsan tests/tsan.sh unit/proxy/test_proxy mp/test_colls_mt@--quick ...
#
# An entry is a path under $ECCL_BUILD/tests, with arguments after '@', separated by commas.
#
# A test passes when it exits 0 (77: skipped) and ThreadSanitizer reported nothing: every report
# counts, also one in a test that passed otherwise (the report is shown). tests/tsan.supp may
# list races in third-party libraries only (each entry says why it is not eccl's).
# Some kernels map memory where TSan's shadow expects none ("FATAL: ThreadSanitizer: unexpected
# memory mapping", with vm.mmap_rnd_bits above 28): the tests run with address-space
# randomization off (setarch -R), which avoids it without changing the machine.
# Ends with "N passed, N failed, N skipped".
#   TSAN_TEST_TIMEOUT=seconds   per binary (default 400)
set -uo pipefail
build=${ECCL_BUILD:-build/tsan}
timeout_s=${TSAN_TEST_TIMEOUT:-400}
logs="$build/tests/logs/tsan"
mkdir -p "$logs"
here=$(cd "$(dirname "$0")" && pwd)
supp=""
[ -s "$here/tsan.supp" ] && supp=" suppressions=$here/tsan.supp"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1 history_size=4}$supp"
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}
# Ranks that are threads of one process map each shared-memory connector twice; TSan cannot
# connect a release through one mapping with the acquire through the other, which is all that
# orders the single-copy path's reads of a peer's buffer (docs/hardening.md): off here.
export ECCL_HOST_SINGLE_COPY_BYTES=${ECCL_HOST_SINGLE_COPY_BYTES:-0}
norand=()
if command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then
    norand=(setarch "$(uname -m)" -R)
fi

pass=0 fail=0 skip=0
failed=()
for entry in "$@"; do
    name=${entry%%@*}
    args=()
    [ "$entry" != "$name" ] && IFS=, read -r -a args <<<"${entry#*@}"
    bin="$build/tests/$name"
    log="$logs/$(echo "$name" | tr '/' '_').log"
    if [ ! -x "$bin" ]; then
        fail=$((fail + 1))
        failed+=("$name")
        echo "FAIL  $name (missing: $bin)"
        continue
    fi
    start=$(date +%s)
    timeout --kill-after=10 "$timeout_s" "${norand[@]}" "$bin" "${args[@]}" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    reports=$(grep -c 'WARNING: ThreadSanitizer' "$log")
    if [ "$rc" -eq 77 ] && [ "$reports" -eq 0 ]; then
        skip=$((skip + 1))
        printf 'SKIP  %-44s %5ss  %s\n' "$name" "$secs" "$(tail -n 1 "$log")"
    elif [ "$rc" -eq 0 ] && [ "$reports" -eq 0 ]; then
        pass=$((pass + 1))
        printf 'PASS  %-44s %5ss\n' "$name" "$secs"
    else
        fail=$((fail + 1))
        failed+=("$name")
        printf 'FAIL  %-44s %5ss  (exit %d, %d ThreadSanitizer reports)\n' "$name" "$secs" "$rc" \
            "$reports"
        if [ "$reports" -gt 0 ]; then
            # The first report, frames only.
            awk '/WARNING: ThreadSanitizer/ {p = 1} p && /^ *(WARNING|#[0-5] |Previous|Location|Mutex)/ {print; n++} n > 30 {exit}' \
                "$log" | sed 's/^/      | /'
        else
            tail -n 30 "$log" | sed 's/^/      | /'
        fi
    fi
done
[ ${#failed[@]} -gt 0 ] && printf 'failed: %s\n' "${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] && [ $((pass + skip)) -gt 0 ]

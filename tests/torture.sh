#!/usr/bin/env bash
# tests/torture.sh - allocation and system-call torture (tests/run.sh --torture [pattern]).
#
# For each scenario of tests/fault/test_torture.c (communicator init on threads and on
# processes, each collective, abort, shrink, an elastic recovery, the store operations) whose name
# matches the pattern (an extended regular expression; a plain word matches as a substring): one
# run with ECCL_FAULT_COUNT=1 counts the hits of every fault site
# (alloc, socket_send, socket_recv, sys_socket, sys_connect, sys_accept, sys_mmap, sys_memfd,
# sys_eventfd, thread_create, shm_create, net_socket_io, store_op, ...) during the scenario, then
# the scenario runs again once per hit with that hit failing (TORTURE_FAULT=site:N). Every run
# must end with success or a clean error (exit 0 or 2): no crash, no hang (a deadline per run), no
# block, fd or thread left behind, nothing for AddressSanitizer, no success with wrong data. Needs
# a FAULT=1 build (make torture: FAULT=1 SAN=address,undefined in $(BUILD)/torture).
#
#   TORTURE_STRIDE=k        sweep every k-th hit of each site (default 1: all)
#   TORTURE_FIRST=n         and only the first n hits of each site (default 0: all)
#   TORTURE_SITES=regex     only the sites matching it (default: all)
#   TORTURE_LOOP_FIRST=n    sites hit once per pass of a thread's loop (proxy_thread, proxy_stall,
#                           svc_thread, uds_close: every hit is the same point) sweep only their
#                           first n hits (default 2)
#   TORTURE_RUN_TIMEOUT=s   deadline of one run (default 90)
#   TORTURE_BOOTSTRAP_MS=ms ECCL_BOOTSTRAP_TIMEOUT and ECCL_SOCKET_HANDSHAKE_TIMEOUT_MS of the
#                           runs with a fault (default 3000)
# Ends with "torture: N points swept in S scenarios, N failed"; exit 0 when none failed.
set -euo pipefail
build=${ECCL_BUILD:-build}
pattern=${1:-}
stride=${TORTURE_STRIDE:-1}
first=${TORTURE_FIRST:-0}
sites_re=${TORTURE_SITES:-.}
run_timeout=${TORTURE_RUN_TIMEOUT:-90}
loop_first=${TORTURE_LOOP_FIRST:-2}
boot_ms=${TORTURE_BOOTSTRAP_MS:-3000}
loop_sites=" proxy_thread proxy_stall svc_thread uds_close "
bin="$build/tests/fault/test_torture"
logs="$build/tests/logs/torture"
mkdir -p "$logs"
if [ ! -x "$bin" ]; then
    echo "torture: $bin is missing (make torture builds it)" >&2
    exit 1
fi
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:protect_shadow_gap=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
unset ECCL_FAULT ECCL_FAULT_COUNT TORTURE_FAULT TORTURE_COUNTS

total=0 total_fail=0 nscen=0
failed=()
t_start=$(date +%s)
for scen in $("$bin" --list); do
    [[ "$scen" =~ $pattern ]] || continue
    nscen=$((nscen + 1))
    counts="$logs/$scen.counts"
    : >"$counts"
    rc=0
    ECCL_FAULT_COUNT=1 TORTURE_COUNTS="$counts" timeout -k 5 "$run_timeout" \
        "$bin" --scenario "$scen" >"$logs/$scen.count.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL  $scen: the counting run (no fault) exited $rc"
        tail -n 30 "$logs/$scen.count.log" | sed 's/^/      | /'
        total_fail=$((total_fail + 1))
        failed+=("$scen:count")
        continue
    fi
    # The most hits of each site in any process of the scenario.
    sites=$(awk '{ if ($2 > m[$1]) m[$1] = $2 } END { for (s in m) print s, m[s] }' "$counts" |
        grep -E "^($sites_re)" | sort || true)
    swept=0 ok=0 err=0 bad=0 detail=""
    t0=$(date +%s)
    while read -r site max; do
        [ -n "$site" ] || continue
        n_site=0
        lim=$first
        case "$loop_sites" in *" $site "*) [ "$lim" -gt 0 ] && [ "$lim" -lt "$loop_first" ] ||
            lim=$loop_first ;; esac
        for ((n = 1; n <= max; n++)); do
            [ "$lim" -gt 0 ] && [ "$n" -gt "$lim" ] && break
            [ $(((n - 1) % stride)) -eq 0 ] || continue
            log="$logs/$scen.$site.$n.log"
            rc=0
            # A rank whose init failed is seen by its peers at their bootstrap deadline: short
            # deadlines keep such runs short (a clean error either way).
            TORTURE_FAULT="$site:$n" ECCL_BOOTSTRAP_TIMEOUT=$boot_ms \
                ECCL_SOCKET_HANDSHAKE_TIMEOUT_MS=$boot_ms timeout -k 5 "$run_timeout" \
                "$bin" --scenario "$scen" >"$log" 2>&1 || rc=$?
            swept=$((swept + 1))
            n_site=$((n_site + 1))
            case $rc in
            0) ok=$((ok + 1)) && rm -f "$log" ;;
            2) err=$((err + 1)) && rm -f "$log" ;;
            *)
                bad=$((bad + 1))
                [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="hung (killed after ${run_timeout}s)" ||
                    why="exit $rc"
                echo "FAIL  $scen with $site:$n failing: $why"
                echo "      rerun: TORTURE_FAULT=$site:$n $bin --scenario $scen"
                { grep -E 'UNCLEAN|LEAK|ERROR: |runtime error|SUMMARY|signal|timed out' "$log" ||
                    tail -n 5 "$log"; } | head -n 12 | sed 's/^/      | /'
                failed+=("$scen:$site:$n")
                ;;
            esac
        done
        detail="$detail $site:$n_site/$max"
    done <<<"$sites"
    total=$((total + swept))
    total_fail=$((total_fail + bad))
    printf 'torture %-18s %5d points swept (%d ok, %d clean errors, %d failed) in %ds:%s\n' \
        "$scen" "$swept" "$ok" "$err" "$bad" "$(($(date +%s) - t0))" "$detail"
done
[ ${#failed[@]} -gt 0 ] && printf 'failed: %s\n' "${failed[*]}"
echo "torture: $total points swept in $nscen scenarios, $total_fail failed ($(($(date +%s) - t_start))s)"
[ "$total_fail" -eq 0 ] && [ "$nscen" -gt 0 ]

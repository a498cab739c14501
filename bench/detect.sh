#!/usr/bin/env bash
# detect.sh - failure detection times, median and max over RUNS runs (default 20) of each case:
# a SIGKILLed peer mid-collective (AllReduce, AllGather, Broadcast, Send/Recv), a SIGSTOPped peer,
# on shared memory and with every connector over TCP (ECCL_SHM_DISABLE=1); a killed proxy thread,
# a killed UDS service thread and closed UDS connections (needs the FAULT=1 build: make test-fault
# builds build/fault). Times are from the fault to the last survivor's call returning
# ecclRemoteError, as the fault tests print them.
#   bench/detect.sh [RUNS]
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
BUILD=${BUILD:-build}
FAULT_BUILD=${FAULT_BUILD:-build/fault}
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}
out=$(mktemp -d /tmp/eccl-detect.XXXXXX)
trap 'rm -rf "$out"' EXIT

stats() { # label file-of-numbers
    sort -n "$2" | awk -v label="$1" '{v[NR]=$1} END {
        if (NR == 0) { printf "%-44s %5s\n", label, "no data"; exit }
        med = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        printf "%-44s %5d %10.1f %10.1f\n", label, NR, med, v[NR] }'
}

run_kill() { # label binary [env...]
    local label=$1 bin=$2
    shift 2
    [ -x "$bin" ] || { echo "skip $label: $bin not built"; return; }
    : >"$out/$label.raw"
    for _ in $(seq "$RUNS"); do
        env "$@" "$bin" 2>&1 | grep -E '^case [0-9]+ \(' >>"$out/$label.raw"
    done
    for c in "0 (SIGKILL):AllReduce killed" "1 (SIGKILL):AllGather killed" "2 (SIGKILL):Broadcast killed" \
        "3 (SIGKILL):Send/Recv killed" "0 (SIGSTOP):AllReduce stopped"; do
        key=${c%%:*} name=${c#*:}
        grep -F "case $key" "$out/$label.raw" | sed -n 's/.*within \([0-9.]*\) ms.*/\1/p' >"$out/n"
        stats "$label: $name" "$out/n"
    done
}

run_proxy() {
    local bin=$FAULT_BUILD/tests/fault/test_proxy_fault
    [ -x "$bin" ] || { echo "skip proxy faults: $bin not built (make test-fault)"; return; }
    : >"$out/proxy.raw"
    for _ in $(seq "$RUNS"); do
        "$bin" 2>&1 | grep -E 'failed after|^\[ +(RUN|OK|FAILED) ' >>"$out/proxy.raw"
    done
    # Per test: the slowest rank of each run.
    for t in test_proxy_thread_dies:"proxy thread killed" test_proxy_thread_stalls:"proxy thread stuck (STALL_MS=200)" \
        test_service_thread_dies:"UDS service thread killed" \
        test_uds_closed:"UDS connections closed"; do
        name=${t#*:} test=${t%%:*}
        awk -v t="$test" '/^\[ RUN/ {cur=($NF==t); max=-1; next}
            /^\[ +OK|^\[  FAILED/ { if (cur && max >= 0) print max; cur=0; next }
            cur && /failed after/ { for (i=1;i<=NF;i++) if ($i=="after") { v=$(i+1)+0; if (v>max) max=v } }' \
            "$out/proxy.raw" >"$out/n"
        stats "$name" "$out/n"
    done
}

printf "%-44s %5s %10s %10s\n" "case ($(nproc) cores, $(hostname))" runs "median ms" "max ms"
[ -z "${PROXY_ONLY:-}" ] && run_kill shm "$BUILD/tests/fault/test_kill_rank"
[ -z "${PROXY_ONLY:-}" ] && run_kill tcp "$BUILD/tests/fault/test_kill_rank" ECCL_SHM_DISABLE=1
run_proxy

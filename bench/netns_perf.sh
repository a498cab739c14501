#!/usr/bin/env bash
# netns_perf.sh - AllReduce bus bandwidth across two network namespaces (the socket network
# transport over a veth pair) next to shared memory within one namespace, as one table.
#
# Makes two namespaces eccl-<pid>-0h0 and eccl-<pid>-0h1 joined by a veth pair named eccl0 on
# both sides (10.231.<n>.1 and .2/24; the same ip commands as tests/support/netns.c), then runs
# build/bin/eccl-perf:
#   net 2x1   2 ranks, one process per namespace        (eccl-perf -N 2 --proc p --id-file F)
#   net 2x2   4 ranks, two processes per namespace       (ranks 0,1 in h0, ranks 2,3 in h1)
#   shm 2     2 ranks in one namespace                   (eccl-perf -N 2)
#   shm 4     4 ranks in one namespace                   (eccl-perf -N 4)
# and prints the out-of-place busbw (GB/s) of each size side by side. Every result is checked
# by eccl-perf (#wrong must be 0, else the cell reads "WRONG"). Everything it starts (processes,
# namespaces) is removed on exit, also on failure or Ctrl-C; namespaces of earlier runs whose
# pid is dead are removed first.
#
#   bench/netns_perf.sh [eccl-perf size options]    default: -b 64K -e 64M -f 4 -n 10 -w 3
#   ECCL_BUILD=build/nt bench/netns_perf.sh          another build folder
#   MTU=9000 bench/netns_perf.sh                     the veth MTU (default 1500; lo has 65536)
# Exits 77 (with the reason) where namespaces cannot be made: not root, no ip, refused.
set -u
cd "$(dirname "$0")/.." || exit 1
build=${ECCL_BUILD:-build}
perf="$build/bin/eccl-perf"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(-b 64K -e 64M -f 4 -n 10 -w 3)
timeout_s=${PERF_TIMEOUT:-300}

skip() {
    echo "SKIP: $*"
    exit 77
}
die() {
    echo "netns_perf: $*" >&2
    exit 1
}

[ -x "$perf" ] || die "$perf not found: run make (or set ECCL_BUILD)"
[ "$(id -u)" -eq 0 ] || skip "not root (uid $(id -u)): making network namespaces needs root"
ip=$(PATH="$PATH:/usr/sbin:/sbin" command -v ip) || skip "iproute2's ip not found"

prefix="eccl-$$-0"
h0="${prefix}h0"
h1="${prefix}h1"
subnet=$(($$ % 250 + 1))
workdir=$(mktemp -d /tmp/eccl-netns-perf.XXXXXX) || die "mktemp failed"
made=()
pids=()

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p n
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    pids=()
    for n in "${made[@]}"; do
        "$ip" netns delete "$n" 2>/dev/null || echo "netns_perf: could not delete $n" >&2
    done
    made=()
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Namespaces of earlier runs whose pid is gone.
for f in /var/run/netns/eccl-*; do
    [ -e "$f" ] || continue
    n=${f##*/}
    pid=${n#eccl-}
    pid=${pid%%-*}
    case "$pid" in '' | *[!0-9]*) continue ;; esac
    if ! kill -0 "$pid" 2>/dev/null && [ ! -d "/proc/$pid" ]; then
        "$ip" netns delete "$n" && echo "netns_perf: deleted stale namespace $n" >&2
    fi
done

# run_ip ARGS...: ip with its output kept for the message.
run_ip() {
    local out
    if ! out=$("$ip" "$@" 2>&1); then
        echo "netns_perf: \`ip $*\` failed: $out" >&2
        return 1
    fi
}

for n in "$h0" "$h1"; do
    if ! out=$("$ip" netns add "$n" 2>&1); then
        skip "cannot make a network namespace: \`ip netns add $n\` failed: $out"
    fi
    made+=("$n")
    run_ip -n "$n" link set lo up || exit 1
done
if ! out=$("$ip" link add eccl0 netns "$h0" type veth peer name eccl0 netns "$h1" 2>&1); then
    skip "no veth pair: $out"
fi
i=1
for n in "$h0" "$h1"; do
    run_ip -n "$n" addr add "10.231.$subnet.$i/24" dev eccl0 || exit 1
    if [ -n "${MTU:-}" ]; then run_ip -n "$n" link set eccl0 mtu "$MTU" || exit 1; fi
    run_ip -n "$n" link set eccl0 up || exit 1
    i=$((i + 1))
done

# perf_in NS LOG ARGS...: eccl-perf in a namespace, in the background (pid in $!).
perf_in() {
    local ns=$1 log=$2
    shift 2
    "$ip" netns exec "$ns" env ECCL_SOCKET_IFNAME=eccl0 ECCL_NET=socket ECCL_DEVICE=host \
        "$perf" -T "$timeout_s" "${sizes[@]}" "$@" >"$log" 2>&1 &
}

# run_net NAME NPROCS: NPROCS processes, the first half in h0; process 0's table in NAME.log.
run_net() {
    local name=$1 n=$2 p ns rc=0
    local idf="$workdir/$name.id"
    local mypids=()
    for ((p = 0; p < n; p++)); do
        ns=$h0
        [ $p -ge $((n / 2)) ] && ns=$h1
        perf_in "$ns" "$workdir/$name.$p.log" -N "$n" --proc "$p" --id-file "$idf"
        mypids+=($!)
        pids+=($!)
    done
    for p in "${mypids[@]}"; do
        wait "$p" || rc=$?
    done
    pids=()
    cp "$workdir/$name.0.log" "$workdir/$name.log"
    if [ $rc -ne 0 ]; then
        echo "netns_perf: $name failed (exit $rc):" >&2
        for ((p = 0; p < n; p++)); do sed "s/^/  [$name proc $p] /" "$workdir/$name.$p.log" >&2; done
    fi
    return $rc
}

# run_shm NAME NPROCS: eccl-perf -N NPROCS inside h0.
run_shm() {
    local name=$1 n=$2 rc=0
    perf_in "$h0" "$workdir/$name.log" -N "$n"
    pids+=($!)
    wait $! || rc=$?
    pids=()
    if [ $rc -ne 0 ]; then
        echo "netns_perf: $name failed (exit $rc):" >&2
        sed "s/^/  [$name] /" "$workdir/$name.log" >&2
    fi
    return $rc
}

status=0
echo "# netns_perf: eccl-perf AllReduce (float, sum) ${sizes[*]}, host buffers"
echo "# net: ECCL_NET=socket between namespaces $h0 and $h1 (veth, 10.231.$subnet.0/24," \
    "MTU ${MTU:-1500}); shm: one namespace"
run_net net2x1 2 || status=1
run_net net2x2 4 || status=1
run_shm shm2 2 || status=1
run_shm shm4 4 || status=1

# The table: size, then each run's out-of-place busbw (column 8; #wrong is column 9).
table=$(awk -v runs="net2x1 net2x2 shm2 shm4" -v dir="$workdir" '
BEGIN {
    n = split(runs, r, " ")
    for (i = 1; i <= n; i++) {
        f = dir "/" r[i] ".log"
        while ((getline line < f) > 0) {
            if (line ~ /^[ \t]*[0-9]/) {
                split(line, c, " ")
                size = c[1]
                if (!(size in seen)) { seen[size] = 1; order[++ns] = size }
                bw[r[i], size] = (c[9] == "0") ? c[8] : "WRONG"
            }
        }
        close(f)
    }
    printf "%12s %12s %12s %12s %12s\n", "size (B)", "net 2x1", "net 2x2", "shm 2", "shm 4"
    printf "%12s %12s %12s %12s %12s\n", "", "busbw GB/s", "busbw GB/s", "busbw GB/s", "busbw GB/s"
    for (k = 1; k <= ns; k++) {
        s = order[k]
        printf "%12s", s
        for (i = 1; i <= n; i++)
            printf " %12s", ((r[i], s) in bw) ? bw[r[i], s] : "-"
        printf "\n"
    }
}')
echo "$table"
case "$table" in *WRONG*) status=1 ;; esac
grep -qh "Out of bounds values : [0-9]* FAILED" "$workdir"/*.log && status=1
exit $status

# shellcheck shell=bash
# shellcheck disable=SC2034 # globals the tests that source this file read
# cluster_lib.sh - a simulated cluster for the tests of tests/cluster/ (sourced, not run).
#
# A "pod" is a network namespace with its own IPv4 address: one veth pair, named eccl0 inside
# the pod and p<N> on the other side, whose outer end is a port of the bridge br0 in a hub
# namespace of the test's own. etcd (Debian's /usr/bin/etcd) runs in a namespace of its own on
# the same bridge. Each pod runs build/bin/ecclrun (started through `ip netns exec`, so that its
# pid is ours to wait for and to kill), which starts the pod's workers (examples/elastic_train)
# with ECCL_NET=socket and ECCL_SOCKET_IFNAME=eccl0: ranks of one pod talk over shared memory,
# ranks of different pods over TCP through the bridge, and everyone reaches etcd at its address
# on the bridge. Nothing is done to the host's own interfaces or routes: every link is created
# directly inside the namespaces (`ip link add ... netns A type veth peer ... netns B`).
#
# Names: eccl-<pid>-c<what> (the netns.c convention: a later run deletes the namespaces of a run
# whose pid is dead). Addresses: 10.233.<pid % 250 + 1>.<n>/24.
#
# Everything started is stopped by pid, and every namespace deleted, by cl_cleanup, which runs
# from the EXIT trap (also on failure and on INT/TERM/HUP). A machine where namespaces cannot be
# made, or without etcd, skips the test: exit 77 with one line saying why.
#
# The test sets CL_NAME (the name of its log folder and of its lines) and CL_SRC (the source
# folder, filled in by make) before sourcing this file. Functions and globals start with cl_/CL_.

# The build folder: $ECCL_BUILD (tests/run.sh sets it; relative to the current folder, else to
# the source folder), else the one this test was installed in ($BUILD/tests/cluster/test_*).
if [ -n "${ECCL_BUILD:-}" ]; then
    CL_BUILD=$ECCL_BUILD
    case "$CL_BUILD" in /*) ;; *) [ -d "$CL_BUILD" ] && CL_BUILD="$PWD/$CL_BUILD" || CL_BUILD="$CL_SRC/$CL_BUILD" ;; esac
else
    CL_BUILD=$(cd "$(dirname "$0")/../.." && pwd)
fi
CL_ETCD=/usr/bin/etcd
CL_IP=
CL_PREFIX="eccl-$$-c"
CL_HUB="${CL_PREFIX}hub"
CL_SUBNET="10.233.$(($$ % 250 + 1))"
CL_ETCD_NS="${CL_PREFIX}etcd"
CL_ETCD_ADDR="$CL_SUBNET.2"
CL_ETCD_PORT=2379
CL_LOGS="$CL_BUILD/tests/logs/cluster-$CL_NAME"
CL_T0=$(date +%s.%N)
cl_namespaces=() # made by this run, deleted by cl_cleanup
cl_pids=()       # our children (etcd, the ecclrun of each pod)
cl_etcd_pid=
cl_etcd_dir=
cl_failed=0
cl_failures= # the text of each failed check, one a line
cl_started=0 # the network is being made: logs are worth showing on failure

cl_say() {
    printf '[+%6.2f s] %s: %s\n' "$(cl_elapsed)" "$CL_NAME" "$*"
}
cl_elapsed() {
    awk -v s="$CL_T0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'
}
cl_skip() {
    echo "SKIP: $*"
    exit 77
}
# cl_die TEXT: the test fails; once pods may have run, the tail of every log is shown.
cl_die() {
    [ "$cl_started" = 1 ] && cl_show_logs
    [ -n "$cl_failures" ] && printf 'failed checks:\n%s' "$cl_failures"
    cl_say "FAIL: $*"
    exit 1
}
# cl_check COND-TEXT COMMAND...: runs COMMAND; a failure is recorded (the test goes on to show
# what else is wrong) and printed.
cl_check() {
    local what=$1
    shift
    if "$@"; then
        cl_say "ok: $what"
    else
        cl_say "FAIL: $what"
        cl_failed=1
        cl_failures+="  $what"$'\n'
    fi
}

# ---- what may stop the test before it starts ----

cl_preflight() {
    [ "$(id -u)" -eq 0 ] || cl_skip "not root (uid $(id -u)): the simulated cluster needs network namespaces"
    CL_IP=$(PATH="$PATH:/usr/sbin:/sbin" command -v ip) || cl_skip "iproute2's ip not found: no network namespaces"
    [ -x "$CL_ETCD" ] || cl_skip "etcd is missing: $CL_ETCD not found or not executable (apt-get install etcd-server)"
    command -v curl >/dev/null || cl_skip "curl not found (the etcd health probe)"
    local f
    for f in "$CL_BUILD/bin/ecclrun" "$CL_BUILD/examples/elastic_train"; do
        [ -x "$f" ] || cl_die "$f is missing: run make (or set ECCL_BUILD)"
    done
    local probe="${CL_PREFIX}probe" out
    if ! out=$("$CL_IP" netns add "$probe" 2>&1); then
        cl_skip "network namespaces not permitted: \`ip netns add\` failed: $out"
    fi
    "$CL_IP" netns delete "$probe" 2>/dev/null
    # Namespaces of earlier runs (of any eccl test) whose pid is gone.
    local n pid
    for f in /var/run/netns/eccl-*; do
        [ -e "$f" ] || continue
        n=${f##*/}
        pid=${n#eccl-}
        pid=${pid%%-*}
        case "$pid" in '' | *[!0-9]*) continue ;; esac
        if ! kill -0 "$pid" 2>/dev/null && [ ! -d "/proc/$pid" ]; then
            "$CL_IP" netns delete "$n" 2>/dev/null && echo "$CL_NAME: deleted stale namespace $n"
        fi
    done
    rm -rf "$CL_LOGS"
    mkdir -p "$CL_LOGS" || cl_die "cannot make $CL_LOGS"
    trap cl_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# ---- teardown ----

# Kills every process left in namespace $1 (SIGKILL).
cl_kill_ns() {
    local p
    for p in $("$CL_IP" netns pids "$1" 2>/dev/null); do
        kill -KILL "$p" 2>/dev/null
    done
}

# shellcheck disable=SC2317 # called by the EXIT trap
cl_cleanup() {
    local rc=$? p n i
    trap - EXIT INT TERM HUP
    # bash would report each killed child ("Killed ...") on stderr: not a failure.
    exec 2>/dev/null
    for p in "${cl_pids[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
    for n in "${cl_namespaces[@]}"; do
        cl_kill_ns "$n"
    done
    for p in "${cl_pids[@]}"; do
        { wait "$p"; } 2>/dev/null
    done
    # A namespace's processes may take a moment to go (reaped by init); wait for them (5 s).
    for n in "${cl_namespaces[@]}"; do
        for ((i = 0; i < 50; i++)); do
            [ -z "$("$CL_IP" netns pids "$n" 2>/dev/null)" ] && break
            cl_kill_ns "$n"
            sleep 0.1
        done
        [ -z "$("$CL_IP" netns pids "$n" 2>/dev/null)" ] ||
            echo "$CL_NAME: processes still in $n: $("$CL_IP" netns pids "$n" | tr '\n' ' ')"
        "$CL_IP" netns delete "$n" || echo "$CL_NAME: could not delete namespace $n"
    done
    [ -n "$cl_etcd_dir" ] && rm -rf "$cl_etcd_dir"
    exit "$rc"
}

# ---- the network ----

# cl_ip ARGS...: ip, its output kept for the message; fails the test on error.
cl_ip() {
    local out
    out=$("$CL_IP" "$@" 2>&1) || cl_die "\`ip $*\` failed: $out"
}

cl_net_up() {
    local out
    cl_started=1
    if ! out=$("$CL_IP" netns add "$CL_HUB" 2>&1); then
        cl_skip "network namespaces not permitted: \`ip netns add $CL_HUB\` failed: $out"
    fi
    cl_namespaces+=("$CL_HUB")
    cl_ip -n "$CL_HUB" link set lo up
    if ! out=$("$CL_IP" -n "$CL_HUB" link add br0 type bridge 2>&1); then
        cl_skip "no bridge in a namespace: $out"
    fi
    cl_ip -n "$CL_HUB" link set br0 up
}

# cl_ns_add NS ADDR PORT: namespace NS with eccl0 holding ADDR/24, its peer PORT on the bridge.
cl_ns_add() {
    local ns=$1 addr=$2 port=$3 out
    cl_ip netns add "$ns"
    cl_namespaces+=("$ns")
    cl_ip -n "$ns" link set lo up
    if ! out=$("$CL_IP" link add eccl0 netns "$ns" type veth peer name "$port" netns "$CL_HUB" 2>&1); then
        cl_skip "no veth pair between namespaces: $out"
    fi
    cl_ip -n "$CL_HUB" link set "$port" master br0
    cl_ip -n "$CL_HUB" link set "$port" up
    cl_ip -n "$ns" addr add "$addr/24" dev eccl0
    cl_ip -n "$ns" link set eccl0 up
}

# ---- etcd ----

cl_etcd_url() {
    echo "etcd://$CL_ETCD_ADDR:$CL_ETCD_PORT/cluster-$CL_NAME"
}

cl_etcd_healthy() {
    "$CL_IP" netns exec "$CL_ETCD_NS" curl -sf --max-time 1 \
        "http://$CL_ETCD_ADDR:$CL_ETCD_PORT/health" 2>/dev/null | grep -q true
}

cl_etcd_start() {
    cl_ns_add "$CL_ETCD_NS" "$CL_ETCD_ADDR" petcd
    local base=/tmp
    [ -w /dev/shm ] && base=/dev/shm
    cl_etcd_dir=$(mktemp -d "$base/eccl-cluster-etcd.XXXXXX") || cl_die "mktemp failed"
    local client="http://$CL_ETCD_ADDR:$CL_ETCD_PORT"
    "$CL_IP" netns exec "$CL_ETCD_NS" "$CL_ETCD" --name c --data-dir "$cl_etcd_dir/data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster c=http://127.0.0.1:2380 --log-level error >"$CL_LOGS/etcd.log" 2>&1 &
    cl_etcd_pid=$!
    cl_pids+=("$cl_etcd_pid")
    local i
    for ((i = 0; i < 150; i++)); do
        cl_etcd_healthy && return 0
        kill -0 "$cl_etcd_pid" 2>/dev/null || cl_die "etcd exited during start-up: $(tail -n 5 "$CL_LOGS/etcd.log")"
        sleep 0.1
    done
    cl_die "etcd did not answer /health within 15 s: $(tail -n 5 "$CL_LOGS/etcd.log")"
}

# ---- pods ----

declare -A cl_pod_ns cl_pod_addr cl_pod_port cl_pod_pid cl_pod_rc

# cl_pod_start NAME NODE_RANK HOSTNUM ECCLRUN-ARGS... -- PROGRAM ARGS...: makes the pod's
# namespace (address $CL_SUBNET.HOSTNUM) and starts its ecclrun in it, in the background; its
# output goes to $CL_LOGS/NAME.log, its processes' event log to $CL_LOGS/NAME.jsonl, their ECCL
# log lines (WARN, and INFO of the SHM and NET subsystems where ECCL_DEBUG=INFO: the connectors)
# to $CL_LOGS/NAME.PID.dbg.
cl_pod_start() {
    local name=$1 node=$2 hostnum=$3
    shift 3
    local ns="${CL_PREFIX}${name}" addr="$CL_SUBNET.$hostnum"
    cl_ns_add "$ns" "$addr" "p$hostnum"
    cl_pod_ns[$name]=$ns
    cl_pod_addr[$name]=$addr
    cl_pod_port[$name]="p$hostnum"
    "$CL_IP" netns exec "$ns" env -u ECCL_HOSTID -u ECCL_SHM_DISABLE \
        ECCL_NET=socket ECCL_SOCKET_IFNAME=eccl0 ECCL_DEVICE=host \
        ECCL_EVENT_LOG="$CL_LOGS/$name.jsonl" ELASTIC_TRAIN_T0="$CL_T0" \
        ECCL_DEBUG_SUBSYS=SHM,NET ECCL_DEBUG_FILE="$CL_LOGS/$name.%p.dbg" \
        "$CL_BUILD/bin/ecclrun" --node-rank "$node" --rdzv-endpoint "$(cl_etcd_url)" \
        --rdzv-id "cluster-$CL_NAME" "$@" >"$CL_LOGS/$name.log" 2>&1 &
    cl_pod_pid[$name]=$!
    cl_pids+=("$!")
    cl_say "pod $name started: namespace $ns, address $addr, ecclrun pid $!"
}

# cl_pod_kill NAME: the whole pod at once: every process in its namespace is stopped (SIGSTOP,
# so that none of them reacts to the others' deaths, as when a node is lost), then SIGKILLed.
# Returns once the pod's ecclrun is reaped and the namespace is empty (5 s at most).
cl_pod_kill() {
    local name=$1 ns=${cl_pod_ns[$1]} pids p i
    pids=$("$CL_IP" netns pids "$ns")
    [ -n "$pids" ] || cl_die "pod $name has no process to kill"
    for p in $pids; do kill -STOP "$p" 2>/dev/null; done
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    { wait "${cl_pod_pid[$name]}"; } 2>/dev/null
    cl_pod_rc[$name]=killed
    for ((i = 0; i < 50; i++)); do
        [ -z "$("$CL_IP" netns pids "$ns")" ] && break
        sleep 0.1
    done
    [ -z "$("$CL_IP" netns pids "$ns")" ] || cl_die "pod $name: processes left after SIGKILL"
    cl_say "pod $name killed: SIGKILL to its $(echo "$pids" | wc -w) processes (${pids//$'\n'/ })"
}

# cl_pod_link NAME up|down: the pod's port on the bridge (the pod sees NO-CARRIER; its packets
# are dropped, nothing tells its sockets: a partition).
# Going down is checked: the port must read DOWN and the pod must fail to reach etcd (a TCP
# connect from its namespace, 2 s); the test fails at once when the cut did not take.
cl_pod_link() {
    local t0 took state
    t0=$EPOCHREALTIME
    cl_ip -n "$CL_HUB" link set "${cl_pod_port[$1]}" "$2"
    took=$(awk -v s="$t0" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.2f", e - s }')
    cl_say "pod $1: link ${cl_pod_port[$1]} $2 (ip took $took s)"
    [ "$2" = down ] || return 0
    state=$("$CL_IP" -n "$CL_HUB" -o link show "${cl_pod_port[$1]}" 2>&1)
    case "$state" in
    *"state DOWN"*) ;;
    *) cl_die "pod $1: port ${cl_pod_port[$1]} is not down after \`ip link set down\`: $state" ;;
    esac
    if "$CL_IP" netns exec "${cl_pod_ns[$1]}" timeout 2 bash -c \
        "exec 3<>/dev/tcp/$CL_ETCD_ADDR/$CL_ETCD_PORT" 2>/dev/null; then
        cl_die "pod $1: still reaches etcd at $CL_ETCD_ADDR:$CL_ETCD_PORT with its port down: the cut did not take"
    fi
    cl_say "pod $1: cut off (port DOWN; a connect from it to etcd fails)"
}

# cl_pod_wait NAME TIMEOUT_S: waits for the pod's ecclrun to exit; its exit status goes to
# cl_pod_rc[NAME] ("timeout" when it did not exit: then it is left to cl_cleanup).
cl_pod_wait() {
    local name=$1 limit=$2 pid=${cl_pod_pid[$1]} i
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        cl_pod_rc[$name]=timeout
        return 1
    fi
    wait "$pid"
    cl_pod_rc[$name]=$?
    return 0
}

# cl_npids REGEX FILE...: how many workers (distinct "pid N" of elastic_train's lines) wrote a
# line matching REGEX (extended) into the files.
cl_npids() {
    local re=$1
    shift
    cat "$@" 2>/dev/null | grep -E "$re" | grep -oE 'pid [0-9]+' | sort -u | wc -l
}

# cl_wait_npids N TIMEOUT_S REGEX FILE...: waits until N workers wrote a line matching REGEX.
# The bound is in seconds of the clock, not in rounds (a round spawns 5 processes: slow on a
# busy machine).
cl_wait_npids() {
    local n=$1 limit=$2 end
    shift 2
    end=$((${EPOCHREALTIME//[.,]/} + limit * 1000000))
    while :; do
        [ "$(cl_npids "$@")" -ge "$n" ] && return 0
        [ "${EPOCHREALTIME//[.,]/}" -lt "$end" ] || return 1
        sleep 0.05
    done
}

# cl_count FILE REGEX: lines of FILE matching REGEX.
cl_count() {
    grep -cE "$2" "$1" 2>/dev/null || true
}

# cl_show_logs: every pod's log, for a failed run.
cl_show_logs() {
    local f
    for f in "$CL_LOGS"/*.log; do
        [ -e "$f" ] || continue
        echo "---- $f"
        tail -n 40 "$f"
    done
    echo "---- WARN lines of $CL_LOGS/*.dbg"
    cat "$CL_LOGS"/*.dbg 2>/dev/null | grep -F ' WARN ' | tail -n 30
}

# cl_check_net_between_pods POD: the POD's ranks (its ECCL log) reached every rank of another pod
# through NET connectors (sockets, over the bridge), none through SHM: what a partition or a
# lost node can cut. The POD's ranks are those its workers joined generation 1 with (the
# library orders a generation's ranks by registration, not by pod: docs/ecclrun.md); call it
# while generation 1 trains, with the pods run with ECCL_DEBUG=INFO.
cl_check_net_between_pods() {
    local logs=("$CL_LOGS/$1".*.dbg) mine net shm
    mine=$(grep -hE 'gen 1: joined: rank [0-9]+ of' "$CL_LOGS/$1.log" | sed -E 's/.*joined: rank ([0-9]+) of.*/\1/' |
        sort -un | paste -sd '|')
    [ -n "$mine" ] || { cl_say "pod $1: no worker of it joined generation 1"; return 1; }
    net=$(cat "${logs[@]}" 2>/dev/null | grep -E "Channel [0-9]+ : ($mine) (->|<-) [0-9]+ via NET" |
        grep -cvE "(->|<-) ($mine) via")
    shm=$(cat "${logs[@]}" 2>/dev/null | grep -E "Channel [0-9]+ : ($mine) (->|<-) [0-9]+ via SHM" |
        grep -cvE "(->|<-) ($mine) via")
    cl_say "pod $1 (ranks ${mine//|/, } of generation 1): $net NET and $shm SHM connectors to ranks of other pods"
    [ "$net" -gt 0 ] && [ "$shm" = 0 ]
}

# ---- the job every test runs: pods a, b, c of 2 workers each ----

# cl_job_begin STEPS: the common start: cl_preflight, the bridge, etcd, and the failure-free run
# of STEPS steps of elastic_train (`--reference`), whose checksum goes to cl_ref_sum.
cl_job_begin() {
    local steps=$1 ref
    cl_preflight
    cl_net_up
    cl_etcd_start
    cl_say "etcd (pid $cl_etcd_pid) at $(cl_etcd_url)"
    ref=$("$CL_BUILD/examples/elastic_train" --reference --steps "$steps") || cl_die "elastic_train --reference failed"
    cl_ref_sum=${ref##* }
    cl_say "failure-free run of $steps steps: checksum $cl_ref_sum"
}

# cl_job_start MODE STEPS STEP_MS: pods a, b, c (node ranks 0-2, hosts .10-.12), each an ecclrun
# of 2 workers of elastic_train (STEPS steps of STEP_MS) in elastic mode MODE; their arguments
# stay in cl_pod_args (for a replacement pod). Returns once the 6 ranks formed generation 1.
cl_job_start() {
    cl_pod_args=(--nnodes 2:3 --nproc-per-node 2 --max-restarts 0 --elastic-mode "$1" --
        "$CL_BUILD/examples/elastic_train" --steps "$2" --step-ms "$3")
    cl_pod_start a 0 10 "${cl_pod_args[@]}"
    cl_pod_start b 1 11 "${cl_pod_args[@]}"
    cl_pod_start c 2 12 "${cl_pod_args[@]}"
    cl_wait_npids 6 15 'gen 1: joined: rank [0-9]+ of 6' "$CL_LOGS"/{a,b,c}.log ||
        cl_die "the 6 ranks did not form the first generation within 15 s"
    cl_say "first generation: 6 ranks"
}

# cl_job_wait POD...: waits for each pod's ecclrun to exit (45 s each), says how they exited,
# and puts their logs together into cl_all ($CL_LOGS/all.log).
cl_job_wait() {
    local p summary=
    for p in "$@"; do
        cl_pod_wait "$p" 45 || cl_say "pod $p: ecclrun did not exit within 45 s"
    done
    for p in "$@"; do
        summary+="${summary:+, }$p exit ${cl_pod_rc[$p]}"
    done
    cl_say "pods done: $summary"
    cl_all="$CL_LOGS/all.log"
    for p in "$@"; do
        cat "$CL_LOGS/$p.log"
    done >"$cl_all"
}

# cl_job_check_equal STEPS: no rank's parameters differ, and rank 0 found them EQUAL to the
# failure-free run of cl_job_begin (in cl_all).
cl_job_check_equal() {
    cl_check "no rank's parameters differ" test "$(cl_count "$cl_all" DIFFERENT)" = 0
    cl_check "rank 0 found the final parameters EQUAL to the failure-free run" \
        grep -qE "done: $1 steps, checksum $cl_ref_sum, failure-free run $cl_ref_sum: EQUAL" "$cl_all"
}

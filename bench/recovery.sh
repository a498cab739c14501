#!/usr/bin/env bash
# recovery.sh - recovery time after a rank dies (issue 5): the time from the SIGKILL of one rank
# to the first AllReduce that completes in the new generation, median and max over RUNS runs, for
# eccl (examples/elastic_train on host memory) in shrink and replace mode, on the embedded store
# and on etcd, side by side with torchrun restarting a gloo worker group that does the same
# AllReduce loop (bench/recovery_torch_worker.py, Debian's python3-torch), on this machine.
# docs/bench-recovery.md explains the method and holds measured results.
#
#   bench/recovery.sh                 10 runs of each case, 4 and 8 ranks (about 8 minutes on 2 cores)
#   QUICK=1 bench/recovery.sh         3 runs, 4 ranks only
#   RUNS=20 SIZES="8" STORES=etcd MODES="shrink replace bare" TORCH=0 bench/recovery.sh
#
# Variables: RUNS, SIZES (rank counts), STORES (embedded etcd), MODES (shrink replace, and bare:
# shrink with the workers started without a launcher, so that nobody evicts the dead member and
# the survivors wait for its lease to expire), TORCH (0: no torchrun column), TORCH_PYTHON (the
# interpreter that has torch, default /usr/bin/python3), TORCH_INSTALL (0: do not apt-get install
# python3-torch when it is missing), STEP_MS, KILL_STEP, KILL_RANK, RUN_TIMEOUT (seconds per run),
# KEEP=1 (keep every run's logs; failed runs' logs are always kept), BUILD (default build), ETCD
# (the etcd binary, default /usr/bin/etcd).
#
# Every process this script starts (etcd, the embedded store, launchers, workers) runs on loopback
# and is stopped by pid (each run in the process group its `timeout` leads) when the script ends.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-3}
    SIZES=${SIZES:-4}
else
    RUNS=${RUNS:-10}
    SIZES=${SIZES:-4 8}
fi
STORES=${STORES:-embedded etcd}
MODES=${MODES:-shrink replace}
TORCH=${TORCH:-1}
TORCH_PYTHON=${TORCH_PYTHON:-/usr/bin/python3}
TORCH_INSTALL=${TORCH_INSTALL:-1}
STEP_MS=${STEP_MS:-5}
KILL_STEP=${KILL_STEP:-80}
KILL_RANK=${KILL_RANK:-2}
STEPS=$((KILL_STEP + 60)) # eccl: steps after the kill (the killed step is redone)
AFTER=20                  # torchrun: steps of the restarted group
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
KEEP=${KEEP:-0}
ETCD=${ETCD:-/usr/bin/etcd}

for f in "$BUILD"/bin/{ecclrun,eccl-store} "$BUILD/examples/elastic_train" "$BUILD/lib/libeccl.so"; do
    [ -e "$f" ] || { echo "recovery: $f is missing: run make first" >&2; exit 2; }
done
for v in RUNS STEP_MS KILL_STEP KILL_RANK RUN_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "recovery: $v='${!v}' is not a number" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] || { echo "recovery: RUNS must be at least 1" >&2; exit 2; }
for n in $SIZES; do
    { [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 2 ]; } || { echo "recovery: SIZES: '$n' is not a rank count >= 2" >&2; exit 2; }
    [ "$KILL_RANK" -lt "$n" ] || { echo "recovery: KILL_RANK $KILL_RANK is not a rank of $n" >&2; exit 2; }
done
for s in $STORES; do
    case $s in embedded | etcd) ;; *) echo "recovery: STORES: unknown store '$s'" >&2; exit 2 ;; esac
done
for m in $MODES; do
    case $m in shrink | replace | bare) ;; *) echo "recovery: MODES: unknown mode '$m'" >&2; exit 2 ;; esac
done

work=$(mktemp -d /tmp/eccl-recovery.XXXXXX)
etcd_pid=
etcd_dir=
store_pid=
run_pids=() # `timeout` of each process of the current run: each leads its own process group
keep_work=$KEEP

# shellcheck disable=SC2317 # stop_run and cleanup run from the traps
stop_run() {
    local p
    for p in "${run_pids[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null
    done
    for p in "${run_pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    run_pids=()
}
# shellcheck disable=SC2317
cleanup() {
    stop_run
    for p in $store_pid $etcd_pid; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    [ -n "$etcd_dir" ] && rm -rf "$etcd_dir"
    if [ "$keep_work" = 1 ]; then
        echo "recovery: logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The binaries are copied, so that a rebuild of $BUILD during the run changes nothing.
snap=$work/snap
mkdir -p "$snap/bin" "$snap/examples" "$snap/lib"
cp "$BUILD/bin/ecclrun" "$BUILD/bin/eccl-store" "$snap/bin/"
cp "$BUILD/examples/elastic_train" "$snap/examples/"
cp "$BUILD/lib/libeccl.so" "$snap/lib/"
ecclrun=$snap/bin/ecclrun
train=$snap/examples/elastic_train
export ECCL_SOCKET_IFNAME=lo ECCL_DEVICE=host

# ---- stores ------------------------------------------------------------------------------------
declare -A store_url
need_embedded=0
for s in $STORES; do [ "$s" = embedded ] && need_embedded=1; done
if [ "$need_embedded" = 1 ]; then
    port=$(free_port)
    "$snap/bin/eccl-store" serve --listen "127.0.0.1:$port" >"$work/store.log" 2>&1 &
    store_pid=$!
    for _ in $(seq 100); do
        "$snap/bin/eccl-store" --url "tcp://127.0.0.1:$port/probe" --timeout 500 put k v >/dev/null 2>&1 && break
        sleep 0.1
    done
    if "$snap/bin/eccl-store" --url "tcp://127.0.0.1:$port/probe" --timeout 500 get k >/dev/null 2>&1; then
        store_url[embedded]="tcp://127.0.0.1:$port/bench"
    else
        echo "recovery: the embedded store did not start:" >&2
        cat "$work/store.log" >&2
        exit 1
    fi
fi
for s in $STORES; do
    [ "$s" = etcd ] || continue
    if [ ! -x "$ETCD" ]; then
        echo "recovery: $ETCD is missing (apt-get install etcd-server): etcd rows skipped" >&2
        continue
    fi
    base=/tmp
    [ -w /dev/shm ] && base=/dev/shm
    etcd_dir=$(mktemp -d "$base/eccl-recovery-etcd.XXXXXX")
    cport=$(free_port)
    pport=$(free_port)
    "$ETCD" --name bench --data-dir "$etcd_dir/data" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "bench=http://127.0.0.1:$pport" --log-level error >"$work/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 150); do
        "$snap/bin/eccl-store" --url "etcd://127.0.0.1:$cport/probe" --timeout 1000 put k v >/dev/null 2>&1 && break
        sleep 0.1
    done
    if "$snap/bin/eccl-store" --url "etcd://127.0.0.1:$cport/probe" --timeout 1000 get k >/dev/null 2>&1; then
        store_url[etcd]="etcd://127.0.0.1:$cport/bench"
    else
        echo "recovery: etcd did not start: etcd rows skipped" >&2
        cat "$work/etcd.log" >&2
    fi
done

# ---- torch ----------------------------------------------------------------------------------------
torch_why=
if [ "$TORCH" != 1 ]; then
    torch_why="TORCH=$TORCH"
elif ! "$TORCH_PYTHON" -c 'import torch.distributed as d; assert d.is_gloo_available()' 2>/dev/null; then
    if [ "$TORCH_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "recovery: torch is missing for $TORCH_PYTHON: apt-get install python3-torch ..." >&2
        if ! apt-cache show python3-torch >/dev/null 2>&1; then
            apt-get update -qq >"$work/apt.log" 2>&1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch >>"$work/apt.log" 2>&1 ||
            torch_why="apt-get install python3-torch failed: $(tail -n 2 "$work/apt.log" | tr '\n' ' ')"
    else
        torch_why="$TORCH_PYTHON cannot import torch with gloo, and TORCH_INSTALL=$TORCH_INSTALL, uid $(id -u)"
    fi
    if [ -z "$torch_why" ] && ! "$TORCH_PYTHON" -c 'import torch.distributed as d; assert d.is_gloo_available()' 2>"$work/torch-import.err"; then
        torch_why="$TORCH_PYTHON still cannot import torch with gloo: $(tail -n 1 "$work/torch-import.err")"
    fi
fi
torch_version=
if [ -n "$torch_why" ]; then
    echo "recovery: torchrun column skipped: $torch_why" >&2
else
    torch_version=$("$TORCH_PYTHON" -c 'import torch, sys; print("torch %s, Python %d.%d" % (torch.__version__, *sys.version_info[:2]))')
fi

# ---- one run -----------------------------------------------------------------------------------
# Each run prints one line into $work/results: KIND MODE STORE N STATUS MS EXTRA...
#   STATUS ok, or FAIL (the run's logs are kept and the reason follows).

# Starts "$@" under timeout in its own process group, output to $1.
start() {
    local log=$1
    shift
    timeout -k 10 "$RUN_TIMEOUT" "$@" >"$log" 2>&1 &
    run_pids+=($!)
}

# Waits for the run's processes; sets rcs to their exit codes, each followed by a space.
wait_run() {
    local p
    rcs=
    for p in "${run_pids[@]}"; do
        wait "$p" 2>/dev/null # no "Killed" notice for the rank that SIGKILLs itself
        rcs+="$? "
    done
    run_pids=()
}

# eccl: kill -> first step after recovery, from the timeline lines of examples/elastic_train.
eccl_run() { # mode store n i
    local mode=$1 store=$2 n=$3 i=$4
    local dir=$work/runs/eccl-$mode-$store-$n-$i
    local job=rb-$mode-$n-$i-$$-$RANDOM
    local url=${store_url[$store]}
    local args=(--steps "$STEPS" --step-ms "$STEP_MS" --kill-rank "$KILL_RANK" --kill-step "$KILL_STEP")
    mkdir -p "$dir"
    export ELASTIC_TRAIN_T0
    ELASTIC_TRAIN_T0=$(date +%s.%N)
    case $mode in
    replace)
        start "$dir/w0.log" "$ecclrun" --nnodes 1 --nproc-per-node "$n" --rdzv-endpoint "$url" \
            --rdzv-id "$job" --max-restarts 1 --elastic-mode replace -- "$train" "${args[@]}"
        ;;
    shrink) # one ecclrun per rank, as N one-GPU nodes: --nnodes N-1:N lets the job shrink
        for r in $(seq 0 $((n - 1))); do
            start "$dir/w$r.log" "$ecclrun" --nnodes "$((n - 1)):$n" --nproc-per-node 1 --node-rank "$r" \
                --rdzv-endpoint "$url" --rdzv-id "$job" --max-restarts 0 --elastic-mode shrink -- \
                "$train" "${args[@]}"
        done
        ;;
    bare) # shrink, the workers started directly: no launcher evicts the dead member
        for r in $(seq 0 $((n - 1))); do
            start "$dir/w$r.log" env RANK="$r" ECCL_ELASTIC_STORE="$url" ECCL_ELASTIC_JOB_ID="$job" \
                ECCL_ELASTIC_MIN_RANKS="$((n - 1))" ECCL_ELASTIC_MAX_RANKS="$n" ECCL_ELASTIC_MODE=shrink \
                "$train" "${args[@]}"
        done
        ;;
    esac
    local rcs
    wait_run
    # Expected exit codes: replace: ecclrun 0 (the replaced slot's last worker succeeded);
    # shrink/bare: 137 for the killed rank's process, 0 for the others.
    local want="0 "
    if [ "$mode" != replace ]; then
        want=
        for r in $(seq 0 $((n - 1))); do
            if [ "$r" = "$KILL_RANK" ]; then want+="137 "; else want+="0 "; fi
        done
    fi
    local size=$n
    [ "$mode" = replace ] || size=$((n - 1))
    cat "$dir"/w*.log >"$dir/all.log"
    local verdict
    verdict=$(awk -v n="$n" -v size="$size" -v mode="$mode" '
        function t(line) { sub(/^\[\+ */, "", line); sub(/ s\].*/, "", line); return line + 0 }
        function fail(why) { print "FAIL " why; failed = 1; exit }
        function after(word,   f, g) { # the field after `word`, without a trailing comma
            for (f = 1; f < NF; f++)
                if ($f == word) { g = $(f + 1); sub(/,$/, "", g); return g }
            return ""
        }
        /^\[\+.*SIGKILL myself/ { kill = t($0); nkill++; grank = after("rank") }
        /^\[\+.*joined: rank .* of / { if (!seen_join++) first_size = after("of") }
        /^\[\+.*\(replacement\)/ { repl++ }
        /^\[\+.*first step after recovery done/ { v = t($0); if (first == "" || v < first) first = v }
        /^\[\+.*recovered in/ { nrec++; if (after("of") != size) badsize = after("of") }
        /recovery failed|state sync failed|join failed/ { bad = bad "[" $0 "] " }
        /EQUAL/ { equal++ }
        /DIFFERENT/ { diff++ }
        END {
            if (nkill != 1) fail("no single SIGKILL line (" nkill + 0 ")")
            if (first_size != n) fail("the first generation had " first_size " ranks, not " n)
            if (bad != "") fail(bad)
            if (first == "") fail("no first step after recovery (" nrec + 0 " recovered lines)")
            if (badsize != "") fail("recovered with " badsize " ranks, not " size)
            if (mode == "replace" && repl == 0) fail("no replacement joined")
            if (diff > 0 || equal == 0) fail("final parameters not EQUAL to the failure-free run")
            if (!failed)
                printf "ok %.1f killed-generation-rank %d\n", (first - kill) * 1000, grank
        }' "$dir/all.log")
    if [ "${verdict%% *}" = ok ] && [ "$rcs" != "$want" ]; then
        verdict="FAIL exit codes $rcs(expected $want)"
    fi
    echo "eccl $mode $store $n $verdict" >>"$work/results"
    if [ "${verdict%% *}" != ok ]; then
        keep_work=1
        echo "recovery: eccl $mode $store $n run $i: $verdict (logs: $dir)" >&2
    elif [ "$KEEP" != 1 ]; then
        rm -rf "$dir"
    fi
    echo "  eccl     $mode/$store n=$n run $i: $verdict" >&2
}

# torchrun: kill -> first all_reduce completed by the restarted group.
torch_run() { # n i
    local n=$1 i=$2
    local dir=$work/runs/torch-$n-$i
    mkdir -p "$dir/logs"
    local port
    port=$(free_port)
    # Debian's torch 1.13 on Python 3.11 cannot parse its own default --redirects/--tee values:
    # -r 1 (workers' stdout to files under --log_dir), -t 2 (stderr also to the console).
    start "$dir/torchrun.log" "$TORCH_PYTHON" -m torch.distributed.run --nnodes 1 --nproc_per_node "$n" \
        --rdzv_backend c10d --rdzv_endpoint "127.0.0.1:$port" --rdzv_id "rb$i" --max_restarts 1 \
        --monitor_interval 0.1 -r 1 -t 2 --log_dir "$dir/logs" \
        bench/recovery_torch_worker.py --timeline "$dir/timeline.log" --steps "$STEPS" --step-ms "$STEP_MS" \
        --kill-rank "$KILL_RANK" --kill-step "$KILL_STEP" --after "$AFTER"
    local rcs
    wait_run
    rcs=${rcs% }
    local verdict
    verdict=$(awk -v n="$n" '
        /SIGKILL myself/ { kill = $2; nkill++ }
        / attempt [1-9].*: started/ { if (spawn == "" || $2 < spawn) spawn = $2 }
        / attempt [1-9].*: first all_reduce of the restarted group done/ { nfirst++; if (first == "" || $2 < first) first = $2 }
        /WRONG|all_reduce failed/ && / attempt [1-9]/ { bad = bad " [" $0 "]" }
        END {
            if (nkill != 1) { print "FAIL no SIGKILL line (" nkill + 0 ")"; exit }
            if (bad != "") { print "FAIL" bad; exit }
            if (nfirst != n) { print "FAIL " nfirst + 0 " of " n " restarted workers completed an all_reduce"; exit }
            printf "ok %.1f %.1f\n", (first - kill) * 1000, (spawn - kill) * 1000
        }' "$dir/timeline.log" 2>/dev/null || echo "FAIL no timeline")
    [ -n "$verdict" ] || verdict="FAIL no timeline"
    if [ "${verdict%% *}" = ok ] && [ "$rcs" != 0 ]; then
        verdict="FAIL torchrun exited $rcs"
    fi
    echo "torch restart torch $n $verdict" >>"$work/results"
    if [ "${verdict%% *}" != ok ]; then
        keep_work=1
        echo "recovery: torchrun n=$n run $i: $verdict (logs: $dir)" >&2
    elif [ "$KEEP" != 1 ]; then
        rm -rf "$dir"
    fi
    echo "  torchrun restart n=$n run $i: $verdict" >&2
}

# ---- the runs: interleaved, so that a slow spell of the machine hits every case alike ----------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "recovery: $RUNS runs each; ranks: $SIZES; modes: $MODES; stores: ${!store_url[*]}; torchrun: ${torch_version:-skipped}" >&2
echo "recovery: machine $(uname -n): $(nproc) cores ($cpu)" >&2
: >"$work/results"
load_begin=$(cut -d' ' -f1-3 /proc/loadavg)
t_begin=$(date +%s)
for i in $(seq "$RUNS"); do
    for n in $SIZES; do
        for store in $STORES; do
            [ -n "${store_url[$store]:-}" ] || continue
            for mode in $MODES; do
                eccl_run "$mode" "$store" "$n" "$i"
            done
        done
        [ -z "$torch_why" ] && torch_run "$n" "$i"
    done
done
t_total=$(($(date +%s) - t_begin))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the table ---------------------------------------------------------------------------------
stats() { # kind mode store n field -> "count fails median max"
    awk -v k="$1" -v m="$2" -v s="$3" -v n="$4" -v f="$5" '
        $1 == k && $2 == m && $3 == s && $4 == n { if ($5 == "ok") v[++c] = $f + 0; else fails++ }
        END {
            for (a = 2; a <= c; a++) { x = v[a]; for (b = a - 1; b >= 1 && v[b] > x; b--) v[b + 1] = v[b]; v[b + 1] = x }
            if (c == 0) { printf "0 %d - -\n", fails; exit }
            med = (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
            printf "%d %d %.1f %.1f\n", c, fails, med, v[c]
        }' "$work/results"
}

echo
echo "Recovery: SIGKILL of the worker started as RANK $KILL_RANK, at step $KILL_STEP ->"
echo "first AllReduce completed in the new generation (ms)"
echo "machine: $(uname -n), $(nproc) cores ($cpu); ${torch_version:+torchrun: $torch_version; }$RUNS runs per case, $t_total s in all"
echo "load average (1, 5, 15 min): $load_begin at the start, $load_end at the end"
oversub=
for n in $SIZES; do [ "$n" -gt "$(nproc)" ] && oversub+="$n "; done
[ -n "$oversub" ] && echo "note: ${oversub}ranks oversubscribe the $(nproc) cores"
echo
printf "%-5s %-8s %-8s %4s %4s %10s %10s %12s %12s\n" ranks mode store ok fail "median" "max" "torchrun med" "ratio"
declare -A torch_med
for n in $SIZES; do
    read -r c f med max <<<"$(stats torch restart torch "$n" 6)"
    torch_med[$n]=$med
done
declare -A eccl_med
for n in $SIZES; do
    for store in $STORES; do
        [ -n "${store_url[$store]:-}" ] || continue
        for mode in $MODES; do
            read -r c f med max <<<"$(stats eccl "$mode" "$store" "$n" 6)"
            eccl_med[$mode/$store/$n]=$med
            tm=${torch_med[$n]:--}
            ratio=-
            if [ "$med" != - ] && [ "$tm" != - ]; then
                ratio=$(awk -v a="$tm" -v b="$med" 'BEGIN { if (b > 0) printf "%.0fx", a / b; else print "-" }')
            fi
            printf "%-5s %-8s %-8s %4s %4s %10s %10s %12s %12s\n" "$n" "$mode" "$store" "$c" "$f" "$med" "$max" "$tm" "$ratio"
        done
    done
done
if [ -z "$torch_why" ]; then
    echo
    echo "torchrun (c10d rendezvous, gloo; restarts the whole worker group: it has no shrink mode):"
    printf "%-5s %4s %4s %10s %10s %24s\n" ranks ok fail median max "kill -> new workers start"
    for n in $SIZES; do
        read -r c f med max <<<"$(stats torch restart torch "$n" 6)"
        read -r _ _ smed _ <<<"$(stats torch restart torch "$n" 7)"
        printf "%-5s %4s %4s %10s %10s %24s\n" "$n" "$c" "$f" "$med" "$max" "$smed"
    done
else
    echo
    echo "torchrun: skipped ($torch_why)"
fi

# The issue's targets: 8 ranks on etcd.
if [[ " $SIZES " == *" 8 "* ]] && [ -n "${store_url[etcd]:-}" ] && [[ " $MODES " =~ \ (shrink|replace)\  ]]; then
    echo
    echo "targets (8 ranks, etcd):"
    for t in "shrink 200" "replace 500"; do
        read -r mode limit <<<"$t"
        [[ " $MODES " == *" $mode "* ]] || continue
        med=${eccl_med[$mode/etcd/8]:--}
        verdict="NOT MET"
        [ "$med" != - ] && awk -v a="$med" -v b="$limit" 'BEGIN { exit !(a <= b) }' && verdict=met
        line="  $mode median $med ms <= $limit ms: $verdict"
        tm=${torch_med[8]:--}
        if [ "$tm" != - ] && [ "$med" != - ]; then
            r=$(awk -v a="$tm" -v b="$med" 'BEGIN { printf "%.0f", a / b }')
            v2="NOT MET"
            [ "$r" -ge 20 ] && v2=met
            line+="; torchrun/eccl $r x >= 20 x: $v2"
        fi
        echo "$line"
    done
fi
if grep -qv ' ok ' "$work/results"; then
    echo
    echo "failed runs:"
    grep -v ' ok ' "$work/results" | sed 's/^/  /'
    exit 1
fi
exit 0

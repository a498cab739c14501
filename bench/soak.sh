#!/usr/bin/env bash
# soak.sh - the elastic demo under repeated failures for a chosen time (docs/hardening.md):
# ecclrun runs NPROC (8) ranks of examples/elastic_train (host communicators, replace mode) on an
# etcd this script starts on loopback; every 20 to 60 s (KILL_MIN..KILL_MAX) a random worker is
# SIGKILLed, or SIGSTOPped and SIGKILLed once its lease has expired (STOP_PERCENT of the faults;
# the survivors presume it dead after its lease), and ecclrun starts a replacement; etcd is
# SIGKILLed and restarted (same data) once, half-way. Every SAMPLE seconds the RSS and open fds
# of ecclrun and of each worker are sampled. At the end: steps done, faults injected, recoveries,
# recovery time (min/median/p90/max over generations, the slowest rank of each), RSS and fd
# counts over time and whether they grew, and whether the final parameters equal a failure-free
# run of the same steps (elastic_train checks it bit for bit).
#
#   SOAK_SECONDS=300 bench/soak.sh        (default 1800)
#   BUILD=build NPROC=8 STEP_MS=20 KILL_MIN=20 KILL_MAX=60 STOP_PERCENT=30 SAMPLE=10 SEED=1
#
# Everything it starts runs on 127.0.0.1 and is stopped by pid at the end. Exit 0 when the run
# finished with equal parameters.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SOAK_SECONDS=${SOAK_SECONDS:-1800}
NPROC=${NPROC:-8}
STEP_MS=${STEP_MS:-20}
KILL_MIN=${KILL_MIN:-20}
KILL_MAX=${KILL_MAX:-60}
STOP_PERCENT=${STOP_PERCENT:-30}
SAMPLE=${SAMPLE:-10}
SEED=${SEED:-$$}
LEASE_MS=${ECCL_ELASTIC_LEASE_MS:-2000}
RANDOM=$SEED
for f in "$BUILD/bin/ecclrun" "$BUILD/examples/elastic_train"; do
    [ -x "$f" ] || { echo "soak: $f is missing: run make first" >&2; exit 2; }
done
command -v etcd >/dev/null || { echo "soak: needs etcd (apt-get install etcd-server)" >&2; exit 2; }

work=$(mktemp -d /tmp/eccl-soak.XXXXXX)
etcd_pid='' run_pid=''
cleanup() {
    set +e
    if [ -n "$run_pid" ]; then kill -KILL "$run_pid" 2>/dev/null; wait "$run_pid" 2>/dev/null; fi
    for p in $(pgrep -f "$work/marker"); do kill -KILL "$p" 2>/dev/null; done
    if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid" 2>/dev/null; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "soak: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
cport=$(free_port)
pport=$(free_port)
start_etcd() {
    etcd --name soak --data-dir "$work/etcd" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "soak=http://127.0.0.1:$pport" >>"$work/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$cport/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "soak: etcd did not start:" >&2
    cat "$work/etcd.log" >&2
    exit 1
}
start_etcd

# Enough steps for the whole time at full speed; the run ends when the workers are done.
steps=$((SOAK_SECONDS * 1000 / STEP_MS))
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo} ECCL_DEVICE=host
echo "soak: $NPROC ranks, $steps steps of ${STEP_MS} ms, faults every ${KILL_MIN}-${KILL_MAX} s for ${SOAK_SECONDS} s (seed $SEED), etcd 127.0.0.1:$cport restarted once"
"$BUILD/examples/elastic_train" --reference --steps "$steps" | tail -n 1
# A marker argument lets this script find exactly its own workers (never another job's).
ln -s "$(pwd)/$BUILD/examples/elastic_train" "$work/marker"
t0=$(date +%s)
export ELASTIC_TRAIN_T0
ELASTIC_TRAIN_T0=$(date +%s.%N)
"$BUILD/bin/ecclrun" --nnodes 1 --nproc-per-node "$NPROC" --rdzv-id soak --max-restarts 1000 \
    --elastic-mode replace --rdzv-endpoint "etcd://127.0.0.1:$cport/eccl-soak" -- \
    "$work/marker" --steps "$steps" --step-ms "$STEP_MS" >"$work/run.log" 2>&1 &
run_pid=$!

workers() { pgrep -P "$run_pid" 2>/dev/null || true; }
sample() { # t role pid
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$3/status" 2>/dev/null) || return 0
    fds=$(find "/proc/$3/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$1 $2 $3 $rss $fds" >>"$work/samples"
}
kills=0 stops=0 etcd_restarted=0 first_fault=''
next_fault=$((t0 + KILL_MIN + RANDOM % (KILL_MAX - KILL_MIN + 1)))
next_sample=$t0
while kill -0 "$run_pid" 2>/dev/null; do
    now=$(date +%s)
    el=$((now - t0))
    if [ "$now" -ge "$next_sample" ]; then
        sample "$el" agent "$run_pid"
        for w in $(workers); do sample "$el" worker "$w"; done
        next_sample=$((now + SAMPLE))
    fi
    if [ "$el" -lt "$SOAK_SECONDS" ] && [ "$now" -ge "$next_fault" ]; then
        mapfile -t ws < <(workers)
        [ -n "$first_fault" ] || first_fault=$el
        if [ ${#ws[@]} -gt 0 ]; then
            victim=${ws[RANDOM % ${#ws[@]}]}
            if [ $((RANDOM % 100)) -lt "$STOP_PERCENT" ]; then
                echo "soak: +${el} s SIGSTOP worker $victim (SIGKILL after its lease)" | tee -a "$work/faults"
                kill -STOP "$victim" 2>/dev/null || true
                sleep "$(awk -v l="$LEASE_MS" 'BEGIN { printf "%.1f", l / 1000 + 2 }')"
                kill -KILL "$victim" 2>/dev/null || true
                stops=$((stops + 1))
            else
                echo "soak: +${el} s SIGKILL worker $victim" | tee -a "$work/faults"
                kill -KILL "$victim" 2>/dev/null || true
                kills=$((kills + 1))
            fi
        fi
        next_fault=$(($(date +%s) + KILL_MIN + RANDOM % (KILL_MAX - KILL_MIN + 1)))
    fi
    if [ "$etcd_restarted" = 0 ] && [ "$el" -ge $((SOAK_SECONDS / 2)) ]; then
        echo "soak: +${el} s SIGKILL etcd, restart in 1 s" | tee -a "$work/faults"
        kill -KILL "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
        sleep 1
        start_etcd
        etcd_restarted=1
    fi
    # The run ends by itself when the steps are done; past 3x the time, something is stuck.
    if [ "$el" -gt $((SOAK_SECONDS * 3 + 120)) ]; then
        echo "soak: the run did not end within $((SOAK_SECONDS * 3 + 120)) s: stopping it" >&2
        kill -TERM "$run_pid" 2>/dev/null || true
        sleep 10
        break
    fi
    sleep 1
done
rc=0
wait "$run_pid" || rc=$?
run_pid=
elapsed=$(($(date +%s) - t0))

echo
echo "soak: ran ${elapsed} s, ecclrun exited $rc"
echo "faults: $kills SIGKILL, $stops SIGSTOP, etcd restarted $etcd_restarted time(s)"
done_line=$(grep -E 'done: [0-9]+ steps' "$work/run.log" | tail -n 1 || true)
echo "steps: ${done_line:-no worker finished}"
# Recoveries: per new generation, the slowest rank's "recovered in X ms".
grep -oE 'recovered in [0-9.]+ ms: generation [0-9]+' "$work/run.log" |
    awk '{ g = $6; if ($3 > m[g]) m[g] = $3 } END { for (g in m) print m[g] }' | sort -n >"$work/rec" || true
nrec=$(wc -l <"$work/rec")
if [ "$nrec" -gt 0 ]; then
    awk '{ v[NR] = $1 } END {
        i50 = int((NR + 1) / 2); i90 = int(NR * 0.9 + 0.999); if (i90 < 1) i90 = 1
        printf "recoveries: %d generations; recovery time (slowest rank) min %.1f ms, median %.1f, p90 %.1f, max %.1f\n", NR, v[1], v[i50], v[i90], v[NR]
    }' "$work/rec"
else
    echo "recoveries: none"
fi
failed_rec=$(grep -c 'recovery failed' "$work/run.log" || true)
echo "recovery failures: $failed_rec (a worker whose recovery failed exits; ecclrun replaces it)"
if [ -s "$work/samples" ]; then
    # The first sample (+0 s) is the start-up: growth is measured from the second one.
    echo "resources (RSS KiB, open fds), from the sample at +${SAMPLE} s on:"
    awk -v w="$SAMPLE" '$1 >= w && $2 == "agent" { if (!n++) { r0 = $4; f0 = $5; t0 = $1 } r1 = $4; f1 = $5; t1 = $1 }
        END { printf "  ecclrun: RSS %d -> %d KiB, fds %d -> %d (+%d s .. +%d s)\n", r0, r1, f0, f1, t0, t1 }' "$work/samples"
    # Workers: the longest-lived one (most samples), first vs last.
    awk -v w="$SAMPLE" '$1 >= w && $2 == "worker" { n[$3]++; if (!($3 in r0)) { r0[$3] = $4; f0[$3] = $5; t0[$3] = $1 } r1[$3] = $4; f1[$3] = $5; t1[$3] = $1 }
        END { best = ""; for (p in n) if (best == "" || n[p] > n[best]) best = p
              if (best != "") printf "  longest-lived worker %s: RSS %d -> %d KiB, fds %d -> %d (+%d s .. +%d s, %d samples)\n", best, r0[best], r1[best], f0[best], f1[best], t0[best], t1[best], n[best] }' "$work/samples"
    awk '$2 == "worker" { s[$1] += $4; f[$1] += $5; c[$1]++ } END { for (t in s) printf "%d %d %d %d\n", t, c[t], s[t] / c[t], f[t] / c[t] }' "$work/samples" |
        sort -n | awk '{ printf "  +%4d s: %d workers, mean RSS %d KiB, mean fds %d\n", $1, $2, $3, $4 }'
    # ecclrun opens its store connections (to evict a dead member) at the first fault: its growth
    # is measured from the sample after it.
    aw=$((${first_fault:-0} + SAMPLE))
    awk -v w="$aw" '$1 >= w && $2 == "agent" { if (!n++) { r0 = $4; f0 = $5; t0 = $1 } r1 = $4; f1 = $5; t1 = $1 }
        END { if (n) printf "  ecclrun after the first fault: RSS %d -> %d KiB, fds %d -> %d (+%d s .. +%d s)\n", r0, r1, f0, f1, t0, t1 }' "$work/samples"
    grow=$(awk -v w="$aw" '$1 >= w && $2 == "agent" { if (!n++) { r0 = $4; f0 = $5 } r1 = $4; f1 = $5 } END { print (f1 > f0 + 2 || r1 > r0 * 1.5 + 4096) ? "yes" : "no" }' "$work/samples")
    # A worker's own first sample may catch it starting: each is measured from its second one.
    wgrow=$(awk '$2 == "worker" { if (++n[$3] == 2) { r0[$3] = $4; f0[$3] = $5 } r1[$3] = $4; f1[$3] = $5 }
        END { g = "no"; for (p in n) if (n[p] >= 3 && (f1[p] > f0[p] + 2 || r1[p] > r0[p] * 1.5 + 4096)) g = "yes (pid " p ")"; print g }' "$work/samples")
    echo "  grew (more than 2 fds or 1.5x+4 MiB RSS; ecclrun after the first fault, each worker from its second sample): ecclrun $grow, workers $wgrow"
fi
ok=1
[ "$rc" = 0 ] || ok=0
echo "$done_line" | grep -q EQUAL || ok=0
grep -q DIFFERENT "$work/run.log" && ok=0
if [ "$ok" = 1 ]; then
    echo "soak: PASSED: the final parameters equal the failure-free run"
else
    echo "soak: FAILED; the last lines of the run:" >&2
    tail -n 40 "$work/run.log" >&2
    KEEP=1
    exit 1
fi

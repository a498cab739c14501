#!/usr/bin/env bash
# demo.sh - eccl's main job (make demo [ETCD=1]): ecclrun starts 4 host ranks of
# examples/elastic_train on the embedded store it hosts (or on a local etcd this script starts
# and stops), one rank SIGKILLs itself mid-run, ecclrun starts a replacement, the survivors and
# the replacement agree a new generation and the run finishes. Prints the timeline and checks
# that the final parameters equal those of a failure-free run of the same steps.
# ECCL_DEVICE=cuda runs the ranks on CUDA communicators (GPU buffers; all ranks may share one
# GPU); the default is host communicators.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
STEPS=${STEPS:-300}
KILL_STEP=${KILL_STEP:-100}
KILL_RANK=${KILL_RANK:-2}
NPROC=${NPROC:-4}
for f in "$BUILD/bin/ecclrun" "$BUILD/examples/elastic_train"; do
    [ -x "$f" ] || { echo "demo: $f is missing: run make first" >&2; exit 2; }
done

work=$(mktemp -d /tmp/eccl-demo.XXXXXX)
etcd_pid=
cleanup() {
    if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

endpoint=()
backend="the embedded store hosted by ecclrun"
if [ "${ETCD:-0}" = 1 ]; then
    command -v etcd >/dev/null || { echo "demo: ETCD=1 needs etcd (apt-get install etcd-server)" >&2; exit 2; }
    cport=$(free_port); pport=$(free_port)
    etcd --name demo --data-dir "$work/etcd" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "demo=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$cport/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$cport/health" >/dev/null || { echo "demo: etcd did not start:" >&2; cat "$work/etcd.log" >&2; exit 1; }
    endpoint=(--rdzv-endpoint "etcd://127.0.0.1:$cport/eccl-demo")
    backend="etcd (pid $etcd_pid, 127.0.0.1:$cport)"
fi

export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo} ECCL_DEVICE=${ECCL_DEVICE:-host}
echo "demo: $NPROC ranks of elastic_train (ECCL_DEVICE=$ECCL_DEVICE), $STEPS steps, rank $KILL_RANK SIGKILLed at step $KILL_STEP, on $backend"
"$BUILD/examples/elastic_train" --reference --steps "$STEPS"
export ELASTIC_TRAIN_T0
ELASTIC_TRAIN_T0=$(date +%s.%N)
set +e
"$BUILD/bin/ecclrun" --nnodes 1 --nproc-per-node "$NPROC" --rdzv-id demo --max-restarts 1 \
    --elastic-mode replace "${endpoint[@]}" -- \
    "$BUILD/examples/elastic_train" --steps "$STEPS" --step-ms 10 \
    --kill-rank "$KILL_RANK" --kill-step "$KILL_STEP" >"$work/run.log" 2>&1
rc=$?
set -e

echo
echo "timeline (all processes):"
# Worker lines carry [+seconds] since ELASTIC_TRAIN_T0; ecclrun's carry +seconds since its start.
grep -E 'SIGKILL|died|restarted|replacement|failure seen|revoked|recovered|first step after|done:' "$work/run.log" |
    sed -E 's/^\[\+ *([0-9.]+) s\] (.*)/\1 \2/; s/^(ecclrun: .* at \+)([0-9.]+)( s.*)/\2 \1\2\3/' |
    sort -s -n -k1,1 | sed -E 's/^([0-9.]+) /  +\1 s  /' || true
echo
ok=1
[ "$rc" = 0 ] || { echo "demo: ecclrun exited $rc" >&2; ok=0; }
grep -q 'SIGKILL myself' "$work/run.log" || { echo "demo: no rank was killed" >&2; ok=0; }
grep -q 'recovered in' "$work/run.log" || { echo "demo: no recovery happened" >&2; ok=0; }
grep -q '(replacement)' "$work/run.log" || { echo "demo: no replacement joined" >&2; ok=0; }
grep -q 'EQUAL' "$work/run.log" || { echo "demo: the final parameters were not checked equal" >&2; ok=0; }
if grep -q 'DIFFERENT' "$work/run.log"; then echo "demo: final parameters differ from the failure-free run" >&2; ok=0; fi
if [ "$ok" = 1 ]; then
    echo "demo: PASSED: a rank died, a replacement joined, the final parameters equal the failure-free run"
else
    echo "demo: FAILED; full log:" >&2
    cat "$work/run.log" >&2
    exit 1
fi

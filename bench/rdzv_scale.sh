#!/usr/bin/env bash
# rdzv_scale.sh - rendezvous at scale: for N simulated members (threads of build/bench/rdzv_scale,
# one store handle each unless K says otherwise), the time to form generation 1 (and to get its
# bootstrap blob), and the time for the N-1 others to agree generation 2 after one member's lease
# is revoked (and to get its blob). Runs against an etcd that this script starts on loopback
# (random free ports, data dir on /dev/shm, killed by pid at the end) and against the embedded
# store (started inside the driver). Prints a table.
#
#   bench/rdzv_scale.sh [N ...]        default: 64 256 1024
#   K=8 bench/rdzv_scale.sh            8 members per store handle
#   BACKENDS="etcd" bench/rdzv_scale.sh
#   ECCL_BUILD=build/other ...         where the driver is built (make BUILD=...)
#   ETCD=/path/to/etcd ...             another etcd binary (default /usr/bin/etcd)
#   ECCL_ELASTIC_LEASE_MS=5000 ...     the members' lease (default 2000 ms; see docs/internals/rdzv.md)
set -u
cd "$(dirname "$0")/.."
build=${ECCL_BUILD:-build}
driver="$build/bench/rdzv_scale"
sizes=${*:-64 256 1024}
per=${K:-1}
backends=${BACKENDS:-etcd embedded}

etcd_bin=${ETCD:-/usr/bin/etcd}
if [ ! -x "$driver" ] || [ -n "$(find bench/rdzv_scale.c elastic store -newer "$driver" 2>/dev/null | head -1)" ]; then
    make --no-print-directory BUILD="$build" "$driver" >/dev/null || exit 1
fi
# Each member holds a few sockets (requests, watch, keepalive) on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

etcd_pid=
etcd_dir=
cleanup() {
    if [ -n "$etcd_pid" ]; then
        kill -9 "$etcd_pid" 2>/dev/null
        wait "$etcd_pid" 2>/dev/null
    fi
    [ -n "$etcd_dir" ] && rm -rf "$etcd_dir"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' \
        2>/dev/null || echo $((20000 + RANDOM % 40000))
}

healthy() {
    if command -v curl >/dev/null; then
        curl -s -m 1 "http://127.0.0.1:$1/health" | grep -q true
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 &&
            timeout 1 cat <&3 | grep -q true) 2>/dev/null
    fi
}

start_etcd() {
    if [ ! -x "$etcd_bin" ]; then
        echo "etcd: $etcd_bin is not installed (apt-get install etcd-server); skipped" >&2
        return 1
    fi
    local base=/tmp
    [ -w /dev/shm ] && base=/dev/shm
    etcd_dir=$(mktemp -d "$base/eccl-etcd-XXXXXX")
    local cport pport
    cport=$(free_port)
    pport=$(free_port)
    "$etcd_bin" --name b --data-dir "$etcd_dir/data" \
        --listen-client-urls "http://127.0.0.1:$cport" \
        --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "b=http://127.0.0.1:$pport" \
        --log-level error >"$etcd_dir/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 150); do
        if healthy "$cport"; then
            etcd_url="etcd://127.0.0.1:$cport"
            return 0
        fi
        sleep 0.1
    done
    echo "etcd did not start; see $etcd_dir/etcd.log" >&2
    return 1
}

rows=()
for backend in $backends; do
    url=embedded
    if [ "$backend" = etcd ]; then
        start_etcd || continue
        url=$etcd_url
    fi
    for n in $sizes; do
        echo "running $backend N=$n K=$per ..." >&2
        if out=$("$driver" "$url" "$n" "$per" 2>"$build/bench/rdzv_scale.err"); then
            rows+=("$out")
        else
            rows+=("$backend $n $per failed failed failed failed")
            tail -n 3 "$build/bench/rdzv_scale.err" | sed 's/^/    /' >&2
        fi
    done
    if [ "$backend" = etcd ]; then
        cleanup
        etcd_pid=
        etcd_dir=
    fi
done

echo
echo "rendezvous at scale on $(nproc) cores; members are threads, $per per store handle;" \
    "lease ${ECCL_ELASTIC_LEASE_MS:-2000} ms; times in ms"
printf '%-9s %6s  %10s %10s  %10s %10s\n' backend N form form+boot next next+boot
for row in "${rows[@]}"; do
    # shellcheck disable=SC2086
    printf '%-9s %6s  %10s %10s  %10s %10s\n' $(echo "$row" | awk '{print $1, $2, $4, $5, $6, $7}')
done

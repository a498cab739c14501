#!/ usr / bin / env bash
#rdzv_scale.sh - \
    rendezvous at scale : for N simulated members(threads of build / bench / rdzv_scale,
#each with its own rendezvous handle, lease and keys, K of them per store handle), the time to
#form generation 1(and to get its bootstrap blob), and the time for the N - 1 others to agree
#generation 2 after one member's lease is revoked (and to get its blob). Runs against an etcd
#that this script starts on loopback(random free ports, data dir on / dev / shm, killed by pid at
#the end) and against the embedded store(started inside the driver).Each size runs REPS times
#(the same etcd, the job's keys deleted in between); the table gives the median and the range.
#
#What K members of one store handle share(bench / rdzv_scale.c says it in full) : the handle's
#connections, its keepalive thread(one keepalive request refreshes the K leases), its watch
#streams(one stream per watched range), and the decoding of a generation record they all
#received.Each member still grants its own lease, writes its own keys and runs the agreement.
#K = 1 is a handle per member, as separate processes have(on 2 cores, 1024 members of K = 1 are
#~3000 threads and as many connections : the leases are then lost under the load).
#
#bench / rdzv_scale.sh[N...] default : 64 256 1024
#K = 1 bench / rdzv_scale.sh members per store handle(default 8)
#REPS = 5 bench / rdzv_scale.sh runs per size(default 3)
#BACKENDS = "etcd" bench / rdzv_scale.sh
#ECCL_BUILD = build / other... where the driver is built(make BUILD = ...)
#ETCD = / path / to / etcd... another etcd binary(default / usr / bin / etcd)
#ECCL_ELASTIC_LEASE_MS = 5000 ... the members' lease (default 2000 ms; see docs/internals/rdzv.md)
set - u cd "$(dirname " $0 ")/.." build =
${ECCL_BUILD : -build} driver = "$build/bench/rdzv_scale" sizes = ${ * : -64 256 1024} per =
${K : -8} reps = ${REPS : -3} backends = ${BACKENDS : -etcd embedded}

etcd_bin = $
{
ETCD:
    - / usr / bin / etcd
}
if
    [!-x "$driver"] ||
        [-n "$(find bench/rdzv_scale.c elastic store -newer " $driver " 2>/dev/null | head -1)"];
then make-- no - print - directory BUILD = "$build"
                                           "$driver" > / dev / null ||
                                           exit 1 fi
#Each member holds a few sockets(requests, watch, keepalive) on each side.
                                                       ulimit -
                                                   n "$(ulimit -Hn)" 2 >
                                               / dev / null ||
                                           true

                                           etcd_pid = etcd_dir = cleanup()
{
    if
        [-n "$etcd_pid"];
    then kill - 9 "$etcd_pid" 2 > / dev / null wait "$etcd_pid" 2 >
            / dev / null fi[-n "$etcd_dir"] &&
        rm - rf "$etcd_dir"
}
trap cleanup EXIT

free_port(){
    python3 -
            c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2 >
        / dev / null ||
    echo $((20000 + RANDOM % 40000))}

healthy()
{
    if command
        -v curl > / dev / null;
    then curl - s - m 1 "http://127.0.0.1:$1/health" |
        grep - q true else(exec 3 < > "/dev/tcp/127.0.0.1/$1" &&
                           printf 'GET /health HTTP/1.0\r\n\r\n' > &3 &&
                           timeout 1 cat < &3 | grep - q true) 2 >
            / dev / null fi
}

start_etcd()
{
    if
        [!-x "$etcd_bin"]; then
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
    for _ in $(seq 150);
    do
        if healthy
            "$cport";
    then etcd_url = "etcd://127.0.0.1:$cport" return 0 fi sleep 0.1 done echo
                    "etcd did not start; see $etcd_dir/etcd.log" > &2 return 1
}

#median and range of the numbers on stdin : "median (min..max)", or "median" for one number
stats()
{
    sort - n | awk '{ v[NR] = $1 } END { if (NR == 0)
    {
        print "-";
        exit
    }
    m = v[int((NR + 1) / 2)] if (NR == 1) print m;
    else printf "%s (%s..%s)\n", m, v[1], v[NR]
}
'
}

rows=()
for backend in $backends;
do
    url = embedded if["$backend" = etcd]; then
        start_etcd || continue
        url=$etcd_url
    fi
    for n in $sizes;
do
        outs=()
        fails=0
        for r in $(seq "$reps");
do
    echo "running $backend N=$n K=$per ($r/$reps) ..." > & 2 if out =
        $("$driver"
          "$url"
          "$n"
          "$per" 2 > "$build/bench/rdzv_scale.err"); then
                outs+=("$out")
            else
                fails=$((fails + 1))
                tail -n 3 "$build/bench/rdzv_scale.err" | sed 's/^/    /' >&2
            fi
        done
        row="$backend|$n|$per|${#outs[@]}/$reps"
        for col in 4 5 6 7;
do
            cell=$(for o in "${outs[@]}"; do echo "$o" | awk -v c=$col '{print $c}'; done | stats)
            row="$row|$cell"
        done
        rows+=("$row")
    done
    if [ "$backend" = etcd ]; then
        cleanup
        etcd_pid=
        etcd_dir=
    fi
done

echo
echo "rendezvous at scale on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 |
    sed 's/^ *//'));
members are threads, $per per store handle;
lease ${ECCL_ELASTIC_LEASE_MS : -2000} ms;" \
    "times in ms, median (min..max) of the runs that passed"
printf '%-9s %5s %3s %5s  %-18s %-18s %-18s %-18s\n' backend N K ok form form+boot next next+boot
for row in "${rows[@]}";
do
IFS = '|' read - r b n k ok f fb x xb < < <
      "$row" printf '%-9s %5s %3s %5s  %-18s %-18s %-18s %-18s\n' "$b"
                                                                  "$n"
                                                                  "$k"
                                                                  "$ok"
                                                                  "$f"
                                                                  "$fb"
                                                                  "$x"
                                                                  "$xb" done

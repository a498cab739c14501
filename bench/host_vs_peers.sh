#!/usr/bin/env bash
# host_vs_peers.sh - eccl's host communicators against Gloo and Open MPI, side by side, in one
# run on this machine: AllReduce, AllGather, ReduceScatter, Broadcast, float32, 8 B .. 256 MiB,
# 2 and 4 ranks as processes; plus the machine's copy bandwidth (bench/stream_copy), the
# physical limit. Writes bench/results/host-<date>.md (tables) and host-<date>.png (busbw plot).
# Around each of eccl's runs it measures how long a cache line takes between the CPUs
# (bench/core_latency): a virtual machine's CPUs can be moved apart, across dies, while the run
# goes on, and every step through a connector slot moves lines between the ranks' cores.
#
# Every library is timed the same way (eccl-perf's way): warm-up calls at the largest and the
# smallest size of a range, then per size one call, a barrier, and N calls back to back, each
# timed, moving through the buffers; a rank's figure is the median of its N calls, the reported
# time the maximum over ranks. Sizes come in three ranges with the same N and warm-up for all
# three libraries (fewer iterations at large sizes):
#   8 B .. 64 KiB: N=200, warm-up 200; 128 KiB .. 4 MiB: N=30, 5; 8 MiB .. 256 MiB: N=5, 1.
#
# docs/bench-host.md describes it. Peers: Open MPI (openmpi-bin, libopenmpi-dev:
# bench/peers/mpi_bench.c built with mpicc; vader shared-memory transport, --bind-to none as
# eccl's ranks are not bound either) and Gloo (libgloo-dev: bench/peers/gloo_bench.cc built
# with g++, TCP over loopback, Gloo's only transport). The plot needs gnuplot (gnuplot-nox). Missing packages are installed with apt-get
# when INSTALL=1 and running as root (they are not in scripts/install-deps.sh: Open MPI and Gloo
# with their dependencies, PMIx, hwloc, UCX, libfabric..., are tens of MB that no CI test
# needs); otherwise a missing peer is left out and the report says so.
#
# Environment: BUILD (default build), CUDA (default 0) and JOBS (default 1) for make; OUT (default bench/results);
# RANKS (default "2 4"); COLLS (default "allreduce allgather reducescatter broadcast");
# QUICK=1 (a smoke run: 8 B .. 1 MiB, N=20); REPORT_ONLY=1 (no measuring: the report and
# plot again from $OUT/$TAG.raw.txt and .copy.txt, e.g. of an interrupted run); ECCL_*
# variables pass through to eccl.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CUDA=${CUDA:-0}
OUT=${OUT:-bench/results}
RANKS=${RANKS:-"2 4"}
COLLS=${COLLS:-"allreduce allgather reducescatter broadcast"}
DATE=$(date -u +%Y-%m-%d)
TAG=${TAG:-host-$DATE}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/host-vs-peers.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RAW=$OUT/$TAG.raw.txt
COPY=$OUT/$TAG.copy.txt
C2C=$OUT/$TAG.c2c.txt

if [[ ${QUICK:-0} == 1 ]]; then
    RANGES=("8 1M 20 20")
else
    RANGES=("8 64K 200 200" "128K 4M 30 5" "8M 256M 5 1")
fi

need_pkgs=()
command -v mpicc >/dev/null && command -v mpirun >/dev/null || need_pkgs+=(openmpi-bin libopenmpi-dev)
[[ -f /usr/include/gloo/allreduce.h ]] || need_pkgs+=(libgloo-dev)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
if ((${#need_pkgs[@]})); then
    if [[ ${INSTALL:-0} == 1 && $(id -u) == 0 ]]; then
        echo "installing ${need_pkgs[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
    else
        echo "missing: ${need_pkgs[*]} (INSTALL=1 as root installs them); going on without" >&2
    fi
fi

PEERS="$BUILD/bench/peers"
have_mpi=0 have_gloo=0
if [[ ${REPORT_ONLY:-0} != 1 ]]; then
    echo "building eccl ($BUILD, CUDA=$CUDA)" >&2
    make -s -j"${JOBS:-1}" BUILD="$BUILD" CUDA="$CUDA" tools "$BUILD/bench/stream_copy" \
        "$BUILD/bench/core_latency" >&2
    mkdir -p "$PEERS"
    if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
        mpicc -O2 -o "$PEERS/mpi_bench" bench/peers/mpi_bench.c && have_mpi=1
    fi
    if [[ -f /usr/include/gloo/allreduce.h ]] && command -v g++ >/dev/null; then
        g++ -O2 -std=c++17 -o "$PEERS/gloo_bench" bench/peers/gloo_bench.cc -lgloo -lpthread && have_gloo=1
    fi
else
    grep -q '^mpi ' "$RAW" && have_mpi=1
    grep -q '^gloo ' "$RAW" && have_gloo=1
fi

MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl "self,vader")
if [[ $(id -u) == 0 ]]; then
    MPIRUN+=(--allow-run-as-root)
fi

# The slowest CPU pair's one-way cache-line transfer in ns (0 where there is no pair).
c2c_ns() {
    { "$BUILD/bench/core_latency" -n 20000 2>/dev/null || true; } |
        awk -F'ns=' '$2 + 0 > m { m = $2 + 0 } END { print m + 0 }'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
if [[ ${REPORT_ONLY:-0} != 1 ]]; then
    : >"$RAW"
    : >"$C2C"
    echo "copy bandwidth" >&2
    "$BUILD/bench/stream_copy" >"$COPY"

    for n in $RANKS; do
        for coll in $COLLS; do
            for range in "${RANGES[@]}"; do
                read -r lo hi iters warm <<<"$range"
                echo "n=$n $coll $lo..$hi" >&2
                c2c_before=$(c2c_ns)
                # eccl: the median column (-M 1), max over ranks (-a 3), of the out-of-place
                # half ($10), or for Broadcast of the in-place half ($15): MPI_Bcast and
                # gloo::broadcast have one buffer, as torch.distributed.broadcast gives NCCL.
                "$BUILD/bin/eccl-perf" -C "$coll" -N "$n" -b "$lo" -e "$hi" -f 2 -n "$iters" \
                    -w "$warm" -c 0 -M 1 -a 3 |
                    awk -v c="$coll" -v n="$n" '/^ +[0-9]/ {
                        print "eccl", c, n, $1, (c == "broadcast" ? $15 : $10) }' >>"$RAW"
                c2c_after=$(c2c_ns)
                echo "$coll $n $lo $hi $c2c_before $c2c_after" >>"$C2C"
                if ((have_mpi)); then
                    "${MPIRUN[@]}" -np "$n" "$PEERS/mpi_bench" -c "$coll" -b "$lo" -e "$hi" -f 2 \
                        -n "$iters" -w "$warm" | awk '$1 == "mpi" { print $1, $2, $3, $4, $5 }' >>"$RAW"
                fi
                if ((have_gloo)); then
                    "$PEERS/gloo_bench" -N "$n" -c "$coll" -b "$lo" -e "$hi" -f 2 -n "$iters" \
                        -w "$warm" | awk '$1 == "gloo" { print $1, $2, $3, $4, $5 }' >>"$RAW"
                fi
            done
        done
    done
    LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
    ELAPSED=$(($(date +%s) - START))
    printf '%s\n%s\n%s\n' "$LOAD_BEFORE" "$LOAD_AFTER" "$ELAPSED" >"$OUT/$TAG.meta.txt"
else
    # The load and run time of the measuring run, where it left them.
    if [[ -f $OUT/$TAG.meta.txt ]]; then
        { read -r LOAD_BEFORE; read -r LOAD_AFTER; read -r ELAPSED; } <"$OUT/$TAG.meta.txt"
    else
        LOAD_AFTER=unknown ELAPSED=unknown
    fi
fi

python3 - "$RAW" "$COPY" "$OUT/$TAG.md" "$WORK/plot.dat" "$LOAD_BEFORE" "$LOAD_AFTER" \
    "$ELAPSED" "$have_mpi" "$have_gloo" "$(nproc)" "$(uname -r)" "$TAG" "$C2C" <<'PY'
import collections, os, sys
raw, copyf, md, dat, lb, la, el, hm, hg, ncpu, kern, tag, c2cf = sys.argv[1:]
# Line transfer between the CPUs around each eccl run: (coll, n) -> [(lo, hi, before, after)].
c2c = collections.defaultdict(list)
if os.path.exists(c2cf):
    for line in open(c2cf):
        f = line.split()
        if len(f) == 6:
            c2c[(f[0], int(f[1]))].append((f[2], f[3], float(f[4]), float(f[5])))
APART_NS = 100.0  # above: the CPUs sit on different dies (or sockets)
copy = {}
for line in open(copyf):
    k, t, g = line.split()
    copy[int(t.split("=")[1])] = float(g.split("=")[1])
one, allc = copy[1], copy[max(copy)]
libs = ["eccl", "gloo", "mpi"]
t = collections.defaultdict(dict)  # (coll, n) -> size -> lib -> us
for line in open(raw):
    lib, coll, n, size, us = line.split()
    t[(coll, int(n))].setdefault(int(size), {})[lib] = float(us)

def factor(coll, n):
    return 2.0 * (n - 1) / n if coll == "allreduce" else 1.0 if coll == "broadcast" else (n - 1) / n

def busbw(coll, n, size, us):
    return size / us / 1e3 * factor(coll, n) if us > 0 else 0.0

def human(b):
    for u, s in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if b >= u and b % u == 0:
            return "%d%s" % (b // u, s)
    return "%d" % b

order = ["allreduce", "allgather", "reducescatter", "broadcast"]
keys = sorted(t, key=lambda k: (k[1], order.index(k[0]) if k[0] in order else 9))
o = []
o.append("# Host collectives: eccl against Gloo and Open MPI (%s)\n" % tag)
o.append("Written by `bench/host_vs_peers.sh`. float32, sum; ranks are processes on this host; "
         "%s CPUs, kernel %s. Load average (1, 5, 15 min) before: %s, after: %s; the run took %s s. "
         "Peers measured: %s.\n" % (ncpu, kern, lb, la, el,
         ", ".join([p for p, h in (("Open MPI (vader shm)", hm), ("Gloo (TCP loopback)", hg)) if h == "1"]) or "none"))
o.append("Time: median of N back-to-back calls per rank, max over ranks (N=200 up to 64 KiB, 30 up "
         "to 4 MiB, 5 above). busbw in GB/s with nccl-tests' factors. `ratio`: for sizes <= 64 KiB "
         "eccl's time / the best peer's time (target <= 0.8); above, eccl's busbw / the best peer's "
         "busbw (target >= 1.2 from 1 MiB). `ok` marks a met target.\n")
runs = [r for v in c2c.values() for r in v]
if runs:
    lat = [x for r in runs for x in r[2:] if x > 0]
    apart = [r for r in runs if max(r[2], r[3]) > APART_NS]
    o.append("CPU placement: one-way cache-line transfer between the CPUs (bench/core_latency), "
             "measured before and after each of eccl's %d runs: %.0f to %.0f ns; %d of the runs "
             "had it above %.0f ns at either end (CPUs on different dies: the tables mark "
             "them `apart`).\n" % (len(runs), min(lat) if lat else 0, max(lat) if lat else 0,
                                  len(apart), APART_NS))
o.append("Physical limit: memcpy of 256 MiB buffers (bench/stream_copy, best of 10): one core "
         "%.2f GB/s, %d cores %.2f GB/s (bytes copied per second, the unit of busbw).\n" % (one, max(copy), allc))
summary = []
miss = []
with open(dat, "w") as d:
    for k in keys:
        coll, n = k
        o.append("\n## %s, %d ranks\n" % (coll, n))
        if c2c.get(k):
            o.append("Line transfer around eccl's runs: " + "; ".join(
                "%s..%s: %.0f -> %.0f ns%s" % (lo, hi, b, a, " (apart)" if max(a, b) > APART_NS else "")
                for lo, hi, b, a in c2c[k]) + ".\n")
        o.append("| size | eccl us | gloo us | mpi us | eccl busbw | gloo busbw | mpi busbw | ratio | ok |")
        o.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :-: |")
        peak = {l: 0.0 for l in libs}
        d.write("# %s %d\n" % (coll, n))
        for size in sorted(t[k]):
            r = t[k][size]
            bw = {l: busbw(coll, n, size, r[l]) if l in r else None for l in libs}
            for l in libs:
                if bw[l] is not None:
                    peak[l] = max(peak[l], bw[l])
            peers = [l for l in ("gloo", "mpi") if l in r and r[l] > 0]
            ratio, ok = "", ""
            if "eccl" in r and peers:
                if size <= 64 * 1024:
                    best = min(r[p] for p in peers)
                    ratio = "%.2f" % (r["eccl"] / best)
                    met = r["eccl"] <= 0.8 * best
                else:
                    best = max(bw[p] for p in peers)
                    ratio = "%.2f" % (bw["eccl"] / best if best > 0 else 0)
                    met = bw["eccl"] >= 1.2 * best
                if size > 0 and (size <= 64 * 1024 or size >= 1 << 20):
                    ok = "yes" if met else "**no**"
                    if not met:
                        miss.append("%s n=%d %s (%s)" % (coll, n, human(size), ratio))
            cell = lambda v, f: f % v if v is not None else "-"
            o.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                human(size), cell(r.get("eccl"), "%.2f"), cell(r.get("gloo"), "%.2f"),
                cell(r.get("mpi"), "%.2f"), cell(bw["eccl"], "%.3f"), cell(bw["gloo"], "%.3f"),
                cell(bw["mpi"], "%.3f"), ratio, ok))
            d.write("%d %s\n" % (size, " ".join("%.6f" % bw[l] if bw[l] is not None else "NaN" for l in libs)))
        d.write("\n\n")
        summary.append((coll, n, peak))
o.append("\n## Peak busbw against the copy bandwidth\n")
o.append("| collective | ranks | eccl GB/s | gloo GB/s | mpi GB/s | eccl % 1-core / all-core copy | gloo % | mpi % |")
o.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for coll, n, p in summary:
    pct = lambda v: "%.0f / %.0f" % (100 * v / one, 100 * v / allc)
    o.append("| %s | %d | %.3f | %.3f | %.3f | %s | %s | %s |" % (
        coll, n, p["eccl"], p["gloo"], p["mpi"], pct(p["eccl"]), pct(p["gloo"]), pct(p["mpi"])))
o.append("\n## Targets missed\n")
o.append(("\n".join("- " + m for m in miss) if miss else "none") + "\n")
o.append("\nPlot: `%s.png` (busbw against size). Raw data: `%s.raw.txt` (lib, collective, ranks, "
         "bytes, median us), copy rates: `%s.copy.txt`, line transfers: `%s.c2c.txt` (collective, "
         "ranks, range, ns before, ns after).\n" % (tag, tag, tag, tag))
open(md, "w").write("\n".join(o) + "\n")
print("\n".join(o))
PY

if command -v gnuplot >/dev/null; then
    blocks=$(grep -c '^# ' "$WORK/plot.dat" || true)
    {
        echo "set terminal pngcairo size 1600,900 font ',9'"
        echo "set output '$OUT/$TAG.png'"
        echo "set logscale x 2; set key top left; set grid"
        echo "set xtics ('8' 8, '256' 256, '8K' 8192, '256K' 262144, '8M' 8388608, '256M' 268435456)"
        echo "set xlabel 'size'; set ylabel 'busbw (GB/s)'"
        echo "set multiplot layout 2,4 title 'host collectives, busbw: eccl vs Gloo vs Open MPI (float32, $TAG)'"
        i=0
        while read -r _ coll n; do
            echo "set title '$coll, $n ranks'"
            echo "plot '$WORK/plot.dat' index $i using 1:2 with linespoints title 'eccl', '' index $i using 1:3 with linespoints title 'gloo', '' index $i using 1:4 with linespoints title 'mpi'"
            i=$((i + 1))
        done < <(grep '^# ' "$WORK/plot.dat")
        echo "unset multiplot"
    } >"$WORK/plot.gp"
    if ((blocks)); then
        gnuplot "$WORK/plot.gp" && echo "plot: $OUT/$TAG.png" >&2
    fi
else
    echo "gnuplot missing: no plot" >&2
fi
echo "report: $OUT/$TAG.md" >&2

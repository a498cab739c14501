#!/usr/bin/env bash
# gpu_vs_nccl.sh - eccl against NVIDIA's NCCL with the same client: bench/gpu_vs_nccl.py
# (torch.distributed, backend "nccl", one process per GPU) run twice per mode, once on the
# libnccl.so.2 PyTorch ships and once with eccl's build/lib/libnccl.so.2 preloaded; AllReduce,
# AllGather, ReduceScatter, Broadcast, AlltoAll from 8 B to MAXBYTES, without and with CUDA
# graphs. Writes DIR/gpu_vs_nccl.md (time and busbw of both, ratio eccl/NCCL) and the raw JSON
# lines; DIR is the first argument, else $OUT, else bench/results/tmp.
#
#   bench/gpu_vs_nccl.sh [DIR]
#   NPROCS=2 MAXBYTES=1073741824 COLLS=all_reduce,all_gather GRAPH=0 ECCL_BUILD=build ...
#
# Needs PyTorch with CUDA and at least 2 GPUs (NCCL refuses two ranks on one GPU). NVLink
# multicast stays off (NCCL_NVLS_ENABLE=0). Exit 77 where that is missing.
set -u
cd "$(dirname "$0")/.." || exit 1
build=${ECCL_BUILD:-build}
lib=$(realpath -m "$build/lib/libnccl.so.2")
outdir=${1:-${OUT:-bench/results/tmp}}
maxbytes=${MAXBYTES:-1073741824}
colls=${COLLS:-all_reduce,all_gather,reduce_scatter,broadcast,all_to_all}
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
nprocs=${NPROCS:-$ngpu}
if [ "$ngpu" -lt 2 ] || [ "$nprocs" -lt 2 ] || ! python3 -c 'import torch' 2>/dev/null; then
    echo "gpu_vs_nccl.sh: needs PyTorch and 2 or more GPUs (found $ngpu): skipped"
    exit 77
fi
[ -f "$lib" ] || { echo "gpu_vs_nccl.sh: $lib is missing (make)" >&2; exit 1; }
mkdir -p "$outdir" || exit 1
raw="$outdir/gpu_vs_nccl.jsonl"
: >"$raw"
export NCCL_NVLS_ENABLE=0 ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}
modes="" && [ "${GRAPH:-1}" = 1 ] && modes="--graph"
status=0
for mode in "" $modes; do
    for which in nccl eccl; do
        pre=""
        [ "$which" = eccl ] && pre="$lib"
        echo "== $which ${mode:-(no graph)}, $nprocs ranks"
        LD_PRELOAD="$pre${LD_PRELOAD:+:$LD_PRELOAD}" timeout --kill-after=10 600 \
            python3 -m torch.distributed.run --standalone --nproc-per-node="$nprocs" \
            bench/gpu_vs_nccl.py --lib "$which" --out "$raw" --maxbytes "$maxbytes" \
            --colls "$colls" ${mode:+"$mode"} >"$outdir/gpu_vs_nccl.$which${mode:+.graph}.log" 2>&1 ||
            { echo "   failed: $outdir/gpu_vs_nccl.$which${mode:+.graph}.log"; status=1; }
    done
done
python3 - "$raw" "$outdir/gpu_vs_nccl.md" "$nprocs" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
gpu = ""
try:
    import torch
    gpu = torch.cuda.get_device_name(0)
except Exception:
    pass
by = {}
for r in rows:
    by[(r["coll"], r["graph"], r["bytes"], r["lib"])] = r
out = [f"# eccl against NCCL, {sys.argv[3]} ranks, one per GPU ({gpu})", "",
       "Same client (torch.distributed, backend nccl; bench/gpu_vs_nccl.py), NCCL from PyTorch's "
       "wheel, eccl's libnccl.so.2 preloaded. Time: mean per call over N back-to-back calls "
       "(CUDA events), max over ranks. busbw GB/s. ratio: eccl busbw / NCCL busbw (time ratio "
       "NCCL/eccl for sizes <= 64 KiB).", ""]
for coll in sorted({r["coll"] for r in rows}):
    for graph in (False, True):
        sizes = sorted({r["bytes"] for r in rows if r["coll"] == coll and r["graph"] == graph})
        if not sizes:
            continue
        out += [f"## {coll}{' (CUDA graph)' if graph else ''}", "",
                "| bytes | NCCL us | eccl us | NCCL busbw | eccl busbw | ratio |",
                "|---:|---:|---:|---:|---:|---:|"]
        for b in sizes:
            n, e = by.get((coll, graph, b, "nccl")), by.get((coll, graph, b, "eccl"))
            if not n or not e:
                continue
            ratio = n["us"] / e["us"] if b <= 65536 else (e["busbw"] / n["busbw"] if n["busbw"] else 0)
            out.append(f"| {b} | {n['us']:.2f} | {e['us']:.2f} | {n['busbw']:.2f} | {e['busbw']:.2f} | {ratio:.2f} |")
        out.append("")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
exit $status

#!/usr/bin/env python3
"""One rank of bench/gpu_vs_nccl.sh: the same torch.distributed client (backend "nccl") timed on
whichever libnccl.so.2 the process loaded (NVIDIA's, or eccl's through LD_PRELOAD).

Each rank uses cuda:<local rank>. For each collective and size: warm-up, then N calls back to
back on the current stream timed with CUDA events (and, with --graph, the same N calls captured
into a CUDA graph and replayed), the mean time per call; rank 0 writes the max over ranks as JSON
lines to --out. busbw uses nccl-tests' factors.
"""
import argparse
import json
import os
import sys

import torch
import torch.distributed as dist

COLLS = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all"]


def factor(coll, n):
    if coll == "all_reduce":
        return 2.0 * (n - 1) / n
    if coll in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0


def make_op(coll, nbytes, n, dev):
    count = max(1, nbytes // 4)
    count -= count % n if coll != "all_reduce" and coll != "broadcast" else 0
    count = max(count, n)
    x = torch.ones(count, dtype=torch.float32, device=dev)
    if coll == "all_reduce":
        return (lambda: dist.all_reduce(x)), count * 4
    if coll == "broadcast":
        return (lambda: dist.broadcast(x, 0)), count * 4
    if coll == "all_gather":
        # nccl-tests' size is the whole output: count elements, count / n from each rank
        part = x[: count // n]
        return (lambda: dist.all_gather_into_tensor(x, part)), count * 4
    if coll == "reduce_scatter":
        out = torch.empty(count // n, dtype=torch.float32, device=dev)
        return (lambda: dist.reduce_scatter_tensor(out, x)), count * 4
    y = torch.empty_like(x)
    return (lambda: dist.all_to_all_single(y, x)), count * 4


def timed(fn, iters, graph):
    stream = torch.cuda.current_stream()
    if graph:
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            fn()  # warm on the side stream before capture
        stream.wait_stream(side)
        with torch.cuda.graph(g):
            for _ in range(iters):
                fn()
        g.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        g.replay()
        end.record()
    else:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000.0 / iters  # us per call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)  # a label: "nccl" or "eccl"
    ap.add_argument("--out", required=True)
    ap.add_argument("--maxbytes", type=int, default=1 << 30)
    ap.add_argument("--colls", default=",".join(COLLS))
    ap.add_argument("--graph", action="store_true")
    a = ap.parse_args()
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local)
    dev = torch.device("cuda", local)
    dist.init_process_group("nccl", device_id=dev)
    rows = []
    for coll in a.colls.split(","):
        size = 8
        while size <= a.maxbytes:
            fn, nbytes = make_op(coll, size, n, dev)
            iters = 200 if nbytes <= (1 << 20) else (20 if nbytes <= (64 << 20) else 5)
            us = timed(fn, iters, a.graph)
            t = torch.tensor([us], dtype=torch.float64, device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            us = t.item()
            busbw = nbytes / us / 1e3 * factor(coll, n)
            rows.append({"lib": a.lib, "coll": coll, "bytes": nbytes, "us": us, "busbw": busbw,
                         "graph": a.graph, "ranks": n})
            size *= 8 if size < (1 << 20) else 4
    if rank == 0:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

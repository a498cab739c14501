#!/usr/bin/env python3
"""PyTorch's torch.distributed, backend "nccl", on eccl's libnccl.so.2 (run by tests/gpu/pytorch.sh).

Every rank runs on cuda:0 (several ranks on one GPU: NVIDIA's NCCL refuses that, eccl accepts it).
Checks, with the expected values computed here:
  - the process really runs eccl: libnccl.so.2 in /proc/self/maps is the preloaded one, and
    ncclGetVersion (through ctypes) answers 22809;
  - all_reduce (sum, max, avg; float32, int64, bfloat16), all_gather, all_gather_into_tensor,
    reduce_scatter_tensor, broadcast, reduce, send/recv, batch_isend_irecv, barrier,
    all_to_all_single, all_to_all, a subgroup made with new_group;
  - a DistributedDataParallel training of a small model for 50 steps on backend "nccl" gives the
    same losses as the same run on backend "gloo".
Each rank writes a JSON file into --out; the parent compares them and exits 0 when all is well.
"""
import argparse
import ctypes
import datetime
import json
import os
import socket
import sys
import time
import traceback

# --selftest-cpu: the same script on the CPU with gloo in both phases (no GPU, no eccl), to check
# the script itself; the operations gloo lacks (AVG, reduce_scatter, bfloat16) are left out.
SELFTEST = "--selftest-cpu" in sys.argv


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check(cond, what, fails):
    if not cond:
        fails.append(what)


def eccl_identity():
    """Which libnccl.so.2 this process uses, and the version it reports at run time."""
    maps = open("/proc/self/maps").read().splitlines()
    paths = sorted({l.split()[-1] for l in maps if "libnccl.so" in l and "/" in l})
    lib = ctypes.CDLL("libnccl.so.2")  # the already-loaded object with this soname
    v = ctypes.c_int(0)
    rc = lib.ncclGetVersion(ctypes.byref(v))
    lib.ncclGetErrorString.restype = ctypes.c_char_p
    text = lib.ncclGetErrorString(6).decode()  # eccl's text of ncclRemoteError names eccl
    return {"maps": paths, "ncclGetVersion": v.value, "rc": rc, "remote_error_text": text}


def collectives(rank, world, fails):
    import torch
    import torch.distributed as dist

    dev = torch.device("cpu") if SELFTEST else torch.device("cuda", 0)
    n = world
    f32 = torch.float32

    def ar(dtype):
        def run():
            t = torch.full((1 << 20,), rank + 1, dtype=dtype, device=dev)
            dist.all_reduce(t)
            check(bool((t == n * (n + 1) // 2).all()), f"all_reduce sum {dtype}", fails)
        return run

    def ar_max():
        t = torch.arange(1000, device=dev, dtype=f32) + rank
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        check(bool((t == torch.arange(1000, device=dev) + n - 1).all()), "all_reduce max", fails)

    def ar_avg():
        t = torch.full((777,), float(2 * rank), device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        check(bool((t == float(n - 1)).all()), "all_reduce avg", fails)

    def all_gather():
        x = torch.arange(5000, device=dev, dtype=f32) + 10000 * rank
        outs = [torch.empty_like(x) for _ in range(n)]
        dist.all_gather(outs, x)
        check(all(bool((outs[p] == torch.arange(5000, device=dev) + 10000 * p).all())
                  for p in range(n)), "all_gather", fails)

    def all_gather_into_tensor():
        x = torch.arange(5000, device=dev, dtype=f32) + 10000 * rank
        big = torch.empty(n * 5000, device=dev)
        dist.all_gather_into_tensor(big, x)
        want = torch.stack([torch.arange(5000, device=dev, dtype=f32) + 10000 * p
                            for p in range(n)])
        check(bool((big.view(n, 5000) == want).all()), "all_gather_into_tensor", fails)

    def reduce_scatter():
        inp = torch.arange(n * 3000, device=dev, dtype=f32) + rank
        out = torch.empty(3000, device=dev)
        dist.reduce_scatter_tensor(out, inp)
        want = torch.arange(3000, device=dev, dtype=f32) * n + rank * 3000 * n + n * (n - 1) / 2
        check(bool((out == want).all()), "reduce_scatter_tensor", fails)

    def broadcast():
        want = torch.arange(4096, device=dev, dtype=f32) * 3
        b = want.clone() if rank == n - 1 else torch.zeros(4096, device=dev)
        dist.broadcast(b, src=n - 1)
        check(bool((b == want).all()), "broadcast", fails)

    def reduce():
        r = torch.full((100,), rank + 1.0, device=dev)
        dist.reduce(r, dst=0)
        if rank == 0:
            check(bool((r == n * (n + 1) / 2).all()), "reduce", fails)

    def send_recv():
        peer = rank ^ 1  # pairs; the even rank sends first
        if peer >= n:
            return
        s = torch.full((2048,), 100.0 * rank, device=dev)
        rbuf = torch.zeros(2048, device=dev)
        if rank % 2 == 0:
            dist.send(s, peer)
            dist.recv(rbuf, peer)
        else:
            dist.recv(rbuf, peer)
            dist.send(s, peer)
        check(bool((rbuf == 100.0 * peer).all()), "send/recv", fails)

    def ring():
        nxt, prv = (rank + 1) % n, (rank - 1) % n
        s = torch.full((3000,), float(rank), device=dev)
        rbuf = torch.zeros(3000, device=dev)
        ops = [dist.P2POp(dist.isend, s, nxt), dist.P2POp(dist.irecv, rbuf, prv)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        if not SELFTEST:
            torch.cuda.synchronize()
        check(bool((rbuf == float(prv)).all()), "batch_isend_irecv ring", fails)

    def all_to_all_single():
        a = torch.arange(n * 1000, device=dev, dtype=f32) + 100000 * rank
        o = torch.empty_like(a)
        dist.all_to_all_single(o, a)
        want = torch.cat([torch.arange(1000, device=dev, dtype=f32) + rank * 1000 + 100000 * p
                          for p in range(n)])
        check(bool((o == want).all()), "all_to_all_single", fails)

    def all_to_all():
        ins = [torch.full((500 + p,), float(rank * 10 + p), device=dev) for p in range(n)]
        outs = [torch.empty(500 + rank, device=dev) for p in range(n)]
        dist.all_to_all(outs, ins)
        check(all(bool((outs[p] == float(p * 10 + rank)).all()) for p in range(n)),
              "all_to_all", fails)

    def subgroup():
        evens = list(range(0, n, 2))
        g = dist.new_group(evens)
        if rank in evens:
            t = torch.ones(64, device=dev)
            dist.all_reduce(t, group=g)
            check(bool((t == len(evens)).all()), "new_group all_reduce", fails)

    steps = [("all_reduce float32", ar(f32)), ("all_reduce int64", ar(torch.int64)),
             ("all_reduce bfloat16", ar(torch.bfloat16)), ("all_reduce max", ar_max),
             ("all_reduce avg", ar_avg), ("all_gather", all_gather),
             ("all_gather_into_tensor", all_gather_into_tensor),
             ("reduce_scatter_tensor", reduce_scatter), ("broadcast", broadcast),
             ("reduce", reduce), ("send/recv", send_recv), ("batch_isend_irecv", ring),
             ("barrier", dist.barrier), ("all_to_all_single", all_to_all_single),
             ("all_to_all", all_to_all), ("new_group", subgroup), ("barrier", dist.barrier)]
    skipped = []
    for name, fn in steps:
        try:
            fn()
        except RuntimeError as e:
            # gloo on the CPU (the self-test) lacks some operations; eccl must have them all.
            if SELFTEST and any(w in str(e).lower() for w in ("support", "implemented", "invalid scalar", "cannot use")):
                skipped.append(name)
                continue
            raise RuntimeError(f"{name}: {e}") from e
    if not SELFTEST:
        torch.cuda.synchronize()
    return skipped


def ddp_losses(rank, world, backend, steps=50):
    import torch
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = torch.device("cpu") if SELFTEST else torch.device("cuda", 0)
    torch.manual_seed(1234)  # the same initial weights on every rank and every backend
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1)).to(dev)
    ddp = DDP(model, device_ids=[0] if backend == "nccl" and not SELFTEST else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    gen = torch.Generator(device="cpu").manual_seed(1000 + rank)  # each rank its own data
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 32, generator=gen).to(dev)
        y = x[:, :4].sum(dim=1, keepdim=True).tanh()
        opt.zero_grad()
        loss = nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if not SELFTEST:
        torch.cuda.synchronize()
    with torch.no_grad():
        wsum = float(sum(p.double().sum() for p in model.parameters()))
    return losses, wsum


def rank_main(rank, world, port, out, phase):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    res = {"rank": rank, "world": world, "phase": phase, "fails": []}
    try:
        import torch
        import torch.distributed as dist

        if not SELFTEST:
            torch.cuda.set_device(0)
        backend = "gloo" if phase == "gloo" or SELFTEST else "nccl"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=180))
        if phase == "nccl":
            if not SELFTEST:
                res["identity"] = eccl_identity()
                res["torch_nccl_version"] = list(torch.cuda.nccl.version())
            t0 = time.time()
            res["skipped"] = collectives(rank, world, res["fails"])
            res["collectives_s"] = round(time.time() - t0, 2)
        t0 = time.time()
        res["losses"], res["wsum"] = ddp_losses(rank, world, backend)
        res["ddp_s"] = round(time.time() - t0, 2)
        dist.barrier()
        dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - report every failure with its trace
        res["fails"].append(f"exception: {type(e).__name__}: {e}")
        res["trace"] = traceback.format_exc()
    with open(os.path.join(out, f"{phase}.{rank}.json"), "w") as f:
        json.dump(res, f)
    # Failures travel in the file: a nonzero exit would make spawn kill the other ranks.


def run_phase(world, out, phase):
    import torch.multiprocessing as mp

    ctx = mp.spawn(rank_main, args=(world, free_port(), out, phase), nprocs=world, join=False)
    deadline = time.time() + 400
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise RuntimeError(f"{phase} run with {world} processes did not finish in 400 s")
    results = []
    for r in range(world):
        path = os.path.join(out, f"{phase}.{r}.json")
        if not os.path.exists(path):
            raise RuntimeError(f"{phase}: rank {r} wrote no result ({path})")
        results.append(json.load(open(path)))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lib", required=not SELFTEST, help="the libnccl.so.2 that must be loaded")
    ap.add_argument("--selftest-cpu", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    fails = []
    try:
        nccl = run_phase(args.nprocs, args.out, "nccl")
    except Exception as e:  # noqa: BLE001
        print(f"FAIL nccl phase: {e}")
        return 1
    lib = os.path.realpath(args.lib or "")
    for r in nccl:
        for f in r["fails"]:
            fails.append(f"rank {r['rank']}: {f}")
        if "trace" in r:
            print(r["trace"])
        ident = r.get("identity")
        if ident:
            if lib not in [os.path.realpath(p) for p in ident["maps"]]:
                fails.append(f"rank {r['rank']}: {lib} is not mapped (libnccl: {ident['maps']})")
            if ident["ncclGetVersion"] != 22809 or ident["rc"] != 0:
                fails.append(f"rank {r['rank']}: ncclGetVersion gave {ident['ncclGetVersion']}")
            if "eccl" not in ident["remote_error_text"]:
                fails.append(f"rank {r['rank']}: ncclGetErrorString is not eccl's: "
                             f"{ident['remote_error_text']!r}")
        elif not r["fails"] and not SELFTEST:
            fails.append(f"rank {r['rank']}: no identity recorded")
    ident = nccl[0].get("identity", {})
    print(f"libnccl.so.2 mapped: {ident.get('maps')}; ncclGetVersion {ident.get('ncclGetVersion')}"
          f"; torch.cuda.nccl.version() {nccl[0].get('torch_nccl_version')}")
    print(f"collectives: {[r.get('collectives_s') for r in nccl]} s per rank, "
          f"{'all correct' if not fails else 'FAILED'}")
    try:
        gloo = run_phase(args.nprocs, args.out, "gloo")
    except Exception as e:  # noqa: BLE001
        print(f"FAIL gloo phase: {e}")
        return 1
    for r in gloo:
        for f in r["fails"]:
            fails.append(f"gloo rank {r['rank']}: {f}")
    worst = 0.0
    for a, b in zip(nccl, gloo):
        la, lb = a.get("losses", []), b.get("losses", [])
        if len(la) != 50 or len(lb) != 50:
            fails.append(f"rank {a['rank']}: {len(la)} nccl losses, {len(lb)} gloo losses")
            continue
        for s, (x, y) in enumerate(zip(la, lb)):
            d = abs(x - y) / max(abs(y), 1e-12)
            worst = max(worst, d)
            if d > 1e-4:
                fails.append(f"rank {a['rank']} step {s}: loss {x!r} (nccl) vs {y!r} (gloo)")
                break
    if nccl and gloo and nccl[0].get("losses") and gloo[0].get("losses"):
        l0, g0 = nccl[0]["losses"], gloo[0]["losses"]
        print(f"DDP 50 steps, rank 0 losses nccl: {l0[0]:.6f} -> {l0[-1]:.6f}; "
              f"gloo: {g0[0]:.6f} -> {g0[-1]:.6f}; largest relative difference {worst:.2e}; "
              f"weights sum {nccl[0].get('wsum')} vs {gloo[0].get('wsum')}; "
              f"{[r.get('ddp_s') for r in nccl]} s (nccl) {[r.get('ddp_s') for r in gloo]} s (gloo)")
    for f in fails:
        print("FAIL", f)
    print(f"{'PASS' if not fails else 'FAIL'}: {args.nprocs} processes on one GPU")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

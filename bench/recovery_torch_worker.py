#!/usr/bin/env python3
# recovery_torch_worker.py - the torchrun side of bench/recovery.sh: a worker started by torchrun
# (c10d rendezvous) that does what examples/elastic_train does per step on the eccl side, an
# AllReduce of a small int64 tensor, here over gloo. Rank --kill-rank of the first attempt
# (TORCHELASTIC_RESTART_COUNT=0) SIGKILLs itself at step --kill-step, as elastic_train does;
# torchrun then stops the others and restarts the whole worker group. Each worker of a restarted
# attempt logs the wall-clock time (CLOCK_REALTIME, seconds since the epoch) at which its first
# AllReduce completed, runs --after steps more and exits 0.
#
# Every line goes to the file named by --timeline (appended with one write per line, so that the
# lines of all processes interleave whole), not to stdout: torchrun buffers and redirects that.
#   recovery_torch_worker.py --timeline FILE [--steps N] [--step-ms MS]
#                            [--kill-rank R --kill-step S] [--after N]
import argparse
import os
import signal
import sys
import time

T_START = time.time()  # before `import torch`, which is most of a restart's cost


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeline", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--step-ms", type=float, default=5.0)
    ap.add_argument("--kill-rank", type=int, default=-1)
    ap.add_argument("--kill-step", type=int, default=-1)
    ap.add_argument("--after", type=int, default=20)
    args = ap.parse_args()

    fd = os.open(args.timeline, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    start_rank = int(os.environ.get("RANK", "0"))

    def say(what):
        line = "T %.6f attempt %d rank %d pid %d: %s\n" % (
            time.time(), attempt, start_rank, os.getpid(), what)
        os.write(fd, line.encode())

    say("started (process start at %.6f)" % T_START)
    import torch
    import torch.distributed as dist

    t_import = time.time()
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # Newer torchrun (2.x) hands every attempt the same agent store, and gloo would read the
        # addresses that the killed attempt's workers published there: key this attempt apart.
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                              int(os.environ["WORLD_SIZE"]), is_master=False)
        dist.init_process_group("gloo", store=dist.PrefixStore("attempt%d" % attempt, store),
                                rank=start_rank, world_size=int(os.environ["WORLD_SIZE"]))
    else:  # torch 1.13 with c10d: rank 0 hosts a fresh store for each attempt
        dist.init_process_group("gloo")
    t_init = time.time()
    rank, size = dist.get_rank(), dist.get_world_size()
    say("group ready: rank %d of %d, import torch %.3f s, init_process_group %.3f s"
        % (rank, size, t_import - T_START, t_init - t_import))
    expect = size * (size + 1) // 2
    last = args.steps if attempt == 0 else args.after
    for step in range(last):
        if attempt == 0 and start_rank == args.kill_rank and step == args.kill_step:
            say("SIGKILL myself at step %d" % step)
            os.kill(os.getpid(), signal.SIGKILL)
        x = torch.full((9,), rank + 1, dtype=torch.int64)
        try:
            dist.all_reduce(x)
        except RuntimeError as e:
            say("all_reduce failed at step %d: %s" % (step, str(e).splitlines()[0]))
            return 1
        if not bool((x == expect).all()):
            say("WRONG all_reduce result at step %d: %s, expected %d" % (step, x.tolist(), expect))
            return 3
        if attempt > 0 and step == 0:
            say("first all_reduce of the restarted group done")
        if args.step_ms > 0:
            time.sleep(args.step_ms / 1000.0)
    say("done: %d steps" % last)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

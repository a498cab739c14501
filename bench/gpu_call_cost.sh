#!/usr/bin/env bash
# gpu_call_cost.sh - runs build/bench/gpu_call_cost (the host cost of one 8-byte AllReduce on a
# 1-rank CUDA communicator, eccl against NCCL in the same process) with the NCCL of PyTorch's
# nvidia-nccl wheel, and writes its markdown table to stdout and, with OUT set or -o DIR, to
# DIR/gpu_call_cost.md.
#
#   bench/gpu_call_cost.sh [-o DIR] [gpu_call_cost options: -n calls -r reps -d device -m mode]
#   NCCL_LIB=/path/libnccl.so.2 bench/gpu_call_cost.sh    another NCCL
#   ECCL_BUILD=build/other ...                            where the binary is (default build)
#
# The binary is not rebuilt here (the GPU machine has no build dependencies): `make bench`
# first. Exits with the binary's status: 0, 77 where no GPU is present, 2 when no NCCL was
# found (eccl's figures are still printed), 1 on a failure.
set -u
cd "$(dirname "$0")/.." || exit 1
build=${ECCL_BUILD:-build}
bin="$build/bench/gpu_call_cost"
outdir=${OUT:-}
if [ "${1:-}" = "-o" ]; then
    outdir=${2:?-o needs a folder}
    shift 2
fi
if [ ! -x "$bin" ]; then
    echo "gpu_call_cost.sh: $bin is missing (make bench)" >&2
    exit 1
fi

# NCCL: $NCCL_LIB, else the nvidia-nccl wheel's (a namespace package has no __file__: its
# __path__ says where it is), else the loader's libnccl.so.2.
nccl=${NCCL_LIB:-}
if [ -z "$nccl" ]; then
    dir=$(python3 -c 'import os, nvidia.nccl as m
f = getattr(m, "__file__", None)
print(os.path.dirname(f) if f else list(m.__path__)[0])' 2>/dev/null)
    if [ -n "$dir" ] && [ -e "$dir/lib/libnccl.so.2" ]; then
        nccl="$dir/lib/libnccl.so.2"
    else
        echo "gpu_call_cost.sh: no nvidia-nccl wheel found by python3; trying libnccl.so.2" >&2
    fi
fi
args=()
[ -n "$nccl" ] && args=(--nccl "$nccl")

if [ -n "$outdir" ]; then
    mkdir -p "$outdir" || exit 1
    "$bin" "${args[@]}" "$@" | tee "$outdir/gpu_call_cost.md"
    exit "${PIPESTATUS[0]}"
fi
exec "$bin" "${args[@]}" "$@"

#!/usr/bin/env bash
# PyTorch on eccl: torch.distributed with backend "nccl", eccl's libnccl.so.2 loaded through
# LD_PRELOAD (PyTorch's wheels find NVIDIA's through an RPATH, which LD_LIBRARY_PATH does not
# override), 2 and then 4 processes on the one GPU (cuda:0 for every rank). The checks are in
# tests/gpu/pytorch_dropin.py: eccl is the library in use (mapped, ncclGetVersion 22809, eccl's
# error texts), the collectives' results, and a 50-step DistributedDataParallel run whose losses
# equal those of the same run on backend "gloo". This script also checks the log: every rank's
# NCCL_DEBUG=INFO file has eccl's drop-in line and its "Init COMPLETE" lines.
#
#   tests/gpu/pytorch.sh              (ECCL_BUILD: the build folder, default build)
#   PYTORCH_NPROCS="2" tests/gpu/pytorch.sh
#
# Exits 77 (skipped) where there is no GPU or no PyTorch with CUDA; 0 when every run passed.
# Logs and per-rank results go to $OUT (the device tool's output folder) or a temporary folder.
set -u
cd "$(dirname "$0")/../.."
build=${ECCL_BUILD:-build}
lib=$(realpath -m "$build/lib/libnccl.so.2")
nprocs_list=${PYTORCH_NPROCS:-"2 4"}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no GPU (nvidia-smi): skipped"
    exit 77
fi
probe=$(python3 -c 'import torch; print(int(torch.cuda.is_available()), torch.__version__)' 2>&1)
case "$probe" in
1\ *) ;;
*)
    echo "no PyTorch with CUDA here ($probe): skipped"
    exit 77
    ;;
esac
if [ ! -f "$lib" ]; then
    echo "FAIL: $lib is missing: build it with make"
    exit 1
fi
missing=$(ldd "$lib" | grep 'not found' || true)
if [ -n "$missing" ]; then
    echo "FAIL: $lib needs libraries this machine lacks:"
    echo "$missing"
    exit 1
fi

out=${OUT:-$(mktemp -d /tmp/eccl-pytorch.XXXXXX)}
mkdir -p "$out"
echo "torch $probe; eccl's libnccl.so.2: $lib; results in $out"
status=0
for n in $nprocs_list; do
    dir="$out/np$n"
    rm -rf "$dir"
    mkdir -p "$dir/log"
    echo "== $n processes on cuda:0"
    start=$(date +%s)
    LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}" \
        ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo} \
        NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,ENV NCCL_DEBUG_FILE="$dir/log/nccl.%h.%p.log" \
        TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1} \
        timeout --kill-after=10 900 python3 tests/gpu/pytorch_dropin.py --nprocs "$n" \
        --out "$dir" --lib "$lib" 2>&1 | tee "$dir/run.log"
    rc=${PIPESTATUS[0]}
    echo "   ($(($(date +%s) - start)) s, exit $rc)"
    [ "$rc" -eq 0 ] || status=1
    # The log: one file per process that used the library (the spawned ranks of both phases
    # load it, since they inherit LD_PRELOAD); the nccl phase's ranks initialised communicators.
    logs=$(ls "$dir"/log/nccl.*.log 2>/dev/null | wc -l)
    dropin=$(grep -l 'NCCL drop-in: libnccl.so.2 is eccl' "$dir"/log/nccl.*.log 2>/dev/null | wc -l)
    complete=$(grep -h 'Init COMPLETE' "$dir"/log/nccl.*.log 2>/dev/null | wc -l)
    warns=$(grep -h 'ECCL WARN' "$dir"/log/nccl.*.log 2>/dev/null | sort | uniq -c | sort -rn | head -5)
    echo "   log: $logs files, $dropin with the eccl drop-in line, $complete 'Init COMPLETE' lines"
    grep -h 'NCCL drop-in\|Init COMPLETE' "$dir"/log/nccl.*.log 2>/dev/null | head -3 | sed 's/^/   | /'
    if [ -n "$warns" ]; then
        echo "   WARN lines (most frequent):"
        echo "$warns" | sed 's/^/   | /'
    fi
    if [ "$dropin" -lt "$n" ] || [ "$complete" -lt "$n" ]; then
        echo "FAIL: fewer than $n processes logged the eccl drop-in line and Init COMPLETE"
        status=1
    fi
done
[ $status -eq 0 ] && echo "PASS: PyTorch on eccl's libnccl.so.2 ($nprocs_list processes)" ||
    echo "FAIL: see above and $out"
exit $status

#!/usr/bin/env bash
# memcheck.sh - the GPU tests under compute-sanitizer's memcheck, on a reduced set: test_mem,
# test_reduce_dev, and test_dev_colls with ECCL_TEST_GPU_QUICK=1 (three types, small sizes) and
# 1 and 2 ranks (ECCL_TEST_GPU_RANKS to change), every forked rank checked
# (--target-processes all). MPS is not used: compute-sanitizer does not attach to MPS clients.
# Exits 77 (skipped) where no GPU or no compute-sanitizer is found, 1 when a test fails or
# memcheck reports an error, 0 otherwise. Logs go to $ECCL_BUILD/tests/logs/memcheck_*.log.
#
# test_mem allocates 2^50 bytes on purpose (its refusal case): that cuMemCreate's
# CUDA_ERROR_OUT_OF_MEMORY is an API error, not a memory error, so API errors are not reported.
set -u
cd "$(dirname "$0")/../.." || exit 1
build=${ECCL_BUILD:-build}
cs=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
if [ ! -x "$cs" ]; then
    echo "memcheck.sh: no compute-sanitizer ($cs): skipped"
    exit 77
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "memcheck.sh: no GPU: skipped"
    exit 77
fi
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}
logs="$build/tests/logs"
mkdir -p "$logs"
status=0
run() { # name, then the command
    local name=$1
    shift
    local log="$logs/memcheck_$name.log"
    timeout 600 "$cs" --tool memcheck --report-api-errors no --error-exitcode 9 \
        --target-processes all "$@" >"$log" 2>&1
    local rc=$?
    local summary
    summary=$(grep -h "ERROR SUMMARY" "$log" | sed 's/^=* *//' | sort | uniq -c |
        sed 's/^ *//' | paste -sd ';' -)
    if [ "$rc" -eq 0 ]; then
        echo "PASS  memcheck $name ($summary)"
    else
        echo "FAIL  memcheck $name: exit $rc ($summary); log: $log"
        status=1
    fi
}
run test_mem "$build/tests/gpu/test_mem"
run test_reduce_dev "$build/tests/gpu/test_reduce_dev"
ECCL_TEST_GPU_QUICK=1 ECCL_TEST_GPU_RANKS=${ECCL_TEST_GPU_RANKS:-1 2} \
    run test_dev_colls "$build/tests/gpu/test_dev_colls"
ECCL_TEST_GPU_QUICK=1 run test_dev_reg "$build/tests/gpu/test_dev_reg"
exit $status

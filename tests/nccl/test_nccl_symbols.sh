#!/usr/bin/env bash
# test_nccl_symbols - libnccl.so.2 exports what programs built for NCCL 2.28 need, and nothing
# else (nm -D):
#   - every function include/nccl.h declares, and its pnccl* profiling alias;
#   - every nccl*/pnccl* symbol NVIDIA's libnccl.so.2 2.28.9 exports (the list below, taken with
#     nm -D from the nvidia-nccl 2.28.9 build), among them the 38 that PyTorch 2.11's
#     libtorch_cuda.so imports (import torch fails on any missing one);
#   - no other symbol (eccl's own and the CUDA runtime's stay hidden);
#   - the soname libnccl.so.2, and the link libnccl.so.
# make installs it as build/tests/nccl/test_nccl_symbols, with the source folder filled in.
set -u
src=@SRCDIR@
build=${ECCL_BUILD:-build}
case "$build" in /*) ;; *) build="$src/$build" ;; esac
lib="$build/lib/libnccl.so.2"
header="$src/include/nccl.h"
fail=0
bad() { echo "FAIL: $*"; fail=1; }

command -v nm >/dev/null || { echo "nm not found (binutils): skipped"; exit 77; }
[ -f "$lib" ] || { echo "FAIL: $lib is missing (make builds it)"; exit 1; }
[ -f "$header" ] || { echo "FAIL: $header is missing"; exit 1; }

exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TWiV]$/ {print $3}' | sort -u)
all_defined=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort -u)

# 1. The header's functions (declarations start at the beginning of a line) and their aliases.
declared=$(grep -oE '^[A-Za-z].*[ *]nccl[A-Za-z0-9]+\(' "$header" | grep -oE 'nccl[A-Za-z0-9]+\($' |
    tr -d '(' | sort -u)
ndeclared=$(echo "$declared" | wc -w)
[ "$ndeclared" -ge 52 ] || bad "only $ndeclared functions found in $header (expected 52)"
for f in $declared; do
    echo "$exported" | grep -qx "$f" || bad "$f (declared in include/nccl.h) is not exported"
    echo "$exported" | grep -qx "p$f" || bad "p$f (alias of $f) is not exported"
    grep -qE "^[A-Za-z].*[ *]p$f\(" "$header" || bad "include/nccl.h does not declare p$f"
done

# 2. NVIDIA's libnccl.so.2 2.28.9 exports these (nm -D --defined-only, nccl*/pnccl*).
nvidia_2_28_9="
ncclAllGather ncclAllReduce ncclAlltoAll ncclBcast ncclBroadcast ncclCommAbort ncclCommCount
ncclCommCuDevice ncclCommDeregister ncclCommDestroy ncclCommFinalize ncclCommGetAsyncError
ncclCommInitAll ncclCommInitRank ncclCommInitRankConfig ncclCommInitRankScalable ncclCommRegister
ncclCommRevoke ncclCommShrink ncclCommSplit ncclCommUserRank ncclCommWindowDeregister
ncclCommWindowRegister ncclDevCommCreate ncclDevCommDestroy ncclGather ncclGetErrorString
ncclGetLastError ncclGetUniqueId ncclGetVersion ncclGinBarrierCreateRequirement ncclGroupEnd
ncclGroupSimulateEnd ncclGroupStart ncclLLA2ACalcSlots ncclLLA2ACreateRequirement
ncclLsaBarrierCreateRequirement ncclMemAlloc ncclMemFree ncclRecv ncclRedOpCreatePreMulSum
ncclRedOpDestroy ncclReduce ncclReduceScatter ncclResetDebugInit ncclResetDebugInitInternal
ncclScatter ncclSend ncclTeamLsa ncclTeamRail ncclTeamRankToLsa ncclTeamRankToWorld ncclTeamWorld"
for f in $nvidia_2_28_9; do
    echo "$exported" | grep -qx "$f" || bad "$f (exported by NVIDIA's 2.28.9) is not exported"
    [ "$f" = ncclResetDebugInitInternal ] && continue
    echo "$exported" | grep -qx "p$f" || bad "p$f (exported by NVIDIA's 2.28.9) is not exported"
done
n_nvidia=$(echo $nvidia_2_28_9 | wc -w)
[ "$n_nvidia" -eq 53 ] || bad "the NVIDIA list has $n_nvidia names, expected 53"

# 3. Nothing else.
others=$(echo "$all_defined" | grep -vE '^p?nccl' || true)
[ -z "$others" ] || bad "symbols other than nccl*/pnccl* are exported: $(echo $others | head -c 300)"

# 4. The soname and the link.
soname=$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\].*/\1/p')
[ "$soname" = libnccl.so.2 ] || bad "soname is '$soname', not libnccl.so.2"
[ "$(readlink "$build/lib/libnccl.so")" = libnccl.so.2 ] || bad "$build/lib/libnccl.so is not a link to libnccl.so.2"

total=$(echo "$exported" | grep -cE '^p?nccl')
if [ $fail -eq 0 ]; then
    echo "OK: $total symbols exported ($ndeclared functions of include/nccl.h and their aliases," \
        "the $n_nvidia of NVIDIA's 2.28.9 and their aliases), nothing else; soname $soname"
fi
exit $fail

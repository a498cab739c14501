#!/usr/bin/env bash
# Checks the include rules of DESIGN.md: each folder may include only the folders below it.
#   tools/    -> elastic store core proxy kernels common include
#   nccl/     -> elastic core common include   (the NCCL drop-in, libnccl.so.2)
#   elastic/  -> store core common include
#   store/    -> common include          (store/ and core/ do not know each other)
#   core/     -> proxy kernels common include
#   proxy/    -> kernels common include
#   kernels/  -> common include
#   common/   -> include (libc and pthreads only)
# libcurl and jansson only in store/; CUDA headers only in kernels/, proxy/ and core/.
set -u
cd "$(dirname "$0")/.."
declare -A allow=(
    [tools]="tools elastic store core proxy kernels common"
    [nccl]="nccl elastic core common"
    [elastic]="elastic store core common"
    [store]="store common"
    [core]="core proxy kernels common"
    [proxy]="proxy kernels common"
    [kernels]="kernels common"
    [common]="common"
)
bad=0
for dir in "${!allow[@]}"; do
    [ -d "$dir" ] || continue
    while IFS= read -r line; do
        file=${line%%:*}
        inc=$(echo "$line" | sed -n 's/.*#include "\([a-z_]*\)\/.*/\1/p')
        [ -n "$inc" ] || continue
        case " ${allow[$dir]} " in *" $inc "*) ;; *)
            echo "layer violation: $file includes $inc/ (allowed: ${allow[$dir]})"
            bad=1 ;;
        esac
    done < <(grep -rn '#include "[a-z_]*/' "$dir" --include='*.c' --include='*.h' --include='*.cu' --include='*.cuh' 2>/dev/null)
done
while IFS= read -r line; do
    echo "layer violation: libcurl/jansson outside store/: $line"; bad=1
done < <(grep -rln '#include <curl/\|#include <jansson' --include='*.c' --include='*.h' . 2>/dev/null | grep -v '^./store/\|^./tests/\|^./build/')
while IFS= read -r line; do
    echo "layer violation: CUDA outside kernels/, proxy/, core/: $line"; bad=1
done < <(grep -rln '#include <cuda' --include='*.c' --include='*.h' common elastic store 2>/dev/null)
[ $bad -eq 0 ] && echo "check-layers: OK"
exit $bad

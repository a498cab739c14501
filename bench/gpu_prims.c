/*
 * gpu_prims.c - bandwidth of the collective kernels' data primitive (kernels/dev_prims.cuh) on
 * device memory against cudaMemcpy device to device of the same bytes, on the same GPU in the
 * same run: reduce-copy (out = a + b) and copy (out = a), float32 and bfloat16, 1 MiB to 1 GiB.
 * Bandwidths count bytes read plus bytes written; the ratio is to cudaMemcpy's.
 *
 *   build/bench/gpu_prims [max_bytes]      exits 77 where no GPU is present
 */
#include <stdio.h>
#include <stdlib.h>

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "eccl.h"
#include "kernels/dev_bench.h"
#include "kernels/reduce_dev.h"

int main(int argc, char **argv)
{
    size_t max = argc > 1 ? strtoull(argv[1], NULL, 0) : (size_t)1 << 30;
    if (kern_dev_count() <= 0) {
        printf("SKIP: no GPU\n");
        return 77;
    }
    const char *gpu = "GPU";
#ifdef ECCL_HAVE_CUDA
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        gpu = prop.name;
#endif
    printf("# %s: eccl's step primitive vs cudaMemcpy D2D (GB/s of bytes read + written)\n", gpu);
    printf("| type | bytes | reduce-copy GB/s | copy GB/s | cudaMemcpy GB/s | reduce/memcpy | "
           "copy/memcpy | blocks |\n|---|---|---|---|---|---|---|---|\n");
    int bad = 0;
    for (int t = 0; t < 2; t++) {
        int dtype = t == 0 ? ecclFloat32 : ecclBfloat16;
        for (size_t bytes = (size_t)1 << 20; bytes <= max; bytes <<= 2) {
            struct kern_dev_prim_result r;
            int iters = bytes >= ((size_t)256 << 20) ? 10 : 50;
            ecclResult_t res = kern_dev_prim_bench(dtype, bytes, iters, &r);
            if (res != ecclSuccess) {
                printf("%s %zu bytes: error %d\n", t == 0 ? "float32" : "bfloat16", bytes, res);
                bad = 1;
                continue;
            }
            printf("| %s | %zu | %.0f | %.0f | %.0f | %.2f | %.2f | %d |\n",
                   t == 0 ? "float32" : "bfloat16", bytes, r.reduce_gbs, r.copy_gbs, r.memcpy_gbs,
                   r.reduce_gbs / r.memcpy_gbs, r.copy_gbs / r.memcpy_gbs, r.blocks);
        }
    }
    return bad;
}

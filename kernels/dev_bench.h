/*
 * dev_bench.h - measurement of the collective kernels' data primitive (kernels/dev_prims.cuh)
 * against cudaMemcpy on the same device, for bench/gpu_prims.
 */
#ifndef ECCL_KERNELS_DEV_BENCH_H
#define ECCL_KERNELS_DEV_BENCH_H

#include <stddef.h>

#include "eccl.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kern_dev_prim_result {
    double reduce_gbs; /* out = a + b (reduce-copy): (2 reads + 1 write) bytes per second, GB/s */
    double copy_gbs;   /* out = a (the copy primitive): (1 read + 1 write) bytes per second */
    double memcpy_gbs; /* cudaMemcpyAsync device to device, (1 read + 1 write) bytes per second */
    int blocks;        /* grid used for the primitives */
};

/* On the current device, times the primitive over `bytes` per buffer of `dtype` (ecclFloat32 or
 * ecclBfloat16, sum), `iters` times each after a warm-up, and cudaMemcpy of the same bytes; the
 * median of 5 rounds. ecclInvalidArgument for another type, ecclUnhandledCudaError when CUDA
 * fails (no GPU), ecclInvalidUsage without CUDA. The result of one reduce is checked. */
ecclResult_t kern_dev_prim_bench(int dtype, size_t bytes, int iters,
                                 struct kern_dev_prim_result *out);

#ifdef __cplusplus
}
#endif

#endif

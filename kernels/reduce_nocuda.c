/*
 * reduce_nocuda.c - the entry points of kernels/reduce_dev.h and kernels/dev_bench.h in a build
 * without CUDA (CUDA=0): no device, and a self-test and a benchmark that say so.
 */
#ifndef ECCL_HAVE_CUDA

#include <stdio.h>

#include "common/log.h"
#include "kernels/dev_bench.h"
#include "kernels/reduce_dev.h"

int kern_dev_count(void)
{
    return 0;
}

ecclResult_t kern_dev_reduce_selftest(int dtype, int kind, size_t n, char *msg, size_t msglen)
{
    (void)n;
    WARN("reduce self-test (%d, %d): built without CUDA", dtype, kind);
    if (msglen > 0)
        snprintf(msg, msglen, "built without CUDA");
    return ecclInvalidUsage;
}

ecclResult_t kern_dev_prim_bench(int dtype, size_t bytes, int iters,
                                 struct kern_dev_prim_result *out)
{
    (void)dtype, (void)bytes, (void)iters, (void)out;
    WARN("primitive benchmark: built without CUDA");
    return ecclInvalidUsage;
}

#else
typedef int reduce_nocuda_empty; /* ISO C wants a translation unit to declare something */
#endif

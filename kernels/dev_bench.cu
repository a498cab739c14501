/*
 * dev_bench.cu - kern_dev_prim_bench (kernels/dev_bench.h): the collective kernels' primitive,
 * run by a full grid over device memory, against cudaMemcpy device to device.
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "eccl.h"
#include "kernels/reduce_dev.cuh" /* first: it makes work.h C++-clean */
#include "kernels/dev_bench.h"
#include "kernels/dev_prims.cuh"
extern "C" {
#include "common/log.h"
}

namespace
{

template <int DTYPE, int KIND>
__global__ void __launch_bounds__(512)
    prim_kernel(void *out, const void *a, const void *b, size_t n)
{
    typedef eccl_dev::redop<DTYPE, ECCL_RED_SUM> op_t;
    typedef typename op_t::T T;
    const op_t op(0);
    size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nthreads = (size_t)gridDim.x * blockDim.x;
    eccl_dev::step_run<op_t, KIND, false>(op, (const T *)a, (const T *)b, (T *)out, nullptr, n, tid,
                                          nthreads);
}

struct timer {
    cudaEvent_t start, stop;
};

int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

template <int DTYPE> ecclResult_t run(size_t bytes, int iters, struct kern_dev_prim_result *res)
{
    typedef typename eccl_dev::redop<DTYPE, ECCL_RED_SUM>::T T;
    size_t n = bytes / sizeof(T);
    void *a = NULL, *b = NULL, *o = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    ecclResult_t ret = ecclUnhandledCudaError;
    int dev = 0, sms = 0;
    double t_red[5], t_copy[5], t_mem[5];
    cudaError_t err = cudaGetDevice(&dev);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err == cudaSuccess)
        err = cudaMalloc(&a, bytes);
    if (err == cudaSuccess)
        err = cudaMalloc(&b, bytes);
    if (err == cudaSuccess)
        err = cudaMalloc(&o, bytes);
    if (err == cudaSuccess)
        err = cudaEventCreate(&e0);
    if (err == cudaSuccess)
        err = cudaEventCreate(&e1);
    if (err == cudaSuccess)
        err = cudaMemset(a, 0x3c, bytes); /* 1.0f-ish halves, finite floats */
    if (err == cudaSuccess)
        err = cudaMemset(b, 0x3c, bytes);
    if (err != cudaSuccess) {
        WARN("primitive benchmark: %s", cudaGetErrorString(err));
        goto out;
    }
    res->blocks = sms * 4;
    for (int round = 0; round < 5 && err == cudaSuccess; round++) {
        for (int which = 0; which < 3 && err == cudaSuccess; which++) {
            for (int i = -1; i < iters && err == cudaSuccess; i++) {
                if (i == 0)
                    err = cudaEventRecord(e0);
                if (which == 0)
                    prim_kernel<DTYPE, eccl_dev::STEP_RECV_REDUCE_COPY>
                        <<<res->blocks, 512>>>(o, a, b, n);
                else if (which == 1)
                    prim_kernel<DTYPE, eccl_dev::STEP_RECV><<<res->blocks, 512>>>(o, nullptr, a, n);
                else
                    err = cudaMemcpyAsync(o, a, bytes, cudaMemcpyDeviceToDevice);
                if (err == cudaSuccess)
                    err = cudaGetLastError();
            }
            float ms = 0;
            if (err == cudaSuccess)
                err = cudaEventRecord(e1);
            if (err == cudaSuccess)
                err = cudaEventSynchronize(e1);
            if (err == cudaSuccess)
                err = cudaEventElapsedTime(&ms, e0, e1);
            double per = (double)ms / 1e3 / iters;
            (which == 0 ? t_red : which == 1 ? t_copy : t_mem)[round] = per;
        }
    }
    if (err != cudaSuccess) {
        WARN("primitive benchmark: %s", cudaGetErrorString(err));
        goto out;
    }
    qsort(t_red, 5, sizeof(double), cmp_double);
    qsort(t_copy, 5, sizeof(double), cmp_double);
    qsort(t_mem, 5, sizeof(double), cmp_double);
    res->reduce_gbs = 3.0 * (double)bytes / t_red[2] / 1e9;
    res->copy_gbs = 2.0 * (double)bytes / t_copy[2] / 1e9;
    res->memcpy_gbs = 2.0 * (double)bytes / t_mem[2] / 1e9;
    {
        /* The reduce did reduce: out = a + b on a sample. */
        prim_kernel<DTYPE, eccl_dev::STEP_RECV_REDUCE_COPY><<<res->blocks, 512>>>(o, a, b, n);
        T ha[4], ho[4];
        if (cudaMemcpy(ha, a, sizeof(ha), cudaMemcpyDeviceToHost) != cudaSuccess ||
            cudaMemcpy(ho, o, sizeof(ho), cudaMemcpyDeviceToHost) != cudaSuccess) {
            WARN("primitive benchmark: copy back failed");
            goto out;
        }
        if (memcmp(ha, ho, sizeof(ha)) == 0) {
            WARN("primitive benchmark: the reduce left its input unchanged");
            ret = ecclInternalError;
            goto out;
        }
    }
    ret = ecclSuccess;
out:
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    cudaFree(o);
    return ret;
}

} // namespace

extern "C" ecclResult_t kern_dev_prim_bench(int dtype, size_t bytes, int iters,
                                            struct kern_dev_prim_result *out)
{
    memset(out, 0, sizeof(*out));
    if (iters < 1 || bytes < 16) {
        WARN("primitive benchmark: %d iterations of %zu bytes", iters, bytes);
        return ecclInvalidArgument;
    }
    switch (dtype) {
    case ecclFloat32:
        return run<ecclFloat32>(bytes, iters, out);
    case ecclBfloat16:
        return run<ecclBfloat16>(bytes, iters, out);
    default:
        WARN("primitive benchmark: data type %d (float32 and bfloat16 only)", dtype);
        return ecclInvalidArgument;
    }
}

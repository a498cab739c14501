/*
 * mem_cuda.c - eccl-perf's CUDA backend (-G 1): CUDA communicators, buffers from cudaMalloc (or
 * ecclMemAlloc with -R 1), one
 * stream per rank (or the default stream with -y 1) that every call is queued on, and CUDA
 * events that time the loops on the device.
 *
 * Each rank's thread binds itself to GPU local_rank % device count before its communicator is
 * made (several ranks may share one GPU). Copies and memsets are queued on the rank's stream and
 * waited for, so they are ordered after the collectives that wrote the buffers. Every wait polls
 * the stream with the -T deadline and watches the communicator's asynchronous error, so a rank
 * whose peer died stops instead of waiting for ever.
 *
 * Compiled only with ECCL_HAVE_CUDA; elsewhere perf_mem_cuda is NULL and -G 1 is refused.
 */
#include <stdio.h>
#include <string.h>

#include "tools/eccl-perf/perf.h"

#ifdef ECCL_HAVE_CUDA

#include <cuda_runtime_api.h>

#include "common/alloc.h"
#include "common/time.h"

/* Per-iteration events up to this many iterations; beyond it, only the first and the last
 * (the median then comes from host-timed iterations). */
#define PERF_MAX_MARKS 4096
/* Busy polls of a stream before the wait starts sleeping between polls: short waits (small
 * sizes) are not lengthened by a sleep, long ones do not burn a core that other ranks need. */
#define PERF_SPIN_POLLS 2000
#define PERF_POLL_US    20
/* How long freeing a buffer waits for the stream to drain (after an abort the kernels stop
 * within milliseconds); past it the memory is left to process exit rather than freed under a
 * running kernel (cudaFree would block until the kernel ends). */
#define PERF_DRAIN_MS 10000

struct perf_cuda {
    cudaStream_t stream;
    int own_stream;
    cudaEvent_t *marks;
    int nmarks;
    int stuck; /* the stream did not drain: device memory is not freed */
};

static ecclResult_t cuda_failed(const struct perf_rank *rk, const char *what, cudaError_t e)
{
    fprintf(stderr, "eccl-perf: rank %d: %s: %s (%d)\n", rk->rank, what, cudaGetErrorString(e),
            (int)e);
    return ecclUnhandledCudaError;
}

static void cuda_rank_fini(struct perf_rank *rk)
{
    struct perf_cuda *g = rk->dev;
    if (g == NULL)
        return;
    for (int i = 0; i < g->nmarks; i++) {
        if (g->marks[i] != NULL)
            (void)cudaEventDestroy(g->marks[i]);
    }
    /* Destroying a stream with work in it is safe: it is released when the work ends. */
    if (g->own_stream)
        (void)cudaStreamDestroy(g->stream);
    eccl_free(g->marks);
    eccl_free(g);
    rk->dev = NULL;
    rk->stream = NULL;
    rk->nmarks = 0;
}

static ecclResult_t cuda_rank_init(struct perf_rank *rk)
{
    const struct perf_opts *o = rk->opts;
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev <= 0) {
        fprintf(stderr, "eccl-perf: rank %d: -G 1 needs a CUDA device, and none is usable: %s\n",
                rk->rank, e != cudaSuccess ? cudaGetErrorString(e) : "no device");
        return ecclInvalidUsage;
    }
    int dev = rk->local_rank % ndev;
    if ((e = cudaSetDevice(dev)) != cudaSuccess)
        return cuda_failed(rk, "cudaSetDevice", e);
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
        return cuda_failed(rk, "cudaGetDeviceProperties", e);
    snprintf(rk->dev_name, sizeof(rk->dev_name), "%.*s", (int)sizeof(rk->dev_name) - 1, prop.name);
    if (cudaDeviceGetPCIBusId(rk->bus_id, (int)sizeof(rk->bus_id), dev) != cudaSuccess)
        snprintf(rk->bus_id, sizeof(rk->bus_id), "cuda:%d", dev);
    rk->device = dev;

    struct perf_cuda *g = eccl_calloc(1, sizeof(*g), "perf_cuda");
    if (g == NULL) {
        fprintf(stderr, "eccl-perf: rank %d: out of host memory\n", rk->rank);
        return ecclSystemError;
    }
    rk->dev = g; /* from here on, cuda_rank_fini undoes whatever was made */
    int n = o->iters <= PERF_MAX_MARKS ? o->iters + 1 : 2;
    g->marks = eccl_calloc((size_t)n, sizeof(*g->marks), "perf_cuda");
    if (g->marks == NULL) {
        fprintf(stderr, "eccl-perf: rank %d: out of host memory\n", rk->rank);
        return ecclSystemError;
    }
    if (!o->stream_null) {
        if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess)
            return cuda_failed(rk, "cudaStreamCreateWithFlags", e);
        g->own_stream = 1;
    }
    for (int i = 0; i < n; i++) {
        if ((e = cudaEventCreate(&g->marks[i])) != cudaSuccess)
            return cuda_failed(rk, "cudaEventCreate", e);
        g->nmarks = i + 1;
    }
    rk->stream = g->stream;
    rk->nmarks = g->nmarks;
    return ecclSuccess;
}

static ecclResult_t cuda_wait(struct perf_rank *rk)
{
    struct perf_cuda *g = rk->dev;
    for (uint64_t polls = 0;; polls++) {
        cudaError_t e = cudaStreamQuery(g->stream);
        ecclResult_t async = ecclSuccess;
        if (rk->comm != NULL) {
            ecclResult_t res = ecclCommGetAsyncError(rk->comm, &async);
            if (res != ecclSuccess)
                async = res;
        }
        /* Kernels stopped by a failure let the stream finish too: the communicator says whether
         * the work was done (as with NCCL). */
        if (async != ecclSuccess && async != ecclInProgress) {
            const char *last = ecclGetLastError(rk->comm);
            fprintf(stderr, "eccl-perf: rank %d: the communicator failed: %s (%d)%s%s\n", rk->rank,
                    ecclGetErrorString(async), (int)async, last && last[0] ? ": " : "",
                    last ? last : "");
            return async;
        }
        if (e == cudaSuccess)
            return ecclSuccess;
        if (e != cudaErrorNotReady)
            return cuda_failed(rk, "cudaStreamQuery", e);
        if (eccl_deadline_passed(rk->deadline)) {
            fprintf(stderr,
                    "eccl-perf: rank %d: the stream did not finish before the -T deadline\n",
                    rk->rank);
            return ecclInternalError;
        }
        if (polls >= PERF_SPIN_POLLS)
            eccl_sleep_us(PERF_POLL_US);
    }
}

/* Before device memory is freed: waits a bounded time for the stream to drain. */
static int cuda_drained(struct perf_rank *rk)
{
    struct perf_cuda *g = rk->dev;
    if (g == NULL)
        return 1;
    if (g->stuck)
        return 0;
    uint64_t deadline = eccl_deadline_ms(PERF_DRAIN_MS);
    for (;;) {
        cudaError_t e = cudaStreamQuery(g->stream);
        if (e != cudaErrorNotReady)
            return 1; /* done, or broken: either way nothing of ours runs any more */
        if (eccl_deadline_passed(deadline)) {
            fprintf(stderr,
                    "eccl-perf: rank %d: the stream still runs %d ms after the end; its device "
                    "memory is left to process exit\n",
                    rk->rank, PERF_DRAIN_MS);
            g->stuck = 1;
            return 0;
        }
        eccl_sleep_us(100);
    }
}

static ecclResult_t cuda_zero(struct perf_rank *rk, void *dst, size_t bytes)
{
    struct perf_cuda *g = rk->dev;
    if (bytes == 0)
        return ecclSuccess;
    cudaError_t e = cudaMemsetAsync(dst, 0, bytes, g->stream);
    if (e != cudaSuccess)
        return cuda_failed(rk, "cudaMemsetAsync", e);
    return cuda_wait(rk);
}

/* With -R 1, ecclMemAlloc memory (which registrations can share with local peers), else
 * cudaMalloc memory. */
static ecclResult_t cuda_alloc(struct perf_rank *rk, void **ptr, size_t bytes)
{
    void *p = NULL;
    if (rk->opts->reg) {
        ecclResult_t r = ecclMemAlloc(&p, bytes ? bytes : 1);
        if (r != ecclSuccess) {
            fprintf(stderr, "eccl-perf: rank %d: ecclMemAlloc(%zu) on GPU %d: %s\n", rk->rank,
                    bytes, rk->device, ecclGetErrorString(r));
            return r;
        }
    } else {
        cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
        if (e != cudaSuccess) {
            fprintf(stderr, "eccl-perf: rank %d: cudaMalloc(%zu) on GPU %d: %s\n", rk->rank, bytes,
                    rk->device, cudaGetErrorString(e));
            return ecclUnhandledCudaError;
        }
    }
    ecclResult_t res = cuda_zero(rk, p, bytes);
    if (res != ecclSuccess) {
        if (rk->opts->reg)
            (void)ecclMemFree(p);
        else
            (void)cudaFree(p);
        return res;
    }
    *ptr = p;
    return ecclSuccess;
}

static void cuda_free(struct perf_rank *rk, void *ptr)
{
    if (ptr == NULL || !cuda_drained(rk))
        return;
    if (rk->opts->reg) {
        ecclResult_t r = ecclMemFree(ptr);
        if (r != ecclSuccess)
            fprintf(stderr, "eccl-perf: rank %d: ecclMemFree: %s\n", rk->rank,
                    ecclGetErrorString(r));
        return;
    }
    cudaError_t e = cudaFree(ptr);
    if (e != cudaSuccess)
        (void)cuda_failed(rk, "cudaFree", e);
}

static ecclResult_t cuda_upload(struct perf_rank *rk, void *dst, const void *host_src, size_t bytes)
{
    struct perf_cuda *g = rk->dev;
    if (bytes == 0)
        return ecclSuccess;
    cudaError_t e = cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, g->stream);
    if (e != cudaSuccess)
        return cuda_failed(rk, "cudaMemcpyAsync (to the device)", e);
    return cuda_wait(rk);
}

static ecclResult_t cuda_download(struct perf_rank *rk, void *host_dst, const void *src,
                                  size_t bytes)
{
    struct perf_cuda *g = rk->dev;
    if (bytes == 0)
        return ecclSuccess;
    cudaError_t e = cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, g->stream);
    if (e != cudaSuccess)
        return cuda_failed(rk, "cudaMemcpyAsync (from the device)", e);
    return cuda_wait(rk);
}

static ecclResult_t cuda_mark(struct perf_rank *rk, int i)
{
    struct perf_cuda *g = rk->dev;
    if (i < 0 || i >= g->nmarks) {
        fprintf(stderr, "eccl-perf: rank %d: timing event %d of %d\n", rk->rank, i, g->nmarks);
        return ecclInternalError;
    }
    cudaError_t e = cudaEventRecord(g->marks[i], g->stream);
    if (e != cudaSuccess)
        return cuda_failed(rk, "cudaEventRecord", e);
    return ecclSuccess;
}

static ecclResult_t cuda_elapsed_us(struct perf_rank *rk, int from, int to, double *us)
{
    struct perf_cuda *g = rk->dev;
    if (from < 0 || to < 0 || from >= g->nmarks || to >= g->nmarks) {
        fprintf(stderr, "eccl-perf: rank %d: timing events %d, %d of %d\n", rk->rank, from, to,
                g->nmarks);
        return ecclInternalError;
    }
    float ms = 0.0f;
    cudaError_t e = cudaEventElapsedTime(&ms, g->marks[from], g->marks[to]);
    if (e != cudaSuccess)
        return cuda_failed(rk, "cudaEventElapsedTime", e);
    *us = (double)ms * 1e3;
    return ecclSuccess;
}

static const struct perf_mem_ops mem_cuda = {
    .name = "cuda",
    .host_accessible = 0,
    .device_kind = ECCL_DEVICE_CUDA,
    .rank_init = cuda_rank_init,
    .rank_fini = cuda_rank_fini,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .zero = cuda_zero,
    .wait = cuda_wait,
    .mark = cuda_mark,
    .elapsed_us = cuda_elapsed_us,
};

const struct perf_mem_ops *const perf_mem_cuda = &mem_cuda;

#else

const struct perf_mem_ops *const perf_mem_cuda = NULL;

#endif

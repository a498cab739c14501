/*
 * mem.c - eccl-perf's host memory backend. The benchmark loop allocates communication buffers,
 * moves bytes between them and host memory and waits for its calls only through struct
 * perf_mem_ops; the CUDA backend (-G 1) is the other table, in mem_cuda.c.
 *
 * The host backend: page-aligned host memory from the tagged allocator, zeroed; host
 * communicators, whose calls return when their work is done (wait has nothing to wait for), and
 * no device timing (the host clock times the loops).
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "tools/eccl-perf/perf.h"

#define PERF_HOST_ALIGN 4096

static ecclResult_t host_rank_init(struct perf_rank *rk)
{
    rk->stream = NULL;
    rk->device = -1;
    snprintf(rk->bus_id, sizeof(rk->bus_id), "host");
    snprintf(rk->dev_name, sizeof(rk->dev_name), "host memory");
    return ecclSuccess;
}

static void host_rank_fini(struct perf_rank *rk)
{
    (void)rk;
}

static ecclResult_t host_alloc(struct perf_rank *rk, void **ptr, size_t bytes)
{
    void *p = eccl_calloc_aligned(bytes ? bytes : 1, PERF_HOST_ALIGN, "perf_buffer");
    if (p == NULL) {
        fprintf(stderr, "eccl-perf: rank %d: out of host memory (%zu bytes)\n", rk->rank, bytes);
        return ecclSystemError;
    }
    *ptr = p;
    return ecclSuccess;
}

static void host_free(struct perf_rank *rk, void *ptr)
{
    (void)rk;
    if (ptr != NULL)
        eccl_free_aligned(ptr);
}

static ecclResult_t host_copy(struct perf_rank *rk, void *dst, const void *src, size_t bytes)
{
    (void)rk;
    if (dst != src && bytes > 0)
        memmove(dst, src, bytes);
    return ecclSuccess;
}

static ecclResult_t host_zero(struct perf_rank *rk, void *dst, size_t bytes)
{
    (void)rk;
    if (bytes > 0)
        memset(dst, 0, bytes);
    return ecclSuccess;
}

static ecclResult_t host_wait(struct perf_rank *rk)
{
    (void)rk;
    return ecclSuccess;
}

const struct perf_mem_ops perf_mem_host = {
    .name = "host",
    .host_accessible = 1,
    .device_kind = ECCL_DEVICE_HOST,
    .rank_init = host_rank_init,
    .rank_fini = host_rank_fini,
    .alloc = host_alloc,
    .free = host_free,
    .upload = host_copy,
    .download = host_copy,
    .zero = host_zero,
    .wait = host_wait,
    .mark = NULL,
    .elapsed_us = NULL,
};

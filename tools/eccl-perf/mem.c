/*
 * mem.c - eccl-perf's memory backends. The benchmark loop allocates communication buffers and
 * moves bytes between them and host memory only through struct perf_mem_ops, so a GPU backend
 * (cudaMalloc, cudaMemcpy, cudaMemset on the rank's device) is one more table here.
 *
 * The host backend: page-aligned host memory from the tagged allocator, zeroed.
 */
#include <string.h>

#include "common/alloc.h"
#include "tools/eccl-perf/perf.h"

#define PERF_HOST_ALIGN 4096

static ecclResult_t host_alloc(void **ptr, size_t bytes)
{
    void *p = eccl_calloc_aligned(bytes ? bytes : 1, PERF_HOST_ALIGN, "perf_buffer");
    if (p == NULL)
        return ecclSystemError;
    *ptr = p;
    return ecclSuccess;
}

static void host_free(void *ptr)
{
    if (ptr != NULL)
        eccl_free_aligned(ptr);
}

static ecclResult_t host_copy(void *dst, const void *src, size_t bytes)
{
    if (dst != src && bytes > 0)
        memmove(dst, src, bytes);
    return ecclSuccess;
}

static ecclResult_t host_zero(void *dst, size_t bytes)
{
    if (bytes > 0)
        memset(dst, 0, bytes);
    return ecclSuccess;
}

const struct perf_mem_ops perf_mem_host = {
    .name = "host",
    .host_accessible = 1,
    .alloc = host_alloc,
    .free = host_free,
    .upload = host_copy,
    .download = host_copy,
    .zero = host_zero,
};

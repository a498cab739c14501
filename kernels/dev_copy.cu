/*
 * dev_copy.cu - the copy kernel of one-rank collectives (kernels/dev_exec.c kern_dev_copy): the
 * input to the output on the caller's stream, as one small kernel rather than a
 * cudaMemcpyAsync, whose host cost is higher for the small sizes that one-rank calls usually
 * move (and whose graph node replays slower). Larger copies go to cudaMemcpyAsync.
 */
#include <cuda_runtime.h>
#include <stdint.h>

/* Declared for C in kernels/dev_exec.h (which C++ cannot include: C11 atomics). */
extern "C" int kern_dev_cu_copy(void *dst, const void *src, size_t bytes, void *stream);

#define COPY_THREADS    256
#define COPY_MAX_BLOCKS 256

/* 16-byte words where both pointers are 16-byte aligned, bytes elsewhere (and for the tail). */
__global__ void __launch_bounds__(COPY_THREADS)
    one_rank_copy(char *dst, const char *src, size_t bytes)
{
    size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t head = 0;
    if ((((uintptr_t)dst | (uintptr_t)src) & 15) == 0) {
        size_t words = bytes / 16;
        const uint4 *s = (const uint4 *)src;
        uint4 *d = (uint4 *)dst;
        for (size_t i = tid; i < words; i += stride)
            d[i] = s[i];
        head = words * 16;
    }
    for (size_t i = head + tid; i < bytes; i += stride)
        dst[i] = src[i];
}

extern "C" int kern_dev_cu_copy(void *dst, const void *src, size_t bytes, void *stream)
{
    size_t blocks = (bytes + 16 * COPY_THREADS - 1) / (16 * COPY_THREADS);
    if (blocks > COPY_MAX_BLOCKS)
        blocks = COPY_MAX_BLOCKS;
    if (blocks == 0)
        blocks = 1;
    /* A small copy gets one block of as few warps as its 16-byte words need. */
    unsigned threads = COPY_THREADS;
    if (blocks == 1) {
        size_t words = (bytes + 15) / 16;
        threads = (unsigned)((words + 31) / 32 * 32);
        if (threads == 0)
            threads = 32;
    }
    one_rank_copy<<<(unsigned)blocks, threads, 0, (cudaStream_t)stream>>>((char *)dst,
                                                                          (const char *)src, bytes);
    return (int)cudaGetLastError();
}

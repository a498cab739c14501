/*
 * host_copy.h - the host executor's copy of one source to two destinations in one pass: a rank
 * that sends its own data through a connector slot and keeps a copy in its output buffer
 * (AllGather, the Broadcast root out of place), or passes received data on along a chain (the
 * middle ranks of Broadcast, AllGather and the ring AllReduce), reads the source once instead of
 * twice. On the 2-core EPYC of the host benchmark, two memcpy calls of 128 KiB copy 24 GB/s of
 * input in the cache, this copy 32 GB/s (AVX2) and 29 GB/s (SSE2); 13.5 and 15 GB/s from memory.
 */
#ifndef ECCL_KERNELS_HOST_COPY_H
#define ECCL_KERNELS_HOST_COPY_H

#include <stddef.h>

/* Copies n bytes of src to a and to b; none of the three may overlap another. */
void kern_copy2(void *a, void *b, const void *src, size_t n);

/* The same with the instruction set named (tests reach every variant through it); one the CPU
 * lacks falls back to the next one down. */
enum kern_copy2_isa {
    KERN_COPY2_AUTO,   /* the best the CPU has: what kern_copy2 uses */
    KERN_COPY2_AVX2,   /* x86-64 with AVX2 */
    KERN_COPY2_SSE2,   /* any x86-64 */
    KERN_COPY2_MEMCPY, /* two memcpy calls */
};
void kern_copy2_isa(void *a, void *b, const void *src, size_t n, enum kern_copy2_isa isa);

/* Streaming copies into a connector slot. Ordinary stores leave the slot's lines dirty in the
 * writer's cache, where the reader on another core fetches them one by one; across the dies of
 * an EPYC (or the sockets of a larger host) that transfer takes 4 to 5 times longer than from
 * a neighbour core, and the reader copies at a fraction of the memory's rate. Streaming
 * (non-temporal) stores put the lines in memory instead, which the reader streams at full rate
 * wherever it runs; between neighbour cores they cost a quarter of the copy rate.
 * kern_copy_stream copies src to dst with streaming stores; kern_copy2_stream copies src to a
 * (ordinary stores) and to b (streaming). Both end with a store fence, so that a release store
 * after them orders the data before it. Without SSE2 they are memcpy. */
void kern_copy_stream(void *dst, const void *src, size_t n);
void kern_copy2_stream(void *a, void *b, const void *src, size_t n);
void kern_copy2_stream_isa(void *a, void *b, const void *src, size_t n, enum kern_copy2_isa isa);

#endif

/*
 * host_copy.c - one source to two destinations in one pass (see host_copy.h): AVX2 where the
 * CPU has it, SSE2 on other x86-64 CPUs, two memcpy calls elsewhere.
 */
#include "kernels/host_copy.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2"))) static size_t copy2_avx2(char *a, char *b, const char *s, size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
        __m256i y = _mm256_loadu_si256((const __m256i *)(const void *)(s + i + 32));
        _mm256_storeu_si256((__m256i *)(void *)(a + i), x);
        _mm256_storeu_si256((__m256i *)(void *)(a + i + 32), y);
        _mm256_storeu_si256((__m256i *)(void *)(b + i), x);
        _mm256_storeu_si256((__m256i *)(void *)(b + i + 32), y);
    }
    return i;
}

/* The streaming variants: b must be 32-byte aligned (AVX2) or 16-byte aligned (SSE2); a may
 * be NULL (one destination). */
__attribute__((target("avx2"))) static size_t copy2_stream_avx2(char *a, char *b, const char *s,
                                                                size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
        __m256i y = _mm256_loadu_si256((const __m256i *)(const void *)(s + i + 32));
        if (a) {
            _mm256_storeu_si256((__m256i *)(void *)(a + i), x);
            _mm256_storeu_si256((__m256i *)(void *)(a + i + 32), y);
        }
        _mm256_stream_si256((__m256i *)(void *)(b + i), x);
        _mm256_stream_si256((__m256i *)(void *)(b + i + 32), y);
    }
    return i;
}

static size_t copy2_stream_sse2(char *a, char *b, const char *s, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 16));
        if (a) {
            _mm_storeu_si128((__m128i *)(void *)(a + i), x);
            _mm_storeu_si128((__m128i *)(void *)(a + i + 16), y);
        }
        _mm_stream_si128((__m128i *)(void *)(b + i), x);
        _mm_stream_si128((__m128i *)(void *)(b + i + 16), y);
    }
    return i;
}

static size_t copy2_sse2(char *a, char *b, const char *s, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 16));
        _mm_storeu_si128((__m128i *)(void *)(a + i), x);
        _mm_storeu_si128((__m128i *)(void *)(a + i + 16), y);
        _mm_storeu_si128((__m128i *)(void *)(b + i), x);
        _mm_storeu_si128((__m128i *)(void *)(b + i + 16), y);
    }
    return i;
}

static bool have_avx2(void)
{
    /* -1: not asked yet; two threads that ask at once store the same answer. */
    static _Atomic int avx2 = -1;
    int v = atomic_load_explicit(&avx2, memory_order_relaxed);
    if (v < 0) {
        v = __builtin_cpu_supports("avx2") ? 1 : 0;
        atomic_store_explicit(&avx2, v, memory_order_relaxed);
    }
    return v == 1;
}
#endif

void kern_copy2_isa(void *a, void *b, const void *src, size_t n, enum kern_copy2_isa isa)
{
    size_t done = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == KERN_COPY2_AUTO || isa == KERN_COPY2_AVX2)
        isa = have_avx2() ? KERN_COPY2_AVX2 : KERN_COPY2_SSE2;
    /* Below a few lines the calls' fixed cost dominates: memcpy is as good. */
    if (n >= 256 && isa == KERN_COPY2_AVX2)
        done = copy2_avx2(a, b, src, n);
    else if (n >= 256 && isa == KERN_COPY2_SSE2)
        done = copy2_sse2(a, b, src, n);
#else
    (void)isa;
#endif
    memcpy((char *)a + done, (const char *)src + done, n - done);
    memcpy((char *)b + done, (const char *)src + done, n - done);
}

void kern_copy2_stream_isa(void *a, void *b, const void *src, size_t n, enum kern_copy2_isa isa)
{
    char *ca = a, *cb = b;
    const char *cs = src;
    size_t done = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == KERN_COPY2_AUTO || isa == KERN_COPY2_AVX2)
        isa = have_avx2() ? KERN_COPY2_AVX2 : KERN_COPY2_SSE2;
    if (isa != KERN_COPY2_MEMCPY && n >= 256) {
        /* Ordinary stores up to b's first aligned byte, streaming ones after it. */
        size_t align = isa == KERN_COPY2_AVX2 ? 32 : 16;
        size_t head = (align - ((uintptr_t)cb & (align - 1))) & (align - 1);
        if (ca)
            memcpy(ca, cs, head);
        memcpy(cb, cs, head);
        done = head;
        done += isa == KERN_COPY2_AVX2
                    ? copy2_stream_avx2(ca ? ca + done : NULL, cb + done, cs + done, n - done)
                    : copy2_stream_sse2(ca ? ca + done : NULL, cb + done, cs + done, n - done);
        _mm_sfence();
    }
#else
    (void)isa;
#endif
    if (ca)
        memcpy(ca + done, cs + done, n - done);
    memcpy(cb + done, cs + done, n - done);
}

void kern_copy_stream(void *dst, const void *src, size_t n)
{
    kern_copy2_stream_isa(NULL, dst, src, n, KERN_COPY2_AUTO);
}

void kern_copy2_stream(void *a, void *b, const void *src, size_t n)
{
    kern_copy2_stream_isa(a, b, src, n, KERN_COPY2_AUTO);
}

void kern_copy2(void *a, void *b, const void *src, size_t n)
{
    kern_copy2_isa(a, b, src, n, KERN_COPY2_AUTO);
}

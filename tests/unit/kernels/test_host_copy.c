/*
 * test_host_copy.c - kern_copy2 (kernels/host_copy.h), the host executor's copy of one source to
 * two destinations, and its streaming-store variants (kern_copy2_stream_isa with two
 * destinations and with one): every instruction-set variant, for every length from 0 to 1100 bytes (around
 * the 256-byte switch to the vector loops and their 32- and 64-byte steps) and for a slot-sized
 * length with an odd tail, at every misalignment of source and destinations within a line, gives
 * both destinations exactly the source and writes no byte outside them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/host_copy.h"

#define GUARD 64
#define BIG   (128 * 1024 + 77)

static const enum kern_copy2_isa isas[] = {KERN_COPY2_AUTO, KERN_COPY2_AVX2, KERN_COPY2_SSE2,
                                           KERN_COPY2_MEMCPY};

static uint8_t pattern(size_t i, int salt)
{
    return (uint8_t)(i * 131u + (size_t)salt * 17u + 1u);
}

/* How check_one copies: kern_copy2_isa, kern_copy2_stream_isa into a and b, or into b alone. */
enum way { WAY_COPY2, WAY_STREAM2, WAY_STREAM1, NWAYS };

/* Copies n bytes from src + so to a + ao (unless WAY_STREAM1) and b + bo and checks both and
 * their guards. */
static void check_one(uint8_t *src, uint8_t *a, uint8_t *b, size_t n, size_t so, size_t ao,
                      size_t bo, enum kern_copy2_isa isa, enum way way, int salt)
{
    size_t span = n + 2 * GUARD + 64;
    for (size_t i = 0; i < span; i++)
        src[i] = pattern(i, salt);
    memset(a, 0xa5, span);
    memset(b, 0x5a, span);
    if (way == WAY_COPY2)
        kern_copy2_isa(a + GUARD + ao, b + GUARD + bo, src + GUARD + so, n, isa);
    else
        kern_copy2_stream_isa(way == WAY_STREAM2 ? a + GUARD + ao : NULL, b + GUARD + bo,
                              src + GUARD + so, n, isa);
    for (size_t i = 0; i < span; i++) {
        bool in_a = way != WAY_STREAM1 && i >= GUARD + ao && i < GUARD + ao + n;
        bool in_b = i >= GUARD + bo && i < GUARD + bo + n;
        uint8_t want_a = in_a ? pattern(i - ao + so, salt) : 0xa5;
        uint8_t want_b = in_b ? pattern(i - bo + so, salt) : 0x5a;
        if (a[i] != want_a || b[i] != want_b)
            fail_msg("isa %d, way %d, %zu bytes, offsets src %zu a %zu b %zu: byte %zu is "
                     "%u/%u, expected %u/%u",
                     (int)isa, (int)way, n, so, ao, bo, i, a[i], b[i], want_a, want_b);
    }
}

static void test_lengths(void **state)
{
    (void)state;
    size_t span = 1100 + 2 * GUARD + 64;
    uint8_t *src = malloc(span), *a = malloc(span), *b = malloc(span);
    assert_non_null(src);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++)
        for (int way = 0; way < NWAYS; way++)
            for (size_t n = 0; n <= 1100; n++)
                check_one(src, a, b, n, n % 7, (n * 5) % 64, (n * 11) % 64, isas[k], (enum way)way,
                          (int)n);
    free(src);
    free(a);
    free(b);
}

static void test_alignments(void **state)
{
    (void)state;
    size_t span = BIG + 2 * GUARD + 64;
    uint8_t *src = malloc(span), *a = malloc(span), *b = malloc(span);
    assert_non_null(src);
    assert_non_null(a);
    assert_non_null(b);
    static const size_t offs[] = {0, 1, 8, 16, 31, 32, 33, 63};
    size_t no = sizeof(offs) / sizeof(offs[0]);
    for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++)
        for (int way = 0; way < NWAYS; way++)
            for (size_t i = 0; i < no; i++)
                for (size_t j = 0; j < no; j++)
                    check_one(src, a, b, BIG, offs[i], offs[j], offs[(i + j) % no], isas[k],
                              (enum way)way, (int)(i * no + j));
    free(src);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_alignments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

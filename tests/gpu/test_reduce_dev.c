/*
 * test_reduce_dev.c - the CUDA reduction functors (kernels/reduce_dev.cuh) against the host
 * implementation, through kern_dev_reduce_selftest: every data type x reduction kind, every step
 * (combine, local, pre, post), bit for bit, for a few sizes (a tail, a multi-block grid, a grid
 * larger than the launch so the stride loop wraps).
 *
 * Exits 77 (skip) where no CUDA device is present, after checking that the self-test then fails
 * cleanly (ecclUnhandledCudaError, or ecclInvalidUsage in a build without CUDA) instead of
 * crashing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "eccl.h"
#include "kernels/reduce.h"
#include "kernels/reduce_dev.h"

static const size_t sizes[] = {1, 1000, (1u << 20) + 3};

static void test_dev_reduce_all(void **state)
{
    (void)state;
    int failed = 0;
    for (int dt = 0; dt < ecclNumTypes; dt++) {
        for (int kind = 0; kind < ECCL_RED_COUNT; kind++) {
            for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                char msg[256];
                ecclResult_t res = kern_dev_reduce_selftest(dt, kind, sizes[s], msg, sizeof(msg));
                if (res != ecclSuccess) {
                    print_error("%s %s n %zu: result %d: %s\n", eccl_dtype_name(dt),
                                eccl_redop_name(kind), sizes[s], (int)res, msg);
                    failed++;
                }
            }
        }
    }
    assert_int_equal(failed, 0);
}

static void test_dev_reduce_bad_args(void **state)
{
    (void)state;
    char msg[64];
    assert_int_equal(kern_dev_reduce_selftest(ecclNumTypes, ECCL_RED_SUM, 8, msg, sizeof(msg)),
                     ecclInvalidArgument);
    assert_int_equal(kern_dev_reduce_selftest(ecclFloat32, ECCL_RED_COUNT, 8, msg, sizeof(msg)),
                     ecclInvalidArgument);
    /* n == 0 launches nothing useful but must work. */
    assert_int_equal(kern_dev_reduce_selftest(ecclFloat16, ECCL_RED_SUM, 0, NULL, 0), ecclSuccess);
}

int main(void)
{
    if (kern_dev_count() <= 0) {
        char msg[128];
        ecclResult_t res =
            kern_dev_reduce_selftest(ecclFloat32, ECCL_RED_SUM, 16, msg, sizeof(msg));
#ifdef ECCL_HAVE_CUDA
        ecclResult_t want = ecclUnhandledCudaError;
#else
        ecclResult_t want = ecclInvalidUsage;
#endif
        if (res != want) {
            fprintf(stderr, "without a device the self-test gave %d (%s), want %d\n", (int)res, msg,
                    (int)want);
            return 1;
        }
        printf("no CUDA device: skipped (self-test without one: %s)\n", msg);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev_reduce_bad_args),
        cmocka_unit_test(test_dev_reduce_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

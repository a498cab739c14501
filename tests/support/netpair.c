/*
 * netpair.c - a backend connection with both ends in the test, and requests driven to
 * completion (netpair.h).
 */
#include "tests/support/netpair.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/time.h"

void netpair_connect(const struct eccl_net_ops *ops, int dev, void *lc, const void *handle,
                     void **sc, void **rc, int timeout_ms)
{
    uint64_t deadline = eccl_deadline_ms(timeout_ms);
    *sc = *rc = NULL;
    while (!*sc || !*rc) {
        assert_false(eccl_deadline_passed(deadline));
        if (!*sc)
            assert_int_equal(ops->connect(dev, handle, sc), ecclSuccess);
        if (!*rc)
            assert_int_equal(ops->accept(lc, rc), ecclSuccess);
    }
}

ecclResult_t netpair_drive(const struct eccl_net_ops *ops, void **reqs, size_t *sizes, int n,
                           int timeout_ms)
{
    uint64_t deadline = eccl_deadline_ms(timeout_ms);
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            if (!reqs[i])
                continue;
            int done = 0;
            ecclResult_t r = ops->test(reqs[i], &done, &sizes[i]);
            if (r != ecclSuccess)
                return r;
            if (done)
                reqs[i] = NULL;
            else
                left++;
        }
        if (left == 0)
            return ecclSuccess;
        if (eccl_deadline_passed(deadline)) {
            fail_msg("requests not done after %d ms", timeout_ms);
            return ecclInternalError;
        }
    }
}

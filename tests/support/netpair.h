/*
 * netpair.h - one connection of a network backend (proxy/net.h) with both ends in the calling
 * test, and requests driven to completion: what the backend tests (test_net_socket,
 * test_net_auth) build their cases on. Both use cmocka: a failure fails the running test.
 */
#ifndef ECCL_TESTS_SUPPORT_NETPAIR_H
#define ECCL_TESTS_SUPPORT_NETPAIR_H

#include <stddef.h>

#include "proxy/net.h"

/* Connects from device `dev` to the listener lc (whose handle is `handle`) and accepts there,
 * calling connect and accept in turn (either may return no comm yet: the setup is a
 * non-blocking conversation) until both ends are made: *sc (send) and *rc (receive). Fails the
 * test when a call fails or timeout_ms pass. */
void netpair_connect(const struct eccl_net_ops *ops, int dev, void *lc, const void *handle,
                     void **sc, void **rc, int timeout_ms);
/* Tests every request of reqs[0..n) until all are done: a done request's entry becomes NULL
 * (NULL entries count as done) and sizes[i] gets its size. ecclSuccess, or the first test that
 * fails, with its result; fails the test when some are not done after timeout_ms. */
ecclResult_t netpair_drive(const struct eccl_net_ops *ops, void **reqs, size_t *sizes, int n,
                           int timeout_ms);

#endif

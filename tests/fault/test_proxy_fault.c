/*
 * test_proxy_fault.c - one rank's proxy thread dies (fault site proxy_thread), its UDS service
 * thread dies (svc_thread), or its service connections close under a live process (uds_close);
 * FAULT=1 builds only, skipped otherwise. The fault is armed after init, so it strikes while
 * the ranks run AllReduce in a loop.
 * - A dead proxy thread (proxy_thread): the rank's own service sees its heartbeat stop and the
 *   thread gone, and revokes the communicator for every local peer; a stuck one (proxy_stall)
 *   is reported after ECCL_PROXY_STALL_MS (200 ms here).
 * - A dead service thread: the process lives on and keeps its sockets open, so nothing closes:
 *   the other ranks see the missing heartbeats (20 ms x 5 here) and fail; the rank whose
 *   service died fails too, because its peers close their connectors when they give up.
 * - Closed service connections: peers see EOF at once.
 * Every rank must return ecclRemoteError within a bound that proves no hang, then abort cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/fault.h"
#include "eccl.h"
#include "tests/support/mp.h"

#define NRANKS 3
#define FAULTY 1

#ifdef ECCL_FAULT_ENABLED

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    const char *site = arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess) {
        printf("rank %d: init failed: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    if (rank == FAULTY)
        eccl_fault_arm(site, 3, false); /* a few loop passes from now */
    float a[4096], b[4096];
    for (int i = 0; i < 4096; i++)
        a[i] = 1.0f;
    double t0 = mp_now_ms();
    ecclResult_t r = ecclSuccess;
    /* Collectives until the failure is seen; 10 s would mean a hang. */
    while (r == ecclSuccess && mp_now_ms() - t0 < 10000)
        r = ecclAllReduce(a, b, 4096, ecclFloat, ecclSum, comm, NULL);
    double took = mp_now_ms() - t0;
    int bad = 0;
    if (r != ecclRemoteError) {
        printf("rank %d: the loop ended with %d (%s), want ecclRemoteError\n", rank, r,
               ecclGetErrorString(r));
        bad = 1;
    }
    if (took > 5000) {
        printf("rank %d: the failure took %.0f ms to be seen\n", rank, took);
        bad = 1;
    }
    printf("rank %d: failed after %.0f ms: %s\n", rank, took, ecclGetLastError(comm));
    bad |= ecclCommAbort(comm) != ecclSuccess;
    return bad;
}

static void test_proxy_thread_dies(void **s)
{
    (void)s;
    assert_int_equal(mp_run(NRANKS, rank_main, (void *)"proxy_thread", 60000), 0);
}

/* Alive but stuck: reported after ECCL_PROXY_STALL_MS (200 here). */
static void test_proxy_thread_stalls(void **s)
{
    (void)s;
    assert_int_equal(mp_run(NRANKS, rank_main, (void *)"proxy_stall", 60000), 0);
}

static void test_service_thread_dies(void **s)
{
    (void)s;
    assert_int_equal(mp_run(NRANKS, rank_main, (void *)"svc_thread", 60000), 0);
}

/* The service's sockets close under a live process: peers see EOF at once. */
static void test_uds_closed(void **s)
{
    (void)s;
    assert_int_equal(mp_run(NRANKS, rank_main, (void *)"uds_close", 60000), 0);
}

#endif

int main(void)
{
#ifndef ECCL_FAULT_ENABLED
    printf("SKIP: needs a build with FAULT=1 (make test-fault)\n");
    return 77;
#else
    mp_env_setup();
    setenv("ECCL_PROXY_HEARTBEAT_MS", "20", 0);
    setenv("ECCL_PROXY_HEARTBEAT_MISSES", "5", 0);
    setenv("ECCL_PROXY_STALL_MS", "200", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_thread_dies), cmocka_unit_test(test_proxy_thread_stalls),
        cmocka_unit_test(test_service_thread_dies), cmocka_unit_test(test_uds_closed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}

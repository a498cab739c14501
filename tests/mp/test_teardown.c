/*
 * test_teardown.c - a rank that destroys its communicator as soon as its last collective
 * returns must not break that collective for the others (4 rank processes).
 *
 * A rank's collective returns once its own part is done: what it sent may still be on its way
 * (in a NET connector's slots, waiting for the proxy; in the socket). Each round: every rank
 * makes a communicator, runs one AllReduce, checks it, and destroys the communicator at once
 * (ecclCommDestroy, or ecclCommFinalize then ecclCommDestroy); the rank that finishes first
 * tears down while the others still receive. Every rank's AllReduce must succeed with the right
 * sum and no rank may see the communicator fail (ecclCommGetAsyncError after the call). Run over
 * TCP only (ECCL_SHM_DISABLE=1, ECCL_NET=socket on loopback) and over shared memory, at 4 bytes,
 * 256 KiB and 4 MiB (several steps of the pipeline in flight).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

#define NRANKS 4
#define ROUNDS 10

struct td_arg {
    size_t count; /* int32 elements */
    bool finalize;
};

static int32_t value_of(int rank, size_t i)
{
    return (int32_t)((size_t)rank * 7919u + i * 31u) % 100003;
}

static int teardown_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    const struct td_arg *a = arg;
    int32_t *buf = malloc(a->count * sizeof(int32_t));
    if (!buf)
        return 1;
    for (size_t i = 0; i < a->count; i++)
        buf[i] = value_of(rank, i);
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess) {
        printf("FAIL rank %d: init: %s\n", rank, ecclGetLastError(NULL));
        free(buf);
        return 1;
    }
    int rc = 0;
    ecclResult_t r = ecclAllReduce(buf, buf, a->count, ecclInt32, ecclSum, comm, NULL);
    ecclResult_t async = ecclSuccess;
    ecclCommGetAsyncError(comm, &async);
    if (r != ecclSuccess || async != ecclSuccess) {
        printf("FAIL rank %d: AllReduce of %zu elements: %s, async %s: %s\n", rank, a->count,
               ecclGetErrorString(r), ecclGetErrorString(async), ecclGetLastError(comm));
        rc = 1;
    }
    for (size_t i = 0; i < a->count && !rc; i++) {
        int32_t want = 0;
        for (int q = 0; q < nranks; q++)
            want += value_of(q, i);
        if (buf[i] != want) {
            printf("FAIL rank %d: element %zu is %d, expected %d\n", rank, i, buf[i], want);
            rc = 1;
        }
    }
    if (a->finalize && ecclCommFinalize(comm) != ecclSuccess) {
        printf("FAIL rank %d: ecclCommFinalize: %s\n", rank, ecclGetLastError(comm));
        rc = 1;
    }
    if (ecclCommDestroy(comm) != ecclSuccess) {
        printf("FAIL rank %d: ecclCommDestroy: %s\n", rank, ecclGetLastError(NULL));
        rc = 1;
    }
    free(buf);
    return rc;
}

static void run_sizes(bool finalize)
{
    static const size_t counts[] = {1, 64 * 1024, 1024 * 1024};
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
        for (int round = 0; round < ROUNDS; round++) {
            struct td_arg a = {counts[k], finalize};
            if (mp_run(NRANKS, teardown_rank, &a, 30000) != 0)
                fail_msg("%zu elements, round %d, %s: a rank failed", counts[k], round,
                         finalize ? "finalize + destroy" : "destroy");
        }
}

static void test_net_destroy(void **state)
{
    (void)state;
    setenv("ECCL_SHM_DISABLE", "1", 1);
    run_sizes(false);
}

static void test_net_finalize(void **state)
{
    (void)state;
    setenv("ECCL_SHM_DISABLE", "1", 1);
    run_sizes(true);
}

static void test_shm_destroy(void **state)
{
    (void)state;
    unsetenv("ECCL_SHM_DISABLE");
    run_sizes(false);
}

int main(void)
{
    setenv("ECCL_NET", "socket", 1);
    setenv("ECCL_SOCKET_IFNAME", "lo", 1);
    setenv("ECCL_DEVICE", "host", 1);
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_destroy),
        cmocka_unit_test(test_net_finalize),
        cmocka_unit_test(test_shm_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

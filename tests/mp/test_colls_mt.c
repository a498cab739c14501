/*
 * test_colls_mt.c - the collective correctness matrix (tests/support/colls.c) with ranks as
 * threads of this process: 1, 3 and 8 ranks make their communicators with ecclCommInitRank in
 * their threads, 2 and 4 ranks get theirs from ecclCommInitAll. Also the classic single-thread
 * pattern of ecclCommInitAll: one thread drives every communicator inside one group.
 *
 * Same options as test_colls (--ranks --coll --type --op --count --inplace).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/colls.h"
#include "tests/support/data.h"
#include "tests/support/mp.h"

static struct tc_filter filter;

struct run_arg {
    struct tc_params p;
    struct tc_shared *sh;
};

static int thread_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct run_arg *a = arg;
    ecclComm_t comm;
    ecclResult_t res = mp_comm_init(&comm, nranks, id, rank);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommInitRankConfig returned %d (%s): %s\n",
               a->p.mode, nranks, rank, (int)res, ecclGetErrorString(res), ecclGetLastError(NULL));
        return 1;
    }
    int rc = tc_rank_run(&a->p, a->sh, rank, comm);
    if (rc != 0) {
        ecclCommAbort(comm);
        return rc;
    }
    res = ecclCommFinalize(comm);
    if (res == ecclSuccess)
        res = ecclCommDestroy(comm);
    else
        ecclCommAbort(comm);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommFinalize/Destroy returned %d: %s\n", a->p.mode,
               nranks, rank, (int)res, ecclGetLastError(NULL));
        return 1;
    }
    return 0;
}

static int thread_rank_initall(int rank, int nranks, ecclComm_t comm, void *arg)
{
    struct run_arg *a = arg;
    (void)nranks;
    return tc_rank_run(&a->p, a->sh, rank, comm);
}

static void run_threads(int nranks, bool initall, int timeout_ms)
{
    if (!tc_filter_ranks(&filter, nranks))
        skip();
    struct run_arg a = {.p = {.mode = initall ? "threads/InitAll" : "threads/InitRank",
                              .nranks = nranks,
                              .filter = filter}};
    a.sh = tc_shared_create(nranks);
    assert_non_null(a.sh);
    double t0 = mp_now_ms();
    int rc = initall ? mt_run_comms(nranks, thread_rank_initall, &a, timeout_ms)
                     : mt_run(nranks, thread_rank, &a, timeout_ms);
    long bad = tc_summary(&a.p, a.sh, mp_now_ms() - t0);
    tc_shared_destroy(a.sh);
    assert_int_equal(rc, 0);
    assert_int_equal(bad, 0);
}

static void test_threads_1(void **state)
{
    (void)state;
    run_threads(1, false, 120000);
}

static void test_threads_2_initall(void **state)
{
    (void)state;
    run_threads(2, true, 120000);
}

static void test_threads_3(void **state)
{
    (void)state;
    run_threads(3, false, 120000);
}

static void test_threads_4_initall(void **state)
{
    (void)state;
    run_threads(4, true, 150000);
}

static void test_threads_8(void **state)
{
    (void)state;
    run_threads(8, false, 240000);
}

/* One thread, four communicators from ecclCommInitAll, one group per collective: the way a
 * single-process multi-device program drives NCCL. Runs on a helper thread so that a hang ends
 * at mt_run's deadline instead of blocking the test binary. */
#define ONE_N   4
#define ONE_CNT 1023

static int one_thread_body(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)rank;
    (void)nranks;
    (void)id;
    (void)arg;
    ecclComm_t comms[ONE_N];
    ecclResult_t res = ecclCommInitAll(comms, ONE_N, NULL);
    if (res != ecclSuccess) {
        printf("FAIL ecclCommInitAll(%d) returned %d: %s\n", ONE_N, (int)res,
               ecclGetLastError(NULL));
        return 1;
    }
    int bad = 0;
    struct td_gen g, gb;
    if (td_gen_init(&g, ecclFloat32, TD_SUM, ONE_N, 77, ONE_CNT) != 0 ||
        td_gen_init(&gb, ecclInt64, TD_NO_OP, ONE_N, 78, ONE_CNT) != 0)
        abort();
    float *send[ONE_N], *recv[ONE_N];
    int64_t *bbuf[ONE_N];
    for (int r = 0; r < ONE_N; r++) {
        send[r] = calloc(ONE_CNT, sizeof(float));
        recv[r] = calloc(ONE_CNT, sizeof(float));
        bbuf[r] = calloc(ONE_CNT, sizeof(int64_t));
        if (send[r] == NULL || recv[r] == NULL || bbuf[r] == NULL)
            abort();
        td_gen_fill(&g, send[r], ONE_CNT, r, 0);
        td_gen_fill(&gb, bbuf[r], ONE_CNT, r, 0);
    }
    ecclResult_t r1 = ecclGroupStart(), r2 = ecclSuccess;
    for (int r = 0; r < ONE_N && r2 == ecclSuccess; r++)
        r2 = ecclAllReduce(send[r], recv[r], ONE_CNT, ecclFloat32, ecclSum, comms[r], NULL);
    ecclResult_t r3 = ecclGroupEnd();
    if (r1 != ecclSuccess || r2 != ecclSuccess || r3 != ecclSuccess) {
        printf("FAIL one-thread group AllReduce: start %d, enqueue %d, end %d: %s\n", (int)r1,
               (int)r2, (int)r3, ecclGetLastError(NULL));
        bad++;
    } else {
        for (int r = 0; r < ONE_N; r++) {
            for (size_t j = 0; j < ONE_CNT; j++) {
                double want = td_reference(&g, TD_SUM, j);
                if (recv[r][j] != want) {
                    printf("FAIL one-thread group AllReduce: comm %d [%zu] got %g expected %g\n", r,
                           j, (double)recv[r][j], want);
                    bad++;
                    break;
                }
            }
        }
    }
    r1 = ecclGroupStart();
    r2 = ecclSuccess;
    for (int r = 0; r < ONE_N && r2 == ecclSuccess; r++)
        r2 = ecclBcast(bbuf[r], ONE_CNT, ecclInt64, 2, comms[r], NULL);
    r3 = ecclGroupEnd();
    if (r1 != ecclSuccess || r2 != ecclSuccess || r3 != ecclSuccess) {
        printf("FAIL one-thread group Bcast: start %d, enqueue %d, end %d: %s\n", (int)r1, (int)r2,
               (int)r3, ecclGetLastError(NULL));
        bad++;
    } else {
        for (int r = 0; r < ONE_N; r++) {
            for (size_t j = 0; j < ONE_CNT; j++) {
                if ((double)bbuf[r][j] != td_gen_value(&gb, 2, j)) {
                    printf("FAIL one-thread group Bcast: comm %d [%zu] wrong\n", r, j);
                    bad++;
                    break;
                }
            }
        }
    }
    /* NCCL's way to finalize several communicators from one thread: inside a group. */
    r1 = ecclGroupStart();
    for (int r = 0; r < ONE_N; r++) {
        ecclResult_t f = ecclCommFinalize(comms[r]);
        if (f != ecclSuccess) {
            printf("FAIL ecclCommFinalize(comm %d) in a group returned %d: %s\n", r, (int)f,
                   ecclGetLastError(NULL));
            bad++;
        }
    }
    r3 = ecclGroupEnd();
    if (r1 != ecclSuccess || r3 != ecclSuccess) {
        printf("FAIL group around ecclCommFinalize: start %d, end %d: %s\n", (int)r1, (int)r3,
               ecclGetLastError(NULL));
        bad++;
    }
    for (int r = 0; r < ONE_N; r++) {
        ecclResult_t d = ecclCommDestroy(comms[r]);
        if (d != ecclSuccess) {
            printf("FAIL ecclCommDestroy(comm %d) returned %d: %s\n", r, (int)d,
                   ecclGetLastError(NULL));
            bad++;
        }
        free(send[r]);
        free(recv[r]);
        free(bbuf[r]);
    }
    td_gen_fini(&g);
    td_gen_fini(&gb);
    return bad;
}

static void test_initall_one_thread_groups(void **state)
{
    (void)state;
    if (!tc_filter_ranks(&filter, ONE_N) || filter.coll >= 0 || filter.dtype >= 0)
        skip();
    assert_int_equal(mt_run(1, one_thread_body, NULL, 30000), 0);
}

int main(int argc, char **argv)
{
    mp_env_setup();
    tc_filter_init(&filter);
    if (tc_filter_parse(&filter, argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_1), cmocka_unit_test(test_threads_2_initall),
        cmocka_unit_test(test_threads_3), cmocka_unit_test(test_threads_4_initall),
        cmocka_unit_test(test_threads_8), cmocka_unit_test(test_initall_one_thread_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_colls.c - the collective correctness matrix with ranks as processes (tests/support/colls.c
 * says what it covers): one communicator per rank count (1, 2, 3, 4, 8), the whole matrix inside
 * it, then back-to-back rooted collectives and mixed groups. The full matrix runs at every rank
 * count (about 25 s on 2 idle cores); --quick trims the largest size at 8 ranks.
 *
 * Options narrow the run to one case: test_colls --ranks 4 --coll AllReduce --type half --op avg
 * --count 7 --inplace 1 (each failure line prints its own).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

static int proc_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
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
        /* The peers may be gone or stuck: do not wait for them. */
        ecclCommAbort(comm);
        return rc;
    }
    res = ecclCommFinalize(comm);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommFinalize returned %d: %s\n", a->p.mode, nranks,
               rank, (int)res, ecclGetLastError(comm));
        ecclCommAbort(comm);
        return 1;
    }
    res = ecclCommDestroy(comm);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommDestroy returned %d: %s\n", a->p.mode, nranks,
               rank, (int)res, ecclGetLastError(NULL));
        return 1;
    }
    return 0;
}

static void run_procs(int nranks, int timeout_ms)
{
    if (!tc_filter_ranks(&filter, nranks))
        skip();
    struct run_arg a = {.p = {.mode = "processes", .nranks = nranks, .filter = filter}};
    a.sh = tc_shared_create(nranks);
    assert_non_null(a.sh);
    double t0 = mp_now_ms();
    struct mp_opts o = {
        .nranks = nranks, .fn = proc_rank, .arg = &a, .timeout_ms = timeout_ms, .fail_fast = true};
    struct mp_report rep;
    int rc = mp_run_opts(&o, &rep);
    long bad = tc_summary(&a.p, a.sh, mp_now_ms() - t0);
    tc_shared_destroy(a.sh);
    assert_int_equal(rc, 0);
    assert_int_equal(bad, 0);
}

static void test_conversions(void **state)
{
    (void)state;
    assert_int_equal(td_selfcheck(), 0);
}

static void test_procs_1(void **state)
{
    (void)state;
    run_procs(1, 120000);
}

static void test_procs_2(void **state)
{
    (void)state;
    run_procs(2, 120000);
}

static void test_procs_3(void **state)
{
    (void)state;
    run_procs(3, 120000);
}

static void test_procs_4(void **state)
{
    (void)state;
    run_procs(4, 150000);
}

static void test_procs_8(void **state)
{
    (void)state;
    run_procs(8, 240000);
}

int main(int argc, char **argv)
{
    mp_env_setup();
    tc_filter_init(&filter);
    if (tc_filter_parse(&filter, argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversions), cmocka_unit_test(test_procs_1),
        cmocka_unit_test(test_procs_2),     cmocka_unit_test(test_procs_3),
        cmocka_unit_test(test_procs_4),     cmocka_unit_test(test_procs_8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

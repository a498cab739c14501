/*
 * test_harness.c - the multi-rank harness itself (tests/support/mp.c), without eccl
 * communicators: pass/fail per rank with exit statuses, the hard deadline that SIGKILLs every
 * child, fail-fast, SIGKILL and SIGSTOP/SIGCONT of a rank at a point it reports, the shared
 * barrier, and the thread variant.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

static int exit_rank_code(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    (void)arg;
    return rank == 2 ? 7 : 0;
}

static void test_exit_codes(void **state)
{
    (void)state;
    struct mp_opts o = {
        .nranks = 4, .fn = exit_rank_code, .timeout_ms = 10000, .no_id = true, .quiet = true};
    struct mp_report rep;
    assert_int_equal(mp_run_opts(&o, &rep), -1);
    assert_int_equal(rep.failed, 1);
    for (int r = 0; r < 4; r++) {
        assert_true(rep.rank[r].exited);
        assert_int_equal(rep.rank[r].exit_code, r == 2 ? 7 : 0);
        assert_int_equal(rep.rank[r].passed, r != 2);
    }
}

static int crash_or_sleep(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    bool crash = arg != NULL;
    if (rank == 1 && crash)
        raise(SIGSEGV);
    if (rank == 1)
        return 0;
    sleep(60); /* the deadline (or fail-fast) must end it */
    return 0;
}

static void test_timeout_kills_all(void **state)
{
    (void)state;
    struct mp_opts o = {
        .nranks = 3, .fn = crash_or_sleep, .timeout_ms = 300, .no_id = true, .quiet = true};
    struct mp_report rep;
    double t0 = mp_now_ms();
    assert_int_equal(mp_run_opts(&o, &rep), -1);
    assert_true(mp_now_ms() - t0 < 5000);
    assert_true(rep.timed_out);
    assert_true(rep.rank[1].passed);
    for (int r = 0; r < 3; r += 2) {
        assert_true(rep.rank[r].killed_at_timeout);
        assert_int_equal(rep.rank[r].term_signal, SIGKILL);
        assert_false(rep.rank[r].passed);
    }
}

static void test_fail_fast(void **state)
{
    (void)state;
    int crash = 1;
    struct mp_opts o = {.nranks = 3,
                        .fn = crash_or_sleep,
                        .arg = &crash,
                        .timeout_ms = 20000,
                        .no_id = true,
                        .fail_fast = true,
                        .quiet = true};
    struct mp_report rep;
    double t0 = mp_now_ms();
    assert_int_equal(mp_run_opts(&o, &rep), -1);
    assert_true(mp_now_ms() - t0 < 5000);
    assert_false(rep.timed_out);
    assert_int_equal(rep.rank[1].term_signal, SIGSEGV);
    assert_true(rep.rank[0].killed_fail_fast);
    assert_true(rep.rank[2].killed_fail_fast);
}

/* Rank 1 reports "before" and "after"; whatever reaches "after" exits 3. */
static int points_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    (void)arg;
    mp_point("before");
    if (rank == 1) {
        mp_point("after");
        return 3;
    }
    return 0;
}

static void test_kill_at_point(void **state)
{
    (void)state;
    struct mp_action act = {.point = "before", .rank = 1, .target = -1, .kind = MP_ACT_KILL};
    struct mp_opts o = {.nranks = 3,
                        .fn = points_fn,
                        .timeout_ms = 10000,
                        .no_id = true,
                        .actions = &act,
                        .nactions = 1};
    struct mp_report rep;
    /* Rank 1 dies at "before", so it never returns 3: everyone passes. */
    assert_int_equal(mp_run_opts(&o, &rep), 0);
    assert_true(rep.rank[1].acted_kill);
    assert_int_equal(rep.rank[1].term_signal, SIGKILL);
    assert_int_equal(rep.rank[1].points, 1);
    assert_true(rep.rank[0].exited);
}

/* Stopped at a point, continued later: the rank finishes, late. */
static int stop_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    (void)arg;
    double t0 = mp_now_ms();
    mp_point("stop-here");
    if (rank == 0 && mp_now_ms() - t0 < 250)
        return 5; /* it was not stopped */
    return 0;
}

static void test_stop_and_continue(void **state)
{
    (void)state;
    struct mp_action act = {
        .point = "stop-here", .rank = 0, .target = -1, .kind = MP_ACT_STOP, .cont_after_ms = 300};
    struct mp_opts o = {.nranks = 2,
                        .fn = stop_fn,
                        .timeout_ms = 10000,
                        .no_id = true,
                        .actions = &act,
                        .nactions = 1};
    struct mp_report rep;
    assert_int_equal(mp_run_opts(&o, &rep), 0);
    assert_true(rep.rank[0].acted_stop);
    assert_true(rep.rank[0].exited);
    assert_true(rep.rank[0].elapsed_ms >= 250);
}

/* A rank stopped for good is killed once the others are done, and counts as passed. */
static void test_stop_forever(void **state)
{
    (void)state;
    struct mp_action act = {.point = "stop-here", .rank = 1, .target = -1, .kind = MP_ACT_STOP};
    struct mp_opts o = {.nranks = 2,
                        .fn = stop_fn,
                        .timeout_ms = 10000,
                        .no_id = true,
                        .actions = &act,
                        .nactions = 1,
                        .quiet = true};
    struct mp_report rep;
    double t0 = mp_now_ms();
    /* Rank 0 is not stopped, so it returns 5 quickly: only rank 1's fate is checked here. */
    mp_run_opts(&o, &rep);
    assert_true(mp_now_ms() - t0 < 5000);
    assert_false(rep.timed_out);
    assert_true(rep.rank[1].acted_stop);
    assert_true(rep.rank[1].passed);
    assert_int_equal(rep.rank[1].term_signal, SIGKILL);
}

/* A kill aimed at another rank, on the second arrival at a point. */
static int loop_points_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    (void)arg;
    for (int i = 0; i < 3; i++)
        mp_point("step");
    if (rank == 2) {
        sleep(30); /* the action kills it before this ends */
        return 1;
    }
    return 0;
}

static void test_kill_other_rank_on_hit(void **state)
{
    (void)state;
    struct mp_action act = {.point = "step", .rank = 0, .hit = 2, .target = 2, .kind = MP_ACT_KILL};
    struct mp_opts o = {.nranks = 3,
                        .fn = loop_points_fn,
                        .timeout_ms = 10000,
                        .no_id = true,
                        .actions = &act,
                        .nactions = 1};
    struct mp_report rep;
    double t0 = mp_now_ms();
    assert_int_equal(mp_run_opts(&o, &rep), 0);
    assert_true(mp_now_ms() - t0 < 5000);
    assert_true(rep.rank[2].acted_kill);
    assert_int_equal(rep.rank[0].points, 3);
}

struct barrier_arg {
    struct mp_barrier *bar;
    _Atomic int *counter;
};

static int barrier_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)rank;
    (void)id;
    struct barrier_arg *a = arg;
    for (int round = 1; round <= 50; round++) {
        atomic_fetch_add(a->counter, 1);
        if (mp_barrier_wait(a->bar, 10000) != 0)
            return 1;
        if (atomic_load(a->counter) < round * nranks)
            return 2; /* someone passed the barrier early */
        if (mp_barrier_wait(a->bar, 10000) != 0)
            return 3;
    }
    return 0;
}

static void test_barrier_processes_and_threads(void **state)
{
    (void)state;
    struct mp_barrier *bar = mp_shm_alloc(sizeof(*bar) + sizeof(_Atomic int));
    assert_non_null(bar);
    struct barrier_arg a = {.bar = bar, .counter = (_Atomic int *)(bar + 1)};
    mp_barrier_init(bar, 4);
    struct mp_opts o = {
        .nranks = 4, .fn = barrier_fn, .arg = &a, .timeout_ms = 20000, .no_id = true};
    assert_int_equal(mp_run_opts(&o, NULL), 0);
    mp_barrier_init(bar, 3);
    atomic_store(a.counter, 0);
    assert_int_equal(mt_run(3, barrier_fn, &a, 20000), 0);
    mp_shm_free(bar, sizeof(*bar) + sizeof(_Atomic int));
}

static void test_barrier_timeout(void **state)
{
    (void)state;
    struct mp_barrier bar;
    mp_barrier_init(&bar, 2);
    double t0 = mp_now_ms();
    assert_int_equal(mp_barrier_wait(&bar, 100), -1);
    assert_true(mp_now_ms() - t0 < 2000);
    assert_int_equal(mp_barrier_wait(&bar, 100), -1); /* broken from now on */
}

static int thread_results_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    (void)arg;
    mp_point("ignored in threads");
    return rank == 1 ? 4 : 0;
}

static void test_threads_results(void **state)
{
    (void)state;
    int results[3];
    assert_int_equal(mt_run_ex(3, thread_results_fn, NULL, 10000, results), -1);
    assert_int_equal(results[0], 0);
    assert_int_equal(results[1], 4);
    assert_int_equal(results[2], 0);
}

int main(void)
{
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_timeout_kills_all),
        cmocka_unit_test(test_fail_fast),
        cmocka_unit_test(test_kill_at_point),
        cmocka_unit_test(test_stop_and_continue),
        cmocka_unit_test(test_stop_forever),
        cmocka_unit_test(test_kill_other_rank_on_hit),
        cmocka_unit_test(test_barrier_processes_and_threads),
        cmocka_unit_test(test_barrier_timeout),
        cmocka_unit_test(test_threads_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_bootstrap_timeout.c - a rank that never arrives: with ECCL_BOOTSTRAP_TIMEOUT=1000 (ms), a
 * 3-rank communicator whose rank 2 never calls init. Ranks 0 and 1 must get an error, not hang:
 * after the deadline (not before it) and well within 10 s, with a text that says it timed out
 * and names the missing rank. Afterwards no file descriptor or thread may be left over, neither
 * in the ranks nor in the process that made the id (it runs the bootstrap root).
 *
 * Run twice: ranks as threads of this process, and ranks as processes.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

#define TIMEOUT_MS 1000
#define NRANKS     3 /* rank 2 never comes */
#define LIMIT_MS   10000
#define SETTLE_MS  5000

struct rank_out {
    ecclResult_t result;
    double elapsed_ms;
    char text[1024];
    int fds_before, fds_after;
    int threads_before, threads_after;
};

struct run_state {
    struct rank_out out[2];
};

/* True when text holds the number n as a token of its own ("rank 2", "missing: 2"). */
static bool has_number(const char *text, int n)
{
    char want[16];
    snprintf(want, sizeof(want), "%d", n);
    size_t len = strlen(want);
    for (const char *p = text; (p = strstr(p, want)) != NULL; p++) {
        bool left = p == text || !isdigit((unsigned char)p[-1]);
        bool right = !isdigit((unsigned char)p[len]);
        if (left && right)
            return true;
    }
    return false;
}

static void init_absent_peer(int rank, const ecclUniqueId *id, struct rank_out *o)
{
    ecclComm_t comm = NULL;
    double t0 = mp_now_ms();
    o->result = mp_comm_init(&comm, NRANKS, id, rank);
    o->elapsed_ms = mp_now_ms() - t0;
    snprintf(o->text, sizeof(o->text), "%s", ecclGetLastError(NULL));
    if (o->result == ecclSuccess)
        ecclCommAbort(comm);
}

/* Checks one rank's outcome; prints and returns the number of problems. */
static int check_rank(int rank, const struct rank_out *o, bool check_counts)
{
    int bad = 0;
    printf("    rank %d: returned %d (%s) after %.0f ms: \"%s\"\n", rank, (int)o->result,
           ecclGetErrorString(o->result), o->elapsed_ms, o->text);
    if (o->result == ecclSuccess) {
        printf("    rank %d: init succeeded with a rank missing\n", rank);
        bad++;
    }
    if (o->elapsed_ms >= LIMIT_MS || o->elapsed_ms < TIMEOUT_MS * 0.9) {
        printf("    rank %d: failed after %.0f ms; the deadline was %d ms\n", rank, o->elapsed_ms,
               TIMEOUT_MS);
        bad++;
    }
    if (!mp_text_has(o->text, "timed out") && !mp_text_has(o->text, "timeout")) {
        printf("    rank %d: the error text does not say it timed out\n", rank);
        bad++;
    }
    if (!has_number(o->text, 2) ||
        (!mp_text_has(o->text, "missing") && !mp_text_has(o->text, "rank 2"))) {
        printf("    rank %d: the error text does not name the missing rank 2\n", rank);
        bad++;
    }
    if (check_counts && (o->fds_after != o->fds_before || o->threads_after != o->threads_before)) {
        printf("    rank %d: fds %d -> %d, threads %d -> %d\n", rank, o->fds_before, o->fds_after,
               o->threads_before, o->threads_after);
        bad++;
    }
    return bad;
}

/* Waits until this process is back to `fds` descriptors (-1: any) and `threads` threads (the
 * bootstrap root may still be closing), at most SETTLE_MS. */
static bool settle(int fds, int threads, int *fds_now, int *threads_now)
{
    double end = mp_now_ms() + SETTLE_MS;
    for (;;) {
        *fds_now = mp_count_fds();
        *threads_now = mp_count_threads();
        bool ok = (fds < 0 || *fds_now == fds) && *threads_now == threads;
        if (ok || mp_now_ms() > end)
            return ok;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* The baseline: the bootstrap root of an earlier run answers the ranks and then exits, so it
 * may still be on its way out when they return; wait (at most SETTLE_MS) for the process to be
 * down to its main thread, then count. */
static void quiesce(int *fds, int *threads)
{
    int f, t;
    settle(-1, 1, &f, &t);
    *fds = mp_count_fds();
    *threads = mp_count_threads();
}

/* A complete init and destroy first, so that whatever the library sets up once per process is
 * in the baseline. */
static int warm_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    return ecclCommDestroy(comm) == ecclSuccess ? 0 : 1;
}

static int thread_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    struct run_state *st = arg;
    init_absent_peer(rank, id, &st->out[rank]);
    return 0;
}

static void test_threads(void **state)
{
    (void)state;
    assert_int_equal(mt_run(1, warm_rank, NULL, 10000), 0);
    int fds0, threads0;
    quiesce(&fds0, &threads0);
    struct run_state st;
    memset(&st, 0, sizeof(st));
    double t0 = mp_now_ms();
    assert_int_equal(mt_run(2, thread_rank, &st, 30000), 0);
    printf("    both ranks returned after %.0f ms\n", mp_now_ms() - t0);
    int bad = check_rank(0, &st.out[0], false) + check_rank(1, &st.out[1], false);
    int fds1, threads1;
    bool settled = settle(fds0, threads0, &fds1, &threads1);
    printf("    process: fds %d -> %d, threads %d -> %d\n", fds0, fds1, threads0, threads1);
    assert_int_equal(bad, 0);
    assert_true(settled);
}

/* As processes: each rank counts its own descriptors and threads around the failed init; the
 * parent (which made the id, so runs the root) counts its own. */
static int proc_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)arg;
    struct rank_out o;
    memset(&o, 0, sizeof(o));
    o.fds_before = mp_count_fds();
    o.threads_before = mp_count_threads();
    init_absent_peer(rank, id, &o);
    int fds, threads;
    /* A rank's own helpers must be gone when init returns; allow a moment for threads that are
     * already exiting to be reaped by the kernel. */
    double end = mp_now_ms() + 1000;
    do {
        fds = mp_count_fds();
        threads = mp_count_threads();
        if (fds == o.fds_before && threads == o.threads_before)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    } while (mp_now_ms() < end);
    o.fds_after = fds;
    o.threads_after = threads;
    return check_rank(rank, &o, true) == 0 ? 0 : 1;
}

static void test_processes(void **state)
{
    (void)state;
    int fds0, threads0;
    quiesce(&fds0, &threads0);
    double t0 = mp_now_ms();
    struct mp_opts o = {.nranks = 2, .fn = proc_rank, .timeout_ms = 30000};
    struct mp_report rep;
    int rc = mp_run_opts(&o, &rep);
    printf("    both ranks exited after %.0f ms\n", mp_now_ms() - t0);
    int fds1, threads1;
    bool settled = settle(fds0, threads0, &fds1, &threads1);
    printf("    parent: fds %d -> %d, threads %d -> %d\n", fds0, fds1, threads0, threads1);
    assert_int_equal(rc, 0);
    assert_true(settled);
}

int main(void)
{
    mp_env_setup();
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%d", TIMEOUT_MS);
    setenv("ECCL_BOOTSTRAP_TIMEOUT", timeout, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

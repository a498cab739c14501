/*
 * test_kill_rank.c - a rank process dies (SIGKILL) or stops (SIGSTOP) in the middle of a
 * collective on 4 host ranks over shared memory. Every survivor's call must return
 * ecclRemoteError within 1 s of the kill (2 s of the stop, with a 50 ms x 10 heartbeat),
 * ecclCommGetAsyncError must say so, ecclCommShrink without the dead rank must give a working
 * communicator whose AllReduce is correct, and after abort and destroy the survivor's fds and
 * threads must be back to their count before init.
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
#define VICTIM 2
#define COUNT  (1 << 20) /* floats per rank: long enough that peers are mid-collective */

enum which {
    ALLREDUCE,
    ALLGATHER,
    BROADCAST,
    SENDRECV,
};

struct shared {
    struct mp_barrier barrier;
    _Atomic uint64_t kill_ms_bits; /* when the victim was signalled (mp_now_ms, as bits) */
    double detect_ms[NRANKS];
    int result[NRANKS];
};

struct ctx {
    enum which which;
    struct shared *sh;
    double bound_ms;
};

static ecclResult_t run_one(enum which which, ecclComm_t comm, int rank, float *a, float *b)
{
    switch (which) {
    case ALLREDUCE:
        return ecclAllReduce(a, b, COUNT, ecclFloat, ecclSum, comm, NULL);
    case ALLGATHER:
        return ecclAllGather(a, b, COUNT / NRANKS, ecclFloat, comm, NULL);
    case BROADCAST:
        return ecclBroadcast(a, b, COUNT, ecclFloat, 0, comm, NULL);
    case SENDRECV: {
        /* Every rank exchanges with every other one, so every survivor depends on the victim
         * (in a ring, two survivors could finish without it: p2p is not collective). */
        ecclGroupStart();
        for (int p = 0; p < NRANKS; p++) {
            if (p == rank)
                continue;
            ecclSend(a, COUNT / 2, ecclFloat, p, comm, NULL);
            ecclRecv(b + (size_t)p * COUNT, COUNT / 2, ecclFloat, p, comm, NULL);
        }
        return ecclGroupEnd();
    }
    }
    return ecclInternalError;
}

static int check_shrunk(ecclComm_t comm, int rank)
{
    ecclComm_t small = NULL;
    int exclude[1] = {VICTIM};
    ecclResult_t r = ecclCommShrink(comm, exclude, 1, &small, NULL, ECCL_SHRINK_ABORT);
    if (r != ecclSuccess) {
        printf("rank %d: shrink failed: %s (%s)\n", rank, ecclGetErrorString(r),
               ecclGetLastError(comm));
        return 1;
    }
    int n = 0, me = -1;
    ecclCommCount(small, &n);
    ecclCommUserRank(small, &me);
    int expect_me = rank < VICTIM ? rank : rank - 1;
    if (n != NRANKS - 1 || me != expect_me) {
        printf("rank %d: shrunk communicator has %d ranks, I am %d (want %d, %d)\n", rank, n, me,
               NRANKS - 1, expect_me);
        return 1;
    }
    float v[1000], out[1000];
    for (int i = 0; i < 1000; i++)
        v[i] = (float)(me + i);
    r = ecclAllReduce(v, out, 1000, ecclFloat, ecclSum, small, NULL);
    int bad = r != ecclSuccess;
    for (int i = 0; i < 1000 && !bad; i++)
        bad = out[i] != (float)(0 + 1 + 2 + 3 * i);
    if (bad)
        printf("rank %d: AllReduce on the shrunk communicator: %s, out[0] %g\n", rank,
               ecclGetErrorString(r), out[0]);
    if (ecclCommDestroy(small) != ecclSuccess)
        bad = 1;
    return bad;
}

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct ctx *c = arg;
    int fds0 = mp_count_fds(), threads0 = mp_count_threads();
    float *a = malloc(sizeof(float) * COUNT), *b = malloc(sizeof(float) * COUNT * NRANKS);
    if (!a || !b)
        return 1;
    for (int i = 0; i < COUNT; i++)
        a[i] = (float)rank;
    ecclComm_t comm;
    ecclResult_t r = mp_comm_init(&comm, nranks, id, rank);
    if (r != ecclSuccess) {
        printf("rank %d: init failed: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    /* A few good rounds, then the victim stops at the point while the others are already
     * inside the collective. */
    for (int it = 0; it < 3; it++) {
        if (run_one(c->which, comm, rank, a, b) != ecclSuccess) {
            printf("rank %d: round %d failed before the fault: %s\n", rank, it,
                   ecclGetLastError(comm));
            return 1;
        }
    }
    /* Every rank finished the good rounds (a send/recv ring lets one rank finish a round
     * before another). */
    if (mp_barrier_wait(&c->sh->barrier, 30000) != 0) {
        printf("rank %d: barrier failed\n", rank);
        return 1;
    }
    if (rank == VICTIM) {
        /* The fault time, taken just before the parent acts (a survivor can see the fault
         * before the parent could record it after acting). */
        double now = mp_now_ms();
        uint64_t bits;
        memcpy(&bits, &now, sizeof(bits));
        atomic_store(&c->sh->kill_ms_bits, bits);
        mp_point("victim");
    }
    r = run_one(c->which, comm, rank, a, b);
    double t_done = mp_now_ms();
    if (rank == VICTIM) {
        /* Only a stopped victim gets here (after SIGCONT): whatever it sees, it must return. */
        ecclCommAbort(comm);
        return 0;
    }
    uint64_t bits = atomic_load(&c->sh->kill_ms_bits);
    double kill_ms;
    memcpy(&kill_ms, &bits, sizeof(kill_ms));
    c->sh->detect_ms[rank] = t_done - kill_ms;
    c->sh->result[rank] = r;
    int bad = 0;
    if (r != ecclRemoteError) {
        printf("rank %d: the call returned %d (%s), want ecclRemoteError\n", rank, r,
               ecclGetErrorString(r));
        bad = 1;
    }
    if (t_done - kill_ms > c->bound_ms) {
        printf("rank %d: detection took %.0f ms (bound %.0f)\n", rank, t_done - kill_ms,
               c->bound_ms);
        bad = 1;
    }
    ecclResult_t async = ecclSuccess;
    ecclCommGetAsyncError(comm, &async);
    if (async != ecclRemoteError) {
        printf("rank %d: async error %d, want ecclRemoteError\n", rank, async);
        bad = 1;
    }
    const char *text = ecclGetLastError(comm);
    if (!mp_text_has(text, "rank")) {
        printf("rank %d: last error '%s' does not name the rank\n", rank, text);
        bad = 1;
    }
    bad |= check_shrunk(comm, rank);
    if (ecclCommAbort(comm) != ecclSuccess)
        bad = 1;
    free(a);
    free(b);
    int fds1 = mp_count_fds(), threads1 = mp_count_threads();
    if (fds1 != fds0 || threads1 != threads0) {
        printf("rank %d: fds %d -> %d, threads %d -> %d after abort\n", rank, fds0, fds1, threads0,
               threads1);
        bad = 1;
    }
    return bad;
}

static void run_case(enum which which, enum mp_action_kind kind, double bound_ms)
{
    struct ctx c = {.which = which, .bound_ms = bound_ms};
    c.sh = mp_shm_alloc(sizeof(*c.sh));
    assert_non_null(c.sh);
    mp_barrier_init(&c.sh->barrier, NRANKS);
    struct mp_report rep;
    int rc = mp_run_victim(NRANKS, VICTIM, kind, rank_main, &c, 60000, &rep);
    double max = mp_max_except(c.sh->detect_ms, NRANKS, VICTIM);
    printf("case %d (%s): survivors returned within %.1f ms of the fault\n", (int)which,
           kind == MP_ACT_KILL ? "SIGKILL" : "SIGSTOP", max);
    mp_shm_free(c.sh, sizeof(*c.sh));
    assert_int_equal(rc, 0);
}

static void test_kill_allreduce(void **s)
{
    (void)s;
    run_case(ALLREDUCE, MP_ACT_KILL, 1000);
}

static void test_kill_allgather(void **s)
{
    (void)s;
    run_case(ALLGATHER, MP_ACT_KILL, 1000);
}

static void test_kill_broadcast(void **s)
{
    (void)s;
    run_case(BROADCAST, MP_ACT_KILL, 1000);
}

static void test_kill_sendrecv(void **s)
{
    (void)s;
    run_case(SENDRECV, MP_ACT_KILL, 1000);
}

static void test_stop_allreduce(void **s)
{
    (void)s;
    /* 50 ms heartbeats, 10 misses: the stopped rank is declared failed after ~500 ms. */
    run_case(ALLREDUCE, MP_ACT_STOP, 2000);
}

int main(void)
{
    mp_env_setup();
    setenv("ECCL_PROXY_HEARTBEAT_MS", "50", 0);
    setenv("ECCL_PROXY_HEARTBEAT_MISSES", "10", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_allreduce), cmocka_unit_test(test_kill_allgather),
        cmocka_unit_test(test_kill_broadcast), cmocka_unit_test(test_kill_sendrecv),
        cmocka_unit_test(test_stop_allreduce),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

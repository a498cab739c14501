/*
 * test_flat_fault.c - failures while ranks wait in the flat path of small host collectives
 * (core/flat.h), 4 ranks as processes:
 *  - a rank is SIGKILLed (or SIGSTOPped) while the others wait for it in a small AllReduce or
 *    Broadcast (the fault comes once every survivor has entered that call, as its slot shows):
 *    every survivor's call returns ecclRemoteError within 1 s of the kill (2 s of the stop), and
 *    ecclCommShrink gives a new communicator whose flat path works;
 *  - ecclCommAbort from another thread ends a rank's wait for a peer that never comes;
 *  - ranks that make different calls (counts differ) all get an error instead of wrong data;
 *  - a segment name left by a rank 0 that died in its init (sized, unlocked) is removed by the
 *    next communicator's init, and one whose creator lives (it holds the flock) is not.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/core_int.h"
#include "eccl.h"
#include "tests/support/mp.h"

#define NRANKS 4
#define VICTIM 2
#define COUNT  64 /* floats: well within the flat path */

enum which { ALLREDUCE, BROADCAST };

struct shared {
    struct mp_barrier barrier;
    _Atomic uint64_t kill_ms_bits;
    double detect_ms[NRANKS];
};

struct ctx {
    enum which which;
    struct shared *sh;
    double bound_ms;
};

static ecclResult_t run_one(enum which which, ecclComm_t comm, float *a, float *b)
{
    if (which == ALLREDUCE)
        return ecclAllReduce(a, b, COUNT, ecclFloat, ecclSum, comm, NULL);
    return ecclBroadcast(a, b, COUNT, ecclFloat, VICTIM, comm, NULL);
}

/* The survivors' new communicator (an elastic rebuild makes one the same way) has its own
 * segment, and its small AllReduce takes the flat path and is right. */
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
    int me = -1, bad = 0;
    ecclCommUserRank(small, &me);
    float v[COUNT], out[COUNT];
    for (int i = 0; i < COUNT; i++)
        v[i] = (float)(me + i);
    uint32_t seq0 = small->flat.seq;
    r = ecclAllReduce(v, out, COUNT, ecclFloat, ecclSum, small, NULL);
    if (r != ecclSuccess || small->flat.base == NULL || small->flat.seq != seq0 + 1) {
        printf("rank %d: AllReduce on the shrunk communicator: %s, flat segment %p, %u calls\n",
               rank, ecclGetErrorString(r), (void *)small->flat.base, small->flat.seq - seq0);
        bad = 1;
    }
    for (int i = 0; i < COUNT && !bad; i++)
        if (out[i] != (float)(0 + 1 + 2 + 3 * i)) {
            printf("rank %d: shrunk AllReduce out[%d] = %g\n", rank, i, out[i]);
            bad = 1;
        }
    if (ecclCommDestroy(small) != ecclSuccess)
        bad = 1;
    return bad;
}

/* The victim, before its fault: waits until every survivor has published call `seq` in its
 * slot, which it does inside the flat call before it waits for the victim. A fault that came
 * earlier could be seen (UDS EOF, heartbeats) before a survivor on a loaded machine even made
 * the call, which would then be refused at its start (the communicator has failed) instead of
 * ending a wait in the flat path: the case under test. */
static bool survivors_waiting(ecclComm_t comm, uint32_t seq)
{
    double deadline = mp_now_ms() + 20000;
    for (;;) {
        bool all = true;
        for (int r = 0; r < NRANKS; r++)
            if (r != VICTIM && (int32_t)(kern_flat_published(&comm->flat, r, seq) - seq) < 0)
                all = false;
        if (all)
            return true;
        if (mp_now_ms() > deadline)
            return false;
        usleep(1000);
    }
}

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct ctx *c = arg;
    float a[COUNT], b[COUNT];
    for (int i = 0; i < COUNT; i++)
        a[i] = (float)rank;
    ecclComm_t comm;
    ecclResult_t r = mp_comm_init(&comm, nranks, id, rank);
    if (r != ecclSuccess) {
        printf("rank %d: init failed: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    if (comm->flat.base == NULL) {
        printf("rank %d: no flat segment\n", rank);
        return 1;
    }
    for (int it = 0; it < 50; it++) {
        if (run_one(c->which, comm, a, b) != ecclSuccess) {
            printf("rank %d: round %d failed before the fault: %s\n", rank, it,
                   ecclGetLastError(comm));
            return 1;
        }
    }
    if (mp_barrier_wait(&c->sh->barrier, 30000) != 0) {
        printf("rank %d: barrier failed\n", rank);
        return 1;
    }
    uint32_t seq0 = comm->flat.seq;
    if (rank == VICTIM && !survivors_waiting(comm, seq0 + 1)) {
        printf("rank %d: the survivors did not enter call %u within 20 s\n", rank, seq0 + 1);
        return 1;
    }
    if (rank == VICTIM) {
        double now = mp_now_ms();
        uint64_t bits;
        memcpy(&bits, &now, sizeof(bits));
        atomic_store(&c->sh->kill_ms_bits, bits);
        mp_point("victim");
    }
    /* The survivors wait here for the victim's contribution (Broadcast: its data, as root). */
    r = run_one(c->which, comm, a, b);
    double t_done = mp_now_ms();
    if (rank == VICTIM) {
        ecclCommAbort(comm); /* a stopped victim, continued */
        return 0;
    }
    uint64_t bits = atomic_load(&c->sh->kill_ms_bits);
    double kill_ms;
    memcpy(&kill_ms, &bits, sizeof(kill_ms));
    c->sh->detect_ms[rank] = t_done - kill_ms;
    int bad = 0;
    if (comm->flat.seq != seq0 + 1) {
        printf("rank %d: the call did not take the flat path\n", rank);
        bad = 1;
    }
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
    bad |= check_shrunk(comm, rank);
    if (ecclCommAbort(comm) != ecclSuccess)
        bad = 1;
    return bad;
}

static void run_case(enum which which, enum mp_action_kind kind, double bound_ms)
{
    struct ctx c = {.which = which, .bound_ms = bound_ms};
    c.sh = mp_shm_alloc(sizeof(*c.sh));
    assert_non_null(c.sh);
    mp_barrier_init(&c.sh->barrier, NRANKS);
    int rc = mp_run_victim(NRANKS, VICTIM, kind, rank_main, &c, 30000, NULL);
    double max = mp_max_except(c.sh->detect_ms, NRANKS, VICTIM);
    printf("%s, %s: survivors returned within %.1f ms of the fault\n",
           which == ALLREDUCE ? "AllReduce" : "Broadcast",
           kind == MP_ACT_KILL ? "SIGKILL" : "SIGSTOP", max);
    mp_shm_free(c.sh, sizeof(*c.sh));
    assert_int_equal(rc, 0);
}

static void test_kill_allreduce(void **s)
{
    (void)s;
    run_case(ALLREDUCE, MP_ACT_KILL, 1000);
}

static void test_kill_broadcast(void **s)
{
    (void)s;
    run_case(BROADCAST, MP_ACT_KILL, 1000);
}

static void test_stop_allreduce(void **s)
{
    (void)s;
    /* 50 ms heartbeats, 10 misses: the stopped rank is declared failed after ~500 ms. */
    run_case(ALLREDUCE, MP_ACT_STOP, 2000);
}

/* --- abort from another thread ---------------------------------------------------------- */

struct aborter {
    ecclComm_t comm;
    ecclResult_t result;
};

static void *abort_main(void *arg)
{
    struct aborter *ab = arg;
    usleep(300 * 1000);
    ab->result = ecclCommAbort(ab->comm);
    return NULL;
}

static int abort_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct mp_barrier *done = arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    float a[COUNT] = {0}, b[COUNT];
    if (ecclAllReduce(a, b, COUNT, ecclFloat, ecclSum, comm, NULL) != ecclSuccess)
        return 1;
    if (rank != 0) {
        /* Never makes the second call; leaves once rank 0 is done. */
        int rc = mp_barrier_wait(done, 20000);
        ecclCommAbort(comm);
        return rc != 0;
    }
    struct aborter ab = {.comm = comm, .result = ecclInternalError};
    pthread_t t;
    if (pthread_create(&t, NULL, abort_main, &ab) != 0)
        return 1;
    double t0 = mp_now_ms();
    ecclResult_t r = ecclAllReduce(a, b, COUNT, ecclFloat, ecclSum, comm, NULL);
    double waited = mp_now_ms() - t0;
    pthread_join(t, NULL);
    int bad = 0;
    if (r == ecclSuccess || ab.result != ecclSuccess || waited > 5000) {
        printf("rank 0: call returned %d after %.0f ms, abort %d\n", r, waited, ab.result);
        bad = 1;
    }
    printf("abort: the waiting call returned %s after %.0f ms\n", ecclGetErrorString(r), waited);
    if (mp_barrier_wait(done, 20000) != 0)
        bad = 1;
    return bad;
}

static void test_abort_ends_wait(void **s)
{
    (void)s;
    struct mp_barrier *done = mp_shm_alloc(sizeof(*done));
    assert_non_null(done);
    mp_barrier_init(done, 2);
    assert_int_equal(mp_run(2, abort_rank, done, 30000), 0);
    mp_shm_free(done, sizeof(*done));
}

/* --- mismatched calls ------------------------------------------------------------------- */

static int mismatch_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    float a[COUNT + 8] = {0}, b[COUNT + 8];
    /* Rank 1 asks for more elements than the others. */
    ecclResult_t r =
        ecclAllReduce(a, b, COUNT + (rank == 1 ? 8 : 0), ecclFloat, ecclSum, comm, NULL);
    int bad = r == ecclSuccess;
    if (bad)
        printf("rank %d: a mismatched AllReduce succeeded\n", rank);
    ecclCommAbort(comm);
    return bad;
}

static void test_mismatch(void **s)
{
    (void)s;
    assert_int_equal(mp_run(3, mismatch_rank, NULL, 30000), 0);
}

/* --- names left in /dev/shm ------------------------------------------------------------ */

static int stale_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    int bad = comm->flat.base == NULL;
    if (bad)
        printf("rank %d: no flat segment\n", rank);
    if (ecclCommDestroy(comm) != ecclSuccess)
        bad = 1;
    return bad;
}

/* Creates `name` with a size, as rank 0 does (lock: with its flock too). */
static int make_name(const char *name, bool lock)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, 4096) != 0 || (lock && flock(fd, LOCK_SH) != 0)) {
        close(fd);
        shm_unlink(name);
        return -1;
    }
    return fd;
}

static bool name_exists(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm%s", name);
    return access(path, F_OK) == 0;
}

static void test_stale_name(void **s)
{
    (void)s;
    char dead[96], live[96];
    /* A creator that died between its create and its unlink (rank 0 SIGKILLed in its init). */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char name[96];
        snprintf(name, sizeof(name), "/eccl-flat-00000000deadbeef-%d", (int)getpid());
        _exit(make_name(name, true) < 0 ? 1 : 0); /* exits with the flock held: freed */
    }
    int st = 0;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(dead, sizeof(dead), "/eccl-flat-00000000deadbeef-%d", (int)child);
    /* A creator still in its init. */
    snprintf(live, sizeof(live), "/eccl-flat-00000000feedface-%d", (int)getpid());
    int fd = make_name(live, true);
    assert_true(fd >= 0);
    assert_true(name_exists(dead));
    int rc = mp_run(2, stale_rank, NULL, 30000);
    bool dead_left = name_exists(dead), live_left = name_exists(live);
    close(fd);
    shm_unlink(live);
    if (dead_left)
        shm_unlink(dead);
    printf("names: a dead creator's %s, a live creator's %s\n", dead_left ? "left" : "removed",
           live_left ? "kept" : "removed");
    assert_int_equal(rc, 0);
    assert_false(dead_left);
    assert_true(live_left);
}

int main(void)
{
    mp_env_setup();
    setenv("ECCL_PROXY_HEARTBEAT_MS", "50", 0);
    setenv("ECCL_PROXY_HEARTBEAT_MISSES", "10", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_allreduce), cmocka_unit_test(test_kill_broadcast),
        cmocka_unit_test(test_stop_allreduce), cmocka_unit_test(test_abort_ends_wait),
        cmocka_unit_test(test_mismatch),       cmocka_unit_test(test_stale_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

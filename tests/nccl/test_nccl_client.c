/*
 * test_nccl_client.c - a C program written for NCCL, compiled against include/nccl.h only and
 * linked with -lnccl (eccl's libnccl.so.2), on host ranks (ECCL_DEVICE=host) that are forked
 * processes. It checks:
 *   - every collective and point-to-point call, with results computed here (all 12 data types
 *     for AllReduce; sum/prod/max/min/avg and a PreMulSum op), groups, split, registration,
 *     GroupSimulateEnd, and the host side of the device API;
 *   - ncclCommGetAsyncError polled and ncclCommAbort called from another thread while a
 *     collective is blocked in flight: the collective returns, nothing hangs;
 *   - ncclConfig_t built as older headers (shorter) and newer headers (longer, with fields that
 *     eccl must not read) build it, and a config that was never initialised (refused);
 *   - ncclGetVersion, ncclGetErrorString and ncclGetLastError texts;
 *   - the NCCL_* variable mapping of the library's constructor (the test runs itself again with
 *     NCCL_* variables set, since the constructor runs before main).
 * The harness is here (tests/support links libeccl.a): each case forks its ranks; rank 0 makes
 * the unique id and hands it over in shared memory; the parent kills ranks still alive at the
 * case's deadline, by pid.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <nccl.h>

#define MAX_RANKS 8

/* ---- harness -------------------------------------------------------------------------------- */

struct shared {
    _Atomic int id_ready;
    ncclUniqueId id;
    _Atomic int flag[MAX_RANKS];
};

static struct shared *sh;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#define FAILF(...)                                           \
    do {                                                     \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                        \
        fprintf(stderr, "\n");                               \
        return 1;                                            \
    } while (0)

#define CHECK(cond, ...)        \
    do {                        \
        if (!(cond))            \
            FAILF(__VA_ARGS__); \
    } while (0)

#define NCHECK(comm, call)                                                           \
    do {                                                                             \
        ncclResult_t r_ = (call);                                                    \
        if (r_ != ncclSuccess)                                                       \
            FAILF("%s returned %d (%s): %s", #call, (int)r_, ncclGetErrorString(r_), \
                  ncclGetLastError(comm));                                           \
    } while (0)

/* Rank 0 makes the id; the others wait for it (at most 30 s). */
static int get_id(int rank, ncclUniqueId *id)
{
    if (rank == 0) {
        NCHECK(NULL, ncclGetUniqueId(&sh->id));
        atomic_store(&sh->id_ready, 1);
    } else {
        double end = now_ms() + 30000;
        while (!atomic_load(&sh->id_ready)) {
            CHECK(now_ms() < end, "rank %d: no unique id from rank 0 after 30 s", rank);
            sleep_ms(1);
        }
    }
    memcpy(id, &sh->id, sizeof(*id));
    return 0;
}

typedef int (*rank_fn)(int rank, int nranks);

/* Forks nranks processes running fn; returns how many failed (a rank alive at the deadline is
 * killed and counts as failed). */
static int run_ranks(int nranks, rank_fn fn, int timeout_ms)
{
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return nranks;
    memset(sh, 0, sizeof(*sh));
    pid_t pids[MAX_RANKS];
    int failed = 0, alive = 0;
    fflush(NULL);
    for (int r = 0; r < nranks; r++) {
        pids[r] = fork();
        if (pids[r] == 0)
            _exit(fn(r, nranks));
        if (pids[r] < 0) {
            perror("fork");
            failed++;
        } else {
            alive++;
        }
    }
    double end = now_ms() + timeout_ms;
    while (alive > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            alive--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "rank process %d ended with status 0x%x\n", (int)p, status);
                failed++;
            }
            continue;
        }
        if (now_ms() > end) {
            for (int r = 0; r < nranks; r++) {
                if (pids[r] > 0 && kill(pids[r], 0) == 0) {
                    fprintf(stderr, "rank %d (pid %d) still running at the deadline: killed\n", r,
                            (int)pids[r]);
                    kill(pids[r], SIGKILL);
                }
            }
            while (alive > 0 && waitpid(-1, &status, 0) > 0) {
                alive--;
                failed++;
            }
            break;
        }
        sleep_ms(5);
    }
    munmap(sh, sizeof(*sh));
    sh = NULL;
    return failed;
}

/* ---- collectives ---------------------------------------------------------------------------- */

/* The value 1 and the value n (n = 1..8) of each data type, as bytes. */
static size_t type_size(ncclDataType_t t)
{
    switch (t) {
    case ncclInt8:
    case ncclUint8:
    case ncclFloat8e4m3:
    case ncclFloat8e5m2:
        return 1;
    case ncclFloat16:
    case ncclBfloat16:
        return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    default:
        return 8;
    }
}

/* Writes the value v (a small integer, exact in every type) of type t at p. */
static void put_value(ncclDataType_t t, void *p, int v)
{
    /* Half, bfloat16 and the fp8 formats of the integers 1..8. */
    static const uint16_t half[] = {0,      0x3C00, 0x4000, 0x4200, 0x4400,
                                    0x4500, 0x4600, 0x4700, 0x4800};
    static const uint16_t bf16[] = {0,      0x3F80, 0x4000, 0x4040, 0x4080,
                                    0x40A0, 0x40C0, 0x40E0, 0x4100};
    static const uint8_t e4m3[] = {0, 0x38, 0x40, 0x44, 0x48, 0x4A, 0x4C, 0x4E, 0x50};
    static const uint8_t e5m2[] = {0, 0x3C, 0x40, 0x42, 0x44, 0x45, 0x46, 0x47, 0x48};
    switch (t) {
    case ncclInt8:
        *(int8_t *)p = (int8_t)v;
        break;
    case ncclUint8:
        *(uint8_t *)p = (uint8_t)v;
        break;
    case ncclInt32:
        *(int32_t *)p = v;
        break;
    case ncclUint32:
        *(uint32_t *)p = (uint32_t)v;
        break;
    case ncclInt64:
        *(int64_t *)p = v;
        break;
    case ncclUint64:
        *(uint64_t *)p = (uint64_t)v;
        break;
    case ncclFloat16:
        *(uint16_t *)p = half[v];
        break;
    case ncclBfloat16:
        *(uint16_t *)p = bf16[v];
        break;
    case ncclFloat8e4m3:
        *(uint8_t *)p = e4m3[v];
        break;
    case ncclFloat8e5m2:
        *(uint8_t *)p = e5m2[v];
        break;
    case ncclFloat32:
        *(float *)p = (float)v;
        break;
    default:
        *(double *)p = v;
        break;
    }
}

/* AllReduce(sum) of ones in every data type: every element must be nranks. */
static int check_all_types(ncclComm_t comm, int nranks)
{
    const size_t count = 1000;
    for (int t = 0; t < ncclNumTypes; t++) {
        size_t es = type_size((ncclDataType_t)t);
        unsigned char *in = calloc(count, es), *out = calloc(count, es), *want = calloc(1, es);
        CHECK(in && out && want, "calloc");
        for (size_t i = 0; i < count; i++)
            put_value((ncclDataType_t)t, in + i * es, 1);
        put_value((ncclDataType_t)t, want, nranks);
        NCHECK(comm, ncclAllReduce(in, out, count, (ncclDataType_t)t, ncclSum, comm, NULL));
        for (size_t i = 0; i < count; i++)
            CHECK(memcmp(out + i * es, want, es) == 0, "AllReduce type %d element %zu wrong", t, i);
        free(in);
        free(out);
        free(want);
    }
    return 0;
}

static int check_allreduce_ops(ncclComm_t comm, int rank, int n)
{
    enum { N = 70000 }; /* several slots and channels */
    static float f[N], g[N];
    static int32_t a[N], b[N];
    for (int i = 0; i < N; i++) {
        f[i] = (float)(rank + i % 5);
        a[i] = rank + 1;
    }
    NCHECK(comm, ncclAllReduce(f, g, N, ncclFloat32, ncclSum, comm, NULL));
    for (int i = 0; i < N; i++)
        CHECK(g[i] == (float)(n * (n - 1) / 2 + n * (i % 5)), "sum[%d] = %g", i, g[i]);
    NCHECK(comm, ncclAllReduce(f, f, N, ncclFloat32, ncclMax, comm, NULL)); /* in place */
    for (int i = 0; i < N; i++)
        CHECK(f[i] == (float)(n - 1 + i % 5), "max[%d] = %g", i, f[i]);
    NCHECK(comm, ncclAllReduce(a, b, N, ncclInt32, ncclProd, comm, NULL));
    int fact = 1;
    for (int r = 1; r <= n; r++)
        fact *= r;
    for (int i = 0; i < N; i++)
        CHECK(b[i] == fact, "prod[%d] = %d", i, b[i]);
    NCHECK(comm, ncclAllReduce(a, b, 7, ncclInt32, ncclMin, comm, NULL));
    for (int i = 0; i < 7; i++)
        CHECK(b[i] == 1, "min[%d] = %d", i, b[i]);
    for (int i = 0; i < N; i++)
        f[i] = (float)(2 * rank);
    NCHECK(comm, ncclAllReduce(f, g, N, ncclFloat32, ncclAvg, comm, NULL));
    for (int i = 0; i < N; i++)
        CHECK(g[i] == (float)(n - 1), "avg[%d] = %g", i, g[i]);

    float scalar = 2.0f;
    ncclRedOp_t op;
    NCHECK(comm,
           ncclRedOpCreatePreMulSum(&op, &scalar, ncclFloat32, ncclScalarHostImmediate, comm));
    CHECK((int)op >= (int)ncclNumOps, "PreMulSum op %d is a built-in value", (int)op);
    for (int i = 0; i < 100; i++)
        f[i] = (float)(rank + 1);
    NCHECK(comm, ncclAllReduce(f, g, 100, ncclFloat32, op, comm, NULL));
    for (int i = 0; i < 100; i++)
        CHECK(g[i] == (float)(n * (n + 1)), "premulsum[%d] = %g", i, g[i]);
    NCHECK(comm, ncclRedOpDestroy(op, comm));
    return 0;
}

static int check_rooted(ncclComm_t comm, int rank, int n)
{
    enum { C = 5000 };
    static int32_t buf[C * MAX_RANKS], out[C * MAX_RANKS];
    /* Broadcast from 1, Bcast from 0. */
    for (int i = 0; i < C; i++)
        buf[i] = rank == 1 ? 7 * i + 3 : -1;
    NCHECK(comm, ncclBroadcast(buf, out, C, ncclInt32, 1, comm, NULL));
    for (int i = 0; i < C; i++)
        CHECK(out[i] == 7 * i + 3, "broadcast[%d] = %d", i, out[i]);
    for (int i = 0; i < C; i++)
        buf[i] = rank == 0 ? i : -1;
    NCHECK(comm, ncclBcast(buf, C, ncclInt32, 0, comm, NULL));
    for (int i = 0; i < C; i++)
        CHECK(buf[i] == i, "bcast[%d] = %d", i, buf[i]);
    /* Reduce to the last rank. */
    int root = n - 1;
    for (int i = 0; i < C; i++)
        buf[i] = rank * 10 + i % 3;
    memset(out, 0, sizeof(out));
    NCHECK(comm, ncclReduce(buf, out, C, ncclInt32, ncclSum, root, comm, NULL));
    if (rank == root)
        for (int i = 0; i < C; i++)
            CHECK(out[i] == 10 * n * (n - 1) / 2 + n * (i % 3), "reduce[%d] = %d", i, out[i]);
    /* Gather and Scatter at rank 1. */
    for (int i = 0; i < C; i++)
        buf[i] = rank * 100000 + i;
    NCHECK(comm, ncclGather(buf, out, C, ncclInt32, 1, comm, NULL));
    if (rank == 1)
        for (int p = 0; p < n; p++)
            for (int i = 0; i < C; i++)
                CHECK(out[p * C + i] == p * 100000 + i, "gather[%d][%d] = %d", p, i,
                      out[p * C + i]);
    if (rank == 1)
        for (int p = 0; p < n; p++)
            for (int i = 0; i < C; i++)
                buf[p * C + i] = p * 1000 + i;
    NCHECK(comm, ncclScatter(buf, out, C, ncclInt32, 1, comm, NULL));
    for (int i = 0; i < C; i++)
        CHECK(out[i] == rank * 1000 + i, "scatter[%d] = %d", i, out[i]);
    return 0;
}

static int check_gathers(ncclComm_t comm, int rank, int n)
{
    enum { C = 9000 };
    static int64_t in[C * MAX_RANKS], out[C * MAX_RANKS];
    for (int i = 0; i < C; i++)
        in[i] = rank * 1000000 + i;
    NCHECK(comm, ncclAllGather(in, out, C, ncclInt64, comm, NULL));
    for (int p = 0; p < n; p++)
        for (int i = 0; i < C; i++)
            CHECK(out[p * C + i] == p * 1000000 + i, "allgather[%d][%d]", p, i);
    for (int j = 0; j < n * C; j++)
        in[j] = rank + j;
    NCHECK(comm, ncclReduceScatter(in, out, C, ncclInt64, ncclSum, comm, NULL));
    for (int i = 0; i < C; i++)
        CHECK(out[i] == (int64_t)n * (n - 1) / 2 + (int64_t)n * (rank * C + i),
              "reducescatter[%d] = %lld", i, (long long)out[i]);
    for (int p = 0; p < n; p++)
        for (int i = 0; i < C; i++)
            in[p * C + i] = rank * 10000000 + p * 100000 + i;
    NCHECK(comm, ncclAlltoAll(in, out, C, ncclInt64, comm, NULL));
    for (int p = 0; p < n; p++)
        for (int i = 0; i < C; i++)
            CHECK(out[p * C + i] == p * 10000000 + rank * 100000 + i, "alltoall[%d][%d]", p, i);
    return 0;
}

static int check_p2p_and_groups(ncclComm_t comm, int rank, int n)
{
    enum { C = 20000 };
    static double s[C], r[C], x[C], y[C];
    int next = (rank + 1) % n, prev = (rank + n - 1) % n;
    for (int i = 0; i < C; i++) {
        s[i] = rank * 1000.0 + i;
        x[i] = 1.0;
    }
    /* A ring of send/recv and an AllReduce in one group. */
    NCHECK(comm, ncclGroupStart());
    NCHECK(comm, ncclSend(s, C, ncclFloat64, next, comm, NULL));
    NCHECK(comm, ncclRecv(r, C, ncclFloat64, prev, comm, NULL));
    NCHECK(comm, ncclAllReduce(x, y, C, ncclFloat64, ncclSum, comm, NULL));
    NCHECK(comm, ncclGroupEnd());
    for (int i = 0; i < C; i++) {
        CHECK(r[i] == prev * 1000.0 + i, "recv[%d] = %g", i, r[i]);
        CHECK(y[i] == (double)n, "grouped allreduce[%d] = %g", i, y[i]);
    }
    /* Simulation of a group: an estimate, nothing run. */
    ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
    NCHECK(comm, ncclGroupStart());
    NCHECK(comm, ncclAllReduce(x, y, C, ncclFloat64, ncclSum, comm, NULL));
    NCHECK(comm, ncclGroupSimulateEnd(&sim));
    CHECK(sim.estimatedTime >= 0.0f, "estimatedTime %g", (double)sim.estimatedTime);
    return 0;
}

static int check_split_and_more(ncclComm_t comm, int rank, int n)
{
    int count = -1, me = -1, dev = 0;
    NCHECK(comm, ncclCommCount(comm, &count));
    NCHECK(comm, ncclCommUserRank(comm, &me));
    NCHECK(comm, ncclCommCuDevice(comm, &dev));
    CHECK(count == n && me == rank, "count %d rank %d", count, me);
    ncclResult_t async = ncclInternalError;
    NCHECK(comm, ncclCommGetAsyncError(comm, &async));
    CHECK(async == ncclSuccess, "async error %d on a healthy communicator", (int)async);

    /* Even and odd ranks, ordered backwards. */
    ncclComm_t sub = NULL;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.commName = "odd-even";
    NCHECK(comm, ncclCommSplit(comm, rank % 2, -rank, &sub, &cfg));
    int subn = 0, subr = -1;
    NCHECK(sub, ncclCommCount(sub, &subn));
    NCHECK(sub, ncclCommUserRank(sub, &subr));
    int members = (n + 1 - rank % 2) / 2;
    CHECK(subn == members, "split size %d, expected %d", subn, members);
    int v = rank, sum = 0, want = 0;
    for (int r = rank % 2; r < n; r += 2)
        want += r;
    NCHECK(sub, ncclAllReduce(&v, &sum, 1, ncclInt32, ncclSum, sub, NULL));
    CHECK(sum == want, "split allreduce %d, expected %d", sum, want);
    NCHECK(sub, ncclCommDestroy(sub));
    ncclComm_t none = (ncclComm_t)&sum;
    NCHECK(comm, ncclCommSplit(comm, rank == 0 ? NCCL_SPLIT_NOCOLOR : 0, 0, &none, NULL));
    if (rank == 0)
        CHECK(none == NULL, "NOCOLOR gave a communicator");
    else
        NCHECK(none, ncclCommDestroy(none));

    /* Registration of a host buffer. */
    static char regbuf[4096];
    void *handle = NULL;
    NCHECK(comm, ncclCommRegister(comm, regbuf, sizeof(regbuf), &handle));
    NCHECK(comm, ncclCommDeregister(comm, handle));
    CHECK(ncclCommDeregister(comm, handle) == ncclInvalidArgument, "deregistered twice");

    /* Host side of the device API: teams answer, device communicators are refused. */
    ncclTeam_t world = ncclTeamWorld(comm), lsa = ncclTeamLsa(comm), rail = ncclTeamRail(comm);
    CHECK(world.nRanks == n && world.rank == rank && world.stride == 1, "world team");
    CHECK(lsa.nRanks == 1 && lsa.rank == 0, "lsa team");
    CHECK(rail.nRanks == n && rail.rank == rank, "rail team");
    CHECK(ncclTeamRankToWorld(comm, world, n - 1) == n - 1, "rank to world");
    CHECK(ncclTeamRankToLsa(comm, lsa, 0) == 0, "rank to lsa");
    CHECK(ncclLLA2ACalcSlots(10, 12) == 20, "LLA2A slots");
    CHECK(ncclDevCommCreate(comm, NULL, NULL) == ncclInvalidUsage, "ncclDevCommCreate");
    CHECK(strstr(ncclGetLastError(comm), "device API") != NULL, "last error '%s'",
          ncclGetLastError(comm));
    /* The profiling names are the same functions. */
    int pc = 0;
    NCHECK(comm, pncclCommCount(comm, &pc));
    CHECK(pc == n, "pncclCommCount");
    return 0;
}

static int rank_collectives(int rank, int n)
{
    ncclUniqueId id;
    ncclComm_t comm;
    if (get_id(rank, &id))
        return 1;
    NCHECK(NULL, ncclCommInitRank(&comm, n, id, rank));
    int rc = check_all_types(comm, n) || check_allreduce_ops(comm, rank, n) ||
             check_rooted(comm, rank, n) || check_gathers(comm, rank, n) ||
             check_p2p_and_groups(comm, rank, n) || check_split_and_more(comm, rank, n);
    if (rc) {
        ncclCommAbort(comm);
        return rc;
    }
    NCHECK(comm, ncclCommFinalize(comm));
    NCHECK(NULL, ncclCommDestroy(comm));
    return 0;
}

static void test_collectives_4(void **state)
{
    (void)state;
    assert_int_equal(run_ranks(4, rank_collectives, 120000), 0);
}

static void test_collectives_3(void **state)
{
    (void)state;
    assert_int_equal(run_ranks(3, rank_collectives, 120000), 0);
}

/* ---- abort from another thread during a collective ------------------------------------------ */

struct inflight {
    ncclComm_t comm;
    _Atomic int started, done;
    ncclResult_t res;
};

static void *inflight_main(void *arg)
{
    struct inflight *f = arg;
    static float x[1 << 16], y[1 << 16];
    atomic_store(&f->started, 1);
    f->res = ncclAllReduce(x, y, 1 << 16, ncclFloat32, ncclSum, f->comm, NULL);
    atomic_store(&f->done, 1);
    return NULL;
}

/* Rank 0 blocks in an AllReduce that rank 1 never joins; its main thread polls the async error
 * while the call is in flight, then aborts the communicator: the call must return. */
static int rank_abort(int rank, int n)
{
    ncclUniqueId id;
    ncclComm_t comm;
    if (get_id(rank, &id))
        return 1;
    NCHECK(NULL, ncclCommInitRank(&comm, n, id, rank));
    if (rank != 0) {
        double end = now_ms() + 30000;
        while (!atomic_load(&sh->flag[0]) && now_ms() < end)
            sleep_ms(5);
        NCHECK(NULL, ncclCommAbort(comm));
        return atomic_load(&sh->flag[0]) ? 0 : 1;
    }
    struct inflight f = {.comm = comm};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, inflight_main, &f) == 0, "pthread_create");
    while (!atomic_load(&f.started))
        sleep_ms(1);
    double end = now_ms() + 300;
    int polls = 0;
    while (now_ms() < end) {
        ncclResult_t async = ncclInternalError;
        NCHECK(comm, ncclCommGetAsyncError(comm, &async));
        CHECK(async == ncclSuccess || async == ncclInProgress, "async error %d before the abort",
              (int)async);
        polls++;
        sleep_ms(2);
    }
    CHECK(!atomic_load(&f.done), "the AllReduce returned although rank 1 never joined it");
    double t0 = now_ms();
    NCHECK(NULL, ncclCommAbort(comm));
    double deadline = now_ms() + 10000;
    while (!atomic_load(&f.done) && now_ms() < deadline)
        sleep_ms(2);
    CHECK(atomic_load(&f.done), "the AllReduce still blocks 10 s after ncclCommAbort");
    pthread_join(t, NULL);
    CHECK(f.res != ncclSuccess, "the aborted AllReduce returned success");
    printf("rank 0: %d async-error polls during the collective; abort returned it in %.0f ms with "
           "%d (%s)\n",
           polls, now_ms() - t0, (int)f.res, ncclGetErrorString(f.res));
    atomic_store(&sh->flag[0], 1);
    return 0;
}

static void test_abort_inflight(void **state)
{
    (void)state;
    assert_int_equal(run_ranks(2, rank_abort, 60000), 0);
}

/* ---- configs from older and newer headers --------------------------------------------------- */

/* A config as a newer header would make it: NCCL 2.28's fields, then more. */
struct config_newer {
    ncclConfig_t base;
    int later[8];
};

static int allreduce_ok(ncclComm_t comm, int n)
{
    int one = 1, sum = 0;
    NCHECK(comm, ncclAllReduce(&one, &sum, 1, ncclInt32, ncclSum, comm, NULL));
    CHECK(sum == n, "sum %d", sum);
    return 0;
}

static int rank_configs(int rank, int n)
{
    ncclUniqueId id;
    ncclComm_t comm;
    /* 1. NCCL_CONFIG_INITIALIZER, non-blocking asked and a name. */
    if (get_id(rank, &id))
        return 1;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    CHECK(cfg.size == 80 && cfg.magic == 0xcafebeef && cfg.version == 22809, "initializer");
    cfg.blocking = 0;
    cfg.commName = "client-config";
    ncclResult_t res = ncclCommInitRankConfig(&comm, n, id, rank, &cfg);
    CHECK(res == ncclSuccess || res == ncclInProgress, "init returned %d", (int)res);
    ncclResult_t async = ncclInProgress;
    double end = now_ms() + 30000;
    while (async == ncclInProgress && now_ms() < end)
        NCHECK(comm, ncclCommGetAsyncError(comm, &async));
    CHECK(async == ncclSuccess, "async state %d", (int)async);
    if (allreduce_ok(comm, n))
        return 1;
    NCHECK(NULL, ncclCommDestroy(comm));

    /* 2. An NCCL 2.17 header's config: size, magic, version and four ints and netName. */
    ncclConfig_t old = NCCL_CONFIG_INITIALIZER;
    old.size = offsetof(ncclConfig_t, splitShare);
    old.version = 21700;
    old.blocking = 1;
    /* Fields past size hold garbage: they must not be read. */
    old.splitShare = 0x5a5a5a5a;
    old.CTAPolicy = 0x5a5a5a5a;
    if (rank == 0) {
        NCHECK(NULL, ncclGetUniqueId(&sh->id));
        atomic_store(&sh->id_ready, 2);
    } else {
        end = now_ms() + 30000;
        while (atomic_load(&sh->id_ready) != 2 && now_ms() < end)
            sleep_ms(1);
    }
    memcpy(&id, &sh->id, sizeof(id));
    NCHECK(NULL, ncclCommInitRankConfig(&comm, n, id, rank, &old));
    if (allreduce_ok(comm, n))
        return 1;
    NCHECK(NULL, ncclCommDestroy(comm));

    /* 3. A newer header's config, longer, its later fields set (eccl keeps its own fields
     * there, so they must not be copied). Through ncclCommInitRankScalable. */
    struct config_newer nw;
    ncclConfig_t init = NCCL_CONFIG_INITIALIZER;
    nw.base = init;
    nw.base.size = sizeof(nw);
    nw.base.version = 23001;
    for (int i = 0; i < 8; i++)
        nw.later[i] = 0x7eadbeef;
    if (rank == 0) {
        NCHECK(NULL, ncclGetUniqueId(&sh->id));
        atomic_store(&sh->id_ready, 3);
    } else {
        end = now_ms() + 30000;
        while (atomic_load(&sh->id_ready) != 3 && now_ms() < end)
            sleep_ms(1);
    }
    memcpy(&id, &sh->id, sizeof(id));
    NCHECK(NULL, ncclCommInitRankScalable(&comm, n, rank, 1, &id, &nw.base));
    if (allreduce_ok(comm, n))
        return 1;
    NCHECK(NULL, ncclCommDestroy(comm));

    /* 4. Never initialised: refused before anything starts, with a text that says what to do. */
    ncclConfig_t bad;
    memset(&bad, 0, sizeof(bad));
    bad.size = sizeof(bad);
    comm = NULL;
    res = ncclCommInitRankConfig(&comm, n, id, rank, &bad);
    CHECK(res == ncclInvalidArgument, "uninitialised config: %d", (int)res);
    CHECK(strstr(ncclGetLastError(NULL), "NCCL_CONFIG_INITIALIZER") != NULL, "last error '%s'",
          ncclGetLastError(NULL));
    CHECK(comm == NULL, "comm written on failure");
    return 0;
}

static void test_configs(void **state)
{
    (void)state;
    assert_int_equal(run_ranks(2, rank_configs, 90000), 0);
}

/* ---- version and error texts ---------------------------------------------------------------- */

static int rank_errors(int rank, int n)
{
    (void)rank;
    (void)n;
    int v = 0;
    NCHECK(NULL, ncclGetVersion(&v));
    CHECK(v == NCCL_VERSION_CODE && v == 22809, "version %d", v);
    CHECK(NCCL_VERSION(2, 28, 9) == 22809 && NCCL_VERSION(2, 8, 4) == 2804, "NCCL_VERSION");
    CHECK(ncclGetVersion(NULL) == ncclInvalidArgument, "NULL version");
    const char *seen[ncclNumResults];
    for (int r = 0; r < ncclNumResults; r++) {
        seen[r] = ncclGetErrorString((ncclResult_t)r);
        CHECK(seen[r] && strlen(seen[r]) > 5, "text of %d", r);
        for (int q = 0; q < r; q++)
            CHECK(strcmp(seen[q], seen[r]) != 0, "results %d and %d have one text", q, r);
    }
    CHECK(strstr(ncclGetErrorString(ncclInvalidUsage), "invalid usage"), "invalid usage text");
    CHECK(strstr(ncclGetErrorString(ncclRemoteError), "remote process"), "remote error text");
    CHECK(strstr(ncclGetErrorString((ncclResult_t)99), "unknown"), "unknown code");

    /* Argument errors name the argument in ncclGetLastError. */
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    ncclComm_t comm = NULL;
    CHECK(ncclCommInitRank(&comm, 0, id, 0) == ncclInvalidArgument, "nranks 0");
    CHECK(strstr(ncclGetLastError(NULL), "nranks") != NULL, "last error '%s'",
          ncclGetLastError(NULL));
    int count;
    CHECK(ncclCommCount(NULL, &count) == ncclInvalidArgument, "NULL comm");
    CHECK(strstr(ncclGetLastError(NULL), "comm") != NULL, "last error '%s'",
          ncclGetLastError(NULL));
    CHECK(ncclCommDestroy(NULL) == ncclSuccess, "destroy NULL");
    ncclResetDebugInit();
    pncclResetDebugInit();
    return 0;
}

static void test_errors(void **state)
{
    (void)state;
    assert_int_equal(run_ranks(1, rank_errors, 30000), 0);
}

/* ---- NCCL_* variables ----------------------------------------------------------------------- */

static const char *log_path(char *buf, size_t len, pid_t pid)
{
    snprintf(buf, len, "/tmp/eccl-nccl-envcheck.%d.log", (int)pid);
    return buf;
}

/* Runs in a process started with the NCCL_* variables of test_env_mapping set. */
static int envcheck(void)
{
    const struct {
        const char *name, *want;
    } want[] = {
        {"ECCL_SOCKET_FAMILY", "4"},       /* AF_INET translated */
        {"ECCL_ALGO", "tree"},             /* allreduce:tree;broadcast:ring */
        {"ECCL_SHM_SLOT_BYTES", "131072"}, /* 1 MiB in 8 slots */
        {"ECCL_DEBUG_SUBSYS", "INIT,ENV"}, /* same name */
        {"ECCL_NET", "socket"},            /* already set: NCCL_NET=ib does not override */
        {"ECCL_HOSTID", "envcheck-host"},
        {"ECCL_PROTO", "^LL128"},    /* a list of protocols: kept */
        {"ECCL_MIN_NCHANNELS", "2"}, /* same name */
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *v = getenv(want[i].name);
        CHECK(v && strcmp(v, want[i].want) == 0, "%s is '%s', expected '%s'", want[i].name,
              v ? v : "(unset)", want[i].want);
    }
    /* The first init-time call logs what the mapping did (NCCL_DEBUG=INFO, NCCL_DEBUG_FILE). */
    ncclUniqueId id;
    NCHECK(NULL, ncclGetUniqueId(&id));
    char path[128];
    FILE *f = fopen(log_path(path, sizeof(path), getpid()), "r");
    CHECK(f != NULL, "no log file %s: %s", path, strerror(errno));
    char line[1024];
    int drop_in = 0, algo = 0, proto = 0, eccl = 0;
    while (fgets(line, sizeof(line), f)) {
        drop_in |= strstr(line, "NCCL drop-in: libnccl.so.2 is eccl") != NULL;
        algo |= strstr(line, "NCCL_ALGO=allreduce:tree;broadcast:ring sets ECCL_ALGO=tree") != NULL;
        proto |= strstr(line, "NCCL_LAUNCH_MODE=GROUP has no eccl counterpart") != NULL;
        eccl |= strstr(line, " ECCL INFO ") != NULL;
    }
    fclose(f);
    unlink(path);
    CHECK(drop_in && algo && proto && eccl,
          "log lines: drop-in %d algo %d launch mode %d ECCL INFO %d", drop_in, algo, proto, eccl);
    return 0;
}

static void test_env_mapping(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("NCCL_SOCKET_FAMILY", "AF_INET", 1);
        setenv("NCCL_ALGO", "allreduce:tree;broadcast:ring", 1);
        setenv("NCCL_BUFFSIZE", "1048576", 1);
        setenv("NCCL_DEBUG_SUBSYS", "INIT,ENV", 1);
        setenv("NCCL_NET", "ib", 1);
        setenv("ECCL_NET", "socket", 1);
        setenv("NCCL_HOSTID", "envcheck-host", 1);
        setenv("NCCL_PROTO", "^LL128", 1);
        setenv("NCCL_MIN_NCHANNELS", "2", 1);
        setenv("NCCL_LAUNCH_MODE", "GROUP", 1);
        setenv("NCCL_DEBUG", "INFO", 1);
        setenv("NCCL_DEBUG_FILE", "/tmp/eccl-nccl-envcheck.%p.log", 1);
        unsetenv("ECCL_DEBUG");
        unsetenv("ECCL_DEBUG_FILE");
        unsetenv("ECCL_DEBUG_SUBSYS");
        unsetenv("ECCL_ALGO");
        unsetenv("ECCL_HOSTID");
        unsetenv("ECCL_SOCKET_FAMILY");
        unsetenv("ECCL_SHM_SLOT_BYTES");
        unsetenv("ECCL_PROTO");
        unsetenv("ECCL_MIN_NCHANNELS");
        execl("/proc/self/exe", "test_nccl_client", "--envcheck", (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    int status = 0;
    double end = now_ms() + 30000;
    pid_t p;
    while ((p = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < end)
        sleep_ms(5);
    if (p == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("the --envcheck process did not finish in 30 s");
    }
    char path[128];
    unlink(log_path(path, sizeof(path), pid));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--envcheck") == 0)
        return envcheck();
    /* Host ranks on loopback (read at the first init, after the library's constructor). */
    setenv("ECCL_DEVICE", "host", 0);
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_env_mapping),
        cmocka_unit_test(test_collectives_4),  cmocka_unit_test(test_collectives_3),
        cmocka_unit_test(test_abort_inflight), cmocka_unit_test(test_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

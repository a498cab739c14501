/*
 * test_torture.c - the scenarios of the allocation and system-call torture (tests/torture.sh):
 * communicator init (threads of one process, and processes), each collective (over shared
 * memory, and AllReduce over the socket network transport), abort, shrink, a full elastic
 * recovery (a member SIGKILLed, the survivors shrink) and every store operation.
 *
 *   test_torture                    runs every scenario once, each in its own process, without
 *                                   faults: each must succeed (a plain test of tests/run.sh)
 *   test_torture --list             prints the scenario names
 *   test_torture --scenario NAME    runs one scenario in this process
 *
 * Under tests/torture.sh a scenario runs first with ECCL_FAULT_COUNT=1 and TORTURE_COUNTS=file:
 * each process of the scenario appends the hits of every fault site during its phase of interest
 * (after its setup: a collective's scenario does not sweep the init before it) to the file. Then
 * it runs again once per hit with TORTURE_FAULT=site:N, which arms that hit in every process at
 * the start of the phase. Exit status: 0 when every rank succeeded, 2 when some rank ended with a
 * clean error (an eccl call failed and said why), 1 for anything unclean: a call that succeeded
 * with wrong data, an error without a message, blocks, file descriptors or threads left behind
 * when a process ends, a rank that crashed or hung (the ranks' deadline is 40 s).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/fault.h"
#include "eccl.h"
#include "eccl_elastic.h"
#include "store/store.h"
#include "tests/support/mp.h"
#include "tests/support/torture.h"

#define NRANKS       3
#define COUNT        1000
#define RANK_TIMEOUT 40000
#define RES_OK       0
#define RES_UNCLEAN  1
#define RES_ERROR    2

/* ---- phases: where faults are armed and hits counted ------------------------------------- */

static bool faulting; /* this run injects a fault */

/* Start of the phase of interest of this process: arm TORTURE_FAULT's hit, or restart the
 * counts (ECCL_FAULT_COUNT=1). */
static void phase_begin(void)
{
    const char *spec = getenv("TORTURE_FAULT");
    if (spec && *spec) {
        char site[64];
        snprintf(site, sizeof(site), "%s", spec);
        char *colon = strchr(site, ':');
        if (colon) {
            *colon = '\0';
            eccl_fault_arm(site, strtoull(colon + 1, NULL, 10), false);
            faulting = true;
        }
    } else {
        eccl_fault_reset();
    }
}

/* End of the phase: append this process's counts to TORTURE_COUNTS (one write). */
static void phase_end(void)
{
    const char *path = getenv("TORTURE_COUNTS");
    if (!path || !*path)
        return;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    eccl_fault_dump(m);
    fclose(m);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, buf, len) != (ssize_t)len)
            fprintf(stderr, "torture: short write to %s\n", path);
        close(fd);
    }
    free(buf);
}

/* ---- what a process must give back --------------------------------------------------------- */

struct guard {
    int64_t blocks;
    int fds;
    int threads;
    bool open[1024]; /* fd numbers open at the start */
};

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void guard_begin(struct guard *g)
{
    g->blocks = eccl_alloc_live_blocks(NULL);
    g->fds = mp_count_fds();
    g->threads = mp_count_threads();
    for (int fd = 0; fd < 1024; fd++)
        g->open[fd] = fd_open(fd);
}

/* Names the fds open now that were not at the start. */
static void print_new_fds(const struct guard *g, const char *who)
{
    for (int fd = 0; fd < 1024; fd++) {
        if (g->open[fd] && !fd_open(fd))
            printf("LEAK %s: fd %d, open at the start, was closed by someone\n", who, fd);
        if (g->open[fd] || !fd_open(fd))
            continue;
        char path[64], target[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = '\0';
        printf("LEAK %s: fd %d -> %s\n", who, fd, target);
    }
}

/* RES_UNCLEAN (with a message) when blocks, fds or threads are left; threads get 3 s to end. */
static int guard_end(const struct guard *g, const char *who)
{
    for (int i = 0; i < 300 && mp_count_threads() > g->threads; i++)
        usleep(10000);
    int64_t blocks = eccl_alloc_live_blocks(NULL);
    int fds = mp_count_fds(), threads = mp_count_threads();
    if (blocks == g->blocks && fds == g->fds && threads == g->threads)
        return RES_OK;
    printf("LEAK %s: %lld blocks, %d fds, %d threads left behind\n", who,
           (long long)(blocks - g->blocks), fds - g->fds, threads - g->threads);
    if (blocks != g->blocks)
        eccl_alloc_report();
    if (fds != g->fds)
        print_new_fds(g, who);
    return RES_UNCLEAN;
}

/* An eccl call failed: clean when it says why. `text` was read right after the call. */
static int failed_call(const char *who, const char *call, ecclResult_t r, const char *text)
{
    if (!text || !*text) {
        printf("UNCLEAN %s: %s returned %d without an error message\n", who, call, (int)r);
        return RES_UNCLEAN;
    }
    printf("error %s: %s returned %d: %s\n", who, call, (int)r, text);
    return RES_ERROR;
}

static int worse(int a, int b)
{
    return a == RES_UNCLEAN || b == RES_UNCLEAN
               ? RES_UNCLEAN
               : (a == RES_ERROR || b == RES_ERROR ? RES_ERROR : RES_OK);
}

/* ---- communicator scenarios -------------------------------------------------------------- */

enum coll {
    C_NONE,
    C_ALLREDUCE,
    C_BROADCAST,
    C_REDUCE,
    C_ALLGATHER,
    C_REDUCESCATTER,
    C_ALLTOALL,
    C_GATHER,
    C_SCATTER,
    C_SENDRECV,
};

struct comm_scen {
    enum coll coll;
    bool net;    /* the socket network transport between the ranks, no shared memory */
    bool init;   /* the phase includes the init (and the unique id in the parent) */
    bool abort;  /* rank 2 aborts while the others run an AllReduce */
    bool shrink; /* ranks 0 and 1 shrink rank 2 away */
    struct mp_barrier *barrier;
};

static int64_t val(int rank, size_t i)
{
    return (int64_t)rank * 1000003 + (int64_t)i * 7 + 1;
}

/* Runs one collective on 3 ranks and checks what this rank received. */
static int run_coll(enum coll c, ecclComm_t comm, int rank, int n, const char *who)
{
    size_t big = (size_t)COUNT * (size_t)n;
    int64_t *in = calloc(big, sizeof(*in)), *out = calloc(big, sizeof(*out));
    if (!in || !out) {
        free(in);
        free(out);
        return RES_UNCLEAN;
    }
    for (size_t i = 0; i < big; i++)
        in[i] = val(rank, i);
    ecclResult_t r = ecclSuccess;
    const char *name = "";
    switch (c) {
    case C_ALLREDUCE:
        name = "ecclAllReduce";
        r = ecclAllReduce(in, out, COUNT, ecclInt64, ecclSum, comm, NULL);
        break;
    case C_BROADCAST:
        name = "ecclBroadcast";
        r = ecclBroadcast(in, out, COUNT, ecclInt64, 1, comm, NULL);
        break;
    case C_REDUCE:
        name = "ecclReduce";
        r = ecclReduce(in, out, COUNT, ecclInt64, ecclSum, 2, comm, NULL);
        break;
    case C_ALLGATHER:
        name = "ecclAllGather";
        r = ecclAllGather(in, out, COUNT, ecclInt64, comm, NULL);
        break;
    case C_REDUCESCATTER:
        name = "ecclReduceScatter";
        r = ecclReduceScatter(in, out, COUNT, ecclInt64, ecclSum, comm, NULL);
        break;
    case C_ALLTOALL:
        name = "ecclAlltoAll";
        r = ecclAlltoAll(in, out, COUNT, ecclInt64, comm, NULL);
        break;
    case C_GATHER:
        name = "ecclGather";
        r = ecclGather(in, out, COUNT, ecclInt64, 0, comm, NULL);
        break;
    case C_SCATTER:
        name = "ecclScatter";
        r = ecclScatter(in, out, COUNT, ecclInt64, 1, comm, NULL);
        break;
    case C_SENDRECV:
        name = "ecclSend/ecclRecv";
        r = ecclGroupStart();
        if (r == ecclSuccess) {
            ecclResult_t r1 = ecclSend(in, COUNT, ecclInt64, (rank + 1) % n, comm, NULL);
            ecclResult_t r2 = ecclRecv(out, COUNT, ecclInt64, (rank + n - 1) % n, comm, NULL);
            r = ecclGroupEnd();
            if (r == ecclSuccess)
                r = r1 != ecclSuccess ? r1 : r2;
        }
        break;
    case C_NONE:
        break;
    }
    int res = RES_OK;
    if (r != ecclSuccess) {
        res = failed_call(who, name, r, ecclGetLastError(comm));
        goto out;
    }
    /* Success must mean the right data. */
    size_t bad = big;
    for (size_t i = 0; i < big && bad == big; i++) {
        int64_t want;
        bool check = true;
        switch (c) {
        case C_ALLREDUCE:
        case C_REDUCE:
            check = i < COUNT && (c == C_ALLREDUCE || rank == 2);
            want = val(0, i) + val(1, i) + val(2, i);
            break;
        case C_BROADCAST:
            check = i < COUNT;
            want = val(1, i);
            break;
        case C_ALLGATHER:
            want = val((int)(i / COUNT), i % COUNT);
            break;
        case C_REDUCESCATTER:
            check = i < COUNT;
            want = val(0, rank * COUNT + i) + val(1, rank * COUNT + i) + val(2, rank * COUNT + i);
            break;
        case C_ALLTOALL:
            want = val((int)(i / COUNT), (size_t)rank * COUNT + i % COUNT);
            break;
        case C_GATHER:
            check = rank == 0;
            want = val((int)(i / COUNT), i % COUNT);
            break;
        case C_SCATTER:
            check = i < COUNT;
            want = val(1, (size_t)rank * COUNT + i);
            break;
        case C_SENDRECV:
            check = i < COUNT;
            want = val((rank + n - 1) % n, i);
            break;
        default:
            check = false;
            want = 0;
        }
        if (check && out[i] != want)
            bad = i;
    }
    if (bad != big) {
        printf("UNCLEAN %s: %s succeeded with wrong data at %zu: %lld\n", who, name, bad,
               (long long)out[bad]);
        res = RES_UNCLEAN;
    }
out:
    free(in);
    free(out);
    return res;
}

/* Ends a communicator: destroy after success, abort after an error. */
static int end_comm(ecclComm_t comm, int res, const char *who)
{
    if (!comm)
        return res;
    if (res != RES_OK) {
        ecclCommAbort(comm);
        return res;
    }
    ecclResult_t r = ecclCommDestroy(comm);
    if (r != ecclSuccess)
        return failed_call(who, "ecclCommDestroy", r, ecclGetLastError(NULL));
    return res;
}

static void set_net_env(int rank)
{
    char host[16];
    snprintf(host, sizeof(host), "host%d", rank);
    setenv("ECCL_SHM_DISABLE", "1", 1);
    setenv("ECCL_NET", "socket", 1);
    setenv("ECCL_HOSTID", host, 1);
}

static int comm_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    const struct comm_scen *sc = arg;
    char who[32];
    snprintf(who, sizeof(who), "rank %d", rank);
    if (sc->net)
        set_net_env(rank);
    struct guard g;
    guard_begin(&g);
    if (sc->init)
        phase_begin();
    ecclComm_t comm = NULL;
    ecclResult_t r = mp_comm_init(&comm, nranks, id, rank);
    int res = RES_OK;
    if (r != ecclSuccess) {
        res = failed_call(who, "ecclCommInitRank", r, ecclGetLastError(NULL));
        comm = NULL;
        goto done;
    }
    if (!sc->init)
        phase_begin();
    if (sc->abort) {
        if (rank == 2) {
            usleep(50000);
            r = ecclCommAbort(comm);
            comm = NULL;
            if (r != ecclSuccess)
                res = failed_call(who, "ecclCommAbort", r, ecclGetLastError(NULL));
        } else {
            int64_t x = rank, y = 0;
            r = ecclAllReduce(&x, &y, 1, ecclInt64, ecclSum, comm, NULL);
            if (r == ecclSuccess) {
                printf("UNCLEAN %s: AllReduce succeeded with an aborted peer\n", who);
                res = RES_UNCLEAN;
            } else if (failed_call(who, "ecclAllReduce", r, ecclGetLastError(comm)) ==
                       RES_UNCLEAN) {
                res = RES_UNCLEAN;
            }
            ecclCommAbort(comm); /* the expected error: not an error of the run */
            comm = NULL;
        }
    } else if (sc->shrink) {
        if (rank != 2) {
            int exclude[1] = {2};
            ecclComm_t small = NULL;
            r = ecclCommShrink(comm, exclude, 1, &small, NULL, ECCL_SHRINK_DEFAULT);
            if (r != ecclSuccess) {
                res = failed_call(who, "ecclCommShrink", r, ecclGetLastError(comm));
            } else {
                int64_t x = rank + 1, y = 0;
                r = ecclAllReduce(&x, &y, 1, ecclInt64, ecclSum, small, NULL);
                if (r != ecclSuccess)
                    res = failed_call(who, "ecclAllReduce (shrunk)", r, ecclGetLastError(small));
                else if (y != 3)
                    res = RES_UNCLEAN,
                    printf("UNCLEAN %s: shrunk AllReduce gave %lld\n", who, (long long)y);
                res = end_comm(small, res, who);
            }
        }
        /* The parent goes once the survivors are done with the shrunk one. */
        if (mp_barrier_wait(sc->barrier, RANK_TIMEOUT / 2) != 0 && res == RES_OK) {
            printf("error %s: a peer never reached the barrier\n", who);
            res = RES_ERROR;
        }
    } else if (sc->coll != C_NONE) {
        res = run_coll(sc->coll, comm, rank, nranks, who);
    } else {
        res = run_coll(C_ALLREDUCE, comm, rank, nranks, who);
    }
    res = end_comm(comm, res, who);
done:
    phase_end();
    return worse(res, guard_end(&g, who));
}

/* Runs `fn` on NRANKS processes; the scenario's result from how each ended. */
static int run_procs(mp_rank_fn fn, void *arg, int nranks, const struct mp_action *acts, int nacts,
                     bool no_id)
{
    struct mp_opts o = {.nranks = nranks,
                        .fn = fn,
                        .arg = arg,
                        .timeout_ms = RANK_TIMEOUT,
                        .actions = acts,
                        .nactions = nacts,
                        .no_id = no_id,
                        .quiet = true};
    static struct mp_report rep;
    mp_run_opts(&o, &rep);
    /* Every rank killed by the harness, none failed: the unique id failed here (mp_run kills
     * the ranks waiting for it). A clean error when it said why. */
    int harness_killed = 0;
    for (int i = 0; i < nranks; i++)
        harness_killed += rep.rank[i].killed_fail_fast;
    if (!no_id && harness_killed == nranks)
        return failed_call("parent", "ecclGetUniqueId", ecclSystemError, ecclGetLastError(NULL));
    int res = RES_OK;
    for (int i = 0; i < nranks; i++) {
        const struct mp_rank_result *rr = &rep.rank[i];
        char buf[96];
        if (rr->acted_kill)
            continue;
        if (rr->exited && (rr->exit_code == RES_OK || rr->exit_code == RES_ERROR)) {
            res = worse(res, rr->exit_code);
            continue;
        }
        printf("UNCLEAN rank %d: %s\n", i, mp_rank_describe(rr, buf, sizeof(buf)));
        res = RES_UNCLEAN;
    }
    return res;
}

static int scen_comm(struct comm_scen *sc)
{
    if (sc->init)
        phase_begin(); /* the unique id's root runs in this process */
    int res = RES_OK;
    if (sc->shrink) {
        sc->barrier = mp_shm_alloc(sizeof(*sc->barrier));
        if (!sc->barrier)
            return RES_UNCLEAN;
        mp_barrier_init(sc->barrier, NRANKS);
    }
    res = run_procs(comm_rank, sc, NRANKS, NULL, 0, false);
    if (sc->barrier)
        mp_shm_free(sc->barrier, sizeof(*sc->barrier));
    if (sc->init)
        phase_end();
    return res;
}

/* Threads of this process: three ranks, init, AllReduce, destroy. */
static int thread_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    char who[32];
    snprintf(who, sizeof(who), "thread rank %d", rank);
    ecclComm_t comm = NULL;
    ecclResult_t r = mp_comm_init(&comm, nranks, id, rank);
    if (r != ecclSuccess)
        return failed_call(who, "ecclCommInitRank", r, ecclGetLastError(NULL));
    return end_comm(comm, run_coll(C_ALLREDUCE, comm, rank, nranks, who), who);
}

static int scen_init_threads(void)
{
    struct guard g;
    guard_begin(&g);
    phase_begin();
    int results[NRANKS] = {-1, -1, -1}; /* -1: the rank never ran (the unique id failed) */
    mt_run_ex(NRANKS, thread_rank, NULL, RANK_TIMEOUT, results);
    int res = RES_OK;
    if (results[0] == -1 && results[1] == -1 && results[2] == -1)
        res = failed_call("process", "ecclGetUniqueId", ecclSystemError, ecclGetLastError(NULL));
    for (int i = 0; i < NRANKS && results[0] != -1; i++)
        res =
            worse(res, results[i] == RES_OK || results[i] == RES_ERROR ? results[i] : RES_UNCLEAN);
    phase_end();
    return worse(res, guard_end(&g, "process"));
}

/* ---- elastic recovery --------------------------------------------------------------------- */

/* Ranks 0..2 are members of a shrink-mode job (min 2, max 3); rank 3 runs the embedded store.
 * Rank 2 is SIGKILLed at step 2 (mp_point "die"); the survivors recover and finish. */
struct el_shared {
    _Atomic int port; /* 0: not yet, -1: the store did not start */
    _Atomic int done;
};

#define EL_STEPS 6

static void el_env(int port)
{
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/torture", port);
    setenv("ECCL_ELASTIC_STORE", url, 1);
    setenv("ECCL_ELASTIC_JOB_ID", "torture", 1);
    setenv("ECCL_ELASTIC_MIN_RANKS", "2", 1);
    setenv("ECCL_ELASTIC_MAX_RANKS", "3", 1);
    setenv("ECCL_ELASTIC_MODE", "shrink", 1);
    setenv("ECCL_ELASTIC_LEASE_MS", "1000", 1);
    setenv("ECCL_ELASTIC_LAST_CALL_MS", "300", 1);
    setenv("ECCL_ELASTIC_JOIN_TIMEOUT_MS", "8000", 1);
    setenv("ECCL_ELASTIC_BOOT_TIMEOUT_MS", "8000", 1);
    setenv("ECCL_ELASTIC_RECOVER_TIMEOUT_MS", "8000", 1);
    setenv("ECCL_ELASTIC_INIT_TIMEOUT_MS", "8000", 1);
    setenv("ECCL_BOOTSTRAP_TIMEOUT", "8000", 0);
}

static int el_store_rank(struct el_shared *sh)
{
    struct guard g;
    guard_begin(&g);
    phase_begin();
    struct store_server *srv = NULL;
    int port = 0, res = RES_OK;
    ecclResult_t r = store_server_start("127.0.0.1:0", &srv, &port);
    if (r != ecclSuccess) {
        res = failed_call("store", "store_server_start", r, ecclGetLastError(NULL));
        atomic_store(&sh->port, -1);
    } else {
        atomic_store(&sh->port, port);
        for (int i = 0; i < RANK_TIMEOUT / 10 - 200 && atomic_load(&sh->done) < NRANKS; i++)
            usleep(10000);
        store_server_stop(srv);
    }
    phase_end();
    return worse(res, guard_end(&g, "store"));
}

static int el_member(int rank, struct el_shared *sh)
{
    char who[32];
    snprintf(who, sizeof(who), "member %d", rank);
    int port = 0;
    for (int i = 0; i < 1000 && (port = atomic_load(&sh->port)) == 0; i++)
        usleep(10000);
    if (port <= 0) {
        printf("error %s: no store\n", who);
        atomic_fetch_add(&sh->done, 1);
        return RES_ERROR;
    }
    el_env(port);
    char member[16];
    snprintf(member, sizeof(member), "m%d", rank);
    setenv("ECCL_ELASTIC_MEMBER_ID", member, 1);
    struct guard g;
    guard_begin(&g);
    phase_begin();
    int res = RES_OK, recoveries = 0;
    ecclElastic_t el = NULL;
    ecclElasticInfo_t info;
    ecclResult_t r = ecclElasticJoin(&el, NULL);
    if (r != ecclSuccess) {
        res = failed_call(who, "ecclElasticJoin", r, ecclGetLastError(NULL));
        el = NULL;
        goto done;
    }
    int64_t p = 0;
    const char *call = "ecclElasticSyncState";
    r = ecclElasticSyncState(el, &p, sizeof(p), NULL);
    ecclElasticGetInfo(el, &info);
    for (int64_t step = info.step + 1; r == ecclSuccess && step < EL_STEPS;) {
        if (rank == 2 && step == 2) {
            phase_end();
            atomic_fetch_add(&sh->done, 1);
            mp_point("die"); /* SIGKILLed here */
        }
        ecclComm_t comm;
        call = "ecclElasticGetComm";
        r = ecclElasticGetComm(el, &comm);
        if (r != ecclSuccess)
            break;
        int64_t one = 1, sum = 0;
        r = ecclAllReduce(&one, &sum, 1, ecclInt64, ecclSum, comm, NULL);
        ecclElasticChange_t change = ecclElasticNoChange;
        if (r == ecclSuccess) {
            p += sum;
            r = ecclElasticCommit(el, step);
        }
        if (r == ecclSuccess)
            r = ecclElasticPoll(el, &change);
        if (r != ecclSuccess || change != ecclElasticNoChange) {
            call = "ecclElasticRecover";
            r = ecclElasticRecover(el);
            if (r != ecclSuccess)
                break;
            recoveries++;
            call = "ecclElasticSyncState";
            r = ecclElasticSyncState(el, &p, sizeof(p), NULL);
            ecclElasticGetInfo(el, &info);
            step = info.step + 1;
            continue;
        }
        step++;
    }
    if (r != ecclSuccess) {
        res = failed_call(who, call, r, ecclGetLastError(NULL));
    } else {
        ecclElasticGetInfo(el, &info);
        if (!faulting && (info.nranks != 2 || recoveries < 1)) {
            printf("UNCLEAN %s: finished with %d ranks after %d recoveries\n", who, info.nranks,
                   recoveries);
            res = RES_UNCLEAN;
        }
        r = ecclElasticLeave(el); /* frees el */
        if (r != ecclSuccess)
            res = worse(res, failed_call(who, "ecclElasticLeave", r, ecclGetLastError(NULL)));
        el = NULL;
    }
    if (el) {
        r = ecclElasticDestroy(el);
        if (r != ecclSuccess)
            res = worse(res, failed_call(who, "ecclElasticDestroy", r, ecclGetLastError(NULL)));
    }
done:
    atomic_fetch_add(&sh->done, 1);
    phase_end();
    return worse(res, guard_end(&g, who));
}

static int el_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)nranks;
    (void)id;
    return rank == NRANKS ? el_store_rank(arg) : el_member(rank, arg);
}

static int scen_elastic(void)
{
    struct el_shared *sh = mp_shm_alloc(sizeof(*sh));
    if (!sh)
        return RES_UNCLEAN;
    const struct mp_action die = {.point = "die", .rank = 2, .target = -1, .kind = MP_ACT_KILL};
    int res = run_procs(el_rank, sh, NRANKS + 1, &die, 1, true);
    mp_shm_free(sh, sizeof(*sh));
    return res;
}

/* ---- store -------------------------------------------------------------------------------- */

static int scen_store(void)
{
    struct guard g;
    guard_begin(&g);
    phase_begin();
    int steps = torture_store_ops();
    phase_end();
    int res = steps == 16 ? RES_OK : RES_ERROR;
    if (res != RES_OK)
        printf("error store: %d of 16 steps done: %s\n", steps, ecclGetLastError(NULL));
    return worse(res, guard_end(&g, "store"));
}

/* ---- the table ---------------------------------------------------------------------------- */

struct scenario {
    const char *name;
    int (*run)(const struct scenario *s);
    struct comm_scen comm;
};

static int run_comm_scen(const struct scenario *s)
{
    struct comm_scen sc = s->comm;
    return scen_comm(&sc);
}

static int run_threads(const struct scenario *s)
{
    (void)s;
    return scen_init_threads();
}

static int run_elastic(const struct scenario *s)
{
    (void)s;
    return scen_elastic();
}

static int run_store(const struct scenario *s)
{
    (void)s;
    return scen_store();
}

static const struct scenario scenarios[] = {
    {"init_threads", run_threads, {0}},
    {"init_procs", run_comm_scen, {.init = true}},
    {"allreduce", run_comm_scen, {.coll = C_ALLREDUCE}},
    {"allreduce_net", run_comm_scen, {.coll = C_ALLREDUCE, .net = true}},
    {"broadcast", run_comm_scen, {.coll = C_BROADCAST}},
    {"reduce", run_comm_scen, {.coll = C_REDUCE}},
    {"allgather", run_comm_scen, {.coll = C_ALLGATHER}},
    {"reducescatter", run_comm_scen, {.coll = C_REDUCESCATTER}},
    {"alltoall", run_comm_scen, {.coll = C_ALLTOALL}},
    {"gather", run_comm_scen, {.coll = C_GATHER}},
    {"scatter", run_comm_scen, {.coll = C_SCATTER}},
    {"sendrecv", run_comm_scen, {.coll = C_SENDRECV}},
    {"abort", run_comm_scen, {.abort = true}},
    {"shrink", run_comm_scen, {.shrink = true}},
    {"elastic_recovery", run_elastic, {0}},
    {"store_ops", run_store, {0}},
};
#define NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

static char self_exe[512];

/* The plain test: each scenario in its own process, without faults, must succeed. */
static void test_clean_runs(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < NSCEN; i++) {
        fflush(stdout);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            execl(self_exe, self_exe, "--scenario", scenarios[i].name, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        printf("%s %s\n", ok ? "ok  " : "FAIL", scenarios[i].name);
        failed += !ok;
    }
    assert_int_equal(failed, 0);
}

int main(int argc, char **argv)
{
    mp_env_setup();
    setenv("ECCL_BOOTSTRAP_TIMEOUT", "8000", 0);
    setenv("ECCL_TIMEOUT_MS", "15000", 0);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < NSCEN; i++)
            printf("%s\n", scenarios[i].name);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--scenario") == 0) {
        for (size_t i = 0; i < NSCEN; i++)
            if (strcmp(argv[2], scenarios[i].name) == 0)
                return scenarios[i].run(&scenarios[i]);
        fprintf(stderr, "unknown scenario %s (--list)\n", argv[2]);
        return RES_UNCLEAN;
    }
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_clean_runs)};
    return cmocka_run_group_tests_name("torture scenarios", tests, NULL, NULL) ? 1 : 0;
}

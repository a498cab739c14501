/*
 * test_kill_rank_net.c - tests/fault/test_kill_rank.c across the network transport: 4 rank
 * processes on 2 "hosts" (ranks 0,1 and 2,3), so that ranks of one host share memory and the
 * hosts talk over TCP through the proxy's socket backend (ECCL_NET=socket). The hosts are made
 * two ways:
 *  - hostid: ECCL_HOSTID=hostA / hostB, set in each rank after the fork (loopback);
 *  - netns: two network namespaces joined by a veth pair (tests/support/netns.h), each rank in
 *    its host's namespace (left out, with the reason printed, where namespaces cannot be made);
 *  - hostid 4 hosts (kill and stop in an AllReduce only): every rank its own ECCL_HOSTID, so no
 *    shared memory at all and no UDS heartbeat: only the sockets and the watchdog can tell.
 * Rank 2 is SIGKILLed in the middle of an AllReduce, an AllGather, a Broadcast (rooted at rank 2)
 * or a Send/Recv group with every peer, or SIGSTOPped in the middle of an AllReduce. Every survivor's call must
 * return ecclRemoteError within 1 s of the kill (the watchdog is 10 s, so only the closed
 * connections can be what tells), or within the watchdog (ECCL_TIMEOUT_MS through
 * config.timeoutMs, 1 s) + 1 s of the stop; ecclCommGetAsyncError must say so and the last error
 * must name a rank; ecclCommShrink without rank 2 must give a working 3-rank communicator whose
 * AllReduce is correct; and after abort the survivor's fds and threads must be back to their
 * count before init. The ranks' INFO logs must show network connectors.
 *
 * Detection times (fault to the survivor's return) are printed per case, median and max over
 * the survivors of every repetition: --reps N repeats each case (default 1); --only PATTERN
 * runs the cases whose names match (cmocka's filter, e.g. '*netns*').
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/param.h"
#include "eccl.h"
#include "tests/support/mp.h"
#include "tests/support/netcolls.h"
#include "tests/support/netns.h"

#define NRANKS           4
#define VICTIM           2
#define COUNT            (1 << 20) /* floats per rank: long enough that peers are mid-collective */
#define KILL_BOUND       1000.0
#define WATCHDOG_MS      1000
#define STOP_BOUND       (WATCHDOG_MS + 1000.0)
#define KILL_WATCHDOG_MS 10000
#define MAX_REPS         20

enum which {
    ALLREDUCE,
    ALLGATHER,
    BROADCAST,
    SENDRECV,
};

static const char *const which_names[] = {"AllReduce", "AllGather", "Broadcast", "Send/Recv"};

enum variant {
    VAR_HOSTID, /* ECCL_HOSTID: ranks 0,1 | 2,3 */
    VAR_NETNS,  /* namespaces: ranks 0,1 | 2,3 */
    VAR_HOSTS4, /* ECCL_HOSTID: every rank its own host, so every connector is TCP */
};

static const char *const variant_names[] = {"hostid", "netns", "hostid 4 hosts"};

static struct netns_set ns;
static bool ns_ok;
static char ns_skip_reason[512];
static int reps = 1;

struct shared {
    struct mp_barrier barrier;
    _Atomic uint64_t kill_ms_bits; /* when the victim was signalled (mp_now_ms, as bits) */
    double detect_ms[NRANKS];
    int result[NRANKS];
};

struct ctx {
    enum which which;
    enum variant variant;
    struct shared *sh;
    double bound_ms;
    int timeout_ms; /* the watchdog */
    char log_dir[64];
};

static ecclResult_t run_one(enum which which, ecclComm_t comm, int rank, float *a, float *b)
{
    switch (which) {
    case ALLREDUCE:
        return ecclAllReduce(a, b, COUNT, ecclFloat, ecclSum, comm, NULL);
    case ALLGATHER:
        return ecclAllGather(a, b, COUNT / NRANKS, ecclFloat, comm, NULL);
    case BROADCAST:
        /* Rooted at the victim: a root elsewhere may legitimately finish, its 4 MiB absorbed by
         * socket buffers on the way (shared-memory connectors hold only their slots). */
        return ecclBroadcast(a, b, COUNT, ecclFloat, VICTIM, comm, NULL);
    case SENDRECV: {
        /* With every peer, so that every survivor depends on the victim. */
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
        ecclCommAbort(small);
        return 1;
    }
    /* Large enough to go through the pipelined path over the network (ranks 0,1 | 3). */
    enum { N = 300007 };
    float *v = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N);
    int bad = v == NULL || out == NULL;
    if (!bad) {
        for (int i = 0; i < N; i++)
            v[i] = (float)(me + i % 1000);
        r = ecclAllReduce(v, out, N, ecclFloat, ecclSum, small, NULL);
        bad = r != ecclSuccess;
        int i = 0;
        for (; i < N && !bad; i++)
            bad = out[i] != (float)(0 + 1 + 2 + 3 * (i % 1000));
        if (bad)
            printf("rank %d: AllReduce on the shrunk communicator: %s (%s), out[%d] %g\n", rank,
                   ecclGetErrorString(r), r != ecclSuccess ? ecclGetLastError(small) : "",
                   i > 0 ? i - 1 : 0, i > 0 ? out[i - 1] : 0.0);
    }
    free(v);
    free(out);
    if (ecclCommDestroy(small) != ecclSuccess) {
        printf("rank %d: destroy of the shrunk communicator: %s\n", rank, ecclGetLastError(NULL));
        bad = 1;
    }
    return bad;
}

static int host_of(enum variant v, int rank)
{
    return v == VAR_HOSTS4 ? rank : rank / (NRANKS / 2);
}

/* Puts the rank on its host: a namespace, or a host id; the log goes to the case's folder. A
 * bootstrap that cannot complete (a connector setup that waits for a message never sent) fails
 * after 5 s instead of the default 120 s, with a message. */
static int rank_place(const struct ctx *c, int rank)
{
    int host = host_of(c->variant, rank);
    if (c->variant == VAR_NETNS) {
        if (netns_enter(&ns, host) != 0)
            return -1;
        const struct nc_env env[] = {
            {"ECCL_NET", "socket"},     {"ECCL_SOCKET_IFNAME", NETNS_IFNAME}, {"ECCL_HOSTID", NULL},
            {"ECCL_SHM_DISABLE", NULL}, {"ECCL_BOOTSTRAP_TIMEOUT", "5000"},
        };
        return nc_rank_env(env, 5, c->log_dir, rank);
    }
    static const char *const ids[NRANKS] = {"hostA", "hostB", "hostC", "hostD"};
    const struct nc_env env[] = {
        {"ECCL_NET", "socket"},
        {"ECCL_HOSTID", ids[host]},
        {"ECCL_SHM_DISABLE", NULL},
        {"ECCL_BOOTSTRAP_TIMEOUT", "5000"},
    };
    return nc_rank_env(env, 4, c->log_dir, rank);
}

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct ctx *c = arg;
    if (rank_place(c, rank) != 0)
        return 1;
    int fds0 = mp_count_fds(), threads0 = mp_count_threads();
    float *a = malloc(sizeof(float) * COUNT), *b = malloc(sizeof(float) * COUNT * NRANKS);
    if (!a || !b)
        return 1;
    for (int i = 0; i < COUNT; i++)
        a[i] = (float)rank;
    ecclComm_t comm;
    ecclResult_t r = nc_comm_init(&comm, nranks, id, rank, c->timeout_ms);
    if (r != ecclSuccess) {
        printf("rank %d: init failed: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    for (int it = 0; it < 3; it++) {
        if (run_one(c->which, comm, rank, a, b) != ecclSuccess) {
            printf("rank %d: round %d failed before the fault: %s\n", rank, it,
                   ecclGetLastError(comm));
            return 1;
        }
    }
    if (mp_barrier_wait(&c->sh->barrier, 30000) != 0) {
        printf("rank %d: barrier failed\n", rank);
        return 1;
    }
    if (rank == VICTIM) {
        /* The fault time, taken just before the parent acts. */
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

static char parent_ifname_orig[64]; /* ECCL_SOCKET_IFNAME as main found it (mp_env_setup) */

/* Switches the parent's bootstrap interface (the unique id is made in the parent); NULL: back to
 * the one it had. */
static void parent_ifname(const char *ifname)
{
    setenv("ECCL_SOCKET_IFNAME", ifname != NULL ? ifname : parent_ifname_orig, 1);
    eccl_param_reset();
}

/* One run; adds the survivors' detection times to times[*ntimes]. Returns 0 on pass. */
static int run_once(struct ctx *c, enum mp_action_kind kind, double *times, int *ntimes)
{
    c->sh = mp_shm_alloc(sizeof(*c->sh));
    if (c->sh == NULL)
        return -1;
    mp_barrier_init(&c->sh->barrier, NRANKS);
    if (nc_log_dir_make(c->log_dir, sizeof(c->log_dir)) != 0) {
        mp_shm_free(c->sh, sizeof(*c->sh));
        return -1;
    }
    int rc = -1;
    if (c->variant == VAR_NETNS) {
        parent_ifname(NETNS_IFNAME);
        if (netns_enter(&ns, 0) != 0)
            goto out;
    }
    struct mp_report rep;
    rc = mp_run_victim(NRANKS, VICTIM, kind, rank_main, c, 25000, &rep);
    if (c->variant == VAR_NETNS) {
        if (netns_leave(&ns) != 0)
            rc = -1;
        parent_ifname(NULL);
    }
    for (int r = 0; r < NRANKS; r++) {
        if (r != VICTIM)
            times[(*ntimes)++] = c->sh->detect_ms[r];
    }
    int host[NRANKS];
    for (int r = 0; r < NRANKS; r++)
        host[r] = host_of(c->variant, r);
    struct nc_links l;
    int scan = nc_log_scan(c->log_dir, NRANKS, host, &l);
    /* Every rank, the victim too, set up network connectors to the other hosts (and logged
     * them before the fault), and shared-memory ones to the rank of its own host. */
    bool links_ok = scan == 0 && l.net_ranks == NRANKS && l.net_same_host == 0 &&
                    l.shm_cross_host == 0 &&
                    (c->variant == VAR_HOSTS4 ? l.shm == 0 : l.shm_ranks == NRANKS);
    if (!links_ok) {
        printf("the logs do not show network connectors between the hosts and shared memory "
               "within them\n");
        rc = -1;
    }
    if (rc != 0)
        nc_log_dump(c->log_dir, NRANKS);
out:
    nc_log_dir_remove(c->log_dir);
    mp_shm_free(c->sh, sizeof(*c->sh));
    c->sh = NULL;
    return rc;
}

static void run_case(enum variant variant, enum which which, enum mp_action_kind kind)
{
    if (variant == VAR_NETNS && !ns_ok) {
        printf("netns variant left out: %s\n", ns_skip_reason);
        skip();
    }
    bool stop = kind == MP_ACT_STOP;
    struct ctx c = {.which = which,
                    .variant = variant,
                    .bound_ms = stop ? STOP_BOUND : KILL_BOUND,
                    .timeout_ms = stop ? WATCHDOG_MS : KILL_WATCHDOG_MS};
    double times[MAX_REPS * NRANKS];
    int ntimes = 0, failed = 0;
    for (int i = 0; i < reps; i++)
        failed += run_once(&c, kind, times, &ntimes) != 0;
    double max = nc_max(times, ntimes), median = nc_median(times, ntimes);
    printf("detect [%s] %s %s: survivors returned within median %.1f ms, max %.1f ms of the "
           "fault (%d samples, bound %.0f ms)\n",
           variant_names[variant], stop ? "SIGSTOP" : "SIGKILL", which_names[which], median, max,
           ntimes, c.bound_ms);
    fflush(stdout);
    assert_int_equal(failed, 0);
}

#define CASES(var, tag)                               \
    static void test_##tag##_kill_allreduce(void **s) \
    {                                                 \
        (void)s;                                      \
        run_case(var, ALLREDUCE, MP_ACT_KILL);        \
    }                                                 \
    static void test_##tag##_kill_allgather(void **s) \
    {                                                 \
        (void)s;                                      \
        run_case(var, ALLGATHER, MP_ACT_KILL);        \
    }                                                 \
    static void test_##tag##_kill_broadcast(void **s) \
    {                                                 \
        (void)s;                                      \
        run_case(var, BROADCAST, MP_ACT_KILL);        \
    }                                                 \
    static void test_##tag##_kill_sendrecv(void **s)  \
    {                                                 \
        (void)s;                                      \
        run_case(var, SENDRECV, MP_ACT_KILL);         \
    }                                                 \
    static void test_##tag##_stop_allreduce(void **s) \
    {                                                 \
        (void)s;                                      \
        run_case(var, ALLREDUCE, MP_ACT_STOP);        \
    }

CASES(VAR_HOSTID, hostid)
CASES(VAR_NETNS, netns)

static void test_hosts4_kill_allreduce(void **s)
{
    (void)s;
    run_case(VAR_HOSTS4, ALLREDUCE, MP_ACT_KILL);
}

static void test_hosts4_stop_allreduce(void **s)
{
    (void)s;
    run_case(VAR_HOSTS4, ALLREDUCE, MP_ACT_STOP);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > MAX_REPS) {
                fprintf(stderr, "--reps: 1..%d\n", MAX_REPS);
                return 2;
            }
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            cmocka_set_test_filter(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--reps N] [--only PATTERN (e.g. '*hosts4*')]\n", argv[0]);
            return 2;
        }
    }
    mp_env_setup();
    snprintf(parent_ifname_orig, sizeof(parent_ifname_orig), "%s", getenv("ECCL_SOCKET_IFNAME"));
    setenv("ECCL_PROXY_HEARTBEAT_MS", "50", 0);
    setenv("ECCL_PROXY_HEARTBEAT_MISSES", "10", 0);
    int rc = netns_setup(&ns, 2);
    if (rc == -1) {
        printf("FAIL: network namespaces could not be set up: %s\n", netns_last_error());
        return 1;
    }
    ns_ok = rc == 0;
    if (!ns_ok)
        snprintf(ns_skip_reason, sizeof(ns_skip_reason), "%s", netns_last_error());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostid_kill_allreduce), cmocka_unit_test(test_hostid_kill_allgather),
        cmocka_unit_test(test_hostid_kill_broadcast), cmocka_unit_test(test_hostid_kill_sendrecv),
        cmocka_unit_test(test_hostid_stop_allreduce), cmocka_unit_test(test_netns_kill_allreduce),
        cmocka_unit_test(test_netns_kill_allgather),  cmocka_unit_test(test_netns_kill_broadcast),
        cmocka_unit_test(test_netns_kill_sendrecv),   cmocka_unit_test(test_netns_stop_allreduce),
        cmocka_unit_test(test_hosts4_kill_allreduce), cmocka_unit_test(test_hosts4_stop_allreduce),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    netns_teardown(&ns);
    if (!ns_ok)
        printf("netns variant left out (hostid variant %s): %s\n", failed ? "failed" : "passed",
               ns_skip_reason);
    return failed;
}

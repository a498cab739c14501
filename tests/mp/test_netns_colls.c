/*
 * test_netns_colls.c - the collectives between real network namespaces: each namespace is a
 * "host" (tests/support/netns.h: veth pairs, the interface eccl0 in every namespace,
 * ECCL_SOCKET_IFNAME=eccl0, ECCL_NET=socket), so ranks in different namespaces talk over TCP
 * through the proxy's socket backend and ranks of one namespace over shared memory.
 *  - hosts_2x2: 2 namespaces joined by one veth pair, 2 rank processes in each;
 *  - hosts_4x1: 4 namespaces on a bridge (in a fifth namespace), 1 rank in each.
 * The parent enters the first namespace before forking the ranks (so that the unique id it makes
 * after the fork, and the bootstrap root it serves, are on that namespace's eccl0); each rank
 * enters its own namespace right after the fork, before any eccl call, and leaves its INFO log
 * in a file. The colls.c matrix for a few types (every collective, op, size, in and out of
 * place), the extras and collectives of more than 4 MiB are checked; the logs must show "via
 * NET/Socket" connectors exactly between namespaces and "via SHM" ones only within one.
 *
 * Exits 77, with the reason, where namespaces cannot be made (not root, no `ip`, a container
 * that refuses). --full runs the whole matrix.
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
#include "tests/support/colls.h"
#include "tests/support/mp.h"
#include "tests/support/netcolls.h"
#include "tests/support/netns.h"

#define TIMEOUT_MS 50000

static bool full;
static struct netns_set ns2; /* 2 hosts: veth pair */
static struct netns_set ns4; /* 4 hosts: bridge */
static bool ns4_ok;
static char ns4_why[512];

struct run_arg {
    struct netns_set *ns;
    int per_host; /* ranks per namespace */
    struct nc_plan plan;
    struct tc_params p;
    struct tc_shared *sh;
    char log_dir[64];
};

static const struct nc_env rank_env[] = {
    {"ECCL_NET", "socket"},
    {"ECCL_SOCKET_IFNAME", NETNS_IFNAME},
    {"ECCL_HOSTID", NULL}, /* the namespace must decide */
    {"ECCL_SHM_DISABLE", NULL},
};

static int ns_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct run_arg *a = arg;
    if (netns_enter(a->ns, rank / a->per_host) != 0)
        return 1;
    if (nc_rank_env(rank_env, sizeof(rank_env) / sizeof(rank_env[0]), a->log_dir, rank) != 0)
        return 1;
    struct nc_plan plan = a->plan;
    plan.all_types = plan.all_types || full;
    return nc_rank_full(&a->p, a->sh, rank, nranks, id, &plan);
}

static void run_hosts(struct netns_set *ns, int per_host, const char *mode,
                      const struct nc_plan *plan)
{
    int nranks = ns->nhosts * per_host;
    struct run_arg a = {.ns = ns, .per_host = per_host, .plan = *plan};
    a.p.mode = mode;
    a.p.nranks = nranks;
    tc_filter_init(&a.p.filter);
    a.sh = tc_shared_create(nranks);
    assert_non_null(a.sh);
    assert_int_equal(nc_log_dir_make(a.log_dir, sizeof(a.log_dir)), 0);

    /* The unique id is made by mp_run in this process after the fork: it must be in the first
     * namespace, where rank 0 runs and where eccl0 has the root's address. */
    assert_int_equal(netns_enter(ns, 0), 0);
    double t0 = mp_now_ms();
    struct mp_opts o = {
        .nranks = nranks, .fn = ns_rank, .arg = &a, .timeout_ms = TIMEOUT_MS, .fail_fast = true};
    struct mp_report rep;
    int rc = mp_run_opts(&o, &rep);
    long bad = tc_summary(&a.p, a.sh, mp_now_ms() - t0);
    int left = netns_leave(ns);
    tc_shared_destroy(a.sh);

    int host[MP_MAX_RANKS];
    for (int r = 0; r < nranks; r++)
        host[r] = r / per_host;
    struct nc_links l;
    int scan = nc_log_scan(a.log_dir, nranks, host, &l);
    /* Every rank logs its own connectors; each has a ring neighbour in another namespace, and
     * (with 2 per namespace) one in its own. */
    bool links_ok = scan == 0 && l.unparsed == 0 && l.net_ranks == nranks && l.net_same_host == 0 &&
                    l.shm_cross_host == 0;
    links_ok = links_ok && (per_host > 1 ? l.shm_ranks == nranks : l.shm == 0);
    if (rc != 0 || bad != 0 || !links_ok)
        nc_log_dump(a.log_dir, nranks);
    nc_log_dir_remove(a.log_dir);
    assert_int_equal(left, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(bad, 0);
    assert_true(links_ok);
}

static const int types_2x2[] = {ecclFloat32, ecclInt32, ecclBfloat16};
static const int types_4x1[] = {ecclFloat32};

static void test_hosts_2x2(void **state)
{
    (void)state;
    struct nc_plan plan = {.dtypes = types_2x2, .ndtypes = 3, .extras = true, .large = true};
    run_hosts(&ns2, 2, "netns 2 hosts x 2 ranks", &plan);
}

static void test_hosts_4x1(void **state)
{
    (void)state;
    if (!ns4_ok) {
        printf("4 namespaces on a bridge cannot be made here: %s\n", ns4_why);
        skip();
    }
    struct nc_plan plan = {.dtypes = types_4x1, .ndtypes = 1, .extras = false, .large = true};
    run_hosts(&ns4, 1, "netns 4 hosts x 1 rank", &plan);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--full") == 0) {
            full = true;
        } else {
            fprintf(stderr, "usage: %s [--full]\n", argv[0]);
            return 2;
        }
    }
    mp_env_setup();
    /* The parent makes the unique id (bootstrap root address) inside the first namespace. */
    setenv("ECCL_SOCKET_IFNAME", NETNS_IFNAME, 1);
    setenv("ECCL_NET", "socket", 1);
    int rc = netns_setup(&ns2, 2);
    if (rc == 0) {
        /* A bridge may be missing where veth pairs work: then only that test is skipped. */
        int rc4 = netns_setup(&ns4, 4);
        ns4_ok = rc4 == 0;
        if (rc4 == NETNS_SKIP)
            snprintf(ns4_why, sizeof(ns4_why), "%s", netns_last_error());
        else if (rc4 != 0)
            rc = rc4;
    }
    if (rc == NETNS_SKIP) {
        printf("SKIP: network namespaces cannot be made here: %s\n", netns_last_error());
        return 77;
    }
    if (rc != 0) {
        printf("FAIL: network namespaces could not be set up: %s\n", netns_last_error());
        netns_teardown(&ns2);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hosts_2x2),
        cmocka_unit_test(test_hosts_4x1),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    netns_teardown(&ns4);
    netns_teardown(&ns2);
    return failed;
}

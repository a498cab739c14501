/*
 * test_net_colls.c - the collectives over the socket network transport on one machine
 * (loopback, ECCL_SOCKET_IFNAME=lo), 4 rank processes, in three set-ups:
 *  - tcp_only: ECCL_SHM_DISABLE=1 ECCL_NET=socket, every connector over TCP;
 *  - two_hosts: ECCL_HOSTID=hostA for ranks 0,1 and hostB for ranks 2,3 (set in each rank after
 *    the fork, before any eccl call): 2 "hosts" x 2 ranks, network between them, shared memory
 *    within each;
 *  - multi_socket: as tcp_only with ECCL_SOCKET_NTHREADS=1 ECCL_NSOCKS_PERTHREAD=4 (several data
 *    sockets per connection).
 * Each runs the colls.c matrix (every collective, op, size, in and out of place) for a few
 * types, the back-to-back and group extras, and AllReduce/Broadcast/AllGather/ReduceScatter of
 * more than 4 MiB, all checked; then the ranks' INFO logs must show network connectors
 * ("via NET") where the ranks are on different hosts and shared-memory ones ("via SHM") only
 * within a host.
 *
 * --full runs the whole matrix (every type) in each set-up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/colls.h"
#include "tests/support/mp.h"
#include "tests/support/netcolls.h"

#define NRANKS     4
#define TIMEOUT_MS 50000

static bool full;

struct net_mode {
    const char *name;
    const struct nc_env *env; /* for every rank */
    int nenv;
    bool hostid_split; /* ECCL_HOSTID hostA / hostB by rank / 2 */
    struct nc_plan plan;
};

struct run_arg {
    const struct net_mode *mode;
    struct tc_params p;
    struct tc_shared *sh;
    char log_dir[64];
};

static int net_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct run_arg *a = arg;
    const struct net_mode *m = a->mode;
    if (nc_rank_env(m->env, m->nenv, a->log_dir, rank) != 0)
        return 1;
    if (m->hostid_split) {
        struct nc_env host = {"ECCL_HOSTID", rank < nranks / 2 ? "hostA" : "hostB"};
        if (nc_rank_env(&host, 1, NULL, rank) != 0)
            return 1;
    }
    struct nc_plan plan = m->plan;
    plan.all_types = plan.all_types || full;
    return nc_rank_full(&a->p, a->sh, rank, nranks, id, &plan);
}

static void run_mode(const struct net_mode *m)
{
    struct run_arg a = {.mode = m, .p = {.mode = m->name, .nranks = NRANKS}};
    tc_filter_init(&a.p.filter);
    a.sh = tc_shared_create(NRANKS);
    assert_non_null(a.sh);
    assert_int_equal(nc_log_dir_make(a.log_dir, sizeof(a.log_dir)), 0);
    double t0 = mp_now_ms();
    struct mp_opts o = {
        .nranks = NRANKS, .fn = net_rank, .arg = &a, .timeout_ms = TIMEOUT_MS, .fail_fast = true};
    struct mp_report rep;
    int rc = mp_run_opts(&o, &rep);
    long bad = tc_summary(&a.p, a.sh, mp_now_ms() - t0);
    tc_shared_destroy(a.sh);

    int host[NRANKS];
    for (int r = 0; r < NRANKS; r++)
        host[r] = m->hostid_split ? r / (NRANKS / 2) : r;
    struct nc_links l;
    int scan = nc_log_scan(a.log_dir, NRANKS, host, &l);
    /* Every rank logs its own connectors: in a ring over 2 hosts x 2 ranks each rank has a
     * neighbour on the other host and one on its own. */
    bool links_ok = scan == 0 && l.unparsed == 0 && l.net_ranks == NRANKS && l.net_same_host == 0 &&
                    l.shm_cross_host == 0;
    if (m->hostid_split)
        links_ok = links_ok && l.shm_ranks == NRANKS;
    else
        links_ok = links_ok && l.shm == 0; /* ECCL_SHM_DISABLE=1 */
    if (rc != 0 || bad != 0 || !links_ok)
        nc_log_dump(a.log_dir, NRANKS);
    nc_log_dir_remove(a.log_dir);
    assert_int_equal(rc, 0);
    assert_int_equal(bad, 0);
    assert_true(links_ok);
}

static const int types_a[] = {ecclFloat32, ecclInt32, ecclFloat16, ecclUint8};
static const int types_b[] = {ecclFloat32, ecclBfloat16, ecclInt64, ecclFloat8e5m2};
static const int types_c[] = {ecclFloat32};

static const struct nc_env env_tcp[] = {
    {"ECCL_SHM_DISABLE", "1"},
    {"ECCL_NET", "socket"},
    {"ECCL_HOSTID", NULL},
};

static const struct nc_env env_hosts[] = {
    {"ECCL_SHM_DISABLE", NULL},
    {"ECCL_NET", "socket"},
};

static const struct nc_env env_multi[] = {
    {"ECCL_SHM_DISABLE", "1"},     {"ECCL_NET", "socket"},         {"ECCL_HOSTID", NULL},
    {"ECCL_SOCKET_NTHREADS", "1"}, {"ECCL_NSOCKS_PERTHREAD", "4"},
};

static void test_tcp_only(void **state)
{
    (void)state;
    static const struct net_mode m = {
        .name = "net tcp_only",
        .env = env_tcp,
        .nenv = 3,
        .plan = {.dtypes = types_a, .ndtypes = 4, .extras = true, .large = true},
    };
    run_mode(&m);
}

static void test_two_hosts(void **state)
{
    (void)state;
    static const struct net_mode m = {
        .name = "net two_hosts",
        .env = env_hosts,
        .nenv = 2,
        .hostid_split = true,
        .plan = {.dtypes = types_b, .ndtypes = 4, .extras = true, .large = true},
    };
    run_mode(&m);
}

static void test_multi_socket(void **state)
{
    (void)state;
    static const struct net_mode m = {
        .name = "net multi_socket",
        .env = env_multi,
        .nenv = 5,
        .plan = {.dtypes = types_c, .ndtypes = 1, .extras = false, .large = true},
    };
    run_mode(&m);
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
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_only),
        cmocka_unit_test(test_two_hosts),
        cmocka_unit_test(test_multi_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

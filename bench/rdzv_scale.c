/*
 * rdzv_scale.c - how long N members take to form a generation (elastic/rdzv.h), and how long the
 * rest take to agree the next one after one member's lease is revoked.
 *
 *   build/bench/rdzv_scale URL|embedded N [K]
 *
 * N members are threads of this process, each with its own rendezvous handle: its own member id,
 * lease, member record, registrations and proposer lock, and the same agreement code as a real
 * member (el_rdzv_join, el_rdzv_next, el_rdzv_boot_*, el_rdzv_poll). Every K of them (default 1)
 * share one store handle, the way K members of one process would: what is shared is the
 * handle's connections (its pool of HTTP connections to etcd, or its one request connection to
 * the embedded store), its keepalive thread (which refreshes the K leases in one request), its
 * watch streams (watches of the same range share one stream, store.c), and the last generation
 * record decoded by one of its members (elastic/rdzv.c, compared byte for byte). Nothing else is:
 * each member still sends its own grant, transactions and CAS, and each receives and applies
 * every event of its watch. A real deployment has one member per host (K = 1, on N hosts);
 * docs/internals/rdzv.md says what K changes in the load of the store.
 *
 * "embedded" starts the embedded store in this process (reached over loopback TCP). Phases, each
 * timed from its start until the last member is done:
 *   form:  all N join at once (min N/2, max N) and get generation 1's record;
 *   boot:  rank 0 publishes the bootstrap blob and every member has it (from the start of form);
 *   next:  one member (rank N/2) is evicted (its lease revoked); the others see it through their
 *          watch and agree generation 2 in shrink mode, until the last has the record;
 *   nboot: the same with generation 2's blob.
 * Prints one line: "backend N K form_ms boot_ms next_ms nboot_ms", or an error.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/log.h"
#include "common/time.h"
#include "elastic/rdzv.h"
#include "store/store.h"

struct bmember {
    int idx;
    struct store *s;
    struct el_rdzv *r;
    struct el_rdzv_gen *g;
    pthread_t thread;
    uint64_t t_join, t_form, t_boot, t_next, t_nboot;
    bool victim;
    ecclResult_t res;
    char err[256];
};

static int nmembers;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* "min/median/max" in ms of the n times in v (sorted in place). */
static void spread(const char *what, uint64_t *v, int n)
{
    if (n == 0)
        return;
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    fprintf(stderr, "  %-6s min %6.0f  median %6.0f  max %6.0f ms\n", what, v[0] / 1e6,
            v[n / 2] / 1e6, v[n - 1] / 1e6);
}
static pthread_barrier_t start_barrier;
static _Atomic int formed;
static uint64_t t_start;

static ecclResult_t boot(struct bmember *m)
{
    if (m->g->rank == 0) {
        char blob[64];
        int n = snprintf(blob, sizeof(blob), "bootstrap-of-generation-%" PRId64, m->g->gen);
        return el_rdzv_boot_publish(m->r, m->g, blob, (size_t)n, eccl_deadline_ms(60000));
    }
    return el_rdzv_boot_wait(m->r, m->g, eccl_deadline_ms(60000));
}

static void *member_main(void *arg)
{
    struct bmember *m = arg;
    struct el_rdzv_config c;
    el_rdzv_config_init(&c);
    char id[64];
    snprintf(id, sizeof(id), "bench-host-%04d:%d:%08x", m->idx / 8, 100000 + m->idx,
             (unsigned)(m->idx * 2654435761u));
    c.job = "scale";
    c.member_id = id;
    c.min_members = nmembers / 2; /* the next generation has N - 1 */
    c.max_members = nmembers;
    c.last_call_ms = 60000;
    c.join_timeout_ms = 120000;
    pthread_barrier_wait(&start_barrier);
    ecclResult_t res = el_rdzv_join(m->s, &c, eccl_deadline_ms(120000), &m->r);
    m->t_join = eccl_now_ns();
    if (res == ecclSuccess)
        res = el_rdzv_next(m->r, EL_RDZV_GROW, -1, eccl_deadline_ms(120000), &m->g);
    if (res != ecclSuccess)
        goto out;
    m->t_form = eccl_now_ns();
    res = boot(m);
    if (res != ecclSuccess)
        goto out;
    m->t_boot = eccl_now_ns();
    m->victim = m->g->rank == nmembers / 2;
    atomic_fetch_add(&formed, 1);
    if (m->victim)
        goto out;
    /* Wait for the failure, then agree the next generation. */
    for (;;) {
        struct el_rdzv_event ev;
        res = el_rdzv_poll(m->r, eccl_deadline_ms(120000), &ev);
        if (res != ecclSuccess)
            goto out;
        if (ev.type == EL_RDZV_EV_MEMBER_LOST)
            break;
        if (ev.type == EL_RDZV_EV_NONE) {
            res = ecclInternalError;
            snprintf(m->err, sizeof(m->err), "no member-lost event in 120 s");
            goto out;
        }
    }
    el_rdzv_gen_free(m->g);
    m->g = NULL;
    res = el_rdzv_next(m->r, EL_RDZV_SHRINK, 0, eccl_deadline_ms(120000), &m->g);
    if (res != ecclSuccess)
        goto out;
    m->t_next = eccl_now_ns();
    res = boot(m);
    m->t_nboot = eccl_now_ns();
out:
    m->res = res;
    if (res != ecclSuccess && !m->err[0])
        snprintf(m->err, sizeof(m->err), "%s", eccl_log_last_error());
    if (res != ecclSuccess)
        atomic_fetch_add(&formed, 1); /* do not hold the main thread up */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s URL|embedded N [members per store handle]\n", argv[0]);
        return 2;
    }
    nmembers = atoi(argv[2]);
    int per = argc > 3 ? atoi(argv[3]) : 1;
    if (nmembers < 2 || nmembers > EL_RDZV_MAX_MEMBERS || per < 1) {
        fprintf(stderr, "N must be 2..%d, K >= 1\n", EL_RDZV_MAX_MEMBERS);
        return 2;
    }
    struct store_server *srv = NULL;
    char url[512];
    const char *backend = "etcd";
    if (!strcmp(argv[1], "embedded")) {
        /* Each handle holds a request connection and a watch connection. */
        setenv("ECCL_STORE_MAX_CONNS", "16384", 0);
        int port;
        if (store_server_start("127.0.0.1:0", &srv, &port) != ecclSuccess)
            return 1;
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/bench", port);
        backend = "embedded";
    } else {
        snprintf(url, sizeof(url), "%s/bench", argv[1]);
    }
    struct store *admin = NULL;
    if (store_open(url, eccl_deadline_ms(10000), &admin) != ecclSuccess) {
        fprintf(stderr, "cannot open %s: %s\n", url, eccl_log_last_error());
        return 1;
    }
    store_delete(admin, "scale/", 6, true, eccl_deadline_ms(10000), NULL, NULL);

    struct bmember *ms = calloc((size_t)nmembers, sizeof(*ms));
    int nstores = (nmembers + per - 1) / per;
    struct store **stores = calloc((size_t)nstores, sizeof(*stores));
    for (int i = 0; i < nstores; i++) {
        if (store_open(url, eccl_deadline_ms(10000), &stores[i]) != ecclSuccess) {
            fprintf(stderr, "cannot open store handle %d: %s\n", i, eccl_log_last_error());
            return 1;
        }
    }
    pthread_barrier_init(&start_barrier, NULL, (unsigned)nmembers + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < nmembers; i++) {
        ms[i].idx = i;
        ms[i].s = stores[i / per];
        if (pthread_create(&ms[i].thread, &attr, member_main, &ms[i]) != 0) {
            fprintf(stderr, "cannot start thread %d\n", i);
            return 1;
        }
    }
    t_start = eccl_now_ns();
    pthread_barrier_wait(&start_barrier);
    while (atomic_load(&formed) < nmembers)
        eccl_sleep_us(1000);
    int victim = -1;
    for (int i = 0; i < nmembers; i++)
        if (ms[i].res == ecclSuccess && ms[i].victim)
            victim = i;
    uint64_t t_evict = eccl_now_ns();
    if (victim >= 0 && el_rdzv_evict(admin, "scale", el_rdzv_member_id(ms[victim].r),
                                     eccl_deadline_ms(10000)) != ecclSuccess)
        fprintf(stderr, "evict failed: %s\n", eccl_log_last_error());
    for (int i = 0; i < nmembers; i++)
        pthread_join(ms[i].thread, NULL);

    uint64_t join = 0, form = 0, bootd = 0, next = 0, nboot = 0;
    int failed = 0;
    for (int i = 0; i < nmembers; i++) {
        if (ms[i].res != ecclSuccess) {
            if (failed++ < 5)
                fprintf(stderr, "member %d failed (%d): %s\n", i, ms[i].res, ms[i].err);
            continue;
        }
        join = ECCL_MAX(join, ms[i].t_join - t_start);
        form = ECCL_MAX(form, ms[i].t_form - t_start);
        bootd = ECCL_MAX(bootd, ms[i].t_boot - t_start);
        if (i != victim) {
            next = ECCL_MAX(next, ms[i].t_next - t_evict);
            nboot = ECCL_MAX(nboot, ms[i].t_nboot - t_evict);
        }
    }
    uint64_t *v = calloc((size_t)nmembers * 4, sizeof(*v));
    int nv = 0;
    for (int i = 0; i < nmembers; i++)
        if (ms[i].res == ecclSuccess)
            v[nv++] = ms[i].t_join - t_start;
    spread("join", v, nv);
    nv = 0;
    for (int i = 0; i < nmembers; i++)
        if (ms[i].res == ecclSuccess)
            v[nv++] = ms[i].t_form - t_start;
    spread("form", v, nv);
    nv = 0;
    for (int i = 0; i < nmembers; i++)
        if (ms[i].res == ecclSuccess && i != victim)
            v[nv++] = ms[i].t_next - t_evict;
    spread("next", v, nv);
    free(v);
    if (failed || victim < 0) {
        fprintf(stderr, "%d members failed\n", failed);
    } else {
        fprintf(stderr, "all joined after %.0f ms\n", join / 1e6);
        printf("%s %d %d %.0f %.0f %.0f %.0f\n", backend, nmembers, per, form / 1e6, bootd / 1e6,
               next / 1e6, nboot / 1e6);
    }
    /* Stop every watch first, then revoke the leases: members leaving one by one would each
     * tell all the others (N^2 events) for nothing. */
    int64_t *leases = calloc((size_t)nmembers, sizeof(*leases));
    for (int i = 0; i < nmembers; i++) {
        leases[i] = ms[i].r && i != victim ? el_rdzv_lease(ms[i].r) : 0;
        el_rdzv_gen_free(ms[i].g);
        el_rdzv_destroy(ms[i].r);
    }
    for (int i = 0; i < nmembers; i++)
        if (leases[i])
            store_lease_revoke(admin, leases[i], eccl_deadline_ms(10000));
    free(leases);
    for (int i = 0; i < nstores; i++)
        store_close(stores[i]);
    store_delete(admin, "scale/", 6, true, eccl_deadline_ms(10000), NULL, NULL);
    store_close(admin);
    store_server_stop(srv);
    free(stores);
    free(ms);
    return failed ? 1 : 0;
}

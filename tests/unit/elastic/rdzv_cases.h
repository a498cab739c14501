/*
 * rdzv_cases.h - the rendezvous cases (elastic/rdzv.h) that run against every store backend.
 *
 * Included by one test binary per backend (test_rdzv_embedded.c, test_rdzv_etcd.c), which defines
 * before including:
 *   static char base_url[256];   store URL without prefix ("tcp://127.0.0.1:P", "etcd://...")
 *   static int64_t lease_ms;     the lease the members use (the backend's minimum TTL)
 *   static int64_t quick_next_ms; the bound of a next generation whose designated proposer is
 *                                known (well under the 500 ms a non-designated member waits)
 * and lists RDZV_CASES in its cmocka group. Every case uses its own job id, members are threads
 * with a store handle each, and all results are checked on the main thread.
 */
#ifndef ECCL_TESTS_ELASTIC_RDZV_CASES_H
#define ECCL_TESTS_ELASTIC_RDZV_CASES_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/time.h"
#include "elastic/rdzv.h"
#include "elastic/rdzv_int.h"
#include "store/store.h"

#define OK(expr) assert_int_equal((expr), ecclSuccess)
#define DL(ms)   eccl_deadline_ms(ms)
#define MAXM     16

static struct store *open_store(void)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/rdzvtest", base_url);
    struct store *s = NULL;
    OK(store_open(url, DL(10000), &s));
    return s;
}

/* Removes a job's keys (an earlier run against the same etcd may have left some). */
static void clean_job(const char *job)
{
    struct store *s = open_store();
    char p[128];
    snprintf(p, sizeof(p), "%s/", job);
    OK(store_delete(s, p, strlen(p), true, DL(5000), NULL, NULL));
    store_close(s);
}

static void cfg_for(struct el_rdzv_config *c, const char *job, const char *id, int min, int max)
{
    el_rdzv_config_init(c);
    c->job = job;
    c->member_id = id;
    c->min_members = min;
    c->max_members = max;
    c->lease_ms = lease_ms;
    c->last_call_ms = 200;
    c->join_timeout_ms = 20000;
    c->replace_wait_ms = 2000;
    c->boot_timeout_ms = 5000;
}

/* One member, run on its own thread: join (unless already joined), next, and the bootstrap
 * blob (rank 0 publishes "boot-<gen>", the others wait for it). */
struct member {
    char id[64];
    struct el_rdzv_config cfg;
    struct store *s;
    struct el_rdzv *r;
    enum el_rdzv_mode mode;
    int64_t step;
    bool boot;
    int64_t timeout_ms;
    struct el_rdzv_gen *g;
    ecclResult_t join_res, next_res, boot_res;
    char err[512];
    uint64_t next_ns; /* when el_rdzv_next returned */
    uint64_t done_ns;
    pthread_t thread;
};

static void member_init(struct member *m, const char *job, const char *id, int min, int max)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", id);
    cfg_for(&m->cfg, job, m->id, min, max);
    m->step = -1;
    m->boot = true;
    m->timeout_ms = 20000;
    m->s = open_store();
}

static void member_fini(struct member *m)
{
    el_rdzv_gen_free(m->g);
    m->g = NULL;
    el_rdzv_destroy(m->r);
    m->r = NULL;
    store_close(m->s);
    m->s = NULL;
}

static void *member_main(void *arg)
{
    struct member *m = arg;
    m->err[0] = 0;
    m->join_res = m->next_res = m->boot_res = ecclSuccess;
    el_rdzv_gen_free(m->g);
    m->g = NULL;
    if (!m->r) {
        m->join_res = el_rdzv_join(m->s, &m->cfg, DL(m->timeout_ms), &m->r);
        if (m->join_res != ecclSuccess)
            goto out;
    }
    m->next_res = el_rdzv_next(m->r, m->mode, m->step, DL(m->timeout_ms), &m->g);
    m->next_ns = eccl_now_ns();
    if (m->next_res != ecclSuccess || !m->boot)
        goto out;
    if (m->g->rank == 0) {
        char blob[64];
        int n = snprintf(blob, sizeof(blob), "boot-%lld", (long long)m->g->gen);
        m->boot_res = el_rdzv_boot_publish(m->r, m->g, blob, (size_t)n, DL(m->timeout_ms));
    } else {
        m->boot_res = el_rdzv_boot_wait(m->r, m->g, DL(m->timeout_ms));
    }
out:
    snprintf(m->err, sizeof(m->err), "%s", eccl_log_last_error());
    m->done_ns = eccl_now_ns();
    return NULL;
}

static void member_start(struct member *m)
{
    assert_int_equal(pthread_create(&m->thread, NULL, member_main, m), 0);
}

static void member_join_thread(struct member *m)
{
    pthread_join(m->thread, NULL);
}

/* Runs members [0, n) to completion in parallel. */
static void run_members(struct member *ms, int n)
{
    for (int i = 0; i < n; i++)
        member_start(&ms[i]);
    for (int i = 0; i < n; i++)
        member_join_thread(&ms[i]);
}

static void expect_formed(struct member *ms, int n, int64_t gen, int size)
{
    for (int i = 0; i < n; i++) {
        if (ms[i].join_res != ecclSuccess || ms[i].next_res != ecclSuccess ||
            ms[i].boot_res != ecclSuccess)
            fail_msg("member %s: join %d next %d boot %d: %s", ms[i].id, ms[i].join_res,
                     ms[i].next_res, ms[i].boot_res, ms[i].err);
        assert_non_null(ms[i].g);
        assert_int_equal(ms[i].g->gen, gen);
        assert_int_equal(ms[i].g->nmembers, size);
        assert_string_equal(ms[i].g->members[ms[i].g->rank], ms[i].id);
        /* Everyone has the same record. */
        assert_int_equal(ms[i].g->mod_rev, ms[0].g->mod_rev);
        assert_int_equal(ms[i].g->step, ms[0].g->step);
        for (int k = 0; k < size; k++)
            assert_string_equal(ms[i].g->members[k], ms[0].g->members[k]);
        if (ms[i].boot) {
            char blob[64];
            int bl = snprintf(blob, sizeof(blob), "boot-%lld", (long long)gen);
            assert_true(ms[i].g->has_boot);
            assert_int_equal(ms[i].g->boot_len, bl);
            assert_memory_equal(ms[i].g->boot, blob, (size_t)bl);
        }
    }
    /* Ranks 0..size-1, each once. */
    bool seen[MAXM] = {0};
    for (int i = 0; i < n; i++) {
        assert_true(ms[i].g->rank >= 0 && ms[i].g->rank < size);
        assert_false(seen[ms[i].g->rank]);
        seen[ms[i].g->rank] = true;
    }
}

/* Polls r until an event of `type` (others are skipped) or the deadline; fails the test then. */
static struct el_rdzv_event wait_event(struct el_rdzv *r, enum el_rdzv_event_type type,
                                       int64_t timeout_ms)
{
    uint64_t until = DL(timeout_ms);
    struct el_rdzv_event ev;
    for (;;) {
        OK(el_rdzv_poll(r, until, &ev));
        if (ev.type == type)
            return ev;
        if (ev.type == EL_RDZV_EV_NONE)
            fail_msg("no event %d within %lld ms", (int)type, (long long)timeout_ms);
    }
}

/* Polls r until member `id` is reported gone by an event of `type` (MEMBER_LOST or
 * MEMBER_LEFT; other events are skipped). */
static struct el_rdzv_event wait_gone(struct el_rdzv *r, enum el_rdzv_event_type type,
                                      const char *id, int64_t timeout_ms)
{
    uint64_t until = DL(timeout_ms);
    for (;;) {
        uint64_t left = until > eccl_now_ns() ? (until - eccl_now_ns()) / ECCL_NS_PER_MS : 0;
        struct el_rdzv_event ev = wait_event(r, type, (int64_t)left + 1);
        if (strcmp(ev.member, id) == 0)
            return ev;
    }
}

static struct el_rdzv_event wait_lost(struct el_rdzv *r, const char *id, int64_t timeout_ms)
{
    return wait_gone(r, EL_RDZV_EV_MEMBER_LOST, id, timeout_ms);
}

static int rank_of(const struct el_rdzv_gen *g, const char *id)
{
    return el_gen_find(g, id);
}

/* ---- forming a generation ---- */

/* N members form generation 1: ranks 0..N-1, one record seen by all, the blob of rank 0 seen by
 * all; the leftovers are cleaned up by leave. */
static void rdzv_form_first(void **state)
{
    (void)state;
    enum { N = 8 };
    clean_job("form");
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof(id), "host%d:%d:abc", i, 1000 + i);
        member_init(&ms[i], "form", id, N, N);
        ms[i].cfg.last_call_ms = 10000; /* closes at max, not at the last call */
    }
    uint64_t t0 = eccl_now_ns();
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    assert_true(eccl_now_ns() - t0 < 5 * ECCL_NS_PER_S);
    assert_int_equal(ms[0].g->step, -1);
    assert_int_equal(el_rdzv_current_gen(ms[0].r), 1);
    /* Registrations and the proposer lock are gone once the record is written. */
    struct store_kvs *kvs = NULL;
    OK(store_get_prefix(ms[0].s, "form/i/", 7, NULL, 0, 0, DL(5000), &kvs));
    assert_int_equal(kvs->count, 0);
    store_kvs_free(kvs);
    /* Members leave cleanly: their keys go at once. */
    for (int i = 0; i < N; i++)
        OK(el_rdzv_leave(ms[i].r, DL(5000)));
    OK(store_get_prefix(ms[0].s, "form/s/m/", 9, NULL, 0, 0, DL(5000), &kvs));
    assert_int_equal(kvs->count, 0);
    store_kvs_free(kvs);
    OK(store_get_prefix(ms[0].s, "form/s/x/", 9, NULL, 0, 0, DL(5000), &kvs));
    assert_int_equal(kvs->count, 0);
    store_kvs_free(kvs);
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* min 2, max 4, 3 members: the window closes last_call after min arrived, with the three. */
static void rdzv_last_call(void **state)
{
    (void)state;
    clean_job("lastcall");
    struct member ms[3];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "lc%d", i);
        member_init(&ms[i], "lastcall", id, 2, 4);
        ms[i].cfg.last_call_ms = 600;
    }
    uint64_t t0 = eccl_now_ns();
    run_members(ms, 3);
    uint64_t ms_taken = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    expect_formed(ms, 3, 1, 3);
    assert_true(ms_taken >= 550);
    assert_true(ms_taken < 6000);
    for (int i = 0; i < 3; i++)
        member_fini(&ms[i]);
}

/* min 3, two members: both fail with a clear timeout at the join timeout. */
static void rdzv_join_timeout(void **state)
{
    (void)state;
    clean_job("jointo");
    struct member ms[2];
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "jt%d", i);
        member_init(&ms[i], "jointo", id, 3, 3);
        ms[i].cfg.join_timeout_ms = 800;
    }
    uint64_t t0 = eccl_now_ns();
    run_members(ms, 2);
    uint64_t taken = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ms[i].join_res, ecclSuccess);
        assert_int_equal(ms[i].next_res, ecclInternalError);
        assert_non_null(strstr(ms[i].err, "timed out"));
        assert_null(ms[i].g);
    }
    assert_true(taken >= 750 && taken < 5000);
    for (int i = 0; i < 2; i++)
        member_fini(&ms[i]);
}

/* ---- failures ---- */

/* A member whose keepalive stops is seen gone by the others through the watch, within the TTL and
 * a margin; an evicted one at once; one that leaves at once, as a departure (MEMBER_LEFT); an
 * evicted member learns that its own lease is lost. */
static void rdzv_lease_expiry(void **state)
{
    (void)state;
    enum { N = 5 };
    clean_job("expiry");
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "ex%d", i);
        member_init(&ms[i], "expiry", id, N, N);
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);

    /* ex3 stops refreshing its lease (a hung or partitioned process). */
    int r3 = ms[3].g->rank;
    store_lease_unkeep(ms[3].s, el_rdzv_lease(ms[3].r));
    uint64_t t0 = eccl_now_ns();
    struct el_rdzv_event ev = wait_event(ms[0].r, EL_RDZV_EV_MEMBER_LOST, lease_ms + 3000);
    uint64_t took = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    assert_string_equal(ev.member, "ex3");
    assert_int_equal(ev.rank, r3);
    assert_int_equal(ev.gen, 1);
    assert_true(took <= (uint64_t)lease_ms + 4000);
    ev = wait_event(ms[1].r, EL_RDZV_EV_MEMBER_LOST, 3000);
    assert_string_equal(ev.member, "ex3");

    /* The launcher evicts ex2: seen at once. */
    t0 = eccl_now_ns();
    OK(el_rdzv_evict(ms[0].s, "expiry", "ex2", DL(5000)));
    ev = wait_event(ms[1].r, EL_RDZV_EV_MEMBER_LOST, 3000);
    assert_string_equal(ev.member, "ex2");
    assert_true(eccl_now_ns() - t0 < 3000 * ECCL_NS_PER_MS);
    /* ex2's own keepalive finds its lease gone. */
    ev = wait_event(ms[2].r, EL_RDZV_EV_LEASE_LOST, lease_ms + 3000);
    assert_non_null(strstr(ev.why, "ex2"));
    /* Gone members cannot be evicted again: a clear error. */
    assert_int_equal(el_rdzv_evict(ms[0].s, "expiry", "ex2", DL(5000)), ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "not registered"));

    /* ex1 leaves cleanly: seen at once, as a departure (it announced it), with its rank; and
     * the announcement goes with its lease. */
    int r1 = ms[1].g->rank;
    OK(el_rdzv_leave(ms[1].r, DL(5000)));
    t0 = eccl_now_ns();
    ev = wait_gone(ms[0].r, EL_RDZV_EV_MEMBER_LEFT, "ex1", 3000);
    assert_true(eccl_now_ns() - t0 < 3000 * ECCL_NS_PER_MS);
    assert_int_equal(ev.rank, r1);
    assert_int_equal(ev.gen, 1);
    assert_non_null(strstr(ev.why, "left"));
    struct store_kvs *kvs = NULL;
    OK(store_get_prefix(ms[0].s, "expiry/s/x/", 11, NULL, 0, 0, DL(5000), &kvs));
    assert_int_equal(kvs->count, 0);
    store_kvs_free(kvs);
    /* An announcement that is not a member record changes nothing: ex4's eviction is still a
     * loss. */
    OK(store_put(ms[0].s, "expiry/s/x/ex4", 14, "junk", 4, 0, DL(5000), NULL));
    OK(el_rdzv_evict(ms[0].s, "expiry", "ex4", DL(5000)));
    ev = wait_lost(ms[0].r, "ex4", 3000);
    OK(store_delete(ms[0].s, "expiry/s/x/ex4", 14, false, DL(5000), NULL, NULL));
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* The revoke record: written once (create-if-absent), seen by every member with who and why. */
static void rdzv_revoke(void **state)
{
    (void)state;
    enum { N = 3 };
    clean_job("revoke");
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "rv%d", i);
        member_init(&ms[i], "revoke", id, N, N);
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    OK(el_rdzv_revoke(ms[1].r, 1, "rv2", "socket EOF from rank 2", DL(5000)));
    OK(el_rdzv_revoke(ms[0].r, 1, NULL, "second writer", DL(5000))); /* exists: a success */
    for (int i = 0; i < N; i++) {
        struct el_rdzv_event ev = wait_event(ms[i].r, EL_RDZV_EV_REVOKED, 3000);
        assert_int_equal(ev.gen, 1);
        assert_string_equal(ev.by, "rv1");
        assert_string_equal(ev.member, "rv2");
        assert_string_equal(ev.why, "socket EOF from rank 2");
        /* Only once. */
        OK(el_rdzv_poll(ms[i].r, DL(200), &ev));
        assert_int_equal(ev.type, EL_RDZV_EV_NONE);
    }
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* ---- the next generation ---- */

/* Shrink: rank 1 of 4 is evicted; the survivors keep their relative order; the step is the
 * minimum of the reported steps. */
static void rdzv_shrink(void **state)
{
    (void)state;
    enum { N = 4 };
    clean_job("shrink");
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "sh%d", i);
        member_init(&ms[i], "shrink", id, 2, N);
        ms[i].cfg.last_call_ms = 5000;
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    char order[N][16];
    for (int k = 0; k < N; k++)
        snprintf(order[k], sizeof(order[k]), "%s", ms[0].g->members[k]);
    /* Evict the member at rank 1. */
    int victim = -1;
    for (int i = 0; i < N; i++)
        if (ms[i].g->rank == 1)
            victim = i;
    OK(el_rdzv_evict(ms[0].s, "shrink", ms[victim].id, DL(5000)));
    struct member *sv[N];
    int ns = 0;
    for (int i = 0; i < N; i++)
        if (i != victim)
            sv[ns++] = &ms[i];
    for (int i = 0; i < ns; i++) {
        wait_event(sv[i]->r, EL_RDZV_EV_MEMBER_LOST, 3000);
        sv[i]->mode = EL_RDZV_SHRINK;
        sv[i]->step = 100 + i;
    }
    uint64_t t0 = eccl_now_ns();
    for (int i = 0; i < ns; i++)
        member_start(sv[i]);
    for (int i = 0; i < ns; i++)
        member_join_thread(sv[i]);
    /* Every live survivor registered: no need to wait for the last call. */
    assert_true(eccl_now_ns() - t0 < 4000 * ECCL_NS_PER_MS);
    struct member tmp[N];
    for (int i = 0; i < ns; i++)
        tmp[i] = *sv[i];
    expect_formed(tmp, ns, 2, 3);
    assert_int_equal(sv[0]->g->step, 100);
    /* Survivors in their old relative order. */
    int k = 0;
    for (int old = 0; old < N; old++) {
        if (old == 1)
            continue;
        assert_string_equal(sv[0]->g->members[k], order[old]);
        k++;
    }
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* Members that share store handles (four per handle, as members of one process would: their
 * watches share streams, their keepalives go in one request, one of them decodes a record for
 * the others) agree exactly as members with a handle each: generation 1 of all, then, after one
 * is evicted, generation 2 of the seven others in their old order; the evicted member's
 * handle-mates carry on. */
static void rdzv_shared_handles(void **state)
{
    (void)state;
    enum { N = 8, PER = 4 };
    clean_job("shared");
    struct store *h[N / PER];
    for (int k = 0; k < N / PER; k++)
        h[k] = open_store();
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "sd%d", i);
        member_init(&ms[i], "shared", id, N / 2, N);
        store_close(ms[i].s);
        ms[i].s = h[i / PER];
        ms[i].cfg.last_call_ms = 5000;
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    char order[N][16];
    for (int k = 0; k < N; k++)
        snprintf(order[k], sizeof(order[k]), "%s", ms[0].g->members[k]);
    int victim = -1;
    for (int i = 0; i < N; i++)
        if (ms[i].g->rank == 2)
            victim = i;
    OK(el_rdzv_evict(h[0], "shared", ms[victim].id, DL(5000)));
    struct member *sv[N];
    int ns = 0;
    for (int i = 0; i < N; i++)
        if (i != victim)
            sv[ns++] = &ms[i];
    for (int i = 0; i < ns; i++) {
        struct el_rdzv_event ev = wait_lost(sv[i]->r, ms[victim].id, 3000);
        assert_int_equal(ev.rank, 2);
        sv[i]->mode = EL_RDZV_SHRINK;
        sv[i]->step = 50 + i;
    }
    for (int i = 0; i < ns; i++)
        member_start(sv[i]);
    for (int i = 0; i < ns; i++)
        member_join_thread(sv[i]);
    struct member tmp[N];
    for (int i = 0; i < ns; i++)
        tmp[i] = *sv[i];
    expect_formed(tmp, ns, 2, N - 1);
    assert_int_equal(sv[0]->g->step, 50);
    int k = 0;
    for (int old = 0; old < N; old++) {
        if (old == 2)
            continue;
        assert_string_equal(sv[0]->g->members[k], order[old]);
        k++;
    }
    for (int i = 0; i < N; i++) {
        el_rdzv_gen_free(ms[i].g);
        ms[i].g = NULL;
        el_rdzv_destroy(ms[i].r);
        ms[i].r = NULL;
        ms[i].s = NULL;
    }
    for (int k2 = 0; k2 < N / PER; k2++)
        store_close(h[k2]);
}

/* Shrink when the member that dies is rank 0: the survivors are already waiting for generation 2
 * when they hear of the eviction (as when they saw the failure on their sockets first), so none
 * of them was the designated proposer when it started waiting. The lowest surviving rank must
 * take over at once, not after the fallback delay (500 ms) of a non-designated member. */
static void rdzv_shrink_rank0(void **state)
{
    (void)state;
    enum { N = 4 };
    clean_job("shrink0");
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s0m%d", i);
        member_init(&ms[i], "shrink0", id, 2, N);
        ms[i].cfg.last_call_ms = 5000; /* closes because every live survivor is in */
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    char order[N][16];
    for (int k = 0; k < N; k++)
        snprintf(order[k], sizeof(order[k]), "%s", ms[0].g->members[k]);
    int victim = -1;
    for (int i = 0; i < N; i++)
        if (ms[i].g->rank == 0)
            victim = i;
    struct member *sv[N];
    int ns = 0;
    for (int i = 0; i < N; i++) {
        if (i == victim)
            continue;
        ms[i].mode = EL_RDZV_SHRINK;
        ms[i].step = 50;
        sv[ns++] = &ms[i];
    }
    for (int i = 0; i < ns; i++)
        member_start(sv[i]);
    /* Every survivor registered for generation 2 (and is waiting for its turn) before the
     * eviction. */
    struct store *s = open_store();
    uint64_t until = DL(10000);
    for (;;) {
        struct store_kvs *kvs = NULL;
        OK(store_get_prefix(s, "shrink0/i/2/", 12, NULL, 0, 0, DL(5000), &kvs));
        size_t n = kvs->count;
        store_kvs_free(kvs);
        if (n == (size_t)ns)
            break;
        if (eccl_deadline_passed(until))
            fail_msg("only %zu of %d survivors registered for generation 2", n, ns);
        eccl_sleep_us(2000);
    }
    eccl_sleep_us(20000);
    uint64_t t0 = eccl_now_ns();
    OK(el_rdzv_evict(s, "shrink0", ms[victim].id, DL(5000)));
    for (int i = 0; i < ns; i++)
        member_join_thread(sv[i]);
    uint64_t last = 0;
    for (int i = 0; i < ns; i++)
        if (sv[i]->next_ns > last)
            last = sv[i]->next_ns;
    double took_ms = (double)(last - t0) / 1e6;
    fprintf(stderr,
            "    generation 2 formed %.1f ms after the eviction of rank 0 (bound %lld ms)\n",
            took_ms, (long long)quick_next_ms);
    struct member tmp[N];
    for (int i = 0; i < ns; i++)
        tmp[i] = *sv[i];
    expect_formed(tmp, ns, 2, N - 1);
    for (int k = 1; k < N; k++)
        assert_string_equal(sv[0]->g->members[k - 1], order[k]);
    assert_int_equal(sv[0]->g->step, 50);
    assert_true(took_ms < (double)quick_next_ms);
    store_close(s);
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* Replace: rank 2 of 4 dies; a replacement that asks for rank 2 gets it; the size is restored.
 * Then without a replacement: after replace_wait the survivors shrink. */
static void rdzv_replace(void **state)
{
    (void)state;
    enum { N = 4 };
    clean_job("replace");
    struct member ms[N + 1];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "rp%d", i);
        member_init(&ms[i], "replace", id, 2, N);
        ms[i].cfg.last_call_ms = 5000;
        ms[i].cfg.replace_wait_ms = 8000;
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    char order[N][16];
    for (int k = 0; k < N; k++)
        snprintf(order[k], sizeof(order[k]), "%s", ms[0].g->members[k]);
    int victim = -1;
    for (int i = 0; i < N; i++)
        if (ms[i].g->rank == 2)
            victim = i;
    OK(el_rdzv_evict(ms[0].s, "replace", ms[victim].id, DL(5000)));
    /* The replacement: refused nothing, since the member it replaces is gone. */
    member_init(&ms[N], "replace", "rp-new", 2, N);
    ms[N].cfg.replace_rank = 2;
    ms[N].mode = EL_RDZV_REPLACE;
    struct member *run[N];
    int nr = 0;
    for (int i = 0; i < N; i++) {
        if (i == victim)
            continue;
        wait_event(ms[i].r, EL_RDZV_EV_MEMBER_LOST, 3000);
        ms[i].mode = EL_RDZV_REPLACE;
        run[nr++] = &ms[i];
    }
    run[nr++] = &ms[N];
    uint64_t t0 = eccl_now_ns();
    for (int i = 0; i < nr; i++)
        member_start(run[i]);
    for (int i = 0; i < nr; i++)
        member_join_thread(run[i]);
    /* Closed as soon as the size was restored, well before replace_wait. */
    assert_true(eccl_now_ns() - t0 < 6000 * ECCL_NS_PER_MS);
    struct member tmp[N];
    for (int i = 0; i < nr; i++)
        tmp[i] = *run[i];
    expect_formed(tmp, nr, 2, N);
    assert_int_equal(rank_of(ms[N].g, "rp-new"), 2);
    for (int k = 0; k < N; k++)
        if (k != 2)
            assert_string_equal(ms[N].g->members[k], order[k]);

    /* No replacement this time: replace_wait (300 ms) passes, then the survivors shrink. */
    struct member *r2[N];
    int n2 = 0;
    int victim2 = -1;
    for (int i = 0; i < nr; i++)
        if (run[i]->g->rank == 0)
            victim2 = i;
    OK(el_rdzv_evict(ms[0].s, "replace", run[victim2]->id, DL(5000)));
    for (int i = 0; i < nr; i++) {
        if (i == victim2)
            continue;
        wait_event(run[i]->r, EL_RDZV_EV_MEMBER_LOST, 3000);
        run[i]->mode = EL_RDZV_REPLACE;
        run[i]->r->replace_wait_ms = 300; /* (the handle's copy of the config) */
        r2[n2++] = run[i];
    }
    t0 = eccl_now_ns();
    for (int i = 0; i < n2; i++)
        member_start(r2[i]);
    for (int i = 0; i < n2; i++)
        member_join_thread(r2[i]);
    uint64_t took = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    for (int i = 0; i < n2; i++)
        tmp[i] = *r2[i];
    expect_formed(tmp, n2, 3, N - 1);
    assert_true(took >= 250 && took < 5000);
    for (int i = 0; i < N + 1; i++)
        member_fini(&ms[i]);
}

/* Grow: a joiner waits (the members see it), a member revokes the generation to admit it, and
 * the next generation appends it. */
static void rdzv_grow(void **state)
{
    (void)state;
    enum { N = 2 };
    clean_job("grow");
    struct member ms[N + 1];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "gr%d", i);
        member_init(&ms[i], "grow", id, 1, 4);
        ms[i].cfg.last_call_ms = 300;
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    member_init(&ms[N], "grow", "gr-new", 1, 4);
    ms[N].cfg.last_call_ms = 300;
    ms[N].mode = EL_RDZV_GROW;
    member_start(&ms[N]);
    struct el_rdzv_event ev = wait_event(ms[0].r, EL_RDZV_EV_JOINER, 5000);
    assert_string_equal(ev.member, "gr-new");
    /* The joiner must not form a generation of its own while the members run. */
    eccl_sleep_us(500000);
    assert_int_equal(el_rdzv_current_gen(ms[0].r), 1);
    OK(el_rdzv_revoke(ms[0].r, 1, NULL, "grow", DL(5000)));
    for (int i = 0; i < N; i++) {
        wait_event(ms[i].r, EL_RDZV_EV_REVOKED, 3000);
        ms[i].mode = EL_RDZV_GROW;
        member_start(&ms[i]);
    }
    for (int i = 0; i < N + 1; i++)
        member_join_thread(&ms[i]);
    expect_formed(ms, N + 1, 2, N + 1);
    assert_int_equal(rank_of(ms[0].g, "gr-new"), N);
    for (int i = 0; i < N + 1; i++)
        member_fini(&ms[i]);
}

/* ---- limits and isolation ---- */

/* max 2: a third member that joins while generation 1 runs is refused at once; three that arrive
 * together: two form the generation, the third is told max was reached (no hang). */
static void rdzv_max_refused(void **state)
{
    (void)state;
    clean_job("max");
    struct member ms[3];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "mx%d", i);
        member_init(&ms[i], "max", id, 2, 2);
        ms[i].cfg.last_call_ms = 100;
        ms[i].timeout_ms = 10000;
    }
    uint64_t t0 = eccl_now_ns();
    run_members(ms, 3);
    assert_true(eccl_now_ns() - t0 < 8000 * ECCL_NS_PER_MS);
    int formed = 0, refused = -1;
    for (int i = 0; i < 3; i++) {
        if (ms[i].join_res == ecclSuccess && ms[i].next_res == ecclSuccess)
            formed++;
        else
            refused = i;
    }
    assert_int_equal(formed, 2);
    assert_true(refused >= 0);
    assert_int_equal(ms[refused].join_res == ecclSuccess ? ms[refused].next_res
                                                         : ms[refused].join_res,
                     ecclInvalidUsage);
    assert_non_null(strstr(ms[refused].err, "max_members (2) reached"));
    member_fini(&ms[refused]);

    /* Joining the running, full generation: refused by join itself. */
    member_init(&ms[refused], "max", "mx-late", 2, 2);
    struct el_rdzv *r = (struct el_rdzv *)1;
    assert_int_equal(el_rdzv_join(ms[refused].s, &ms[refused].cfg, DL(5000), &r), ecclInvalidUsage);
    assert_ptr_equal(r, (struct el_rdzv *)1);
    assert_non_null(strstr(eccl_log_last_error(), "max_members (2) reached"));
    /* And it left nothing behind. */
    struct store_kv *kv = (struct store_kv *)1;
    OK(store_get(ms[refused].s, "max/s/m/mx-late", 15, DL(5000), &kv, NULL));
    assert_null(kv);
    for (int i = 0; i < 3; i++)
        member_fini(&ms[i]);
}

/* Two jobs in one store, with the same member ids: each sees only its own keys; a duplicate id in
 * one job is refused. */
static void rdzv_jobs_isolated(void **state)
{
    (void)state;
    clean_job("jobA");
    clean_job("jobB");
    struct member a[2], b[3];
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "w%d", i);
        member_init(&a[i], "jobA", id, 2, 2);
    }
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "w%d", i);
        member_init(&b[i], "jobB", id, 3, 3);
    }
    for (int i = 0; i < 2; i++)
        member_start(&a[i]);
    for (int i = 0; i < 3; i++)
        member_start(&b[i]);
    for (int i = 0; i < 2; i++)
        member_join_thread(&a[i]);
    for (int i = 0; i < 3; i++)
        member_join_thread(&b[i]);
    expect_formed(a, 2, 1, 2);
    expect_formed(b, 3, 1, 3);
    /* Every key of the store's prefix belongs to one job or the other. */
    struct store_kvs *kvs = NULL;
    OK(store_get_prefix(a[0].s, "job", 3, NULL, 0, 0, DL(5000), &kvs));
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < kvs->count; i++) {
        if (strncmp(kvs->kvs[i].key, "jobA/", 5) == 0)
            na++;
        else if (strncmp(kvs->kvs[i].key, "jobB/", 5) == 0)
            nb++;
        else
            fail_msg("key %s belongs to no job", kvs->kvs[i].key);
    }
    store_kvs_free(kvs);
    assert_true(na >= 3 && nb >= 4); /* members, records, blobs */
    /* A duplicate member id in jobA is refused; jobB is untouched. */
    struct el_rdzv_config c;
    cfg_for(&c, "jobA", "w1", 2, 2);
    struct el_rdzv *r = NULL;
    assert_int_equal(el_rdzv_join(a[0].s, &c, DL(5000), &r), ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "already registered"));
    /* A failure in jobB is not seen in jobA. */
    OK(el_rdzv_evict(b[0].s, "jobB", "w2", DL(5000)));
    wait_event(b[0].r, EL_RDZV_EV_MEMBER_LOST, 3000);
    struct el_rdzv_event ev;
    OK(el_rdzv_poll(a[0].r, DL(300), &ev));
    assert_int_equal(ev.type, EL_RDZV_EV_NONE);
    for (int i = 0; i < 2; i++)
        member_fini(&a[i]);
    for (int i = 0; i < 3; i++)
        member_fini(&b[i]);
}

/* A job read from outside, as a launcher does (no handle): the rank of a member in the current
 * generation, whether a member is registered, how many are; the name checks. */
static void rdzv_outside_view(void **state)
{
    (void)state;
    enum { N = 3 };
    clean_job("outside");
    struct store *s = open_store();
    int64_t gen = -5, count = -5;
    int rank = -5;
    bool reg = true;
    /* No generation, no member yet. */
    OK(el_rdzv_member_rank(s, "outside", "ov0", DL(5000), &gen, &rank));
    assert_int_equal(gen, 0);
    assert_int_equal(rank, -1);
    OK(el_rdzv_member_registered(s, "outside", "ov0", DL(5000), &reg));
    assert_false(reg);
    OK(el_rdzv_member_count(s, "outside", 0, DL(5000), &count));
    assert_int_equal(count, 0);
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "ov%d", i);
        member_init(&ms[i], "outside", id, N, N);
    }
    run_members(ms, N);
    expect_formed(ms, N, 1, N);
    for (int i = 0; i < N; i++) {
        OK(el_rdzv_member_rank(s, "outside", ms[i].id, DL(5000), &gen, &rank));
        assert_int_equal(gen, 1);
        assert_int_equal(rank, ms[i].g->rank);
        OK(el_rdzv_member_registered(s, "outside", ms[i].id, DL(5000), &reg));
        assert_true(reg);
    }
    OK(el_rdzv_member_rank(s, "outside", "stranger", DL(5000), &gen, &rank));
    assert_int_equal(gen, 1);
    assert_int_equal(rank, -1);
    OK(el_rdzv_member_count(s, "outside", 0, DL(5000), &count));
    assert_int_equal(count, N);
    OK(el_rdzv_member_count(s, "outside", 1, DL(5000), &count));
    assert_int_equal(count, 1);
    /* Evicted: no longer registered, still in the record until the next generation. */
    OK(el_rdzv_evict(s, "outside", ms[1].id, DL(5000)));
    OK(el_rdzv_member_registered(s, "outside", ms[1].id, DL(5000), &reg));
    assert_false(reg);
    OK(el_rdzv_member_count(s, "outside", 0, DL(5000), &count));
    assert_int_equal(count, N - 1);
    OK(el_rdzv_member_rank(s, "outside", ms[1].id, DL(5000), &gen, &rank));
    assert_int_equal(rank, ms[1].g->rank);
    /* Another job sees none of it. */
    OK(el_rdzv_member_count(s, "outside2", 0, DL(5000), &count));
    assert_int_equal(count, 0);
    /* Bad arguments: clear errors, outputs untouched. */
    gen = -5;
    rank = -5;
    assert_int_equal(el_rdzv_member_rank(s, "a/b", "ov0", DL(1000), &gen, &rank),
                     ecclInvalidArgument);
    assert_int_equal(el_rdzv_member_rank(s, "outside", "has space", DL(1000), &gen, &rank),
                     ecclInvalidArgument);
    assert_int_equal(el_rdzv_member_registered(s, "outside", NULL, DL(1000), &reg),
                     ecclInvalidArgument);
    assert_int_equal(el_rdzv_member_count(s, "", 0, DL(1000), &count), ecclInvalidArgument);
    assert_int_equal(gen, -5);
    assert_int_equal(rank, -5);
    assert_true(el_rdzv_job_valid("a.b-c_9"));
    assert_false(el_rdzv_job_valid(".."));
    assert_false(el_rdzv_job_valid(NULL));
    assert_true(el_rdzv_member_id_valid("host:1:ab"));
    assert_false(el_rdzv_member_id_valid("a/b"));
    assert_false(el_rdzv_member_id_valid(""));
    assert_false(el_rdzv_member_id_valid(NULL));
    store_close(s);
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* ---- races and the bootstrap blob ---- */

struct rec_counter {
    _Atomic int puts;
    _Atomic int64_t last_gen;
    _Atomic int bad;
};

static void count_records(void *arg, const struct store_event *ev, size_t n, ecclResult_t status)
{
    struct rec_counter *c = arg;
    if (status != ecclSuccess)
        return;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].type != STORE_EVENT_PUT)
            continue;
        struct el_rdzv_gen *g = NULL;
        if (el_rec_decode_gen(ev[i].kv.value, ev[i].kv.value_len, "test", &g) != ecclSuccess) {
            atomic_fetch_add(&c->bad, 1);
            continue;
        }
        /* Generation numbers only go up, by one: never two records for one number. */
        if (g->gen != atomic_load(&c->last_gen) + 1)
            atomic_fetch_add(&c->bad, 1);
        atomic_store(&c->last_gen, g->gen);
        atomic_fetch_add(&c->puts, 1);
        el_rdzv_gen_free(g);
    }
}

/* The proposer lock is taken away in the middle of the agreement (two members then race to
 * propose): one record per generation number, and the same record for all. Then several rounds
 * of evictions and agreements, watched: every generation number is written once. */
static void rdzv_race_one_record(void **state)
{
    (void)state;
    enum { N = 5 };
    clean_job("race");
    struct store *ws = open_store();
    struct rec_counter cnt = {0};
    struct store_watch *w = NULL;
    OK(store_watch_create(ws, "race/s/g", 8, false, 0, count_records, &cnt, DL(5000), &w));
    struct member ms[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "rc%d", i);
        member_init(&ms[i], "race", id, N, N);
    }
    /* Four of five: they wait; their proposer waits for the fifth. */
    for (int i = 0; i < N - 1; i++)
        member_start(&ms[i]);
    struct store_kv *kv = NULL;
    OK(store_wait_key(ws, "race/s/gl/1", 11, DL(10000), &kv));
    store_kv_free(kv);
    eccl_sleep_us(200000);
    /* Take the lock away: the proposer gives up, the others race for it. */
    OK(store_delete(ws, "race/s/gl/1", 11, false, DL(5000), NULL, NULL));
    eccl_sleep_us(300000);
    member_start(&ms[N - 1]);
    for (int i = 0; i < N; i++)
        member_join_thread(&ms[i]);
    expect_formed(ms, N, 1, N);

    for (int round = 0; round < 3; round++) {
        int n = N - round;
        int victim = (round * 2) % n;
        OK(el_rdzv_evict(ms[0].s, "race", ms[victim].id, DL(5000)));
        /* Compact the array: the victim goes to the end. */
        struct member t = ms[victim];
        ms[victim] = ms[n - 1];
        ms[n - 1] = t;
        for (int i = 0; i < n - 1; i++) {
            wait_event(ms[i].r, EL_RDZV_EV_MEMBER_LOST, 3000);
            ms[i].mode = EL_RDZV_SHRINK;
            ms[i].cfg.min_members = 1;
        }
        for (int i = 0; i < n - 1; i++) {
            ms[i].r->min_members = 1;
            member_start(&ms[i]);
        }
        for (int i = 0; i < n - 1; i++)
            member_join_thread(&ms[i]);
        expect_formed(ms, n - 1, 2 + round, n - 1);
    }
    eccl_sleep_us(200000);
    store_watch_destroy(w);
    assert_int_equal(atomic_load(&cnt.bad), 0);
    assert_int_equal(atomic_load(&cnt.puts), 4);
    assert_int_equal(atomic_load(&cnt.last_gen), 4);
    store_close(ws);
    for (int i = 0; i < N; i++)
        member_fini(&ms[i]);
}

/* The blob: only rank 0 publishes, once; a blob nobody publishes is a clear timeout; abort stops a
 * waiting member at once. */
static void rdzv_boot_and_abort(void **state)
{
    (void)state;
    clean_job("boot");
    struct member ms[2];
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "bt%d", i);
        member_init(&ms[i], "boot", id, 2, 2);
        ms[i].boot = false;
    }
    run_members(ms, 2);
    for (int i = 0; i < 2; i++)
        OK(ms[i].next_res);
    struct member *r0 = ms[0].g->rank == 0 ? &ms[0] : &ms[1];
    struct member *r1 = r0 == &ms[0] ? &ms[1] : &ms[0];
    /* Rank 1 may not publish. */
    assert_int_equal(el_rdzv_boot_publish(r1->r, r1->g, "x", 1, DL(5000)), ecclInvalidUsage);
    /* Nobody published: a timeout that says who should have. */
    r1->r->boot_timeout_ms = 300;
    uint64_t t0 = eccl_now_ns();
    assert_int_equal(el_rdzv_boot_wait(r1->r, r1->g, DL(5000)), ecclInternalError);
    assert_true(eccl_now_ns() - t0 < 3000 * ECCL_NS_PER_MS);
    assert_non_null(strstr(eccl_log_last_error(), "timed out"));
    assert_non_null(strstr(eccl_log_last_error(), r0->id));
    r1->r->boot_timeout_ms = 5000;
    const unsigned char blob[EL_RDZV_MAX_BOOT] = {1, 2, 3, 0, 255};
    OK(el_rdzv_boot_publish(r0->r, r0->g, blob, sizeof(blob), DL(5000)));
    OK(el_rdzv_boot_publish(r0->r, r0->g, blob, sizeof(blob), DL(5000))); /* same: fine */
    assert_int_equal(el_rdzv_boot_publish(r0->r, r0->g, blob, 3, DL(5000)), ecclInvalidUsage);
    OK(el_rdzv_boot_wait(r1->r, r1->g, DL(5000)));
    assert_int_equal(r1->g->boot_len, sizeof(blob));
    assert_memory_equal(r1->g->boot, blob, sizeof(blob));
    assert_int_equal(el_rdzv_boot_publish(r0->r, r0->g, blob, EL_RDZV_MAX_BOOT + 1, DL(5000)),
                     ecclInvalidArgument);

    /* Abort: a member waiting for a generation that cannot form stops at once. */
    clean_job("abort");
    struct member a;
    member_init(&a, "abort", "ab0", 2, 2);
    a.boot = false;
    OK(el_rdzv_join(a.s, &a.cfg, DL(5000), &a.r));
    member_start(&a);
    eccl_sleep_us(500000);
    t0 = eccl_now_ns();
    el_rdzv_abort(a.r);
    member_join_thread(&a);
    assert_true(eccl_now_ns() - t0 < 2000 * ECCL_NS_PER_MS);
    assert_int_equal(a.next_res, ecclRemoteError);
    assert_non_null(strstr(a.err, "aborted"));
    struct el_rdzv_event ev;
    assert_int_equal(el_rdzv_poll(a.r, DL(100), &ev), ecclRemoteError);
    member_fini(&a);
    for (int i = 0; i < 2; i++)
        member_fini(&ms[i]);
}

/* ---- corrupted records ---- */

static void put_raw(struct store *s, const char *key, const void *v, size_t len)
{
    OK(store_put(s, key, strlen(key), v, len, 0, DL(5000), NULL));
}

/* Garbage written straight into the store: clear errors, no crash. */
static void rdzv_corrupted(void **state)
{
    (void)state;
    clean_job("bad");
    struct store *s = open_store();
    struct member ms[2];
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "bd%d", i);
        member_init(&ms[i], "bad", id, 2, 3);
        ms[i].boot = false;
    }
    /* A registration nobody can read, for the first generation: the proposer ignores it. */
    put_raw(s, "bad/i/1/intruder", "garbage", 7);
    run_members(ms, 2);
    for (int i = 0; i < 2; i++)
        OK(ms[i].next_res);
    assert_int_equal(ms[0].g->nmembers, 2);
    assert_int_equal(rank_of(ms[0].g, "intruder"), -1);

    /* A garbage blob: the waiting member gets a clear error. */
    struct member *r1 = ms[0].g->rank == 1 ? &ms[0] : &ms[1];
    unsigned char junk[40];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 37);
    put_raw(s, "bad/s/gb/1", junk, sizeof(junk));
    assert_int_equal(el_rdzv_boot_wait(r1->r, r1->g, DL(3000)), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "corrupted"));

    /* A garbage revoke record still revokes, and says it could not be read. */
    put_raw(s, "bad/s/gr/1", "\x01\x02", 2);
    struct el_rdzv_event ev = wait_event(ms[0].r, EL_RDZV_EV_REVOKED, 3000);
    assert_non_null(strstr(ev.why, "unreadable"));

    /* A garbage member record: evict refuses with a clear error. */
    put_raw(s, "bad/s/m/ghost", "zz", 2);
    assert_int_equal(el_rdzv_evict(s, "bad", "ghost", DL(5000)), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "corrupted"));

    /* A garbage generation record: members see an error event, next and join fail clearly. */
    put_raw(s, "bad/s/g", "ERDZ-not-really", 15);
    ev = wait_event(ms[0].r, EL_RDZV_EV_ERROR, 3000);
    assert_non_null(strstr(ev.why, "corrupted"));
    struct el_rdzv_gen *g = (struct el_rdzv_gen *)1;
    assert_int_equal(el_rdzv_next(ms[0].r, EL_RDZV_SHRINK, 5, DL(3000), &g), ecclRemoteError);
    assert_ptr_equal(g, (struct el_rdzv_gen *)1);
    assert_non_null(strstr(eccl_log_last_error(), "corrupted"));
    struct el_rdzv_config c;
    cfg_for(&c, "bad", "bd-late", 2, 3);
    struct el_rdzv *r = NULL;
    assert_int_equal(el_rdzv_join(s, &c, DL(5000), &r), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "corrupted"));
    int64_t bad_gen = -5;
    int bad_rank = -5;
    assert_int_equal(el_rdzv_member_rank(s, "bad", "bd0", DL(5000), &bad_gen, &bad_rank),
                     ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "corrupted"));
    assert_int_equal(bad_gen, -5);
    assert_int_equal(bad_rank, -5);
    /* A record with a valid layout but a lying member count: the same. */
    struct el_rdzv_gen *good = NULL;
    OK(el_gen_dup(ms[0].g, &good));
    unsigned char *val = NULL;
    size_t len = 0;
    OK(el_rec_encode_gen(good, &val, &len));
    val[8 + 8 + 8 + 8 + 1 + 3] = 0xff; /* member count, low byte */
    put_raw(s, "bad/s/g", val, len);
    assert_int_equal(el_rdzv_join(s, &c, DL(5000), &r), ecclRemoteError);
    eccl_free(val);
    el_rdzv_gen_free(good);
    for (int i = 0; i < 2; i++)
        member_fini(&ms[i]);
    store_close(s);
}

/* Arguments: clear errors, nothing allocated. */
static void rdzv_bad_args(void **state)
{
    (void)state;
    struct store *s = open_store();
    struct el_rdzv_config c;
    struct el_rdzv *r = (struct el_rdzv *)1;
    cfg_for(&c, "a/b", "x", 1, 1);
    assert_int_equal(el_rdzv_join(s, &c, DL(1000), &r), ecclInvalidArgument);
    cfg_for(&c, "ok", "has space", 1, 1);
    assert_int_equal(el_rdzv_join(s, &c, DL(1000), &r), ecclInvalidArgument);
    cfg_for(&c, "ok", "x", 3, 2);
    assert_int_equal(el_rdzv_join(s, &c, DL(1000), &r), ecclInvalidArgument);
    cfg_for(&c, "ok", "x", 1, EL_RDZV_MAX_MEMBERS + 1);
    assert_int_equal(el_rdzv_join(s, &c, DL(1000), &r), ecclInvalidArgument);
    cfg_for(&c, "ok", "x", 1, 2);
    c.replace_rank = 2;
    assert_int_equal(el_rdzv_join(s, &c, DL(1000), &r), ecclInvalidArgument);
    assert_ptr_equal(r, (struct el_rdzv *)1);
    assert_int_equal(el_rdzv_evict(s, "ok", "a/b", DL(1000)), ecclInvalidArgument);
    store_close(s);
}

#define RDZV_CASES                                                                   \
    cmocka_unit_test(rdzv_bad_args), cmocka_unit_test(rdzv_form_first),              \
        cmocka_unit_test(rdzv_last_call), cmocka_unit_test(rdzv_join_timeout),       \
        cmocka_unit_test(rdzv_lease_expiry), cmocka_unit_test(rdzv_revoke),          \
        cmocka_unit_test(rdzv_shrink), cmocka_unit_test(rdzv_shrink_rank0),          \
        cmocka_unit_test(rdzv_replace), cmocka_unit_test(rdzv_grow),                 \
        cmocka_unit_test(rdzv_max_refused), cmocka_unit_test(rdzv_jobs_isolated),    \
        cmocka_unit_test(rdzv_outside_view), cmocka_unit_test(rdzv_race_one_record), \
        cmocka_unit_test(rdzv_boot_and_abort), cmocka_unit_test(rdzv_corrupted),     \
        cmocka_unit_test(rdzv_shared_handles)

#endif

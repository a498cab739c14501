/*
 * contract.h - the store contract suite: the same cases against any backend.
 *
 * Included by one test binary per backend (test_store_contract.c for the embedded store,
 * test_store_etcd.c for etcd). The includer defines, before including:
 *   static char contract_url[256];       base URL without prefix, e.g. "tcp://127.0.0.1:4000"
 *   static void contract_disrupt(void);  breaks the client's connections (the store keeps its
 *                                        state): a connection drop, or a store kill and restart
 * and lists CONTRACT_TESTS in its cmocka group. Every case opens its own store under its own
 * prefix, so cases do not see each other's keys.
 */
#ifndef ECCL_TESTS_STORE_CONTRACT_H
#define ECCL_TESTS_STORE_CONTRACT_H

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
#include "store/store.h"

#define OK(expr) assert_int_equal((expr), ecclSuccess)
#define DL(ms)   eccl_deadline_ms(ms)
#define S(str)   (str), strlen(str)

static struct store *contract_open(const char *name)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/contract/%s", contract_url, name);
    struct store *s = NULL;
    OK(store_open(url, DL(10000), &s));
    /* Start clean: an earlier run against the same etcd may have left keys. */
    OK(store_delete(s, "", 0, true, DL(10000), NULL, NULL));
    return s;
}

/* ---- basic operations ---- */

static void contract_put_get(void **state)
{
    (void)state;
    struct store *s = contract_open("putget");
    struct store_kv *kv = (struct store_kv *)1;
    int64_t rev0 = 0, rev1 = 0, rev2 = 0;

    OK(store_get(s, S("k"), DL(5000), &kv, &rev0));
    assert_null(kv);
    assert_true(rev0 > 0);

    OK(store_put(s, S("k"), S("v1"), 0, DL(5000), &rev1));
    assert_true(rev1 > rev0);
    OK(store_get(s, S("k"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    assert_int_equal(kv->key_len, 1);
    assert_memory_equal(kv->key, "k", 1);
    assert_string_equal(kv->value, "v1");
    assert_int_equal(kv->create_rev, rev1);
    assert_int_equal(kv->mod_rev, rev1);
    assert_int_equal(kv->version, 1);
    assert_int_equal(kv->lease, 0);
    store_kv_free(kv);

    /* Binary values with NUL bytes survive; the overwrite bumps version and mod_rev only. */
    const char bin[] = {'a', 0, 'b', (char)0xff, 0};
    OK(store_put(s, S("k"), bin, sizeof(bin), 0, DL(5000), &rev2));
    assert_int_equal(rev2, rev1 + 1);
    OK(store_get(s, S("k"), DL(5000), &kv, NULL));
    assert_int_equal(kv->value_len, sizeof(bin));
    assert_memory_equal(kv->value, bin, sizeof(bin));
    assert_int_equal(kv->create_rev, rev1);
    assert_int_equal(kv->mod_rev, rev2);
    assert_int_equal(kv->version, 2);
    store_kv_free(kv);

    /* An empty value is a value. */
    OK(store_put(s, S("empty"), "", 0, 0, DL(5000), NULL));
    OK(store_get(s, S("empty"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    assert_int_equal(kv->value_len, 0);
    store_kv_free(kv);

    /* Bad arguments are refused without touching the outputs. */
    kv = (struct store_kv *)1;
    assert_int_equal(store_get(s, "", 0, DL(5000), &kv, NULL), ecclInvalidArgument);
    assert_ptr_equal(kv, (struct store_kv *)1);
    assert_int_equal(store_put(s, NULL, 3, S("x"), 0, DL(5000), NULL), ecclInvalidArgument);
    assert_int_equal(store_put(s, S("k"), S("x"), -1, DL(5000), NULL), ecclInvalidArgument);
    store_close(s);
}

static void contract_prefix_pages(void **state)
{
    (void)state;
    struct store *s = contract_open("pages");
    char key[32];
    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof(key), "dir/%02d", i);
        OK(store_put(s, S(key), S(key), 0, DL(5000), NULL));
    }
    /* Neighbours that share bytes but not the prefix "dir/". */
    OK(store_put(s, S("dir"), S("x"), 0, DL(5000), NULL));
    OK(store_put(s, S("dir0"), S("x"), 0, DL(5000), NULL));
    OK(store_put(s, S("dis"), S("x"), 0, DL(5000), NULL));

    struct store_kvs *all;
    OK(store_get_prefix(s, S("dir/"), NULL, 0, 0, DL(5000), &all));
    assert_int_equal(all->count, 25);
    assert_false(all->more);
    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof(key), "dir/%02d", i);
        assert_int_equal(all->kvs[i].key_len, strlen(key));
        assert_memory_equal(all->kvs[i].key, key, strlen(key));
    }
    store_kvs_free(all);

    /* Pages of 10: 10, 10, 5. */
    char from[64] = "";
    size_t from_len = 0;
    int seen = 0, pages = 0;
    for (;;) {
        struct store_kvs *page;
        OK(store_get_prefix(s, S("dir/"), from, from_len, 10, DL(5000), &page));
        pages++;
        for (size_t i = 0; i < page->count; i++) {
            snprintf(key, sizeof(key), "dir/%02d", seen++);
            assert_memory_equal(page->kvs[i].key, key, strlen(key));
        }
        bool more = page->more;
        if (page->count > 0) {
            struct store_kv *last = &page->kvs[page->count - 1];
            memcpy(from, last->key, last->key_len);
            from[last->key_len] = 0;
            from_len = last->key_len + 1; /* last key + "\0" */
        }
        store_kvs_free(page);
        if (!more)
            break;
        assert_true(pages < 10);
    }
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);

    /* A start below the prefix reads from its beginning; one above it reads nothing. */
    OK(store_get_prefix(s, S("dir/"), S("a"), 0, DL(5000), &all));
    assert_int_equal(all->count, 25);
    store_kvs_free(all);
    OK(store_get_prefix(s, S("dir/"), S("e"), 0, DL(5000), &all));
    assert_int_equal(all->count, 0);
    store_kvs_free(all);

    /* The whole store (empty prefix) holds 28 keys. */
    OK(store_get_prefix(s, "", 0, NULL, 0, 0, DL(5000), &all));
    assert_int_equal(all->count, 28);
    store_kvs_free(all);
    store_close(s);
}

static void contract_delete(void **state)
{
    (void)state;
    struct store *s = contract_open("delete");
    int64_t deleted = -1, rev = 0, rev_put = 0;
    OK(store_put(s, S("a/1"), S("x"), 0, DL(5000), NULL));
    OK(store_put(s, S("a/2"), S("x"), 0, DL(5000), NULL));
    OK(store_put(s, S("a/3"), S("x"), 0, DL(5000), NULL));
    OK(store_put(s, S("b"), S("x"), 0, DL(5000), &rev_put));

    OK(store_delete(s, S("a/1"), false, DL(5000), &deleted, &rev));
    assert_int_equal(deleted, 1);
    assert_int_equal(rev, rev_put + 1);
    OK(store_delete(s, S("a/1"), false, DL(5000), &deleted, NULL));
    assert_int_equal(deleted, 0);
    OK(store_delete(s, S("a/"), true, DL(5000), &deleted, &rev));
    assert_int_equal(deleted, 2);
    assert_int_equal(rev, rev_put + 2); /* one revision for the whole prefix */

    struct store_kv *kv;
    OK(store_get(s, S("a/2"), DL(5000), &kv, NULL));
    assert_null(kv);
    OK(store_get(s, S("b"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    store_kv_free(kv);
    store_close(s);
}

static void contract_txn(void **state)
{
    (void)state;
    struct store *s = contract_open("txn");
    bool won = false;
    int64_t rev = 0;
    struct store_kv *cur = NULL;

    /* Create-if-absent: first wins, second loses and sees the holder. */
    OK(store_cas(s, S("leader"), 0, S("rank0"), 0, DL(5000), &won, &rev, &cur));
    assert_true(won);
    assert_null(cur);
    OK(store_cas(s, S("leader"), 0, S("rank1"), 0, DL(5000), &won, NULL, &cur));
    assert_false(won);
    assert_non_null(cur);
    assert_string_equal(cur->value, "rank0");
    assert_int_equal(cur->mod_rev, rev);
    store_kv_free(cur);

    /* CAS on mod_rev: a stale revision loses, the current one wins. */
    int64_t rev2 = 0;
    OK(store_cas(s, S("leader"), rev - 1, S("stale"), 0, DL(5000), &won, NULL, NULL));
    assert_false(won);
    OK(store_cas(s, S("leader"), rev, S("rank0-v2"), 0, DL(5000), &won, &rev2, NULL));
    assert_true(won);
    assert_int_equal(rev2, rev + 1);

    /* A general transaction: compare value and version, two puts and a delete at one revision,
     * a read in the else branch. */
    OK(store_put(s, S("gone"), S("x"), 0, DL(5000), NULL));
    struct store_cmp cmps[2] = {
        {.key = "leader",
         .key_len = 6,
         .target = STORE_CMP_VALUE,
         .result = STORE_CMP_EQUAL,
         .value = "rank0-v2",
         .value_len = 8},
        {.key = "leader",
         .key_len = 6,
         .target = STORE_CMP_VERSION,
         .result = STORE_CMP_EQUAL,
         .number = 2},
    };
    struct store_op then_ops[3] = {
        {.type = STORE_OP_PUT, .key = "x", .key_len = 1, .value = "1", .value_len = 1},
        {.type = STORE_OP_PUT, .key = "y", .key_len = 1, .value = "2", .value_len = 1},
        {.type = STORE_OP_DELETE, .key = "gone", .key_len = 4},
    };
    struct store_op else_ops[1] = {{.type = STORE_OP_GET, .key = "leader", .key_len = 6}};
    struct store_txn_result r;
    OK(store_txn(s, cmps, 2, then_ops, 3, else_ops, 1, DL(5000), &r));
    assert_true(r.succeeded);
    assert_int_equal(r.count, 0);
    int64_t txn_rev = r.revision;
    store_txn_result_fini(&r);
    struct store_kv *x, *y, *g;
    OK(store_get(s, S("x"), DL(5000), &x, NULL));
    OK(store_get(s, S("y"), DL(5000), &y, NULL));
    OK(store_get(s, S("gone"), DL(5000), &g, NULL));
    assert_non_null(x);
    assert_non_null(y);
    assert_null(g);
    assert_int_equal(x->mod_rev, txn_rev);
    assert_int_equal(y->mod_rev, txn_rev);
    store_kv_free(x);
    store_kv_free(y);

    /* Same again: the version is now 2 still but the value compare... make it fail on
     * NOT_EQUAL and read back through the else branch. */
    cmps[0].result = STORE_CMP_NOT_EQUAL;
    OK(store_txn(s, cmps, 2, then_ops, 2, else_ops, 1, DL(5000), &r));
    assert_false(r.succeeded);
    assert_int_equal(r.count, 1);
    assert_string_equal(r.kvs[0].value, "rank0-v2");
    assert_memory_equal(r.kvs[0].key, "leader", 6);
    store_txn_result_fini(&r);

    /* GREATER / LESS on create revision; a value compare on a missing key fails. */
    struct store_cmp c3 = {.key = "leader",
                           .key_len = 6,
                           .target = STORE_CMP_CREATE,
                           .result = STORE_CMP_LESS,
                           .number = rev + 1};
    OK(store_txn(s, &c3, 1, NULL, 0, NULL, 0, DL(5000), &r));
    assert_true(r.succeeded);
    c3.result = STORE_CMP_GREATER;
    OK(store_txn(s, &c3, 1, NULL, 0, NULL, 0, DL(5000), &r));
    assert_false(r.succeeded);
    struct store_cmp c4 = {.key = "nokey",
                           .key_len = 5,
                           .target = STORE_CMP_VALUE,
                           .result = STORE_CMP_NOT_EQUAL,
                           .value = "a",
                           .value_len = 1};
    OK(store_txn(s, &c4, 1, NULL, 0, NULL, 0, DL(5000), &r));
    assert_false(r.succeeded);

    /* The same key twice in a branch is refused by the store. */
    struct store_op dup[2] = {
        {.type = STORE_OP_PUT, .key = "d", .key_len = 1, .value = "1", .value_len = 1},
        {.type = STORE_OP_PUT, .key = "d", .key_len = 1, .value = "2", .value_len = 1},
    };
    assert_int_equal(store_txn(s, NULL, 0, dup, 2, NULL, 0, DL(5000), &r), ecclInvalidUsage);
    assert_true(strstr(eccl_log_last_error(), "duplicate key") != NULL);
    store_close(s);
}

/* ---- CAS races ---- */

#define RACE_THREADS 8
#define RACE_ROUNDS  20
#define RACE_INCR    10

struct race {
    pthread_barrier_t barrier;
    _Atomic int wins[RACE_ROUNDS];
    _Atomic int errors;
};

struct racer {
    struct race *race;
    int id;
};

static void *racer_main(void *arg)
{
    struct racer *me = arg;
    struct race *race = me->race;
    struct store *s = NULL;
    if (store_open(NULL, DL(10000), &s) != ecclSuccess) {
        atomic_fetch_add(&race->errors, 1);
        for (int r = 0; r < RACE_ROUNDS + 1; r++)
            pthread_barrier_wait(&race->barrier);
        return NULL;
    }
    char key[32], val[32];
    snprintf(val, sizeof(val), "t%d", me->id);
    for (int r = 0; r < RACE_ROUNDS; r++) {
        pthread_barrier_wait(&race->barrier);
        snprintf(key, sizeof(key), "race/%d", r);
        bool won = false;
        if (store_cas(s, S(key), 0, S(val), 0, DL(10000), &won, NULL, NULL) != ecclSuccess)
            atomic_fetch_add(&race->errors, 1);
        else if (won)
            atomic_fetch_add(&race->wins[r], 1);
    }
    pthread_barrier_wait(&race->barrier);
    /* Read-modify-write increments of one counter through CAS on mod_rev: none may be lost. */
    for (int i = 0; i < RACE_INCR; i++) {
        for (int tries = 0;; tries++) {
            struct store_kv *kv = NULL;
            if (store_get(s, S("counter"), DL(10000), &kv, NULL) != ecclSuccess || !kv ||
                tries > 10000) {
                atomic_fetch_add(&race->errors, 1);
                store_kv_free(kv);
                break;
            }
            char next[32];
            snprintf(next, sizeof(next), "%ld", strtol(kv->value, NULL, 10) + 1);
            bool won = false;
            ecclResult_t res =
                store_cas(s, S("counter"), kv->mod_rev, S(next), 0, DL(10000), &won, NULL, NULL);
            store_kv_free(kv);
            if (res != ecclSuccess) {
                atomic_fetch_add(&race->errors, 1);
                break;
            }
            if (won)
                break;
        }
    }
    store_close(s);
    return NULL;
}

static void contract_cas_race(void **state)
{
    (void)state;
    struct store *s = contract_open("race");
    OK(store_put(s, S("counter"), S("0"), 0, DL(5000), NULL));
    char url[512];
    snprintf(url, sizeof(url), "%s/contract/race", contract_url);
    setenv("ECCL_STORE_URL", url, 1);
    eccl_param_reset();

    struct race race;
    memset(&race, 0, sizeof(race));
    pthread_barrier_init(&race.barrier, NULL, RACE_THREADS);
    pthread_t th[RACE_THREADS];
    struct racer racers[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        racers[i] = (struct racer){.race = &race, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &racers[i]), 0);
    }
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&race.barrier);
    unsetenv("ECCL_STORE_URL");
    eccl_param_reset();

    assert_int_equal(atomic_load(&race.errors), 0);
    for (int r = 0; r < RACE_ROUNDS; r++) {
        assert_int_equal(atomic_load(&race.wins[r]), 1);
        /* The stored value is the winner's (some thread's) and was written once. */
        char key[32];
        snprintf(key, sizeof(key), "race/%d", r);
        struct store_kv *kv;
        OK(store_get(s, S(key), DL(5000), &kv, NULL));
        assert_non_null(kv);
        assert_int_equal(kv->version, 1);
        assert_true(kv->value[0] == 't');
        store_kv_free(kv);
    }
    struct store_kv *kv;
    OK(store_get(s, S("counter"), DL(5000), &kv, NULL));
    assert_int_equal(strtol(kv->value, NULL, 10), RACE_THREADS * RACE_INCR);
    assert_int_equal(kv->version, RACE_THREADS * RACE_INCR + 1);
    store_kv_free(kv);
    store_close(s);
}

/* ---- leases ---- */

static _Atomic int lost_calls;
static _Atomic int64_t lost_id;

static void on_lost(void *arg, int64_t id)
{
    (void)arg;
    atomic_store(&lost_id, id);
    atomic_fetch_add(&lost_calls, 1);
}

static void contract_lease(void **state)
{
    (void)state;
    struct store *s = contract_open("lease");
    int64_t id = 0, ttl = 0;
    OK(store_lease_grant(s, 10, DL(5000), &id));
    assert_true(id > 0);
    OK(store_put(s, S("hb/0"), S("alive"), id, DL(5000), NULL));
    OK(store_put(s, S("hb/1"), S("alive"), id, DL(5000), NULL));
    struct store_kv *kv;
    OK(store_get(s, S("hb/0"), DL(5000), &kv, NULL));
    assert_int_equal(kv->lease, id);
    store_kv_free(kv);
    OK(store_lease_ttl(s, id, DL(5000), &ttl));
    assert_true(ttl >= 8 && ttl <= 10);
    OK(store_lease_keepalive_once(s, id, DL(5000), &ttl));
    assert_int_equal(ttl, 10);

    /* Revoke deletes both keys at one revision, and the lease is gone after. */
    struct store_watch *w;
    OK(store_watch_create(s, S("hb/"), true, 0, NULL, NULL, DL(5000), &w));
    OK(store_lease_revoke(s, id, DL(5000)));
    struct store_event *ev = NULL;
    size_t n = 0, got = 0;
    int64_t revs[2] = {0, 0};
    while (got < 2) {
        OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
        assert_true(n > 0);
        for (size_t i = 0; i < n && got < 2; i++) {
            assert_int_equal(ev[i].type, STORE_EVENT_DELETE);
            revs[got++] = ev[i].kv.mod_rev;
        }
        store_events_free(ev, n);
    }
    assert_int_equal(revs[0], revs[1]);
    store_watch_destroy(w);
    OK(store_get(s, S("hb/0"), DL(5000), &kv, NULL));
    assert_null(kv);
    OK(store_lease_ttl(s, id, DL(5000), &ttl));
    assert_int_equal(ttl, -1);
    OK(store_lease_keepalive_once(s, id, DL(5000), &ttl));
    assert_int_equal(ttl, 0);
    assert_int_equal(store_lease_revoke(s, id, DL(5000)), ecclInvalidUsage);
    /* A put on a lease that does not exist is refused. */
    assert_int_equal(store_put(s, S("hb/0"), S("x"), id, DL(5000), NULL), ecclInvalidUsage);
    store_close(s);
}

/* One lease kept alive by the store's thread, one left alone: after twice the TTL the first's
 * key is there, the second's was deleted with a delete event, and the lost callback fired for
 * none until the kept one is revoked behind the keeper's back. */
static void contract_lease_expiry(void **state)
{
    (void)state;
    struct store *s = contract_open("expiry");
    struct store *other = contract_open("expiry");
    int64_t kept = 0, left = 0;
    OK(store_lease_grant(s, 2, DL(5000), &kept));
    OK(store_lease_grant(s, 2, DL(5000), &left));
    OK(store_put(s, S("hb/kept"), S("x"), kept, DL(5000), NULL));
    OK(store_put(s, S("hb/left"), S("x"), left, DL(5000), NULL));
    atomic_store(&lost_calls, 0);
    OK(store_lease_keep(s, kept, 2, on_lost, NULL));

    struct store_watch *w;
    OK(store_watch_create(s, S("hb/"), true, 0, NULL, NULL, DL(5000), &w));
    struct store_event *ev = NULL;
    size_t n = 0;
    uint64_t t0 = eccl_now_ns();
    OK(store_watch_poll(w, 8, DL(8000), &ev, &n));
    uint64_t waited_ms = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].type, STORE_EVENT_DELETE);
    assert_int_equal(ev[0].kv.key_len, 7);
    assert_memory_equal(ev[0].kv.key, "hb/left", 7);
    store_events_free(ev, n);
    assert_true(waited_ms >= 1000); /* not before the TTL */

    /* Two more TTLs: the kept key stays. */
    OK(store_watch_poll(w, 8, DL(4500), &ev, &n));
    assert_int_equal(n, 0);
    struct store_kv *kv;
    OK(store_get(s, S("hb/kept"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    store_kv_free(kv);
    assert_int_equal(atomic_load(&lost_calls), 0);

    /* Revoked by someone else: the keeper notices and calls back. */
    OK(store_lease_revoke(other, kept, DL(5000)));
    uint64_t until = eccl_deadline_ms(5000);
    while (atomic_load(&lost_calls) == 0 && !eccl_deadline_passed(until))
        eccl_sleep_us(10000);
    assert_int_equal(atomic_load(&lost_calls), 1);
    assert_int_equal(atomic_load(&lost_id), kept);
    store_watch_destroy(w);
    store_close(other);
    store_close(s);
}

/* ---- watches ---- */

#define WATCH_WRITERS 4
#define WATCH_PUTS    2500

struct writer {
    int id;
    int count;
    int sleep_every; /* sleep 1 ms every N puts (0: never) */
    _Atomic int errors;
    _Atomic int done;
};

static void *writer_main(void *arg)
{
    struct writer *me = arg;
    struct store *s = NULL;
    if (store_open(NULL, DL(10000), &s) != ecclSuccess) {
        atomic_fetch_add(&me->errors, 1);
        return NULL;
    }
    char key[32], val[32];
    for (int i = 0; i < me->count; i++) {
        snprintf(key, sizeof(key), "w/%d/%05d", me->id, i);
        snprintf(val, sizeof(val), "%d", i);
        /* Through a store outage, retry until the put lands (a repeated put of a key whose first
         * attempt did land is allowed: the checks count versions). */
        uint64_t until = DL(60000);
        while (store_put(s, S(key), S(val), 0, DL(5000), NULL) != ecclSuccess) {
            if (eccl_deadline_passed(until)) {
                atomic_fetch_add(&me->errors, 1);
                break;
            }
            eccl_sleep_us(20000);
        }
        atomic_store(&me->done, i + 1);
        if (me->sleep_every && i % me->sleep_every == 0)
            eccl_sleep_us(1000);
    }
    store_close(s);
    return NULL;
}

/* Collects `expect` events (counting versions) from a poll watch, checking order. Returns the
 * number of events received. */
static size_t collect(struct store_watch *w, size_t expect, int64_t *last_rev, int nwriters,
                      int *next_idx, uint64_t deadline)
{
    size_t got = 0;
    while (got < expect && !eccl_deadline_passed(deadline)) {
        struct store_event *ev = NULL;
        size_t n = 0;
        OK(store_watch_poll(w, 4096, deadline, &ev, &n));
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(ev[i].type, STORE_EVENT_PUT);
            assert_true(ev[i].kv.mod_rev > *last_rev);
            *last_rev = ev[i].kv.mod_rev;
            int t = -1, idx = -1;
            assert_int_equal(sscanf(ev[i].kv.key, "w/%d/%d", &t, &idx), 2);
            assert_true(t >= 0 && t < nwriters);
            /* Per writer, keys arrive in the order written (a retried put may repeat one). */
            assert_true(idx == next_idx[t] || idx == next_idx[t] - 1);
            if (idx == next_idx[t])
                next_idx[t]++;
            assert_int_equal(strtol(ev[i].kv.value, NULL, 10), idx);
        }
        got += n;
        store_events_free(ev, n);
    }
    return got;
}

static void contract_watch_10k(void **state)
{
    (void)state;
    struct store *s = contract_open("watch10k");
    char url[512];
    snprintf(url, sizeof(url), "%s/contract/watch10k", contract_url);
    setenv("ECCL_STORE_URL", url, 1);
    eccl_param_reset();
    struct store_watch *w;
    OK(store_watch_create(s, S("w/"), true, 0, NULL, NULL, DL(5000), &w));

    pthread_t th[WATCH_WRITERS];
    struct writer wr[WATCH_WRITERS];
    for (int i = 0; i < WATCH_WRITERS; i++) {
        memset(&wr[i], 0, sizeof(wr[i]));
        wr[i].id = i;
        wr[i].count = WATCH_PUTS;
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &wr[i]), 0);
    }
    int64_t last = 0;
    int next_idx[WATCH_WRITERS] = {0};
    size_t got = collect(w, WATCH_WRITERS * WATCH_PUTS, &last, WATCH_WRITERS, next_idx, DL(50000));
    for (int i = 0; i < WATCH_WRITERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(atomic_load(&wr[i].errors), 0);
        assert_int_equal(next_idx[i], WATCH_PUTS);
    }
    assert_int_equal(got, WATCH_WRITERS * WATCH_PUTS);
    unsetenv("ECCL_STORE_URL");
    eccl_param_reset();
    store_watch_destroy(w);
    store_close(s);
}

struct cb_state {
    pthread_mutex_t lock;
    int64_t revs[16];
    int types[16];
    int n;
};

static void on_events(void *arg, const struct store_event *ev, size_t n, ecclResult_t status)
{
    struct cb_state *st = arg;
    pthread_mutex_lock(&st->lock);
    if (status != ecclSuccess)
        st->n = 1000;
    for (size_t i = 0; i < n && st->n < 16; i++) {
        st->revs[st->n] = ev[i].kv.mod_rev;
        st->types[st->n++] = ev[i].type;
    }
    pthread_mutex_unlock(&st->lock);
}

/* Watch from a past revision replays history; a callback watch sees puts and deletes; a watch
 * on one key ignores its neighbours. */
static void contract_watch_replay(void **state)
{
    (void)state;
    struct store *s = contract_open("replay");
    int64_t r1, r2, r3, r4;
    OK(store_put(s, S("k"), S("1"), 0, DL(5000), &r1));
    OK(store_put(s, S("k2"), S("x"), 0, DL(5000), &r2));
    OK(store_put(s, S("k"), S("2"), 0, DL(5000), &r3));
    OK(store_delete(s, S("k"), false, DL(5000), NULL, &r4));

    struct store_watch *w;
    OK(store_watch_create(s, S("k"), false, r1, NULL, NULL, DL(5000), &w));
    struct store_event *ev = NULL;
    size_t n = 0, got = 0;
    int64_t want[3] = {r1, r3, r4};
    while (got < 3) {
        OK(store_watch_poll(w, 16, DL(5000), &ev, &n));
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++, got++) {
            assert_true(got < 3);
            assert_int_equal(ev[i].kv.mod_rev, want[got]);
            assert_int_equal(ev[i].type, got == 2 ? STORE_EVENT_DELETE : STORE_EVENT_PUT);
            if (got == 1) {
                assert_string_equal(ev[i].kv.value, "2");
                assert_int_equal(ev[i].kv.version, 2);
                assert_int_equal(ev[i].kv.create_rev, r1);
            }
        }
        store_events_free(ev, n);
    }
    assert_int_equal(store_watch_last_rev(w), r4);
    store_watch_destroy(w);

    struct cb_state st = {.lock = PTHREAD_MUTEX_INITIALIZER};
    OK(store_watch_create(s, S("cb/"), true, 0, on_events, &st, DL(5000), &w));
    int64_t p1, p2;
    OK(store_put(s, S("cb/a"), S("1"), 0, DL(5000), &p1));
    OK(store_delete(s, S("cb/a"), false, DL(5000), NULL, &p2));
    uint64_t until = DL(5000);
    for (;;) {
        pthread_mutex_lock(&st.lock);
        int cnt = st.n;
        pthread_mutex_unlock(&st.lock);
        if (cnt >= 2 || eccl_deadline_passed(until))
            break;
        eccl_sleep_us(5000);
    }
    store_watch_destroy(w);
    assert_int_equal(st.n, 2);
    assert_int_equal(st.revs[0], p1);
    assert_int_equal(st.types[0], STORE_EVENT_PUT);
    assert_int_equal(st.revs[1], p2);
    assert_int_equal(st.types[1], STORE_EVENT_DELETE);
    store_close(s);
}

struct delayed_put {
    struct store *s;
    const char *key;
    int delay_ms;
};

static void *delayed_put_main(void *arg)
{
    struct delayed_put *d = arg;
    eccl_sleep_us((uint64_t)d->delay_ms * 1000);
    store_put(d->s, S(d->key), S("ready"), 0, DL(5000), NULL);
    return NULL;
}

static void contract_wait_key(void **state)
{
    (void)state;
    struct store *s = contract_open("waitkey");
    struct store_kv *kv = (struct store_kv *)1;
    uint64_t t0 = eccl_now_ns();
    assert_int_equal(store_wait_key(s, S("never"), DL(300), &kv), ecclInternalError);
    uint64_t ms = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    assert_true(ms >= 290 && ms < 3000);
    assert_ptr_equal(kv, (struct store_kv *)1);
    assert_true(strstr(eccl_log_last_error(), "timed out") != NULL);

    struct delayed_put d = {.s = s, .key = "later", .delay_ms = 200};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_put_main, &d), 0);
    OK(store_wait_key(s, S("later"), DL(5000), &kv));
    pthread_join(th, NULL);
    assert_non_null(kv);
    assert_string_equal(kv->value, "ready");
    store_kv_free(kv);
    /* Present already: at once. */
    OK(store_wait_key(s, S("later"), DL(1000), &kv));
    store_kv_free(kv);
    store_close(s);
}

/* Writers keep putting while the store connection is broken (or the store restarted): the
 * watcher resumes from its last revision and sees every write exactly in order. */
static void contract_watch_resume(void **state)
{
    (void)state;
    struct store *s = contract_open("resume");
    char url[512];
    snprintf(url, sizeof(url), "%s/contract/resume", contract_url);
    setenv("ECCL_STORE_URL", url, 1);
    eccl_param_reset();
    struct store_watch *w;
    OK(store_watch_create(s, S("w/"), true, 0, NULL, NULL, DL(5000), &w));
    enum { NW = 2, PUTS = 300 };
    pthread_t th[NW];
    struct writer wr[NW];
    for (int i = 0; i < NW; i++) {
        memset(&wr[i], 0, sizeof(wr[i]));
        wr[i].id = i;
        wr[i].count = PUTS;
        wr[i].sleep_every = 1;
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &wr[i]), 0);
    }
    uint64_t until = DL(10000);
    while (atomic_load(&wr[0].done) < PUTS / 3 && !eccl_deadline_passed(until))
        eccl_sleep_us(1000);
    contract_disrupt();
    for (int i = 0; i < NW; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(atomic_load(&wr[i].errors), 0);
    }
    /* Every write is a version of some key: the events must add up to the versions. */
    struct store_kvs *all;
    OK(store_get_prefix(s, S("w/"), NULL, 0, 0, DL(20000), &all));
    assert_int_equal(all->count, NW * PUTS);
    size_t versions = 0;
    int64_t max_rev = 0;
    for (size_t i = 0; i < all->count; i++) {
        versions += (size_t)all->kvs[i].version;
        if (all->kvs[i].mod_rev > max_rev)
            max_rev = all->kvs[i].mod_rev;
    }
    store_kvs_free(all);
    int64_t last = 0;
    int next_idx[NW] = {0};
    size_t got = collect(w, versions, &last, NW, next_idx, DL(20000));
    assert_int_equal(got, versions);
    assert_int_equal(last, max_rev);
    for (int i = 0; i < NW; i++)
        assert_int_equal(next_idx[i], PUTS);
    unsetenv("ECCL_STORE_URL");
    eccl_param_reset();
    store_watch_destroy(w);
    store_close(s);
}

/* A store handle and watch closed while events are still flowing leave nothing behind. */
static void contract_close_busy(void **state)
{
    (void)state;
    struct store *s = contract_open("closebusy");
    struct store_watch *w1, *w2;
    OK(store_watch_create(s, S("a/"), true, 0, NULL, NULL, DL(5000), &w1));
    OK(store_watch_create(s, S("a/"), true, 0, on_events, &(struct cb_state){.n = 0}, DL(5000),
                          &w2));
    (void)w1;
    (void)w2;
    for (int i = 0; i < 20; i++)
        OK(store_put(s, S("a/x"), S("v"), 0, DL(5000), NULL));
    int64_t id;
    OK(store_lease_grant(s, 30, DL(5000), &id));
    OK(store_lease_keep(s, id, 30, NULL, NULL));
    store_close(s); /* destroys both watches and the keepalive thread */
}

/* ---- shared streams and batched keepalives ---- */

/* Polls w for exactly the events of revisions want[0..n), in order, and then for nothing more. */
static void expect_revs(struct store_watch *w, const int64_t *want, size_t n)
{
    size_t got = 0;
    uint64_t until = DL(15000);
    while (got < n) {
        struct store_event *ev = NULL;
        size_t k = 0;
        OK(store_watch_poll(w, 64, until, &ev, &k));
        if (k == 0)
            fail_msg("watch: %zu of %zu events before the deadline", got, n);
        for (size_t i = 0; i < k; i++, got++) {
            assert_true(got < n);
            assert_int_equal(ev[i].kv.mod_rev, want[got]);
        }
        store_events_free(ev, k);
    }
    struct store_event *ev = NULL;
    size_t k = 0;
    OK(store_watch_poll(w, 64, DL(150), &ev, &k));
    assert_int_equal(k, 0);
}

/* A callback watch that destroys another watch of the same range from its first callback. */
struct killer {
    pthread_mutex_t lock;
    struct store_watch *victim;
    int64_t revs[16];
    int n;
};

static void kill_on_first(void *arg, const struct store_event *ev, size_t n, ecclResult_t status)
{
    struct killer *k = arg;
    pthread_mutex_lock(&k->lock);
    struct store_watch *v = k->victim;
    k->victim = NULL;
    for (size_t i = 0; i < n && status == ecclSuccess && k->n < 16; i++)
        k->revs[k->n++] = ev[i].kv.mod_rev;
    pthread_mutex_unlock(&k->lock);
    store_watch_destroy(v);
}

static int killer_count(struct killer *k)
{
    pthread_mutex_lock(&k->lock);
    int n = k->n;
    pthread_mutex_unlock(&k->lock);
    return n;
}

/* Watches of one range on one handle share a stream: whatever their start revisions (before,
 * within or after what the stream has delivered) and the order they come in, each sees exactly
 * the events from its own start, before and after one of them leaves, one is destroyed from
 * another's callback, and the connection breaks. */
static void contract_watch_shared(void **state)
{
    (void)state;
    struct store *s = contract_open("shared");
    int64_t r[9];
    OK(store_put(s, S("k/a"), S("1"), 0, DL(5000), &r[0]));
    OK(store_put(s, S("k/b"), S("1"), 0, DL(5000), &r[1]));
    OK(store_put(s, S("k/c"), S("1"), 0, DL(5000), &r[2]));
    struct store_watch *wa, *wb, *wc, *wk, *victim, *wd;
    OK(store_watch_create(s, S("k/"), true, r[1], NULL, NULL, DL(5000), &wa));
    OK(store_watch_create(s, S("k/"), true, r[2], NULL, NULL, DL(5000), &wb));
    expect_revs(wa, r + 1, 2);
    expect_revs(wb, r + 2, 1);
    OK(store_put(s, S("k/d"), S("1"), 0, DL(5000), &r[3]));
    OK(store_delete(s, S("k/a"), false, DL(5000), NULL, &r[4]));
    /* Before the others' start: a stream of its own; within: replayed. */
    OK(store_watch_create(s, S("k/"), true, r[0], NULL, NULL, DL(5000), &wc));
    OK(store_watch_create(s, S("k/a"), false, r[0], NULL, NULL, DL(5000), &wk));
    expect_revs(wa, r + 3, 2);
    expect_revs(wb, r + 3, 2);
    expect_revs(wc, r, 5);
    int64_t ka[2] = {r[0], r[4]};
    expect_revs(wk, ka, 2);

    OK(store_watch_create(s, S("k/"), true, r[1], NULL, NULL, DL(5000), &victim));
    struct killer k = {.lock = PTHREAD_MUTEX_INITIALIZER, .victim = victim};
    OK(store_watch_create(s, S("k/"), true, r[3], kill_on_first, &k, DL(5000), &wd));
    OK(store_put(s, S("k/e"), S("1"), 0, DL(5000), &r[5]));
    uint64_t until = DL(10000);
    while (killer_count(&k) < 3 && !eccl_deadline_passed(until))
        eccl_sleep_us(2000);
    assert_int_equal(killer_count(&k), 3);
    assert_int_equal(k.revs[0], r[3]);
    assert_int_equal(k.revs[1], r[4]);
    assert_int_equal(k.revs[2], r[5]);
    assert_null(k.victim);
    expect_revs(wa, r + 5, 1);

    store_watch_destroy(wa);
    OK(store_put(s, S("k/f"), S("1"), 0, DL(5000), &r[6]));
    expect_revs(wb, r + 5, 2);
    contract_disrupt();
    OK(store_put(s, S("k/g"), S("1"), 0, DL(60000), &r[7]));
    OK(store_put(s, S("k/a"), S("2"), 0, DL(5000), &r[8]));
    expect_revs(wb, r + 7, 2);
    expect_revs(wc, r + 5, 4);
    int64_t ka2[1] = {r[8]};
    expect_revs(wk, ka2, 1);
    until = DL(10000);
    while (killer_count(&k) < 6 && !eccl_deadline_passed(until))
        eccl_sleep_us(2000);
    assert_int_equal(killer_count(&k), 6);
    assert_int_equal(k.revs[5], r[8]);
    store_watch_destroy(wd);
    store_watch_destroy(wb);
    store_watch_destroy(wc);
    store_watch_destroy(wk);
    store_close(s);
}

/* Destroying a watch wakes its thread at once: twenty streams go in well under a second (each
 * thread otherwise sleeps up to a second between looks at its stop flag). */
static void contract_watch_stop_fast(void **state)
{
    (void)state;
    struct store *s = contract_open("stopfast");
    enum { NW = 20 };
    struct store_watch *w[NW];
    for (int i = 0; i < NW; i++)
        OK(store_watch_create(s, S("x/"), true, 0, NULL, NULL, DL(5000), &w[i]));
    eccl_sleep_us(100000); /* let every thread settle in its wait */
    uint64_t t0 = eccl_now_ns();
    for (int i = 0; i < NW; i++)
        store_watch_destroy(w[i]);
    uint64_t ms = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    assert_true(ms < 1000);
    store_close(s);
}

struct lost_count {
    _Atomic int n;
    _Atomic int64_t last;
};

static void count_lost(void *arg, int64_t id)
{
    struct lost_count *l = arg;
    atomic_store(&l->last, id);
    atomic_fetch_add(&l->n, 1);
}

/* Many leases kept by one handle (refreshed in batches) all stay alive over twice their TTL; one
 * revoked behind the keeper's back is reported lost, alone. */
static void contract_lease_keep_many(void **state)
{
    (void)state;
    struct store *s = contract_open("keepmany");
    struct store *other = contract_open("keepmany");
    enum { NL = 40 };
    int64_t ids[NL];
    struct lost_count lost = {0};
    for (int i = 0; i < NL; i++) {
        OK(store_lease_grant(s, 2, DL(5000), &ids[i]));
        OK(store_lease_keep(s, ids[i], 2, count_lost, &lost));
        if (i % 8 == 7)
            eccl_sleep_us(150000); /* spread over more than one refresh period */
    }
    eccl_sleep_us(4500000);
    assert_int_equal(atomic_load(&lost.n), 0);
    for (int i = 0; i < NL; i++) {
        int64_t ttl = 0;
        OK(store_lease_ttl(other, ids[i], DL(5000), &ttl));
        assert_true(ttl >= 1);
    }
    OK(store_lease_revoke(other, ids[7], DL(5000)));
    uint64_t until = DL(4000);
    while (atomic_load(&lost.n) == 0 && !eccl_deadline_passed(until))
        eccl_sleep_us(10000);
    assert_int_equal(atomic_load(&lost.n), 1);
    assert_int_equal(atomic_load(&lost.last), ids[7]);
    eccl_sleep_us(1000000);
    assert_int_equal(atomic_load(&lost.n), 1);
    for (int i = 0; i < NL; i++) {
        int64_t ttl = 0;
        OK(store_lease_ttl(other, ids[i], DL(5000), &ttl));
        assert_true(i == 7 ? ttl == -1 : ttl >= 1);
    }
    store_close(s);
    for (int i = 0; i < NL; i++)
        if (i != 7)
            OK(store_lease_revoke(other, ids[i], DL(5000)));
    store_close(other);
}

#define CONTRACT_TESTS                                                                       \
    cmocka_unit_test(contract_put_get), cmocka_unit_test(contract_prefix_pages),             \
        cmocka_unit_test(contract_delete), cmocka_unit_test(contract_txn),                   \
        cmocka_unit_test(contract_cas_race), cmocka_unit_test(contract_lease),               \
        cmocka_unit_test(contract_lease_expiry), cmocka_unit_test(contract_watch_10k),       \
        cmocka_unit_test(contract_watch_replay), cmocka_unit_test(contract_wait_key),        \
        cmocka_unit_test(contract_watch_resume), cmocka_unit_test(contract_close_busy),      \
        cmocka_unit_test(contract_watch_shared), cmocka_unit_test(contract_watch_stop_fast), \
        cmocka_unit_test(contract_lease_keep_many)

#endif

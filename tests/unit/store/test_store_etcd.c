/*
 * test_store_etcd.c - the store contract suite (contract.h) against a real etcd started by the
 * test (etcd_helper.h), where "disrupt" is a SIGKILL of etcd and a restart on the same data; plus
 * etcd-only cases: a keepalive loop that lives through an etcd restart, etcd down for longer than
 * the deadline, and an endpoint list whose first member is down. Exits 77 when /usr/bin/etcd is
 * not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/param.h"
#include "common/time.h"
#include "store/store.h"

#include "etcd_helper.h"

static char contract_url[256];
static struct etcd_proc etcd;

static void contract_disrupt(void)
{
    etcd_kill(&etcd);
    eccl_sleep_us(300000);
    if (etcd_start(&etcd) != 0)
        fail_msg("etcd did not restart");
}

#include "contract.h"

/* A kept lease survives an etcd crash and restart: the keepalive thread retries through the
 * outage and the key stays; nobody is told the lease was lost. */
static void etcd_keepalive_restart(void **state)
{
    (void)state;
    struct store *s = contract_open("karestart");
    int64_t id;
    OK(store_lease_grant(s, 3, DL(5000), &id));
    OK(store_put(s, S("hb"), S("x"), id, DL(5000), NULL));
    atomic_store(&lost_calls, 0);
    OK(store_lease_keep(s, id, 3, on_lost, NULL));
    struct store_watch *w;
    OK(store_watch_create(s, S("hb"), false, 0, NULL, NULL, DL(5000), &w));
    eccl_sleep_us(1200000);
    contract_disrupt();
    /* Longer than the TTL after the restart. */
    struct store_event *ev;
    size_t n;
    OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
    assert_int_equal(n, 0); /* no delete event */
    struct store_kv *kv;
    OK(store_get(s, S("hb"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    store_kv_free(kv);
    assert_int_equal(atomic_load(&lost_calls), 0);
    int64_t ttl;
    OK(store_lease_ttl(s, id, DL(5000), &ttl));
    assert_true(ttl > 0);
    store_watch_destroy(w);
    store_lease_unkeep(s, id);
    OK(store_lease_revoke(s, id, DL(5000)));
    store_close(s);
}

/* etcd down for longer than the deadline: a clear error at the deadline, then recovery. */
static void etcd_down_deadline(void **state)
{
    (void)state;
    struct store *s = contract_open("down");
    etcd_kill(&etcd);
    uint64_t t0 = eccl_now_ns();
    ecclResult_t res = store_put(s, S("k"), S("v"), 0, DL(1000), NULL);
    uint64_t ms = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    assert_int_equal(res, ecclInternalError);
    assert_true(strstr(eccl_log_last_error(), "timed out") != NULL);
    assert_true(ms >= 900 && ms < 3000);
    struct store_kv *kv = (struct store_kv *)1;
    assert_int_equal(store_get(s, S("k"), DL(500), &kv, NULL), ecclInternalError);
    assert_ptr_equal(kv, (struct store_kv *)1);
    struct store_watch *w = (struct store_watch *)1;
    assert_int_equal(store_watch_create(s, S("k"), false, 0, NULL, NULL, DL(500), &w),
                     ecclInternalError);
    assert_ptr_equal(w, (struct store_watch *)1);
    if (etcd_start(&etcd) != 0)
        fail_msg("etcd did not restart");
    OK(store_put(s, S("k"), S("v"), 0, DL(5000), NULL));
    store_close(s);
}

/* Two endpoints, the first one down: every call goes through the second. */
static void etcd_failover(void **state)
{
    (void)state;
    int dead = etcd_free_port();
    char url[300];
    snprintf(url, sizeof(url), "etcd://127.0.0.1:%d,127.0.0.1:%d/contract/failover", dead,
             etcd.client_port);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    int64_t rev;
    OK(store_put(s, S("k"), S("v"), 0, DL(5000), &rev));
    struct store_kv *kv;
    OK(store_get(s, S("k"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    assert_string_equal(kv->value, "v");
    store_kv_free(kv);
    struct store_watch *w;
    OK(store_watch_create(s, S("k"), false, rev, NULL, NULL, DL(5000), &w));
    struct store_event *ev;
    size_t n;
    OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].kv.mod_rev, rev);
    store_events_free(ev, n);
    store_watch_destroy(w);
    store_close(s);

    /* Both down: a clear error at the deadline. */
    snprintf(url, sizeof(url), "etcd://127.0.0.1:%d,127.0.0.1:%d/x", dead, etcd_free_port());
    s = (struct store *)1;
    assert_int_equal(store_open(url, DL(500), &s), ecclInternalError);
    assert_ptr_equal(s, (struct store *)1);
}

/* A watch from a compacted revision ends with a clear error (from the create or from the first
 * poll); the caller re-reads and watches from there. */
static void etcd_watch_compacted(void **state)
{
    (void)state;
    struct store *s = contract_open("compacted");
    int64_t first = 0, rev = 0;
    OK(store_put(s, S("k"), S("v"), 0, DL(5000), &first));
    for (int i = 0; i < 5; i++)
        OK(store_put(s, S("k"), S("v"), 0, DL(5000), &rev));
    char body[128], out[256];
    snprintf(body, sizeof(body), "{\"revision\":\"%lld\",\"physical\":true}", (long long)rev);
    assert_int_equal(etcd_post(&etcd, "/v3/kv/compaction", body, NULL, out), 200);
    struct store_watch *w = NULL;
    ecclResult_t res = store_watch_create(s, S("k"), false, first, NULL, NULL, DL(5000), &w);
    if (res == ecclSuccess) {
        struct store_event *ev;
        size_t n;
        res = store_watch_poll(w, 8, DL(5000), &ev, &n);
        store_watch_destroy(w);
    }
    assert_int_equal(res, ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "compact"));
    store_close(s);
}

/* etcd's own error text reaches the caller. */
static void etcd_error_text(void **state)
{
    (void)state;
    struct store *s = contract_open("errors");
    assert_int_equal(store_put(s, S("k"), S("v"), 123456789, DL(5000), NULL), ecclInvalidUsage);
    assert_true(strstr(eccl_log_last_error(), "requested lease not found") != NULL);
    store_close(s);
}

int main(void)
{
    if (!etcd_available()) {
        fprintf(stderr, "SKIP: %s is not installed (apt-get install etcd-server)\n", ETCD_BIN);
        return 77;
    }
    if (etcd_start(&etcd) != 0) {
        etcd_destroy(&etcd);
        return 1;
    }
    snprintf(contract_url, sizeof(contract_url), "etcd://127.0.0.1:%d", etcd.client_port);
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    const struct CMUnitTest tests[] = {
        CONTRACT_TESTS,
        cmocka_unit_test(etcd_keepalive_restart),
        cmocka_unit_test(etcd_down_deadline),
        cmocka_unit_test(etcd_failover),
        cmocka_unit_test(etcd_watch_compacted),
        cmocka_unit_test(etcd_error_text),
    };
    int failed = cmocka_run_group_tests_name("store contract (etcd)", tests, NULL, NULL);
    etcd_destroy(&etcd);
    int64_t leaked = eccl_alloc_live_blocks(NULL) - blocks0;
    if (leaked != 0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks still live\n", (long long)leaked);
        return 1;
    }
    return failed ? 1 : 0;
}

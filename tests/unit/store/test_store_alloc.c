/*
 * test_store_alloc.c - allocation torture of the store (embedded server and tcp client): runs a
 * scenario that touches every operation with the Nth allocation (then socket send, then
 * socket receive) failing, for N = 1, 2, ... until
 * a run no longer reaches the Nth allocation. Each run must end with clean errors (or success),
 * no crash, no hang past its deadlines, and no block left allocated. Needs a `make FAULT=1`
 * build; exits 77 otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/time.h"
#include "store/store.h"
#include "tests/support/torture.h"

#ifdef ECCL_FAULT_ENABLED

#define S(str) (str), strlen(str)

/* The scenario (every store operation, each allowed to fail) is shared with the process-per-run
 * sweeps of tests/torture.sh. */
#define scenario torture_store_ops

/* Fails the Nth hit of `site` for N = 1, 2, ... */
static void torture(const char *site, int min_runs)
{
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    uint64_t t0 = eccl_now_ns();
    int full = scenario(); /* a clean run: the reference */
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks0);
    int runs = 0;
    for (uint64_t n = 1;; n++) {
        eccl_fault_arm(site, n, false);
        int ok = scenario();
        uint64_t hits = eccl_fault_count(site);
        eccl_fault_arm(site, 0, false);
        runs++;
        int64_t live = eccl_alloc_live_blocks(NULL);
        if (live != blocks0) {
            eccl_alloc_report();
            fail_msg("%s %llu failing: %lld blocks left behind (%d steps done)", site,
                     (unsigned long long)n, (long long)(live - blocks0), ok);
        }
        if (hits < n)
            break; /* the run never reached the Nth allocation: every one has been failed */
        if (eccl_now_ns() - t0 > 20 * ECCL_NS_PER_S) {
            print_message("stopping after %d runs (time budget), last n %llu\n", runs,
                          (unsigned long long)n);
            break;
        }
    }
    print_message("%s: %d runs, a clean run does %d steps\n", site, runs, full);
    assert_true(runs >= min_runs);
}

static void alloc_torture(void **state)
{
    (void)state;
    torture("alloc", 50);
}

/* Socket failures on either side: retried or reported, never a crash or a leak. */
static void socket_torture(void **state)
{
    (void)state;
    torture("socket_send", 10);
    torture("socket_recv", 10);
}

static _Atomic int lost;

static void on_lost(void *arg, int64_t id)
{
    (void)arg;
    (void)id;
    atomic_fetch_add(&lost, 1);
}

/* Keepalives that keep failing (ECCL_FAULT=store_keepalive:1+): the lease expires, the keeper
 * says so through the lost callback, and a failing operation (store_op) reports a clean error. */
static void keepalive_fault(void **state)
{
    (void)state;
    struct store_server *srv;
    struct store *s;
    int port;
    assert_int_equal(store_server_start("127.0.0.1:0", &srv, &port), ecclSuccess);
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/k", port);
    assert_int_equal(store_open(url, eccl_deadline_ms(2000), &s), ecclSuccess);
    int64_t id;
    assert_int_equal(store_lease_grant(s, 1, eccl_deadline_ms(2000), &id), ecclSuccess);
    assert_int_equal(store_put(s, S("hb"), S("x"), id, eccl_deadline_ms(2000), NULL), ecclSuccess);
    eccl_fault_arm("store_keepalive", 1, true);
    assert_int_equal(store_lease_keep(s, id, 1, on_lost, NULL), ecclSuccess);
    uint64_t until = eccl_deadline_ms(4000);
    while (atomic_load(&lost) == 0 && !eccl_deadline_passed(until))
        eccl_sleep_us(10000);
    eccl_fault_arm("store_keepalive", 0, false);
    assert_int_equal(atomic_load(&lost), 1);
    struct store_kv *kv = (struct store_kv *)1;
    assert_int_equal(store_get(s, S("hb"), eccl_deadline_ms(2000), &kv, NULL), ecclSuccess);
    assert_null(kv);
    eccl_fault_arm("store_op", 1, false);
    assert_int_equal(store_put(s, S("k"), S("v"), 0, eccl_deadline_ms(2000), NULL),
                     ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "fault injection"));
    eccl_fault_arm("store_op", 0, false);
    store_close(s);
    store_server_stop(srv);
}

#endif /* ECCL_FAULT_ENABLED */

int main(void)
{
#ifndef ECCL_FAULT_ENABLED
    fprintf(stderr, "SKIP: needs a build with FAULT=1\n");
    return 77;
#else
    const struct CMUnitTest tests[] = {cmocka_unit_test(alloc_torture),
                                       cmocka_unit_test(socket_torture),
                                       cmocka_unit_test(keepalive_fault)};
    return cmocka_run_group_tests_name("store allocation torture", tests, NULL, NULL) ? 1 : 0;
#endif
}

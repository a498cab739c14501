/*
 * test_rdzv_etcd.c - the rendezvous (elastic/rdzv.h) against a real etcd started by the test on
 * loopback (tests/support/etcd.h): the shared cases of rdzv_cases.h, plus etcd killed and
 * restarted while a generation is being agreed (the agreement completes after the restart), and
 * etcd gone for longer than a call's deadline (a clear timeout, no hang). Exits 77 when
 * /usr/bin/etcd is not installed.
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
#include "tests/support/etcd.h"

static char base_url[256];
static int64_t lease_ms = 2000;     /* etcd's minimum TTL is 2 s */
static int64_t quick_next_ms = 350; /* rdzv_shrink_rank0 */
static struct etcd_proc etcd;

#include "rdzv_cases.h"

/* etcd is killed while the proposer's join window is open and restarted a second later: the
 * watches resume, the compare-and-swap is retried, every member gets the one record. */
static void etcd_restart_during_agreement(void **state)
{
    (void)state;
    clean_job("restart");
    struct member ms[3];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "rs%d", i);
        member_init(&ms[i], "restart", id, 2, 3);
        /* Leases that outlive the outage; a window that closes during it. */
        ms[i].cfg.lease_ms = 8000;
        ms[i].cfg.last_call_ms = 1500;
        ms[i].timeout_ms = 30000;
    }
    member_start(&ms[0]);
    member_start(&ms[1]);
    struct store *s = open_store();
    struct store_kv *kv = NULL;
    OK(store_wait_key(s, "restart/s/gl/1", 14, DL(10000), &kv));
    store_kv_free(kv);
    /* Both registered (min reached): the proposer waits for its last call. */
    eccl_sleep_us(300000);
    etcd_kill(&etcd);
    uint64_t down = eccl_now_ns();
    eccl_sleep_us(1000000);
    if (etcd_start(&etcd) != 0)
        fail_msg("etcd did not restart");
    fprintf(stderr, "etcd was down for %.1f s\n", (double)(eccl_now_ns() - down) / 1e9);
    member_join_thread(&ms[0]);
    member_join_thread(&ms[1]);
    expect_formed(ms, 2, 1, 2);
    /* The job goes on: the third member is a joiner now, and a grow admits it. */
    ms[2].mode = EL_RDZV_GROW;
    member_start(&ms[2]);
    wait_event(ms[0].r, EL_RDZV_EV_JOINER, 10000);
    OK(el_rdzv_revoke(ms[0].r, 1, NULL, "grow", DL(5000)));
    for (int i = 0; i < 2; i++) {
        wait_event(ms[i].r, EL_RDZV_EV_REVOKED, 5000);
        ms[i].mode = EL_RDZV_GROW;
        ms[i].r->last_call_ms = 300;
        member_start(&ms[i]);
    }
    for (int i = 0; i < 3; i++)
        member_join_thread(&ms[i]);
    expect_formed(ms, 3, 2, 3);
    store_close(s);
    for (int i = 0; i < 3; i++)
        member_fini(&ms[i]);
}

/* etcd gone for good during an agreement: the call fails clearly at its deadline; once etcd is
 * back, the same members agree. */
static void etcd_down_deadline(void **state)
{
    (void)state;
    clean_job("down");
    struct member ms[2];
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "dn%d", i);
        member_init(&ms[i], "down", id, 1, 2);
        ms[i].cfg.lease_ms = 10000;
        ms[i].cfg.last_call_ms = 100;
    }
    run_members(ms, 2);
    expect_formed(ms, 2, 1, 2);
    etcd_kill(&etcd);
    for (int i = 0; i < 2; i++) {
        ms[i].timeout_ms = 2000;
        ms[i].mode = EL_RDZV_SHRINK;
    }
    uint64_t t0 = eccl_now_ns();
    run_members(ms, 2);
    uint64_t took = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ms[i].next_res, ecclInternalError);
        assert_non_null(strstr(ms[i].err, "timed out"));
    }
    assert_true(took >= 1900 && took < 6000);
    if (etcd_start(&etcd) != 0)
        fail_msg("etcd did not restart");
    for (int i = 0; i < 2; i++)
        ms[i].timeout_ms = 20000;
    run_members(ms, 2);
    expect_formed(ms, 2, 2, 2);
    for (int i = 0; i < 2; i++)
        member_fini(&ms[i]);
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
    etcd_url(&etcd, base_url, sizeof(base_url));
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    const struct CMUnitTest tests[] = {
        RDZV_CASES,
        cmocka_unit_test(etcd_restart_during_agreement),
        cmocka_unit_test(etcd_down_deadline),
    };
    int failed = cmocka_run_group_tests_name("rdzv (etcd)", tests, NULL, NULL);
    etcd_destroy(&etcd);
    int64_t leaked = eccl_alloc_live_blocks(NULL) - blocks0;
    if (leaked != 0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks still live\n", (long long)leaked);
        return 1;
    }
    return failed ? 1 : 0;
}

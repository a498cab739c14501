/*
 * test_reg_box.c - the registration mailbox of a point-to-point connector (core/reg.c): what a
 * sender may post, how a receiver answers, and what it does with requests that lie. The mapping
 * itself needs a GPU (tests/gpu/test_dev_reg.c); here import and drop are recorded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/core_int.h"
#include "kernels/conn.h"
#include "kernels/dev_mem.h"

struct calls {
    int imports;
    int drops;
    uint32_t last_key;
    int last_peer;
    int refuse_key; /* import() refuses this key */
};

static int fake_import(void *arg, int peer, const struct eccl_conn_zc_req *q)
{
    struct calls *c = arg;
    c->imports++;
    c->last_key = q->key;
    c->last_peer = peer;
    return q->key == (uint32_t)c->refuse_key ? -1 : (int)(q->key % 100);
}

static void fake_drop(void *arg, int peer, uint32_t key)
{
    struct calls *c = arg;
    c->drops++;
    c->last_key = key;
    c->last_peer = peer;
}

static struct eccl_conn_ctrl *ctrl_new(void)
{
    struct eccl_conn_ctrl *c = aligned_alloc(64, sizeof(*c));
    assert_non_null(c);
    memset(c, 0, sizeof(*c));
    return c;
}

static struct eccl_conn_zc_req import_req(uint32_t key)
{
    return (struct eccl_conn_zc_req){.op = ECCL_CONN_ZC_IMPORT,
                                     .key = key,
                                     .mode = KERN_DEV_MEM_CUMEM,
                                     .handle = 0x1234500000002ull,
                                     .size = 2 << 20};
}

/* The sender reads the answers (what core/reg.c's box_answers does). */
static int read_answers(struct eccl_conn_ctrl *c, struct eccl_conn_zc_resp *out, int max)
{
    int n = 0;
    while (c->zc_resp_head != c->zc_resp_tail && n < max) {
        out[n++] = c->zc_resp[c->zc_resp_head % ECCL_CONN_ZC_RING];
        c->zc_resp_head++;
    }
    return n;
}

/* A ring's worth of requests, then no more until answers are read; answers in order. */
static void test_ring_full_and_answers(void **s)
{
    (void)s;
    struct eccl_conn_ctrl *c = ctrl_new();
    struct calls calls = {.refuse_key = 5};
    for (uint32_t k = 1; k <= ECCL_CONN_ZC_RING; k++) {
        struct eccl_conn_zc_req q = import_req(k);
        assert_true(core_reg_box_post(c, &q));
    }
    struct eccl_conn_zc_req q = import_req(99);
    assert_false(core_reg_box_post(c, &q));
    assert_int_equal(core_reg_box_serve(c, 0, 1, fake_import, fake_drop, &calls),
                     ECCL_CONN_ZC_RING);
    assert_int_equal(calls.imports, ECCL_CONN_ZC_RING);
    assert_int_equal(calls.last_peer, 1);
    /* Served but not read by the sender: still no room. */
    assert_false(core_reg_box_post(c, &q));
    struct eccl_conn_zc_resp a[ECCL_CONN_ZC_RING];
    assert_int_equal(read_answers(c, a, ECCL_CONN_ZC_RING), ECCL_CONN_ZC_RING);
    for (int i = 0; i < ECCL_CONN_ZC_RING; i++) {
        assert_int_equal(a[i].key, (uint32_t)i + 1);
        assert_int_equal(a[i].slot, i + 1 == 5 ? -1 : i + 1);
    }
    /* Room again; nothing is served twice. */
    assert_true(core_reg_box_post(c, &q));
    assert_int_equal(core_reg_box_serve(c, 0, 1, fake_import, fake_drop, &calls), 1);
    assert_int_equal(core_reg_box_serve(c, 0, 1, fake_import, fake_drop, &calls), 0);
    assert_int_equal(calls.imports, ECCL_CONN_ZC_RING + 1);
    assert_int_equal(read_answers(c, a, 1), 1);
    assert_int_equal(a[0].key, 99);
    assert_int_equal(a[0].slot, 99);
    /* Counters wrap. */
    c->zc_req_tail = c->zc_req_head = c->zc_resp_tail = c->zc_resp_head = UINT32_MAX - 1;
    for (uint32_t k = 1; k <= 4; k++) {
        q = import_req(k);
        assert_true(core_reg_box_post(c, &q));
    }
    assert_int_equal(core_reg_box_serve(c, 0, 1, fake_import, fake_drop, &calls), 4);
    assert_int_equal(read_answers(c, a, 4), 4);
    assert_int_equal(a[3].key, 4);
    free(c);
}

/* Requests with impossible fields, or no request at all, are answered -1 without an import;
 * a drop is passed on. */
static void test_bad_requests(void **s)
{
    (void)s;
    struct eccl_conn_ctrl *c = ctrl_new();
    struct calls calls = {.refuse_key = -1};
    const uint32_t cumem = KERN_DEV_MEM_CUMEM;
    struct eccl_conn_zc_req bad[] = {
        {.op = ECCL_CONN_ZC_IMPORT, .key = 0, .mode = cumem, .handle = 7, .size = 4096},
        {.op = ECCL_CONN_ZC_IMPORT, .key = 3, .mode = cumem, .handle = 0, .size = 4096},
        {.op = ECCL_CONN_ZC_IMPORT, .key = 3, .mode = cumem, .handle = 7, .size = 0},
        {.op = ECCL_CONN_ZC_IMPORT, .key = 3, .mode = cumem, .handle = 7, .size = 1ull << 50},
        {.op = ECCL_CONN_ZC_IMPORT, .key = 3, .mode = 0, .handle = 7, .size = 4096},
        {.op = ECCL_CONN_ZC_IMPORT, .key = 3, .mode = 9, .handle = 7, .size = 4096},
        {.op = 77, .key = 3, .mode = cumem, .handle = 7, .size = 4096},
        {.op = ECCL_CONN_ZC_DROP, .key = 42},
    };
    int n = (int)(sizeof(bad) / sizeof(bad[0]));
    for (int i = 0; i < n; i++)
        assert_true(core_reg_box_post(c, &bad[i]));
    assert_int_equal(core_reg_box_serve(c, 2, 3, fake_import, fake_drop, &calls), n);
    assert_int_equal(calls.imports, 0);
    assert_int_equal(calls.drops, 1);
    assert_int_equal(calls.last_key, 42);
    assert_int_equal(calls.last_peer, 3);
    struct eccl_conn_zc_resp a[8];
    assert_int_equal(read_answers(c, a, 8), n);
    for (int i = 0; i < n; i++)
        assert_int_equal(a[i].slot, -1);
    /* A legacy IPC handle travels in the request itself: no proxy handle needed. */
    struct eccl_conn_zc_req ipc = {
        .op = ECCL_CONN_ZC_IMPORT, .key = 12, .mode = KERN_DEV_MEM_IPC, .size = 4096};
    assert_true(core_reg_box_post(c, &ipc));
    assert_int_equal(core_reg_box_serve(c, 2, 3, fake_import, fake_drop, &calls), 1);
    assert_int_equal(calls.imports, 1);
    assert_int_equal(read_answers(c, a, 8), 1);
    assert_int_equal(a[0].slot, 12);
    free(c);
}

/* Counters more than a ring apart (a peer that lies, or memory gone bad): skipped whole, and
 * the mailbox works from there on. */
static void test_corrupt_counters(void **s)
{
    (void)s;
    struct eccl_conn_ctrl *c = ctrl_new();
    struct calls calls = {.refuse_key = -1};
    c->zc_req_tail = 1000;
    assert_int_equal(core_reg_box_serve(c, 0, 1, fake_import, fake_drop, &calls), 0);
    assert_int_equal(calls.imports, 0);
    assert_int_equal(c->zc_req_head, 1000);
    assert_int_equal(c->zc_resp_tail, 0);
    c->zc_resp_head = 0;
    struct eccl_conn_zc_req q = import_req(8);
    /* The sender's view: 1000 requests unanswered, so it posts nothing more. */
    assert_false(core_reg_box_post(c, &q));
    c->zc_req_tail = c->zc_req_head = 0;
    assert_true(core_reg_box_post(c, &q));
    assert_int_equal(core_reg_box_serve(c, 0, 1, fake_import, fake_drop, &calls), 1);
    assert_int_equal(calls.imports, 1);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_full_and_answers),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_corrupt_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_common.c - unit tests of common/: the tagged allocator, the memory stack (push, pop,
 * pop on failure), arenas, pools, the callback queue, intrusive queues, parameters and fault
 * points.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/mem.h"
#include "common/param.h"
#include "common/queue.h"

static void test_alloc_counts_per_tag(void **state)
{
    (void)state;
    int64_t before = eccl_alloc_live_bytes("test-a");
    char *p = eccl_calloc(10, 100, "test-a");
    assert_non_null(p);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(p[i], 0);
    assert_int_equal(eccl_alloc_live_bytes("test-a") - before, 1000);
    assert_int_equal(eccl_alloc_live_blocks("test-a"), 1);
    p = eccl_realloc(p, 20, 100, "test-a");
    assert_non_null(p);
    assert_int_equal(p[1999], 0);
    assert_int_equal(eccl_alloc_live_bytes("test-a") - before, 2000);
    eccl_free(p);
    assert_int_equal(eccl_alloc_live_bytes("test-a"), before);
    assert_int_equal(eccl_alloc_live_blocks("test-a"), 0);
}

static void test_alloc_overflow(void **state)
{
    (void)state;
    assert_null(eccl_calloc(SIZE_MAX / 2, 4, "test-ovf"));
    assert_null(eccl_calloc(SIZE_MAX, SIZE_MAX, "test-ovf"));
    assert_int_equal(eccl_alloc_live_blocks("test-ovf"), 0);
}

static void test_alloc_aligned(void **state)
{
    (void)state;
    for (size_t align = 16; align <= 4096; align *= 2) {
        void *p = eccl_calloc_aligned(1000, align, "test-al");
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % align, 0);
        eccl_free_aligned(p);
    }
    assert_null(eccl_calloc_aligned(10, 24, "test-al")); /* not a power of two */
    assert_int_equal(eccl_alloc_live_blocks("test-al"), 0);
}

static void test_strdup(void **state)
{
    (void)state;
    char *s = eccl_strdup("hello", "test-str");
    assert_string_equal(s, "hello");
    eccl_free(s);
    assert_int_equal(eccl_alloc_live_blocks("test-str"), 0);
}

static void test_memstack_push_pop(void **state)
{
    (void)state;
    struct eccl_memstack s;
    eccl_memstack_init(&s, 4096, "test-stack");
    assert_null(eccl_memstack_alloc(&s, 16, 8)); /* no frame */
    assert_int_equal(eccl_memstack_pop(&s), ecclInternalError);
    assert_int_equal(eccl_memstack_push(&s), ecclSuccess);
    char *a = eccl_memstack_alloc(&s, 100, 16);
    assert_non_null(a);
    memset(a, 0xab, 100);
    assert_int_equal(eccl_memstack_push(&s), ecclSuccess);
    assert_int_equal(eccl_memstack_depth(&s), 2);
    /* A large allocation spills to a new chunk; popping the inner frame frees it. */
    char *big = eccl_memstack_alloc(&s, 100000, 64);
    assert_non_null(big);
    assert_int_equal((uintptr_t)big % 64, 0);
    size_t with_big = eccl_memstack_bytes(&s);
    assert_true(with_big >= 100000);
    assert_int_equal(eccl_memstack_pop(&s), ecclSuccess);
    assert_true(eccl_memstack_bytes(&s) < with_big);
    /* The outer frame's memory is intact. */
    for (int i = 0; i < 100; i++)
        assert_int_equal((unsigned char)a[i], 0xab);
    /* Memory of a popped frame is reused, zeroed. */
    assert_int_equal(eccl_memstack_push(&s), ecclSuccess);
    char *c = eccl_memstack_alloc(&s, 100, 16);
    assert_non_null(c);
    for (int i = 0; i < 100; i++)
        assert_int_equal(c[i], 0);
    assert_int_equal(eccl_memstack_pop(&s), ecclSuccess);
    assert_int_equal(eccl_memstack_pop(&s), ecclSuccess);
    assert_int_equal(eccl_memstack_depth(&s), 0);
    /* Back at depth 0, at most one chunk is kept for reuse. */
    assert_true(eccl_memstack_bytes(&s) <= 4096);
    eccl_memstack_fini(&s);
    assert_int_equal(eccl_alloc_live_blocks("test-stack"), 0);
}

/* A function that fails half-way must leave the stack as it found it. */
static ecclResult_t prepare_or_fail(struct eccl_memstack *s, int fail_after)
{
    ecclResult_t res = eccl_memstack_push(s);
    if (res != ecclSuccess)
        return res;
    for (int i = 0; i < 10; i++) {
        if (i == fail_after) {
            res = ecclSystemError;
            goto out_pop;
        }
        if (!eccl_memstack_alloc(s, 5000, 8)) {
            res = ecclSystemError;
            goto out_pop;
        }
    }
out_pop:
    eccl_memstack_pop(s);
    return res;
}

static void test_memstack_pop_on_failure(void **state)
{
    (void)state;
    struct eccl_memstack s;
    eccl_memstack_init(&s, 4096, "test-stack2");
    for (int f = 0; f < 11; f++) {
        ecclResult_t r = prepare_or_fail(&s, f);
        assert_int_equal(r, f < 10 ? ecclSystemError : ecclSuccess);
        assert_int_equal(eccl_memstack_depth(&s), 0);
        assert_true(eccl_memstack_bytes(&s) <= 8192);
    }
    eccl_memstack_fini(&s);
    assert_int_equal(eccl_alloc_live_blocks("test-stack2"), 0);
}

static void test_arena(void **state)
{
    (void)state;
    struct eccl_arena a;
    eccl_arena_init(&a, 1024, "test-arena");
    void *ptrs[100];
    for (int i = 0; i < 100; i++) {
        ptrs[i] = eccl_arena_alloc(&a, (size_t)(i * 13 + 1), 32);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % 32, 0);
        memset(ptrs[i], i, (size_t)(i * 13 + 1));
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(((unsigned char *)ptrs[i])[i * 13], (unsigned char)i);
    assert_null(eccl_arena_alloc(&a, 8, 3));
    eccl_arena_fini(&a);
    assert_int_equal(eccl_alloc_live_blocks("test-arena"), 0);
}

static void test_pool(void **state)
{
    (void)state;
    struct eccl_pool p;
    eccl_pool_init(&p, 40, 4, "test-pool");
    void *objs[10];
    for (int i = 0; i < 10; i++) {
        objs[i] = eccl_pool_get(&p);
        assert_non_null(objs[i]);
        memset(objs[i], 0xff, 40);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(objs[i], objs[j]);
    }
    assert_int_equal(p.live, 10);
    eccl_pool_put(&p, objs[3]);
    void *again = eccl_pool_get(&p);
    assert_ptr_equal(again, objs[3]); /* reused */
    for (int i = 0; i < 40; i++)
        assert_int_equal(((char *)again)[i], 0); /* zeroed */
    for (int i = 0; i < 10; i++)
        eccl_pool_put(&p, objs[i]);
    assert_int_equal(p.live, 0);
    eccl_pool_fini(&p);
    assert_int_equal(eccl_alloc_live_blocks("test-pool"), 0);
}

struct reclaim_item {
    struct eccl_callback cb;
    int id;
    int *order;
    int *n;
    ecclResult_t ret;
};

static ecclResult_t reclaim_fn(struct eccl_callback *cb)
{
    struct reclaim_item *it = eccl_container_of(cb, struct reclaim_item, cb);
    it->order[(*it->n)++] = it->id;
    return it->ret;
}

static void test_callback_queue(void **state)
{
    (void)state;
    struct eccl_cbq q;
    eccl_cbq_init(&q);
    int order[5], n = 0;
    struct reclaim_item items[5];
    for (int i = 0; i < 5; i++) {
        items[i] = (struct reclaim_item){.cb.fn = reclaim_fn,
                                         .id = i,
                                         .order = order,
                                         .n = &n,
                                         .ret = i == 2 ? ecclSystemError : ecclSuccess};
        eccl_cbq_push(&q, &items[i].cb);
    }
    /* Runs all, in push order, and reports the first failure. */
    assert_int_equal(eccl_cbq_poll(&q), ecclSystemError);
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(order[i], i);
    assert_int_equal(eccl_cbq_poll(&q), ecclSuccess);
    assert_int_equal(n, 5);
}

struct qitem {
    struct eccl_qnode node;
    int v;
};

static void test_queue(void **state)
{
    (void)state;
    struct eccl_queue a, b;
    eccl_queue_init(&a);
    eccl_queue_init(&b);
    struct qitem it[6];
    for (int i = 0; i < 6; i++) {
        it[i].v = i;
        eccl_queue_push(i < 3 ? &a : &b, &it[i].node);
    }
    assert_int_equal(a.len, 3);
    eccl_queue_splice(&a, &b);
    assert_true(eccl_queue_empty(&b));
    assert_int_equal(a.len, 6);
    for (int i = 0; i < 6; i++) {
        struct eccl_qnode *n = eccl_queue_pop(&a);
        assert_non_null(n);
        assert_int_equal(eccl_container_of(n, struct qitem, node)->v, i);
    }
    assert_null(eccl_queue_pop(&a));
    assert_null(a.tail);
}

static void test_params(void **state)
{
    (void)state;
    unsetenv("ECCL_TEST_KNOB");
    unsetenv("NCCL_TEST_KNOB");
    eccl_param_reset();
    assert_int_equal(eccl_param_read_int("ECCL_TEST_KNOB", 42), 42);
    setenv("NCCL_TEST_KNOB", "7", 1);
    eccl_param_reset();
    assert_int_equal(eccl_param_read_int("ECCL_TEST_KNOB", 42), 7); /* the NCCL_ name */
    setenv("ECCL_TEST_KNOB", "0x10", 1);
    eccl_param_reset();
    assert_int_equal(eccl_param_read_int("ECCL_TEST_KNOB", 42), 16); /* ECCL_ wins */
    setenv("ECCL_TEST_KNOB", "12abc", 1);
    eccl_param_reset();
    assert_int_equal(eccl_param_read_int("ECCL_TEST_KNOB", 42), 42); /* garbage: default */
    setenv("ECCL_TEST_KNOB", "99", 1);
    assert_int_equal(eccl_param_read_int("ECCL_TEST_KNOB", 42), 42); /* cached */
    setenv("ECCL_TEST_STR", "abc", 1);
    assert_string_equal(eccl_param_read_str("ECCL_TEST_STR", "def"), "abc");
    assert_string_equal(eccl_param_read_str("ECCL_TEST_NOPE", "def"), "def");
    unsetenv("ECCL_TEST_KNOB");
    unsetenv("NCCL_TEST_KNOB");
    unsetenv("ECCL_TEST_STR");
    eccl_param_reset();
}

static void test_hash(void **state)
{
    (void)state;
    uint64_t a = eccl_hash64("abc", 3, 0), b = eccl_hash64("abd", 3, 0);
    assert_true(a != b);
    assert_true(eccl_hash64("abc", 3, 1) != a);
    assert_int_equal(eccl_hash64("abc", 3, 0), a);
    assert_true(eccl_random64() != eccl_random64());
    assert_true(eccl_host_hash() != 0);
    assert_non_null(strchr(eccl_hostname(), '.') == NULL ? "" : NULL);
}

static void test_fault_points(void **state)
{
    (void)state;
#ifdef ECCL_FAULT_ENABLED
    eccl_fault_arm("test-site", 3, false);
    assert_false(ECCL_FAULT("test-site"));
    assert_false(ECCL_FAULT("test-site"));
    assert_true(ECCL_FAULT("test-site"));
    assert_false(ECCL_FAULT("test-site"));
    assert_int_equal(eccl_fault_count("test-site"), 4);
    eccl_fault_arm("alloc", 1, false);
    assert_null(eccl_calloc(1, 8, "test-fault"));
    void *p = eccl_calloc(1, 8, "test-fault");
    assert_non_null(p);
    eccl_free(p);
    eccl_fault_arm("alloc", 0, false);
#else
    assert_false(ECCL_FAULT("test-site")); /* compiled out */
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_counts_per_tag),
        cmocka_unit_test(test_alloc_overflow),
        cmocka_unit_test(test_alloc_aligned),
        cmocka_unit_test(test_strdup),
        cmocka_unit_test(test_memstack_push_pop),
        cmocka_unit_test(test_memstack_pop_on_failure),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_callback_queue),
        cmocka_unit_test(test_queue),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_fault_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

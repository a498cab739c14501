/*
 * test_dev_split.c - the host side of the GPU executor that needs no GPU: which kernel a work
 * descriptor runs in, how a plan splits into launches (kern_dev_split), the connector layout the
 * kernels assume, and what a CUDA communicator does where no device (or no CUDA) exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "eccl.h"
#include "kernels/conn.h"
#include "kernels/dev_exec.h"
#include "kernels/reduce_dev.h"

static struct eccl_work coll(int func, int op_index, int dtype, int redop)
{
    struct eccl_work w;
    memset(&w, 0, sizeof(w));
    w.func = (uint8_t)func;
    w.op_index = (uint32_t)op_index;
    w.dtype = (uint8_t)dtype;
    w.redop = (uint8_t)redop;
    return w;
}

static void test_kernel_of(void **state)
{
    (void)state;
    struct eccl_work w = coll(ECCL_FUNC_ALLGATHER, 0, ecclFloat32, ECCL_RED_SUM);
    assert_int_equal(kern_dev_kernel_of(&w), 0);
    w.func = ECCL_FUNC_SEND;
    assert_int_equal(kern_dev_kernel_of(&w), 0);
    w.func = ECCL_FUNC_BROADCAST;
    assert_int_equal(kern_dev_kernel_of(&w), 0);
    /* Reducing collectives: one kernel per (type, reduction), all distinct. */
    int seen[1 + ecclNumTypes * ECCL_RED_COUNT] = {0};
    for (int dt = 0; dt < ecclNumTypes; dt++) {
        for (int k = 0; k < ECCL_RED_COUNT; k++) {
            w = coll(ECCL_FUNC_ALLREDUCE, 0, dt, k);
            int idx = kern_dev_kernel_of(&w);
            assert_true(idx >= 1 && idx <= ecclNumTypes * ECCL_RED_COUNT);
            assert_int_equal(seen[idx], 0);
            seen[idx] = 1;
            w.func = ECCL_FUNC_REDUCE;
            assert_int_equal(kern_dev_kernel_of(&w), idx);
        }
    }
    /* LL128 works: kernels of their own, KERN_DEV_NKERNELS further on; no tree and no
     * point-to-point work there. */
    w = coll(ECCL_FUNC_ALLGATHER, 0, ecclFloat32, ECCL_RED_SUM);
    w.proto = ECCL_PROTO_LL128;
    assert_int_equal(kern_dev_kernel_of(&w), KERN_DEV_NKERNELS);
    w = coll(ECCL_FUNC_ALLREDUCE, 0, ecclBfloat16, ECCL_RED_MAX);
    int simple = kern_dev_kernel_of(&w);
    w.proto = ECCL_PROTO_LL128;
    assert_int_equal(kern_dev_kernel_of(&w), KERN_DEV_NKERNELS + simple);
    w.algo = ECCL_ALGO_TREE;
    assert_int_equal(kern_dev_kernel_of(&w), -1);
    w = coll(ECCL_FUNC_SEND, 0, ecclFloat32, ECCL_RED_SUM);
    w.proto = ECCL_PROTO_LL128;
    assert_int_equal(kern_dev_kernel_of(&w), -1);
    /* Garbage is refused, not mapped to some kernel. */
    w = coll(ECCL_FUNC_ALLREDUCE, 0, ecclNumTypes, ECCL_RED_SUM);
    assert_int_equal(kern_dev_kernel_of(&w), -1);
    w = coll(ECCL_FUNC_REDUCESCATTER, 0, ecclFloat32, ECCL_RED_COUNT);
    assert_int_equal(kern_dev_kernel_of(&w), -1);
    w = coll(ECCL_FUNC_COUNT, 0, ecclFloat32, ECCL_RED_SUM);
    assert_int_equal(kern_dev_kernel_of(&w), -1);
}

static void test_split(void **state)
{
    (void)state;
    /* Two channels. Ops: 0 AllReduce f32 sum, 1 AllReduce f32 sum (same kernel: one launch),
     * 2 AllGather (copy kernel), 3 Broadcast (copy), then point-to-point (copy: joins 2-3),
     * while channel 1 holds only pieces of ops 0 and 2. */
    struct eccl_work c0[6], c1[2];
    c0[0] = coll(ECCL_FUNC_ALLREDUCE, 0, ecclFloat32, ECCL_RED_SUM);
    c0[1] = coll(ECCL_FUNC_ALLREDUCE, 1, ecclFloat32, ECCL_RED_SUM);
    c0[2] = coll(ECCL_FUNC_ALLGATHER, 2, ecclFloat32, ECCL_RED_SUM);
    c0[3] = coll(ECCL_FUNC_BROADCAST, 3, ecclFloat32, ECCL_RED_SUM);
    c0[4] = coll(ECCL_FUNC_SEND, 0, ecclInt8, 0);
    c0[5] = coll(ECCL_FUNC_RECV, 0, ecclInt8, 0);
    c1[0] = coll(ECCL_FUNC_ALLREDUCE, 0, ecclFloat32, ECCL_RED_SUM);
    c1[1] = coll(ECCL_FUNC_ALLGATHER, 2, ecclFloat32, ECCL_RED_SUM);
    struct eccl_work *works[2] = {c0, c1};
    int nwork[2] = {6, 2};
    uint32_t first[8], end[8];
    int kernel[8];
    int n = kern_dev_split(works, nwork, 2, first, end, kernel, 8);
    assert_int_equal(n, 2);
    assert_int_equal(first[0], 0);
    assert_int_equal(end[0], 2);
    assert_int_equal(kernel[0], kern_dev_kernel_of(&c0[0]));
    assert_int_equal(first[1], 2);
    assert_int_equal(end[1], 5); /* ops 2, 3 and the point-to-point work (op 4) */
    assert_int_equal(kernel[1], 0);

    /* A change of type or reduction is a new launch. */
    c0[1] = coll(ECCL_FUNC_ALLREDUCE, 1, ecclFloat16, ECCL_RED_SUM);
    n = kern_dev_split(works, nwork, 2, first, end, kernel, 8);
    assert_int_equal(n, 3);
    assert_int_equal(end[0], 1);
    assert_int_equal(first[1], 1);
    assert_int_equal(kernel[1], kern_dev_kernel_of(&c0[1]));

    /* Too many launches for the caller's room, and a bad descriptor, fail. */
    assert_int_equal(kern_dev_split(works, nwork, 2, first, end, kernel, 2), -1);
    c1[1].dtype = 200;
    c0[2].dtype = 200;
    c0[2].func = ECCL_FUNC_REDUCE;
    assert_int_equal(kern_dev_split(works, nwork, 2, first, end, kernel, 8), -1);

    /* Point-to-point alone: one copy launch. */
    struct eccl_work p[2] = {coll(ECCL_FUNC_RECV, 0, ecclInt8, 0),
                             coll(ECCL_FUNC_SEND, 0, ecclInt8, 0)};
    struct eccl_work *pw[2] = {p, NULL};
    int pn[2] = {2, 0};
    n = kern_dev_split(pw, pn, 2, first, end, kernel, 8);
    assert_int_equal(n, 1);
    assert_int_equal(kernel[0], 0);
    /* Nothing at all: no launch. */
    pn[0] = 0;
    assert_int_equal(kern_dev_split(pw, pn, 2, first, end, kernel, 8), 0);
}

static void test_conn_layout(void **state)
{
    (void)state;
    /* The kernels address the control block by these offsets (kernels/conn_layout.h); conn.h
     * asserts them at compile time, this checks a live block the same way a kernel reads it. */
    size_t bytes = eccl_conn_bytes(4, 1024);
    struct eccl_conn_ctrl *c = aligned_alloc(64, bytes);
    assert_non_null(c);
    memset(c, 0, bytes);
    c->nslots = 4;
    c->slot_bytes = 1024;
    atomic_store(&c->tail, 7);
    atomic_store(&c->head, 5);
    atomic_store(&c->closed, 1);
    atomic_store(&c->sizes[3], 99);
    const char *b = (const char *)c;
    assert_int_equal(*(const uint32_t *)(b + ECCL_CONN_OFF_TAIL), 7);
    assert_int_equal(*(const uint32_t *)(b + ECCL_CONN_OFF_HEAD), 5);
    assert_int_equal(*(const uint32_t *)(b + ECCL_CONN_OFF_NSLOTS), 4);
    assert_int_equal(*(const uint32_t *)(b + ECCL_CONN_OFF_SLOT_BYTES), 1024);
    assert_int_equal(*(const uint32_t *)(b + ECCL_CONN_OFF_CLOSED), 1);
    assert_int_equal(*(const uint32_t *)(b + ECCL_CONN_OFF_SIZES + 12), 99);
    assert_ptr_equal(eccl_conn_data(c), b + ECCL_CONN_DATA_OFF);
    free(c);
}

/* Where no GPU is present, a CUDA communicator is refused with a clear error. */
static void test_no_device(void **state)
{
    (void)state;
    if (kern_dev_count() > 0)
        skip();
    ecclUniqueId id;
    assert_int_equal(ecclGetUniqueId(&id), ecclSuccess);
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    ecclComm_t comm = NULL;
    assert_int_equal(ecclCommInitRankConfig(&comm, 1, id, 0, &cfg), ecclInvalidUsage);
    assert_null(comm);
    assert_non_null(strstr(ecclGetLastError(NULL), "CUDA"));
}

int main(void)
{
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_of),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_conn_layout),
        cmocka_unit_test(test_no_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_bad_input.c - every kind of bad argument to the public API, each its own case.
 *
 * A case runs a 2-rank host communicator with ranks as threads (fresh threads per case, so the
 * thread-local last-error text starts empty). Rank 0 alone makes the bad call: it must return
 * ecclInvalidArgument or ecclInvalidUsage, and ecclGetLastError must name the argument. Then
 * both ranks run a correct AllReduce and check its result: a bad call must leave nothing
 * enqueued and the communicator usable (a stray task on rank 0 alone would pair with the wrong
 * call or hang, which mt_run's deadline turns into a failure).
 *
 * Also: count 0 with NULL buffers is allowed (as in NCCL), and two ranks claiming rank 0 of a
 * 2-rank communicator both fail within the bootstrap timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

#define BOOTSTRAP_TIMEOUT_MS 3000
#define CASE_TIMEOUT_MS      30000
#define GOOD_COUNT           1023

/* What a case's bad call may use. */
struct bad_env {
    ecclComm_t comm;
    float *send;
    float *recv;
};

struct bad_case {
    ecclResult_t (*call)(struct bad_env *e);
    const char *needle;  /* the argument the error text must name */
    bool both_ranks;     /* the call is made by both ranks (it must succeed then) */
    bool expect_success; /* allowed input, not bad */
};

struct case_state {
    const struct bad_case *bc;
    ecclResult_t result;
    char text_before[512];
    char text_after[1024];
};

static int rank_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct case_state *cs = arg;
    ecclComm_t comm;
    ecclResult_t res = mp_comm_init(&comm, nranks, id, rank);
    if (res != ecclSuccess) {
        printf("rank %d: init failed: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    int bad = 0;
    float *send = calloc(GOOD_COUNT, sizeof(float)), *recv = calloc(GOOD_COUNT, sizeof(float));
    if (send == NULL || recv == NULL)
        abort();
    struct bad_env env = {.comm = comm, .send = send, .recv = recv};
    if (rank == 0 || cs->bc->both_ranks) {
        if (rank == 0)
            snprintf(cs->text_before, sizeof(cs->text_before), "%s", ecclGetLastError(comm));
        ecclResult_t r = cs->bc->call(&env);
        if (rank == 0) {
            cs->result = r;
            snprintf(cs->text_after, sizeof(cs->text_after), "%s", ecclGetLastError(comm));
        } else if (r != ecclSuccess) {
            printf("rank %d: the call returned %d: %s\n", rank, (int)r, ecclGetLastError(comm));
            bad++;
        }
    }
    /* The communicator must still work. */
    for (size_t j = 0; j < GOOD_COUNT; j++)
        send[j] = (float)(rank + 1) * (float)(j % 13);
    res = ecclAllReduce(send, recv, GOOD_COUNT, ecclFloat32, ecclSum, comm, NULL);
    if (res != ecclSuccess) {
        printf("rank %d: the AllReduce after the bad call returned %d: %s\n", rank, (int)res,
               ecclGetLastError(comm));
        bad++;
    } else {
        for (size_t j = 0; j < GOOD_COUNT; j++) {
            float want = (float)(nranks * (nranks + 1) / 2) * (float)(j % 13);
            if (recv[j] != want) {
                printf("rank %d: AllReduce after the bad call: [%zu] = %g, expected %g\n", rank, j,
                       (double)recv[j], (double)want);
                bad++;
                break;
            }
        }
    }
    free(send);
    free(recv);
    if (bad) {
        ecclCommAbort(comm);
        return 1;
    }
    res = ecclCommFinalize(comm);
    if (res == ecclSuccess)
        res = ecclCommDestroy(comm);
    return res == ecclSuccess ? 0 : 1;
}

static void run_case(const struct bad_case *bc)
{
    struct case_state cs;
    memset(&cs, 0, sizeof(cs));
    cs.bc = bc;
    cs.result = ecclNumResults;
    int rc = mt_run(2, rank_fn, &cs, CASE_TIMEOUT_MS);
    printf("    returned %d (%s); last error: \"%s\"\n", (int)cs.result,
           cs.result == ecclNumResults ? "not called" : ecclGetErrorString(cs.result),
           cs.text_after);
    assert_int_equal(rc, 0);
    if (bc->expect_success) {
        assert_int_equal(cs.result, ecclSuccess);
        return;
    }
    assert_true(cs.result == ecclInvalidArgument || cs.result == ecclInvalidUsage);
    /* The text is this call's: the argument was not named before it. */
    assert_false(mp_text_has(cs.text_before, bc->needle));
    if (!mp_text_has(cs.text_after, bc->needle))
        printf("    the last error text does not name \"%s\"\n", bc->needle);
    assert_true(mp_text_has(cs.text_after, bc->needle));
}

/* ---- the bad calls -------------------------------------------------------------------------- */

static ecclResult_t null_comm(struct bad_env *e)
{
    return ecclAllReduce(e->send, e->recv, 7, ecclFloat32, ecclSum, NULL, NULL);
}

static ecclResult_t null_comm_p2p(struct bad_env *e)
{
    return ecclSend(e->send, 7, ecclFloat32, 1, NULL, NULL);
}

static ecclResult_t null_sendbuff(struct bad_env *e)
{
    return ecclAllReduce(NULL, e->recv, 7, ecclFloat32, ecclSum, e->comm, NULL);
}

static ecclResult_t null_recvbuff(struct bad_env *e)
{
    return ecclAllReduce(e->send, NULL, 7, ecclFloat32, ecclSum, e->comm, NULL);
}

static ecclResult_t null_recvbuff_allgather(struct bad_env *e)
{
    return ecclAllGather(e->send, NULL, 7, ecclFloat32, e->comm, NULL);
}

static ecclResult_t null_send_p2p(struct bad_env *e)
{
    return ecclSend(NULL, 7, ecclFloat32, 1, e->comm, NULL);
}

static ecclResult_t null_recv_p2p(struct bad_env *e)
{
    return ecclRecv(NULL, 7, ecclFloat32, 1, e->comm, NULL);
}

static ecclResult_t null_count0(struct bad_env *e)
{
    return ecclAllReduce(NULL, NULL, 0, ecclFloat32, ecclSum, e->comm, NULL);
}

static ecclResult_t count_overflow(struct bad_env *e)
{
    /* count * 4 bytes wraps around size_t. */
    return ecclAllReduce(e->send, e->recv, SIZE_MAX / 4 + 2, ecclFloat32, ecclSum, e->comm, NULL);
}

static ecclResult_t count_overflow_allgather(struct bad_env *e)
{
    /* count * 4 fits, count * 4 * nranks (2) wraps. */
    return ecclAllGather(e->send, e->recv, SIZE_MAX / 8 + 2, ecclFloat32, e->comm, NULL);
}

static ecclResult_t bad_dtype(struct bad_env *e)
{
    return ecclAllReduce(e->send, e->recv, 7, (ecclDataType_t)ecclNumTypes, ecclSum, e->comm, NULL);
}

static ecclResult_t bad_dtype_negative(struct bad_env *e)
{
    return ecclBroadcast(e->send, e->recv, 7, (ecclDataType_t)-1, 0, e->comm, NULL);
}

static ecclResult_t bad_op(struct bad_env *e)
{
    return ecclAllReduce(e->send, e->recv, 7, ecclFloat32, (ecclRedOp_t)ecclNumOps, e->comm, NULL);
}

static ecclResult_t bad_op_large(struct bad_env *e)
{
    return ecclReduce(e->send, e->recv, 7, ecclFloat32, (ecclRedOp_t)1000, 0, e->comm, NULL);
}

static ecclResult_t destroyed_premulsum(struct bad_env *e)
{
    ecclRedOp_t op;
    float scalar = 2.0f;
    ecclResult_t res =
        ecclRedOpCreatePreMulSum(&op, &scalar, ecclFloat32, ecclScalarHostImmediate, e->comm);
    if (res != ecclSuccess)
        return ecclInternalError; /* not what the case expects: fails it */
    res = ecclRedOpDestroy(op, e->comm);
    if (res != ecclSuccess)
        return ecclInternalError;
    return ecclAllReduce(e->send, e->recv, 7, ecclFloat32, op, e->comm, NULL);
}

static ecclResult_t destroy_builtin_op(struct bad_env *e)
{
    return ecclRedOpDestroy(ecclSum, e->comm);
}

static ecclResult_t root_too_big(struct bad_env *e)
{
    return ecclBroadcast(e->send, e->recv, 7, ecclFloat32, 2, e->comm, NULL);
}

static ecclResult_t root_negative(struct bad_env *e)
{
    return ecclReduce(e->send, e->recv, 7, ecclFloat32, ecclSum, -1, e->comm, NULL);
}

static ecclResult_t root_gather(struct bad_env *e)
{
    return ecclGather(e->send, e->recv, 3, ecclFloat32, 5, e->comm, NULL);
}

static ecclResult_t peer_too_big(struct bad_env *e)
{
    return ecclSend(e->send, 7, ecclFloat32, 2, e->comm, NULL);
}

static ecclResult_t peer_negative(struct bad_env *e)
{
    return ecclRecv(e->recv, 7, ecclFloat32, -1, e->comm, NULL);
}

static ecclResult_t init_with_config(ecclConfig_t *config)
{
    ecclUniqueId id;
    if (ecclGetUniqueId(&id) != ecclSuccess)
        return ecclInternalError;
    ecclComm_t c = NULL;
    ecclResult_t res = ecclCommInitRankConfig(&c, 1, id, 0, config);
    if (res == ecclSuccess)
        ecclCommDestroy(c);
    return res;
}

static ecclResult_t config_bad_magic(struct bad_env *e)
{
    (void)e;
    ecclConfig_t config = ECCL_CONFIG_INITIALIZER;
    config.deviceKind = ECCL_DEVICE_HOST;
    config.magic = 0xdeadbeef;
    return init_with_config(&config);
}

static ecclResult_t config_small_size(struct bad_env *e)
{
    (void)e;
    ecclConfig_t config = ECCL_CONFIG_INITIALIZER;
    config.deviceKind = ECCL_DEVICE_HOST;
    config.size = sizeof(size_t); /* not even the magic is covered */
    return init_with_config(&config);
}

static ecclResult_t config_zero_size(struct bad_env *e)
{
    (void)e;
    ecclConfig_t config = ECCL_CONFIG_INITIALIZER;
    config.deviceKind = ECCL_DEVICE_HOST;
    config.size = 0;
    return init_with_config(&config);
}

static ecclResult_t init_ranks(int nranks, int rank, bool null_comm_ptr)
{
    ecclUniqueId id;
    if (ecclGetUniqueId(&id) != ecclSuccess)
        return ecclInternalError;
    ecclComm_t c = NULL;
    ecclResult_t res = ecclCommInitRank(null_comm_ptr ? NULL : &c, nranks, id, rank);
    if (res == ecclSuccess && c != NULL)
        ecclCommDestroy(c);
    return res;
}

static ecclResult_t nranks_zero(struct bad_env *e)
{
    (void)e;
    return init_ranks(0, 0, false);
}

static ecclResult_t nranks_negative(struct bad_env *e)
{
    (void)e;
    return init_ranks(-3, 0, false);
}

static ecclResult_t rank_equals_nranks(struct bad_env *e)
{
    (void)e;
    return init_ranks(2, 2, false);
}

static ecclResult_t rank_negative(struct bad_env *e)
{
    (void)e;
    return init_ranks(2, -1, false);
}

static ecclResult_t init_null_comm(struct bad_env *e)
{
    (void)e;
    return init_ranks(1, 0, true);
}

static ecclResult_t group_end_without_start(struct bad_env *e)
{
    (void)e;
    return ecclGroupEnd();
}

static ecclResult_t alltoall_in_place(struct bad_env *e)
{
    return ecclAlltoAll(e->send, e->send, 7, ecclFloat32, e->comm, NULL);
}

/* One cmocka test per case. */
#define BAD_CASE(name, fn, needle_)                                        \
    static void test_##name(void **state)                                  \
    {                                                                      \
        (void)state;                                                       \
        static const struct bad_case bc = {.call = fn, .needle = needle_}; \
        run_case(&bc);                                                     \
    }

BAD_CASE(null_comm, null_comm, "comm ")
BAD_CASE(null_comm_p2p, null_comm_p2p, "comm ")
BAD_CASE(null_sendbuff, null_sendbuff, "sendbuff")
BAD_CASE(null_recvbuff, null_recvbuff, "recvbuff")
BAD_CASE(null_recvbuff_allgather, null_recvbuff_allgather, "recvbuff")
BAD_CASE(null_send_p2p, null_send_p2p, "sendbuff")
BAD_CASE(null_recv_p2p, null_recv_p2p, "recvbuff")
BAD_CASE(count_overflow, count_overflow, "count")
BAD_CASE(count_overflow_allgather, count_overflow_allgather, "count")
BAD_CASE(bad_dtype, bad_dtype, "datatype")
BAD_CASE(bad_dtype_negative, bad_dtype_negative, "datatype")
BAD_CASE(bad_op, bad_op, "op ")
BAD_CASE(bad_op_large, bad_op_large, "op ")
BAD_CASE(destroyed_premulsum, destroyed_premulsum, "op ")
BAD_CASE(destroy_builtin_op, destroy_builtin_op, "op ")
BAD_CASE(root_too_big, root_too_big, "root")
BAD_CASE(root_negative, root_negative, "root")
BAD_CASE(root_gather, root_gather, "root")
BAD_CASE(peer_too_big, peer_too_big, "peer")
BAD_CASE(peer_negative, peer_negative, "peer")
BAD_CASE(config_bad_magic, config_bad_magic, "magic")
BAD_CASE(config_small_size, config_small_size, "size")
BAD_CASE(config_zero_size, config_zero_size, "size")
BAD_CASE(nranks_zero, nranks_zero, "nranks")
BAD_CASE(nranks_negative, nranks_negative, "nranks")
BAD_CASE(rank_equals_nranks, rank_equals_nranks, "rank ")
BAD_CASE(rank_negative, rank_negative, "rank ")
BAD_CASE(init_null_comm, init_null_comm, "comm")
BAD_CASE(group_end_without_start, group_end_without_start, "GroupStart")
BAD_CASE(alltoall_in_place, alltoall_in_place, "in-place")

/* count 0 with NULL buffers is allowed, as in NCCL (both ranks make the call). */
static void test_null_buffers_count0_allowed(void **state)
{
    (void)state;
    static const struct bad_case bc = {
        .call = null_count0, .needle = "", .both_ranks = true, .expect_success = true};
    run_case(&bc);
}

/* One rank, in place: the identity reductions move nothing (and leave the data as it is); the
 * ones that change values still run. */
static void test_one_rank_in_place(void **state)
{
    (void)state;
    ecclUniqueId id;
    assert_int_equal(ecclGetUniqueId(&id), ecclSuccess);
    ecclConfig_t config = ECCL_CONFIG_INITIALIZER;
    config.deviceKind = ECCL_DEVICE_HOST;
    ecclComm_t c = NULL;
    assert_int_equal(ecclCommInitRankConfig(&c, 1, id, 0, &config), ecclSuccess);
    enum { N = 1000 };
    float v[N], out[N];
    for (int i = 0; i < N; i++)
        v[i] = (float)i;
    static const ecclRedOp_t same[] = {ecclSum, ecclProd, ecclMax, ecclMin, ecclAvg};
    for (size_t k = 0; k < sizeof(same) / sizeof(same[0]); k++) {
        assert_int_equal(ecclAllReduce(v, v, N, ecclFloat32, same[k], c, NULL), ecclSuccess);
        assert_int_equal(ecclReduce(v, v, N, ecclFloat32, same[k], 0, c, NULL), ecclSuccess);
        assert_int_equal(ecclReduceScatter(v, v, N, ecclFloat32, same[k], c, NULL), ecclSuccess);
    }
    assert_int_equal(ecclBroadcast(v, v, N, ecclFloat32, 0, c, NULL), ecclSuccess);
    assert_int_equal(ecclAllGather(v, v, N, ecclFloat32, c, NULL), ecclSuccess);
    for (int i = 0; i < N; i++)
        assert_true(v[i] == (float)i);
    float two = 2.0f;
    ecclRedOp_t pms;
    assert_int_equal(ecclRedOpCreatePreMulSum(&pms, &two, ecclFloat32, ecclScalarHostImmediate, c),
                     ecclSuccess);
    assert_int_equal(ecclAllReduce(v, v, N, ecclFloat32, pms, c, NULL), ecclSuccess);
    for (int i = 0; i < N; i++)
        assert_true(v[i] == 2.0f * (float)i);
    assert_int_equal(ecclRedOpDestroy(pms, c), ecclSuccess);
    /* A device-resident scalar (host memory on a host communicator) is read by each call, not
     * at creation. */
    float sc = 7.0f;
    assert_int_equal(ecclRedOpCreatePreMulSum(&pms, &sc, ecclFloat32, ecclScalarDevice, c),
                     ecclSuccess);
    sc = 0.5f;
    assert_int_equal(ecclAllReduce(v, v, N, ecclFloat32, pms, c, NULL), ecclSuccess);
    for (int i = 0; i < N; i++)
        assert_true(v[i] == (float)i);
    assert_int_equal(ecclRedOpDestroy(pms, c), ecclSuccess);
    /* Out of place is a copy. */
    assert_int_equal(ecclAllReduce(v, out, N, ecclFloat32, ecclMax, c, NULL), ecclSuccess);
    assert_memory_equal(v, out, sizeof(v));
    assert_int_equal(ecclCommDestroy(c), ecclSuccess);
}

/* Two ranks claim rank 0 of a 2-rank communicator: both inits fail, with a clear error, within
 * the bootstrap timeout; the library works afterwards. */
struct dup_state {
    ecclResult_t result[2];
    double elapsed_ms[2];
    char text[2][1024];
};

static int dup_rank_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct dup_state *ds = arg;
    ecclComm_t comm = NULL;
    double t0 = mp_now_ms();
    ecclResult_t res = mp_comm_init(&comm, nranks, id, 0); /* both say rank 0 */
    ds->elapsed_ms[rank] = mp_now_ms() - t0;
    ds->result[rank] = res;
    snprintf(ds->text[rank], sizeof(ds->text[rank]), "%s", ecclGetLastError(NULL));
    if (res == ecclSuccess)
        ecclCommAbort(comm);
    return 0;
}

static int good_rank_fn(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    int v = rank + 1, sum = 0;
    ecclResult_t res = ecclAllReduce(&v, &sum, 1, ecclInt32, ecclSum, comm, NULL);
    ecclCommFinalize(comm);
    ecclCommDestroy(comm);
    return res == ecclSuccess && sum == 3 ? 0 : 1;
}

static void test_duplicate_rank(void **state)
{
    (void)state;
    struct dup_state ds;
    memset(&ds, 0, sizeof(ds));
    assert_int_equal(mt_run(2, dup_rank_fn, &ds, CASE_TIMEOUT_MS), 0);
    for (int i = 0; i < 2; i++) {
        printf("    thread %d: returned %d after %.0f ms: \"%s\"\n", i, (int)ds.result[i],
               ds.elapsed_ms[i], ds.text[i]);
        assert_true(ds.result[i] == ecclInvalidArgument || ds.result[i] == ecclInvalidUsage);
        assert_true(ds.elapsed_ms[i] < BOOTSTRAP_TIMEOUT_MS + 1000);
        assert_true(mp_text_has(ds.text[i], "rank"));
    }
    assert_int_equal(mt_run(2, good_rank_fn, NULL, CASE_TIMEOUT_MS), 0);
}

int main(void)
{
    mp_env_setup();
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%d", BOOTSTRAP_TIMEOUT_MS);
    setenv("ECCL_BOOTSTRAP_TIMEOUT", timeout, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_comm),
        cmocka_unit_test(test_null_comm_p2p),
        cmocka_unit_test(test_null_sendbuff),
        cmocka_unit_test(test_null_recvbuff),
        cmocka_unit_test(test_null_recvbuff_allgather),
        cmocka_unit_test(test_null_send_p2p),
        cmocka_unit_test(test_null_recv_p2p),
        cmocka_unit_test(test_null_buffers_count0_allowed),
        cmocka_unit_test(test_count_overflow),
        cmocka_unit_test(test_count_overflow_allgather),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_bad_dtype_negative),
        cmocka_unit_test(test_bad_op),
        cmocka_unit_test(test_bad_op_large),
        cmocka_unit_test(test_destroyed_premulsum),
        cmocka_unit_test(test_destroy_builtin_op),
        cmocka_unit_test(test_root_too_big),
        cmocka_unit_test(test_root_negative),
        cmocka_unit_test(test_root_gather),
        cmocka_unit_test(test_peer_too_big),
        cmocka_unit_test(test_peer_negative),
        cmocka_unit_test(test_config_bad_magic),
        cmocka_unit_test(test_config_small_size),
        cmocka_unit_test(test_config_zero_size),
        cmocka_unit_test(test_nranks_zero),
        cmocka_unit_test(test_nranks_negative),
        cmocka_unit_test(test_rank_equals_nranks),
        cmocka_unit_test(test_rank_negative),
        cmocka_unit_test(test_init_null_comm),
        cmocka_unit_test(test_group_end_without_start),
        cmocka_unit_test(test_alltoall_in_place),
        cmocka_unit_test(test_duplicate_rank),
        cmocka_unit_test(test_one_rank_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

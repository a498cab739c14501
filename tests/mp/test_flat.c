/*
 * test_flat.c - the flat path of small host collectives (core/flat.h, kernels/host_flat.h) with
 * 2, 3 and 4 ranks as processes: AllReduce, AllGather, ReduceScatter and Broadcast of several
 * types, with sum, prod, min, max and avg, counts 0, 1, odd ones and the largest that fits
 * 64 KiB, in and out of place, each result checked element by element against a reference
 * computed here; each call must have taken the flat path (the segment's call counter). Then the
 * ordering cases: small calls between large ones (which take the ring), groups that mix them,
 * and one rank grouping calls that the others make one by one; runs of back-to-back Broadcasts
 * (a root runs ahead of its receivers) between AllGathers and AllReduces; then ECCL_ALGO=ring, which keeps
 * the flat path off and must still give the same results.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/core_int.h"
#include "eccl.h"
#include "tests/support/data.h"
#include "tests/support/mp.h"

#define MAX_BYTES (64 * 1024)

static const ecclDataType_t types[] = {ecclInt8,    ecclUint8,   ecclInt32,   ecclInt64,
                                       ecclFloat16, ecclFloat32, ecclFloat64, ecclBfloat16};
static const ecclRedOp_t ops[] = {ecclSum, ecclProd, ecclMin, ecclMax, ecclAvg};
enum coll { C_ALLREDUCE, C_ALLGATHER, C_REDUCESCATTER, C_BROADCAST, C_NUM };
static const char *coll_names[] = {"AllReduce", "AllGather", "ReduceScatter", "Broadcast"};

/* Rank r's value at index i, exact in every type under every op for up to 4 ranks: small
 * integers for sums and min/max, {1, -1, 2} ({1, 2} unsigned) for products. */
static double value(int r, size_t i, int dtype, ecclRedOp_t op, int seed)
{
    bool uns = td_is_unsigned(dtype);
    unsigned k = (unsigned)(r * 7 + (int)(i % 1009) * 3 + seed);
    if (op == ecclProd)
        return uns ? (double)(1 + k % 2) : (double)((int)(k % 3) - 1 == 0 ? 2 : (int)(k % 3) - 1);
    return uns ? (double)(k % 5) : (double)((int)(k % 5) - 2);
}

static double reduce_ref(const double *v, int n, ecclRedOp_t op, int dtype)
{
    double acc = v[0];
    for (int r = 1; r < n; r++) {
        switch (op) {
        case ecclProd:
            acc *= v[r];
            break;
        case ecclMin:
            acc = v[r] < acc ? v[r] : acc;
            break;
        case ecclMax:
            acc = v[r] > acc ? v[r] : acc;
            break;
        default:
            acc += v[r];
        }
    }
    if (op == ecclAvg) {
        acc /= n;
        if (!td_is_float(dtype))
            acc = acc < 0 ? -(double)(long long)(-acc) : (double)(long long)acc;
    }
    return acc;
}

/* Avg of floating types multiplies each value by the rounded 1/n: inexact with 3 ranks. */
static bool close_enough(double got, double want, int dtype, ecclRedOp_t op)
{
    if (got == want)
        return true;
    if (op != ecclAvg || !td_is_float(dtype))
        return false;
    double tol = td_size(dtype) == 2 ? 2e-2 : td_size(dtype) == 4 ? 1e-6 : 1e-12;
    double d = got > want ? got - want : want - got;
    return d <= tol * (1 + (want < 0 ? -want : want));
}

struct rank_ctx {
    ecclComm_t comm;
    int rank, n;
    char *send, *recv;
    long cases, flat_calls;
    size_t flat_max; /* calls up to this size (the larger buffer) must take the flat path */
};

static ecclResult_t issue(struct rank_ctx *c, int coll, const void *s, void *d, size_t count,
                          int dtype, ecclRedOp_t op, int root)
{
    switch (coll) {
    case C_ALLREDUCE:
        return ecclAllReduce(s, d, count, dtype, op, c->comm, NULL);
    case C_ALLGATHER:
        return ecclAllGather(s, d, count, dtype, c->comm, NULL);
    case C_REDUCESCATTER:
        return ecclReduceScatter(s, d, count, dtype, op, c->comm, NULL);
    default:
        return ecclBroadcast(s, d, count, dtype, root, c->comm, NULL);
    }
}

/* One case: fill, call, check. `grouped`: this rank wraps the call in a group of its own. */
static int run_case(struct rank_ctx *c, int coll, int dtype, ecclRedOp_t op, size_t count,
                    bool inplace, int seed, bool grouped)
{
    int n = c->n, me = c->rank, root = seed % n;
    size_t ts = td_size(dtype);
    size_t in_count = coll == C_REDUCESCATTER ? count * (size_t)n : count;
    size_t out_count = coll == C_ALLGATHER ? count * (size_t)n : count;
    char *sendp = c->send, *recvp = c->recv;
    bool expect_flat = (in_count > out_count ? in_count : out_count) * ts <= c->flat_max;
    if (inplace) {
        /* NCCL's in-place rules: AllGather's input is the rank's block of the output,
         * ReduceScatter's output the rank's block of the input. */
        sendp = recvp = c->recv;
        if (coll == C_ALLGATHER)
            sendp = c->recv + (size_t)me * count * ts;
        if (coll == C_REDUCESCATTER)
            recvp = c->recv + (size_t)me * count * ts;
    }
    memset(c->recv, 0x5a, MAX_BYTES);
    for (size_t i = 0; i < in_count; i++)
        td_store(sendp, i, dtype, value(me, i, dtype, op, seed));
    uint32_t seq0 = c->comm->flat.seq;
    if (grouped)
        ecclGroupStart();
    ecclResult_t r = issue(c, coll, sendp, recvp, count, dtype, op, root);
    if (grouped) {
        ecclResult_t r2 = ecclGroupEnd();
        if (r == ecclSuccess)
            r = r2;
    }
    c->cases++;
    if (r != ecclSuccess) {
        printf("FAIL rank %d/%d %s %s op %d count %zu inplace %d: %s (%s)\n", me, n,
               coll_names[coll], td_type_name(dtype), (int)op, count, inplace,
               ecclGetErrorString(r), ecclGetLastError(c->comm));
        return 1;
    }
    uint32_t ran = c->comm->flat.seq - seq0;
    if (ran != (expect_flat && count > 0 ? 1u : 0u)) {
        printf("FAIL rank %d/%d %s %s count %zu: %u flat calls, want %d\n", me, n, coll_names[coll],
               td_type_name(dtype), count, ran, expect_flat && count > 0);
        return 1;
    }
    c->flat_calls += ran;
    double v[8];
    for (size_t i = 0; i < out_count; i++) {
        double want;
        if (coll == C_ALLGATHER) {
            want = value((int)(i / count), i % count, dtype, op, seed);
        } else if (coll == C_BROADCAST) {
            want = value(root, i, dtype, op, seed);
        } else {
            size_t src = coll == C_REDUCESCATTER ? (size_t)me * count + i : i;
            for (int q = 0; q < n; q++)
                v[q] = value(q, src, dtype, op, seed);
            want = reduce_ref(v, n, op, dtype);
        }
        double got = td_load(recvp, i, dtype);
        if (!close_enough(got, want, dtype, op)) {
            printf("FAIL rank %d/%d %s %s op %d count %zu inplace %d grouped %d: [%zu] = %g, "
                   "want %g\n",
                   me, n, coll_names[coll], td_type_name(dtype), (int)op, count, inplace, grouped,
                   i, got, want);
            return 1;
        }
    }
    /* Bytes past the output stay untouched (out of place). */
    if (!inplace && out_count * ts < MAX_BYTES && (unsigned char)c->recv[out_count * ts] != 0x5a) {
        printf("FAIL rank %d/%d %s: wrote past the output\n", me, n, coll_names[coll]);
        return 1;
    }
    return 0;
}

static int matrix(struct rank_ctx *c)
{
    int bad = 0, seed = 0;
    for (int coll = 0; coll < C_NUM && !bad; coll++) {
        bool reduces = coll == C_ALLREDUCE || coll == C_REDUCESCATTER;
        for (size_t t = 0; t < sizeof(types) / sizeof(types[0]) && !bad; t++) {
            int dtype = types[t];
            size_t ts = td_size(dtype);
            size_t mult = coll == C_ALLGATHER || coll == C_REDUCESCATTER ? (size_t)c->n : 1;
            size_t maxc = MAX_BYTES / ts / mult;
            size_t counts[] = {0, 1, 2, 7, 33, 255, 1001, maxc - 1, maxc};
            for (size_t o = 0; o < (reduces ? sizeof(ops) / sizeof(ops[0]) : 1) && !bad; o++) {
                for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]) && !bad; k++) {
                    if (counts[k] > maxc)
                        continue;
                    for (int inplace = 0; inplace < 2 && !bad; inplace++) {
                        /* Every few cases, odd ranks wrap the call in a group: the choice of
                         * path must not depend on it. */
                        bool grouped = (seed % 5 == 0) && (c->rank & 1);
                        bad = run_case(c, coll, dtype, ops[o], counts[k], inplace, seed++, grouped);
                    }
                }
            }
        }
    }
    return bad;
}

/* Small calls among large ones (which take the ring), alone and in groups, and a group on rank 0
 * of calls that the other ranks make one by one. */
static int ordering(struct rank_ctx *c)
{
    enum { BIG = 256 * 1024, SMALL = 13 };
    int n = c->n, me = c->rank;
    float *big_in = malloc(sizeof(float) * BIG), *big_out = malloc(sizeof(float) * BIG);
    float small_in[SMALL], small_out[SMALL], bc[SMALL];
    int bad = !big_in || !big_out;
    for (int round = 0; round < 6 && !bad; round++) {
        for (int i = 0; i < BIG; i++)
            big_in[i] = (float)(me + i % 17 + round);
        for (int i = 0; i < SMALL; i++) {
            small_in[i] = (float)(me * 100 + i + round);
            bc[i] = me == 0 ? (float)(i * 3 + round) : -1.0f;
        }
        bool group = round % 3 == 1 || (round % 3 == 2 && me == 0);
        ecclResult_t r = ecclSuccess;
        if (group)
            ecclGroupStart();
        ecclResult_t r1 = ecclAllReduce(big_in, big_out, BIG, ecclFloat, ecclSum, c->comm, NULL);
        ecclResult_t r2 =
            ecclAllReduce(small_in, small_out, SMALL, ecclFloat, ecclSum, c->comm, NULL);
        ecclResult_t r3 = ecclBroadcast(bc, bc, SMALL, ecclFloat, 0, c->comm, NULL);
        ecclResult_t r4 = ecclAllReduce(big_out, big_out, BIG, ecclFloat, ecclMax, c->comm, NULL);
        if (group)
            r = ecclGroupEnd();
        if (r != ecclSuccess || r1 != ecclSuccess || r2 != ecclSuccess || r3 != ecclSuccess ||
            r4 != ecclSuccess) {
            printf("FAIL rank %d/%d ordering round %d: %d %d %d %d %d (%s)\n", me, n, round, r, r1,
                   r2, r3, r4, ecclGetLastError(c->comm));
            bad = 1;
            break;
        }
        for (int i = 0; i < BIG && !bad; i++) {
            float want = (float)(n * (n - 1) / 2 + n * (i % 17 + round));
            if (big_out[i] != want) {
                printf("FAIL rank %d/%d ordering round %d: big[%d] = %g, want %g\n", me, n, round,
                       i, big_out[i], want);
                bad = 1;
            }
        }
        for (int i = 0; i < SMALL && !bad; i++) {
            float want = (float)(100 * n * (n - 1) / 2 + n * (i + round));
            if (small_out[i] != want || bc[i] != (float)(i * 3 + round)) {
                printf("FAIL rank %d/%d ordering round %d: small[%d] = %g (want %g), bc %g\n", me,
                       n, round, i, small_out[i], want, bc[i]);
                bad = 1;
            }
        }
    }
    free(big_in);
    free(big_out);
    return bad;
}

/* Back-to-back calls: runs of Broadcasts from one root (which may run several calls ahead of
 * its receivers, reusing its slots) between AllGathers and AllReduces, every result checked. */
static int stream(struct rank_ctx *c)
{
    enum { N = 37 };
    int n = c->n, me = c->rank;
    int32_t buf[N], gat[N * 4], out[N];
    for (int i = 0; i < 600; i++) {
        int kind = i % 30 < 24 ? 0 : i % 30 < 27 ? 1 : 2;
        int root = (i / 30) % n;
        ecclResult_t r;
        for (int k = 0; k < N; k++)
            buf[k] = me == root || kind != 0 ? i * 1000 + k + me * (kind != 0) : -1;
        if (kind == 0)
            r = ecclBroadcast(buf, buf, N, ecclInt32, root, c->comm, NULL);
        else if (kind == 1)
            r = ecclAllGather(buf, gat, N, ecclInt32, c->comm, NULL);
        else
            r = ecclAllReduce(buf, out, N, ecclInt32, ecclSum, c->comm, NULL);
        if (r != ecclSuccess) {
            printf("FAIL rank %d/%d stream call %d: %s\n", me, n, i, ecclGetErrorString(r));
            return 1;
        }
        for (int k = 0; k < N; k++) {
            int32_t want, got;
            if (kind == 0) {
                want = i * 1000 + k;
                got = buf[k];
            } else if (kind == 1) {
                for (int q = 0; q < n; q++)
                    if (gat[q * N + k] != i * 1000 + k + q) {
                        printf("FAIL rank %d/%d stream call %d: gather[%d][%d] = %d\n", me, n, i, q,
                               k, gat[q * N + k]);
                        return 1;
                    }
                continue;
            } else {
                want = n * (i * 1000 + k) + n * (n - 1) / 2;
                got = out[k];
            }
            if (got != want) {
                printf("FAIL rank %d/%d stream call %d kind %d: [%d] = %d, want %d\n", me, n, i,
                       kind, k, got, want);
                return 1;
            }
        }
    }
    return 0;
}

struct run_arg {
    const char *algo;    /* ECCL_ALGO for the run, or NULL */
    const char *max_env; /* ECCL_FLAT_MAX_BYTES, or NULL */
    int max_env_rank;    /* the rank that sets it, -1: all */
    bool segment;        /* the communicator must have a segment */
    size_t flat_max;     /* calls up to this size take the flat path */
};

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct run_arg *a = arg;
    if (a->algo)
        setenv("ECCL_ALGO", a->algo, 1);
    if (a->max_env && (a->max_env_rank < 0 || a->max_env_rank == rank))
        setenv("ECCL_FLAT_MAX_BYTES", a->max_env, 1);
    struct rank_ctx c = {.rank = rank, .n = nranks, .flat_max = a->flat_max};
    c.send = malloc(MAX_BYTES);
    c.recv = malloc(MAX_BYTES);
    if (!c.send || !c.recv)
        return 1;
    ecclResult_t r = mp_comm_init(&c.comm, nranks, id, rank);
    if (r != ecclSuccess) {
        printf("FAIL rank %d: init: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    int bad = 0;
    if ((c.comm->flat.base != NULL) != a->segment) {
        printf("FAIL rank %d/%d: the communicator %s a flat segment\n", rank, nranks,
               a->segment ? "lacks" : "has");
        bad = 1;
    }
    if (!bad)
        bad = matrix(&c);
    if (!bad)
        bad = ordering(&c);
    if (!bad)
        bad = stream(&c);
    if (rank == 0)
        printf("%d ranks%s%s%s%s: %ld cases, %ld on the flat path: %s\n", nranks,
               a->algo ? ", ECCL_ALGO=" : "", a->algo ? a->algo : "",
               a->max_env ? ", ECCL_FLAT_MAX_BYTES=" : "", a->max_env ? a->max_env : "", c.cases,
               c.flat_calls, bad ? "FAILED" : "ok");
    if (bad) {
        ecclCommAbort(c.comm);
    } else if (ecclCommFinalize(c.comm) != ecclSuccess || ecclCommDestroy(c.comm) != ecclSuccess) {
        printf("FAIL rank %d: finalize/destroy: %s\n", rank, ecclGetLastError(NULL));
        bad = 1;
    }
    free(c.send);
    free(c.recv);
    return bad;
}

static void run_with(int nranks, struct run_arg *a)
{
    struct mp_opts o = {
        .nranks = nranks, .fn = rank_main, .arg = a, .timeout_ms = 50000, .fail_fast = true};
    assert_int_equal(mp_run_opts(&o, NULL), 0);
}

static void run(int nranks, const char *algo)
{
    struct run_arg a = {.algo = algo, .segment = true, .flat_max = algo ? 0 : MAX_BYTES};
    run_with(nranks, &a);
}

static void test_flat_2(void **state)
{
    (void)state;
    run(2, NULL);
}

static void test_flat_3(void **state)
{
    (void)state;
    run(3, NULL);
}

static void test_flat_4(void **state)
{
    (void)state;
    run(4, NULL);
}

static void test_algo_ring(void **state)
{
    (void)state;
    run(3, "ring");
}

/* A smaller ECCL_FLAT_MAX_BYTES on every rank (not a multiple of 8): larger calls take the
 * ring. */
static void test_max_bytes(void **state)
{
    (void)state;
    struct run_arg a = {.max_env = "1001", .max_env_rank = -1, .segment = true, .flat_max = 1001};
    run_with(2, &a);
}

/* Ranks that disagree on ECCL_FLAT_MAX_BYTES: no rank has a segment, every call is right. */
static void test_disagree(void **state)
{
    (void)state;
    struct run_arg a = {.max_env = "4096", .max_env_rank = 1, .segment = false, .flat_max = 0};
    run_with(3, &a);
}

int main(void)
{
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_2),    cmocka_unit_test(test_flat_3),
        cmocka_unit_test(test_flat_4),    cmocka_unit_test(test_algo_ring),
        cmocka_unit_test(test_max_bytes), cmocka_unit_test(test_disagree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

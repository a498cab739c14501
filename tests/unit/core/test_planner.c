/*
 * test_planner.c - the planner is a function of the call sequence: ranks that make the same
 * collective calls (with their own buffers and their own point-to-point calls mixed in) get
 * byte-identical collective work and equal plan fingerprints; collectives are drained before
 * p2p work, plans respect the work budget, and pieces go to the least-loaded channel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "core/core_int.h"

#define NRANKS   4
#define MAXPLANS 64

struct fake {
    struct ecclComm comm;
    struct eccl_queue plans;
    char bufs[2][64]; /* stand-ins for user buffers: only their addresses matter */
};

static void fake_init(struct fake *f, int rank, int nchannels)
{
    memset(f, 0, sizeof(*f));
    struct ecclComm *c = &f->comm;
    c->rank = rank;
    c->nranks = NRANKS;
    c->nchannels = nchannels;
    eccl_memstack_init(&c->stack, 65536, "test-plan-stack");
    eccl_pool_init(&c->plan_pool, sizeof(struct core_plan), 8, "test-plan-pool");
    eccl_pool_init(&c->task_pool, sizeof(struct core_task), 64, "test-plan-tasks");
    eccl_queue_init(&c->coll_tasks);
    eccl_queue_init(&c->p2p_tasks);
    eccl_queue_init(&f->plans);
    assert_int_equal(eccl_memstack_push(&c->stack), ecclSuccess);
}

static void fake_fini(struct fake *f)
{
    struct ecclComm *c = &f->comm;
    struct eccl_qnode *q;
    while ((q = eccl_queue_pop(&f->plans)) != NULL)
        eccl_pool_put(&c->plan_pool, eccl_container_of(q, struct core_plan, node));
    while ((q = eccl_queue_pop(&c->coll_tasks)) != NULL)
        eccl_pool_put(&c->task_pool, eccl_container_of(q, struct core_task, node));
    while ((q = eccl_queue_pop(&c->p2p_tasks)) != NULL)
        eccl_pool_put(&c->task_pool, eccl_container_of(q, struct core_task, node));
    eccl_memstack_pop(&c->stack);
    eccl_memstack_fini(&c->stack);
    eccl_pool_fini(&c->plan_pool);
    eccl_pool_fini(&c->task_pool);
}

static void add(struct fake *f, int func, size_t count, int dtype, int root)
{
    struct core_task *t = eccl_pool_get(&f->comm.task_pool);
    assert_non_null(t);
    t->func = (uint8_t)func;
    t->dtype = (uint8_t)dtype;
    t->op.kind = ECCL_RED_SUM;
    t->op.dtype = (uint8_t)dtype;
    t->root = root;
    t->count = count;
    t->sendbuff = f->bufs[0];
    t->recvbuff = f->bufs[1];
    if (func == ECCL_FUNC_SEND || func == ECCL_FUNC_RECV)
        eccl_queue_push(&f->comm.p2p_tasks, &t->node);
    else
        eccl_queue_push(&f->comm.coll_tasks, &t->node);
}

/* The same collective calls on every rank, interleaved with rank-specific p2p calls. */
static void add_calls(struct fake *f, int rank)
{
    int n = NRANKS;
    add(f, ECCL_FUNC_ALLREDUCE, 1 << 20, ecclFloat32, 0);
    for (int i = 0; i <= rank; i++)
        add(f, ECCL_FUNC_SEND, 100 + (size_t)rank, ecclInt8, (rank + 1 + i) % n);
    add(f, ECCL_FUNC_BROADCAST, 12345, ecclFloat16, 2);
    add(f, ECCL_FUNC_RECV, 77, ecclInt8, (rank + n - 1) % n);
    for (int i = 0; i < 5; i++)
        add(f, ECCL_FUNC_ALLGATHER, 3000 * (size_t)(i + 1), ecclInt32, 0);
    add(f, ECCL_FUNC_REDUCESCATTER, 1 << 18, ecclBfloat16, 0);
    add(f, ECCL_FUNC_RECV, 55, ecclInt8, rank);
    add(f, ECCL_FUNC_SEND, 55, ecclInt8, rank);
    add(f, ECCL_FUNC_REDUCE, 999, ecclFloat64, 3);
}

struct summary {
    int nplans;
    int coll_plans;
    uint64_t fp[MAXPLANS];
    int ncollwork[MAXPLANS];
    struct eccl_work coll[MAXPLANS][64];
};

static void summarize(struct fake *f, struct summary *s, size_t budget)
{
    memset(s, 0, sizeof(*s));
    for (struct eccl_qnode *q = f->plans.head; q; q = q->next) {
        struct core_plan *p = eccl_container_of(q, struct core_plan, node);
        assert_true(s->nplans < MAXPLANS);
        int total = 0;
        for (int c = 0; c < p->nchannels; c++) {
            bool seen_p2p = false;
            for (int i = 0; i < p->nwork[c]; i++) {
                struct eccl_work w = p->work[c][i];
                total++;
                bool is_p2p = w.func == ECCL_FUNC_SEND || w.func == ECCL_FUNC_RECV;
                if (is_p2p) {
                    seen_p2p = true;
                    continue;
                }
                assert_false(seen_p2p); /* collectives first in every channel */
                assert_int_equal(w.channel, c);
                w.sendbuff = w.recvbuff = 0;
                assert_true(s->ncollwork[s->nplans] < 64);
                s->coll[s->nplans][s->ncollwork[s->nplans]++] = w;
            }
        }
        assert_true((size_t)total <= budget);
        if (p->ncoll > 0) {
            s->coll_plans++;
            /* A plan with collectives comes before every p2p-only plan. */
            assert_int_equal(s->coll_plans, s->nplans + 1);
        }
        s->fp[s->nplans] = p->fingerprint;
        s->nplans++;
    }
}

static void check_identical(size_t budget, int nchannels)
{
    static struct summary sum[NRANKS];
    for (int r = 0; r < NRANKS; r++) {
        struct fake *f = eccl_calloc(1, sizeof(*f), "test-fake");
        assert_non_null(f);
        fake_init(f, r, nchannels);
        add_calls(f, r);
        assert_int_equal(
            core_plan_build(&f->comm, &f->comm.coll_tasks, &f->comm.p2p_tasks, budget, &f->plans),
            ecclSuccess);
        summarize(f, &sum[r], budget);
        fake_fini(f);
        eccl_free(f);
    }
    for (int r = 1; r < NRANKS; r++) {
        assert_int_equal(sum[r].coll_plans, sum[0].coll_plans);
        for (int p = 0; p < sum[0].coll_plans; p++) {
            assert_int_equal(sum[r].fp[p], sum[0].fp[p]);
            assert_int_equal(sum[r].ncollwork[p], sum[0].ncollwork[p]);
            assert_memory_equal(sum[r].coll[p], sum[0].coll[p],
                                sizeof(struct eccl_work) * (size_t)sum[0].ncollwork[p]);
        }
    }
    assert_true(sum[0].coll_plans >= 1);
}

/* Hosts A B A C B: ring 0 2 | 1 4 | 3 — each host's ranks contiguous, hosts by lowest rank. */
static void test_ring_hosts_contiguous(void **state)
{
    (void)state;
    const uint64_t hosts[] = {10, 20, 10, 30, 20};
    int ring[5];
    core_plan_ring(hosts, 5, ring);
    const int want[] = {0, 2, 1, 4, 3};
    for (int i = 0; i < 5; i++)
        assert_int_equal(ring[i], want[i]);
    /* One host: identity. */
    const uint64_t one[] = {7, 7, 7, 7};
    core_plan_ring(one, 4, ring);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ring[i], i);
    /* Crossings: count ring edges between different hosts = number of hosts. */
    const uint64_t many[] = {1, 2, 3, 1, 2, 3, 1, 2, 3};
    int r9[9];
    core_plan_ring(many, 9, r9);
    int crossings = 0;
    for (int i = 0; i < 9; i++)
        crossings += many[r9[i]] != many[r9[(i + 1) % 9]];
    assert_int_equal(crossings, 3);
}

static void test_identical_one_plan(void **state)
{
    (void)state;
    check_identical(1 << 16, 4);
}

static void test_identical_small_budget(void **state)
{
    (void)state;
    /* A budget of 3 descriptors splits the group into many plans; still identical. */
    check_identical(3, 4);
    check_identical(1, 2);
    check_identical(5, 1);
}

static void test_least_loaded_channels(void **state)
{
    (void)state;
    struct fake *f = eccl_calloc(1, sizeof(*f), "test-fake");
    fake_init(f, 0, 4);
    /* One big AllReduce spread over all 4 channels, then small ones fill the least loaded,
     * ties to the lowest index. */
    add(f, ECCL_FUNC_ALLREDUCE, 4 << 20, ecclFloat32, 0);
    add(f, ECCL_FUNC_ALLREDUCE, 10, ecclFloat32, 0);
    add(f, ECCL_FUNC_ALLREDUCE, 10, ecclFloat32, 0);
    assert_int_equal(
        core_plan_build(&f->comm, &f->comm.coll_tasks, &f->comm.p2p_tasks, 1000, &f->plans),
        ecclSuccess);
    assert_int_equal(f->plans.len, 1);
    struct core_plan *p = eccl_container_of(f->plans.head, struct core_plan, node);
    assert_int_equal(p->nwork[0], 2);
    assert_int_equal(p->nwork[1], 2);
    assert_int_equal(p->nwork[2], 1);
    assert_int_equal(p->nwork[3], 1);
    /* The pieces of the big one cover it exactly. */
    uint64_t covered = 0;
    for (int c = 0; c < 4; c++)
        covered += p->work[c][0].chan_count;
    assert_int_equal(covered, 4 << 20);
    fake_fini(f);
    eccl_free(f);
}

static void test_different_calls_differ(void **state)
{
    (void)state;
    /* The fingerprint tells a mismatched collective apart. */
    uint64_t fp[2];
    for (int r = 0; r < 2; r++) {
        struct fake *f = eccl_calloc(1, sizeof(*f), "test-fake");
        fake_init(f, r, 2);
        add(f, ECCL_FUNC_ALLREDUCE, r == 0 ? 1000 : 1001, ecclFloat32, 0);
        assert_int_equal(
            core_plan_build(&f->comm, &f->comm.coll_tasks, &f->comm.p2p_tasks, 100, &f->plans),
            ecclSuccess);
        fp[r] = eccl_container_of(f->plans.head, struct core_plan, node)->fingerprint;
        fake_fini(f);
        eccl_free(f);
    }
    assert_true(fp[0] != fp[1]);
}

/* The one work of the plan of a single collective of `count` floats on a fake communicator with
 * the given protocol agreement; returns its protocol and how many channels got a piece. */
static int plan_one(const struct core_transport *tp, size_t count, int *nparts)
{
    struct fake *f = eccl_calloc(1, sizeof(*f), "test-fake");
    assert_non_null(f);
    fake_init(f, 0, 8);
    f->comm.tp = *tp;
    add(f, ECCL_FUNC_ALLREDUCE, count, ecclFloat32, 0);
    assert_int_equal(
        core_plan_build(&f->comm, &f->comm.coll_tasks, &f->comm.p2p_tasks, 1000, &f->plans),
        ecclSuccess);
    assert_int_equal(f->plans.len, 1);
    struct core_plan *p = eccl_container_of(f->plans.head, struct core_plan, node);
    int proto = -1;
    *nparts = 0;
    for (int c = 0; c < p->nchannels; c++) {
        *nparts += p->nwork[c];
        for (int i = 0; i < p->nwork[c]; i++) {
            if (proto >= 0)
                assert_int_equal(p->work[c][i].proto, proto); /* one protocol per operation */
            proto = p->work[c][i].proto;
        }
    }
    fake_fini(f);
    eccl_free(f);
    return proto;
}

static void test_protocol_choice(void **state)
{
    (void)state;
    struct core_transport tp;
    memset(&tp, 0, sizeof(tp));
    int n = 0;
    /* No agreement on LL (host communicators, P2P off somewhere): Simple at every size. */
    tp.simple_ok = true;
    tp.ll_threshold = UINT64_MAX;
    assert_int_equal(plan_one(&tp, 2, &n), ECCL_PROTO_SIMPLE);
    assert_int_equal(n, 1);
    /* LL agreed: LL up to the default threshold (ranks x half the LL lines of a slot: 4 x 32 KiB
     * here), Simple above. */
    tp.ll_ok = true;
    tp.ll_bytes = 65536;
    assert_int_equal(core_ll_default_threshold(NRANKS, tp.ll_bytes), 4 * 32768);
    assert_int_equal(plan_one(&tp, 2, &n), ECCL_PROTO_LL);
    assert_int_equal(plan_one(&tp, 4 * 32768 / 4, &n), ECCL_PROTO_LL);
    assert_int_equal(n, 1); /* both protocols: a channel per 256 KiB */
    assert_int_equal(plan_one(&tp, 4 * 32768 / 4 + 1, &n), ECCL_PROTO_SIMPLE);
    assert_int_equal(n, 1);
    /* ECCL_LL_THRESHOLD agreed at 1 KiB. */
    tp.ll_threshold = 1024;
    assert_int_equal(plan_one(&tp, 256, &n), ECCL_PROTO_LL);
    assert_int_equal(plan_one(&tp, 257, &n), ECCL_PROTO_SIMPLE);
    /* Simple excluded: LL at every size. */
    tp.simple_ok = false;
    assert_int_equal(plan_one(&tp, 1 << 20, &n), ECCL_PROTO_LL);
    assert_int_equal(n, 8);
    /* LL128 agreed too: LL up to LL's threshold, LL128 above it up to LL128's (by default ranks
     * x 2 MiB for AllReduce: 8 MiB here), Simple above. */
    tp.simple_ok = true;
    tp.ll_threshold = UINT64_MAX;
    tp.ll128_ok = true;
    tp.ll128_threshold = UINT64_MAX;
    assert_int_equal(core_ll128_default_threshold(ECCL_FUNC_ALLREDUCE, NRANKS), 8 << 20);
    assert_int_equal(plan_one(&tp, 4 * 32768 / 4, &n), ECCL_PROTO_LL);
    assert_int_equal(plan_one(&tp, 4 * 32768 / 4 + 1, &n), ECCL_PROTO_LL128);
    assert_int_equal(plan_one(&tp, (8 << 20) / 4, &n), ECCL_PROTO_LL128);
    assert_int_equal(plan_one(&tp, (8 << 20) / 4 + 1, &n), ECCL_PROTO_SIMPLE);
    /* ECCL_LL128_THRESHOLD agreed at 1 MiB. */
    tp.ll128_threshold = 1 << 20;
    assert_int_equal(plan_one(&tp, (1 << 20) / 4, &n), ECCL_PROTO_LL128);
    assert_int_equal(plan_one(&tp, (1 << 20) / 4 + 1, &n), ECCL_PROTO_SIMPLE);
    /* Without LL: LL128 from the smallest size, but never with the tree (AllReduce of 4 ranks
     * up to ECCL_TREE_THRESHOLD, 64 KiB): Simple there. */
    tp.ll_ok = false;
    assert_int_equal(plan_one(&tp, 2, &n), ECCL_PROTO_SIMPLE);
    assert_int_equal(plan_one(&tp, 65536 / 4 + 1, &n), ECCL_PROTO_LL128);
    /* The defaults of the other collectives: AllGather and ReduceScatter count every rank's
     * block, as nccl-tests does; Broadcast and Reduce (chains) never take LL128 by default. */
    assert_int_equal(core_proto_bytes(ECCL_FUNC_ALLGATHER, 1000, NRANKS), 4000);
    assert_int_equal(core_proto_bytes(ECCL_FUNC_REDUCESCATTER, 1000, NRANKS), 4000);
    assert_int_equal(core_proto_bytes(ECCL_FUNC_BROADCAST, 1000, NRANKS), 1000);
    assert_int_equal(core_ll128_default_threshold(ECCL_FUNC_ALLGATHER, 2), 128 << 10);
    assert_int_equal(core_ll128_default_threshold(ECCL_FUNC_REDUCESCATTER, 8), 49 * (128 << 10));
    assert_int_equal(core_ll128_default_threshold(ECCL_FUNC_BROADCAST, 8), 0);
    assert_int_equal(core_ll128_default_threshold(ECCL_FUNC_ALLREDUCE, 64), 16 << 20);
    /* Simple excluded: LL up to its threshold, LL128 above at every size. */
    tp.ll_ok = true;
    tp.simple_ok = false;
    assert_int_equal(plan_one(&tp, 4 * 32768 / 4, &n), ECCL_PROTO_LL);
    assert_int_equal(plan_one(&tp, (64 << 20) / 4, &n), ECCL_PROTO_LL128);
    tp.ll128_ok = false;
    /* ECCL_MIN_NCHANNELS: at least that many pieces, at most the communicator's channels. */
    tp.ll_ok = false;
    tp.simple_ok = true;
    tp.min_nchannels = 4;
    assert_int_equal(plan_one(&tp, 4096, &n), ECCL_PROTO_SIMPLE);
    assert_int_equal(n, 4);
    tp.min_nchannels = 64;
    plan_one(&tp, 4096, &n);
    assert_int_equal(n, 8);
}

static void test_proto_parse(void **state)
{
    (void)state;
    const uint32_t S = 1u << ECCL_PROTO_SIMPLE, L = 1u << ECCL_PROTO_LL,
                   L128 = 1u << ECCL_PROTO_LL128;
    uint32_t m = 0;
    assert_int_equal(core_proto_parse(NULL, &m), ecclSuccess);
    assert_int_equal(m, S | L | L128);
    assert_int_equal(core_proto_parse("", &m), ecclSuccess);
    assert_int_equal(m, S | L | L128);
    assert_int_equal(core_proto_parse("LL", &m), ecclSuccess);
    assert_int_equal(m, L);
    assert_int_equal(core_proto_parse("simple,ll", &m), ecclSuccess);
    assert_int_equal(m, S | L);
    assert_int_equal(core_proto_parse("^LL128", &m), ecclSuccess);
    assert_int_equal(m, S | L);
    assert_int_equal(core_proto_parse("^ll,Simple", &m), ecclSuccess);
    assert_int_equal(m, L128);
    assert_int_equal(core_proto_parse("LL,", &m), ecclSuccess);
    assert_int_equal(m, L);
    assert_int_equal(core_proto_parse("LL12", &m), ecclInvalidArgument);
    assert_int_equal(core_proto_parse("Simple,,LL", &m), ecclInvalidArgument);
    assert_int_equal(core_proto_parse("allreduce:LL", &m), ecclInvalidArgument);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_hosts_contiguous),
        cmocka_unit_test(test_identical_one_plan),
        cmocka_unit_test(test_identical_small_budget),
        cmocka_unit_test(test_least_loaded_channels),
        cmocka_unit_test(test_different_calls_differ),
        cmocka_unit_test(test_protocol_choice),
        cmocka_unit_test(test_proto_parse),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (eccl_alloc_live_blocks(NULL) != 0) {
        eccl_alloc_report();
        return 1;
    }
    return rc;
}

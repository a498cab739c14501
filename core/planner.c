/*
 * planner.c - from a group's tasks to plans of work descriptors.
 *
 * The plan depends only on the sequence of calls and on the communicator's shape (ranks,
 * channels), never on timing or addresses, so every rank computes the same plan for the same
 * calls. Collective tasks are drained first, point-to-point tasks after them: p2p work differs by
 * rank, and a plan cut after p2p work could then put the next collective in a different plan on
 * different ranks. Each collective is split into pieces spread over the least-loaded channels
 * (ties to the lowest index). A plan holds at most `budget` descriptors (half the work FIFO);
 * persistent plans pass SIZE_MAX.
 *
 * Point-to-point tasks are ordered by NCCL's rounds: in round d a rank sends to rank + d and
 * receives from rank - d, so a send and its matching receive are in the same round on both
 * sides; plans are cut only between rounds, which keeps matching operations in plans that can
 * run at the same time.
 */
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "core/core_int.h"

ECCL_PARAM_STR(algo, "ECCL_ALGO", NULL)
ECCL_PARAM_INT(tree_threshold, "ECCL_TREE_THRESHOLD", 64 * 1024)
ECCL_PARAM_INT(min_chan_bytes, "ECCL_MIN_CHANNEL_BYTES", 256 * 1024)

/* The planner's parameters, read once per thread and parameter generation: a parameter read
 * takes a lock and a search, too much for every call of a small collective. */
struct plan_params {
    uint64_t gen; /* eccl_param_generation() when read; 0: never */
    const char *algo;
    int64_t tree_threshold;
    int64_t min_chan_bytes;
};

static const struct plan_params *plan_params_get(void)
{
    static _Thread_local struct plan_params pp;
    uint64_t gen = eccl_param_generation();
    if (pp.gen != gen) {
        pp.algo = eccl_param_algo();
        pp.tree_threshold = eccl_param_tree_threshold();
        pp.min_chan_bytes = eccl_param_min_chan_bytes();
        pp.gen = gen;
    }
    return &pp;
}

/* The fingerprint's hash of one descriptor, eight bytes a step (hashing the 64 bytes one at a
 * time cost more than the rest of planning a small collective). */
static uint64_t work_hash(const struct eccl_work *w, uint64_t h)
{
    uint64_t words[sizeof(*w) / 8];
    memcpy(words, w, sizeof(words));
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(words); i++)
        h = eccl_hash_mix(h ^ (words[i] + 0x9e3779b97f4a7c15ULL * (i + 1)));
    return h;
}

void core_plan_ring(const uint64_t *host_hash, int nranks, int *ring)
{
    int k = 0;
    for (int i = 0; i < nranks; i++) {
        bool first = true;
        for (int j = 0; j < i && first; j++)
            first = host_hash[j] != host_hash[i];
        if (!first)
            continue;
        for (int j = i; j < nranks; j++)
            if (host_hash[j] == host_hash[i])
                ring[k++] = j;
    }
}

void core_plan_tree(int nranks, int pos, int *parent, int child[2])
{
    *parent = pos == 0 ? -1 : (pos - 1) / 2;
    child[0] = 2 * pos + 1 < nranks ? 2 * pos + 1 : -1;
    child[1] = 2 * pos + 2 < nranks ? 2 * pos + 2 : -1;
}

int core_p2p_channel(const struct ecclComm *comm, int peer)
{
    /* Send to rank + d and receive from rank - d use the same channel on both sides. */
    int d = (peer - comm->rank + comm->nranks) % comm->nranks;
    int dr = (comm->rank - peer + comm->nranks) % comm->nranks;
    int m = d < dr ? d : dr; /* symmetric: the same value seen from either side */
    return m % comm->nchannels;
}

/* LL (flag-in-data lines, no hand-over through host memory) for the latency-bound sizes, LL128
 * (128-byte lines, ring algorithms only) above them, Simple above LL128's threshold: each where
 * the ranks all agreed on it at init. With Simple excluded (ECCL_PROTO), LL up to its threshold
 * and LL128 above, or whichever of the two is there. `bytes`: core_proto_bytes. */
static int pick_proto(const struct ecclComm *comm, int func, uint64_t bytes, int algo)
{
    const struct core_transport *tp = &comm->tp;
    bool ll = tp->ll_ok, ll128 = tp->ll128_ok && algo == ECCL_ALGO_RING;
    if (!ll && !ll128)
        return ECCL_PROTO_SIMPLE;
    uint64_t limit = tp->ll_threshold;
    if (limit == UINT64_MAX) /* ECCL_LL_THRESHOLD unset */
        limit = core_ll_default_threshold(comm->nranks, tp->ll_bytes);
    uint64_t limit128 = tp->ll128_threshold;
    if (limit128 == UINT64_MAX) /* ECCL_LL128_THRESHOLD unset */
        limit128 = core_ll128_default_threshold(func, comm->nranks);
    if (!tp->simple_ok) {
        if (ll && (!ll128 || bytes <= limit))
            return ECCL_PROTO_LL;
        return ll128 ? ECCL_PROTO_LL128 : ECCL_PROTO_SIMPLE;
    }
    if (ll && bytes <= limit)
        return ECCL_PROTO_LL;
    if (ll128 && bytes <= limit128)
        return ECCL_PROTO_LL128;
    return ECCL_PROTO_SIMPLE;
}

const char *core_plan_algo(void)
{
    return plan_params_get()->algo;
}

static int pick_algo(const struct ecclComm *comm, const struct core_task *t, size_t bytes)
{
    if (t->func != ECCL_FUNC_ALLREDUCE || comm->nranks <= 2)
        return ECCL_ALGO_RING;
    const struct plan_params *pp = plan_params_get();
    const char *a = pp->algo;
    if (a && strcasecmp(a, "tree") == 0)
        return ECCL_ALGO_TREE;
    if (a && strcasecmp(a, "ring") == 0)
        return ECCL_ALGO_RING;
    return bytes <= (size_t)pp->tree_threshold ? ECCL_ALGO_TREE : ECCL_ALGO_RING;
}

struct plan_builder {
    struct ecclComm *comm;
    struct eccl_queue *plans;
    struct core_plan *cur;
    size_t budget;
    size_t cap;   /* descriptors each channel array can hold */
    size_t nwork; /* descriptors in cur */
    uint64_t load[CORE_MAX_CHANNELS];
};

static ecclResult_t plan_open(struct plan_builder *b)
{
    struct ecclComm *comm = b->comm;
    struct core_plan *p = eccl_pool_get(&comm->plan_pool);
    if (!p)
        return ecclSystemError;
    p->comm = comm;
    p->nchannels = comm->nchannels;
    p->fingerprint = eccl_hash64(&comm->plans_launched, sizeof(comm->plans_launched), 0);
    for (int c = 0; c < comm->nchannels; c++) {
        p->work[c] = eccl_memstack_alloc(&comm->stack, b->cap * sizeof(struct eccl_work), 64);
        if (!p->work[c]) {
            eccl_pool_put(&comm->plan_pool, p);
            return ecclSystemError;
        }
    }
    memset(b->load, 0, sizeof(b->load));
    b->nwork = 0;
    b->cur = p;
    eccl_queue_push(b->plans, &p->node);
    return ecclSuccess;
}

static ecclResult_t plan_reserve(struct plan_builder *b, size_t n)
{
    if (b->cur && b->nwork > 0 && b->nwork + n > b->budget)
        b->cur = NULL;
    if (!b->cur)
        ECCL_TRY(plan_open(b));
    return ecclSuccess;
}

static int least_loaded(const struct plan_builder *b)
{
    int best = 0;
    for (int c = 1; c < b->comm->nchannels; c++)
        if (b->load[c] < b->load[best])
            best = c;
    return best;
}

static void add_work(struct plan_builder *b, int c, const struct eccl_work *w, uint64_t load)
{
    struct core_plan *p = b->cur;
    p->work[c][p->nwork[c]++] = *w;
    b->load[c] += load;
    b->nwork++;
}

static ecclResult_t plan_coll(struct plan_builder *b, const struct core_task *t)
{
    struct ecclComm *comm = b->comm;
    size_t ts = eccl_dtype_size(t->dtype);
    size_t bytes = t->count * ts;
    int algo = pick_algo(comm, t, bytes);
    int proto = pick_proto(comm, t->func, core_proto_bytes(t->func, bytes, comm->nranks), algo);
    /* The same split for every protocol: with LL lines holding at least half a Simple step of an
     * operation up to the LL threshold, and LL128 lines a whole one, an element meets the same
     * ranks in the same order. */
    size_t min_bytes = (size_t)ECCL_MAX(plan_params_get()->min_chan_bytes, 4096);
    size_t nparts = ECCL_MAX((size_t)1, bytes / min_bytes);
    nparts = ECCL_MAX(nparts, (size_t)comm->tp.min_nchannels);
    nparts = ECCL_MIN((size_t)comm->nchannels, nparts);
    nparts = ECCL_MIN(nparts, b->budget);
    ECCL_TRY(plan_reserve(b, nparts));
    struct core_plan *p = b->cur;
    struct eccl_work w;
    memset(&w, 0, sizeof(w));
    w.func = t->func;
    w.algo = (uint8_t)algo;
    w.proto = (uint8_t)proto;
    w.dtype = t->dtype;
    w.redop = t->op.kind;
    w.root = t->root;
    w.op_index = (uint32_t)p->ncoll;
    w.count = t->count;
    w.scalar = t->op.scalar;
    /* Pieces aligned to 64 bytes where the type allows it. */
    size_t align = ts && 64 % ts == 0 ? 64 / ts : 1;
    size_t piece = ECCL_ALIGN_UP(ECCL_DIV_UP(t->count, nparts), align);
    for (size_t off = 0, i = 0; i < nparts && off < t->count; i++, off += piece) {
        int c = least_loaded(b);
        w.channel = (uint8_t)c;
        w.chan_offset = off;
        w.chan_count = ECCL_MIN(piece, t->count - off);
        w.flags = (off + piece >= t->count) ? ECCL_WORK_FLAG_LAST : 0;
        /* The fingerprint covers everything but addresses and the PreMulSum scalar, which each
         * rank has its own of (or its address). */
        w.scalar = 0;
        p->fingerprint = work_hash(&w, p->fingerprint);
        w.scalar = t->op.scalar;
        w.sendbuff = (uint64_t)(uintptr_t)t->sendbuff;
        w.recvbuff = (uint64_t)(uintptr_t)t->recvbuff;
        if ((const void *)t->sendbuff == (const void *)t->recvbuff)
            w.flags |= ECCL_WORK_FLAG_INPLACE;
        if (t->op.scalar_ptr)
            w.flags |= ECCL_WORK_FLAG_SCALAR_PTR;
        add_work(b, c, &w, w.chan_count * ts);
        w.sendbuff = w.recvbuff = 0;
    }
    p->ncoll++;
    return ecclSuccess;
}

static int p2p_round(const struct ecclComm *comm, const struct core_task *t)
{
    int n = comm->nranks;
    return t->func == ECCL_FUNC_SEND ? (t->root - comm->rank + n) % n
                                     : (comm->rank - t->root + n) % n;
}

static ecclResult_t plan_p2p(struct plan_builder *b, struct eccl_queue *p2p)
{
    struct ecclComm *comm = b->comm;
    int n = comm->nranks;
    size_t ntask = p2p->len;
    if (ntask == 0)
        return ecclSuccess;
    /* Bucket by round, keeping the order of calls inside a round. */
    struct core_task **sorted =
        eccl_memstack_alloc(&comm->stack, ntask * sizeof(*sorted), sizeof(void *));
    size_t *first = eccl_memstack_alloc(&comm->stack, ((size_t)n + 1) * sizeof(*first), 8);
    if (!sorted || !first)
        return ecclSystemError;
    for (struct eccl_qnode *q = p2p->head; q; q = q->next)
        first[p2p_round(comm, eccl_container_of(q, struct core_task, node)) + 1]++;
    for (int r = 0; r < n; r++)
        first[r + 1] += first[r];
    for (struct eccl_qnode *q = p2p->head; q; q = q->next) {
        struct core_task *t = eccl_container_of(q, struct core_task, node);
        sorted[first[p2p_round(comm, t)]++] = t;
    }
    /* first[r] now holds the end of round r. */
    size_t i = 0;
    for (int r = 0; r < n; r++) {
        size_t end = first[r];
        if (i == end)
            continue;
        size_t in_round = 0;
        for (size_t j = i; j < end; j++)
            in_round += sorted[j]->count > 0;
        if (in_round)
            ECCL_TRY(plan_reserve(b, ECCL_MIN(in_round, b->budget)));
        for (; i < end; i++) {
            const struct core_task *t = sorted[i];
            if (t->count == 0)
                continue;
            if (b->nwork >= b->budget)
                ECCL_TRY(plan_reserve(b, 1)); /* a round larger than a whole plan */
            struct eccl_work w;
            memset(&w, 0, sizeof(w));
            w.func = t->func;
            w.dtype = t->dtype;
            w.root = t->root;
            w.count = t->count;
            w.chan_count = t->count;
            w.flags = ECCL_WORK_FLAG_LAST;
            w.sendbuff = (uint64_t)(uintptr_t)t->sendbuff;
            w.recvbuff = (uint64_t)(uintptr_t)t->recvbuff;
            int c = t->root == comm->rank ? 0 : core_p2p_channel(comm, t->root);
            w.channel = (uint8_t)c;
            size_t bytes = t->count * eccl_dtype_size(t->dtype);
            core_reg_p2p_work(comm, &w, bytes);
            add_work(b, c, &w, bytes);
        }
    }
    return ecclSuccess;
}

ecclResult_t core_plan_build(struct ecclComm *comm, struct eccl_queue *coll, struct eccl_queue *p2p,
                             size_t budget, struct eccl_queue *plans)
{
    struct plan_builder b;
    memset(&b, 0, sizeof(b));
    b.comm = comm;
    b.plans = plans;
    b.budget = budget ? budget : 1;
    size_t total = p2p->len;
    for (struct eccl_qnode *q = coll->head; q; q = q->next)
        total += (size_t)comm->nchannels;
    b.cap = ECCL_MAX((size_t)1, ECCL_MIN(total, b.budget));

    for (struct eccl_qnode *q = coll->head; q; q = q->next) {
        struct core_task *t = eccl_container_of(q, struct core_task, node);
        if (t->count == 0)
            continue;
        ECCL_TRY(plan_coll(&b, t));
    }
    /* Point-to-point work never shares a plan with collective work that follows it, since
     * collectives come first; it may share the last collective plan. */
    ECCL_TRY(plan_p2p(&b, p2p));
    return ecclSuccess;
}

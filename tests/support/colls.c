/*
 * colls.c - the collective correctness matrix (see colls.h).
 *
 * Each case lays out its buffers in per-rank arenas: every allocation has 64 guard bytes on both
 * sides and starts 0-3 elements past an aligned address. Before the call the whole allocation
 * (guards included) is snapshotted; after it, every byte outside the result must equal the
 * snapshot (const send buffers, untouched parts of receive buffers, guards) and every result
 * element must equal the reference (or be within td_tolerance of it).
 *
 * Values and references come from td_gen rows (tests/support/data.h): filling is memcpy and
 * checking is memcmp, with an element-wise comparison in double only where bytes differ or a
 * tolerance applies.
 */
#include "tests/support/colls.h"

#include <inttypes.h>
#include <stdint.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tests/support/data.h"
#include "tests/support/mp.h"

#define GUARD       64
#define MAX_PRINTED 20
#define NSIZES      5

struct tc_shared {
    _Atomic long cases;    /* per run, counted by rank 0 */
    _Atomic long failures; /* failed (case, rank) pairs */
    _Atomic long stopped;  /* ranks that stopped early on an error */
    _Atomic long skipped;  /* cases rank 0 left out by --quick */
};

static const char *const coll_names[TC_NUM_COLLS] = {
    "AllReduce", "Broadcast", "Reduce", "AllGather", "ReduceScatter",
    "SendRecv",  "AlltoAll",  "Gather", "Scatter",
};

const char *tc_coll_name(int coll)
{
    return coll >= 0 && coll < TC_NUM_COLLS ? coll_names[coll] : "?";
}

size_t tc_large_count(int dtype)
{
    return (size_t)(1u << 20) / td_size(dtype) + 3;
}

static bool coll_reduces(int coll)
{
    return coll == TC_ALLREDUCE || coll == TC_REDUCE || coll == TC_REDUCESCATTER;
}

static bool coll_has_inplace(int coll)
{
    /* NCCL defines no in-place AlltoAll, and send/recv buffers are separate by nature. */
    return coll != TC_ALLTOALL && coll != TC_SENDRECV;
}

static bool coll_rooted(int coll)
{
    return coll == TC_BROADCAST || coll == TC_REDUCE || coll == TC_GATHER || coll == TC_SCATTER;
}

/* ---- filter ------------------------------------------------------------------------------- */

void tc_filter_init(struct tc_filter *f)
{
    memset(f, 0, sizeof(*f));
    f->coll = f->dtype = f->op = f->inplace = f->ranks = -1;
    f->count = -1;
}

static int coll_from_name(const char *s)
{
    for (int c = 0; c < TC_NUM_COLLS; c++) {
        if (strcasecmp(coll_names[c], s) == 0)
            return c;
    }
    return -1;
}

int tc_filter_parse(struct tc_filter *f, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-extras") == 0) {
            f->no_extras = true;
            continue;
        }
        if (strcmp(a, "--only-extras") == 0) {
            f->only_extras = true;
            continue;
        }
        if (strcmp(a, "--quick") == 0) {
            f->quick = true;
            continue;
        }
        if (v == NULL)
            goto usage;
        i++;
        if (strcmp(a, "--coll") == 0 && (f->coll = coll_from_name(v)) >= 0)
            continue;
        if (strcmp(a, "--type") == 0 && (f->dtype = td_type_from_name(v)) >= 0)
            continue;
        if (strcmp(a, "--op") == 0 && (f->op = td_op_from_name(v)) >= 0)
            continue;
        if (strcmp(a, "--count") == 0) {
            f->count = atoll(v);
            continue;
        }
        if (strcmp(a, "--inplace") == 0) {
            f->inplace = atoi(v);
            continue;
        }
        if (strcmp(a, "--ranks") == 0) {
            f->ranks = atoi(v);
            continue;
        }
        goto usage;
    }
    return 0;
usage:
    fprintf(stderr,
            "usage: %s [--ranks N] [--coll NAME] [--type NAME] [--op NAME] "
            "[--count N] [--inplace 0|1] [--no-extras | --only-extras] [--quick]\n"
            "  colls: AllReduce Broadcast Reduce AllGather ReduceScatter SendRecv "
            "AlltoAll Gather Scatter\n"
            "  types: int8 uint8 int32 uint32 int64 uint64 half float double bfloat16 "
            "fp8e4m3 fp8e5m2\n  ops: sum prod max min avg premulsum\n",
            argv[0]);
    return -1;
}

bool tc_filter_ranks(const struct tc_filter *f, int nranks)
{
    return f->ranks < 0 || f->ranks == nranks;
}

/* ---- shared state ------------------------------------------------------------------------- */

struct tc_shared *tc_shared_create(int nranks)
{
    struct tc_shared *sh = mp_shm_alloc(sizeof(*sh));
    if (sh == NULL)
        return NULL;
    (void)nranks;
    return sh;
}

void tc_shared_destroy(struct tc_shared *sh)
{
    if (sh != NULL)
        mp_shm_free(sh, sizeof(*sh));
}

/* ---- one rank ----------------------------------------------------------------------------- */

struct rank_ctx {
    const struct tc_params *p;
    struct tc_shared *sh;
    int rank;
    int n;
    ecclComm_t comm;
    uint8_t *arena[2];
    uint8_t *snap[2];
    size_t arena_bytes;
    long cases;
    long failures;
    long skipped;
    int printed;
    bool stop; /* an API call failed: the communicator cannot be trusted any more */
};

struct region {
    uint8_t *base;           /* first byte of the allocation proper */
    size_t bytes;            /* without the guards */
    uint8_t *snap;           /* copy of [base - GUARD, base + bytes + GUARD) */
    size_t out_off, out_len; /* the result, in elements of the allocation */
    const char *name;
};

struct tc_case {
    int coll, dtype, op, inplace, root, shift;
    size_t count, esize;
    uint64_t seed;
    struct td_gen gen;
    void *sendbuff, *recvbuff;
    size_t send_elems;
    struct region reg[2];
    int nreg;
    struct td_row ref; /* reductions */
    double tol;
};

static void report(struct rank_ctx *x, const struct tc_case *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct rank_ctx *x, const struct tc_case *c, const char *fmt, ...)
{
    x->printed++;
    if (x->printed > MAX_PRINTED) {
        if (x->printed == MAX_PRINTED + 1)
            printf("FAIL [%s nranks=%d rank=%d] (further failures of this rank not printed)\n",
                   x->p->mode, x->n, x->rank);
        return;
    }
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    printf("FAIL [%s nranks=%d rank=%d] %s type=%s op=%s count=%zu inplace=%d root=%d "
           "shift=%d seed=0x%016" PRIx64 ": %s\n"
           "     rerun: --ranks %d --coll %s --type %s --op %s --count %zu --inplace %d\n",
           x->p->mode, x->n, x->rank, tc_coll_name(c->coll), td_type_name(c->dtype),
           td_op_name(c->op), c->count, c->inplace, coll_rooted(c->coll) ? c->root : -1,
           c->coll == TC_SENDRECV ? c->shift : 0, c->seed, what, x->n, tc_coll_name(c->coll),
           td_type_name(c->dtype), c->op >= 0 ? td_op_name(c->op) : "sum", c->count, c->inplace);
    fflush(stdout);
}

static void guard_fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(0xc3 + 7 * i + seed);
}

static uint8_t sentinel(uint64_t seed)
{
    return (uint8_t)(0x5a ^ (seed >> 8));
}

/* Sizes of the buffers and where the result goes, per NCCL's definitions. */
static void case_layout(struct rank_ctx *x, struct tc_case *c)
{
    int r = x->rank, n = x->n;
    size_t cnt = c->count, es = c->esize, nc = (size_t)n * cnt;
    size_t send_n = cnt, recv_n = cnt, send_in = 0, recv_in = 0, alloc_n = cnt, out_len = cnt;
    switch (c->coll) {
    case TC_ALLGATHER:
    case TC_GATHER:
        recv_n = alloc_n = nc;
        send_in = (size_t)r * cnt;
        out_len = c->coll == TC_GATHER && r != c->root ? 0 : nc;
        break;
    case TC_REDUCESCATTER:
    case TC_SCATTER:
        send_n = alloc_n = nc;
        recv_in = (size_t)r * cnt;
        break;
    case TC_ALLTOALL:
        send_n = recv_n = out_len = nc;
        break;
    case TC_REDUCE:
        out_len = r == c->root ? cnt : 0;
        break;
    default:
        break;
    }
    c->send_elems = send_n;
    size_t mis0 = (c->seed % 4) * es, mis1 = ((c->seed >> 2) % 4) * es;
    memset(c->reg, 0, sizeof(c->reg));
    if (c->inplace) {
        struct region *g = &c->reg[0];
        g->base = x->arena[0] + GUARD + mis0;
        g->bytes = alloc_n * es;
        g->snap = x->snap[0];
        g->out_off = recv_in;
        g->out_len = out_len;
        g->name = "buffer";
        c->sendbuff = g->base + send_in * es;
        c->recvbuff = g->base + recv_in * es;
        c->nreg = 1;
    } else {
        struct region *s = &c->reg[0], *d = &c->reg[1];
        s->base = x->arena[0] + GUARD + mis0;
        s->bytes = send_n * es;
        s->snap = x->snap[0];
        s->name = "sendbuff";
        d->base = x->arena[1] + GUARD + mis1;
        d->bytes = recv_n * es;
        d->snap = x->snap[1];
        d->out_len = out_len;
        d->name = "recvbuff";
        c->sendbuff = s->base;
        c->recvbuff = d->base;
        c->nreg = 2;
    }
}

static void case_fill(struct rank_ctx *x, struct tc_case *c)
{
    for (int i = 0; i < c->nreg; i++) {
        struct region *g = &c->reg[i];
        guard_fill(g->base - GUARD, GUARD, c->seed + (uint64_t)i);
        guard_fill(g->base + g->bytes, GUARD, c->seed + 17 + (uint64_t)i);
        memset(g->base, sentinel(c->seed), g->bytes);
    }
    /* A non-root's send buffer of Broadcast and Scatter is ignored: the sentinel in it is as good
     * a check (it must stay, or be overwritten by the result where in place) and costs less. */
    bool ignored = (c->coll == TC_BROADCAST || c->coll == TC_SCATTER) && x->rank != c->root;
    if (!ignored)
        td_gen_fill(&c->gen, c->sendbuff, c->send_elems, x->rank, 0);
}

static void case_snapshot(struct tc_case *c)
{
    for (int i = 0; i < c->nreg; i++) {
        struct region *g = &c->reg[i];
        memcpy(g->snap, g->base - GUARD, g->bytes + 2 * GUARD);
    }
}

/* The first index in [lo, hi) where a and b differ, or SIZE_MAX. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t lo, size_t hi)
{
    if (lo >= hi || memcmp(a + lo, b + lo, hi - lo) == 0)
        return SIZE_MAX;
    for (size_t i = lo; i < hi; i++) {
        if (a[i] != b[i])
            return i;
    }
    return SIZE_MAX;
}

/* Compares the result (out, out_len elements) with what NCCL's definition of the collective
 * says this rank must hold. */
static void compare_result(const struct tc_case *c, int r, int n, const uint8_t *out,
                           size_t out_len, struct td_mismatch *mm)
{
    size_t cnt = c->count, es = c->esize;
    const struct td_row *rows = c->gen.rows;
    switch (c->coll) {
    case TC_ALLREDUCE:
    case TC_REDUCE:
        td_row_compare(&c->ref, c->dtype, out, 0, 0, out_len, c->tol, mm);
        return;
    case TC_REDUCESCATTER:
        td_row_compare(&c->ref, c->dtype, out, 0, (size_t)r * cnt, out_len, c->tol, mm);
        return;
    case TC_BROADCAST:
        td_row_compare(&rows[c->root], c->dtype, out, 0, 0, out_len, 0.0, mm);
        return;
    case TC_SENDRECV:
        td_row_compare(&rows[(r - c->shift + n) % n], c->dtype, out, 0, 0, out_len, 0.0, mm);
        return;
    case TC_SCATTER:
        td_row_compare(&rows[c->root], c->dtype, out, 0, (size_t)r * cnt, out_len, 0.0, mm);
        return;
    case TC_ALLGATHER:
    case TC_GATHER:
    case TC_ALLTOALL:
        /* Block p of the result comes from rank p. */
        for (int p = 0; p < n; p++) {
            size_t index0 = c->coll == TC_ALLTOALL ? (size_t)r * cnt : 0;
            td_row_compare(&rows[p], c->dtype, out + (size_t)p * cnt * es, (size_t)p * cnt, index0,
                           cnt, 0.0, mm);
        }
        return;
    default:
        mm->count++;
        return;
    }
}

static bool value_ok(double got, double want, double tol)
{
    if (tol == 0.0)
        return got == want;
    return fabs(got - want) <= tol;
}

/* Returns true when the case passed on this rank (prints what went wrong otherwise). */
static bool case_verify(struct rank_ctx *x, struct tc_case *c)
{
    bool ok = true;
    size_t es = c->esize;
    for (int i = 0; i < c->nreg; i++) {
        struct region *g = &c->reg[i];
        const uint8_t *now = g->base - GUARD;
        size_t total = g->bytes + 2 * GUARD;
        size_t rb = GUARD + g->out_off * es, re = rb + g->out_len * es;
        size_t b = first_diff(now, g->snap, 0, rb);
        if (b == SIZE_MAX)
            b = first_diff(now, g->snap, re, total);
        if (b != SIZE_MAX) {
            long off = (long)b - GUARD;
            report(x, c,
                   "%s changed outside the result: byte %ld (%s, element %ld) was 0x%02x, is "
                   "0x%02x",
                   g->name, off,
                   off < 0                   ? "guard before"
                   : (size_t)off >= g->bytes ? "guard after"
                                             : "data",
                   off < 0 ? -1 : off / (long)es, g->snap[b], now[b]);
            ok = false;
        }
        if (g->out_len == 0)
            continue;
        struct td_mismatch mm = {0};
        compare_result(c, x->rank, x->n, g->base + g->out_off * es, g->out_len, &mm);
        if (mm.count > 0) {
            report(x, c,
                   "%zu of %zu result elements wrong (tolerance %g), first [%zu] got %.17g "
                   "expected %.17g",
                   mm.count, g->out_len, c->tol, mm.first, mm.got, mm.want);
            ok = false;
        }
    }
    return ok;
}

static ecclRedOp_t builtin_op(int op)
{
    switch (op) {
    case TD_PROD:
        return ecclProd;
    case TD_MAX:
        return ecclMax;
    case TD_MIN:
        return ecclMin;
    case TD_AVG:
        return ecclAvg;
    default:
        return ecclSum;
    }
}

static ecclResult_t case_call(struct rank_ctx *x, struct tc_case *c, ecclRedOp_t op)
{
    ecclComm_t comm = x->comm;
    ecclDataType_t t = (ecclDataType_t)c->dtype;
    size_t cnt = c->count;
    switch (c->coll) {
    case TC_ALLREDUCE:
        return ecclAllReduce(c->sendbuff, c->recvbuff, cnt, t, op, comm, NULL);
    case TC_BROADCAST:
        return ecclBroadcast(c->sendbuff, c->recvbuff, cnt, t, c->root, comm, NULL);
    case TC_REDUCE:
        return ecclReduce(c->sendbuff, c->recvbuff, cnt, t, op, c->root, comm, NULL);
    case TC_ALLGATHER:
        return ecclAllGather(c->sendbuff, c->recvbuff, cnt, t, comm, NULL);
    case TC_REDUCESCATTER:
        return ecclReduceScatter(c->sendbuff, c->recvbuff, cnt, t, op, comm, NULL);
    case TC_ALLTOALL:
        return ecclAlltoAll(c->sendbuff, c->recvbuff, cnt, t, comm, NULL);
    case TC_GATHER:
        return ecclGather(c->sendbuff, c->recvbuff, cnt, t, c->root, comm, NULL);
    case TC_SCATTER:
        return ecclScatter(c->sendbuff, c->recvbuff, cnt, t, c->root, comm, NULL);
    case TC_SENDRECV: {
        int to = (x->rank + c->shift) % x->n, from = (x->rank - c->shift + x->n) % x->n;
        ecclResult_t res = ecclGroupStart();
        if (res != ecclSuccess)
            return res;
        ecclResult_t r1, r2;
        /* Odd ranks post the receive first: the order inside a group must not matter. */
        if (x->rank % 2) {
            r1 = ecclRecv(c->recvbuff, cnt, t, from, comm, NULL);
            r2 = ecclSend(c->sendbuff, cnt, t, to, comm, NULL);
        } else {
            r1 = ecclSend(c->sendbuff, cnt, t, to, comm, NULL);
            r2 = ecclRecv(c->recvbuff, cnt, t, from, comm, NULL);
        }
        res = ecclGroupEnd();
        return r1 != ecclSuccess ? r1 : r2 != ecclSuccess ? r2 : res;
    }
    default:
        return ecclInternalError;
    }
}

static void api_failed(struct rank_ctx *x, const struct tc_case *c, const char *call,
                       ecclResult_t res)
{
    report(x, c, "%s returned %d (%s): %s", call, (int)res, ecclGetErrorString(res),
           ecclGetLastError(x->comm));
    x->failures++;
    x->stop = true;
}

static void run_case_call(struct rank_ctx *x, struct tc_case *c);

static void run_case(struct rank_ctx *x, int coll, int dtype, int op, size_t count, int inplace)
{
    struct tc_case c;
    memset(&c, 0, sizeof(c));
    c.coll = coll;
    c.dtype = dtype;
    c.op = op;
    c.count = count;
    c.inplace = inplace;
    c.esize = td_size(dtype);
    c.seed = td_hash(((uint64_t)coll << 56) ^ ((uint64_t)dtype << 48) ^ ((uint64_t)(op + 1) << 40) ^
                     ((uint64_t)x->n << 32) ^ ((uint64_t)inplace << 31) ^ count);
    c.root = (int)(c.seed % (uint64_t)x->n);
    c.shift = x->n > 1 ? 1 + (int)((c.seed >> 16) % (uint64_t)(x->n - 1)) : 0;
    /* Values are indexed up to count, or n * count for the collectives whose send buffers
     * hold a block per rank. */
    bool per_rank = coll == TC_REDUCESCATTER || coll == TC_ALLTOALL || coll == TC_SCATTER;
    size_t max_index = per_rank ? (size_t)x->n * count : count;
    if (td_gen_init(&c.gen, dtype, op, x->n, c.seed, max_index) != 0 ||
        (coll_reduces(coll) && td_ref_row(&c.gen, op, &c.ref) != 0)) {
        report(x, &c, "out of memory");
        x->failures++;
        x->stop = true;
        td_gen_fini(&c.gen);
        return;
    }
    c.tol = coll_reduces(coll) ? td_tolerance(&c.gen, op) : 0.0;
    case_layout(x, &c);
    case_fill(x, &c);
    x->cases++;
    run_case_call(x, &c);
    td_row_free(&c.ref);
    td_gen_fini(&c.gen);
}

static void run_case_call(struct rank_ctx *x, struct tc_case *c)
{
    int op = c->op, dtype = c->dtype;
    case_snapshot(c);

    ecclRedOp_t eop = builtin_op(op);
    uint64_t scalar = 0;
    if (op == TD_PREMULSUM) {
        /* Every other case keeps the scalar in "device" memory (host memory for a host
         * communicator), read when the call runs: what is stored there at creation must not
         * count. */
        bool dev = x->cases % 2 == 0;
        td_store(&scalar, 0, dtype, dev ? 0.0 : td_premul_scalar(dtype));
        ecclResult_t res =
            ecclRedOpCreatePreMulSum(&eop, &scalar, (ecclDataType_t)dtype,
                                     dev ? ecclScalarDevice : ecclScalarHostImmediate, x->comm);
        if (dev)
            td_store(&scalar, 0, dtype, td_premul_scalar(dtype));
        if (res != ecclSuccess) {
            api_failed(x, c, "ecclRedOpCreatePreMulSum", res);
            return;
        }
    }
    ecclResult_t res = case_call(x, c, eop);
    if (res != ecclSuccess) {
        api_failed(x, c, tc_coll_name(c->coll), res);
        return;
    }
    if (op == TD_PREMULSUM) {
        res = ecclRedOpDestroy(eop, x->comm);
        if (res != ecclSuccess) {
            api_failed(x, c, "ecclRedOpDestroy", res);
            return;
        }
    }
    if (!case_verify(x, c))
        x->failures++;
}

/* At the largest size with 8 or more ranks, only these type x op pairs run with --quick (the
 * default runs everything: about 30 s per binary on 2 idle cores): every type with sum (and every type for the collectives that move data), every op with
 * float, int32 and the two fp8 types. What is left out is covered at every smaller size and at
 * the largest size with fewer ranks. */
static bool large_subset(int dtype, int op)
{
    if (op == TD_NO_OP || op == TD_SUM)
        return true;
    return dtype == ecclFloat32 || dtype == ecclInt32 || dtype == ecclFloat8e4m3 ||
           dtype == ecclFloat8e5m2;
}

static void run_matrix(struct rank_ctx *x)
{
    const struct tc_filter *f = &x->p->filter;
    for (int coll = 0; coll < TC_NUM_COLLS && !x->stop; coll++) {
        if (f->coll >= 0 && f->coll != coll)
            continue;
        for (int dtype = 0; dtype < ecclNumTypes && !x->stop; dtype++) {
            if (f->dtype >= 0 && f->dtype != dtype)
                continue;
            int op_lo = coll_reduces(coll) ? 0 : TD_NO_OP;
            int op_hi = coll_reduces(coll) ? TD_NUM_OPS : TD_NO_OP + 1;
            for (int op = op_lo; op < op_hi && !x->stop; op++) {
                if (f->op >= 0 && op >= 0 && f->op != op)
                    continue;
                for (int s = 0; s < NSIZES && !x->stop; s++) {
                    static const size_t small[NSIZES - 1] = {0, 1, 7, 1023};
                    size_t count = s < NSIZES - 1 ? small[s] : tc_large_count(dtype);
                    if (f->count >= 0 && (size_t)f->count != count)
                        continue;
                    if (s == NSIZES - 1 && x->n >= 8 && f->quick && !large_subset(dtype, op)) {
                        x->skipped += coll_has_inplace(coll) ? 2 : 1;
                        continue;
                    }
                    for (int ip = 0; ip < (coll_has_inplace(coll) ? 2 : 1) && !x->stop; ip++) {
                        if (f->inplace >= 0 && f->inplace != ip)
                            continue;
                        run_case(x, coll, dtype, op, count, ip);
                    }
                }
            }
        }
    }
}

/* ---- back-to-back collectives and mixed groups ------------------------------------------ */

/* A buffer of an extra test, with what it must hold afterwards. */
struct xbuf {
    const char *what;
    int dtype;
    size_t count;
    uint8_t *p;
    double *expect; /* NULL: must still hold the sentinel */
    double tol;
};

#define XSENT     0xee
#define MAX_XBUFS 96

struct xtest {
    struct rank_ctx *x;
    const char *name;
    struct xbuf bufs[MAX_XBUFS];
    int nbufs;
    void *inputs[MAX_XBUFS];
    int ninputs;
    struct td_gen *gens[MAX_XBUFS];
    int ngens;
};

/* A generator of an extra test (periodic rows: any index is fine), freed with the test. */
static void xgen(struct xtest *t, struct td_gen *g, int dtype, int op, uint64_t seed)
{
    if (td_gen_init(g, dtype, op, t->x->n, seed, TD_PERIOD) != 0)
        abort();
    t->gens[t->ngens++] = g;
}

static void *xin(struct xtest *t, const struct td_gen *g, size_t count, size_t index0)
{
    size_t bytes = count * td_size(g->dtype);
    uint8_t *p = malloc(bytes + 1);
    if (p == NULL)
        abort();
    td_gen_fill(g, p, count, t->x->rank, index0);
    t->inputs[t->ninputs++] = p;
    return p;
}

/* An output buffer, filled with the sentinel; expect (count doubles) is filled by the caller or
 * left NULL for "untouched". */
static struct xbuf *xout(struct xtest *t, const char *what, int dtype, size_t count, bool checked)
{
    struct xbuf *b = &t->bufs[t->nbufs++];
    b->what = what;
    b->dtype = dtype;
    b->count = count;
    b->p = malloc(count * td_size(dtype) + 1);
    b->expect = checked ? calloc(count + 1, sizeof(double)) : NULL;
    if (b->p == NULL || (checked && b->expect == NULL))
        abort();
    memset(b->p, XSENT, count * td_size(dtype));
    b->tol = 0.0;
    return b;
}

static void xreport(struct xtest *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void xreport(struct xtest *t, const char *fmt, ...)
{
    struct rank_ctx *x = t->x;
    x->printed++;
    if (x->printed > MAX_PRINTED)
        return;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    printf("FAIL [%s nranks=%d rank=%d] %s: %s\n", x->p->mode, x->n, x->rank, t->name, what);
    fflush(stdout);
}

static bool xcall(struct xtest *t, const char *call, ecclResult_t res)
{
    if (res == ecclSuccess)
        return true;
    xreport(t, "%s returned %d (%s): %s", call, (int)res, ecclGetErrorString(res),
            ecclGetLastError(t->x->comm));
    t->x->failures++;
    t->x->stop = true;
    return false;
}

static void xverify_and_free(struct xtest *t)
{
    struct rank_ctx *x = t->x;
    for (int i = 0; i < t->nbufs; i++) {
        struct xbuf *b = &t->bufs[i];
        x->cases++;
        if (!x->stop) {
            size_t wrong = 0;
            char first[128] = "";
            for (size_t j = 0; j < b->count; j++) {
                bool ok;
                double got = 0, want = 0;
                if (b->expect == NULL) {
                    size_t es = td_size(b->dtype);
                    ok = true;
                    for (size_t k = 0; k < es; k++)
                        ok = ok && b->p[j * es + k] == XSENT;
                } else {
                    got = td_load(b->p, j, b->dtype);
                    want = b->expect[j];
                    ok = value_ok(got, want, b->tol);
                }
                if (!ok && wrong++ == 0) {
                    if (b->expect == NULL)
                        snprintf(first, sizeof(first), "[%zu] was written (must be untouched)", j);
                    else
                        snprintf(first, sizeof(first), "[%zu] got %.17g expected %.17g", j, got,
                                 want);
                }
            }
            if (wrong > 0) {
                xreport(t, "%s (%s, count %zu): %zu elements wrong, first %s", b->what,
                        td_type_name(b->dtype), b->count, wrong, first);
                x->failures++;
            }
        }
        free(b->p);
        free(b->expect);
    }
    for (int i = 0; i < t->ninputs; i++)
        free(t->inputs[i]);
    for (int i = 0; i < t->ngens; i++)
        td_gen_fini(t->gens[i]);
    t->nbufs = t->ninputs = t->ngens = 0;
}

/* Broadcast, Reduce, Gather, Scatter and Bcast with every root in turn, issued back to back
 * with nothing in between, checked at the end. */
static void extra_back_to_back_roots(struct rank_ctx *x)
{
    struct xtest *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    t->x = x;
    t->name = "back-to-back collectives with roots 0..n-1";
    int n = x->n, r = x->rank;
    size_t cnt = 1023;
    struct td_gen gb, gr, gg, gs, gl;
    xgen(t, &gb, ecclFloat32, TD_NO_OP, 1001);
    xgen(t, &gr, ecclInt32, TD_SUM, 1002);
    xgen(t, &gg, ecclFloat64, TD_NO_OP, 1003);
    xgen(t, &gs, ecclInt32, TD_NO_OP, 1004);
    xgen(t, &gl, ecclInt8, TD_NO_OP, 1005);
    void *bsend = xin(t, &gb, cnt, 0);
    void *rsend = xin(t, &gr, cnt, 0);
    void *gsend = xin(t, &gg, cnt, 0);
    void *ssend = xin(t, &gs, (size_t)n * cnt, 0);
    struct xbuf *brecv[MP_MAX_RANKS], *rrecv[MP_MAX_RANKS], *grecv[MP_MAX_RANKS],
        *srecv[MP_MAX_RANKS], *lbuf[MP_MAX_RANKS];
    for (int R = 0; R < n; R++) {
        brecv[R] = xout(t, "Broadcast recvbuff", ecclFloat32, cnt, true);
        rrecv[R] = xout(t, "Reduce recvbuff", ecclInt32, cnt, r == R);
        grecv[R] = xout(t, "Gather recvbuff", ecclFloat64, (size_t)n * cnt, r == R);
        srecv[R] = xout(t, "Scatter recvbuff", ecclInt32, cnt, true);
        lbuf[R] = xout(t, "Bcast buff", ecclInt8, cnt, true);
        td_gen_fill(&gl, lbuf[R]->p, cnt, r, (size_t)R * cnt);
        for (size_t j = 0; j < cnt; j++) {
            brecv[R]->expect[j] = td_gen_value(&gb, R, j);
            if (r == R)
                rrecv[R]->expect[j] = td_reference(&gr, TD_SUM, j);
            srecv[R]->expect[j] = td_gen_value(&gs, R, (size_t)r * cnt + j);
            lbuf[R]->expect[j] = td_gen_value(&gl, R, (size_t)R * cnt + j);
        }
        if (r == R) {
            for (size_t j = 0; j < (size_t)n * cnt; j++)
                grecv[R]->expect[j] = td_gen_value(&gg, (int)(j / cnt), j % cnt);
        }
    }
    for (int R = 0; R < n && !x->stop; R++) {
        if (!xcall(t, "ecclBroadcast",
                   ecclBroadcast(bsend, brecv[R]->p, cnt, ecclFloat32, R, x->comm, NULL)) ||
            !xcall(t, "ecclReduce",
                   ecclReduce(rsend, rrecv[R]->p, cnt, ecclInt32, ecclSum, R, x->comm, NULL)) ||
            !xcall(t, "ecclGather",
                   ecclGather(gsend, grecv[R]->p, cnt, ecclFloat64, R, x->comm, NULL)) ||
            !xcall(t, "ecclScatter",
                   ecclScatter(ssend, srecv[R]->p, cnt, ecclInt32, R, x->comm, NULL)) ||
            !xcall(t, "ecclBcast", ecclBcast(lbuf[R]->p, cnt, ecclInt8, R, x->comm, NULL)))
            break;
    }
    xverify_and_free(t);
    free(t);
}

/* One group with collectives and send/receive rings in both directions. */
static void extra_mixed_group(struct rank_ctx *x)
{
    struct xtest *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    t->x = x;
    t->name = "group mixing collectives and p2p";
    int n = x->n, r = x->rank, next = (r + 1) % n, prev = (r - 1 + n) % n;
    struct td_gen g1, g2, g3, g4, g5, g6, g7, g8;
    xgen(t, &g1, ecclInt32, TD_SUM, 2001);
    xgen(t, &g2, ecclFloat32, TD_NO_OP, 2002);
    xgen(t, &g3, ecclInt64, TD_NO_OP, 2003);
    xgen(t, &g4, ecclFloat16, TD_NO_OP, 2004);
    xgen(t, &g5, ecclUint8, TD_NO_OP, 2005);
    xgen(t, &g6, ecclFloat64, TD_MAX, 2006);
    xgen(t, &g7, ecclBfloat16, TD_NO_OP, 2007);
    xgen(t, &g8, ecclFloat8e4m3, TD_PROD, 2008);
    void *s1 = xin(t, &g1, 1023, 0), *s2 = xin(t, &g2, 7, 0), *s3 = xin(t, &g3, 1023, 0);
    void *s4 = xin(t, &g4, 1023, 0), *s5 = xin(t, &g5, 7, 0);
    void *s6 = xin(t, &g6, (size_t)n * 5, 0), *s7 = xin(t, &g7, (size_t)n * 3, 0);
    void *s8 = xin(t, &g8, 7, 0);
    struct xbuf *o1 = xout(t, "AllReduce(sum int32)", ecclInt32, 1023, true);
    struct xbuf *o2 = xout(t, "Recv from prev (float)", ecclFloat32, 7, true);
    struct xbuf *o3 = xout(t, "Broadcast(root n-1, int64)", ecclInt64, 1023, true);
    struct xbuf *o4 = xout(t, "Recv from next (half)", ecclFloat16, 1023, true);
    struct xbuf *o5 = xout(t, "AllGather(uint8)", ecclUint8, (size_t)n * 7, true);
    struct xbuf *o6 = xout(t, "ReduceScatter(max double)", ecclFloat64, 5, true);
    struct xbuf *o7 = xout(t, "AlltoAll(bf16)", ecclBfloat16, (size_t)n * 3, true);
    struct xbuf *o8 = xout(t, "Reduce(prod fp8e4m3, root 0)", ecclFloat8e4m3, 7, r == 0);
    for (size_t j = 0; j < 1023; j++) {
        o1->expect[j] = td_reference(&g1, TD_SUM, j);
        o3->expect[j] = td_gen_value(&g3, n - 1, j);
        o4->expect[j] = td_gen_value(&g4, next, j);
    }
    for (size_t j = 0; j < 7; j++) {
        o2->expect[j] = td_gen_value(&g2, prev, j);
        if (r == 0)
            o8->expect[j] = td_reference(&g8, TD_PROD, j);
    }
    for (size_t j = 0; j < (size_t)n * 7; j++)
        o5->expect[j] = td_gen_value(&g5, (int)(j / 7), j % 7);
    for (size_t j = 0; j < 5; j++)
        o6->expect[j] = td_reference(&g6, TD_MAX, (size_t)r * 5 + j);
    for (size_t j = 0; j < (size_t)n * 3; j++)
        o7->expect[j] = td_gen_value(&g7, (int)(j / 3), (size_t)r * 3 + j % 3);

    ecclComm_t c = x->comm;
    if (xcall(t, "ecclGroupStart", ecclGroupStart())) {
        bool ok =
            xcall(t, "ecclAllReduce",
                  ecclAllReduce(s1, o1->p, 1023, ecclInt32, ecclSum, c, NULL)) &&
            xcall(t, "ecclSend", ecclSend(s2, 7, ecclFloat32, next, c, NULL)) &&
            xcall(t, "ecclRecv", ecclRecv(o2->p, 7, ecclFloat32, prev, c, NULL)) &&
            xcall(t, "ecclBroadcast", ecclBroadcast(s3, o3->p, 1023, ecclInt64, n - 1, c, NULL)) &&
            xcall(t, "ecclRecv", ecclRecv(o4->p, 1023, ecclFloat16, next, c, NULL)) &&
            xcall(t, "ecclSend", ecclSend(s4, 1023, ecclFloat16, prev, c, NULL)) &&
            xcall(t, "ecclAllGather", ecclAllGather(s5, o5->p, 7, ecclUint8, c, NULL)) &&
            xcall(t, "ecclReduceScatter",
                  ecclReduceScatter(s6, o6->p, 5, ecclFloat64, ecclMax, c, NULL)) &&
            xcall(t, "ecclAlltoAll", ecclAlltoAll(s7, o7->p, 3, ecclBfloat16, c, NULL)) &&
            xcall(t, "ecclReduce", ecclReduce(s8, o8->p, 7, ecclFloat8e4m3, ecclProd, 0, c, NULL));
        ecclResult_t end = ecclGroupEnd();
        if (ok)
            xcall(t, "ecclGroupEnd", end);
    }
    xverify_and_free(t);
    free(t);
}

/* Every rank sends to and receives from every rank (itself included) in one group, receives
 * posted first in one variant and sends first in the other. */
static void extra_all_pairs(struct rank_ctx *x, int dtype, size_t cnt, bool recv_first)
{
    struct xtest *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    t->x = x;
    t->name = recv_first ? "all-pairs send/recv group (receives first)"
                         : "all-pairs send/recv group (sends first)";
    int n = x->n, r = x->rank;
    size_t es = td_size(dtype);
    struct td_gen g;
    xgen(t, &g, dtype, TD_NO_OP, 3000 + (uint64_t)recv_first);
    uint8_t *s = xin(t, &g, (size_t)n * cnt, 0);
    struct xbuf *o = xout(t, "recvbuff", dtype, (size_t)n * cnt, true);
    for (size_t j = 0; j < (size_t)n * cnt; j++)
        o->expect[j] = td_gen_value(&g, (int)(j / cnt), (size_t)r * cnt + j % cnt);
    if (xcall(t, "ecclGroupStart", ecclGroupStart())) {
        bool ok = true;
        for (int pass = 0; pass < 2 && ok; pass++) {
            bool recvs = (pass == 0) == recv_first;
            for (int q = 0; q < n && ok; q++) {
                if (recvs)
                    ok = xcall(t, "ecclRecv",
                               ecclRecv(o->p + (size_t)q * cnt * es, cnt, (ecclDataType_t)dtype, q,
                                        x->comm, NULL));
                else
                    ok = xcall(t, "ecclSend",
                               ecclSend(s + (size_t)q * cnt * es, cnt, (ecclDataType_t)dtype, q,
                                        x->comm, NULL));
            }
        }
        ecclResult_t end = ecclGroupEnd();
        if (ok)
            xcall(t, "ecclGroupEnd", end);
    }
    xverify_and_free(t);
    free(t);
}

/* Several AllReduces of different types and ops aggregated in one group. */
static void extra_aggregated(struct rank_ctx *x)
{
    struct xtest *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    t->x = x;
    t->name = "AllReduces aggregated in one group";
    static const struct {
        int dtype, op;
        size_t count;
    } ops[] = {{ecclFloat32, TD_SUM, 1023},     {ecclInt8, TD_MAX, 7},
               {ecclFloat64, TD_AVG, 4099},     {ecclUint64, TD_MIN, 1},
               {ecclFloat16, TD_PREMULSUM, 33}, {ecclInt64, TD_PROD, 300}};
    enum { NOPS = sizeof(ops) / sizeof(ops[0]) };
    struct td_gen g[NOPS];
    void *s[NOPS];
    struct xbuf *o[NOPS];
    ecclRedOp_t pre = ecclSum;
    bool have_pre = false;
    for (int i = 0; i < NOPS; i++) {
        xgen(t, &g[i], ops[i].dtype, ops[i].op, 4000 + (uint64_t)i);
        s[i] = xin(t, &g[i], ops[i].count, 0);
        o[i] = xout(t, td_op_name(ops[i].op), ops[i].dtype, ops[i].count, true);
        o[i]->tol = td_tolerance(&g[i], ops[i].op);
        for (size_t j = 0; j < ops[i].count; j++)
            o[i]->expect[j] = td_reference(&g[i], ops[i].op, j);
    }
    uint64_t scalar = 0;
    td_store(&scalar, 0, ecclFloat16, td_premul_scalar(ecclFloat16));
    if (xcall(
            t, "ecclRedOpCreatePreMulSum",
            ecclRedOpCreatePreMulSum(&pre, &scalar, ecclFloat16, ecclScalarHostImmediate, x->comm)))
        have_pre = true;
    if (have_pre && xcall(t, "ecclGroupStart", ecclGroupStart())) {
        bool ok = true;
        for (int i = 0; i < NOPS && ok; i++) {
            ecclRedOp_t op = ops[i].op == TD_PREMULSUM ? pre : builtin_op(ops[i].op);
            ok = xcall(t, "ecclAllReduce",
                       ecclAllReduce(s[i], o[i]->p, ops[i].count, (ecclDataType_t)ops[i].dtype, op,
                                     x->comm, NULL));
        }
        ecclResult_t end = ecclGroupEnd();
        if (ok)
            xcall(t, "ecclGroupEnd", end);
    }
    if (have_pre)
        xcall(t, "ecclRedOpDestroy", ecclRedOpDestroy(pre, x->comm));
    xverify_and_free(t);
    free(t);
}

static void run_extras(struct rank_ctx *x)
{
    if (!x->stop)
        extra_back_to_back_roots(x);
    if (!x->stop)
        extra_mixed_group(x);
    if (!x->stop)
        extra_all_pairs(x, ecclInt32, 1023, false);
    if (!x->stop)
        extra_all_pairs(x, ecclFloat16, 4099, true);
    if (!x->stop)
        extra_aggregated(x);
}

int tc_rank_run(const struct tc_params *p, struct tc_shared *sh, int rank, ecclComm_t comm)
{
    struct rank_ctx x;
    memset(&x, 0, sizeof(x));
    x.p = p;
    x.sh = sh;
    x.rank = rank;
    x.n = p->nranks;
    x.comm = comm;
    /* The largest allocation: n blocks of 1 MiB + 3 elements of 8 bytes, guards, misalignment. */
    x.arena_bytes = (size_t)x.n * ((1u << 20) + 3 * 8) + 2 * GUARD + 4 * 8 + 4096;
    x.arena_bytes = (x.arena_bytes + 4095) & ~(size_t)4095;
    for (int i = 0; i < 2; i++) {
        x.arena[i] = aligned_alloc(4096, x.arena_bytes);
        x.snap[i] = aligned_alloc(4096, x.arena_bytes);
        if (x.arena[i] == NULL || x.snap[i] == NULL) {
            printf("FAIL [%s nranks=%d rank=%d] out of memory\n", p->mode, x.n, rank);
            x.stop = true;
            x.failures++;
        }
    }
    if (!x.stop && !p->filter.only_extras)
        run_matrix(&x);
    bool filtered = p->filter.coll >= 0 || p->filter.dtype >= 0 || p->filter.op >= 0 ||
                    p->filter.count >= 0 || p->filter.inplace >= 0;
    if (!x.stop && !p->filter.no_extras && (!filtered || p->filter.only_extras))
        run_extras(&x);
    for (int i = 0; i < 2; i++) {
        free(x.arena[i]);
        free(x.snap[i]);
    }
    if (rank == 0) {
        atomic_fetch_add(&sh->cases, x.cases);
        atomic_fetch_add(&sh->skipped, x.skipped);
    }
    atomic_fetch_add(&sh->failures, x.failures);
    if (x.stop)
        atomic_fetch_add(&sh->stopped, 1);
    return x.failures == 0 && !x.stop ? 0 : 1;
}

long tc_summary(const struct tc_params *p, struct tc_shared *sh, double elapsed_ms)
{
    long failures = atomic_load(&sh->failures), stopped = atomic_load(&sh->stopped);
    long skipped = atomic_load(&sh->skipped);
    printf("colls [%s nranks=%d]: %ld cases, %ld failed (case, rank) pairs, %ld ranks stopped "
           "early%s, %.1f s\n",
           p->mode, p->nranks, atomic_load(&sh->cases), failures, stopped,
           skipped ? " (largest size: reduced type x op subset)" : "", elapsed_ms / 1e3);
    fflush(stdout);
    return failures + stopped;
}

/*
 * host_flat.c - the flat algorithm for small host collectives (kernels/host_flat.h): each rank
 * publishes its contribution in its own slot of one shared segment and reads the others' slots,
 * one round of flags per call.
 *
 * A slot begins with its control words (sequence number, sleepers, the call's byte count and a
 * tag naming the call) and its data follows in the same cache line: a reader that sees the
 * sequence word has the first 48 data bytes too. Every rank reduces the contributions in rank
 * order, so all ranks get the same bits. Waits spin briefly, then yield, then sleep on the
 * sequence word's futex, like the connectors' waits (kernels/host_exec.c): ranks of a host with
 * more ranks than cores must give their core to the peer they wait for.
 */
#include "kernels/host_flat.h"

#include <sched.h>
#include <string.h>

#include "common/check.h"
#include "common/log.h"
#include "common/sync.h"
#include "common/time.h"
#include "kernels/host_exec.h"

#define HDR_BYTES     128
#define SLOT_ALIGN    128 /* two cache lines: the adjacent-line prefetcher pairs them */
#define SLOT_DATA     16  /* the data's offset in a slot */
#define SPIN_MAX_NS   4000
#define FLAT_MIN_SPIN 8
/* After spinning: this many yields, then yielding for at most YIELD_NS, then futex sleeps of
 * SLEEP_SLICE_NS (the values of the connectors' waits, kernels/host_exec.c). */
#define YIELDS_BEFORE_SLEEP 16
#define YIELD_NS            (1 * ECCL_NS_PER_MS)
#define SLEEP_SLICE_NS      (5 * ECCL_NS_PER_MS)

_Static_assert(sizeof(struct kern_flat_hdr) <= HDR_BYTES, "flat header");

struct flat_slot {
    _Atomic uint32_t seq;     /* the last call whose data this slot holds (written by its rank) */
    _Atomic uint32_t waiters; /* ranks sleeping on seq */
    uint32_t bytes;           /* the data's bytes in that call */
    uint32_t tag;             /* what that call was (func, dtype, op, root) */
};
_Static_assert(sizeof(struct flat_slot) == SLOT_DATA, "flat slot");

static size_t slot_stride(uint32_t slot_bytes)
{
    return ((size_t)SLOT_DATA + slot_bytes + SLOT_ALIGN - 1) & ~(size_t)(SLOT_ALIGN - 1);
}

size_t kern_flat_segment_bytes(int nranks, uint32_t slot_bytes)
{
    if (nranks < 1 || nranks > KERN_FLAT_MAX_RANKS || slot_bytes == 0 ||
        slot_bytes > KERN_FLAT_MAX_SLOT_BYTES || slot_bytes % 8 != 0)
        return 0;
    return HDR_BYTES + (size_t)nranks * KERN_FLAT_SLOTS * slot_stride(slot_bytes);
}

static struct flat_slot *slot_at(const struct kern_flat *f, int rank, uint32_t seq)
{
    size_t idx = (size_t)rank * KERN_FLAT_SLOTS + seq % KERN_FLAT_SLOTS;
    return (struct flat_slot *)(f->base + HDR_BYTES + idx * f->stride);
}

static char *slot_data(struct flat_slot *s)
{
    return (char *)s + SLOT_DATA;
}

static struct kern_flat_hdr *hdr_of(const struct kern_flat *f)
{
    return (struct kern_flat_hdr *)f->base;
}

void kern_flat_format(void *base, int nranks, uint32_t slot_bytes)
{
    size_t bytes = kern_flat_segment_bytes(nranks, slot_bytes);
    memset(base, 0, bytes);
    struct kern_flat_hdr *h = base;
    h->magic = KERN_FLAT_MAGIC;
    h->version = KERN_FLAT_VERSION;
    h->nranks = (uint32_t)nranks;
    h->slot_bytes = slot_bytes;
    h->nslots = KERN_FLAT_SLOTS;
    atomic_store_explicit(&h->closed, 0, memory_order_release);
}

ecclResult_t kern_flat_attach(struct kern_flat *f, void *base, size_t bytes, int rank, int nranks)
{
    const struct kern_flat_hdr *h = base;
    if (bytes < HDR_BYTES || h->magic != KERN_FLAT_MAGIC || h->version != KERN_FLAT_VERSION) {
        WARN("flat segment: bad magic or version (0x%x, %u)", bytes < HDR_BYTES ? 0 : h->magic,
             bytes < HDR_BYTES ? 0 : h->version);
        return ecclRemoteError;
    }
    size_t need = kern_flat_segment_bytes((int)h->nranks, h->slot_bytes);
    if (h->nranks != (uint32_t)nranks || h->nslots != KERN_FLAT_SLOTS || need == 0 ||
        need > bytes) {
        WARN("flat segment: geometry %u ranks x %u bytes does not fit a communicator of %d ranks "
             "and %zu bytes",
             h->nranks, h->slot_bytes, nranks, bytes);
        return ecclRemoteError;
    }
    f->base = base;
    f->bytes = bytes;
    f->rank = rank;
    f->nranks = nranks;
    f->slot_bytes = h->slot_bytes;
    f->stride = slot_stride(h->slot_bytes);
    f->seq = 0;
    f->spin = UINT32_MAX;
    return ecclSuccess;
}

size_t kern_flat_call_bytes(const struct kern_flat_call *c, int nranks)
{
    size_t bytes = c->count * eccl_dtype_size(c->op.dtype);
    return c->func == ECCL_FUNC_REDUCESCATTER ? bytes * (size_t)nranks : bytes;
}

void kern_flat_close(struct kern_flat *f)
{
    if (!f->base)
        return;
    uint32_t none = 0;
    atomic_compare_exchange_strong(&hdr_of(f)->closed, &none, (uint32_t)f->rank + 1);
    for (int r = 0; r < f->nranks; r++)
        for (uint32_t b = 0; b < KERN_FLAT_SLOTS; b++)
            eccl_futex_wake(&slot_at(f, r, b)->seq, true);
}

uint32_t kern_flat_published(const struct kern_flat *f, int rank, uint32_t seq)
{
    return atomic_load_explicit(&slot_at(f, rank, seq)->seq, memory_order_acquire);
}

static inline int reached(const struct flat_slot *s, uint32_t want)
{
    /* Sequence numbers compare modulo 2^32. */
    return (int32_t)(atomic_load_explicit(&s->seq, memory_order_acquire) - want) >= 0;
}

static ecclResult_t wait_failed(struct kern_flat *f, struct kern_ctx *ctx, int peer,
                                uint64_t *start)
{
    uint32_t closed = atomic_load_explicit(&hdr_of(f)->closed, memory_order_acquire);
    if (closed && !atomic_load_explicit(ctx->abort, memory_order_acquire)) {
        WARN("rank %u closed the flat segment: its communicator failed or was aborted", closed - 1);
        ctx->failed_peer = (int)closed - 1;
        return ecclRemoteError;
    }
    return kern_wait_check(ctx, start, peer, "its flat slot");
}

/* Waits until rank `peer`'s slot `s` holds call `want` or a later one. */
static ecclResult_t wait_seq(struct kern_flat *f, struct flat_slot *s, uint32_t want, int peer,
                             struct kern_ctx *ctx)
{
    if (reached(s, want))
        return ecclSuccess;
    /* Adaptive spin: a spin that ended with the peer's answer grows the next one (up to
     * ctx->spin); one that had to yield shrinks it (to FLAT_MIN_SPIN). When the peer waited for
     * shares this core (more ranks than cores, or other work on the machine), spinning only
     * delays the yield that lets it run. */
    uint32_t limit = f->spin < FLAT_MIN_SPIN ? FLAT_MIN_SPIN : f->spin;
    if (limit > ctx->spin)
        limit = ctx->spin;
    uint64_t t0 = 0;
    for (uint32_t i = 0; i < limit; i++) {
        if (reached(s, want)) {
            f->spin = limit > UINT32_MAX / 2 ? limit : limit * 2;
            kern_spread_after_wait(&f->spread, true);
            return ecclSuccess;
        }
        eccl_cpu_relax();
        if ((i & 31) == 31) {
            uint64_t now = eccl_now_ns();
            if (t0 == 0)
                t0 = now;
            else if (now - t0 > SPIN_MAX_NS)
                break;
        }
    }
    f->spin = limit / 2;
    uint64_t start = 0, since = 0;
    for (int round = 0;; round++) {
        if (reached(s, want)) {
            kern_spread_after_wait(&f->spread, round == 0);
            return ecclSuccess;
        }
        ECCL_TRY(wait_failed(f, ctx, peer, &start));
        bool yield = round < YIELDS_BEFORE_SLEEP;
        if (!yield) {
            uint64_t now = eccl_now_ns();
            if (since == 0)
                since = now;
            yield = now - since < YIELD_NS;
        }
        if (yield) {
            sched_yield();
            continue;
        }
        atomic_fetch_add_explicit(&s->waiters, 1, memory_order_seq_cst);
        uint32_t seen = atomic_load_explicit(&s->seq, memory_order_seq_cst);
        if ((int32_t)(seen - want) < 0)
            eccl_futex_wait(&s->seq, seen, SLEEP_SLICE_NS, true);
        atomic_fetch_sub_explicit(&s->waiters, 1, memory_order_relaxed);
    }
}

/* Waits for rank `peer`'s contribution to call `seq` and checks that it made the same call. */
static ecclResult_t wait_peer(struct kern_flat *f, int peer, uint32_t seq, uint32_t bytes,
                              uint32_t tag, struct kern_ctx *ctx, const char **data)
{
    struct flat_slot *s = slot_at(f, peer, seq);
    ECCL_TRY(wait_seq(f, s, seq, peer, ctx));
    if (s->bytes != bytes || s->tag != tag) {
        WARN("flat call %u: rank %d made a different call (%u bytes, tag 0x%x) than this rank "
             "(%u bytes, tag 0x%x)",
             seq, peer, s->bytes, s->tag, bytes, tag);
        ctx->failed_peer = peer;
        return ecclInvalidUsage;
    }
    *data = slot_data(s);
    return ecclSuccess;
}

/* Publishes call `seq` in slot `s`; `data`: the slot holds this rank's contribution (else only
 * the sequence word changes: a rank that contributes nothing, the Broadcast's non-roots, may
 * run ahead of a rank still reading the slot's previous contents, which stay as they were). */
static void publish(struct flat_slot *s, uint32_t seq, bool data, uint32_t bytes, uint32_t tag)
{
    if (data) {
        s->bytes = bytes;
        s->tag = tag;
    }
    /* seq_cst store, then the sleepers: a waiter raises `waiters` before its last look at seq
     * (both seq_cst), so either it sees seq or this sees it and wakes it. (A release store and a
     * relaxed load measured no faster, and could miss a sleeper for one 5 ms slice.) */
    atomic_store_explicit(&s->seq, seq, memory_order_seq_cst);
    if (atomic_load_explicit(&s->waiters, memory_order_seq_cst))
        eccl_futex_wake(&s->seq, true);
}

/* out = post(c_0 (+) c_1 (+) ... (+) c_{n-1}) in rank order, c_r being rank r's (pre-applied)
 * slot data at byte offset `off`. */
static ecclResult_t reduce_all(struct kern_flat *f, const struct kern_flat_call *c, uint32_t seq,
                               uint32_t bytes, uint32_t tag, size_t off, struct kern_ctx *ctx)
{
    const char *d0, *d;
    char *out = c->recvbuff;
    ECCL_TRY(wait_peer(f, 0, seq, bytes, tag, ctx, &d0));
    for (int r = 1; r < f->nranks; r++) {
        ECCL_TRY(wait_peer(f, r, seq, bytes, tag, ctx, &d));
        eccl_reduce_combine(out, r == 1 ? d0 + off : out, d + off, c->count, &c->op);
    }
    eccl_reduce_post(out, out, c->count, &c->op);
    return ecclSuccess;
}

ecclResult_t kern_flat_run(struct kern_flat *f, const struct kern_flat_call *c,
                           struct kern_ctx *ctx)
{
    int me = f->rank, n = f->nranks;
    size_t ts = eccl_dtype_size(c->op.dtype);
    size_t cbytes = kern_flat_call_bytes(c, n);
    if (cbytes > f->slot_bytes)
        return ecclInternalError; /* the caller checks the fit */
    uint32_t bytes = (uint32_t)cbytes;
    uint32_t tag = (uint32_t)c->func | (uint32_t)c->op.dtype << 8 | (uint32_t)c->op.kind << 16 |
                   (uint32_t)(c->func == ECCL_FUNC_BROADCAST ? c->root & 0xff : 0) << 24;
    uint32_t seq = ++f->seq;
    struct flat_slot *mine = slot_at(f, me, seq);
    bool writes = c->func != ECCL_FUNC_BROADCAST || me == c->root;
    if (writes) {
        /* The slot last held call seq - SLOTS: every rank is done with it once it has
         * published seq - SLOTS + 1. */
        uint32_t done = seq - KERN_FLAT_SLOTS + 1;
        for (int r = 0; r < n; r++)
            if (r != me)
                ECCL_TRY(wait_seq(f, slot_at(f, r, done), done, r, ctx));
        if (c->func == ECCL_FUNC_ALLREDUCE || c->func == ECCL_FUNC_REDUCESCATTER)
            eccl_reduce_pre(slot_data(mine), c->sendbuff, cbytes / ts, &c->op);
        else
            memcpy(slot_data(mine), c->sendbuff, cbytes);
    }
    publish(mine, seq, writes, bytes, tag);

    const char *d;
    switch (c->func) {
    case ECCL_FUNC_ALLREDUCE:
        return reduce_all(f, c, seq, bytes, tag, 0, ctx);
    case ECCL_FUNC_REDUCESCATTER:
        return reduce_all(f, c, seq, bytes, tag, (size_t)me * c->count * ts, ctx);
    case ECCL_FUNC_ALLGATHER:
        for (int r = 0; r < n; r++) {
            char *dst = (char *)c->recvbuff + (size_t)r * cbytes;
            if (r == me) {
                if (dst != c->sendbuff)
                    memcpy(dst, c->sendbuff, cbytes);
                continue;
            }
            ECCL_TRY(wait_peer(f, r, seq, bytes, tag, ctx, &d));
            memcpy(dst, d, cbytes);
        }
        return ecclSuccess;
    case ECCL_FUNC_BROADCAST:
        if (me == c->root) {
            if (c->recvbuff != c->sendbuff)
                memcpy(c->recvbuff, c->sendbuff, cbytes);
            return ecclSuccess;
        }
        ECCL_TRY(wait_peer(f, c->root, seq, bytes, tag, ctx, &d));
        memcpy(c->recvbuff, d, cbytes);
        return ecclSuccess;
    default:
        return ecclInternalError;
    }
}

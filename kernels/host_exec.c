/*
 * host_exec.c - ring and tree algorithms, and point-to-point, on host memory.
 *
 * The algorithms are NCCL's: a ring AllReduce is a ReduceScatter followed by an AllGather over
 * the ring, pipelined chunk by chunk through the connector slots; Broadcast and Reduce are chains
 * along the ring from (to) the root; the tree AllReduce reduces up a binary tree and broadcasts
 * down. With two ranks, a ring AllReduce piece that fits one slot is an exchange instead (one hop,
 * not two). Every rank computes the same chunk sizes, and the receiver checks the size of each
 * step it receives, so mismatched calls between ranks give an error instead of corrupt data.
 *
 * The pre-operation of PREMULSUM is applied where a rank's own data enters the reduction; the
 * post-operation of SUMPOSTDIV where a chunk's reduction completes.
 */
#include "kernels/host_exec.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/sync.h"
#include "common/time.h"
#include "kernels/host_cma.h"
#include "kernels/host_copy.h"
#include "kernels/reduce.h"

#define YIELDS_BEFORE_SLEEP 16
#define SLEEP_SLICE_NS      (5 * ECCL_NS_PER_MS)
/* A wait yields the CPU for at least this long before it sleeps on the futex: a rank that
 * sleeps makes its peer's next step wait for its wake-up (a futex wake and a scheduling delay),
 * while yielding keeps a rank whose peer answers within a millisecond ready to go on, and still
 * gives the core to whoever needs it. */
#define YIELD_NS (1 * ECCL_NS_PER_MS)
/* Spinning stops after this long even when ECCL_SPIN polls are not done: 2000 polls take 70 to
 * 110 us on an EPYC (a pause is 33 to 57 ns), and when the peer waited for runs on the same core
 * (other work took the other one) every step paid that whole spin: 51 us per 2-rank call instead
 * of 0.4 us. A yield costs a fraction of a microsecond when nothing else wants the core. */
#define SPIN_MAX_NS 4000

#define SPREAD_AFTER_YIELDS 64
#define SPREAD_EVERY_NS     (1000 * ECCL_NS_PER_MS)

int kern_move_off_cpu(int *from, int *to)
{
    cpu_set_t mask, other;
    *from = *to = sched_getcpu();
    if (*from < 0 || sched_getaffinity(0, sizeof(mask), &mask) != 0)
        return -1;
    if (CPU_COUNT(&mask) < 2 || !CPU_ISSET(*from, &mask))
        return 0;
    other = mask;
    CPU_CLR(*from, &other);
    if (sched_setaffinity(0, sizeof(other), &other) != 0)
        return -1;
    *to = sched_getcpu();
    if (sched_setaffinity(0, sizeof(mask), &mask) != 0) {
        int e = errno;
        WARN("could not restore this thread's CPU mask after moving it off CPU %d: %s", *from,
             strerror(e));
        errno = e;
        return -1;
    }
    return 1;
}

void kern_spread_after_wait(struct kern_spread *s, bool spun)
{
    if (!s || !s->on)
        return;
    if (spun) {
        s->yielded = 0;
        return;
    }
    if (++s->yielded < SPREAD_AFTER_YIELDS)
        return;
    s->yielded = 0;
    uint64_t now = eccl_now_ns();
    if (s->moved_ns && now - s->moved_ns < SPREAD_EVERY_NS)
        return;
    s->moved_ns = now;
    int from, to;
    if (kern_move_off_cpu(&from, &to) > 0)
        INFO(ECCL_LOG_COLL,
             "rank %d: a waiting thread moved from CPU %d to CPU %d (%d waits in a "
             "row yielded)",
             s->rank, from, to, SPREAD_AFTER_YIELDS);
}

ecclResult_t kern_wait_check(struct kern_ctx *ctx, uint64_t *start, int peer, const char *what)
{
    if (atomic_load_explicit(ctx->abort, memory_order_acquire)) {
        ctx->failed_peer = peer;
        return ecclRemoteError;
    }
    if (ctx->timeout_ns) {
        uint64_t now = eccl_now_ns();
        if (*start == 0) {
            *start = now;
        } else if (now - *start > ctx->timeout_ns) {
            WARN("no progress from rank %d for %llu ms while waiting for %s", peer,
                 (unsigned long long)((now - *start) / ECCL_NS_PER_MS), what);
            ctx->failed_peer = peer;
            return ecclRemoteError;
        }
    }
    return ecclSuccess;
}

static ecclResult_t closed_error(struct kern_ctx *ctx, int peer)
{
    WARN("rank %d closed its connection: its communicator failed or was aborted", peer);
    ctx->failed_peer = peer;
    return ecclRemoteError;
}

/* Whether a wait in its `round`-th round after spinning should yield again rather than sleep;
 * *since is when it began yielding (0: not yet). */
static bool keep_yielding(int round, uint64_t *since)
{
    if (round < YIELDS_BEFORE_SLEEP)
        return true;
    uint64_t now = eccl_now_ns();
    if (*since == 0)
        *since = now;
    return now - *since < YIELD_NS;
}

/* Whether a spin that began at *t0 (0: not read yet) should stop: checked every 32 polls. */
static inline bool spin_done(uint32_t i, uint64_t *t0)
{
    if ((i & 31) != 31)
        return false;
    uint64_t now = eccl_now_ns();
    if (*t0 == 0)
        *t0 = now;
    return now - *t0 > SPIN_MAX_NS;
}

/* Whether the watched word of a step wait, at value v, lets the waiter go on (wait_step). A
 * receiver needs the tail past its head, not merely off it: a GPU sender writes the tail of LL
 * and LL128 steps late (kernels/dev_coll.cuh, tails_defer), so right after such a work the tail
 * may still be behind the head its receiver reached by reading the lines. */
static inline bool step_ready(bool data, uint32_t v, uint32_t mine, uint32_t nslots)
{
    return data ? (int32_t)(v - mine) > 0 : mine - v < nslots;
}

/* Waits for one step of connector c. With `data` (the receiver; mine: its head) until the
 * sender's tail moves off `mine`: a step to receive. Else (the sender; mine: its tail) until
 * fewer than `nslots` posted steps are unconsumed (space for one more step), or, with nslots 1,
 * until every posted step is consumed (drained). Spins, then yields, then sleeps on the futex of
 * the watched word (tail or head), checking closure, abort and the watchdog. */
static ecclResult_t wait_step(struct eccl_conn_ctrl *c, bool data, uint32_t mine, uint32_t nslots,
                              struct kern_ctx *ctx, int peer)
{
    _Atomic uint32_t *word = data ? &c->tail : &c->head;
    _Atomic uint32_t *waiters = data ? &c->tail_waiters : &c->head_waiters;
    uint64_t t0 = 0;
    for (uint32_t i = 0; i < ctx->spin && !spin_done(i, &t0); i++) {
        if (step_ready(data, atomic_load_explicit(word, memory_order_acquire), mine, nslots)) {
            kern_spread_after_wait(ctx->spread, true);
            return ecclSuccess;
        }
        eccl_cpu_relax();
    }
    uint64_t start = 0, since = 0;
    for (int round = 0;; round++) {
        uint32_t seen = atomic_load_explicit(word, memory_order_acquire);
        if (step_ready(data, seen, mine, nslots)) {
            kern_spread_after_wait(ctx->spread, round == 0);
            return ecclSuccess;
        }
        if (atomic_load_explicit(&c->closed, memory_order_acquire))
            return closed_error(ctx, peer);
        ECCL_TRY(kern_wait_check(ctx, &start, peer, data ? "data" : "buffer space"));
        if (keep_yielding(round, &since)) {
            sched_yield();
            continue;
        }
        atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
        if (atomic_load_explicit(word, memory_order_seq_cst) == seen)
            eccl_futex_wait(word, seen, SLEEP_SLICE_NS, true);
        atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
    }
}

static ecclResult_t wait_data(struct eccl_conn_ctrl *c, uint32_t head, struct kern_ctx *ctx,
                              int peer)
{
    return wait_step(c, true, head, 0, ctx, peer);
}

/* Waits until fewer than `nslots` posted steps are unconsumed (space for one more step), or,
 * with nslots 1, until every posted step is consumed (drained). */
static ecclResult_t wait_head(struct eccl_conn_ctrl *c, uint32_t tail, uint32_t nslots,
                              struct kern_ctx *ctx, int peer)
{
    return wait_step(c, false, tail, nslots, ctx, peer);
}

static ecclResult_t wait_space(struct eccl_conn_ctrl *c, uint32_t tail, struct kern_ctx *ctx,
                               int peer)
{
    return wait_head(c, tail, c->nslots, ctx, peer);
}

void kern_conn_close(struct eccl_conn_ctrl *c)
{
    if (!c)
        return;
    atomic_store_explicit(&c->closed, 1, memory_order_release);
    kern_conn_wake_all(c);
}

void kern_conn_wake_all(struct eccl_conn_ctrl *c)
{
    if (!c)
        return;
    eccl_futex_wake(&c->tail, true);
    eccl_futex_wake(&c->head, true);
}

/* --- steps ------------------------------------------------------------------------------ */

struct peer_send {
    struct eccl_conn_ctrl *c;
    int peer;
    struct eccl_bell *bell;
};

struct peer_recv {
    struct eccl_conn_ctrl *c;
    int peer;
    struct eccl_bell *bell;
};

static ecclResult_t send_begin(struct peer_send s, struct kern_ctx *ctx, char **slot)
{
    uint32_t tail = atomic_load_explicit(&s.c->tail, memory_order_relaxed);
    ECCL_TRY(wait_space(s.c, tail, ctx, s.peer));
    *slot = eccl_conn_data(s.c) + (size_t)(tail % s.c->nslots) * s.c->slot_bytes;
    return ecclSuccess;
}

/* Posts the step of `bytes` written into the current slot of s; `streamed`: with streaming
 * stores (the receiver reads it from the size word). */
static void send_commit_as(struct peer_send s, size_t bytes, bool streamed)
{
    uint32_t tail = atomic_load_explicit(&s.c->tail, memory_order_relaxed);
    uint32_t size = (uint32_t)bytes | (streamed ? ECCL_CONN_SIZE_STREAM : 0);
    atomic_store_explicit(&s.c->sizes[tail % s.c->nslots], size, memory_order_relaxed);
    atomic_store_explicit(&s.c->tail, tail + 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s.c->tail_waiters, memory_order_relaxed))
        eccl_futex_wake(&s.c->tail, true);
    if (s.bell)
        eccl_bell_ring(s.bell);
}

static void send_commit(struct peer_send s, size_t bytes)
{
    send_commit_as(s, bytes, false);
}

/* Streaming stores into the slots (kernels/host_copy.h), chosen by measurement: each side times
 * its steps of at least STREAM_MIN_BYTES, from the data's arrival (receiver) or the slot's
 * release (sender) to the step's end, keeps the fastest of each kind of store over windows of
 * STREAM_WINDOW steps, and the sender, after each window of its own, stores the way whose sum
 * of both sides' last windows is faster by STREAM_GAIN_PCT. One step in ECCL_CONN_STREAM_PROBE
 * goes the other way, so that both stay measured; the probes of a rank's two connectors fall on
 * different steps (the offset by the receiving rank), so that one step of a rank that receives
 * and sends is not a probe of both. The fastest, not the mean: a step the scheduler interrupts
 * only ever looks slower. Both sides' costs count: ordinary stores into lines the reader on
 * another die holds wait for each line's transfer, the reader of lines left dirty in the
 * writer's cache too. */
#define STREAM_MIN_BYTES (16 * 1024)
#define STREAM_WINDOW    4
#define STREAM_GAIN_PCT  15

/* Counts one step of `bytes` that took `ns`; true when it completed a window. */
static bool rate_note(struct eccl_conn_rate *r, size_t bytes, uint64_t ns)
{
    uint64_t v = ns * 1024 / bytes;
    uint32_t per_kib = v == 0 ? 1 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    if (r->n == 0 || per_kib < r->best)
        r->best = per_kib;
    if (++r->n < STREAM_WINDOW)
        return false;
    atomic_store_explicit(&r->last, r->best, memory_order_relaxed);
    r->n = 0;
    return true;
}

/* The sender's choice after a window of its own (both sides' last windows, both kinds). */
static void stream_choose(struct eccl_conn_ctrl *c)
{
    uint64_t cost[2];
    for (int k = 0; k < 2; k++) {
        uint64_t snd = atomic_load_explicit(&c->send_rate[k].last, memory_order_relaxed);
        uint64_t rcv = atomic_load_explicit(&c->recv_rate[k].last, memory_order_relaxed);
        if (!snd || !rcv)
            return;
        cost[k] = snd + rcv;
    }
    int on = c->stream_on ? 1 : 0;
    if (cost[!on] * 100 < cost[on] * (100 - STREAM_GAIN_PCT))
        c->stream_on = (uint32_t)!on;
}

/* Whether the current step of s goes into its slot with streaming stores: never where the
 * receiver does not take them (a GPU, the proxy); else by ECCL_HOST_STREAM, or the choice
 * (probes only in steps that are measured). */
static bool send_streams(struct peer_send s, enum kern_stream mode, size_t bytes)
{
    if (!(atomic_load_explicit(&s.c->stream, memory_order_relaxed) & ECCL_CONN_STREAM_ASK))
        return false;
    if (mode != KERN_STREAM_AUTO)
        return mode == KERN_STREAM_ON;
    bool on = s.c->stream_on;
    if (bytes < STREAM_MIN_BYTES)
        return on;
    uint32_t tail = atomic_load_explicit(&s.c->tail, memory_order_relaxed);
    uint32_t probe = (tail + 7u * (uint32_t)s.peer) % ECCL_CONN_STREAM_PROBE;
    return probe == ECCL_CONN_STREAM_PROBE - 1 ? !on : on;
}

/* After a step of `bytes` that took ns: the accounts of the receiver of `from` (NULL: the step
 * received nothing; streamed: how it came) and of the sender into `to` (NULL: it sent nothing;
 * stream: how it went). */
static void stream_note(struct eccl_conn_ctrl *from, bool streamed, struct eccl_conn_ctrl *to,
                        bool stream, enum kern_stream mode, size_t bytes, uint64_t ns)
{
    if (from) {
        if (atomic_load_explicit(&from->stream, memory_order_relaxed) != ECCL_CONN_STREAM_ASK)
            atomic_store_explicit(&from->stream, ECCL_CONN_STREAM_ASK, memory_order_relaxed);
        if (bytes >= STREAM_MIN_BYTES)
            rate_note(&from->recv_rate[streamed ? 1 : 0], bytes, ns);
    }
    if (to && bytes >= STREAM_MIN_BYTES && mode == KERN_STREAM_AUTO &&
        rate_note(&to->send_rate[stream ? 1 : 0], bytes, ns))
        stream_choose(to);
}

static ecclResult_t recv_begin_as(struct peer_recv r, struct kern_ctx *ctx, size_t expect,
                                  const char **slot, bool *streamed)
{
    uint32_t head = atomic_load_explicit(&r.c->head, memory_order_relaxed);
    ECCL_TRY(wait_data(r.c, head, ctx, r.peer));
    uint32_t got = atomic_load_explicit(&r.c->sizes[head % r.c->nslots], memory_order_relaxed);
    if (streamed)
        *streamed = got & ECCL_CONN_SIZE_STREAM;
    got &= ~ECCL_CONN_SIZE_STREAM;
    if (got & ECCL_CONN_SIZE_DEVDATA) {
        WARN("rank %d's GPU kernel sent a step into device memory while this rank runs the "
             "operation on host buffers: use device buffers on every rank or on none",
             r.peer);
        ctx->failed_peer = r.peer;
        return ecclInvalidUsage;
    }
    if (got != expect) {
        WARN("rank %d sent a step of %u bytes where %zu were expected: the ranks called "
             "different operations or counts",
             r.peer, got, expect);
        ctx->failed_peer = r.peer;
        return ecclInvalidUsage;
    }
    *slot = eccl_conn_data(r.c) + (size_t)(head % r.c->nslots) * r.c->slot_bytes;
    return ecclSuccess;
}

static ecclResult_t recv_begin(struct peer_recv r, struct kern_ctx *ctx, size_t expect,
                               const char **slot)
{
    return recv_begin_as(r, ctx, expect, slot, NULL);
}

static void recv_commit(struct peer_recv r)
{
    uint32_t head = atomic_load_explicit(&r.c->head, memory_order_relaxed);
    atomic_store_explicit(&r.c->head, head + 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r.c->head_waiters, memory_order_relaxed))
        eccl_futex_wake(&r.c->head, true);
    if (r.bell)
        eccl_bell_ring(r.bell);
}

/* The common shape of one step: what to receive, what to send, what to do between. */
enum step_kind {
    STEP_SEND,                  /* slot = pre(in) */
    STEP_RECV,                  /* out = prev */
    STEP_RECV_REDUCE_SEND,      /* slot = pre(in) + prev */
    STEP_RECV_REDUCE_COPY,      /* out = post(pre(in) + prev) */
    STEP_RECV_REDUCE_COPY_SEND, /* out = post(pre(in) + prev); slot = out */
    STEP_RECV_COPY_SEND,        /* out = prev; slot = prev */
    STEP_COPY_SEND, /* out = in (unless aliased); slot = in: no pre-op (AllGather, Bcast) */
};

struct step_io {
    struct peer_recv from;
    struct peer_send to;
    const struct eccl_redop *op;
    struct kern_ctx *ctx;
    bool stream_out; /* copies into the output buffer use streaming stores (stream_out_for) */
};

/* Whether w's copies into this rank's output buffer should bypass the caches: an output of at
 * least ECCL_HOST_STREAM_OUT_BYTES, which its own writes and the call's other buffers would push
 * out of the cache before the call ends anyway. Streaming stores write whole lines without reading
 * them first: a third less memory traffic for a copy. */
static bool stream_out_for(const struct eccl_work *w, int nranks, const struct kern_ctx *ctx)
{
    if (ctx->stream == KERN_STREAM_OFF || ctx->stream_out_bytes == 0)
        return false;
    uint64_t out = w->count * eccl_dtype_size(w->dtype);
    if (w->func == ECCL_FUNC_ALLGATHER)
        out *= (uint64_t)nranks;
    return out >= ctx->stream_out_bytes;
}

/* src to the output buffer and to the slot: in one pass, unless the output streams (the two
 * destinations' alignments differ, and a streaming store needs an aligned one: two passes, the
 * second reading src from the cache). */
static void copy_out_send(const struct step_io *io, char *out, char *slot, const char *src,
                          size_t bytes, bool stream)
{
    if (!io->stream_out) {
        (stream ? kern_copy2_stream : kern_copy2)(out, slot, src, bytes);
        return;
    }
    kern_copy_stream(out, src, bytes);
    if (stream)
        kern_copy_stream(slot, src, bytes);
    else
        memcpy(slot, src, bytes);
}

static ecclResult_t do_step(const struct step_io *io, enum step_kind kind, const char *in,
                            char *out, size_t nelem, size_t ts)
{
    size_t bytes = nelem * ts;
    const char *prev = NULL;
    char *slot = NULL;
    bool recv = kind != STEP_SEND && kind != STEP_COPY_SEND;
    bool send = kind != STEP_RECV && kind != STEP_RECV_REDUCE_COPY;
    bool streamed = false, stream = false;
    if (recv)
        ECCL_TRY(recv_begin_as(io->from, io->ctx, bytes, &prev, &streamed));
    if (send) {
        ECCL_TRY(send_begin(io->to, io->ctx, &slot));
        /* The copying kinds can store into the slot with streaming stores; the reducing ones
         * store as they compute. */
        stream = (kind == STEP_COPY_SEND || kind == STEP_RECV_COPY_SEND ||
                  kind == STEP_RECV_REDUCE_COPY_SEND) &&
                 send_streams(io->to, io->ctx->stream, bytes);
    }
    /* Only the steps that are measured read the clock. */
    uint64_t t0 = bytes >= STREAM_MIN_BYTES ? eccl_now_ns() : 0;
    switch (kind) {
    case STEP_SEND:
        eccl_reduce_pre(slot, in, nelem, io->op);
        break;
    case STEP_COPY_SEND:
        if (out && out != in)
            copy_out_send(io, out, slot, in, bytes, stream);
        else if (stream)
            kern_copy_stream(slot, in, bytes);
        else
            memcpy(slot, in, bytes);
        break;
    case STEP_RECV:
        if (io->stream_out)
            kern_copy_stream(out, prev, bytes);
        else
            memcpy(out, prev, bytes);
        break;
    case STEP_RECV_REDUCE_SEND:
        eccl_reduce_local(slot, in, prev, nelem, io->op);
        break;
    case STEP_RECV_REDUCE_COPY:
        eccl_reduce_local(out, in, prev, nelem, io->op);
        eccl_reduce_post(out, out, nelem, io->op);
        break;
    case STEP_RECV_REDUCE_COPY_SEND:
        eccl_reduce_local(out, in, prev, nelem, io->op);
        eccl_reduce_post(out, out, nelem, io->op);
        if (stream)
            kern_copy_stream(slot, out, bytes);
        else
            memcpy(slot, out, bytes);
        break;
    case STEP_RECV_COPY_SEND:
        copy_out_send(io, out, slot, prev, bytes, stream);
        break;
    }
    stream_note(recv ? io->from.c : NULL, streamed, send ? io->to.c : NULL, stream, io->ctx->stream,
                bytes, t0 ? eccl_now_ns() - t0 : 0);
    if (recv)
        recv_commit(io->from);
    if (send)
        send_commit_as(io->to, bytes, stream);
    return ecclSuccess;
}

/* base + off, or NULL for a buffer the rank does not have (Reduce's recvbuff off the root,
 * Broadcast's sendbuff): never dereferenced then, and no arithmetic on NULL. */
static char *buf_at(uint64_t base, size_t off)
{
    return base ? (char *)(uintptr_t)base + off : NULL;
}

/* --- ring algorithms ---------------------------------------------------------------------- */

struct ring_op {
    struct kern_chan *ch;
    const struct eccl_work *w;
    struct eccl_redop op;
    size_t ts;
    size_t chunk; /* elements per step */
    struct step_io io;
};

static void ring_op_init(struct ring_op *r, struct kern_chan *ch, const struct eccl_work *w,
                         struct kern_ctx *ctx)
{
    r->ch = ch;
    r->w = w;
    r->op.kind = w->redop;
    r->op.dtype = w->dtype;
    /* A device-resident PreMulSum scalar of a host communicator is in host memory: read now. */
    r->op.scalar = w->flags & ECCL_WORK_FLAG_SCALAR_PTR
                       ? eccl_redop_scalar_bits((const void *)(uintptr_t)w->scalar, w->dtype)
                       : w->scalar;
    r->ts = eccl_dtype_size(w->dtype);
    int n = ch->nranks;
    r->io.from.c = ch->ring_recv;
    r->io.from.peer = ch->ring[(ch->ring_index + n - 1) % n];
    r->io.to.c = ch->ring_send;
    r->io.to.peer = ch->ring[(ch->ring_index + 1) % n];
    r->io.from.bell = r->io.to.bell = ch->bell;
    r->io.op = &r->op;
    r->io.ctx = ctx;
    r->io.stream_out = stream_out_for(w, n, ctx);
    uint32_t slot = ch->ring_recv ? ch->ring_recv->slot_bytes : 0;
    if (ch->ring_send && ch->ring_send->slot_bytes < slot)
        slot = ch->ring_send->slot_bytes;
    r->chunk = r->ts ? slot / r->ts : 0;
}

/* One rank alone: out = post(pre(in)) for reductions, a copy otherwise. */
static void single_rank(const struct eccl_work *w, const struct eccl_redop *op, const char *in,
                        char *out, size_t nelem, int reduces)
{
    if (reduces) {
        eccl_reduce_pre(out, in, nelem, op);
        eccl_reduce_post(out, out, nelem, op);
    } else if (out != in) {
        memcpy(out, in, nelem * eccl_dtype_size(w->dtype));
    }
}

/* Two ranks, a piece that fits one slot: each sends its whole (pre-applied) input and reduces
 * what it receives, one hop instead of the ring's two. Both ranks compute combine(A, B) with A
 * the contribution of ring position 0, so they get the same bits for every type and op. */
#define EXCHANGE_MAX_BYTES (32 * 1024)

static ecclResult_t exchange_allreduce(struct ring_op *r, const char *in, char *out, size_t cnt)
{
    size_t bytes = cnt * r->ts;
    char *mine;
    const char *theirs;
    ECCL_TRY(send_begin(r->io.to, r->io.ctx, &mine));
    eccl_reduce_pre(mine, in, cnt, &r->op);
    send_commit(r->io.to, bytes);
    ECCL_TRY(recv_begin(r->io.from, r->io.ctx, bytes, &theirs));
    /* `mine` stays valid: the peer consumes it without writing, and this rank posts nothing
     * more before it is done with it. */
    if (r->ch->ring_index == 0)
        eccl_reduce_combine(out, mine, theirs, cnt, &r->op);
    else
        eccl_reduce_combine(out, theirs, mine, cnt, &r->op);
    eccl_reduce_post(out, out, cnt, &r->op);
    recv_commit(r->io.from);
    return ecclSuccess;
}

static ecclResult_t ring_allreduce(struct ring_op *r)
{
    const struct eccl_work *w = r->w;
    int n = r->ch->nranks, idx = r->ch->ring_index;
    size_t ts = r->ts, cnt = w->chan_count;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    if (n == 1) {
        single_rank(w, &r->op, in, out, cnt, 1);
        return ecclSuccess;
    }
    if (n == 2 && cnt <= r->chunk && cnt * ts <= EXCHANGE_MAX_BYTES)
        return exchange_allreduce(r, in, out, cnt);
    size_t loop_elems = (size_t)n * r->chunk;
    for (size_t loop = 0; loop < cnt; loop += loop_elems) {
        size_t rem = cnt - loop;
        size_t cc = ECCL_MIN(r->chunk, ECCL_DIV_UP(rem, (size_t)n));
#define CHUNK_OFF(c) (loop + (size_t)(c)*cc)
#define CHUNK_N(c)   ((size_t)(c)*cc >= rem ? 0 : ECCL_MIN(cc, rem - (size_t)(c)*cc))
        int c = (idx + n - 1) % n;
        ECCL_TRY(do_step(&r->io, STEP_SEND, in + CHUNK_OFF(c) * ts, NULL, CHUNK_N(c), ts));
        for (int j = 2; j < n; j++) {
            c = (idx + n - j) % n;
            ECCL_TRY(do_step(&r->io, STEP_RECV_REDUCE_SEND, in + CHUNK_OFF(c) * ts, NULL,
                             CHUNK_N(c), ts));
        }
        c = idx;
        ECCL_TRY(do_step(&r->io, STEP_RECV_REDUCE_COPY_SEND, in + CHUNK_OFF(c) * ts,
                         out + CHUNK_OFF(c) * ts, CHUNK_N(c), ts));
        for (int j = 1; j < n - 1; j++) {
            c = (idx + n - j) % n;
            ECCL_TRY(do_step(&r->io, STEP_RECV_COPY_SEND, NULL, out + CHUNK_OFF(c) * ts, CHUNK_N(c),
                             ts));
        }
        c = (idx + 1) % n;
        ECCL_TRY(do_step(&r->io, STEP_RECV, NULL, out + CHUNK_OFF(c) * ts, CHUNK_N(c), ts));
#undef CHUNK_OFF
#undef CHUNK_N
    }
    return ecclSuccess;
}

static ecclResult_t ring_reducescatter(struct ring_op *r)
{
    const struct eccl_work *w = r->w;
    int n = r->ch->nranks, idx = r->ch->ring_index;
    size_t ts = r->ts, cnt = w->chan_count, block = w->count * ts;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    const int *ring = r->ch->ring;
    if (n == 1) {
        single_rank(w, &r->op, in, out, cnt, 1);
        return ecclSuccess;
    }
    for (size_t loop = 0; loop < cnt; loop += r->chunk) {
        size_t ne = ECCL_MIN(r->chunk, cnt - loop);
        size_t off = loop * ts;
        int p = (idx + n - 1) % n;
        ECCL_TRY(do_step(&r->io, STEP_SEND, in + (size_t)ring[p] * block + off, NULL, ne, ts));
        for (int j = 2; j < n; j++) {
            p = (idx + n - j) % n;
            ECCL_TRY(do_step(&r->io, STEP_RECV_REDUCE_SEND, in + (size_t)ring[p] * block + off,
                             NULL, ne, ts));
        }
        ECCL_TRY(do_step(&r->io, STEP_RECV_REDUCE_COPY, in + (size_t)ring[idx] * block + off,
                         out + off, ne, ts));
    }
    return ecclSuccess;
}

/* --- single-copy Broadcast and AllGather -------------------------------------------------
 *
 * The same chains as the ring's, but a step carries a descriptor of the sender's buffer
 * (host_cma.h) and the receiver reads the bytes straight into its own buffer: one copy a hop
 * instead of two, and no slot traffic through the caches. The receiver consumes a step only
 * once it has read the bytes, so a sender waits for its connector to drain before it returns
 * (its buffer may be reused at once). Used when every connector of the channel is in shared
 * memory (no proxy), for pieces of at least ECCL_HOST_SINGLE_COPY_BYTES. */

static bool cma_use(const struct ring_op *r)
{
    size_t min = kern_cma_min_bytes();
    return min && r->ch->bell == NULL && r->ch->nranks > 1 && r->w->chan_count * r->ts >= min &&
           r->chunk * r->ts >= sizeof(struct kern_cma_desc);
}

/* Elements a single-copy step moves: at most KERN_CMA_CHUNK_BYTES, and small enough that an
 * operation takes more steps than two connectors hold, so that (as on the ring) a rank cannot
 * finish while a rank two hops downstream has stopped: a Broadcast root sees the failure.
 * Computed from the operation alone, so every rank gets the same. */
static size_t cma_step(size_t cnt, size_t ts)
{
    size_t step = ECCL_MIN(KERN_CMA_CHUNK_BYTES / ts, cnt / (2 * ECCL_CONN_MAX_SLOTS + 2));
    return ECCL_MAX((size_t)1, step);
}

static ecclResult_t cma_post(const struct step_io *io, const void *addr, size_t len)
{
    char *slot;
    ECCL_TRY(send_begin(io->to, io->ctx, &slot));
    struct kern_cma_desc d;
    kern_cma_describe(&d, addr, len);
    memcpy(slot, &d, sizeof(d));
    send_commit(io->to, sizeof(d));
    return ecclSuccess;
}

static ecclResult_t cma_take(const struct step_io *io, void *dst, size_t len)
{
    const char *slot;
    ECCL_TRY(recv_begin(io->from, io->ctx, sizeof(struct kern_cma_desc), &slot));
    int err = 0;
    ecclResult_t res = kern_cma_read((const struct kern_cma_desc *)(const void *)slot, dst, len,
                                     io->from.peer, &err);
    if (res != ecclSuccess) {
        io->ctx->failed_peer = io->from.peer;
        if (err == 0)
            return res;
        /* The sender is gone, or unmapped its buffer: after its communicator failed (it closes
         * its connectors before its call returns to the user who frees the buffer), a remote
         * failure; otherwise it freed the buffer while the call ran. */
        if (err == ESRCH || atomic_load_explicit(&io->from.c->closed, memory_order_acquire) ||
            atomic_load_explicit(io->ctx->abort, memory_order_acquire)) {
            WARN("rank %d ended the operation while this rank read its buffer (%s): its "
                 "communicator failed or was aborted",
                 io->from.peer, strerror(err));
            return ecclRemoteError;
        }
        WARN("reading %zu bytes from rank %d with process_vm_readv failed: %s (its buffer was "
             "freed during the call?)",
             len, io->from.peer, strerror(err));
        return ecclSystemError;
    }
    recv_commit(io->from);
    return ecclSuccess;
}

static ecclResult_t cma_drain(const struct step_io *io)
{
    uint32_t tail = atomic_load_explicit(&io->to.c->tail, memory_order_relaxed);
    return wait_head(io->to.c, tail, 1, io->ctx, io->to.peer);
}

static ecclResult_t cma_broadcast(struct ring_op *r, int pos)
{
    const struct eccl_work *w = r->w;
    int n = r->ch->nranks;
    size_t ts = r->ts, cnt = w->chan_count;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    size_t step = cma_step(cnt, ts);
    for (size_t loop = 0; loop < cnt; loop += step) {
        size_t ne = ECCL_MIN(step, cnt - loop), off = loop * ts, bytes = ne * ts;
        if (pos == 0) {
            ECCL_TRY(cma_post(&r->io, in + off, bytes));
            if (out && out != in)
                memcpy(out + off, in + off, bytes);
            continue;
        }
        ECCL_TRY(cma_take(&r->io, out + off, bytes));
        if (pos < n - 1)
            ECCL_TRY(cma_post(&r->io, out + off, bytes));
    }
    return pos < n - 1 ? cma_drain(&r->io) : ecclSuccess;
}

static ecclResult_t cma_allgather(struct ring_op *r)
{
    const struct eccl_work *w = r->w;
    int n = r->ch->nranks, idx = r->ch->ring_index;
    size_t ts = r->ts, cnt = w->chan_count, block = w->count * ts;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    const int *ring = r->ch->ring;
    size_t step = cma_step(cnt, ts);
    for (size_t loop = 0; loop < cnt; loop += step) {
        size_t ne = ECCL_MIN(step, cnt - loop), off = loop * ts, bytes = ne * ts;
        char *mine = out + (size_t)ring[idx] * block + off;
        ECCL_TRY(cma_post(&r->io, in + off, bytes));
        if (mine != in + off)
            memcpy(mine, in + off, bytes);
        for (int j = 1; j < n; j++) {
            char *dst = out + (size_t)ring[(idx + n - j) % n] * block + off;
            ECCL_TRY(cma_take(&r->io, dst, bytes));
            if (j < n - 1)
                ECCL_TRY(cma_post(&r->io, dst, bytes));
        }
    }
    return cma_drain(&r->io);
}

static ecclResult_t ring_allgather(struct ring_op *r)
{
    const struct eccl_work *w = r->w;
    int n = r->ch->nranks, idx = r->ch->ring_index;
    size_t ts = r->ts, cnt = w->chan_count, block = w->count * ts;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    const int *ring = r->ch->ring;
    if (n == 1) {
        single_rank(w, &r->op, in, out + (size_t)ring[0] * block, cnt, 0);
        return ecclSuccess;
    }
    if (cma_use(r))
        return cma_allgather(r);
    for (size_t loop = 0; loop < cnt; loop += r->chunk) {
        size_t ne = ECCL_MIN(r->chunk, cnt - loop);
        size_t off = loop * ts;
        ECCL_TRY(do_step(&r->io, STEP_COPY_SEND, in + off, out + (size_t)ring[idx] * block + off,
                         ne, ts));
        for (int j = 1; j < n - 1; j++) {
            int p = (idx + n - j) % n;
            ECCL_TRY(do_step(&r->io, STEP_RECV_COPY_SEND, NULL, out + (size_t)ring[p] * block + off,
                             ne, ts));
        }
        int p = (idx + 1) % n;
        ECCL_TRY(do_step(&r->io, STEP_RECV, NULL, out + (size_t)ring[p] * block + off, ne, ts));
    }
    return ecclSuccess;
}

static int ring_index_of(const struct kern_chan *ch, int rank)
{
    for (int i = 0; i < ch->nranks; i++)
        if (ch->ring[i] == rank)
            return i;
    return 0;
}

/* Broadcast and Reduce are chains along the ring: the rank at chain position 0 starts (the root
 * for Broadcast, the root's successor for Reduce), the last one ends (the root's predecessor for
 * Broadcast, the root for Reduce), the others pass each chunk on. */
static ecclResult_t ring_chain(struct ring_op *r, int start_after_root, enum step_kind first,
                               enum step_kind middle, enum step_kind last, int reduces)
{
    const struct eccl_work *w = r->w;
    int n = r->ch->nranks;
    size_t ts = r->ts, cnt = w->chan_count;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    if (n == 1) {
        single_rank(w, &r->op, in, out, cnt, reduces);
        return ecclSuccess;
    }
    int d = (r->ch->ring_index - ring_index_of(r->ch, w->root) + n) % n;
    int pos = (d - start_after_root + n) % n;
    enum step_kind kind = pos == 0 ? first : pos == n - 1 ? last : middle;
    for (size_t loop = 0; loop < cnt; loop += r->chunk) {
        size_t ne = ECCL_MIN(r->chunk, cnt - loop);
        size_t off = loop * ts;
        ECCL_TRY(do_step(&r->io, kind, in ? in + off : NULL, out ? out + off : NULL, ne, ts));
    }
    return ecclSuccess;
}

static ecclResult_t ring_broadcast(struct ring_op *r)
{
    if (cma_use(r)) {
        int n = r->ch->nranks;
        int pos = (r->ch->ring_index - ring_index_of(r->ch, r->w->root) + n) % n;
        return cma_broadcast(r, pos);
    }
    return ring_chain(r, 0, STEP_COPY_SEND, STEP_RECV_COPY_SEND, STEP_RECV, 0);
}

static ecclResult_t ring_reduce(struct ring_op *r)
{
    return ring_chain(r, 1, STEP_SEND, STEP_RECV_REDUCE_SEND, STEP_RECV_REDUCE_COPY, 1);
}

/* --- tree AllReduce ----------------------------------------------------------------------- */

static ecclResult_t tree_allreduce(struct ring_op *r)
{
    struct kern_chan *ch = r->ch;
    const struct eccl_work *w = r->w;
    struct kern_ctx *ctx = r->io.ctx;
    size_t ts = r->ts, cnt = w->chan_count;
    const char *in = buf_at(w->sendbuff, w->chan_offset * ts);
    char *out = buf_at(w->recvbuff, w->chan_offset * ts);
    if (ch->nranks == 1) {
        single_rank(w, &r->op, in, out, cnt, 1);
        return ecclSuccess;
    }
    int nchild = (ch->tree_child[0] >= 0) + (ch->tree_child[1] >= 0);
    struct peer_recv up[2], down = {ch->tree_down_recv, ch->tree_parent, ch->bell};
    struct peer_send to_parent = {ch->tree_up_send, ch->tree_parent, ch->bell}, to_child[2];
    size_t chunk = SIZE_MAX;
    for (int i = 0; i < nchild; i++) {
        up[i].c = ch->tree_up_recv[i];
        up[i].peer = ch->tree_child[i];
        up[i].bell = ch->bell;
        to_child[i].bell = ch->bell;
        to_child[i].c = ch->tree_down_send[i];
        to_child[i].peer = ch->tree_child[i];
        chunk = ECCL_MIN(chunk, up[i].c->slot_bytes / ts);
        chunk = ECCL_MIN(chunk, to_child[i].c->slot_bytes / ts);
    }
    if (ch->tree_parent >= 0) {
        chunk = ECCL_MIN(chunk, to_parent.c->slot_bytes / ts);
        chunk = ECCL_MIN(chunk, down.c->slot_bytes / ts);
    }
    for (size_t loop = 0; loop < cnt; loop += chunk) {
        size_t ne = ECCL_MIN(chunk, cnt - loop);
        size_t bytes = ne * ts, off = loop * ts;
        const char *cin[2] = {NULL, NULL};
        for (int i = 0; i < nchild; i++)
            ECCL_TRY(recv_begin(up[i], ctx, bytes, &cin[i]));
        char *dst = out + off;
        if (ch->tree_parent >= 0)
            ECCL_TRY(send_begin(to_parent, ctx, &dst));
        if (nchild == 0)
            eccl_reduce_pre(dst, in + off, ne, &r->op);
        else
            eccl_reduce_local(dst, in + off, cin[0], ne, &r->op);
        if (nchild == 2)
            eccl_reduce_combine(dst, dst, cin[1], ne, &r->op);
        for (int i = 0; i < nchild; i++)
            recv_commit(up[i]);
        if (ch->tree_parent >= 0) {
            send_commit(to_parent, bytes);
            const char *res;
            ECCL_TRY(recv_begin(down, ctx, bytes, &res));
            memcpy(out + off, res, bytes);
            recv_commit(down);
        } else {
            eccl_reduce_post(out + off, out + off, ne, &r->op);
        }
        for (int i = 0; i < nchild; i++) {
            char *slot;
            ECCL_TRY(send_begin(to_child[i], ctx, &slot));
            memcpy(slot, out + off, bytes);
            send_commit(to_child[i], bytes);
        }
    }
    return ecclSuccess;
}

/* --- point to point ----------------------------------------------------------------------- */

struct p2p_state {
    const struct eccl_work *w;
    size_t done;  /* bytes moved */
    size_t total; /* bytes to move */
    bool finished;
};

/* The connector a p2p pass that moved nothing sleeps on: the first one it found waiting. */
struct p2p_wait {
    struct eccl_conn_ctrl *c; /* NULL: none */
    int peer;
    bool on_tail;  /* waits for data (tail moves), else for space (head moves) */
    uint32_t seen; /* the value of that word when it stopped */
};

/* Counts one step of `bytes` moved for s; *left drops when that finishes s. */
static void p2p_step_done(struct p2p_state *s, size_t bytes, int *left)
{
    s->done += bytes;
    if (s->done == s->total) {
        s->finished = true;
        (*left)--;
    }
}

static bool p2p_blocked_by_earlier(const struct p2p_state *st, int i)
{
    for (int j = 0; j < i; j++)
        if (!st[j].finished && st[j].w->func == st[i].w->func && st[j].w->root == st[i].w->root)
            return true;
    return false;
}

/* Sends and receives to self: the i-th send matches the i-th receive. */
static ecclResult_t p2p_self(struct p2p_state *st, int n, int rank)
{
    int s = 0, r = 0;
    for (;;) {
        while (s < n && (st[s].w->func != ECCL_FUNC_SEND || st[s].w->root != rank))
            s++;
        while (r < n && (st[r].w->func != ECCL_FUNC_RECV || st[r].w->root != rank))
            r++;
        if (s == n && r == n)
            return ecclSuccess;
        if (s == n || r == n) {
            WARN("rank %d: a send to itself has no matching receive from itself, or the reverse",
                 rank);
            return ecclInvalidUsage;
        }
        if (st[s].total != st[r].total) {
            WARN("rank %d: send to itself of %zu bytes, receive from itself of %zu bytes", rank,
                 st[s].total, st[r].total);
            return ecclInvalidUsage;
        }
        if (st[s].total) {
            char *dst = (char *)(uintptr_t)st[r].w->recvbuff;
            const char *src = (const char *)(uintptr_t)st[s].w->sendbuff;
            if (dst != src)
                memmove(dst, src, st[s].total);
        }
        st[s].finished = st[r].finished = true;
        s++;
        r++;
    }
}

static ecclResult_t p2p_run(struct kern_chan *ch, const struct eccl_work *works, int n,
                            struct kern_ctx *ctx, struct p2p_state *st)
{
    int left = 0;
    for (int i = 0; i < n; i++) {
        size_t ts = eccl_dtype_size(works[i].dtype);
        st[i].w = &works[i];
        st[i].done = 0;
        st[i].total = works[i].chan_count * ts;
        st[i].finished = false;
        int peer = works[i].root;
        if (peer != ch->rank) {
            struct eccl_conn_ctrl *c =
                works[i].func == ECCL_FUNC_SEND ? ch->p2p_send[peer] : ch->p2p_recv[peer];
            if (!c) {
                WARN("no connection to rank %d for point-to-point work", peer);
                return ecclInternalError;
            }
            left++;
        }
    }
    ECCL_TRY(p2p_self(st, n, ch->rank));
    uint64_t start = 0;
    int idle = 0;
    while (left > 0) {
        bool progressed = false;
        struct p2p_wait sleep_on = {NULL, -1, false, 0};
        for (int i = 0; i < n; i++) {
            if (st[i].finished || p2p_blocked_by_earlier(st, i))
                continue;
            const struct eccl_work *w = st[i].w;
            int peer = w->root;
            if (w->func == ECCL_FUNC_SEND) {
                struct eccl_conn_ctrl *c = ch->p2p_send[peer];
                uint32_t tail = atomic_load_explicit(&c->tail, memory_order_relaxed);
                uint32_t head = atomic_load_explicit(&c->head, memory_order_acquire);
                while (tail - head < c->nslots && !st[i].finished) {
                    size_t bytes = ECCL_MIN((size_t)c->slot_bytes, st[i].total - st[i].done);
                    char *slot = eccl_conn_data(c) + (size_t)(tail % c->nslots) * c->slot_bytes;
                    memcpy(slot, (const char *)(uintptr_t)w->sendbuff + st[i].done, bytes);
                    struct peer_send s = {c, peer, ch->bell};
                    send_commit(s, bytes);
                    tail++;
                    p2p_step_done(&st[i], bytes, &left);
                    progressed = true;
                }
                if (!st[i].finished && !sleep_on.c)
                    sleep_on = (struct p2p_wait){c, peer, false, head};
            } else {
                struct eccl_conn_ctrl *c = ch->p2p_recv[peer];
                uint32_t head = atomic_load_explicit(&c->head, memory_order_relaxed);
                while (atomic_load_explicit(&c->tail, memory_order_acquire) != head &&
                       !st[i].finished) {
                    size_t bytes = ECCL_MIN((size_t)c->slot_bytes, st[i].total - st[i].done);
                    uint32_t got =
                        atomic_load_explicit(&c->sizes[head % c->nslots], memory_order_relaxed);
                    if (got & ECCL_CONN_SIZE_DEVDATA) {
                        WARN("rank %d's GPU kernel sent into device memory while this rank "
                             "receives into a host buffer: use device buffers on both sides",
                             peer);
                        ctx->failed_peer = peer;
                        return ecclInvalidUsage;
                    }
                    if (got != bytes) {
                        WARN("rank %d sent %u bytes in a step where %zu were expected: send and "
                             "receive counts differ",
                             peer, got, bytes);
                        ctx->failed_peer = peer;
                        return ecclInvalidUsage;
                    }
                    const char *slot =
                        eccl_conn_data(c) + (size_t)(head % c->nslots) * c->slot_bytes;
                    memcpy((char *)(uintptr_t)w->recvbuff + st[i].done, slot, bytes);
                    struct peer_recv rv = {c, peer, ch->bell};
                    recv_commit(rv);
                    head++;
                    p2p_step_done(&st[i], bytes, &left);
                    progressed = true;
                }
                if (!st[i].finished && !sleep_on.c)
                    sleep_on = (struct p2p_wait){c, peer, true, head};
            }
        }
        if (progressed) {
            start = 0;
            idle = 0;
            continue;
        }
        if (sleep_on.c && atomic_load_explicit(&sleep_on.c->closed, memory_order_acquire))
            return closed_error(ctx, sleep_on.peer);
        ECCL_TRY(kern_wait_check(ctx, &start, sleep_on.peer, "point-to-point data"));
        if (++idle < (int)ctx->spin / 64 + YIELDS_BEFORE_SLEEP) {
            if (idle > YIELDS_BEFORE_SLEEP)
                sched_yield();
            else
                eccl_cpu_relax();
            continue;
        }
        if (sleep_on.c) {
            _Atomic uint32_t *word = sleep_on.on_tail ? &sleep_on.c->tail : &sleep_on.c->head;
            _Atomic uint32_t *waiters =
                sleep_on.on_tail ? &sleep_on.c->tail_waiters : &sleep_on.c->head_waiters;
            atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
            if (atomic_load_explicit(word, memory_order_seq_cst) == sleep_on.seen)
                eccl_futex_wait(word, sleep_on.seen, ECCL_NS_PER_MS, true);
            atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
        }
    }
    return ecclSuccess;
}

/* --- entry -------------------------------------------------------------------------------- */

static ecclResult_t run_coll(struct kern_chan *ch, const struct eccl_work *w, struct kern_ctx *ctx)
{
    struct ring_op r;
    ring_op_init(&r, ch, w, ctx);
    if (r.ts == 0 || (ch->nranks > 1 && r.chunk == 0)) {
        WARN("bad work descriptor: datatype %d, channel %d", w->dtype, ch->id);
        return ecclInternalError;
    }
    switch (w->func) {
    case ECCL_FUNC_ALLREDUCE:
        return w->algo == ECCL_ALGO_TREE ? tree_allreduce(&r) : ring_allreduce(&r);
    case ECCL_FUNC_REDUCESCATTER:
        return ring_reducescatter(&r);
    case ECCL_FUNC_ALLGATHER:
        return ring_allgather(&r);
    case ECCL_FUNC_BROADCAST:
        return ring_broadcast(&r);
    case ECCL_FUNC_REDUCE:
        return ring_reduce(&r);
    default:
        WARN("bad work descriptor: function %d", w->func);
        return ecclInternalError;
    }
}

ecclResult_t kern_host_run(struct kern_chan *ch, const struct eccl_work *works, int nworks,
                           struct kern_ctx *ctx)
{
    int i = 0;
    for (; i < nworks; i++) {
        if (works[i].func == ECCL_FUNC_SEND || works[i].func == ECCL_FUNC_RECV)
            break;
        ECCL_TRY(run_coll(ch, &works[i], ctx));
    }
    if (i == nworks)
        return ecclSuccess;
    /* The rest is point-to-point (the planner puts it last). */
    int np = nworks - i;
    struct p2p_state stack_st[64];
    struct p2p_state *st = stack_st;
    if (np > (int)ECCL_ARRAY_SIZE(stack_st)) {
        st = eccl_calloc((size_t)np, sizeof(*st), "p2p-state");
        if (!st)
            return ecclSystemError;
    }
    for (int j = i; j < nworks; j++) {
        if (works[j].func != ECCL_FUNC_SEND && works[j].func != ECCL_FUNC_RECV) {
            WARN("collective work after point-to-point work in one channel's list");
            if (st != stack_st)
                eccl_free(st);
            return ecclInternalError;
        }
    }
    ecclResult_t res = p2p_run(ch, works + i, np, ctx, st);
    if (st != stack_st)
        eccl_free(st);
    return res;
}

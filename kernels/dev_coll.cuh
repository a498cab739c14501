/*
 * dev_coll.cuh - the collective kernels: the algorithms of kernels/host_exec.c (ring AllReduce,
 * ReduceScatter, AllGather, Broadcast and Reduce chains, tree AllReduce, point to point) run by
 * one thread block per channel over the same connectors, step for step, so that a GPU rank and
 * the chunking of its peers agree exactly.
 *
 * Thread 0 of a block does the waiting (connector counters, the closed word, the abort word, the
 * status word, the watchdog); the block then moves the step's data together. Data written into a
 * connector is fenced (__threadfence_system) before thread 0 publishes the step; data read from
 * one is read with volatile loads, since the slot was written by another process.
 *
 * Instantiated per data type and reduction by generated files (tools/gen-dev-kernels.sh):
 * coll_kernel<DTYPE, KIND> runs the reducing collectives, copy_kernel the rest.
 */
#ifndef ECCL_KERNELS_DEV_COLL_CUH
#define ECCL_KERNELS_DEV_COLL_CUH

#include <stdint.h>

#include "kernels/conn_layout.h"
#include "kernels/dev_prims.cuh"
#include "kernels/dev_work.h"
#include "kernels/reduce_dev.cuh"

namespace eccl_dev
{

/* ---- waiting ---------------------------------------------------------------------------------- */

struct blk {
    const kern_dev_chan *ch;
    const int32_t *ring; /* the ring order: in shared memory after blk_ring (up to
                            KERN_DEV_RING_SHARED ranks), else mapped host memory */
    bool ring_shared;
    volatile uint32_t *abort;
    kern_dev_status *status;
    uint64_t timeout_ns;
    uint32_t func;        /* of the work being run, for the status */
    uint32_t ll_bytes;    /* LL lines per slot after the device slots (0: no LL) */
    uint32_t ll_span;     /* bytes of LL lines per slot in ring connectors' device memory */
    uint32_t ll128_bytes; /* LL128 lines per slot after those (0: no LL128) */
};

__device__ __forceinline__ uint64_t now_ns()
{
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ volatile uint32_t *word(uint64_t conn, int off)
{
    return (volatile uint32_t *)((char *)conn + off);
}

/* Records the first failure; the others' waits see the status and stop. Thread 0 only. */
__device__ inline void fail(const blk &b, uint32_t code, int peer, uint32_t expect = 0,
                            uint32_t got = 0)
{
    if (atomicCAS(&b.status->code, 0u, code) == 0u) {
        b.status->peer = peer;
        b.status->expect = expect;
        b.status->got = got;
        b.status->func = b.func;
        __threadfence_system();
        *(volatile uint32_t *)&b.status->ready = 1;
    }
}

/* Checks whatever ends a wait. *start: when the wait began (0: not yet). Thread 0 only. */
__device__ inline uint32_t wait_check(const blk &b, uint64_t conn, uint64_t *start)
{
    if (*b.abort)
        return KERN_DEV_ABORTED;
    if (*(volatile uint32_t *)&b.status->code)
        return KERN_DEV_ABORTED;
    if (conn && *word(conn, ECCL_CONN_OFF_CLOSED))
        return KERN_DEV_CLOSED;
    if (b.timeout_ns) {
        uint64_t now = now_ns();
        if (*start == 0)
            *start = now;
        else if (now - *start > b.timeout_ns)
            return KERN_DEV_TIMEOUT;
    }
    return KERN_DEV_OK;
}

/* One direction of a connector as thread 0 of a block sees it: the addresses, the geometry and
 * the counters, read from the (host-mapped) control block once and then kept here, since only
 * this block moves its own counter (head for a receiver, tail for a sender) while it runs. */
struct conn_end {
    uint64_t ctrl; /* 0: none */
    uint64_t data; /* device slots, 0: none */
    int peer;
    uint32_t nslots;
    uint32_t slot_bytes;
    uint32_t mine;  /* receive: head; send: tail */
    uint32_t other; /* send: the last head seen */
    bool loaded;
};

__device__ __forceinline__ conn_end conn_end_of(uint64_t ctrl, uint64_t data, int peer)
{
    conn_end e;
    e.ctrl = ctrl;
    e.data = data;
    e.peer = peer;
    e.nslots = e.slot_bytes = e.mine = e.other = 0;
    e.loaded = false;
    return e;
}

/* Thread 0, before the first step on `e`. */
__device__ inline void conn_load(conn_end &e, bool send)
{
    if (e.loaded || !e.ctrl)
        return;
    e.nslots = *word(e.ctrl, ECCL_CONN_OFF_NSLOTS);
    e.slot_bytes = *word(e.ctrl, ECCL_CONN_OFF_SLOT_BYTES);
    if (e.nslots == 0)
        e.nslots = 1; /* never divide by zero on a corrupt block: the size check fails it */
    if (send) {
        e.mine = *word(e.ctrl, ECCL_CONN_OFF_TAIL);
        e.other = *word(e.ctrl, ECCL_CONN_OFF_HEAD);
    } else {
        e.mine = *word(e.ctrl, ECCL_CONN_OFF_HEAD);
    }
    e.loaded = true;
}

__device__ __forceinline__ char *conn_slot(const conn_end &e, bool dev, uint32_t step)
{
    char *base = dev ? (char *)e.data : (char *)e.ctrl + ECCL_CONN_DATA_OFF;
    return base + (size_t)(step % e.nslots) * e.slot_bytes;
}

/* Whether the sender posted the next step (one look): the tail past this side's head, not
 * merely off it, since an LL or LL128 sender writes its tail late (tails_defer) and a receiver
 * that read the lines may be ahead of it when the next work begins. Thread 0 only. */
__device__ __forceinline__ bool conn_has_data(const conn_end &e)
{
    return (int32_t)(*word(e.ctrl, ECCL_CONN_OFF_TAIL) - e.mine) > 0;
}

/* Whether the next slot is free, looking at the receiver's head only when the last value seen
 * says it is not. Thread 0 only. */
__device__ __forceinline__ bool conn_has_space(conn_end &e)
{
    if ((int32_t)(e.mine - e.other) < (int32_t)e.nslots)
        return true;
    e.other = *word(e.ctrl, ECCL_CONN_OFF_HEAD);
    /* Signed: a head ahead of this side's tail (which a correct peer never shows) must not read
     * as a full ring of 2^32 steps. */
    return (int32_t)(e.mine - e.other) < (int32_t)e.nslots;
}

/* Until the sender posted the next step. Thread 0 only. */
__device__ inline uint32_t wait_data(const blk &b, const conn_end &e)
{
    uint64_t start = 0;
    for (uint32_t spins = 0; !conn_has_data(e); spins++) {
        if ((spins & 63) == 63) {
            uint32_t r = wait_check(b, e.ctrl, &start);
            if (r)
                return r;
        }
    }
    return KERN_DEV_OK;
}

/* The tails that LL steps deferred (post_send_ll), per block, kept by thread 0: a ring has one
 * sending connector, a tree three. Written with system-scope release, after the steps' lines
 * and size words, at the end of the work or as soon as the block has to wait (for room, or for
 * lines that do not come): a receiver that does not run LL (ranks that made different calls)
 * then sees the steps and their LL-flagged size words and fails the call, instead of waiting
 * for this block while it waits for that receiver. */
struct tail_pend {
    uint64_t ctrl;
    uint32_t tail;
};
#define KERN_DEV_TAILS_PENDING 4
static __shared__ tail_pend s_pend[KERN_DEV_TAILS_PENDING];
static __shared__ int s_npend;

__device__ __forceinline__ void tail_release(uint64_t ctrl, uint32_t tail)
{
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(word(ctrl, ECCL_CONN_OFF_TAIL)),
                 "r"(tail)
                 : "memory");
}

/* Thread 0, after the block's barrier. Out of line: inlined into the wait loops it made nvcc
 * keep the steps' connector state in local memory (a 272-byte stack frame against 112), which
 * cost 4-7 us per call with 4 and 8 ranks; it runs once per work and on long waits only. */
static __device__ __noinline__ void tails_flush()
{
    for (int i = 0; i < s_npend; i++)
        tail_release(s_pend[i].ctrl, s_pend[i].tail);
    s_npend = 0;
}

/* Thread 0: connector `ctrl`'s tail is now `tail`, written later. */
__device__ inline void tails_defer(uint64_t ctrl, uint32_t tail)
{
    for (int i = 0; i < s_npend; i++) {
        if (s_pend[i].ctrl == ctrl) {
            s_pend[i].tail = tail;
            return;
        }
    }
    if (s_npend == KERN_DEV_TAILS_PENDING) {
        tail_release(ctrl, tail);
        return;
    }
    s_pend[s_npend].ctrl = ctrl;
    s_pend[s_npend].tail = tail;
    s_npend++;
}

/* Until the next slot is free; deferred tails are written before the wait. Thread 0 only. */
__device__ inline uint32_t wait_space(const blk &b, conn_end &e)
{
    uint64_t start = 0;
    for (uint32_t spins = 0; !conn_has_space(e); spins++) {
        if (spins == 0)
            tails_flush();
        if ((spins & 63) == 63) {
            uint32_t r = wait_check(b, e.ctrl, &start);
            if (r)
                return r;
        }
    }
    return KERN_DEV_OK;
}

/* Where the posted step's data is, from its size word: *slot, or a failure code when the size is
 * not `bytes` or the data is in device slots this side does not have. Thread 0 only. */
__device__ inline uint32_t recv_slot(const blk &b, const conn_end &e, size_t bytes, char **slot)
{
    uint32_t got = *word(e.ctrl, ECCL_CONN_OFF_SIZES + 4 * (int)(e.mine % e.nslots));
    bool dev = (got & ECCL_CONN_SIZE_DEVDATA) != 0;
    got &= ~ECCL_CONN_SIZE_DEVDATA;
    if (got != bytes) {
        fail(b, KERN_DEV_MISMATCH, e.peer, (uint32_t)bytes, got);
        return KERN_DEV_MISMATCH;
    }
    if (dev && !e.data) {
        fail(b, KERN_DEV_NO_DEVDATA, e.peer);
        return KERN_DEV_NO_DEVDATA;
    }
    *slot = conn_slot(e, dev, e.mine);
    return KERN_DEV_OK;
}

/* Publishes one step: its size (flagged when the data went to the device slots), then tail + 1.
 * Thread 0, after the block fenced its data and met at a barrier. */
__device__ inline void post_send(conn_end &e, size_t bytes)
{
    uint32_t t = e.mine;
    *word(e.ctrl, ECCL_CONN_OFF_SIZES + 4 * (int)(t % e.nslots)) =
        (uint32_t)bytes | (e.data ? ECCL_CONN_SIZE_DEVDATA : 0u);
    __threadfence_system();
    *word(e.ctrl, ECCL_CONN_OFF_TAIL) = t + 1;
    e.mine = t + 1;
}

/* Frees the consumed slot: head + 1. Thread 0, after the block read the step and met at a
 * barrier. */
__device__ inline void post_recv(conn_end &e)
{
    *word(e.ctrl, ECCL_CONN_OFF_HEAD) = e.mine + 1;
    e.mine++;
}

/* ---- one step --------------------------------------------------------------------------------- */

struct step_io {
    conn_end from; /* receive from */
    conn_end to;   /* send to */
};

__device__ __forceinline__ step_io step_io_of(uint64_t from, uint64_t from_data, int from_peer,
                                              uint64_t to, uint64_t to_data, int to_peer)
{
    step_io io;
    io.from = conn_end_of(from, from_data, from_peer);
    io.to = conn_end_of(to, to_data, to_peer);
    return io;
}

struct step_shared {
    const char *prev;
    char *slot;
    uint32_t err;
};

/* Thread 0: waits for what the step needs; the block learns the outcome through sh. */
__device__ inline void step_acquire(const blk &b, step_io &io, bool recv, bool send, size_t bytes,
                                    step_shared *sh)
{
    uint32_t e = KERN_DEV_OK;
    if (recv) {
        conn_load(io.from, false);
        e = wait_data(b, io.from);
        if (e == KERN_DEV_OK) {
            char *slot = nullptr;
            e = recv_slot(b, io.from, bytes, &slot);
            sh->prev = slot;
        } else if (e != KERN_DEV_ABORTED) {
            fail(b, e, io.from.peer);
        }
    }
    if (e == KERN_DEV_OK && send) {
        conn_load(io.to, true);
        e = wait_space(b, io.to);
        if (e == KERN_DEV_OK)
            sh->slot = conn_slot(io.to, io.to.data != 0, io.to.mine);
        else if (e != KERN_DEV_ABORTED)
            fail(b, e, io.to.peer);
    }
    sh->err = e;
}

template <typename T> __device__ __forceinline__ T vload(const T *p)
{
    return *(const volatile T *)p;
}

/* The step of host_exec.c's do_step, on T elements. OP: a redop (reducing kernels) or void. */
template <typename OP>
__device__ inline uint32_t do_step(const blk &b, step_io &io, const OP &op, step_kind kind,
                                   const typename OP::T *in, typename OP::T *out, size_t nelem)
{
    typedef typename OP::T T;
    __shared__ step_shared sh;
    size_t bytes = nelem * sizeof(T);
    bool recv = kind != STEP_SEND && kind != STEP_COPY_SEND;
    bool send = kind != STEP_RECV && kind != STEP_RECV_REDUCE_COPY;
    if (threadIdx.x == 0)
        step_acquire(b, io, recv, send, bytes, &sh);
    __syncthreads();
    uint32_t err = sh.err;
    if (err) {
        __syncthreads(); /* nobody reads sh after this before thread 0 writes it again */
        return err;
    }
    const T *prev = (const T *)sh.prev;
    T *slot = (T *)sh.slot;
    step_run_kind<OP, true>(kind, op, in, prev, out, slot, nelem, threadIdx.x, blockDim.x);
    __threadfence_system();
    __syncthreads();
    if (threadIdx.x == 0) {
        if (recv)
            post_recv(io.from);
        if (send)
            post_send(io.to, bytes);
    }
    return KERN_DEV_OK;
}

/* ---- LL: flag-in-data lines ------------------------------------------------------------------ */

/* A step in LL travels as 16-byte lines in the receiver's device memory, after the connector's
 * slots (ll_bytes per slot): 4 bytes of data, a flag, 4 more bytes, the flag again, written by
 * one 16-byte store. The flag is the step's number + 1, so a line is valid once both flags read
 * it, and the receiver needs no counter from the sender: no hand-over through host memory and no
 * system-wide fence on the way. Every thread waits for its own lines. Counters still move as for
 * Simple (head paces the sender; tail and the size word, flagged ECCL_CONN_SIZE_LL, keep the
 * connector's state for the next launch and for a receiver that does not run LL), but the
 * sender writes tail only at the end of the work or when it has to wait (tails_defer):
 * one system-scope release per work instead of one per step, which cost about 2 us each on the
 * ring's critical path. */

/* A line's 8 data bytes as elements. Converted to and from the 8-byte word with memcpy, never
 * through a union or a cast pointer: the compiler may assume those do not alias. */
template <typename T> struct line8 {
    T e[8 / sizeof(T)];
};

template <typename T> __device__ __forceinline__ line8<T> ll_unpack(uint64_t u)
{
    line8<T> x;
    memcpy(&x, &u, 8);
    return x;
}

template <typename T> __device__ __forceinline__ uint64_t ll_pack(const line8<T> &x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    return u;
}

__device__ __forceinline__ char *ll_lines(const blk &b, const conn_end &e, uint32_t step)
{
    return (char *)e.data + (size_t)e.nslots * e.slot_bytes +
           (size_t)(step % e.nslots) * b.ll_bytes;
}

__device__ __forceinline__ void ll_store(char *lines, size_t l, uint64_t v, uint32_t flag)
{
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(lines + 16 * l),
                 "r"((uint32_t)v), "r"(flag), "r"((uint32_t)(v >> 32)), "r"(flag)
                 : "memory");
}

/* For a wait for lines that lasts: when the sender has posted step `step` (its tail, which LL
 * and LL128 senders write late, is past it) with a size word other than `want`, the ranks made
 * different calls (another size, or another protocol): the step fails with KERN_DEV_MISMATCH
 * instead of waiting for lines that will not come. */
__device__ inline uint32_t ll_posted_check(const blk &b, uint64_t conn, int peer, uint32_t step,
                                           uint32_t want)
{
    if (!conn || (int32_t)(*word(conn, ECCL_CONN_OFF_TAIL) - step) <= 0)
        return KERN_DEV_OK;
    uint32_t nslots = *word(conn, ECCL_CONN_OFF_NSLOTS);
    uint32_t got = *word(conn, ECCL_CONN_OFF_SIZES + 4 * (int)(step % (nslots ? nslots : 1)));
    if (got == want)
        return KERN_DEV_OK;
    fail(b, KERN_DEV_MISMATCH, peer, want, got);
    return KERN_DEV_MISMATCH;
}

/* Line l once its flags say `flag`; false when the step is given up (abort, a failure seen by
 * another thread or block, the peer closed the connector, the watchdog, a size word other than
 * `want`). */
__device__ inline bool ll_load(const blk &b, uint64_t conn, int peer, const char *lines, size_t l,
                               uint32_t flag, uint32_t want, uint64_t *v, uint32_t *s_err)
{
    uint64_t start = 0;
    for (uint32_t spins = 0;; spins++) {
        uint32_t x, f1, y, f2;
        asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(x), "=r"(f1), "=r"(y), "=r"(f2)
                     : "l"(lines + 16 * l)
                     : "memory");
        if (f1 == flag && f2 == flag) {
            *v = (uint64_t)x | ((uint64_t)y << 32);
            return true;
        }
        if ((spins & 1023) == 1023) {
            /* Waiting long (16384 polls; ordinary waits end well before): a receiver that
             * does not run LL may be what this block waits for, so it sees the steps now. */
            if (threadIdx.x == 0 && (spins & 16383) == 16383)
                tails_flush();
            if (*(volatile uint32_t *)s_err)
                return false;
            uint32_t r = KERN_DEV_OK;
            if ((spins & 16383) == 16383 &&
                (r = ll_posted_check(b, conn, peer, flag - 1, want)) != KERN_DEV_OK) {
                atomicCAS(s_err, 0u, r);
                return false;
            }
            r = wait_check(b, conn, &start);
            if (r) {
                if (r != KERN_DEV_ABORTED)
                    fail(b, r, peer);
                atomicCAS(s_err, 0u, r);
                return false;
            }
        }
    }
}

/* Elements [l * N, l * N + N) of p (N = 8 / sizeof(T)); past nelem: 0. */
template <typename T> __device__ __forceinline__ line8<T> ll_in(const T *p, size_t l, size_t nelem)
{
    constexpr int N = 8 / sizeof(T);
    size_t first = l * N;
    if (first + N <= nelem && ((uintptr_t)(p + first) & 7) == 0)
        return ll_unpack<T>(*(const uint64_t *)(p + first));
    line8<T> x = ll_unpack<T>(0);
    for (int j = 0; j < N && first + j < nelem; j++)
        x.e[j] = p[first + j];
    return x;
}

template <typename T>
__device__ __forceinline__ void ll_out(T *p, size_t l, size_t nelem, const line8<T> &x)
{
    constexpr int N = 8 / sizeof(T);
    size_t first = l * N;
    if (first + N <= nelem && ((uintptr_t)(p + first) & 7) == 0) {
        *(uint64_t *)(p + first) = ll_pack(x);
        return;
    }
    for (int j = 0; j < N && first + j < nelem; j++)
        p[first + j] = x.e[j];
}

/* Records an LL step for the connector's bookkeeping: its size word now, tail later
 * (tails_defer). Thread 0, after the block's barrier. */
__device__ inline void post_send_ll(conn_end &e, size_t bytes, uint32_t proto_flag)
{
    uint32_t t = e.mine;
    *word(e.ctrl, ECCL_CONN_OFF_SIZES + 4 * (int)(t % e.nslots)) =
        (uint32_t)bytes | ECCL_CONN_SIZE_DEVDATA | proto_flag;
    tails_defer(e.ctrl, t + 1);
    e.mine = t + 1;
}

/* The block's share of an LL step: each thread its lines. */
template <typename OP, int KIND>
__device__ inline void ll_run(const blk &b, const conn_end &from, const OP &op,
                              const typename OP::T *in, const char *prev, uint32_t rflag,
                              uint32_t want, typename OP::T *out, char *slot, uint32_t sflag,
                              size_t nelem, uint32_t *s_err)
{
    typedef typename OP::T T;
    typedef step_traits<KIND> tr;
    constexpr int N = 8 / sizeof(T);
    bool write_out = tr::out && out != nullptr && !(KIND == STEP_COPY_SEND && out == in);
    /* An empty step still moves one line: a receiver must not finish a step (and move head)
     * before its sender has reached it, or the sender would see head ahead of its tail. */
    size_t nl = nelem ? (nelem + N - 1) / N : 1;
    for (size_t l = threadIdx.x; l < nl; l += blockDim.x) {
        line8<T> x = tr::in ? ll_in(in, l, nelem) : ll_unpack<T>(0);
        uint64_t yw = 0;
        if (tr::prev && !ll_load(b, from.ctrl, from.peer, prev, l, rflag, want, &yw, s_err))
            return;
        line8<T> y = ll_unpack<T>(yw), r;
#pragma unroll
        for (int j = 0; j < N; j++)
            r.e[j] = step_elem<OP, KIND>(op, x.e[j], y.e[j]);
        if (write_out)
            ll_out(out, l, nelem, r);
        if (tr::slot)
            ll_store(slot, l, ll_pack(r), sflag);
    }
}

/* ---- LL128: 128-byte lines, one flag word each ------------------------------------------------ */

/* A step in LL128 travels as 128-byte lines in the receiver's device memory, after the
 * connector's LL lines (b.ll_span per slot), b.ll128_bytes per slot: 120 bytes of data and an
 * 8-byte flag (the step's number + 1) in the last word. Eight lanes of a warp own a line, 16
 * bytes each, lane 7 its last 8 data bytes and the flag; the warp writes its lines with one
 * 16-byte store per lane after __syncwarp, so a line's data and its flag travel in one
 * instruction, and a receiving warp reads its lines the same way and reads them again until
 * every flag lane of the warp sees the step's flag. That a 128-byte line written by one warp
 * store is seen whole or not at all is what NCCL's LL128 relies on too (enabled there on NVLink,
 * not over PCIe); here it is used between ranks on one GPU, where tests/gpu/test_dev_colls
 * checks every step's bits against the host executor, and across GPUs only on request
 * (core/transport.c). Data is 120/128 of the lines (LL: half), the step needs no fence and no counter
 * from the sender, and a slot carries a whole Simple step, so LL128 splits an operation as
 * Simple does and gives the same bits. The counters move as in LL (tails_defer). */

#define KERN_DEV_LL128_LINE   128
#define KERN_DEV_LL128_DATA   120
#define KERN_DEV_LL128_UNROLL 2 /* line groups (4 lines) a warp has in flight */

__device__ __forceinline__ char *ll128_lines(const blk &b, const conn_end &e, uint32_t step)
{
    return (char *)e.data + (size_t)e.nslots * ((size_t)e.slot_bytes + b.ll_span) +
           (size_t)(step % e.nslots) * b.ll128_bytes;
}

/* A lane's 16 bytes of a line as elements (lane 7: the first 8 only). */
template <typename T> struct word16 {
    T e[16 / sizeof(T)];
};

template <typename T> __device__ __forceinline__ word16<T> w16_unpack(uint64_t lo, uint64_t hi)
{
    word16<T> x;
    memcpy(&x.e[0], &lo, 8);
    memcpy(&x.e[8 / sizeof(T)], &hi, 8);
    return x;
}

template <typename T>
__device__ __forceinline__ void w16_pack(const word16<T> &x, uint64_t *lo, uint64_t *hi)
{
    memcpy(lo, &x.e[0], 8);
    memcpy(hi, &x.e[8 / sizeof(T)], 8);
}

/* Bytes [off, off + len) of the step's elements p[0, nelem) (len 8 or 16); past nelem: 0. */
template <typename T>
__device__ __forceinline__ word16<T> w16_in(const T *p, size_t off, int len, size_t nelem)
{
    size_t first = off / sizeof(T);
    int n = len / (int)sizeof(T);
    if (first + n <= nelem && ((uintptr_t)(p + first) & 7) == 0) {
        const uint64_t *q = (const uint64_t *)(p + first);
        return w16_unpack<T>(q[0], len == 16 ? q[1] : 0);
    }
    word16<T> x = w16_unpack<T>(0, 0);
    for (int j = 0; j < n && first + j < nelem; j++)
        x.e[j] = p[first + j];
    return x;
}

template <typename T>
__device__ __forceinline__ void w16_out(T *p, size_t off, int len, size_t nelem, const word16<T> &x)
{
    size_t first = off / sizeof(T);
    int n = len / (int)sizeof(T);
    if (first + n <= nelem && ((uintptr_t)(p + first) & 7) == 0) {
        uint64_t lo, hi;
        w16_pack(x, &lo, &hi);
        uint64_t *q = (uint64_t *)(p + first);
        q[0] = lo;
        if (len == 16)
            q[1] = hi;
        return;
    }
    for (int j = 0; j < n && first + j < nelem; j++)
        p[first + j] = x.e[j];
}

/* The warp's U line groups from `lines` (lane's 16 bytes at lines + 16 * lane of each group) once
 * every flag lane sees `flag`; false (for the whole warp) when the step is given up. Every lane
 * of the warp calls it, converged. */
template <int U>
__device__ __forceinline__ bool ll128_load(const blk &b, uint64_t conn, int peer, const char *lines,
                                           const bool *act, uint64_t flag, uint32_t want_size,
                                           uint64_t *lo, uint64_t *hi, uint32_t *s_err)
{
    const unsigned lane = threadIdx.x & 31;
    const bool flag_lane = (lane & 7) == 7;
    uint64_t start = 0;
    for (uint32_t spins = 0;; spins++) {
        bool bad = false;
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (act[u]) {
                asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];"
                             : "=l"(lo[u]), "=l"(hi[u])
                             : "l"(lines + (size_t)u * 4 * KERN_DEV_LL128_LINE + 16 * lane)
                             : "memory");
                bad |= flag_lane && hi[u] != flag;
            }
        }
        if (!__any_sync(0xffffffffu, bad))
            return true;
        if ((spins & 1023) == 1023) {
            uint32_t r = KERN_DEV_OK;
            if (lane == 0) {
                if (threadIdx.x == 0 && (spins & 16383) == 16383)
                    tails_flush();
                if (*(volatile uint32_t *)s_err)
                    r = KERN_DEV_ABORTED;
                else if ((spins & 16383) == 16383)
                    r = ll_posted_check(b, conn, peer, (uint32_t)flag - 1, want_size);
                if (r == KERN_DEV_OK && (r = wait_check(b, conn, &start)) != KERN_DEV_OK)
                    if (r != KERN_DEV_ABORTED)
                        fail(b, r, peer);
                if (r != KERN_DEV_OK)
                    atomicCAS(s_err, 0u, r);
            }
            if (__shfl_sync(0xffffffffu, r, 0) != KERN_DEV_OK)
                return false;
        }
    }
}

/* The block's share of an LL128 step: each warp U line groups of 4 lines at a time. */
template <typename OP, int KIND>
__device__ __forceinline__ void ll128_run(const blk &b, uint64_t from_ctrl, int from_peer,
                                          const OP &op, const typename OP::T *in, const char *prev,
                                          uint32_t rflag, uint32_t want_size, typename OP::T *out,
                                          char *slot, uint32_t sflag, size_t nelem, uint32_t *s_err)
{
    typedef typename OP::T T;
    typedef step_traits<KIND> tr;
    constexpr int U = KERN_DEV_LL128_UNROLL;
    constexpr int N = 16 / sizeof(T);
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int j = (int)(lane & 7), len = j < 7 ? 16 : 8;
    bool write_out = tr::out && out != nullptr && !(KIND == STEP_COPY_SEND && out == in);
    size_t bytes = nelem * sizeof(T);
    /* An empty step still moves one line (see ll_run). */
    size_t nl = bytes ? (bytes + KERN_DEV_LL128_DATA - 1) / KERN_DEV_LL128_DATA : 1;
    for (size_t g0 = (size_t)warp * 4 * U; g0 < nl; g0 += (size_t)nwarps * 4 * U) {
        bool act[U];
        size_t line[U];
        word16<T> x[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            line[u] = g0 + (size_t)u * 4 + (lane >> 3);
            act[u] = line[u] < nl;
            x[u] = tr::in && act[u] ? w16_in(in, line[u] * KERN_DEV_LL128_DATA + 16 * j, len, nelem)
                                    : w16_unpack<T>(0, 0);
        }
        uint64_t ylo[U], yhi[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            ylo[u] = yhi[u] = 0;
        __syncwarp();
        if (tr::prev && !ll128_load<U>(b, from_ctrl, from_peer, prev + g0 * KERN_DEV_LL128_LINE,
                                       act, rflag, want_size, ylo, yhi, s_err))
            return;
        uint64_t rlo[U], rhi[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            word16<T> y = w16_unpack<T>(ylo[u], yhi[u]), r;
#pragma unroll
            for (int k = 0; k < N; k++)
                r.e[k] = step_elem<OP, KIND>(op, x[u].e[k], y.e[k]);
            if (write_out && act[u])
                w16_out(out, line[u] * KERN_DEV_LL128_DATA + 16 * j, len, nelem, r);
            w16_pack(r, &rlo[u], &rhi[u]);
            if (j == 7)
                rhi[u] = sflag;
        }
        if (tr::slot) {
            __syncwarp(); /* a line's eight lanes store together: its data and flag in one go */
#pragma unroll
            for (int u = 0; u < U; u++)
                if (act[u])
                    asm volatile("st.volatile.global.v2.u64 [%0], {%1, %2};" ::"l"(
                                     slot + line[u] * KERN_DEV_LL128_LINE + 16 * j),
                                 "l"(rlo[u]), "l"(rhi[u])
                                 : "memory");
        }
    }
}

struct ll_shared {
    const char *prev;
    char *slot;
    uint32_t rflag;
    uint32_t sflag;
    uint32_t err;
};

/* do_step in LL (L128 false) or LL128. The connectors have device slots with lines of that
 * kind (the planner chose the protocol only where every rank's do). */
template <typename OP, bool L128>
__device__ inline uint32_t do_step_ll(const blk &b, step_io &io, const OP &op, step_kind kind,
                                      const typename OP::T *in, typename OP::T *out, size_t nelem)
{
    typedef typename OP::T T;
    __shared__ ll_shared sh;
    size_t bytes = nelem * sizeof(T);
    const uint32_t proto_flag = L128 ? ECCL_CONN_SIZE_LL128 : ECCL_CONN_SIZE_LL;
    const uint32_t want = (uint32_t)bytes | ECCL_CONN_SIZE_DEVDATA | proto_flag;
    bool recv = kind != STEP_SEND && kind != STEP_COPY_SEND;
    bool send = kind != STEP_RECV && kind != STEP_RECV_REDUCE_COPY;
    if (threadIdx.x == 0) {
        uint32_t e = KERN_DEV_OK;
        if (recv) {
            conn_load(io.from, false);
            if (!io.from.data) {
                fail(b, KERN_DEV_NO_DEVDATA, io.from.peer);
                e = KERN_DEV_NO_DEVDATA;
            }
            sh.prev =
                L128 ? ll128_lines(b, io.from, io.from.mine) : ll_lines(b, io.from, io.from.mine);
            sh.rflag = io.from.mine + 1;
        }
        if (e == KERN_DEV_OK && send) {
            conn_load(io.to, true);
            if (!io.to.data) {
                fail(b, KERN_DEV_NO_DEVDATA, io.to.peer);
                e = KERN_DEV_NO_DEVDATA;
            } else {
                e = wait_space(b, io.to);
                if (e != KERN_DEV_OK && e != KERN_DEV_ABORTED)
                    fail(b, e, io.to.peer);
            }
            sh.slot = L128 ? ll128_lines(b, io.to, io.to.mine) : ll_lines(b, io.to, io.to.mine);
            sh.sflag = io.to.mine + 1;
        }
        sh.err = e;
    }
    __syncthreads();
    if (sh.err) {
        uint32_t e = sh.err;
        __syncthreads();
        return e;
    }
    const char *prev = sh.prev;
    char *slot = sh.slot;
    uint32_t rf = sh.rflag, sf = sh.sflag;
    switch (kind) {
#define ECCL_LL_CASE(K)                                                                            \
    case K:                                                                                        \
        if (L128)                                                                                  \
            ll128_run<OP, K>(b, io.from.ctrl, io.from.peer, op, in, prev, rf, want, out, slot, sf, \
                             nelem, &sh.err);                                                      \
        else                                                                                       \
            ll_run<OP, K>(b, io.from, op, in, prev, rf, want, out, slot, sf, nelem, &sh.err);      \
        break;
        ECCL_LL_CASE(STEP_SEND)
        ECCL_LL_CASE(STEP_RECV)
        ECCL_LL_CASE(STEP_RECV_REDUCE_SEND)
        ECCL_LL_CASE(STEP_RECV_REDUCE_COPY)
        ECCL_LL_CASE(STEP_RECV_REDUCE_COPY_SEND)
        ECCL_LL_CASE(STEP_RECV_COPY_SEND)
        ECCL_LL_CASE(STEP_COPY_SEND)
#undef ECCL_LL_CASE
    default:
        break;
    }
    __syncthreads();
    uint32_t err = sh.err;
    __syncthreads(); /* everyone read err before thread 0 writes sh again */
    if (err)
        return err;
    if (threadIdx.x == 0) {
        if (recv)
            post_recv(io.from);
        if (send)
            post_send_ll(io.to, bytes, proto_flag);
    }
    return KERN_DEV_OK;
}

/* The byte-moving kernel's "reduction": copies only (AllGather, Broadcast). Moves 8-byte words
 * when the step allows, bytes otherwise; the chunking stays that of the element type. */
struct copy_op {
    typedef uint8_t T;
    __device__ T pre(T x) const
    {
        return x;
    }
    __device__ T local(T x, T) const
    {
        return x;
    }
    __device__ T post(T x) const
    {
        return x;
    }
};

/* ---- ring and tree algorithms ------------------------------------------------------------------ */

/* L128: the kernels that run LL128 works, and only those (kern_dev_kernel_of): LL128's registers
 * kept apart from the other kernels' (in one kernel they made nvcc spill its state to a 624-736
 * byte stack frame against 112), and no tree or point-to-point code in them. */
template <typename OP, bool L128 = false> struct algo {
    typedef typename OP::T T;
    const blk &b;
    const OP &op;
    const eccl_work &w;
    step_io io;
    size_t chunk; /* elements per step */
    size_t ts;    /* bytes per element: sizeof(T) for reductions, the dtype's size for copies */
    bool ll;      /* the work's protocol is LL */
    bool ll128;   /* LL128: ring connectors only (the planner never pairs it with the tree) */

    __device__ algo(const blk &b_, const OP &op_, const eccl_work &w_, size_t ts_)
        : b(b_), op(op_), w(w_), ts(ts_)
    {
        ll = !L128 && w.proto == ECCL_PROTO_LL && b.ll_bytes != 0;
        ll128 = L128 && w.proto == ECCL_PROTO_LL128 && b.ll128_bytes != 0;
        const kern_dev_chan *ch = b.ch;
        io = step_io_of(ch->ring_recv, ch->ring_recv_data, ch->ring_prev, ch->ring_send,
                        ch->ring_send_data, ch->ring_next);
        uint32_t slot = ch->ring_slot_bytes;
        if (ll)
            slot = b.ll_bytes / 2; /* the payload of a slot's lines */
        if (ll128)                 /* a Simple slot's worth: the lines are sized for it */
            slot = min(slot, b.ll128_bytes / KERN_DEV_LL128_LINE * KERN_DEV_LL128_DATA);
        /* A work in the wrong kind of kernel (or LL128 without lines): chunk 0 fails it. */
        if (L128 != (w.proto == ECCL_PROTO_LL128) || (L128 && !ll128))
            slot = 0;
        chunk = slot / ts;
    }

    /* Element e of the channel's share, as a T pointer into buffer `base`. */
    __device__ T *at(uint64_t base, size_t e) const
    {
        return base ? (T *)((char *)base + (w.chan_offset + e) * ts) : nullptr;
    }

    /* A step over ne elements of the work's type, through `via` (the ring's io by default). */
    __device__ uint32_t step_on(step_io &via, step_kind k, const T *in, T *out, size_t ne)
    {
        size_t n = ne * ts / sizeof(T);
        if constexpr (L128)
            return do_step_ll<OP, true>(b, via, op, k, in, out, n);
        else
            return ll ? do_step_ll<OP, false>(b, via, op, k, in, out, n)
                      : do_step(b, via, op, k, in, out, n);
    }

    __device__ uint32_t step(step_kind k, const T *in, T *out, size_t ne)
    {
        return step_on(io, k, in, out, ne);
    }

    /* The end of the work: the deferred tails (tails_defer). */
    __device__ void finish()
    {
        if (threadIdx.x == 0)
            tails_flush();
    }

    __device__ uint32_t single(bool reduces)
    {
        const T *in = at(w.sendbuff, 0);
        T *out = at(w.recvbuff, 0);
        size_t n = w.chan_count * ts / sizeof(T);
        for (size_t i = threadIdx.x; i < n; i += blockDim.x)
            out[i] = reduces ? op.post(op.pre(in[i])) : in[i];
        return KERN_DEV_OK;
    }

    __device__ uint32_t ring_allreduce()
    {
        int n = b.ch->nranks, idx = b.ch->ring_index;
        size_t cnt = w.chan_count;
        if (n == 1)
            return single(true);
        const T *in = at(w.sendbuff, 0);
        T *out = at(w.recvbuff, 0);
        size_t loop_elems = (size_t)n * chunk;
        for (size_t loop = 0; loop < cnt; loop += loop_elems) {
            size_t rem = cnt - loop;
            size_t cc = min(chunk, (rem + n - 1) / n);
            auto off = [&](int c) { return loop + (size_t)c * cc; };
            auto num = [&](int c) -> size_t {
                return (size_t)c * cc >= rem ? 0 : min(cc, rem - (size_t)c * cc);
            };
            auto ip = [&](int c) { return (const T *)((const char *)in + off(c) * ts); };
            auto op_ = [&](int c) { return (T *)((char *)out + off(c) * ts); };
            uint32_t e;
            int c = (idx + n - 1) % n;
            if ((e = step(STEP_SEND, ip(c), nullptr, num(c))))
                return e;
            for (int j = 2; j < n; j++) {
                c = (idx + n - j) % n;
                if ((e = step(STEP_RECV_REDUCE_SEND, ip(c), nullptr, num(c))))
                    return e;
            }
            c = idx;
            if ((e = step(STEP_RECV_REDUCE_COPY_SEND, ip(c), op_(c), num(c))))
                return e;
            for (int j = 1; j < n - 1; j++) {
                c = (idx + n - j) % n;
                if ((e = step(STEP_RECV_COPY_SEND, nullptr, op_(c), num(c))))
                    return e;
            }
            c = (idx + 1) % n;
            if ((e = step(STEP_RECV, nullptr, op_(c), num(c))))
                return e;
        }
        return KERN_DEV_OK;
    }

    __device__ uint32_t ring_reducescatter()
    {
        int n = b.ch->nranks, idx = b.ch->ring_index;
        size_t cnt = w.chan_count, block = w.count * ts;
        if (n == 1)
            return single(true);
        const int32_t *ring = b.ring;
        const char *in = (const char *)at(w.sendbuff, 0);
        T *out = at(w.recvbuff, 0);
        for (size_t loop = 0; loop < cnt; loop += chunk) {
            size_t ne = min(chunk, cnt - loop), off = loop * ts;
            auto ip = [&](int p) { return (const T *)(in + (size_t)ring[p] * block + off); };
            uint32_t e;
            int p = (idx + n - 1) % n;
            if ((e = step(STEP_SEND, ip(p), nullptr, ne)))
                return e;
            for (int j = 2; j < n; j++) {
                p = (idx + n - j) % n;
                if ((e = step(STEP_RECV_REDUCE_SEND, ip(p), nullptr, ne)))
                    return e;
            }
            if ((e = step(STEP_RECV_REDUCE_COPY, ip(idx), (T *)((char *)out + off), ne)))
                return e;
        }
        return KERN_DEV_OK;
    }

    __device__ uint32_t ring_allgather()
    {
        int n = b.ch->nranks, idx = b.ch->ring_index;
        size_t cnt = w.chan_count, block = w.count * ts;
        const int32_t *ring = b.ring;
        const T *in = at(w.sendbuff, 0);
        char *out = (char *)at(w.recvbuff, 0);
        if (n == 1) {
            T *dst = (T *)(out + (size_t)ring[0] * block);
            size_t ne = cnt * ts / sizeof(T);
            if (dst != in)
                for (size_t i = threadIdx.x; i < ne; i += blockDim.x)
                    dst[i] = in[i];
            return KERN_DEV_OK;
        }
        for (size_t loop = 0; loop < cnt; loop += chunk) {
            size_t ne = min(chunk, cnt - loop), off = loop * ts;
            auto op_ = [&](int p) { return (T *)(out + (size_t)ring[p] * block + off); };
            uint32_t e;
            if ((e = step(STEP_COPY_SEND, (const T *)((const char *)in + off), op_(idx), ne)))
                return e;
            for (int j = 1; j < n - 1; j++) {
                int p = (idx + n - j) % n;
                if ((e = step(STEP_RECV_COPY_SEND, nullptr, op_(p), ne)))
                    return e;
            }
            int p = (idx + 1) % n;
            if ((e = step(STEP_RECV, nullptr, op_(p), ne)))
                return e;
        }
        return KERN_DEV_OK;
    }

    __device__ uint32_t ring_chain(int start_after_root, step_kind first, step_kind middle,
                                   step_kind last, bool reduces)
    {
        int n = b.ch->nranks;
        size_t cnt = w.chan_count;
        if (n == 1)
            return single(reduces);
        const int32_t *ring = b.ring;
        int root_idx = 0;
        for (int i = 0; i < n; i++)
            if (ring[i] == w.root)
                root_idx = i;
        int d = (b.ch->ring_index - root_idx + n) % n;
        int pos = (d - start_after_root + n) % n;
        step_kind kind = pos == 0 ? first : pos == n - 1 ? last : middle;
        const char *in = (const char *)at(w.sendbuff, 0);
        char *out = (char *)at(w.recvbuff, 0);
        for (size_t loop = 0; loop < cnt; loop += chunk) {
            size_t ne = min(chunk, cnt - loop), off = loop * ts;
            uint32_t e = step(kind, in ? (const T *)(in + off) : nullptr,
                              out ? (T *)(out + off) : nullptr, ne);
            if (e)
                return e;
        }
        return KERN_DEV_OK;
    }

    /* The tree's up phase of one chunk in Simple: the children's partial results (slots)
     * reduced with this rank's input, into the parent's slot or, at the root, the result. */
    __device__ uint32_t tree_up(step_io *cio, step_io &pio, int nchild, bool has_parent,
                                const T *src, T *res, size_t ne)
    {
        __shared__ const char *s_cin[2];
        __shared__ char *s_dst;
        __shared__ uint32_t s_err;
        size_t bytes = ne * sizeof(T);
        if (threadIdx.x == 0) {
            uint32_t e = KERN_DEV_OK;
            for (int i = 0; i < nchild && !e; i++) {
                step_shared tmp;
                step_acquire(b, cio[i], true, false, bytes, &tmp);
                e = tmp.err;
                s_cin[i] = tmp.prev;
            }
            s_dst = (char *)res;
            if (!e && has_parent) {
                step_shared tmp;
                step_acquire(b, pio, false, true, bytes, &tmp);
                e = tmp.err;
                s_dst = tmp.slot;
            }
            s_err = e;
        }
        __syncthreads();
        if (s_err) {
            uint32_t e = s_err;
            __syncthreads();
            return e;
        }
        T *dst = (T *)s_dst;
        const T *c0 = (const T *)s_cin[0], *c1 = (const T *)s_cin[1];
        for (size_t i = threadIdx.x; i < ne; i += blockDim.x) {
            T v = nchild == 0 ? op.pre(src[i]) : op.local(src[i], vload(c0 + i));
            if (nchild == 2)
                v = op.combine(v, vload(c1 + i));
            if (!has_parent)
                v = op.post(v);
            dst[i] = v;
        }
        __threadfence_system();
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int i = 0; i < nchild; i++)
                post_recv(cio[i].from);
            if (has_parent)
                post_send(pio.to, bytes);
        }
        return KERN_DEV_OK;
    }

    /* The tree's up phase of one chunk in LL: the children's partial results (lines) reduced
     * with this rank's input, as lines toward the parent or, at the root, the result. */
    __device__ uint32_t tree_up_ll(step_io *cio, step_io &pio, int nchild, bool has_parent,
                                   const T *src, T *res, size_t ne)
    {
        __shared__ const char *s_in[2];
        __shared__ uint32_t s_inflag[2];
        __shared__ char *s_out;
        __shared__ uint32_t s_outflag;
        __shared__ uint32_t s_err;
        if (threadIdx.x == 0) {
            uint32_t e = KERN_DEV_OK;
            for (int i = 0; i < nchild && !e; i++) {
                conn_load(cio[i].from, false);
                if (!cio[i].from.data) {
                    fail(b, KERN_DEV_NO_DEVDATA, cio[i].from.peer);
                    e = KERN_DEV_NO_DEVDATA;
                }
                s_in[i] = ll_lines(b, cio[i].from, cio[i].from.mine);
                s_inflag[i] = cio[i].from.mine + 1;
            }
            if (!e && has_parent) {
                conn_load(pio.to, true);
                if (!pio.to.data) {
                    fail(b, KERN_DEV_NO_DEVDATA, pio.to.peer);
                    e = KERN_DEV_NO_DEVDATA;
                } else {
                    e = wait_space(b, pio.to);
                    if (e != KERN_DEV_OK && e != KERN_DEV_ABORTED)
                        fail(b, e, pio.to.peer);
                }
                s_out = ll_lines(b, pio.to, pio.to.mine);
                s_outflag = pio.to.mine + 1;
            }
            s_err = e;
        }
        __syncthreads();
        if (s_err) {
            uint32_t e = s_err;
            __syncthreads();
            return e;
        }
        constexpr int N = 8 / sizeof(T);
        size_t nl = ne ? (ne + N - 1) / N : 1; /* at least one line, as in ll_run */
        uint32_t want = (uint32_t)(ne * sizeof(T)) | ECCL_CONN_SIZE_DEVDATA | ECCL_CONN_SIZE_LL;
        for (size_t l = threadIdx.x; l < nl; l += blockDim.x) {
            line8<T> x = ll_in(src, l, ne), r;
            uint64_t w0 = 0, w1 = 0;
            if (nchild > 0 && !ll_load(b, cio[0].from.ctrl, cio[0].from.peer, s_in[0], l,
                                       s_inflag[0], want, &w0, &s_err))
                break;
            if (nchild > 1 && !ll_load(b, cio[1].from.ctrl, cio[1].from.peer, s_in[1], l,
                                       s_inflag[1], want, &w1, &s_err))
                break;
            line8<T> y0 = ll_unpack<T>(w0), y1 = ll_unpack<T>(w1);
#pragma unroll
            for (int j = 0; j < N; j++) {
                T v = nchild == 0 ? op.pre(x.e[j]) : op.local(x.e[j], y0.e[j]);
                if (nchild == 2)
                    v = op.combine(v, y1.e[j]);
                if (!has_parent)
                    v = op.post(v);
                r.e[j] = v;
            }
            if (has_parent)
                ll_store(s_out, l, ll_pack(r), s_outflag);
            else
                ll_out(res, l, ne, r);
        }
        __syncthreads();
        uint32_t err = s_err;
        __syncthreads();
        if (err)
            return err;
        if (threadIdx.x == 0) {
            for (int i = 0; i < nchild; i++)
                post_recv(cio[i].from);
            if (has_parent)
                post_send_ll(pio.to, ne * sizeof(T), ECCL_CONN_SIZE_LL);
        }
        return KERN_DEV_OK;
    }

    __device__ uint32_t tree_allreduce()
    {
        const kern_dev_chan *ch = b.ch;
        size_t cnt = w.chan_count;
        if (ch->nranks == 1)
            return single(true);
        int nchild = (ch->tree_child[0] >= 0) + (ch->tree_child[1] >= 0);
        bool has_parent = ch->tree_parent >= 0;
        size_t tchunk = (size_t)ch->tree_slot_bytes / ts;
        if (ll)
            tchunk = b.ll_bytes / 2 / ts;
        const T *in = at(w.sendbuff, 0);
        T *out = at(w.recvbuff, 0);
        /* Thread 0's view of the tree's connectors, kept across chunks. */
        step_io cio[2], sio[2];
        for (int i = 0; i < 2; i++) {
            cio[i] = step_io_of(ch->tree_up_recv[i], ch->tree_up_recv_data[i], ch->tree_child[i], 0,
                                0, -1);
            sio[i] = step_io_of(0, 0, -1, ch->tree_down_send[i], ch->tree_down_send_data[i],
                                ch->tree_child[i]);
        }
        step_io pio =
            step_io_of(0, 0, -1, ch->tree_up_send, ch->tree_up_send_data, ch->tree_parent);
        step_io dio =
            step_io_of(ch->tree_down_recv, ch->tree_down_recv_data, ch->tree_parent, 0, 0, -1);
        for (size_t loop = 0; loop < cnt; loop += tchunk) {
            size_t ne = min(tchunk, cnt - loop), off = loop * ts;
            const T *src = (const T *)((const char *)in + off);
            T *res = (T *)((char *)out + off);
            uint32_t e = ll ? tree_up_ll(cio, pio, nchild, has_parent, src, res, ne)
                            : tree_up(cio, pio, nchild, has_parent, src, res, ne);
            if (e)
                return e;
            /* Down: the result from the parent, then on to the children. */
            if (has_parent && (e = step_on(dio, STEP_RECV, nullptr, res, ne)))
                return e;
            for (int i = 0; i < nchild; i++)
                if ((e = step_on(sio[i], STEP_COPY_SEND, res, nullptr, ne)))
                    return e;
        }
        return KERN_DEV_OK;
    }
};

/* ---- point to point (byte-moving kernel) ------------------------------------------------------- */

__device__ __forceinline__ size_t dtype_bytes(int dtype)
{
    switch (dtype) {
    case ecclInt8:
    case ecclUint8:
    case ecclFloat8e4m3:
    case ecclFloat8e5m2:
        return 1;
    case ecclFloat16:
    case ecclBfloat16:
        return 2;
    case ecclInt32:
    case ecclUint32:
    case ecclFloat32:
        return 4;
    case ecclInt64:
    case ecclUint64:
    case ecclFloat64:
        return 8;
    default:
        return 0;
    }
}

/* One word of a copy: `VOL` loads bypass the L1 cache (a connector's slot, or a peer's memory,
 * which another agent wrote). */
template <typename W, bool VOL> __device__ __forceinline__ W copy_ld(const W *p)
{
    if constexpr (VOL)
        return *(const volatile W *)p;
    else
        return *p;
}

template <> __device__ __forceinline__ uint4 copy_ld<uint4, true>(const uint4 *p)
{
    uint4 v;
    asm volatile("ld.volatile.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* n words of W with the whole block, four loads in flight per thread before their stores. */
template <typename W, bool VOL>
__device__ __forceinline__ void block_copy_w(W *d, const W *s, size_t n)
{
    const size_t st = blockDim.x;
    size_t i = threadIdx.x;
    for (; i + 3 * st < n; i += 4 * st) {
        W v0 = copy_ld<W, VOL>(s + i);
        W v1 = copy_ld<W, VOL>(s + i + st);
        W v2 = copy_ld<W, VOL>(s + i + 2 * st);
        W v3 = copy_ld<W, VOL>(s + i + 3 * st);
        d[i] = v0;
        d[i + st] = v1;
        d[i + 2 * st] = v2;
        d[i + 3 * st] = v3;
    }
    for (; i < n; i += st)
        d[i] = copy_ld<W, VOL>(s + i);
}

/* Copies n bytes with the whole block in the widest words both sides allow (16, 8, 4 bytes)
 * once the destination is aligned to them, bytes before and after. */
template <bool VOL> __device__ inline void block_copy_t(char *dst, const char *src, size_t n)
{
    uintptr_t x = (uintptr_t)dst ^ (uintptr_t)src;
    size_t w = (x & 15) == 0 ? 16 : (x & 7) == 0 ? 8 : (x & 3) == 0 ? 4 : 1;
    size_t head = (w - ((uintptr_t)dst & (w - 1))) & (w - 1);
    if (head > n)
        head = n;
    size_t body = (n - head) & ~(w - 1);
    for (size_t i = threadIdx.x; i < head; i += blockDim.x)
        dst[i] = copy_ld<char, VOL>(src + i);
    char *d = dst + head;
    const char *s = src + head;
    if (w == 16)
        block_copy_w<uint4, VOL>((uint4 *)d, (const uint4 *)s, body / 16);
    else if (w == 8)
        block_copy_w<uint64_t, VOL>((uint64_t *)d, (const uint64_t *)s, body / 8);
    else if (w == 4)
        block_copy_w<uint32_t, VOL>((uint32_t *)d, (const uint32_t *)s, body / 4);
    else
        block_copy_w<char, VOL>(d, s, body);
    for (size_t i = head + body + threadIdx.x; i < n; i += blockDim.x)
        dst[i] = copy_ld<char, VOL>(src + i);
}

/* `vol`: the source is a connector slot or a peer's memory (loads that bypass L1). */
__device__ inline void block_copy(char *dst, const char *src, size_t n, bool vol)
{
    if (vol)
        block_copy_t<true>(dst, src, n);
    else
        block_copy_t<false>(dst, src, n);
}

#define KERN_DEV_P2P_CONNS 32 /* point-to-point connectors whose state a block keeps */

struct p2p_shared {
    int pick; /* work index, -1: none ready */
    uint32_t err;
    char *slot; /* a receive's source: a slot, or the sender's registered buffer (zc) */
    size_t bytes;
    bool zc;      /* the picked step is a registered buffer's place (ECCL_CONN_SIZE_ZC) */
    bool zc_sent; /* this block posted such a step: it waits for the receivers at the end */
};

/* A zero-copy step's descriptor (kernels/conn_layout.h, ECCL_CONN_SIZE_ZC): checks it against
 * this rank's table of peers' mapped registrations and the receive's size; *src is where the
 * message is. `sw` is the step's size word. Thread 0 only. */
__device__ inline uint32_t recv_zc(const blk &b, const conn_end &e, uint32_t sw, size_t total,
                                   bool first, const char **src)
{
    bool dev = (sw & ECCL_CONN_SIZE_DEVDATA) != 0;
    if ((sw & ~(ECCL_CONN_SIZE_DEVDATA | ECCL_CONN_SIZE_ZC)) != ECCL_CONN_ZC_DESC || !first) {
        fail(b, KERN_DEV_MISMATCH, e.peer, (uint32_t)min(total, (size_t)e.slot_bytes), sw);
        return KERN_DEV_MISMATCH;
    }
    if (dev && !e.data) {
        fail(b, KERN_DEV_NO_DEVDATA, e.peer);
        return KERN_DEV_NO_DEVDATA;
    }
    const volatile uint64_t *d = (const volatile uint64_t *)conn_slot(e, dev, e.mine);
    uint64_t id = d[0], off = d[1], bytes = d[2];
    if (bytes != total) {
        fail(b, KERN_DEV_MISMATCH, e.peer, (uint32_t)total, (uint32_t)bytes);
        return KERN_DEV_MISMATCH;
    }
    uint32_t slot = (uint32_t)(id >> 32), key = (uint32_t)id;
    const volatile kern_dev_zc *z = (const volatile kern_dev_zc *)b.ch->zc;
    bool ok = z && slot < KERN_DEV_ZC_MAX && key != 0 && z[slot].key == key;
    if (ok) {
        __threadfence_system(); /* the entry's other fields after its key */
        ok = z[slot].peer == e.peer && off <= z[slot].size && bytes <= z[slot].size - off;
    }
    if (!ok) {
        fail(b, KERN_DEV_BAD_ZC, e.peer, (uint32_t)off, (uint32_t)bytes);
        return KERN_DEV_BAD_ZC;
    }
    *src = (const char *)(uintptr_t)(z[slot].addr + off);
    return KERN_DEV_OK;
}

/* After every step is posted: until the receivers of this block's zero-copy sends have copied
 * them (their heads caught up with the tails), since the sender's buffer is theirs to read until
 * then. Thread 0 only. */
__device__ inline uint32_t zc_acks(const blk &b, const eccl_work *works, int n)
{
    const uint64_t *sendc = (const uint64_t *)b.ch->p2p_send;
    for (int i = 0; i < n; i++) {
        const eccl_work &w = works[i];
        if (w.func != ECCL_FUNC_SEND || !(w.flags & ECCL_WORK_FLAG_ZC) || w.root == b.ch->rank)
            continue;
        uint64_t c = sendc[w.root];
        uint64_t start = 0;
        for (uint32_t spins = 0;
             (int32_t)(*word(c, ECCL_CONN_OFF_TAIL) - *word(c, ECCL_CONN_OFF_HEAD)) > 0; spins++) {
            if ((spins & 63) == 63) {
                uint32_t r = wait_check(b, c, &start);
                if (r) {
                    if (r != KERN_DEV_ABORTED)
                        fail(b, r, w.root);
                    return r;
                }
            }
        }
    }
    return KERN_DEV_OK;
}

/* Runs the channel's point-to-point works (the tail of its list) together, as host_exec.c's
 * p2p_run does: any work whose connector is ready moves one slot, in order per peer and kind. */
__device__ inline uint32_t p2p_run(blk &b, const eccl_work *works, int n)
{
    const kern_dev_chan *ch = b.ch;
    const uint64_t *sendc = (const uint64_t *)ch->p2p_send;
    const uint64_t *recvc = (const uint64_t *)ch->p2p_recv;
    const uint64_t *sendd = (const uint64_t *)ch->p2p_send_data;
    const uint64_t *recvd = (const uint64_t *)ch->p2p_recv_data;
    /* Progress per work lives in shared memory: at most this many works per launch per channel
     * (the host splits larger lists). */
    __shared__ uint64_t done[KERN_DEV_THREADS];
    __shared__ p2p_shared sh;
    if (n > KERN_DEV_THREADS)
        n = KERN_DEV_THREADS;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        done[i] = 0;
    __syncthreads();
    /* To self: the i-th send pairs with the i-th receive. */
    if (threadIdx.x == 0) {
        sh.err = KERN_DEV_OK;
        int s = 0, r = 0;
        for (;;) {
            while (s < n && (works[s].func != ECCL_FUNC_SEND || works[s].root != ch->rank))
                s++;
            while (r < n && (works[r].func != ECCL_FUNC_RECV || works[r].root != ch->rank))
                r++;
            if (s == n && r == n)
                break;
            if (s == n || r == n ||
                works[s].chan_count * dtype_bytes(works[s].dtype) !=
                    works[r].chan_count * dtype_bytes(works[r].dtype)) {
                fail(b, KERN_DEV_P2P_SELF, ch->rank);
                sh.err = KERN_DEV_P2P_SELF;
                break;
            }
            done[s] = done[r] = ~(uint64_t)0; /* copied below */
            s++;
            r++;
        }
    }
    __syncthreads();
    if (sh.err)
        return sh.err;
    /* The self copies, by the whole block. */
    for (int s = 0, r = 0;; s++, r++) {
        while (s < n && (works[s].func != ECCL_FUNC_SEND || works[s].root != ch->rank))
            s++;
        while (r < n && (works[r].func != ECCL_FUNC_RECV || works[r].root != ch->rank))
            r++;
        if (s == n || r == n)
            break;
        size_t bytes = works[s].chan_count * dtype_bytes(works[s].dtype);
        if (works[r].recvbuff != works[s].sendbuff)
            block_copy((char *)works[r].recvbuff, (const char *)works[s].sendbuff, bytes, false);
    }
    __syncthreads();
    uint64_t start = 0;
    conn_end picked = conn_end_of(0, 0, -1); /* thread 0: the connector of the picked work */
    int picked_ci = -1;                      /* its place in s_ce, -1: not kept */
    /* The connectors' state between steps (thread 0), keyed by peer * 2 + (send): read from
     * mapped host memory once, not at every look (each read is a trip over the bus). */
    __shared__ conn_end s_ce[KERN_DEV_P2P_CONNS];
    __shared__ int s_ce_key[KERN_DEV_P2P_CONNS];
    __shared__ int s_nce;
    if (threadIdx.x == 0) {
        sh.zc_sent = false;
        s_nce = 0;
    }
    for (;;) {
        if (threadIdx.x == 0) {
            sh.pick = -1;
            sh.zc = false;
            sh.err = KERN_DEV_OK;
            bool left = false;
            int wait_peer = -1;
            uint64_t wait_conn = 0;
            for (int i = 0; i < n && sh.pick < 0; i++) {
                const eccl_work &w = works[i];
                size_t total = w.chan_count * dtype_bytes(w.dtype);
                if (w.root == ch->rank || done[i] >= total)
                    continue;
                bool blocked = false;
                for (int j = 0; j < i && !blocked; j++) {
                    size_t tj = works[j].chan_count * dtype_bytes(works[j].dtype);
                    blocked = works[j].func == w.func && works[j].root == w.root && done[j] < tj;
                }
                if (blocked)
                    continue;
                left = true;
                bool is_send = w.func == ECCL_FUNC_SEND;
                int key = w.root * 2 + (is_send ? 1 : 0), ci = -1;
                for (int k = 0; k < s_nce && ci < 0; k++)
                    if (s_ce_key[k] == key)
                        ci = k;
                conn_end ce;
                if (ci >= 0) {
                    ce = s_ce[ci];
                } else {
                    uint64_t c = is_send ? sendc[w.root] : recvc[w.root];
                    if (!c) {
                        b.func = w.func;
                        fail(b, KERN_DEV_BAD_WORK, w.root);
                        sh.err = KERN_DEV_BAD_WORK;
                        break;
                    }
                    ce = conn_end_of(c, is_send ? sendd[w.root] : recvd[w.root], w.root);
                    conn_load(ce, is_send);
                    if (s_nce < KERN_DEV_P2P_CONNS) {
                        ci = s_nce++;
                        s_ce_key[ci] = key;
                        s_ce[ci] = ce;
                    }
                }
                uint64_t c = ce.ctrl;
                size_t bytes = min((size_t)ce.slot_bytes, total - (size_t)done[i]);
                if (is_send) {
                    bool room = conn_has_space(ce);
                    if (ci >= 0)
                        s_ce[ci] = ce; /* the head it may have read */
                    if (room) {
                        sh.pick = i;
                        sh.slot = conn_slot(ce, ce.data != 0, ce.mine);
                        sh.bytes = bytes;
                        sh.zc = (w.flags & ECCL_WORK_FLAG_ZC) != 0;
                        picked = ce;
                        picked_ci = ci;
                    }
                } else if (conn_has_data(ce)) {
                    b.func = w.func;
                    char *slot = nullptr;
                    uint32_t sw =
                        *word(ce.ctrl, ECCL_CONN_OFF_SIZES + 4 * (int)(ce.mine % ce.nslots));
                    uint32_t e;
                    if (sw & ECCL_CONN_SIZE_ZC) {
                        const char *src = nullptr;
                        e = recv_zc(b, ce, sw, total, done[i] == 0, &src);
                        slot = (char *)src;
                        bytes = total;
                        sh.zc = true;
                    } else {
                        e = recv_slot(b, ce, bytes, &slot);
                    }
                    if (e) {
                        sh.err = e;
                        break;
                    }
                    sh.pick = i;
                    sh.slot = slot;
                    sh.bytes = bytes;
                    picked = ce;
                    picked_ci = ci;
                }
                if (sh.pick < 0 && !wait_conn) {
                    wait_conn = c;
                    wait_peer = w.root;
                }
            }
            if (!sh.err && sh.pick < 0 && !left)
                sh.err = 0xffffffffu; /* all done */
            if (!sh.err && sh.pick < 0) {
                uint32_t e = wait_check(b, wait_conn, &start);
                if (e) {
                    if (e != KERN_DEV_ABORTED)
                        fail(b, e, wait_peer);
                    sh.err = e;
                }
            } else if (sh.pick >= 0) {
                start = 0;
            }
        }
        __syncthreads();
        uint32_t err = sh.err;
        int pick = sh.pick;
        if (err) {
            __syncthreads();
            if (err == 0xffffffffu && sh.zc_sent) {
                if (threadIdx.x == 0)
                    sh.err = zc_acks(b, works, n);
                __syncthreads();
                return sh.err;
            }
            return err == 0xffffffffu ? KERN_DEV_OK : err;
        }
        if (pick < 0) {
            __syncthreads();
            continue;
        }
        const eccl_work &w = works[pick];
        bool is_send = w.func == ECCL_FUNC_SEND;
        size_t off = (size_t)done[pick], bytes = sh.bytes;
        if (is_send && sh.zc) {
            /* The whole message as its place: the receiver copies it from here. */
            if (threadIdx.x == 0) {
                size_t total = w.chan_count * dtype_bytes(w.dtype);
                volatile uint64_t *d = (volatile uint64_t *)sh.slot;
                d[0] = w.scalar;
                d[1] = w.recvbuff;
                d[2] = total;
                __threadfence_system();
                post_send(picked, ECCL_CONN_ZC_DESC | ECCL_CONN_SIZE_ZC);
                if (picked_ci >= 0)
                    s_ce[picked_ci] = picked;
                done[pick] = total;
                sh.zc_sent = true;
            }
            __syncthreads();
            continue;
        }
        if (is_send)
            block_copy(sh.slot, (const char *)w.sendbuff + off, bytes, false);
        else
            block_copy((char *)w.recvbuff + off, sh.slot, bytes, true);
        __threadfence_system();
        __syncthreads();
        if (threadIdx.x == 0) {
            if (is_send)
                post_send(picked, bytes);
            else
                post_recv(picked);
            if (picked_ci >= 0)
                s_ce[picked_ci] = picked;
            done[pick] += bytes;
        }
        __syncthreads();
    }
}

/* ---- kernels ---------------------------------------------------------------------------------- */

/* Copies `bytes` (a multiple of 8) from the launch's arguments in mapped host memory into shared
 * memory, the whole block at once: one round trip over the bus instead of one per field read.
 * The caller synchronises the block after it. */
__device__ __forceinline__ void block_load(void *dst, const void *src, size_t bytes)
{
    for (size_t i = threadIdx.x; i < bytes / 8; i += blockDim.x)
        ((uint64_t *)dst)[i] = ((const uint64_t *)src)[i];
}

static_assert(sizeof(kern_dev_chan) % 8 == 0, "kern_dev_chan is loaded in 8-byte words");

#define KERN_DEV_RING_SHARED 1024 /* ranks whose ring order a block keeps in shared memory */

/* The block's channel descriptor and its first work, in shared memory, loaded together (one bus
 * round trip: the work's place comes in the launch's parameters). */
__device__ __forceinline__ bool blk_init(blk &b, const kern_dev_args &a, kern_dev_chan *s_ch,
                                         eccl_work *s_w0)
{
    if ((int)blockIdx.x >= a.nchan || !((a.active >> blockIdx.x) & 1))
        return false;
    block_load(s_ch, (const kern_dev_chan *)a.chans + blockIdx.x, sizeof(*s_ch));
    block_load(s_w0, (const char *)a.chans + a.work0[blockIdx.x], sizeof(*s_w0));
    __syncthreads();
    b.ring = (const int32_t *)s_ch->ring;
    b.ring_shared = false;
    b.ch = s_ch;
    b.abort = (volatile uint32_t *)a.abort;
    b.status = (kern_dev_status *)a.status;
    b.timeout_ns = a.timeout_ns;
    b.func = 0;
    b.ll_bytes = a.ll_bytes;
    b.ll_span = a.ll_span;
    b.ll128_bytes = a.ll128_bytes;
    if (threadIdx.x == 0)
        s_npend = 0;
    return true;
}

/* The ring order in shared memory, for the algorithms that look it up at every step (AllGather,
 * ReduceScatter, the chains), once per launch. The whole block calls it. */
__device__ __forceinline__ void blk_ring(blk &b)
{
    __shared__ int32_t s_ring[KERN_DEV_RING_SHARED];
    int n = b.ch->nranks;
    if (b.ring_shared || n <= 0 || n > KERN_DEV_RING_SHARED)
        return;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s_ring[i] = b.ring[i];
    __syncthreads();
    b.ring = s_ring;
    b.ring_shared = true;
}

/* Work i of the block's channel in s_w (work 0 is there from blk_init). */
__device__ __forceinline__ void blk_work(const blk &b, int i, eccl_work *s_w)
{
    if (i == 0)
        return;
    __syncthreads(); /* everyone is done with the previous work */
    block_load(s_w, (const eccl_work *)b.ch->works + i, sizeof(*s_w));
    __syncthreads();
}

#define KERN_DEV_P2P_SHARED 128 /* point-to-point works staged in shared memory (8 KiB) */

/* Reducing collectives of one data type and reduction. */
template <int DTYPE, int KIND, bool L128 = false>
__global__ void __launch_bounds__(KERN_DEV_THREADS) coll_kernel(kern_dev_args a)
{
    blk b;
    __shared__ kern_dev_chan s_ch;
    __shared__ eccl_work s_w;
    if (!blk_init(b, a, &s_ch, &s_w))
        return;
    typedef redop<DTYPE, KIND> op_t;
    for (int i = 0; i < b.ch->nwork; i++) {
        blk_work(b, i, &s_w);
        const eccl_work &w = s_w;
        b.func = w.func;
        if (w.func != ECCL_FUNC_ALLREDUCE)
            blk_ring(b);
        /* ecclScalarDevice: the multiplier is read now, after the work before it on the
         * stream (a replayed graph reads its current value). */
        const op_t op(w.flags & ECCL_WORK_FLAG_SCALAR_PTR
                          ? op_t::ops::scalar_bits((const typename op_t::T *)(uintptr_t)w.scalar)
                          : w.scalar);
        algo<op_t, L128> al(b, op, w, sizeof(typename op_t::T));
        uint32_t e;
        if (b.ch->nranks > 1 && al.chunk == 0) {
            if (threadIdx.x == 0)
                fail(b, KERN_DEV_BAD_WORK, -1);
            return;
        }
        switch (w.func) {
        case ECCL_FUNC_ALLREDUCE:
            if constexpr (L128) /* kern_dev_kernel_of never sends it a tree */
                e = al.ring_allreduce();
            else
                e = w.algo == ECCL_ALGO_TREE ? al.tree_allreduce() : al.ring_allreduce();
            break;
        case ECCL_FUNC_REDUCESCATTER:
            e = al.ring_reducescatter();
            break;
        case ECCL_FUNC_REDUCE:
            e = al.ring_chain(1, STEP_SEND, STEP_RECV_REDUCE_SEND, STEP_RECV_REDUCE_COPY, true);
            break;
        default:
            if (threadIdx.x == 0)
                fail(b, KERN_DEV_BAD_WORK, -1);
            return;
        }
        if (e)
            return;
        al.finish();
    }
}

#ifdef ECCL_DEV_COPY_KERNEL /* defined by the one file that instantiates it */
/* AllGather, Broadcast, Send and Recv: bytes, whatever the type. L128: AllGather and Broadcast
 * in LL128 only. */
template <bool L128 = false>
__global__ void __launch_bounds__(KERN_DEV_THREADS) copy_kernel(kern_dev_args a)
{
    blk b;
    __shared__ kern_dev_chan s_ch;
    __shared__ eccl_work s_w;
    if (!blk_init(b, a, &s_ch, &s_w))
        return;
    const eccl_work *works = (const eccl_work *)b.ch->works;
    const copy_op op;
    int i = 0;
    for (; i < b.ch->nwork; i++) {
        blk_work(b, i, &s_w);
        const eccl_work &w = s_w;
        if (w.func == ECCL_FUNC_SEND || w.func == ECCL_FUNC_RECV)
            break;
        b.func = w.func;
        blk_ring(b);
        size_t ts = dtype_bytes(w.dtype);
        if (ts == 0) { /* before algo, which divides by it */
            if (threadIdx.x == 0)
                fail(b, KERN_DEV_BAD_WORK, -1);
            return;
        }
        algo<copy_op, L128> al(b, op, w, ts);
        if (b.ch->nranks > 1 && al.chunk == 0) {
            if (threadIdx.x == 0)
                fail(b, KERN_DEV_BAD_WORK, -1);
            return;
        }
        uint32_t e;
        switch (w.func) {
        case ECCL_FUNC_ALLGATHER:
            e = al.ring_allgather();
            break;
        case ECCL_FUNC_BROADCAST:
            e = al.ring_chain(0, STEP_COPY_SEND, STEP_RECV_COPY_SEND, STEP_RECV, false);
            break;
        default:
            if (threadIdx.x == 0)
                fail(b, KERN_DEV_BAD_WORK, -1);
            return;
        }
        if (e)
            return;
        al.finish();
    }
    if constexpr (L128) {
        if (i < b.ch->nwork && threadIdx.x == 0)
            fail(b, KERN_DEV_BAD_WORK, -1); /* point-to-point works never run LL128 */
    } else if (i < b.ch->nwork) {
        /* The point-to-point scheduler scans its works again and again: from shared memory when
         * they fit. */
        __shared__ eccl_work s_p2p[KERN_DEV_P2P_SHARED];
        int n = b.ch->nwork - i;
        const eccl_work *pw = works + i;
        if (n <= KERN_DEV_P2P_SHARED) {
            __syncthreads();
            block_load(s_p2p, pw, (size_t)n * sizeof(eccl_work));
            __syncthreads();
            pw = s_p2p;
        }
        p2p_run(b, pw, n);
    }
}
#endif

} // namespace eccl_dev

#endif

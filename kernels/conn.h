/*
 * conn.h - a connector: the one-way FIFO through which an executor sends steps to one peer.
 *
 * The receiver owns the memory (a shared-memory segment between processes, ordinary memory
 * between threads); the sender maps it. `tail` counts steps posted by the sender, `head` steps
 * consumed by the receiver; both only grow (32-bit, compared modulo 2^32) and both are futex
 * words, so a side that has nothing to do sleeps instead of spinning. Slot i % nslots holds step
 * i: `sizes[slot]` bytes at data + slot * slot_bytes. `closed` tells a waiting side that the other
 * side gave up.
 */
#ifndef ECCL_KERNELS_CONN_H
#define ECCL_KERNELS_CONN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/conn_layout.h"

#define ECCL_CONN_MAGIC     0x65636f6e /* "econ" */
#define ECCL_CONN_MAX_SLOTS 16

/* One side's measurements of the steps of one kind of store into a connector's slots: the
 * fastest step of the current window, and of the last full one (0: none yet), in ns per KiB. */
struct eccl_conn_rate {
    uint32_t best;         /* the measuring side's own */
    uint32_t n;            /* steps in the current window; the measuring side's own */
    _Atomic uint32_t last; /* read by the other side */
};

#define ECCL_CONN_ZC_RING   8
#define ECCL_CONN_ZC_IMPORT 1 /* map registration `key`: its memory is `handle` at the proxy */
#define ECCL_CONN_ZC_DROP   2 /* registration `key` is gone: unmap it */

struct eccl_conn_zc_req {
    uint32_t op; /* ECCL_CONN_ZC_IMPORT or ECCL_CONN_ZC_DROP */
    uint32_t key;
    uint32_t mode; /* IMPORT: enum kern_dev_mem_mode, how the memory is shared */
    uint32_t pad;
    uint64_t handle; /* IMPORT, cuMem: the descriptor's handle at the sender's proxy */
    uint64_t size;   /* IMPORT: bytes of the allocation */
    uint8_t ipc[64]; /* IMPORT, legacy IPC: the cudaIpcMemHandle_t */
};

struct eccl_conn_zc_resp {
    uint32_t key;
    int32_t slot; /* IMPORT: where the receiver keeps the mapping (its table), -1: refused */
};

struct eccl_conn_ctrl {
    /* Written by the sender. */
    _Alignas(64) _Atomic uint32_t tail;
    _Atomic uint32_t tail_waiters;      /* receivers sleeping on tail */
    struct eccl_conn_rate send_rate[2]; /* a host sender's steps (stream: below) */
    uint32_t stream_on;                 /* its choice: streaming stores (1) or not (0) */
    /* Written by the receiver. */
    _Alignas(64) _Atomic uint32_t head;
    _Atomic uint32_t head_waiters; /* senders sleeping on head */
    /* Streaming stores into the slots (kernels/host_copy.h). A host receiver sets `stream` to
     * ECCL_CONN_STREAM_ASK: it accepts steps marked ECCL_CONN_SIZE_STREAM and measures its
     * steps of either kind in recv_rate; a GPU or network receiver (0) gets ordinary stores
     * only. The sender chooses by the sum of both sides' rates (kernels/host_exec.c). */
    _Atomic uint32_t stream;
    struct eccl_conn_rate recv_rate[2];
    /* Set at creation, read-only after. */
    _Alignas(64) uint32_t magic;
    uint32_t nslots;
    uint32_t slot_bytes;
    /* Set by either side when its communicator fails or aborts: the other side stops waiting
     * at once, whatever its own failure detection has seen. */
    _Atomic uint32_t closed;
    _Atomic uint32_t sizes[ECCL_CONN_MAX_SLOTS];
    /* Registered buffers (core/reg.c), on point-to-point connectors between GPU ranks of one
     * host: the sender announces a registration of its own (`zc_req`, ECCL_CONN_ZC_IMPORT) that
     * the receiver may map, or withdraws one (ECCL_CONN_ZC_DROP); the receiver answers each
     * request in `zc_resp`. Rings of ECCL_CONN_ZC_RING entries, counters only grow; the sender
     * keeps at most ECCL_CONN_ZC_RING requests unanswered, so no answer ever waits for room. */
    _Alignas(64) _Atomic uint32_t zc_req_tail; /* sender */
    _Atomic uint32_t zc_resp_head;             /* sender: answers it has read */
    struct eccl_conn_zc_req zc_req[ECCL_CONN_ZC_RING];
    _Alignas(64) _Atomic uint32_t zc_req_head; /* receiver: requests it has read */
    _Atomic uint32_t zc_resp_tail;             /* receiver */
    struct eccl_conn_zc_resp zc_resp[ECCL_CONN_ZC_RING];
};

/* The byte offsets of kernels/conn_layout.h are the layout of this struct: */
_Static_assert(offsetof(struct eccl_conn_ctrl, tail) == ECCL_CONN_OFF_TAIL, "conn layout");
_Static_assert(offsetof(struct eccl_conn_ctrl, head) == ECCL_CONN_OFF_HEAD, "conn layout");
_Static_assert(offsetof(struct eccl_conn_ctrl, nslots) == ECCL_CONN_OFF_NSLOTS, "conn layout");
_Static_assert(offsetof(struct eccl_conn_ctrl, slot_bytes) == ECCL_CONN_OFF_SLOT_BYTES,
               "conn layout");
_Static_assert(offsetof(struct eccl_conn_ctrl, closed) == ECCL_CONN_OFF_CLOSED, "conn layout");
_Static_assert(offsetof(struct eccl_conn_ctrl, sizes) == ECCL_CONN_OFF_SIZES, "conn layout");
_Static_assert(((sizeof(struct eccl_conn_ctrl) + 63) & ~(size_t)63) == ECCL_CONN_DATA_OFF,
               "conn layout");

/* Bytes a connector with these parameters occupies (control block + data, 64-byte aligned). */
static inline size_t eccl_conn_bytes(uint32_t nslots, uint32_t slot_bytes)
{
    return ((sizeof(struct eccl_conn_ctrl) + 63) & ~(size_t)63) + (size_t)nslots * slot_bytes;
}

static inline char *eccl_conn_data(struct eccl_conn_ctrl *c)
{
    return (char *)c + ((sizeof(struct eccl_conn_ctrl) + 63) & ~(size_t)63);
}

#endif

/*
 * dev_work.h - what the host side of the GPU executor (kernels/dev_exec.c) hands to its kernels
 * (kernels/dev_coll.cuh): plain structs of device addresses, readable from C and CUDA C++.
 *
 * A launch's arguments point at a block of mapped host memory holding, per channel, a
 * kern_dev_chan, then the ring order, the point-to-point connector tables and the channel's work
 * descriptors. Connector addresses are device addresses of registered host memory; a connector
 * between two GPU ranks may also have its slots in device memory (the `*_data` address: the
 * receiver's allocation, mapped by the sender), used for the steps whose size word carries
 * ECCL_CONN_SIZE_DEVDATA.
 */
#ifndef ECCL_KERNELS_DEV_WORK_H
#define ECCL_KERNELS_DEV_WORK_H

#include <stdint.h>

#define KERN_DEV_THREADS      512 /* threads per block (one block per channel) */
#define KERN_DEV_MAX_CHANNELS 16  /* channels (blocks) of one launch */

/* Why a kernel stopped early (kern_dev_status.code). */
enum kern_dev_code {
    KERN_DEV_OK = 0,
    KERN_DEV_ABORTED = 1,    /* the communicator's abort flag */
    KERN_DEV_CLOSED = 2,     /* the peer closed the connector */
    KERN_DEV_TIMEOUT = 3,    /* no progress from the peer for the timeout */
    KERN_DEV_MISMATCH = 4,   /* a step's size differs from what this rank expects */
    KERN_DEV_BAD_WORK = 5,   /* a work descriptor this kernel cannot run */
    KERN_DEV_P2P_SELF = 6,   /* sends and receives to self do not pair up */
    KERN_DEV_NO_DEVDATA = 7, /* a step in device slots this side has no mapping of */
    KERN_DEV_BAD_ZC = 8,     /* a registered buffer's place this side has no mapping of */
};

/* A peer's registered buffer that this rank mapped (core/reg.c), in the executor's table in
 * mapped host memory: a zero-copy step (ECCL_CONN_SIZE_ZC) names its slot and key. */
#define KERN_DEV_ZC_MAX 256
struct kern_dev_zc {
    uint64_t addr; /* where the allocation is mapped here */
    uint64_t size; /* its bytes */
    int32_t peer;  /* whose it is; -1: a free slot */
    uint32_t key;  /* the peer's registration; 0: a free slot */
    uint64_t pad;
};

/* Written by the kernels (the first failing block wins), read by the watcher thread. */
struct kern_dev_status {
    uint32_t code; /* enum kern_dev_code */
    int32_t peer;
    uint32_t expect; /* KERN_DEV_MISMATCH: bytes expected, and got */
    uint32_t got;
    uint32_t func;  /* the work's function */
    uint32_t ready; /* written last, after the fields above: the watcher reads them then */
};

struct kern_dev_chan {
    int32_t id;
    int32_t rank;
    int32_t nranks;
    int32_t ring_index;
    int32_t tree_parent;
    int32_t tree_child[2];
    int32_t nwork;
    /* Filled by the host so that no thread reads them from mapped host memory: the ring's
     * neighbours, and the smallest slot of the ring's and of the tree's connectors (bytes;
     * 0xffffffff where the channel has none). */
    int32_t ring_prev;
    int32_t ring_next;
    uint32_t ring_slot_bytes;
    uint32_t tree_slot_bytes;
    /* Device addresses of connectors (0: none). */
    uint64_t ring_recv;
    uint64_t ring_send;
    uint64_t tree_up_recv[2];
    uint64_t tree_up_send;
    uint64_t tree_down_recv;
    uint64_t tree_down_send[2];
    /* Device addresses of the same connectors' slots in device memory (0: host slots only). */
    uint64_t ring_recv_data;
    uint64_t ring_send_data;
    uint64_t tree_up_recv_data[2];
    uint64_t tree_up_send_data;
    uint64_t tree_down_recv_data;
    uint64_t tree_down_send_data[2];
    uint64_t ring;     /* int32_t[nranks]; each block copies it to shared memory first */
    uint64_t p2p_send; /* uint64_t[nranks]: connector per peer, 0 where none */
    uint64_t p2p_recv;
    uint64_t p2p_send_data; /* uint64_t[nranks]: their device slots, 0 where none */
    uint64_t p2p_recv_data;
    uint64_t works; /* struct eccl_work[nwork], the ones of this launch */
    uint64_t zc;    /* struct kern_dev_zc[KERN_DEV_ZC_MAX], peers' mapped registrations; 0: none */
};

struct kern_dev_args {
    uint64_t chans;  /* struct kern_dev_chan[nchan] */
    uint64_t status; /* struct kern_dev_status */
    uint64_t abort;  /* uint32_t: nonzero stops every wait */
    uint64_t timeout_ns;
    uint64_t active; /* bit c: channel c has work (the others exit without reading) */
    uint32_t work0[KERN_DEV_MAX_CHANNELS]; /* channel c's first work: byte offset from chans */
    int32_t nchan;
    uint32_t ll_bytes;    /* LL lines per slot after each connector's device slots; 0: no LL */
    uint32_t ll_span;     /* LL lines per slot as laid out in ring connectors' device memory */
    uint32_t ll128_bytes; /* LL128 lines per slot after those of LL (ring); 0: no LL128 */
};

#ifdef __cplusplus
extern "C" {
#endif

/* Launches kernel `kernel` (kern_dev_kernel_of) with one block per channel on `stream`; returns
 * a cudaError_t as int (0: queued). In kernels/gen (generated). */
int kern_dev_cu_launch(int kernel, const struct kern_dev_args *args, void *stream);

#ifdef __cplusplus
}
#endif

#endif

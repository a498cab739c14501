/*
 * host_flat.h - the flat algorithm: small collectives of a host communicator whose ranks all run
 * on one host, through one shared-memory segment, in one round of flags.
 *
 * Every rank owns KERN_FLAT_SLOTS slots in the segment, which its calls use in turn. A call with
 * sequence number s writes the rank's contribution into its slot s % SLOTS and publishes s in
 * the slot's sequence word; then it waits for the sequence words of the ranks whose data it
 * needs and reads (AllGather, Broadcast) or reduces (AllReduce, ReduceScatter) their slots
 * straight into the output. Before writing slot s % SLOTS, a rank waits until every other rank
 * has published s - SLOTS + 1, which it does only once it has finished reading call s - SLOTS,
 * the last one to use that slot. A rank thus runs at most SLOTS - 1 calls ahead of the slowest:
 * a Broadcast root need not wait for its receivers call by call.
 *
 * docs/internals/flat.md has the segment's layout. core/flat.c creates and maps the segment and
 * decides which calls take this path.
 */
#ifndef ECCL_KERNELS_HOST_FLAT_H
#define ECCL_KERNELS_HOST_FLAT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"
#include "kernels/host_exec.h"
#include "kernels/reduce.h"

#define KERN_FLAT_MAGIC   0x65666c74u /* "eflt" */
#define KERN_FLAT_VERSION 1u
#define KERN_FLAT_SLOTS   8 /* per rank; a power of two (sequence numbers wrap at 2^32) */
/* Bounds of a segment's geometry, checked when a rank maps one that another rank made. */
#define KERN_FLAT_MAX_RANKS      64
#define KERN_FLAT_MAX_SLOT_BYTES (1u << 20)

/* The segment's first cache line. Written once by its creator, then read-only but for
 * `closed`. */
struct kern_flat_hdr {
    uint32_t magic;
    uint32_t version;
    uint32_t nranks;
    uint32_t slot_bytes; /* data bytes a slot holds */
    uint32_t nslots;     /* KERN_FLAT_SLOTS */
    /* 0, or 1 + the rank whose communicator failed or aborted: every waiting rank stops. */
    _Atomic uint32_t closed;
};

/* One rank's view of a mapped segment. */
struct kern_flat {
    char *base; /* NULL: no segment (the flat path is off) */
    size_t bytes;
    int rank;
    int nranks;
    uint32_t slot_bytes;
    size_t stride;      /* bytes from one slot to the next */
    uint32_t seq;       /* flat calls made on this communicator (the same count on every rank) */
    uint32_t max_bytes; /* the largest call core sends this way (core/flat.c sets it) */
    uint32_t spin;      /* polls of the next wait's spin (adaptive, at most the context's) */
    struct kern_spread spread; /* the calling thread's (flat calls run in the caller's) */
};

/* One call, as the caller's arguments say it. `count` is per-rank (AllGather: each rank's block;
 * ReduceScatter: the output's count), as in the API. */
struct kern_flat_call {
    int func; /* enum eccl_func: Broadcast, AllGather, ReduceScatter, AllReduce */
    const void *sendbuff;
    void *recvbuff;
    size_t count;
    struct eccl_redop op; /* its dtype is the call's */
    int root;
};

/* Bytes of a segment for this geometry; 0 when out of bounds. */
size_t kern_flat_segment_bytes(int nranks, uint32_t slot_bytes);
/* Writes a fresh segment's header and zeroes its sequence words (the creator, before anyone else
 * maps it). */
void kern_flat_format(void *base, int nranks, uint32_t slot_bytes);
/* Checks a mapped segment's header against the communicator (a segment is never trusted:
 * another process wrote it) and fills *f. ecclRemoteError with a WARN when it does not match. */
ecclResult_t kern_flat_attach(struct kern_flat *f, void *base, size_t bytes, int rank, int nranks);
/* Bytes of the slot the call needs on each rank (the contribution); the call fits when this is
 * at most f->slot_bytes. */
size_t kern_flat_call_bytes(const struct kern_flat_call *c, int nranks);
/* Runs one call. Blocks until this rank's output is complete; every wait checks ctx->abort, the
 * segment's closed word and the no-progress watchdog (ecclRemoteError, ctx->failed_peer set). */
ecclResult_t kern_flat_run(struct kern_flat *f, const struct kern_flat_call *c,
                           struct kern_ctx *ctx);
/* Marks the segment closed by this rank and wakes every sleeper: the other ranks stop waiting. */
void kern_flat_close(struct kern_flat *f);
/* The sequence word of rank `rank`'s slot for call `seq`: the last call that rank published in
 * that slot (a rank publishes call s before it waits for the others' part of s). */
uint32_t kern_flat_published(const struct kern_flat *f, int rank, uint32_t seq);

#endif

/*
 * host_exec.h - the host executor: runs work descriptors (kernels/work.h) on host memory, moving
 * data through connectors (kernels/conn.h) the way the CUDA kernels will on a GPU.
 *
 * One call runs one channel's list of work descriptors for one plan, in order; the collectives
 * block until done, the point-to-point descriptors at the end of the list are progressed
 * together so that their order between peers cannot deadlock. Every wait checks the abort flag
 * and the no-progress watchdog.
 */
#ifndef ECCL_KERNELS_HOST_EXEC_H
#define ECCL_KERNELS_HOST_EXEC_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/sync.h"
#include "eccl.h"
#include "kernels/conn.h"
#include "kernels/work.h"

/* The connectors and topology of one channel, as the executor sees them. */
struct kern_chan {
    int id;
    int rank;
    int nranks;
    const int *ring;                  /* ranks in ring order (nranks entries) */
    int ring_index;                   /* my position in ring */
    struct eccl_conn_ctrl *ring_recv; /* from the previous rank of the ring */
    struct eccl_conn_ctrl *ring_send; /* to the next rank */
    /* Binary tree over ring positions: position p has children 2p+1 and 2p+2. */
    int tree_parent;                        /* rank, -1 at the root */
    int tree_child[2];                      /* ranks, -1 where absent */
    struct eccl_conn_ctrl *tree_up_recv[2]; /* from each child */
    struct eccl_conn_ctrl *tree_up_send;    /* to the parent */
    struct eccl_conn_ctrl *tree_down_recv;  /* from the parent */
    struct eccl_conn_ctrl *tree_down_send[2];
    /* Point to point, indexed by peer rank; NULL until connected. */
    struct eccl_conn_ctrl **p2p_send;
    struct eccl_conn_ctrl **p2p_recv;
    /* Rung after every step posted or consumed when some connector of the channel is moved by
     * the proxy (network), so that a sleeping proxy wakes; NULL otherwise. */
    struct eccl_bell *bell;
};

/* A waiting thread's watch on where the scheduler put it (kern_spread_after_wait). Ranks that
 * wait for each other and yield to each other look to the scheduler like a producer and its
 * consumer: it may keep them on one core while others idle, and then every hand-over costs a
 * context switch. Where the host has a core for every rank's waiting thread, the odd ranks move
 * themselves off their core after SPREAD_AFTER_YIELDS waits in a row had to yield (a spin ends
 * nearly every wait of ranks that have a core each), at most once a second. */
struct kern_spread {
    bool on;
    int rank;          /* for the log line */
    uint32_t yielded;  /* waits in a row that had to yield */
    uint64_t moved_ns; /* when the thread last moved */
};

/* After a wait: `spun` when its spin ended it, else it yielded or slept. NULL: no watch. */
void kern_spread_after_wait(struct kern_spread *s, bool spun);

/* Moves the calling thread off the CPU it runs on, to another CPU of its affinity mask, and
 * restores the mask: the scheduler keeps the thread where it went. 1: moved (*from, *to), 0:
 * nothing to do (a mask of one CPU), -1: the system refused (errno). */
int kern_move_off_cpu(int *from, int *to);

/* How senders store into the slots of the connectors this rank receives from
 * (ECCL_HOST_STREAM, kernels/host_copy.h). */
enum kern_stream {
    KERN_STREAM_AUTO = 0, /* measure both ways, ask for the faster */
    KERN_STREAM_OFF,      /* ordinary stores */
    KERN_STREAM_ON,       /* streaming stores wherever the step copies */
};

struct kern_ctx {
    const _Atomic uint32_t *abort; /* nonzero: stop waiting, return ecclRemoteError */
    uint64_t timeout_ns;           /* no progress for this long: ecclRemoteError (0: none) */
    uint32_t spin;                 /* polls before yielding the CPU */
    struct kern_spread *spread;    /* the waiting thread's (NULL: none) */
    enum kern_stream stream;
    uint64_t stream_out_bytes; /* outputs this large are written with streaming stores (0: none) */
    /* Set when a wait gave up: the peer rank and what was awaited, for the error text. */
    int failed_peer;
};

ecclResult_t kern_host_run(struct kern_chan *ch, const struct eccl_work *works, int nworks,
                           struct kern_ctx *ctx);

/* Wakes every sleeper on a connector. */
void kern_conn_wake_all(struct eccl_conn_ctrl *c);
/* Marks a connector closed (this side failed or aborted) and wakes the other side. */
void kern_conn_close(struct eccl_conn_ctrl *c);

/* One look at what ends a wait of the host executor or the flat path: the abort flag, and the
 * watchdog (ctx->timeout_ns without progress: a WARN naming `peer` and `what`). *start is when
 * the wait began (0: not yet; set on the first call). ecclRemoteError, with ctx->failed_peer
 * set, when the wait must end. */
ecclResult_t kern_wait_check(struct kern_ctx *ctx, uint64_t *start, int peer, const char *what);

#endif

/*
 * proxy.h - the per-rank proxy: connection setup through asynchronous operations, descriptors
 * handed to local peers over a unix-domain socket, and the progress thread that moves the steps
 * of network connectors.
 *
 * Connection setup is a conversation between a rank's init thread and its proxy thread: the init
 * thread posts an operation (Init, SharedInit, Setup, Connect) with a request, gets an op id, and
 * polls for the response; the proxy thread runs the operation (Connect may take several passes
 * of its loop, while the network handshake completes) and files the response. A connection's
 * memory is always the proxy's: the receiving side of a shared-memory connector is a memfd
 * segment that the proxy creates at Setup and hands, on request over its UDS socket (SCM_RIGHTS),
 * to the one local peer the connection was made for; a network connector is a local FIFO that
 * the executor uses like any other and that the proxy thread feeds from, or drains to, the
 * network backend (proxy/net.h). docs/internals/proxy.md has the messages and the log story.
 *
 * Threads: one proxy thread per rank. The op calls are made by the thread that creates or
 * connects the communicator; everything else about connections belongs to the proxy thread.
 */
#ifndef ECCL_PROXY_PROXY_H
#define ECCL_PROXY_PROXY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sync.h"
#include "eccl.h"
#include "kernels/conn.h"
#include "proxy/net.h"

struct proxy_state;

enum proxy_op_type {
    PROXY_OP_INIT = 1,        /* creates a connection: peer, direction, transport */
    PROXY_OP_SHARED_INIT = 2, /* once per rank and transport: the network backend */
    PROXY_OP_SETUP = 3,       /* the connection's memory (and a network listener) */
    PROXY_OP_CONNECT = 4,     /* imports the peer's segment / completes the network handshake */
    PROXY_OP_EXPORT = 5,      /* holds a descriptor for one local peer to fetch once */
};

enum proxy_transport {
    PROXY_TRANSPORT_SHM = 0,
    PROXY_TRANSPORT_NET = 1,
};

struct proxy_init_req {
    int32_t transport; /* enum proxy_transport */
    int32_t send;      /* 1: this rank sends on the connection */
    int32_t peer;
    uint32_t tag; /* the connector's name between the two ranks */
    uint32_t nslots;
    uint32_t slot_bytes;
};

struct proxy_init_resp {
    int32_t conn;
};

/* Setup of a shm receive connection may hand the proxy a second descriptor, which it serves to
 * the peer like the segment: the connector's slots in device memory (a cuMem allocation exported
 * as a file descriptor). The proxy takes the descriptor, also when the operation fails. The
 * layout begins like proxy_connect_req's (the descriptor first). */
struct proxy_setup_req {
    int32_t dev_fd;
    int32_t pad;
};

struct proxy_setup_resp {
    struct eccl_conn_ctrl *ctrl; /* the local end (NULL for a shm send connection) */
    uint64_t handle;             /* shm receive: what the peer asks our UDS socket for */
    uint64_t size;               /* shm receive: segment bytes */
    uint64_t dev_handle;         /* shm receive with dev_fd: what the peer asks for it */
    uint8_t net_handle[ECCL_NET_HANDLE_BYTES]; /* net receive: the listener, for the peer */
};

struct proxy_connect_req {
    int32_t fd; /* shm send: the peer's segment (the proxy takes it) */
    int32_t pad;
    uint64_t size;
    uint8_t net_handle[ECCL_NET_HANDLE_BYTES]; /* net send: the peer's listener */
};

struct proxy_connect_resp {
    struct eccl_conn_ctrl *ctrl;
};

/* Export: the proxy keeps `fd` (a registered buffer's memory, core/reg.c) and serves it once to
 * local rank `peer` over its UDS socket, like a segment; it takes the descriptor, also when the
 * operation fails. The connection argument is unused (-1). */
struct proxy_export_req {
    int32_t fd;
    int32_t peer;
};

struct proxy_export_resp {
    uint64_t handle; /* what the peer asks for (proxy_client_get_fd) */
};

struct proxy_params {
    uint64_t comm_magic;
    int rank;
    int nranks;
    /* The communicator's abort flag: when raised, the proxy closes its network connections so
     * that remote peers stop at once, and stops moving data. */
    const _Atomic uint32_t *abort;
};

/* Opens the proxy's UDS socket @eccl-<magic>-<rank>-proxy and starts the proxy thread. */
ecclResult_t proxy_create(struct proxy_state **out, const struct proxy_params *params);
/* Waits until every step posted to a network send connection has left (the executor's steps
 * return once posted, as with shared memory, where the peer then sees them at once): what a
 * clean destroy does before proxy_destroy. ecclInProgress after timeout_ms. */
ecclResult_t proxy_flush(struct proxy_state *px, int64_t timeout_ms);
/* Stops the thread, closes every connection, unmaps every segment. NULL is fine. */
void proxy_destroy(struct proxy_state *px);

/* Posts an operation; the request is copied. *op_id gets its id. */
ecclResult_t proxy_op_post(struct proxy_state *px, enum proxy_op_type type, int conn,
                           const void *req, size_t req_size, size_t resp_size, uint64_t *op_id);
/* ecclInProgress while the operation runs; then its result, with the response copied to resp
 * (resp_size must be what was posted), and the operation is forgotten. */
ecclResult_t proxy_op_poll(struct proxy_state *px, uint64_t op_id, void *resp, size_t resp_size);
/* Post, then poll until done, the deadline (ecclInternalError) or *abort (ecclRemoteError). */
ecclResult_t proxy_op_call(struct proxy_state *px, enum proxy_op_type type, int conn,
                           const void *req, size_t req_size, void *resp, size_t resp_size,
                           uint64_t deadline_ns, const _Atomic uint32_t *abort);

/* Client side of descriptor passing: asks local rank `peer`'s proxy, over its UDS socket, for
 * the segment it filed under `handle` for this rank. `sock` is this rank's own datagram socket
 * (the reply comes there). *fd_out gets the descriptor. */
ecclResult_t proxy_client_get_fd(int sock, uint64_t comm_magic, int rank, int peer, uint64_t handle,
                                 int *fd_out, uint64_t deadline_ns, const _Atomic uint32_t *abort);

/* A datagram of the descriptor service (a request, or a reply: `reply`), decoded without I/O for
 * tests and fuzzing (tests/fuzz/fuzz_proxy_msgs.c) with the checks the proxy and the client run
 * on it; ecclRemoteError when they would drop it. Datagrams are PROXY_UDS_REC_BYTES long. */
#define PROXY_UDS_REC_BYTES 48
struct proxy_uds_rec {
    uint64_t op_id;
    uint64_t handle;
    int32_t from;
    int32_t result;
};
ecclResult_t proxy_uds_rec_decode(const void *buf, size_t len, uint64_t comm_magic, bool reply,
                                  int nranks, struct proxy_uds_rec *out);
size_t proxy_uds_rec_encode(const struct proxy_uds_rec *r, uint64_t comm_magic, bool reply,
                            void *buf /* PROXY_UDS_REC_BYTES */);

/* "Socket" or "IB" once SharedInit completed, else "none" (for logs). */
const char *proxy_net_name(struct proxy_state *px);
/* The executor rings this after each step on a channel that has network connectors. */
struct eccl_bell *proxy_bell(struct proxy_state *px);
/* Counts the proxy thread's loop passes; it passes at least every PROXY_MAX_SLEEP_MS while it
 * lives. The UDS service watches it. */
const _Atomic uint64_t *proxy_heartbeat(struct proxy_state *px);
#define PROXY_MAX_SLEEP_MS 20
/* The proxy thread's id (0 until it runs), to tell a stuck thread from a starved one. */
const _Atomic int *proxy_thread_tid(struct proxy_state *px);
/* ECCL_PROXY_STALL_MS: how long the heartbeat may stand still before the proxy counts as dead. */
int64_t proxy_stall_ms(void);

/* For a thread waiting on the proxy: ecclRemoteError (with a WARN) once the heartbeat has stood
 * still for proxy_stall_ms(). Zero-initialise *w before the first call. */
struct proxy_liveness {
    uint64_t beat;
    uint64_t since_ns;
};
ecclResult_t proxy_check_alive(struct proxy_state *px, struct proxy_liveness *w);

/* One pass over the pending operations, the UDS socket and the network connections, moving at
 * most `budget` steps per connection. Returns the work done (0: nothing to do). Proxy thread
 * only; exposed for tests. */
int proxy_progress(struct proxy_state *px, int budget);

#endif

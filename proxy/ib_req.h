/*
 * ib_req.h - request and completion bookkeeping of one InfiniBand connection.
 *
 * A connection has at most ECCL_NET_MAX_REQUESTS requests live in a ring of slots; request
 * number `seq` (0, 1, 2, ... in posting order) lives in slot seq % ECCL_NET_MAX_REQUESTS.
 * Every work request the backend posts carries a wr_id naming its kind and request number;
 * every completion polled from the completion queue goes through proxy_ib_reqs_on_wc, which
 * checks it against what the protocol allows (right queue pair, right kind for this side, in
 * order per queue pair, a live request that still waits for it, a sane size) before it counts
 * it. A request is done when all its completions came:
 *   sender:   one RDMA-write-with-immediate completion per queue pair;
 *   receiver: one receive completion per queue pair (consumed by the sender's writes, the
 *             immediate carrying the message size), plus the completion of its CTS write.
 * The sender also counts the CTS entries that arrived (receive completions on queue pair 0
 * whose immediate is the request number) and may write request s only once CTS s came.
 *
 * Pure: completions are plain struct ibv_wc values, so tests drive this with a fake queue.
 */
#ifndef ECCL_PROXY_IB_REQ_H
#define ECCL_PROXY_IB_REQ_H

#include <infiniband/verbs.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"
#include "proxy/ib_wire.h"
#include "proxy/net.h"

enum proxy_ib_wr_kind {
    PROXY_IB_WR_DATA_WRITE = 0, /* sender: a request's data, RDMA write with immediate */
    PROXY_IB_WR_DATA_RECV = 1,  /* receiver: the receive that write consumes */
    PROXY_IB_WR_CTS_WRITE = 2,  /* receiver: a CTS entry, RDMA write with immediate */
    PROXY_IB_WR_CTS_RECV = 3,   /* sender: the receive that write consumes (no request) */
};

static inline uint64_t proxy_ib_wr_id(enum proxy_ib_wr_kind kind, uint64_t seq)
{
    return (seq << 2) | (uint64_t)kind;
}

struct proxy_ib_req {
    void *comm; /* the connection, for test() */
    uint64_t seq;
    bool live;       /* posted, not yet released by a test that saw it done */
    int pending;     /* completions still awaited */
    bool size_known; /* receiver: set by the first data completion */
    size_t size;     /* bytes moved (receiver: as the sender's immediate says) */
    size_t capacity; /* receiver: the buffer's size */
};

struct proxy_ib_reqs {
    int role; /* PROXY_IB_ROLE_SEND or PROXY_IB_ROLE_RECV */
    uint32_t nqps;
    uint32_t qpn[PROXY_IB_MAX_QPS]; /* this side's QP numbers, to place a completion */
    struct proxy_ib_req slot[ECCL_NET_MAX_REQUESTS];
    uint64_t next_seq;                    /* number of the next request posted */
    uint64_t first_live;                  /* oldest request not yet released */
    uint64_t data_next[PROXY_IB_MAX_QPS]; /* per QP: request of the next data completion */
    uint64_t cts_next;   /* sender: CTS entries arrived; receiver: CTS writes completed */
    ecclResult_t failed; /* first error seen (ecclSuccess while healthy) */
};

void proxy_ib_reqs_init(struct proxy_ib_reqs *r, int role, uint32_t nqps, const uint32_t *qpn,
                        void *comm);
/* Whether a request can be posted now (fewer than ECCL_NET_MAX_REQUESTS live). */
bool proxy_ib_reqs_can_post(const struct proxy_ib_reqs *r);
/* Sender: whether the CTS entry of the next request has arrived. */
bool proxy_ib_reqs_cts_ready(const struct proxy_ib_reqs *r);
/* Takes the next slot (NULL when full): a send of `size` bytes, or a receive into a buffer of
 * `size` bytes. */
struct proxy_ib_req *proxy_ib_reqs_post(struct proxy_ib_reqs *r, size_t size);
/*
 * Accounts one completion. A completion error or a completion the protocol does not allow
 * marks the connection failed (r->failed), WARNs once with the cause and returns the error
 * (ecclRemoteError for what the peer or the fabric did, ecclSystemError for local faults,
 * ecclInternalError for a completion this side never asked for). *repost_cts: the sender must
 * post one more CTS receive on queue pair 0.
 */
ecclResult_t proxy_ib_reqs_on_wc(struct proxy_ib_reqs *r, const struct ibv_wc *wc,
                                 bool *repost_cts);
/* Whether req is done; if so, *size (may be NULL) gets the bytes moved and the slot is
 * released (req must not be used again). */
bool proxy_ib_reqs_test(struct proxy_ib_reqs *r, struct proxy_ib_req *req, size_t *size);

/* The result a completion status maps to, and its name. */
ecclResult_t proxy_ib_wc_result(enum ibv_wc_status status);
const char *proxy_ib_wc_status_name(enum ibv_wc_status status);

#endif

/*
 * ib_req.c - request and completion bookkeeping of one InfiniBand connection (ib_req.h).
 */
#include "proxy/ib_req.h"

#include <endian.h>
#include <string.h>

#include "common/log.h"

void proxy_ib_reqs_init(struct proxy_ib_reqs *r, int role, uint32_t nqps, const uint32_t *qpn,
                        void *comm)
{
    memset(r, 0, sizeof(*r));
    r->role = role;
    r->nqps = nqps;
    for (uint32_t i = 0; i < nqps && i < PROXY_IB_MAX_QPS; i++)
        r->qpn[i] = qpn[i];
    for (int i = 0; i < ECCL_NET_MAX_REQUESTS; i++)
        r->slot[i].comm = comm;
    r->failed = ecclSuccess;
}

bool proxy_ib_reqs_can_post(const struct proxy_ib_reqs *r)
{
    return r->next_seq - r->first_live < ECCL_NET_MAX_REQUESTS;
}

bool proxy_ib_reqs_cts_ready(const struct proxy_ib_reqs *r)
{
    return r->role == PROXY_IB_ROLE_SEND && r->cts_next > r->next_seq;
}

struct proxy_ib_req *proxy_ib_reqs_post(struct proxy_ib_reqs *r, size_t size)
{
    if (!proxy_ib_reqs_can_post(r))
        return NULL;
    struct proxy_ib_req *q = &r->slot[r->next_seq % ECCL_NET_MAX_REQUESTS];
    void *comm = q->comm;
    memset(q, 0, sizeof(*q));
    q->comm = comm;
    q->seq = r->next_seq++;
    q->live = true;
    if (r->role == PROXY_IB_ROLE_SEND) {
        q->pending = (int)r->nqps;
        q->size_known = true;
        q->size = size;
    } else {
        q->pending = (int)r->nqps + 1;
        q->capacity = size;
    }
    return q;
}

const char *proxy_ib_wc_status_name(enum ibv_wc_status status)
{
    switch (status) {
    case IBV_WC_SUCCESS:
        return "success";
    case IBV_WC_LOC_LEN_ERR:
        return "local length error";
    case IBV_WC_LOC_QP_OP_ERR:
        return "local QP operation error";
    case IBV_WC_LOC_EEC_OP_ERR:
        return "local EE context operation error";
    case IBV_WC_LOC_PROT_ERR:
        return "local protection error";
    case IBV_WC_WR_FLUSH_ERR:
        return "work request flushed";
    case IBV_WC_MW_BIND_ERR:
        return "memory window bind error";
    case IBV_WC_BAD_RESP_ERR:
        return "bad response";
    case IBV_WC_LOC_ACCESS_ERR:
        return "local access error";
    case IBV_WC_REM_INV_REQ_ERR:
        return "remote invalid request";
    case IBV_WC_REM_ACCESS_ERR:
        return "remote access error";
    case IBV_WC_REM_OP_ERR:
        return "remote operation error";
    case IBV_WC_RETRY_EXC_ERR:
        return "transport retry counter exceeded";
    case IBV_WC_RNR_RETRY_EXC_ERR:
        return "RNR retry counter exceeded";
    case IBV_WC_LOC_RDD_VIOL_ERR:
        return "local RDD violation";
    case IBV_WC_REM_INV_RD_REQ_ERR:
        return "remote invalid RD request";
    case IBV_WC_REM_ABORT_ERR:
        return "remote aborted";
    case IBV_WC_INV_EECN_ERR:
        return "invalid EE context number";
    case IBV_WC_INV_EEC_STATE_ERR:
        return "invalid EE context state";
    case IBV_WC_FATAL_ERR:
        return "fatal error";
    case IBV_WC_RESP_TIMEOUT_ERR:
        return "response timeout";
    case IBV_WC_GENERAL_ERR:
        return "general error";
    default:
        return "unknown status";
    }
}

ecclResult_t proxy_ib_wc_result(enum ibv_wc_status status)
{
    switch (status) {
    case IBV_WC_SUCCESS:
        return ecclSuccess;
    case IBV_WC_LOC_LEN_ERR:
    case IBV_WC_LOC_QP_OP_ERR:
    case IBV_WC_LOC_EEC_OP_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_MW_BIND_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
    case IBV_WC_LOC_RDD_VIOL_ERR:
    case IBV_WC_FATAL_ERR:
    case IBV_WC_GENERAL_ERR:
        return ecclSystemError;
    default:
        /* Remote errors, retries exceeded (the peer or the path is gone), and flushes (which
         * only follow an error) are the peer's side of the story. */
        return ecclRemoteError;
    }
}

static ecclResult_t fail(struct proxy_ib_reqs *r, ecclResult_t res)
{
    if (r->failed == ecclSuccess)
        r->failed = res;
    return res;
}

static const char *kind_name(uint64_t kind)
{
    static const char *const names[] = {"data write", "data receive", "CTS write", "CTS receive"};
    return names[kind & 3];
}

ecclResult_t proxy_ib_reqs_on_wc(struct proxy_ib_reqs *r, const struct ibv_wc *wc, bool *repost_cts)
{
    *repost_cts = false;
    if (r->failed != ecclSuccess)
        return r->failed;
    uint64_t kind = wc->wr_id & 3, seq = wc->wr_id >> 2;
    if (wc->status != IBV_WC_SUCCESS) {
        /* Only the first error is interesting: the ones after it are flushes. */
        WARN("NET/IB : %s of request %lu on QP 0x%x failed: %s (status %d, vendor error "
             "0x%x)%s",
             kind_name(kind), (unsigned long)seq, wc->qp_num, proxy_ib_wc_status_name(wc->status),
             (int)wc->status, wc->vendor_err,
             wc->status == IBV_WC_RETRY_EXC_ERR ? ": the peer is unreachable or gone" : "");
        return fail(r, proxy_ib_wc_result(wc->status));
    }
    uint32_t qi = 0;
    while (qi < r->nqps && r->qpn[qi] != wc->qp_num)
        qi++;
    if (qi == r->nqps) {
        WARN("NET/IB : completion for QP 0x%x, which is not one of this connection's", wc->qp_num);
        return fail(r, ecclInternalError);
    }
    bool send_side = r->role == PROXY_IB_ROLE_SEND;
    bool kind_ok = send_side ? (kind == PROXY_IB_WR_DATA_WRITE || kind == PROXY_IB_WR_CTS_RECV)
                             : (kind == PROXY_IB_WR_DATA_RECV || kind == PROXY_IB_WR_CTS_WRITE);
    if (!kind_ok || ((kind == PROXY_IB_WR_CTS_WRITE || kind == PROXY_IB_WR_CTS_RECV) && qi != 0)) {
        WARN("NET/IB : %s completion on QP %u of a %s connection", kind_name(kind), qi,
             send_side ? "send" : "receive");
        return fail(r, ecclInternalError);
    }
    bool is_recv = kind == PROXY_IB_WR_DATA_RECV || kind == PROXY_IB_WR_CTS_RECV;
    enum ibv_wc_opcode want = is_recv ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RDMA_WRITE;
    if (wc->opcode != want || (is_recv && !(wc->wc_flags & IBV_WC_WITH_IMM))) {
        WARN("NET/IB : %s completion with opcode %d (flags 0x%x), %d expected: the peer broke "
             "the protocol",
             kind_name(kind), (int)wc->opcode, wc->wc_flags, (int)want);
        return fail(r, ecclRemoteError);
    }

    if (kind == PROXY_IB_WR_CTS_RECV) {
        uint32_t imm = be32toh(wc->imm_data);
        if (imm != (uint32_t)r->cts_next) {
            WARN("NET/IB : CTS for request %u arrived, request %lu expected: the receiver broke "
                 "the protocol",
                 imm, (unsigned long)r->cts_next);
            return fail(r, ecclRemoteError);
        }
        /* The FIFO has ECCL_NET_MAX_REQUESTS entries: one more would overwrite an entry that
         * no send has read yet. */
        if (r->cts_next >= r->next_seq + ECCL_NET_MAX_REQUESTS) {
            WARN("NET/IB : the receiver posted more than %d receives ahead of the sends",
                 ECCL_NET_MAX_REQUESTS);
            return fail(r, ecclRemoteError);
        }
        r->cts_next++;
        *repost_cts = true;
        return ecclSuccess;
    }

    /* Completions of one queue pair come in posting order. */
    uint64_t *next = kind == PROXY_IB_WR_CTS_WRITE ? &r->cts_next : &r->data_next[qi];
    if (seq != *next) {
        WARN("NET/IB : %s completion of request %lu on QP %u, request %lu expected (out of "
             "order)",
             kind_name(kind), (unsigned long)seq, qi, (unsigned long)*next);
        return fail(r, ecclInternalError);
    }
    struct proxy_ib_req *q = &r->slot[seq % ECCL_NET_MAX_REQUESTS];
    if (!q->live || q->seq != seq || q->pending <= 0) {
        WARN("NET/IB : %s completion of request %lu, which is not waiting for one", kind_name(kind),
             (unsigned long)seq);
        return fail(r, ecclInternalError);
    }
    if (kind == PROXY_IB_WR_DATA_RECV) {
        size_t size = be32toh(wc->imm_data);
        if (size > q->capacity) {
            WARN("NET/IB : the sender wrote %zu bytes into a receive of %zu bytes", size,
                 q->capacity);
            return fail(r, ecclRemoteError);
        }
        if (q->size_known && q->size != size) {
            WARN("NET/IB : request %lu: the sender announced %zu bytes, then %zu",
                 (unsigned long)seq, q->size, size);
            return fail(r, ecclRemoteError);
        }
        q->size = size;
        q->size_known = true;
    }
    (*next)++;
    q->pending--;
    return ecclSuccess;
}

bool proxy_ib_reqs_test(struct proxy_ib_reqs *r, struct proxy_ib_req *req, size_t *size)
{
    if (!req->live || req->pending > 0)
        return false;
    if (size)
        *size = req->size;
    req->live = false;
    while (r->first_live < r->next_seq && !r->slot[r->first_live % ECCL_NET_MAX_REQUESTS].live)
        r->first_live++;
    return true;
}

/*
 * ib_qp.c - the RC queue-pair transitions as data, and port facts (ib_qp.h). Pure functions.
 */
#include "proxy/ib_qp.h"

#include <string.h>

#include "common/check.h"
#include "common/log.h"

/* From ibv_modify_qp(3) for IBV_QPT_RC. Moving to RESET or ERR needs only the state. */
#define TO_RESET_OR_ERR(s)                 \
    {(s), IBV_QPS_RESET, IBV_QP_STATE, 0}, \
    {                                      \
        (s), IBV_QPS_ERR, IBV_QP_STATE, 0  \
    }

const struct proxy_ib_qp_step proxy_ib_qp_steps[] = {
    {IBV_QPS_RESET, IBV_QPS_INIT,
     IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0},
    {IBV_QPS_INIT, IBV_QPS_RTR,
     IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
     IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX},
    {IBV_QPS_RTR, IBV_QPS_RTS,
     IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
         IBV_QP_MAX_QP_RD_ATOMIC,
     IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER | IBV_QP_ALT_PATH |
         IBV_QP_PATH_MIG_STATE},
    TO_RESET_OR_ERR(IBV_QPS_INIT),
    TO_RESET_OR_ERR(IBV_QPS_RTR),
    TO_RESET_OR_ERR(IBV_QPS_RTS),
    TO_RESET_OR_ERR(IBV_QPS_ERR),
};

const size_t proxy_ib_qp_nsteps = ECCL_ARRAY_SIZE(proxy_ib_qp_steps);

const struct proxy_ib_qp_step *proxy_ib_qp_step_find(enum ibv_qp_state from, enum ibv_qp_state to)
{
    for (size_t i = 0; i < proxy_ib_qp_nsteps; i++)
        if (proxy_ib_qp_steps[i].from == from && proxy_ib_qp_steps[i].to == to)
            return &proxy_ib_qp_steps[i];
    return NULL;
}

static const char *state_name(enum ibv_qp_state s)
{
    switch (s) {
    case IBV_QPS_RESET:
        return "RESET";
    case IBV_QPS_INIT:
        return "INIT";
    case IBV_QPS_RTR:
        return "RTR";
    case IBV_QPS_RTS:
        return "RTS";
    case IBV_QPS_SQD:
        return "SQD";
    case IBV_QPS_SQE:
        return "SQE";
    case IBV_QPS_ERR:
        return "ERR";
    default:
        return "?";
    }
}

void proxy_ib_qp_init_attr(const struct proxy_ib_qp_params *p, struct ibv_qp_attr *attr, int *mask)
{
    memset(attr, 0, sizeof(*attr));
    attr->qp_state = IBV_QPS_INIT;
    attr->pkey_index = p->pkey_index;
    attr->port_num = p->port;
    attr->qp_access_flags = PROXY_IB_QP_ACCESS;
    *mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
}

ecclResult_t proxy_ib_qp_rtr_attr(const struct proxy_ib_qp_params *p,
                                  const struct proxy_ib_meta *remote, uint32_t qp,
                                  struct ibv_qp_attr *attr, int *mask)
{
    if (remote->link_layer != p->link_layer) {
        WARN("NET/IB : the peer's port is %s, this one %s: they cannot connect",
             remote->link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand",
             p->link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand");
        return ecclRemoteError;
    }
    if (qp >= remote->nqps) {
        WARN("NET/IB : the peer has %u queue pairs, queue pair %u wanted", remote->nqps, qp);
        return ecclRemoteError;
    }
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = proxy_ib_mtu_min(p->mtu, (enum ibv_mtu)remote->mtu);
    a.dest_qp_num = remote->qpn[qp];
    a.rq_psn = remote->psn[qp];
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = PROXY_IB_MIN_RNR_TIMER;
    a.ah_attr.port_num = p->port;
    a.ah_attr.sl = p->sl;
    a.ah_attr.src_path_bits = 0;
    a.ah_attr.static_rate = 0;
    if (p->link_layer == IBV_LINK_LAYER_ETHERNET) {
        /* RoCE has no LIDs: every packet carries a GRH addressed by GID. */
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, remote->gid, 16);
        a.ah_attr.grh.sgid_index = p->gid_index;
        a.ah_attr.grh.hop_limit = 255;
        a.ah_attr.grh.traffic_class = p->tc;
        a.ah_attr.grh.flow_label = 0;
        a.ah_attr.dlid = 0;
    } else {
        a.ah_attr.is_global = 0;
        a.ah_attr.dlid = remote->lid;
    }
    *attr = a;
    *mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
            IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
    return ecclSuccess;
}

void proxy_ib_qp_rts_attr(const struct proxy_ib_qp_params *p, uint32_t local_psn,
                          struct ibv_qp_attr *attr, int *mask)
{
    memset(attr, 0, sizeof(*attr));
    attr->qp_state = IBV_QPS_RTS;
    attr->timeout = p->timeout;
    attr->retry_cnt = p->retry_cnt;
    attr->rnr_retry = PROXY_IB_RNR_RETRY;
    attr->sq_psn = local_psn;
    attr->max_rd_atomic = 1;
    *mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
            IBV_QP_MAX_QP_RD_ATOMIC;
}

#define RANGE(bit, cond, ...)                         \
    do {                                              \
        if ((mask & (bit)) && !(cond)) {              \
            WARN("NET/IB : QP %s->%s: " __VA_ARGS__); \
            return ecclInternalError;                 \
        }                                             \
    } while (0)

ecclResult_t proxy_ib_qp_check(enum ibv_qp_state from, enum ibv_qp_state to,
                               const struct ibv_qp_attr *attr, int mask)
{
    const struct proxy_ib_qp_step *s = proxy_ib_qp_step_find(from, to);
    const char *f = state_name(from), *t = state_name(to);
    if (!s) {
        WARN("NET/IB : QP %s->%s is not a transition of an RC queue pair", f, t);
        return ecclInternalError;
    }
    if ((mask & s->required) != s->required) {
        WARN("NET/IB : QP %s->%s: attribute mask 0x%x lacks required bits 0x%x", f, t, mask,
             s->required & ~mask);
        return ecclInternalError;
    }
    if (mask & ~(s->required | s->optional)) {
        WARN("NET/IB : QP %s->%s: attribute mask 0x%x has bits 0x%x the step does not allow", f, t,
             mask, mask & ~(s->required | s->optional));
        return ecclInternalError;
    }
    RANGE(IBV_QP_STATE, attr->qp_state == to, "qp_state %d", f, t, (int)attr->qp_state);
    RANGE(IBV_QP_PORT, attr->port_num >= 1, "port_num 0", f, t);
    RANGE(IBV_QP_ACCESS_FLAGS,
          (attr->qp_access_flags &
           ~(unsigned)(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                       IBV_ACCESS_REMOTE_ATOMIC)) == 0,
          "access flags 0x%x", f, t, attr->qp_access_flags);
    RANGE(IBV_QP_PATH_MTU, attr->path_mtu >= IBV_MTU_256 && attr->path_mtu <= IBV_MTU_4096,
          "path MTU code %d", f, t, (int)attr->path_mtu);
    RANGE(IBV_QP_DEST_QPN, attr->dest_qp_num >= 2 && attr->dest_qp_num <= 0xffffff, "dest QPN 0x%x",
          f, t, attr->dest_qp_num);
    RANGE(IBV_QP_RQ_PSN, attr->rq_psn <= 0xffffff, "rq PSN 0x%x", f, t, attr->rq_psn);
    RANGE(IBV_QP_SQ_PSN, attr->sq_psn <= 0xffffff, "sq PSN 0x%x", f, t, attr->sq_psn);
    RANGE(IBV_QP_MIN_RNR_TIMER, attr->min_rnr_timer <= 31, "min RNR timer %u", f, t,
          attr->min_rnr_timer);
    RANGE(IBV_QP_TIMEOUT, attr->timeout <= 31, "timeout %u (0..31)", f, t, attr->timeout);
    RANGE(IBV_QP_RETRY_CNT, attr->retry_cnt <= 7, "retry count %u (0..7)", f, t, attr->retry_cnt);
    RANGE(IBV_QP_RNR_RETRY, attr->rnr_retry <= 7, "RNR retry %u (0..7)", f, t, attr->rnr_retry);
    RANGE(IBV_QP_AV, attr->ah_attr.port_num >= 1, "address vector with port 0", f, t);
    RANGE(IBV_QP_AV, attr->ah_attr.sl <= 15, "service level %u (0..15)", f, t, attr->ah_attr.sl);
    RANGE(IBV_QP_AV, attr->ah_attr.is_global || attr->ah_attr.dlid != 0,
          "address vector with neither a GRH nor a destination LID", f, t);
    RANGE(IBV_QP_AV, !attr->ah_attr.is_global || attr->ah_attr.grh.hop_limit >= 1,
          "GRH with hop limit 0", f, t);
    return ecclSuccess;
}

enum ibv_mtu proxy_ib_mtu_min(enum ibv_mtu a, enum ibv_mtu b)
{
    return a < b ? a : b;
}

int proxy_ib_mtu_bytes(enum ibv_mtu mtu)
{
    if (mtu < IBV_MTU_256 || mtu > IBV_MTU_4096)
        return 0;
    return 128 << mtu;
}

int proxy_ib_port_speed_mbps(uint8_t active_speed, uint8_t active_width)
{
    int lane, lanes;
    switch (active_speed) {
    case 1: /* SDR */
        lane = 2500;
        break;
    case 2: /* DDR */
        lane = 5000;
        break;
    case 4: /* QDR */
    case 8: /* FDR10 */
        lane = 10000;
        break;
    case 16: /* FDR */
        lane = 14000;
        break;
    case 32: /* EDR */
        lane = 25000;
        break;
    case 64: /* HDR */
        lane = 50000;
        break;
    case 128: /* NDR */
        lane = 100000;
        break;
    default:
        return 0;
    }
    switch (active_width) {
    case 1:
        lanes = 1;
        break;
    case 2:
        lanes = 4;
        break;
    case 4:
        lanes = 8;
        break;
    case 8:
        lanes = 12;
        break;
    case 16:
        lanes = 2;
        break;
    default:
        return 0;
    }
    return lane * lanes;
}

static bool gid_zero(const uint8_t *g)
{
    for (int i = 0; i < 16; i++)
        if (g[i])
            return false;
    return true;
}

static bool gid_v4_mapped(const uint8_t *g)
{
    for (int i = 0; i < 10; i++)
        if (g[i])
            return false;
    return g[10] == 0xff && g[11] == 0xff;
}

int proxy_ib_gid_pick(const struct proxy_ib_gid_cand *cands, int n)
{
    int v2_v4 = -1, v2 = -1, any = -1;
    for (int i = 0; i < n; i++) {
        const struct proxy_ib_gid_cand *c = &cands[i];
        if (gid_zero(c->gid))
            continue;
        if (c->roce_v2 && gid_v4_mapped(c->gid) && v2_v4 < 0)
            v2_v4 = c->index;
        if (c->roce_v2 && v2 < 0)
            v2 = c->index;
        if (any < 0)
            any = c->index;
    }
    return v2_v4 >= 0 ? v2_v4 : v2 >= 0 ? v2 : any;
}

void proxy_ib_split(size_t size, uint32_t nqps, uint32_t i, size_t *off, size_t *len)
{
    if (nqps == 0)
        nqps = 1;
    size_t chunk = ECCL_ALIGN_UP(ECCL_DIV_UP(size, nqps), 128);
    size_t o = (size_t)i * chunk;
    if (o > size || chunk == 0)
        o = size;
    *off = o;
    *len = ECCL_MIN(chunk, size - o);
}

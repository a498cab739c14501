/*
 * ib_qp.h - the reliable-connected (RC) queue-pair state machine as data, and the port facts
 * the backend derives from verbs attributes.
 *
 * A QP goes RESET -> INIT -> RTR (ready to receive) -> RTS (ready to send). Each step is one
 * ibv_modify_qp with an attribute mask; the verbs spec (ibv_modify_qp(3), IBTA table 91) says
 * which attributes an RC QP must and may give at each step. proxy_ib_qp_steps holds that table;
 * the proxy_ib_qp_*_attr functions compute the attributes from this side's port parameters and
 * the peer's connection metadata; proxy_ib_qp_check verifies a mask and values against the
 * table before they reach the driver. Everything here is pure (no verbs calls).
 */
#ifndef ECCL_PROXY_IB_QP_H
#define ECCL_PROXY_IB_QP_H

#include <infiniband/verbs.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"
#include "proxy/ib_wire.h"

/* One allowed transition of an RC QP. */
struct proxy_ib_qp_step {
    enum ibv_qp_state from, to;
    int required; /* enum ibv_qp_attr_mask bits that must be given */
    int optional; /* bits that may be given besides */
};

extern const struct proxy_ib_qp_step proxy_ib_qp_steps[];
extern const size_t proxy_ib_qp_nsteps;

/* The step from -> to, or NULL if RC QPs cannot take it. */
const struct proxy_ib_qp_step *proxy_ib_qp_step_find(enum ibv_qp_state from, enum ibv_qp_state to);

/* This side's parameters of a connection (from the port and the ECCL_IB_* variables). */
struct proxy_ib_qp_params {
    uint8_t port;
    uint8_t link_layer; /* IBV_LINK_LAYER_* */
    enum ibv_mtu mtu;   /* the port's active MTU */
    uint16_t pkey_index;
    uint8_t gid_index; /* ECCL_IB_GID_INDEX or picked */
    uint8_t sl;        /* ECCL_IB_SL: 0..15 */
    uint8_t tc;        /* ECCL_IB_TC: traffic class in the GRH */
    uint8_t timeout;   /* ECCL_IB_TIMEOUT: 4.096 us * 2^timeout, 0..31 */
    uint8_t retry_cnt; /* ECCL_IB_RETRY_CNT: 0..7 */
};

/* Access flags of the backend's QPs: the peer RDMA-writes data and CTS entries. */
#define PROXY_IB_QP_ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE)
/* RNR NAK timer asked of the peer (12: 0.64 ms) and retries on RNR (7: forever). */
#define PROXY_IB_MIN_RNR_TIMER 12
#define PROXY_IB_RNR_RETRY     7

/* RESET -> INIT. */
void proxy_ib_qp_init_attr(const struct proxy_ib_qp_params *p, struct ibv_qp_attr *attr, int *mask);
/* INIT -> RTR towards queue pair `qp` of the peer described by `remote`. ecclRemoteError when
 * the peer cannot be reached from this port (other link layer, QP index out of range). */
ecclResult_t proxy_ib_qp_rtr_attr(const struct proxy_ib_qp_params *p,
                                  const struct proxy_ib_meta *remote, uint32_t qp,
                                  struct ibv_qp_attr *attr, int *mask);
/* RTR -> RTS, sending from `local_psn`. */
void proxy_ib_qp_rts_attr(const struct proxy_ib_qp_params *p, uint32_t local_psn,
                          struct ibv_qp_attr *attr, int *mask);
/* Checks a transition's mask against the table and the values it sets against their ranges.
 * ecclInternalError with a WARN naming what is wrong. */
ecclResult_t proxy_ib_qp_check(enum ibv_qp_state from, enum ibv_qp_state to,
                               const struct ibv_qp_attr *attr, int mask);

/* The path MTU of a connection: the smaller of the two ports' active MTUs. */
enum ibv_mtu proxy_ib_mtu_min(enum ibv_mtu a, enum ibv_mtu b);
/* Bytes of an MTU code (256..4096), 0 for a bad code. */
int proxy_ib_mtu_bytes(enum ibv_mtu mtu);
/* Link speed in Mbit/s from a port's active_speed and active_width codes (0 if unknown). */
int proxy_ib_port_speed_mbps(uint8_t active_speed, uint8_t active_width);

/* A GID table entry, as RoCE GID selection sees it. */
struct proxy_ib_gid_cand {
    int index;
    uint8_t gid[16];
    bool roce_v2; /* the entry's type (sysfs gid_attrs/types) is "RoCE v2" */
};
/* Picks the RoCE GID index when ECCL_IB_GID_INDEX is unset: a RoCE v2 entry holding an
 * IPv4-mapped address first (routable, and what NCCL picks), then any other nonzero RoCE v2
 * entry, then the first nonzero entry; -1 when all are zero. */
int proxy_ib_gid_pick(const struct proxy_ib_gid_cand *cands, int n);

/* Splits a message of `size` bytes over nqps queue pairs: QP i writes *len bytes from offset
 * *off (chunks aligned to 128 bytes; trailing QPs may get 0 bytes). */
void proxy_ib_split(size_t size, uint32_t nqps, uint32_t i, size_t *off, size_t *len);

#endif

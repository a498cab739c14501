/*
 * ib_wire.h - the bytes the InfiniBand backend exchanges: the listen handle, the connection
 * metadata and the ready message (over the TCP side channel), and the clear-to-send (CTS)
 * entries a receiver writes into its sender's FIFO with RDMA.
 *
 * Every record is encoded field by field in little-endian order (no struct is sent as is) and
 * every decoder checks magic, version, lengths and value ranges before it writes its output:
 * a truncated or lying record gives ecclRemoteError with a WARN that says what was wrong,
 * never an overrun. docs/internals/net-ib.md draws the layouts.
 */
#ifndef ECCL_PROXY_IB_WIRE_H
#define ECCL_PROXY_IB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/socket.h"
#include "eccl.h"

#define PROXY_IB_VERSION 1
#define PROXY_IB_MAX_QPS 16 /* queue pairs per connection (ECCL_IB_QPS_PER_CONNECTION max) */

#define PROXY_IB_HANDLE_MAGIC 0x48424345u /* "ECBH" */
#define PROXY_IB_META_MAGIC   0x4d424345u /* "ECBM" */
#define PROXY_IB_READY_MAGIC  0x52424345u /* "ECBR" */
#define PROXY_IB_CTS_MAGIC    0x43424345u /* "ECBC" */

#define PROXY_IB_HANDLE_BYTES   40 /* used part of the ECCL_NET_HANDLE_BYTES handle */
#define PROXY_IB_META_HDR_BYTES 8  /* magic, version, total length: enough to size the rest */
#define PROXY_IB_META_FIXED     56 /* bytes before the per-QP array */
#define PROXY_IB_META_QP_BYTES  8  /* qpn, psn */
#define PROXY_IB_META_MAX_BYTES (PROXY_IB_META_FIXED + PROXY_IB_MAX_QPS * PROXY_IB_META_QP_BYTES)
#define PROXY_IB_READY_BYTES    16
#define PROXY_IB_CTS_BYTES      32 /* one FIFO entry */

/* Which end of a connection wrote a metadata record. */
#define PROXY_IB_ROLE_SEND 1
#define PROXY_IB_ROLE_RECV 2

/* What listen() puts in the opaque handle: where to reach the listener, and a random nonce
 * that the connecting side echoes, so that a stray connection is recognised. */
struct proxy_ib_handle {
    union eccl_sockaddr addr;
    uint64_t nonce;
};

/* One side's connection metadata. */
struct proxy_ib_meta {
    uint64_t nonce;     /* the listen handle's */
    uint8_t role;       /* PROXY_IB_ROLE_* */
    uint8_t link_layer; /* IBV_LINK_LAYER_INFINIBAND or IBV_LINK_LAYER_ETHERNET */
    uint8_t mtu;        /* enum ibv_mtu: the port's active MTU */
    uint8_t port;
    uint16_t lid; /* 0 on Ethernet (RoCE) */
    uint8_t gid[16];
    /* Sender only: the CTS FIFO the receiver writes into (0 for the receiver). */
    uint64_t fifo_addr;
    uint32_t fifo_rkey;
    uint32_t fifo_slots; /* ECCL_NET_MAX_REQUESTS */
    uint32_t nqps;
    uint32_t qpn[PROXY_IB_MAX_QPS];
    uint32_t psn[PROXY_IB_MAX_QPS]; /* the first PSN this side sends with, per QP */
};

/* A CTS entry: where the receiver of request `seq` wants the data. */
struct proxy_ib_cts {
    uint64_t seq;
    uint64_t addr;
    uint32_t rkey;
    uint32_t size;
    int32_t tag;
};

/* Writes the handle into buf (len >= PROXY_IB_HANDLE_BYTES; the rest of buf is zeroed). */
ecclResult_t proxy_ib_handle_encode(const struct proxy_ib_handle *h, void *buf, size_t len);
ecclResult_t proxy_ib_handle_decode(const void *buf, size_t len, struct proxy_ib_handle *out);

/* Writes the record into buf; *len_out gets its length (PROXY_IB_META_FIXED + 8 * nqps).
 * ecclInternalError if the struct holds values the format cannot carry. */
ecclResult_t proxy_ib_meta_encode(const struct proxy_ib_meta *m, void *buf, size_t cap,
                                  size_t *len_out);
/* Checks the first PROXY_IB_META_HDR_BYTES of a record (magic, version, a length within
 * bounds) and gives the record's total length, so that a reader knows how much more to read. */
ecclResult_t proxy_ib_meta_peek(const void *buf, size_t len, size_t *total_out);
/* Decodes a whole record of exactly len bytes. */
ecclResult_t proxy_ib_meta_decode(const void *buf, size_t len, struct proxy_ib_meta *out);

void proxy_ib_ready_encode(uint64_t nonce, void *buf /* PROXY_IB_READY_BYTES */);
ecclResult_t proxy_ib_ready_decode(const void *buf, size_t len, uint64_t nonce);

void proxy_ib_cts_encode(const struct proxy_ib_cts *c, void *buf /* PROXY_IB_CTS_BYTES */);
/* Decodes the FIFO entry for request `seq`, checking that the peer wrote that request's entry
 * and that the buffer it names does not wrap the address space. */
ecclResult_t proxy_ib_cts_decode(const void *buf, uint64_t seq, struct proxy_ib_cts *out);

#endif

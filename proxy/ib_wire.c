/*
 * ib_wire.c - encoders and checked decoders of the InfiniBand backend's records (ib_wire.h).
 *
 * Pure functions: no verbs, no sockets. Decoders read only within the length they are given
 * and write their output only when the whole record passed its checks.
 */
#include "proxy/ib_wire.h"

#include <infiniband/verbs.h>
#include <string.h>

#include "common/check.h"
#include "common/log.h"
#include "proxy/net.h"

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- listen handle ---------------------------------------------------------------------- */

ecclResult_t proxy_ib_handle_encode(const struct proxy_ib_handle *h, void *buf, size_t len)
{
    uint8_t *p = buf;
    if (len < PROXY_IB_HANDLE_BYTES) {
        WARN("NET/IB : handle buffer of %zu bytes, %d needed", len, PROXY_IB_HANDLE_BYTES);
        return ecclInternalError;
    }
    memset(p, 0, len);
    put32(p, PROXY_IB_HANDLE_MAGIC);
    put16(p + 4, PROXY_IB_VERSION);
    if (h->addr.sa.sa_family == AF_INET) {
        put16(p + 6, 4);
        put16(p + 8, ntohs(h->addr.sin.sin_port));
        memcpy(p + 12, &h->addr.sin.sin_addr, 4);
    } else if (h->addr.sa.sa_family == AF_INET6) {
        put16(p + 6, 6);
        put16(p + 8, ntohs(h->addr.sin6.sin6_port));
        memcpy(p + 12, &h->addr.sin6.sin6_addr, 16);
    } else {
        WARN("NET/IB : listen address of family %d cannot go into a handle", h->addr.sa.sa_family);
        return ecclInternalError;
    }
    put64(p + 28, h->nonce);
    return ecclSuccess;
}

ecclResult_t proxy_ib_handle_decode(const void *buf, size_t len, struct proxy_ib_handle *out)
{
    const uint8_t *p = buf;
    if (len < PROXY_IB_HANDLE_BYTES) {
        WARN("NET/IB : handle truncated: %zu bytes, %d expected", len, PROXY_IB_HANDLE_BYTES);
        return ecclRemoteError;
    }
    if (get32(p) != PROXY_IB_HANDLE_MAGIC) {
        WARN("NET/IB : bad handle magic 0x%08x (not an InfiniBand listen handle)", get32(p));
        return ecclRemoteError;
    }
    if (get16(p + 4) != PROXY_IB_VERSION) {
        WARN("NET/IB : handle of version %u, this eccl speaks %d", get16(p + 4), PROXY_IB_VERSION);
        return ecclRemoteError;
    }
    uint16_t family = get16(p + 6), port = get16(p + 8);
    if (port == 0) {
        WARN("NET/IB : handle names port 0");
        return ecclRemoteError;
    }
    struct proxy_ib_handle h;
    memset(&h, 0, sizeof(h));
    if (family == 4) {
        h.addr.sin.sin_family = AF_INET;
        h.addr.sin.sin_port = htons(port);
        memcpy(&h.addr.sin.sin_addr, p + 12, 4);
    } else if (family == 6) {
        h.addr.sin6.sin6_family = AF_INET6;
        h.addr.sin6.sin6_port = htons(port);
        memcpy(&h.addr.sin6.sin6_addr, p + 12, 16);
    } else {
        WARN("NET/IB : handle of address family %u (4 or 6 expected)", family);
        return ecclRemoteError;
    }
    h.nonce = get64(p + 28);
    *out = h;
    return ecclSuccess;
}

/* ---- connection metadata ---------------------------------------------------------------- */

ecclResult_t proxy_ib_meta_encode(const struct proxy_ib_meta *m, void *buf, size_t cap,
                                  size_t *len_out)
{
    uint8_t *p = buf;
    if (m->nqps < 1 || m->nqps > PROXY_IB_MAX_QPS) {
        WARN("NET/IB : %u queue pairs (1..%d)", m->nqps, PROXY_IB_MAX_QPS);
        return ecclInternalError;
    }
    size_t len = PROXY_IB_META_FIXED + (size_t)m->nqps * PROXY_IB_META_QP_BYTES;
    if (cap < len) {
        WARN("NET/IB : metadata buffer of %zu bytes, %zu needed", cap, len);
        return ecclInternalError;
    }
    memset(p, 0, len);
    put32(p, PROXY_IB_META_MAGIC);
    put16(p + 4, PROXY_IB_VERSION);
    put16(p + 6, (uint16_t)len);
    put64(p + 8, m->nonce);
    p[16] = m->role;
    p[17] = m->link_layer;
    p[18] = m->mtu;
    p[19] = (uint8_t)m->nqps;
    put16(p + 20, m->lid);
    p[22] = m->port;
    memcpy(p + 24, m->gid, 16);
    put64(p + 40, m->fifo_addr);
    put32(p + 48, m->fifo_rkey);
    put32(p + 52, m->fifo_slots);
    for (size_t i = 0; i < m->nqps; i++) {
        put32(p + PROXY_IB_META_FIXED + 8 * i, m->qpn[i]);
        put32(p + PROXY_IB_META_FIXED + 8 * i + 4, m->psn[i]);
    }
    *len_out = len;
    return ecclSuccess;
}

ecclResult_t proxy_ib_meta_peek(const void *buf, size_t len, size_t *total_out)
{
    const uint8_t *p = buf;
    if (len < PROXY_IB_META_HDR_BYTES) {
        WARN("NET/IB : connection metadata truncated: %zu bytes", len);
        return ecclRemoteError;
    }
    if (get32(p) != PROXY_IB_META_MAGIC) {
        WARN("NET/IB : bad connection metadata magic 0x%08x", get32(p));
        return ecclRemoteError;
    }
    if (get16(p + 4) != PROXY_IB_VERSION) {
        WARN("NET/IB : connection metadata of version %u, this eccl speaks %d", get16(p + 4),
             PROXY_IB_VERSION);
        return ecclRemoteError;
    }
    size_t total = get16(p + 6);
    if (total < PROXY_IB_META_FIXED + PROXY_IB_META_QP_BYTES || total > PROXY_IB_META_MAX_BYTES) {
        WARN("NET/IB : connection metadata claims %zu bytes (%d..%d)", total,
             PROXY_IB_META_FIXED + PROXY_IB_META_QP_BYTES, PROXY_IB_META_MAX_BYTES);
        return ecclRemoteError;
    }
    *total_out = total;
    return ecclSuccess;
}

ecclResult_t proxy_ib_meta_decode(const void *buf, size_t len, struct proxy_ib_meta *out)
{
    const uint8_t *p = buf;
    size_t total = 0;
    ECCL_TRY(proxy_ib_meta_peek(buf, len, &total));
    if (total != len) {
        WARN("NET/IB : connection metadata claims %zu bytes, %zu received", total, len);
        return ecclRemoteError;
    }
    struct proxy_ib_meta m;
    memset(&m, 0, sizeof(m));
    m.nonce = get64(p + 8);
    m.role = p[16];
    m.link_layer = p[17];
    m.mtu = p[18];
    m.nqps = p[19];
    m.lid = get16(p + 20);
    m.port = p[22];
    memcpy(m.gid, p + 24, 16);
    m.fifo_addr = get64(p + 40);
    m.fifo_rkey = get32(p + 48);
    m.fifo_slots = get32(p + 52);
    if (m.nqps < 1 || m.nqps > PROXY_IB_MAX_QPS ||
        len != PROXY_IB_META_FIXED + (size_t)m.nqps * PROXY_IB_META_QP_BYTES) {
        WARN("NET/IB : connection metadata of %zu bytes announces %u queue pairs", len, m.nqps);
        return ecclRemoteError;
    }
    if (p[23] != 0) {
        WARN("NET/IB : connection metadata has a nonzero reserved byte");
        return ecclRemoteError;
    }
    if (m.role != PROXY_IB_ROLE_SEND && m.role != PROXY_IB_ROLE_RECV) {
        WARN("NET/IB : connection metadata of unknown role %u", m.role);
        return ecclRemoteError;
    }
    if (m.link_layer != IBV_LINK_LAYER_INFINIBAND && m.link_layer != IBV_LINK_LAYER_ETHERNET) {
        WARN("NET/IB : connection metadata of unknown link layer %u", m.link_layer);
        return ecclRemoteError;
    }
    if (m.mtu < IBV_MTU_256 || m.mtu > IBV_MTU_4096) {
        WARN("NET/IB : connection metadata with MTU code %u (1..5)", m.mtu);
        return ecclRemoteError;
    }
    if (m.port == 0) {
        WARN("NET/IB : connection metadata names port 0");
        return ecclRemoteError;
    }
    /* Unicast LIDs are 0x0001..0xbfff; RoCE has none and addresses by GID. */
    if (m.link_layer == IBV_LINK_LAYER_INFINIBAND && (m.lid == 0 || m.lid >= 0xc000)) {
        WARN("NET/IB : connection metadata with LID 0x%x, not a unicast LID", m.lid);
        return ecclRemoteError;
    }
    if (m.role == PROXY_IB_ROLE_SEND) {
        if (m.fifo_addr == 0 || m.fifo_slots != ECCL_NET_MAX_REQUESTS ||
            m.fifo_addr + (uint64_t)m.fifo_slots * PROXY_IB_CTS_BYTES < m.fifo_addr) {
            WARN("NET/IB : sender metadata with a bad CTS FIFO (addr 0x%lx, %u slots, %d "
                 "expected)",
                 (unsigned long)m.fifo_addr, m.fifo_slots, ECCL_NET_MAX_REQUESTS);
            return ecclRemoteError;
        }
    } else if (m.fifo_addr != 0 || m.fifo_rkey != 0 || m.fifo_slots != 0) {
        WARN("NET/IB : receiver metadata carries a CTS FIFO");
        return ecclRemoteError;
    }
    for (size_t i = 0; i < m.nqps; i++) {
        m.qpn[i] = get32(p + PROXY_IB_META_FIXED + 8 * i);
        m.psn[i] = get32(p + PROXY_IB_META_FIXED + 8 * i + 4);
        /* QP numbers are 24 bits, and 0 and 1 are the special QPs; PSNs are 24 bits. */
        if (m.qpn[i] < 2 || m.qpn[i] > 0xffffff || m.psn[i] > 0xffffff) {
            WARN("NET/IB : connection metadata with queue pair %u: QPN 0x%x PSN 0x%x out of "
                 "range",
                 (unsigned)i, m.qpn[i], m.psn[i]);
            return ecclRemoteError;
        }
    }
    *out = m;
    return ecclSuccess;
}

/* ---- ready ------------------------------------------------------------------------------ */

void proxy_ib_ready_encode(uint64_t nonce, void *buf)
{
    uint8_t *p = buf;
    memset(p, 0, PROXY_IB_READY_BYTES);
    put32(p, PROXY_IB_READY_MAGIC);
    put16(p + 4, PROXY_IB_VERSION);
    put64(p + 8, nonce);
}

ecclResult_t proxy_ib_ready_decode(const void *buf, size_t len, uint64_t nonce)
{
    const uint8_t *p = buf;
    if (len != PROXY_IB_READY_BYTES) {
        WARN("NET/IB : ready message of %zu bytes, %d expected", len, PROXY_IB_READY_BYTES);
        return ecclRemoteError;
    }
    if (get32(p) != PROXY_IB_READY_MAGIC || get16(p + 4) != PROXY_IB_VERSION ||
        get64(p + 8) != nonce) {
        WARN("NET/IB : bad ready message (magic 0x%08x, version %u)", get32(p), get16(p + 4));
        return ecclRemoteError;
    }
    return ecclSuccess;
}

/* ---- CTS FIFO entries ------------------------------------------------------------------- */

static uint32_t cts_check(uint64_t seq)
{
    return PROXY_IB_CTS_MAGIC ^ (uint32_t)seq ^ (uint32_t)(seq >> 32);
}

void proxy_ib_cts_encode(const struct proxy_ib_cts *c, void *buf)
{
    uint8_t *p = buf;
    put64(p, c->seq);
    put64(p + 8, c->addr);
    put32(p + 16, c->rkey);
    put32(p + 20, c->size);
    put32(p + 24, (uint32_t)c->tag);
    put32(p + 28, cts_check(c->seq));
}

ecclResult_t proxy_ib_cts_decode(const void *buf, uint64_t seq, struct proxy_ib_cts *out)
{
    const uint8_t *p = buf;
    struct proxy_ib_cts c;
    c.seq = get64(p);
    c.addr = get64(p + 8);
    c.rkey = get32(p + 16);
    c.size = get32(p + 20);
    c.tag = (int32_t)get32(p + 24);
    uint32_t check = get32(p + 28);
    if (c.seq != seq || check != cts_check(seq)) {
        WARN("NET/IB : CTS entry for request %lu holds request %lu (check 0x%08x): the "
             "receiver broke the protocol",
             (unsigned long)seq, (unsigned long)c.seq, check);
        return ecclRemoteError;
    }
    if (c.addr + c.size < c.addr) {
        WARN("NET/IB : CTS entry for request %lu: buffer 0x%lx + %u wraps around",
             (unsigned long)seq, (unsigned long)c.addr, c.size);
        return ecclRemoteError;
    }
    *out = c;
    return ecclSuccess;
}

/*
 * fuzz_ib_wire.c - libFuzzer target for the InfiniBand backend's wire records (proxy/ib_wire.c):
 * the listen handle, the connection metadata (peek, then decode), the ready message and the CTS
 * FIFO entry. The first input byte picks the record, the rest is the record's bytes. Contract:
 * a bad record is refused with an error, never an overrun; a record that decodes re-encodes to
 * the same bytes (metadata, CTS entry; the ready message but for its two unused bytes) or to a
 * record that decodes to the same values (handle, whose unused bytes are not canonical).
 */
#include <arpa/inet.h>
#include <endian.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <string.h>

#include "eccl.h"
#include "proxy/ib_wire.h"
#include "proxy/net.h"
#include "tests/fuzz/fuzz_util.h"

static uint64_t get_u64(const uint8_t *p, size_t len)
{
    uint64_t v = 0;
    memcpy(&v, p, len < 8 ? len : 8);
    return v;
}

static void handle_case(const uint8_t *p, size_t len)
{
    struct proxy_ib_handle h, h2;
    memset(&h, 0, sizeof(h));
    if (proxy_ib_handle_decode(p, len, &h) != ecclSuccess)
        return;
    uint8_t buf[ECCL_NET_HANDLE_BYTES];
    FUZZ_CHECK(proxy_ib_handle_encode(&h, buf, sizeof(buf)) == ecclSuccess);
    memset(&h2, 0, sizeof(h2));
    FUZZ_CHECK(proxy_ib_handle_decode(buf, sizeof(buf), &h2) == ecclSuccess);
    FUZZ_CHECK(h2.nonce == h.nonce && h2.addr.sa.sa_family == h.addr.sa.sa_family);
    FUZZ_CHECK(memcmp(&h2.addr, &h.addr, sizeof(h.addr)) == 0);
}

static void meta_case(const uint8_t *p, size_t len)
{
    size_t total = 0;
    if (proxy_ib_meta_peek(p, len, &total) == ecclSuccess)
        FUZZ_CHECK(total >= PROXY_IB_META_FIXED + PROXY_IB_META_QP_BYTES &&
                   total <= PROXY_IB_META_MAX_BYTES);
    struct proxy_ib_meta m;
    if (proxy_ib_meta_decode(p, len, &m) != ecclSuccess)
        return;
    FUZZ_CHECK(m.nqps >= 1 && m.nqps <= PROXY_IB_MAX_QPS);
    uint8_t buf[PROXY_IB_META_MAX_BYTES];
    size_t elen = 0;
    FUZZ_CHECK(proxy_ib_meta_encode(&m, buf, sizeof(buf), &elen) == ecclSuccess);
    FUZZ_CHECK(elen == len && memcmp(buf, p, len) == 0);
}

static void ready_case(const uint8_t *p, size_t len)
{
    uint64_t nonce = len >= 16 ? get_u64(p + 8, 8) : 0;
    uint8_t buf[PROXY_IB_READY_BYTES];
    if (proxy_ib_ready_decode(p, len, le64toh(nonce)) == ecclSuccess) {
        FUZZ_CHECK(len == PROXY_IB_READY_BYTES);
        proxy_ib_ready_encode(le64toh(nonce), buf);
        FUZZ_CHECK(memcmp(buf, p, 6) == 0 && memcmp(buf + 8, p + 8, 8) == 0); /* 6..7 unused */
    }
    /* A ready message for another nonce is refused. */
    FUZZ_CHECK(proxy_ib_ready_decode(p, len, le64toh(nonce) ^ 1) != ecclSuccess);
}

static void cts_case(const uint8_t *p, size_t len)
{
    if (len < 8 + PROXY_IB_CTS_BYTES)
        return;
    uint64_t seq = get_u64(p, 8); /* the request the reader expects */
    struct proxy_ib_cts c;
    if (proxy_ib_cts_decode(p + 8, seq, &c) != ecclSuccess)
        return;
    FUZZ_CHECK(c.seq == seq && c.addr + c.size >= c.addr);
    uint8_t buf[PROXY_IB_CTS_BYTES];
    proxy_ib_cts_encode(&c, buf);
    FUZZ_CHECK(memcmp(buf, p + 8, PROXY_IB_CTS_BYTES) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0:
        handle_case(p, len);
        break;
    case 1:
        meta_case(p, len);
        break;
    case 2:
        ready_case(p, len);
        break;
    default:
        cts_case(p, len);
        break;
    }
    return 0;
}

static void seed_with_kind(const char *name, uint8_t kind, const void *rec, size_t len)
{
    uint8_t buf[1 + 512];
    buf[0] = kind;
    memcpy(buf + 1, rec, len);
    fuzz_seed(name, buf, 1 + len);
}

static void fuzz_seeds(void)
{
    uint8_t rec[512];
    struct proxy_ib_handle h;
    memset(&h, 0, sizeof(h));
    h.addr.sin.sin_family = AF_INET;
    h.addr.sin.sin_port = htons(40001);
    h.addr.sin.sin_addr.s_addr = htonl(0x7f000001);
    h.nonce = 0x0123456789abcdefULL;
    proxy_ib_handle_encode(&h, rec, PROXY_IB_HANDLE_BYTES);
    seed_with_kind("handle-v4", 0, rec, PROXY_IB_HANDLE_BYTES);
    memset(&h.addr, 0, sizeof(h.addr));
    h.addr.sin6.sin6_family = AF_INET6;
    h.addr.sin6.sin6_port = htons(5555);
    h.addr.sin6.sin6_addr.s6_addr[15] = 1;
    proxy_ib_handle_encode(&h, rec, PROXY_IB_HANDLE_BYTES);
    seed_with_kind("handle-v6", 0, rec, PROXY_IB_HANDLE_BYTES);

    struct proxy_ib_meta m;
    memset(&m, 0, sizeof(m));
    m.nonce = 42;
    m.role = PROXY_IB_ROLE_SEND;
    m.link_layer = IBV_LINK_LAYER_INFINIBAND;
    m.mtu = IBV_MTU_4096;
    m.port = 1;
    m.lid = 7;
    m.fifo_addr = 0x7f0000001000ULL;
    m.fifo_rkey = 99;
    m.fifo_slots = ECCL_NET_MAX_REQUESTS;
    m.nqps = 2;
    m.qpn[0] = 0x100;
    m.qpn[1] = 0x101;
    m.psn[0] = 0x12345;
    m.psn[1] = 0x54321;
    size_t len = 0;
    proxy_ib_meta_encode(&m, rec, sizeof(rec), &len);
    seed_with_kind("meta-send-ib", 1, rec, len);
    m.role = PROXY_IB_ROLE_RECV;
    m.link_layer = IBV_LINK_LAYER_ETHERNET;
    m.lid = 0;
    m.gid[0] = 0xfe;
    m.gid[1] = 0x80;
    m.fifo_addr = 0;
    m.fifo_rkey = 0;
    m.fifo_slots = 0;
    m.nqps = PROXY_IB_MAX_QPS;
    for (int i = 0; i < PROXY_IB_MAX_QPS; i++) {
        m.qpn[i] = 0x200 + (uint32_t)i;
        m.psn[i] = (uint32_t)i;
    }
    proxy_ib_meta_encode(&m, rec, sizeof(rec), &len);
    seed_with_kind("meta-recv-roce", 1, rec, len);

    proxy_ib_ready_encode(0xfeedfacecafebeefULL, rec);
    seed_with_kind("ready", 2, rec, PROXY_IB_READY_BYTES);

    struct proxy_ib_cts c = {.seq = 17, .addr = 0x10000, .rkey = 5, .size = 4096, .tag = 3};
    uint64_t seq = c.seq;
    memcpy(rec, &seq, 8);
    proxy_ib_cts_encode(&c, rec + 8);
    seed_with_kind("cts", 3, rec, 8 + PROXY_IB_CTS_BYTES);
}

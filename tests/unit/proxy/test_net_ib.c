/*
 * test_net_ib.c - unit tests of the InfiniBand/RoCE backend (proxy/net_ib.c and its helpers).
 *
 * No RDMA device exists where these tests run. They cover:
 *   - the pure parts: the ECCL_IB_HCA matcher, the handle / connection metadata / ready / CTS
 *     records (round trips, and every truncation and lie rejected without an overrun), the RC
 *     queue-pair transitions checked against the verbs spec's table (written out here from
 *     ibv_modify_qp(3), independently of proxy/ib_qp.c), port facts, and the request and
 *     completion bookkeeping driven by a fake completion queue;
 *   - init with the real libibverbs.so.1 and no device, a missing library, ECCL_IB_DISABLE and
 *     bad variables: ecclInternalError (or ecclInvalidUsage), an INFO line not a WARN, no
 *     memory, fd or mapping of libibverbs left behind;
 *   - the whole backend (init, devices, listen/connect/accept over loopback TCP, reg_mr,
 *     isend/irecv/test, close, fini) over a fake verbs provider written below: an in-process
 *     emulation of RC queue pairs that checks QP transitions, PSNs, QPNs, LIDs, MTUs, lkeys,
 *     rkeys and queue depths the way a real HCA would refuse them, and moves the bytes.
 * What only a real HCA can show (timing, the fabric, GPUDirect) is not tested here.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "proxy/ib_hca.h"
#include "proxy/ib_qp.h"
#include "proxy/ib_req.h"
#include "proxy/ib_verbs.h"
#include "proxy/ib_wire.h"
#include "proxy/net.h"
#include "proxy/net_ib.h"

#define MAXR ECCL_NET_MAX_REQUESTS

static char log_path[256];

/* ==== ECCL_IB_HCA ========================================================================= */

static bool hca(const char *spec, const char *dev, int port)
{
    struct proxy_ib_hca_spec s;
    assert_int_equal(proxy_ib_hca_parse(spec, &s), ecclSuccess);
    return proxy_ib_hca_match(&s, dev, port);
}

static void test_hca_match(void **state)
{
    (void)state;
    assert_true(hca(NULL, "mlx5_0", 1));
    assert_true(hca("", "mlx5_0", 1));
    assert_true(hca("mlx5", "mlx5_0", 1));
    assert_true(hca("mlx5", "mlx5_1", 2));
    assert_false(hca("mlx4", "mlx5_0", 1));
    /* Prefixes: mlx5_1 also selects mlx5_10, which is why '=' exists. */
    assert_true(hca("mlx5_1", "mlx5_10", 1));
    assert_false(hca("=mlx5_1", "mlx5_10", 1));
    assert_true(hca("=mlx5_1", "mlx5_1", 1));
    /* Ports. */
    assert_true(hca("mlx5_0:1", "mlx5_0", 1));
    assert_false(hca("mlx5_0:1", "mlx5_0", 2));
    assert_true(hca("mlx5_0:1,mlx5_1", "mlx5_1", 2));
    assert_false(hca("mlx5_0:1,mlx5_1", "mlx5_2", 1));
    /* Exclusion. */
    assert_false(hca("^mlx5_1", "mlx5_1", 1));
    assert_false(hca("^mlx5_1", "mlx5_12", 1));
    assert_true(hca("^mlx5_1", "mlx5_0", 1));
    assert_true(hca("^=mlx5_1", "mlx5_12", 1));
    assert_false(hca("^=mlx5_1", "mlx5_1", 1));
    assert_false(hca("^mlx5_0:1", "mlx5_0", 1));
    assert_true(hca("^mlx5_0:1", "mlx5_0", 2));
    /* Empty entries are ignored. */
    assert_true(hca(",,mlx5_3,", "mlx5_3", 1));
}

static void test_hca_parse_errors(void **state)
{
    (void)state;
    struct proxy_ib_hca_spec s;
    const char *bad[] = {"mlx5_0:",
                         "mlx5_0:x",
                         "mlx5_0:0",
                         "mlx5_0:256",
                         ":1",
                         "mlx5_0:1x",
                         "mlx5_0:99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eccl_log_clear_last_error();
        assert_int_equal(proxy_ib_hca_parse(bad[i], &s), ecclInvalidUsage);
        assert_non_null(strstr(eccl_log_last_error(), "ECCL_IB_HCA"));
    }
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(proxy_ib_hca_parse(longname, &s), ecclInvalidUsage);
    char many[400] = "";
    for (int i = 0; i < PROXY_IB_HCA_MAX + 1; i++)
        strcat(many, "d,");
    assert_int_equal(proxy_ib_hca_parse(many, &s), ecclInvalidUsage);
    assert_int_equal(proxy_ib_hca_parse("mlx5_0:1,mlx5_1:2", &s), ecclSuccess);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ent[1].name, "mlx5_1");
    assert_int_equal(s.ent[1].port, 2);
    assert_int_equal(s.ent[0].port, 1);
}

/* ==== wire records ======================================================================== */

static void test_handle_roundtrip(void **state)
{
    (void)state;
    struct proxy_ib_handle h, back;
    memset(&h, 0, sizeof(h));
    assert_int_equal(eccl_sockaddr_parse("10.1.2.3:4567", &h.addr), ecclSuccess);
    h.nonce = 0x0123456789abcdefULL;
    uint8_t buf[ECCL_NET_HANDLE_BYTES];
    assert_int_equal(proxy_ib_handle_encode(&h, buf, sizeof(buf)), ecclSuccess);
    assert_int_equal(proxy_ib_handle_decode(buf, sizeof(buf), &back), ecclSuccess);
    assert_int_equal(back.addr.sa.sa_family, AF_INET);
    assert_int_equal(ntohs(back.addr.sin.sin_port), 4567);
    assert_memory_equal(&back.addr.sin.sin_addr, &h.addr.sin.sin_addr, 4);
    assert_true(back.nonce == h.nonce);
    for (size_t i = PROXY_IB_HANDLE_BYTES; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0);

    assert_int_equal(eccl_sockaddr_parse("[fe80::1:2]:99", &h.addr), ecclSuccess);
    assert_int_equal(proxy_ib_handle_encode(&h, buf, sizeof(buf)), ecclSuccess);
    assert_int_equal(proxy_ib_handle_decode(buf, sizeof(buf), &back), ecclSuccess);
    assert_int_equal(back.addr.sa.sa_family, AF_INET6);
    assert_int_equal(ntohs(back.addr.sin6.sin6_port), 99);
    assert_memory_equal(&back.addr.sin6.sin6_addr, &h.addr.sin6.sin6_addr, 16);

    /* Rejected: short buffer, wrong magic, wrong version, bad family, port 0. */
    memset(&back, 0x5a, sizeof(back));
    struct proxy_ib_handle untouched = back;
    assert_int_equal(proxy_ib_handle_decode(buf, PROXY_IB_HANDLE_BYTES - 1, &back),
                     ecclRemoteError);
    uint8_t bad[ECCL_NET_HANDLE_BYTES];
    memcpy(bad, buf, sizeof(bad));
    bad[0] ^= 1;
    assert_int_equal(proxy_ib_handle_decode(bad, sizeof(bad), &back), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "magic"));
    memcpy(bad, buf, sizeof(bad));
    bad[4] = 9;
    assert_int_equal(proxy_ib_handle_decode(bad, sizeof(bad), &back), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "version"));
    memcpy(bad, buf, sizeof(bad));
    bad[6] = 5;
    assert_int_equal(proxy_ib_handle_decode(bad, sizeof(bad), &back), ecclRemoteError);
    memcpy(bad, buf, sizeof(bad));
    bad[8] = bad[9] = 0;
    assert_int_equal(proxy_ib_handle_decode(bad, sizeof(bad), &back), ecclRemoteError);
    memset(bad, 0, sizeof(bad));
    assert_int_equal(proxy_ib_handle_decode(bad, sizeof(bad), &back), ecclRemoteError);
    assert_memory_equal(&back, &untouched, sizeof(back)); /* output untouched on failure */
}

static struct proxy_ib_meta sample_meta(int role, uint32_t nqps)
{
    struct proxy_ib_meta m;
    memset(&m, 0, sizeof(m));
    m.nonce = 0xfeedfacecafebeefULL;
    m.role = (uint8_t)role;
    m.link_layer = IBV_LINK_LAYER_INFINIBAND;
    m.mtu = IBV_MTU_4096;
    m.port = 1;
    m.lid = 0x1234;
    for (int i = 0; i < 16; i++)
        m.gid[i] = (uint8_t)(0xa0 + i);
    if (role == PROXY_IB_ROLE_SEND) {
        m.fifo_addr = 0x7f0000001000ULL;
        m.fifo_rkey = 0xabcdef;
        m.fifo_slots = MAXR;
    }
    m.nqps = nqps;
    for (uint32_t i = 0; i < nqps; i++) {
        m.qpn[i] = 0x100 + i;
        m.psn[i] = 0xfff000 + i;
    }
    return m;
}

static void test_meta_roundtrip(void **state)
{
    (void)state;
    uint32_t counts[] = {1, 3, PROXY_IB_MAX_QPS};
    for (int role = PROXY_IB_ROLE_SEND; role <= PROXY_IB_ROLE_RECV; role++) {
        for (size_t k = 0; k < 3; k++) {
            struct proxy_ib_meta m = sample_meta(role, counts[k]), back;
            uint8_t buf[PROXY_IB_META_MAX_BYTES];
            size_t len = 0, total = 0;
            assert_int_equal(proxy_ib_meta_encode(&m, buf, sizeof(buf), &len), ecclSuccess);
            assert_int_equal(len, PROXY_IB_META_FIXED + 8 * counts[k]);
            assert_int_equal(proxy_ib_meta_peek(buf, PROXY_IB_META_HDR_BYTES, &total), ecclSuccess);
            assert_int_equal(total, len);
            assert_int_equal(proxy_ib_meta_decode(buf, len, &back), ecclSuccess);
            assert_memory_equal(&back, &m, sizeof(m));
        }
    }
    /* The encoder refuses what the format cannot carry, and a small buffer. */
    struct proxy_ib_meta m = sample_meta(PROXY_IB_ROLE_SEND, 2);
    uint8_t buf[PROXY_IB_META_MAX_BYTES];
    size_t len;
    m.nqps = 0;
    assert_int_equal(proxy_ib_meta_encode(&m, buf, sizeof(buf), &len), ecclInternalError);
    m.nqps = PROXY_IB_MAX_QPS + 1;
    assert_int_equal(proxy_ib_meta_encode(&m, buf, sizeof(buf), &len), ecclInternalError);
    m.nqps = 2;
    assert_int_equal(proxy_ib_meta_encode(&m, buf, PROXY_IB_META_FIXED + 15, &len),
                     ecclInternalError);
}

/* Decodes a record copied into a heap block of exactly len bytes, so that ASan sees any read
 * past the end. */
static ecclResult_t decode_exact(const uint8_t *rec, size_t len, struct proxy_ib_meta *out)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, rec, len);
    ecclResult_t r = proxy_ib_meta_decode(copy, len, out);
    free(copy);
    return r;
}

static void put16le(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void test_meta_rejects(void **state)
{
    (void)state;
    struct proxy_ib_meta m = sample_meta(PROXY_IB_ROLE_SEND, 3), out;
    uint8_t good[PROXY_IB_META_MAX_BYTES], bad[PROXY_IB_META_MAX_BYTES + 8];
    size_t len = 0, total;
    assert_int_equal(proxy_ib_meta_encode(&m, good, sizeof(good), &len), ecclSuccess);

    /* Every truncation is rejected: the header claims more than arrived. */
    for (size_t k = 0; k < len; k++)
        assert_int_equal(decode_exact(good, k, &out), ecclRemoteError);
    for (size_t k = 0; k < PROXY_IB_META_HDR_BYTES; k++)
        assert_int_equal(proxy_ib_meta_peek(good, k, &total), ecclRemoteError);
    /* Extra bytes beyond the claimed length are rejected too. */
    memcpy(bad, good, len);
    bad[len] = 0;
    assert_int_equal(decode_exact(bad, len + 1, &out), ecclRemoteError);

#define MUTATE(stmt, text)                                               \
    do {                                                                 \
        memcpy(bad, good, len);                                          \
        stmt;                                                            \
        eccl_log_clear_last_error();                                     \
        assert_int_equal(decode_exact(bad, len, &out), ecclRemoteError); \
        assert_non_null(strstr(eccl_log_last_error(), text));            \
    } while (0)

    MUTATE(bad[0] ^= 0xff, "magic");
    MUTATE(bad[4] = 2, "version");
    /* A lying length: larger than the maximum, smaller than a record, or not what came. */
    MUTATE(put16le(bad + 6, 60000), "claims");
    MUTATE(put16le(bad + 6, 10), "claims");
    MUTATE(put16le(bad + 6, (uint16_t)(len + 8)), "claims");
    MUTATE(put16le(bad + 6, (uint16_t)(len - 8)), "claims");
    /* The QP count disagrees with the length, or is out of range. */
    MUTATE(bad[19] = 2, "announces");
    MUTATE(bad[19] = 0, "announces");
    MUTATE(bad[19] = PROXY_IB_MAX_QPS + 1, "announces");
    MUTATE(bad[23] = 1, "reserved");
    MUTATE(bad[16] = 7, "role");
    MUTATE(bad[17] = 9, "link layer");
    MUTATE(bad[18] = 0, "MTU");
    MUTATE(bad[18] = 6, "MTU");
    MUTATE(bad[22] = 0, "port 0");
    MUTATE(put16le(bad + 20, 0), "LID");
    MUTATE(put16le(bad + 20, 0xc001), "LID");
    MUTATE(memset(bad + 40, 0, 8), "CTS FIFO");
    MUTATE(bad[52] = MAXR + 1, "CTS FIFO");
    MUTATE(memset(bad + 40, 0xff, 8), "CTS FIFO"); /* wraps the address space */
    /* QP numbers 0 and 1 are special; QPNs and PSNs are 24 bits. */
    MUTATE(memset(bad + PROXY_IB_META_FIXED, 0, 4), "QPN");
    MUTATE(bad[PROXY_IB_META_FIXED] = 1; memset(bad + PROXY_IB_META_FIXED + 1, 0, 3), "QPN");
    MUTATE(bad[PROXY_IB_META_FIXED + 8 + 3] = 1, "QPN");
    MUTATE(bad[PROXY_IB_META_FIXED + 16 + 7] = 1, "PSN");

    /* A receiver's record must not carry a FIFO. */
    struct proxy_ib_meta r = sample_meta(PROXY_IB_ROLE_RECV, 1);
    r.fifo_rkey = 5;
    assert_int_equal(proxy_ib_meta_encode(&r, bad, sizeof(bad), &len), ecclSuccess);
    assert_int_equal(decode_exact(bad, len, &out), ecclRemoteError);
    /* RoCE has no LID: 0 is fine there. */
    r = sample_meta(PROXY_IB_ROLE_RECV, 1);
    r.link_layer = IBV_LINK_LAYER_ETHERNET;
    r.lid = 0;
    assert_int_equal(proxy_ib_meta_encode(&r, bad, sizeof(bad), &len), ecclSuccess);
    assert_int_equal(decode_exact(bad, len, &out), ecclSuccess);

    /* Random corruption: each decode either rejects or gives a record that encodes back to
     * the same bytes; never a crash or an overrun (ASan builds check the latter). */
    assert_int_equal(proxy_ib_meta_encode(&m, good, sizeof(good), &len), ecclSuccess);
    unsigned seed = 12345;
    for (int it = 0; it < 20000; it++) {
        memcpy(bad, good, len);
        int flips = 1 + rand_r(&seed) % 3;
        for (int f = 0; f < flips; f++)
            bad[rand_r(&seed) % len] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
        size_t l = (rand_r(&seed) % 8 == 0) ? (size_t)(rand_r(&seed) % (len + 1)) : len;
        if (decode_exact(bad, l, &out) == ecclSuccess) {
            uint8_t again[PROXY_IB_META_MAX_BYTES];
            size_t l2 = 0;
            assert_int_equal(proxy_ib_meta_encode(&out, again, sizeof(again), &l2), ecclSuccess);
            assert_int_equal(l2, l);
            assert_memory_equal(again, bad, l);
        }
    }
}

static void test_ready_and_cts(void **state)
{
    (void)state;
    uint8_t buf[PROXY_IB_READY_BYTES];
    proxy_ib_ready_encode(77, buf);
    assert_int_equal(proxy_ib_ready_decode(buf, sizeof(buf), 77), ecclSuccess);
    assert_int_equal(proxy_ib_ready_decode(buf, sizeof(buf), 78), ecclRemoteError);
    assert_int_equal(proxy_ib_ready_decode(buf, sizeof(buf) - 1, 77), ecclRemoteError);
    buf[1] ^= 1;
    assert_int_equal(proxy_ib_ready_decode(buf, sizeof(buf), 77), ecclRemoteError);

    uint8_t e[PROXY_IB_CTS_BYTES];
    struct proxy_ib_cts c = {.seq = 0x100000005ULL,
                             .addr = 0x7ffe12345000ULL,
                             .rkey = 0x77,
                             .size = 1u << 20,
                             .tag = -3},
                        back;
    proxy_ib_cts_encode(&c, e);
    assert_int_equal(proxy_ib_cts_decode(e, c.seq, &back), ecclSuccess);
    assert_true(back.seq == c.seq && back.addr == c.addr && back.rkey == c.rkey &&
                back.size == c.size && back.tag == c.tag);
    /* A stale entry (the previous request of the slot) or a corrupted one is refused. */
    assert_int_equal(proxy_ib_cts_decode(e, c.seq + MAXR, &back), ecclRemoteError);
    e[28] ^= 1;
    assert_int_equal(proxy_ib_cts_decode(e, c.seq, &back), ecclRemoteError);
    memset(e, 0, sizeof(e));
    assert_int_equal(proxy_ib_cts_decode(e, 0, &back), ecclRemoteError);
    c.addr = UINT64_MAX - 10;
    c.size = 100;
    proxy_ib_cts_encode(&c, e);
    assert_int_equal(proxy_ib_cts_decode(e, c.seq, &back), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "wraps"));
}

/* ==== queue-pair transitions ============================================================== */

/* The RC rows of ibv_modify_qp(3) ("required" and "optional" attributes per transition),
 * written out here independently of proxy/ib_qp.c. */
static const struct {
    enum ibv_qp_state from, to;
    int required, optional;
} rc_spec[] = {
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
};

static struct proxy_ib_qp_params sample_params(uint8_t ll)
{
    struct proxy_ib_qp_params p = {
        .port = 2,
        .link_layer = ll,
        .mtu = IBV_MTU_4096,
        .pkey_index = 0,
        .gid_index = 3,
        .sl = 5,
        .tc = 106,
        .timeout = 20,
        .retry_cnt = 7,
    };
    return p;
}

static void spec_check(enum ibv_qp_state from, enum ibv_qp_state to, int mask)
{
    for (size_t i = 0; i < sizeof(rc_spec) / sizeof(rc_spec[0]); i++) {
        if (rc_spec[i].from != from || rc_spec[i].to != to)
            continue;
        assert_int_equal(mask & rc_spec[i].required, rc_spec[i].required);
        assert_int_equal(mask & ~(rc_spec[i].required | rc_spec[i].optional), 0);
        return;
    }
    fail_msg("transition %d->%d not in the spec table", from, to);
}

static void test_qp_transitions(void **state)
{
    (void)state;
    /* The module's table agrees with the spec's rows. */
    for (size_t i = 0; i < sizeof(rc_spec) / sizeof(rc_spec[0]); i++) {
        const struct proxy_ib_qp_step *s = proxy_ib_qp_step_find(rc_spec[i].from, rc_spec[i].to);
        assert_non_null(s);
        assert_int_equal(s->required, rc_spec[i].required);
        assert_int_equal(s->optional, rc_spec[i].optional);
    }
    assert_null(proxy_ib_qp_step_find(IBV_QPS_RESET, IBV_QPS_RTR));
    assert_null(proxy_ib_qp_step_find(IBV_QPS_INIT, IBV_QPS_RTS));
    assert_null(proxy_ib_qp_step_find(IBV_QPS_RTS, IBV_QPS_RTR));
    assert_non_null(proxy_ib_qp_step_find(IBV_QPS_RTS, IBV_QPS_ERR));

    struct ibv_qp_attr a;
    int mask;
    /* RESET -> INIT */
    struct proxy_ib_qp_params p = sample_params(IBV_LINK_LAYER_INFINIBAND);
    proxy_ib_qp_init_attr(&p, &a, &mask);
    spec_check(IBV_QPS_RESET, IBV_QPS_INIT, mask);
    assert_int_equal(a.qp_state, IBV_QPS_INIT);
    assert_int_equal(a.port_num, 2);
    assert_int_equal(a.pkey_index, 0);
    assert_true(a.qp_access_flags & IBV_ACCESS_REMOTE_WRITE);
    assert_true(a.qp_access_flags & IBV_ACCESS_LOCAL_WRITE);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RESET, IBV_QPS_INIT, &a, mask), ecclSuccess);

    /* INIT -> RTR on InfiniBand: LID-routed, no GRH. */
    struct proxy_ib_meta r = sample_meta(PROXY_IB_ROLE_RECV, 2);
    r.mtu = IBV_MTU_2048;
    assert_int_equal(proxy_ib_qp_rtr_attr(&p, &r, 1, &a, &mask), ecclSuccess);
    spec_check(IBV_QPS_INIT, IBV_QPS_RTR, mask);
    assert_int_equal(a.qp_state, IBV_QPS_RTR);
    assert_int_equal(a.path_mtu, IBV_MTU_2048); /* the smaller of the two */
    assert_int_equal(a.dest_qp_num, r.qpn[1]);
    assert_int_equal(a.rq_psn, r.psn[1]);
    assert_true(a.max_dest_rd_atomic >= 1);
    assert_true(a.min_rnr_timer >= 1 && a.min_rnr_timer <= 31);
    assert_int_equal(a.ah_attr.is_global, 0);
    assert_int_equal(a.ah_attr.dlid, r.lid);
    assert_int_equal(a.ah_attr.port_num, 2);
    assert_int_equal(a.ah_attr.sl, 5);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_INIT, IBV_QPS_RTR, &a, mask), ecclSuccess);

    /* INIT -> RTR on RoCE: a GRH to the peer's GID from our GID index, with the TC. */
    struct proxy_ib_qp_params pe = sample_params(IBV_LINK_LAYER_ETHERNET);
    struct proxy_ib_meta re = r;
    re.link_layer = IBV_LINK_LAYER_ETHERNET;
    re.lid = 0;
    assert_int_equal(proxy_ib_qp_rtr_attr(&pe, &re, 0, &a, &mask), ecclSuccess);
    assert_int_equal(a.ah_attr.is_global, 1);
    assert_memory_equal(a.ah_attr.grh.dgid.raw, re.gid, 16);
    assert_int_equal(a.ah_attr.grh.sgid_index, 3);
    assert_int_equal(a.ah_attr.grh.traffic_class, 106);
    assert_true(a.ah_attr.grh.hop_limit >= 1);
    assert_int_equal(a.dest_qp_num, re.qpn[0]);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_INIT, IBV_QPS_RTR, &a, mask), ecclSuccess);

    /* A peer on the other link layer, or a QP it does not have, is refused. */
    assert_int_equal(proxy_ib_qp_rtr_attr(&p, &re, 0, &a, &mask), ecclRemoteError);
    assert_int_equal(proxy_ib_qp_rtr_attr(&p, &r, 2, &a, &mask), ecclRemoteError);

    /* RTR -> RTS */
    proxy_ib_qp_rts_attr(&p, 0xabcdef, &a, &mask);
    spec_check(IBV_QPS_RTR, IBV_QPS_RTS, mask);
    assert_int_equal(a.qp_state, IBV_QPS_RTS);
    assert_int_equal(a.sq_psn, 0xabcdef);
    assert_int_equal(a.timeout, 20);
    assert_int_equal(a.retry_cnt, 7);
    assert_int_equal(a.rnr_retry, 7);
    assert_true(a.max_rd_atomic >= 1);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTR, IBV_QPS_RTS, &a, mask), ecclSuccess);

    /* check(): every missing required bit, an extra bit, a wrong step, bad values. */
    for (size_t i = 0; i < sizeof(rc_spec) / sizeof(rc_spec[0]); i++) {
        struct ibv_qp_attr z;
        memset(&z, 0, sizeof(z));
        z.qp_state = rc_spec[i].to;
        z.port_num = 1;
        z.ah_attr.port_num = 1;
        z.ah_attr.dlid = 1;
        z.path_mtu = IBV_MTU_1024;
        z.dest_qp_num = 2;
        assert_int_equal(proxy_ib_qp_check(rc_spec[i].from, rc_spec[i].to, &z, rc_spec[i].required),
                         ecclSuccess);
        for (unsigned bit = 1; bit; bit <<= 1) {
            if (!((unsigned)rc_spec[i].required & bit))
                continue;
            assert_int_equal(proxy_ib_qp_check(rc_spec[i].from, rc_spec[i].to, &z,
                                               (int)((unsigned)rc_spec[i].required & ~bit)),
                             ecclInternalError);
        }
    }
    proxy_ib_qp_rts_attr(&p, 1, &a, &mask);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTR, IBV_QPS_RTS, &a, mask | IBV_QP_DEST_QPN),
                     ecclInternalError);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_INIT, IBV_QPS_RTS, &a, mask), ecclInternalError);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTS, IBV_QPS_RTS, &a, mask), ecclInternalError);
    a.timeout = 32;
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTR, IBV_QPS_RTS, &a, mask), ecclInternalError);
    proxy_ib_qp_rts_attr(&p, 1, &a, &mask);
    a.retry_cnt = 8;
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTR, IBV_QPS_RTS, &a, mask), ecclInternalError);
    proxy_ib_qp_rts_attr(&p, 1u << 24, &a, &mask);
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTR, IBV_QPS_RTS, &a, mask), ecclInternalError);
    proxy_ib_qp_rts_attr(&p, 1, &a, &mask);
    a.qp_state = IBV_QPS_RTR;
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_RTR, IBV_QPS_RTS, &a, mask), ecclInternalError);
    assert_int_equal(proxy_ib_qp_rtr_attr(&p, &r, 0, &a, &mask), ecclSuccess);
    a.ah_attr.dlid = 0; /* IB without a GRH needs a LID */
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_INIT, IBV_QPS_RTR, &a, mask), ecclInternalError);
    assert_int_equal(proxy_ib_qp_rtr_attr(&p, &r, 0, &a, &mask), ecclSuccess);
    a.path_mtu = 0;
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_INIT, IBV_QPS_RTR, &a, mask), ecclInternalError);
    assert_int_equal(proxy_ib_qp_rtr_attr(&p, &r, 0, &a, &mask), ecclSuccess);
    a.ah_attr.sl = 16;
    assert_int_equal(proxy_ib_qp_check(IBV_QPS_INIT, IBV_QPS_RTR, &a, mask), ecclInternalError);
}

static void test_port_facts(void **state)
{
    (void)state;
    assert_int_equal(proxy_ib_port_speed_mbps(32, 2), 100000);  /* EDR 4x */
    assert_int_equal(proxy_ib_port_speed_mbps(64, 2), 200000);  /* HDR 4x */
    assert_int_equal(proxy_ib_port_speed_mbps(128, 2), 400000); /* NDR 4x */
    assert_int_equal(proxy_ib_port_speed_mbps(1, 1), 2500);     /* SDR 1x */
    assert_int_equal(proxy_ib_port_speed_mbps(16, 8), 168000);  /* FDR 12x */
    assert_int_equal(proxy_ib_port_speed_mbps(3, 2), 0);
    assert_int_equal(proxy_ib_port_speed_mbps(32, 3), 0);
    assert_int_equal(proxy_ib_mtu_bytes(IBV_MTU_256), 256);
    assert_int_equal(proxy_ib_mtu_bytes(IBV_MTU_4096), 4096);
    assert_int_equal(proxy_ib_mtu_bytes((enum ibv_mtu)0), 0);
    assert_int_equal(proxy_ib_mtu_min(IBV_MTU_1024, IBV_MTU_4096), IBV_MTU_1024);

    /* GID choice on RoCE: v2 with an IPv4 address, then v2, then anything nonzero. */
    struct proxy_ib_gid_cand c[4];
    memset(c, 0, sizeof(c));
    for (int i = 0; i < 4; i++)
        c[i].index = i;
    c[0].gid[0] = 0xfe; /* link-local, RoCE v1 */
    c[1].gid[0] = 0xfe; /* link-local, RoCE v2 */
    c[1].roce_v2 = true;
    c[2].gid[10] = c[2].gid[11] = 0xff; /* ::ffff:10.0.0.1, RoCE v1 */
    c[2].gid[12] = 10;
    c[2].gid[15] = 1;
    c[3] = c[2];
    c[3].index = 3;
    c[3].roce_v2 = true;
    assert_int_equal(proxy_ib_gid_pick(c, 4), 3);
    assert_int_equal(proxy_ib_gid_pick(c, 3), 1);
    assert_int_equal(proxy_ib_gid_pick(c, 1), 0);
    memset(c, 0, sizeof(c));
    assert_int_equal(proxy_ib_gid_pick(c, 4), -1);

    /* Splitting over QPs covers the message exactly, in order, in 128-byte multiples. */
    size_t sizes[] = {0, 1, 127, 128, 129, 1000, 4096, 100003, 1u << 20};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (uint32_t n = 1; n <= PROXY_IB_MAX_QPS; n++) {
            size_t expect = 0;
            for (uint32_t i = 0; i < n; i++) {
                size_t off, len;
                proxy_ib_split(sizes[s], n, i, &off, &len);
                if (len > 0) {
                    assert_int_equal(off, expect);
                    assert_int_equal(off % 128, 0);
                }
                expect = off + len > expect ? off + len : expect;
                assert_true(off + len <= sizes[s]);
            }
            assert_int_equal(expect, sizes[s]);
        }
    }
}

/* ==== request bookkeeping with a fake completion queue ===================================== */

static struct ibv_wc wc(enum proxy_ib_wr_kind kind, uint64_t seq, uint32_t qpn, uint32_t imm)
{
    struct ibv_wc w;
    memset(&w, 0, sizeof(w));
    w.wr_id = proxy_ib_wr_id(kind, seq);
    w.status = IBV_WC_SUCCESS;
    w.qp_num = qpn;
    if (kind == PROXY_IB_WR_DATA_RECV || kind == PROXY_IB_WR_CTS_RECV) {
        w.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
        w.wc_flags = IBV_WC_WITH_IMM;
        w.imm_data = htobe32(imm);
    } else {
        w.opcode = IBV_WC_RDMA_WRITE;
    }
    return w;
}

static ecclResult_t feed(struct proxy_ib_reqs *r, struct ibv_wc w, bool *repost)
{
    bool dummy;
    return proxy_ib_reqs_on_wc(r, &w, repost ? repost : &dummy);
}

static void test_reqs_sender(void **state)
{
    (void)state;
    const uint32_t qpn[2] = {0x40, 0x41};
    struct proxy_ib_reqs r;
    int comm_tag;
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_SEND, 2, qpn, &comm_tag);
    assert_false(proxy_ib_reqs_cts_ready(&r));
    bool repost = false;
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x40, 0), &repost), ecclSuccess);
    assert_true(repost);
    assert_true(proxy_ib_reqs_cts_ready(&r));

    /* ECCL_NET_MAX_REQUESTS live at most. */
    struct proxy_ib_req *q[MAXR];
    for (int i = 0; i < MAXR; i++) {
        q[i] = proxy_ib_reqs_post(&r, 100 + (size_t)i);
        assert_non_null(q[i]);
        assert_ptr_equal(q[i]->comm, &comm_tag);
        assert_int_equal(q[i]->seq, i);
    }
    assert_false(proxy_ib_reqs_can_post(&r));
    assert_null(proxy_ib_reqs_post(&r, 1));

    /* A request is done when every QP's write completed. */
    size_t size = 0;
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, 0, 0x40, 0), NULL), ecclSuccess);
    assert_false(proxy_ib_reqs_test(&r, q[0], &size));
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, 0, 0x41, 0), NULL), ecclSuccess);
    /* Completions for requests 1..7 on both QPs. */
    for (int i = 1; i < MAXR; i++) {
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, (uint64_t)i, 0x41, 0), NULL),
                         ecclSuccess);
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, (uint64_t)i, 0x40, 0), NULL),
                         ecclSuccess);
    }
    /* Tested out of order: slots are reused in order only. */
    for (int i = MAXR - 1; i >= 1; i--) {
        assert_true(proxy_ib_reqs_test(&r, q[i], &size));
        assert_int_equal(size, 100 + i);
        assert_false(proxy_ib_reqs_can_post(&r));
    }
    assert_true(proxy_ib_reqs_test(&r, q[0], &size));
    assert_int_equal(size, 100);
    assert_false(proxy_ib_reqs_test(&r, q[0], &size)); /* released: not again */
    assert_true(proxy_ib_reqs_can_post(&r));

    /* Many more requests through the same slots. */
    for (uint64_t s = MAXR; s < 1000; s++) {
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x40, (uint32_t)s - MAXR + 1), NULL),
                         ecclSuccess);
        struct proxy_ib_req *x = proxy_ib_reqs_post(&r, 7);
        assert_non_null(x);
        assert_int_equal(x->seq, s);
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, s, 0x40, 0), NULL), ecclSuccess);
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, s, 0x41, 0), NULL), ecclSuccess);
        assert_true(proxy_ib_reqs_test(&r, x, &size));
    }

    /* Out of order on one QP: an internal error, and the connection stays failed. */
    struct proxy_ib_req *x = proxy_ib_reqs_post(&r, 1);
    struct proxy_ib_req *y = proxy_ib_reqs_post(&r, 1);
    assert_non_null(x);
    assert_non_null(y);
    eccl_log_clear_last_error();
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, y->seq, 0x40, 0), NULL),
                     ecclInternalError);
    assert_non_null(strstr(eccl_log_last_error(), "out of order"));
    assert_int_equal(r.failed, ecclInternalError);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, x->seq, 0x40, 0), NULL),
                     ecclInternalError);
}

static void test_reqs_receiver(void **state)
{
    (void)state;
    const uint32_t qpn[3] = {0x50, 0x51, 0x52};
    struct proxy_ib_reqs r;
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    struct proxy_ib_req *q = proxy_ib_reqs_post(&r, 1000);
    assert_non_null(q);
    size_t size = 0;
    /* Done after one data receive per QP (each with the size) and the CTS write. */
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_RECV, 0, qpn[i], 600), NULL), ecclSuccess);
        assert_false(proxy_ib_reqs_test(&r, q, &size));
    }
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_WRITE, 0, 0x50, 0), NULL), ecclSuccess);
    assert_true(proxy_ib_reqs_test(&r, q, &size));
    assert_int_equal(size, 600);

    /* The CTS write is on QP 0 only. */
    q = proxy_ib_reqs_post(&r, 1000);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_WRITE, 1, 0x51, 0), NULL), ecclInternalError);

    /* More than the buffer holds. */
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    q = proxy_ib_reqs_post(&r, 1000);
    eccl_log_clear_last_error();
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_RECV, 0, 0x50, 1001), NULL), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "1001 bytes into a receive of 1000"));

    /* Sizes that disagree between QPs. */
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    q = proxy_ib_reqs_post(&r, 1000);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_RECV, 0, 0x50, 10), NULL), ecclSuccess);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_RECV, 0, 0x51, 11), NULL), ecclRemoteError);

    /* A receive completion without immediate data, a sender-side kind, an unknown QP, a
     * completion for no request. */
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    q = proxy_ib_reqs_post(&r, 1000);
    struct ibv_wc w = wc(PROXY_IB_WR_DATA_RECV, 0, 0x50, 10);
    w.wc_flags = 0;
    assert_int_equal(feed(&r, w, NULL), ecclRemoteError);
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    q = proxy_ib_reqs_post(&r, 1000);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_WRITE, 0, 0x50, 0), NULL), ecclInternalError);
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    q = proxy_ib_reqs_post(&r, 1000);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_RECV, 0, 0x99, 0), NULL), ecclInternalError);
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_RECV, 3, qpn, NULL);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_DATA_RECV, 0, 0x50, 0), NULL), ecclInternalError);
    assert_non_null(strstr(eccl_log_last_error(), "not waiting"));
    (void)q;
}

static void test_reqs_errors_and_cts_limit(void **state)
{
    (void)state;
    const uint32_t qpn[1] = {0x60};
    struct proxy_ib_reqs r;
    /* Completion errors map to results and stick. */
    struct {
        enum ibv_wc_status st;
        ecclResult_t res;
    } cases[] = {
        {IBV_WC_RETRY_EXC_ERR, ecclRemoteError},     {IBV_WC_REM_ACCESS_ERR, ecclRemoteError},
        {IBV_WC_RNR_RETRY_EXC_ERR, ecclRemoteError}, {IBV_WC_WR_FLUSH_ERR, ecclRemoteError},
        {IBV_WC_LOC_PROT_ERR, ecclSystemError},      {IBV_WC_LOC_LEN_ERR, ecclSystemError},
        {IBV_WC_GENERAL_ERR, ecclSystemError},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        proxy_ib_reqs_init(&r, PROXY_IB_ROLE_SEND, 1, qpn, NULL);
        struct ibv_wc w = wc(PROXY_IB_WR_DATA_WRITE, 0, 0x60, 0);
        w.status = cases[i].st;
        eccl_log_clear_last_error();
        assert_int_equal(feed(&r, w, NULL), cases[i].res);
        assert_non_null(strstr(eccl_log_last_error(), proxy_ib_wc_status_name(cases[i].st)));
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x60, 0), NULL), cases[i].res);
    }
    assert_non_null(strstr(proxy_ib_wc_status_name(IBV_WC_RETRY_EXC_ERR), "retry"));

    /* The receiver may run at most ECCL_NET_MAX_REQUESTS CTS entries ahead of the sends. */
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_SEND, 1, qpn, NULL);
    for (uint32_t s = 0; s < MAXR; s++)
        assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x60, s), NULL), ecclSuccess);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x60, MAXR), NULL), ecclRemoteError);
    /* CTS entries out of order. */
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_SEND, 1, qpn, NULL);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x60, 1), NULL), ecclRemoteError);
    /* A CTS receive on another QP than 0. */
    const uint32_t two[2] = {0x60, 0x61};
    proxy_ib_reqs_init(&r, PROXY_IB_ROLE_SEND, 2, two, NULL);
    assert_int_equal(feed(&r, wc(PROXY_IB_WR_CTS_RECV, 0, 0x61, 0), NULL), ecclInternalError);
}

/* ==== a fake verbs provider =============================================================== */

#define FK_NDEV     2
#define FK_MAX_PD   8
#define FK_MAX_MR   64
#define FK_MAX_CQ   16
#define FK_MAX_QP   64
#define FK_CQ_DEPTH 1024
#define FK_RQ_DEPTH 256
#define FK_QPN_BASE 0x200

struct fk_wc {
    struct ibv_wc wc;
    int sq_of; /* QP index whose send queue this completion frees, or -1 */
};

struct fk_cq {
    struct ibv_cq cq;
    bool used;
    struct fk_wc q[FK_CQ_DEPTH];
    unsigned head, tail;
};

struct fk_qp {
    struct ibv_qp qp;
    bool used;
    int port;
    enum ibv_qp_state st;
    uint32_t dest_qpn, rq_psn, sq_psn;
    enum ibv_mtu mtu;
    uint16_t dlid;
    uint8_t dgid[16];
    int sgid_index;
    int is_global;
    int access;
    unsigned max_send_wr, max_recv_wr, sq_out;
    uint64_t rq[FK_RQ_DEPTH];
    unsigned rq_head, rq_tail;
    uint32_t late_imm[FK_RQ_DEPTH], late_len[FK_RQ_DEPTH];
    unsigned late_head, late_tail;
};

struct fk_mr {
    struct ibv_mr mr;
    bool used;
    int access;
};

struct fk_pd {
    struct ibv_pd pd;
    bool used;
};

struct fk_dev {
    struct ibv_device dev;
    struct ibv_context ctx;
    int open;
    int nports;
    struct ibv_port_attr port[2];
};

static struct {
    struct fk_dev dev[FK_NDEV];
    struct ibv_device *list[FK_NDEV + 1];
    int lists_out;
    struct fk_pd pd[FK_MAX_PD];
    struct fk_mr mr[FK_MAX_MR];
    struct fk_cq cq[FK_MAX_CQ];
    struct fk_qp qp[FK_MAX_QP];
    int rnr_events;      /* writes with immediate that found no receive posted */
    int refused;         /* verbs calls the fake refused (EINVAL etc.) */
    int fail_next_write; /* a wc status to give the next data write, 0: none */
    int modify_calls;
} fk;

static struct fk_qp *fk_qp_of(struct ibv_qp *qp)
{
    return (struct fk_qp *)qp;
}

static struct fk_qp *fk_find_qpn(uint32_t qpn)
{
    for (int i = 0; i < FK_MAX_QP; i++)
        if (fk.qp[i].used && fk.qp[i].qp.qp_num == qpn)
            return &fk.qp[i];
    return NULL;
}

static struct fk_dev *fk_dev_of(struct ibv_context *ctx)
{
    for (int i = 0; i < FK_NDEV; i++)
        if (&fk.dev[i].ctx == ctx)
            return &fk.dev[i];
    return NULL;
}

static void fk_push(struct ibv_cq *cq, struct ibv_wc w, int sq_of)
{
    struct fk_cq *c = (struct fk_cq *)cq;
    assert_true(c->tail - c->head < FK_CQ_DEPTH); /* a CQ overrun would lose completions */
    c->q[c->tail % FK_CQ_DEPTH].wc = w;
    c->q[c->tail % FK_CQ_DEPTH].sq_of = sq_of;
    c->tail++;
}

static int fk_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *out)
{
    struct fk_cq *c = (struct fk_cq *)cq;
    int k = 0;
    while (k < n && c->head != c->tail) {
        struct fk_wc *w = &c->q[c->head % FK_CQ_DEPTH];
        if (w->sq_of >= 0)
            fk.qp[w->sq_of].sq_out--;
        out[k++] = w->wc;
        c->head++;
    }
    return k;
}

static void fk_error(struct fk_qp *q, uint64_t wr_id, enum ibv_wc_status st, bool send)
{
    struct ibv_wc w;
    memset(&w, 0, sizeof(w));
    w.wr_id = wr_id;
    w.status = st;
    w.qp_num = q->qp.qp_num;
    q->st = IBV_QPS_ERR;
    fk_push(send ? q->qp.send_cq : q->qp.recv_cq, w, send ? (int)(q - fk.qp) : -1);
}

static void fk_deliver(struct fk_qp *peer, uint32_t imm, uint32_t len)
{
    if (peer->rq_head == peer->rq_tail) {
        fk.rnr_events++; /* a real HCA would RNR-NAK and retry */
        peer->late_imm[peer->late_tail % FK_RQ_DEPTH] = imm;
        peer->late_len[peer->late_tail % FK_RQ_DEPTH] = len;
        peer->late_tail++;
        return;
    }
    struct ibv_wc w;
    memset(&w, 0, sizeof(w));
    w.wr_id = peer->rq[peer->rq_head++ % FK_RQ_DEPTH];
    w.status = IBV_WC_SUCCESS;
    w.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
    w.wc_flags = IBV_WC_WITH_IMM;
    w.imm_data = imm;
    w.byte_len = len;
    w.qp_num = peer->qp.qp_num;
    fk_push(peer->qp.recv_cq, w, -1);
}

static bool fk_gid_is(const struct fk_dev *d, int port, int index, const uint8_t *gid);

static struct fk_mr *fk_mr_lkey(uint32_t lkey)
{
    for (int i = 0; i < FK_MAX_MR; i++)
        if (fk.mr[i].used && fk.mr[i].mr.lkey == lkey)
            return &fk.mr[i];
    return NULL;
}

static struct fk_mr *fk_mr_rkey(uint32_t rkey)
{
    for (int i = 0; i < FK_MAX_MR; i++)
        if (fk.mr[i].used && fk.mr[i].mr.rkey == rkey)
            return &fk.mr[i];
    return NULL;
}

static bool fk_in(const struct fk_mr *m, uint64_t addr, uint64_t len)
{
    uint64_t base = (uint64_t)(uintptr_t)m->mr.addr;
    return addr >= base && addr + len <= base + m->mr.length;
}

static int fk_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
    struct fk_qp *q = fk_qp_of(qp);
    for (; wr; wr = wr->next) {
        if (q->st != IBV_QPS_RTS && q->st != IBV_QPS_ERR) {
            *bad = wr;
            fk.refused++;
            return EINVAL;
        }
        if (q->sq_out >= q->max_send_wr || wr->num_sge > 1) {
            *bad = wr;
            fk.refused++;
            return ENOMEM;
        }
        q->sq_out++;
        if (q->st == IBV_QPS_ERR) {
            fk_error(q, wr->wr_id, IBV_WC_WR_FLUSH_ERR, true);
            continue;
        }
        if (wr->opcode != IBV_WR_RDMA_WRITE_WITH_IMM && wr->opcode != IBV_WR_RDMA_WRITE) {
            fk_error(q, wr->wr_id, IBV_WC_LOC_QP_OP_ERR, true);
            continue;
        }
        uint64_t len = 0;
        struct fk_mr *l = NULL;
        if (wr->num_sge == 1) {
            len = wr->sg_list[0].length;
            l = fk_mr_lkey(wr->sg_list[0].lkey);
            if (!l || !fk_in(l, wr->sg_list[0].addr, len)) {
                fk_error(q, wr->wr_id, IBV_WC_LOC_PROT_ERR, true);
                continue;
            }
        }
        /* The connection as a real fabric would see it: the peer QP exists and points back,
         * PSNs, path MTUs and LIDs agree. Otherwise the packets go nowhere: retries exceeded. */
        struct fk_qp *peer = fk_find_qpn(q->dest_qpn);
        const struct fk_dev *pd = peer ? fk_dev_of(peer->qp.context) : NULL;
        if (!peer || peer->dest_qpn != q->qp.qp_num || peer->st < IBV_QPS_RTR ||
            peer->st == IBV_QPS_ERR || peer->rq_psn != q->sq_psn || peer->mtu != q->mtu ||
            (!q->is_global && (!pd || pd->port[peer->port - 1].lid != q->dlid)) ||
            (q->is_global && (!pd || !fk_gid_is(pd, peer->port, peer->sgid_index, q->dgid)))) {
            fk_error(q, wr->wr_id, IBV_WC_RETRY_EXC_ERR, true);
            continue;
        }
        if (len > 0 && fk.fail_next_write) {
            int st = fk.fail_next_write;
            fk.fail_next_write = 0;
            fk_error(q, wr->wr_id, (enum ibv_wc_status)st, true);
            continue;
        }
        if (len > 0) {
            struct fk_mr *r = fk_mr_rkey(wr->wr.rdma.rkey);
            if (!r || !(r->access & IBV_ACCESS_REMOTE_WRITE) ||
                !(peer->access & IBV_ACCESS_REMOTE_WRITE) ||
                !fk_in(r, wr->wr.rdma.remote_addr, len)) {
                fk_error(q, wr->wr_id, IBV_WC_REM_ACCESS_ERR, true);
                continue;
            }
            memcpy((void *)(uintptr_t)wr->wr.rdma.remote_addr,
                   (const void *)(uintptr_t)wr->sg_list[0].addr, len);
        }
        if (wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM)
            fk_deliver(peer, wr->imm_data, (uint32_t)len);
        if (wr->send_flags & IBV_SEND_SIGNALED) {
            struct ibv_wc w;
            memset(&w, 0, sizeof(w));
            w.wr_id = wr->wr_id;
            w.status = IBV_WC_SUCCESS;
            w.opcode = IBV_WC_RDMA_WRITE;
            w.qp_num = q->qp.qp_num;
            fk_push(q->qp.send_cq, w, (int)(q - fk.qp));
        } else {
            q->sq_out--; /* simplification: unsignaled entries free at once */
        }
    }
    return 0;
}

static int fk_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
    struct fk_qp *q = fk_qp_of(qp);
    for (; wr; wr = wr->next) {
        if (q->st == IBV_QPS_RESET || q->rq_tail - q->rq_head >= q->max_recv_wr) {
            *bad = wr;
            fk.refused++;
            return q->st == IBV_QPS_RESET ? EINVAL : ENOMEM;
        }
        if (q->st == IBV_QPS_ERR) {
            fk_error(q, wr->wr_id, IBV_WC_WR_FLUSH_ERR, false);
            continue;
        }
        q->rq[q->rq_tail++ % FK_RQ_DEPTH] = wr->wr_id;
        if (q->late_head != q->late_tail) {
            unsigned k = q->late_head++ % FK_RQ_DEPTH;
            fk_deliver(q, q->late_imm[k], q->late_len[k]);
        }
    }
    return 0;
}

static struct ibv_device **fk_get_device_list(int *num)
{
    for (int i = 0; i < FK_NDEV; i++)
        fk.list[i] = &fk.dev[i].dev;
    fk.list[FK_NDEV] = NULL;
    fk.lists_out++;
    if (num)
        *num = FK_NDEV;
    return fk.list;
}

static void fk_free_device_list(struct ibv_device **list)
{
    assert_ptr_equal(list, fk.list);
    fk.lists_out--;
}

static const char *fk_get_device_name(struct ibv_device *d)
{
    return d->name;
}

static struct ibv_context *fk_open_device(struct ibv_device *d)
{
    for (int i = 0; i < FK_NDEV; i++) {
        if (&fk.dev[i].dev == d) {
            fk.dev[i].open++;
            return &fk.dev[i].ctx;
        }
    }
    errno = ENODEV;
    return NULL;
}

static int fk_close_device(struct ibv_context *c)
{
    struct fk_dev *d = fk_dev_of(c);
    assert_non_null(d);
    assert_true(d->open > 0);
    d->open--;
    return 0;
}

static int fk_query_device(struct ibv_context *c, struct ibv_device_attr *a)
{
    struct fk_dev *d = fk_dev_of(c);
    memset(a, 0, sizeof(*a));
    a->phys_port_cnt = (uint8_t)d->nports;
    a->max_qp = 1024;
    a->max_qp_wr = 1024;
    a->max_cqe = FK_CQ_DEPTH;
    a->node_guid = htobe64(0x0002c90300a0b0c0ULL + (uint64_t)(d - fk.dev));
    return 0;
}

/* Only reached because the fake context is not an extended one (abi_compat != extended), as
 * with old providers: the backend must fall back to the exported ibv_query_port. */
static int fk_query_port(struct ibv_context *c, uint8_t port, struct _compat_ibv_port_attr *a)
{
    struct fk_dev *d = fk_dev_of(c);
    if (!d || port < 1 || port > d->nports)
        return EINVAL;
    memcpy(a, &d->port[port - 1], sizeof(struct ibv_port_attr));
    return 0;
}

static int fk_query_gid(struct ibv_context *c, uint8_t port, int index, union ibv_gid *gid)
{
    struct fk_dev *d = fk_dev_of(c);
    if (!d || index < 0 || index >= d->port[port - 1].gid_tbl_len)
        return EINVAL;
    memset(gid, 0, sizeof(*gid));
    if (d->port[port - 1].link_layer == IBV_LINK_LAYER_ETHERNET && index == 0)
        return 0; /* an empty entry: RoCE GID selection must skip it */
    gid->raw[0] = 0xfe;
    gid->raw[1] = 0x80;
    gid->raw[13] = (uint8_t)index;
    gid->raw[14] = (uint8_t)(d - fk.dev);
    gid->raw[15] = port;
    return 0;
}

/* Whether `gid` is entry `index` of the GID table of port `port` of d. */
static bool fk_gid_is(const struct fk_dev *d, int port, int index, const uint8_t *gid)
{
    union ibv_gid g;
    if (fk_query_gid((struct ibv_context *)&d->ctx, (uint8_t)port, index, &g) != 0)
        return false;
    return memcmp(g.raw, gid, 16) == 0 && g.global.interface_id != 0;
}

static struct ibv_pd *fk_alloc_pd(struct ibv_context *c)
{
    for (int i = 0; i < FK_MAX_PD; i++) {
        if (!fk.pd[i].used) {
            fk.pd[i].used = true;
            fk.pd[i].pd.context = c;
            return &fk.pd[i].pd;
        }
    }
    errno = ENOMEM;
    return NULL;
}

static int fk_dealloc_pd(struct ibv_pd *pd)
{
    for (int i = 0; i < FK_MAX_MR; i++)
        if (fk.mr[i].used && fk.mr[i].mr.pd == pd)
            return EBUSY;
    for (int i = 0; i < FK_MAX_QP; i++)
        if (fk.qp[i].used && fk.qp[i].qp.pd == pd)
            return EBUSY;
    ((struct fk_pd *)pd)->used = false;
    return 0;
}

static struct ibv_mr *fk_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access)
{
    /* Verbs rule: remote write needs local write. */
    if ((access & IBV_ACCESS_REMOTE_WRITE) && !(access & IBV_ACCESS_LOCAL_WRITE)) {
        fk.refused++;
        errno = EINVAL;
        return NULL;
    }
    for (int i = 0; i < FK_MAX_MR; i++) {
        if (!fk.mr[i].used) {
            struct fk_mr *m = &fk.mr[i];
            memset(m, 0, sizeof(*m));
            m->used = true;
            m->access = access;
            m->mr.context = pd->context;
            m->mr.pd = pd;
            m->mr.addr = addr;
            m->mr.length = len;
            m->mr.lkey = 0x1000u + (uint32_t)i;
            m->mr.rkey = 0x8000u + (uint32_t)i * 7;
            return &m->mr;
        }
    }
    errno = ENOMEM;
    return NULL;
}

static int fk_dereg_mr(struct ibv_mr *mr)
{
    struct fk_mr *m = (struct fk_mr *)mr;
    assert_true(m->used);
    m->used = false;
    return 0;
}

static struct ibv_cq *fk_create_cq(struct ibv_context *c, int cqe, void *cq_ctx,
                                   struct ibv_comp_channel *ch, int vec)
{
    (void)cq_ctx;
    (void)ch;
    (void)vec;
    if (cqe < 1 || cqe > FK_CQ_DEPTH) {
        fk.refused++;
        errno = EINVAL;
        return NULL;
    }
    for (int i = 0; i < FK_MAX_CQ; i++) {
        if (!fk.cq[i].used) {
            struct fk_cq *q = &fk.cq[i];
            q->used = true;
            q->head = q->tail = 0;
            memset(&q->cq, 0, sizeof(q->cq));
            q->cq.context = c;
            q->cq.cqe = cqe;
            return &q->cq;
        }
    }
    errno = ENOMEM;
    return NULL;
}

static int fk_destroy_cq(struct ibv_cq *cq)
{
    for (int i = 0; i < FK_MAX_QP; i++)
        if (fk.qp[i].used && (fk.qp[i].qp.send_cq == cq || fk.qp[i].qp.recv_cq == cq))
            return EBUSY;
    ((struct fk_cq *)cq)->used = false;
    return 0;
}

static struct ibv_qp *fk_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *ia)
{
    if (ia->qp_type != IBV_QPT_RC || !ia->send_cq || !ia->recv_cq || ia->srq ||
        ia->cap.max_send_wr > FK_RQ_DEPTH || ia->cap.max_recv_wr > FK_RQ_DEPTH ||
        ia->cap.max_send_sge < 1) {
        fk.refused++;
        errno = EINVAL;
        return NULL;
    }
    for (int i = 0; i < FK_MAX_QP; i++) {
        if (!fk.qp[i].used) {
            struct fk_qp *q = &fk.qp[i];
            memset(q, 0, sizeof(*q));
            q->used = true;
            q->st = IBV_QPS_RESET;
            q->qp.context = pd->context;
            q->qp.pd = pd;
            q->qp.send_cq = ia->send_cq;
            q->qp.recv_cq = ia->recv_cq;
            q->qp.qp_type = IBV_QPT_RC;
            q->qp.qp_num = FK_QPN_BASE + (uint32_t)i * 3;
            q->max_send_wr = ia->cap.max_send_wr;
            q->max_recv_wr = ia->cap.max_recv_wr;
            return &q->qp;
        }
    }
    errno = ENOMEM;
    return NULL;
}

static int fk_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask)
{
    struct fk_qp *q = fk_qp_of(qp);
    fk.modify_calls++;
    int need = 0;
    enum ibv_qp_state to = a->qp_state;
    if (!(mask & IBV_QP_STATE))
        goto refuse;
    if (to == IBV_QPS_ERR || to == IBV_QPS_RESET)
        need = IBV_QP_STATE;
    else if (q->st == IBV_QPS_RESET && to == IBV_QPS_INIT)
        need = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
    else if (q->st == IBV_QPS_INIT && to == IBV_QPS_RTR)
        need = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
               IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
    else if (q->st == IBV_QPS_RTR && to == IBV_QPS_RTS)
        need = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
               IBV_QP_MAX_QP_RD_ATOMIC;
    else
        goto refuse;
    if ((mask & need) != need)
        goto refuse;
    struct fk_dev *d = fk_dev_of(qp->context);
    if (to == IBV_QPS_INIT) {
        if (a->port_num < 1 || a->port_num > d->nports)
            goto refuse;
        q->port = a->port_num;
        q->access = (int)a->qp_access_flags;
    } else if (to == IBV_QPS_RTR) {
        if (a->ah_attr.port_num != q->port || a->path_mtu > d->port[q->port - 1].active_mtu)
            goto refuse;
        q->dest_qpn = a->dest_qp_num;
        q->rq_psn = a->rq_psn;
        q->mtu = a->path_mtu;
        q->dlid = a->ah_attr.dlid;
        q->is_global = a->ah_attr.is_global;
        /* RoCE needs a GRH from a valid (nonzero) source GID. */
        if (d->port[q->port - 1].link_layer == IBV_LINK_LAYER_ETHERNET) {
            union ibv_gid src;
            if (!q->is_global ||
                fk_query_gid(qp->context, (uint8_t)q->port, a->ah_attr.grh.sgid_index, &src) ||
                src.global.interface_id == 0)
                goto refuse;
            memcpy(q->dgid, a->ah_attr.grh.dgid.raw, 16);
            q->sgid_index = a->ah_attr.grh.sgid_index;
        }
    } else if (to == IBV_QPS_RTS) {
        q->sq_psn = a->sq_psn;
    }
    q->st = to;
    return 0;
refuse:
    fk.refused++;
    return EINVAL;
}

static int fk_destroy_qp(struct ibv_qp *qp)
{
    struct fk_qp *q = fk_qp_of(qp);
    assert_true(q->used);
    q->used = false;
    return 0;
}

static const struct proxy_ib_verbs fk_table = {
    .get_device_list = fk_get_device_list,
    .free_device_list = fk_free_device_list,
    .get_device_name = fk_get_device_name,
    .open_device = fk_open_device,
    .close_device = fk_close_device,
    .query_device = fk_query_device,
    .query_port = fk_query_port,
    .query_gid = fk_query_gid,
    .alloc_pd = fk_alloc_pd,
    .dealloc_pd = fk_dealloc_pd,
    .reg_mr = fk_reg_mr,
    .dereg_mr = fk_dereg_mr,
    .create_cq = fk_create_cq,
    .destroy_cq = fk_destroy_cq,
    .create_qp = fk_create_qp,
    .modify_qp = fk_modify_qp,
    .destroy_qp = fk_destroy_qp,
    .reg_dmabuf_mr = NULL,
};

static void fk_port(struct ibv_port_attr *p, enum ibv_port_state st, uint16_t lid)
{
    memset(p, 0, sizeof(*p));
    p->state = st;
    p->max_mtu = IBV_MTU_4096;
    p->active_mtu = IBV_MTU_4096;
    p->gid_tbl_len = 4;
    p->max_msg_sz = 1u << 30;
    p->pkey_tbl_len = 1;
    p->lid = lid;
    p->active_width = 2;  /* 4x */
    p->active_speed = 32; /* EDR */
    p->link_layer = IBV_LINK_LAYER_INFINIBAND;
}

static void fk_reset(void)
{
    memset(&fk, 0, sizeof(fk));
    for (int i = 0; i < FK_NDEV; i++) {
        struct fk_dev *d = &fk.dev[i];
        snprintf(d->dev.name, sizeof(d->dev.name), "fakeib_%d", i);
        d->dev.node_type = IBV_NODE_CA;
        d->dev.transport_type = IBV_TRANSPORT_IB;
        d->ctx.device = &d->dev;
        d->ctx.ops.post_send = fk_post_send;
        d->ctx.ops.post_recv = fk_post_recv;
        d->ctx.ops.poll_cq = fk_poll_cq;
        d->ctx.abi_compat = NULL; /* not an extended context */
    }
    fk.dev[0].nports = 1;
    fk_port(&fk.dev[0].port[0], IBV_PORT_ACTIVE, 3);
    fk.dev[1].nports = 2;
    fk_port(&fk.dev[1].port[0], IBV_PORT_ACTIVE, 7);
    fk_port(&fk.dev[1].port[1], IBV_PORT_DOWN, 8);
}

/* Nothing of the fake is left open. */
static void fk_assert_clean(void)
{
    for (int i = 0; i < FK_NDEV; i++)
        assert_int_equal(fk.dev[i].open, 0);
    assert_int_equal(fk.lists_out, 0);
    for (int i = 0; i < FK_MAX_PD; i++)
        assert_false(fk.pd[i].used);
    for (int i = 0; i < FK_MAX_MR; i++)
        assert_false(fk.mr[i].used);
    for (int i = 0; i < FK_MAX_CQ; i++)
        assert_false(fk.cq[i].used);
    for (int i = 0; i < FK_MAX_QP; i++)
        assert_false(fk.qp[i].used);
}

/* ==== init without a device, without the library ========================================= */

static const struct eccl_net_ops *ib = &eccl_net_ib;

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static bool ibverbs_mapped(void)
{
    void *h = dlopen(PROXY_IB_VERBS_LIB, RTLD_NOW | RTLD_NOLOAD);
    if (h) {
        dlclose(h);
        return true;
    }
    return false;
}

static long log_size(void)
{
    struct stat st;
    return stat(log_path, &st) == 0 ? (long)st.st_size : 0;
}

/* The log written since offset `from`. */
static char *log_since(long from)
{
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    char *buf = calloc(1, (size_t)(end - from) + 1);
    assert_non_null(buf);
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, (size_t)(end - from), f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static bool rdma_device_present(void)
{
    DIR *d = opendir("/sys/class/infiniband");
    if (!d)
        return false;
    bool any = false;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            any = true;
    closedir(d);
    return any;
}

/* init must fail with ecclInternalError, say why at INFO (no WARN), and leave nothing. */
static void expect_init_unavailable(const char *why)
{
    int fds = count_fds();
    int64_t bytes = eccl_alloc_live_bytes(NULL), blocks = eccl_alloc_live_blocks(NULL);
    long from = log_size();
    eccl_log_clear_last_error();
    assert_int_equal(ib->init(), ecclInternalError);
    assert_string_equal(eccl_log_last_error(), ""); /* no WARN */
    char *log = log_since(from);
    if (!strstr(log, why) || !strstr(log, "ECCL INFO NET/IB") || strstr(log, "ECCL WARN"))
        fail_msg("expected an INFO line with '%s' and no WARN, got:\n%s", why, log);
    free(log);
    assert_int_equal(eccl_alloc_live_bytes(NULL), bytes);
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
    assert_int_equal(count_fds(), fds);
    assert_false(ibverbs_mapped()); /* dlclose done */
    /* Calls after a failed init fail cleanly. */
    int n = -1;
    assert_int_equal(ib->devices(&n), ecclInternalError);
    ib->fini(); /* harmless without a successful init */
}

static void test_init_no_device(void **state)
{
    (void)state;
    if (rdma_device_present())
        skip(); /* this test is about machines without one */
    proxy_net_ib_set_verbs(NULL);
    proxy_net_ib_set_library(NULL);
    assert_false(ibverbs_mapped());
    /* Debian's libibverbs.so.1 is installed here; with no device its device list is empty. */
    void *probe = dlopen(PROXY_IB_VERBS_LIB, RTLD_NOW);
    if (!probe) {
        expect_init_unavailable("cannot load libibverbs.so.1");
        return;
    }
    dlclose(probe);
    expect_init_unavailable("No RDMA device found");
    /* Twice: nothing cached from the failed attempt. */
    expect_init_unavailable("No RDMA device found");
}

static void test_init_no_library(void **state)
{
    (void)state;
    proxy_net_ib_set_verbs(NULL);
    proxy_net_ib_set_library("libibverbs-eccl-test-missing.so.1");
    expect_init_unavailable("cannot load libibverbs-eccl-test-missing.so.1");
    /* A library without the verbs symbols: libm is loaded already, which is fine. */
    proxy_net_ib_set_library("libm.so.6");
    eccl_log_clear_last_error();
    long from = log_size();
    assert_int_equal(ib->init(), ecclInternalError);
    assert_string_equal(eccl_log_last_error(), "");
    char *log = log_since(from);
    assert_non_null(strstr(log, "lacks ibv_get_device_list"));
    free(log);
    proxy_net_ib_set_library(NULL);
}

static void test_init_disabled_and_bad_params(void **state)
{
    (void)state;
    fk_reset();
    proxy_net_ib_set_verbs(&fk_table);
    setenv("ECCL_IB_DISABLE", "1", 1);
    eccl_param_reset();
    expect_init_unavailable("disabled by ECCL_IB_DISABLE");
    assert_int_equal(fk.lists_out + fk.dev[0].open, 0); /* not even looked at */
    unsetenv("ECCL_IB_DISABLE");

    const char *bad[][2] = {{"ECCL_IB_TIMEOUT", "32"},
                            {"ECCL_IB_RETRY_CNT", "8"},
                            {"ECCL_IB_SL", "16"},
                            {"ECCL_IB_QPS_PER_CONNECTION", "0"},
                            {"ECCL_IB_QPS_PER_CONNECTION", "17"},
                            {"ECCL_IB_HCA", "fakeib_0:x"},
                            {"ECCL_IB_GID_INDEX", "-2"},
                            {"ECCL_IB_CONNECT_TIMEOUT_MS", "0"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv(bad[i][0], bad[i][1], 1);
        eccl_param_reset();
        eccl_log_clear_last_error();
        assert_int_equal(ib->init(), ecclInvalidUsage);
        assert_non_null(strstr(eccl_log_last_error(), bad[i][0]));
        unsetenv(bad[i][0]);
    }
    eccl_param_reset();
    /* Every port filtered out: unavailable, with an INFO. */
    setenv("ECCL_IB_HCA", "=fakeib", 1);
    eccl_param_reset();
    expect_init_unavailable("no active port selected by ECCL_IB_HCA==fakeib");
    setenv("ECCL_IB_HCA", "fakeib_1:2", 1); /* a port that is down */
    eccl_param_reset();
    expect_init_unavailable("no active port");
    unsetenv("ECCL_IB_HCA");
    eccl_param_reset();
    fk_assert_clean();
    proxy_net_ib_set_verbs(NULL);
}

/* ==== the backend over the fake provider =================================================== */

/* ll: the link layer of every fake port (InfiniBand, or Ethernet for RoCE). */
static void fake_init_ll(const char *hca, const char *nqps, uint8_t ll)
{
    fk_reset();
    for (int i = 0; i < FK_NDEV; i++) {
        for (int p = 0; p < fk.dev[i].nports; p++) {
            fk.dev[i].port[p].link_layer = ll;
            if (ll == IBV_LINK_LAYER_ETHERNET)
                fk.dev[i].port[p].lid = 0;
        }
    }
    proxy_net_ib_set_verbs(&fk_table);
    if (hca)
        setenv("ECCL_IB_HCA", hca, 1);
    else
        unsetenv("ECCL_IB_HCA");
    if (nqps)
        setenv("ECCL_IB_QPS_PER_CONNECTION", nqps, 1);
    else
        unsetenv("ECCL_IB_QPS_PER_CONNECTION");
    eccl_param_reset();
    assert_int_equal(ib->init(), ecclSuccess);
}

static void fake_init(const char *hca, const char *nqps)
{
    fake_init_ll(hca, nqps, IBV_LINK_LAYER_INFINIBAND);
}

static void fake_fini(void)
{
    ib->fini();
    fk_assert_clean();
    assert_int_equal(fk.rnr_events, 0);
    proxy_net_ib_set_verbs(NULL);
    unsetenv("ECCL_IB_HCA");
    unsetenv("ECCL_IB_QPS_PER_CONNECTION");
    eccl_param_reset();
}

static void test_fake_devices(void **state)
{
    (void)state;
    int64_t blocks = eccl_alloc_live_blocks(NULL);
    fake_init(NULL, NULL);
    int n = 0;
    assert_int_equal(ib->devices(&n), ecclSuccess);
    assert_int_equal(n, 2); /* fakeib_0:1 and fakeib_1:1 (fakeib_1:2 is down) */
    struct eccl_net_props p;
    assert_int_equal(ib->get_properties(0, &p), ecclSuccess);
    assert_string_equal(p.name, "fakeib_0:1");
    assert_int_equal(p.port, 1);
    assert_int_equal(p.speed_mbps, 100000);
    assert_int_equal(p.ptr_support, ECCL_NET_PTR_HOST); /* no GPUDirect here */
    assert_true(p.guid == 0x0002c90300a0b0c0ULL);
    assert_int_equal(p.max_recvs, 1);
    assert_true(p.max_msg_bytes == (1u << 30));
    assert_true(p.max_comms >= 1);
    assert_int_equal(ib->get_properties(1, &p), ecclSuccess);
    assert_string_equal(p.name, "fakeib_1:1");
    assert_int_equal(ib->get_properties(2, &p), ecclInvalidArgument);
    int mode = -1;
    assert_int_equal(proxy_net_ib_gdr_mode(0, &mode), ecclSuccess);
    assert_int_equal(mode, PROXY_NET_IB_GDR_NONE);
    /* init counts references: a second init and one fini keep it up. */
    assert_int_equal(ib->init(), ecclSuccess);
    ib->fini();
    assert_int_equal(ib->devices(&n), ecclSuccess);
    fake_fini();

    fake_init("^fakeib_0", NULL);
    assert_int_equal(ib->devices(&n), ecclSuccess);
    assert_int_equal(n, 1);
    assert_int_equal(ib->get_properties(0, &p), ecclSuccess);
    assert_string_equal(p.name, "fakeib_1:1");
    fake_fini();
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
}

/* Listens on device `ldev`, connects from device `cdev` (the fake routes between them by LID). */
static void connect_devs(int ldev, int cdev, void **lc, void **sc, void **rc)
{
    char handle[ECCL_NET_HANDLE_BYTES];
    assert_int_equal(ib->listen(ldev, handle, lc), ecclSuccess);
    uint64_t dl = eccl_deadline_ms(5000);
    *sc = *rc = NULL;
    int calls = 0;
    while (!*sc || !*rc) {
        if (!*sc)
            assert_int_equal(ib->connect(cdev, handle, sc), ecclSuccess);
        if (!*rc)
            assert_int_equal(ib->accept(*lc, rc), ecclSuccess);
        calls++;
        assert_false(eccl_deadline_passed(dl));
    }
    assert_true(calls >= 2); /* it is a non-blocking conversation */
}

static void connect_pair(int dev, void **lc, void **sc, void **rc)
{
    connect_devs(dev, dev, lc, sc, rc);
}

static uint8_t pattern(size_t msg, size_t j)
{
    return (uint8_t)(msg * 131 + j * 7 + 1);
}

/* Moves nmsg messages of the given sizes through a window of ECCL_NET_MAX_REQUESTS, with
 * receive buffers of `cap` bytes; checks sizes, contents and that nothing past the size was
 * written. */
static void transfer(void *sc, void *rc, size_t nmsg, const size_t *sizes, size_t cap)
{
    uint8_t *sbuf = malloc(MAXR * cap), *rbuf = malloc(MAXR * cap);
    assert_non_null(sbuf);
    assert_non_null(rbuf);
    void *smh = NULL, *rmh = NULL;
    assert_int_equal(ib->reg_mr(sc, sbuf, MAXR * cap, ECCL_NET_PTR_HOST, &smh), ecclSuccess);
    assert_int_equal(ib->reg_mr(rc, rbuf, MAXR * cap, ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    void *sreq[MAXR], *rreq[MAXR];
    size_t ns = 0, nr = 0, ds = 0, dr = 0;
    uint64_t dl = eccl_deadline_ms(20000);
    while (ds < nmsg || dr < nmsg) {
        if (nr < nmsg && nr - dr < MAXR) {
            uint8_t *b = rbuf + (nr % MAXR) * cap;
            memset(b, 0xee, cap);
            void *q = NULL;
            assert_int_equal(ib->irecv(rc, b, cap, 9, rmh, &q), ecclSuccess);
            if (q)
                rreq[nr++ % MAXR] = q;
        }
        if (ns < nmsg && ns - ds < MAXR) {
            uint8_t *b = sbuf + (ns % MAXR) * cap;
            for (size_t j = 0; j < sizes[ns]; j++)
                b[j] = pattern(ns, j);
            void *q = NULL;
            assert_int_equal(ib->isend(sc, b, sizes[ns], 9, smh, &q), ecclSuccess);
            if (q)
                sreq[ns++ % MAXR] = q;
        }
        int done = 0;
        size_t size = 0;
        if (ds < ns) {
            assert_int_equal(ib->test(sreq[ds % MAXR], &done, &size), ecclSuccess);
            if (done) {
                assert_int_equal(size, sizes[ds]);
                ds++;
            }
        }
        if (dr < nr) {
            assert_int_equal(ib->test(rreq[dr % MAXR], &done, &size), ecclSuccess);
            if (done) {
                assert_int_equal(size, sizes[dr]);
                const uint8_t *b = rbuf + (dr % MAXR) * cap;
                for (size_t j = 0; j < sizes[dr]; j++)
                    if (b[j] != pattern(dr, j))
                        fail_msg("message %zu byte %zu: %u, %u expected", dr, j, b[j],
                                 pattern(dr, j));
                for (size_t j = sizes[dr]; j < cap; j++)
                    if (b[j] != 0xee)
                        fail_msg("message %zu: byte %zu past its size was written", dr, j);
                dr++;
            }
        }
        assert_false(eccl_deadline_passed(dl));
    }
    assert_int_equal(ib->dereg_mr(sc, smh), ecclSuccess);
    assert_int_equal(ib->dereg_mr(rc, rmh), ecclSuccess);
    free(sbuf);
    free(rbuf);
}

static void run_transfers(const char *nqps, int ldev, int cdev, uint8_t ll)
{
    int64_t blocks = eccl_alloc_live_blocks(NULL);
    int fds = count_fds();
    fake_init_ll(NULL, nqps, ll);
    void *lc, *sc, *rc;
    connect_devs(ldev, cdev, &lc, &sc, &rc);
    size_t sizes[] = {0, 1, 127, 128, 129, 4096, 100003, 1u << 20, 5, 0, 333333};
    size_t n = sizeof(sizes) / sizeof(sizes[0]);
    transfer(sc, rc, n, sizes, 1u << 20);
    /* A long run with random sizes: slots and sequence numbers wrap many times. */
    size_t many[300];
    unsigned seed = 7;
    for (size_t i = 0; i < 300; i++)
        many[i] = (size_t)rand_r(&seed) % 70000;
    transfer(sc, rc, 300, many, 70000);
    assert_int_equal(fk.refused, 0);
    assert_int_equal(ib->close_send(sc), ecclSuccess);
    assert_int_equal(ib->close_recv(rc), ecclSuccess);
    assert_int_equal(ib->close_listen(lc), ecclSuccess);
    fake_fini();
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
    assert_int_equal(count_fds(), fds);
}

static void test_fake_transfer_1qp(void **state)
{
    (void)state;
    run_transfers(NULL, 0, 0, IBV_LINK_LAYER_INFINIBAND);
}

static void test_fake_transfer_3qps(void **state)
{
    (void)state;
    /* Across the two fake HCAs: the LIDs differ, so the address vectors must be right. */
    run_transfers("3", 1, 0, IBV_LINK_LAYER_INFINIBAND);
}

/* RoCE: no LIDs, a GRH per QP from the automatically picked GID (entry 0 is empty in the fake,
 * so the pick must skip it), checked by the fake against the peer's GID table. */
static void test_fake_transfer_roce(void **state)
{
    (void)state;
    run_transfers("2", 0, 1, IBV_LINK_LAYER_ETHERNET);
}

static void test_fake_window_limit(void **state)
{
    (void)state;
    fake_init(NULL, "2");
    void *lc, *sc, *rc;
    connect_pair(1, &lc, &sc, &rc);
    static uint8_t rbuf[MAXR + 1][256], sbuf[256];
    void *rmh, *smh;
    assert_int_equal(ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    assert_int_equal(ib->reg_mr(sc, sbuf, sizeof(sbuf), ECCL_NET_PTR_HOST, &smh), ecclSuccess);
    /* A send with no receive posted waits (NULL request), it does not fail. */
    void *q = NULL;
    assert_int_equal(ib->isend(sc, sbuf, 10, 0, smh, &q), ecclSuccess);
    assert_null(q);
    void *rq[MAXR];
    for (int i = 0; i < MAXR; i++) {
        assert_int_equal(ib->irecv(rc, rbuf[i], 256, 0, rmh, &rq[i]), ecclSuccess);
        assert_non_null(rq[i]);
    }
    assert_int_equal(ib->irecv(rc, rbuf[MAXR], 256, 0, rmh, &q), ecclSuccess);
    assert_null(q); /* the ninth waits */
    void *sq[MAXR];
    memset(sbuf, 0x42, sizeof(sbuf));
    for (int i = 0; i < MAXR; i++) {
        uint64_t dl = eccl_deadline_ms(2000);
        do {
            assert_int_equal(ib->isend(sc, sbuf, (size_t)i + 1, 0, smh, &sq[i]), ecclSuccess);
            assert_false(eccl_deadline_passed(dl));
        } while (!sq[i]);
    }
    assert_int_equal(ib->isend(sc, sbuf, 1, 0, smh, &q), ecclSuccess);
    assert_null(q);
    /* Releasing the second request first does not free a slot; the first does. */
    int done = 0;
    size_t size = 0;
    assert_int_equal(ib->test(rq[1], &done, &size), ecclSuccess);
    assert_true(done);
    assert_int_equal(size, 2);
    assert_int_equal(ib->irecv(rc, rbuf[MAXR], 256, 0, rmh, &q), ecclSuccess);
    assert_null(q);
    assert_int_equal(ib->test(rq[0], &done, &size), ecclSuccess);
    assert_true(done);
    assert_int_equal(size, 1);
    assert_int_equal(rbuf[0][0], 0x42);
    assert_int_equal(ib->irecv(rc, rbuf[MAXR], 256, 0, rmh, &q), ecclSuccess);
    assert_non_null(q);
    for (int i = 2; i < MAXR; i++) {
        assert_int_equal(ib->test(rq[i], &done, &size), ecclSuccess);
        assert_true(done);
        assert_int_equal(size, i + 1);
    }
    for (int i = 0; i < MAXR; i++) {
        assert_int_equal(ib->test(sq[i], &done, &size), ecclSuccess);
        assert_true(done);
    }
    /* A buffer outside its registration is refused before anything is posted. */
    void *x = NULL;
    assert_int_equal(ib->isend(sc, sbuf + 200, 100, 0, smh, &x), ecclInvalidArgument);
    assert_int_equal(ib->irecv(rc, rbuf, 100, 0, NULL, &x), ecclInvalidArgument);
    assert_int_equal(ib->reg_mr(sc, sbuf, 16, ECCL_NET_PTR_CUDA, &x), ecclInvalidArgument);
    assert_int_equal(ib->dereg_mr(rc, rmh), ecclSuccess);
    assert_int_equal(ib->dereg_mr(sc, smh), ecclSuccess);
    assert_int_equal(ib->close_send(sc), ecclSuccess);
    assert_int_equal(ib->close_recv(rc), ecclSuccess); /* with one receive still posted */
    assert_int_equal(ib->close_listen(lc), ecclSuccess);
    fake_fini();
}

/* A send that breaks the rules of the receive it meets fails the connection. */
static void send_until_error(void *sc, void *buf, size_t size, int tag, void *mh,
                             ecclResult_t expect, const char *text)
{
    uint64_t dl = eccl_deadline_ms(2000);
    ecclResult_t r;
    void *q = NULL;
    eccl_log_clear_last_error();
    while ((r = ib->isend(sc, buf, size, tag, mh, &q)) == ecclSuccess && !q)
        assert_false(eccl_deadline_passed(dl));
    assert_int_equal(r, expect);
    assert_non_null(strstr(eccl_log_last_error(), text));
    /* ... and stays failed. */
    assert_int_equal(ib->isend(sc, buf, size, tag, mh, &q), expect);
}

static void test_fake_protocol_errors(void **state)
{
    (void)state;
    int64_t blocks = eccl_alloc_live_blocks(NULL);
    fake_init(NULL, NULL);
    static uint8_t rbuf[1024], sbuf[1024];
    void *lc, *sc, *rc, *rmh, *smh, *rq;

    /* Larger than the receive buffer. */
    connect_pair(0, &lc, &sc, &rc);
    assert_int_equal(ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    assert_int_equal(ib->reg_mr(sc, sbuf, sizeof(sbuf), ECCL_NET_PTR_HOST, &smh), ecclSuccess);
    assert_int_equal(ib->irecv(rc, rbuf, 100, 0, rmh, &rq), ecclSuccess);
    send_until_error(sc, sbuf, 200, 0, smh, ecclInvalidUsage, "200 bytes into a receive of 100");
    ib->dereg_mr(rc, rmh);
    ib->dereg_mr(sc, smh);
    ib->close_send(sc);
    ib->close_recv(rc);
    ib->close_listen(lc);

    /* Tags that do not match. */
    connect_pair(0, &lc, &sc, &rc);
    assert_int_equal(ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    assert_int_equal(ib->reg_mr(sc, sbuf, sizeof(sbuf), ECCL_NET_PTR_HOST, &smh), ecclSuccess);
    assert_int_equal(ib->irecv(rc, rbuf, 100, 1, rmh, &rq), ecclSuccess);
    send_until_error(sc, sbuf, 10, 2, smh, ecclInvalidUsage, "tag");
    ib->dereg_mr(rc, rmh);
    ib->dereg_mr(sc, smh);
    ib->close_send(sc);
    ib->close_recv(rc);
    ib->close_listen(lc);

    /* A completion error from the fabric (remote access error on the data write). */
    connect_pair(0, &lc, &sc, &rc);
    assert_int_equal(ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    assert_int_equal(ib->reg_mr(sc, sbuf, sizeof(sbuf), ECCL_NET_PTR_HOST, &smh), ecclSuccess);
    assert_int_equal(ib->irecv(rc, rbuf, 100, 0, rmh, &rq), ecclSuccess);
    fk.fail_next_write = IBV_WC_REM_ACCESS_ERR;
    void *sq = NULL;
    uint64_t dl = eccl_deadline_ms(2000);
    while (!sq) {
        assert_int_equal(ib->isend(sc, sbuf, 50, 0, smh, &sq), ecclSuccess);
        assert_false(eccl_deadline_passed(dl));
    }
    int done = 0;
    eccl_log_clear_last_error();
    assert_int_equal(ib->test(sq, &done, NULL), ecclRemoteError);
    assert_false(done);
    assert_non_null(strstr(eccl_log_last_error(), "remote access error"));
    ib->dereg_mr(rc, rmh);
    ib->dereg_mr(sc, smh);
    ib->close_send(sc);
    ib->close_recv(rc);
    ib->close_listen(lc);
    fk.refused = 0;
    fake_fini();
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
}

static void test_fake_peer_closed(void **state)
{
    (void)state;
    fake_init(NULL, NULL);
    static uint8_t rbuf[64];
    void *lc, *sc, *rc, *rmh, *rq;
    connect_pair(0, &lc, &sc, &rc);
    assert_int_equal(ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    assert_int_equal(ib->irecv(rc, rbuf, sizeof(rbuf), 0, rmh, &rq), ecclSuccess);
    assert_non_null(rq);
    /* The sender goes away (as a killed process would: its side channel closes). */
    assert_int_equal(ib->close_send(sc), ecclSuccess);
    uint64_t t0 = eccl_now_ns(), dl = eccl_deadline_ms(2000);
    int done = 0;
    ecclResult_t r;
    eccl_log_clear_last_error();
    while ((r = ib->test(rq, &done, NULL)) == ecclSuccess) {
        assert_false(done);
        assert_false(eccl_deadline_passed(dl));
    }
    assert_int_equal(r, ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "closed the connection"));
    assert_true(eccl_now_ns() - t0 < 500 * ECCL_NS_PER_MS);
    ib->dereg_mr(rc, rmh);
    ib->close_recv(rc);
    ib->close_listen(lc);

    /* A sender that finished its sends and closed: the receives it completed are still
     * reported done (no false alarm), the next receive fails. */
    static uint8_t sbuf[64];
    void *smh, *sq = NULL;
    connect_pair(0, &lc, &sc, &rc);
    assert_int_equal(ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh), ecclSuccess);
    assert_int_equal(ib->reg_mr(sc, sbuf, sizeof(sbuf), ECCL_NET_PTR_HOST, &smh), ecclSuccess);
    assert_int_equal(ib->irecv(rc, rbuf, sizeof(rbuf), 0, rmh, &rq), ecclSuccess);
    dl = eccl_deadline_ms(2000);
    while (!sq) {
        assert_int_equal(ib->isend(sc, sbuf, 33, 0, smh, &sq), ecclSuccess);
        assert_false(eccl_deadline_passed(dl));
    }
    while (!done) {
        assert_int_equal(ib->test(sq, &done, NULL), ecclSuccess);
        assert_false(eccl_deadline_passed(dl));
    }
    ib->dereg_mr(sc, smh);
    assert_int_equal(ib->close_send(sc), ecclSuccess);
    eccl_sleep_us(30000); /* past the grace after the EOF */
    size_t size = 0;
    done = 0;
    while (!done) {
        assert_int_equal(ib->test(rq, &done, &size), ecclSuccess);
        assert_false(eccl_deadline_passed(dl));
    }
    assert_int_equal(size, 33);
    void *q = NULL;
    eccl_sleep_us(2000); /* past one side-channel check */
    ecclResult_t r2 = ecclSuccess;
    while (r2 == ecclSuccess && !q) {
        r2 = ib->irecv(rc, rbuf, sizeof(rbuf), 0, rmh, &q);
        if (r2 == ecclSuccess && q) { /* posted before the EOF was seen: it must then fail */
            int d = 0;
            while ((r2 = ib->test(q, &d, NULL)) == ecclSuccess)
                assert_false(eccl_deadline_passed(dl));
        }
        assert_false(eccl_deadline_passed(dl));
    }
    assert_int_equal(r2, ecclRemoteError);
    ib->dereg_mr(rc, rmh);
    ib->close_recv(rc);
    ib->close_listen(lc);
    fake_fini();
}

static void test_fake_bad_peers(void **state)
{
    (void)state;
    int64_t blocks = eccl_alloc_live_blocks(NULL);
    int fds = count_fds();
    fake_init(NULL, NULL);
    /* A handle that is not one. */
    uint8_t junk[ECCL_NET_HANDLE_BYTES];
    memset(junk, 0x33, sizeof(junk));
    void *sc = NULL;
    assert_int_equal(ib->connect(0, junk, &sc), ecclRemoteError);
    assert_null(sc);

    /* A stranger connects to the listener and sends garbage; then a real peer connects. */
    char handle[ECCL_NET_HANDLE_BYTES];
    void *lc = NULL, *rc = NULL;
    assert_int_equal(ib->listen(0, handle, &lc), ecclSuccess);
    struct proxy_ib_handle h;
    assert_int_equal(proxy_ib_handle_decode(handle, sizeof(handle), &h), ecclSuccess);
    const char *lies[] = {"GET / HTTP/1.1\r\n\r\n", NULL};
    for (int k = 0; k < 2; k++) {
        int fd = -1;
        assert_int_equal(eccl_socket_connect(&h.addr, &fd, eccl_deadline_ms(2000), NULL),
                         ecclSuccess);
        uint8_t rec[PROXY_IB_META_MAX_BYTES];
        size_t len;
        if (lies[k]) {
            len = strlen(lies[k]);
            memcpy(rec, lies[k], len);
        } else {
            /* A well-formed record with the wrong nonce. */
            struct proxy_ib_meta m = sample_meta(PROXY_IB_ROLE_SEND, 1);
            assert_int_equal(proxy_ib_meta_encode(&m, rec, sizeof(rec), &len), ecclSuccess);
        }
        assert_int_equal(eccl_socket_send_all(fd, rec, len, eccl_deadline_ms(1000), NULL),
                         ecclSuccess);
        ecclResult_t r;
        uint64_t dl = eccl_deadline_ms(2000);
        eccl_log_clear_last_error();
        while ((r = ib->accept(lc, &rc)) == ecclSuccess)
            assert_false(eccl_deadline_passed(dl));
        assert_int_equal(r, ecclRemoteError);
        assert_null(rc);
        assert_non_null(strstr(eccl_log_last_error(), k == 0 ? "magic" : "stranger"));
        eccl_socket_close(&fd);
    }
    /* The listener still works. */
    uint64_t dl = eccl_deadline_ms(5000);
    while (!sc || !rc) {
        if (!sc)
            assert_int_equal(ib->connect(0, handle, &sc), ecclSuccess);
        if (!rc)
            assert_int_equal(ib->accept(lc, &rc), ecclSuccess);
        assert_false(eccl_deadline_passed(dl));
    }
    /* A peer that vanishes in the middle of the setup. */
    void *lc2 = NULL, *sc2 = NULL, *rc2 = NULL;
    char handle2[ECCL_NET_HANDLE_BYTES];
    assert_int_equal(ib->listen(0, handle2, &lc2), ecclSuccess);
    for (int i = 0; i < 20; i++) { /* until it has connected and sent its metadata */
        assert_int_equal(ib->connect(0, handle2, &sc2), ecclSuccess);
        assert_null(sc2);
        eccl_sleep_us(1000);
    }
    ib->close_listen(lc2); /* the listener and its half-accepted connection go away */
    ecclResult_t r;
    dl = eccl_deadline_ms(2000);
    while ((r = ib->connect(0, handle2, &sc2)) == ecclSuccess && !sc2)
        assert_false(eccl_deadline_passed(dl));
    assert_int_equal(r, ecclRemoteError);
    (void)rc2;

    ib->close_send(sc);
    ib->close_recv(rc);
    ib->close_listen(lc);
    fake_fini();
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
    assert_int_equal(count_fds(), fds);
}

/* Setups that never finish end at ECCL_IB_CONNECT_TIMEOUT_MS, on both sides. */
static void test_fake_setup_timeouts(void **state)
{
    (void)state;
    int64_t blocks = eccl_alloc_live_blocks(NULL);
    int fds = count_fds();
    setenv("ECCL_IB_CONNECT_TIMEOUT_MS", "300", 1);
    fake_init(NULL, NULL);
    /* A listener that is gone: connect keeps trying, then gives up. */
    char handle[ECCL_NET_HANDLE_BYTES];
    void *lc = NULL, *sc = NULL, *rc = NULL;
    assert_int_equal(ib->listen(0, handle, &lc), ecclSuccess);
    assert_int_equal(ib->close_listen(lc), ecclSuccess);
    uint64_t t0 = eccl_now_ns(), dl = eccl_deadline_ms(3000);
    ecclResult_t r;
    eccl_log_clear_last_error();
    while ((r = ib->connect(0, handle, &sc)) == ecclSuccess) {
        assert_null(sc);
        assert_false(eccl_deadline_passed(dl));
        eccl_sleep_us(1000);
    }
    assert_int_equal(r, ecclInternalError);
    assert_non_null(strstr(eccl_log_last_error(), "timed out"));
    assert_true(eccl_now_ns() - t0 >= 290 * ECCL_NS_PER_MS);
    /* A client that connects and says nothing: accept gives up. */
    assert_int_equal(ib->listen(0, handle, &lc), ecclSuccess);
    struct proxy_ib_handle h;
    assert_int_equal(proxy_ib_handle_decode(handle, sizeof(handle), &h), ecclSuccess);
    int fd = -1;
    assert_int_equal(eccl_socket_connect(&h.addr, &fd, eccl_deadline_ms(2000), NULL), ecclSuccess);
    dl = eccl_deadline_ms(3000);
    eccl_log_clear_last_error();
    while ((r = ib->accept(lc, &rc)) == ecclSuccess) {
        assert_null(rc);
        assert_false(eccl_deadline_passed(dl));
        eccl_sleep_us(1000);
    }
    assert_int_equal(r, ecclInternalError);
    assert_non_null(strstr(eccl_log_last_error(), "connection metadata"));
    eccl_socket_close(&fd);
    assert_int_equal(ib->close_listen(lc), ecclSuccess);
    unsetenv("ECCL_IB_CONNECT_TIMEOUT_MS");
    fake_fini();
    assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
    assert_int_equal(count_fds(), fds);
}

#ifdef ECCL_FAULT_ENABLED
/* One whole session over the fake provider, stopping at the first error and undoing
 * everything it made: init, listen, connect/accept, registrations, one message each way of a
 * request, close, fini. */
static ecclResult_t session_once(void)
{
    static uint8_t sbuf[4096], rbuf[4096];
    void *lc = NULL, *sc = NULL, *rc = NULL, *smh = NULL, *rmh = NULL, *sq = NULL, *rq = NULL;
    char handle[ECCL_NET_HANDLE_BYTES];
    ecclResult_t r = ib->init();
    if (r != ecclSuccess)
        return r;
    uint64_t dl = eccl_deadline_ms(5000);
    if ((r = ib->listen(0, handle, &lc)) != ecclSuccess)
        goto out;
    while (!sc || !rc) {
        if (!sc && (r = ib->connect(0, handle, &sc)) != ecclSuccess)
            goto out;
        if (!rc && (r = ib->accept(lc, &rc)) != ecclSuccess)
            goto out;
        assert_false(eccl_deadline_passed(dl));
    }
    if ((r = ib->reg_mr(sc, sbuf, sizeof(sbuf), ECCL_NET_PTR_HOST, &smh)) != ecclSuccess ||
        (r = ib->reg_mr(rc, rbuf, sizeof(rbuf), ECCL_NET_PTR_HOST, &rmh)) != ecclSuccess)
        goto out;
    if ((r = ib->irecv(rc, rbuf, sizeof(rbuf), 0, rmh, &rq)) != ecclSuccess)
        goto out;
    while (!sq) {
        if ((r = ib->isend(sc, sbuf, 1000, 0, smh, &sq)) != ecclSuccess)
            goto out;
        assert_false(eccl_deadline_passed(dl));
    }
    for (int sdone = 0, rdone = 0; !sdone || !rdone;) {
        if (!sdone && (r = ib->test(sq, &sdone, NULL)) != ecclSuccess)
            goto out;
        if (!rdone && (r = ib->test(rq, &rdone, NULL)) != ecclSuccess)
            goto out;
        assert_false(eccl_deadline_passed(dl));
    }
out:
    if (smh)
        ib->dereg_mr(sc, smh);
    if (rmh)
        ib->dereg_mr(rc, rmh);
    ib->close_send(sc);
    ib->close_recv(rc);
    ib->close_listen(lc);
    ib->fini();
    return r;
}
#endif

/* Fails each allocation, and each side-channel send, of a session in turn: every failure is a
 * clean error that leaves no memory, fd or verbs object behind (FAULT=1 builds). */
static void test_fake_fault_torture(void **state)
{
    (void)state;
#ifdef ECCL_FAULT_ENABLED
    const char *sites[] = {"alloc", "socket_send"};
    for (size_t k = 0; k < sizeof(sites) / sizeof(sites[0]); k++) {
        int failures = 0;
        for (uint64_t n = 1;; n++) {
            fk_reset();
            proxy_net_ib_set_verbs(&fk_table);
            int64_t blocks = eccl_alloc_live_blocks(NULL);
            int fds = count_fds();
            eccl_fault_arm(sites[k], n, false);
            ecclResult_t r = session_once();
            bool hit = eccl_fault_count(sites[k]) >= n;
            eccl_fault_arm(sites[k], 0, false);
            assert_int_equal(eccl_alloc_live_blocks(NULL), blocks);
            assert_int_equal(count_fds(), fds);
            fk_assert_clean();
            if (!hit) {
                assert_int_equal(r, ecclSuccess); /* past the last hit: a clean run */
                break;
            }
            assert_int_not_equal(r, ecclSuccess);
            failures++;
        }
        print_message("%s: %d injected failures, each a clean error\n", sites[k], failures);
        assert_true(failures >= 2);
    }
    proxy_net_ib_set_verbs(NULL);
#else
    skip(); /* fault points are compiled in with make FAULT=1 */
#endif
}

/* After a failed test, puts the backend back to nothing so that the next test starts clean
 * (on success fake_fini already did, and fini without init does nothing). */
static int fake_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++)
        ib->fini();
    proxy_net_ib_set_verbs(NULL);
    proxy_net_ib_set_library(NULL);
    unsetenv("ECCL_IB_HCA");
    unsetenv("ECCL_IB_QPS_PER_CONNECTION");
    unsetenv("ECCL_IB_DISABLE");
    unsetenv("ECCL_IB_CONNECT_TIMEOUT_MS");
    eccl_param_reset();
    return 0;
}

int main(void)
{
    /* Loopback only; the log goes to a file the tests read back. */
    setenv("ECCL_SOCKET_IFNAME", "lo", 1);
    snprintf(log_path, sizeof(log_path), "/tmp/eccl-test-net-ib-%d.log", (int)getpid());
    setenv("ECCL_DEBUG", "INFO", 1);
    setenv("ECCL_DEBUG_SUBSYS", "NET", 1);
    setenv("ECCL_DEBUG_FILE", log_path, 1);
    eccl_log_reset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hca_match),
        cmocka_unit_test(test_hca_parse_errors),
        cmocka_unit_test(test_handle_roundtrip),
        cmocka_unit_test(test_meta_roundtrip),
        cmocka_unit_test(test_meta_rejects),
        cmocka_unit_test(test_ready_and_cts),
        cmocka_unit_test(test_qp_transitions),
        cmocka_unit_test(test_port_facts),
        cmocka_unit_test(test_reqs_sender),
        cmocka_unit_test(test_reqs_receiver),
        cmocka_unit_test(test_reqs_errors_and_cts_limit),
        cmocka_unit_test_teardown(test_init_no_device, fake_teardown),
        cmocka_unit_test_teardown(test_init_no_library, fake_teardown),
        cmocka_unit_test_teardown(test_init_disabled_and_bad_params, fake_teardown),
        cmocka_unit_test_teardown(test_fake_devices, fake_teardown),
        cmocka_unit_test_teardown(test_fake_transfer_1qp, fake_teardown),
        cmocka_unit_test_teardown(test_fake_transfer_3qps, fake_teardown),
        cmocka_unit_test_teardown(test_fake_transfer_roce, fake_teardown),
        cmocka_unit_test_teardown(test_fake_window_limit, fake_teardown),
        cmocka_unit_test_teardown(test_fake_protocol_errors, fake_teardown),
        cmocka_unit_test_teardown(test_fake_peer_closed, fake_teardown),
        cmocka_unit_test_teardown(test_fake_bad_peers, fake_teardown),
        cmocka_unit_test_teardown(test_fake_setup_timeouts, fake_teardown),
        cmocka_unit_test_teardown(test_fake_fault_torture, fake_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unsetenv("ECCL_DEBUG_FILE");
    eccl_log_reset();
    unlink(log_path);
    return rc;
}

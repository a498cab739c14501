/*
 * fuzz_proxy_msgs.c - libFuzzer target for what the proxy layer reads from other processes: the
 * UDS service records (proxy/service.c), the descriptor service's datagrams, requests and replies
 * whose descriptor rides along with SCM_RIGHTS (proxy/proxy.c), and the socket transport's listen
 * handle, socket hello and control-stream message header (proxy/net_socket.c).
 *
 * Input: one selector byte, then the message. Contract: bad bytes are refused with an error,
 * never a crash or an overread (fixed-size messages are copied into buffers of exactly their
 * size, so that ASan sees a read past them); an accepted message re-encodes to the same bytes
 * (the socket hello and message header, whose every bit is checked) or to one that decodes to the
 * same values (the others, which carry unchecked padding).
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "proxy/net.h"
#include "proxy/net_socket.h"
#include "proxy/proxy.h"
#include "proxy/service.h"
#include "tests/fuzz/fuzz_util.h"

#define COMM_MAGIC 0x0123456789abcdefULL
#define NRANKS     8

static void service_case(const uint8_t *p, size_t len)
{
    struct proxy_service_rec r, r2;
    if (proxy_service_rec_decode(p, len, COMM_MAGIC, &r) != ecclSuccess)
        return;
    FUZZ_CHECK(len == PROXY_SERVICE_REC_BYTES && r.type >= 1 && r.type <= 4);
    FUZZ_CHECK(memchr(r.text, 0, sizeof(r.text)) != NULL);
    uint8_t buf[PROXY_SERVICE_REC_BYTES];
    FUZZ_CHECK(proxy_service_rec_encode(&r, COMM_MAGIC, buf) == sizeof(buf));
    FUZZ_CHECK(proxy_service_rec_decode(buf, sizeof(buf), COMM_MAGIC, &r2) == ecclSuccess);
    FUZZ_CHECK(r2.type == r.type && r2.from == r.from && r2.failed == r.failed &&
               !strcmp(r2.text, r.text));
    FUZZ_CHECK(proxy_service_rec_decode(buf, sizeof(buf), COMM_MAGIC ^ 1, &r2) != ecclSuccess);
}

static void uds_case(bool reply, const uint8_t *p, size_t len)
{
    struct proxy_uds_rec r, r2;
    if (proxy_uds_rec_decode(p, len, COMM_MAGIC, reply, NRANKS, &r) != ecclSuccess)
        return;
    FUZZ_CHECK(len == PROXY_UDS_REC_BYTES && r.from >= 0 && r.from < NRANKS);
    uint8_t buf[PROXY_UDS_REC_BYTES];
    FUZZ_CHECK(proxy_uds_rec_encode(&r, COMM_MAGIC, reply, buf) == sizeof(buf));
    FUZZ_CHECK(proxy_uds_rec_decode(buf, sizeof(buf), COMM_MAGIC, reply, NRANKS, &r2) ==
               ecclSuccess);
    FUZZ_CHECK(!memcmp(&r2, &r, sizeof(r)) || (r2.op_id == r.op_id && r2.handle == r.handle &&
                                               r2.from == r.from && r2.result == r.result));
    /* A request is no reply and the other way round. */
    FUZZ_CHECK(proxy_uds_rec_decode(buf, sizeof(buf), COMM_MAGIC, !reply, NRANKS, &r2) !=
               ecclSuccess);
}

static void handle_case(const uint8_t *p, size_t len)
{
    uint8_t h[ECCL_NET_HANDLE_BYTES] = {0}, h2[ECCL_NET_HANDLE_BYTES];
    memcpy(h, p, len < sizeof(h) ? len : sizeof(h));
    uint64_t magic, magic2;
    union eccl_sockaddr addr, addr2;
    if (proxy_sock_handle_decode(h, &magic, &addr) != ecclSuccess)
        return;
    FUZZ_CHECK(addr.sa.sa_family == AF_INET || addr.sa.sa_family == AF_INET6);
    proxy_sock_handle_encode(magic, &addr, h2);
    FUZZ_CHECK(proxy_sock_handle_decode(h2, &magic2, &addr2) == ecclSuccess);
    FUZZ_CHECK(magic2 == magic && !memcmp(&addr2, &addr, sizeof(addr)));
}

static void hello_case(const uint8_t *p, size_t len)
{
    if (len < 8 + PROXY_SOCK_HELLO_BYTES)
        return;
    uint64_t magic;
    memcpy(&magic, p, 8); /* the listener's */
    uint8_t buf[PROXY_SOCK_HELLO_BYTES], buf2[PROXY_SOCK_HELLO_BYTES];
    memcpy(buf, p + 8, sizeof(buf));
    struct proxy_sock_hello h;
    if (proxy_sock_hello_decode(buf, magic, &h) != ecclSuccess)
        return;
    FUZZ_CHECK(h.nsocks >= 1 && h.nsocks <= 64 && h.index <= h.nsocks);
    proxy_sock_hello_encode(magic, &h, buf2);
    FUZZ_CHECK(!memcmp(buf2, buf, sizeof(buf)));
    FUZZ_CHECK(proxy_sock_hello_decode(buf, magic ^ 1, &h) != ecclSuccess);
}

static void msg_case(const uint8_t *p, size_t len)
{
    if (len < 4 + PROXY_SOCK_MSG_BYTES)
        return;
    uint32_t seq;
    memcpy(&seq, p, 4); /* the message the receiver expects */
    uint8_t buf[PROXY_SOCK_MSG_BYTES], buf2[PROXY_SOCK_MSG_BYTES];
    memcpy(buf, p + 4, sizeof(buf));
    uint64_t size;
    int tag;
    if (proxy_sock_msg_decode(buf, seq, &size, &tag) != ecclSuccess)
        return;
    proxy_sock_msg_encode(seq, size, tag, buf2);
    FUZZ_CHECK(!memcmp(buf2, buf, sizeof(buf)));
    FUZZ_CHECK(proxy_sock_msg_decode(buf, seq + 1, &size, &tag) != ecclSuccess);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* A copy of exactly the message's size: a read past it is an ASan report. */
    uint8_t *p = malloc(size - 1 ? size - 1 : 1);
    memcpy(p, data + 1, size - 1);
    size_t len = size - 1;
    switch (data[0] % 6) {
    case 0:
        service_case(p, len);
        break;
    case 1:
    case 2:
        uds_case(data[0] % 6 == 2, p, len);
        break;
    case 3:
        handle_case(p, len);
        break;
    case 4:
        hello_case(p, len);
        break;
    default:
        msg_case(p, len);
        break;
    }
    free(p);
    return 0;
}

static void seed_sel(const char *name, uint8_t sel, const void *pre, size_t prelen, const void *msg,
                     size_t len)
{
    uint8_t buf[1 + 8 + 256];
    buf[0] = sel;
    if (prelen)
        memcpy(buf + 1, pre, prelen);
    memcpy(buf + 1 + prelen, msg, len);
    fuzz_seed(name, buf, 1 + prelen + len);
}

static void fuzz_seeds(void)
{
    uint8_t buf[256];
    struct proxy_service_rec s = {.type = 1, .from = 2, .failed = -1};
    seed_sel("svc-hello", 0, NULL, 0, buf, proxy_service_rec_encode(&s, COMM_MAGIC, buf));
    s = (struct proxy_service_rec){.type = 2, .from = 3, .failed = 4242};
    seed_sel("svc-ping", 0, NULL, 0, buf, proxy_service_rec_encode(&s, COMM_MAGIC, buf));
    s = (struct proxy_service_rec){.type = 4, .from = 1, .failed = 5, .text = "rank 5: EOF"};
    seed_sel("svc-revoke", 0, NULL, 0, buf, proxy_service_rec_encode(&s, COMM_MAGIC, buf));
    s = (struct proxy_service_rec){.type = 3, .from = 6, .failed = -1};
    seed_sel("svc-bye", 0, NULL, 0, buf, proxy_service_rec_encode(&s, COMM_MAGIC, buf));

    struct proxy_uds_rec u = {.op_id = 0x55aa, .handle = (3ULL << 32) | 0x1235, .from = 1};
    seed_sel("uds-getfd", 1, NULL, 0, buf, proxy_uds_rec_encode(&u, COMM_MAGIC, false, buf));
    u.from = 3;
    seed_sel("uds-fd", 2, NULL, 0, buf, proxy_uds_rec_encode(&u, COMM_MAGIC, true, buf));
    u.result = ecclInvalidUsage;
    seed_sel("uds-fd-refused", 2, NULL, 0, buf, proxy_uds_rec_encode(&u, COMM_MAGIC, true, buf));

    union eccl_sockaddr a;
    memset(&a, 0, sizeof(a));
    a.sin.sin_family = AF_INET;
    a.sin.sin_port = htons(43210);
    a.sin.sin_addr.s_addr = htonl(0x0a000001);
    proxy_sock_handle_encode(0x77, &a, buf);
    seed_sel("sock-handle-v4", 3, NULL, 0, buf, ECCL_NET_HANDLE_BYTES);
    memset(&a, 0, sizeof(a));
    a.sin6.sin6_family = AF_INET6;
    a.sin6.sin6_port = htons(1234);
    a.sin6.sin6_addr.s6_addr[15] = 1;
    proxy_sock_handle_encode(0x78, &a, buf);
    seed_sel("sock-handle-v6", 3, NULL, 0, buf, ECCL_NET_HANDLE_BYTES);

    uint64_t magic = 0x1122334455667788ULL;
    struct proxy_sock_hello h = {.nsocks = 4, .index = 2, .conn_id = 0xdeadbeef};
    proxy_sock_hello_encode(magic, &h, buf);
    seed_sel("sock-hello-data", 4, &magic, 8, buf, PROXY_SOCK_HELLO_BYTES);
    h.index = 4; /* the control socket */
    proxy_sock_hello_encode(magic, &h, buf);
    seed_sel("sock-hello-ctrl", 4, &magic, 8, buf, PROXY_SOCK_HELLO_BYTES);

    uint32_t seq = 9;
    proxy_sock_msg_encode(seq, 1 << 20, 7, buf);
    seed_sel("sock-msg", 5, &seq, 4, buf, PROXY_SOCK_MSG_BYTES);
    seq = 0;
    proxy_sock_msg_encode(seq, 0, -1, buf);
    seed_sel("sock-msg-empty", 5, &seq, 4, buf, PROXY_SOCK_MSG_BYTES);
}

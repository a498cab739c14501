/*
 * test_store_contract.c - the store contract suite (contract.h) against the embedded store, plus
 * what only the embedded store has: its server's handling of bad frames (bad magic, version,
 * oversized lengths, truncated headers and bodies, lying inner lengths), after each of which the
 * server must still serve other clients; and a leak check over the whole run.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "store/proto.h"
#include "store/store.h"

static char contract_url[256];
static struct store_server *srv;
static int srv_port;

static void contract_disrupt(void)
{
    store_server_drop_connections(srv);
}

#include "contract.h"

/* ---- bad frames ---- */

static int raw_connect(void)
{
    union eccl_sockaddr addr;
    char text[64];
    snprintf(text, sizeof(text), "127.0.0.1:%d", srv_port);
    OK(eccl_sockaddr_parse(text, &addr));
    int fd = -1;
    OK(eccl_socket_connect(&addr, &fd, DL(5000), NULL));
    return fd;
}

static void put_hdr(uint8_t *p, uint32_t magic, uint8_t version, uint8_t flags, uint16_t type,
                    uint32_t id, uint32_t len)
{
    p[0] = (uint8_t)(magic >> 24);
    p[1] = (uint8_t)(magic >> 16);
    p[2] = (uint8_t)(magic >> 8);
    p[3] = (uint8_t)magic;
    p[4] = version;
    p[5] = flags;
    p[6] = (uint8_t)(type >> 8);
    p[7] = (uint8_t)type;
    for (int i = 0; i < 4; i++) {
        p[8 + i] = (uint8_t)(id >> (24 - 8 * i));
        p[12 + i] = (uint8_t)(len >> (24 - 8 * i));
    }
}

/* Reads until EOF (the server closes a connection after a bad frame); returns whether an ERROR
 * frame came first. Fails the test if the connection stays open for 5 s. */
static bool expect_closed(int fd)
{
    uint8_t buf[4096];
    size_t total = 0;
    uint64_t until = DL(5000);
    for (;;) {
        assert_false(eccl_deadline_passed(until));
        ssize_t n = recv(fd, buf + total, sizeof(buf) - total, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                eccl_sleep_us(2000);
                continue;
            }
            break; /* reset: closed too */
        }
        total += (size_t)n;
        assert_true(total < sizeof(buf));
    }
    if (total < STORE_PROTO_HDR_SIZE)
        return false;
    struct store_proto_hdr h;
    store_proto_hdr_decode(buf, &h);
    return h.magic == STORE_PROTO_MAGIC && h.type == STORE_MSG_ERROR;
}

/* The server answers a well-formed client after each abuse. */
static void still_serving(void)
{
    struct store *s;
    char url[300];
    snprintf(url, sizeof(url), "%s/bad", contract_url);
    OK(store_open(url, DL(5000), &s));
    OK(store_put(s, S("alive"), S("yes"), 0, DL(5000), NULL));
    struct store_kv *kv;
    OK(store_get(s, S("alive"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    store_kv_free(kv);
    store_close(s);
}

static void send_raw(int fd, const void *p, size_t len)
{
    OK(eccl_socket_send_all(fd, p, len, DL(5000), NULL));
}

static void bad_magic_version_flags(void **state)
{
    (void)state;
    uint8_t h[STORE_PROTO_HDR_SIZE];
    struct {
        uint32_t magic;
        uint8_t version, flags;
        uint16_t type;
    } cases[] = {
        {0x47455420, STORE_PROTO_VERSION, 0, STORE_MSG_PING}, /* "GET " from an HTTP client */
        {STORE_PROTO_MAGIC, 2, 0, STORE_MSG_PING},
        {STORE_PROTO_MAGIC, 0, 0, STORE_MSG_PING},
        {STORE_PROTO_MAGIC, STORE_PROTO_VERSION, 1, STORE_MSG_PING},
        {STORE_PROTO_MAGIC, STORE_PROTO_VERSION, 0, 0x7777}, /* unknown type */
        {STORE_PROTO_MAGIC, STORE_PROTO_VERSION, 0, STORE_MSG_PING | STORE_MSG_REPLY}, /* reply */
    };
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(cases); i++) {
        int fd = raw_connect();
        put_hdr(h, cases[i].magic, cases[i].version, cases[i].flags, cases[i].type, 1, 0);
        send_raw(fd, h, sizeof(h));
        assert_true(expect_closed(fd));
        eccl_socket_close(&fd);
        still_serving();
    }
}

static void bad_lengths(void **state)
{
    (void)state;
    uint8_t h[STORE_PROTO_HDR_SIZE];
    /* A body length above the limit: refused from the header alone, nothing allocated. */
    uint32_t lens[] = {STORE_PROTO_MAX_BODY + 1, 0xffffffffu};
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(lens); i++) {
        int fd = raw_connect();
        put_hdr(h, STORE_PROTO_MAGIC, STORE_PROTO_VERSION, 0, STORE_MSG_PUT, 1, lens[i]);
        send_raw(fd, h, sizeof(h));
        assert_true(expect_closed(fd));
        eccl_socket_close(&fd);
        still_serving();
    }

    /* A PUT whose inner key length points past the body. */
    struct store_buf b;
    store_buf_init(&b);
    store_buf_u32(&b, 1000); /* key length */
    store_buf_raw(&b, "abc", 3);
    OK(store_buf_finish(&b, STORE_MSG_PUT, 1));
    int fd = raw_connect();
    send_raw(fd, b.data, b.len);
    assert_true(expect_closed(fd));
    eccl_socket_close(&fd);
    still_serving();

    /* A PUT with trailing garbage after its fields. */
    store_buf_reset(&b);
    store_buf_bytes(&b, "k", 1);
    store_buf_bytes(&b, "v", 1);
    store_buf_i64(&b, 0);
    store_buf_u8(&b, 0x55);
    OK(store_buf_finish(&b, STORE_MSG_PUT, 1));
    fd = raw_connect();
    send_raw(fd, b.data, b.len);
    assert_true(expect_closed(fd));
    eccl_socket_close(&fd);

    /* A TXN claiming 2^32-1 compares. */
    store_buf_reset(&b);
    store_buf_u32(&b, 0xffffffffu);
    OK(store_buf_finish(&b, STORE_MSG_TXN, 1));
    fd = raw_connect();
    send_raw(fd, b.data, b.len);
    assert_true(expect_closed(fd));
    eccl_socket_close(&fd);

    /* A watch with a negative start revision. */
    store_buf_reset(&b);
    store_buf_bytes(&b, "k", 1);
    store_buf_bytes(&b, "", 0);
    store_buf_i64(&b, -5);
    OK(store_buf_finish(&b, STORE_MSG_WATCH_CREATE, 1));
    fd = raw_connect();
    send_raw(fd, b.data, b.len);
    assert_true(expect_closed(fd));
    eccl_socket_close(&fd);
    store_buf_fini(&b);
    still_serving();
}

static void bad_truncated(void **state)
{
    (void)state;
    uint8_t h[STORE_PROTO_HDR_SIZE];
    put_hdr(h, STORE_PROTO_MAGIC, STORE_PROTO_VERSION, 0, STORE_MSG_PUT, 1, 100);
    /* Half a header, then the client goes away. */
    int fd = raw_connect();
    send_raw(fd, h, 7);
    eccl_socket_close(&fd);
    /* A header and part of its body, then the client goes away. */
    fd = raw_connect();
    send_raw(fd, h, sizeof(h));
    send_raw(fd, "0123456789", 10);
    shutdown(fd, SHUT_WR);
    assert_false(expect_closed(fd)); /* no reply to half a frame, just a close */
    eccl_socket_close(&fd);
    /* Nothing at all. */
    fd = raw_connect();
    eccl_socket_close(&fd);
    still_serving();
    /* A well-formed request on a raw connection gets its reply (the protocol as documented). */
    struct store_buf b;
    store_buf_init(&b);
    OK(store_buf_finish(&b, STORE_MSG_PING, 42));
    fd = raw_connect();
    send_raw(fd, b.data, b.len);
    uint8_t reply[STORE_PROTO_HDR_SIZE + 8];
    OK(eccl_socket_recv_all(fd, reply, sizeof(reply), DL(5000), NULL));
    struct store_proto_hdr rh;
    store_proto_hdr_decode(reply, &rh);
    assert_null(store_proto_hdr_check(&rh));
    assert_int_equal(rh.type, STORE_MSG_PING | STORE_MSG_REPLY);
    assert_int_equal(rh.id, 42);
    assert_int_equal(rh.len, 8);
    eccl_socket_close(&fd);
    store_buf_fini(&b);
}

/* Client side: a store that is down gives a clear error at the deadline, not before, not much
 * after, and no leak. */
static void down_store_deadline(void **state)
{
    (void)state;
    struct store_server *tmp;
    int port;
    OK(store_server_start("127.0.0.1:0", &tmp, &port));
    char url[128];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/down", port);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    store_server_stop(tmp);
    uint64_t t0 = eccl_now_ns();
    ecclResult_t res = store_put(s, S("k"), S("v"), 0, DL(500), NULL);
    uint64_t ms = (eccl_now_ns() - t0) / ECCL_NS_PER_MS;
    assert_int_equal(res, ecclInternalError);
    assert_true(strstr(eccl_log_last_error(), "timed out") != NULL);
    assert_true(ms >= 450 && ms < 2000);
    struct store *s2 = (struct store *)1;
    assert_int_not_equal(store_open(url, DL(300), &s2), ecclSuccess);
    assert_ptr_equal(s2, (struct store *)1);
    store_close(s);
}

/* A watch from a revision that fell out of the server's history ends with a clear error (from
 * the create or from the first poll), and one from a revision still there works. */
static void watch_compacted(void **state)
{
    (void)state;
    setenv("ECCL_STORE_HISTORY", "16", 1);
    eccl_param_reset();
    struct store_server *tmp;
    int port;
    ecclResult_t started = store_server_start("127.0.0.1:0", &tmp, &port);
    unsetenv("ECCL_STORE_HISTORY");
    eccl_param_reset();
    OK(started);
    char url[128];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/c", port);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    int64_t rev = 0;
    for (int i = 0; i < 40; i++)
        OK(store_put(s, S("k"), S("v"), 0, DL(5000), &rev));
    struct store_watch *w = NULL;
    ecclResult_t res = store_watch_create(s, S("k"), false, 2, NULL, NULL, DL(5000), &w);
    if (res == ecclSuccess) {
        struct store_event *ev;
        size_t n;
        res = store_watch_poll(w, 8, DL(5000), &ev, &n);
        store_watch_destroy(w);
    }
    assert_int_equal(res, ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "compact"));
    OK(store_watch_create(s, S("k"), false, rev - 5, NULL, NULL, DL(5000), &w));
    struct store_event *ev;
    size_t n, got = 0;
    while (got < 6) {
        OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
        assert_true(n > 0);
        got += n;
        store_events_free(ev, n);
    }
    assert_int_equal(got, 6);
    store_watch_destroy(w);
    store_close(s);
    store_server_stop(tmp);
}

/* The embedded server restarts empty on the same port: a watch that resumes there must not wait
 * silently for the new store to reach its revision; it fails with a clear error. */
static void watch_store_lost(void **state)
{
    (void)state;
    struct store_server *tmp;
    int port;
    OK(store_server_start("127.0.0.1:0", &tmp, &port));
    char url[128], listen[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/lost", port);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    struct store_watch *w;
    OK(store_watch_create(s, S("k"), true, 0, NULL, NULL, DL(5000), &w));
    for (int i = 0; i < 5; i++)
        OK(store_put(s, S("k"), S("v"), 0, DL(5000), NULL));
    struct store_event *ev;
    size_t n, got = 0;
    while (got < 5) {
        OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
        assert_true(n > 0);
        got += n;
        store_events_free(ev, n);
    }
    store_server_stop(tmp);
    OK(store_server_start(listen, &tmp, NULL));
    ecclResult_t res = ecclSuccess;
    uint64_t until = DL(10000);
    while (res == ecclSuccess && !eccl_deadline_passed(until)) {
        res = store_watch_poll(w, 8, DL(200), &ev, &n);
        if (res == ecclSuccess)
            store_events_free(ev, n);
    }
    assert_int_equal(res, ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "lost its state"));
    store_watch_destroy(w);
    store_close(s);
    store_server_stop(tmp);
}

static void bad_urls(void **state)
{
    (void)state;
    struct store *s = (struct store *)1;
    const char *urls[] = {
        "", "nothing", "ftp://x:1/", "tcp:///prefix", "tcp://a:1,b:2/p", "tcp://127.0.0.1:1/p?x=y"};
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(urls); i++)
        assert_int_equal(store_open(urls[i], DL(200), &s), ecclInvalidArgument);
    assert_ptr_equal(s, (struct store *)1);
}

int main(void)
{
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    if (store_server_start("127.0.0.1:0", &srv, &srv_port) != ecclSuccess) {
        fprintf(stderr, "cannot start the embedded store\n");
        return 1;
    }
    snprintf(contract_url, sizeof(contract_url), "tcp://127.0.0.1:%d", srv_port);
    const struct CMUnitTest tests[] = {
        CONTRACT_TESTS,
        cmocka_unit_test(bad_magic_version_flags),
        cmocka_unit_test(bad_lengths),
        cmocka_unit_test(bad_truncated),
        cmocka_unit_test(down_store_deadline),
        cmocka_unit_test(watch_compacted),
        cmocka_unit_test(watch_store_lost),
        cmocka_unit_test(bad_urls),
    };
    int failed = cmocka_run_group_tests_name("store contract (embedded)", tests, NULL, NULL);
    store_server_stop(srv);
    int64_t leaked = eccl_alloc_live_blocks(NULL) - blocks0;
    if (leaked != 0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks still live\n", (long long)leaked);
        return 1;
    }
    return failed ? 1 : 0;
}

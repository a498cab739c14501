/*
 * fuzz_store_proto.c - libFuzzer target for the embedded store's protocol parser: each input is
 * one frame (header and body) run against a live server's state through store_server_exec_frame.
 * A malformed frame must be refused, a well-formed one answered with a well-formed frame, never a
 * crash, an overrun or a leak (ASan). Seeds: request frames built with store/proto.h's encoder
 * in the layouts store/tcp.c sends (ping, put, range, delete, lease grant/keepalive/ttl/revoke).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "store/proto.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_util.h"

static struct store_server *srv;

static void stop_server(void)
{
    store_server_stop(srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) {
        if (store_server_start("127.0.0.1:0", &srv, NULL) != ecclSuccess)
            abort();
        atexit(stop_server);
    }
    struct store_buf reply;
    store_buf_init(&reply);
    ecclResult_t res = store_server_exec_frame(srv, data, size, &reply);
    if (res == ecclSuccess && reply.len >= STORE_PROTO_HDR_SIZE && reply.data) {
        struct store_proto_hdr h;
        store_proto_hdr_decode(reply.data, &h);
        /* the server must answer with a well-formed frame */
        FUZZ_CHECK(!store_proto_hdr_check(&h) && h.len == reply.len - STORE_PROTO_HDR_SIZE);
    }
    store_buf_fini(&reply);
    return 0;
}

static void seed_frame(const char *name, struct store_buf *b, uint16_t type)
{
    if (store_buf_finish(b, type, 7) != ecclSuccess)
        abort();
    fuzz_seed(name, b->data, b->len);
    store_buf_reset(b);
}

static void fuzz_seeds(void)
{
    struct store_buf b;
    store_buf_init(&b);
    store_buf_reset(&b);
    seed_frame("ping", &b, STORE_MSG_PING);
    store_buf_bytes(&b, "job/s/g", 7);
    store_buf_bytes(&b, "value", 5);
    store_buf_i64(&b, 0);
    seed_frame("put", &b, STORE_MSG_PUT);
    store_buf_bytes(&b, "job/", 4);
    store_buf_bytes(&b, "job0", 4);
    store_buf_u32(&b, 100);
    seed_frame("range", &b, STORE_MSG_RANGE);
    store_buf_bytes(&b, "job/s/g", 7);
    store_buf_bytes(&b, "", 0);
    seed_frame("delete", &b, STORE_MSG_DELETE);
    store_buf_i64(&b, 10);
    seed_frame("lease-grant", &b, STORE_MSG_LEASE_GRANT);
    store_buf_i64(&b, 1);
    seed_frame("lease-keepalive", &b, STORE_MSG_LEASE_KEEPALIVE);
    store_buf_i64(&b, 1);
    seed_frame("lease-ttl", &b, STORE_MSG_LEASE_TTL);
    store_buf_i64(&b, 1);
    seed_frame("lease-revoke", &b, STORE_MSG_LEASE_REVOKE);
    store_buf_fini(&b);
}

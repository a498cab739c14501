/*
 * fuzz_store_proto.c - libFuzzer target for the embedded store's protocol parser: each input is
 * one frame (header and body) run against a live server's state through store_server_exec_frame.
 * A malformed frame must be refused, a well-formed one answered, never a crash, an overrun or a
 * leak (ASan). Build and run: tests/unit/store/fuzz/run.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "store/proto.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
        if (store_proto_hdr_check(&h) || h.len != reply.len - STORE_PROTO_HDR_SIZE)
            abort(); /* the server must answer with a well-formed frame */
    }
    store_buf_fini(&reply);
    return 0;
}

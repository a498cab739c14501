/*
 * proto.h - the embedded store's wire protocol: frame header, message types, and the bounded
 * encoder and decoder both sides use. docs/internals/store-protocol.md describes the format.
 *
 * A frame is a 16-byte header (magic, version, flags, type, request id, body length; big-endian)
 * and a body of at most STORE_PROTO_MAX_BODY bytes made of u8, u32, i64 and byte strings (u32
 * length + bytes). The decoder never reads past the body: a short or lying body marks the cursor
 * bad, and the receiver drops the frame and the connection.
 */
#ifndef ECCL_STORE_PROTO_H
#define ECCL_STORE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

#define STORE_PROTO_MAGIC    0x45435354u /* "ECST" */
#define STORE_PROTO_VERSION  1
#define STORE_PROTO_HDR_SIZE 16
#define STORE_PROTO_MAX_BODY (4u * 1024 * 1024)

enum store_msg_type {
    STORE_MSG_PING = 1,
    STORE_MSG_RANGE = 2,
    STORE_MSG_PUT = 3,
    STORE_MSG_DELETE = 4,
    STORE_MSG_TXN = 5,
    STORE_MSG_LEASE_GRANT = 6,
    STORE_MSG_LEASE_REVOKE = 7,
    STORE_MSG_LEASE_KEEPALIVE = 8,
    STORE_MSG_LEASE_TTL = 9,
    STORE_MSG_WATCH_CREATE = 10,
    STORE_MSG_REPLY = 0x8000, /* OR-ed into a request's type for its reply */
    STORE_MSG_ERROR = 0x80ff,
    STORE_MSG_WATCH_EVENTS = 0x8101,
    STORE_MSG_WATCH_PROGRESS = 0x8102,
    STORE_MSG_WATCH_CANCELED = 0x8103,
};

struct store_proto_hdr {
    uint32_t magic;
    uint8_t version;
    uint8_t flags;
    uint16_t type;
    uint32_t id;
    uint32_t len;
};

/* A growing frame under construction; the header is filled in by store_buf_finish. Allocation
 * failures and overflows of the frame limit are remembered and reported by store_buf_finish. */
struct store_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool failed;  /* out of memory */
    bool too_big; /* body above STORE_PROTO_MAX_BODY */
};

void store_buf_init(struct store_buf *b);
void store_buf_fini(struct store_buf *b);
/* Drops the body, keeps the memory. */
void store_buf_reset(struct store_buf *b);
void store_buf_u8(struct store_buf *b, uint8_t v);
void store_buf_u32(struct store_buf *b, uint32_t v);
void store_buf_i64(struct store_buf *b, int64_t v);
void store_buf_bytes(struct store_buf *b, const void *p, size_t len);
/* Appends bytes as they are (no length). */
void store_buf_raw(struct store_buf *b, const void *p, size_t len);
size_t store_buf_body_len(const struct store_buf *b);
/* Writes the header; ecclInternalError (WARN) if the frame could not be built. */
ecclResult_t store_buf_finish(struct store_buf *b, uint16_t type, uint32_t id);

struct store_cur {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static inline void store_cur_init(struct store_cur *c, const void *body, size_t len)
{
    c->p = body;
    c->left = len;
    c->bad = false;
}
uint8_t store_cur_u8(struct store_cur *c);
uint32_t store_cur_u32(struct store_cur *c);
int64_t store_cur_i64(struct store_cur *c);
/* A pointer into the body and its length; NULL with *len 0 when bad. */
const uint8_t *store_cur_bytes(struct store_cur *c, size_t *len);
/* True when the whole body was consumed and nothing was bad. */
static inline bool store_cur_done(const struct store_cur *c)
{
    return !c->bad && c->left == 0;
}

void store_proto_hdr_decode(const uint8_t raw[STORE_PROTO_HDR_SIZE], struct store_proto_hdr *h);
/* Checks magic, version, flags and length; returns a static reason text or NULL when good. */
const char *store_proto_hdr_check(const struct store_proto_hdr *h);

/* Runs one complete request frame (header and body) against a running embedded server without a
 * connection, the reply frame into `reply` (from store_buf_init). ecclInvalidArgument when the
 * frame is malformed (a connection would be closed). For the protocol fuzzer and tests. */
struct store_server;
ecclResult_t store_server_exec_frame(struct store_server *srv, const void *frame, size_t len,
                                     struct store_buf *reply);

#endif

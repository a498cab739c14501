/*
 * proto.c - encoder and decoder of the embedded store's frames (see proto.h and
 * docs/internals/store-protocol.md). Big-endian integers; every read is bounded by the body.
 */
#include "store/proto.h"

#include <string.h>

#include "common/alloc.h"
#include "common/log.h"

void store_buf_init(struct store_buf *b)
{
    memset(b, 0, sizeof(*b));
    store_buf_reset(b);
}

void store_buf_fini(struct store_buf *b)
{
    eccl_free(b->data);
    memset(b, 0, sizeof(*b));
}

void store_buf_reset(struct store_buf *b)
{
    b->len = STORE_PROTO_HDR_SIZE;
    b->failed = false;
    b->too_big = false;
}

static uint8_t *reserve(struct store_buf *b, size_t n)
{
    if (b->failed || b->too_big)
        return NULL;
    if (b->len + n - STORE_PROTO_HDR_SIZE > STORE_PROTO_MAX_BODY) {
        b->too_big = true;
        return NULL;
    }
    if (b->len + n > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n)
            ncap *= 2;
        uint8_t *d = eccl_realloc(b->data, ncap, 1, "store_buf");
        if (!d) {
            b->failed = true;
            return NULL;
        }
        b->data = d;
        b->cap = ncap;
    }
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void store_buf_u8(struct store_buf *b, uint8_t v)
{
    uint8_t *p = reserve(b, 1);
    if (p)
        *p = v;
}

void store_buf_u32(struct store_buf *b, uint32_t v)
{
    uint8_t *p = reserve(b, 4);
    if (p)
        put_be32(p, v);
}

void store_buf_i64(struct store_buf *b, int64_t v)
{
    uint8_t *p = reserve(b, 8);
    if (p) {
        put_be32(p, (uint32_t)((uint64_t)v >> 32));
        put_be32(p + 4, (uint32_t)v);
    }
}

void store_buf_bytes(struct store_buf *b, const void *src, size_t len)
{
    if (len > STORE_PROTO_MAX_BODY) {
        b->too_big = true;
        return;
    }
    store_buf_u32(b, (uint32_t)len);
    uint8_t *p = reserve(b, len);
    if (p && len)
        memcpy(p, src, len);
}

void store_buf_raw(struct store_buf *b, const void *src, size_t len)
{
    uint8_t *p = reserve(b, len);
    if (p && len)
        memcpy(p, src, len);
}

size_t store_buf_body_len(const struct store_buf *b)
{
    return b->len - STORE_PROTO_HDR_SIZE;
}

ecclResult_t store_buf_finish(struct store_buf *b, uint16_t type, uint32_t id)
{
    if (!b->data)
        (void)reserve(b, 0); /* an empty body still needs the header's memory */
    if (b->failed || b->too_big || !b->data) {
        WARN("store protocol: cannot build a frame of type 0x%x: %s", type,
             b->too_big ? "body above the frame limit" : "out of memory");
        return ecclInternalError;
    }
    uint8_t *p = b->data;
    put_be32(p, STORE_PROTO_MAGIC);
    p[4] = STORE_PROTO_VERSION;
    p[5] = 0;
    p[6] = (uint8_t)(type >> 8);
    p[7] = (uint8_t)type;
    put_be32(p + 8, id);
    put_be32(p + 12, (uint32_t)(b->len - STORE_PROTO_HDR_SIZE));
    return ecclSuccess;
}

uint8_t store_cur_u8(struct store_cur *c)
{
    if (c->bad || c->left < 1) {
        c->bad = true;
        return 0;
    }
    uint8_t v = c->p[0];
    c->p++;
    c->left--;
    return v;
}

uint32_t store_cur_u32(struct store_cur *c)
{
    if (c->bad || c->left < 4) {
        c->bad = true;
        return 0;
    }
    uint32_t v = get_be32(c->p);
    c->p += 4;
    c->left -= 4;
    return v;
}

int64_t store_cur_i64(struct store_cur *c)
{
    if (c->bad || c->left < 8) {
        c->bad = true;
        return 0;
    }
    uint64_t v = (uint64_t)get_be32(c->p) << 32 | get_be32(c->p + 4);
    c->p += 8;
    c->left -= 8;
    return (int64_t)v;
}

const uint8_t *store_cur_bytes(struct store_cur *c, size_t *len)
{
    uint32_t n = store_cur_u32(c);
    if (c->bad || n > c->left) {
        c->bad = true;
        *len = 0;
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= n;
    *len = n;
    return p;
}

void store_proto_hdr_decode(const uint8_t raw[STORE_PROTO_HDR_SIZE], struct store_proto_hdr *h)
{
    h->magic = get_be32(raw);
    h->version = raw[4];
    h->flags = raw[5];
    h->type = (uint16_t)(raw[6] << 8 | raw[7]);
    h->id = get_be32(raw + 8);
    h->len = get_be32(raw + 12);
}

const char *store_proto_hdr_check(const struct store_proto_hdr *h)
{
    if (h->magic != STORE_PROTO_MAGIC)
        return "bad magic";
    if (h->version != STORE_PROTO_VERSION)
        return "unsupported protocol version";
    if (h->flags != 0)
        return "unknown flags";
    if (h->len > STORE_PROTO_MAX_BODY)
        return "body length above the frame limit";
    return NULL;
}

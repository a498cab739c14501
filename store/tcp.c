/*
 * tcp.c - the client of the embedded store (tcp://host:port/prefix), speaking proto.h.
 *
 * Unary calls share one connection per store handle, one call at a time (calls from several
 * threads queue on `lock`). A call whose request may not have reached the server (connect
 * failure, stale connection found before sending, send failure) is retried with backoff until the
 * deadline; once a write was sent, a lost reply is an error (the outcome is unknown), while reads
 * are retried. Each watch has its own connection on its own thread; it reconnects after a failure
 * and resumes from the last revision it delivered. The server sends a PROGRESS frame every second
 * on an idle watch, so a silence of WATCH_SILENCE_MS means the server is gone.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"
#include "store/proto.h"
#include "store/store_int.h"

#define WATCH_SILENCE_MS 5000

struct tcp_priv {
    union eccl_sockaddr addr;
    char name[128];
    pthread_mutex_t lock;
    int fd;                        /* protected by lock; -1 when not connected */
    uint32_t next_id;              /* protected by lock */
    struct store_buf req;          /* protected by lock */
    const _Atomic uint32_t *abort; /* the store's closing flag */
};

struct tcp_reply {
    uint8_t *body;
    uint32_t len;
};

static bool stale(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0; /* the server never speaks first: EOF or garbage */
}

static ecclResult_t recv_frame(int fd, uint64_t deadline_ns, const _Atomic uint32_t *abort,
                               struct store_proto_hdr *h, uint8_t **body_out, const char *who)
{
    uint8_t raw[STORE_PROTO_HDR_SIZE];
    ECCL_TRY(eccl_socket_recv_all(fd, raw, sizeof(raw), deadline_ns, abort));
    store_proto_hdr_decode(raw, h);
    const char *why = store_proto_hdr_check(h);
    if (why) {
        WARN("store tcp: bad frame from %s: %s", who, why);
        return ecclRemoteError;
    }
    uint8_t *body = eccl_calloc(h->len + 1, 1, "store_tcp_body");
    if (!body)
        return ecclSystemError;
    if (h->len) {
        ecclResult_t res = eccl_socket_recv_all(fd, body, h->len, deadline_ns, abort);
        if (res != ecclSuccess) {
            eccl_free(body);
            return res;
        }
    }
    *body_out = body;
    return ecclSuccess;
}

/* Decodes an ERROR frame's body into a WARN with the server's text; returns its code. */
static ecclResult_t error_reply(const char *name, const char *op, const uint8_t *body, uint32_t len)
{
    struct store_cur c;
    store_cur_init(&c, body, len);
    uint32_t code = store_cur_u32(&c);
    size_t mlen;
    const uint8_t *msg = store_cur_bytes(&c, &mlen);
    if (c.bad) {
        WARN("store tcp %s: %s: malformed error reply", name, op);
        return ecclRemoteError;
    }
    WARN("store tcp %s: %s: %.*s", name, op, (int)ECCL_MIN(mlen, 300), (const char *)msg);
    if (code == ecclInvalidArgument || code == ecclInvalidUsage)
        return (ecclResult_t)code;
    return ecclRemoteError;
}

/*
 * One request/reply. The request body is in p->req (built by the caller under p->lock, which
 * this function expects held). `idempotent`: a lost reply may be retried.
 */
static ecclResult_t tcp_call_locked(struct tcp_priv *p, const char *op, uint16_t type,
                                    bool idempotent, uint64_t deadline_ns, struct tcp_reply *out)
{
    ecclResult_t res = ecclSuccess;
    for (unsigned attempt = 0;; attempt++) {
        if (p->fd >= 0 && stale(p->fd))
            eccl_socket_close(&p->fd);
        if (p->fd < 0) {
            res = eccl_socket_connect(&p->addr, &p->fd, deadline_ns, p->abort);
            if (res != ecclSuccess) {
                p->fd = -1;
                if (res == ecclInternalError)
                    return store_timed_out(p->name, op);
                goto retry;
            }
        }
        uint32_t id = ++p->next_id;
        ECCL_TRY(store_buf_finish(&p->req, type, id));
        res = eccl_socket_send_all(p->fd, p->req.data, p->req.len, deadline_ns, p->abort);
        if (res != ecclSuccess) {
            eccl_socket_close(&p->fd);
            if (res == ecclInternalError)
                return store_timed_out(p->name, op);
            goto retry;
        }
        struct store_proto_hdr h;
        uint8_t *body = NULL;
        res = recv_frame(p->fd, deadline_ns, p->abort, &h, &body, p->name);
        if (res == ecclSuccess && h.id != id && h.type != STORE_MSG_ERROR) {
            WARN("store tcp %s: %s: reply id %u for request %u", p->name, op, h.id, id);
            res = ecclRemoteError;
        }
        if (res == ecclSuccess && h.type == STORE_MSG_ERROR) {
            res = error_reply(p->name, op, body, h.len);
            eccl_free(body);
            if (h.id != id) /* the server dropped the connection over a frame */
                eccl_socket_close(&p->fd);
            return res;
        }
        if (res == ecclSuccess && h.type != (type | STORE_MSG_REPLY)) {
            WARN("store tcp %s: %s: reply of type 0x%x", p->name, op, h.type);
            res = ecclRemoteError;
        }
        if (res == ecclSuccess) {
            out->body = body;
            out->len = h.len;
            return ecclSuccess;
        }
        eccl_free(body);
        eccl_socket_close(&p->fd);
        if (res == ecclInternalError)
            return store_timed_out(p->name, op);
        if (atomic_load_explicit(p->abort, memory_order_acquire))
            goto retry;
        if (!idempotent) {
            WARN("store tcp %s: %s: connection lost after the request was sent; its outcome is "
                 "unknown",
                 p->name, op);
            return ecclRemoteError;
        }
retry:
        if (atomic_load_explicit(p->abort, memory_order_acquire)) {
            WARN("store tcp %s: %s: the store is closing", p->name, op);
            return ecclRemoteError;
        }
        if (!store_backoff(attempt, deadline_ns, p->abort))
            return store_timed_out(p->name, op);
    }
}

/* Checks a reply body was consumed exactly. */
static ecclResult_t reply_done(struct tcp_priv *p, const char *op, struct store_cur *c)
{
    if (!store_cur_done(c)) {
        WARN("store tcp %s: %s: malformed reply", p->name, op);
        return ecclRemoteError;
    }
    return ecclSuccess;
}

static ecclResult_t decode_kv(struct store_cur *c, struct store_kv *kv)
{
    size_t klen, vlen;
    const uint8_t *k = store_cur_bytes(c, &klen);
    const uint8_t *v = store_cur_bytes(c, &vlen);
    int64_t create = store_cur_i64(c), mod = store_cur_i64(c), ver = store_cur_i64(c),
            lease = store_cur_i64(c);
    if (c->bad)
        return ecclRemoteError;
    ECCL_TRY(store_kv_set(kv, k, klen, v, vlen));
    kv->create_rev = create;
    kv->mod_rev = mod;
    kv->version = ver;
    kv->lease = lease;
    return ecclSuccess;
}

static ecclResult_t decode_kvs(struct store_cur *c, uint32_t n, struct store_kv **kvs,
                               size_t *count)
{
    size_t cap = 0;
    if (n > c->left / 40) { /* each kv takes at least 40 bytes */
        c->bad = true;
        return ecclRemoteError;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct store_kv *kv = store_kvs_append(kvs, count, &cap);
        if (!kv)
            return ecclSystemError;
        ecclResult_t res = decode_kv(c, kv);
        if (res != ecclSuccess) {
            (*count)--;
            return res;
        }
    }
    return ecclSuccess;
}

static void free_kvs(struct store_kv *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_kv_fini(&kvs[i]);
    eccl_free(kvs);
}

/* ---- operations ---- */

static ecclResult_t tcp_open(struct store *s, const char *scheme, const char *hosts,
                             const char *query, uint64_t deadline_ns)
{
    (void)scheme;
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(!strchr(hosts, ','), "store tcp: one host only in tcp://%s", hosts);
    ECCL_ARG_CHECK(!query[0], "store tcp: no options are known (got '?%s')", query);
    struct tcp_priv *p;
    ECCL_CALLOC_GOTO(p, 1, "store_tcp", res, out);
    p->fd = -1;
    p->abort = &s->closing;
    snprintf(p->name, sizeof(p->name), "%s", hosts);
    store_buf_init(&p->req);
    pthread_mutex_init(&p->lock, NULL);
    ECCL_TRY_GOTO(eccl_sockaddr_parse(hosts, &p->addr), res, err_free);
    s->priv = p;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    struct tcp_reply r;
    res = tcp_call_locked(p, "ping", STORE_MSG_PING, true, deadline_ns, &r);
    pthread_mutex_unlock(&p->lock);
    if (res != ecclSuccess)
        goto err_free;
    eccl_free(r.body);
    return ecclSuccess;
err_free:
    s->priv = NULL;
    eccl_socket_close(&p->fd);
    store_buf_fini(&p->req);
    pthread_mutex_destroy(&p->lock);
    eccl_free(p);
out:
    return res;
}

static void tcp_close(struct store *s)
{
    struct tcp_priv *p = s->priv;
    if (!p)
        return;
    eccl_socket_close(&p->fd);
    store_buf_fini(&p->req);
    pthread_mutex_destroy(&p->lock);
    eccl_free(p);
    s->priv = NULL;
}

static ecclResult_t tcp_range(struct store *s, const void *key, size_t key_len, const void *end,
                              size_t end_len, size_t limit, uint64_t deadline_ns,
                              struct store_kvs *out)
{
    struct tcp_priv *p = s->priv;
    struct tcp_reply r;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_bytes(&p->req, key, key_len);
    store_buf_bytes(&p->req, end, end_len);
    store_buf_u32(&p->req, limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit);
    ecclResult_t res = tcp_call_locked(p, "range", STORE_MSG_RANGE, true, deadline_ns, &r);
    pthread_mutex_unlock(&p->lock);
    if (res != ecclSuccess)
        return res;
    struct store_cur c;
    store_cur_init(&c, r.body, r.len);
    int64_t rev = store_cur_i64(&c);
    bool more = store_cur_u8(&c);
    uint32_t n = store_cur_u32(&c);
    struct store_kv *kvs = NULL;
    size_t count = 0;
    res = decode_kvs(&c, n, &kvs, &count);
    if (res == ecclSuccess || res == ecclRemoteError)
        res = reply_done(p, "range", &c);
    eccl_free(r.body);
    if (res != ecclSuccess) {
        free_kvs(kvs, count);
        return res;
    }
    out->kvs = kvs;
    out->count = count;
    out->revision = rev;
    out->more = more;
    return ecclSuccess;
}

/* A call whose reply is one or two i64. */
static ecclResult_t tcp_call_i64(struct tcp_priv *p, const char *op, uint16_t type, bool idempotent,
                                 uint64_t deadline_ns, int64_t *a, int64_t *b)
{
    struct tcp_reply r;
    ecclResult_t res = tcp_call_locked(p, op, type, idempotent, deadline_ns, &r);
    pthread_mutex_unlock(&p->lock);
    if (res != ecclSuccess)
        return res;
    struct store_cur c;
    store_cur_init(&c, r.body, r.len);
    int64_t va = store_cur_i64(&c);
    int64_t vb = b ? store_cur_i64(&c) : 0;
    res = reply_done(p, op, &c);
    eccl_free(r.body);
    if (res == ecclSuccess) {
        *a = va;
        if (b)
            *b = vb;
    }
    return res;
}

static ecclResult_t tcp_put(struct store *s, const void *key, size_t key_len, const void *value,
                            size_t value_len, int64_t lease, uint64_t deadline_ns, int64_t *rev_out)
{
    struct tcp_priv *p = s->priv;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_bytes(&p->req, key, key_len);
    store_buf_bytes(&p->req, value, value_len);
    store_buf_i64(&p->req, lease);
    return tcp_call_i64(p, "put", STORE_MSG_PUT, false, deadline_ns, rev_out, NULL);
}

static ecclResult_t tcp_del(struct store *s, const void *key, size_t key_len, const void *end,
                            size_t end_len, uint64_t deadline_ns, int64_t *deleted_out,
                            int64_t *rev_out)
{
    struct tcp_priv *p = s->priv;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_bytes(&p->req, key, key_len);
    store_buf_bytes(&p->req, end, end_len);
    return tcp_call_i64(p, "delete", STORE_MSG_DELETE, false, deadline_ns, rev_out, deleted_out);
}

static void encode_ops(struct store_buf *b, const struct store_op *ops, size_t n)
{
    store_buf_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        store_buf_u8(b, (uint8_t)ops[i].type);
        store_buf_u8(b, ops[i].prefix);
        store_buf_bytes(b, ops[i].key, ops[i].key_len);
        store_buf_bytes(b, ops[i].type == STORE_OP_PUT ? ops[i].value : NULL,
                        ops[i].type == STORE_OP_PUT ? ops[i].value_len : 0);
        store_buf_i64(b, ops[i].type == STORE_OP_PUT ? ops[i].lease : 0);
    }
}

static ecclResult_t tcp_txn(struct store *s, const struct store_cmp *cmps, size_t ncmps,
                            const struct store_op *then_ops, size_t nthen,
                            const struct store_op *else_ops, size_t nelse, uint64_t deadline_ns,
                            struct store_txn_result *out)
{
    struct tcp_priv *p = s->priv;
    bool read_only = true;
    for (size_t i = 0; i < nthen; i++)
        read_only = read_only && then_ops[i].type == STORE_OP_GET;
    for (size_t i = 0; i < nelse; i++)
        read_only = read_only && else_ops[i].type == STORE_OP_GET;
    struct tcp_reply r;
    pthread_mutex_lock(&p->lock);
    struct store_buf *b = &p->req;
    store_buf_reset(b);
    store_buf_u32(b, (uint32_t)ncmps);
    for (size_t i = 0; i < ncmps; i++) {
        store_buf_bytes(b, cmps[i].key, cmps[i].key_len);
        store_buf_u8(b, (uint8_t)cmps[i].target);
        store_buf_u8(b, (uint8_t)cmps[i].result);
        store_buf_i64(b, cmps[i].number);
        store_buf_bytes(b, cmps[i].target == STORE_CMP_VALUE ? cmps[i].value : NULL,
                        cmps[i].target == STORE_CMP_VALUE ? cmps[i].value_len : 0);
    }
    encode_ops(b, then_ops, nthen);
    encode_ops(b, else_ops, nelse);
    ecclResult_t res = tcp_call_locked(p, "txn", STORE_MSG_TXN, read_only, deadline_ns, &r);
    pthread_mutex_unlock(&p->lock);
    if (res != ecclSuccess)
        return res;
    struct store_cur c;
    store_cur_init(&c, r.body, r.len);
    bool ok = store_cur_u8(&c);
    int64_t rev = store_cur_i64(&c);
    uint32_t n = store_cur_u32(&c);
    struct store_kv *kvs = NULL;
    size_t count = 0;
    res = decode_kvs(&c, n, &kvs, &count);
    if (res == ecclSuccess || res == ecclRemoteError)
        res = reply_done(p, "txn", &c);
    eccl_free(r.body);
    if (res != ecclSuccess) {
        free_kvs(kvs, count);
        return res;
    }
    out->succeeded = ok;
    out->revision = rev;
    out->kvs = kvs;
    out->count = count;
    return ecclSuccess;
}

static ecclResult_t tcp_lease_grant(struct store *s, int64_t ttl_s, uint64_t deadline_ns,
                                    int64_t *id_out)
{
    struct tcp_priv *p = s->priv;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_i64(&p->req, ttl_s);
    int64_t ttl;
    return tcp_call_i64(p, "lease grant", STORE_MSG_LEASE_GRANT, false, deadline_ns, id_out, &ttl);
}

static ecclResult_t tcp_lease_revoke(struct store *s, int64_t id, uint64_t deadline_ns)
{
    struct tcp_priv *p = s->priv;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_i64(&p->req, id);
    int64_t rev;
    /* Revoking twice is harmless but the second reports "not found": not retried. */
    return tcp_call_i64(p, "lease revoke", STORE_MSG_LEASE_REVOKE, false, deadline_ns, &rev, NULL);
}

static ecclResult_t tcp_lease_keepalive(struct store *s, int64_t id, uint64_t deadline_ns,
                                        int64_t *ttl_out)
{
    struct tcp_priv *p = s->priv;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_i64(&p->req, id);
    return tcp_call_i64(p, "lease keepalive", STORE_MSG_LEASE_KEEPALIVE, true, deadline_ns, ttl_out,
                        NULL);
}

static ecclResult_t tcp_lease_ttl(struct store *s, int64_t id, uint64_t deadline_ns,
                                  int64_t *ttl_out)
{
    struct tcp_priv *p = s->priv;
    pthread_mutex_lock(&p->lock);
    store_buf_reset(&p->req);
    store_buf_i64(&p->req, id);
    int64_t granted;
    return tcp_call_i64(p, "lease ttl", STORE_MSG_LEASE_TTL, true, deadline_ns, ttl_out, &granted);
}

/* ---- watches ---- */

/* Decodes a WATCH_EVENTS body and delivers it. */
static ecclResult_t watch_events(struct store_watch *w, const char *name, const uint8_t *body,
                                 uint32_t len)
{
    struct store_cur c;
    store_cur_init(&c, body, len);
    (void)store_cur_i64(&c);
    uint32_t n = store_cur_u32(&c);
    if (c.bad || n == 0 || n > len / 41) {
        WARN("store tcp %s: malformed watch events", name);
        return ecclRemoteError;
    }
    ecclResult_t res = ecclSuccess;
    struct store_event *ev = eccl_calloc(n, sizeof(*ev), "store_tcp_events");
    if (!ev)
        return ecclSystemError;
    uint32_t got = 0;
    int64_t prev_rev = 0;
    for (; got < n; got++) {
        uint8_t type = store_cur_u8(&c);
        if (c.bad || type > STORE_EVENT_DELETE) {
            res = ecclRemoteError;
            break;
        }
        ev[got].type = type;
        res = decode_kv(&c, &ev[got].kv);
        if (res != ecclSuccess)
            break;
        if (ev[got].kv.mod_rev < prev_rev) {
            store_kv_fini(&ev[got].kv);
            res = ecclRemoteError;
            break;
        }
        prev_rev = ev[got].kv.mod_rev;
    }
    if (res == ecclSuccess && !store_cur_done(&c))
        res = ecclRemoteError;
    if (res == ecclRemoteError)
        WARN("store tcp %s: malformed watch events", name);
    if (res == ecclSuccess)
        res = store_watch_deliver(w, ev, n);
    for (uint32_t i = 0; i < got; i++)
        store_kv_fini(&ev[i].kv);
    eccl_free(ev);
    return res;
}

static ecclResult_t unexpected(struct tcp_priv *p, uint16_t type)
{
    WARN("store tcp %s: unexpected or malformed frame of type 0x%x on a watch", p->name, type);
    return ecclRemoteError;
}

/* One watch connection: create from last_rev + 1, stream until failure. Returns ecclSuccess
 * when stopped, ecclInvalidUsage after a terminal cancel, another error to reconnect. */
static ecclResult_t watch_once(struct store_watch *w, struct tcp_priv *p, bool *created)
{
    int fd = -1;
    ecclResult_t res;
    struct store_buf b;
    uint8_t *body = NULL;
    store_buf_init(&b);
    ECCL_TRY_GOTO(eccl_socket_connect(&p->addr, &fd, eccl_deadline_ms(1000), &w->stop), res, out);
    int64_t last = store_watch_last_rev(w);
    store_buf_bytes(&b, w->key, w->key_len);
    store_buf_bytes(&b, w->end, w->end_len);
    store_buf_i64(&b, last >= 0 ? last + 1 : 0);
    ECCL_TRY_GOTO(store_buf_finish(&b, STORE_MSG_WATCH_CREATE, 1), res, out);
    ECCL_TRY_GOTO(
        eccl_socket_send_all(fd, b.data, b.len, eccl_deadline_ms(WATCH_SILENCE_MS), &w->stop), res,
        out);
    for (;;) {
        struct store_proto_hdr h;
        eccl_free(body);
        body = NULL;
        res = recv_frame(fd, eccl_deadline_ms(WATCH_SILENCE_MS), &w->stop, &h, &body, p->name);
        if (store_watch_stopping(w)) {
            res = ecclSuccess;
            goto out;
        }
        if (res != ecclSuccess)
            goto out;
        struct store_cur c;
        store_cur_init(&c, body, h.len);
        switch (h.type) {
        case STORE_MSG_WATCH_CREATE | STORE_MSG_REPLY: {
            int64_t rev = store_cur_i64(&c);
            if (!store_cur_done(&c)) {
                res = unexpected(p, h.type);
                goto out;
            }
            *created = true;
            if (!store_watch_created(w, rev)) {
                res = ecclInvalidUsage; /* failed for good: no reconnect */
                goto out;
            }
            break;
        }
        case STORE_MSG_WATCH_PROGRESS:
            break;
        case STORE_MSG_WATCH_EVENTS:
            ECCL_TRY_GOTO(watch_events(w, p->name, body, h.len), res, out);
            break;
        case STORE_MSG_WATCH_CANCELED: {
            int64_t compact = store_cur_i64(&c);
            size_t mlen;
            const uint8_t *msg = store_cur_bytes(&c, &mlen);
            char text[256];
            snprintf(text, sizeof(text),
                     "watch cancelled by the store at compact revision %lld: %.*s",
                     (long long)compact, (int)ECCL_MIN(mlen, 200), msg ? (const char *)msg : "");
            store_watch_fail(w, ecclInvalidUsage, text);
            res = ecclInvalidUsage;
            goto out;
        }
        case STORE_MSG_ERROR:
            res = error_reply(p->name, "watch", body, h.len);
            goto out;
        default:
            res = unexpected(p, h.type);
            goto out;
        }
    }
out:
    eccl_free(body);
    store_buf_fini(&b);
    eccl_socket_close(&fd);
    return res;
}

static void tcp_watch_run(struct store_watch *w)
{
    struct tcp_priv *p = w->s->priv;
    bool created = false;
    unsigned attempt = 0;
    while (!store_watch_stopping(w)) {
        int64_t before = store_watch_last_rev(w);
        ecclResult_t res = watch_once(w, p, &created);
        if (res == ecclSuccess || store_watch_stopping(w))
            return;
        if (res == ecclInvalidUsage || res == ecclInvalidArgument || res == ecclSystemError) {
            store_watch_fail(w, res, eccl_log_last_error());
            return;
        }
        if (store_watch_last_rev(w) != before)
            attempt = 0;
        INFO(ECCL_LOG_STORE,
             "store tcp %s: watch lost its connection; resuming after revision %lld", p->name,
             (long long)store_watch_last_rev(w));
        store_backoff(attempt++, ECCL_NO_DEADLINE, &w->stop);
    }
}

const struct store_backend store_backend_tcp = {
    .name = "tcp",
    .open = tcp_open,
    .close = tcp_close,
    .range = tcp_range,
    .put = tcp_put,
    .del = tcp_del,
    .txn = tcp_txn,
    .lease_grant = tcp_lease_grant,
    .lease_revoke = tcp_lease_revoke,
    .lease_keepalive = tcp_lease_keepalive,
    .lease_ttl = tcp_lease_ttl,
    .watch_run = tcp_watch_run,
};

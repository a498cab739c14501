/*
 * server.c - the embedded store: an in-memory key-value store with etcd's semantics (one
 * store-wide revision, per-key create/mod revisions and versions, transactions, leases with TTL
 * expiry, prefix watches replayed from a bounded history) served over the framed TCP protocol of
 * proto.h. It runs as threads inside any process (store_server_start) or as `eccl-store serve`.
 *
 * Threads: one accept thread, one lease reaper, one thread per connection. A connection carries
 * either requests (one reply per request, in order) or, after WATCH_CREATE, one watch stream.
 * All state is protected by srv->lock. A commit wakes only the watch streams whose range one of
 * its events falls in (each stream waits on a condition of its own), not every stream.
 * A frame that breaks the protocol gets a WARN and an ERROR frame, and its connection is closed;
 * the server goes on serving the others.
 */
#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "store/proto.h"
#include "store/store.h"

ECCL_PARAM_INT(store_history, "ECCL_STORE_HISTORY", 200000)
ECCL_PARAM_INT(store_max_conns, "ECCL_STORE_MAX_CONNS", 1024)

/* A body must follow its header within this time: a stalled peer cannot hold a thread forever. */
#define SERVER_BODY_TIMEOUT_MS 10000
/* A reply or a watch frame must be taken by the peer within this time. */
#define SERVER_SEND_TIMEOUT_MS 10000
/* An idle watch stream gets a PROGRESS frame this often, so that clients can tell a dead server
 * (no frame for several periods) from a quiet one. */
#define SERVER_PROGRESS_MS 1000
/* A watch stream wakes at least this often without events (progress frames, a peer that left,
 * the server stopping). */
#define SERVER_WATCH_SLICE_MS 250
/* Events per WATCH_EVENTS frame, at most (whole revisions are never split unless one revision
 * alone exceeds it). */
#define SERVER_WATCH_BATCH 1024
#define SERVER_MIN_TTL_S   1

struct ent {
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
    int64_t create, mod, ver, lease;
};

struct hev {
    int64_t rev;
    uint8_t type; /* STORE_EVENT_* */
    struct ent e; /* for a delete: key and mod only */
};

struct lease {
    int64_t id;
    int64_t ttl;
    uint64_t expire_ns;
};

struct conn {
    struct store_server *srv;
    int fd;
    pthread_t thread;
    _Atomic bool done;
    struct conn *next; /* protected by conns_lock */
    char peer[64];
};

/* A watch stream waiting for events of its range (conn_watch), in srv->watchers. */
struct swatch {
    struct swatch *next, *prev; /* protected by srv->lock */
    const uint8_t *key, *end;
    size_t klen, elen;
    pthread_cond_t cond; /* signalled by a commit with an event in range, and at stop */
};

struct store_server {
    pthread_mutex_t lock;
    struct swatch *watchers; /* protected by lock */
    int64_t rev;             /* protected by lock */
    int64_t compact_rev;     /* events at or below it may be gone from the history */
    struct ent *ents;        /* sorted by key, protected by lock */
    size_t nents, ents_cap;
    struct lease *leases; /* protected by lock */
    size_t nleases, leases_cap;
    int64_t next_lease;
    struct hev *hist; /* ring, protected by lock */
    size_t hist_cap, hist_head, hist_len;

    int listen_fd;
    pthread_t accept_thread, reaper_thread;
    _Atomic uint32_t stop;
    pthread_mutex_t conns_lock;
    struct conn *conns; /* protected by conns_lock */
    int nconns;
};

/* ---- state: keys ---- */

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Index of the first entry with key >= (key, klen). */
static size_t ent_lower(const struct store_server *srv, const void *key, size_t klen)
{
    size_t lo = 0, hi = srv->nents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(srv->ents[mid].key, srv->ents[mid].klen, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct ent *ent_find(struct store_server *srv, const void *key, size_t klen)
{
    size_t i = ent_lower(srv, key, klen);
    if (i < srv->nents && key_cmp(srv->ents[i].key, srv->ents[i].klen, key, klen) == 0)
        return &srv->ents[i];
    return NULL;
}

/* Whether key lies in [start, end) with etcd's conventions for end ("" one key, "\0" all). */
static bool in_range(const void *key, size_t klen, const void *start, size_t slen, const void *end,
                     size_t elen)
{
    if (elen == 0)
        return key_cmp(key, klen, start, slen) == 0;
    if (key_cmp(key, klen, start, slen) < 0)
        return false;
    if (elen == 1 && ((const uint8_t *)end)[0] == 0)
        return true;
    return key_cmp(key, klen, end, elen) < 0;
}

static struct lease *lease_find(struct store_server *srv, int64_t id)
{
    for (size_t i = 0; i < srv->nleases; i++)
        if (srv->leases[i].id == id)
            return &srv->leases[i];
    return NULL;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = eccl_calloc(n + 1, 1, "store_srv_kv");
    if (d && n)
        memcpy(d, p, n);
    return d;
}

/* Appends an event to the history ring, evicting the oldest when full (the evicted revision
 * becomes compacted). */
static ecclResult_t hist_push(struct store_server *srv, int64_t rev, uint8_t type,
                              const struct ent *e)
{
    struct hev h = {.rev = rev, .type = type};
    h.e.key = dup_bytes(e->key, e->klen);
    h.e.klen = e->klen;
    if (!h.e.key)
        return ecclSystemError;
    if (type == STORE_EVENT_PUT) {
        h.e.val = dup_bytes(e->val, e->vlen);
        if (!h.e.val) {
            eccl_free(h.e.key);
            return ecclSystemError;
        }
        h.e.vlen = e->vlen;
        h.e.create = e->create;
        h.e.ver = e->ver;
        h.e.lease = e->lease;
    }
    h.e.mod = rev;
    if (srv->hist_len == srv->hist_cap) {
        struct hev *old = &srv->hist[srv->hist_head];
        srv->compact_rev = old->rev;
        eccl_free(old->e.key);
        eccl_free(old->e.val);
        srv->hist_head = (srv->hist_head + 1) % srv->hist_cap;
        srv->hist_len--;
    }
    srv->hist[(srv->hist_head + srv->hist_len) % srv->hist_cap] = h;
    srv->hist_len++;
    return ecclSuccess;
}

static struct hev *hist_at(struct store_server *srv, size_t i)
{
    return &srv->hist[(srv->hist_head + i) % srv->hist_cap];
}

/* Index of the first history event with rev >= rev. */
static size_t hist_lower(struct store_server *srv, int64_t rev)
{
    size_t lo = 0, hi = srv->hist_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hist_at(srv, mid)->rev < rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Makes revision `rev` (whose events are the newest in the history) current and wakes the watch
 * streams it concerns (srv->lock held). */
static void commit_locked(struct store_server *srv, int64_t rev)
{
    srv->rev = rev;
    /* The revision's events, at the end of the history (all of them, unless the history is too
     * short to hold one revision: then the streams behind learn they were compacted). */
    size_t first = srv->hist_len;
    while (first > 0 && hist_at(srv, first - 1)->rev == rev)
        first--;
    bool all = first == srv->hist_len || srv->compact_rev >= rev;
    for (struct swatch *w = srv->watchers; w; w = w->next) {
        bool hit = all;
        for (size_t i = first; i < srv->hist_len && !hit; i++) {
            const struct hev *h = hist_at(srv, i);
            hit = in_range(h->e.key, h->e.klen, w->key, w->klen, w->end, w->elen);
        }
        if (hit)
            pthread_cond_signal(&w->cond);
    }
}

static ecclResult_t do_put(struct store_server *srv, int64_t rev, const void *key, size_t klen,
                           const void *val, size_t vlen, int64_t lease)
{
    size_t i = ent_lower(srv, key, klen);
    bool exists = i < srv->nents && key_cmp(srv->ents[i].key, srv->ents[i].klen, key, klen) == 0;
    uint8_t *v = dup_bytes(val, vlen);
    if (!v)
        return ecclSystemError;
    struct ent *e;
    if (exists) {
        e = &srv->ents[i];
        eccl_free(e->val);
        e->ver++;
    } else {
        uint8_t *k = dup_bytes(key, klen);
        if (!k) {
            eccl_free(v);
            return ecclSystemError;
        }
        if (srv->nents == srv->ents_cap) {
            size_t ncap = srv->ents_cap ? srv->ents_cap * 2 : 64;
            struct ent *n = eccl_realloc(srv->ents, ncap, sizeof(*n), "store_srv_ents");
            if (!n) {
                eccl_free(v);
                eccl_free(k);
                return ecclSystemError;
            }
            srv->ents = n;
            srv->ents_cap = ncap;
        }
        memmove(&srv->ents[i + 1], &srv->ents[i], (srv->nents - i) * sizeof(*srv->ents));
        srv->nents++;
        e = &srv->ents[i];
        memset(e, 0, sizeof(*e));
        e->key = k;
        e->klen = klen;
        e->create = rev;
        e->ver = 1;
    }
    e->val = v;
    e->vlen = vlen;
    e->mod = rev;
    e->lease = lease;
    return hist_push(srv, rev, STORE_EVENT_PUT, e);
}

static ecclResult_t do_delete_at(struct store_server *srv, int64_t rev, size_t i)
{
    struct ent e = srv->ents[i];
    ecclResult_t res = hist_push(srv, rev, STORE_EVENT_DELETE, &e);
    eccl_free(e.key);
    eccl_free(e.val);
    memmove(&srv->ents[i], &srv->ents[i + 1], (srv->nents - i - 1) * sizeof(*srv->ents));
    srv->nents--;
    return res;
}

static ecclResult_t do_delete(struct store_server *srv, int64_t rev, const void *key, size_t klen,
                              const void *end, size_t elen, int64_t *deleted)
{
    size_t i = ent_lower(srv, key, klen);
    while (i < srv->nents && in_range(srv->ents[i].key, srv->ents[i].klen, key, klen, end, elen)) {
        ECCL_TRY(do_delete_at(srv, rev, i));
        (*deleted)++;
        if (elen == 0)
            break;
    }
    return ecclSuccess;
}

/* Deletes the lease and every key attached to it, at one new revision if any key goes. */
static ecclResult_t lease_revoke_locked(struct store_server *srv, int64_t id)
{
    struct lease *l = lease_find(srv, id);
    if (!l)
        return ecclInvalidUsage;
    *l = srv->leases[--srv->nleases];
    int64_t rev = srv->rev + 1;
    bool any = false;
    ecclResult_t res = ecclSuccess;
    for (size_t i = 0; i < srv->nents;) {
        if (srv->ents[i].lease == id) {
            ecclResult_t r = do_delete_at(srv, rev, i);
            if (r != ecclSuccess && res == ecclSuccess)
                res = r;
            any = true;
        } else {
            i++;
        }
    }
    if (any)
        commit_locked(srv, rev);
    return res;
}

/* ---- request execution (under srv->lock) ---- */

struct reply {
    struct store_buf *out;
    ecclResult_t code; /* != success: an ERROR frame with msg */
    char msg[200];
    bool bad_frame; /* the request itself was malformed: drop the connection */
};

static void reply_err(struct reply *r, ecclResult_t code, const char *msg)
{
    r->code = code;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static void put_kv(struct store_buf *b, const struct ent *e)
{
    store_buf_bytes(b, e->key, e->klen);
    store_buf_bytes(b, e->val, e->vlen);
    store_buf_i64(b, e->create);
    store_buf_i64(b, e->mod);
    store_buf_i64(b, e->ver);
    store_buf_i64(b, e->lease);
}

/* Writes count + kvs of [key, end) (at most limit, 0: all); returns whether more remained. */
static void range_locked(struct store_server *srv, struct store_buf *b, const void *key,
                         size_t klen, const void *end, size_t elen, uint32_t limit, bool with_more)
{
    size_t i = ent_lower(srv, key, klen);
    size_t n = 0, j = i;
    while (j < srv->nents && in_range(srv->ents[j].key, srv->ents[j].klen, key, klen, end, elen)) {
        if (limit && n == limit)
            break;
        n++;
        j++;
        if (elen == 0)
            break;
    }
    bool more = j < srv->nents && elen != 0 &&
                in_range(srv->ents[j].key, srv->ents[j].klen, key, klen, end, elen);
    if (with_more)
        store_buf_u8(b, more);
    store_buf_u32(b, (uint32_t)n);
    for (size_t k = i; k < i + n; k++)
        put_kv(b, &srv->ents[k]);
}

struct txn_cmp {
    const uint8_t *key, *val;
    size_t klen, vlen;
    uint8_t target, result;
    int64_t num;
};

struct txn_op {
    uint8_t type, prefix;
    const uint8_t *key, *val;
    size_t klen, vlen;
    int64_t lease;
};

static bool cmp_holds(struct store_server *srv, const struct txn_cmp *c)
{
    struct ent *e = ent_find(srv, c->key, c->klen);
    int r;
    if (c->target == STORE_CMP_VALUE) {
        if (!e)
            return false; /* etcd: a value compare on a missing key always fails */
        r = key_cmp(e->val, e->vlen, c->val, c->vlen);
    } else {
        int64_t v = 0;
        if (e)
            v = c->target == STORE_CMP_VERSION  ? e->ver
                : c->target == STORE_CMP_CREATE ? e->create
                                                : e->mod;
        r = v < c->num ? -1 : v > c->num;
    }
    switch (c->result) {
    case STORE_CMP_EQUAL:
        return r == 0;
    case STORE_CMP_GREATER:
        return r > 0;
    case STORE_CMP_LESS:
        return r < 0;
    default:
        return r != 0;
    }
}

static void op_range_end(const struct txn_op *op, char *end, size_t *elen)
{
    if (!op->prefix) {
        *elen = 0;
        return;
    }
    const uint8_t *p = op->key;
    size_t n = op->klen;
    while (n > 0 && p[n - 1] == 0xff)
        n--;
    if (n == 0) {
        end[0] = 0;
        *elen = 1;
        return;
    }
    memcpy(end, p, n);
    end[n - 1] = (char)(p[n - 1] + 1);
    *elen = n;
}

static ecclResult_t decode_ops(struct store_cur *c, struct txn_op *ops, uint32_t *n)
{
    *n = store_cur_u32(c);
    if (c->bad || *n > STORE_TXN_MAX_OPS)
        return ecclInvalidArgument;
    for (uint32_t i = 0; i < *n; i++) {
        ops[i].type = store_cur_u8(c);
        ops[i].prefix = store_cur_u8(c);
        ops[i].key = store_cur_bytes(c, &ops[i].klen);
        ops[i].val = store_cur_bytes(c, &ops[i].vlen);
        ops[i].lease = store_cur_i64(c);
        if (c->bad || ops[i].type > STORE_OP_GET || ops[i].prefix > 1)
            return ecclInvalidArgument;
    }
    return ecclSuccess;
}

/* Checks a branch: leases exist, no two writes touch the same key. */
static bool ops_valid(struct store_server *srv, const struct txn_op *ops, uint32_t n,
                      struct reply *r)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ops[i].type != STORE_OP_GET && ops[i].klen == 0 && !ops[i].prefix) {
            reply_err(r, ecclInvalidArgument, "key is not provided");
            return false;
        }
        if (ops[i].type == STORE_OP_PUT && ops[i].lease && !lease_find(srv, ops[i].lease)) {
            reply_err(r, ecclInvalidUsage, "requested lease not found");
            return false;
        }
        if (ops[i].type == STORE_OP_GET)
            continue;
        for (uint32_t j = 0; j < i; j++) {
            if (ops[j].type == STORE_OP_GET)
                continue;
            /* Two writes collide if either's range holds the other's key. */
            bool hit;
            if (!ops[i].prefix && !ops[j].prefix) {
                hit = key_cmp(ops[i].key, ops[i].klen, ops[j].key, ops[j].klen) == 0;
            } else {
                const struct txn_op *p = ops[i].prefix ? &ops[i] : &ops[j];
                const struct txn_op *o = ops[i].prefix ? &ops[j] : &ops[i];
                hit = o->klen >= p->klen && memcmp(o->key, p->key, p->klen) == 0;
                if (!hit && o->prefix)
                    hit = p->klen >= o->klen && memcmp(p->key, o->key, o->klen) == 0;
            }
            if (hit) {
                reply_err(r, ecclInvalidUsage, "duplicate key given in txn request");
                return false;
            }
        }
    }
    return true;
}

static ecclResult_t exec_txn(struct store_server *srv, struct store_cur *c, struct reply *r)
{
    ecclResult_t res = ecclSuccess;
    struct txn_cmp *cmps = NULL;
    struct txn_op *then_ops = NULL, *else_ops = NULL;
    char *end = NULL;
    ECCL_CALLOC_GOTO(cmps, STORE_TXN_MAX_OPS, "store_srv_txn", res, out);
    ECCL_CALLOC_GOTO(then_ops, STORE_TXN_MAX_OPS, "store_srv_txn", res, out);
    ECCL_CALLOC_GOTO(else_ops, STORE_TXN_MAX_OPS, "store_srv_txn", res, out);
    uint32_t ncmps = store_cur_u32(c);
    if (c->bad || ncmps > STORE_TXN_MAX_OPS)
        goto bad;
    for (uint32_t i = 0; i < ncmps; i++) {
        cmps[i].key = store_cur_bytes(c, &cmps[i].klen);
        cmps[i].target = store_cur_u8(c);
        cmps[i].result = store_cur_u8(c);
        cmps[i].num = store_cur_i64(c);
        cmps[i].val = store_cur_bytes(c, &cmps[i].vlen);
        if (c->bad || cmps[i].target > STORE_CMP_VALUE || cmps[i].result > STORE_CMP_NOT_EQUAL)
            goto bad;
    }
    uint32_t nthen, nelse;
    if (decode_ops(c, then_ops, &nthen) != ecclSuccess ||
        decode_ops(c, else_ops, &nelse) != ecclSuccess || !store_cur_done(c))
        goto bad;
    if (!ops_valid(srv, then_ops, nthen, r) || !ops_valid(srv, else_ops, nelse, r))
        goto out;

    bool ok = true;
    for (uint32_t i = 0; i < ncmps && ok; i++)
        ok = cmp_holds(srv, &cmps[i]);
    const struct txn_op *ops = ok ? then_ops : else_ops;
    uint32_t n = ok ? nthen : nelse;

    ECCL_CALLOC_GOTO(end, 64 * 1024 + 1, "store_srv_txn", res, out);
    int64_t rev = srv->rev + 1;
    bool wrote = false;
    struct store_buf *b = r->out;
    /* Ops run in order, each seeing the earlier ones. The reply puts the count of kvs read
     * before them, so the reads are encoded into a second buffer and appended. */
    struct store_buf reads;
    store_buf_init(&reads);
    uint32_t nreads = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct txn_op *op = &ops[i];
        size_t elen;
        if (op->prefix && op->klen > 64 * 1024) {
            reply_err(r, ecclInvalidArgument, "key too long");
            store_buf_fini(&reads);
            goto out;
        }
        op_range_end(op, end, &elen);
        if (op->type == STORE_OP_PUT) {
            res = do_put(srv, rev, op->key, op->klen, op->val, op->vlen, op->lease);
            wrote = true;
        } else if (op->type == STORE_OP_DELETE) {
            int64_t deleted = 0;
            res = do_delete(srv, rev, op->key, op->klen, end, elen, &deleted);
            wrote = wrote || deleted > 0;
        } else {
            size_t j = ent_lower(srv, op->key, op->klen);
            while (j < srv->nents &&
                   in_range(srv->ents[j].key, srv->ents[j].klen, op->key, op->klen, end, elen)) {
                put_kv(&reads, &srv->ents[j]);
                nreads++;
                j++;
                if (elen == 0)
                    break;
            }
        }
        if (res != ecclSuccess)
            break;
    }
    if (wrote)
        commit_locked(srv, rev);
    if (res != ecclSuccess) {
        store_buf_fini(&reads);
        reply_err(r, ecclSystemError, "out of memory in the store server");
        res = ecclSuccess;
        goto out;
    }
    store_buf_u8(b, ok);
    store_buf_i64(b, srv->rev);
    store_buf_u32(b, nreads);
    if (reads.data)
        store_buf_raw(b, reads.data + STORE_PROTO_HDR_SIZE, store_buf_body_len(&reads));
    if (reads.too_big || reads.failed)
        b->too_big = true;
    store_buf_fini(&reads);
    goto out;
bad:
    r->bad_frame = true;
out:
    eccl_free(cmps);
    eccl_free(then_ops);
    eccl_free(else_ops);
    eccl_free(end);
    return res;
}

/* Executes one request (not WATCH_CREATE) and encodes its reply body into r->out. */
static void exec_request(struct store_server *srv, uint16_t type, struct store_cur *c,
                         struct reply *r)
{
    struct store_buf *b = r->out;
    pthread_mutex_lock(&srv->lock);
    switch (type) {
    case STORE_MSG_PING:
        if (!store_cur_done(c))
            goto bad;
        store_buf_i64(b, srv->rev);
        break;
    case STORE_MSG_RANGE: {
        size_t klen, elen;
        const uint8_t *key = store_cur_bytes(c, &klen);
        const uint8_t *end = store_cur_bytes(c, &elen);
        uint32_t limit = store_cur_u32(c);
        if (!store_cur_done(c))
            goto bad;
        store_buf_i64(b, srv->rev);
        range_locked(srv, b, key, klen, end, elen, limit, true);
        break;
    }
    case STORE_MSG_PUT: {
        size_t klen, vlen;
        const uint8_t *key = store_cur_bytes(c, &klen);
        const uint8_t *val = store_cur_bytes(c, &vlen);
        int64_t lease = store_cur_i64(c);
        if (!store_cur_done(c))
            goto bad;
        if (klen == 0) {
            reply_err(r, ecclInvalidArgument, "key is not provided");
            break;
        }
        if (lease && !lease_find(srv, lease)) {
            reply_err(r, ecclInvalidUsage, "requested lease not found");
            break;
        }
        if (do_put(srv, srv->rev + 1, key, klen, val, vlen, lease) != ecclSuccess) {
            reply_err(r, ecclSystemError, "out of memory in the store server");
            break;
        }
        commit_locked(srv, srv->rev + 1);
        store_buf_i64(b, srv->rev);
        break;
    }
    case STORE_MSG_DELETE: {
        size_t klen, elen;
        const uint8_t *key = store_cur_bytes(c, &klen);
        const uint8_t *end = store_cur_bytes(c, &elen);
        if (!store_cur_done(c))
            goto bad;
        int64_t deleted = 0;
        ecclResult_t res = do_delete(srv, srv->rev + 1, key, klen, end, elen, &deleted);
        if (deleted)
            commit_locked(srv, srv->rev + 1);
        if (res != ecclSuccess) {
            reply_err(r, ecclSystemError, "out of memory in the store server");
            break;
        }
        store_buf_i64(b, srv->rev);
        store_buf_i64(b, deleted);
        break;
    }
    case STORE_MSG_TXN:
        if (exec_txn(srv, c, r) != ecclSuccess)
            reply_err(r, ecclSystemError, "out of memory in the store server");
        break;
    case STORE_MSG_LEASE_GRANT: {
        int64_t ttl = store_cur_i64(c);
        if (!store_cur_done(c))
            goto bad;
        if (ttl <= 0 || ttl > 1000000000LL) {
            reply_err(r, ecclInvalidArgument, "bad lease TTL");
            break;
        }
        if (ttl < SERVER_MIN_TTL_S)
            ttl = SERVER_MIN_TTL_S;
        if (srv->nleases == srv->leases_cap) {
            size_t ncap = srv->leases_cap ? srv->leases_cap * 2 : 16;
            struct lease *n = eccl_realloc(srv->leases, ncap, sizeof(*n), "store_srv_leases");
            if (!n) {
                reply_err(r, ecclSystemError, "out of memory in the store server");
                break;
            }
            srv->leases = n;
            srv->leases_cap = ncap;
        }
        int64_t id = srv->next_lease++;
        srv->leases[srv->nleases++] = (struct lease){
            .id = id, .ttl = ttl, .expire_ns = eccl_now_ns() + (uint64_t)ttl * ECCL_NS_PER_S};
        store_buf_i64(b, id);
        store_buf_i64(b, ttl);
        break;
    }
    case STORE_MSG_LEASE_REVOKE: {
        int64_t id = store_cur_i64(c);
        if (!store_cur_done(c))
            goto bad;
        ecclResult_t res = lease_revoke_locked(srv, id);
        if (res == ecclInvalidUsage) {
            reply_err(r, ecclInvalidUsage, "requested lease not found");
            break;
        }
        if (res != ecclSuccess) {
            reply_err(r, ecclSystemError, "out of memory in the store server");
            break;
        }
        store_buf_i64(b, srv->rev);
        break;
    }
    case STORE_MSG_LEASE_KEEPALIVE:
    case STORE_MSG_LEASE_TTL: {
        int64_t id = store_cur_i64(c);
        if (!store_cur_done(c))
            goto bad;
        struct lease *l = lease_find(srv, id);
        uint64_t now = eccl_now_ns();
        if (type == STORE_MSG_LEASE_KEEPALIVE) {
            if (l)
                l->expire_ns = now + (uint64_t)l->ttl * ECCL_NS_PER_S;
            store_buf_i64(b, l ? l->ttl : 0);
        } else {
            int64_t left = -1;
            if (l)
                left = l->expire_ns > now ? (int64_t)((l->expire_ns - now) / ECCL_NS_PER_S) : 0;
            store_buf_i64(b, left);
            store_buf_i64(b, l ? l->ttl : 0);
        }
        break;
    }
    default:
        goto bad;
    }
    pthread_mutex_unlock(&srv->lock);
    return;
bad:
    r->bad_frame = true;
    pthread_mutex_unlock(&srv->lock);
}

/* ---- lease reaper ---- */

static void *reaper_main(void *arg)
{
    struct store_server *srv = arg;
    while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
        eccl_sleep_us(10000);
        uint64_t now = eccl_now_ns();
        pthread_mutex_lock(&srv->lock);
        for (size_t i = 0; i < srv->nleases;) {
            if (srv->leases[i].expire_ns <= now) {
                int64_t id = srv->leases[i].id;
                TRACE(ECCL_LOG_STORE, "store server: lease %lld expired", (long long)id);
                if (lease_revoke_locked(srv, id) != ecclSuccess)
                    WARN("store server: out of memory while expiring lease %lld", (long long)id);
                i = 0; /* the array changed */
            } else {
                i++;
            }
        }
        pthread_mutex_unlock(&srv->lock);
    }
    return NULL;
}

/* ---- connections ---- */

static void conn_bad_frame(struct conn *c, const char *why)
{
    WARN("store server: bad frame from %s: %s; closing that connection", c->peer, why);
    struct store_buf b;
    store_buf_init(&b);
    store_buf_u32(&b, ecclInvalidArgument);
    store_buf_bytes(&b, why, strlen(why));
    if (store_buf_finish(&b, STORE_MSG_ERROR, 0) == ecclSuccess)
        (void)eccl_socket_send_all_to_client(c->fd, b.data, b.len, eccl_deadline_ms(100),
                                             &c->srv->stop);
    store_buf_fini(&b);
}

static ecclResult_t conn_send(struct conn *c, struct store_buf *b, uint16_t type, uint32_t id)
{
    ECCL_TRY(store_buf_finish(b, type, id));
    /* A client may leave with a reply or a watch event on its way (a worker that exits with a
     * watch open): the connection is dropped, without a warning. */
    return eccl_socket_send_all_to_client(c->fd, b->data, b->len,
                                          eccl_deadline_ms(SERVER_SEND_TIMEOUT_MS), &c->srv->stop);
}

/* True when the peer closed (or sent anything: a watch stream takes no more requests). */
static bool peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

static void timespec_at(uint64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / ECCL_NS_PER_S);
    ts->tv_nsec = (long)(ns % ECCL_NS_PER_S);
}

/* Streams the events of [key, end) from start_rev until the peer goes or the server stops. */
static void conn_watch(struct conn *c, uint32_t id, const uint8_t *key, size_t klen,
                       const uint8_t *end, size_t elen, int64_t start_rev)
{
    struct store_server *srv = c->srv;
    struct store_buf b;
    store_buf_init(&b);
    pthread_mutex_lock(&srv->lock);
    int64_t next = start_rev > 0 ? start_rev : srv->rev + 1;
    bool compacted = start_rev > 0 && start_rev <= srv->compact_rev;
    store_buf_i64(&b, compacted ? srv->compact_rev : srv->rev);
    if (compacted)
        store_buf_bytes(&b, "required revision has been compacted", 36);
    pthread_mutex_unlock(&srv->lock);
    if (conn_send(c, &b,
                  compacted ? STORE_MSG_WATCH_CANCELED : (STORE_MSG_WATCH_CREATE | STORE_MSG_REPLY),
                  id) != ecclSuccess ||
        compacted)
        goto out;

    struct swatch sw = {.key = key, .klen = klen, .end = end, .elen = elen};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sw.cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&srv->lock);
    sw.next = srv->watchers;
    if (sw.next)
        sw.next->prev = &sw;
    srv->watchers = &sw;
    pthread_mutex_unlock(&srv->lock);

    uint64_t last_sent = eccl_now_ns();
    while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
        store_buf_reset(&b);
        uint16_t type = 0;
        pthread_mutex_lock(&srv->lock);
        /* Events of the range, or a progress frame every SERVER_PROGRESS_MS; the slice also
         * bounds how long a stream whose peer left lingers. */
        if (srv->rev < next && !atomic_load_explicit(&srv->stop, memory_order_acquire)) {
            struct timespec ts;
            timespec_at(eccl_now_ns() + SERVER_WATCH_SLICE_MS * ECCL_NS_PER_MS, &ts);
            pthread_cond_timedwait(&sw.cond, &srv->lock, &ts);
        }
        if (next <= srv->compact_rev) {
            store_buf_i64(&b, srv->compact_rev);
            store_buf_bytes(&b, "watcher fell behind the history (compacted)", 43);
            type = STORE_MSG_WATCH_CANCELED;
        } else if (srv->rev >= next) {
            size_t i = hist_lower(srv, next);
            /* Count the matching events of whole revisions, up to the batch size. */
            uint32_t n = 0;
            size_t j = i;
            int64_t upto = next - 1;
            while (j < srv->hist_len) {
                int64_t rev = hist_at(srv, j)->rev;
                size_t k = j;
                uint32_t m = 0;
                while (k < srv->hist_len && hist_at(srv, k)->rev == rev) {
                    struct hev *h = hist_at(srv, k);
                    m += in_range(h->e.key, h->e.klen, key, klen, end, elen);
                    k++;
                }
                if (n > 0 && n + m > SERVER_WATCH_BATCH)
                    break;
                n += m;
                upto = rev;
                j = k;
            }
            store_buf_i64(&b, upto);
            store_buf_u32(&b, n);
            for (size_t k = i; k < j; k++) {
                struct hev *h = hist_at(srv, k);
                if (!in_range(h->e.key, h->e.klen, key, klen, end, elen))
                    continue;
                store_buf_u8(&b, h->type);
                put_kv(&b, &h->e);
            }
            next = upto + 1;
            if (n > 0)
                type = STORE_MSG_WATCH_EVENTS;
        }
        if (!type && eccl_now_ns() - last_sent >= SERVER_PROGRESS_MS * ECCL_NS_PER_MS) {
            store_buf_reset(&b);
            store_buf_i64(&b, next - 1);
            type = STORE_MSG_WATCH_PROGRESS;
        }
        pthread_mutex_unlock(&srv->lock);
        if (type) {
            if (conn_send(c, &b, type, id) != ecclSuccess || type == STORE_MSG_WATCH_CANCELED)
                break;
            last_sent = eccl_now_ns();
        }
        if (peer_gone(c->fd))
            break;
    }
    pthread_mutex_lock(&srv->lock);
    if (sw.prev)
        sw.prev->next = sw.next;
    else
        srv->watchers = sw.next;
    if (sw.next)
        sw.next->prev = sw.prev;
    pthread_mutex_unlock(&srv->lock);
    pthread_cond_destroy(&sw.cond);
out:
    store_buf_fini(&b);
}

/* Waits for the next request; false (quietly) when the peer closed or the server stops. */
static bool wait_request(struct conn *c)
{
    for (;;) {
        if (atomic_load_explicit(&c->srv->stop, memory_order_acquire))
            return false;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int rc = poll(&p, 1, 100);
        if (rc < 0 && errno != EINTR)
            return false;
        if (rc <= 0)
            continue;
        uint8_t byte;
        ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK);
        if (n > 0)
            return true;
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return false;
    }
}

/* Runs one request (not WATCH_CREATE): the reply body in `out`, its type in *type_out. Returns
 * NULL, or why the frame is malformed (then nothing is to be sent but an ERROR and a close). */
static const char *run_request(struct store_server *srv, uint16_t type, const uint8_t *body,
                               uint32_t len, struct store_buf *out, uint16_t *type_out)
{
    struct store_cur cur;
    store_cur_init(&cur, body, len);
    store_buf_reset(out);
    struct reply r = {.out = out};
    exec_request(srv, type, &cur, &r);
    if (r.bad_frame)
        return "malformed request body or unknown type";
    *type_out = (uint16_t)(type | STORE_MSG_REPLY);
    if (r.code != ecclSuccess || out->too_big) {
        if (out->too_big && r.code == ecclSuccess)
            reply_err(&r, ecclInvalidUsage, "reply above the frame limit (use a limit)");
        store_buf_reset(out);
        store_buf_u32(out, (uint32_t)r.code);
        store_buf_bytes(out, r.msg, strlen(r.msg));
        *type_out = STORE_MSG_ERROR;
    }
    return NULL;
}

ecclResult_t store_server_exec_frame(struct store_server *srv, const void *frame, size_t len,
                                     struct store_buf *reply)
{
    if (len < STORE_PROTO_HDR_SIZE)
        return ecclInvalidArgument;
    struct store_proto_hdr h;
    store_proto_hdr_decode(frame, &h);
    if (store_proto_hdr_check(&h) || (h.type & STORE_MSG_REPLY) ||
        h.len != len - STORE_PROTO_HDR_SIZE)
        return ecclInvalidArgument;
    const uint8_t *body = (const uint8_t *)frame + STORE_PROTO_HDR_SIZE;
    if (h.type == STORE_MSG_WATCH_CREATE) {
        /* Only the request's shape: a stream needs a connection. */
        struct store_cur cur;
        size_t klen, elen;
        store_cur_init(&cur, body, h.len);
        (void)store_cur_bytes(&cur, &klen);
        (void)store_cur_bytes(&cur, &elen);
        int64_t start = store_cur_i64(&cur);
        return store_cur_done(&cur) && start >= 0 ? ecclSuccess : ecclInvalidArgument;
    }
    uint16_t type;
    if (run_request(srv, h.type, body, h.len, reply, &type))
        return ecclInvalidArgument;
    return store_buf_finish(reply, type, h.id);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct store_server *srv = c->srv;
    uint8_t *body = NULL;
    struct store_buf out;
    store_buf_init(&out);
    while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
        uint8_t raw[STORE_PROTO_HDR_SIZE];
        if (!wait_request(c))
            break;
        if (eccl_socket_recv_all(c->fd, raw, sizeof(raw), ECCL_NO_DEADLINE, &srv->stop) !=
            ecclSuccess)
            break;
        struct store_proto_hdr h;
        store_proto_hdr_decode(raw, &h);
        const char *why = store_proto_hdr_check(&h);
        if (!why && (h.type & STORE_MSG_REPLY))
            why = "a reply type sent to the server";
        if (why) {
            conn_bad_frame(c, why);
            break;
        }
        eccl_free(body);
        body = eccl_calloc(h.len + 1, 1, "store_srv_body");
        if (!body)
            break;
        if (h.len &&
            eccl_socket_recv_all(c->fd, body, h.len, eccl_deadline_ms(SERVER_BODY_TIMEOUT_MS),
                                 &srv->stop) != ecclSuccess) {
            WARN("store server: truncated frame from %s; closing that connection", c->peer);
            break;
        }
        struct store_cur cur;
        store_cur_init(&cur, body, h.len);
        if (h.type == STORE_MSG_WATCH_CREATE) {
            size_t klen, elen;
            const uint8_t *key = store_cur_bytes(&cur, &klen);
            const uint8_t *end = store_cur_bytes(&cur, &elen);
            int64_t start = store_cur_i64(&cur);
            if (!store_cur_done(&cur) || start < 0) {
                conn_bad_frame(c, "malformed watch request");
                break;
            }
            conn_watch(c, h.id, key, klen, end, elen, start);
            break;
        }
        uint16_t type;
        const char *bad = run_request(srv, h.type, body, h.len, &out, &type);
        if (bad) {
            conn_bad_frame(c, bad);
            break;
        }
        if (conn_send(c, &out, type, h.id) != ecclSuccess)
            break;
    }
    eccl_free(body);
    store_buf_fini(&out);
    shutdown(c->fd, SHUT_RDWR);
    atomic_store_explicit(&c->done, true, memory_order_release);
    return NULL;
}

/* Joins and frees finished connections (all of them when `all`). */
static void conns_reap(struct store_server *srv, bool all)
{
    pthread_mutex_lock(&srv->conns_lock);
    struct conn **pp = &srv->conns;
    while (*pp) {
        struct conn *c = *pp;
        if (all)
            shutdown(c->fd, SHUT_RDWR);
        if (all || atomic_load_explicit(&c->done, memory_order_acquire)) {
            *pp = c->next;
            srv->nconns--;
            pthread_mutex_unlock(&srv->conns_lock);
            pthread_join(c->thread, NULL);
            eccl_socket_close(&c->fd);
            eccl_free(c);
            pthread_mutex_lock(&srv->conns_lock);
            pp = &srv->conns;
            continue;
        }
        pp = &c->next;
    }
    pthread_mutex_unlock(&srv->conns_lock);
}

static void *accept_main(void *arg)
{
    struct store_server *srv = arg;
    while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
        int fd = -1;
        ecclResult_t res = eccl_socket_accept(srv->listen_fd, &fd, ECCL_NO_DEADLINE, &srv->stop);
        conns_reap(srv, false);
        if (res != ecclSuccess || fd < 0)
            continue;
        union eccl_sockaddr peer;
        socklen_t plen = sizeof(peer);
        memset(&peer, 0, sizeof(peer));
        char name[64] = "?";
        if (getpeername(fd, &peer.sa, &plen) == 0)
            eccl_sockaddr_str(&peer, name, sizeof(name));
        pthread_mutex_lock(&srv->conns_lock);
        bool full = srv->nconns >= eccl_param_store_max_conns();
        pthread_mutex_unlock(&srv->conns_lock);
        if (full) {
            WARN("store server: refusing %s: %lld connections already (ECCL_STORE_MAX_CONNS)", name,
                 (long long)eccl_param_store_max_conns());
            eccl_socket_close(&fd);
            continue;
        }
        struct conn *c = eccl_calloc(1, sizeof(*c), "store_srv_conn");
        if (!c) {
            eccl_socket_close(&fd);
            continue;
        }
        c->srv = srv;
        c->fd = fd;
        snprintf(c->peer, sizeof(c->peer), "%s", name);
        atomic_init(&c->done, false);
        int err = ECCL_FAULT_THREAD(pthread_create(&c->thread, NULL, conn_main, c));
        if (err) {
            WARN("store server: cannot start a connection thread: %s", strerror(err));
            eccl_socket_close(&fd);
            eccl_free(c);
            continue;
        }
        pthread_mutex_lock(&srv->conns_lock);
        c->next = srv->conns;
        srv->conns = c;
        srv->nconns++;
        pthread_mutex_unlock(&srv->conns_lock);
    }
    return NULL;
}

/* ---- start / stop ---- */

static void server_free(struct store_server *srv)
{
    for (size_t i = 0; i < srv->nents; i++) {
        eccl_free(srv->ents[i].key);
        eccl_free(srv->ents[i].val);
    }
    eccl_free(srv->ents);
    for (size_t i = 0; i < srv->hist_len; i++) {
        eccl_free(hist_at(srv, i)->e.key);
        eccl_free(hist_at(srv, i)->e.val);
    }
    eccl_free(srv->hist);
    eccl_free(srv->leases);
    pthread_mutex_destroy(&srv->lock);
    pthread_mutex_destroy(&srv->conns_lock);
    eccl_free(srv);
}

ecclResult_t store_server_start(const char *listen, struct store_server **out, int *port_out)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(out, "store_server_start: out is NULL");
    if (!listen || !listen[0])
        listen = "127.0.0.1:0";
    union eccl_sockaddr addr;
    ECCL_TRY(eccl_sockaddr_parse(listen, &addr));
    int64_t hist = eccl_param_store_history();
    ECCL_ARG_CHECK(hist >= 16 && hist <= 100000000, "ECCL_STORE_HISTORY=%lld is out of range",
                   (long long)hist);

    struct store_server *srv;
    ECCL_CALLOC_GOTO(srv, 1, "store_srv", res, out);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_mutex_init(&srv->conns_lock, NULL);
    atomic_init(&srv->stop, 0);
    srv->rev = 1; /* like etcd: an empty store is at revision 1 */
    srv->listen_fd = -1;
    srv->next_lease = (int64_t)(eccl_random64() & 0xffffffffffULL) + 1;
    srv->hist_cap = (size_t)hist;
    ECCL_CALLOC_GOTO(srv->hist, srv->hist_cap, "store_srv_hist", res, err_free_srv);
    ECCL_TRY_GOTO(eccl_socket_listen(&addr, &srv->listen_fd), res, err_free_srv);
    int err = ECCL_FAULT_THREAD(pthread_create(&srv->reaper_thread, NULL, reaper_main, srv));
    if (err) {
        WARN("store server: cannot start the reaper thread: %s", strerror(err));
        res = ecclSystemError;
        goto err_close_listen;
    }
    err = ECCL_FAULT_THREAD(pthread_create(&srv->accept_thread, NULL, accept_main, srv));
    if (err) {
        WARN("store server: cannot start the accept thread: %s", strerror(err));
        res = ecclSystemError;
        goto err_stop_reaper;
    }
    char name[64];
    INFO(ECCL_LOG_STORE, "store server: listening on %s",
         eccl_sockaddr_str(&addr, name, sizeof(name)));
    if (port_out)
        *port_out = ntohs(addr.sa.sa_family == AF_INET6 ? addr.sin6.sin6_port : addr.sin.sin_port);
    *out = srv;
    return ecclSuccess;

err_stop_reaper:
    atomic_store_explicit(&srv->stop, 1, memory_order_release);
    pthread_join(srv->reaper_thread, NULL);
err_close_listen:
    eccl_socket_close(&srv->listen_fd);
err_free_srv:
    server_free(srv);
out:
    return res;
}

void store_server_stop(struct store_server *srv)
{
    if (!srv)
        return;
    atomic_store_explicit(&srv->stop, 1, memory_order_release);
    pthread_mutex_lock(&srv->lock);
    for (struct swatch *w = srv->watchers; w; w = w->next)
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&srv->lock);
    pthread_join(srv->accept_thread, NULL);
    pthread_join(srv->reaper_thread, NULL);
    conns_reap(srv, true);
    eccl_socket_close(&srv->listen_fd);
    server_free(srv);
}

void store_server_drop_connections(struct store_server *srv)
{
    pthread_mutex_lock(&srv->conns_lock);
    for (struct conn *c = srv->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&srv->conns_lock);
}

int64_t store_server_revision(struct store_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    int64_t rev = srv->rev;
    pthread_mutex_unlock(&srv->lock);
    return rev;
}

/*
 * store_int.h - what the store's front end (store.c) and its backends (tcp.c, etcd.c) share:
 * the backend operation table, the store and watch objects, and helpers for key ranges and kv
 * arrays. Private to store/.
 *
 * Backends see full keys (the URL prefix already prepended) and ranges as etcd names them:
 * [key, range_end), an empty range_end meaning the single key `key`, range_end "\0" meaning every
 * key >= key. They return full keys; the front end strips the prefix.
 */
#ifndef ECCL_STORE_STORE_INT_H
#define ECCL_STORE_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Backoff for retries: capped exponential with full jitter. */
#define STORE_BACKOFF_BASE_MS 20
#define STORE_BACKOFF_CAP_MS  1000

struct store_backend {
    const char *name;
    /* Parses the part of the URL after "scheme://" up to the prefix (hosts, options), connects
     * and checks the store answers. Sets s->priv. */
    ecclResult_t (*open)(struct store *s, const char *scheme, const char *hosts, const char *query,
                         uint64_t deadline_ns);
    void (*close)(struct store *s);
    ecclResult_t (*range)(struct store *s, const void *key, size_t key_len, const void *end,
                          size_t end_len, size_t limit, uint64_t deadline_ns,
                          struct store_kvs *out);
    ecclResult_t (*put)(struct store *s, const void *key, size_t key_len, const void *value,
                        size_t value_len, int64_t lease, uint64_t deadline_ns, int64_t *rev_out);
    ecclResult_t (*del)(struct store *s, const void *key, size_t key_len, const void *end,
                        size_t end_len, uint64_t deadline_ns, int64_t *deleted_out,
                        int64_t *rev_out);
    /* cmps and ops carry full keys; ops with `prefix` get their range end from store_range_end. */
    ecclResult_t (*txn)(struct store *s, const struct store_cmp *cmps, size_t ncmps,
                        const struct store_op *then_ops, size_t nthen,
                        const struct store_op *else_ops, size_t nelse, uint64_t deadline_ns,
                        struct store_txn_result *out);
    ecclResult_t (*lease_grant)(struct store *s, int64_t ttl_s, uint64_t deadline_ns,
                                int64_t *id_out);
    ecclResult_t (*lease_revoke)(struct store *s, int64_t id, uint64_t deadline_ns);
    ecclResult_t (*lease_keepalive)(struct store *s, int64_t id, uint64_t deadline_ns,
                                    int64_t *ttl_out);
    ecclResult_t (*lease_ttl)(struct store *s, int64_t id, uint64_t deadline_ns, int64_t *ttl_out);
    /* Optional (NULL: lease_keepalive for each): refreshes n leases in one round trip, from the
     * keepalive thread only. ttls_out[i] gets the TTL of ids[i]: > 0 refreshed, 0 the lease is
     * gone, -1 no answer for it (a failure, retried like one). */
    ecclResult_t (*lease_keepalive_many)(struct store *s, const int64_t *ids, size_t n,
                                         uint64_t deadline_ns, int64_t *ttls_out);
    /* The body of a watch's thread: runs until w->stop, reconnecting as needed, resuming from
     * w->last_rev + 1. Reports creation with store_watch_created, events with
     * store_watch_deliver, a terminal error with store_watch_fail (then returns). */
    void (*watch_run)(struct store_watch *w);
    /* Optional: makes a watch's thread notice w->stop at once (called with w->lock held, from
     * the thread that stops the watch), through what the thread published in w->wake. */
    void (*watch_wake)(struct store_watch *w);
};

struct store_kept_lease {
    int64_t id;
    int64_t ttl_s;
    uint64_t next_ns;    /* next keepalive due */
    uint64_t expires_ns; /* last confirmed expiry */
    store_lease_lost_fn lost;
    void *arg;
};

struct store {
    const struct store_backend *be;
    void *priv; /* the backend's */
    char *prefix;
    size_t prefix_len;
    /* Set by store_close first: calls in flight (the keepalive thread's) give up at once. */
    _Atomic uint32_t closing;

    /* Keepalive thread and the leases it keeps. */
    pthread_mutex_t ka_lock;
    pthread_cond_t ka_cond;
    pthread_t ka_thread;
    bool ka_started;               /* protected by ka_lock */
    bool ka_stop;                  /* protected by ka_lock */
    struct store_kept_lease *kept; /* protected by ka_lock */
    size_t nkept, kept_cap;        /* protected by ka_lock */

    /* Live watches, destroyed by store_close. */
    pthread_mutex_t watch_lock;
    struct store_watch *watches; /* protected by watch_lock */
    /* Streams shared by the watches of the same range (store.c), protected by watch_lock:
     * hubs that new watches may join, and hubs left by their last watch on their own thread
     * (freed by the next create or destroy on another thread, or by store_close). */
    struct store_hub *hubs;
    struct store_hub *dead_hubs;
};

/*
 * A watch is either a stream of its own (a thread running the backend's watch_run) or, when it
 * names a start revision, a subscriber of a hub: one stream (an "upstream" watch, not in
 * s->watches) that feeds every subscriber watching the same range on the same store handle, and
 * keeps the events it delivered (bounded) so that a subscriber that starts at an earlier revision
 * than the others is replayed exactly what it asked for.
 */
struct store_watch {
    struct store *s;
    struct store_watch *next; /* protected by s->watch_lock */
    struct store_hub *hub;    /* a subscriber: the hub it is fed by (no thread of its own) */
    struct store_hub *feeds;  /* an upstream: the hub it feeds */
    char *key;                /* full key */
    size_t key_len;
    char *end; /* range end ("" for one key) */
    size_t end_len;
    store_watch_fn cb;
    void *arg;
    void *priv; /* the backend's, watch thread only */
    pthread_t thread;
    _Atomic uint32_t stop;
    _Atomic int64_t last_rev; /* revision of the last event delivered */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool created;          /* protected by lock */
    bool failed;           /* protected by lock */
    ecclResult_t fail_res; /* protected by lock */
    char fail_msg[256];    /* protected by lock */
    struct store_event *q; /* poll mode queue, protected by lock */
    size_t q_head, q_len, q_cap;
    void *wake; /* the backend's wake-up handle (watch_wake), protected by lock */
};

/* For watch backends. */
/* Called at each (re)creation with the store's current revision. False (and the watch failed)
 * when the revision went back since the last event: the store lost its state. */
bool store_watch_created(struct store_watch *w, int64_t revision);
/* Events with full keys, in revision order; those at or below last_rev are dropped. Returns the
 * result of queueing (ecclSystemError if memory ran out: the watch then fails). */
ecclResult_t store_watch_deliver(struct store_watch *w, const struct store_event *events, size_t n);
void store_watch_fail(struct store_watch *w, ecclResult_t res, const char *msg);
bool store_watch_stopping(struct store_watch *w);

/* The end of the range of keys that start with `prefix` (the prefix with its last byte that is not
 * 0xff incremented, bytes after it cut): written into end (capacity prefix_len, or 1), *end_len
 * set. An empty prefix or one of only 0xff bytes gives "\0" (all keys). */
void store_range_end(const void *prefix, size_t prefix_len, char *end, size_t *end_len);

/* Copies bytes into a kv (NUL-terminated copies). */
ecclResult_t store_kv_set(struct store_kv *kv, const void *key, size_t key_len, const void *value,
                          size_t value_len);
/* Appends a zeroed kv to an array, growing it; returns NULL when out of memory. */
struct store_kv *store_kvs_append(struct store_kv **kvs, size_t *count, size_t *cap);

/* Sleeps for the next backoff step (attempt counts from 0), never past the deadline or beyond an
 * abort. Returns false when the deadline has passed or abort is set. */
bool store_backoff(unsigned attempt, uint64_t deadline_ns, const _Atomic uint32_t *abort);

/* Formats a timed-out WARN naming the operation and returns ecclInternalError. */
ecclResult_t store_timed_out(const char *backend, const char *op);

extern const struct store_backend store_backend_tcp;
extern const struct store_backend store_backend_etcd;

#endif

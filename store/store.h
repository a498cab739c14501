/*
 * store.h - the key-value store the elastic layer keeps its state in: one interface, two backends.
 *
 * A store is opened from a URL:
 *   etcd://host:port[,host:port...]/prefix    etcd v3 through its JSON gateway (libcurl)
 *   etcds://host:port[,host:port...]/prefix   the same over TLS
 *   tcp://host:port/prefix                    the embedded store (store_server_start, eccl-store)
 * Every key an operation names is relative to the URL's prefix: the store prepends it on the way
 * out and strips it on the way back. Keys and values are byte strings with lengths (not C strings);
 * revisions are the store-wide int64 counter that every write bumps by exactly one, and a key's
 * create_rev is 0 when it does not exist (what create-if-absent compares against).
 *
 * Rules common to every call: a deadline (absolute, from eccl_deadline_ms; ECCL_NO_DEADLINE for
 * none) bounds the whole call including retries; the result is an ecclResult_t (ecclRemoteError
 * when the store cannot be reached or failed, ecclInvalidArgument for bad arguments,
 * ecclInternalError with "timed out" at the deadline, ecclInvalidUsage when the store refused the
 * request, with the store's own message in the last-error text); output parameters are written
 * only on success.
 * Retries happen only where the request cannot have been applied (connection errors before the
 * request was sent, or reads). A store handle may be used by several threads at once.
 */
#ifndef ECCL_STORE_STORE_H
#define ECCL_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

struct store;
struct store_watch;

/* One key-value pair, as the store returned it. Key is relative to the store's prefix. Both key
 * and value are followed by a NUL byte that is not counted in the lengths (convenient for text). */
struct store_kv {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    int64_t create_rev;
    int64_t mod_rev;
    int64_t version;
    int64_t lease; /* 0: none */
};

/* The answer of a range read. */
struct store_kvs {
    struct store_kv *kvs;
    size_t count;
    int64_t revision; /* the store's revision when the read was served */
    bool more;        /* more keys in the range after the last one returned (pagination) */
};

void store_kv_free(struct store_kv *kv);
/* Frees the key and value of a kv that lives in the caller's memory (an array element). */
void store_kv_fini(struct store_kv *kv);
void store_kvs_free(struct store_kvs *kvs);

/* ---- open / close ---- */

/* Opens a store from a URL (NULL: ECCL_STORE_URL). Checks that the store answers before the
 * deadline. *out is the new handle. */
ecclResult_t store_open(const char *url, uint64_t deadline_ns, struct store **out);
/* Stops the keepalive thread, destroys remaining watches, closes connections. NULL is fine. */
void store_close(struct store *s);
/* "etcd", "tcp". */
const char *store_backend_name(const struct store *s);

/* ---- keys ---- */

/* Puts key=value, attached to `lease` (0: none). *rev_out (may be NULL) gets the write's
 * revision. */
ecclResult_t store_put(struct store *s, const void *key, size_t key_len, const void *value,
                       size_t value_len, int64_t lease, uint64_t deadline_ns, int64_t *rev_out);
/* Reads one key. *kv_out gets a new kv (free with store_kv_free) or NULL when the key is absent.
 * *rev_out (may be NULL) gets the store's revision. */
ecclResult_t store_get(struct store *s, const void *key, size_t key_len, uint64_t deadline_ns,
                       struct store_kv **kv_out, int64_t *rev_out);
/* Reads the keys that start with `prefix`, in key order, starting at `from` (inclusive; NULL or
 * empty: the start of the prefix), at most `limit` of them (0: all). To read the next page, call
 * again with from = last key + "\0" (store_kvs.more says whether there is one). *out gets a new
 * result (free with store_kvs_free). */
ecclResult_t store_get_prefix(struct store *s, const void *prefix, size_t prefix_len,
                              const void *from, size_t from_len, size_t limit, uint64_t deadline_ns,
                              struct store_kvs **out);
/* Deletes one key, or every key that starts with it when `prefix` is true. *deleted_out and
 * *rev_out may be NULL. Deleting nothing is a success with 0 deleted. */
ecclResult_t store_delete(struct store *s, const void *key, size_t key_len, bool prefix,
                          uint64_t deadline_ns, int64_t *deleted_out, int64_t *rev_out);

/* ---- transactions ---- */

enum store_cmp_target {
    STORE_CMP_VERSION = 0,
    STORE_CMP_CREATE = 1, /* create_rev; 0 when absent */
    STORE_CMP_MOD = 2,    /* mod_rev; 0 when absent */
    STORE_CMP_VALUE = 3,
};

enum store_cmp_result {
    STORE_CMP_EQUAL = 0,
    STORE_CMP_GREATER = 1,
    STORE_CMP_LESS = 2,
    STORE_CMP_NOT_EQUAL = 3,
};

struct store_cmp {
    const void *key;
    size_t key_len;
    enum store_cmp_target target;
    enum store_cmp_result result;
    int64_t number;    /* for VERSION, CREATE, MOD */
    const void *value; /* for VALUE */
    size_t value_len;
};

enum store_op_type {
    STORE_OP_PUT = 0,
    STORE_OP_DELETE = 1, /* `prefix` deletes the keys that start with key */
    STORE_OP_GET = 2,    /* reads one key (or a prefix); the kvs come back in the result */
};

struct store_op {
    enum store_op_type type;
    const void *key;
    size_t key_len;
    const void *value; /* PUT */
    size_t value_len;
    int64_t lease; /* PUT; 0: none */
    bool prefix;   /* DELETE, GET */
};

struct store_txn_result {
    bool succeeded;
    int64_t revision;     /* the store's revision after the transaction */
    struct store_kv *kvs; /* what the branch's GET ops read, in order */
    size_t count;
};

void store_txn_result_fini(struct store_txn_result *r);

/* If every compare holds, runs `then_ops`, else `else_ops`, atomically: one revision for all the
 * writes. A key may appear in at most one write of a branch. At most STORE_TXN_MAX_OPS of each. */
#define STORE_TXN_MAX_OPS 64
ecclResult_t store_txn(struct store *s, const struct store_cmp *cmps, size_t ncmps,
                       const struct store_op *then_ops, size_t nthen,
                       const struct store_op *else_ops, size_t nelse, uint64_t deadline_ns,
                       struct store_txn_result *out);

/* Compare-and-swap: puts key=value if the key's mod_rev is `expect_mod_rev` (0: only if the key is
 * absent, i.e. create-if-absent). *won_out says whether the put happened; *rev_out (may be NULL)
 * gets the new revision when won; *current_out (may be NULL) gets the key as it is when lost
 * (NULL if it was deleted meanwhile). */
ecclResult_t store_cas(struct store *s, const void *key, size_t key_len, int64_t expect_mod_rev,
                       const void *value, size_t value_len, int64_t lease, uint64_t deadline_ns,
                       bool *won_out, int64_t *rev_out, struct store_kv **current_out);

/* ---- leases ---- */

/* Grants a lease of ttl_s seconds (the store may raise it to its minimum: etcd's is 2 s). */
ecclResult_t store_lease_grant(struct store *s, int64_t ttl_s, uint64_t deadline_ns,
                               int64_t *id_out);
/* Revokes a lease: every key attached to it is deleted (one revision, delete events). A lease that
 * does not exist (expired) is an ecclInvalidUsage error. Stops keeping it alive. */
ecclResult_t store_lease_revoke(struct store *s, int64_t id, uint64_t deadline_ns);
/* One keepalive: resets the TTL. *ttl_out gets the TTL in seconds, or 0 when the lease is gone. */
ecclResult_t store_lease_keepalive_once(struct store *s, int64_t id, uint64_t deadline_ns,
                                        int64_t *ttl_out);
/* Remaining TTL in seconds; -1 when the lease does not exist. */
ecclResult_t store_lease_ttl(struct store *s, int64_t id, uint64_t deadline_ns, int64_t *ttl_out);

/* Called on the store's keepalive thread when a kept lease is found gone (expired or revoked
 * elsewhere), or could not be refreshed before it would have expired. After the call the lease is
 * no longer kept. */
typedef void (*store_lease_lost_fn)(void *arg, int64_t lease_id);

/* Keeps a lease alive from the store's keepalive thread (started on first use), refreshing every
 * third of its TTL and retrying through store outages. `lost` (may be NULL) as above. The leases
 * of one handle are refreshed together where the backend allows (etcd: one request for all the
 * leases due within a quarter of their TTL, which may refresh some that much early). */
ecclResult_t store_lease_keep(struct store *s, int64_t id, int64_t ttl_s, store_lease_lost_fn lost,
                              void *arg);
/* Stops keeping a lease alive (it then expires unless revoked). Unknown ids are ignored. */
void store_lease_unkeep(struct store *s, int64_t id);

/* ---- watches ---- */

enum store_event_type {
    STORE_EVENT_PUT = 0,
    STORE_EVENT_DELETE = 1,
};

struct store_event {
    enum store_event_type type;
    struct store_kv kv; /* for DELETE: key and mod_rev (the deletion's revision) only */
};

/*
 * Callback of a watch, on the watch's thread, events in revision order (events of one
 * transaction share a revision). `status` is ecclSuccess with n > 0 for events; a terminal error
 * comes as n == 0 and status != ecclSuccess (the watch was cancelled by the store, typically
 * because the start revision was compacted: the caller must re-read and watch again; the
 * last-error text of the watch says why) and no callback follows. Events are borrowed for the
 * call. The callback must not destroy its own watch.
 */
typedef void (*store_watch_fn)(void *arg, const struct store_event *events, size_t n,
                               ecclResult_t status);

/*
 * Watches `key` (or, with `prefix`, every key that starts with it) from revision `start_rev`
 * (0: from now). Events are delivered through `cb` or, if cb is NULL, queued for
 * store_watch_poll. Survives store outages: the watch reconnects and resumes from the last
 * revision it delivered, so no event is lost or repeated (unless that revision was compacted
 * meanwhile: then the watch ends with an error as above). Returns once the store has accepted the
 * watch (before the deadline). A watch that resumes on a store whose revision went back (a store
 * that lost its state) ends with ecclRemoteError. A start revision that is already compacted
 * gives ecclInvalidUsage ("compacted") either here or as the watch's first result, depending on
 * the backend.
 * Watches of one store handle that name a start revision (> 0) and the same key or prefix share
 * one stream and its thread (their callbacks run one after the other on it, so a slow callback
 * delays the others); each still gets exactly the events from its own start revision. Events the
 * shared stream delivered before the watch was created are replayed at once, through the
 * callback on the creating thread, before this returns. A callback may create or destroy other
 * watches, including ones that share its stream.
 */
ecclResult_t store_watch_create(struct store *s, const void *key, size_t key_len, bool prefix,
                                int64_t start_rev, store_watch_fn cb, void *arg,
                                uint64_t deadline_ns, struct store_watch **out);
/*
 * Poll-mode watches: waits until at least one event is queued or the deadline, then takes up to
 * `max` events. *events_out gets a new array (free with store_events_free) or NULL with *n_out 0
 * at the deadline (a success: nothing happened). A terminal watch error is returned as the result
 * once the queued events are drained.
 */
ecclResult_t store_watch_poll(struct store_watch *w, size_t max, uint64_t deadline_ns,
                              struct store_event **events_out, size_t *n_out);
void store_events_free(struct store_event *events, size_t n);
/* The revision of the last event delivered (or the start revision - 1). */
int64_t store_watch_last_rev(struct store_watch *w);
/* Stops the watch's thread and frees it. After return no callback runs. NULL is fine. */
void store_watch_destroy(struct store_watch *w);

/* Waits until `key` exists (returns it at once if it does), or the deadline (ecclInternalError
 * with "timed out"). *kv_out gets the key (free with store_kv_free). */
ecclResult_t store_wait_key(struct store *s, const void *key, size_t key_len, uint64_t deadline_ns,
                            struct store_kv **kv_out);

/* ---- the embedded server ---- */

struct store_server;

/* Starts the embedded store's server threads, listening on `listen` ("ip:port"; port 0 picks a
 * free one). *port_out (may be NULL) gets the port. */
ecclResult_t store_server_start(const char *listen, struct store_server **out, int *port_out);
/* Stops the server: closes every connection and joins every thread. NULL is fine. */
void store_server_stop(struct store_server *srv);
/* Closes every client connection (the state stays): what a network blip does. Clients reconnect
 * and watches resume. For tests and operators. */
void store_server_drop_connections(struct store_server *srv);
/* The server's current revision (tests, the CLI). */
int64_t store_server_revision(struct store_server *srv);

#endif

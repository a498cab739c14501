/*
 * store.c - the store's front end: URL parsing and backend choice, the key prefix, argument
 * checks, compare-and-swap and wait-for-key on top of the backend's operations, the keepalive
 * thread that keeps leases alive, and the delivery side of watches (callback or poll queue).
 */
#include "store/store_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"

ECCL_PARAM_STR(store_url, "ECCL_STORE_URL", "")

/* Keys and values above these sizes are refused before they reach a backend (etcd's default
 * request limit is 1.5 MiB; the embedded store's frames are bounded by 4 MiB). */
#define STORE_MAX_KEY   (64 * 1024)
#define STORE_MAX_VALUE (1024 * 1024)

/* ---- small helpers shared with the backends ---- */

void store_range_end(const void *prefix, size_t prefix_len, char *end, size_t *end_len)
{
    const unsigned char *p = prefix;
    size_t n = prefix_len;
    while (n > 0 && p[n - 1] == 0xff)
        n--;
    if (n == 0) {
        end[0] = 0;
        *end_len = 1;
        return;
    }
    memcpy(end, p, n);
    end[n - 1] = (char)(p[n - 1] + 1);
    *end_len = n;
}

ecclResult_t store_kv_set(struct store_kv *kv, const void *key, size_t key_len, const void *value,
                          size_t value_len)
{
    char *k = eccl_calloc(key_len + 1, 1, "store_kv");
    if (!k)
        return ecclSystemError;
    char *v = eccl_calloc(value_len + 1, 1, "store_kv");
    if (!v) {
        eccl_free(k);
        return ecclSystemError;
    }
    if (key_len)
        memcpy(k, key, key_len);
    if (value_len)
        memcpy(v, value, value_len);
    kv->key = k;
    kv->key_len = key_len;
    kv->value = v;
    kv->value_len = value_len;
    return ecclSuccess;
}

void store_kv_fini(struct store_kv *kv)
{
    if (!kv)
        return;
    eccl_free(kv->key);
    eccl_free(kv->value);
    kv->key = kv->value = NULL;
}

void store_kv_free(struct store_kv *kv)
{
    if (!kv)
        return;
    store_kv_fini(kv);
    eccl_free(kv);
}

void store_kvs_free(struct store_kvs *kvs)
{
    if (!kvs)
        return;
    for (size_t i = 0; i < kvs->count; i++)
        store_kv_fini(&kvs->kvs[i]);
    eccl_free(kvs->kvs);
    eccl_free(kvs);
}

void store_txn_result_fini(struct store_txn_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++)
        store_kv_fini(&r->kvs[i]);
    eccl_free(r->kvs);
    r->kvs = NULL;
    r->count = 0;
}

struct store_kv *store_kvs_append(struct store_kv **kvs, size_t *count, size_t *cap)
{
    if (*count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct store_kv *n = eccl_realloc(*kvs, ncap, sizeof(**kvs), "store_kvs");
        if (!n)
            return NULL;
        *kvs = n;
        *cap = ncap;
    }
    struct store_kv *kv = &(*kvs)[(*count)++];
    memset(kv, 0, sizeof(*kv));
    return kv;
}

bool store_backoff(unsigned attempt, uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    uint64_t cap = STORE_BACKOFF_BASE_MS << (attempt < 10 ? attempt : 10);
    if (cap > STORE_BACKOFF_CAP_MS)
        cap = STORE_BACKOFF_CAP_MS;
    /* Full jitter, but never less than 1 ms so that a dead store is not hammered. */
    uint64_t ms = 1 + eccl_random64() % cap;
    uint64_t until = eccl_now_ns() + ms * ECCL_NS_PER_MS;
    if (deadline_ns != ECCL_NO_DEADLINE && until > deadline_ns)
        until = deadline_ns;
    while (eccl_now_ns() < until) {
        if (abort && atomic_load_explicit(abort, memory_order_acquire))
            return false;
        uint64_t left = until - eccl_now_ns();
        if ((int64_t)left <= 0)
            break;
        eccl_sleep_us(ECCL_MIN(left / 1000 + 1, 10000));
    }
    if (abort && atomic_load_explicit(abort, memory_order_acquire))
        return false;
    return !eccl_deadline_passed(deadline_ns);
}

ecclResult_t store_timed_out(const char *backend, const char *op)
{
    WARN("store %s: %s timed out", backend, op);
    return ecclInternalError;
}

/* The fault point of every store operation (ECCL_FAULT=store_op:N): the call fails as if the
 * store could not be reached. */
static ecclResult_t fault_op(const struct store *s, const char *op)
{
    if (ECCL_FAULT("store_op")) {
        WARN("store %s: %s failed (fault injection)", s->be->name, op);
        return ecclRemoteError;
    }
    return ecclSuccess;
}

/* ---- keys with the prefix ---- */

static ecclResult_t full_key(const struct store *s, const void *key, size_t key_len, char **out)
{
    char *k = eccl_calloc(s->prefix_len + key_len + 1, 1, "store_key");
    if (!k)
        return ecclSystemError;
    memcpy(k, s->prefix, s->prefix_len);
    if (key_len)
        memcpy(k + s->prefix_len, key, key_len);
    *out = k;
    return ecclSuccess;
}

/* Strips the prefix from a kv the backend returned (in place). A key outside the prefix means the
 * backend lied: an error. */
static ecclResult_t strip_kv(const struct store *s, struct store_kv *kv)
{
    if (kv->key_len < s->prefix_len || memcmp(kv->key, s->prefix, s->prefix_len) != 0) {
        WARN("store %s: the store returned a key outside the prefix %s", s->be->name, s->prefix);
        return ecclRemoteError;
    }
    memmove(kv->key, kv->key + s->prefix_len, kv->key_len - s->prefix_len + 1);
    kv->key_len -= s->prefix_len;
    return ecclSuccess;
}

static ecclResult_t check_key(const char *op, const void *key, size_t key_len, bool may_be_empty)
{
    ECCL_ARG_CHECK(key || key_len == 0, "store %s: key is NULL", op);
    ECCL_ARG_CHECK(may_be_empty || key_len > 0, "store %s: key is empty", op);
    ECCL_ARG_CHECK(key_len <= STORE_MAX_KEY, "store %s: key of %zu bytes exceeds %d", op, key_len,
                   STORE_MAX_KEY);
    return ecclSuccess;
}

static ecclResult_t check_value(const char *op, const void *value, size_t value_len)
{
    ECCL_ARG_CHECK(value || value_len == 0, "store %s: value is NULL", op);
    ECCL_ARG_CHECK(value_len <= STORE_MAX_VALUE, "store %s: value of %zu bytes exceeds %d", op,
                   value_len, STORE_MAX_VALUE);
    return ecclSuccess;
}

/* ---- open / close ---- */

static void *keepalive_main(void *arg);
static void hubs_reap(struct store *s);

ecclResult_t store_open(const char *url, uint64_t deadline_ns, struct store **out)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(out, "store_open: out is NULL");
    if (!url || !url[0])
        url = eccl_param_store_url();
    ECCL_ARG_CHECK(url && url[0], "store_open: no URL given and ECCL_STORE_URL is not set");

    const char *sep = strstr(url, "://");
    ECCL_ARG_CHECK(sep && sep > url && sep - url < 16, "store_open: '%s' is not scheme://...", url);
    char scheme[16];
    memcpy(scheme, url, (size_t)(sep - url));
    scheme[sep - url] = 0;
    const struct store_backend *be = NULL;
    if (strcmp(scheme, "tcp") == 0)
        be = &store_backend_tcp;
    else if (strcmp(scheme, "etcd") == 0 || strcmp(scheme, "etcds") == 0 ||
             strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)
        be = &store_backend_etcd;
    ECCL_ARG_CHECK(be, "store_open: unknown scheme '%s' in '%s' (etcd, etcds, tcp)", scheme, url);

    const char *rest = sep + 3;
    size_t hosts_len = strcspn(rest, "/?");
    ECCL_ARG_CHECK(hosts_len > 0, "store_open: no host in '%s'", url);
    const char *path = rest + hosts_len;
    size_t path_len = (*path == '/') ? strcspn(path, "?") : 0;
    const char *query = path + path_len;
    if (*query == '?')
        query++;

    struct store *s;
    char *hosts = NULL;
    ECCL_CALLOC_GOTO(s, 1, "store", res, out);
    ECCL_CALLOC_GOTO(hosts, hosts_len + 1, "store_url", res, err_free_store);
    memcpy(hosts, rest, hosts_len);
    /* The prefix is the path with a trailing '/' ("/job1" -> "/job1/"); none when the path is
     * empty or "/". */
    size_t plen = path_len > 1 ? path_len + (path[path_len - 1] != '/') : 0;
    ECCL_CALLOC_GOTO(s->prefix, plen + 1, "store_url", res, err_free_hosts);
    if (plen) {
        memcpy(s->prefix, path, path_len);
        s->prefix[plen - 1] = '/';
    }
    s->prefix_len = plen;
    s->be = be;
    atomic_init(&s->closing, 0);
    pthread_mutex_init(&s->ka_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->ka_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->watch_lock, NULL);

    ECCL_TRY_GOTO(be->open(s, scheme, hosts, query, deadline_ns), res, err_destroy_locks);
    INFO(ECCL_LOG_STORE, "store: opened %s backend at %s, prefix '%s'", be->name, hosts, s->prefix);
    eccl_free(hosts);
    *out = s;
    return ecclSuccess;

err_destroy_locks:
    pthread_mutex_destroy(&s->ka_lock);
    pthread_cond_destroy(&s->ka_cond);
    pthread_mutex_destroy(&s->watch_lock);
    eccl_free(s->prefix);
err_free_hosts:
    eccl_free(hosts);
err_free_store:
    eccl_free(s);
out:
    return res;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    atomic_store_explicit(&s->closing, 1, memory_order_release);
    for (;;) {
        pthread_mutex_lock(&s->watch_lock);
        struct store_watch *w = s->watches;
        pthread_mutex_unlock(&s->watch_lock);
        if (!w)
            break;
        store_watch_destroy(w);
    }
    hubs_reap(s);
    pthread_mutex_lock(&s->ka_lock);
    bool started = s->ka_started;
    s->ka_stop = true;
    pthread_cond_broadcast(&s->ka_cond);
    pthread_mutex_unlock(&s->ka_lock);
    if (started)
        pthread_join(s->ka_thread, NULL);
    s->be->close(s);
    eccl_free(s->kept);
    pthread_mutex_destroy(&s->ka_lock);
    pthread_cond_destroy(&s->ka_cond);
    pthread_mutex_destroy(&s->watch_lock);
    eccl_free(s->prefix);
    eccl_free(s);
}

const char *store_backend_name(const struct store *s)
{
    return s ? s->be->name : "none";
}

/* ---- keys ---- */

ecclResult_t store_put(struct store *s, const void *key, size_t key_len, const void *value,
                       size_t value_len, int64_t lease, uint64_t deadline_ns, int64_t *rev_out)
{
    ECCL_ARG_CHECK(s, "store_put: store is NULL");
    ECCL_TRY(check_key("put", key, key_len, false));
    ECCL_TRY(check_value("put", value, value_len));
    ECCL_ARG_CHECK(lease >= 0, "store_put: lease %lld is negative", (long long)lease);
    ECCL_TRY(fault_op(s, "put"));
    char *k;
    ECCL_TRY(full_key(s, key, key_len, &k));
    int64_t rev = 0;
    ecclResult_t res =
        s->be->put(s, k, s->prefix_len + key_len, value, value_len, lease, deadline_ns, &rev);
    eccl_free(k);
    if (res == ecclSuccess && rev_out)
        *rev_out = rev;
    return res;
}

ecclResult_t store_get(struct store *s, const void *key, size_t key_len, uint64_t deadline_ns,
                       struct store_kv **kv_out, int64_t *rev_out)
{
    ECCL_ARG_CHECK(s, "store_get: store is NULL");
    ECCL_ARG_CHECK(kv_out, "store_get: kv_out is NULL");
    ECCL_TRY(check_key("get", key, key_len, false));
    ECCL_TRY(fault_op(s, "get"));
    char *k;
    ECCL_TRY(full_key(s, key, key_len, &k));
    struct store_kvs r = {0};
    ecclResult_t res = s->be->range(s, k, s->prefix_len + key_len, NULL, 0, 1, deadline_ns, &r);
    eccl_free(k);
    if (res != ecclSuccess)
        return res;
    struct store_kv *kv = NULL;
    if (r.count > 0) {
        res = strip_kv(s, &r.kvs[0]);
        if (res != ecclSuccess)
            goto out;
        kv = eccl_calloc(1, sizeof(*kv), "store_kv");
        if (!kv) {
            res = ecclSystemError;
            goto out;
        }
        *kv = r.kvs[0];
        r.kvs[0].key = r.kvs[0].value = NULL;
    }
    *kv_out = kv;
    if (rev_out)
        *rev_out = r.revision;
out:
    for (size_t i = 0; i < r.count; i++)
        store_kv_fini(&r.kvs[i]);
    eccl_free(r.kvs);
    return res;
}

ecclResult_t store_get_prefix(struct store *s, const void *prefix, size_t prefix_len,
                              const void *from, size_t from_len, size_t limit, uint64_t deadline_ns,
                              struct store_kvs **out)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(s, "store_get_prefix: store is NULL");
    ECCL_ARG_CHECK(out, "store_get_prefix: out is NULL");
    ECCL_TRY(check_key("get_prefix", prefix, prefix_len, true));
    ECCL_TRY(check_key("get_prefix", from, from_len, true));
    ECCL_TRY(fault_op(s, "get_prefix"));
    char *p = NULL, *f = NULL, *end = NULL;
    struct store_kvs *r = NULL;
    ECCL_TRY_GOTO(full_key(s, prefix, prefix_len, &p), res, out);
    size_t plen = s->prefix_len + prefix_len;
    size_t flen = plen;
    if (from_len > 0) {
        ECCL_TRY_GOTO(full_key(s, from, from_len, &f), res, out);
        flen = s->prefix_len + from_len;
        /* A start below the prefix is the prefix itself. */
        int c = memcmp(f, p, ECCL_MIN(flen, plen));
        if (c < 0 || (c == 0 && flen < plen)) {
            eccl_free(f);
            f = NULL;
            flen = plen;
        }
    }
    ECCL_CALLOC_GOTO(end, plen + 1, "store_key", res, out);
    size_t end_len;
    store_range_end(p, plen, end, &end_len);
    ECCL_CALLOC_GOTO(r, 1, "store_kvs", res, out);
    ECCL_TRY_GOTO(s->be->range(s, f ? f : p, flen, end, end_len, limit, deadline_ns, r), res,
                  err_free_r);
    for (size_t i = 0; i < r->count; i++)
        ECCL_TRY_GOTO(strip_kv(s, &r->kvs[i]), res, err_free_r);
    *out = r;
    r = NULL;
    goto out;
err_free_r:
    store_kvs_free(r);
out:
    eccl_free(p);
    eccl_free(f);
    eccl_free(end);
    return res;
}

ecclResult_t store_delete(struct store *s, const void *key, size_t key_len, bool prefix,
                          uint64_t deadline_ns, int64_t *deleted_out, int64_t *rev_out)
{
    ECCL_ARG_CHECK(s, "store_delete: store is NULL");
    ECCL_TRY(check_key("delete", key, key_len, prefix));
    ECCL_TRY(fault_op(s, "delete"));
    char *k;
    ECCL_TRY(full_key(s, key, key_len, &k));
    size_t klen = s->prefix_len + key_len;
    char *end = NULL;
    size_t end_len = 0;
    ecclResult_t res = ecclSuccess;
    if (prefix) {
        ECCL_CALLOC_GOTO(end, klen + 1, "store_key", res, out);
        store_range_end(k, klen, end, &end_len);
    }
    int64_t deleted = 0, rev = 0;
    ECCL_TRY_GOTO(s->be->del(s, k, klen, end, end_len, deadline_ns, &deleted, &rev), res, out);
    if (deleted_out)
        *deleted_out = deleted;
    if (rev_out)
        *rev_out = rev;
out:
    eccl_free(k);
    eccl_free(end);
    return res;
}

/* ---- transactions ---- */

static ecclResult_t check_ops(const struct store_op *ops, size_t n)
{
    ECCL_ARG_CHECK(ops || n == 0, "store_txn: ops is NULL");
    ECCL_ARG_CHECK(n <= STORE_TXN_MAX_OPS, "store_txn: %zu ops exceed %d", n, STORE_TXN_MAX_OPS);
    for (size_t i = 0; i < n; i++) {
        ECCL_ARG_CHECK(ops[i].type == STORE_OP_PUT || ops[i].type == STORE_OP_DELETE ||
                           ops[i].type == STORE_OP_GET,
                       "store_txn: op %zu has unknown type %d", i, (int)ops[i].type);
        ECCL_TRY(check_key("txn", ops[i].key, ops[i].key_len, ops[i].prefix));
        if (ops[i].type == STORE_OP_PUT) {
            ECCL_TRY(check_value("txn", ops[i].value, ops[i].value_len));
            ECCL_ARG_CHECK(!ops[i].prefix, "store_txn: op %zu: a put cannot take a prefix", i);
            ECCL_ARG_CHECK(ops[i].lease >= 0, "store_txn: op %zu: negative lease", i);
        }
    }
    return ecclSuccess;
}

/* Copies ops with full keys; the key buffers go to keys[]. */
static ecclResult_t prefix_ops(const struct store *s, const struct store_op *ops, size_t n,
                               struct store_op *out, char **keys)
{
    for (size_t i = 0; i < n; i++) {
        ECCL_TRY(full_key(s, ops[i].key, ops[i].key_len, &keys[i]));
        out[i] = ops[i];
        out[i].key = keys[i];
        out[i].key_len = s->prefix_len + ops[i].key_len;
    }
    return ecclSuccess;
}

ecclResult_t store_txn(struct store *s, const struct store_cmp *cmps, size_t ncmps,
                       const struct store_op *then_ops, size_t nthen,
                       const struct store_op *else_ops, size_t nelse, uint64_t deadline_ns,
                       struct store_txn_result *out)
{
    ECCL_ARG_CHECK(s, "store_txn: store is NULL");
    ECCL_ARG_CHECK(out, "store_txn: out is NULL");
    ECCL_ARG_CHECK(cmps || ncmps == 0, "store_txn: cmps is NULL");
    ECCL_ARG_CHECK(ncmps <= STORE_TXN_MAX_OPS, "store_txn: %zu compares exceed %d", ncmps,
                   STORE_TXN_MAX_OPS);
    for (size_t i = 0; i < ncmps; i++) {
        ECCL_TRY(check_key("txn", cmps[i].key, cmps[i].key_len, false));
        ECCL_ARG_CHECK(cmps[i].target <= STORE_CMP_VALUE, "store_txn: compare %zu: bad target", i);
        ECCL_ARG_CHECK(cmps[i].result <= STORE_CMP_NOT_EQUAL, "store_txn: compare %zu: bad result",
                       i);
        if (cmps[i].target == STORE_CMP_VALUE)
            ECCL_TRY(check_value("txn", cmps[i].value, cmps[i].value_len));
    }
    ECCL_TRY(check_ops(then_ops, nthen));
    ECCL_TRY(check_ops(else_ops, nelse));
    ECCL_TRY(fault_op(s, "txn"));

    ecclResult_t res = ecclSuccess;
    size_t nkeys = ncmps + nthen + nelse;
    char **keys = NULL;
    struct store_cmp *c = NULL;
    struct store_op *t = NULL, *e = NULL;
    ECCL_CALLOC_GOTO(keys, nkeys + 1, "store_txn", res, out);
    ECCL_CALLOC_GOTO(c, ncmps + 1, "store_txn", res, out);
    ECCL_CALLOC_GOTO(t, nthen + 1, "store_txn", res, out);
    ECCL_CALLOC_GOTO(e, nelse + 1, "store_txn", res, out);
    for (size_t i = 0; i < ncmps; i++) {
        ECCL_TRY_GOTO(full_key(s, cmps[i].key, cmps[i].key_len, &keys[i]), res, out);
        c[i] = cmps[i];
        c[i].key = keys[i];
        c[i].key_len = s->prefix_len + cmps[i].key_len;
    }
    ECCL_TRY_GOTO(prefix_ops(s, then_ops, nthen, t, keys + ncmps), res, out);
    ECCL_TRY_GOTO(prefix_ops(s, else_ops, nelse, e, keys + ncmps + nthen), res, out);
    struct store_txn_result r = {0};
    ECCL_TRY_GOTO(s->be->txn(s, c, ncmps, t, nthen, e, nelse, deadline_ns, &r), res, out);
    for (size_t i = 0; i < r.count; i++) {
        res = strip_kv(s, &r.kvs[i]);
        if (res != ecclSuccess) {
            store_txn_result_fini(&r);
            goto out;
        }
    }
    *out = r;
out:
    if (keys)
        for (size_t i = 0; i < nkeys; i++)
            eccl_free(keys[i]);
    eccl_free(keys);
    eccl_free(c);
    eccl_free(t);
    eccl_free(e);
    return res;
}

ecclResult_t store_cas(struct store *s, const void *key, size_t key_len, int64_t expect_mod_rev,
                       const void *value, size_t value_len, int64_t lease, uint64_t deadline_ns,
                       bool *won_out, int64_t *rev_out, struct store_kv **current_out)
{
    ECCL_ARG_CHECK(won_out, "store_cas: won_out is NULL");
    ECCL_ARG_CHECK(expect_mod_rev >= 0, "store_cas: expect_mod_rev is negative");
    struct store_cmp cmp = {
        .key = key,
        .key_len = key_len,
        .target = expect_mod_rev ? STORE_CMP_MOD : STORE_CMP_CREATE,
        .result = STORE_CMP_EQUAL,
        .number = expect_mod_rev,
    };
    struct store_op put = {.type = STORE_OP_PUT,
                           .key = key,
                           .key_len = key_len,
                           .value = value,
                           .value_len = value_len,
                           .lease = lease};
    struct store_op get = {.type = STORE_OP_GET, .key = key, .key_len = key_len};
    struct store_txn_result r;
    ECCL_TRY(store_txn(s, &cmp, 1, &put, 1, &get, 1, deadline_ns, &r));
    struct store_kv *cur = NULL;
    if (!r.succeeded && current_out && r.count > 0) {
        cur = eccl_calloc(1, sizeof(*cur), "store_kv");
        if (!cur) {
            store_txn_result_fini(&r);
            return ecclSystemError;
        }
        *cur = r.kvs[0];
        r.kvs[0].key = r.kvs[0].value = NULL;
    }
    *won_out = r.succeeded;
    if (rev_out && r.succeeded)
        *rev_out = r.revision;
    if (current_out)
        *current_out = cur;
    store_txn_result_fini(&r);
    return ecclSuccess;
}

/* ---- leases ---- */

ecclResult_t store_lease_grant(struct store *s, int64_t ttl_s, uint64_t deadline_ns,
                               int64_t *id_out)
{
    ECCL_ARG_CHECK(s, "store_lease_grant: store is NULL");
    ECCL_ARG_CHECK(id_out, "store_lease_grant: id_out is NULL");
    ECCL_ARG_CHECK(ttl_s > 0 && ttl_s <= 9000000000LL, "store_lease_grant: bad TTL %lld",
                   (long long)ttl_s);
    ECCL_TRY(fault_op(s, "lease grant"));
    return s->be->lease_grant(s, ttl_s, deadline_ns, id_out);
}

ecclResult_t store_lease_revoke(struct store *s, int64_t id, uint64_t deadline_ns)
{
    ECCL_ARG_CHECK(s, "store_lease_revoke: store is NULL");
    ECCL_ARG_CHECK(id > 0, "store_lease_revoke: bad lease id %lld", (long long)id);
    store_lease_unkeep(s, id);
    ECCL_TRY(fault_op(s, "lease revoke"));
    return s->be->lease_revoke(s, id, deadline_ns);
}

ecclResult_t store_lease_keepalive_once(struct store *s, int64_t id, uint64_t deadline_ns,
                                        int64_t *ttl_out)
{
    ECCL_ARG_CHECK(s, "store_lease_keepalive_once: store is NULL");
    ECCL_ARG_CHECK(ttl_out, "store_lease_keepalive_once: ttl_out is NULL");
    ECCL_ARG_CHECK(id > 0, "store_lease_keepalive_once: bad lease id %lld", (long long)id);
    ECCL_TRY(fault_op(s, "lease keepalive"));
    return s->be->lease_keepalive(s, id, deadline_ns, ttl_out);
}

ecclResult_t store_lease_ttl(struct store *s, int64_t id, uint64_t deadline_ns, int64_t *ttl_out)
{
    ECCL_ARG_CHECK(s, "store_lease_ttl: store is NULL");
    ECCL_ARG_CHECK(ttl_out, "store_lease_ttl: ttl_out is NULL");
    ECCL_ARG_CHECK(id > 0, "store_lease_ttl: bad lease id %lld", (long long)id);
    ECCL_TRY(fault_op(s, "lease ttl"));
    return s->be->lease_ttl(s, id, deadline_ns, ttl_out);
}

static void ka_timespec(uint64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / ECCL_NS_PER_S);
    ts->tv_nsec = (long)(ns % ECCL_NS_PER_S);
}

/* Leases refreshed together: a batch takes the leases that are due and those due within a
 * quarter of their TTL, at most KA_BATCH_MAX of them. Refreshing that much early merges leases
 * granted at different times into one batch per period (third of the TTL): of two groups of
 * leases, one is always due within half a period (a sixth of the TTL) of the other's batch. */
#define KA_BATCH_MAX 1024

struct ka_item {
    struct store_kept_lease lease;
    uint64_t deadline;
    int64_t ttl;
    ecclResult_t res;
};

/* Refreshes the batch: one round trip when the backend has lease_keepalive_many, else one call
 * per lease. The fault point counts one hit per lease, as a refresh of its own would. */
static void ka_refresh(struct store *s, struct ka_item *b, size_t n, int64_t *ids, int64_t *ttls)
{
    uint64_t deadline = ECCL_NO_DEADLINE;
    size_t nids = 0;
    for (size_t i = 0; i < n; i++) {
        b[i].ttl = -1;
        b[i].res = ecclRemoteError;
        if (ECCL_FAULT("store_keepalive")) {
            WARN("store %s: keepalive of lease %lld failed (fault injection)", s->be->name,
                 (long long)b[i].lease.id);
            continue;
        }
        if (!s->be->lease_keepalive_many) {
            b[i].res = s->be->lease_keepalive(s, b[i].lease.id, b[i].deadline, &b[i].ttl);
            continue;
        }
        ids[nids++] = b[i].lease.id;
        if (b[i].deadline < deadline)
            deadline = b[i].deadline;
    }
    if (nids == 0)
        return;
    ecclResult_t res = s->be->lease_keepalive_many(s, ids, nids, deadline, ttls);
    size_t k = 0;
    for (size_t i = 0; i < n && k < nids; i++) {
        if (b[i].lease.id != ids[k])
            continue; /* failed by fault injection */
        if (res == ecclSuccess && ttls[k] >= 0) {
            b[i].res = ecclSuccess;
            b[i].ttl = ttls[k];
        }
        k++;
    }
}

/* The keepalive thread: refreshes each kept lease every third of its TTL, in batches; a failed
 * refresh is retried every 200 ms until the lease would have expired. */
static void *keepalive_main(void *arg)
{
    struct store *s = arg;
    struct ka_item *batch = eccl_calloc(KA_BATCH_MAX, sizeof(*batch), "store_ka");
    int64_t *ids = eccl_calloc(KA_BATCH_MAX, sizeof(*ids), "store_ka");
    int64_t *ttls = eccl_calloc(KA_BATCH_MAX, sizeof(*ttls), "store_ka");
    /* Without memory for a batch, refresh one lease at a time. */
    struct ka_item one;
    int64_t one_id, one_ttl;
    size_t cap = batch && ids && ttls ? KA_BATCH_MAX : 1;
    struct ka_item *b = cap > 1 ? batch : &one;
    int64_t *bids = cap > 1 ? ids : &one_id;
    int64_t *bttls = cap > 1 ? ttls : &one_ttl;
    pthread_mutex_lock(&s->ka_lock);
    while (!s->ka_stop) {
        uint64_t now = eccl_now_ns();
        uint64_t next = now + ECCL_NS_PER_S;
        bool any_due = false;
        for (size_t i = 0; i < s->nkept && !any_due; i++)
            any_due = s->kept[i].next_ns <= now;
        if (!any_due) {
            for (size_t i = 0; i < s->nkept; i++)
                if (s->kept[i].next_ns < next)
                    next = s->kept[i].next_ns;
            struct timespec ts;
            ka_timespec(next, &ts);
            pthread_cond_timedwait(&s->ka_cond, &s->ka_lock, &ts);
            continue;
        }
        size_t n = 0;
        for (size_t i = 0; i < s->nkept && n < cap; i++) {
            const struct store_kept_lease *k = &s->kept[i];
            uint64_t ttl_ns = (uint64_t)k->ttl_s * ECCL_NS_PER_S;
            if (k->next_ns > now + ttl_ns / 4)
                continue;
            uint64_t third = ttl_ns / 3;
            uint64_t deadline = now + (third > 100 * ECCL_NS_PER_MS ? third : 100 * ECCL_NS_PER_MS);
            if (deadline > k->expires_ns && k->expires_ns > now)
                deadline = k->expires_ns;
            b[n++] = (struct ka_item){.lease = *k, .deadline = deadline};
        }
        pthread_mutex_unlock(&s->ka_lock);

        ka_refresh(s, b, n, bids, bttls);
        now = eccl_now_ns();

        pthread_mutex_lock(&s->ka_lock);
        for (size_t j = 0; j < n; j++) {
            struct ka_item *it = &b[j];
            bool lost = (it->res == ecclSuccess && it->ttl <= 0) ||
                        (it->res != ecclSuccess && now >= it->lease.expires_ns);
            bool kept = false;
            for (size_t i = 0; i < s->nkept; i++) {
                if (s->kept[i].id != it->lease.id)
                    continue;
                kept = true;
                if (lost) {
                    s->kept[i] = s->kept[--s->nkept];
                } else if (it->res == ecclSuccess) {
                    s->kept[i].expires_ns = now + (uint64_t)it->ttl * ECCL_NS_PER_S;
                    s->kept[i].next_ns = now + (uint64_t)it->ttl * ECCL_NS_PER_S / 3;
                } else {
                    s->kept[i].next_ns = now + 200 * ECCL_NS_PER_MS;
                }
                break;
            }
            /* A lease unkept meanwhile (revoked by its owner, who knows) is not reported. */
            if (lost && kept) {
                WARN("store %s: lease %lld is lost (%s)", s->be->name, (long long)it->lease.id,
                     it->res == ecclSuccess ? "expired or revoked"
                                            : "could not be refreshed in time");
                if (it->lease.lost) {
                    pthread_mutex_unlock(&s->ka_lock);
                    it->lease.lost(it->lease.arg, it->lease.id);
                    pthread_mutex_lock(&s->ka_lock);
                }
            }
        }
    }
    pthread_mutex_unlock(&s->ka_lock);
    eccl_free(batch);
    eccl_free(ids);
    eccl_free(ttls);
    return NULL;
}

ecclResult_t store_lease_keep(struct store *s, int64_t id, int64_t ttl_s, store_lease_lost_fn lost,
                              void *arg)
{
    ECCL_ARG_CHECK(s, "store_lease_keep: store is NULL");
    ECCL_ARG_CHECK(id > 0, "store_lease_keep: bad lease id %lld", (long long)id);
    ECCL_ARG_CHECK(ttl_s > 0, "store_lease_keep: bad TTL %lld", (long long)ttl_s);
    ecclResult_t res = ecclSuccess;
    pthread_mutex_lock(&s->ka_lock);
    if (s->ka_stop) {
        WARN("store_lease_keep: the store is closing");
        res = ecclInvalidUsage;
        goto out;
    }
    for (size_t i = 0; i < s->nkept; i++) {
        if (s->kept[i].id == id) {
            s->kept[i].ttl_s = ttl_s;
            s->kept[i].lost = lost;
            s->kept[i].arg = arg;
            goto out;
        }
    }
    if (s->nkept == s->kept_cap) {
        size_t ncap = s->kept_cap ? s->kept_cap * 2 : 8;
        struct store_kept_lease *n = eccl_realloc(s->kept, ncap, sizeof(*n), "store_kept");
        if (!n) {
            res = ecclSystemError;
            goto out;
        }
        s->kept = n;
        s->kept_cap = ncap;
    }
    if (!s->ka_started) {
        int err = ECCL_FAULT_THREAD(pthread_create(&s->ka_thread, NULL, keepalive_main, s));
        if (err) {
            WARN("store: cannot start the keepalive thread: %s", strerror(err));
            res = ecclSystemError;
            goto out;
        }
        s->ka_started = true;
    }
    uint64_t now = eccl_now_ns();
    s->kept[s->nkept++] = (struct store_kept_lease){
        .id = id,
        .ttl_s = ttl_s,
        .next_ns = now + (uint64_t)ttl_s * ECCL_NS_PER_S / 3,
        .expires_ns = now + (uint64_t)ttl_s * ECCL_NS_PER_S,
        .lost = lost,
        .arg = arg,
    };
    pthread_cond_broadcast(&s->ka_cond);
out:
    pthread_mutex_unlock(&s->ka_lock);
    return res;
}

void store_lease_unkeep(struct store *s, int64_t id)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->ka_lock);
    for (size_t i = 0; i < s->nkept; i++) {
        if (s->kept[i].id == id) {
            s->kept[i] = s->kept[--s->nkept];
            break;
        }
    }
    pthread_mutex_unlock(&s->ka_lock);
}

/* ---- watches ---- */

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

/* Waits on w->cond until the deadline; false once it passed. */
static bool watch_wait(struct store_watch *w, uint64_t deadline_ns)
{
    if (deadline_ns == ECCL_NO_DEADLINE) {
        pthread_cond_wait(&w->cond, &w->lock);
        return true;
    }
    if (eccl_deadline_passed(deadline_ns))
        return false;
    struct timespec ts;
    ka_timespec(deadline_ns, &ts);
    pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    return true;
}

bool store_watch_stopping(struct store_watch *w)
{
    return atomic_load_explicit(&w->stop, memory_order_acquire) != 0;
}

/* ---- shared streams (hubs) ----
 *
 * Watches of one store handle that name a start revision and the same range share one stream: a
 * hub. Its upstream watch (a backend thread, not in s->watches) delivers each batch of events to
 * the hub, which keeps a copy (bounded: the oldest revisions go first; cache_from says from which
 * revision on the copy is complete) and hands the batch to every subscriber through
 * store_watch_deliver, which drops what a subscriber has seen or did not ask for (at or below its
 * last_rev). A new watch joins a hub whose copy starts at or before its start revision: it gets
 * the copied events from its start revision at once (on the creating thread), then the live
 * ones. Otherwise it starts a hub of its own. A store with K members on one handle thus holds one
 * stream per range instead of K; the events each watch sees are exactly those of a stream of its
 * own. */

/* What a hub keeps of its history, at most (it drops down to 3/4 when over). */
#define HUB_CACHE_BYTES  (4u << 20)
#define HUB_CACHE_EVENTS 16384

struct store_hub {
    struct store *s;
    struct store_hub *next; /* in s->hubs or s->dead_hubs, protected by s->watch_lock */
    bool listed;            /* in s->hubs (new watches may join), protected by s->watch_lock */
    int refs;               /* subscribers, protected by s->watch_lock */
    struct store_watch *up; /* the stream */
    /* Held while a batch is fanned out, so that a watch joins or leaves between batches. */
    pthread_mutex_t lock;
    struct store_watch **subs; /* protected by lock; NULL slots: left during a fan-out */
    size_t nsubs, subs_cap;
    bool holes;
    struct store_event *cache; /* protected by lock; full keys */
    size_t cache_len, cache_cap, cache_bytes;
    /* Every event at or after it that the stream delivered is in cache (written under lock,
     * read without it to pick a hub, then checked again under it). */
    _Atomic int64_t cache_from;
    /* Protected by lock: the stream is being created (a hub is listed from the start, so that
     * the watches created at the same moment wait for it rather than start streams of their
     * own), created, or failed for good. */
    bool creating, failed;
    pthread_cond_t cond; /* broadcast when creating ends */
};

/* The hub whose batch this thread is fanning out (its lock is held): a callback that creates or
 * destroys a watch of the same hub must not take the lock again. */
static _Thread_local struct store_hub *tls_hub;

static void hub_cache_drop(struct store_hub *h, size_t n)
{
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        h->cache_bytes -= h->cache[i].kv.key_len + h->cache[i].kv.value_len + sizeof(*h->cache);
        store_kv_fini(&h->cache[i].kv);
    }
    memmove(h->cache, h->cache + n, (h->cache_len - n) * sizeof(*h->cache));
    h->cache_len -= n;
}

/* Copies a batch into the cache (h->lock held); drops the oldest revisions when over budget. */
static void hub_cache_add(struct store_hub *h, const struct store_event *events, size_t n)
{
    if (h->cache_len + n > h->cache_cap) {
        size_t ncap = h->cache_cap ? h->cache_cap : 64;
        while (ncap < h->cache_len + n)
            ncap *= 2;
        struct store_event *c = eccl_realloc(h->cache, ncap, sizeof(*c), "store_hub_cache");
        if (!c)
            goto forget;
        h->cache = c;
        h->cache_cap = ncap;
    }
    for (size_t i = 0; i < n; i++) {
        struct store_event *e = &h->cache[h->cache_len];
        *e = events[i];
        const struct store_kv *kv = &events[i].kv;
        if (store_kv_set(&e->kv, kv->key, kv->key_len, kv->value ? kv->value : "",
                         kv->value ? kv->value_len : 0) != ecclSuccess)
            goto forget;
        h->cache_len++;
        h->cache_bytes += kv->key_len + e->kv.value_len + sizeof(*e);
    }
    if (h->cache_bytes <= HUB_CACHE_BYTES && h->cache_len <= HUB_CACHE_EVENTS)
        return;
    /* Drop whole revisions, oldest first, down to 3/4 of the budget. */
    size_t drop = 0, bytes = h->cache_bytes, len = h->cache_len;
    while (drop < h->cache_len &&
           (bytes > HUB_CACHE_BYTES / 4 * 3 || len > HUB_CACHE_EVENTS / 4 * 3)) {
        int64_t rev = h->cache[drop].kv.mod_rev;
        while (drop < h->cache_len && h->cache[drop].kv.mod_rev == rev) {
            bytes -= h->cache[drop].kv.key_len + h->cache[drop].kv.value_len + sizeof(*h->cache);
            len--;
            drop++;
        }
        atomic_store_explicit(&h->cache_from, rev + 1, memory_order_relaxed);
    }
    hub_cache_drop(h, drop);
    return;
forget:
    /* Out of memory: keep nothing; later watches start streams of their own. */
    atomic_store_explicit(&h->cache_from, events[n - 1].kv.mod_rev + 1, memory_order_relaxed);
    hub_cache_drop(h, h->cache_len);
}

/* The upstream's events (its thread): copied, then handed to every subscriber. */
static void hub_fanout(struct store_hub *h, const struct store_event *events, size_t n)
{
    pthread_mutex_lock(&h->lock);
    tls_hub = h;
    hub_cache_add(h, events, n);
    for (size_t i = 0; i < h->nsubs; i++) {
        struct store_watch *w = h->subs[i];
        if (!w)
            continue;
        ecclResult_t res = store_watch_deliver(w, events, n);
        if (res != ecclSuccess)
            store_watch_fail(w, res,
                             "could not deliver watch events (out of memory or a key "
                             "outside the prefix)");
    }
    if (h->holes) {
        size_t k = 0;
        for (size_t i = 0; i < h->nsubs; i++)
            if (h->subs[i])
                h->subs[k++] = h->subs[i];
        h->nsubs = k;
        h->holes = false;
    }
    tls_hub = NULL;
    pthread_mutex_unlock(&h->lock);
}

/* Unlists a hub (s->watch_lock held). */
static void hub_unlist_locked(struct store *s, struct store_hub *h)
{
    if (!h->listed)
        return;
    for (struct store_hub **p = &s->hubs; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    h->listed = false;
}

/* The upstream failed for good (its thread, or the creating thread): no watch joins the hub any
 * more, and every subscriber fails with the same result. */
static void hub_fail(struct store_hub *h, ecclResult_t res, const char *msg)
{
    struct store *s = h->s;
    pthread_mutex_lock(&s->watch_lock);
    hub_unlist_locked(s, h);
    pthread_mutex_unlock(&s->watch_lock);
    pthread_mutex_lock(&h->lock);
    h->failed = true;
    for (size_t i = 0; i < h->nsubs; i++)
        if (h->subs[i])
            store_watch_fail(h->subs[i], res, msg);
    pthread_mutex_unlock(&h->lock);
}

static void watch_free(struct store_watch *w);
static void watch_thread_stop(struct store_watch *w);

/* Stops the stream and frees the hub (no subscriber left, not listed, not on its own thread). */
static void hub_free(struct store_hub *h)
{
    if (h->up) {
        watch_thread_stop(h->up);
        watch_free(h->up);
    }
    hub_cache_drop(h, h->cache_len);
    eccl_free(h->cache);
    eccl_free(h->subs);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    eccl_free(h);
}

/* Frees the hubs whose last watch left on their own thread (s->watch_lock not held). */
static void hubs_reap(struct store *s)
{
    pthread_mutex_lock(&s->watch_lock);
    struct store_hub *keep = NULL, *reap = NULL;
    while (s->dead_hubs) {
        struct store_hub *h = s->dead_hubs;
        s->dead_hubs = h->next;
        struct store_hub **to = h == tls_hub ? &keep : &reap;
        h->next = *to;
        *to = h;
    }
    s->dead_hubs = keep;
    pthread_mutex_unlock(&s->watch_lock);
    while (reap) {
        struct store_hub *h = reap;
        reap = h->next;
        hub_free(h);
    }
}

/* Drops a subscriber's reference; the last one stops the stream (or, on the hub's own thread,
 * leaves it to hubs_reap). */
static void hub_put(struct store_hub *h)
{
    struct store *s = h->s;
    pthread_mutex_lock(&s->watch_lock);
    bool last = --h->refs == 0;
    if (last)
        hub_unlist_locked(s, h);
    if (last && h == tls_hub) {
        h->next = s->dead_hubs;
        s->dead_hubs = h;
        last = false;
    }
    pthread_mutex_unlock(&s->watch_lock);
    if (last)
        hub_free(h);
}

/* Removes a subscriber from its hub: no callback of it runs after this returns (unless called
 * from that very callback). */
static void hub_leave(struct store_watch *w)
{
    struct store_hub *h = w->hub;
    bool self = h == tls_hub;
    if (!self)
        pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->nsubs; i++) {
        if (h->subs[i] != w)
            continue;
        if (self) {
            h->subs[i] = NULL; /* the fan-out in progress closes the hole */
            h->holes = true;
        } else {
            memmove(&h->subs[i], &h->subs[i + 1], (h->nsubs - i - 1) * sizeof(*h->subs));
            h->nsubs--;
        }
        break;
    }
    if (!self)
        pthread_mutex_unlock(&h->lock);
    w->hub = NULL;
    hub_put(h);
}

static ecclResult_t hub_add_sub(struct store_hub *h, struct store_watch *w)
{
    if (h->nsubs == h->subs_cap) {
        size_t ncap = h->subs_cap ? h->subs_cap * 2 : 8;
        struct store_watch **n = eccl_realloc(h->subs, ncap, sizeof(*n), "store_hub_subs");
        if (!n)
            return ecclSystemError;
        h->subs = n;
        h->subs_cap = ncap;
    }
    h->subs[h->nsubs++] = w;
    return ecclSuccess;
}

static void watch_mark_created(struct store_watch *w)
{
    pthread_mutex_lock(&w->lock);
    w->created = true;
    pthread_mutex_unlock(&w->lock);
}

static bool same_range(const struct store_watch *a, const struct store_watch *b)
{
    return a->key_len == b->key_len && a->end_len == b->end_len &&
           memcmp(a->key, b->key, a->key_len) == 0 && memcmp(a->end, b->end, a->end_len) == 0;
}

static ecclResult_t watch_thread_start(struct store_watch *w, uint64_t deadline_ns);
static ecclResult_t watch_alloc(struct store *s, const char *full, size_t full_len, const char *end,
                                size_t end_len, int64_t start_rev, store_watch_fn cb, void *arg,
                                struct store_watch **out);

/* Joins a listed hub of w's range whose cache covers start_rev (waiting, until the deadline, for
 * one that is being created): replays the cached events from start_rev, then w gets the live
 * ones. *joined_out false: none fits (nothing changed). */
static ecclResult_t hub_try_join(struct store *s, struct store_watch *w, int64_t start_rev,
                                 uint64_t deadline_ns, bool *joined_out)
{
    *joined_out = false;
    struct store_hub *h;
    pthread_mutex_lock(&s->watch_lock);
    for (h = s->hubs; h; h = h->next) {
        if (same_range(h->up, w) &&
            atomic_load_explicit(&h->cache_from, memory_order_relaxed) <= start_rev) {
            h->refs++;
            break;
        }
    }
    pthread_mutex_unlock(&s->watch_lock);
    if (!h)
        return ecclSuccess;
    bool self = h == tls_hub;
    if (!self) {
        pthread_mutex_lock(&h->lock);
        while (h->creating) {
            if (eccl_deadline_passed(deadline_ns))
                break;
            struct timespec ts;
            ka_timespec(
                deadline_ns == ECCL_NO_DEADLINE ? eccl_now_ns() + ECCL_NS_PER_S : deadline_ns, &ts);
            pthread_cond_timedwait(&h->cond, &h->lock, &ts);
        }
    }
    ecclResult_t res = ecclSuccess;
    bool ok = !h->creating && !h->failed &&
              atomic_load_explicit(&h->cache_from, memory_order_relaxed) <= start_rev;
    if (ok) {
        w->hub = h;
        watch_mark_created(w);
        size_t i = 0;
        while (i < h->cache_len && h->cache[i].kv.mod_rev < start_rev)
            i++;
        /* The replay runs the callback here, with the hub's lock held: as in a fan-out, a
         * callback may create or destroy a watch of the hub without taking it again. */
        struct store_hub *outer = tls_hub;
        tls_hub = h;
        if (i < h->cache_len)
            res = store_watch_deliver(w, h->cache + i, h->cache_len - i);
        tls_hub = outer;
        if (res == ecclSuccess)
            res = hub_add_sub(h, w);
    }
    if (!self)
        pthread_mutex_unlock(&h->lock);
    if (ok && res == ecclSuccess) {
        *joined_out = true;
        return ecclSuccess;
    }
    w->hub = NULL;
    hub_put(h);
    return res;
}

/* Starts a hub for w's range from start_rev, with w its first subscriber. */
static ecclResult_t hub_start(struct store *s, struct store_watch *w, int64_t start_rev,
                              uint64_t deadline_ns)
{
    ecclResult_t res = ecclSuccess;
    struct store_hub *h;
    ECCL_CALLOC_GOTO(h, 1, "store_hub", res, out);
    h->s = s;
    h->refs = 1;
    h->creating = true;
    atomic_init(&h->cache_from, start_rev);
    pthread_mutex_init(&h->lock, NULL);
    cond_init_mono(&h->cond);
    ECCL_TRY_GOTO(hub_add_sub(h, w), res, err_free_hub);
    ECCL_TRY_GOTO(
        watch_alloc(s, w->key, w->key_len, w->end, w->end_len, start_rev, NULL, NULL, &h->up), res,
        err_free_hub);
    h->up->feeds = h;
    w->hub = h;
    pthread_mutex_lock(&s->watch_lock);
    h->listed = true;
    h->next = s->hubs;
    s->hubs = h;
    pthread_mutex_unlock(&s->watch_lock);
    res = watch_thread_start(h->up, deadline_ns);
    if (res != ecclSuccess) {
        pthread_mutex_lock(&s->watch_lock);
        hub_unlist_locked(s, h);
        pthread_mutex_unlock(&s->watch_lock);
    }
    pthread_mutex_lock(&h->lock);
    h->creating = false;
    h->failed = h->failed || res != ecclSuccess;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    if (res == ecclSuccess) {
        watch_mark_created(w);
        return ecclSuccess;
    }
    /* Its thread is joined already; watches that came meanwhile saw it fail and let go; the
     * last reference frees the hub. */
    watch_free(h->up);
    h->up = NULL;
    hub_leave(w);
    return res;

err_free_hub:
    if (h->up)
        watch_free(h->up);
    eccl_free(h->subs);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    eccl_free(h);
out:
    return res;
}

bool store_watch_created(struct store_watch *w, int64_t revision)
{
    pthread_mutex_lock(&w->lock);
    bool first = !w->created;
    int64_t last = atomic_load_explicit(&w->last_rev, memory_order_relaxed);
    if (first) {
        /* A watch "from now" starts after the revision the store had when it accepted it. */
        if (last < 0)
            atomic_store_explicit(&w->last_rev, revision, memory_order_release);
        w->created = true;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    if (!first && revision < last) {
        /* Revisions never go back in one store: this is another store (or one restarted empty)
         * at the same address. Waiting for it to reach our revision would miss its events. */
        char text[200];
        snprintf(text, sizeof(text),
                 "the store's revision went back from %lld to %lld on reconnect: it lost its "
                 "state; read it again",
                 (long long)last, (long long)revision);
        store_watch_fail(w, ecclRemoteError, text);
        return false;
    }
    return true;
}

void store_watch_fail(struct store_watch *w, ecclResult_t res, const char *msg)
{
    pthread_mutex_lock(&w->lock);
    bool first = !w->failed;
    if (first) {
        w->failed = true;
        w->fail_res = res;
        snprintf(w->fail_msg, sizeof(w->fail_msg), "%s", msg);
        pthread_cond_broadcast(&w->cond);
    }
    bool created = w->created;
    pthread_mutex_unlock(&w->lock);
    if (first && w->feeds)
        hub_fail(w->feeds, res, msg);
    if (first && created && w->cb)
        w->cb(w->arg, NULL, 0, res);
}

ecclResult_t store_watch_deliver(struct store_watch *w, const struct store_event *events, size_t n)
{
    struct store *s = w->s;
    int64_t last = atomic_load_explicit(&w->last_rev, memory_order_relaxed);
    size_t first = 0;
    /* Events already delivered (a replay after a resume) are dropped. Events of one revision
     * always arrive together, so a revision is either all new or all old. */
    while (first < n && events[first].kv.mod_rev <= last)
        first++;
    if (first == n)
        return ecclSuccess;
    n -= first;
    events += first;
    for (size_t i = 0; i < n; i++) {
        const struct store_kv *kv = &events[i].kv;
        if (kv->key_len < s->prefix_len || memcmp(kv->key, s->prefix, s->prefix_len) != 0) {
            WARN("store %s: watch event for a key outside the prefix", s->be->name);
            return ecclRemoteError;
        }
    }
    int64_t new_last = events[n - 1].kv.mod_rev;

    if (w->feeds) {
        hub_fanout(w->feeds, events, n);
        atomic_store_explicit(&w->last_rev, new_last, memory_order_release);
        return ecclSuccess;
    }
    if (w->cb) {
        struct store_event stack[32];
        struct store_event *ev = n <= 32 ? stack : eccl_calloc(n, sizeof(*ev), "store_events");
        if (!ev)
            return ecclSystemError;
        for (size_t i = 0; i < n; i++) {
            ev[i] = events[i];
            ev[i].kv.key += s->prefix_len;
            ev[i].kv.key_len -= s->prefix_len;
        }
        w->cb(w->arg, ev, n, ecclSuccess);
        if (ev != stack)
            eccl_free(ev);
        atomic_store_explicit(&w->last_rev, new_last, memory_order_release);
        return ecclSuccess;
    }

    ecclResult_t res = ecclSuccess;
    pthread_mutex_lock(&w->lock);
    if (w->q_head + w->q_len + n > w->q_cap) {
        /* Compact, then grow. */
        if (w->q_head > 0) {
            memmove(w->q, w->q + w->q_head, w->q_len * sizeof(*w->q));
            w->q_head = 0;
        }
        if (w->q_len + n > w->q_cap) {
            size_t ncap = w->q_cap ? w->q_cap : 64;
            while (ncap < w->q_len + n)
                ncap *= 2;
            struct store_event *q = eccl_realloc(w->q, ncap, sizeof(*q), "store_watch_q");
            if (!q) {
                res = ecclSystemError;
                goto out;
            }
            w->q = q;
            w->q_cap = ncap;
        }
    }
    size_t done = 0;
    for (; done < n; done++) {
        struct store_event *e = &w->q[w->q_head + w->q_len + done];
        const struct store_kv *kv = &events[done].kv;
        *e = events[done];
        res = store_kv_set(&e->kv, kv->key + s->prefix_len, kv->key_len - s->prefix_len,
                           kv->value ? kv->value : "", kv->value ? kv->value_len : 0);
        if (res != ecclSuccess)
            break;
    }
    if (res != ecclSuccess) {
        for (size_t i = 0; i < done; i++)
            store_kv_fini(&w->q[w->q_head + w->q_len + i].kv);
        goto out;
    }
    w->q_len += n;
    atomic_store_explicit(&w->last_rev, new_last, memory_order_release);
    pthread_cond_broadcast(&w->cond);
out:
    pthread_mutex_unlock(&w->lock);
    return res;
}

static void *watch_main(void *arg)
{
    struct store_watch *w = arg;
    w->s->be->watch_run(w);
    return NULL;
}

static void watch_free(struct store_watch *w)
{
    for (size_t i = 0; i < w->q_len; i++)
        store_kv_fini(&w->q[w->q_head + i].kv);
    eccl_free(w->q);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    eccl_free(w->key);
    eccl_free(w->end);
    eccl_free(w);
}

/* A new watch of [full, end) (copied) from start_rev, with no thread yet. */
static ecclResult_t watch_alloc(struct store *s, const char *full, size_t full_len, const char *end,
                                size_t end_len, int64_t start_rev, store_watch_fn cb, void *arg,
                                struct store_watch **out)
{
    ecclResult_t res = ecclSuccess;
    struct store_watch *w;
    ECCL_CALLOC_GOTO(w, 1, "store_watch", res, out);
    w->s = s;
    w->cb = cb;
    w->arg = arg;
    pthread_mutex_init(&w->lock, NULL);
    cond_init_mono(&w->cond);
    atomic_init(&w->stop, 0);
    atomic_init(&w->last_rev, start_rev > 0 ? start_rev - 1 : -1);
    ECCL_CALLOC_GOTO(w->key, full_len + 1, "store_key", res, err_free_watch);
    memcpy(w->key, full, full_len);
    w->key_len = full_len;
    ECCL_CALLOC_GOTO(w->end, full_len + 1, "store_key", res, err_free_watch);
    if (end_len)
        memcpy(w->end, end, end_len);
    w->end_len = end_len;
    *out = w;
    return ecclSuccess;
err_free_watch:
    watch_free(w);
out:
    return res;
}

/* Stops a watch's thread: at once when the backend can wake it. */
static void watch_thread_stop(struct store_watch *w)
{
    atomic_store_explicit(&w->stop, 1, memory_order_release);
    if (w->s->be->watch_wake) {
        pthread_mutex_lock(&w->lock);
        w->s->be->watch_wake(w);
        pthread_mutex_unlock(&w->lock);
    }
    pthread_join(w->thread, NULL);
}

/* Starts w's thread and waits until the store accepted the watch; on failure the thread is
 * stopped (w is the caller's to free). */
static ecclResult_t watch_thread_start(struct store_watch *w, uint64_t deadline_ns)
{
    struct store *s = w->s;
    ecclResult_t res = ecclSuccess;
    int err = ECCL_FAULT_THREAD(pthread_create(&w->thread, NULL, watch_main, w));
    if (err) {
        WARN("store: cannot start a watch thread: %s", strerror(err));
        return ecclSystemError;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->created && !w->failed)
        if (!watch_wait(w, deadline_ns))
            break;
    bool ok = w->created && !w->failed;
    if (!ok) {
        if (w->failed) {
            WARN("store %s: watch not created: %s", s->be->name, w->fail_msg);
            res = w->fail_res;
        } else {
            res = store_timed_out(s->be->name, "watch creation");
        }
    }
    pthread_mutex_unlock(&w->lock);
    if (!ok)
        watch_thread_stop(w);
    return res;
}

ecclResult_t store_watch_create(struct store *s, const void *key, size_t key_len, bool prefix,
                                int64_t start_rev, store_watch_fn cb, void *arg,
                                uint64_t deadline_ns, struct store_watch **out)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(s, "store_watch_create: store is NULL");
    ECCL_ARG_CHECK(out, "store_watch_create: out is NULL");
    ECCL_ARG_CHECK(start_rev >= 0, "store_watch_create: negative start revision");
    ECCL_TRY(check_key("watch", key, key_len, prefix));
    hubs_reap(s);
    char *full = NULL, *end = NULL;
    size_t end_len = 0;
    struct store_watch *w = NULL;
    ECCL_TRY_GOTO(full_key(s, key, key_len, &full), res, out);
    ECCL_CALLOC_GOTO(end, s->prefix_len + key_len + 1, "store_key", res, out);
    if (prefix)
        store_range_end(full, s->prefix_len + key_len, end, &end_len);
    ECCL_TRY_GOTO(
        watch_alloc(s, full, s->prefix_len + key_len, end, end_len, start_rev, cb, arg, &w), res,
        out);
    if (start_rev > 0) {
        /* Share a stream with the watches of the same range. */
        bool joined = false;
        ECCL_TRY_GOTO(hub_try_join(s, w, start_rev, deadline_ns, &joined), res, err_free_watch);
        if (!joined)
            ECCL_TRY_GOTO(hub_start(s, w, start_rev, deadline_ns), res, err_free_watch);
    } else {
        /* "From now": a stream of its own, which learns the revision it starts after. */
        ECCL_TRY_GOTO(watch_thread_start(w, deadline_ns), res, err_free_watch);
    }
    pthread_mutex_lock(&s->watch_lock);
    w->next = s->watches;
    s->watches = w;
    pthread_mutex_unlock(&s->watch_lock);
    *out = w;
    w = NULL;
    goto out;

err_free_watch:
    watch_free(w);
out:
    eccl_free(full);
    eccl_free(end);
    return res;
}

ecclResult_t store_watch_poll(struct store_watch *w, size_t max, uint64_t deadline_ns,
                              struct store_event **events_out, size_t *n_out)
{
    ECCL_ARG_CHECK(w, "store_watch_poll: watch is NULL");
    ECCL_ARG_CHECK(!w->cb, "store_watch_poll: the watch delivers through a callback");
    ECCL_ARG_CHECK(events_out && n_out, "store_watch_poll: output is NULL");
    ECCL_ARG_CHECK(max > 0, "store_watch_poll: max is 0");
    ecclResult_t res = ecclSuccess;
    pthread_mutex_lock(&w->lock);
    while (w->q_len == 0 && !w->failed)
        if (!watch_wait(w, deadline_ns))
            break;
    if (w->q_len == 0) {
        if (w->failed) {
            WARN("store %s: watch ended: %s", w->s->be->name, w->fail_msg);
            res = w->fail_res;
        } else {
            *events_out = NULL;
            *n_out = 0;
        }
        goto out;
    }
    size_t n = ECCL_MIN(max, w->q_len);
    struct store_event *ev = eccl_calloc(n, sizeof(*ev), "store_events");
    if (!ev) {
        res = ecclSystemError;
        goto out;
    }
    memcpy(ev, w->q + w->q_head, n * sizeof(*ev));
    w->q_head += n;
    w->q_len -= n;
    if (w->q_len == 0)
        w->q_head = 0;
    *events_out = ev;
    *n_out = n;
out:
    pthread_mutex_unlock(&w->lock);
    return res;
}

void store_events_free(struct store_event *events, size_t n)
{
    if (!events)
        return;
    for (size_t i = 0; i < n; i++)
        store_kv_fini(&events[i].kv);
    eccl_free(events);
}

int64_t store_watch_last_rev(struct store_watch *w)
{
    return atomic_load_explicit(&w->last_rev, memory_order_acquire);
}

void store_watch_destroy(struct store_watch *w)
{
    if (!w)
        return;
    struct store *s = w->s;
    pthread_mutex_lock(&s->watch_lock);
    for (struct store_watch **p = &s->watches; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->watch_lock);
    if (w->hub)
        hub_leave(w);
    else
        watch_thread_stop(w);
    watch_free(w);
    hubs_reap(s);
}

/* ---- wait for a key ---- */

ecclResult_t store_wait_key(struct store *s, const void *key, size_t key_len, uint64_t deadline_ns,
                            struct store_kv **kv_out)
{
    ECCL_ARG_CHECK(kv_out, "store_wait_key: kv_out is NULL");
    struct store_kv *kv = NULL;
    int64_t rev = 0;
    ECCL_TRY(store_get(s, key, key_len, deadline_ns, &kv, &rev));
    if (kv) {
        *kv_out = kv;
        return ecclSuccess;
    }
    /* Watch from just after the read: a put in between is replayed, none is missed. */
    struct store_watch *w;
    ECCL_TRY(store_watch_create(s, key, key_len, false, rev + 1, NULL, NULL, deadline_ns, &w));
    ecclResult_t res = ecclSuccess;
    for (;;) {
        struct store_event *ev = NULL;
        size_t n = 0;
        ECCL_TRY_GOTO(store_watch_poll(w, 64, deadline_ns, &ev, &n), res, out);
        if (n == 0) {
            res = store_timed_out(s->be->name, "waiting for a key");
            goto out;
        }
        /* Every event is for this key: the last one says whether it exists now. */
        if (ev[n - 1].type == STORE_EVENT_PUT) {
            kv = eccl_calloc(1, sizeof(*kv), "store_kv");
            if (!kv) {
                res = ecclSystemError;
            } else {
                *kv = ev[n - 1].kv;
                ev[n - 1].kv.key = ev[n - 1].kv.value = NULL;
            }
        }
        store_events_free(ev, n);
        if (kv || res != ecclSuccess)
            break;
    }
    if (res == ecclSuccess)
        *kv_out = kv;
out:
    store_watch_destroy(w);
    return res;
}

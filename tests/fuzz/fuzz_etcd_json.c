/*
 * fuzz_etcd_json.c - libFuzzer target for the etcd backend's response parsing (store/etcd_json.c
 * and the field reads store/etcd.c does on a reply): each input is parsed as a watch stream line
 * (created, events, progress, canceled, stream errors), as a range, put, txn, lease grant, lease
 * keepalive and lease time-to-live response, as a keepalive stream (one JSON result a line), as
 * an error body (auth and gRPC errors), and as base64. Contract: bad input gives an error, never
 * a crash or a leak; a range response that parses re-encodes (etcd_json_set_bytes/_i64) to one
 * that parses to the same kvs; base64 decode(encode(x)) == x.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "store/etcd_json.h"
#include "tests/fuzz/fuzz_util.h"

static bool kv_equal(const struct store_kv *a, const struct store_kv *b)
{
    return a->key_len == b->key_len && !memcmp(a->key, b->key, a->key_len) &&
           a->value_len == b->value_len && !memcmp(a->value, b->value, a->value_len) &&
           a->create_rev == b->create_rev && a->mod_rev == b->mod_rev && a->version == b->version &&
           a->lease == b->lease;
}

static json_t *kv_to_json(const struct store_kv *kv)
{
    json_t *o = json_object();
    FUZZ_CHECK(o && etcd_json_set_bytes(o, "key", kv->key, kv->key_len) == ecclSuccess &&
               etcd_json_set_bytes(o, "value", kv->value, kv->value_len) == ecclSuccess &&
               etcd_json_set_i64(o, "create_revision", kv->create_rev) == ecclSuccess &&
               etcd_json_set_i64(o, "mod_revision", kv->mod_rev) == ecclSuccess &&
               etcd_json_set_i64(o, "version", kv->version) == ecclSuccess &&
               etcd_json_set_i64(o, "lease", kv->lease) == ecclSuccess);
    return o;
}

/* decode(encode(decode(x))) == decode(x) for a range response. */
static void range_roundtrip(const struct store_kvs *kvs)
{
    json_t *resp = json_object(), *hdr = json_object(), *arr = json_array();
    FUZZ_CHECK(resp && hdr && arr);
    FUZZ_CHECK(etcd_json_set_i64(hdr, "revision", kvs->revision) == ecclSuccess);
    json_object_set_new(resp, "header", hdr);
    for (size_t i = 0; i < kvs->count; i++)
        json_array_append_new(arr, kv_to_json(&kvs->kvs[i]));
    json_object_set_new(resp, "kvs", arr);
    if (kvs->more)
        json_object_set_new(resp, "more", json_true());
    struct store_kvs again;
    FUZZ_CHECK(etcd_parse_range(resp, &again) == ecclSuccess);
    FUZZ_CHECK(again.count == kvs->count && again.revision == kvs->revision &&
               again.more == kvs->more);
    for (size_t i = 0; i < kvs->count; i++) {
        FUZZ_CHECK(kv_equal(&again.kvs[i], &kvs->kvs[i]));
        store_kv_fini(&again.kvs[i]);
    }
    eccl_free(again.kvs);
    json_decref(resp);
}

/* What store/etcd.c reads from a put, lease grant, keepalive, time-to-live or revoke reply. */
static void reply_fields(const json_t *j)
{
    int64_t v;
    bool b;
    etcd_json_revision(j, &v);
    etcd_json_i64(j, "ID", &v);
    etcd_json_i64(j, "TTL", &v);
    etcd_json_i64(j, "grantedTTL", &v);
    etcd_json_bool(j, "succeeded", &b);
    const json_t *r = json_object_get(j, "result"); /* a keepalive stream line */
    if (json_is_object(r)) {
        etcd_json_i64(r, "ID", &v);
        etcd_json_i64(r, "TTL", &v);
    }
    const json_t *prev = json_object_get(j, "prev_kv");
    struct store_kv kv;
    memset(&kv, 0, sizeof(kv));
    if (prev && etcd_json_kv(prev, &kv) == ecclSuccess)
        store_kv_fini(&kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct etcd_watch_msg m;
    if (etcd_parse_watch_line(text, size, &m) == ecclSuccess)
        etcd_watch_msg_fini(&m);

    json_error_t err;
    /* As etcd.c loads a reply: the first JSON value of the body. */
    json_t *j = json_loadb(text, size, JSON_DISABLE_EOF_CHECK, &err);
    if (j) {
        struct store_kvs kvs;
        if (etcd_parse_range(j, &kvs) == ecclSuccess) {
            range_roundtrip(&kvs);
            for (size_t i = 0; i < kvs.count; i++)
                store_kv_fini(&kvs.kvs[i]);
            eccl_free(kvs.kvs);
        }
        struct store_txn_result r;
        if (etcd_parse_txn(j, &r) == ecclSuccess)
            store_txn_result_fini(&r);
        reply_fields(j);
        json_decref(j);
    }
    /* A keepalive stream: one JSON object a line. */
    for (size_t i = 0; i < size;) {
        const char *nl = memchr(text + i, '\n', size - i);
        size_t llen = nl ? (size_t)(nl - (text + i)) : size - i;
        json_t *line = llen ? json_loadb(text + i, llen, 0, &err) : NULL;
        if (line)
            reply_fields(line);
        json_decref(line);
        i += llen + 1;
    }
    char msg[256];
    int code;
    etcd_parse_error(text, size, msg, sizeof(msg), &code);
    FUZZ_CHECK(memchr(msg, 0, sizeof(msg)) != NULL);

    uint8_t *dec;
    size_t len;
    if (etcd_b64_decode(text, size, &dec, &len) == ecclSuccess) {
        char *enc;
        FUZZ_CHECK(etcd_b64_encode(dec, len, &enc) == ecclSuccess);
        uint8_t *dec2;
        size_t len2;
        FUZZ_CHECK(etcd_b64_decode(enc, strlen(enc), &dec2, &len2) == ecclSuccess);
        FUZZ_CHECK(len2 == len && !memcmp(dec2, dec, len));
        eccl_free(dec2);
        eccl_free(enc);
        eccl_free(dec);
    }
    /* Any bytes survive the trip through base64. */
    char *enc;
    FUZZ_CHECK(etcd_b64_encode(data, size, &enc) == ecclSuccess);
    FUZZ_CHECK(etcd_b64_decode(enc, strlen(enc), &dec, &len) == ecclSuccess);
    FUZZ_CHECK(len == size && (size == 0 || !memcmp(dec, data, size)));
    eccl_free(dec);
    eccl_free(enc);
    return 0;
}

/* ---- seeds: replies as the etcd v3 JSON gateway writes them, built with the encoders ---- */

static void seed_json(const char *name, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(s != NULL);
    fuzz_seed(name, s, strlen(s));
    free(s);
    json_decref(j);
}

static json_t *header(int64_t rev)
{
    json_t *h = json_object();
    etcd_json_set_i64(h, "cluster_id", 14841639068965178418ULL & INT64_MAX);
    etcd_json_set_i64(h, "revision", rev);
    etcd_json_set_i64(h, "raft_term", 2);
    return h;
}

static json_t *kv_json(const char *key, const char *value, int64_t rev, int64_t lease)
{
    struct store_kv kv = {.key = (char *)key,
                          .key_len = strlen(key),
                          .value = (char *)value,
                          .value_len = strlen(value),
                          .create_rev = rev,
                          .mod_rev = rev,
                          .version = 1,
                          .lease = lease};
    return kv_to_json(&kv);
}

static void fuzz_seeds(void)
{
    json_t *j = json_object(), *a = json_array();
    json_object_set_new(j, "header", header(12));
    json_array_append_new(a, kv_json("eccl/job/s/g", "generation", 10, 0));
    json_array_append_new(a, kv_json("eccl/job/s/m/a", "member", 11, 7587));
    json_object_set_new(j, "kvs", a);
    json_object_set_new(j, "more", json_true());
    etcd_json_set_i64(j, "count", 3);
    seed_json("range", j);

    j = json_object();
    json_object_set_new(j, "header", header(13));
    seed_json("put", j);

    j = json_object();
    json_object_set_new(j, "header", header(14));
    json_object_set_new(j, "succeeded", json_true());
    a = json_array();
    json_t *rr = json_object(), *inner = json_object(), *kvs = json_array();
    json_object_set_new(inner, "header", header(14));
    json_array_append_new(kvs, kv_json("k", "v", 5, 0));
    json_object_set_new(inner, "kvs", kvs);
    json_object_set_new(rr, "response_range", inner);
    json_array_append_new(a, rr);
    rr = json_object();
    json_object_set_new(rr, "response_put", json_pack("{s:o}", "header", header(14)));
    json_array_append_new(a, rr);
    json_object_set_new(j, "responses", a);
    seed_json("txn", j);

    j = json_object();
    json_object_set_new(j, "header", header(15));
    etcd_json_set_i64(j, "ID", 7587868212345678LL);
    etcd_json_set_i64(j, "TTL", 10);
    seed_json("lease-grant", j);

    j = json_object();
    json_t *r = json_object();
    json_object_set_new(r, "header", header(15));
    etcd_json_set_i64(r, "ID", 7587868212345678LL);
    etcd_json_set_i64(r, "TTL", 10);
    json_object_set_new(j, "result", r);
    char *line = json_dumps(j, JSON_COMPACT);
    char stream[1024];
    snprintf(stream, sizeof(stream), "%s\n%s\n", line, line);
    fuzz_seed("lease-keepalive-stream", stream, strlen(stream));
    free(line);
    json_decref(j);

    j = json_object();
    json_object_set_new(j, "header", header(15));
    etcd_json_set_i64(j, "ID", 7587868212345678LL);
    etcd_json_set_i64(j, "TTL", 9);
    etcd_json_set_i64(j, "grantedTTL", 10);
    seed_json("lease-ttl", j);

    j = json_object();
    r = json_object();
    json_object_set_new(r, "header", header(16));
    json_object_set_new(r, "created", json_true());
    etcd_json_set_i64(r, "watch_id", 0);
    json_object_set_new(j, "result", r);
    seed_json("watch-created", j);

    j = json_object();
    r = json_object();
    json_object_set_new(r, "header", header(17));
    a = json_array();
    json_t *ev = json_object();
    json_object_set_new(ev, "kv", kv_json("eccl/job/s/m/b", "member", 17, 5));
    json_array_append_new(a, ev);
    ev = json_object();
    json_object_set_new(ev, "type", json_string("DELETE"));
    json_t *dkv = json_object();
    etcd_json_set_bytes(dkv, "key", "eccl/job/s/m/a", 14);
    etcd_json_set_i64(dkv, "mod_revision", 17);
    json_object_set_new(ev, "kv", dkv);
    json_array_append_new(a, ev);
    json_object_set_new(r, "events", a);
    json_object_set_new(j, "result", r);
    seed_json("watch-events", j);

    j = json_object();
    r = json_object();
    json_object_set_new(r, "header", header(18));
    json_object_set_new(r, "canceled", json_true());
    etcd_json_set_i64(r, "compact_revision", 9);
    json_object_set_new(r, "cancel_reason",
                        json_string("mvcc: required revision has been compacted"));
    json_object_set_new(j, "result", r);
    seed_json("watch-canceled", j);

    j = json_object();
    r = json_object();
    json_object_set_new(r, "grpc_code", json_integer(14));
    json_object_set_new(r, "http_code", json_integer(503));
    json_object_set_new(r, "message", json_string("etcdserver: no leader"));
    json_object_set_new(r, "http_status", json_string("Service Unavailable"));
    json_object_set_new(j, "error", r);
    seed_json("watch-error", j);

    j = json_object();
    json_object_set_new(j, "error", json_string("etcdserver: invalid auth token"));
    json_object_set_new(j, "code", json_integer(16));
    json_object_set_new(j, "message", json_string("etcdserver: invalid auth token"));
    seed_json("error-auth", j);

    j = json_object();
    json_object_set_new(j, "code", json_integer(5));
    json_object_set_new(j, "message", json_string("etcdserver: requested lease not found"));
    seed_json("error-lease", j);

    fuzz_seed("b64", "ZWNjbC9qb2Iv", 12);
}

/*
 * etcd_json.c - the JSON side of the etcd backend (see etcd_json.h and
 * /work/shared/notes: bytes are base64, int64 are strings, defaults are omitted, PUT events carry
 * no "type").
 */
#include "store/etcd_json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "store/store_int.h"

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

ecclResult_t etcd_b64_encode(const void *in, size_t len, char **out)
{
    const uint8_t *p = in;
    size_t olen = (len + 2) / 3 * 4;
    char *o = eccl_calloc(olen + 1, 1, "store_b64");
    if (!o)
        return ecclSystemError;
    size_t j = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        o[j++] = b64_chars[(v >> 18) & 63];
        o[j++] = b64_chars[(v >> 12) & 63];
        o[j++] = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
        o[j++] = i + 2 < len ? b64_chars[v & 63] : '=';
    }
    *out = o;
    return ecclSuccess;
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

ecclResult_t etcd_b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len)
{
    if (len % 4 != 0) {
        WARN("store etcd: base64 text of length %zu is not a multiple of 4", len);
        return ecclRemoteError;
    }
    uint8_t *o = eccl_calloc(len / 4 * 3 + 1, 1, "store_b64");
    if (!o)
        return ecclSystemError;
    size_t j = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_val(c)) < 0) {
                eccl_free(o);
                WARN("store etcd: bad base64 byte at offset %zu", i + k);
                return ecclRemoteError;
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        o[j++] = (uint8_t)(w >> 16);
        if (pad < 2)
            o[j++] = (uint8_t)(w >> 8);
        if (pad < 1)
            o[j++] = (uint8_t)w;
    }
    *out = o;
    *out_len = j;
    return ecclSuccess;
}

ecclResult_t etcd_json_set_bytes(json_t *obj, const char *name, const void *p, size_t len)
{
    char *b;
    ECCL_TRY(etcd_b64_encode(p, len, &b));
    int rc = json_object_set_new(obj, name, json_string(b));
    eccl_free(b);
    return rc == 0 ? ecclSuccess : ecclSystemError;
}

ecclResult_t etcd_json_set_i64(json_t *obj, const char *name, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return json_object_set_new(obj, name, json_string(buf)) == 0 ? ecclSuccess : ecclSystemError;
}

ecclResult_t etcd_json_i64(const json_t *obj, const char *name, int64_t *out)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        *out = 0;
        return ecclSuccess;
    }
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return ecclSuccess;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno == 0 && end != s && *end == 0 && (size_t)(end - s) == json_string_length(v)) {
            *out = x;
            return ecclSuccess;
        }
    }
    WARN("store etcd: field '%s' is not an int64", name);
    return ecclRemoteError;
}

ecclResult_t etcd_json_bool(const json_t *obj, const char *name, bool *out)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        *out = false;
        return ecclSuccess;
    }
    if (!json_is_boolean(v)) {
        WARN("store etcd: field '%s' is not a boolean", name);
        return ecclRemoteError;
    }
    *out = json_is_true(v);
    return ecclSuccess;
}

ecclResult_t etcd_json_revision(const json_t *resp, int64_t *out)
{
    json_t *h = json_object_get(resp, "header");
    if (!h) {
        *out = 0;
        return ecclSuccess;
    }
    if (!json_is_object(h)) {
        WARN("store etcd: 'header' is not an object");
        return ecclRemoteError;
    }
    return etcd_json_i64(h, "revision", out);
}

/* A bytes member: absent is empty. *out NUL-terminated. */
static ecclResult_t json_bytes(const json_t *obj, const char *name, uint8_t **out, size_t *len)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v))
        return etcd_b64_decode("", 0, out, len);
    if (!json_is_string(v)) {
        WARN("store etcd: field '%s' is not a base64 string", name);
        return ecclRemoteError;
    }
    return etcd_b64_decode(json_string_value(v), json_string_length(v), out, len);
}

ecclResult_t etcd_json_kv(const json_t *obj, struct store_kv *kv)
{
    if (!json_is_object(obj)) {
        WARN("store etcd: a kv is not an object");
        return ecclRemoteError;
    }
    ecclResult_t res = ecclSuccess;
    uint8_t *k = NULL, *v = NULL;
    size_t klen = 0, vlen = 0;
    int64_t create, mod, ver, lease;
    ECCL_TRY_GOTO(json_bytes(obj, "key", &k, &klen), res, out);
    ECCL_TRY_GOTO(json_bytes(obj, "value", &v, &vlen), res, out);
    ECCL_TRY_GOTO(etcd_json_i64(obj, "create_revision", &create), res, out);
    ECCL_TRY_GOTO(etcd_json_i64(obj, "mod_revision", &mod), res, out);
    ECCL_TRY_GOTO(etcd_json_i64(obj, "version", &ver), res, out);
    ECCL_TRY_GOTO(etcd_json_i64(obj, "lease", &lease), res, out);
    kv->key = (char *)k;
    kv->key_len = klen;
    kv->value = (char *)v;
    kv->value_len = vlen;
    kv->create_rev = create;
    kv->mod_rev = mod;
    kv->version = ver;
    kv->lease = lease;
    return ecclSuccess;
out:
    eccl_free(k);
    eccl_free(v);
    return res;
}

ecclResult_t etcd_json_kvs(const json_t *resp, struct store_kv **kvs, size_t *count, size_t *cap)
{
    json_t *arr = json_object_get(resp, "kvs");
    if (!arr || json_is_null(arr))
        return ecclSuccess;
    if (!json_is_array(arr)) {
        WARN("store etcd: 'kvs' is not an array");
        return ecclRemoteError;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        struct store_kv *kv = store_kvs_append(kvs, count, cap);
        if (!kv)
            return ecclSystemError;
        ecclResult_t res = etcd_json_kv(json_array_get(arr, i), kv);
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

ecclResult_t etcd_parse_range(const json_t *resp, struct store_kvs *out)
{
    if (!json_is_object(resp)) {
        WARN("store etcd: a range response is not an object");
        return ecclRemoteError;
    }
    struct store_kv *kvs = NULL;
    size_t count = 0, cap = 0;
    int64_t rev;
    bool more;
    ecclResult_t res = etcd_json_revision(resp, &rev);
    if (res == ecclSuccess)
        res = etcd_json_bool(resp, "more", &more);
    if (res == ecclSuccess)
        res = etcd_json_kvs(resp, &kvs, &count, &cap);
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

ecclResult_t etcd_parse_txn(const json_t *resp, struct store_txn_result *out)
{
    if (!json_is_object(resp)) {
        WARN("store etcd: a txn response is not an object");
        return ecclRemoteError;
    }
    struct store_kv *kvs = NULL;
    size_t count = 0, cap = 0;
    int64_t rev;
    bool ok;
    ECCL_TRY(etcd_json_revision(resp, &rev));
    ECCL_TRY(etcd_json_bool(resp, "succeeded", &ok));
    json_t *arr = json_object_get(resp, "responses");
    ecclResult_t res = ecclSuccess;
    if (arr && !json_is_null(arr)) {
        if (!json_is_array(arr)) {
            WARN("store etcd: 'responses' is not an array");
            return ecclRemoteError;
        }
        for (size_t i = 0; i < json_array_size(arr) && res == ecclSuccess; i++) {
            json_t *r = json_array_get(arr, i);
            if (!json_is_object(r)) {
                WARN("store etcd: a txn response entry is not an object");
                res = ecclRemoteError;
                break;
            }
            json_t *range = json_object_get(r, "response_range");
            if (range) {
                if (!json_is_object(range)) {
                    WARN("store etcd: 'response_range' is not an object");
                    res = ecclRemoteError;
                    break;
                }
                res = etcd_json_kvs(range, &kvs, &count, &cap);
            }
        }
    }
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

void etcd_watch_msg_fini(struct etcd_watch_msg *m)
{
    for (size_t i = 0; i < m->nevents; i++)
        store_kv_fini(&m->events[i].kv);
    eccl_free(m->events);
    m->events = NULL;
    m->nevents = 0;
}

ecclResult_t etcd_parse_watch_line(const char *text, size_t len, struct etcd_watch_msg *out)
{
    json_error_t jerr;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        WARN("store etcd: bad JSON on the watch stream: %s", root ? "not an object" : jerr.text);
        json_decref(root);
        return ecclRemoteError;
    }
    ecclResult_t res = ecclSuccess;
    json_t *err = json_object_get(root, "error");
    json_t *r = json_object_get(root, "result");
    if (err && !r) {
        out->is_error = true;
        json_t *m = json_is_object(err) ? json_object_get(err, "message") : NULL;
        snprintf(out->cancel_reason, sizeof(out->cancel_reason), "%s",
                 json_is_string(m) ? json_string_value(m) : "stream error");
        goto out;
    }
    if (!json_is_object(r)) {
        WARN("store etcd: watch stream line without a 'result' object");
        res = ecclRemoteError;
        goto out;
    }
    ECCL_TRY_GOTO(etcd_json_revision(r, &out->revision), res, out);
    ECCL_TRY_GOTO(etcd_json_bool(r, "created", &out->created), res, out);
    ECCL_TRY_GOTO(etcd_json_bool(r, "canceled", &out->canceled), res, out);
    ECCL_TRY_GOTO(etcd_json_i64(r, "compact_revision", &out->compact_revision), res, out);
    json_t *reason = json_object_get(r, "cancel_reason");
    if (json_is_string(reason))
        snprintf(out->cancel_reason, sizeof(out->cancel_reason), "%s", json_string_value(reason));
    json_t *evs = json_object_get(r, "events");
    if (evs && !json_is_null(evs)) {
        if (!json_is_array(evs)) {
            WARN("store etcd: 'events' is not an array");
            res = ecclRemoteError;
            goto out;
        }
        size_t n = json_array_size(evs);
        if (n > 0) {
            ECCL_CALLOC_GOTO(out->events, n, "store_etcd_events", res, out);
        }
        int64_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(evs, i);
            if (!json_is_object(e)) {
                WARN("store etcd: a watch event is not an object");
                res = ecclRemoteError;
                goto err_free;
            }
            json_t *type = json_object_get(e, "type");
            enum store_event_type t = STORE_EVENT_PUT;
            if (type && !json_is_null(type)) {
                if (json_is_string(type) && strcmp(json_string_value(type), "DELETE") == 0)
                    t = STORE_EVENT_DELETE;
                else if (json_is_string(type) && strcmp(json_string_value(type), "PUT") == 0)
                    t = STORE_EVENT_PUT;
                else if (json_is_integer(type) && json_integer_value(type) == 1)
                    t = STORE_EVENT_DELETE;
                else if (!(json_is_integer(type) && json_integer_value(type) == 0)) {
                    WARN("store etcd: unknown watch event type");
                    res = ecclRemoteError;
                    goto err_free;
                }
            }
            ECCL_TRY_GOTO(etcd_json_kv(json_object_get(e, "kv"), &out->events[i].kv), res,
                          err_free);
            out->events[i].type = t;
            out->nevents++;
            if (out->events[i].kv.mod_rev < prev || out->events[i].kv.mod_rev <= 0) {
                WARN("store etcd: watch events out of revision order");
                res = ecclRemoteError;
                goto err_free;
            }
            prev = out->events[i].kv.mod_rev;
        }
    }
    goto out;
err_free:
    etcd_watch_msg_fini(out);
out:
    json_decref(root);
    return res;
}

void etcd_parse_error(const char *body, size_t len, char *msg, size_t msg_len, int *code)
{
    msg[0] = 0;
    *code = -1;
    json_error_t jerr;
    json_t *root = body && len ? json_loadb(body, len, JSON_DISABLE_EOF_CHECK, &jerr) : NULL;
    if (!root)
        return;
    json_t *obj = root;
    /* A stream's error is wrapped: {"error":{"grpc_code":..,"message":..}}. */
    json_t *inner = json_object_get(root, "error");
    if (json_is_object(inner))
        obj = inner;
    json_t *m = json_object_get(obj, "message");
    if (!json_is_string(m) || json_string_length(m) == 0)
        m = json_object_get(obj, "error");
    if (json_is_string(m))
        snprintf(msg, msg_len, "%s", json_string_value(m));
    json_t *c = json_object_get(obj, "code");
    if (!c)
        c = json_object_get(obj, "grpc_code");
    if (json_is_integer(c))
        *code = (int)json_integer_value(c);
    json_decref(root);
}

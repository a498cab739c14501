/*
 * etcd.c - the etcd v3 backend, over etcd's JSON gateway (POST /v3/...) with libcurl.
 *
 * URL: etcd://[user:password@]host:port[,host:port...]/prefix[?ca=F&cert=F&key=F], etcds:// for
 * TLS. ECCL_STORE_USER / ECCL_STORE_PASSWORD / ECCL_STORE_CA / ECCL_STORE_CERT / ECCL_STORE_KEY
 * fill what the URL leaves out.
 *
 * Unary calls take a curl easy handle from a small pool (each keeps its keep-alive connection),
 * and run under CURLOPT_TIMEOUT_MS = what is left of the deadline. Failure policy:
 *  - connection refused / unreachable / unresolved (nothing was sent): next endpoint, backoff with
 *    jitter, retry until the deadline;
 *  - connection lost after sending, HTTP 503/504/429: retried for reads and keepalives only; for
 *    writes the outcome is unknown and the call fails (ecclRemoteError);
 *  - HTTP 401 or an empty reply while auth is on: authenticate again once, then retry;
 *  - any other HTTP error: etcd refused the request; the call fails with etcd's message
 *    (ecclInvalidUsage), no retry.
 * Each watch runs a streaming POST /v3/watch on its own thread and handle, splitting the chunked
 * body on newlines, and resumes from the last delivered revision after any failure.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "store/etcd_json.h"
#include "store/store_int.h"

ECCL_PARAM_STR(store_user, "ECCL_STORE_USER", "")
ECCL_PARAM_STR(store_password, "ECCL_STORE_PASSWORD", "")
ECCL_PARAM_STR(store_ca, "ECCL_STORE_CA", "")
ECCL_PARAM_STR(store_cert, "ECCL_STORE_CERT", "")
ECCL_PARAM_STR(store_key, "ECCL_STORE_KEY", "")

#define ETCD_MAX_ENDPOINTS 16
/* Idle easy handles kept (each keeps its keep-alive connection): enough for the calls of the
 * threads that share one store handle, so that connections are not closed and opened again. */
#define ETCD_POOL 32
/* Leases refreshed by one keepalive request at most (one JSON object each in the body). */
#define ETCD_KA_BATCH 512
/* Largest response body kept (a range over a big prefix should paginate). */
#define ETCD_MAX_BODY (64u * 1024 * 1024)
/* A watch line longer than this is a broken stream. */
#define ETCD_MAX_LINE (16u * 1024 * 1024)

struct etcd_priv {
    char *eps[ETCD_MAX_ENDPOINTS]; /* "http://host:port" */
    size_t neps;
    _Atomic size_t cur; /* the endpoint calls start with */
    char *ca, *cert, *key;
    char *user, *password;

    pthread_mutex_t auth_lock;
    char *token;        /* protected by auth_lock; NULL when auth is off */
    uint64_t token_gen; /* protected by auth_lock */

    pthread_mutex_t pool_lock;
    CURL *pool[ETCD_POOL]; /* idle handles, protected by pool_lock */
    size_t npool;
    /* The keepalive thread's own handle and connection (keepalive thread only), so that lease
     * refreshes never wait for a free handle behind the other calls. */
    CURL *ka_handle;
    const _Atomic uint32_t *abort; /* the store's closing flag */
};

struct growbuf {
    char *data;
    size_t len, cap;
    bool overflow;
};

static size_t grow_write(char *ptr, size_t size, size_t n, void *arg)
{
    struct growbuf *b = arg;
    size_t len = size * n;
    if (b->len + len > ETCD_MAX_BODY) {
        b->overflow = true;
        return 0;
    }
    if (b->len + len + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 1024;
        while (ncap < b->len + len + 1)
            ncap *= 2;
        char *d = eccl_realloc(b->data, ncap, 1, "store_etcd_body");
        if (!d) {
            b->overflow = true;
            return 0;
        }
        b->data = d;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, ptr, len);
    b->len += len;
    b->data[b->len] = 0;
    return len;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- handles ---- */

static CURL *handle_get(struct etcd_priv *p)
{
    CURL *h = NULL;
    pthread_mutex_lock(&p->pool_lock);
    if (p->npool > 0)
        h = p->pool[--p->npool];
    pthread_mutex_unlock(&p->pool_lock);
    if (!h)
        h = curl_easy_init();
    else
        curl_easy_reset(h); /* keeps the connection cache */
    return h;
}

static void handle_put(struct etcd_priv *p, CURL *h)
{
    pthread_mutex_lock(&p->pool_lock);
    if (p->npool < ETCD_POOL) {
        p->pool[p->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&p->pool_lock);
    if (h)
        curl_easy_cleanup(h);
}

static void handle_setup(struct etcd_priv *p, CURL *h, const char *url, const char *body,
                         struct curl_slist *hdrs, char *errbuf)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (p->ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, p->ca);
    if (p->cert)
        curl_easy_setopt(h, CURLOPT_SSLCERT, p->cert);
    if (p->key)
        curl_easy_setopt(h, CURLOPT_SSLKEY, p->key);
    errbuf[0] = 0;
}

/* Content-Type, and no "Expect: 100-continue" (curl asks for it on bodies above 1 KiB, the
 * generation record of a big job: a round trip for nothing, etcd reads every body). */
static struct curl_slist *json_headers(void)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *n = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    if (!n)
        curl_slist_free_all(hdrs);
    return n;
}

/* Headers for a call: JSON, and the token when auth is on. */
static struct curl_slist *make_headers(struct etcd_priv *p, uint64_t *gen_out)
{
    struct curl_slist *hdrs = json_headers();
    pthread_mutex_lock(&p->auth_lock);
    *gen_out = p->token_gen;
    if (hdrs && p->token) {
        char line[512];
        snprintf(line, sizeof(line), "Authorization: %s", p->token);
        struct curl_slist *n = curl_slist_append(hdrs, line);
        if (!n) {
            curl_slist_free_all(hdrs);
            hdrs = NULL;
        } else {
            hdrs = n;
        }
    }
    pthread_mutex_unlock(&p->auth_lock);
    return hdrs;
}

/* ---- unary calls ---- */

enum call_kind {
    CALL_WRITE, /* not retried once sent */
    CALL_READ,  /* retried on any transport failure */
    CALL_AUTH,  /* the authenticate call itself: no token, no re-auth */
};

static ecclResult_t authenticate(struct etcd_priv *p, uint64_t seen_gen, uint64_t deadline_ns);

/* TLS set-up failures that a retry cannot fix: a certificate or key file that is bad, a server
 * certificate that does not verify. */
static bool is_tls_config_error(CURLcode rc)
{
    return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CERTPROBLEM ||
           rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CIPHER ||
           rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_CRL_BADFILE ||
           rc == CURLE_SSL_ENGINE_NOTFOUND || rc == CURLE_UNSUPPORTED_PROTOCOL;
}

/* Unary calls give up when the store is closing. */
static int call_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    const struct etcd_priv *p = arg;
    return atomic_load_explicit(p->abort, memory_order_acquire) ? 1 : 0;
}

static bool is_connect_error(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_RESOLVE_PROXY;
}

/*
 * POSTs `body` to path; *resp_out gets the parsed JSON of a 2xx answer. For streaming endpoints
 * (lease keepalive) the first JSON value of the body is taken, and *raw_out (when not NULL) gets
 * the whole body (the caller frees raw_out->data), also when the call timed out in the middle of
 * a 2xx body (what came in time; the result is then the time-out's). `fixed` (may be NULL) is
 * the easy handle to use, owned by the calling thread; else one comes from the pool.
 */
static ecclResult_t etcd_post(struct etcd_priv *p, CURL *fixed, const char *op, const char *path,
                              const char *body, enum call_kind kind, uint64_t deadline_ns,
                              json_t **resp_out, struct growbuf *raw_out)
{
    ecclResult_t res = ecclSuccess;
    bool reauthed = false;
    char errbuf[CURL_ERROR_SIZE];
    for (unsigned attempt = 0;; attempt++) {
        if (eccl_deadline_passed(deadline_ns)) {
            res = store_timed_out("etcd", op);
            break;
        }
        size_t epi = atomic_load_explicit(&p->cur, memory_order_relaxed) % p->neps;
        char url[512];
        snprintf(url, sizeof(url), "%s%s", p->eps[epi], path);
        uint64_t gen = 0;
        struct curl_slist *hdrs = kind == CALL_AUTH ? json_headers() : make_headers(p, &gen);
        CURL *h = fixed ? fixed : handle_get(p);
        if (fixed)
            curl_easy_reset(fixed); /* keeps the connection */
        if (!hdrs || !h) {
            curl_slist_free_all(hdrs);
            if (h && !fixed)
                curl_easy_cleanup(h);
            WARN("store etcd: %s: out of memory", op);
            res = ecclSystemError;
            break;
        }
        struct growbuf out = {0};
        handle_setup(p, h, url, body, hdrs, errbuf);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grow_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, call_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, p);
        int left = eccl_deadline_left_ms(deadline_ns);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(left > 0 ? left : 1));
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(left > 0 && left < 3000 ? left : 3000));
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hdrs);
        if (!fixed)
            handle_put(p, h);

        bool retry = false, rotate = false;
        if (atomic_load_explicit(p->abort, memory_order_acquire)) {
            eccl_free(out.data);
            WARN("store etcd: %s: the store is closing", op);
            res = ecclRemoteError;
            break;
        }
        if (rc == CURLE_OK && status >= 200 && status < 300) {
            json_error_t jerr;
            json_t *resp =
                json_loadb(out.data ? out.data : "", out.len, JSON_DISABLE_EOF_CHECK, &jerr);
            if (!raw_out) {
                eccl_free(out.data);
                out.data = NULL;
            }
            if (!resp || !json_is_object(resp)) {
                eccl_free(out.data);
                WARN("store etcd %s: %s: bad JSON in the reply: %s", p->eps[epi], op,
                     resp ? "not an object" : jerr.text);
                json_decref(resp);
                res = ecclRemoteError;
                break;
            }
            /* A stream endpoint wraps its answer: {"result":{...}} or {"error":{...}}. */
            json_t *inner = json_object_get(resp, "result");
            json_t *serr = json_object_get(resp, "error");
            if (json_is_object(serr) && !inner) {
                char msg[256];
                int code;
                char *txt = json_dumps(resp, JSON_COMPACT);
                etcd_parse_error(txt, txt ? strlen(txt) : 0, msg, sizeof(msg), &code);
                free(txt);
                json_decref(resp);
                eccl_free(out.data);
                out.data = NULL;
                WARN("store etcd %s: %s: %s (code %d)", p->eps[epi], op, msg, code);
                res = code == 16 ? ecclRemoteError : ecclInvalidUsage;
                if (code == 16 && p->user && !reauthed && kind != CALL_AUTH) {
                    reauthed = true;
                    if (authenticate(p, gen, deadline_ns) == ecclSuccess)
                        continue;
                }
                break;
            }
            if (json_is_object(inner)) {
                json_incref(inner);
                json_decref(resp);
                resp = inner;
            }
            *resp_out = resp;
            if (raw_out) {
                *raw_out = out;
                out.data = NULL;
            }
            eccl_free(out.data);
            res = ecclSuccess;
            break;
        }
        if (rc == CURLE_OK) {
            char msg[256];
            int code;
            etcd_parse_error(out.data, out.len, msg, sizeof(msg), &code);
            eccl_free(out.data);
            if ((status == 401 || code == 16) && p->user && !reauthed && kind != CALL_AUTH) {
                reauthed = true;
                if (authenticate(p, gen, deadline_ns) == ecclSuccess)
                    continue;
            }
            if ((status == 503 || status == 504 || status == 429) && kind == CALL_READ) {
                INFO(ECCL_LOG_STORE, "store etcd %s: %s: HTTP %ld (%s), retrying", p->eps[epi], op,
                     status, msg);
                retry = rotate = true;
            } else {
                WARN("store etcd %s: %s: %s (HTTP %ld, code %d)", p->eps[epi], op,
                     msg[0] ? msg : "no message", status, code);
                res = (status >= 500 || status == 429) ? ecclRemoteError : ecclInvalidUsage;
                break;
            }
        } else {
            if (rc == CURLE_OPERATION_TIMEDOUT && eccl_deadline_passed(deadline_ns)) {
                WARN("store etcd %s: %s timed out (%s)", p->eps[epi], op,
                     errbuf[0] ? errbuf : curl_easy_strerror(rc));
                /* A stream's answers that came in time are still answers. */
                if (raw_out && (status >= 200 && status < 300)) {
                    *raw_out = out;
                    out.data = NULL;
                }
                eccl_free(out.data);
                res = ecclInternalError;
                break;
            }
            eccl_free(out.data);
            if (rc == CURLE_WRITE_ERROR && out.overflow) {
                WARN("store etcd %s: %s: reply above %u bytes", p->eps[epi], op, ETCD_MAX_BODY);
                res = ecclRemoteError;
                break;
            }
            if (is_tls_config_error(rc)) {
                WARN("store etcd %s: %s: TLS: %s", p->eps[epi], op,
                     errbuf[0] ? errbuf : curl_easy_strerror(rc));
                res = ecclInvalidUsage;
                break;
            }
            if (rc == CURLE_GOT_NOTHING && p->user && !reauthed && kind != CALL_AUTH) {
                /* Some etcd releases answer auth errors with an empty reply. */
                reauthed = true;
                if (authenticate(p, gen, deadline_ns) == ecclSuccess)
                    continue;
            }
            rotate = true;
            if (is_connect_error(rc) || kind != CALL_WRITE) {
                TRACE(ECCL_LOG_STORE, "store etcd %s: %s: %s, retrying", p->eps[epi], op,
                      errbuf[0] ? errbuf : curl_easy_strerror(rc));
                retry = true;
            } else {
                WARN("store etcd %s: %s: %s after the request was sent; its outcome is unknown",
                     p->eps[epi], op, errbuf[0] ? errbuf : curl_easy_strerror(rc));
                res = ecclRemoteError;
            }
        }
        if (rotate && p->neps > 1) {
            size_t expect = epi;
            atomic_compare_exchange_strong(&p->cur, &expect, (epi + 1) % p->neps);
        }
        if (rotate && !retry)
            break;
        if (!retry)
            break;
        /* A full round over several endpoints goes quickly; back off between rounds. */
        if (p->neps > 1 && (attempt + 1) % p->neps != 0)
            continue;
        if (!store_backoff(attempt / p->neps, deadline_ns, p->abort)) {
            if (atomic_load_explicit(p->abort, memory_order_acquire)) {
                WARN("store etcd: %s: the store is closing", op);
                res = ecclRemoteError;
                break;
            }
            WARN("store etcd: %s timed out: no endpoint answered (last: %s: %s)", op, p->eps[epi],
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
            res = ecclInternalError;
            break;
        }
    }
    return res;
}

/* POSTs `req` (borrowed, encoded here) to path with a pooled handle; see etcd_post. */
static ecclResult_t etcd_call(struct etcd_priv *p, const char *op, const char *path, json_t *req,
                              enum call_kind kind, uint64_t deadline_ns, json_t **resp_out)
{
    char *body = json_dumps(req, JSON_COMPACT);
    if (!body) {
        WARN("store etcd: %s: cannot encode the request", op);
        return ecclSystemError;
    }
    ecclResult_t res = etcd_post(p, NULL, op, path, body, kind, deadline_ns, resp_out, NULL);
    free(body);
    return res;
}

static ecclResult_t authenticate(struct etcd_priv *p, uint64_t seen_gen, uint64_t deadline_ns)
{
    pthread_mutex_lock(&p->auth_lock);
    if (p->token_gen != seen_gen) {
        /* Another thread got a fresh token meanwhile. */
        pthread_mutex_unlock(&p->auth_lock);
        return ecclSuccess;
    }
    pthread_mutex_unlock(&p->auth_lock);
    json_t *req = json_pack("{s:s, s:s}", "name", p->user, "password", p->password);
    if (!req)
        return ecclSystemError;
    json_t *resp = NULL;
    ecclResult_t res =
        etcd_call(p, "authenticate", "/v3/auth/authenticate", req, CALL_AUTH, deadline_ns, &resp);
    json_decref(req);
    if (res != ecclSuccess)
        return res;
    json_t *tok = json_object_get(resp, "token");
    if (!json_is_string(tok) || json_string_length(tok) == 0 || json_string_length(tok) > 400 ||
        strpbrk(json_string_value(tok), "\r\n")) {
        WARN("store etcd: authenticate: no usable token in the reply");
        json_decref(resp);
        return ecclRemoteError;
    }
    char *t = eccl_strdup(json_string_value(tok), "store_etcd_token");
    json_decref(resp);
    if (!t)
        return ecclSystemError;
    pthread_mutex_lock(&p->auth_lock);
    eccl_free(p->token);
    p->token = t;
    p->token_gen++;
    pthread_mutex_unlock(&p->auth_lock);
    INFO(ECCL_LOG_STORE, "store etcd: authenticated as %s", p->user);
    return ecclSuccess;
}

/* ---- open / close ---- */

static void priv_free(struct etcd_priv *p)
{
    for (size_t i = 0; i < p->neps; i++)
        eccl_free(p->eps[i]);
    for (size_t i = 0; i < p->npool; i++)
        curl_easy_cleanup(p->pool[i]);
    if (p->ka_handle)
        curl_easy_cleanup(p->ka_handle);
    eccl_free(p->ca);
    eccl_free(p->cert);
    eccl_free(p->key);
    eccl_free(p->user);
    eccl_free(p->password);
    eccl_free(p->token);
    pthread_mutex_destroy(&p->auth_lock);
    pthread_mutex_destroy(&p->pool_lock);
    eccl_free(p);
}

/* Copies `len` bytes of s, URL-decoding %XX. */
static char *dup_decoded(const char *s, size_t len)
{
    char *d = eccl_calloc(len + 1, 1, "store_etcd_opt");
    if (!d)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (end == hex + 2) {
                d[j++] = (char)v;
                i += 2;
                continue;
            }
        }
        d[j++] = s[i];
    }
    return d;
}

static ecclResult_t set_opt(char **dst, const char *v, size_t len)
{
    eccl_free(*dst);
    *dst = NULL;
    if (len == 0)
        return ecclSuccess;
    *dst = dup_decoded(v, len);
    return *dst ? ecclSuccess : ecclSystemError;
}

static ecclResult_t parse_query(struct etcd_priv *p, const char *q)
{
    while (*q) {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        ECCL_ARG_CHECK(eq, "store etcd: option '%.*s' is not name=value", (int)n, q);
        size_t nl = (size_t)(eq - q), vl = n - nl - 1;
        char **dst = NULL;
        if (nl == 2 && !strncmp(q, "ca", 2))
            dst = &p->ca;
        else if (nl == 4 && !strncmp(q, "cert", 4))
            dst = &p->cert;
        else if (nl == 3 && !strncmp(q, "key", 3))
            dst = &p->key;
        else if (nl == 4 && !strncmp(q, "user", 4))
            dst = &p->user;
        else if (nl == 8 && !strncmp(q, "password", 8))
            dst = &p->password;
        ECCL_ARG_CHECK(dst, "store etcd: unknown option '%.*s' (ca, cert, key, user, password)",
                       (int)nl, q);
        ECCL_TRY(set_opt(dst, eq + 1, vl));
        q += n;
        if (*q == '&')
            q++;
    }
    return ecclSuccess;
}

static ecclResult_t from_env(char **dst, const char *v)
{
    if (*dst || !v || !v[0])
        return ecclSuccess;
    *dst = eccl_strdup(v, "store_etcd_opt");
    return *dst ? ecclSuccess : ecclSystemError;
}

static ecclResult_t etcd_open(struct store *s, const char *scheme, const char *hosts,
                              const char *query, uint64_t deadline_ns)
{
    ecclResult_t res = ecclSuccess;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        WARN("store etcd: curl_global_init failed: %s", curl_easy_strerror(curl_init_rc));
        return ecclSystemError;
    }
    bool tls = !strcmp(scheme, "etcds") || !strcmp(scheme, "https");
    struct etcd_priv *p;
    ECCL_CALLOC_GOTO(p, 1, "store_etcd", res, out);
    pthread_mutex_init(&p->auth_lock, NULL);
    pthread_mutex_init(&p->pool_lock, NULL);
    atomic_init(&p->cur, 0);
    p->abort = &s->closing;

    const char *at = strrchr(hosts, '@');
    if (at) {
        const char *colon = memchr(hosts, ':', (size_t)(at - hosts));
        if (!colon) {
            WARN("store etcd: credentials in the URL must be user:password@");
            res = ecclInvalidArgument;
            goto err_free;
        }
        ECCL_TRY_GOTO(set_opt(&p->user, hosts, (size_t)(colon - hosts)), res, err_free);
        ECCL_TRY_GOTO(set_opt(&p->password, colon + 1, (size_t)(at - colon - 1)), res, err_free);
        hosts = at + 1;
    }
    ECCL_TRY_GOTO(parse_query(p, query), res, err_free);
    ECCL_TRY_GOTO(from_env(&p->user, eccl_param_store_user()), res, err_free);
    ECCL_TRY_GOTO(from_env(&p->password, eccl_param_store_password()), res, err_free);
    ECCL_TRY_GOTO(from_env(&p->ca, eccl_param_store_ca()), res, err_free);
    ECCL_TRY_GOTO(from_env(&p->cert, eccl_param_store_cert()), res, err_free);
    ECCL_TRY_GOTO(from_env(&p->key, eccl_param_store_key()), res, err_free);
    if (p->user && !p->password) {
        WARN("store etcd: user '%s' without a password", p->user);
        res = ecclInvalidArgument;
        goto err_free;
    }

    for (const char *h = hosts; *h;) {
        size_t n = strcspn(h, ",");
        if (n == 0 || n > 255 || p->neps == ETCD_MAX_ENDPOINTS || !memchr(h, ':', n)) {
            WARN("store etcd: bad endpoint list '%s' (host:port[,host:port...], at most %d)", hosts,
                 ETCD_MAX_ENDPOINTS);
            res = ecclInvalidArgument;
            goto err_free;
        }
        ECCL_CALLOC_GOTO(p->eps[p->neps], n + 16, "store_etcd_ep", res, err_free);
        snprintf(p->eps[p->neps], n + 16, "%s://%.*s", tls ? "https" : "http", (int)n, h);
        p->neps++;
        h += n;
        if (*h == ',')
            h++;
    }
    if (p->neps == 0) {
        WARN("store etcd: no endpoint in '%s'", hosts);
        res = ecclInvalidArgument;
        goto err_free;
    }
    s->priv = p;
    if (p->user)
        ECCL_TRY_GOTO(authenticate(p, 0, deadline_ns), res, err_free);
    /* Check the store answers: a read of one key, the prefix itself (a user whose role covers
     * only the prefix may read nothing else). */
    json_t *req = json_object();
    json_t *resp = NULL;
    if (!req || etcd_json_set_bytes(req, "key", s->prefix_len ? s->prefix : "\0",
                                    s->prefix_len ? s->prefix_len : 1) != ecclSuccess) {
        json_decref(req);
        res = ecclSystemError;
        goto err_free;
    }
    json_object_set_new(req, "count_only", json_true());
    res = etcd_call(p, "open", "/v3/kv/range", req, CALL_READ, deadline_ns, &resp);
    json_decref(req);
    json_decref(resp);
    if (res != ecclSuccess)
        goto err_free;
    return ecclSuccess;
err_free:
    s->priv = NULL;
    priv_free(p);
out:
    return res;
}

static void etcd_close(struct store *s)
{
    if (s->priv)
        priv_free(s->priv);
    s->priv = NULL;
}

/* ---- operations ---- */

/* Builds {"key":..,"range_end":..} into a new object. */
static json_t *key_range(const void *key, size_t key_len, const void *end, size_t end_len)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    /* etcd refuses an empty key; a range from "" is the same as one from "\0". */
    if (key_len == 0 && end_len > 0) {
        key = "";
        key_len = 1;
    }
    if (etcd_json_set_bytes(o, "key", key, key_len) != ecclSuccess ||
        (end_len && etcd_json_set_bytes(o, "range_end", end, end_len) != ecclSuccess)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static ecclResult_t etcd_range(struct store *s, const void *key, size_t key_len, const void *end,
                               size_t end_len, size_t limit, uint64_t deadline_ns,
                               struct store_kvs *out)
{
    json_t *req = key_range(key, key_len, end, end_len);
    if (!req || (limit && etcd_json_set_i64(req, "limit", (int64_t)limit) != ecclSuccess)) {
        json_decref(req);
        return ecclSystemError;
    }
    json_t *resp = NULL;
    ecclResult_t res =
        etcd_call(s->priv, "range", "/v3/kv/range", req, CALL_READ, deadline_ns, &resp);
    json_decref(req);
    if (res == ecclSuccess)
        res = etcd_parse_range(resp, out);
    json_decref(resp);
    return res;
}

static ecclResult_t etcd_put(struct store *s, const void *key, size_t key_len, const void *value,
                             size_t value_len, int64_t lease, uint64_t deadline_ns,
                             int64_t *rev_out)
{
    json_t *req = key_range(key, key_len, NULL, 0);
    if (!req || etcd_json_set_bytes(req, "value", value, value_len) != ecclSuccess ||
        (lease && etcd_json_set_i64(req, "lease", lease) != ecclSuccess)) {
        json_decref(req);
        return ecclSystemError;
    }
    json_t *resp = NULL;
    ecclResult_t res = etcd_call(s->priv, "put", "/v3/kv/put", req, CALL_WRITE, deadline_ns, &resp);
    json_decref(req);
    if (res == ecclSuccess)
        res = etcd_json_revision(resp, rev_out);
    json_decref(resp);
    return res;
}

static ecclResult_t etcd_del(struct store *s, const void *key, size_t key_len, const void *end,
                             size_t end_len, uint64_t deadline_ns, int64_t *deleted_out,
                             int64_t *rev_out)
{
    json_t *req = key_range(key, key_len, end, end_len);
    if (!req)
        return ecclSystemError;
    json_t *resp = NULL;
    ecclResult_t res =
        etcd_call(s->priv, "delete", "/v3/kv/deleterange", req, CALL_WRITE, deadline_ns, &resp);
    json_decref(req);
    if (res == ecclSuccess)
        res = etcd_json_revision(resp, rev_out);
    if (res == ecclSuccess)
        res = etcd_json_i64(resp, "deleted", deleted_out);
    json_decref(resp);
    return res;
}

static const char *const cmp_target[] = {"VERSION", "CREATE", "MOD", "VALUE"};
static const char *const cmp_field[] = {"version", "create_revision", "mod_revision", "value"};
static const char *const cmp_result[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static json_t *encode_ops(const struct store_op *ops, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        const struct store_op *op = &ops[i];
        char *end = eccl_calloc(op->key_len + 1, 1, "store_key");
        size_t end_len = 0;
        if (end && op->prefix && op->type != STORE_OP_PUT)
            store_range_end(op->key, op->key_len, end, &end_len);
        json_t *inner = end ? key_range(op->key, op->key_len, end, end_len) : NULL;
        eccl_free(end);
        json_t *wrap = json_object();
        bool ok = inner && wrap;
        if (ok && op->type == STORE_OP_PUT) {
            ok = etcd_json_set_bytes(inner, "value", op->value, op->value_len) == ecclSuccess &&
                 (!op->lease || etcd_json_set_i64(inner, "lease", op->lease) == ecclSuccess);
        }
        const char *name = op->type == STORE_OP_PUT      ? "request_put"
                           : op->type == STORE_OP_DELETE ? "request_delete_range"
                                                         : "request_range";
        if (ok && json_object_set(wrap, name, inner) == 0 && json_array_append(arr, wrap) == 0) {
            json_decref(inner);
            json_decref(wrap);
            continue;
        }
        json_decref(inner);
        json_decref(wrap);
        json_decref(arr);
        return NULL;
    }
    return arr;
}

static ecclResult_t etcd_txn(struct store *s, const struct store_cmp *cmps, size_t ncmps,
                             const struct store_op *then_ops, size_t nthen,
                             const struct store_op *else_ops, size_t nelse, uint64_t deadline_ns,
                             struct store_txn_result *out)
{
    json_t *req = json_object();
    json_t *carr = json_array();
    bool ok = req && carr;
    for (size_t i = 0; ok && i < ncmps; i++) {
        const struct store_cmp *c = &cmps[i];
        json_t *o = key_range(c->key, c->key_len, NULL, 0);
        ok = o && json_object_set_new(o, "target", json_string(cmp_target[c->target])) == 0 &&
             json_object_set_new(o, "result", json_string(cmp_result[c->result])) == 0 &&
             (c->target == STORE_CMP_VALUE
                  ? etcd_json_set_bytes(o, "value", c->value, c->value_len) == ecclSuccess
                  : etcd_json_set_i64(o, cmp_field[c->target], c->number) == ecclSuccess) &&
             json_array_append(carr, o) == 0;
        json_decref(o);
    }
    json_t *t = ok ? encode_ops(then_ops, nthen) : NULL;
    json_t *e = ok ? encode_ops(else_ops, nelse) : NULL;
    ok = ok && t && e && json_object_set(req, "compare", carr) == 0 &&
         json_object_set(req, "success", t) == 0 && json_object_set(req, "failure", e) == 0;
    json_decref(carr);
    json_decref(t);
    json_decref(e);
    if (!ok) {
        json_decref(req);
        return ecclSystemError;
    }
    bool read_only = true;
    for (size_t i = 0; i < nthen; i++)
        read_only = read_only && then_ops[i].type == STORE_OP_GET;
    for (size_t i = 0; i < nelse; i++)
        read_only = read_only && else_ops[i].type == STORE_OP_GET;
    json_t *resp = NULL;
    ecclResult_t res = etcd_call(s->priv, "txn", "/v3/kv/txn", req,
                                 read_only ? CALL_READ : CALL_WRITE, deadline_ns, &resp);
    json_decref(req);
    if (res == ecclSuccess)
        res = etcd_parse_txn(resp, out);
    json_decref(resp);
    return res;
}

static ecclResult_t lease_call(struct store *s, const char *op, const char *path, int64_t id,
                               enum call_kind kind, uint64_t deadline_ns, json_t **resp)
{
    json_t *req = json_object();
    if (!req || etcd_json_set_i64(req, "ID", id) != ecclSuccess) {
        json_decref(req);
        return ecclSystemError;
    }
    ecclResult_t res = etcd_call(s->priv, op, path, req, kind, deadline_ns, resp);
    json_decref(req);
    return res;
}

static ecclResult_t etcd_lease_grant(struct store *s, int64_t ttl_s, uint64_t deadline_ns,
                                     int64_t *id_out)
{
    /* Field names are case-sensitive: "TTL", not "ttl" (which etcd would silently drop). */
    json_t *req = json_object();
    if (!req || json_object_set_new(req, "TTL", json_integer(ttl_s)) != 0) {
        json_decref(req);
        return ecclSystemError;
    }
    json_t *resp = NULL;
    ecclResult_t res =
        etcd_call(s->priv, "lease grant", "/v3/lease/grant", req, CALL_WRITE, deadline_ns, &resp);
    json_decref(req);
    if (res != ecclSuccess)
        return res;
    json_t *err = json_object_get(resp, "error");
    int64_t id = 0;
    if (json_is_string(err) && json_string_length(err) > 0) {
        WARN("store etcd: lease grant: %s", json_string_value(err));
        res = ecclInvalidUsage;
    } else if ((res = etcd_json_i64(resp, "ID", &id)) == ecclSuccess && id <= 0) {
        WARN("store etcd: lease grant: no lease ID in the reply");
        res = ecclRemoteError;
    }
    json_decref(resp);
    if (res == ecclSuccess)
        *id_out = id;
    return res;
}

static ecclResult_t etcd_lease_revoke(struct store *s, int64_t id, uint64_t deadline_ns)
{
    json_t *resp = NULL;
    ecclResult_t res =
        lease_call(s, "lease revoke", "/v3/lease/revoke", id, CALL_WRITE, deadline_ns, &resp);
    json_decref(resp);
    return res;
}

static ecclResult_t etcd_lease_keepalive(struct store *s, int64_t id, uint64_t deadline_ns,
                                         int64_t *ttl_out)
{
    json_t *resp = NULL;
    ecclResult_t res =
        lease_call(s, "lease keepalive", "/v3/lease/keepalive", id, CALL_READ, deadline_ns, &resp);
    if (res == ecclSuccess)
        res = etcd_json_i64(resp, "TTL", ttl_out); /* absent (0): the lease is gone */
    json_decref(resp);
    return res;
}

/* Refreshes n leases with one request on the keepalive thread's own connection: the gateway's
 * keepalive stream takes the requests one after the other from the body and answers each with a
 * {"result":{"ID":..,"TTL":..}} line. An answer is matched to its lease by ID; a lease without an
 * answer gets a failure (the caller retries it). ttls_out[i] is the TTL of ids[i], 0 when gone,
 * -1 when no answer came. */
static ecclResult_t etcd_lease_keepalive_many(struct store *s, const int64_t *ids, size_t n,
                                              uint64_t deadline_ns, int64_t *ttls_out)
{
    struct etcd_priv *p = s->priv;
    if (!p->ka_handle && !(p->ka_handle = curl_easy_init())) {
        WARN("store etcd: lease keepalive: curl_easy_init failed");
        return ecclSystemError;
    }
    ecclResult_t res = ecclSuccess;
    for (size_t off = 0; off < n && res == ecclSuccess; off += ETCD_KA_BATCH) {
        size_t m = ECCL_MIN(n - off, (size_t)ETCD_KA_BATCH);
        /* {"ID":"<up to 20 digits>"} */
        char *body = eccl_calloc(m * 32 + 1, 1, "store_etcd_ka");
        if (!body)
            return ecclSystemError;
        size_t len = 0;
        for (size_t i = 0; i < m; i++) {
            len += (size_t)snprintf(body + len, 32, "{\"ID\":\"%lld\"}", (long long)ids[off + i]);
            ttls_out[off + i] = -1;
        }
        json_t *first = NULL;
        struct growbuf raw = {0};
        res = etcd_post(p, p->ka_handle, "lease keepalive", "/v3/lease/keepalive", body, CALL_READ,
                        deadline_ns, &first, &raw);
        eccl_free(body);
        if (res == ecclSuccess)
            json_decref(first);
        /* Answers that came before a time-out count: only the others are retried. */
        if (res != ecclSuccess && res != ecclInternalError) {
            eccl_free(raw.data);
            break;
        }
        size_t answered = 0;
        for (size_t i = 0; i < raw.len;) {
            char *nl = memchr(raw.data + i, '\n', raw.len - i);
            size_t llen = nl ? (size_t)(nl - (raw.data + i)) : raw.len - i;
            json_error_t jerr;
            json_t *line = llen ? json_loadb(raw.data + i, llen, 0, &jerr) : NULL;
            json_t *r = json_object_get(line, "result");
            int64_t id = 0, ttl = 0;
            if (json_is_object(r) && etcd_json_i64(r, "ID", &id) == ecclSuccess &&
                etcd_json_i64(r, "TTL", &ttl) == ecclSuccess) {
                for (size_t k = 0; k < m; k++) {
                    if (ids[off + k] == id && ttls_out[off + k] < 0) {
                        ttls_out[off + k] = ttl < 0 ? 0 : ttl;
                        answered++;
                        break;
                    }
                }
            }
            json_decref(line);
            i += llen + 1;
        }
        eccl_free(raw.data);
        if (answered < m)
            INFO(ECCL_LOG_STORE, "store etcd: lease keepalive: %zu of %zu leases not answered",
                 m - answered, m);
        if (res != ecclSuccess) {
            /* Timed out: what was answered is in ttls_out, the rest stays -1 (a failure). */
            res = ecclSuccess;
            break;
        }
    }
    return res;
}

static ecclResult_t etcd_lease_ttl(struct store *s, int64_t id, uint64_t deadline_ns,
                                   int64_t *ttl_out)
{
    json_t *resp = NULL;
    ecclResult_t res =
        lease_call(s, "lease ttl", "/v3/lease/timetolive", id, CALL_READ, deadline_ns, &resp);
    if (res == ecclSuccess)
        res = etcd_json_i64(resp, "TTL", ttl_out);
    json_decref(resp);
    return res;
}

/* ---- watches ---- */

struct watch_stream {
    struct store_watch *w;
    struct etcd_priv *p;
    struct growbuf line;
    bool created;
    bool terminal; /* failed for good: stop reconnecting */
    bool reauth;   /* the token was refused: authenticate, then reconnect */
    bool broken;   /* a malformed line: reconnect */
};

static bool handle_line(struct watch_stream *ws, const char *text, size_t len)
{
    struct etcd_watch_msg m;
    if (etcd_parse_watch_line(text, len, &m) != ecclSuccess) {
        ws->broken = true;
        return false;
    }
    struct store_watch *w = ws->w;
    bool go_on = true;
    if (m.is_error) {
        INFO(ECCL_LOG_STORE, "store etcd: watch stream error: %s", m.cancel_reason);
        if (strstr(m.cancel_reason, "auth token"))
            ws->reauth = true;
        go_on = false;
    } else if (m.canceled) {
        char text2[400];
        if (m.compact_revision > 0) {
            snprintf(text2, sizeof(text2),
                     "watch cancelled by etcd: revision compacted (compact revision %lld)",
                     (long long)m.compact_revision);
            store_watch_fail(w, ecclInvalidUsage, text2);
            ws->terminal = true;
        } else if (strstr(m.cancel_reason, "auth token") && ws->p->user) {
            ws->reauth = true;
        } else {
            snprintf(text2, sizeof(text2), "watch cancelled by etcd: %s",
                     m.cancel_reason[0] ? m.cancel_reason : "no reason given");
            store_watch_fail(w, ecclInvalidUsage, text2);
            ws->terminal = true;
        }
        go_on = false;
    } else {
        if (m.created) {
            ws->created = true;
            if (!store_watch_created(w, m.revision)) {
                ws->terminal = true;
                etcd_watch_msg_fini(&m);
                return false;
            }
        }
        if (m.nevents > 0 && store_watch_deliver(w, m.events, m.nevents) != ecclSuccess) {
            store_watch_fail(w, ecclSystemError, "out of memory delivering watch events");
            ws->terminal = true;
            go_on = false;
        }
    }
    etcd_watch_msg_fini(&m);
    return go_on;
}

static size_t watch_write(char *ptr, size_t size, size_t n, void *arg)
{
    struct watch_stream *ws = arg;
    size_t len = size * n;
    if (store_watch_stopping(ws->w))
        return 0;
    for (size_t i = 0; i < len;) {
        char *nl = memchr(ptr + i, '\n', len - i);
        size_t take = nl ? (size_t)(nl - (ptr + i)) : len - i;
        if (ws->line.len + take > ETCD_MAX_LINE) {
            WARN("store etcd: watch line above %u bytes", ETCD_MAX_LINE);
            ws->broken = true;
            return 0;
        }
        if (take && grow_write(ptr + i, 1, take, &ws->line) != take) {
            ws->broken = true;
            return 0;
        }
        i += take;
        if (nl) {
            i++;
            if (ws->line.len > 0 && !handle_line(ws, ws->line.data, ws->line.len))
                return 0;
            ws->line.len = 0;
        }
    }
    return len;
}

/* Runs a watch transfer through a multi handle. The thread sleeps in curl_multi_poll until the
 * stream has data, or store_watch_destroy wakes it (etcd_watch_wake), or a 1 s slice passes (a
 * safety net: the wake-up is what makes a stopping watch let go at once). Returns the transfer's
 * result; CURLE_ABORTED_BY_CALLBACK when stopped. */
static CURLcode watch_perform(CURLM *m, CURL *h, struct store_watch *w)
{
    if (curl_multi_add_handle(m, h) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    CURLcode rc = CURLE_ABORTED_BY_CALLBACK;
    int running = 1;
    while (!store_watch_stopping(w)) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
        if (!running) {
            int left;
            CURLMsg *msg;
            rc = CURLE_RECV_ERROR;
            while ((msg = curl_multi_info_read(m, &left)))
                if (msg->msg == CURLMSG_DONE && msg->easy_handle == h)
                    rc = msg->data.result;
            break;
        }
        if (store_watch_stopping(w))
            break;
        curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(m, h);
    return rc;
}

/* Wakes the watch's thread out of curl_multi_poll (w->lock held: the multi handle is published
 * under it, and taken back under it before it is freed). */
static void etcd_watch_wake(struct store_watch *w)
{
    if (w->wake)
        curl_multi_wakeup(w->wake);
}

static void etcd_watch_run(struct store_watch *w)
{
    struct etcd_priv *p = w->s->priv;
    struct watch_stream ws = {.w = w, .p = p};
    unsigned attempt = 0;
    char errbuf[CURL_ERROR_SIZE];
    CURL *h = curl_easy_init();
    CURLM *m = curl_multi_init();
    if (!h || !m) {
        store_watch_fail(w, ecclSystemError, "curl_easy_init failed");
        if (h)
            curl_easy_cleanup(h);
        if (m)
            curl_multi_cleanup(m);
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->wake = m;
    pthread_mutex_unlock(&w->lock);
    while (!store_watch_stopping(w)) {
        int64_t last = store_watch_last_rev(w);
        json_t *cr = key_range(w->key, w->key_len, w->end, w->end_len);
        json_t *req = json_object();
        char *body = NULL;
        if (cr && req &&
            (last < 0 || etcd_json_set_i64(cr, "start_revision", last + 1) == ecclSuccess) &&
            json_object_set_new(cr, "progress_notify", json_true()) == 0 &&
            json_object_set(req, "create_request", cr) == 0)
            body = json_dumps(req, JSON_COMPACT);
        json_decref(cr);
        json_decref(req);
        uint64_t gen;
        struct curl_slist *hdrs = body ? make_headers(p, &gen) : NULL;
        if (!body || !hdrs) {
            free(body);
            curl_slist_free_all(hdrs);
            store_watch_fail(w, ecclSystemError, "out of memory building a watch request");
            break;
        }
        size_t epi = atomic_load_explicit(&p->cur, memory_order_relaxed) % p->neps;
        char url[512];
        snprintf(url, sizeof(url), "%s/v3/watch", p->eps[epi]);
        curl_easy_reset(h);
        handle_setup(p, h, url, body, hdrs, errbuf);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &ws);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
        ws.line.len = 0;
        ws.reauth = ws.broken = false;
        int64_t before = last;
        CURLcode rc = watch_perform(m, h, w);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hdrs);
        free(body);
        if (store_watch_stopping(w) || ws.terminal)
            break;
        if (rc == CURLE_OK && status >= 400) {
            char msg[256];
            int code;
            etcd_parse_error(ws.line.data, ws.line.len, msg, sizeof(msg), &code);
            if ((status == 401 || code == 16) && p->user) {
                ws.reauth = true;
            } else if (status < 500) {
                char text[400];
                snprintf(text, sizeof(text), "etcd refused the watch: %s (HTTP %ld)", msg, status);
                store_watch_fail(w, ecclInvalidUsage, text);
                break;
            }
        }
        if (ws.reauth)
            (void)authenticate(p, gen, eccl_deadline_ms(5000));
        if (store_watch_last_rev(w) != before)
            attempt = 0;
        INFO(ECCL_LOG_STORE,
             "store etcd %s: watch stream ended (%s, HTTP %ld); resuming after "
             "revision %lld",
             p->eps[epi], errbuf[0] ? errbuf : curl_easy_strerror(rc), status,
             (long long)store_watch_last_rev(w));
        if (p->neps > 1) {
            size_t expect = epi;
            atomic_compare_exchange_strong(&p->cur, &expect, (epi + 1) % p->neps);
        }
        store_backoff(attempt++, ECCL_NO_DEADLINE, &w->stop);
    }
    pthread_mutex_lock(&w->lock);
    w->wake = NULL;
    pthread_mutex_unlock(&w->lock);
    curl_multi_cleanup(m);
    curl_easy_cleanup(h);
    eccl_free(ws.line.data);
}

const struct store_backend store_backend_etcd = {
    .name = "etcd",
    .open = etcd_open,
    .close = etcd_close,
    .range = etcd_range,
    .put = etcd_put,
    .del = etcd_del,
    .txn = etcd_txn,
    .lease_grant = etcd_lease_grant,
    .lease_revoke = etcd_lease_revoke,
    .lease_keepalive = etcd_lease_keepalive,
    .lease_keepalive_many = etcd_lease_keepalive_many,
    .lease_ttl = etcd_lease_ttl,
    .watch_run = etcd_watch_run,
    .watch_wake = etcd_watch_wake,
};

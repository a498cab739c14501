/*
 * auth.c - the job secret (ECCL_JOB_SECRET_FILE), per-purpose keys, the connection handshake and
 * record MACs. HMAC-SHA256, random nonces and constant-time comparison come from OpenSSL's
 * libcrypto; nothing here hashes by hand. See auth.h for the wire and docs/security.md for what
 * is and is not protected.
 */
#include "common/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"

ECCL_PARAM_STR(job_secret_file, "ECCL_JOB_SECRET_FILE", "")

#define AUTH_MAGIC       0x45415448u /* "EATH" */
#define AUTH_VERSION     1
#define AUTH_SECRET_MAX  (64 * 1024)
#define AUTH_SECRET_WEAK 16
#define AUTH_NPURPOSES   5

enum { ST_SEND_HELLO, ST_RECV_HELLO, ST_SEND_MAC, ST_RECV_MAC, ST_DONE };

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_gen = UINT64_MAX; /* eccl_param_generation() of the last load */
static ecclResult_t g_res;
static bool g_on;
static unsigned char g_keys[AUTH_NPURPOSES][ECCL_AUTH_MAC_BYTES];

static const char *purpose_name(int purpose)
{
    switch (purpose) {
    case ECCL_AUTH_BOOTSTRAP:
        return "bootstrap";
    case ECCL_AUTH_UDS:
        return "uds-service";
    case ECCL_AUTH_NET:
        return "net-transport";
    case ECCL_AUTH_RECORD:
        return "elastic-record";
    default:
        return "unknown";
    }
}

static bool hmac(const unsigned char *key, size_t keylen, const void *a, size_t alen, const void *b,
                 size_t blen, unsigned char out[ECCL_AUTH_MAC_BYTES])
{
    bool ok = false;
    size_t n = 0;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (ctx && EVP_MAC_init(ctx, key, keylen, params) == 1 && EVP_MAC_update(ctx, a, alen) == 1 &&
        (!b || EVP_MAC_update(ctx, b, blen) == 1) &&
        EVP_MAC_final(ctx, out, &n, ECCL_AUTH_MAC_BYTES) == 1 && n == ECCL_AUTH_MAC_BYTES)
        ok = true;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return ok;
}

/* Reads the file into secret[]; logs and fails on anything unusable. */
static ecclResult_t read_secret(const char *path, unsigned char *secret, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        WARN("ECCL_JOB_SECRET_FILE=%s: cannot open: %s", path, strerror(errno));
        return ecclInvalidUsage;
    }
    ecclResult_t res = ecclSuccess;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        WARN("ECCL_JOB_SECRET_FILE=%s: not a regular file", path);
        res = ecclInvalidUsage;
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        WARN("ECCL_JOB_SECRET_FILE=%s: readable by group or others (mode %03o): make it 0400 or "
             "0600",
             path, (unsigned)(st.st_mode & 0777));
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, secret + len, AUTH_SECRET_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            WARN("ECCL_JOB_SECRET_FILE=%s: read failed: %s", path, strerror(errno));
            res = ecclInvalidUsage;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > AUTH_SECRET_MAX) {
            WARN("ECCL_JOB_SECRET_FILE=%s: larger than %d bytes", path, AUTH_SECRET_MAX);
            res = ecclInvalidUsage;
            goto out;
        }
    }
    if (len == 0) {
        WARN("ECCL_JOB_SECRET_FILE=%s: the file is empty", path);
        res = ecclInvalidUsage;
        goto out;
    }
    if (len < AUTH_SECRET_WEAK)
        WARN("ECCL_JOB_SECRET_FILE=%s: only %zu bytes; use at least 32 random bytes", path, len);
    *len_out = len;
out:
    close(fd);
    return res;
}

static ecclResult_t load_locked(void)
{
    uint64_t gen = eccl_param_generation();
    if (gen == g_gen)
        return g_res;
    g_gen = gen;
    g_on = false;
    g_res = ecclSuccess;
    OPENSSL_cleanse(g_keys, sizeof(g_keys));
    const char *path = eccl_param_job_secret_file();
    if (!path || !*path) {
        INFO(ECCL_LOG_INIT, "authentication is off (ECCL_JOB_SECRET_FILE is not set)");
        return g_res;
    }
    static unsigned char secret[AUTH_SECRET_MAX + 1];
    size_t len = 0;
    g_res = read_secret(path, secret, &len);
    if (g_res == ecclSuccess) {
        for (int p = 1; p < AUTH_NPURPOSES && g_res == ecclSuccess; p++) {
            char label[64];
            int n = snprintf(label, sizeof(label), "eccl-auth-v1 key %s", purpose_name(p));
            if (!hmac(secret, len, label, (size_t)n, NULL, 0, g_keys[p])) {
                WARN("ECCL_JOB_SECRET_FILE=%s: HMAC-SHA256 (libcrypto) failed", path);
                g_res = ecclSystemError;
            }
        }
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    g_on = g_res == ecclSuccess;
    if (g_on)
        INFO(ECCL_LOG_INIT, "authentication is on: job secret from %s (%zu bytes)", path, len);
    return g_res;
}

ecclResult_t eccl_auth_load(bool *on_out)
{
    pthread_mutex_lock(&g_lock);
    ecclResult_t res = load_locked();
    bool on = g_on;
    pthread_mutex_unlock(&g_lock);
    if (res == ecclSuccess && on_out)
        *on_out = on;
    return res;
}

bool eccl_auth_enabled(void)
{
    bool on = false;
    return eccl_auth_load(&on) == ecclSuccess && on;
}

ecclResult_t eccl_auth_mac(int purpose, const void *a, size_t alen, const void *b, size_t blen,
                           unsigned char mac[ECCL_AUTH_MAC_BYTES])
{
    bool on = false;
    ECCL_TRY(eccl_auth_load(&on));
    if (!on || purpose <= 0 || purpose >= AUTH_NPURPOSES) {
        WARN("auth: no key for purpose %d (authentication is off)", purpose);
        return ecclInvalidUsage;
    }
    pthread_mutex_lock(&g_lock);
    unsigned char key[ECCL_AUTH_MAC_BYTES];
    memcpy(key, g_keys[purpose], sizeof(key));
    pthread_mutex_unlock(&g_lock);
    bool ok = hmac(key, sizeof(key), a, alen, b, blen, mac);
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok) {
        WARN("auth: HMAC-SHA256 (libcrypto) failed");
        return ecclSystemError;
    }
    return ecclSuccess;
}

bool eccl_auth_mac_equal(const unsigned char *x, const unsigned char *y)
{
    return CRYPTO_memcmp(x, y, ECCL_AUTH_MAC_BYTES) == 0;
}

ecclResult_t eccl_auth_random(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        WARN("auth: RAND_bytes failed (no entropy?)");
        return ecclSystemError;
    }
    return ecclSuccess;
}

/* ---- the handshake ---- */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* MAC of one side: key(purpose), over role || purpose || client nonce || server nonce. */
static ecclResult_t hs_mac(const struct eccl_auth_hs *hs, bool server,
                           unsigned char mac[ECCL_AUTH_MAC_BYTES])
{
    unsigned char t[16 + 2 * ECCL_AUTH_NONCE_BYTES];
    memset(t, 0, sizeof(t));
    memcpy(t, server ? "eccl-srv" : "eccl-cli", 8);
    put32(t + 8, AUTH_VERSION);
    put32(t + 12, (uint32_t)hs->purpose);
    memcpy(t + 16, hs->nonce_c, ECCL_AUTH_NONCE_BYTES);
    memcpy(t + 16 + ECCL_AUTH_NONCE_BYTES, hs->nonce_s, ECCL_AUTH_NONCE_BYTES);
    return eccl_auth_mac(hs->purpose, t, sizeof(t), NULL, 0, mac);
}

ecclResult_t eccl_auth_hs_init(struct eccl_auth_hs *hs, int purpose, bool server, const char *peer)
{
    memset(hs, 0, sizeof(*hs));
    hs->purpose = purpose;
    hs->server = server;
    snprintf(hs->peer, sizeof(hs->peer), "%s", peer && *peer ? peer : "(unknown peer)");
    ECCL_TRY(eccl_auth_random(server ? hs->nonce_s : hs->nonce_c, ECCL_AUTH_NONCE_BYTES));
    hs->state = server ? ST_RECV_HELLO : ST_SEND_HELLO;
    if (!server) {
        put32(hs->buf, AUTH_MAGIC);
        put32(hs->buf + 4, (uint32_t)AUTH_VERSION << 16 | (uint32_t)purpose);
        memcpy(hs->buf + 8, hs->nonce_c, ECCL_AUTH_NONCE_BYTES);
    }
    return ecclSuccess;
}

static size_t msg_len(const struct eccl_auth_hs *hs)
{
    switch (hs->state) {
    case ST_SEND_HELLO: /* the client's hello; the server's hello carries its MAC */
        return hs->server ? ECCL_AUTH_HELLO_BYTES + ECCL_AUTH_MAC_BYTES : ECCL_AUTH_HELLO_BYTES;
    case ST_RECV_HELLO:
        return hs->server ? ECCL_AUTH_HELLO_BYTES : ECCL_AUTH_HELLO_BYTES + ECCL_AUTH_MAC_BYTES;
    case ST_SEND_MAC:
    case ST_RECV_MAC:
        return ECCL_AUTH_MAC_BYTES;
    default:
        return 0;
    }
}

short eccl_auth_hs_events(const struct eccl_auth_hs *hs)
{
    return hs->state == ST_SEND_HELLO || hs->state == ST_SEND_MAC ? POLLOUT : POLLIN;
}

static ecclResult_t refuse(struct eccl_auth_hs *hs, const char *why)
{
    if (hs->server)
        WARN("auth: refused a %s connection from %s: %s", purpose_name(hs->purpose), hs->peer, why);
    else
        WARN("auth: %s connection to %s failed authentication: %s", purpose_name(hs->purpose),
             hs->peer, why);
    return ecclRemoteError;
}

/* A complete message arrived in hs->buf: check it and prepare what goes out next. */
static ecclResult_t hs_received(struct eccl_auth_hs *hs)
{
    unsigned char mac[ECCL_AUTH_MAC_BYTES];
    if (hs->state == ST_RECV_HELLO) {
        uint32_t v = get32(hs->buf + 4);
        if (get32(hs->buf) != AUTH_MAGIC)
            return refuse(hs, hs->server ? "it sent no authentication handshake (is "
                                           "ECCL_JOB_SECRET_FILE set on every process of the job?)"
                                         : "the peer answered without a handshake");
        if (v >> 16 != AUTH_VERSION || (int)(v & 0xffff) != hs->purpose)
            return refuse(hs, "handshake of another version or purpose");
        if (hs->server) {
            memcpy(hs->nonce_c, hs->buf + 8, ECCL_AUTH_NONCE_BYTES);
            put32(hs->buf, AUTH_MAGIC);
            put32(hs->buf + 4, (uint32_t)AUTH_VERSION << 16 | (uint32_t)hs->purpose);
            memcpy(hs->buf + 8, hs->nonce_s, ECCL_AUTH_NONCE_BYTES);
            ECCL_TRY(hs_mac(hs, true, hs->buf + ECCL_AUTH_HELLO_BYTES));
            hs->state = ST_SEND_HELLO;
            return ecclInProgress;
        }
        memcpy(hs->nonce_s, hs->buf + 8, ECCL_AUTH_NONCE_BYTES);
        ECCL_TRY(hs_mac(hs, true, mac));
        if (!eccl_auth_mac_equal(mac, hs->buf + ECCL_AUTH_HELLO_BYTES))
            return refuse(hs, "the peer proved no knowledge of the job secret (a different "
                              "ECCL_JOB_SECRET_FILE?)");
        ECCL_TRY(hs_mac(hs, false, hs->buf));
        hs->state = ST_SEND_MAC;
        return ecclInProgress;
    }
    /* ST_RECV_MAC, server side */
    ECCL_TRY(hs_mac(hs, false, mac));
    if (!eccl_auth_mac_equal(mac, hs->buf))
        return refuse(hs, "wrong MAC: the peer does not hold this job's secret");
    hs->state = ST_DONE;
    return ecclSuccess;
}

ecclResult_t eccl_auth_hs_step(struct eccl_auth_hs *hs, int fd)
{
    for (;;) {
        size_t need = msg_len(hs);
        if (hs->state == ST_DONE)
            return ecclSuccess;
        if (hs->state == ST_SEND_HELLO || hs->state == ST_SEND_MAC) {
            ssize_t n = send(fd, hs->buf + hs->done, need - hs->done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return ecclInProgress;
            if (n <= 0) {
                char why[128];
                snprintf(why, sizeof(why), "send failed: %s", n < 0 ? strerror(errno) : "?");
                return refuse(hs, why);
            }
            hs->done += (size_t)n;
            if (hs->done < need)
                continue;
            hs->done = 0;
            if (hs->state == ST_SEND_MAC) { /* the client's last message */
                hs->state = ST_DONE;
                return ecclSuccess;
            }
            hs->state = hs->server ? ST_RECV_MAC : ST_RECV_HELLO;
            continue;
        }
        ssize_t n = recv(fd, hs->buf + hs->done, need - hs->done, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return ecclInProgress;
        if (n == 0)
            return refuse(hs, hs->server ? "it closed the connection during the handshake"
                                         : "the peer closed the connection during the handshake "
                                           "(it runs without ECCL_JOB_SECRET_FILE or refused "
                                           "this process's secret)");
        if (n < 0) {
            char why[128];
            snprintf(why, sizeof(why), "recv failed: %s", strerror(errno));
            return refuse(hs, why);
        }
        hs->done += (size_t)n;
        if (hs->done < need)
            continue;
        hs->done = 0;
        ecclResult_t res = hs_received(hs);
        if (res != ecclInProgress)
            return res;
    }
}

ecclResult_t eccl_auth_handshake(int fd, int purpose, bool server, const char *peer,
                                 uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    bool on = false;
    ECCL_TRY(eccl_auth_load(&on));
    if (!on)
        return ecclSuccess;
    struct eccl_auth_hs hs;
    ECCL_TRY(eccl_auth_hs_init(&hs, purpose, server, peer));
    for (;;) {
        ecclResult_t res = eccl_auth_hs_step(&hs, fd);
        if (res != ecclInProgress)
            return res;
        if (abort && atomic_load_explicit(abort, memory_order_acquire))
            return ecclRemoteError;
        int left = eccl_deadline_left_ms(deadline_ns);
        if (left == 0)
            return refuse(&hs, "timed out waiting for the handshake");
        struct pollfd p = {.fd = fd, .events = eccl_auth_hs_events(&hs)};
        if (poll(&p, 1, left > 10 ? 10 : left) < 0 && errno != EINTR) {
            WARN("auth: poll failed: %s", strerror(errno));
            return ecclSystemError;
        }
    }
}

/*
 * rdzv_codec.c - the rendezvous's key names and record encodings (docs/internals/rdzv.md), and a
 * small string map. Records are binary, big-endian, with a magic, a version, a kind and a
 * checksum; decoders trust nothing: every length, range and name is checked, and the bytes must
 * be consumed exactly, so that a corrupted or hostile record gives a clear error, never a crash.
 * With a job secret, a record also carries a MAC (flag EL_REC_FLAG_AUTH, trailer of
 * EL_REC_AUTH_BYTES: a random nonce and HMAC-SHA256 over its key and its bytes); a record without
 * a valid MAC is refused.
 */
#include "elastic/rdzv_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/hash.h"
#include "common/log.h"

#define CHECKSUM_SEED 0x52445aULL

void el_textf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

/* ---- keys ---- */

static void key_fmt(struct el_key *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void key_fmt(struct el_key *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(k->s, sizeof(k->s), fmt, ap);
    va_end(ap);
    /* Job ids and member ids are bounded (64 + 127 bytes): a key always fits. */
    k->len = n < 0 ? 0 : ECCL_MIN((size_t)n, sizeof(k->s) - 1);
}

void el_key_record(struct el_key *k, const char *job)
{
    key_fmt(k, "%s/s/g", job);
}

void el_key_lead(struct el_key *k, const char *job, int64_t gen)
{
    key_fmt(k, "%s/s/gl/%" PRId64, job, gen);
}

void el_key_revoke(struct el_key *k, const char *job, int64_t gen)
{
    key_fmt(k, "%s/s/gr/%" PRId64, job, gen);
}

void el_key_boot(struct el_key *k, const char *job, int64_t gen)
{
    key_fmt(k, "%s/s/gb/%" PRId64, job, gen);
}

void el_key_member(struct el_key *k, const char *job, const char *id)
{
    key_fmt(k, "%s/s/m/%s", job, id);
}

void el_key_left(struct el_key *k, const char *job, const char *id)
{
    key_fmt(k, "%s/s/x/%s", job, id);
}

void el_key_intent(struct el_key *k, const char *job, int64_t gen, const char *id)
{
    key_fmt(k, "%s/i/%" PRId64 "/%s", job, gen, id);
}

void el_key_prefix(struct el_key *k, const char *job, const char *tail)
{
    key_fmt(k, "%s/%s", job, tail);
}

void el_key_intents(struct el_key *k, const char *job, int64_t gen)
{
    key_fmt(k, "%s/i/%" PRId64 "/", job, gen);
}

/* Parses a generation number: 1..19 decimal digits without a leading zero, >= 1. Returns the
 * bytes used, 0 when there is none. */
static size_t parse_gen(const char *p, size_t len, int64_t *gen)
{
    size_t i = 0;
    int64_t v = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9' && i < 18) {
        v = v * 10 + (p[i] - '0');
        i++;
    }
    if (i == 0 || p[0] == '0' || (i < len && p[i] >= '0' && p[i] <= '9'))
        return 0;
    *gen = v;
    return i;
}

enum el_key_kind el_key_parse(const char *job, const char *key, size_t len, int64_t *gen,
                              const char **id, size_t *id_len)
{
    size_t jl = strlen(job);
    if (len <= jl + 1 || memcmp(key, job, jl) != 0 || key[jl] != '/')
        return EL_KEY_OTHER;
    const char *p = key + jl + 1;
    size_t n = len - jl - 1;
    int64_t g = 0;
    if (n == 3 && memcmp(p, "s/g", 3) == 0)
        return EL_KEY_RECORD;
    if (n > 5 && p[0] == 's' && p[1] == '/' && p[2] == 'g' && p[4] == '/' &&
        (p[3] == 'l' || p[3] == 'r' || p[3] == 'b')) {
        size_t used = parse_gen(p + 5, n - 5, &g);
        if (used == 0 || used != n - 5)
            return EL_KEY_OTHER;
        *gen = g;
        return p[3] == 'l' ? EL_KEY_LEAD : p[3] == 'r' ? EL_KEY_REVOKE : EL_KEY_BOOT;
    }
    if (n > 4 && (memcmp(p, "s/m/", 4) == 0 || memcmp(p, "s/x/", 4) == 0)) {
        if (!el_id_valid(p + 4, n - 4))
            return EL_KEY_OTHER;
        if (id)
            *id = p + 4;
        if (id_len)
            *id_len = n - 4;
        return p[2] == 'm' ? EL_KEY_MEMBER : EL_KEY_LEFT;
    }
    if (n > 2 && memcmp(p, "i/", 2) == 0) {
        size_t used = parse_gen(p + 2, n - 2, &g);
        if (used == 0 || 2 + used >= n || p[2 + used] != '/')
            return EL_KEY_OTHER;
        const char *ip = p + 2 + used + 1;
        size_t il = n - (2 + used + 1);
        if (!el_id_valid(ip, il))
            return EL_KEY_OTHER;
        *gen = g;
        if (id)
            *id = ip;
        if (id_len)
            *id_len = il;
        return EL_KEY_INTENT;
    }
    return EL_KEY_OTHER;
}

bool el_job_valid(const char *job)
{
    if (!job)
        return false;
    size_t n = strlen(job);
    if (n == 0 || n > EL_RDZV_MAX_JOB || strcmp(job, ".") == 0 || strcmp(job, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = job[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

bool el_id_valid(const char *id, size_t len)
{
    if (!id || len == 0 || len > EL_RDZV_MAX_ID)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < '!' || c > '~' || c == '/')
            return false;
    }
    return true;
}

/* ---- writer ---- */

struct wbuf {
    unsigned char *p;
    size_t len, cap;
};

static void put_u8(struct wbuf *w, uint8_t v)
{
    if (w->len < w->cap)
        w->p[w->len] = v;
    w->len++;
}

static void put_be(struct wbuf *w, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        put_u8(w, (uint8_t)(v >> (8 * i)));
}

static void put_bytes(struct wbuf *w, const void *p, size_t n)
{
    if (w->len + n <= w->cap)
        memcpy(w->p + w->len, p, n);
    w->len += n;
}

/* A string with a one-byte length (callers pass strings of at most 255 bytes). */
static void put_str8(struct wbuf *w, const char *s)
{
    size_t n = strlen(s);
    put_u8(w, (uint8_t)n);
    put_bytes(w, s, n);
}

static void put_header(struct wbuf *w, uint8_t kind)
{
    put_be(w, EL_REC_MAGIC, 4);
    put_u8(w, EL_REC_VERSION);
    put_u8(w, kind);
    put_be(w, 0, 2);
}

static size_t put_checksum(struct wbuf *w)
{
    uint64_t h = eccl_hash64(w->p, ECCL_MIN(w->len, w->cap), CHECKSUM_SEED);
    put_be(w, h, 8);
    return w->len;
}

size_t el_rec_encode_member(const struct el_member_rec *m, unsigned char *buf)
{
    struct wbuf w = {.p = buf, .cap = EL_REC_SMALL_MAX};
    put_header(&w, EL_REC_MEMBER);
    put_str8(&w, m->id);
    put_be(&w, (uint64_t)m->lease, 8);
    put_be(&w, (uint32_t)m->replace_rank, 4);
    put_be(&w, (uint64_t)m->joined_ms, 8);
    return put_checksum(&w);
}

size_t el_rec_encode_intent(const struct el_intent_rec *in, unsigned char *buf)
{
    struct wbuf w = {.p = buf, .cap = EL_REC_SMALL_MAX};
    put_header(&w, EL_REC_INTENT);
    put_str8(&w, in->id);
    put_be(&w, (uint64_t)in->gen, 8);
    put_be(&w, (uint64_t)in->step, 8);
    put_be(&w, (uint32_t)in->replace_rank, 4);
    return put_checksum(&w);
}

size_t el_rec_encode_boot(const struct el_boot_rec *b, unsigned char *buf)
{
    struct wbuf w = {.p = buf, .cap = EL_REC_SMALL_MAX};
    put_header(&w, EL_REC_BOOT);
    put_be(&w, (uint64_t)b->gen, 8);
    put_be(&w, b->len, 2);
    put_bytes(&w, b->blob, b->len);
    return put_checksum(&w);
}

size_t el_rec_encode_revoke(const struct el_revoke_rec *rv, unsigned char *buf)
{
    struct wbuf w = {.p = buf, .cap = EL_REC_SMALL_MAX};
    put_header(&w, EL_REC_REVOKE);
    put_be(&w, (uint64_t)rv->gen, 8);
    put_str8(&w, rv->by);
    put_str8(&w, rv->failed);
    put_str8(&w, rv->why);
    return put_checksum(&w);
}

/* Bytes at the start of a and b that are equal. */
static size_t common_prefix(const char *a, const char *b)
{
    size_t n = 0;
    while (a[n] && a[n] == b[n])
        n++;
    return n;
}

ecclResult_t el_rec_encode_gen(const struct el_rdzv_gen *g, unsigned char **out, size_t *len_out)
{
    size_t cap = 8 + 8 + 8 + 8 + 1 + 4 + 8 + EL_REC_AUTH_BYTES; /* room for el_rec_seal */
    for (int i = 0; i < g->nmembers; i++)
        cap += 2 + strlen(g->members[i]);
    unsigned char *p = eccl_calloc(cap, 1, "rdzv_rec");
    if (!p)
        return ecclSystemError;
    struct wbuf w = {.p = p, .cap = cap};
    put_header(&w, EL_REC_GEN);
    put_be(&w, (uint64_t)g->gen, 8);
    put_be(&w, (uint64_t)g->step, 8);
    put_be(&w, (uint64_t)g->as_of_rev, 8);
    put_u8(&w, (uint8_t)g->mode);
    put_be(&w, (uint32_t)g->nmembers, 4);
    /* Front coding: ids of neighbouring ranks usually share their host part. */
    for (int i = 0; i < g->nmembers; i++) {
        size_t shared = i > 0 ? common_prefix(g->members[i - 1], g->members[i]) : 0;
        size_t len = strlen(g->members[i]);
        put_u8(&w, (uint8_t)shared);
        put_u8(&w, (uint8_t)(len - shared));
        put_bytes(&w, g->members[i] + shared, len - shared);
    }
    put_checksum(&w);
    *out = p;
    *len_out = w.len;
    return ecclSuccess;
}

/* ---- authentication ---- */

/* The MAC of a record under `key`: over the key, a NUL, and the record up to the MAC. */
static ecclResult_t rec_mac(const unsigned char *v, size_t upto, const char *key,
                            unsigned char mac[ECCL_AUTH_MAC_BYTES])
{
    return eccl_auth_mac(ECCL_AUTH_RECORD, key, strlen(key) + 1, v, upto, mac);
}

ecclResult_t el_rec_seal(unsigned char *buf, size_t *len_io, size_t cap, const char *key)
{
    if (!eccl_auth_enabled())
        return ecclSuccess;
    size_t len = *len_io;
    if (len < 16 || len + EL_REC_AUTH_BYTES > cap) {
        WARN("rdzv: no room to authenticate the record for key '%s' (%zu bytes)", key, len);
        return ecclInternalError;
    }
    buf[6] = (unsigned char)(EL_REC_FLAG_AUTH >> 8);
    buf[7] = (unsigned char)EL_REC_FLAG_AUTH;
    uint64_t h = eccl_hash64(buf, len - 8, CHECKSUM_SEED);
    for (int i = 0; i < 8; i++)
        buf[len - 1 - (size_t)i] = (unsigned char)(h >> (8 * i));
    ECCL_TRY(eccl_auth_random(buf + len, EL_REC_AUTH_BYTES - ECCL_AUTH_MAC_BYTES));
    size_t upto = len + EL_REC_AUTH_BYTES - ECCL_AUTH_MAC_BYTES;
    ECCL_TRY(rec_mac(buf, upto, key, buf + upto));
    *len_io = len + EL_REC_AUTH_BYTES;
    return ecclSuccess;
}

/* NULL when the record's authentication is what this process expects, else why not. */
static const char *rec_auth_check(const unsigned char *v, size_t len, const char *key)
{
    bool on = eccl_auth_enabled();
    bool flagged = v && len >= 8 && ((unsigned)(v[6] << 8 | v[7]) & EL_REC_FLAG_AUTH);
    if (!on)
        return flagged ? "the record is authenticated, but this process has no job secret "
                         "(ECCL_JOB_SECRET_FILE)"
                       : NULL;
    if (!flagged)
        return "not authenticated (written by a process without the job secret)";
    if (len < 16 + EL_REC_AUTH_BYTES)
        return "too short for an authenticated record";
    unsigned char mac[ECCL_AUTH_MAC_BYTES];
    size_t upto = len - ECCL_AUTH_MAC_BYTES;
    if (rec_mac(v, upto, key, mac) != ecclSuccess)
        return "cannot compute the MAC";
    if (!eccl_auth_mac_equal(mac, v + upto))
        return "wrong MAC (forged, or written by a process with another job secret)";
    return NULL;
}

bool el_rec_authentic(const void *v, size_t len, const char *key)
{
    if (!eccl_auth_enabled())
        return true; /* without a secret, decoding says what is wrong with a record */
    const char *why = rec_auth_check(v, len, key);
    if (why)
        WARN("rdzv: ignoring the record at key '%s': %s", key, why);
    return why == NULL;
}

/* ---- reader ---- */

struct rbuf {
    const unsigned char *p;
    size_t len, off;
    const char *bad; /* first problem, or NULL */
};

static void rbad(struct rbuf *r, const char *why)
{
    if (!r->bad)
        r->bad = why;
}

static uint64_t get_be(struct rbuf *r, int bytes)
{
    if (r->bad || r->len - r->off < (size_t)bytes) {
        rbad(r, "truncated");
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | r->p[r->off++];
    return v;
}

/* A member id (one-byte length, 1..127 valid bytes) into out[EL_RDZV_MAX_ID + 1]; with
 * may_be_empty, length 0 is allowed. */
static void get_id(struct rbuf *r, char *out, bool may_be_empty)
{
    size_t n = (size_t)get_be(r, 1);
    if (r->bad)
        return;
    if (n > EL_RDZV_MAX_ID || r->len - r->off < n) {
        rbad(r, "member id length out of range");
        return;
    }
    if (n == 0 ? !may_be_empty : !el_id_valid((const char *)r->p + r->off, n)) {
        rbad(r, "invalid member id");
        return;
    }
    memcpy(out, r->p + r->off, n);
    out[n] = 0;
    r->off += n;
}

static void get_text(struct rbuf *r, char *out, size_t max)
{
    size_t n = (size_t)get_be(r, 1);
    if (r->bad)
        return;
    if (n > max || r->len - r->off < n) {
        rbad(r, "text length out of range");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = r->p[r->off + i];
        if (c < 0x20 || c == 0x7f) {
            rbad(r, "control character in text");
            return;
        }
    }
    memcpy(out, r->p + r->off, n);
    out[n] = 0;
    r->off += n;
}

/* Checks the header (magic, version, kind, flags) and the trailing checksum; the payload is then
 * r->p[r->off .. r->len - 8). */
static void begin(struct rbuf *r, const void *v, size_t len, uint8_t kind, const char *where)
{
    r->p = v;
    r->len = len;
    r->off = 0;
    r->bad = NULL;
    if (!v || len < 8 + 8) {
        rbad(r, "too short");
        return;
    }
    if (get_be(r, 4) != EL_REC_MAGIC) {
        rbad(r, "bad magic (not an eccl rendezvous record)");
        return;
    }
    uint64_t version = get_be(r, 1);
    if (version != EL_REC_VERSION) {
        rbad(r, "unknown version");
        return;
    }
    if (get_be(r, 1) != kind) {
        rbad(r, "record of another kind");
        return;
    }
    if ((get_be(r, 2) & ~(uint64_t)EL_REC_FLAG_AUTH) != 0) {
        rbad(r, "unknown flags");
        return;
    }
    const char *why = rec_auth_check(v, len, where);
    if (why) {
        rbad(r, why);
        return;
    }
    if ((unsigned)(r->p[6] << 8 | r->p[7]) & EL_REC_FLAG_AUTH)
        len -= EL_REC_AUTH_BYTES; /* the checksum is before the trailer */
    uint64_t want = eccl_hash64(r->p, len - 8, CHECKSUM_SEED);
    uint64_t have = 0;
    for (size_t i = len - 8; i < len; i++)
        have = (have << 8) | r->p[i];
    if (want != have) {
        rbad(r, "checksum mismatch");
        return;
    }
    r->len = len - 8; /* the payload ends before the checksum */
}

static ecclResult_t finish(struct rbuf *r, const char *what, const char *where)
{
    if (!r->bad && r->off != r->len)
        rbad(r, "trailing bytes");
    if (r->bad) {
        WARN("rdzv: corrupted %s record at key '%s': %s", what, where, r->bad);
        return ecclRemoteError;
    }
    return ecclSuccess;
}

ecclResult_t el_rec_decode_member(const void *v, size_t len, const char *where,
                                  struct el_member_rec *out)
{
    struct rbuf r;
    struct el_member_rec m = {0};
    begin(&r, v, len, EL_REC_MEMBER, where);
    get_id(&r, m.id, false);
    m.lease = (int64_t)get_be(&r, 8);
    m.replace_rank = (int32_t)(uint32_t)get_be(&r, 4);
    m.joined_ms = (int64_t)get_be(&r, 8);
    if (!r.bad && m.lease <= 0)
        rbad(&r, "lease id out of range");
    if (!r.bad && (m.replace_rank < -1 || m.replace_rank >= EL_RDZV_MAX_MEMBERS))
        rbad(&r, "replace rank out of range");
    ECCL_TRY(finish(&r, "member", where));
    *out = m;
    return ecclSuccess;
}

ecclResult_t el_rec_decode_intent(const void *v, size_t len, const char *where,
                                  struct el_intent_rec *out)
{
    struct rbuf r;
    struct el_intent_rec in = {0};
    begin(&r, v, len, EL_REC_INTENT, where);
    get_id(&r, in.id, false);
    in.gen = (int64_t)get_be(&r, 8);
    in.step = (int64_t)get_be(&r, 8);
    in.replace_rank = (int32_t)(uint32_t)get_be(&r, 4);
    if (!r.bad && in.gen < 1)
        rbad(&r, "generation out of range");
    if (!r.bad && in.step < -1)
        rbad(&r, "step out of range");
    if (!r.bad && (in.replace_rank < -1 || in.replace_rank >= EL_RDZV_MAX_MEMBERS))
        rbad(&r, "replace rank out of range");
    ECCL_TRY(finish(&r, "registration", where));
    *out = in;
    return ecclSuccess;
}

ecclResult_t el_rec_decode_boot(const void *v, size_t len, const char *where,
                                struct el_boot_rec *out)
{
    struct rbuf r;
    struct el_boot_rec b = {0};
    begin(&r, v, len, EL_REC_BOOT, where);
    b.gen = (int64_t)get_be(&r, 8);
    b.len = (size_t)get_be(&r, 2);
    if (!r.bad && b.gen < 1)
        rbad(&r, "generation out of range");
    if (!r.bad && (b.len == 0 || b.len > EL_RDZV_MAX_BOOT || r.len - r.off < b.len))
        rbad(&r, "blob length out of range");
    if (!r.bad) {
        memcpy(b.blob, r.p + r.off, b.len);
        r.off += b.len;
    }
    ECCL_TRY(finish(&r, "bootstrap", where));
    *out = b;
    return ecclSuccess;
}

ecclResult_t el_rec_decode_revoke(const void *v, size_t len, const char *where,
                                  struct el_revoke_rec *out)
{
    struct rbuf r;
    struct el_revoke_rec rv = {0};
    begin(&r, v, len, EL_REC_REVOKE, where);
    rv.gen = (int64_t)get_be(&r, 8);
    get_id(&r, rv.by, false);
    get_id(&r, rv.failed, true);
    get_text(&r, rv.why, EL_RDZV_MAX_WHY);
    if (!r.bad && rv.gen < 1)
        rbad(&r, "generation out of range");
    ECCL_TRY(finish(&r, "revoke", where));
    *out = rv;
    return ecclSuccess;
}

/* Reads the front-coded member list (n entries) into `store` (NULL: only checks it and counts
 * the bytes the ids take, NULs included, into *bytes). members[i] point into store. */
static void get_members(struct rbuf *r, uint64_t n, char *store, char **members, size_t *bytes)
{
    char prev[EL_RDZV_MAX_ID + 1] = "";
    size_t prev_len = 0, total = 0;
    for (uint64_t i = 0; i < n && !r->bad; i++) {
        size_t shared = (size_t)get_be(r, 1);
        size_t len = (size_t)get_be(r, 1);
        if (r->bad)
            return;
        if (shared > prev_len || shared + len > EL_RDZV_MAX_ID || shared + len == 0 ||
            r->len - r->off < len) {
            rbad(r, "member id length out of range");
            return;
        }
        memcpy(prev + shared, r->p + r->off, len);
        prev_len = shared + len;
        prev[prev_len] = 0;
        r->off += len;
        /* The bytes shared with the previous id were checked with it. */
        if (len > 0 && !el_id_valid(prev + shared, len)) {
            rbad(r, "invalid member id");
            return;
        }
        if (store) {
            memcpy(store + total, prev, prev_len + 1);
            members[i] = store + total;
        }
        total += prev_len + 1;
    }
    *bytes = total;
}

/* The index of a generation is an open-addressing hash table of its ranks: idx[0] is the table's
 * mask (its size is a power of two, at least twice the members), idx[1 + slot] is rank + 1 or 0
 * for an empty slot. Built in O(n) (one hash per id), where sorting the ids cost O(n log n)
 * string compares: every member of a big job builds one per generation. */
static size_t index_slot(const char *id, size_t mask)
{
    /* Eight bytes a step (eccl_hash64 takes one): an in-memory table, any fixed mix will do. */
    size_t len = strlen(id), i = 0;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, id + i, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t v = 0;
    memcpy(&v, id + i, len - i);
    h = (h ^ v) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    return (size_t)h & mask;
}

/* Builds the index; *dup_out (may be NULL) gets the rank of a member id seen twice, or -1. */
static ecclResult_t index_build(const struct el_rdzv_gen *g, int **out, int *dup_out)
{
    size_t cap = 16;
    while (cap < (size_t)g->nmembers * 2)
        cap *= 2;
    int *idx = eccl_calloc(cap + 1, sizeof(*idx), "rdzv_index");
    if (!idx)
        return ecclSystemError;
    idx[0] = (int)(cap - 1);
    int dup = -1;
    for (int i = 0; i < g->nmembers; i++) {
        size_t k = index_slot(g->members[i], cap - 1);
        while (idx[1 + k] != 0) {
            if (dup < 0 && strcmp(g->members[idx[1 + k] - 1], g->members[i]) == 0)
                dup = i;
            k = (k + 1) & (cap - 1);
        }
        idx[1 + k] = i + 1;
    }
    if (dup_out)
        *dup_out = dup;
    *out = idx;
    return ecclSuccess;
}

ecclResult_t el_gen_index(const struct el_rdzv_gen *g, int **out)
{
    return index_build(g, out, NULL);
}

ecclResult_t el_gen_index_dup(const int *idx, int **out)
{
    size_t n = (size_t)idx[0] + 2;
    int *d = eccl_calloc(n, sizeof(*d), "rdzv_index");
    if (!d)
        return ecclSystemError;
    memcpy(d, idx, n * sizeof(*d));
    *out = d;
    return ecclSuccess;
}

int el_gen_lookup(const struct el_rdzv_gen *g, const int *idx, const char *id)
{
    size_t mask = (size_t)idx[0];
    for (size_t k = index_slot(id, mask); idx[1 + k] != 0; k = (k + 1) & mask)
        if (strcmp(g->members[idx[1 + k] - 1], id) == 0)
            return idx[1 + k] - 1;
    return -1;
}

ecclResult_t el_rec_decode_gen(const void *v, size_t len, const char *where,
                               struct el_rdzv_gen **out)
{
    return el_rec_decode_gen_idx(v, len, where, out, NULL);
}

ecclResult_t el_rec_decode_gen_idx(const void *v, size_t len, const char *where,
                                   struct el_rdzv_gen **out, int **idx_out)
{
    struct rbuf r;
    begin(&r, v, len, EL_REC_GEN, where);
    int64_t gen = (int64_t)get_be(&r, 8);
    int64_t step = (int64_t)get_be(&r, 8);
    int64_t as_of = (int64_t)get_be(&r, 8);
    uint64_t mode = get_be(&r, 1);
    uint64_t n = get_be(&r, 4);
    if (!r.bad && gen < 1)
        rbad(&r, "generation out of range");
    if (!r.bad && step < -1)
        rbad(&r, "step out of range");
    if (!r.bad && as_of < 0)
        rbad(&r, "revision out of range");
    if (!r.bad && mode > EL_RDZV_GROW)
        rbad(&r, "unknown mode");
    if (!r.bad && (n < 1 || n > EL_RDZV_MAX_MEMBERS))
        rbad(&r, "member count out of range");
    /* Every member takes at least 2 bytes: a lying count cannot make us allocate much. */
    if (!r.bad && n * 2 > r.len - r.off)
        rbad(&r, "member count larger than the record");
    size_t start = r.off, idbytes = 0;
    get_members(&r, n, NULL, NULL, &idbytes); /* first pass: check and size */
    if (r.bad)
        return finish(&r, "generation", where);
    ECCL_TRY(finish(&r, "generation", where));
    struct el_rdzv_gen *g = el_gen_alloc((int)n, idbytes);
    if (!g)
        return ecclSystemError;
    r.off = start;
    get_members(&r, n, (char *)(g->members + n), g->members, &idbytes);
    /* Unique ids. */
    int *idx = NULL, dup = -1;
    ecclResult_t res = index_build(g, &idx, &dup);
    if (res != ecclSuccess)
        goto err_free_gen;
    if (dup >= 0) {
        eccl_free(idx);
        WARN("rdzv: corrupted generation record at key '%s': member %s appears twice", where,
             g->members[dup]);
        res = ecclRemoteError;
        goto err_free_gen;
    }
    if (idx_out)
        *idx_out = idx;
    else
        eccl_free(idx);
    g->gen = gen;
    g->step = step;
    g->as_of_rev = as_of;
    g->mode = (enum el_rdzv_mode)mode;
    *out = g;
    return ecclSuccess;
err_free_gen:
    el_rdzv_gen_free(g);
    return res;
}

/* ---- generations ---- */

struct el_rdzv_gen *el_gen_alloc(int n, size_t idbytes)
{
    /* One block: the struct, then n pointers, then the id bytes. */
    size_t size = sizeof(struct el_rdzv_gen) + (size_t)n * sizeof(char *) + idbytes;
    struct el_rdzv_gen *g = eccl_calloc(1, size, "rdzv_gen");
    if (!g)
        return NULL;
    g->members = (char **)(g + 1);
    g->nmembers = n;
    g->rank = -1;
    return g;
}

void el_rdzv_gen_free(struct el_rdzv_gen *g)
{
    eccl_free(g);
}

ecclResult_t el_gen_dup(const struct el_rdzv_gen *g, struct el_rdzv_gen **out)
{
    size_t idbytes = 0;
    for (int i = 0; i < g->nmembers; i++)
        idbytes += strlen(g->members[i]) + 1;
    struct el_rdzv_gen *d = el_gen_alloc(g->nmembers, idbytes);
    if (!d)
        return ecclSystemError;
    char **members = d->members;
    *d = *g;
    d->members = members;
    char *next = (char *)(d->members + g->nmembers);
    for (int i = 0; i < g->nmembers; i++) {
        size_t n = strlen(g->members[i]) + 1;
        memcpy(next, g->members[i], n);
        d->members[i] = next;
        next += n;
    }
    *out = d;
    return ecclSuccess;
}

int el_gen_find(const struct el_rdzv_gen *g, const char *id)
{
    for (int i = 0; i < g->nmembers; i++)
        if (strcmp(g->members[i], id) == 0)
            return i;
    return -1;
}

/* ---- string map ---- */

static size_t map_index(const struct el_map *m, const char *key, bool for_insert)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)eccl_hash64(key, strlen(key), 0) & mask;
    size_t tomb = SIZE_MAX;
    for (;;) {
        struct el_map_slot *s = &m->slots[i];
        if (!s->key) {
            if (s->dead) {
                if (tomb == SIZE_MAX)
                    tomb = i;
            } else {
                return (for_insert && tomb != SIZE_MAX) ? tomb : i;
            }
        } else if (strcmp(s->key, key) == 0) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

static ecclResult_t map_grow(struct el_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->n * 2 < m->cap)
        ncap = m->cap; /* mostly tombstones: rehash at the same size */
    struct el_map_slot *ns = eccl_calloc(ncap, sizeof(*ns), "rdzv_map");
    if (!ns)
        return ecclSystemError;
    struct el_map old = *m;
    m->slots = ns;
    m->cap = ncap;
    m->n = m->used = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.slots[i].key)
            continue;
        size_t j = map_index(m, old.slots[i].key, true);
        m->slots[j] = old.slots[i];
        m->slots[j].dead = false;
        m->n++;
        m->used++;
    }
    eccl_free(old.slots);
    return ecclSuccess;
}

ecclResult_t el_map_put(struct el_map *m, const char *key, void *val, void **old_out)
{
    if ((m->used + 1) * 4 >= m->cap * 3)
        ECCL_TRY(map_grow(m));
    size_t i = map_index(m, key, false);
    struct el_map_slot *s = &m->slots[i];
    if (s->key) {
        if (old_out)
            *old_out = s->val;
        s->val = val;
        return ecclSuccess;
    }
    i = map_index(m, key, true);
    s = &m->slots[i];
    char *k = eccl_strdup(key, "rdzv_map");
    if (!k)
        return ecclSystemError;
    if (!s->dead)
        m->used++;
    s->key = k;
    s->dead = false;
    s->val = val;
    m->n++;
    if (old_out)
        *old_out = NULL;
    return ecclSuccess;
}

void *el_map_get(const struct el_map *m, const char *key, bool *found_out)
{
    if (found_out)
        *found_out = false;
    if (m->cap == 0)
        return NULL;
    struct el_map_slot *s = &m->slots[map_index(m, key, false)];
    if (!s->key)
        return NULL;
    if (found_out)
        *found_out = true;
    return s->val;
}

void *el_map_del(struct el_map *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    struct el_map_slot *s = &m->slots[map_index(m, key, false)];
    if (!s->key)
        return NULL;
    void *val = s->val;
    eccl_free(s->key);
    s->key = NULL;
    s->dead = true;
    s->val = NULL;
    m->n--;
    return val;
}

void el_map_fini(struct el_map *m, void (*free_val)(void *))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        if (free_val)
            free_val(m->slots[i].val);
        eccl_free(m->slots[i].key);
    }
    eccl_free(m->slots);
    memset(m, 0, sizeof(*m));
}

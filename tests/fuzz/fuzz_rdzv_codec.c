/*
 * fuzz_rdzv_codec.c - libFuzzer target for the elastic records and keys read from the store
 * (elastic/rdzv_codec.c, what elastic/rdzv.c and rdzv_agree.c decode from watch events and
 * reads): member, intent, boot, revoke and generation records, and el_key_parse.
 *
 * Input: one selector byte, then the record (or, for keys, "<job>\0<key>"). Selector bit 0x80
 * makes the target rewrite the record's trailing checksum first, so that the fuzzer gets past it
 * to the fields. Contract: bad records are refused with an error, never an overrun or a leak;
 * a small record that decodes re-encodes to the same bytes; a generation record re-encodes to
 * one that decodes to the same generation, and its index finds every member at its rank; a
 * parsed key is exactly the key its builder (el_key_*) makes from what was parsed.
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "elastic/rdzv_int.h"
#include "tests/fuzz/fuzz_util.h"

#define CHECKSUM_SEED 0x52445aULL /* elastic/rdzv_codec.c's */

static void small_case(int kind, const uint8_t *p, size_t len)
{
    unsigned char buf[EL_REC_SMALL_MAX];
    size_t n = 0;
    switch (kind) {
    case 0: {
        struct el_member_rec m;
        if (el_rec_decode_member(p, len, "fuzz", &m) != ecclSuccess)
            return;
        FUZZ_CHECK(el_id_valid(m.id, strlen(m.id)));
        n = el_rec_encode_member(&m, buf);
        break;
    }
    case 1: {
        struct el_intent_rec in;
        if (el_rec_decode_intent(p, len, "fuzz", &in) != ecclSuccess)
            return;
        FUZZ_CHECK(el_id_valid(in.id, strlen(in.id)));
        n = el_rec_encode_intent(&in, buf);
        break;
    }
    case 2: {
        struct el_boot_rec b;
        if (el_rec_decode_boot(p, len, "fuzz", &b) != ecclSuccess)
            return;
        FUZZ_CHECK(b.len >= 1 && b.len <= EL_RDZV_MAX_BOOT);
        n = el_rec_encode_boot(&b, buf);
        break;
    }
    default: {
        struct el_revoke_rec rv;
        if (el_rec_decode_revoke(p, len, "fuzz", &rv) != ecclSuccess)
            return;
        FUZZ_CHECK(strlen(rv.why) <= EL_RDZV_MAX_WHY);
        n = el_rec_encode_revoke(&rv, buf);
        break;
    }
    }
    FUZZ_CHECK(n == len && memcmp(buf, p, len) == 0);
}

static void gen_case(const uint8_t *p, size_t len)
{
    struct el_rdzv_gen *g = NULL, *g2 = NULL;
    int *idx = NULL;
    if (el_rec_decode_gen_idx(p, len, "fuzz", &g, &idx) != ecclSuccess)
        return;
    FUZZ_CHECK(g->nmembers >= 1 && g->nmembers <= EL_RDZV_MAX_MEMBERS && g->gen >= 1);
    for (int i = 0; i < g->nmembers; i++) {
        FUZZ_CHECK(el_id_valid(g->members[i], strlen(g->members[i])));
        FUZZ_CHECK(el_gen_lookup(g, idx, g->members[i]) == i);
    }
    unsigned char *enc = NULL;
    size_t elen = 0;
    FUZZ_CHECK(el_rec_encode_gen(g, &enc, &elen) == ecclSuccess);
    FUZZ_CHECK(el_rec_decode_gen(enc, elen, "fuzz", &g2) == ecclSuccess);
    FUZZ_CHECK(g2->gen == g->gen && g2->step == g->step && g2->as_of_rev == g->as_of_rev &&
               g2->mode == g->mode && g2->nmembers == g->nmembers);
    for (int i = 0; i < g->nmembers; i++)
        FUZZ_CHECK(!strcmp(g2->members[i], g->members[i]));
    FUZZ_CHECK(elen <= len); /* the encoder shares prefixes as much as any record can */
    eccl_free(enc);
    eccl_free(idx);
    el_rdzv_gen_free(g2);
    el_rdzv_gen_free(g);
}

static void key_case(const uint8_t *p, size_t len)
{
    const uint8_t *nul = memchr(p, 0, len);
    if (!nul || nul - p > EL_RDZV_MAX_JOB)
        return;
    char job[EL_RDZV_MAX_JOB + 1];
    memcpy(job, p, (size_t)(nul - p) + 1);
    if (!el_job_valid(job))
        return;
    const char *key = (const char *)nul + 1;
    size_t klen = len - (size_t)(nul - p) - 1;
    int64_t gen = 0;
    const char *id = NULL;
    size_t id_len = 0;
    enum el_key_kind kind = el_key_parse(job, key, klen, &gen, &id, &id_len);
    struct el_key k = {.len = 0};
    char idbuf[EL_RDZV_MAX_ID + 1];
    if (id) {
        FUZZ_CHECK(id >= key && id + id_len <= key + klen && el_id_valid(id, id_len));
        FUZZ_CHECK(id_len <= EL_RDZV_MAX_ID);
        memcpy(idbuf, id, id_len);
        idbuf[id_len] = 0;
    }
    switch (kind) {
    case EL_KEY_RECORD:
        el_key_record(&k, job);
        break;
    case EL_KEY_LEAD:
        el_key_lead(&k, job, gen);
        break;
    case EL_KEY_REVOKE:
        el_key_revoke(&k, job, gen);
        break;
    case EL_KEY_BOOT:
        el_key_boot(&k, job, gen);
        break;
    case EL_KEY_MEMBER:
        el_key_member(&k, job, idbuf);
        break;
    case EL_KEY_INTENT:
        el_key_intent(&k, job, gen, idbuf);
        break;
    default:
        return;
    }
    FUZZ_CHECK(k.len == klen && memcmp(k.s, key, klen) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    uint8_t *p = eccl_calloc(size, 1, "fuzz");
    if (!p)
        return 0;
    memcpy(p, data + 1, size - 1);
    size_t len = size - 1;
    int kind = data[0] & 7;
    if ((data[0] & 0x80) && len >= 16 && kind < 5) {
        uint64_t h = eccl_hash64(p, len - 8, CHECKSUM_SEED);
        for (int i = 0; i < 8; i++)
            p[len - 1 - i] = (uint8_t)(h >> (8 * i));
    }
    if (kind < 4)
        small_case(kind, p, len);
    else if (kind == 4)
        gen_case(p, len);
    else
        key_case(p, len);
    eccl_free(p);
    return 0;
}

static void seed_rec(const char *name, uint8_t sel, const void *rec, size_t len)
{
    uint8_t buf[1 + 8192];
    FUZZ_CHECK(len <= 8192);
    buf[0] = sel;
    memcpy(buf + 1, rec, len);
    fuzz_seed(name, buf, len + 1);
}

static void seed_key(const char *name, const char *job, const struct el_key *k)
{
    uint8_t buf[1 + EL_RDZV_MAX_JOB + 1 + EL_KEY_MAX];
    size_t jl = strlen(job);
    buf[0] = 5;
    memcpy(buf + 1, job, jl + 1);
    memcpy(buf + 2 + jl, k->s, k->len);
    fuzz_seed(name, buf, 2 + jl + k->len);
}

static void fuzz_seeds(void)
{
    unsigned char buf[EL_REC_SMALL_MAX];
    struct el_member_rec m = {
        .id = "host-a-123-tok-0-r0", .lease = 7587, .replace_rank = -1, .joined_ms = 1700000000000};
    seed_rec("member", 0, buf, el_rec_encode_member(&m, buf));
    struct el_intent_rec in = {
        .id = "host-b-77-tok-1-r2", .gen = 3, .step = 120, .replace_rank = 1};
    seed_rec("intent", 1, buf, el_rec_encode_intent(&in, buf));
    struct el_boot_rec b = {.gen = 3, .len = 64};
    for (size_t i = 0; i < b.len; i++)
        b.blob[i] = (unsigned char)(i * 7);
    seed_rec("boot", 2, buf, el_rec_encode_boot(&b, buf));
    struct el_revoke_rec rv = {.gen = 3,
                               .by = "host-a-123-tok-0-r0",
                               .failed = "host-b-77-tok-1-r2",
                               .why = "peer EOF on ring"};
    seed_rec("revoke", 3, buf, el_rec_encode_revoke(&rv, buf));
    struct el_revoke_rec rv2 = {.gen = 9, .by = "x", .failed = "", .why = ""};
    seed_rec("revoke-unknown", 3, buf, el_rec_encode_revoke(&rv2, buf));

    static const char *const ids[] = {"node-0-10-aa-0-r0", "node-0-10-aa-1-r0", "node-1-11-bb-0-r3",
                                      "z"};
    struct el_rdzv_gen *g = el_gen_alloc(4, 64);
    FUZZ_CHECK(g != NULL);
    char *s = (char *)(g->members + 4);
    for (int i = 0; i < 4; i++) {
        g->members[i] = s;
        s = stpcpy(s, ids[i]) + 1;
    }
    g->gen = 5;
    g->step = -1;
    g->as_of_rev = 1234;
    g->mode = EL_RDZV_REPLACE;
    unsigned char *enc = NULL;
    size_t elen = 0;
    FUZZ_CHECK(el_rec_encode_gen(g, &enc, &elen) == ecclSuccess);
    seed_rec("gen", 4, enc, elen);
    eccl_free(enc);
    el_rdzv_gen_free(g);

    struct el_key k;
    el_key_record(&k, "job-1");
    seed_key("key-record", "job-1", &k);
    el_key_lead(&k, "job-1", 12);
    seed_key("key-lead", "job-1", &k);
    el_key_revoke(&k, "job-1", 3);
    seed_key("key-revoke", "job-1", &k);
    el_key_boot(&k, "job-1", 4);
    seed_key("key-boot", "job-1", &k);
    el_key_member(&k, "job-1", "node-0-10-aa-0-r0");
    seed_key("key-member", "job-1", &k);
    el_key_intent(&k, "job-1", 7, "node-0-10-aa-1-r0");
    seed_key("key-intent", "job-1", &k);
}

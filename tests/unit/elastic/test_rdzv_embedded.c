/*
 * test_rdzv_embedded.c - the rendezvous (elastic/rdzv.h) against the embedded store started in
 * this process: the shared cases of rdzv_cases.h, plus the record codec on its own (round trips,
 * every truncation and bit flip, well-checksummed records with lying fields, random bytes), the
 * key parser and the string map; and a leak check over the whole run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "tests/support/store_fixture.h"

static char base_url[256];
static int64_t lease_ms = 1000;     /* the embedded store's minimum TTL is 1 s */
static int64_t quick_next_ms = 250; /* rdzv_shrink_rank0 */

#include "rdzv_cases.h"

/* ---- codec ---- */

/* Recomputes a record's checksum after the test changed it (docs/internals/rdzv.md). */
static void fix_checksum(unsigned char *v, size_t len)
{
    uint64_t h = eccl_hash64(v, len - 8, 0x52445aULL);
    for (int i = 0; i < 8; i++)
        v[len - 8 + i] = (unsigned char)(h >> (56 - 8 * i));
}

static struct el_rdzv_gen *sample_gen(void)
{
    const char *ids[3] = {"a:1:x", "b:2:y", "c:3:z"};
    struct el_rdzv_gen *g = el_gen_alloc(3, 64);
    assert_non_null(g);
    char *next = (char *)(g->members + 3);
    for (int i = 0; i < 3; i++) {
        strcpy(next, ids[i]);
        g->members[i] = next;
        next += strlen(ids[i]) + 1;
    }
    g->gen = 7;
    g->step = 1234;
    g->as_of_rev = 99;
    g->mode = EL_RDZV_REPLACE;
    return g;
}

static void codec_roundtrip(void **state)
{
    (void)state;
    struct el_rdzv_gen *g = sample_gen(), *d = NULL;
    unsigned char *v = NULL;
    size_t len = 0;
    OK(el_rec_encode_gen(g, &v, &len));
    OK(el_rec_decode_gen(v, len, "k", &d));
    assert_int_equal(d->gen, 7);
    assert_int_equal(d->step, 1234);
    assert_int_equal(d->as_of_rev, 99);
    assert_int_equal(d->mode, EL_RDZV_REPLACE);
    assert_int_equal(d->nmembers, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(d->members[i], g->members[i]);
    el_rdzv_gen_free(d);
    eccl_free(v);

    /* Ids that share prefixes (front coding) come back whole. */
    const char *ids[4] = {"node-1:100:aa", "node-1:101:bb", "node-2:100:cc", "n"};
    el_rdzv_gen_free(g);
    g = el_gen_alloc(4, 64);
    char *next = (char *)(g->members + 4);
    for (int i = 0; i < 4; i++) {
        strcpy(next, ids[i]);
        g->members[i] = next;
        next += strlen(ids[i]) + 1;
    }
    g->gen = 1;
    OK(el_rec_encode_gen(g, &v, &len));
    OK(el_rec_decode_gen(v, len, "k", &d));
    for (int i = 0; i < 4; i++)
        assert_string_equal(d->members[i], ids[i]);
    int *idx = NULL;
    OK(el_gen_index(d, &idx));
    for (int i = 0; i < 4; i++)
        assert_int_equal(el_gen_lookup(d, idx, ids[i]), i);
    assert_int_equal(el_gen_lookup(d, idx, "node-1:100:a"), -1);
    eccl_free(idx);
    el_rdzv_gen_free(d);

    unsigned char buf[EL_REC_SMALL_MAX];
    struct el_member_rec m = {.id = "host:1:ab", .lease = 42, .replace_rank = 3, .joined_ms = 5},
                         m2;
    size_t n = el_rec_encode_member(&m, buf);
    OK(el_rec_decode_member(buf, n, "k", &m2));
    assert_string_equal(m2.id, m.id);
    assert_int_equal(m2.lease, 42);
    assert_int_equal(m2.replace_rank, 3);
    assert_int_equal(m2.joined_ms, 5);
    struct el_intent_rec in = {.id = "host:1:ab", .gen = 9, .step = -1, .replace_rank = -1}, in2;
    n = el_rec_encode_intent(&in, buf);
    OK(el_rec_decode_intent(buf, n, "k", &in2));
    assert_string_equal(in2.id, in.id);
    assert_int_equal(in2.gen, 9);
    assert_int_equal(in2.step, -1);
    assert_int_equal(in2.replace_rank, -1);
    struct el_boot_rec b = {.gen = 3, .len = EL_RDZV_MAX_BOOT}, b2;
    for (int i = 0; i < EL_RDZV_MAX_BOOT; i++)
        b.blob[i] = (unsigned char)i;
    n = el_rec_encode_boot(&b, buf);
    OK(el_rec_decode_boot(buf, n, "k", &b2));
    assert_int_equal(b2.gen, 3);
    assert_int_equal(b2.len, EL_RDZV_MAX_BOOT);
    assert_memory_equal(b2.blob, b.blob, EL_RDZV_MAX_BOOT);
    struct el_revoke_rec rv = {.gen = 3, .by = "me", .failed = "", .why = "because"}, rv2;
    n = el_rec_encode_revoke(&rv, buf);
    OK(el_rec_decode_revoke(buf, n, "k", &rv2));
    assert_int_equal(rv2.gen, 3);
    assert_string_equal(rv2.by, "me");
    assert_string_equal(rv2.failed, "");
    assert_string_equal(rv2.why, "because");
    /* A record of one kind is not another. */
    assert_int_equal(el_rec_decode_member(buf, n, "k", &m2), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "another kind"));
    eccl_free(v);
    el_rdzv_gen_free(g);
}

/* Every truncation and every bit flip of a generation record is refused. */
static void codec_truncate_flip(void **state)
{
    (void)state;
    struct el_rdzv_gen *g = sample_gen(), *d = NULL;
    unsigned char *v = NULL;
    size_t len = 0;
    OK(el_rec_encode_gen(g, &v, &len));
    for (size_t cut = 0; cut < len; cut++) {
        d = (struct el_rdzv_gen *)1;
        assert_int_equal(el_rec_decode_gen(v, cut, "k", &d), ecclRemoteError);
        assert_ptr_equal(d, (struct el_rdzv_gen *)1);
    }
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            v[i] ^= (unsigned char)(1 << bit);
            assert_int_equal(el_rec_decode_gen(v, len, "k", &d), ecclRemoteError);
            v[i] ^= (unsigned char)(1 << bit);
        }
    }
    OK(el_rec_decode_gen(v, len, "k", &d));
    el_rdzv_gen_free(d);
    eccl_free(v);
    el_rdzv_gen_free(g);
}

/* Records with a valid checksum and a lying field: each refused with its reason. */
static void codec_lying_fields(void **state)
{
    (void)state;
    struct el_rdzv_gen *g = sample_gen(), *d = NULL;
    unsigned char *v = NULL;
    size_t len = 0;
    OK(el_rec_encode_gen(g, &v, &len));
    unsigned char *w = malloc(len + 16);
    assert_non_null(w);
    struct {
        size_t off;
        unsigned char val;
        const char *why;
    } cases[] = {
        {4, 2, "unknown version"},
        {5, 'M', "another kind"},
        {7, 1, "unknown flags"},
        {8 + 7, 0, "generation out of range"}, /* gen 7 -> 0 (low byte) */
        {16, 0x80, "step out of range"},       /* step negative, below -1 */
        {32, 9, "unknown mode"},
        {36, 200, "larger than the record"},  /* member count 3 -> 200 */
        {36, 0, "member count out of range"}, /* 0 members */
        /* Members are front-coded: shared prefix length, suffix length, suffix. */
        {37, 1, "member id length out of range"},   /* the first shares with nothing */
        {38, 0, "member id length out of range"},   /* empty id */
        {38, 200, "member id length out of range"}, /* longer than the record */
        {39, '/', "invalid member id"},             /* 'a' -> '/' */
        {44, 6, "member id length out of range"},   /* shares more than the previous id has */
        {45, 'a', "member id length out of range"}, /* second id's length 5 -> 97 */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        memcpy(w, v, len);
        w[cases[c].off] = cases[c].val;
        fix_checksum(w, len);
        d = NULL;
        ecclResult_t res = el_rec_decode_gen(w, len, "k", &d);
        if (res != ecclRemoteError || !strstr(eccl_log_last_error(), cases[c].why))
            fail_msg("case %zu: result %d, text '%s' (want '%s')", c, res, eccl_log_last_error(),
                     cases[c].why);
        assert_null(d);
    }
    /* Duplicate member: the third id made equal to the first. */
    memcpy(w, v, len);
    memcpy(w + 53, "a:1:x", 5);
    fix_checksum(w, len);
    assert_int_equal(el_rec_decode_gen(w, len, "k", &d), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "twice"));
    /* Trailing bytes. */
    memcpy(w, v, len - 8);
    memcpy(w + len - 8, "XX", 2);
    memset(w + len - 6, 0, 8);
    fix_checksum(w, len + 2);
    assert_int_equal(el_rec_decode_gen(w, len + 2, "k", &d), ecclRemoteError);
    assert_non_null(strstr(eccl_log_last_error(), "trailing"));
    free(w);
    eccl_free(v);
    el_rdzv_gen_free(g);
}

/* Random bytes behind a valid header and checksum: never a crash, never a leak. */
static void codec_random(void **state)
{
    (void)state;
    unsigned char buf[600];
    const uint8_t kinds[] = {EL_REC_GEN, EL_REC_MEMBER, EL_REC_INTENT, EL_REC_BOOT, EL_REC_REVOKE};
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        size_t len = 16 + (size_t)(eccl_random64() % (sizeof(buf) - 16));
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)eccl_random64();
        uint8_t kind = kinds[it % 5];
        buf[0] = 0x45, buf[1] = 0x52, buf[2] = 0x44, buf[3] = 0x5a, buf[4] = 1, buf[5] = kind;
        buf[6] = buf[7] = 0;
        if (it % 3 == 0 && len > 40) {
            /* Small counts and lengths, so that some records get deep. */
            buf[8] = buf[9] = buf[10] = buf[11] = buf[12] = buf[13] = buf[14] = 0;
            buf[33] = buf[34] = buf[35] = 0;
            buf[36] &= 3;
        }
        fix_checksum(buf, len);
        struct el_rdzv_gen *g = NULL;
        struct el_member_rec m;
        struct el_intent_rec in;
        struct el_boot_rec b;
        struct el_revoke_rec rv;
        ecclResult_t res;
        switch (kind) {
        case EL_REC_GEN:
            res = el_rec_decode_gen(buf, len, "k", &g);
            el_rdzv_gen_free(g);
            break;
        case EL_REC_MEMBER:
            res = el_rec_decode_member(buf, len, "k", &m);
            break;
        case EL_REC_INTENT:
            res = el_rec_decode_intent(buf, len, "k", &in);
            break;
        case EL_REC_BOOT:
            res = el_rec_decode_boot(buf, len, "k", &b);
            break;
        default:
            res = el_rec_decode_revoke(buf, len, "k", &rv);
            break;
        }
        assert_true(res == ecclSuccess || res == ecclRemoteError);
        ok += res == ecclSuccess;
    }
    (void)ok;
}

static void keys_parse(void **state)
{
    (void)state;
    int64_t gen = 0;
    const char *id = NULL;
    size_t il = 0;
    struct el_key k;
    el_key_record(&k, "job1");
    assert_string_equal(k.s, "job1/s/g");
    assert_int_equal(el_key_parse("job1", k.s, k.len, &gen, &id, &il), EL_KEY_RECORD);
    el_key_lead(&k, "job1", 12);
    assert_int_equal(el_key_parse("job1", k.s, k.len, &gen, &id, &il), EL_KEY_LEAD);
    assert_int_equal(gen, 12);
    el_key_intent(&k, "job1", 3, "h:1:x");
    assert_string_equal(k.s, "job1/i/3/h:1:x");
    assert_int_equal(el_key_parse("job1", k.s, k.len, &gen, &id, &il), EL_KEY_INTENT);
    assert_int_equal(gen, 3);
    assert_int_equal(il, 5);
    assert_memory_equal(id, "h:1:x", 5);
    el_key_member(&k, "job1", "h:1:x");
    assert_int_equal(el_key_parse("job1", k.s, k.len, &gen, &id, &il), EL_KEY_MEMBER);
    /* Another job with a common prefix, odd shapes: not ours. */
    assert_int_equal(el_key_parse("job", "job1/s/g", 8, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/s/gl/0", 11, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/s/gl/01", 12, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/s/gl/1x", 12, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/i/3", 8, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/i/3/", 9, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/s/m/a b", 12, &gen, &id, &il), EL_KEY_OTHER);
    assert_int_equal(el_key_parse("job1", "job1/s/gl/99999999999999999999", 30, &gen, &id, &il),
                     EL_KEY_OTHER);
    assert_true(el_job_valid("a.b-c_9"));
    assert_false(el_job_valid(".."));
    assert_false(el_job_valid(""));
    assert_false(el_job_valid("a/b"));
}

static void map_ops(void **state)
{
    (void)state;
    struct el_map m = {0};
    char key[32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++) {
            snprintf(key, sizeof(key), "k%d", i);
            OK(el_map_put(&m, key, (void *)(intptr_t)(i + 1), NULL));
        }
        for (int i = 0; i < 1000; i += 2) {
            snprintf(key, sizeof(key), "k%d", i);
            assert_int_equal((intptr_t)el_map_del(&m, key), i + 1);
        }
        assert_int_equal(m.n, 500);
        for (int i = 0; i < 1000; i++) {
            bool found;
            snprintf(key, sizeof(key), "k%d", i);
            void *v = el_map_get(&m, key, &found);
            assert_int_equal(found, i % 2 == 1);
            assert_int_equal((intptr_t)v, found ? i + 1 : 0);
        }
    }
    el_map_fini(&m, NULL);
}

int main(void)
{
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    struct store_fixture fx;
    if (store_fixture_start(&fx) != 0) {
        fprintf(stderr, "cannot start the embedded store\n");
        return 1;
    }
    snprintf(base_url, sizeof(base_url), "%s", fx.url);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codec_roundtrip),
        cmocka_unit_test(codec_truncate_flip),
        cmocka_unit_test(codec_lying_fields),
        cmocka_unit_test(codec_random),
        cmocka_unit_test(keys_parse),
        cmocka_unit_test(map_ops),
        RDZV_CASES,
    };
    int failed = cmocka_run_group_tests_name("rdzv (embedded store)", tests, NULL, NULL);
    store_fixture_stop(&fx);
    int64_t leaked = eccl_alloc_live_blocks(NULL) - blocks0;
    if (leaked != 0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks still live\n", (long long)leaked);
        return 1;
    }
    return failed ? 1 : 0;
}

/*
 * test_rdzv_auth.c - elastic records with a job secret (ECCL_JOB_SECRET_FILE), against the
 * embedded store started in this process.
 *
 * With the secret, members form generations, shrink and revoke as usual (a subset of the shared
 * cases of rdzv_cases.h runs here with every record authenticated). Records written straight into
 * the store by a client without the secret are ignored and logged: a forged revoke revokes
 * nothing, a forged registration joins no one, a forged generation record moves no member. The
 * codec: a sealed record decodes only under its own key, unmodified, and only with the secret.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/param.h"
#include "tests/support/jobsecret.h"
#include "tests/support/mp.h"
#include "tests/support/store_fixture.h"

static char base_url[256];
static int64_t lease_ms = 1000;
static int64_t quick_next_ms = 250;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "rdzv_cases.h"
#pragma GCC diagnostic pop

static char secret_path[64];
static char log_path[64];

/* Whether the log file (WARN lines of every thread go there) has `needle`. */
static bool log_has(const char *needle)
{
    return strstr(jobsecret_log_text(log_path), needle) != NULL;
}

/* ---- codec ---- */

static void auth_codec(void **state)
{
    (void)state;
    assert_true(eccl_auth_enabled());
    struct el_revoke_rec rv = {.gen = 3};
    strcpy(rv.by, "m1");
    strcpy(rv.failed, "m2");
    strcpy(rv.why, "EOF");
    unsigned char buf[EL_REC_SMALL_MAX], plain[EL_REC_SMALL_MAX];
    size_t len = el_rec_encode_revoke(&rv, buf);
    size_t plen = el_rec_encode_revoke(&rv, plain);
    OK(el_rec_seal(buf, &len, sizeof(buf), "j/s/gr/3"));
    assert_int_equal(len, plen + EL_REC_AUTH_BYTES);
    struct el_revoke_rec out;
    OK(el_rec_decode_revoke(buf, len, "j/s/gr/3", &out));
    assert_int_equal(out.gen, 3);
    assert_string_equal(out.why, "EOF");
    assert_true(el_rec_authentic(buf, len, "j/s/gr/3"));
    /* Under another key (a replay of an old revoke as a new one): refused. */
    assert_int_equal(el_rec_decode_revoke(buf, len, "j/s/gr/4", &out), ecclRemoteError);
    assert_true(mp_text_has(eccl_log_last_error(), "wrong MAC"));
    assert_false(el_rec_authentic(buf, len, "j/s/gr/4"));
    /* Without a MAC (a writer without the secret): refused. */
    assert_int_equal(el_rec_decode_revoke(plain, plen, "j/s/gr/3", &out), ecclRemoteError);
    assert_true(mp_text_has(eccl_log_last_error(), "not authenticated"));
    assert_false(el_rec_authentic(plain, plen, "j/s/gr/3"));
    /* Every single bit flipped: refused. */
    for (size_t i = 0; i < len * 8; i++) {
        buf[i / 8] ^= (unsigned char)(1u << (i % 8));
        assert_int_not_equal(el_rec_decode_revoke(buf, len, "j/s/gr/3", &out), ecclSuccess);
        buf[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
    /* Each seal draws a fresh nonce: two seals of one record differ. */
    unsigned char again[EL_REC_SMALL_MAX];
    size_t alen = el_rec_encode_revoke(&rv, again);
    OK(el_rec_seal(again, &alen, sizeof(again), "j/s/gr/3"));
    assert_int_equal(alen, len);
    assert_memory_not_equal(again, buf, len);
    /* A process without the secret cannot read an authenticated record. */
    jobsecret_use(NULL);
    assert_false(eccl_auth_enabled());
    assert_int_equal(el_rec_decode_revoke(buf, len, "j/s/gr/3", &out), ecclRemoteError);
    assert_true(mp_text_has(eccl_log_last_error(), "no job secret"));
    jobsecret_use(secret_path);
    assert_true(eccl_auth_enabled());
}

/* ---- forged records in the store ---- */

static void auth_forged_records(void **state)
{
    (void)state;
    clean_job("forge");
    struct store *s = open_store();
    /* A well-formed registration (valid checksum) for the first generation by someone without
     * the secret: ignored; the generation has the two real members. */
    struct el_intent_rec in = {.gen = 1, .step = -1, .replace_rank = -1};
    strcpy(in.id, "intruder");
    unsigned char ib[EL_REC_SMALL_MAX];
    size_t ilen = el_rec_encode_intent(&in, ib);
    put_raw(s, "forge/i/1/intruder", ib, ilen);
    struct member ms[2];
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "fg%d", i);
        member_init(&ms[i], "forge", id, 2, 3);
        ms[i].cfg.last_call_ms = 300;
    }
    run_members(ms, 2);
    expect_formed(ms, 2, 1, 2);
    assert_int_equal(rank_of(ms[0].g, "intruder"), -1);
    assert_true(log_has("ignoring the unreadable registration at 'forge/i/1/intruder'"));

    /* A forged revoke of the current generation: ignored (no REVOKED event) and logged. */
    struct el_revoke_rec rv = {.gen = 1};
    strcpy(rv.by, "fg0");
    strcpy(rv.failed, "fg1");
    strcpy(rv.why, "forged");
    unsigned char rb[EL_REC_SMALL_MAX];
    size_t rlen = el_rec_encode_revoke(&rv, rb);
    put_raw(s, "forge/s/gr/1", rb, rlen);
    struct el_rdzv_event ev;
    for (int i = 0; i < 2; i++) {
        OK(el_rdzv_poll(ms[i].r, DL(700), &ev));
        assert_int_equal(ev.type, EL_RDZV_EV_NONE);
    }
    assert_true(log_has("ignoring the record at key 'forge/s/gr/1': not authenticated"));

    /* A forged generation record that would drop fg1: ignored, no error, nobody moves. */
    struct el_rdzv_gen *fake = NULL;
    OK(el_gen_dup(ms[0].g, &fake));
    fake->gen = 2;
    fake->nmembers = 1;
    fake->members[0] = ms[0].g->members[0];
    unsigned char *val = NULL;
    size_t len = 0;
    OK(el_rec_encode_gen(fake, &val, &len));
    put_raw(s, "forge/s/g", val, len);
    eccl_free(val);
    el_rdzv_gen_free(fake);
    for (int i = 0; i < 2; i++) {
        OK(el_rdzv_poll(ms[i].r, DL(500), &ev));
        assert_int_equal(ev.type, EL_RDZV_EV_NONE);
        assert_int_equal(el_rdzv_current_gen(ms[i].r), 1);
    }
    assert_true(log_has("ignoring the record at key 'forge/s/g'"));

    /* The real revoke (sealed with the secret) still works. */
    OK(store_delete(s, "forge/s/gr/1", 12, false, DL(5000), NULL, NULL));
    OK(el_rdzv_revoke(ms[1].r, 1, "fg0", "real", DL(5000)));
    for (int i = 0; i < 2; i++) {
        ev = wait_event(ms[i].r, EL_RDZV_EV_REVOKED, 3000);
        assert_string_equal(ev.why, "real");
    }
    for (int i = 0; i < 2; i++)
        member_fini(&ms[i]);
    store_close(s);
}

int main(void)
{
    if (jobsecret_make(secret_path, sizeof(secret_path), NULL, "rdzv-auth-test-secret-0123456789"))
        return 1;
    snprintf(log_path, sizeof(log_path), "/tmp/eccl-rdzv-auth-%d.log", (int)getpid());
    setenv("ECCL_JOB_SECRET_FILE", secret_path, 1);
    setenv("ECCL_DEBUG", "WARN", 1);
    setenv("ECCL_DEBUG_FILE", log_path, 1);
    eccl_param_reset();
    eccl_log_reset();
    struct store_fixture fx;
    if (store_fixture_start(&fx) != 0) {
        fprintf(stderr, "cannot start the embedded store\n");
        return 1;
    }
    snprintf(base_url, sizeof(base_url), "%s", fx.url);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_codec),          cmocka_unit_test(rdzv_form_first),
        cmocka_unit_test(rdzv_revoke),         cmocka_unit_test(rdzv_shrink),
        cmocka_unit_test(auth_forged_records),
    };
    int failed = cmocka_run_group_tests_name("rdzv with a job secret", tests, NULL, NULL);
    store_fixture_stop(&fx);
    unlink(secret_path);
    if (failed)
        printf("log kept: %s\n", log_path);
    else
        unlink(log_path);
    return failed ? 1 : 0;
}

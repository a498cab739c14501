/*
 * test_store_etcd_auth.c - the etcd backend against a real etcd with authentication on, and
 * against one that serves TLS with client certificates (made here with openssl): the right
 * credentials work (from the URL or ECCL_STORE_* variables), wrong ones get a clear error, an
 * expired token is refreshed. Exits 77 when /usr/bin/etcd or openssl is missing.
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
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "store/store.h"

#include "etcd_helper.h"

#define OK(expr) assert_int_equal((expr), ecclSuccess)
#define DL(ms)   eccl_deadline_ms(ms)
#define S(str)   (str), strlen(str)

static struct etcd_proc auth_etcd, tls_etcd;

/* The token TTL of the auth etcd: short, so that the refresh test does not wait long. */
#define TOKEN_TTL_S 2

static int setup_auth(void)
{
    snprintf(auth_etcd.extra, sizeof(auth_etcd.extra), "--auth-token-ttl %d", TOKEN_TTL_S);
    if (etcd_start(&auth_etcd) != 0)
        return -1;
    char out[256];
    /* Users root (all) and elastic (READWRITE on /nccl/ only), as in the etcd notes. */
    const char *steps[][2] = {
        {"/v3/auth/user/add", "{\"name\":\"root\",\"password\":\"rootpw\"}"},
        {"/v3/auth/role/add", "{\"name\":\"root\"}"},
        {"/v3/auth/user/grant", "{\"user\":\"root\",\"role\":\"root\"}"},
        {"/v3/auth/user/add", "{\"name\":\"elastic\",\"password\":\"elpw\"}"},
        {"/v3/auth/role/add", "{\"name\":\"ncclrole\"}"},
        {"/v3/auth/role/grant", "{\"name\":\"ncclrole\",\"perm\":{\"permType\":\"READWRITE\","
                                "\"key\":\"L25jY2wv\",\"range_end\":\"L25jY2ww\"}}"},
        {"/v3/auth/user/grant", "{\"user\":\"elastic\",\"role\":\"ncclrole\"}"},
        {"/v3/auth/enable", "{}"},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        long st = etcd_post(&auth_etcd, steps[i][0], steps[i][1], NULL, out);
        if (st != 200) {
            fprintf(stderr, "auth setup %s: HTTP %ld %s\n", steps[i][0], st, out);
            return -1;
        }
    }
    return 0;
}

static void auth_ok(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof(url), "etcd://elastic:elpw@127.0.0.1:%d/nccl/job1", auth_etcd.client_port);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    int64_t rev;
    OK(store_put(s, S("k"), S("v"), 0, DL(5000), &rev));
    struct store_watch *w;
    OK(store_watch_create(s, S("k"), false, rev, NULL, NULL, DL(5000), &w));
    struct store_event *ev;
    size_t n;
    OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
    assert_int_equal(n, 1);
    store_events_free(ev, n);
    store_watch_destroy(w);
    int64_t id, ttl;
    OK(store_lease_grant(s, 5, DL(5000), &id));
    OK(store_lease_keepalive_once(s, id, DL(5000), &ttl));
    assert_int_equal(ttl, 5);
    OK(store_lease_revoke(s, id, DL(5000)));
    store_close(s);

    /* The same from the environment. */
    snprintf(url, sizeof(url), "etcd://127.0.0.1:%d/nccl/job1", auth_etcd.client_port);
    setenv("ECCL_STORE_USER", "elastic", 1);
    setenv("ECCL_STORE_PASSWORD", "elpw", 1);
    eccl_param_reset();
    OK(store_open(url, DL(5000), &s));
    struct store_kv *kv;
    OK(store_get(s, S("k"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    store_kv_free(kv);
    store_close(s);
    unsetenv("ECCL_STORE_USER");
    unsetenv("ECCL_STORE_PASSWORD");
    eccl_param_reset();
}

static void auth_wrong(void **state)
{
    (void)state;
    char url[256];
    struct store *s = (struct store *)1;
    snprintf(url, sizeof(url), "etcd://elastic:nope@127.0.0.1:%d/nccl/job1", auth_etcd.client_port);
    assert_int_equal(store_open(url, DL(5000), &s), ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "authentication failed"));
    snprintf(url, sizeof(url), "etcd://nobody:x@127.0.0.1:%d/nccl/job1", auth_etcd.client_port);
    assert_int_equal(store_open(url, DL(5000), &s), ecclInvalidUsage);
    /* No credentials at all. */
    snprintf(url, sizeof(url), "etcd://127.0.0.1:%d/nccl/job1", auth_etcd.client_port);
    assert_int_equal(store_open(url, DL(5000), &s), ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "user name is empty"));
    /* Right user, outside its prefix. */
    snprintf(url, sizeof(url), "etcd://elastic:elpw@127.0.0.1:%d/other", auth_etcd.client_port);
    assert_int_equal(store_open(url, DL(5000), &s), ecclInvalidUsage);
    assert_non_null(strstr(eccl_log_last_error(), "permission denied"));
    assert_ptr_equal(s, (struct store *)1);
}

/* The token expires after TOKEN_TTL_S of disuse; the next call authenticates again. */
static void auth_refresh(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof(url), "etcd://elastic:elpw@127.0.0.1:%d/nccl/job2", auth_etcd.client_port);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    OK(store_put(s, S("a"), S("1"), 0, DL(5000), NULL));
    eccl_sleep_us((TOKEN_TTL_S + 2) * 1000000ULL);
    OK(store_put(s, S("a"), S("2"), 0, DL(5000), NULL));
    eccl_sleep_us((TOKEN_TTL_S + 2) * 1000000ULL);
    struct store_watch *w;
    OK(store_watch_create(s, S("a"), false, 1, NULL, NULL, DL(5000), &w));
    struct store_event *ev;
    size_t n;
    OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
    assert_int_equal(n, 2);
    store_events_free(ev, n);
    store_watch_destroy(w);
    store_close(s);
}

/* ---- TLS ---- */

static char tls_dir[128];

static int make_certs(void)
{
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/eccl-etcd-tls-XXXXXX");
    if (!mkdtemp(tls_dir))
        return -1;
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && exec >openssl.log 2>&1 && "
             "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' "
             ">srv.ext && "
             "printf 'extendedKeyUsage=clientAuth\\n' >cli.ext && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "
             "/CN=eccl-test-ca && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt "
             "-days 2 -subj /CN=other-ca && "
             "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "
             "/CN=127.0.0.1 && "
             "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out "
             "server.crt -days 2 -extfile srv.ext && "
             "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "
             "/CN=eccl-client && "
             "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out "
             "client.crt -days 2 -extfile cli.ext",
             tls_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup_tls(void)
{
    if (make_certs() != 0) {
        fprintf(stderr, "openssl failed; see %s/openssl.log\n", tls_dir);
        return -1;
    }
    tls_etcd.tls = true;
    snprintf(tls_etcd.extra, sizeof(tls_etcd.extra),
             "--cert-file %s/server.crt --key-file %s/server.key --client-cert-auth "
             "--trusted-ca-file %s/ca.crt",
             tls_dir, tls_dir, tls_dir);
    snprintf(tls_etcd.ca, sizeof(tls_etcd.ca), "%s/ca.crt", tls_dir);
    snprintf(tls_etcd.cert, sizeof(tls_etcd.cert), "%s/client.crt", tls_dir);
    snprintf(tls_etcd.key, sizeof(tls_etcd.key), "%s/client.key", tls_dir);
    return etcd_start(&tls_etcd);
}

static void tls_ok(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof(url), "etcds://127.0.0.1:%d/tls?ca=%s&cert=%s&key=%s",
             tls_etcd.client_port, tls_etcd.ca, tls_etcd.cert, tls_etcd.key);
    struct store *s;
    OK(store_open(url, DL(5000), &s));
    int64_t rev;
    OK(store_put(s, S("k"), S("v"), 0, DL(5000), &rev));
    struct store_watch *w;
    OK(store_watch_create(s, S("k"), false, rev, NULL, NULL, DL(5000), &w));
    struct store_event *ev;
    size_t n;
    OK(store_watch_poll(w, 8, DL(5000), &ev, &n));
    assert_int_equal(n, 1);
    store_events_free(ev, n);
    store_watch_destroy(w);
    store_close(s);

    /* The same from the environment. */
    setenv("ECCL_STORE_CA", tls_etcd.ca, 1);
    setenv("ECCL_STORE_CERT", tls_etcd.cert, 1);
    setenv("ECCL_STORE_KEY", tls_etcd.key, 1);
    eccl_param_reset();
    snprintf(url, sizeof(url), "etcds://127.0.0.1:%d/tls", tls_etcd.client_port);
    OK(store_open(url, DL(5000), &s));
    struct store_kv *kv;
    OK(store_get(s, S("k"), DL(5000), &kv, NULL));
    assert_non_null(kv);
    store_kv_free(kv);
    store_close(s);
    unsetenv("ECCL_STORE_CA");
    unsetenv("ECCL_STORE_CERT");
    unsetenv("ECCL_STORE_KEY");
    eccl_param_reset();
}

static void tls_wrong(void **state)
{
    (void)state;
    char url[1024];
    struct store *s = (struct store *)1;
    /* A server certificate from another CA: refused at once, with curl's reason. */
    snprintf(url, sizeof(url), "etcds://127.0.0.1:%d/tls?ca=%s/other-ca.crt&cert=%s&key=%s",
             tls_etcd.client_port, tls_dir, tls_etcd.cert, tls_etcd.key);
    uint64_t t0 = eccl_now_ns();
    assert_int_equal(store_open(url, DL(5000), &s), ecclInvalidUsage);
    assert_true(eccl_now_ns() - t0 < 3 * ECCL_NS_PER_S);
    assert_non_null(strstr(eccl_log_last_error(), "TLS"));
    /* No client certificate: the server refuses the handshake; an error by the deadline. */
    snprintf(url, sizeof(url), "etcds://127.0.0.1:%d/tls?ca=%s", tls_etcd.client_port, tls_etcd.ca);
    assert_int_not_equal(store_open(url, DL(2000), &s), ecclSuccess);
    /* Plain HTTP to a TLS port. */
    snprintf(url, sizeof(url), "etcd://127.0.0.1:%d/tls", tls_etcd.client_port);
    assert_int_not_equal(store_open(url, DL(2000), &s), ecclSuccess);
    /* A certificate file that does not exist. */
    snprintf(url, sizeof(url), "etcds://127.0.0.1:%d/tls?ca=/nonexistent/ca.crt",
             tls_etcd.client_port);
    assert_int_equal(store_open(url, DL(2000), &s), ecclInvalidUsage);
    assert_ptr_equal(s, (struct store *)1);
}

int main(void)
{
    if (!etcd_available() || access("/usr/bin/openssl", X_OK) != 0) {
        fprintf(stderr, "SKIP: needs %s and /usr/bin/openssl\n", ETCD_BIN);
        return 77;
    }
    int rc = 1;
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    if (setup_auth() != 0 || setup_tls() != 0) {
        fprintf(stderr, "etcd set-up failed\n");
        goto out;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_ok), cmocka_unit_test(auth_wrong), cmocka_unit_test(auth_refresh),
        cmocka_unit_test(tls_ok),  cmocka_unit_test(tls_wrong),
    };
    rc = cmocka_run_group_tests_name("store etcd auth and TLS", tests, NULL, NULL) ? 1 : 0;
    if (eccl_alloc_live_blocks(NULL) != blocks0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks\n", (long long)(eccl_alloc_live_blocks(NULL) - blocks0));
        rc = 1;
    }
out:
    etcd_destroy(&auth_etcd);
    etcd_destroy(&tls_etcd);
    if (tls_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tls_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tls_dir);
    }
    return rc;
}

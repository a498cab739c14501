/*
 * torture.c - scenarios shared by the fault sweeps (see torture.h).
 */
#include "tests/support/torture.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/time.h"
#include "store/store.h"

#define S(str) (str), strlen(str)

int torture_store_ops(void)
{
    int ok = 0;
    struct store_server *srv = NULL;
    struct store *s = NULL;
    struct store_watch *w = NULL;
    int port;
    if (store_server_start("127.0.0.1:0", &srv, &port) != ecclSuccess)
        return ok;
    ok++;
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/t", port);
    if (store_open(url, eccl_deadline_ms(1000), &s) != ecclSuccess)
        goto out;
    ok++;
    uint64_t dl = eccl_deadline_ms(2000);
    int64_t rev = 0, id = 0, n64 = 0;
    ok += store_watch_create(s, S("a/"), true, 0, NULL, NULL, dl, &w) == ecclSuccess;
    ok += store_put(s, S("a/1"), S("v"), 0, dl, &rev) == ecclSuccess;
    /* Two watches from a revision share a stream: the second joins the first's (a replay). */
    struct store_watch *ws[2] = {NULL, NULL};
    for (int i = 0; i < 2 && rev > 0; i++)
        ok += store_watch_create(s, S("a/"), true, rev, NULL, NULL, dl, &ws[i]) == ecclSuccess;
    struct store_kv *kv = NULL;
    if (store_get(s, S("a/1"), dl, &kv, NULL) == ecclSuccess) {
        ok++;
        store_kv_free(kv);
    }
    struct store_kvs *kvs = NULL;
    if (store_get_prefix(s, S("a/"), NULL, 0, 0, dl, &kvs) == ecclSuccess) {
        ok++;
        store_kvs_free(kvs);
    }
    store_watch_destroy(ws[1]);
    store_watch_destroy(ws[0]);
    bool won;
    kv = NULL;
    if (store_cas(s, S("a/1"), 1, S("x"), 0, dl, &won, NULL, &kv) == ecclSuccess) {
        ok++;
        store_kv_free(kv);
    }
    if (store_lease_grant(s, 5, dl, &id) == ecclSuccess) {
        ok++;
        ok += store_put(s, S("a/2"), S("v"), id, dl, NULL) == ecclSuccess;
        ok += store_lease_keep(s, id, 5, NULL, NULL) == ecclSuccess;
        ok += store_lease_ttl(s, id, dl, &n64) == ecclSuccess;
        ok += store_lease_revoke(s, id, dl) == ecclSuccess;
    }
    ok += store_delete(s, S("a/"), true, dl, &n64, NULL) == ecclSuccess;
    if (w) {
        struct store_event *ev = NULL;
        size_t n = 0;
        if (store_watch_poll(w, 64, eccl_deadline_ms(200), &ev, &n) == ecclSuccess) {
            ok++;
            store_events_free(ev, n);
        }
    }
    kv = NULL;
    if (store_wait_key(s, S("a/1"), eccl_deadline_ms(50), &kv) == ecclSuccess)
        store_kv_free(kv);
out:
    store_watch_destroy(w);
    store_close(s);
    store_server_stop(srv);
    return ok;
}

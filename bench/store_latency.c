/*
 * store_latency.c - latency of the store's operations: put, get, CAS (a winning compare-and-swap
 * on mod revision) and watch notification (from just before a put until the watch callback runs),
 * one at a time from one thread, p50 / p99 / max in microseconds.
 *
 *   build/bench/store_latency URL [N]     URL: etcd://..., tcp://..., or "embedded" (a server
 *                                          started in this process, reached over loopback TCP)
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/time.h"
#include "store/store.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, int n)
{
    qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
    printf("%-8s n=%-6d p50 %8.1f us   p99 %8.1f us   max %8.1f us\n", what, n, ns[n / 2] / 1e3,
           ns[(n * 99) / 100] / 1e3, ns[n - 1] / 1e3);
}

static _Atomic int64_t seen_rev;
static _Atomic uint64_t seen_ns;

static void on_event(void *arg, const struct store_event *ev, size_t n, ecclResult_t status)
{
    (void)arg;
    if (status != ecclSuccess || n == 0)
        return;
    atomic_store(&seen_ns, eccl_now_ns());
    atomic_store(&seen_rev, ev[n - 1].kv.mod_rev);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL|embedded [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 2000;
    if (n < 10)
        n = 10;
    struct store_server *srv = NULL;
    char url[512];
    if (!strcmp(argv[1], "embedded")) {
        int port;
        if (store_server_start("127.0.0.1:0", &srv, &port) != ecclSuccess)
            return 1;
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/bench", port);
    } else {
        snprintf(url, sizeof(url), "%s", argv[1]);
    }
    struct store *s;
    if (store_open(url, eccl_deadline_ms(10000), &s) != ecclSuccess) {
        fprintf(stderr, "cannot open %s\n", url);
        return 1;
    }
    uint64_t *ns = eccl_calloc((size_t)n, sizeof(*ns), "bench");
    char val[64];
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        snprintf(val, sizeof(val), "value-%d", i);
        uint64_t t0 = eccl_now_ns();
        rc = store_put(s, "k", 1, val, strlen(val), 0, eccl_deadline_ms(5000), NULL) != 0;
        ns[i] = eccl_now_ns() - t0;
    }
    report("put", ns, n);
    for (int i = 0; i < n && !rc; i++) {
        struct store_kv *kv;
        uint64_t t0 = eccl_now_ns();
        rc = store_get(s, "k", 1, eccl_deadline_ms(5000), &kv, NULL) != 0 || !kv;
        ns[i] = eccl_now_ns() - t0;
        store_kv_free(kv);
    }
    report("get", ns, n);
    struct store_kv *kv = NULL;
    rc = rc || store_get(s, "k", 1, eccl_deadline_ms(5000), &kv, NULL) != 0 || !kv;
    int64_t rev = kv ? kv->mod_rev : 0;
    store_kv_free(kv);
    for (int i = 0; i < n && !rc; i++) {
        bool won = false;
        uint64_t t0 = eccl_now_ns();
        rc = store_cas(s, "k", 1, rev, "c", 1, 0, eccl_deadline_ms(5000), &won, &rev, NULL) != 0 ||
             !won;
        ns[i] = eccl_now_ns() - t0;
    }
    report("cas", ns, n);
    struct store_watch *w = NULL;
    rc = rc ||
         store_watch_create(s, "w", 1, false, 0, on_event, NULL, eccl_deadline_ms(5000), &w) != 0;
    for (int i = 0; i < n && !rc; i++) {
        uint64_t t0 = eccl_now_ns();
        int64_t r = 0;
        rc = store_put(s, "w", 1, "x", 1, 0, eccl_deadline_ms(5000), &r) != 0;
        uint64_t until = eccl_deadline_ms(5000);
        while (!rc && atomic_load(&seen_rev) < r)
            rc = eccl_deadline_passed(until);
        ns[i] = atomic_load(&seen_ns) - t0;
    }
    if (!rc)
        report("watch", ns, n);
    store_watch_destroy(w);
    store_close(s);
    store_server_stop(srv);
    eccl_free(ns);
    if (rc)
        fprintf(stderr, "bench failed\n");
    return rc;
}

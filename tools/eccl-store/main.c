/*
 * eccl-store - the store's command line: runs the embedded store as a daemon (`serve`) and lets
 * operators look at and change a job's keys in either backend (etcd:// or tcp://).
 *
 *   eccl-store serve [--listen 127.0.0.1:2390]
 *   eccl-store [--url URL] [--timeout MS] get KEY | put KEY VALUE [--lease ID] | del KEY [--prefix]
 *              | ls [PREFIX] [--limit N] | watch PREFIX [--rev R] [--count N] | cas KEY REV VALUE
 *              | wait KEY | lease grant TTL | lease revoke ID | lease ttl ID | lease keep ID TTL
 *
 * The URL defaults to ECCL_STORE_URL. Exit status: 0 done, 1 failed (the error on stderr), 2 bad
 * usage, 3 key not found (get) or CAS lost (cas).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/time.h"
#include "store/store.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: eccl-store serve [--listen IP:PORT]\n"
            "       eccl-store [--url URL] [--timeout MS] [-v] COMMAND ...\n"
            "commands:\n"
            "  get KEY                     print the value (exit 3 if absent); with -v before\n"
            "                              the command, also its revisions and lease\n"
            "  put KEY VALUE [--lease ID]  print the new revision\n"
            "  del KEY [--prefix]          print the number of keys deleted\n"
            "  ls [PREFIX] [--limit N]     list keys and values under a prefix\n"
            "  watch PREFIX [--rev R] [--count N]  print events until interrupted\n"
            "  cas KEY MODREV VALUE        put if the key's mod revision is MODREV (0: absent)\n"
            "  wait KEY                    wait until KEY exists (up to --timeout)\n"
            "  lease grant TTL | revoke ID | ttl ID | keep ID TTL\n"
            "URL: etcd://host:port[,host:port]/prefix, etcds://..., tcp://host:port/prefix\n"
            "     (default: ECCL_STORE_URL)\n");
}

static int fail(const char *what)
{
    const char *e = eccl_log_last_error();
    fprintf(stderr, "eccl-store: %s failed%s%s\n", what, e[0] ? ": " : "", e);
    return 1;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

static void print_bytes(const char *p, size_t n)
{
    fwrite(p, 1, n, stdout);
}

static int cmd_serve(int argc, char **argv)
{
    const char *listen = "127.0.0.1:2390";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            listen = argv[++i];
        else {
            usage();
            return 2;
        }
    }
    struct store_server *srv;
    int port;
    if (store_server_start(listen, &srv, &port) != ecclSuccess)
        return fail("serve");
    printf("eccl-store: serving on port %d (tcp://%s)\n", port, listen);
    fflush(stdout);
    while (!stop_requested)
        eccl_sleep_us(100000);
    store_server_stop(srv);
    return 0;
}

static void on_lost(void *arg, int64_t id)
{
    (void)arg;
    fprintf(stderr, "eccl-store: lease %" PRId64 " lost\n", id);
    stop_requested = 1;
}

static int cmd_lease(struct store *s, int argc, char **argv, int64_t timeout_ms)
{
    int64_t a = 0, b = 0;
    if (argc < 2 || !parse_i64(argv[1], &a) || (argc > 2 && !parse_i64(argv[2], &b))) {
        usage();
        return 2;
    }
    uint64_t dl = eccl_deadline_ms(timeout_ms);
    if (!strcmp(argv[0], "grant")) {
        int64_t id;
        if (store_lease_grant(s, a, dl, &id) != ecclSuccess)
            return fail("lease grant");
        printf("%" PRId64 "\n", id);
    } else if (!strcmp(argv[0], "revoke")) {
        if (store_lease_revoke(s, a, dl) != ecclSuccess)
            return fail("lease revoke");
    } else if (!strcmp(argv[0], "ttl")) {
        int64_t ttl;
        if (store_lease_ttl(s, a, dl, &ttl) != ecclSuccess)
            return fail("lease ttl");
        printf("%" PRId64 "\n", ttl);
    } else if (!strcmp(argv[0], "keep") && argc == 3) {
        if (store_lease_keep(s, a, b, on_lost, NULL) != ecclSuccess)
            return fail("lease keep");
        while (!stop_requested)
            eccl_sleep_us(100000);
    } else {
        usage();
        return 2;
    }
    return 0;
}

static int cmd_watch(struct store *s, int argc, char **argv)
{
    int64_t rev = 0, count = -1;
    const char *prefix = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--rev") && i + 1 < argc && parse_i64(argv[i + 1], &rev))
            i++;
        else if (!strcmp(argv[i], "--count") && i + 1 < argc && parse_i64(argv[i + 1], &count))
            i++;
        else if (!prefix)
            prefix = argv[i];
        else {
            usage();
            return 2;
        }
    }
    if (!prefix)
        prefix = "";
    struct store_watch *w;
    if (store_watch_create(s, prefix, strlen(prefix), true, rev, NULL, NULL,
                           eccl_deadline_ms(10000), &w) != ecclSuccess)
        return fail("watch");
    int rc = 0;
    while (!stop_requested && count != 0) {
        struct store_event *ev;
        size_t n;
        if (store_watch_poll(w, 256, eccl_deadline_ms(200), &ev, &n) != ecclSuccess) {
            rc = fail("watch");
            break;
        }
        for (size_t i = 0; i < n && count != 0; i++, count--) {
            printf("%s %" PRId64 " ", ev[i].type == STORE_EVENT_PUT ? "PUT" : "DELETE",
                   ev[i].kv.mod_rev);
            print_bytes(ev[i].kv.key, ev[i].kv.key_len);
            if (ev[i].type == STORE_EVENT_PUT) {
                printf(" = ");
                print_bytes(ev[i].kv.value, ev[i].kv.value_len);
            }
            printf("\n");
        }
        fflush(stdout);
        store_events_free(ev, n);
    }
    store_watch_destroy(w);
    return rc;
}

static int cmd_ls(struct store *s, int argc, char **argv, int64_t timeout_ms)
{
    const char *prefix = "";
    int64_t limit = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc && parse_i64(argv[i + 1], &limit))
            i++;
        else
            prefix = argv[i];
    }
    char *from = NULL;
    size_t from_len = 0;
    int64_t shown = 0;
    for (;;) {
        struct store_kvs *page;
        if (store_get_prefix(s, prefix, strlen(prefix), from, from_len, 500,
                             eccl_deadline_ms(timeout_ms), &page) != ecclSuccess) {
            eccl_free(from);
            return fail("ls");
        }
        for (size_t i = 0; i < page->count && (!limit || shown < limit); i++, shown++) {
            print_bytes(page->kvs[i].key, page->kvs[i].key_len);
            printf(" = ");
            print_bytes(page->kvs[i].value, page->kvs[i].value_len);
            printf("  (mod %" PRId64 ", lease %" PRId64 ")\n", page->kvs[i].mod_rev,
                   page->kvs[i].lease);
        }
        bool more = page->more && page->count > 0 && (!limit || shown < limit);
        if (more) {
            struct store_kv *last = &page->kvs[page->count - 1];
            eccl_free(from);
            from = eccl_calloc(last->key_len + 2, 1, "eccl_store_cli");
            if (!from) {
                store_kvs_free(page);
                return fail("ls");
            }
            memcpy(from, last->key, last->key_len);
            from_len = last->key_len + 1;
        }
        store_kvs_free(page);
        if (!more)
            break;
    }
    eccl_free(from);
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    int64_t timeout_ms = 10000;
    bool verbose = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc)
            url = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc &&
                 parse_i64(argv[i + 1], &timeout_ms))
            i++;
        else if (!strcmp(argv[i], "-v"))
            verbose = true;
        else {
            usage();
            return 2;
        }
    }
    if (i >= argc) {
        usage();
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    const char *cmd = argv[i++];
    argc -= i;
    argv += i;
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc, argv);

    struct store *s;
    if (store_open(url, eccl_deadline_ms(timeout_ms), &s) != ecclSuccess)
        return fail("open");
    uint64_t dl = eccl_deadline_ms(timeout_ms);
    int rc = 0;
    if (!strcmp(cmd, "get") && argc == 1) {
        struct store_kv *kv;
        int64_t rev;
        if (store_get(s, argv[0], strlen(argv[0]), dl, &kv, &rev) != ecclSuccess) {
            rc = fail("get");
        } else if (!kv) {
            rc = 3;
        } else {
            print_bytes(kv->value, kv->value_len);
            printf("\n");
            if (verbose)
                printf("create %" PRId64 " mod %" PRId64 " version %" PRId64 " lease %" PRId64
                       " (store revision %" PRId64 ")\n",
                       kv->create_rev, kv->mod_rev, kv->version, kv->lease, rev);
            store_kv_free(kv);
        }
    } else if (!strcmp(cmd, "put") && (argc == 2 || argc == 4)) {
        int64_t lease = 0, rev;
        if (argc == 4 && (strcmp(argv[2], "--lease") || !parse_i64(argv[3], &lease))) {
            usage();
            rc = 2;
        } else if (store_put(s, argv[0], strlen(argv[0]), argv[1], strlen(argv[1]), lease, dl,
                             &rev) != ecclSuccess) {
            rc = fail("put");
        } else {
            printf("%" PRId64 "\n", rev);
        }
    } else if (!strcmp(cmd, "del") && (argc == 1 || argc == 2)) {
        bool prefix = argc == 2 && !strcmp(argv[1], "--prefix");
        int64_t deleted;
        if (argc == 2 && !prefix) {
            usage();
            rc = 2;
        } else if (store_delete(s, argv[0], strlen(argv[0]), prefix, dl, &deleted, NULL) !=
                   ecclSuccess) {
            rc = fail("del");
        } else {
            printf("%" PRId64 "\n", deleted);
        }
    } else if (!strcmp(cmd, "ls")) {
        rc = cmd_ls(s, argc, argv, timeout_ms);
    } else if (!strcmp(cmd, "watch")) {
        rc = cmd_watch(s, argc, argv);
    } else if (!strcmp(cmd, "cas") && argc == 3) {
        int64_t expect, rev = 0;
        bool won;
        struct store_kv *cur = NULL;
        if (!parse_i64(argv[1], &expect)) {
            usage();
            rc = 2;
        } else if (store_cas(s, argv[0], strlen(argv[0]), expect, argv[2], strlen(argv[2]), 0, dl,
                             &won, &rev, &cur) != ecclSuccess) {
            rc = fail("cas");
        } else if (won) {
            printf("%" PRId64 "\n", rev);
        } else {
            printf("lost: current mod revision %" PRId64 "\n", cur ? cur->mod_rev : 0);
            store_kv_free(cur);
            rc = 3;
        }
    } else if (!strcmp(cmd, "wait") && argc == 1) {
        struct store_kv *kv;
        if (store_wait_key(s, argv[0], strlen(argv[0]), dl, &kv) != ecclSuccess) {
            rc = fail("wait");
        } else {
            print_bytes(kv->value, kv->value_len);
            printf("\n");
            store_kv_free(kv);
        }
    } else if (!strcmp(cmd, "lease") && argc >= 1) {
        rc = cmd_lease(s, argc, argv, timeout_ms);
    } else {
        usage();
        rc = 2;
    }
    store_close(s);
    return rc;
}

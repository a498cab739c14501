/*
 * test_store_cli.c - the eccl-store command line against an embedded store run by this test:
 * outputs and exit statuses of put, get, ls, cas, del, watch, wait and lease, and `serve` as a
 * daemon stopped by its pid. Exits 77 when build/bin/eccl-store (or $ECCL_BUILD/bin) is missing.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/time.h"
#include "store/store.h"

static char cli[512];
static char url[128];
static struct store_server *srv;

/* Runs the CLI with `args`, stdout into out (up to 4 KiB); returns its exit status. */
static int run(const char *args, char *out)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --url %s %s 2>/dev/null", cli, url, args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, 4095, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void cli_keys(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(run("put a/1 hello", out), 0);
    int64_t rev = strtoll(out, NULL, 10);
    assert_true(rev > 1);
    assert_int_equal(run("put a/2 world", out), 0);
    assert_int_equal(run("get a/1", out), 0);
    assert_string_equal(out, "hello\n");
    assert_int_equal(run("-v get a/1", out), 0);
    assert_non_null(strstr(out, "version 1"));
    assert_int_equal(run("get nope", out), 3);
    assert_int_equal(run("ls a/", out), 0);
    assert_non_null(strstr(out, "a/1 = hello"));
    assert_non_null(strstr(out, "a/2 = world"));
    assert_int_equal(run("ls a/ --limit 1", out), 0);
    assert_null(strstr(out, "a/2"));
    assert_int_equal(run("cas a/1 0 x", out), 3); /* exists: create-if-absent loses */
    char args[128];
    snprintf(args, sizeof(args), "cas a/1 %lld x", (long long)rev);
    assert_int_equal(run(args, out), 0);
    assert_int_equal(run("get a/1", out), 0);
    assert_string_equal(out, "x\n");
    assert_int_equal(run("watch a/ --rev 1 --count 3", out), 0);
    assert_non_null(strstr(out, "PUT"));
    assert_int_equal(run("del a/ --prefix", out), 0);
    assert_string_equal(out, "2\n");
    assert_int_equal(run("--timeout 200 wait a/1", out), 1);
    assert_int_equal(run("frobnicate", out), 2);
    assert_int_equal(run("put onlykey", out), 2);
}

static void cli_lease(void **state)
{
    (void)state;
    char out[4096], args[128];
    assert_int_equal(run("lease grant 30", out), 0);
    long long id = strtoll(out, NULL, 10);
    assert_true(id > 0);
    snprintf(args, sizeof(args), "put l/1 v --lease %lld", id);
    assert_int_equal(run(args, out), 0);
    snprintf(args, sizeof(args), "lease ttl %lld", id);
    assert_int_equal(run(args, out), 0);
    assert_true(strtoll(out, NULL, 10) > 25);
    snprintf(args, sizeof(args), "lease revoke %lld", id);
    assert_int_equal(run(args, out), 0);
    assert_int_equal(run("get l/1", out), 3);
    assert_int_equal(run(args, out), 1); /* revoked twice: the store's error */
}

static void cli_serve(void **state)
{
    (void)state;
    /* A port that is free now (the embedded server picks one and lets it go). */
    struct store_server *tmp;
    int port;
    assert_int_equal(store_server_start("127.0.0.1:0", &tmp, &port), ecclSuccess);
    store_server_stop(tmp);
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        execl(cli, cli, "serve", "--listen", listen, (char *)NULL);
        _exit(127);
    }
    char daemon_url[128];
    snprintf(daemon_url, sizeof(daemon_url), "tcp://%s/d", listen);
    struct store *s = NULL;
    ecclResult_t res = store_open(daemon_url, eccl_deadline_ms(5000), &s);
    if (res == ecclSuccess) {
        res = store_put(s, "k", 1, "v", 1, 0, eccl_deadline_ms(2000), NULL);
        store_close(s);
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    assert_int_equal(res, ecclSuccess);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    const char *build = getenv("ECCL_BUILD");
    snprintf(cli, sizeof(cli), "%s/bin/eccl-store", build && build[0] ? build : "build");
    if (access(cli, X_OK) != 0) {
        fprintf(stderr, "SKIP: %s not built\n", cli);
        return 77;
    }
    int port;
    if (store_server_start("127.0.0.1:0", &srv, &port) != ecclSuccess)
        return 1;
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d/cli", port);
    const struct CMUnitTest tests[] = {cmocka_unit_test(cli_keys), cmocka_unit_test(cli_lease),
                                       cmocka_unit_test(cli_serve)};
    int failed = cmocka_run_group_tests_name("eccl-store CLI", tests, NULL, NULL);
    store_server_stop(srv);
    return failed ? 1 : 0;
}

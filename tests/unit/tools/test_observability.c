/*
 * test_observability.c - what operators see (docs/observability.md), end to end: ecclrun with 2
 * workers of examples/elastic_train ($ECCL_BUILD/bin/ecclrun and $ECCL_BUILD/examples/
 * elastic_train; exits 77 when they are missing), one worker SIGKILLing itself mid-run and
 * replaced. Scraped through real TCP connections on 127.0.0.1: /healthz, /readyz turning 200,
 * /metrics (members, generation, bytes counters that grow, the recovery counted with its cause
 * and its histogram), garbage, oversized, wrong-method and unknown-path requests (400, 405, 404)
 * after which the server still answers. Then the ECCL_EVENT_LOG of the run: every line parses
 * as JSON (jansson), the events come in the expected order, and eccl-timeline reports the
 * recovery (--text) and draws a PNG (checked only where gnuplot is installed). Last, eccl-perf
 * --csv writes a CSV that parses.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/time.h"
#include "tests/support/proc.h"

static char build[256];
static char dir[256];
static pid_t live; /* a child not reaped yet (teardown kills it) */

static void make_dir(void)
{
    assert_int_equal(proc_dir_make(dir, sizeof(dir), "eccl-obs-test"), 0);
}

static int teardown(void **state)
{
    (void)state;
    if (live > 0) {
        /* SIGTERM first: ecclrun then stops its workers and removes its counter pages. */
        kill(live, SIGTERM);
        if (proc_wait(live, 8000) < 0)
            fprintf(stderr, "ecclrun %d had to be SIGKILLed\n", (int)live);
        live = 0;
    }
    proc_dir_remove(dir);
    return 0;
}

/* Runs argv with extra environment `envs` (NULL-terminated), stdout to dir/<out>, stderr to
 * dir/<out>.err; returns the pid. */
static pid_t spawn(const char *const *argv, const char *const *envs, const char *out)
{
    char po[600], pe[600];
    snprintf(po, sizeof(po), "%s/%s", dir, out);
    snprintf(pe, sizeof(pe), "%s/%s.err", dir, out);
    pid_t pid = proc_spawn(argv, NULL, envs, po, pe);
    assert_true(pid >= 0);
    return pid;
}

static char *read_file(const char *name, size_t *len_out)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    if (len_out)
        *len_out = n;
    return buf;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t l = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends `req` (len bytes) to 127.0.0.1:port and reads the answer until the server closes;
 * returns it in a static buffer ("" when the connection failed). */
static const char *http(int port, const char *req, size_t len)
{
    static char resp[65536];
    resp[0] = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return resp;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, resp + n, sizeof(resp) - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    resp[n] = 0;
    close(fd);
    return resp;
}

static const char *get(int port, const char *path)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    return http(port, req, (size_t)n);
}

static int status_of(const char *resp)
{
    int code = -1;
    if (sscanf(resp, "HTTP/1.1 %d", &code) != 1)
        return -1;
    return code;
}

/* The value of the sample `name` (the whole series name, labels included) in a /metrics text. */
static double metric(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, name, nl) && p[nl] == ' ')
            return strtod(p + nl + 1, NULL);
    }
    fail_msg("no sample %s in /metrics", name);
    return -1;
}

/* Polls GET path until it answers `code` (true) or timeout_ms passes. */
static bool wait_status(int port, const char *path, int code, int timeout_ms)
{
    uint64_t dl = eccl_deadline_ms(timeout_ms);
    while (!eccl_deadline_passed(dl)) {
        if (status_of(get(port, path)) == code)
            return true;
        eccl_sleep_us(20000);
    }
    return false;
}

/* Starts ecclrun (argv, with portarg among its arguments) on a free port and waits until its
 * /healthz answers 200; returns the port. The port free_port() found may be taken again before
 * ecclrun binds it (by the embedded store's own bind to port 0, or any other process): then
 * ecclrun exits saying it cannot listen, and the start is tried again on another port. Any other
 * early exit or a silent server fails the test with ecclrun's stderr. */
static int start_ecclrun(const char *const *argv, const char *const *envs, char *portarg,
                         size_t portsz)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int port = free_port();
        snprintf(portarg, portsz, "%d", port);
        live = spawn(argv, envs, "ecclrun");
        uint64_t dl = eccl_deadline_ms(20000);
        bool retry = false;
        while (!retry) {
            if (status_of(get(port, "/healthz")) == 200)
                return port;
            int st;
            if (waitpid(live, &st, WNOHANG) == live) {
                live = 0;
                const char *err = read_file("ecclrun.err", NULL);
                if (!err || !strstr(err, "cannot listen"))
                    fail_msg("ecclrun exited before /healthz answered:\n%s", err ? err : "");
                printf("port %d was taken before ecclrun bound it: trying another\n", port);
                retry = true;
                continue;
            }
            if (eccl_deadline_passed(dl))
                fail_msg("/healthz on port %d did not answer 200 in 20 s; ecclrun's stderr:\n%s",
                         port, read_file("ecclrun.err", NULL));
            eccl_sleep_us(20000);
        }
    }
    fail_msg("no free port ecclrun could listen on in 3 tries");
    return -1;
}

/* Index of the first event after `from` matching event name and (when not NULL) string field
 * `key` == `val`; -1 if none. */
static int find_event(json_t *evs, int from, const char *event, const char *key, const char *val)
{
    for (size_t i = (size_t)from; i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        if (strcmp(json_string_value(json_object_get(e, "event")), event))
            continue;
        if (key && (!json_is_string(json_object_get(e, key)) ||
                    strcmp(json_string_value(json_object_get(e, key)), val)))
            continue;
        return (int)i;
    }
    return -1;
}

static void metrics_events_timeline(void **state)
{
    (void)state;
    make_dir();
    char ecclrun[300], train[300], portarg[16], evlog[400], ev_env[420];
    snprintf(ecclrun, sizeof(ecclrun), "%s/bin/ecclrun", build);
    snprintf(train, sizeof(train), "%s/examples/elastic_train", build);
    snprintf(evlog, sizeof(evlog), "%s/events.jsonl", dir);
    snprintf(ev_env, sizeof(ev_env), "ECCL_EVENT_LOG=%s", evlog);
    const char *argv[] = {ecclrun,     "--nproc-per-node",
                          "2",         "--metrics-port",
                          portarg,     "--metrics-addr",
                          "127.0.0.1", "--max-restarts",
                          "1",         "--",
                          train,       "--steps",
                          "600",       "--step-ms",
                          "10",        "--kill-rank",
                          "1",         "--kill-step",
                          "200",       NULL};
    const char *envs[] = {ev_env, "ECCL_SOCKET_IFNAME=lo", NULL};
    int port = start_ecclrun(argv, envs, portarg, sizeof(portarg));
    assert_true(wait_status(port, "/readyz", 200, 20000));
    const char *m = get(port, "/metrics");
    assert_int_equal(status_of(m), 200);
    assert_non_null(strstr(m, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(m, "# TYPE eccl_recovery_seconds histogram"));
    assert_non_null(strstr(m, "# HELP eccl_bytes_total "));
    assert_true(metric(m, "eccl_members") == 2);
    assert_true(metric(m, "eccl_generation") >= 1);
    assert_true(metric(m, "eccl_local_workers") == 2);
    assert_true(metric(m, "eccl_ready") == 1);
    double b0 = metric(m, "eccl_bytes_total{kind=\"allreduce\"}");
    eccl_sleep_us(300000);
    m = get(port, "/metrics");
    double b1 = metric(m, "eccl_bytes_total{kind=\"allreduce\"}");
    assert_true(b1 > b0);

    /* Bad requests: answered, and the server goes on. */
    assert_int_equal(status_of(http(port, "\x01\x02garbage\xff\r\n\r\n", 14)), 400);
    assert_int_equal(status_of(http(port, "GET /metrics\r\n\r\n", 16)), 400);
    assert_int_equal(status_of(http(port, "GET /metrics HTTP/1.1 x\r\n\r\n", 27)), 400);
    static char big[20000];
    memset(big, 'A', sizeof(big));
    assert_int_equal(status_of(http(port, big, sizeof(big))), 400);
    const char *post = "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    const char *r = http(port, post, strlen(post));
    assert_int_equal(status_of(r), 405);
    assert_non_null(strstr(r, "Allow: GET"));
    assert_int_equal(status_of(get(port, "/nope")), 404);
    assert_int_equal(status_of(http(port, "", 0)), -1); /* nothing sent: closed, no answer */
    assert_int_equal(status_of(get(port, "/healthz")), 200);

    /* The worker of rank 1 kills itself at step 200: one recovery, one restart. */
    uint64_t dl = eccl_deadline_ms(30000);
    for (;;) {
        m = get(port, "/metrics");
        if (status_of(m) == 200 && metric(m, "eccl_recoveries_total") >= 1)
            break;
        assert_false(eccl_deadline_passed(dl));
        eccl_sleep_us(50000);
    }
    assert_true(metric(m, "eccl_recoveries_total") == 1);
    assert_true(metric(m, "eccl_recovery_seconds_count") == 1);
    assert_true(metric(m, "eccl_recovery_seconds_bucket{le=\"+Inf\"}") == 1);
    assert_true(metric(m, "eccl_recovery_seconds_sum") > 0);
    assert_true(metric(m, "eccl_restarts_total") == 1);
    assert_true(metric(m, "eccl_generation") >= 2);
    assert_true(metric(m, "eccl_last_failure_info{cause=\"rank_signal\"}") == 1);
    assert_true(metric(m, "eccl_bytes_total{kind=\"allreduce\"}") >= b1);

    int rc = proc_wait(live, 40000);
    live = 0;
    if (rc != 0)
        fail_msg("ecclrun exited %d:\n%s", rc, read_file("ecclrun.err", NULL));

    /* The event log: JSON on every line, the expected sequence. */
    char *text = read_file("events.jsonl", NULL);
    assert_non_null(text);
    json_t *evs = json_array();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t err;
        json_t *e = json_loads(line, 0, &err);
        if (!e)
            fail_msg("bad event line: %s (%s)", line, err.text);
        assert_true(json_is_real(json_object_get(e, "ts")));
        assert_true(json_is_string(json_object_get(e, "event")));
        assert_true(json_is_integer(json_object_get(e, "pid")));
        assert_true(json_is_string(json_object_get(e, "host")));
        json_array_append_new(evs, e);
    }
    int i_join = find_event(evs, 0, "join", "role", "agent");
    assert_true(i_join >= 0);
    int i_wjoin = find_event(evs, i_join + 1, "join", "job", "default");
    int i_gen1 = find_event(evs, 0, "generation", NULL, NULL);
    int i_step1 = find_event(evs, 0, "first_step", NULL, NULL);
    int i_fail = find_event(evs, 0, "failure_seen", "cause", "rank_signal");
    int i_revoke = find_event(evs, 0, "revoke", NULL, NULL);
    assert_true(i_wjoin > i_join && i_gen1 > i_wjoin && i_step1 > i_gen1);
    assert_true(i_fail > i_step1 && i_revoke > i_step1);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(evs, (size_t)i_fail), "launch_rank")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(evs, (size_t)i_fail), "generation")), 1);
    /* The second generation, and a first step in it that carries the recovery's duration. */
    int i_gen2 = -1, i_step2 = -1;
    for (size_t i = (size_t)i_fail; i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        const char *name = json_string_value(json_object_get(e, "event"));
        json_int_t g = json_integer_value(json_object_get(e, "generation"));
        if (!strcmp(name, "generation") && g >= 2 && i_gen2 < 0)
            i_gen2 = (int)i;
        if (!strcmp(name, "first_step") && g >= 2 && json_object_get(e, "recovery_ms"))
            i_step2 = (int)i;
    }
    assert_true(i_gen2 > i_fail && i_step2 > i_gen2);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(evs, (size_t)i_gen2), "members")), 2);
    assert_true(find_event(evs, i_step2, "exit", "role", "agent") > i_step2);
    json_decref(evs);

    /* eccl-timeline: the text summary reports the recovery; a PNG where gnuplot is. */
    char tl[300], out_png[400];
    snprintf(tl, sizeof(tl), "%s/bin/eccl-timeline", build);
    snprintf(out_png, sizeof(out_png), "%s/timeline.png", dir);
    const char *targv[] = {tl, "--text", evlog, NULL};
    assert_int_equal(proc_wait(spawn(targv, NULL, "tl.txt"), 20000), 0);
    text = read_file("tl.txt", NULL);
    assert_non_null(strstr(text, "recoveries: 1\n"));
    assert_non_null(strstr(text, "recovery 1: failure seen at"));
    assert_non_null(strstr(text, "generation 1 -> 2"));
    assert_non_null(strstr(text, "0 bad lines"));
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("gnuplot not installed: the PNG check of eccl-timeline is skipped\n");
    } else {
        const char *pargv[] = {tl, "-o", out_png, "--title", "pod kill", evlog, NULL};
        rc = proc_wait(spawn(pargv, NULL, "tl.png.txt"), 30000);
        if (rc != 0)
            fail_msg("eccl-timeline exited %d: %s", rc, read_file("tl.png.txt.err", NULL));
        size_t len = 0;
        const char *png = read_file("timeline.png", &len);
        assert_non_null(png);
        assert_true(len > 1000);
        assert_memory_equal(png, "\x89PNG\r\n\x1a\n", 8);
    }
}

/* Bad --metrics-* values stop ecclrun with status 2; a port in use (given through
 * PET_METRICS_PORT) with status 1, before any worker starts. */
static void metrics_bad_args(void **state)
{
    (void)state;
    make_dir();
    char ecclrun[300];
    snprintf(ecclrun, sizeof(ecclrun), "%s/bin/ecclrun", build);
    const char *bad_port[] = {ecclrun, "--metrics-port", "70000", "/bin/true", NULL};
    assert_int_equal(proc_wait(spawn(bad_port, NULL, "a"), 10000), 2);
    assert_non_null(strstr(read_file("a.err", NULL), "--metrics-port: '70000' is not a port"));
    const char *bad_addr[] = {ecclrun,     "--metrics-port=1", "--metrics-addr",
                              "localhost", "/bin/true",        NULL};
    assert_int_equal(proc_wait(spawn(bad_addr, NULL, "b"), 10000), 2);
    assert_non_null(strstr(read_file("b.err", NULL), "--metrics-addr: 'localhost' is not"));

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t l = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    static char pet[64];
    snprintf(pet, sizeof(pet), "PET_METRICS_PORT=%d", ntohs(a.sin_port));
    const char *busy[] = {ecclrun, "--metrics-addr", "127.0.0.1", "/bin/true", NULL};
    const char *envs[] = {pet, NULL};
    int rc = proc_wait(spawn(busy, envs, "c"), 10000);
    close(fd);
    assert_int_equal(rc, 1);
    const char *err = read_file("c.err", NULL);
    assert_non_null(strstr(err, "--metrics-port: cannot listen on 127.0.0.1:"));
    assert_null(strstr(err, "worker 0 started"));
}

/* A worker that writes nonsense into its counter page (a valid header, then values out of
 * range, then a counter that goes down): ecclrun keeps serving, ignores what is out of range and
 * never lets a counter go down. */
static void metrics_untrusted_page(void **state)
{
    (void)state;
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        printf("python3 not installed: the untrusted-page case is skipped\n");
        return;
    }
    make_dir();
    char script[400];
    snprintf(script, sizeof(script), "%s/scribble.py", dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    /* Offsets of docs/internals/metrics-page.md. */
    fprintf(f, "import os, struct, time\n"
               "p = os.environ['ECCL_METRICS_FILE']\n"
               "def put(off, fmt, v):\n"
               "    with open(p, 'r+b') as f:\n"
               "        f.seek(off); f.write(struct.pack(fmt, v))\n"
               "put(16, '<Q', 1 << 63)\n"  /* bytes[allreduce] */
               "put(272, '<q', 3)\n"       /* generation */
               "put(280, '<q', -5)\n"      /* nranks */
               "put(296, '<I', 99)\n"      /* state */
               "put(300, '<I', 77)\n"      /* cause */
               "put(312, '<Q', 1)\n"       /* failures */
               "put(320, '<Q', 5)\n"       /* recoveries */
               "put(336, '<q', 1 << 62)\n" /* recovered_gen */
               "time.sleep(0.5)\n"
               "put(16, '<Q', 10)\n"
               "time.sleep(30)\n");
    fclose(f);
    char ecclrun[300], portarg[16];
    snprintf(ecclrun, sizeof(ecclrun), "%s/bin/ecclrun", build);
    const char *argv[] = {ecclrun,
                          "--metrics-port",
                          portarg,
                          "--metrics-addr",
                          "127.0.0.1",
                          "--grace-period",
                          "1",
                          "--max-restarts",
                          "0",
                          "--",
                          "/usr/bin/env",
                          "python3",
                          script,
                          NULL};
    int port = start_ecclrun(argv, NULL, portarg, sizeof(portarg));
    uint64_t dl = eccl_deadline_ms(15000);
    const char *m = NULL;
    for (;;) {
        m = get(port, "/metrics");
        if (status_of(m) == 200 && strstr(m, "eccl_bytes_total{kind=\"allreduce\"} 92233"))
            break;
        assert_false(eccl_deadline_passed(dl));
        eccl_sleep_us(20000);
    }
    eccl_sleep_us(1200000); /* past the second write (0.5 s later) and a few samples */
    m = get(port, "/metrics");
    assert_int_equal(status_of(m), 200);
    assert_non_null(strstr(m, "eccl_bytes_total{kind=\"allreduce\"} 9223372036854775808\n"));
    assert_true(metric(m, "eccl_members") == 0);
    assert_true(metric(m, "eccl_generation") == 0);
    assert_true(metric(m, "eccl_recoveries_total") == 0);
    assert_true(metric(m, "eccl_last_failure_info{cause=\"none\"}") == 1);
    assert_true(metric(m, "eccl_local_workers") == 1);
    assert_int_equal(status_of(get(port, "/readyz")), 503);
    kill(live, SIGTERM);
    assert_int_equal(proc_wait(live, 15000), 128 + SIGTERM);
    live = 0;
}

/* A log with bad lines: counted, not fatal. */
static void timeline_bad_lines(void **state)
{
    (void)state;
    make_dir();
    char p[400];
    snprintf(p, sizeof(p), "%s/bad.jsonl", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f, "{\"ts\":1700000000.000001,\"event\":\"join\",\"pid\":5,\"host\":\"h\",\"rank\":0}\n"
               "not json\n{\"ts\":\"x\",\"event\":\"join\",\"pid\":5}\n{\"ts\":1,\"event\":\"a\"\n"
               "{\"ts\":1700000000.5,\"event\":\"exit\",\"pid\":5,\"host\":\"h\",\"x\":[1,{\"y\":"
               "null}]}\n[1,2]\n{\"ts\":1e400,\"event\":\"a\",\"pid\":1}\n");
    fclose(f);
    char tl[300];
    snprintf(tl, sizeof(tl), "%s/bin/eccl-timeline", build);
    const char *targv[] = {tl, "--text", p, NULL};
    assert_int_equal(proc_wait(spawn(targv, NULL, "tl.txt"), 20000), 0);
    const char *text = read_file("tl.txt", NULL);
    assert_non_null(strstr(text, "events: 2 valid, 5 bad lines"));
    assert_non_null(strstr(text, "recoveries: 0"));
    const char *nargv[] = {tl, "--text", "/nonexistent/eccl-timeline.log", NULL};
    assert_int_equal(proc_wait(spawn(nargv, NULL, "tl2.txt"), 20000), 1);
}

/* eccl-perf --csv: a header and one parseable row per size. */
static void perf_csv(void **state)
{
    (void)state;
    make_dir();
    char perf[300], csv[400];
    snprintf(perf, sizeof(perf), "%s/bin/eccl-perf", build);
    snprintf(csv, sizeof(csv), "%s/r.csv", dir);
    const char *argv[] = {perf, "-N", "2", "-b", "1K", "-e",    "16K", "-f",
                          "4",  "-n", "2", "-w", "1",  "--csv", csv,   NULL};
    int rc = proc_wait(spawn(argv, NULL, "perf.txt"), 60000);
    if (rc != 0)
        fail_msg("eccl-perf exited %d: %s", rc, read_file("perf.txt.err", NULL));
    char *text = read_file("r.csv", NULL);
    assert_non_null(text);
    const char *hdr =
        "size,count,type,op,root,time_us,algbw,busbw,wrong,ip_time_us,ip_algbw,ip_busbw,ip_wrong\n";
    assert_int_equal(strncmp(text, hdr, strlen(hdr)), 0);
    size_t sizes[] = {1024, 4096, 16384};
    int rows = 0;
    for (char *line = strtok(text + strlen(hdr), "\n"); line; line = strtok(NULL, "\n"), rows++) {
        char type[32], op[32];
        size_t size, count;
        int root, wrong, ipwrong;
        double t, alg, bus, ipt, ipalg, ipbus;
        int n =
            sscanf(line, "%zu,%zu,%31[^,],%31[^,],%d,%lf,%lf,%lf,%d,%lf,%lf,%lf,%d", &size, &count,
                   type, op, &root, &t, &alg, &bus, &wrong, &ipt, &ipalg, &ipbus, &ipwrong);
        assert_int_equal(n, 13);
        assert_true(rows < 3);
        assert_int_equal(size, sizes[rows]);
        assert_int_equal(count, size / 4);
        assert_string_equal(type, "float");
        assert_string_equal(op, "sum");
        assert_true(t > 0 && bus > 0 && ipt > 0);
        assert_int_equal(wrong, 0);
        assert_int_equal(ipwrong, 0);
    }
    assert_int_equal(rows, 3);
}

int main(void)
{
    const char *b = getenv("ECCL_BUILD");
    snprintf(build, sizeof(build), "%s", b && b[0] ? b : "build");
    const char *need[] = {"bin/ecclrun", "bin/eccl-timeline", "bin/eccl-perf",
                          "examples/elastic_train"};
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        char p[400];
        snprintf(p, sizeof(p), "%s/%s", build, need[i]);
        if (access(p, X_OK) != 0) {
            printf("skip: %s not found (make all)\n", p);
            return 77;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(metrics_events_timeline, teardown),
        cmocka_unit_test_teardown(metrics_bad_args, teardown),
        cmocka_unit_test_teardown(metrics_untrusted_page, teardown),
        cmocka_unit_test_teardown(timeline_bad_lines, teardown),
        cmocka_unit_test_teardown(perf_csv, teardown),
    };
    return cmocka_run_group_tests_name("observability", tests, NULL, NULL) ? 1 : 0;
}

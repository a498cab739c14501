/*
 * test_perf_smoke.c - runs the eccl-perf binary ($ECCL_BUILD/bin/eccl-perf, ECCL_BUILD defaulting
 * to "build") with small sizes and -c 1, as forked processes (-N 2) and as threads (-t 3), for
 * every collective, and asserts that it exits 0, prints one table row per size with #wrong 0 in
 * every checked column, and ends with "Out of bounds values : 0 OK". Also: the nccl-tests binary
 * names (through a symlink), every type and op, the median columns, a bad flag's exit status, and
 * that a corrupted result (--corrupt) is caught.
 *
 * Each run has a deadline; a run past it is SIGKILLed by pid and fails the test.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/time.h"

#define RUN_TIMEOUT_MS 45000
#define MAX_ARGS       32

struct run_result {
    int exited;
    int code;
    int signal;
    int timed_out;
    char *out; /* stdout, NUL-terminated */
    size_t len;
};

static const char *perf_path(char *buf, size_t len)
{
    const char *build = getenv("ECCL_BUILD");
    snprintf(buf, len, "%s/bin/eccl-perf", build && build[0] ? build : "build");
    return buf;
}

static void run_result_free(struct run_result *r)
{
    eccl_free(r->out);
    memset(r, 0, sizeof(*r));
}

/* Runs argv[0] with argv, stdout captured, stderr passed through, within RUN_TIMEOUT_MS. */
static void run_cmd(char *const argv[], struct run_result *r)
{
    memset(r, 0, sizeof(*r));
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(fds[1], STDOUT_FILENO) < 0)
            _exit(126);
        execv(argv[0], argv);
        fprintf(stderr, "execv %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);

    size_t cap = 1 << 16;
    r->out = eccl_calloc(cap, 1, "test_out");
    assert_non_null(r->out);
    uint64_t deadline = eccl_deadline_ms(RUN_TIMEOUT_MS);
    for (;;) {
        int left = eccl_deadline_left_ms(deadline);
        if (left == 0) {
            r->timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        assert_true(pr >= 0);
        if (pr == 0)
            continue;
        if (r->len + 4096 + 1 > cap) {
            char *bigger = eccl_realloc(r->out, cap * 2, 1, "test_out");
            assert_non_null(bigger);
            r->out = bigger;
            cap *= 2;
        }
        ssize_t n = read(fds[0], r->out + r->len, 4096);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    r->out[r->len] = '\0';
    close(fds[0]);

    int st = 0;
    pid_t w;
    while ((w = waitpid(pid, &st, 0)) == -1 && errno == EINTR)
        ;
    assert_int_equal(w, pid);
    r->exited = WIFEXITED(st);
    r->code = r->exited ? WEXITSTATUS(st) : -1;
    r->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

/* Runs eccl-perf with the given arguments (NULL-terminated). */
static void run_perf(struct run_result *r, const char *first, ...)
{
    char path[PATH_MAX];
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)perf_path(path, sizeof(path));
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(n < MAX_ARGS - 1);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    run_cmd(argv, r);
}

static void dump(const struct run_result *r)
{
    print_message("eccl-perf exited=%d code=%d signal=%d timed_out=%d; its output:\n%s\n",
                  r->exited, r->code, r->signal, r->timed_out, r->out ? r->out : "");
}

/*
 * Checks a successful run's table: every data line has 13 columns (15 with the median ones),
 * the #wrong columns are 0 (N/A allowed in place where `na_inplace`), and the footer says OK.
 * Returns the number of data lines.
 */
static int check_table(const struct run_result *r, int median, int na_inplace)
{
    if (!r->exited || r->code != 0 || r->timed_out)
        dump(r);
    assert_false(r->timed_out);
    assert_true(r->exited);
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "# Out of bounds values : 0 OK"));
    assert_non_null(strstr(r->out, "# Avg bus bandwidth"));

    int want_cols = median ? 15 : 13;
    int wrong_col[2] = {8, median ? 13 : 12};
    int rows = 0;
    char *copy = eccl_strdup(r->out, "test_out");
    assert_non_null(copy);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *tok[20];
        int nt = 0;
        char *s2 = NULL;
        for (char *t = strtok_r(line, " \t", &s2); t && nt < 20; t = strtok_r(NULL, " \t", &s2))
            tok[nt++] = t;
        if (nt != want_cols) {
            dump(r);
            fail_msg("a table line has %d columns, expected %d", nt, want_cols);
        }
        for (int h = 0; h < 2; h++) {
            const char *w = tok[wrong_col[h]];
            if (strcmp(w, "0") == 0)
                continue;
            if (h == 1 && na_inplace && strcmp(w, "N/A") == 0)
                continue;
            dump(r);
            fail_msg("#wrong is '%s' in a %s column", w, h ? "in-place" : "out-of-place");
        }
        rows++;
    }
    eccl_free(copy);
    return rows;
}

static const char *const colls[] = {"allreduce", "allgather", "reducescatter",
                                    "broadcast", "reduce",    "alltoall",
                                    "sendrecv",  "gather",    "scatter"};

static int na_inplace(const char *coll)
{
    return strcmp(coll, "alltoall") == 0 || strcmp(coll, "sendrecv") == 0;
}

/* 8 B to 32 KiB by 4: 8, 32, 128, 512, 2K, 8K, 32K. */
/* -T 20: a hung run ends by itself (status 124) before the test's own deadline. */
#define SWEEP      "-b", "8", "-e", "32K", "-f", "4", "-n", "3", "-w", "1", "-c", "1", "-T", "20"
#define SWEEP_ROWS 7

static void test_procs_every_collective(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(colls) / sizeof(colls[0]); i++) {
        struct run_result r;
        run_perf(&r, "-C", colls[i], SWEEP, "-N", "2", NULL);
        assert_int_equal(check_table(&r, 0, na_inplace(colls[i])), SWEEP_ROWS);
        assert_non_null(strstr(r.out, "nRanks 2"));
        run_result_free(&r);
    }
}

static int has_root(const char *coll)
{
    return strcmp(coll, "broadcast") == 0 || strcmp(coll, "reduce") == 0 ||
           strcmp(coll, "gather") == 0 || strcmp(coll, "scatter") == 0;
}

/* Threads, every root of the rooted collectives. */
static void test_threads_every_collective(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(colls) / sizeof(colls[0]); i++) {
        struct run_result r;
        run_perf(&r, "-C", colls[i], SWEEP, "-t", "3", "-r", "-1", NULL);
        assert_int_equal(check_table(&r, 0, na_inplace(colls[i])),
                         (has_root(colls[i]) ? 3 : 1) * SWEEP_ROWS);
        assert_non_null(strstr(r.out, "nRanks 3"));
        run_result_free(&r);
    }
}

/* Threads that init with ecclCommInitRank, in two processes: 2 x 2 ranks, every root. */
static void test_procs_of_threads(void **state)
{
    (void)state;
    struct run_result r;
    run_perf(&r, "-C", "broadcast", SWEEP, "-N", "2", "-t", "2", "-r", "-1", NULL);
    /* one series of sizes per root */
    assert_int_equal(check_table(&r, 0, 0), 4 * SWEEP_ROWS);
    assert_non_null(strstr(r.out, "nRanks 4"));
    run_result_free(&r);
}

/* Every type and every op on one small size. */
static void test_all_types_ops(void **state)
{
    (void)state;
    struct run_result r;
    run_perf(&r, "-C", "allreduce", "-b", "1K", "-e", "1K", "-n", "2", "-w", "1", "-c", "1", "-d",
             "all", "-o", "all", "-t", "3", NULL);
    assert_int_equal(check_table(&r, 0, 0), 12 * 6);
    assert_non_null(strstr(r.out, "f8e5m2"));
    assert_non_null(strstr(r.out, "mulsum"));
    run_result_free(&r);

    run_perf(&r, "-C", "reducescatter", "-b", "3K", "-e", "3K", "-n", "2", "-w", "1", "-c", "1",
             "-d", "all", "-o", "all", "-N", "3", NULL);
    assert_int_equal(check_table(&r, 0, 0), 12 * 6);
    run_result_free(&r);
}

static void test_median_columns(void **state)
{
    (void)state;
    struct run_result r;
    run_perf(&r, SWEEP, "-t", "2", "-M", "1", "-a", "1", NULL);
    assert_int_equal(check_table(&r, 1, 0), SWEEP_ROWS);
    run_result_free(&r);
}

/* Invoked as all_gather_perf through a symlink, it runs AllGather. */
static void test_nccl_tests_name(void **state)
{
    (void)state;
    char target[PATH_MAX], abs_target[PATH_MAX], dir[] = "/tmp/eccl-perf-test-XXXXXX";
    assert_non_null(realpath(perf_path(target, sizeof(target)), abs_target));
    assert_non_null(mkdtemp(dir));
    char link[PATH_MAX];
    snprintf(link, sizeof(link), "%s/all_gather_perf", dir);
    assert_int_equal(symlink(abs_target, link), 0);

    char *argv[] = {link, "-b", "64", "-e", "64", "-n", "2", "-w", "1", "-t", "2", NULL};
    struct run_result r;
    run_cmd(argv, &r);
    unlink(link);
    rmdir(dir);
    assert_int_equal(check_table(&r, 0, 0), 1);
    assert_non_null(strstr(r.out, "Collective test starting: allgather"));
    run_result_free(&r);
}

/* A rank that spoils what it received (--corrupt) makes the run fail: #wrong is counted, the
 * footer says FAILED and the exit status is 1. */
static void test_corruption_detected(void **state)
{
    (void)state;
    static const char *const modes[][2] = {{"-N", "2"}, {"-t", "3"}};
    static const char *const which[] = {"allreduce", "reducescatter"};
    for (int m = 0; m < 2; m++) {
        struct run_result r;
        run_perf(&r, "-C", which[m], "-b", "96", "-e", "96", "-n", "2", "-w", "1", "-c", "1",
                 modes[m][0], modes[m][1], "--corrupt", "1", NULL);
        if (!r.exited || r.code != 1)
            dump(&r);
        assert_false(r.timed_out);
        assert_true(r.exited);
        assert_int_equal(r.code, 1);
        assert_non_null(strstr(r.out, "# Out of bounds values : 2 FAILED"));
        run_result_free(&r);
    }
}

static void test_bad_flags(void **state)
{
    (void)state;
    struct run_result r;
    run_perf(&r, "-d", "nosuchtype", NULL);
    assert_true(r.exited);
    assert_int_equal(r.code, 2);
    run_result_free(&r);

    run_perf(&r, "-C", "broadcast", "-r", "5", "-t", "2", NULL);
    assert_true(r.exited);
    assert_int_equal(r.code, 2);
    run_result_free(&r);
}

int main(void)
{
    char path[PATH_MAX];
    struct stat st;
    if (stat(perf_path(path, sizeof(path)), &st) != 0) {
        fprintf(stderr, "test_perf_smoke: %s: %s (build it with make)\n", path, strerror(errno));
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_procs_every_collective),
        cmocka_unit_test(test_threads_every_collective),
        cmocka_unit_test(test_procs_of_threads),
        cmocka_unit_test(test_all_types_ops),
        cmocka_unit_test(test_median_columns),
        cmocka_unit_test(test_nccl_tests_name),
        cmocka_unit_test(test_corruption_detected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

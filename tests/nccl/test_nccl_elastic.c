/*
 * test_nccl_elastic.c - ECCL_ELASTIC=1 through the NCCL API alone: a C program compiled against
 * include/nccl.h and linked with -lnccl, run by ecclrun ($ECCL_BUILD/bin/ecclrun; exits 77 when
 * it is missing) on host ranks with the embedded store, does what PyTorch's ProcessGroupNCCL
 * does on a failure: when a collective fails it aborts the communicator and calls
 * ncclCommInitRank again. One worker is SIGKILLed between two steps; ecclrun evicts it and starts
 * a replacement; the survivors' second init recovers into the next generation, which the
 * replacement joins with its first init, and the job finishes every step with correct sums.
 * The workers are this binary (`--worker`); each writes what it saw to $NCCL_EL_TEST_DIR.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <nccl.h>

#define NRANKS    3
#define STEPS     8
#define KILL_RANK 1
#define KILL_STEP 3

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* ---- worker --------------------------------------------------------------------------------- */

static ncclResult_t init(ncclComm_t *comm, int n, int rank)
{
    ncclUniqueId unused; /* ECCL_ELASTIC=1: membership comes from the job, not from the id */
    memset(&unused, 0, sizeof(unused));
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.commName = "elastic-client";
    return ncclCommInitRankConfig(comm, n, unused, rank, &cfg);
}

static int worker(void)
{
    int rank = env_int("RANK", -1), n = env_int("WORLD_SIZE", -1);
    int restart = env_int("ECCL_ELASTIC_RESTART_COUNT", 0);
    const char *dir = getenv("NCCL_EL_TEST_DIR");
    if (rank < 0 || n != NRANKS || !dir) {
        fprintf(stderr, "worker: RANK %d WORLD_SIZE %d NCCL_EL_TEST_DIR %s\n", rank, n,
                dir ? dir : "(unset)");
        return 2;
    }
    ncclComm_t comm = NULL;
    ncclResult_t res = init(&comm, n, rank);
    if (res != ncclSuccess) {
        fprintf(stderr, "worker %d.%d: init: %s: %s\n", rank, restart, ncclGetErrorString(res),
                ncclGetLastError(NULL));
        return 3;
    }
    int64_t step = 0;
    int recoveries = 0, bad_sums = 0;
    char failure[512] = "";
    double t_fail = 0, t_back = 0;
    bool resync = true;
    while (step < STEPS) {
        if (resync) {
            /* Everyone resumes at the furthest step (a replacement starts at 0). */
            int64_t mine = step, all = 0;
            res = ncclAllReduce(&mine, &all, 1, ncclInt64, ncclMax, comm, NULL);
            if (res == ncclSuccess) {
                step = all;
                resync = false;
                continue;
            }
        } else {
            if (rank == KILL_RANK && restart == 0 && step == KILL_STEP)
                raise(SIGKILL);
            int v = rank + 1, sum = 0;
            res = ncclAllReduce(&v, &sum, 1, ncclInt32, ncclSum, comm, NULL);
            if (res == ncclSuccess) {
                if (sum != n * (n + 1) / 2)
                    bad_sums++;
                step++;
                continue;
            }
        }
        /* What ProcessGroupNCCL does: abort, then a new communicator. */
        if (!failure[0]) {
            snprintf(failure, sizeof(failure), "%s | %s", ncclGetErrorString(res),
                     ncclGetLastError(comm));
            t_fail = now_ms();
        }
        ncclCommAbort(comm);
        comm = NULL;
        if (++recoveries > 3)
            break;
        res = init(&comm, n, rank);
        if (res != ncclSuccess) {
            fprintf(stderr, "worker %d.%d: init after a failure: %s: %s\n", rank, restart,
                    ncclGetErrorString(res), ncclGetLastError(NULL));
            return 4;
        }
        t_back = now_ms();
        resync = true;
    }
    int count = 0;
    if (comm)
        ncclCommCount(comm, &count);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/result.%d.%d", dir, rank, restart);
    FILE *f = fopen(path, "w");
    if (!f)
        return 5;
    fprintf(f, "steps %lld recoveries %d bad_sums %d count %d recover_ms %.0f\nfailure %s\n",
            (long long)step, recoveries, bad_sums, count, t_back > 0 ? t_back - t_fail : 0.0,
            failure);
    fclose(f);
    if (comm)
        ncclCommDestroy(comm);
    return step == STEPS && bad_sums == 0 ? 0 : 6;
}

/* ---- the test ------------------------------------------------------------------------------- */

static char ecclrun_bin[PATH_MAX], self_bin[PATH_MAX], dir[PATH_MAX];

static int read_result(int rank, int restart, long long *steps, int *recoveries, int *bad,
                       char *failure, size_t failure_len)
{
    char path[PATH_MAX + 32], line[1024];
    snprintf(path, sizeof(path), "%s/result.%d.%d", dir, rank, restart);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int count = 0;
    double ms = 0;
    int ok = fscanf(f, "steps %lld recoveries %d bad_sums %d count %d recover_ms %lf\n", steps,
                    recoveries, bad, &count, &ms) == 5;
    failure[0] = '\0';
    if (fgets(line, sizeof(line), f))
        snprintf(failure, failure_len, "%s", line);
    fclose(f);
    printf("rank %d (restart %d): %lld steps, %d recoveries, %d wrong sums, size %d, back %.0f ms "
           "after the failure; %s",
           rank, restart, *steps, *recoveries, *bad, count, ms, failure);
    return ok ? 0 : -1;
}

static void test_replace_through_nccl_api(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/eccl-nccl-elastic.%d", (int)getpid());
    assert_int_equal(mkdir(dir, 0700), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("ECCL_ELASTIC", "1", 1);
        setenv("NCCL_EL_TEST_DIR", dir, 1);
        setenv("ECCL_DEVICE", "host", 0);
        setenv("ECCL_SOCKET_IFNAME", "lo", 0);
        setenv("ECCL_ELASTIC_REPLACE_WAIT_MS", "30000", 0);
        char nproc[16];
        snprintf(nproc, sizeof(nproc), "%d", NRANKS);
        execl(ecclrun_bin, "ecclrun", "--nproc-per-node", nproc, "--max-restarts", "1",
              "--elastic-mode", "replace", "--no-python", "--", self_bin, "--worker", (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    int status = 0;
    pid_t p;
    double end = now_ms() + 120000;
    while ((p = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < end)
        usleep(10000);
    if (p == 0) {
        kill(pid, SIGKILL); /* its workers die with it (PR_SET_PDEATHSIG) */
        waitpid(pid, &status, 0);
        fail_msg("ecclrun did not finish in 120 s");
    }
    long long steps;
    int rec, bad;
    char failure[1100];
    int missing = 0;
    for (int r = 0; r < NRANKS; r++) {
        int restart = r == KILL_RANK ? 1 : 0;
        if (read_result(r, restart, &steps, &rec, &bad, failure, sizeof(failure)) != 0) {
            printf("rank %d (restart %d): no result\n", r, restart);
            missing++;
            continue;
        }
        assert_int_equal(steps, STEPS);
        assert_int_equal(bad, 0);
        if (r != KILL_RANK) {
            /* A survivor saw the failure once, with a text that says what happened. */
            assert_int_equal(rec, 1);
            assert_non_null(strstr(failure, "remote process"));
        } else {
            assert_int_equal(rec, 0);
        }
    }
    long long s0;
    int r0, b0;
    assert_int_not_equal(read_result(KILL_RANK, 0, &s0, &r0, &b0, failure, sizeof(failure)), 0);
    assert_int_equal(missing, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--worker") == 0)
        return worker();
    const char *build = getenv("ECCL_BUILD");
    snprintf(ecclrun_bin, sizeof(ecclrun_bin), "%s/bin/ecclrun", build && *build ? build : "build");
    if (access(ecclrun_bin, X_OK) != 0) {
        printf("%s not found: skipped\n", ecclrun_bin);
        return 77;
    }
    ssize_t len = readlink("/proc/self/exe", self_bin, sizeof(self_bin) - 1);
    if (len <= 0)
        return 1;
    self_bin[len] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replace_through_nccl_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * netcolls.c - shared parts of the network-transport tests (see netcolls.h): the per-rank
 * environment, the collective run (matrix per type, extras, and a few checked collectives of
 * more than 4 MiB, whose values are small integers so that every result is exact), and the scan
 * of the ranks' transport log lines.
 */
#include "tests/support/netcolls.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/param.h"
#include "tests/support/mp.h"

/* 4 MiB of floats and 5 more: not a multiple of any chunk or slot size. */
#define LARGE_COUNT ((size_t)(1u << 20) + 5)
/* /tmp/eccl-netlog-<pid>-XXXXXX: the pid lets a later run remove what a killed run left. */
#define LOG_DIR_PREFIX "eccl-netlog-"

int nc_rank_env(const struct nc_env *env, int nenv, const char *log_dir, int rank)
{
    for (int i = 0; i < nenv; i++) {
        int rc = env[i].value ? setenv(env[i].name, env[i].value, 1) : unsetenv(env[i].name);
        if (rc != 0) {
            printf("rank %d: setenv %s: %s\n", rank, env[i].name, strerror(errno));
            return -1;
        }
    }
    if (log_dir != NULL) {
        char path[512];
        snprintf(path, sizeof(path), "%s/rank%d.log", log_dir, rank);
        if (setenv("ECCL_DEBUG", "INFO", 1) != 0 ||
            setenv("ECCL_DEBUG_SUBSYS", "INIT,NET,SHM", 1) != 0 ||
            setenv("ECCL_DEBUG_FILE", path, 1) != 0) {
            printf("rank %d: setenv: %s\n", rank, strerror(errno));
            return -1;
        }
    }
    /* The parent may have read (and this process inherited) cached values. */
    eccl_param_reset();
    eccl_log_reset();
    return 0;
}

ecclResult_t nc_comm_init(ecclComm_t *comm, int nranks, const ecclUniqueId *id, int rank,
                          int timeout_ms)
{
    ecclConfig_t config = ECCL_CONFIG_INITIALIZER;
    config.deviceKind = ECCL_DEVICE_HOST;
    if (timeout_ms > 0)
        config.timeoutMs = timeout_ms;
    return ecclCommInitRankConfig(comm, nranks, *id, rank, &config);
}

/* ---- large collectives -------------------------------------------------------------------- */

struct large_ctx {
    const char *mode;
    int rank;
    int n;
    ecclComm_t comm;
    int failures;
    int cases;
};

static bool large_call(struct large_ctx *l, const char *what, ecclResult_t res)
{
    if (res == ecclSuccess)
        return true;
    printf("FAIL [%s nranks=%d rank=%d] large %s returned %d (%s): %s\n", l->mode, l->n, l->rank,
           what, (int)res, ecclGetErrorString(res), ecclGetLastError(l->comm));
    l->failures++;
    return false;
}

static void large_mismatch(struct large_ctx *l, const char *what, size_t count, size_t wrong,
                           size_t first, double got, double want)
{
    if (wrong == 0)
        return;
    printf("FAIL [%s nranks=%d rank=%d] large %s (count %zu): %zu elements wrong, first [%zu] got "
           "%.17g want %.17g\n",
           l->mode, l->n, l->rank, what, count, wrong, first, got, want);
    l->failures++;
}

static float ar_value(int rank, size_t i)
{
    return (float)((rank + 1) * (int)(i % 1013));
}

static int32_t max_value(int rank, size_t i)
{
    return (int32_t)((i * 2654435761u + (uint64_t)rank * 7919u) % 100000u) - 50000;
}

static void large_allreduce(struct large_ctx *l, float *a, float *b, int32_t *ia, int32_t *ib)
{
    size_t cnt = LARGE_COUNT;
    int n = l->n;
    float sum_scale = (float)(n * (n + 1) / 2);
    for (int inplace = 0; inplace < 2; inplace++) {
        for (size_t i = 0; i < cnt; i++) {
            a[i] = ar_value(l->rank, i);
            b[i] = -1.0f;
        }
        float *out = inplace ? a : b;
        l->cases++;
        if (!large_call(l, "AllReduce float sum",
                        ecclAllReduce(a, out, cnt, ecclFloat, ecclSum, l->comm, NULL)))
            return;
        size_t wrong = 0, first = 0;
        double got = 0, want = 0;
        for (size_t i = 0; i < cnt; i++) {
            float w = sum_scale * (float)(i % 1013);
            if (out[i] != w && wrong++ == 0) {
                first = i;
                got = out[i];
                want = w;
            }
        }
        large_mismatch(l, inplace ? "AllReduce float sum in place" : "AllReduce float sum", cnt,
                       wrong, first, got, want);
    }
    for (size_t i = 0; i < cnt; i++) {
        ia[i] = max_value(l->rank, i);
        ib[i] = 0x7eadbeef;
    }
    l->cases++;
    if (!large_call(l, "AllReduce int32 max",
                    ecclAllReduce(ia, ib, cnt, ecclInt32, ecclMax, l->comm, NULL)))
        return;
    size_t wrong = 0, first = 0;
    double got = 0, want = 0;
    for (size_t i = 0; i < cnt; i++) {
        int32_t w = max_value(0, i);
        for (int r = 1; r < n; r++)
            w = max_value(r, i) > w ? max_value(r, i) : w;
        if (ib[i] != w && wrong++ == 0) {
            first = i;
            got = ib[i];
            want = w;
        }
    }
    large_mismatch(l, "AllReduce int32 max", cnt, wrong, first, got, want);
}

static void large_broadcast(struct large_ctx *l, float *a)
{
    size_t cnt = LARGE_COUNT;
    int root = l->n - 1; /* on the last host: the data crosses the network to rank 0 */
    for (size_t i = 0; i < cnt; i++)
        a[i] = l->rank == root ? (float)(i % 4099) + 0.5f : -2.0f;
    l->cases++;
    if (!large_call(l, "Broadcast", ecclBroadcast(a, a, cnt, ecclFloat, root, l->comm, NULL)))
        return;
    size_t wrong = 0, first = 0;
    double got = 0, want = 0;
    for (size_t i = 0; i < cnt; i++) {
        float w = (float)(i % 4099) + 0.5f;
        if (a[i] != w && wrong++ == 0) {
            first = i;
            got = a[i];
            want = w;
        }
    }
    large_mismatch(l, "Broadcast (in place)", cnt, wrong, first, got, want);
}

static void large_allgather(struct large_ctx *l, int32_t *send, int32_t *recv)
{
    size_t cnt = LARGE_COUNT, total = (size_t)l->n * cnt;
    for (size_t i = 0; i < cnt; i++)
        send[i] = (int32_t)(l->rank * 1000003 + (int)i);
    for (size_t i = 0; i < total; i++)
        recv[i] = -7;
    l->cases++;
    if (!large_call(l, "AllGather", ecclAllGather(send, recv, cnt, ecclInt32, l->comm, NULL)))
        return;
    size_t wrong = 0, first = 0;
    double got = 0, want = 0;
    for (size_t i = 0; i < total; i++) {
        int32_t w = (int32_t)((int)(i / cnt) * 1000003 + (int)(i % cnt));
        if (recv[i] != w && wrong++ == 0) {
            first = i;
            got = recv[i];
            want = w;
        }
    }
    large_mismatch(l, "AllGather int32", cnt, wrong, first, got, want);
}

static void large_reducescatter(struct large_ctx *l, float *send, float *recv)
{
    size_t cnt = LARGE_COUNT;
    int n = l->n;
    for (int b = 0; b < n; b++) {
        for (size_t j = 0; j < cnt; j++)
            send[(size_t)b * cnt + j] = (float)((l->rank + 1) * (int)(((size_t)b * 31 + j) % 977));
    }
    for (size_t j = 0; j < cnt; j++)
        recv[j] = -3.0f;
    l->cases++;
    if (!large_call(l, "ReduceScatter",
                    ecclReduceScatter(send, recv, cnt, ecclFloat, ecclSum, l->comm, NULL)))
        return;
    size_t wrong = 0, first = 0;
    double got = 0, want = 0;
    float scale = (float)(n * (n + 1) / 2);
    for (size_t j = 0; j < cnt; j++) {
        float w = scale * (float)(((size_t)l->rank * 31 + j) % 977);
        if (recv[j] != w && wrong++ == 0) {
            first = j;
            got = recv[j];
            want = w;
        }
    }
    large_mismatch(l, "ReduceScatter float sum", cnt, wrong, first, got, want);
}

static int run_large(const char *mode, int rank, int n, ecclComm_t comm)
{
    struct large_ctx l = {.mode = mode, .rank = rank, .n = n, .comm = comm};
    /* fa: ReduceScatter's n blocks; ib: AllGather's result; the others one block. */
    size_t big = (size_t)n * LARGE_COUNT;
    float *fa = malloc(big * sizeof(float)), *fb = malloc(LARGE_COUNT * sizeof(float));
    int32_t *ia = malloc(LARGE_COUNT * sizeof(int32_t)), *ib = malloc(big * sizeof(int32_t));
    if (fa == NULL || fb == NULL || ia == NULL || ib == NULL) {
        printf("FAIL [%s nranks=%d rank=%d] large: out of memory\n", mode, n, rank);
        l.failures++;
        goto out;
    }
    large_allreduce(&l, fa, fb, ia, ib);
    if (l.failures == 0)
        large_broadcast(&l, fa);
    if (l.failures == 0)
        large_allgather(&l, ia, ib);
    if (l.failures == 0)
        large_reducescatter(&l, fa, fb);
    if (rank == 0)
        printf("large [%s nranks=%d]: %d collectives of %zu elements (> 4 MiB), %d failed on rank "
               "0\n",
               mode, n, l.cases, LARGE_COUNT, l.failures);
out:
    free(fa);
    free(fb);
    free(ia);
    free(ib);
    fflush(stdout);
    return l.failures;
}

int nc_rank_colls(const struct tc_params *p, struct tc_shared *sh, int rank, ecclComm_t comm,
                  const struct nc_plan *plan)
{
    int bad = 0;
    struct tc_params q = *p;
    if (plan->all_types) {
        tc_filter_init(&q.filter);
        q.filter.no_extras = true;
        bad |= tc_rank_run(&q, sh, rank, comm);
    } else {
        for (int i = 0; i < plan->ndtypes && bad == 0; i++) {
            tc_filter_init(&q.filter);
            q.filter.dtype = plan->dtypes[i];
            q.filter.no_extras = true;
            bad |= tc_rank_run(&q, sh, rank, comm);
        }
    }
    if (bad == 0 && plan->extras) {
        tc_filter_init(&q.filter);
        q.filter.only_extras = true;
        bad |= tc_rank_run(&q, sh, rank, comm);
    }
    if (bad == 0 && plan->large)
        bad |= run_large(p->mode, rank, p->nranks, comm) != 0;
    return bad;
}

int nc_rank_full(const struct tc_params *p, struct tc_shared *sh, int rank, int nranks,
                 const ecclUniqueId *id, const struct nc_plan *plan)
{
    ecclComm_t comm;
    ecclResult_t res = nc_comm_init(&comm, nranks, id, rank, 0);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommInitRankConfig returned %d (%s): %s\n", p->mode,
               nranks, rank, (int)res, ecclGetErrorString(res), ecclGetLastError(NULL));
        return 1;
    }
    if (nc_rank_colls(p, sh, rank, comm, plan) != 0) {
        ecclCommAbort(comm);
        return 1;
    }
    res = ecclCommFinalize(comm);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommFinalize returned %d: %s\n", p->mode, nranks,
               rank, (int)res, ecclGetLastError(comm));
        ecclCommAbort(comm);
        return 1;
    }
    res = ecclCommDestroy(comm);
    if (res != ecclSuccess) {
        printf("FAIL [%s nranks=%d rank=%d] ecclCommDestroy returned %d: %s\n", p->mode, nranks,
               rank, (int)res, ecclGetLastError(NULL));
        return 1;
    }
    return 0;
}

/* ---- logs --------------------------------------------------------------------------------- */

static void log_path(char *buf, size_t len, const char *dir, int rank)
{
    snprintf(buf, len, "%s/rank%d.log", dir, rank);
}

/* The ranks of "A[..] -> B[..]", "A -> B" or "A <- B" in a line; false when there is none. */
static bool parse_pair(const char *line, int *a, int *b)
{
    const char *arrow = strstr(line, "->");
    if (arrow == NULL)
        arrow = strstr(line, "<-");
    if (arrow == NULL || arrow == line)
        return false;
    const char *p = arrow - 1;
    while (p > line && *p == ' ')
        p--;
    if (*p == ']') {
        while (p > line && *p != '[')
            p--;
        if (p == line)
            return false;
        p--;
    }
    const char *end = p + 1;
    while (p > line && p[-1] >= '0' && p[-1] <= '9')
        p--;
    if (!(*p >= '0' && *p <= '9') || end - p > 6)
        return false;
    *a = atoi(p);
    const char *q = arrow + 2;
    while (*q == ' ')
        q++;
    if (!(*q >= '0' && *q <= '9'))
        return false;
    *b = atoi(q);
    return true;
}

int nc_log_scan(const char *log_dir, int nranks, const int *host, struct nc_links *out)
{
    memset(out, 0, sizeof(*out));
    int printed = 0;
    for (int r = 0; r < nranks; r++) {
        char path[512];
        log_path(path, sizeof(path), log_dir, r);
        FILE *f = fopen(path, "re");
        if (f == NULL) {
            out->missing++;
            continue;
        }
        bool has_net = false, has_shm = false;
        char line[2048];
        while (fgets(line, sizeof(line), f) != NULL) {
            bool net = strstr(line, "via NET/Socket") != NULL;
            bool shm = strstr(line, "via SHM") != NULL;
            if (!net && !shm)
                continue;
            has_net |= net;
            has_shm |= shm;
            out->net += net;
            out->shm += shm;
            int a, b;
            if (!parse_pair(line, &a, &b) || a < 0 || b < 0 || a >= nranks || b >= nranks) {
                out->unparsed++;
                continue;
            }
            bool same = host[a] == host[b];
            if ((net && same) || (shm && !same)) {
                if (net && same)
                    out->net_same_host++;
                else
                    out->shm_cross_host++;
                if (printed++ < 5)
                    printf("rank %d log: %s connector between ranks %d (host %d) and %d (host "
                           "%d): %s",
                           r, net ? "network" : "shared-memory", a, host[a], b, host[b], line);
            }
        }
        fclose(f);
        out->net_ranks += has_net;
        out->shm_ranks += has_shm;
    }
    printf("transport log lines: %d via NET/Socket (%d ranks), %d via SHM (%d ranks), %d without "
           "ranks, "
           "%d NET within a host, %d SHM across hosts, %d logs missing\n",
           out->net, out->net_ranks, out->shm, out->shm_ranks, out->unparsed, out->net_same_host,
           out->shm_cross_host, out->missing);
    fflush(stdout);
    return out->missing > 0 ? -1 : 0;
}

void nc_log_dump(const char *log_dir, int nranks)
{
    for (int r = 0; r < nranks; r++) {
        char path[512];
        log_path(path, sizeof(path), log_dir, r);
        FILE *f = fopen(path, "re");
        if (f == NULL) {
            printf("rank %d: no log (%s)\n", r, path);
            continue;
        }
        char line[2048];
        int via = 0, warns = 0;
        while (fgets(line, sizeof(line), f) != NULL) {
            bool warn = strstr(line, "ECCL WARN") != NULL;
            bool transport = strstr(line, "via ") != NULL;
            if ((warn && warns++ < 10) || (transport && via++ < 4))
                printf("rank %d log: %s", r, line);
        }
        fclose(f);
    }
    fflush(stdout);
}

/* Removes a log folder: its rank*.log files, then itself. */
static void remove_log_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "rank", 4) != 0)
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Log folders of runs whose process is gone (killed at a timeout before it could clean up). */
static void remove_stale_log_dirs(void)
{
    DIR *d = opendir("/tmp");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, LOG_DIR_PREFIX, strlen(LOG_DIR_PREFIX)) != 0)
            continue;
        const char *p = e->d_name + strlen(LOG_DIR_PREFIX);
        char *end = NULL;
        long pid = strtol(p, &end, 10);
        if (end == p || *end != '-' || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char dir[512];
        snprintf(dir, sizeof(dir), "/tmp/%s", e->d_name);
        remove_log_dir(dir);
    }
    closedir(d);
}

int nc_log_dir_make(char *dir, size_t len)
{
    remove_stale_log_dirs();
    if (snprintf(dir, len, "/tmp/" LOG_DIR_PREFIX "%d-XXXXXX", (int)getpid()) >= (int)len)
        return -1;
    if (mkdtemp(dir) == NULL) {
        printf("mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

void nc_log_dir_remove(const char *dir)
{
    remove_log_dir(dir);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double nc_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double nc_max(const double *v, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

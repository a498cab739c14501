/*
 * test_elastic.c - the elastic fault matrix: a data-parallel job of worker processes (this binary
 * re-executed with --worker) on the embedded store or a real etcd, and faults injected into it.
 * Every case has a hard timeout and must end either recovered with the right result or with a
 * clear error; a worker that finishes checks that its parameters are bit-identical to a
 * failure-free computation of the steps it committed (gradients are int64 sums: exact in any
 * order and any split of the samples over the ranks).
 *
 * The harness is a small launcher, as ecclrun is: it starts the workers with the ECCL_ELASTIC_*
 * environment, evicts a dead worker's member from the store at once, starts replacements when the
 * case asks for them, and kills what is left at the end, by pid.
 *
 * Cases: SIGKILL of each rank position during each collective kind (AllReduce, AllGather,
 * Broadcast, ReduceScatter+AllGather, Send/Recv); SIGSTOP of a rank; two ranks killed at once; a
 * rank killed during the recovery from another's death; a replacement (replace mode); a late
 * replacement (shrink, then grow back); a joiner beyond max (refused clearly); a process with the
 * wrong job id (a clear timeout, the job unaffected); etcd killed and restarted in steady state
 * and during a recovery; a killed proxy thread (FAULT=1 builds).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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

#include "common/fault.h"
#include "common/time.h"
#include "eccl.h"
#include "eccl_elastic.h"
#include "elastic/rdzv.h"
#include "store/store.h"
#include "tests/support/etcd.h"

#define MAXW    8
#define DIM     6
#define NP      (DIM + 1)
#define SAMPLES 48
#define QSCALE  1073741824.0 /* 2^30 */

/* ---- the model (worker and reference) ---------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dULL;
    x ^= x >> 33;
    return x;
}

static double unif(int64_t step, int i, int j)
{
    uint64_t h = mix(((uint64_t)step << 24) ^ ((uint64_t)i << 8) ^ (uint64_t)j ^ 0x5bd1e995);
    return (double)(h >> 11) / 4503599627370496.0 - 1.0;
}

static void grad_add(const double *p, int64_t step, int i, int64_t *q)
{
    double x[DIM], e = p[DIM] - 0.25;
    for (int j = 0; j < DIM; j++) {
        x[j] = unif(step, i, j);
        e += (p[j] - 0.5 * (j + 1)) * x[j];
    }
    for (int j = 0; j < DIM; j++)
        q[j] += (int64_t)llround(e * x[j] * QSCALE);
    q[DIM] += (int64_t)llround(e * QSCALE);
}

static void apply(double *p, const int64_t *sum)
{
    for (int j = 0; j < NP; j++)
        p[j] -= 0.1 * ((double)sum[j] / QSCALE) / SAMPLES;
}

static void reference(int64_t steps, double *p)
{
    memset(p, 0, sizeof(double) * NP);
    for (int64_t s = 0; s < steps; s++) {
        int64_t q[NP] = {0};
        for (int i = 0; i < SAMPLES; i++)
            grad_add(p, s, i, q);
        apply(p, q);
    }
}

/* ---- the worker ------------------------------------------------------------------------------ */

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* The gradient sum over the ranks through one collective kind (each gives the same integers). */
static ecclResult_t reduce_sum(const char *coll, ecclComm_t comm, int rank, int n, int64_t *q,
                               int64_t *sum)
{
    int64_t all[MAXW * NP];
    memset(sum, 0, sizeof(int64_t) * NP);
    if (strcmp(coll, "allreduce") == 0)
        return ecclAllReduce(q, sum, NP, ecclInt64, ecclSum, comm, NULL);
    if (strcmp(coll, "allgather") == 0) {
        ecclResult_t r = ecclAllGather(q, all, NP, ecclInt64, comm, NULL);
        for (int k = 0; r == ecclSuccess && k < n * NP; k++)
            sum[k % NP] += all[k];
        return r;
    }
    if (strcmp(coll, "broadcast") == 0) {
        for (int root = 0; root < n; root++) {
            int64_t b[NP];
            memcpy(b, q, sizeof(b));
            ecclResult_t r = ecclBroadcast(b, b, NP, ecclInt64, root, comm, NULL);
            if (r != ecclSuccess)
                return r;
            for (int j = 0; j < NP; j++)
                sum[j] += b[j];
        }
        return ecclSuccess;
    }
    if (strcmp(coll, "reducescatter") == 0) {
        int k = (NP + n - 1) / n;
        int64_t pad[MAXW * NP] = {0}, part[NP], full[MAXW * NP];
        memcpy(pad, q, sizeof(int64_t) * NP);
        ecclResult_t r = ecclReduceScatter(pad, part, (size_t)k, ecclInt64, ecclSum, comm, NULL);
        if (r == ecclSuccess)
            r = ecclAllGather(part, full, (size_t)k, ecclInt64, comm, NULL);
        if (r == ecclSuccess)
            memcpy(sum, full, sizeof(int64_t) * NP);
        return r;
    }
    /* sendrecv: everyone's vector to everyone, then sum */
    ecclGroupStart();
    for (int peer = 0; peer < n; peer++) {
        if (peer == rank)
            continue;
        ecclSend(q, NP, ecclInt64, peer, comm, NULL);
        ecclRecv(all + peer * NP, NP, ecclInt64, peer, comm, NULL);
    }
    ecclResult_t r = ecclGroupEnd();
    memcpy(all + rank * NP, q, sizeof(int64_t) * NP);
    for (int k = 0; r == ecclSuccess && k < n * NP; k++)
        sum[k % NP] += all[k];
    return r;
}

static void *delayed_kill(void *arg)
{
    struct timespec ts = {0, (long)(intptr_t)arg * 1000L};
    nanosleep(&ts, NULL);
    raise(SIGKILL);
    return NULL;
}

/* Kills this process `us` microseconds from now, from another thread: it lands inside whatever
 * the main thread does then (a collective, a recovery). */
static void kill_soon(int us)
{
    pthread_t t;
    pthread_create(&t, NULL, delayed_kill, (void *)(intptr_t)us);
}

static void result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void result(const char *fmt, ...)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/res.%s.%s", getenv("ELT_DIR"), getenv("ELT_SLOT"),
             getenv("ELT_LIFE"));
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static int worker_main(void)
{
    int slot = env_int("ELT_SLOT", 0), life = env_int("ELT_LIFE", 0);
    int steps = env_int("ELT_STEPS", 40), step_us = env_int("ELT_STEP_US", 2000);
    const char *coll = getenv("ELT_COLL") ? getenv("ELT_COLL") : "allreduce";
    int kill_slot = env_int("ELT_KILL_SLOT", -1), kill_slot2 = env_int("ELT_KILL_SLOT2", -1);
    int kill_step = env_int("ELT_KILL_STEP", -1), kill_sig = env_int("ELT_KILL_SIG", SIGKILL);
    int kill_rec_slot = env_int("ELT_KILL_IN_RECOVERY", -1);
#ifdef ECCL_FAULT_ENABLED
    int fault_slot = env_int("ELT_FAULT_SLOT", -1);
#endif
    ecclElastic_t el;
    ecclResult_t r = ecclElasticJoin(&el, NULL);
    if (r != ecclSuccess) {
        result("JOIN %d %s\n", (int)r, ecclGetLastError(NULL));
        return r == ecclInvalidUsage ? 3 : 4;
    }
    ecclElasticInfo_t info;
    ecclElasticGetInfo(el, &info);
    double p[NP] = {0};
    if (ecclElasticSyncState(el, p, sizeof(p), NULL) != ecclSuccess)
        goto err;
    ecclElasticGetInfo(el, &info);
    int recoveries = 0;
    for (int64_t step = info.step + 1; step < steps;) {
        bool first = life == 0;
        if (first && step == kill_step && (slot == kill_slot || slot == kill_slot2)) {
            fprintf(stderr, "worker slot %d: signal %d at step %lld\n", slot, kill_sig,
                    (long long)step);
            if (kill_sig == SIGKILL)
                kill_soon((int)(mix((uint64_t)getpid()) % 400)); /* inside the collective */
            else
                raise(kill_sig);
        }
#ifdef ECCL_FAULT_ENABLED
        if (first && step == kill_step && slot == fault_slot)
            eccl_fault_arm("proxy_thread", 1, false);
#endif
        ecclComm_t comm;
        if (ecclElasticGetComm(el, &comm) != ecclSuccess)
            goto err;
        int64_t q[NP] = {0}, sum[NP];
        for (int i = info.rank; i < SAMPLES; i += info.nranks)
            grad_add(p, step, i, q);
        r = reduce_sum(coll, comm, info.rank, info.nranks, q, sum);
        ecclElasticChange_t change = ecclElasticNoChange;
        if (r == ecclSuccess) {
            apply(p, sum);
            r = ecclElasticCommit(el, step);
        }
        if (r == ecclSuccess)
            ecclElasticPoll(el, &change);
        if (r != ecclSuccess || change != ecclElasticNoChange) {
            if (first && slot == kill_rec_slot && recoveries == 0)
                kill_soon(3000); /* dies during the agreement */
            if (ecclElasticRecover(el) != ecclSuccess)
                goto err;
            recoveries++;
            if (ecclElasticSyncState(el, p, sizeof(p), NULL) != ecclSuccess)
                goto err;
            ecclElasticGetInfo(el, &info);
            step = info.step + 1;
            continue;
        }
        step++;
        if (step_us) {
            struct timespec ts = {0, step_us * 1000L};
            nanosleep(&ts, NULL);
        }
    }
    double ref[NP];
    reference(steps, ref);
    bool same = memcmp(p, ref, sizeof(p)) == 0;
    ecclElasticGetInfo(el, &info);
    result("%s nranks=%d gen=%" PRId64 " recoveries=%d\n", same ? "EQUAL" : "DIFFERENT",
           info.nranks, info.generation, recoveries);
    ecclElasticLeave(el);
    return same ? 0 : 1;
err:
    result("ERROR %s\n", ecclGetLastError(NULL));
    ecclElasticDestroy(el);
    return 1;
}

/* ---- the launcher ------------------------------------------------------------------------- */

struct elcase {
    const char *name;
    int nranks;
    int min, max;
    const char *mode;
    const char *coll;
    int steps;
    int kill_slot, kill_slot2, kill_step, kill_sig;
    int kill_in_recovery; /* slot */
    int fault_slot;
    bool replace;          /* start a replacement for a killed worker */
    int replace_delay_ms;  /* ... this long after its death */
    bool extra_joiner;     /* a worker beyond max, started mid-run */
    bool wrong_job;        /* a worker of another job, started mid-run */
    bool etcd;             /* etcd instead of the embedded store */
    int etcd_restart_ms;   /* kill etcd this long after start (steady state), restart 1 s later */
    bool etcd_in_recovery; /* kill etcd at the first death, restart 1 s later */
    int final_nranks;      /* expected size of the last generation (0: don't check) */
    bool may_drop;         /* a worker may end with a clear error instead (left out) */
    int min_recoveries;    /* each finished worker recovered at least this often */
};

struct wk {
    pid_t pid;
    int slot;
    int life;
    int status;
    bool done;
    bool stopped_by_case;
    char member[64];
};

static char self_exe[512];
static char store_url[256];
static char job[64];
static char dir[128];

static pid_t spawn_worker(const struct elcase *c, struct wk *w, int replace_rank, const char *jobid)
{
    snprintf(w->member, sizeof(w->member), "w%d-l%d-%d", w->slot, w->life, (int)getpid());
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    char b[64];
#define SETI(name, v) (snprintf(b, sizeof(b), "%d", (v)), setenv((name), b, 1))
    SETI("ELT_SLOT", w->slot);
    SETI("ELT_LIFE", w->life);
    SETI("ELT_STEPS", c->steps);
    SETI("ELT_KILL_SLOT", c->kill_slot);
    SETI("ELT_KILL_SLOT2", c->kill_slot2);
    SETI("ELT_KILL_STEP", c->kill_step);
    SETI("ELT_KILL_SIG", c->kill_sig ? c->kill_sig : SIGKILL);
    SETI("ELT_KILL_IN_RECOVERY", c->kill_in_recovery);
    SETI("ELT_FAULT_SLOT", c->fault_slot);
    SETI("ECCL_ELASTIC_MIN_RANKS", c->min);
    SETI("ECCL_ELASTIC_MAX_RANKS", c->max);
    SETI("ECCL_ELASTIC_REPLACE_RANK", replace_rank);
    setenv("ELT_COLL", c->coll ? c->coll : "allreduce", 1);
    setenv("ELT_DIR", dir, 1);
    setenv("ECCL_ELASTIC_STORE", store_url, 1);
    setenv("ECCL_ELASTIC_JOB_ID", jobid, 1);
    setenv("ECCL_ELASTIC_MEMBER_ID", w->member, 1);
    setenv("ECCL_ELASTIC_MODE", c->mode ? c->mode : "shrink", 1);
    execl(self_exe, self_exe, "--worker", (char *)NULL);
    _exit(127);
}

static void store_evict(const char *member)
{
    struct store *s = NULL;
    if (store_open(store_url, eccl_deadline_ms(2000), &s) != ecclSuccess)
        return;
    el_rdzv_evict(s, job, member, eccl_deadline_ms(2000));
    store_close(s);
}

static bool read_result(int slot, int life, char *out, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/res.%d.%d", dir, slot, life);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    unlink(path);
    return ok;
}

static double ms_since(uint64_t t0)
{
    return (double)(eccl_now_ns() - t0) / 1e6;
}

static void run_case(const struct elcase *c, int timeout_ms)
{
    static int seq;
    seq++;
    printf("---- case %s\n", c->name);
    fflush(stdout);
    struct etcd_proc ep;
    pid_t store_pid = -1;
    memset(&ep, 0, sizeof(ep));
    snprintf(job, sizeof(job), "job%d", seq);
    if (c->etcd) {
        assert_int_equal(etcd_start(&ep), 0);
        char base[128];
        etcd_url(&ep, base, sizeof(base));
        snprintf(store_url, sizeof(store_url), "%s/el%d", base, seq);
    } else {
        int port = etcd_free_port();
        assert_true(port > 0);
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
        char bin[600];
        snprintf(bin, sizeof(bin), "%s", self_exe);
        char *slash = strrchr(bin, '/');
        assert_non_null(slash);
        /* build/tests/fault/test_elastic -> build/bin/eccl-store */
        snprintf(slash, sizeof(bin) - (size_t)(slash - bin), "/../../bin/eccl-store");
        store_pid = fork();
        if (store_pid == 0) {
            int fd = open("/dev/null", O_WRONLY);
            dup2(fd, 1);
            execl(bin, bin, "serve", "--listen", listen, (char *)NULL);
            _exit(127);
        }
        snprintf(store_url, sizeof(store_url), "tcp://127.0.0.1:%d/el%d", port, seq);
        struct store *s = NULL;
        assert_int_equal(store_open(store_url, eccl_deadline_ms(5000), &s), ecclSuccess);
        store_close(s);
    }

    struct wk w[3 * MAXW];
    int nw = 0;
    for (int i = 0; i < c->nranks; i++) {
        w[nw] = (struct wk){.slot = i};
        w[nw].pid = spawn_worker(c, &w[nw], -1, job);
        nw++;
    }
    uint64_t t0 = eccl_now_ns();
    int64_t replace_at[MAXW];
    for (int i = 0; i < MAXW; i++)
        replace_at[i] = -1;
    bool etcd_down = false, etcd_cycled = false, extra_started = false;
    uint64_t etcd_up_at = 0;
    int deaths = 0;
    bool timed_out = false;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0 && pid == store_pid) {
            store_pid = -1;
            continue;
        }
        if (pid > 0) {
            for (int i = 0; i < nw; i++) {
                if (w[i].pid != pid || w[i].done)
                    continue;
                w[i].done = true;
                w[i].status = status;
                if (WIFSIGNALED(status) && !w[i].stopped_by_case) {
                    deaths++;
                    printf("  worker slot %d life %d died of signal %d at %.0f ms\n", w[i].slot,
                           w[i].life, WTERMSIG(status), ms_since(t0));
                    store_evict(w[i].member); /* what ecclrun does */
                    if (c->replace && w[i].life == 0)
                        replace_at[w[i].slot] = (int64_t)ms_since(t0) + c->replace_delay_ms;
                    if (c->etcd_in_recovery && !etcd_cycled && !etcd_down) {
                        etcd_kill(&ep);
                        etcd_down = true;
                        etcd_up_at = eccl_now_ns() + 1000 * ECCL_NS_PER_MS;
                        printf("  etcd killed at %.0f ms (during recovery)\n", ms_since(t0));
                    }
                }
            }
        }
        double now = ms_since(t0);
        for (int s = 0; s < MAXW; s++) {
            if (replace_at[s] >= 0 && now >= (double)replace_at[s]) {
                replace_at[s] = -1;
                w[nw] = (struct wk){.slot = s, .life = 1};
                w[nw].pid = spawn_worker(c, &w[nw], s, job);
                printf("  replacement for slot %d started at %.0f ms\n", s, now);
                nw++;
            }
        }
        if ((c->extra_joiner || c->wrong_job) && !extra_started && now > 300) {
            extra_started = true;
            w[nw] = (struct wk){.slot = MAXW - 1};
            char other[80];
            snprintf(other, sizeof(other), "%s-other", job);
            w[nw].pid = spawn_worker(c, &w[nw], -1, c->wrong_job ? other : job);
            nw++;
        }
        if (c->etcd && c->etcd_restart_ms && !etcd_cycled && !etcd_down &&
            now > c->etcd_restart_ms) {
            etcd_kill(&ep);
            etcd_down = true;
            etcd_up_at = eccl_now_ns() + 1000 * ECCL_NS_PER_MS;
            printf("  etcd killed at %.0f ms (steady state)\n", now);
        }
        if (etcd_down && eccl_now_ns() >= etcd_up_at) {
            assert_int_equal(etcd_start(&ep), 0);
            etcd_down = false;
            etcd_cycled = true;
            printf("  etcd restarted at %.0f ms\n", ms_since(t0));
        }
        /* Stopped workers: killed once every other worker has finished. */
        int running = 0, stopped = 0;
        for (int i = 0; i < nw; i++) {
            if (w[i].done)
                continue;
            bool is_stopped = c->kill_sig == SIGSTOP && w[i].life == 0 &&
                              (w[i].slot == c->kill_slot || w[i].slot == c->kill_slot2);
            if (is_stopped)
                stopped++;
            else
                running++;
        }
        bool pending = false;
        for (int i = 0; i < MAXW; i++)
            pending |= replace_at[i] >= 0;
        if (running == 0 && !pending) {
            for (int i = 0; i < nw; i++) {
                if (!w[i].done) {
                    w[i].stopped_by_case = true;
                    kill(w[i].pid, SIGKILL);
                }
            }
            if (stopped == 0)
                break;
        }
        if (now > timeout_ms) {
            timed_out = true;
            for (int i = 0; i < nw; i++)
                if (!w[i].done)
                    kill(w[i].pid, SIGKILL);
            while (waitpid(-1, NULL, WNOHANG) > 0 || errno == EINTR)
                ;
            break;
        }
        if (pid <= 0)
            usleep(2000);
    }
    double took = ms_since(t0);
    /* Reap what is left (killed stopped workers). */
    for (int i = 0; i < nw; i++) {
        if (!w[i].done && waitpid(w[i].pid, &w[i].status, 0) > 0) {
            w[i].done = true;
            if (timed_out && !w[i].stopped_by_case)
                printf("  slot %d life %d was still running at the timeout\n", w[i].slot,
                       w[i].life);
        }
    }
    if (store_pid > 0) {
        kill(store_pid, SIGKILL);
        waitpid(store_pid, NULL, 0);
    }
    if (c->etcd)
        etcd_destroy(&ep);

    int bad = timed_out;
    if (timed_out)
        printf("  TIMED OUT after %d ms\n", timeout_ms);
    int finished = 0;
    for (int i = 0; i < nw; i++) {
        char res[256] = "";
        bool has = read_result(w[i].slot, w[i].life, res, sizeof(res));
        bool expect_dead =
            w[i].life == 0 && (w[i].slot == c->kill_slot || w[i].slot == c->kill_slot2 ||
                               w[i].slot == c->kill_in_recovery);
        bool outsider = (c->extra_joiner || c->wrong_job) && w[i].slot == MAXW - 1;
        int code = WIFEXITED(w[i].status) ? WEXITSTATUS(w[i].status) : -WTERMSIG(w[i].status);
        printf("  slot %d life %d: %s %s", w[i].slot, w[i].life,
               WIFEXITED(w[i].status) ? "exit" : "signal", has ? res : "(no result)\n");
        if (outsider) {
            /* Refused clearly: beyond max -> ecclInvalidUsage naming max; wrong job -> a join
             * that times out (its own job never fills). */
            bool ok = c->extra_joiner ? code == 3 && strstr(res, "max") != NULL
                                      : (code == 3 || code == 4) && has;
            if (!ok) {
                printf("  slot %d: want a clear refusal, got code %d\n", w[i].slot, code);
                bad = 1;
            }
            continue;
        }
        if (expect_dead && !WIFEXITED(w[i].status))
            continue;
        if (c->may_drop && code == 1 && strncmp(res, "ERROR ", 6) == 0 && strlen(res) > 20) {
            printf("  slot %d life %d: left out, with a clear error\n", w[i].slot, w[i].life);
            continue;
        }
        if (code != 0 || strncmp(res, "EQUAL", 5) != 0) {
            printf("  slot %d life %d: want EQUAL and exit 0 (code %d)\n", w[i].slot, w[i].life,
                   code);
            bad = 1;
            continue;
        }
        finished++;
        const char *rp = strstr(res, "recoveries=");
        if (rp && atoi(rp + 11) < c->min_recoveries) {
            printf("  slot %d: %d recoveries, want at least %d\n", w[i].slot, atoi(rp + 11),
                   c->min_recoveries);
            bad = 1;
        }
        if (c->final_nranks) {
            int n = 0;
            const char *p = strstr(res, "nranks=");
            if (p)
                n = atoi(p + 7);
            if (n != c->final_nranks) {
                printf("  slot %d: last generation has %d ranks, want %d\n", w[i].slot, n,
                       c->final_nranks);
                bad = 1;
            }
        }
    }
    if (finished < c->min) {
        printf("  only %d workers finished (min %d)\n", finished, c->min);
        bad = 1;
    }
    printf("  case %s: %s in %.0f ms (%d deaths)\n", c->name, bad ? "FAILED" : "ok", took, deaths);
    fflush(stdout);
    assert_int_equal(bad, 0);
}

/* ---- cases ------------------------------------------------------------------------------- */

static const char *const colls[] = {"allreduce", "allgather", "broadcast", "reducescatter",
                                    "sendrecv"};

static struct elcase base(const char *name)
{
    return (struct elcase){.name = name,
                           .nranks = 4,
                           .min = 2,
                           .max = 4,
                           .mode = "shrink",
                           .coll = "allreduce",
                           .steps = 40,
                           .kill_slot = -1,
                           .kill_slot2 = -1,
                           .kill_step = -1,
                           .kill_in_recovery = -1,
                           .fault_slot = -1};
}

/* Each rank position, each collective kind, a random step. */
static void test_kill_matrix(void **s)
{
    (void)s;
    uint64_t seed = mix((uint64_t)time(NULL));
    for (int k = 0; k < 5; k++) {
        for (int slot = 0; slot < 4; slot++) {
            char name[64];
            struct elcase c = base(name);
            int step = 5 + (int)(mix(seed + (uint64_t)(k * 4 + slot)) % 25);
            snprintf(name, sizeof(name), "kill slot %d in %s at step %d", slot, colls[k], step);
            c.coll = colls[k];
            c.kill_slot = slot;
            c.kill_step = step;
            c.final_nranks = 3;
            run_case(&c, 30000);
        }
    }
}

static void test_stop_rank(void **s)
{
    (void)s;
    struct elcase c = base("SIGSTOP slot 1 (heartbeat / lease expiry)");
    c.kill_slot = 1;
    c.kill_step = 10;
    c.kill_sig = SIGSTOP;
    c.final_nranks = 3;
    run_case(&c, 30000);
}

static void test_two_killed(void **s)
{
    (void)s;
    struct elcase c = base("slots 1 and 3 killed at once");
    c.kill_slot = 1;
    c.kill_slot2 = 3;
    c.kill_step = 12;
    c.final_nranks = 2;
    run_case(&c, 30000);
}

static void test_killed_during_recovery(void **s)
{
    (void)s;
    struct elcase c = base("slot 2 killed, slot 0 killed during the recovery");
    c.kill_slot = 2;
    c.kill_step = 10;
    c.kill_in_recovery = 0;
    c.final_nranks = 2;
    run_case(&c, 30000);
}

static void test_replace(void **s)
{
    (void)s;
    struct elcase c = base("replace mode: slot 2 killed and replaced");
    c.mode = "replace";
    c.min = 3;
    c.kill_slot = 2;
    c.kill_step = 10;
    c.replace = true;
    c.final_nranks = 4;
    run_case(&c, 30000);
}

static void test_late_replacement(void **s)
{
    (void)s;
    struct elcase c = base("grow mode: slot 1 killed, shrink, replacement 1 s late grows back");
    c.mode = "grow";
    c.min = 3;
    c.steps = 400;
    c.kill_slot = 1;
    c.kill_step = 10;
    c.replace = true;
    c.replace_delay_ms = 1000;
    c.final_nranks = 4;
    run_case(&c, 40000);
}

static void test_joiner_beyond_max(void **s)
{
    (void)s;
    struct elcase c = base("a fifth process joins a job of max 4");
    c.steps = 300;
    c.extra_joiner = true;
    c.final_nranks = 4;
    run_case(&c, 30000);
}

static void test_wrong_job(void **s)
{
    (void)s;
    struct elcase c = base("a process with the wrong job id");
    c.steps = 300;
    c.wrong_job = true;
    c.final_nranks = 4;
    run_case(&c, 30000);
}

static void test_etcd_restart_steady(void **s)
{
    (void)s;
    if (!etcd_available())
        skip();
    struct elcase c = base("etcd killed and restarted in steady state");
    c.etcd = true;
    c.steps = 800;
    c.etcd_restart_ms = 1200;
    run_case(&c, 40000);
}

static void test_etcd_restart_in_recovery(void **s)
{
    (void)s;
    if (!etcd_available())
        skip();
    struct elcase c = base("etcd killed at a rank's death, restarted 1 s later");
    c.etcd = true;
    c.kill_slot = 3;
    c.kill_step = 200;
    c.steps = 400;
    c.etcd_in_recovery = true;
    /* A survivor whose lease lapsed while etcd was away may come back after the others formed
     * the next generation (shrink: it is then refused, clearly). */
    c.may_drop = true;
    run_case(&c, 40000);
}

static void test_proxy_killed(void **s)
{
    (void)s;
#ifndef ECCL_FAULT_ENABLED
    skip();
#else
    struct elcase c = base("slot 1's proxy thread dies: every rank recovers");
    c.fault_slot = 1;
    c.kill_step = 10;
    c.steps = 400;
    c.final_nranks = 4;
    c.min_recoveries = 1;
    run_case(&c, 30000);
#endif
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--worker") == 0)
        return worker_main();
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    snprintf(dir, sizeof(dir), "/tmp/eccl-eltest-%d", (int)getpid());
    if (mkdir(dir, 0700) != 0)
        return 1;
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    setenv("ECCL_DEVICE", "host", 0);
    /* The workers' warnings in the log: what a case that fails saw. */
    setenv("ECCL_DEBUG", "WARN", 0);
    setenv("ECCL_PROXY_HEARTBEAT_MS", "50", 0);
    setenv("ECCL_PROXY_HEARTBEAT_MISSES", "10", 0);
    setenv("ECCL_ELASTIC_LEASE_MS", "2000", 0);
    setenv("ECCL_ELASTIC_LAST_CALL_MS", "1500", 0);
    setenv("ECCL_ELASTIC_REPLACE_WAIT_MS", "5000", 0);
    setenv("ECCL_ELASTIC_RECOVER_TIMEOUT_MS", "20000", 0);
    setenv("ECCL_NCHANNELS", "1", 0);
    setenv("ECCL_ELASTIC_JOIN_TIMEOUT_MS", "5000", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_kill_matrix),
        cmocka_unit_test(test_stop_rank),
        cmocka_unit_test(test_two_killed),
        cmocka_unit_test(test_killed_during_recovery),
        cmocka_unit_test(test_late_replacement),
        cmocka_unit_test(test_joiner_beyond_max),
        cmocka_unit_test(test_wrong_job),
        cmocka_unit_test(test_etcd_restart_steady),
        cmocka_unit_test(test_etcd_restart_in_recovery),
        cmocka_unit_test(test_proxy_killed),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* e.g. test_elastic 'test_kill*' */
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(dir);
    return rc;
}

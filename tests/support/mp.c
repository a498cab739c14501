/*
 * mp.c - the multi-rank test harness: ranks as forked processes (mp_run) or threads (mt_run),
 * points where the parent can SIGKILL or SIGSTOP a rank, shared memory and a barrier.
 *
 * Point protocol: every child holds the write end of one event pipe shared by all children and
 * the read end of its own ack pipe. mp_point writes a fixed-size event (smaller than PIPE_BUF, so
 * writes from several children never interleave) and blocks reading one byte from its ack pipe;
 * the parent runs the matching actions (which may SIGKILL or SIGSTOP the child right there) and
 * then writes the byte. A stopped child finds the byte when it is continued.
 */
#include "tests/support/mp.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct mp_event {
    int32_t rank;
    int32_t pad;
    char name[MP_POINT_NAME_MAX];
};

_Static_assert(sizeof(struct mp_event) <= PIPE_BUF, "point events must be written atomically");

/* Child side: set right after the fork, in the child only. */
static int child_rank = -1;
static int child_event_fd = -1;
static int child_ack_fd = -1;
static pthread_mutex_t child_point_lock = PTHREAD_MUTEX_INITIALIZER;

/* Parent side: the run in progress (mp_run is not reentrant). */
static pid_t run_pids[MP_MAX_RANKS];
static bool run_alive[MP_MAX_RANKS];
static int run_nranks;

double mp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void mp_die_at(_Atomic uint64_t *when, int delay_ms, const char *point)
{
    if (delay_ms > 0)
        usleep((useconds_t)delay_ms * 1000);
    double now = mp_now_ms();
    uint64_t bits;
    memcpy(&bits, &now, sizeof(bits));
    atomic_store(when, bits);
    mp_point(point);
}

double mp_ms_since(const _Atomic uint64_t *when)
{
    uint64_t bits = atomic_load(when);
    double t;
    memcpy(&t, &bits, sizeof(t));
    return mp_now_ms() - t;
}

void mp_env_setup(void)
{
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    setenv("ECCL_DEVICE", "host", 0);
}

ecclResult_t mp_comm_init(ecclComm_t *comm, int nranks, const ecclUniqueId *id, int rank)
{
    ecclConfig_t config = ECCL_CONFIG_INITIALIZER;
    config.deviceKind = ECCL_DEVICE_HOST;
    return ecclCommInitRankConfig(comm, nranks, *id, rank, &config);
}

bool mp_text_has(const char *text, const char *needle)
{
    return text != NULL && strcasestr(text, needle) != NULL;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

int mp_count_fds(void)
{
    int n = count_dir("/proc/self/fd");
    return n < 0 ? -1 : n - 1; /* the directory stream's own fd */
}

int mp_count_threads(void)
{
    return count_dir("/proc/self/task");
}

/* ---- child side --------------------------------------------------------------------------- */

int mp_self_rank(void)
{
    return child_rank;
}

void mp_point(const char *name)
{
    if (child_rank < 0 || child_event_fd < 0)
        return;
    struct mp_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.rank = child_rank;
    snprintf(ev.name, sizeof(ev.name), "%s", name);
    pthread_mutex_lock(&child_point_lock);
    ssize_t w;
    do {
        w = write(child_event_fd, &ev, sizeof(ev));
    } while (w < 0 && errno == EINTR);
    if (w == (ssize_t)sizeof(ev)) {
        char ack;
        ssize_t r;
        do {
            r = read(child_ack_fd, &ack, 1);
        } while (r < 0 && errno == EINTR);
    }
    pthread_mutex_unlock(&child_point_lock);
}

static void child_reset_signals(void)
{
    /* cmocka catches these in the parent to report a crashed test; in a child its handler would
     * jump back into cmocka's runner, so a crash must just kill the child. */
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGPIPE};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
}

/* Reads exactly len bytes; false on EOF or error. */
static bool read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

static void __attribute__((noreturn))
child_main(int rank, const struct mp_opts *opts, int event_wfd, int ack_rfd, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(99);
    child_reset_signals();
    child_rank = rank;
    child_event_fd = event_wfd;
    child_ack_fd = ack_rfd;
    /* The id comes through the ack pipe once every rank is forked (see mp_run_opts). */
    ecclUniqueId id;
    if (!read_full(ack_rfd, &id, sizeof(id)))
        _exit(98);
    int ret = opts->fn(rank, opts->nranks, &id, opts->arg);
    fflush(stdout);
    fflush(stderr);
    /* _exit: the parent's atexit handlers (and threads the library started in the parent,
     * which do not exist here) are not the child's business. */
    _exit(ret == 0 ? 0 : (ret > 0 && ret < 100 ? ret : 1));
}

/* Waits (at most 2 s) until this process runs a single thread: a fork copies locks that other
 * threads hold (malloc's under the sanitizers, the library's own), and a child would deadlock
 * on them. Threads of an earlier run (a bootstrap root finishing) are usually about to exit. */
static void wait_single_threaded(void)
{
    double end = mp_now_ms() + 2000;
    while (mp_count_threads() > 1 && mp_now_ms() < end) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- parent side -------------------------------------------------------------------------- */

struct hit_count {
    int rank;
    char name[MP_POINT_NAME_MAX];
    int count;
};

#define MAX_HIT_KINDS 256

struct pending_cont {
    int rank;
    double at_ms;
};

struct run_state {
    const struct mp_opts *opts;
    struct mp_report *rep;
    struct hit_count hits[MAX_HIT_KINDS];
    int nhits;
    struct pending_cont conts[MP_MAX_RANKS];
    int nconts;
    int ack_wfd[MP_MAX_RANKS];
};

int mp_parent_signal(int rank, int sig)
{
    if (rank < 0 || rank >= run_nranks || !run_alive[rank])
        return -1;
    return kill(run_pids[rank], sig);
}

static int hit_bump(struct run_state *st, int rank, const char *name)
{
    for (int i = 0; i < st->nhits; i++) {
        if (st->hits[i].rank == rank && strcmp(st->hits[i].name, name) == 0)
            return ++st->hits[i].count;
    }
    if (st->nhits < MAX_HIT_KINDS) {
        struct hit_count *h = &st->hits[st->nhits++];
        h->rank = rank;
        snprintf(h->name, sizeof(h->name), "%s", name);
        h->count = 1;
    }
    return 1;
}

static void handle_event(struct run_state *st, const struct mp_event *ev)
{
    const struct mp_opts *o = st->opts;
    int rank = ev->rank;
    if (rank < 0 || rank >= o->nranks)
        return;
    char name[MP_POINT_NAME_MAX];
    memcpy(name, ev->name, sizeof(name));
    name[sizeof(name) - 1] = '\0';
    int hit = hit_bump(st, rank, name);
    st->rep->rank[rank].points++;
    for (int i = 0; i < o->nactions; i++) {
        const struct mp_action *a = &o->actions[i];
        int want = a->hit > 0 ? a->hit : 1;
        if (a->point == NULL || strcmp(a->point, name) != 0)
            continue;
        if ((a->rank >= 0 && a->rank != rank) || hit != want)
            continue;
        int target = a->target >= 0 ? a->target : rank;
        if (target >= o->nranks || !run_alive[target])
            continue;
        if (a->kind == MP_ACT_KILL) {
            kill(run_pids[target], SIGKILL);
            st->rep->rank[target].acted_kill = true;
        } else if (a->kind == MP_ACT_STOP) {
            kill(run_pids[target], SIGSTOP);
            st->rep->rank[target].acted_stop = true;
            if (a->cont_after_ms > 0 && st->nconts < MP_MAX_RANKS) {
                st->conts[st->nconts].rank = target;
                st->conts[st->nconts].at_ms = mp_now_ms() + a->cont_after_ms;
                st->nconts++;
            }
        }
    }
    if (o->on_point != NULL)
        o->on_point(rank, name, hit, o->on_point_arg);
    char ack = 1;
    ssize_t w;
    do {
        w = write(st->ack_wfd[rank], &ack, 1);
    } while (w < 0 && errno == EINTR);
}

static void run_conts(struct run_state *st, double now)
{
    for (int i = 0; i < st->nconts;) {
        if (st->conts[i].at_ms <= now) {
            mp_parent_signal(st->conts[i].rank, SIGCONT);
            st->conts[i] = st->conts[--st->nconts];
        } else {
            i++;
        }
    }
}

static bool cont_pending(const struct run_state *st, int rank)
{
    for (int i = 0; i < st->nconts; i++) {
        if (st->conts[i].rank == rank)
            return true;
    }
    return false;
}

static void record_exit(struct mp_rank_result *r, int status, double start_ms)
{
    r->wait_status = status;
    r->elapsed_ms = mp_now_ms() - start_ms;
    if (WIFEXITED(status)) {
        r->exited = true;
        r->exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r->term_signal = WTERMSIG(status);
    }
    r->passed = (r->exited && r->exit_code == 0) || (r->term_signal == SIGKILL && r->acted_kill);
}

static void kill_all(struct mp_report *rep, int nranks, bool at_timeout)
{
    for (int i = 0; i < nranks; i++) {
        if (!run_alive[i])
            continue;
        kill(run_pids[i], SIGKILL);
        if (at_timeout)
            rep->rank[i].killed_at_timeout = true;
        else
            rep->rank[i].killed_fail_fast = true;
    }
}

static int reap_some(struct mp_report *rep, int nranks, double start_ms, bool block)
{
    int alive = 0;
    for (int i = 0; i < nranks; i++) {
        if (!run_alive[i])
            continue;
        int status;
        pid_t p;
        do {
            p = waitpid(run_pids[i], &status, block ? 0 : WNOHANG);
        } while (p < 0 && errno == EINTR);
        if (p == run_pids[i] || (p < 0 && errno == ECHILD)) {
            run_alive[i] = false;
            if (p == run_pids[i])
                record_exit(&rep->rank[i], status, start_ms);
        } else {
            alive++;
        }
    }
    return alive;
}

const char *mp_rank_describe(const struct mp_rank_result *r, char *buf, size_t len)
{
    if (r->exited)
        snprintf(buf, len, "exit %d", r->exit_code);
    else if (r->term_signal)
        snprintf(buf, len, "signal %d (%s)%s%s%s", r->term_signal, strsignal(r->term_signal),
                 r->killed_at_timeout ? ", killed at the timeout" : "",
                 r->killed_fail_fast ? ", killed after another rank failed" : "",
                 r->acted_kill ? ", killed by an action" : "");
    else
        snprintf(buf, len, "not reaped");
    return buf;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

int mp_run_victim(int nranks, int victim, enum mp_action_kind kind, mp_rank_fn fn, void *arg,
                  int timeout_ms, struct mp_report *rep)
{
    struct mp_action act = {.point = "victim",
                            .rank = victim,
                            .hit = 1,
                            .target = victim,
                            .kind = kind,
                            .cont_after_ms = kind == MP_ACT_STOP ? 3000 : 0};
    struct mp_opts o = {.nranks = nranks,
                        .fn = fn,
                        .arg = arg,
                        .timeout_ms = timeout_ms,
                        .actions = &act,
                        .nactions = 1};
    return mp_run_opts(&o, rep);
}

double mp_max_except(const double *v, int n, int skip)
{
    double max = 0;
    for (int i = 0; i < n; i++)
        if (i != skip && v[i] > max)
            max = v[i];
    return max;
}

int mp_run_opts(const struct mp_opts *opts, struct mp_report *rep_out)
{
    struct mp_report rep_local;
    struct mp_report *rep = rep_out != NULL ? rep_out : &rep_local;
    memset(rep, 0, sizeof(*rep));
    int n = opts->nranks;
    if (n < 1 || n > MP_MAX_RANKS || opts->fn == NULL) {
        fprintf(stderr, "mp_run: bad nranks %d or no function\n", n);
        return -1;
    }
    rep->nranks = n;
    mp_env_setup();

    struct run_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -1;
    st->opts = opts;
    st->rep = rep;
    int event_fds[2] = {-1, -1};
    int ack_fds[MP_MAX_RANKS][2];
    for (int i = 0; i < n; i++) {
        ack_fds[i][0] = ack_fds[i][1] = -1;
        st->ack_wfd[i] = -1;
    }
    int ret = -1;
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_pipe;
    sigaction(SIGPIPE, &ign, &old_pipe);

    if (pipe2(event_fds, O_CLOEXEC) != 0) {
        perror("mp_run: pipe");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (pipe2(ack_fds[i], O_CLOEXEC) != 0) {
            perror("mp_run: pipe");
            goto out;
        }
    }

    fflush(stdout);
    fflush(stderr);
    wait_single_threaded();
    run_nranks = n;
    pid_t parent = getpid();
    double start_ms = mp_now_ms();
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("mp_run: fork");
            kill_all(rep, i, false);
            reap_some(rep, i, start_ms, true);
            goto out;
        }
        if (pid == 0) {
            close(event_fds[0]);
            for (int j = 0; j < n; j++) {
                close(ack_fds[j][1]);
                if (j != i)
                    close(ack_fds[j][0]);
            }
            child_main(i, opts, event_fds[1], ack_fds[i][0], parent);
        }
        run_pids[i] = pid;
        run_alive[i] = true;
        rep->rank[i].pid = pid;
    }
    close_fd(&event_fds[1]);
    for (int i = 0; i < n; i++) {
        close_fd(&ack_fds[i][0]);
        st->ack_wfd[i] = ack_fds[i][1];
        ack_fds[i][1] = -1;
    }

    /* The id is made now, after the fork: ecclGetUniqueId starts the bootstrap root thread in
     * this process, and forking with threads running is what must not happen. */
    ecclUniqueId id;
    memset(&id, 0, sizeof(id));
    if (opts->id != NULL) {
        id = *opts->id;
    } else if (!opts->no_id) {
        ecclResult_t res = ecclGetUniqueId(&id);
        if (res != ecclSuccess) {
            fprintf(stderr, "mp_run: ecclGetUniqueId failed: %s (%s)\n", ecclGetErrorString(res),
                    ecclGetLastError(NULL));
            kill_all(rep, n, false);
            reap_some(rep, n, start_ms, true);
            ret = -1;
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)&id;
        size_t left = sizeof(id);
        while (left > 0) {
            ssize_t w = write(st->ack_wfd[i], p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break; /* the child is gone: reaped below like any other failure */
            p += w;
            left -= (size_t)w;
        }
    }

    double deadline = start_ms + (opts->timeout_ms > 0 ? opts->timeout_ms : 60000);
    int alive = n;
    bool killed_fail_fast = false;
    while (alive > 0) {
        double now = mp_now_ms();
        if (now >= deadline) {
            rep->timed_out = true;
            kill_all(rep, n, true);
            reap_some(rep, n, start_ms, true);
            break;
        }
        run_conts(st, now);
        struct pollfd pfd = {.fd = event_fds[0], .events = POLLIN};
        int wait_ms = (int)(deadline - now) + 1;
        if (wait_ms > 10)
            wait_ms = 10;
        if (poll(&pfd, 1, wait_ms) > 0 && (pfd.revents & POLLIN)) {
            struct mp_event ev;
            ssize_t r = read(event_fds[0], &ev, sizeof(ev));
            if (r == (ssize_t)sizeof(ev))
                handle_event(st, &ev);
        }
        alive = reap_some(rep, n, start_ms, false);
        if (opts->fail_fast && !killed_fail_fast) {
            for (int i = 0; i < n; i++) {
                if (!run_alive[i] && rep->rank[i].pid != 0 && !rep->rank[i].passed) {
                    killed_fail_fast = true;
                    kill_all(rep, n, false);
                    break;
                }
            }
        }
        /* Ranks an action stopped for good, once everyone else is done, are killed: they were
         * meant to hang, and nobody will continue them. */
        bool only_stopped = alive > 0;
        for (int i = 0; i < n && only_stopped; i++) {
            if (run_alive[i] && (!rep->rank[i].acted_stop || cont_pending(st, i)))
                only_stopped = false;
        }
        if (only_stopped) {
            for (int i = 0; i < n; i++) {
                if (run_alive[i]) {
                    rep->rank[i].acted_kill = true;
                    kill(run_pids[i], SIGKILL);
                }
            }
            reap_some(rep, n, start_ms, true);
            alive = 0;
        }
    }

    ret = 0;
    for (int i = 0; i < n; i++) {
        if (!rep->rank[i].passed) {
            rep->failed++;
            ret = -1;
            if (!opts->quiet) {
                char buf[160];
                fprintf(stderr, "mp_run: rank %d (pid %d) failed: %s after %.0f ms\n", i,
                        (int)rep->rank[i].pid, mp_rank_describe(&rep->rank[i], buf, sizeof(buf)),
                        rep->rank[i].elapsed_ms);
            }
        }
    }
    if (rep->timed_out && !opts->quiet)
        fprintf(stderr, "mp_run: timed out after %d ms\n", opts->timeout_ms);

out:
    close_fd(&event_fds[0]);
    close_fd(&event_fds[1]);
    for (int i = 0; i < n; i++) {
        close_fd(&ack_fds[i][0]);
        close_fd(&ack_fds[i][1]);
        close_fd(&st->ack_wfd[i]);
    }
    run_nranks = 0;
    sigaction(SIGPIPE, &old_pipe, NULL);
    free(st);
    return ret;
}

int mp_run(int nranks, mp_rank_fn fn, void *arg, int timeout_ms)
{
    struct mp_opts opts = {.nranks = nranks, .fn = fn, .arg = arg, .timeout_ms = timeout_ms};
    return mp_run_opts(&opts, NULL);
}

/* ---- threads ------------------------------------------------------------------------------ */

struct mt_run_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int nranks;
    mp_rank_fn fn;
    mt_comm_fn comm_fn;
    void *arg;
    ecclUniqueId id;
    ecclComm_t comms[MP_MAX_RANKS];
    int results[MP_MAX_RANKS];
    bool finished[MP_MAX_RANKS];
};

struct mt_thread_arg {
    struct mt_run_state *st;
    int rank;
};

static void *mt_thread(void *p)
{
    struct mt_thread_arg *ta = p;
    struct mt_run_state *st = ta->st;
    int r = ta->rank;
    int res;
    if (st->comm_fn != NULL) {
        res = st->comm_fn(r, st->nranks, st->comms[r], st->arg);
        ecclResult_t d = ecclCommDestroy(st->comms[r]);
        if (d != ecclSuccess) {
            fprintf(stderr, "mt_run: rank %d: ecclCommDestroy failed: %s (%s)\n", r,
                    ecclGetErrorString(d), ecclGetLastError(NULL));
            res = res != 0 ? res : 1;
        }
    } else {
        res = st->fn(r, st->nranks, &st->id, st->arg);
    }
    pthread_mutex_lock(&st->lock);
    st->results[r] = res;
    st->finished[r] = true;
    st->done++;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

static int mt_start_and_wait(struct mt_run_state *st, int timeout_ms, int *results)
{
    int n = st->nranks;
    pthread_t threads[MP_MAX_RANKS];
    struct mt_thread_arg targs[MP_MAX_RANKS];
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->cond, &ca);
    pthread_condattr_destroy(&ca);
    int started = 0;
    for (int i = 0; i < n; i++) {
        targs[i].st = st;
        targs[i].rank = i;
        if (pthread_create(&threads[i], NULL, mt_thread, &targs[i]) != 0) {
            fprintf(stderr, "mt_run: pthread_create failed for rank %d\n", i);
            /* The ranks already started wait for a peer that never comes: no way back. */
            fflush(NULL);
            _exit(1);
        }
        started++;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    int64_t ms = timeout_ms > 0 ? timeout_ms : 60000;
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&st->lock);
    while (st->done < n) {
        int rc = pthread_cond_timedwait(&st->cond, &st->lock, &dl);
        if (rc == ETIMEDOUT && st->done < n) {
            fprintf(stderr, "mt_run: timed out after %lld ms; ranks still running:", (long long)ms);
            for (int i = 0; i < n; i++) {
                if (!st->finished[i])
                    fprintf(stderr, " %d", i);
            }
            fprintf(stderr, "\nmt_run: a thread cannot be killed: ending the test process\n");
            fflush(NULL);
            _exit(1);
        }
    }
    pthread_mutex_unlock(&st->lock);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_cond_destroy(&st->cond);
    pthread_mutex_destroy(&st->lock);
    int ret = 0;
    for (int i = 0; i < n; i++) {
        if (results != NULL)
            results[i] = st->results[i];
        if (st->results[i] != 0) {
            fprintf(stderr, "mt_run: rank %d failed (returned %d)\n", i, st->results[i]);
            ret = -1;
        }
    }
    return ret;
}

int mt_run_ex(int nranks, mp_rank_fn fn, void *arg, int timeout_ms, int *results)
{
    if (nranks < 1 || nranks > MP_MAX_RANKS || fn == NULL)
        return -1;
    mp_env_setup();
    struct mt_run_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -1;
    st->nranks = nranks;
    st->fn = fn;
    st->arg = arg;
    ecclResult_t res = ecclGetUniqueId(&st->id);
    if (res != ecclSuccess) {
        fprintf(stderr, "mt_run: ecclGetUniqueId failed: %s (%s)\n", ecclGetErrorString(res),
                ecclGetLastError(NULL));
        free(st);
        return -1;
    }
    int ret = mt_start_and_wait(st, timeout_ms, results);
    free(st);
    return ret;
}

int mt_run(int nranks, mp_rank_fn fn, void *arg, int timeout_ms)
{
    return mt_run_ex(nranks, fn, arg, timeout_ms, NULL);
}

int mt_run_comms(int nranks, mt_comm_fn fn, void *arg, int timeout_ms)
{
    if (nranks < 1 || nranks > MP_MAX_RANKS || fn == NULL)
        return -1;
    mp_env_setup();
    struct mt_run_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -1;
    st->nranks = nranks;
    st->comm_fn = fn;
    st->arg = arg;
    ecclResult_t res = ecclCommInitAll(st->comms, nranks, NULL);
    if (res != ecclSuccess) {
        fprintf(stderr, "mt_run_comms: ecclCommInitAll(%d) failed: %s (%s)\n", nranks,
                ecclGetErrorString(res), ecclGetLastError(NULL));
        free(st);
        return -1;
    }
    int ret = mt_start_and_wait(st, timeout_ms, NULL);
    free(st);
    return ret;
}

/* ---- shared memory and barrier ------------------------------------------------------------ */

void *mp_shm_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void mp_shm_free(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, size);
}

void mp_barrier_init(struct mp_barrier *b, int nranks)
{
    atomic_store(&b->arrived, 0);
    atomic_store(&b->generation, 0);
    atomic_store(&b->broken, 0);
    b->nranks = (uint32_t)nranks;
}

void mp_barrier_break(struct mp_barrier *b)
{
    atomic_store_explicit(&b->broken, 1, memory_order_release);
}

int mp_barrier_wait(struct mp_barrier *b, int timeout_ms)
{
    if (atomic_load_explicit(&b->broken, memory_order_acquire))
        return -1;
    uint32_t gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) + 1 == b->nranks) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        /* Release: everything the ranks wrote before arriving is visible after the wait. */
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_release);
        return 0;
    }
    double deadline = mp_now_ms() + timeout_ms;
    for (unsigned spin = 0;; spin++) {
        if (atomic_load_explicit(&b->generation, memory_order_acquire) != gen)
            return 0;
        if (atomic_load_explicit(&b->broken, memory_order_acquire))
            return -1;
        if (spin < 64) {
            sched_yield();
            continue;
        }
        if ((spin & 63) == 0 && mp_now_ms() > deadline) {
            mp_barrier_break(b);
            return -1;
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

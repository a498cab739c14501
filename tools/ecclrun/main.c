/*
 * main.c - ecclrun's agent: sets up the job's store (hosts the embedded one when asked to),
 * starts the workers, and runs the monitor loop until every worker's last incarnation ended.
 *
 * Signals are read through a signalfd: SIGCHLD wakes the loop as soon as a worker dies (the
 * --monitor-interval timeout is only a backstop), and SIGTERM/SIGINT/SIGHUP/SIGQUIT start the
 * shutdown. They are blocked before any thread exists (the store's threads inherit the mask) and
 * the original mask is given back to each worker. A dead worker is logged with a timestamp, its
 * member evicted from the store at once, and replaced while --max-restarts allows; the
 * replacement asks for the dead member's rank in the job's current generation.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/evlog.h"
#include "common/log.h"
#include "common/time.h"
#include "elastic/rdzv.h"
#include "store/store.h"
#include "tools/ecclrun/ecclrun.h"

/* Bounds of the store calls of one eviction, and of opening the store. */
#define EVICT_TIMEOUT_MS 2000
#define OPEN_TIMEOUT_MS  5000
/* After SIGKILL to every worker, how long to wait for them to be reaped before giving up
 * (a process stuck in the kernel); PR_SET_PDEATHSIG still kills them when ecclrun exits. */
#define REAP_TIMEOUT_MS 10000
/* How long a hosted store waits for the other nodes' members to leave once this node's workers
 * are done (torchrun's agents wait as long at their exit barrier), and how often it looks. */
#define LINGER_TIMEOUT_MS 300000
#define LINGER_POLL_MS    200

static uint64_t start_ns;

/* Seconds since ecclrun started, for log lines ("+3.214 s"). */
static double ecclrun_elapsed_s(void)
{
    return (double)(eccl_now_ns() - start_ns) / 1e9;
}

struct agent {
    struct ecclrun_opts o;
    struct ecclrun_launch *launch;
    struct ecclrun_slot *slots;
    struct store_server *srv;        /* the embedded store, when this ecclrun hosts it */
    struct store *store;             /* client for evictions (opened at start or on first need) */
    struct ecclrun_metrics *metrics; /* --metrics-port (NULL: off) */
    sigset_t child_mask;             /* the signal mask ecclrun started with */
    int sfd;
    int running;
    int restarts_used;
    int first_fail;   /* exit code of the first worker that failed for good (0: none) */
    int shutdown_sig; /* the signal that stopped ecclrun (0: none) */
    bool stopping;    /* no more restarts: a signal came, or a worker could not be started */
    uint64_t kill_at_ns;
    uint64_t killed_at_ns; /* 0: SIGKILL not sent */
};

static const char *last_error(void)
{
    const char *e = eccl_log_last_error();
    return e[0] ? e : "unknown error (ECCL_DEBUG=WARN shows more)";
}

/* An event of the agent in ECCL_EVENT_LOG (docs/observability.md): the common fields, then
 * `fmt`'s (each starting with a comma). */
static void agent_event(const struct agent *a, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void agent_event(const struct agent *a, const char *event, const char *fmt, ...)
{
    if (!eccl_evlog_enabled())
        return;
    char extra[1024] = "", job[2 * EL_RDZV_MAX_JOB + 8];
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(extra, sizeof(extra), fmt, ap);
        va_end(ap);
    }
    eccl_evlog_emit(event, ",\"role\":\"agent\",\"node\":%d,\"job\":\"%s\"%s", a->o.node_rank,
                    eccl_evlog_str(job, sizeof(job), a->o.job), extra);
}

/* ---- the store ---- */

/* Whether `host` is an IPv4 or IPv6 address (not a name). */
static bool inet_pton_any(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* The address the hosted store listens on: the endpoint's host when it is an IP address, the
 * loopback for "localhost", every interface for a name (a pod's DNS name resolves to it). */
static void listen_addr(const struct ecclrun_opts *o, char *out, size_t size)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, o->tcp_host, buf) == 1)
        snprintf(out, size, "%s:%d", o->tcp_host, o->tcp_port);
    else if (inet_pton(AF_INET6, o->tcp_host, buf) == 1)
        snprintf(out, size, "[%s]:%d", o->tcp_host, o->tcp_port);
    else if (!strcmp(o->tcp_host, "localhost"))
        snprintf(out, size, "127.0.0.1:%d", o->tcp_port);
    else
        snprintf(out, size, "0.0.0.0:%d", o->tcp_port);
}

static int store_setup(struct agent *a)
{
    struct ecclrun_opts *o = &a->o;
    int port = 0;
    if (o->store_kind == ECCLRUN_STORE_EMBEDDED) {
        if (store_server_start("127.0.0.1:0", &a->srv, &port) != ecclSuccess) {
            fprintf(stderr, "ecclrun: cannot start the embedded store: %s\n", last_error());
            return ECCLRUN_EXIT_FAILED;
        }
        snprintf(o->store_url, sizeof(o->store_url), "tcp://127.0.0.1:%d%s", port, o->store_path);
        fprintf(stderr, "ecclrun: embedded store at %s\n", o->store_url);
    } else if (o->store_kind == ECCLRUN_STORE_TCP && (o->rdzv_host || o->rdzv_host_auto)) {
        char listen[300];
        listen_addr(o, listen, sizeof(listen));
        if (store_server_start(listen, &a->srv, &port) != ecclSuccess) {
            if (o->rdzv_host) {
                fprintf(stderr, "ecclrun: --rdzv-host: cannot host the store on %s: %s\n", listen,
                        last_error());
                return ECCLRUN_EXIT_FAILED;
            }
            fprintf(stderr,
                    "ecclrun: the endpoint's host is this host, but the store cannot be hosted "
                    "on %s (%s): using %s as a client\n",
                    listen, last_error(), o->store_url);
            a->srv = NULL;
        } else {
            if (o->tcp_port == 0) {
                bool v6 = strchr(o->tcp_host, ':') != NULL;
                snprintf(o->store_url, sizeof(o->store_url), "tcp://%s%s%s:%d%s", v6 ? "[" : "",
                         o->tcp_host, v6 ? "]" : "", port, o->store_path);
            }
            fprintf(stderr, "ecclrun: hosting the job's store on %s (port %d): %s\n", listen, port,
                    o->store_url);
        }
    }
    if (!a->srv)
        return ECCLRUN_EXIT_OK;
    /* Its own client goes to the address it listens on (the loopback when that is every
     * interface), not through the name the workers use, which need not resolve here. */
    char local[ECCLRUN_MAX_URL];
    if (o->store_kind == ECCLRUN_STORE_TCP && !inet_pton_any(o->tcp_host))
        snprintf(local, sizeof(local), "tcp://127.0.0.1:%d%s", port, o->store_path);
    else
        snprintf(local, sizeof(local), "%s", o->store_url);
    if (store_open(local, eccl_deadline_ms(OPEN_TIMEOUT_MS), &a->store) != ecclSuccess) {
        fprintf(stderr, "ecclrun: cannot open the store it hosts (%s): %s\n", local, last_error());
        return ECCLRUN_EXIT_FAILED;
    }
    return ECCLRUN_EXIT_OK;
}

/* The store for evictions; a remote one is opened when first needed (NULL when unreachable: the
 * member's lease then expires by itself). */
static struct store *get_store(struct agent *a)
{
    if (!a->store &&
        store_open(a->o.store_url, eccl_deadline_ms(EVICT_TIMEOUT_MS), &a->store) != ecclSuccess) {
        fprintf(stderr, "ecclrun: cannot reach the store %s: %s\n", a->o.store_url, last_error());
        a->store = NULL;
    }
    return a->store;
}

/* Evicts the slot's member from the store and returns the rank its replacement asks for: the
 * member's rank in the job's current generation, else the slot's RANK. */
static int evict(struct agent *a, const struct ecclrun_slot *s)
{
    int rank = s->rank;
    struct store *st = get_store(a);
    if (!st) {
        fprintf(stderr, "ecclrun: member %s not evicted: its lease expires by itself\n", s->member);
        return rank;
    }
    uint64_t dl = eccl_deadline_ms(EVICT_TIMEOUT_MS);
    int64_t gen = 0, cur_gen = 0;
    int gen_rank = -1;
    if (el_rdzv_member_rank(st, a->o.job, s->member, dl, &cur_gen, &gen_rank) == ecclSuccess &&
        gen_rank >= 0) {
        rank = gen_rank;
        gen = cur_gen;
    }
    ecclResult_t res = el_rdzv_evict(st, a->o.job, s->member, dl);
    char esc[2 * EL_RDZV_MAX_ID + 8];
    eccl_evlog_str(esc, sizeof(esc), s->member);
    if (res == ecclSuccess)
        agent_event(a, "evict",
                    ",\"member\":\"%s\",\"launch_rank\":%d,\"generation\":%" PRId64 ",\"rank\":%d",
                    esc, s->rank, gen, gen > 0 ? rank : -1);
    if (res == ecclSuccess && gen > 0)
        fprintf(stderr,
                "ecclrun: evicted member %s (rank %d of generation %" PRId64 ") at +%.3f s\n",
                s->member, rank, gen, ecclrun_elapsed_s());
    else if (res == ecclSuccess)
        fprintf(stderr, "ecclrun: evicted member %s (in no generation yet) at +%.3f s\n", s->member,
                ecclrun_elapsed_s());
    else if (res == ecclInvalidUsage)
        fprintf(stderr, "ecclrun: member %s is not registered in job %s: nothing to evict\n",
                s->member, a->o.job);
    else
        fprintf(stderr, "ecclrun: could not evict member %s: %s (its lease expires by itself)\n",
                s->member, last_error());
    return rank;
}

/* ---- workers ---- */

/* Signals a worker's process group (the worker and what it started), or the worker alone if it
 * moved to another group. */
static void signal_worker(pid_t pid, int sig)
{
    if (kill(-pid, sig) != 0 && errno == ESRCH)
        kill(pid, sig);
}

static int start_slot(struct agent *a, struct ecclrun_slot *s, int replace_rank)
{
    ecclrun_member_id(a->launch, s->local_rank, s->incarnation, s->member, sizeof(s->member));
    s->metrics_file[0] = 0;
    if (a->metrics && ecclrun_metrics_page(a->metrics, s->local_rank, s->incarnation,
                                           s->metrics_file, sizeof(s->metrics_file)) != ecclSuccess)
        s->metrics_file[0] = 0; /* this worker's numbers are missing; the job goes on */
    int exec_errno = 0;
    if (ecclrun_worker_start(a->launch, &a->o, s, replace_rank, &a->child_mask, &exec_errno) !=
        ecclSuccess)
        return -1;
    s->exec_failed = exec_errno != 0;
    a->running++;
    ecclrun_metrics_worker_started(a->metrics, s->local_rank, s->pid, s->incarnation > 0);
    char esc[2 * EL_RDZV_MAX_ID + 8];
    eccl_evlog_str(esc, sizeof(esc), s->member);
    agent_event(a, "worker_start",
                ",\"launch_rank\":%d,\"local_rank\":%d,\"worker_pid\":%d,\"member\":\"%s\","
                "\"restart\":%d,\"replace_rank\":%d",
                s->rank, s->local_rank, (int)s->pid, esc, s->incarnation, replace_rank);
    if (s->incarnation > 0)
        fprintf(stderr,
                "ecclrun: worker %d restarted (replacement %d of %d): pid %d, rank %d, member %s, "
                "asks for rank %d, at +%.3f s\n",
                s->local_rank, a->restarts_used, a->o.max_restarts, (int)s->pid, s->rank, s->member,
                replace_rank, ecclrun_elapsed_s());
    else
        fprintf(stderr, "ecclrun: worker %d started: pid %d, rank %d, member %s\n", s->local_rank,
                (int)s->pid, s->rank, s->member);
    return 0;
}

static int status_code(int st, char *what, size_t size)
{
    if (WIFEXITED(st)) {
        snprintf(what, size, "exit code %d", WEXITSTATUS(st));
        return WEXITSTATUS(st);
    }
    int sig = WTERMSIG(st);
    const char *name = strsignal(sig);
    snprintf(what, size, "signal %d (%s)%s", sig, name ? name : "?",
             WCOREDUMP(st) ? ", core dumped" : "");
    return 128 + sig;
}

static void slot_final(struct agent *a, struct ecclrun_slot *s, int code)
{
    s->done = true;
    s->final_code = code;
    if (code != 0 && a->first_fail == 0)
        a->first_fail = code;
}

static void on_worker_exit(struct agent *a, struct ecclrun_slot *s, int st)
{
    pid_t pid = s->pid;
    s->pid = 0;
    a->running--;
    /* What the worker started in its group dies with it: no orphans. */
    if (kill(-pid, 0) == 0) {
        fprintf(stderr, "ecclrun: worker %d: killing what is left of its process group %d\n",
                s->local_rank, (int)pid);
        kill(-pid, SIGKILL);
    }
    char what[96];
    int code = status_code(st, what, sizeof(what));
    int64_t last_gen =
        ecclrun_metrics_worker_exited(a->metrics, s->local_rank, code != 0, WIFSIGNALED(st));
    char gen_field[48] = ""; /* known with --metrics-port: from the worker's counter page */
    if (last_gen > 0)
        snprintf(gen_field, sizeof(gen_field), ",\"generation\":%" PRId64, last_gen);
    char esc[2 * EL_RDZV_MAX_ID + 8];
    eccl_evlog_str(esc, sizeof(esc), s->member);
    if (code != 0)
        agent_event(a, "failure_seen",
                    ",\"cause\":\"%s\",\"launch_rank\":%d,\"local_rank\":%d,"
                    "\"worker_pid\":%d,\"member\":\"%s\",\"status\":%d%s",
                    WIFSIGNALED(st) ? "rank_signal" : "rank_exit", s->rank, s->local_rank, (int)pid,
                    esc, code, gen_field);
    else
        agent_event(a, "worker_exit", ",\"launch_rank\":%d,\"local_rank\":%d,\"worker_pid\":%d",
                    s->rank, s->local_rank, (int)pid);
    if (code == 0) {
        fprintf(stderr, "ecclrun: worker %d (pid %d, member %s) finished at +%.3f s\n",
                s->local_rank, (int)pid, s->member, ecclrun_elapsed_s());
        slot_final(a, s, 0);
        return;
    }
    fprintf(stderr, "ecclrun: worker %d (pid %d, member %s) died: %s at +%.3f s\n", s->local_rank,
            (int)pid, s->member, what, ecclrun_elapsed_s());
    int replace_rank = evict(a, s);
    if (a->stopping) {
        slot_final(a, s, code);
        return;
    }
    if (s->exec_failed) {
        fprintf(stderr, "ecclrun: worker %d is not restarted: its program could not be executed\n",
                s->local_rank);
        slot_final(a, s, code);
        return;
    }
    if (a->restarts_used >= a->o.max_restarts) {
        fprintf(stderr, "ecclrun: worker %d is not restarted: %d of --max-restarts %d used\n",
                s->local_rank, a->restarts_used, a->o.max_restarts);
        slot_final(a, s, code);
        return;
    }
    a->restarts_used++;
    s->incarnation++;
    if (start_slot(a, s, replace_rank) != 0)
        slot_final(a, s, ECCLRUN_EXIT_FAILED);
}

static struct ecclrun_slot *find_slot(struct agent *a, pid_t pid)
{
    for (int i = 0; i < a->o.nproc; i++)
        if (a->slots[i].pid == pid)
            return &a->slots[i];
    return NULL;
}

/* Reaps every child that ended: workers are handled, anything else (an orphan given to ecclrun
 * when it runs as pid 1 in a container) is just reaped. */
static void reap(struct agent *a)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0)
            return;
        struct ecclrun_slot *s = find_slot(a, pid);
        if (s)
            on_worker_exit(a, s, st);
    }
}

static void kill_all(struct agent *a, const char *why)
{
    fprintf(stderr, "ecclrun: %s: SIGKILL to %d worker%s at +%.3f s\n", why, a->running,
            a->running == 1 ? "" : "s", ecclrun_elapsed_s());
    for (int i = 0; i < a->o.nproc; i++)
        if (a->slots[i].pid > 0)
            signal_worker(a->slots[i].pid, SIGKILL);
    a->killed_at_ns = eccl_now_ns();
}

static void begin_shutdown(struct agent *a, int sig)
{
    a->shutdown_sig = sig;
    a->stopping = true;
    const char *name = sigabbrev_np(sig);
    fprintf(stderr,
            "ecclrun: got SIG%s at +%.3f s: forwarding it to %d worker%s (SIGKILL after %.1f s)\n",
            name ? name : "?", ecclrun_elapsed_s(), a->running, a->running == 1 ? "" : "s",
            (double)a->o.grace_ns / 1e9);
    for (int i = 0; i < a->o.nproc; i++)
        if (a->slots[i].pid > 0)
            signal_worker(a->slots[i].pid, sig);
    a->kill_at_ns = eccl_now_ns() + a->o.grace_ns;
}

static void read_signals(struct agent *a)
{
    struct signalfd_siginfo si;
    while (read(a->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD)
            continue;
        if (!a->stopping)
            begin_shutdown(a, sig);
        else if (!a->killed_at_ns)
            kill_all(a, "second signal");
    }
}

static void monitor(struct agent *a)
{
    while (a->running > 0) {
        uint64_t now = eccl_now_ns();
        uint64_t wait_ns = a->o.monitor_ns;
        if (a->stopping && !a->killed_at_ns)
            wait_ns = a->kill_at_ns > now ? ECCL_MIN(wait_ns, a->kill_at_ns - now) : 0;
        struct pollfd p = {.fd = a->sfd, .events = POLLIN};
        poll(&p, 1, (int)ECCL_DIV_UP(wait_ns, ECCL_NS_PER_MS));
        read_signals(a);
        reap(a);
        if (a->running > 0 && a->stopping && !a->killed_at_ns && eccl_now_ns() >= a->kill_at_ns)
            kill_all(a, "grace period over");
        if (a->running > 0 && a->killed_at_ns &&
            eccl_now_ns() > a->killed_at_ns + REAP_TIMEOUT_MS * ECCL_NS_PER_MS) {
            fprintf(stderr, "ecclrun: %d worker%s not gone %d s after SIGKILL: giving up\n",
                    a->running, a->running == 1 ? "" : "s", REAP_TIMEOUT_MS / 1000);
            return;
        }
    }
}

/* Members of the job still registered in the store (-1 when the store cannot say). */
static int64_t members_left(struct agent *a)
{
    int64_t n = 0;
    if (el_rdzv_member_count(a->store, a->o.job, 1, eccl_deadline_ms(EVICT_TIMEOUT_MS), &n) !=
        ecclSuccess)
        return -1;
    return n;
}

/* The store this ecclrun hosts outlives its own workers while members of other nodes are still
 * registered (their leases keep the keys), at most LINGER_TIMEOUT_MS, or until a signal: other
 * nodes would otherwise lose the job's store under their running workers. */
static void linger(struct agent *a)
{
    if (!a->srv || !a->store || a->o.nnodes_max <= 1 || a->stopping || members_left(a) == 0)
        return;
    fprintf(stderr,
            "ecclrun: keeping the job's store up until the other nodes' members leave (at most "
            "%d s)\n",
            LINGER_TIMEOUT_MS / 1000);
    uint64_t dl = eccl_deadline_ms(LINGER_TIMEOUT_MS);
    while (!eccl_deadline_passed(dl)) {
        struct pollfd p = {.fd = a->sfd, .events = POLLIN};
        poll(&p, 1, LINGER_POLL_MS);
        read_signals(a);
        reap(a);
        if (a->stopping)
            return;
        if (members_left(a) == 0) {
            fprintf(stderr, "ecclrun: no member left in job %s at +%.3f s\n", a->o.job,
                    ecclrun_elapsed_s());
            return;
        }
    }
    fprintf(stderr, "ecclrun: members still registered after %d s: stopping the store anyway\n",
            LINGER_TIMEOUT_MS / 1000);
}

static int run(struct agent *a)
{
    int rc = store_setup(a);
    if (rc != ECCLRUN_EXIT_OK)
        return rc;
    const struct ecclrun_opts *o = &a->o;
    fprintf(stderr,
            "ecclrun: job %s, node %d of %d:%d, %d worker%s, store %s, mode %s, max restarts %d\n",
            o->job, o->node_rank, o->nnodes_min, o->nnodes_max, o->nproc, o->nproc == 1 ? "" : "s",
            o->store_url, ecclrun_mode_name(o->mode), o->max_restarts);
    if (o->metrics_port > 0 && ecclrun_metrics_start(o, &a->metrics) != ecclSuccess)
        return ECCLRUN_EXIT_FAILED;
    ecclrun_metrics_set_running(a->metrics, true);
    agent_event(a, "join", ",\"nproc\":%d,\"min_nodes\":%d,\"max_nodes\":%d", o->nproc,
                o->nnodes_min, o->nnodes_max);
    for (int i = 0; i < o->nproc; i++) {
        struct ecclrun_slot *s = &a->slots[i];
        s->local_rank = i;
        s->rank = o->node_rank * o->nproc + i;
        if (start_slot(a, s, -1) != 0) {
            a->first_fail = ECCLRUN_EXIT_FAILED;
            a->stopping = true;
            kill_all(a, "a worker could not be started");
            break;
        }
    }
    monitor(a);
    linger(a);
    ecclrun_metrics_set_running(a->metrics, false);
    if (a->shutdown_sig)
        rc = 128 + a->shutdown_sig;
    else
        rc = a->first_fail;
    agent_event(a, "exit", ",\"status\":%d", rc);
    fprintf(stderr, "ecclrun: done at +%.3f s, exit status %d\n", ecclrun_elapsed_s(), rc);
    return rc;
}

int main(int argc, char **argv)
{
    start_ns = eccl_now_ns();
    struct agent a;
    memset(&a, 0, sizeof(a));
    a.sfd = -1;
    enum ecclrun_parse_result pr = ecclrun_args_parse(argc, argv, &a.o);
    if (pr == ECCLRUN_PARSE_HELP)
        return ECCLRUN_EXIT_OK;
    if (pr != ECCLRUN_PARSE_OK)
        return ECCLRUN_EXIT_USAGE;

    /* Before any thread exists, so that every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, &a.child_mask);
    a.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (a.sfd < 0) {
        fprintf(stderr, "ecclrun: signalfd: %s\n", strerror(errno));
        return ECCLRUN_EXIT_FAILED;
    }

    int rc = ECCLRUN_EXIT_FAILED;
    if (ecclrun_launch_create(&a.o, &a.launch) != ecclSuccess) {
        rc = ECCLRUN_EXIT_NOTFOUND;
        goto out_close_sfd;
    }
    a.slots = eccl_calloc((size_t)a.o.nproc, sizeof(*a.slots), "ecclrun_slots");
    if (!a.slots) {
        fprintf(stderr, "ecclrun: out of memory\n");
        goto out_destroy_launch;
    }
    rc = run(&a);
    ecclrun_metrics_stop(a.metrics);
    store_close(a.store);
    store_server_stop(a.srv);
    eccl_free(a.slots);
out_destroy_launch:
    ecclrun_launch_destroy(a.launch);
out_close_sfd:
    close(a.sfd);
    return rc;
}

/*
 * metrics.c - what an operator sees of an ecclrun agent: a small HTTP/1.1 server on a thread of
 * its own (--metrics-port) with /metrics (Prometheus text format 0.0.4), /healthz and /readyz.
 *
 * The numbers come from two places: the agent's monitor loop (workers alive, deaths and their
 * causes, restarts), reported through the ecclrun_metrics_* calls under `lock`; and each worker's
 * counter page (common/stats.h), a small file that ecclrun creates for every incarnation and
 * names in the worker's ECCL_METRICS_FILE: bytes per collective kind, generation, members,
 * readiness, failures seen and recoveries done. The server thread reads the pages every
 * SAMPLE_MS and at each scrape, and trusts nothing in them: the header is checked, gauges are
 * range-checked and counters only ever go up. A dead incarnation's bytes are folded into its
 * slot's total before its file is removed, so the counters survive replacements.
 *
 * The server serves one connection at a time. A request is read within REQ_TIMEOUT_MS and
 * MAX_REQ bytes; anything that is not "GET <path> HTTP/1.x" gets 400 (405 for another method),
 * and the connection is closed after each answer. Nothing a client sends can stop the server.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/stats.h"
#include "common/time.h"
#include "tools/ecclrun/ecclrun.h"

#define SAMPLE_MS      100   /* how often the pages are read between scrapes */
#define REQ_TIMEOUT_MS 2000  /* to receive a request, and again to send the answer */
#define MAX_REQ        8192  /* request line and headers */
#define MAX_BODY       32768 /* the /metrics text */

/* Recovery-time histogram buckets, seconds (10 ms .. 60 s). */
static const double buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

/* Agent-side causes, after the worker-side ones of stats.h. */
enum { CAUSE_RANK_EXIT = ECCL_STATS_CAUSE_COUNT, CAUSE_RANK_SIGNAL, CAUSE_COUNT };

struct mslot {
    pid_t pid;                       /* 0: no worker running */
    char path[ECCLRUN_MAX_PATH];     /* the current incarnation's page ("": none) */
    uint64_t base[ECCL_STATS_KINDS]; /* bytes of the slot's dead incarnations */
    uint64_t cur[ECCL_STATS_KINDS];  /* last bytes read from the current page */
    uint64_t seen_failures;          /* of the current page */
    bool page_ok;                    /* the last read found a valid page */
    int64_t generation, nranks;      /* from the last valid read */
    uint32_t state;
    uint32_t cause;
    int64_t recovered_gen;
    uint64_t recoveries, last_recovery_ns;
};

struct ecclrun_metrics {
    int listen_fd;
    int wake[2];
    pthread_t thread;
    bool started;
    char dir[ECCLRUN_MAX_PATH - 64]; /* holds the pages */
    int nslots;
    pthread_mutex_t lock; /* everything below */
    struct mslot *slots;
    bool loop_running;
    int restarts;
    int cause;                /* last failure cause (ECCL_STATS_CAUSE_NONE: none yet) */
    bool episode_open;        /* a failure is being recovered from: its first cause stands */
    bool episode_death;       /* ... and that cause is a local worker's death */
    int64_t episode_gen;      /* the generation it broke */
    int64_t last_counted_gen; /* newest generation a recovery was counted for */
    uint64_t recoveries;
    double recovery_sum;
    uint64_t bucket_count[NBUCKETS];
    char body[MAX_BODY];
};

static const char *cause_name(int c)
{
    if (c == CAUSE_RANK_EXIT)
        return "rank_exit";
    if (c == CAUSE_RANK_SIGNAL)
        return "rank_signal";
    return eccl_stats_cause_name(c);
}

/* ---- the pages ---------------------------------------------------------------------------- */

/* Opens a failure episode with `cause`, unless one is open: the first cause of a failure is the
 * one reported, not the echoes that the other workers see of it. A local worker's death seen by
 * the agent (`death`) is the root cause, and replaces what a surviving worker reported first
 * (its peer's connection closing is often noticed before the agent reaps the dead one).
 * m->lock held. */
static void episode_open(struct ecclrun_metrics *m, int cause, bool death)
{
    if (m->episode_open && (!death || m->episode_death))
        return;
    m->episode_death = death;
    m->cause = cause;
    if (m->episode_open)
        return; /* same episode: its generation stands */
    m->episode_open = true;
    m->episode_gen = 0;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i].generation > m->episode_gen)
            m->episode_gen = m->slots[i].generation;
}

/* Reads slot s's page into s (m->lock held). A page that is missing, short or not ours leaves
 * page_ok false; values out of range are ignored. */
static void read_page(struct ecclrun_metrics *m, struct mslot *s)
{
    s->page_ok = false;
    if (!s->path[0])
        return;
    struct eccl_stats_page pg;
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = pread(fd, &pg, sizeof(pg), 0);
    close(fd);
    if (n != (ssize_t)sizeof(pg) || pg.magic != ECCL_STATS_MAGIC ||
        pg.version != ECCL_STATS_VERSION || pg.size != sizeof(pg))
        return;
    s->page_ok = true;
    for (int k = 0; k < ECCL_STATS_KINDS; k++) {
        uint64_t v = atomic_load_explicit(&pg.bytes[k], memory_order_relaxed);
        if (v > s->cur[k]) /* counters never go down, whatever the file says */
            s->cur[k] = v;
    }
    int64_t gen = atomic_load_explicit(&pg.generation, memory_order_relaxed);
    int64_t nr = atomic_load_explicit(&pg.nranks, memory_order_relaxed);
    uint32_t st = atomic_load_explicit(&pg.state, memory_order_relaxed);
    uint32_t cause = atomic_load_explicit(&pg.cause, memory_order_relaxed);
    uint64_t fails = atomic_load_explicit(&pg.failures, memory_order_relaxed);
    uint64_t recs = atomic_load_explicit(&pg.recoveries, memory_order_relaxed);
    uint64_t rec_ns = atomic_load_explicit(&pg.last_recovery_ns, memory_order_relaxed);
    int64_t rec_gen = atomic_load_explicit(&pg.recovered_gen, memory_order_relaxed);
    s->generation = gen >= 0 ? gen : 0;
    s->nranks = nr >= 0 && nr <= EL_RDZV_MAX_MEMBERS ? nr : 0;
    s->state = st < ECCL_STATS_STATE_COUNT ? st : ECCL_STATS_STATE_NONE;
    if (fails > s->seen_failures) {
        s->seen_failures = fails;
        if (cause > ECCL_STATS_CAUSE_NONE && cause < ECCL_STATS_CAUSE_COUNT)
            episode_open(m, (int)cause, false);
    }
    /* One recovery of the job per generation, however many local workers report it. The
     * fields are not read atomically together: a count seen before its generation is taken at a
     * later read (s->recoveries moves only when a recovery is counted). */
    if (recs > s->recoveries && rec_gen > m->last_counted_gen && rec_gen <= s->generation) {
        s->recoveries = recs;
        if (rec_ns < 3600ULL * ECCL_NS_PER_S) {
            m->last_counted_gen = rec_gen;
            double sec = (double)rec_ns / 1e9;
            m->recoveries++;
            m->recovery_sum += sec;
            for (size_t b = 0; b < NBUCKETS; b++)
                if (sec <= buckets[b])
                    m->bucket_count[b]++;
        }
    }
}

/* Reads every page; a new generation ends the failure episode (m->lock held). */
static void sample(struct ecclrun_metrics *m)
{
    for (int i = 0; i < m->nslots; i++) {
        read_page(m, &m->slots[i]);
        if (m->episode_open && m->slots[i].page_ok && m->slots[i].generation > m->episode_gen &&
            m->slots[i].state == ECCL_STATS_STATE_READY)
            m->episode_open = false;
    }
}

static bool ready(const struct ecclrun_metrics *m)
{
    if (!m->loop_running)
        return false;
    int live = 0;
    for (int i = 0; i < m->nslots; i++) {
        const struct mslot *s = &m->slots[i];
        if (!s->pid)
            continue;
        live++;
        if (!s->page_ok || s->state != ECCL_STATS_STATE_READY)
            return false;
    }
    return live > 0;
}

/* ---- /metrics ----------------------------------------------------------------------------- */

struct text {
    char *buf;
    size_t len, cap;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
    if (t->len >= t->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len = n < 0 ? t->cap : ECCL_MIN(t->cap, t->len + (size_t)n);
}

static void head(struct text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The /metrics text into m->body (m->lock held); its length. */
static size_t render(struct ecclrun_metrics *m)
{
    struct text t = {m->body, 0, sizeof(m->body)};
    int64_t gen = 0, members = 0;
    int alive = 0;
    uint64_t bytes[ECCL_STATS_KINDS] = {0};
    for (int i = 0; i < m->nslots; i++) {
        const struct mslot *s = &m->slots[i];
        if (s->pid)
            alive++;
        if (s->pid && s->page_ok && s->generation > gen &&
            (s->state == ECCL_STATS_STATE_READY || s->state == ECCL_STATS_STATE_RECOVERING)) {
            gen = s->generation;
            members = s->nranks;
        }
        for (int k = 0; k < ECCL_STATS_KINDS; k++)
            bytes[k] += s->base[k] + s->cur[k];
    }
    head(&t, "eccl_members", "gauge", "Members (ranks) of the current generation.");
    put(&t, "eccl_members %" PRId64 "\n", members);
    head(&t, "eccl_generation", "gauge", "Number of the current generation (0: none yet).");
    put(&t, "eccl_generation %" PRId64 "\n", gen);
    head(&t, "eccl_recoveries_total", "counter",
         "Recoveries completed (failure seen to first step of the new generation).");
    put(&t, "eccl_recoveries_total %" PRIu64 "\n", m->recoveries);
    head(&t, "eccl_recovery_seconds", "histogram",
         "Time from a failure seen to the first step of the next generation.");
    for (size_t b = 0; b < NBUCKETS; b++)
        put(&t, "eccl_recovery_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", buckets[b],
            m->bucket_count[b]);
    put(&t, "eccl_recovery_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", m->recoveries);
    put(&t, "eccl_recovery_seconds_sum %.6f\n", m->recovery_sum);
    put(&t, "eccl_recovery_seconds_count %" PRIu64 "\n", m->recoveries);
    head(&t, "eccl_last_failure_info", "gauge",
         "Cause of the last failure seen by this node (none: no failure yet).");
    put(&t, "eccl_last_failure_info{cause=\"%s\"} 1\n", cause_name(m->cause));
    head(&t, "eccl_local_workers", "gauge", "Workers of this agent that are running.");
    put(&t, "eccl_local_workers %d\n", alive);
    head(&t, "eccl_restarts_total", "counter", "Replacement workers started by this agent.");
    put(&t, "eccl_restarts_total %d\n", m->restarts);
    head(&t, "eccl_ready", "gauge", "1 when /readyz answers 200.");
    put(&t, "eccl_ready %d\n", ready(m) ? 1 : 0);
    head(&t, "eccl_bytes_total", "counter",
         "Bytes of the collectives called by this agent's workers, per kind.");
    for (int k = 0; k < ECCL_STATS_KINDS; k++)
        put(&t, "eccl_bytes_total{kind=\"%s\"} %" PRIu64 "\n", eccl_stats_kind_name(k), bytes[k]);
    return t.len;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

static void send_all(int fd, const char *buf, size_t len, uint64_t dl)
{
    while (len > 0 && !eccl_deadline_passed(dl)) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 50);
    }
}

static void respond(int fd, int code, const char *reason, const char *type, const char *body,
                    size_t len, const char *extra)
{
    char hdr[512];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     code, reason, type, len, extra ? extra : "");
    uint64_t dl = eccl_deadline_ms(REQ_TIMEOUT_MS);
    send_all(fd, hdr, (size_t)n, dl);
    send_all(fd, body, len, dl);
}

static void respond_text(int fd, int code, const char *reason, const char *msg, const char *extra)
{
    respond(fd, code, reason, "text/plain; charset=utf-8", msg, strlen(msg), extra);
}

/* Reads one request head (up to the blank line) into buf; its length, 0 on timeout or EOF,
 * -1 when MAX_REQ bytes came without one. */
static ssize_t read_request(int fd, char *buf)
{
    uint64_t dl = eccl_deadline_ms(REQ_TIMEOUT_MS);
    size_t len = 0;
    while (!eccl_deadline_passed(dl)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + len, MAX_REQ - len, MSG_DONTWAIT);
        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            return 0;
        }
        len += (size_t)r;
        buf[len] = 0;
        if (memmem(buf, len, "\r\n\r\n", 4) || memmem(buf, len, "\n\n", 2))
            return (ssize_t)len;
        if (len >= MAX_REQ)
            return -1;
    }
    return 0;
}

static void handle(struct ecclrun_metrics *m, int fd)
{
    char *req = eccl_calloc(MAX_REQ + 1, 1, "ecclrun_http");
    if (!req)
        return;
    ssize_t n = read_request(fd, req);
    if (n < 0) {
        respond_text(fd, 400, "Bad Request", "request head too large\n", NULL);
        goto out;
    }
    if (n == 0)
        goto out; /* timed out or closed: nothing to answer */
    /* The request line: METHOD SP TARGET SP HTTP/1.x */
    size_t line_len = strcspn(req, "\r\n");
    req[line_len] = 0;
    char *method = req, *sp1 = strchr(req, ' ');
    char *target = sp1 ? sp1 + 1 : NULL, *sp2 = target ? strchr(target, ' ') : NULL;
    char *version = sp2 ? sp2 + 1 : NULL;
    if (!sp1 || !sp2 || sp1 == method || sp2 == target || strchr(version, ' ') ||
        strncmp(version, "HTTP/1.", 7) || !version[7] || version[8] || target[0] != '/') {
        respond_text(fd, 400, "Bad Request", "bad request line\n", NULL);
        goto out;
    }
    *sp1 = 0;
    *sp2 = 0;
    for (const char *c = method; *c; c++)
        if (*c < 'A' || *c > 'Z') {
            respond_text(fd, 400, "Bad Request", "bad method\n", NULL);
            goto out;
        }
    for (const char *c = target; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f) {
            respond_text(fd, 400, "Bad Request", "bad target\n", NULL);
            goto out;
        }
    target[strcspn(target, "?#")] = 0;
    bool known =
        !strcmp(target, "/metrics") || !strcmp(target, "/healthz") || !strcmp(target, "/readyz");
    if (!known) {
        respond_text(fd, 404, "Not Found", "not found: try /metrics, /healthz or /readyz\n", NULL);
        goto out;
    }
    if (strcmp(method, "GET")) {
        respond_text(fd, 405, "Method Not Allowed", "only GET\n", "Allow: GET\r\n");
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    sample(m);
    if (!strcmp(target, "/metrics")) {
        size_t len = render(m);
        respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", m->body, len, NULL);
    } else if (!strcmp(target, "/healthz")) {
        if (m->loop_running)
            respond_text(fd, 200, "OK", "ok\n", NULL);
        else
            respond_text(fd, 503, "Service Unavailable", "agent loop not running\n", NULL);
    } else {
        if (ready(m))
            respond_text(fd, 200, "OK", "ready\n", NULL);
        else
            respond_text(fd, 503, "Service Unavailable",
                         "not ready: rendezvous not complete or workers not running\n", NULL);
    }
    pthread_mutex_unlock(&m->lock);
out:
    /* Let the client read the answer before the close (unread input would reset it). */
    shutdown(fd, SHUT_WR);
    uint64_t dl = eccl_deadline_ms(200);
    char sink[4096];
    while (!eccl_deadline_passed(dl)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            break;
    }
    eccl_free(req);
}

static void *server_main(void *arg)
{
    struct ecclrun_metrics *m = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = m->listen_fd, .events = POLLIN},
                              {.fd = m->wake[0], .events = POLLIN}};
        int r = poll(p, 2, SAMPLE_MS);
        if (r > 0 && p[1].revents)
            break;
        if (r > 0 && (p[0].revents & POLLIN)) {
            int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                handle(m, fd);
                close(fd);
            }
            continue;
        }
        pthread_mutex_lock(&m->lock);
        sample(m);
        pthread_mutex_unlock(&m->lock);
    }
    return NULL;
}

/* ---- the agent's side --------------------------------------------------------------------- */

ecclResult_t ecclrun_metrics_start(const struct ecclrun_opts *o, struct ecclrun_metrics **out)
{
    ecclResult_t res = ecclSuccess;
    struct ecclrun_metrics *m;
    ECCL_CALLOC_GOTO(m, 1, "ecclrun_metrics", res, out);
    m->listen_fd = -1;
    m->wake[0] = m->wake[1] = -1;
    m->nslots = o->nproc;
    pthread_mutex_init(&m->lock, NULL);
    ECCL_CALLOC_GOTO(m->slots, (size_t)o->nproc, "ecclrun_metrics", res, err_free);
    /* The pages live in shared memory where there is some. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(m->dir, sizeof(m->dir), "%s/ecclrun-%d-XXXXXX", base, (int)getpid());
    if (!mkdtemp(m->dir)) {
        fprintf(stderr, "ecclrun: --metrics-port: cannot create %s: %s\n", m->dir, strerror(errno));
        res = ecclSystemError;
        goto err_free_slots;
    }
    char text[300];
    bool v6 = strchr(o->metrics_addr, ':') != NULL;
    snprintf(text, sizeof(text), "%s%s%s:%d", v6 ? "[" : "", o->metrics_addr, v6 ? "]" : "",
             o->metrics_port);
    union eccl_sockaddr addr;
    if (eccl_sockaddr_parse(text, &addr) != ecclSuccess ||
        eccl_socket_listen(&addr, &m->listen_fd) != ecclSuccess) {
        fprintf(stderr, "ecclrun: --metrics-port: cannot listen on %s: %s\n", text,
                eccl_log_last_error());
        res = ecclSystemError;
        goto err_rmdir;
    }
    ECCL_SYS_GOTO(pipe2(m->wake, O_CLOEXEC), res, err_close);
    if (pthread_create(&m->thread, NULL, server_main, m) != 0) {
        fprintf(stderr, "ecclrun: cannot start the metrics thread\n");
        res = ecclSystemError;
        goto err_close;
    }
    m->started = true;
    fprintf(stderr, "ecclrun: metrics on http://%s/metrics (/healthz, /readyz)\n", text);
    *out = m;
    return ecclSuccess;
err_close:
    if (m->wake[0] >= 0)
        close(m->wake[0]);
    if (m->wake[1] >= 0)
        close(m->wake[1]);
    close(m->listen_fd);
err_rmdir:
    rmdir(m->dir);
err_free_slots:
    eccl_free(m->slots);
err_free:
    pthread_mutex_destroy(&m->lock);
    eccl_free(m);
out:
    return res;
}

void ecclrun_metrics_stop(struct ecclrun_metrics *m)
{
    if (!m)
        return;
    if (m->started) {
        ssize_t w = write(m->wake[1], "x", 1);
        (void)w;
        pthread_join(m->thread, NULL);
    }
    close(m->wake[0]);
    close(m->wake[1]);
    close(m->listen_fd);
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i].path[0])
            unlink(m->slots[i].path);
    rmdir(m->dir);
    eccl_free(m->slots);
    pthread_mutex_destroy(&m->lock);
    eccl_free(m);
}

ecclResult_t ecclrun_metrics_page(struct ecclrun_metrics *m, int local_rank, int incarnation,
                                  char *path, size_t size)
{
    char p[ECCLRUN_MAX_PATH];
    snprintf(p, sizeof(p), "%s/w%d.r%d", m->dir, local_rank, incarnation);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "ecclrun: cannot create %s: %s\n", p, strerror(errno));
        return ecclSystemError;
    }
    struct eccl_stats_page pg;
    memset(&pg, 0, sizeof(pg));
    eccl_stats_page_init(&pg);
    ssize_t w = pwrite(fd, &pg, sizeof(pg), 0);
    close(fd);
    if (w != (ssize_t)sizeof(pg)) {
        fprintf(stderr, "ecclrun: cannot write %s\n", p);
        unlink(p);
        return ecclSystemError;
    }
    pthread_mutex_lock(&m->lock);
    struct mslot *s = &m->slots[local_rank];
    snprintf(s->path, sizeof(s->path), "%s", p);
    memset(s->cur, 0, sizeof(s->cur));
    s->seen_failures = s->recoveries = 0;
    s->page_ok = false;
    pthread_mutex_unlock(&m->lock);
    snprintf(path, size, "%s", p);
    return ecclSuccess;
}

void ecclrun_metrics_worker_started(struct ecclrun_metrics *m, int local_rank, pid_t pid,
                                    bool restart)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->slots[local_rank].pid = pid;
    if (restart)
        m->restarts++;
    pthread_mutex_unlock(&m->lock);
}

int64_t ecclrun_metrics_worker_exited(struct ecclrun_metrics *m, int local_rank, bool failed,
                                      bool by_signal)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->lock);
    struct mslot *s = &m->slots[local_rank];
    read_page(m, s); /* its last numbers */
    for (int k = 0; k < ECCL_STATS_KINDS; k++) {
        s->base[k] += s->cur[k];
        s->cur[k] = 0;
    }
    if (s->path[0])
        unlink(s->path);
    s->path[0] = 0;
    s->pid = 0;
    s->page_ok = false;
    if (failed)
        episode_open(m, by_signal ? CAUSE_RANK_SIGNAL : CAUSE_RANK_EXIT, true);
    int64_t gen = s->generation;
    pthread_mutex_unlock(&m->lock);
    return gen;
}

void ecclrun_metrics_set_running(struct ecclrun_metrics *m, bool running)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->loop_running = running;
    pthread_mutex_unlock(&m->lock);
}

/*
 * service.c - the per-rank UDS service thread: liveness of the ranks of one host.
 *
 * Each pair of local ranks shares one stream socket (the lower rank connects to the higher
 * one's listener). Messages are fixed-size records; the thread polls every socket and an eventfd
 * (stop), sends a PING to each peer every heartbeat interval, and declares a peer failed on EOF,
 * on a socket error, on a malformed record, or when nothing arrived from it for `misses`
 * intervals.
 */
#include "proxy/service.h"

#include "proxy/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/sync.h"
#include "common/time.h"

ECCL_PARAM_INT(heartbeat_ms, "ECCL_PROXY_HEARTBEAT_MS", 100)
ECCL_PARAM_INT(heartbeat_misses, "ECCL_PROXY_HEARTBEAT_MISSES", 20)

#define SVC_MAGIC   0x65737663u /* "esvc" */
#define SVC_VERSION 1

enum svc_type {
    SVC_HELLO = 1,
    SVC_PING = 2,
    SVC_BYE = 3,
    SVC_REVOKE = 4,
};

struct svc_msg {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint64_t comm_magic;
    int32_t from;
    int32_t failed; /* REVOKE: the failed rank, -1 unknown */
    char text[104];
};
_Static_assert(sizeof(struct svc_msg) == PROXY_SERVICE_REC_BYTES, "service messages are 128 bytes");

struct svc_peer {
    int fd;
    _Atomic bool gone; /* failed or said BYE: no more reports or sends */
    uint64_t last_heard_ns;
    int pid;        /* its process, when visible here (0: not) */
    int svc_tid;    /* its service thread (from its pings; 0: not yet) */
    bool slow_said; /* logged that it is slow but running */
};

struct proxy_service {
    uint64_t comm_magic;
    int rank;
    int nranks;
    int listen_fd;
    int stop_fd; /* eventfd */
    char name[96];
    struct svc_peer *peers; /* nranks entries; fd -1 for ranks not on this host */
    proxy_failure_fn fn;
    void *arg;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t send_lock; /* sends from the service thread and from revoke callers */
    uint64_t heartbeat_ns;
    int misses;
    /* The local proxy thread's heartbeat (NULL: not watched). */
    const _Atomic uint64_t *proxy_beat;
    const _Atomic int *proxy_tid;
    uint64_t proxy_stall_ns;
    uint64_t proxy_last_beat;
    uint64_t proxy_last_change_ns;
    bool proxy_reported;
};

static socklen_t svc_addr(const char *name, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    size_t n = strlen(name);
    if (n > sizeof(sun->sun_path) - 2)
        n = sizeof(sun->sun_path) - 2;
    memcpy(sun->sun_path + 1, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static void svc_name(uint64_t magic, int rank, char *buf, size_t len)
{
    snprintf(buf, len, "eccl-%016llx-%d-svc", (unsigned long long)magic, rank);
}

static void msg_init(const struct proxy_service *svc, struct svc_msg *m, int type)
{
    memset(m, 0, sizeof(*m));
    m->magic = SVC_MAGIC;
    m->version = SVC_VERSION;
    m->type = (uint16_t)type;
    m->comm_magic = svc->comm_magic;
    m->from = svc->rank;
    m->failed = -1;
}

/* Whether a record read from a peer is one of this communicator's (pure: fuzzed). */
static bool msg_ok(const struct svc_msg *m, uint64_t comm_magic)
{
    return m->magic == SVC_MAGIC && m->version == SVC_VERSION && m->comm_magic == comm_magic;
}

ecclResult_t proxy_service_rec_decode(const void *buf, size_t len, uint64_t comm_magic,
                                      struct proxy_service_rec *out)
{
    struct svc_msg m;
    if (len != sizeof(m))
        return ecclRemoteError;
    memcpy(&m, buf, sizeof(m));
    if (!msg_ok(&m, comm_magic) || m.type < SVC_HELLO || m.type > SVC_REVOKE)
        return ecclRemoteError;
    m.text[sizeof(m.text) - 1] = '\0';
    out->type = m.type;
    out->from = m.from;
    out->failed = m.failed;
    snprintf(out->text, sizeof(out->text), "%s", m.text);
    return ecclSuccess;
}

size_t proxy_service_rec_encode(const struct proxy_service_rec *r, uint64_t comm_magic, void *buf)
{
    struct svc_msg m;
    struct proxy_service svc = {.comm_magic = comm_magic, .rank = r->from};
    msg_init(&svc, &m, r->type);
    m.failed = r->failed;
    snprintf(m.text, sizeof(m.text), "%s", r->text);
    memcpy(buf, &m, sizeof(m));
    return sizeof(m);
}

/* Best effort, never blocking: failures are detected on the receiving side (EOF, missing
 * heartbeats), so a peer that is gone or not reading is not an error here. A record is 128
 * bytes and goes into the socket buffer whole unless the peer stopped reading long ago. */
static void send_msg(struct proxy_service *svc, int peer, const struct svc_msg *m)
{
    int fd = svc->peers[peer].fd;
    if (fd < 0 || svc->peers[peer].gone)
        return;
    pthread_mutex_lock(&svc->send_lock);
    ssize_t n = send(fd, m, sizeof(*m), MSG_NOSIGNAL | MSG_DONTWAIT);
    pthread_mutex_unlock(&svc->send_lock);
    if (n >= 0 && n != (ssize_t)sizeof(*m))
        TRACE(ECCL_LOG_PROXY, "UDS service: short send to rank %d (%zd bytes)", peer, n);
}

ecclResult_t proxy_service_create(struct proxy_service **out, uint64_t comm_magic, int rank,
                                  int nranks, proxy_failure_fn fn, void *arg)
{
    ecclResult_t res = ecclSuccess;
    struct proxy_service *svc = eccl_calloc(1, sizeof(*svc), "proxy-service");
    if (!svc)
        return ecclSystemError;
    svc->comm_magic = comm_magic;
    svc->rank = rank;
    svc->nranks = nranks;
    svc->fn = fn;
    svc->arg = arg;
    svc->listen_fd = svc->stop_fd = -1;
    int64_t hb = eccl_param_heartbeat_ms(), misses = eccl_param_heartbeat_misses();
    svc->heartbeat_ns = (uint64_t)(hb > 0 ? hb : 100) * ECCL_NS_PER_MS;
    svc->misses = misses > 1 ? (int)misses : 2;
    pthread_mutex_init(&svc->send_lock, NULL);
    svc->peers = eccl_calloc((size_t)nranks, sizeof(*svc->peers), "proxy-service");
    if (!svc->peers) {
        res = ecclSystemError;
        goto err_free;
    }
    for (int i = 0; i < nranks; i++)
        svc->peers[i].fd = -1;
    svc_name(comm_magic, rank, svc->name, sizeof(svc->name));
    svc->listen_fd = ECCL_FAULT_SYS("sys_socket", EMFILE,
                                    socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (svc->listen_fd < 0) {
        WARN("UDS service: socket failed: %s", strerror(errno));
        res = ecclSystemError;
        goto err_free;
    }
    struct sockaddr_un sun;
    socklen_t len = svc_addr(svc->name, &sun);
    if (bind(svc->listen_fd, (struct sockaddr *)&sun, len) != 0 ||
        listen(svc->listen_fd, 256) != 0) {
        WARN("UDS service: cannot listen on @%s: %s", svc->name, strerror(errno));
        res = ecclSystemError;
        goto err_free;
    }
    svc->stop_fd = ECCL_FAULT_SYS("sys_eventfd", EMFILE, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (svc->stop_fd < 0) {
        WARN("UDS service: eventfd failed: %s", strerror(errno));
        res = ecclSystemError;
        goto err_free;
    }
    *out = svc;
    return ecclSuccess;
err_free:
    proxy_service_destroy(svc, false);
    return res;
}

static ecclResult_t connect_peer(struct proxy_service *svc, int peer, uint64_t deadline,
                                 const _Atomic uint32_t *abort)
{
    char name[96];
    svc_name(svc->comm_magic, peer, name, sizeof(name));
    struct sockaddr_un sun;
    socklen_t len = svc_addr(name, &sun);
    for (;;) {
        int fd =
            ECCL_FAULT_SYS("sys_socket", EMFILE, socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (fd < 0) {
            WARN("UDS service: socket failed: %s", strerror(errno));
            return ecclSystemError;
        }
        if (ECCL_FAULT_SYS("sys_connect", EACCES, connect(fd, (struct sockaddr *)&sun, len)) == 0) {
            int fl = fcntl(fd, F_GETFL);
            if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
                WARN("UDS service: fcntl failed: %s", strerror(errno));
                close(fd);
                return ecclSystemError;
            }
            char who[112];
            snprintf(who, sizeof(who), "@%s", name);
            /* Job secret: the handshake first (the listener may be anyone's abstract socket). */
            ecclResult_t r = eccl_auth_handshake(fd, ECCL_AUTH_UDS, false, who, deadline, abort);
            if (r != ecclSuccess) {
                close(fd);
                return r;
            }
            struct svc_msg m;
            msg_init(svc, &m, SVC_HELLO);
            r = eccl_socket_send_all(fd, &m, sizeof(m), deadline, abort);
            if (r != ecclSuccess) {
                close(fd);
                return r;
            }
            svc->peers[peer].fd = fd;
            return ecclSuccess;
        }
        int err = errno;
        close(fd);
        if (err != ECONNREFUSED && err != ENOENT && err != EAGAIN) {
            WARN("UDS service: connect to @%s failed: %s", name, strerror(err));
            return ecclSystemError;
        }
        if (abort && atomic_load(abort))
            return ecclRemoteError;
        if (eccl_deadline_passed(deadline)) {
            WARN("UDS service: rank %d's service @%s is not there", peer, name);
            return ecclRemoteError;
        }
        eccl_sleep_us(1000);
    }
}

/* Reads one record from a peer's socket (non-blocking: returns ecclInProgress when nothing is
 * there). A record arrives whole or within a short deadline. */
static ecclResult_t read_msg(int fd, struct svc_msg *m)
{
    ssize_t n = recv(fd, m, sizeof(*m), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return ecclInProgress;
    if (n == 0)
        return ecclRemoteError;
    if (n < 0)
        return ecclRemoteError;
    return eccl_socket_recv_all(fd, m, sizeof(*m), eccl_deadline_ms(100), NULL);
}

static void report(struct proxy_service *svc, int peer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct proxy_service *svc, int peer, const char *fmt, ...)
{
    char text[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (peer >= 0 && peer < svc->nranks) {
        if (svc->peers[peer].gone)
            return;
        svc->peers[peer].gone = true;
    }
    WARN("%s", text);
    /* Tell the other local peers first, so that they stop even if the callback is slow. */
    struct svc_msg m;
    msg_init(svc, &m, SVC_REVOKE);
    m.failed = peer;
    snprintf(m.text, sizeof(m.text), "%.100s", text);
    for (int i = 0; i < svc->nranks; i++)
        if (i != peer)
            send_msg(svc, i, &m);
    svc->fn(svc->arg, peer, text);
}

static void handle_peer(struct proxy_service *svc, int peer, short revents)
{
    struct svc_peer *p = &svc->peers[peer];
    for (;;) {
        struct svc_msg m;
        ecclResult_t r = read_msg(p->fd, &m);
        if (r == ecclInProgress)
            break;
        if (r != ecclSuccess) {
            report(svc, peer, "rank %d is gone: its UDS service connection closed%s", peer,
                   (revents & (POLLERR | POLLHUP)) ? " (hang-up)" : "");
            return;
        }
        if (!msg_ok(&m, svc->comm_magic) || m.from != peer) {
            report(svc, peer, "rank %d sent a malformed service record (magic 0x%x, from %d)", peer,
                   m.magic, m.from);
            return;
        }
        p->last_heard_ns = eccl_now_ns();
        m.text[sizeof(m.text) - 1] = '\0';
        switch (m.type) {
        case SVC_PING:
            if (m.failed > 0) /* a ping carries its service thread's id */
                p->svc_tid = m.failed;
            break;
        case SVC_BYE:
            INFO(ECCL_LOG_PROXY, "UDS service: rank %d left cleanly", peer);
            p->gone = true;
            return;
        case SVC_REVOKE:
            if (m.failed >= 0 && m.failed < svc->nranks && m.failed != svc->rank) {
                char text[160];
                snprintf(text, sizeof(text), "rank %d reports: %s", peer, m.text);
                if (!svc->peers[m.failed].gone) {
                    svc->peers[m.failed].gone = true;
                    WARN("%s", text);
                    svc->fn(svc->arg, m.failed, text);
                }
            } else if (m.failed == -1) {
                WARN("rank %d revoked the communicator: %s", peer, m.text);
                svc->fn(svc->arg, peer, m.text);
            }
            break;
        default:
            report(svc, peer, "rank %d sent an unknown service record type %u", peer, m.type);
            return;
        }
    }
}

static void *svc_main(void *arg)
{
    struct proxy_service *svc = arg;
    int n = svc->nranks;
    eccl_log_set_dev(svc->rank);
    int my_tid = eccl_thread_id();
    struct pollfd *pfd = eccl_calloc((size_t)n + 1, sizeof(*pfd), "proxy-service");
    int *who = eccl_calloc((size_t)n + 1, sizeof(*who), "proxy-service");
    if (!pfd || !who) {
        report(svc, -1, "UDS service of rank %d: out of memory", svc->rank);
        goto out;
    }
    uint64_t next_ping = 0;
    for (;;) {
        if (ECCL_FAULT("svc_thread")) {
            WARN("UDS service of rank %d: thread exits (fault injection)", svc->rank);
            goto out;
        }
        if (ECCL_FAULT("uds_close")) {
            /* The service's connections vanish while the thread and the process live on. */
            WARN("UDS service of rank %d: closing its connections (fault injection)", svc->rank);
            for (int i = 0; i < n; i++)
                if (svc->peers[i].fd >= 0)
                    shutdown(svc->peers[i].fd, SHUT_RDWR);
        }
        uint64_t now = eccl_now_ns();
        uint64_t wake = next_ping;
        if (svc->proxy_beat && !svc->proxy_reported) {
            uint64_t beat = atomic_load_explicit(svc->proxy_beat, memory_order_relaxed);
            if (beat != svc->proxy_last_beat) {
                svc->proxy_last_beat = beat;
                svc->proxy_last_change_ns = now;
            } else if (now - svc->proxy_last_change_ns > 2 * PROXY_MAX_SLEEP_MS * ECCL_NS_PER_MS) {
                /* Late: an exited thread is reported at once; a live one only after the stall
                 * bound, and never while runnable (starved of CPU, not stuck). */
                int tid = atomic_load(svc->proxy_tid);
                char st = tid > 0 ? eccl_thread_state(tid) : 'R';
                uint64_t late = now - svc->proxy_last_change_ns;
                if (st == 0 || (late > svc->proxy_stall_ns && st != 'R')) {
                    svc->proxy_reported = true;
                    report(svc, svc->rank,
                           "the proxy thread of rank %d %s: no progress for %llu ms", svc->rank,
                           st ? "is stuck" : "exited", (unsigned long long)(late / ECCL_NS_PER_MS));
                }
            }
            uint64_t check = now + PROXY_MAX_SLEEP_MS * ECCL_NS_PER_MS;
            if (check < wake)
                wake = check;
        }
        if (now >= next_ping) {
            struct svc_msg m;
            msg_init(svc, &m, SVC_PING);
            m.failed = my_tid;
            for (int i = 0; i < n; i++)
                send_msg(svc, i, &m);
            next_ping = now + svc->heartbeat_ns;
            for (int i = 0; i < n; i++) {
                struct svc_peer *p = &svc->peers[i];
                if (p->fd < 0 || p->gone ||
                    now - p->last_heard_ns <= svc->heartbeat_ns * (uint64_t)svc->misses)
                    continue;
                char st = p->pid > 0 ? eccl_task_state(p->pid, p->svc_tid) : '?';
                if (st == 'R' || st == 'S' || st == 'D') {
                    /* Its service thread runs: slow, starved of CPU, not dead. A hang is the
                     * watchdog's (ECCL_TIMEOUT_MS). */
                    if (!p->slow_said)
                        INFO(ECCL_LOG_PROXY,
                             "UDS service: rank %d sent no heartbeat for %llu ms "
                             "but its process is running: not a failure",
                             i, (unsigned long long)((now - p->last_heard_ns) / ECCL_NS_PER_MS));
                    p->slow_said = true;
                    continue;
                }
                report(svc, i, "rank %d is not responding: no heartbeat for %llu ms%s", i,
                       (unsigned long long)((now - p->last_heard_ns) / ECCL_NS_PER_MS),
                       st == 'T' || st == 't' ? " (its process is stopped)"
                       : st == 0              ? " (its service thread is gone)"
                                              : "");
            }
        }
        int k = 0;
        pfd[k].fd = svc->stop_fd;
        pfd[k].events = POLLIN;
        who[k++] = -1;
        for (int i = 0; i < n; i++) {
            if (svc->peers[i].fd < 0 || svc->peers[i].gone)
                continue;
            pfd[k].fd = svc->peers[i].fd;
            pfd[k].events = POLLIN;
            who[k++] = i;
        }
        if (next_ping < wake)
            wake = next_ping;
        uint64_t t = eccl_now_ns();
        int wait_ms = wake > t ? (int)((wake - t + ECCL_NS_PER_MS - 1) / ECCL_NS_PER_MS) : 1;
        if (wait_ms < 1)
            wait_ms = 1;
        int rc = poll(pfd, (nfds_t)k, wait_ms);
        if (rc < 0 && errno != EINTR) {
            report(svc, -1, "UDS service of rank %d: poll failed: %s", svc->rank, strerror(errno));
            goto out;
        }
        if (rc <= 0)
            continue;
        if (pfd[0].revents)
            break; /* stop */
        for (int j = 1; j < k; j++)
            if (pfd[j].revents)
                handle_peer(svc, who[j], pfd[j].revents);
    }
out:
    eccl_free(pfd);
    eccl_free(who);
    return NULL;
}

void proxy_service_watch(struct proxy_service *svc, const _Atomic uint64_t *beat,
                         const _Atomic int *tid)
{
    svc->proxy_tid = tid;
    int64_t stall_ms = proxy_stall_ms();
    svc->proxy_beat = beat;
    svc->proxy_stall_ns = (uint64_t)(stall_ms > 0 ? stall_ms : 1) * ECCL_NS_PER_MS;
    svc->proxy_last_beat = atomic_load(beat);
    svc->proxy_last_change_ns = eccl_now_ns();
}

ecclResult_t proxy_service_connect(struct proxy_service *svc, const bool *local, const int *pids,
                                   uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    for (int i = 0; i < svc->nranks; i++)
        svc->peers[i].pid = pids ? pids[i] : 0;
    int expect = 0;
    /* Lower ranks connect to higher ones; accept the connections of the lower ones. */
    for (int i = 0; i < svc->nranks; i++) {
        if (i == svc->rank || !local[i])
            continue;
        if (i > svc->rank)
            ECCL_TRY(connect_peer(svc, i, deadline_ns, abort));
        else
            expect++;
    }
    while (expect > 0) {
        int fd = -1;
        ECCL_TRY(eccl_socket_accept(svc->listen_fd, &fd, deadline_ns, abort));
        char who[112];
        snprintf(who, sizeof(who), "a client of @%s", svc->name);
        /* A local rank answers at once: a silent client does not hold up the others. */
        uint64_t hs_deadline = eccl_deadline_ms(5000);
        if (hs_deadline > deadline_ns)
            hs_deadline = deadline_ns;
        if (eccl_auth_handshake(fd, ECCL_AUTH_UDS, true, who, hs_deadline, abort) != ecclSuccess) {
            close(fd); /* logged by the handshake; keep accepting */
            if (abort && atomic_load(abort))
                return ecclRemoteError;
            continue;
        }
        struct svc_msg m;
        ecclResult_t r = eccl_socket_recv_all(fd, &m, sizeof(m), deadline_ns, abort);
        if (r != ecclSuccess || !msg_ok(&m, svc->comm_magic) || m.type != SVC_HELLO || m.from < 0 ||
            m.from >= svc->rank || !local[m.from] || svc->peers[m.from].fd >= 0) {
            WARN("UDS service @%s: refused a connection with a bad hello", svc->name);
            close(fd);
            if (r != ecclSuccess && r != ecclRemoteError)
                return r;
            continue;
        }
        svc->peers[m.from].fd = fd;
        expect--;
    }
    uint64_t now = eccl_now_ns();
    for (int i = 0; i < svc->nranks; i++)
        svc->peers[i].last_heard_ns = now;
    svc->proxy_last_change_ns = now;
    int rc = ECCL_FAULT_THREAD(pthread_create(&svc->thread, NULL, svc_main, svc));
    if (rc != 0) {
        WARN("UDS service: pthread_create failed: %s", strerror(rc));
        return ecclSystemError;
    }
    svc->thread_started = true;
    INFO(ECCL_LOG_PROXY, "UDS service of rank %d listening on @%s, heartbeat %llu ms x %d",
         svc->rank, svc->name, (unsigned long long)(svc->heartbeat_ns / ECCL_NS_PER_MS),
         svc->misses);
    return ecclSuccess;
}

void proxy_service_revoke(struct proxy_service *svc, int peer, const char *why)
{
    if (!svc)
        return;
    struct svc_msg m;
    msg_init(svc, &m, SVC_REVOKE);
    m.failed = peer;
    snprintf(m.text, sizeof(m.text), "%s", why ? why : "");
    for (int i = 0; i < svc->nranks; i++)
        if (i != peer)
            send_msg(svc, i, &m);
}

void proxy_service_destroy(struct proxy_service *svc, bool clean)
{
    if (!svc)
        return;
    if (svc->thread_started) {
        uint64_t one = 1;
        if (write(svc->stop_fd, &one, sizeof(one)) != sizeof(one))
            WARN("UDS service: cannot wake the service thread: %s", strerror(errno));
        pthread_join(svc->thread, NULL);
    }
    if (svc->peers) {
        struct svc_msg m;
        msg_init(svc, &m, SVC_BYE);
        for (int i = 0; i < svc->nranks; i++) {
            if (svc->peers[i].fd < 0)
                continue;
            if (clean)
                send_msg(svc, i, &m);
            close(svc->peers[i].fd);
        }
    }
    if (svc->listen_fd >= 0)
        close(svc->listen_fd);
    if (svc->stop_fd >= 0)
        close(svc->stop_fd);
    pthread_mutex_destroy(&svc->send_lock);
    eccl_free(svc->peers);
    eccl_free(svc);
}

/*
 * net_socket.c - the TCP socket backend of the network transport (eccl_net_socket, net.h).
 *
 * A connection is one control socket plus `nsocks` data sockets (ECCL_SOCKET_NTHREADS x
 * ECCL_NSOCKS_PERTHREAD, at most 64), opened to the address that listen wrote into the handle.
 * Every socket opens with a 32-byte hello (protocol magic, version, the handle's random magic,
 * the connection id, the socket's index, nsocks) that the acceptor checks before the socket
 * counts; a socket whose hello is wrong, short or late is closed with a WARN and accept goes on.
 * For each message the sender writes a 24-byte header (size, tag, sequence number) on the
 * control socket, and the payload in pieces of at least 128 KiB over the data sockets; the
 * receiver matches the header to its oldest posted receive of that tag, checks that the message
 * fits the receive buffer, and splits the same way. Helper threads (ECCL_SOCKET_NTHREADS per
 * connection, or the caller's test() when it is 0) move the pieces with non-blocking send/recv
 * and sleep in poll() on their sockets and an eventfd. docs/internals/net-socket.md gives the
 * wire format.
 *
 * Nothing here blocks: connect and accept are state machines advanced by each call (the
 * connector's state lives in a table keyed by the handle's bytes), isend/irecv/test only queue
 * work and look at counters. Bytes from the wire are checked (magics, version, lengths,
 * sequence numbers); a peer that lies or goes away gives ecclRemoteError with the cause.
 */
#include "proxy/net.h"
#include "proxy/net_socket.h"

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"

ECCL_PARAM_INT(socket_nthreads, "ECCL_SOCKET_NTHREADS", 2)
ECCL_PARAM_INT(nsocks_perthread, "ECCL_NSOCKS_PERTHREAD", 2)
ECCL_PARAM_INT(socket_handshake_ms, "ECCL_SOCKET_HANDSHAKE_TIMEOUT_MS", 20000)

#define SOCK_MAX_SOCKS     64 /* data sockets per connection */
#define SOCK_MAX_THREADS   16 /* helper threads per connection */
#define SOCK_MIN_CHUNK     (128 * 1024)
#define SOCK_CHUNK_ALIGN   4096
#define SOCK_IO_MAX        (1 << 20) /* bytes per send/recv call: turns between sockets */
#define SOCK_MAX_PENDING   256       /* accepted sockets still waiting for their hello */
#define SOCK_MAX_PARTIAL   32        /* connections with some but not all sockets accepted */
#define SOCK_IDLE_POLL_MS  100       /* a helper thread's longest sleep: the stop flag's latency */
#define SOCK_MAX_MSG       ((size_t)1 << 40)
#define SOCK_INLINE_PASSES 4 /* test() passes over the sockets when there is no thread */

/* Wire format (docs/internals/net-socket.md). All integers big-endian. */
#define WIRE_VERSION      1
#define WIRE_HANDLE_PROTO 0x45434e48u /* "ECNH" */
#define WIRE_HELLO_PROTO  0x45434e53u /* "ECNS" */
#define WIRE_MSG_PROTO    0x45434e4du /* "ECNM" */
#define WIRE_HANDLE_BYTES 36
#define WIRE_HELLO_BYTES  32
#define WIRE_MSG_BYTES    24

#define CHECK_LISTEN 0x6c697374u
#define CHECK_SEND   0x73656e64u
#define CHECK_RECV   0x72656376u
#define CHECK_MR     0x6d726567u

_Static_assert(WIRE_HANDLE_BYTES <= ECCL_NET_HANDLE_BYTES, "the handle fits net.h's bytes");

/* ---- wire helpers ---- */

static void put16(unsigned char *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, sizeof(v));
}

static void put32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, sizeof(v));
}

static void put64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, sizeof(v));
}

static uint16_t get16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return be16toh(v);
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return be32toh(v);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return be64toh(v);
}

struct wire_hello {
    uint32_t proto;
    uint16_t version;
    uint16_t nsocks; /* data sockets of the connection */
    uint64_t magic;  /* the handle's */
    uint64_t conn_id;
    uint16_t index; /* 0..nsocks-1: data sockets, nsocks: the control socket */
    uint16_t flags;
    uint32_t reserved;
};

static void hello_encode(const struct wire_hello *h, unsigned char *p)
{
    put32(p, h->proto);
    put16(p + 4, h->version);
    put16(p + 6, h->nsocks);
    put64(p + 8, h->magic);
    put64(p + 16, h->conn_id);
    put16(p + 24, h->index);
    put16(p + 26, h->flags);
    put32(p + 28, h->reserved);
}

static void hello_decode(const unsigned char *p, struct wire_hello *h)
{
    h->proto = get32(p);
    h->version = get16(p + 4);
    h->nsocks = get16(p + 6);
    h->magic = get64(p + 8);
    h->conn_id = get64(p + 16);
    h->index = get16(p + 24);
    h->flags = get16(p + 26);
    h->reserved = get32(p + 28);
}

/* A message header on the control socket. */
struct wire_msg {
    uint32_t proto;
    uint32_t seq;
    uint64_t size;
    int tag;
    uint32_t reserved;
};

static void msg_encode(unsigned char *p, uint32_t seq, uint64_t size, int tag)
{
    put32(p, WIRE_MSG_PROTO);
    put32(p + 4, seq);
    put64(p + 8, size);
    put32(p + 16, (uint32_t)tag);
    put32(p + 20, 0);
}

/* Decodes a header; false when it is not message `want_seq` (pure: fuzzed). */
static bool msg_decode(const unsigned char *p, uint32_t want_seq, struct wire_msg *m)
{
    m->proto = get32(p);
    m->seq = get32(p + 4);
    m->size = get64(p + 8);
    m->tag = (int)get32(p + 16);
    m->reserved = get32(p + 20);
    return m->proto == WIRE_MSG_PROTO && m->seq == want_seq && m->reserved == 0;
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
        v = eccl_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&v;
    return v ? v : 1;
}

static bool errno_would_block(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* ---- global state ---- */

struct sock_connecting; /* a connect in progress, see below */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_refs;                         /* protected by g_lock */
static union eccl_sockaddr g_addr;         /* written by the first init, read-only after */
static char g_ifname[64];                  /* idem */
static struct sock_connecting *g_connects; /* protected by g_lock */

/* ---- connections ---- */

struct sock_req;

struct sock_task {
    char *ptr;
    size_t len;
    size_t done; /* owner: the worker that progresses the socket */
    struct sock_req *req;
};

struct sock_data {
    int fd;
    /* Ring of pieces to move, in message order. Written by the connection's caller (tail) and the
     * worker (head), both under the worker's lock. At most one piece per live request, hence
     * ECCL_NET_MAX_REQUESTS entries. */
    struct sock_task tasks[ECCL_NET_MAX_REQUESTS];
    uint32_t head, tail;
};

struct sock_worker {
    struct sock_comm *comm;
    pthread_t thread;
    bool started;
    int efd; /* eventfd: new work or stop */
    pthread_mutex_t lock;
    bool sleeping;     /* protected by lock: the worker is (about to be) in poll() */
    uint64_t enqueued; /* protected by lock: pieces queued so far, to see new work */
    _Atomic uint32_t stop;
    int nsocks;
    int sock_idx[SOCK_MAX_SOCKS];
};

struct sock_req {
    struct sock_comm *comm;
    bool live;    /* posted and not yet reported done; caller's thread only */
    bool matched; /* receive: its message header arrived; send: always true */
    char *data;
    size_t cap;  /* receive: the buffer's size; send: the message size */
    size_t size; /* the message size (receive: once matched) */
    int tag;
    uint32_t msg_seq;
    int npieces;
    _Atomic int pieces_done; /* incremented by workers (release), read by test (acquire) */
    size_t hdr_sent;         /* send: bytes of the header written on the control socket */
    unsigned char hdr[WIRE_MSG_BYTES];
};

struct sock_mr {
    uint32_t check;
    struct sock_mr *next; /* the comm's list, caller's thread only */
    char *data;
    size_t size;
};

struct sock_comm {
    uint32_t check; /* CHECK_SEND or CHECK_RECV */
    bool is_send;
    char peer[64];
    int ctrl_fd;
    int nsocks;
    int nworkers;
    bool inline_progress; /* ECCL_SOCKET_NTHREADS=0: test() moves the data */
    struct sock_data socks[SOCK_MAX_SOCKS];
    struct sock_worker workers[SOCK_MAX_THREADS];
    /* Requests: request number n lives in slot n % ECCL_NET_MAX_REQUESTS. Caller's thread. */
    struct sock_req reqs[ECCL_NET_MAX_REQUESTS];
    uint32_t posted;    /* requests posted so far */
    uint32_t released;  /* requests before this one were all reported done */
    uint32_t ctrl_next; /* send: the first request whose header is not fully written */
    uint32_t msgs_in;   /* receive: message headers matched so far */
    unsigned char in_hdr[WIRE_MSG_BYTES];
    size_t in_got;    /* receive: bytes of the next header read so far */
    bool ctrl_eof;    /* receive: the sender closed the control socket at a header boundary */
    bool peer_closed; /* receive: failed only because of that close (sock_peer_closed) */
    struct sock_mr *mrs;
    /* The first error, from any thread: err is written last (release) under err_lock. */
    pthread_mutex_t err_lock;
    _Atomic int err;
    char err_text[512];
};

/* Records the connection's first error and logs it (a WARN, or an INFO line when `quiet`) on the
 * thread that saw it. */
static bool comm_fail_v(struct sock_comm *c, ecclResult_t res, bool quiet, const char *fmt,
                        va_list ap) __attribute__((format(printf, 4, 0)));
static bool comm_fail_v(struct sock_comm *c, ecclResult_t res, bool quiet, const char *fmt,
                        va_list ap)
{
    char text[400];
    vsnprintf(text, sizeof(text), fmt, ap);
    pthread_mutex_lock(&c->err_lock);
    bool first = atomic_load_explicit(&c->err, memory_order_relaxed) == ecclSuccess;
    if (first) {
        snprintf(c->err_text, sizeof(c->err_text), "NET/Socket : %s %s: %s",
                 c->is_send ? "connection to" : "connection from", c->peer, text);
        atomic_store_explicit(&c->err, (int)res, memory_order_release);
    }
    pthread_mutex_unlock(&c->err_lock);
    if (first && quiet)
        INFO(ECCL_LOG_NET, "NET/Socket : %s %s: %s",
             c->is_send ? "connection to" : "connection from", c->peer, text);
    else if (first)
        WARN("NET/Socket : %s %s: %s", c->is_send ? "connection to" : "connection from", c->peer,
             text);
    return first;
}

static void comm_fail(struct sock_comm *c, ecclResult_t res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void comm_fail(struct sock_comm *c, ecclResult_t res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)comm_fail_v(c, res, false, fmt, ap);
    va_end(ap);
}

/* The peer closed at a message boundary: everything it sent arrived, and it will send no more.
 * The receives that still wait fail, with an INFO line rather than a WARN: a peer that destroyed
 * its communicator after its last collective looks the same here as one that died between two
 * messages, and an executor that needs more from it reports that failure itself. */
static void comm_fail_closed(struct sock_comm *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void comm_fail_closed(struct sock_comm *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (comm_fail_v(c, ecclRemoteError, true, fmt, ap))
        c->peer_closed = true;
    va_end(ap);
}

/* The connection's error, with its text made the caller's last error; ecclSuccess if none. */
static ecclResult_t comm_error(struct sock_comm *c)
{
    int err = atomic_load_explicit(&c->err, memory_order_acquire);
    if (err == ecclSuccess)
        return ecclSuccess;
    pthread_mutex_lock(&c->err_lock);
    eccl_log_set_last_error(c->err_text);
    pthread_mutex_unlock(&c->err_lock);
    return (ecclResult_t)err;
}

static void worker_wake(struct sock_worker *w)
{
    uint64_t one = 1;
    if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        TRACE(ECCL_LOG_NET, "eventfd write failed: %s", strerror(errno));
}

/*
 * One pass over a worker's sockets: each socket with a queued piece gets one non-blocking
 * send/recv of at most SOCK_IO_MAX bytes. Returns the bytes moved; sockets that would block are
 * appended to pfds. On a socket failure the error is recorded on the comm and -1 returned.
 */
static ssize_t worker_pass(struct sock_worker *w, struct pollfd *pfds, int *npfds)
{
    struct sock_comm *c = w->comm;
    size_t moved = 0;
    *npfds = 0;
    for (int k = 0; k < w->nsocks; k++) {
        int si = w->sock_idx[k];
        struct sock_data *s = &c->socks[si];
        pthread_mutex_lock(&w->lock);
        struct sock_task *t =
            s->head != s->tail ? &s->tasks[s->head % ECCL_NET_MAX_REQUESTS] : NULL;
        pthread_mutex_unlock(&w->lock);
        if (!t)
            continue;
        if (t->done == 0 && ECCL_FAULT("net_socket_io")) {
            comm_fail(c, ecclRemoteError, "data socket %d broken (fault injection)", si);
            return -1;
        }
        size_t want = ECCL_MIN(t->len - t->done, (size_t)SOCK_IO_MAX);
        ssize_t n = c->is_send ? send(s->fd, t->ptr + t->done, want, MSG_NOSIGNAL | MSG_DONTWAIT)
                               : recv(s->fd, t->ptr + t->done, want, MSG_DONTWAIT);
        if (n > 0) {
            t->done += (size_t)n;
            moved += (size_t)n;
            if (t->done == t->len) {
                struct sock_req *r = t->req;
                pthread_mutex_lock(&w->lock);
                s->head++;
                pthread_mutex_unlock(&w->lock);
                /* Publishes the bytes received into the request's buffer to test(). */
                atomic_fetch_add_explicit(&r->pieces_done, 1, memory_order_release);
            }
            continue;
        }
        if (n == 0 && !c->is_send) {
            comm_fail(c, ecclRemoteError,
                      "peer closed data socket %d mid-message (%zu of %zu bytes of a piece "
                      "received)",
                      si, t->done, t->len);
            return -1;
        }
        if (n == 0 || errno_would_block(errno)) {
            pfds[*npfds].fd = s->fd;
            pfds[*npfds].events = c->is_send ? POLLOUT : POLLIN;
            pfds[*npfds].revents = 0;
            (*npfds)++;
            continue;
        }
        int e = errno;
        if (e == EPIPE || e == ECONNRESET || e == ETIMEDOUT || e == EHOSTUNREACH ||
            e == ENETUNREACH || e == ECONNREFUSED) {
            comm_fail(c, ecclRemoteError, "data socket %d: %s with %zu of %zu bytes of a piece %s",
                      si, strerror(e), t->done, t->len, c->is_send ? "sent" : "received");
        } else {
            comm_fail(c, ecclSystemError, "%s on data socket %d failed: %s",
                      c->is_send ? "send" : "recv", si, strerror(e));
        }
        return -1;
    }
    return (ssize_t)moved;
}

static void *worker_main(void *arg)
{
    struct sock_worker *w = arg;
    struct sock_comm *c = w->comm;
    struct pollfd pfds[SOCK_MAX_SOCKS + 1];
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        int npfds = 0;
        bool failed = atomic_load_explicit(&c->err, memory_order_acquire) != ecclSuccess;
        if (!failed) {
            pthread_mutex_lock(&w->lock);
            uint64_t seen = w->enqueued;
            pthread_mutex_unlock(&w->lock);
            ssize_t moved = worker_pass(w, pfds, &npfds);
            if (moved > 0)
                continue;
            if (moved < 0)
                npfds = 0;
            /* Sleep only if nothing was queued since the pass began; a later enqueue sees
             * `sleeping` and writes the eventfd. */
            pthread_mutex_lock(&w->lock);
            bool idle = w->enqueued == seen;
            w->sleeping = idle;
            pthread_mutex_unlock(&w->lock);
            if (!idle)
                continue;
        }
        pfds[npfds].fd = w->efd;
        pfds[npfds].events = POLLIN;
        pfds[npfds].revents = 0;
        if (poll(pfds, (nfds_t)npfds + 1, SOCK_IDLE_POLL_MS) < 0 && errno != EINTR)
            eccl_sleep_us(1000);
        pthread_mutex_lock(&w->lock);
        w->sleeping = false;
        pthread_mutex_unlock(&w->lock);
        uint64_t v;
        if (read(w->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
            TRACE(ECCL_LOG_NET, "eventfd read failed: %s", strerror(errno));
    }
    return NULL;
}

/* The size of each piece of a `size`-byte message (both sides compute the same). */
static size_t piece_bytes(size_t size, int nsocks)
{
    size_t per = ECCL_ALIGN_UP(ECCL_DIV_UP(size, (size_t)nsocks), (size_t)SOCK_CHUNK_ALIGN);
    return ECCL_MAX(per, (size_t)SOCK_MIN_CHUNK);
}

/* Queues the pieces of request r (message number msg_seq) on the data sockets. Caller's thread.
 * Piece i goes to socket (msg_seq + i) % nsocks, so small messages rotate over the sockets. */
static void req_enqueue(struct sock_comm *c, struct sock_req *r)
{
    r->npieces = 0;
    atomic_store_explicit(&r->pieces_done, 0, memory_order_relaxed);
    if (r->size == 0)
        return;
    size_t piece = piece_bytes(r->size, c->nsocks);
    int npieces = (int)ECCL_DIV_UP(r->size, piece);
    r->npieces = npieces;
    for (int i = 0; i < npieces; i++) {
        size_t off = (size_t)i * piece;
        int si = (int)((r->msg_seq + (uint32_t)i) % (uint32_t)c->nsocks);
        struct sock_data *s = &c->socks[si];
        struct sock_worker *w = &c->workers[si % c->nworkers];
        pthread_mutex_lock(&w->lock);
        ECCL_ASSERT(s->tail - s->head < ECCL_NET_MAX_REQUESTS);
        struct sock_task *t = &s->tasks[s->tail % ECCL_NET_MAX_REQUESTS];
        t->ptr = r->data + off;
        t->len = ECCL_MIN(piece, r->size - off);
        t->done = 0;
        t->req = r;
        s->tail++;
        w->enqueued++;
        bool wake = w->sleeping && w->started;
        w->sleeping = false;
        pthread_mutex_unlock(&w->lock);
        if (wake)
            worker_wake(w);
    }
}

static void comm_destroy(struct sock_comm *c)
{
    for (int i = 0; i < c->nworkers; i++) {
        struct sock_worker *w = &c->workers[i];
        if (w->started) {
            atomic_store_explicit(&w->stop, 1, memory_order_release);
            worker_wake(w);
            pthread_join(w->thread, NULL);
            w->started = false;
        }
    }
    for (int i = 0; i < c->nworkers; i++) {
        eccl_socket_close(&c->workers[i].efd);
        pthread_mutex_destroy(&c->workers[i].lock);
    }
    for (int i = 0; i < c->nsocks; i++)
        eccl_socket_close(&c->socks[i].fd);
    eccl_socket_close(&c->ctrl_fd);
    while (c->mrs) {
        struct sock_mr *m = c->mrs;
        c->mrs = m->next;
        m->check = 0;
        eccl_free(m);
    }
    pthread_mutex_destroy(&c->err_lock);
    c->check = 0;
    eccl_free(c);
}

/* Sizes from ECCL_SOCKET_NTHREADS and ECCL_NSOCKS_PERTHREAD (the connector's choice). */
static void sock_counts(int *nthreads_out, int *nsocks_out)
{
    int64_t nthreads = eccl_param_socket_nthreads();
    int64_t per = eccl_param_nsocks_perthread();
    if (nthreads < 0 || nthreads > SOCK_MAX_THREADS) {
        int64_t fixed = nthreads < 0 ? 0 : SOCK_MAX_THREADS;
        INFO(ECCL_LOG_NET | ECCL_LOG_ENV,
             "NET/Socket : ECCL_SOCKET_NTHREADS=%lld out of [0,%d], "
             "using %lld",
             (long long)nthreads, SOCK_MAX_THREADS, (long long)fixed);
        nthreads = fixed;
    }
    if (per < 1)
        per = 1;
    int64_t nsocks = ECCL_MAX(nthreads, (int64_t)1) * per;
    if (nsocks > SOCK_MAX_SOCKS)
        nsocks = SOCK_MAX_SOCKS;
    *nthreads_out = (int)nthreads;
    *nsocks_out = (int)nsocks;
}

/*
 * Builds a connection over fds[0..nsocks-1] (data) and fds[nsocks] (control) and starts its
 * helper threads. Takes the descriptors: they belong to the comm on success and are closed on
 * failure.
 */
static ecclResult_t comm_create_take(bool is_send, int nsocks, int *fds, const char *peer,
                                     struct sock_comm **out)
{
    ecclResult_t res = ecclSuccess;
    struct sock_comm *c = NULL;
    int nthreads, unused;
    sock_counts(&nthreads, &unused);
    ECCL_CALLOC_GOTO(c, 1, "net-socket-comm", res, err_close_fds);
    c->check = is_send ? CHECK_SEND : CHECK_RECV;
    c->is_send = is_send;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    pthread_mutex_init(&c->err_lock, NULL);
    c->nsocks = nsocks;
    c->inline_progress = nthreads == 0;
    c->nworkers = c->inline_progress ? 1 : ECCL_MIN(nthreads, nsocks);
    for (int i = 0; i < nsocks; i++) {
        c->socks[i].fd = fds[i];
        fds[i] = -1;
    }
    for (int i = nsocks; i < SOCK_MAX_SOCKS; i++)
        c->socks[i].fd = -1;
    c->ctrl_fd = fds[nsocks];
    fds[nsocks] = -1;
    for (int i = 0; i < SOCK_MAX_THREADS; i++)
        c->workers[i].efd = -1;
    for (int i = 0; i < c->nworkers; i++) {
        struct sock_worker *w = &c->workers[i];
        w->comm = c;
        pthread_mutex_init(&w->lock, NULL);
    }
    for (int si = 0; si < nsocks; si++) {
        struct sock_worker *w = &c->workers[si % c->nworkers];
        w->sock_idx[w->nsocks++] = si;
    }
    if (!c->inline_progress) {
        for (int i = 0; i < c->nworkers; i++) {
            struct sock_worker *w = &c->workers[i];
            w->efd = ECCL_FAULT_SYS("sys_eventfd", EMFILE, eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
            if (w->efd < 0) {
                WARN("NET/Socket : eventfd failed: %s", strerror(errno));
                res = ecclSystemError;
                goto err_destroy;
            }
            int rc = ECCL_FAULT_THREAD(pthread_create(&w->thread, NULL, worker_main, w));
            if (rc != 0) {
                WARN("NET/Socket : cannot start a helper thread: %s", strerror(rc));
                res = ecclSystemError;
                goto err_destroy;
            }
            w->started = true;
            char name[16];
            snprintf(name, sizeof(name), "eccl-net%c%u", is_send ? 's' : 'r', (unsigned)i % 100u);
            pthread_setname_np(w->thread, name);
        }
    }
    INFO(ECCL_LOG_NET, "NET/Socket : %s %s: %d data sockets, %d helper threads%s",
         is_send ? "connected to" : "accepted connection from", c->peer, nsocks,
         c->inline_progress ? 0 : c->nworkers, c->inline_progress ? " (progress in test)" : "");
    *out = c;
    return ecclSuccess;
err_destroy:
    comm_destroy(c); /* closes the descriptors it took */
    return res;
err_close_fds:
    for (int i = 0; i <= nsocks; i++)
        eccl_socket_close(&fds[i]);
    return res;
}

/* ---- init, devices, properties ---- */

static ecclResult_t sock_init(void)
{
    ecclResult_t res = ecclSuccess;
    pthread_mutex_lock(&g_lock);
    if (g_refs == 0) {
        union eccl_sockaddr addr;
        char ifname[64] = "";
        res = eccl_socket_pick_addr(&addr, ifname, sizeof(ifname));
        if (res != ecclSuccess)
            goto out;
        g_addr = addr;
        snprintf(g_ifname, sizeof(g_ifname), "%s", ifname);
        if (g_addr.sa.sa_family == AF_INET)
            g_addr.sin.sin_port = 0;
        else
            g_addr.sin6.sin6_port = 0;
        char buf[80];
        int nthreads, nsocks;
        sock_counts(&nthreads, &nsocks);
        INFO(ECCL_LOG_NET | ECCL_LOG_INIT, "NET/Socket : Using [0]%s:%s", g_ifname,
             eccl_sockaddr_str(&g_addr, buf, sizeof(buf)));
        INFO(ECCL_LOG_NET | ECCL_LOG_INIT,
             "NET/Socket : %d helper threads and %d data sockets per connection", nthreads, nsocks);
    }
    g_refs++;
out:
    pthread_mutex_unlock(&g_lock);
    return res;
}

static ecclResult_t sock_devices(int *ndev)
{
    ECCL_ARG_CHECK(ndev != NULL, "NET/Socket : devices: ndev is NULL");
    pthread_mutex_lock(&g_lock);
    int refs = g_refs;
    pthread_mutex_unlock(&g_lock);
    if (refs == 0) {
        WARN("NET/Socket : devices called before init");
        return ecclInvalidUsage;
    }
    *ndev = 1;
    return ecclSuccess;
}

static int read_speed_mbps(const char *ifname)
{
    char path[160];
    snprintf(path, sizeof(path), "/sys/class/net/%s/speed", ifname);
    FILE *f = fopen(path, "re");
    int speed = -1;
    if (f) {
        if (fscanf(f, "%d", &speed) != 1)
            speed = -1;
        fclose(f);
    }
    return speed > 0 ? speed : 10000; /* virtual interfaces (lo, veth) report none */
}

static ecclResult_t sock_get_properties(int dev, struct eccl_net_props *props)
{
    ECCL_ARG_CHECK(props != NULL, "NET/Socket : get_properties: props is NULL");
    ECCL_ARG_CHECK(dev == 0, "NET/Socket : get_properties: device %d does not exist", dev);
    pthread_mutex_lock(&g_lock);
    int refs = g_refs;
    pthread_mutex_unlock(&g_lock);
    if (refs == 0) {
        WARN("NET/Socket : get_properties called before init");
        return ecclInvalidUsage;
    }
    struct eccl_net_props p;
    memset(&p, 0, sizeof(p));
    snprintf(p.name, sizeof(p.name), "%s", g_ifname);
    char link[160];
    snprintf(link, sizeof(link), "/sys/class/net/%s/device", g_ifname);
    char *real = realpath(link, NULL);
    if (real) {
        snprintf(p.pci_path, sizeof(p.pci_path), "%s", real);
        free(real); /* allocated by libc's realpath, not by eccl_calloc */
    }
    p.guid = (uint64_t)dev;
    p.ptr_support = ECCL_NET_PTR_HOST;
    p.speed_mbps = read_speed_mbps(g_ifname);
    p.port = 0;
    p.max_comms = 65536;
    p.max_recvs = 1;
    p.max_msg_bytes = SOCK_MAX_MSG;
    *props = p;
    return ecclSuccess;
}

/* ---- listen and the handle ---- */

struct sock_pending {
    int fd;
    bool authing; /* job secret: the handshake (hs) comes before the hello */
    struct eccl_auth_hs hs;
    size_t got;
    unsigned char buf[WIRE_HELLO_BYTES];
    uint64_t deadline;
    char peer[64];
};

struct sock_partial {
    uint64_t conn_id;
    int nsocks;
    int have;
    uint64_t deadline;
    char peer[64];
    int fds[SOCK_MAX_SOCKS + 1];
};

struct sock_listen {
    uint32_t check;
    int fd;
    uint64_t magic;
    union eccl_sockaddr addr;
    int npending;
    struct sock_pending pending[SOCK_MAX_PENDING];
    int npartial;
    struct sock_partial partial[SOCK_MAX_PARTIAL];
};

struct sock_handle {
    uint64_t magic;
    union eccl_sockaddr addr;
};

static void handle_encode(const struct sock_handle *h, unsigned char *p)
{
    memset(p, 0, ECCL_NET_HANDLE_BYTES);
    put32(p, WIRE_HANDLE_PROTO);
    put16(p + 4, WIRE_VERSION);
    put64(p + 8, h->magic);
    if (h->addr.sa.sa_family == AF_INET) {
        put16(p + 6, 4);
        memcpy(p + 16, &h->addr.sin.sin_port, 2); /* already in network order */
        memcpy(p + 20, &h->addr.sin.sin_addr, 4);
    } else {
        put16(p + 6, 6);
        memcpy(p + 16, &h->addr.sin6.sin6_port, 2);
        memcpy(p + 20, &h->addr.sin6.sin6_addr, 16);
    }
}

static ecclResult_t handle_decode(const unsigned char *p, struct sock_handle *h)
{
    uint32_t proto = get32(p);
    uint16_t version = get16(p + 4), family = get16(p + 6);
    if (proto != WIRE_HANDLE_PROTO || version != WIRE_VERSION || (family != 4 && family != 6)) {
        WARN("NET/Socket : connect: not a socket handle (magic 0x%08x, version %u, family %u)",
             proto, version, family);
        return ecclInvalidArgument;
    }
    memset(h, 0, sizeof(*h));
    h->magic = get64(p + 8);
    if (family == 4) {
        h->addr.sin.sin_family = AF_INET;
        memcpy(&h->addr.sin.sin_port, p + 16, 2);
        memcpy(&h->addr.sin.sin_addr, p + 20, 4);
    } else {
        h->addr.sin6.sin6_family = AF_INET6;
        memcpy(&h->addr.sin6.sin6_port, p + 16, 2);
        memcpy(&h->addr.sin6.sin6_addr, p + 20, 16);
    }
    return ecclSuccess;
}

static ecclResult_t sock_listen(int dev, void *handle, void **listen_comm)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(handle != NULL && listen_comm != NULL, "NET/Socket : listen: NULL argument");
    ECCL_ARG_CHECK(dev == 0, "NET/Socket : listen: device %d does not exist", dev);
    pthread_mutex_lock(&g_lock);
    int refs = g_refs;
    union eccl_sockaddr addr = g_addr;
    pthread_mutex_unlock(&g_lock);
    if (refs == 0) {
        WARN("NET/Socket : listen called before init");
        return ecclInvalidUsage;
    }
    struct sock_listen *l = NULL;
    ECCL_CALLOC_GOTO(l, 1, "net-socket-listen", res, out);
    l->check = CHECK_LISTEN;
    l->fd = -1;
    ECCL_TRY_GOTO(eccl_socket_listen(&addr, &l->fd), res, err_free);
    l->addr = addr;
    l->magic = random_u64();
    struct sock_handle h = {.magic = l->magic, .addr = addr};
    handle_encode(&h, handle);
    char buf[80];
    INFO(ECCL_LOG_NET, "NET/Socket : listening on %s", eccl_sockaddr_str(&addr, buf, sizeof(buf)));
    *listen_comm = l;
    return ecclSuccess;
err_free:
    eccl_free(l);
out:
    return res;
}

static void pending_drop(struct sock_listen *l, int i)
{
    eccl_socket_close(&l->pending[i].fd);
    l->pending[i] = l->pending[--l->npending];
}

static void partial_drop(struct sock_listen *l, int i)
{
    struct sock_partial *p = &l->partial[i];
    for (int k = 0; k <= SOCK_MAX_SOCKS; k++)
        eccl_socket_close(&p->fds[k]);
    l->partial[i] = l->partial[--l->npartial];
}

/* Decodes and checks a hello for the listener of `magic` (pure: fuzzed); false after a WARN. */
static bool hello_check(const unsigned char *buf, uint64_t magic, const char *peer,
                        struct wire_hello *out)
{
    struct wire_hello h;
    hello_decode(buf, &h);
    if (h.proto != WIRE_HELLO_PROTO) {
        WARN("NET/Socket : refused connection from %s: wrong magic 0x%08x (not an eccl socket "
             "connection)",
             peer, h.proto);
        return false;
    }
    if (h.version != WIRE_VERSION) {
        WARN("NET/Socket : refused connection from %s: protocol version %u, expected %u", peer,
             h.version, WIRE_VERSION);
        return false;
    }
    if (h.magic != magic) {
        WARN("NET/Socket : refused connection from %s: wrong magic 0x%016llx (a handle of "
             "another listener)",
             peer, (unsigned long long)h.magic);
        return false;
    }
    if (h.nsocks < 1 || h.nsocks > SOCK_MAX_SOCKS || h.index > h.nsocks || h.flags != 0 ||
        h.reserved != 0) {
        WARN("NET/Socket : refused connection from %s: bad header (socket %u of %u, flags 0x%x, "
             "reserved 0x%x)",
             peer, h.index, h.nsocks, h.flags, h.reserved);
        return false;
    }
    *out = h;
    return true;
}

/* Checks a complete hello and files its socket under its connection. Returns false (after a
 * WARN) when the socket is refused; the caller then closes it. */
static bool hello_accept(struct sock_listen *l, struct sock_pending *pd)
{
    struct wire_hello h;
    if (!hello_check(pd->buf, l->magic, pd->peer, &h))
        return false;
    struct sock_partial *p = NULL;
    for (int i = 0; i < l->npartial; i++)
        if (l->partial[i].conn_id == h.conn_id)
            p = &l->partial[i];
    if (p) {
        if (p->nsocks != h.nsocks || p->fds[h.index] >= 0) {
            WARN("NET/Socket : refused connection from %s: socket %u of %u does not fit "
                 "connection %016llx (%d sockets%s)",
                 pd->peer, h.index, h.nsocks, (unsigned long long)h.conn_id, p->nsocks,
                 p->nsocks == h.nsocks ? ", index already taken" : "");
            return false;
        }
    } else {
        if (l->npartial == SOCK_MAX_PARTIAL) {
            WARN("NET/Socket : refused connection from %s: %d connections already half-open",
                 pd->peer, SOCK_MAX_PARTIAL);
            return false;
        }
        p = &l->partial[l->npartial++];
        p->conn_id = h.conn_id;
        p->nsocks = h.nsocks;
        p->have = 0;
        p->deadline = pd->deadline;
        snprintf(p->peer, sizeof(p->peer), "%s", pd->peer);
        for (int k = 0; k <= SOCK_MAX_SOCKS; k++)
            p->fds[k] = -1;
    }
    p->fds[h.index] = pd->fd;
    pd->fd = -1;
    p->have++;
    return true;
}

/* Reads what has arrived of pending hellos; refuses bad, short or late ones. */
static void pending_progress(struct sock_listen *l, uint64_t now)
{
    for (int i = l->npending - 1; i >= 0; i--) {
        struct sock_pending *pd = &l->pending[i];
        if (pd->authing) {
            ecclResult_t r = eccl_auth_hs_step(&pd->hs, pd->fd);
            if (r == ecclInProgress && now >= pd->deadline) {
                WARN("auth: refused a net-transport connection from %s: timed out waiting for "
                     "the handshake",
                     pd->peer);
                r = ecclRemoteError;
            }
            if (r != ecclSuccess && r != ecclInProgress) { /* refused and logged */
                pending_drop(l, i);
                continue;
            }
            pd->authing = r == ecclInProgress;
            if (pd->authing)
                continue;
        }
        ssize_t n;
        do {
            n = recv(pd->fd, pd->buf + pd->got, WIRE_HELLO_BYTES - pd->got, MSG_DONTWAIT);
            if (n > 0)
                pd->got += (size_t)n;
        } while (n > 0 && pd->got < WIRE_HELLO_BYTES);
        if (pd->got == WIRE_HELLO_BYTES) {
            /* Bytes after the hello stay in the socket: they belong to the connection. */
            if (!hello_accept(l, pd))
                eccl_socket_close(&pd->fd);
            l->pending[i] = l->pending[--l->npending];
            continue;
        }
        if (n == 0) {
            WARN("NET/Socket : refused connection from %s: truncated header (peer closed after "
                 "%zu of %d bytes)",
                 pd->peer, pd->got, WIRE_HELLO_BYTES);
            pending_drop(l, i);
            continue;
        }
        if (!errno_would_block(errno)) {
            WARN("NET/Socket : refused connection from %s: %s while reading its header", pd->peer,
                 strerror(errno));
            pending_drop(l, i);
            continue;
        }
        if (now >= pd->deadline) {
            WARN("NET/Socket : refused connection from %s: timed out waiting for its header "
                 "(%zu of %d bytes after %lld ms)",
                 pd->peer, pd->got, WIRE_HELLO_BYTES, (long long)eccl_param_socket_handshake_ms());
            pending_drop(l, i);
        }
    }
}

static ecclResult_t sock_accept(void *listen_comm, void **recv_comm)
{
    struct sock_listen *l = listen_comm;
    ECCL_ARG_CHECK(l != NULL && l->check == CHECK_LISTEN && recv_comm != NULL,
                   "NET/Socket : accept: not a listen comm");
    uint64_t now = eccl_now_ns();
    uint64_t timeout_ns = (uint64_t)ECCL_MAX(eccl_param_socket_handshake_ms(), 1) * ECCL_NS_PER_MS;
    for (;;) {
        union eccl_sockaddr from;
        socklen_t len = sizeof(from);
        memset(&from, 0, sizeof(from));
        int fd = ECCL_FAULT_SYS("sys_accept", EMFILE,
                                accept4(l->fd, &from.sa, &len, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            WARN("NET/Socket : accept failed: %s", strerror(errno));
            return ecclSystemError;
        }
        char peer[64];
        eccl_sockaddr_str(&from, peer, sizeof(peer));
        if (l->npending == SOCK_MAX_PENDING) {
            WARN("NET/Socket : refused connection from %s: %d connections already wait for "
                 "their header",
                 peer, SOCK_MAX_PENDING);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct sock_pending *pd = &l->pending[l->npending++];
        memset(pd, 0, sizeof(*pd));
        pd->fd = fd;
        pd->deadline = now + timeout_ns;
        snprintf(pd->peer, sizeof(pd->peer), "%s", peer);
        if (eccl_auth_enabled()) {
            pd->authing = true;
            ecclResult_t r = eccl_auth_hs_init(&pd->hs, ECCL_AUTH_NET, true, peer);
            if (r != ecclSuccess) {
                pending_drop(l, l->npending - 1);
                return r;
            }
        }
    }
    pending_progress(l, now);
    for (int i = l->npartial - 1; i >= 0; i--) {
        struct sock_partial *p = &l->partial[i];
        if (p->have == p->nsocks + 1) {
            int nsocks = p->nsocks;
            int fds[SOCK_MAX_SOCKS + 1];
            char peer[64];
            memcpy(fds, p->fds, sizeof(fds));
            snprintf(peer, sizeof(peer), "%s", p->peer);
            l->partial[i] = l->partial[--l->npartial];
            struct sock_comm *c = NULL;
            ECCL_TRY(comm_create_take(false, nsocks, fds, peer, &c));
            *recv_comm = c;
            return ecclSuccess;
        }
        if (now >= p->deadline) {
            WARN("NET/Socket : dropped connection %016llx from %s: %d of %d sockets arrived "
                 "before the deadline",
                 (unsigned long long)p->conn_id, p->peer, p->have, p->nsocks + 1);
            partial_drop(l, i);
        }
    }
    *recv_comm = NULL;
    return ecclSuccess;
}

static ecclResult_t sock_close_listen(void *listen_comm)
{
    struct sock_listen *l = listen_comm;
    if (!l)
        return ecclSuccess;
    ECCL_ARG_CHECK(l->check == CHECK_LISTEN, "NET/Socket : close_listen: not a listen comm");
    while (l->npending > 0)
        pending_drop(l, l->npending - 1);
    while (l->npartial > 0)
        partial_drop(l, l->npartial - 1);
    eccl_socket_close(&l->fd);
    l->check = 0;
    eccl_free(l);
    return ecclSuccess;
}

/* ---- connect ---- */

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_AUTH, CONN_HELLO, CONN_DONE };

struct sock_connecting {
    struct sock_connecting *next; /* g_connects, protected by g_lock */
    unsigned char key[WIRE_HANDLE_BYTES];
    int dev;
    struct sock_handle h;
    char peer[64];
    uint64_t conn_id;
    int nsocks;
    uint64_t deadline;
    int last_errno;
    int fds[SOCK_MAX_SOCKS + 1];
    enum conn_state state[SOCK_MAX_SOCKS + 1];
    size_t sent[SOCK_MAX_SOCKS + 1];
    uint64_t retry_at[SOCK_MAX_SOCKS + 1];
    uint32_t backoff_ms[SOCK_MAX_SOCKS + 1];
    struct eccl_auth_hs hs[SOCK_MAX_SOCKS + 1]; /* job secret: CONN_AUTH */
};

static void connecting_free(struct sock_connecting *k)
{
    for (int i = 0; i <= k->nsocks; i++)
        eccl_socket_close(&k->fds[i]);
    eccl_free(k);
}

static bool connect_retryable(int e)
{
    return e == ECONNREFUSED || e == ETIMEDOUT || e == ENETUNREACH || e == EHOSTUNREACH ||
           e == ECONNRESET || e == EAGAIN;
}

/* Advances socket i of a connect. ecclSuccess (done or not yet), or an error after a WARN. */
static ecclResult_t connecting_step(struct sock_connecting *k, int i, uint64_t now)
{
    int e = 0;
    switch (k->state[i]) {
    case CONN_IDLE: {
        if (now < k->retry_at[i])
            return ecclSuccess;
        int fd = ECCL_FAULT_SYS(
            "sys_socket", EMFILE,
            socket(k->h.addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (fd < 0) {
            WARN("NET/Socket : socket failed: %s", strerror(errno));
            return ecclSystemError;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        k->fds[i] = fd;
        if (ECCL_FAULT_SYS("sys_connect", EACCES,
                           connect(fd, &k->h.addr.sa, eccl_sockaddr_len(&k->h.addr))) == 0) {
            k->state[i] = CONN_AUTH;
            if (eccl_auth_enabled())
                ECCL_TRY(eccl_auth_hs_init(&k->hs[i], ECCL_AUTH_NET, false, k->peer));
            return connecting_step(k, i, now);
        }
        if (errno == EINPROGRESS) {
            k->state[i] = CONN_CONNECTING;
            return ecclSuccess;
        }
        e = errno;
        break;
    }
    case CONN_CONNECTING: {
        struct pollfd p = {.fd = k->fds[i], .events = POLLOUT};
        int rc = poll(&p, 1, 0);
        if (rc == 0)
            return ecclSuccess;
        socklen_t len = sizeof(e);
        if (rc < 0 || getsockopt(k->fds[i], SOL_SOCKET, SO_ERROR, &e, &len) != 0)
            e = errno;
        if (e == 0) {
            k->state[i] = CONN_AUTH;
            if (eccl_auth_enabled())
                ECCL_TRY(eccl_auth_hs_init(&k->hs[i], ECCL_AUTH_NET, false, k->peer));
            return connecting_step(k, i, now);
        }
        break;
    }
    case CONN_AUTH: {
        if (!eccl_auth_enabled()) {
            k->state[i] = CONN_HELLO;
            return connecting_step(k, i, now);
        }
        ecclResult_t r = eccl_auth_hs_step(&k->hs[i], k->fds[i]);
        if (r == ecclInProgress)
            return ecclSuccess;
        if (r != ecclSuccess)
            return r; /* logged by the handshake: a peer without our secret is not retried */
        k->state[i] = CONN_HELLO;
        return connecting_step(k, i, now);
    }
    case CONN_HELLO: {
        struct wire_hello h = {.proto = WIRE_HELLO_PROTO,
                               .version = WIRE_VERSION,
                               .nsocks = (uint16_t)k->nsocks,
                               .magic = k->h.magic,
                               .conn_id = k->conn_id,
                               .index = (uint16_t)i};
        unsigned char buf[WIRE_HELLO_BYTES];
        hello_encode(&h, buf);
        ssize_t n = send(k->fds[i], buf + k->sent[i], WIRE_HELLO_BYTES - k->sent[i],
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            k->sent[i] += (size_t)n;
            if (k->sent[i] == WIRE_HELLO_BYTES)
                k->state[i] = CONN_DONE;
            return ecclSuccess;
        }
        if (n < 0 && errno_would_block(errno))
            return ecclSuccess;
        WARN("NET/Socket : connection to %s failed while sending its header: %s", k->peer,
             n == 0 ? "nothing sent" : strerror(errno));
        return ecclRemoteError;
    }
    case CONN_DONE:
        return ecclSuccess;
    }
    /* A connect that failed: retry the ones a listener that is not there yet gives. */
    eccl_socket_close(&k->fds[i]);
    k->state[i] = CONN_IDLE;
    k->last_errno = e;
    if (!connect_retryable(e)) {
        WARN("NET/Socket : connect to %s failed: %s", k->peer, strerror(e));
        return ecclSystemError;
    }
    k->backoff_ms[i] = k->backoff_ms[i] ? ECCL_MIN(k->backoff_ms[i] * 2, 100u) : 1;
    k->retry_at[i] = now + k->backoff_ms[i] * ECCL_NS_PER_MS;
    return ecclSuccess;
}

static ecclResult_t sock_connect(int dev, const void *handle, void **send_comm)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(handle != NULL && send_comm != NULL, "NET/Socket : connect: NULL argument");
    ECCL_ARG_CHECK(dev == 0, "NET/Socket : connect: device %d does not exist", dev);
    struct sock_handle h;
    ECCL_TRY(handle_decode(handle, &h));
    uint64_t now = eccl_now_ns();
    pthread_mutex_lock(&g_lock);
    if (g_refs == 0) {
        pthread_mutex_unlock(&g_lock);
        WARN("NET/Socket : connect called before init");
        return ecclInvalidUsage;
    }
    struct sock_connecting **pp = &g_connects, *k = NULL;
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->dev == dev && memcmp((*pp)->key, handle, WIRE_HANDLE_BYTES) == 0) {
            k = *pp;
            break;
        }
    }
    if (!k) {
        ECCL_CALLOC_GOTO(k, 1, "net-socket-connect", res, out_unlock);
        memcpy(k->key, handle, WIRE_HANDLE_BYTES);
        k->dev = dev;
        k->h = h;
        eccl_sockaddr_str(&h.addr, k->peer, sizeof(k->peer));
        k->conn_id = random_u64();
        int nthreads;
        sock_counts(&nthreads, &k->nsocks);
        int64_t timeout_ms = ECCL_MAX(eccl_param_socket_handshake_ms(), 1);
        k->deadline = now + (uint64_t)timeout_ms * ECCL_NS_PER_MS;
        for (int i = 0; i <= SOCK_MAX_SOCKS; i++)
            k->fds[i] = -1;
        k->next = g_connects;
        g_connects = k;
        pp = &g_connects;
    }
    int done = 0;
    for (int i = 0; i <= k->nsocks; i++) {
        ECCL_TRY_GOTO(connecting_step(k, i, now), res, err_unlink);
        done += k->state[i] == CONN_DONE;
    }
    if (done == k->nsocks + 1) {
        *pp = k->next;
        pthread_mutex_unlock(&g_lock);
        struct sock_comm *c = NULL;
        res = comm_create_take(true, k->nsocks, k->fds, k->peer, &c);
        eccl_free(k);
        if (res == ecclSuccess)
            *send_comm = c;
        return res;
    }
    if (now >= k->deadline) {
        WARN("NET/Socket : timed out connecting to %s after %lld ms (%d of %d sockets connected%s"
             "%s)",
             k->peer, (long long)eccl_param_socket_handshake_ms(), done, k->nsocks + 1,
             k->last_errno ? ", last error: " : "", k->last_errno ? strerror(k->last_errno) : "");
        res = ecclRemoteError;
        goto err_unlink;
    }
    *send_comm = NULL;
    goto out_unlock;
err_unlink:
    *pp = k->next;
    connecting_free(k);
out_unlock:
    pthread_mutex_unlock(&g_lock);
    return res;
}

/* ---- memory registration ---- */

static ecclResult_t sock_reg_mr(void *comm, void *data, size_t size, int type, void **mhandle)
{
    ecclResult_t res = ecclSuccess;
    struct sock_comm *c = comm;
    ECCL_ARG_CHECK(c != NULL && (c->check == CHECK_SEND || c->check == CHECK_RECV),
                   "NET/Socket : reg_mr: not a send or receive comm");
    ECCL_ARG_CHECK(mhandle != NULL, "NET/Socket : reg_mr: mhandle is NULL");
    ECCL_ARG_CHECK(data != NULL || size == 0, "NET/Socket : reg_mr: NULL buffer of %zu bytes",
                   size);
    if (type != ECCL_NET_PTR_HOST) {
        WARN("NET/Socket : reg_mr: pointer type %d is not supported (sockets move host memory "
             "only)",
             type);
        return ecclInvalidArgument;
    }
    struct sock_mr *m = NULL;
    ECCL_CALLOC_GOTO(m, 1, "net-socket-mr", res, out);
    m->check = CHECK_MR;
    m->data = data;
    m->size = size;
    m->next = c->mrs;
    c->mrs = m;
    *mhandle = m;
out:
    return res;
}

static ecclResult_t sock_dereg_mr(void *comm, void *mhandle)
{
    struct sock_comm *c = comm;
    ECCL_ARG_CHECK(c != NULL && (c->check == CHECK_SEND || c->check == CHECK_RECV),
                   "NET/Socket : dereg_mr: not a send or receive comm");
    if (!mhandle)
        return ecclSuccess;
    for (struct sock_mr **pp = &c->mrs; *pp; pp = &(*pp)->next) {
        if (*pp == mhandle) {
            struct sock_mr *m = *pp;
            *pp = m->next;
            m->check = 0;
            eccl_free(m);
            return ecclSuccess;
        }
    }
    WARN("NET/Socket : dereg_mr: %p is not registered on this comm", mhandle);
    return ecclInvalidArgument;
}

/* ---- data ---- */

static ecclResult_t check_post(struct sock_comm *c, uint32_t want, void *data, size_t size,
                               void *mhandle, void **request, const char *what)
{
    ECCL_ARG_CHECK(c != NULL && c->check == want, "NET/Socket : %s: not a %s comm", what,
                   want == CHECK_SEND ? "send" : "receive");
    ECCL_ARG_CHECK(request != NULL, "NET/Socket : %s: request is NULL", what);
    ECCL_ARG_CHECK(data != NULL || size == 0, "NET/Socket : %s: NULL buffer of %zu bytes", what,
                   size);
    ECCL_ARG_CHECK(size <= SOCK_MAX_MSG, "NET/Socket : %s: %zu bytes is over the %zu-byte limit",
                   what, size, SOCK_MAX_MSG);
    if (mhandle) {
        const struct sock_mr *m = mhandle;
        ECCL_ARG_CHECK(m->check == CHECK_MR, "NET/Socket : %s: bad memory handle", what);
        ECCL_ARG_CHECK((char *)data >= m->data && size <= m->size &&
                           (size_t)((char *)data - m->data) <= m->size - size,
                       "NET/Socket : %s: buffer %p+%zu is outside its registration %p+%zu", what,
                       data, size, (void *)m->data, m->size);
    }
    return comm_error(c);
}

/* Writes queued message headers on the control socket, in order. Caller's thread. */
static ecclResult_t ctrl_send_progress(struct sock_comm *c)
{
    while (c->ctrl_next != c->posted) {
        struct sock_req *r = &c->reqs[c->ctrl_next % ECCL_NET_MAX_REQUESTS];
        ssize_t n = send(c->ctrl_fd, r->hdr + r->hdr_sent, WIRE_MSG_BYTES - r->hdr_sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            r->hdr_sent += (size_t)n;
            if (r->hdr_sent == WIRE_MSG_BYTES)
                c->ctrl_next++;
            continue;
        }
        if (n < 0 && errno_would_block(errno))
            return ecclSuccess;
        int e = n < 0 ? errno : EPIPE;
        comm_fail(c, e == EPIPE || e == ECONNRESET ? ecclRemoteError : ecclSystemError,
                  "control socket: %s while sending the header of message %u", strerror(e),
                  r->msg_seq);
        return comm_error(c);
    }
    return ecclSuccess;
}

/* Reads message headers and matches each to the oldest posted receive of its tag; stops at a
 * header nobody waits for yet. Caller's thread. */
static ecclResult_t ctrl_recv_progress(struct sock_comm *c)
{
    for (;;) {
        /* The oldest live, unmatched receive: reading further is useless without one. */
        bool waiting = false;
        for (uint32_t n = c->released; n != c->posted; n++) {
            struct sock_req *r = &c->reqs[n % ECCL_NET_MAX_REQUESTS];
            if (r->live && !r->matched)
                waiting = true;
        }
        if (!waiting || c->ctrl_eof)
            return ecclSuccess;
        if (c->in_got < WIRE_MSG_BYTES) {
            ssize_t n =
                recv(c->ctrl_fd, c->in_hdr + c->in_got, WIRE_MSG_BYTES - c->in_got, MSG_DONTWAIT);
            if (n > 0) {
                c->in_got += (size_t)n;
                continue;
            }
            if (n < 0 && errno_would_block(errno))
                return ecclSuccess;
            if (n == 0 && c->in_got == 0) {
                /* At a message boundary: an error only for receives that wait for more. */
                c->ctrl_eof = true;
                return ecclSuccess;
            }
            if (n == 0)
                comm_fail(c, ecclRemoteError,
                          "truncated message header: peer closed after %zu of %d bytes", c->in_got,
                          WIRE_MSG_BYTES);
            else
                comm_fail(c, errno == ECONNRESET ? ecclRemoteError : ecclSystemError,
                          "control socket: %s", strerror(errno));
            return comm_error(c);
        }
        struct wire_msg mh;
        if (!msg_decode(c->in_hdr, c->msgs_in, &mh)) {
            comm_fail(c, ecclRemoteError,
                      "bad message header (magic 0x%08x, sequence %u where %u was expected, "
                      "reserved 0x%x)",
                      mh.proto, mh.seq, c->msgs_in, mh.reserved);
            return comm_error(c);
        }
        uint32_t seq = mh.seq;
        uint64_t size = mh.size;
        int tag = mh.tag;
        struct sock_req *match = NULL;
        for (uint32_t n = c->released; n != c->posted && !match; n++) {
            struct sock_req *r = &c->reqs[n % ECCL_NET_MAX_REQUESTS];
            if (r->live && !r->matched && r->tag == tag)
                match = r;
        }
        if (!match)
            return ecclSuccess; /* keep the header until a receive of this tag is posted */
        if (size > match->cap) {
            comm_fail(c, ecclRemoteError,
                      "message %u of %llu bytes is larger than the posted receive buffer of %zu "
                      "bytes (tag %d)",
                      seq, (unsigned long long)size, match->cap, tag);
            return comm_error(c);
        }
        match->size = (size_t)size;
        match->msg_seq = seq;
        match->matched = true;
        c->msgs_in++;
        c->in_got = 0;
        req_enqueue(c, match);
    }
}

static ecclResult_t sock_isend(void *send_comm, void *data, size_t size, int tag, void *mhandle,
                               void **request)
{
    struct sock_comm *c = send_comm;
    ECCL_TRY(check_post(c, CHECK_SEND, data, size, mhandle, request, "isend"));
    if (c->posted - c->released == ECCL_NET_MAX_REQUESTS) {
        *request = NULL;
        return ecclSuccess;
    }
    struct sock_req *r = &c->reqs[c->posted % ECCL_NET_MAX_REQUESTS];
    memset(r, 0, sizeof(*r));
    r->comm = c;
    r->live = true;
    r->matched = true;
    r->data = data;
    r->cap = size;
    r->size = size;
    r->tag = tag;
    r->msg_seq = c->posted;
    msg_encode(r->hdr, r->msg_seq, size, tag);
    req_enqueue(c, r);
    c->posted++;
    ECCL_TRY(ctrl_send_progress(c));
    *request = r;
    return ecclSuccess;
}

static ecclResult_t sock_irecv(void *recv_comm, void *data, size_t size, int tag, void *mhandle,
                               void **request)
{
    struct sock_comm *c = recv_comm;
    ECCL_TRY(check_post(c, CHECK_RECV, data, size, mhandle, request, "irecv"));
    if (c->posted - c->released == ECCL_NET_MAX_REQUESTS) {
        *request = NULL;
        return ecclSuccess;
    }
    struct sock_req *r = &c->reqs[c->posted % ECCL_NET_MAX_REQUESTS];
    memset(r, 0, sizeof(*r));
    r->comm = c;
    r->live = true;
    r->data = data;
    r->cap = size;
    r->tag = tag;
    c->posted++;
    ECCL_TRY(ctrl_recv_progress(c));
    *request = r;
    return ecclSuccess;
}

static bool req_data_complete(const struct sock_comm *c, struct sock_req *r)
{
    if (!r->matched)
        return false;
    if (c->is_send && r->hdr_sent < WIRE_MSG_BYTES)
        return false;
    return atomic_load_explicit(&r->pieces_done, memory_order_acquire) == r->npieces;
}

static ecclResult_t sock_test(void *request, int *done, size_t *size)
{
    struct sock_req *r = request;
    ECCL_ARG_CHECK(r != NULL && done != NULL, "NET/Socket : test: NULL argument");
    struct sock_comm *c = r->comm;
    ECCL_ARG_CHECK(c != NULL && (c->check == CHECK_SEND || c->check == CHECK_RECV) &&
                       r >= c->reqs && r < c->reqs + ECCL_NET_MAX_REQUESTS && r->live,
                   "NET/Socket : test: %p is not a live request", request);
    *done = 0;
    ECCL_TRY(comm_error(c));
    if (c->is_send)
        ECCL_TRY(ctrl_send_progress(c));
    else
        ECCL_TRY(ctrl_recv_progress(c));
    if (c->inline_progress) {
        struct pollfd pfds[SOCK_MAX_SOCKS];
        int npfds;
        for (int pass = 0; pass < SOCK_INLINE_PASSES; pass++)
            if (worker_pass(&c->workers[0], pfds, &npfds) <= 0)
                break;
        ECCL_TRY(comm_error(c));
    }
    /* Completion in order: the request and every older one must have their data. */
    bool complete = req_data_complete(c, r);
    for (uint32_t n = c->released; complete && n != c->posted; n++) {
        struct sock_req *o = &c->reqs[n % ECCL_NET_MAX_REQUESTS];
        if (o == r)
            break;
        if (o->live && !req_data_complete(c, o))
            complete = false;
    }
    if (!complete) {
        /* The sender closed at a message boundary: a receive still unmatched never will be.
         * Only this request and older ones count: a later one, posted ahead for a message that
         * was never sent, must not fail a matched one whose data is still arriving on the data
         * sockets (the sender may close as soon as its last byte is written). */
        for (uint32_t n = c->released; c->ctrl_eof && n != c->posted; n++) {
            struct sock_req *o = &c->reqs[n % ECCL_NET_MAX_REQUESTS];
            if (o->live && !o->matched) {
                comm_fail_closed(c, "peer closed the connection while receives wait for a message");
                return comm_error(c);
            }
            if (o == r)
                break;
        }
        return ecclSuccess;
    }
    r->live = false;
    if (size)
        *size = r->size;
    *done = 1;
    while (c->released != c->posted && !c->reqs[c->released % ECCL_NET_MAX_REQUESTS].live)
        c->released++;
    return ecclSuccess;
}

static ecclResult_t sock_close_comm(void *comm, uint32_t want, const char *what)
{
    struct sock_comm *c = comm;
    if (!c)
        return ecclSuccess;
    ECCL_ARG_CHECK(c->check == want, "NET/Socket : %s: wrong kind of comm", what);
    comm_destroy(c);
    return ecclSuccess;
}

static ecclResult_t sock_close_send(void *send_comm)
{
    return sock_close_comm(send_comm, CHECK_SEND, "close_send");
}

static ecclResult_t sock_close_recv(void *recv_comm)
{
    return sock_close_comm(recv_comm, CHECK_RECV, "close_recv");
}

static void sock_fini(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_refs > 0 && --g_refs == 0) {
        while (g_connects) {
            struct sock_connecting *k = g_connects;
            g_connects = k->next;
            connecting_free(k);
        }
    }
    pthread_mutex_unlock(&g_lock);
}

static bool sock_peer_closed(void *recv_comm)
{
    struct sock_comm *c = recv_comm;
    return c && !c->is_send && c->peer_closed;
}

const struct eccl_net_ops eccl_net_socket = {
    .name = "socket",
    .init = sock_init,
    .devices = sock_devices,
    .get_properties = sock_get_properties,
    .listen = sock_listen,
    .connect = sock_connect,
    .accept = sock_accept,
    .reg_mr = sock_reg_mr,
    .dereg_mr = sock_dereg_mr,
    .isend = sock_isend,
    .irecv = sock_irecv,
    .test = sock_test,
    .close_send = sock_close_send,
    .close_recv = sock_close_recv,
    .close_listen = sock_close_listen,
    .peer_closed = sock_peer_closed,
    .fini = sock_fini,
};

/* ---- the wire format without I/O, for tests and fuzzing (net_socket.h) ---- */

_Static_assert(PROXY_SOCK_HELLO_BYTES == WIRE_HELLO_BYTES && PROXY_SOCK_MSG_BYTES == WIRE_MSG_BYTES,
               "net_socket.h's sizes");

void proxy_sock_handle_encode(uint64_t magic, const union eccl_sockaddr *addr, void *p)
{
    struct sock_handle h = {.magic = magic, .addr = *addr};
    handle_encode(&h, p);
}

ecclResult_t proxy_sock_handle_decode(const void *p, uint64_t *magic, union eccl_sockaddr *addr)
{
    struct sock_handle h;
    ECCL_TRY(handle_decode(p, &h));
    *magic = h.magic;
    *addr = h.addr;
    return ecclSuccess;
}

void proxy_sock_hello_encode(uint64_t magic, const struct proxy_sock_hello *h, void *p)
{
    struct wire_hello w = {.proto = WIRE_HELLO_PROTO,
                           .version = WIRE_VERSION,
                           .nsocks = h->nsocks,
                           .magic = magic,
                           .conn_id = h->conn_id,
                           .index = h->index};
    hello_encode(&w, p);
}

ecclResult_t proxy_sock_hello_decode(const void *p, uint64_t magic, struct proxy_sock_hello *out)
{
    struct wire_hello w;
    if (!hello_check(p, magic, "(test)", &w))
        return ecclRemoteError;
    *out = (struct proxy_sock_hello){.nsocks = w.nsocks, .index = w.index, .conn_id = w.conn_id};
    return ecclSuccess;
}

void proxy_sock_msg_encode(uint32_t seq, uint64_t size, int tag, void *p)
{
    msg_encode(p, seq, size, tag);
}

ecclResult_t proxy_sock_msg_decode(const void *p, uint32_t seq, uint64_t *size, int *tag)
{
    struct wire_msg m;
    if (!msg_decode(p, seq, &m))
        return ecclRemoteError;
    *size = m.size;
    *tag = m.tag;
    return ecclSuccess;
}

/*
 * bootstrap.c - how the ranks of a communicator find each other, over TCP.
 *
 * ecclGetUniqueId starts a root thread listening on this host's bootstrap address; the id holds
 * that address and a random magic. Each rank connects to the root and sends a hello (magic,
 * rank, nranks, its own listening address); when all ranks are there the root answers each with
 * the table of every rank's info and exits. A duplicate rank, a mismatched nranks or the deadline
 * (ECCL_BOOTSTRAP_TIMEOUT) ends the root with an error answer that names the cause. Connections
 * without the magic are refused. After that the ranks talk over a ring of persistent sockets
 * (allgather, barrier) and one-shot connections for point-to-point messages (connector setup).
 * docs/internals/bootstrap.md describes the wire format. With a job secret (common/auth.h) every
 * connection opens with the mutual handshake; a rank's listener then runs the server side of the
 * handshakes without blocking (pending list) while the rank waits in send, recv or ring setup,
 * so that two ranks that connect to each other at the same time never wait on each other.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "core/core_int.h"

ECCL_PARAM_INT(bootstrap_timeout, "ECCL_BOOTSTRAP_TIMEOUT", 120000)

#define BOOTSTRAP_VERSION   1
#define BOOTSTRAP_ID_MAGIC  0x65636369u /* "ecci" */
#define BOOTSTRAP_MAX_MSG   (1u << 20)
#define BOOTSTRAP_MAX_RANKS (1 << 20)
#define CONN_RING           1u
#define CONN_MSG            2u

/* The opaque ecclUniqueId. */
struct bootstrap_id {
    uint32_t id_magic;
    uint32_t version;
    uint64_t magic;
    union eccl_sockaddr root;
};
_Static_assert(sizeof(struct bootstrap_id) <= ECCL_UNIQUE_ID_BYTES, "id fits");

struct hello {
    uint64_t magic;
    uint32_t version;
    int32_t rank;
    int32_t nranks;
    int32_t pad;
    struct core_peer_info info;
};

struct reply {
    uint64_t magic;
    int32_t status; /* ecclResult_t */
    int32_t nranks;
    char text[240];
};

struct conn_hdr {
    uint64_t magic;
    uint32_t type;
    int32_t from;
    uint32_t tag;
    uint32_t len;
};

struct bootstrap_msg {
    struct bootstrap_msg *next;
    int from;
    uint32_t tag;
    uint32_t len;
    char data[];
};

/* --- checks of what other processes send (pure; tests/fuzz/fuzz_bootstrap.c fuzzes them) --- */

static ecclResult_t hello_check(const struct hello *h, uint64_t magic)
{
    if (h->magic != magic || h->version != BOOTSTRAP_VERSION) {
        WARN("bootstrap root: refused a connection with a wrong magic or version (0x%llx v%u)",
             (unsigned long long)h->magic, h->version);
        return ecclRemoteError;
    }
    if (h->nranks <= 0 || h->nranks > BOOTSTRAP_MAX_RANKS || h->rank < 0 || h->rank >= h->nranks) {
        WARN("bootstrap root: refused a hello with rank %d of %d", h->rank, h->nranks);
        return ecclRemoteError;
    }
    return ecclSuccess;
}

static ecclResult_t conn_hdr_check(const struct conn_hdr *h, uint64_t magic, int nranks)
{
    if (h->magic != magic || h->from < 0 || h->from >= nranks ||
        (h->type != CONN_RING && h->type != CONN_MSG) || h->len > BOOTSTRAP_MAX_MSG) {
        WARN("bootstrap: refused a connection with a bad header (magic 0x%llx, from %d, type %u, "
             "len %u)",
             (unsigned long long)h->magic, h->from, h->type, h->len);
        return ecclRemoteError;
    }
    return ecclSuccess;
}

/* The root's answer: ecclSuccess, the error the root reports (its text logged), or
 * ecclSystemError for a malformed answer. Terminates r->text. ecclInProgress is no answer a root
 * gives: passed on, it would tell a nonblocking init's caller to wait for ever. */
static ecclResult_t reply_check(struct reply *r, uint64_t magic, int nranks)
{
    r->text[sizeof(r->text) - 1] = '\0';
    if (r->magic != magic || r->status < 0 || r->status >= ecclNumResults ||
        r->status == ecclInProgress) {
        WARN("bootstrap: malformed answer from the root");
        return ecclSystemError;
    }
    if (r->status != ecclSuccess) {
        WARN("%s", r->text);
        return (ecclResult_t)r->status;
    }
    if (r->nranks != nranks) {
        WARN("bootstrap: the root answered for %d ranks, we are %d", r->nranks, nranks);
        return ecclSystemError;
    }
    return ecclSuccess;
}

static ecclResult_t peers_check(const struct core_peer_info *peers, int nranks)
{
    for (int i = 0; i < nranks; i++) {
        if (peers[i].rank != i || !eccl_sockaddr_valid(&peers[i].listen_addr)) {
            WARN("bootstrap: the root sent a bad entry for rank %d", i);
            return ecclSystemError;
        }
    }
    return ecclSuccess;
}

static ecclResult_t id_check(const struct bootstrap_id *id)
{
    if (id->id_magic != BOOTSTRAP_ID_MAGIC || id->version != BOOTSTRAP_VERSION ||
        !eccl_sockaddr_valid(&id->root)) {
        WARN("commId is not a unique id from ecclGetUniqueId (bad magic or version)");
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

ecclResult_t core_bootstrap_decode(enum core_bootstrap_wire kind, const void *buf, size_t len,
                                   uint64_t magic, int nranks)
{
    ecclResult_t res = ecclRemoteError;
    switch (kind) {
    case CORE_BOOTSTRAP_HELLO: {
        struct hello h;
        if (len != sizeof(h))
            return ecclRemoteError;
        memcpy(&h, buf, sizeof(h));
        return hello_check(&h, magic);
    }
    case CORE_BOOTSTRAP_REPLY: {
        struct reply r;
        if (len < sizeof(r))
            return ecclRemoteError;
        memcpy(&r, buf, sizeof(r));
        ECCL_TRY(reply_check(&r, magic, nranks));
        if (nranks < 1 || len - sizeof(r) != sizeof(struct core_peer_info) * (size_t)nranks)
            return ecclRemoteError;
        struct core_peer_info *peers = eccl_calloc((size_t)nranks, sizeof(*peers), "bootstrap");
        if (!peers)
            return ecclSystemError;
        memcpy(peers, (const char *)buf + sizeof(r), len - sizeof(r));
        res = peers_check(peers, nranks);
        eccl_free(peers);
        return res;
    }
    case CORE_BOOTSTRAP_CONN: {
        struct conn_hdr h;
        if (len != sizeof(h))
            return ecclRemoteError;
        memcpy(&h, buf, sizeof(h));
        return conn_hdr_check(&h, magic, nranks);
    }
    case CORE_BOOTSTRAP_ID: {
        struct bootstrap_id id;
        if (len != sizeof(ecclUniqueId))
            return ecclInvalidArgument;
        memcpy(&id, buf, sizeof(id));
        return id_check(&id);
    }
    }
    return res;
}

ecclResult_t core_bootstrap_encode(enum core_bootstrap_wire kind, uint64_t magic, int rank,
                                   int nranks, const struct core_peer_info *peers, void *buf,
                                   size_t cap, size_t *len_out)
{
    union {
        struct hello hello;
        struct reply reply;
        struct conn_hdr conn;
        struct bootstrap_id id;
        ecclUniqueId uid;
    } u;
    memset(&u, 0, sizeof(u));
    size_t len = 0, extra = 0;
    switch (kind) {
    case CORE_BOOTSTRAP_HELLO:
        u.hello = (struct hello){.magic = magic,
                                 .version = BOOTSTRAP_VERSION,
                                 .rank = rank,
                                 .nranks = nranks,
                                 .info = peers[0]};
        len = sizeof(u.hello);
        break;
    case CORE_BOOTSTRAP_REPLY:
        u.reply.magic = magic;
        u.reply.status = ecclSuccess;
        u.reply.nranks = nranks;
        len = sizeof(u.reply);
        extra = sizeof(*peers) * (size_t)nranks;
        break;
    case CORE_BOOTSTRAP_CONN:
        u.conn = (struct conn_hdr){.magic = magic, .type = CONN_MSG, .from = rank, .len = 16};
        len = sizeof(u.conn);
        break;
    case CORE_BOOTSTRAP_ID:
        u.id = (struct bootstrap_id){.id_magic = BOOTSTRAP_ID_MAGIC,
                                     .version = BOOTSTRAP_VERSION,
                                     .magic = magic,
                                     .root = peers[0].listen_addr};
        len = sizeof(u.uid);
        break;
    }
    if (len == 0 || len + extra > cap)
        return ecclInvalidArgument;
    memcpy(buf, &u, len);
    if (extra)
        memcpy((char *)buf + len, peers, extra);
    *len_out = len + extra;
    return ecclSuccess;
}

/* An accepted connection whose handshake is under way (authentication on). */
struct bootstrap_pending {
    struct bootstrap_pending *next;
    int fd;
    uint64_t deadline;
    struct eccl_auth_hs hs;
};

#define BOOTSTRAP_MAX_PENDING 64
/* An authenticating peer answers at once: a silent one is dropped after this. */
#define BOOTSTRAP_AUTH_MS 5000

static void peer_str(int fd, char *buf, size_t len)
{
    union eccl_sockaddr a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    if (getpeername(fd, &a.sa, &alen) != 0 || !eccl_sockaddr_valid(&a))
        snprintf(buf, len, "(unknown peer)");
    else
        eccl_sockaddr_str(&a, buf, len);
}

/* --- the root ----------------------------------------------------------------------------- */

struct bootstrap_root {
    struct bootstrap_root *next;
    pthread_t thread;
    int listen_fd;
    uint64_t magic;
    uint64_t deadline_ns;
    pid_t pid;    /* the process that runs the thread: a forked child inherits the list */
    bool claimed; /* a rank of this process will join the thread */
    bool done;
};

static pthread_mutex_t roots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bootstrap_root *roots;

static void root_reply_all(int *fds, int n, uint64_t magic, ecclResult_t status, const char *text,
                           const struct core_peer_info *table, int nranks, uint64_t deadline)
{
    struct reply r;
    memset(&r, 0, sizeof(r));
    r.magic = magic;
    r.status = status;
    r.nranks = nranks;
    snprintf(r.text, sizeof(r.text), "%s", text);
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        if (eccl_socket_send_all(fds[i], &r, sizeof(r), deadline, NULL) == ecclSuccess &&
            status == ecclSuccess)
            eccl_socket_send_all(fds[i], table, sizeof(*table) * (size_t)nranks, deadline, NULL);
    }
}

static void *root_main(void *arg)
{
    struct bootstrap_root *root = arg;
    int nranks = -1, arrived = 0;
    int *fds = NULL;
    struct core_peer_info *table = NULL;
    int extra_fd = -1;
    char text[240] = "";
    ecclResult_t status = ecclSuccess;

    eccl_log_set_dev(-1);
    while (nranks < 0 || arrived < nranks) {
        int fd = -1;
        ecclResult_t r = eccl_socket_accept(root->listen_fd, &fd, root->deadline_ns, NULL);
        if (r != ecclSuccess) {
            status = ecclRemoteError;
            if (nranks < 0) {
                snprintf(text, sizeof(text), "bootstrap timed out: no rank arrived");
            } else {
                int o = snprintf(
                    text, sizeof(text),
                    "bootstrap timed out after %d of %d ranks arrived; missing:", arrived, nranks);
                for (int i = 0; i < nranks && o < (int)sizeof(text) - 12; i++)
                    if (fds[i] < 0)
                        o += snprintf(text + o, sizeof(text) - (size_t)o, " %d", i);
            }
            break;
        }
        struct hello h;
        uint64_t conn_deadline = eccl_deadline_ms(5000);
        if (conn_deadline > root->deadline_ns)
            conn_deadline = root->deadline_ns;
        char peer[64];
        peer_str(fd, peer, sizeof(peer));
        if (eccl_auth_handshake(fd, ECCL_AUTH_BOOTSTRAP, true, peer, conn_deadline, NULL) !=
            ecclSuccess) {
            close(fd); /* logged by the handshake; the root keeps serving */
            continue;
        }
        if (eccl_socket_recv_all(fd, &h, sizeof(h), conn_deadline, NULL) != ecclSuccess) {
            WARN("bootstrap root: dropped a connection that sent no complete hello");
            close(fd);
            continue;
        }
        if (hello_check(&h, root->magic) != ecclSuccess) {
            close(fd);
            continue;
        }
        if (nranks < 0) {
            nranks = h.nranks;
            fds = eccl_calloc((size_t)nranks, sizeof(*fds), "bootstrap-root");
            table = eccl_calloc((size_t)nranks, sizeof(*table), "bootstrap-root");
            if (!fds || !table) {
                status = ecclSystemError;
                snprintf(text, sizeof(text), "bootstrap root out of memory");
                extra_fd = fd;
                /* fds[] is still zeroes, not -1: the replies and closes below would take them
                 * for descriptor 0. */
                eccl_free(fds);
                fds = NULL;
                break;
            }
            for (int i = 0; i < nranks; i++)
                fds[i] = -1;
        }
        if (h.nranks != nranks) {
            status = ecclInvalidUsage;
            snprintf(text, sizeof(text),
                     "bootstrap: rank %d says the communicator has %d ranks, others say %d", h.rank,
                     h.nranks, nranks);
            extra_fd = fd;
            break;
        }
        if (fds[h.rank] >= 0) {
            status = ecclInvalidUsage;
            snprintf(text, sizeof(text),
                     "bootstrap: rank %d joined twice (a second init with the same rank)", h.rank);
            extra_fd = fd;
            break;
        }
        fds[h.rank] = fd;
        table[h.rank] = h.info;
        table[h.rank].rank = h.rank;
        arrived++;
    }
    uint64_t deadline = eccl_deadline_ms(10000);
    if (status != ecclSuccess)
        WARN("%s", text);
    if (extra_fd >= 0)
        root_reply_all(&extra_fd, 1, root->magic, status, text, table, 0, deadline);
    if (fds)
        root_reply_all(fds, nranks, root->magic, status, text, table, nranks, deadline);
    for (int i = 0; fds && i < nranks; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (extra_fd >= 0)
        close(extra_fd);
    eccl_free(fds);
    eccl_free(table);
    close(root->listen_fd);

    pthread_mutex_lock(&roots_lock);
    root->done = true;
    bool claimed = root->claimed;
    if (!claimed) {
        struct bootstrap_root **pp = &roots;
        while (*pp && *pp != root)
            pp = &(*pp)->next;
        if (*pp)
            *pp = root->next;
        pthread_detach(pthread_self());
    }
    pthread_mutex_unlock(&roots_lock);
    if (!claimed)
        eccl_free(root);
    return NULL;
}

/* A rank of this process whose root lives here waits for it to finish, so that an init that
 * returns leaves no root thread behind. */
static void root_join(uint64_t magic, bool wait)
{
    pthread_mutex_lock(&roots_lock);
    struct bootstrap_root **pp = &roots;
    while (*pp && ((*pp)->magic != magic || (*pp)->claimed || (*pp)->pid != getpid()))
        pp = &(*pp)->next;
    struct bootstrap_root *root = *pp;
    if (root && !root->done && wait) {
        root->claimed = true;
        *pp = root->next;
    } else {
        root = NULL;
    }
    pthread_mutex_unlock(&roots_lock);
    if (root) {
        pthread_join(root->thread, NULL);
        eccl_free(root);
    }
}

ecclResult_t core_bootstrap_id_create(ecclUniqueId *out)
{
    ecclResult_t res = ecclSuccess;
    struct bootstrap_id id;
    memset(&id, 0, sizeof(id));
    id.id_magic = BOOTSTRAP_ID_MAGIC;
    id.version = BOOTSTRAP_VERSION;
    ECCL_TRY(eccl_auth_load(NULL)); /* the root authenticates the ranks: a bad file fails here */
    do {
        id.magic = eccl_random64();
    } while (id.magic == 0);
    ECCL_TRY(eccl_socket_pick_addr(&id.root, NULL, 0));
    if (id.root.sa.sa_family == AF_INET)
        id.root.sin.sin_port = 0;
    else
        id.root.sin6.sin6_port = 0;

    struct bootstrap_root *root = eccl_calloc(1, sizeof(*root), "bootstrap-root");
    if (!root)
        return ecclSystemError;
    root->magic = id.magic;
    root->pid = getpid();
    root->deadline_ns = eccl_deadline_ms(eccl_param_bootstrap_timeout());
    ECCL_TRY_GOTO(eccl_socket_listen(&id.root, &root->listen_fd), res, err_free_root);
    pthread_mutex_lock(&roots_lock);
    int rc = ECCL_FAULT_THREAD(pthread_create(&root->thread, NULL, root_main, root));
    if (rc == 0) {
        root->next = roots;
        roots = root;
    }
    pthread_mutex_unlock(&roots_lock);
    if (rc != 0) {
        WARN("pthread_create of the bootstrap root failed: %s", strerror(rc));
        res = ecclSystemError;
        goto err_close_listen;
    }
    char buf[80];
    INFO(ECCL_LOG_BOOTSTRAP, "bootstrap root listening on %s",
         eccl_sockaddr_str(&id.root, buf, sizeof(buf)));
    memset(out, 0, sizeof(*out));
    memcpy(out->internal, &id, sizeof(id));
    return ecclSuccess;
err_close_listen:
    close(root->listen_fd);
err_free_root:
    eccl_free(root);
    return res;
}

/* --- the ranks ---------------------------------------------------------------------------- */

static uint64_t bs_deadline(const struct core_bootstrap *bs)
{
    return eccl_deadline_ms(bs->timeout_ms);
}

/* Accepts one connection on the listener and reads its header: a ring connection sets
 * ring_recv_fd, a message goes to the unexpected list. */
static ecclResult_t take_conn(struct core_bootstrap *bs, int fd, uint64_t deadline)
{
    ecclResult_t res = ecclSuccess;
    struct bootstrap_msg *m = NULL;
    struct conn_hdr h;
    ECCL_TRY_GOTO(eccl_socket_recv_all(fd, &h, sizeof(h), deadline, bs->abort), res, err_close);
    if (conn_hdr_check(&h, bs->magic, bs->nranks) != ecclSuccess)
        goto err_close; /* not fatal for us: keep listening */
    if (h.type == CONN_RING) {
        if (h.from != (bs->rank + bs->nranks - 1) % bs->nranks || bs->ring_recv_fd >= 0) {
            WARN("bootstrap: unexpected ring connection from rank %d", h.from);
            goto err_close;
        }
        bs->ring_recv_fd = fd;
        return ecclSuccess;
    }
    m = eccl_calloc(1, sizeof(*m) + h.len, "bootstrap-msg");
    if (!m) {
        res = ecclSystemError;
        goto err_close;
    }
    m->from = h.from;
    m->tag = h.tag;
    m->len = h.len;
    ECCL_TRY_GOTO(eccl_socket_recv_all(fd, m->data, h.len, deadline, bs->abort), res, err_free);
    close(fd);
    struct bootstrap_msg **pp = &bs->unexpected;
    while (*pp)
        pp = &(*pp)->next;
    *pp = m;
    return ecclSuccess;
err_free:
    eccl_free(m);
err_close:
    close(fd);
    return res;
}

static ecclResult_t accept_one(struct core_bootstrap *bs, uint64_t deadline)
{
    int fd = -1;
    ECCL_TRY(eccl_socket_accept(bs->listen_fd, &fd, deadline, bs->abort));
    return take_conn(bs, fd, deadline);
}

static void pending_drop(struct bootstrap_pending **pp)
{
    struct bootstrap_pending *p = *pp;
    *pp = p->next;
    if (p->fd >= 0)
        close(p->fd);
    eccl_free(p);
}

/* Advances one pending handshake; a finished one hands its connection to take_conn (the peer
 * sends its header right after its last handshake message). */
static ecclResult_t pending_step(struct core_bootstrap *bs, struct bootstrap_pending **pp,
                                 uint64_t deadline)
{
    struct bootstrap_pending *p = *pp;
    ecclResult_t r = eccl_auth_hs_step(&p->hs, p->fd);
    if (r == ecclInProgress) {
        if (eccl_deadline_passed(p->deadline)) {
            WARN("auth: refused a bootstrap connection from %s: timed out waiting for the "
                 "handshake",
                 p->hs.peer);
            pending_drop(pp);
        }
        return ecclSuccess;
    }
    if (r != ecclSuccess) { /* refused and logged: keep listening */
        pending_drop(pp);
        return ecclSuccess;
    }
    int fd = p->fd;
    p->fd = -1;
    pending_drop(pp);
    uint64_t hdr_deadline = eccl_deadline_ms(BOOTSTRAP_AUTH_MS);
    ecclResult_t res = take_conn(bs, fd, hdr_deadline < deadline ? hdr_deadline : deadline);
    /* A peer that authenticated and then failed is refused like any bad connection. */
    return res == ecclSystemError ? res : ecclSuccess;
}

/*
 * Authentication on: one round of waiting. Polls the listener, the pending handshakes and
 * wait_fd (if >= 0, for wait_events), for at most a few milliseconds; accepts new connections
 * and advances handshakes. *ready says whether wait_fd is ready.
 */
static ecclResult_t serve(struct core_bootstrap *bs, int wait_fd, short wait_events,
                          uint64_t deadline, bool *ready)
{
    struct pollfd pfd[2 + BOOTSTRAP_MAX_PENDING];
    int n = 0, npending = 0;
    *ready = false;
    if (bs->abort && atomic_load_explicit(bs->abort, memory_order_acquire))
        return ecclRemoteError;
    if (eccl_deadline_passed(deadline)) {
        WARN("bootstrap: rank %d timed out after %lld ms waiting for its peers", bs->rank,
             (long long)bs->timeout_ms);
        return ecclInternalError;
    }
    pfd[n++] = (struct pollfd){.fd = bs->listen_fd, .events = POLLIN};
    pfd[n++] = (struct pollfd){.fd = wait_fd, .events = wait_events};
    for (struct bootstrap_pending *p = bs->pending; p; p = p->next, npending++)
        pfd[n++] = (struct pollfd){.fd = p->fd, .events = eccl_auth_hs_events(&p->hs)};
    if (poll(pfd, (nfds_t)n, 10) < 0 && errno != EINTR) {
        WARN("bootstrap: poll failed: %s", strerror(errno));
        return ecclSystemError;
    }
    *ready = wait_fd >= 0 && pfd[1].revents != 0;
    /* Pending ones first (their pollfd entries are in list order), new ones after. */
    struct bootstrap_pending **pp = &bs->pending;
    for (int i = 0; i < npending && *pp; i++) {
        struct bootstrap_pending *p = *pp;
        bool was = pfd[2 + i].revents != 0 || eccl_deadline_passed(p->deadline);
        if (was) {
            ECCL_TRY(pending_step(bs, pp, deadline));
            if (*pp != p)
                continue;
        }
        pp = &p->next;
    }
    if (pfd[0].revents) {
        int fd = accept4(bs->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED) {
                WARN("bootstrap: accept failed: %s", strerror(errno));
                return ecclSystemError;
            }
            return ecclSuccess;
        }
        char peer[64];
        peer_str(fd, peer, sizeof(peer));
        if (npending >= BOOTSTRAP_MAX_PENDING) {
            WARN("auth: refused a bootstrap connection from %s: %d handshakes already pending",
                 peer, npending);
            close(fd);
            return ecclSuccess;
        }
        struct bootstrap_pending *p = eccl_calloc(1, sizeof(*p), "bootstrap-pending");
        if (!p) {
            close(fd);
            return ecclSystemError;
        }
        p->fd = fd;
        p->deadline = eccl_deadline_ms(BOOTSTRAP_AUTH_MS);
        ecclResult_t r = eccl_auth_hs_init(&p->hs, ECCL_AUTH_BOOTSTRAP, true, peer);
        p->next = bs->pending;
        bs->pending = p;
        if (r != ecclSuccess) {
            pending_drop(&bs->pending);
            return r;
        }
        ECCL_TRY(pending_step(bs, &bs->pending, deadline));
    }
    return ecclSuccess;
}

/* The client side of the handshake on fd (a connection this rank opened), serving the listener
 * meanwhile. A no-op when authentication is off. */
static ecclResult_t client_auth(struct core_bootstrap *bs, int fd, const union eccl_sockaddr *to,
                                uint64_t deadline)
{
    if (!bs->auth)
        return ecclSuccess;
    char peer[64];
    eccl_sockaddr_str(to, peer, sizeof(peer));
    struct eccl_auth_hs hs;
    ECCL_TRY(eccl_auth_hs_init(&hs, ECCL_AUTH_BOOTSTRAP, false, peer));
    for (;;) {
        ecclResult_t r = eccl_auth_hs_step(&hs, fd);
        if (r != ecclInProgress)
            return r;
        bool ready = false;
        while (!ready)
            ECCL_TRY(serve(bs, fd, eccl_auth_hs_events(&hs), deadline, &ready));
    }
}

static void pending_free_all(struct core_bootstrap *bs)
{
    while (bs->pending)
        pending_drop(&bs->pending);
}

ecclResult_t core_bootstrap_init(struct core_bootstrap *bs, const ecclUniqueId *uid, int rank,
                                 int nranks, const struct core_peer_info *mine,
                                 const _Atomic uint32_t *abort, int64_t timeout_ms)
{
    ecclResult_t res = ecclSuccess;
    struct bootstrap_id id;
    memcpy(&id, uid->internal, sizeof(id));
    ECCL_TRY(id_check(&id));
    memset(bs, 0, sizeof(*bs));
    bs->rank = rank;
    bs->nranks = nranks;
    bs->magic = id.magic;
    bs->listen_fd = bs->ring_send_fd = bs->ring_recv_fd = -1;
    bs->abort = abort;
    bs->timeout_ms = timeout_ms > 0 ? timeout_ms : eccl_param_bootstrap_timeout();
    ECCL_TRY(eccl_auth_load(&bs->auth));

    struct core_peer_info info = *mine;
    ECCL_TRY(eccl_socket_pick_addr(&info.listen_addr, NULL, 0));
    if (info.listen_addr.sa.sa_family == AF_INET)
        info.listen_addr.sin.sin_port = 0;
    else
        info.listen_addr.sin6.sin6_port = 0;
    ECCL_TRY(eccl_socket_listen(&info.listen_addr, &bs->listen_fd));

    /* The root answers at its own deadline; give it a little longer than ours so its text (which
     * names the missing ranks) arrives first. */
    uint64_t deadline = eccl_deadline_ms(bs->timeout_ms + 2000);
    int root_fd = -1;
    bool got_reply = false;
    ECCL_TRY_GOTO(eccl_socket_connect(&id.root, &root_fd, deadline, abort), res, err_close_listen);
    if (bs->auth) {
        char peer[64];
        eccl_sockaddr_str(&id.root, peer, sizeof(peer));
        ECCL_TRY_GOTO(
            eccl_auth_handshake(root_fd, ECCL_AUTH_BOOTSTRAP, false, peer, deadline, abort), res,
            err_close_root);
    }
    struct hello h;
    memset(&h, 0, sizeof(h));
    h.magic = id.magic;
    h.version = BOOTSTRAP_VERSION;
    h.rank = rank;
    h.nranks = nranks;
    h.info = info;
    ECCL_TRY_GOTO(eccl_socket_send_all(root_fd, &h, sizeof(h), deadline, abort), res,
                  err_close_root);
    struct reply r;
    res = eccl_socket_recv_all(root_fd, &r, sizeof(r), deadline, abort);
    if (res != ecclSuccess) {
        WARN("bootstrap: no answer from the root (rank %d of %d)%s", rank, nranks,
             bs->auth ? "" : "; if the job uses a secret, set ECCL_JOB_SECRET_FILE on every rank");
        goto err_close_root;
    }
    got_reply = true;
    res = reply_check(&r, id.magic, nranks);
    if (res != ecclSuccess)
        goto err_close_root;
    bs->peers = eccl_calloc((size_t)nranks, sizeof(*bs->peers), "bootstrap-peers");
    if (!bs->peers) {
        res = ecclSystemError;
        goto err_close_root;
    }
    ECCL_TRY_GOTO(eccl_socket_recv_all(root_fd, bs->peers, sizeof(*bs->peers) * (size_t)nranks,
                                       deadline, abort),
                  res, err_free_peers);
    close(root_fd);
    root_fd = -1;
    root_join(id.magic, true);
    res = peers_check(bs->peers, nranks);
    if (res != ecclSuccess)
        goto err_free_peers;

    /* The ring: connect to the next rank, accept the previous one. */
    if (nranks > 1) {
        deadline = bs_deadline(bs);
        int next = (rank + 1) % nranks;
        ECCL_TRY_GOTO(
            eccl_socket_connect(&bs->peers[next].listen_addr, &bs->ring_send_fd, deadline, abort),
            res, err_free_peers);
        ECCL_TRY_GOTO(client_auth(bs, bs->ring_send_fd, &bs->peers[next].listen_addr, deadline),
                      res, err_free_peers);
        struct conn_hdr ch = {.magic = bs->magic, .type = CONN_RING, .from = rank};
        ECCL_TRY_GOTO(eccl_socket_send_all(bs->ring_send_fd, &ch, sizeof(ch), deadline, abort), res,
                      err_free_peers);
        while (bs->ring_recv_fd < 0) {
            bool ready;
            if (bs->auth)
                ECCL_TRY_GOTO(serve(bs, -1, 0, deadline, &ready), res, err_free_peers);
            else
                ECCL_TRY_GOTO(accept_one(bs, deadline), res, err_free_peers);
        }
    }
    char buf[80];
    INFO(ECCL_LOG_BOOTSTRAP, "bootstrap: rank %d of %d connected, listening on %s", rank, nranks,
         eccl_sockaddr_str(&info.listen_addr, buf, sizeof(buf)));
    return ecclSuccess;

err_free_peers:
    eccl_free(bs->peers);
    bs->peers = NULL;
    eccl_socket_close(&bs->ring_send_fd);
    eccl_socket_close(&bs->ring_recv_fd);
err_close_root:
    if (root_fd >= 0)
        close(root_fd);
    root_join(id.magic, got_reply);
err_close_listen:
    eccl_socket_close(&bs->listen_fd);
    pending_free_all(bs);
    while (bs->unexpected) {
        struct bootstrap_msg *m = bs->unexpected;
        bs->unexpected = m->next;
        eccl_free(m);
    }
    return res;
}

void core_bootstrap_fini(struct core_bootstrap *bs)
{
    eccl_socket_close(&bs->ring_send_fd);
    eccl_socket_close(&bs->ring_recv_fd);
    eccl_socket_close(&bs->listen_fd);
    pending_free_all(bs);
    while (bs->unexpected) {
        struct bootstrap_msg *m = bs->unexpected;
        bs->unexpected = m->next;
        eccl_free(m);
    }
    eccl_free(bs->peers);
    bs->peers = NULL;
}

ecclResult_t core_bootstrap_allgather(struct core_bootstrap *bs, void *data, size_t size)
{
    int n = bs->nranks, rank = bs->rank;
    uint64_t deadline = bs_deadline(bs);
    /* Step i sends the block of rank - i and receives the block of rank - i - 1. */
    for (int i = 0; i < n - 1; i++) {
        int sblock = (rank - i + n) % n;
        int rblock = (rank - i - 1 + n) % n;
        ECCL_TRY(eccl_socket_send_all(bs->ring_send_fd, (char *)data + (size_t)sblock * size, size,
                                      deadline, bs->abort));
        ECCL_TRY(eccl_socket_recv_all(bs->ring_recv_fd, (char *)data + (size_t)rblock * size, size,
                                      deadline, bs->abort));
    }
    return ecclSuccess;
}

ecclResult_t core_bootstrap_barrier(struct core_bootstrap *bs)
{
    if (bs->nranks == 1)
        return ecclSuccess;
    ecclResult_t res = ecclSuccess;
    char *tmp = eccl_calloc((size_t)bs->nranks, 1, "bootstrap-barrier");
    if (!tmp)
        return ecclSystemError;
    res = core_bootstrap_allgather(bs, tmp, 1);
    eccl_free(tmp);
    return res;
}

ecclResult_t core_bootstrap_send(struct core_bootstrap *bs, int peer, uint32_t tag,
                                 const void *data, size_t size)
{
    ecclResult_t res = ecclSuccess;
    if (size > BOOTSTRAP_MAX_MSG) {
        WARN("bootstrap message of %zu bytes is too large", size);
        return ecclInternalError;
    }
    uint64_t deadline = bs_deadline(bs);
    int fd = -1;
    ECCL_TRY(eccl_socket_connect(&bs->peers[peer].listen_addr, &fd, deadline, bs->abort));
    ECCL_TRY_GOTO(client_auth(bs, fd, &bs->peers[peer].listen_addr, deadline), res, out);
    struct conn_hdr h = {
        .magic = bs->magic, .type = CONN_MSG, .from = bs->rank, .tag = tag, .len = (uint32_t)size};
    ECCL_TRY_GOTO(eccl_socket_send_all(fd, &h, sizeof(h), deadline, bs->abort), res, out);
    ECCL_TRY_GOTO(eccl_socket_send_all(fd, data, size, deadline, bs->abort), res, out);
out:
    close(fd);
    return res;
}

ecclResult_t core_bootstrap_recv(struct core_bootstrap *bs, int peer, uint32_t tag, void *data,
                                 size_t size)
{
    uint64_t deadline = bs_deadline(bs);
    for (;;) {
        for (struct bootstrap_msg **pp = &bs->unexpected; *pp; pp = &(*pp)->next) {
            struct bootstrap_msg *m = *pp;
            if (m->from != peer || m->tag != tag)
                continue;
            *pp = m->next;
            ecclResult_t res = ecclSuccess;
            if (m->len != size) {
                WARN("bootstrap: message %u from rank %d has %u bytes, expected %zu", tag, peer,
                     m->len, size);
                res = ecclInternalError;
            } else {
                memcpy(data, m->data, size);
            }
            eccl_free(m);
            return res;
        }
        if (bs->auth) {
            bool ready;
            ECCL_TRY(serve(bs, -1, 0, deadline, &ready));
        } else {
            ECCL_TRY(accept_one(bs, deadline));
        }
    }
}

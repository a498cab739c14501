/*
 * proxy.c - the per-rank proxy thread: runs connection-setup operations, serves shared-memory
 * segments to local peers over its UDS socket, and moves network connectors' steps.
 *
 * A network send connection is a local FIFO (kernels/conn.h) that the executor fills; the proxy
 * hands each posted slot to the backend's isend and, when the send completes, advances the FIFO's
 * head so that the executor can reuse the slot. A network receive connection is the mirror:
 * the proxy keeps receives posted into free slots and advances the tail as they complete. A
 * transport error closes the FIFO (the executor waiting on it fails at once, "closed its
 * connection") and the network connection; a local abort closes every network connection, so
 * that the remote ranks waiting on us stop at once too.
 *
 * The thread sleeps in poll() on its doorbell (rung by the executor after each step on a channel
 * with network connectors, and by op posts) and its UDS socket. Backends complete requests on
 * their own threads without a descriptor to wait on, so while network requests are in flight the
 * thread yields instead of sleeping for PROXY_HOT_MS after the last progress, then sleeps in
 * short slices (PROXY_WARM_SLEEP_US); it never sleeps longer than PROXY_MAX_SLEEP_MS, so that the
 * heartbeat keeps counting while the thread lives.
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "kernels/host_exec.h"

ECCL_PARAM_INT(proxy_stall, "ECCL_PROXY_STALL_MS", 1000)

#define PROXY_UDS_MAGIC     0x6570787975647331ULL /* "epxyuds1" */
#define PROXY_UDS_GETFD     1
#define PROXY_UDS_FD        2
#define PROXY_BUDGET        8    /* steps per connection per pass */
#define PROXY_SPIN_PASSES   64   /* idle passes (yielding) before sleeping */
#define PROXY_HOT_MS        20   /* yield, not sleep, this long after the last progress */
#define PROXY_WARM_SLEEP_US 500  /* then sleep this long while requests are in flight */
#define PROXY_MAX_CONNS     4096 /* per rank */
#define PROXY_FLUSH_MS      1000 /* a closing send connection still sends what was posted */

static const char *op_name(int type)
{
    switch (type) {
    case PROXY_OP_INIT:
        return "Init";
    case PROXY_OP_SHARED_INIT:
        return "SharedInit";
    case PROXY_OP_SETUP:
        return "Setup";
    case PROXY_OP_CONNECT:
        return "Connect";
    case PROXY_OP_EXPORT:
        return "Export";
    default:
        return "?";
    }
}

/* A datagram on the proxy's UDS socket, both ways. Fixed layout, host byte order (local only). */
struct proxy_uds_msg {
    uint64_t magic;
    uint64_t comm_magic;
    uint64_t op_id;
    uint64_t handle;
    int32_t type;
    int32_t from;
    int32_t result; /* PROXY_UDS_FD: ecclResult_t; the descriptor rides along on success */
    int32_t pad;
};
_Static_assert(sizeof(struct proxy_uds_msg) == PROXY_UDS_REC_BYTES, "proxy.h's datagram size");

/* Whether a datagram of len bytes is a `type` message of this communicator from a rank in
 * [0, nranks) (pure: tests/fuzz/fuzz_proxy_msgs.c). */
static bool uds_msg_ok(const struct proxy_uds_msg *m, size_t len, uint64_t comm_magic, int32_t type,
                       int nranks)
{
    return len == sizeof(*m) && m->magic == PROXY_UDS_MAGIC && m->comm_magic == comm_magic &&
           m->type == type && m->from >= 0 && m->from < nranks;
}

ecclResult_t proxy_uds_rec_decode(const void *buf, size_t len, uint64_t comm_magic, bool reply,
                                  int nranks, struct proxy_uds_rec *out)
{
    struct proxy_uds_msg m;
    if (len != sizeof(m))
        return ecclRemoteError;
    memcpy(&m, buf, sizeof(m));
    if (!uds_msg_ok(&m, len, comm_magic, reply ? PROXY_UDS_FD : PROXY_UDS_GETFD, nranks))
        return ecclRemoteError;
    *out = (struct proxy_uds_rec){
        .op_id = m.op_id, .handle = m.handle, .from = m.from, .result = m.result};
    return ecclSuccess;
}

size_t proxy_uds_rec_encode(const struct proxy_uds_rec *r, uint64_t comm_magic, bool reply,
                            void *buf)
{
    struct proxy_uds_msg m = {.magic = PROXY_UDS_MAGIC,
                              .comm_magic = comm_magic,
                              .op_id = r->op_id,
                              .handle = r->handle,
                              .type = reply ? PROXY_UDS_FD : PROXY_UDS_GETFD,
                              .from = r->from,
                              .result = r->result};
    memcpy(buf, &m, sizeof(m));
    return sizeof(m);
}

struct proxy_op {
    struct proxy_op *next;
    uint64_t id;
    int type;
    int conn;
    size_t req_size;
    size_t resp_size;
    union {
        struct proxy_init_req init;
        struct proxy_setup_req setup;
        struct proxy_connect_req connect; /* its fd aliases setup.dev_fd and export.fd */
        struct proxy_export_req export;
        char bytes[256];
    } req;
    union {
        struct proxy_init_resp init;
        struct proxy_setup_resp setup;
        struct proxy_connect_resp connect;
        struct proxy_export_resp export;
        char bytes[256];
    } resp;
    bool done; /* protected by ops_lock */
    ecclResult_t result;
    char error[256]; /* the proxy thread's error text, handed to the poller's thread */
};

struct proxy_conn {
    int id;
    int transport;
    bool send;
    int peer;
    uint32_t tag;
    uint32_t nslots;
    uint32_t slot_bytes;
    struct eccl_conn_ctrl *ctrl;
    void *base; /* mapping that holds ctrl */
    size_t size;
    /* shm receive: the segment, until the peer fetched it */
    int memfd;
    uint64_t handle;
    /* shm receive: the slots' device memory (a descriptor from Setup), until the peer fetched
     * it; its handle is `handle` with the low bit clear */
    int devfd;
    uint64_t dev_handle;
    /* net */
    void *listen_comm;
    void *net_comm;
    void *mhandle;
    void *req[ECCL_CONN_MAX_SLOTS];
    uint32_t posted;    /* steps handed to the backend */
    uint32_t completed; /* steps the backend finished */
    bool connected;
    bool dead;
    uint64_t flush_deadline; /* closing: send what was posted until then */
};

struct proxy_state {
    uint64_t comm_magic;
    int rank;
    int nranks;
    const _Atomic uint32_t *abort;
    bool aborted; /* proxy thread: saw *abort and closed the network */
    int uds_fd;
    char uds_name[96];
    struct eccl_bell bell;
    _Atomic uint64_t beat;
    _Atomic int tid;                /* the proxy thread's, once it runs */
    _Atomic uint64_t net_passes;    /* network progress passes */
    _Atomic uint64_t sends_pending; /* network send steps posted but not complete */
    _Atomic bool stop;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t ops_lock;
    struct proxy_op *ops; /* posted, protected by ops_lock */
    _Atomic int nops_new; /* posted but not yet picked up */
    _Atomic int nops;     /* posted and not done */
    uint64_t next_op_id;  /* protected by ops_lock */

    /* proxy thread only (and destroy, after the thread stopped) */
    struct proxy_conn **conns;
    int nconns;
    int cap_conns;
    const struct eccl_net_ops *net;
    int net_dev;
    uint64_t last_progress_ns;
};

/* ---- memory ----------------------------------------------------------------------------- */

static void conn_init_ctrl(struct proxy_conn *c)
{
    c->ctrl = c->base;
    c->ctrl->magic = ECCL_CONN_MAGIC;
    c->ctrl->nslots = c->nslots;
    c->ctrl->slot_bytes = c->slot_bytes;
}

/* Shared segment (memfd) for a shm receive connection. */
static ecclResult_t conn_alloc_shm(struct proxy_conn *c)
{
    ecclResult_t res = ecclSuccess;
    c->size = eccl_conn_bytes(c->nslots, c->slot_bytes);
    if (ECCL_FAULT("shm_create")) {
        WARN("memfd_create failed (fault injection)");
        return ecclSystemError;
    }
    int fd = ECCL_FAULT_SYS("sys_memfd", EMFILE, memfd_create("eccl-conn", MFD_CLOEXEC));
    if (fd < 0) {
        WARN("memfd_create failed: %s", strerror(errno));
        return ecclSystemError;
    }
    if (ftruncate(fd, (off_t)c->size) != 0) {
        WARN("ftruncate of a %zu-byte shared segment failed: %s", c->size, strerror(errno));
        res = ecclSystemError;
        goto err_close_fd;
    }
    void *p =
        ECCL_FAULT_MMAP("sys_mmap", mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) {
        WARN("mmap of a %zu-byte shared segment failed: %s", c->size, strerror(errno));
        res = ecclSystemError;
        goto err_close_fd;
    }
    c->base = p;
    c->memfd = fd;
    conn_init_ctrl(c);
    return ecclSuccess;
err_close_fd:
    close(fd);
    return res;
}

/* Process-local FIFO for a network connection. */
static ecclResult_t conn_alloc_local(struct proxy_conn *c)
{
    c->size = eccl_conn_bytes(c->nslots, c->slot_bytes);
    void *p = ECCL_FAULT_MMAP("sys_mmap", mmap(NULL, c->size, PROT_READ | PROT_WRITE,
                                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) {
        WARN("mmap of a %zu-byte connector failed: %s", c->size, strerror(errno));
        return ecclSystemError;
    }
    c->base = p;
    conn_init_ctrl(c);
    return ecclSuccess;
}

/* Maps the segment a local peer passed for a shm send connection; checks it. Takes fd. */
static ecclResult_t conn_import_shm(struct proxy_conn *c, int fd, uint64_t size)
{
    ecclResult_t res = ecclSuccess;
    if (size != eccl_conn_bytes(c->nslots, c->slot_bytes)) {
        WARN("rank %d offered a connector of %llu bytes where %zu were expected", c->peer,
             (unsigned long long)size, eccl_conn_bytes(c->nslots, c->slot_bytes));
        res = ecclRemoteError;
        goto out;
    }
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0 || (uint64_t)end < size) {
        WARN("rank %d offered a segment of %lld bytes, smaller than its header says (%llu)",
             c->peer, (long long)end, (unsigned long long)size);
        res = ecclRemoteError;
        goto out;
    }
    void *p =
        ECCL_FAULT_MMAP("sys_mmap", mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) {
        WARN("mmap of rank %d's %llu-byte connector failed: %s", c->peer, (unsigned long long)size,
             strerror(errno));
        res = ecclSystemError;
        goto out;
    }
    c->base = p;
    c->size = size;
    struct eccl_conn_ctrl *ctrl = p;
    if (ctrl->magic != ECCL_CONN_MAGIC || ctrl->nslots != c->nslots ||
        ctrl->slot_bytes != c->slot_bytes) {
        WARN("connector from rank %d does not match what was agreed", c->peer);
        res = ecclRemoteError;
        goto out;
    }
    c->ctrl = ctrl;
out:
    close(fd);
    return res;
}

static void conn_free(struct proxy_state *px, struct proxy_conn *c)
{
    if (c->net_comm) {
        if (c->mhandle)
            px->net->dereg_mr(c->net_comm, c->mhandle);
        if (c->send)
            px->net->close_send(c->net_comm);
        else
            px->net->close_recv(c->net_comm);
    }
    if (c->listen_comm)
        px->net->close_listen(c->listen_comm);
    if (c->base)
        munmap(c->base, c->size);
    if (c->memfd >= 0)
        close(c->memfd);
    if (c->devfd >= 0)
        close(c->devfd);
    eccl_free(c);
}

/* ---- operations --------------------------------------------------------------------------- */

/* Whether an operation's request carries a descriptor the proxy takes (its first int32). */
static bool op_takes_fd(int type)
{
    return type == PROXY_OP_CONNECT || type == PROXY_OP_SETUP || type == PROXY_OP_EXPORT;
}

/* A new connection entry, listed; NULL (with a WARN) when there is no room. */
static struct proxy_conn *conn_new(struct proxy_state *px)
{
    if (px->nconns >= PROXY_MAX_CONNS) {
        WARN("proxy: more than %d connections", PROXY_MAX_CONNS);
        return NULL;
    }
    if (px->nconns == px->cap_conns) {
        int cap = px->cap_conns ? px->cap_conns * 2 : 16;
        struct proxy_conn **n = eccl_calloc((size_t)cap, sizeof(*n), "proxy-conns");
        if (!n)
            return NULL;
        if (px->conns)
            memcpy(n, px->conns, sizeof(*n) * (size_t)px->nconns);
        eccl_free(px->conns);
        px->conns = n;
        px->cap_conns = cap;
    }
    struct proxy_conn *c = eccl_calloc(1, sizeof(*c), "proxy-conn");
    if (!c)
        return NULL;
    c->id = px->nconns;
    c->memfd = -1;
    c->devfd = -1;
    px->conns[px->nconns++] = c;
    return c;
}

static ecclResult_t op_init(struct proxy_state *px, struct proxy_op *op)
{
    const struct proxy_init_req *r = &op->req.init;
    if (op->req_size != sizeof(*r) ||
        (r->transport != PROXY_TRANSPORT_SHM && r->transport != PROXY_TRANSPORT_NET) ||
        r->peer < 0 || r->peer >= px->nranks || r->nslots < 1 || r->nslots > ECCL_CONN_MAX_SLOTS ||
        r->slot_bytes == 0 || r->slot_bytes > (1u << 30)) {
        WARN("proxy: bad Init request");
        return ecclInternalError;
    }
    struct proxy_conn *c = conn_new(px);
    if (!c)
        return ecclSystemError;
    c->transport = r->transport;
    c->send = r->send != 0;
    c->peer = r->peer;
    c->tag = r->tag;
    c->nslots = r->nslots;
    c->slot_bytes = r->slot_bytes;
    op->resp.init.conn = c->id;
    INFO(ECCL_LOG_PROXY, "New proxy %s connection %d from local rank %d, transport %d",
         c->send ? "send" : "recv", c->id, px->rank, c->transport);
    return ecclSuccess;
}

static ecclResult_t op_export(struct proxy_state *px, struct proxy_op *op)
{
    struct proxy_export_req *r = &op->req.export;
    if (op->req_size != sizeof(*r) || r->fd < 0 || r->peer < 0 || r->peer >= px->nranks ||
        r->peer == px->rank) {
        WARN("proxy: bad Export request (descriptor %d for rank %d)", r->fd, r->peer);
        return ecclInternalError; /* the descriptor is closed with the op */
    }
    struct proxy_conn *c = conn_new(px);
    if (!c)
        return ecclSystemError;
    c->transport = PROXY_TRANSPORT_SHM;
    c->send = false;
    c->peer = r->peer;
    c->devfd = r->fd;
    r->fd = -1;
    /* Served like a connector's device slots: by dev_handle only (c->handle stays 0). */
    c->dev_handle = ((uint64_t)(uint32_t)c->id << 32) | ((uint32_t)eccl_random64() & ~1u) | 2u;
    op->resp.export.handle = c->dev_handle;
    INFO(ECCL_LOG_PROXY, "proxy: export %d holds a registered buffer for local rank %d", c->id,
         c->peer);
    return ecclSuccess;
}

static ecclResult_t op_shared_init(struct proxy_state *px)
{
    if (px->net)
        return ecclSuccess;
    const struct eccl_net_ops *net = NULL;
    ECCL_TRY(proxy_net_select(&net));
    int ndev = 0;
    ecclResult_t res = net->devices(&ndev);
    if (res == ecclSuccess && ndev < 1) {
        WARN("NET/%s : no network device", net->name);
        res = ecclSystemError;
    }
    if (res != ecclSuccess) {
        net->fini();
        return res;
    }
    struct eccl_net_props props;
    memset(&props, 0, sizeof(props));
    if (net->get_properties(0, &props) == ecclSuccess)
        INFO(ECCL_LOG_PROXY | ECCL_LOG_NET, "NET/%s : rank %d uses device 0 (%s) of %d", net->name,
             px->rank, props.name, ndev);
    px->net = net;
    px->net_dev = 0;
    return ecclSuccess;
}

static struct proxy_conn *op_conn(struct proxy_state *px, struct proxy_op *op)
{
    if (op->conn < 0 || op->conn >= px->nconns) {
        WARN("proxy: %s on unknown connection %d", op_name(op->type), op->conn);
        return NULL;
    }
    return px->conns[op->conn];
}

static ecclResult_t op_setup(struct proxy_state *px, struct proxy_op *op)
{
    struct proxy_conn *c = op_conn(px, op);
    if (!c)
        return ecclInternalError;
    struct proxy_setup_resp *r = &op->resp.setup;
    memset(r, 0, sizeof(*r));
    if (c->transport == PROXY_TRANSPORT_SHM) {
        if (c->send)
            return ecclSuccess; /* the memory is the receiver's */
        if (op->req_size != 0 && op->req_size != sizeof(struct proxy_setup_req)) {
            WARN("proxy: bad Setup request for connection %d", c->id);
            return ecclInternalError;
        }
        if (c->base) {
            WARN("proxy: second Setup of connection %d", c->id);
            return ecclInternalError;
        }
        ECCL_TRY(conn_alloc_shm(c));
        c->handle = ((uint64_t)(uint32_t)c->id << 32) | (uint32_t)(eccl_random64() | 1);
        r->ctrl = c->ctrl;
        r->handle = c->handle;
        r->size = c->size;
        if (op->req_size && op->req.setup.dev_fd >= 0) {
            c->devfd = op->req.setup.dev_fd;
            op->req.setup.dev_fd = -1;
            c->dev_handle = c->handle & ~(uint64_t)1;
            r->dev_handle = c->dev_handle;
        }
        return ecclSuccess;
    }
    if (!px->net) {
        WARN("proxy: Setup of a network connection before SharedInit");
        return ecclInternalError;
    }
    ECCL_TRY(conn_alloc_local(c));
    if (!c->send)
        ECCL_TRY(px->net->listen(px->net_dev, r->net_handle, &c->listen_comm));
    r->ctrl = c->ctrl;
    return ecclSuccess;
}

/* Returns ecclInProgress while the network handshake is not complete. */
static ecclResult_t op_connect(struct proxy_state *px, struct proxy_op *op)
{
    struct proxy_conn *c = op_conn(px, op);
    if (!c)
        return ecclInternalError;
    if (c->transport == PROXY_TRANSPORT_SHM) {
        if (!c->send || c->ctrl || op->req_size != sizeof(op->req.connect)) {
            WARN("proxy: bad Connect request for connection %d", c->id);
            return ecclInternalError;
        }
        int fd = op->req.connect.fd;
        op->req.connect.fd = -1;
        ECCL_TRY(conn_import_shm(c, fd, op->req.connect.size));
        op->resp.connect.ctrl = c->ctrl;
        return ecclSuccess;
    }
    if (!c->base) {
        WARN("proxy: Connect of network connection %d before Setup", c->id);
        return ecclInternalError;
    }
    if (!c->net_comm) {
        if (c->send) {
            if (op->req_size != sizeof(op->req.connect)) {
                WARN("proxy: bad Connect request for connection %d", c->id);
                return ecclInternalError;
            }
            ECCL_TRY(px->net->connect(px->net_dev, op->req.connect.net_handle, &c->net_comm));
        } else {
            ECCL_TRY(px->net->accept(c->listen_comm, &c->net_comm));
        }
        if (!c->net_comm)
            return ecclInProgress;
        if (c->listen_comm) {
            px->net->close_listen(c->listen_comm);
            c->listen_comm = NULL;
        }
        ECCL_TRY(px->net->reg_mr(c->net_comm, eccl_conn_data(c->ctrl),
                                 (size_t)c->nslots * c->slot_bytes, ECCL_NET_PTR_HOST,
                                 &c->mhandle));
        c->connected = true;
    }
    op->resp.connect.ctrl = c->ctrl;
    return ecclSuccess;
}

static ecclResult_t op_run(struct proxy_state *px, struct proxy_op *op)
{
    switch (op->type) {
    case PROXY_OP_INIT:
        return op_init(px, op);
    case PROXY_OP_EXPORT:
        return op_export(px, op);
    case PROXY_OP_SHARED_INIT:
        return op_shared_init(px);
    case PROXY_OP_SETUP:
        return op_setup(px, op);
    case PROXY_OP_CONNECT:
        return op_connect(px, op);
    default:
        WARN("proxy: unknown operation type %d", op->type);
        return ecclInternalError;
    }
}

static int ops_progress(struct proxy_state *px)
{
    int work = 0;
    pthread_mutex_lock(&px->ops_lock);
    atomic_store_explicit(&px->nops_new, 0, memory_order_relaxed);
    for (struct proxy_op *op = px->ops; op; op = op->next) {
        if (op->done)
            continue;
        /* Run outside the lock. The op stays linked: the poller unlinks only done ops, and
         * done is set below, under the lock. */
        pthread_mutex_unlock(&px->ops_lock);
        ecclResult_t res = op_run(px, op);
        pthread_mutex_lock(&px->ops_lock);
        if (res == ecclInProgress)
            continue;
        if (res != ecclSuccess) {
            const char *e = eccl_log_last_error();
            snprintf(op->error, sizeof(op->error), "%s", e && *e ? e : "proxy operation failed");
        }
        op->result = res;
        op->done = true;
        atomic_fetch_sub_explicit(&px->nops, 1, memory_order_relaxed);
        work++;
        INFO(ECCL_LOG_PROXY,
             "proxyProgressAsync opId=0x%llx op.type=%d op.reqSize=%zu op.respSize=%zu done",
             (unsigned long long)op->id, op->type, op->req_size, op->resp_size);
        INFO(ECCL_LOG_PROXY, "Received and initiated operation=%s res=%d", op_name(op->type),
             (int)res);
    }
    pthread_mutex_unlock(&px->ops_lock);
    return work;
}

ecclResult_t proxy_op_post(struct proxy_state *px, enum proxy_op_type type, int conn,
                           const void *req, size_t req_size, size_t resp_size, uint64_t *op_id)
{
    struct proxy_op *op = eccl_calloc(1, sizeof(*op), "proxy-op");
    if (!op || req_size > sizeof(op->req) || resp_size > sizeof(op->resp)) {
        bool too_large = op != NULL;
        if (too_large)
            WARN("proxy: %s request or response too large", op_name(type));
        eccl_free(op);
        /* The proxy takes a Connect's or Setup's descriptor even when the op fails: here too.
         * (Both requests open with the int32 fd.) */
        int32_t fd = -1;
        if (op_takes_fd(type) && req && req_size >= sizeof(fd))
            memcpy(&fd, req, sizeof(fd));
        if (fd >= 0)
            close(fd);
        return too_large ? ecclInternalError : ecclSystemError;
    }
    op->type = type;
    op->conn = conn;
    op->req_size = req_size;
    op->resp_size = resp_size;
    op->req.connect.fd = -1;
    if (req_size)
        memcpy(op->req.bytes, req, req_size);
    pthread_mutex_lock(&px->ops_lock);
    op->id = px->next_op_id++;
    struct proxy_op **pp = &px->ops;
    while (*pp)
        pp = &(*pp)->next;
    *pp = op;
    *op_id = op->id;
    pthread_mutex_unlock(&px->ops_lock);
    atomic_fetch_add_explicit(&px->nops, 1, memory_order_relaxed);
    atomic_store_explicit(&px->nops_new, 1, memory_order_release);
    eccl_bell_ring(&px->bell);
    return ecclSuccess;
}

ecclResult_t proxy_op_poll(struct proxy_state *px, uint64_t op_id, void *resp, size_t resp_size)
{
    pthread_mutex_lock(&px->ops_lock);
    struct proxy_op **pp = &px->ops;
    while (*pp && (*pp)->id != op_id)
        pp = &(*pp)->next;
    struct proxy_op *op = *pp;
    if (!op) {
        pthread_mutex_unlock(&px->ops_lock);
        WARN("proxy: no operation 0x%llx", (unsigned long long)op_id);
        return ecclInternalError;
    }
    if (!op->done) {
        pthread_mutex_unlock(&px->ops_lock);
        return ecclInProgress;
    }
    *pp = op->next;
    pthread_mutex_unlock(&px->ops_lock);
    INFO(ECCL_LOG_PROXY, "ecclPollProxyResponse Received new opId=0x%llx",
         (unsigned long long)op->id);
    INFO(ECCL_LOG_PROXY, "resp.opId=0x%llx matches expected opId=0x%llx",
         (unsigned long long)op->id, (unsigned long long)op_id);
    ecclResult_t res = op->result;
    if (res != ecclSuccess)
        eccl_log_set_last_error(op->error);
    if (res == ecclSuccess && resp) {
        if (resp_size != op->resp_size) {
            WARN("proxy: response of %zu bytes read as %zu", op->resp_size, resp_size);
            res = ecclInternalError;
        } else {
            memcpy(resp, op->resp.bytes, resp_size);
        }
    }
    if (op->req.connect.fd >= 0 && op_takes_fd(op->type))
        close(op->req.connect.fd); /* not taken: the op failed before using it */
    eccl_free(op);
    return res;
}

ecclResult_t proxy_op_call(struct proxy_state *px, enum proxy_op_type type, int conn,
                           const void *req, size_t req_size, void *resp, size_t resp_size,
                           uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    uint64_t id = 0;
    ECCL_TRY(proxy_op_post(px, type, conn, req, req_size, resp_size, &id));
    struct proxy_liveness alive = {0, 0};
    for (int spin = 0;; spin++) {
        ecclResult_t r = proxy_op_poll(px, id, resp, resp_size);
        if (r != ecclInProgress)
            return r;
        ECCL_TRY(proxy_check_alive(px, &alive));
        if ((abort && atomic_load_explicit(abort, memory_order_acquire)) ||
            eccl_deadline_passed(deadline_ns)) {
            bool aborted = abort && atomic_load_explicit(abort, memory_order_acquire);
            if (!aborted)
                WARN("proxy: operation %s (opId 0x%llx) did not complete in time", op_name(type),
                     (unsigned long long)id);
            /* Leave the op to the proxy; it is freed when the proxy is destroyed. */
            return aborted ? ecclRemoteError : ecclInternalError;
        }
        if (spin < 100)
            sched_yield();
        else
            usleep(100);
    }
}

/* ---- descriptors over the UDS socket --------------------------------------------------- */

/* With a job secret a datagram is the record followed by HMAC(uds-service key, record): a
 * process without the secret can neither ask for a segment nor answer for a proxy. */
#define UDS_DGRAM_MAX (sizeof(struct proxy_uds_msg) + ECCL_AUTH_MAC_BYTES)

static ecclResult_t uds_seal(const struct proxy_uds_msg *m, unsigned char *out, size_t *len_out)
{
    memcpy(out, m, sizeof(*m));
    size_t len = sizeof(*m);
    if (eccl_auth_enabled()) {
        ECCL_TRY(eccl_auth_mac(ECCL_AUTH_UDS, m, sizeof(*m), NULL, 0, out + sizeof(*m)));
        len += ECCL_AUTH_MAC_BYTES;
    }
    *len_out = len;
    return ecclSuccess;
}

/* NULL when the datagram's MAC is what this process expects (none without a secret), and then
 * *len is the record's; else what is wrong. */
static const char *uds_unseal(const unsigned char *buf, size_t *len)
{
    if (!eccl_auth_enabled())
        return NULL;
    if (*len != UDS_DGRAM_MAX)
        return "no MAC (sent by a process without the job secret)";
    unsigned char mac[ECCL_AUTH_MAC_BYTES];
    if (eccl_auth_mac(ECCL_AUTH_UDS, buf, sizeof(struct proxy_uds_msg), NULL, 0, mac) !=
        ecclSuccess)
        return "cannot compute the MAC";
    if (!eccl_auth_mac_equal(mac, buf + sizeof(struct proxy_uds_msg)))
        return "wrong MAC (another job secret)";
    *len = sizeof(struct proxy_uds_msg);
    return NULL;
}

static int uds_serve(struct proxy_state *px)
{
    int work = 0;
    for (int i = 0; i < 16; i++) {
        struct proxy_uds_msg m;
        unsigned char dg[UDS_DGRAM_MAX];
        size_t len = sizeof(dg);
        int fd = -1;
        ecclResult_t r = eccl_uds_recv(px->uds_fd, dg, &len, &fd, 0, NULL);
        if (r == ecclInProgress)
            break;
        eccl_log_clear_last_error();
        if (r != ecclSuccess)
            break;
        work++;
        if (fd >= 0)
            close(fd); /* requests carry no descriptor */
        const char *bad = uds_unseal(dg, &len);
        if (bad) {
            WARN("auth: proxy UDS @%s: refused a descriptor request: %s", px->uds_name, bad);
            continue;
        }
        memset(&m, 0, sizeof(m));
        memcpy(&m, dg, ECCL_MIN(len, sizeof(m)));
        if (!uds_msg_ok(&m, len, px->comm_magic, PROXY_UDS_GETFD, px->nranks)) {
            WARN("proxy UDS @%s: dropped a malformed request (%zu bytes)", px->uds_name, len);
            continue;
        }
        INFO(ECCL_LOG_PROXY, "proxyUDSRecvReq::GetFd rank %d opId 0x%llx handle=0x%llx", m.from,
             (unsigned long long)m.op_id, (unsigned long long)m.handle);
        uint32_t idx = (uint32_t)(m.handle >> 32);
        struct proxy_conn *c = idx < (uint32_t)px->nconns ? px->conns[idx] : NULL;
        struct proxy_uds_msg reply = m;
        reply.type = PROXY_UDS_FD;
        reply.from = px->rank;
        reply.result = ecclSuccess;
        int give = -1;
        bool dev = c && c->dev_handle && c->dev_handle == m.handle;
        if (!c || c->transport != PROXY_TRANSPORT_SHM || c->send ||
            (c->handle != m.handle && !dev) || c->peer != m.from ||
            (dev ? c->devfd : c->memfd) < 0) {
            WARN("proxy UDS: rank %d asked for segment 0x%llx, which is not one of its "
                 "connections",
                 m.from, (unsigned long long)m.handle);
            reply.result = ecclInvalidUsage;
        } else {
            give = dev ? c->devfd : c->memfd;
        }
        char name[96];
        snprintf(name, sizeof(name), "eccl-%016llx-%d", (unsigned long long)px->comm_magic, m.from);
        unsigned char out[UDS_DGRAM_MAX];
        size_t olen = 0;
        r = uds_seal(&reply, out, &olen);
        if (r == ecclSuccess)
            r = eccl_uds_send(px->uds_fd, name, out, olen, give, eccl_deadline_ms(100), px->abort);
        if (r != ecclSuccess) {
            WARN("proxy UDS: could not answer rank %d's request for segment 0x%llx", m.from,
                 (unsigned long long)m.handle);
            continue;
        }
        INFO(ECCL_LOG_PROXY, "UDS proxyGetFd received handle 0x%llx peer %d opId %llx",
             (unsigned long long)m.handle, m.from, (unsigned long long)m.op_id);
        if (give >= 0) {
            /* Served once: the segment lives on in both mappings. */
            close(give);
            if (dev)
                c->devfd = -1;
            else
                c->memfd = -1;
        }
    }
    return work;
}

ecclResult_t proxy_client_get_fd(int sock, uint64_t comm_magic, int rank, int peer, uint64_t handle,
                                 int *fd_out, uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    static _Atomic uint64_t counter;
    struct proxy_uds_msg m = {.magic = PROXY_UDS_MAGIC,
                              .comm_magic = comm_magic,
                              .op_id = eccl_random64() ^ atomic_fetch_add(&counter, 1),
                              .handle = handle,
                              .type = PROXY_UDS_GETFD,
                              .from = rank};
    char name[96];
    snprintf(name, sizeof(name), "eccl-%016llx-%d-proxy", (unsigned long long)comm_magic, peer);
    INFO(ECCL_LOG_PROXY, "ProxyCall UDS rank %d tpRank %d reqSize %zu opId 0x%llx", rank, peer,
         sizeof(m), (unsigned long long)m.op_id);
    unsigned char out[UDS_DGRAM_MAX];
    size_t olen = 0;
    ECCL_TRY(uds_seal(&m, out, &olen));
    ECCL_TRY(eccl_uds_send(sock, name, out, olen, -1, deadline_ns, abort));
    for (;;) {
        struct proxy_uds_msg r;
        unsigned char dg[UDS_DGRAM_MAX];
        size_t len = sizeof(dg);
        int fd = -1;
        ecclResult_t res = eccl_uds_recv(sock, dg, &len, &fd, deadline_ns, abort);
        if (res == ecclInternalError) {
            WARN("rank %d's proxy did not answer a descriptor request", peer);
            return ecclRemoteError;
        }
        ECCL_TRY(res);
        const char *bad = uds_unseal(dg, &len);
        if (bad) {
            WARN("auth: dropped a datagram while waiting for rank %d's descriptor: %s", peer, bad);
            if (fd >= 0)
                close(fd);
            continue;
        }
        memset(&r, 0, sizeof(r));
        memcpy(&r, dg, ECCL_MIN(len, sizeof(r)));
        if (!uds_msg_ok(&r, len, comm_magic, PROXY_UDS_FD, INT32_MAX) || r.from != peer ||
            r.op_id != m.op_id || r.handle != handle) {
            WARN("dropped an unexpected datagram while waiting for rank %d's descriptor", peer);
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (r.result != ecclSuccess || fd < 0) {
            if (fd >= 0)
                close(fd);
            WARN("rank %d's proxy refused to pass segment 0x%llx (%d)", peer,
                 (unsigned long long)handle, r.result);
            return ecclRemoteError;
        }
        INFO(ECCL_LOG_PROXY,
             "ProxyCall UDS rank %d tpRank %d reqSize %zu respFd %d opId 0x%llx - DONE", rank, peer,
             sizeof(m), fd, (unsigned long long)m.op_id);
        INFO(ECCL_LOG_PROXY, "UDS: ClientGetFd handle 0x%llx tpRank %d returned fd %d",
             (unsigned long long)handle, peer, fd);
        *fd_out = fd;
        return ecclSuccess;
    }
}

/* ---- moving network steps ----------------------------------------------------------------- */

static void conn_fail(struct proxy_state *px, struct proxy_conn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    bool left =
        !c->send && c->net_comm && px->net->peer_closed && px->net->peer_closed(c->net_comm);
    if (why && left)
        INFO(ECCL_LOG_PROXY | ECCL_LOG_NET,
             "NET/%s : connection %d from rank %d closed: %s (rank %d left or ended; a receive "
             "that needs more from it fails)",
             px->net->name, c->id, c->peer, why, c->peer);
    else if (why)
        WARN("NET/%s : connection %d %s rank %d failed: %s", px->net->name, c->id,
             c->send ? "to" : "from", c->peer, why);
    /* The executor waiting on this FIFO stops at once; the remote side sees the connection
     * close. Requests in flight die with the connection. */
    kern_conn_close(c->ctrl);
    if (c->net_comm) {
        if (c->mhandle)
            px->net->dereg_mr(c->net_comm, c->mhandle);
        c->mhandle = NULL;
        if (c->send)
            px->net->close_send(c->net_comm);
        else
            px->net->close_recv(c->net_comm);
        c->net_comm = NULL;
    }
    memset(c->req, 0, sizeof(c->req));
}

/* One connection: posts what can be posted (send: steps the executor posted; receive: free
 * slots), then completes in order. A completed send frees its slot (head); a completed receive
 * publishes the step (its size, then tail). Returns the work done. */
static int net_progress_conn(struct proxy_state *px, struct proxy_conn *c, int budget)
{
    struct eccl_conn_ctrl *f = c->ctrl;
    uint32_t nreq = ECCL_MIN(c->nslots, (uint32_t)ECCL_NET_MAX_REQUESTS);
    /* Send: up to what the executor posted. Receive: up to what it has consumed + nslots. */
    uint32_t limit = c->send ? atomic_load_explicit(&f->tail, memory_order_acquire)
                             : atomic_load_explicit(&f->head, memory_order_acquire) + c->nslots;
    int work = 0;
    while (c->posted != limit && c->posted - c->completed < nreq && work < budget) {
        uint32_t slot = c->posted % c->nslots;
        char *data = eccl_conn_data(f) + (size_t)slot * c->slot_bytes;
        void *req = NULL;
        ecclResult_t r;
        if (c->send) {
            uint32_t size = atomic_load_explicit(&f->sizes[slot], memory_order_relaxed);
            if (size > c->slot_bytes) {
                conn_fail(px, c, "a step larger than its slot");
                return work;
            }
            r = px->net->isend(c->net_comm, data, size, 0, c->mhandle, &req);
        } else {
            r = px->net->irecv(c->net_comm, data, c->slot_bytes, 0, c->mhandle, &req);
        }
        if (r != ecclSuccess) {
            conn_fail(px, c, eccl_log_last_error());
            return work;
        }
        if (!req)
            break;
        c->req[slot] = req;
        c->posted++;
        work++;
    }
    _Atomic uint32_t *counter = c->send ? &f->head : &f->tail;
    _Atomic uint32_t *waiters = c->send ? &f->head_waiters : &f->tail_waiters;
    while (c->completed != c->posted) {
        uint32_t slot = c->completed % c->nslots;
        int done = 0;
        size_t size = 0;
        ecclResult_t r = px->net->test(c->req[slot], &done, &size);
        if (r != ecclSuccess) {
            conn_fail(px, c, eccl_log_last_error());
            return work;
        }
        if (!done)
            break;
        if (!c->send) {
            if (size > c->slot_bytes) {
                conn_fail(px, c, "a message larger than its slot");
                return work;
            }
            atomic_store_explicit(&f->sizes[slot], (uint32_t)size, memory_order_relaxed);
        }
        c->req[slot] = NULL;
        c->completed++;
        atomic_store_explicit(counter, c->completed, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(waiters, memory_order_relaxed))
            eccl_futex_wake(counter, true);
        work++;
    }
    return work;
}

/* Returns the work done; *inflight gets whether any network request is outstanding. */
static int net_progress(struct proxy_state *px, int budget, bool *inflight)
{
    int work = 0;
    *inflight = false;
    bool aborted = px->abort && atomic_load_explicit(px->abort, memory_order_acquire);
    if (aborted && !px->aborted) {
        px->aborted = true;
        INFO(ECCL_LOG_PROXY | ECCL_LOG_NET,
             "proxy of rank %d: communicator aborted: closing its network connections", px->rank);
    }
    uint64_t now = eccl_now_ns();
    uint64_t pending = 0;
    for (int i = 0; i < px->nconns; i++) {
        struct proxy_conn *c = px->conns[i];
        if (c->transport != PROXY_TRANSPORT_NET || !c->connected || c->dead)
            continue;
        if (aborted || atomic_load_explicit(&c->ctrl->closed, memory_order_acquire)) {
            /* The executor gave up (or the communicator did). Receive side: nothing more is
             * wanted, close now, which tells the remote side. Send side: steps already posted
             * stay deliverable, as they are through shared memory: flush them first, for at
             * most PROXY_FLUSH_MS. */
            if (!c->send) {
                conn_fail(px, c, NULL);
                continue;
            }
            if (!c->flush_deadline)
                c->flush_deadline = now + PROXY_FLUSH_MS * ECCL_NS_PER_MS;
            if (c->completed == atomic_load_explicit(&c->ctrl->tail, memory_order_acquire) ||
                now > c->flush_deadline) {
                conn_fail(px, c, NULL);
                continue;
            }
        }
        work += net_progress_conn(px, c, budget);
        if (c->dead)
            continue;
        if (c->send)
            pending += atomic_load_explicit(&c->ctrl->tail, memory_order_acquire) - c->completed;
        if (c->posted != c->completed)
            *inflight = true;
    }
    atomic_store_explicit(&px->sends_pending, pending, memory_order_release);
    atomic_fetch_add_explicit(&px->net_passes, 1, memory_order_release);
    return work;
}

ecclResult_t proxy_flush(struct proxy_state *px, int64_t timeout_ms)
{
    uint64_t first = atomic_load_explicit(&px->net_passes, memory_order_acquire);
    uint64_t deadline = eccl_deadline_ms(timeout_ms);
    struct proxy_liveness alive = {0, 0};
    for (;;) {
        /* Two passes after the call: the count reflects every step posted before it. */
        if (atomic_load_explicit(&px->net_passes, memory_order_acquire) >= first + 2 &&
            atomic_load_explicit(&px->sends_pending, memory_order_acquire) == 0)
            return ecclSuccess;
        ECCL_TRY(proxy_check_alive(px, &alive));
        if (eccl_deadline_passed(deadline)) {
            INFO(ECCL_LOG_PROXY | ECCL_LOG_NET,
                 "proxy of rank %d: %llu network steps still unsent after %lld ms", px->rank,
                 (unsigned long long)atomic_load(&px->sends_pending), (long long)timeout_ms);
            return ecclInProgress;
        }
        eccl_bell_ring(&px->bell);
        usleep(100);
    }
}

static int progress_pass(struct proxy_state *px, int budget, bool *inflight)
{
    int work = 0;
    if (atomic_load_explicit(&px->nops, memory_order_acquire))
        work += ops_progress(px);
    work += uds_serve(px);
    work += net_progress(px, budget, inflight);
    return work;
}

int proxy_progress(struct proxy_state *px, int budget)
{
    bool inflight = false;
    return progress_pass(px, budget, &inflight);
}

static void *proxy_main(void *arg)
{
    struct proxy_state *px = arg;
    eccl_log_set_dev(px->rank);
    atomic_store(&px->tid, eccl_thread_id());
    int idle = 0;
    px->last_progress_ns = eccl_now_ns();
    while (!atomic_load_explicit(&px->stop, memory_order_acquire)) {
        if (ECCL_FAULT("proxy_thread")) {
            WARN("proxy thread of rank %d exits (fault injection)", px->rank);
            return NULL;
        }
        if (ECCL_FAULT("proxy_stall")) {
            /* Alive but stuck (as in a blocking call that never returns): no more passes. */
            WARN("proxy thread of rank %d stalls (fault injection)", px->rank);
            while (!atomic_load_explicit(&px->stop, memory_order_acquire))
                poll(NULL, 0, 10);
            return NULL;
        }
        atomic_fetch_add_explicit(&px->beat, 1, memory_order_relaxed);
        bool inflight = false;
        int work = progress_pass(px, PROXY_BUDGET, &inflight);
        uint64_t now = eccl_now_ns();
        if (work) {
            idle = 0;
            px->last_progress_ns = now;
            continue;
        }
        /* Hot: requests in flight and recent progress. Completions have no descriptor to
         * wait on, and a sleep here would add its length to every step: yield instead. */
        bool hot = now - px->last_progress_ns < PROXY_HOT_MS * ECCL_NS_PER_MS;
        if (++idle < PROXY_SPIN_PASSES && hot) {
            sched_yield();
            continue;
        }
        if (hot && inflight) {
            sched_yield();
            continue;
        }
        eccl_bell_arm(&px->bell);
        /* The last check, after arming: an executor that posts a step now either is seen here
         * or sees us sleeping and writes the eventfd. */
        work = net_progress(px, PROXY_BUDGET, &inflight);
        if (work || atomic_load_explicit(&px->nops_new, memory_order_acquire)) {
            eccl_bell_drain(&px->bell);
            px->last_progress_ns = eccl_now_ns();
            idle = 0;
            continue;
        }
        /* Connect handshakes in progress: the backend has no descriptor to wait on either. */
        bool waiting_ops = atomic_load_explicit(&px->nops, memory_order_acquire) != 0;
        int timeout_ms = PROXY_MAX_SLEEP_MS;
        struct pollfd pfd[2] = {{.fd = px->bell.efd, .events = POLLIN},
                                {.fd = px->uds_fd, .events = POLLIN}};
        if (waiting_ops || inflight) {
            struct timespec ts = {0, PROXY_WARM_SLEEP_US * 1000L};
            ppoll(pfd, 2, &ts, NULL);
        } else {
            poll(pfd, 2, timeout_ms);
        }
        eccl_bell_drain(&px->bell);
    }
    return NULL;
}

/* ---- create / destroy -------------------------------------------------------------------- */

ecclResult_t proxy_create(struct proxy_state **out, const struct proxy_params *params)
{
    ecclResult_t res = ecclSuccess;
    struct proxy_state *px = eccl_calloc(1, sizeof(*px), "proxy");
    if (!px)
        return ecclSystemError;
    px->comm_magic = params->comm_magic;
    px->rank = params->rank;
    px->nranks = params->nranks;
    px->abort = params->abort;
    px->uds_fd = -1;
    px->bell.efd = -1;
    px->next_op_id = (eccl_random64() & 0xffffffffffff0000ULL) | 1;
    pthread_mutex_init(&px->ops_lock, NULL);
    ECCL_TRY_GOTO(eccl_bell_init(&px->bell), res, err_free);
    snprintf(px->uds_name, sizeof(px->uds_name), "eccl-%016llx-%d-proxy",
             (unsigned long long)px->comm_magic, px->rank);
    ECCL_TRY_GOTO(eccl_uds_open(px->uds_name, &px->uds_fd), res, err_free);
    int rc = ECCL_FAULT_THREAD(pthread_create(&px->thread, NULL, proxy_main, px));
    if (rc != 0) {
        WARN("proxy: pthread_create failed: %s", strerror(rc));
        res = ecclSystemError;
        goto err_free;
    }
    px->thread_started = true;
    INFO(ECCL_LOG_PROXY | ECCL_LOG_INIT, "proxy of rank %d started, UDS @%s", px->rank,
         px->uds_name);
    *out = px;
    return ecclSuccess;
err_free:
    proxy_destroy(px);
    return res;
}

void proxy_destroy(struct proxy_state *px)
{
    if (!px)
        return;
    if (px->thread_started) {
        atomic_store_explicit(&px->stop, true, memory_order_release);
        uint64_t one = 1;
        ssize_t rc = write(px->bell.efd, &one, sizeof(one));
        (void)rc;
        pthread_join(px->thread, NULL);
    }
    while (px->ops) {
        struct proxy_op *op = px->ops;
        px->ops = op->next;
        if (op_takes_fd(op->type) && op->req.connect.fd >= 0)
            close(op->req.connect.fd);
        eccl_free(op);
    }
    for (int i = 0; i < px->nconns; i++)
        conn_free(px, px->conns[i]);
    eccl_free(px->conns);
    if (px->net)
        px->net->fini();
    eccl_socket_close(&px->uds_fd);
    eccl_bell_fini(&px->bell);
    pthread_mutex_destroy(&px->ops_lock);
    eccl_free(px);
}

int64_t proxy_stall_ms(void)
{
    int64_t v = eccl_param_proxy_stall();
    return v > PROXY_MAX_SLEEP_MS ? v : 2 * PROXY_MAX_SLEEP_MS;
}

ecclResult_t proxy_check_alive(struct proxy_state *px, struct proxy_liveness *w)
{
    uint64_t beat = atomic_load_explicit(&px->beat, memory_order_relaxed);
    uint64_t now = eccl_now_ns();
    if (w->since_ns == 0 || beat != w->beat) {
        w->beat = beat;
        w->since_ns = now;
        return ecclSuccess;
    }
    uint64_t late = now - w->since_ns;
    if (late < 2 * PROXY_MAX_SLEEP_MS * ECCL_NS_PER_MS)
        return ecclSuccess;
    /* An exited thread fails the wait at once; a live one only after the stall bound, and never
     * while runnable (starved of CPU, not stuck). */
    int tid = atomic_load(&px->tid);
    char st = tid > 0 ? eccl_thread_state(tid) : 'R';
    if (st == 0 || (late > (uint64_t)proxy_stall_ms() * ECCL_NS_PER_MS && st != 'R')) {
        WARN("the proxy thread of rank %d %s (no progress for %llu ms)", px->rank,
             st ? "is not responding" : "exited", (unsigned long long)(late / ECCL_NS_PER_MS));
        return ecclRemoteError;
    }
    return ecclSuccess;
}

const char *proxy_net_name(struct proxy_state *px)
{
    if (!px->net)
        return "none";
    return strcmp(px->net->name, "ib") == 0 ? "IB" : "Socket";
}

struct eccl_bell *proxy_bell(struct proxy_state *px)
{
    return &px->bell;
}

const _Atomic uint64_t *proxy_heartbeat(struct proxy_state *px)
{
    return &px->beat;
}

const _Atomic int *proxy_thread_tid(struct proxy_state *px)
{
    return &px->tid;
}

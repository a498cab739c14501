/*
 * net_ib.c - the InfiniBand/RoCE network backend (eccl_net_ib of proxy/net.h).
 *
 * libibverbs is loaded with dlopen at init (ib_verbs.h); nothing links against it. Each
 * active port of each HCA that ECCL_IB_HCA selects is one network device. A connection is one
 * or more RC queue pairs (ECCL_IB_QPS_PER_CONNECTION) on one completion queue, set up through
 * a TCP side channel that stays open afterwards, so that a peer that dies is seen as an EOF
 * long before the fabric's retries give up.
 *
 * Data moves as in NCCL: the receiver posts a receive per queue pair and RDMA-writes a
 * clear-to-send (CTS) entry (its buffer's address, rkey, size, tag) into the sender's CTS FIFO;
 * the sender, once that entry has arrived, RDMA-writes the data straight into the receive
 * buffer, split over the queue pairs, each write carrying the message size as immediate data,
 * which completes the receiver's posted receives. The CTS write carries an immediate too (the
 * request number), so the sender learns of an entry from a completion, never by polling memory
 * that RDMA may still be filling. docs/internals/net-ib.md has the full story.
 *
 * Threads: init/fini and connect take a global lock; a connection is used by one thread at a
 * time (net.h); device tables are read-only between init and fini.
 */
#include "proxy/net_ib.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "proxy/ib_hca.h"
#include "proxy/ib_qp.h"
#include "proxy/ib_req.h"
#include "proxy/ib_verbs.h"
#include "proxy/ib_wire.h"
#include "proxy/net.h"

ECCL_PARAM_INT(ib_disable, "ECCL_IB_DISABLE", 0)
ECCL_PARAM_STR(ib_hca, "ECCL_IB_HCA", NULL)
ECCL_PARAM_INT(ib_gid_index, "ECCL_IB_GID_INDEX", -1)
ECCL_PARAM_INT(ib_timeout, "ECCL_IB_TIMEOUT", 20)
ECCL_PARAM_INT(ib_retry_cnt, "ECCL_IB_RETRY_CNT", 7)
ECCL_PARAM_INT(ib_sl, "ECCL_IB_SL", 0)
ECCL_PARAM_INT(ib_tc, "ECCL_IB_TC", 0)
ECCL_PARAM_INT(ib_qps_per_connection, "ECCL_IB_QPS_PER_CONNECTION", 1)
ECCL_PARAM_INT(ib_connect_timeout_ms, "ECCL_IB_CONNECT_TIMEOUT_MS", 20000)

#define MAX_CTXS      16
#define MAX_DEVS      32
#define MAX_GID_SCAN  64
#define MAX_MSG_BYTES (1u << 30)  /* the immediate carries the size in 32 bits */
#define COMM_MAGIC    0x6962636du /* "ibcm" */
#define LISTEN_MAGIC  0x69626c73u /* "ibls" */
#define SETUP_SEND_MS 5000        /* a small record into an empty socket buffer: never waits */
#define PEER_CHECK_NS (1 * ECCL_NS_PER_MS)
#define PEER_GRACE_NS (20 * ECCL_NS_PER_MS)
#define POLL_BATCH    16
#define POLL_ROUNDS   8
#define SQ_DEPTH      (2 * ECCL_NET_MAX_REQUESTS)
#define RQ_DEPTH      (2 * ECCL_NET_MAX_REQUESTS)
#define DATA_ACCESS   (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ)

struct ib_ctx {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    char name[64];
    int gdr; /* enum proxy_net_ib_gdr */
    int max_qp;
};

struct ib_dev {
    int ctx; /* index into g.ctxs */
    uint8_t port;
    struct ibv_port_attr attr;
    uint8_t gid_index;
    union ibv_gid gid;
    uint64_t guid;
    int speed_mbps;
    size_t max_msg;
    char pci_path[128];
};

/* A connection, either end. */
struct ib_comm {
    uint32_t magic;
    int role;  /* PROXY_IB_ROLE_SEND (connect) or PROXY_IB_ROLE_RECV (accept) */
    int stage; /* enum stage */
    int dev;
    int fd; /* TCP side channel */
    uint64_t nonce;
    uint64_t setup_deadline_ns;         /* for the whole connection setup */
    union eccl_sockaddr peer_addr;      /* connect side */
    uint8_t key[ECCL_NET_HANDLE_BYTES]; /* connect side: the handle, while pending */
    struct ib_comm *next_pending;       /* connect side: g.pending list */
    struct proxy_ib_qp_params params;
    struct ibv_cq *cq;
    uint32_t nqps;
    struct ibv_qp *qp[PROXY_IB_MAX_QPS];
    uint32_t psn[PROXY_IB_MAX_QPS];
    enum ibv_qp_state qp_state;
    /* Sender: the CTS FIFO the peer writes; receiver: the CTS entries it writes from. */
    uint8_t *fifo;
    struct ibv_mr *fifo_mr;
    uint64_t remote_fifo_addr; /* receiver */
    uint32_t remote_fifo_rkey;
    uint8_t rbuf[PROXY_IB_META_MAX_BYTES]; /* setup bytes received so far */
    size_t rlen;
    uint64_t last_peer_check_ns;
    bool peer_closed; /* the side channel saw EOF or a reset */
    uint64_t peer_closed_ns;
    int peer_closed_err;
    struct proxy_ib_reqs reqs;
    struct eccl_auth_hs hs; /* job secret: ST_AUTH on the side channel */
};

struct ib_listen {
    uint32_t magic;
    int dev;
    int fd;
    uint64_t nonce;
    struct ib_comm *pending; /* the connection being accepted */
};

struct ib_mhandle {
    struct ibv_mr *mr; /* NULL for an empty region */
    int type;
    uintptr_t base;
    size_t size;
};

enum stage {
    ST_TCP_START,  /* connect: start a TCP connection */
    ST_TCP_WAIT,   /* connect: TCP connection in progress */
    ST_SETUP,      /* connect: create QPs, send metadata */
    ST_RECV_META,  /* both: read the peer's metadata */
    ST_RECV_READY, /* accept: read the sender's ready message */
    ST_DONE,
    ST_AUTH, /* both, with a job secret: the handshake of common/auth.h on the side channel */
};

static struct {
    pthread_mutex_t lock;
    int refs; /* inits not yet matched by a fini */
    struct proxy_ib_verbs v;
    struct ib_ctx ctxs[MAX_CTXS];
    int nctx;
    struct ib_dev devs[MAX_DEVS];
    int ndev;
    union eccl_sockaddr oob_addr; /* where listeners bind */
    char oob_if[64];
    struct ib_comm *pending;             /* connections being made (connect is keyed by handle) */
    const char *lib_name;                /* test hook */
    const struct proxy_ib_verbs *fake_v; /* test hook */
} g = {.lock = PTHREAD_MUTEX_INITIALIZER};

void proxy_net_ib_set_library(const char *name)
{
    g.lib_name = name;
}

void proxy_net_ib_set_verbs(const struct proxy_ib_verbs *table)
{
    g.fake_v = table;
}

static uint64_t random64(void)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x))
        x = eccl_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&x;
    return x;
}

/* ---- init and devices ------------------------------------------------------------------- */

static const char *link_name(uint8_t ll)
{
    return ll == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "IB";
}

static bool read_gid_roce_v2(const char *dev, int port, int index)
{
    char path[256], buf[32] = "";
    snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/gid_attrs/types/%d", dev, port,
             index);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strncmp(buf, "RoCE v2", 7) == 0;
}

/* Picks and reads the GID of a port. false (with an INFO) when it has no usable one. */
static bool pick_gid(struct ib_ctx *x, struct ib_dev *d)
{
    int64_t want = eccl_param_ib_gid_index();
    int idx = 0;
    if (want >= 0) {
        if (want >= d->attr.gid_tbl_len) {
            INFO(ECCL_LOG_NET,
                 "NET/IB : %s:%d: ECCL_IB_GID_INDEX=%ld but the GID table has %d "
                 "entries; port skipped",
                 x->name, d->port, (long)want, d->attr.gid_tbl_len);
            return false;
        }
        idx = (int)want;
    } else if (d->attr.link_layer == IBV_LINK_LAYER_ETHERNET) {
        struct proxy_ib_gid_cand cands[MAX_GID_SCAN];
        int n = 0;
        for (int i = 0; i < d->attr.gid_tbl_len && i < MAX_GID_SCAN; i++) {
            union ibv_gid gid;
            if (g.v.query_gid(x->ctx, d->port, i, &gid) != 0)
                continue;
            cands[n].index = i;
            memcpy(cands[n].gid, gid.raw, 16);
            cands[n].roce_v2 = read_gid_roce_v2(x->name, d->port, i);
            n++;
        }
        idx = proxy_ib_gid_pick(cands, n);
        if (idx < 0) {
            INFO(ECCL_LOG_NET, "NET/IB : %s:%d has no usable GID; port skipped", x->name, d->port);
            return false;
        }
    }
    if (g.v.query_gid(x->ctx, d->port, idx, &d->gid) != 0) {
        INFO(ECCL_LOG_NET, "NET/IB : %s:%d: ibv_query_gid(%d) failed: %s; port skipped", x->name,
             d->port, idx, strerror(errno));
        return false;
    }
    d->gid_index = (uint8_t)idx;
    return true;
}

static int detect_gdr(struct ib_ctx *x)
{
    static const char *const peermem[] = {
        "/sys/kernel/mm/memory_peers/nv_mem/version",
        "/sys/kernel/mm/memory_peers/nvidia-peermem/version",
        "/sys/module/nvidia_peermem/version",
    };
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(peermem); i++)
        if (access(peermem[i], F_OK) == 0)
            return PROXY_NET_IB_GDR_PEERMEM;
    if (g.v.reg_dmabuf_mr) {
        /* As NCCL probes it: a bad fd gets EBADF (or similar) from a kernel and provider that
         * do dma-buf, EOPNOTSUPP/EPROTONOSUPPORT from those that do not. */
        errno = 0;
        struct ibv_mr *mr = g.v.reg_dmabuf_mr(x->pd, 0, 0, 0, -1, 0);
        if (mr) {
            g.v.dereg_mr(mr);
            return PROXY_NET_IB_GDR_DMABUF;
        }
        if (errno != EOPNOTSUPP && errno != EPROTONOSUPPORT)
            return PROXY_NET_IB_GDR_DMABUF;
    }
    return PROXY_NET_IB_GDR_NONE;
}

static void close_devices(void)
{
    for (int i = 0; i < g.nctx; i++) {
        if (g.ctxs[i].pd)
            g.v.dealloc_pd(g.ctxs[i].pd);
        g.v.close_device(g.ctxs[i].ctx);
    }
    memset(g.ctxs, 0, sizeof(g.ctxs));
    memset(g.devs, 0, sizeof(g.devs));
    g.nctx = 0;
    g.ndev = 0;
}

/* Adds the selected active ports of one device. */
static void open_device(struct ibv_device *ibdev, const struct proxy_ib_hca_spec *spec)
{
    const char *name = g.v.get_device_name(ibdev);
    if (!name)
        return;
    struct ibv_context *ctx = g.v.open_device(ibdev);
    if (!ctx) {
        INFO(ECCL_LOG_NET, "NET/IB : cannot open %s: %s", name, strerror(errno));
        return;
    }
    struct ib_ctx *x = &g.ctxs[g.nctx];
    memset(x, 0, sizeof(*x));
    x->ctx = ctx;
    snprintf(x->name, sizeof(x->name), "%s", name);
    struct ibv_device_attr dattr;
    memset(&dattr, 0, sizeof(dattr));
    int rc = g.v.query_device(ctx, &dattr);
    if (rc != 0) {
        INFO(ECCL_LOG_NET, "NET/IB : ibv_query_device(%s) failed: %s", name, strerror(rc));
        goto err_close;
    }
    x->max_qp = dattr.max_qp;
    int first = g.ndev;
    for (int port = 1; port <= dattr.phys_port_cnt && g.ndev < MAX_DEVS; port++) {
        struct ib_dev *d = &g.devs[g.ndev];
        memset(d, 0, sizeof(*d));
        d->ctx = g.nctx;
        d->port = (uint8_t)port;
        rc = proxy_ib_verbs_query_port(&g.v, ctx, (uint8_t)port, &d->attr);
        if (rc != 0) {
            INFO(ECCL_LOG_NET, "NET/IB : ibv_query_port(%s:%d) failed: %s", name, port,
                 strerror(rc));
            continue;
        }
        if (!proxy_ib_hca_match(spec, name, port))
            continue;
        if (d->attr.state != IBV_PORT_ACTIVE) {
            INFO(ECCL_LOG_NET, "NET/IB : %s:%d is not active (state %d); skipped", name, port,
                 (int)d->attr.state);
            continue;
        }
        if (d->attr.link_layer == IBV_LINK_LAYER_UNSPECIFIED)
            d->attr.link_layer = IBV_LINK_LAYER_INFINIBAND; /* old providers */
        if (d->attr.link_layer != IBV_LINK_LAYER_INFINIBAND &&
            d->attr.link_layer != IBV_LINK_LAYER_ETHERNET)
            continue;
        if (!pick_gid(x, d))
            continue;
        d->guid = be64toh(dattr.node_guid);
        d->speed_mbps = proxy_ib_port_speed_mbps(d->attr.active_speed, d->attr.active_width);
        d->max_msg = d->attr.max_msg_sz ? ECCL_MIN((size_t)d->attr.max_msg_sz, MAX_MSG_BYTES)
                                        : MAX_MSG_BYTES;
        char path[PATH_MAX], link[256];
        snprintf(link, sizeof(link), "/sys/class/infiniband/%s/device", name);
        if (realpath(link, path) && strlen(path) < sizeof(d->pci_path))
            memcpy(d->pci_path, path, strlen(path) + 1);
        g.ndev++;
    }
    if (g.ndev == first)
        goto err_close;
    x->pd = g.v.alloc_pd(ctx);
    if (!x->pd) {
        INFO(ECCL_LOG_NET, "NET/IB : ibv_alloc_pd(%s) failed: %s", name, strerror(errno));
        g.ndev = first;
        goto err_close;
    }
    x->gdr = detect_gdr(x);
    g.nctx++;
    return;
err_close:
    g.v.close_device(ctx);
    memset(x, 0, sizeof(*x));
}

static ecclResult_t open_devices(const struct proxy_ib_hca_spec *spec)
{
    int n = 0;
    errno = 0;
    struct ibv_device **list = g.v.get_device_list(&n);
    if (!list || n <= 0) {
        INFO(ECCL_LOG_NET, "NET/IB : No RDMA device found (%s): InfiniBand/RoCE not available",
             list    ? "empty device list"
             : errno ? strerror(errno)
                     : "no device list");
        if (list)
            g.v.free_device_list(list);
        return ecclInternalError;
    }
    for (int i = 0; i < n && g.nctx < MAX_CTXS; i++)
        open_device(list[i], spec);
    g.v.free_device_list(list);
    if (g.ndev == 0) {
        const char *hca = eccl_param_ib_hca();
        INFO(ECCL_LOG_NET, "NET/IB : %d RDMA device(s) but no active port%s%s", n,
             hca ? " selected by ECCL_IB_HCA=" : "", hca ? hca : "");
        close_devices();
        return ecclInternalError;
    }
    return ecclSuccess;
}

/* Range checks of the ECCL_IB_* numbers: a bad value is the user's error, said once. */
static ecclResult_t check_params(void)
{
    struct {
        const char *name;
        int64_t v, lo, hi;
    } p[] = {
        {"ECCL_IB_GID_INDEX", eccl_param_ib_gid_index(), -1, 255},
        {"ECCL_IB_TIMEOUT", eccl_param_ib_timeout(), 1, 31},
        {"ECCL_IB_RETRY_CNT", eccl_param_ib_retry_cnt(), 0, 7},
        {"ECCL_IB_SL", eccl_param_ib_sl(), 0, 15},
        {"ECCL_IB_TC", eccl_param_ib_tc(), 0, 255},
        {"ECCL_IB_QPS_PER_CONNECTION", eccl_param_ib_qps_per_connection(), 1, PROXY_IB_MAX_QPS},
        {"ECCL_IB_CONNECT_TIMEOUT_MS", eccl_param_ib_connect_timeout_ms(), 1, INT32_MAX},
    };
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(p); i++) {
        if (p[i].v < p[i].lo || p[i].v > p[i].hi) {
            WARN("%s=%ld is out of range (%ld..%ld)", p[i].name, (long)p[i].v, (long)p[i].lo,
                 (long)p[i].hi);
            return ecclInvalidUsage;
        }
    }
    return ecclSuccess;
}

static void log_devices(void)
{
    char line[1024];
    size_t o = 0;
    line[0] = '\0';
    for (int i = 0; i < g.ndev && o < sizeof(line); i++) {
        const struct ib_dev *d = &g.devs[i];
        o += (size_t)snprintf(line + o, sizeof(line) - o, " [%d]%s:%d/%s", i, g.ctxs[d->ctx].name,
                              d->port, link_name(d->attr.link_layer));
    }
    char addr[80];
    INFO(ECCL_LOG_NET, "NET/IB : Using%s ; OOB %s:%s", line, g.oob_if,
         eccl_sockaddr_str(&g.oob_addr, addr, sizeof(addr)));
}

static ecclResult_t ib_init(void)
{
    ecclResult_t res = ecclSuccess;
    pthread_mutex_lock(&g.lock);
    if (g.refs > 0) {
        g.refs++;
        goto out_unlock;
    }
    if (eccl_param_ib_disable()) {
        INFO(ECCL_LOG_NET, "NET/IB : disabled by ECCL_IB_DISABLE");
        res = ecclInternalError;
        goto out_unlock;
    }
    ECCL_TRY_GOTO(check_params(), res, out_unlock);
    struct proxy_ib_hca_spec spec;
    ECCL_TRY_GOTO(proxy_ib_hca_parse(eccl_param_ib_hca(), &spec), res, out_unlock);
    if (g.fake_v) {
        g.v = *g.fake_v;
        g.v.lib = NULL;
    } else {
        ECCL_TRY_GOTO(proxy_ib_verbs_open(&g.v, g.lib_name ? g.lib_name : PROXY_IB_VERBS_LIB), res,
                      out_unlock);
    }
    ECCL_TRY_GOTO(open_devices(&spec), res, err_close_verbs);
    ECCL_TRY_GOTO(eccl_socket_pick_addr(&g.oob_addr, g.oob_if, sizeof(g.oob_if)), res,
                  err_close_devices);
    g.refs = 1;
    log_devices();
    goto out_unlock;
err_close_devices:
    close_devices();
err_close_verbs:
    proxy_ib_verbs_close(&g.v);
out_unlock:
    pthread_mutex_unlock(&g.lock);
    return res;
}

static void comm_destroy(struct ib_comm *c);

static void ib_fini(void)
{
    pthread_mutex_lock(&g.lock);
    if (g.refs > 0 && --g.refs == 0) {
        while (g.pending) {
            struct ib_comm *c = g.pending;
            g.pending = c->next_pending;
            comm_destroy(c);
        }
        close_devices();
        proxy_ib_verbs_close(&g.v);
    }
    pthread_mutex_unlock(&g.lock);
}

static ecclResult_t check_dev(int dev)
{
    if (g.refs == 0) {
        WARN("NET/IB : used before init");
        return ecclInternalError;
    }
    if (dev < 0 || dev >= g.ndev) {
        WARN("NET/IB : device %d does not exist (%d devices)", dev, g.ndev);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

static ecclResult_t ib_devices(int *ndev)
{
    if (g.refs == 0) {
        WARN("NET/IB : used before init");
        return ecclInternalError;
    }
    *ndev = g.ndev;
    return ecclSuccess;
}

static ecclResult_t ib_get_properties(int dev, struct eccl_net_props *props)
{
    ECCL_TRY(check_dev(dev));
    const struct ib_dev *d = &g.devs[dev];
    const struct ib_ctx *x = &g.ctxs[d->ctx];
    memset(props, 0, sizeof(*props));
    snprintf(props->name, sizeof(props->name), "%s:%d", x->name, d->port);
    snprintf(props->pci_path, sizeof(props->pci_path), "%s", d->pci_path);
    props->guid = d->guid;
    props->ptr_support =
        ECCL_NET_PTR_HOST | (x->gdr != PROXY_NET_IB_GDR_NONE ? ECCL_NET_PTR_CUDA : 0);
    props->speed_mbps = d->speed_mbps;
    props->port = d->port;
    props->max_comms = ECCL_MAX(x->max_qp / (int)eccl_param_ib_qps_per_connection() / 2, 1);
    props->max_recvs = 1;
    props->max_msg_bytes = d->max_msg;
    return ecclSuccess;
}

ecclResult_t proxy_net_ib_gdr_mode(int dev, int *mode)
{
    ECCL_TRY(check_dev(dev));
    *mode = g.ctxs[g.devs[dev].ctx].gdr;
    return ecclSuccess;
}

/* ---- connection setup ------------------------------------------------------------------- */

static void comm_destroy(struct ib_comm *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < PROXY_IB_MAX_QPS; i++)
        if (c->qp[i])
            g.v.destroy_qp(c->qp[i]);
    if (c->cq)
        g.v.destroy_cq(c->cq);
    if (c->fifo_mr)
        g.v.dereg_mr(c->fifo_mr);
    if (c->fifo)
        eccl_free_aligned(c->fifo);
    eccl_socket_close(&c->fd);
    c->magic = 0;
    eccl_free(c);
}

static ecclResult_t comm_create(int role, int dev, struct ib_comm **out)
{
    ecclResult_t res = ecclSuccess;
    struct ib_comm *c;
    ECCL_CALLOC_GOTO(c, 1, "net-ib-comm", res, out);
    c->magic = COMM_MAGIC;
    c->role = role;
    c->dev = dev;
    c->fd = -1;
    c->qp_state = IBV_QPS_RESET;
    const struct ib_dev *d = &g.devs[dev];
    c->params.port = d->port;
    c->params.link_layer = d->attr.link_layer;
    c->params.mtu = d->attr.active_mtu;
    c->params.pkey_index = 0;
    c->params.gid_index = d->gid_index;
    c->params.sl = (uint8_t)eccl_param_ib_sl();
    c->params.tc = (uint8_t)eccl_param_ib_tc();
    c->params.timeout = (uint8_t)eccl_param_ib_timeout();
    c->params.retry_cnt = (uint8_t)eccl_param_ib_retry_cnt();
    c->setup_deadline_ns = eccl_deadline_ms(eccl_param_ib_connect_timeout_ms());
    *out = c;
out:
    return res;
}

static ecclResult_t comm_modify(struct ib_comm *c, enum ibv_qp_state to, uint32_t i,
                                struct ibv_qp_attr *attr, int mask)
{
    ECCL_TRY(proxy_ib_qp_check(c->qp_state, to, attr, mask));
    int rc = g.v.modify_qp(c->qp[i], attr, mask);
    if (rc != 0) {
        WARN("NET/IB : ibv_modify_qp of QP 0x%x to state %d failed: %s", c->qp[i]->qp_num, (int)to,
             strerror(rc > 0 ? rc : errno));
        return ecclSystemError;
    }
    return ecclSuccess;
}

static ecclResult_t post_cts_recv(struct ib_comm *c)
{
    struct ibv_recv_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof(wr));
    wr.wr_id = proxy_ib_wr_id(PROXY_IB_WR_CTS_RECV, 0);
    int rc = ibv_post_recv(c->qp[0], &wr, &bad);
    if (rc != 0) {
        WARN("NET/IB : ibv_post_recv (CTS) failed: %s", strerror(rc));
        return ecclSystemError;
    }
    return ecclSuccess;
}

/* Creates the completion queue, the queue pairs (to INIT) and the CTS memory. */
static ecclResult_t comm_setup_verbs(struct ib_comm *c)
{
    const struct ib_dev *d = &g.devs[c->dev];
    const struct ib_ctx *x = &g.ctxs[d->ctx];
    int cqe = (int)(c->nqps + 1) * (SQ_DEPTH + RQ_DEPTH);
    c->cq = g.v.create_cq(x->ctx, cqe, NULL, NULL, 0);
    if (!c->cq) {
        WARN("NET/IB : ibv_create_cq(%d entries) on %s failed: %s", cqe, x->name, strerror(errno));
        return ecclSystemError;
    }
    for (uint32_t i = 0; i < c->nqps; i++) {
        struct ibv_qp_init_attr ia;
        memset(&ia, 0, sizeof(ia));
        ia.send_cq = c->cq;
        ia.recv_cq = c->cq;
        ia.qp_type = IBV_QPT_RC;
        ia.cap.max_send_wr = SQ_DEPTH;
        ia.cap.max_recv_wr = RQ_DEPTH;
        ia.cap.max_send_sge = 1;
        ia.cap.max_recv_sge = 1;
        ia.sq_sig_all = 0;
        c->qp[i] = g.v.create_qp(x->pd, &ia);
        if (!c->qp[i]) {
            WARN("NET/IB : ibv_create_qp on %s failed: %s", x->name, strerror(errno));
            return ecclSystemError;
        }
        c->psn[i] = (uint32_t)random64() & 0xffffff;
    }
    size_t fifo_bytes = (size_t)ECCL_NET_MAX_REQUESTS * PROXY_IB_CTS_BYTES;
    c->fifo = eccl_calloc_aligned(fifo_bytes, 4096, "net-ib-fifo");
    if (!c->fifo)
        return ecclSystemError;
    int access = c->role == PROXY_IB_ROLE_SEND ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE
                                               : IBV_ACCESS_LOCAL_WRITE;
    c->fifo_mr = g.v.reg_mr(x->pd, c->fifo, fifo_bytes, access);
    if (!c->fifo_mr) {
        WARN("NET/IB : ibv_reg_mr of the CTS FIFO failed: %s", strerror(errno));
        return ecclSystemError;
    }
    for (uint32_t i = 0; i < c->nqps; i++) {
        struct ibv_qp_attr a;
        int mask;
        proxy_ib_qp_init_attr(&c->params, &a, &mask);
        ECCL_TRY(comm_modify(c, IBV_QPS_INIT, i, &a, mask));
    }
    c->qp_state = IBV_QPS_INIT;
    uint32_t qpn[PROXY_IB_MAX_QPS];
    for (uint32_t i = 0; i < c->nqps; i++)
        qpn[i] = c->qp[i]->qp_num;
    proxy_ib_reqs_init(&c->reqs, c->role, c->nqps, qpn, c);
    /* The sender keeps receives posted on QP 0 for the CTS writes (allowed from INIT on). */
    if (c->role == PROXY_IB_ROLE_SEND)
        for (int i = 0; i < ECCL_NET_MAX_REQUESTS; i++)
            ECCL_TRY(post_cts_recv(c));
    return ecclSuccess;
}

/* INIT -> RTR -> RTS towards the peer's queue pairs. */
static ecclResult_t comm_connect_qps(struct ib_comm *c, const struct proxy_ib_meta *remote)
{
    for (uint32_t i = 0; i < c->nqps; i++) {
        struct ibv_qp_attr a;
        int mask;
        ECCL_TRY(proxy_ib_qp_rtr_attr(&c->params, remote, i, &a, &mask));
        ECCL_TRY(comm_modify(c, IBV_QPS_RTR, i, &a, mask));
    }
    c->qp_state = IBV_QPS_RTR;
    for (uint32_t i = 0; i < c->nqps; i++) {
        struct ibv_qp_attr a;
        int mask;
        proxy_ib_qp_rts_attr(&c->params, c->psn[i], &a, &mask);
        ECCL_TRY(comm_modify(c, IBV_QPS_RTS, i, &a, mask));
    }
    c->qp_state = IBV_QPS_RTS;
    return ecclSuccess;
}

static ecclResult_t send_meta(struct ib_comm *c)
{
    const struct ib_dev *d = &g.devs[c->dev];
    struct proxy_ib_meta m;
    memset(&m, 0, sizeof(m));
    m.nonce = c->nonce;
    m.role = (uint8_t)c->role;
    m.link_layer = d->attr.link_layer;
    m.mtu = (uint8_t)d->attr.active_mtu;
    m.port = d->port;
    m.lid = d->attr.lid;
    memcpy(m.gid, d->gid.raw, 16);
    if (c->role == PROXY_IB_ROLE_SEND) {
        m.fifo_addr = (uint64_t)(uintptr_t)c->fifo;
        m.fifo_rkey = c->fifo_mr->rkey;
        m.fifo_slots = ECCL_NET_MAX_REQUESTS;
    }
    m.nqps = c->nqps;
    for (uint32_t i = 0; i < c->nqps; i++) {
        m.qpn[i] = c->qp[i]->qp_num;
        m.psn[i] = c->psn[i];
    }
    uint8_t buf[PROXY_IB_META_MAX_BYTES];
    size_t len = 0;
    ECCL_TRY(proxy_ib_meta_encode(&m, buf, sizeof(buf), &len));
    return eccl_socket_send_all(c->fd, buf, len, eccl_deadline_ms(SETUP_SEND_MS), NULL);
}

/* Reads what the socket has towards `need` bytes in c->rbuf; *complete once they are all in. */
static ecclResult_t recv_some(struct ib_comm *c, size_t need, bool *complete)
{
    *complete = false;
    while (c->rlen < need) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, need - c->rlen, MSG_DONTWAIT);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n == 0) {
            WARN("NET/IB : the peer closed the side channel during connection setup");
            return ecclRemoteError;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return ecclSuccess;
        if (errno == ECONNRESET) {
            WARN("NET/IB : the peer reset the side channel during connection setup");
            return ecclRemoteError;
        }
        WARN("NET/IB : recv on the side channel failed: %s", strerror(errno));
        return ecclSystemError;
    }
    *complete = true;
    return ecclSuccess;
}

/* Reads the peer's metadata record; *out is valid once *complete. */
static ecclResult_t recv_meta(struct ib_comm *c, struct proxy_ib_meta *out, bool *complete)
{
    size_t total = 0;
    ECCL_TRY(recv_some(c, PROXY_IB_META_HDR_BYTES, complete));
    if (!*complete)
        return ecclSuccess;
    ECCL_TRY(proxy_ib_meta_peek(c->rbuf, c->rlen, &total));
    ECCL_TRY(recv_some(c, total, complete));
    if (!*complete)
        return ecclSuccess;
    ECCL_TRY(proxy_ib_meta_decode(c->rbuf, c->rlen, out));
    int want = c->role == PROXY_IB_ROLE_SEND ? PROXY_IB_ROLE_RECV : PROXY_IB_ROLE_SEND;
    if (out->role != want || out->nonce != c->nonce) {
        WARN("NET/IB : connection metadata from a stranger (role %u, nonce %s)", out->role,
             out->nonce == c->nonce ? "right" : "wrong");
        return ecclRemoteError;
    }
    c->rlen = 0;
    return ecclSuccess;
}

/* Non-blocking TCP connect: ST_TCP_START -> ST_TCP_WAIT -> ST_SETUP. A listener that refuses
 * (not there yet, or gone) is tried again at the next call; the caller's deadline bounds it. */
static ecclResult_t tcp_connect_progress(struct ib_comm *c)
{
    char buf[80];
    if (c->stage == ST_TCP_START) {
        int fd = socket(c->peer_addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            WARN("NET/IB : socket failed: %s", strerror(errno));
            return ecclSystemError;
        }
        int rc = connect(fd, &c->peer_addr.sa, eccl_sockaddr_len(&c->peer_addr));
        if (rc != 0 && errno != EINPROGRESS) {
            int err = errno;
            close(fd);
            if (err == ECONNREFUSED || err == EAGAIN || err == ENETUNREACH || err == EHOSTUNREACH)
                return ecclSuccess;
            WARN("NET/IB : connect to %s failed: %s",
                 eccl_sockaddr_str(&c->peer_addr, buf, sizeof(buf)), strerror(err));
            return ecclSystemError;
        }
        c->fd = fd;
        c->stage = rc == 0 ? ST_SETUP : ST_TCP_WAIT;
    }
    if (c->stage == ST_TCP_WAIT) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, 0) <= 0)
            return ecclSuccess;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == ECONNREFUSED || err == ETIMEDOUT || err == ENETUNREACH || err == EHOSTUNREACH ||
            err == ECONNRESET) {
            eccl_socket_close(&c->fd);
            c->stage = ST_TCP_START;
            return ecclSuccess;
        }
        if (err != 0) {
            WARN("NET/IB : connect to %s failed: %s",
                 eccl_sockaddr_str(&c->peer_addr, buf, sizeof(buf)), strerror(err));
            return ecclSystemError;
        }
        c->stage = ST_SETUP;
    }
    return ecclSuccess;
}

/* A setup that has not finished by its deadline: the peer is gone or never came. */
static ecclResult_t check_setup_deadline(const struct ib_comm *c, const char *what)
{
    static const char *const waiting[] = {
        [ST_TCP_START] = "for the listener to take the TCP connection",
        [ST_TCP_WAIT] = "for the TCP connection",
        [ST_SETUP] = "to set up",
        [ST_RECV_META] = "for the peer's connection metadata",
        [ST_RECV_READY] = "for the sender's ready message",
        [ST_DONE] = "",
        [ST_AUTH] = "for the authentication handshake",
    };
    if (c->stage != ST_DONE && eccl_deadline_passed(c->setup_deadline_ns)) {
        WARN("NET/IB : %s timed out after ECCL_IB_CONNECT_TIMEOUT_MS=%ld ms waiting %s", what,
             (long)eccl_param_ib_connect_timeout_ms(), waiting[c->stage]);
        return ecclInternalError;
    }
    return ecclSuccess;
}

/* The side channel's handshake (job secret); `next` is the stage after it. Off: next at once. */
static ecclResult_t auth_progress(struct ib_comm *c, int next)
{
    if (c->stage != ST_AUTH)
        return ecclSuccess;
    ecclResult_t r = eccl_auth_hs_step(&c->hs, c->fd);
    if (r == ecclSuccess)
        c->stage = next;
    return r == ecclInProgress ? ecclSuccess : r;
}

/* Moves a connection whose TCP side channel is up to its handshake, when a secret is set. */
static ecclResult_t auth_start(struct ib_comm *c, bool server, int next)
{
    if (!eccl_auth_enabled()) {
        c->stage = next;
        return ecclSuccess;
    }
    char peer[80];
    if (server) {
        union eccl_sockaddr a;
        socklen_t alen = sizeof(a);
        memset(&a, 0, sizeof(a));
        if (getpeername(c->fd, &a.sa, &alen) == 0 && eccl_sockaddr_valid(&a))
            eccl_sockaddr_str(&a, peer, sizeof(peer));
        else
            snprintf(peer, sizeof(peer), "(unknown peer)");
    } else {
        eccl_sockaddr_str(&c->peer_addr, peer, sizeof(peer));
    }
    ECCL_TRY(eccl_auth_hs_init(&c->hs, ECCL_AUTH_NET, server, peer));
    c->stage = ST_AUTH;
    return ecclSuccess;
}

static ecclResult_t connect_progress(struct ib_comm *c)
{
    if (c->stage == ST_TCP_START || c->stage == ST_TCP_WAIT) {
        ECCL_TRY(tcp_connect_progress(c));
        if (c->stage == ST_SETUP)
            ECCL_TRY(auth_start(c, false, ST_SETUP));
    }
    if (c->stage == ST_AUTH) {
        ECCL_TRY(auth_progress(c, ST_SETUP));
        if (c->stage == ST_AUTH)
            return check_setup_deadline(c, "connect");
    }
    if (c->stage == ST_SETUP) {
        c->nqps = (uint32_t)eccl_param_ib_qps_per_connection();
        ECCL_TRY(comm_setup_verbs(c));
        ECCL_TRY(send_meta(c));
        c->stage = ST_RECV_META;
    }
    if (c->stage == ST_RECV_META) {
        struct proxy_ib_meta remote;
        bool complete = false;
        ECCL_TRY(recv_meta(c, &remote, &complete));
        if (!complete)
            return check_setup_deadline(c, "connect");
        if (remote.nqps != c->nqps) {
            WARN("NET/IB : the receiver made %u queue pairs, %u asked", remote.nqps, c->nqps);
            return ecclRemoteError;
        }
        ECCL_TRY(comm_connect_qps(c, &remote));
        uint8_t ready[PROXY_IB_READY_BYTES];
        proxy_ib_ready_encode(c->nonce, ready);
        ECCL_TRY(eccl_socket_send_all(c->fd, ready, sizeof(ready), eccl_deadline_ms(SETUP_SEND_MS),
                                      NULL));
        c->stage = ST_DONE;
        char buf[80];
        INFO(ECCL_LOG_NET, "NET/IB : connected to %s on %s:%d, %u QP(s), MTU %d",
             eccl_sockaddr_str(&c->peer_addr, buf, sizeof(buf)), g.ctxs[g.devs[c->dev].ctx].name,
             c->params.port, c->nqps,
             proxy_ib_mtu_bytes(proxy_ib_mtu_min(c->params.mtu, (enum ibv_mtu)remote.mtu)));
    }
    return check_setup_deadline(c, "connect");
}

static ecclResult_t ib_listen(int dev, void *handle, void **listen_comm)
{
    ecclResult_t res = ecclSuccess;
    ECCL_TRY(check_dev(dev));
    struct ib_listen *l;
    ECCL_CALLOC_GOTO(l, 1, "net-ib-listen", res, out);
    l->magic = LISTEN_MAGIC;
    l->dev = dev;
    l->fd = -1;
    l->nonce = random64();
    struct proxy_ib_handle h;
    memset(&h, 0, sizeof(h));
    h.addr = g.oob_addr;
    if (h.addr.sa.sa_family == AF_INET)
        h.addr.sin.sin_port = 0;
    else
        h.addr.sin6.sin6_port = 0;
    ECCL_TRY_GOTO(eccl_socket_listen(&h.addr, &l->fd), res, err_free);
    h.nonce = l->nonce;
    ECCL_TRY_GOTO(proxy_ib_handle_encode(&h, handle, ECCL_NET_HANDLE_BYTES), res, err_close);
    *listen_comm = l;
    return ecclSuccess;
err_close:
    eccl_socket_close(&l->fd);
err_free:
    eccl_free(l);
out:
    return res;
}

static ecclResult_t ib_connect(int dev, const void *handle, void **send_comm)
{
    ecclResult_t res = ecclSuccess;
    ECCL_TRY(check_dev(dev));
    *send_comm = NULL;
    pthread_mutex_lock(&g.lock);
    /* connect is called again with the same handle until it gives a connection: the state in
     * between lives in g.pending, keyed by the handle's bytes. */
    struct ib_comm **link = &g.pending, *c = NULL;
    for (; *link; link = &(*link)->next_pending) {
        if ((*link)->dev == dev && memcmp((*link)->key, handle, ECCL_NET_HANDLE_BYTES) == 0) {
            c = *link;
            break;
        }
    }
    if (!c) {
        struct proxy_ib_handle h;
        ECCL_TRY_GOTO(proxy_ib_handle_decode(handle, ECCL_NET_HANDLE_BYTES, &h), res, out_unlock);
        ECCL_TRY_GOTO(comm_create(PROXY_IB_ROLE_SEND, dev, &c), res, out_unlock);
        memcpy(c->key, handle, ECCL_NET_HANDLE_BYTES);
        c->peer_addr = h.addr;
        c->nonce = h.nonce;
        c->stage = ST_TCP_START;
        c->next_pending = g.pending;
        g.pending = c;
        link = &g.pending;
    }
    res = connect_progress(c);
    if (res != ecclSuccess || c->stage == ST_DONE) {
        *link = c->next_pending;
        c->next_pending = NULL;
        if (res != ecclSuccess)
            comm_destroy(c);
        else
            *send_comm = c;
    }
out_unlock:
    pthread_mutex_unlock(&g.lock);
    return res;
}

static ecclResult_t accept_progress(struct ib_listen *l, struct ib_comm *c)
{
    if (c->stage == ST_AUTH) {
        ECCL_TRY(auth_progress(c, ST_RECV_META));
        if (c->stage == ST_AUTH)
            return check_setup_deadline(c, "accept");
    }
    if (c->stage == ST_RECV_META) {
        struct proxy_ib_meta remote;
        bool complete = false;
        ECCL_TRY(recv_meta(c, &remote, &complete));
        if (!complete)
            return check_setup_deadline(c, "accept");
        c->nqps = remote.nqps;
        ECCL_TRY(comm_setup_verbs(c));
        ECCL_TRY(comm_connect_qps(c, &remote));
        c->remote_fifo_addr = remote.fifo_addr;
        c->remote_fifo_rkey = remote.fifo_rkey;
        ECCL_TRY(send_meta(c));
        c->stage = ST_RECV_READY;
    }
    if (c->stage == ST_RECV_READY) {
        bool complete = false;
        ECCL_TRY(recv_some(c, PROXY_IB_READY_BYTES, &complete));
        if (!complete)
            return check_setup_deadline(c, "accept");
        ECCL_TRY(proxy_ib_ready_decode(c->rbuf, c->rlen, l->nonce));
        c->rlen = 0;
        c->stage = ST_DONE;
        INFO(ECCL_LOG_NET, "NET/IB : accepted a connection on %s:%d, %u QP(s)",
             g.ctxs[g.devs[c->dev].ctx].name, c->params.port, c->nqps);
    }
    return ecclSuccess;
}

static ecclResult_t ib_accept(void *listen_comm, void **recv_comm)
{
    struct ib_listen *l = listen_comm;
    if (!l || l->magic != LISTEN_MAGIC) {
        WARN("NET/IB : accept on something that is not an InfiniBand listener");
        return ecclInvalidArgument;
    }
    *recv_comm = NULL;
    if (!l->pending) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return ecclSuccess;
            WARN("NET/IB : accept failed: %s", strerror(errno));
            return ecclSystemError;
        }
        struct ib_comm *c = NULL;
        ecclResult_t res = comm_create(PROXY_IB_ROLE_RECV, l->dev, &c);
        if (res != ecclSuccess) {
            close(fd);
            return res;
        }
        c->fd = fd;
        c->nonce = l->nonce;
        l->pending = c;
        res = auth_start(c, true, ST_RECV_META);
        if (res != ecclSuccess) {
            comm_destroy(l->pending);
            l->pending = NULL;
            return res;
        }
    }
    bool authing = l->pending->stage == ST_AUTH;
    ecclResult_t res = accept_progress(l, l->pending);
    if (res != ecclSuccess) {
        comm_destroy(l->pending);
        l->pending = NULL;
        /* A peer without the job secret (refused and logged) does not fail the listener. */
        return authing && res == ecclRemoteError ? ecclSuccess : res;
    }
    if (l->pending->stage == ST_DONE) {
        *recv_comm = l->pending;
        l->pending = NULL;
    }
    return ecclSuccess;
}

/* ---- memory registration ---------------------------------------------------------------- */

static struct ib_comm *comm_of(void *comm, const char *what)
{
    struct ib_comm *c = comm;
    if (!c || c->magic != COMM_MAGIC || c->stage != ST_DONE) {
        WARN("NET/IB : %s on something that is not a connected InfiniBand comm", what);
        return NULL;
    }
    return c;
}

static ecclResult_t mhandle_make(struct ibv_mr *mr, int type, void *data, size_t size,
                                 void **mhandle)
{
    struct ib_mhandle *mh = eccl_calloc(1, sizeof(*mh), "net-ib-mr");
    if (!mh) {
        if (mr)
            g.v.dereg_mr(mr);
        return ecclSystemError;
    }
    mh->mr = mr;
    mh->type = type;
    mh->base = (uintptr_t)data;
    mh->size = size;
    *mhandle = mh;
    return ecclSuccess;
}

static ecclResult_t ib_reg_mr(void *comm, void *data, size_t size, int type, void **mhandle)
{
    struct ib_comm *c = comm_of(comm, "reg_mr");
    if (!c)
        return ecclInvalidArgument;
    const struct ib_ctx *x = &g.ctxs[g.devs[c->dev].ctx];
    if (type != ECCL_NET_PTR_HOST && type != ECCL_NET_PTR_CUDA) {
        WARN("NET/IB : reg_mr of memory type %d", type);
        return ecclInvalidArgument;
    }
    if (type == ECCL_NET_PTR_CUDA && x->gdr != PROXY_NET_IB_GDR_PEERMEM) {
        WARN("NET/IB : %s cannot register CUDA pointers (no nvidia-peermem%s)", x->name,
             x->gdr == PROXY_NET_IB_GDR_DMABUF ? "; use the dma-buf registration" : "");
        return ecclInvalidArgument;
    }
    struct ibv_mr *mr = NULL;
    if (size > 0) {
        mr = g.v.reg_mr(x->pd, data, size, DATA_ACCESS);
        if (!mr) {
            WARN("NET/IB : ibv_reg_mr(%p, %zu bytes) on %s failed: %s%s", data, size, x->name,
                 strerror(errno), errno == ENOMEM ? " (is the memlock limit high enough?)" : "");
            return ecclSystemError;
        }
    }
    return mhandle_make(mr, type, data, size, mhandle);
}

ecclResult_t proxy_net_ib_reg_mr_dmabuf(void *comm, void *data, size_t size, uint64_t offset,
                                        int fd, void **mhandle)
{
    struct ib_comm *c = comm_of(comm, "reg_mr_dmabuf");
    if (!c)
        return ecclInvalidArgument;
    const struct ib_ctx *x = &g.ctxs[g.devs[c->dev].ctx];
    if (x->gdr != PROXY_NET_IB_GDR_DMABUF || !g.v.reg_dmabuf_mr) {
        WARN("NET/IB : %s cannot register dma-buf memory", x->name);
        return ecclInvalidUsage;
    }
    struct ibv_mr *mr =
        g.v.reg_dmabuf_mr(x->pd, offset, size, (uint64_t)(uintptr_t)data, fd, DATA_ACCESS);
    if (!mr) {
        WARN("NET/IB : ibv_reg_dmabuf_mr(fd %d, %zu bytes) on %s failed: %s", fd, size, x->name,
             strerror(errno));
        return ecclSystemError;
    }
    return mhandle_make(mr, ECCL_NET_PTR_CUDA, data, size, mhandle);
}

static ecclResult_t ib_dereg_mr(void *comm, void *mhandle)
{
    (void)comm;
    struct ib_mhandle *mh = mhandle;
    if (!mh)
        return ecclSuccess;
    ecclResult_t res = ecclSuccess;
    if (mh->mr) {
        int rc = g.v.dereg_mr(mh->mr);
        if (rc != 0) {
            WARN("NET/IB : ibv_dereg_mr failed: %s", strerror(rc));
            res = ecclSystemError;
        }
    }
    eccl_free(mh);
    return res;
}

/* ---- data path -------------------------------------------------------------------------- */

static ecclResult_t comm_fail(struct ib_comm *c, ecclResult_t res)
{
    if (c->reqs.failed == ecclSuccess)
        c->reqs.failed = res;
    return res;
}

static bool any_pending(const struct ib_comm *c)
{
    for (int i = 0; i < ECCL_NET_MAX_REQUESTS; i++)
        if (c->reqs.slot[i].live && c->reqs.slot[i].pending > 0)
            return true;
    return false;
}

static ecclResult_t poll_cq(struct ib_comm *c, int *polled)
{
    struct ibv_wc wc[POLL_BATCH];
    *polled = 0;
    /* A bounded number of batches: the queue never holds more than the posted work requests,
     * and a caller that polls again gets the rest. */
    for (int round = 0; round < POLL_ROUNDS; round++) {
        int n = ibv_poll_cq(c->cq, POLL_BATCH, wc);
        if (n < 0) {
            WARN("NET/IB : ibv_poll_cq failed (%d)", n);
            return comm_fail(c, ecclSystemError);
        }
        for (int i = 0; i < n; i++) {
            bool repost = false;
            ECCL_TRY(proxy_ib_reqs_on_wc(&c->reqs, &wc[i], &repost));
            if (repost) {
                ecclResult_t res = post_cts_recv(c);
                if (res != ecclSuccess)
                    return comm_fail(c, res);
            }
        }
        *polled += n;
        if (n < POLL_BATCH)
            break;
    }
    return ecclSuccess;
}

/* Whether the peer closed its side channel: the process is gone (or closed the connection). */
static ecclResult_t check_peer(struct ib_comm *c, uint64_t now)
{
    uint8_t b;
    ssize_t n = recv(c->fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    int err = errno;
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
        return ecclSuccess;
    if (n > 0) {
        WARN("NET/IB : unexpected bytes from the peer on the side channel");
        return comm_fail(c, ecclRemoteError);
    }
    /* EOF or reset: the peer process is gone or closed its end. */
    c->peer_closed = true;
    c->peer_closed_ns = now;
    c->peer_closed_err = n == 0 ? 0 : err;
    return ecclSuccess;
}

static ecclResult_t comm_progress(struct ib_comm *c)
{
    if (c->reqs.failed != ecclSuccess)
        return c->reqs.failed;
    int polled = 0;
    ECCL_TRY(poll_cq(c, &polled));
    if (polled > 0 && !c->peer_closed)
        return ecclSuccess;
    uint64_t now = eccl_now_ns();
    if (!c->peer_closed && now - c->last_peer_check_ns >= PEER_CHECK_NS) {
        c->last_peer_check_ns = now;
        ECCL_TRY(check_peer(c, now));
    }
    /* The side channel and the fabric are different paths: completions that the peer caused
     * before it closed may land a little after its EOF. Requests still waiting once the grace
     * is over never complete. */
    if (c->peer_closed && any_pending(c) && now - c->peer_closed_ns >= PEER_GRACE_NS) {
        WARN("NET/IB : the peer closed the connection (%s) with requests in flight",
             c->peer_closed_err ? strerror(c->peer_closed_err) : "EOF");
        return comm_fail(c, ecclRemoteError);
    }
    return ecclSuccess;
}

static ecclResult_t check_buffer(const struct ib_mhandle *mh, const void *data, size_t size,
                                 const char *what)
{
    if (size == 0)
        return ecclSuccess;
    uintptr_t p = (uintptr_t)data;
    if (!mh || !mh->mr || p < mh->base || p - mh->base > mh->size ||
        size > mh->size - (p - mh->base)) {
        WARN("NET/IB : %s of %zu bytes at %p outside its registered region", what, size, data);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

static ecclResult_t ib_isend(void *send_comm, void *data, size_t size, int tag, void *mhandle,
                             void **request)
{
    struct ib_comm *c = comm_of(send_comm, "isend");
    if (!c || c->role != PROXY_IB_ROLE_SEND)
        return ecclInvalidArgument;
    *request = NULL;
    struct ib_mhandle *mh = mhandle;
    ECCL_TRY(check_buffer(mh, data, size, "isend"));
    if (size > g.devs[c->dev].max_msg) {
        WARN("NET/IB : isend of %zu bytes, at most %zu", size, g.devs[c->dev].max_msg);
        return ecclInvalidArgument;
    }
    ECCL_TRY(comm_progress(c));
    if (c->peer_closed) {
        WARN("NET/IB : isend to a peer that closed the connection");
        return comm_fail(c, ecclRemoteError);
    }
    if (!proxy_ib_reqs_can_post(&c->reqs) || !proxy_ib_reqs_cts_ready(&c->reqs))
        return ecclSuccess; /* call again */
    uint64_t seq = c->reqs.next_seq;
    struct proxy_ib_cts cts;
    ecclResult_t res = proxy_ib_cts_decode(
        c->fifo + (seq % ECCL_NET_MAX_REQUESTS) * PROXY_IB_CTS_BYTES, seq, &cts);
    if (res != ecclSuccess)
        return comm_fail(c, res);
    if (cts.tag != tag) {
        WARN("NET/IB : send with tag %d met a receive with tag %d (tags must match in order)", tag,
             cts.tag);
        return comm_fail(c, ecclInvalidUsage);
    }
    if (size > cts.size) {
        WARN("NET/IB : send of %zu bytes into a receive of %u bytes", size, cts.size);
        return comm_fail(c, ecclInvalidUsage);
    }
    struct proxy_ib_req *req = proxy_ib_reqs_post(&c->reqs, size);
    for (uint32_t i = 0; i < c->nqps; i++) {
        size_t off, len;
        proxy_ib_split(size, c->nqps, i, &off, &len);
        struct ibv_sge sge;
        struct ibv_send_wr wr, *bad = NULL;
        memset(&wr, 0, sizeof(wr));
        wr.wr_id = proxy_ib_wr_id(PROXY_IB_WR_DATA_WRITE, seq);
        wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
        wr.send_flags = IBV_SEND_SIGNALED;
        wr.imm_data = htobe32((uint32_t)size);
        wr.wr.rdma.remote_addr = cts.addr + off;
        wr.wr.rdma.rkey = cts.rkey;
        if (len > 0) {
            sge.addr = (uint64_t)(uintptr_t)data + off;
            sge.length = (uint32_t)len;
            sge.lkey = mh->mr->lkey;
            wr.sg_list = &sge;
            wr.num_sge = 1;
        }
        int rc = ibv_post_send(c->qp[i], &wr, &bad);
        if (rc != 0) {
            WARN("NET/IB : ibv_post_send (data, %zu bytes) failed: %s", len, strerror(rc));
            return comm_fail(c, ecclSystemError);
        }
    }
    *request = req;
    return ecclSuccess;
}

static ecclResult_t ib_irecv(void *recv_comm, void *data, size_t size, int tag, void *mhandle,
                             void **request)
{
    struct ib_comm *c = comm_of(recv_comm, "irecv");
    if (!c || c->role != PROXY_IB_ROLE_RECV)
        return ecclInvalidArgument;
    *request = NULL;
    struct ib_mhandle *mh = mhandle;
    ECCL_TRY(check_buffer(mh, data, size, "irecv"));
    if (size > g.devs[c->dev].max_msg) {
        WARN("NET/IB : irecv of %zu bytes, at most %zu", size, g.devs[c->dev].max_msg);
        return ecclInvalidArgument;
    }
    ECCL_TRY(comm_progress(c));
    if (c->peer_closed) {
        WARN("NET/IB : irecv from a peer that closed the connection");
        return comm_fail(c, ecclRemoteError);
    }
    struct proxy_ib_req *req = proxy_ib_reqs_post(&c->reqs, size);
    if (!req)
        return ecclSuccess; /* call again */
    for (uint32_t i = 0; i < c->nqps; i++) {
        struct ibv_recv_wr wr, *bad = NULL;
        memset(&wr, 0, sizeof(wr));
        wr.wr_id = proxy_ib_wr_id(PROXY_IB_WR_DATA_RECV, req->seq);
        int rc = ibv_post_recv(c->qp[i], &wr, &bad);
        if (rc != 0) {
            WARN("NET/IB : ibv_post_recv (data) failed: %s", strerror(rc));
            return comm_fail(c, ecclSystemError);
        }
    }
    size_t slot = req->seq % ECCL_NET_MAX_REQUESTS;
    struct proxy_ib_cts cts = {
        .seq = req->seq,
        .addr = (uint64_t)(uintptr_t)data,
        .rkey = size > 0 ? mh->mr->rkey : 0,
        .size = (uint32_t)size,
        .tag = tag,
    };
    uint8_t *entry = c->fifo + slot * PROXY_IB_CTS_BYTES;
    proxy_ib_cts_encode(&cts, entry);
    struct ibv_sge sge = {
        .addr = (uint64_t)(uintptr_t)entry,
        .length = PROXY_IB_CTS_BYTES,
        .lkey = c->fifo_mr->lkey,
    };
    struct ibv_send_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof(wr));
    wr.wr_id = proxy_ib_wr_id(PROXY_IB_WR_CTS_WRITE, req->seq);
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htobe32((uint32_t)req->seq);
    wr.wr.rdma.remote_addr = c->remote_fifo_addr + slot * PROXY_IB_CTS_BYTES;
    wr.wr.rdma.rkey = c->remote_fifo_rkey;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    int rc = ibv_post_send(c->qp[0], &wr, &bad);
    if (rc != 0) {
        WARN("NET/IB : ibv_post_send (CTS) failed: %s", strerror(rc));
        return comm_fail(c, ecclSystemError);
    }
    *request = req;
    return ecclSuccess;
}

static ecclResult_t ib_test(void *request, int *done, size_t *size)
{
    struct proxy_ib_req *req = request;
    *done = 0;
    if (!req || !req->live) {
        WARN("NET/IB : test of a request that is not live");
        return ecclInvalidArgument;
    }
    struct ib_comm *c = req->comm;
    ECCL_TRY(comm_progress(c));
    size_t moved = 0;
    if (proxy_ib_reqs_test(&c->reqs, req, &moved)) {
        *done = 1;
        if (size)
            *size = moved;
    }
    return ecclSuccess;
}

static ecclResult_t ib_close_comm(void *comm)
{
    struct ib_comm *c = comm;
    if (!c)
        return ecclSuccess;
    if (c->magic != COMM_MAGIC) {
        WARN("NET/IB : close of something that is not an InfiniBand comm");
        return ecclInvalidArgument;
    }
    comm_destroy(c);
    return ecclSuccess;
}

static ecclResult_t ib_close_listen(void *listen_comm)
{
    struct ib_listen *l = listen_comm;
    if (!l)
        return ecclSuccess;
    if (l->magic != LISTEN_MAGIC) {
        WARN("NET/IB : close_listen of something that is not an InfiniBand listener");
        return ecclInvalidArgument;
    }
    comm_destroy(l->pending);
    eccl_socket_close(&l->fd);
    l->magic = 0;
    eccl_free(l);
    return ecclSuccess;
}

const struct eccl_net_ops eccl_net_ib = {
    .name = "ib",
    .init = ib_init,
    .devices = ib_devices,
    .get_properties = ib_get_properties,
    .listen = ib_listen,
    .connect = ib_connect,
    .accept = ib_accept,
    .reg_mr = ib_reg_mr,
    .dereg_mr = ib_dereg_mr,
    .isend = ib_isend,
    .irecv = ib_irecv,
    .test = ib_test,
    .close_send = ib_close_comm,
    .close_recv = ib_close_comm,
    .close_listen = ib_close_listen,
    .fini = ib_fini,
};

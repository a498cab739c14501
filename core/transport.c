/*
 * transport.c - connects the communicator's connectors through the rank's proxy.
 *
 * A connector is one-way: the receiving rank's proxy owns its memory. For each connector the
 * receiving rank asks its proxy to Init a connection and Setup its memory, and sends the result
 * (a descriptor: the segment's handle, or a network listener's handle) to the sending rank
 * through the bootstrap. The sending rank asks its own proxy to Init a connection; for shared
 * memory it fetches the segment from the receiver's proxy over the UDS socket (SCM_RIGHTS) and
 * asks its proxy to Connect (map) it; for the network it asks its proxy to Setup a local FIFO and
 * Connect to the listener, while the receiver's proxy accepts. Ranks of one host (same host
 * hash) use shared memory unless ECCL_SHM_DISABLE=1; other ranks use the network backend that
 * the proxy selects (ECCL_NET).
 *
 * Between two ranks of CUDA communicators on one host, a shared-memory connector also gets its
 * slots in the receiver's device memory (P2P): the receiver allocates them (kernels/dev_mem.h),
 * hands the exported file descriptor to its proxy with Setup, and the sender fetches it over the
 * UDS socket like the segment and maps it (cuMem; legacy CUDA IPC sends its handle in the
 * descriptor instead). The sender's kernels write the device slots and flag each step so; a
 * sender that could not map them (or runs a plan on the host executor) uses the host slots, so
 * either side may fall back alone. ECCL_P2P_DISABLE=1 keeps every step in host memory,
 * ECCL_CUMEM_ENABLE=0 picks legacy IPC.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "core/core_int.h"
#include "kernels/dev_mem.h"

ECCL_PARAM_INT(shm_slots, "ECCL_SHM_SLOTS", 8)
ECCL_PARAM_INT(shm_slot_bytes, "ECCL_SHM_SLOT_BYTES", 0)
ECCL_PARAM_INT(p2p_slot_bytes, "ECCL_P2P_SLOT_BYTES", 0)
ECCL_PARAM_INT(shm_disable, "ECCL_SHM_DISABLE", 0)
ECCL_PARAM_INT(p2p_disable, "ECCL_P2P_DISABLE", 0)
ECCL_PARAM_INT(cumem_enable, "ECCL_CUMEM_ENABLE", 1)
ECCL_PARAM_INT(ll_slot_bytes, "ECCL_LL_SLOT_BYTES", 64 * 1024)
ECCL_PARAM_INT(ll_threshold, "ECCL_LL_THRESHOLD", -1)
ECCL_PARAM_INT(ll128_threshold, "ECCL_LL128_THRESHOLD", -1)
ECCL_PARAM_STR(proto, "ECCL_PROTO", NULL)
ECCL_PARAM_INT(min_nchannels, "ECCL_MIN_NCHANNELS", 1)

#define DESC_MAGIC 0x65636473u /* "ecds" */
#define DESC_TAG   0x43000000u /* bootstrap tags of connector descriptors: DESC_TAG | conn tag */

enum conn_kind {
    KIND_RING = 1,
    KIND_TREE_UP = 2,
    KIND_TREE_DOWN = 3,
    KIND_P2P = 4,
};

static uint32_t conn_tag(int kind, int channel, int index)
{
    return ((uint32_t)kind << 16) | ((uint32_t)channel << 8) | (uint32_t)index;
}

/* What the receiving rank tells the sending rank about a connector. Fixed layout: it crosses
 * the wire (bootstrap), and is checked on arrival. */
struct conn_desc {
    uint32_t magic;
    uint32_t transport; /* enum proxy_transport */
    uint32_t tag;
    uint32_t nslots;
    uint32_t slot_bytes;
    uint32_t ll128_bytes; /* bytes of each slot's LL128 lines after the LL lines (0: none) */
    uint64_t handle;      /* shm: the segment, in the receiver's proxy */
    uint64_t size;        /* shm: segment bytes */
    uint8_t net_handle[ECCL_NET_HANDLE_BYTES];
    /* shm between CUDA ranks: the slots in the receiver's device memory */
    uint32_t dev_mode;   /* enum kern_dev_mem_mode; KERN_DEV_MEM_NONE: host slots only */
    uint32_t ll_bytes;   /* bytes of each slot's LL lines after the slots (0: none) */
    uint64_t dev_handle; /* cuMem: the descriptor, in the receiver's proxy */
    uint64_t dev_size;
    uint8_t dev_ipc[KERN_DEV_IPC_BYTES]; /* legacy IPC: the handle */
};

/* One connector this rank wants, and how far its setup got. */
struct conn_want {
    int peer;
    uint32_t tag;
    bool send;
    uint32_t slot_bytes; /* receive side: the geometry it offers */
    struct eccl_conn_ctrl **out;
    int transport;
    int conn;
    uint64_t op;     /* the Connect in flight, 0: none */
    int dev_mode;    /* the connector has device slots (enum kern_dev_mem_mode) */
    bool ll_want;    /* ring and tree connectors: device slots get LL lines too */
    bool ll128_want; /* ring connectors: and LL128 lines after those */
    bool ll;         /* they have them, of the communicator's size, on both sides */
    bool ll128;
};

static bool use_shm(const struct ecclComm *comm, int peer)
{
    return comm->peers[peer].host_hash == comm->peers[comm->rank].host_hash &&
           !comm->tp.shm_disabled;
}

static const char *transport_name(const struct ecclComm *comm, int transport)
{
    (void)comm;
    return transport == PROXY_TRANSPORT_SHM ? "SHM" : "NET";
}

static ecclResult_t call(struct ecclComm *comm, enum proxy_op_type type, int conn, const void *req,
                         size_t req_size, void *resp, size_t resp_size)
{
    return proxy_op_call(comm->tp.proxy, type, conn, req, req_size, resp, resp_size,
                         eccl_deadline_ms(comm->bs.timeout_ms), &comm->abort);
}

/* Publishes a connector where the executors find it, under error_lock: a failure on another
 * thread closes every published connector (core_exec_close_all). */
static void set_out(struct ecclComm *comm, struct conn_want *w, struct eccl_conn_ctrl *ctrl)
{
    pthread_mutex_lock(&comm->error_lock);
    *w->out = ctrl;
    pthread_mutex_unlock(&comm->error_lock);
}

static ecclResult_t want_init(struct ecclComm *comm, struct conn_want *w, uint32_t nslots,
                              uint32_t slot_bytes)
{
    struct proxy_init_req req = {.transport = w->transport,
                                 .send = w->send,
                                 .peer = w->peer,
                                 .tag = w->tag,
                                 .nslots = nslots,
                                 .slot_bytes = slot_bytes};
    struct proxy_init_resp resp;
    ECCL_TRY(call(comm, PROXY_OP_INIT, -1, &req, sizeof(req), &resp, sizeof(resp)));
    w->conn = resp.conn;
    INFO(ECCL_LOG_PROXY, "Connected to proxy localRank %d -> connection %d", comm->rank, resp.conn);
    return ecclSuccess;
}

/* Device slots for a receive connector of `bytes`: the memory, and what the sender needs to map
 * it. NULL when this connector gets none (not a CUDA pair, P2P off, or CUDA refused: then the
 * host slots serve, and INFO says why). */
static struct kern_dev_mem *dev_slots_create(struct ecclComm *comm, const struct conn_want *w,
                                             size_t bytes, int *fd, uint8_t *ipc)
{
    *fd = -1;
    if (w->transport != PROXY_TRANSPORT_SHM || !comm->dev || comm->tp.dev_mode == KERN_DEV_MEM_NONE)
        return NULL;
    struct kern_dev_mem *mem = NULL;
    ecclResult_t r = kern_dev_mem_create(comm->cuda_dev, comm->tp.dev_mode, bytes, &mem);
    if (r == ecclSuccess)
        r = kern_dev_mem_export(mem, fd, ipc);
    if (r != ecclSuccess) {
        INFO(ECCL_LOG_SHM, "connector 0x%x from rank %d: no device slots (%s); host memory serves",
             (unsigned)w->tag, w->peer, eccl_log_last_error());
        eccl_log_clear_last_error();
        kern_dev_mem_free(mem);
        return NULL;
    }
    return mem;
}

/* Receiving side: the proxy makes the memory; the descriptor goes to the sender. */
static ecclResult_t offer(struct ecclComm *comm, struct conn_want *w)
{
    struct core_transport *tp = &comm->tp;
    ECCL_TRY(want_init(comm, w, tp->nslots, w->slot_bytes));
    struct conn_desc d;
    memset(&d, 0, sizeof(d));
    int dev_fd = -1;
    uint32_t ll_bytes = w->ll_want ? tp->ll_bytes : 0;
    uint32_t ll128_bytes = w->ll128_want ? tp->ll128_bytes : 0;
    struct kern_dev_mem *mem = dev_slots_create(
        comm, w, (size_t)tp->nslots * ((size_t)w->slot_bytes + ll_bytes + ll128_bytes), &dev_fd,
        d.dev_ipc);
    struct proxy_setup_req sreq = {.dev_fd = dev_fd};
    struct proxy_setup_resp setup;
    /* The proxy takes dev_fd in every case. */
    ecclResult_t res = call(comm, PROXY_OP_SETUP, w->conn, mem ? &sreq : NULL,
                            mem ? sizeof(sreq) : 0, &setup, sizeof(setup));
    if (res != ecclSuccess) {
        kern_dev_mem_free(mem);
        return res;
    }
    if (mem) {
        d.dev_mode = (uint32_t)kern_dev_mem_mode_of(mem);
        d.dev_size = kern_dev_mem_size(mem);
        d.dev_handle = setup.dev_handle;
        d.ll_bytes = ll_bytes;
        d.ll128_bytes = ll128_bytes;
        w->dev_mode = (int)d.dev_mode;
        w->ll = ll_bytes != 0;
        w->ll128 = ll128_bytes != 0;
        ECCL_TRY(kern_dev_conn_attach(comm->dev, setup.ctrl, mem)); /* takes mem */
    }
    d.magic = DESC_MAGIC;
    d.transport = (uint32_t)w->transport;
    d.tag = w->tag;
    d.nslots = tp->nslots;
    d.slot_bytes = w->slot_bytes;
    d.handle = setup.handle;
    d.size = setup.size;
    memcpy(d.net_handle, setup.net_handle, sizeof(d.net_handle));
    set_out(comm, w, setup.ctrl);
    return core_bootstrap_send(&comm->bs, w->peer, DESC_TAG | w->tag, &d, sizeof(d));
}

/* Sending side of a connector whose receiver offers device slots: maps them, or leaves the host
 * slots in use (INFO says why) when this rank cannot. */
static void dev_slots_map(struct ecclComm *comm, struct conn_want *w, const struct conn_desc *d,
                          struct eccl_conn_ctrl *ctrl)
{
    if (d->dev_mode == KERN_DEV_MEM_NONE || !comm->dev || comm->tp.dev_mode == KERN_DEV_MEM_NONE)
        return;
    size_t need = (size_t)d->nslots * ((size_t)d->slot_bytes + d->ll_bytes + d->ll128_bytes);
    const char *why = NULL;
    if (d->dev_mode != KERN_DEV_MEM_CUMEM && d->dev_mode != KERN_DEV_MEM_IPC)
        why = "an unknown sharing mode";
    else if (d->dev_size < need || d->dev_size > 2 * need + (64u << 20))
        why = "a size that does not fit its geometry";
    else if (d->dev_mode == KERN_DEV_MEM_CUMEM && d->dev_handle == 0)
        why = "no descriptor";
    else if (d->ll_bytes % 64 != 0 || d->ll_bytes > (1u << 20))
        why = "LL lines of a bad size";
    else if (d->ll128_bytes % 128 != 0 || d->ll128_bytes > core_ll128_slot_bytes(64u << 20))
        why = "LL128 lines of a bad size";
    if (why) {
        WARN("rank %d offers device slots with %s (connector 0x%x): host memory serves", w->peer,
             why, (unsigned)w->tag);
        return;
    }
    int fd = -1;
    ecclResult_t r = ecclSuccess;
    if (d->dev_mode == KERN_DEV_MEM_CUMEM)
        r = proxy_client_get_fd(comm->tp.uds_fd, comm->bs.magic, comm->rank, w->peer, d->dev_handle,
                                &fd, eccl_deadline_ms(comm->bs.timeout_ms), &comm->abort);
    struct kern_dev_mem *mem = NULL;
    if (r == ecclSuccess)
        r = kern_dev_mem_import(comm->cuda_dev, (enum kern_dev_mem_mode)d->dev_mode, fd, d->dev_ipc,
                                d->dev_size, &mem);
    int where = mem ? kern_dev_mem_device(mem) : -1;
    if (r == ecclSuccess)
        r = kern_dev_conn_attach(comm->dev, ctrl, mem);
    if (r != ecclSuccess) {
        INFO(ECCL_LOG_SHM,
             "connector 0x%x to rank %d: its device slots cannot be mapped here (%s); "
             "host memory serves",
             (unsigned)w->tag, w->peer, eccl_log_last_error());
        eccl_log_clear_last_error();
        return;
    }
    w->dev_mode = (int)d->dev_mode;
    /* LL steps need lines of the size this rank's kernels assume, LL128 steps theirs after LL
     * lines of that size. */
    w->ll = d->ll_bytes != 0 && d->ll_bytes == comm->tp.ll_bytes;
    w->ll128 = d->ll128_bytes != 0 && d->ll128_bytes == comm->tp.ll128_bytes &&
               d->ll_bytes == comm->tp.ll_bytes;
    /* LL128 relies on a warp's 128-byte store reaching the reader whole: checked here between
     * ranks on one GPU; across GPUs (PCIe does not promise it; NCCL enables LL128 on NVLink
     * only) just where ECCL_PROTO names LL128, as NCCL_PROTO does. */
    if (w->ll128 && where != comm->cuda_dev && !comm->tp.ll128_forced) {
        INFO(ECCL_LOG_SHM,
             "connector 0x%x to rank %d: its memory is on another GPU: no LL128 unless "
             "ECCL_PROTO names it",
             (unsigned)w->tag, w->peer);
        w->ll128 = false;
    }
}

/* Sending side: takes the receiver's descriptor; shm connects at once, the network handshake
 * is left in flight (w->op). */
static ecclResult_t take(struct ecclComm *comm, struct conn_want *w)
{
    struct conn_desc d;
    ECCL_TRY(core_bootstrap_recv(&comm->bs, w->peer, DESC_TAG | w->tag, &d, sizeof(d)));
    if (d.magic != DESC_MAGIC || d.tag != w->tag || d.nslots < 2 ||
        d.nslots > ECCL_CONN_MAX_SLOTS || d.slot_bytes < 64 || d.slot_bytes > (64u << 20) ||
        d.slot_bytes % 64 != 0) {
        WARN("rank %d sent a bad connector descriptor (tag 0x%x: %u slots of %u bytes)", w->peer,
             d.tag, d.nslots, d.slot_bytes);
        return ecclRemoteError;
    }
    if (d.transport != (uint32_t)w->transport) {
        WARN("rank %d offers a %s connector where this rank expects %s: set ECCL_SHM_DISABLE and "
             "ECCL_HOSTID alike on every rank",
             w->peer, d.transport == PROXY_TRANSPORT_SHM ? "SHM" : "NET",
             transport_name(comm, w->transport));
        return ecclInvalidUsage;
    }
    ECCL_TRY(want_init(comm, w, d.nslots, d.slot_bytes));
    struct proxy_connect_req req;
    memset(&req, 0, sizeof(req));
    req.fd = -1;
    if (w->transport == PROXY_TRANSPORT_SHM) {
        ECCL_TRY(call(comm, PROXY_OP_SETUP, w->conn, NULL, 0, NULL, 0));
        int fd = -1;
        ECCL_TRY(proxy_client_get_fd(comm->tp.uds_fd, comm->bs.magic, comm->rank, w->peer, d.handle,
                                     &fd, eccl_deadline_ms(comm->bs.timeout_ms), &comm->abort));
        req.fd = fd;
        req.size = d.size;
        struct proxy_connect_resp resp;
        /* The proxy takes the descriptor, also when the operation fails. */
        ECCL_TRY(call(comm, PROXY_OP_CONNECT, w->conn, &req, sizeof(req), &resp, sizeof(resp)));
        set_out(comm, w, resp.ctrl);
        dev_slots_map(comm, w, &d, resp.ctrl);
        return ecclSuccess;
    }
    struct proxy_setup_resp setup;
    ECCL_TRY(call(comm, PROXY_OP_SETUP, w->conn, NULL, 0, &setup, sizeof(setup)));
    set_out(comm, w, setup.ctrl);
    memcpy(req.net_handle, d.net_handle, sizeof(req.net_handle));
    return proxy_op_post(comm->tp.proxy, PROXY_OP_CONNECT, w->conn, &req, sizeof(req),
                         sizeof(struct proxy_connect_resp), &w->op);
}

enum {
    PROTO_BIT_SIMPLE = 1 << ECCL_PROTO_SIMPLE,
    PROTO_BIT_LL = 1 << ECCL_PROTO_LL,
    PROTO_BIT_LL128 = 1 << ECCL_PROTO_LL128,
};

/* ECCL_PROTO as NCCL_PROTO reads: a comma-separated list of the protocols allowed, or, after a
 * leading '^', of those excluded; names in any case. Unset: all. */
ecclResult_t core_proto_parse(const char *s, uint32_t *mask)
{
    static const char *const names[ECCL_PROTO_COUNT] = {"simple", "ll", "ll128"};
    *mask = (1u << ECCL_PROTO_COUNT) - 1;
    if (!s || !*s)
        return ecclSuccess;
    bool exclude = s[0] == '^';
    uint32_t listed = 0;
    for (const char *p = s + exclude; *p;) {
        size_t len = strcspn(p, ",");
        int k = -1;
        for (int i = 0; i < ECCL_PROTO_COUNT && k < 0; i++)
            if (strlen(names[i]) == len && strncasecmp(p, names[i], len) == 0)
                k = i;
        if (k < 0) {
            WARN("ECCL_PROTO=%s: \"%.*s\" is not a protocol (Simple, LL, LL128)", s, (int)len, p);
            return ecclInvalidArgument;
        }
        listed |= 1u << k;
        p += len + (p[len] == ',');
    }
    *mask = exclude ? *mask & ~listed : listed;
    return ecclSuccess;
}

/* What each rank brings to the protocol agreement. */
struct proto_vote {
    uint32_t ll_bytes;
    uint32_t mask;
    uint64_t ll_threshold;
    uint32_t ll_capable; /* every ring and tree connector has LL lines, both ways */
    int32_t min_nchannels;
    uint32_t ll128_bytes;
    uint32_t ll128_capable; /* every ring connector has LL128 lines, both ways */
    uint64_t ll128_threshold;
};

/* Every rank's planner must pick the same protocol for the same call: the ranks agree on what
 * each allows and can do, once, at init. */
static ecclResult_t proto_agree(struct ecclComm *comm, const struct conn_want *wants, int n,
                                uint32_t mask)
{
    struct core_transport *tp = &comm->tp;
    int64_t thr = eccl_param_ll_threshold(), thr128 = eccl_param_ll128_threshold();
    struct proto_vote *v = eccl_calloc((size_t)comm->nranks, sizeof(*v), "proto-votes");
    if (!v)
        return ecclSystemError;
    struct proto_vote *mine = &v[comm->rank];
    mine->ll_bytes = tp->ll_bytes;
    mine->mask = mask;
    mine->ll_threshold = thr < 0 ? UINT64_MAX : (uint64_t)thr;
    mine->ll_capable = tp->ll_bytes != 0;
    mine->min_nchannels = (int32_t)ECCL_MIN(ECCL_MAX(eccl_param_min_nchannels(), 1), 64);
    mine->ll128_bytes = tp->ll128_bytes;
    mine->ll128_threshold = thr128 < 0 ? UINT64_MAX : (uint64_t)thr128;
    mine->ll128_capable = tp->ll128_bytes != 0;
    for (int i = 0; i < n; i++) {
        mine->ll_capable &= wants[i].ll;
        if (wants[i].tag >> 16 == KIND_RING)
            mine->ll128_capable &= wants[i].ll128;
    }
    ecclResult_t res = core_bootstrap_allgather(&comm->bs, v, sizeof(*v));
    if (res != ecclSuccess)
        goto out;
    uint32_t all = ~0u;
    bool capable = true, capable128 = true;
    uint64_t threshold = UINT64_MAX, threshold128 = UINT64_MAX;
    tp->min_nchannels = 1;
    for (int r = 0; r < comm->nranks; r++) {
        if (v[r].min_nchannels > tp->min_nchannels && v[r].min_nchannels <= 64)
            tp->min_nchannels = v[r].min_nchannels;
        all &= v[r].mask;
        capable &= v[r].ll_capable && v[r].ll_bytes == tp->ll_bytes;
        threshold = v[r].ll_threshold < threshold ? v[r].ll_threshold : threshold;
        capable128 &= v[r].ll128_capable && v[r].ll128_bytes == tp->ll128_bytes &&
                      v[r].ll_bytes == tp->ll_bytes;
        threshold128 = ECCL_MIN(v[r].ll128_threshold, threshold128);
    }
    tp->ll_ok = capable && (all & PROTO_BIT_LL);
    tp->ll128_ok = capable128 && (all & PROTO_BIT_LL128);
    tp->simple_ok = (all & PROTO_BIT_SIMPLE) || (!tp->ll_ok && !tp->ll128_ok);
    tp->ll_threshold = threshold;
    tp->ll128_threshold = threshold128;
    if (comm->dev)
        INFO(ECCL_LOG_INIT, "rank %d: protocols Simple%s%s%s", comm->rank, tp->ll_ok ? ", LL" : "",
             tp->ll128_ok ? ", LL128" : "",
             !tp->ll_ok && !tp->ll128_ok && (capable || capable128)
                 ? " (LL and LL128 excluded by ECCL_PROTO)"
             : !tp->ll_ok && !tp->ll128_ok
                 ? " (LL and LL128 need P2P connectors in device memory on every rank)"
                 : "");
    if (!(all & PROTO_BIT_SIMPLE) && !tp->ll_ok && !tp->ll128_ok)
        INFO(ECCL_LOG_INIT,
             "ECCL_PROTO excludes Simple, but neither LL nor LL128 can be used here: Simple "
             "serves");
out:
    eccl_free(v);
    return res;
}

static ecclResult_t shared_init(struct ecclComm *comm)
{
    if (comm->tp.net_ready)
        return ecclSuccess;
    ECCL_TRY(call(comm, PROXY_OP_SHARED_INIT, -1, NULL, 0, NULL, 0));
    comm->tp.net_ready = true;
    /* Executors wake the proxy after each step from now on. */
    for (int c = 0; c < comm->nchannels; c++)
        comm->channels[c].kc.bell = proxy_bell(comm->tp.proxy);
    return ecclSuccess;
}

/* Connects every connector of wants[]: offers first (every rank), then takes, then waits for
 * the network handshakes. The same order on every rank, so nobody waits on a rank that waits
 * on it. */
static ecclResult_t connect_wants(struct ecclComm *comm, struct conn_want *wants, int n)
{
    for (int i = 0; i < n; i++) {
        wants[i].transport =
            use_shm(comm, wants[i].peer) ? PROXY_TRANSPORT_SHM : PROXY_TRANSPORT_NET;
        wants[i].conn = -1;
        wants[i].op = 0;
        wants[i].dev_mode = KERN_DEV_MEM_NONE;
        wants[i].ll = false;
        wants[i].ll128 = false;
        if (wants[i].transport == PROXY_TRANSPORT_NET)
            ECCL_TRY(shared_init(comm));
    }
    for (int i = 0; i < n; i++)
        if (!wants[i].send)
            ECCL_TRY(offer(comm, &wants[i]));
    for (int i = 0; i < n; i++)
        if (wants[i].send)
            ECCL_TRY(take(comm, &wants[i]));
    for (int i = 0; i < n; i++) {
        struct conn_want *w = &wants[i];
        if (!w->send && w->transport == PROXY_TRANSPORT_NET)
            ECCL_TRY(proxy_op_post(comm->tp.proxy, PROXY_OP_CONNECT, w->conn, NULL, 0,
                                   sizeof(struct proxy_connect_resp), &w->op));
    }
    uint64_t deadline = eccl_deadline_ms(comm->bs.timeout_ms);
    struct proxy_liveness alive = {0, 0};
    for (int i = 0; i < n; i++) {
        struct conn_want *w = &wants[i];
        for (int spin = 0; w->op; spin++) {
            ECCL_TRY(proxy_check_alive(comm->tp.proxy, &alive));
            struct proxy_connect_resp resp;
            ecclResult_t r = proxy_op_poll(comm->tp.proxy, w->op, &resp, sizeof(resp));
            if (r == ecclSuccess) {
                w->op = 0;
                break;
            }
            if (r != ecclInProgress) {
                w->op = 0;
                return r;
            }
            if (atomic_load(&comm->abort))
                return ecclRemoteError;
            if (eccl_deadline_passed(deadline)) {
                WARN("the network connection %s rank %d did not complete within %lld ms",
                     w->send ? "to" : "from", w->peer, (long long)comm->bs.timeout_ms);
                return ecclRemoteError;
            }
            if (spin < 100)
                sched_yield();
            else
                usleep(200);
        }
    }
    for (int i = 0; i < n; i++) {
        const struct conn_want *w = &wants[i];
        int c = (int)((w->tag >> 8) & 0xff);
        const char *via = w->transport != PROXY_TRANSPORT_SHM ? "NET/Socket"
                          : w->dev_mode == KERN_DEV_MEM_CUMEM ? "P2P/CUMEM"
                          : w->dev_mode == KERN_DEV_MEM_IPC   ? "P2P/IPC"
                                                              : "SHM";
        INFO(w->transport == PROXY_TRANSPORT_SHM ? ECCL_LOG_SHM : ECCL_LOG_NET,
             "Channel %02d : %d %s %d via %s (connector 0x%x)", c, comm->rank,
             w->send ? "->" : "<-", w->peer, via, (unsigned)w->tag);
    }
    return ecclSuccess;
}

/* The ranks use the smallest slot size any of them asks for (by ECCL_SHM_SLOT_BYTES, or by being a
 * CUDA communicator): ring and tree steps are cut to it, and a step must be the same size on
 * both sides of a connector. */
static ecclResult_t slot_bytes_agree(struct ecclComm *comm)
{
    uint32_t *v = eccl_calloc((size_t)comm->nranks, sizeof(*v), "slot-votes");
    if (!v)
        return ecclSystemError;
    v[comm->rank] = comm->tp.slot_bytes;
    ecclResult_t res = core_bootstrap_allgather(&comm->bs, v, sizeof(*v));
    if (res == ecclSuccess) {
        uint32_t least = comm->tp.slot_bytes;
        /* Another rank's vote counts only if it is a size this rank would accept itself. */
        for (int r = 0; r < comm->nranks; r++)
            if (v[r] >= 4096 && v[r] % 64 == 0 && v[r] < least)
                least = v[r];
        if (least != comm->tp.slot_bytes)
            INFO(ECCL_LOG_INIT,
                 "rank %d: slots of %u bytes, the smallest another rank asks for "
                 "(this one: %u)",
                 comm->rank, least, comm->tp.slot_bytes);
        comm->tp.slot_bytes = least;
    }
    eccl_free(v);
    return res;
}

bool core_cumem_enabled(void)
{
    return eccl_param_cumem_enable() != 0;
}

ecclResult_t core_transport_init(struct ecclComm *comm)
{
    ecclResult_t res = ecclSuccess;
    struct core_transport *tp = &comm->tp;
    tp->uds_fd = -1;
    int64_t slots = eccl_param_shm_slots();
    int64_t slot_bytes = eccl_param_shm_slot_bytes();
    int64_t p2p_bytes = eccl_param_p2p_slot_bytes();
    if (slot_bytes == 0) /* automatic */
        slot_bytes = comm->dev ? CORE_CUDA_SLOT_BYTES : CORE_HOST_SLOT_BYTES;
    if (p2p_bytes == 0)
        p2p_bytes = comm->dev ? CORE_CUDA_P2P_SLOT_BYTES : CORE_HOST_P2P_SLOT_BYTES;
    if (slots < 2 || slots > ECCL_CONN_MAX_SLOTS || slot_bytes < 4096 || slot_bytes > (64 << 20) ||
        p2p_bytes < 4096 || p2p_bytes > (64 << 20)) {
        WARN("ECCL_SHM_SLOTS must be 2..%d and ECCL_SHM_SLOT_BYTES, ECCL_P2P_SLOT_BYTES "
             "4096..64M (got %lld, %lld, %lld)",
             ECCL_CONN_MAX_SLOTS, (long long)slots, (long long)slot_bytes, (long long)p2p_bytes);
        return ecclInvalidArgument;
    }
    tp->nslots = (uint32_t)slots;
    tp->slot_bytes = (uint32_t)slot_bytes & ~63u;
    tp->p2p_slot_bytes = (uint32_t)p2p_bytes & ~63u;
    tp->shm_disabled = eccl_param_shm_disable() != 0;
    uint32_t mask = 0;
    ECCL_TRY(core_proto_parse(eccl_param_proto(), &mask));
    int64_t ll_bytes = eccl_param_ll_slot_bytes();
    if (ll_bytes != 0 && (ll_bytes < 4096 || ll_bytes > (1 << 20) || ll_bytes % 64 != 0)) {
        WARN("ECCL_LL_SLOT_BYTES must be 0 or a multiple of 64 in 4096..1M (got %lld)",
             (long long)ll_bytes);
        return ecclInvalidArgument;
    }
    tp->ll_ok = false;
    tp->ll128_ok = false;
    tp->simple_ok = true;
    tp->ll_threshold = 0;
    tp->ll128_threshold = 0;
    tp->min_nchannels = 1;
    tp->ll_bytes = (mask & PROTO_BIT_LL) ? (uint32_t)ll_bytes : 0;
    /* LL128 lines hold a Simple slot's worth, so both split an operation alike (CUDA only). */
    tp->ll128_bytes =
        comm->dev && (mask & PROTO_BIT_LL128) ? core_ll128_slot_bytes(tp->slot_bytes) : 0;
    const char *proto = eccl_param_proto();
    tp->ll128_forced = proto && proto[0] && proto[0] != '^' && (mask & PROTO_BIT_LL128);
    tp->dev_mode = comm->dev && eccl_param_p2p_disable() == 0
                       ? (int)kern_dev_mem_pick(comm->cuda_dev, core_cumem_enabled())
                       : KERN_DEV_MEM_NONE;
    if (comm->dev)
        INFO(ECCL_LOG_INIT, "rank %d: GPU connectors between local ranks: %s", comm->rank,
             tp->dev_mode == KERN_DEV_MEM_CUMEM ? "P2P, cuMem file descriptors"
             : tp->dev_mode == KERN_DEV_MEM_IPC ? "P2P, legacy CUDA IPC"
                                                : "host-pinned shared memory (ECCL_P2P_DISABLE)");

    snprintf(tp->uds_name, sizeof(tp->uds_name), "eccl-%016llx-%d",
             (unsigned long long)comm->bs.magic, comm->rank);
    ECCL_TRY(eccl_uds_open(tp->uds_name, &tp->uds_fd));
    struct proxy_params pp = {.comm_magic = comm->bs.magic,
                              .rank = comm->rank,
                              .nranks = comm->nranks,
                              .abort = &comm->abort};
    ECCL_TRY(proxy_create(&tp->proxy, &pp));
    /* Every rank's sockets must exist before anyone sends to them: the exchange of slot sizes
     * is also the barrier that waits for them. */
    ECCL_TRY(slot_bytes_agree(comm));
    if (comm->nranks == 1)
        return ecclSuccess;

    int n = comm->nranks, pos = comm->ring_index;
    int prev = comm->ring[(pos + n - 1) % n], next = comm->ring[(pos + 1) % n];
    int parent_pos, child_pos[2];
    core_plan_tree(n, pos, &parent_pos, child_pos);
    int parent = parent_pos >= 0 ? comm->ring[parent_pos] : -1;
    int my_child_index = parent_pos >= 0 ? (pos - (2 * parent_pos + 1)) : 0;
    struct conn_want *wants =
        eccl_calloc((size_t)comm->nchannels * 8, sizeof(*wants), "transport-wants");
    if (!wants)
        return ecclSystemError;
    int k = 0;
    for (int c = 0; c < comm->nchannels; c++) {
        struct kern_chan *kc = &comm->channels[c].kc;
        wants[k++] = (struct conn_want){.peer = prev,
                                        .tag = conn_tag(KIND_RING, c, 0),
                                        .slot_bytes = tp->slot_bytes,
                                        .ll_want = true,
                                        .ll128_want = true,
                                        .out = &kc->ring_recv};
        wants[k++] = (struct conn_want){
            .peer = next, .tag = conn_tag(KIND_RING, c, 0), .send = true, .out = &kc->ring_send};
        for (int i = 0; i < 2; i++) {
            if (child_pos[i] < 0)
                continue;
            int child = comm->ring[child_pos[i]];
            wants[k++] = (struct conn_want){.peer = child,
                                            .tag = conn_tag(KIND_TREE_UP, c, 0),
                                            .slot_bytes = tp->slot_bytes,
                                            .ll_want = true,
                                            .out = &kc->tree_up_recv[i]};
            wants[k++] = (struct conn_want){.peer = child,
                                            .tag = conn_tag(KIND_TREE_DOWN, c, i),
                                            .send = true,
                                            .out = &kc->tree_down_send[i]};
        }
        if (parent >= 0) {
            wants[k++] = (struct conn_want){.peer = parent,
                                            .tag = conn_tag(KIND_TREE_DOWN, c, my_child_index),
                                            .slot_bytes = tp->slot_bytes,
                                            .ll_want = true,
                                            .out = &kc->tree_down_recv};
            wants[k++] = (struct conn_want){.peer = parent,
                                            .tag = conn_tag(KIND_TREE_UP, c, 0),
                                            .send = true,
                                            .out = &kc->tree_up_send};
        }
    }
    res = connect_wants(comm, wants, k);
    if (res == ecclSuccess)
        res = proto_agree(comm, wants, k, mask);
    if (res == ecclSuccess && comm->dev)
        kern_dev_set_ll(comm->dev, tp->ll_ok ? tp->ll_bytes : 0, tp->ll_bytes,
                        tp->ll128_ok ? tp->ll128_bytes : 0);
    eccl_free(wants);
    if (res == ecclSuccess)
        INFO(ECCL_LOG_INIT, "rank %d: %d channels connected (%u slots of %u bytes)", comm->rank,
             comm->nchannels, tp->nslots, tp->slot_bytes);
    return res;
}

ecclResult_t core_transport_p2p_connect(struct ecclComm *comm, const struct eccl_queue *tasks)
{
    int n = 0;
    for (struct eccl_qnode *q = tasks->head; q; q = q->next)
        n++;
    if (n == 0)
        return ecclSuccess;
    struct conn_want *wants = eccl_calloc((size_t)n, sizeof(*wants), "transport-wants");
    if (!wants)
        return ecclSystemError;
    int k = 0;
    for (struct eccl_qnode *q = tasks->head; q; q = q->next) {
        struct core_task *t = eccl_container_of(q, struct core_task, node);
        if (t->root == comm->rank || t->count == 0)
            continue;
        struct kern_chan *kc = &comm->channels[core_p2p_channel(comm, t->root)].kc;
        struct eccl_conn_ctrl **slot = NULL;
        bool send = t->func == ECCL_FUNC_SEND;
        if (send && !kc->p2p_send[t->root])
            slot = &kc->p2p_send[t->root];
        else if (!send && !kc->p2p_recv[t->root])
            slot = &kc->p2p_recv[t->root];
        if (!slot)
            continue;
        bool dup = false;
        for (int i = 0; i < k; i++)
            dup |= wants[i].out == slot;
        if (dup)
            continue;
        wants[k++] = (struct conn_want){.peer = t->root,
                                        .tag = conn_tag(KIND_P2P, kc->id, 0),
                                        .send = send,
                                        .slot_bytes = comm->tp.p2p_slot_bytes,
                                        .out = slot};
    }
    ecclResult_t res = connect_wants(comm, wants, k);
    eccl_free(wants);
    return res;
}

void core_transport_fini(struct ecclComm *comm, bool clean)
{
    struct core_transport *tp = &comm->tp;
    /* A clean destroy right after a collective: the last steps may still be on their way to a
     * peer that needs them to finish the same collective. */
    if (clean && tp->proxy && tp->net_ready)
        proxy_flush(tp->proxy, 5000);
    proxy_destroy(tp->proxy);
    tp->proxy = NULL;
    eccl_socket_close(&tp->uds_fd);
}

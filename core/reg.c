/*
 * reg.c - ecclCommRegister and ecclCommDeregister; zero-copy sends between GPU ranks of one host.
 *
 * A registration is a record of [buff, buff + size). On a CUDA communicator, one that lies in an
 * ecclMemAlloc allocation (cuMem memory, exportable as a file descriptor) also gets a key, and a
 * reference on the allocation (core/mem.c). Such a buffer can be read by a local peer directly:
 *
 *   1. The first time this rank sends from it to a peer of this host (a point-to-point connector
 *      with cuMem device slots), it exports the allocation, files the descriptor with its proxy
 *      (PROXY_OP_EXPORT) and announces it in the connector's mailbox (struct eccl_conn_ctrl,
 *      zc_req: key, the proxy's handle, the allocation's size). That send still goes by copies.
 *   2. The receiver reads the mailbox when it next plans a receive from that peer and its kernels
 *      have all finished (mapping memory under a running kernel is not something to rely on):
 *      it fetches the descriptor over the proxy's UDS socket, maps it, puts the mapping into its
 *      executor's table (kern_dev_zc_put) and answers with the table slot (zc_resp).
 *   3. Once the answer is in, a send from the registration that is larger than the connector
 *      holds goes as one step naming the place (ECCL_WORK_FLAG_ZC; kernels/dev_coll.cuh): the
 *      receiver's kernel checks it against its table and copies the whole message from the
 *      sender's memory into its buffer, one copy instead of two; the sender's kernel ends when
 *      the receiver has copied it (the buffer is the receiver's to read until then). Smaller
 *      sends keep the slots, so that a send still completes without its receive running when the
 *      connector can hold it.
 *
 * ecclCommDeregister withdraws the registration from every peer that was told (ECCL_CONN_ZC_DROP,
 * applied like an import: when the receiver's kernels have finished). A peer whose mailbox is
 * full, or that never plans another receive from this rank, keeps its mapping until its
 * communicator is destroyed; so does a descriptor no peer fetched, in this rank's proxy.
 *
 * Nothing here fails a call: whatever cannot be announced, mapped or answered leaves the copies.
 * Bytes from the mailbox are a peer's and are checked: a request with impossible fields is
 * refused, a step naming a mapping the receiver does not have fails the call (KERN_DEV_BAD_ZC).
 * ECCL_LOCAL_REGISTER=0 keeps registrations as records only.
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "core/core_int.h"
#include "kernels/conn.h"
#include "kernels/dev_exec.h"
#include "kernels/dev_mem.h"
#include "kernels/dev_work.h"

ECCL_PARAM_INT(local_register, "ECCL_LOCAL_REGISTER", 1)

#define REG_MAX_ALLOC ((uint64_t)1 << 40) /* a peer's allocation larger than this is refused */

enum reg_state {
    REG_ASKED = 1,   /* announced, no answer yet */
    REG_READY = 2,   /* the peer mapped it at `slot` of its table */
    REG_REFUSED = 3, /* the peer could not, or this rank could not announce it: copies */
};

/* What one peer knows of a registration. */
struct reg_peer {
    int peer;
    int state; /* enum reg_state */
    int slot;
};

struct core_reg {
    struct core_reg *next;
    void *buff;
    size_t size;
    /* Zero copy (key != 0): the memory a peer maps, either the ecclMemAlloc allocation that
     * holds the buffer (a reference on it: um) or a view of the user's cudaMalloc allocation
     * (view, with the allocation's unique id: memory freed and allocated again at the same
     * address is not the registration any more). */
    struct user_mem *um;
    struct kern_dev_mem *view;
    struct kern_dev_mem *mem; /* um's or view */
    uint64_t buffer_id;
    bool stale_warned;
    uintptr_t base;
    size_t alloc_size;
    uint32_t key;
    struct reg_peer *peers;
    int npeers;
    int cap_peers;
};

static struct reg_peer *reg_peer_of(struct core_reg *r, int peer)
{
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].peer == peer)
            return &r->peers[i];
    return NULL;
}

static struct reg_peer *reg_peer_add(struct core_reg *r, int peer)
{
    if (r->npeers == r->cap_peers) {
        int cap = r->cap_peers ? r->cap_peers * 2 : 4;
        struct reg_peer *n = eccl_calloc((size_t)cap, sizeof(*n), "reg-peers");
        if (!n)
            return NULL;
        if (r->npeers)
            memcpy(n, r->peers, (size_t)r->npeers * sizeof(*n));
        eccl_free(r->peers);
        r->peers = n;
        r->cap_peers = cap;
    }
    struct reg_peer *p = &r->peers[r->npeers++];
    p->peer = peer;
    p->state = REG_REFUSED;
    p->slot = -1;
    return p;
}

static void reg_free(struct core_reg *r)
{
    core_mem_unref(r->um);
    kern_dev_mem_free(r->view);
    eccl_free(r->peers);
    eccl_free(r);
}

/* The connectors of the channel that carries point-to-point work with `peer`. */
static struct kern_chan *p2p_chan(struct ecclComm *comm, int peer)
{
    return &comm->channels[core_p2p_channel(comm, peer)].kc;
}

static bool zc_enabled(const struct ecclComm *comm)
{
    return comm->dev && eccl_param_local_register() != 0;
}

bool core_reg_box_post(struct eccl_conn_ctrl *c, const struct eccl_conn_zc_req *q)
{
    uint32_t tail = atomic_load_explicit(&c->zc_req_tail, memory_order_relaxed);
    uint32_t answered = atomic_load_explicit(&c->zc_resp_head, memory_order_relaxed);
    if ((uint32_t)(tail - answered) >= ECCL_CONN_ZC_RING)
        return false;
    c->zc_req[tail % ECCL_CONN_ZC_RING] = *q;
    atomic_store_explicit(&c->zc_req_tail, tail + 1, memory_order_release);
    return true;
}

ECCL_API ecclResult_t ecclCommRegister(const ecclComm_t comm, void *buff, size_t size,
                                       void **handle)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommRegister"));
    ECCL_ARG_CHECK(handle != NULL, "ecclCommRegister: handle is NULL");
    ECCL_ARG_CHECK(buff != NULL || size == 0, "ecclCommRegister: buff is NULL");
    struct core_reg *r = eccl_calloc(1, sizeof(*r), "comm-reg");
    if (!r)
        return ecclSystemError;
    r->buff = buff;
    r->size = size;
    if (zc_enabled(comm) && buff && size) {
        r->um = core_mem_ref(buff, size);
        r->mem = r->um ? core_mem_dev(r->um) : NULL;
        /* PyTorch's allocator may register memory while a graph is being captured. */
        int mode = kern_dev_capture_relax();
        if (!r->mem &&
            kern_dev_mem_wrap(comm->cuda_dev, buff, size, &r->view, &r->buffer_id) == ecclSuccess)
            r->mem = r->view;
        if (r->mem && kern_dev_mem_device(r->mem) == comm->cuda_dev) {
            r->base = (uintptr_t)kern_dev_mem_ptr(r->mem);
            r->alloc_size = kern_dev_mem_size(r->mem);
        } else {
            core_mem_unref(r->um);
            kern_dev_mem_free(r->view);
            r->um = NULL;
            r->view = NULL;
            r->mem = NULL;
        }
        kern_dev_capture_restore(mode);
    }
    pthread_mutex_lock(&comm->reg_lock);
    if (r->mem) {
        r->key = ++comm->reg_next_key;
        if (r->key == 0) /* 2^32 registrations: no more keys, records only */
            r->key = comm->reg_next_key = UINT32_MAX;
        atomic_fetch_add(&comm->reg_zc, 1);
    }
    r->next = comm->regs;
    comm->regs = r;
    pthread_mutex_unlock(&comm->reg_lock);
    if (r->mem)
        INFO(ECCL_LOG_REG,
             "rank %d: registered %zu bytes at %p as %u: %s memory shared as %s, which local GPU "
             "peers may read without a copy",
             comm->rank, size, buff, r->key, r->um ? "ecclMemAlloc" : "cudaMalloc",
             kern_dev_mem_mode_of(r->mem) == KERN_DEV_MEM_CUMEM ? "a cuMem file descriptor"
                                                                : "a CUDA IPC handle");
    else
        INFO(ECCL_LOG_REG, "rank %d: registered %zu bytes at %p (a record: %s)", comm->rank, size,
             buff,
             !comm->dev                         ? "a host communicator"
             : eccl_param_local_register() == 0 ? "ECCL_LOCAL_REGISTER=0"
                                                : "not memory of this GPU that can be shared");
    *handle = r;
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclCommDeregister(const ecclComm_t comm, void *handle)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommDeregister"));
    pthread_mutex_lock(&comm->reg_lock);
    struct core_reg **pp = &comm->regs;
    while (*pp && *pp != handle)
        pp = &(*pp)->next;
    struct core_reg *r = *pp;
    if (r)
        *pp = r->next;
    if (r && r->key) {
        atomic_fetch_sub(&comm->reg_zc, 1);
        for (int i = 0; i < r->npeers; i++) {
            struct reg_peer *p = &r->peers[i];
            struct eccl_conn_ctrl *c = p2p_chan(comm, p->peer)->p2p_send[p->peer];
            if (p->state == REG_REFUSED || !c)
                continue;
            struct eccl_conn_zc_req q = {.op = ECCL_CONN_ZC_DROP, .key = r->key};
            if (!core_reg_box_post(c, &q))
                INFO(ECCL_LOG_REG,
                     "rank %d: rank %d keeps its mapping of registration %u until the "
                     "communicator is destroyed (its mailbox is full)",
                     comm->rank, p->peer, r->key);
        }
    }
    pthread_mutex_unlock(&comm->reg_lock);
    if (!r) {
        WARN("ecclCommDeregister: handle %p is not a registration of this communicator", handle);
        return ecclInvalidArgument;
    }
    reg_free(r);
    return ecclSuccess;
}

void core_reg_fini(struct ecclComm *comm)
{
    while (comm->regs) {
        struct core_reg *r = comm->regs;
        comm->regs = r->next;
        reg_free(r);
    }
}

/* ---- the receiver's side ---------------------------------------------------------------------- */

/* Maps a peer's announced registration; its table slot, -1 when refused. */
static int import_one(void *arg, int peer, const struct eccl_conn_zc_req *q)
{
    struct ecclComm *comm = arg;
    int fd = -1;
    struct kern_dev_mem *mem = NULL;
    ecclResult_t r = ecclSuccess;
    if (q->mode == KERN_DEV_MEM_CUMEM)
        r = proxy_client_get_fd(comm->tp.uds_fd, comm->bs.magic, comm->rank, peer, q->handle, &fd,
                                eccl_deadline_ms(comm->bs.timeout_ms), &comm->abort);
    if (r == ecclSuccess)
        r = kern_dev_mem_import(comm->cuda_dev, (enum kern_dev_mem_mode)q->mode, fd, q->ipc,
                                (size_t)q->size, &mem);
    int slot = -1;
    if (r == ecclSuccess)
        r = kern_dev_zc_put(comm->dev, peer, q->key, mem, &slot);
    if (r != ecclSuccess || slot < 0) {
        INFO(ECCL_LOG_REG,
             "rank %d: rank %d's registration %u is not mapped here (%s); copies serve", comm->rank,
             peer, q->key, r != ecclSuccess ? eccl_log_last_error() : "the table is full");
        eccl_log_clear_last_error();
        return -1;
    }
    atomic_fetch_add(&comm->zc_imports, 1);
    INFO(ECCL_LOG_REG, "rank %d: mapped rank %d's registration %u (%llu bytes) at slot %d",
         comm->rank, peer, q->key, (unsigned long long)q->size, slot);
    return slot;
}

static void drop_one(void *arg, int peer, uint32_t key)
{
    struct ecclComm *comm = arg;
    if (kern_dev_zc_drop(comm->dev, peer, key))
        INFO(ECCL_LOG_REG, "rank %d: unmapped rank %d's registration %u", comm->rank, peer, key);
}

int core_reg_box_serve(struct eccl_conn_ctrl *c, int rank, int peer,
                       int (*import)(void *arg, int peer, const struct eccl_conn_zc_req *q),
                       void (*drop)(void *arg, int peer, uint32_t key), void *arg)
{
    uint32_t head = atomic_load_explicit(&c->zc_req_head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&c->zc_req_tail, memory_order_acquire);
    if ((uint32_t)(tail - head) > ECCL_CONN_ZC_RING) {
        WARN("rank %d: rank %d's registration mailbox shows %u requests of at most %d; ignored",
             rank, peer, tail - head, ECCL_CONN_ZC_RING);
        atomic_store_explicit(&c->zc_req_head, tail, memory_order_release);
        return 0;
    }
    int n = 0;
    for (; head != tail; head++, n++) {
        struct eccl_conn_zc_req q = c->zc_req[head % ECCL_CONN_ZC_RING];
        struct eccl_conn_zc_resp a = {.key = q.key, .slot = -1};
        if (q.op == ECCL_CONN_ZC_IMPORT) {
            if (q.key == 0 || q.size == 0 || q.size > REG_MAX_ALLOC ||
                (q.mode != KERN_DEV_MEM_CUMEM && q.mode != KERN_DEV_MEM_IPC) ||
                (q.mode == KERN_DEV_MEM_CUMEM && q.handle == 0))
                WARN("rank %d: rank %d announced a registration with impossible fields (key %u, "
                     "%llu bytes); refused",
                     rank, peer, q.key, (unsigned long long)q.size);
            else
                a.slot = import(arg, peer, &q);
        } else if (q.op == ECCL_CONN_ZC_DROP) {
            drop(arg, peer, q.key);
        } else {
            WARN("rank %d: rank %d's registration mailbox holds request %u, which is none", rank,
                 peer, q.op);
        }
        uint32_t rt = atomic_load_explicit(&c->zc_resp_tail, memory_order_relaxed);
        c->zc_resp[rt % ECCL_CONN_ZC_RING] = a;
        atomic_store_explicit(&c->zc_resp_tail, rt + 1, memory_order_release);
        atomic_store_explicit(&c->zc_req_head, head + 1, memory_order_release);
    }
    return n;
}

/* Serves the requests in the mailbox of the connector from `peer` when the kernels are idle
 * (else at a later call). */
static void box_serve(struct ecclComm *comm, int peer, struct eccl_conn_ctrl *c)
{
    if (atomic_load_explicit(&c->zc_req_head, memory_order_relaxed) ==
        atomic_load_explicit(&c->zc_req_tail, memory_order_acquire))
        return;
    if (!kern_dev_idle(comm->dev))
        return;
    core_reg_box_serve(c, comm->rank, peer, import_one, drop_one, comm);
}

/* ---- the sender's side ------------------------------------------------------------------------ */

static struct core_reg *reg_of_key(struct ecclComm *comm, uint32_t key)
{
    for (struct core_reg *r = comm->regs; r; r = r->next)
        if (r->key == key)
            return r;
    return NULL;
}

/* The registration with a key that holds [p, p + bytes), NULL when none does. Under reg_lock. */
static struct core_reg *reg_holding(struct ecclComm *comm, uintptr_t p, size_t bytes)
{
    for (struct core_reg *r = comm->regs; r; r = r->next) {
        uintptr_t b = (uintptr_t)r->buff;
        if (r->key && p >= b && p - b <= r->size && bytes <= r->size - (p - b))
            return r;
    }
    return NULL;
}

/* Reads the answers in the mailbox of the connector to `peer`. */
static void box_answers(struct ecclComm *comm, int peer, struct eccl_conn_ctrl *c)
{
    uint32_t head = atomic_load_explicit(&c->zc_resp_head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&c->zc_resp_tail, memory_order_acquire);
    if ((uint32_t)(tail - head) > ECCL_CONN_ZC_RING) {
        WARN("rank %d: rank %d's registration answers show %u of at most %d; ignored", comm->rank,
             peer, tail - head, ECCL_CONN_ZC_RING);
        atomic_store_explicit(&c->zc_resp_head, tail, memory_order_relaxed);
        return;
    }
    for (; head != tail; head++) {
        struct eccl_conn_zc_resp a = c->zc_resp[head % ECCL_CONN_ZC_RING];
        struct core_reg *r = reg_of_key(comm, a.key);
        struct reg_peer *p = r ? reg_peer_of(r, peer) : NULL;
        if (!p || p->state != REG_ASKED)
            continue; /* a drop's answer, or a registration gone since */
        if (a.slot >= 0 && a.slot < KERN_DEV_ZC_MAX) {
            p->state = REG_READY;
            p->slot = a.slot;
            INFO(ECCL_LOG_REG, "rank %d: rank %d reads registration %u directly (its slot %d)",
                 comm->rank, peer, r->key, a.slot);
        } else {
            p->state = REG_REFUSED;
        }
    }
    atomic_store_explicit(&c->zc_resp_head, head, memory_order_release);
}

/* Offers registration r to `peer` through connector c. */
static void announce(struct ecclComm *comm, struct core_reg *r, int peer, struct eccl_conn_ctrl *c)
{
    uint32_t tail = atomic_load_explicit(&c->zc_req_tail, memory_order_relaxed);
    if ((uint32_t)(tail - atomic_load_explicit(&c->zc_resp_head, memory_order_relaxed)) >=
        ECCL_CONN_ZC_RING)
        return; /* at a later call */
    struct reg_peer *p = reg_peer_add(r, peer);
    if (!p)
        return;
    int fd = -1;
    struct eccl_conn_zc_req q = {.op = ECCL_CONN_ZC_IMPORT,
                                 .key = r->key,
                                 .mode = (uint32_t)kern_dev_mem_mode_of(r->mem),
                                 .size = r->alloc_size};
    _Static_assert(sizeof(q.ipc) == KERN_DEV_IPC_BYTES, "IPC handle in the mailbox");
    ecclResult_t res = kern_dev_mem_export(r->mem, &fd, q.ipc);
    if (res == ecclSuccess && fd >= 0) {
        struct proxy_export_req req = {.fd = fd, .peer = peer};
        struct proxy_export_resp resp = {0};
        /* The proxy takes the descriptor, also when the operation fails. */
        res = proxy_op_call(comm->tp.proxy, PROXY_OP_EXPORT, -1, &req, sizeof(req), &resp,
                            sizeof(resp), eccl_deadline_ms(comm->bs.timeout_ms), &comm->abort);
        q.handle = resp.handle;
    }
    if (res != ecclSuccess || !core_reg_box_post(c, &q)) {
        INFO(ECCL_LOG_REG, "rank %d: registration %u is not offered to rank %d (%s); copies serve",
             comm->rank, r->key, peer,
             res != ecclSuccess ? eccl_log_last_error() : "its mailbox is full");
        eccl_log_clear_last_error();
        return; /* REG_REFUSED */
    }
    p->state = REG_ASKED;
    INFO(ECCL_LOG_REG, "rank %d: offered registration %u (%zu bytes) to rank %d", comm->rank,
         r->key, r->alloc_size, peer);
}

/* Whether a send of `bytes` on connector c goes without a copy when it can: when the connector
 * cannot hold it anyway (a smaller send completes without its receive, and keeps doing so). */
static bool zc_worth(const struct eccl_conn_ctrl *c, size_t bytes)
{
    return bytes > (size_t)c->nslots * c->slot_bytes;
}

void core_reg_p2p_prepare(struct ecclComm *comm, const struct eccl_queue *tasks)
{
    if (!zc_enabled(comm))
        return;
    /* Exports, imports and the executor's table are not stream work: a capture under way (the
     * caller's, or another thread's in global mode) must not see them. */
    int mode = kern_dev_capture_relax();
    pthread_mutex_lock(&comm->reg_lock);
    for (struct eccl_qnode *q = tasks->head; q; q = q->next) {
        struct core_task *t = eccl_container_of(q, struct core_task, node);
        if (t->root == comm->rank || t->count == 0)
            continue;
        struct kern_chan *kc = p2p_chan(comm, t->root);
        if (t->func == ECCL_FUNC_RECV) {
            if (kc->p2p_recv && kc->p2p_recv[t->root])
                box_serve(comm, t->root, kc->p2p_recv[t->root]);
            continue;
        }
        struct eccl_conn_ctrl *c = kc->p2p_send ? kc->p2p_send[t->root] : NULL;
        if (!c || atomic_load(&comm->reg_zc) == 0)
            continue;
        box_answers(comm, t->root, c);
        size_t bytes = t->count * eccl_dtype_size(t->dtype);
        if (!zc_worth(c, bytes))
            continue;
        struct core_reg *r = reg_holding(comm, (uintptr_t)t->sendbuff, bytes);
        if (r && !reg_peer_of(r, t->root) && kern_dev_conn_devmem(comm->dev, c))
            announce(comm, r, t->root, c);
    }
    pthread_mutex_unlock(&comm->reg_lock);
    kern_dev_capture_restore(mode);
}

void core_reg_p2p_work(struct ecclComm *comm, struct eccl_work *w, size_t bytes)
{
    if (w->func != ECCL_FUNC_SEND || w->root == comm->rank || atomic_load(&comm->reg_zc) == 0 ||
        !zc_enabled(comm))
        return;
    struct kern_chan *kc = p2p_chan(comm, w->root);
    struct eccl_conn_ctrl *c = kc->p2p_send ? kc->p2p_send[w->root] : NULL;
    if (!c || !zc_worth(c, bytes))
        return;
    pthread_mutex_lock(&comm->reg_lock);
    struct core_reg *r = reg_holding(comm, (uintptr_t)w->sendbuff, bytes);
    struct reg_peer *p = r ? reg_peer_of(r, w->root) : NULL;
    uint64_t id = 0;
    if (p && p->state == REG_READY && r->view) {
        int mode = kern_dev_capture_relax();
        id = kern_dev_mem_buffer_id((const void *)(uintptr_t)w->sendbuff);
        kern_dev_capture_restore(mode);
    }
    if (p && p->state == REG_READY && r->view && id != r->buffer_id) {
        /* Freed and allocated again under the registration: its peers' mappings are of the old
         * memory. */
        if (!r->stale_warned)
            WARN("rank %d: registration %u (%p) covers memory that was freed and allocated again; "
                 "deregister before cudaFree. Its sends go by copies",
                 comm->rank, r->key, r->buff);
        r->stale_warned = true;
        p = NULL;
    }
    if (p && p->state == REG_READY) {
        w->flags |= ECCL_WORK_FLAG_ZC;
        w->scalar = ((uint64_t)(uint32_t)p->slot << 32) | r->key;
        w->recvbuff = (uint64_t)(w->sendbuff - r->base);
        atomic_fetch_add(&comm->zc_sends, 1);
    }
    pthread_mutex_unlock(&comm->reg_lock);
}

void core_reg_stats(const struct ecclComm *comm, uint64_t *zc_sends, uint64_t *zc_imports,
                    int *mapped)
{
    *zc_sends = atomic_load(&comm->zc_sends);
    *zc_imports = atomic_load(&comm->zc_imports);
    *mapped = comm->dev ? kern_dev_zc_count(comm->dev) : 0;
}

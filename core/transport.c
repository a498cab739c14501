/*
 * transport.c - connectors between ranks of one host: shared-memory segments passed over a
 * unix-domain socket.
 *
 * The receiving side of a connector owns its memory: a memfd segment sized for the control block
 * and the slots. It sends the descriptor to the sending rank over a datagram unix socket in the
 * abstract namespace (SCM_RIGHTS) with a header naming the connector (a tag); the sender maps it.
 * Ranks that are threads of one process use the same path: each rank then holds its own mapping
 * of ordinary (anonymous shared) memory, so one rank's destroy never pulls memory from under
 * another. Ranks on different hosts need the network transport, which this build does not have
 * yet: init says so.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "core/core_int.h"

ECCL_PARAM_INT(shm_slots, "ECCL_SHM_SLOTS", 8)
ECCL_PARAM_INT(shm_slot_bytes, "ECCL_SHM_SLOT_BYTES", 128 * 1024)
ECCL_PARAM_INT(p2p_slot_bytes, "ECCL_P2P_SLOT_BYTES", 128 * 1024)

#define UDS_MSG_MAGIC 0x6563756473ULL /* "ecuds" */

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

struct core_seg {
    struct core_seg *next;
    void *base;
    size_t size;
};

struct uds_hdr {
    uint64_t magic;
    uint64_t comm_magic;
    int32_t from;
    uint32_t tag;
    uint64_t size;
    uint32_t nslots;
    uint32_t slot_bytes;
};

struct core_uds_msg {
    struct core_uds_msg *next;
    struct uds_hdr h;
    int fd;
};

static ecclResult_t seg_map(struct core_transport *tp, int fd, size_t size, void **out)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        WARN("mmap of a %zu-byte shared segment failed: %s", size, strerror(errno));
        return ecclSystemError;
    }
    struct core_seg *s = eccl_calloc(1, sizeof(*s), "shm-seg");
    if (!s) {
        munmap(p, size);
        return ecclSystemError;
    }
    s->base = p;
    s->size = size;
    s->next = tp->segs;
    tp->segs = s;
    *out = p;
    return ecclSuccess;
}

/* Creates a receiving connector; *fd_out keeps the memfd for sending to the peer. */
static ecclResult_t conn_create(struct core_transport *tp, uint32_t slot_bytes,
                                struct eccl_conn_ctrl **out, int *fd_out)
{
    ecclResult_t res = ecclSuccess;
    size_t size = eccl_conn_bytes(tp->nslots, slot_bytes);
    if (ECCL_FAULT("shm_create")) {
        WARN("memfd_create failed (fault injection)");
        return ecclSystemError;
    }
    int fd = memfd_create("eccl-conn", MFD_CLOEXEC);
    if (fd < 0) {
        WARN("memfd_create failed: %s", strerror(errno));
        return ecclSystemError;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        WARN("ftruncate of a %zu-byte shared segment failed: %s", size, strerror(errno));
        res = ecclSystemError;
        goto err_close;
    }
    void *p = NULL;
    ECCL_TRY_GOTO(seg_map(tp, fd, size, &p), res, err_close);
    struct eccl_conn_ctrl *c = p;
    c->magic = ECCL_CONN_MAGIC;
    c->nslots = tp->nslots;
    c->slot_bytes = slot_bytes;
    *out = c;
    *fd_out = fd;
    return ecclSuccess;
err_close:
    close(fd);
    return res;
}

static void peer_uds_name(const struct ecclComm *comm, int peer, char *buf, size_t len)
{
    snprintf(buf, len, "eccl-%016llx-%d", (unsigned long long)comm->bs.magic, peer);
}

/* Receives one datagram into the stash, checked: malformed ones are dropped with a WARN (and
 * their descriptor closed). deadline_ns 0: do not wait (ecclInProgress when nothing is there). */
static ecclResult_t recv_one(struct ecclComm *comm, uint64_t deadline_ns,
                             const _Atomic uint32_t *abort)
{
    struct uds_hdr h;
    size_t len = sizeof(h);
    int fd = -1;
    ECCL_TRY(eccl_uds_recv(comm->tp.uds_fd, &h, &len, &fd, deadline_ns, abort));
    if (len != sizeof(h) || h.magic != UDS_MSG_MAGIC || h.comm_magic != comm->bs.magic ||
        h.from < 0 || h.from >= comm->nranks || fd < 0) {
        WARN("dropped a malformed connector message on @%s (%zu bytes, fd %d)", comm->tp.uds_name,
             len, fd);
        if (fd >= 0)
            close(fd);
        return ecclSuccess;
    }
    struct core_uds_msg *m = eccl_calloc(1, sizeof(*m), "uds-msg");
    if (!m) {
        close(fd);
        return ecclSystemError;
    }
    m->h = h;
    m->fd = fd;
    struct core_uds_msg **pp = &comm->tp.stash;
    while (*pp)
        pp = &(*pp)->next;
    *pp = m;
    return ecclSuccess;
}

/* Moves every datagram waiting on our socket to the stash (never blocks). */
static ecclResult_t drain_uds(struct ecclComm *comm)
{
    for (;;) {
        ecclResult_t r = recv_one(comm, 0, NULL);
        if (r == ecclInProgress)
            return ecclSuccess; /* nothing waiting */
        ECCL_TRY(r);
    }
}

static ecclResult_t conn_send_desc(struct ecclComm *comm, int peer, uint32_t tag,
                                   struct eccl_conn_ctrl *c, int fd)
{
    struct uds_hdr h = {.magic = UDS_MSG_MAGIC,
                        .comm_magic = comm->bs.magic,
                        .from = comm->rank,
                        .tag = tag,
                        .size = eccl_conn_bytes(c->nslots, c->slot_bytes),
                        .nslots = c->nslots,
                        .slot_bytes = c->slot_bytes};
    char name[96];
    peer_uds_name(comm, peer, name, sizeof(name));
    uint64_t deadline = eccl_deadline_ms(comm->bs.timeout_ms);
    for (;;) {
        /* Short attempts, draining our own queue in between, so that two ranks sending to each
         * other with full queues cannot block each other. */
        ecclResult_t r = eccl_uds_send(comm->tp.uds_fd, name, &h, sizeof(h), fd,
                                       eccl_deadline_ms(20), &comm->abort);
        if (r == ecclSuccess)
            return ecclSuccess;
        if (r != ecclInternalError && r != ecclRemoteError)
            return r;
        if (atomic_load(&comm->abort))
            return ecclRemoteError;
        if (eccl_deadline_passed(deadline)) {
            WARN("could not pass a connector to rank %d within %lld ms", peer,
                 (long long)comm->bs.timeout_ms);
            return ecclRemoteError;
        }
        eccl_log_clear_last_error();
        ECCL_TRY(drain_uds(comm));
    }
}

static ecclResult_t conn_recv_desc(struct ecclComm *comm, int peer, uint32_t tag,
                                   struct eccl_conn_ctrl **out)
{
    uint64_t deadline = eccl_deadline_ms(comm->bs.timeout_ms);
    for (;;) {
        for (struct core_uds_msg **pp = &comm->tp.stash; *pp; pp = &(*pp)->next) {
            struct core_uds_msg *m = *pp;
            if (m->h.from != peer || m->h.tag != tag)
                continue;
            *pp = m->next;
            ecclResult_t res = ecclSuccess;
            void *p = NULL;
            if (m->h.nslots == 0 || m->h.nslots > ECCL_CONN_MAX_SLOTS || m->h.slot_bytes == 0 ||
                m->h.slot_bytes > (1u << 30) ||
                m->h.size != eccl_conn_bytes(m->h.nslots, m->h.slot_bytes)) {
                WARN("rank %d sent a connector with bad geometry (%u slots of %u bytes)", peer,
                     m->h.nslots, m->h.slot_bytes);
                res = ecclRemoteError;
            } else {
                res = seg_map(&comm->tp, m->fd, m->h.size, &p);
            }
            struct uds_hdr h = m->h;
            close(m->fd);
            eccl_free(m);
            ECCL_TRY(res);
            struct eccl_conn_ctrl *c = p;
            if (c->magic != ECCL_CONN_MAGIC || c->nslots != h.nslots ||
                c->slot_bytes != h.slot_bytes) {
                WARN("connector from rank %d does not match its header", peer);
                return ecclRemoteError;
            }
            *out = c;
            return ecclSuccess;
        }
        ecclResult_t r = recv_one(comm, deadline, &comm->abort);
        if (r == ecclInternalError) {
            WARN("rank %d did not pass its connector (tag 0x%x) within %lld ms", peer, tag,
                 (long long)comm->bs.timeout_ms);
            return ecclRemoteError;
        }
        ECCL_TRY(r);
    }
}

/* Creates a receiving connector and passes it to `peer` under `tag`. */
static ecclResult_t conn_offer(struct ecclComm *comm, int peer, uint32_t tag, uint32_t slot_bytes,
                               struct eccl_conn_ctrl **out)
{
    int fd = -1;
    ECCL_TRY(conn_create(&comm->tp, slot_bytes, out, &fd));
    ecclResult_t res = conn_send_desc(comm, peer, tag, *out, fd);
    close(fd);
    return res;
}

static bool same_host(const struct ecclComm *comm, int peer)
{
    return comm->peers[peer].host_hash == comm->peers[comm->rank].host_hash;
}

ecclResult_t core_transport_init(struct ecclComm *comm)
{
    struct core_transport *tp = &comm->tp;
    tp->uds_fd = -1;
    int64_t slots = eccl_param_shm_slots();
    int64_t slot_bytes = eccl_param_shm_slot_bytes();
    int64_t p2p_bytes = eccl_param_p2p_slot_bytes();
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

    for (int i = 0; i < comm->nranks; i++) {
        if (!same_host(comm, i)) {
            WARN("rank %d is on another host: the network transport is not part of this build "
                 "yet (only ranks of one host can form a communicator)",
                 i);
            return ecclInvalidUsage;
        }
    }
    peer_uds_name(comm, comm->rank, tp->uds_name, sizeof(tp->uds_name));
    ECCL_TRY(eccl_uds_open(tp->uds_name, &tp->uds_fd));
    /* Every rank's socket must exist before anyone sends to it. */
    ECCL_TRY(core_bootstrap_barrier(&comm->bs));
    if (comm->nranks == 1)
        return ecclSuccess;

    int n = comm->nranks, pos = comm->ring_index;
    int prev = comm->ring[(pos + n - 1) % n], next = comm->ring[(pos + 1) % n];
    int parent_pos, child_pos[2];
    core_plan_tree(n, pos, &parent_pos, child_pos);
    int parent = parent_pos >= 0 ? comm->ring[parent_pos] : -1;
    int my_child_index = parent_pos >= 0 ? (pos - (2 * parent_pos + 1)) : 0;
    for (int c = 0; c < comm->nchannels; c++) {
        struct kern_chan *kc = &comm->channels[c].kc;
        ECCL_TRY(conn_offer(comm, prev, conn_tag(KIND_RING, c, 0), tp->slot_bytes, &kc->ring_recv));
        for (int i = 0; i < 2; i++)
            if (child_pos[i] >= 0)
                ECCL_TRY(conn_offer(comm, comm->ring[child_pos[i]], conn_tag(KIND_TREE_UP, c, 0),
                                    tp->slot_bytes, &kc->tree_up_recv[i]));
        if (parent >= 0)
            ECCL_TRY(conn_offer(comm, parent, conn_tag(KIND_TREE_DOWN, c, my_child_index),
                                tp->slot_bytes, &kc->tree_down_recv));
    }
    for (int c = 0; c < comm->nchannels; c++) {
        struct kern_chan *kc = &comm->channels[c].kc;
        ECCL_TRY(conn_recv_desc(comm, next, conn_tag(KIND_RING, c, 0), &kc->ring_send));
        if (parent >= 0)
            ECCL_TRY(conn_recv_desc(comm, parent, conn_tag(KIND_TREE_UP, c, 0), &kc->tree_up_send));
        for (int i = 0; i < 2; i++)
            if (child_pos[i] >= 0)
                ECCL_TRY(conn_recv_desc(comm, comm->ring[child_pos[i]],
                                        conn_tag(KIND_TREE_DOWN, c, i), &kc->tree_down_send[i]));
    }
    INFO(ECCL_LOG_SHM, "rank %d: %d channels connected over shared memory (%u slots of %u bytes)",
         comm->rank, comm->nchannels, tp->nslots, tp->slot_bytes);
    return ecclSuccess;
}

ecclResult_t core_transport_p2p_connect(struct ecclComm *comm, const struct eccl_queue *tasks)
{
    /* Offers first (receiving side), then takes (sending side). */
    for (int phase = 0; phase < 2; phase++) {
        for (struct eccl_qnode *q = tasks->head; q; q = q->next) {
            struct core_task *t = eccl_container_of(q, struct core_task, node);
            if (t->root == comm->rank || t->count == 0)
                continue;
            struct kern_chan *kc = &comm->channels[core_p2p_channel(comm, t->root)].kc;
            int ch = kc->id;
            if (phase == 0 && t->func == ECCL_FUNC_RECV && !kc->p2p_recv[t->root])
                ECCL_TRY(conn_offer(comm, t->root, conn_tag(KIND_P2P, ch, 0),
                                    comm->tp.p2p_slot_bytes, &kc->p2p_recv[t->root]));
            if (phase == 1 && t->func == ECCL_FUNC_SEND && !kc->p2p_send[t->root])
                ECCL_TRY(conn_recv_desc(comm, t->root, conn_tag(KIND_P2P, ch, 0),
                                        &kc->p2p_send[t->root]));
        }
    }
    return ecclSuccess;
}

void core_transport_fini(struct ecclComm *comm)
{
    struct core_transport *tp = &comm->tp;
    while (tp->segs) {
        struct core_seg *s = tp->segs;
        tp->segs = s->next;
        munmap(s->base, s->size);
        eccl_free(s);
    }
    while (tp->stash) {
        struct core_uds_msg *m = tp->stash;
        tp->stash = m->next;
        if (m->fd >= 0)
            close(m->fd);
        eccl_free(m);
    }
    eccl_socket_close(&tp->uds_fd);
}

/*
 * core_int.h - core/'s private declarations: the communicator and what hangs off it.
 *
 * Not included from any other folder. elastic/ and tools/ see a communicator only through
 * include/eccl.h and core/core.h.
 */
#ifndef ECCL_CORE_INT_H
#define ECCL_CORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/mem.h"
#include "common/queue.h"
#include "common/socket.h"
#include "common/sync.h"
#include "core/core.h"
#include "eccl.h"
#include "kernels/dev_exec.h"
#include "kernels/host_exec.h"
#include "kernels/host_flat.h"
#include "kernels/reduce.h"
#include "kernels/work.h"
#include "proxy/proxy.h"
#include "proxy/service.h"

#define CORE_COMM_MAGIC    0x6563636c6f6d6d31ULL /* "ecclomm1" */
#define CORE_MAX_CHANNELS  16
#define CORE_MAX_PREMULSUM 256

/* What every rank learns about every other at bootstrap. Fixed layout: it crosses the wire. */
struct core_peer_info {
    int32_t rank;
    int32_t pid;
    uint64_t host_hash;
    uint64_t pid_hash; /* identifies the process across hosts: host hash ^ pid ^ start time */
    union eccl_sockaddr listen_addr; /* bootstrap listener */
    int32_t cuda_dev;
    uint32_t pidns; /* pid namespace inode: pids of two ranks compare only when equal */
};

/* --- bootstrap (core/bootstrap.c) --- */

struct bootstrap_msg;
struct bootstrap_pending;

struct core_bootstrap {
    int rank;
    int nranks;
    uint64_t magic;
    int listen_fd;
    int ring_send_fd;                 /* to rank + 1 */
    int ring_recv_fd;                 /* from rank - 1 */
    struct core_peer_info *peers;     /* nranks entries */
    struct bootstrap_msg *unexpected; /* point-to-point messages not asked for yet */
    const _Atomic uint32_t *abort;
    int64_t timeout_ms;
    bool auth;                         /* job secret: connections are authenticated */
    struct bootstrap_pending *pending; /* accepted, handshake under way (bootstrap.c) */
};

ecclResult_t core_bootstrap_id_create(ecclUniqueId *id);
/* Meets the other ranks through the root named by id: every rank gets every peer's info.
 * timeout_ms bounds this and every later exchange (0: ECCL_BOOTSTRAP_TIMEOUT). */
ecclResult_t core_bootstrap_init(struct core_bootstrap *bs, const ecclUniqueId *id, int rank,
                                 int nranks, const struct core_peer_info *mine,
                                 const _Atomic uint32_t *abort, int64_t timeout_ms);
void core_bootstrap_fini(struct core_bootstrap *bs);
ecclResult_t core_bootstrap_allgather(struct core_bootstrap *bs, void *data, size_t size_each);
ecclResult_t core_bootstrap_barrier(struct core_bootstrap *bs);
ecclResult_t core_bootstrap_send(struct core_bootstrap *bs, int peer, uint32_t tag,
                                 const void *data, size_t size);
ecclResult_t core_bootstrap_recv(struct core_bootstrap *bs, int peer, uint32_t tag, void *data,
                                 size_t size);

/* What bootstrap reads from other processes, checked without I/O (tests/fuzz/fuzz_bootstrap.c):
 * a hello (the root reads it), the root's reply followed by the peer table (nranks entries), a
 * connection header (a rank's listener), a unique id. ecclSuccess when bootstrap would accept
 * the bytes; else what it would fail with. core_bootstrap_encode writes a valid one (hello: the
 * info of peers[0]; reply: the table peers[0..nranks); id: the root at peers[0].listen_addr). */
enum core_bootstrap_wire {
    CORE_BOOTSTRAP_HELLO,
    CORE_BOOTSTRAP_REPLY,
    CORE_BOOTSTRAP_CONN,
    CORE_BOOTSTRAP_ID,
};
ecclResult_t core_bootstrap_decode(enum core_bootstrap_wire kind, const void *buf, size_t len,
                                   uint64_t magic, int nranks);
ecclResult_t core_bootstrap_encode(enum core_bootstrap_wire kind, uint64_t magic, int rank,
                                   int nranks, const struct core_peer_info *peers, void *buf,
                                   size_t cap, size_t *len_out);

/* --- shared segments and connectors (core/transport.c) --- */

struct core_conn_set {
    /* per channel */
    struct eccl_conn_ctrl *ring_recv;
    struct eccl_conn_ctrl *ring_send;
    struct eccl_conn_ctrl *tree_up_recv[2];
    struct eccl_conn_ctrl *tree_up_send;
    struct eccl_conn_ctrl *tree_down_recv;
    struct eccl_conn_ctrl *tree_down_send[2];
};

struct core_transport {
    int uds_fd; /* this rank's datagram socket: answers to descriptor requests arrive here */
    char uds_name[96];
    struct proxy_state *proxy;
    bool shm_disabled; /* ECCL_SHM_DISABLE: the network between ranks of one host too */
    bool net_ready;    /* the proxy's network backend is initialised */
    uint32_t nslots;
    uint32_t slot_bytes;
    uint32_t p2p_slot_bytes;
    /* CUDA communicators: how receive connectors between ranks of one host get device slots
     * (enum kern_dev_mem_mode; NONE: ECCL_P2P_DISABLE, or a host communicator). */
    int dev_mode;
    /* Protocols, agreed by every rank at init (core_transport_init), so that every rank's planner
     * picks the same one: LL needs every ring and tree connector of every rank in device memory
     * with LL lines of ll_bytes; ll_threshold bounds the bytes of an operation that uses it
     * unless Simple is excluded (ECCL_PROTO). */
    uint32_t ll_bytes; /* LL lines per slot (ECCL_LL_SLOT_BYTES), 0: none */
    bool ll_ok;
    bool simple_ok;        /* false: ECCL_PROTO excluded Simple on every rank (LL for every size) */
    uint64_t ll_threshold; /* UINT64_MAX: ECCL_LL_THRESHOLD unset, the planner's default */
    /* LL128 needs every ring connector of every rank in device memory with LL128 lines of
     * ll128_bytes after LL lines of ll_bytes; ring algorithms only. */
    uint32_t ll128_bytes; /* LL128 lines per slot (a Simple slot's payload), 0: none */
    bool ll128_ok;
    bool ll128_forced;        /* ECCL_PROTO names LL128: also between ranks on different GPUs */
    uint64_t ll128_threshold; /* UINT64_MAX: ECCL_LL128_THRESHOLD unset, the default */
    int min_nchannels;        /* ECCL_MIN_NCHANNELS, the largest any rank asked for */
};

/* The bytes of a collective as the protocol thresholds count them: the larger buffer, as
 * nccl-tests and NCCL's tuning count them (AllGather and ReduceScatter: every rank's block). */
static inline uint64_t core_proto_bytes(int func, size_t bytes, int nranks)
{
    return func == ECCL_FUNC_ALLGATHER || func == ECCL_FUNC_REDUCESCATTER
               ? (uint64_t)bytes * (uint64_t)nranks
               : (uint64_t)bytes;
}

/* LL serves operations up to this many bytes (core_proto_bytes) when ECCL_LL_THRESHOLD is
 * unset: a ring step of LL then holds a whole Simple step (a channel's share divided by the
 * ranks), so both protocols give the same bits, and on an H100 LL is the faster of the two up
 * to about there (docs/bench-gpu.md). */
static inline uint64_t core_ll_default_threshold(int nranks, uint32_t ll_bytes)
{
    return (uint64_t)nranks * (ll_bytes / 2);
}

/* LL128 lines (128 bytes, 120 of data) that hold `slot_bytes` of data. */
static inline uint32_t core_ll128_slot_bytes(uint32_t slot_bytes)
{
    return (uint32_t)(((uint64_t)slot_bytes + 119) / 120 * 128);
}

/* LL128 serves operations above LL's threshold up to this many bytes (core_proto_bytes) when
 * ECCL_LL128_THRESHOLD is unset, Simple above; about where Simple became the faster in the
 * sweeps of docs/bench-gpu.md (H100, 2 to 8 ranks on one GPU). LL128 saves a hand-over through
 * host memory per step but moves fewer bytes per thread block: it pays where an operation has
 * many steps for its size. AllReduce (2 (n - 1) steps per chunk): ranks x 2 MiB, at most
 * 16 MiB. AllGather and ReduceScatter (n - 1 steps): (n - 1)^2 x 128 KiB. Broadcast and Reduce
 * (chains, one step per chunk and rank): none. */
static inline uint64_t core_ll128_default_threshold(int func, int nranks)
{
    uint64_t n = nranks > 1 ? (uint64_t)nranks : 1;
    switch (func) {
    case ECCL_FUNC_ALLREDUCE:
        return n <= 8 ? n * (UINT64_C(2) << 20) : UINT64_C(16) << 20;
    case ECCL_FUNC_ALLGATHER:
    case ECCL_FUNC_REDUCESCATTER:
        return (n - 1) * (n - 1) * (UINT64_C(128) << 10);
    default:
        return 0;
    }
}

/* --- tasks and plans (core/enqueue.c, core/planner.c) --- */

struct core_task {
    struct eccl_qnode node;
    uint8_t func; /* enum eccl_func */
    uint8_t dtype;
    struct eccl_redop op;
    int root; /* root, or peer for p2p */
    size_t count;
    const void *sendbuff;
    void *recvbuff;
};

struct core_plan {
    struct eccl_qnode node;
    struct eccl_callback reclaim; /* posted by the executor when done */
    struct ecclComm *comm;
    int nchannels;
    int nwork[CORE_MAX_CHANNELS];
    struct eccl_work *work[CORE_MAX_CHANNELS]; /* in the comm's memory stack frame */
    int ncoll;                                 /* collective operations in the plan */
    uint64_t fingerprint;
    _Atomic int pending; /* channels still running */
    ecclResult_t result;
};

/* --- channels and their executor threads (core/exec.c) --- */

struct core_channel {
    struct kern_chan kc;
    struct ecclComm *comm;
    pthread_t thread;
    bool thread_started;
    struct eccl_event go;   /* a plan was posted */
    struct eccl_event done; /* the plan finished on this channel */
    struct core_plan *plan; /* protected by go/done */
    ecclResult_t result;
    int failed_peer;
    struct kern_spread spread; /* its thread's (kernels/host_exec.h) */
};

/* --- the communicator --- */

struct premulsum_slot {
    bool used;
    struct eccl_redop op;
};

struct ecclComm {
    uint64_t magic; /* CORE_COMM_MAGIC while alive */
    int rank;
    int nranks;
    int cuda_dev; /* -1 for host communicators */
    bool host;
    struct kern_dev *dev; /* the GPU executor of a CUDA communicator */
    void *stream;         /* cudaStream_t of the group's calls (CUDA communicators) */
    uint64_t comm_hash;
    char name[64];
    ecclConfig_t config; /* effective values, our layout */

    struct core_bootstrap bs;
    struct core_peer_info *peers;
    struct core_transport tp;
    struct proxy_service *svc; /* liveness of the ranks of this host */

    int nchannels;
    struct core_channel channels[CORE_MAX_CHANNELS];
    int *ring; /* ranks in ring order */
    int ring_index;
    int64_t timeout_ms;
    uint32_t spin; /* connector polls before yielding (ECCL_SPIN, or by oversubscription) */
    enum kern_stream host_stream;   /* ECCL_HOST_STREAM */
    uint64_t host_stream_out_bytes; /* ECCL_HOST_STREAM_OUT_BYTES */
    /* Flat calls may move the caller's thread off a shared CPU (kernels/host_exec.h). */
    bool flat_spread;

    /* Memory: permanent arena, scoped stack for launch preparation, pools. */
    struct eccl_arena arena;
    struct eccl_memstack stack;
    struct eccl_pool plan_pool;
    struct eccl_pool task_pool;
    struct eccl_cbq reclaim_q;

    /* Group state: tasks gathered until the group ends (owner thread). */
    struct eccl_queue coll_tasks;
    struct eccl_queue p2p_tasks;
    bool in_group_list;
    struct ecclComm *group_next;
    size_t work_budget; /* work descriptors per normal plan */

    /* Schedule state, identical on every rank. */
    uint64_t coll_seq;   /* collectives completed */
    uint64_t sched_hash; /* chained plan fingerprints */
    uint64_t plans_launched;

    struct premulsum_slot premulsum[CORE_MAX_PREMULSUM];
    pthread_mutex_t premulsum_lock;

    /* Failure state, shared with other threads. */
    _Atomic uint32_t abort;  /* set by abort, revoke or a failure: every wait checks it */
    _Atomic int async_error; /* ecclResult_t */
    _Atomic int inflight;    /* API calls executing work on this comm */
    _Atomic bool revoked;
    _Atomic bool finalized;
    char last_error[512];
    /* Also orders the connector pointers of channels[].kc, which the transport sets while the
     * communicator runs (lazy p2p connections), with core_exec_close_all on a failure thread. */
    pthread_mutex_t error_lock;
    core_error_fn error_fn; /* protected by error_lock */
    void *error_arg;

    /* Registrations (core/reg.c): a list under reg_lock. Those of ecclMemAlloc memory on a CUDA
     * communicator carry a key (from 1, never reused) and what each local peer knows of them. */
    struct core_reg *regs;
    pthread_mutex_t reg_lock;
    uint32_t reg_next_key;
    _Atomic int reg_zc;          /* registrations with a key: 0 lets the planner skip the lock */
    _Atomic uint64_t zc_sends;   /* sends planned as zero-copy */
    _Atomic uint64_t zc_imports; /* peers' registrations mapped here */

    /* The flat path's segment (core/flat.c); base NULL on every rank when it is off. */
    struct kern_flat flat;
};

/* comm.c */
ecclResult_t core_comm_check(const struct ecclComm *comm, const char *fn);
void core_comm_set_error(struct ecclComm *comm, ecclResult_t res);
ecclResult_t core_comm_create(struct ecclComm **out, int nranks, const ecclUniqueId *id, int rank,
                              const ecclConfig_t *config);
ecclResult_t core_comm_create_opts(struct ecclComm **out, int nranks, const ecclUniqueId *id,
                                   int rank, const ecclConfig_t *config,
                                   const struct core_init_opts *opts);

/* mem.c: references on ecclMemAlloc allocations (struct user_mem). core_mem_ref: the one that
 * holds [p, p + size), NULL when none does; the memory stays allocated until the last reference
 * (ecclMemFree drops the user's) is dropped. */
struct user_mem;
struct user_mem *core_mem_ref(const void *p, size_t size);
ecclResult_t core_mem_unref(struct user_mem *u);
struct kern_dev_mem *core_mem_dev(const struct user_mem *u);

/* reg.c: registered buffers; zero-copy sends between GPU ranks of one host. */
/* Before the plans of a launch are built: the announcements and answers on the point-to-point
 * connectors that `tasks` use (this rank's registrations offered to receivers, receivers'
 * answers read, peers' registrations mapped while the GPU is idle). Never fails: what cannot be
 * done leaves the copies in place. */
void core_reg_p2p_prepare(struct ecclComm *comm, const struct eccl_queue *tasks);
/* A send's work: flagged zero-copy (ECCL_WORK_FLAG_ZC) when its buffer is a registration the
 * receiver has mapped and the message is larger than the connector holds. */
void core_reg_p2p_work(struct ecclComm *comm, struct eccl_work *w, size_t bytes);
/* At destroy: every registration (the executor and the proxy are gone). */
void core_reg_fini(struct ecclComm *comm);
/* The mailbox of a point-to-point connector (struct eccl_conn_ctrl, zc_*), exposed for the unit
 * tests. Post: the sender's request; false when ECCL_CONN_ZC_RING requests are unanswered.
 * Serve: the receiver (`rank`) answers every request of `peer` there: an import with possible
 * fields gets import()'s slot (-1: refused), one with impossible fields -1, a drop calls drop();
 * a mailbox whose counters are more than a ring apart is skipped whole (WARN). Returns the
 * requests answered. */
/* For the tests: sends planned zero-copy, peers' registrations mapped so far, and mapped now. */
void core_reg_stats(const struct ecclComm *comm, uint64_t *zc_sends, uint64_t *zc_imports,
                    int *mapped);
struct eccl_conn_ctrl;
struct eccl_conn_zc_req;
bool core_reg_box_post(struct eccl_conn_ctrl *c, const struct eccl_conn_zc_req *q);
int core_reg_box_serve(struct eccl_conn_ctrl *c, int rank, int peer,
                       int (*import)(void *arg, int peer, const struct eccl_conn_zc_req *q),
                       void (*drop)(void *arg, int peer, uint32_t key), void *arg);

/* transport.c */
ecclResult_t core_transport_init(struct ecclComm *comm);
/* ECCL_PROTO's value as a mask of 1 << enum eccl_proto: NULL or "" is every protocol; "a,b" the
 * ones listed, "^a,b" all but those (names in any case). ecclInvalidArgument, with a WARN, for a
 * name that is not a protocol. */
ecclResult_t core_proto_parse(const char *s, uint32_t *mask);
/* Slot size of ring and tree connectors when ECCL_SHM_SLOT_BYTES is not set: host communicators
 * keep a step in the caches of 2-core machines; CUDA communicators amortize the hand-over of a
 * step (docs/bench-gpu.md). */
#define CORE_HOST_SLOT_BYTES (128u * 1024)
#define CORE_CUDA_SLOT_BYTES (512u * 1024)
/* The same for point-to-point connectors (ECCL_P2P_SLOT_BYTES): a GPU step pays about 12 us of
 * hand-over, so CUDA communicators take larger steps (docs/bench-gpu.md). */
#define CORE_HOST_P2P_SLOT_BYTES (128u * 1024)
#define CORE_CUDA_P2P_SLOT_BYTES (512u * 1024)
/* Whether exportable device memory may use cuMem (ECCL_CUMEM_ENABLE). */
bool core_cumem_enabled(void);
/* clean: a destroy, not an abort: first let posted network sends leave (bounded). */
void core_transport_fini(struct ecclComm *comm, bool clean);
/* Connects point-to-point connectors that `tasks` need and that are not there yet. */
ecclResult_t core_transport_p2p_connect(struct ecclComm *comm, const struct eccl_queue *tasks);

/* planner.c */
/* ECCL_ALGO's value (NULL: unset), cached per thread like the planner's other parameters. */
const char *core_plan_algo(void);
ecclResult_t core_plan_build(struct ecclComm *comm, struct eccl_queue *coll, struct eccl_queue *p2p,
                             size_t budget, struct eccl_queue *plans);
void core_plan_tree(int nranks, int pos, int *parent, int child[2]);
/* Ring order: each host's ranks contiguous and in rank order, hosts in the order of their lowest
 * rank, so that a ring crosses the network once per host. host_hash[r] is rank r's host. */
void core_plan_ring(const uint64_t *host_hash, int nranks, int *ring);
int core_p2p_channel(const struct ecclComm *comm, int peer);

/* exec.c */
ecclResult_t core_exec_start(struct ecclComm *comm);
void core_exec_stop(struct ecclComm *comm);
/* Runs every plan of the queue in order on comm's channels; `inline0` runs channel 0 on the
 * calling thread. Reclaims the plans. */
ecclResult_t core_exec_plans(struct ecclComm *comm, struct eccl_queue *plans);
ecclResult_t core_exec_post(struct ecclComm *comm, struct core_plan *plan, bool inline0);
ecclResult_t core_exec_wait(struct ecclComm *comm, struct core_plan *plan, bool inline0);
void core_exec_close_all(struct ecclComm *comm);

/* group.c */
ecclResult_t core_group_add_task(struct ecclComm *comm, struct core_task *task);
int core_group_depth(void);
/* Records the first failed call inside a group; GroupEnd then drops the group and returns it. */
void core_group_record_error(ecclResult_t res);
/* An init called inside a group: it runs at the group's end, concurrently with the others. */
ecclResult_t core_group_add_init(ecclComm_t *out, int nranks, const ecclUniqueId *id, int rank,
                                 const ecclConfig_t *config);
/* Work descriptors a normal plan may hold: half of ECCL_WORK_FIFO_BYTES. */
size_t core_group_work_budget(void);

#endif

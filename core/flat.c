/*
 * flat.c - the communicator's flat segment (kernels/host_flat.h) and the calls that use it.
 *
 * At init, when every rank of a host communicator runs on one host, rank 0 creates a POSIX
 * shared-memory object named after the communicator, every other rank maps it, and rank 0
 * unlinks the name once all have said whether they could: from then on the segment lives only
 * in the ranks' mappings. Any rank that cannot (no shared /dev/shm between containers, another
 * ECCL_FLAT_MAX_BYTES) turns the path off for all. core/flat.h says which calls take it.
 *
 * Rank 0 holds a shared flock on the object while its name exists. A rank 0 that dies between
 * the create and the unlink leaves the name behind, unlocked: the next rank 0 to create a
 * segment on this host (any job of the same user) removes such names first.
 */
#include "core/flat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"

ECCL_PARAM_INT(flat_max_bytes, "ECCL_FLAT_MAX_BYTES", 64 * 1024)

/* What this rank wants: the slot size, or 0 when the flat path cannot serve this communicator.
 * The shape comes from the peer table, which every rank holds alike. */
static uint32_t flat_want(const struct ecclComm *comm)
{
    int64_t max = eccl_param_flat_max_bytes();
    if (max <= 0 || comm->nranks < 2 || comm->nranks > KERN_FLAT_MAX_RANKS || !comm->host)
        return 0;
    for (int i = 0; i < comm->nranks; i++)
        if (comm->peers[i].host_hash != comm->peers[0].host_hash || comm->peers[i].cuda_dev >= 0)
            return 0;
    if (max > KERN_FLAT_MAX_SLOT_BYTES)
        max = KERN_FLAT_MAX_SLOT_BYTES;
    return (uint32_t)max;
}

static uint32_t slot_bytes_for(uint32_t max)
{
    return (max + 7u) & ~7u;
}

#define SEG_PREFIX "eccl-flat-"
/* A name this old without a size is stale even though its creator may not have locked it. */
#define SEG_STALE_UNSIZED_S 60

static void seg_name(const struct ecclComm *comm, char *buf, size_t len)
{
    snprintf(buf, len, "/" SEG_PREFIX "%016llx-%d", (unsigned long long)comm->comm_hash,
             (int)comm->peers[0].pid);
}

/* Rank 0, before it creates: unlinks the segment names in /dev/shm whose creator is gone (their
 * flock is free: a live creator holds it until it unlinks the name itself). The ranks that
 * mapped such a segment keep it; only the name goes. Names of other users do not open. */
static void seg_sweep(void)
{
    DIR *dir = opendir("/dev/shm");
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, SEG_PREFIX, strlen(SEG_PREFIX)) != 0)
            continue;
        char name[300];
        snprintf(name, sizeof(name), "/%s", e->d_name);
        int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct stat st;
        /* Size 0: the creator may be between its shm_open and its flock. */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st) == 0 &&
            (st.st_size > 0 || time(NULL) - st.st_mtime > SEG_STALE_UNSIZED_S) &&
            shm_unlink(name) == 0)
            INFO(ECCL_LOG_SHM, "flat: removed %s, left by a rank 0 that died in its init", name);
        close(fd);
    }
    closedir(dir);
}

/* Rank 0: creates, sizes, maps and formats the object. *lock_fd: the object's descriptor, with
 * the shared flock that marks the name as in use; closed once the name is unlinked. */
static int seg_create(const char *name, int nranks, uint32_t slot_bytes, void **base, size_t *bytes,
                      int *lock_fd)
{
    size_t size = kern_flat_segment_bytes(nranks, slot_bytes);
    seg_sweep();
    int fd = ECCL_FAULT_SYS("flat_shm_open", EMFILE,
                            shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd < 0) {
        INFO(ECCL_LOG_SHM, "flat: shm_open(%s) failed: %s", name, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_SH) != 0) {
        INFO(ECCL_LOG_SHM, "flat: flock(%s) failed: %s", name, strerror(errno));
        close(fd);
        shm_unlink(name);
        return -1;
    }
    /* The pages are reserved now: a /dev/shm too small for them (a container's 64 MiB) turns
     * the path off here instead of raising SIGBUS at a later first touch. */
    void *p = MAP_FAILED;
    int rc = ftruncate(fd, (off_t)size) == 0 ? posix_fallocate(fd, 0, (off_t)size) : errno;
    if (rc == 0)
        p = ECCL_FAULT_MMAP("flat_mmap",
                            mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    else
        errno = rc;
    if (p == MAP_FAILED) {
        INFO(ECCL_LOG_SHM, "flat: sizing or mapping %s (%zu bytes) failed: %s", name, size,
             strerror(errno));
        close(fd);
        shm_unlink(name);
        return -1;
    }
    kern_flat_format(p, nranks, slot_bytes);
    *base = p;
    *bytes = size;
    *lock_fd = fd;
    return 0;
}

/* The other ranks: map what rank 0 made. */
static int seg_open(const char *name, void **base, size_t *bytes)
{
    int fd = ECCL_FAULT_SYS("flat_shm_open", EMFILE, shm_open(name, O_RDWR | O_CLOEXEC, 0));
    if (fd < 0) {
        INFO(ECCL_LOG_SHM, "flat: shm_open(%s) failed: %s", name, strerror(errno));
        return -1;
    }
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0 &&
        (uint64_t)st.st_size <=
            kern_flat_segment_bytes(KERN_FLAT_MAX_RANKS, KERN_FLAT_MAX_SLOT_BYTES))
        p = ECCL_FAULT_MMAP(
            "flat_mmap", mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) {
        INFO(ECCL_LOG_SHM, "flat: mapping %s failed: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    *base = p;
    *bytes = (size_t)st.st_size;
    return 0;
}

/* The communicator lets go of the segment, then unmaps it: under error_lock, which
 * core_exec_close_all holds when it closes the segment (the UDS service's thread does when a
 * peer goes away, also while this rank's init is still failing). */
static void flat_forget(struct ecclComm *comm, void *base, size_t bytes)
{
    pthread_mutex_lock(&comm->error_lock);
    memset(&comm->flat, 0, sizeof(comm->flat));
    pthread_mutex_unlock(&comm->error_lock);
    if (base)
        munmap(base, bytes);
}

ecclResult_t core_flat_init(struct ecclComm *comm)
{
    ecclResult_t res = ecclSuccess;
    memset(&comm->flat, 0, sizeof(comm->flat));
    if (comm->nranks < 2 || !comm->host)
        return ecclSuccess;
    for (int i = 0; i < comm->nranks; i++)
        if (comm->peers[i].host_hash != comm->peers[0].host_hash || comm->peers[i].cuda_dev >= 0)
            return ecclSuccess; /* the same answer on every rank: no exchange needed */
    int n = comm->nranks, me = comm->rank;
    uint32_t want = flat_want(comm);
    char name[96];
    seg_name(comm, name, sizeof(name));
    void *base = NULL;
    size_t bytes = 0;
    bool created = false;
    int lock_fd = -1;
    if (me == 0 && want > 0) {
        created = seg_create(name, n, slot_bytes_for(want), &base, &bytes, &lock_fd) == 0;
        if (!created)
            want = 0;
    }
    int32_t *st = eccl_calloc((size_t)n, sizeof(*st), "flat-init");
    if (!st) {
        res = ecclSystemError;
        goto out_unmap;
    }
    /* Round 1: every rank's size, rank 0's only if it made the object. */
    st[me] = (int32_t)want;
    ECCL_TRY_GOTO(core_bootstrap_allgather(&comm->bs, st, sizeof(*st)), res, out_free);
    bool agree = true;
    for (int i = 0; i < n; i++)
        agree = agree && st[i] > 0 && st[i] == st[0];
    if (!agree) {
        if (want > 0 && me == 0)
            INFO(ECCL_LOG_INIT, "flat: off (a rank cannot use it, or ECCL_FLAT_MAX_BYTES differs "
                                "between ranks)");
        goto out_free;
    }
    /* Round 2: whether each rank mapped it. */
    int32_t ok = 1;
    if (me != 0) {
        ok = seg_open(name, &base, &bytes) == 0;
        if (ok && kern_flat_attach(&comm->flat, base, bytes, me, n) != ecclSuccess) {
            eccl_log_clear_last_error();
            ok = 0;
        }
    } else if (kern_flat_attach(&comm->flat, base, bytes, me, n) != ecclSuccess) {
        eccl_log_clear_last_error();
        ok = 0;
    }
    memset(st, 0, (size_t)n * sizeof(*st));
    st[me] = ok;
    ECCL_TRY_GOTO(core_bootstrap_allgather(&comm->bs, st, sizeof(*st)), res, out_free);
    for (int i = 0; i < n; i++)
        ok = ok && st[i] == 1;
    if (ok) {
        comm->flat.max_bytes = (uint32_t)want;
        comm->flat.spread = (struct kern_spread){.on = comm->flat_spread, .rank = me};
        INFO(ECCL_LOG_INIT, "flat: %d ranks, calls up to %u bytes, %zu-byte segment", n, want,
             bytes);
        base = NULL; /* kept */
    }
out_free:
    eccl_free(st);
out_unmap:
    if (created) {
        shm_unlink(name); /* every rank has mapped it, or gave up */
        close(lock_fd);
    }
    if (base)
        flat_forget(comm, base, bytes);
    return res;
}

void core_flat_fini(struct ecclComm *comm)
{
    flat_forget(comm, comm->flat.base, comm->flat.bytes);
}

void core_flat_close(struct ecclComm *comm)
{
    kern_flat_close(&comm->flat);
}

/* ECCL_ALGO, checked once per parameter generation and thread: ring or tree keep the flat path
 * off. */
static bool algo_allows_flat(void)
{
    static _Thread_local uint64_t gen;
    static _Thread_local bool allows;
    uint64_t g = eccl_param_generation();
    if (gen != g) {
        const char *a = core_plan_algo();
        allows = !a || (strcasecmp(a, "ring") != 0 && strcasecmp(a, "tree") != 0);
        gen = g;
    }
    return allows;
}

bool core_flat_fits(const struct ecclComm *comm, int func, size_t count, int dtype)
{
    if (!comm->flat.base)
        return false;
    size_t bytes = count * eccl_dtype_size(dtype);
    switch (func) {
    case ECCL_FUNC_ALLREDUCE:
    case ECCL_FUNC_BROADCAST:
        break;
    case ECCL_FUNC_ALLGATHER:
    case ECCL_FUNC_REDUCESCATTER:
        bytes *= (size_t)comm->nranks;
        break;
    default:
        return false;
    }
    return bytes <= comm->flat.max_bytes && algo_allows_flat();
}

static ecclResult_t run_task(struct ecclComm *comm, const struct core_task *t)
{
    struct kern_ctx ctx = {
        .abort = &comm->abort,
        .timeout_ns = comm->timeout_ms > 0 ? (uint64_t)comm->timeout_ms * ECCL_NS_PER_MS : 0,
        .spin = comm->spin,
        .failed_peer = -1,
    };
    struct kern_flat_call c = {
        .func = t->func,
        .sendbuff = t->sendbuff,
        .recvbuff = t->recvbuff,
        .count = t->count,
        .op = t->op,
        .root = t->root,
    };
    c.op.dtype = t->dtype;
    if (c.op.scalar_ptr) {
        if (comm->dev) {
            WARN("a PreMulSum op with a device-resident scalar (ecclScalarDevice) on host buffers "
                 "of a CUDA communicator: use device buffers, or ecclScalarHostImmediate");
            return ecclInvalidUsage;
        }
        c.op.scalar = eccl_redop_scalar_bits((const void *)(uintptr_t)c.op.scalar, t->dtype);
        c.op.scalar_ptr = 0;
    }
    ECCL_TRY(kern_flat_run(&comm->flat, &c, &ctx));
    /* The schedule's fingerprint covers the call as the planner's covers a plan's work. */
    uint64_t fp = (uint64_t)t->func | (uint64_t)t->dtype << 8 | (uint64_t)t->op.kind << 16 |
                  (uint64_t)(uint32_t)t->root << 24 | (uint64_t)0x666c6174 << 32; /* "flat" */
    comm->sched_hash = eccl_hash_mix(comm->sched_hash ^ eccl_hash_mix(fp ^ t->count));
    comm->coll_seq++;
    return ecclSuccess;
}

ecclResult_t core_flat_call(struct ecclComm *comm, const struct core_task *t)
{
    int err = atomic_load_explicit(&comm->async_error, memory_order_relaxed);
    if ((err != ecclSuccess && err != ecclInProgress) ||
        atomic_load_explicit(&comm->revoked, memory_order_relaxed))
        return ecclInProgress;
    atomic_fetch_add(&comm->inflight, 1);
    eccl_log_set_dev(comm->rank);
    ecclResult_t res = run_task(comm, t);
    /* The peers may be waiting for this rank: the communicator fails and they are told. */
    if (res != ecclSuccess)
        core_comm_set_error(comm, res == ecclInvalidArgument ? ecclInvalidUsage : res);
    atomic_fetch_sub(&comm->inflight, 1);
    return res;
}

static bool task_fits(const struct ecclComm *comm, const struct core_task *t)
{
    return t->count > 0 && core_flat_fits(comm, t->func, t->count, t->dtype);
}

ecclResult_t core_flat_launch(struct ecclComm *comm, struct eccl_queue *plans)
{
    bool any = false;
    for (struct eccl_qnode *q = comm->coll_tasks.head; q && comm->flat.base && !any; q = q->next)
        any = task_fits(comm, eccl_container_of(q, struct core_task, node));
    if (!any) {
        ECCL_TRY(
            core_plan_build(comm, &comm->coll_tasks, &comm->p2p_tasks, comm->work_budget, plans));
        return core_exec_plans(comm, plans);
    }
    /* Collectives in call order, each run of non-flat ones as plans of their own, and the
     * point-to-point tasks with the last run (the planner puts them after collectives). */
    ecclResult_t res = ecclSuccess;
    struct eccl_queue batch, none;
    eccl_queue_init(&batch);
    eccl_queue_init(&none);
    while (res == ecclSuccess) {
        struct eccl_qnode *q = eccl_queue_pop(&comm->coll_tasks);
        struct core_task *t = q ? eccl_container_of(q, struct core_task, node) : NULL;
        if (t && !task_fits(comm, t)) {
            eccl_queue_push(&batch, q);
            continue;
        }
        struct eccl_queue *p2p = t ? &none : &comm->p2p_tasks;
        if (!eccl_queue_empty(&batch) || !eccl_queue_empty(p2p)) {
            res = core_plan_build(comm, &batch, p2p, comm->work_budget, plans);
            if (res == ecclSuccess)
                res = core_exec_plans(comm, plans);
            while ((q = eccl_queue_pop(&batch)) != NULL)
                eccl_pool_put(&comm->task_pool, eccl_container_of(q, struct core_task, node));
        }
        if (!t)
            break;
        if (res == ecclSuccess)
            res = run_task(comm, t);
        eccl_pool_put(&comm->task_pool, t);
    }
    /* What a failure left: back to the pool (the caller drops the rest of the queues). */
    struct eccl_qnode *q;
    while ((q = eccl_queue_pop(&batch)) != NULL)
        eccl_pool_put(&comm->task_pool, eccl_container_of(q, struct core_task, node));
    return res;
}

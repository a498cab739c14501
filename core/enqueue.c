/*
 * enqueue.c - the collective and point-to-point entry points: argument checks, then a task in the
 * current group (an implicit group around a call made outside one).
 *
 * Bad arguments get ecclInvalidArgument and a WARN that names the argument; nothing is enqueued
 * and the communicator stays usable. AlltoAll, Gather and Scatter become groups of sends and
 * receives, as in NCCL.
 */
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/stats.h"
#include "core/core_int.h"
#include "core/flat.h"

static const char *func_name(int func)
{
    static const char *names[] = {"Broadcast", "Reduce", "AllGather", "ReduceScatter",
                                  "AllReduce", "Send",   "Recv"};
    return func >= 0 && func < ECCL_FUNC_COUNT ? names[func] : "?";
}

/* The kind a call is counted under in the launcher's metrics (common/stats.h). */
static enum eccl_stats_kind stats_kind(int func)
{
    switch (func) {
    case ECCL_FUNC_BROADCAST:
        return ECCL_STATS_BROADCAST;
    case ECCL_FUNC_REDUCE:
        return ECCL_STATS_REDUCE;
    case ECCL_FUNC_ALLGATHER:
        return ECCL_STATS_ALLGATHER;
    case ECCL_FUNC_REDUCESCATTER:
        return ECCL_STATS_REDUCESCATTER;
    case ECCL_FUNC_ALLREDUCE:
        return ECCL_STATS_ALLREDUCE;
    default:
        return ECCL_STATS_SENDRECV;
    }
}

/* ecclRedOp_t + datatype -> the executor's reduction. */
static ecclResult_t resolve_op(struct ecclComm *comm, ecclRedOp_t op, ecclDataType_t dtype,
                               struct eccl_redop *out, const char *fn)
{
    out->dtype = (uint8_t)dtype;
    out->scalar = 0;
    switch ((int)op) {
    case ecclSum:
        out->kind = ECCL_RED_SUM;
        return ecclSuccess;
    case ecclProd:
        out->kind = ECCL_RED_PROD;
        return ecclSuccess;
    case ecclMax:
        out->kind = ECCL_RED_MAX;
        return ecclSuccess;
    case ecclMin:
        out->kind = ECCL_RED_MIN;
        return ecclSuccess;
    case ecclAvg:
        if (eccl_dtype_is_float(dtype)) {
            double inv = 1.0 / comm->nranks;
            out->kind = ECCL_RED_PREMULSUM;
            memcpy(&out->scalar, &inv, sizeof(inv));
        } else {
            out->kind = ECCL_RED_SUMPOSTDIV;
            out->scalar = (uint64_t)comm->nranks;
        }
        return ecclSuccess;
    default:
        break;
    }
    int idx = (int)op - ecclNumOps;
    if (idx >= 0 && idx < CORE_MAX_PREMULSUM) {
        pthread_mutex_lock(&comm->premulsum_lock);
        struct premulsum_slot s = comm->premulsum[idx];
        pthread_mutex_unlock(&comm->premulsum_lock);
        if (s.used) {
            if (s.op.dtype != dtype) {
                WARN("%s: op %d was created for datatype %s, used with %s", fn, (int)op,
                     eccl_dtype_name(s.op.dtype), eccl_dtype_name(dtype));
                return ecclInvalidArgument;
            }
            *out = s.op;
            return ecclSuccess;
        }
    }
    WARN("%s: invalid op %d (not a built-in op nor a live PreMulSum op of this communicator)", fn,
         (int)op);
    return ecclInvalidArgument;
}

static ecclResult_t add_task(struct ecclComm *comm, int func, const void *sendbuff, void *recvbuff,
                             size_t count, ecclDataType_t dtype, const struct eccl_redop *op,
                             int root)
{
    struct core_task *t = eccl_pool_get(&comm->task_pool);
    if (!t)
        return ecclSystemError;
    t->func = (uint8_t)func;
    t->dtype = (uint8_t)dtype;
    if (op)
        t->op = *op;
    else
        t->op.dtype = (uint8_t)dtype;
    t->root = root;
    t->count = count;
    t->sendbuff = sendbuff;
    t->recvbuff = recvbuff;
    return core_group_add_task(comm, t);
}

/* Everything every call checks: the communicator, the datatype, the count's byte size (times
 * `mult`, for calls whose buffers hold several blocks). */
static ecclResult_t check_common(struct ecclComm *comm, const char *fn, ecclDataType_t dtype,
                                 size_t count, size_t mult)
{
    ECCL_TRY(core_comm_check(comm, fn));
    if ((int)dtype < 0 || (int)dtype >= ecclNumTypes) {
        WARN("%s: invalid datatype %d", fn, (int)dtype);
        return ecclInvalidArgument;
    }
    size_t ts = eccl_dtype_size(dtype);
    if (count > SIZE_MAX / ts / mult || count > (SIZE_MAX >> 2) / ts / mult) {
        WARN("%s: count %zu of %s overflows the buffer size", fn, count, eccl_dtype_name(dtype));
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

static ecclResult_t check_root(const struct ecclComm *comm, const char *fn, const char *what,
                               int root)
{
    if (root < 0 || root >= comm->nranks) {
        WARN("%s: %s %d out of range (the communicator has %d ranks)", fn, what, root,
             comm->nranks);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

static ecclResult_t check_buf(const char *fn, const char *what, const void *buf, size_t count)
{
    if (count > 0 && buf == NULL) {
        WARN("%s: %s is NULL with count %zu", fn, what, count);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

/* Runs `res` through the group: inside a group a failure is recorded for GroupEnd; outside one,
 * the implicit group is ended (or, on failure, not started). */
static ecclResult_t finish(ecclResult_t res, bool implicit)
{
    if (res != ecclSuccess) {
        if (implicit)
            return res;
        core_group_record_error(res);
        return res;
    }
    return implicit ? ecclGroupEnd() : ecclSuccess;
}

static ecclResult_t enqueue_coll(int func, const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                 cudaStream_t stream)
{
    const char *fn = func_name(func);
    bool reduces =
        func == ECCL_FUNC_REDUCE || func == ECCL_FUNC_ALLREDUCE || func == ECCL_FUNC_REDUCESCATTER;
    size_t mult = 1;
    ECCL_TRY(core_comm_check(comm, fn));
    if (func == ECCL_FUNC_ALLGATHER || func == ECCL_FUNC_REDUCESCATTER)
        mult = (size_t)comm->nranks;
    ECCL_TRY(check_common(comm, fn, dtype, count, mult));
    struct eccl_redop rop = {.kind = ECCL_RED_SUM, .dtype = (uint8_t)dtype};
    if (reduces)
        ECCL_TRY(resolve_op(comm, op, dtype, &rop, fn));
    if (func == ECCL_FUNC_BROADCAST || func == ECCL_FUNC_REDUCE)
        ECCL_TRY(check_root(comm, fn, "root", root));
    /* Like NCCL, Broadcast and Reduce need sendbuff only on the root... and recvbuff only there
     * for Reduce. */
    bool need_send = func != ECCL_FUNC_BROADCAST || comm->rank == root;
    bool need_recv = func != ECCL_FUNC_REDUCE || comm->rank == root;
    if (need_send)
        ECCL_TRY(check_buf(fn, "sendbuff", sendbuff, count));
    if (need_recv)
        ECCL_TRY(check_buf(fn, "recvbuff", recvbuff, count));
    /* The host executor cannot read a scalar in device memory: refused before anything is
     * queued, so the communicator stays usable. */
    if (rop.scalar_ptr && comm->dev &&
        kern_dev_buffer_on_host(need_recv ? (const void *)recvbuff : sendbuff)) {
        WARN("%s: a PreMulSum op with a device-resident scalar (ecclScalarDevice) on host buffers "
             "of a CUDA communicator: use device buffers, or ecclScalarHostImmediate",
             fn);
        return ecclInvalidUsage;
    }
    if (count == 0)
        return ecclSuccess;
    /* One rank, in place, and a reduction that leaves a value as it is: nothing to move or to
     * launch (as NCCL). PreMulSum scales, and so does a division by more than 1. */
    if (comm->nranks == 1 && sendbuff == recvbuff && rop.kind != ECCL_RED_PREMULSUM &&
        !eccl_redop_has_post(&rop))
        return ecclSuccess;
    /* One rank of a CUDA communicator, outside a group, the same reduction: the output is the
     * input, copied on the caller's stream (as NCCL), without a task, a plan or a kernel. */
    if (comm->nranks == 1 && comm->dev && core_group_depth() == 0 &&
        rop.kind != ECCL_RED_PREMULSUM && !eccl_redop_has_post(&rop)) {
        bool done = false;
        size_t bytes = count * eccl_dtype_size(dtype);
        ECCL_TRY(kern_dev_copy(comm->dev, recvbuff, sendbuff, bytes, (void *)stream, &done));
        if (done) {
            eccl_stats_add_bytes(stats_kind(func), bytes);
            return ecclSuccess;
        }
    }
    /* A small collective outside a group of a one-host communicator: the flat path, at once,
     * without a task or a plan (core/flat.h). */
    if (core_group_depth() == 0 && core_flat_fits(comm, func, count, dtype)) {
        struct core_task t = {.func = (uint8_t)func,
                              .dtype = (uint8_t)dtype,
                              .op = rop,
                              .root = root,
                              .count = count,
                              .sendbuff = sendbuff,
                              .recvbuff = recvbuff};
        ecclResult_t r = core_flat_call(comm, &t);
        if (r == ecclSuccess)
            eccl_stats_add_bytes(stats_kind(func), count * eccl_dtype_size(dtype) * mult);
        if (r != ecclInProgress)
            return r;
    }
    bool implicit = core_group_depth() == 0;
    if (implicit)
        ecclGroupStart();
    comm->stream = (void *)stream; /* the group's plans go on the stream of its calls */
    ecclResult_t res = add_task(comm, func, sendbuff, recvbuff, count, dtype, &rop, root);
    if (res != ecclSuccess && implicit)
        ecclGroupEnd(); /* empty the implicit group; the error stands */
    /* Bytes as nccl-tests' size column counts them. */
    if (res == ecclSuccess)
        eccl_stats_add_bytes(stats_kind(func), count * eccl_dtype_size(dtype) * mult);
    return finish(res, implicit);
}

ECCL_API ecclResult_t ecclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                    ecclDataType_t datatype, ecclRedOp_t op, ecclComm_t comm,
                                    cudaStream_t stream)
{
    return enqueue_coll(ECCL_FUNC_ALLREDUCE, sendbuff, recvbuff, count, datatype, op, 0, comm,
                        stream);
}

ECCL_API ecclResult_t ecclReduce(const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t datatype, ecclRedOp_t op, int root, ecclComm_t comm,
                                 cudaStream_t stream)
{
    return enqueue_coll(ECCL_FUNC_REDUCE, sendbuff, recvbuff, count, datatype, op, root, comm,
                        stream);
}

ECCL_API ecclResult_t ecclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                                    ecclDataType_t datatype, int root, ecclComm_t comm,
                                    cudaStream_t stream)
{
    return enqueue_coll(ECCL_FUNC_BROADCAST, sendbuff, recvbuff, count, datatype, ecclSum, root,
                        comm, stream);
}

ECCL_API ecclResult_t ecclBcast(void *buff, size_t count, ecclDataType_t datatype, int root,
                                ecclComm_t comm, cudaStream_t stream)
{
    return ecclBroadcast(buff, buff, count, datatype, root, comm, stream);
}

ECCL_API ecclResult_t ecclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                                    ecclDataType_t datatype, ecclComm_t comm, cudaStream_t stream)
{
    return enqueue_coll(ECCL_FUNC_ALLGATHER, sendbuff, recvbuff, sendcount, datatype, ecclSum, 0,
                        comm, stream);
}

ECCL_API ecclResult_t ecclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                                        ecclDataType_t datatype, ecclRedOp_t op, ecclComm_t comm,
                                        cudaStream_t stream)
{
    return enqueue_coll(ECCL_FUNC_REDUCESCATTER, sendbuff, recvbuff, recvcount, datatype, op, 0,
                        comm, stream);
}

static ecclResult_t enqueue_p2p(int func, const void *buf, size_t count, ecclDataType_t dtype,
                                int peer, ecclComm_t comm, cudaStream_t stream)
{
    const char *fn = func_name(func);
    ECCL_TRY(check_common(comm, fn, dtype, count, 1));
    ECCL_TRY(check_root(comm, fn, "peer", peer));
    ECCL_TRY(check_buf(fn, func == ECCL_FUNC_SEND ? "sendbuff" : "recvbuff", buf, count));
    bool implicit = core_group_depth() == 0;
    if (implicit)
        ecclGroupStart();
    comm->stream = (void *)stream;
    ecclResult_t res =
        add_task(comm, func, func == ECCL_FUNC_SEND ? buf : NULL,
                 func == ECCL_FUNC_RECV ? (void *)buf : NULL, count, dtype, NULL, peer);
    if (res != ecclSuccess && implicit)
        ecclGroupEnd();
    /* A send/receive pair counts once, at the sender. */
    if (res == ecclSuccess && func == ECCL_FUNC_SEND)
        eccl_stats_add_bytes(ECCL_STATS_SENDRECV, count * eccl_dtype_size(dtype));
    return finish(res, implicit);
}

ECCL_API ecclResult_t ecclSend(const void *sendbuff, size_t count, ecclDataType_t datatype,
                               int peer, ecclComm_t comm, cudaStream_t stream)
{
    return enqueue_p2p(ECCL_FUNC_SEND, sendbuff, count, datatype, peer, comm, stream);
}

ECCL_API ecclResult_t ecclRecv(void *recvbuff, size_t count, ecclDataType_t datatype, int peer,
                               ecclComm_t comm, cudaStream_t stream)
{
    return enqueue_p2p(ECCL_FUNC_RECV, recvbuff, count, datatype, peer, comm, stream);
}

/* AlltoAll, Gather, Scatter: groups of sends and receives. `kind`: 0 alltoall, 1 gather,
 * 2 scatter. */
static ecclResult_t enqueue_pattern(int kind, const void *sendbuff, void *recvbuff, size_t count,
                                    ecclDataType_t dtype, int root, ecclComm_t comm,
                                    cudaStream_t stream)
{
    static const char *names[] = {"AlltoAll", "Gather", "Scatter"};
    const char *fn = names[kind];
    ECCL_TRY(core_comm_check(comm, fn));
    int n = comm->nranks;
    ECCL_TRY(check_common(comm, fn, dtype, count, (size_t)n));
    if (kind != 0)
        ECCL_TRY(check_root(comm, fn, "root", root));
    bool is_root = comm->rank == root;
    bool need_send = kind != 2 || is_root;
    bool need_recv = kind != 1 || is_root;
    if (need_send)
        ECCL_TRY(check_buf(fn, "sendbuff", sendbuff, count));
    if (need_recv)
        ECCL_TRY(check_buf(fn, "recvbuff", recvbuff, count));
    if (kind == 0 && n > 1 && count > 0 && sendbuff == recvbuff) {
        WARN("AlltoAll: sendbuff and recvbuff are the same buffer; in-place AlltoAll is not "
             "supported (as in NCCL)");
        return ecclInvalidArgument;
    }
    if (count == 0)
        return ecclSuccess;
    size_t bytes = count * eccl_dtype_size(dtype);
    const char *s = sendbuff;
    char *r = recvbuff;
    ecclResult_t res = ecclSuccess;
    ecclGroupStart();
    comm->stream = (void *)stream;
    for (int p = 0; p < n && res == ecclSuccess; p++) {
        if (kind == 0) {
            res =
                add_task(comm, ECCL_FUNC_SEND, s + (size_t)p * bytes, NULL, count, dtype, NULL, p);
            if (res == ecclSuccess)
                res = add_task(comm, ECCL_FUNC_RECV, NULL, r + (size_t)p * bytes, count, dtype,
                               NULL, p);
        } else if (kind == 1) {
            if (p == comm->rank)
                res = add_task(comm, ECCL_FUNC_SEND, s, NULL, count, dtype, NULL, root);
            if (is_root && res == ecclSuccess)
                res = add_task(comm, ECCL_FUNC_RECV, NULL, r + (size_t)p * bytes, count, dtype,
                               NULL, p);
        } else {
            if (is_root)
                res = add_task(comm, ECCL_FUNC_SEND, s + (size_t)p * bytes, NULL, count, dtype,
                               NULL, p);
            if (p == comm->rank && res == ecclSuccess)
                res = add_task(comm, ECCL_FUNC_RECV, NULL, r, count, dtype, NULL, root);
        }
    }
    if (res != ecclSuccess)
        core_group_record_error(res);
    else
        eccl_stats_add_bytes(kind == 0   ? ECCL_STATS_ALLTOALL
                             : kind == 1 ? ECCL_STATS_GATHER
                                         : ECCL_STATS_SCATTER,
                             bytes * (size_t)n);
    ecclResult_t end = ecclGroupEnd();
    return res != ecclSuccess ? res : end;
}

ECCL_API ecclResult_t ecclAlltoAll(const void *sendbuff, void *recvbuff, size_t count,
                                   ecclDataType_t datatype, ecclComm_t comm, cudaStream_t stream)
{
    return enqueue_pattern(0, sendbuff, recvbuff, count, datatype, 0, comm, stream);
}

ECCL_API ecclResult_t ecclGather(const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t datatype, int root, ecclComm_t comm,
                                 cudaStream_t stream)
{
    return enqueue_pattern(1, sendbuff, recvbuff, count, datatype, root, comm, stream);
}

ECCL_API ecclResult_t ecclScatter(const void *sendbuff, void *recvbuff, size_t count,
                                  ecclDataType_t datatype, int root, ecclComm_t comm,
                                  cudaStream_t stream)
{
    return enqueue_pattern(2, sendbuff, recvbuff, count, datatype, root, comm, stream);
}

ECCL_API ecclResult_t ecclRedOpCreatePreMulSum(ecclRedOp_t *op, void *scalar,
                                               ecclDataType_t datatype,
                                               ecclScalarResidence_t residence, ecclComm_t comm)
{
    const char *fn = "ecclRedOpCreatePreMulSum";
    ECCL_TRY(core_comm_check(comm, fn));
    ECCL_ARG_CHECK(op != NULL, "%s: op is NULL", fn);
    ECCL_ARG_CHECK(scalar != NULL, "%s: scalar is NULL", fn);
    ECCL_ARG_CHECK((int)datatype >= 0 && (int)datatype < ecclNumTypes, "%s: invalid datatype %d",
                   fn, (int)datatype);
    ECCL_ARG_CHECK(residence == ecclScalarHostImmediate || residence == ecclScalarDevice,
                   "%s: invalid residence %d", fn, (int)residence);
    /* A device-resident scalar is read when each operation runs (after the work queued before
     * it on the stream), as NCCL reads it; an immediate one now. */
    struct eccl_redop rop = {.kind = ECCL_RED_PREMULSUM, .dtype = (uint8_t)datatype};
    if (residence == ecclScalarDevice) {
        rop.scalar_ptr = 1;
        rop.scalar = (uint64_t)(uintptr_t)scalar;
    } else {
        rop.scalar = eccl_redop_scalar_bits(scalar, datatype);
    }
    pthread_mutex_lock(&comm->premulsum_lock);
    int idx = -1;
    for (int i = 0; i < CORE_MAX_PREMULSUM; i++) {
        if (!comm->premulsum[i].used) {
            idx = i;
            break;
        }
    }
    if (idx >= 0) {
        comm->premulsum[idx].used = true;
        comm->premulsum[idx].op = rop;
    }
    pthread_mutex_unlock(&comm->premulsum_lock);
    if (idx < 0) {
        WARN("%s: all %d PreMulSum ops of the communicator are in use; destroy some", fn,
             CORE_MAX_PREMULSUM);
        return ecclInvalidUsage;
    }
    *op = (ecclRedOp_t)(ecclNumOps + idx);
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclRedOpDestroy(ecclRedOp_t op, ecclComm_t comm)
{
    const char *fn = "ecclRedOpDestroy";
    ECCL_TRY(core_comm_check(comm, fn));
    int idx = (int)op - ecclNumOps;
    if ((int)op < ecclNumOps) {
        WARN("%s: op %d is a built-in op", fn, (int)op);
        return ecclInvalidArgument;
    }
    ecclResult_t res = ecclSuccess;
    pthread_mutex_lock(&comm->premulsum_lock);
    if (idx >= CORE_MAX_PREMULSUM || !comm->premulsum[idx].used)
        res = ecclInvalidArgument;
    else
        comm->premulsum[idx].used = false;
    pthread_mutex_unlock(&comm->premulsum_lock);
    if (res != ecclSuccess)
        WARN("%s: op %d is not a live PreMulSum op of this communicator", fn, (int)op);
    return res;
}

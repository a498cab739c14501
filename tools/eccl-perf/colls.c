/*
 * colls.c - the collectives eccl-perf measures: how nccl-tests turns a size in bytes into the
 * counts of each call, its algorithm and bus bandwidth, and the eccl call itself.
 */
#include <string.h>

#include "tools/eccl-perf/perf.h"

/* AllReduce, Broadcast, Reduce, SendRecv: every buffer holds `count` elements. */
static void counts_same(size_t count, int nranks, struct perf_counts *c)
{
    (void)nranks;
    c->send_count = count;
    c->recv_count = count;
    c->param_count = count;
    c->send_inplace_off = 0;
    c->recv_inplace_off = 0;
}

/* AllGather, Gather: the size is the whole receive buffer; each rank sends count/nranks. */
static void counts_gather(size_t count, int nranks, struct perf_counts *c)
{
    size_t per = count / (size_t)nranks;
    c->send_count = per;
    c->recv_count = per * (size_t)nranks;
    c->param_count = per;
    c->send_inplace_off = per;
    c->recv_inplace_off = 0;
}

/* ReduceScatter, Scatter: the size is the whole send buffer; each rank receives count/nranks. */
static void counts_scatter(size_t count, int nranks, struct perf_counts *c)
{
    size_t per = count / (size_t)nranks;
    c->send_count = per * (size_t)nranks;
    c->recv_count = per;
    c->param_count = per;
    c->send_inplace_off = 0;
    c->recv_inplace_off = per;
}

/* AlltoAll: both buffers hold nranks blocks of count/nranks. */
static void counts_alltoall(size_t count, int nranks, struct perf_counts *c)
{
    size_t per = count / (size_t)nranks;
    c->send_count = per * (size_t)nranks;
    c->recv_count = per * (size_t)nranks;
    c->param_count = per;
    c->send_inplace_off = 0;
    c->recv_inplace_off = 0;
}

static double bw_param(size_t param_count, size_t elt_size, int nranks)
{
    (void)nranks;
    return (double)param_count * (double)elt_size;
}

static double bw_param_nranks(size_t param_count, size_t elt_size, int nranks)
{
    return (double)param_count * (double)elt_size * (double)nranks;
}

static double factor_one(int nranks)
{
    (void)nranks;
    return 1.0;
}

static double factor_allreduce(int nranks)
{
    return 2.0 * (double)(nranks - 1) / (double)nranks;
}

static double factor_nm1_n(int nranks)
{
    return (double)(nranks - 1) / (double)nranks;
}

static ecclResult_t run_allreduce(const void *sendbuff, void *recvbuff, size_t count,
                                  ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                  cudaStream_t stream)
{
    (void)root;
    return ecclAllReduce(sendbuff, recvbuff, count, dtype, op, comm, stream);
}

static ecclResult_t run_allgather(const void *sendbuff, void *recvbuff, size_t count,
                                  ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                  cudaStream_t stream)
{
    (void)op;
    (void)root;
    return ecclAllGather(sendbuff, recvbuff, count, dtype, comm, stream);
}

static ecclResult_t run_reducescatter(const void *sendbuff, void *recvbuff, size_t count,
                                      ecclDataType_t dtype, ecclRedOp_t op, int root,
                                      ecclComm_t comm, cudaStream_t stream)
{
    (void)root;
    return ecclReduceScatter(sendbuff, recvbuff, count, dtype, op, comm, stream);
}

static ecclResult_t run_broadcast(const void *sendbuff, void *recvbuff, size_t count,
                                  ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                  cudaStream_t stream)
{
    (void)op;
    return ecclBroadcast(sendbuff, recvbuff, count, dtype, root, comm, stream);
}

static ecclResult_t run_reduce(const void *sendbuff, void *recvbuff, size_t count,
                               ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                               cudaStream_t stream)
{
    return ecclReduce(sendbuff, recvbuff, count, dtype, op, root, comm, stream);
}

static ecclResult_t run_alltoall(const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                 cudaStream_t stream)
{
    (void)op;
    (void)root;
    return ecclAlltoAll(sendbuff, recvbuff, count, dtype, comm, stream);
}

/* Each rank sends to rank + 1 and receives from rank - 1, in one group. */
static ecclResult_t run_sendrecv(const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                 cudaStream_t stream)
{
    (void)op;
    (void)root;
    int nranks, rank;
    ecclResult_t res = ecclCommCount(comm, &nranks);
    if (res != ecclSuccess)
        return res;
    res = ecclCommUserRank(comm, &rank);
    if (res != ecclSuccess)
        return res;
    res = ecclGroupStart();
    if (res != ecclSuccess)
        return res;
    ecclResult_t send_res = ecclSend(sendbuff, count, dtype, (rank + 1) % nranks, comm, stream);
    ecclResult_t recv_res = ecclSuccess;
    if (send_res == ecclSuccess)
        recv_res = ecclRecv(recvbuff, count, dtype, (rank - 1 + nranks) % nranks, comm, stream);
    /* The group is closed whatever happened inside it. */
    res = ecclGroupEnd();
    if (send_res != ecclSuccess)
        return send_res;
    if (recv_res != ecclSuccess)
        return recv_res;
    return res;
}

static ecclResult_t run_gather(const void *sendbuff, void *recvbuff, size_t count,
                               ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                               cudaStream_t stream)
{
    (void)op;
    return ecclGather(sendbuff, recvbuff, count, dtype, root, comm, stream);
}

static ecclResult_t run_scatter(const void *sendbuff, void *recvbuff, size_t count,
                                ecclDataType_t dtype, ecclRedOp_t op, int root, ecclComm_t comm,
                                cudaStream_t stream)
{
    (void)op;
    return ecclScatter(sendbuff, recvbuff, count, dtype, root, comm, stream);
}

/* In-place SendRecv is timed but, as in nccl-tests, not checked: sending from and receiving into
 * one buffer has no defined result. In-place AlltoAll is refused by eccl (as by NCCL), so it is
 * not run. */
static const struct perf_coll colls[PERF_COLL_COUNT] = {
    {PERF_ALLREDUCE, "allreduce", "all_reduce_perf", 1, 0, PERF_INPLACE_CHECKED, counts_same,
     bw_param, factor_allreduce, run_allreduce},
    {PERF_ALLGATHER, "allgather", "all_gather_perf", 0, 0, PERF_INPLACE_CHECKED, counts_gather,
     bw_param_nranks, factor_nm1_n, run_allgather},
    {PERF_REDUCESCATTER, "reducescatter", "reduce_scatter_perf", 1, 0, PERF_INPLACE_CHECKED,
     counts_scatter, bw_param_nranks, factor_nm1_n, run_reducescatter},
    {PERF_BROADCAST, "broadcast", "broadcast_perf", 0, 1, PERF_INPLACE_CHECKED, counts_same,
     bw_param, factor_one, run_broadcast},
    {PERF_REDUCE, "reduce", "reduce_perf", 1, 1, PERF_INPLACE_CHECKED, counts_same, bw_param,
     factor_one, run_reduce},
    {PERF_ALLTOALL, "alltoall", "alltoall_perf", 0, 0, PERF_INPLACE_NONE, counts_alltoall,
     bw_param_nranks, factor_nm1_n, run_alltoall},
    {PERF_SENDRECV, "sendrecv", "sendrecv_perf", 0, 0, PERF_INPLACE_UNCHECKED, counts_same,
     bw_param, factor_one, run_sendrecv},
    {PERF_GATHER, "gather", "gather_perf", 0, 1, PERF_INPLACE_CHECKED, counts_gather,
     bw_param_nranks, factor_nm1_n, run_gather},
    {PERF_SCATTER, "scatter", "scatter_perf", 0, 1, PERF_INPLACE_CHECKED, counts_scatter,
     bw_param_nranks, factor_nm1_n, run_scatter},
};

static const char *const api_names[PERF_COLL_COUNT] = {
    "ecclAllReduce", "ecclAllGather",     "ecclReduceScatter", "ecclBroadcast", "ecclReduce",
    "ecclAlltoAll",  "ecclSend/ecclRecv", "ecclGather",        "ecclScatter",
};

const struct perf_coll *perf_coll_get(enum perf_coll_id id)
{
    if ((int)id < 0 || id >= PERF_COLL_COUNT)
        return NULL;
    return &colls[id];
}

const char *perf_coll_api_name(const struct perf_coll *coll)
{
    return api_names[coll->id];
}

const struct perf_coll *perf_coll_by_name(const char *name)
{
    /* Also accepted: nccl-tests' spellings with underscores (all_reduce) and the API's
     * (AllReduce, alltoall), case-insensitively. */
    char plain[32];
    size_t n = 0;
    for (const char *s = name; *s && n + 1 < sizeof(plain); s++) {
        if (*s == '_' || *s == '-')
            continue;
        plain[n++] = (char)((*s >= 'A' && *s <= 'Z') ? *s - 'A' + 'a' : *s);
    }
    plain[n] = '\0';
    if (strcmp(plain, "bcast") == 0)
        return &colls[PERF_BROADCAST];
    for (int i = 0; i < PERF_COLL_COUNT; i++) {
        if (strcmp(plain, colls[i].name) == 0)
            return &colls[i];
    }
    return NULL;
}

const struct perf_coll *perf_coll_by_nccl_name(const char *name)
{
    for (int i = 0; i < PERF_COLL_COUNT; i++) {
        if (strcmp(name, colls[i].nccl_name) == 0)
            return &colls[i];
    }
    return NULL;
}

/*
 * test_dev_colls.c - collectives on CUDA communicators, checked against the host executor.
 *
 * Every rank is a process on the same GPU (eccl allows several ranks per GPU). Each rank makes a
 * CUDA communicator and a host communicator with the same ranks, runs the same operation on
 * both with the same inputs (device buffers for one, host buffers for the other) and compares
 * the outputs byte for byte (any NaN matching any NaN): the kernels run the host executor's
 * algorithms with the same chunking and order, so the results must be identical. Covered: every
 * collective, data type and reduction (PreMulSum included, its scalar on the device in the
 * in-place cases and in three graphs whose replays each change it), sizes 0, 1, odd and large,
 * in place and out of place, captured into CUDA graphs and replayed, with 1, 2 and 4 ranks
 * (ECCL_TEST_GPU_RANKS="1 2 4 8" to change); host buffers on the CUDA communicator, and a
 * device-resident scalar with them refused. Then 2 ranks again over the network transport
 * (ECCL_SHM_DISABLE=1: the proxy, host staging buffers, loopback TCP).
 * ECCL_TEST_GPU_BIG=1 adds a 64 MiB + 4 B AllReduce; ECCL_TEST_GPU_QUICK=1 keeps three types and
 * the small sizes (for compute-sanitizer); ECCL_TEST_GPU_NCHANNELS sets both communicators'
 * channels (default 16, the CUDA default); ECCL_TEST_GPU_SPREAD=1 puts rank r on GPU r % (GPUs
 * present) instead of every rank on GPU 0.
 *
 * Exits 77 (skip) where no CUDA device is present. CUDA is never touched in the parent process
 * (a forked child could not use it then): a first child counts the devices.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "eccl.h"
#include "kernels/reduce.h"
#include "kernels/reduce_dev.h"
#include "tests/support/gpu.h"
#include "tests/support/mp.h"

#ifdef ECCL_HAVE_CUDA

enum coll {
    C_ALLREDUCE,
    C_REDUCESCATTER,
    C_REDUCE,
    C_ALLGATHER,
    C_BROADCAST,
    C_SENDRECV,
    C_ALLTOALL,
    C_GATHER,
    C_SCATTER,
    C_COUNT
};

static const char *const coll_names[C_COUNT] = {"AllReduce", "ReduceScatter", "Reduce",
                                                "AllGather", "Broadcast",     "SendRecv",
                                                "AlltoAll",  "Gather",        "Scatter"};

struct shared {
    struct mp_barrier barrier;
    ecclUniqueId host_id;
    _Atomic int checks;
};

static bool big;
static bool quick; /* ECCL_TEST_GPU_QUICK: three types, small sizes (for compute-sanitizer) */

/* Elements of the send and receive buffers for count `n` per rank. */
static void buf_sizes(enum coll c, size_t n, int nranks, size_t *ns, size_t *nr)
{
    size_t all = n * (size_t)nranks;
    switch (c) {
    case C_REDUCESCATTER:
        *ns = all, *nr = n;
        break;
    case C_ALLGATHER:
    case C_GATHER:
        *ns = n, *nr = all;
        break;
    case C_ALLTOALL:
        *ns = all, *nr = all;
        break;
    case C_SCATTER:
        *ns = all, *nr = n;
        break;
    default:
        *ns = n, *nr = n;
        break;
    }
}

static void fill(void *buf, size_t n, int dtype, uint64_t seed, int op)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (eccl_dtype_is_float(dtype)) {
            /* Products stay finite: factors near 1 for PROD. */
            double v = op == ecclProd ? 0.5 + (double)(x % 1000) / 1000.0
                                      : ((double)(x % 2001) - 1000.0) / 64.0;
            eccl_dtype_store(buf, i, dtype, v);
        } else {
            memcpy((char *)buf + i * eccl_dtype_size(dtype), &x, eccl_dtype_size(dtype));
        }
    }
}

/* Byte-equal, or both NaN. Returns the first differing element, or -1. */
static long compare(const void *a, const void *b, size_t n, int dtype)
{
    size_t ts = eccl_dtype_size(dtype);
    for (size_t i = 0; i < n; i++) {
        if (memcmp((const char *)a + i * ts, (const char *)b + i * ts, ts) == 0)
            continue;
        if (eccl_dtype_is_float(dtype) && isnan(eccl_dtype_load(a, i, dtype)) &&
            isnan(eccl_dtype_load(b, i, dtype)))
            continue;
        return (long)i;
    }
    return -1;
}

static ecclResult_t run_coll(enum coll c, const void *s, void *r, size_t n, int dtype, int op,
                             ecclComm_t comm, cudaStream_t st)
{
    int nranks, rank;
    ecclCommCount(comm, &nranks);
    ecclCommUserRank(comm, &rank);
    size_t ts = eccl_dtype_size(dtype);
    switch (c) {
    case C_ALLREDUCE:
        return ecclAllReduce(s, r, n, dtype, op, comm, st);
    case C_REDUCESCATTER:
        return ecclReduceScatter(s, r, n, dtype, op, comm, st);
    case C_REDUCE:
        return ecclReduce(s, r, n, dtype, op, nranks - 1, comm, st);
    case C_ALLGATHER:
        return ecclAllGather(s, r, n, dtype, comm, st);
    case C_BROADCAST:
        return ecclBroadcast(s, r, n, dtype, nranks / 2, comm, st);
    case C_SENDRECV: {
        ecclGroupStart();
        ecclSend(s, n, dtype, (rank + 1) % nranks, comm, st);
        ecclRecv(r, n, dtype, (rank + nranks - 1) % nranks, comm, st);
        (void)ts;
        return ecclGroupEnd();
    }
    case C_ALLTOALL:
        return ecclAlltoAll(s, r, n, dtype, comm, st);
    case C_GATHER:
        return ecclGather(s, r, n, dtype, 0, comm, st);
    case C_SCATTER:
        return ecclScatter(s, r, n, dtype, nranks - 1, comm, st);
    default:
        return ecclInternalError;
    }
}

struct dev_case {
    enum coll c;
    int dtype;
    int op; /* ecclNumOps: a PreMulSum made for the case */
    size_t n;
    bool inplace;
    int graph; /* > 0: captured once into a CUDA graph, replayed this many times on new inputs */
    bool dev_scalar; /* PreMulSum: the GPU's op reads its scalar from device memory
                        (ecclScalarDevice), which changes before each graph replay */
};

static int check_host(int rank, ecclComm_t hcomm, ecclRedOp_t hop, const struct dev_case *k,
                      char *hsend, char *hrecv, char *hr, char *got, void *dr, size_t cmp_bytes);

static int one_case(int rank, int nranks, ecclComm_t dcomm, ecclComm_t hcomm, cudaStream_t st,
                    const struct dev_case *k)
{
    size_t ts = eccl_dtype_size(k->dtype), ns, nr;
    buf_sizes(k->c, k->n, nranks, &ns, &nr);
    size_t sb = ns * ts, rb = nr * ts;
    size_t alloc = (sb > rb ? sb : rb) + 64;
    char *hs = calloc(1, alloc), *hr = calloc(1, alloc), *got = calloc(1, alloc);
    void *ds = NULL, *dr = NULL;
    int bad = 1;
    ecclRedOp_t dop = k->op, hop = k->op;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    void *dscalar = NULL;
    if (!hs || !hr || !got)
        goto out;
    if (k->op == ecclNumOps) {
        double scalar = 0.5 + rank; /* per rank: PreMulSum's scalar is local */
        char sc[8] = {0};
        eccl_dtype_store(sc, 0, k->dtype, scalar);
        ecclResult_t dr_ = ecclSuccess;
        if (k->dev_scalar) {
            /* What the device holds at creation must not count: it changes before the call. */
            /* Both writes on the case's stream: a cudaMemcpy on the legacy stream could land
             * after the second (st does not wait for it). */
            char zero[8] = {0};
            if (cudaMalloc(&dscalar, 8) != cudaSuccess || gpu_upload(dscalar, zero, 8, st) != 0) {
                printf("rank %d: cudaMalloc of the scalar failed\n", rank);
                goto out;
            }
            dr_ = ecclRedOpCreatePreMulSum(&dop, dscalar, k->dtype, ecclScalarDevice, dcomm);
            if (dr_ == ecclSuccess && gpu_upload(dscalar, sc, 8, st) != 0)
                goto out;
        } else {
            dr_ = ecclRedOpCreatePreMulSum(&dop, sc, k->dtype, ecclScalarHostImmediate, dcomm);
        }
        if (dr_ != ecclSuccess ||
            ecclRedOpCreatePreMulSum(&hop, sc, k->dtype, ecclScalarHostImmediate, hcomm) != 0) {
            printf("rank %d: PreMulSum: %s\n", rank, ecclGetLastError(NULL));
            goto out;
        }
    }
    fill(hs, ns, k->dtype, (uint64_t)rank * 7919 + k->n + (uint64_t)k->c * 131, k->op);
    fill(hr, nr, k->dtype, 12345 + (uint64_t)rank, 0); /* what was there before */
    if (cudaMalloc(&ds, alloc) != cudaSuccess || cudaMalloc(&dr, alloc) != cudaSuccess) {
        printf("rank %d: cudaMalloc of %zu bytes failed\n", rank, alloc);
        goto out;
    }
    /* In place: NCCL's layouts (AllGather's input is the rank's block of the output,
     * ReduceScatter's output the rank's block of the input, the others one buffer). */
    char *hsend = hs, *hrecv = hr;
    char *dsend = ds, *drecv = dr;
    size_t cmp_bytes = rb;
    if (k->inplace) {
        if (k->c == C_ALLGATHER) {
            memcpy(hr + (size_t)rank * sb, hs, sb);
            hsend = hr + (size_t)rank * sb, dsend = (char *)dr + (size_t)rank * sb;
        } else if (k->c == C_REDUCESCATTER) {
            memcpy(hr, hs, sb);
            hsend = hr, hrecv = hr + (size_t)rank * rb;
            dsend = dr, drecv = (char *)dr + (size_t)rank * rb;
            cmp_bytes = sb;
        } else {
            memcpy(hr, hs, sb);
            hsend = hr, dsend = dr;
        }
    }
    if (gpu_upload(ds, hs, alloc, st) != 0 || gpu_upload(dr, hr, alloc, st) != 0) {
        printf("rank %d: cudaMemcpy to the device failed\n", rank);
        goto out;
    }
    ecclResult_t r = ecclSuccess;
    if (k->graph > 0) {
        if (cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal) != cudaSuccess)
            goto out;
        r = run_coll(k->c, dsend, drecv, k->n, k->dtype, dop, dcomm, st);
        cudaError_t e = cudaStreamEndCapture(st, &graph);
        if (r != ecclSuccess || e != cudaSuccess ||
            cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
            printf("rank %d: capture of %s: %s / %s\n", rank, coll_names[k->c],
                   ecclGetErrorString(r), cudaGetErrorString(e));
            goto out;
        }
    }
    for (int replay = 0; replay < (k->graph > 0 ? k->graph : 1); replay++) {
        if (replay > 0) {
            /* New inputs for the same graph. */
            fill(hs, ns, k->dtype, (uint64_t)rank * 104729 + (uint64_t)replay, k->op);
            if (gpu_upload(ds, hs, sb, st) != 0)
                goto out;
            if (dscalar) {
                /* And a new scalar, which the replay must read. */
                char sc[8] = {0};
                eccl_dtype_store(sc, 0, k->dtype, 0.5 + rank + replay);
                ecclRedOpDestroy(hop, hcomm);
                hop = ecclNumOps;
                if (gpu_upload(dscalar, sc, 8, st) != 0 ||
                    ecclRedOpCreatePreMulSum(&hop, sc, k->dtype, ecclScalarHostImmediate, hcomm) !=
                        ecclSuccess)
                    goto out;
            }
        }
        if (k->graph > 0)
            r = cudaGraphLaunch(exec, st) == cudaSuccess ? ecclSuccess : ecclUnhandledCudaError;
        else
            r = run_coll(k->c, dsend, drecv, k->n, k->dtype, dop, dcomm, st);
        if (r == ecclSuccess)
            r = gpu_stream_wait(dcomm, st, 120000);
        if (r == ecclSuccess && dscalar) {
            /* The test's own premise: the scalar the call read is the one meant. */
            char back[8] = {0}, want[8] = {0};
            eccl_dtype_store(want, 0, k->dtype, 0.5 + rank + replay);
            if (cudaMemcpy(back, dscalar, 8, cudaMemcpyDeviceToHost) != cudaSuccess ||
                memcmp(back, want, eccl_dtype_size(k->dtype)) != 0) {
                printf("rank %d: the device scalar reads %g, want %g\n", rank,
                       eccl_dtype_load(back, 0, k->dtype), eccl_dtype_load(want, 0, k->dtype));
                goto out;
            }
        }
        if (r != ecclSuccess) {
            printf("rank %d: %s on the GPU%s: %s (%s)\n", rank, coll_names[k->c],
                   k->graph ? " (graph)" : "", ecclGetErrorString(r), ecclGetLastError(dcomm));
            goto out;
        }
        if (check_host(rank, hcomm, hop, k, hsend, hrecv, hr, got, dr, cmp_bytes) != 0)
            goto out;
    }
    bad = 0;
out:
    if (exec)
        cudaGraphExecDestroy(exec);
    if (graph)
        cudaGraphDestroy(graph);
    if (k->op == ecclNumOps) {
        if (dop != ecclNumOps)
            ecclRedOpDestroy(dop, dcomm);
        if (hop != ecclNumOps)
            ecclRedOpDestroy(hop, hcomm);
    }
    cudaFree(ds);
    cudaFree(dr);
    cudaFree(dscalar);
    free(hs);
    free(hr);
    free(got);
    return bad;
}

/* Runs the case on the host communicator and compares the GPU's output with it. */
static int check_host(int rank, ecclComm_t hcomm, ecclRedOp_t hop, const struct dev_case *k,
                      char *hsend, char *hrecv, char *hr, char *got, void *dr, size_t cmp_bytes)
{
    size_t ts = eccl_dtype_size(k->dtype);
    ecclResult_t r = run_coll(k->c, hsend, hrecv, k->n, k->dtype, hop, hcomm, NULL);
    if (r != ecclSuccess) {
        printf("rank %d: %s on the host: %s\n", rank, coll_names[k->c], ecclGetLastError(hcomm));
        return 1;
    }
    /* The whole receive buffer must match (what an operation must not touch included). */
    if (cudaMemcpy(got, dr, cmp_bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        printf("rank %d: cudaMemcpy from the device failed\n", rank);
        return 1;
    }
    long at = compare(got, hr, cmp_bytes / ts, k->dtype);
    if (at >= 0) {
        printf("rank %d: %s %s op %d n %zu%s: element %ld differs: GPU %g, host %g\n", rank,
               coll_names[k->c], eccl_dtype_name(k->dtype), k->op, k->n,
               k->inplace ? " in place" : "", at, eccl_dtype_load(got, (size_t)at, k->dtype),
               eccl_dtype_load(hr, (size_t)at, k->dtype));
        return 1;
    }
    return 0;
}

/* Host buffers on the CUDA communicator (what the elastic layer does for its own exchanges):
 * run by the host executor after the kernels, interleaved with device work. */
static int host_buffers_case(int rank, int nranks, ecclComm_t dcomm, cudaStream_t st)
{
    enum { N = 40000 };
    int64_t *a = malloc(N * sizeof(int64_t)), *b = malloc(N * sizeof(int64_t));
    int64_t *d = NULL;
    int bad = a == NULL || b == NULL || cudaMalloc((void **)&d, N * sizeof(int64_t)) != cudaSuccess;
    for (int round = 0; round < 3 && !bad; round++) {
        for (int i = 0; i < N; i++)
            a[i] = rank * 1000 + i + round;
        /* Device work queued first, then host work: the host plan waits for the kernels. */
        bad = gpu_upload(d, a, N * sizeof(int64_t), st) != 0 ||
              ecclAllReduce(d, d, N, ecclInt64, ecclSum, dcomm, st) != ecclSuccess ||
              ecclAllReduce(a, b, N, ecclInt64, ecclSum, dcomm, st) != ecclSuccess ||
              gpu_stream_wait(dcomm, st, 60000) != ecclSuccess;
        if (bad) {
            printf("rank %d: host buffers on a CUDA communicator: %s\n", rank,
                   ecclGetLastError(dcomm));
            break;
        }
        for (int i = 0; i < N && !bad; i++) {
            int64_t want = 1000LL * nranks * (nranks - 1) / 2 + (int64_t)nranks * (i + round);
            if (b[i] != want) {
                printf("rank %d: host-buffer AllReduce element %d: %lld, want %lld\n", rank, i,
                       (long long)b[i], (long long)want);
                bad = 1;
            }
        }
        if (!bad && cudaMemcpy(a, d, N * sizeof(int64_t), cudaMemcpyDeviceToHost) == cudaSuccess &&
            memcmp(a, b, N * sizeof(int64_t)) != 0) {
            printf("rank %d: device and host AllReduce differ\n", rank);
            bad = 1;
        }
    }
    /* A PreMulSum scalar in device memory with host buffers: refused by every rank at once
     * (the host executor cannot read it), and the communicator stays usable. */
    void *dsc = NULL;
    if (!bad) {
        ecclRedOp_t pop;
        bad =
            cudaMalloc(&dsc, sizeof(int64_t)) != cudaSuccess ||
            ecclRedOpCreatePreMulSum(&pop, dsc, ecclInt64, ecclScalarDevice, dcomm) != ecclSuccess;
        if (!bad) {
            ecclResult_t r = ecclAllReduce(a, b, N, ecclInt64, pop, dcomm, st);
            if (r != ecclInvalidUsage) {
                printf("rank %d: a device scalar with host buffers gave %s, want "
                       "ecclInvalidUsage\n",
                       rank, ecclGetErrorString(r));
                bad = 1;
            }
            ecclRedOpDestroy(pop, dcomm);
        }
        if (!bad && (ecclAllReduce(a, b, N, ecclInt64, ecclSum, dcomm, st) != ecclSuccess ||
                     gpu_stream_wait(dcomm, st, 60000) != ecclSuccess)) {
            printf("rank %d: the communicator after the refused call: %s\n", rank,
                   ecclGetLastError(dcomm));
            bad = 1;
        }
    }
    cudaFree(dsc);
    cudaFree(d);
    free(a);
    free(b);
    return bad;
}

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shared *sh = arg;
    /* ECCL_TEST_GPU_SPREAD=1: rank r on GPU r % (the GPUs present), else every rank on GPU 0. */
    int want = 0, ngpu = 0;
    const char *spread = getenv("ECCL_TEST_GPU_SPREAD");
    if (spread && strcmp(spread, "0") != 0 && cudaGetDeviceCount(&ngpu) == cudaSuccess && ngpu > 0)
        want = rank % ngpu;
    if (cudaSetDevice(want) != cudaSuccess) {
        printf("rank %d: cudaSetDevice(%d) failed\n", rank, want);
        return 1;
    }
    /* Both communicators get the same channels (the chunking, hence the order of a float sum,
     * depends on them): the CUDA default, unless ECCL_TEST_GPU_NCHANNELS says otherwise. */
    const char *nch_env = getenv("ECCL_TEST_GPU_NCHANNELS");
    int nch = nch_env ? atoi(nch_env) : 16;
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    cfg.nChannels = nch;
    ecclComm_t dcomm = NULL, hcomm = NULL;
    if (ecclCommInitRankConfig(&dcomm, nranks, *id, rank, &cfg) != ecclSuccess) {
        printf("rank %d: CUDA communicator: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    int dev = -1;
    if (ecclCommCuDevice(dcomm, &dev) != ecclSuccess || dev != want) {
        printf("rank %d: ecclCommCuDevice says %d\n", rank, dev);
        return 1;
    }
    if (rank == 0 && ecclGetUniqueId(&sh->host_id) != ecclSuccess)
        return 1;
    if (mp_barrier_wait(&sh->barrier, 30000) != 0)
        return 1;
    ecclConfig_t hcfg = ECCL_CONFIG_INITIALIZER;
    hcfg.deviceKind = ECCL_DEVICE_HOST;
    hcfg.nChannels = nch;
    if (ecclCommInitRankConfig(&hcomm, nranks, sh->host_id, rank, &hcfg) != ecclSuccess) {
        printf("rank %d: host communicator: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    cudaStream_t st;
    if (cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess)
        return 1;
    static const size_t sizes[] = {0, 1, 1001, (1u << 18) + 7};
    int bad = 0, checks = 0;
    for (int c = 0; c < C_COUNT && !bad; c++) {
        bool reduces = c == C_ALLREDUCE || c == C_REDUCESCATTER || c == C_REDUCE;
        for (int dt = 0; dt < ecclNumTypes && !bad; dt++) {
            if (quick && dt != ecclInt8 && dt != ecclFloat32 && dt != ecclBfloat16)
                continue;
            if (!reduces && dt != ecclInt8 && dt != ecclFloat16 && dt != ecclFloat32 &&
                dt != ecclFloat64)
                continue;
            int nops = reduces ? ecclNumOps + 1 : 1;
            for (int op = 0; op < nops && !bad; op++) {
                for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]) && !bad; s++) {
                    /* Large sizes for a few types only: the host side runs them too. */
                    if (s == 3 && quick)
                        continue;
                    if (s == 3 && dt != ecclFloat32 && dt != ecclBfloat16 && dt != ecclInt8)
                        continue;
                    for (int inplace = 0; inplace < 2 && !bad; inplace++) {
                        if (inplace &&
                            (c == C_SENDRECV || c == C_ALLTOALL || c == C_GATHER || c == C_SCATTER))
                            continue;
                        /* In place, a PreMulSum's scalar is on the device. */
                        struct dev_case k = {(enum coll)c,
                                             dt,
                                             op,
                                             sizes[s],
                                             inplace,
                                             0,
                                             op == ecclNumOps && inplace};
                        bad = one_case(rank, nranks, dcomm, hcomm, st, &k);
                        checks++;
                    }
                }
            }
        }
    }
    /* Captured into CUDA graphs and replayed on new inputs. */
    static const struct dev_case graphs[] = {
        {C_ALLREDUCE, ecclFloat32, ecclSum, 1001, false, 5, false},
        {C_ALLREDUCE, ecclBfloat16, ecclMax, (1u << 18) + 7, false, 3, false},
        {C_REDUCESCATTER, ecclInt32, ecclSum, 4099, false, 3, false},
        {C_ALLGATHER, ecclInt8, ecclSum, 70001, false, 3, false},
        {C_SENDRECV, ecclFloat64, ecclSum, 9999, false, 3, false},
        {C_ALLTOALL, ecclFloat32, ecclSum, 1000, false, 3, false},
        {C_ALLREDUCE, ecclFloat32, ecclNumOps, 1001, false, 4, true},
        {C_REDUCESCATTER, ecclBfloat16, ecclNumOps, 4099, false, 3, true},
        {C_REDUCE, ecclInt32, ecclNumOps, 777, false, 3, true},
    };
    for (size_t g = 0; g < sizeof(graphs) / sizeof(graphs[0]) && !bad; g++) {
        bad = one_case(rank, nranks, dcomm, hcomm, st, &graphs[g]);
        checks++;
    }
    if (!bad) {
        bad = host_buffers_case(rank, nranks, dcomm, st);
        checks++;
    }
    if (!bad && big) {
        struct dev_case k = {C_ALLREDUCE, ecclFloat32, ecclSum, (64u << 20) / 4 + 1,
                             false,       0,           false};
        bad = one_case(rank, nranks, dcomm, hcomm, st, &k);
        checks++;
    }
    if (rank == 0)
        atomic_store(&sh->checks, checks);
    cudaStreamDestroy(st);
    if (ecclCommDestroy(hcomm) != ecclSuccess)
        bad = 1;
    if (ecclCommDestroy(dcomm) != ecclSuccess) {
        printf("rank %d: destroy of the CUDA communicator: %s\n", rank, ecclGetLastError(NULL));
        bad = 1;
    }
    return bad;
}

static void run_ranks(int nranks)
{
    struct shared *sh = mp_shm_alloc(sizeof(*sh));
    assert_non_null(sh);
    mp_barrier_init(&sh->barrier, nranks);
    double t0 = mp_now_ms();
    int rc = mp_run(nranks, rank_main, sh, 900000);
    printf("%d rank(s) on one GPU: %d cases per rank against the host executor, %.1f s\n", nranks,
           atomic_load(&sh->checks), (mp_now_ms() - t0) / 1000);
    mp_shm_free(sh, sizeof(*sh));
    assert_int_equal(rc, 0);
}

static void test_dev_colls(void **state)
{
    (void)state;
    const char *list = getenv("ECCL_TEST_GPU_RANKS");
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", list ? list : "1 2 4");
    for (char *save = NULL, *tok = strtok_r(buf, " ,", &save); tok;
         tok = strtok_r(NULL, " ,", &save)) {
        int n = atoi(tok);
        if (n >= 1 && n <= MP_MAX_RANKS)
            run_ranks(n);
    }
}

/* The same with the ranks' connectors on the network transport (ECCL_SHM_DISABLE=1): the proxy
 * moves the kernels' steps through host staging buffers over loopback TCP. */
static void test_dev_colls_net(void **state)
{
    (void)state;
    setenv("ECCL_SHM_DISABLE", "1", 1);
    run_ranks(2);
    unsetenv("ECCL_SHM_DISABLE");
}

/* Each protocol alone at every size (ECCL_PROTO): LL128 with 2 ranks on the whole set and the
 * 64 MiB AllReduce (several slot rounds per channel), with 4 on the reduced set (the 4-rank
 * tree AllReduces of up to 64 KiB go Simple: the planner never pairs LL128 with the tree);
 * Simple with 2 on the reduced set (by default the sizes above go LL and LL128). */
static void test_dev_colls_protos(void **state)
{
    (void)state;
    bool was_quick = quick, was_big = big;
    setenv("ECCL_PROTO", "LL128", 1);
    big = !quick; /* 64 MiB under compute-sanitizer (QUICK) takes minutes */
    run_ranks(2);
    big = was_big;
    quick = true;
    run_ranks(4);
    setenv("ECCL_PROTO", "Simple", 1);
    run_ranks(2);
    unsetenv("ECCL_PROTO");
    quick = was_quick;
}

/* Ranks that make different calls: rank 0 an AllReduce of count0 floats, rank 1 one of count1,
 * so that each side's protocol differs (LL, LL128, Simple). Both calls must fail well before the
 * watchdog (set far away here), and some rank must say which protocols met: a Simple receiver
 * sees the LL or LL128 flag in the size word; an LL or LL128 receiver that waits long for lines
 * looks at the size word of a step already posted. LL and LL128 senders write their tail late
 * (kernels/dev_coll.cuh, tails_defer): this also checks that a sender waiting for lines that
 * never come writes it. */
struct mismatch {
    size_t count0, count1;
    const char *env, *value; /* set on every rank before init (NULL: none) */
    const char *want[2];     /* what some rank's error text names: both substrings */
    char text[2][256];       /* each rank's error text (shared) */
};

static int mismatch_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct mismatch *m = arg;
    if (cudaSetDevice(0) != cudaSuccess)
        return 1;
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    cfg.timeoutMs = 120000;
    ecclComm_t comm = NULL;
    if (ecclCommInitRankConfig(&comm, nranks, *id, rank, &cfg) != ecclSuccess) {
        printf("rank %d: CUDA communicator: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    size_t count = rank == 0 ? m->count0 : m->count1;
    size_t most = m->count0 > m->count1 ? m->count0 : m->count1;
    float *buf = NULL;
    cudaStream_t st = NULL;
    int bad = cudaMalloc((void **)&buf, most * sizeof(float)) != cudaSuccess ||
              cudaMemset(buf, 0, most * sizeof(float)) != cudaSuccess ||
              cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess;
    if (!bad) {
        double t0 = mp_now_ms();
        ecclResult_t r = ecclAllReduce(buf, buf, count, ecclFloat32, ecclSum, comm, st);
        if (r == ecclSuccess)
            r = gpu_stream_wait(comm, st, 60000);
        double ms = mp_now_ms() - t0;
        snprintf(m->text[rank], sizeof(m->text[rank]), "%s", ecclGetLastError(comm));
        printf("rank %d: AllReduce of %zu floats (the other rank: %zu): %s after %.0f ms: %s\n",
               rank, count, rank == 0 ? m->count1 : m->count0, ecclGetErrorString(r), ms,
               m->text[rank]);
        bad = r == ecclSuccess || ms > 20000;
    }
    ecclCommAbort(comm);
    if (st)
        cudaStreamDestroy(st);
    cudaFree(buf);
    return bad;
}

static void run_mismatch(size_t count0, size_t count1, const char *env, const char *value,
                         const char *want0, const char *want1)
{
    struct mismatch *m = mp_shm_alloc(sizeof(*m));
    assert_non_null(m);
    *m = (struct mismatch){count0, count1, env, value, {want0, want1}, {"", ""}};
    if (env)
        setenv(env, value, 1);
    int rc = mp_run(2, mismatch_main, m, 120000);
    if (env)
        unsetenv(env);
    bool named = false;
    for (int r = 0; r < 2; r++)
        named |= strstr(m->text[r], want0) != NULL && strstr(m->text[r], want1) != NULL;
    if (!named)
        printf("no rank's error names \"%s\" and \"%s\"\n", want0, want1);
    mp_shm_free(m, sizeof(*m));
    assert_int_equal(rc, 0);
    assert_true(named);
}

static void test_dev_mismatch(void **state)
{
    (void)state;
    if (quick) /* under compute-sanitizer a wait of 16384 polls takes seconds: no bound holds */
        skip();
    /* 4000 bytes (LL) against 4 MiB (LL128). */
    run_mismatch(1000, 1 << 20, NULL, NULL, " in LL w", " in LL128 ");
    /* Without LL128: 4000 bytes (LL) against 4 MiB (Simple). */
    run_mismatch(1000, 1 << 20, "ECCL_PROTO", "^LL128", " in LL w", " in Simple ");
    /* LL128 up to 8 MiB: 4 MiB (LL128) against 16 MiB (Simple). */
    run_mismatch(1 << 20, 4 << 20, "ECCL_LL128_THRESHOLD", "8388608", " in LL128 ", " in Simple ");
}

#endif /* ECCL_HAVE_CUDA */

int main(void)
{
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    /* The reference is the host executor's ring and tree, which the kernels follow step for
     * step: not the flat path, which reduces in rank order (other bits for float sums of more
     * than 2 ranks). */
    setenv("ECCL_FLAT_MAX_BYTES", "0", 1);
    if (!gpu_present()) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
#ifdef ECCL_HAVE_CUDA
    big = getenv("ECCL_TEST_GPU_BIG") != NULL && strcmp(getenv("ECCL_TEST_GPU_BIG"), "0") != 0;
    quick =
        getenv("ECCL_TEST_GPU_QUICK") != NULL && strcmp(getenv("ECCL_TEST_GPU_QUICK"), "0") != 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev_colls), cmocka_unit_test(test_dev_colls_net),
        cmocka_unit_test(test_dev_colls_protos), cmocka_unit_test(test_dev_mismatch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 77;
#endif
}

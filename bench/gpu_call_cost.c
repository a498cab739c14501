/*
 * gpu_call_cost.c - the host-side cost of one collective call (enqueue, plan, launch): an
 * AllReduce of 8 B (2 floats, sum) on a 1-rank CUDA communicator, eccl against NCCL in the same
 * process, on the same GPU, in the same run.
 *
 * eccl is linked in statically (libeccl.a); NCCL is loaded with dlopen from the path given with
 * --nccl (bench/gpu_call_cost.sh finds the one of PyTorch's nvidia-nccl wheel), or as
 * libnccl.so.2 through the loader's search path, and its functions are looked up with dlsym:
 * no NCCL header is needed to build this. Measured, per library, on its own stream and buffers:
 *
 *  - one call on an idle stream: the host time of the call, and of the call plus the wait;
 *  - N calls back to back (out of place, in place, and in groups of 100): the host time per
 *    call until the last call returns, and per call until the stream has finished;
 *  - a CUDA graph of 100 AllReduces, captured on a stream: capture + instantiate time; the host
 *    time of one launch on an idle stream (20 launches, each waited for), per AllReduce; and
 *    N / 100 replays back to back, per AllReduce, to the end of the stream.
 *
 * Each figure is the median of R repetitions (default 5), eccl and NCCL interleaved. Every
 * result is checked once (the sum over one rank is the input). A library whose capture fails
 * (a call refused under capture, or an invalidated capture) gets "not supported" in the graph
 * rows, with the reason. Every wait for a stream has a deadline.
 *
 *   build/bench/gpu_call_cost [--nccl /path/libnccl.so.2] [-n calls] [-r reps] [-d device]
 *                             [-m global|thread|relaxed]
 *
 * Prints a markdown table with the GPU's name and the ratios eccl/NCCL. Exits 77 ("SKIP: no
 * GPU") where no CUDA device is usable or in a build without CUDA; 0 when both libraries were
 * measured, 2 when NCCL could not be loaded (eccl's figures are printed), 1 on a failure.
 */
#include <stdio.h>
#include <stdlib.h>

#include "eccl.h"

#ifdef ECCL_HAVE_CUDA

#include <dlfcn.h>
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "common/time.h"

#define CC_COUNT         2 /* floats per AllReduce: 8 bytes */
#define CC_GRAPH_OPS     100
#define CC_GROUP_OPS     100
#define CC_SINGLE_CALLS  1000 /* at most, for the idle-stream measures */
#define CC_WARMUP        1000
#define CC_WAIT_MS       30000
#define CC_MAX_REPS      101
#define CC_SPIN_POLLS    2000
#define CC_IDLE_LAUNCHES 20 /* graph launches timed one at a time on an idle stream */

/* NCCL's ABI, as documented in its nccl.h (2.x): results and enums are ints, ncclUniqueId is
 * 128 bytes passed by value, ncclComm_t is a pointer. ncclFloat32 is 7 and ncclSum 0. */
#define NCCL_FLOAT32 7
#define NCCL_SUM     0
struct nccl_unique_id {
    char internal[128];
};
typedef int (*nccl_get_unique_id_fn)(struct nccl_unique_id *id);
typedef int (*nccl_comm_init_rank_fn)(void **comm, int nranks, struct nccl_unique_id id, int rank);
typedef int (*nccl_all_reduce_fn)(const void *sendbuff, void *recvbuff, size_t count, int dtype,
                                  int op, void *comm, cudaStream_t stream);
typedef int (*nccl_comm_destroy_fn)(void *comm);
typedef int (*nccl_get_version_fn)(int *version);
typedef int (*nccl_group_fn)(void);
typedef const char *(*nccl_get_error_string_fn)(int result);
typedef const char *(*nccl_get_last_error_fn)(void *comm);
typedef int (*nccl_comm_get_async_error_fn)(void *comm, int *async_error);

struct nccl_api {
    void *handle;
    nccl_get_unique_id_fn get_unique_id;
    nccl_comm_init_rank_fn comm_init_rank;
    nccl_all_reduce_fn all_reduce;
    nccl_comm_destroy_fn comm_destroy;
    nccl_get_version_fn get_version;
    nccl_group_fn group_start;
    nccl_group_fn group_end;
    nccl_get_error_string_fn get_error_string;    /* optional */
    nccl_get_last_error_fn get_last_error;        /* optional */
    nccl_comm_get_async_error_fn get_async_error; /* optional */
};

static struct nccl_api nccl;

enum measure {
    M_SINGLE_HOST,
    M_SINGLE_SYNC,
    M_B2B_HOST,
    M_B2B_END,
    M_INPLACE_HOST,
    M_INPLACE_END,
    M_GROUP_HOST,
    M_GROUP_END,
    M_GRAPH_BUILD,
    M_GRAPH_HOST,
    M_GRAPH_END,
    M_COUNT,
};

static const char *const measure_names[M_COUNT] = {
    "one call, idle stream: host time of the call",
    "one call, idle stream: call + stream wait",
    "back to back, out of place: host time per call",
    "back to back, out of place: per call, to the end of the stream",
    "back to back, in place: host time per call",
    "back to back, in place: per call, to the end of the stream",
    "groups of 100 calls: host time per call",
    "groups of 100 calls: per call, to the end of the stream",
    "CUDA graph of 100: capture + instantiate, per AllReduce",
    "CUDA graph of 100, replayed on an idle stream: host time of the launch, per AllReduce",
    "CUDA graph of 100, replayed back to back: per AllReduce, to the end of the stream",
};

struct lib {
    const char *name;
    int ready;      /* initialised: the back-to-back measures run */
    int graph_ok;   /* the graph measures run */
    int wrong;      /* a checked result was wrong */
    int stuck;      /* a stream did not finish: nothing may be freed */
    char why[320];  /* why the library is not ready */
    char gwhy[320]; /* why the graph measures did not run */
    void *comm;
    cudaStream_t stream;
    cudaStream_t cap_stream;
    float *send;
    float *recv;
    int (*all_reduce)(struct lib *l, const void *s, void *r, cudaStream_t st);
    int (*group_start)(void);
    int (*group_end)(void);
    const char *(*error)(struct lib *l, int res);
    int (*async_error)(struct lib *l);
    double samples[M_COUNT][CC_MAX_REPS];
    int nsamples[M_COUNT];
};

struct opts {
    const char *nccl_path;
    int calls;
    int reps;
    int device;
    enum cudaStreamCaptureMode mode;
    const char *mode_name;
};

/* --- the two libraries behind one face ----------------------------------------------------- */

static int eccl_all_reduce(struct lib *l, const void *s, void *r, cudaStream_t st)
{
    return (int)ecclAllReduce(s, r, CC_COUNT, ecclFloat, ecclSum, l->comm, st);
}

static int eccl_group_start(void)
{
    return (int)ecclGroupStart();
}

static int eccl_group_end(void)
{
    return (int)ecclGroupEnd();
}

static const char *eccl_error(struct lib *l, int res)
{
    static __thread char buf[384];
    const char *last = ecclGetLastError(l->comm);
    snprintf(buf, sizeof(buf), "%s%s%s", ecclGetErrorString((ecclResult_t)res),
             last && last[0] ? ": " : "", last ? last : "");
    return buf;
}

static int eccl_async(struct lib *l)
{
    ecclResult_t a = ecclSuccess;
    ecclResult_t res = ecclCommGetAsyncError(l->comm, &a);
    return res != ecclSuccess ? (int)res : (int)a;
}

static int nccl_all_reduce_call(struct lib *l, const void *s, void *r, cudaStream_t st)
{
    return nccl.all_reduce(s, r, CC_COUNT, NCCL_FLOAT32, NCCL_SUM, l->comm, st);
}

static const char *nccl_error(struct lib *l, int res)
{
    static __thread char buf[384];
    const char *text = nccl.get_error_string ? nccl.get_error_string(res) : "error";
    const char *last = nccl.get_last_error ? nccl.get_last_error(l->comm) : NULL;
    snprintf(buf, sizeof(buf), "%s (%d)%s%s", text ? text : "error", res,
             last && last[0] ? ": " : "", last ? last : "");
    return buf;
}

static int nccl_async(struct lib *l)
{
    int a = 0;
    if (nccl.get_async_error == NULL)
        return 0;
    int res = nccl.get_async_error(l->comm, &a);
    /* ncclInProgress (7) is not a failure. */
    return res != 0 ? res : (a == 7 ? 0 : a);
}

static void *sym(const char *name, int required, char *why, size_t len)
{
    void *p = dlsym(nccl.handle, name);
    if (p == NULL && required && why[0] == '\0') {
        const char *err = dlerror();
        snprintf(why, len, "%s not found in the NCCL library: %s", name, err ? err : "");
    }
    return p;
}

/* Loads NCCL and looks its functions up; on failure says why in why. */
static int nccl_load(const char *path, char *why, size_t len)
{
    const char *name = path ? path : "libnccl.so.2";
    nccl.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (nccl.handle == NULL) {
        const char *err = dlerror();
        snprintf(why, len, "dlopen(%s): %s", name, err ? err : "failed");
        return -1;
    }
    nccl.get_unique_id = (nccl_get_unique_id_fn)sym("ncclGetUniqueId", 1, why, len);
    nccl.comm_init_rank = (nccl_comm_init_rank_fn)sym("ncclCommInitRank", 1, why, len);
    nccl.all_reduce = (nccl_all_reduce_fn)sym("ncclAllReduce", 1, why, len);
    nccl.comm_destroy = (nccl_comm_destroy_fn)sym("ncclCommDestroy", 1, why, len);
    nccl.get_version = (nccl_get_version_fn)sym("ncclGetVersion", 1, why, len);
    nccl.group_start = (nccl_group_fn)sym("ncclGroupStart", 1, why, len);
    nccl.group_end = (nccl_group_fn)sym("ncclGroupEnd", 1, why, len);
    nccl.get_error_string = (nccl_get_error_string_fn)sym("ncclGetErrorString", 0, why, len);
    nccl.get_last_error = (nccl_get_last_error_fn)sym("ncclGetLastError", 0, why, len);
    nccl.get_async_error = (nccl_comm_get_async_error_fn)sym("ncclCommGetAsyncError", 0, why, len);
    return why[0] == '\0' ? 0 : -1;
}

/* --- streams and buffers ------------------------------------------------------------------- */

/* Polls the stream until it is done, the library reports a failure, or CC_WAIT_MS pass. */
static int stream_wait(struct lib *l, cudaStream_t st)
{
    uint64_t deadline = eccl_deadline_ms(CC_WAIT_MS);
    for (uint64_t polls = 0;; polls++) {
        cudaError_t e = cudaStreamQuery(st);
        if (e == cudaSuccess)
            break;
        if (e != cudaErrorNotReady) {
            snprintf(l->why, sizeof(l->why), "cudaStreamQuery: %s", cudaGetErrorString(e));
            return -1;
        }
        int a = l->async_error(l);
        if (a != 0) {
            snprintf(l->why, sizeof(l->why), "asynchronous error: %s", l->error(l, a));
            return -1;
        }
        if (eccl_deadline_passed(deadline)) {
            snprintf(l->why, sizeof(l->why), "the stream did not finish in %d ms", CC_WAIT_MS);
            l->stuck = 1;
            return -1;
        }
        if (polls >= CC_SPIN_POLLS)
            eccl_sleep_us(20);
    }
    int a = l->async_error(l);
    if (a != 0) {
        snprintf(l->why, sizeof(l->why), "asynchronous error: %s", l->error(l, a));
        return -1;
    }
    return 0;
}

static int cuda_fail(char *why, size_t len, const char *what, cudaError_t e)
{
    snprintf(why, len, "%s: %s", what, cudaGetErrorString(e));
    return -1;
}

/* The library's streams and buffers; send holds {1, 2}. */
static int lib_buffers(struct lib *l)
{
    static const float input[CC_COUNT] = {1.0f, 2.0f};
    cudaError_t e;
    if ((e = cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return cuda_fail(l->why, sizeof(l->why), "cudaStreamCreateWithFlags", e);
    if ((e = cudaStreamCreateWithFlags(&l->cap_stream, cudaStreamNonBlocking)) != cudaSuccess)
        return cuda_fail(l->why, sizeof(l->why), "cudaStreamCreateWithFlags", e);
    if ((e = cudaMalloc((void **)&l->send, sizeof(input))) != cudaSuccess ||
        (e = cudaMalloc((void **)&l->recv, sizeof(input))) != cudaSuccess)
        return cuda_fail(l->why, sizeof(l->why), "cudaMalloc", e);
    if ((e = cudaMemcpy(l->send, input, sizeof(input), cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail(l->why, sizeof(l->why), "cudaMemcpy", e);
    return 0;
}

/* Zeroes the receive buffer on st (before a checked run). */
static int clear_recv(struct lib *l, cudaStream_t st)
{
    cudaError_t e = cudaMemsetAsync(l->recv, 0, CC_COUNT * sizeof(float), st);
    if (e != cudaSuccess)
        return cuda_fail(l->why, sizeof(l->why), "cudaMemsetAsync", e);
    return 0;
}

/* After a checked run (stream done): the 1-rank sum is the input. */
static int check_recv(struct lib *l, const char *what)
{
    float got[CC_COUNT];
    cudaError_t e = cudaMemcpy(got, l->recv, sizeof(got), cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        return cuda_fail(l->why, sizeof(l->why), "cudaMemcpy", e);
    if (got[0] != 1.0f || got[1] != 2.0f) {
        fprintf(stderr, "gpu_call_cost: %s: %s: got {%g, %g}, expected {1, 2}\n", l->name, what,
                (double)got[0], (double)got[1]);
        l->wrong = 1;
    }
    return 0;
}

static void lib_release(struct lib *l)
{
    if (l->stuck)
        return; /* a kernel still runs: its memory and streams stay until exit */
    if (l->send)
        (void)cudaFree(l->send);
    if (l->recv)
        (void)cudaFree(l->recv);
    if (l->stream)
        (void)cudaStreamDestroy(l->stream);
    if (l->cap_stream)
        (void)cudaStreamDestroy(l->cap_stream);
}

/* --- the measures -------------------------------------------------------------------------- */

static void add_sample(struct lib *l, enum measure m, double us)
{
    if (l->nsamples[m] < CC_MAX_REPS)
        l->samples[m][l->nsamples[m]++] = us;
}

static int call_failed(struct lib *l, int res, const char *what)
{
    snprintf(l->why, sizeof(l->why), "%s: %s", what, l->error(l, res));
    return -1;
}

/* One call at a time on an idle stream: the call alone, and the call plus the wait. */
static int measure_single(struct lib *l, int calls)
{
    double host = 0.0, sync = 0.0;
    for (int i = 0; i < calls; i++) {
        uint64_t t0 = eccl_now_ns();
        int res = l->all_reduce(l, l->send, l->recv, l->stream);
        uint64_t t1 = eccl_now_ns();
        if (res != 0)
            return call_failed(l, res, "AllReduce");
        if (stream_wait(l, l->stream) != 0)
            return -1;
        uint64_t t2 = eccl_now_ns();
        host += (double)(t1 - t0);
        sync += (double)(t2 - t0);
    }
    add_sample(l, M_SINGLE_HOST, host / 1e3 / calls);
    add_sample(l, M_SINGLE_SYNC, sync / 1e3 / calls);
    return 0;
}

/* calls back to back (in groups of `group` when > 1), then the wait. */
static int measure_b2b(struct lib *l, int calls, int in_place, int group, enum measure m_host)
{
    const void *s = in_place ? (const void *)l->recv : (const void *)l->send;
    uint64_t t0 = eccl_now_ns();
    for (int i = 0; i < calls;) {
        int res;
        if (group > 1 && (res = l->group_start()) != 0)
            return call_failed(l, res, "GroupStart");
        int n = group > 1 ? group : 1;
        for (int k = 0; k < n && i < calls; k++, i++) {
            if ((res = l->all_reduce(l, s, l->recv, l->stream)) != 0) {
                if (group > 1)
                    (void)l->group_end();
                return call_failed(l, res, "AllReduce");
            }
        }
        if (group > 1 && (res = l->group_end()) != 0)
            return call_failed(l, res, "GroupEnd");
    }
    uint64_t t1 = eccl_now_ns();
    if (stream_wait(l, l->stream) != 0)
        return -1;
    uint64_t t2 = eccl_now_ns();
    add_sample(l, m_host, (double)(t1 - t0) / 1e3 / calls);
    add_sample(l, (enum measure)(m_host + 1), (double)(t2 - t0) / 1e3 / calls);
    return 0;
}

/* Captures CC_GRAPH_OPS AllReduces on the capture stream and instantiates them. A refusal, an
 * invalidated capture or a failed instantiation is "not supported" (the reason in gwhy). */
static int graph_build(struct lib *l, const struct opts *o, cudaGraphExec_t *exec, double *us)
{
    cudaGraph_t graph = NULL;
    uint64_t t0 = eccl_now_ns();
    cudaError_t e = cudaStreamBeginCapture(l->cap_stream, o->mode);
    if (e != cudaSuccess)
        return cuda_fail(l->gwhy, sizeof(l->gwhy), "cudaStreamBeginCapture", e);
    int failed_at = -1, res = 0;
    for (int i = 0; i < CC_GRAPH_OPS; i++) {
        if ((res = l->all_reduce(l, l->send, l->recv, l->cap_stream)) != 0) {
            failed_at = i;
            break;
        }
    }
    /* The capture is always ended, so that the stream leaves capture mode. */
    e = cudaStreamEndCapture(l->cap_stream, &graph);
    if (failed_at >= 0) {
        snprintf(l->gwhy, sizeof(l->gwhy), "AllReduce %d of the capture failed: %s", failed_at,
                 l->error(l, res));
        if (graph)
            (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        return -1;
    }
    if (e != cudaSuccess || graph == NULL) {
        (void)cudaGetLastError();
        return cuda_fail(l->gwhy, sizeof(l->gwhy), "cudaStreamEndCapture", e);
    }
    e = cudaGraphInstantiate(exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cuda_fail(l->gwhy, sizeof(l->gwhy), "cudaGraphInstantiate", e);
    }
    *us = (double)(eccl_now_ns() - t0) / 1e3 / CC_GRAPH_OPS;
    return 0;
}

/* One repetition of the graph measures: build, check (first time), replay. A failure of the
 * replay itself (not of the capture) is a failure of the library. */
static int measure_graph(struct lib *l, const struct opts *o, int first)
{
    cudaGraphExec_t exec = NULL;
    double build_us = 0.0;
    if (graph_build(l, o, &exec, &build_us) != 0) {
        l->graph_ok = 0;
        return 0;
    }
    int rc = -1;
    int launches = o->calls / CC_GRAPH_OPS > 0 ? o->calls / CC_GRAPH_OPS : 1;
    cudaError_t e;
    if (first && clear_recv(l, l->cap_stream) != 0)
        goto out;
    /* The first launch uploads the graph: not timed. */
    if ((e = cudaGraphLaunch(exec, l->cap_stream)) != cudaSuccess) {
        cuda_fail(l->why, sizeof(l->why), "cudaGraphLaunch", e);
        goto out;
    }
    if (stream_wait(l, l->cap_stream) != 0)
        goto out;
    if (first && check_recv(l, "graph replay") != 0)
        goto out;
    /* Host time: each launch on an idle stream (launches back to back would wait for room in
     * the stream's queue once the GPU falls behind, and time the GPU instead). */
    double host_ns = 0.0;
    int idle_launches = launches < CC_IDLE_LAUNCHES ? launches : CC_IDLE_LAUNCHES;
    for (int i = 0; i < idle_launches; i++) {
        uint64_t t0 = eccl_now_ns();
        if ((e = cudaGraphLaunch(exec, l->cap_stream)) != cudaSuccess) {
            cuda_fail(l->why, sizeof(l->why), "cudaGraphLaunch", e);
            goto out;
        }
        host_ns += (double)(eccl_now_ns() - t0);
        if (stream_wait(l, l->cap_stream) != 0)
            goto out;
    }
    /* To the end of the stream: the launches back to back. */
    uint64_t t0 = eccl_now_ns();
    for (int i = 0; i < launches; i++) {
        if ((e = cudaGraphLaunch(exec, l->cap_stream)) != cudaSuccess) {
            cuda_fail(l->why, sizeof(l->why), "cudaGraphLaunch", e);
            goto out;
        }
    }
    if (stream_wait(l, l->cap_stream) != 0)
        goto out;
    uint64_t t1 = eccl_now_ns();
    add_sample(l, M_GRAPH_BUILD, build_us);
    add_sample(l, M_GRAPH_HOST, host_ns / 1e3 / ((double)idle_launches * CC_GRAPH_OPS));
    add_sample(l, M_GRAPH_END, (double)(t1 - t0) / 1e3 / ((double)launches * CC_GRAPH_OPS));
    rc = 0;
out:
    if (!l->stuck)
        (void)cudaGraphExecDestroy(exec);
    return rc;
}

/* Warm-up and the check of one plain call. */
/* What the CUDA runtime calls on eccl's launch path cost by themselves on this machine (the mean
 * of 10000 calls each), to put the per-call figure in context. */
static void print_cuda_costs(struct lib *l)
{
    enum { N = 10000 };
    cudaEvent_t ev;
    if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess)
        return;
    struct cudaPointerAttributes a;
    enum cudaStreamCaptureStatus cs;
    uint64_t t0 = eccl_now_ns();
    for (int i = 0; i < N; i++)
        (void)cudaPointerGetAttributes(&a, l->send);
    uint64_t t1 = eccl_now_ns();
    for (int i = 0; i < N; i++)
        (void)cudaStreamIsCapturing(l->stream, &cs);
    uint64_t t2 = eccl_now_ns();
    for (int i = 0; i < N; i++)
        (void)cudaEventRecord(ev, l->stream);
    uint64_t t3 = eccl_now_ns();
    for (int i = 0; i < N; i++)
        (void)cudaEventQuery(ev);
    uint64_t t4 = eccl_now_ns();
    (void)cudaStreamSynchronize(l->stream);
    cudaEventDestroy(ev);
    printf("\nCUDA runtime calls on the launch path, mean of %d (us): cudaPointerGetAttributes "
           "%.3f, cudaStreamIsCapturing %.3f, cudaEventRecord %.3f, cudaEventQuery %.3f\n",
           N, (double)(t1 - t0) / N / 1e3, (double)(t2 - t1) / N / 1e3, (double)(t3 - t2) / N / 1e3,
           (double)(t4 - t3) / N / 1e3);
}

static int lib_warm(struct lib *l, int calls)
{
    if (clear_recv(l, l->stream) != 0)
        return -1;
    int res = l->all_reduce(l, l->send, l->recv, l->stream);
    if (res != 0)
        return call_failed(l, res, "AllReduce");
    if (stream_wait(l, l->stream) != 0 || check_recv(l, "AllReduce") != 0)
        return -1;
    for (int i = 0; i < calls; i++) {
        if ((res = l->all_reduce(l, l->send, l->recv, l->stream)) != 0)
            return call_failed(l, res, "AllReduce");
    }
    return stream_wait(l, l->stream);
}

/* --- setup --------------------------------------------------------------------------------- */

static int eccl_setup(struct lib *l)
{
    ecclUniqueId id;
    ecclResult_t res = ecclGetUniqueId(&id);
    if (res != ecclSuccess)
        return call_failed(l, (int)res, "ecclGetUniqueId");
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    ecclComm_t comm = NULL;
    res = ecclCommInitRankConfig(&comm, 1, id, 0, &cfg);
    if (res != ecclSuccess)
        return call_failed(l, (int)res, "ecclCommInitRankConfig");
    l->comm = comm;
    return lib_buffers(l);
}

static int nccl_setup(struct lib *l)
{
    struct nccl_unique_id id;
    int res = nccl.get_unique_id(&id);
    if (res != 0)
        return call_failed(l, res, "ncclGetUniqueId");
    void *comm = NULL;
    res = nccl.comm_init_rank(&comm, 1, id, 0);
    if (res != 0)
        return call_failed(l, res, "ncclCommInitRank");
    l->comm = comm;
    return lib_buffers(l);
}

/* --- output -------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, min and max of a measure; 0 when it has no sample. */
static int stats(struct lib *l, enum measure m, double *med, double *lo, double *hi)
{
    int n = l->nsamples[m];
    if (n == 0)
        return 0;
    double v[CC_MAX_REPS];
    memcpy(v, l->samples[m], (size_t)n * sizeof(double));
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    *lo = v[0];
    *hi = v[n - 1];
    return 1;
}

static void cell(char *buf, size_t len, struct lib *l, enum measure m, double *med)
{
    double lo, hi;
    int graph = m >= M_GRAPH_BUILD;
    if (stats(l, m, med, &lo, &hi))
        snprintf(buf, len, "%.2f [%.2f, %.2f]", *med, lo, hi);
    else if (!l->ready)
        snprintf(buf, len, "n/a");
    else if (graph && l->gwhy[0])
        snprintf(buf, len, "not supported");
    else
        snprintf(buf, len, "failed");
}

static void print_table(const struct opts *o, struct lib *libs, int nlibs)
{
    printf("| measure (us per AllReduce, median [min, max] of %d) |", o->reps);
    for (int i = 0; i < nlibs; i++)
        printf(" %s |", libs[i].name);
    printf(" eccl/NCCL |\n|---|");
    for (int i = 0; i < nlibs; i++)
        printf("---:|");
    printf("---:|\n");
    for (int m = 0; m < M_COUNT; m++) {
        double med[2] = {0, 0};
        char c[2][64];
        printf("| %s |", measure_names[m]);
        for (int i = 0; i < nlibs; i++) {
            cell(c[i], sizeof(c[i]), &libs[i], (enum measure)m, &med[i]);
            printf(" %s |", c[i]);
        }
        if (nlibs == 2 && libs[0].nsamples[m] && libs[1].nsamples[m] && med[1] > 0)
            printf(" %.2f |\n", med[0] / med[1]);
        else
            printf(" - |\n");
    }
    printf("\n");
    for (int i = 0; i < nlibs; i++) {
        if (!libs[i].ready || libs[i].why[0])
            printf("- %s: %s\n", libs[i].name, libs[i].why[0] ? libs[i].why : "not measured");
        else if (libs[i].gwhy[0])
            printf("- %s, CUDA graph: not supported: %s\n", libs[i].name, libs[i].gwhy);
        if (libs[i].wrong)
            printf("- %s: WRONG RESULT (see stderr)\n", libs[i].name);
    }
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"nccl", required_argument, 0, 'N'},
        {"calls", required_argument, 0, 'n'},
        {"reps", required_argument, 0, 'r'},
        {"device", required_argument, 0, 'd'},
        {"mode", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "N:n:r:d:m:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'N':
            o->nccl_path = optarg;
            break;
        case 'n':
            o->calls = atoi(optarg);
            break;
        case 'r':
            o->reps = atoi(optarg);
            break;
        case 'd':
            o->device = atoi(optarg);
            break;
        case 'm':
            o->mode_name = optarg;
            if (strcmp(optarg, "global") == 0)
                o->mode = cudaStreamCaptureModeGlobal;
            else if (strcmp(optarg, "thread") == 0)
                o->mode = cudaStreamCaptureModeThreadLocal;
            else if (strcmp(optarg, "relaxed") == 0)
                o->mode = cudaStreamCaptureModeRelaxed;
            else
                return -1;
            break;
        default:
            return -1;
        }
    }
    if (optind < argc || o->calls < CC_GRAPH_OPS || o->reps < 1 || o->reps > CC_MAX_REPS ||
        o->device < 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {NULL, 10000, 5, 0, cudaStreamCaptureModeGlobal, "global"};
    if (parse_opts(argc, argv, &o) != 0) {
        fprintf(stderr,
                "usage: %s [--nccl /path/libnccl.so.2] [-n calls >= %d (10000)] [-r reps (5)] "
                "[-d device (0)] [-m global|thread|relaxed (capture mode, global)]\n",
                argv[0], CC_GRAPH_OPS);
        return 2;
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("SKIP: no GPU (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    if (o.device >= ndev) {
        fprintf(stderr, "gpu_call_cost: device %d of %d\n", o.device, ndev);
        return 2;
    }
    /* One rank, one host: the bootstraps stay on loopback (eccl also reads NCCL_*). */
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    setenv("NCCL_SOCKET_IFNAME", "lo", 0);
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(o.device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, o.device)) != cudaSuccess) {
        fprintf(stderr, "gpu_call_cost: device %d: %s\n", o.device, cudaGetErrorString(e));
        return 1;
    }
    int drv = 0, rt = 0;
    (void)cudaDriverGetVersion(&drv);
    (void)cudaRuntimeGetVersion(&rt);

    static struct lib libs[2];
    struct lib *le = &libs[0], *ln = &libs[1];
    le->name = "eccl";
    le->all_reduce = eccl_all_reduce;
    le->group_start = eccl_group_start;
    le->group_end = eccl_group_end;
    le->error = eccl_error;
    le->async_error = eccl_async;
    ln->name = "NCCL";
    ln->all_reduce = nccl_all_reduce_call;
    ln->error = nccl_error;
    ln->async_error = nccl_async;

    le->ready = eccl_setup(le) == 0;
    int nccl_version = 0;
    if (nccl_load(o.nccl_path, ln->why, sizeof(ln->why)) == 0) {
        ln->group_start = nccl.group_start;
        ln->group_end = nccl.group_end;
        (void)nccl.get_version(&nccl_version);
        ln->ready = nccl_setup(ln) == 0;
    }
    for (int i = 0; i < 2; i++) {
        if (libs[i].ready)
            libs[i].ready = lib_warm(&libs[i], CC_WARMUP) == 0;
        libs[i].graph_ok = libs[i].ready;
    }

    int single = o.calls < CC_SINGLE_CALLS ? o.calls : CC_SINGLE_CALLS;
    for (int rep = 0; rep < o.reps; rep++) {
        for (int i = 0; i < 2; i++) {
            struct lib *l = &libs[i];
            if (!l->ready)
                continue;
            if (measure_single(l, single) != 0 || measure_b2b(l, o.calls, 0, 1, M_B2B_HOST) != 0 ||
                measure_b2b(l, o.calls, 1, 1, M_INPLACE_HOST) != 0 ||
                measure_b2b(l, o.calls, 0, CC_GROUP_OPS, M_GROUP_HOST) != 0)
                l->ready = 0;
        }
    }
    /* The graphs last: a library that fails a capture may be left in an error state. */
    for (int rep = 0; rep < o.reps; rep++) {
        for (int i = 0; i < 2; i++) {
            struct lib *l = &libs[i];
            if (l->ready && l->graph_ok && measure_graph(l, &o, rep == 0) != 0)
                l->ready = 0;
        }
    }

    int ev = 0;
    (void)ecclGetVersion(&ev);
    printf("# gpu_call_cost: host cost of one AllReduce of 8 B (2 float, sum) on a 1-rank CUDA "
           "communicator\n");
    printf("# GPU %d: %s (sm_%d%d), CUDA driver %d, runtime %d\n", o.device, prop.name, prop.major,
           prop.minor, drv, rt);
    printf("# eccl %s (API %d, linked statically); NCCL ", ECCL_RELEASE, ev);
    if (nccl_version > 0)
        printf("%d.%d.%d (%s)\n", nccl_version / 10000, nccl_version % 10000 / 100,
               nccl_version % 100, o.nccl_path ? o.nccl_path : "libnccl.so.2");
    else
        printf("not loaded\n");
    printf("# %d calls back to back per repetition (%d one at a time), %d repetitions, eccl and "
           "NCCL interleaved; graph: %d AllReduces captured (%s mode), replayed %d times\n\n",
           o.calls, single, o.reps, CC_GRAPH_OPS, o.mode_name, o.calls / CC_GRAPH_OPS);
    print_table(&o, libs, 2);
    if (le->ready)
        print_cuda_costs(le);
    fflush(stdout);

    int stuck = le->stuck || ln->stuck;
    int status = 0;
    if (!le->ready || le->wrong || ln->wrong || (ln->ready == 0 && nccl_version > 0))
        status = 1;
    else if (nccl_version == 0)
        status = 2;
    if (stuck)
        _exit(1); /* kernels still run: leave without tearing down under them */
    for (int i = 0; i < 2; i++)
        lib_release(&libs[i]);
    if (le->comm && ecclCommDestroy(le->comm) != ecclSuccess)
        status = 1;
    if (ln->comm && nccl.comm_destroy(ln->comm) != 0)
        status = 1;
    return status;
}

#else /* !ECCL_HAVE_CUDA */

int main(void)
{
    printf("SKIP: no GPU (this build has no CUDA: make CUDA=1)\n");
    return 77;
}

#endif

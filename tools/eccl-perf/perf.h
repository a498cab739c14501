/*
 * perf.h - eccl-perf, eccl's equivalent of nccl-tests: the declarations its files share.
 *
 * eccl-perf uses only the public API (include/eccl.h) and common/ helpers. A run is
 * `nprocs` processes (-N, forked by the first one) of `nthreads` threads (-t) each; every thread is
 * one rank with its own communicator. Buffers come from a memory backend (struct perf_mem_ops):
 * host memory, or CUDA device memory with -G 1 (CUDA communicators, a stream per rank, CUDA
 * events timing the loops). The benchmark loop only moves bytes between the backend's buffers
 * and host memory through upload/download, and waits for its calls through wait.
 */
#ifndef ECCL_TOOLS_PERF_H
#define ECCL_TOOLS_PERF_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

/* Exit statuses. */
#define PERF_EXIT_OK      0
#define PERF_EXIT_FAILED  1   /* a check failed, an eccl call failed, a rank died */
#define PERF_EXIT_USAGE   2   /* bad command line */
#define PERF_EXIT_TIMEOUT 124 /* the -T deadline passed */

/* Reduction ops as eccl-perf names them: eccl's built-in ops, plus PreMulSum. */
enum perf_op {
    PERF_OP_SUM = 0, /* ecclSum .. ecclAvg keep their values */
    PERF_OP_PROD = 1,
    PERF_OP_MAX = 2,
    PERF_OP_MIN = 3,
    PERF_OP_AVG = 4,
    PERF_OP_PREMULSUM = 5,
    PERF_OP_COUNT = 6,
    PERF_OP_NONE = -1, /* collectives that do not reduce */
};

enum perf_coll_id {
    PERF_ALLREDUCE = 0,
    PERF_ALLGATHER,
    PERF_REDUCESCATTER,
    PERF_BROADCAST,
    PERF_REDUCE,
    PERF_ALLTOALL,
    PERF_SENDRECV,
    PERF_GATHER,
    PERF_SCATTER,
    PERF_COLL_COUNT,
};

/* Element counts of one call, as nccl-tests derives them from the size in bytes. In place, the
 * send buffer is recvbuff + send_inplace_off * rank and the receive buffer is
 * recvbuff + recv_inplace_off * rank (offsets in elements). */
struct perf_counts {
    size_t send_count;  /* elements of the send buffer */
    size_t recv_count;  /* elements of the receive buffer (what is checked) */
    size_t param_count; /* the count argument of the call */
    size_t send_inplace_off;
    size_t recv_inplace_off;
};

/* What the in-place half of a result does. */
enum perf_inplace {
    PERF_INPLACE_CHECKED = 0,   /* run, timed and checked */
    PERF_INPLACE_UNCHECKED = 1, /* run and timed; not checked, as in nccl-tests (#wrong: N/A) */
    PERF_INPLACE_NONE = 2,      /* not supported by the API: not run, every column N/A */
};

struct perf_coll {
    enum perf_coll_id id;
    const char *name;      /* -C value */
    const char *nccl_name; /* nccl-tests' binary name, accepted as argv[0] */
    int has_op;            /* reduces: -o applies */
    int has_root;          /* -r applies */
    int inplace;           /* PERF_INPLACE_* */
    void (*get_counts)(size_t count, int nranks, struct perf_counts *c);
    /* algbw's byte count for a call of param_count elements of elt_size bytes. */
    double (*bw_bytes)(size_t param_count, size_t elt_size, int nranks);
    double (*bus_factor)(int nranks);
    ecclResult_t (*run)(const void *sendbuff, void *recvbuff, size_t count, ecclDataType_t dtype,
                        ecclRedOp_t op, int root, ecclComm_t comm, cudaStream_t stream);
};

const struct perf_coll *perf_coll_by_name(const char *name);
const struct perf_coll *perf_coll_by_nccl_name(const char *name);
const struct perf_coll *perf_coll_get(enum perf_coll_id id);
/* The eccl function the collective calls ("ecclAllReduce"), for error messages. */
const char *perf_coll_api_name(const struct perf_coll *coll);

/* Data types. */
struct perf_type {
    ecclDataType_t dtype;
    const char *name; /* as nccl-tests prints it */
    size_t size;
    int is_float;
    int is_signed; /* integer types */
    int prec;      /* floating types: significand bits, implicit bit included */
    int emax;      /* floating types: largest e with 2^e finite */
    int ebits;     /* narrow floating types (half, bfloat16, fp8): encoding */
    int mbits;
    int bias;
    int fn;         /* fp8 e4m3: no infinities, one NaN encoding */
    double sub_min; /* smallest positive subnormal */
};

const struct perf_type *perf_type_by_name(const char *name);
const struct perf_type *perf_type_get(ecclDataType_t dtype);
const char *perf_op_name(int op);
int perf_op_by_name(const char *name); /* PERF_OP_*, or -2 if unknown */

/* Scalar conversions between a double and a type's bit pattern (round to nearest even; fp8
 * saturates, the 16-bit types overflow to infinity). */
uint64_t perf_type_encode(const struct perf_type *t, double v);
double perf_type_decode(const struct perf_type *t, uint64_t bits);

/* The PreMulSum scalar of a rank: 1 or 2, exact in every type. */
double perf_premul_scalar(int rank);

/*
 * Input patterns and the reference. Every rank's input is a pure function of (seed, rank,
 * index), so any rank can compute any other rank's input and the exact expected result. The
 * values are chosen per type, op and rank count so that every reduction order gives the same,
 * exactly representable result (docs/eccl-perf.md explains how); only avg on floating types has
 * a tolerance.
 */
struct perf_pattern {
    const struct perf_type *type;
    int op; /* PERF_OP_*, PERF_OP_NONE for data movement (random bit patterns) */
    int nranks;
    uint64_t seed;
    int raw;    /* random bit patterns (data movement, integer sum/prod/max/min/premulsum) */
    int64_t m;  /* values in [-m, m] (or [0, m]) */
    int stride; /* floating sums and products: a rank contributes a nonzero (or a 2) to
                      element k only when (rank + k) % stride == 0 */
};

void perf_pattern_init(struct perf_pattern *p, const struct perf_type *type, int op, int nranks,
                       uint64_t seed);
/* Writes elements [first, first + n) of `rank`'s input into dst (host memory). */
void perf_pattern_fill(const struct perf_pattern *p, int rank, void *dst, size_t first, size_t n);

/* What one rank's receive buffer must hold after a call. */
struct perf_check {
    const struct perf_coll *coll;
    struct perf_pattern pattern;
    int rank;
    int root;
    int in_place;
    struct perf_counts counts;
};

/* Number of wrong elements among counts.recv_count elements of `recv` (host memory). Prints the
 * first few mismatches to stderr. */
int64_t perf_check_recv(const struct perf_check *c, const void *recv);

/*
 * Memory backend: where a rank's buffers live and how the benchmark reaches them. Every function
 * runs on the rank's own thread (a CUDA backend binds the thread to the rank's device in
 * rank_init). upload, download and zero are synchronous for the caller: they are ordered after
 * everything queued on rk->stream and return when done. Failures are reported on stderr by the
 * backend itself.
 */
struct perf_rank;
struct perf_mem_ops {
    const char *name;    /* "host", "cuda" */
    int host_accessible; /* buffers can be read and written by the CPU directly */
    int device_kind;     /* config.deviceKind of the communicators (ECCL_DEVICE_*) */
    /* Before the communicator is made: binds the device, creates the stream and the timing
     * events, fills rk->device, rk->bus_id, rk->dev_name. */
    ecclResult_t (*rank_init)(struct perf_rank *rk);
    /* Undoes rank_init, after the communicator is gone; safe after a failed rank_init. */
    void (*rank_fini)(struct perf_rank *rk);
    ecclResult_t (*alloc)(struct perf_rank *rk, void **ptr, size_t bytes);
    void (*free)(struct perf_rank *rk, void *ptr); /* NULL is ignored */
    ecclResult_t (*upload)(struct perf_rank *rk, void *dst, const void *host_src, size_t bytes);
    ecclResult_t (*download)(struct perf_rank *rk, void *host_dst, const void *src, size_t bytes);
    ecclResult_t (*zero)(struct perf_rank *rk, void *dst, size_t bytes);
    /* Waits, until rk->deadline, for everything queued on rk->stream, then returns the
     * communicator's asynchronous error; stops early when the communicator has failed. */
    ecclResult_t (*wait)(struct perf_rank *rk);
    /* Device timing, or NULL (the host clock times the loops): mark(rk, i) records timing
     * event i (0 <= i < rk->nmarks) on the stream; after wait, elapsed_us gives the time
     * between two recorded events. */
    ecclResult_t (*mark)(struct perf_rank *rk, int i);
    ecclResult_t (*elapsed_us)(struct perf_rank *rk, int from, int to, double *us);
};

extern const struct perf_mem_ops perf_mem_host;
/* The CUDA backend (-G 1); NULL in a build without CUDA. */
extern const struct perf_mem_ops *const perf_mem_cuda;

/* Command line. */
struct perf_opts {
    const struct perf_coll *coll;
    size_t min_bytes;
    size_t max_bytes;
    size_t step_bytes;
    size_t step_factor; /* > 1: multiply; else add step_bytes */
    int iters;
    int warmup_iters;
    int agg_iters;
    int check; /* number of checked runs per result (0: no check) */
    int dtype; /* ecclDataType_t, or -1: all */
    int op;    /* PERF_OP_*, or -1: all */
    int root;  /* -1: every root */
    int blocking;
    int average; /* 0 rank 0, 1 mean, 2 min, 3 max over ranks */
    int median;  /* print per-iteration median columns */
    int nprocs;
    int nthreads;
    int parallel_init; /* every thread calls ecclCommInitRank */
    int timeout_s;     /* 0: none */
    int gpu;           /* -G 1: CUDA communicators and device buffers */
    int stream_null;   /* -y 1: the calls use the default (NULL) stream */
    int reg;           /* -R 1: buffers from ecclMemAlloc, registered with ecclCommRegister */
    int host_time;     /* --host-time 1: a column of host-timed iterations per half */
    int local_base;    /* --id-file: this process's local index (LOCAL_RANK or --proc) */
    int corrupt_rank;  /* testing aid: this rank spoils its checked results (-1: none) */
    /* --id-file: this process is process `proc` of nprocs started separately (no fork);
     * process 0 writes the unique id to the file, the others read it from there. */
    const char *id_file;
    int proc;
    const char *prog;
    size_t alloc_bytes;    /* each of the send and receive buffers */
    const char *csv_file;  /* --csv (or a temporary file for --plot alone): rank 0 appends rows */
    const char *plot_file; /* --plot: busbw against size, drawn by gnuplot after the run */
};

/* report.c: --csv and --plot. */
struct perf_csv_half {
    int skipped; /* not run: empty fields */
    double time_us, algbw, busbw;
    int64_t wrong; /* -1: not checked (empty) */
};
/* Truncates the file and writes the header line; -1 with a message when it cannot. */
int perf_csv_start(const char *path);
/* Appends one row (out-of-place, then in-place); rank 0 only. */
void perf_csv_row(const struct perf_opts *o, size_t size, size_t count, const char *type,
                  const char *op, int root, const struct perf_csv_half h[2]);
/* Draws o->plot_file from o->csv_file with gnuplot; 0 on success. */
int perf_plot(const struct perf_opts *o);

/* One rank: a thread with its communicator and buffers. */
struct perf_proc;
struct perf_rank {
    struct perf_proc *proc;
    const struct perf_opts *opts;
    const struct perf_mem_ops *mem;
    int rank;
    int nranks;
    int thread;
    int local_rank;    /* index of the rank on this host: the GPU is local_rank % device count */
    uint64_t deadline; /* of every wait: the -T deadline */
    ecclComm_t comm;
    cudaStream_t stream; /* what the calls are queued on (NULL for host communicators) */
    void *dev;           /* the backend's per-rank state */
    int nmarks;          /* timing events the backend made (mark) */
    int device;          /* -1: host buffers */
    char bus_id[32];
    char dev_name[64];
    void *sendbuf;
    void *recvbuf;
    void *reg_send; /* -R 1: the registrations of sendbuf and recvbuf */
    void *reg_recv;
    void *small;     /* a few bytes of backend memory for barriers and statistics */
    void *stage;     /* host copy of a buffer when the backend is not host-accessible */
    double *iter_us; /* per-iteration times */
    uint64_t rep;    /* data-pattern seed, the same sequence on every rank */
    int64_t wrong;   /* wrong elements seen by this rank */
    int failed;      /* an eccl call failed on this rank */
    /* rank 0 only: the summary */
    int result_errors;
    double bw_sum;
    int bw_count;
    double host_ratio_min; /* host-timed / device-timed time per result, over the results */
    double host_ratio_max;
    int host_ratio_count;
    pthread_t tid;
    int done;
};

/* One process: its ranks and the state its main thread waits on. */
struct perf_proc {
    const struct perf_opts *opts;
    int proc;
    ecclUniqueId id;
    struct perf_rank *ranks;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ndone;   /* protected by lock */
    int nfailed; /* protected by lock */
};

/* The body of a rank's thread: init (unless comm is set), run every test, destroy. */
void *perf_rank_main(void *arg);

/* Writes a value's `size` low bytes to dst (host memory), as the type stores it. */
void perf_type_store(const struct perf_type *t, void *dst, uint64_t bits);

#endif

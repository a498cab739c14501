/*
 * elastic_train.c - eccl's main job: a deterministic data-parallel training loop that keeps going
 * when ranks die and are replaced.
 *
 * The model is a linear regression (DIM weights and a bias) fitted by gradient descent on data
 * generated from the step number, so every run of the same steps sees the same samples. At each
 * step the samples are split over the ranks; each rank computes the gradient of its share,
 * quantised per sample to 2^-32 in 64-bit integers, and the ranks AllReduce the sums. Integer sums
 * are exact in any order and any split, so the parameters after N steps are bit-identical
 * whatever the number of ranks, the failures, and the recoveries on the way — which is what the
 * run checks at the end against a failure-free computation of the same steps.
 *
 * Run under ecclrun (which sets RANK, WORLD_SIZE and the ECCL_ELASTIC_* variables):
 *   ecclrun --nproc-per-node 4 build/bin/elastic_train --steps 300 --kill-rank 2 --kill-step 100
 * Options:
 *   --steps N        steps to run (default 200)
 *   --step-ms MS     sleep per step, to make a run last (default 0)
 *   --kill-rank R    the first incarnation of the worker started as RANK R SIGKILLs itself ...
 *   --kill-step S    ... when it reaches step S
 *   --reference      compute the failure-free result alone (no eccl) and print its checksum
 * With ECCL_DEVICE=cuda (in a build with CUDA) the communicators are CUDA ones: each worker uses
 * GPU LOCAL_RANK % (number of GPUs), and the gradient sums go through device buffers.
 * Every rank prints a timeline line per event (failure seen, recovered, first step after); rank 0
 * prints the final checksum and whether it equals the failure-free run; the exit code is 0 only
 * if it does.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "eccl.h"
#include "eccl_elastic.h"

#define DIM     8
#define SAMPLES 96 /* per step */
#define NPARAM  (DIM + 1)
#define QSCALE  4294967296.0 /* 2^32 */
#define LR      0.05

static double t0;

/* Wall-clock seconds: the timeline lines of different processes compare (t0 from
 * ELASTIC_TRAIN_T0, seconds since the epoch, when the launcher's script sets it). */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* A uniform value in [-1, 1) from (step, sample, index). */
static double uniform(int64_t step, int sample, int index)
{
    uint64_t h =
        mix((uint64_t)step * 0x9e3779b97f4a7c15ULL ^ mix((uint64_t)sample << 20 | (uint64_t)index));
    return (double)(h >> 11) / 4503599627370496.0 - 1.0; /* 2^52 */
}

static void sample_xy(int64_t step, int i, double x[DIM], double *y)
{
    static const double true_w[DIM] = {0.5, -1.25, 2.0, 0.75, -0.3, 1.1, -2.2, 0.05};
    double v = 0.4; /* true bias */
    for (int j = 0; j < DIM; j++) {
        x[j] = uniform(step, i, j);
        v += true_w[j] * x[j];
    }
    *y = v + 0.01 * uniform(step, i, 99);
}

/* Adds the quantised gradient of sample i at params p into q. */
static void grad_add(const double *p, int64_t step, int i, int64_t q[NPARAM])
{
    double x[DIM], y;
    sample_xy(step, i, x, &y);
    double e = p[DIM] - y;
    for (int j = 0; j < DIM; j++)
        e += p[j] * x[j];
    for (int j = 0; j < DIM; j++)
        q[j] += (int64_t)llround(e * x[j] * QSCALE);
    q[DIM] += (int64_t)llround(e * QSCALE);
}

static void apply(double *p, const int64_t q[NPARAM])
{
    for (int j = 0; j < NPARAM; j++)
        p[j] -= LR * ((double)q[j] / QSCALE) / SAMPLES;
}

static uint64_t checksum(const double *p)
{
    uint64_t h = 0;
    for (int j = 0; j < NPARAM; j++) {
        uint64_t bits;
        memcpy(&bits, &p[j], sizeof(bits));
        h = mix(h ^ bits);
    }
    return h;
}

static void reference(int64_t steps, double *p)
{
    memset(p, 0, sizeof(double) * NPARAM);
    for (int64_t s = 0; s < steps; s++) {
        int64_t q[NPARAM] = {0};
        for (int i = 0; i < SAMPLES; i++)
            grad_add(p, s, i, q);
        apply(p, q);
    }
}

static void say(int rank, int64_t gen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(int rank, int64_t gen, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    printf("[+%8.3f s] pid %d rank %d gen %" PRId64 ": %s\n", now_s() - t0, (int)getpid(), rank,
           gen, text);
    fflush(stdout);
}

static int fail_usage(const char *why)
{
    fprintf(stderr, "elastic_train: %s\n", why);
    return 2;
}

/* Brings params to the generation's agreed step (from whoever has it); returns the next step. */
/* sum = the ranks' q, through device buffers on a CUDA communicator. */
static ecclResult_t allreduce_grad(ecclComm_t comm, const int64_t *q, int64_t *sum)
{
    int dev = -1;
    ecclCommCuDevice(comm, &dev);
    if (dev < 0)
        return ecclAllReduce(q, sum, NPARAM, ecclInt64, ecclSum, comm, NULL);
#ifdef ECCL_HAVE_CUDA
    static int64_t *dbuf; /* q, then the sum */
    if (!dbuf && cudaMalloc((void **)&dbuf, 2 * NPARAM * sizeof(int64_t)) != cudaSuccess)
        return ecclUnhandledCudaError;
    if (cudaMemcpy(dbuf, q, NPARAM * sizeof(int64_t), cudaMemcpyHostToDevice) != cudaSuccess)
        return ecclUnhandledCudaError;
    ecclResult_t r = ecclAllReduce(dbuf, dbuf + NPARAM, NPARAM, ecclInt64, ecclSum, comm, NULL);
    /* The kernels stop when the communicator fails: the stream finishes either way, and the
     * communicator says whether the sum is there. */
    while (r == ecclSuccess && cudaStreamQuery(NULL) == cudaErrorNotReady) {
        ecclCommGetAsyncError(comm, &r);
        if (r == ecclSuccess) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    if (r == ecclSuccess)
        ecclCommGetAsyncError(comm, &r);
    if (r == ecclSuccess && cudaMemcpy(sum, dbuf + NPARAM, NPARAM * sizeof(int64_t),
                                       cudaMemcpyDeviceToHost) != cudaSuccess)
        r = ecclUnhandledCudaError;
    return r;
#else
    return ecclInvalidUsage;
#endif
}

static int64_t sync_state(ecclElastic_t el, double *p, ecclElasticInfo_t *info)
{
    int restored = 0;
    ecclResult_t r = ecclElasticSyncState(el, p, sizeof(double) * NPARAM, &restored);
    if (r != ecclSuccess)
        return -1;
    ecclElasticGetInfo(el, info);
    if (restored)
        say(info->rank, info->generation, "state restored to step %" PRId64 " from another member",
            info->step);
    return info->step + 1;
}

int main(int argc, char **argv)
{
    int64_t steps = 200, kill_step = -1;
    int kill_rank = -1, step_ms = 0, ref_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
            steps = strtoll(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--step-ms") == 0 && i + 1 < argc)
            step_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kill-rank") == 0 && i + 1 < argc)
            kill_rank = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kill-step") == 0 && i + 1 < argc)
            kill_step = strtoll(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reference") == 0)
            ref_only = 1;
        else
            return fail_usage("usage: elastic_train [--steps N] [--step-ms MS] [--kill-rank R "
                              "--kill-step S] [--reference]");
    }
    if (steps < 1)
        return fail_usage("--steps must be positive");
    t0 = getenv("ELASTIC_TRAIN_T0") ? strtod(getenv("ELASTIC_TRAIN_T0"), NULL) : now_s();
    double ref[NPARAM];
    reference(steps, ref);
    if (ref_only) {
        printf("reference after %" PRId64 " steps: checksum %016" PRIx64 "\n", steps,
               checksum(ref));
        return 0;
    }
    const char *env_rank = getenv("RANK");
    const char *restarts = getenv("ECCL_ELASTIC_RESTART_COUNT");
    int start_rank = env_rank ? atoi(env_rank) : 0;
    int first_life = !restarts || atoi(restarts) == 0;

#ifdef ECCL_HAVE_CUDA
    const char *device = getenv("ECCL_DEVICE");
    if (device && strcmp(device, "cuda") == 0) {
        int ndev = 0;
        const char *lr = getenv("LOCAL_RANK");
        if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
            fprintf(stderr, "elastic_train: ECCL_DEVICE=cuda, but no GPU\n");
            return 1;
        }
        cudaSetDevice((lr ? atoi(lr) : 0) % ndev);
    }
#endif
    ecclElastic_t el;
    ecclResult_t r = ecclElasticJoin(&el, NULL);
    if (r != ecclSuccess) {
        fprintf(stderr, "elastic_train: join failed: %s: %s\n", ecclGetErrorString(r),
                ecclGetLastError(NULL));
        return 1;
    }
    ecclElasticInfo_t info;
    ecclElasticGetInfo(el, &info);
    say(info.rank, info.generation, "joined: rank %d of %d, agreed step %" PRId64 "%s", info.rank,
        info.nranks, info.step, info.newMember && info.step >= 0 ? " (replacement)" : "");
    double p[NPARAM] = {0};
    int64_t step = sync_state(el, p, &info);
    int recovering = 0;
    double fail_at = 0;
    while (step >= 0 && step < steps) {
        if (first_life && start_rank == kill_rank && step == kill_step) {
            say(info.rank, info.generation, "SIGKILL myself at step %" PRId64, step);
            raise(SIGKILL);
        }
        ecclComm_t comm;
        ecclElasticGetComm(el, &comm);
        int64_t q[NPARAM] = {0}, sum[NPARAM];
        for (int i = info.rank; i < SAMPLES; i += info.nranks)
            grad_add(p, step, i, q);
        r = allreduce_grad(comm, q, sum);
        ecclElasticChange_t change = ecclElasticNoChange;
        if (r == ecclSuccess) {
            apply(p, sum);
            r = ecclElasticCommit(el, step);
        }
        if (r == ecclSuccess)
            ecclElasticPoll(el, &change);
        if (r != ecclSuccess || change != ecclElasticNoChange) {
            fail_at = now_s();
            if (r != ecclSuccess)
                say(info.rank, info.generation, "failure seen at step %" PRId64 ": %s", step,
                    *ecclGetLastError(comm) ? ecclGetLastError(comm) : ecclGetLastError(NULL));
            else
                say(info.rank, info.generation, "%s at step %" PRId64,
                    change == ecclElasticJoiners ? "joiners waiting" : "generation revoked", step);
            r = ecclElasticRecover(el);
            if (r != ecclSuccess) {
                say(info.rank, info.generation, "recovery failed: %s: %s", ecclGetErrorString(r),
                    ecclGetLastError(NULL));
                ecclElasticDestroy(el);
                return 1;
            }
            ecclElasticGetInfo(el, &info);
            say(info.rank, info.generation,
                "recovered in %.1f ms: generation %" PRId64 ", rank %d of %d, agreed step %" PRId64,
                (now_s() - fail_at) * 1e3, info.generation, info.rank, info.nranks, info.step);
            step = sync_state(el, p, &info);
            recovering = 1;
            continue;
        }
        if (recovering) {
            say(info.rank, info.generation,
                "first step after recovery done: step %" PRId64
                " (%.1f ms after the failure was seen)",
                step, (now_s() - fail_at) * 1e3);
            recovering = 0;
        }
        step++;
        if (step_ms > 0) {
            struct timespec ts = {step_ms / 1000, (long)(step_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (step < 0) {
        say(info.rank, info.generation, "state sync failed: %s", ecclGetLastError(NULL));
        ecclElasticDestroy(el);
        return 1;
    }
    int rank = info.rank;
    int64_t gen = info.generation;
    int same = memcmp(p, ref, sizeof(p)) == 0;
    r = ecclElasticLeave(el);
    if (rank == 0 || !same)
        say(rank, gen,
            "done: %" PRId64 " steps, checksum %016" PRIx64 ", failure-free run %016" PRIx64 ": %s",
            steps, checksum(p), checksum(ref), same ? "EQUAL" : "DIFFERENT");
    return same && r == ecclSuccess ? 0 : 1;
}

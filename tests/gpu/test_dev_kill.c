/*
 * test_dev_kill.c - a rank dies while the kernels of an AllReduce run on the GPU.
 *
 * Four ranks (processes) share the GPU, each with a CUDA communicator. After a few good rounds,
 * rank 2 is SIGKILLed just before it launches the next AllReduce, while the others' kernels
 * already wait on it. Each survivor must see ecclRemoteError (the stream finishes: the kernels
 * leave their waits; ecclCommGetAsyncError reports it) within 1 s of the kill, then shrink the
 * communicator to the three survivors and run a correct AllReduce on the GPU with it: the GPU
 * and the library keep working. Reports the survivors' detection times.
 *
 * Exits 77 (skip) where no CUDA device is present.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "eccl.h"
#include "tests/support/gpu.h"
#include "tests/support/mp.h"

#define NRANKS 4
#define VICTIM 2
#define COUNT  (4u << 20) /* floats: 16 MiB, many steps per channel */

#ifdef ECCL_HAVE_CUDA

struct shared {
    struct mp_barrier barrier;
    _Atomic uint64_t kill_ms_bits;
    double detect_ms[NRANKS];
};

/* AllReduce of ranks' (rank + i % 7) on `comm`, checked when `check`. */
static int allreduce(ecclComm_t comm, cudaStream_t st, float *dbuf, float *host, int me, int n,
                     bool check, ecclResult_t *res)
{
    for (size_t i = 0; i < COUNT; i++)
        host[i] = (float)(me + (int)(i % 7));
    if (gpu_upload(dbuf, host, COUNT * sizeof(float), st) != 0)
        return 1;
    *res = ecclAllReduce(dbuf, dbuf, COUNT, ecclFloat, ecclSum, comm, st);
    if (*res == ecclSuccess)
        *res = gpu_stream_wait(comm, st, 30000);
    if (*res != ecclSuccess || !check)
        return 0;
    if (cudaMemcpy(host, dbuf, COUNT * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
        return 1;
    for (size_t i = 0; i < COUNT; i++) {
        float want = (float)(n * (n - 1) / 2 + n * (int)(i % 7));
        if (host[i] != want) {
            printf("rank %d: element %zu is %g, want %g\n", me, i, host[i], want);
            return 1;
        }
    }
    return 0;
}

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shared *sh = arg;
    if (cudaSetDevice(0) != cudaSuccess)
        return 1;
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    ecclComm_t comm;
    if (ecclCommInitRankConfig(&comm, nranks, *id, rank, &cfg) != ecclSuccess) {
        printf("rank %d: init: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    cudaStream_t st;
    float *dbuf = NULL, *host = malloc(COUNT * sizeof(float));
    if (!host || cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess ||
        cudaMalloc((void **)&dbuf, COUNT * sizeof(float)) != cudaSuccess)
        return 1;
    ecclResult_t r;
    for (int it = 0; it < 3; it++) {
        if (allreduce(comm, st, dbuf, host, rank, nranks, true, &r) != 0 || r != ecclSuccess) {
            printf("rank %d: round %d before the fault: %s\n", rank, it, ecclGetLastError(comm));
            return 1;
        }
    }
    if (mp_barrier_wait(&sh->barrier, 30000) != 0)
        return 1;
    if (rank == VICTIM) {
        /* Give the others' kernels time to start waiting on this rank, then die. */
        mp_die_at(&sh->kill_ms_bits, 100, "victim");
        return 1; /* not reached */
    }
    if (allreduce(comm, st, dbuf, host, rank, nranks, false, &r) != 0)
        return 1;
    sh->detect_ms[rank] = mp_ms_since(&sh->kill_ms_bits);
    int bad = 0;
    ecclResult_t async = ecclSuccess;
    ecclCommGetAsyncError(comm, &async);
    if (r != ecclRemoteError || async != ecclRemoteError) {
        printf("rank %d: the AllReduce gave %d, async error %d; want ecclRemoteError (%d)\n", rank,
               r, async, ecclRemoteError);
        bad = 1;
    }
    if (sh->detect_ms[rank] > 1000) {
        printf("rank %d: detection took %.0f ms (bound 1000)\n", rank, sh->detect_ms[rank]);
        bad = 1;
    }
    /* The kernels left: the stream is idle and the GPU still works. */
    if (cudaStreamSynchronize(st) != cudaSuccess) {
        printf("rank %d: the stream reports an error after the abort\n", rank);
        bad = 1;
    }
    ecclComm_t small = NULL;
    int exclude[1] = {VICTIM};
    if (ecclCommShrink(comm, exclude, 1, &small, NULL, ECCL_SHRINK_ABORT) != ecclSuccess) {
        printf("rank %d: shrink: %s\n", rank, ecclGetLastError(comm));
        return 1;
    }
    int me = -1;
    ecclCommUserRank(small, &me);
    if (allreduce(small, st, dbuf, host, me, nranks - 1, true, &r) != 0 || r != ecclSuccess) {
        printf("rank %d: AllReduce on the shrunk communicator: %d %s\n", rank, r,
               ecclGetLastError(small));
        bad = 1;
    }
    if (ecclCommDestroy(small) != ecclSuccess || ecclCommAbort(comm) != ecclSuccess)
        bad = 1;
    cudaFree(dbuf);
    cudaStreamDestroy(st);
    free(host);
    return bad;
}

static void test_dev_kill_allreduce(void **state)
{
    (void)state;
    struct shared *sh = mp_shm_alloc(sizeof(*sh));
    assert_non_null(sh);
    mp_barrier_init(&sh->barrier, NRANKS);
    struct mp_action act = {
        .point = "victim", .rank = VICTIM, .hit = 1, .target = VICTIM, .kind = MP_ACT_KILL};
    struct mp_opts o = {.nranks = NRANKS,
                        .fn = rank_main,
                        .arg = sh,
                        .timeout_ms = 120000,
                        .actions = &act,
                        .nactions = 1};
    struct mp_report rep;
    int rc = mp_run_opts(&o, &rep);
    printf("detect [GPU, %d ranks on one GPU] SIGKILL mid-AllReduce: survivors returned after",
           NRANKS);
    for (int r = 0; r < NRANKS; r++)
        if (r != VICTIM)
            printf(" %.1f", sh->detect_ms[r]);
    printf(" ms (bound 1000)\n");
    mp_shm_free(sh, sizeof(*sh));
    assert_int_equal(rc, 0);
    assert_true(rep.rank[VICTIM].acted_kill);
}

#endif

int main(void)
{
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    if (!gpu_present()) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
#ifdef ECCL_HAVE_CUDA
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dev_kill_allreduce)};
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 77;
#endif
}

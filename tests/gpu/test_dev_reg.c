/*
 * test_dev_reg.c - registered buffers on the GPU (core/reg.c): sends between ranks (processes)
 * sharing the GPU that go without a copy once the receiver mapped the sender's registration.
 *
 * Two ranks exchange messages from ecclMemAlloc buffers registered with ecclCommRegister, a
 * round at a time (a barrier between rounds, so that the announcement, the mapping and the
 * answer each have a round): every message is checked, and the counters must show that the
 * later rounds went zero-copy, that each rank mapped its peer's registration once, that smaller
 * messages, unregistered buffers, offsets inside a registration and a CUDA graph replayed with
 * new data are right, and that a deregistered buffer is unmapped by the peer and goes by copies.
 * Four ranks then run AlltoAll on registered buffers. With ECCL_LOCAL_REGISTER=0 nothing goes
 * zero-copy and everything is still right. cudaMalloc buffers go zero-copy too (legacy IPC),
 * and memory freed and allocated again under a registration goes by copies. Last, a receiver is SIGKILLed while the sender's
 * kernel waits for it to copy a zero-copy send: the sender gets ecclRemoteError within 1 s.
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

#include "core/core_int.h"
#include "eccl.h"
#include "tests/support/gpu.h"
#include "tests/support/mp.h"

#define BUF_BYTES ((size_t)40 << 20)

/* ECCL_TEST_GPU_QUICK (compute-sanitizer): smaller messages, still above what a connector holds. */
static bool quick;

#ifdef ECCL_HAVE_CUDA

struct shared {
    struct mp_barrier barrier;
    bool zc_expected; /* ECCL_LOCAL_REGISTER is not 0 */
};

static uint8_t pattern(int rank, int round, size_t i)
{
    return (uint8_t)(rank * 37 + round * 11 + (i * 2654435761u >> 13));
}

static void fill(uint8_t *h, size_t n, int rank, int round)
{
    for (size_t i = 0; i < n; i++)
        h[i] = pattern(rank, round, i);
}

static int check(const uint8_t *h, size_t n, int from, int round, int me, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (h[i] != pattern(from, round, i)) {
            printf("rank %d, %s, round %d: byte %zu of %zu is %u, want %u\n", me, what, round, i, n,
                   h[i], pattern(from, round, i));
            return 1;
        }
    }
    return 0;
}

/* What each rank sets up: a CUDA communicator, a stream, two ecclMemAlloc buffers of `bytes`
 * registered with it, and host memory of the same size. */
struct reg_rank {
    ecclComm_t comm;
    cudaStream_t st;
    uint8_t *s, *r;
    void *hs, *hr;
    uint8_t *host;
};

static int reg_rank_init(struct reg_rank *rr, int rank, int nranks, const ecclUniqueId *id,
                         size_t bytes)
{
    memset(rr, 0, sizeof(*rr));
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    void *s = NULL, *r = NULL;
    if (cudaSetDevice(0) != cudaSuccess ||
        ecclCommInitRankConfig(&rr->comm, nranks, *id, rank, &cfg) != ecclSuccess ||
        cudaStreamCreateWithFlags(&rr->st, cudaStreamNonBlocking) != cudaSuccess ||
        ecclMemAlloc(&s, bytes) != ecclSuccess || ecclMemAlloc(&r, bytes) != ecclSuccess ||
        ecclCommRegister(rr->comm, s, bytes, &rr->hs) != ecclSuccess ||
        ecclCommRegister(rr->comm, r, bytes, &rr->hr) != ecclSuccess ||
        !(rr->host = malloc(bytes))) {
        printf("rank %d: setup: %s\n", rank, ecclGetLastError(rr->comm));
        return 1;
    }
    rr->s = s;
    rr->r = r;
    return 0;
}

/* One exchange with the peer: `n` bytes from sbuf + soff to rbuf + roff, checked. */
static int exchange(ecclComm_t comm, cudaStream_t st, uint8_t *sbuf, size_t soff, uint8_t *rbuf,
                    size_t roff, size_t n, int me, int peer, int round, uint8_t *host,
                    const char *what)
{
    fill(host, n, me, round);
    if (gpu_upload(sbuf + soff, host, n, st) != 0 || cudaMemset(rbuf + roff, 0xee, n) != 0 ||
        cudaDeviceSynchronize() != cudaSuccess)
        return 1;
    ecclResult_t r = ecclGroupStart();
    if (r == ecclSuccess)
        r = ecclSend(sbuf + soff, n, ecclUint8, peer, comm, st);
    if (r == ecclSuccess)
        r = ecclRecv(rbuf + roff, n, ecclUint8, peer, comm, st);
    ecclResult_t g = ecclGroupEnd();
    if (r == ecclSuccess)
        r = g;
    if (r == ecclSuccess)
        r = gpu_stream_wait(comm, st, 60000);
    if (r != ecclSuccess) {
        printf("rank %d, %s, round %d: %s\n", me, what, round, ecclGetLastError(comm));
        return 1;
    }
    if (cudaMemcpy(host, rbuf + roff, n, cudaMemcpyDeviceToHost) != cudaSuccess)
        return 1;
    return check(host, n, peer, round, me, what);
}

/* Captures a send of n bytes from `src` and a receive into `rbuf` (in `mode`; with `reg`, src is
 * registered inside the capture, the handle in *reg), then replays the graph `reps` times, each
 * with new data, checking what arrives. */
static int graph_rounds(struct shared *sh, ecclComm_t comm, cudaStream_t st,
                        enum cudaStreamCaptureMode mode, void *src, void **reg, uint8_t *rbuf,
                        size_t n, int reps, int rank, int peer, int *round, uint8_t *host)
{
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    if (mp_barrier_wait(&sh->barrier, 60000) != 0 ||
        cudaStreamBeginCapture(st, mode) != cudaSuccess)
        return 1;
    ecclResult_t e = reg ? ecclCommRegister(comm, src, n, reg) : ecclSuccess;
    if (e == ecclSuccess)
        e = ecclGroupStart();
    if (e == ecclSuccess)
        e = ecclSend(src, n, ecclUint8, peer, comm, st);
    if (e == ecclSuccess)
        e = ecclRecv(rbuf, n, ecclUint8, peer, comm, st);
    ecclResult_t g = ecclGroupEnd();
    cudaError_t ce = cudaStreamEndCapture(st, &graph);
    if (ce != cudaSuccess || e != ecclSuccess || g != ecclSuccess ||
        cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
        printf("rank %d: capture (mode %d): %s; %s\n", rank, (int)mode, cudaGetErrorString(ce),
               ecclGetLastError(comm));
        return 1;
    }
    int bad = 0;
    for (int rep = 0; rep < reps && !bad; rep++, (*round)++) {
        fill(host, n, rank, *round);
        if (gpu_upload(src, host, n, st) != 0 || mp_barrier_wait(&sh->barrier, 60000) != 0 ||
            cudaGraphLaunch(exec, st) != cudaSuccess ||
            gpu_stream_wait(comm, st, 60000) != ecclSuccess ||
            cudaMemcpy(host, rbuf, n, cudaMemcpyDeviceToHost) != cudaSuccess) {
            printf("rank %d: replay %d (mode %d): %s\n", rank, rep, (int)mode,
                   ecclGetLastError(comm));
            bad = 1;
            break;
        }
        bad |= check(host, n, peer, *round, rank, "graph replay");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    return bad;
}

static int pair_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shared *sh = arg;
    int peer = 1 - rank;
    struct reg_rank rr;
    void *plain = NULL;
    if (reg_rank_init(&rr, rank, nranks, id, BUF_BYTES) != 0 ||
        cudaMalloc(&plain, BUF_BYTES) != cudaSuccess)
        return 1;
    ecclComm_t comm = rr.comm;
    cudaStream_t st = rr.st;
    uint8_t *sbuf = rr.s, *rbuf = rr.r, *host = rr.host;
    void *hs = rr.hs, *hr = rr.hr;
    int bad = 0;
    /* Sizes: 4 MiB, 32 MiB less 3 bytes (the copy's byte path), 1.5 MiB from an odd offset. */
    const size_t sizes[] = {quick ? 2u << 20 : 4u << 20, quick ? (4u << 20) - 3 : (32u << 20) - 3,
                            (3u << 19)};
    const size_t offs[] = {0, 0, 4097};
    int round = 0;
    for (; round < 6 && !bad; round++) {
        int k = round % 3;
        bad |= exchange(comm, st, sbuf, offs[k], rbuf, offs[k], sizes[k], rank, peer, round, host,
                        "registered");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    uint64_t sends = 0, imports = 0;
    int mapped = 0;
    core_reg_stats(comm, &sends, &imports, &mapped);
    printf("rank %d: after %d rounds: %llu zero-copy sends, %llu registrations mapped (%d now)\n",
           rank, round, (unsigned long long)sends, (unsigned long long)imports, mapped);
    if (sh->zc_expected && (sends < 4 || imports != 1 || mapped != 1)) {
        printf("rank %d: want at least 4 zero-copy sends (rounds 2 to 5) and 1 mapping\n", rank);
        bad = 1;
    }
    if (!sh->zc_expected && (sends != 0 || imports != 0)) {
        printf("rank %d: ECCL_LOCAL_REGISTER=0, and still zero-copy\n", rank);
        bad = 1;
    }
    /* A message the connector holds, and one from memory not registered: copies, right. */
    uint64_t before = sends;
    bad |= exchange(comm, st, sbuf, 0, rbuf, 0, 64u << 10, rank, peer, round++, host, "small");
    bad |= exchange(comm, st, plain, 0, rbuf, 0, 8u << 20, rank, peer, round++, host, "plain");
    core_reg_stats(comm, &sends, &imports, &mapped);
    if (sends != before) {
        printf("rank %d: a small or unregistered send went zero-copy\n", rank);
        bad = 1;
    }
    bad |= mp_barrier_wait(&sh->barrier, 60000);

    /* Captured into a graph and replayed with new data each time. */
    size_t gn = quick ? 2u << 20 : 6u << 20;
    if (!bad)
        bad |= graph_rounds(sh, comm, st, cudaStreamCaptureModeThreadLocal, sbuf, NULL, rbuf, gn, 3,
                            rank, peer, &round, host);
    /* A graph captured in global mode, from a cudaMalloc buffer registered during the capture:
     * the registration, its announcement and the peer's mapping happen while both ranks capture
     * and must not invalidate the captures. */
    void *gb = NULL, *hg = NULL;
    if (!bad) {
        if (cudaMalloc(&gb, gn) != cudaSuccess)
            return 1;
        bad |= graph_rounds(sh, comm, st, cudaStreamCaptureModeGlobal, gb, &hg, rbuf, gn, 2, rank,
                            peer, &round, host);
        if (ecclCommDeregister(comm, hg) != ecclSuccess)
            bad = 1;
        cudaFree(gb);
    }

    /* Deregistered: the peer unmaps it at its next receive, and sends go by copies. */
    if (ecclCommDeregister(comm, hs) != ecclSuccess ||
        ecclCommDeregister(comm, hs) != ecclInvalidArgument)
        bad = 1;
    bad |= mp_barrier_wait(&sh->barrier, 60000);
    core_reg_stats(comm, &before, &imports, &mapped);
    for (int i = 0; i < 2 && !bad; i++) {
        bad |= exchange(comm, st, sbuf, 0, rbuf, 0, 4u << 20, rank, peer, round++, host,
                        "deregistered");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    core_reg_stats(comm, &sends, &imports, &mapped);
    if (sends != before || mapped != 0) {
        printf("rank %d: after deregistration: %llu more zero-copy sends, %d mappings (want 0)\n",
               rank, (unsigned long long)(sends - before), mapped);
        bad = 1;
    }
    /* Memory freed while registered stays until the registration goes. */
    if (ecclMemFree(rbuf) != ecclSuccess || ecclMemFree(rbuf) != ecclInvalidArgument ||
        ecclCommDeregister(comm, hr) != ecclSuccess)
        bad = 1;
    if (ecclMemFree(sbuf) != ecclSuccess || ecclCommDestroy(comm) != ecclSuccess)
        bad = 1;
    cudaFree(plain);
    cudaStreamDestroy(st);
    free(host);
    return bad;
}

/* Runs `fn` on nranks processes sharing a struct shared. */
static void run_shared(int nranks, mp_rank_fn fn, bool zc)
{
    struct shared *sh = mp_shm_alloc(sizeof(*sh));
    assert_non_null(sh);
    mp_barrier_init(&sh->barrier, nranks);
    sh->zc_expected = zc;
    int rc = mp_run(nranks, fn, sh, 240000);
    mp_shm_free(sh, sizeof(*sh));
    assert_int_equal(rc, 0);
}

static void test_reg_pair(void **state)
{
    (void)state;
    run_shared(2, pair_main, true);
}

static void test_reg_pair_off(void **state)
{
    (void)state;
    setenv("ECCL_LOCAL_REGISTER", "0", 1);
    run_shared(2, pair_main, false);
    unsetenv("ECCL_LOCAL_REGISTER");
}

/* Buffers from cudaMalloc, shared as legacy CUDA IPC handles: zero-copy too. Memory freed and
 * allocated again under a registration is not sent from the peer's stale mapping. */
static int cudamalloc_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shared *sh = arg;
    int peer = 1 - rank;
    const size_t bytes = (size_t)8 << 20, n = (size_t)4 << 20;
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    cfg.deviceKind = ECCL_DEVICE_CUDA;
    ecclComm_t comm = NULL;
    cudaStream_t st;
    void *s = NULL, *r = NULL, *hs = NULL, *hr = NULL;
    uint8_t *host = malloc(bytes);
    if (!host || cudaSetDevice(0) != cudaSuccess ||
        ecclCommInitRankConfig(&comm, nranks, *id, rank, &cfg) != ecclSuccess ||
        cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess ||
        cudaMalloc(&s, bytes) != cudaSuccess || cudaMalloc(&r, bytes) != cudaSuccess ||
        ecclCommRegister(comm, s, bytes, &hs) != ecclSuccess ||
        ecclCommRegister(comm, r, bytes, &hr) != ecclSuccess) {
        printf("rank %d: setup: %s\n", rank, ecclGetLastError(comm));
        return 1;
    }
    int bad = 0, round = 0;
    for (; round < 4 && !bad; round++) {
        bad |= exchange(comm, st, s, 0, r, 0, n, rank, peer, round, host, "cudaMalloc");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    uint64_t sends = 0, imports = 0, before = 0;
    int mapped = 0;
    core_reg_stats(comm, &sends, &imports, &mapped);
    printf("rank %d: cudaMalloc buffers: %llu zero-copy sends, %llu registrations mapped\n", rank,
           (unsigned long long)sends, (unsigned long long)imports);
    if (sends < 2 || imports != 1) {
        printf("rank %d: want at least 2 zero-copy sends and 1 mapping\n", rank);
        bad = 1;
    }
    /* Freed and allocated again without deregistering (a user's mistake): copies, right. */
    void *s2 = NULL;
    if (cudaFree(s) != cudaSuccess || cudaMalloc(&s2, bytes) != cudaSuccess)
        return 1;
    before = sends;
    for (int i = 0; i < 2 && !bad; i++) {
        bad |= exchange(comm, st, s2, 0, r, 0, n, rank, peer, round++, host, "reallocated");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    core_reg_stats(comm, &sends, &imports, &mapped);
    if (sends != before) {
        printf("rank %d: %llu zero-copy sends from reallocated memory\n", rank,
               (unsigned long long)(sends - before));
        bad = 1;
    }
    if (ecclCommDeregister(comm, hs) != ecclSuccess ||
        ecclCommDeregister(comm, hr) != ecclSuccess || ecclCommDestroy(comm) != ecclSuccess)
        bad = 1;
    cudaFree(s2);
    cudaFree(r);
    cudaStreamDestroy(st);
    free(host);
    return bad;
}

static void test_reg_cudamalloc(void **state)
{
    (void)state;
    run_shared(2, cudamalloc_main, true);
}

/* A rank dies while its peer's kernel waits for it to copy a zero-copy send: the sender's call
 * ends with ecclRemoteError within 1 s and the GPU keeps working. */
struct kill_shared {
    struct mp_barrier barrier;
    _Atomic uint64_t kill_ms_bits;
    double detect_ms;
};

#define KILL_BYTES ((size_t)8 << 20)

static int kill_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct kill_shared *sh = arg;
    int peer = 1 - rank;
    struct reg_rank rr;
    if (reg_rank_init(&rr, rank, nranks, id, KILL_BYTES) != 0)
        return 1;
    ecclComm_t comm = rr.comm;
    cudaStream_t st = rr.st;
    uint8_t *s = rr.s, *r = rr.r, *host = rr.host;
    int bad = 0;
    for (int round = 0; round < 3 && !bad; round++) {
        bad |= exchange(comm, st, s, 0, r, 0, KILL_BYTES, rank, peer, round, host, "before");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    uint64_t before = 0, after = 0, imports = 0;
    int mapped = 0;
    core_reg_stats(comm, &before, &imports, &mapped);
    if (bad || before == 0) {
        printf("rank %d: no zero-copy send before the kill (%llu)\n", rank,
               (unsigned long long)before);
        return 1;
    }
    if (rank == 1) {
        /* Let rank 0's kernel post its step and wait for this rank, then die. */
        mp_die_at(&sh->kill_ms_bits, 100, "victim");
        return 1; /* not reached */
    }
    ecclResult_t res = ecclSend(s, KILL_BYTES, ecclUint8, peer, comm, st);
    core_reg_stats(comm, &after, &imports, &mapped);
    if (res == ecclSuccess)
        res = gpu_stream_wait(comm, st, 30000);
    sh->detect_ms = mp_ms_since(&sh->kill_ms_bits);
    if (after != before + 1) {
        printf("rank 0: the send was not zero-copy\n");
        bad = 1;
    }
    if (res != ecclRemoteError || sh->detect_ms > 1000) {
        printf("rank 0: the send gave %d after %.1f ms; want ecclRemoteError (%d) within 1000\n",
               res, sh->detect_ms, ecclRemoteError);
        bad = 1;
    }
    if (cudaStreamSynchronize(st) != cudaSuccess || cudaMemset(r, 0, KILL_BYTES) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
        printf("rank 0: the GPU reports an error after the abort\n");
        bad = 1;
    }
    if (ecclCommAbort(comm) != ecclSuccess || ecclMemFree(s) != ecclSuccess ||
        ecclMemFree(r) != ecclSuccess)
        bad = 1;
    /* The abort dropped the registrations with the communicator. */
    cudaStreamDestroy(st);
    free(host);
    return bad;
}

static void test_reg_kill(void **state)
{
    (void)state;
    if (quick) /* under compute-sanitizer the 1 s bound does not hold */
        skip();
    struct kill_shared *sh = mp_shm_alloc(sizeof(*sh));
    assert_non_null(sh);
    mp_barrier_init(&sh->barrier, 2);
    struct mp_action act = {
        .point = "victim", .rank = 1, .hit = 1, .target = 1, .kind = MP_ACT_KILL};
    struct mp_opts o = {.nranks = 2,
                        .fn = kill_main,
                        .arg = sh,
                        .timeout_ms = 120000,
                        .actions = &act,
                        .nactions = 1};
    struct mp_report rep;
    int rc = mp_run_opts(&o, &rep);
    printf("detect [GPU, 2 ranks on one GPU] SIGKILL while a zero-copy send waits: rank 0 "
           "returned after %.1f ms (bound 1000)\n",
           sh->detect_ms);
    mp_shm_free(sh, sizeof(*sh));
    assert_int_equal(rc, 0);
    assert_true(rep.rank[1].acted_kill);
}

#define A2A_RANKS 4
#define A2A_CHUNK ((size_t)3 << 20) /* bytes per peer: more than a connector holds */

static int a2a_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shared *sh = arg;
    size_t total = A2A_CHUNK * (size_t)nranks;
    struct reg_rank rr;
    if (reg_rank_init(&rr, rank, nranks, id, total) != 0)
        return 1;
    ecclComm_t comm = rr.comm;
    cudaStream_t st = rr.st;
    uint8_t *s = rr.s, *r = rr.r, *host = rr.host;
    void *hs = rr.hs, *hr = rr.hr;
    int bad = 0;
    for (int round = 0; round < 4 && !bad; round++) {
        /* Chunk j goes to rank j: pattern(rank * 8 + j). */
        for (int j = 0; j < nranks; j++)
            fill(host + (size_t)j * A2A_CHUNK, A2A_CHUNK, rank * 8 + j, round);
        if (gpu_upload(s, host, total, st) != 0)
            return 1;
        ecclResult_t e = ecclAlltoAll(s, r, A2A_CHUNK, ecclUint8, comm, st);
        if (e == ecclSuccess)
            e = gpu_stream_wait(comm, st, 60000);
        if (e != ecclSuccess || cudaMemcpy(host, r, total, cudaMemcpyDeviceToHost) != cudaSuccess) {
            printf("rank %d: AlltoAll round %d: %s\n", rank, round, ecclGetLastError(comm));
            return 1;
        }
        for (int j = 0; j < nranks && !bad; j++)
            bad |= check(host + (size_t)j * A2A_CHUNK, A2A_CHUNK, j * 8 + rank, round, rank,
                         "AlltoAll");
        bad |= mp_barrier_wait(&sh->barrier, 60000);
    }
    uint64_t sends = 0, imports = 0;
    int mapped = 0;
    core_reg_stats(comm, &sends, &imports, &mapped);
    printf("rank %d: AlltoAll of %d ranks: %llu zero-copy sends, %llu registrations mapped\n", rank,
           nranks, (unsigned long long)sends, (unsigned long long)imports);
    if (sends < (uint64_t)(nranks - 1) * 2 || imports != (uint64_t)(nranks - 1)) {
        printf("rank %d: want at least %d zero-copy sends and %d mappings\n", rank,
               (nranks - 1) * 2, nranks - 1);
        bad = 1;
    }
    if (ecclCommDeregister(comm, hs) != ecclSuccess ||
        ecclCommDeregister(comm, hr) != ecclSuccess || ecclCommDestroy(comm) != ecclSuccess ||
        ecclMemFree(s) != ecclSuccess || ecclMemFree(r) != ecclSuccess)
        bad = 1;
    cudaStreamDestroy(st);
    free(host);
    return bad;
}

static void test_reg_alltoall(void **state)
{
    (void)state;
    run_shared(A2A_RANKS, a2a_main, true);
}

#endif

int main(void)
{
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    /* Connectors of 1 MiB (8 slots of 128 KiB): the sizes below are chosen around it. */
    setenv("ECCL_P2P_SLOT_BYTES", "131072", 1);
    const char *q = getenv("ECCL_TEST_GPU_QUICK");
    quick = q && *q && strcmp(q, "0") != 0;
    if (!gpu_present()) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
#ifdef ECCL_HAVE_CUDA
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reg_pair),     cmocka_unit_test(test_reg_pair_off),
        cmocka_unit_test(test_reg_alltoall), cmocka_unit_test(test_reg_cudamalloc),
        cmocka_unit_test(test_reg_kill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 77;
#endif
}

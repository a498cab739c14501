/*
 * test_single_copy.c - single-copy Broadcast and AllGather (kernels/host_cma.h): with
 * ECCL_HOST_SINGLE_COPY_BYTES lowered so that every piece moves by descriptors, ranks as
 * processes (process_vm_readv) and as threads of one process (memcpy) get exact results, in
 * place and out of place, for every root, over several pipelining chunks; the descriptor
 * checks refuse a bad magic, a wrong length and a token that is not the sender's; and when a rank
 * is SIGKILLed in the middle of a 24 MiB single-copy Broadcast or AllGather on 3 ranks, the
 * survivors' calls (the root's too, which only posts descriptors) return ecclRemoteError within
 * 5 s.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "eccl.h"
#include "kernels/host_cma.h"
#include "tests/support/mp.h"

/* More than two pipelining chunks of KERN_CMA_CHUNK_BYTES, and an odd count. */
static const size_t counts[] = {1000, 2 * KERN_CMA_CHUNK_BYTES / 4 + 77};

static uint32_t value(int rank, size_t i, int salt)
{
    return (uint32_t)((size_t)rank * 2654435761u + i * 40503u + (size_t)salt * 977u);
}

static int check(const uint32_t *buf, size_t n, int src, size_t base, int salt, const char *what,
                 int rank)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != value(src, base + i, salt)) {
            printf("FAIL rank %d %s: element %zu is %u, expected %u\n", rank, what, i, buf[i],
                   value(src, base + i, salt));
            return 1;
        }
    }
    return 0;
}

static int run_colls(int rank, int nranks, ecclComm_t comm)
{
    size_t maxc = counts[sizeof(counts) / sizeof(counts[0]) - 1];
    uint32_t *send = malloc(maxc * 4), *recv = malloc(maxc * 4 * (size_t)nranks);
    int rc = 1;
    if (!send || !recv)
        goto out;
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
        size_t n = counts[k];
        for (int inplace = 0; inplace < 2; inplace++) {
            int salt = (int)(k * 2 + (size_t)inplace);
            /* AllGather */
            memset(recv, 0, n * 4 * (size_t)nranks);
            uint32_t *in = inplace ? recv + (size_t)rank * n : send;
            for (size_t i = 0; i < n; i++)
                in[i] = value(rank, i, salt);
            if (ecclAllGather(in, recv, n, ecclUint32, comm, NULL) != ecclSuccess) {
                printf("FAIL rank %d AllGather: %s\n", rank, ecclGetLastError(comm));
                goto out;
            }
            for (int r = 0; r < nranks; r++)
                if (check(recv + (size_t)r * n, n, r, 0, salt, "AllGather", rank))
                    goto out;
            /* Broadcast from every root */
            for (int root = 0; root < nranks; root++) {
                uint32_t *src = inplace ? recv : send;
                memset(recv, 0, n * 4);
                if (rank == root)
                    for (size_t i = 0; i < n; i++)
                        src[i] = value(root, i, salt + 100);
                if (ecclBroadcast(src, recv, n, ecclUint32, root, comm, NULL) != ecclSuccess) {
                    printf("FAIL rank %d Broadcast: %s\n", rank, ecclGetLastError(comm));
                    goto out;
                }
                if (check(recv, n, root, 0, salt + 100, "Broadcast", rank))
                    goto out;
            }
        }
    }
    rc = 0;
out:
    free(send);
    free(recv);
    return rc;
}

static int proc_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess) {
        printf("FAIL rank %d: init: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    int rc = run_colls(rank, nranks, comm);
    if (rc != 0) {
        ecclCommAbort(comm);
        return rc;
    }
    return ecclCommDestroy(comm) == ecclSuccess ? 0 : 1;
}

static int thread_rank(int rank, int nranks, ecclComm_t comm, void *arg)
{
    (void)arg;
    return run_colls(rank, nranks, comm);
}

static void test_procs(void **state)
{
    (void)state;
    for (int n = 2; n <= 4; n++)
        assert_int_equal(mp_run(n, proc_rank, NULL, 60000), 0);
}

static void test_threads(void **state)
{
    (void)state;
    assert_int_equal(mt_run_comms(3, thread_rank, NULL, 60000), 0);
}

static void test_descriptor_checks(void **state)
{
    (void)state;
    uint32_t src[64], dst[64];
    for (int i = 0; i < 64; i++)
        src[i] = (uint32_t)i * 7u;
    struct kern_cma_desc d;
    kern_cma_describe(&d, src, sizeof(src));
    memset(dst, 0, sizeof(dst));
    assert_int_equal(kern_cma_read(&d, dst, sizeof(dst), 1, NULL), ecclSuccess);
    assert_memory_equal(dst, src, sizeof(src));
    assert_int_equal(kern_cma_read(&d, dst, sizeof(dst) - 4, 1, NULL), ecclInvalidUsage);
    struct kern_cma_desc bad = d;
    bad.magic ^= 1;
    assert_int_equal(kern_cma_read(&bad, dst, sizeof(dst), 1, NULL), ecclInvalidUsage);
    bad = d;
    bad.token ^= 1;
    assert_int_equal(kern_cma_read(&bad, dst, sizeof(dst), 1, NULL), ecclSystemError);

    /* Another process: its descriptor through a pipe, its buffer read with process_vm_readv;
     * the same descriptor with a wrong token is refused. */
    int fds[2], go[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        close(go[1]);
        for (int i = 0; i < 64; i++)
            src[i] = (uint32_t)i * 13u + 5u;
        struct kern_cma_desc cd;
        kern_cma_describe(&cd, src, sizeof(src));
        char c;
        _exit(write(fds[1], &cd, sizeof(cd)) == (ssize_t)sizeof(cd) && read(go[0], &c, 1) >= 0 ? 0
                                                                                               : 1);
    }
    close(fds[1]);
    close(go[0]);
    struct kern_cma_desc cd;
    assert_int_equal(read(fds[0], &cd, sizeof(cd)), (ssize_t)sizeof(cd));
    memset(dst, 0, sizeof(dst));
    ecclResult_t res = kern_cma_read(&cd, dst, sizeof(dst), 1, NULL);
    struct kern_cma_desc wrong = cd;
    wrong.token ^= 1;
    ecclResult_t res_wrong = kern_cma_read(&wrong, dst, sizeof(dst), 1, NULL);
    ecclResult_t res_wrong2 = kern_cma_read(&cd, dst + 1, sizeof(dst) - 4, 1, NULL);
    /* A range the sender does not map (it freed its buffer): EFAULT, for the caller to judge. */
    struct kern_cma_desc unmapped = cd;
    unmapped.addr = 4096; /* the first pages are never mapped */
    int err_unmapped = -1;
    ecclResult_t res_unmapped = kern_cma_read(&unmapped, dst, sizeof(dst), 1, &err_unmapped);
    close(go[1]); /* lets the child exit */
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(fds[0]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* The sender has exited: ESRCH. */
    int err_gone = -1;
    ecclResult_t res_gone = kern_cma_read(&cd, dst, sizeof(dst), 1, &err_gone);
    assert_int_equal(res_gone, ecclSystemError);
    assert_int_equal(err_gone, ESRCH);
    assert_int_equal(res_unmapped, ecclSystemError);
    assert_int_equal(err_unmapped, EFAULT);
    assert_int_equal(res, ecclSuccess);
    for (int i = 0; i < 64; i++)
        assert_int_equal(dst[i], (uint32_t)i * 13u + 5u);
    assert_int_equal(res_wrong, ecclSystemError);
    assert_int_equal(res_wrong2, ecclInvalidUsage);
}

/* --- a killed peer ------------------------------------------------------------------------ */

#define KILL_RANKS  3
#define KILL_VICTIM 2 /* the end of the Broadcast chain from root 0: the root must still see it */
#define KILL_BYTES  (24u << 20)
#define KILL_BOUND  5000.0

struct kill_arg {
    struct mp_barrier *barrier;
    int bcast; /* 0: AllGather, 1: Broadcast */
};

static ecclResult_t kill_call(const struct kill_arg *a, ecclComm_t comm, uint8_t *send,
                              uint8_t *recv)
{
    if (a->bcast)
        return ecclBroadcast(send, recv, KILL_BYTES, ecclUint8, 0, comm, NULL);
    return ecclAllGather(send, recv, KILL_BYTES / KILL_RANKS, ecclUint8, comm, NULL);
}

static int kill_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct kill_arg *a = arg;
    uint8_t *send = calloc(KILL_BYTES, 1), *recv = calloc(KILL_BYTES, 1);
    ecclComm_t comm;
    int bad = 1;
    if (!send || !recv)
        goto out_free;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess) {
        printf("FAIL rank %d: init: %s\n", rank, ecclGetLastError(NULL));
        goto out_free;
    }
    if (kill_call(a, comm, send, recv) != ecclSuccess) {
        printf("FAIL rank %d: the call before the fault: %s\n", rank, ecclGetLastError(comm));
        goto out_abort;
    }
    if (mp_barrier_wait(a->barrier, 30000) != 0) {
        printf("FAIL rank %d: barrier\n", rank);
        goto out_abort;
    }
    if (rank == KILL_VICTIM)
        mp_point("victim"); /* the parent SIGKILLs it here */
    double t0 = mp_now_ms();
    ecclResult_t r = kill_call(a, comm, send, recv);
    double took = mp_now_ms() - t0;
    bad = 0;
    if (r != ecclRemoteError) {
        printf("FAIL rank %d: the call returned %d (%s), want ecclRemoteError\n", rank, (int)r,
               ecclGetErrorString(r));
        bad = 1;
    }
    if (took > KILL_BOUND) {
        printf("FAIL rank %d: the call returned after %.0f ms\n", rank, took);
        bad = 1;
    }
out_abort:
    ecclCommAbort(comm);
out_free:
    free(send);
    free(recv);
    return bad;
}

static void run_kill(int bcast)
{
    struct kill_arg a = {.bcast = bcast};
    a.barrier = mp_shm_alloc(sizeof(*a.barrier));
    assert_non_null(a.barrier);
    mp_barrier_init(a.barrier, KILL_RANKS);
    int rc = mp_run_victim(KILL_RANKS, KILL_VICTIM, MP_ACT_KILL, kill_rank, &a, 60000, NULL);
    mp_shm_free(a.barrier, sizeof(*a.barrier));
    assert_int_equal(rc, 0);
}

static void test_kill_broadcast(void **state)
{
    (void)state;
    run_kill(1);
}

static void test_kill_allgather(void **state)
{
    (void)state;
    run_kill(0);
}

int main(void)
{
    setenv("ECCL_HOST_SINGLE_COPY_BYTES", "1024", 1);
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor_checks), cmocka_unit_test(test_procs),
        cmocka_unit_test(test_threads),           cmocka_unit_test(test_kill_broadcast),
        cmocka_unit_test(test_kill_allgather),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

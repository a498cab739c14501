/*
 * test_single_copy.c - single-copy Broadcast and AllGather (kernels/host_cma.h): with
 * ECCL_HOST_SINGLE_COPY_BYTES lowered so that every piece moves by descriptors, ranks as
 * processes (process_vm_readv) and as threads of one process (memcpy) get exact results, in
 * place and out of place, for every root, over several pipelining chunks; and the descriptor
 * checks refuse a bad magic, a wrong length and a token that is not the sender's.
 */
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
    assert_int_equal(kern_cma_read(&d, dst, sizeof(dst), 1), ecclSuccess);
    assert_memory_equal(dst, src, sizeof(src));
    assert_int_equal(kern_cma_read(&d, dst, sizeof(dst) - 4, 1), ecclInvalidUsage);
    struct kern_cma_desc bad = d;
    bad.magic ^= 1;
    assert_int_equal(kern_cma_read(&bad, dst, sizeof(dst), 1), ecclInvalidUsage);
    bad = d;
    bad.token ^= 1;
    assert_int_equal(kern_cma_read(&bad, dst, sizeof(dst), 1), ecclSystemError);

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
    ecclResult_t res = kern_cma_read(&cd, dst, sizeof(dst), 1);
    struct kern_cma_desc wrong = cd;
    wrong.token ^= 1;
    ecclResult_t res_wrong = kern_cma_read(&wrong, dst, sizeof(dst), 1);
    ecclResult_t res_wrong2 = kern_cma_read(&cd, dst + 1, sizeof(dst) - 4, 1);
    close(go[1]); /* lets the child exit */
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(fds[0]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(res, ecclSuccess);
    for (int i = 0; i < 64; i++)
        assert_int_equal(dst[i], (uint32_t)i * 13u + 5u);
    assert_int_equal(res_wrong, ecclSystemError);
    assert_int_equal(res_wrong2, ecclInvalidUsage);
}

int main(void)
{
    setenv("ECCL_HOST_SINGLE_COPY_BYTES", "1024", 1);
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor_checks),
        cmocka_unit_test(test_procs),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

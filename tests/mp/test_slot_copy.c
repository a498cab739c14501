/*
 * test_slot_copy.c - AllGather, Broadcast and the ring AllReduce through connector slots, where
 * a rank copies one source to its output and to the slot in one pass (kern_copy2,
 * kernels/host_copy.h): single copy off (ECCL_HOST_SINGLE_COPY_BYTES unset, its default), ring
 * AllReduce and no flat path, so that every size takes the slots. With 2, 3 and 4 ranks as
 * processes, in place and out of place, buffers misaligned by an odd number of bytes, and byte
 * counts around the copy's switch to vector loops (256), its steps (32, 64) and the slot size
 * (128 KiB, one step) the results are exact; Broadcast from every root. The same with the slots
 * and the output buffers written by streaming stores (ECCL_HOST_STREAM=1,
 * ECCL_HOST_STREAM_OUT_BYTES=1: kern_copy2_stream, kern_copy_stream), and with the even ranks
 * streaming into the slots and the odd ones not (the choice is each sender's own), and with ranks
 * that ask for different slot sizes (ECCL_SHM_SLOT_BYTES: they agree on the smallest). Then a rank
 * SIGKILLed in the middle of a 24 MiB AllGather and Broadcast on 3 ranks: the survivors' calls
 * return ecclRemoteError within 5 s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

#define SLOT (128 * 1024)

static const size_t counts[] = {1,    31,       255,  256,      257,          320,
                                4097, SLOT - 1, SLOT, SLOT + 1, 3 * SLOT + 77};
#define MAXC (3 * SLOT + 77)

static uint8_t value(int rank, size_t i, int salt)
{
    return (uint8_t)((size_t)rank * 151u + i * 7u + (size_t)salt * 29u + (i >> 8));
}

static int check(const uint8_t *buf, size_t n, int src, int salt, const char *what, size_t count,
                 int rank)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != value(src, i, salt)) {
            printf("FAIL rank %d %s of %zu bytes: byte %zu from rank %d is %u, expected %u\n", rank,
                   what, count, i, src, buf[i], value(src, i, salt));
            return 1;
        }
    }
    return 0;
}

static int run_one_count(int rank, int nranks, ecclComm_t comm, uint8_t *send, uint8_t *recv,
                         size_t n, int inplace, int salt)
{
    /* AllGather */
    memset(recv, 0, n * (size_t)nranks);
    uint8_t *in = inplace ? recv + (size_t)rank * n : send;
    for (size_t i = 0; i < n; i++)
        in[i] = value(rank, i, salt);
    if (ecclAllGather(in, recv, n, ecclUint8, comm, NULL) != ecclSuccess) {
        printf("FAIL rank %d AllGather of %zu bytes: %s\n", rank, n, ecclGetLastError(comm));
        return 1;
    }
    for (int r = 0; r < nranks; r++)
        if (check(recv + (size_t)r * n, n, r, salt, "AllGather", n, rank))
            return 1;
    /* Broadcast from every root */
    for (int root = 0; root < nranks; root++) {
        uint8_t *src = inplace ? recv : send;
        memset(recv, 0, n);
        if (rank == root)
            for (size_t i = 0; i < n; i++)
                src[i] = value(root, i, salt + 1);
        if (ecclBroadcast(src, recv, n, ecclUint8, root, comm, NULL) != ecclSuccess) {
            printf("FAIL rank %d Broadcast of %zu bytes: %s\n", rank, n, ecclGetLastError(comm));
            return 1;
        }
        if (check(recv, n, root, salt + 1, "Broadcast", n, rank))
            return 1;
    }
    /* AllReduce (uint8 sums wrap alike on every rank): its AllGather phase passes chunks on
     * with the same one-pass copy. */
    uint8_t *ain = inplace ? recv : send;
    for (size_t i = 0; i < n; i++)
        ain[i] = value(rank, i, salt + 2);
    if (ecclAllReduce(ain, recv, n, ecclUint8, ecclSum, comm, NULL) != ecclSuccess) {
        printf("FAIL rank %d AllReduce of %zu bytes: %s\n", rank, n, ecclGetLastError(comm));
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t want = 0;
        for (int r = 0; r < nranks; r++)
            want = (uint8_t)(want + value(r, i, salt + 2));
        if (recv[i] != want) {
            printf("FAIL rank %d AllReduce of %zu bytes: byte %zu is %u, expected %u\n", rank, n, i,
                   recv[i], want);
            return 1;
        }
    }
    return 0;
}

/* arg: NULL, or ECCL_HOST_STREAM for the even ranks and the odd ones, and
 * ECCL_HOST_STREAM_OUT_BYTES for all (NULL: the default); slots: NULL, or ECCL_SHM_SLOT_BYTES
 * for rank r in slots[r % 3] (NULL: unset). */
struct stream_arg {
    const char *even, *odd, *out;
    const char *const *slots;
};

static int sizes_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    const struct stream_arg *st = arg;
    if (st && st->even)
        setenv("ECCL_HOST_STREAM", rank % 2 ? st->odd : st->even, 1);
    if (st && st->slots && st->slots[rank % 3])
        setenv("ECCL_SHM_SLOT_BYTES", st->slots[rank % 3], 1);
    if (st && st->out)
        setenv("ECCL_HOST_STREAM_OUT_BYTES", st->out, 1);
    /* Odd offsets: the vector loops meet misaligned sources and destinations. */
    uint8_t *send_mem = malloc(MAXC + 64), *recv_mem = malloc(MAXC * (size_t)nranks + 64);
    ecclComm_t comm;
    int rc = 1;
    if (!send_mem || !recv_mem)
        goto out_free;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess) {
        printf("FAIL rank %d: init: %s\n", rank, ecclGetLastError(NULL));
        goto out_free;
    }
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
        for (int inplace = 0; inplace < 2; inplace++)
            if (run_one_count(rank, nranks, comm, send_mem + 1 + k % 7, recv_mem + 3 + k % 5,
                              counts[k], inplace, (int)(k * 4 + (size_t)inplace)))
                goto out_abort;
    rc = ecclCommDestroy(comm) == ecclSuccess ? 0 : 1;
    goto out_free;
out_abort:
    ecclCommAbort(comm);
out_free:
    free(send_mem);
    free(recv_mem);
    return rc;
}

static void test_sizes(void **state)
{
    (void)state;
    for (int n = 2; n <= 4; n++)
        assert_int_equal(mp_run(n, sizes_rank, NULL, 60000), 0);
}

static void test_sizes_streamed(void **state)
{
    (void)state;
    struct stream_arg all = {"1", "1", "1", NULL}, half = {"1", "0", NULL, NULL};
    for (int n = 2; n <= 4; n++) {
        assert_int_equal(mp_run(n, sizes_rank, &all, 60000), 0);
        assert_int_equal(mp_run(n, sizes_rank, &half, 60000), 0);
    }
}

/* Ranks that ask for different slot sizes use the smallest: every rank cuts the same steps. */
static void test_slot_sizes_differ(void **state)
{
    (void)state;
    static const char *const slots[3] = {"65536", "262144", NULL};
    struct stream_arg differ = {.slots = slots};
    for (int n = 2; n <= 4; n++)
        assert_int_equal(mp_run(n, sizes_rank, &differ, 60000), 0);
}

/* --- a killed peer ------------------------------------------------------------------------ */

#define KILL_RANKS  3
#define KILL_VICTIM 1
#define KILL_BYTES  (24u << 20)
#define KILL_BOUND  5000.0

struct kill_shared {
    struct mp_barrier barrier;
};

struct kill_arg {
    struct kill_shared *sh;
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
    if (mp_barrier_wait(&a->sh->barrier, 30000) != 0) {
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
    a.sh = mp_shm_alloc(sizeof(*a.sh));
    assert_non_null(a.sh);
    mp_barrier_init(&a.sh->barrier, KILL_RANKS);
    int rc = mp_run_victim(KILL_RANKS, KILL_VICTIM, MP_ACT_KILL, kill_rank, &a, 60000, NULL);
    mp_shm_free(a.sh, sizeof(*a.sh));
    assert_int_equal(rc, 0);
}

static void test_kill_allgather(void **state)
{
    (void)state;
    run_kill(0);
}

static void test_kill_broadcast(void **state)
{
    (void)state;
    run_kill(1);
}

int main(void)
{
    unsetenv("ECCL_HOST_SINGLE_COPY_BYTES");
    setenv("ECCL_ALGO", "ring", 1);
    setenv("ECCL_FLAT_MAX_BYTES", "0", 1);
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_sizes_streamed),
        cmocka_unit_test(test_slot_sizes_differ),
        cmocka_unit_test(test_kill_allgather),
        cmocka_unit_test(test_kill_broadcast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

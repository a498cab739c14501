/*
 * test_split_shrink.c - ecclCommSplit and ecclCommShrink on healthy host communicators, ranks as
 * processes and as threads: the new communicators have the sizes and rank orders NCCL defines
 * (split: by color, then key, then old rank; shrink: survivors keep their relative order), their
 * AllReduce is correct, and the parent keeps working after a split. Also: revoke makes later
 * calls fail with a clear error, and finalize+destroy of a healthy communicator is clean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

/* Sum of ints 0..n-1 of `members` through an AllReduce of each member's rank in `comm`. */
static int check_allreduce(ecclComm_t comm, int expect_n, int expect_rank, const char *what,
                           int world_rank)
{
    int n = -1, me = -1;
    ecclCommCount(comm, &n);
    ecclCommUserRank(comm, &me);
    if (n != expect_n || me != expect_rank) {
        printf("rank %d: %s has %d ranks and says I am %d (want %d, %d)\n", world_rank, what, n, me,
               expect_n, expect_rank);
        return 1;
    }
    int64_t v[257], out[257];
    for (int i = 0; i < 257; i++)
        v[i] = me * 1000 + i;
    ecclResult_t r = ecclAllReduce(v, out, 257, ecclInt64, ecclSum, comm, NULL);
    if (r != ecclSuccess) {
        printf("rank %d: AllReduce on %s: %s\n", world_rank, what, ecclGetLastError(comm));
        return 1;
    }
    for (int i = 0; i < 257; i++) {
        int64_t want = (int64_t)1000 * n * (n - 1) / 2 + (int64_t)n * i;
        if (out[i] != want) {
            printf("rank %d: %s AllReduce[%d] = %lld, want %lld\n", world_rank, what, i,
                   (long long)out[i], (long long)want);
            return 1;
        }
    }
    return 0;
}

static int split_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    int bad = 0;
    /* Two colors by parity, keys reverse the order; the last rank opts out. */
    int color = rank == nranks - 1 ? ECCL_SPLIT_NOCOLOR : rank % 2;
    ecclComm_t sub = NULL;
    ecclResult_t r = ecclCommSplit(comm, color, nranks - rank, &sub, NULL);
    if (r != ecclSuccess) {
        printf("rank %d: split: %s\n", rank, ecclGetLastError(comm));
        return 1;
    }
    if (color == ECCL_SPLIT_NOCOLOR) {
        bad |= sub != NULL;
    } else {
        /* Members of my color among ranks 0..nranks-2, ordered by key = nranks - rank, i.e.
         * by descending old rank. */
        int members = 0, higher = 0;
        for (int q = 0; q < nranks - 1; q++) {
            if (q % 2 != color)
                continue;
            members++;
            higher += q > rank;
        }
        bad |= check_allreduce(sub, members, higher, "the split communicator", rank);
        bad |= ecclCommDestroy(sub) != ecclSuccess;
    }
    bad |= check_allreduce(comm, nranks, rank, "the parent after split", rank);
    bad |= ecclCommFinalize(comm) != ecclSuccess;
    bad |= ecclCommDestroy(comm) != ecclSuccess;
    return bad;
}

static void test_split_procs(void **s)
{
    (void)s;
    assert_int_equal(mp_run(5, split_rank, NULL, 60000), 0);
}

static void test_split_threads(void **s)
{
    (void)s;
    assert_int_equal(mt_run(4, split_rank, NULL, 60000), 0);
}

struct shrink_ctx {
    struct mp_barrier barrier;
};

static int shrink_real(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shrink_ctx *c = arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    int bad = check_allreduce(comm, nranks, rank, "the parent", rank);
    int exclude[2] = {1, nranks - 1};
    int nex = 2;
    bool excluded = rank == 1 || rank == nranks - 1;
    if (!excluded) {
        ecclComm_t small = NULL;
        ecclResult_t r = ecclCommShrink(comm, exclude, nex, &small, NULL, ECCL_SHRINK_DEFAULT);
        if (r != ecclSuccess) {
            printf("rank %d: shrink: %s\n", rank, ecclGetLastError(comm));
            bad = 1;
        } else {
            int newrank = rank == 0 ? 0 : rank - 1; /* ranks 0, 2, 3, .. n-2 */
            bad |= check_allreduce(small, nranks - 2, newrank, "the shrunk communicator", rank);
            bad |= ecclCommDestroy(small) != ecclSuccess;
        }
    }
    /* Everyone destroys the parent once the survivors are done with their new one. */
    if (mp_barrier_wait(&c->barrier, 30000) != 0)
        bad = 1;
    bad |= ecclCommDestroy(comm) != ecclSuccess;
    return bad;
}

static void test_shrink_procs(void **s)
{
    (void)s;
    struct shrink_ctx *c = mp_shm_alloc(sizeof(*c));
    assert_non_null(c);
    mp_barrier_init(&c->barrier, 5);
    assert_int_equal(mp_run(5, shrink_real, c, 60000), 0);
    mp_shm_free(c, sizeof(*c));
}

static void test_shrink_threads(void **s)
{
    (void)s;
    struct shrink_ctx *c = mp_shm_alloc(sizeof(*c));
    assert_non_null(c);
    mp_barrier_init(&c->barrier, 4);
    assert_int_equal(mt_run(4, shrink_real, c, 60000), 0);
    mp_shm_free(c, sizeof(*c));
}

static int revoke_rank(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    struct shrink_ctx *c = arg;
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    int bad = check_allreduce(comm, nranks, rank, "the communicator", rank);
    bad |= ecclCommRevoke(comm, 0) != ecclSuccess; /* nothing in flight */
    bad |= ecclCommRevoke(comm, 7) != ecclInvalidArgument;
    float x = 1, y = 0;
    ecclResult_t r = ecclAllReduce(&x, &y, 1, ecclFloat, ecclSum, comm, NULL);
    if (r == ecclSuccess || !mp_text_has(ecclGetLastError(comm), "revoked")) {
        printf("rank %d: AllReduce after revoke returned %d, '%s'\n", rank, r,
               ecclGetLastError(comm));
        bad = 1;
    }
    /* An abort closes this rank's service connections without a goodbye, which its peers
     * rightly take for a failure: abort only when every rank has checked. */
    if (mp_barrier_wait(&c->barrier, 30000) != 0)
        bad = 1;
    bad |= ecclCommAbort(comm) != ecclSuccess;
    return bad;
}

static void test_revoke(void **s)
{
    (void)s;
    struct shrink_ctx *c = mp_shm_alloc(sizeof(*c));
    assert_non_null(c);
    mp_barrier_init(&c->barrier, 3);
    assert_int_equal(mt_run(3, revoke_rank, c, 60000), 0);
    mp_shm_free(c, sizeof(*c));
}

int main(void)
{
    mp_env_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_procs),  cmocka_unit_test(test_split_threads),
        cmocka_unit_test(test_shrink_procs), cmocka_unit_test(test_shrink_threads),
        cmocka_unit_test(test_revoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

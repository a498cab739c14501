/*
 * colls.h - the collective correctness matrix, run by every rank of a test (processes or
 * threads): every collective x data type x op x size x in/out-of-place against a reference
 * computed here, then back-to-back rooted collectives and groups that mix collectives and p2p.
 *
 * The case parameters (seed, root, p2p shift) derive from the case itself, not from its position
 * in the run, so a failing case reruns alone with the same data through the filter options
 * (--coll --type --op --count --inplace --ranks; --quick trims the largest size at 8 ranks). A failing case prints one line with every
 * parameter; rank 0 prints a summary per run.
 */
#ifndef ECCL_TESTS_SUPPORT_COLLS_H
#define ECCL_TESTS_SUPPORT_COLLS_H

#include <stdbool.h>
#include <stddef.h>

#include "eccl.h"

enum tc_coll {
    TC_ALLREDUCE = 0,
    TC_BROADCAST,
    TC_REDUCE,
    TC_ALLGATHER,
    TC_REDUCESCATTER,
    TC_SENDRECV,
    TC_ALLTOALL,
    TC_GATHER,
    TC_SCATTER,
    TC_NUM_COLLS,
};

const char *tc_coll_name(int coll);

/* -1 (or false for the bools) means "no restriction". */
struct tc_filter {
    int coll;
    int dtype;
    int op;
    long long count;
    int inplace;
    int ranks;
    bool no_extras;   /* skip the back-to-back and group tests */
    bool only_extras; /* only those */
    bool quick;       /* largest size with 8+ ranks: a type x op subset only (colls.c) */
};

void tc_filter_init(struct tc_filter *f);
/* Parses the filter options; returns -1 (after printing usage) on a bad option. */
int tc_filter_parse(struct tc_filter *f, int argc, char **argv);
/* True when the filter lets a run with this many ranks happen. */
bool tc_filter_ranks(const struct tc_filter *f, int nranks);

struct tc_params {
    const char *mode; /* "processes", "threads"... for the messages */
    int nranks;
    struct tc_filter filter;
};

/* State shared by the ranks of one run (lives in mp_shm memory). */
struct tc_shared;
struct tc_shared *tc_shared_create(int nranks);
void tc_shared_destroy(struct tc_shared *sh);

/* One rank's part of the whole run, on a communicator the caller made. Returns 0 when every
 * case passed on this rank. */
int tc_rank_run(const struct tc_params *p, struct tc_shared *sh, int rank, ecclComm_t comm);
/* Prints the summary line of a run; returns the number of failed (case, rank) pairs plus the
 * ranks that stopped early. */
long tc_summary(const struct tc_params *p, struct tc_shared *sh, double elapsed_ms);

/* The largest count the matrix uses for a type: 1 MiB of elements plus 3. */
size_t tc_large_count(int dtype);

#endif

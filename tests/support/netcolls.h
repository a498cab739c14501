/*
 * netcolls.h - what the network-transport tests share: per-rank environment set after the fork
 * (host ids, ECCL_SHM_DISABLE, socket counts, a log file per rank), the collective run they
 * check (parts of the tests/support/colls.c matrix plus a few collectives of more than 4 MiB),
 * and a scan of the ranks' INFO logs that says which transport each connector used.
 *
 * Transport lines: core logs one INFO line per connector, containing "via NET/Socket" for a
 * network connector and "via SHM" for a shared-memory one, with the two ranks written
 * "A[..] -> B[..]" (as NCCL does) or "A -> B"; nc_log_scan counts them and checks each line's
 * ranks against the hosts the test put them on.
 */
#ifndef ECCL_TESTS_SUPPORT_NETCOLLS_H
#define ECCL_TESTS_SUPPORT_NETCOLLS_H

#include <stdbool.h>
#include <stddef.h>

#include "eccl.h"
#include "tests/support/colls.h"

/* One variable for a rank: value NULL unsets it. */
struct nc_env {
    const char *name;
    const char *value;
};

/* In a forked rank, before any eccl call: sets the variables and, when log_dir is not NULL,
 * sends this rank's log (INFO, subsystems INIT,NET,SHM; WARN lines too) to
 * log_dir/rank<rank>.log; then makes the library read its variables again. 0, or -1. */
int nc_rank_env(const struct nc_env *env, int nenv, const char *log_dir, int rank);

/* What nc_rank_colls runs. */
struct nc_plan {
    const int *dtypes; /* the matrix (every collective, op, size, in/out of place) per type */
    int ndtypes;
    bool all_types; /* the whole matrix instead (every type) */
    bool extras;    /* the back-to-back and group tests of colls.c */
    bool large;     /* AllReduce, Broadcast, AllGather, ReduceScatter of more than 4 MiB */
};

/* One rank's part (processes; p->filter is overridden per type). Returns 0 when all passed. */
int nc_rank_colls(const struct tc_params *p, struct tc_shared *sh, int rank, ecclComm_t comm,
                  const struct nc_plan *plan);

/* A communicator on the host device with an optional watchdog (timeout_ms <= 0: default). */
ecclResult_t nc_comm_init(ecclComm_t *comm, int nranks, const ecclUniqueId *id, int rank,
                          int timeout_ms);

/* Init, nc_rank_colls, finalize, destroy, each result checked (abort after a failure). */
int nc_rank_full(const struct tc_params *p, struct tc_shared *sh, int rank, int nranks,
                 const ecclUniqueId *id, const struct nc_plan *plan);

struct nc_links {
    int net;            /* lines with "via NET/Socket" */
    int shm;            /* lines with "via SHM" */
    int net_same_host;  /* network lines whose ranks share a host (when the ranks parse) */
    int shm_cross_host; /* shared-memory lines whose ranks are on different hosts */
    int unparsed;       /* transport lines without "A -> B" */
    int net_ranks;      /* ranks whose log has a network line */
    int shm_ranks;      /* ranks whose log has a shared-memory line */
    int missing;        /* ranks without a log file */
};

/* Reads log_dir/rank<r>.log for every rank; host[r] is rank r's host (any int). Prints the first
 * lines that break the expectations. Returns 0, or -1 when a file cannot be read. */
int nc_log_scan(const char *log_dir, int nranks, const int *host, struct nc_links *out);
/* Prints the WARN lines and the last transport lines of every rank's log (after a failure). */
void nc_log_dump(const char *log_dir, int nranks);
/* A fresh directory for the logs (/tmp/eccl-netlog-<pid>-XXXXXX; folders of dead pids are
 * removed first); nc_log_dir_remove removes it and its files. */
int nc_log_dir_make(char *dir, size_t len);
void nc_log_dir_remove(const char *dir);

/* Milliseconds statistics: sorts v. */
double nc_median(double *v, int n);
double nc_max(const double *v, int n);

#endif

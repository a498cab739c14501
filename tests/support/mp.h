/*
 * mp.h - the multi-rank test harness.
 *
 * mp_run forks one process per rank, mt_run starts one thread per rank; both hand each rank one
 * ecclUniqueId made by the parent, wait with a hard deadline and report, per rank,
 * whether it passed. At the deadline mp_run SIGKILLs every child still alive (by pid); mt_run,
 * which cannot kill a thread, prints the ranks still running and ends the whole test process.
 *
 * Fault hooks (for the fault tests): a rank calls mp_point("name") at an interesting place; the
 * parent, told through struct mp_action, can SIGKILL or SIGSTOP that rank (or another one) when
 * it gets there, and SIGCONT a stopped rank later. A rank reporting a point blocks until the
 * parent has acted, so a kill lands exactly at the point. Outside mp_run, mp_point does nothing.
 *
 * Also here: memory shared by all ranks of either kind (mp_shm_alloc) and a barrier with a
 * deadline that works in it (struct mp_barrier). Ranks must not use cmocka asserts: a rank
 * returns 0 on success and nonzero on failure, and the test asserts on what mp_run returns.
 */
#ifndef ECCL_TESTS_SUPPORT_MP_H
#define ECCL_TESTS_SUPPORT_MP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eccl.h"

#define MP_MAX_RANKS      64
#define MP_POINT_NAME_MAX 48

/* What a rank runs: 0 means pass. `id` is the same for every rank of one run. */
typedef int (*mp_rank_fn)(int rank, int nranks, const ecclUniqueId *id, void *arg);
/* What a rank of mt_run_comms runs, with a communicator made by ecclCommInitAll. */
typedef int (*mt_comm_fn)(int rank, int nranks, ecclComm_t comm, void *arg);

/* Sets what every multi-rank test needs, unless the caller already set it: bootstrap on
 * loopback (ECCL_SOCKET_IFNAME=lo) and host communicators (ECCL_DEVICE=host). Call it first in
 * main(), before any eccl call (the library reads its variables once). */
void mp_env_setup(void);

/* ---- processes ---------------------------------------------------------------------------- */

enum mp_action_kind {
    MP_ACT_KILL = 1, /* SIGKILL the target */
    MP_ACT_STOP = 2, /* SIGSTOP the target (SIGCONT after cont_after_ms when > 0) */
};

/* "When rank `rank` (-1: any rank) reaches point `point` for the `hit`-th time (0 or 1: the
 * first), do `kind` to rank `target` (-1: the rank that reached the point)." */
struct mp_action {
    const char *point;
    int rank;
    int hit;
    int target;
    enum mp_action_kind kind;
    int cont_after_ms;
};

struct mp_rank_result {
    pid_t pid;
    int wait_status; /* as waitpid returned it */
    bool exited;     /* WIFEXITED */
    int exit_code;   /* when exited */
    int term_signal; /* when killed by a signal, else 0 */
    bool acted_kill; /* an action SIGKILLed it */
    bool acted_stop; /* an action SIGSTOPped it */
    bool killed_at_timeout;
    bool killed_fail_fast;
    int points;        /* points it reported */
    double elapsed_ms; /* from fork to reaping */
    bool passed;       /* exited 0, or was SIGKILLed by an action */
};

struct mp_report {
    int nranks;
    bool timed_out;
    int failed; /* ranks that did not pass */
    struct mp_rank_result rank[MP_MAX_RANKS];
};

struct mp_opts {
    int nranks;
    mp_rank_fn fn;
    void *arg;
    int timeout_ms;
    const struct mp_action *actions;
    int nactions;
    /* SIGKILL every rank as soon as one fails (exits nonzero or dies of a signal that no action
     * sent): ranks blocked in a collective with a failed peer would otherwise wait for the
     * deadline. */
    bool fail_fast;
    /* The id handed to the ranks; NULL: ecclGetUniqueId, called here in the parent. It is
     * called after the fork and sent to the children through a pipe: the bootstrap root thread
     * it starts must not exist when the parent forks (a child could inherit a lock it holds).
     * For the same reason mp_run waits (up to 2 s) for the process to be single-threaded
     * before forking. */
    const ecclUniqueId *id;
    /* No id at all (harness tests that do not use eccl): the ranks get a zeroed id. */
    bool no_id;
    /* Called in the parent when a rank reports a point, after the matching actions ran and
     * before the rank is let go. May call mp_parent_signal(). */
    void (*on_point)(int rank, const char *point, int hit, void *arg);
    void *on_point_arg;
    /* Quiet: do not print failed ranks. */
    bool quiet;
};

/* Runs the ranks; fills *rep (may be NULL). Returns 0 when every rank passed, -1 otherwise
 * (and prints, per failed rank, how it ended). */
int mp_run_opts(const struct mp_opts *opts, struct mp_report *rep);
/* The run of a kill or stop test: rank `victim` reaches mp_point("victim") and the parent sends
 * it `kind` there (MP_ACT_STOP: SIGCONT 3 s later); otherwise as mp_run_opts. */
int mp_run_victim(int nranks, int victim, enum mp_action_kind kind, mp_rank_fn fn, void *arg,
                  int timeout_ms, struct mp_report *rep);
/* The largest of v[0..n) leaving out v[skip] (0 when there is none). */
double mp_max_except(const double *v, int n, int skip);
/* The plain form: every rank must exit 0 within timeout_ms. */
int mp_run(int nranks, mp_rank_fn fn, void *arg, int timeout_ms);

/* In a rank of mp_run: reports the point and waits until the parent has acted on it (returns at
 * once outside mp_run and in mt_run). */
void mp_point(const char *name);
/* The rank this process runs in mp_run, or -1 (the parent, or not under mp_run). */
int mp_self_rank(void);
/* In the parent, during mp_run (e.g. from on_point): signals a rank; -1 if it is gone. */
int mp_parent_signal(int rank, int sig);
/* Describes how a rank ended ("exit 0", "signal 9 (killed at timeout)"). */
const char *mp_rank_describe(const struct mp_rank_result *r, char *buf, size_t len);

/* ---- threads ------------------------------------------------------------------------------ */

/* Runs fn(rank, ...) on nranks threads of this process with an id from ecclGetUniqueId. Returns
 * 0 when all returned 0, -1 otherwise (printing the failed ranks); results[] (may be NULL) gets
 * each rank's return value. At the deadline it prints the ranks still running and ends the
 * process with _exit(1): a thread cannot be killed. */
int mt_run_ex(int nranks, mp_rank_fn fn, void *arg, int timeout_ms, int *results);
int mt_run(int nranks, mp_rank_fn fn, void *arg, int timeout_ms);
/* Makes nranks communicators with ecclCommInitAll, runs fn on one thread per rank, destroys the
 * communicators. Returns 0 when init, every rank and destroy succeeded. */
int mt_run_comms(int nranks, mt_comm_fn fn, void *arg, int timeout_ms);

/* ---- shared memory and barrier ------------------------------------------------------------ */

/* Zeroed memory shared by the ranks of a later mp_run (MAP_SHARED) or mt_run; NULL on failure. */
void *mp_shm_alloc(size_t size);
void mp_shm_free(void *p, size_t size);

struct mp_barrier {
    _Atomic uint32_t arrived;
    _Atomic uint32_t generation;
    _Atomic uint32_t broken;
    uint32_t nranks;
};

void mp_barrier_init(struct mp_barrier *b, int nranks);
/* 0 when all nranks arrived; -1 at the deadline or when the barrier is broken (which a timeout
 * also does, so that the other ranks stop waiting too). */
int mp_barrier_wait(struct mp_barrier *b, int timeout_ms);
void mp_barrier_break(struct mp_barrier *b);

/* ---- small things ------------------------------------------------------------------------- */

/* Monotonic milliseconds. */
double mp_now_ms(void);
/* A victim's last act: after delay_ms, stores the time (mp_now_ms) in *when, in memory the ranks
 * share, and reports `point`, where the parent kills it. The survivors measure from it with
 * mp_ms_since. */
void mp_die_at(_Atomic uint64_t *when, int delay_ms, const char *point);
double mp_ms_since(const _Atomic uint64_t *when);
/* Entries in /proc/self/fd and /proc/self/task (-1 on error). */
int mp_count_fds(void);
int mp_count_threads(void);
/* Case-insensitive substring test; false for a NULL text. */
bool mp_text_has(const char *text, const char *needle);
/* A host communicator for tests: ecclCommInitRankConfig with deviceKind ECCL_DEVICE_HOST. */
ecclResult_t mp_comm_init(ecclComm_t *comm, int nranks, const ecclUniqueId *id, int rank);

#endif

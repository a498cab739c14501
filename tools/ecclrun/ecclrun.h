/*
 * ecclrun.h - ecclrun, eccl's launcher agent (torchrun's counterpart): what its files share.
 *
 * One ecclrun runs on each node of a job. It starts --nproc-per-node workers, gives each the
 * environment torchrun gives (RANK, WORLD_SIZE, LOCAL_RANK...) plus the ECCL_ELASTIC_* variables
 * that point the elastic library at the job's store, watches them, evicts a dead worker's member
 * from the store at once (el_rdzv_evict: faster than its lease's TTL) and starts a replacement
 * that asks for the dead worker's rank. args.c reads the command line and the PET_* variables,
 * worker.c builds a worker's environment and starts it, main.c hosts or opens the store and runs
 * the monitor loop, metrics.c serves --metrics-port (docs/observability.md). docs/ecclrun.md is the
 * user's manual.
 */
#ifndef ECCL_TOOLS_ECCLRUN_H
#define ECCL_TOOLS_ECCLRUN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "elastic/rdzv.h"

/* Exit statuses of ecclrun itself (the workers' own codes are passed through otherwise). */
#define ECCLRUN_EXIT_OK       0
#define ECCLRUN_EXIT_FAILED   1   /* ecclrun could not do its job (store, fork) */
#define ECCLRUN_EXIT_USAGE    2   /* bad command line or PET_* value */
#define ECCLRUN_EXIT_NOTFOUND 127 /* the program was not found or could not be executed */

#define ECCLRUN_MAX_URL  1024
#define ECCLRUN_MAX_PATH 512

/* How the store is reached. */
enum ecclrun_store_kind {
    ECCLRUN_STORE_EMBEDDED = 0, /* no endpoint: ecclrun hosts one on 127.0.0.1, random port */
    ECCLRUN_STORE_TCP = 1,      /* tcp://host:port[/prefix]: an embedded store somewhere */
    ECCLRUN_STORE_ETCD = 2,     /* etcd:// or etcds:// */
};

struct ecclrun_opts {
    int nnodes_min, nnodes_max;
    int nproc;
    enum ecclrun_store_kind store_kind;
    /* The endpoint as workers get it (ECCL_ELASTIC_STORE), prefix included; for the embedded
     * store (and a hosted one on port 0) filled in once the server listens. */
    char store_url[ECCLRUN_MAX_URL];
    char tcp_host[256]; /* ECCLRUN_STORE_TCP: the host part of the URL, without brackets */
    int tcp_port;
    char store_path[512]; /* "/prefix[?query]" part of the URL, never empty ("/eccl" default) */
    bool rdzv_host;       /* --rdzv-host: host the embedded store at tcp_host:tcp_port */
    bool rdzv_host_auto;  /* the endpoint's host is this machine's host name: try to host it */
    char job[EL_RDZV_MAX_JOB + 1];
    int max_restarts;
    uint64_t monitor_ns;
    enum el_rdzv_mode mode;
    int node_rank;
    uint64_t grace_ns;
    bool no_python;
    int metrics_port;      /* --metrics-port: 0 off */
    char metrics_addr[64]; /* --metrics-addr: an IP address (default 0.0.0.0) */
    int argc;              /* the program and its arguments (borrowed from main's argv) */
    char **argv;           /* argv[argc] is NULL */
};

enum ecclrun_parse_result {
    ECCLRUN_PARSE_OK = 0,
    ECCLRUN_PARSE_HELP = 1, /* --help was printed */
    ECCLRUN_PARSE_BAD = 2,  /* a message was printed on stderr */
};

/* args.c */
/* Reads the command line (options, then the program after an optional "--") and, for each option
 * not given, its PET_* variable. Prints usage on --help, a one-line error on bad input. */
enum ecclrun_parse_result ecclrun_args_parse(int argc, char **argv, struct ecclrun_opts *o);
void ecclrun_usage(FILE *f);
const char *ecclrun_mode_name(enum el_rdzv_mode m);

/* One worker slot (a local rank) and its current incarnation. */
struct ecclrun_slot {
    int local_rank;
    int rank;         /* RANK: node_rank * nproc + local_rank */
    int incarnation;  /* 0 for the first worker, n for the n-th replacement */
    pid_t pid;        /* 0 when nothing runs in the slot */
    bool done;        /* its final incarnation ended */
    bool exec_failed; /* the current incarnation's execve failed: restarting would not help */
    int final_code;   /* its exit code (128 + signal for a signal death) when done */
    uint64_t started_ns;
    char member[EL_RDZV_MAX_ID + 1];
    char metrics_file[ECCLRUN_MAX_PATH]; /* ECCL_METRICS_FILE of the incarnation ("": unset) */
};

/* worker.c */
struct ecclrun_launch;

/* Everything every worker start shares: the resolved program path and argv, the inherited
 * environment minus the variables ecclrun sets. Resolves the program in PATH (a ".py" script runs
 * under python3 -u unless no_python). ecclInvalidArgument with a message on stderr when the
 * program cannot be found. */
ecclResult_t ecclrun_launch_create(const struct ecclrun_opts *o, struct ecclrun_launch **out);
void ecclrun_launch_destroy(struct ecclrun_launch *l);
/* The member id of a slot's incarnation: "<host>-<agentpid>-<token>-<localrank>-r<incarnation>". */
void ecclrun_member_id(const struct ecclrun_launch *l, int local_rank, int incarnation, char *out,
                       size_t size);
/* Starts the slot's current incarnation (slot->incarnation, slot->member set by the caller) with
 * `replace_rank` (-1: none), in its own process group, with `child_mask` as its signal mask.
 * Returns once the program was executed; *exec_errno_out gets 0, or the errno of a failed exec
 * (the child then exits 127 and must still be reaped). */
ecclResult_t ecclrun_worker_start(const struct ecclrun_launch *l, const struct ecclrun_opts *o,
                                  struct ecclrun_slot *slot, int replace_rank,
                                  const sigset_t *child_mask, int *exec_errno_out);

/* metrics.c: the --metrics-port HTTP server (/metrics, /healthz, /readyz) and the workers'
 * counter pages (common/stats.h). Every call but start takes NULL (metrics off) and is a no-op
 * then; they are called from the monitor loop's thread. */
struct ecclrun_metrics;

/* Listens on --metrics-addr:--metrics-port and starts the server thread; a message on stderr
 * and an error when the port cannot be bound. */
ecclResult_t ecclrun_metrics_start(const struct ecclrun_opts *o, struct ecclrun_metrics **out);
void ecclrun_metrics_stop(struct ecclrun_metrics *m);
/* Creates the counter page of a slot's incarnation (its header written, the rest zero) and
 * copies its path into `path` (for the worker's ECCL_METRICS_FILE). */
ecclResult_t ecclrun_metrics_page(struct ecclrun_metrics *m, int local_rank, int incarnation,
                                  char *path, size_t size);
void ecclrun_metrics_worker_started(struct ecclrun_metrics *m, int local_rank, pid_t pid,
                                    bool restart);
/* The worker of the slot ended: its counters are folded into the slot's totals and its page
 * removed; a failure (`failed`: non-zero exit or a signal) sets the last failure cause. Returns
 * the generation the worker was last seen in (0: unknown). */
int64_t ecclrun_metrics_worker_exited(struct ecclrun_metrics *m, int local_rank, bool failed,
                                      bool by_signal);
/* Whether the monitor loop runs (/healthz). */
void ecclrun_metrics_set_running(struct ecclrun_metrics *m, bool running);

#endif

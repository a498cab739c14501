/*
 * main.c - eccl-perf's command line and its processes: it parses nccl-tests' flags, forks the -N
 * rank processes (the parent then calls ecclGetUniqueId and hands every child the id through a
 * pipe, waits for them, and kills the rest by pid when one fails or the deadline passes), and in
 * each process runs one thread per rank (-t). With --id-file it forks nothing: it is process
 * --proc of -N processes started separately (in other network namespaces or on other hosts),
 * and the unique id goes through that file. With -G 1 the ranks use CUDA communicators and
 * device buffers (mem_cuda.c); CUDA is touched only in the rank processes, never in the parent
 * that forks them.
 *
 * Exit status: 0 when every rank finished and every check passed; 1 when a check failed, an eccl
 * call failed or a rank died; 2 for a bad command line; 124 when the -T deadline passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/time.h"
#include "tools/eccl-perf/perf.h"

/* How long the others may take to stop by themselves once one rank has failed: peers of a
 * failed rank see its abort and fail too, but not necessarily at once. */
#define PERF_GRACE_S 10
/* The parent's deadline comes after the children's own, which report better. */
#define PERF_PARENT_SLACK_S    15
#define PERF_DEFAULT_TIMEOUT_S 600
#define PERF_MAX_RANKS         4096
/* How long a child waits for the unique id: the parent sends it as soon as it has forked every
 * child and called ecclGetUniqueId; this only bounds a wait that should not stall. */
#define PERF_ID_TIMEOUT_MS 60000

/* Long options without a short letter. */
enum {
    OPT_ID_FILE = 256,
    OPT_PROC,
    OPT_HOST_TIME,
    OPT_CSV,
    OPT_PLOT,
};

static void usage(FILE *f, const char *prog)
{
    fprintf(
        f,
        "USAGE: %s [options]\n"
        "  -C,--collective <name>     allreduce allgather reducescatter broadcast reduce\n"
        "                             alltoall sendrecv gather scatter (default allreduce, or\n"
        "                             the one named by argv[0], e.g. all_reduce_perf)\n"
        "  -N,--nprocs <n>            ranks as forked processes (default 1)\n"
        "  -t,--nthreads <n>          ranks as threads of each process (default 1)\n"
        "  -g,--ngpus <1>             accepted for nccl-tests compatibility; must be 1\n"
        "  -b,--minbytes <size>       smallest size (K/M/G suffixes; default 32M)\n"
        "  -e,--maxbytes <size>       largest size (default 32M)\n"
        "  -i,--stepbytes <size>      size increment (default 1M)\n"
        "  -f,--stepfactor <n>        size multiplier; > 1 replaces -i\n"
        "  -n,--iters <n>             timed iterations (default 20)\n"
        "  -m,--agg_iters <n>         calls aggregated in one group per iteration (default 1)\n"
        "  -w,--warmup_iters <n>      warm-up iterations (default 5)\n"
        "  -c,--check <n>             checked runs per result, 0 for none (default 1)\n"
        "  -d,--datatype <type>       int8 uint8 int32 uint32 int64 uint64 half float double\n"
        "                             bfloat16 fp8e4m3 fp8e5m2, or all (default float)\n"
        "  -o,--op <op>               sum prod max min avg premulsum (mulsum), or all\n"
        "                             (default sum)\n"
        "  -r,--root <rank>           root of rooted collectives, -1 for every rank (default 0)\n"
        "  -p,--parallel_init <0/1>   every thread calls ecclCommInitRank (default 0:\n"
        "                             ecclCommInitAll when there is one process)\n"
        "  -z,--blocking <0/1/2>      1: barrier after each call; 2: wait only (default 0)\n"
        "  -a,--average <0/1/2/3>     time reported: rank 0's, mean, min or max over ranks\n"
        "                             (default 3: max)\n"
        "  -M,--median <0/1>          add a median-iteration-time column to each half\n"
        "  -T,--timeout <seconds>     give up after this long, 0 for never (default 600)\n"
        "  -G,--gpu <0/1>             1: CUDA communicators and GPU buffers, timed with CUDA\n"
        "                             events; GPU local_rank %% device count (default 0: host)\n"
        "  -y,--stream_null <0/1>     -G 1: queue the calls on the default (NULL) stream\n"
        "  -R,--local_register <0/1>  -G 1: buffers from ecclMemAlloc, registered with\n"
        "                             ecclCommRegister (zero-copy sends between local ranks)\n"
        "                             instead of one stream per rank (ignored without -G 1)\n"
        "  --host-time <0/1>          add a column per half: the host clock's time per call of\n"
        "                             the same loop, to the end of the stream (cross-check)\n"
        "  --csv <file>               also write the results as CSV (one row per size)\n"
        "  --plot <file.png>          draw busbw against size (gnuplot, log2 x axis)\n"
        "  --corrupt <rank>           testing aid: that rank inverts the first element it\n"
        "                             receives before checking it (must then fail)\n"
        "  --id-file <path> --proc <p>\n"
        "                             run as process p of -N processes started separately\n"
        "                             (other hosts, namespaces): process 0 writes the unique id\n"
        "                             to path (which must not exist), the others wait for it\n"
        "  -h,--help                  this text\n",
        prog);
}

/* "32M" -> 33554432: a number with an optional K, M or G (powers of 1024). */
static int parse_size(const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0)
        return -1;
    double unit = 1;
    switch (*end) {
    case 'k':
    case 'K':
        unit = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        unit = 1024.0 * 1024.0;
        end++;
        break;
    case 'g':
    case 'G':
        unit = 1024.0 * 1024.0 * 1024.0;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0')
        return -1;
    double bytes = v * unit;
    if (bytes > 1e18)
        return -1;
    *out = (size_t)bytes;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (end == s || *end != '\0' || errno != 0 || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int parse_opts(int argc, char **argv, struct perf_opts *o)
{
    static const struct option longopts[] = {
        {"collective", required_argument, 0, 'C'},
        {"nprocs", required_argument, 0, 'N'},
        {"nthreads", required_argument, 0, 't'},
        {"ngpus", required_argument, 0, 'g'},
        {"minbytes", required_argument, 0, 'b'},
        {"maxbytes", required_argument, 0, 'e'},
        {"stepbytes", required_argument, 0, 'i'},
        {"stepfactor", required_argument, 0, 'f'},
        {"iters", required_argument, 0, 'n'},
        {"agg_iters", required_argument, 0, 'm'},
        {"warmup_iters", required_argument, 0, 'w'},
        {"check", required_argument, 0, 'c'},
        {"datatype", required_argument, 0, 'd'},
        {"op", required_argument, 0, 'o'},
        {"root", required_argument, 0, 'r'},
        {"parallel_init", required_argument, 0, 'p'},
        {"blocking", required_argument, 0, 'z'},
        {"average", required_argument, 0, 'a'},
        {"median", required_argument, 0, 'M'},
        {"timeout", required_argument, 0, 'T'},
        {"gpu", required_argument, 0, 'G'},
        {"stream_null", required_argument, 0, 'y'},
        {"local_register", required_argument, 0, 'R'},
        {"corrupt", required_argument, 0, 'X'},
        {"id-file", required_argument, 0, OPT_ID_FILE},
        {"proc", required_argument, 0, OPT_PROC},
        {"host-time", required_argument, 0, OPT_HOST_TIME},
        {"csv", required_argument, 0, OPT_CSV},
        {"plot", required_argument, 0, OPT_PLOT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *prog = o->prog;
    int ngpus = 1, have_proc = 0;
    int c;

    while ((c = getopt_long(argc, argv, "C:N:t:g:b:e:i:f:n:m:w:c:d:o:r:p:z:a:M:T:G:y:R:X:h",
                            longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'C':
            o->coll = perf_coll_by_name(optarg);
            bad = o->coll == NULL;
            break;
        case 'N':
            bad = parse_int(optarg, 1, PERF_MAX_RANKS, &o->nprocs);
            break;
        case 't':
            bad = parse_int(optarg, 1, PERF_MAX_RANKS, &o->nthreads);
            break;
        case 'g':
            bad = parse_int(optarg, 1, 1, &ngpus);
            break;
        case 'b':
            bad = parse_size(optarg, &o->min_bytes);
            break;
        case 'e':
            bad = parse_size(optarg, &o->max_bytes);
            break;
        case 'i':
            bad = parse_size(optarg, &o->step_bytes);
            break;
        case 'f': {
            int f = 0;
            bad = parse_int(optarg, 0, 1 << 20, &f);
            o->step_factor = (size_t)f;
            break;
        }
        case 'n':
            bad = parse_int(optarg, 1, 1 << 24, &o->iters);
            break;
        case 'm':
            bad = parse_int(optarg, 1, 1 << 16, &o->agg_iters);
            break;
        case 'w':
            bad = parse_int(optarg, 0, 1 << 24, &o->warmup_iters);
            break;
        case 'c':
            bad = parse_int(optarg, 0, 1 << 16, &o->check);
            break;
        case 'd':
            if (strcmp(optarg, "all") == 0) {
                o->dtype = -1;
            } else {
                const struct perf_type *t = perf_type_by_name(optarg);
                bad = t == NULL;
                if (t)
                    o->dtype = (int)t->dtype;
            }
            break;
        case 'o':
            if (strcmp(optarg, "all") == 0) {
                o->op = -1;
            } else {
                o->op = perf_op_by_name(optarg);
                bad = o->op < 0;
            }
            break;
        case 'r':
            bad = parse_int(optarg, -1, PERF_MAX_RANKS * PERF_MAX_RANKS, &o->root);
            break;
        case 'p':
            bad = parse_int(optarg, 0, 1, &o->parallel_init);
            break;
        case 'z':
            bad = parse_int(optarg, 0, 2, &o->blocking);
            break;
        case 'a':
            bad = parse_int(optarg, 0, 3, &o->average);
            break;
        case 'M':
            bad = parse_int(optarg, 0, 1, &o->median);
            break;
        case 'T':
            bad = parse_int(optarg, 0, 1 << 24, &o->timeout_s);
            break;
        case 'G':
            bad = parse_int(optarg, 0, 1, &o->gpu);
            break;
        case 'y':
            bad = parse_int(optarg, 0, 1, &o->stream_null);
            break;
        case 'R':
            bad = parse_int(optarg, 0, 1, &o->reg);
            break;
        case 'X':
            bad = parse_int(optarg, -1, PERF_MAX_RANKS - 1, &o->corrupt_rank);
            break;
        case OPT_ID_FILE:
            o->id_file = optarg;
            bad = optarg[0] == '\0';
            break;
        case OPT_HOST_TIME:
            bad = parse_int(optarg, 0, 1, &o->host_time);
            break;
        case OPT_CSV:
            o->csv_file = optarg;
            bad = optarg[0] == '\0';
            break;
        case OPT_PLOT:
            o->plot_file = optarg;
            bad = optarg[0] == '\0' || strchr(optarg, '\'') || strchr(optarg, '\n');
            break;
        case OPT_PROC:
            bad = parse_int(optarg, 0, PERF_MAX_RANKS - 1, &o->proc);
            have_proc = 1;
            break;
        case 'h':
            usage(stdout, prog);
            exit(PERF_EXIT_OK);
        default:
            usage(stderr, prog);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "%s: invalid value '%s' for -%c\n", prog, optarg, c);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
        return -1;
    }
    if ((o->id_file != NULL) != (have_proc != 0)) {
        fprintf(stderr, "%s: --id-file and --proc go together\n", prog);
        return -1;
    }
    if (o->id_file != NULL && o->proc >= o->nprocs) {
        fprintf(stderr, "%s: --proc %d is not a process of -N %d\n", prog, o->proc, o->nprocs);
        return -1;
    }
    if (o->gpu && perf_mem_cuda == NULL) {
        fprintf(stderr,
                "%s: -G 1 (CUDA communicators, GPU buffers) is not available: this eccl-perf was "
                "built without CUDA (make CUDA=1, with nvcc under CUDA_HOME)\n",
                prog);
        return -1;
    }
    if (o->reg && !o->gpu) {
        fprintf(stderr,
                "%s: -R 1 registers GPU buffers from ecclMemAlloc: it needs -G 1 (host buffers "
                "need no registration)\n",
                prog);
        return -1;
    }
    if (o->min_bytes > o->max_bytes) {
        fprintf(stderr, "%s: minbytes (%zu) is larger than maxbytes (%zu)\n", prog, o->min_bytes,
                o->max_bytes);
        return -1;
    }
    if (o->step_factor <= 1 && o->step_bytes == 0 && o->min_bytes != o->max_bytes) {
        fprintf(stderr, "%s: -i 0 without -f > 1 never reaches maxbytes\n", prog);
        return -1;
    }
    long nranks = (long)o->nprocs * o->nthreads;
    if (nranks > PERF_MAX_RANKS) {
        fprintf(stderr, "%s: %ld ranks is more than %d\n", prog, nranks, PERF_MAX_RANKS);
        return -1;
    }
    if (o->coll->has_root && o->root >= nranks) {
        fprintf(stderr, "%s: root %d is not a rank of %ld\n", prog, o->root, nranks);
        return -1;
    }
    /* Every size's buffers fit in max_bytes (nccl-tests' layout), rounded up to whole lines. */
    o->alloc_bytes = (o->max_bytes + 63) & ~(size_t)63;
    if (o->alloc_bytes < 64)
        o->alloc_bytes = 64;
    return 0;
}

/* Waits for the process's rank threads, at most until the deadline (and a grace period after
 * the first failure). Returns 1 when every thread finished. */
static int wait_ranks(struct perf_proc *pp, uint64_t deadline, int *timed_out)
{
    const struct perf_opts *o = pp->opts;
    uint64_t grace = ECCL_NO_DEADLINE;
    *timed_out = 0;
    pthread_mutex_lock(&pp->lock);
    while (pp->ndone < o->nthreads) {
        if (pp->nfailed > 0 && grace == ECCL_NO_DEADLINE)
            grace = eccl_now_ns() + (uint64_t)PERF_GRACE_S * ECCL_NS_PER_S;
        uint64_t wake = deadline < grace ? deadline : grace;
        uint64_t now = eccl_now_ns();
        if (wake != ECCL_NO_DEADLINE && now >= wake) {
            *timed_out = now >= deadline;
            break;
        }
        /* Waking at least once a second also covers a failure counted while we slept. */
        uint64_t until = now + ECCL_NS_PER_S;
        if (wake < until)
            until = wake;
        struct timespec ts = {.tv_sec = (time_t)(until / ECCL_NS_PER_S),
                              .tv_nsec = (long)(until % ECCL_NS_PER_S)};
        (void)pthread_cond_timedwait(&pp->cond, &pp->lock, &ts);
    }
    int all = pp->ndone == o->nthreads;
    pthread_mutex_unlock(&pp->lock);
    return all;
}

/* Runs this process's ranks: proc * nthreads ... proc * nthreads + nthreads - 1. */
static int run_proc(const struct perf_opts *o, int proc, const ecclUniqueId *id)
{
    struct perf_proc pp;
    memset(&pp, 0, sizeof(pp));
    pp.opts = o;
    pp.proc = proc;
    int nranks = o->nprocs * o->nthreads;
    int status = PERF_EXIT_FAILED;
    int started = 0;
    ecclComm_t *comms = NULL;

    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pp.cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_mutex_init(&pp.lock, NULL);

    pp.ranks = eccl_calloc((size_t)o->nthreads, sizeof(*pp.ranks), "perf_ranks");
    if (pp.ranks == NULL)
        goto out;
    for (int t = 0; t < o->nthreads; t++) {
        struct perf_rank *rk = &pp.ranks[t];
        rk->proc = &pp;
        rk->opts = o;
        rk->mem = o->gpu ? perf_mem_cuda : &perf_mem_host;
        rk->rank = proc * o->nthreads + t;
        /* Forked or threaded ranks all run on this host; processes started separately say
         * which one of the host they are (LOCAL_RANK, else --proc). */
        rk->local_rank = o->id_file != NULL ? o->local_base * o->nthreads + t : rk->rank;
        rk->nranks = nranks;
        rk->thread = t;
    }

    /* ecclCommInitAll binds every communicator to the calling thread's device: CUDA ranks make
     * their own, each on its thread's device. */
    if (o->nprocs == 1 && !o->parallel_init && o->id_file == NULL && !o->gpu) {
        comms = eccl_calloc((size_t)o->nthreads, sizeof(*comms), "perf_comms");
        if (comms == NULL)
            goto out;
        ecclResult_t res = ecclCommInitAll(comms, o->nthreads, NULL);
        if (res != ecclSuccess) {
            const char *last = ecclGetLastError(NULL);
            fprintf(stderr, "eccl-perf: ecclCommInitAll(%d) failed: %s (%d)%s%s\n", o->nthreads,
                    ecclGetErrorString(res), (int)res, last && last[0] ? ": " : "",
                    last ? last : "");
            goto out;
        }
        for (int t = 0; t < o->nthreads; t++)
            pp.ranks[t].comm = comms[t];
    } else if (id != NULL) {
        pp.id = *id;
    } else {
        ecclResult_t res = ecclGetUniqueId(&pp.id);
        if (res != ecclSuccess) {
            const char *last = ecclGetLastError(NULL);
            fprintf(stderr, "eccl-perf: ecclGetUniqueId failed: %s (%d)%s%s\n",
                    ecclGetErrorString(res), (int)res, last && last[0] ? ": " : "",
                    last ? last : "");
            goto out;
        }
    }

    for (int t = 0; t < o->nthreads; t++) {
        int err = pthread_create(&pp.ranks[t].tid, NULL, perf_rank_main, &pp.ranks[t]);
        if (err != 0) {
            fprintf(stderr, "eccl-perf: pthread_create: %s\n", strerror(err));
            /* Ranks that never start leave the others waiting: let the deadline handling below
             * give up on them. */
            pthread_mutex_lock(&pp.lock);
            pp.nfailed++;
            pp.ndone += o->nthreads - t;
            pthread_mutex_unlock(&pp.lock);
            break;
        }
        started++;
    }

    uint64_t deadline =
        o->timeout_s > 0 ? eccl_deadline_ms((int64_t)o->timeout_s * 1000) : ECCL_NO_DEADLINE;
    int timed_out = 0;
    if (!wait_ranks(&pp, deadline, &timed_out)) {
        /* One write for the whole line: other rank processes write to the same stderr. */
        char line[512];
        size_t len = (size_t)snprintf(
            line, sizeof(line), "eccl-perf: process %d (pid %d): %s; ranks still running:", proc,
            (int)getpid(), timed_out ? "timeout" : "a rank failed and the others did not stop");
        pthread_mutex_lock(&pp.lock);
        for (int t = 0; t < started && len < sizeof(line); t++) {
            if (!pp.ranks[t].done)
                len += (size_t)snprintf(line + len, sizeof(line) - len, " %d", pp.ranks[t].rank);
        }
        pthread_mutex_unlock(&pp.lock);
        fprintf(stderr, "%s\n", line);
        fflush(stdout);
        fflush(stderr);
        /* Threads blocked in eccl cannot be joined: leave without running exit handlers. */
        _exit(timed_out ? PERF_EXIT_TIMEOUT : PERF_EXIT_FAILED);
    }
    for (int t = 0; t < started; t++)
        pthread_join(pp.ranks[t].tid, NULL);
    status = (pp.nfailed == 0 && started == o->nthreads) ? PERF_EXIT_OK : PERF_EXIT_FAILED;

out:
    /* Communicators made by ecclCommInitAll whose threads never ran. */
    if (comms != NULL) {
        for (int t = started; t < o->nthreads; t++) {
            if (comms[t] != NULL)
                (void)ecclCommAbort(comms[t]);
        }
    }
    eccl_free(comms);
    eccl_free(pp.ranks);
    pthread_mutex_destroy(&pp.lock);
    pthread_cond_destroy(&pp.cond);
    return status;
}

static void kill_children(const pid_t *pids, int *alive, int n)
{
    for (int p = 0; p < n; p++) {
        if (alive[p])
            (void)kill(pids[p], SIGKILL);
    }
    for (int p = 0; p < n; p++) {
        if (!alive[p])
            continue;
        while (waitpid(pids[p], NULL, 0) == -1 && errno == EINTR)
            ;
        alive[p] = 0;
    }
}

/* In a child: reads the unique id the parent sends through the pipe, at most
 * PERF_ID_TIMEOUT_MS. Returns 0 when it has the whole id; -1 on EOF (the parent gave up) or
 * error. */
static int read_id(int fd, ecclUniqueId *id)
{
    uint64_t deadline = eccl_deadline_ms(PERF_ID_TIMEOUT_MS);
    size_t got = 0;
    while (got < sizeof(*id)) {
        int left = eccl_deadline_left_ms(deadline);
        if (left == 0) {
            fprintf(stderr, "eccl-perf: pid %d: no unique id from the parent\n", (int)getpid());
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, left);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r <= 0)
            continue;
        ssize_t n = read(fd, (char *)id + got, sizeof(*id) - got);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Writes the id once per child; each write is one atomic pipe write (sizeof(id) <= PIPE_BUF),
 * so every child reads one whole id. */
static int send_ids(int fd, const ecclUniqueId *id, int n)
{
    for (int i = 0; i < n; i++) {
        ssize_t w;
        while ((w = write(fd, id, sizeof(*id))) == -1 && errno == EINTR)
            ;
        if (w != (ssize_t)sizeof(*id)) {
            fprintf(stderr, "eccl-perf: sending the unique id: %s\n",
                    w < 0 ? strerror(errno) : "short write");
            return -1;
        }
    }
    return 0;
}

/*
 * -N: one child per process; returns the exit status of the whole run.
 *
 * The children are forked first, while this process has no eccl state and no thread; then it
 * calls ecclGetUniqueId and sends the id to every child through a pipe. (Forking after
 * ecclGetUniqueId would copy the bootstrap root thread's state into every child, locks it may
 * hold included.) This process stays the owner of the id: its root thread serves the children.
 */
static int run_forked(const struct perf_opts *o)
{
    _Static_assert(sizeof(ecclUniqueId) <= PIPE_BUF, "one atomic write per id");
    pid_t *pids = eccl_calloc((size_t)o->nprocs, sizeof(*pids), "perf_pids");
    int *alive = eccl_calloc((size_t)o->nprocs, sizeof(*alive), "perf_pids");
    if (pids == NULL || alive == NULL) {
        eccl_free(pids);
        eccl_free(alive);
        return PERF_EXIT_FAILED;
    }
    int status = PERF_EXIT_OK;
    pid_t parent = getpid();
    int idpipe[2];
    if (pipe2(idpipe, O_CLOEXEC) != 0) {
        fprintf(stderr, "eccl-perf: pipe: %s\n", strerror(errno));
        eccl_free(pids);
        eccl_free(alive);
        return PERF_EXIT_FAILED;
    }
    /* Children must not inherit unwritten output. */
    fflush(stdout);
    fflush(stderr);
    for (int p = 0; p < o->nprocs; p++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* A child dies with the parent, so that nothing outlives a killed run. */
            (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(PERF_EXIT_FAILED);
            close(idpipe[1]);
            ecclUniqueId id;
            if (read_id(idpipe[0], &id) != 0)
                _exit(PERF_EXIT_FAILED);
            close(idpipe[0]);
            int code = run_proc(o, p, &id);
            fflush(stdout);
            fflush(stderr);
            /* _exit: the parent's exit handlers (copied by fork) are not ours to run. */
            _exit(code);
        }
        if (pid < 0) {
            fprintf(stderr, "eccl-perf: fork: %s\n", strerror(errno));
            close(idpipe[0]);
            close(idpipe[1]);
            kill_children(pids, alive, p);
            eccl_free(pids);
            eccl_free(alive);
            return PERF_EXIT_FAILED;
        }
        pids[p] = pid;
        alive[p] = 1;
    }
    close(idpipe[0]);

    ecclUniqueId id;
    ecclResult_t res = ecclGetUniqueId(&id);
    if (res != ecclSuccess) {
        const char *last = ecclGetLastError(NULL);
        fprintf(stderr, "eccl-perf: ecclGetUniqueId failed: %s (%d)%s%s\n", ecclGetErrorString(res),
                (int)res, last && last[0] ? ": " : "", last ? last : "");
        status = PERF_EXIT_FAILED;
    } else if (send_ids(idpipe[1], &id, o->nprocs) != 0) {
        status = PERF_EXIT_FAILED;
    }
    /* EOF: children still waiting for an id give up. */
    close(idpipe[1]);
    if (status != PERF_EXIT_OK) {
        kill_children(pids, alive, o->nprocs);
        eccl_free(pids);
        eccl_free(alive);
        return status;
    }

    uint64_t deadline = o->timeout_s > 0
                            ? eccl_deadline_ms(((int64_t)o->timeout_s + PERF_PARENT_SLACK_S) * 1000)
                            : ECCL_NO_DEADLINE;
    uint64_t grace = ECCL_NO_DEADLINE;
    int remaining = o->nprocs;
    while (remaining > 0) {
        for (int p = 0; p < o->nprocs; p++) {
            if (!alive[p])
                continue;
            int st = 0;
            pid_t r = waitpid(pids[p], &st, WNOHANG);
            if (r == 0 || (r == -1 && errno == EINTR))
                continue;
            alive[p] = 0;
            remaining--;
            int code;
            if (r == -1) {
                fprintf(stderr, "eccl-perf: waitpid(%d): %s\n", (int)pids[p], strerror(errno));
                code = PERF_EXIT_FAILED;
            } else if (WIFEXITED(st)) {
                code = WEXITSTATUS(st);
                if (code != 0)
                    fprintf(stderr, "eccl-perf: process %d (pid %d) exited with status %d\n", p,
                            (int)pids[p], code);
            } else {
                code = PERF_EXIT_FAILED;
                fprintf(stderr, "eccl-perf: process %d (pid %d) was killed by signal %d (%s)\n", p,
                        (int)pids[p], WTERMSIG(st), strsignal(WTERMSIG(st)));
            }
            if (code != 0) {
                if (status == PERF_EXIT_OK || code == PERF_EXIT_TIMEOUT)
                    status = code == PERF_EXIT_TIMEOUT ? PERF_EXIT_TIMEOUT : PERF_EXIT_FAILED;
                if (grace == ECCL_NO_DEADLINE)
                    grace = eccl_now_ns() + (uint64_t)PERF_GRACE_S * ECCL_NS_PER_S;
            }
        }
        if (remaining == 0)
            break;
        int past_deadline = eccl_deadline_passed(deadline);
        if (past_deadline || eccl_deadline_passed(grace)) {
            fprintf(stderr, "eccl-perf: %s; killing the remaining processes:",
                    past_deadline ? "timeout" : "a process failed and the others did not stop");
            for (int p = 0; p < o->nprocs; p++) {
                if (alive[p])
                    fprintf(stderr, " %d (pid %d)", p, (int)pids[p]);
            }
            fprintf(stderr, "\n");
            kill_children(pids, alive, o->nprocs);
            if (past_deadline)
                status = PERF_EXIT_TIMEOUT;
            else if (status == PERF_EXIT_OK)
                status = PERF_EXIT_FAILED;
            break;
        }
        eccl_sleep_us(10000);
    }
    eccl_free(pids);
    eccl_free(alive);
    return status;
}

/* --id-file, process 0: writes the id to a temporary file and renames it into place, so that
 * a reader sees the whole id or no file. The path must not exist: a file left by another run
 * would hand its id to the other processes. */
static int write_id_file(const char *path, const ecclUniqueId *id)
{
    if (access(path, F_OK) == 0) {
        fprintf(stderr,
                "eccl-perf: --id-file %s already exists (left by another run?): remove it\n", path);
        return -1;
    }
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        fprintf(stderr, "eccl-perf: --id-file path too long\n");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "eccl-perf: creating %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    ssize_t w;
    while ((w = write(fd, id, sizeof(*id))) == -1 && errno == EINTR)
        ;
    int err = w == (ssize_t)sizeof(*id) ? 0 : (w < 0 ? errno : EIO);
    if (close(fd) != 0 && err == 0)
        err = errno;
    if (err == 0 && rename(tmp, path) != 0)
        err = errno;
    if (err != 0) {
        fprintf(stderr, "eccl-perf: writing %s: %s\n", path, strerror(err));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* --id-file, other processes: waits for the file (at most PERF_ID_TIMEOUT_MS) and reads the id. */
static int read_id_file(const char *path, ecclUniqueId *id)
{
    uint64_t deadline = eccl_deadline_ms(PERF_ID_TIMEOUT_MS);
    for (;;) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n;
            while ((n = read(fd, id, sizeof(*id))) == -1 && errno == EINTR)
                ;
            int err = errno;
            close(fd);
            if (n == (ssize_t)sizeof(*id))
                return 0;
            fprintf(stderr, "eccl-perf: %s: %s\n", path,
                    n < 0 ? strerror(err) : "shorter than a unique id");
            return -1;
        }
        if (errno != ENOENT) {
            fprintf(stderr, "eccl-perf: opening %s: %s\n", path, strerror(errno));
            return -1;
        }
        if (eccl_deadline_passed(deadline)) {
            fprintf(stderr, "eccl-perf: no unique id in %s after %d ms (is process 0 running?)\n",
                    path, PERF_ID_TIMEOUT_MS);
            return -1;
        }
        eccl_sleep_us(10000);
    }
}

/* --id-file: this process is one of -N started separately; no fork. */
static int run_external(const struct perf_opts *o)
{
    ecclUniqueId id;
    if (o->proc == 0) {
        ecclResult_t res = ecclGetUniqueId(&id);
        if (res != ecclSuccess) {
            const char *last = ecclGetLastError(NULL);
            fprintf(stderr, "eccl-perf: ecclGetUniqueId failed: %s (%d)%s%s\n",
                    ecclGetErrorString(res), (int)res, last && last[0] ? ": " : "",
                    last ? last : "");
            return PERF_EXIT_FAILED;
        }
        if (write_id_file(o->id_file, &id) != 0)
            return PERF_EXIT_FAILED;
    } else if (read_id_file(o->id_file, &id) != 0) {
        return PERF_EXIT_FAILED;
    }
    int status = run_proc(o, o->proc, &id);
    /* Every rank has joined by now (init needs them all): the file has served. */
    if (o->proc == 0)
        unlink(o->id_file);
    return status;
}

/* ECCL_DEVICE as -G wants it: host for -G 0, cuda for -G 1 (set when unset or "auto"); a value
 * that asks for the other kind is refused. */
static int set_device_env(const struct perf_opts *o)
{
    const char *env = getenv("ECCL_DEVICE");
    int cuda = env && (strcasecmp(env, "cuda") == 0 || strcasecmp(env, "gpu") == 0);
    int host = env && (strcasecmp(env, "host") == 0 || strcasecmp(env, "cpu") == 0);
    if ((o->gpu && host) || (!o->gpu && cuda)) {
        fprintf(stderr, "%s: ECCL_DEVICE=%s contradicts -G %d (%s): unset it\n", o->prog, env,
                o->gpu,
                o->gpu ? "CUDA communicators, GPU buffers" : "host communicators and buffers");
        return -1;
    }
    if (!cuda && !host)
        setenv("ECCL_DEVICE", o->gpu ? "cuda" : "host", 1);
    return 0;
}

/* --id-file: this process's index among the processes of its host. */
static int local_base(const struct perf_opts *o)
{
    const char *env = getenv("LOCAL_RANK");
    int v = 0;
    if (env != NULL && parse_int(env, 0, PERF_MAX_RANKS - 1, &v) == 0)
        return v;
    return o->proc;
}

int main(int argc, char **argv)
{
    struct perf_opts o;
    memset(&o, 0, sizeof(o));
    o.prog = base_name(argv[0]);
    o.coll = perf_coll_by_nccl_name(o.prog);
    if (o.coll == NULL)
        o.coll = perf_coll_get(PERF_ALLREDUCE);
    o.min_bytes = 32 << 20;
    o.max_bytes = 32 << 20;
    o.step_bytes = 1 << 20;
    o.step_factor = 1;
    o.iters = 20;
    o.warmup_iters = 5;
    o.agg_iters = 1;
    o.check = 1;
    o.dtype = ecclFloat;
    o.op = PERF_OP_SUM;
    o.root = 0;
    o.average = 3;
    o.nprocs = 1;
    o.nthreads = 1;
    o.timeout_s = PERF_DEFAULT_TIMEOUT_S;
    o.corrupt_rank = -1;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_opts(argc, argv, &o) != 0)
        return PERF_EXIT_USAGE;
    o.local_base = local_base(&o);
    /* The communicators' kind follows -G (the ranks also ask for it in their config), and,
     * since every rank runs on this host, bootstrap on loopback unless an interface was named.
     * Set before any eccl call reads them (the library reads its variables once). */
    if (set_device_env(&o) != 0)
        return PERF_EXIT_USAGE;
    if (getenv("ECCL_SOCKET_IFNAME") == NULL && getenv("NCCL_SOCKET_IFNAME") == NULL)
        setenv("ECCL_SOCKET_IFNAME", "lo", 1);

    /* --csv and --plot: the header before any rank runs (process 0 of --id-file only); --plot
     * alone goes through a temporary CSV file. */
    char tmp_csv[] = "/tmp/eccl-perf-XXXXXX";
    bool writes_csv = o.id_file == NULL || o.proc == 0;
    if (o.plot_file && !o.csv_file && writes_csv) {
        int fd = mkstemp(tmp_csv);
        if (fd < 0) {
            fprintf(stderr, "%s: --plot: mkstemp: %s\n", o.prog, strerror(errno));
            return PERF_EXIT_FAILED;
        }
        close(fd);
        o.csv_file = tmp_csv;
    }
    if (o.csv_file && writes_csv && perf_csv_start(o.csv_file) != 0)
        return PERF_EXIT_USAGE;
    if (!writes_csv)
        o.csv_file = NULL;

    int status = o.id_file != NULL ? run_external(&o)
                 : o.nprocs > 1    ? run_forked(&o)
                                   : run_proc(&o, 0, NULL);
    fflush(stdout);
    if (o.plot_file && writes_csv && perf_plot(&o) != 0 && status == PERF_EXIT_OK)
        status = PERF_EXIT_FAILED;
    if (o.csv_file == tmp_csv)
        unlink(tmp_csv);
    return status;
}

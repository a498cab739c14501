/*
 * worker.c - starting one worker: the program found in PATH once, the environment torchrun gives
 * its workers plus the ECCL_ELASTIC_* variables of the job, and a fork/exec in which the child
 * does only async-signal-safe work (ecclrun has threads: the store's): its own process group (so
 * that a signal reaches whatever the worker starts), PR_SET_PDEATHSIG (it dies with ecclrun, even
 * by SIGKILL), the signal mask ecclrun had at start, then execve. A close-on-exec pipe tells the
 * parent whether execve worked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/time.h"
#include "tools/ecclrun/ecclrun.h"

extern char **environ;

/* What ecclrun sets in every worker's environment; values inherited under these names are
 * dropped (ecclrun's settings win). */
enum env_id {
    ENV_RANK,
    ENV_WORLD_SIZE,
    ENV_LOCAL_RANK,
    ENV_LOCAL_WORLD_SIZE,
    ENV_GROUP_RANK,
    ENV_GROUP_WORLD_SIZE,
    ENV_ROLE_RANK,
    ENV_ROLE_WORLD_SIZE,
    ENV_ROLE_NAME,
    ENV_TE_RESTART_COUNT,
    ENV_TE_MAX_RESTARTS,
    ENV_TE_RUN_ID,
    ENV_STORE,
    ENV_JOB_ID,
    ENV_MIN_RANKS,
    ENV_MAX_RANKS,
    ENV_MEMBER_ID,
    ENV_REPLACE_RANK,
    ENV_MODE,
    ENV_RESTART_COUNT,
    ENV_COUNT,
};

static const char *const env_names[ENV_COUNT] = {
    [ENV_RANK] = "RANK",
    [ENV_WORLD_SIZE] = "WORLD_SIZE",
    [ENV_LOCAL_RANK] = "LOCAL_RANK",
    [ENV_LOCAL_WORLD_SIZE] = "LOCAL_WORLD_SIZE",
    [ENV_GROUP_RANK] = "GROUP_RANK",
    [ENV_GROUP_WORLD_SIZE] = "GROUP_WORLD_SIZE",
    [ENV_ROLE_RANK] = "ROLE_RANK",
    [ENV_ROLE_WORLD_SIZE] = "ROLE_WORLD_SIZE",
    [ENV_ROLE_NAME] = "ROLE_NAME",
    [ENV_TE_RESTART_COUNT] = "TORCHELASTIC_RESTART_COUNT",
    [ENV_TE_MAX_RESTARTS] = "TORCHELASTIC_MAX_RESTARTS",
    [ENV_TE_RUN_ID] = "TORCHELASTIC_RUN_ID",
    [ENV_STORE] = "ECCL_ELASTIC_STORE",
    [ENV_JOB_ID] = "ECCL_ELASTIC_JOB_ID",
    [ENV_MIN_RANKS] = "ECCL_ELASTIC_MIN_RANKS",
    [ENV_MAX_RANKS] = "ECCL_ELASTIC_MAX_RANKS",
    [ENV_MEMBER_ID] = "ECCL_ELASTIC_MEMBER_ID",
    [ENV_REPLACE_RANK] = "ECCL_ELASTIC_REPLACE_RANK",
    [ENV_MODE] = "ECCL_ELASTIC_MODE",
    [ENV_RESTART_COUNT] = "ECCL_ELASTIC_RESTART_COUNT",
};

#define ENV_VALUE_MAX (ECCLRUN_MAX_URL + 64)

struct ecclrun_launch {
    char *path;      /* what execve runs */
    char **argv;     /* NULL-terminated; strings borrowed from main's argv or literals */
    char **base_env; /* environ minus env_names, NULL-terminated; strings borrowed */
    size_t base_n;
    char host[65]; /* this host's name, reduced to member-id characters */
    int agent_pid;
    unsigned token; /* tells this ecclrun from an earlier one with the same pid (containers) */
};

/* Finds an executable file: `name` itself when it has a '/', else in PATH. */
static char *find_program(const char *name)
{
    struct stat st;
    if (strchr(name, '/')) {
        if (access(name, X_OK) == 0 && stat(name, &st) == 0 && S_ISREG(st.st_mode))
            return eccl_strdup(name, "ecclrun_path");
        return NULL;
    }
    const char *path = getenv("PATH");
    if (!path || !path[0])
        path = "/usr/local/bin:/usr/bin:/bin";
    size_t nlen = strlen(name);
    while (*path) {
        size_t dlen = strcspn(path, ":");
        const char *dir = dlen ? path : ".";
        size_t dl = dlen ? dlen : 1;
        char *full = eccl_calloc(dl + nlen + 2, 1, "ecclrun_path");
        if (!full)
            return NULL;
        memcpy(full, dir, dl);
        full[dl] = '/';
        memcpy(full + dl + 1, name, nlen);
        if (access(full, X_OK) == 0 && stat(full, &st) == 0 && S_ISREG(st.st_mode))
            return full;
        eccl_free(full);
        path += dlen;
        if (*path == ':')
            path++;
    }
    return NULL;
}

static bool is_ours(const char *kv)
{
    for (int i = 0; i < ENV_COUNT; i++) {
        size_t n = strlen(env_names[i]);
        if (!strncmp(kv, env_names[i], n) && kv[n] == '=')
            return true;
    }
    return false;
}

ecclResult_t ecclrun_launch_create(const struct ecclrun_opts *o, struct ecclrun_launch **out)
{
    ecclResult_t res = ecclSuccess;
    struct ecclrun_launch *l;
    ECCL_CALLOC_GOTO(l, 1, "ecclrun_launch", res, out);
    const char *prog = o->argv[0];
    size_t plen = strlen(prog);
    bool python = !o->no_python && plen > 3 && !strcmp(prog + plen - 3, ".py");
    int extra = python ? 2 : 0;
    ECCL_CALLOC_GOTO(l->argv, (size_t)(o->argc + extra + 1), "ecclrun_argv", res, err_free_launch);
    if (python) {
        /* torchrun runs a script with its own interpreter, unbuffered. */
        l->path = find_program("python3");
        l->argv[0] = (char *)"python3";
        l->argv[1] = (char *)"-u";
    } else {
        l->path = find_program(prog);
    }
    if (!l->path) {
        fprintf(stderr, "ecclrun: cannot run '%s': %s\n", python ? "python3" : prog,
                strchr(python ? "python3" : prog, '/') ? "not an executable file"
                                                       : "no executable of that name in PATH");
        res = ecclInvalidArgument;
        goto err_free_argv;
    }
    for (int i = 0; i < o->argc; i++)
        l->argv[extra + i] = o->argv[i];

    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    ECCL_CALLOC_GOTO(l->base_env, n + 1, "ecclrun_env", res, err_free_path);
    for (char **e = environ; *e; e++)
        if (!is_ours(*e))
            l->base_env[l->base_n++] = *e;

    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    size_t hi = 0;
    for (; host[hi] && hi + 1 < sizeof(l->host); hi++) {
        unsigned char c = (unsigned char)host[hi];
        l->host[hi] = (c < '!' || c > '~' || c == '/') ? '_' : (char)c;
    }
    l->host[hi] = 0;
    l->agent_pid = (int)getpid();
    unsigned short rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
        rnd = (unsigned short)(eccl_wall_ns() ^ (eccl_wall_ns() >> 16));
    l->token = rnd;
    *out = l;
    return ecclSuccess;

err_free_path:
    eccl_free(l->path);
err_free_argv:
    eccl_free(l->argv);
err_free_launch:
    eccl_free(l);
out:
    return res;
}

void ecclrun_launch_destroy(struct ecclrun_launch *l)
{
    if (!l)
        return;
    eccl_free(l->base_env);
    eccl_free(l->path);
    eccl_free(l->argv);
    eccl_free(l);
}

void ecclrun_member_id(const struct ecclrun_launch *l, int local_rank, int incarnation, char *out,
                       size_t size)
{
    snprintf(out, size, "%s-%d-%04x-%d-r%d", l->host, l->agent_pid, l->token, local_rank,
             incarnation);
}

ecclResult_t ecclrun_worker_start(const struct ecclrun_launch *l, const struct ecclrun_opts *o,
                                  struct ecclrun_slot *slot, int replace_rank,
                                  const sigset_t *child_mask, int *exec_errno_out)
{
    ecclResult_t res = ecclSuccess;
    char(*vals)[ENV_VALUE_MAX] = NULL;
    char **envp = NULL;
    int pfd[2] = {-1, -1};
    ECCL_CALLOC_GOTO(vals, ENV_COUNT, "ecclrun_env", res, out);
    ECCL_CALLOC_GOTO(envp, l->base_n + ENV_COUNT + 2, "ecclrun_env", res, out);

    int world = o->nnodes_max * o->nproc;
#define SETV(id, ...) snprintf(vals[id], ENV_VALUE_MAX, __VA_ARGS__)
    SETV(ENV_RANK, "RANK=%d", slot->rank);
    SETV(ENV_WORLD_SIZE, "WORLD_SIZE=%d", world);
    SETV(ENV_LOCAL_RANK, "LOCAL_RANK=%d", slot->local_rank);
    SETV(ENV_LOCAL_WORLD_SIZE, "LOCAL_WORLD_SIZE=%d", o->nproc);
    SETV(ENV_GROUP_RANK, "GROUP_RANK=%d", o->node_rank);
    SETV(ENV_GROUP_WORLD_SIZE, "GROUP_WORLD_SIZE=%d", o->nnodes_max);
    SETV(ENV_ROLE_RANK, "ROLE_RANK=%d", slot->rank);
    SETV(ENV_ROLE_WORLD_SIZE, "ROLE_WORLD_SIZE=%d", world);
    SETV(ENV_ROLE_NAME, "ROLE_NAME=default");
    SETV(ENV_TE_RESTART_COUNT, "TORCHELASTIC_RESTART_COUNT=%d", slot->incarnation);
    SETV(ENV_TE_MAX_RESTARTS, "TORCHELASTIC_MAX_RESTARTS=%d", o->max_restarts);
    SETV(ENV_TE_RUN_ID, "TORCHELASTIC_RUN_ID=%s", o->job);
    SETV(ENV_STORE, "ECCL_ELASTIC_STORE=%s", o->store_url);
    SETV(ENV_JOB_ID, "ECCL_ELASTIC_JOB_ID=%s", o->job);
    SETV(ENV_MIN_RANKS, "ECCL_ELASTIC_MIN_RANKS=%d", o->nnodes_min * o->nproc);
    SETV(ENV_MAX_RANKS, "ECCL_ELASTIC_MAX_RANKS=%d", world);
    SETV(ENV_MEMBER_ID, "ECCL_ELASTIC_MEMBER_ID=%s", slot->member);
    SETV(ENV_REPLACE_RANK, "ECCL_ELASTIC_REPLACE_RANK=%d", replace_rank);
    SETV(ENV_MODE, "ECCL_ELASTIC_MODE=%s", ecclrun_mode_name(o->mode));
    SETV(ENV_RESTART_COUNT, "ECCL_ELASTIC_RESTART_COUNT=%d", slot->incarnation);
#undef SETV
    size_t n = 0;
    /* With --metrics-port, the worker's counter page (an inherited value is replaced). */
    char metrics_var[ECCLRUN_MAX_PATH + 32];
    bool metrics = slot->metrics_file[0] != 0;
    for (size_t i = 0; i < l->base_n; i++)
        if (!metrics || strncmp(l->base_env[i], "ECCL_METRICS_FILE=", 18))
            envp[n++] = l->base_env[i];
    for (int i = 0; i < ENV_COUNT; i++)
        envp[n++] = vals[i];
    if (metrics) {
        snprintf(metrics_var, sizeof(metrics_var), "ECCL_METRICS_FILE=%s", slot->metrics_file);
        envp[n++] = metrics_var;
    }
    envp[n] = NULL;

    ECCL_SYS_GOTO(pipe2(pfd, O_CLOEXEC), res, out);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "ecclrun: cannot start worker %d: fork: %s\n", slot->local_rank,
                strerror(errno));
        res = ecclSystemError;
        goto out;
    }
    if (pid == 0) {
        /* The child: async-signal-safe calls only until execve. */
        close(pfd[0]);
        setpgid(0, 0);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(ECCLRUN_EXIT_NOTFOUND);
        sigprocmask(SIG_SETMASK, child_mask, NULL);
        execve(l->path, l->argv, envp);
        int e = errno;
        ssize_t w = write(pfd[1], &e, sizeof(e));
        (void)w;
        _exit(ECCLRUN_EXIT_NOTFOUND);
    }
    /* Also here, so that a signal sent to the group right away finds it (the child may not have
     * run yet). EACCES once the child exec'd, which means the child did it itself. */
    setpgid(pid, pid);
    close(pfd[1]);
    pfd[1] = -1;
    int e = 0;
    ssize_t r;
    do {
        r = read(pfd[0], &e, sizeof(e));
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof(e))
        e = 0;
    else
        fprintf(stderr, "ecclrun: worker %d: cannot execute %s: %s\n", slot->local_rank, l->path,
                strerror(e));
    slot->pid = pid;
    slot->started_ns = eccl_now_ns();
    *exec_errno_out = e;

out:
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    eccl_free(envp);
    eccl_free(vals);
    return res;
}

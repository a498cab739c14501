/*
 * fuzz_ecclrun_args.c - libFuzzer target for ecclrun's command line and environment
 * (tools/ecclrun/args.c: ecclrun_args_parse with its PET_* variables) and for the ECCL_*
 * variable reader (common/param.c).
 *
 * Input: NUL-separated strings. The low nibble of the first byte is how many of them are
 * arguments (after argv[0] = "ecclrun"); each later string is a variable: its first byte picks the
 * name (a PET_* variable of torchrun, or a test ECCL_* variable), the rest is the value.
 * Contract: a bad command line is refused (ECCLRUN_PARSE_BAD), never a crash; an accepted one
 * gives options within their documented ranges, and parsing the same input again gives the same
 * options; an ECCL_* integer reads as its value when it is a whole number, else the default.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/param.h"
#include "elastic/rdzv.h"
#include "tests/fuzz/fuzz_util.h"
#include "tools/ecclrun/ecclrun.h"

#define MAX_STRS 40

static const char *const var_names[] = {
    "PET_NNODES",           "PET_NPROC_PER_NODE", "PET_RDZV_ENDPOINT", "PET_RDZV_BACKEND",
    "PET_RDZV_ID",          "PET_RDZV_HOST",      "PET_STANDALONE",    "PET_MAX_RESTARTS",
    "PET_MONITOR_INTERVAL", "PET_ELASTIC_MODE",   "PET_NODE_RANK",     "PET_GRACE_PERIOD",
    "PET_NO_PYTHON",        "PET_METRICS_PORT",   "PET_METRICS_ADDR",  "ECCL_FUZZ_INT",
    "NCCL_FUZZ_INT",        "ECCL_FUZZ_STR",
};
#define NVARS (sizeof(var_names) / sizeof(var_names[0]))

static FILE *devnull;

static void check_opts(const struct ecclrun_opts *o, int argc, char **argv)
{
    FUZZ_CHECK(o->nnodes_min >= 1 && o->nnodes_min <= o->nnodes_max &&
               o->nnodes_max <= EL_RDZV_MAX_MEMBERS);
    FUZZ_CHECK(o->nproc >= 1 && (int64_t)o->nproc * o->nnodes_max <= EL_RDZV_MAX_MEMBERS);
    FUZZ_CHECK(o->node_rank >= 0 && o->node_rank < o->nnodes_max);
    FUZZ_CHECK(o->max_restarts >= 0 && o->max_restarts <= 1000000);
    FUZZ_CHECK(o->monitor_ns >= 1000000 && o->monitor_ns <= 60000000000ULL);
    FUZZ_CHECK(o->grace_ns <= 3600000000000ULL);
    FUZZ_CHECK(o->mode == EL_RDZV_SHRINK || o->mode == EL_RDZV_REPLACE || o->mode == EL_RDZV_GROW);
    FUZZ_CHECK(memchr(o->job, 0, sizeof(o->job)) && el_rdzv_job_valid(o->job));
    FUZZ_CHECK(memchr(o->store_path, 0, sizeof(o->store_path)) && o->store_path[0] == '/');
    FUZZ_CHECK(memchr(o->store_url, 0, sizeof(o->store_url)));
    FUZZ_CHECK(memchr(o->tcp_host, 0, sizeof(o->tcp_host)));
    if (o->store_kind == ECCLRUN_STORE_TCP)
        FUZZ_CHECK(o->tcp_host[0] && o->tcp_port >= 0 && o->tcp_port <= 65535);
    FUZZ_CHECK(o->store_kind == ECCLRUN_STORE_EMBEDDED || o->store_kind == ECCLRUN_STORE_TCP ||
               o->store_kind == ECCLRUN_STORE_ETCD);
    if (o->rdzv_host)
        FUZZ_CHECK(o->store_kind == ECCLRUN_STORE_TCP);
    FUZZ_CHECK(o->argc >= 1 && o->argv >= argv + 1 && o->argv + o->argc == argv + argc);
    FUZZ_CHECK(o->argv[o->argc] == NULL && o->argv[0][0] != 0);
}

static void param_case(void)
{
    const char *s = getenv("ECCL_FUZZ_INT");
    if (!s || !*s)
        s = getenv("NCCL_FUZZ_INT");
    int64_t v = eccl_param_read_int("ECCL_FUZZ_INT", 7);
    FUZZ_CHECK(eccl_param_read_int("ECCL_FUZZ_INT", 8) == v); /* cached */
    if (s && *s) {
        char *end;
        errno = 0;
        long long want = strtoll(s, &end, 0);
        bool ok = errno == 0 && end != s && *end == 0;
        FUZZ_CHECK(v == (ok ? want : 7));
    } else {
        FUZZ_CHECK(v == 7);
    }
    const char *str = eccl_param_read_str("ECCL_FUZZ_STR", "dflt");
    const char *env = getenv("ECCL_FUZZ_STR");
    FUZZ_CHECK(str && !strcmp(str, env && *env ? env : "dflt"));
    eccl_param_reset();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    char *copy = malloc(size + 1);
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = 0;
    char *strs[MAX_STRS];
    int nstr = 0;
    for (char *p = copy; p < copy + size && nstr < MAX_STRS; p += strlen(p) + 1)
        strs[nstr++] = p;
    if (size == 1)
        nstr = 0;
    int nargs = data[0] & 15;
    if (nargs > nstr)
        nargs = nstr;
    char *argv[MAX_STRS + 2];
    argv[0] = "ecclrun";
    for (int i = 0; i < nargs; i++)
        argv[1 + i] = strs[i];
    argv[1 + nargs] = NULL;
    /* The variables: an environment of our own (setenv would leak a string per call), the last
     * setting of a name first, as setenv would leave it. */
    char *envbuf = malloc(size + (size_t)MAX_STRS * 32), *e = envbuf;
    char *envp[MAX_STRS + 2];
    int nenv = 0;
    for (int i = nstr - 1; i >= nargs; i--) {
        if (!strs[i][0])
            continue;
        envp[nenv++] = e;
        e += sprintf(e, "%s=%s", var_names[(unsigned char)strs[i][0] % NVARS], strs[i] + 1) + 1;
    }
    envp[nenv++] = "ECCL_DEBUG=NONE";
    envp[nenv] = NULL;
    char **saved_env = environ;
    environ = envp;

    FILE *saved_out = stdout, *saved_err = stderr;
    stdout = stderr = devnull; /* usage and one-line errors */
    struct ecclrun_opts o, o2;
    enum ecclrun_parse_result r = ecclrun_args_parse(1 + nargs, argv, &o);
    enum ecclrun_parse_result r2 = ecclrun_args_parse(1 + nargs, argv, &o2);
    stdout = saved_out;
    stderr = saved_err;
    FUZZ_CHECK(r == ECCLRUN_PARSE_OK || r == ECCLRUN_PARSE_HELP || r == ECCLRUN_PARSE_BAD);
    FUZZ_CHECK(r2 == r);
    if (r == ECCLRUN_PARSE_OK) {
        check_opts(&o, 1 + nargs, argv);
        FUZZ_CHECK(!memcmp(&o, &o2, sizeof(o)));
    }
    param_case();
    environ = saved_env;
    free(envbuf);
    free(copy);
    return 0;
}

/* A seed: `nargs` arguments, then variables given as {index, value}. */
static void seed(const char *name, int nargs, const char *const *args, int nvars,
                 const int *var_idx, const char *const *vals)
{
    char buf[2048];
    size_t n = 0;
    buf[n++] = (char)nargs;
    for (int i = 0; i < nargs; i++) {
        size_t l = strlen(args[i]) + 1;
        memcpy(buf + n, args[i], l);
        n += l;
    }
    for (int i = 0; i < nvars; i++) {
        buf[n++] = (char)var_idx[i];
        size_t l = strlen(vals[i]) + 1;
        memcpy(buf + n, vals[i], l);
        n += l;
    }
    fuzz_seed(name, buf, n - 1); /* the last NUL is implied */
}

static void fuzz_seeds(void)
{
    static const char *const a1[] = {"--nproc-per-node=2",
                                     "--nnodes",
                                     "1:4",
                                     "--rdzv-endpoint",
                                     "etcd://10.0.0.1:2379,10.0.0.2:2379/jobs",
                                     "--rdzv-id=job-7",
                                     "--elastic-mode",
                                     "shrink",
                                     "train.py",
                                     "--lr",
                                     "0.1"};
    seed("torchrun-etcd", 11, a1, 0, NULL, NULL);
    static const char *const a2[] = {"--standalone", "--nproc_per_node", "4", "--", "prog", "-x"};
    seed("standalone", 6, a2, 0, NULL, NULL);
    static const char *const a3[] = {"--rdzv-host",
                                     "--rdzv-endpoint=tcp://[::1]:0/p?x=1",
                                     "--max-restarts=0",
                                     "--monitor-interval=0.5",
                                     "--grace-period=0",
                                     "--no-python",
                                     "a.py"};
    seed("tcp-host-v6", 7, a3, 0, NULL, NULL);
    static const char *const a4[] = {"worker"};
    static const int v4[] = {0, 1, 2, 3, 4, 9, 10, 11, 15, 17};
    static const char *const s4[] = {
        "2:2", "gpu", "job-master-0:29400", "c10d", "pt-1", "grow", "1", "30", "0x10", "abc"};
    seed("kubeflow-pet", 1, a4, 10, v4, s4);
    static const char *const a5[] = {"--help"};
    seed("help", 1, a5, 0, NULL, NULL);
    static const char *const a6[] = {"--rdzv-backend=etcd-v2", "--rdzv-endpoint=etcds://h", "p"};
    static const int v6[] = {16, 6};
    static const char *const s6[] = {"-12", "true"};
    seed("etcds-env", 3, a6, 2, v6, s6);
}

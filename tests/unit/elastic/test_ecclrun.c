/*
 * test_ecclrun.c - the ecclrun launcher ($ECCL_BUILD/bin/ecclrun, else build/bin/ecclrun; exits 77
 * when it is missing), run as a child of this test with this very binary as its workers
 * (`test_ecclrun --worker`, found through /proc/self/exe): the environment each worker gets, the
 * embedded store reachable at ECCL_ELASTIC_STORE, flags against PET_* variables, exit statuses, a
 * SIGKILLed worker evicted from the store at once (lease 30 s, so only the eviction can remove it
 * in time) and replaced with the dead member's rank of the generation, --max-restarts running
 * out, SIGTERM forwarding with the SIGKILL after the grace period (grandchildren included),
 * ecclrun SIGKILLed (its workers die with it), a store hosted with --rdzv-host that stays up while
 * another node's member is registered, and bad command lines. Every case checks by pid that no
 * worker is left.
 *
 * What a worker does is set per local rank through the environment (inherited through ecclrun):
 * ECCLRUN_TEST_DO_<L>_R<restart> or ECCLRUN_TEST_DO_<L> = exit:CODE:DELAY_MS | kill:SIG:DELAY_MS
 * | sleep | term | ignoreterm | join (default exit:0:0). Each worker first writes its environment
 * to $ECCLRUN_TEST_DIR/env.<LOCAL_RANK>.<restart count>.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/time.h"
#include "elastic/rdzv.h"
#include "store/store.h"
#include "tests/support/etcd.h"
#include "tests/support/proc.h"
#include "tests/support/store_fixture.h"

extern char **environ;

static char ecclrun_bin[512];
static char self_bin[512];

/* ======================================================================================== */
/* The worker side (this binary run by ecclrun).                                            */
/* ======================================================================================== */

static const char *const dumped[] = {
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_RUN_ID",
    "ECCL_ELASTIC_STORE",
    "ECCL_ELASTIC_JOB_ID",
    "ECCL_ELASTIC_MIN_RANKS",
    "ECCL_ELASTIC_MAX_RANKS",
    "ECCL_ELASTIC_MEMBER_ID",
    "ECCL_ELASTIC_REPLACE_RANK",
    "ECCL_ELASTIC_MODE",
    "ECCL_ELASTIC_RESTART_COUNT",
    "ECCLRUN_TEST_KEEP",
};

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && v[0] ? atoi(v) : def;
}

/* Opens the store at ECCL_ELASTIC_STORE, puts probe/<member> and reads it back. */
static int store_probe(void)
{
    const char *url = getenv("ECCL_ELASTIC_STORE");
    const char *member = getenv("ECCL_ELASTIC_MEMBER_ID");
    if (!url || !member)
        return 0;
    struct store *s = NULL;
    if (store_open(url, eccl_deadline_ms(5000), &s) != ecclSuccess)
        return 0;
    char key[200];
    snprintf(key, sizeof(key), "probe/%s", member);
    struct store_kv *kv = NULL;
    int ok =
        store_put(s, key, strlen(key), "x", 1, 0, eccl_deadline_ms(5000), NULL) == ecclSuccess &&
        store_get(s, key, strlen(key), eccl_deadline_ms(5000), &kv, NULL) == ecclSuccess && kv &&
        kv->value_len == 1;
    store_kv_free(kv);
    store_close(s);
    return ok;
}

/* Writes the environment and `extra` lines to env.<L>.<R> (through a rename: readers never see
 * half a file). */
static void write_env(const char *extra)
{
    const char *dir = getenv("ECCLRUN_TEST_DIR");
    char path[600], tmp[640];
    snprintf(path, sizeof(path), "%s/env.%d.%d", dir, env_int("LOCAL_RANK", -1),
             env_int("ECCL_ELASTIC_RESTART_COUNT", -1));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        _exit(90);
    for (size_t i = 0; i < sizeof(dumped) / sizeof(dumped[0]); i++) {
        const char *v = getenv(dumped[i]);
        fprintf(f, "%s=%s\n", dumped[i], v ? v : "(unset)");
    }
    fprintf(f, "PID=%d\nPGID=%d\nSTORE_OK=%d\n%s", (int)getpid(), (int)getpgrp(), store_probe(),
            extra);
    fclose(f);
    if (rename(tmp, path) != 0)
        _exit(91);
}

static void sleep_forever(void)
{
    for (int i = 0; i < 300; i++)
        eccl_sleep_us(100000);
    _exit(99); /* nobody stopped it */
}

static void on_term(int sig)
{
    (void)sig;
    char path[600];
    snprintf(path, sizeof(path), "%s/term.%d", getenv("ECCLRUN_TEST_DIR"),
             env_int("LOCAL_RANK", -1));
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
    _exit(0);
}

/* Joins the job as ECCL_ELASTIC_* says; the first incarnation also agrees a generation. */
static void worker_join(void)
{
    struct store *s = NULL;
    if (store_open(getenv("ECCL_ELASTIC_STORE"), eccl_deadline_ms(10000), &s) != ecclSuccess)
        _exit(80);
    struct el_rdzv_config cfg;
    el_rdzv_config_init(&cfg);
    cfg.job = getenv("ECCL_ELASTIC_JOB_ID");
    cfg.member_id = getenv("ECCL_ELASTIC_MEMBER_ID");
    cfg.min_members = env_int("ECCL_ELASTIC_MIN_RANKS", 1);
    cfg.max_members = env_int("ECCL_ELASTIC_MAX_RANKS", 1);
    cfg.replace_rank = env_int("ECCL_ELASTIC_REPLACE_RANK", -1);
    struct el_rdzv *r = NULL;
    if (el_rdzv_join(s, &cfg, eccl_deadline_ms(10000), &r) != ecclSuccess)
        _exit(81);
    char extra[128] = "";
    if (env_int("ECCL_ELASTIC_RESTART_COUNT", 0) == 0) {
        struct el_rdzv_gen *g = NULL;
        if (el_rdzv_next(r, EL_RDZV_GROW, -1, eccl_deadline_ms(20000), &g) != ecclSuccess)
            _exit(82);
        snprintf(extra, sizeof(extra), "GEN=%lld\nGEN_RANK=%d\n", (long long)g->gen, g->rank);
        el_rdzv_gen_free(g);
    }
    write_env(extra);
    sleep_forever();
}

static int worker_main(void)
{
    char name[64];
    snprintf(name, sizeof(name), "ECCLRUN_TEST_DO_%d_R%d", env_int("LOCAL_RANK", -1),
             env_int("ECCL_ELASTIC_RESTART_COUNT", -1));
    const char *what = getenv(name);
    if (!what) {
        snprintf(name, sizeof(name), "ECCLRUN_TEST_DO_%d", env_int("LOCAL_RANK", -1));
        what = getenv(name);
    }
    if (!what)
        what = "exit:0:0";
    int a = 0, delay = 0;
    if (sscanf(what, "exit:%d:%d", &a, &delay) == 2) {
        write_env("");
        eccl_sleep_us((uint64_t)delay * 1000);
        _exit(a);
    }
    if (sscanf(what, "kill:%d:%d", &a, &delay) == 2) {
        write_env("");
        eccl_sleep_us((uint64_t)delay * 1000);
        signal(a, SIG_DFL);
        raise(a);
        _exit(98);
    }
    if (!strcmp(what, "sleep")) {
        write_env("");
        sleep_forever();
    }
    if (!strcmp(what, "term")) {
        signal(SIGTERM, on_term);
        write_env("");
        sleep_forever();
    }
    if (!strcmp(what, "ignoreterm")) {
        /* A worker that ignores SIGTERM, with a child (in its process group) that does too. */
        signal(SIGTERM, SIG_IGN);
        pid_t c = fork();
        if (c == 0)
            sleep_forever();
        char extra[64];
        snprintf(extra, sizeof(extra), "GCHILD=%d\n", (int)c);
        write_env(extra);
        sleep_forever();
    }
    if (!strcmp(what, "join"))
        worker_join();
    return 97;
}

/* ======================================================================================== */
/* The test side.                                                                           */
/* ======================================================================================== */

static char dir[256];
static pid_t live_agent; /* the ecclrun started and not yet reaped (teardown kills it) */

static void make_dir(void)
{
    assert_int_equal(proc_dir_make(dir, sizeof(dir), "ecclrun-test"), 0);
}

/* Starts ecclrun with `args` (NULL-terminated; the worker command is appended when `worker`),
 * the environment of this test minus PET_* and ECCLRUN_TEST_DO*, plus `envs` (NULL-terminated
 * "K=V"). stdout and stderr go to dir/out and dir/err. */
static pid_t start_ecclrun(const char *const *args, const char *const *envs, bool worker)
{
    const char *argv[64];
    size_t n = 0;
    argv[n++] = ecclrun_bin;
    for (; *args; args++)
        argv[n++] = *args;
    if (worker) {
        argv[n++] = "--";
        argv[n++] = self_bin;
        argv[n++] = "--worker";
    }
    argv[n] = NULL;
    static char dirvar[300];
    snprintf(dirvar, sizeof(dirvar), "ECCLRUN_TEST_DIR=%s", dir);
    const char *envp[512];
    size_t m = 0;
    for (char **e = environ; *e && m < 400; e++)
        if (strncmp(*e, "PET_", 4) && strncmp(*e, "ECCLRUN_TEST_", 13))
            envp[m++] = *e;
    envp[m++] = dirvar;
    for (; envs && *envs; envs++)
        envp[m++] = *envs;
    envp[m] = NULL;
    char out[300], err[300];
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(err, sizeof(err), "%s/err", dir);
    pid_t pid = proc_spawn(argv, envp, NULL, out, err);
    assert_true(pid >= 0);
    live_agent = pid;
    return pid;
}

/* Waits for ecclrun; its exit code (128 + signal when killed), or -1 after timeout_ms (it is then
 * SIGKILLed and reaped). */
static int wait_ecclrun(pid_t pid, int timeout_ms)
{
    int rc = proc_wait(pid, timeout_ms);
    live_agent = 0;
    return rc;
}

static int run_ecclrun(const char *const *args, const char *const *envs, int timeout_ms)
{
    return wait_ecclrun(start_ecclrun(args, envs, true), timeout_ms);
}

static bool file_exists(const char *name)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static bool wait_file(const char *name, int timeout_ms)
{
    uint64_t dl = eccl_deadline_ms(timeout_ms);
    while (!file_exists(name)) {
        if (eccl_deadline_passed(dl))
            return false;
        eccl_sleep_us(5000);
    }
    return true;
}

/* The value of KEY in dir/name ("K=V" lines) into out; asserts that it is there. */
static void file_value(const char *name, const char *key, char *out, size_t size)
{
    char p[600], line[1200];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t kl = strlen(key);
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, key, kl) && line[kl] == '=') {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, size, "%s", line + kl + 1);
            found = true;
            break;
        }
    }
    fclose(f);
    if (!found)
        fail_msg("%s: no %s", name, key);
}

static void want_value(const char *name, const char *key, const char *want)
{
    char v[1100];
    file_value(name, key, v, sizeof(v));
    if (strcmp(v, want))
        fail_msg("%s: %s=%s, expected %s", name, key, v, want);
}

static int int_value(const char *name, const char *key)
{
    char v[64];
    file_value(name, key, v, sizeof(v));
    return atoi(v);
}

/* Whether dir/err (ecclrun's stderr) contains `text`. */
static bool err_has(const char *text)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/err", dir);
    FILE *f = fopen(p, "r");
    if (!f)
        return false;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return strstr(buf, text) != NULL;
}

/* A process that is gone, or a zombie nobody reaped yet (not ours: it is dead all the same). */
static bool pid_dead(pid_t pid)
{
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    char p[64], buf[512];
    snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close = strrchr(buf, ')');
    return close && close[1] == ' ' && (close[2] == 'Z' || close[2] == 'X');
}

static void expect_dead(pid_t pid)
{
    uint64_t dl = eccl_deadline_ms(3000);
    while (!pid_dead(pid)) {
        if (eccl_deadline_passed(dl)) {
            kill(pid, SIGKILL);
            fail_msg("pid %d is still alive", (int)pid);
        }
        eccl_sleep_us(5000);
    }
}

/* The value of KEY in dir/name as a number, or -1 when the file has no such line. */
static int opt_int_value(const char *name, const char *key)
{
    char p[600], line[1200];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t kl = strlen(key);
    int v = -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, kl) && line[kl] == '=')
            v = atoi(line + kl + 1);
    fclose(f);
    return v;
}

/* Every worker that wrote an env.* file, and the grandchildren they named, are gone. */
static void expect_no_orphans(void)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "env.", 4) || strstr(e->d_name, ".tmp"))
            continue;
        expect_dead(int_value(e->d_name, "PID"));
        int gchild = opt_int_value(e->d_name, "GCHILD");
        if (gchild > 0)
            expect_dead(gchild);
    }
    closedir(d);
}

static void dump_err(void)
{
    char p[600], line[1024];
    snprintf(p, sizeof(p), "%s/err", dir);
    FILE *f = fopen(p, "r");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        fprintf(stderr, "    | %s", line);
    fclose(f);
}

#define EXPECT_RC(got, want)                                       \
    do {                                                           \
        int rc_ = (got);                                           \
        if (rc_ != (want)) {                                       \
            dump_err();                                            \
            fail_msg("ecclrun exited %d, expected %d", rc_, want); \
        }                                                          \
    } while (0)

/* After a failed case: the ecclrun still running is SIGKILLed (its workers die with it through
 * PR_SET_PDEATHSIG) and reaped, and the case's directory removed. */
static int teardown(void **state)
{
    (void)state;
    if (live_agent > 0) {
        kill(live_agent, SIGKILL);
        waitpid(live_agent, NULL, 0);
        live_agent = 0;
    }
    if (dir[0])
        proc_dir_remove(dir);
    return 0;
}

/* ---- cases ---- */

/* The default embedded store, three workers: torchrun's variables, ECCL_ELASTIC_*, flags winning
 * over inherited values, the store reachable by every worker. */
static void env_embedded(void **state)
{
    (void)state;
    make_dir();
    const char *args[] = {"--nproc-per-node", "3", "--rdzv-id", "envjob",
                          "--max-restarts",   "0", NULL};
    const char *envs[] = {"ECCL_ELASTIC_JOB_ID=wrong", "RANK=99", "ECCLRUN_TEST_KEEP=kept",
                          "ECCL_ELASTIC_REPLACE_RANK=5", NULL};
    EXPECT_RC(run_ecclrun(args, envs, 20000), 0);
    char members[3][200];
    for (int l = 0; l < 3; l++) {
        char f[32], want[32];
        snprintf(f, sizeof(f), "env.%d.0", l);
        snprintf(want, sizeof(want), "%d", l);
        want_value(f, "RANK", want);
        want_value(f, "LOCAL_RANK", want);
        want_value(f, "WORLD_SIZE", "3");
        want_value(f, "LOCAL_WORLD_SIZE", "3");
        want_value(f, "GROUP_RANK", "0");
        want_value(f, "GROUP_WORLD_SIZE", "1");
        want_value(f, "ECCL_ELASTIC_JOB_ID", "envjob");
        want_value(f, "TORCHELASTIC_RUN_ID", "envjob");
        want_value(f, "ECCL_ELASTIC_MIN_RANKS", "3");
        want_value(f, "ECCL_ELASTIC_MAX_RANKS", "3");
        want_value(f, "ECCL_ELASTIC_MODE", "replace");
        want_value(f, "ECCL_ELASTIC_REPLACE_RANK", "-1");
        want_value(f, "ECCL_ELASTIC_RESTART_COUNT", "0");
        want_value(f, "TORCHELASTIC_RESTART_COUNT", "0");
        want_value(f, "TORCHELASTIC_MAX_RESTARTS", "0");
        want_value(f, "ECCLRUN_TEST_KEEP", "kept");
        want_value(f, "STORE_OK", "1");
        char url[1100];
        file_value(f, "ECCL_ELASTIC_STORE", url, sizeof(url));
        assert_int_equal(strncmp(url, "tcp://127.0.0.1:", 16), 0);
        assert_non_null(strstr(url, "/eccl"));
        file_value(f, "ECCL_ELASTIC_MEMBER_ID", members[l], sizeof(members[l]));
        char tail[32];
        snprintf(tail, sizeof(tail), "-%d-r0", l);
        size_t ml = strlen(members[l]);
        assert_true(ml > strlen(tail) && ml <= EL_RDZV_MAX_ID);
        assert_string_equal(members[l] + ml - strlen(tail), tail);
        assert_true(el_rdzv_member_id_valid(members[l]));
        /* Each worker leads its own process group. */
        assert_int_equal(int_value(f, "PGID"), int_value(f, "PID"));
    }
    assert_string_not_equal(members[0], members[1]);
    assert_string_not_equal(members[1], members[2]);
    assert_true(err_has("ecclrun: embedded store at tcp://127.0.0.1:"));
    expect_no_orphans();
    proc_dir_remove(dir);
}

/* Flags with a store of the test's, node rank 1 of 2:4; the underscore spellings; a flag beats
 * its PET_* variable. The workers' probe keys land in the test's store under the URL's prefix. */
static void env_flags_endpoint(void **state)
{
    (void)state;
    make_dir();
    struct store_fixture fx;
    assert_int_equal(store_fixture_start(&fx), 0);
    char ep[300];
    snprintf(ep, sizeof(ep), "--rdzv-endpoint=%s/jobx", fx.url);
    const char *args[] = {"--nnodes=2:4",
                          "--node_rank",
                          "1",
                          "--nproc_per_node",
                          "2",
                          ep,
                          "--elastic-mode",
                          "grow",
                          "--rdzv-id",
                          "j2",
                          "--max-restarts",
                          "5",
                          "--monitor-interval",
                          "0.02",
                          NULL};
    const char *envs[] = {"PET_NPROC_PER_NODE=7", "PET_RDZV_ID=notthis", NULL};
    EXPECT_RC(run_ecclrun(args, envs, 20000), 0);
    assert_false(file_exists("env.2.0"));
    char want_url[400];
    snprintf(want_url, sizeof(want_url), "%s/jobx", fx.url);
    for (int l = 0; l < 2; l++) {
        char f[32], want[32];
        snprintf(f, sizeof(f), "env.%d.0", l);
        snprintf(want, sizeof(want), "%d", 2 + l);
        want_value(f, "RANK", want);
        want_value(f, "WORLD_SIZE", "8");
        want_value(f, "LOCAL_WORLD_SIZE", "2");
        want_value(f, "GROUP_RANK", "1");
        want_value(f, "GROUP_WORLD_SIZE", "4");
        want_value(f, "ECCL_ELASTIC_MIN_RANKS", "4");
        want_value(f, "ECCL_ELASTIC_MAX_RANKS", "8");
        want_value(f, "ECCL_ELASTIC_MODE", "grow");
        want_value(f, "ECCL_ELASTIC_JOB_ID", "j2");
        want_value(f, "TORCHELASTIC_MAX_RESTARTS", "5");
        want_value(f, "ECCL_ELASTIC_STORE", want_url);
        want_value(f, "STORE_OK", "1");
        char member[200], key[300];
        file_value(f, "ECCL_ELASTIC_MEMBER_ID", member, sizeof(member));
        snprintf(key, sizeof(key), "probe/%s", member);
        struct store *s = NULL;
        assert_int_equal(store_open(want_url, eccl_deadline_ms(5000), &s), ecclSuccess);
        struct store_kv *kv = NULL;
        assert_int_equal(store_get(s, key, strlen(key), eccl_deadline_ms(5000), &kv, NULL),
                         ecclSuccess);
        assert_non_null(kv);
        store_kv_free(kv);
        store_close(s);
    }
    expect_no_orphans();
    store_fixture_stop(&fx);
    proc_dir_remove(dir);
}

/* Kubeflow's way: everything from PET_* (a bare host:port endpoint is a tcp:// store). */
static void env_pet(void **state)
{
    (void)state;
    make_dir();
    struct store_fixture fx;
    assert_int_equal(store_fixture_start(&fx), 0);
    char ep[100];
    snprintf(ep, sizeof(ep), "PET_RDZV_ENDPOINT=127.0.0.1:%d", fx.port);
    const char *envs[] = {"PET_NNODES=1:2",
                          "PET_NPROC_PER_NODE=2",
                          ep,
                          "PET_RDZV_BACKEND=c10d",
                          "PET_RDZV_ID=petjob",
                          "PET_MAX_RESTARTS=4",
                          "PET_MONITOR_INTERVAL=0.05",
                          "PET_NODE_RANK=1",
                          "PET_ELASTIC_MODE=shrink",
                          NULL};
    const char *args[] = {NULL};
    EXPECT_RC(run_ecclrun(args, envs, 20000), 0);
    char want_url[100];
    snprintf(want_url, sizeof(want_url), "tcp://127.0.0.1:%d/eccl", fx.port);
    for (int l = 0; l < 2; l++) {
        char f[32], want[32];
        snprintf(f, sizeof(f), "env.%d.0", l);
        snprintf(want, sizeof(want), "%d", 2 + l);
        want_value(f, "RANK", want);
        want_value(f, "WORLD_SIZE", "4");
        want_value(f, "ECCL_ELASTIC_MIN_RANKS", "2");
        want_value(f, "ECCL_ELASTIC_MAX_RANKS", "4");
        want_value(f, "ECCL_ELASTIC_JOB_ID", "petjob");
        want_value(f, "ECCL_ELASTIC_MODE", "shrink");
        want_value(f, "TORCHELASTIC_MAX_RESTARTS", "4");
        want_value(f, "ECCL_ELASTIC_STORE", want_url);
        want_value(f, "STORE_OK", "1");
    }
    assert_false(file_exists("env.2.0"));
    expect_no_orphans();
    store_fixture_stop(&fx);
    proc_dir_remove(dir);
}

/* Kubeflow's elasticPolicy with rdzvBackend etcd-v2 or etcd: the operator's bare host:port
 * PET_RDZV_ENDPOINT means etcd's client port, and the workers reach that etcd
 * (deploy/kubeflow/pytorchjob.yaml relies on it). */
static void env_pet_etcd(void **state)
{
    (void)state;
    if (!etcd_available())
        skip();
    struct etcd_proc etcd = {0};
    assert_int_equal(etcd_start(&etcd), 0);
    const char *backends[] = {"etcd-v2", "etcd"};
    for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
        make_dir();
        char ep[100], be[64], want[100];
        snprintf(ep, sizeof(ep), "PET_RDZV_ENDPOINT=127.0.0.1:%d", etcd.client_port);
        snprintf(be, sizeof(be), "PET_RDZV_BACKEND=%s", backends[b]);
        const char *envs[] = {"PET_NNODES=1:2", ep, be, "PET_RDZV_ID=petetcd", NULL};
        const char *args[] = {NULL};
        EXPECT_RC(run_ecclrun(args, envs, 20000), 0);
        snprintf(want, sizeof(want), "etcd://127.0.0.1:%d/eccl", etcd.client_port);
        want_value("env.0.0", "ECCL_ELASTIC_STORE", want);
        want_value("env.0.0", "STORE_OK", "1");
        expect_no_orphans();
        proc_dir_remove(dir);
    }
    etcd_destroy(&etcd);
}

/* --rdzv-host on port 0: ecclrun hosts the store on a free port and gives its workers the real
 * URL. With more nodes possible, it keeps the store up after its own workers are done while a
 * member of another node is registered, and stops once that member left. */
static void hosted_store_lingers(void **state)
{
    (void)state;
    make_dir();
    const char *args[] = {"--rdzv-host",
                          "--rdzv-endpoint",
                          "tcp://127.0.0.1:0/hosted",
                          "--nnodes",
                          "1:2",
                          "--rdzv-id",
                          "hj",
                          NULL};
    const char *envs[] = {"ECCLRUN_TEST_DO_0=exit:0:1000", NULL};
    pid_t agent = start_ecclrun(args, envs, true);
    if (!wait_file("env.0.0", 15000)) {
        dump_err();
        fail_msg("the worker did not start");
    }
    want_value("env.0.0", "STORE_OK", "1");
    char url[1100];
    file_value("env.0.0", "ECCL_ELASTIC_STORE", url, sizeof(url));
    assert_int_equal(strncmp(url, "tcp://127.0.0.1:", 16), 0);
    assert_true(atoi(url + 16) > 0);
    assert_non_null(strstr(url, "/hosted"));
    /* A member of "another node" joins through the hosted store. */
    struct store *s = NULL;
    assert_int_equal(store_open(url, eccl_deadline_ms(5000), &s), ecclSuccess);
    struct el_rdzv_config cfg;
    el_rdzv_config_init(&cfg);
    cfg.job = "hj";
    cfg.member_id = "other-node-member";
    cfg.min_members = 1;
    cfg.max_members = 2;
    cfg.lease_ms = 30000;
    struct el_rdzv *r = NULL;
    assert_int_equal(el_rdzv_join(s, &cfg, eccl_deadline_ms(5000), &r), ecclSuccess);
    uint64_t dl = eccl_deadline_ms(10000);
    while (!err_has("keeping the job's store up")) {
        if (eccl_deadline_passed(dl)) {
            dump_err();
            fail_msg("ecclrun did not keep its store up");
        }
        eccl_sleep_us(10000);
    }
    eccl_sleep_us(300000);
    assert_int_equal(waitpid(agent, NULL, WNOHANG), 0); /* still up */
    assert_int_equal(el_rdzv_leave(r, eccl_deadline_ms(5000)), ecclSuccess);
    el_rdzv_destroy(r);
    store_close(s);
    EXPECT_RC(wait_ecclrun(agent, 5000), 0);
    assert_true(err_has("no member left in job hj"));
    expect_no_orphans();
    proc_dir_remove(dir);
}

/* Exit statuses: a failure with no restarts left is ecclrun's status; the first failure wins; a
 * failed worker whose replacement succeeds does not count. */
static void exit_status(void **state)
{
    (void)state;
    {
        make_dir();
        const char *args[] = {"--nproc-per-node", "2", "--max-restarts", "0", NULL};
        const char *envs[] = {"ECCLRUN_TEST_DO_1=exit:3:300", NULL};
        EXPECT_RC(run_ecclrun(args, envs, 20000), 3);
        assert_true(err_has("died: exit code 3"));
        assert_true(err_has("is not restarted: 0 of --max-restarts 0 used"));
        assert_false(file_exists("env.1.1"));
        expect_no_orphans();
        proc_dir_remove(dir);
    }
    {
        make_dir();
        const char *args[] = {"--nproc-per-node", "2", "--max-restarts", "0", NULL};
        const char *envs[] = {"ECCLRUN_TEST_DO_0=exit:3:800", "ECCLRUN_TEST_DO_1=kill:10:0", NULL};
        EXPECT_RC(run_ecclrun(args, envs, 20000), 128 + SIGUSR1);
        assert_true(err_has("died: signal 10"));
        expect_no_orphans();
        proc_dir_remove(dir);
    }
    {
        make_dir();
        const char *args[] = {"--nproc-per-node", "2", "--max-restarts", "1", NULL};
        const char *envs[] = {"ECCLRUN_TEST_DO_1=exit:3:0", "ECCLRUN_TEST_DO_1_R1=exit:0:0", NULL};
        EXPECT_RC(run_ecclrun(args, envs, 20000), 0);
        want_value("env.1.1", "ECCL_ELASTIC_REPLACE_RANK", "1");
        expect_no_orphans();
        proc_dir_remove(dir);
    }
}

/* A worker that keeps dying: --max-restarts 2 gives exactly two replacements, each with the next
 * restart count, a new member id and the dead worker's rank; then ecclrun exits 137. */
static void restarts_exhausted(void **state)
{
    (void)state;
    make_dir();
    const char *args[] = {"--nproc-per-node", "2", "--max-restarts", "2", NULL};
    const char *envs[] = {"ECCLRUN_TEST_DO_0=kill:9:0", "ECCLRUN_TEST_DO_1=exit:0:0", NULL};
    EXPECT_RC(run_ecclrun(args, envs, 20000), 137);
    assert_true(file_exists("env.0.0") && file_exists("env.0.1") && file_exists("env.0.2"));
    assert_false(file_exists("env.0.3"));
    assert_false(file_exists("env.1.1"));
    char m0[200], m1[200];
    file_value("env.0.0", "ECCL_ELASTIC_MEMBER_ID", m0, sizeof(m0));
    file_value("env.0.1", "ECCL_ELASTIC_MEMBER_ID", m1, sizeof(m1));
    assert_string_not_equal(m0, m1);
    assert_string_equal(m1 + strlen(m1) - 5, "-0-r1");
    want_value("env.0.1", "ECCL_ELASTIC_RESTART_COUNT", "1");
    want_value("env.0.1", "TORCHELASTIC_RESTART_COUNT", "1");
    want_value("env.0.1", "ECCL_ELASTIC_REPLACE_RANK", "0");
    want_value("env.0.1", "RANK", "0");
    want_value("env.0.2", "ECCL_ELASTIC_RESTART_COUNT", "2");
    assert_true(err_has("died: signal 9 (Killed) at +"));
    assert_true(err_has("is not restarted: 2 of --max-restarts 2 used"));
    expect_no_orphans();
    proc_dir_remove(dir);
}

/* Workers that joined the job (lease 30 s); worker 1 is SIGKILLed: its member key goes within 3 s
 * (only ecclrun's eviction can do that), and its replacement asks for the rank worker 1 had
 * in generation 1 (0 or 1, while its RANK is 3). A second death finds no restart left; SIGTERM
 * then stops ecclrun with 143. */
static void kill_replace_evict(void **state)
{
    (void)state;
    make_dir();
    struct store_fixture fx;
    assert_int_equal(store_fixture_start(&fx), 0);
    char ep[300];
    snprintf(ep, sizeof(ep), "%s/kr", fx.url);
    const char *args[] = {"--nnodes",
                          "1:2",
                          "--node-rank",
                          "1",
                          "--nproc-per-node",
                          "2",
                          "--rdzv-endpoint",
                          ep,
                          "--rdzv-id",
                          "kr",
                          "--max-restarts",
                          "1",
                          NULL};
    const char *envs[] = {"ECCLRUN_TEST_DO_0=join", "ECCLRUN_TEST_DO_1=join",
                          "ECCL_ELASTIC_LEASE_MS=30000", "ECCL_ELASTIC_LAST_CALL_MS=200", NULL};
    pid_t agent = start_ecclrun(args, envs, true);
    if (!wait_file("env.0.0", 25000) || !wait_file("env.1.0", 25000)) {
        kill(agent, SIGKILL);
        waitpid(agent, NULL, 0);
        dump_err();
        fail_msg("the workers did not join");
    }
    want_value("env.1.0", "RANK", "3");
    want_value("env.1.0", "GEN", "1");
    int gen_rank = int_value("env.1.0", "GEN_RANK");
    assert_true(gen_rank == 0 || gen_rank == 1);
    char member[200];
    file_value("env.1.0", "ECCL_ELASTIC_MEMBER_ID", member, sizeof(member));
    struct store *s = NULL;
    assert_int_equal(store_open(ep, eccl_deadline_ms(5000), &s), ecclSuccess);
    bool registered = false;
    assert_int_equal(
        el_rdzv_member_registered(s, "kr", member, eccl_deadline_ms(5000), &registered),
        ecclSuccess);
    assert_true(registered);

    pid_t victim = int_value("env.1.0", "PID");
    uint64_t t0 = eccl_now_ns();
    assert_int_equal(kill(victim, SIGKILL), 0);
    for (;;) {
        assert_int_equal(
            el_rdzv_member_registered(s, "kr", member, eccl_deadline_ms(5000), &registered),
            ecclSuccess);
        if (!registered)
            break;
        if (eccl_now_ns() - t0 > 3000 * ECCL_NS_PER_MS) {
            dump_err();
            fail_msg("member %s still registered 3 s after its death (its lease is 30 s)", member);
        }
        eccl_sleep_us(5000);
    }
    fprintf(stderr, "    evicted %.1f ms after SIGKILL\n", (double)(eccl_now_ns() - t0) / 1e6);
    store_close(s);

    assert_true(wait_file("env.1.1", 15000));
    char want[16];
    snprintf(want, sizeof(want), "%d", gen_rank);
    want_value("env.1.1", "ECCL_ELASTIC_REPLACE_RANK", want);
    want_value("env.1.1", "ECCL_ELASTIC_RESTART_COUNT", "1");
    want_value("env.1.1", "RANK", "3");
    char member2[200];
    file_value("env.1.1", "ECCL_ELASTIC_MEMBER_ID", member2, sizeof(member2));
    assert_string_not_equal(member, member2);
    assert_true(err_has("died: signal 9 (Killed) at +"));
    char line[300];
    snprintf(line, sizeof(line), "evicted member %s (rank %d of generation 1)", member, gen_rank);
    assert_true(err_has(line));

    /* The replacement dies too: no restart left. */
    pid_t victim2 = int_value("env.1.1", "PID");
    assert_int_equal(kill(victim2, SIGKILL), 0);
    uint64_t dl = eccl_deadline_ms(5000);
    while (!err_has("is not restarted: 1 of --max-restarts 1 used")) {
        if (eccl_deadline_passed(dl)) {
            dump_err();
            fail_msg("no 'not restarted' line");
        }
        eccl_sleep_us(10000);
    }
    assert_false(file_exists("env.1.2"));
    expect_dead(victim);
    expect_dead(victim2);
    assert_true(kill(int_value("env.0.0", "PID"), 0) == 0); /* worker 0 runs on */

    kill(agent, SIGTERM);
    EXPECT_RC(wait_ecclrun(agent, 15000), 143);
    expect_no_orphans();
    store_fixture_stop(&fx);
    proc_dir_remove(dir);
}

/* SIGTERM reaches every worker; one that ignores it (and its child) is SIGKILLed after the grace
 * period; ecclrun exits 143. */
static void sigterm_forward(void **state)
{
    (void)state;
    make_dir();
    const char *args[] = {"--nproc-per-node", "2", "--grace-period", "0.5", NULL};
    const char *envs[] = {"ECCLRUN_TEST_DO_0=term", "ECCLRUN_TEST_DO_1=ignoreterm", NULL};
    pid_t agent = start_ecclrun(args, envs, true);
    if (!wait_file("env.0.0", 15000) || !wait_file("env.1.0", 15000)) {
        kill(agent, SIGKILL);
        waitpid(agent, NULL, 0);
        dump_err();
        fail_msg("the workers did not start");
    }
    uint64_t t0 = eccl_now_ns();
    kill(agent, SIGTERM);
    EXPECT_RC(wait_ecclrun(agent, 15000), 143);
    double secs = (double)(eccl_now_ns() - t0) / 1e9;
    assert_true(secs >= 0.45 && secs < 5);
    assert_true(file_exists("term.0")); /* worker 0 got SIGTERM */
    assert_false(file_exists("term.1"));
    assert_true(err_has("got SIGTERM"));
    assert_true(err_has("grace period over: SIGKILL to 1 worker"));
    expect_no_orphans(); /* both workers and worker 1's child */
    proc_dir_remove(dir);
}

/* ecclrun SIGKILLed: PR_SET_PDEATHSIG takes its workers down. */
static void agent_killed(void **state)
{
    (void)state;
    make_dir();
    const char *args[] = {"--nproc-per-node", "2", NULL};
    const char *envs[] = {"ECCLRUN_TEST_DO_0=sleep", "ECCLRUN_TEST_DO_1=sleep", NULL};
    pid_t agent = start_ecclrun(args, envs, true);
    if (!wait_file("env.0.0", 15000) || !wait_file("env.1.0", 15000)) {
        kill(agent, SIGKILL);
        waitpid(agent, NULL, 0);
        fail_msg("the workers did not start");
    }
    kill(agent, SIGKILL);
    EXPECT_RC(wait_ecclrun(agent, 5000), 128 + SIGKILL);
    expect_no_orphans();
    proc_dir_remove(dir);
}

/* Bad command lines: exit 2 and a line naming what is wrong; --help; a missing program. */
static void bad_usage(void **state)
{
    (void)state;
    struct {
        const char *args[8];
        const char *env;
        const char *msg;
    } cases[] = {
        {{"--bogus", "x", NULL}, NULL, "--bogus: unknown option"},
        {{"-x", "prog", NULL}, NULL, "-x: unknown option"},
        {{"--nnodes", "0", "prog", NULL}, NULL, "--nnodes: '0'"},
        {{"--nnodes", "3:2", "prog", NULL}, NULL, "MIN is larger than MAX"},
        {{"--nnodes", "2", "prog", NULL}, NULL, "give --rdzv-endpoint"},
        {{"--nproc-per-node", "x", "prog", NULL}, NULL, "--nproc-per-node: 'x'"},
        {{"--nproc-per-node", NULL}, NULL, "--nproc-per-node: needs a value"},
        {{"--elastic-mode", "foo", "prog", NULL}, NULL, "--elastic-mode: 'foo'"},
        {{"--monitor-interval", "-1", "prog", NULL}, NULL, "--monitor-interval: '-1'"},
        {{"--monitor-interval", "0", "prog", NULL}, NULL, "--monitor-interval: '0'"},
        {{"--grace-period", "abc", "prog", NULL}, NULL, "--grace-period: 'abc'"},
        {{"--max-restarts", "-2", "prog", NULL}, NULL, "--max-restarts: '-2'"},
        {{"--rdzv-endpoint", "http://h:1", "prog", NULL}, NULL, "the scheme must be"},
        {{"--rdzv-endpoint", "tcp://h:99999", "prog", NULL}, NULL, "one host:port"},
        {{"--rdzv-id", "bad/id", "prog", NULL}, NULL, "--rdzv-id: 'bad/id'"},
        {{"--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "tcp://h:1", "prog", NULL},
         NULL,
         "node rank 2 is not below"},
        {{"--rdzv-host", "prog", NULL}, NULL, "--rdzv-host: needs a tcp://"},
        {{"--rdzv-host", "--rdzv-endpoint", "etcd://h:1", "prog", NULL}, NULL, "--rdzv-host:"},
        {{"--rdzv-backend", "zk", "prog", NULL}, NULL, "--rdzv-backend: 'zk'"},
        {{"--nproc-per-node", "2", NULL}, NULL, "no program given"},
        {{"prog", NULL}, "PET_NNODES=abc", "PET_NNODES: 'abc'"},
        {{"prog", NULL}, "PET_MAX_RESTARTS=x", "PET_MAX_RESTARTS: 'x'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        make_dir();
        const char *envs[] = {cases[i].env, NULL};
        int rc = wait_ecclrun(start_ecclrun(cases[i].args, envs, false), 10000);
        if (rc != 2 || !err_has(cases[i].msg)) {
            dump_err();
            fail_msg("case %zu (%s): exit %d, expected 2 with '%s'", i, cases[i].args[0], rc,
                     cases[i].msg);
        }
        assert_true(err_has("ecclrun: "));
        proc_dir_remove(dir);
    }
    make_dir();
    const char *help[] = {"--help", NULL};
    assert_int_equal(wait_ecclrun(start_ecclrun(help, NULL, false), 10000), 0);
    char p[600];
    snprintf(p, sizeof(p), "%s/out", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_non_null(strstr(line, "usage: ecclrun"));
    proc_dir_remove(dir);
    make_dir();
    const char *missing[] = {"--", "no-such-program-ecclrun-test", NULL};
    assert_int_equal(wait_ecclrun(start_ecclrun(missing, NULL, false), 10000), 127);
    assert_true(err_has("cannot run 'no-such-program-ecclrun-test'"));
    proc_dir_remove(dir);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--worker"))
        return worker_main();
    const char *b = getenv("ECCL_BUILD");
    snprintf(ecclrun_bin, sizeof(ecclrun_bin), "%s/bin/ecclrun", b && b[0] ? b : "build");
    if (access(ecclrun_bin, X_OK) != 0) {
        printf("skip: %s not found\n", ecclrun_bin);
        return 77;
    }
    ssize_t n = readlink("/proc/self/exe", self_bin, sizeof(self_bin) - 1);
    if (n <= 0)
        return 1;
    self_bin[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(bad_usage, teardown),
        cmocka_unit_test_teardown(env_embedded, teardown),
        cmocka_unit_test_teardown(env_flags_endpoint, teardown),
        cmocka_unit_test_teardown(env_pet, teardown),
        cmocka_unit_test_teardown(env_pet_etcd, teardown),
        cmocka_unit_test_teardown(hosted_store_lingers, teardown),
        cmocka_unit_test_teardown(exit_status, teardown),
        cmocka_unit_test_teardown(restarts_exhausted, teardown),
        cmocka_unit_test_teardown(sigterm_forward, teardown),
        cmocka_unit_test_teardown(agent_killed, teardown),
        cmocka_unit_test_teardown(kill_replace_evict, teardown),
    };
    return cmocka_run_group_tests_name("ecclrun", tests, NULL, NULL) ? 1 : 0;
}

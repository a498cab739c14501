/*
 * log.c - NCCL-style log lines and the per-thread last-error text.
 *
 * The format follows NCCL's so that existing log parsers and runbooks work:
 *   INFO:  "host:pid:tid [dev] ECCL INFO text"
 *   WARN:  "\nhost:pid:tid [dev] file:line (func) ECCL WARN text"
 *   TRACE: "host:pid:tid [dev] ms func:line ECCL TRACE text"
 * The environment is read once (first log call); eccl_log_reset re-reads it.
 */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/check.h"
#include "common/hash.h"
#include "common/time.h"

int eccl_log_level_cached = -1;
static uint64_t log_subsys = ECCL_LOG_INIT | ECCL_LOG_BOOTSTRAP | ECCL_LOG_ENV;
static FILE *log_file;
/* A file name with %p is per process: a forked child reopens it under its own pid. */
static char log_pattern[512];
static pid_t log_file_pid;
static uint64_t log_epoch_ns;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static _Thread_local int log_dev = -1;
static _Thread_local char last_error[1024];

static const char *env2(const char *name)
{
    char buf[64];
    const char *v = getenv(name);
    if (v && *v)
        return v;
    snprintf(buf, sizeof(buf), "NCCL_%s", name + 5); /* ECCL_X -> NCCL_X */
    v = getenv(buf);
    return (v && *v) ? v : NULL;
}

static const struct {
    const char *name;
    uint64_t mask;
} subsys_names[] = {
    {"INIT", ECCL_LOG_INIT},
    {"COLL", ECCL_LOG_COLL},
    {"P2P", ECCL_LOG_P2P},
    {"SHM", ECCL_LOG_SHM},
    {"NET", ECCL_LOG_NET},
    {"GRAPH", ECCL_LOG_GRAPH},
    {"TUNING", ECCL_LOG_TUNING},
    {"ENV", ECCL_LOG_ENV},
    {"ALLOC", ECCL_LOG_ALLOC},
    {"CALL", ECCL_LOG_CALL},
    {"PROXY", ECCL_LOG_PROXY},
    {"NVLS", ECCL_LOG_NVLS},
    {"BOOTSTRAP", ECCL_LOG_BOOTSTRAP},
    {"REG", ECCL_LOG_REG},
    {"PROFILE", ECCL_LOG_PROFILE},
    {"RAS", ECCL_LOG_RAS},
    {"DESTROY", ECCL_LOG_DESTROY},
    {"STORE", ECCL_LOG_STORE},
    {"ELASTIC", ECCL_LOG_ELASTIC},
    {"ALL", ECCL_LOG_ALL},
};

static uint64_t parse_subsys(const char *s)
{
    int invert = 0;
    uint64_t mask = 0;
    if (*s == '^') {
        invert = 1;
        s++;
    }
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", s);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        for (size_t i = 0; i < sizeof(subsys_names) / sizeof(subsys_names[0]); i++)
            if (strcasecmp(tok, subsys_names[i].name) == 0)
                mask |= subsys_names[i].mask;
    }
    return invert ? ~mask : mask;
}

static void open_log_file(const char *pattern)
{
    char path[1024];
    size_t o = 0;
    for (const char *p = pattern; *p && o < sizeof(path) - 32; p++) {
        if (p[0] == '%' && p[1] == 'h') {
            o += (size_t)snprintf(path + o, sizeof(path) - o, "%s", eccl_hostname());
            p++;
        } else if (p[0] == '%' && p[1] == 'p') {
            o += (size_t)snprintf(path + o, sizeof(path) - o, "%d", (int)getpid());
            p++;
        } else {
            path[o++] = *p;
        }
        if (o >= sizeof(path) - 32)
            break;
    }
    path[o] = '\0';
    FILE *f = fopen(path, "we");
    if (f) {
        setvbuf(f, NULL, _IOLBF, 0);
        log_file = f;
        log_file_pid = getpid();
        snprintf(log_pattern, sizeof(log_pattern), "%s", strstr(pattern, "%p") ? pattern : "");
    }
}

static void log_init_locked(void)
{
    int level = ECCL_LOG_NONE;
    const char *v = env2("ECCL_DEBUG");
    if (v) {
        if (strcasecmp(v, "VERSION") == 0)
            level = ECCL_LOG_VERSION;
        else if (strcasecmp(v, "WARN") == 0)
            level = ECCL_LOG_WARN;
        else if (strcasecmp(v, "INFO") == 0)
            level = ECCL_LOG_INFO;
        else if (strcasecmp(v, "ABORT") == 0)
            level = ECCL_LOG_ABORT;
        else if (strcasecmp(v, "TRACE") == 0)
            level = ECCL_LOG_TRACE;
    }
    const char *s = env2("ECCL_DEBUG_SUBSYS");
    log_subsys = s ? parse_subsys(s) : (ECCL_LOG_INIT | ECCL_LOG_BOOTSTRAP | ECCL_LOG_ENV);
    if (log_file && log_file != stdout) {
        fclose(log_file);
    }
    log_file = stdout;
    const char *f = env2("ECCL_DEBUG_FILE");
    if (f && level > ECCL_LOG_NONE)
        open_log_file(f);
    if (log_epoch_ns == 0)
        log_epoch_ns = eccl_now_ns();
    eccl_log_level_cached = level;
}

void eccl_log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    log_init_locked();
    pthread_mutex_unlock(&log_lock);
}

void eccl_log_set_dev(int dev)
{
    log_dev = dev;
}

int eccl_log_get_dev(void)
{
    return log_dev;
}

const char *eccl_log_last_error(void)
{
    return last_error;
}

void eccl_log_clear_last_error(void)
{
    last_error[0] = '\0';
}

void eccl_log_set_last_error(const char *text)
{
    snprintf(last_error, sizeof(last_error), "%s", text ? text : "");
}

void eccl_log(int level, uint64_t subsys, const char *file, int line, const char *func,
              const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    if (level == ECCL_LOG_WARN)
        snprintf(last_error, sizeof(last_error), "%s", text);

    if (eccl_log_level_cached < 0) {
        pthread_mutex_lock(&log_lock);
        if (eccl_log_level_cached < 0)
            log_init_locked();
        pthread_mutex_unlock(&log_lock);
    }
    if (level > eccl_log_level_cached)
        return;
    if (level != ECCL_LOG_WARN && !(subsys & log_subsys))
        return;
    if (log_pattern[0] && log_file_pid != getpid()) {
        pthread_mutex_lock(&log_lock);
        if (log_pattern[0] && log_file_pid != getpid()) {
            char pattern[sizeof(log_pattern)];
            snprintf(pattern, sizeof(pattern), "%s", log_pattern);
            if (log_file && log_file != stdout)
                fclose(log_file); /* the parent's; line-buffered, so nothing of its is pending */
            log_file = stdout;
            log_pattern[0] = '\0';
            open_log_file(pattern);
        }
        pthread_mutex_unlock(&log_lock);
    }

    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int tid = (int)syscall(SYS_gettid);
    char line_buf[1400];
    int n;
    if (level == ECCL_LOG_WARN) {
        n = snprintf(line_buf, sizeof(line_buf), "\n%s:%d:%d [%d] %s:%d (%s) ECCL WARN %s\n",
                     eccl_hostname(), (int)getpid(), tid, log_dev, base, line, func, text);
    } else if (level == ECCL_LOG_TRACE) {
        double ms = (double)(eccl_now_ns() - log_epoch_ns) / 1e6;
        n = snprintf(line_buf, sizeof(line_buf), "%s:%d:%d [%d] %f %s:%d ECCL TRACE %s\n",
                     eccl_hostname(), (int)getpid(), tid, log_dev, ms, func, line, text);
    } else {
        n = snprintf(line_buf, sizeof(line_buf), "%s:%d:%d [%d] ECCL INFO %s\n", eccl_hostname(),
                     (int)getpid(), tid, log_dev, text);
    }
    if (n < 0)
        return;
    pthread_mutex_lock(&log_lock);
    fputs(line_buf, log_file ? log_file : stdout);
    fflush(log_file ? log_file : stdout);
    pthread_mutex_unlock(&log_lock);
}

void eccl_assert_fail(const char *cond, const char *file, int line)
{
    eccl_log(ECCL_LOG_WARN, ECCL_LOG_ALL, file, line, "assert", "assertion failed: %s", cond);
    abort();
}

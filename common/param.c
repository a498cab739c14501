/*
 * param.c - reading ECCL_* variables once, with NCCL_* as the fallback name.
 *
 * Values are cached per name in a small table under a mutex; the first read of a variable that
 * is set logs it at INFO ENV. eccl_param_reset forgets the cache (tests).
 */
#include "common/param.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define PARAM_MAX 128

struct param_entry {
    const char *name; /* without prefix, e.g. "DEBUG" */
    int is_str;
    int64_t ival;
    const char *sval; /* points into the environment or to the default */
};

static struct param_entry params[PARAM_MAX];
static int nparams;
static uint64_t generation = 1;
static pthread_mutex_t param_lock = PTHREAD_MUTEX_INITIALIZER;

/* Looks up ECCL_<name>, then NCCL_<name>; `used` gets the full name found. */
static const char *lookup(const char *name, char *used, size_t used_len)
{
    snprintf(used, used_len, "ECCL_%s", name);
    const char *v = getenv(used);
    if (v && *v)
        return v;
    snprintf(used, used_len, "NCCL_%s", name);
    v = getenv(used);
    if (v && *v)
        return v;
    return NULL;
}

static struct param_entry *find(const char *name)
{
    for (int i = 0; i < nparams; i++)
        if (strcmp(params[i].name, name) == 0)
            return &params[i];
    return NULL;
}

static const char *strip(const char *name)
{
    return strncmp(name, "ECCL_", 5) == 0 ? name + 5 : name;
}

int64_t eccl_param_read_int(const char *full_name, int64_t def)
{
    const char *name = strip(full_name);
    pthread_mutex_lock(&param_lock);
    struct param_entry *e = find(name);
    if (e) {
        int64_t v = e->ival;
        pthread_mutex_unlock(&param_lock);
        return v;
    }
    char used[96];
    int64_t val = def;
    const char *s = lookup(name, used, sizeof(used));
    if (s) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 0);
        if (errno != 0 || end == s || *end != '\0') {
            pthread_mutex_unlock(&param_lock);
            WARN("invalid value '%s' for %s, using the default %lld", s, used, (long long)def);
            pthread_mutex_lock(&param_lock);
        } else {
            val = v;
        }
    }
    if (nparams < PARAM_MAX && !find(name)) {
        params[nparams].name = name;
        params[nparams].is_str = 0;
        params[nparams].ival = val;
        nparams++;
    }
    pthread_mutex_unlock(&param_lock);
    if (s)
        INFO(ECCL_LOG_ENV, "%s set by environment to %lld", used, (long long)val);
    return val;
}

const char *eccl_param_read_str(const char *full_name, const char *def)
{
    const char *name = strip(full_name);
    pthread_mutex_lock(&param_lock);
    struct param_entry *e = find(name);
    if (e) {
        const char *v = e->sval;
        pthread_mutex_unlock(&param_lock);
        return v;
    }
    char used[96];
    const char *s = lookup(name, used, sizeof(used));
    const char *val = s ? s : def;
    if (nparams < PARAM_MAX) {
        params[nparams].name = name;
        params[nparams].is_str = 1;
        params[nparams].sval = val;
        nparams++;
    }
    pthread_mutex_unlock(&param_lock);
    if (s)
        INFO(ECCL_LOG_ENV, "%s set by environment to %s", used, s);
    return val;
}

void eccl_param_reset(void)
{
    pthread_mutex_lock(&param_lock);
    nparams = 0;
    generation++;
    pthread_mutex_unlock(&param_lock);
}

uint64_t eccl_param_generation(void)
{
    return generation;
}

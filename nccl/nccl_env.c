/*
 * nccl_env.c - NCCL_* environment variables for the drop-in libnccl.so.2.
 *
 * When the library is loaded (a constructor, before the program's main and before any eccl
 * parameter is read), every NCCL_* variable that has an eccl counterpart sets that ECCL_*
 * variable, unless the ECCL_* one is set already (ECCL_* wins). Most counterparts have the same
 * name and meaning (NCCL_DEBUG -> ECCL_DEBUG); a few need their value translated (NCCL_ALGO's
 * grammar, NCCL_SOCKET_FAMILY's AF_INET, NCCL_BUFFSIZE into a slot size). Variables without a
 * counterpart are left alone and named in the log. What was done is logged once, at the first
 * init, under INFO ENV (the log is not set up yet while the constructor runs). docs/env.md has
 * the table "NCCL variables".
 */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/param.h"
#include "nccl/nccl_int.h"

/* Translates an NCCL value into the eccl one: 1 sets `out`, 0 sets nothing (`note` says why). */
typedef int (*xlate_fn)(const char *in, char *out, size_t out_len, char *note, size_t note_len);

struct env_map {
    const char *nccl;
    const char *eccl; /* NULL: no counterpart */
    xlate_fn xlate;   /* NULL: the value as it is */
};

/* NCCL_ALGO: "Ring", "Tree", "ring,tree", "^tree", "allreduce:tree;broadcast:ring"... eccl chooses
 * between ring and tree for AllReduce only, so only a value that settles that is kept. */
static int xlate_algo(const char *in, char *out, size_t out_len, char *note, size_t note_len)
{
    char v[256];
    size_t n = 0;
    for (; in[n] && n + 1 < sizeof(v); n++)
        v[n] = (char)tolower((unsigned char)in[n]);
    v[n] = '\0';
    const char *list = v;
    if (strchr(v, ':')) {
        char *ar = strstr(v, "allreduce:");
        if (!ar) {
            snprintf(note, note_len, "sets no algorithm for AllReduce");
            return 0;
        }
        list = ar + strlen("allreduce:");
        char *end = strchr(list, ';');
        if (end)
            *end = '\0';
    }
    bool exclude = list[0] == '^';
    bool ring = strstr(list, "ring") != NULL, tree = strstr(list, "tree") != NULL;
    const char *pick = NULL;
    if (exclude && ring && !tree)
        pick = "tree";
    else if (exclude && tree && !ring)
        pick = "ring";
    else if (!exclude && ring && !tree)
        pick = "ring";
    else if (!exclude && tree && !ring)
        pick = "tree";
    if (!pick) {
        snprintf(note, note_len,
                 "does not settle ring or tree for AllReduce (eccl's only "
                 "algorithms): the choice stays automatic");
        return 0;
    }
    snprintf(out, out_len, "%s", pick);
    return 1;
}

/* NCCL_SOCKET_FAMILY: AF_INET or AF_INET6; eccl's ECCL_SOCKET_FAMILY is 4 or 6. */
static int xlate_family(const char *in, char *out, size_t out_len, char *note, size_t note_len)
{
    if (strcasecmp(in, "AF_INET") == 0 || strcmp(in, "4") == 0)
        snprintf(out, out_len, "4");
    else if (strcasecmp(in, "AF_INET6") == 0 || strcmp(in, "6") == 0)
        snprintf(out, out_len, "6");
    else {
        /* Either family, rather than the generic NCCL_* fallback reading a word as a number. */
        snprintf(out, out_len, "0");
        snprintf(note, note_len, "is not AF_INET or AF_INET6: either family is used");
    }
    return 1;
}

/* NCCL_BUFFSIZE: bytes of a connection's buffer, which NCCL divides into 8 steps; eccl's buffer
 * is ECCL_SHM_SLOTS slots of ECCL_SHM_SLOT_BYTES. */
static int xlate_buffsize(const char *in, char *out, size_t out_len, char *note, size_t note_len)
{
    char *end = NULL;
    long long bytes = strtoll(in, &end, 0);
    if (end == in || *end != '\0' || bytes <= 0) {
        snprintf(note, note_len, "is not a positive number of bytes");
        return 0;
    }
    const char *s = getenv("ECCL_SHM_SLOTS");
    long long slots = s && *s ? strtoll(s, NULL, 0) : 8;
    if (slots < 2 || slots > 16)
        slots = 8;
    long long slot = bytes / slots;
    if (slot < 4096)
        slot = 4096;
    if (slot > (64LL << 20))
        slot = 64LL << 20;
    slot &= ~63LL;
    snprintf(out, out_len, "%lld", slot);
    return 1;
}

/* NCCL_PROTO: "LL", "Simple,LL", "^LL128"... kept when every name is one of Simple, LL, LL128
 * (ECCL_PROTO's grammar); the per-collective form ("allreduce:LL;...") is not. */
static int xlate_proto(const char *in, char *out, size_t out_len, char *note, size_t note_len)
{
    const char *p = in + (in[0] == '^');
    while (*p) {
        size_t len = strcspn(p, ",");
        bool known = (len == 6 && strncasecmp(p, "simple", 6) == 0) ||
                     (len == 2 && strncasecmp(p, "ll", 2) == 0) ||
                     (len == 5 && strncasecmp(p, "ll128", 5) == 0);
        if (!known) {
            snprintf(note, note_len,
                     "is not a list of Simple, LL, LL128: the choice stays automatic");
            return 0;
        }
        p += len + (p[len] == ',');
    }
    snprintf(out, out_len, "%s", in);
    return 1;
}

static const struct env_map maps[] = {
    /* Same name and meaning. */
    {"NCCL_DEBUG", "ECCL_DEBUG", NULL},
    {"NCCL_DEBUG_SUBSYS", "ECCL_DEBUG_SUBSYS", NULL},
    {"NCCL_DEBUG_FILE", "ECCL_DEBUG_FILE", NULL},
    {"NCCL_SOCKET_IFNAME", "ECCL_SOCKET_IFNAME", NULL},
    {"NCCL_SOCKET_NTHREADS", "ECCL_SOCKET_NTHREADS", NULL},
    {"NCCL_NSOCKS_PERTHREAD", "ECCL_NSOCKS_PERTHREAD", NULL},
    {"NCCL_NET", "ECCL_NET", NULL},
    {"NCCL_IB_HCA", "ECCL_IB_HCA", NULL},
    {"NCCL_IB_DISABLE", "ECCL_IB_DISABLE", NULL},
    {"NCCL_IB_GID_INDEX", "ECCL_IB_GID_INDEX", NULL},
    {"NCCL_IB_TIMEOUT", "ECCL_IB_TIMEOUT", NULL},
    {"NCCL_IB_RETRY_CNT", "ECCL_IB_RETRY_CNT", NULL},
    {"NCCL_IB_SL", "ECCL_IB_SL", NULL},
    {"NCCL_IB_TC", "ECCL_IB_TC", NULL},
    {"NCCL_IB_QPS_PER_CONNECTION", "ECCL_IB_QPS_PER_CONNECTION", NULL},
    {"NCCL_SHM_DISABLE", "ECCL_SHM_DISABLE", NULL},
    {"NCCL_P2P_DISABLE", "ECCL_P2P_DISABLE", NULL},
    {"NCCL_CUMEM_ENABLE", "ECCL_CUMEM_ENABLE", NULL},
    {"NCCL_LOCAL_REGISTER", "ECCL_LOCAL_REGISTER", NULL},
    {"NCCL_MAX_NCHANNELS", "ECCL_MAX_NCHANNELS", NULL},
    {"NCCL_WORK_FIFO_BYTES", "ECCL_WORK_FIFO_BYTES", NULL},
    {"NCCL_HOSTID", "ECCL_HOSTID", NULL},
    {"NCCL_MIN_NCHANNELS", "ECCL_MIN_NCHANNELS", NULL},
    {"NCCL_LL_THRESHOLD", "ECCL_LL_THRESHOLD", NULL},
    /* Translated. */
    {"NCCL_ALGO", "ECCL_ALGO", xlate_algo},
    {"NCCL_SOCKET_FAMILY", "ECCL_SOCKET_FAMILY", xlate_family},
    {"NCCL_BUFFSIZE", "ECCL_SHM_SLOT_BYTES", xlate_buffsize},
    {"NCCL_PROTO", "ECCL_PROTO", xlate_proto},
    /* No counterpart. */
    {"NCCL_COMM_BLOCKING", NULL, NULL},
    {"NCCL_P2P_LEVEL", NULL, NULL},
    {"NCCL_NVLS_ENABLE", NULL, NULL},
    {"NCCL_COLLNET_ENABLE", NULL, NULL},
    {"NCCL_COMM_ID", NULL, NULL},
    {"NCCL_NET_PLUGIN", NULL, NULL},
    {"NCCL_TUNER_PLUGIN", NULL, NULL},
    {"NCCL_PROFILER_PLUGIN", NULL, NULL},
    {"NCCL_NET_GDR_LEVEL", NULL, NULL},
    {"NCCL_CROSS_NIC", NULL, NULL},
    {"NCCL_NTHREADS", NULL, NULL},
    {"NCCL_LAUNCH_MODE", NULL, NULL},
};

#define NOTE_MAX 48
static char notes[NOTE_MAX][320];
static int nnotes;

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (nnotes < NOTE_MAX)
        vsnprintf(notes[nnotes++], sizeof(notes[0]), fmt, ap);
    va_end(ap);
}

__attribute__((constructor)) static void nccl_env_load(void)
{
    int set = 0;
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        const struct env_map *m = &maps[i];
        const char *v = getenv(m->nccl);
        if (!v || !*v)
            continue;
        if (!m->eccl) {
            note("%s=%s has no eccl counterpart: ignored", m->nccl, v);
            continue;
        }
        char out[256], why[200] = "";
        int ok = 1;
        if (m->xlate)
            ok = m->xlate(v, out, sizeof(out), why, sizeof(why));
        else
            snprintf(out, sizeof(out), "%s", v);
        const char *cur = getenv(m->eccl);
        if (cur && *cur) {
            /* A child of a process that loaded the library inherits what its mapping set. */
            if (ok && strcmp(cur, out) == 0)
                note("%s=%s: %s=%s already", m->nccl, v, m->eccl, cur);
            else
                note("%s=%s not used: %s=%s is set", m->nccl, v, m->eccl, cur);
            continue;
        }
        if (!ok) {
            note("%s=%s %s", m->nccl, v, why);
            continue;
        }
        if (setenv(m->eccl, out, 0) != 0)
            continue;
        set++;
        note("%s=%s sets %s=%s%s%s%s", m->nccl, v, m->eccl, out, why[0] ? " (" : "", why,
             why[0] ? ")" : "");
    }
    /* Nothing should have read a parameter yet; should a constructor have, it reads again. */
    if (set)
        eccl_param_reset();
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_notes(void)
{
    INFO(ECCL_LOG_INIT, "NCCL drop-in: libnccl.so.2 is eccl %s, NCCL API %d.%d.%d%s", ECCL_RELEASE,
         ECCL_MAJOR, ECCL_MINOR, ECCL_PATCH, nccl_el_enabled() ? ", elastic (ECCL_ELASTIC=1)" : "");
    for (int i = 0; i < nnotes; i++)
        INFO(ECCL_LOG_ENV, "NCCL drop-in: %s", notes[i]);
}

void nccl_env_log_once(void)
{
    pthread_once(&log_once, log_notes);
}

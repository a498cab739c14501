/*
 * args.c - ecclrun's command line: torchrun's options (both spellings: --nproc-per-node and
 * --nproc_per_node, --opt VALUE and --opt=VALUE), each also read from its PET_* variable when the
 * option is not given (how Kubeflow's training operator configures torchrun), checked here so that
 * a bad value stops ecclrun before any worker starts (exit 2, one line naming the option).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "elastic/rdzv.h"
#include "tools/ecclrun/ecclrun.h"

enum opt_id {
    OPT_NNODES,
    OPT_NPROC,
    OPT_ENDPOINT,
    OPT_BACKEND,
    OPT_ID,
    OPT_HOST,
    OPT_STANDALONE,
    OPT_MAX_RESTARTS,
    OPT_MONITOR,
    OPT_MODE,
    OPT_NODE_RANK,
    OPT_GRACE,
    OPT_NO_PYTHON,
    OPT_METRICS_PORT,
    OPT_METRICS_ADDR,
    OPT_HELP,
    OPT_COUNT,
};

struct opt_def {
    const char *name; /* without "--", with dashes */
    const char *pet;  /* the PET_* variable, or NULL */
    bool value;       /* takes a value (else a switch) */
};

static const struct opt_def opt_defs[OPT_COUNT] = {
    [OPT_NNODES] = {"nnodes", "PET_NNODES", true},
    [OPT_NPROC] = {"nproc-per-node", "PET_NPROC_PER_NODE", true},
    [OPT_ENDPOINT] = {"rdzv-endpoint", "PET_RDZV_ENDPOINT", true},
    [OPT_BACKEND] = {"rdzv-backend", "PET_RDZV_BACKEND", true},
    [OPT_ID] = {"rdzv-id", "PET_RDZV_ID", true},
    [OPT_HOST] = {"rdzv-host", "PET_RDZV_HOST", false},
    [OPT_STANDALONE] = {"standalone", "PET_STANDALONE", false},
    [OPT_MAX_RESTARTS] = {"max-restarts", "PET_MAX_RESTARTS", true},
    [OPT_MONITOR] = {"monitor-interval", "PET_MONITOR_INTERVAL", true},
    [OPT_MODE] = {"elastic-mode", "PET_ELASTIC_MODE", true},
    [OPT_NODE_RANK] = {"node-rank", "PET_NODE_RANK", true},
    [OPT_GRACE] = {"grace-period", "PET_GRACE_PERIOD", true},
    [OPT_NO_PYTHON] = {"no-python", "PET_NO_PYTHON", false},
    [OPT_METRICS_PORT] = {"metrics-port", "PET_METRICS_PORT", true},
    [OPT_METRICS_ADDR] = {"metrics-addr", "PET_METRICS_ADDR", true},
    [OPT_HELP] = {"help", NULL, false},
};

/* torchrun's default ports when a bare endpoint has none. */
#define C10D_DEFAULT_PORT 29400
#define ETCD_DEFAULT_PORT 2379

void ecclrun_usage(FILE *f)
{
    fprintf(
        f,
        "usage: ecclrun [options] [--] PROGRAM [ARGS...]\n"
        "Starts --nproc-per-node workers of an eccl elastic job on this node, restarts dead ones\n"
        "as replacements, and forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to them.\n"
        "options (each also read from PET_<NAME> when not given; --a-b and --a_b both work):\n"
        "  --nnodes N | MIN:MAX        nodes in the job (default 1)\n"
        "  --nproc-per-node N          workers on this node: a number, cpu, gpu or auto "
        "(default 1)\n"
        "  --rdzv-endpoint URL         the job's store: etcd://host:port[,...][/prefix],\n"
        "                              etcds://..., tcp://host:port[/prefix] (embedded store),\n"
        "                              or host[:port] as torchrun takes it (see --rdzv-backend);\n"
        "                              default: an embedded store hosted by ecclrun on 127.0.0.1\n"
        "  --rdzv-backend c10d|etcd|etcd-v2\n"
        "                              what a bare host:port means: c10d (default) a tcp:// "
        "store,\n"
        "                              etcd or etcd-v2 an etcd:// one\n"
        "  --rdzv-host                 host the embedded store of a tcp:// endpoint here, on its\n"
        "                              port (done anyway when the endpoint's host is this host)\n"
        "  --rdzv-id ID                job id, [A-Za-z0-9_.-]{1,64} (default \"default\")\n"
        "  --standalone                one node, embedded store on 127.0.0.1 (the default)\n"
        "  --max-restarts N            replacements started in total (default 3)\n"
        "  --monitor-interval SECONDS  worker check interval (default 0.1)\n"
        "  --elastic-mode shrink|replace|grow\n"
        "                              how the job recovers (default replace)\n"
        "  --node-rank N               this node's rank, 0 <= N < max nodes (default 0)\n"
        "  --grace-period SECONDS      SIGTERM to SIGKILL delay on shutdown (default 5)\n"
        "  --no-python                 run a .py PROGRAM directly (default: python3 -u PROGRAM)\n"
        "  --metrics-port PORT         serve /metrics, /healthz, /readyz over HTTP on PORT\n"
        "                              (default 0: off)\n"
        "  --metrics-addr IP           address the metrics server listens on (default 0.0.0.0)\n"
        "  -h, --help                  this text\n"
        "exit status: 0 when every worker's last incarnation exited 0, else the first failed "
        "one's\n"
        "code (128+signal for a signal); 128+signal when ecclrun was stopped by a signal; 2 bad\n"
        "usage; 127 program not found; 1 ecclrun failed. docs/ecclrun.md has the details.\n");
}

const char *ecclrun_mode_name(enum el_rdzv_mode m)
{
    return m == EL_RDZV_SHRINK ? "shrink" : m == EL_RDZV_REPLACE ? "replace" : "grow";
}

/* Prints "ecclrun: SRC: <message> (ecclrun --help shows the usage)". */
static enum ecclrun_parse_result bad(const char *src, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum ecclrun_parse_result bad(const char *src, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ecclrun: %s: ", src);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (ecclrun --help shows the usage)\n");
    va_end(ap);
    return ECCLRUN_PARSE_BAD;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi || isspace((unsigned char)s[0]))
        return false;
    *out = (int)v;
    return true;
}

static bool parse_seconds(const char *s, double lo, double hi, bool lo_open, uint64_t *ns_out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || (lo_open && v == lo) || v > hi ||
        isspace((unsigned char)s[0]))
        return false;
    *ns_out = (uint64_t)(v * 1e9 + 0.5);
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") ||
        !strcasecmp(s, "on")) {
        *out = true;
        return true;
    }
    if (!strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
        !strcasecmp(s, "off")) {
        *out = false;
        return true;
    }
    return false;
}

/* GPUs as the driver exposes them: /dev/nvidia<N>. */
static int count_gpus(void)
{
    DIR *d = opendir("/dev");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *p = e->d_name;
        if (strncmp(p, "nvidia", 6) != 0 || !p[6])
            continue;
        p += 6;
        while (isdigit((unsigned char)*p))
            p++;
        if (!*p)
            n++;
    }
    closedir(d);
    return n;
}

static enum ecclrun_parse_result parse_nproc(const char *src, const char *v, int *out)
{
    if (!strcmp(v, "cpu") || !strcmp(v, "auto") || !strcmp(v, "gpu")) {
        int gpus = count_gpus();
        if (!strcmp(v, "gpu") && gpus == 0)
            return bad(src, "'%s': no GPU found (/dev/nvidia<N>)", v);
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        *out = (!strcmp(v, "cpu") || gpus == 0) ? (int)(cpus > 0 ? cpus : 1) : gpus;
        if (*out > EL_RDZV_MAX_MEMBERS)
            *out = EL_RDZV_MAX_MEMBERS;
        return ECCLRUN_PARSE_OK;
    }
    if (!parse_int(v, 1, EL_RDZV_MAX_MEMBERS, out))
        return bad(src, "'%s' is not a number of workers (1..4096), cpu, gpu or auto", v);
    return ECCLRUN_PARSE_OK;
}

static enum ecclrun_parse_result parse_nnodes(const char *src, const char *v, int *min, int *max)
{
    char buf[64];
    if (strlen(v) >= sizeof(buf))
        return bad(src, "'%s' is not N or MIN:MAX", v);
    snprintf(buf, sizeof(buf), "%s", v);
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = 0;
    if (!parse_int(buf, 1, EL_RDZV_MAX_MEMBERS, min) ||
        (colon && !parse_int(colon + 1, 1, EL_RDZV_MAX_MEMBERS, max)))
        return bad(src, "'%s' is not N or MIN:MAX with 1 <= MIN <= MAX <= 4096", v);
    if (!colon)
        *max = *min;
    if (*min > *max)
        return bad(src, "'%s': MIN is larger than MAX", v);
    return ECCLRUN_PARSE_OK;
}

/* The short form of a host name: up to its first dot, lower case. */
static void short_host(const char *h, char *out, size_t size)
{
    size_t i = 0;
    for (; h[i] && h[i] != '.' && i + 1 < size; i++)
        out[i] = (char)tolower((unsigned char)h[i]);
    out[i] = 0;
}

/* Whether `host` names this machine: its host name, or the first label of a longer name of it
 * (a pod's "job-worker-0" and "job-worker-0.job.ns.svc"). Loopback names do not count: a store at
 * 127.0.0.1 is usually one that something else runs. */
static bool host_is_mine(const char *host)
{
    char me[256] = {0};
    if (gethostname(me, sizeof(me) - 1) != 0 || !me[0])
        return false;
    if (!strcasecmp(host, me))
        return true;
    char a[256], b[256];
    short_host(host, a, sizeof(a));
    short_host(me, b, sizeof(b));
    return a[0] && !strcmp(a, b) && (strchr(host, '.') == NULL || strchr(me, '.') == NULL);
}

/* Splits "host:port" or "[v6]:port" (port optional: def_port). */
static bool split_host_port(const char *hp, size_t len, char *host, size_t host_size, int def_port,
                            int *port)
{
    const char *port_str = NULL;
    size_t hlen;
    if (len > 0 && hp[0] == '[') {
        const char *close = memchr(hp, ']', len);
        if (!close)
            return false;
        hlen = (size_t)(close - hp - 1);
        if (hlen == 0 || hlen >= host_size)
            return false;
        memcpy(host, hp + 1, hlen);
        host[hlen] = 0;
        if ((size_t)(close + 1 - hp) < len) {
            if (close[1] != ':')
                return false;
            port_str = close + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', len);
        hlen = colon ? (size_t)(colon - hp) : len;
        if (hlen == 0 || hlen >= host_size)
            return false;
        memcpy(host, hp, hlen);
        host[hlen] = 0;
        if (colon)
            port_str = colon + 1;
    }
    *port = def_port;
    if (port_str) {
        char pbuf[16];
        size_t plen = len - (size_t)(port_str - hp);
        if (plen == 0 || plen >= sizeof(pbuf))
            return false;
        memcpy(pbuf, port_str, plen);
        pbuf[plen] = 0;
        if (!parse_int(pbuf, 0, 65535, port))
            return false;
    }
    for (const char *p = host; *p; p++)
        if (isspace((unsigned char)*p) || *p == ',' || *p == '/' || *p == '@')
            return false;
    return true;
}

static enum ecclrun_parse_result parse_endpoint(const char *src, const char *v, const char *backend,
                                                struct ecclrun_opts *o)
{
    const char *scheme, *rest;
    if (!strncmp(v, "tcp://", 6)) {
        scheme = "tcp";
        rest = v + 6;
    } else if (!strncmp(v, "etcd://", 7)) {
        scheme = "etcd";
        rest = v + 7;
    } else if (!strncmp(v, "etcds://", 8)) {
        scheme = "etcds";
        rest = v + 8;
    } else if (strstr(v, "://")) {
        return bad(src, "'%s': the scheme must be etcd://, etcds:// or tcp://", v);
    } else {
        scheme = strcmp(backend, "c10d") ? "etcd" : "tcp";
        rest = v;
    }
    o->store_kind = strcmp(scheme, "tcp") ? ECCLRUN_STORE_ETCD : ECCLRUN_STORE_TCP;
    size_t hosts_len = strcspn(rest, "/?");
    if (hosts_len == 0)
        return bad(src, "'%s': no host", v);
    const char *path = rest + hosts_len;
    if (strchr(path, ' ') || strchr(rest, ' '))
        return bad(src, "'%s': a URL has no spaces", v);
    /* The prefix: the URL's path, or /eccl when it has none. */
    const char *tail = path;
    const char *prefix = "";
    if (!*path || *path == '?') {
        prefix = "/eccl";
    } else if (path[0] == '/' && (!path[1] || path[1] == '?')) {
        prefix = "/eccl";
        tail = path + 1;
    }
    int pn = snprintf(o->store_path, sizeof(o->store_path), "%s%s", prefix, tail);
    if (pn < 0 || (size_t)pn >= sizeof(o->store_path))
        return bad(src, "'%s': the path is too long", v);

    char hosts[ECCLRUN_MAX_URL / 2];
    if (hosts_len >= sizeof(hosts))
        return bad(src, "'%s': the host list is too long", v);
    memcpy(hosts, rest, hosts_len);
    hosts[hosts_len] = 0;
    if (o->store_kind == ECCLRUN_STORE_TCP) {
        if (!split_host_port(hosts, hosts_len, o->tcp_host, sizeof(o->tcp_host), C10D_DEFAULT_PORT,
                             &o->tcp_port))
            return bad(src, "'%s': a tcp:// store is one host:port", v);
        bool v6 = strchr(o->tcp_host, ':') != NULL;
        snprintf(hosts, sizeof(hosts), "%s%s%s:%d", v6 ? "[" : "", o->tcp_host, v6 ? "]" : "",
                 o->tcp_port);
    } else if (rest == v && !memchr(hosts, ':', hosts_len) && !memchr(hosts, ',', hosts_len)) {
        /* A bare etcd host: etcd's client port. */
        snprintf(hosts + hosts_len, sizeof(hosts) - hosts_len, ":%d", ETCD_DEFAULT_PORT);
    }
    int n = snprintf(o->store_url, sizeof(o->store_url), "%s://%s%s", scheme, hosts, o->store_path);
    if (n < 0 || (size_t)n >= sizeof(o->store_url))
        return bad(src, "'%s': the URL is too long", v);
    return ECCLRUN_PARSE_OK;
}

/* Finds the option `name` (dashes or underscores, up to `len` bytes). */
static int find_opt(const char *name, size_t len)
{
    char norm[64];
    if (len == 0 || len >= sizeof(norm))
        return -1;
    for (size_t i = 0; i < len; i++)
        norm[i] = name[i] == '_' ? '-' : name[i];
    norm[len] = 0;
    for (int i = 0; i < OPT_COUNT; i++)
        if (!strcmp(norm, opt_defs[i].name))
            return i;
    return -1;
}

enum ecclrun_parse_result ecclrun_args_parse(int argc, char **argv, struct ecclrun_opts *o)
{
    const char *raw[OPT_COUNT] = {0};
    char srcbuf[OPT_COUNT][72];
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "-h")) {
            ecclrun_usage(stdout);
            return ECCLRUN_PARSE_HELP;
        }
        if (a[0] != '-')
            break;
        if (a[1] != '-')
            return bad(a, "unknown option");
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int id = find_opt(name, nlen);
        if (id < 0)
            return bad(a, "unknown option");
        if (id == OPT_HELP) {
            ecclrun_usage(stdout);
            return ECCLRUN_PARSE_HELP;
        }
        snprintf(srcbuf[id], sizeof(srcbuf[id]), "--%s", opt_defs[id].name);
        if (eq) {
            raw[id] = eq + 1;
        } else if (opt_defs[id].value) {
            if (i + 1 >= argc)
                return bad(srcbuf[id], "needs a value");
            raw[id] = argv[++i];
        } else {
            raw[id] = "1";
        }
    }
    /* Options not given: their PET_* variables (empty counts as unset). */
    const char *src[OPT_COUNT];
    for (int id = 0; id < OPT_COUNT; id++) {
        src[id] = srcbuf[id];
        if (raw[id] || !opt_defs[id].pet)
            continue;
        const char *e = getenv(opt_defs[id].pet);
        if (e && e[0]) {
            raw[id] = e;
            src[id] = opt_defs[id].pet;
        }
    }

    memset(o, 0, sizeof(*o));
    o->nnodes_min = o->nnodes_max = 1;
    o->nproc = 1;
    o->max_restarts = 3;
    o->monitor_ns = 100000000ULL;
    o->mode = EL_RDZV_REPLACE;
    o->grace_ns = 5000000000ULL;
    snprintf(o->job, sizeof(o->job), "default");
    enum ecclrun_parse_result r;
    bool standalone = false;
    if (raw[OPT_STANDALONE] && !parse_bool(raw[OPT_STANDALONE], &standalone))
        return bad(src[OPT_STANDALONE], "'%s' is not true or false", raw[OPT_STANDALONE]);
    if (raw[OPT_HOST] && !parse_bool(raw[OPT_HOST], &o->rdzv_host))
        return bad(src[OPT_HOST], "'%s' is not true or false", raw[OPT_HOST]);
    if (raw[OPT_NO_PYTHON] && !parse_bool(raw[OPT_NO_PYTHON], &o->no_python))
        return bad(src[OPT_NO_PYTHON], "'%s' is not true or false", raw[OPT_NO_PYTHON]);
    if (raw[OPT_NNODES] &&
        (r = parse_nnodes(src[OPT_NNODES], raw[OPT_NNODES], &o->nnodes_min, &o->nnodes_max)))
        return r;
    if (raw[OPT_NPROC] && (r = parse_nproc(src[OPT_NPROC], raw[OPT_NPROC], &o->nproc)))
        return r;
    if ((int64_t)o->nnodes_max * o->nproc > EL_RDZV_MAX_MEMBERS) {
        fprintf(stderr, "ecclrun: %d nodes x %d workers exceeds %d ranks\n", o->nnodes_max,
                o->nproc, EL_RDZV_MAX_MEMBERS);
        return ECCLRUN_PARSE_BAD;
    }
    if (raw[OPT_ID]) {
        if (!el_rdzv_job_valid(raw[OPT_ID]))
            return bad(src[OPT_ID], "'%s' is not a job id ([A-Za-z0-9_.-], 1 to 64 of them)",
                       raw[OPT_ID]);
        snprintf(o->job, sizeof(o->job), "%s", raw[OPT_ID]);
    }
    if (raw[OPT_MAX_RESTARTS] && !parse_int(raw[OPT_MAX_RESTARTS], 0, 1000000, &o->max_restarts))
        return bad(src[OPT_MAX_RESTARTS], "'%s' is not a number (0..1000000)",
                   raw[OPT_MAX_RESTARTS]);
    if (raw[OPT_MONITOR] && !parse_seconds(raw[OPT_MONITOR], 0, 60, true, &o->monitor_ns))
        return bad(src[OPT_MONITOR], "'%s' is not seconds in (0, 60]", raw[OPT_MONITOR]);
    if (o->monitor_ns < 1000000)
        o->monitor_ns = 1000000; /* poll() counts milliseconds */
    if (raw[OPT_GRACE] && !parse_seconds(raw[OPT_GRACE], 0, 3600, false, &o->grace_ns))
        return bad(src[OPT_GRACE], "'%s' is not seconds in [0, 3600]", raw[OPT_GRACE]);
    if (raw[OPT_MODE]) {
        if (!strcasecmp(raw[OPT_MODE], "shrink"))
            o->mode = EL_RDZV_SHRINK;
        else if (!strcasecmp(raw[OPT_MODE], "replace"))
            o->mode = EL_RDZV_REPLACE;
        else if (!strcasecmp(raw[OPT_MODE], "grow"))
            o->mode = EL_RDZV_GROW;
        else
            return bad(src[OPT_MODE], "'%s' is not shrink, replace or grow", raw[OPT_MODE]);
    }
    if (raw[OPT_NODE_RANK] &&
        !parse_int(raw[OPT_NODE_RANK], 0, EL_RDZV_MAX_MEMBERS - 1, &o->node_rank))
        return bad(src[OPT_NODE_RANK], "'%s' is not a node rank", raw[OPT_NODE_RANK]);
    if (o->node_rank >= o->nnodes_max) {
        fprintf(stderr, "ecclrun: node rank %d is not below the %d nodes of --nnodes\n",
                o->node_rank, o->nnodes_max);
        return ECCLRUN_PARSE_BAD;
    }
    snprintf(o->metrics_addr, sizeof(o->metrics_addr), "0.0.0.0");
    if (raw[OPT_METRICS_PORT] && !parse_int(raw[OPT_METRICS_PORT], 0, 65535, &o->metrics_port))
        return bad(src[OPT_METRICS_PORT], "'%s' is not a port (0..65535, 0: off)",
                   raw[OPT_METRICS_PORT]);
    if (raw[OPT_METRICS_ADDR]) {
        unsigned char ab[16];
        if (strlen(raw[OPT_METRICS_ADDR]) >= sizeof(o->metrics_addr) ||
            (inet_pton(AF_INET, raw[OPT_METRICS_ADDR], ab) != 1 &&
             inet_pton(AF_INET6, raw[OPT_METRICS_ADDR], ab) != 1))
            return bad(src[OPT_METRICS_ADDR], "'%s' is not an IPv4 or IPv6 address",
                       raw[OPT_METRICS_ADDR]);
        snprintf(o->metrics_addr, sizeof(o->metrics_addr), "%s", raw[OPT_METRICS_ADDR]);
    }
    const char *backend = raw[OPT_BACKEND] ? raw[OPT_BACKEND] : "c10d";
    if (strcmp(backend, "c10d") && strcmp(backend, "etcd") && strcmp(backend, "etcd-v2"))
        return bad(src[OPT_BACKEND], "'%s' is not c10d, etcd or etcd-v2", backend);

    if (standalone) {
        if (o->nnodes_max > 1)
            return bad(src[OPT_STANDALONE], "runs one node: --nnodes must be 1");
        if (raw[OPT_ENDPOINT])
            fprintf(stderr, "ecclrun: %s: ignoring %s (%s)\n", src[OPT_STANDALONE],
                    src[OPT_ENDPOINT], raw[OPT_ENDPOINT]);
        raw[OPT_ENDPOINT] = NULL;
    }
    if (!raw[OPT_ENDPOINT]) {
        o->store_kind = ECCLRUN_STORE_EMBEDDED;
        snprintf(o->store_path, sizeof(o->store_path), "/eccl");
        if (o->nnodes_max > 1) {
            fprintf(stderr,
                    "ecclrun: %d nodes need a store they all reach: give "
                    "--rdzv-endpoint\n",
                    o->nnodes_max);
            return ECCLRUN_PARSE_BAD;
        }
        if (o->rdzv_host)
            return bad(src[OPT_HOST], "needs a tcp:// --rdzv-endpoint");
    } else {
        if ((r = parse_endpoint(src[OPT_ENDPOINT], raw[OPT_ENDPOINT], backend, o)))
            return r;
        if (o->rdzv_host && o->store_kind != ECCLRUN_STORE_TCP)
            return bad(src[OPT_HOST], "hosts the embedded store: it needs a tcp:// endpoint");
        if (o->store_kind == ECCLRUN_STORE_TCP && !o->rdzv_host)
            o->rdzv_host_auto = host_is_mine(o->tcp_host);
        if (o->store_kind == ECCLRUN_STORE_TCP && o->tcp_port == 0 && !o->rdzv_host &&
            !o->rdzv_host_auto)
            return bad(src[OPT_ENDPOINT], "'%s': port 0 only with --rdzv-host", raw[OPT_ENDPOINT]);
    }

    if (i >= argc) {
        fprintf(stderr, "ecclrun: no program given (ecclrun --help shows the usage)\n");
        return ECCLRUN_PARSE_BAD;
    }
    if (!argv[i][0]) {
        fprintf(stderr, "ecclrun: the program name is empty\n");
        return ECCLRUN_PARSE_BAD;
    }
    o->argc = argc - i;
    o->argv = argv + i;
    return ECCLRUN_PARSE_OK;
}

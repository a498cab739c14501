/*
 * main.c - eccl-timeline: reads one or more ECCL_EVENT_LOG files (JSON lines,
 * docs/observability.md), prints a summary of the run (events, processes, recoveries and how long
 * each took) and renders a PNG timeline with gnuplot: one row per node agent and per rank, a
 * marker per event kind, the recoveries shaded from the failure seen to the first step of the
 * next generation.
 *
 * Every line is validated (a complete JSON object with a numeric "ts", a string "event" and a
 * numeric "pid"); a bad line is counted and reported, never fatal. JSON is parsed here by a
 * small validating parser: jansson is for the store's etcd client only (tools/check-layers.sh).
 *
 * Exit status: 0 done; 1 no valid event, a file could not be read, or gnuplot failed; 2 usage.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"

#define MAX_LINE  65536
#define MAX_STR   256
#define MAX_ROWS  512
#define MAX_KINDS 32

struct event {
    double ts;
    char event[MAX_STR];
    char host[MAX_STR];
    char role[32];
    char cause[64];
    long pid;
    long rank, launch_rank, node, generation; /* -1: absent */
    int row;
};

/* Copies src into dst, cut to fit (snprintf's "%s" without its truncation warnings). */
static void copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* ---- a small validating JSON parser --------------------------------------------------------- */

struct jp {
    const char *p, *end;
    int depth;
};

static void ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

/* A string; its unescaped ASCII content (other code points become '?') into out when not NULL. */
static bool jstring(struct jp *j, char *out, size_t size)
{
    size_t o = 0;
    if (j->p >= j->end || *j->p != '"')
        return false;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"') {
            if (out)
                out[o] = 0;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (j->p >= j->end)
                return false;
            char e = *j->p++;
            if (e == 'u') {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    if (j->p >= j->end || !isxdigit((unsigned char)*j->p))
                        return false;
                    char h = *j->p++;
                    v = v * 16 +
                        (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
                }
                c = v < 0x80 ? (unsigned char)v : '?';
            } else if (strchr("\"\\/bfnrt", e)) {
                c = e == 'b'   ? '\b'
                    : e == 'f' ? '\f'
                    : e == 'n' ? '\n'
                    : e == 'r' ? '\r'
                    : e == 't' ? '\t'
                               : (unsigned char)e;
            } else {
                return false;
            }
        }
        if (out && o + 1 < size)
            out[o++] = (char)c;
    }
    return false;
}

static bool jnumber(struct jp *j, double *out)
{
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p))
        return false;
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || !isdigit((unsigned char)*j->p))
            return false;
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !isdigit((unsigned char)*j->p))
            return false;
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    }
    char buf[64];
    size_t n = (size_t)(j->p - s);
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    *out = strtod(buf, NULL);
    return isfinite(*out);
}

static bool jvalue(struct jp *j);

static bool jlit(struct jp *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n))
        return false;
    j->p += n;
    return true;
}

/* An array or object inside an event: validated, skipped. */
static bool jcompound(struct jp *j)
{
    char close = *j->p == '{' ? '}' : ']';
    bool obj = close == '}';
    if (++j->depth > 32)
        return false;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        ws(j);
        if (obj) {
            if (!jstring(j, NULL, 0))
                return false;
            ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return false;
            ws(j);
        }
        if (!jvalue(j))
            return false;
        ws(j);
        if (j->p >= j->end)
            return false;
        char c = *j->p++;
        if (c == close)
            break;
        if (c != ',')
            return false;
    }
    j->depth--;
    return true;
}

static bool jvalue(struct jp *j)
{
    double d;
    if (j->p >= j->end)
        return false;
    switch (*j->p) {
    case '"':
        return jstring(j, NULL, 0);
    case '{':
    case '[':
        return jcompound(j);
    case 't':
        return jlit(j, "true");
    case 'f':
        return jlit(j, "false");
    case 'n':
        return jlit(j, "null");
    default:
        return jnumber(j, &d);
    }
}

/* Parses one line into *ev; false when it is not a valid event. */
static bool parse_event(const char *line, size_t len, struct event *ev)
{
    struct jp j = {line, line + len, 0};
    memset(ev, 0, sizeof(*ev));
    ev->rank = ev->launch_rank = ev->node = ev->generation = -1;
    bool has_ts = false, has_event = false, has_pid = false;
    ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return false;
    j.p++;
    ws(&j);
    if (j.p < j.end && *j.p == '}')
        return false;
    for (;;) {
        char key[64];
        ws(&j);
        if (!jstring(&j, key, sizeof(key)))
            return false;
        ws(&j);
        if (j.p >= j.end || *j.p++ != ':')
            return false;
        ws(&j);
        if (j.p >= j.end)
            return false;
        if (*j.p == '"') {
            char v[MAX_STR];
            if (!jstring(&j, v, sizeof(v)))
                return false;
            if (!strcmp(key, "event") && v[0]) {
                copy(ev->event, sizeof(ev->event), v);
                has_event = true;
            } else if (!strcmp(key, "host")) {
                copy(ev->host, sizeof(ev->host), v);
            } else if (!strcmp(key, "role")) {
                copy(ev->role, sizeof(ev->role), v);
            } else if (!strcmp(key, "cause")) {
                copy(ev->cause, sizeof(ev->cause), v);
            }
        } else if (*j.p == '-' || isdigit((unsigned char)*j.p)) {
            double d;
            if (!jnumber(&j, &d))
                return false;
            bool whole = d == floor(d) && fabs(d) < 1e15;
            if (!strcmp(key, "ts") && d > 0) {
                ev->ts = d;
                has_ts = true;
            } else if (!strcmp(key, "pid") && whole && d >= 0) {
                ev->pid = (long)d;
                has_pid = true;
            } else if (whole && d >= 0) {
                if (!strcmp(key, "rank"))
                    ev->rank = (long)d;
                else if (!strcmp(key, "launch_rank"))
                    ev->launch_rank = (long)d;
                else if (!strcmp(key, "node"))
                    ev->node = (long)d;
                else if (!strcmp(key, "generation"))
                    ev->generation = (long)d;
            }
        } else if (!jvalue(&j)) {
            return false;
        }
        ws(&j);
        if (j.p >= j.end)
            return false;
        char c = *j.p++;
        if (c == '}')
            break;
        if (c != ',')
            return false;
    }
    ws(&j);
    return j.p == j.end && has_ts && has_event && has_pid;
}

/* ---- the run -------------------------------------------------------------------------------- */

struct run {
    struct event *ev;
    size_t n, cap;
    long lines, bad;
    char rows[MAX_ROWS][MAX_STR + 32];
    int nrows;
    struct row_key {
        char host[MAX_STR];
        int cls; /* 0 agent, 1 rank, 2 pid */
        long num;
    } keys[MAX_ROWS];
    bool many_hosts;
};

static int add_event(struct run *r, const struct event *e)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        struct event *p = eccl_realloc(r->ev, cap, sizeof(*p), "timeline");
        if (!p)
            return -1;
        r->ev = p;
        r->cap = cap;
    }
    r->ev[r->n++] = *e;
    return 0;
}

static int read_file(struct run *r, const char *path)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        fprintf(stderr, "eccl-timeline: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = eccl_calloc(MAX_LINE + 2, 1, "timeline");
    if (!line) {
        if (f != stdin)
            fclose(f);
        return -1;
    }
    long lineno = 0;
    int rc = 0;
    while (fgets(line, MAX_LINE + 2, f)) {
        size_t len = strlen(line);
        lineno++;
        bool whole = len > 0 && line[len - 1] == '\n';
        if (!whole && !feof(f)) {
            /* Longer than MAX_LINE: bad, and skip the rest of it. */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            r->lines++;
            r->bad++;
            fprintf(stderr, "eccl-timeline: %s:%ld: line too long\n", path, lineno);
            continue;
        }
        if (whole)
            line[--len] = 0;
        if (len == 0)
            continue;
        r->lines++;
        struct event e;
        if (memchr(line, 0, len) || !parse_event(line, len, &e)) {
            if (r->bad < 10)
                fprintf(stderr, "eccl-timeline: %s:%ld: not a valid event line\n", path, lineno);
            r->bad++;
            continue;
        }
        if (add_event(r, &e) != 0) {
            rc = -1;
            break;
        }
    }
    eccl_free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

static int cmp_ts(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    return x->ts < y->ts ? -1 : x->ts > y->ts ? 1 : 0;
}

/* The row of an event: an agent by its node (or host), a worker by its launcher rank (stable
 * across replacements), else its rank, else its pid. */
static void row_name(const struct run *r, const struct event *e, char *out, size_t size,
                     struct row_key *key)
{
    char who[64];
    copy(key->host, sizeof(key->host), r->many_hosts ? e->host : "");
    if (!strcmp(e->role, "agent")) {
        key->cls = 0;
        key->num = e->node;
        if (e->node >= 0)
            snprintf(who, sizeof(who), "agent node %ld", e->node);
        else
            snprintf(who, sizeof(who), "agent");
    } else if (e->launch_rank >= 0 || e->rank >= 0) {
        key->cls = 1;
        key->num = e->launch_rank >= 0 ? e->launch_rank : e->rank;
        snprintf(who, sizeof(who), "rank %ld", key->num);
    } else {
        key->cls = 2;
        key->num = e->pid;
        snprintf(who, sizeof(who), "pid %ld", e->pid);
    }
    if (r->many_hosts)
        snprintf(out, size, "%.128s %s", e->host, who);
    else
        copy(out, size, who);
}

static int cmp_key(const struct row_key *a, const struct row_key *b)
{
    int c = strcmp(a->host, b->host);
    if (c)
        return c;
    if (a->cls != b->cls)
        return a->cls - b->cls;
    return a->num < b->num ? -1 : a->num > b->num;
}

/* Rows from the bottom up: per host, the agents, then the ranks in order, then other pids. */
static void assign_rows(struct run *r)
{
    for (size_t i = 1; i < r->n; i++)
        if (strcmp(r->ev[i].host, r->ev[0].host))
            r->many_hosts = true;
    for (size_t i = 0; i < r->n; i++) {
        char name[sizeof(r->rows[0])];
        struct row_key key;
        row_name(r, &r->ev[i], name, sizeof(name), &key);
        int k = 0;
        while (k < r->nrows && strcmp(r->rows[k], name))
            k++;
        if (k == r->nrows) {
            if (r->nrows == MAX_ROWS) {
                k = MAX_ROWS - 1; /* the last row collects the rest */
            } else {
                snprintf(r->rows[k], sizeof(r->rows[k]), "%s", name);
                r->keys[k] = key;
                r->nrows++;
            }
        }
        r->ev[i].row = k;
    }
    /* Sort the rows (a handful: insertion sort), then renumber the events. */
    int order[MAX_ROWS], where[MAX_ROWS];
    for (int k = 0; k < r->nrows; k++) {
        int j = k;
        while (j > 0 && cmp_key(&r->keys[order[j - 1]], &r->keys[k]) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    static char sorted[MAX_ROWS][MAX_STR + 32];
    static struct row_key skeys[MAX_ROWS];
    for (int j = 0; j < r->nrows; j++) {
        where[order[j]] = j;
        memcpy(sorted[j], r->rows[order[j]], sizeof(sorted[j]));
        skeys[j] = r->keys[order[j]];
    }
    memcpy(r->rows, sorted, sizeof(sorted[0]) * (size_t)r->nrows);
    memcpy(r->keys, skeys, sizeof(skeys[0]) * (size_t)r->nrows);
    for (size_t i = 0; i < r->n; i++)
        r->ev[i].row = where[r->ev[i].row];
}

struct recovery {
    double start, end; /* end < 0: never completed */
    long from_gen, to_gen;
    char cause[64];
    char who[MAX_STR + 32];
};

/* Recoveries: from the first failure_seen not in a recovery yet to the first first_step of a
 * later generation. */
static size_t find_recoveries(const struct run *r, struct recovery *out, size_t max)
{
    size_t n = 0;
    long max_gen = 0;
    bool open = false;
    for (size_t i = 0; i < r->n; i++) {
        const struct event *e = &r->ev[i];
        if (!strcmp(e->event, "failure_seen") && !open && n < max) {
            struct recovery *v = &out[n++];
            v->start = e->ts;
            v->end = -1;
            v->from_gen = e->generation > 0 ? e->generation : max_gen;
            v->to_gen = -1;
            snprintf(v->cause, sizeof(v->cause), "%s", e->cause[0] ? e->cause : "?");
            snprintf(v->who, sizeof(v->who), "%s", r->rows[e->row]);
            open = true;
        } else if (!strcmp(e->event, "first_step") && open && e->generation > out[n - 1].from_gen) {
            out[n - 1].end = e->ts;
            out[n - 1].to_gen = e->generation;
            open = false;
        }
        if (e->generation > max_gen && strcmp(e->event, "failure_seen"))
            max_gen = e->generation;
    }
    return n;
}

static void summary(const struct run *r, const struct recovery *rec, size_t nrec, double t0)
{
    printf("events: %zu valid, %ld bad line%s, %d row%s\n", r->n, r->bad, r->bad == 1 ? "" : "s",
           r->nrows, r->nrows == 1 ? "" : "s");
    if (r->n > 0)
        printf("span: %.3f s\n", r->ev[r->n - 1].ts - t0);
    char kinds[MAX_KINDS][MAX_STR];
    long counts[MAX_KINDS] = {0};
    int nk = 0;
    for (size_t i = 0; i < r->n; i++) {
        int k = 0;
        while (k < nk && strcmp(kinds[k], r->ev[i].event))
            k++;
        if (k == nk && nk < MAX_KINDS)
            snprintf(kinds[nk++], MAX_STR, "%s", r->ev[i].event);
        if (k < nk)
            counts[k]++;
    }
    for (int k = 0; k < nk; k++)
        printf("  %-14s %ld\n", kinds[k], counts[k]);
    printf("recoveries: %zu\n", nrec);
    for (size_t i = 0; i < nrec; i++) {
        const struct recovery *v = &rec[i];
        if (v->end >= 0)
            printf("recovery %zu: failure seen at +%.3f s by %s (cause %s), generation %ld -> %ld, "
                   "first step at +%.3f s: %.1f ms\n",
                   i + 1, v->start - t0, v->who, v->cause, v->from_gen, v->to_gen, v->end - t0,
                   (v->end - v->start) * 1e3);
        else
            printf("recovery %zu: failure seen at +%.3f s by %s (cause %s), generation %ld: no "
                   "first step after it in the log\n",
                   i + 1, v->start - t0, v->who, v->cause, v->from_gen);
    }
}

/* The gnuplot title and labels: printable ASCII, no quote or backslash. */
static void clean(char *s)
{
    for (; *s; s++)
        if (*s < ' ' || *s > '~' || *s == '"' || *s == '\\' || *s == '\'')
            *s = '_';
}

static int plot(const struct run *r, const struct recovery *rec, size_t nrec, double t0,
                const char *out, const char *title)
{
    char dir[] = "/tmp/eccl-timeline-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "eccl-timeline: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    char data[sizeof(dir) + 16], script[sizeof(dir) + 16];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(script, sizeof(script), "%s/plot.gp", dir);
    int rc = 1;
    FILE *d = fopen(data, "w"), *g = fopen(script, "w");
    if (!d || !g) {
        fprintf(stderr, "eccl-timeline: cannot write in %s\n", dir);
        goto out;
    }
    /* One data block per event kind (blocks split by two blank lines: gnuplot's index). */
    char kinds[MAX_KINDS][MAX_STR];
    int nk = 0;
    for (size_t i = 0; i < r->n; i++) {
        int k = 0;
        while (k < nk && strcmp(kinds[k], r->ev[i].event))
            k++;
        if (k == nk && nk < MAX_KINDS)
            snprintf(kinds[nk++], MAX_STR, "%s", r->ev[i].event);
    }
    for (int k = 0; k < nk; k++) {
        fprintf(d, "# %s\n", kinds[k]);
        for (size_t i = 0; i < r->n; i++)
            if (!strcmp(r->ev[i].event, kinds[k]))
                fprintf(d, "%.6f %d\n", r->ev[i].ts - t0, r->ev[i].row);
        fprintf(d, "\n\n");
    }
    double span = r->n ? r->ev[r->n - 1].ts - t0 : 1;
    char t[512];
    copy(t, sizeof(t), title);
    clean(t);
    fprintf(g, "set terminal pngcairo noenhanced size 1400,%d font ',10'\n", 200 + 28 * r->nrows);
    fprintf(g, "set output '%s'\n", out);
    fprintf(g, "set title \"%s\"\nset xlabel 'seconds since the first event'\n", t);
    fprintf(g, "set yrange [-0.7:%f]\nset xrange [%f:%f]\n", r->nrows - 0.3, -0.02 * span,
            span * 1.02 + 0.001);
    fprintf(g, "set grid xtics\nset key outside right top\nset ytics (");
    for (int i = 0; i < r->nrows; i++) {
        char name[sizeof(r->rows[0])];
        snprintf(name, sizeof(name), "%s", r->rows[i]);
        clean(name);
        fprintf(g, "%s\"%s\" %d", i ? ", " : "", name, i);
    }
    fprintf(g, ")\n");
    for (size_t i = 0; i < nrec; i++) {
        double end = rec[i].end >= 0 ? rec[i].end - t0 : span;
        fprintf(g,
                "set object %zu rect from %f, graph 0 to %f, graph 1 fc rgb '#f4a6a6' "
                "fs solid 0.35 noborder behind\n",
                i + 1, rec[i].start - t0, end);
        fprintf(g, "set label %zu '%.0f ms' at %f, graph 0.97 front font ',9'\n", i + 1,
                (end - (rec[i].start - t0)) * 1e3, rec[i].start - t0);
    }
    fprintf(g, "plot ");
    static const int pts[] = {7, 5, 9, 11, 13, 3, 1, 2, 4, 6, 8, 10, 12};
    for (int k = 0; k < nk; k++) {
        char name[MAX_STR];
        copy(name, sizeof(name), kinds[k]);
        clean(name);
        fprintf(g, "%s'%s' index %d using 1:2 with points pt %d ps 1.4 title '%s'",
                k ? ", \\\n     " : "", data, k, pts[k % 13], name);
    }
    if (nk == 0)
        fprintf(g, "NaN notitle");
    fprintf(g, "\n");
    fclose(g);
    g = NULL;
    fclose(d);
    d = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "eccl-timeline: fork: %s\n", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        fprintf(stderr,
                "eccl-timeline: cannot run gnuplot: %s (Debian: apt-get install "
                "gnuplot-nox; --text needs no gnuplot)\n",
                strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        rc = 0;
        printf("timeline: %s\n", out);
    } else {
        fprintf(stderr, "eccl-timeline: gnuplot failed\n");
    }
out:
    if (d)
        fclose(d);
    if (g)
        fclose(g);
    unlink(data);
    unlink(script);
    rmdir(dir);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: eccl-timeline [-o OUT.png] [--title TEXT] [--text] LOG [LOG...]\n"
               "Reads ECCL_EVENT_LOG files (JSON lines; - is stdin), prints a summary with every\n"
               "recovery's duration, and renders a PNG timeline with gnuplot.\n"
               "  -o, --output FILE  the PNG (default timeline.png)\n"
               "  --title TEXT       the plot's title (default \"eccl timeline\")\n"
               "  --text             summary only (no gnuplot needed)\n"
               "  -h, --help         this text\n");
}

int main(int argc, char **argv)
{
    const char *out = "timeline.png", *title = "eccl timeline";
    bool text = false;
    int first = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) {
            out = argv[++i];
        } else if (!strncmp(a, "--output=", 9)) {
            out = a + 9;
        } else if (!strcmp(a, "--title") && i + 1 < argc) {
            title = argv[++i];
        } else if (!strncmp(a, "--title=", 8)) {
            title = a + 8;
        } else if (!strcmp(a, "--text")) {
            text = true;
        } else if (!strcmp(a, "--")) {
            first = i + 1;
            break;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "eccl-timeline: %s: unknown option or missing value\n", a);
            usage(stderr);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (first >= argc) {
        fprintf(stderr, "eccl-timeline: no log file given\n");
        usage(stderr);
        return 2;
    }
    if (!out[0] || strchr(out, '\'') || strchr(out, '\n')) {
        fprintf(stderr, "eccl-timeline: -o: '%s' cannot be a gnuplot file name\n", out);
        return 2;
    }
    static struct run r;
    int rc = 0;
    for (int i = first; i < argc; i++)
        if (read_file(&r, argv[i]) != 0)
            rc = 1;
    if (r.bad > 0)
        fprintf(stderr, "eccl-timeline: %ld of %ld lines are not valid events (ignored)\n", r.bad,
                r.lines);
    if (r.n == 0) {
        fprintf(stderr, "eccl-timeline: no valid event\n");
        eccl_free(r.ev);
        return 1;
    }
    qsort(r.ev, r.n, sizeof(*r.ev), cmp_ts);
    assign_rows(&r);
    double t0 = r.ev[0].ts;
    static struct recovery rec[1024];
    size_t nrec = find_recoveries(&r, rec, sizeof(rec) / sizeof(rec[0]));
    summary(&r, rec, nrec, t0);
    if (!text && plot(&r, rec, nrec, t0, out, title) != 0)
        rc = 1;
    eccl_free(r.ev);
    return rc;
}

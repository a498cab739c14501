/*
 * report.c - eccl-perf's --csv and --plot: the result table as CSV (the header written by the
 * parent before any rank runs, one row per size appended by rank 0 with O_APPEND, so that a
 * forked rank process can write it), and a busbw-against-size PNG drawn from that CSV by gnuplot
 * (log2 x axis) once the run is over.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/eccl-perf/perf.h"

#define CSV_HEADER \
    "size,count,type,op,root,time_us,algbw,busbw,wrong,ip_time_us,ip_algbw,ip_busbw,ip_wrong\n"

static int write_all(const char *path, const char *text, int flags)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len); /* one write: rows of several writers do not mix */
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

int perf_csv_start(const char *path)
{
    if (write_all(path, CSV_HEADER, O_TRUNC) != 0) {
        fprintf(stderr, "eccl-perf: --csv: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void half(char *buf, size_t size, const struct perf_csv_half *h)
{
    if (h->skipped) {
        snprintf(buf, size, ",,,");
        return;
    }
    char wrong[32] = "";
    if (h->wrong >= 0)
        snprintf(wrong, sizeof(wrong), "%" PRId64, h->wrong);
    snprintf(buf, size, "%.3f,%.4f,%.4f,%s", h->time_us, h->algbw, h->busbw, wrong);
}

void perf_csv_row(const struct perf_opts *o, size_t size, size_t count, const char *type,
                  const char *op, int root, const struct perf_csv_half h[2])
{
    char a[128], b[128], row[512];
    half(a, sizeof(a), &h[0]);
    half(b, sizeof(b), &h[1]);
    snprintf(row, sizeof(row), "%zu,%zu,%s,%s,%d,%s,%s\n", size, count, type, op, root, a, b);
    if (write_all(o->csv_file, row, O_APPEND) != 0)
        fprintf(stderr, "eccl-perf: --csv: cannot append to %s: %s\n", o->csv_file,
                strerror(errno));
}

int perf_plot(const struct perf_opts *o)
{
    char script[] = "/tmp/eccl-perf-plot-XXXXXX";
    int fd = mkstemp(script);
    if (fd < 0) {
        fprintf(stderr, "eccl-perf: --plot: mkstemp: %s\n", strerror(errno));
        return -1;
    }
    FILE *g = fdopen(fd, "w");
    if (!g) {
        close(fd);
        unlink(script);
        return -1;
    }
    /* File names with a quote were refused with the options; the CSV path is ours or the
     * user's --csv, which goes through the same check here. */
    if (strchr(o->csv_file, '\'')) {
        fprintf(stderr, "eccl-perf: --plot: the CSV path has a quote\n");
        fclose(g);
        unlink(script);
        return -1;
    }
    fprintf(g,
            "set terminal pngcairo noenhanced size 1000,600\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set logscale x 2\n"
            "set format x '%%.0s%%cB'\n"
            "set xlabel 'size (bytes)'\nset ylabel 'busbw (GB/s)'\n"
            "set title 'eccl-perf %s: bus bandwidth'\n"
            "set key top left\nset grid\n"
            "plot '%s' every ::1 using 1:8 with linespoints pt 7 title 'out-of-place', \\\n"
            "     '%s' every ::1 using 1:12 with linespoints pt 5 title 'in-place'\n",
            o->plot_file, o->coll->name, o->csv_file, o->csv_file);
    fclose(g);
    int rc = -1;
    pid_t pid = fork();
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        fprintf(stderr, "eccl-perf: --plot: cannot run gnuplot: %s (Debian: gnuplot-nox)\n",
                strerror(errno));
        _exit(127);
    }
    if (pid > 0) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        rc = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
    }
    if (rc != 0)
        fprintf(stderr, "eccl-perf: --plot: gnuplot could not draw %s\n", o->plot_file);
    unlink(script);
    return rc;
}

/*
 * stream_copy.c - the memory bandwidth a host collective can hope for: a STREAM-like copy
 * (memcpy of a buffer far larger than the caches), by one thread and by one thread per core.
 *
 * Prints the rate in GB/s (10^9 bytes per second) of bytes copied, the unit of a collective's
 * algbw and busbw (STREAM's convention counts the bytes read as well, twice this figure). Each
 * figure is, as STREAM reports it, the best of `-n` repetitions after one untimed pass that
 * faults the pages in: on a shared machine the best is the one least disturbed by others.
 * bench/host_vs_peers.sh runs it next to the collectives.
 *
 * Usage: stream_copy [-s BYTES_PER_THREAD] [-n REPS] [-t THREADS]   (defaults 256 MiB, 10, nproc)
 * Output: `copy threads=1 GB/s=X` and `copy threads=T GB/s=Y`.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

struct copier {
    char *src, *dst;
    size_t bytes;
    pthread_barrier_t *start;
    double secs;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *copy_main(void *arg)
{
    struct copier *c = arg;
    pthread_barrier_wait(c->start);
    double t0 = now_s();
    memcpy(c->dst, c->src, c->bytes);
    c->secs = now_s() - t0;
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The best over `reps` of the aggregate rate of `nthreads` threads copying at once. */
static int measure(struct copier *cs, int nthreads, int reps, double *gbs)
{
    double rates[64];
    pthread_t th[256];
    pthread_barrier_t bar;
    if (reps > 64)
        reps = 64;
    for (int r = -1; r < reps; r++) {
        if (pthread_barrier_init(&bar, NULL, (unsigned)nthreads) != 0)
            return -1;
        for (int t = 0; t < nthreads; t++) {
            cs[t].start = &bar;
            if (pthread_create(&th[t], NULL, copy_main, &cs[t]) != 0) {
                fprintf(stderr, "stream_copy: pthread_create failed\n");
                exit(1);
            }
        }
        double slowest = 0, total = 0;
        for (int t = 0; t < nthreads; t++) {
            pthread_join(th[t], NULL);
            if (cs[t].secs > slowest)
                slowest = cs[t].secs;
            total += (double)cs[t].bytes;
        }
        pthread_barrier_destroy(&bar);
        if (r >= 0)
            rates[r] = total / slowest / 1e9;
    }
    qsort(rates, (size_t)reps, sizeof(double), cmp_double);
    *gbs = rates[reps - 1];
    return 0;
}

int main(int argc, char **argv)
{
    size_t bytes = (size_t)256 << 20;
    int reps = 10, nthreads = get_nprocs();
    int opt;
    while ((opt = getopt(argc, argv, "s:n:t:")) != -1) {
        switch (opt) {
        case 's':
            bytes = (size_t)strtoull(optarg, NULL, 0);
            break;
        case 'n':
            reps = atoi(optarg);
            break;
        case 't':
            nthreads = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: stream_copy [-s BYTES] [-n REPS] [-t THREADS]\n");
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > 256 || reps < 1 || bytes == 0) {
        fprintf(stderr, "stream_copy: bad arguments\n");
        return 2;
    }
    struct copier cs[256];
    for (int t = 0; t < nthreads; t++) {
        cs[t].bytes = bytes;
        cs[t].src = aligned_alloc(64, bytes);
        cs[t].dst = aligned_alloc(64, bytes);
        if (!cs[t].src || !cs[t].dst) {
            fprintf(stderr, "stream_copy: out of memory\n");
            return 1;
        }
        memset(cs[t].src, 1, bytes);
        memset(cs[t].dst, 0, bytes);
    }
    double one, all;
    if (measure(cs, 1, reps, &one) != 0 || measure(cs, nthreads, reps, &all) != 0)
        return 1;
    printf("copy threads=1 GB/s=%.3f\n", one);
    printf("copy threads=%d GB/s=%.3f\n", nthreads, all);
    for (int t = 0; t < nthreads; t++) {
        free(cs[t].src);
        free(cs[t].dst);
    }
    return 0;
}

/*
 * core_latency.c - how long a cache line takes to go from one core to another, for every pair
 * of CPUs this process may run on.
 *
 * Two threads, pinned to the two CPUs of a pair, pass a counter back and forth in one line; the
 * one-way time is half a round trip. It tells where the CPUs sit: cores that share a last-level
 * cache pass a line in a few tens of nanoseconds, cores on different dies (an EPYC's CCDs) or
 * sockets in 100 to 200. On a virtual machine it can change while the machine runs, as the
 * hypervisor moves the virtual CPUs; bench/host_vs_peers.sh measures it around each of eccl's
 * runs, since every step through a connector slot moves lines between the ranks' cores
 * (docs/bench-host.md).
 *
 * Usage: core_latency [-n ROUND_TRIPS] [-r REPS]   (defaults 100000, 5)
 * Output: one line per pair, `c2c cpus=A,B ns=X` (the median of REPS runs, in ns one way).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The counter has its line to itself: anything else read in the loop would move with it. */
struct pingpong {
    _Alignas(64) _Atomic long turn; /* odd: the partner's move, even: the starter's */
    _Alignas(64) long rounds;
    int cpu;
    int err;
};

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *partner(void *arg)
{
    struct pingpong *p = arg;
    p->err = pin(p->cpu);
    if (p->err) {
        atomic_store(&p->turn, -1);
        return NULL;
    }
    atomic_store(&p->turn, 0); /* ready, on its CPU */
    long rounds = p->rounds;
    for (long i = 0; i < rounds; i++) {
        while (atomic_load_explicit(&p->turn, memory_order_acquire) != 2 * i + 1)
            ;
        atomic_store_explicit(&p->turn, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* One-way ns between CPUs a and b, or a negative errno. */
static double one_way(int a, int b, long rounds)
{
    static struct pingpong p;
    atomic_store(&p.turn, -2);
    p.rounds = rounds;
    p.cpu = b;
    p.err = 0;
    int e = pin(a);
    if (e)
        return -e;
    pthread_t t;
    e = pthread_create(&t, NULL, partner, &p);
    if (e)
        return -e;
    /* The partner starts on this CPU (it inherits the mask): let it run until it has moved. */
    long v;
    while ((v = atomic_load(&p.turn)) == -2)
        sched_yield();
    if (v < 0) {
        pthread_join(t, NULL);
        return -p.err;
    }
    double t0 = now_ns();
    for (long i = 0; i < rounds; i++) {
        atomic_store_explicit(&p.turn, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&p.turn, memory_order_acquire) != 2 * i + 2)
            ;
    }
    double t1 = now_ns();
    pthread_join(t, NULL);
    if (p.err)
        return -p.err;
    return (t1 - t0) / (double)rounds / 2.0;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    long rounds = 100000;
    int reps = 5, opt;
    while ((opt = getopt(argc, argv, "n:r:")) != -1) {
        if (opt == 'n')
            rounds = atol(optarg);
        else if (opt == 'r')
            reps = atoi(optarg);
        else {
            fprintf(stderr, "usage: core_latency [-n ROUND_TRIPS] [-r REPS]\n");
            return 2;
        }
    }
    if (rounds < 1 || reps < 1 || reps > 100) {
        fprintf(stderr, "core_latency: -n must be >= 1 and -r in 1..100\n");
        return 2;
    }
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof(mask), &mask) != 0) {
        fprintf(stderr, "core_latency: sched_getaffinity: %s\n", strerror(errno));
        return 1;
    }
    int cpus[CPU_SETSIZE], ncpu = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &mask))
            cpus[ncpu++] = c;
    if (ncpu < 2) {
        fprintf(stderr, "core_latency: this process may run on %d CPU: no pair to measure\n", ncpu);
        return 1;
    }
    double v[100];
    for (int i = 0; i < ncpu; i++)
        for (int j = i + 1; j < ncpu; j++) {
            for (int r = 0; r < reps; r++) {
                v[r] = one_way(cpus[i], cpus[j], rounds);
                if (v[r] < 0) {
                    fprintf(stderr, "core_latency: CPUs %d and %d: %s\n", cpus[i], cpus[j],
                            strerror((int)-v[r]));
                    return 1;
                }
            }
            qsort(v, (size_t)reps, sizeof(v[0]), cmp_double);
            printf("c2c cpus=%d,%d ns=%.1f\n", cpus[i], cpus[j], v[reps / 2]);
        }
    sched_setaffinity(0, sizeof(mask), &mask);
    return 0;
}

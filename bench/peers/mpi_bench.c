/*
 * mpi_bench.c - Open MPI's AllReduce, AllGather, ReduceScatter and Broadcast (float32, sum),
 * timed the way eccl-perf times eccl's (bench/host_vs_peers.sh compares them side by side).
 *
 * Sizes follow eccl-perf: `size` is the larger of the send and the receive buffer, count =
 * size / 4, divided among the ranks for AllGather and ReduceScatter; busbw uses nccl-tests'
 * factors. Timing, per size: one call, a barrier, then `iters` calls back to back, each timed on
 * its own (CLOCK_MONOTONIC), consecutive calls moving through the buffers as eccl-perf does; a
 * rank's result is the median of its iterations, the reported time the maximum over ranks.
 * Warm-up: `warmup` calls at the largest and at the smallest size before the series.
 *
 * Built by bench/host_vs_peers.sh with mpicc (not by the Makefile: MPI may be absent).
 * Usage: mpirun -np N mpi_bench -c allreduce|allgather|reducescatter|broadcast -b MIN -e MAX
 *        [-f FACTOR] [-n ITERS] [-w WARMUP]
 * Prints one line per size on rank 0: `mpi COLL NRANKS BYTES MEDIAN_US ALGBW BUSBW`.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum coll { C_ALLREDUCE, C_ALLGATHER, C_REDUCESCATTER, C_BROADCAST };

struct opts {
    enum coll coll;
    size_t min_bytes, max_bytes;
    double factor;
    int iters, warmup;
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k')
        v *= 1024;
    else if (*end == 'M' || *end == 'm')
        v *= 1024 * 1024;
    else if (*end == 'G' || *end == 'g')
        v *= 1024.0 * 1024 * 1024;
    return (size_t)v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int parse(int argc, char **argv, struct opts *o)
{
    o->coll = C_ALLREDUCE;
    o->min_bytes = o->max_bytes = 32u << 20;
    o->factor = 2;
    o->iters = 20;
    o->warmup = 5;
    int c;
    while ((c = getopt(argc, argv, "c:b:e:f:n:w:")) != -1) {
        switch (c) {
        case 'c':
            if (!strcmp(optarg, "allreduce"))
                o->coll = C_ALLREDUCE;
            else if (!strcmp(optarg, "allgather"))
                o->coll = C_ALLGATHER;
            else if (!strcmp(optarg, "reducescatter"))
                o->coll = C_REDUCESCATTER;
            else if (!strcmp(optarg, "broadcast"))
                o->coll = C_BROADCAST;
            else
                return -1;
            break;
        case 'b':
            o->min_bytes = parse_size(optarg);
            break;
        case 'e':
            o->max_bytes = parse_size(optarg);
            break;
        case 'f':
            o->factor = atof(optarg);
            break;
        case 'n':
            o->iters = atoi(optarg);
            break;
        case 'w':
            o->warmup = atoi(optarg);
            break;
        default:
            return -1;
        }
    }
    return o->iters > 0 && o->factor > 1 && o->min_bytes <= o->max_bytes ? 0 : -1;
}

static const char *const names[] = {"allreduce", "allgather", "reducescatter", "broadcast"};

/* Elements of the call's count argument and bytes of the send and receive buffers. */
static void counts(const struct opts *o, size_t bytes, int n, size_t *count, size_t *send,
                   size_t *recv)
{
    size_t c = bytes / sizeof(float);
    if (o->coll == C_ALLGATHER || o->coll == C_REDUCESCATTER)
        c /= (size_t)n;
    *count = c;
    *send = c * sizeof(float) * (o->coll == C_REDUCESCATTER ? (size_t)n : 1);
    *recv = c * sizeof(float) * (o->coll == C_ALLGATHER ? (size_t)n : 1);
}

static void run_once(const struct opts *o, char *sb, char *rb, size_t count)
{
    switch (o->coll) {
    case C_ALLREDUCE:
        MPI_Allreduce(sb, rb, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        break;
    case C_ALLGATHER:
        MPI_Allgather(sb, (int)count, MPI_FLOAT, rb, (int)count, MPI_FLOAT, MPI_COMM_WORLD);
        break;
    case C_REDUCESCATTER:
        MPI_Reduce_scatter_block(sb, rb, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        break;
    case C_BROADCAST:
        MPI_Bcast(rb, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
        break;
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    struct opts o;
    if (parse(argc, argv, &o) != 0) {
        if (rank == 0)
            fprintf(stderr, "usage: mpi_bench -c COLL -b MIN -e MAX [-f F] [-n N] [-w W]\n");
        MPI_Finalize();
        return 2;
    }
    size_t count, send, recv;
    counts(&o, o.max_bytes, n, &count, &send, &recv);
    size_t alloc = (o.max_bytes + 63) & ~(size_t)63;
    if (alloc < 64)
        alloc = 64;
    char *sb = aligned_alloc(64, alloc), *rb = aligned_alloc(64, alloc);
    double *it = calloc((size_t)o.iters, sizeof(double));
    if (!sb || !rb || !it) {
        fprintf(stderr, "mpi_bench: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (size_t i = 0; i < alloc / sizeof(float); i++) {
        ((float *)sb)[i] = (float)(i % 7);
        ((float *)rb)[i] = 0;
    }
    size_t sizes[2] = {o.max_bytes, o.min_bytes};
    for (int s = 0; s < 2; s++) {
        counts(&o, sizes[s], n, &count, &send, &recv);
        for (int i = 0; i < o.warmup; i++)
            run_once(&o, sb, rb, count);
    }
    for (size_t bytes = o.min_bytes; bytes <= o.max_bytes;
         bytes = bytes ? (size_t)((double)bytes * o.factor) : 1) {
        counts(&o, bytes, n, &count, &send, &recv);
        size_t total = send > recv ? send : recv;
        size_t steps = total ? alloc / total : 0;
        run_once(&o, sb, rb, count);
        MPI_Barrier(MPI_COMM_WORLD);
        for (int i = 0; i < o.iters; i++) {
            size_t shift = steps ? total * ((size_t)i % steps) : 0;
            double t0 = now_us();
            run_once(&o, sb + shift, rb + shift, count);
            it[i] = now_us() - t0;
        }
        qsort(it, (size_t)o.iters, sizeof(double), cmp_double);
        double med = o.iters % 2 ? it[o.iters / 2] : (it[o.iters / 2 - 1] + it[o.iters / 2]) / 2;
        double worst;
        MPI_Reduce(&med, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            double algbw = worst > 0 ? (double)total / worst / 1e3 : 0;
            double f = o.coll == C_ALLREDUCE   ? 2.0 * (n - 1) / n
                       : o.coll == C_BROADCAST ? 1.0
                                               : (double)(n - 1) / n;
            printf("mpi %s %d %zu %.3f %.4f %.4f\n", names[o.coll], n, total, worst, algbw,
                   algbw * f);
            fflush(stdout);
        }
        if (bytes == 0 && o.max_bytes == 0)
            break;
    }
    free(it);
    free(sb);
    free(rb);
    MPI_Finalize();
    return 0;
}

/*
 * reduce_bench.c - throughput of the host reductions (kernels/reduce.h), the host executor's hot
 * loop.
 *
 * For each data type and buffer size it times eccl_reduce_combine(dst, a, b) with dst == a (the
 * executor's in-place step) and prints GB/s as bytes of one operand per second (count * size /
 * time; the memory traffic is three times that). Sizes: one in L1/L2, one in L2, one in DRAM.
 *
 *   build/bench/reduce_bench [seconds per point, default 0.2] [ecclDataType_t ...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eccl.h"
#include "common/alloc.h"
#include "kernels/reduce.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Bytes of one operand per second for dst = dst (+) b over `bytes` bytes. */
static double measure(int dtype, int kind, size_t bytes, double seconds)
{
    size_t n = bytes / eccl_dtype_size(dtype);
    unsigned char *a = eccl_calloc_aligned(bytes, 64, "bench");
    unsigned char *b = eccl_calloc_aligned(bytes, 64, "bench");
    if (a == NULL || b == NULL) {
        eccl_free_aligned(a);
        eccl_free_aligned(b);
        return -1.0;
    }
    /* Small values: sums stay finite and normal for every type over the repetitions below. */
    for (size_t i = 0; i < n; i++) {
        eccl_dtype_store(a, i, dtype, (double)(i % 7) * 0.25);
        eccl_dtype_store(b, i, dtype, 0.0);
    }
    struct eccl_redop op = {.kind = (uint8_t)kind, .dtype = (uint8_t)dtype, .scalar = 0};
    eccl_reduce_combine(a, a, b, n, &op); /* warm up: page in, pick the ifunc */
    size_t reps = 0;
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < 8; k++)
            eccl_reduce_combine(a, a, b, n, &op);
        reps += 8;
        t = now_s() - t0;
    } while (t < seconds);
    eccl_free_aligned(a);
    eccl_free_aligned(b);
    return (double)bytes * (double)reps / t / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0.2;
    int dtypes[ecclNumTypes] = {ecclFloat32, ecclFloat16};
    int ndtypes = 2;
    if (argc > 2) {
        ndtypes = 0;
        for (int i = 2; i < argc && ndtypes < ecclNumTypes; i++)
            dtypes[ndtypes++] = atoi(argv[i]);
    }
    static const size_t sizes[] = {64 << 10, 1 << 20, 64 << 20};
    printf("# eccl_reduce_combine(dst == a, b), GB/s of one operand (traffic is 3x)\n");
    printf("# %-10s %-6s %12s %12s %12s\n", "type", "op", "64KiB", "1MiB", "64MiB");
    for (int t = 0; t < ndtypes; t++) {
        if (eccl_dtype_size(dtypes[t]) == 0) {
            fprintf(stderr, "unknown data type %d\n", dtypes[t]);
            return 2;
        }
        printf("  %-10s %-6s", eccl_dtype_name(dtypes[t]), "sum");
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            double gbs = measure(dtypes[t], ECCL_RED_SUM, sizes[s], seconds);
            if (gbs < 0) {
                fprintf(stderr, "allocation failed\n");
                return 1;
            }
            printf(" %12.2f", gbs);
            fflush(stdout);
        }
        printf("\n");
    }
    return 0;
}

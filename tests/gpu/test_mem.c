/*
 * test_mem.c - ecclMemAlloc and ecclMemFree (core/mem.c).
 *
 * With a CUDA device: allocations of several sizes are device memory of the current device, hold
 * what is copied into them, are cuMem memory (the legacy IPC API refuses them) and serve as the
 * buffers of collectives on a one-rank communicator; with ECCL_CUMEM_ENABLE=0 they are cudaMalloc
 * memory (the legacy IPC API takes them); a pointer that did not come from
 * ecclMemAlloc, or was freed already, is refused and leaves the allocator usable; threads
 * allocate and free at once.
 *
 * Without one (or in a build without CUDA), exits 77 after checking that the calls fail cleanly.
 */
#include <pthread.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>

#include "common/param.h"
#include "eccl.h"
#include "kernels/dev_mem.h"
#include "kernels/reduce_dev.h"

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>

static const size_t sizes[] = {1, 4096, (3u << 20) + 1, 64u << 20};

/* `ptr` is device memory of the current device, `size` bytes of it hold what was copied in. */
static void check_buffer(void *ptr, size_t size)
{
    struct cudaPointerAttributes a;
    assert_int_equal(cudaPointerGetAttributes(&a, ptr), cudaSuccess);
    assert_int_equal(a.type, cudaMemoryTypeDevice);
    int dev = -1;
    assert_int_equal(cudaGetDevice(&dev), cudaSuccess);
    assert_int_equal(a.device, dev);
    unsigned char *h = malloc(size);
    unsigned char *back = malloc(size);
    assert_non_null(h);
    assert_non_null(back);
    for (size_t i = 0; i < size; i++)
        h[i] = (unsigned char)(i * 131 + size);
    assert_int_equal(cudaMemcpy(ptr, h, size, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(back, ptr, size, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(h, back, size);
    free(h);
    free(back);
}

/* cumem: the allocations are cuMem memory, which the legacy IPC API refuses; else cudaMalloc
 * memory, which it takes. */
static void alloc_sizes(bool cumem)
{
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = NULL;
        assert_int_equal(ecclMemAlloc(&p, sizes[i]), ecclSuccess);
        assert_non_null(p);
        check_buffer(p, sizes[i]);
        cudaIpcMemHandle_t h;
        cudaError_t e = cudaIpcGetMemHandle(&h, p);
        (void)cudaGetLastError();
        if (cumem)
            assert_int_not_equal(e, cudaSuccess);
        else
            assert_int_equal(e, cudaSuccess);
        assert_int_equal(ecclMemFree(p), ecclSuccess);
    }
}

static void test_alloc_cumem(void **state)
{
    (void)state;
    int dev = 0;
    assert_int_equal(cudaGetDevice(&dev), cudaSuccess);
    /* cuMem where the device exports file descriptors (the H100s it ran on do). */
    alloc_sizes(kern_dev_mem_pick(dev, true) == KERN_DEV_MEM_CUMEM);
}

static void test_alloc_cudamalloc(void **state)
{
    (void)state;
    setenv("ECCL_CUMEM_ENABLE", "0", 1);
    eccl_param_reset(); /* values are read once and kept */
    alloc_sizes(false);
    unsetenv("ECCL_CUMEM_ENABLE");
    eccl_param_reset();
}

/* AllReduce, AllGather and Broadcast of 1 Mi floats between ecclMemAlloc buffers on a one-rank
 * communicator, out of place: the output is the input. */
static void test_collectives(void **state)
{
    (void)state;
    const size_t n = 1u << 20;
    ecclComm_t comm = NULL;
    int dev = 0;
    assert_int_equal(cudaGetDevice(&dev), cudaSuccess);
    assert_int_equal(ecclCommInitAll(&comm, 1, &dev), ecclSuccess);
    float *in = NULL, *out = NULL;
    assert_int_equal(ecclMemAlloc((void **)&in, n * sizeof(float)), ecclSuccess);
    assert_int_equal(ecclMemAlloc((void **)&out, n * sizeof(float)), ecclSuccess);
    float *h = malloc(n * sizeof(float));
    float *back = malloc(n * sizeof(float));
    assert_non_null(h);
    assert_non_null(back);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)(i % 1000) - 500.0f;
    assert_int_equal(cudaMemcpy(in, h, n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    for (int c = 0; c < 3; c++) {
        assert_int_equal(cudaMemset(out, 0, n * sizeof(float)), cudaSuccess);
        ecclResult_t r = c == 0   ? ecclAllReduce(in, out, n, ecclFloat, ecclSum, comm, s)
                         : c == 1 ? ecclAllGather(in, out, n, ecclFloat, comm, s)
                                  : ecclBroadcast(in, out, n, ecclFloat, 0, comm, s);
        assert_int_equal(r, ecclSuccess);
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        assert_int_equal(cudaMemcpy(back, out, n * sizeof(float), cudaMemcpyDeviceToHost),
                         cudaSuccess);
        assert_memory_equal(h, back, n * sizeof(float));
    }
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(ecclCommDestroy(comm), ecclSuccess);
    assert_int_equal(ecclMemFree(in), ecclSuccess);
    assert_int_equal(ecclMemFree(out), ecclSuccess);
    free(h);
    free(back);
}

static void test_refusals(void **state)
{
    (void)state;
    void *p = NULL;
    assert_int_equal(ecclMemAlloc(NULL, 16), ecclInvalidArgument);
    assert_int_equal(ecclMemAlloc(&p, 0), ecclInvalidArgument);
    assert_int_equal(ecclMemFree(NULL), ecclInvalidArgument);
    /* More than the GPU has: an error, nothing kept. */
    assert_int_not_equal(ecclMemAlloc(&p, (size_t)1 << 50), ecclSuccess);
    assert_null(p);
    assert_int_equal(ecclMemAlloc(&p, SIZE_MAX - 10), ecclInvalidArgument);
    assert_null(p);
    /* Not ecclMemAlloc's: host memory, cudaMalloc memory, a pointer inside an allocation. */
    int x = 0;
    assert_int_equal(ecclMemFree(&x), ecclInvalidArgument);
    void *c = NULL;
    assert_int_equal(cudaMalloc(&c, 4096), cudaSuccess);
    assert_int_equal(ecclMemFree(c), ecclInvalidArgument);
    assert_int_equal(cudaFree(c), cudaSuccess);
    assert_int_equal(ecclMemAlloc(&p, 4096), ecclSuccess);
    assert_int_equal(ecclMemFree((char *)p + 64), ecclInvalidArgument);
    /* Freed twice: the second is refused; the allocator still works. */
    assert_int_equal(ecclMemFree(p), ecclSuccess);
    assert_int_equal(ecclMemFree(p), ecclInvalidArgument);
    assert_int_equal(ecclMemAlloc(&p, 4096), ecclSuccess);
    check_buffer(p, 4096);
    assert_int_equal(ecclMemFree(p), ecclSuccess);
}

#define THREADS 4
#define ROUNDS  50

static void *churn(void *arg)
{
    int dev = *(int *)arg;
    if (cudaSetDevice(dev) != cudaSuccess)
        return (void *)1;
    void *mine[4] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        int k = r % 4;
        if (mine[k] && ecclMemFree(mine[k]) != ecclSuccess)
            return (void *)2;
        mine[k] = NULL;
        if (ecclMemAlloc(&mine[k], 4096 * (size_t)(k + 1)) != ecclSuccess || !mine[k])
            return (void *)3;
    }
    for (int k = 0; k < 4; k++)
        if (mine[k] && ecclMemFree(mine[k]) != ecclSuccess)
            return (void *)4;
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    int dev = 0;
    assert_int_equal(cudaGetDevice(&dev), cudaSuccess);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, &dev), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret = (void *)9;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
}
#endif

int main(void)
{
    if (kern_dev_count() <= 0) {
        void *p = (void *)1;
        ecclResult_t a = ecclMemAlloc(&p, 4096);
        int x = 0;
        ecclResult_t f = ecclMemFree(&x);
        if (a != ecclInvalidUsage || p != NULL || f != ecclInvalidArgument) {
            fprintf(stderr, "without a device: ecclMemAlloc gave %d (ptr %p), ecclMemFree %d\n",
                    (int)a, p, (int)f);
            return 1;
        }
        printf("no CUDA device: skipped (ecclMemAlloc and ecclMemFree refuse cleanly)\n");
        return 77;
    }
#ifdef ECCL_HAVE_CUDA
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_cumem), cmocka_unit_test(test_alloc_cudamalloc),
        cmocka_unit_test(test_collectives), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 1;
#endif
}

/*
 * gpu.c - helpers of the GPU tests (tests/support/gpu.h).
 */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "kernels/reduce_dev.h"
#include "tests/support/gpu.h"
#include "tests/support/mp.h"

int gpu_present(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(kern_dev_count() > 0 ? 0 : 3);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int gpu_upload(void *dst, const void *src, size_t bytes, void *stream)
{
#ifdef ECCL_HAVE_CUDA
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st);
    if (e != cudaSuccess)
        printf("upload of %zu bytes: %s\n", bytes, cudaGetErrorString(e));
    return e == cudaSuccess ? 0 : 1;
#else
    (void)dst, (void)src, (void)bytes, (void)stream;
    return 1;
#endif
}

ecclResult_t gpu_stream_wait(ecclComm_t comm, void *stream, int timeout_ms)
{
#ifdef ECCL_HAVE_CUDA
    double deadline = mp_now_ms() + timeout_ms;
    for (;;) {
        cudaError_t e = cudaStreamQuery((cudaStream_t)stream);
        ecclResult_t a = ecclSuccess;
        if (e == cudaSuccess) {
            /* Kernels that stopped on an abort finish too: the communicator says whether the
             * work was done (as with NCCL). */
            ecclCommGetAsyncError(comm, &a);
            return a;
        }
        if (e != cudaErrorNotReady) {
            printf("cudaStreamQuery: %s\n", cudaGetErrorString(e));
            return ecclUnhandledCudaError;
        }
        ecclCommGetAsyncError(comm, &a);
        if (a != ecclSuccess)
            return a;
        if (mp_now_ms() > deadline) {
            printf("stream not done after %d ms\n", timeout_ms);
            return ecclInternalError;
        }
        usleep(50);
    }
#else
    (void)comm, (void)stream, (void)timeout_ms;
    return ecclInvalidUsage;
#endif
}

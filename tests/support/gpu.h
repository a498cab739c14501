/*
 * gpu.h - what the GPU tests share: a device count that keeps CUDA out of the calling process,
 * and a stream wait that watches the communicator.
 */
#ifndef ECCL_TESTS_SUPPORT_GPU_H
#define ECCL_TESTS_SUPPORT_GPU_H

#include "eccl.h"

/* 1 when a CUDA device is present. Asked in a forked child: a process that has touched CUDA
 * cannot fork ranks that use it. */
int gpu_present(void);

/* Waits for `stream` (a cudaStream_t) to finish, polling, then returns the communicator's async
 * error (kernels stopped by an abort finish too); stops early when the communicator has failed,
 * and with ecclInternalError after timeout_ms. */
ecclResult_t gpu_stream_wait(ecclComm_t comm, void *stream, int timeout_ms);

#endif

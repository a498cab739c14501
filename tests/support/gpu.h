/*
 * gpu.h - what the GPU tests share: a device count that keeps CUDA out of the calling process,
 * and a stream wait that watches the communicator.
 */
#ifndef ECCL_TESTS_SUPPORT_GPU_H
#define ECCL_TESTS_SUPPORT_GPU_H

#include <stddef.h>

#include "eccl.h"

/* 1 when a CUDA device is present. Asked in a forked child: a process that has touched CUDA
 * cannot fork ranks that use it. */
int gpu_present(void);

/* Waits for `stream` (a cudaStream_t) to finish, polling, then returns the communicator's async
 * error (kernels stopped by an abort finish too); stops early when the communicator has failed,
 * and with ecclInternalError after timeout_ms. */
ecclResult_t gpu_stream_wait(ecclComm_t comm, void *stream, int timeout_ms);

/* Copies `bytes` from host memory to device memory on `stream` (a cudaStream_t) and waits for
 * the copy: ordered before whatever is queued on the stream next. (A plain cudaMemcpy from
 * pageable memory may return before its DMA is done, and a non-blocking stream does not wait
 * for it: a collective queued right after could read the old contents.) 0: done. */
int gpu_upload(void *dst, const void *src, size_t bytes, void *stream);

#endif

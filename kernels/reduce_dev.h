/*
 * reduce_dev.h - host-callable C entry points of the CUDA reductions (kernels/reduce_dev.cu): the
 * device count and a self-test that runs the device functors of kernels/reduce_dev.cuh and
 * compares them with the host implementation (kernels/reduce.h).
 *
 * Usable on any machine: without a GPU or driver the CUDA calls fail and these report it (a WARN
 * naming cudaGetErrorString, ecclUnhandledCudaError); in a build without CUDA (CUDA=0) a stub
 * (kernels/reduce_nocuda.c) counts no device and answers ecclInvalidUsage.
 */
#ifndef ECCL_KERNELS_REDUCE_DEV_H
#define ECCL_KERNELS_REDUCE_DEV_H

#include <stddef.h>

#include "eccl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices; 0 when there is none, no driver, or no CUDA in this build. */
int kern_dev_count(void);

/* On the current CUDA device, runs every step of reduction `kind` (enum eccl_redop_kind) on
 * `dtype` (ecclDataType_t) over n random elements (NaN, inf, subnormals included) - combine,
 * local (pre + combine), pre, post - and compares each result with the host's eccl_reduce_*,
 * bit for bit (any NaN matching any NaN). Writes a one-line summary, or the first mismatch, to
 * msg (msglen bytes, may be 0). Returns ecclSuccess when everything matched, ecclInternalError on
 * a mismatch, ecclInvalidArgument for an unknown dtype or kind, ecclUnhandledCudaError when a
 * CUDA call fails, ecclSystemError when host memory runs out, ecclInvalidUsage without CUDA.
 * Blocks until the device finishes, at most 60 s. */
ecclResult_t kern_dev_reduce_selftest(int dtype, int kind, size_t n, char *msg, size_t msglen);

#ifdef __cplusplus
}
#endif

#endif

/*
 * dev_exec.h - the GPU executor: runs a plan's work descriptors (kernels/work.h) in CUDA kernels,
 * one thread block per channel, over the same connectors (kernels/conn.h) as the host executor.
 *
 * Connector memory is host memory shared between processes (the proxy's segments); the executor
 * registers each connector with CUDA the first time a launch uses it (mapped, portable), so that
 * kernels read and write it directly. A kernel polls three things in every wait: the connector's
 * `closed` word, the executor's abort word (mapped host memory, mirrored from the communicator's
 * abort flag by the executor's watcher thread) and its status word (a block that failed stops
 * the others). The watcher reports a kernel's failure through `on_error` within a few ms, which
 * is what closes the connectors so that the peers stop too.
 *
 * Launches are asynchronous on the caller's stream: kern_dev_launch returns once the kernels are
 * queued. A plan becomes one launch per run of operations that share a kernel (the data type and
 * reduction of reducing collectives; one byte-moving kernel for the rest).
 */
#ifndef ECCL_KERNELS_DEV_EXEC_H
#define ECCL_KERNELS_DEV_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eccl.h"
#include "kernels/host_exec.h"
#include "kernels/work.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kern_dev;

/* Called from the watcher thread when a kernel failed: res is ecclRemoteError (a peer closed its
 * connector or made no progress for the timeout), ecclInvalidUsage (ranks disagree on sizes) or
 * ecclInternalError; peer is the rank concerned (-1: none). */
typedef void (*kern_dev_error_fn)(void *arg, ecclResult_t res, int peer, const char *what);

struct kern_dev_opts {
    int cuda_dev;
    int rank;
    int nchannels;
    uint64_t timeout_ns;           /* a kernel's no-progress watchdog (0: none) */
    const _Atomic uint32_t *abort; /* the communicator's abort flag, mirrored to the kernels */
    kern_dev_error_fn on_error;
    void *arg;
};

/* Sets up the executor for one communicator on its device: mapped control words, the watcher
 * thread. ecclInvalidUsage in a build without CUDA, ecclUnhandledCudaError when CUDA fails. */
ecclResult_t kern_dev_create(const struct kern_dev_opts *opts, struct kern_dev **out);

/* Queues the kernels of one plan on `stream` (a cudaStream_t; NULL: the legacy default stream).
 * chans[c] describes channel c; works[c] holds nwork[c] descriptors (copied: the caller may
 * free them on return). An error (a registration or launch that CUDA refuses, a kernel that has
 * already failed) comes back at once with a WARN; nothing is queued then. */
ecclResult_t kern_dev_launch(struct kern_dev *d, struct kern_chan *const *chans,
                             struct eccl_work *const *works, const int *nwork, void *stream);

/* A one-rank collective that moves its input unchanged: `bytes` from src to dst queued on
 * `stream` as one copy: a small kernel up to KERN_DEV_COPY_KERNEL_MAX bytes (kern_dev_cu_copy,
 * kernels/dev_copy.cu), a device-to-device cudaMemcpyAsync above and under capture (a memcpy
 * node).
 * *done = false, and nothing queued, unless both buffers are memory of this executor's device:
 * the caller then takes the plan's path. An error when an earlier kernel failed or CUDA refuses
 * the copy. */
ecclResult_t kern_dev_copy(struct kern_dev *d, void *dst, const void *src, size_t bytes,
                           void *stream, bool *done);

#define KERN_DEV_COPY_KERNEL_MAX (1u << 20)

/* Queues the copy kernel (kernels/dev_copy.cu); a cudaError_t as int (0: queued). */
int kern_dev_cu_copy(void *dst, const void *src, size_t bytes, void *stream);

/* Where a plan's buffers live: *host = true when every one is host memory (not device memory
 * or managed memory), false when every one is on a device; a plan mixing both is refused
 * (ecclInvalidUsage, with a WARN). A CUDA communicator runs a host plan on the host executor,
 * after its kernels finished (kern_dev_drain). Without CUDA every buffer is host memory. */
ecclResult_t kern_dev_plan_on_host(struct eccl_work *const *works, const int *nwork, int nchannels,
                                   bool *host);

/* Whether p is host memory (not device or managed memory); always true without CUDA. */
bool kern_dev_buffer_on_host(const void *p);

struct kern_dev_mem;

/* Connector `c` has its slots also in device memory `mem` (kernels/dev_mem.h: the receiver's
 * allocation, or the sender's mapping of it): kernels of this executor write (send side) or
 * read (receive side, for steps flagged ECCL_CONN_SIZE_DEVDATA) the slots there. The executor
 * takes `mem` in every case and frees it at destroy. */
ecclResult_t kern_dev_conn_attach(struct kern_dev *d, const struct eccl_conn_ctrl *c,
                                  struct kern_dev_mem *mem);

/* Lets this thread make CUDA calls that are not stream work (allocating, mapping, exporting
 * memory) while a graph capture is under way in it or in another thread: a capture in global
 * mode would otherwise be invalidated by them. Returns the thread's mode, for
 * kern_dev_capture_restore. */
int kern_dev_capture_relax(void);
void kern_dev_capture_restore(int mode);

/* Whether no kernel queued by kern_dev_launch is still running (kernels replayed from CUDA
 * graphs are not counted). */
bool kern_dev_idle(struct kern_dev *d);

/* Whether connector `c` (registered by an earlier launch or kern_dev_conn_attach) has its slots
 * in the peer's device memory: the peer is a GPU rank of this host that shares memory with this
 * one, so it may map this rank's registered buffers too. */
bool kern_dev_conn_devmem(struct kern_dev *d, const struct eccl_conn_ctrl *c);

/* Peers' registered buffers mapped here (core/reg.c): the executor keeps each mapping and its
 * entry in the table its kernels read (kernels/dev_work.h, struct kern_dev_zc). kern_dev_zc_put
 * takes `mem` in every case and gives its table slot in *slot, -1 when the table is full (mem
 * freed). kern_dev_zc_drop unmaps peer's registration `key` (false: not mapped); the caller makes
 * sure no kernel still reads it (kern_dev_idle). */
ecclResult_t kern_dev_zc_put(struct kern_dev *d, int peer, uint32_t key, struct kern_dev_mem *mem,
                             int *slot);
bool kern_dev_zc_drop(struct kern_dev *d, int peer, uint32_t key);
/* Mappings held. */
int kern_dev_zc_count(const struct kern_dev *d);

/* The protocols' lines in connectors' device memory (kernels/dev_coll.cuh): after the slots,
 * `ll_span` bytes of LL lines per slot (every ring and tree connector), then, in ring connectors,
 * `ll128_bytes` of LL128 lines per slot. `ll_bytes` is ll_span where the communicator agreed on
 * LL, 0 otherwise; `ll128_bytes` is 0 where it did not agree on LL128. */
void kern_dev_set_ll(struct kern_dev *d, uint32_t ll_bytes, uint32_t ll_span, uint32_t ll128_bytes);

/* The first failure a kernel reported (ecclSuccess: none). */
ecclResult_t kern_dev_status(struct kern_dev *d);

/* kern_dev_status, and a failed kernel not reported yet is reported now (its WARN and the
 * executor's error callback, as the watcher would at its next look, up to a millisecond later):
 * for a caller that found the stream done and asks whether the work was. */
ecclResult_t kern_dev_poll(struct kern_dev *d);

/* Waits until every kernel queued so far has finished, at most timeout_ms (then ecclRemoteError
 * with a WARN: a kernel that ignores the abort flag is a bug). */
ecclResult_t kern_dev_drain(struct kern_dev *d, int64_t timeout_ms);

/* Drains (bounded), unregisters the connectors and frees everything. Call before the connector
 * memory is unmapped. NULL is fine. */
void kern_dev_destroy(struct kern_dev *d);

/* How many kernels one kern_dev_launch of this plan queues: runs of consecutive operations with
 * the same kernel. Exposed for the unit tests of the launch split; works[c] as above. */
int kern_dev_split(struct eccl_work *const *works, const int *nwork, int nchannels,
                   uint32_t *first_op, uint32_t *end_op, int *kernel, int max);

/* The kernel index a work descriptor runs in: 1 + dtype * ECCL_RED_COUNT + redop for reducing
 * collectives, 0 (the byte-moving kernel) for the others; KERN_DEV_NKERNELS more for collectives
 * in LL128, which run in kernels of their own (ring algorithms only: a tree in LL128 is -1, a
 * bad descriptor, as is point-to-point work in LL128). */
#define KERN_DEV_NKERNELS (1 + ecclNumTypes * ECCL_RED_COUNT)
int kern_dev_kernel_of(const struct eccl_work *w);

#ifdef __cplusplus
}
#endif

#endif

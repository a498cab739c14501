/*
 * dev_mem.h - device memory that another process (or another rank of this process) can map:
 * the data slots of GPU-to-GPU connectors.
 *
 * Two ways to share it. cuMem (the default): the memory is a cuMemCreate allocation exportable as
 * a POSIX file descriptor, which travels over a unix socket (SCM_RIGHTS) and is imported and
 * mapped by the peer. Legacy CUDA IPC (ECCL_CUMEM_ENABLE=0, or where the device cannot export
 * file descriptors): cudaMalloc memory and its 64-byte cudaIpcMemHandle_t, which travels inside
 * the connector's descriptor; it cannot be opened by the process that made it.
 *
 * An imported mapping is the importer's: freeing it unmaps this process's view; the memory lives
 * until every process let go of it. In a build without CUDA every entry point refuses.
 */
#ifndef ECCL_KERNELS_DEV_MEM_H
#define ECCL_KERNELS_DEV_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

enum kern_dev_mem_mode {
    KERN_DEV_MEM_NONE = 0,
    KERN_DEV_MEM_CUMEM = 1, /* cuMem allocation, shared as a POSIX file descriptor */
    KERN_DEV_MEM_IPC = 2,   /* cudaMalloc memory, shared as a cudaIpcMemHandle_t */
};

#define KERN_DEV_IPC_BYTES 64

struct kern_dev_mem;

/* Which mode exportable memory on `cuda_dev` gets: cuMem when `cumem` is wanted and the device
 * exports POSIX file descriptors, else legacy IPC. */
enum kern_dev_mem_mode kern_dev_mem_pick(int cuda_dev, bool cumem);

/* Allocates at least `bytes` of exportable device memory on `cuda_dev` (rounded up to the
 * allocation granularity; kern_dev_mem_size tells). The memory is zeroed. */
ecclResult_t kern_dev_mem_create(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes,
                                 struct kern_dev_mem **out);

/* The same for a user's buffer (ecclMemAlloc): not zeroed, and without waiting for the device. */
ecclResult_t kern_dev_mem_create_user(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes,
                                      struct kern_dev_mem **out);
/* Frees a user's buffer as cudaFree does: after the work queued on its device ended. The memory
 * is freed even when that wait fails (its error is returned). */
ecclResult_t kern_dev_mem_free_user(struct kern_dev_mem *m);

/* What a peer needs to map `m`: a new file descriptor (cuMem; the caller owns it) or the IPC
 * handle (legacy; *fd = -1). */
ecclResult_t kern_dev_mem_export(const struct kern_dev_mem *m, int *fd,
                                 uint8_t ipc[KERN_DEV_IPC_BYTES]);

/* Maps a peer's memory of `bytes` bytes on `cuda_dev`: from `fd` (cuMem; taken, closed in every
 * case) or from `ipc` (legacy). Fails cleanly on a descriptor or handle that is not what it
 * claims to be. */
ecclResult_t kern_dev_mem_import(int cuda_dev, enum kern_dev_mem_mode mode, int fd,
                                 const uint8_t ipc[KERN_DEV_IPC_BYTES], size_t bytes,
                                 struct kern_dev_mem **out);

/* A view of the user's cudaMalloc allocation that holds [p, p + bytes), exportable as a legacy
 * IPC handle (registered buffers, core/reg.c); freeing the view leaves the memory alone.
 * *buffer_id: the allocation's process-wide unique id (CU_POINTER_ATTRIBUTE_BUFFER_ID).
 * ecclInvalidArgument when no one device allocation holds the range, ecclInvalidUsage when it
 * cannot be shared that way (cuMem memory, for one); no WARN. */
ecclResult_t kern_dev_mem_wrap(int cuda_dev, const void *p, size_t bytes, struct kern_dev_mem **out,
                               uint64_t *buffer_id);
/* The unique id of the allocation that holds p, 0 when there is none: the same address with
 * another id is memory freed and allocated again. */
uint64_t kern_dev_mem_buffer_id(const void *p);

void *kern_dev_mem_ptr(const struct kern_dev_mem *m);
/* The device (this process's ordinal) whose memory m is, -1 when CUDA cannot say. */
int kern_dev_mem_device(const struct kern_dev_mem *m);
size_t kern_dev_mem_size(const struct kern_dev_mem *m);
enum kern_dev_mem_mode kern_dev_mem_mode_of(const struct kern_dev_mem *m);

/* Unmaps (and for memory this process made, releases) `m`. The caller makes sure no kernel still
 * uses it. NULL is fine. */
void kern_dev_mem_free(struct kern_dev_mem *m);

#endif

/*
 * host_cma.h - single-copy steps between ranks of one host: instead of copying data into a
 * connector slot for the peer to copy out again, a rank posts a descriptor of its own buffer
 * (process id, address, length) and the peer reads the bytes straight into its buffer with
 * process_vm_readv (cross-memory attach), or memcpy when both ranks are threads of one process.
 *
 * The descriptor also names a token that only this process holds: the reader reads it in the
 * same system call and checks it, so a process id that means another process (PID namespaces)
 * gives an error, never foreign data taken for the peer's. ECCL_HOST_SINGLE_COPY_BYTES sets the
 * smallest channel piece moved this way (0, the default: never); every rank must use the same
 * value.
 */
#ifndef ECCL_KERNELS_HOST_CMA_H
#define ECCL_KERNELS_HOST_CMA_H

#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

#define KERN_CMA_MAGIC 0x31616d636c636365ULL /* "ecclcma1" */

/* What a slot holds in a single-copy step. */
struct kern_cma_desc {
    uint64_t magic;
    int64_t pid;
    uint64_t token_addr; /* where the token lives in the sender's address space */
    uint64_t token;
    uint64_t addr; /* the data */
    uint64_t len;
};

/* The smallest channel piece, in bytes, moved by single-copy steps; 0: none. */
size_t kern_cma_min_bytes(void);
/* Bytes a single-copy step moves at most (the pipelining unit). */
#define KERN_CMA_CHUNK_BYTES (512 * 1024)

/* Describes `len` bytes at `addr` of this process. */
void kern_cma_describe(struct kern_cma_desc *d, const void *addr, size_t len);
/* Copies the bytes a peer's descriptor names into dst (`len` expected), after checking the
 * descriptor. ecclInvalidUsage for a descriptor that is not one or of another length,
 * ecclSystemError when the kernel refuses the read or the token is not the peer's. With
 * read_errno (may be NULL), a read that failed because the process is gone (ESRCH) or the range
 * is no longer mapped in it (EFAULT: it freed its buffer, after aborting say) stores that errno
 * there and logs nothing: the caller knows whether the peer ended the operation; any other
 * outcome stores 0. */
ecclResult_t kern_cma_read(const struct kern_cma_desc *d, void *dst, size_t len, int peer,
                           int *read_errno);

#endif

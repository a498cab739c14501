/*
 * net_ib.h - what the InfiniBand backend offers besides struct eccl_net_ops (proxy/net.h):
 * GPUDirect RDMA registration of dma-buf file descriptors, the GPUDirect mode of a device, and
 * hooks for tests (another library name, or a verbs table filled by hand).
 *
 * GPUDirect: ECCL_NET_PTR_CUDA is advertised in a device's ptr_support only when the NIC can
 * register GPU memory: the nvidia-peermem module is loaded (then reg_mr with type
 * ECCL_NET_PTR_CUDA registers a CUDA device pointer as is), or the kernel and provider do
 * dma-buf (then the caller exports the range with cuMemGetHandleForAddressRange and registers
 * the fd with proxy_net_ib_reg_mr_dmabuf). docs/internals/net-ib.md says what is left to do
 * for GPU buffers (the flush before a kernel reads received data).
 */
#ifndef ECCL_PROXY_NET_IB_H
#define ECCL_PROXY_NET_IB_H

#include <stddef.h>
#include <stdint.h>

#include "eccl.h"
#include "proxy/ib_verbs.h"

enum proxy_net_ib_gdr {
    PROXY_NET_IB_GDR_NONE = 0,
    PROXY_NET_IB_GDR_PEERMEM = 1, /* nvidia-peermem: ibv_reg_mr takes CUDA pointers */
    PROXY_NET_IB_GDR_DMABUF = 2,  /* ibv_reg_dmabuf_mr works on this device */
};

/* The GPUDirect mode of device dev (after init). */
ecclResult_t proxy_net_ib_gdr_mode(int dev, int *mode);

/* Registers `size` bytes at `offset` of the dma-buf `fd`, mapped at `data` in this process
 * (the I/O virtual address the peer's RDMA writes use). The mhandle is released with the ops'
 * dereg_mr. ecclInvalidUsage where dma-buf registration is not available. */
ecclResult_t proxy_net_ib_reg_mr_dmabuf(void *comm, void *data, size_t size, uint64_t offset,
                                        int fd, void **mhandle);

/* Tests: the library init dlopens (NULL: PROXY_IB_VERBS_LIB), and a verbs table to use
 * instead of any library (NULL: use the library). Take effect at the next init. */
void proxy_net_ib_set_library(const char *name);
void proxy_net_ib_set_verbs(const struct proxy_ib_verbs *table);

#endif

/*
 * net.h - the network backends that the proxy drives for ranks on different hosts.
 *
 * One interface, two backends: TCP sockets (proxy/net_socket.c, always available) and
 * InfiniBand/RoCE verbs (proxy/net_ib.c, libibverbs loaded with dlopen). The shape follows
 * NCCL's net plugin API (listen/connect/accept, registered memory, asynchronous isend/irecv
 * tested for completion), so that the proxy's progress loop drives either the same way.
 *
 * Threads: a connection (send or receive comm) is used by one thread at a time (the proxy
 * thread); listen/connect/accept may run on the init thread. Calls never block: connect and
 * accept return ecclSuccess with the output NULL until the connection is established (call
 * again), isend/irecv return ecclSuccess with *request NULL when the backend cannot take more
 * requests now (call again), test reports done or not.
 *
 * Errors: ecclSystemError for local failures, ecclRemoteError when the peer closed or reset the
 * connection or sent bytes that break the protocol (logged with the cause); a connection that
 * returned an error is only good for close.
 */
#ifndef ECCL_PROXY_NET_H
#define ECCL_PROXY_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

/* Opaque connection handle produced by listen and carried to the connecting peer (through the
 * bootstrap). */
#define ECCL_NET_HANDLE_BYTES 128
/* Requests a connection can have in flight in each direction. */
#define ECCL_NET_MAX_REQUESTS 8

#define ECCL_NET_PTR_HOST 0x1
#define ECCL_NET_PTR_CUDA 0x2 /* GPUDirect: registered only where the backend supports it */

struct eccl_net_props {
    char name[64];      /* interface or HCA name, e.g. "eth0" or "mlx5_0:1" */
    char pci_path[128]; /* sysfs PCI path where known, else "" */
    uint64_t guid;
    int ptr_support; /* ECCL_NET_PTR_* */
    int speed_mbps;
    int port;
    int max_comms;
    int max_recvs; /* grouped receives (1) */
    size_t max_msg_bytes;
};

struct eccl_net_ops {
    const char *name; /* "socket" or "ib" */
    /* Finds devices. ecclInternalError with an INFO line (not a WARN) when the backend has no
     * device here (no RDMA device, libibverbs missing); the caller then tries the next one. */
    ecclResult_t (*init)(void);
    ecclResult_t (*devices)(int *ndev);
    ecclResult_t (*get_properties)(int dev, struct eccl_net_props *props);
    /* handle: ECCL_NET_HANDLE_BYTES bytes written by listen, given to connect on the peer. */
    ecclResult_t (*listen)(int dev, void *handle, void **listen_comm);
    ecclResult_t (*connect)(int dev, const void *handle, void **send_comm);
    ecclResult_t (*accept)(void *listen_comm, void **recv_comm);
    /* type: ECCL_NET_PTR_*. */
    ecclResult_t (*reg_mr)(void *comm, void *data, size_t size, int type, void **mhandle);
    ecclResult_t (*dereg_mr)(void *comm, void *mhandle);
    /* tag: sends and receives match in order per connection and per tag. */
    ecclResult_t (*isend)(void *send_comm, void *data, size_t size, int tag, void *mhandle,
                          void **request);
    ecclResult_t (*irecv)(void *recv_comm, void *data, size_t size, int tag, void *mhandle,
                          void **request);
    /* *done = 1 when complete (the request is then freed); *size gets the bytes moved (for a
     * receive, the sender's size, which may be less than the receive buffer). */
    ecclResult_t (*test)(void *request, int *done, size_t *size);
    ecclResult_t (*close_send)(void *send_comm);
    ecclResult_t (*close_recv)(void *recv_comm);
    ecclResult_t (*close_listen)(void *listen_comm);
    /* Optional (NULL: never): whether a receive comm failed only because its peer closed the
     * connection at a message boundary (all it sent was delivered; it left or its process
     * ended), logged as INFO rather than WARN. */
    bool (*peer_closed)(void *recv_comm);
    /* Releases what init took (threads, the dlopen handle). */
    void (*fini)(void);
};

extern const struct eccl_net_ops eccl_net_socket;
extern const struct eccl_net_ops eccl_net_ib;

/* The backend ECCL_NET names ("socket", "ib", or unset: ib when a device exists, else socket),
 * initialised; logs the choice at INFO NET. */
ecclResult_t proxy_net_select(const struct eccl_net_ops **out);

#endif

/*
 * net_socket.h - the wire format of the TCP socket backend (net_socket.c), without I/O: the
 * listen handle, the hello every socket opens with, and the header of each message on the
 * control socket (docs/internals/net-socket.md). The backend itself uses the same code; tests
 * and the fuzz target (tests/fuzz/fuzz_proxy_msgs.c) call these. Decoders check what the backend
 * checks and fail (with a WARN) where it would refuse the bytes.
 */
#ifndef ECCL_PROXY_NET_SOCKET_H
#define ECCL_PROXY_NET_SOCKET_H

#include <stdint.h>

#include "common/socket.h"
#include "eccl.h"

#define PROXY_SOCK_HELLO_BYTES 32
#define PROXY_SOCK_MSG_BYTES   24

struct proxy_sock_hello {
    uint16_t nsocks; /* data sockets of the connection, 1..64 */
    uint16_t index;  /* 0..nsocks-1: a data socket, nsocks: the control socket */
    uint64_t conn_id;
};

/* p: ECCL_NET_HANDLE_BYTES. ecclInvalidArgument when p is not a socket handle. */
void proxy_sock_handle_encode(uint64_t magic, const union eccl_sockaddr *addr, void *p);
ecclResult_t proxy_sock_handle_decode(const void *p, uint64_t *magic, union eccl_sockaddr *addr);
/* p: PROXY_SOCK_HELLO_BYTES; `magic` is the listener's. ecclRemoteError when refused. */
void proxy_sock_hello_encode(uint64_t magic, const struct proxy_sock_hello *h, void *p);
ecclResult_t proxy_sock_hello_decode(const void *p, uint64_t magic, struct proxy_sock_hello *out);
/* p: PROXY_SOCK_MSG_BYTES; `seq` is the message number the receiver expects next. */
void proxy_sock_msg_encode(uint32_t seq, uint64_t size, int tag, void *p);
ecclResult_t proxy_sock_msg_decode(const void *p, uint32_t seq, uint64_t *size, int *tag);

#endif

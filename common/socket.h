/*
 * socket.h - TCP and unix-domain sockets with deadlines and abort flags.
 *
 * Every blocking call takes an absolute deadline (eccl_deadline_ms) and an optional abort flag
 * (NULL: none), polls in slices so that an abort is seen within a few milliseconds, and returns
 * ecclRemoteError when the peer closes or resets, ecclSystemError on local failures and
 * ecclInternalError with "timed out" text at the deadline. Failures are logged with strerror.
 */
#ifndef ECCL_COMMON_SOCKET_H
#define ECCL_COMMON_SOCKET_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "eccl.h"

union eccl_sockaddr {
    struct sockaddr sa;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
};

/* "ip<port>" as NCCL prints it. buf needs 64 bytes. */
const char *eccl_sockaddr_str(const union eccl_sockaddr *addr, char *buf, size_t len);
/* Parses "host:port", "[v6]:port" or "ip" (port 0). */
ecclResult_t eccl_sockaddr_parse(const char *text, union eccl_sockaddr *out);
socklen_t eccl_sockaddr_len(const union eccl_sockaddr *addr);
bool eccl_sockaddr_valid(const union eccl_sockaddr *addr);

/*
 * Picks the address to listen on for bootstrap and the network: ECCL_SOCKET_IFNAME (NCCL's
 * grammar: comma-separated prefixes, ^ excludes, = exact) or, if unset, the first interface that
 * is up and not loopback or docker, else loopback. `ifname` (may be NULL) gets the name.
 */
ecclResult_t eccl_socket_pick_addr(union eccl_sockaddr *out, char *ifname, size_t ifname_len);

/* Listening TCP socket on addr (port 0: any); *addr gets the bound port. */
ecclResult_t eccl_socket_listen(union eccl_sockaddr *addr, int *fd_out);
ecclResult_t eccl_socket_accept(int listen_fd, int *fd_out, uint64_t deadline_ns,
                                const _Atomic uint32_t *abort);
/* Connects, retrying refused/unreachable connections until the deadline. */
ecclResult_t eccl_socket_connect(const union eccl_sockaddr *addr, int *fd_out, uint64_t deadline_ns,
                                 const _Atomic uint32_t *abort);
ecclResult_t eccl_socket_send_all(int fd, const void *buf, size_t len, uint64_t deadline_ns,
                                  const _Atomic uint32_t *abort);
/* The same, for a server whose clients may leave at any time: a peer that closed the connection
 * (EPIPE, ECONNRESET) is still ecclRemoteError, logged as INFO rather than WARN. */
ecclResult_t eccl_socket_send_all_to_client(int fd, const void *buf, size_t len,
                                            uint64_t deadline_ns, const _Atomic uint32_t *abort);
ecclResult_t eccl_socket_recv_all(int fd, void *buf, size_t len, uint64_t deadline_ns,
                                  const _Atomic uint32_t *abort);
void eccl_socket_close(int *fd);

/* Unix-domain datagram sockets in the abstract namespace, used to pass file descriptors. */
ecclResult_t eccl_uds_open(const char *name, int *fd_out);
/* Sends `len` bytes (<= 256) and, if fd >= 0, the descriptor (SCM_RIGHTS) to `name`. */
ecclResult_t eccl_uds_send(int sock, const char *name, const void *buf, size_t len, int fd,
                           uint64_t deadline_ns, const _Atomic uint32_t *abort);
/* Receives one datagram; *len_io in: capacity, out: length; *fd_out gets a passed descriptor or
 * -1. A datagram that carries more than one descriptor has the extra ones closed. A deadline of 0
 * does not wait: ecclInProgress when nothing is there. */
ecclResult_t eccl_uds_recv(int sock, void *buf, size_t *len_io, int *fd_out, uint64_t deadline_ns,
                           const _Atomic uint32_t *abort);

#endif

/*
 * socket.c - TCP and unix-domain sockets with deadlines and abort flags.
 *
 * All sockets are non-blocking and close-on-exec; waits go through poll() in slices of at most
 * ABORT_SLICE_MS so that an abort flag set by another thread is seen promptly.
 */
#include "common/socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"

#define ABORT_SLICE_MS 10

ECCL_PARAM_STR(socket_ifname, "ECCL_SOCKET_IFNAME", NULL)
ECCL_PARAM_INT(socket_family, "ECCL_SOCKET_FAMILY", 0)

socklen_t eccl_sockaddr_len(const union eccl_sockaddr *addr)
{
    return addr->sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in);
}

bool eccl_sockaddr_valid(const union eccl_sockaddr *addr)
{
    return addr->sa.sa_family == AF_INET || addr->sa.sa_family == AF_INET6;
}

const char *eccl_sockaddr_str(const union eccl_sockaddr *addr, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (addr->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &addr->sin.sin_addr, host, sizeof(host));
        port = ntohs(addr->sin.sin_port);
    } else if (addr->sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &addr->sin6.sin6_addr, host, sizeof(host));
        port = ntohs(addr->sin6.sin6_port);
    }
    snprintf(buf, len, "%s<%d>", host, port);
    return buf;
}

ecclResult_t eccl_sockaddr_parse(const char *text, union eccl_sockaddr *out)
{
    char host[256];
    const char *port_str = NULL;
    union eccl_sockaddr a;
    memset(&a, 0, sizeof(a));
    if (!text || strlen(text) >= sizeof(host)) {
        WARN("bad socket address '%s'", text ? text : "(null)");
        return ecclInvalidArgument;
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close) {
            WARN("bad socket address '%s': missing ']'", text);
            return ecclInvalidArgument;
        }
        size_t n = (size_t)(close - text - 1);
        memcpy(host, text + 1, n);
        host[n] = '\0';
        if (close[1] == ':')
            port_str = close + 2;
    } else {
        snprintf(host, sizeof(host), "%s", text);
        char *colon = strrchr(host, ':');
        if (colon && strchr(host, ':') == colon) {
            *colon = '\0';
            port_str = colon + 1;
        }
    }
    long port = 0;
    if (port_str) {
        char *end = NULL;
        port = strtol(port_str, &end, 10);
        if (end == port_str || *end != '\0' || port < 0 || port > 65535) {
            WARN("bad port in socket address '%s'", text);
            return ecclInvalidArgument;
        }
    }
    if (inet_pton(AF_INET, host, &a.sin.sin_addr) == 1) {
        a.sin.sin_family = AF_INET;
        a.sin.sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a.sin6.sin6_addr) == 1) {
        a.sin6.sin6_family = AF_INET6;
        a.sin6.sin6_port = htons((uint16_t)port);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0 || !res) {
            WARN("cannot resolve '%s': %s", host, gai_strerror(rc));
            return ecclInvalidArgument;
        }
        memcpy(&a, res->ai_addr, res->ai_addrlen < sizeof(a) ? res->ai_addrlen : sizeof(a));
        freeaddrinfo(res);
        if (a.sa.sa_family == AF_INET)
            a.sin.sin_port = htons((uint16_t)port);
        else if (a.sa.sa_family == AF_INET6)
            a.sin6.sin6_port = htons((uint16_t)port);
        else {
            WARN("'%s' resolves to an unsupported address family", host);
            return ecclInvalidArgument;
        }
    }
    *out = a;
    return ecclSuccess;
}

/* NCCL's interface grammar: "^" excludes, "=" matches exactly, otherwise prefixes. */
static bool if_match(const char *spec, const char *name)
{
    bool exclude = false, exact = false;
    if (*spec == '^') {
        exclude = true;
        spec++;
    }
    if (*spec == '=') {
        exact = true;
        spec++;
    }
    bool found = false;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':'); /* optional port suffix, ignored here */
        if (colon)
            *colon = '\0';
        if (exact ? strcmp(tok, name) == 0 : strncmp(tok, name, strlen(tok)) == 0) {
            found = true;
            break;
        }
    }
    return exclude ? !found : found;
}

ecclResult_t eccl_socket_pick_addr(union eccl_sockaddr *out, char *ifname, size_t ifname_len)
{
    const char *spec = eccl_param_socket_ifname();
    int family = (int)eccl_param_socket_family(); /* 4 or 6 restricts, 0 either */
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        WARN("getifaddrs failed: %s", strerror(errno));
        return ecclSystemError;
    }
    const struct ifaddrs *best = NULL, *lo = NULL;
    for (int pass = 0; pass < 2 && !best; pass++) {
        for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr || !(i->ifa_flags & IFF_UP))
                continue;
            int af = i->ifa_addr->sa_family;
            if (af != AF_INET && af != AF_INET6)
                continue;
            if ((family == 4 && af != AF_INET) || (family == 6 && af != AF_INET6))
                continue;
            /* IPv4 first (pass 0), IPv6 then; link-local v6 needs scope ids: skip it. */
            if ((pass == 0) != (af == AF_INET))
                continue;
            if (af == AF_INET6 &&
                IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr))
                continue;
            if (spec) {
                if (if_match(spec, i->ifa_name)) {
                    best = i;
                    break;
                }
                continue;
            }
            if (i->ifa_flags & IFF_LOOPBACK) {
                if (!lo)
                    lo = i;
                continue;
            }
            if (strncmp(i->ifa_name, "docker", 6) == 0)
                continue;
            best = i;
            break;
        }
    }
    if (!best && !spec)
        best = lo;
    if (!best) {
        freeifaddrs(ifs);
        WARN("no socket interface found%s%s", spec ? " matching ECCL_SOCKET_IFNAME=" : "",
             spec ? spec : "");
        return ecclInvalidUsage;
    }
    union eccl_sockaddr a;
    memset(&a, 0, sizeof(a));
    memcpy(&a, best->ifa_addr,
           best->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6));
    if (ifname)
        snprintf(ifname, ifname_len, "%s", best->ifa_name);
    freeifaddrs(ifs);
    *out = a;
    return ecclSuccess;
}

void eccl_socket_close(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

ecclResult_t eccl_socket_listen(union eccl_sockaddr *addr, int *fd_out)
{
    ecclResult_t res = ecclSuccess;
    int fd =
        ECCL_FAULT_SYS("sys_socket", EMFILE,
                       socket(addr->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd < 0) {
        WARN("socket failed: %s", strerror(errno));
        return ecclSystemError;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    char buf[80];
    if (bind(fd, &addr->sa, eccl_sockaddr_len(addr)) != 0) {
        WARN("bind to %s failed: %s", eccl_sockaddr_str(addr, buf, sizeof(buf)), strerror(errno));
        res = ecclSystemError;
        goto err_close;
    }
    ECCL_SYS_GOTO(listen(fd, 1024), res, err_close);
    socklen_t len = sizeof(*addr);
    ECCL_SYS_GOTO(getsockname(fd, &addr->sa, &len), res, err_close);
    *fd_out = fd;
    return ecclSuccess;
err_close:
    close(fd);
    return res;
}

/* Waits for `events` on fd until the deadline, in slices that check the abort flag. */
static ecclResult_t wait_fd(int fd, short events, uint64_t deadline_ns,
                            const _Atomic uint32_t *abort, const char *what)
{
    for (;;) {
        if (abort && atomic_load_explicit(abort, memory_order_acquire))
            return ecclRemoteError;
        int left = eccl_deadline_left_ms(deadline_ns);
        if (left == 0) {
            WARN("timed out waiting to %s", what);
            return ecclInternalError;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, abort && left > ABORT_SLICE_MS ? ABORT_SLICE_MS : left);
        if (rc > 0)
            return ecclSuccess;
        if (rc < 0 && errno != EINTR) {
            WARN("poll failed: %s", strerror(errno));
            return ecclSystemError;
        }
    }
}

ecclResult_t eccl_socket_accept(int listen_fd, int *fd_out, uint64_t deadline_ns,
                                const _Atomic uint32_t *abort)
{
    for (;;) {
        int fd = ECCL_FAULT_SYS("sys_accept", EMFILE,
                                accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (fd >= 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            *fd_out = fd;
            return ecclSuccess;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
            WARN("accept failed: %s", strerror(errno));
            return ecclSystemError;
        }
        ECCL_TRY(wait_fd(listen_fd, POLLIN, deadline_ns, abort, "accept a connection"));
    }
}

ecclResult_t eccl_socket_connect(const union eccl_sockaddr *addr, int *fd_out, uint64_t deadline_ns,
                                 const _Atomic uint32_t *abort)
{
    char buf[80];
    int backoff_ms = 1;
    for (;;) {
        int fd = ECCL_FAULT_SYS(
            "sys_socket", EMFILE,
            socket(addr->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (fd < 0) {
            WARN("socket failed: %s", strerror(errno));
            return ecclSystemError;
        }
        int rc =
            ECCL_FAULT_SYS("sys_connect", EACCES, connect(fd, &addr->sa, eccl_sockaddr_len(addr)));
        int err = rc == 0 ? 0 : errno;
        if (err == EINPROGRESS) {
            ecclResult_t r = wait_fd(fd, POLLOUT, deadline_ns, abort, "connect");
            if (r != ecclSuccess) {
                close(fd);
                if (r == ecclInternalError)
                    WARN("timed out connecting to %s", eccl_sockaddr_str(addr, buf, sizeof(buf)));
                return r;
            }
            socklen_t len = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
        if (err == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            *fd_out = fd;
            return ecclSuccess;
        }
        close(fd);
        if (err != ECONNREFUSED && err != ETIMEDOUT && err != ENETUNREACH && err != EHOSTUNREACH &&
            err != ECONNRESET && err != EAGAIN) {
            WARN("connect to %s failed: %s", eccl_sockaddr_str(addr, buf, sizeof(buf)),
                 strerror(err));
            return ecclSystemError;
        }
        if (abort && atomic_load_explicit(abort, memory_order_acquire))
            return ecclRemoteError;
        if (eccl_deadline_passed(deadline_ns)) {
            WARN("timed out connecting to %s (last error: %s)",
                 eccl_sockaddr_str(addr, buf, sizeof(buf)), strerror(err));
            return ecclInternalError;
        }
        eccl_sleep_us((uint64_t)backoff_ms * 1000);
        if (backoff_ms < 100)
            backoff_ms *= 2;
    }
}

static ecclResult_t send_all(int fd, const void *buf, size_t len, uint64_t deadline_ns,
                             const _Atomic uint32_t *abort, bool quiet_close)
{
    const char *p = buf;
    if (ECCL_FAULT("socket_send")) {
        WARN("send on fd %d failed (fault injection)", fd);
        return ecclSystemError;
    }
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            ECCL_TRY(wait_fd(fd, POLLOUT, deadline_ns, abort, "send"));
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            if (quiet_close)
                INFO(ECCL_LOG_NET, "peer closed the connection (send: %s)", strerror(errno));
            else
                WARN("peer closed the connection (send: %s)", strerror(errno));
            return ecclRemoteError;
        }
        WARN("send failed: %s", strerror(errno));
        return ecclSystemError;
    }
    return ecclSuccess;
}

ecclResult_t eccl_socket_send_all(int fd, const void *buf, size_t len, uint64_t deadline_ns,
                                  const _Atomic uint32_t *abort)
{
    return send_all(fd, buf, len, deadline_ns, abort, false);
}

ecclResult_t eccl_socket_send_all_to_client(int fd, const void *buf, size_t len,
                                            uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    return send_all(fd, buf, len, deadline_ns, abort, true);
}

ecclResult_t eccl_socket_recv_all(int fd, void *buf, size_t len, uint64_t deadline_ns,
                                  const _Atomic uint32_t *abort)
{
    char *p = buf;
    if (ECCL_FAULT("socket_recv")) {
        WARN("recv on fd %d failed (fault injection)", fd);
        return ecclSystemError;
    }
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0) {
            WARN("peer closed the connection with %zu bytes still expected", len);
            return ecclRemoteError;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            ECCL_TRY(wait_fd(fd, POLLIN, deadline_ns, abort, "receive"));
            continue;
        }
        if (errno == ECONNRESET) {
            WARN("peer reset the connection");
            return ecclRemoteError;
        }
        WARN("recv failed: %s", strerror(errno));
        return ecclSystemError;
    }
    return ecclSuccess;
}

static socklen_t uds_addr(const char *name, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    size_t n = strlen(name);
    if (n > sizeof(sun->sun_path) - 2)
        n = sizeof(sun->sun_path) - 2;
    memcpy(sun->sun_path + 1, name, n); /* abstract namespace: leading NUL */
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

ecclResult_t eccl_uds_open(const char *name, int *fd_out)
{
    ecclResult_t res = ecclSuccess;
    int fd = ECCL_FAULT_SYS("sys_socket", EMFILE,
                            socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd < 0) {
        WARN("socket(AF_UNIX) failed: %s", strerror(errno));
        return ecclSystemError;
    }
    struct sockaddr_un sun;
    socklen_t len = uds_addr(name, &sun);
    if (bind(fd, (struct sockaddr *)&sun, len) != 0) {
        WARN("bind of unix socket @%s failed: %s", name, strerror(errno));
        res = ecclSystemError;
        goto err_close;
    }
    *fd_out = fd;
    return ecclSuccess;
err_close:
    close(fd);
    return res;
}

ecclResult_t eccl_uds_send(int sock, const char *name, const void *buf, size_t len, int fd,
                           uint64_t deadline_ns, const _Atomic uint32_t *abort)
{
    struct sockaddr_un sun;
    socklen_t alen = uds_addr(name, &sun);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr msg = {.msg_name = &sun, .msg_namelen = alen, .msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    if (ECCL_FAULT("uds_send")) {
        WARN("sendmsg to @%s failed (fault injection)", name);
        return ecclSystemError;
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n == (ssize_t)len)
            return ecclSuccess;
        if (n >= 0) {
            WARN("short datagram to @%s (%zd of %zu bytes)", name, n, len);
            return ecclSystemError;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            if (abort && atomic_load_explicit(abort, memory_order_acquire))
                return ecclRemoteError;
            if (eccl_deadline_passed(deadline_ns)) {
                WARN("timed out sending to unix socket @%s", name);
                return ecclInternalError;
            }
            eccl_sleep_us(200);
            continue;
        }
        if (errno == ECONNREFUSED || errno == ENOENT) {
            /* The peer's socket is not there (yet, or any more). */
            if (abort && atomic_load_explicit(abort, memory_order_acquire))
                return ecclRemoteError;
            if (eccl_deadline_passed(deadline_ns)) {
                WARN("unix socket @%s is not there: %s", name, strerror(errno));
                return ecclRemoteError;
            }
            eccl_sleep_us(1000);
            continue;
        }
        WARN("sendmsg to @%s failed: %s", name, strerror(errno));
        return ecclSystemError;
    }
}

ecclResult_t eccl_uds_recv(int sock, void *buf, size_t *len_io, int *fd_out, uint64_t deadline_ns,
                           const _Atomic uint32_t *abort)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } ctl;
    for (;;) {
        struct iovec iov = {.iov_base = buf, .iov_len = *len_io};
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n >= 0) {
            int got = -1;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                    continue;
                size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < nfd; i++) {
                    int f;
                    memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                    if (got < 0)
                        got = f;
                    else
                        close(f);
                }
            }
            if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
                if (got >= 0)
                    close(got);
                WARN("truncated datagram on unix socket (flags 0x%x)", msg.msg_flags);
                return ecclInternalError;
            }
            *len_io = (size_t)n;
            *fd_out = got;
            return ecclSuccess;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            WARN("recvmsg failed: %s", strerror(errno));
            return ecclSystemError;
        }
        if (deadline_ns == 0)
            return ecclInProgress;
        ECCL_TRY(wait_fd(sock, POLLIN, deadline_ns, abort, "receive on a unix socket"));
    }
}

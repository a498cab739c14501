/*
 * net_socket_bench.c - loopback bandwidth of one connection of the socket network backend.
 *
 *   build/bench/net_socket_bench [MiB per message (64)] [messages (20)] [in flight (2)]
 *
 * Opens one connection over the interface ECCL_SOCKET_IFNAME picks (lo by default here), keeps
 * `in flight` messages posted in each direction and prints the bandwidth of the timed messages
 * (after two warm-up messages). One thread drives both ends, as a proxy thread would drive its
 * connections; it yields the CPU between polls so that the helper threads get it. The socket
 * count comes from ECCL_SOCKET_NTHREADS and ECCL_NSOCKS_PERTHREAD.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "proxy/net.h"

static int fail(const char *what, ecclResult_t r)
{
    fprintf(stderr, "net_socket_bench: %s failed: %d\n", what, (int)r);
    return 1;
}

int main(int argc, char **argv)
{
    const struct eccl_net_ops *N = &eccl_net_socket;
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    int iters = argc > 2 ? atoi(argv[2]) : 20;
    int depth = argc > 3 ? atoi(argv[3]) : 2;
    if (mib == 0 || iters <= 0 || depth < 1 || depth > ECCL_NET_MAX_REQUESTS) {
        fprintf(stderr, "usage: %s [MiB >= 1] [messages >= 1] [in flight 1..%d]\n", argv[0],
                ECCL_NET_MAX_REQUESTS);
        return 2;
    }
    if (!getenv("ECCL_SOCKET_IFNAME"))
        setenv("ECCL_SOCKET_IFNAME", "lo", 1);
    size_t size = mib << 20;
    ecclResult_t r = N->init();
    if (r != ecclSuccess)
        return fail("init", r);
    unsigned char handle[ECCL_NET_HANDLE_BYTES];
    void *lc = NULL, *sc = NULL, *rc = NULL;
    if ((r = N->listen(0, handle, &lc)) != ecclSuccess)
        return fail("listen", r);
    uint64_t deadline = eccl_deadline_ms(10000);
    while (!sc || !rc) {
        if (!sc && (r = N->connect(0, handle, &sc)) != ecclSuccess)
            return fail("connect", r);
        if (!rc && (r = N->accept(lc, &rc)) != ecclSuccess)
            return fail("accept", r);
        if (eccl_deadline_passed(deadline))
            return fail("connect (timeout)", ecclInternalError);
    }
    char *src = malloc(size * (size_t)depth), *dst = malloc(size * (size_t)depth);
    if (!src || !dst)
        return fail("malloc", ecclSystemError);
    memset(src, 0x3c, size * (size_t)depth);
    memset(dst, 0, size * (size_t)depth);

    int warm = 2, total = iters + warm;
    int sent = 0, recvd = 0, sdone = 0, rdone = 0;
    void *sreq[ECCL_NET_MAX_REQUESTS] = {0}, *rreq[ECCL_NET_MAX_REQUESTS] = {0};
    uint64_t t0 = 0;
    while (rdone < total || sdone < total) {
        int progressed = 0;
        while (sent < total && sent - sdone < depth) {
            void *q = NULL;
            if ((r = N->isend(sc, src + (size_t)(sent % depth) * size, size, 0, NULL, &q)) !=
                ecclSuccess)
                return fail("isend", r);
            if (!q)
                break;
            sreq[sent % depth] = q;
            sent++;
        }
        while (recvd < total && recvd - rdone < depth) {
            void *q = NULL;
            if ((r = N->irecv(rc, dst + (size_t)(recvd % depth) * size, size, 0, NULL, &q)) !=
                ecclSuccess)
                return fail("irecv", r);
            if (!q)
                break;
            rreq[recvd % depth] = q;
            recvd++;
        }
        int done = 0;
        size_t got = 0;
        if (sdone < sent) {
            if ((r = N->test(sreq[sdone % depth], &done, &got)) != ecclSuccess)
                return fail("test(send)", r);
            if (done) {
                sdone++;
                progressed = 1;
            }
        }
        done = 0;
        if (rdone < recvd) {
            if ((r = N->test(rreq[rdone % depth], &done, &got)) != ecclSuccess)
                return fail("test(recv)", r);
            if (done) {
                if (got != size)
                    return fail("size check", ecclInternalError);
                rdone++;
                progressed = 1;
                if (rdone == warm)
                    t0 = eccl_now_ns();
            }
        }
        if (!progressed)
            sched_yield();
    }
    double secs = (double)(eccl_now_ns() - t0) / 1e9;
    double gbs = (double)size * iters / secs / 1e9;
    if (memcmp(src, dst, size * (size_t)depth) != 0)
        return fail("data check", ecclInternalError);
    const char *nt = getenv("ECCL_SOCKET_NTHREADS"), *ns = getenv("ECCL_NSOCKS_PERTHREAD");
    printf("net_socket_bench: ECCL_SOCKET_NTHREADS=%s ECCL_NSOCKS_PERTHREAD=%s  %zu MiB x %d "
           "(%d in flight): %.3f s, %.2f GB/s\n",
           nt ? nt : "(default)", ns ? ns : "(default)", mib, iters, depth, secs, gbs);
    N->close_send(sc);
    N->close_recv(rc);
    N->close_listen(lc);
    N->fini();
    free(src);
    free(dst);
    return 0;
}

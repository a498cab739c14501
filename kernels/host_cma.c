/*
 * host_cma.c - single-copy steps: descriptors of a rank's buffer, read by its peer with
 * process_vm_readv (see host_cma.h).
 */
#include "kernels/host_cma.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"

/* Off by default: on the 2-core EPYC VM of the host benchmark (kernel 6.18) the kernel's copy in
 * process_vm_readv moves 4.4 GB/s from memory and 9 GB/s from the cache, where memcpy moves 14
 * and 40 (75% of its time in _copy_to_iter and in pinning the peer's pages), so two copies
 * through a slot, the sender's and the receiver's on two cores, beat one copy by the kernel: with
 * single copy from 4 MiB a 2-rank AllGather of 64 MiB took 1.33x as long, a Broadcast 1.16x
 * (eccl-perf, 2026-11-24). */
ECCL_PARAM_INT(host_single_copy_bytes, "ECCL_HOST_SINGLE_COPY_BYTES", 0)

static uint64_t token;
static pthread_once_t token_once = PTHREAD_ONCE_INIT;

static void token_init(void)
{
    uint64_t t = eccl_random64();
    token = t ? t : 1;
}

size_t kern_cma_min_bytes(void)
{
    /* Read once per thread and parameter generation: a parameter read takes a lock. */
    static _Thread_local uint64_t gen;
    static _Thread_local size_t min_bytes;
    uint64_t g = eccl_param_generation();
    if (gen != g) {
        int64_t v = eccl_param_host_single_copy_bytes();
        min_bytes = v > 0 ? (size_t)v : 0;
        gen = g;
    }
    return min_bytes;
}

void kern_cma_describe(struct kern_cma_desc *d, const void *addr, size_t len)
{
    pthread_once(&token_once, token_init);
    d->magic = KERN_CMA_MAGIC;
    d->pid = (int64_t)getpid();
    d->token_addr = (uint64_t)(uintptr_t)&token;
    d->token = token;
    d->addr = (uint64_t)(uintptr_t)addr;
    d->len = len;
}

ecclResult_t kern_cma_read(const struct kern_cma_desc *d, void *dst, size_t len, int peer,
                           int *read_errno)
{
    if (read_errno)
        *read_errno = 0;
    struct kern_cma_desc c;
    memcpy(&c, d, sizeof(c)); /* the peer could change the slot while we look at it */
    if (c.magic != KERN_CMA_MAGIC || c.len != len || c.pid <= 0 || c.pid > INT32_MAX) {
        WARN("rank %d sent a bad single-copy descriptor (magic %llx, %llu bytes where %zu were "
             "expected): the ranks called different operations or use different "
             "ECCL_HOST_SINGLE_COPY_BYTES",
             peer, (unsigned long long)c.magic, (unsigned long long)c.len, len);
        return ecclInvalidUsage;
    }
    if (len == 0)
        return ecclSuccess;
    pthread_once(&token_once, token_init);
    if ((pid_t)c.pid == getpid()) {
        if (c.token_addr != (uint64_t)(uintptr_t)&token || c.token != token) {
            WARN("rank %d's single-copy descriptor names this process but not its token", peer);
            return ecclSystemError;
        }
        memcpy(dst, (const void *)(uintptr_t)c.addr, len);
        return ecclSuccess;
    }
    uint64_t got_token = 0;
    size_t done = 0;
    bool token_read = false;
    while (done < len || !token_read) {
        struct iovec local[2], remote[2];
        int n = 0;
        if (!token_read) {
            local[n] = (struct iovec){&got_token, sizeof(got_token)};
            remote[n] = (struct iovec){(void *)(uintptr_t)c.token_addr, sizeof(got_token)};
            n++;
        }
        local[n] = (struct iovec){(char *)dst + done, len - done};
        remote[n] = (struct iovec){(void *)(uintptr_t)(c.addr + done), len - done};
        n++;
        ssize_t r =
            process_vm_readv((pid_t)c.pid, local, (unsigned long)n, remote, (unsigned long)n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && read_errno && (errno == ESRCH || errno == EFAULT)) {
            *read_errno = errno;
            return ecclSystemError;
        }
        if (r <= 0) {
            WARN("reading %zu bytes from rank %d (pid %lld) with process_vm_readv failed: %s; "
                 "ECCL_HOST_SINGLE_COPY_BYTES=0 turns single-copy steps off",
                 len - done, peer, (long long)c.pid, r < 0 ? strerror(errno) : "no progress");
            return ecclSystemError;
        }
        size_t got = (size_t)r;
        if (!token_read) {
            if (got < sizeof(got_token)) {
                WARN("process_vm_readv from rank %d returned a partial token", peer);
                return ecclSystemError;
            }
            got -= sizeof(got_token);
            token_read = true;
            if (got_token != c.token) {
                WARN("rank %d's single-copy descriptor names pid %lld, which is another process "
                     "here (PID namespaces?); ECCL_HOST_SINGLE_COPY_BYTES=0 turns single-copy "
                     "steps off",
                     peer, (long long)c.pid);
                return ecclSystemError;
            }
        }
        done += got;
    }
    return ecclSuccess;
}

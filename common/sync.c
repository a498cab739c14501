/*
 * sync.c - futex waits and events.
 */
#include "common/sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/log.h"
#include "common/time.h"

void eccl_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns, bool shared)
{
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / ECCL_NS_PER_S),
                          .tv_nsec = (long)(timeout_ns % ECCL_NS_PER_S)};
    syscall(SYS_futex, (uint32_t *)word, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, expected, &ts,
            NULL, 0);
}

void eccl_futex_wake(_Atomic uint32_t *word, bool shared)
{
    syscall(SYS_futex, (uint32_t *)word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, INT32_MAX, NULL,
            NULL, 0);
}

void eccl_event_reset(struct eccl_event *e)
{
    atomic_store_explicit(&e->state, 0, memory_order_relaxed);
}

void eccl_event_set(struct eccl_event *e)
{
    atomic_store_explicit(&e->state, 1, memory_order_release);
    eccl_futex_wake(&e->state, false);
}

bool eccl_event_is_set(struct eccl_event *e)
{
    return atomic_load_explicit(&e->state, memory_order_acquire) != 0;
}

ecclResult_t eccl_event_wait(struct eccl_event *e, const _Atomic uint32_t *abort,
                             uint64_t deadline_ns, const char *what)
{
    for (int spin = 0; spin < 200; spin++) {
        if (atomic_load_explicit(&e->state, memory_order_acquire))
            return ecclSuccess;
    }
    while (!atomic_load_explicit(&e->state, memory_order_acquire)) {
        if (abort && atomic_load_explicit(abort, memory_order_acquire))
            return ecclRemoteError;
        if (eccl_deadline_passed(deadline_ns)) {
            WARN("timed out waiting for %s", what);
            return ecclInternalError;
        }
        /* Sleep in 10 ms slices so that an abort is seen promptly. */
        eccl_futex_wait(&e->state, 0, 10 * ECCL_NS_PER_MS, false);
    }
    return ecclSuccess;
}

ecclResult_t eccl_bell_init(struct eccl_bell *b)
{
    atomic_store(&b->sleeping, 0);
    b->efd = ECCL_FAULT_SYS("sys_eventfd", EMFILE, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (b->efd < 0) {
        WARN("eventfd failed: %s", strerror(errno));
        return ecclSystemError;
    }
    return ecclSuccess;
}

void eccl_bell_fini(struct eccl_bell *b)
{
    if (b->efd >= 0)
        close(b->efd);
    b->efd = -1;
}

void eccl_bell_ring(struct eccl_bell *b)
{
    /* Pairs with the fence in eccl_bell_arm: either the sleeper's last check sees our work, or
     * we see it sleeping. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&b->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&b->sleeping, 0, memory_order_acq_rel)) {
        uint64_t one = 1;
        ssize_t rc = write(b->efd, &one, sizeof(one));
        (void)rc; /* EAGAIN: the counter is already non-zero, the sleeper wakes anyway */
    }
}

void eccl_bell_arm(struct eccl_bell *b)
{
    atomic_store_explicit(&b->sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
}

void eccl_bell_drain(struct eccl_bell *b)
{
    atomic_store_explicit(&b->sleeping, 0, memory_order_relaxed);
    uint64_t v;
    ssize_t rc = read(b->efd, &v, sizeof(v));
    (void)rc; /* EAGAIN: woken by the timeout or another descriptor */
}

int eccl_thread_id(void)
{
    return (int)syscall(SYS_gettid);
}

char eccl_task_state(int pid, int tid)
{
    char path[64], buf[256];
    if (tid > 0)
        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
    else
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* "tid (comm) S ...": the state follows the last ')' (comm may hold spaces and parens). */
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2])
        return 0;
    return p[2] == 'Z' || p[2] == 'X' ? 0 : p[2];
}

char eccl_thread_state(int tid)
{
    return eccl_task_state((int)getpid(), tid);
}

/*
 * sync.h - waiting on a 32-bit word shared between threads or processes (futex), with a spin
 * phase, a deadline and an abort flag: the building block of every blocking wait in eccl.
 */
#ifndef ECCL_COMMON_SYNC_H
#define ECCL_COMMON_SYNC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eccl.h"

/* Sleeps while *word == expected, at most timeout_ns; spurious wake-ups allowed. `shared`: the
 * word lives in memory shared between processes. */
void eccl_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns, bool shared);
void eccl_futex_wake(_Atomic uint32_t *word, bool shared);

/* A one-shot or reusable event between threads of one process. */
struct eccl_event {
    _Atomic uint32_t state;
};
void eccl_event_reset(struct eccl_event *e);
void eccl_event_set(struct eccl_event *e);
bool eccl_event_is_set(struct eccl_event *e);
/* ecclSuccess when set, ecclRemoteError when *abort became nonzero, ecclInternalError (with a
 * WARN naming `what`) at the deadline. */
ecclResult_t eccl_event_wait(struct eccl_event *e, const _Atomic uint32_t *abort,
                             uint64_t deadline_ns, const char *what);

/* A doorbell that wakes a thread sleeping in poll(): the sleeper raises `sleeping` and re-checks
 * its work before polling the eventfd; a ringer that sees `sleeping` writes the eventfd. Cheap
 * to ring when nobody sleeps (one atomic load). */
struct eccl_bell {
    _Atomic uint32_t sleeping;
    int efd;
};
ecclResult_t eccl_bell_init(struct eccl_bell *b);
void eccl_bell_fini(struct eccl_bell *b);
void eccl_bell_ring(struct eccl_bell *b);
/* Sleeper side: arm before the last check for work, then poll b->efd; drain after waking. */
void eccl_bell_arm(struct eccl_bell *b);
void eccl_bell_drain(struct eccl_bell *b);

/* The scheduler state of thread `tid` of this process, from /proc/self/task/<tid>/stat: 'R'
 * (running or runnable), 'S', 'D', 'T', ...; 0 when the thread does not exist (exited). */
char eccl_thread_state(int tid);
/* The same for thread `tid` of process `pid` (tid 0: the process), from /proc/<pid>/... */
char eccl_task_state(int pid, int tid);
/* The calling thread's id (gettid). */
int eccl_thread_id(void);

/* One poll of a spin wait: tells the core that this thread spins (pause on x86, yield on Arm). */
static inline void eccl_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif

/*
 * time.c - monotonic time and deadlines.
 */
#include "common/time.h"

#include <errno.h>
#include <limits.h>
#include <time.h>

uint64_t eccl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * ECCL_NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t eccl_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * ECCL_NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t eccl_deadline_ms(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return ECCL_NO_DEADLINE;
    return eccl_now_ns() + (uint64_t)timeout_ms * ECCL_NS_PER_MS;
}

bool eccl_deadline_passed(uint64_t deadline_ns)
{
    return deadline_ns != ECCL_NO_DEADLINE && eccl_now_ns() >= deadline_ns;
}

int eccl_deadline_left_ms(uint64_t deadline_ns)
{
    if (deadline_ns == ECCL_NO_DEADLINE)
        return INT32_MAX;
    uint64_t now = eccl_now_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t left = (deadline_ns - now + ECCL_NS_PER_MS - 1) / ECCL_NS_PER_MS;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

void eccl_sleep_us(uint64_t us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

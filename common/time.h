/*
 * time.h - monotonic time and deadlines.
 */
#ifndef ECCL_COMMON_TIME_H
#define ECCL_COMMON_TIME_H

#include <stdbool.h>
#include <stdint.h>

#define ECCL_NS_PER_MS   1000000ULL
#define ECCL_NS_PER_S    1000000000ULL
#define ECCL_NO_DEADLINE UINT64_MAX

uint64_t eccl_now_ns(void);  /* CLOCK_MONOTONIC */
uint64_t eccl_wall_ns(void); /* CLOCK_REALTIME */
/* An absolute deadline timeout_ms from now (a negative timeout means none). */
uint64_t eccl_deadline_ms(int64_t timeout_ms);
bool eccl_deadline_passed(uint64_t deadline_ns);
/* Milliseconds left until the deadline (0 when passed, INT32_MAX when none), for poll(). */
int eccl_deadline_left_ms(uint64_t deadline_ns);
void eccl_sleep_us(uint64_t us);

#endif

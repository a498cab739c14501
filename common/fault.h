/*
 * fault.h - fault points: named sites where a test can make an operation fail.
 *
 * Compiled in with `make FAULT=1` (ECCL_FAULT_ENABLED). ECCL_FAULT=site:N[,site:N...] fails the
 * Nth hit of a site (N counts from 1; "site:N+" fails the Nth and every later hit). In a build
 * without FAULT=1, ECCL_FAULT(site) is the constant false and costs nothing.
 */
#ifndef ECCL_COMMON_FAULT_H
#define ECCL_COMMON_FAULT_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef ECCL_FAULT_ENABLED
bool eccl_fault_hit(const char *site);
#define ECCL_FAULT(site) eccl_fault_hit(site)
#else
#define ECCL_FAULT(site) false
#endif

/* System calls with a fault point, for the sweeps of tests/torture.sh: the call fails as the
 * kernel would (errno `err`) on the armed hit, or runs. ECCL_FAULT_SYS wraps calls returning -1
 * on failure (socket, connect, accept4, memfd_create, eventfd), ECCL_FAULT_MMAP mmap,
 * ECCL_FAULT_THREAD pthread_create (which returns the error). */
#define ECCL_FAULT_SYS(site, err, call) (ECCL_FAULT(site) ? (errno = (err), -1) : (call))
#define ECCL_FAULT_MMAP(site, call)     (ECCL_FAULT(site) ? (errno = ENOMEM, MAP_FAILED) : (call))
#define ECCL_FAULT_THREAD(call)         (ECCL_FAULT("thread_create") ? EAGAIN : (call))

/* Re-reads ECCL_FAULT and zeroes the hit counters (tests). */
void eccl_fault_reset(void);
/* Arms one site programmatically: fail hit number n (and later ones if `sticky`). */
void eccl_fault_arm(const char *site, uint64_t n, bool sticky);
/* Hits of a site so far (counted only while some site is armed or ECCL_FAULT_COUNT=1). */
uint64_t eccl_fault_count(const char *site);
/* Writes one line "site hits" per site counted so far (tests/torture.sh sizes its sweeps with
 * it, under ECCL_FAULT_COUNT=1). */
void eccl_fault_dump(FILE *f);

#endif

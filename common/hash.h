/*
 * hash.h - hashing: 64-bit FNV-1a with a final mix, and the host hash that identifies a machine.
 */
#ifndef ECCL_COMMON_HASH_H
#define ECCL_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t eccl_hash64(const void *data, size_t len, uint64_t seed);
uint64_t eccl_hash_mix(uint64_t h);
/* Identifies this host: hostname, /proc/sys/kernel/random/boot_id and the network namespace
 * (ECCL_HOSTID overrides, which tests use to simulate several hosts on one machine). Computed at
 * each call. */
uint64_t eccl_host_hash(void);
/* 64 random bits from getrandom(). */
uint64_t eccl_random64(void);
/* The short host name as NCCL prints it: cut at the first '.', '/' and '%' replaced by '-'. */
const char *eccl_hostname(void);

#endif

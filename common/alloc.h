/*
 * alloc.h - the one host allocator: tagged, counted per tag, overflow-checked, with a fault point.
 *
 * Every host allocation in eccl goes through eccl_calloc/eccl_free so that tests can check that
 * nothing is left behind (eccl_alloc_live_bytes) and allocation-failure injection
 * (ECCL_FAULT=alloc:N) reaches every error path. Memory is zeroed. Thread-safe.
 */
#ifndef ECCL_COMMON_ALLOC_H
#define ECCL_COMMON_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* n objects of size bytes, zeroed; NULL (with a WARN) on overflow or failure. `tag` must be a
 * string literal (it is kept by pointer). */
void *eccl_calloc(size_t n, size_t size, const char *tag);
/* Grows or shrinks a block from eccl_calloc; new bytes are zeroed. NULL on failure, the old block
 * untouched. */
void *eccl_realloc(void *p, size_t n, size_t size, const char *tag);
void eccl_free(void *p);
char *eccl_strdup(const char *s, const char *tag);

/* Aligned allocation (align a power of two >= 16), zeroed; free with eccl_free_aligned. */
void *eccl_calloc_aligned(size_t size, size_t align, const char *tag);
void eccl_free_aligned(void *p);

/* Live bytes and blocks, over all tags or for one tag (NULL: all). */
int64_t eccl_alloc_live_bytes(const char *tag);
int64_t eccl_alloc_live_blocks(const char *tag);
/* Logs every tag with live blocks at INFO ALLOC; returns the number of live blocks. */
int64_t eccl_alloc_report(void);

#endif

/*
 * alloc.c - the tagged host allocator.
 *
 * Each block carries a 32-byte header (magic, size, tag slot) so that eccl_free can update the
 * per-tag counters. Tags are interned by pointer into a fixed table; a tag that does not fit in
 * the table is counted under "other".
 */
#include "common/alloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/fault.h"
#include "common/log.h"

#define ALLOC_MAGIC    0x65636c41u /* "Alce" */
#define ALLOC_DEAD     0x64656164u
#define ALLOC_MAX_TAGS 256

struct alloc_hdr {
    uint32_t magic;
    uint32_t tag_slot;
    uint64_t size;
    uint64_t align_off; /* bytes between the raw block and this header (aligned blocks) */
    uint64_t pad;
};

struct tag_stat {
    const char *_Atomic tag;
    _Atomic int64_t bytes;
    _Atomic int64_t blocks;
};

static struct tag_stat tags[ALLOC_MAX_TAGS];

static uint32_t tag_slot(const char *tag)
{
    if (!tag)
        tag = "untagged";
    uint32_t h = (uint32_t)(((uintptr_t)tag >> 3) * 2654435761u) % (ALLOC_MAX_TAGS - 1);
    for (uint32_t i = 0; i < ALLOC_MAX_TAGS - 1; i++) {
        uint32_t s = (h + i) % (ALLOC_MAX_TAGS - 1);
        const char *cur = atomic_load_explicit(&tags[s].tag, memory_order_acquire);
        if (cur == tag || (cur && strcmp(cur, tag) == 0))
            return s;
        if (cur == NULL) {
            const char *expected = NULL;
            if (atomic_compare_exchange_strong(&tags[s].tag, &expected, tag))
                return s;
            if (expected == tag || strcmp(expected, tag) == 0)
                return s;
        }
    }
    return ALLOC_MAX_TAGS - 1; /* "other" */
}

static void account(uint32_t slot, int64_t bytes, int64_t blocks)
{
    atomic_fetch_add_explicit(&tags[slot].bytes, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&tags[slot].blocks, blocks, memory_order_relaxed);
}

static void *alloc_raw(size_t total, size_t align, const char *tag, size_t user_size)
{
    if (ECCL_FAULT("alloc")) {
        WARN("allocation of %zu bytes for %s failed (fault injection)", user_size, tag);
        return NULL;
    }
    size_t hdr = sizeof(struct alloc_hdr);
    size_t off = align > hdr ? align : hdr;
    if (total > SIZE_MAX - off - align) {
        WARN("allocation of %zu bytes for %s overflows", user_size, tag);
        return NULL;
    }
    void *raw = NULL;
    if (align > 16) {
        if (posix_memalign(&raw, align, total + off) != 0)
            raw = NULL;
        if (raw)
            memset(raw, 0, total + off);
    } else {
        raw = calloc(1, total + off);
    }
    if (!raw) {
        WARN("allocation of %zu bytes for %s failed", user_size, tag ? tag : "untagged");
        return NULL;
    }
    char *user = (char *)raw + off;
    struct alloc_hdr *h = (struct alloc_hdr *)(user - hdr);
    h->magic = ALLOC_MAGIC;
    h->tag_slot = tag_slot(tag);
    h->size = user_size;
    h->align_off = off;
    account(h->tag_slot, (int64_t)user_size, 1);
    return user;
}

void *eccl_calloc(size_t n, size_t size, const char *tag)
{
    if (size != 0 && n > SIZE_MAX / size) {
        WARN("allocation of %zu x %zu bytes for %s overflows", n, size, tag ? tag : "untagged");
        return NULL;
    }
    size_t total = n * size;
    return alloc_raw(total ? total : 1, 16, tag, total);
}

void *eccl_calloc_aligned(size_t size, size_t align, const char *tag)
{
    if (align < 16 || (align & (align - 1)) != 0) {
        WARN("bad alignment %zu for %s", align, tag);
        return NULL;
    }
    return alloc_raw(size ? size : 1, align, tag, size);
}

static struct alloc_hdr *header_of(void *p)
{
    struct alloc_hdr *h = (struct alloc_hdr *)((char *)p - sizeof(struct alloc_hdr));
    if (h->magic != ALLOC_MAGIC) {
        WARN("eccl_free of a block not from eccl_calloc or freed twice (%p)", p);
        abort();
    }
    return h;
}

void eccl_free(void *p)
{
    if (!p)
        return;
    struct alloc_hdr *h = header_of(p);
    account(h->tag_slot, -(int64_t)h->size, -1);
    h->magic = ALLOC_DEAD;
    free((char *)p - h->align_off);
}

void eccl_free_aligned(void *p)
{
    eccl_free(p);
}

void *eccl_realloc(void *p, size_t n, size_t size, const char *tag)
{
    if (!p)
        return eccl_calloc(n, size, tag);
    if (size != 0 && n > SIZE_MAX / size) {
        WARN("reallocation of %zu x %zu bytes for %s overflows", n, size, tag);
        return NULL;
    }
    struct alloc_hdr *h = header_of(p);
    void *np = eccl_calloc(n, size, tag);
    if (!np)
        return NULL;
    size_t keep = h->size < n * size ? h->size : n * size;
    memcpy(np, p, keep);
    eccl_free(p);
    return np;
}

char *eccl_strdup(const char *s, const char *tag)
{
    size_t len = strlen(s);
    char *d = eccl_calloc(len + 1, 1, tag);
    if (d)
        memcpy(d, s, len);
    return d;
}

int64_t eccl_alloc_live_bytes(const char *tag)
{
    int64_t sum = 0;
    for (int i = 0; i < ALLOC_MAX_TAGS; i++) {
        const char *t = atomic_load(&tags[i].tag);
        if (!tag || (t && strcmp(t, tag) == 0))
            sum += atomic_load(&tags[i].bytes);
    }
    return sum;
}

int64_t eccl_alloc_live_blocks(const char *tag)
{
    int64_t sum = 0;
    for (int i = 0; i < ALLOC_MAX_TAGS; i++) {
        const char *t = atomic_load(&tags[i].tag);
        if (!tag || (t && strcmp(t, tag) == 0))
            sum += atomic_load(&tags[i].blocks);
    }
    return sum;
}

int64_t eccl_alloc_report(void)
{
    int64_t total = 0;
    for (int i = 0; i < ALLOC_MAX_TAGS; i++) {
        int64_t b = atomic_load(&tags[i].blocks);
        if (b == 0)
            continue;
        const char *t = atomic_load(&tags[i].tag);
        INFO(ECCL_LOG_ALLOC, "live: %s %lld blocks %lld bytes", t ? t : "other", (long long)b,
             (long long)atomic_load(&tags[i].bytes));
        total += b;
    }
    return total;
}

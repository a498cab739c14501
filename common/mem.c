/*
 * mem.c - arena, scoped memory stack, object pools and the reclaim callback queue.
 *
 * Arena and stack allocate from chunks (at least chunk_size bytes, more for a large request).
 * A stack frame records the chunk and offset at push; pop frees the chunks allocated since and
 * rewinds the offset, so memory of a popped frame is reused by the next one.
 */
#include "common/mem.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"

struct eccl_mem_chunk {
    struct eccl_mem_chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    /* data follows, 64-byte aligned */
};

#define CHUNK_HDR 64 /* keeps data 64-byte aligned */
_Static_assert(sizeof(struct eccl_mem_chunk) <= CHUNK_HDR, "chunk header fits");

static struct eccl_mem_chunk *chunk_new(size_t size, const char *tag)
{
    if (size > SIZE_MAX - CHUNK_HDR) {
        WARN("memory chunk of %zu bytes for %s overflows", size, tag);
        return NULL;
    }
    struct eccl_mem_chunk *c = eccl_calloc_aligned(CHUNK_HDR + size, 64, tag);
    if (!c)
        return NULL;
    c->size = size;
    return c;
}

static char *chunk_data(struct eccl_mem_chunk *c)
{
    return (char *)c + CHUNK_HDR;
}

/* Carves size bytes aligned to align from chunk c, or NULL if it does not fit. */
static void *chunk_carve(struct eccl_mem_chunk *c, size_t size, size_t align)
{
    if (!c)
        return NULL;
    size_t off = (c->used + align - 1) & ~(align - 1);
    if (off > c->size || size > c->size - off)
        return NULL;
    c->used = off + size;
    void *p = chunk_data(c) + off;
    memset(p, 0, size);
    return p;
}

static bool align_ok(size_t align)
{
    return align != 0 && align <= 64 && (align & (align - 1)) == 0;
}

void eccl_arena_init(struct eccl_arena *a, size_t chunk_size, const char *tag)
{
    a->chunks = NULL;
    a->chunk_size = chunk_size ? chunk_size : 65536;
    a->tag = tag;
}

void eccl_arena_fini(struct eccl_arena *a)
{
    struct eccl_mem_chunk *c = a->chunks;
    while (c) {
        struct eccl_mem_chunk *n = c->next;
        eccl_free_aligned(c);
        c = n;
    }
    a->chunks = NULL;
}

void *eccl_arena_alloc(struct eccl_arena *a, size_t size, size_t align)
{
    if (!align_ok(align)) {
        WARN("arena %s: bad alignment %zu", a->tag, align);
        return NULL;
    }
    void *p = chunk_carve(a->chunks, size, align);
    if (p)
        return p;
    struct eccl_mem_chunk *c =
        chunk_new(size + align > a->chunk_size ? size + align : a->chunk_size, a->tag);
    if (!c)
        return NULL;
    c->next = a->chunks;
    a->chunks = c;
    return chunk_carve(c, size, align);
}

struct eccl_memstack_frame {
    struct eccl_memstack_frame *prev;
    struct eccl_mem_chunk *chunk; /* top chunk at push */
    size_t used;                  /* its offset at push */
};

void eccl_memstack_init(struct eccl_memstack *s, size_t chunk_size, const char *tag)
{
    memset(s, 0, sizeof(*s));
    s->chunk_size = chunk_size ? chunk_size : 65536;
    s->tag = tag;
}

void eccl_memstack_fini(struct eccl_memstack *s)
{
    struct eccl_mem_chunk *c = s->chunks;
    while (c) {
        struct eccl_mem_chunk *n = c->next;
        eccl_free_aligned(c);
        c = n;
    }
    s->chunks = NULL;
    s->top = NULL;
    s->depth = 0;
}

ecclResult_t eccl_memstack_push(struct eccl_memstack *s)
{
    struct eccl_mem_chunk *c0 = s->chunks;
    size_t used0 = c0 ? c0->used : 0;
    /* The frame record lives in the stack itself, in the frame it opens... which would be popped
     * with it; so carve it before recording the position, and record the position before it. */
    struct eccl_memstack_frame tmp = {.prev = s->top, .chunk = c0, .used = used0};
    struct eccl_memstack_frame *f = chunk_carve(c0, sizeof(*f), 16);
    if (!f) {
        struct eccl_mem_chunk *c = chunk_new(s->chunk_size, s->tag);
        if (!c)
            return ecclSystemError;
        c->next = s->chunks;
        s->chunks = c;
        f = chunk_carve(c, sizeof(*f), 16);
    }
    *f = tmp;
    s->top = f;
    s->depth++;
    return ecclSuccess;
}

ecclResult_t eccl_memstack_pop(struct eccl_memstack *s)
{
    struct eccl_memstack_frame *f = s->top;
    if (!f) {
        WARN("memory stack %s: pop without a pushed frame", s->tag);
        return ecclInternalError;
    }
    struct eccl_memstack_frame saved = *f;
    /* Free the chunks allocated since the push; keep the one that was on top then. */
    while (s->chunks && s->chunks != saved.chunk) {
        struct eccl_mem_chunk *n = s->chunks->next;
        if (saved.chunk == NULL && n == NULL) {
            /* Keep one chunk for reuse when the stack goes back to empty. */
            s->chunks->used = 0;
            break;
        }
        eccl_free_aligned(s->chunks);
        s->chunks = n;
    }
    if (s->chunks && s->chunks == saved.chunk)
        s->chunks->used = saved.used;
    s->top = saved.prev;
    s->depth--;
    return ecclSuccess;
}

void *eccl_memstack_alloc(struct eccl_memstack *s, size_t size, size_t align)
{
    if (!s->top) {
        WARN("memory stack %s: allocation without a pushed frame", s->tag);
        return NULL;
    }
    if (!align_ok(align)) {
        WARN("memory stack %s: bad alignment %zu", s->tag, align);
        return NULL;
    }
    void *p = chunk_carve(s->chunks, size, align);
    if (p)
        return p;
    size_t want = size + align > s->chunk_size ? size + align : s->chunk_size;
    struct eccl_mem_chunk *c = chunk_new(want, s->tag);
    if (!c)
        return NULL;
    c->next = s->chunks;
    s->chunks = c;
    return chunk_carve(c, size, align);
}

int eccl_memstack_depth(const struct eccl_memstack *s)
{
    return s->depth;
}

size_t eccl_memstack_bytes(const struct eccl_memstack *s)
{
    size_t b = 0;
    for (struct eccl_mem_chunk *c = s->chunks; c; c = c->next)
        b += c->size;
    return b;
}

void eccl_pool_init(struct eccl_pool *p, size_t obj_size, size_t per_chunk, const char *tag)
{
    memset(p, 0, sizeof(*p));
    p->obj_size = obj_size < sizeof(void *) ? sizeof(void *) : (obj_size + 15) & ~(size_t)15;
    p->per_chunk = per_chunk ? per_chunk : 32;
    p->tag = tag;
}

void eccl_pool_fini(struct eccl_pool *p)
{
    struct eccl_mem_chunk *c = p->chunks;
    while (c) {
        struct eccl_mem_chunk *n = c->next;
        eccl_free_aligned(c);
        c = n;
    }
    p->chunks = NULL;
    p->free_list = NULL;
    p->live = 0;
}

void *eccl_pool_get(struct eccl_pool *p)
{
    if (!p->free_list) {
        if (p->per_chunk > SIZE_MAX / p->obj_size) {
            WARN("pool %s: chunk size overflows", p->tag);
            return NULL;
        }
        struct eccl_mem_chunk *c = chunk_new(p->obj_size * p->per_chunk, p->tag);
        if (!c)
            return NULL;
        c->next = p->chunks;
        p->chunks = c;
        for (size_t i = p->per_chunk; i > 0; i--) {
            void **obj = (void **)(chunk_data(c) + (i - 1) * p->obj_size);
            *obj = p->free_list;
            p->free_list = obj;
        }
    }
    void **obj = p->free_list;
    p->free_list = *obj;
    memset(obj, 0, p->obj_size);
    p->live++;
    return obj;
}

void eccl_pool_put(struct eccl_pool *p, void *obj)
{
    if (!obj)
        return;
    *(void **)obj = p->free_list;
    p->free_list = obj;
    p->live--;
}

void eccl_cbq_init(struct eccl_cbq *q)
{
    atomic_init(&q->head, NULL);
}

void eccl_cbq_push(struct eccl_cbq *q, struct eccl_callback *cb)
{
    struct eccl_callback *old = atomic_load_explicit(&q->head, memory_order_relaxed);
    do {
        cb->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&q->head, &old, cb, memory_order_release,
                                                    memory_order_relaxed));
}

ecclResult_t eccl_cbq_poll(struct eccl_cbq *q)
{
    struct eccl_callback *list = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
    /* Pushed newest first: reverse to run in push order. */
    struct eccl_callback *rev = NULL;
    while (list) {
        struct eccl_callback *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    ecclResult_t first = ecclSuccess;
    while (rev) {
        struct eccl_callback *n = rev->next;
        ecclResult_t r = rev->fn(rev);
        if (r != ecclSuccess && first == ecclSuccess)
            first = r;
        rev = n;
    }
    return first;
}

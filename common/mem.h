/*
 * mem.h - the communicator's memory: a permanent arena, a scoped stack of frames, and pools of
 * fixed-size objects.
 *
 * Arena: bump allocation in chunks, freed all at once with the owner (a communicator).
 * Stack:  push a frame, allocate in it, pop it to free everything allocated since the push. Launch
 *         preparation pushes before planning and pops after launch and on every failure path, so
 *         that an error leaves no allocation behind. Frames nest.
 * Pool:   fixed-size objects with a free list (plans, tasks); everything is freed at fini.
 * None of these is thread-safe: each belongs to one thread at a time (the owner's).
 */
#ifndef ECCL_COMMON_MEM_H
#define ECCL_COMMON_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

struct eccl_mem_chunk;

struct eccl_arena {
    struct eccl_mem_chunk *chunks;
    size_t chunk_size;
    const char *tag;
};

void eccl_arena_init(struct eccl_arena *a, size_t chunk_size, const char *tag);
void eccl_arena_fini(struct eccl_arena *a);
/* Zeroed memory that lives until eccl_arena_fini; NULL on failure. */
void *eccl_arena_alloc(struct eccl_arena *a, size_t size, size_t align);

struct eccl_memstack_frame;

struct eccl_memstack {
    struct eccl_mem_chunk *chunks; /* newest first */
    struct eccl_memstack_frame *top;
    size_t chunk_size;
    int depth;
    const char *tag;
};

void eccl_memstack_init(struct eccl_memstack *s, size_t chunk_size, const char *tag);
/* Frees everything, whatever frames are still pushed. */
void eccl_memstack_fini(struct eccl_memstack *s);
ecclResult_t eccl_memstack_push(struct eccl_memstack *s);
/* Pops the top frame; a pop with no frame pushed is an internal error (returned, logged). */
ecclResult_t eccl_memstack_pop(struct eccl_memstack *s);
/* Zeroed memory in the top frame; NULL (with a WARN) when no frame is pushed or on failure. */
void *eccl_memstack_alloc(struct eccl_memstack *s, size_t size, size_t align);
int eccl_memstack_depth(const struct eccl_memstack *s);
/* Bytes held in chunks (for tests: a pop back to depth 0 returns this to one chunk at most). */
size_t eccl_memstack_bytes(const struct eccl_memstack *s);

struct eccl_pool {
    void *free_list;
    struct eccl_mem_chunk *chunks;
    size_t obj_size;
    size_t per_chunk;
    size_t live;
    const char *tag;
};

void eccl_pool_init(struct eccl_pool *p, size_t obj_size, size_t per_chunk, const char *tag);
void eccl_pool_fini(struct eccl_pool *p);
/* A zeroed object; NULL on failure. */
void *eccl_pool_get(struct eccl_pool *p);
void eccl_pool_put(struct eccl_pool *p, void *obj);

/*
 * Callback queue: reclaim callbacks posted by any thread (e.g. an executor finishing a plan),
 * run by the owner when it polls. Multi-producer, single-consumer; lock-free push.
 */
struct eccl_callback {
    struct eccl_callback *next;
    ecclResult_t (*fn)(struct eccl_callback *cb);
};

struct eccl_cbq {
    struct eccl_callback *_Atomic head;
};

void eccl_cbq_init(struct eccl_cbq *q);
void eccl_cbq_push(struct eccl_cbq *q, struct eccl_callback *cb);
/* Runs every queued callback in the order pushed; returns the first failure but runs all. */
ecclResult_t eccl_cbq_poll(struct eccl_cbq *q);

#endif

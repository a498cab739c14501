/*
 * stats.h - a worker's counters in a small shared file that its launcher reads (ecclrun's
 * /metrics): bytes per collective kind, counted where a collective is enqueued, and the elastic
 * state of the worker (generation, members, rank, recoveries, last failure cause).
 *
 * The file is named by ECCL_METRICS_FILE (ecclrun sets it for each worker when it serves
 * metrics). The library maps it on first use; without the variable nothing is mapped and every
 * update is a load of a NULL pointer. The page has a header (magic, version, size) that the
 * reader checks; the reader trusts nothing else in it either (values are range-checked there).
 * Fields are C11 atomics updated with relaxed order: they are counters and gauges, read by
 * another process at any moment; no field depends on another one.
 */
#ifndef ECCL_COMMON_STATS_H
#define ECCL_COMMON_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#define ECCL_STATS_MAGIC   0x31617473636365ULL /* "eccsta1" */
#define ECCL_STATS_VERSION 1
#define ECCL_STATS_SLOTS   16 /* room in bytes[] for kinds to come */

/* Collective kinds, as /metrics names them (eccl_stats_kind_name). */
enum eccl_stats_kind {
    ECCL_STATS_ALLREDUCE = 0,
    ECCL_STATS_ALLGATHER = 1,
    ECCL_STATS_REDUCESCATTER = 2,
    ECCL_STATS_BROADCAST = 3,
    ECCL_STATS_REDUCE = 4,
    ECCL_STATS_ALLTOALL = 5,
    ECCL_STATS_SENDRECV = 6,
    ECCL_STATS_GATHER = 7,
    ECCL_STATS_SCATTER = 8,
    ECCL_STATS_KINDS = 9,
};

/* Where the worker's elastic handle stands. */
enum eccl_stats_state {
    ECCL_STATS_STATE_NONE = 0,       /* no elastic handle (yet) */
    ECCL_STATS_STATE_JOINING = 1,    /* joined, first generation not built yet */
    ECCL_STATS_STATE_READY = 2,      /* in a generation with a communicator */
    ECCL_STATS_STATE_RECOVERING = 3, /* the generation failed; recovering */
    ECCL_STATS_STATE_LEFT = 4,       /* left the job / destroyed the handle */
    ECCL_STATS_STATE_COUNT = 5,
};

/* Why a generation failed, as the worker saw it first (eccl_stats_cause_name). */
enum eccl_stats_cause {
    ECCL_STATS_CAUSE_NONE = 0,
    ECCL_STATS_CAUSE_REVOKED = 1,        /* another member revoked the generation */
    ECCL_STATS_CAUSE_HEARTBEAT_LOST = 2, /* a member's lease expired or was revoked */
    ECCL_STATS_CAUSE_STORE_LOST = 3,     /* this member's own lease is gone */
    ECCL_STATS_CAUSE_SUPERSEDED = 4,     /* a generation formed without this member */
    ECCL_STATS_CAUSE_COMM_ERROR = 5,     /* the communicator failed (transport, watchdog) */
    ECCL_STATS_CAUSE_REQUESTED = 6,      /* the application asked for a recovery */
    ECCL_STATS_CAUSE_COUNT = 7,
};

struct eccl_stats_page {
    uint64_t magic;                           /* ECCL_STATS_MAGIC */
    uint32_t version;                         /* ECCL_STATS_VERSION */
    uint32_t size;                            /* sizeof(struct eccl_stats_page) */
    _Atomic uint64_t bytes[ECCL_STATS_SLOTS]; /* per enum eccl_stats_kind */
    _Atomic uint64_t calls[ECCL_STATS_SLOTS];
    _Atomic int64_t generation;        /* current generation (0: none) */
    _Atomic int64_t nranks;            /* its members */
    _Atomic int64_t rank;              /* this worker's rank in it (-1: none) */
    _Atomic uint32_t state;            /* enum eccl_stats_state */
    _Atomic uint32_t cause;            /* enum eccl_stats_cause of the last failure */
    _Atomic uint64_t cause_wall_ns;    /* when it was seen (CLOCK_REALTIME) */
    _Atomic uint64_t failures;         /* failures seen */
    _Atomic uint64_t recoveries;       /* recoveries done (first step after a failure) */
    _Atomic uint64_t last_recovery_ns; /* duration of the last one: failure seen to first step */
    _Atomic int64_t recovered_gen;     /* the generation the last recovery reached */
};

/* The mapped page, or NULL when ECCL_METRICS_FILE is unset or cannot be used (one WARN). */
struct eccl_stats_page *eccl_stats_page(void);

/* Writes a fresh header into a zeroed page (the launcher, before the worker starts). */
void eccl_stats_page_init(struct eccl_stats_page *p);

static inline void eccl_stats_add_bytes(enum eccl_stats_kind kind, uint64_t bytes)
{
    struct eccl_stats_page *p = eccl_stats_page();
    if (p) {
        atomic_fetch_add_explicit(&p->bytes[kind], bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->calls[kind], 1, memory_order_relaxed);
    }
}

const char *eccl_stats_kind_name(int kind);   /* "allreduce"...; "?" out of range */
const char *eccl_stats_cause_name(int cause); /* "none", "revoked"...; "?" out of range */

#endif

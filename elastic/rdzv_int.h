/*
 * rdzv_int.h - what the files of the rendezvous (rdzv.c: the handle, its watch and events;
 * rdzv_agree.c: the agreement of a generation; rdzv_codec.c: keys, records, a string map) share.
 * Private to elastic/; docs/internals/rdzv.md describes the keys and the record encodings.
 */
#ifndef ECCL_ELASTIC_RDZV_INT_H
#define ECCL_ELASTIC_RDZV_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "elastic/rdzv.h"

/* ---- keys ---- */

/* Every key is "<job>/" + one of:
 *   s/g            the current generation record
 *   s/gl/<gen>     the proposer lock of the agreement of <gen> (leased to the proposer)
 *   s/gr/<gen>     the revoke record of <gen>
 *   s/gb/<gen>     the bootstrap blob of <gen>
 *   s/m/<id>       a member record (leased to the member)
 *   i/<gen>/<id>   a member's registration for the agreement of <gen> (leased to the member)
 * Members watch "<job>/s/g" (record, locks, revokes, blobs) before their first generation and
 * "<job>/s/" (the same plus members) after it; only a proposer watches "<job>/" (registrations).
 */
#define EL_KEY_MAX 320

struct el_key {
    char s[EL_KEY_MAX];
    size_t len;
};

enum el_key_kind {
    EL_KEY_OTHER = 0,
    EL_KEY_RECORD,
    EL_KEY_LEAD,
    EL_KEY_REVOKE,
    EL_KEY_BOOT,
    EL_KEY_MEMBER,
    EL_KEY_INTENT,
    EL_KEY_LEFT,
};

void el_key_record(struct el_key *k, const char *job);
void el_key_lead(struct el_key *k, const char *job, int64_t gen);
void el_key_revoke(struct el_key *k, const char *job, int64_t gen);
void el_key_boot(struct el_key *k, const char *job, int64_t gen);
void el_key_member(struct el_key *k, const char *job, const char *id);
/* Written under the member's lease just before it leaves cleanly (el_rdzv_leave): the others
 * then take the deletion of its keys for a departure, not a failure. */
void el_key_left(struct el_key *k, const char *job, const char *id);
void el_key_intent(struct el_key *k, const char *job, int64_t gen, const char *id);
/* Prefixes: "<job>/s/g" (agreement watch), "<job>/s/" (monitor watch), "<job>/s/m/" (members),
 * "<job>/s/gr/" (revokes), "<job>/i/<gen>/" (registrations of gen), "<job>/" (everything). */
void el_key_prefix(struct el_key *k, const char *job, const char *tail);
void el_key_intents(struct el_key *k, const char *job, int64_t gen);

/* Classifies a key of job `job` (relative to the store's prefix). *gen gets the generation of
 * LEAD, REVOKE, BOOT and INTENT keys; *id / *id_len (may be NULL) the member id of MEMBER and
 * INTENT keys (pointing into key). A key of this job with an unexpected shape is EL_KEY_OTHER. */
enum el_key_kind el_key_parse(const char *job, const char *key, size_t len, int64_t *gen,
                              const char **id, size_t *id_len);

/* Checks names: job [A-Za-z0-9_.-]{1,64}; member id: 1..127 bytes of '!'..'~' except '/'. */
bool el_job_valid(const char *job);
bool el_id_valid(const char *id, size_t len);

/* snprintf into a fixed buffer where cutting a long text is fine (no truncation warning). */
void el_textf(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- records ---- */

#define EL_REC_MAGIC      0x4552445AU /* "ERDZ" */
#define EL_REC_VERSION    1
#define EL_REC_FLAG_AUTH  0x100 /* header flag: an authentication trailer follows (el_rec_seal) */
#define EL_REC_AUTH_BYTES 48    /* the trailer: 16-byte random nonce, HMAC-SHA256 */
#define EL_REC_GEN        'G'
#define EL_REC_MEMBER     'M'
#define EL_REC_INTENT     'I'
#define EL_REC_BOOT       'B'
#define EL_REC_REVOKE     'R'
/* Small records (all but the generation record) fit in this many bytes. */
#define EL_REC_SMALL_MAX 768

struct el_member_rec {
    char id[EL_RDZV_MAX_ID + 1];
    int64_t lease;
    int32_t replace_rank;
    int64_t joined_ms; /* wall clock, informational */
};

struct el_intent_rec {
    char id[EL_RDZV_MAX_ID + 1];
    int64_t gen; /* the generation it registers for */
    int64_t step;
    int32_t replace_rank;
};

struct el_boot_rec {
    int64_t gen;
    size_t len;
    unsigned char blob[EL_RDZV_MAX_BOOT];
};

struct el_revoke_rec {
    int64_t gen;
    char by[EL_RDZV_MAX_ID + 1];
    char failed[EL_RDZV_MAX_ID + 1]; /* "" when unknown */
    char why[EL_RDZV_MAX_WHY + 1];
};

/* Encoders write into buf (EL_REC_SMALL_MAX bytes) and return the length. */
size_t el_rec_encode_member(const struct el_member_rec *m, unsigned char *buf);
size_t el_rec_encode_intent(const struct el_intent_rec *in, unsigned char *buf);
size_t el_rec_encode_boot(const struct el_boot_rec *b, unsigned char *buf);
size_t el_rec_encode_revoke(const struct el_revoke_rec *rv, unsigned char *buf);
/* The generation record (gen, step, mode, members); *out is a new buffer (eccl_free). */
ecclResult_t el_rec_encode_gen(const struct el_rdzv_gen *g, unsigned char **out, size_t *len_out);

/* With a job secret: flags the record as authenticated and appends the trailer (nonce, MAC over
 * key and record); buf has cap bytes. A no-op without a secret. */
ecclResult_t el_rec_seal(unsigned char *buf, size_t *len_io, size_t cap, const char *key);
/* Whether a record's authentication is as this process expects (a MAC that verifies with the
 * job secret; none without a secret). False after a WARN that names the key: ignore the record. */
bool el_rec_authentic(const void *v, size_t len, const char *key);

/* Decoders check everything (magic, version, kind, lengths, ranges, names, the checksum, that the
 * bytes are consumed exactly) and fail with ecclRemoteError and a WARN that names `where` (the key)
 * and what is wrong. Outputs are written only on success. */
ecclResult_t el_rec_decode_member(const void *v, size_t len, const char *where,
                                  struct el_member_rec *out);
ecclResult_t el_rec_decode_intent(const void *v, size_t len, const char *where,
                                  struct el_intent_rec *out);
ecclResult_t el_rec_decode_boot(const void *v, size_t len, const char *where,
                                struct el_boot_rec *out);
ecclResult_t el_rec_decode_revoke(const void *v, size_t len, const char *where,
                                  struct el_revoke_rec *out);
/* *out is a new generation (rank -1, mod_rev 0, no boot). */
ecclResult_t el_rec_decode_gen(const void *v, size_t len, const char *where,
                               struct el_rdzv_gen **out);
/* The same, and *idx_out (may be NULL) gets the record's index (el_gen_index) too. */
ecclResult_t el_rec_decode_gen_idx(const void *v, size_t len, const char *where,
                                   struct el_rdzv_gen **out, int **idx_out);

/* A new generation with room for n members of total id bytes `idbytes` (NUL included): members
 * point into one block that gen_free releases. */
struct el_rdzv_gen *el_gen_alloc(int n, size_t idbytes);
ecclResult_t el_gen_dup(const struct el_rdzv_gen *g, struct el_rdzv_gen **out);
/* The rank of `id` in g, or -1 (linear; the handle keeps a map for its own generation). */
int el_gen_find(const struct el_rdzv_gen *g, const char *id);
/* *out gets an index of g's member ids (a hash table of ranks; eccl_free), for el_gen_lookup. */
ecclResult_t el_gen_index(const struct el_rdzv_gen *g, int **out);
/* A copy of an index. */
ecclResult_t el_gen_index_dup(const int *idx, int **out);
/* The rank of `id` in g through its index, or -1. */
int el_gen_lookup(const struct el_rdzv_gen *g, const int *idx, const char *id);

/* ---- a string map (open addressing): member id -> value ---- */

struct el_map_slot {
    char *key; /* owned; NULL: empty */
    bool dead; /* tombstone */
    void *val;
};

struct el_map {
    struct el_map_slot *slots;
    size_t cap;  /* power of two, or 0 */
    size_t n;    /* live keys */
    size_t used; /* live + tombstones */
};

/* Inserts or replaces; *old_out (may be NULL) gets the replaced value (NULL if none). */
ecclResult_t el_map_put(struct el_map *m, const char *key, void *val, void **old_out);
/* The value, or NULL when absent. *found_out (may be NULL) tells a NULL value from absence. */
void *el_map_get(const struct el_map *m, const char *key, bool *found_out);
/* Removes; returns the value (NULL if absent). */
void *el_map_del(struct el_map *m, const char *key);
/* Frees the keys and, with free_val, the values. */
void el_map_fini(struct el_map *m, void (*free_val)(void *));

/* ---- the handle ---- */

/* A proposer lock as a member last saw it. */
struct el_lead {
    bool present;
    bool mine;          /* held by this member (its value and lease) */
    int64_t create_rev; /* when present */
    int64_t seen_rev;   /* lock events at or below this revision are known */
    char id[EL_RDZV_MAX_ID + 1];
};

/* Fills *l from the lock's key as read at revision `rev` (kv NULL: absent). */
void el_lead_from_kv(const struct el_rdzv *r, const struct store_kv *kv, int64_t rev,
                     struct el_lead *l);

/* What the handles of one job on one store handle share (rdzv.c): the last generation record
 * one of them decoded, so that the others, given the same bytes (compared in full), take a copy
 * instead of decoding and indexing the record again. Decoding is a pure function of the bytes:
 * every handle still receives and checks the record itself. */
struct el_rdzv_share {
    struct el_rdzv_share *next; /* in the list of shares, under its lock (rdzv.c) */
    struct store *s;
    char job[EL_RDZV_MAX_JOB + 1];
    int refs; /* handles, under the list's lock */
    pthread_mutex_t lock;
    unsigned char *bytes; /* protected by lock: the record's value, decoded into g and idx */
    size_t len;
    struct el_rdzv_gen *g;
    int *idx;
};

struct el_rdzv {
    struct store *s; /* borrowed */
    struct el_rdzv_share *share;
    char job[EL_RDZV_MAX_JOB + 1];
    char id[EL_RDZV_MAX_ID + 1];
    int min_members, max_members, replace_rank;
    int64_t ttl_s, last_call_ms, join_timeout_ms, replace_wait_ms, boot_timeout_ms;
    el_rdzv_event_fn on_event;
    void *on_event_arg;
    int64_t lease;
    _Atomic uint32_t abort;
    _Atomic uint32_t lease_lost;
    _Atomic int64_t cur_gen; /* copy of my_gen for el_rdzv_current_gen */

    /* API thread only. */
    struct store_watch *watch;
    bool monitor;                  /* the watch covers "<job>/s/" (else "<job>/s/g") */
    struct store_watch *old_watch; /* replaced by the monitor, destroyed at the next call */
    bool left;
    bool came_late;          /* a generation formed without this member: its state is stale */
    int64_t reg_gen;         /* registered for this generation by el_rdzv_join (0: none) */
    struct el_lead reg_lead; /* the proposer lock of reg_gen as the join saw it */
    struct el_rdzv *reg_next, *reg_prev; /* the registry of live handles (rdzv.c), under its lock */
    bool registered;                     /* under the registry's lock */

    pthread_mutex_t lock;
    pthread_cond_t cond; /* broadcast on every change below */
    /* Protected by lock. */
    struct el_rdzv_gen *rec; /* latest valid generation record seen (NULL: none) */
    int *rec_idx;            /* its index */
    int64_t rec_rev;         /* its mod revision (0: none) */
    char rec_err[256];       /* not empty: the record in the store is corrupted or was deleted */
    int64_t my_gen;          /* the generation this member is in (0: none) */
    int my_rank;
    struct el_rdzv_gen *mine; /* my_gen's record (NULL: none) */
    int *mine_idx;            /* its index (el_gen_index) */
    int64_t lead_put_gen;     /* last proposer lock creation seen: its generation and revision */
    int64_t lead_put_rev;
    int64_t lead_del_gen; /* last proposer lock deletion seen: its generation and revision */
    int64_t lead_del_rev;
    bool *lost;              /* per rank of my_gen: its member key went (NULL: none yet) */
    bool *left_clean;        /* per rank of my_gen: it announced a clean leave (EL_KEY_LEFT) */
    int64_t revoked_max;     /* highest generation with a revoke record seen */
    struct el_boot_rec boot; /* latest bootstrap blob seen (boot.gen 0: none) */
    char boot_err[256];      /* not empty: a corrupted blob record of boot_err_gen */
    int64_t boot_err_gen;
    bool watch_failed;
    char watch_err[256];
    int64_t agree_applied_rev;  /* highest revision applied from keys under "<job>/s/g" */
    int64_t skip_agree_rev;     /* events under "<job>/s/g" at or below this were applied already */
    int64_t revoke_emitted_gen; /* EL_RDZV_EV_REVOKED was queued for this generation */
    struct el_rdzv_event *q;    /* poll queue (ring) */
    size_t q_head, q_len, q_cap;
    uint64_t q_dropped;
};

/* Queue capacity: events beyond it are dropped (counted, one WARN). */
#define EL_RDZV_QUEUE_MAX 4096

/* rdzv.c */
/* Takes a generation record read from the store (not through the watch) into the handle's state,
 * if it is newer than what the handle has. Locks r->lock. */
void el_rdzv_note_record(struct el_rdzv *r, const struct store_kv *kv);
/* Makes sure the handle's watch runs (after a watch failure: reads the record again and watches
 * from there); switches it to the monitor form once this member is in a generation. */
ecclResult_t el_rdzv_watch_ensure(struct el_rdzv *r, uint64_t deadline_ns);
/* ecclInvalidUsage (max_members reached) when the job refuses this member: its current generation
 * is full, running (not revoked), and this member replaces nobody who is gone. */
ecclResult_t el_rdzv_admission(struct el_rdzv *r, uint64_t until);
/* Becomes a member of generation g (rank set): my_gen, rank map, the monitor watch. */
ecclResult_t el_rdzv_adopt(struct el_rdzv *r, const struct el_rdzv_gen *g, uint64_t deadline_ns);
/* ecclRemoteError with a WARN when the handle was aborted or its lease lost. */
ecclResult_t el_rdzv_check_alive(struct el_rdzv *r);
/* Waits on r->cond (r->lock held) until `until` or a slice of EL_RDZV_WAIT_SLICE_MS, whichever
 * comes first. */
#define EL_RDZV_WAIT_SLICE_MS 1000
void el_rdzv_cond_wait(struct el_rdzv *r, uint64_t until);

/* Deadline of one store operation inside a longer wait: at most `until`, at most 5 s from now
 * (so that an abort is noticed between retries). */
uint64_t el_rdzv_op_deadline(uint64_t until);
/* Sleeps for the attempt-th backoff step (20 ms doubling to 1 s, full jitter), never past
 * `until`; false when `until` passed or the handle was aborted. */
bool el_rdzv_backoff(struct el_rdzv *r, unsigned attempt, uint64_t until);
/* Whether a store failure may be retried (the store could not be reached, or a write's outcome is
 * unknown): ecclRemoteError, and ecclInternalError before `until`. */
bool el_rdzv_retryable(ecclResult_t res, uint64_t until);

#endif

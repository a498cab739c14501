/*
 * rdzv.h - membership and rendezvous of an elastic job, over the store (store/store.h).
 *
 * A job (a job id) has members (processes, each with a unique member id) and a sequence of
 * generations. A generation is an agreed, numbered member list in rank order, with the job's last
 * committed step and the bootstrap id of that generation's communicator. This layer keeps all of
 * it in the store under the store's URL prefix, in keys that start with "<job>/"
 * (docs/internals/rdzv.md has the key schema, the record encodings and the protocol):
 *
 *   el_rdzv_join      registers a member under a lease that the store's keepalive thread keeps
 *                     alive; a member that dies or is partitioned away leaves by itself when its
 *                     lease expires (ECCL_ELASTIC_LEASE_MS).
 *   el_rdzv_next      agrees the next generation with the others (the first call forms the first
 *                     one) and returns it with this member's rank: one member, the proposer,
 *                     collects the registrations and writes the record by compare-and-swap; the
 *                     others watch the record's key.
 *   el_rdzv_boot_publish / el_rdzv_boot_wait
 *                     the member at rank 0 of a new generation publishes the communicator's
 *                     bootstrap id (an opaque blob), the others wait for it.
 *   el_rdzv_poll      what the watch saw since: the generation revoked, a member lost (its lease
 *                     expired or was revoked), a joiner waiting, this member's own lease lost.
 *   el_rdzv_revoke    writes the revoke record of a generation (whoever sees a failure first).
 *   el_rdzv_evict     revokes a member's lease (a launcher that saw the process die), faster than
 *                     the TTL.
 *   el_rdzv_member_rank, el_rdzv_member_registered, el_rdzv_member_count
 *                     read a job from outside, with no handle (a launcher: the rank a replacement
 *                     asks for, whether a member is still registered, whether any is).
 *   el_rdzv_leave / el_rdzv_destroy
 *
 * Generations: every generation record is written by compare-and-swap on the previous record's
 * mod revision, so one generation number never has two different records, whatever fails during
 * the agreement. Rank order: survivors (members of the previous generation) keep their relative
 * order; a replacement that asks for rank r (replace_rank) takes it when r is free; growth
 * appends. Sizes stay within [min_members, max_members].
 *
 * Errors: ecclInvalidArgument (bad arguments, with a WARN naming them), ecclInvalidUsage (the job
 * refuses: max_members reached, a member id already registered, a call out of turn),
 * ecclInternalError with "timed out" (a deadline passed: a join window where min_members never
 * arrived, a bootstrap id never published), ecclRemoteError (the store could not be reached or
 * failed, a record in the store is corrupted, this member's lease was lost, the call was aborted,
 * this member was left out of a generation). The last-error text (eccl_log_last_error) says
 * exactly what. Every wait has a deadline and stops at once on el_rdzv_abort.
 *
 * Threads: a handle uses the store's keepalive thread and one watch of the store (two for a moment
 * after its first generation, three while it proposes one); it has no thread of its own. el_rdzv_poll and el_rdzv_abort may be called from any thread at any
 * time; the other calls on one handle from one thread at a time. Handles of different members
 * may share one store handle; they then share its connections, its keepalive requests and its
 * watch streams (store.h), and a generation record one of them decoded (the others compare the
 * bytes they received and copy the result).
 */
#ifndef ECCL_ELASTIC_RDZV_H
#define ECCL_ELASTIC_RDZV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"
#include "store/store.h"

#define EL_RDZV_MAX_JOB     64   /* job id: 1..64 of [A-Za-z0-9_.-] */
#define EL_RDZV_MAX_ID      127  /* member id: 1..127 printable ASCII bytes, no '/' or space */
#define EL_RDZV_MAX_BOOT    256  /* bootstrap blob: 1..256 bytes */
#define EL_RDZV_MAX_WHY     200  /* reason text of a revoke record */
#define EL_RDZV_MAX_MEMBERS 4096 /* max_members at most */

struct el_rdzv;

/* How the next generation is chosen from the members of the current one (the survivors) and the
 * members that wait to join (joiners). */
enum el_rdzv_mode {
    /* Proceed with the survivors as soon as every live survivor has registered (or the last-call
     * time passed). Joiners are admitted only to reach min_members. */
    EL_RDZV_SHRINK = 0,
    /* Like shrink, then wait up to replace_wait_ms for joiners to restore the current size
     * (replacements first take the ranks they ask for); proceed with fewer if none came. */
    EL_RDZV_REPLACE = 1,
    /* Admit joiners up to max_members: closes at max, or last_call_ms after the agreement
     * started. */
    EL_RDZV_GROW = 2,
};

/* What el_rdzv_poll reports. */
enum el_rdzv_event_type {
    EL_RDZV_EV_NONE = 0,        /* nothing happened before the deadline */
    EL_RDZV_EV_REVOKED = 1,     /* this member's generation was revoked (gen, by, member, why) */
    EL_RDZV_EV_MEMBER_LOST = 2, /* a member of this generation is gone: lease expired or revoked
                                   (member, rank) */
    EL_RDZV_EV_JOINER = 3,      /* a member that is not in this generation registered (member) */
    EL_RDZV_EV_SUPERSEDED = 4,  /* generation `gen` formed without this member */
    EL_RDZV_EV_LEASE_LOST = 5,  /* this member's own lease is gone: it is out of the job */
    EL_RDZV_EV_ERROR = 6,       /* the watch failed or saw a corrupted record (why) */
    EL_RDZV_EV_MEMBER_LEFT = 7, /* as MEMBER_LOST, for a member that announced a clean leave
                                   (el_rdzv_leave) before its keys went */
};

struct el_rdzv_event {
    enum el_rdzv_event_type type;
    int64_t gen;                     /* the generation it is about (0: none) */
    int64_t rev;                     /* store revision of the change */
    int rank;                        /* MEMBER_LOST: its rank in gen; else -1 */
    char member[EL_RDZV_MAX_ID + 1]; /* MEMBER_LOST, JOINER; REVOKED: the failed member ("") */
    char by[EL_RDZV_MAX_ID + 1];     /* REVOKED: who wrote the revoke record */
    char why[EL_RDZV_MAX_WHY + 1];   /* REVOKED, ERROR, LEASE_LOST */
};

/* Called on the store's watch or keepalive thread for every event, before it is queued for
 * el_rdzv_poll. It must return quickly and must not call el_rdzv functions other than
 * el_rdzv_abort (setting an abort flag of its own is what it is for). */
typedef void (*el_rdzv_event_fn)(void *arg, const struct el_rdzv_event *ev);

struct el_rdzv_config {
    const char *job;       /* required; copied */
    const char *member_id; /* NULL: "<host>:<pid>:<8 hex random>"; copied */
    int min_members;       /* 1 <= min <= max */
    int max_members;       /* <= EL_RDZV_MAX_MEMBERS */
    int replace_rank;      /* -1, or the rank this member asks for (a launcher's replacement) */
    /* Milliseconds. el_rdzv_config_init fills them from the environment. */
    int64_t lease_ms;          /* ECCL_ELASTIC_LEASE_MS; rounded up to whole seconds (store TTLs
                                are seconds; etcd raises anything below 2 s to 2 s) */
    int64_t last_call_ms;      /* ECCL_ELASTIC_LAST_CALL_MS */
    int64_t join_timeout_ms;   /* ECCL_ELASTIC_JOIN_TIMEOUT_MS: bound of one el_rdzv_next */
    int64_t replace_wait_ms;   /* ECCL_ELASTIC_REPLACE_WAIT_MS */
    int64_t boot_timeout_ms;   /* ECCL_ELASTIC_BOOT_TIMEOUT_MS: bound of el_rdzv_boot_wait */
    el_rdzv_event_fn on_event; /* may be NULL */
    void *on_event_arg;
};

/* One generation as agreed. Owned by the caller (el_rdzv_gen_free). */
struct el_rdzv_gen {
    int64_t gen;       /* >= 1 */
    int64_t step;      /* agreed last committed step: the minimum of the steps >= 0 that the
                         survivors of the previous generation reported to el_rdzv_next (that the
                         joiners reported, when no survivor reported one), or -1 when none did */
    int nmembers;      /* in [min_members, max_members] */
    char **members;    /* nmembers member ids, in rank order */
    int rank;          /* this member's rank, or -1 */
    int64_t mod_rev;   /* store revision of the record */
    int64_t as_of_rev; /* the proposer's view of the members was current at this revision: members
                          watch for departures from the revision after it */
    enum el_rdzv_mode mode; /* how it was formed (EL_RDZV_GROW for the first generation) */
    bool has_boot;          /* boot/boot_len are set (el_rdzv_boot_wait, el_rdzv_boot_publish) */
    size_t boot_len;
    unsigned char boot[EL_RDZV_MAX_BOOT];
};

void el_rdzv_gen_free(struct el_rdzv_gen *g);

/* Defaults: job NULL, member_id NULL, min = max = 1, replace_rank -1, timeouts from ECCL_ELASTIC_*
 * variables, no callback. */
void el_rdzv_config_init(struct el_rdzv_config *cfg);

/*
 * Registers this member in the job: grants its lease, keeps it alive from the store's keepalive
 * thread, writes its member record, and starts watching the job. `s` is borrowed and must outlive
 * the handle. Refused with ecclInvalidUsage when the member id is already registered, or when the
 * job is full: its current generation has max_members members, is not revoked, and this member
 * does not replace a member that is gone (the text says max_members was reached). Nothing is left
 * in the store on failure.
 */
ecclResult_t el_rdzv_join(struct store *s, const struct el_rdzv_config *cfg, uint64_t deadline_ns,
                          struct el_rdzv **out);

/*
 * Agrees the next generation and returns it (*out, with this member's rank). The first call of a
 * member of no generation (a new member, a joiner) waits for the first generation, or for the
 * next one that admits it. `committed_step` is this member's last committed step (-1: none).
 * Bounded by the deadline and join_timeout_ms, whichever comes first. Fails with ecclInvalidUsage
 * when a generation formed full (max_members) without this joiner, and ecclRemoteError when it
 * formed without this survivor (it came too late; call again to wait as a joiner). A call that
 * failed (a deadline, an abort, the store away) may be made again: the registration is idempotent.
 * The returned generation has no bootstrap id yet.
 */
ecclResult_t el_rdzv_next(struct el_rdzv *r, enum el_rdzv_mode mode, int64_t committed_step,
                          uint64_t deadline_ns, struct el_rdzv_gen **out);

/* Whether a generation formed without this member since the last call (el_rdzv_next failed
 * because it came too late): its state is then older than the others', and it should join again
 * as a member with no state (committed_step -1), so that the agreed step stays theirs. */
bool el_rdzv_came_late(struct el_rdzv *r);

/* Rank 0 of the current generation publishes its bootstrap id (1..EL_RDZV_MAX_BOOT bytes), by a
 * compare-and-swap guarded by the generation record's mod revision: it fails (ecclInvalidUsage)
 * if another generation replaced it meanwhile or a different blob was already published. Also
 * sets g's boot fields when g is not NULL. */
ecclResult_t el_rdzv_boot_publish(struct el_rdzv *r, struct el_rdzv_gen *g, const void *blob,
                                  size_t len, uint64_t deadline_ns);

/* Waits until the bootstrap id of generation g (this member's current one) is published and
 * copies it into g. Fails with ecclRemoteError when the generation is revoked or replaced first,
 * ecclInternalError ("timed out") at the deadline or after boot_timeout_ms. */
ecclResult_t el_rdzv_boot_wait(struct el_rdzv *r, struct el_rdzv_gen *g, uint64_t deadline_ns);

/* Takes the oldest queued event into *ev, waiting for one until the deadline (ev->type is
 * EL_RDZV_EV_NONE at the deadline: a success). ECCL_NO_DEADLINE is refused; 0 polls once. */
ecclResult_t el_rdzv_poll(struct el_rdzv *r, uint64_t deadline_ns, struct el_rdzv_event *ev);

/* Writes the revoke record of generation `gen` if there is none yet (create-if-absent): who
 * (this member), the failed member if known (NULL or ""), why (NULL or text, cut at
 * EL_RDZV_MAX_WHY). Every member of that generation gets EL_RDZV_EV_REVOKED. An existing record
 * is a success. */
ecclResult_t el_rdzv_revoke(struct el_rdzv *r, int64_t gen, const char *failed_member,
                            const char *why, uint64_t deadline_ns);

/* Revokes the lease of member `member_id` of `job` (its key goes at once, and the members see
 * EL_RDZV_EV_MEMBER_LOST): what a launcher does when it sees the process die. ecclInvalidUsage
 * when the member is not registered (already gone). */
ecclResult_t el_rdzv_evict(struct store *s, const char *job, const char *member_id,
                           uint64_t deadline_ns);

/* Makes every wait of the handle, running or to come, fail at once (ecclRemoteError, "aborted").
 * Any thread; idempotent. */
void el_rdzv_abort(struct el_rdzv *r);

/* Leaves the job cleanly: announces it (a key under the member's lease), then revokes the lease,
 * which deletes its keys in one revision (the others see EL_RDZV_EV_MEMBER_LEFT at once instead
 * of EL_RDZV_EV_MEMBER_LOST after the TTL). The handle can then only be destroyed. */
ecclResult_t el_rdzv_leave(struct el_rdzv *r, uint64_t deadline_ns);

/* Stops the watch and the keepalive of the lease (which then expires unless el_rdzv_leave ran),
 * frees everything. NULL is fine. */
void el_rdzv_destroy(struct el_rdzv *r);

const char *el_rdzv_member_id(const struct el_rdzv *r);
const char *el_rdzv_job(const struct el_rdzv *r);
/* The member's store lease (tests: store_lease_unkeep stops its keepalive). */
int64_t el_rdzv_lease(const struct el_rdzv *r);
/* The generation this member belongs to (0: none yet). */
int64_t el_rdzv_current_gen(const struct el_rdzv *r);

/* ---- a job seen from outside: no handle, no lease, one store read each ---- */

/* Whether `job` is a valid job id: 1..EL_RDZV_MAX_JOB characters of [A-Za-z0-9_.-], not "." or
 * "..". NULL is not. */
bool el_rdzv_job_valid(const char *job);

/* Whether `id` is a valid member id: 1..EL_RDZV_MAX_ID bytes of '!'..'~' except '/'. NULL is
 * not. */
bool el_rdzv_member_id_valid(const char *id);

/* Reads the current generation record of `job` and finds `member_id` in it: *gen_out gets the
 * current generation (0: none yet), *rank_out the member's rank in it (-1: not in it, or no
 * generation yet). What a launcher asks for a dead member's replacement. ecclInvalidArgument for
 * a bad job or member id; the store's error when it fails; ecclRemoteError (a WARN naming the
 * key) when the record is corrupted. The outputs are written only on success. */
ecclResult_t el_rdzv_member_rank(struct store *s, const char *job, const char *member_id,
                                 uint64_t deadline_ns, int64_t *gen_out, int *rank_out);

/* *registered_out gets whether member `member_id` of `job` is registered: its member record is
 * in the store, which holds while its lease lives (not after it left, was evicted, or its lease
 * expired). Errors as el_rdzv_member_rank. */
ecclResult_t el_rdzv_member_registered(struct store *s, const char *job, const char *member_id,
                                       uint64_t deadline_ns, bool *registered_out);

/* *count_out gets the number of registered members of `job`, counting at most `limit` of them
 * (0: all; 1 asks whether there is any). Errors as el_rdzv_member_rank. */
ecclResult_t el_rdzv_member_count(struct store *s, const char *job, size_t limit,
                                  uint64_t deadline_ns, int64_t *count_out);

#endif

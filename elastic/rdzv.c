/*
 * rdzv.c - the rendezvous handle of one member: join (lease, member record, admission), the watch
 * of the job's keys and the events it turns into (revoked, member lost, joiner, superseded, lease
 * lost), poll, revoke, evict, the bootstrap blob of a generation, leave and destroy. The agreement
 * of a generation is in rdzv_agree.c; keys and records in rdzv_codec.c.
 */
#include "elastic/rdzv_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"

ECCL_PARAM_INT(elastic_lease_ms, "ECCL_ELASTIC_LEASE_MS", 2000)
ECCL_PARAM_INT(elastic_last_call_ms, "ECCL_ELASTIC_LAST_CALL_MS", 3000)
ECCL_PARAM_INT(elastic_join_timeout_ms, "ECCL_ELASTIC_JOIN_TIMEOUT_MS", 600000)
ECCL_PARAM_INT(elastic_replace_wait_ms, "ECCL_ELASTIC_REPLACE_WAIT_MS", 30000)
ECCL_PARAM_INT(elastic_boot_timeout_ms, "ECCL_ELASTIC_BOOT_TIMEOUT_MS", 60000)

/* Handles whose lease the store's keepalive thread may report lost. The keepalive thread calls
 * its `lost` callback after letting go of its own lock, so a handle destroyed at that moment
 * could be freed under it: the callback finds its handle here (under the registry lock, which
 * destroy also takes) instead of trusting the pointer. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct el_rdzv *registry;
/* The shares of the live handles (struct el_rdzv_share), under registry_lock. */
static struct el_rdzv_share *shares;

/* ---- small helpers ---- */

uint64_t el_rdzv_op_deadline(uint64_t until)
{
    uint64_t cap = eccl_deadline_ms(5000);
    return until < cap ? until : cap;
}

bool el_rdzv_retryable(ecclResult_t res, uint64_t until)
{
    return res == ecclRemoteError || (res == ecclInternalError && !eccl_deadline_passed(until));
}

bool el_rdzv_backoff(struct el_rdzv *r, unsigned attempt, uint64_t until)
{
    uint64_t cap = 20ULL << (attempt < 6 ? attempt : 6);
    if (cap > 1000)
        cap = 1000;
    uint64_t stop = eccl_now_ns() + (1 + eccl_random64() % cap) * ECCL_NS_PER_MS;
    if (stop > until)
        stop = until;
    while (eccl_now_ns() < stop) {
        if (atomic_load_explicit(&r->abort, memory_order_acquire))
            return false;
        eccl_sleep_us(ECCL_MIN((stop - eccl_now_ns()) / 1000 + 1, 10000));
    }
    return !eccl_deadline_passed(until) && !atomic_load_explicit(&r->abort, memory_order_acquire);
}

ecclResult_t el_rdzv_check_alive(struct el_rdzv *r)
{
    if (atomic_load_explicit(&r->abort, memory_order_acquire)) {
        WARN("rdzv: job %s member %s: aborted", r->job, r->id);
        return ecclRemoteError;
    }
    if (atomic_load_explicit(&r->lease_lost, memory_order_acquire)) {
        WARN("rdzv: job %s member %s: this member's lease was lost (expired or revoked): it is no "
             "longer in the job",
             r->job, r->id);
        return ecclRemoteError;
    }
    return ecclSuccess;
}

void el_rdzv_cond_wait(struct el_rdzv *r, uint64_t until)
{
    /* Everything a waiter looks at is broadcast when it changes (watch events, the lease lost,
     * an abort): the slice is only a safety net. A short one would wake every member of a big
     * job (threads of one process in the benchmark) ten times a second for nothing. */
    uint64_t slice = eccl_now_ns() + EL_RDZV_WAIT_SLICE_MS * ECCL_NS_PER_MS;
    if (until < slice)
        slice = until;
    struct timespec ts = {.tv_sec = (time_t)(slice / ECCL_NS_PER_S),
                          .tv_nsec = (long)(slice % ECCL_NS_PER_S)};
    pthread_cond_timedwait(&r->cond, &r->lock, &ts);
}

/* ---- events ---- */

/* Queues an event for el_rdzv_poll (r->lock held). */
static void queue_event(struct el_rdzv *r, const struct el_rdzv_event *ev)
{
    if (r->q_len == r->q_cap) {
        if (r->q_cap >= EL_RDZV_QUEUE_MAX) {
            if (r->q_dropped++ == 0)
                WARN("rdzv: job %s member %s: more than %d events not polled; dropping events",
                     r->job, r->id, EL_RDZV_QUEUE_MAX);
            return;
        }
        size_t ncap = r->q_cap ? r->q_cap * 2 : 4;
        struct el_rdzv_event *nq = eccl_calloc(ncap, sizeof(*nq), "rdzv_events");
        if (!nq) {
            r->q_dropped++;
            return;
        }
        for (size_t i = 0; i < r->q_len; i++)
            nq[i] = r->q[(r->q_head + i) % r->q_cap];
        eccl_free(r->q);
        r->q = nq;
        r->q_cap = ncap;
        r->q_head = 0;
    }
    r->q[(r->q_head + r->q_len) % r->q_cap] = *ev;
    r->q_len++;
}

static void event_init(struct el_rdzv_event *ev, enum el_rdzv_event_type type, int64_t gen,
                       int64_t rev)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->gen = gen;
    ev->rev = rev;
    ev->rank = -1;
}

static void copy_id(char *dst, const char *src, size_t len)
{
    len = ECCL_MIN(len, (size_t)EL_RDZV_MAX_ID);
    memcpy(dst, src, len);
    dst[len] = 0;
}

/* Decodes a generation record value into *g_out and its index into *idx_out: a copy of what
 * another handle of the share decoded from the same bytes, or a decode (then remembered in the
 * share). Errors as el_rec_decode_gen. */
static ecclResult_t decode_record(struct el_rdzv *r, const void *v, size_t len, const char *where,
                                  struct el_rdzv_gen **g_out, int **idx_out)
{
    struct el_rdzv_share *sh = r->share;
    struct el_rdzv_gen *g = NULL;
    int *idx = NULL;
    if (sh) {
        pthread_mutex_lock(&sh->lock);
        bool same = sh->g && sh->len == len && memcmp(sh->bytes, v, len) == 0;
        ecclResult_t res = ecclSuccess;
        if (same) {
            res = el_gen_dup(sh->g, &g);
            if (res == ecclSuccess && (res = el_gen_index_dup(sh->idx, &idx)) != ecclSuccess)
                el_rdzv_gen_free(g);
        }
        pthread_mutex_unlock(&sh->lock);
        ECCL_TRY(res);
        if (same) {
            *g_out = g;
            *idx_out = idx;
            return ecclSuccess;
        }
    }
    ECCL_TRY(el_rec_decode_gen_idx(v, len, where, &g, &idx));
    if (sh) {
        /* Remember it for the others (best effort: out of memory only costs them a decode). */
        unsigned char *b = eccl_calloc(len + 1, 1, "rdzv_share");
        struct el_rdzv_gen *sg = NULL;
        int *sidx = NULL;
        if (b && el_gen_dup(g, &sg) == ecclSuccess && el_gen_index_dup(idx, &sidx) == ecclSuccess) {
            memcpy(b, v, len);
            pthread_mutex_lock(&sh->lock);
            unsigned char *ob = sh->bytes;
            struct el_rdzv_gen *og = sh->g;
            int *oidx = sh->idx;
            sh->bytes = b;
            sh->len = len;
            sh->g = sg;
            sh->idx = sidx;
            pthread_mutex_unlock(&sh->lock);
            b = ob;
            sg = og;
            sidx = oidx;
        }
        eccl_free(b);
        el_rdzv_gen_free(sg);
        eccl_free(sidx);
    }
    *g_out = g;
    *idx_out = idx;
    return ecclSuccess;
}

/* Takes a generation record (PUT) or its deletion into the state (r->lock held). Returns whether
 * *ev was filled with an event for the user. */
static bool apply_record(struct el_rdzv *r, const struct store_event *e, struct el_rdzv_event *ev)
{
    if (e->kv.mod_rev <= r->rec_rev)
        return false;
    if (e->type == STORE_EVENT_DELETE) {
        el_textf(r->rec_err, sizeof(r->rec_err),
                 "the generation record of job %s was deleted (at revision %" PRId64 ")", r->job,
                 e->kv.mod_rev);
        r->rec_rev = e->kv.mod_rev;
        event_init(ev, EL_RDZV_EV_ERROR, r->my_gen, e->kv.mod_rev);
        el_textf(ev->why, sizeof(ev->why), "%s", r->rec_err);
        return true;
    }
    struct el_key k;
    el_key_record(&k, r->job);
    /* With a job secret a record that does not verify is ignored (and logged), not an error:
     * a process without the secret cannot stop the job by writing one. */
    if (!el_rec_authentic(e->kv.value, e->kv.value_len, k.s))
        return false;
    struct el_rdzv_gen *g = NULL;
    int *idx = NULL;
    if (decode_record(r, e->kv.value, e->kv.value_len, k.s, &g, &idx) != ecclSuccess) {
        el_textf(r->rec_err, sizeof(r->rec_err), "%s", eccl_log_last_error());
        r->rec_rev = e->kv.mod_rev;
        event_init(ev, EL_RDZV_EV_ERROR, r->my_gen, e->kv.mod_rev);
        el_textf(ev->why, sizeof(ev->why), "%s", r->rec_err);
        return true;
    }
    g->mod_rev = e->kv.mod_rev;
    el_rdzv_gen_free(r->rec);
    eccl_free(r->rec_idx);
    r->rec = g;
    r->rec_idx = idx;
    r->rec_rev = e->kv.mod_rev;
    r->rec_err[0] = 0;
    if (r->my_gen > 0 && g->gen > r->my_gen && el_gen_lookup(g, idx, r->id) < 0) {
        event_init(ev, EL_RDZV_EV_SUPERSEDED, g->gen, e->kv.mod_rev);
        el_textf(ev->why, sizeof(ev->why), "generation %" PRId64 " formed without this member",
                 g->gen);
        return true;
    }
    return false;
}

/* Applies one watched event to the state (r->lock held); *ev gets a user event when it returns
 * true. */
static bool apply_event(struct el_rdzv *r, const struct store_event *e, struct el_rdzv_event *ev)
{
    int64_t gen = 0;
    const char *id = NULL;
    size_t id_len = 0;
    enum el_key_kind kind = el_key_parse(r->job, e->kv.key, e->kv.key_len, &gen, &id, &id_len);
    int64_t rev = e->kv.mod_rev;
    if (kind == EL_KEY_RECORD || kind == EL_KEY_LEAD || kind == EL_KEY_REVOKE ||
        kind == EL_KEY_BOOT) {
        /* Applied already by the watch this one replaced. */
        if (rev <= r->skip_agree_rev)
            return false;
        if (rev > r->agree_applied_rev)
            r->agree_applied_rev = rev;
    }
    char where[EL_KEY_MAX];
    el_textf(where, sizeof(where), "%.*s", (int)ECCL_MIN(e->kv.key_len, sizeof(where) - 1),
             e->kv.key);
    switch (kind) {
    case EL_KEY_RECORD:
        return apply_record(r, e, ev);
    case EL_KEY_LEAD:
        if (e->type == STORE_EVENT_DELETE && rev > r->lead_del_rev) {
            r->lead_del_gen = gen;
            r->lead_del_rev = rev;
        } else if (e->type == STORE_EVENT_PUT && rev > r->lead_put_rev) {
            r->lead_put_gen = gen;
            r->lead_put_rev = rev;
        }
        return false;
    case EL_KEY_REVOKE: {
        /* A revoke record that does not verify (job secret) is ignored, not obeyed. */
        if (e->type != STORE_EVENT_PUT || !el_rec_authentic(e->kv.value, e->kv.value_len, where))
            return false;
        if (gen > r->revoked_max)
            r->revoked_max = gen;
        if (gen != r->my_gen || gen <= r->revoke_emitted_gen)
            return false;
        r->revoke_emitted_gen = gen;
        event_init(ev, EL_RDZV_EV_REVOKED, gen, rev);
        struct el_revoke_rec rv;
        if (el_rec_decode_revoke(e->kv.value, e->kv.value_len, where, &rv) == ecclSuccess) {
            el_textf(ev->by, sizeof(ev->by), "%s", rv.by);
            el_textf(ev->member, sizeof(ev->member), "%s", rv.failed);
            el_textf(ev->why, sizeof(ev->why), "%s", rv.why);
        } else {
            /* The generation is revoked all the same: the key exists. */
            el_textf(ev->why, sizeof(ev->why), "unreadable revoke record: %s",
                     eccl_log_last_error());
        }
        return true;
    }
    case EL_KEY_BOOT: {
        if (e->type != STORE_EVENT_PUT || gen < r->boot.gen ||
            !el_rec_authentic(e->kv.value, e->kv.value_len, where))
            return false;
        struct el_boot_rec b;
        if (el_rec_decode_boot(e->kv.value, e->kv.value_len, where, &b) != ecclSuccess) {
            el_textf(r->boot_err, sizeof(r->boot_err), "%s", eccl_log_last_error());
            r->boot_err_gen = gen;
        } else if (b.gen != gen) {
            el_textf(r->boot_err, sizeof(r->boot_err),
                     "rdzv: corrupted bootstrap record at key '%s': it is for generation %" PRId64,
                     where, b.gen);
            r->boot_err_gen = gen;
        } else {
            r->boot = b;
        }
        return false;
    }
    case EL_KEY_MEMBER: {
        char mid[EL_RDZV_MAX_ID + 1];
        copy_id(mid, id, id_len);
        if (strcmp(mid, r->id) == 0)
            return false;
        if (!r->mine)
            return false;
        int rank = el_gen_lookup(r->mine, r->mine_idx, mid);
        if (e->type == STORE_EVENT_DELETE && rank >= 0) {
            bool left = r->left_clean[rank];
            event_init(ev, left ? EL_RDZV_EV_MEMBER_LEFT : EL_RDZV_EV_MEMBER_LOST, r->mine->gen,
                       rev);
            ev->rank = rank;
            r->lost[rank] = true;
            el_textf(ev->member, sizeof(ev->member), "%s", mid);
            el_textf(ev->why, sizeof(ev->why), "%s",
                     left ? "it left the job cleanly" : "its lease expired or was revoked");
            return true;
        }
        if (e->type == STORE_EVENT_PUT && rank < 0) {
            event_init(ev, EL_RDZV_EV_JOINER, r->mine->gen, rev);
            el_textf(ev->member, sizeof(ev->member), "%s", mid);
            return true;
        }
        return false;
    }
    case EL_KEY_LEFT: {
        /* Announced in the same stream before its member key goes (same lease, later revision). */
        char mid[EL_RDZV_MAX_ID + 1];
        copy_id(mid, id, id_len);
        if (e->type != STORE_EVENT_PUT || !r->mine || strcmp(mid, r->id) == 0 ||
            !el_rec_authentic(e->kv.value, e->kv.value_len, where))
            return false;
        struct el_member_rec m;
        int rank = el_gen_lookup(r->mine, r->mine_idx, mid);
        if (rank >= 0 &&
            el_rec_decode_member(e->kv.value, e->kv.value_len, where, &m) == ecclSuccess &&
            strcmp(m.id, mid) == 0)
            r->left_clean[rank] = true;
        return false;
    }
    default:
        return false;
    }
}

static void deliver(struct el_rdzv *r, const struct el_rdzv_event *ev)
{
    if (r->on_event)
        r->on_event(r->on_event_arg, ev);
}

/* The store's watch callback (the watch's thread). */
static void on_watch(void *arg, const struct store_event *events, size_t n, ecclResult_t status)
{
    struct el_rdzv *r = arg;
    if (status != ecclSuccess) {
        struct el_rdzv_event ev;
        pthread_mutex_lock(&r->lock);
        r->watch_failed = true;
        el_textf(r->watch_err, sizeof(r->watch_err),
                 "the watch of job %s ended (result %d: the store compacted the revisions it "
                 "needed or lost its state)%s%s",
                 r->job, (int)status, eccl_log_last_error()[0] ? ": " : "", eccl_log_last_error());
        event_init(&ev, EL_RDZV_EV_ERROR, r->my_gen, 0);
        el_textf(ev.why, sizeof(ev.why), "%s", r->watch_err);
        queue_event(r, &ev);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        deliver(r, &ev);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct el_rdzv_event ev;
        pthread_mutex_lock(&r->lock);
        bool have = apply_event(r, &events[i], &ev);
        if (have)
            queue_event(r, &ev);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        if (have)
            deliver(r, &ev);
    }
}

/* The store's keepalive thread found this member's lease gone. */
static void on_lease_lost(void *arg, int64_t lease)
{
    pthread_mutex_lock(&registry_lock);
    struct el_rdzv *r = registry;
    while (r && r != arg)
        r = r->reg_next;
    if (r && r->lease == lease) {
        atomic_store_explicit(&r->lease_lost, 1, memory_order_release);
        struct el_rdzv_event ev;
        event_init(&ev, EL_RDZV_EV_LEASE_LOST, r->my_gen, 0);
        el_textf(ev.why, sizeof(ev.why),
                 "the lease of member %s expired or was revoked (or could not be refreshed in "
                 "time): it is out of job %s",
                 r->id, r->job);
        pthread_mutex_lock(&r->lock);
        queue_event(r, &ev);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        deliver(r, &ev);
    }
    pthread_mutex_unlock(&registry_lock);
}

void el_rdzv_note_record(struct el_rdzv *r, const struct store_kv *kv)
{
    if (!kv)
        return;
    struct store_event e = {.type = STORE_EVENT_PUT, .kv = *kv};
    struct el_rdzv_event ev;
    pthread_mutex_lock(&r->lock);
    bool have = apply_record(r, &e, &ev);
    if (have)
        queue_event(r, &ev);
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (have)
        deliver(r, &ev);
}

void el_lead_from_kv(const struct el_rdzv *r, const struct store_kv *kv, int64_t rev,
                     struct el_lead *l)
{
    memset(l, 0, sizeof(*l));
    l->seen_rev = rev;
    if (!kv)
        return;
    l->present = true;
    l->create_rev = kv->create_rev;
    l->mine = kv->lease == r->lease && kv->value_len == strlen(r->id) &&
              memcmp(kv->value, r->id, kv->value_len) == 0;
    size_t n = ECCL_MIN(kv->value_len, (size_t)EL_RDZV_MAX_ID);
    memcpy(l->id, kv->value, n);
    l->id[n] = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)l->id[i] < 0x20 || (unsigned char)l->id[i] > 0x7e)
            l->id[i] = '?';
}

/* ---- the watch ---- */

/* Starts the handle's watch: the monitor form ("<job>/s/": records and members) or the agreement
 * form ("<job>/s/g": records, locks, revokes, blobs), from revision `start`. Retries store
 * failures until `until`. */
static ecclResult_t watch_start(struct el_rdzv *r, bool monitor, int64_t start, uint64_t until)
{
    struct el_key k;
    el_key_prefix(&k, r->job, monitor ? "s/" : "s/g");
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY(el_rdzv_check_alive(r));
        struct store_watch *w = NULL;
        res = store_watch_create(r->s, k.s, k.len, true, start, on_watch, r,
                                 el_rdzv_op_deadline(until), &w);
        if (res == ecclSuccess) {
            r->watch = w;
            r->monitor = monitor;
            return ecclSuccess;
        }
        if (!el_rdzv_retryable(res, until) || !el_rdzv_backoff(r, attempt, until))
            return res;
    }
}

/* Destroys the watch the monitor replaced (it may block for a moment: done at the next call). */
static void retire_old_watch(struct el_rdzv *r)
{
    store_watch_destroy(r->old_watch);
    r->old_watch = NULL;
}

static void watch_stop(struct el_rdzv *r)
{
    retire_old_watch(r);
    if (!r->watch)
        return;
    store_watch_destroy(r->watch);
    r->watch = NULL;
    /* No callback runs any more: what it applied under "<job>/s/g" is final. */
    pthread_mutex_lock(&r->lock);
    r->skip_agree_rev = r->agree_applied_rev;
    r->watch_failed = false;
    pthread_mutex_unlock(&r->lock);
}

ecclResult_t el_rdzv_watch_ensure(struct el_rdzv *r, uint64_t deadline_ns)
{
    pthread_mutex_lock(&r->lock);
    bool failed = r->watch_failed;
    bool member = r->my_gen > 0;
    pthread_mutex_unlock(&r->lock);
    if (r->watch && !failed) {
        retire_old_watch(r);
        return ecclSuccess;
    }
    if (failed)
        INFO(ECCL_LOG_ELASTIC, "rdzv: job %s member %s: restarting the watch of the job", r->job,
             r->id);
    watch_stop(r);
    /* Read the record again, then watch from there: nothing after the read is missed. */
    struct el_key k;
    el_key_record(&k, r->job);
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY(el_rdzv_check_alive(r));
        struct store_kv *kv = NULL;
        int64_t rev = 0;
        res = store_get(r->s, k.s, k.len, el_rdzv_op_deadline(deadline_ns), &kv, &rev);
        if (res == ecclSuccess) {
            el_rdzv_note_record(r, kv);
            store_kv_free(kv);
            pthread_mutex_lock(&r->lock);
            r->skip_agree_rev = 0;
            pthread_mutex_unlock(&r->lock);
            return watch_start(r, member, rev + 1, deadline_ns);
        }
        if (!el_rdzv_retryable(res, deadline_ns) || !el_rdzv_backoff(r, attempt, deadline_ns))
            return res;
    }
}

ecclResult_t el_rdzv_adopt(struct el_rdzv *r, const struct el_rdzv_gen *g, uint64_t deadline_ns)
{
    ecclResult_t res = ecclSuccess;
    struct el_rdzv_gen *mine = NULL;
    int *idx = NULL;
    bool *lost = NULL, *left = NULL;
    ECCL_TRY_GOTO(el_gen_dup(g, &mine), res, out);
    /* g is the record the handle holds (a copy of it): its index is built already. */
    pthread_mutex_lock(&r->lock);
    if (r->rec && r->rec_idx && r->rec->mod_rev == g->mod_rev && r->rec->gen == g->gen &&
        r->rec->nmembers == g->nmembers)
        res = el_gen_index_dup(r->rec_idx, &idx);
    pthread_mutex_unlock(&r->lock);
    ECCL_TRY_GOTO(res, res, out);
    if (!idx)
        ECCL_TRY_GOTO(el_gen_index(mine, &idx), res, out);
    ECCL_CALLOC_GOTO(lost, (size_t)g->nmembers + 1, "rdzv_lost", res, out);
    ECCL_CALLOC_GOTO(left, (size_t)g->nmembers + 1, "rdzv_left", res, out);
    /* The members first, then the watch that reports their departures. */
    pthread_mutex_lock(&r->lock);
    el_rdzv_gen_free(r->mine);
    eccl_free(r->mine_idx);
    eccl_free(r->lost);
    eccl_free(r->left_clean);
    r->mine = mine;
    r->mine_idx = idx;
    r->lost = lost;
    r->left_clean = left;
    mine = NULL;
    idx = NULL;
    lost = NULL;
    left = NULL;
    pthread_mutex_unlock(&r->lock);
    if (!r->monitor || !r->watch) {
        /* Watch the members from the revision at which the proposer last saw them, so that a
         * member that left between its registration and the record is reported. The watch it
         * replaces goes at the next call (destroying it may take a moment). */
        struct store_watch *prev = r->watch;
        bool prev_monitor = r->monitor;
        r->watch = NULL;
        res = watch_start(r, true, g->as_of_rev + 1, deadline_ns);
        if (res != ecclSuccess) {
            r->watch = prev;
            r->monitor = prev_monitor;
            goto out;
        }
        retire_old_watch(r);
        r->old_watch = prev;
    }
    pthread_mutex_lock(&r->lock);
    r->my_gen = g->gen;
    r->my_rank = g->rank;
    atomic_store_explicit(&r->cur_gen, g->gen, memory_order_release);
    pthread_mutex_unlock(&r->lock);
out:
    el_rdzv_gen_free(mine);
    eccl_free(idx);
    eccl_free(lost);
    eccl_free(left);
    return res;
}

/* ---- join ---- */

void el_rdzv_config_init(struct el_rdzv_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->min_members = 1;
    cfg->max_members = 1;
    cfg->replace_rank = -1;
    cfg->lease_ms = eccl_param_elastic_lease_ms();
    cfg->last_call_ms = eccl_param_elastic_last_call_ms();
    cfg->join_timeout_ms = eccl_param_elastic_join_timeout_ms();
    cfg->replace_wait_ms = eccl_param_elastic_replace_wait_ms();
    cfg->boot_timeout_ms = eccl_param_elastic_boot_timeout_ms();
}

static ecclResult_t check_config(const struct el_rdzv_config *c)
{
    ECCL_ARG_CHECK(el_job_valid(c->job),
                   "el_rdzv_join: job id '%s' is not 1..%d characters of [A-Za-z0-9_.-]",
                   c->job ? c->job : "(null)", EL_RDZV_MAX_JOB);
    ECCL_ARG_CHECK(!c->member_id || el_id_valid(c->member_id, strlen(c->member_id)),
                   "el_rdzv_join: member id '%s' is not 1..%d printable characters without '/'",
                   c->member_id, EL_RDZV_MAX_ID);
    ECCL_ARG_CHECK(c->min_members >= 1 && c->min_members <= c->max_members &&
                       c->max_members <= EL_RDZV_MAX_MEMBERS,
                   "el_rdzv_join: need 1 <= min_members (%d) <= max_members (%d) <= %d",
                   c->min_members, c->max_members, EL_RDZV_MAX_MEMBERS);
    ECCL_ARG_CHECK(c->replace_rank >= -1 && c->replace_rank < c->max_members,
                   "el_rdzv_join: replace_rank %d is not -1 or below max_members (%d)",
                   c->replace_rank, c->max_members);
    ECCL_ARG_CHECK(c->lease_ms > 0 && c->lease_ms <= 3600000,
                   "el_rdzv_join: lease_ms %lld is not in 1..3600000 (ECCL_ELASTIC_LEASE_MS)",
                   (long long)c->lease_ms);
    ECCL_ARG_CHECK(c->last_call_ms >= 0,
                   "el_rdzv_join: last_call_ms %lld is negative (ECCL_ELASTIC_LAST_CALL_MS)",
                   (long long)c->last_call_ms);
    ECCL_ARG_CHECK(c->join_timeout_ms > 0,
                   "el_rdzv_join: join_timeout_ms %lld is not positive "
                   "(ECCL_ELASTIC_JOIN_TIMEOUT_MS)",
                   (long long)c->join_timeout_ms);
    ECCL_ARG_CHECK(c->replace_wait_ms >= 0,
                   "el_rdzv_join: replace_wait_ms %lld is negative (ECCL_ELASTIC_REPLACE_WAIT_MS)",
                   (long long)c->replace_wait_ms);
    ECCL_ARG_CHECK(c->boot_timeout_ms > 0,
                   "el_rdzv_join: boot_timeout_ms %lld is not positive "
                   "(ECCL_ELASTIC_BOOT_TIMEOUT_MS)",
                   (long long)c->boot_timeout_ms);
    return ecclSuccess;
}

static ecclResult_t handle_create(struct store *s, const struct el_rdzv_config *c,
                                  struct el_rdzv **out)
{
    struct el_rdzv *r = eccl_calloc(1, sizeof(*r), "rdzv");
    if (!r)
        return ecclSystemError;
    r->s = s;
    el_textf(r->job, sizeof(r->job), "%s", c->job);
    if (c->member_id)
        el_textf(r->id, sizeof(r->id), "%s", c->member_id);
    else
        el_textf(r->id, sizeof(r->id), "%.64s:%d:%08x", eccl_hostname(), (int)getpid(),
                 (unsigned)(eccl_random64() & 0xffffffffu));
    if (!el_id_valid(r->id, strlen(r->id))) /* a host name with odd characters */
        el_textf(r->id, sizeof(r->id), "host%016llx:%d:%08x", (unsigned long long)eccl_host_hash(),
                 (int)getpid(), (unsigned)(eccl_random64() & 0xffffffffu));
    r->min_members = c->min_members;
    r->max_members = c->max_members;
    r->replace_rank = c->replace_rank;
    /* Store leases are whole seconds. */
    r->ttl_s = (c->lease_ms + 999) / 1000;
    r->last_call_ms = c->last_call_ms;
    r->join_timeout_ms = c->join_timeout_ms;
    r->replace_wait_ms = c->replace_wait_ms;
    r->boot_timeout_ms = c->boot_timeout_ms;
    r->on_event = c->on_event;
    r->on_event_arg = c->on_event_arg;
    r->my_rank = -1;
    atomic_init(&r->abort, 0);
    atomic_init(&r->lease_lost, 0);
    atomic_init(&r->cur_gen, 0);
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = r;
    return ecclSuccess;
}

static void share_put_locked(struct el_rdzv *r);

/* After the watches stopped: no callback uses the share any more. */
static void handle_free(struct el_rdzv *r)
{
    pthread_mutex_lock(&registry_lock);
    share_put_locked(r);
    pthread_mutex_unlock(&registry_lock);
    el_rdzv_gen_free(r->rec);
    eccl_free(r->rec_idx);
    el_rdzv_gen_free(r->mine);
    eccl_free(r->mine_idx);
    eccl_free(r->lost);
    eccl_free(r->left_clean);
    eccl_free(r->q);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    eccl_free(r);
}

/* Joins the share of r's job and store (a new one if none), under registry_lock. Without memory
 * for one the handle goes without (it decodes every record itself). */
static void share_get_locked(struct el_rdzv *r)
{
    struct el_rdzv_share *sh = shares;
    while (sh && (sh->s != r->s || strcmp(sh->job, r->job) != 0))
        sh = sh->next;
    if (!sh) {
        sh = eccl_calloc(1, sizeof(*sh), "rdzv_share");
        if (!sh)
            return;
        sh->s = r->s;
        el_textf(sh->job, sizeof(sh->job), "%s", r->job);
        pthread_mutex_init(&sh->lock, NULL);
        sh->next = shares;
        shares = sh;
    }
    sh->refs++;
    r->share = sh;
}

static void share_put_locked(struct el_rdzv *r)
{
    struct el_rdzv_share *sh = r->share;
    r->share = NULL;
    if (!sh || --sh->refs > 0)
        return;
    for (struct el_rdzv_share **p = &shares; *p; p = &(*p)->next) {
        if (*p == sh) {
            *p = sh->next;
            break;
        }
    }
    eccl_free(sh->bytes);
    el_rdzv_gen_free(sh->g);
    eccl_free(sh->idx);
    pthread_mutex_destroy(&sh->lock);
    eccl_free(sh);
}

static void registry_add(struct el_rdzv *r)
{
    pthread_mutex_lock(&registry_lock);
    share_get_locked(r);
    r->reg_next = registry;
    r->reg_prev = NULL;
    if (registry)
        registry->reg_prev = r;
    registry = r;
    r->registered = true;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(struct el_rdzv *r)
{
    pthread_mutex_lock(&registry_lock);
    if (r->registered) {
        if (r->reg_prev)
            r->reg_prev->reg_next = r->reg_next;
        else
            registry = r->reg_next;
        if (r->reg_next)
            r->reg_next->reg_prev = r->reg_prev;
        r->registered = false;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Grants the lease, retrying store failures (a grant whose answer was lost leaves a lease that
 * expires by itself). */
static ecclResult_t lease_grant(struct el_rdzv *r, uint64_t until)
{
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        res = store_lease_grant(r->s, r->ttl_s, el_rdzv_op_deadline(until), &r->lease);
        if (res == ecclSuccess || !el_rdzv_retryable(res, until) ||
            !el_rdzv_backoff(r, attempt, until))
            return res;
    }
}

/* Revokes this member's lease (its keys go with it). A lease that is gone already is fine. */
static ecclResult_t lease_revoke(struct el_rdzv *r, uint64_t until)
{
    store_lease_unkeep(r->s, r->lease);
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        res = store_lease_revoke(r->s, r->lease, el_rdzv_op_deadline(until));
        if (res == ecclInvalidUsage) /* "requested lease not found": expired, or revoked by an
                                        earlier attempt whose answer was lost */
            return ecclSuccess;
        if (res == ecclSuccess || !el_rdzv_retryable(res, until) ||
            !el_rdzv_backoff(r, attempt, until))
            return res;
    }
}

/* This member's record: the value of its member key, and of its leave announcement. */
static void member_rec(const struct el_rdzv *r, struct el_member_rec *m)
{
    *m = (struct el_member_rec){.lease = r->lease,
                                .replace_rank = r->replace_rank,
                                .joined_ms = (int64_t)(eccl_wall_ns() / ECCL_NS_PER_MS)};
    el_textf(m->id, sizeof(m->id), "%s", r->id);
}

/* Writes the member record (create-if-absent) and reads the generation record and the revoke
 * records in the same transaction. When the job has no generation yet, the same transaction also
 * registers the member for the first one (one write instead of two, at the busiest moment) and
 * reads the first generation's proposer lock into r->reg_gen / r->reg_lead. */
static ecclResult_t join_txn(struct el_rdzv *r, uint64_t until, struct store_txn_result *out)
{
    struct el_key km, kg, kr, ki, kl;
    el_key_member(&km, r->job, r->id);
    el_key_record(&kg, r->job);
    el_key_prefix(&kr, r->job, "s/gr/");
    el_key_intent(&ki, r->job, 1, r->id);
    el_key_lead(&kl, r->job, 1);
    struct el_member_rec m;
    member_rec(r, &m);
    unsigned char buf[EL_REC_SMALL_MAX], ibuf[EL_REC_SMALL_MAX];
    size_t len = el_rec_encode_member(&m, buf);
    struct el_intent_rec in = {.gen = 1, .step = -1, .replace_rank = r->replace_rank};
    el_textf(in.id, sizeof(in.id), "%s", r->id);
    size_t ilen = el_rec_encode_intent(&in, ibuf);
    ECCL_TRY(el_rec_seal(buf, &len, sizeof(buf), km.s));
    ECCL_TRY(el_rec_seal(ibuf, &ilen, sizeof(ibuf), ki.s));
    struct store_cmp cmps[2] = {
        {.key = km.s,
         .key_len = km.len,
         .target = STORE_CMP_CREATE,
         .result = STORE_CMP_EQUAL,
         .number = 0},
        {.key = kg.s,
         .key_len = kg.len,
         .target = STORE_CMP_CREATE,
         .result = STORE_CMP_EQUAL,
         .number = 0},
    };
    /* First form: no record yet, so register for generation 1 too. Second form (a record
     * exists): the member record, and read the record and the revokes. */
    struct store_op first_ops[3] = {
        {.type = STORE_OP_PUT,
         .key = km.s,
         .key_len = km.len,
         .value = buf,
         .value_len = len,
         .lease = r->lease},
        {.type = STORE_OP_PUT,
         .key = ki.s,
         .key_len = ki.len,
         .value = ibuf,
         .value_len = ilen,
         .lease = r->lease},
        {.type = STORE_OP_GET, .key = kl.s, .key_len = kl.len},
    };
    struct store_op then_ops[3] = {
        first_ops[0],
        {.type = STORE_OP_GET, .key = kg.s, .key_len = kg.len},
        {.type = STORE_OP_GET, .key = kr.s, .key_len = kr.len, .prefix = true},
    };
    struct store_op else_ops[3] = {
        {.type = STORE_OP_GET, .key = km.s, .key_len = km.len},
        {.type = STORE_OP_GET, .key = kg.s, .key_len = kg.len},
        {.type = STORE_OP_GET, .key = kr.s, .key_len = kr.len, .prefix = true},
    };
    bool first_form = true;
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY(el_rdzv_check_alive(r));
        res = store_txn(r->s, cmps, first_form ? 2 : 1, first_form ? first_ops : then_ops, 3,
                        else_ops, 3, el_rdzv_op_deadline(until), out);
        if (res != ecclSuccess) {
            if (!el_rdzv_retryable(res, until) || !el_rdzv_backoff(r, attempt, until))
                return res;
            continue;
        }
        if (out->succeeded) {
            if (first_form) {
                r->reg_gen = 1;
                el_lead_from_kv(r, out->count > 0 ? &out->kvs[0] : NULL, out->revision,
                                &r->reg_lead);
                /* Nothing else was read: there is no record and no revoke yet. */
                int64_t rev = out->revision;
                store_txn_result_fini(out);
                out->revision = rev;
            }
            return ecclSuccess;
        }
        const struct store_kv *mine = NULL;
        for (size_t i = 0; i < out->count; i++)
            if (out->kvs[i].key_len == km.len && memcmp(out->kvs[i].key, km.s, km.len) == 0)
                mine = &out->kvs[i];
        if (!mine && first_form) {
            /* A record exists: join without registering. */
            store_txn_result_fini(out);
            first_form = false;
            attempt = 0;
            continue;
        }
        /* The key exists: ours (an earlier attempt whose answer was lost; whether it registered
         * is unknown, so el_rdzv_next registers again) or another member's. */
        if (mine && mine->lease == r->lease)
            return ecclSuccess;
        store_txn_result_fini(out);
        WARN("rdzv: job %s: member id '%s' is already registered (another live process uses it)",
             r->job, r->id);
        return ecclInvalidUsage;
    }
}

ecclResult_t el_rdzv_admission(struct el_rdzv *r, uint64_t until)
{
    pthread_mutex_lock(&r->lock);
    bool full = r->rec && r->rec->nmembers >= r->max_members && el_gen_find(r->rec, r->id) < 0 &&
                r->revoked_max < r->rec->gen;
    int64_t gen = r->rec ? r->rec->gen : 0;
    int n = r->rec ? r->rec->nmembers : 0;
    char replaced[EL_RDZV_MAX_ID + 1] = "";
    if (full && r->replace_rank >= 0 && r->replace_rank < n)
        el_textf(replaced, sizeof(replaced), "%s", r->rec->members[r->replace_rank]);
    pthread_mutex_unlock(&r->lock);
    if (!full)
        return ecclSuccess;
    if (replaced[0]) {
        struct el_key k;
        el_key_member(&k, r->job, replaced);
        struct store_kv *kv = NULL;
        ecclResult_t res;
        for (unsigned attempt = 0;; attempt++) {
            res = store_get(r->s, k.s, k.len, el_rdzv_op_deadline(until), &kv, NULL);
            if (res == ecclSuccess || !el_rdzv_retryable(res, until) ||
                !el_rdzv_backoff(r, attempt, until))
                break;
        }
        ECCL_TRY(res);
        bool gone = kv == NULL;
        store_kv_free(kv);
        if (gone)
            return ecclSuccess;
    }
    WARN("rdzv: job %s: max_members (%d) reached: generation %" PRId64 " has %d members and is "
         "running; member %s is refused%s",
         r->job, r->max_members, gen, n, r->id,
         replaced[0] ? " (the member it would replace is still alive)" : "");
    return ecclInvalidUsage;
}

ecclResult_t el_rdzv_join(struct store *s, const struct el_rdzv_config *cfg, uint64_t deadline_ns,
                          struct el_rdzv **out)
{
    ECCL_ARG_CHECK(s, "el_rdzv_join: store is NULL");
    ECCL_ARG_CHECK(cfg, "el_rdzv_join: cfg is NULL");
    ECCL_ARG_CHECK(out, "el_rdzv_join: out is NULL");
    ECCL_TRY(check_config(cfg));
    ecclResult_t res = ecclSuccess;
    char text[512];
    struct el_rdzv *r;
    ECCL_TRY(handle_create(s, cfg, &r));
    ECCL_TRY_GOTO(lease_grant(r, deadline_ns), res, err_free_handle);
    registry_add(r);
    ECCL_TRY_GOTO(store_lease_keep(s, r->lease, r->ttl_s, on_lease_lost, r), res, err_revoke_lease);

    struct store_txn_result tr = {0};
    ECCL_TRY_GOTO(join_txn(r, deadline_ns, &tr), res, err_revoke_lease);
    for (size_t i = 0; i < tr.count; i++) {
        int64_t gen = 0;
        enum el_key_kind kind =
            el_key_parse(r->job, tr.kvs[i].key, tr.kvs[i].key_len, &gen, NULL, NULL);
        if (kind == EL_KEY_RECORD)
            el_rdzv_note_record(r, &tr.kvs[i]);
        else if (kind == EL_KEY_REVOKE && gen > r->revoked_max)
            r->revoked_max = gen;
    }
    int64_t rev = tr.revision;
    store_txn_result_fini(&tr);
    if (r->rec_err[0]) {
        WARN("rdzv: job %s: %s", r->job, r->rec_err);
        res = ecclRemoteError;
        goto err_revoke_lease;
    }
    ECCL_TRY_GOTO(el_rdzv_admission(r, deadline_ns), res, err_revoke_lease);
    ECCL_TRY_GOTO(watch_start(r, false, rev + 1, deadline_ns), res, err_revoke_lease);
    INFO(ECCL_LOG_ELASTIC,
         "rdzv: job %s: member %s joined (lease %" PRId64 ", %llds; current generation %" PRId64
         ")",
         r->job, r->id, r->lease, (long long)r->ttl_s, r->rec ? r->rec->gen : (int64_t)0);
    *out = r;
    return ecclSuccess;

err_revoke_lease:
    /* Keep the text of the failure, not of the clean-up. */
    el_textf(text, sizeof(text), "%s", eccl_log_last_error());
    (void)lease_revoke(r, eccl_deadline_ms(2000));
    registry_remove(r);
    eccl_log_set_last_error(text);
err_free_handle:
    handle_free(r);
    return res;
}

/* ---- poll, revoke, evict ---- */

ecclResult_t el_rdzv_poll(struct el_rdzv *r, uint64_t deadline_ns, struct el_rdzv_event *ev)
{
    ECCL_ARG_CHECK(r, "el_rdzv_poll: handle is NULL");
    ECCL_ARG_CHECK(ev, "el_rdzv_poll: ev is NULL");
    ECCL_ARG_CHECK(deadline_ns != ECCL_NO_DEADLINE, "el_rdzv_poll: a deadline is required");
    if (atomic_load_explicit(&r->abort, memory_order_acquire))
        return el_rdzv_check_alive(r);
    pthread_mutex_lock(&r->lock);
    while (r->q_len == 0 && !eccl_deadline_passed(deadline_ns) &&
           !atomic_load_explicit(&r->abort, memory_order_acquire))
        el_rdzv_cond_wait(r, deadline_ns);
    if (r->q_len > 0) {
        *ev = r->q[r->q_head];
        r->q_head = (r->q_head + 1) % r->q_cap;
        r->q_len--;
    } else {
        event_init(ev, EL_RDZV_EV_NONE, r->my_gen, 0);
    }
    pthread_mutex_unlock(&r->lock);
    if (ev->type == EL_RDZV_EV_NONE && atomic_load_explicit(&r->abort, memory_order_acquire))
        return el_rdzv_check_alive(r);
    return ecclSuccess;
}

ecclResult_t el_rdzv_revoke(struct el_rdzv *r, int64_t gen, const char *failed_member,
                            const char *why, uint64_t deadline_ns)
{
    ECCL_ARG_CHECK(r, "el_rdzv_revoke: handle is NULL");
    ECCL_ARG_CHECK(gen >= 1, "el_rdzv_revoke: generation %lld is not >= 1", (long long)gen);
    ECCL_ARG_CHECK(!failed_member || !failed_member[0] ||
                       el_id_valid(failed_member, strlen(failed_member)),
                   "el_rdzv_revoke: failed member '%s' is not a member id", failed_member);
    struct el_revoke_rec rv = {.gen = gen};
    el_textf(rv.by, sizeof(rv.by), "%s", r->id);
    el_textf(rv.failed, sizeof(rv.failed), "%s", failed_member ? failed_member : "");
    el_textf(rv.why, sizeof(rv.why), "%s", why ? why : "");
    for (char *p = rv.why; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    unsigned char buf[EL_REC_SMALL_MAX];
    size_t len = el_rec_encode_revoke(&rv, buf);
    struct el_key k;
    el_key_revoke(&k, r->job, gen);
    ECCL_TRY(el_rec_seal(buf, &len, sizeof(buf), k.s));
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        bool won = false;
        /* Not leased: the record outlives its writer. A retry after a lost answer finds the key
         * (ours or another member's): either way the generation is revoked. */
        res = store_cas(r->s, k.s, k.len, 0, buf, len, 0, el_rdzv_op_deadline(deadline_ns), &won,
                        NULL, NULL);
        if (res == ecclSuccess) {
            INFO(ECCL_LOG_ELASTIC, "rdzv: job %s: member %s %s generation %" PRId64 " (%s%s%s)",
                 r->job, r->id, won ? "revoked" : "found revoked already", gen, rv.why,
                 rv.failed[0] ? ", failed member " : "", rv.failed);
            return ecclSuccess;
        }
        if (!el_rdzv_retryable(res, deadline_ns) || !el_rdzv_backoff(r, attempt, deadline_ns))
            return res;
    }
}

ecclResult_t el_rdzv_evict(struct store *s, const char *job, const char *member_id,
                           uint64_t deadline_ns)
{
    ECCL_ARG_CHECK(s, "el_rdzv_evict: store is NULL");
    ECCL_ARG_CHECK(el_job_valid(job), "el_rdzv_evict: job id '%s' is not valid",
                   job ? job : "(null)");
    ECCL_ARG_CHECK(member_id && el_id_valid(member_id, strlen(member_id)),
                   "el_rdzv_evict: member id '%s' is not valid", member_id ? member_id : "(null)");
    struct el_key k;
    el_key_member(&k, job, member_id);
    struct store_kv *kv = NULL;
    ECCL_TRY(store_get(s, k.s, k.len, deadline_ns, &kv, NULL));
    if (!kv) {
        WARN("rdzv: job %s: cannot evict member %s: it is not registered (already gone?)", job,
             member_id);
        return ecclInvalidUsage;
    }
    struct el_member_rec m;
    ecclResult_t res = el_rec_decode_member(kv->value, kv->value_len, k.s, &m);
    if (res == ecclSuccess && (strcmp(m.id, member_id) != 0 || m.lease != kv->lease)) {
        WARN("rdzv: corrupted member record at key '%s': it names member %s and lease %" PRId64
             ", the key holds lease %" PRId64,
             k.s, m.id, m.lease, kv->lease);
        res = ecclRemoteError;
    }
    int64_t lease = kv->lease;
    store_kv_free(kv);
    ECCL_TRY(res);
    res = store_lease_revoke(s, lease, deadline_ns);
    if (res == ecclInvalidUsage) {
        WARN("rdzv: job %s: member %s is already gone (its lease %" PRId64 " expired)", job,
             member_id, lease);
        return res;
    }
    ECCL_TRY(res);
    INFO(ECCL_LOG_ELASTIC, "rdzv: job %s: evicted member %s (lease %" PRId64 " revoked)", job,
         member_id, lease);
    return ecclSuccess;
}

/* ---- a job seen from outside ---- */

bool el_rdzv_job_valid(const char *job)
{
    return el_job_valid(job);
}

bool el_rdzv_member_id_valid(const char *id)
{
    return id && el_id_valid(id, strlen(id));
}

ecclResult_t el_rdzv_member_rank(struct store *s, const char *job, const char *member_id,
                                 uint64_t deadline_ns, int64_t *gen_out, int *rank_out)
{
    ECCL_ARG_CHECK(s, "el_rdzv_member_rank: store is NULL");
    ECCL_ARG_CHECK(el_job_valid(job), "el_rdzv_member_rank: job id '%s' is not valid",
                   job ? job : "(null)");
    ECCL_ARG_CHECK(el_rdzv_member_id_valid(member_id),
                   "el_rdzv_member_rank: member id '%s' is not valid",
                   member_id ? member_id : "(null)");
    ECCL_ARG_CHECK(gen_out && rank_out, "el_rdzv_member_rank: gen_out or rank_out is NULL");
    struct el_key k;
    el_key_record(&k, job);
    struct store_kv *kv = NULL;
    ECCL_TRY(store_get(s, k.s, k.len, deadline_ns, &kv, NULL));
    if (!kv) {
        *gen_out = 0;
        *rank_out = -1;
        return ecclSuccess;
    }
    struct el_rdzv_gen *g = NULL;
    ecclResult_t res = el_rec_decode_gen(kv->value, kv->value_len, k.s, &g);
    store_kv_free(kv);
    ECCL_TRY(res);
    *gen_out = g->gen;
    *rank_out = el_gen_find(g, member_id);
    el_rdzv_gen_free(g);
    return ecclSuccess;
}

ecclResult_t el_rdzv_member_registered(struct store *s, const char *job, const char *member_id,
                                       uint64_t deadline_ns, bool *registered_out)
{
    ECCL_ARG_CHECK(s, "el_rdzv_member_registered: store is NULL");
    ECCL_ARG_CHECK(el_job_valid(job), "el_rdzv_member_registered: job id '%s' is not valid",
                   job ? job : "(null)");
    ECCL_ARG_CHECK(el_rdzv_member_id_valid(member_id),
                   "el_rdzv_member_registered: member id '%s' is not valid",
                   member_id ? member_id : "(null)");
    ECCL_ARG_CHECK(registered_out, "el_rdzv_member_registered: registered_out is NULL");
    struct el_key k;
    el_key_member(&k, job, member_id);
    struct store_kv *kv = NULL;
    ECCL_TRY(store_get(s, k.s, k.len, deadline_ns, &kv, NULL));
    *registered_out = kv != NULL;
    store_kv_free(kv);
    return ecclSuccess;
}

ecclResult_t el_rdzv_member_count(struct store *s, const char *job, size_t limit,
                                  uint64_t deadline_ns, int64_t *count_out)
{
    ECCL_ARG_CHECK(s, "el_rdzv_member_count: store is NULL");
    ECCL_ARG_CHECK(el_job_valid(job), "el_rdzv_member_count: job id '%s' is not valid",
                   job ? job : "(null)");
    ECCL_ARG_CHECK(count_out, "el_rdzv_member_count: count_out is NULL");
    struct el_key k;
    el_key_prefix(&k, job, "s/m/");
    struct store_kvs *kvs = NULL;
    ECCL_TRY(store_get_prefix(s, k.s, k.len, NULL, 0, limit, deadline_ns, &kvs));
    *count_out = (int64_t)kvs->count;
    store_kvs_free(kvs);
    return ecclSuccess;
}

/* ---- bootstrap blob ---- */

ecclResult_t el_rdzv_boot_publish(struct el_rdzv *r, struct el_rdzv_gen *g, const void *blob,
                                  size_t len, uint64_t deadline_ns)
{
    ECCL_ARG_CHECK(r, "el_rdzv_boot_publish: handle is NULL");
    ECCL_ARG_CHECK(g, "el_rdzv_boot_publish: generation is NULL");
    ECCL_ARG_CHECK(blob && len >= 1 && len <= EL_RDZV_MAX_BOOT,
                   "el_rdzv_boot_publish: blob of %zu bytes (1..%d)", len, EL_RDZV_MAX_BOOT);
    ECCL_TRY(el_rdzv_check_alive(r));
    pthread_mutex_lock(&r->lock);
    int64_t my_gen = r->my_gen;
    int rank = r->my_rank;
    pthread_mutex_unlock(&r->lock);
    if (g->gen != my_gen || rank != 0) {
        WARN("rdzv: job %s: member %s cannot publish the bootstrap id of generation %" PRId64
             ": only rank 0 of the current generation (%" PRId64 ") does; it has rank %d",
             r->job, r->id, g->gen, my_gen, rank);
        return ecclInvalidUsage;
    }
    struct el_boot_rec b = {.gen = g->gen, .len = len};
    memcpy(b.blob, blob, len);
    unsigned char buf[EL_REC_SMALL_MAX];
    size_t blen = el_rec_encode_boot(&b, buf);
    struct el_key kg, kb;
    el_key_record(&kg, r->job);
    el_key_boot(&kb, r->job, g->gen);
    ECCL_TRY(el_rec_seal(buf, &blen, sizeof(buf), kb.s));
    /* Guarded by the record's mod revision: a blob is only ever published for the record it
     * belongs to, and only once. */
    struct store_cmp cmps[2] = {
        {.key = kg.s,
         .key_len = kg.len,
         .target = STORE_CMP_MOD,
         .result = STORE_CMP_EQUAL,
         .number = g->mod_rev},
        {.key = kb.s,
         .key_len = kb.len,
         .target = STORE_CMP_CREATE,
         .result = STORE_CMP_EQUAL,
         .number = 0},
    };
    struct store_op put = {
        .type = STORE_OP_PUT, .key = kb.s, .key_len = kb.len, .value = buf, .value_len = blen};
    struct store_op gets[2] = {
        {.type = STORE_OP_GET, .key = kg.s, .key_len = kg.len},
        {.type = STORE_OP_GET, .key = kb.s, .key_len = kb.len},
    };
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY(el_rdzv_check_alive(r));
        struct store_txn_result tr = {0};
        res = store_txn(r->s, cmps, 2, &put, 1, gets, 2, el_rdzv_op_deadline(deadline_ns), &tr);
        if (res != ecclSuccess) {
            if (!el_rdzv_retryable(res, deadline_ns) || !el_rdzv_backoff(r, attempt, deadline_ns))
                return res;
            continue;
        }
        bool ok = tr.succeeded;
        if (!ok) {
            int64_t rec_rev = 0;
            bool have_blob = false, same = false;
            for (size_t i = 0; i < tr.count; i++) {
                int64_t gen = 0;
                enum el_key_kind kind =
                    el_key_parse(r->job, tr.kvs[i].key, tr.kvs[i].key_len, &gen, NULL, NULL);
                if (kind == EL_KEY_RECORD) {
                    rec_rev = tr.kvs[i].mod_rev;
                } else if (kind == EL_KEY_BOOT) {
                    have_blob = true;
                    /* Ours, from an attempt whose answer was lost? */
                    same = tr.kvs[i].value_len == blen && memcmp(tr.kvs[i].value, buf, blen) == 0;
                }
            }
            store_txn_result_fini(&tr);
            if (have_blob && same) {
                ok = true;
            } else if (have_blob) {
                WARN("rdzv: job %s: a different bootstrap id of generation %" PRId64
                     " is published already",
                     r->job, g->gen);
                return ecclInvalidUsage;
            } else if (rec_rev != g->mod_rev) {
                WARN("rdzv: job %s: generation %" PRId64 " was replaced (its record changed at "
                     "revision %" PRId64 ") before its bootstrap id was published",
                     r->job, g->gen, rec_rev);
                return ecclInvalidUsage;
            } else {
                continue; /* neither: raced with a delete; try again */
            }
        } else {
            store_txn_result_fini(&tr);
        }
        if (ok)
            break;
    }
    pthread_mutex_lock(&r->lock);
    if (b.gen >= r->boot.gen)
        r->boot = b;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    g->has_boot = true;
    g->boot_len = len;
    memcpy(g->boot, blob, len);
    INFO(ECCL_LOG_ELASTIC, "rdzv: job %s: generation %" PRId64 ": bootstrap id published (%zu B)",
         r->job, g->gen, len);
    retire_old_watch(r);
    return ecclSuccess;
}

/* Reads the blob key directly (a fallback to the watch) into the state. */
static ecclResult_t boot_read(struct el_rdzv *r, int64_t gen, uint64_t until)
{
    struct el_key k;
    el_key_boot(&k, r->job, gen);
    struct store_kv *kv = NULL;
    ECCL_TRY(store_get(r->s, k.s, k.len, el_rdzv_op_deadline(until), &kv, NULL));
    if (!kv)
        return ecclSuccess;
    struct store_event e = {.type = STORE_EVENT_PUT, .kv = *kv};
    struct el_rdzv_event ev;
    pthread_mutex_lock(&r->lock);
    int64_t skip = r->skip_agree_rev;
    r->skip_agree_rev = 0; /* apply it even if the watch already did: it is idempotent */
    (void)apply_event(r, &e, &ev);
    r->skip_agree_rev = skip;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    store_kv_free(kv);
    return ecclSuccess;
}

ecclResult_t el_rdzv_boot_wait(struct el_rdzv *r, struct el_rdzv_gen *g, uint64_t deadline_ns)
{
    ECCL_ARG_CHECK(r, "el_rdzv_boot_wait: handle is NULL");
    ECCL_ARG_CHECK(g, "el_rdzv_boot_wait: generation is NULL");
    retire_old_watch(r); /* the monitor delivers the blob too */
    uint64_t start = eccl_now_ns();
    uint64_t until = eccl_deadline_ms(r->boot_timeout_ms);
    if (deadline_ns < until)
        until = deadline_ns;
    uint64_t next_read = start + ECCL_NS_PER_S;
    for (;;) {
        ECCL_TRY(el_rdzv_check_alive(r));
        pthread_mutex_lock(&r->lock);
        if (r->boot.gen == g->gen) {
            g->has_boot = true;
            g->boot_len = r->boot.len;
            memcpy(g->boot, r->boot.blob, r->boot.len);
            pthread_mutex_unlock(&r->lock);
            return ecclSuccess;
        }
        const char *why = NULL;
        char text[300];
        if (r->boot_err_gen == g->gen) {
            el_textf(text, sizeof(text), "%s", r->boot_err);
            why = text;
        } else if (r->revoked_max >= g->gen) {
            el_textf(text, sizeof(text), "generation %" PRId64 " was revoked", g->gen);
            why = text;
        } else if (r->rec && r->rec->gen > g->gen) {
            el_textf(text, sizeof(text), "generation %" PRId64 " was replaced by %" PRId64, g->gen,
                     r->rec->gen);
            why = text;
        } else if (r->rec_err[0]) {
            el_textf(text, sizeof(text), "%s", r->rec_err);
            why = text;
        }
        if (why) {
            pthread_mutex_unlock(&r->lock);
            WARN("rdzv: job %s: no bootstrap id for generation %" PRId64 ": %s", r->job, g->gen,
                 why);
            return ecclRemoteError;
        }
        if (eccl_deadline_passed(until)) {
            pthread_mutex_unlock(&r->lock);
            WARN("rdzv: job %s: timed out after %llu ms waiting for rank 0 (%s) to publish the "
                 "bootstrap id of generation %" PRId64 " (ECCL_ELASTIC_BOOT_TIMEOUT_MS)",
                 r->job, (unsigned long long)((eccl_now_ns() - start) / ECCL_NS_PER_MS),
                 g->nmembers > 0 ? g->members[0] : "?", g->gen);
            return ecclInternalError;
        }
        el_rdzv_cond_wait(r, ECCL_MIN(until, next_read));
        pthread_mutex_unlock(&r->lock);
        if (eccl_now_ns() >= next_read) {
            /* The watch delivers the blob; a direct read once a second guards against a watch
             * that was restarted past it. */
            next_read = eccl_now_ns() + ECCL_NS_PER_S;
            ECCL_TRY(el_rdzv_watch_ensure(r, until));
            ecclResult_t res = boot_read(r, g->gen, until);
            if (res != ecclSuccess && !el_rdzv_retryable(res, until))
                return res;
        }
    }
}

/* ---- leave, abort, destroy ---- */

void el_rdzv_abort(struct el_rdzv *r)
{
    if (!r)
        return;
    atomic_store_explicit(&r->abort, 1, memory_order_release);
    pthread_mutex_lock(&r->lock);
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

ecclResult_t el_rdzv_leave(struct el_rdzv *r, uint64_t deadline_ns)
{
    ECCL_ARG_CHECK(r, "el_rdzv_leave: handle is NULL");
    if (r->left)
        return ecclSuccess;
    /* The announcement first, under the same lease (it goes with the member key): best effort,
     * without it the others see the departure as a loss, as they would after a crash. */
    struct el_key kx;
    el_key_left(&kx, r->job, r->id);
    struct el_member_rec m;
    member_rec(r, &m);
    unsigned char buf[EL_REC_SMALL_MAX];
    size_t len = el_rec_encode_member(&m, buf);
    if (el_rec_seal(buf, &len, sizeof(buf), kx.s) != ecclSuccess ||
        store_put(r->s, kx.s, kx.len, buf, len, r->lease, el_rdzv_op_deadline(deadline_ns), NULL) !=
            ecclSuccess)
        INFO(ECCL_LOG_ELASTIC, "rdzv: job %s: member %s could not announce its leave: %s", r->job,
             r->id, eccl_log_last_error());
    ECCL_TRY(lease_revoke(r, deadline_ns));
    r->left = true;
    INFO(ECCL_LOG_ELASTIC, "rdzv: job %s: member %s left", r->job, r->id);
    return ecclSuccess;
}

void el_rdzv_destroy(struct el_rdzv *r)
{
    if (!r)
        return;
    registry_remove(r);
    store_lease_unkeep(r->s, r->lease);
    watch_stop(r);
    handle_free(r);
}

const char *el_rdzv_member_id(const struct el_rdzv *r)
{
    return r ? r->id : "";
}

const char *el_rdzv_job(const struct el_rdzv *r)
{
    return r ? r->job : "";
}

int64_t el_rdzv_lease(const struct el_rdzv *r)
{
    return r ? r->lease : 0;
}

int64_t el_rdzv_current_gen(const struct el_rdzv *r)
{
    return r ? atomic_load_explicit(&((struct el_rdzv *)r)->cur_gen, memory_order_acquire) : 0;
}

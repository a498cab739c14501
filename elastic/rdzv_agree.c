/*
 * rdzv_agree.c - the agreement of the next generation (el_rdzv_next).
 *
 * Each member registers for generation T (one transaction: its registration key, leased, plus a
 * read of T's proposer lock, guarded by the current record's mod revision). The first member to
 * find the lock free takes it (create-if-absent, leased) and becomes T's proposer: it reads the
 * registrations and the members once, watches the job for changes, closes the join window by the
 * rules of the mode, and writes the record of T by compare-and-swap on the previous record's mod
 * revision (and on its own lock, so a proposer that lost its lease cannot write). Everyone else
 * waits on its watch for the record, and takes over when the lock goes away without a record.
 * The store traffic is O(N) for N members: one or two writes each, one read and one write by the
 * proposer, one watch event per member for the record.
 */
#include "elastic/rdzv_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/time.h"

static const char *mode_name(enum el_rdzv_mode m)
{
    return m == EL_RDZV_SHRINK ? "shrink" : m == EL_RDZV_REPLACE ? "replace" : "grow";
}

/* ---- registration and the proposer lock ---- */

enum reg_outcome {
    REG_OK,    /* registered; the lock as read is in *lead */
    REG_STALE, /* the record moved on: look again */
};

/* Puts this member's registration for T, if the record is still the one at rec_rev, and reads
 * T's proposer lock. */
static ecclResult_t register_for(struct el_rdzv *r, int64_t T, int64_t rec_rev, int64_t step,
                                 uint64_t until, enum reg_outcome *outcome, struct el_lead *lead)
{
    struct el_key kg, ki, kl;
    el_key_record(&kg, r->job);
    el_key_intent(&ki, r->job, T, r->id);
    el_key_lead(&kl, r->job, T);
    struct el_intent_rec in = {.gen = T, .step = step, .replace_rank = r->replace_rank};
    el_textf(in.id, sizeof(in.id), "%s", r->id);
    unsigned char buf[EL_REC_SMALL_MAX];
    size_t len = el_rec_encode_intent(&in, buf);
    ECCL_TRY(el_rec_seal(buf, &len, sizeof(buf), ki.s));
    struct store_cmp cmp = {.key = kg.s,
                            .key_len = kg.len,
                            .target = rec_rev ? STORE_CMP_MOD : STORE_CMP_CREATE,
                            .result = STORE_CMP_EQUAL,
                            .number = rec_rev};
    struct store_op then_ops[2] = {
        {.type = STORE_OP_PUT,
         .key = ki.s,
         .key_len = ki.len,
         .value = buf,
         .value_len = len,
         .lease = r->lease},
        {.type = STORE_OP_GET, .key = kl.s, .key_len = kl.len},
    };
    struct store_op else_op = {.type = STORE_OP_GET, .key = kg.s, .key_len = kg.len};
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY(el_rdzv_check_alive(r));
        struct store_txn_result tr = {0};
        /* Idempotent: a retry after a lost answer puts the same registration again. */
        res = store_txn(r->s, &cmp, 1, then_ops, 2, &else_op, 1, el_rdzv_op_deadline(until), &tr);
        if (res != ecclSuccess) {
            if (!el_rdzv_retryable(res, until) || !el_rdzv_backoff(r, attempt, until))
                return res;
            continue;
        }
        if (!tr.succeeded) {
            if (tr.count > 0) {
                el_rdzv_note_record(r, &tr.kvs[0]);
            } else {
                pthread_mutex_lock(&r->lock);
                if (rec_rev > 0 && r->rec_rev <= rec_rev)
                    el_textf(r->rec_err, sizeof(r->rec_err),
                             "the generation record of job %s was deleted", r->job);
                pthread_mutex_unlock(&r->lock);
            }
            store_txn_result_fini(&tr);
            *outcome = REG_STALE;
            return ecclSuccess;
        }
        el_lead_from_kv(r, tr.count > 0 ? &tr.kvs[0] : NULL, tr.revision, lead);
        store_txn_result_fini(&tr);
        *outcome = REG_OK;
        return ecclSuccess;
    }
}

/* Takes T's proposer lock if it is free. *lead gets the lock as it is after the attempt. */
static ecclResult_t try_lead(struct el_rdzv *r, int64_t T, uint64_t until, struct el_lead *lead)
{
    struct el_key kl;
    el_key_lead(&kl, r->job, T);
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY(el_rdzv_check_alive(r));
        bool won = false;
        int64_t rev = 0;
        struct store_kv *cur = NULL;
        res = store_cas(r->s, kl.s, kl.len, 0, r->id, strlen(r->id), r->lease,
                        el_rdzv_op_deadline(until), &won, &rev, &cur);
        if (res == ecclSuccess) {
            if (won) {
                memset(lead, 0, sizeof(*lead));
                lead->present = lead->mine = true;
                lead->create_rev = lead->seen_rev = rev;
                el_textf(lead->id, sizeof(lead->id), "%s", r->id);
                return ecclSuccess;
            }
            if (!cur) /* deleted in between: try again */
                continue;
            /* Ours, from an attempt whose answer was lost, or another member's. */
            el_lead_from_kv(r, cur, cur->mod_rev, lead);
            store_kv_free(cur);
            return ecclSuccess;
        }
        if (!el_rdzv_retryable(res, until) || !el_rdzv_backoff(r, attempt, until))
            return res;
    }
}

/* Lets go of T's proposer lock (best effort: it is leased anyway). */
static void release_lead(struct el_rdzv *r, int64_t T, int64_t create_rev)
{
    struct el_key kl;
    el_key_lead(&kl, r->job, T);
    struct store_cmp cmp = {.key = kl.s,
                            .key_len = kl.len,
                            .target = STORE_CMP_CREATE,
                            .result = STORE_CMP_EQUAL,
                            .number = create_rev};
    struct store_op del = {.type = STORE_OP_DELETE, .key = kl.s, .key_len = kl.len};
    struct store_txn_result tr = {0};
    if (store_txn(r->s, &cmp, 1, &del, 1, NULL, 0, eccl_deadline_ms(2000), &tr) == ecclSuccess)
        store_txn_result_fini(&tr);
}

/* ---- the proposer ---- */

struct pintent {
    struct el_intent_rec rec;
    int64_t create_rev;
};

struct proposal {
    struct el_rdzv *r;
    int64_t T;
    const struct el_rdzv_gen *P; /* the current generation, or NULL for the first one */
    int64_t P_rev;
    enum el_rdzv_mode mode;
    int64_t lead_rev;
    uint64_t until;
    uint64_t t0, t_min;
    struct el_map intents; /* id -> struct pintent */
    /* Which members of P are alive: a proposer that is a member of P knows from its own monitor
     * watch (own_view: lost[] per rank of P, copied from the handle); another one reads and
     * watches the member keys (live: ids of registered members). */
    bool own_view;
    bool *lost;
    struct el_map live;
    struct el_map prev; /* members of P -> rank + 1 */
    bool overtaken;     /* the record moved or the lock went: give up this proposal */
    int64_t as_of;
    /* Decided at close. */
    int nsurv, nadmit;
};

static void free_intent(void *p)
{
    eccl_free(p);
}

/* Applies one key (a PUT's kv, or a DELETE) to the proposal. */
static ecclResult_t prop_apply(struct proposal *p, bool del, const struct store_kv *kv)
{
    struct el_rdzv *r = p->r;
    int64_t gen = 0;
    const char *id = NULL;
    size_t id_len = 0;
    enum el_key_kind kind = el_key_parse(r->job, kv->key, kv->key_len, &gen, &id, &id_len);
    char mid[EL_RDZV_MAX_ID + 1] = "";
    if (id) {
        memcpy(mid, id, id_len);
        mid[id_len] = 0;
    }
    switch (kind) {
    case EL_KEY_INTENT: {
        if (gen != p->T)
            return ecclSuccess;
        if (del) {
            free_intent(el_map_del(&p->intents, mid));
            return ecclSuccess;
        }
        struct pintent *pi = eccl_calloc(1, sizeof(*pi), "rdzv_intent");
        if (!pi)
            return ecclSystemError;
        char where[EL_KEY_MAX];
        el_textf(where, sizeof(where), "%.*s", (int)ECCL_MIN(kv->key_len, sizeof(where) - 1),
                 kv->key);
        if (el_rec_decode_intent(kv->value, kv->value_len, where, &pi->rec) != ecclSuccess ||
            strcmp(pi->rec.id, mid) != 0 || pi->rec.gen != p->T) {
            /* A registration this proposer cannot read (another version, a hostile writer): the
             * member is left out of this generation, the others go on. */
            WARN("rdzv: job %s: generation %" PRId64 ": ignoring the unreadable registration at "
                 "'%s'",
                 r->job, p->T, where);
            eccl_free(pi);
            free_intent(el_map_del(&p->intents, mid));
            return ecclSuccess;
        }
        pi->create_rev = kv->create_rev;
        void *old = NULL;
        ecclResult_t res = el_map_put(&p->intents, mid, pi, &old);
        if (res != ecclSuccess) {
            eccl_free(pi);
            return res;
        }
        if (old) /* a registration put again keeps its first place */
            pi->create_rev = ((struct pintent *)old)->create_rev;
        free_intent(old);
        return ecclSuccess;
    }
    case EL_KEY_MEMBER:
        if (del) {
            el_map_del(&p->live, mid);
            return ecclSuccess;
        }
        return el_map_put(&p->live, mid, NULL, NULL);
    case EL_KEY_RECORD:
        if (kv->mod_rev != p->P_rev)
            p->overtaken = true;
        return ecclSuccess;
    case EL_KEY_LEAD:
        if (gen == p->T && del)
            p->overtaken = true;
        return ecclSuccess;
    default:
        return ecclSuccess;
    }
}

static int cmp_intent(const void *a, const void *b)
{
    const struct pintent *x = *(const struct pintent *const *)a;
    const struct pintent *y = *(const struct pintent *const *)b;
    if (x->create_rev != y->create_rev)
        return x->create_rev < y->create_rev ? -1 : 1;
    return strcmp(x->rec.id, y->rec.id);
}

/* The joiners (registered, not in P), in order of registration. *out is a new array. */
static ecclResult_t joiners(struct proposal *p, struct pintent ***out, int *n_out)
{
    struct pintent **j = eccl_calloc(p->intents.n + 1, sizeof(*j), "rdzv_joiners");
    if (!j)
        return ecclSystemError;
    int n = 0;
    for (size_t i = 0; i < p->intents.cap; i++) {
        struct el_map_slot *s = &p->intents.slots[i];
        if (!s->key)
            continue;
        bool in_prev = false;
        el_map_get(&p->prev, s->key, &in_prev);
        if (!in_prev)
            j[n++] = s->val;
    }
    qsort(j, (size_t)n, sizeof(*j), cmp_intent);
    *out = j;
    *n_out = n;
    return ecclSuccess;
}

enum decision {
    DECIDE_WAIT,
    DECIDE_CLOSE,
    DECIDE_FAIL,
};

/* The window rules (docs/internals/rdzv.md). *wake gets when to look again without news. */
static enum decision decide(struct proposal *p, uint64_t now, uint64_t *wake)
{
    struct el_rdzv *r = p->r;
    uint64_t lc = p->t0 + (uint64_t)r->last_call_ms * ECCL_NS_PER_MS;
    *wake = p->until;
    if (!p->P) {
        int n = (int)p->intents.n;
        p->nsurv = 0;
        p->nadmit = ECCL_MIN(n, r->max_members);
        if (n >= r->max_members)
            return DECIDE_CLOSE;
        if (n < r->min_members) {
            p->t_min = 0;
            return eccl_deadline_passed(p->until) ? DECIDE_FAIL : DECIDE_WAIT;
        }
        if (p->t_min == 0)
            p->t_min = now;
        uint64_t close_at = p->t_min + (uint64_t)r->last_call_ms * ECCL_NS_PER_MS;
        if (now >= close_at)
            return DECIDE_CLOSE;
        *wake = ECCL_MIN(close_at, p->until);
        return DECIDE_WAIT;
    }
    int base = 0, live_unreg = 0;
    for (int i = 0; i < p->P->nmembers; i++) {
        bool reg = false, live = false;
        el_map_get(&p->intents, p->P->members[i], &reg);
        if (p->own_view)
            live = !p->lost[i];
        else
            el_map_get(&p->live, p->P->members[i], &live);
        if (reg)
            base++;
        else if (live)
            live_unreg++;
    }
    int nj = (int)p->intents.n - base;
    bool lc_passed = now >= lc;
    bool all_in = live_unreg == 0;
    int target;
    switch (p->mode) {
    case EL_RDZV_SHRINK:
        target = ECCL_MAX(base, r->min_members);
        break;
    case EL_RDZV_REPLACE:
        target = ECCL_MIN(ECCL_MAX(p->P->nmembers, r->min_members), r->max_members);
        break;
    default:
        target = r->max_members;
        break;
    }
    int adm = ECCL_MAX(0, ECCL_MIN(nj, target - base));
    int size = base + adm;
    p->nsurv = base;
    p->nadmit = adm;
    bool ready = (all_in || lc_passed) && size >= r->min_members;
    uint64_t wake_at = p->until;
    if (!all_in && !lc_passed)
        wake_at = ECCL_MIN(wake_at, lc);
    if (p->mode == EL_RDZV_REPLACE && size < target) {
        uint64_t rw = p->t0 + (uint64_t)r->replace_wait_ms * ECCL_NS_PER_MS;
        ready = ready && now >= rw;
        if (now < rw)
            wake_at = ECCL_MIN(wake_at, rw);
    } else if (p->mode == EL_RDZV_GROW && size < target) {
        ready = ready && lc_passed;
        if (!lc_passed)
            wake_at = ECCL_MIN(wake_at, lc);
    }
    if (ready)
        return DECIDE_CLOSE;
    if (eccl_deadline_passed(p->until))
        return DECIDE_FAIL;
    *wake = wake_at;
    return DECIDE_WAIT;
}

/* Builds the record of T from the decision: ranks by the rules of rdzv.h. */
static ecclResult_t build(struct proposal *p, struct el_rdzv_gen **out)
{
    struct el_rdzv *r = p->r;
    ecclResult_t res = ecclSuccess;
    struct pintent **j = NULL;
    int nj = 0;
    const char **slots = NULL;
    const char **order = NULL;
    struct el_rdzv_gen *g = NULL;
    ECCL_TRY_GOTO(joiners(p, &j, &nj), res, out);
    int nadmit = ECCL_MIN(p->nadmit, nj);
    int nslots = p->P ? p->P->nmembers : nadmit;
    ECCL_CALLOC_GOTO(slots, (size_t)nslots + 1, "rdzv_build", res, out);
    ECCL_CALLOC_GOTO(order, (size_t)(nslots + nadmit) + 1, "rdzv_build", res, out);
    int64_t step = -1;
    size_t idbytes = 0;
    if (p->P) {
        for (int i = 0; i < p->P->nmembers; i++) {
            struct pintent *pi = el_map_get(&p->intents, p->P->members[i], NULL);
            if (pi) {
                slots[i] = pi->rec.id;
                if (pi->rec.step >= 0 && (step < 0 || pi->rec.step < step))
                    step = pi->rec.step;
            }
        }
    }
    /* Joiners: a replacement takes the slot it asks for when free; the others fill free slots
     * (replace mode and the first generation) or append (shrink, grow). */
    bool fill = !p->P || p->mode == EL_RDZV_REPLACE;
    int nappend = 0;
    const char **append = order + nslots; /* room for nadmit */
    bool *placed = NULL;
    ECCL_CALLOC_GOTO(placed, (size_t)nadmit + 1, "rdzv_build", res, out);
    for (int i = 0; i < nadmit; i++) {
        int rr = j[i]->rec.replace_rank;
        if (rr >= 0 && rr < nslots && !slots[rr]) {
            slots[rr] = j[i]->rec.id;
            placed[i] = true;
        }
    }
    int next_free = 0;
    for (int i = 0; i < nadmit; i++) {
        if (placed[i])
            continue;
        if (fill) {
            while (next_free < nslots && slots[next_free])
                next_free++;
            if (next_free < nslots) {
                slots[next_free] = j[i]->rec.id;
                continue;
            }
        }
        append[nappend++] = j[i]->rec.id;
    }
    eccl_free(placed);
    /* Joiners' steps count only when no survivor gave one (the first generation): a member that
     * lost its lease and comes back after the others went on brings an older step, which must
     * not pull theirs back; it takes their state instead. */
    bool survivors_gave = p->P && step >= 0;
    for (int i = 0; i < nadmit && !survivors_gave; i++)
        if (j[i]->rec.step >= 0 && (step < 0 || j[i]->rec.step < step))
            step = j[i]->rec.step;
    int n = 0;
    for (int i = 0; i < nslots; i++)
        if (slots[i])
            order[n++] = slots[i];
    for (int i = 0; i < nappend; i++)
        order[n++] = append[i];
    for (int i = 0; i < n; i++)
        idbytes += strlen(order[i]) + 1;
    g = el_gen_alloc(n, idbytes);
    if (!g) {
        res = ecclSystemError;
        goto out;
    }
    char *next = (char *)(g->members + n);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(order[i]) + 1;
        memcpy(next, order[i], len);
        g->members[i] = next;
        next += len;
    }
    g->gen = p->T;
    g->step = step;
    g->mode = p->P ? p->mode : EL_RDZV_GROW;
    g->as_of_rev = p->as_of;
    *out = g;
out:
    eccl_free(j);
    eccl_free(slots);
    eccl_free(order);
    (void)r;
    return res;
}

/* Writes the record of T: compare-and-swap on P's mod revision and on the proposer lock; in the
 * same revision the lock and the previous generation's blob and revoke records go (the
 * registrations of T go afterwards, off the critical path: see propose). *won_out false: the
 * record or the lock changed (someone else wrote T). */
static ecclResult_t write_record(struct proposal *p, const struct el_rdzv_gen *g, bool *won_out,
                                 int64_t *rev_out)
{
    struct el_rdzv *r = p->r;
    unsigned char *val = NULL;
    size_t len = 0;
    ECCL_TRY(el_rec_encode_gen(g, &val, &len));
    struct el_key kg, kl, kb, kr;
    el_key_record(&kg, r->job);
    ecclResult_t sres = el_rec_seal(val, &len, len + EL_REC_AUTH_BYTES, kg.s);
    if (sres != ecclSuccess) {
        eccl_free(val);
        return sres;
    }
    el_key_lead(&kl, r->job, p->T);
    el_key_boot(&kb, r->job, p->T - 1);
    el_key_revoke(&kr, r->job, p->T - 1);
    struct store_cmp cmps[2] = {
        {.key = kg.s,
         .key_len = kg.len,
         .target = p->P_rev ? STORE_CMP_MOD : STORE_CMP_CREATE,
         .result = STORE_CMP_EQUAL,
         .number = p->P_rev},
        {.key = kl.s,
         .key_len = kl.len,
         .target = STORE_CMP_CREATE,
         .result = STORE_CMP_EQUAL,
         .number = p->lead_rev},
    };
    struct store_op ops[4] = {
        {.type = STORE_OP_PUT, .key = kg.s, .key_len = kg.len, .value = val, .value_len = len},
        {.type = STORE_OP_DELETE, .key = kl.s, .key_len = kl.len},
        {.type = STORE_OP_DELETE, .key = kb.s, .key_len = kb.len},
        {.type = STORE_OP_DELETE, .key = kr.s, .key_len = kr.len},
    };
    size_t nops = p->T >= 2 ? 4 : 2;
    ecclResult_t res;
    for (unsigned attempt = 0;; attempt++) {
        res = el_rdzv_check_alive(r);
        if (res != ecclSuccess)
            break;
        struct store_txn_result tr = {0};
        res = store_txn(r->s, cmps, 2, ops, nops, NULL, 0, el_rdzv_op_deadline(p->until), &tr);
        if (res == ecclSuccess) {
            *won_out = tr.succeeded;
            *rev_out = tr.revision;
            store_txn_result_fini(&tr);
            break;
        }
        if (!el_rdzv_retryable(res, p->until) || !el_rdzv_backoff(r, attempt, p->until))
            break;
        /* The outcome is unknown: is the record ours now? */
        struct store_kv *kv = NULL;
        ecclResult_t rr = store_get(r->s, kg.s, kg.len, el_rdzv_op_deadline(p->until), &kv, NULL);
        if (rr != ecclSuccess)
            continue;
        bool ours = kv && kv->value_len == len && memcmp(kv->value, val, len) == 0;
        bool moved = !kv ? p->P_rev != 0 : kv->mod_rev != p->P_rev;
        int64_t rev = kv ? kv->mod_rev : 0;
        store_kv_free(kv);
        if (ours) {
            *won_out = true;
            *rev_out = rev;
            res = ecclSuccess;
            break;
        }
        if (moved) {
            *won_out = false;
            res = ecclSuccess;
            break;
        }
    }
    eccl_free(val);
    return res;
}

/* Runs the proposal of T. *g_out gets the record when this proposer wrote it; NULL with success
 * when the proposal was overtaken (the caller looks at the record again). */
static ecclResult_t propose(struct proposal *p, struct el_rdzv_gen **g_out)
{
    struct el_rdzv *r = p->r;
    ecclResult_t res = ecclSuccess;
    struct store_watch *w = NULL;
    struct store_txn_result tr = {0};
    *g_out = NULL;
    p->t0 = eccl_now_ns();
    if (p->P)
        for (int i = 0; i < p->P->nmembers; i++)
            ECCL_TRY_GOTO(el_map_put(&p->prev, p->P->members[i], (void *)(intptr_t)(i + 1), NULL),
                          res, out);

    /* A proposer that is a member of P knows who left from its own watch; the first generation
     * needs no one's liveness but the registrations'. */
    p->own_view = !p->P || r->my_gen == p->P->gen;
    if (p->P && p->own_view)
        ECCL_CALLOC_GOTO(p->lost, (size_t)p->P->nmembers, "rdzv_prop", res, out);

    /* One consistent read of the registrations, the record (and the members, without an own
     * view), then a watch from just after it: nothing is missed, nothing is read twice. */
    struct el_key ki, km, kg, kj;
    el_key_intents(&ki, r->job, p->T);
    el_key_prefix(&km, r->job, "s/m/");
    el_key_record(&kg, r->job);
    if (p->own_view)
        kj = ki;
    else
        el_key_prefix(&kj, r->job, "");
    struct store_op gets[3] = {
        {.type = STORE_OP_GET, .key = ki.s, .key_len = ki.len, .prefix = true},
        {.type = STORE_OP_GET, .key = kg.s, .key_len = kg.len},
        {.type = STORE_OP_GET, .key = km.s, .key_len = km.len, .prefix = true},
    };
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY_GOTO(el_rdzv_check_alive(r), res, out);
        res = store_txn(r->s, NULL, 0, gets, p->own_view ? 2 : 3, NULL, 0,
                        el_rdzv_op_deadline(p->until), &tr);
        if (res == ecclSuccess)
            break;
        if (!el_rdzv_retryable(res, p->until) || !el_rdzv_backoff(r, attempt, p->until))
            goto out;
    }
    bool have_rec = false;
    for (size_t i = 0; i < tr.count; i++) {
        if (el_key_parse(r->job, tr.kvs[i].key, tr.kvs[i].key_len, &(int64_t){0}, NULL, NULL) ==
            EL_KEY_RECORD)
            have_rec = true;
        ECCL_TRY_GOTO(prop_apply(p, false, &tr.kvs[i]), res, out);
    }
    if (!have_rec && p->P_rev != 0)
        p->overtaken = true;
    int64_t snap = tr.revision;
    p->as_of = snap;
    store_txn_result_fini(&tr);
    if (p->overtaken)
        goto out;
    for (unsigned attempt = 0;; attempt++) {
        ECCL_TRY_GOTO(el_rdzv_check_alive(r), res, out);
        res = store_watch_create(r->s, kj.s, kj.len, true, snap + 1, NULL, NULL,
                                 el_rdzv_op_deadline(p->until), &w);
        if (res == ecclSuccess)
            break;
        if (!el_rdzv_retryable(res, p->until) || !el_rdzv_backoff(r, attempt, p->until))
            goto out;
    }
    INFO(ECCL_LOG_ELASTIC,
         "rdzv: job %s: member %s proposes generation %" PRId64 " (%s; %zu registered)", r->job,
         r->id, p->T, p->P ? mode_name(p->mode) : "first", p->intents.n);

    for (;;) {
        ECCL_TRY_GOTO(el_rdzv_check_alive(r), res, out);
        /* What the handle's own watch says: departures (own view), a new record, the lock gone. */
        pthread_mutex_lock(&r->lock);
        if (p->lost && r->lost && r->mine && r->mine->gen == p->P->gen)
            memcpy(p->lost, r->lost, (size_t)p->P->nmembers * sizeof(*p->lost));
        if (r->rec_rev != p->P_rev || (r->lead_del_gen == p->T && r->lead_del_rev > p->lead_rev))
            p->overtaken = true;
        pthread_mutex_unlock(&r->lock);
        if (p->overtaken)
            goto out;
        uint64_t wake = 0;
        enum decision d = decide(p, eccl_now_ns(), &wake);
        if (d == DECIDE_CLOSE) {
            uint64_t t_close = eccl_now_ns();
            struct el_rdzv_gen *g = NULL;
            ECCL_TRY_GOTO(build(p, &g), res, out);
            bool won = false;
            int64_t rev = 0;
            res = write_record(p, g, &won, &rev);
            if (res != ecclSuccess || !won) {
                el_rdzv_gen_free(g);
                goto out;
            }
            g->mod_rev = rev;
            INFO(ECCL_LOG_ELASTIC,
                 "rdzv: job %s: generation %" PRId64 " formed by %s: %d members (%d survivors, "
                 "%d joiners), step %" PRId64 ", revision %" PRId64
                 "; window closed after %llu ms, record written in %llu ms",
                 r->job, g->gen, r->id, g->nmembers, p->nsurv, g->nmembers - p->nsurv, g->step, rev,
                 (unsigned long long)((t_close - p->t0) / ECCL_NS_PER_MS),
                 (unsigned long long)((eccl_now_ns() - t_close) / ECCL_NS_PER_MS));
            *g_out = g;
            goto out;
        }
        if (d == DECIDE_FAIL) {
            int nreg = (int)p->intents.n;
            if (!p->P)
                WARN("rdzv: job %s: timed out: generation %" PRId64 " not formed: %d member(s) "
                     "registered, min_members is %d (ECCL_ELASTIC_JOIN_TIMEOUT_MS)",
                     r->job, p->T, nreg, r->min_members);
            else
                WARN("rdzv: job %s: timed out: generation %" PRId64 " not formed (%s): %d of "
                     "%d members of generation %" PRId64 " and %d joiner(s) registered, "
                     "min_members is %d",
                     r->job, p->T, mode_name(p->mode), p->nsurv, p->P->nmembers, p->P->gen,
                     nreg - p->nsurv, r->min_members);
            res = ecclInternalError;
            goto out;
        }
        /* Wait for news, at most until the next window edge (and 100 ms, to see an abort). */
        uint64_t t = ECCL_MIN(wake, eccl_now_ns() + 100 * ECCL_NS_PER_MS);
        struct store_event *ev = NULL;
        size_t n = 0;
        res = store_watch_poll(w, 1024, t, &ev, &n);
        if (res != ecclSuccess) {
            /* The watch cannot go on (compaction): start the proposal again. */
            res = ecclSuccess;
            p->overtaken = true;
            goto out;
        }
        for (size_t i = 0; i < n && res == ecclSuccess; i++)
            res = prop_apply(p, ev[i].type == STORE_EVENT_DELETE, &ev[i].kv);
        if (n > 0)
            p->as_of = ev[n - 1].kv.mod_rev;
        store_events_free(ev, n);
        if (res != ecclSuccess)
            goto out;
        if (p->overtaken)
            goto out;
    }
out:
    store_txn_result_fini(&tr); /* a registration that failed to apply jumps here with it */
    store_watch_destroy(w);
    eccl_free(p->lost);
    p->lost = NULL;
    el_map_fini(&p->intents, free_intent);
    el_map_fini(&p->live, NULL);
    el_map_fini(&p->prev, NULL);
    if (!*g_out) {
        release_lead(r, p->T, p->lead_rev);
    } else {
        /* The registrations of T are spent. Best effort: they are leased, and no one reads the
         * registrations of a generation that exists. */
        if (store_delete(r->s, ki.s, ki.len, true, eccl_deadline_ms(2000), NULL, NULL) !=
            ecclSuccess)
            INFO(ECCL_LOG_ELASTIC,
                 "rdzv: job %s: could not delete the registrations of "
                 "generation %" PRId64 ": %s",
                 r->job, p->T, eccl_log_last_error());
    }
    return res;
}

/* ---- waiting for the record ---- */

/* How long a member that is not the designated proposer waits for the lock to be taken before it
 * tries itself (the designated one may be hung), and the spread of the tries of members with no
 * designation (the first generation, joiners), so that they do not all race for the lock. */
#define LEAD_FALLBACK_MS 500
#define LEAD_JITTER_MS   50
/* ... plus 1 ms per LEAD_JITTER_PER members of max_members: the more members may race for the
 * lock, the wider they spread, so that few try before the winner's lock reaches their watch
 * (each try is a write). The first try still comes early: the earliest of many draws. */
#define LEAD_JITTER_PER 8

/* Whether this member is the designated proposer of the generation after P: the lowest rank of
 * P whose member is not known to be gone (r->lock held). */
static bool designated(struct el_rdzv *r, const struct el_rdzv_gen *P)
{
    if (!P || r->my_gen != P->gen || !r->lost)
        return false;
    for (int i = 0; i < P->nmembers; i++)
        if (!r->lost[i])
            return i == r->my_rank;
    return false;
}

/* How long after it found T's lock free this member waits before it tries to take it (r->lock
 * held): nothing for the designated proposer, LEAD_FALLBACK_MS plus its jitter for the other
 * members of P, the jitter alone for members of no generation. It depends on what the watch has
 * seen (lost[]), so it is asked again at every wake-up, not once. */
static uint64_t turn_delay_ms(struct el_rdzv *r, const struct el_rdzv_gen *P, uint64_t jitter_ms)
{
    if (designated(r, P))
        return 0;
    return (P && r->my_gen == P->gen ? LEAD_FALLBACK_MS : 0) + jitter_ms;
}

enum wait_outcome {
    WAIT_RECORD,   /* a record of T or later is there */
    WAIT_TRY_LEAD, /* the lock of T is free and it is this member's turn to try */
    WAIT_WATCH,    /* the watch failed */
};

/* Waits for the record of T, following T's proposer lock through the watch (*lead), until it is
 * this member's turn to take it. The turn is computed again at every wake-up (every event of the
 * watch wakes it): a member that started waiting before it heard that the members ranked below
 * it are gone (a failure seen on the sockets before the launcher's eviction reached the store)
 * becomes the designated proposer, and tries at once, as soon as it hears. */
static ecclResult_t wait_turn(struct el_rdzv *r, int64_t T, struct el_lead *lead,
                              const struct el_rdzv_gen *P, uint64_t start, uint64_t until,
                              enum wait_outcome *outcome)
{
    /* When this member found the lock free (0: not free, or not seen yet), and the jitter it
     * drew then: the turn counts from there, whatever changes the delay meanwhile. */
    uint64_t free_since = 0;
    uint64_t jitter_ms = 0;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (atomic_load_explicit(&r->abort, memory_order_acquire) ||
            atomic_load_explicit(&r->lease_lost, memory_order_acquire)) {
            pthread_mutex_unlock(&r->lock);
            return el_rdzv_check_alive(r);
        }
        if (r->rec_err[0]) {
            char text[256];
            el_textf(text, sizeof(text), "%s", r->rec_err);
            pthread_mutex_unlock(&r->lock);
            WARN("rdzv: job %s: %s", r->job, text);
            return ecclRemoteError;
        }
        if (r->rec && r->rec->gen >= T) {
            *outcome = WAIT_RECORD;
            break;
        }
        if (r->watch_failed) {
            *outcome = WAIT_WATCH;
            break;
        }
        /* The lock's latest state: the newer of its last creation and deletion. */
        bool put_new = r->lead_put_gen == T && r->lead_put_rev > lead->seen_rev;
        bool del_new = r->lead_del_gen == T && r->lead_del_rev > lead->seen_rev;
        if (put_new && (!del_new || r->lead_put_rev > r->lead_del_rev)) {
            lead->present = true;
            lead->mine = false;
            lead->create_rev = lead->seen_rev = r->lead_put_rev;
            el_textf(lead->id, sizeof(lead->id), "taken at revision %" PRId64, r->lead_put_rev);
            free_since = 0;
        } else if (del_new) {
            lead->present = false;
            lead->seen_rev = r->lead_del_rev;
            free_since = 0;
        }
        /* Members of the current generation lead; a joiner only when there is no generation
         * yet, or the current one is revoked (else a joiner could form a generation of joiners
         * while the members are busy). */
        bool may_lead = !P || r->my_gen == P->gen || r->revoked_max >= P->gen;
        uint64_t now = eccl_now_ns();
        uint64_t try_at = UINT64_MAX;
        if (!lead->present && may_lead) {
            if (free_since == 0) {
                free_since = now;
                jitter_ms = eccl_random64() %
                            (LEAD_JITTER_MS + (uint64_t)r->max_members / LEAD_JITTER_PER + 1);
            }
            try_at = free_since + turn_delay_ms(r, P, jitter_ms) * ECCL_NS_PER_MS;
            if (now >= try_at) {
                *outcome = WAIT_TRY_LEAD;
                break;
            }
        }
        if (eccl_deadline_passed(until)) {
            pthread_mutex_unlock(&r->lock);
            if (lead->present)
                WARN("rdzv: job %s: timed out after %llu ms waiting for generation %" PRId64
                     " (its proposer lock: %s)",
                     r->job, (unsigned long long)((now - start) / ECCL_NS_PER_MS), T, lead->id);
            else if (!may_lead)
                WARN("rdzv: job %s: timed out after %llu ms waiting for generation %" PRId64
                     ": the members of generation %" PRId64 " did not start an agreement that "
                     "admits member %s",
                     r->job, (unsigned long long)((now - start) / ECCL_NS_PER_MS), T,
                     P ? P->gen : (int64_t)0, r->id);
            else
                WARN("rdzv: job %s: timed out after %llu ms waiting for generation %" PRId64,
                     r->job, (unsigned long long)((now - start) / ECCL_NS_PER_MS), T);
            return ecclInternalError;
        }
        el_rdzv_cond_wait(r, ECCL_MIN(until, try_at));
    }
    pthread_mutex_unlock(&r->lock);
    return ecclSuccess;
}

/* ---- next ---- */

bool el_rdzv_came_late(struct el_rdzv *r)
{
    bool late = r->came_late;
    r->came_late = false;
    return late;
}

ecclResult_t el_rdzv_next(struct el_rdzv *r, enum el_rdzv_mode mode, int64_t committed_step,
                          uint64_t deadline_ns, struct el_rdzv_gen **out)
{
    ECCL_ARG_CHECK(r, "el_rdzv_next: handle is NULL");
    ECCL_ARG_CHECK(out, "el_rdzv_next: out is NULL");
    ECCL_ARG_CHECK(mode == EL_RDZV_SHRINK || mode == EL_RDZV_REPLACE || mode == EL_RDZV_GROW,
                   "el_rdzv_next: unknown mode %d", (int)mode);
    ECCL_ARG_CHECK(committed_step >= -1, "el_rdzv_next: committed_step %lld is below -1",
                   (long long)committed_step);
    if (r->left) {
        WARN("rdzv: job %s: member %s has left the job", r->job, r->id);
        return ecclInvalidUsage;
    }
    ECCL_TRY(el_rdzv_check_alive(r));
    uint64_t start = eccl_now_ns();
    uint64_t until = eccl_deadline_ms(r->join_timeout_ms);
    if (deadline_ns < until)
        until = deadline_ns;
    ecclResult_t res = ecclSuccess;
    struct el_rdzv_gen *P = NULL;
    unsigned attempt = 0;
    for (;;) {
        el_rdzv_gen_free(P);
        P = NULL;
        ECCL_TRY_GOTO(el_rdzv_check_alive(r), res, out);
        res = el_rdzv_watch_ensure(r, until);
        if (res != ecclSuccess) {
            if (el_rdzv_retryable(res, until) && el_rdzv_backoff(r, attempt++, until))
                continue;
            goto out;
        }

        /* Where the job stands. */
        pthread_mutex_lock(&r->lock);
        if (r->rec_err[0]) {
            char text[256];
            el_textf(text, sizeof(text), "%s", r->rec_err);
            pthread_mutex_unlock(&r->lock);
            WARN("rdzv: job %s: %s", r->job, text);
            res = ecclRemoteError;
            goto out;
        }
        res = r->rec ? el_gen_dup(r->rec, &P) : ecclSuccess;
        int rank = r->rec ? el_gen_lookup(r->rec, r->rec_idx, r->id) : -1;
        int64_t P_rev = r->rec_rev;
        int64_t my_gen = r->my_gen;
        int64_t revoked_max = r->revoked_max;
        pthread_mutex_unlock(&r->lock);
        if (res != ecclSuccess)
            goto out;
        if (P)
            P->mod_rev = P_rev;

        if (P && P->gen > my_gen) {
            /* A revoked generation is never adopted: a member that joined again (its lease was
             * lost) and finds itself in it takes part in the next one, as a survivor. */
            if (rank >= 0 && revoked_max < P->gen) {
                /* Formed with this member: ours. */
                P->rank = rank;
                ECCL_TRY_GOTO(el_rdzv_adopt(r, P, until), res, out);
                INFO(ECCL_LOG_ELASTIC,
                     "rdzv: job %s: member %s is rank %d of %d in generation %" PRId64
                     " (step %" PRId64 ")",
                     r->job, r->id, rank, P->nmembers, P->gen, P->step);
                *out = P;
                return ecclSuccess;
            }
            /* Not in it: this member of an older generation came too late. (In it but revoked:
             * go on, and take part in the next agreement as one of its members.) */
            if (my_gen > 0 && rank < 0) {
                pthread_mutex_lock(&r->lock);
                r->my_gen = 0;
                r->my_rank = -1;
                el_rdzv_gen_free(r->mine);
                eccl_free(r->mine_idx);
                eccl_free(r->lost);
                r->mine = NULL;
                r->mine_idx = NULL;
                r->lost = NULL;
                atomic_store_explicit(&r->cur_gen, 0, memory_order_release);
                pthread_mutex_unlock(&r->lock);
                r->came_late = true;
                WARN("rdzv: job %s: generation %" PRId64 " formed without member %s (of "
                     "generation %" PRId64 "): it came too late; it may join again",
                     r->job, P->gen, r->id, my_gen);
                res = ecclRemoteError;
                goto out;
            }
        }
        if (my_gen == 0 && P && rank < 0 && P->nmembers >= r->max_members && revoked_max < P->gen) {
            /* Full and running: only a replacement of a member that is gone may wait. */
            res = el_rdzv_admission(r, until);
            if (res != ecclSuccess) {
                if (res != ecclInvalidUsage && el_rdzv_retryable(res, until) &&
                    el_rdzv_backoff(r, attempt++, until))
                    continue;
                goto out;
            }
        }

        int64_t T = (P ? P->gen : 0) + 1;
        struct el_lead lead;
        if (r->reg_gen == T && committed_step == -1) {
            /* Registered by el_rdzv_join already (the first generation). */
            lead = r->reg_lead;
        } else {
            enum reg_outcome ro;
            res = register_for(r, T, P_rev, committed_step, until, &ro, &lead);
            if (res != ecclSuccess) {
                if (el_rdzv_retryable(res, until) && el_rdzv_backoff(r, attempt++, until))
                    continue;
                goto out;
            }
            if (ro == REG_STALE)
                continue;
        }
        r->reg_gen = 0;
        /* Wait for the record; take the lock when it is free and it is this member's turn. */
        for (;;) {
            if (lead.mine) {
                struct proposal prop = {.r = r,
                                        .T = T,
                                        .P = P,
                                        .P_rev = P_rev,
                                        .mode = mode,
                                        .lead_rev = lead.create_rev,
                                        .until = until};
                struct el_rdzv_gen *g = NULL;
                res = propose(&prop, &g);
                if (res != ecclSuccess) {
                    if (el_rdzv_retryable(res, until) && el_rdzv_backoff(r, attempt++, until))
                        break;
                    goto out;
                }
                if (g) {
                    /* Take it into the state now rather than waiting for the watch. */
                    unsigned char *val = NULL;
                    size_t len = 0;
                    struct el_key kg;
                    el_key_record(&kg, r->job);
                    if (el_rec_encode_gen(g, &val, &len) == ecclSuccess &&
                        el_rec_seal(val, &len, len + EL_REC_AUTH_BYTES, kg.s) == ecclSuccess) {
                        struct store_kv kv = {
                            .value = (char *)val, .value_len = len, .mod_rev = g->mod_rev};
                        el_rdzv_note_record(r, &kv);
                    }
                    eccl_free(val);
                    el_rdzv_gen_free(g);
                }
                break; /* look at the record again: adopt it, or start over */
            }
            enum wait_outcome wo = WAIT_RECORD;
            ECCL_TRY_GOTO(wait_turn(r, T, &lead, P, start, until, &wo), res, out);
            if (wo != WAIT_TRY_LEAD)
                break;
            res = try_lead(r, T, until, &lead);
            if (res != ecclSuccess) {
                if (el_rdzv_retryable(res, until) && el_rdzv_backoff(r, attempt++, until))
                    break;
                goto out;
            }
        }
    }
out:
    r->reg_gen = 0;
    el_rdzv_gen_free(P);
    return res;
}

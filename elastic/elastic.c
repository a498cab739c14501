/*
 * elastic.c - the elastic API (include/eccl_elastic.h): a communicator per generation of the
 * job's membership (elastic/rdzv.h), failures turned into recovery without a restart.
 *
 * Failure signals reach a handle three ways, all on other threads: core's async-error callback
 * (a transport error, a dead local peer, the watchdog), and the rendezvous watch (the generation
 * revoked by another member, a member's lease gone, this member's own lease gone). Each raises
 * `failed` and revokes the current communicator, so that a collective blocked on healthy peers
 * returns at once. The application then calls ecclElasticRecover, which aborts the communicator
 * (never destroys it: a peer may have aborted its side, and destroy would wait on it), writes
 * the revoke record so that every member moves, agrees the next generation, builds its
 * communicator (init cancellable by a new failure), and compares the members' schedule state.
 * docs/internals/elastic.md has the state machine.
 */
#include "eccl_elastic.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/evlog.h"
#include "common/log.h"
#include "common/param.h"
#include "common/stats.h"
#include "common/time.h"
#include "core/core.h"
#include "elastic/rdzv.h"
#include "store/store.h"

ECCL_PARAM_STR(el_store, "ECCL_ELASTIC_STORE", NULL)
ECCL_PARAM_STR(el_store_url, "ECCL_STORE_URL", NULL)
ECCL_PARAM_STR(el_job, "ECCL_ELASTIC_JOB_ID", NULL)
ECCL_PARAM_STR(el_member, "ECCL_ELASTIC_MEMBER_ID", NULL)
ECCL_PARAM_STR(el_mode, "ECCL_ELASTIC_MODE", "replace")
ECCL_PARAM_INT(el_min, "ECCL_ELASTIC_MIN_RANKS", 1)
ECCL_PARAM_INT(el_max, "ECCL_ELASTIC_MAX_RANKS", 0)
ECCL_PARAM_INT(el_replace_rank, "ECCL_ELASTIC_REPLACE_RANK", -1)
ECCL_PARAM_INT(el_recover_ms, "ECCL_ELASTIC_RECOVER_TIMEOUT_MS", 60000)
ECCL_PARAM_INT(el_check_steps, "ECCL_ELASTIC_CHECK_STEPS", 1)
ECCL_PARAM_INT(el_init_ms, "ECCL_ELASTIC_INIT_TIMEOUT_MS", 30000)

#define SCHED_MAGIC 0x656c736368656431ULL /* "elsched1" */

struct ecclElastic {
    struct store *store;
    struct el_rdzv *rdzv;
    struct el_rdzv_gen *gen; /* current generation (main thread) */
    enum el_rdzv_mode mode;
    ecclConfig_t comm_cfg;
    bool has_comm_cfg;
    int64_t recover_ms;
    int64_t init_ms;
    int64_t check_steps;

    pthread_mutex_t lock; /* protects comm against the callbacks */
    ecclComm_t comm;

    _Atomic int64_t cur_gen;     /* the generation the callbacks act on */
    _Atomic uint32_t failed;     /* the current generation failed */
    _Atomic uint32_t joiners;    /* a joiner registered (seen by the watch) */
    _Atomic uint32_t lease_lost; /* this member's lease is gone: join again before agreeing */
    struct el_rdzv_config rc;    /* to join again; job and member point into the copies below */
    char job[EL_RDZV_MAX_JOB + 1];
    char member[EL_RDZV_MAX_ID + 1];
    bool joiners_agreed; /* every member saw it at the last check (main thread) */
    bool new_member;     /* joined in the current generation, no state */
    int64_t committed;   /* last committed step (-1: none) */
    int64_t commits_since_check;
    char why[256]; /* first failure text of the generation (protected by lock) */
    /* Observability (docs/observability.md): the counter page of ECCL_METRICS_FILE and the
     * events of ECCL_EVENT_LOG. */
    _Atomic int cur_rank;     /* rank in cur_gen (-1: none), for the callbacks' events */
    _Atomic uint64_t fail_ns; /* first failure not recovered from yet (0: none) */
    bool first_step_pending;  /* no step committed in this generation yet (main thread) */
    _Atomic uint32_t leaving; /* in ecclElasticLeave: peers that go first are no failure */
};

/* ---- observability ------------------------------------------------------------------------ */

/* An event of this member: the common fields, then `fmt`'s (each starting with a comma). */
static void el_event(struct ecclElastic *el, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void el_event(struct ecclElastic *el, const char *event, const char *fmt, ...)
{
    if (!eccl_evlog_enabled())
        return;
    char extra[2048] = "", member[2 * EL_RDZV_MAX_ID + 8], common[512];
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(extra, sizeof(extra), fmt, ap);
        va_end(ap);
    }
    int n = snprintf(common, sizeof(common), ",\"generation\":%lld,\"member\":\"%s\"",
                     (long long)atomic_load(&el->cur_gen),
                     eccl_evlog_str(member, sizeof(member), el->member));
    int rank = atomic_load(&el->cur_rank);
    if (rank >= 0 && n > 0 && (size_t)n < sizeof(common))
        n += snprintf(common + n, sizeof(common) - (size_t)n, ",\"rank\":%d", rank);
    /* The launcher's slot (ecclrun's RANK, stable across replacements) and node. */
    const char *names[2] = {"RANK", "GROUP_RANK"}, *keys[2] = {"launch_rank", "node"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(names[i]);
        char *end;
        long x = v && *v ? strtol(v, &end, 10) : -1;
        if (v && *v && !*end && x >= 0 && x < (1L << 30) && n > 0 && (size_t)n < sizeof(common))
            n += snprintf(common + n, sizeof(common) - (size_t)n, ",\"%s\":%ld", keys[i], x);
    }
    eccl_evlog_emit(event, "%s%s", common, extra);
}

static void el_stats_state(enum eccl_stats_state st)
{
    struct eccl_stats_page *p = eccl_stats_page();
    if (p)
        atomic_store_explicit(&p->state, (uint32_t)st, memory_order_relaxed);
}

/* ---- failure signals (other threads) ---------------------------------------------------- */

/* `cause`: an enum eccl_stats_cause; ECCL_STATS_CAUSE_NONE when the generation ends for no
 * failure (joiners admitted): then no failure is counted. */
static void fail(struct ecclElastic *el, int cause, const char *why)
{
    pthread_mutex_lock(&el->lock);
    if (!atomic_exchange(&el->failed, 1)) {
        snprintf(el->why, sizeof(el->why), "%s", why ? why : "");
        INFO(ECCL_LOG_ELASTIC, "elastic: generation %lld failed: %s",
             (long long)atomic_load(&el->cur_gen), el->why);
        if (cause != ECCL_STATS_CAUSE_NONE && !atomic_load(&el->leaving)) {
            uint64_t zero = 0;
            atomic_compare_exchange_strong(&el->fail_ns, &zero, eccl_now_ns());
            struct eccl_stats_page *p = eccl_stats_page();
            if (p) {
                atomic_store_explicit(&p->cause, (uint32_t)cause, memory_order_relaxed);
                atomic_store_explicit(&p->cause_wall_ns, eccl_wall_ns(), memory_order_relaxed);
                atomic_fetch_add_explicit(&p->failures, 1, memory_order_relaxed);
            }
            char w[2 * sizeof(el->why) + 8];
            el_event(el, "failure_seen", ",\"cause\":\"%s\",\"why\":\"%s\"",
                     eccl_stats_cause_name(cause), eccl_evlog_str(w, sizeof(w), el->why));
        }
        el_stats_state(ECCL_STATS_STATE_RECOVERING);
    }
    if (el->comm) /* stop the collectives blocked on healthy peers */
        ecclCommRevoke(el->comm, 0);
    pthread_mutex_unlock(&el->lock);
}

static void on_comm_error(void *arg, ecclResult_t res, const char *text)
{
    (void)res;
    fail(arg, ECCL_STATS_CAUSE_COMM_ERROR, text);
}

static void on_rdzv_event(void *arg, const struct el_rdzv_event *ev)
{
    struct ecclElastic *el = arg;
    int64_t gen = atomic_load(&el->cur_gen);
    char why[512];
    switch (ev->type) {
    case EL_RDZV_EV_REVOKED:
        if (ev->gen == gen) {
            snprintf(why, sizeof(why), "generation revoked by %s: %s", ev->by, ev->why);
            fail(el, ECCL_STATS_CAUSE_REVOKED, why);
        }
        break;
    case EL_RDZV_EV_MEMBER_LOST:
    case EL_RDZV_EV_MEMBER_LEFT:
        if (ev->gen != gen)
            break;
        /* A member that announced its leave while this one leaves too finished its work (its
         * last sends were flushed): this member's closing barrier completes without it. Any
         * other departure loses the generation a rank. */
        if (ev->type == EL_RDZV_EV_MEMBER_LEFT && atomic_load(&el->leaving)) {
            INFO(ECCL_LOG_ELASTIC, "elastic: member %s (rank %d) left the job before this one",
                 ev->member, ev->rank);
            break;
        }
        snprintf(why, sizeof(why), "member %s (rank %d) left the job%s", ev->member, ev->rank,
                 ev->type == EL_RDZV_EV_MEMBER_LEFT ? " (ecclElasticLeave)" : "");
        fail(el, ECCL_STATS_CAUSE_HEARTBEAT_LOST, why);
        break;
    case EL_RDZV_EV_SUPERSEDED:
        if (ev->gen > gen) {
            snprintf(why, sizeof(why), "generation %lld formed without this member",
                     (long long)ev->gen);
            fail(el, ECCL_STATS_CAUSE_SUPERSEDED, why);
        }
        break;
    case EL_RDZV_EV_LEASE_LOST:
        snprintf(why, sizeof(why), "this member's lease is gone: %s", ev->why);
        atomic_store(&el->lease_lost, 1);
        fail(el, ECCL_STATS_CAUSE_STORE_LOST, why);
        break;
    case EL_RDZV_EV_JOINER:
        atomic_store(&el->joiners, 1);
        break;
    case EL_RDZV_EV_ERROR:
    case EL_RDZV_EV_NONE:
        break;
    }
}

/* ---- configuration ----------------------------------------------------------------------- */

static ecclResult_t parse_mode(const char *s, enum el_rdzv_mode *out)
{
    if (strcasecmp(s, "shrink") == 0)
        *out = EL_RDZV_SHRINK;
    else if (strcasecmp(s, "replace") == 0)
        *out = EL_RDZV_REPLACE;
    else if (strcasecmp(s, "grow") == 0)
        *out = EL_RDZV_GROW;
    else {
        WARN("ECCL_ELASTIC_MODE=%s: not shrink, replace or grow", s);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

/* ---- one generation's communicator ------------------------------------------------------ */

struct sched_rec {
    uint64_t magic;
    int64_t gen;
    int64_t step;
    int64_t nranks;
    uint64_t coll_seq;
    uint64_t fingerprint;
};

/* Every member must start the generation with the same view: generation, agreed step, size and
 * schedule state. */
static ecclResult_t check_schedules(struct ecclElastic *el, ecclComm_t comm)
{
    ecclResult_t res = ecclSuccess;
    int n = el->gen->nmembers;
    struct sched_rec mine = {
        .magic = SCHED_MAGIC, .gen = el->gen->gen, .step = el->gen->step, .nranks = n};
    ECCL_TRY(core_comm_schedule(comm, &mine.coll_seq, &mine.fingerprint));
    struct sched_rec *all = eccl_calloc((size_t)n, sizeof(*all), "elastic-sched");
    if (!all)
        return ecclSystemError;
    ECCL_TRY_GOTO(ecclAllGather(&mine, all, sizeof(mine), ecclChar, comm, NULL), res, out);
    for (int r = 0; r < n; r++) {
        if (memcmp(&all[r], &mine, sizeof(mine)) != 0) {
            WARN("elastic: rank %d starts generation %lld with a different schedule state "
                 "(gen %lld step %lld size %lld seq %llu fingerprint %016llx; here gen %lld "
                 "step %lld size %lld seq %llu fingerprint %016llx): refusing to go on",
                 r, (long long)el->gen->gen, (long long)all[r].gen, (long long)all[r].step,
                 (long long)all[r].nranks, (unsigned long long)all[r].coll_seq,
                 (unsigned long long)all[r].fingerprint, (long long)mine.gen, (long long)mine.step,
                 (long long)mine.nranks, (unsigned long long)mine.coll_seq,
                 (unsigned long long)mine.fingerprint);
            res = ecclInvalidUsage;
            goto out;
        }
    }
out:
    eccl_free(all);
    return res;
}

/* Builds the communicator of el->gen: rank 0 publishes the bootstrap id, the others wait for
 * it; init stops when the generation fails meanwhile. */
static ecclResult_t build_comm(struct ecclElastic *el, uint64_t deadline)
{
    ecclResult_t res = ecclSuccess;
    struct el_rdzv_gen *g = el->gen;
    ecclUniqueId id;
    if (g->rank == 0) {
        ECCL_TRY(ecclGetUniqueId(&id));
        ECCL_TRY(el_rdzv_boot_publish(el->rdzv, g, &id, sizeof(id), deadline));
    } else {
        /* In slices, so that a failure of the new generation (rank 0 died before publishing)
         * ends the wait at once. */
        for (;;) {
            uint64_t slice = eccl_deadline_ms(100);
            ecclResult_t r = el_rdzv_boot_wait(el->rdzv, g, slice < deadline ? slice : deadline);
            if (r == ecclSuccess)
                break;
            if (r != ecclInternalError || eccl_deadline_passed(deadline))
                return r;
            if (atomic_load(&el->failed)) {
                WARN("elastic: generation %lld failed before its rank 0 published the bootstrap "
                     "id",
                     (long long)g->gen);
                return ecclRemoteError;
            }
            eccl_log_clear_last_error();
        }
        if (g->boot_len != sizeof(id)) {
            WARN("elastic: generation %lld's bootstrap id has %zu bytes, not %zu",
                 (long long)g->gen, g->boot_len, sizeof(id));
            return ecclRemoteError;
        }
        memcpy(&id, g->boot, sizeof(id));
    }
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    if (el->has_comm_cfg)
        cfg = el->comm_cfg;
    char name[EL_RDZV_MAX_JOB + 32];
    snprintf(name, sizeof(name), "%s/g%lld", el->job, (long long)g->gen);
    cfg.commName = name;
    struct core_init_opts opts = {.cancel = &el->failed, .bootstrap_timeout_ms = el->init_ms};
    ecclComm_t comm = NULL;
    ECCL_TRY(core_comm_init_opts(&comm, g->nmembers, &id, g->rank, &cfg, &opts));
    ECCL_TRY_GOTO(check_schedules(el, comm), res, err_abort);
    pthread_mutex_lock(&el->lock);
    el->comm = comm;
    pthread_mutex_unlock(&el->lock);
    ECCL_TRY_GOTO(core_comm_set_error_callback(comm, on_comm_error, el), res, out);
    if (atomic_load(&el->failed)) /* failed while we were meeting: the next recovery handles it */
        ecclCommRevoke(comm, 0);
    return ecclSuccess;
err_abort:
    ecclCommAbort(comm);
out:
    return res;
}

/* Takes the current communicator, if any, away from the failure watchers and aborts it: after
 * a failure a peer may have aborted its side, and a destroy would wait for it. Only `graceful`
 * (every member passed the closing barrier: ecclElasticLeave) destroys it, because an abort
 * right after a collective can cut the sends that slower peers still receive. */
static void drop_comm(struct ecclElastic *el, bool graceful)
{
    pthread_mutex_lock(&el->lock);
    ecclComm_t comm = el->comm;
    el->comm = NULL;
    pthread_mutex_unlock(&el->lock);
    if (comm) {
        core_comm_set_error_callback(comm, NULL, NULL);
        if (graceful)
            ecclCommDestroy(comm);
        else
            ecclCommAbort(comm);
    }
}

/* This member's lease is gone (the store was away longer than the TTL, or a launcher evicted a
 * live process): register again under the same member id, which the agreement still counts as
 * a survivor of the previous generation. A lease the store kept after all is evicted first. */
static ecclResult_t rejoin(struct ecclElastic *el, uint64_t deadline)
{
    INFO(ECCL_LOG_ELASTIC, "elastic: member %s lost its lease: joining job %s again", el->member,
         el->job);
    el_rdzv_destroy(el->rdzv);
    el->rdzv = NULL;
    el_rdzv_evict(el->store, el->job, el->member, deadline);
    eccl_log_clear_last_error();
    atomic_store(&el->lease_lost, 0);
    ecclResult_t res = el_rdzv_join(el->store, &el->rc, deadline, &el->rdzv);
    if (res != ecclSuccess)
        atomic_store(&el->lease_lost, 1); /* try again at the next attempt */
    return res;
}

/* Agrees the next generation and builds its communicator; retries what a new failure broke
 * until the deadline. */
static ecclResult_t next_generation(struct ecclElastic *el, enum el_rdzv_mode mode,
                                    uint64_t deadline)
{
    ecclResult_t res = ecclSuccess;
    uint64_t backoff_ms = 10;
    uint64_t t0 = eccl_now_ns();
    for (int attempt = 0;; attempt++) {
        drop_comm(el, false);
        if (atomic_load(&el->lease_lost) || !el->rdzv) {
            res = rejoin(el, deadline);
            if (res != ecclSuccess)
                goto retry;
        }
        int64_t old = el->gen ? el->gen->gen : 0;
        if (old > 0) {
            char why[256];
            pthread_mutex_lock(&el->lock);
            snprintf(why, sizeof(why), "%s", el->why[0] ? el->why : "recovery");
            pthread_mutex_unlock(&el->lock);
            /* Everyone moves, also members whose collectives have not failed. */
            res = el_rdzv_revoke(el->rdzv, old, NULL, why, deadline);
            if (res != ecclSuccess)
                goto retry;
            char w[2 * sizeof(why) + 8];
            el_event(el, "revoke", ",\"revoked\":%lld,\"why\":\"%s\"", (long long)old,
                     eccl_evlog_str(w, sizeof(w), why));
        }
        struct el_rdzv_gen *g = NULL;
        res = el_rdzv_next(el->rdzv, mode, el->new_member ? -1 : el->committed, deadline, &g);
        if (res != ecclSuccess) {
            /* The others went on without this member: its state is behind theirs. It joins
             * again with none and takes theirs (ecclElasticSyncState), instead of pulling the
             * agreed step back to its own. */
            if (el_rdzv_came_late(el->rdzv) && !el->new_member) {
                INFO(ECCL_LOG_ELASTIC,
                     "elastic: the job went on without this member (its step "
                     "%lld); joining again without state",
                     (long long)el->committed);
                el->new_member = true;
            }
            goto retry;
        }
        el_rdzv_gen_free(el->gen);
        el->gen = g;
        pthread_mutex_lock(&el->lock);
        atomic_store(&el->failed, 0);
        el->why[0] = '\0';
        atomic_store(&el->cur_gen, g->gen);
        pthread_mutex_unlock(&el->lock);
        INFO(ECCL_LOG_ELASTIC, "elastic: generation %lld: rank %d of %d, agreed step %lld",
             (long long)g->gen, g->rank, g->nmembers, (long long)g->step);
        res = build_comm(el, deadline);
        if (res == ecclSuccess) {
            atomic_store(&el->cur_rank, g->rank);
            el->first_step_pending = true;
            struct eccl_stats_page *p = eccl_stats_page();
            if (p) {
                atomic_store_explicit(&p->generation, g->gen, memory_order_relaxed);
                atomic_store_explicit(&p->nranks, g->nmembers, memory_order_relaxed);
                atomic_store_explicit(&p->rank, g->rank, memory_order_relaxed);
            }
            if (!atomic_load(&el->failed))
                el_stats_state(ECCL_STATS_STATE_READY);
            el_event(el, "generation", ",\"members\":%d,\"step\":%lld,\"took_ms\":%.3f",
                     g->nmembers, (long long)g->step, (double)(eccl_now_ns() - t0) / 1e6);
            return ecclSuccess;
        }
retry:
        if (res == ecclInvalidUsage || res == ecclInvalidArgument)
            return res; /* refused (job full, schedules differ): no use retrying */
        if (eccl_deadline_passed(deadline)) {
            WARN("elastic: no working generation before the recovery deadline: %s",
                 eccl_log_last_error());
            return res != ecclSuccess ? res : ecclRemoteError;
        }
        INFO(ECCL_LOG_ELASTIC, "elastic: attempt %d failed (%s): %s; agreeing again", attempt,
             ecclGetErrorString(res), eccl_log_last_error());
        usleep((useconds_t)backoff_ms * 1000);
        if (backoff_ms < 200)
            backoff_ms *= 2;
    }
}

/* ---- API ------------------------------------------------------------------------------------ */

static void el_free(struct ecclElastic *el)
{
    drop_comm(el, false);
    el_rdzv_destroy(el->rdzv);
    el_rdzv_gen_free(el->gen);
    store_close(el->store);
    pthread_mutex_destroy(&el->lock);
    eccl_free(el);
}

ECCL_API ecclResult_t ecclElasticJoin(ecclElastic_t *out, const ecclElasticConfig_t *config)
{
    ecclResult_t res = ecclSuccess;
    ECCL_ARG_CHECK(out != NULL, "ecclElasticJoin: el (the output pointer) is NULL");
    ecclElasticConfig_t c = ECCL_ELASTIC_CONFIG_INITIALIZER;
    if (config) {
        ECCL_ARG_CHECK(config->size == sizeof(c) && config->magic == ECCL_ELASTIC_CONFIG_MAGIC,
                       "ecclElasticJoin: config was not set up with "
                       "ECCL_ELASTIC_CONFIG_INITIALIZER");
        c = *config;
    }
    const char *url = c.storeUrl ? c.storeUrl : eccl_param_el_store();
    if (!url || !*url)
        url = eccl_param_el_store_url();
    const char *job = c.jobId ? c.jobId : eccl_param_el_job();
    ECCL_ARG_CHECK(url && *url,
                   "ecclElasticJoin: no store: set config.storeUrl or ECCL_ELASTIC_STORE "
                   "(etcd://host:port/prefix or tcp://host:port/prefix)");
    ECCL_ARG_CHECK(job && *job, "ecclElasticJoin: no job id: set config.jobId or "
                                "ECCL_ELASTIC_JOB_ID");
    int min = c.minRanks > 0 ? c.minRanks : (int)eccl_param_el_min();
    int max = c.maxRanks > 0 ? c.maxRanks : (int)eccl_param_el_max();
    if (max <= 0)
        max = min;
    ECCL_ARG_CHECK(min >= 1 && max >= min,
                   "ecclElasticJoin: minRanks %d and maxRanks %d must satisfy 1 <= min <= max", min,
                   max);
    enum el_rdzv_mode mode = EL_RDZV_REPLACE;
    if (c.mode >= 0) {
        ECCL_ARG_CHECK(c.mode <= ecclElasticGrow, "ecclElasticJoin: mode %d is not a mode", c.mode);
        mode = (enum el_rdzv_mode)c.mode;
    } else {
        ECCL_TRY(parse_mode(eccl_param_el_mode(), &mode));
    }

    struct ecclElastic *el = eccl_calloc(1, sizeof(*el), "elastic");
    if (!el)
        return ecclSystemError;
    pthread_mutex_init(&el->lock, NULL);
    el->mode = mode;
    el->committed = -1;
    el->recover_ms = eccl_param_el_recover_ms();
    el->init_ms = eccl_param_el_init_ms();
    el->check_steps = eccl_param_el_check_steps();
    if (c.commConfig) {
        el->comm_cfg = *c.commConfig;
        el->has_comm_cfg = true;
    }
    uint64_t deadline = eccl_deadline_ms(el->recover_ms);
    ECCL_TRY_GOTO(store_open(url, deadline, &el->store), res, err_free);
    struct el_rdzv_config rc;
    el_rdzv_config_init(&rc);
    rc.job = job;
    rc.member_id = c.memberId ? c.memberId : eccl_param_el_member();
    if (rc.member_id && !*rc.member_id)
        rc.member_id = NULL;
    rc.min_members = min;
    rc.max_members = max;
    rc.replace_rank = c.replaceRank >= -1 ? c.replaceRank : (int)eccl_param_el_replace_rank();
    rc.on_event = on_rdzv_event;
    rc.on_event_arg = el;
    ECCL_TRY_GOTO(el_rdzv_join(el->store, &rc, deadline, &el->rdzv), res, err_free);
    snprintf(el->job, sizeof(el->job), "%s", job);
    snprintf(el->member, sizeof(el->member), "%s", el_rdzv_member_id(el->rdzv));
    el->rc = rc;
    el->rc.job = el->job;
    el->rc.member_id = el->member;
    atomic_store(&el->cur_rank, -1);
    el_stats_state(ECCL_STATS_STATE_JOINING);
    {
        char j[2 * EL_RDZV_MAX_JOB + 8];
        el_event(el, "join", ",\"job\":\"%s\",\"min\":%d,\"max\":%d",
                 eccl_evlog_str(j, sizeof(j), el->job), min, max);
    }
    INFO(ECCL_LOG_ELASTIC, "elastic: member %s joined job %s (%d..%d ranks, %s mode)",
         el_rdzv_member_id(el->rdzv), job, min, max,
         mode == EL_RDZV_SHRINK ? "shrink"
         : mode == EL_RDZV_GROW ? "grow"
                                : "replace");
    el->new_member = true;
    /* The first generation (or the one that admits this joiner) within the join timeout. */
    ECCL_TRY_GOTO(next_generation(el, mode, eccl_deadline_ms(rc.join_timeout_ms)), res, err_free);
    *out = el;
    return ecclSuccess;
err_free:
    el_free(el);
    return res;
}

static ecclResult_t check_el(ecclElastic_t el, const char *fn)
{
    /* rdzv may be NULL: a rejoin failed (the store away); Recover tries again, Destroy frees. */
    if (!el || !el->store) {
        WARN("%s: el is NULL or not from ecclElasticJoin", fn);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclElasticGetComm(ecclElastic_t el, ecclComm_t *comm)
{
    ECCL_TRY(check_el(el, "ecclElasticGetComm"));
    ECCL_ARG_CHECK(comm != NULL, "ecclElasticGetComm: comm is NULL");
    if (!el->comm) {
        WARN("ecclElasticGetComm: no communicator: the last recovery failed");
        return ecclInvalidUsage;
    }
    *comm = el->comm;
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclElasticGetInfo(ecclElastic_t el, ecclElasticInfo_t *info)
{
    ECCL_TRY(check_el(el, "ecclElasticGetInfo"));
    ECCL_ARG_CHECK(info != NULL, "ecclElasticGetInfo: info is NULL");
    ECCL_ARG_CHECK(el->gen != NULL, "ecclElasticGetInfo: no generation");
    info->generation = el->gen->gen;
    info->rank = el->gen->rank;
    info->nranks = el->gen->nmembers;
    info->step = el->gen->step;
    info->newMember = el->new_member;
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclElasticPoll(ecclElastic_t el, ecclElasticChange_t *change)
{
    ECCL_TRY(check_el(el, "ecclElasticPoll"));
    ECCL_ARG_CHECK(change != NULL, "ecclElasticPoll: change is NULL");
    /* The callbacks acted on every event; drop the queued copies. */
    struct el_rdzv_event ev;
    for (int i = 0; el->rdzv && i < 64; i++) {
        if (el_rdzv_poll(el->rdzv, 0, &ev) != ecclSuccess || ev.type == EL_RDZV_EV_NONE)
            break;
    }
    if (atomic_load(&el->failed))
        *change = ecclElasticFailed;
    else if (el->joiners_agreed)
        *change = ecclElasticJoiners;
    else
        *change = ecclElasticNoChange;
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclElasticRecover(ecclElastic_t el)
{
    ECCL_TRY(check_el(el, "ecclElasticRecover"));
    uint64_t t0 = eccl_now_ns();
    enum el_rdzv_mode mode = el->mode;
    if (el->joiners_agreed && !atomic_load(&el->failed))
        mode = EL_RDZV_GROW;
    if (!atomic_load(&el->failed)) {
        /* A collective that failed before any callback fired: the communicator says why. */
        ecclResult_t async = ecclSuccess;
        if (el->comm && !el->joiners_agreed)
            ecclCommGetAsyncError(el->comm, &async);
        if (async != ecclSuccess && async != ecclInProgress)
            fail(el, ECCL_STATS_CAUSE_COMM_ERROR, ecclGetLastError(el->comm));
        else
            fail(el, el->joiners_agreed ? ECCL_STATS_CAUSE_NONE : ECCL_STATS_CAUSE_REQUESTED,
                 el->joiners_agreed ? "admitting joiners" : "recovery asked by the application");
    }
    INFO(ECCL_LOG_ELASTIC, "elastic: recovering from generation %lld (%s)", (long long)el->gen->gen,
         el->why);
    ecclResult_t res = next_generation(el, mode, eccl_deadline_ms(el->recover_ms));
    if (res == ecclSuccess) {
        el->joiners_agreed = false;
        atomic_store(&el->joiners, 0);
        el->commits_since_check = 0;
        INFO(ECCL_LOG_ELASTIC, "elastic: generation %lld ready after %.1f ms",
             (long long)el->gen->gen, (double)(eccl_now_ns() - t0) / 1e6);
    }
    return res;
}

ECCL_API ecclResult_t ecclElasticCommit(ecclElastic_t el, int64_t step)
{
    ECCL_TRY(check_el(el, "ecclElasticCommit"));
    ECCL_ARG_CHECK(step > el->committed, "ecclElasticCommit: step %lld is not after %lld",
                   (long long)step, (long long)el->committed);
    el->committed = step;
    el->new_member = false;
    if (el->first_step_pending) {
        el->first_step_pending = false;
        uint64_t failed_at = atomic_exchange(&el->fail_ns, 0);
        if (failed_at) {
            uint64_t took = eccl_now_ns() - failed_at;
            struct eccl_stats_page *p = eccl_stats_page();
            if (p) {
                atomic_store_explicit(&p->last_recovery_ns, took, memory_order_relaxed);
                atomic_store_explicit(&p->recovered_gen, el->gen->gen, memory_order_relaxed);
                atomic_fetch_add_explicit(&p->recoveries, 1, memory_order_relaxed);
            }
            el_event(el, "first_step", ",\"step\":%lld,\"recovery_ms\":%.3f", (long long)step,
                     (double)took / 1e6);
        } else {
            el_event(el, "first_step", ",\"step\":%lld", (long long)step);
        }
    }
    if (el->check_steps <= 0 || ++el->commits_since_check < el->check_steps)
        return ecclSuccess;
    el->commits_since_check = 0;
    if (!el->comm)
        return ecclInvalidUsage;
    /* Joiners are admitted at the same step on every member: agree on what the watch saw. */
    int64_t seen = atomic_load(&el->joiners) && el->mode == EL_RDZV_GROW, any = 0;
    ecclResult_t res = ecclAllReduce(&seen, &any, 1, ecclInt64, ecclMax, el->comm, NULL);
    if (res != ecclSuccess)
        return res;
    if (any)
        el->joiners_agreed = true;
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclElasticSyncState(ecclElastic_t el, void *buf, size_t bytes, int *restored)
{
    ecclResult_t res = ecclSuccess;
    ECCL_TRY(check_el(el, "ecclElasticSyncState"));
    ECCL_ARG_CHECK(buf != NULL || bytes == 0, "ecclElasticSyncState: buf is NULL");
    ECCL_ARG_CHECK(el->comm != NULL, "ecclElasticSyncState: no communicator");
    int n = el->gen->nmembers, me = el->gen->rank;
    int64_t mine[2] = {el->new_member ? -1 : el->committed, (int64_t)bytes};
    int64_t *all = eccl_calloc((size_t)n * 2, sizeof(*all), "elastic-sync");
    if (!all)
        return ecclSystemError;
    ECCL_TRY_GOTO(ecclAllGather(mine, all, 2, ecclInt64, el->comm, NULL), res, out);
    int src = -1;
    for (int r = 0; r < n; r++) {
        if (all[2 * r + 1] != (int64_t)bytes) {
            WARN("ecclElasticSyncState: rank %d syncs %lld bytes, this rank %zu", r,
                 (long long)all[2 * r + 1], bytes);
            res = ecclInvalidUsage;
            goto out;
        }
        if (src < 0 && all[2 * r] == el->gen->step && (el->gen->step >= 0 || r == 0))
            src = r;
    }
    if (src < 0) {
        /* Nobody holds the agreed step (it died with the member that had it): the most advanced
         * survivor's state is the best there is. */
        int64_t best = -2;
        for (int r = 0; r < n; r++)
            if (all[2 * r] > best) {
                best = all[2 * r];
                src = r;
            }
        WARN("elastic: no member holds step %lld; taking rank %d's state (step %lld)",
             (long long)el->gen->step, src, (long long)best);
    }
    if (bytes > 0)
        ECCL_TRY_GOTO(ecclBroadcast(buf, buf, bytes, ecclChar, src, el->comm, NULL), res, out);
    el->committed = all[2 * src];
    el->new_member = false;
    if (restored)
        *restored = me != src;
    INFO(ECCL_LOG_ELASTIC, "elastic: state of step %lld synchronised from rank %d (%zu bytes)",
         (long long)el->committed, src, bytes);
out:
    eccl_free(all);
    return res;
}

ECCL_API ecclResult_t ecclElasticLeave(ecclElastic_t el)
{
    ECCL_TRY(check_el(el, "ecclElasticLeave"));
    atomic_store(&el->leaving, 1);
    /* Everyone finished its last collective before anyone's lease goes: a member that sees
     * another leave while it still works would count it as a failure. */
    bool done = false;
    if (el->comm && !atomic_load(&el->failed)) {
        /* A host communicator reduces a host int (its fast path); a CUDA one cannot take host
         * buffers and meets through its bootstrap's sockets instead. */
        int one = 1, sum = 0, dev = -1;
        ecclCommCuDevice(el->comm, &dev);
        if (dev < 0)
            done =
                ecclAllReduce(&one, &sum, 1, ecclInt32, ecclSum, el->comm, NULL) == ecclSuccess &&
                sum == el->gen->nmembers;
        else
            done = core_comm_barrier(el->comm) == ecclSuccess;
        done = done && !atomic_load(&el->failed);
    }
    el_event(el, "exit", ",\"how\":\"leave\",\"step\":%lld", (long long)el->committed);
    el_stats_state(ECCL_STATS_STATE_LEFT);
    atomic_store(&el->cur_gen, -1); /* departures from now on are not failures */
    drop_comm(el, done);
    ecclResult_t res = el->rdzv ? el_rdzv_leave(el->rdzv, eccl_deadline_ms(5000)) : ecclSuccess;
    el_free(el);
    return res;
}

ECCL_API ecclResult_t ecclElasticDestroy(ecclElastic_t el)
{
    ECCL_TRY(check_el(el, "ecclElasticDestroy"));
    el_event(el, "exit", ",\"how\":\"destroy\",\"step\":%lld", (long long)el->committed);
    el_stats_state(ECCL_STATS_STATE_LEFT);
    atomic_store(&el->cur_gen, -1);
    el_free(el);
    return ecclSuccess;
}

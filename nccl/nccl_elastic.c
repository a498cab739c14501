/*
 * nccl_elastic.c - ECCL_ELASTIC=1: NCCL communicators from the elastic membership.
 *
 * A framework that handles ncclRemoteError by aborting its communicator and initialising a new
 * one (PyTorch's ProcessGroupNCCL does) recovers through the NCCL API alone: the first NCCL init
 * of the job's size joins the job (ecclElasticJoin, with the rendezvous variables ecclrun
 * exports), and each such init is served from the current generation: the generation's
 * communicator (a host communicator owned by the elastic handle, used for control only) is split
 * with the caller's rank as the key, so the new communicator has the ranks and the config the
 * application asked for and is the application's to abort or destroy. The unique id passed to the
 * init is not used. When the generation failed since the last init (the membership saw a member
 * leave, die or be evicted, or one of the generation's communicators reported an error), the
 * init first recovers (ecclElasticRecover): in replace mode the survivors wait for the
 * replacement that ecclrun starts, which joins with its first init. Inits of fewer ranks than
 * the job (sub-communicators) are ordinary inits from the unique id.
 *
 * ncclCommGetAsyncError reports a failure of the generation that the membership saw before the
 * communicator's own transports did, and revokes the communicator, so that a watchdog thread
 * polling it (PyTorch's) stops a collective blocked on a stopped peer in the membership's time.
 *
 * Threads: the elastic handle is used under `lock` (inits, and the watchdog's poll, which only
 * tries the lock); the table of communicators under `tab_lock`. The core error callback only
 * raises failed_gen (its argument is the generation number, never a pointer that could dangle).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "core/core.h"
#include "eccl_elastic.h"
#include "nccl/nccl_int.h"

ECCL_PARAM_INT(elastic, "ECCL_ELASTIC", 0)

struct el_comm {
    struct el_comm *next;
    ecclComm_t comm;
    int64_t gen;
    bool revoked; /* by nccl_el_async_error, after its generation failed */
};

static struct {
    pthread_mutex_t lock; /* the elastic handle */
    ecclElastic_t el;     /* joined at the first elastic init; freed at exit */
    bool atexit_set;
    pthread_mutex_t tab_lock; /* comms */
    struct el_comm *comms;
    _Atomic int ncomms;
    _Atomic int64_t failed_gen; /* the latest generation known to have failed; -1: none */
} g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .tab_lock = PTHREAD_MUTEX_INITIALIZER,
    .failed_gen = -1,
};

bool nccl_el_enabled(void)
{
    return eccl_param_elastic() != 0;
}

static void raise_failed(int64_t gen)
{
    int64_t cur = atomic_load(&g.failed_gen);
    while (cur < gen && !atomic_compare_exchange_weak(&g.failed_gen, &cur, gen)) {
    }
}

/* A communicator of generation (intptr_t)arg failed (core's error callback: any thread). */
static void on_comm_error(void *arg, ecclResult_t res, const char *text)
{
    (void)res;
    (void)text;
    raise_failed((int64_t)(intptr_t)arg);
}

/* At exit the handle is freed without the clean leave, which would wait for every member in a
 * collective: a process that exits is done with its communicators, and its lease goes. */
static void el_at_exit(void)
{
    if (pthread_mutex_trylock(&g.lock) != 0)
        return;
    if (g.el) {
        ecclElasticDestroy(g.el);
        g.el = NULL;
    }
    pthread_mutex_unlock(&g.lock);
}

/* Joins the job; the generation communicators are host communicators (control only). */
static ecclResult_t join(void)
{
    ecclConfig_t ctrl = ECCL_CONFIG_INITIALIZER;
    ctrl.deviceKind = ECCL_DEVICE_HOST;
    ctrl.nChannels = 1;
    ecclElasticConfig_t ec = ECCL_ELASTIC_CONFIG_INITIALIZER;
    ec.commConfig = &ctrl;
    INFO(ECCL_LOG_ELASTIC, "ECCL_ELASTIC=1: the first NCCL init joins the elastic job");
    ECCL_TRY(ecclElasticJoin(&g.el, &ec));
    if (!g.atexit_set && atexit(el_at_exit) == 0)
        g.atexit_set = true;
    return ecclSuccess;
}

/* Recovers when the current generation failed or has no communicator. */
static ecclResult_t recover_if_failed(void)
{
    ecclElasticChange_t change = ecclElasticNoChange;
    ecclElasticInfo_t info;
    ecclComm_t ctrl = NULL;
    ECCL_TRY(ecclElasticPoll(g.el, &change));
    ECCL_TRY(ecclElasticGetInfo(g.el, &info));
    bool comm_failed = atomic_load(&g.failed_gen) >= info.generation;
    bool no_comm = ecclElasticGetComm(g.el, &ctrl) != ecclSuccess;
    if (change != ecclElasticFailed && !comm_failed && !no_comm)
        return ecclSuccess;
    eccl_log_clear_last_error();
    INFO(ECCL_LOG_ELASTIC, "ECCL_ELASTIC=1: generation %" PRId64 " %s: recovering before the init",
         info.generation,
         change == ecclElasticFailed ? "failed"
         : comm_failed               ? "had a communicator fail"
                                     : "has no communicator");
    raise_failed(info.generation);
    ECCL_TRY(ecclElasticRecover(g.el));
    ECCL_TRY(ecclElasticGetInfo(g.el, &info));
    INFO(ECCL_LOG_ELASTIC, "ECCL_ELASTIC=1: generation %" PRId64 ": rank %d of %d", info.generation,
         info.rank, info.nranks);
    return ecclSuccess;
}

ecclResult_t nccl_el_init(ecclComm_t *comm, int nranks, int rank, const ecclConfig_t *config,
                          bool *handled)
{
    ecclResult_t res = ecclSuccess;
    ecclElasticInfo_t info;
    ecclComm_t ctrl = NULL, c = NULL;
    struct el_comm *e = NULL;
    *handled = true;
    pthread_mutex_lock(&g.lock);
    if (!g.el)
        ECCL_TRY_GOTO(join(), res, out);
    else
        ECCL_TRY_GOTO(recover_if_failed(), res, out);
    ECCL_TRY_GOTO(ecclElasticGetInfo(g.el, &info), res, out);
    if (nranks < info.nranks) {
        INFO(ECCL_LOG_ELASTIC,
             "ECCL_ELASTIC=1: a communicator of %d ranks (the job has %d): an ordinary one, from "
             "its unique id",
             nranks, info.nranks);
        *handled = false;
        goto out;
    }
    if (nranks > info.nranks) {
        WARN("ECCL_ELASTIC=1: the init asks for %d ranks, but generation %" PRId64 " of the job "
             "has %d members; through the NCCL API the job keeps its size (replace mode): in "
             "shrink or grow mode use the elastic API (eccl_elastic.h)",
             nranks, info.generation, info.nranks);
        res = ecclInvalidUsage;
        goto out;
    }
    ECCL_TRY_GOTO(ecclElasticGetComm(g.el, &ctrl), res, out);
    ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
    if (config)
        cfg = *config;
    res = ecclCommSplit(ctrl, 0, rank, &c, &cfg);
    if (res != ecclSuccess) {
        raise_failed(info.generation); /* the next init recovers */
        goto out;
    }
    int got = -1;
    ecclCommUserRank(c, &got);
    if (got != rank) {
        WARN("ECCL_ELASTIC=1: this process asked for rank %d but is rank %d of the %d members of "
             "generation %" PRId64 ": two processes asked for the same rank",
             rank, got, info.nranks, info.generation);
        res = ecclInvalidUsage;
        goto err_abort;
    }
    ECCL_CALLOC_GOTO(e, 1, "nccl-elastic", res, err_abort);
    e->comm = c;
    e->gen = info.generation;
    ECCL_TRY_GOTO(core_comm_set_error_callback(c, on_comm_error, (void *)(intptr_t)info.generation),
                  res, err_free);
    pthread_mutex_lock(&g.tab_lock);
    e->next = g.comms;
    g.comms = e;
    atomic_fetch_add(&g.ncomms, 1);
    pthread_mutex_unlock(&g.tab_lock);
    INFO(ECCL_LOG_INIT | ECCL_LOG_ELASTIC,
         "ECCL_ELASTIC=1: comm %p rank %d nranks %d from generation %" PRId64 " of the job",
         (void *)c, rank, nranks, info.generation);
    *comm = c;
    goto out;
err_free:
    eccl_free(e);
err_abort:
    ecclCommAbort(c);
out:
    pthread_mutex_unlock(&g.lock);
    return res;
}

ecclResult_t nccl_el_async_error(ecclComm_t comm, ecclResult_t *asyncError)
{
    ECCL_TRY(ecclCommGetAsyncError(comm, asyncError));
    if (atomic_load(&g.ncomms) == 0 || *asyncError != ecclSuccess)
        return ecclSuccess;
    int64_t gen = -1;
    pthread_mutex_lock(&g.tab_lock);
    for (struct el_comm *e = g.comms; e; e = e->next)
        if (e->comm == comm)
            gen = e->gen;
    pthread_mutex_unlock(&g.tab_lock);
    if (gen < 0)
        return ecclSuccess;
    /* A recovery or an init holds the lock for long: then ask again at the next poll. */
    if (atomic_load(&g.failed_gen) < gen && pthread_mutex_trylock(&g.lock) == 0) {
        ecclElasticChange_t change = ecclElasticNoChange;
        ecclElasticInfo_t info;
        if (g.el && ecclElasticPoll(g.el, &change) == ecclSuccess && change == ecclElasticFailed &&
            ecclElasticGetInfo(g.el, &info) == ecclSuccess)
            raise_failed(info.generation);
        pthread_mutex_unlock(&g.lock);
    }
    if (atomic_load(&g.failed_gen) < gen)
        return ecclSuccess;
    bool first = false;
    pthread_mutex_lock(&g.tab_lock);
    for (struct el_comm *e = g.comms; e; e = e->next) {
        if (e->comm == comm && !e->revoked) {
            e->revoked = true;
            first = true;
        }
    }
    pthread_mutex_unlock(&g.tab_lock);
    if (first) {
        WARN("ECCL_ELASTIC=1: generation %" PRId64 " of the job failed (a member died, left or "
             "was evicted): comm %p is revoked; abort it and initialise a new communicator, "
             "which joins the next generation",
             gen, (void *)comm);
        ecclCommRevoke(comm, 0);
    }
    *asyncError = ecclRemoteError;
    return ecclSuccess;
}

void nccl_el_forget(ecclComm_t comm)
{
    if (!comm || atomic_load(&g.ncomms) == 0)
        return;
    struct el_comm *gone = NULL;
    pthread_mutex_lock(&g.tab_lock);
    for (struct el_comm **pp = &g.comms; *pp; pp = &(*pp)->next) {
        if ((*pp)->comm == comm) {
            gone = *pp;
            *pp = gone->next;
            atomic_fetch_sub(&g.ncomms, 1);
            break;
        }
    }
    pthread_mutex_unlock(&g.tab_lock);
    eccl_free(gone);
}

/*
 * exec.c - the communicator's channel threads, which run plans on the host executor.
 *
 * Each channel has a thread that sleeps until a plan is posted, runs the channel's list of work
 * descriptors (kern_host_run) and signals completion. The thread that launched the group may run
 * channel 0 itself (inline0) to save a hand-off. A failure on any channel marks the communicator
 * failed, which raises the abort flag so that the other channels stop waiting at once.
 */
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "core/core_int.h"
#include "core/flat.h"

static void fill_ctx(const struct ecclComm *comm, struct kern_ctx *ctx)
{
    ctx->abort = &comm->abort;
    ctx->timeout_ns = comm->timeout_ms > 0 ? (uint64_t)comm->timeout_ms * ECCL_NS_PER_MS : 0;
    ctx->spin = comm->spin;
    ctx->spread = NULL;
    ctx->stream = comm->host_stream;
    ctx->stream_out_bytes = comm->host_stream_out_bytes;
    ctx->failed_peer = -1;
}

static ecclResult_t plan_reclaim(struct eccl_callback *cb)
{
    struct core_plan *p = eccl_container_of(cb, struct core_plan, reclaim);
    eccl_pool_put(&p->comm->plan_pool, p);
    return ecclSuccess;
}

static void run_channel(struct core_channel *ch, struct core_plan *p)
{
    struct kern_ctx ctx;
    fill_ctx(ch->comm, &ctx);
    ctx.spread = &ch->spread;
    int c = ch->kc.id;
    ecclResult_t res = kern_host_run(&ch->kc, p->work[c], p->nwork[c], &ctx);
    ch->result = res;
    ch->failed_peer = ctx.failed_peer;
    if (res != ecclSuccess)
        core_comm_set_error(ch->comm, res);
}

static void *chan_main(void *arg)
{
    struct core_channel *ch = arg;
    struct ecclComm *comm = ch->comm;
    eccl_log_set_dev(comm->rank);
    for (;;) {
        /* Sleep until posted; the stop request is a plan of NULL. */
        while (!eccl_event_is_set(&ch->go))
            eccl_futex_wait(&ch->go.state, 0, 100 * ECCL_NS_PER_MS, false);
        eccl_event_reset(&ch->go);
        struct core_plan *p = ch->plan;
        if (!p)
            break;
        run_channel(ch, p);
        eccl_event_set(&ch->done);
    }
    return NULL;
}

ecclResult_t core_exec_start(struct ecclComm *comm)
{
    for (int c = 0; c < comm->nchannels; c++) {
        struct core_channel *ch = &comm->channels[c];
        ch->comm = comm;
        eccl_event_reset(&ch->go);
        eccl_event_reset(&ch->done);
        ch->plan = NULL;
        int rc = ECCL_FAULT_THREAD(pthread_create(&ch->thread, NULL, chan_main, ch));
        if (rc != 0) {
            WARN("pthread_create of channel %d failed: %s", c, strerror(rc));
            core_exec_stop(comm);
            return ecclSystemError;
        }
        ch->thread_started = true;
    }
    return ecclSuccess;
}

void core_exec_stop(struct ecclComm *comm)
{
    for (int c = 0; c < comm->nchannels; c++) {
        struct core_channel *ch = &comm->channels[c];
        if (!ch->thread_started)
            continue;
        ch->plan = NULL;
        eccl_event_set(&ch->go);
        pthread_join(ch->thread, NULL);
        ch->thread_started = false;
    }
}

void core_exec_close_all(struct ecclComm *comm)
{
    /* Closing (not only waking) every connector tells the peers blocked on them that this rank
     * gave up, even when their own failure detection has not seen it. error_lock: the
     * transport may be setting a connector pointer at this moment (core/transport.c). */
    pthread_mutex_lock(&comm->error_lock);
    for (int c = 0; c < comm->nchannels; c++) {
        struct kern_chan *kc = &comm->channels[c].kc;
        kern_conn_close(kc->ring_recv);
        kern_conn_close(kc->ring_send);
        kern_conn_close(kc->tree_up_send);
        kern_conn_close(kc->tree_down_recv);
        for (int i = 0; i < 2; i++) {
            kern_conn_close(kc->tree_up_recv[i]);
            kern_conn_close(kc->tree_down_send[i]);
        }
        for (int r = 0; kc->p2p_send && r < comm->nranks; r++) {
            kern_conn_close(kc->p2p_send[r]);
            kern_conn_close(kc->p2p_recv[r]);
        }
    }
    core_flat_close(comm);
    pthread_mutex_unlock(&comm->error_lock);
}

ecclResult_t core_exec_post(struct ecclComm *comm, struct core_plan *plan, bool inline0)
{
    atomic_store(&plan->pending, 0);
    for (int c = inline0 ? 1 : 0; c < comm->nchannels; c++) {
        struct core_channel *ch = &comm->channels[c];
        if (plan->nwork[c] == 0)
            continue;
        eccl_event_reset(&ch->done);
        ch->plan = plan;
        eccl_event_set(&ch->go);
    }
    return ecclSuccess;
}

ecclResult_t core_exec_wait(struct ecclComm *comm, struct core_plan *plan, bool inline0)
{
    ecclResult_t res = ecclSuccess;
    if (inline0 && plan->nwork[0] > 0) {
        run_channel(&comm->channels[0], plan);
        res = comm->channels[0].result;
    }
    for (int c = inline0 ? 1 : 0; c < comm->nchannels; c++) {
        struct core_channel *ch = &comm->channels[c];
        if (plan->nwork[c] == 0)
            continue;
        /* The channel's own waits check the abort flag and the watchdog, so this ends. */
        while (!eccl_event_is_set(&ch->done))
            eccl_futex_wait(&ch->done.state, 0, 100 * ECCL_NS_PER_MS, false);
        if (ch->result != ecclSuccess && res == ecclSuccess)
            res = ch->result;
    }
    plan->result = res;
    plan->reclaim.fn = plan_reclaim;
    eccl_cbq_push(&comm->reclaim_q, &plan->reclaim);
    return res;
}

/* A CUDA communicator's plan: queued on the group's stream; the descriptors are copied, so the
 * plan goes back to the pool at once. */
static ecclResult_t launch_dev(struct ecclComm *comm, struct core_plan *p)
{
    struct kern_chan *chans[CORE_MAX_CHANNELS];
    for (int c = 0; c < comm->nchannels; c++)
        chans[c] = &comm->channels[c].kc;
    ecclResult_t res = kern_dev_launch(comm->dev, chans, p->work, p->nwork, comm->stream);
    /* A proxy that moves network steps for these kernels cannot be rung by them: wake it now,
     * and it stays awake while steps flow. */
    for (int c = 0; c < comm->nchannels; c++)
        if (comm->channels[c].kc.bell)
            eccl_bell_ring(comm->channels[c].kc.bell);
    eccl_pool_put(&comm->plan_pool, p);
    if (res != ecclSuccess)
        core_comm_set_error(comm, res);
    return res;
}

ecclResult_t core_exec_plans(struct ecclComm *comm, struct eccl_queue *plans)
{
    ecclResult_t res = ecclSuccess;
    struct eccl_qnode *q;
    while ((q = eccl_queue_pop(plans)) != NULL) {
        struct core_plan *p = eccl_container_of(q, struct core_plan, node);
        if (res != ecclSuccess) {
            eccl_pool_put(&comm->plan_pool, p);
            continue;
        }
        comm->sched_hash = eccl_hash64(&p->fingerprint, sizeof(p->fingerprint), comm->sched_hash);
        comm->plans_launched++;
        int ncoll = p->ncoll;
        bool on_host = true;
        if (comm->dev) {
            res = kern_dev_plan_on_host(p->work, p->nwork, comm->nchannels, &on_host);
            /* Host buffers on a CUDA communicator: the host executor runs the plan on the same
             * connectors, step for step like the kernels, once the kernels launched before it
             * have finished with them. */
            if (res == ecclSuccess && on_host)
                res = kern_dev_drain(comm->dev, comm->timeout_ms > 0 ? comm->timeout_ms : 600000);
            if (res != ecclSuccess) {
                eccl_pool_put(&comm->plan_pool, p);
                core_comm_set_error(comm, res);
                continue;
            }
        }
        if (!on_host) {
            res = launch_dev(comm, p);
            if (res == ecclSuccess)
                comm->coll_seq += (uint64_t)ncoll;
            continue;
        }
        core_exec_post(comm, p, true);
        res = core_exec_wait(comm, p, true);
        if (res == ecclSuccess)
            comm->coll_seq += (uint64_t)ncoll;
    }
    ecclResult_t r = eccl_cbq_poll(&comm->reclaim_q);
    return res != ecclSuccess ? res : r;
}

/*
 * group.c - ecclGroupStart/End: tasks gather per communicator until the outermost group ends,
 * then each communicator plans and runs them.
 *
 * Group state is per thread, as in NCCL. A group that touches one communicator runs on the
 * calling thread; one that touches several (one thread driving several ranks) runs each
 * communicator on a thread of its own, since their work depends on each other. Communicator
 * inits called inside a group run at the group's end, concurrently.
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/param.h"
#include "core/core_int.h"
#include "core/flat.h"

ECCL_PARAM_INT(work_fifo_bytes, "ECCL_WORK_FIFO_BYTES", 1 << 20)

struct group_init {
    struct group_init *next;
    ecclComm_t *out;
    int nranks;
    ecclUniqueId id;
    int rank;
    ecclConfig_t config;
    bool has_config;
    ecclResult_t result;
    char error[256]; /* the init thread's last-error text */
    pthread_t thread;
};

static _Thread_local int group_depth;
static _Thread_local struct ecclComm *group_comms;
static _Thread_local struct group_init *group_inits;
static _Thread_local ecclResult_t group_error; /* first error of a call inside the group */

int core_group_depth(void)
{
    return group_depth;
}

ecclResult_t core_group_add_task(struct ecclComm *comm, struct core_task *task)
{
    if (task->func == ECCL_FUNC_SEND || task->func == ECCL_FUNC_RECV)
        eccl_queue_push(&comm->p2p_tasks, &task->node);
    else
        eccl_queue_push(&comm->coll_tasks, &task->node);
    if (!comm->in_group_list) {
        comm->in_group_list = true;
        comm->group_next = group_comms;
        group_comms = comm;
    }
    return ecclSuccess;
}

void core_group_record_error(ecclResult_t res)
{
    if (group_depth > 0 && group_error == ecclSuccess)
        group_error = res;
}

static void drop_tasks(struct ecclComm *comm)
{
    struct eccl_qnode *q;
    while ((q = eccl_queue_pop(&comm->coll_tasks)) != NULL)
        eccl_pool_put(&comm->task_pool, eccl_container_of(q, struct core_task, node));
    while ((q = eccl_queue_pop(&comm->p2p_tasks)) != NULL)
        eccl_pool_put(&comm->task_pool, eccl_container_of(q, struct core_task, node));
}

size_t core_group_work_budget(void)
{
    int64_t fifo = eccl_param_work_fifo_bytes();
    if (fifo < (int64_t)(2 * sizeof(struct eccl_work)))
        fifo = 2 * sizeof(struct eccl_work);
    return (size_t)fifo / 2 / sizeof(struct eccl_work);
}

/* Plans and runs comm's gathered tasks; always leaves the task queues empty and the memory
 * stack at the depth it found it. */
static ecclResult_t comm_launch(struct ecclComm *comm)
{
    ecclResult_t res = ecclSuccess;
    struct eccl_queue plans;
    eccl_queue_init(&plans);
    atomic_fetch_add(&comm->inflight, 1);
    eccl_log_set_dev(comm->rank);
    int err = atomic_load(&comm->async_error);
    if (err != ecclSuccess && err != ecclInProgress) {
        char why[sizeof(comm->last_error)];
        pthread_mutex_lock(&comm->error_lock);
        snprintf(why, sizeof(why), "%s", comm->last_error);
        pthread_mutex_unlock(&comm->error_lock);
        WARN("rank %d: the communicator failed earlier (%s): %s; abort or shrink it", comm->rank,
             ecclGetErrorString((ecclResult_t)err), why);
        res = (ecclResult_t)err;
        goto out_refused;
    }
    if (atomic_load(&comm->revoked)) {
        WARN("rank %d: the communicator was revoked", comm->rank);
        res = ecclInvalidUsage;
        goto out_refused;
    }
    ECCL_TRY_GOTO(eccl_memstack_push(&comm->stack), res, out_drop);
    if (comm->p2p_tasks.len) {
        ECCL_TRY_GOTO(core_transport_p2p_connect(comm, &comm->p2p_tasks), res, out_pop);
        core_reg_p2p_prepare(comm, &comm->p2p_tasks);
    }
    /* Plans and runs them; collectives that take the flat path run in their place. */
    res = core_flat_launch(comm, &plans);
out_pop:
    /* Plans not run (a failure while building) go back to the pool. */
    while (!eccl_queue_empty(&plans))
        eccl_pool_put(&comm->plan_pool,
                      eccl_container_of(eccl_queue_pop(&plans), struct core_plan, node));
    eccl_memstack_pop(&comm->stack);
out_drop:
    /* Work was planned or started: a failure now leaves peers waiting, so the communicator
     * fails and the other ranks are told. */
    if (res != ecclSuccess)
        core_comm_set_error(comm, res == ecclInvalidArgument ? ecclInvalidUsage : res);
out_refused:
    drop_tasks(comm);
    atomic_fetch_sub(&comm->inflight, 1);
    return res;
}

struct launch_job {
    struct ecclComm *comm;
    ecclResult_t result;
    char error[256];
    pthread_t thread;
};

static void *launch_main(void *arg)
{
    struct launch_job *j = arg;
    j->result = comm_launch(j->comm);
    if (j->result != ecclSuccess)
        snprintf(j->error, sizeof(j->error), "%s", eccl_log_last_error());
    return NULL;
}

static void *init_main(void *arg)
{
    struct group_init *g = arg;
    g->result =
        core_comm_create(g->out, g->nranks, &g->id, g->rank, g->has_config ? &g->config : NULL);
    if (g->result != ecclSuccess)
        snprintf(g->error, sizeof(g->error), "%s", eccl_log_last_error());
    return NULL;
}

ecclResult_t core_group_add_init(ecclComm_t *out, int nranks, const ecclUniqueId *id, int rank,
                                 const ecclConfig_t *config)
{
    struct group_init *g = eccl_calloc(1, sizeof(*g), "group-init");
    if (!g)
        return ecclSystemError;
    g->out = out;
    g->nranks = nranks;
    g->id = *id;
    g->rank = rank;
    if (config) {
        g->config = *config;
        g->has_config = true;
    }
    struct group_init **pp = &group_inits;
    while (*pp)
        pp = &(*pp)->next;
    *pp = g;
    return ecclSuccess;
}

static ecclResult_t run_inits(void)
{
    ecclResult_t res = ecclSuccess;
    struct group_init *list = group_inits;
    group_inits = NULL;
    for (struct group_init *g = list; g; g = g->next) {
        int rc = ECCL_FAULT_THREAD(pthread_create(&g->thread, NULL, init_main, g));
        if (rc != 0) {
            WARN("pthread_create for a grouped init failed: %s", strerror(rc));
            g->result = ecclSystemError;
            g->thread = 0;
        }
    }
    for (struct group_init *g = list; g; g = g->next) {
        if (g->thread)
            pthread_join(g->thread, NULL);
        if (g->result != ecclSuccess && res == ecclSuccess) {
            res = g->result;
            eccl_log_set_last_error(g->error); /* the caller asks its own thread's text */
        }
    }
    while (list) {
        struct group_init *n = list->next;
        eccl_free(list);
        list = n;
    }
    return res;
}

ECCL_API ecclResult_t ecclGroupStart(void)
{
    if (group_depth == 0)
        group_error = ecclSuccess;
    group_depth++;
    return ecclSuccess;
}

static ecclResult_t group_end(bool simulate, ecclSimInfo_t *sim)
{
    if (group_depth == 0) {
        WARN("ecclGroupEnd called without a matching ecclGroupStart");
        return ecclInvalidUsage;
    }
    if (--group_depth > 0)
        return ecclSuccess;

    ecclResult_t res = group_error;
    group_error = ecclSuccess;
    struct ecclComm *comms = group_comms;
    group_comms = NULL;
    int ncomms = 0;
    for (struct ecclComm *c = comms; c; c = c->group_next) {
        c->in_group_list = false;
        ncomms++;
    }

    if (group_inits) {
        ecclResult_t r = simulate ? ecclSuccess : run_inits();
        if (res == ecclSuccess)
            res = r;
    }
    if (res != ecclSuccess || simulate) {
        /* A call in the group failed (it was reported then), or only the cost is wanted. */
        float t = 0;
        for (struct ecclComm *c = comms; c; c = c->group_next) {
            for (struct eccl_qnode *q = c->coll_tasks.head; q; q = q->next) {
                struct core_task *tk = eccl_container_of(q, struct core_task, node);
                size_t bytes = tk->count * eccl_dtype_size(tk->dtype);
                /* A latency-bandwidth model of a ring on shared memory: 2 us a step,
                 * 5 GB/s a link. */
                int steps = tk->func == ECCL_FUNC_ALLREDUCE ? 2 * (c->nranks - 1) : c->nranks - 1;
                t += (float)steps * 2.0f + (float)bytes * (float)steps / (float)c->nranks / 5e3f;
            }
            drop_tasks(c);
        }
        if (sim)
            sim->estimatedTime = t;
        while (group_inits) {
            struct group_init *n = group_inits->next;
            eccl_free(group_inits);
            group_inits = n;
        }
        return res;
    }

    if (ncomms == 1)
        return comm_launch(comms);
    if (ncomms == 0)
        return ecclSuccess;
    struct launch_job *jobs = eccl_calloc((size_t)ncomms, sizeof(*jobs), "group-launch");
    if (!jobs) {
        for (struct ecclComm *c = comms; c; c = c->group_next)
            drop_tasks(c);
        return ecclSystemError;
    }
    int i = 0;
    for (struct ecclComm *c = comms; c; c = c->group_next, i++) {
        jobs[i].comm = c;
        int rc = ECCL_FAULT_THREAD(pthread_create(&jobs[i].thread, NULL, launch_main, &jobs[i]));
        if (rc != 0) {
            WARN("pthread_create for a group launch failed: %s", strerror(rc));
            jobs[i].thread = 0;
            jobs[i].result = ecclSystemError;
            drop_tasks(c);
            core_comm_set_error(c, ecclSystemError);
        }
    }
    for (i = 0; i < ncomms; i++) {
        if (jobs[i].thread)
            pthread_join(jobs[i].thread, NULL);
        if (jobs[i].result != ecclSuccess && res == ecclSuccess) {
            res = jobs[i].result;
            eccl_log_set_last_error(jobs[i].error);
        }
    }
    eccl_free(jobs);
    return res;
}

ECCL_API ecclResult_t ecclGroupEnd(void)
{
    return group_end(false, NULL);
}

ECCL_API ecclResult_t ecclGroupSimulateEnd(ecclSimInfo_t *simInfo)
{
    if (!simInfo) {
        WARN("ecclGroupSimulateEnd: simInfo is NULL");
        return ecclInvalidArgument;
    }
    if (simInfo->magic != 0x74685283 || simInfo->size < sizeof(ecclSimInfo_t)) {
        WARN("ecclGroupSimulateEnd: simInfo was not set up with ECCL_SIM_INFO_INITIALIZER "
             "(magic 0x%x, size %zu)",
             simInfo->magic, simInfo->size);
        return ecclInvalidArgument;
    }
    return group_end(true, simInfo);
}

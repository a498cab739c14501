/*
 * comm.c - communicator life cycle and queries: init (rank, config, all, scalable), split,
 * shrink, finalize, destroy, abort, revoke, errors, registration.
 *
 * A communicator is bound to the host (buffers in host memory, the stream ignored, calls return
 * when their work is done) when ECCL_DEVICE=host, when the config's deviceKind says so, or when
 * no CUDA device is present. CUDA communicators need the GPU executor, which this build does not
 * have yet: init says so.
 *
 * Destroy and abort never block on a peer: abort raises the abort flag (every wait checks it),
 * waits a bounded time for in-flight calls on other threads to leave, then frees everything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/param.h"
#include "common/time.h"
#include "core/core_int.h"
#include "core/flat.h"

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

ECCL_PARAM_STR(device, "ECCL_DEVICE", NULL)
ECCL_PARAM_INT(nchannels, "ECCL_NCHANNELS", 0)
ECCL_PARAM_INT(max_nchannels, "ECCL_MAX_NCHANNELS", 4)
ECCL_PARAM_INT(cuda_nchannels, "ECCL_CUDA_NCHANNELS", 16)
ECCL_PARAM_INT(timeout_ms, "ECCL_TIMEOUT_MS", 600000)
ECCL_PARAM_INT(abort_wait_ms, "ECCL_ABORT_WAIT_MS", 1000)
ECCL_PARAM_INT(spin, "ECCL_SPIN", -1)
ECCL_PARAM_INT(cpu_spread, "ECCL_CPU_SPREAD", 1)
ECCL_PARAM_INT(host_stream, "ECCL_HOST_STREAM", -1)
ECCL_PARAM_INT(host_stream_out_bytes, "ECCL_HOST_STREAM_OUT_BYTES", 4 << 20)

/* --- versions and ids --------------------------------------------------------------------- */

ECCL_API ecclResult_t ecclGetVersion(int *version)
{
    ECCL_ARG_CHECK(version != NULL, "ecclGetVersion: version is NULL");
    *version = ECCL_VERSION_CODE;
    return ecclSuccess;
}

static void log_version_once(void)
{
    static _Atomic int done;
    if (atomic_exchange(&done, 1) == 0)
        INFO(ECCL_LOG_INIT, "ECCL version %s (NCCL API %d.%d.%d)%s", ECCL_RELEASE, ECCL_MAJOR,
             ECCL_MINOR, ECCL_PATCH,
#ifdef ECCL_HAVE_CUDA
             "+cuda"
#else
             ""
#endif
        );
}

ECCL_API ecclResult_t ecclGetUniqueId(ecclUniqueId *uniqueId)
{
    ECCL_ARG_CHECK(uniqueId != NULL, "ecclGetUniqueId: uniqueId is NULL");
    log_version_once();
    return core_bootstrap_id_create(uniqueId);
}

/* --- errors ------------------------------------------------------------------------------- */

ECCL_API const char *ecclGetErrorString(ecclResult_t code)
{
    switch (code) {
    case ecclSuccess:
        return "no error";
    case ecclUnhandledCudaError:
        return "unhandled cuda error (run with ECCL_DEBUG=INFO for details)";
    case ecclSystemError:
        return "unhandled system error (run with ECCL_DEBUG=INFO for details)";
    case ecclInternalError:
        return "internal error - please report this issue to the eccl developers";
    case ecclInvalidArgument:
        return "invalid argument (run with ECCL_DEBUG=WARN for details)";
    case ecclInvalidUsage:
        return "invalid usage (run with ECCL_DEBUG=WARN for details)";
    case ecclRemoteError:
        return "remote process exited or there was a network error";
    case ecclInProgress:
        return "operation in progress";
    default:
        return "unknown result code";
    }
}

ECCL_API const char *ecclGetLastError(ecclComm_t comm)
{
    const char *mine = eccl_log_last_error();
    if (mine[0] || !comm || comm->magic != CORE_COMM_MAGIC)
        return mine;
    return comm->last_error;
}

/* Marks comm failed with the calling thread's last WARN text; `propagate`: tell the other
 * ranks of this host, so that those blocked with healthy peers stop too. */
static void set_error(struct ecclComm *comm, ecclResult_t res, bool propagate)
{
    if (res == ecclSuccess)
        return;
    int expected = ecclSuccess;
    if (atomic_compare_exchange_strong(&comm->async_error, &expected, (int)res)) {
        pthread_mutex_lock(&comm->error_lock);
        snprintf(comm->last_error, sizeof(comm->last_error), "%s", eccl_log_last_error());
        core_error_fn fn = comm->error_fn;
        void *arg = comm->error_arg;
        char text[sizeof(comm->last_error)];
        snprintf(text, sizeof(text), "%s", comm->last_error);
        pthread_mutex_unlock(&comm->error_lock);
        INFO(ECCL_LOG_INIT, "comm %p rank %d: failed with %s: %s", (void *)comm, comm->rank,
             ecclGetErrorString(res), text);
        if (propagate)
            proxy_service_revoke(comm->svc, -1, text);
        atomic_store(&comm->abort, 1);
        core_exec_close_all(comm);
        if (fn)
            fn(arg, res, text);
        return;
    }
    atomic_store(&comm->abort, 1);
    core_exec_close_all(comm);
}

ecclResult_t core_comm_set_error_callback(ecclComm_t comm, core_error_fn fn, void *arg)
{
    ECCL_TRY(core_comm_check(comm, "core_comm_set_error_callback"));
    pthread_mutex_lock(&comm->error_lock);
    comm->error_fn = fn;
    comm->error_arg = arg;
    pthread_mutex_unlock(&comm->error_lock);
    /* A failure seen before the registration is reported now, once. */
    ecclResult_t res = (ecclResult_t)atomic_load(&comm->async_error);
    if (fn && res != ecclSuccess) {
        char text[sizeof(comm->last_error)];
        pthread_mutex_lock(&comm->error_lock);
        snprintf(text, sizeof(text), "%s", comm->last_error);
        pthread_mutex_unlock(&comm->error_lock);
        fn(arg, res, text);
    }
    return ecclSuccess;
}

void core_comm_set_error(struct ecclComm *comm, ecclResult_t res)
{
    set_error(comm, res, true);
}

/* The UDS service saw a local peer die, stall, or report a failure. */
static void on_peer_failure(void *arg, int peer, const char *text)
{
    struct ecclComm *comm = arg;
    (void)peer;
    eccl_log_set_last_error(text);
    set_error(comm, ecclRemoteError, false);
}

ecclResult_t core_comm_check(const struct ecclComm *comm, const char *fn)
{
    if (!comm) {
        WARN("%s: comm is NULL", fn);
        return ecclInvalidArgument;
    }
    if (comm->magic != CORE_COMM_MAGIC) {
        WARN("%s: comm %p is not a live communicator (destroyed, or not from an init)", fn,
             (const void *)comm);
        return ecclInvalidArgument;
    }
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclCommGetAsyncError(ecclComm_t comm, ecclResult_t *asyncError)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommGetAsyncError"));
    ECCL_ARG_CHECK(asyncError != NULL, "ecclCommGetAsyncError: asyncError is NULL");
    ecclResult_t res = (ecclResult_t)atomic_load(&comm->async_error);
    /* A kernel that stopped on a failure has let its stream finish: the caller who saw that must
     * learn it now, not at the GPU watcher's next look. */
    if (res == ecclSuccess && comm->dev)
        res = kern_dev_poll(comm->dev);
    *asyncError = res;
    return ecclSuccess;
}

/* --- configuration ------------------------------------------------------------------------ */

/* Copies the fields of the caller's config that its size covers into ours. */
static ecclResult_t config_read(const ecclConfig_t *in, ecclConfig_t *out)
{
    ecclConfig_t def = ECCL_CONFIG_INITIALIZER;
    *out = def;
    if (!in)
        return ecclSuccess;
    if (in->magic != ECCL_CONFIG_MAGIC) {
        WARN("config: bad magic 0x%x (expected 0x%x): initialize it with "
             "ECCL_CONFIG_INITIALIZER",
             in->magic, ECCL_CONFIG_MAGIC);
        return ecclInvalidArgument;
    }
    size_t min = offsetof(ecclConfig_t, blocking);
    if (in->size < min || in->size > (1u << 20)) {
        WARN("config: size %zu is not a config's size (at least %zu): initialize it with "
             "ECCL_CONFIG_INITIALIZER",
             in->size, min);
        return ecclInvalidArgument;
    }
    size_t n = in->size < sizeof(*out) ? in->size : sizeof(*out);
    memcpy(out, in, n);
    out->size = sizeof(*out);
    return ecclSuccess;
}

static int cfg_int(int v, int def)
{
    return v == ECCL_CONFIG_UNDEF_INT ? def : v;
}

/* Decides host or CUDA. */
static ecclResult_t pick_device(const ecclConfig_t *cfg, bool *host, int *dev)
{
    int kind = cfg_int(cfg->deviceKind, ECCL_DEVICE_AUTO);
    const char *env = eccl_param_device();
    if (kind == ECCL_DEVICE_AUTO && env) {
        if (strcasecmp(env, "host") == 0 || strcasecmp(env, "cpu") == 0)
            kind = ECCL_DEVICE_HOST;
        else if (strcasecmp(env, "cuda") == 0 || strcasecmp(env, "gpu") == 0)
            kind = ECCL_DEVICE_CUDA;
        else if (strcasecmp(env, "auto") != 0) {
            WARN("ECCL_DEVICE=%s: expected host, cuda or auto", env);
            return ecclInvalidArgument;
        }
    }
    if (kind != ECCL_DEVICE_AUTO && kind != ECCL_DEVICE_CUDA && kind != ECCL_DEVICE_HOST) {
        WARN("config: deviceKind %d is not ECCL_DEVICE_AUTO, _CUDA or _HOST", kind);
        return ecclInvalidArgument;
    }
    int ndev = 0;
#ifdef ECCL_HAVE_CUDA
    if (kind != ECCL_DEVICE_HOST) {
        if (cudaGetDeviceCount(&ndev) != cudaSuccess)
            ndev = 0;
    }
#endif
    if (kind == ECCL_DEVICE_HOST || (kind == ECCL_DEVICE_AUTO && ndev == 0)) {
        *host = true;
        *dev = -1;
        return ecclSuccess;
    }
    if (ndev == 0) {
        WARN("a CUDA communicator was asked for, but no CUDA device is present%s",
#ifdef ECCL_HAVE_CUDA
             ""
#else
             " (and this build has no CUDA support)"
#endif
        );
        return ecclInvalidUsage;
    }
#ifdef ECCL_HAVE_CUDA
    cudaError_t e = cudaGetDevice(dev);
    if (e != cudaSuccess) {
        WARN("cudaGetDevice failed: %s", cudaGetErrorString(e));
        return ecclUnhandledCudaError;
    }
#endif
    *host = false;
    return ecclSuccess;
}

/* The GPU executor's watcher saw a kernel fail (its WARN is this thread's last error). */
static void on_dev_error(void *arg, ecclResult_t res, int peer, const char *what)
{
    (void)peer;
    (void)what;
    set_error(arg, res, true);
}

/* Channels of a communicator: the configuration's or ECCL_NCHANNELS; else, on the host, a core
 * per channel (at most ECCL_MAX_NCHANNELS), and for CUDA communicators ECCL_CUDA_NCHANNELS thread
 * blocks (each channel is one block, of the GPU's many SMs), capped by ECCL_MAX_NCHANNELS only
 * when that is set. */
static int pick_nchannels(const ecclConfig_t *cfg, int nlocal, bool host)
{
    int n = cfg_int(cfg->nChannels, (int)eccl_param_nchannels());
    if (n <= 0 && !host) {
        n = (int)eccl_param_cuda_nchannels();
        if (getenv("ECCL_MAX_NCHANNELS") && n > (int)eccl_param_max_nchannels())
            n = (int)eccl_param_max_nchannels();
    } else if (n <= 0) {
        int cores = get_nprocs();
        n = cores / (nlocal > 0 ? nlocal : 1);
        int max = (int)eccl_param_max_nchannels();
        if (n > max)
            n = max;
    }
    if (n < 1)
        n = 1;
    if (n > CORE_MAX_CHANNELS)
        n = CORE_MAX_CHANNELS;
    return n;
}

/* --- create / destroy --------------------------------------------------------------------- */

/* A registration of a host buffer: bookkeeping only, since host transports copy through
 * connector memory and gain nothing from pinning. The handle is checked on deregister. */
static void comm_free(struct ecclComm *comm)
{
    bool clean = atomic_load(&comm->async_error) == ecclSuccess && !atomic_load(&comm->abort);
    /* Kernels first (they use the connectors; an abort has stopped them), then what they used. */
    kern_dev_destroy(comm->dev);
    comm->dev = NULL;
    proxy_service_destroy(comm->svc, clean);
    comm->svc = NULL;
    core_exec_stop(comm);
    core_transport_fini(comm, clean);
    core_flat_fini(comm);
    core_bootstrap_fini(&comm->bs);
    for (int c = 0; c < CORE_MAX_CHANNELS; c++) {
        eccl_free(comm->channels[c].kc.p2p_send);
        eccl_free(comm->channels[c].kc.p2p_recv);
    }
    core_reg_fini(comm);
    eccl_pool_fini(&comm->task_pool);
    eccl_pool_fini(&comm->plan_pool);
    eccl_memstack_fini(&comm->stack);
    eccl_arena_fini(&comm->arena);
    pthread_mutex_destroy(&comm->premulsum_lock);
    pthread_mutex_destroy(&comm->error_lock);
    pthread_mutex_destroy(&comm->reg_lock);
    comm->magic = 0;
    eccl_free(comm);
}

/* Copies the caller's cancel flag into comm->abort while init runs (every init wait checks
 * comm->abort). */
struct cancel_watch {
    struct ecclComm *comm;
    const _Atomic uint32_t *cancel;
    _Atomic bool done;
};

static void *cancel_main(void *arg)
{
    struct cancel_watch *w = arg;
    while (!atomic_load(&w->done)) {
        if (atomic_load(w->cancel)) {
            WARN("init of rank %d cancelled: the generation failed while its ranks were meeting",
                 w->comm->rank);
            atomic_store(&w->comm->abort, 1);
            break;
        }
        usleep(2000);
    }
    return NULL;
}

ecclResult_t core_comm_create(struct ecclComm **out, int nranks, const ecclUniqueId *id, int rank,
                              const ecclConfig_t *config)
{
    return core_comm_create_opts(out, nranks, id, rank, config, NULL);
}

ecclResult_t core_comm_init_opts(ecclComm_t *comm, int nranks, const ecclUniqueId *id, int rank,
                                 const ecclConfig_t *config, const struct core_init_opts *opts)
{
    ECCL_ARG_CHECK(comm != NULL && id != NULL, "core_comm_init_opts: comm or id is NULL");
    ECCL_ARG_CHECK(nranks > 0 && rank >= 0 && rank < nranks,
                   "core_comm_init_opts: rank %d out of range for nranks %d", rank, nranks);
    if (config) {
        ecclConfig_t tmp;
        ECCL_TRY(config_read(config, &tmp));
    }
    return core_comm_create_opts(comm, nranks, id, rank, config, opts);
}

ecclResult_t core_comm_create_opts(struct ecclComm **out, int nranks, const ecclUniqueId *id,
                                   int rank, const ecclConfig_t *config,
                                   const struct core_init_opts *opts)
{
    ecclResult_t res = ecclSuccess;
    struct cancel_watch watch = {.comm = NULL};
    pthread_t watch_thread;
    bool watching = false;
    ecclConfig_t cfg;
    log_version_once();
    ECCL_TRY(config_read(config, &cfg));
    bool host = true;
    int dev = -1;
    ECCL_TRY(pick_device(&cfg, &host, &dev));

    struct ecclComm *comm = eccl_calloc(1, sizeof(*comm), "comm");
    if (!comm)
        return ecclSystemError;
    comm->magic = CORE_COMM_MAGIC;
    comm->rank = rank;
    comm->nranks = nranks;
    comm->host = host;
    comm->cuda_dev = dev;
    comm->config = cfg;
    comm->tp.uds_fd = -1;
    comm->bs.listen_fd = comm->bs.ring_send_fd = comm->bs.ring_recv_fd = -1;
    pthread_mutex_init(&comm->premulsum_lock, NULL);
    pthread_mutex_init(&comm->error_lock, NULL);
    pthread_mutex_init(&comm->reg_lock, NULL);
    eccl_arena_init(&comm->arena, 16384, "comm-arena");
    eccl_memstack_init(&comm->stack, 65536, "comm-stack");
    eccl_pool_init(&comm->plan_pool, sizeof(struct core_plan), 8, "comm-plans");
    eccl_pool_init(&comm->task_pool, sizeof(struct core_task), 64, "comm-tasks");
    eccl_cbq_init(&comm->reclaim_q);
    eccl_queue_init(&comm->coll_tasks);
    eccl_queue_init(&comm->p2p_tasks);
    comm->timeout_ms = cfg_int(cfg.timeoutMs, (int)eccl_param_timeout_ms());
    const char *cname = cfg.commName ? cfg.commName : "";
    snprintf(comm->name, sizeof(comm->name), "%s", cname);
    eccl_log_set_dev(rank);

    struct core_peer_info me;
    memset(&me, 0, sizeof(me));
    me.rank = rank;
    me.pid = (int32_t)getpid();
    me.host_hash = eccl_host_hash();
    me.pid_hash = eccl_hash_mix(me.host_hash ^ (uint64_t)getpid());
    me.cuda_dev = dev;
    {
        struct stat st;
        me.pidns = stat("/proc/self/ns/pid", &st) == 0 ? (uint32_t)st.st_ino : 0;
    }
    if (opts && opts->cancel) {
        watch.comm = comm;
        watch.cancel = opts->cancel;
        int rc = ECCL_FAULT_THREAD(pthread_create(&watch_thread, NULL, cancel_main, &watch));
        if (rc != 0) {
            WARN("pthread_create failed: %s", strerror(rc));
            res = ecclSystemError;
            goto err_free;
        }
        watching = true;
    }
    ECCL_TRY_GOTO(core_bootstrap_init(&comm->bs, id, rank, nranks, &me, &comm->abort,
                                      opts ? opts->bootstrap_timeout_ms : 0),
                  res, err_free);
    comm->peers = comm->bs.peers;
    comm->comm_hash = comm->bs.magic;
    INFO(ECCL_LOG_INIT,
         "ecclCommInitRank comm %p rank %d nranks %d cudaDev %d commId 0x%llx - "
         "Init START",
         (void *)comm, rank, nranks, dev, (unsigned long long)comm->comm_hash);

    int nlocal = 0;
    for (int i = 0; i < nranks; i++)
        nlocal += comm->peers[i].host_hash == me.host_hash;
    /* Every rank must use the same channels: each has its preference (its host's rank count and
     * cores may differ from another's), all take the smallest. */
    {
        int32_t *pref = eccl_calloc((size_t)nranks, sizeof(*pref), "comm-init");
        if (!pref) {
            res = ecclSystemError;
            goto err_free;
        }
        pref[rank] = pick_nchannels(&cfg, nlocal, host);
        res = core_bootstrap_allgather(&comm->bs, pref, sizeof(*pref));
        int n = CORE_MAX_CHANNELS;
        for (int i = 0; i < nranks && res == ecclSuccess; i++) {
            if (pref[i] < 1 || pref[i] > CORE_MAX_CHANNELS) {
                WARN("rank %d asks for %d channels (1..%d)", i, (int)pref[i], CORE_MAX_CHANNELS);
                res = ecclRemoteError;
            } else if (pref[i] < n) {
                n = pref[i];
            }
        }
        eccl_free(pref);
        if (res != ecclSuccess)
            goto err_free;
        comm->nchannels = n;
    }
    /* Spinning pays while every rank has a core; with more ranks than cores it steals the CPU
     * from the very peer being waited for: poll briefly, then sleep. */
    int64_t spin = eccl_param_spin();
    if (spin < 0)
        spin = nlocal > get_nprocs() ? 100 : 2000;
    comm->spin = (uint32_t)ECCL_MIN(spin, (int64_t)UINT32_MAX);
    int64_t stream = eccl_param_host_stream();
    comm->host_stream = stream < 0 ? KERN_STREAM_AUTO : stream ? KERN_STREAM_ON : KERN_STREAM_OFF;
    int64_t stream_out = eccl_param_host_stream_out_bytes();
    comm->host_stream_out_bytes = stream_out > 0 ? (uint64_t)stream_out : 0;
    comm->ring = eccl_arena_alloc(&comm->arena, sizeof(int) * (size_t)nranks, 16);
    if (!comm->ring) {
        res = ecclSystemError;
        goto err_free;
    }
    {
        uint64_t *hosts = eccl_calloc((size_t)nranks, sizeof(*hosts), "comm-init");
        if (!hosts) {
            res = ecclSystemError;
            goto err_free;
        }
        for (int i = 0; i < nranks; i++)
            hosts[i] = comm->peers[i].host_hash;
        core_plan_ring(hosts, nranks, comm->ring);
        eccl_free(hosts);
        for (int i = 0; i < nranks; i++)
            if (comm->ring[i] == rank)
                comm->ring_index = i;
    }
    int parent, child[2];
    core_plan_tree(nranks, comm->ring_index, &parent, child);
    /* Odd ranks move a waiting thread off a core the scheduler made it share with the peers it
     * waits for (kernels/host_exec.h), where the host has a core for each such thread: the
     * caller's (flat calls) and the channels'. */
    bool odd_spreads = eccl_param_cpu_spread() != 0 && rank % 2 == 1;
    comm->flat_spread = odd_spreads && nlocal <= get_nprocs();
    for (int c = 0; c < comm->nchannels; c++) {
        struct kern_chan *kc = &comm->channels[c].kc;
        comm->channels[c].spread = (struct kern_spread){
            .on = odd_spreads && nlocal * comm->nchannels <= get_nprocs(), .rank = rank};
        kc->id = c;
        kc->rank = rank;
        kc->nranks = nranks;
        kc->ring = comm->ring;
        kc->ring_index = comm->ring_index;
        kc->tree_parent = parent >= 0 ? comm->ring[parent] : -1;
        kc->tree_child[0] = child[0] >= 0 ? comm->ring[child[0]] : -1;
        kc->tree_child[1] = child[1] >= 0 ? comm->ring[child[1]] : -1;
        kc->p2p_send = eccl_calloc((size_t)nranks, sizeof(*kc->p2p_send), "comm-p2p");
        kc->p2p_recv = eccl_calloc((size_t)nranks, sizeof(*kc->p2p_recv), "comm-p2p");
        if (!kc->p2p_send || !kc->p2p_recv) {
            res = ecclSystemError;
            goto err_free;
        }
    }
    comm->work_budget = core_group_work_budget();
    ECCL_TRY_GOTO(
        proxy_service_create(&comm->svc, comm->comm_hash, rank, nranks, on_peer_failure, comm), res,
        err_free);
    /* The GPU executor first: connectors between GPU ranks get device slots from it. */
    if (!host) {
        struct kern_dev_opts dopts = {
            .cuda_dev = dev,
            .rank = rank,
            .nchannels = comm->nchannels,
            .timeout_ns = comm->timeout_ms > 0 ? (uint64_t)comm->timeout_ms * ECCL_NS_PER_MS : 0,
            .abort = &comm->abort,
            .on_error = on_dev_error,
            .arg = comm,
        };
        ECCL_TRY_GOTO(kern_dev_create(&dopts, &comm->dev), res, err_free);
    }
    /* Opens the connector socket, waits for every rank's listeners (a barrier), connects. */
    ECCL_TRY_GOTO(core_transport_init(comm), res, err_free);
    proxy_service_watch(comm->svc, proxy_heartbeat(comm->tp.proxy),
                        proxy_thread_tid(comm->tp.proxy));
    {
        bool *local = eccl_calloc((size_t)nranks, sizeof(*local), "comm-init");
        int *pids = eccl_calloc((size_t)nranks, sizeof(*pids), "comm-init");
        if (!local || !pids) {
            eccl_free(local);
            eccl_free(pids);
            res = ecclSystemError;
            goto err_free;
        }
        for (int i = 0; i < nranks; i++) {
            local[i] = comm->peers[i].host_hash == me.host_hash;
            /* The service may look at a local peer's process state only when both see the same
             * pids (one pid namespace). */
            pids[i] = local[i] && me.pidns != 0 && comm->peers[i].pidns == me.pidns
                          ? comm->peers[i].pid
                          : 0;
        }
        res = proxy_service_connect(comm->svc, local, pids, eccl_deadline_ms(comm->bs.timeout_ms),
                                    &comm->abort);
        eccl_free(local);
        eccl_free(pids);
        if (res != ecclSuccess)
            goto err_free;
    }
    /* Channel threads for both kinds: a CUDA communicator runs plans on host buffers (the
     * elastic layer's own exchanges, for one) on the host executor. */
    ECCL_TRY_GOTO(core_exec_start(comm), res, err_free);
    ECCL_TRY_GOTO(core_flat_init(comm), res, err_free);
    ECCL_TRY_GOTO(core_bootstrap_barrier(&comm->bs), res, err_free);
    INFO(ECCL_LOG_INIT,
         "ecclCommInitRank comm %p rank %d nranks %d cudaDev %d nchannels %d - "
         "Init COMPLETE",
         (void *)comm, rank, nranks, dev, comm->nchannels);
    if (watching) {
        atomic_store(&watch.done, true);
        pthread_join(watch_thread, NULL);
        watching = false;
        if (atomic_load(&comm->abort)) {
            res = ecclRemoteError;
            goto err_free;
        }
    }
    *out = comm;
    return ecclSuccess;
err_free:
    if (watching) {
        atomic_store(&watch.done, true);
        pthread_join(watch_thread, NULL);
    }
    /* A failure another thread saw (the UDS service, a peer's revoke) stopped the init: its text
     * is the communicator's, which is about to go; the caller reads its own thread's. */
    pthread_mutex_lock(&comm->error_lock);
    if (!eccl_log_last_error()[0] && comm->last_error[0])
        eccl_log_set_last_error(comm->last_error);
    pthread_mutex_unlock(&comm->error_lock);
    comm_free(comm);
    return res;
}

static ecclResult_t check_init_args(ecclComm_t *comm, int nranks, int rank, const char *fn)
{
    ECCL_ARG_CHECK(comm != NULL, "%s: comm (the output pointer) is NULL", fn);
    ECCL_ARG_CHECK(nranks > 0, "%s: nranks %d must be positive", fn, nranks);
    ECCL_ARG_CHECK(rank >= 0 && rank < nranks, "%s: rank %d out of range for nranks %d", fn, rank,
                   nranks);
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclCommInitRankConfig(ecclComm_t *comm, int nranks, ecclUniqueId commId,
                                             int rank, ecclConfig_t *config)
{
    ECCL_TRY(check_init_args(comm, nranks, rank, "ecclCommInitRankConfig"));
    if (config) {
        ecclConfig_t tmp;
        ECCL_TRY(config_read(config, &tmp));
    }
    if (core_group_depth() > 0)
        return core_group_add_init(comm, nranks, &commId, rank, config);
    return core_comm_create(comm, nranks, &commId, rank, config);
}

ECCL_API ecclResult_t ecclCommInitRank(ecclComm_t *comm, int nranks, ecclUniqueId commId, int rank)
{
    return ecclCommInitRankConfig(comm, nranks, commId, rank, NULL);
}

ECCL_API ecclResult_t ecclCommInitRankScalable(ecclComm_t *newcomm, int nranks, int myrank, int nId,
                                               ecclUniqueId *commIds, ecclConfig_t *config)
{
    ECCL_TRY(check_init_args(newcomm, nranks, myrank, "ecclCommInitRankScalable"));
    ECCL_ARG_CHECK(nId > 0 && nId <= nranks, "ecclCommInitRankScalable: nId %d out of 1..%d", nId,
                   nranks);
    ECCL_ARG_CHECK(commIds != NULL, "ecclCommInitRankScalable: commIds is NULL");
    /* Every rank meets at the first root; the other roots are not needed at this scale. */
    return ecclCommInitRankConfig(newcomm, nranks, commIds[0], myrank, config);
}

ECCL_API ecclResult_t ecclCommInitAll(ecclComm_t *comms, int ndev, const int *devlist)
{
    ECCL_ARG_CHECK(comms != NULL, "ecclCommInitAll: comms is NULL");
    ECCL_ARG_CHECK(ndev > 0, "ecclCommInitAll: ndev %d must be positive", ndev);
    (void)devlist; /* host communicators have no device; CUDA ones are refused at init */
    ecclUniqueId id;
    ECCL_TRY(ecclGetUniqueId(&id));
    ECCL_TRY(ecclGroupStart());
    for (int i = 0; i < ndev; i++)
        comms[i] = NULL;
    ecclResult_t res = ecclSuccess;
    for (int i = 0; i < ndev && res == ecclSuccess; i++)
        res = core_group_add_init(&comms[i], ndev, &id, i, NULL);
    ecclResult_t end = ecclGroupEnd();
    if (res == ecclSuccess)
        res = end;
    if (res != ecclSuccess) {
        for (int i = 0; i < ndev; i++) {
            if (comms[i]) {
                ecclCommAbort(comms[i]);
                comms[i] = NULL;
            }
        }
    }
    return res;
}

ECCL_API ecclResult_t ecclCommFinalize(ecclComm_t comm)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommFinalize"));
    /* Host work completes before its call returns: nothing is outstanding. */
    atomic_store(&comm->finalized, true);
    return ecclSuccess;
}

/* Waits for calls running on other threads to leave the communicator (they see the abort flag
 * within milliseconds), at most ECCL_ABORT_WAIT_MS. */
static void wait_inflight(struct ecclComm *comm)
{
    uint64_t deadline = eccl_deadline_ms(eccl_param_abort_wait_ms());
    while (atomic_load(&comm->inflight) > 0 && !eccl_deadline_passed(deadline))
        eccl_sleep_us(200);
    if (atomic_load(&comm->inflight) > 0)
        WARN("rank %d: calls still running on the communicator after abort; freeing it anyway "
             "would be unsafe, so its memory is left behind",
             comm->rank);
}

static ecclResult_t comm_teardown(struct ecclComm *comm, bool abort, const char *what)
{
    int rank = comm->rank, nranks = comm->nranks;
    if (abort) {
        atomic_store(&comm->abort, 1);
        core_exec_close_all(comm);
        wait_inflight(comm);
        if (atomic_load(&comm->inflight) > 0) {
            comm->magic = 0;
            return ecclSuccess; /* leaked on purpose: see wait_inflight */
        }
    }
    void *p = comm;
    comm_free(comm);
    INFO(ECCL_LOG_INIT, "comm %p rank %d nranks %d - %s COMPLETE", p, rank, nranks, what);
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclCommDestroy(ecclComm_t comm)
{
    if (!comm)
        return ecclSuccess; /* as NCCL: destroying NULL is a no-op */
    ECCL_TRY(core_comm_check(comm, "ecclCommDestroy"));
    /* A communicator that failed may have work blocked in peers' memory: tear down as abort. */
    bool failed = atomic_load(&comm->async_error) != ecclSuccess || atomic_load(&comm->abort);
    return comm_teardown(comm, failed || atomic_load(&comm->inflight) > 0, "Destroy");
}

ECCL_API ecclResult_t ecclCommAbort(ecclComm_t comm)
{
    if (!comm)
        return ecclSuccess;
    ECCL_TRY(core_comm_check(comm, "ecclCommAbort"));
    return comm_teardown(comm, true, "Abort");
}

ECCL_API ecclResult_t ecclCommRevoke(ecclComm_t comm, int revokeFlags)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommRevoke"));
    ECCL_ARG_CHECK(revokeFlags == 0, "ecclCommRevoke: revokeFlags 0x%x: no flags are defined",
                   revokeFlags);
    atomic_store(&comm->revoked, true);
    atomic_store(&comm->abort, 1);
    core_exec_close_all(comm);
    INFO(ECCL_LOG_INIT, "comm %p rank %d revoked", (void *)comm, comm->rank);
    return atomic_load(&comm->inflight) > 0 ? ecclInProgress : ecclSuccess;
}

/* --- split and shrink --------------------------------------------------------------------- */

#define TAG_SPLIT_ID  0x53504c49u
#define TAG_SHRINK_ID 0x5348524bu

struct split_entry {
    int32_t color;
    int32_t key;
    int32_t rank;
    int32_t pad;
};

static int cmp_split(const void *a, const void *b)
{
    const struct split_entry *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->rank < y->rank ? -1 : (x->rank > y->rank);
}

ECCL_API ecclResult_t ecclCommSplit(ecclComm_t comm, int color, int key, ecclComm_t *newcomm,
                                    ecclConfig_t *config)
{
    ecclResult_t res = ecclSuccess;
    ECCL_TRY(core_comm_check(comm, "ecclCommSplit"));
    ECCL_ARG_CHECK(newcomm != NULL, "ecclCommSplit: newcomm is NULL");
    ECCL_ARG_CHECK(color >= 0 || color == ECCL_SPLIT_NOCOLOR,
                   "ecclCommSplit: color %d must be >= 0 or ECCL_SPLIT_NOCOLOR", color);
    ecclConfig_t cfg;
    ECCL_TRY(config_read(config ? config : &comm->config, &cfg));
    int n = comm->nranks;
    struct split_entry *all = eccl_calloc((size_t)n, sizeof(*all), "split");
    if (!all)
        return ecclSystemError;
    all[comm->rank].color = color;
    all[comm->rank].key = key;
    all[comm->rank].rank = comm->rank;
    ECCL_TRY_GOTO(core_bootstrap_allgather(&comm->bs, all, sizeof(*all)), res, out);
    if (color == ECCL_SPLIT_NOCOLOR) {
        *newcomm = NULL;
        goto out;
    }
    /* Members of my color, ordered by key then old rank. */
    int m = 0;
    for (int i = 0; i < n; i++)
        if (all[i].color == color)
            all[m++] = all[i];
    qsort(all, (size_t)m, sizeof(*all), cmp_split);
    int newrank = 0;
    for (int i = 0; i < m; i++)
        if (all[i].rank == comm->rank)
            newrank = i;
    ecclUniqueId id;
    if (newrank == 0) {
        ECCL_TRY_GOTO(ecclGetUniqueId(&id), res, out);
        for (int i = 1; i < m; i++)
            ECCL_TRY_GOTO(
                core_bootstrap_send(&comm->bs, all[i].rank, TAG_SPLIT_ID, &id, sizeof(id)), res,
                out);
    } else {
        ECCL_TRY_GOTO(core_bootstrap_recv(&comm->bs, all[0].rank, TAG_SPLIT_ID, &id, sizeof(id)),
                      res, out);
    }
    res = core_comm_create(newcomm, m, &id, newrank, &cfg);
out:
    eccl_free(all);
    return res;
}

ECCL_API ecclResult_t ecclCommShrink(ecclComm_t comm, int *excludeRanksList, int excludeRanksCount,
                                     ecclComm_t *newcomm, ecclConfig_t *config, int shrinkFlags)
{
    ecclResult_t res = ecclSuccess;
    ECCL_TRY(core_comm_check(comm, "ecclCommShrink"));
    ECCL_ARG_CHECK(newcomm != NULL, "ecclCommShrink: newcomm is NULL");
    ECCL_ARG_CHECK(excludeRanksCount >= 0 && excludeRanksCount < comm->nranks,
                   "ecclCommShrink: excludeRanksCount %d out of 0..%d", excludeRanksCount,
                   comm->nranks - 1);
    ECCL_ARG_CHECK(excludeRanksCount == 0 || excludeRanksList != NULL,
                   "ecclCommShrink: excludeRanksList is NULL");
    ECCL_ARG_CHECK(shrinkFlags == ECCL_SHRINK_DEFAULT || shrinkFlags == ECCL_SHRINK_ABORT,
                   "ecclCommShrink: unknown shrinkFlags 0x%x", shrinkFlags);
    ecclConfig_t cfg;
    ECCL_TRY(config_read(config ? config : &comm->config, &cfg));
    int n = comm->nranks;
    char *excluded = eccl_calloc((size_t)n, 1, "shrink");
    if (!excluded)
        return ecclSystemError;
    for (int i = 0; i < excludeRanksCount; i++) {
        int r = excludeRanksList[i];
        if (r < 0 || r >= n) {
            WARN("ecclCommShrink: excluded rank %d out of range", r);
            res = ecclInvalidArgument;
            goto out;
        }
        if (r == comm->rank) {
            WARN("ecclCommShrink: rank %d excludes itself", r);
            res = ecclInvalidArgument;
            goto out;
        }
        excluded[r] = 1;
    }
    if (shrinkFlags == ECCL_SHRINK_ABORT) {
        /* Stop whatever is in flight on the parent; its peers may be dead. */
        atomic_store(&comm->abort, 1);
        core_exec_close_all(comm);
        wait_inflight(comm);
    }
    /* Survivors keep their relative order; the lowest survivor makes the new root and sends
     * its id to each survivor over one-shot connections, which never touch excluded ranks. */
    int newrank = 0, m = 0, leader = -1;
    for (int i = 0; i < n; i++) {
        if (excluded[i])
            continue;
        if (leader < 0)
            leader = i;
        if (i == comm->rank)
            newrank = m;
        m++;
    }
    /* The parent's abort flag is up after a failure (or ABORT): the exchange below talks only
     * to survivors, bounded by the bootstrap timeout, so it must not stop at that flag. */
    static const _Atomic uint32_t never = 0;
    const _Atomic uint32_t *saved = comm->bs.abort;
    comm->bs.abort = &never;
    ecclUniqueId id;
    if (comm->rank == leader) {
        res = ecclGetUniqueId(&id);
        for (int i = 0; i < n && res == ecclSuccess; i++)
            if (!excluded[i] && i != leader)
                res = core_bootstrap_send(&comm->bs, i, TAG_SHRINK_ID, &id, sizeof(id));
    } else {
        res = core_bootstrap_recv(&comm->bs, leader, TAG_SHRINK_ID, &id, sizeof(id));
    }
    comm->bs.abort = saved;
    if (res != ecclSuccess)
        goto out;
    res = core_comm_create(newcomm, m, &id, newrank, &cfg);
out:
    eccl_free(excluded);
    return res;
}

/* --- queries ------------------------------------------------------------------------------ */

ECCL_API ecclResult_t ecclCommCount(const ecclComm_t comm, int *count)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommCount"));
    ECCL_ARG_CHECK(count != NULL, "ecclCommCount: count is NULL");
    *count = comm->nranks;
    return ecclSuccess;
}

ecclResult_t core_comm_barrier(ecclComm_t comm)
{
    ECCL_TRY(core_comm_check(comm, "core_comm_barrier"));
    if (atomic_load(&comm->abort))
        return ecclRemoteError;
    atomic_fetch_add(&comm->inflight, 1);
    ecclResult_t res = core_bootstrap_barrier(&comm->bs);
    atomic_fetch_sub(&comm->inflight, 1);
    return res;
}

ECCL_API ecclResult_t ecclCommCuDevice(const ecclComm_t comm, int *device)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommCuDevice"));
    ECCL_ARG_CHECK(device != NULL, "ecclCommCuDevice: device is NULL");
    *device = comm->cuda_dev;
    return ecclSuccess;
}

ECCL_API ecclResult_t ecclCommUserRank(const ecclComm_t comm, int *rank)
{
    ECCL_TRY(core_comm_check(comm, "ecclCommUserRank"));
    ECCL_ARG_CHECK(rank != NULL, "ecclCommUserRank: rank is NULL");
    *rank = comm->rank;
    return ecclSuccess;
}

ecclResult_t core_comm_schedule(ecclComm_t comm, uint64_t *coll_seq, uint64_t *fingerprint)
{
    ECCL_TRY(core_comm_check(comm, "core_comm_schedule"));
    if (coll_seq)
        *coll_seq = comm->coll_seq;
    if (fingerprint)
        *fingerprint = comm->sched_hash;
    return ecclSuccess;
}

/* --- windows -------------------------------------------------------------------------------- */

ECCL_API ecclResult_t ecclCommWindowRegister(ecclComm_t comm, void *buff, size_t size,
                                             ecclWindow_t *win, int winFlags)
{
    (void)buff;
    (void)size;
    (void)winFlags;
    ECCL_TRY(core_comm_check(comm, "ecclCommWindowRegister"));
    ECCL_ARG_CHECK(win != NULL, "ecclCommWindowRegister: win is NULL");
    WARN("ecclCommWindowRegister: symmetric memory windows are not implemented (the GPU executor "
         "moves data through connectors; register buffers with ecclCommRegister instead)");
    return ecclInvalidUsage;
}

ECCL_API ecclResult_t ecclCommWindowDeregister(ecclComm_t comm, ecclWindow_t win)
{
    (void)win;
    ECCL_TRY(core_comm_check(comm, "ecclCommWindowDeregister"));
    WARN("ecclCommWindowDeregister: no window was registered (symmetric memory windows are not "
         "implemented)");
    return ecclInvalidUsage;
}

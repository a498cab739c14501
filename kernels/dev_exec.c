/*
 * dev_exec.c - the host side of the GPU executor (kernels/dev_exec.h): connector registration,
 * launch arguments in mapped host memory, the split of a plan into kernels, and the watcher
 * thread that mirrors the abort flag to the kernels and reports their failures.
 *
 * The launch argument blocks come from a ring of KERN_DEV_SLOTS buffers, each reusable once the
 * event recorded after its kernel has fired; a launch waits (polling, abort-aware) only when all
 * of them are in flight. In a build without CUDA every entry point says so.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "common/time.h"
#include "kernels/conn.h"
#include "kernels/dev_exec.h"
#include "kernels/dev_mem.h"
#include "kernels/dev_work.h"

int kern_dev_kernel_of(const struct eccl_work *w)
{
    bool l128 = w->proto == ECCL_PROTO_LL128;
    int base = l128 ? KERN_DEV_NKERNELS : 0;
    switch (w->func) {
    case ECCL_FUNC_SEND:
    case ECCL_FUNC_RECV:
        return l128 ? -1 : 0;
    case ECCL_FUNC_ALLGATHER:
    case ECCL_FUNC_BROADCAST:
        return base;
    case ECCL_FUNC_ALLREDUCE:
    case ECCL_FUNC_REDUCESCATTER:
    case ECCL_FUNC_REDUCE:
        if (w->dtype >= ecclNumTypes || w->redop >= ECCL_RED_COUNT ||
            (l128 && w->algo != ECCL_ALGO_RING))
            return -1;
        return base + 1 + w->dtype * ECCL_RED_COUNT + w->redop;
    default:
        return -1;
    }
}

static bool is_p2p(const struct eccl_work *w)
{
    return w->func == ECCL_FUNC_SEND || w->func == ECCL_FUNC_RECV;
}

/* The operation a work belongs to: its op_index for collectives; point-to-point work (always at
 * the end of a channel's list) counts as one last operation, p2p_op. */
static uint32_t op_of(const struct eccl_work *w, uint32_t p2p_op)
{
    return is_p2p(w) ? p2p_op : w->op_index;
}

static uint32_t p2p_op_of(struct eccl_work *const *works, const int *nwork, int nchannels)
{
    uint32_t n = 0;
    for (int c = 0; c < nchannels; c++)
        for (int i = 0; i < nwork[c]; i++)
            if (!is_p2p(&works[c][i]) && works[c][i].op_index + 1 > n)
                n = works[c][i].op_index + 1;
    return n;
}

int kern_dev_split(struct eccl_work *const *works, const int *nwork, int nchannels,
                   uint32_t *first_op, uint32_t *end_op, int *kernel, int max)
{
    uint32_t p2p_op = p2p_op_of(works, nwork, nchannels);
    int nseg = 0;
    /* Operations in order; each one's kernel is that of any of its works. */
    for (uint32_t op = 0; op <= p2p_op; op++) {
        int k = -2;
        for (int c = 0; c < nchannels && k == -2; c++)
            for (int i = 0; i < nwork[c]; i++)
                if (op_of(&works[c][i], p2p_op) == op) {
                    k = kern_dev_kernel_of(&works[c][i]);
                    break;
                }
        if (k == -2)
            continue; /* no work (the p2p slot when there is none) */
        if (k < 0)
            return -1;
        if (nseg > 0 && kernel[nseg - 1] == k) {
            end_op[nseg - 1] = op + 1;
            continue;
        }
        if (nseg == max)
            return -1;
        first_op[nseg] = op;
        end_op[nseg] = op + 1;
        kernel[nseg] = k;
        nseg++;
    }
    return nseg;
}

#ifdef ECCL_HAVE_CUDA

#include <cuda_runtime_api.h>

#define KERN_DEV_SLOTS 32
/* Each argument block's first size, carved out of one allocation at create: a cudaHostAlloc
 * takes 1.5 to 2.5 ms under MPS (H100), which the launch that first used each block paid when
 * they were allocated on first use. A launch that needs more gets a block of its own. */
#define KERN_DEV_SLOT_BYTES 65536
#define KERN_DEV_CTL_BYTES  4096
#define KERN_DEV_MAX_SEGS   64
#define KERN_DEV_WATCH_US   1000
#define KERN_DEV_DESTROY_MS 10000

struct dev_reg {
    const void *host;
    void *dev;
    size_t bytes;
    bool owned;               /* we registered it (else it was registered already) */
    struct kern_dev_mem *mem; /* the connector's slots in device memory (NULL: none); owned */
};

struct dev_slot {
    void *mem; /* mapped host memory */
    void *dev; /* its device address */
    size_t cap;
    cudaEvent_t ev;
    bool inflight;
    bool owned; /* mem is an allocation of its own (else a part of the executor's ctl block) */
};

struct kern_dev {
    int cuda_dev;
    int rank;
    int nchannels;
    uint64_t timeout_ns;
    uint32_t ll_bytes; /* kern_dev_set_ll */
    uint32_t ll_span;
    uint32_t ll128_bytes;
    const _Atomic uint32_t *abort_src;
    kern_dev_error_fn on_error;
    void *arg;

    /* Mapped host memory: the status, then the abort word; after KERN_DEV_CTL_BYTES, the
     * argument blocks' first KERN_DEV_SLOT_BYTES each. */
    void *ctl;
    void *ctl_dev;
    volatile struct kern_dev_status *status;
    volatile uint32_t *abort;

    pthread_t watcher;
    bool watcher_started;
    _Atomic bool stop;
    _Atomic int first_error; /* ecclResult_t, set once by the watcher */

    struct dev_reg *regs;
    int nregs;
    int capregs;
    int last_reg;

    struct dev_slot slots[KERN_DEV_SLOTS];
    int next_slot;

    /* Peers' registered buffers mapped here (kern_dev_zc_put): the table the kernels read, in
     * mapped host memory from the first mapping on, and the mappings. */
    struct kern_dev_zc *zc;
    void *zc_dev;
    struct kern_dev_mem *zc_mem[KERN_DEV_ZC_MAX];
    int zc_used;

    /* Argument blocks of launches captured into CUDA graphs: they live as long as the graph. The
     * graph's destructor (a host callback, which may not call CUDA) moves a block to `dead`;
     * the next launch or the destroy frees it. */
    pthread_mutex_t graph_lock;
    struct graph_block *live; /* owned by graphs still alive */
    struct graph_block *dead; /* their graphs are gone */
};

struct graph_block {
    struct graph_block *next;
    struct kern_dev *d;
    void *mem;
};

static ecclResult_t cuda_fail(const char *what, cudaError_t e)
{
    WARN("%s failed: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return ecclUnhandledCudaError;
}

#define CUDA_TRY_GOTO(call, res, label)        \
    do {                                       \
        cudaError_t cuda_e_ = (call);          \
        if (cuda_e_ != cudaSuccess) {          \
            (res) = cuda_fail(#call, cuda_e_); \
            goto label;                        \
        }                                      \
    } while (0)

static ecclResult_t code_result(uint32_t code)
{
    switch (code) {
    case KERN_DEV_CLOSED:
    case KERN_DEV_TIMEOUT:
    case KERN_DEV_ABORTED:
        return ecclRemoteError;
    case KERN_DEV_MISMATCH:
    case KERN_DEV_P2P_SELF:
    case KERN_DEV_BAD_ZC:
        return ecclInvalidUsage;
    default:
        return ecclInternalError;
    }
}

/* A connector's size word (kernels/conn_layout.h): the step's bytes, and its protocol. */
static uint32_t step_bytes(uint32_t w)
{
    return w & ~(ECCL_CONN_SIZE_DEVDATA | ECCL_CONN_SIZE_LL | ECCL_CONN_SIZE_LL128 |
                 ECCL_CONN_SIZE_STREAM | ECCL_CONN_SIZE_ZC);
}

static const char *step_proto(uint32_t w)
{
    return (w & ECCL_CONN_SIZE_ZC)      ? "a registered buffer's place"
           : (w & ECCL_CONN_SIZE_LL128) ? "LL128"
           : (w & ECCL_CONN_SIZE_LL)    ? "LL"
                                        : "Simple";
}

static void describe(const struct kern_dev *d, const struct kern_dev_status *st, char *buf,
                     size_t len)
{
    switch (st->code) {
    case KERN_DEV_CLOSED:
        snprintf(buf, len, "rank %d closed its connection: its communicator failed or was aborted",
                 st->peer);
        break;
    case KERN_DEV_TIMEOUT:
        snprintf(buf, len, "no progress from rank %d for %llu ms (seen by a kernel)", st->peer,
                 (unsigned long long)(d->timeout_ns / 1000000));
        break;
    case KERN_DEV_MISMATCH:
        snprintf(buf, len,
                 "rank %d sent a step of %u bytes in %s where %u bytes in %s were expected: the "
                 "ranks called different operations or counts",
                 st->peer, step_bytes(st->got), step_proto(st->got), step_bytes(st->expect),
                 step_proto(st->expect));
        break;
    case KERN_DEV_NO_DEVDATA:
        snprintf(buf, len,
                 "rank %d wrote a step into device memory that this rank has not mapped (its "
                 "connector setup differs from this rank's)",
                 st->peer);
        break;
    case KERN_DEV_BAD_ZC:
        snprintf(buf, len,
                 "rank %d named registered memory of %u bytes (from byte %u of its allocation) "
                 "that this rank has not mapped, or not so large: its registrations and this "
                 "rank's table disagree",
                 st->peer, st->got, st->expect);
        break;
    case KERN_DEV_P2P_SELF:
        snprintf(buf, len,
                 "rank %d: sends to itself and receives from itself do not pair up (count or "
                 "number)",
                 st->peer);
        break;
    default:
        snprintf(buf, len, "a kernel met a work descriptor it cannot run (function %u, peer %d)",
                 st->func, st->peer);
        break;
    }
}

/* Reports a kernel's failure once, by whoever sees it first: the watcher, or a caller that asks
 * (kern_dev_poll). Returns the executor's first error. */
static ecclResult_t report_status(struct kern_dev *d)
{
    ecclResult_t first = (ecclResult_t)atomic_load(&d->first_error);
    if (first != ecclSuccess)
        return first;
    uint32_t code = d->status->code;
    if (code == KERN_DEV_OK)
        return ecclSuccess;
    /* The kernel claims the status (code) before it writes why; `ready` follows the fields. It
     * comes within microseconds; the bound only keeps a kernel that vanished in between from
     * holding the report. */
    for (int i = 0; i < 1000 && !d->status->ready; i++)
        eccl_sleep_us(10);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    struct kern_dev_status st;
    memcpy(&st, (const void *)d->status, sizeof(st));
    st.code = code;
    ecclResult_t res = code_result(code);
    int expected = ecclSuccess;
    if (!atomic_compare_exchange_strong(&d->first_error, &expected, (int)res))
        return (ecclResult_t)expected;
    char what[256];
    describe(d, &st, what, sizeof(what));
    WARN("%s", what);
    if (d->on_error)
        d->on_error(d->arg, res, st.peer, what);
    return res;
}

static void *watch_main(void *arg)
{
    struct kern_dev *d = arg;
    eccl_log_set_dev(d->rank);
    while (!atomic_load_explicit(&d->stop, memory_order_acquire)) {
        if (d->abort_src && atomic_load_explicit(d->abort_src, memory_order_acquire) &&
            !*d->abort) {
            *d->abort = 1;
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
        }
        report_status(d);
        eccl_sleep_us(KERN_DEV_WATCH_US);
    }
    return NULL;
}

ecclResult_t kern_dev_poll(struct kern_dev *d)
{
    return report_status(d);
}

ecclResult_t kern_dev_create(const struct kern_dev_opts *opts, struct kern_dev **out)
{
    ecclResult_t res = ecclSuccess;
    struct kern_dev *d = NULL;
    int prev = -1;
    *out = NULL;
    ECCL_ARG_CHECK(opts->nchannels > 0 && opts->nchannels <= 64, "GPU executor: %d channels",
                   opts->nchannels);
    ECCL_CALLOC_GOTO(d, 1, "kern-dev", res, fail);
    d->cuda_dev = opts->cuda_dev;
    d->rank = opts->rank;
    d->nchannels = opts->nchannels;
    d->timeout_ns = opts->timeout_ns;
    d->abort_src = opts->abort;
    d->on_error = opts->on_error;
    d->arg = opts->arg;
    atomic_store(&d->first_error, ecclSuccess);
    pthread_mutex_init(&d->graph_lock, NULL);
    CUDA_TRY_GOTO(cudaGetDevice(&prev), res, fail_free);
    CUDA_TRY_GOTO(cudaSetDevice(d->cuda_dev), res, fail_free);
    CUDA_TRY_GOTO(cudaHostAlloc(&d->ctl, KERN_DEV_CTL_BYTES + KERN_DEV_SLOTS * KERN_DEV_SLOT_BYTES,
                                cudaHostAllocMapped | cudaHostAllocPortable),
                  res, fail_device);
    memset(d->ctl, 0, KERN_DEV_CTL_BYTES);
    CUDA_TRY_GOTO(cudaHostGetDevicePointer(&d->ctl_dev, d->ctl, 0), res, fail_ctl);
    d->status = (volatile struct kern_dev_status *)d->ctl;
    d->abort = (volatile uint32_t *)((char *)d->ctl + 256);
    for (int i = 0; i < KERN_DEV_SLOTS; i++) {
        size_t off = KERN_DEV_CTL_BYTES + (size_t)i * KERN_DEV_SLOT_BYTES;
        d->slots[i].mem = (char *)d->ctl + off;
        d->slots[i].dev = (char *)d->ctl_dev + off;
        d->slots[i].cap = KERN_DEV_SLOT_BYTES;
    }
    for (int i = 0; i < KERN_DEV_SLOTS; i++) {
        cudaError_t e = cudaEventCreateWithFlags(&d->slots[i].ev, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            res = cuda_fail("cudaEventCreateWithFlags", e);
            for (int j = 0; j < i; j++)
                cudaEventDestroy(d->slots[j].ev);
            goto fail_ctl;
        }
    }
    int rc = pthread_create(&d->watcher, NULL, watch_main, d);
    if (rc != 0) {
        WARN("pthread_create of the GPU executor's watcher failed: %s", strerror(rc));
        res = ecclSystemError;
        goto fail_events;
    }
    d->watcher_started = true;
    cudaSetDevice(prev);
    INFO(ECCL_LOG_INIT, "GPU executor on device %d: %d channels, %d threads per block", d->cuda_dev,
         d->nchannels, KERN_DEV_THREADS);
    *out = d;
    return ecclSuccess;

fail_events:
    for (int i = 0; i < KERN_DEV_SLOTS; i++)
        cudaEventDestroy(d->slots[i].ev);
fail_ctl:
    cudaFreeHost(d->ctl);
fail_device:
    cudaSetDevice(prev);
fail_free:
    pthread_mutex_destroy(&d->graph_lock);
    eccl_free(d);
fail:
    return res;
}

static void reg_out(const struct dev_reg *r, uint64_t *dev, uint64_t *data)
{
    *dev = (uint64_t)(uintptr_t)r->dev;
    if (data)
        *data = r->mem ? (uint64_t)(uintptr_t)kern_dev_mem_ptr(r->mem) : 0;
}

/* The device address of connector `c` (and of its device slots, when it has some and `data` is
 * not NULL), registering its memory on first use. */
static ecclResult_t reg_conn(struct kern_dev *d, const struct eccl_conn_ctrl *c, uint64_t *dev,
                             uint64_t *data)
{
    *dev = 0;
    if (data)
        *data = 0;
    if (!c)
        return ecclSuccess;
    if (d->last_reg < d->nregs && d->regs[d->last_reg].host == c) {
        reg_out(&d->regs[d->last_reg], dev, data);
        return ecclSuccess;
    }
    for (int i = 0; i < d->nregs; i++) {
        if (d->regs[i].host == c) {
            d->last_reg = i;
            reg_out(&d->regs[i], dev, data);
            return ecclSuccess;
        }
    }
    if (d->nregs == d->capregs) {
        int cap = d->capregs ? d->capregs * 2 : 64;
        struct dev_reg *n = eccl_calloc((size_t)cap, sizeof(*n), "kern-dev-regs");
        if (!n)
            return ecclSystemError;
        if (d->nregs)
            memcpy(n, d->regs, (size_t)d->nregs * sizeof(*n));
        eccl_free(d->regs);
        d->regs = n;
        d->capregs = cap;
    }
    if (c->magic != ECCL_CONN_MAGIC || c->nslots == 0 || c->nslots > ECCL_CONN_MAX_SLOTS) {
        WARN("GPU executor: connector %p is not initialised (magic 0x%x, %u slots)", (void *)c,
             c->magic, c->nslots);
        return ecclInternalError;
    }
    struct dev_reg *r = &d->regs[d->nregs];
    r->host = c;
    r->bytes = eccl_conn_bytes(c->nslots, c->slot_bytes);
    r->owned = true;
    cudaError_t e =
        cudaHostRegister((void *)c, r->bytes, cudaHostRegisterMapped | cudaHostRegisterPortable);
    if (e == cudaErrorHostMemoryAlreadyRegistered) {
        (void)cudaGetLastError();
        r->owned = false;
    } else if (e != cudaSuccess) {
        return cuda_fail("cudaHostRegister of a connector", e);
    }
    e = cudaHostGetDevicePointer(&r->dev, (void *)c, 0);
    if (e != cudaSuccess) {
        if (r->owned)
            cudaHostUnregister((void *)c);
        return cuda_fail("cudaHostGetDevicePointer of a connector", e);
    }
    r->mem = NULL;
    d->last_reg = d->nregs++;
    reg_out(r, dev, data);
    return ecclSuccess;
}

ecclResult_t kern_dev_conn_attach(struct kern_dev *d, const struct eccl_conn_ctrl *c,
                                  struct kern_dev_mem *mem)
{
    uint64_t dev;
    ecclResult_t res = reg_conn(d, c, &dev, NULL);
    if (res != ecclSuccess)
        goto err_free;
    struct dev_reg *r = &d->regs[d->last_reg];
    size_t need = (size_t)c->nslots * c->slot_bytes;
    if (r->mem || kern_dev_mem_size(mem) < need) {
        WARN("GPU executor: device slots of %zu bytes for a connector of %zu bytes%s",
             kern_dev_mem_size(mem), need, r->mem ? " that has some already" : "");
        res = ecclInternalError;
        goto err_free;
    }
    r->mem = mem;
    return ecclSuccess;
err_free:
    kern_dev_mem_free(mem);
    return res;
}

/* Until the kernel that last used block `s` has finished. Gives up (ecclRemoteError, with a WARN)
 * at `deadline` (0: none) or, with `stop_on_failure`, as soon as the communicator has failed:
 * a kernel of a failed communicator stops on its own, but the caller need not wait for it. */
static ecclResult_t slot_wait(struct kern_dev *d, struct dev_slot *s, uint64_t deadline,
                              bool stop_on_failure)
{
    while (s->inflight) {
        cudaError_t e = cudaEventQuery(s->ev);
        if (e == cudaSuccess) {
            s->inflight = false;
            break;
        }
        if (e != cudaErrorNotReady)
            return cuda_fail("cudaEventQuery", e);
        if (stop_on_failure && (atomic_load(&d->first_error) != ecclSuccess ||
                                (d->abort_src && atomic_load(d->abort_src)))) {
            WARN("GPU executor: the communicator failed while a launch waited for room");
            return ecclRemoteError;
        }
        if (deadline && eccl_deadline_passed(deadline)) {
            WARN("GPU executor: kernels still running at the deadline");
            return ecclRemoteError;
        }
        eccl_sleep_us(20);
    }
    return ecclSuccess;
}

/* A free argument block of at least `need` bytes. Waits (polling, abort-aware) when every block
 * is in flight. */
static ecclResult_t slot_get(struct kern_dev *d, size_t need, struct dev_slot **out)
{
    struct dev_slot *s = &d->slots[d->next_slot];
    d->next_slot = (d->next_slot + 1) % KERN_DEV_SLOTS;
    ECCL_TRY(slot_wait(d, s, 0, true));
    if (s->cap < need) {
        size_t cap = need * 2;
        void *mem = NULL, *dev = NULL;
        cudaError_t e = cudaHostAlloc(&mem, cap, cudaHostAllocMapped | cudaHostAllocPortable);
        if (e != cudaSuccess)
            return cuda_fail("cudaHostAlloc of launch arguments", e);
        e = cudaHostGetDevicePointer(&dev, mem, 0);
        if (e != cudaSuccess) {
            cudaFreeHost(mem);
            return cuda_fail("cudaHostGetDevicePointer of launch arguments", e);
        }
        if (s->owned)
            cudaFreeHost(s->mem);
        s->mem = mem;
        s->dev = dev;
        s->cap = cap;
        s->owned = true;
    }
    *out = s;
    return ecclSuccess;
}

static void graph_block_release(void *arg)
{
    struct graph_block *g = arg;
    struct kern_dev *d = g->d;
    pthread_mutex_lock(&d->graph_lock);
    for (struct graph_block **pp = &d->live; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    g->next = d->dead;
    d->dead = g;
    pthread_mutex_unlock(&d->graph_lock);
}

static void graph_blocks_free(struct kern_dev *d, bool all)
{
    pthread_mutex_lock(&d->graph_lock);
    struct graph_block *g = d->dead;
    d->dead = NULL;
    if (all) {
        /* Graphs still alive at destroy keep pointers into these: they must not be replayed
         * after their communicator is gone (as with NCCL). */
        struct graph_block **tail = &g;
        while (*tail)
            tail = &(*tail)->next;
        *tail = d->live;
        d->live = NULL;
    }
    pthread_mutex_unlock(&d->graph_lock);
    while (g) {
        struct graph_block *next = g->next;
        cudaFreeHost(g->mem);
        eccl_free(g);
        g = next;
    }
}

/* An argument block for a launch being captured into a graph: its own memory, tied to the graph
 * by a user object whose release hands it back. */
static ecclResult_t graph_block_get(struct kern_dev *d, size_t need, void *stream, void **mem,
                                    void **dev)
{
    cudaGraph_t graph = NULL;
    enum cudaStreamCaptureStatus st;
    cudaError_t e =
        cudaStreamGetCaptureInfo((cudaStream_t)stream, &st, NULL, &graph, NULL, NULL, NULL);
    if (e != cudaSuccess)
        return cuda_fail("cudaStreamGetCaptureInfo", e);
    if (st != cudaStreamCaptureStatusActive || !graph) {
        WARN("GPU executor: the stream's capture is not active (status %d)", (int)st);
        return ecclInvalidUsage;
    }
    struct graph_block *g = eccl_calloc(1, sizeof(*g), "kern-dev-graph");
    if (!g)
        return ecclSystemError;
    g->d = d;
    e = cudaHostAlloc(&g->mem, need, cudaHostAllocMapped | cudaHostAllocPortable);
    if (e != cudaSuccess) {
        eccl_free(g);
        return cuda_fail("cudaHostAlloc of a captured launch's arguments", e);
    }
    e = cudaHostGetDevicePointer(dev, g->mem, 0);
    cudaUserObject_t obj;
    if (e == cudaSuccess)
        e = cudaUserObjectCreate(&obj, g, graph_block_release, 1, cudaUserObjectNoDestructorSync);
    if (e != cudaSuccess) {
        cudaFreeHost(g->mem);
        eccl_free(g);
        return cuda_fail("cudaUserObjectCreate for a captured launch", e);
    }
    pthread_mutex_lock(&d->graph_lock);
    g->next = d->live;
    d->live = g;
    pthread_mutex_unlock(&d->graph_lock);
    /* The graph takes our reference: the block lives until the graph is destroyed. */
    e = cudaGraphRetainUserObject(graph, obj, 1, cudaGraphUserObjectMove);
    if (e != cudaSuccess) {
        cudaUserObjectRelease(obj, 1); /* runs graph_block_release: freed later */
        return cuda_fail("cudaGraphRetainUserObject", e);
    }
    *mem = g->mem;
    return ecclSuccess;
}

/* The smallest slot of the connectors given (NULL ones skipped); 0xffffffff: none. */
static uint32_t least_slot(const struct eccl_conn_ctrl *const *c, int n)
{
    uint32_t least = 0xffffffffu;
    for (int i = 0; i < n; i++)
        if (c[i] && c[i]->slot_bytes < least)
            least = c[i]->slot_bytes;
    return least;
}

/* Fills one channel's descriptor and tables at host address `at` (device address `at_dev`);
 * returns the bytes used, or 0 on error (*res set). */
static size_t fill_chan(struct kern_dev *d, struct kern_chan *kc, struct kern_dev_chan *dc,
                        const struct eccl_work *w, int nw, char *at, uint64_t at_dev,
                        ecclResult_t *res)
{
    size_t used = 0;
    memset(dc, 0, sizeof(*dc));
    dc->id = kc->id;
    dc->rank = kc->rank;
    dc->nranks = kc->nranks;
    dc->ring_index = kc->ring_index;
    dc->tree_parent = kc->tree_parent;
    dc->tree_child[0] = kc->tree_child[0];
    dc->tree_child[1] = kc->tree_child[1];
    dc->nwork = nw;
    dc->zc = (uint64_t)(uintptr_t)d->zc_dev;
    if (nw == 0)
        return sizeof(uint64_t); /* nothing to run: the block exits at once */
    ECCL_TRY_GOTO(reg_conn(d, kc->ring_recv, &dc->ring_recv, &dc->ring_recv_data), *res, fail);
    ECCL_TRY_GOTO(reg_conn(d, kc->ring_send, &dc->ring_send, &dc->ring_send_data), *res, fail);
    ECCL_TRY_GOTO(reg_conn(d, kc->tree_up_send, &dc->tree_up_send, &dc->tree_up_send_data), *res,
                  fail);
    ECCL_TRY_GOTO(reg_conn(d, kc->tree_down_recv, &dc->tree_down_recv, &dc->tree_down_recv_data),
                  *res, fail);
    for (int i = 0; i < 2; i++) {
        ECCL_TRY_GOTO(
            reg_conn(d, kc->tree_up_recv[i], &dc->tree_up_recv[i], &dc->tree_up_recv_data[i]), *res,
            fail);
        ECCL_TRY_GOTO(
            reg_conn(d, kc->tree_down_send[i], &dc->tree_down_send[i], &dc->tree_down_send_data[i]),
            *res, fail);
    }
    dc->ring_prev = kc->ring[(kc->ring_index + kc->nranks - 1) % kc->nranks];
    dc->ring_next = kc->ring[(kc->ring_index + 1) % kc->nranks];
    const struct eccl_conn_ctrl *ring_conns[] = {kc->ring_recv, kc->ring_send};
    const struct eccl_conn_ctrl *tree_conns[] = {kc->tree_up_recv[0],   kc->tree_up_recv[1],
                                                 kc->tree_down_send[0], kc->tree_down_send[1],
                                                 kc->tree_up_send,      kc->tree_down_recv};
    dc->ring_slot_bytes = least_slot(ring_conns, 2);
    dc->tree_slot_bytes = least_slot(tree_conns, 6);
    /* Ring order. */
    int32_t *ring = (int32_t *)at;
    for (int i = 0; i < kc->nranks; i++)
        ring[i] = kc->ring[i];
    dc->ring = at_dev;
    used = ((size_t)kc->nranks * sizeof(int32_t) + 15) & ~(size_t)15;
    /* Point-to-point tables, when the channel has such work. */
    bool p2p = false;
    for (int i = 0; i < nw; i++)
        p2p |= is_p2p(&w[i]);
    if (p2p) {
        uint64_t *ps = (uint64_t *)(at + used), *pr = ps + kc->nranks;
        uint64_t *psd = pr + kc->nranks, *prd = psd + kc->nranks;
        memset(ps, 0, 4 * (size_t)kc->nranks * sizeof(uint64_t));
        for (int i = 0; i < nw; i++) {
            if (!is_p2p(&w[i]) || w[i].root == kc->rank)
                continue;
            int peer = w[i].root;
            if (peer < 0 || peer >= kc->nranks) {
                WARN("GPU executor: point-to-point work for rank %d of %d", peer, kc->nranks);
                *res = ecclInternalError;
                return 0;
            }
            if (w[i].func == ECCL_FUNC_SEND)
                ECCL_TRY_GOTO(
                    reg_conn(d, kc->p2p_send ? kc->p2p_send[peer] : NULL, &ps[peer], &psd[peer]),
                    *res, fail);
            else
                ECCL_TRY_GOTO(
                    reg_conn(d, kc->p2p_recv ? kc->p2p_recv[peer] : NULL, &pr[peer], &prd[peer]),
                    *res, fail);
        }
        size_t table = (size_t)kc->nranks * sizeof(uint64_t);
        dc->p2p_send = at_dev + used;
        dc->p2p_recv = at_dev + used + table;
        dc->p2p_send_data = at_dev + used + 2 * table;
        dc->p2p_recv_data = at_dev + used + 3 * table;
        used += 4 * table;
    }
    memcpy(at + used, w, (size_t)nw * sizeof(*w));
    dc->works = at_dev + used;
    used += (size_t)nw * sizeof(*w);
    return used;
fail:
    return 0;
}

/* 1: host memory, 0: device (or managed) memory, -1: CUDA could not say. */
static int buffer_on_host(uint64_t addr)
{
    struct cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, (const void *)(uintptr_t)addr);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 1; /* older drivers fail on pageable memory */
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ? 0 : 1;
}

bool kern_dev_buffer_on_host(const void *p)
{
    return buffer_on_host((uint64_t)(uintptr_t)p) != 0;
}

ecclResult_t kern_dev_plan_on_host(struct eccl_work *const *works, const int *nwork, int nchannels,
                                   bool *host)
{
    int seen_host = 0, seen_dev = 0;
    /* The works of one operation share its buffers (every channel has a share of them): ask
     * CUDA once per buffer, not once per work. */
    uint64_t known[8];
    int known_host[8], nknown = 0;
    for (int c = 0; c < nchannels; c++) {
        for (int i = 0; i < nwork[c]; i++) {
            const struct eccl_work *w = &works[c][i];
            /* A zero-copy send's recvbuff is an offset, not an address. */
            uint64_t bufs[2] = {w->sendbuff, (w->flags & ECCL_WORK_FLAG_ZC) ? 0 : w->recvbuff};
            for (int k = 0; k < 2; k++) {
                if (!bufs[k])
                    continue;
                int on_host = -1;
                for (int j = 0; j < nknown && on_host < 0; j++)
                    if (known[j] == bufs[k])
                        on_host = known_host[j];
                if (on_host < 0) {
                    on_host = buffer_on_host(bufs[k]);
                    known[nknown % 8] = bufs[k];
                    known_host[nknown % 8] = on_host;
                    nknown = nknown < 8 ? nknown + 1 : 8;
                }
                if (on_host)
                    seen_host++;
                else
                    seen_dev++;
            }
        }
    }
    if (seen_host && seen_dev) {
        WARN("a group mixes host buffers and device buffers on a CUDA communicator (%d host, %d "
             "device): use one kind per group",
             seen_host, seen_dev);
        return ecclInvalidUsage;
    }
    *host = seen_dev == 0;
    /* The host executor cannot read a scalar in device memory. */
    for (int c = 0; *host && c < nchannels; c++)
        for (int i = 0; i < nwork[c]; i++)
            if (works[c][i].flags & ECCL_WORK_FLAG_SCALAR_PTR) {
                WARN("a PreMulSum op with a device-resident scalar (ecclScalarDevice) on host "
                     "buffers of a CUDA communicator: use device buffers, or "
                     "ecclScalarHostImmediate");
                return ecclInvalidUsage;
            }
    return ecclSuccess;
}

static ecclResult_t launch_seg(struct kern_dev *d, struct kern_chan *const *chans,
                               struct eccl_work *const *works, const int *nwork, uint32_t first,
                               uint32_t end, uint32_t p2p_op, int kernel, void *stream,
                               bool capturing)
{
    int nch = d->nchannels;
    int lo[KERN_DEV_MAX_CHANNELS], cnt[KERN_DEV_MAX_CHANNELS];
    if (nch < 1 || nch > KERN_DEV_MAX_CHANNELS) {
        WARN("GPU executor: %d channels (1..%d)", nch, KERN_DEV_MAX_CHANNELS);
        return ecclInternalError;
    }
    size_t need = (size_t)nch * sizeof(struct kern_dev_chan);
    for (int c = 0; c < nch; c++) {
        int i = 0;
        while (i < nwork[c] && op_of(&works[c][i], p2p_op) < first)
            i++;
        int j = i;
        while (j < nwork[c] && op_of(&works[c][j], p2p_op) < end)
            j++;
        lo[c] = i;
        cnt[c] = j - i;
        int np = 0;
        for (int k = i; k < j; k++)
            np += is_p2p(&works[c][k]);
        if (np > KERN_DEV_THREADS) {
            WARN("GPU executor: %d point-to-point operations on channel %d in one launch (at most "
                 "%d): split the group",
                 np, c, KERN_DEV_THREADS);
            return ecclInvalidUsage;
        }
        need += 16 + (size_t)chans[c]->nranks * (sizeof(int32_t) + 4 * sizeof(uint64_t)) +
                (size_t)cnt[c] * sizeof(struct eccl_work);
    }
    need += (size_t)nch * 16;
    struct dev_slot *s = NULL;
    void *mem, *dev;
    if (capturing) {
        ECCL_TRY(graph_block_get(d, need, stream, &mem, &dev));
    } else {
        ECCL_TRY(slot_get(d, need, &s));
        mem = s->mem;
        dev = s->dev;
    }
    struct kern_dev_chan *dcs = mem;
    size_t off = (size_t)nch * sizeof(struct kern_dev_chan);
    for (int c = 0; c < nch; c++) {
        ecclResult_t res = ecclSuccess;
        off = (off + 15) & ~(size_t)15;
        size_t used = fill_chan(d, chans[c], &dcs[c], works[c] + lo[c], cnt[c], (char *)mem + off,
                                (uint64_t)(uintptr_t)dev + off, &res);
        if (used == 0)
            return res;
        off += used;
    }
    struct kern_dev_args a = {.chans = (uint64_t)(uintptr_t)dev,
                              .status = (uint64_t)(uintptr_t)d->ctl_dev,
                              .abort = (uint64_t)(uintptr_t)d->ctl_dev + 256,
                              .timeout_ns = d->timeout_ns,
                              .nchan = nch,
                              .ll_bytes = d->ll_bytes,
                              .ll_span = d->ll_span,
                              .ll128_bytes = d->ll128_bytes};
    for (int c = 0; c < nch; c++) {
        if (cnt[c] == 0)
            continue;
        a.active |= 1ull << c;
        a.work0[c] = (uint32_t)(dcs[c].works - (uint64_t)(uintptr_t)dev);
    }
    int e = kern_dev_cu_launch(kernel, &a, stream);
    if (e != 0)
        return cuda_fail("the collective kernel's launch", (cudaError_t)e);
    if (capturing)
        return ecclSuccess; /* the graph owns the block */
    cudaError_t er = cudaEventRecord(s->ev, (cudaStream_t)stream);
    if (er != cudaSuccess)
        return cuda_fail("cudaEventRecord", er);
    s->inflight = true;
    return ecclSuccess;
}

/* Whether this executor may queue more work: not after a kernel failed. */
static ecclResult_t may_queue(struct kern_dev *d)
{
    ecclResult_t res = kern_dev_status(d);
    if (res != ecclSuccess)
        WARN("GPU executor: an earlier kernel failed; nothing more is launched");
    return res;
}

/* Makes the executor's device current; *prev: the caller's, for dev_leave. */
static ecclResult_t dev_enter(const struct kern_dev *d, int *prev)
{
    *prev = -1;
    cudaError_t e = cudaGetDevice(prev);
    if (e != cudaSuccess)
        return cuda_fail("cudaGetDevice", e);
    if (*prev != d->cuda_dev && (e = cudaSetDevice(d->cuda_dev)) != cudaSuccess)
        return cuda_fail("cudaSetDevice", e);
    return ecclSuccess;
}

static void dev_leave(const struct kern_dev *d, int prev)
{
    if (prev != d->cuda_dev)
        cudaSetDevice(prev);
}

ecclResult_t kern_dev_launch(struct kern_dev *d, struct kern_chan *const *chans,
                             struct eccl_work *const *works, const int *nwork, void *stream)
{
    ecclResult_t res = may_queue(d);
    if (res != ecclSuccess)
        return res;
    uint32_t first[KERN_DEV_MAX_SEGS], end[KERN_DEV_MAX_SEGS];
    int kernel[KERN_DEV_MAX_SEGS];
    int nseg = kern_dev_split(works, nwork, d->nchannels, first, end, kernel, KERN_DEV_MAX_SEGS);
    if (nseg < 0) {
        WARN("GPU executor: a plan with a bad work descriptor or more than %d kernels",
             KERN_DEV_MAX_SEGS);
        return ecclInternalError;
    }
    uint32_t p2p_op = p2p_op_of(works, nwork, d->nchannels);
    int prev;
    ECCL_TRY(dev_enter(d, &prev));
    /* A launch into a stream being captured becomes part of a graph that may be replayed any
     * number of times: its arguments get memory of their own (kernels read connector counters
     * from memory, so a replay simply continues the schedule). */
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing((cudaStream_t)stream, &cap);
    if (e != cudaSuccess)
        res = cuda_fail("cudaStreamIsCapturing", e);
    else if (cap == cudaStreamCaptureStatusInvalidated)
        res = cuda_fail("a launch into an invalidated capture", cudaErrorStreamCaptureInvalidated);
    /* Registering connectors and allocating argument blocks are not stream work: allowed while
     * the caller's thread captures (in any capture mode) only in relaxed mode. */
    enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    graph_blocks_free(d, false);
    for (int i = 0; i < nseg && res == ecclSuccess; i++)
        res = launch_seg(d, chans, works, nwork, first[i], end[i], p2p_op, kernel[i], stream,
                         cap == cudaStreamCaptureStatusActive);
    cudaThreadExchangeStreamCaptureMode(&mode);
    dev_leave(d, prev);
    return res;
}

/* On this executor's device (device or managed memory of it): 1; elsewhere: 0. */
static int buffer_on_dev(const struct kern_dev *d, const void *p)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) &&
           a.device == d->cuda_dev;
}

ecclResult_t kern_dev_copy(struct kern_dev *d, void *dst, const void *src, size_t bytes,
                           void *stream, bool *done)
{
    *done = false;
    ecclResult_t res = may_queue(d);
    if (res != ecclSuccess)
        return res;
    if (!buffer_on_dev(d, dst) || !buffer_on_dev(d, src))
        return ecclSuccess; /* the plan's path says what is wrong, or runs it on the host */
    int prev;
    ECCL_TRY(dev_enter(d, &prev));
    /* Captured into a graph, a memcpy node: its replay costs less than a kernel node's (the
     * host cost of queuing either does not matter there). */
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing((cudaStream_t)stream, &cap);
    if (e == cudaSuccess) {
        if (bytes <= KERN_DEV_COPY_KERNEL_MAX && cap == cudaStreamCaptureStatusNone)
            e = (cudaError_t)kern_dev_cu_copy(dst, src, bytes, stream);
        else
            e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream);
    }
    if (e != cudaSuccess)
        res = cuda_fail("the copy of a one-rank collective", e);
    dev_leave(d, prev);
    *done = res == ecclSuccess;
    return res;
}

void kern_dev_set_ll(struct kern_dev *d, uint32_t ll_bytes, uint32_t ll_span, uint32_t ll128_bytes)
{
    d->ll_bytes = ll_bytes;
    d->ll_span = ll_span;
    d->ll128_bytes = ll128_bytes;
}

ecclResult_t kern_dev_status(struct kern_dev *d)
{
    ecclResult_t r = (ecclResult_t)atomic_load(&d->first_error);
    if (r != ecclSuccess)
        return r;
    uint32_t code = d->status->code;
    return code == KERN_DEV_OK ? ecclSuccess : code_result(code);
}

int kern_dev_capture_relax(void)
{
    enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return (int)mode;
}

void kern_dev_capture_restore(int mode)
{
    if (mode < 0)
        return;
    enum cudaStreamCaptureMode m = (enum cudaStreamCaptureMode)mode;
    if (cudaThreadExchangeStreamCaptureMode(&m) != cudaSuccess)
        (void)cudaGetLastError();
}

bool kern_dev_idle(struct kern_dev *d)
{
    for (int i = 0; i < KERN_DEV_SLOTS; i++) {
        struct dev_slot *s = &d->slots[i];
        if (!s->inflight)
            continue;
        cudaError_t e = cudaEventQuery(s->ev);
        if (e != cudaSuccess) {
            if (e != cudaErrorNotReady)
                (void)cudaGetLastError();
            return false;
        }
        s->inflight = false;
    }
    return true;
}

bool kern_dev_conn_devmem(struct kern_dev *d, const struct eccl_conn_ctrl *c)
{
    for (int i = 0; i < d->nregs; i++)
        if (d->regs[i].host == c)
            return d->regs[i].mem != NULL;
    return false;
}

ecclResult_t kern_dev_zc_put(struct kern_dev *d, int peer, uint32_t key, struct kern_dev_mem *mem,
                             int *slot)
{
    *slot = -1;
    if (key == 0 || peer < 0) {
        kern_dev_mem_free(mem);
        return ecclInternalError;
    }
    if (!d->zc) {
        size_t bytes = KERN_DEV_ZC_MAX * sizeof(struct kern_dev_zc);
        void *mem_h = NULL, *dev = NULL;
        cudaError_t e = cudaHostAlloc(&mem_h, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
        if (e == cudaSuccess) {
            e = cudaHostGetDevicePointer(&dev, mem_h, 0);
            if (e != cudaSuccess)
                cudaFreeHost(mem_h);
        }
        if (e != cudaSuccess) {
            kern_dev_mem_free(mem);
            return cuda_fail("cudaHostAlloc of the registered-buffer table", e);
        }
        memset(mem_h, 0, bytes);
        d->zc = mem_h;
        d->zc_dev = dev;
        for (int i = 0; i < KERN_DEV_ZC_MAX; i++)
            d->zc[i].peer = -1;
    }
    int free_at = -1;
    for (int i = 0; i < KERN_DEV_ZC_MAX; i++) {
        if (d->zc[i].key == key && d->zc[i].peer == peer) {
            WARN("GPU executor: rank %d's registration %u is mapped already", peer, key);
            kern_dev_mem_free(mem);
            return ecclInternalError;
        }
        if (free_at < 0 && d->zc[i].key == 0)
            free_at = i;
    }
    if (free_at < 0) {
        kern_dev_mem_free(mem);
        return ecclSuccess; /* full: *slot = -1 */
    }
    struct kern_dev_zc *z = &d->zc[free_at];
    z->addr = (uint64_t)(uintptr_t)kern_dev_mem_ptr(mem);
    z->size = kern_dev_mem_size(mem);
    z->peer = peer;
    /* The key last: a kernel that finds it finds the rest. */
    __atomic_store_n(&z->key, key, __ATOMIC_RELEASE);
    d->zc_mem[free_at] = mem;
    d->zc_used++;
    *slot = free_at;
    return ecclSuccess;
}

bool kern_dev_zc_drop(struct kern_dev *d, int peer, uint32_t key)
{
    if (!d->zc || key == 0)
        return false;
    for (int i = 0; i < KERN_DEV_ZC_MAX; i++) {
        struct kern_dev_zc *z = &d->zc[i];
        if (z->key != key || z->peer != peer)
            continue;
        __atomic_store_n(&z->key, 0, __ATOMIC_RELEASE);
        z->peer = -1;
        z->addr = z->size = 0;
        kern_dev_mem_free(d->zc_mem[i]);
        d->zc_mem[i] = NULL;
        d->zc_used--;
        return true;
    }
    return false;
}

int kern_dev_zc_count(const struct kern_dev *d)
{
    return d->zc_used;
}

ecclResult_t kern_dev_drain(struct kern_dev *d, int64_t timeout_ms)
{
    uint64_t deadline = eccl_deadline_ms(timeout_ms);
    for (int i = 0; i < KERN_DEV_SLOTS; i++)
        ECCL_TRY(slot_wait(d, &d->slots[i], deadline, false));
    return ecclSuccess;
}

void kern_dev_destroy(struct kern_dev *d)
{
    if (!d)
        return;
    if (kern_dev_drain(d, KERN_DEV_DESTROY_MS) != ecclSuccess) {
        /* Make them stop: the abort word, then wait once more. */
        *d->abort = 1;
        if (kern_dev_drain(d, KERN_DEV_DESTROY_MS) != ecclSuccess)
            WARN("GPU executor: kernels ignore the abort flag; their memory is kept");
    }
    if (d->watcher_started) {
        atomic_store(&d->stop, true);
        pthread_join(d->watcher, NULL);
    }
    bool idle = true;
    for (int i = 0; i < KERN_DEV_SLOTS; i++)
        idle &= !d->slots[i].inflight;
    int prev = -1;
    cudaGetDevice(&prev);
    cudaSetDevice(d->cuda_dev);
    if (idle) {
        for (int i = 0; i < d->nregs; i++) {
            if (d->regs[i].owned)
                cudaHostUnregister((void *)d->regs[i].host);
            kern_dev_mem_free(d->regs[i].mem);
        }
        for (int i = 0; i < KERN_DEV_SLOTS; i++) {
            if (d->slots[i].owned)
                cudaFreeHost(d->slots[i].mem);
            cudaEventDestroy(d->slots[i].ev);
        }
        cudaFreeHost(d->ctl);
        graph_blocks_free(d, true);
        for (int i = 0; i < KERN_DEV_ZC_MAX; i++)
            kern_dev_mem_free(d->zc_mem[i]);
        if (d->zc)
            cudaFreeHost(d->zc);
    }
    if (prev >= 0)
        cudaSetDevice(prev);
    pthread_mutex_destroy(&d->graph_lock);
    eccl_free(d->regs);
    eccl_free(d);
}

#else /* no CUDA in this build */

ecclResult_t kern_dev_create(const struct kern_dev_opts *opts, struct kern_dev **out)
{
    (void)opts;
    *out = NULL;
    WARN("CUDA communicators need a build with CUDA (make CUDA=1 with nvcc present)");
    return ecclInvalidUsage;
}

ecclResult_t kern_dev_launch(struct kern_dev *d, struct kern_chan *const *chans,
                             struct eccl_work *const *works, const int *nwork, void *stream)
{
    (void)d, (void)chans, (void)works, (void)nwork, (void)stream;
    return ecclInvalidUsage;
}

ecclResult_t kern_dev_copy(struct kern_dev *d, void *dst, const void *src, size_t bytes,
                           void *stream, bool *done)
{
    (void)d, (void)dst, (void)src, (void)bytes, (void)stream;
    *done = false;
    return ecclInvalidUsage;
}

void kern_dev_set_ll(struct kern_dev *d, uint32_t ll_bytes, uint32_t ll_span, uint32_t ll128_bytes)
{
    (void)d, (void)ll_bytes, (void)ll_span, (void)ll128_bytes;
}

ecclResult_t kern_dev_status(struct kern_dev *d)
{
    (void)d;
    return ecclSuccess;
}

ecclResult_t kern_dev_poll(struct kern_dev *d)
{
    (void)d;
    return ecclSuccess;
}

ecclResult_t kern_dev_plan_on_host(struct eccl_work *const *works, const int *nwork, int nchannels,
                                   bool *host)
{
    (void)works, (void)nwork, (void)nchannels;
    *host = true;
    return ecclSuccess;
}

bool kern_dev_buffer_on_host(const void *p)
{
    (void)p;
    return true;
}

ecclResult_t kern_dev_drain(struct kern_dev *d, int64_t timeout_ms)
{
    (void)d, (void)timeout_ms;
    return ecclSuccess;
}

void kern_dev_destroy(struct kern_dev *d)
{
    (void)d;
}

ecclResult_t kern_dev_conn_attach(struct kern_dev *d, const struct eccl_conn_ctrl *c,
                                  struct kern_dev_mem *mem)
{
    (void)d, (void)c;
    kern_dev_mem_free(mem);
    return ecclInvalidUsage;
}

int kern_dev_capture_relax(void)
{
    return -1;
}

void kern_dev_capture_restore(int mode)
{
    (void)mode;
}

bool kern_dev_idle(struct kern_dev *d)
{
    (void)d;
    return true;
}

bool kern_dev_conn_devmem(struct kern_dev *d, const struct eccl_conn_ctrl *c)
{
    (void)d, (void)c;
    return false;
}

ecclResult_t kern_dev_zc_put(struct kern_dev *d, int peer, uint32_t key, struct kern_dev_mem *mem,
                             int *slot)
{
    (void)d, (void)peer, (void)key;
    kern_dev_mem_free(mem);
    *slot = -1;
    return ecclInvalidUsage;
}

bool kern_dev_zc_drop(struct kern_dev *d, int peer, uint32_t key)
{
    (void)d, (void)peer, (void)key;
    return false;
}

int kern_dev_zc_count(const struct kern_dev *d)
{
    (void)d;
    return 0;
}

#endif

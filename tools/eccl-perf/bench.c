/*
 * bench.c - one rank of eccl-perf: its communicator, its buffers, and the nccl-tests loop
 * (warm-up, timed iterations between barriers, a checked run) for every size, type, op and root.
 *
 * Every rank runs the same sequence of calls, so the collectives that combine timings and error
 * counts across ranks (small AllReduces on the same communicator) always match up. Global rank 0
 * prints the table. Calls are queued on the rank's stream (CUDA communicators return before the
 * work is done): the backend's wait ends a timed loop, and its upload/download are ordered
 * after the calls on that stream. With device timing (the CUDA backend) the time of a loop is
 * the one CUDA events measure around its iterations; the host clock times the same loop, up to
 * the end of the wait, as a cross-check. A rank whose eccl call fails reports it (ecclGetErrorString and
 * ecclGetLastError), aborts its communicator so that peers see the failure, and stops.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/time.h"
#include "tools/eccl-perf/perf.h"

#define PERF_SMALL_BYTES 256
#define PERF_HOST_LEN    64

/* What one rank tells the others for the "# Using devices" lines. */
struct perf_info {
    int32_t rank;
    int32_t pid;
    int32_t dev;
    int32_t pad;
    char host[PERF_HOST_LEN];
    char bus_id[32];
    char dev_name[64];
};

/* One (type, op, root) series of sizes. */
struct bench {
    const struct perf_coll *coll;
    const struct perf_type *type;
    int op; /* PERF_OP_*, PERF_OP_NONE */
    ecclRedOp_t eop;
    int root; /* -1 when the collective has none */
    struct perf_counts counts;
};

struct half_result {
    int skipped; /* not run: every column N/A */
    double time_us;
    double median_us;
    double host_us; /* the host clock's time per call of the same loop */
    double algbw;
    double busbw;
    int64_t wrong; /* -1: not checked (N/A) */
};

static ecclResult_t eccl_failed(struct perf_rank *rk, ecclResult_t res, const char *what)
{
    const char *last = ecclGetLastError(rk->comm);
    fprintf(stderr, "eccl-perf: rank %d: %s failed: %s (%d)%s%s\n", rk->rank, what,
            ecclGetErrorString(res), (int)res, last && last[0] ? ": " : "", last ? last : "");
    rk->failed = 1;
    return res;
}

#define PERF_CALL(rk, expr, what)                        \
    do {                                                 \
        ecclResult_t call_res_ = (expr);                 \
        if (call_res_ != ecclSuccess)                    \
            return eccl_failed((rk), call_res_, (what)); \
    } while (0)

/* A memory backend call: the backend has said what failed. */
#define PERF_MEM(rk, expr)              \
    do {                                \
        ecclResult_t mem_res_ = (expr); \
        if (mem_res_ != ecclSuccess) {  \
            (rk)->failed = 1;           \
            return mem_res_;            \
        }                               \
    } while (0)

/* A barrier: a one-element AllReduce whose result is checked too. */
static ecclResult_t perf_barrier(struct perf_rank *rk)
{
    int32_t v = 1;
    PERF_MEM(rk, rk->mem->upload(rk, rk->small, &v, sizeof(v)));
    PERF_CALL(rk, ecclAllReduce(rk->small, rk->small, 1, ecclInt32, ecclSum, rk->comm, rk->stream),
              "ecclAllReduce (barrier)");
    PERF_MEM(rk, rk->mem->download(rk, &v, rk->small, sizeof(v)));
    if (v != rk->nranks) {
        fprintf(stderr, "eccl-perf: rank %d: barrier AllReduce returned %d, expected %d\n",
                rk->rank, (int)v, rk->nranks);
        rk->failed = 1;
        return ecclInternalError;
    }
    return ecclSuccess;
}

/* Combines n doubles over ranks: 0 rank 0's, 1 mean, 2 min, 3 max. */
static ecclResult_t combine_doubles(struct perf_rank *rk, double *vals, int n, int mode)
{
    PERF_MEM(rk, rk->mem->upload(rk, rk->small, vals, (size_t)n * sizeof(*vals)));
    if (mode == 0) {
        PERF_CALL(
            rk, ecclBroadcast(rk->small, rk->small, (size_t)n, ecclDouble, 0, rk->comm, rk->stream),
            "ecclBroadcast (timings)");
    } else {
        ecclRedOp_t op = mode == 2 ? ecclMin : mode == 3 ? ecclMax : ecclSum;
        PERF_CALL(
            rk,
            ecclAllReduce(rk->small, rk->small, (size_t)n, ecclDouble, op, rk->comm, rk->stream),
            "ecclAllReduce (timings)");
    }
    PERF_MEM(rk, rk->mem->download(rk, vals, rk->small, (size_t)n * sizeof(*vals)));
    if (mode == 1) {
        for (int i = 0; i < n; i++)
            vals[i] /= rk->nranks;
    }
    return ecclSuccess;
}

static ecclResult_t sum_int64(struct perf_rank *rk, int64_t *v)
{
    PERF_MEM(rk, rk->mem->upload(rk, rk->small, v, sizeof(*v)));
    PERF_CALL(rk, ecclAllReduce(rk->small, rk->small, 1, ecclInt64, ecclSum, rk->comm, rk->stream),
              "ecclAllReduce (#wrong)");
    PERF_MEM(rk, rk->mem->download(rk, v, rk->small, sizeof(*v)));
    return ecclSuccess;
}

static void bench_set_size(const struct perf_rank *rk, struct bench *b, size_t bytes)
{
    b->coll->get_counts(bytes / b->type->size, rk->nranks, &b->counts);
}

static size_t total_bytes(const struct bench *b)
{
    size_t n =
        b->counts.send_count > b->counts.recv_count ? b->counts.send_count : b->counts.recv_count;
    return n * b->type->size;
}

static void call_buffers(const struct perf_rank *rk, const struct bench *b, int in_place,
                         size_t shift, const void **send, void **recv)
{
    size_t elt = b->type->size;
    char *r = (char *)rk->recvbuf + shift;
    char *s = (char *)rk->sendbuf + shift;
    *send = in_place ? r + b->counts.send_inplace_off * (size_t)rk->rank * elt : s;
    *recv = in_place ? r + b->counts.recv_inplace_off * (size_t)rk->rank * elt : r;
}

static ecclResult_t run_once(struct perf_rank *rk, const struct bench *b, int in_place,
                             size_t shift)
{
    const void *send;
    void *recv;
    call_buffers(rk, b, in_place, shift, &send, &recv);
    ecclResult_t res = b->coll->run(send, recv, b->counts.param_count, b->type->dtype, b->eop,
                                    b->root, rk->comm, rk->stream);
    if (res != ecclSuccess) {
        char what[160];
        snprintf(what, sizeof(what), "%s(count %zu, %s, %s, root %d, %s)",
                 perf_coll_api_name(b->coll), b->counts.param_count, b->type->name,
                 perf_op_name(b->op), b->root, in_place ? "in-place" : "out-of-place");
        return eccl_failed(rk, res, what);
    }
    return ecclSuccess;
}

/* The offset of iteration `iter` in the buffers: like nccl-tests, consecutive iterations use
 * different parts of the buffers so that small sizes are not measured from the cache only. */
static size_t iter_shift(const struct perf_rank *rk, const struct bench *b, int iter)
{
    size_t total = total_bytes(b);
    if (total == 0)
        return 0;
    size_t steps = rk->opts->alloc_bytes / total;
    if (steps == 0)
        return 0;
    return total * ((size_t)iter % steps);
}

/* Zeroes the receive buffer and writes this rank's input where the call reads it. */
static ecclResult_t prepare_data(struct perf_rank *rk, const struct bench *b, int in_place,
                                 struct perf_check *chk)
{
    memset(chk, 0, sizeof(*chk));
    chk->coll = b->coll;
    chk->rank = rk->rank;
    chk->root = b->root;
    chk->in_place = in_place;
    chk->counts = b->counts;
    perf_pattern_init(&chk->pattern, b->type, b->op, rk->nranks, rk->rep);

    size_t elt = b->type->size;
    size_t send_bytes = b->counts.send_count * elt;
    PERF_MEM(rk, rk->mem->zero(rk, rk->recvbuf, total_bytes(b)));
    const void *send;
    void *recv;
    call_buffers(rk, b, in_place, 0, &send, &recv);
    if (rk->mem->host_accessible) {
        perf_pattern_fill(&chk->pattern, rk->rank, (void *)send, 0, b->counts.send_count);
    } else {
        perf_pattern_fill(&chk->pattern, rk->rank, rk->stage, 0, b->counts.send_count);
        PERF_MEM(rk, rk->mem->upload(rk, (void *)send, rk->stage, send_bytes));
    }
    return ecclSuccess;
}

static ecclResult_t check_data(struct perf_rank *rk, const struct bench *b, int in_place,
                               const struct perf_check *chk, int64_t *wrong)
{
    const void *send;
    void *recv;
    call_buffers(rk, b, in_place, 0, &send, &recv);
    const void *host = recv;
    if (!rk->mem->host_accessible) {
        PERF_MEM(rk, rk->mem->download(rk, rk->stage, recv, b->counts.recv_count * b->type->size));
        host = rk->stage;
    }
    *wrong = perf_check_recv(chk, host);
    return ecclSuccess;
}

/* --corrupt: inverts every bit of the first received element, as a broken collective would. */
static ecclResult_t corrupt_recv(struct perf_rank *rk, const struct bench *b, int in_place)
{
    const void *send;
    void *recv;
    unsigned char elem[8];
    size_t elt = b->type->size;
    if (b->counts.recv_count == 0)
        return ecclSuccess;
    call_buffers(rk, b, in_place, 0, &send, &recv);
    PERF_MEM(rk, rk->mem->download(rk, elem, recv, elt));
    for (size_t i = 0; i < elt; i++)
        elem[i] = (unsigned char)~elem[i];
    PERF_MEM(rk, rk->mem->upload(rk, recv, elem, elt));
    return ecclSuccess;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * Out-of-place or in-place: time the iterations, then check one run.
 *
 * The loop starts after a barrier (which waits for the stream, so the device is idle) and ends
 * when the backend's wait returns. With device timing, event 0 is recorded before the first
 * iteration and event i + 1 after iteration i (or one event after the last when there are too
 * many iterations for an event each): the time is the events' span, each iteration's the span
 * of its two events. The host clock times the same loop, from before the first call to the end
 * of the wait: that is the time without device timing, and the cross-check with it.
 */
static ecclResult_t bench_time(struct perf_rank *rk, const struct bench *b, int in_place,
                               struct half_result *out)
{
    const struct perf_opts *o = rk->opts;
    const struct perf_mem_ops *mem = rk->mem;
    int dev_timing = mem->mark != NULL;
    int iter_marks = dev_timing && rk->nmarks > o->iters;
    double calls = (double)o->iters * o->agg_iters;
    struct perf_check chk;
    ecclResult_t res;

    if (o->check) {
        rk->rep++;
        if ((res = prepare_data(rk, b, in_place, &chk)) != ecclSuccess)
            return res;
    }
    if ((res = run_once(rk, b, in_place, 0)) != ecclSuccess)
        return res;
    if ((res = perf_barrier(rk)) != ecclSuccess)
        return res;

    if (dev_timing)
        PERF_MEM(rk, mem->mark(rk, 0));
    uint64_t start = eccl_now_ns();
    for (int iter = 0; iter < o->iters; iter++) {
        uint64_t t0 = eccl_now_ns();
        if (o->agg_iters > 1)
            PERF_CALL(rk, ecclGroupStart(), "ecclGroupStart");
        for (int a = 0; a < o->agg_iters; a++) {
            res = run_once(rk, b, in_place, iter_shift(rk, b, iter * o->agg_iters + a));
            if (res != ecclSuccess) {
                if (o->agg_iters > 1)
                    (void)ecclGroupEnd();
                return res;
            }
        }
        if (o->agg_iters > 1)
            PERF_CALL(rk, ecclGroupEnd(), "ecclGroupEnd");
        if (o->blocking == 1 && (res = perf_barrier(rk)) != ecclSuccess)
            return res;
        if (o->blocking == 2)
            PERF_MEM(rk, mem->wait(rk));
        if (iter_marks)
            PERF_MEM(rk, mem->mark(rk, iter + 1));
        rk->iter_us[iter] = (double)(eccl_now_ns() - t0) / 1e3 / o->agg_iters;
    }
    if (dev_timing && !iter_marks)
        PERF_MEM(rk, mem->mark(rk, 1));
    PERF_MEM(rk, mem->wait(rk));
    double host_us = (double)(eccl_now_ns() - start) / 1e3 / calls;

    double stats[3] = {host_us, 0.0, host_us};
    if (dev_timing) {
        double span = 0.0;
        PERF_MEM(rk, mem->elapsed_us(rk, 0, iter_marks ? o->iters : 1, &span));
        stats[0] = span / calls;
        for (int iter = 0; iter < o->iters && iter_marks; iter++) {
            double us = 0.0;
            PERF_MEM(rk, mem->elapsed_us(rk, iter, iter + 1, &us));
            rk->iter_us[iter] = us / o->agg_iters;
        }
    }
    stats[1] = median_of(rk->iter_us, o->iters);
    if ((res = combine_doubles(rk, stats, 3, o->average)) != ecclSuccess)
        return res;

    out->time_us = stats[0];
    out->median_us = stats[1];
    out->host_us = stats[2];
    if (dev_timing && rk->rank == 0 && stats[0] > 0) {
        double ratio = stats[2] / stats[0];
        if (rk->host_ratio_count == 0 || ratio < rk->host_ratio_min)
            rk->host_ratio_min = ratio;
        if (rk->host_ratio_count == 0 || ratio > rk->host_ratio_max)
            rk->host_ratio_max = ratio;
        rk->host_ratio_count++;
    }
    double sec = stats[0] / 1e6;
    double bytes = b->coll->bw_bytes(b->counts.param_count, b->type->size, rk->nranks);
    out->algbw = sec > 0 ? bytes / 1e9 / sec : 0.0;
    out->busbw = out->algbw * b->coll->bus_factor(rk->nranks);
    out->wrong = -1;

    int report = o->check && (!in_place || b->coll->inplace == PERF_INPLACE_CHECKED);
    for (int c = 0; c < o->check; c++) {
        if ((res = perf_barrier(rk)) != ecclSuccess)
            return res;
        rk->rep++;
        if ((res = prepare_data(rk, b, in_place, &chk)) != ecclSuccess)
            return res;
        if ((res = run_once(rk, b, in_place, 0)) != ecclSuccess)
            return res;
        if (!report)
            continue;
        int64_t wrong = 0;
        if (rk->rank == o->corrupt_rank && (res = corrupt_recv(rk, b, in_place)) != ecclSuccess)
            return res;
        if ((res = check_data(rk, b, in_place, &chk, &wrong)) != ecclSuccess)
            return res;
        rk->wrong += wrong;
        if ((res = sum_int64(rk, &wrong)) != ecclSuccess)
            return res;
        out->wrong = wrong;
        if (wrong)
            break;
    }
    return ecclSuccess;
}

/* Like nccl-tests: as many decimals (up to 2) as fit the width, else exponent notation. */
static void fmt_num(char *buf, size_t len, double v, int width)
{
    for (int dec = 2; dec >= 0; dec--) {
        int n = snprintf(buf, len, "%*.*f", width, dec, v);
        if (n <= width)
            return;
    }
    snprintf(buf, len, "%*.1e", width, v);
}

static void print_half(const struct perf_opts *o, const struct half_result *r)
{
    char t[32], alg[32], bus[32], wrong[32];
    if (r->skipped) {
        printf("  %7s  %6s  %6s  %6s", "N/A", "N/A", "N/A", "N/A");
        if (o->median)
            printf("  %7s", "N/A");
        if (o->host_time)
            printf("  %7s", "N/A");
        return;
    }
    fmt_num(t, sizeof(t), r->time_us, 7);
    fmt_num(alg, sizeof(alg), r->algbw, 6);
    fmt_num(bus, sizeof(bus), r->busbw, 6);
    if (r->wrong < 0)
        snprintf(wrong, sizeof(wrong), "%6s", "N/A");
    else
        snprintf(wrong, sizeof(wrong), "%6g", (double)r->wrong);
    printf("  %7s  %6s  %6s  %6s", t, alg, bus, wrong);
    if (o->median) {
        fmt_num(t, sizeof(t), r->median_us, 7);
        printf("  %7s", t);
    }
    if (o->host_time) {
        fmt_num(t, sizeof(t), r->host_us, 7);
        printf("  %7s", t);
    }
}

static ecclResult_t time_test(struct perf_rank *rk, struct bench *b)
{
    const struct perf_opts *o = rk->opts;
    ecclResult_t res = ecclSuccess;
    int made_op = 0;

    b->eop = b->op >= 0 && b->op < PERF_OP_PREMULSUM ? (ecclRedOp_t)b->op : ecclSum;
    if (b->op == PERF_OP_PREMULSUM) {
        uint64_t scalar = 0;
        perf_type_store(b->type, &scalar,
                        b->type->is_float ? perf_type_encode(b->type, perf_premul_scalar(rk->rank))
                                          : (uint64_t)perf_premul_scalar(rk->rank));
        PERF_CALL(rk,
                  ecclRedOpCreatePreMulSum(&b->eop, &scalar, b->type->dtype,
                                           ecclScalarHostImmediate, rk->comm),
                  "ecclRedOpCreatePreMulSum");
        made_op = 1;
    }
    if ((res = perf_barrier(rk)) != ecclSuccess)
        goto out_destroy_op;

    /* Warm-up at the largest and the smallest size. */
    size_t warm[2] = {o->max_bytes, o->min_bytes};
    for (int w = 0; w < 2; w++) {
        bench_set_size(rk, b, warm[w]);
        for (int iter = 0; iter < o->warmup_iters; iter++) {
            if ((res = run_once(rk, b, 0, iter_shift(rk, b, iter))) != ecclSuccess)
                goto out_destroy_op;
        }
    }

    for (size_t size = o->min_bytes; size <= o->max_bytes;) {
        bench_set_size(rk, b, size);
        size_t shown = total_bytes(b);
        if (rk->rank == 0)
            printf("%12zu  %12zu  %8s  %6s  %6d", shown, b->counts.param_count, b->type->name,
                   perf_op_name(b->op), b->root);
        struct half_result r[2];
        for (int in_place = 0; in_place < 2; in_place++) {
            memset(&r[in_place], 0, sizeof(r[in_place]));
            if (in_place && b->coll->inplace == PERF_INPLACE_NONE) {
                r[in_place].skipped = 1;
                if (rk->rank == 0)
                    print_half(o, &r[in_place]);
                if (rk->rank == 0 && o->csv_file) {
                    struct perf_csv_half h[2] = {
                        {r[0].skipped, r[0].time_us, r[0].algbw, r[0].busbw, r[0].wrong},
                        {1, 0, 0, 0, -1}};
                    perf_csv_row(o, shown, b->counts.param_count, b->type->name,
                                 perf_op_name(b->op), b->root, h);
                }
                continue;
            }
            if ((res = bench_time(rk, b, in_place, &r[in_place])) != ecclSuccess) {
                if (rk->rank == 0)
                    printf("\n");
                goto out_destroy_op;
            }
            if (rk->rank == 0) {
                print_half(o, &r[in_place]);
                if (o->csv_file && in_place == 1) {
                    struct perf_csv_half h[2];
                    for (int k = 0; k < 2; k++)
                        h[k] = (struct perf_csv_half){r[k].skipped, r[k].time_us, r[k].algbw,
                                                      r[k].busbw, r[k].wrong};
                    perf_csv_row(o, shown, b->counts.param_count, b->type->name,
                                 perf_op_name(b->op), b->root, h);
                }
                rk->bw_sum += r[in_place].busbw;
                rk->bw_count++;
                if (r[in_place].wrong > 0)
                    rk->result_errors++;
            }
        }
        if (rk->rank == 0)
            printf("\n");
        size_t next =
            o->step_factor > 1 ? (size ? size * o->step_factor : 1) : size + o->step_bytes;
        if (next <= size)
            break; /* overflow */
        size = next;
    }

out_destroy_op:
    if (made_op) {
        ecclResult_t dres = ecclRedOpDestroy(b->eop, rk->comm);
        if (dres != ecclSuccess && res == ecclSuccess)
            res = eccl_failed(rk, dres, "ecclRedOpDestroy");
    }
    return res;
}

/* The "# Using devices" lines: every rank's host and pid, gathered to everyone. */
static ecclResult_t print_devices(struct perf_rank *rk)
{
    ecclResult_t res = ecclSuccess;
    void *send = NULL, *recv = NULL;
    struct perf_info *all = NULL;
    size_t n = (size_t)rk->nranks;

    struct perf_info me;
    memset(&me, 0, sizeof(me));
    me.rank = rk->rank;
    me.pid = (int32_t)getpid();
    me.dev = rk->device; /* -1: host buffers */
    snprintf(me.bus_id, sizeof(me.bus_id), "%s", rk->bus_id);
    snprintf(me.dev_name, sizeof(me.dev_name), "%s", rk->dev_name);
    if (gethostname(me.host, sizeof(me.host) - 1) != 0)
        snprintf(me.host, sizeof(me.host), "unknown");
    char *dot = strchr(me.host, '.');
    if (dot)
        *dot = '\0';

    all = eccl_calloc(n, sizeof(*all), "perf_info");
    if (all == NULL) {
        rk->failed = 1;
        return ecclSystemError;
    }
    if ((res = rk->mem->alloc(rk, &send, sizeof(me))) != ecclSuccess ||
        (res = rk->mem->alloc(rk, &recv, n * sizeof(me))) != ecclSuccess ||
        (res = rk->mem->upload(rk, send, &me, sizeof(me))) != ecclSuccess) {
        rk->failed = 1;
        goto out;
    }
    res = ecclAllGather(send, recv, sizeof(me), ecclUint8, rk->comm, rk->stream);
    if (res != ecclSuccess) {
        eccl_failed(rk, res, "ecclAllGather (rank information)");
        goto out;
    }
    if ((res = rk->mem->download(rk, all, recv, n * sizeof(me))) != ecclSuccess) {
        rk->failed = 1;
        goto out;
    }
    if (rk->rank == 0) {
        printf("# Using devices\n");
        for (size_t i = 0; i < n; i++) {
            /* Never trust what came over the wire to be terminated. */
            all[i].host[sizeof(all[i].host) - 1] = '\0';
            all[i].bus_id[sizeof(all[i].bus_id) - 1] = '\0';
            all[i].dev_name[sizeof(all[i].dev_name) - 1] = '\0';
            printf("#  Rank %2d Group %2d Pid %6d on %10s device %2d [%s] %s\n", (int)all[i].rank,
                   0, (int)all[i].pid, all[i].host, (int)all[i].dev, all[i].bus_id,
                   all[i].dev_name);
        }
        printf("#\n");
    }
out:
    rk->mem->free(rk, recv);
    rk->mem->free(rk, send);
    eccl_free(all);
    return res;
}

static const char *const average_names[4] = {"rank 0's", "the mean over ranks of each rank's",
                                             "the min over ranks of each rank's",
                                             "the max over ranks of each rank's"};

static void print_header(const struct perf_rank *rk)
{
    const struct perf_opts *o = rk->opts;
    int version = 0;
    if (ecclGetVersion(&version) != ecclSuccess)
        version = -1;
    printf("# eccl-perf version %s eccl-headers=%d eccl-library=%d\n", ECCL_RELEASE,
           ECCL_VERSION_CODE, version);
    printf("# Collective test starting: %s (%s)\n", o->coll->name, o->coll->nccl_name);
    printf("# nThread %d nGpus 1 minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d "
           "iters: %d agg iters: %d validation: %d graph: 0\n",
           o->nthreads, o->min_bytes, o->max_bytes,
           o->step_factor > 1 ? o->step_factor : o->step_bytes,
           o->step_factor > 1 ? "factor" : "bytes", o->warmup_iters, o->iters, o->agg_iters,
           o->check);
    const char *dev = getenv("ECCL_DEVICE");
    printf("# nProcs %d nRanks %d buffers: %s (ECCL_DEVICE=%s)\n", o->nprocs, rk->nranks,
           rk->mem->name, dev ? dev : "");
    printf("# time: %s average iteration time (-a %d)%s\n", average_names[o->average], o->average,
           o->median ? "; median: the same combination of each rank's median" : "");
    if (rk->mem->mark != NULL)
        printf("# timed with CUDA events on the %s stream; host: the host clock's time of the "
               "same loop, to the end of the stream\n",
               o->stream_null ? "default" : "rank's");
    if (o->blocking == 1)
        printf("# Blocking Enabled: wait for completion and barrier after each collective \n");
    if (o->blocking > 1)
        printf("# Blocking Enabled: wait for completion after each collective (no barrier) \n");
    printf("#\n");
}

static void print_centered(const char *label, int width)
{
    int len = (int)strlen(label);
    int pad = width > len ? (width - len) / 2 : 0;
    printf("%*s%s%*s", pad, "", label, width > len + pad ? width - len - pad : 0, "");
}

/* The columns of one half: time algbw busbw #wrong, then median (-M 1) and host (--host-time). */
static void print_half_header(const struct perf_opts *o, const char *const names[6])
{
    printf("  %7s  %6s  %6s  %6s", names[0], names[1], names[2], names[3]);
    if (o->median)
        printf("  %7s", names[4]);
    if (o->host_time)
        printf("  %7s", names[5]);
}

static void print_table_header(const struct perf_opts *o)
{
    static const char *const names[6] = {"time", "algbw", "busbw", "#wrong", "median", "host"};
    static const char *const units[6] = {"(us)", "(GB/s)", "(GB/s)", "", "(us)", "(us)"};
    int half = 2 + 7 + 3 * (2 + 6) + 9 * ((o->median != 0) + (o->host_time != 0));
    printf("#\n");
    printf("# %10s  %12s  %8s  %6s  %6s", "", "", "", "", "");
    print_centered("out-of-place", half);
    print_centered("in-place", half);
    printf("\n");
    printf("# %10s  %12s  %8s  %6s  %6s", "size", "count", "type", "redop", "root");
    print_half_header(o, names);
    print_half_header(o, names);
    printf("\n");
    printf("# %10s  %12s  %8s  %6s  %6s", "(B)", "(elements)", "", "", "");
    print_half_header(o, units);
    print_half_header(o, units);
    printf("\n");
}

static ecclResult_t run_all(struct perf_rank *rk)
{
    const struct perf_opts *o = rk->opts;
    ecclResult_t res;
    int t0 = o->dtype >= 0 ? o->dtype : 0;
    int t1 = o->dtype >= 0 ? o->dtype : ecclNumTypes - 1;
    int op0 = PERF_OP_NONE, op1 = PERF_OP_NONE;
    if (o->coll->has_op) {
        op0 = o->op >= 0 ? o->op : 0;
        op1 = o->op >= 0 ? o->op : PERF_OP_COUNT - 1;
    }
    int r0 = -1, r1 = -1;
    if (o->coll->has_root) {
        r0 = o->root >= 0 ? o->root : 0;
        r1 = o->root >= 0 ? o->root : rk->nranks - 1;
    }
    if (rk->rank == 0)
        print_table_header(o);
    for (int t = t0; t <= t1; t++) {
        for (int op = op0; op <= op1; op++) {
            for (int root = r0; root <= r1; root++) {
                struct bench b;
                memset(&b, 0, sizeof(b));
                b.coll = o->coll;
                b.type = perf_type_get((ecclDataType_t)t);
                b.op = op;
                b.root = root;
                if ((res = time_test(rk, &b)) != ecclSuccess)
                    return res;
            }
        }
    }
    return ecclSuccess;
}

static void print_footer(const struct perf_rank *rk)
{
    printf("# %-20s : %d %s\n", "Out of bounds values", rk->result_errors,
           rk->result_errors ? "FAILED" : "OK");
    printf("# %-20s : %g \n", "Avg bus bandwidth", rk->bw_count ? rk->bw_sum / rk->bw_count : 0.0);
    if (rk->host_ratio_count > 0)
        printf("# %-20s : min %.3f max %.3f (host clock / CUDA events, per result)\n",
               "Host-timed / timed", rk->host_ratio_min, rk->host_ratio_max);
    printf("#\n");
    printf("# Collective test concluded: %s\n", rk->opts->coll->name);
    printf("#\n");
}

static ecclResult_t rank_setup(struct perf_rank *rk)
{
    const struct perf_opts *o = rk->opts;
    ecclResult_t res;
    int count = -1, me = -1;

    /* The device first: a CUDA communicator is bound to the thread's current device. */
    PERF_MEM(rk, rk->mem->rank_init(rk));
    if (rk->comm == NULL) {
        ecclConfig_t cfg = ECCL_CONFIG_INITIALIZER;
        cfg.deviceKind = rk->mem->device_kind;
        PERF_CALL(rk, ecclCommInitRankConfig(&rk->comm, rk->nranks, rk->proc->id, rk->rank, &cfg),
                  "ecclCommInitRankConfig");
    }
    if (rk->device >= 0) {
        int dev = -1;
        PERF_CALL(rk, ecclCommCuDevice(rk->comm, &dev), "ecclCommCuDevice");
        if (dev != rk->device) {
            fprintf(stderr, "eccl-perf: rank %d: the communicator is on GPU %d, expected %d\n",
                    rk->rank, dev, rk->device);
            rk->failed = 1;
            return ecclInternalError;
        }
    }
    PERF_CALL(rk, ecclCommCount(rk->comm, &count), "ecclCommCount");
    PERF_CALL(rk, ecclCommUserRank(rk->comm, &me), "ecclCommUserRank");
    if (count != rk->nranks || me != rk->rank) {
        fprintf(stderr,
                "eccl-perf: rank %d: the communicator says rank %d of %d, expected %d of %d\n",
                rk->rank, me, count, rk->rank, rk->nranks);
        rk->failed = 1;
        return ecclInternalError;
    }
    if ((res = rk->mem->alloc(rk, &rk->sendbuf, o->alloc_bytes)) != ecclSuccess ||
        (res = rk->mem->alloc(rk, &rk->recvbuf, o->alloc_bytes)) != ecclSuccess ||
        (res = rk->mem->alloc(rk, &rk->small, PERF_SMALL_BYTES)) != ecclSuccess) {
        rk->failed = 1;
        return res;
    }
    if (o->reg) {
        PERF_CALL(rk, ecclCommRegister(rk->comm, rk->sendbuf, o->alloc_bytes, &rk->reg_send),
                  "ecclCommRegister");
        PERF_CALL(rk, ecclCommRegister(rk->comm, rk->recvbuf, o->alloc_bytes, &rk->reg_recv),
                  "ecclCommRegister");
    }
    if (!rk->mem->host_accessible) {
        rk->stage = eccl_calloc(o->alloc_bytes, 1, "perf_stage");
        if (rk->stage == NULL)
            return eccl_failed(rk, ecclSystemError, "staging buffer allocation");
    }
    rk->iter_us = eccl_calloc((size_t)o->iters, sizeof(*rk->iter_us), "perf_iters");
    if (rk->iter_us == NULL)
        return eccl_failed(rk, ecclSystemError, "allocation");
    return ecclSuccess;
}

static void rank_teardown(struct perf_rank *rk)
{
    if (rk->comm != NULL) {
        ecclResult_t res;
        if (!rk->failed) {
            if (rk->reg_send != NULL &&
                (res = ecclCommDeregister(rk->comm, rk->reg_send)) != ecclSuccess)
                eccl_failed(rk, res, "ecclCommDeregister");
            if (rk->reg_recv != NULL &&
                (res = ecclCommDeregister(rk->comm, rk->reg_recv)) != ecclSuccess)
                eccl_failed(rk, res, "ecclCommDeregister");
        }
        rk->reg_send = rk->reg_recv = NULL;
        if (rk->failed) {
            /* Peers may be blocked in a collective with us: abort never waits for them. */
            res = ecclCommAbort(rk->comm);
            if (res != ecclSuccess)
                fprintf(stderr, "eccl-perf: rank %d: ecclCommAbort failed: %s\n", rk->rank,
                        ecclGetErrorString(res));
        } else {
            res = ecclCommDestroy(rk->comm);
            if (res != ecclSuccess)
                eccl_failed(rk, res, "ecclCommDestroy");
        }
        rk->comm = NULL;
    }
    /* After the communicator: an aborted one has stopped its kernels, which the backend's free
     * waits for (a bounded time). */
    rk->mem->free(rk, rk->small);
    rk->mem->free(rk, rk->recvbuf);
    rk->mem->free(rk, rk->sendbuf);
    rk->small = rk->recvbuf = rk->sendbuf = NULL;
    rk->mem->rank_fini(rk);
    eccl_free(rk->stage);
    eccl_free(rk->iter_us);
    rk->stage = NULL;
    rk->iter_us = NULL;
}

void *perf_rank_main(void *arg)
{
    struct perf_rank *rk = arg;
    struct perf_proc *pp = rk->proc;

    rk->deadline = rk->opts->timeout_s > 0 ? eccl_deadline_ms((int64_t)rk->opts->timeout_s * 1000)
                                           : ECCL_NO_DEADLINE;
    if (rank_setup(rk) == ecclSuccess) {
        if (rk->rank == 0)
            print_header(rk);
        if (print_devices(rk) == ecclSuccess && run_all(rk) == ecclSuccess) {
            if (rk->rank == 0)
                print_footer(rk);
            /* Nobody tears down while a peer still works on the last collective. */
            (void)perf_barrier(rk);
        }
    }
    if (rk->wrong > 0)
        fprintf(stderr, "eccl-perf: rank %d: %lld wrong elements in total\n", rk->rank,
                (long long)rk->wrong);
    rank_teardown(rk);
    fflush(stdout);

    pthread_mutex_lock(&pp->lock);
    rk->done = 1;
    pp->ndone++;
    if (rk->failed || rk->wrong > 0 || rk->result_errors > 0)
        pp->nfailed++;
    pthread_cond_broadcast(&pp->cond);
    pthread_mutex_unlock(&pp->lock);
    return NULL;
}

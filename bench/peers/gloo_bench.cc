/*
 * gloo_bench.cc - Gloo's AllReduce, AllGather, ReduceScatter and Broadcast (float32, sum), timed
 * the way eccl-perf times eccl's (bench/host_vs_peers.sh compares them side by side).
 *
 * The C++ library is driven directly (Debian's libgloo-dev), not through PyTorch: no
 * interpreter, no tensor dispatch, and PyTorch 1.13's Gloo backend has no ReduceScatter on CPU.
 * The calls are the ones PyTorch's ProcessGroupGloo makes: gloo::allreduce (ring),
 * gloo::allgather, gloo::broadcast; ReduceScatter is gloo::ReduceScatterHalvingDoubling, Gloo's
 * only reduce-scatter, built once per size (it keeps the buffers it is given, so its
 * iterations do not move through the buffers as the others' do). Transport: TCP over
 * loopback, Gloo's only transport here.
 *
 * The process forks `-N` ranks; they meet through a gloo FileStore in a fresh temporary folder.
 * Sizes, warm-up, timing and output are those of bench/peers/mpi_bench.c.
 * Usage: gloo_bench -N RANKS -c COLL -b MIN -e MAX [-f FACTOR] [-n ITERS] [-w WARMUP]
 */
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/reduce.h>
#include <gloo/reduce_scatter.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace
{

enum Coll { ALLREDUCE, ALLGATHER, REDUCESCATTER, BROADCAST };
const char *const kNames[] = {"allreduce", "allgather", "reducescatter", "broadcast"};

struct Opts {
    int nranks = 2;
    Coll coll = ALLREDUCE;
    size_t min_bytes = 32u << 20, max_bytes = 32u << 20;
    double factor = 2;
    int iters = 20, warmup = 5;
    std::string dir;
};

double now_us()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k')
        v *= 1024;
    else if (*end == 'M' || *end == 'm')
        v *= 1024 * 1024;
    else if (*end == 'G' || *end == 'g')
        v *= 1024.0 * 1024 * 1024;
    return (size_t)v;
}

struct Bench {
    const Opts &o;
    std::shared_ptr<gloo::Context> ctx;
    int rank, n;
    float *sb = nullptr, *rb = nullptr;
    size_t alloc = 0;
    uint32_t tag = 0;
    std::unique_ptr<gloo::ReduceScatterHalvingDoubling<float>> rs;
    size_t rs_count = SIZE_MAX;

    Bench(const Opts &opts, std::shared_ptr<gloo::Context> c, int r, int size)
        : o(opts), ctx(std::move(c)), rank(r), n(size)
    {
    }

    void counts(size_t bytes, size_t *count, size_t *send, size_t *recv) const
    {
        size_t c = bytes / sizeof(float);
        if (o.coll == ALLGATHER || o.coll == REDUCESCATTER)
            c /= (size_t)n;
        *count = c;
        *send = c * sizeof(float) * (o.coll == REDUCESCATTER ? (size_t)n : 1);
        *recv = c * sizeof(float) * (o.coll == ALLGATHER ? (size_t)n : 1);
    }

    void prepare(size_t count)
    {
        if (o.coll == REDUCESCATTER && count != rs_count) {
            std::vector<float *> ptrs{rb};
            rs.reset(new gloo::ReduceScatterHalvingDoubling<float>(
                ctx, ptrs, (int)(count * (size_t)n), std::vector<int>((size_t)n, (int)count)));
            rs_count = count;
        }
    }

    void run_once(size_t count, size_t shift)
    {
        if (count == 0)
            return;
        float *s = (float *)((char *)sb + shift), *r = (float *)((char *)rb + shift);
        switch (o.coll) {
        case ALLREDUCE: {
            gloo::AllreduceOptions opts(ctx);
            opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
            opts.setInput(s, count);
            opts.setOutput(r, count);
            opts.setTag(tag++);
            void (*fn)(void *, const void *, const void *, size_t) = &gloo::sum<float>;
            opts.setReduceFunction(fn);
            gloo::allreduce(opts);
            break;
        }
        case ALLGATHER: {
            gloo::AllgatherOptions opts(ctx);
            opts.setInput(s, count);
            opts.setOutput(r, count * (size_t)n);
            opts.setTag(tag++);
            gloo::allgather(opts);
            break;
        }
        case REDUCESCATTER:
            rs->run();
            break;
        case BROADCAST: {
            gloo::BroadcastOptions opts(ctx);
            opts.setOutput(r, count);
            opts.setRoot(0);
            opts.setTag(tag++);
            gloo::broadcast(opts);
            break;
        }
        }
    }

    void barrier()
    {
        gloo::BarrierOptions opts(ctx);
        opts.setTag(tag++);
        gloo::barrier(opts);
    }

    /* The maximum over ranks of `v`, on every rank. */
    double max_over_ranks(double v)
    {
        std::vector<double> all((size_t)n);
        gloo::AllgatherOptions opts(ctx);
        opts.setInput(&v, 1);
        opts.setOutput(all.data(), all.size());
        opts.setTag(tag++);
        gloo::allgather(opts);
        return *std::max_element(all.begin(), all.end());
    }
};

int run_rank(const Opts &o, int rank)
{
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore store(o.dir);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, o.nranks);
    ctx->setTimeout(std::chrono::seconds(600));
    ctx->connectFullMesh(store, dev);

    Bench b(o, ctx, rank, o.nranks);
    b.alloc = std::max<size_t>(64, (o.max_bytes + 63) & ~(size_t)63);
    b.sb = (float *)aligned_alloc(64, b.alloc);
    b.rb = (float *)aligned_alloc(64, b.alloc);
    if (!b.sb || !b.rb) {
        fprintf(stderr, "gloo_bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < b.alloc / sizeof(float); i++) {
        b.sb[i] = (float)(i % 7);
        b.rb[i] = 0;
    }
    std::vector<double> it((size_t)o.iters);
    size_t count, send, recv;
    for (size_t bytes : {o.max_bytes, o.min_bytes}) {
        b.counts(bytes, &count, &send, &recv);
        b.prepare(count);
        for (int i = 0; i < o.warmup; i++)
            b.run_once(count, 0);
    }
    for (size_t bytes = o.min_bytes; bytes <= o.max_bytes;
         bytes = bytes ? (size_t)((double)bytes * o.factor) : 1) {
        b.counts(bytes, &count, &send, &recv);
        b.prepare(count);
        size_t total = std::max(send, recv);
        size_t steps = total ? b.alloc / total : 0;
        b.run_once(count, 0);
        b.barrier();
        for (int i = 0; i < o.iters; i++) {
            size_t shift = (steps && o.coll != REDUCESCATTER) ? total * ((size_t)i % steps) : 0;
            double t0 = now_us();
            b.run_once(count, shift);
            it[(size_t)i] = now_us() - t0;
        }
        std::sort(it.begin(), it.end());
        size_t h = (size_t)o.iters / 2;
        double med = o.iters % 2 ? it[h] : (it[h - 1] + it[h]) / 2;
        double worst = b.max_over_ranks(med);
        if (rank == 0) {
            double algbw = worst > 0 ? (double)total / worst / 1e3 : 0;
            int n = o.nranks;
            double f = o.coll == ALLREDUCE   ? 2.0 * (n - 1) / n
                       : o.coll == BROADCAST ? 1.0
                                             : (double)(n - 1) / n;
            printf("gloo %s %d %zu %.3f %.4f %.4f\n", kNames[o.coll], n, total, worst, algbw,
                   algbw * f);
            fflush(stdout);
        }
    }
    b.barrier();
    free(b.sb);
    free(b.rb);
    return 0;
}

int parse(int argc, char **argv, Opts *o)
{
    int c;
    while ((c = getopt(argc, argv, "N:c:b:e:f:n:w:")) != -1) {
        switch (c) {
        case 'N':
            o->nranks = atoi(optarg);
            break;
        case 'c': {
            int k = 0;
            while (k < 4 && strcmp(optarg, kNames[k]) != 0)
                k++;
            if (k == 4)
                return -1;
            o->coll = (Coll)k;
            break;
        }
        case 'b':
            o->min_bytes = parse_size(optarg);
            break;
        case 'e':
            o->max_bytes = parse_size(optarg);
            break;
        case 'f':
            o->factor = atof(optarg);
            break;
        case 'n':
            o->iters = atoi(optarg);
            break;
        case 'w':
            o->warmup = atoi(optarg);
            break;
        default:
            return -1;
        }
    }
    return o->nranks > 0 && o->iters > 0 && o->factor > 1 && o->min_bytes <= o->max_bytes ? 0 : -1;
}

} // namespace

int main(int argc, char **argv)
{
    Opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: gloo_bench -N RANKS -c COLL -b MIN -e MAX [-f F] [-n N] [-w W]\n");
        return 2;
    }
    char tmpl[] = "/tmp/gloo-bench-XXXXXX";
    if (!mkdtemp(tmpl)) {
        perror("gloo_bench: mkdtemp");
        return 1;
    }
    o.dir = tmpl;
    std::vector<pid_t> pids;
    for (int r = 0; r < o.nranks; r++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("gloo_bench: fork");
            for (pid_t p : pids)
                kill(p, SIGKILL);
            return 1;
        }
        if (pid == 0) {
            int rc = 1;
            try {
                rc = run_rank(o, r);
            } catch (const std::exception &e) {
                fprintf(stderr, "gloo_bench: rank %d: %s\n", r, e.what());
            }
            fflush(stdout);
            _exit(rc);
        }
        pids.push_back(pid);
    }
    int failed = 0;
    for (pid_t p : pids) {
        int st;
        if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    std::string cmd = "rm -rf '" + o.dir + "'";
    if (system(cmd.c_str()) != 0)
        failed = 1;
    return failed;
}

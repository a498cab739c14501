/*
 * dev_prims.cuh - the data-moving primitive of the collective kernels: one step's element work
 * (copy, reduce, reduce-and-copy, with up to two destinations), done by a whole thread block in
 * 16-byte packs when every pointer allows it, element by element otherwise.
 *
 * KIND says which inputs and outputs a step has (the step kinds of kernels/host_exec.c):
 *   SEND                    slot = pre(in)
 *   RECV                    out = prev
 *   RECV_REDUCE_SEND        slot = local(in, prev)
 *   RECV_REDUCE_COPY        out = post(local(in, prev))
 *   RECV_REDUCE_COPY_SEND   out = slot = post(local(in, prev))
 *   RECV_COPY_SEND          out = slot = prev
 *   COPY_SEND               out = slot = in (out skipped when it is in or NULL)
 * `prev` is another process's connector slot when VOL: read with volatile loads, which bypass
 * the non-coherent L1. Each thread keeps UNROLL packs in flight.
 */
#ifndef ECCL_KERNELS_DEV_PRIMS_CUH
#define ECCL_KERNELS_DEV_PRIMS_CUH

#include <stdint.h>

namespace eccl_dev
{

enum step_kind {
    STEP_SEND,
    STEP_RECV,
    STEP_RECV_REDUCE_SEND,
    STEP_RECV_REDUCE_COPY,
    STEP_RECV_REDUCE_COPY_SEND,
    STEP_RECV_COPY_SEND,
    STEP_COPY_SEND,
};

template <typename T> union pack16 {
    uint4 v;
    T e[16 / sizeof(T)];
};

template <bool VOL> __device__ __forceinline__ uint4 ld16(const void *p)
{
    uint4 v;
    if (VOL)
        asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else
        v = *(const uint4 *)p;
    return v;
}

template <typename T, bool VOL> __device__ __forceinline__ T ld1(const T *p)
{
    return VOL ? *(const volatile T *)p : *p;
}

template <int KIND> struct step_traits {
    static constexpr bool in = KIND == STEP_SEND || KIND == STEP_RECV_REDUCE_SEND ||
                               KIND == STEP_RECV_REDUCE_COPY ||
                               KIND == STEP_RECV_REDUCE_COPY_SEND || KIND == STEP_COPY_SEND;
    static constexpr bool prev = KIND != STEP_SEND && KIND != STEP_COPY_SEND;
    static constexpr bool out = KIND == STEP_RECV || KIND == STEP_RECV_REDUCE_COPY ||
                                KIND == STEP_RECV_REDUCE_COPY_SEND || KIND == STEP_RECV_COPY_SEND ||
                                KIND == STEP_COPY_SEND;
    static constexpr bool slot = KIND != STEP_RECV && KIND != STEP_RECV_REDUCE_COPY;
    static constexpr bool reduce = KIND == STEP_RECV_REDUCE_SEND || KIND == STEP_RECV_REDUCE_COPY ||
                                   KIND == STEP_RECV_REDUCE_COPY_SEND;
};

/* One element of a step. */
template <typename OP, int KIND>
__device__ __forceinline__ typename OP::T step_elem(const OP &op, typename OP::T x,
                                                    typename OP::T y)
{
    switch (KIND) {
    case STEP_SEND:
        return op.pre(x);
    case STEP_RECV:
    case STEP_RECV_COPY_SEND:
        return y;
    case STEP_RECV_REDUCE_SEND:
        return op.local(x, y);
    case STEP_RECV_REDUCE_COPY:
    case STEP_RECV_REDUCE_COPY_SEND:
        return op.post(op.local(x, y));
    default: /* COPY_SEND */
        return x;
    }
}

/* The step's elements [0, n), by threads [tid, nthreads) of the caller's group (a block, or a
 * whole grid for the benchmark). */
template <typename OP, int KIND, bool VOL, int UNROLL = 4>
__device__ __forceinline__ void
step_run(const OP &op, const typename OP::T *in, const typename OP::T *prev, typename OP::T *out,
         typename OP::T *slot, size_t n, size_t tid, size_t nthreads)
{
    typedef typename OP::T T;
    typedef step_traits<KIND> tr;
    constexpr int N = 16 / sizeof(T);
    bool write_out = tr::out && out != nullptr && !(KIND == STEP_COPY_SEND && out == in);
    uintptr_t addrs = 0;
    if (tr::in)
        addrs |= (uintptr_t)in;
    if (tr::prev)
        addrs |= (uintptr_t)prev;
    if (write_out)
        addrs |= (uintptr_t)out;
    if (tr::slot)
        addrs |= (uintptr_t)slot;
    size_t npack = (addrs & 15) == 0 ? n / N : 0;
    size_t p = tid;
    /* UNROLL packs per thread per round: the loads of a round are all issued before any use. */
    for (; p + (UNROLL - 1) * nthreads < npack; p += UNROLL * nthreads) {
        pack16<T> x[UNROLL], y[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            size_t q = p + u * nthreads;
            x[u].v = y[u].v = make_uint4(0, 0, 0, 0);
            if (tr::in)
                x[u].v = ld16<false>(in + q * N);
            if (tr::prev)
                y[u].v = ld16<VOL>(prev + q * N);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            size_t q = p + u * nthreads;
            pack16<T> r;
#pragma unroll
            for (int j = 0; j < N; j++)
                r.e[j] = step_elem<OP, KIND>(op, x[u].e[j], y[u].e[j]);
            if (write_out)
                *(uint4 *)(out + q * N) = r.v;
            if (tr::slot)
                *(uint4 *)(slot + q * N) = r.v;
        }
    }
    for (; p < npack; p += nthreads) {
        pack16<T> x, y, r;
        x.v = y.v = make_uint4(0, 0, 0, 0);
        if (tr::in)
            x.v = ld16<false>(in + p * N);
        if (tr::prev)
            y.v = ld16<VOL>(prev + p * N);
#pragma unroll
        for (int j = 0; j < N; j++)
            r.e[j] = step_elem<OP, KIND>(op, x.e[j], y.e[j]);
        if (write_out)
            *(uint4 *)(out + p * N) = r.v;
        if (tr::slot)
            *(uint4 *)(slot + p * N) = r.v;
    }
    for (size_t i = npack * N + tid; i < n; i += nthreads) {
        T x = T(), y = T();
        if (tr::in)
            x = in[i];
        if (tr::prev)
            y = ld1<T, VOL>(prev + i);
        T r = step_elem<OP, KIND>(op, x, y);
        if (write_out)
            out[i] = r;
        if (tr::slot)
            slot[i] = r;
    }
}

/* The same with the kind chosen at run time (uniform across the group). */
template <typename OP, bool VOL>
__device__ __forceinline__ void
step_run_kind(int kind, const OP &op, const typename OP::T *in, const typename OP::T *prev,
              typename OP::T *out, typename OP::T *slot, size_t n, size_t tid, size_t nthreads)
{
    switch (kind) {
    case STEP_SEND:
        step_run<OP, STEP_SEND, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    case STEP_RECV:
        step_run<OP, STEP_RECV, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    case STEP_RECV_REDUCE_SEND:
        step_run<OP, STEP_RECV_REDUCE_SEND, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    case STEP_RECV_REDUCE_COPY:
        step_run<OP, STEP_RECV_REDUCE_COPY, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    case STEP_RECV_REDUCE_COPY_SEND:
        step_run<OP, STEP_RECV_REDUCE_COPY_SEND, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    case STEP_RECV_COPY_SEND:
        step_run<OP, STEP_RECV_COPY_SEND, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    default:
        step_run<OP, STEP_COPY_SEND, VOL>(op, in, prev, out, slot, n, tid, nthreads);
        break;
    }
}

} // namespace eccl_dev

#endif

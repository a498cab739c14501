/*
 * reduce_dev.cu - the host-callable side of the CUDA reductions: the device count and the
 * self-test of kernels/reduce_dev.h, which runs the functors of kernels/reduce_dev.cuh in a
 * grid-stride kernel and compares every element with the host implementation (kernels/reduce.c).
 *
 * cudart is linked statically, so this loads on machines without a GPU or driver; there every
 * CUDA call fails, and the failure is reported once (WARN with cudaGetErrorString) as
 * ecclUnhandledCudaError.
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "eccl.h"
#include "kernels/reduce_dev.cuh" /* first: it makes work.h (included by reduce.h) C++-clean */
#include "kernels/reduce_dev.h"
extern "C" {
#include "common/alloc.h"
#include "common/log.h"
#include "common/time.h"
#include "kernels/reduce.h"
}

namespace
{

enum step { STEP_COMBINE = 0, STEP_LOCAL = 1, STEP_PRE = 2, STEP_POST = 3, STEP_COUNT = 4 };

const char *const step_names[STEP_COUNT] = {"combine", "local", "pre", "post"};

/* Generous: the largest self-test moves a few hundred MB. */
const int64_t selftest_timeout_ms = 60000;

template <int DTYPE, int KIND, int STEP>
__global__ void selftest_kernel(void *dstv, const void *av, const void *bv, size_t n,
                                uint64_t scalar)
{
    typedef eccl_dev::redop<DTYPE, KIND> op_t;
    typedef typename op_t::T T;
    const op_t op(scalar);
    T *dst = (T *)dstv;
    const T *a = (const T *)av;
    const T *b = (const T *)bv;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        switch (STEP) {
        case STEP_COMBINE:
            dst[i] = op.combine(a[i], b[i]);
            break;
        case STEP_LOCAL:
            dst[i] = op.local(a[i], b[i]);
            break;
        case STEP_PRE:
            dst[i] = op.pre(a[i]);
            break;
        default:
            dst[i] = op.post(a[i]);
            break;
        }
    }
}

typedef void (*kernel_fn)(void *, const void *, const void *, size_t, uint64_t);

/* Eight kernels per data type, not 24: a step that is the same computation for several kinds
 * runs one instantiation (combine is the sum for PREMULSUM and SUMPOSTDIV, local is combine
 * without PREMULSUM, pre and post without their kind are copies). Keeps the build short. */
template <int DTYPE> kernel_fn pick_kind(int kind, int s)
{
    int ckind = kind == ECCL_RED_PREMULSUM || kind == ECCL_RED_SUMPOSTDIV ? ECCL_RED_SUM : kind;
    if (s == STEP_LOCAL && kind == ECCL_RED_PREMULSUM)
        return selftest_kernel<DTYPE, ECCL_RED_PREMULSUM, STEP_LOCAL>;
    if (s == STEP_PRE && kind == ECCL_RED_PREMULSUM)
        return selftest_kernel<DTYPE, ECCL_RED_PREMULSUM, STEP_PRE>;
    if (s == STEP_POST && kind == ECCL_RED_SUMPOSTDIV)
        return selftest_kernel<DTYPE, ECCL_RED_SUMPOSTDIV, STEP_POST>;
    if (s == STEP_PRE || s == STEP_POST)
        return selftest_kernel<DTYPE, ECCL_RED_SUM, STEP_PRE>; /* a copy */
    switch (ckind) {
    case ECCL_RED_PROD:
        return selftest_kernel<DTYPE, ECCL_RED_PROD, STEP_COMBINE>;
    case ECCL_RED_MAX:
        return selftest_kernel<DTYPE, ECCL_RED_MAX, STEP_COMBINE>;
    case ECCL_RED_MIN:
        return selftest_kernel<DTYPE, ECCL_RED_MIN, STEP_COMBINE>;
    default:
        return selftest_kernel<DTYPE, ECCL_RED_SUM, STEP_COMBINE>;
    }
}

kernel_fn pick_kernel(int dtype, int kind, int s)
{
    switch (dtype) {
    case ecclInt8:
        return pick_kind<ecclInt8>(kind, s);
    case ecclUint8:
        return pick_kind<ecclUint8>(kind, s);
    case ecclInt32:
        return pick_kind<ecclInt32>(kind, s);
    case ecclUint32:
        return pick_kind<ecclUint32>(kind, s);
    case ecclInt64:
        return pick_kind<ecclInt64>(kind, s);
    case ecclUint64:
        return pick_kind<ecclUint64>(kind, s);
    case ecclFloat16:
        return pick_kind<ecclFloat16>(kind, s);
    case ecclFloat32:
        return pick_kind<ecclFloat32>(kind, s);
    case ecclFloat64:
        return pick_kind<ecclFloat64>(kind, s);
    case ecclBfloat16:
        return pick_kind<ecclBfloat16>(kind, s);
    case ecclFloat8e4m3:
        return pick_kind<ecclFloat8e4m3>(kind, s);
    case ecclFloat8e5m2:
        return pick_kind<ecclFloat8e5m2>(kind, s);
    default:
        return NULL;
    }
}

#define CUDA_GOTO(call, res, label)                                      \
    do {                                                                 \
        cudaError_t cuda_err_ = (call);                                  \
        if (cuda_err_ != cudaSuccess) {                                  \
            WARN("%s failed: %s", #call, cudaGetErrorString(cuda_err_)); \
            (res) = ecclUnhandledCudaError;                              \
            goto label;                                                  \
        }                                                                \
    } while (0)

/* Waits for the stream with a deadline (polling: cudaStreamSynchronize could block forever). */
ecclResult_t stream_wait(cudaStream_t stream, uint64_t deadline)
{
    for (;;) {
        cudaError_t err = cudaStreamQuery(stream);
        if (err == cudaSuccess)
            return ecclSuccess;
        if (err != cudaErrorNotReady) {
            WARN("cudaStreamQuery failed: %s", cudaGetErrorString(err));
            return ecclUnhandledCudaError;
        }
        if (eccl_deadline_passed(deadline)) {
            WARN("reduce self-test: the device did not finish within %lld ms",
                 (long long)selftest_timeout_ms);
            return ecclInternalError;
        }
        eccl_sleep_us(100);
    }
}

uint64_t rnd_next(uint64_t *state)
{
    uint64_t x = *state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Half random bit patterns (NaN, inf, subnormals of every type), half small values with few
 * significant bits (sums and products that round, tie and overflow the narrow types). */
void fill_random(unsigned char *buf, size_t n, int dtype, uint64_t *state)
{
    size_t sz = eccl_dtype_size(dtype);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd_next(state);
        if ((r & 1) && eccl_dtype_is_float(dtype)) {
            double v = (double)((int64_t)(r >> 8 & 0xfff) - 2048);
            for (int e = (int)(r >> 24 & 31) - 16; e < 0; e++)
                v *= 0.5;
            for (int e = (int)(r >> 24 & 31) - 16; e > 0; e--)
                v *= 2.0;
            eccl_dtype_store(buf, i, dtype, v);
        } else {
            memcpy(buf + i * sz, &r, sz);
        }
    }
}

uint64_t elem_bits(const unsigned char *buf, size_t i, size_t sz)
{
    uint64_t v = 0;
    memcpy(&v, buf + i * sz, sz);
    return v;
}

/* The host's result of one step. */
void host_step(int s, unsigned char *dst, const unsigned char *a, const unsigned char *b, size_t n,
               const struct eccl_redop *op)
{
    switch (s) {
    case STEP_COMBINE:
        eccl_reduce_combine(dst, a, b, n, op);
        break;
    case STEP_LOCAL:
        eccl_reduce_local(dst, a, b, n, op);
        break;
    case STEP_PRE:
        eccl_reduce_pre(dst, a, n, op);
        break;
    default:
        eccl_reduce_post(dst, a, n, op);
        break;
    }
}

} // namespace

extern "C" int kern_dev_count(void)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        INFO(ECCL_LOG_INIT, "no CUDA device: cudaGetDeviceCount: %s", cudaGetErrorString(err));
        (void)cudaGetLastError(); /* not sticky: clear it */
        return 0;
    }
    return count;
}

extern "C" ecclResult_t kern_dev_reduce_selftest(int dtype, int kind, size_t n, char *msg,
                                                 size_t msglen)
{
    ecclResult_t res = ecclSuccess;
    size_t sz = eccl_dtype_size(dtype);
    size_t bytes = (n > 0 ? n : 1) * sz;
    unsigned char *a = NULL, *b = NULL, *want = NULL, *got = NULL;
    void *da = NULL, *db = NULL, *dd = NULL;
    cudaStream_t stream = NULL;
    uint64_t state = 0x9e3779b97f4a7c15ull ^ ((uint64_t)dtype << 32) ^ ((uint64_t)kind << 40) ^ n;
    uint64_t deadline = eccl_deadline_ms(selftest_timeout_ms);
    struct eccl_redop op;
    unsigned bad = 0;
    int s;

    if (msglen > 0)
        msg[0] = '\0';
    if (sz == 0 || kind < 0 || kind >= ECCL_RED_COUNT) {
        WARN("reduce self-test: invalid dtype %d or kind %d", dtype, kind);
        return ecclInvalidArgument;
    }
    memset(&op, 0, sizeof(op));
    op.kind = (uint8_t)kind;
    op.dtype = (uint8_t)dtype;
    if (eccl_dtype_is_float(dtype)) {
        double sc = kind == ECCL_RED_SUMPOSTDIV ? 3.0 : 0.37;
        memcpy(&op.scalar, &sc, sizeof(sc));
    } else {
        op.scalar = kind == ECCL_RED_SUMPOSTDIV ? 7 : (uint64_t)-3;
    }

    a = (unsigned char *)eccl_calloc(bytes, 1, "reduce_selftest");
    b = (unsigned char *)eccl_calloc(bytes, 1, "reduce_selftest");
    want = (unsigned char *)eccl_calloc(bytes, 1, "reduce_selftest");
    got = (unsigned char *)eccl_calloc(bytes, 1, "reduce_selftest");
    if (a == NULL || b == NULL || want == NULL || got == NULL) {
        res = ecclSystemError;
        goto out;
    }
    fill_random(a, n, dtype, &state);
    fill_random(b, n, dtype, &state);

    CUDA_GOTO(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), res, out);
    CUDA_GOTO(cudaMalloc(&da, bytes), res, out);
    CUDA_GOTO(cudaMalloc(&db, bytes), res, out);
    CUDA_GOTO(cudaMalloc(&dd, bytes), res, out);
    CUDA_GOTO(cudaMemcpyAsync(da, a, n * sz, cudaMemcpyHostToDevice, stream), res, out);
    CUDA_GOTO(cudaMemcpyAsync(db, b, n * sz, cudaMemcpyHostToDevice, stream), res, out);

    for (s = 0; s < STEP_COUNT && bad == 0; s++) {
        kernel_fn fn = pick_kernel(dtype, kind, s);
        size_t blocks = (n + 255) / 256;
        blocks = blocks > 1024 ? 1024 : blocks > 0 ? blocks : 1;
        CUDA_GOTO(cudaMemsetAsync(dd, 0xa5, bytes, stream), res, out);
        fn<<<(unsigned)blocks, 256, 0, stream>>>(dd, da, db, n, op.scalar);
        CUDA_GOTO(cudaGetLastError(), res, out);
        CUDA_GOTO(cudaMemcpyAsync(got, dd, n * sz, cudaMemcpyDeviceToHost, stream), res, out);
        host_step(s, want, a, b, n, &op); /* overlaps the device */
        res = stream_wait(stream, deadline);
        if (res != ecclSuccess)
            goto out;
        for (size_t i = 0; i < n; i++) {
            uint64_t w = elem_bits(want, i, sz), g = elem_bits(got, i, sz);
            if (w == g)
                continue;
            if (eccl_dtype_is_float(dtype) &&
                eccl_dtype_load(want, i, dtype) != eccl_dtype_load(want, i, dtype) &&
                eccl_dtype_load(got, i, dtype) != eccl_dtype_load(got, i, dtype))
                continue; /* NaN and NaN: payloads may differ */
            if (bad++ == 0) {
                WARN("reduce self-test %s %s %s n %zu: element %zu of a 0x%llx b 0x%llx: device "
                     "0x%llx, host 0x%llx",
                     eccl_dtype_name(dtype), eccl_redop_name(kind), step_names[s], n, i,
                     (unsigned long long)elem_bits(a, i, sz),
                     (unsigned long long)elem_bits(b, i, sz), (unsigned long long)g,
                     (unsigned long long)w);
                if (msglen > 0)
                    snprintf(msg, msglen,
                             "%s %s %s n %zu: element %zu (a 0x%llx b 0x%llx): device 0x%llx, "
                             "host 0x%llx",
                             eccl_dtype_name(dtype), eccl_redop_name(kind), step_names[s], n, i,
                             (unsigned long long)elem_bits(a, i, sz),
                             (unsigned long long)elem_bits(b, i, sz), (unsigned long long)g,
                             (unsigned long long)w);
            }
        }
    }
    if (bad > 0) {
        res = ecclInternalError;
    } else if (msglen > 0) {
        snprintf(msg, msglen, "%s %s n %zu: combine, local, pre, post match the host",
                 eccl_dtype_name(dtype), eccl_redop_name(kind), n);
    }

out:
    if (res == ecclUnhandledCudaError && msglen > 0)
        snprintf(msg, msglen, "CUDA error: %s", eccl_log_last_error());
    /* Releases in any state; a failed free has nothing left to undo. */
    if (dd != NULL)
        (void)cudaFree(dd);
    if (db != NULL)
        (void)cudaFree(db);
    if (da != NULL)
        (void)cudaFree(da);
    if (stream != NULL)
        (void)cudaStreamDestroy(stream);
    eccl_free(got);
    eccl_free(want);
    eccl_free(b);
    eccl_free(a);
    return res;
}

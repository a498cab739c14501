/*
 * reduce_dev.cuh - the element-wise reductions of kernels/reduce.h as CUDA device functors, for
 * the collective kernels to use.
 *
 * Header-only: eccl_dev::redop<DTYPE, KIND> holds the operation's scalar and gives pre(x) (the
 * PREMULSUM multiplication, else the identity), combine(a, b) (the reduction alone), local(x,
 * remote) == combine(pre(x), remote) and post(x) (the SUMPOSTDIV division, else the identity), on
 * elements in their storage type (half, bfloat16 and fp8 as their bits). The results equal the
 * host's (kernels/reduce.c) bit for bit, NaN payloads aside: the same formulas, every float
 * operation rounded on its own (__fadd_rn and friends: no fused multiply-add), the narrow types
 * reduced in float and rounded to nearest even after each operation, fp8 saturating (e5m2 keeping
 * infinities), NaN-propagating MAX and MIN, integer arithmetic wrapping, SUMPOSTDIV truncating
 * toward zero. Half and bfloat16 use the hardware conversions (sm_80 and up), fp8 the same
 * integer formulas as the host (sm_80 has no fp8 conversions).
 */
#ifndef ECCL_KERNELS_REDUCE_DEV_CUH
#define ECCL_KERNELS_REDUCE_DEV_CUH

#include <stdint.h>

#include "eccl.h"
/* work.h asserts its layout with C11's _Static_assert, which C++ spells static_assert. */
#if defined(__cplusplus) && !defined(_Static_assert)
#define _Static_assert static_assert
#define ECCL_REDUCE_DEV_STATIC_ASSERT
#endif
#include "kernels/work.h"
#ifdef ECCL_REDUCE_DEV_STATIC_ASSERT
#undef _Static_assert
#undef ECCL_REDUCE_DEV_STATIC_ASSERT
#endif

namespace eccl_dev
{

/* ---- conversions ------------------------------------------------------------------------------ */

__device__ __forceinline__ float half_to_float(uint16_t h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ uint16_t float_to_half(float f)
{
    uint16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf16_to_float(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ uint16_t float_to_bf16(float f)
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    uint32_t x = __float_as_uint(f);
    uint32_t hi = x >> 16;
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(hi | 0x40u);
    return (uint16_t)((x + 0x7fffu + (hi & 1u)) >> 16);
#endif
}

__device__ __forceinline__ float fp8e4m3_to_float(uint8_t v)
{
    uint32_t sign = ((uint32_t)v & 0x80u) << 24;
    uint32_t em = (uint32_t)v & 0x7fu;
    uint32_t u = em << 20;
    uint32_t r;
    if (em == 0x7fu)
        r = 0x7fc00000u;
    else if ((em >> 3) == 0) /* m * 2^-9, exact */
        r = __float_as_uint(__fsub_rn(__uint_as_float(u + (121u << 23)), 0x1p-6f));
    else
        r = u + ((127u - 7u) << 23);
    return __uint_as_float(r | sign);
}

__device__ __forceinline__ uint8_t float_to_fp8e4m3(float f)
{
    uint32_t x = __float_as_uint(f);
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7fffffffu;
    uint32_t r;
    if (a > 0x7f800000u) {
        r = 0x7fu;
    } else if (a < 0x3c800000u) { /* below 2^-6: the float ulp at 2^14 is the step, 2^-9 */
        r = __float_as_uint(__fadd_rn(__uint_as_float(a), 16384.0f)) - 0x46800000u;
    } else { /* rebias, round to nearest even, saturate (infinity too) */
        r = (a + 0xc407ffffu + ((a >> 20) & 1u)) >> 20;
        r = r > 0x7eu ? 0x7eu : r;
    }
    return (uint8_t)(r | sign);
}

__device__ __forceinline__ float fp8e5m2_to_float(uint8_t v)
{
    return half_to_float((uint16_t)((uint32_t)v << 8));
}

__device__ __forceinline__ uint8_t float_to_fp8e5m2(float f)
{
    uint32_t x = __float_as_uint(f);
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7fffffffu;
    uint32_t r;
    if (a > 0x7f800000u) {
        uint32_t mant = (a >> 21) & 3u;
        r = 0x7cu | mant | (mant == 0 ? 2u : 0u);
    } else if (a == 0x7f800000u) {
        r = 0x7cu;
    } else if (a < 0x38800000u) { /* below 2^-14: step 2^-16 */
        r = __float_as_uint(__fadd_rn(__uint_as_float(a), 128.0f)) - 0x43000000u;
    } else {
        r = (a + 0xc80fffffu + ((a >> 21) & 1u)) >> 21;
        r = r > 0x7bu ? 0x7bu : r;
    }
    return (uint8_t)(r | sign);
}

/* ---- data types ------------------------------------------------------------------------------- */

/* Integer types: S the storage type, U its unsigned twin (arithmetic wraps). The PREMULSUM scalar
 * and the SUMPOSTDIV divisor are int64 bit patterns. */
template <typename S, typename U, bool SIGNED> struct int_ops {
    typedef S storage;
    typedef U scalar_t;
    static __device__ __forceinline__ scalar_t pre_scalar(uint64_t bits)
    {
        return (U)bits;
    }
    /* The multiplier at p (ecclScalarDevice) as eccl_work.scalar holds it (reduce.h's
     * eccl_redop_scalar_bits, on the device). */
    static __device__ __forceinline__ uint64_t scalar_bits(const S *p)
    {
        return (uint64_t)(int64_t)*p;
    }
    static __device__ __forceinline__ S add(S a, S b)
    {
        return (S)(U)((U)a + (U)b);
    }
    static __device__ __forceinline__ S mul(S a, S b)
    {
        return (S)(U)((U)a * (U)b);
    }
    static __device__ __forceinline__ S max(S a, S b)
    {
        return a > b ? a : b;
    }
    static __device__ __forceinline__ S min(S a, S b)
    {
        return a < b ? a : b;
    }
    static __device__ __forceinline__ S scale(S a, scalar_t s)
    {
        return (S)(U)((U)a * s);
    }
    static __device__ __forceinline__ S div(S a, uint64_t d)
    {
        if (SIGNED) { /* C division, truncating; INT_MIN / -1 wraps */
            int64_t sd = (int64_t)d;
            if (sd == -1)
                return (S)(U)((U)0 - (U)a);
            return (S)((int64_t)a / sd);
        }
        return (S)((uint64_t)a / d);
    }
};

/* Conversions between a storage type and float. */
struct cvt_float {
    typedef float storage;
    static __device__ __forceinline__ float load(float v)
    {
        return v;
    }
    static __device__ __forceinline__ float store(float v)
    {
        return v;
    }
};
struct cvt_half {
    typedef uint16_t storage;
    static __device__ __forceinline__ float load(uint16_t v)
    {
        return half_to_float(v);
    }
    static __device__ __forceinline__ uint16_t store(float v)
    {
        return float_to_half(v);
    }
};
struct cvt_bf16 {
    typedef uint16_t storage;
    static __device__ __forceinline__ float load(uint16_t v)
    {
        return bf16_to_float(v);
    }
    static __device__ __forceinline__ uint16_t store(float v)
    {
        return float_to_bf16(v);
    }
};
struct cvt_e4m3 {
    typedef uint8_t storage;
    static __device__ __forceinline__ float load(uint8_t v)
    {
        return fp8e4m3_to_float(v);
    }
    static __device__ __forceinline__ uint8_t store(float v)
    {
        return float_to_fp8e4m3(v);
    }
};
struct cvt_e5m2 {
    typedef uint8_t storage;
    static __device__ __forceinline__ float load(uint8_t v)
    {
        return fp8e5m2_to_float(v);
    }
    static __device__ __forceinline__ uint8_t store(float v)
    {
        return float_to_fp8e5m2(v);
    }
};

__device__ __forceinline__ float scalar_as_float(uint64_t bits)
{
    return (float)__longlong_as_double((long long)bits);
}

/* float, and the narrow types computed in float: C::load widens, C::store rounds back. */
template <typename C> struct float_ops {
    typedef typename C::storage storage;
    typedef storage S;
    typedef float scalar_t;
    static __device__ __forceinline__ scalar_t pre_scalar(uint64_t bits)
    {
        return scalar_as_float(bits);
    }
    static __device__ __forceinline__ uint64_t scalar_bits(const S *p)
    {
        return (uint64_t)__double_as_longlong((double)C::load(*p));
    }
    static __device__ __forceinline__ S add(S a, S b)
    {
        return C::store(__fadd_rn(C::load(a), C::load(b)));
    }
    static __device__ __forceinline__ S mul(S a, S b)
    {
        return C::store(__fmul_rn(C::load(a), C::load(b)));
    }
    /* isnan(x) || x > y ? x : y, as the host. */
    static __device__ __forceinline__ S max(S a, S b)
    {
        float x = C::load(a), y = C::load(b);
        return (x != x || x > y) ? a : b;
    }
    static __device__ __forceinline__ S min(S a, S b)
    {
        float x = C::load(a), y = C::load(b);
        return (x != x || x < y) ? a : b;
    }
    static __device__ __forceinline__ S scale(S a, scalar_t s)
    {
        return C::store(__fmul_rn(C::load(a), s));
    }
    static __device__ __forceinline__ S div(S a, uint64_t d)
    {
        return C::store(__fdiv_rn(C::load(a), scalar_as_float(d)));
    }
};

struct double_ops {
    typedef double storage;
    typedef double scalar_t;
    static __device__ __forceinline__ scalar_t pre_scalar(uint64_t bits)
    {
        return __longlong_as_double((long long)bits);
    }
    static __device__ __forceinline__ uint64_t scalar_bits(const double *p)
    {
        return (uint64_t)__double_as_longlong(*p);
    }
    static __device__ __forceinline__ double add(double a, double b)
    {
        return __dadd_rn(a, b);
    }
    static __device__ __forceinline__ double mul(double a, double b)
    {
        return __dmul_rn(a, b);
    }
    static __device__ __forceinline__ double max(double x, double y)
    {
        return (x != x || x > y) ? x : y;
    }
    static __device__ __forceinline__ double min(double x, double y)
    {
        return (x != x || x < y) ? x : y;
    }
    static __device__ __forceinline__ double scale(double a, double s)
    {
        return __dmul_rn(a, s);
    }
    static __device__ __forceinline__ double div(double a, uint64_t d)
    {
        return __ddiv_rn(a, __longlong_as_double((long long)d));
    }
};

template <int DTYPE> struct dtype_ops;
template <> struct dtype_ops<ecclInt8> : int_ops<int8_t, uint8_t, true> {
};
template <> struct dtype_ops<ecclUint8> : int_ops<uint8_t, uint8_t, false> {
};
template <> struct dtype_ops<ecclInt32> : int_ops<int32_t, uint32_t, true> {
};
template <> struct dtype_ops<ecclUint32> : int_ops<uint32_t, uint32_t, false> {
};
template <> struct dtype_ops<ecclInt64> : int_ops<int64_t, uint64_t, true> {
};
template <> struct dtype_ops<ecclUint64> : int_ops<uint64_t, uint64_t, false> {
};
template <> struct dtype_ops<ecclFloat16> : float_ops<cvt_half> {
};
template <> struct dtype_ops<ecclFloat32> : float_ops<cvt_float> {
};
template <> struct dtype_ops<ecclFloat64> : double_ops {
};
template <> struct dtype_ops<ecclBfloat16> : float_ops<cvt_bf16> {
};
template <> struct dtype_ops<ecclFloat8e4m3> : float_ops<cvt_e4m3> {
};
template <> struct dtype_ops<ecclFloat8e5m2> : float_ops<cvt_e5m2> {
};

/* ---- the reduction ---------------------------------------------------------------------------- */

/* One reduction on one data type. `scalar` is eccl_work.scalar (struct eccl_redop.scalar): the
 * PREMULSUM multiplier or the SUMPOSTDIV divisor, a double for floating types, an int64 for
 * integer types. A divisor of 0 or 1 makes post the identity. */
template <int DTYPE, int KIND> struct redop {
    typedef dtype_ops<DTYPE> ops;
    typedef typename ops::storage T;
    typename ops::scalar_t mul;
    uint64_t div;
    bool has_post;

    __device__ __forceinline__ explicit redop(uint64_t scalar)
        : mul(ops::pre_scalar(scalar)), div(scalar), has_post(false)
    {
        if (KIND == ECCL_RED_SUMPOSTDIV) {
            if (DTYPE == ecclFloat16 || DTYPE == ecclFloat32 || DTYPE == ecclFloat64 ||
                DTYPE == ecclBfloat16 || DTYPE == ecclFloat8e4m3 || DTYPE == ecclFloat8e5m2) {
                double d = __longlong_as_double((long long)scalar);
                has_post = d != 1.0 && d != 0.0;
            } else {
                has_post = scalar != 1 && scalar != 0;
            }
        }
    }
    __device__ __forceinline__ T pre(T x) const
    {
        return KIND == ECCL_RED_PREMULSUM ? ops::scale(x, mul) : x;
    }
    __device__ __forceinline__ T combine(T a, T b) const
    {
        switch (KIND) {
        case ECCL_RED_PROD:
            return ops::mul(a, b);
        case ECCL_RED_MAX:
            return ops::max(a, b);
        case ECCL_RED_MIN:
            return ops::min(a, b);
        default:
            return ops::add(a, b);
        }
    }
    __device__ __forceinline__ T local(T x, T remote) const
    {
        return combine(pre(x), remote);
    }
    __device__ __forceinline__ T post(T x) const
    {
        return KIND == ECCL_RED_SUMPOSTDIV && has_post ? ops::div(x, div) : x;
    }
};

} // namespace eccl_dev

#endif

/*
 * reduce.c - the host executor's element-wise reductions and the data-type conversions of
 * kernels/reduce.h.
 *
 * This is the host executor's hot loop, so it is written for the vectoriser: one switch on the
 * data type and one on the operation, both outside the loops; each loop runs over fixed blocks of
 * BLK elements (a trip count that gcc's -O2 "very cheap" cost model vectorises) with `GCC ivdep`,
 * which holds because the only aliasing allowed is exact (dst == a or dst == b): element i is read
 * before element i is written, and no other element depends on it. On x86-64 the loop functions
 * are also cloned for AVX2 (target_clones, picked once at load time by the ifunc resolver).
 *
 * Half, bfloat16 and the two fp8 types are widened to float, reduced in float and rounded back
 * to nearest even, in one loop per block, with branch-free bit manipulation that vectorises. On
 * x86-64 CPUs with AVX2 and F16C, half and bfloat16 take hand-vectorised loops instead (half
 * through the F16C conversion instructions), several times faster. Since float carries at least
 * 2p+2 bits of the narrow types' p-bit significands, add, multiply and divide in float followed by
 * one rounding give the correctly rounded narrow result. fp8 e4m3 (the "fn" variant: bias 7, no
 * infinities, NaN 0x7f/0xff) saturates finite overflow and infinities to +-448, as CUDA's
 * __NV_SATFINITE does. fp8 e5m2 saturates finite overflow to +-57344 but keeps infinities (the
 * type has them; CUDA's satfinite would clamp them too): so inf + x stays inf and every bit
 * pattern round-trips through float. NaN stays NaN; the scalar conversions keep the NaN payload
 * bits the narrower type can hold (setting the quiet bit if none is left), so every narrow bit
 * pattern, NaNs included, round-trips exactly through float (the vector paths may quiet NaNs).
 *
 * Semantics shared with the CUDA functors of kernels/reduce_dev.cuh, which compute bit for bit
 * the same results (NaN payloads aside):
 * - Integer arithmetic wraps (two's complement); it is done in the unsigned type.
 * - MAX and MIN propagate NaN: max(x, y) = isnan(x) || x > y ? x : y, so a NaN in either
 *   operand gives a NaN (x's if both are). fmaxf/fminf would drop it, and a reduction's result
 *   would then depend on where in the order a NaN met a number; propagating it reports the bad
 *   value wherever it was. Signed zeros compare equal: the result is then y.
 * - PREMULSUM multiplies by the scalar (a double for floating types, applied as a float for
 *   float, half, bf16 and fp8; an int64 for integer types, applied in the type's width, wrapping)
 *   and rounds the product to the type before it is added: eccl_reduce_local equals
 *   eccl_reduce_pre followed by eccl_reduce_combine, bit for bit. No fused multiply-add (C11 mode
 *   turns contraction off; the AVX2 clone has no FMA).
 * - SUMPOSTDIV sums, then divides at post by the divisor, encoded like the PREMULSUM scalar (an
 *   int64 for integer types: C division, truncating toward zero; a double for floating types:
 *   the division is done in float for all but double). A divisor of 0 is taken as 1.
 */
#include "kernels/reduce.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "eccl.h"
#include "common/check.h"

/* Elements per block: a multiple of every vector width. */
#define BLK 64

#if defined(__clang__)
#define IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define IVDEP _Pragma("GCC ivdep")
#else
#define IVDEP
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/* ifunc resolvers run before the sanitizers' runtimes start: no clones under them. */
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* ---- scalar conversions ---------------------------------------------------------------------- */

static ALWAYS_INLINE uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static ALWAYS_INLINE float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* c ? x : y without a branch. Conversions select with it, not with ?:, so that gcc cannot sink
 * a floating-point operation into one arm of a condition: under -ftrapping-math it would then not
 * if-convert the arm, and the loop would not vectorise. */
static ALWAYS_INLINE uint32_t sel(uint32_t c, uint32_t x, uint32_t y)
{
    return y ^ ((x ^ y) & (0u - c));
}

/* Every branch is computed and one selected, so that blocks of these vectorise. */
static ALWAYS_INLINE float half_to_float_inl(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t u = ((uint32_t)h & 0x7fffu) << 13;
    uint32_t exp = u & 0x0f800000u;
    uint32_t norm = u + ((127u - 15u) << 23);
    uint32_t infnan = u | 0x7f800000u;
    /* Subnormal m * 2^-24 = (2^-14 * (1 + m/1024)) - 2^-14, exact in float. */
    uint32_t sub = f2u(u2f(u + (113u << 23)) - 0x1p-14f);
    uint32_t r = sel(exp == 0x0f800000u, infnan, sel(exp == 0, sub, norm));
    return u2f(r | sign);
}

static ALWAYS_INLINE uint16_t float_to_half_inl(float f)
{
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    uint32_t mant = (a >> 13) & 0x3ffu;
    uint32_t nan = 0x7c00u | mant | (mant == 0 ? 0x200u : 0u);
    uint32_t big = a > 0x7f800000u ? nan : 0x7c00u;
    /* Below 2^-14: adding 0.5 leaves the float an ulp of 2^-24, the half subnormal step, and the
     * hardware rounds to nearest even. */
    uint32_t sub = f2u(u2f(a) + 0.5f) - 0x3f000000u;
    /* Rebias (-112 << 23), add half an ulp minus one plus the odd bit: round to nearest even;
     * a carry out of the mantissa rounds up into the exponent (65520 and up become inf). */
    uint32_t norm = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
    uint32_t r = sel(a >= 0x47800000u, big, sel(a < 0x38800000u, sub, norm));
    return (uint16_t)(r | sign);
}

static ALWAYS_INLINE float bf16_to_float_inl(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

static ALWAYS_INLINE uint16_t float_to_bf16_inl(float f)
{
    uint32_t x = f2u(f);
    uint32_t hi = x >> 16;
    uint32_t nan = (hi & 0x7fu) == 0 ? hi | 0x40u : hi;
    uint32_t rnd = (x + 0x7fffu + (hi & 1u)) >> 16;
    return (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? nan : rnd);
}

static ALWAYS_INLINE float fp8e4m3_to_float_inl(uint8_t v)
{
    uint32_t sign = ((uint32_t)v & 0x80u) << 24;
    uint32_t em = (uint32_t)v & 0x7fu;
    uint32_t u = em << 20;
    uint32_t norm = u + ((127u - 7u) << 23);
    uint32_t sub = f2u(u2f(u + (121u << 23)) - 0x1p-6f); /* m * 2^-9 */
    uint32_t r = sel(em == 0x7fu, 0x7fc00000u, sel((em >> 3) == 0, sub, norm));
    return u2f(r | sign);
}

static ALWAYS_INLINE uint8_t float_to_fp8e4m3_inl(float f)
{
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7fffffffu;
    uint32_t sub = f2u(u2f(a) + 16384.0f) - 0x46800000u; /* ulp 2^-9 below 2^-6 */
    /* Rebias (-120 << 23) and round; infinity lands here too and saturates with the rest. */
    uint32_t norm = (a + 0xc407ffffu + ((a >> 20) & 1u)) >> 20;
    norm = norm > 0x7eu ? 0x7eu : norm;
    uint32_t r = sel(a > 0x7f800000u, 0x7fu, sel(a < 0x3c800000u, sub, norm));
    return (uint8_t)(r | sign);
}

static ALWAYS_INLINE float fp8e5m2_to_float_inl(uint8_t v)
{
    return half_to_float_inl((uint16_t)((uint32_t)v << 8));
}

static ALWAYS_INLINE uint8_t float_to_fp8e5m2_inl(float f)
{
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7fffffffu;
    uint32_t mant = (a >> 21) & 3u;
    uint32_t nan = 0x7cu | mant | (mant == 0 ? 2u : 0u);
    uint32_t sub = f2u(u2f(a) + 128.0f) - 0x43000000u; /* ulp 2^-16 below 2^-14 */
    uint32_t norm = (a + 0xc80fffffu + ((a >> 21) & 1u)) >> 21;
    norm = norm > 0x7bu ? 0x7bu : norm;
    uint32_t r =
        sel(a > 0x7f800000u, nan, sel(a == 0x7f800000u, 0x7cu, sel(a < 0x38800000u, sub, norm)));
    return (uint8_t)(r | sign);
}

float eccl_half_to_float(uint16_t h)
{
    return half_to_float_inl(h);
}

uint16_t eccl_float_to_half(float f)
{
    return float_to_half_inl(f);
}

float eccl_bf16_to_float(uint16_t h)
{
    return bf16_to_float_inl(h);
}

uint16_t eccl_float_to_bf16(float f)
{
    return float_to_bf16_inl(f);
}

float eccl_fp8e4m3_to_float(uint8_t v)
{
    return fp8e4m3_to_float_inl(v);
}

uint8_t eccl_float_to_fp8e4m3(float f)
{
    return float_to_fp8e4m3_inl(f);
}

float eccl_fp8e5m2_to_float(uint8_t v)
{
    return fp8e5m2_to_float_inl(v);
}

uint8_t eccl_float_to_fp8e5m2(float f)
{
    return float_to_fp8e5m2_inl(f);
}

/* ---- type and operation names ---------------------------------------------------------------- */

size_t eccl_dtype_size(int dtype)
{
    switch (dtype) {
    case ecclInt8:
    case ecclUint8:
    case ecclFloat8e4m3:
    case ecclFloat8e5m2:
        return 1;
    case ecclFloat16:
    case ecclBfloat16:
        return 2;
    case ecclInt32:
    case ecclUint32:
    case ecclFloat32:
        return 4;
    case ecclInt64:
    case ecclUint64:
    case ecclFloat64:
        return 8;
    default:
        return 0;
    }
}

const char *eccl_dtype_name(int dtype)
{
    static const char *const names[ecclNumTypes] = {
        "int8", "uint8", "int32",  "uint32",   "int64",   "uint64",
        "half", "float", "double", "bfloat16", "fp8e4m3", "fp8e5m2",
    };
    if (dtype < 0 || dtype >= ecclNumTypes)
        return "unknown";
    return names[dtype];
}

const char *eccl_redop_name(int kind)
{
    static const char *const names[ECCL_RED_COUNT] = {
        "sum", "prod", "max", "min", "premulsum", "sumpostdiv",
    };
    if (kind < 0 || kind >= ECCL_RED_COUNT)
        return "unknown";
    return names[kind];
}

int eccl_dtype_is_float(int dtype)
{
    switch (dtype) {
    case ecclFloat16:
    case ecclFloat32:
    case ecclFloat64:
    case ecclBfloat16:
    case ecclFloat8e4m3:
    case ecclFloat8e5m2:
        return 1;
    default:
        return 0;
    }
}

static double scalar_double(const struct eccl_redop *op)
{
    double d;
    memcpy(&d, &op->scalar, sizeof(d));
    return d;
}

/* ---- loop shapes ------------------------------------------------------------------------------ */

/* dst[i] = EXPR(x = a[i], y = b[i]) over n elements: full blocks that vectorise, then a tail. */
#define LOOP2(T, EXPR)                                \
    do {                                              \
        size_t i_ = 0;                                \
        for (; i_ + BLK <= n; i_ += BLK) {            \
            T *d_ = dst + i_;                         \
            const T *a_ = a + i_;                     \
            const T *b_ = b + i_;                     \
            IVDEP for (size_t j_ = 0; j_ < BLK; j_++) \
            {                                         \
                const T x = a_[j_], y = b_[j_];       \
                d_[j_] = (T)(EXPR);                   \
            }                                         \
        }                                             \
        for (; i_ < n; i_++) {                        \
            const T x = a[i_], y = b[i_];             \
            dst[i_] = (T)(EXPR);                      \
        }                                             \
    } while (0)

/* dst[i] = EXPR(x = src[i]). */
#define LOOP1(T, EXPR)                                \
    do {                                              \
        size_t i_ = 0;                                \
        for (; i_ + BLK <= n; i_ += BLK) {            \
            T *d_ = dst + i_;                         \
            const T *s_ = src + i_;                   \
            IVDEP for (size_t j_ = 0; j_ < BLK; j_++) \
            {                                         \
                const T x = s_[j_];                   \
                d_[j_] = (T)(EXPR);                   \
            }                                         \
        }                                             \
        for (; i_ < n; i_++) {                        \
            const T x = src[i_];                      \
            dst[i_] = (T)(EXPR);                      \
        }                                             \
    } while (0)

#define NO_NAN(x) 0
#define IS_NAN(x) ((x) != (x))

/* NaN-propagating max and min (see the file comment). */
#define MAXOP(NANP, x, y) ((NANP(x) || (x) > (y)) ? (x) : (y))
#define MINOP(NANP, x, y) ((NANP(x) || (x) < (y)) ? (x) : (y))

/* The loops of a type computed in its own width: U is the type the arithmetic is done in (the
 * unsigned type for integers, so that overflow wraps). */
#define DEFINE_NATIVE(SUF, T, U, NANP)                                                            \
    static HOT void combine_##SUF(void *dstv, const void *av, const void *bv, size_t n, int kind) \
    {                                                                                             \
        T *dst = dstv;                                                                            \
        const T *a = av;                                                                          \
        const T *b = bv;                                                                          \
        switch (kind) {                                                                           \
        case ECCL_RED_PROD:                                                                       \
            LOOP2(T, (U)x *(U)y);                                                                 \
            break;                                                                                \
        case ECCL_RED_MAX:                                                                        \
            LOOP2(T, MAXOP(NANP, x, y));                                                          \
            break;                                                                                \
        case ECCL_RED_MIN:                                                                        \
            LOOP2(T, MINOP(NANP, x, y));                                                          \
            break;                                                                                \
        default:                                                                                  \
            LOOP2(T, (U)x + (U)y);                                                                \
            break;                                                                                \
        }                                                                                         \
    }                                                                                             \
    static HOT void premulsum_##SUF(void *dstv, const void *av, const void *bv, size_t n, U s)    \
    {                                                                                             \
        T *dst = dstv;                                                                            \
        const T *a = av;                                                                          \
        const T *b = bv;                                                                          \
        LOOP2(T, (U)(T)((U)x * s) + (U)y);                                                        \
    }                                                                                             \
    static HOT void premul_##SUF(void *dstv, const void *srcv, size_t n, U s)                     \
    {                                                                                             \
        T *dst = dstv;                                                                            \
        const T *src = srcv;                                                                      \
        LOOP1(T, (U)x *s);                                                                        \
    }

DEFINE_NATIVE(i8, int8_t, uint8_t, NO_NAN)
DEFINE_NATIVE(u8, uint8_t, uint8_t, NO_NAN)
DEFINE_NATIVE(i32, int32_t, uint32_t, NO_NAN)
DEFINE_NATIVE(u32, uint32_t, uint32_t, NO_NAN)
DEFINE_NATIVE(i64, int64_t, uint64_t, NO_NAN)
DEFINE_NATIVE(u64, uint64_t, uint64_t, NO_NAN)
DEFINE_NATIVE(f32, float, float, IS_NAN)
DEFINE_NATIVE(f64, double, double, IS_NAN)

/* SUMPOSTDIV's division. Integer division does not vectorise on x86; post runs once per element
 * of the result, not once per step of the reduction. */
#define DEFINE_POSTDIV_SIGNED(SUF, T, U)                                         \
    static void postdiv_##SUF(void *dstv, const void *srcv, size_t n, int64_t d) \
    {                                                                            \
        T *dst = dstv;                                                           \
        const T *src = srcv;                                                     \
        if (d == -1) /* INT64_MIN / -1 traps: negate, wrapping */                \
            LOOP1(T, (U)0 - (U)x);                                               \
        else                                                                     \
            LOOP1(T, (int64_t)x / d);                                            \
    }
#define DEFINE_POSTDIV_UNSIGNED(SUF, T)                                           \
    static void postdiv_##SUF(void *dstv, const void *srcv, size_t n, uint64_t d) \
    {                                                                             \
        T *dst = dstv;                                                            \
        const T *src = srcv;                                                      \
        LOOP1(T, (uint64_t)x / d);                                                \
    }

DEFINE_POSTDIV_SIGNED(i8, int8_t, uint8_t)
DEFINE_POSTDIV_SIGNED(i32, int32_t, uint32_t)
DEFINE_POSTDIV_SIGNED(i64, int64_t, uint64_t)
DEFINE_POSTDIV_UNSIGNED(u8, uint8_t)
DEFINE_POSTDIV_UNSIGNED(u32, uint32_t)
DEFINE_POSTDIV_UNSIGNED(u64, uint64_t)

static HOT void postdiv_f32(void *dstv, const void *srcv, size_t n, float d)
{
    float *dst = dstv;
    const float *src = srcv;
    LOOP1(float, x / d);
}

static HOT void postdiv_f64(void *dstv, const void *srcv, size_t n, double d)
{
    double *dst = dstv;
    const double *src = srcv;
    LOOP1(double, x / d);
}

/* ---- narrow floating types: widen to float, reduce, round back -------------------------------- */

/* One block of CNT elements at element i_, widened, reduced and rounded back in one loop. With
 * CNT == BLK the trip count is constant and the loop vectorises (the conversions are branch-free
 * integer code). */
#define NARROW_BLOCK2(S, TOF, FROMF, CNT, EXPR)           \
    do {                                                  \
        S *d_ = dst + i_;                                 \
        const S *a_ = a + i_;                             \
        const S *b_ = b + i_;                             \
        IVDEP for (size_t j_ = 0; j_ < (CNT); j_++)       \
        {                                                 \
            const float x = TOF(a_[j_]), y = TOF(b_[j_]); \
            d_[j_] = FROMF(EXPR);                         \
        }                                                 \
    } while (0)

#define NARROW_LOOP2(S, TOF, FROMF, EXPR)               \
    do {                                                \
        size_t i_ = 0;                                  \
        for (; i_ + BLK <= n; i_ += BLK)                \
            NARROW_BLOCK2(S, TOF, FROMF, BLK, EXPR);    \
        if (i_ < n)                                     \
            NARROW_BLOCK2(S, TOF, FROMF, n - i_, EXPR); \
    } while (0)

#define NARROW_BLOCK1(S, TOF, FROMF, CNT, EXPR)     \
    do {                                            \
        S *d_ = dst + i_;                           \
        const S *s_ = src + i_;                     \
        IVDEP for (size_t j_ = 0; j_ < (CNT); j_++) \
        {                                           \
            const float x = TOF(s_[j_]);            \
            d_[j_] = FROMF(EXPR);                   \
        }                                           \
    } while (0)

#define NARROW_LOOP1(S, TOF, FROMF, EXPR)               \
    do {                                                \
        size_t i_ = 0;                                  \
        for (; i_ + BLK <= n; i_ += BLK)                \
            NARROW_BLOCK1(S, TOF, FROMF, BLK, EXPR);    \
        if (i_ < n)                                     \
            NARROW_BLOCK1(S, TOF, FROMF, n - i_, EXPR); \
    } while (0)

/* PREMULSUM rounds the product to the type before adding: TOF(FROMF(x * s)) + y. */
#define DEFINE_NARROW(SUF, S, TOF, FROMF)                                                          \
    static HOT void combine_##SUF(void *dstv, const void *av, const void *bv, size_t n, int kind)  \
    {                                                                                              \
        S *dst = dstv;                                                                             \
        const S *a = av;                                                                           \
        const S *b = bv;                                                                           \
        switch (kind) {                                                                            \
        case ECCL_RED_PROD:                                                                        \
            NARROW_LOOP2(S, TOF, FROMF, x *y);                                                     \
            break;                                                                                 \
        case ECCL_RED_MAX:                                                                         \
            NARROW_LOOP2(S, TOF, FROMF, MAXOP(IS_NAN, x, y));                                      \
            break;                                                                                 \
        case ECCL_RED_MIN:                                                                         \
            NARROW_LOOP2(S, TOF, FROMF, MINOP(IS_NAN, x, y));                                      \
            break;                                                                                 \
        default:                                                                                   \
            NARROW_LOOP2(S, TOF, FROMF, x + y);                                                    \
            break;                                                                                 \
        }                                                                                          \
    }                                                                                              \
    static HOT void premulsum_##SUF(void *dstv, const void *av, const void *bv, size_t n, float s) \
    {                                                                                              \
        S *dst = dstv;                                                                             \
        const S *a = av;                                                                           \
        const S *b = bv;                                                                           \
        NARROW_LOOP2(S, TOF, FROMF, TOF(FROMF(x *s)) + y);                                         \
    }                                                                                              \
    static HOT void premul_##SUF(void *dstv, const void *srcv, size_t n, float s)                  \
    {                                                                                              \
        S *dst = dstv;                                                                             \
        const S *src = srcv;                                                                       \
        NARROW_LOOP1(S, TOF, FROMF, x *s);                                                         \
    }                                                                                              \
    static HOT void postdiv_##SUF(void *dstv, const void *srcv, size_t n, float d)                 \
    {                                                                                              \
        S *dst = dstv;                                                                             \
        const S *src = srcv;                                                                       \
        NARROW_LOOP1(S, TOF, FROMF, x / d);                                                        \
    }

DEFINE_NARROW(f16, uint16_t, half_to_float_inl, float_to_half_inl)
DEFINE_NARROW(bf16, uint16_t, bf16_to_float_inl, float_to_bf16_inl)
DEFINE_NARROW(e4m3, uint8_t, fp8e4m3_to_float_inl, float_to_fp8e4m3_inl)
DEFINE_NARROW(e5m2, uint8_t, fp8e5m2_to_float_inl, float_to_fp8e5m2_inl)

/* Half and bfloat16 on x86-64 CPUs with AVX2 (and F16C for half), 16 elements at a time: half
 * through the hardware conversions (round to nearest even, exact for subnormals, unaffected by the
 * DAZ and FTZ modes), bfloat16 through the same integer rounding as the software path. Results
 * equal the software path's except for NaN payloads (these paths set the quiet bit of every NaN).
 * The tail of fewer than 16 elements takes the software path. */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86_PATH 1
#define X86           __attribute__((target("avx2,f16c")))

static X86 ALWAYS_INLINE void ld16_f16(const uint16_t *h, __m256 *lo, __m256 *hi)
{
    *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8)));
}

static X86 ALWAYS_INLINE __m128i cvt8_f16(__m256 v)
{
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static X86 ALWAYS_INLINE void st16_f16(uint16_t *h, __m256 lo, __m256 hi)
{
    _mm_storeu_si128((__m128i *)h, cvt8_f16(lo));
    _mm_storeu_si128((__m128i *)(h + 8), cvt8_f16(hi));
}

/* v rounded to half and widened back. */
static X86 ALWAYS_INLINE __m256 round8_f16(__m256 v)
{
    return _mm256_cvtph_ps(cvt8_f16(v));
}

/* Interleaving with zeros widens bfloat16 to float; lo and hi hold elements 0-3 and 8-11, and
 * 4-7 and 12-15 (the in-lane order of unpack), which st16_bf16's in-lane pack undoes. */
static X86 ALWAYS_INLINE void ld16_bf16(const uint16_t *h, __m256 *lo, __m256 *hi)
{
    const __m256i z = _mm256_setzero_si256();
    __m256i v = _mm256_loadu_si256((const __m256i *)h);
    *lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v));
    *hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v));
}

/* float_to_bf16_inl on 8 lanes, the result in the low 16 bits of each 32-bit lane. */
static X86 ALWAYS_INLINE __m256i cvt8_bf16(__m256 v)
{
    __m256i x = _mm256_castps_si256(v);
    __m256i hi = _mm256_srli_epi32(x, 16);
    __m256i odd = _mm256_and_si256(hi, _mm256_set1_epi32(1));
    __m256i rnd = _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
    rnd = _mm256_srli_epi32(rnd, 16);
    __m256i nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    __m256i isnan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return _mm256_blendv_epi8(rnd, nan, isnan);
}

static X86 ALWAYS_INLINE void st16_bf16(uint16_t *h, __m256 lo, __m256 hi)
{
    _mm256_storeu_si256((__m256i *)h, _mm256_packus_epi32(cvt8_bf16(lo), cvt8_bf16(hi)));
}

static X86 ALWAYS_INLINE __m256 round8_bf16(__m256 v)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(cvt8_bf16(v), 16));
}

/* MAXOP and MINOP on 8 lanes: isnan(x) || x > y ? x : y. */
static X86 ALWAYS_INLINE __m256 max8(__m256 x, __m256 y)
{
    __m256 m = _mm256_or_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q), _mm256_cmp_ps(x, y, _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, m);
}

static X86 ALWAYS_INLINE __m256 min8(__m256 x, __m256 y)
{
    __m256 m = _mm256_or_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q), _mm256_cmp_ps(x, y, _CMP_LT_OQ));
    return _mm256_blendv_ps(y, x, m);
}

/* VEXPR on vectors vx, vy; EXPR, the same on scalars x, y, for the tail. */
#define X86_LOOP2(SUF, TOF, FROMF, VEXPR, EXPR)                \
    do {                                                       \
        size_t i_ = 0;                                         \
        for (; i_ + 16 <= n; i_ += 16) {                       \
            __m256 a0_, a1_, b0_, b1_, r0_, r1_;               \
            ld16_##SUF(a + i_, &a0_, &a1_);                    \
            ld16_##SUF(b + i_, &b0_, &b1_);                    \
            {                                                  \
                const __m256 vx = a0_, vy = b0_;               \
                r0_ = (VEXPR);                                 \
            }                                                  \
            {                                                  \
                const __m256 vx = a1_, vy = b1_;               \
                r1_ = (VEXPR);                                 \
            }                                                  \
            st16_##SUF(dst + i_, r0_, r1_);                    \
        }                                                      \
        if (i_ < n)                                            \
            NARROW_BLOCK2(uint16_t, TOF, FROMF, n - i_, EXPR); \
    } while (0)

#define X86_LOOP1(SUF, TOF, FROMF, VEXPR, EXPR)                \
    do {                                                       \
        size_t i_ = 0;                                         \
        for (; i_ + 16 <= n; i_ += 16) {                       \
            __m256 a0_, a1_, r0_, r1_;                         \
            ld16_##SUF(src + i_, &a0_, &a1_);                  \
            {                                                  \
                const __m256 vx = a0_;                         \
                r0_ = (VEXPR);                                 \
            }                                                  \
            {                                                  \
                const __m256 vx = a1_;                         \
                r1_ = (VEXPR);                                 \
            }                                                  \
            st16_##SUF(dst + i_, r0_, r1_);                    \
        }                                                      \
        if (i_ < n)                                            \
            NARROW_BLOCK1(uint16_t, TOF, FROMF, n - i_, EXPR); \
    } while (0)

#define DEFINE_X86(SUF, TOF, FROMF)                                                             \
    static X86 void combine_##SUF##_x86(void *dstv, const void *av, const void *bv, size_t n,   \
                                        int kind)                                               \
    {                                                                                           \
        uint16_t *dst = dstv;                                                                   \
        const uint16_t *a = av;                                                                 \
        const uint16_t *b = bv;                                                                 \
        switch (kind) {                                                                         \
        case ECCL_RED_PROD:                                                                     \
            X86_LOOP2(SUF, TOF, FROMF, _mm256_mul_ps(vx, vy), x *y);                            \
            break;                                                                              \
        case ECCL_RED_MAX:                                                                      \
            X86_LOOP2(SUF, TOF, FROMF, max8(vx, vy), MAXOP(IS_NAN, x, y));                      \
            break;                                                                              \
        case ECCL_RED_MIN:                                                                      \
            X86_LOOP2(SUF, TOF, FROMF, min8(vx, vy), MINOP(IS_NAN, x, y));                      \
            break;                                                                              \
        default:                                                                                \
            X86_LOOP2(SUF, TOF, FROMF, _mm256_add_ps(vx, vy), x + y);                           \
            break;                                                                              \
        }                                                                                       \
    }                                                                                           \
    static X86 void premulsum_##SUF##_x86(void *dstv, const void *av, const void *bv, size_t n, \
                                          float s)                                              \
    {                                                                                           \
        uint16_t *dst = dstv;                                                                   \
        const uint16_t *a = av;                                                                 \
        const uint16_t *b = bv;                                                                 \
        const __m256 vs = _mm256_set1_ps(s);                                                    \
        X86_LOOP2(SUF, TOF, FROMF, _mm256_add_ps(round8_##SUF(_mm256_mul_ps(vx, vs)), vy),      \
                  TOF(FROMF(x *s)) + y);                                                        \
    }                                                                                           \
    static X86 void premul_##SUF##_x86(void *dstv, const void *srcv, size_t n, float s)         \
    {                                                                                           \
        uint16_t *dst = dstv;                                                                   \
        const uint16_t *src = srcv;                                                             \
        const __m256 vs = _mm256_set1_ps(s);                                                    \
        X86_LOOP1(SUF, TOF, FROMF, _mm256_mul_ps(vx, vs), x *s);                                \
    }                                                                                           \
    static X86 void postdiv_##SUF##_x86(void *dstv, const void *srcv, size_t n, float d)        \
    {                                                                                           \
        uint16_t *dst = dstv;                                                                   \
        const uint16_t *src = srcv;                                                             \
        const __m256 vd = _mm256_set1_ps(d);                                                    \
        X86_LOOP1(SUF, TOF, FROMF, _mm256_div_ps(vx, vd), x / d);                               \
    }

DEFINE_X86(f16, half_to_float_inl, float_to_half_inl)
DEFINE_X86(bf16, bf16_to_float_inl, float_to_bf16_inl)

/* Whether the CPU runs the x86 path: 1 or 0 once known, -1 before. Racing first callers store
 * the same value. */
static _Atomic int x86_path = -1;

static int cpu_has_x86_path(void)
{
    int have = atomic_load_explicit(&x86_path, memory_order_relaxed);
    if (have < 0) {
        __builtin_cpu_init(); /* idempotent; makes the check safe from constructors */
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
        atomic_store_explicit(&x86_path, have, memory_order_relaxed);
    }
    return have;
}
#endif

/* The half and bfloat16 loops: the x86 vector path where the CPU has it. */
#ifdef HAVE_X86_PATH
#define X86_CALL(fn, SUF, ...)             \
    do {                                   \
        if (cpu_has_x86_path())            \
            fn##_##SUF##_x86(__VA_ARGS__); \
        else                               \
            fn##_##SUF(__VA_ARGS__);       \
    } while (0)
#else
#define X86_CALL(fn, SUF, ...) fn##_##SUF(__VA_ARGS__)
#endif

/* ---- the API ---------------------------------------------------------------------------------- */

/* Expand CASE(SUF, ecclType) once per data type (half and bfloat16 are dispatched apart, through X86_CALL). */
#define FOR_EACH_DTYPE(CASE)   \
    CASE(i8, ecclInt8)         \
    CASE(u8, ecclUint8)        \
    CASE(i32, ecclInt32)       \
    CASE(u32, ecclUint32)      \
    CASE(i64, ecclInt64)       \
    CASE(u64, ecclUint64)      \
    CASE(f32, ecclFloat32)     \
    CASE(f64, ecclFloat64)     \
    CASE(e4m3, ecclFloat8e4m3) \
    CASE(e5m2, ecclFloat8e5m2)

#define FOR_EACH_INT(CASE) \
    CASE(i8, ecclInt8)     \
    CASE(u8, ecclUint8)    \
    CASE(i32, ecclInt32)   \
    CASE(u32, ecclUint32)  \
    CASE(i64, ecclInt64)   \
    CASE(u64, ecclUint64)

#define FOR_EACH_FLOAT_SCALAR(CASE) \
    CASE(f32, ecclFloat32)          \
    CASE(e4m3, ecclFloat8e4m3)      \
    CASE(e5m2, ecclFloat8e5m2)

static void copy_elems(void *dst, const void *src, size_t n, int dtype)
{
    if (dst != src && n > 0)
        memcpy(dst, src, n * eccl_dtype_size(dtype));
}

void eccl_reduce_combine(void *dst, const void *a, const void *b, size_t n,
                         const struct eccl_redop *op)
{
    ECCL_ASSERT(op->kind < ECCL_RED_COUNT);
    switch (op->dtype) {
#define CASE(SUF, DT)                          \
    case DT:                                   \
        combine_##SUF(dst, a, b, n, op->kind); \
        break;
        FOR_EACH_DTYPE(CASE)
#undef CASE
    case ecclFloat16:
        X86_CALL(combine, f16, dst, a, b, n, op->kind);
        break;
    case ecclBfloat16:
        X86_CALL(combine, bf16, dst, a, b, n, op->kind);
        break;
    default:
        ECCL_ASSERT(0);
        break;
    }
}

void eccl_reduce_local(void *dst, const void *local, const void *remote, size_t n,
                       const struct eccl_redop *op)
{
    if (op->kind != ECCL_RED_PREMULSUM) {
        eccl_reduce_combine(dst, local, remote, n, op);
        return;
    }
    switch (op->dtype) {
#define CASE(SUF, DT)                                                     \
    case DT:                                                              \
        premulsum_##SUF(dst, local, remote, n, (float)scalar_double(op)); \
        break;
        FOR_EACH_FLOAT_SCALAR(CASE)
#undef CASE
#define CASE(SUF, DT)                                       \
    case DT:                                                \
        premulsum_##SUF(dst, local, remote, n, op->scalar); \
        break;
        FOR_EACH_INT(CASE)
#undef CASE
    case ecclFloat16:
        X86_CALL(premulsum, f16, dst, local, remote, n, (float)scalar_double(op));
        break;
    case ecclBfloat16:
        X86_CALL(premulsum, bf16, dst, local, remote, n, (float)scalar_double(op));
        break;
    case ecclFloat64:
        premulsum_f64(dst, local, remote, n, scalar_double(op));
        break;
    default:
        ECCL_ASSERT(0);
        break;
    }
}

void eccl_reduce_pre(void *dst, const void *src, size_t n, const struct eccl_redop *op)
{
    if (op->kind != ECCL_RED_PREMULSUM) {
        copy_elems(dst, src, n, op->dtype);
        return;
    }
    switch (op->dtype) {
#define CASE(SUF, DT)                                        \
    case DT:                                                 \
        premul_##SUF(dst, src, n, (float)scalar_double(op)); \
        break;
        FOR_EACH_FLOAT_SCALAR(CASE)
#undef CASE
#define CASE(SUF, DT)                          \
    case DT:                                   \
        premul_##SUF(dst, src, n, op->scalar); \
        break;
        FOR_EACH_INT(CASE)
#undef CASE
    case ecclFloat16:
        X86_CALL(premul, f16, dst, src, n, (float)scalar_double(op));
        break;
    case ecclBfloat16:
        X86_CALL(premul, bf16, dst, src, n, (float)scalar_double(op));
        break;
    case ecclFloat64:
        premul_f64(dst, src, n, scalar_double(op));
        break;
    default:
        ECCL_ASSERT(0);
        break;
    }
}

int eccl_redop_has_post(const struct eccl_redop *op)
{
    if (op->kind != ECCL_RED_SUMPOSTDIV)
        return 0;
    if (eccl_dtype_is_float(op->dtype)) {
        double d = scalar_double(op);
        return d != 1.0 && d != 0.0;
    }
    return op->scalar != 1 && op->scalar != 0;
}

void eccl_reduce_post(void *dst, const void *src, size_t n, const struct eccl_redop *op)
{
    if (!eccl_redop_has_post(op)) {
        copy_elems(dst, src, n, op->dtype);
        return;
    }
    switch (op->dtype) {
    case ecclInt8:
        postdiv_i8(dst, src, n, (int64_t)op->scalar);
        break;
    case ecclInt32:
        postdiv_i32(dst, src, n, (int64_t)op->scalar);
        break;
    case ecclInt64:
        postdiv_i64(dst, src, n, (int64_t)op->scalar);
        break;
    case ecclUint8:
        postdiv_u8(dst, src, n, op->scalar);
        break;
    case ecclUint32:
        postdiv_u32(dst, src, n, op->scalar);
        break;
    case ecclUint64:
        postdiv_u64(dst, src, n, op->scalar);
        break;
#define CASE(SUF, DT)                                         \
    case DT:                                                  \
        postdiv_##SUF(dst, src, n, (float)scalar_double(op)); \
        break;
        FOR_EACH_FLOAT_SCALAR(CASE)
#undef CASE
    case ecclFloat16:
        X86_CALL(postdiv, f16, dst, src, n, (float)scalar_double(op));
        break;
    case ecclBfloat16:
        X86_CALL(postdiv, bf16, dst, src, n, (float)scalar_double(op));
        break;
    case ecclFloat64:
        postdiv_f64(dst, src, n, scalar_double(op));
        break;
    default:
        ECCL_ASSERT(0);
        break;
    }
}

/* ---- element access as double ----------------------------------------------------------------- */

/* v rounded to float toward zero, with the lowest bit set when inexact ("round to odd"). Rounding
 * that to a format of at most 22 significand bits gives the same result as rounding v directly:
 * no double rounding. */
static float double_to_float_odd(double v)
{
    float f = (float)v;
    if (isnan(v) || (double)f == v)
        return f;
    if (fabs((double)f) > fabs(v))
        f = nextafterf(f, 0.0f);
    return u2f(f2u(f) | 1u);
}

uint64_t eccl_redop_scalar_bits(const void *p, int dtype)
{
    if (dtype == ecclInt64 || dtype == ecclUint64 || dtype == ecclFloat64) {
        uint64_t bits;
        memcpy(&bits, p, sizeof(bits));
        return bits;
    }
    double v = eccl_dtype_load(p, 0, dtype);
    if (eccl_dtype_is_float(dtype)) {
        uint64_t bits;
        memcpy(&bits, &v, sizeof(bits));
        return bits;
    }
    return (uint64_t)(int64_t)v;
}

double eccl_dtype_load(const void *buf, size_t i, int dtype)
{
    switch (dtype) {
    case ecclInt8:
        return ((const int8_t *)buf)[i];
    case ecclUint8:
        return ((const uint8_t *)buf)[i];
    case ecclInt32:
        return ((const int32_t *)buf)[i];
    case ecclUint32:
        return ((const uint32_t *)buf)[i];
    case ecclInt64:
        return (double)((const int64_t *)buf)[i];
    case ecclUint64:
        return (double)((const uint64_t *)buf)[i];
    case ecclFloat16:
        return half_to_float_inl(((const uint16_t *)buf)[i]);
    case ecclFloat32:
        return ((const float *)buf)[i];
    case ecclFloat64:
        return ((const double *)buf)[i];
    case ecclBfloat16:
        return bf16_to_float_inl(((const uint16_t *)buf)[i]);
    case ecclFloat8e4m3:
        return fp8e4m3_to_float_inl(((const uint8_t *)buf)[i]);
    case ecclFloat8e5m2:
        return fp8e5m2_to_float_inl(((const uint8_t *)buf)[i]);
    default:
        ECCL_ASSERT(0);
        return 0.0;
    }
}

/* v rounded to the nearest integer (ties to even), saturated to [lo, hi]; NaN gives 0. lo and hi
 * are powers of two (or 0) as doubles: hi is one past the largest value. */
static double round_int(double v, double lo, double hi_excl, int *at_hi)
{
    *at_hi = 0;
    if (isnan(v))
        return 0.0;
    v = nearbyint(v);
    if (v < lo)
        return lo;
    if (v >= hi_excl) {
        *at_hi = 1;
        return 0.0;
    }
    return v;
}

void eccl_dtype_store(void *buf, size_t i, int dtype, double v)
{
    int at_hi;
    double r;
    switch (dtype) {
    case ecclInt8:
        r = round_int(v, -128.0, 128.0, &at_hi);
        ((int8_t *)buf)[i] = at_hi ? INT8_MAX : (int8_t)r;
        break;
    case ecclUint8:
        r = round_int(v, 0.0, 256.0, &at_hi);
        ((uint8_t *)buf)[i] = at_hi ? UINT8_MAX : (uint8_t)r;
        break;
    case ecclInt32:
        r = round_int(v, -0x1p31, 0x1p31, &at_hi);
        ((int32_t *)buf)[i] = at_hi ? INT32_MAX : (int32_t)r;
        break;
    case ecclUint32:
        r = round_int(v, 0.0, 0x1p32, &at_hi);
        ((uint32_t *)buf)[i] = at_hi ? UINT32_MAX : (uint32_t)r;
        break;
    case ecclInt64:
        r = round_int(v, -0x1p63, 0x1p63, &at_hi);
        ((int64_t *)buf)[i] = at_hi ? INT64_MAX : (int64_t)r;
        break;
    case ecclUint64:
        r = round_int(v, 0.0, 0x1p64, &at_hi);
        ((uint64_t *)buf)[i] = at_hi ? UINT64_MAX : (uint64_t)r;
        break;
    case ecclFloat16:
        ((uint16_t *)buf)[i] = float_to_half_inl(double_to_float_odd(v));
        break;
    case ecclFloat32:
        ((float *)buf)[i] = (float)v;
        break;
    case ecclFloat64:
        ((double *)buf)[i] = v;
        break;
    case ecclBfloat16:
        ((uint16_t *)buf)[i] = float_to_bf16_inl(double_to_float_odd(v));
        break;
    case ecclFloat8e4m3:
        ((uint8_t *)buf)[i] = float_to_fp8e4m3_inl(double_to_float_odd(v));
        break;
    case ecclFloat8e5m2:
        ((uint8_t *)buf)[i] = float_to_fp8e5m2_inl(double_to_float_odd(v));
        break;
    default:
        ECCL_ASSERT(0);
        break;
    }
}

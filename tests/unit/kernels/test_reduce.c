/*
 * test_reduce.c - the host reductions and conversions of kernels/reduce.h against references
 * written here independently: a decoder of the narrow float formats from their definitions
 * (ldexp), a rounding to nearest even by search over every finite value of the format, and the
 * arithmetic done in double (exact for the sums, products and quotients checked: double has at
 * least 2p+2 bits of each checked type, so one double operation followed by one rounding equals
 * the correctly rounded result) or in 64-bit integers for the integer types.
 *
 * Covers: every half, bfloat16 and fp8 bit pattern (decoding, and the exact round trip
 * type -> float -> type), ties to even at every midpoint between neighbours, overflow (inf for
 * half and bfloat16, saturation for fp8), NaN, subnormals, random floats; every data type x
 * reduction kind through combine, local (pre + combine), pre and post, with dst distinct from,
 * equal to a, and equal to b, for n = 0, 1, 7, 1023, 65539.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "eccl.h"
#include "common/alloc.h"
#include "kernels/reduce.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd64(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

/* A narrow float format, described as its definition says. */
struct fmt {
    int dtype;
    int ebits, mbits, bias;
    int ieee;         /* the top exponent is inf (mantissa 0) and NaN (else) */
    int satfinite;    /* finite overflow saturates (fp8) instead of becoming inf */
    int keeps_inf;    /* inf input gives inf (else the largest finite value) */
    unsigned nvalues; /* 2^(1 + ebits + mbits) */
    unsigned maxbits; /* bit pattern of the largest finite value */
};

static const struct fmt fmt_half = {ecclFloat16, 5, 10, 15, 1, 0, 1, 1u << 16, 0x7bff};
static const struct fmt fmt_bf16 = {ecclBfloat16, 8, 7, 127, 1, 0, 1, 1u << 16, 0x7f7f};
static const struct fmt fmt_e4m3 = {ecclFloat8e4m3, 4, 3, 7, 0, 1, 0, 1u << 8, 0x7e};
static const struct fmt fmt_e5m2 = {ecclFloat8e5m2, 5, 2, 15, 1, 1, 1, 1u << 8, 0x7b};

static const struct fmt *fmt_of(int dtype)
{
    switch (dtype) {
    case ecclFloat16:
        return &fmt_half;
    case ecclBfloat16:
        return &fmt_bf16;
    case ecclFloat8e4m3:
        return &fmt_e4m3;
    case ecclFloat8e5m2:
        return &fmt_e5m2;
    default:
        return NULL;
    }
}

static double fmt_decode(const struct fmt *f, unsigned bits)
{
    unsigned sign = bits >> (f->ebits + f->mbits) & 1;
    unsigned e = bits >> f->mbits & ((1u << f->ebits) - 1);
    unsigned m = bits & ((1u << f->mbits) - 1);
    double v;
    if (f->ieee && e == (1u << f->ebits) - 1)
        v = m ? NAN : INFINITY;
    else if (!f->ieee && (bits & ((f->nvalues >> 1) - 1)) == (f->nvalues >> 1) - 1)
        v = NAN; /* e4m3fn: S.1111.111 */
    else if (e == 0)
        v = ldexp((double)m, 1 - f->bias - f->mbits);
    else
        v = ldexp(1.0 + ldexp((double)m, -f->mbits), (int)e - f->bias);
    return sign ? -v : v;
}

/* fmt_decode of every pattern, filled once by main (the searches below use it a lot). */
static double dec_half[1 << 16], dec_bf16[1 << 16], dec_e4m3[1 << 8], dec_e5m2[1 << 8];

static double *dec_table(const struct fmt *f)
{
    return f == &fmt_half   ? dec_half
           : f == &fmt_bf16 ? dec_bf16
           : f == &fmt_e4m3 ? dec_e4m3
                            : dec_e5m2;
}

static void dec_tables_fill(void)
{
    const struct fmt *fs[] = {&fmt_half, &fmt_bf16, &fmt_e4m3, &fmt_e5m2};
    for (size_t t = 0; t < 4; t++)
        for (unsigned bits = 0; bits < fs[t]->nvalues; bits++)
            dec_table(fs[t])[bits] = fmt_decode(fs[t], bits);
}

static double fmt_value(const struct fmt *f, unsigned bits)
{
    return dec_table(f)[bits];
}

/* The reference rounding of v to the format: nearest, ties to even, by binary search over the
 * positive finite values (ascending with their bit patterns); overflow per the format's rule.
 * Returns the bit pattern; for NaN, some NaN (callers compare NaN by class). */
static unsigned fmt_round(const struct fmt *f, double v)
{
    unsigned signbit = f->nvalues >> 1;
    unsigned sign = signbit(v) ? signbit : 0;
    double a = fabs(v);
    if (isnan(v))
        return f->ieee ? (((1u << f->ebits) - 1) << f->mbits) | 1u << (f->mbits - 1) : 0x7f;
    unsigned inf = ((1u << f->ebits) - 1) << f->mbits;
    double maxv = fmt_value(f, f->maxbits);
    if (isinf(a))
        return sign | (f->keeps_inf ? inf : f->maxbits);
    if (a > maxv) {
        if (f->satfinite)
            return sign | f->maxbits;
        double half_ulp = (maxv - fmt_value(f, f->maxbits - 1)) / 2;
        return sign | (a >= maxv + half_ulp ? inf : f->maxbits);
    }
    unsigned lo = 0, hi = f->maxbits; /* invariant: decode(lo) <= a <= decode(hi) */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (fmt_value(f, mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - fmt_value(f, lo), dh = fmt_value(f, hi) - a;
    unsigned r = dl < dh ? lo : dh < dl ? hi : (lo & 1) ? hi : lo;
    if (fmt_value(f, hi) == a)
        r = hi;
    return sign | r;
}

static float to_float(int dtype, unsigned bits)
{
    switch (dtype) {
    case ecclFloat16:
        return eccl_half_to_float((uint16_t)bits);
    case ecclBfloat16:
        return eccl_bf16_to_float((uint16_t)bits);
    case ecclFloat8e4m3:
        return eccl_fp8e4m3_to_float((uint8_t)bits);
    default:
        return eccl_fp8e5m2_to_float((uint8_t)bits);
    }
}

static unsigned from_float(int dtype, float v)
{
    switch (dtype) {
    case ecclFloat16:
        return eccl_float_to_half(v);
    case ecclBfloat16:
        return eccl_float_to_bf16(v);
    case ecclFloat8e4m3:
        return eccl_float_to_fp8e4m3(v);
    default:
        return eccl_float_to_fp8e5m2(v);
    }
}

static int is_nan_bits(const struct fmt *f, unsigned bits)
{
    return isnan(fmt_value(f, bits));
}

static const int narrow_types[] = {ecclFloat16, ecclBfloat16, ecclFloat8e4m3, ecclFloat8e5m2};

/* ---- conversions ------------------------------------------------------------------------------ */

/* Every bit pattern decodes to its defined value and round-trips type -> float -> type. */
static void test_decode_and_roundtrip_all(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(narrow_types) / sizeof(narrow_types[0]); t++) {
        const struct fmt *f = fmt_of(narrow_types[t]);
        unsigned bad = 0;
        for (unsigned bits = 0; bits < f->nvalues; bits++) {
            double want = fmt_decode(f, bits);
            float got = to_float(f->dtype, bits);
            if (isnan(want) ? !isnan(got) : (d2u(want) != d2u((double)got)))
                bad++;
            if (from_float(f->dtype, got) != bits) {
                if (bad < 5)
                    print_error("%s: 0x%x -> %a -> 0x%x\n", eccl_dtype_name(f->dtype), bits,
                                (double)got, from_float(f->dtype, got));
                bad++;
            }
        }
        assert_int_equal(bad, 0);
    }
}

/* The exact midpoint between neighbours rounds to the even one; a hair off it, to the nearer. */
static void test_ties_to_even(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(narrow_types) / sizeof(narrow_types[0]); t++) {
        const struct fmt *f = fmt_of(narrow_types[t]);
        unsigned bad = 0, checked = 0;
        for (unsigned bits = 0; bits < f->maxbits; bits++) {
            for (int neg = 0; neg < 2; neg++) {
                unsigned s = neg ? f->nvalues >> 1 : 0;
                double lo = fmt_decode(f, bits), hi = fmt_decode(f, bits + 1);
                float mid = (float)((lo + hi) / 2); /* exact: float has the bits */
                assert_true((double)mid == (lo + hi) / 2);
                if (neg)
                    mid = -mid;
                unsigned even = (bits & 1) ? bits + 1 : bits;
                unsigned got = from_float(f->dtype, mid);
                unsigned below = from_float(f->dtype, nextafterf(mid, 0.0f));
                unsigned above = from_float(f->dtype, nextafterf(mid, neg ? -INFINITY : INFINITY));
                if (got != (s | even) || below != (s | bits) || above != (s | (bits + 1))) {
                    if (bad < 5)
                        print_error("%s: midpoint of 0x%x and 0x%x: 0x%x (below 0x%x, above "
                                    "0x%x)\n",
                                    eccl_dtype_name(f->dtype), s | bits, s | (bits + 1), got, below,
                                    above);
                    bad++;
                }
                checked++;
            }
        }
        assert_int_equal(bad, 0);
        assert_true(checked > 200);
    }
}

/* Overflow: inf for half and bfloat16 (from the midpoint above the largest value on), saturation
 * for fp8; e4m3 has no inf (inf saturates too), e5m2 keeps inf. */
static void test_overflow(void **state)
{
    (void)state;
    assert_int_equal(eccl_float_to_half(65504.0f), 0x7bff);
    assert_int_equal(eccl_float_to_half(65519.99f), 0x7bff);
    assert_int_equal(eccl_float_to_half(65520.0f), 0x7c00);
    assert_int_equal(eccl_float_to_half(-1e30f), 0xfc00);
    assert_int_equal(eccl_float_to_half(INFINITY), 0x7c00);
    assert_int_equal(eccl_float_to_half(FLT_MAX), 0x7c00);
    assert_int_equal(eccl_float_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(eccl_float_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(eccl_float_to_bf16(3.3895313892515355e38f), 0x7f7f);

    assert_int_equal(eccl_float_to_fp8e4m3(448.0f), 0x7e);
    assert_int_equal(eccl_float_to_fp8e4m3(464.0f), 0x7e);
    assert_int_equal(eccl_float_to_fp8e4m3(480.0f), 0x7e);
    assert_int_equal(eccl_float_to_fp8e4m3(1e6f), 0x7e);
    assert_int_equal(eccl_float_to_fp8e4m3(FLT_MAX), 0x7e);
    assert_int_equal(eccl_float_to_fp8e4m3(INFINITY), 0x7e);
    assert_int_equal(eccl_float_to_fp8e4m3(-INFINITY), 0xfe);
    assert_int_equal(eccl_float_to_fp8e4m3(-1e6f), 0xfe);

    assert_int_equal(eccl_float_to_fp8e5m2(57344.0f), 0x7b);
    assert_int_equal(eccl_float_to_fp8e5m2(61440.0f), 0x7b);
    assert_int_equal(eccl_float_to_fp8e5m2(1e9f), 0x7b);
    assert_int_equal(eccl_float_to_fp8e5m2(FLT_MAX), 0x7b);
    assert_int_equal(eccl_float_to_fp8e5m2(-1e9f), 0xfb);
    assert_int_equal(eccl_float_to_fp8e5m2(INFINITY), 0x7c);
    assert_int_equal(eccl_float_to_fp8e5m2(-INFINITY), 0xfc);

    assert_true(eccl_fp8e4m3_to_float(0x7e) == 448.0f);
    assert_true(eccl_fp8e5m2_to_float(0x7b) == 57344.0f);
    assert_true(isinf(eccl_fp8e5m2_to_float(0x7c)));
}

/* NaN stays NaN in every direction; e4m3's NaN is 0x7f / 0xff. */
static void test_nan(void **state)
{
    (void)state;
    const float nans[] = {
        NAN, -NAN, u2f(0x7f800001u), u2f(0xffc00000u), u2f(0x7fbfffffu), u2f(0x7fffe000u)};
    for (size_t i = 0; i < sizeof(nans) / sizeof(nans[0]); i++) {
        float n = nans[i];
        unsigned sign = f2u(n) >> 31;
        assert_true(isnan(eccl_half_to_float(eccl_float_to_half(n))));
        assert_true(isnan(eccl_bf16_to_float(eccl_float_to_bf16(n))));
        assert_int_equal(eccl_float_to_fp8e4m3(n), sign ? 0xff : 0x7f);
        assert_true(isnan(eccl_fp8e5m2_to_float(eccl_float_to_fp8e5m2(n))));
        assert_int_equal(eccl_float_to_half(n) >> 15, sign);
        assert_int_equal(eccl_float_to_fp8e5m2(n) >> 7, sign);
    }
    assert_true(isnan(eccl_fp8e4m3_to_float(0x7f)));
    assert_true(isnan(eccl_fp8e4m3_to_float(0xff)));
    assert_false(isnan(eccl_fp8e4m3_to_float(0x7e)));
    assert_false(isnan(eccl_fp8e4m3_to_float(0x78))); /* 256: e4m3fn has no inf */
    assert_true(eccl_fp8e4m3_to_float(0x78) == 256.0f);
}

/* Random float bit patterns (every exponent, subnormals included) against the reference
 * rounding. */
static void test_random_floats(void **state)
{
    (void)state;
    rng_state = 0x1234567887654321ull;
    for (size_t t = 0; t < sizeof(narrow_types) / sizeof(narrow_types[0]); t++) {
        const struct fmt *f = fmt_of(narrow_types[t]);
        unsigned bad = 0;
        for (int i = 0; i < 300000; i++) {
            uint32_t u = (uint32_t)rnd64();
            if (i & 1) /* half of them near the format's range */
                u = (u & 0x807fffffu) | (uint32_t)(100 + rnd64() % 60) << 23;
            float v = u2f(u);
            unsigned want = fmt_round(f, v), got = from_float(f->dtype, v);
            if (isnan(v) ? !is_nan_bits(f, got) : got != want) {
                if (bad < 5)
                    print_error("%s: %a -> 0x%x, want 0x%x\n", eccl_dtype_name(f->dtype), (double)v,
                                got, want);
                bad++;
            }
        }
        assert_int_equal(bad, 0);
    }
}

/* eccl_dtype_store rounds a double once (no double rounding through float), saturates integers;
 * eccl_dtype_load reads exactly. */
static void test_load_store(void **state)
{
    (void)state;
    unsigned char buf[16];
    /* Just above the midpoint between 1 and 1 + 2^-10 by less than a float ulp: rounding through
     * float to nearest would land on the midpoint and then go to even (1.0). */
    eccl_dtype_store(buf, 0, ecclFloat16, 1.0 + 0x1p-11 + 0x1p-40);
    assert_int_equal(((uint16_t *)buf)[0], 0x3c01);
    eccl_dtype_store(buf, 0, ecclFloat16, 1.0 + 0x1p-11);
    assert_int_equal(((uint16_t *)buf)[0], 0x3c00);
    eccl_dtype_store(buf, 0, ecclBfloat16, -(1.0 + 0x1p-8 + 0x1p-45));
    assert_int_equal(((uint16_t *)buf)[0], 0xbf81);
    eccl_dtype_store(buf, 0, ecclFloat8e4m3, 1.0 + 0x1p-4 + 0x1p-50);
    assert_int_equal(buf[0], 0x39);
    eccl_dtype_store(buf, 0, ecclFloat8e5m2, 1.0 + 0x1p-3 + 0x1p-50);
    assert_int_equal(buf[0], 0x3d);
    eccl_dtype_store(buf, 0, ecclFloat8e4m3, 1e300);
    assert_int_equal(buf[0], 0x7e);
    eccl_dtype_store(buf, 0, ecclFloat16, 1e-300);
    assert_int_equal(((uint16_t *)buf)[0], 0x0000);
    eccl_dtype_store(buf, 0, ecclFloat16, 0x1p-25 + 0x1p-60);
    assert_int_equal(((uint16_t *)buf)[0], 0x0001);

    eccl_dtype_store(buf, 0, ecclInt8, 200.0);
    assert_int_equal((int8_t)buf[0], 127);
    eccl_dtype_store(buf, 0, ecclInt8, -1000.0);
    assert_int_equal((int8_t)buf[0], -128);
    eccl_dtype_store(buf, 0, ecclUint8, -3.0);
    assert_int_equal(buf[0], 0);
    eccl_dtype_store(buf, 0, ecclInt32, 2.5);
    assert_int_equal(((int32_t *)buf)[0], 2);
    eccl_dtype_store(buf, 0, ecclInt64, 1e30);
    assert_true(((int64_t *)buf)[0] == INT64_MAX);
    eccl_dtype_store(buf, 0, ecclUint64, 1e30);
    assert_true(((uint64_t *)buf)[0] == UINT64_MAX);
    eccl_dtype_store(buf, 1, ecclUint64, 0x1p63);
    assert_true(((uint64_t *)buf)[1] == 1ull << 63);
    eccl_dtype_store(buf, 0, ecclInt32, NAN);
    assert_int_equal(((int32_t *)buf)[0], 0);

    rng_state = 77;
    for (int dt = 0; dt < ecclNumTypes; dt++) {
        for (int i = 0; i < 20000; i++) {
            uint64_t v = rnd64();
            memcpy(buf, &v, sizeof(v));
            double d = eccl_dtype_load(buf, 0, dt);
            unsigned char out[8];
            memcpy(out, buf, sizeof(out));
            eccl_dtype_store(out, 0, dt, d);
            if (isnan(d))
                continue;
            if (dt == ecclInt64 || dt == ecclUint64) /* not all exact in double */
                continue;
            assert_memory_equal(out, buf, eccl_dtype_size(dt));
        }
    }
}

static void test_names(void **state)
{
    (void)state;
    static const size_t sizes[ecclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
    for (int dt = 0; dt < ecclNumTypes; dt++) {
        assert_int_equal(eccl_dtype_size(dt), sizes[dt]);
        assert_string_not_equal(eccl_dtype_name(dt), "unknown");
        for (int o = 0; o < dt; o++)
            assert_string_not_equal(eccl_dtype_name(dt), eccl_dtype_name(o));
        assert_int_equal(eccl_dtype_is_float(dt), dt >= ecclFloat16);
    }
    assert_int_equal(eccl_dtype_size(ecclNumTypes), 0);
    assert_int_equal(eccl_dtype_size(-1), 0);
    assert_string_equal(eccl_dtype_name(99), "unknown");
    for (int k = 0; k < ECCL_RED_COUNT; k++)
        assert_string_not_equal(eccl_redop_name(k), "unknown");
    assert_string_equal(eccl_redop_name(ECCL_RED_COUNT), "unknown");

    double three = 3.0;
    struct eccl_redop op = {.kind = ECCL_RED_SUMPOSTDIV, .dtype = ecclFloat32};
    memcpy(&op.scalar, &three, sizeof(three));
    assert_true(eccl_redop_has_post(&op));
    op.dtype = ecclInt32;
    op.scalar = 1;
    assert_false(eccl_redop_has_post(&op));
    op.scalar = 4;
    assert_true(eccl_redop_has_post(&op));
    op.kind = ECCL_RED_PREMULSUM;
    assert_false(eccl_redop_has_post(&op));
    op.kind = ECCL_RED_SUM;
    assert_false(eccl_redop_has_post(&op));
}

/* ---- reductions ------------------------------------------------------------------------------- */

static int is_signed_int(int dt)
{
    return dt == ecclInt8 || dt == ecclInt32 || dt == ecclInt64;
}

/* Integer element as its two's complement bits (sign-extended for signed types). */
static uint64_t int_load(const void *buf, size_t i, int dt)
{
    switch (dt) {
    case ecclInt8:
        return (uint64_t)(int64_t)((const int8_t *)buf)[i];
    case ecclUint8:
        return ((const uint8_t *)buf)[i];
    case ecclInt32:
        return (uint64_t)(int64_t)((const int32_t *)buf)[i];
    case ecclUint32:
        return ((const uint32_t *)buf)[i];
    default:
        return ((const uint64_t *)buf)[i];
    }
}

/* Bits of a floating element. */
static uint64_t bits_load(const void *buf, size_t i, int dt)
{
    switch (eccl_dtype_size(dt)) {
    case 1:
        return ((const uint8_t *)buf)[i];
    case 2:
        return ((const uint16_t *)buf)[i];
    case 4:
        return ((const uint32_t *)buf)[i];
    default:
        return ((const uint64_t *)buf)[i];
    }
}

/* Value of a floating element, decoded here. */
static double flt_load(const void *buf, size_t i, int dt)
{
    if (dt == ecclFloat32)
        return ((const float *)buf)[i];
    if (dt == ecclFloat64)
        return ((const double *)buf)[i];
    return fmt_value(fmt_of(dt), (unsigned)bits_load(buf, i, dt));
}

/* v rounded once to the floating type, as bits. */
static uint64_t flt_round(double v, int dt)
{
    if (dt == ecclFloat32)
        return f2u((float)v);
    if (dt == ecclFloat64)
        return d2u(v);
    return fmt_round(fmt_of(dt), v);
}

static double flt_of_bits(uint64_t bits, int dt)
{
    if (dt == ecclFloat32)
        return u2f((uint32_t)bits);
    if (dt == ecclFloat64) {
        double d;
        memcpy(&d, &bits, sizeof(d));
        return d;
    }
    return fmt_value(fmt_of(dt), (unsigned)bits);
}

/* The scalar as the implementation applies it: float for all floating types but double. */
static double flt_scalar(double s, int dt)
{
    return dt == ecclFloat64 ? s : (double)(float)s;
}

enum step { STEP_COMBINE, STEP_LOCAL, STEP_PRE, STEP_POST };

static double max_nan(double x, double y)
{
    return (isnan(x) || x > y) ? x : y;
}

static double min_nan(double x, double y)
{
    return (isnan(x) || x < y) ? x : y;
}

/* The expected element: bits for integer and floating types alike. */
static uint64_t expect_flt(enum step step, int kind, int dt, double x, double y, double s)
{
    s = flt_scalar(s, dt);
    int premul = kind == ECCL_RED_PREMULSUM;
    switch (step) {
    case STEP_PRE:
        if (!premul)
            return flt_round(x, dt);
        /* the product rounded to float (double for double), then to the type */
        return flt_round(dt == ecclFloat64 ? x * s : (double)(float)(x * s), dt);
    case STEP_POST:
        if (kind != ECCL_RED_SUMPOSTDIV || s == 1.0 || s == 0.0)
            return flt_round(x, dt);
        return flt_round(x / s, dt);
    case STEP_LOCAL:
        if (premul)
            x = flt_of_bits(expect_flt(STEP_PRE, kind, dt, x, 0, s), dt);
        /* fall through */
    case STEP_COMBINE:
    default:
        switch (kind) {
        case ECCL_RED_PROD:
            return flt_round(x * y, dt);
        case ECCL_RED_MAX:
            return flt_round(max_nan(x, y), dt);
        case ECCL_RED_MIN:
            return flt_round(min_nan(x, y), dt);
        default:
            return flt_round(x + y, dt);
        }
    }
}

static uint64_t expect_int(enum step step, int kind, int dt, uint64_t x, uint64_t y, int64_t s)
{
    int sgn = is_signed_int(dt);
    uint64_t mask = eccl_dtype_size(dt) == 8 ? ~0ull : (1ull << (8 * eccl_dtype_size(dt))) - 1;
    /* sign-extend a result truncated to the type */
#define NORM(v)                                                                    \
    (sgn ? (uint64_t)(((int64_t)(((v)&mask) << (64 - 8 * eccl_dtype_size(dt)))) >> \
                      (64 - 8 * eccl_dtype_size(dt)))                              \
         : ((v)&mask))
    int premul = kind == ECCL_RED_PREMULSUM;
    switch (step) {
    case STEP_PRE:
        return premul ? NORM(x * (uint64_t)s) : x;
    case STEP_POST:
        if (kind != ECCL_RED_SUMPOSTDIV || s == 0 || s == 1)
            return x;
        if (sgn)
            return s == -1 ? NORM(0 - x) : NORM((uint64_t)((int64_t)x / s));
        return NORM(x / (uint64_t)s);
    case STEP_LOCAL:
        if (premul)
            x = NORM(x * (uint64_t)s);
        /* fall through */
    case STEP_COMBINE:
    default:
        switch (kind) {
        case ECCL_RED_PROD:
            return NORM(x * y);
        case ECCL_RED_MAX:
            return sgn ? ((int64_t)x > (int64_t)y ? x : y) : (x > y ? x : y);
        case ECCL_RED_MIN:
            return sgn ? ((int64_t)x < (int64_t)y ? x : y) : (x < y ? x : y);
        default:
            return NORM(x + y);
        }
    }
#undef NORM
}

/* Random contents: integers as random bits; floats half random bit patterns (every exponent,
 * NaN, inf, subnormals), half small values with few significant bits (sums and products that
 * round, tie and overflow the narrow types; exact zeros of both signs). */
static void fill_random(void *buf, size_t n, int dt)
{
    size_t sz = eccl_dtype_size(dt);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd64();
        if (eccl_dtype_is_float(dt) && (r & 1)) {
            double v;
            switch (r >> 1 & 7) {
            case 0:
                v = (r >> 8 & 1) ? -0.0 : 0.0;
                break;
            case 1:
                v = (double)((int64_t)(r >> 8 & 0xff) - 128);
                break;
            default:
                v = ldexp((double)((int64_t)(r >> 8 & 0xfff) - 2048), (int)(r >> 24 & 31) - 16);
                break;
            }
            if (dt == ecclFloat32)
                ((float *)buf)[i] = (float)v;
            else if (dt == ecclFloat64)
                ((double *)buf)[i] = v;
            else if (sz == 2)
                ((uint16_t *)buf)[i] = (uint16_t)fmt_round(fmt_of(dt), v);
            else
                ((uint8_t *)buf)[i] = (uint8_t)fmt_round(fmt_of(dt), v);
        } else {
            memcpy((unsigned char *)buf + i * sz, &r, sz);
        }
    }
}

static int64_t scalar_for(int kind, int dt, uint64_t *encoded)
{
    /* PREMULSUM: 0.37 (not representable: exercises the rounding of the product) or an integer
     * 3; SUMPOSTDIV: 3 or 7 (representable in every type, so that dividing in float and rounding
     * to the narrow type is the correctly rounded quotient). */
    int64_t iv = kind == ECCL_RED_SUMPOSTDIV ? 7 : 3;
    double dv = kind == ECCL_RED_SUMPOSTDIV ? 3.0 : 0.37;
    if (eccl_dtype_is_float(dt))
        memcpy(encoded, &dv, sizeof(dv));
    else
        *encoded = (uint64_t)iv;
    return iv;
}

/* Runs one step with dst distinct from, equal to a, or equal to b (alias 0, 1, 2) and checks
 * every element. Returns the number of mismatches. */
static unsigned check_step(enum step step, int kind, int dt, size_t n, int alias)
{
    size_t sz = eccl_dtype_size(dt);
    size_t bytes = (n + 1) * sz; /* one guard element after the end */
    unsigned char *a = eccl_calloc(bytes, 1, "test"), *b = eccl_calloc(bytes, 1, "test");
    unsigned char *d = eccl_calloc(bytes, 1, "test"), *a0 = eccl_calloc(bytes, 1, "test");
    unsigned char *b0 = eccl_calloc(bytes, 1, "test"), *d0 = eccl_calloc(bytes, 1, "test");
    assert_true(a && b && d && a0 && b0 && d0);
    fill_random(a, n + 1, dt);
    fill_random(b, n + 1, dt);
    memset(d, 0x5a, bytes);
    memcpy(a0, a, bytes);
    memcpy(b0, b, bytes);
    memcpy(d0, d, bytes);

    struct eccl_redop op = {.kind = (uint8_t)kind, .dtype = (uint8_t)dt};
    int64_t is = scalar_for(kind, dt, &op.scalar);
    double ds = eccl_dtype_is_float(dt) ? (kind == ECCL_RED_SUMPOSTDIV ? 3.0 : 0.37) : 0.0;

    unsigned char *dst = alias == 1 ? a : alias == 2 ? b : d;
    if ((step == STEP_PRE || step == STEP_POST) && alias == 2)
        dst = a; /* unary steps have one source: in place is dst == src */
    const unsigned char *before = dst == a ? a0 : dst == b ? b0 : d0;
    switch (step) {
    case STEP_COMBINE:
        eccl_reduce_combine(dst, a, b, n, &op);
        break;
    case STEP_LOCAL:
        eccl_reduce_local(dst, a, b, n, &op);
        break;
    case STEP_PRE:
        eccl_reduce_pre(dst, a, n, &op);
        break;
    case STEP_POST:
        eccl_reduce_post(dst, a, n, &op);
        break;
    }

    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t want, got;
        if (eccl_dtype_is_float(dt)) {
            double x = flt_load(a0, i, dt), y = flt_load(b0, i, dt);
            want = expect_flt(step, kind, dt, x, y, ds);
            got = bits_load(dst, i, dt);
            if (isnan(flt_of_bits(want, dt)) && isnan(flt_of_bits(got, dt)))
                continue;
        } else {
            want = expect_int(step, kind, dt, int_load(a0, i, dt), int_load(b0, i, dt), is);
            got = int_load(dst, i, dt);
        }
        if (want != got) {
            if (bad < 3)
                print_error("%s %s step %d n %zu alias %d: [%zu] a 0x%llx b 0x%llx: got 0x%llx, "
                            "want 0x%llx\n",
                            eccl_dtype_name(dt), eccl_redop_name(kind), (int)step, n, alias, i,
                            (unsigned long long)bits_load(a0, i, dt),
                            (unsigned long long)bits_load(b0, i, dt), (unsigned long long)got,
                            (unsigned long long)want);
            bad++;
        }
    }
    /* Nothing written past n, and an untouched source stays untouched. */
    if (memcmp(dst + n * sz, before + n * sz, sz) != 0)
        bad++;
    if (dst != a && memcmp(a, a0, bytes) != 0)
        bad++;
    if (dst != b && memcmp(b, b0, bytes) != 0)
        bad++;
    eccl_free(a);
    eccl_free(b);
    eccl_free(d);
    eccl_free(a0);
    eccl_free(b0);
    eccl_free(d0);
    return bad;
}

static const size_t counts[] = {0, 1, 7, 1023, 65539};

static void run_steps(int dt)
{
    unsigned bad = 0;
    rng_state = 0xabcdef12345ull + (uint64_t)dt;
    for (int kind = 0; kind < ECCL_RED_COUNT; kind++)
        for (int step = STEP_COMBINE; step <= STEP_POST; step++)
            for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
                for (int alias = 0; alias < 3; alias++)
                    bad += check_step((enum step)step, kind, dt, counts[c], alias);
    assert_int_equal(bad, 0);
}

#define DTYPE_TEST(name, dt)                     \
    static void test_reduce_##name(void **state) \
    {                                            \
        (void)state;                             \
        run_steps(dt);                           \
    }
DTYPE_TEST(int8, ecclInt8)
DTYPE_TEST(uint8, ecclUint8)
DTYPE_TEST(int32, ecclInt32)
DTYPE_TEST(uint32, ecclUint32)
DTYPE_TEST(int64, ecclInt64)
DTYPE_TEST(uint64, ecclUint64)
DTYPE_TEST(half, ecclFloat16)
DTYPE_TEST(float, ecclFloat32)
DTYPE_TEST(double, ecclFloat64)
DTYPE_TEST(bf16, ecclBfloat16)
DTYPE_TEST(e4m3, ecclFloat8e4m3)
DTYPE_TEST(e5m2, ecclFloat8e5m2)

/* Hand-picked cases the random data may miss. */
static void test_reduce_special(void **state)
{
    (void)state;
    struct eccl_redop op = {.kind = ECCL_RED_MAX, .dtype = ecclFloat32};
    float a[4] = {NAN, 1.0f, 0.0f, -0.0f}, b[4] = {1.0f, NAN, -0.0f, 0.0f}, d[4];
    eccl_reduce_combine(d, a, b, 4, &op);
    assert_true(isnan(d[0]) && isnan(d[1]));  /* NaN propagates from either side */
    assert_int_equal(f2u(d[2]), 0x80000000u); /* equal: y */
    assert_int_equal(f2u(d[3]), 0x00000000u);
    op.kind = ECCL_RED_MIN;
    eccl_reduce_combine(d, a, b, 4, &op);
    assert_true(isnan(d[0]) && isnan(d[1]));

    /* fp8 sums saturate; e5m2 inf stays inf. */
    uint8_t x[3] = {0x7e, 0xfe, 0x40}, y[3] = {0x7e, 0xfe, 0x40}, z[3];
    op.kind = ECCL_RED_SUM;
    op.dtype = ecclFloat8e4m3;
    eccl_reduce_combine(z, x, y, 3, &op);
    assert_int_equal(z[0], 0x7e);
    assert_int_equal(z[1], 0xfe);
    assert_int_equal(z[2], 0x48); /* 2 + 2 = 4 */
    op.dtype = ecclFloat8e5m2;
    uint8_t p[3] = {0x7b, 0x7c, 0x7c}, q[3] = {0x7b, 0x3c, 0xfc};
    eccl_reduce_combine(z, p, q, 3, &op);
    assert_int_equal(z[0], 0x7b);
    assert_int_equal(z[1], 0x7c);
    assert_true(isnan(eccl_fp8e5m2_to_float(z[2]))); /* inf - inf */

    /* Integer wrap and SUMPOSTDIV truncation toward zero, with INT64_MIN / -1. */
    int64_t i1[3] = {INT64_MAX, -7, INT64_MIN}, i2[3] = {1, 0, 0}, i3[3];
    op.dtype = ecclInt64;
    eccl_reduce_combine(i3, i1, i2, 3, &op);
    assert_true(i3[0] == INT64_MIN);
    op.kind = ECCL_RED_SUMPOSTDIV;
    op.scalar = 2;
    eccl_reduce_post(i3, i1, 2, &op);
    assert_true(i3[0] == INT64_MAX / 2 && i3[1] == -3);
    op.scalar = (uint64_t)-1;
    eccl_reduce_post(i3, i1, 3, &op);
    assert_true(i3[2] == INT64_MIN && i3[1] == 7);

    /* ecclAvg of half as PREMULSUM by 1/4: 3 * 0.25 + 1 = 1.75. */
    uint16_t h1[1] = {0x4200}, h2[1] = {0x3c00}, h3[1];
    double quarter = 0.25;
    op.kind = ECCL_RED_PREMULSUM;
    op.dtype = ecclFloat16;
    memcpy(&op.scalar, &quarter, sizeof(quarter));
    eccl_reduce_local(h3, h1, h2, 1, &op);
    assert_int_equal(h3[0], 0x3f00);

    /* n == 0 touches nothing (NULL buffers are fine). */
    for (int dt = 0; dt < ecclNumTypes; dt++) {
        op.dtype = (uint8_t)dt;
        for (int k = 0; k < ECCL_RED_COUNT; k++) {
            op.kind = (uint8_t)k;
            eccl_reduce_combine(NULL, NULL, NULL, 0, &op);
            eccl_reduce_local(NULL, NULL, NULL, 0, &op);
            eccl_reduce_pre(NULL, NULL, 0, &op);
            eccl_reduce_post(NULL, NULL, 0, &op);
        }
    }
}

int main(void)
{
    dec_tables_fill();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_and_roundtrip_all),
        cmocka_unit_test(test_ties_to_even),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_nan),
        cmocka_unit_test(test_random_floats),
        cmocka_unit_test(test_load_store),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_reduce_int8),
        cmocka_unit_test(test_reduce_uint8),
        cmocka_unit_test(test_reduce_int32),
        cmocka_unit_test(test_reduce_uint32),
        cmocka_unit_test(test_reduce_int64),
        cmocka_unit_test(test_reduce_uint64),
        cmocka_unit_test(test_reduce_half),
        cmocka_unit_test(test_reduce_float),
        cmocka_unit_test(test_reduce_double),
        cmocka_unit_test(test_reduce_bf16),
        cmocka_unit_test(test_reduce_e4m3),
        cmocka_unit_test(test_reduce_e5m2),
        cmocka_unit_test(test_reduce_special),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

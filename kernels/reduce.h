/*
 * reduce.h - element-wise reductions and data-type conversions on the host, for every NCCL data
 * type and reduction.
 *
 * The 16- and 8-bit floating types (half, bfloat16, fp8 e4m3, fp8 e5m2) are reduced in float and
 * rounded to nearest even; fp8 conversions saturate to the largest finite value (as CUDA's
 * __NV_SATFINITE), NaN stays NaN. Integer arithmetic wraps. Buffers may alias exactly
 * (dst == a or dst == b) but must not overlap partially.
 */
#ifndef ECCL_KERNELS_REDUCE_H
#define ECCL_KERNELS_REDUCE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/work.h"

struct eccl_redop {
    uint8_t kind;       /* enum eccl_redop_kind */
    uint8_t dtype;      /* ecclDataType_t */
    uint8_t scalar_ptr; /* PREMULSUM with ecclScalarDevice: scalar is the value's address */
    uint64_t scalar;    /* as in struct eccl_work */
};

/* The PREMULSUM multiplier at p (one element of dtype) as struct eccl_redop.scalar holds it: a
 * double's bits for floating types, an int64 for integer types. */
uint64_t eccl_redop_scalar_bits(const void *p, int dtype);

/* Bytes of one element; 0 for an unknown type. */
size_t eccl_dtype_size(int dtype);
const char *eccl_dtype_name(int dtype);
const char *eccl_redop_name(int kind);
int eccl_dtype_is_float(int dtype);

/* dst[i] = pre(local[i]) (+) remote[i], where pre is the PREMULSUM multiplication (identity for
 * other ops) and remote already had pre applied where it entered the reduction. */
void eccl_reduce_local(void *dst, const void *local, const void *remote, size_t n,
                       const struct eccl_redop *op);
/* dst[i] = a[i] (+) b[i], both already pre-applied (the combine step alone). */
void eccl_reduce_combine(void *dst, const void *a, const void *b, size_t n,
                         const struct eccl_redop *op);
/* dst[i] = pre(src[i]). A plain copy for ops without a pre-operation. */
void eccl_reduce_pre(void *dst, const void *src, size_t n, const struct eccl_redop *op);
/* dst[i] = post(src[i]): the SUMPOSTDIV division; a plain copy (or nothing if dst == src)
 * otherwise. */
void eccl_reduce_post(void *dst, const void *src, size_t n, const struct eccl_redop *op);
/* 1 when post is not the identity. */
int eccl_redop_has_post(const struct eccl_redop *op);

/* Scalar conversions (exposed for tests and for the planner's PreMulSum scalars). */
float eccl_half_to_float(uint16_t h);
uint16_t eccl_float_to_half(float f);
float eccl_bf16_to_float(uint16_t h);
uint16_t eccl_float_to_bf16(float f);
float eccl_fp8e4m3_to_float(uint8_t v);
uint8_t eccl_float_to_fp8e4m3(float f);
float eccl_fp8e5m2_to_float(uint8_t v);
uint8_t eccl_float_to_fp8e5m2(float f);

/* Element i of a typed buffer as a double (tests, scalars), and the reverse (rounded). */
double eccl_dtype_load(const void *buf, size_t i, int dtype);
void eccl_dtype_store(void *buf, size_t i, int dtype, double v);

#endif

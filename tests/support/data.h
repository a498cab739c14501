/*
 * data.h - test data for every eccl data type: sizes and names, loads and stores through double,
 * deterministic values per (rank, index, seed), and reference reductions in double.
 *
 * Values are chosen so that results are exact whatever order the library reduces in:
 *  - sums (sum, avg, PreMulSum): integers with |v| <= L / (nranks * m), where L is the largest
 *    magnitude up to which every integer is exact in the type (and within its range) and m the
 *    PreMulSum scalar's magnitude for integer types (1 otherwise: the floating scalar is -0.5),
 *    so every partial sum is exact too;
 *  - products: values in {1, -1, 2} ({1, 2} unsigned), where only the first log2(L) ranks may
 *    give a 2, so every partial product is exact;
 *  - max, min and data movement: any finite value of the type (random encodings, non-finite
 *    ones turned finite; 64-bit integers within +-2^53 so that a double holds them).
 * The one inexact case is avg on floating types with a rank count that is not a power of two
 * (each value is multiplied by the rounded 1/n): td_tolerance gives its bound,
 * (n + 2) * 2^-p * max|v| + the smallest subnormal, with p the significand bits stored.
 * Integer avg is the sum divided by n, truncated toward zero (NCCL's SumPostDiv).
 *
 * Speed: a generator draws each rank's values once into a row of TD_PERIOD entries (typed and
 * as doubles) and value(rank, i) is row[i mod TD_PERIOD], so filling is memcpy and checking is
 * memcmp. TD_PERIOD is a prime: no power-of-two shift (the chunk and step sizes an executor uses)
 * and none of the test's counts maps an element onto another with the same value; rows differ
 * per rank, so a block taken from the wrong rank shows too.
 *
 * The 16- and 8-bit floating types are converted with kernels/reduce.h (eccl_dtype_load/store);
 * td_selfcheck checks those conversions against known encodings first.
 */
#ifndef ECCL_TESTS_SUPPORT_DATA_H
#define ECCL_TESTS_SUPPORT_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

/* The test's reduction ops: NCCL's five, then a PreMulSum made per call. */
enum td_op {
    TD_SUM = 0,
    TD_PROD = 1,
    TD_MAX = 2,
    TD_MIN = 3,
    TD_AVG = 4,
    TD_PREMULSUM = 5,
    TD_NUM_OPS = 6,
    TD_NO_OP = -1, /* data movement */
};

size_t td_size(int dtype); /* 0 for an unknown type */
const char *td_type_name(int dtype);
const char *td_op_name(int op);
bool td_is_float(int dtype);
bool td_is_unsigned(int dtype);
int td_type_from_name(const char *name); /* -1 if unknown */
int td_op_from_name(const char *name);   /* -1 if unknown */

double td_load(const void *buf, size_t i, int dtype);
void td_store(void *buf, size_t i, int dtype, double v);
/* out[i] = td_load(buf, i, dtype) for i < n. */
void td_load_range(const void *buf, size_t n, int dtype, double *out);

/* The PreMulSum scalar the tests use for a type: -0.5 for floating types, -3 for signed and 3
 * for unsigned integers. */
double td_premul_scalar(int dtype);

uint64_t td_hash(uint64_t x);

#define TD_PERIOD 8191

/* Values of one rank, or a reference: entry k holds the value of every index i with
 * i mod len == k (len = TD_PERIOD, or less when no index reaches it). */
struct td_row {
    uint8_t *typed;
    double *vals;
    size_t len;
};

/* A value generator for one case. */
struct td_gen {
    int dtype;
    int kind; /* sum, prod or any (internal) */
    int nranks;
    double amp;    /* sums: |v| <= amp */
    int prod_twos; /* products: ranks below this may give a 2 */
    size_t esize;
    struct td_row *rows; /* one per rank */
};

/* op: a td_op, or TD_NO_OP for data movement. Indices used later must be < max_index (rows
 * shorter than TD_PERIOD are not periodic). Returns 0, or -1 when out of memory. */
int td_gen_init(struct td_gen *g, int dtype, int op, int nranks, uint64_t seed, size_t max_index);
void td_gen_fini(struct td_gen *g);

double td_gen_value(const struct td_gen *g, int rank, size_t index);
/* buf[i] = value(rank, index0 + i) for i < count. */
void td_gen_fill(const struct td_gen *g, void *buf, size_t count, int rank, size_t index0);
/* out[i] = value(rank, index0 + i) for i < n. */
void td_gen_values(const struct td_gen *g, int rank, size_t index0, size_t n, double *out);
/* The reduction of value(p, index) over every rank p, in double. */
double td_reference(const struct td_gen *g, int op, size_t index);
/* The allowed |got - expected| for results of op (0: exact). */
double td_tolerance(const struct td_gen *g, int op);

/* The reference of op as a row (typed entries rounded from the exact doubles); free with
 * td_row_free. Returns 0, or -1 when out of memory. */
int td_ref_row(const struct td_gen *g, int op, struct td_row *row);
void td_row_free(struct td_row *row);

struct td_mismatch {
    size_t count; /* elements wrong */
    size_t first; /* index (into buf) of the first */
    double got, want;
};

/* Compares buf[0..n) (dtype) with row entries for indices index0.. and adds what differs to
 * *mm (first: the first one ever added). Exact (tol 0) compares bytes first and falls back to
 * doubles only where bytes differ (so +0 and -0 are equal, as they must be for max/min). */
void td_row_compare(const struct td_row *row, int dtype, const void *buf, size_t buf_off,
                    size_t index0, size_t n, double tol, struct td_mismatch *mm);

/* Checks the conversions of kernels/reduce.h against known encodings and that every kind of
 * generated value round-trips exactly. Returns the number of problems (printed). */
int td_selfcheck(void);

#endif

/*
 * data.c - test values for every eccl data type and their reference reductions (see data.h for
 * why the values make every result exact).
 */
#include "tests/support/data.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/reduce.h"

enum { KIND_SUM, KIND_PROD, KIND_ANY };

struct type_info {
    const char *name;
    size_t size;
    bool is_float;
    bool is_unsigned;
    double exact_limit; /* every integer in [-L, L] (and in range) is exact */
    int mant_bits;      /* stored significand bits (floating types) */
    double min_subnormal;
};

static const struct type_info types[ecclNumTypes] = {
    [ecclInt8] = {"int8", 1, false, false, 127.0, 0, 0},
    [ecclUint8] = {"uint8", 1, false, true, 255.0, 0, 0},
    [ecclInt32] = {"int32", 4, false, false, 2147483647.0, 0, 0},
    [ecclUint32] = {"uint32", 4, false, true, 4294967295.0, 0, 0},
    [ecclInt64] = {"int64", 8, false, false, 0x1p53, 0, 0},
    [ecclUint64] = {"uint64", 8, false, true, 0x1p53, 0, 0},
    [ecclFloat16] = {"half", 2, true, false, 2048.0, 10, 0x1p-24},
    [ecclFloat32] = {"float", 4, true, false, 0x1p24, 23, 0x1p-149},
    [ecclFloat64] = {"double", 8, true, false, 0x1p53, 52, 0x1p-1074},
    [ecclBfloat16] = {"bfloat16", 2, true, false, 256.0, 7, 0x1p-133},
    [ecclFloat8e4m3] = {"fp8e4m3", 1, true, false, 16.0, 3, 0x1p-9},
    [ecclFloat8e5m2] = {"fp8e5m2", 1, true, false, 8.0, 2, 0x1p-16},
};

/* Decoding tables of the 8- and 16-bit floating types and encoding tables of the small integers
 * their sums and products use, built once with eccl_dtype_load/store: the per-element calls would
 * cost more than the collectives under test. */
#define ENC_LIMIT 2048
static float dec_half[65536], dec_bf16[65536], dec_e4m3[256], dec_e5m2[256];
static uint16_t enc_half[2 * ENC_LIMIT + 1], enc_bf16[2 * ENC_LIMIT + 1];
static uint8_t enc_e4m3[2 * ENC_LIMIT + 1], enc_e5m2[2 * ENC_LIMIT + 1];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static _Atomic int tables_ready;

static void tables_build(void)
{
    for (uint32_t c = 0; c < 65536; c++) {
        uint16_t v = (uint16_t)c;
        dec_half[c] = (float)eccl_dtype_load(&v, 0, ecclFloat16);
        dec_bf16[c] = (float)eccl_dtype_load(&v, 0, ecclBfloat16);
    }
    for (uint32_t c = 0; c < 256; c++) {
        uint8_t v = (uint8_t)c;
        dec_e4m3[c] = (float)eccl_dtype_load(&v, 0, ecclFloat8e4m3);
        dec_e5m2[c] = (float)eccl_dtype_load(&v, 0, ecclFloat8e5m2);
    }
    for (int i = -ENC_LIMIT; i <= ENC_LIMIT; i++) {
        eccl_dtype_store(&enc_half[i + ENC_LIMIT], 0, ecclFloat16, i);
        eccl_dtype_store(&enc_bf16[i + ENC_LIMIT], 0, ecclBfloat16, i);
        eccl_dtype_store(&enc_e4m3[i + ENC_LIMIT], 0, ecclFloat8e4m3, i);
        eccl_dtype_store(&enc_e5m2[i + ENC_LIMIT], 0, ecclFloat8e5m2, i);
    }
}

static void tables_init(void)
{
    if (!atomic_load_explicit(&tables_ready, memory_order_acquire)) {
        pthread_once(&tables_once, tables_build);
        atomic_store_explicit(&tables_ready, 1, memory_order_release);
    }
}

static const char *const op_names[TD_NUM_OPS] = {"sum", "prod", "max", "min", "avg", "premulsum"};

static bool known(int dtype)
{
    return dtype >= 0 && dtype < ecclNumTypes;
}

size_t td_size(int dtype)
{
    return known(dtype) ? types[dtype].size : 0;
}

const char *td_type_name(int dtype)
{
    return known(dtype) ? types[dtype].name : "?";
}

const char *td_op_name(int op)
{
    if (op == TD_NO_OP)
        return "-";
    return op >= 0 && op < TD_NUM_OPS ? op_names[op] : "?";
}

bool td_is_float(int dtype)
{
    return known(dtype) && types[dtype].is_float;
}

bool td_is_unsigned(int dtype)
{
    return known(dtype) && types[dtype].is_unsigned;
}

int td_type_from_name(const char *name)
{
    for (int t = 0; t < ecclNumTypes; t++) {
        if (strcmp(types[t].name, name) == 0)
            return t;
    }
    return -1;
}

int td_op_from_name(const char *name)
{
    for (int o = 0; o < TD_NUM_OPS; o++) {
        if (strcmp(op_names[o], name) == 0)
            return o;
    }
    return -1;
}

double td_load(const void *buf, size_t i, int dtype)
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
    case ecclFloat32:
        return ((const float *)buf)[i];
    case ecclFloat64:
        return ((const double *)buf)[i];
    case ecclFloat16:
        tables_init();
        return dec_half[((const uint16_t *)buf)[i]];
    case ecclBfloat16:
        tables_init();
        return dec_bf16[((const uint16_t *)buf)[i]];
    case ecclFloat8e4m3:
        tables_init();
        return dec_e4m3[((const uint8_t *)buf)[i]];
    case ecclFloat8e5m2:
        tables_init();
        return dec_e5m2[((const uint8_t *)buf)[i]];
    default:
        return eccl_dtype_load(buf, i, dtype);
    }
}

void td_store(void *buf, size_t i, int dtype, double v)
{
    switch (dtype) {
    case ecclInt8:
        ((int8_t *)buf)[i] = (int8_t)v;
        break;
    case ecclUint8:
        ((uint8_t *)buf)[i] = (uint8_t)v;
        break;
    case ecclInt32:
        ((int32_t *)buf)[i] = (int32_t)v;
        break;
    case ecclUint32:
        ((uint32_t *)buf)[i] = (uint32_t)v;
        break;
    case ecclInt64:
        ((int64_t *)buf)[i] = (int64_t)v;
        break;
    case ecclUint64:
        ((uint64_t *)buf)[i] = (uint64_t)v;
        break;
    case ecclFloat32:
        ((float *)buf)[i] = (float)v;
        break;
    case ecclFloat64:
        ((double *)buf)[i] = v;
        break;
    default:
        eccl_dtype_store(buf, i, dtype, v);
        break;
    }
}

double td_premul_scalar(int dtype)
{
    if (td_is_float(dtype))
        return -0.5;
    return td_is_unsigned(dtype) ? 3.0 : -3.0;
}

uint64_t td_hash(uint64_t x)
{
    /* splitmix64's finaliser. */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A draw from a rank's sequence: a Weyl sequence mixed once. */
static inline uint64_t draw_bits(uint64_t rank_seed, size_t k)
{
    uint64_t x = rank_seed + (uint64_t)k * 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 32)) * 0xd6e8feb86659fd93ULL;
    return x ^ (x >> 32);
}

/* h scaled into [0, span) without a division. */
static inline uint64_t pick(uint64_t h, uint64_t span)
{
    return (uint64_t)(((unsigned __int128)h * span) >> 64);
}

/* Any finite value: the element's bits (non-finite encodings get an exponent bit flipped). */
static uint64_t any_code(int dtype, uint64_t h)
{
    switch (dtype) {
    case ecclInt64:
        return (uint64_t)((int64_t)(h >> 10) - ((int64_t)1 << 53)); /* [-2^53, 2^53) */
    case ecclUint64:
        return h >> 11; /* [0, 2^53): exact in double */
    case ecclFloat32:
        h &= 0xffffffffu;
        return ((h >> 23) & 0xff) == 0xff ? h ^ 0x40000000u : h;
    case ecclFloat64:
        return ((h >> 52) & 0x7ff) == 0x7ff ? h ^ (1ULL << 62) : h;
    case ecclFloat16:
        h &= 0xffff;
        return (h & 0x7c00) == 0x7c00 ? h ^ 0x4000 : h;
    case ecclBfloat16:
        h &= 0xffff;
        return (h & 0x7f80) == 0x7f80 ? h ^ 0x4000 : h;
    case ecclFloat8e4m3:
        h &= 0xff;
        return (h & 0x7f) == 0x7f ? h ^ 0x40 : h;
    case ecclFloat8e5m2:
        h &= 0xff;
        return (h & 0x7c) == 0x7c ? h ^ 0x40 : h;
    default:
        return h;
    }
}

/* Stores an exactly representable value (small integers of the 8- and 16-bit floating types
 * through the encoding tables). */
static void store_exact(void *buf, size_t i, int dtype, double v)
{
    bool small = v == floor(v) && fabs(v) <= ENC_LIMIT;
    switch (dtype) {
    case ecclFloat16:
        if (small)
            ((uint16_t *)buf)[i] = enc_half[(int)v + ENC_LIMIT];
        else
            eccl_dtype_store(buf, i, dtype, v);
        break;
    case ecclBfloat16:
        if (small)
            ((uint16_t *)buf)[i] = enc_bf16[(int)v + ENC_LIMIT];
        else
            eccl_dtype_store(buf, i, dtype, v);
        break;
    case ecclFloat8e4m3:
        if (small)
            ((uint8_t *)buf)[i] = enc_e4m3[(int)v + ENC_LIMIT];
        else
            eccl_dtype_store(buf, i, dtype, v);
        break;
    case ecclFloat8e5m2:
        if (small)
            ((uint8_t *)buf)[i] = enc_e5m2[(int)v + ENC_LIMIT];
        else
            eccl_dtype_store(buf, i, dtype, v);
        break;
    default:
        td_store(buf, i, dtype, v);
        break;
    }
}

static int row_alloc(struct td_row *row, size_t len, size_t esize)
{
    row->len = len;
    row->typed = malloc(len * esize + 1);
    row->vals = malloc(len * sizeof(double) + 1);
    if (row->typed == NULL || row->vals == NULL) {
        td_row_free(row);
        return -1;
    }
    return 0;
}

void td_row_free(struct td_row *row)
{
    free(row->typed);
    free(row->vals);
    row->typed = NULL;
    row->vals = NULL;
    row->len = 0;
}

static void row_draw(struct td_gen *g, struct td_row *row, int rank, uint64_t rank_seed,
                     uint64_t span, int64_t off)
{
    const struct type_info *ti = &types[g->dtype];
    for (size_t k = 0; k < row->len; k++) {
        uint64_t h = draw_bits(rank_seed, k);
        double v;
        if (g->kind == KIND_ANY) {
            uint64_t code = any_code(g->dtype, h);
            memcpy(row->typed + k * g->esize, &code, g->esize); /* little-endian */
            v = td_load(row->typed, k, g->dtype);
        } else {
            if (g->kind == KIND_SUM) {
                v = (double)((int64_t)pick(h, span) - off);
            } else {
                uint64_t r = pick(h, 3);
                v = (r == 2 && rank < g->prod_twos) ? 2.0
                    : (r == 0 || ti->is_unsigned)   ? 1.0
                                                    : -1.0;
            }
            store_exact(row->typed, k, g->dtype, v);
        }
        row->vals[k] = v;
    }
}

int td_gen_init(struct td_gen *g, int dtype, int op, int nranks, uint64_t seed, size_t max_index)
{
    tables_init();
    memset(g, 0, sizeof(*g));
    const struct type_info *ti = &types[dtype];
    g->dtype = dtype;
    g->nranks = nranks;
    g->esize = ti->size;
    uint64_t span = 0;
    int64_t off = 0;
    switch (op) {
    case TD_SUM:
    case TD_AVG:
    case TD_PREMULSUM: {
        double m = (op == TD_PREMULSUM && !ti->is_float) ? fabs(td_premul_scalar(dtype)) : 1.0;
        g->kind = KIND_SUM;
        g->amp = floor(ti->exact_limit / (nranks * m));
        span = ti->is_unsigned ? (uint64_t)g->amp + 1 : 2 * (uint64_t)g->amp + 1;
        off = ti->is_unsigned ? 0 : (int64_t)g->amp;
        break;
    }
    case TD_PROD:
        g->kind = KIND_PROD;
        g->prod_twos = (int)floor(log2(ti->exact_limit));
        break;
    default:
        g->kind = KIND_ANY;
        break;
    }
    g->rows = calloc((size_t)nranks, sizeof(*g->rows));
    if (g->rows == NULL)
        return -1;
    size_t len = max_index < TD_PERIOD ? max_index : TD_PERIOD;
    uint64_t base = td_hash(seed);
    for (int r = 0; r < nranks; r++) {
        if (row_alloc(&g->rows[r], len, g->esize) != 0) {
            td_gen_fini(g);
            return -1;
        }
        row_draw(g, &g->rows[r], r, td_hash(base ^ td_hash((uint64_t)r + 1)), span, off);
    }
    return 0;
}

void td_gen_fini(struct td_gen *g)
{
    if (g->rows != NULL) {
        for (int r = 0; r < g->nranks; r++)
            td_row_free(&g->rows[r]);
        free(g->rows);
    }
    g->rows = NULL;
}

double td_gen_value(const struct td_gen *g, int rank, size_t index)
{
    const struct td_row *row = &g->rows[rank];
    return row->vals[index % row->len];
}

void td_gen_fill(const struct td_gen *g, void *buf, size_t count, int rank, size_t index0)
{
    const struct td_row *row = &g->rows[rank];
    uint8_t *out = buf;
    size_t es = g->esize;
    for (size_t done = 0, k = count ? index0 % row->len : 0; done < count; k = 0) {
        size_t seg = row->len - k < count - done ? row->len - k : count - done;
        memcpy(out + done * es, row->typed + k * es, seg * es);
        done += seg;
    }
}

void td_gen_values(const struct td_gen *g, int rank, size_t index0, size_t n, double *out)
{
    const struct td_row *row = &g->rows[rank];
    for (size_t done = 0, k = n ? index0 % row->len : 0; done < n; k = 0) {
        size_t seg = row->len - k < n - done ? row->len - k : n - done;
        memcpy(out + done, row->vals + k, seg * sizeof(double));
        done += seg;
    }
}

#define LOAD_RANGE(T, conv)        \
    for (size_t i = 0; i < n; i++) \
        out[i] = (double)conv(((const T *)buf)[i]);
#define AS_IS(x)    (x)
#define DEC_HALF(x) dec_half[x]
#define DEC_BF16(x) dec_bf16[x]
#define DEC_E4M3(x) dec_e4m3[x]
#define DEC_E5M2(x) dec_e5m2[x]

void td_load_range(const void *buf, size_t n, int dtype, double *out)
{
    tables_init();
    switch (dtype) {
    case ecclInt8:
        LOAD_RANGE(int8_t, AS_IS);
        break;
    case ecclUint8:
        LOAD_RANGE(uint8_t, AS_IS);
        break;
    case ecclInt32:
        LOAD_RANGE(int32_t, AS_IS);
        break;
    case ecclUint32:
        LOAD_RANGE(uint32_t, AS_IS);
        break;
    case ecclInt64:
        LOAD_RANGE(int64_t, AS_IS);
        break;
    case ecclUint64:
        LOAD_RANGE(uint64_t, AS_IS);
        break;
    case ecclFloat32:
        LOAD_RANGE(float, AS_IS);
        break;
    case ecclFloat64:
        LOAD_RANGE(double, AS_IS);
        break;
    case ecclFloat16:
        LOAD_RANGE(uint16_t, DEC_HALF);
        break;
    case ecclBfloat16:
        LOAD_RANGE(uint16_t, DEC_BF16);
        break;
    case ecclFloat8e4m3:
        LOAD_RANGE(uint8_t, DEC_E4M3);
        break;
    default:
        LOAD_RANGE(uint8_t, DEC_E5M2);
        break;
    }
}

double td_reference(const struct td_gen *g, int op, size_t index)
{
    int n = g->nranks;
    size_t k = index % g->rows[0].len;
    double s = td_premul_scalar(g->dtype);
    double acc = g->rows[0].vals[k];
    if (op == TD_PREMULSUM)
        acc *= s;
    for (int p = 1; p < n; p++) {
        double v = g->rows[p].vals[k];
        switch (op) {
        case TD_SUM:
        case TD_AVG:
            acc += v;
            break;
        case TD_PREMULSUM:
            acc += s * v;
            break;
        case TD_PROD:
            acc *= v;
            break;
        case TD_MAX:
            acc = v > acc ? v : acc;
            break;
        case TD_MIN:
            acc = v < acc ? v : acc;
            break;
        default:
            break;
        }
    }
    if (op == TD_AVG) {
        if (td_is_float(g->dtype))
            return acc / n;
        return (double)((int64_t)acc / n); /* truncates toward zero */
    }
    return acc;
}

int td_ref_row(const struct td_gen *g, int op, struct td_row *row)
{
    size_t len = g->nranks > 0 ? g->rows[0].len : 0;
    if (row_alloc(row, len, g->esize) != 0)
        return -1;
    for (size_t k = 0; k < len; k++) {
        double v = td_reference(g, op, k);
        row->vals[k] = v;
        store_exact(row->typed, k, g->dtype, v);
    }
    return 0;
}

static bool value_ok(double got, double want, double tol)
{
    if (tol == 0.0)
        return got == want;
    return fabs(got - want) <= tol;
}

#define CMP_CHUNK 1024

void td_row_compare(const struct td_row *row, int dtype, const void *buf, size_t buf_off,
                    size_t index0, size_t n, double tol, struct td_mismatch *mm)
{
    const uint8_t *b = buf;
    size_t es = td_size(dtype);
    double got[CMP_CHUNK];
    for (size_t done = 0, k = n ? index0 % row->len : 0; done < n; k = 0) {
        size_t seg = row->len - k < n - done ? row->len - k : n - done;
        const uint8_t *p = b + done * es;
        if (tol != 0.0 || memcmp(p, row->typed + k * es, seg * es) != 0) {
            for (size_t c = 0; c < seg; c += CMP_CHUNK) {
                size_t len = seg - c < CMP_CHUNK ? seg - c : CMP_CHUNK;
                td_load_range(p + c * es, len, dtype, got);
                for (size_t i = 0; i < len; i++) {
                    double want = row->vals[k + c + i];
                    if (value_ok(got[i], want, tol))
                        continue;
                    if (mm->count++ == 0) {
                        mm->first = buf_off + done + c + i;
                        mm->got = got[i];
                        mm->want = want;
                    }
                }
            }
        }
        done += seg;
    }
}

double td_tolerance(const struct td_gen *g, int op)
{
    int n = g->nranks;
    if (op != TD_AVG || !td_is_float(g->dtype) || (n & (n - 1)) == 0)
        return 0.0;
    const struct type_info *ti = &types[g->dtype];
    return (n + 2) * ldexp(1.0, -ti->mant_bits) * g->amp + ti->min_subnormal;
}

/* ---- self-check --------------------------------------------------------------------------- */

struct encoding {
    int dtype;
    double value;
    unsigned bits;
};

static const struct encoding encodings[] = {
    {ecclFloat16, 1.0, 0x3c00},      {ecclFloat16, -2.0, 0xc000},
    {ecclFloat16, 2048.0, 0x6800},   {ecclFloat16, 0.5, 0x3800},
    {ecclFloat16, 65504.0, 0x7bff},  {ecclFloat16, 0x1p-24, 0x0001},
    {ecclBfloat16, 1.0, 0x3f80},     {ecclBfloat16, -2.0, 0xc000},
    {ecclBfloat16, 256.0, 0x4380},   {ecclBfloat16, 0.5, 0x3f00},
    {ecclFloat8e4m3, 1.0, 0x38},     {ecclFloat8e4m3, -1.0, 0xb8},
    {ecclFloat8e4m3, 16.0, 0x58},    {ecclFloat8e4m3, 448.0, 0x7e},
    {ecclFloat8e4m3, 0x1p-6, 0x08},  {ecclFloat8e4m3, 0x1p-9, 0x01},
    {ecclFloat8e5m2, 1.0, 0x3c},     {ecclFloat8e5m2, 8.0, 0x48},
    {ecclFloat8e5m2, -0.5, 0xb8},    {ecclFloat8e5m2, 57344.0, 0x7b},
    {ecclFloat8e5m2, 0x1p-16, 0x01},
};

/* Rounding (to nearest, ties to even) and saturation. */
static const struct encoding roundings[] = {
    {ecclFloat16, 2049.0, 0x6800},  {ecclFloat16, 2051.0, 0x6802}, {ecclBfloat16, 257.0, 0x4380},
    {ecclBfloat16, 259.0, 0x4382},  {ecclFloat8e4m3, 17.0, 0x58},  {ecclFloat8e4m3, 19.0, 0x5a},
    {ecclFloat8e4m3, 1000.0, 0x7e}, {ecclFloat8e5m2, 1e6, 0x7b},   {ecclFloat8e5m2, 9.0, 0x48},
};

static unsigned raw_bits(const void *buf, int dtype)
{
    return td_size(dtype) == 1 ? *(const uint8_t *)buf : *(const uint16_t *)buf;
}

int td_selfcheck(void)
{
    int bad = 0;
    for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++) {
        const struct encoding *e = &encodings[i];
        uint16_t buf = 0;
        td_store(&buf, 0, e->dtype, e->value);
        if (raw_bits(&buf, e->dtype) != e->bits) {
            printf("td_selfcheck: %s store(%g) = 0x%x, expected 0x%x\n", td_type_name(e->dtype),
                   e->value, raw_bits(&buf, e->dtype), e->bits);
            bad++;
        }
        uint16_t enc = (uint16_t)e->bits;
        uint8_t enc8 = (uint8_t)e->bits;
        double got = td_load(td_size(e->dtype) == 1 ? (void *)&enc8 : (void *)&enc, 0, e->dtype);
        if (got != e->value) {
            printf("td_selfcheck: %s load(0x%x) = %g, expected %g\n", td_type_name(e->dtype),
                   e->bits, got, e->value);
            bad++;
        }
    }
    for (size_t i = 0; i < sizeof(roundings) / sizeof(roundings[0]); i++) {
        const struct encoding *e = &roundings[i];
        uint16_t buf = 0;
        td_store(&buf, 0, e->dtype, e->value);
        if (raw_bits(&buf, e->dtype) != e->bits) {
            printf("td_selfcheck: %s store(%g) = 0x%x, expected 0x%x (rounding)\n",
                   td_type_name(e->dtype), e->value, raw_bits(&buf, e->dtype), e->bits);
            bad++;
        }
    }
    /* Every generated value must survive a store and a load unchanged. */
    static const int ops[] = {TD_SUM, TD_PROD, TD_MAX, TD_PREMULSUM, TD_NO_OP};
    static const int ranks[] = {1, 2, 3, 8};
    for (int t = 0; t < ecclNumTypes; t++) {
        for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++) {
            for (size_t r = 0; r < sizeof(ranks) / sizeof(ranks[0]); r++) {
                struct td_gen g;
                if (td_gen_init(&g, t, ops[o], ranks[r], 42 + o, 2000) != 0) {
                    printf("td_selfcheck: out of memory\n");
                    return bad + 1;
                }
                if (g.kind == KIND_SUM && g.amp < 1.0) {
                    printf("td_selfcheck: %s %s ranks %d: no room for values\n", td_type_name(t),
                           td_op_name(ops[o]), ranks[r]);
                    bad++;
                }
                for (size_t i = 0; i < 2000; i++) {
                    uint64_t buf = 0;
                    double v = td_gen_value(&g, (int)(i % (size_t)ranks[r]), i);
                    td_store(&buf, 0, t, v);
                    double back = td_load(&buf, 0, t);
                    if (back != v) {
                        printf("td_selfcheck: %s %s: value %.17g comes back as %.17g\n",
                               td_type_name(t), td_op_name(ops[o]), v, back);
                        bad++;
                        break;
                    }
                }
                td_gen_fini(&g);
            }
        }
    }
    return bad;
}

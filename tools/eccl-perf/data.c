/*
 * data.c - eccl-perf's data: the types and ops it knows, their conversions, the input patterns
 * and the reference every rank checks its receive buffer against.
 *
 * The reference is computed here, independently of the library (no kernels/ code): every input
 * element is a pure function of (seed, rank, index), and the values are chosen so that any
 * reduction order gives one exact result:
 *  - data movement and integer sum/prod/max/min/premulsum: random bit patterns (integer
 *    arithmetic wraps, which is associative and commutative, so the result is exact);
 *  - integer avg: values in [0, TYPE_MAX / nranks], so the sum does not wrap;
 *  - floating sum/premulsum/avg: integers in [-m, m] where a rank contributes a nonzero value to
 *    an element only on a stride, so that every partial sum is an integer of magnitude at most
 *    2^precision (exactly representable, also after the 16- and 8-bit types' roundings);
 *  - floating prod: +-1 and +-2 with at most emax factors of 2 per element;
 *  - floating max/min: integers in [-m, m] with m <= 2^precision.
 * Only avg on floating types is not exact (eccl multiplies by 1/nranks, NCCL does too): it is
 * checked with a tolerance of (nranks + 3) * 2^-precision * sum|x| / nranks plus
 * (nranks + 1) subnormal steps.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tools/eccl-perf/perf.h"

static const struct perf_type types[ecclNumTypes] = {
    {ecclInt8, "int8", 1, 0, 1, 0, 0, 0, 0, 0, 0, 0.0},
    {ecclUint8, "uint8", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0.0},
    {ecclInt32, "int32", 4, 0, 1, 0, 0, 0, 0, 0, 0, 0.0},
    {ecclUint32, "uint32", 4, 0, 0, 0, 0, 0, 0, 0, 0, 0.0},
    {ecclInt64, "int64", 8, 0, 1, 0, 0, 0, 0, 0, 0, 0.0},
    {ecclUint64, "uint64", 8, 0, 0, 0, 0, 0, 0, 0, 0, 0.0},
    {ecclHalf, "half", 2, 1, 1, 11, 15, 5, 10, 15, 0, 0x1p-24},
    {ecclFloat, "float", 4, 1, 1, 24, 127, 8, 23, 127, 0, 0x1p-149},
    {ecclDouble, "double", 8, 1, 1, 53, 1023, 11, 52, 1023, 0, 0x1p-1074},
    {ecclBfloat16, "bfloat16", 2, 1, 1, 8, 127, 8, 7, 127, 0, 0x1p-133},
    {ecclFloat8e4m3, "f8e4m3", 1, 1, 1, 4, 8, 4, 3, 7, 1, 0x1p-9},
    {ecclFloat8e5m2, "f8e5m2", 1, 1, 1, 3, 15, 5, 2, 15, 0, 0x1p-16},
};

/* Other spellings -d accepts. */
static const struct {
    const char *alias;
    ecclDataType_t dtype;
} type_aliases[] = {
    {"char", ecclInt8},
    {"int", ecclInt32},
    {"float16", ecclHalf},
    {"fp16", ecclHalf},
    {"float32", ecclFloat},
    {"fp32", ecclFloat},
    {"float64", ecclDouble},
    {"fp64", ecclDouble},
    {"bf16", ecclBfloat16},
    {"fp8e4m3", ecclFloat8e4m3},
    {"float8e4m3", ecclFloat8e4m3},
    {"e4m3", ecclFloat8e4m3},
    {"fp8e5m2", ecclFloat8e5m2},
    {"float8e5m2", ecclFloat8e5m2},
    {"e5m2", ecclFloat8e5m2},
};

static const char *const op_names[PERF_OP_COUNT] = {"sum", "prod", "max", "min", "avg", "mulsum"};

const struct perf_type *perf_type_get(ecclDataType_t dtype)
{
    if ((int)dtype < 0 || dtype >= ecclNumTypes)
        return NULL;
    return &types[dtype];
}

const struct perf_type *perf_type_by_name(const char *name)
{
    for (int i = 0; i < ecclNumTypes; i++) {
        if (strcasecmp(name, types[i].name) == 0)
            return &types[i];
    }
    for (size_t i = 0; i < sizeof(type_aliases) / sizeof(type_aliases[0]); i++) {
        if (strcasecmp(name, type_aliases[i].alias) == 0)
            return &types[type_aliases[i].dtype];
    }
    return NULL;
}

const char *perf_op_name(int op)
{
    if (op < 0 || op >= PERF_OP_COUNT)
        return "none";
    return op_names[op];
}

int perf_op_by_name(const char *name)
{
    for (int i = 0; i < PERF_OP_COUNT; i++) {
        if (strcasecmp(name, op_names[i]) == 0)
            return i;
    }
    if (strcasecmp(name, "premulsum") == 0)
        return PERF_OP_PREMULSUM;
    return -2;
}

double perf_premul_scalar(int rank)
{
    return (rank & 1) ? 2.0 : 1.0;
}

static uint64_t type_mask(const struct perf_type *t)
{
    return t->size >= 8 ? ~0ULL : (1ULL << (8 * t->size)) - 1;
}

/* The value of an integer type's bits: sign-extended for signed types. */
static uint64_t int_canonical(const struct perf_type *t, uint64_t bits)
{
    bits &= type_mask(t);
    if (t->is_signed && t->size < 8 && (bits >> (8 * t->size - 1)) & 1)
        bits |= ~type_mask(t);
    return bits;
}

static uint64_t narrow_encode(const struct perf_type *t, double v)
{
    uint64_t emask = (1ULL << t->ebits) - 1;
    uint64_t mmask = (1ULL << t->mbits) - 1;
    uint64_t sign = signbit(v) ? 1ULL << (t->ebits + t->mbits) : 0;
    if (isnan(v))
        return t->fn ? sign | (emask << t->mbits) | mmask
                     : (emask << t->mbits) | (1ULL << (t->mbits - 1));
    double a = fabs(v);
    if (a == 0.0)
        return sign;
    uint64_t max_field = t->fn ? emask : emask - 1;
    uint64_t bits;
    int e;
    if (isinf(a)) {
        e = INT32_MAX / 2;
        bits = 0;
    } else {
        (void)frexp(a, &e);
        e -= 1; /* a = 1.f * 2^e */
        if (e < 1 - t->bias) {
            /* Subnormal; a rounding up to 2^mbits lands on the smallest normal by itself. */
            bits = (uint64_t)rint(ldexp(a, t->bias - 1 + t->mbits));
            return sign | bits;
        }
        uint64_t q = (uint64_t)rint(ldexp(a, t->mbits - e));
        if (q == (2ULL << t->mbits)) {
            q >>= 1;
            e += 1;
        }
        bits = ((uint64_t)(e + t->bias) << t->mbits) | (q & mmask);
    }
    if (e + t->bias > (int)max_field || (t->fn && bits == ((emask << t->mbits) | mmask))) {
        /* fp8 saturates to the largest finite value (as eccl and CUDA's __NV_SATFINITE do);
         * the 16-bit types overflow to infinity. */
        if (t->fn)
            return sign | (emask << t->mbits) | (mmask - 1);
        if (t->size == 1)
            return sign | ((emask - 1) << t->mbits) | mmask;
        return sign | (emask << t->mbits);
    }
    return sign | bits;
}

static double narrow_decode(const struct perf_type *t, uint64_t bits)
{
    uint64_t emask = (1ULL << t->ebits) - 1;
    uint64_t mmask = (1ULL << t->mbits) - 1;
    int neg = (int)((bits >> (t->ebits + t->mbits)) & 1);
    uint64_t e = (bits >> t->mbits) & emask;
    uint64_t f = bits & mmask;
    double v;
    if (t->fn && e == emask && f == mmask)
        v = NAN;
    else if (!t->fn && e == emask)
        v = f ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)f, 1 - t->bias - t->mbits);
    else
        v = ldexp((double)(f | (1ULL << t->mbits)), (int)e - t->bias - t->mbits);
    return neg ? -v : v;
}

uint64_t perf_type_encode(const struct perf_type *t, double v)
{
    if (!t->is_float)
        return (uint64_t)(int64_t)v & type_mask(t);
    if (t->dtype == ecclFloat) {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, sizeof(u));
        return u;
    }
    if (t->dtype == ecclDouble) {
        uint64_t u;
        memcpy(&u, &v, sizeof(u));
        return u;
    }
    return narrow_encode(t, v);
}

double perf_type_decode(const struct perf_type *t, uint64_t bits)
{
    if (!t->is_float) {
        uint64_t c = int_canonical(t, bits);
        return t->is_signed ? (double)(int64_t)c : (double)c;
    }
    if (t->dtype == ecclFloat) {
        uint32_t u = (uint32_t)bits;
        float f;
        memcpy(&f, &u, sizeof(f));
        return f;
    }
    if (t->dtype == ecclDouble) {
        double d;
        memcpy(&d, &bits, sizeof(d));
        return d;
    }
    return narrow_decode(t, bits);
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t rank_base(const struct perf_pattern *p, int rank)
{
    return mix64(p->seed * 0x2545f4914f6cdd1dULL + (uint64_t)rank * 0x9e3779b97f4a7c15ULL);
}

static uint64_t elem_hash(uint64_t base, size_t k)
{
    return mix64(base ^ ((uint64_t)k * 0xd6e8feb86659fd93ULL));
}

void perf_pattern_init(struct perf_pattern *p, const struct perf_type *type, int op, int nranks,
                       uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->type = type;
    p->op = op;
    p->nranks = nranks;
    p->seed = seed;
    p->stride = 1;
    p->m = 0;
    p->raw = op == PERF_OP_NONE || (!type->is_float && op != PERF_OP_AVG);
    if (p->raw)
        return;
    int64_t n = nranks;
    if (!type->is_float) {
        /* avg: non-negative values whose sum fits the type. */
        int bits = (int)(8 * type->size) - (type->is_signed ? 1 : 0);
        int64_t tmax = bits >= 63 ? INT64_MAX / 2 : (int64_t)((1ULL << bits) - 1);
        p->m = tmax / n;
        return;
    }
    int64_t exact = (int64_t)1 << type->prec; /* every integer up to this is representable */
    switch (op) {
    case PERF_OP_PROD: {
        int64_t kmax = n < type->emax ? n : type->emax;
        p->stride = (int)((n + kmax - 1) / kmax);
        p->m = 2;
        break;
    }
    case PERF_OP_MAX:
    case PERF_OP_MIN:
        p->m = exact;
        break;
    default: {                                          /* sum, avg, premulsum */
        int64_t unit = op == PERF_OP_PREMULSUM ? 2 : 1; /* the largest scalar */
        int64_t kmax = n < exact / unit ? n : exact / unit;
        p->stride = (int)((n + kmax - 1) / kmax);
        int64_t k = (n + p->stride - 1) / p->stride; /* contributors per element */
        p->m = exact / (unit * k);
        break;
    }
    }
}

/* The value of element k of rank's input (not for raw floating patterns): an integer type's
 * canonical value, or the integer a floating type holds. */
static int64_t input_value(const struct perf_pattern *p, uint64_t base, int rank, size_t k)
{
    uint64_t h = elem_hash(base, k);
    if (p->raw)
        return (int64_t)int_canonical(p->type, h);
    if (!p->type->is_float) /* avg */
        return (int64_t)(h % (uint64_t)(p->m + 1));
    int on_stride = (((size_t)rank + k) % (size_t)p->stride) == 0;
    if (p->op == PERF_OP_PROD) {
        int64_t v = on_stride ? 2 : 1;
        return (h >> 63) ? -v : v;
    }
    if (!on_stride)
        return 0;
    return (int64_t)(h % (uint64_t)(2 * p->m + 1)) - p->m;
}

static uint64_t input_bits(const struct perf_pattern *p, uint64_t base, int rank, size_t k)
{
    if (p->raw)
        return elem_hash(base, k) & type_mask(p->type);
    int64_t v = input_value(p, base, rank, k);
    if (!p->type->is_float)
        return (uint64_t)v & type_mask(p->type);
    return perf_type_encode(p->type, (double)v);
}

static void store_bits(void *dst, size_t i, size_t size, uint64_t bits)
{
    char *d = (char *)dst + i * size;
    switch (size) {
    case 1: {
        uint8_t v = (uint8_t)bits;
        memcpy(d, &v, 1);
        break;
    }
    case 2: {
        uint16_t v = (uint16_t)bits;
        memcpy(d, &v, 2);
        break;
    }
    case 4: {
        uint32_t v = (uint32_t)bits;
        memcpy(d, &v, 4);
        break;
    }
    default:
        memcpy(d, &bits, 8);
        break;
    }
}

static uint64_t load_bits(const void *src, size_t i, size_t size)
{
    const char *s = (const char *)src + i * size;
    switch (size) {
    case 1: {
        uint8_t v;
        memcpy(&v, s, 1);
        return v;
    }
    case 2: {
        uint16_t v;
        memcpy(&v, s, 2);
        return v;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, s, 4);
        return v;
    }
    default: {
        uint64_t v;
        memcpy(&v, s, 8);
        return v;
    }
    }
}

void perf_type_store(const struct perf_type *t, void *dst, uint64_t bits)
{
    store_bits(dst, 0, t->size, bits);
}

void perf_pattern_fill(const struct perf_pattern *p, int rank, void *dst, size_t first, size_t n)
{
    uint64_t base = rank_base(p, rank);
    for (size_t i = 0; i < n; i++)
        store_bits(dst, i, p->type->size, input_bits(p, base, rank, first + i));
}

/* The expected content of one element. */
struct expect {
    int exact_bits; /* compare bits; else compare the decoded value with val +- tol */
    uint64_t bits;
    double val;
    double tol;
};

static void expect_input(const struct perf_pattern *p, int rank, size_t k, struct expect *e)
{
    e->exact_bits = 1;
    e->bits = input_bits(p, rank_base(p, rank), rank, k);
}

/* Element k of the reduction of every rank's input. */
static void expect_reduce(const struct perf_pattern *p, size_t k, struct expect *e)
{
    const struct perf_type *t = p->type;
    int n = p->nranks;
    if (!t->is_float) {
        uint64_t acc = 0;
        for (int r = 0; r < n; r++) {
            uint64_t v = (uint64_t)input_value(p, rank_base(p, r), r, k);
            if (r == 0 && p->op != PERF_OP_PREMULSUM) {
                acc = v;
                continue;
            }
            switch (p->op) {
            case PERF_OP_PROD:
                acc *= v;
                break;
            case PERF_OP_MAX:
                if (t->is_signed ? (int64_t)v > (int64_t)acc : v > acc)
                    acc = v;
                break;
            case PERF_OP_MIN:
                if (t->is_signed ? (int64_t)v < (int64_t)acc : v < acc)
                    acc = v;
                break;
            case PERF_OP_PREMULSUM:
                acc += v * (uint64_t)perf_premul_scalar(r);
                break;
            default: /* sum, avg */
                acc += v;
                break;
            }
        }
        if (p->op == PERF_OP_AVG)
            acc /= (uint64_t)n; /* non-negative, no wrap: truncation is floor */
        e->exact_bits = 1;
        e->bits = acc & type_mask(t);
        return;
    }
    double acc = 0.0, abs_sum = 0.0;
    for (int r = 0; r < n; r++) {
        double v = (double)input_value(p, rank_base(p, r), r, k);
        if (p->op == PERF_OP_PREMULSUM)
            v *= perf_premul_scalar(r);
        abs_sum += fabs(v);
        if (r == 0) {
            acc = v;
            continue;
        }
        switch (p->op) {
        case PERF_OP_PROD:
            acc *= v;
            break;
        case PERF_OP_MAX:
            acc = v > acc ? v : acc;
            break;
        case PERF_OP_MIN:
            acc = v < acc ? v : acc;
            break;
        default:
            acc += v;
            break;
        }
    }
    e->exact_bits = 0;
    e->val = acc;
    e->tol = 0.0;
    if (p->op == PERF_OP_AVG) {
        e->val = acc / n;
        e->tol = (n + 3) * ldexp(1.0, -t->prec) * (abs_sum / n) + (n + 1) * t->sub_min;
    }
}

static void expect_elem(const struct perf_check *c, size_t j, struct expect *e)
{
    const struct perf_pattern *p = &c->pattern;
    int n = p->nranks;
    size_t cnt = c->counts.param_count;
    switch (c->coll->id) {
    case PERF_ALLREDUCE:
        expect_reduce(p, j, e);
        break;
    case PERF_REDUCE:
        if (c->rank == c->root)
            expect_reduce(p, j, e);
        else if (c->in_place) /* recvbuff is this rank's own (unchanged) input */
            expect_input(p, c->rank, j, e);
        else {
            e->exact_bits = 1;
            e->bits = 0;
        }
        break;
    case PERF_BROADCAST:
        expect_input(p, c->root, j, e);
        break;
    case PERF_ALLGATHER:
        expect_input(p, (int)(j / cnt), j % cnt, e);
        break;
    case PERF_REDUCESCATTER:
        expect_reduce(p, (size_t)c->rank * cnt + j, e);
        break;
    case PERF_ALLTOALL:
        expect_input(p, (int)(j / cnt), (size_t)c->rank * cnt + j % cnt, e);
        break;
    case PERF_SENDRECV:
        expect_input(p, (c->rank - 1 + n) % n, j, e);
        break;
    case PERF_GATHER:
        if (c->rank == c->root)
            expect_input(p, (int)(j / cnt), j % cnt, e);
        else if (c->in_place && j / cnt == (size_t)c->rank)
            expect_input(p, c->rank, j % cnt, e);
        else {
            e->exact_bits = 1;
            e->bits = 0;
        }
        break;
    case PERF_SCATTER:
        expect_input(p, c->root, (size_t)c->rank * cnt + j, e);
        break;
    default:
        e->exact_bits = 1;
        e->bits = 0;
        break;
    }
}

#define PERF_MAX_REPORTED 5

int64_t perf_check_recv(const struct perf_check *c, const void *recv)
{
    const struct perf_type *t = c->pattern.type;
    int64_t wrong = 0;
    for (size_t j = 0; j < c->counts.recv_count; j++) {
        struct expect e;
        expect_elem(c, j, &e);
        uint64_t got = load_bits(recv, j, t->size);
        int ok;
        if (e.exact_bits) {
            ok = got == e.bits;
        } else {
            double g = perf_type_decode(t, got);
            ok = e.tol == 0.0 ? g == e.val : fabs(g - e.val) <= e.tol;
        }
        if (ok)
            continue;
        if (wrong < PERF_MAX_REPORTED) {
            if (e.exact_bits)
                fprintf(stderr,
                        "eccl-perf: rank %d: %s %s %s root %d %s count %zu: element %zu: "
                        "expected 0x%llx, got 0x%llx\n",
                        c->rank, c->coll->name, t->name, perf_op_name(c->pattern.op), c->root,
                        c->in_place ? "in-place" : "out-of-place", c->counts.param_count, j,
                        (unsigned long long)e.bits, (unsigned long long)got);
            else {
                char tol[40] = "";
                if (e.tol > 0)
                    snprintf(tol, sizeof(tol), " +- %.3g", e.tol);
                fprintf(stderr,
                        "eccl-perf: rank %d: %s %s %s root %d %s count %zu: element %zu: "
                        "expected %.17g%s, got %.17g (0x%llx)\n",
                        c->rank, c->coll->name, t->name, perf_op_name(c->pattern.op), c->root,
                        c->in_place ? "in-place" : "out-of-place", c->counts.param_count, j, e.val,
                        tol, perf_type_decode(t, got), (unsigned long long)got);
            }
        }
        wrong++;
    }
    return wrong;
}

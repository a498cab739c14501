/*
 * work.h - the work descriptor: what the planner writes and an executor (a CUDA kernel or the
 * host executor) runs.
 *
 * Plain, fixed-size (64 bytes), no pointers to host structures: a CUDA kernel can read the same
 * bytes from the work FIFO unchanged. Each descriptor is one channel's share of one collective or
 * point-to-point operation: the channel moves elements [chan_offset, chan_offset + chan_count)
 * of the operation (for AllGather and ReduceScatter, of each rank's block; for Send/Recv, of the
 * message). Counts are in elements of `dtype`.
 */
#ifndef ECCL_KERNELS_WORK_H
#define ECCL_KERNELS_WORK_H

#include <stdint.h>

enum eccl_func {
    ECCL_FUNC_BROADCAST = 0,
    ECCL_FUNC_REDUCE = 1,
    ECCL_FUNC_ALLGATHER = 2,
    ECCL_FUNC_REDUCESCATTER = 3,
    ECCL_FUNC_ALLREDUCE = 4,
    ECCL_FUNC_SEND = 5,
    ECCL_FUNC_RECV = 6,
    ECCL_FUNC_COUNT = 7,
};

enum eccl_algo {
    ECCL_ALGO_RING = 0,
    ECCL_ALGO_TREE = 1,
    ECCL_ALGO_COUNT = 2,
};

enum eccl_proto {
    ECCL_PROTO_SIMPLE = 0,
    ECCL_PROTO_LL = 1,
    ECCL_PROTO_LL128 = 2,
    ECCL_PROTO_COUNT = 3,
};

/* The reduction an executor applies. ecclAvg becomes PREMULSUM (floating types, scalar 1/n) or
 * SUMPOSTDIV (integer types, scalar n); user PreMulSum ops become PREMULSUM. */
enum eccl_redop_kind {
    ECCL_RED_SUM = 0,
    ECCL_RED_PROD = 1,
    ECCL_RED_MAX = 2,
    ECCL_RED_MIN = 3,
    ECCL_RED_PREMULSUM = 4,
    ECCL_RED_SUMPOSTDIV = 5,
    ECCL_RED_COUNT = 6,
};

#define ECCL_WORK_FLAG_INPLACE 0x1 /* sendbuff and recvbuff alias as NCCL's in-place rule says */
#define ECCL_WORK_FLAG_LAST    0x2 /* the last descriptor of its operation on this channel */
/* PREMULSUM with a device-resident scalar (ecclScalarDevice): `scalar` is the address of the
 * multiplier, one element of the work's type, read when the work runs. */
#define ECCL_WORK_FLAG_SCALAR_PTR 0x4
/* A SEND whose buffer is a registration the receiver mapped (core/reg.c): the step says where
 * the message is instead of carrying it. `scalar` is the receiver's table slot << 32 | the
 * registration's key, `recvbuff` the buffer's offset in the registration's allocation. */
#define ECCL_WORK_FLAG_ZC 0x8

struct eccl_work {
    uint8_t func;      /* enum eccl_func */
    uint8_t algo;      /* enum eccl_algo */
    uint8_t proto;     /* enum eccl_proto */
    uint8_t dtype;     /* ecclDataType_t */
    uint8_t redop;     /* enum eccl_redop_kind */
    uint8_t channel;   /* channel index */
    uint16_t flags;    /* ECCL_WORK_FLAG_* */
    int32_t root;      /* root rank, or the peer for SEND/RECV */
    uint32_t op_index; /* position of the operation in its plan */
    uint64_t count;    /* elements of the whole operation (per rank block for AG/RS) */
    uint64_t chan_offset;
    uint64_t chan_count;
    uint64_t sendbuff; /* addresses in the executor's address space */
    uint64_t recvbuff;
    /* PREMULSUM: the scalar, as a double for floating types, an int64 for integer types;
     * SUMPOSTDIV: the divisor. */
    uint64_t scalar;
};

#ifdef __cplusplus
static_assert(sizeof(struct eccl_work) == 64, "work descriptors are 64 bytes");
#else
_Static_assert(sizeof(struct eccl_work) == 64, "work descriptors are 64 bytes");
#endif

#endif

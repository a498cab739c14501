/*
 * eccl.h - the public API of eccl, the Elastic Collective Communication Library.
 *
 * The functions, enum values and struct layouts are those of NCCL 2.28's nccl.h with the
 * "eccl" prefix, so that include/nccl.h and libnccl.so.2 can be a thin alias layer. What eccl
 * adds is appended after NCCL's fields (ecclConfig_t) or declared in eccl_elastic.h.
 *
 * Communicators are bound either to a CUDA device or to the host (ECCL_DEVICE_HOST). On a host
 * communicator buffers are host memory, the stream argument is ignored, and a call returns when
 * its work (or, inside ecclGroupStart/End, the group's work) is done.
 */
#ifndef ECCL_H
#define ECCL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ECCL_API __attribute__((visibility("default")))
#else
#define ECCL_API
#endif

/* The NCCL API level eccl implements, and eccl's own release. */
#define ECCL_MAJOR         2
#define ECCL_MINOR         28
#define ECCL_PATCH         9
#define ECCL_SUFFIX        ""
#define ECCL_VERSION(X, Y, Z) (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))
#define ECCL_VERSION_CODE  ECCL_VERSION(ECCL_MAJOR, ECCL_MINOR, ECCL_PATCH)
#define ECCL_RELEASE       "0.1.0"

/* The stream type of the CUDA runtime; host communicators ignore it. */
#ifndef ECCL_NO_CUDA_TYPES
struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;
#endif

typedef struct ecclComm *ecclComm_t;
typedef struct ecclWindow_vidmem *ecclWindow_t;
#define ECCL_COMM_NULL   NULL
#define ECCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[ECCL_UNIQUE_ID_BYTES];
} ecclUniqueId;

typedef enum {
    ecclSuccess = 0,
    ecclUnhandledCudaError = 1,
    ecclSystemError = 2,
    ecclInternalError = 3,
    ecclInvalidArgument = 4,
    ecclInvalidUsage = 5,
    ecclRemoteError = 6,
    ecclInProgress = 7,
    ecclNumResults = 8
} ecclResult_t;

#define ECCL_CONFIG_UNDEF_INT INT_MIN
#define ECCL_CONFIG_UNDEF_PTR NULL
#define ECCL_SPLIT_NOCOLOR    -1
#define ECCL_UNDEF_FLOAT      -1.0f

#define ECCL_WIN_DEFAULT        0x00
#define ECCL_WIN_COLL_SYMMETRIC 0x01

#define ECCL_CTA_POLICY_DEFAULT    0x00
#define ECCL_CTA_POLICY_EFFICIENCY 0x01
#define ECCL_CTA_POLICY_ZERO       0x02

#define ECCL_SHRINK_DEFAULT 0x00
#define ECCL_SHRINK_ABORT   0x01

/* eccl's own config field deviceKind. */
#define ECCL_DEVICE_AUTO 0 /* a CUDA device when one is present, else the host */
#define ECCL_DEVICE_CUDA 1
#define ECCL_DEVICE_HOST 2

#define ECCL_CONFIG_MAGIC 0xcafebeef

/*
 * Communicator configuration. NCCL 2.28's fields come first, in its order; eccl's own fields
 * follow. Init functions read only the fields that the caller's `size` covers, so structs built
 * against older or newer headers are accepted; a field left UNDEF takes its default.
 */
typedef struct ecclConfig_v22800 {
    size_t size;
    unsigned int magic;
    unsigned int version;
    int blocking;
    int cgaClusterSize;
    int minCTAs;
    int maxCTAs;
    const char *netName;
    int splitShare;
    int trafficClass;
    const char *commName;
    int collnetEnable;
    int CTAPolicy;
    int shrinkShare;
    int nvlsCTAs;
    int nChannelsPerNetPeer;
    int nvlinkCentricSched;
    /* eccl's own fields. */
    int deviceKind;  /* ECCL_DEVICE_AUTO, ECCL_DEVICE_CUDA or ECCL_DEVICE_HOST */
    int nChannels;   /* host executor channels; UNDEF: ECCL_NCHANNELS or automatic */
    int timeoutMs;   /* progress watchdog; UNDEF: ECCL_TIMEOUT_MS */
} ecclConfig_t;

#define ECCL_CONFIG_INITIALIZER                                                                    \
    {                                                                                              \
        sizeof(ecclConfig_t),                 /* size */                                           \
            ECCL_CONFIG_MAGIC,                /* magic */                                          \
            ECCL_VERSION(ECCL_MAJOR, ECCL_MINOR, ECCL_PATCH), /* version */                       \
            ECCL_CONFIG_UNDEF_INT,            /* blocking */                                       \
            ECCL_CONFIG_UNDEF_INT,            /* cgaClusterSize */                                 \
            ECCL_CONFIG_UNDEF_INT,            /* minCTAs */                                        \
            ECCL_CONFIG_UNDEF_INT,            /* maxCTAs */                                        \
            ECCL_CONFIG_UNDEF_PTR,            /* netName */                                        \
            ECCL_CONFIG_UNDEF_INT,            /* splitShare */                                     \
            ECCL_CONFIG_UNDEF_INT,            /* trafficClass */                                   \
            ECCL_CONFIG_UNDEF_PTR,            /* commName */                                       \
            ECCL_CONFIG_UNDEF_INT,            /* collnetEnable */                                  \
            ECCL_CONFIG_UNDEF_INT,            /* CTAPolicy */                                      \
            ECCL_CONFIG_UNDEF_INT,            /* shrinkShare */                                    \
            ECCL_CONFIG_UNDEF_INT,            /* nvlsCTAs */                                       \
            ECCL_CONFIG_UNDEF_INT,            /* nChannelsPerNetPeer */                            \
            ECCL_CONFIG_UNDEF_INT,            /* nvlinkCentricSched */                             \
            ECCL_CONFIG_UNDEF_INT,            /* deviceKind */                                     \
            ECCL_CONFIG_UNDEF_INT,            /* nChannels */                                      \
            ECCL_CONFIG_UNDEF_INT,            /* timeoutMs */                                      \
    }

/* Simulation of a group's cost (ecclGroupSimulateEnd). */
typedef struct ecclSimInfo_v22200 {
    size_t size;
    unsigned int magic;
    unsigned int version;
    float estimatedTime;
} ecclSimInfo_t;

#define ECCL_SIM_INFO_INITIALIZER                                                                  \
    {                                                                                              \
        sizeof(ecclSimInfo_t), 0x74685283, ECCL_VERSION(ECCL_MAJOR, ECCL_MINOR, ECCL_PATCH),       \
            ECCL_UNDEF_FLOAT                                                                       \
    }

typedef enum {
    ecclNumOps_dummy = 5
} ecclRedOp_dummy_t;
typedef enum {
    ecclSum = 0,
    ecclProd = 1,
    ecclMax = 2,
    ecclMin = 3,
    ecclAvg = 4,
    ecclNumOps = 5,
    /* Ops made by ecclRedOpCreatePreMulSum take values from ecclNumOps up; the next line keeps
     * the enum the size of an int. */
    ecclMaxRedOp = 0x7fffffff >> (32 - 8 * sizeof(ecclRedOp_dummy_t))
} ecclRedOp_t;

typedef enum {
    ecclInt8 = 0,
    ecclChar = 0,
    ecclUint8 = 1,
    ecclInt32 = 2,
    ecclInt = 2,
    ecclUint32 = 3,
    ecclInt64 = 4,
    ecclUint64 = 5,
    ecclFloat16 = 6,
    ecclHalf = 6,
    ecclFloat32 = 7,
    ecclFloat = 7,
    ecclFloat64 = 8,
    ecclDouble = 8,
    ecclBfloat16 = 9,
    ecclFloat8e4m3 = 10,
    ecclFloat8e5m2 = 11,
    ecclNumTypes = 12
} ecclDataType_t;

typedef enum {
    ecclScalarDevice = 0,
    ecclScalarHostImmediate = 1
} ecclScalarResidence_t;

/* Memory. ecclMemAlloc: `size` bytes (rounded up to the allocation granularity) of the current
 * CUDA device, a cuMem allocation exportable as a POSIX file descriptor (cudaMalloc memory with
 * ECCL_CUMEM_ENABLE=0); ecclInvalidUsage without a device. ecclMemFree waits for the device's
 * work, as cudaFree does, then frees; ecclInvalidArgument for a pointer that did not come from
 * ecclMemAlloc or was freed already. */
ECCL_API ecclResult_t ecclMemAlloc(void **ptr, size_t size);
ECCL_API ecclResult_t ecclMemFree(void *ptr);

/* Version and identity. */
ECCL_API ecclResult_t ecclGetVersion(int *version);
ECCL_API ecclResult_t ecclGetUniqueId(ecclUniqueId *uniqueId);

/* Communicator life cycle. */
ECCL_API ecclResult_t ecclCommInitRankConfig(ecclComm_t *comm, int nranks, ecclUniqueId commId,
                                             int rank, ecclConfig_t *config);
ECCL_API ecclResult_t ecclCommInitRank(ecclComm_t *comm, int nranks, ecclUniqueId commId,
                                       int rank);
ECCL_API ecclResult_t ecclCommInitAll(ecclComm_t *comm, int ndev, const int *devlist);
ECCL_API ecclResult_t ecclCommInitRankScalable(ecclComm_t *newcomm, int nranks, int myrank,
                                               int nId, ecclUniqueId *commIds,
                                               ecclConfig_t *config);
ECCL_API ecclResult_t ecclCommFinalize(ecclComm_t comm);
ECCL_API ecclResult_t ecclCommDestroy(ecclComm_t comm);
ECCL_API ecclResult_t ecclCommAbort(ecclComm_t comm);
ECCL_API ecclResult_t ecclCommRevoke(ecclComm_t comm, int revokeFlags);
ECCL_API ecclResult_t ecclCommShrink(ecclComm_t comm, int *excludeRanksList,
                                     int excludeRanksCount, ecclComm_t *newcomm,
                                     ecclConfig_t *config, int shrinkFlags);
ECCL_API ecclResult_t ecclCommSplit(ecclComm_t comm, int color, int key, ecclComm_t *newcomm,
                                    ecclConfig_t *config);

/* Errors. */
ECCL_API const char *ecclGetErrorString(ecclResult_t result);
ECCL_API const char *ecclGetLastError(ecclComm_t comm);
ECCL_API ecclResult_t ecclCommGetAsyncError(ecclComm_t comm, ecclResult_t *asyncError);

/* Communicator queries. */
ECCL_API ecclResult_t ecclCommCount(const ecclComm_t comm, int *count);
ECCL_API ecclResult_t ecclCommCuDevice(const ecclComm_t comm, int *device);
ECCL_API ecclResult_t ecclCommUserRank(const ecclComm_t comm, int *rank);

/* Buffer registration. */
ECCL_API ecclResult_t ecclCommRegister(const ecclComm_t comm, void *buff, size_t size,
                                       void **handle);
ECCL_API ecclResult_t ecclCommDeregister(const ecclComm_t comm, void *handle);
ECCL_API ecclResult_t ecclCommWindowRegister(ecclComm_t comm, void *buff, size_t size,
                                             ecclWindow_t *win, int winFlags);
ECCL_API ecclResult_t ecclCommWindowDeregister(ecclComm_t comm, ecclWindow_t win);

/* Reduction operators. */
ECCL_API ecclResult_t ecclRedOpCreatePreMulSum(ecclRedOp_t *op, void *scalar,
                                               ecclDataType_t datatype,
                                               ecclScalarResidence_t residence, ecclComm_t comm);
ECCL_API ecclResult_t ecclRedOpDestroy(ecclRedOp_t op, ecclComm_t comm);

/* Collectives. */
ECCL_API ecclResult_t ecclReduce(const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t datatype, ecclRedOp_t op, int root,
                                 ecclComm_t comm, cudaStream_t stream);
ECCL_API ecclResult_t ecclBcast(void *buff, size_t count, ecclDataType_t datatype, int root,
                                ecclComm_t comm, cudaStream_t stream);
ECCL_API ecclResult_t ecclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                                    ecclDataType_t datatype, int root, ecclComm_t comm,
                                    cudaStream_t stream);
ECCL_API ecclResult_t ecclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                    ecclDataType_t datatype, ecclRedOp_t op, ecclComm_t comm,
                                    cudaStream_t stream);
ECCL_API ecclResult_t ecclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                                        ecclDataType_t datatype, ecclRedOp_t op, ecclComm_t comm,
                                        cudaStream_t stream);
ECCL_API ecclResult_t ecclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                                    ecclDataType_t datatype, ecclComm_t comm,
                                    cudaStream_t stream);
ECCL_API ecclResult_t ecclAlltoAll(const void *sendbuff, void *recvbuff, size_t count,
                                   ecclDataType_t datatype, ecclComm_t comm, cudaStream_t stream);
ECCL_API ecclResult_t ecclGather(const void *sendbuff, void *recvbuff, size_t count,
                                 ecclDataType_t datatype, int root, ecclComm_t comm,
                                 cudaStream_t stream);
ECCL_API ecclResult_t ecclScatter(const void *sendbuff, void *recvbuff, size_t count,
                                  ecclDataType_t datatype, int root, ecclComm_t comm,
                                  cudaStream_t stream);

/* Point to point. */
ECCL_API ecclResult_t ecclSend(const void *sendbuff, size_t count, ecclDataType_t datatype,
                               int peer, ecclComm_t comm, cudaStream_t stream);
ECCL_API ecclResult_t ecclRecv(void *recvbuff, size_t count, ecclDataType_t datatype, int peer,
                               ecclComm_t comm, cudaStream_t stream);

/* Groups. */
ECCL_API ecclResult_t ecclGroupStart(void);
ECCL_API ecclResult_t ecclGroupEnd(void);
ECCL_API ecclResult_t ecclGroupSimulateEnd(ecclSimInfo_t *simInfo);

#ifdef __cplusplus
}
#endif

#endif /* ECCL_H */

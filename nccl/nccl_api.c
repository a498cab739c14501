/*
 * nccl_api.c - the NCCL 2.28 API of the drop-in libnccl.so.2, each function mapped onto the eccl
 * function of the same name (include/eccl.h), plus NCCL's pnccl* profiling aliases.
 *
 * Handles, enums and structs are layout-compatible (checked below at compile time), so most
 * functions are a cast and a call. Two things are translated: ncclConfig_t, field by field up to
 * the caller's `size` (a struct from an older NCCL header is shorter, one from a newer header
 * longer, and ecclConfig_t has eccl's own fields after NCCL's), and, with ECCL_ELASTIC=1, the
 * init functions, which take the job's communicators from the elastic membership
 * (nccl_elastic.c). The host side of NCCL's device API is answered here: team queries for a
 * communicator without load/store-accessible peers, and ncclInvalidUsage with a WARN for the
 * calls that would set up device-initiated communication, which eccl does not have.
 *
 * Only nccl* and pnccl* symbols leave the library (nccl/libnccl.map).
 */
#include "nccl.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/check.h"
#include "common/log.h"
#include "eccl.h"
#include "nccl/nccl_int.h"

#define NCCL_EXPORT __attribute__((visibility("default")))
/* pnccl<fn> is another name of ncclfn, as in NCCL (profilers interpose on the nccl* names). */
#define PNCCL(fn) extern __typeof__(fn) p##fn __attribute__((alias(#fn), visibility("default")))

/* --- the layouts are NCCL's ------------------------------------------------------------------ */

_Static_assert(sizeof(ncclUniqueId) == sizeof(ecclUniqueId), "unique id size");
_Static_assert(sizeof(ncclResult_t) == sizeof(ecclResult_t), "result size");
_Static_assert(sizeof(ncclRedOp_t) == sizeof(ecclRedOp_t), "redop size");
_Static_assert(sizeof(ncclDataType_t) == sizeof(ecclDataType_t), "datatype size");
_Static_assert((int)ncclRemoteError == (int)ecclRemoteError &&
                   (int)ncclInProgress == (int)ecclInProgress &&
                   (int)ncclNumResults == (int)ecclNumResults,
               "result values");
_Static_assert((int)ncclAvg == (int)ecclAvg && (int)ncclNumOps == (int)ecclNumOps, "op values");
_Static_assert((int)ncclBfloat16 == (int)ecclBfloat16 &&
                   (int)ncclFloat8e5m2 == (int)ecclFloat8e5m2 &&
                   (int)ncclNumTypes == (int)ecclNumTypes,
               "datatype values");
_Static_assert((int)ncclScalarHostImmediate == (int)ecclScalarHostImmediate, "residence");
_Static_assert(sizeof(ncclSimInfo_t) == sizeof(ecclSimInfo_t) &&
                   offsetof(ncclSimInfo_t, estimatedTime) == offsetof(ecclSimInfo_t, estimatedTime),
               "sim info layout");
/* ecclConfig_t starts with NCCL 2.28's fields at NCCL's offsets. */
#define SAME_OFFSET(f) _Static_assert(offsetof(ncclConfig_t, f) == offsetof(ecclConfig_t, f), #f)
SAME_OFFSET(size);
SAME_OFFSET(magic);
SAME_OFFSET(version);
SAME_OFFSET(blocking);
SAME_OFFSET(cgaClusterSize);
SAME_OFFSET(minCTAs);
SAME_OFFSET(maxCTAs);
SAME_OFFSET(netName);
SAME_OFFSET(splitShare);
SAME_OFFSET(trafficClass);
SAME_OFFSET(commName);
SAME_OFFSET(collnetEnable);
SAME_OFFSET(CTAPolicy);
SAME_OFFSET(shrinkShare);
SAME_OFFSET(nvlsCTAs);
SAME_OFFSET(nChannelsPerNetPeer);
SAME_OFFSET(nvlinkCentricSched);
_Static_assert(sizeof(ncclConfig_t) == 80, "ncclConfig_t of NCCL 2.28 is 80 bytes");

#define NCCL_CONFIG_MAGIC 0xcafebeefu

/* Reads the fields of an ncclConfig_t that its size covers into an ecclConfig_t whose other
 * fields are UNDEF (defaults). */
static ecclResult_t config_from_nccl(const ncclConfig_t *in, ecclConfig_t *out, const char *fn)
{
    ecclConfig_t def = ECCL_CONFIG_INITIALIZER;
    *out = def;
    if (in->magic != NCCL_CONFIG_MAGIC) {
        WARN("%s: config magic 0x%x is not 0x%x: initialise the config with "
             "NCCL_CONFIG_INITIALIZER",
             fn, in->magic, NCCL_CONFIG_MAGIC);
        return ecclInvalidArgument;
    }
    size_t min = offsetof(ncclConfig_t, blocking) + sizeof(in->blocking);
    if (in->size < min || in->size > (1u << 20)) {
        WARN("%s: config size %zu is not the size of an ncclConfig_t (NCCL 2.28's has %zu "
             "bytes): initialise the config with NCCL_CONFIG_INITIALIZER",
             fn, in->size, sizeof(ncclConfig_t));
        return ecclInvalidArgument;
    }
#define COPY(f)                                                    \
    do {                                                           \
        if (in->size >= offsetof(ncclConfig_t, f) + sizeof(in->f)) \
            out->f = in->f;                                        \
    } while (0)
    COPY(blocking);
    COPY(cgaClusterSize);
    COPY(minCTAs);
    COPY(maxCTAs);
    COPY(netName);
    COPY(splitShare);
    COPY(trafficClass);
    COPY(commName);
    COPY(collnetEnable);
    COPY(CTAPolicy);
    COPY(shrinkShare);
    COPY(nvlsCTAs);
    COPY(nChannelsPerNetPeer);
    COPY(nvlinkCentricSched);
#undef COPY
    out->version = in->version;
    static _Atomic int told;
    if (in->size > sizeof(ncclConfig_t) && !atomic_exchange(&told, 1))
        INFO(ECCL_LOG_ENV,
             "%s: config of %zu bytes (header version %u): the fields after NCCL 2.28's %zu "
             "bytes are ignored",
             fn, in->size, in->version, sizeof(ncclConfig_t));
    if (out->blocking != ECCL_CONFIG_UNDEF_INT)
        INFO(ECCL_LOG_ENV,
             "Comm config Blocking set to %d (eccl's inits return when the communicator is "
             "ready, which non-blocking callers accept)",
             out->blocking);
    return ecclSuccess;
}

/* config may be NULL: *out is then NULL (eccl's defaults, or the parent's config). */
static ecclResult_t config_get(const ncclConfig_t *config, ecclConfig_t *buf, ecclConfig_t **out,
                               const char *fn)
{
    *out = NULL;
    if (!config)
        return ecclSuccess;
    ECCL_TRY(config_from_nccl(config, buf, fn));
    *out = buf;
    return ecclSuccess;
}

/* --- memory, version, ids -------------------------------------------------------------------- */

NCCL_EXPORT ncclResult_t ncclMemAlloc(void **ptr, size_t size)
{
    return (ncclResult_t)ecclMemAlloc(ptr, size);
}
PNCCL(ncclMemAlloc);

NCCL_EXPORT ncclResult_t ncclMemFree(void *ptr)
{
    return (ncclResult_t)ecclMemFree(ptr);
}
PNCCL(ncclMemFree);

NCCL_EXPORT ncclResult_t ncclGetVersion(int *version)
{
    if (!version) {
        WARN("ncclGetVersion: version is NULL");
        return ncclInvalidArgument;
    }
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}
PNCCL(ncclGetVersion);

NCCL_EXPORT ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId)
{
    nccl_env_log_once();
    return (ncclResult_t)ecclGetUniqueId((ecclUniqueId *)(void *)uniqueId);
}
PNCCL(ncclGetUniqueId);

/* --- communicator life cycle ----------------------------------------------------------------- */

/* Every init of one communicator from a unique id ends here; with ECCL_ELASTIC=1 a
 * communicator of the job's size comes from the membership instead (the id is not used). */
static ecclResult_t init_rank(ncclComm_t *comm, int nranks, const ncclUniqueId *id, int rank,
                              ecclConfig_t *cfg, const char *fn)
{
    nccl_env_log_once();
    if (nccl_el_enabled() && comm && nranks > 0 && rank >= 0 && rank < nranks) {
        bool handled = false;
        ecclComm_t c = NULL;
        ecclResult_t res = nccl_el_init(&c, nranks, rank, cfg, &handled);
        if (handled) {
            if (res == ecclSuccess)
                *comm = (ncclComm_t)c;
            return res;
        }
    }
    if (!id) {
        WARN("%s: commId is NULL", fn);
        return ecclInvalidArgument;
    }
    ecclUniqueId eid;
    memcpy(&eid, id, sizeof(eid));
    /* The output pointer goes through as it is: inside a group eccl fills it at ncclGroupEnd. */
    return ecclCommInitRankConfig((ecclComm_t *)(void *)comm, nranks, eid, rank, cfg);
}

NCCL_EXPORT ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId,
                                                int rank, ncclConfig_t *config)
{
    ecclConfig_t buf, *cfg;
    ecclResult_t res = config_get(config, &buf, &cfg, "ncclCommInitRankConfig");
    if (res == ecclSuccess)
        res = init_rank(comm, nranks, &commId, rank, cfg, "ncclCommInitRankConfig");
    return (ncclResult_t)res;
}
PNCCL(ncclCommInitRankConfig);

NCCL_EXPORT ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId,
                                          int rank)
{
    return (ncclResult_t)init_rank(comm, nranks, &commId, rank, NULL, "ncclCommInitRank");
}
PNCCL(ncclCommInitRank);

NCCL_EXPORT ncclResult_t ncclCommInitRankScalable(ncclComm_t *newcomm, int nranks, int myrank,
                                                  int nId, ncclUniqueId *commIds,
                                                  ncclConfig_t *config)
{
    ecclConfig_t buf, *cfg;
    ecclResult_t res = config_get(config, &buf, &cfg, "ncclCommInitRankScalable");
    if (res != ecclSuccess)
        return (ncclResult_t)res;
    if (nId <= 0 || nId > nranks || !commIds) {
        WARN("ncclCommInitRankScalable: nId %d out of 1..%d, or commIds NULL", nId, nranks);
        return ncclInvalidArgument;
    }
    if (nccl_el_enabled())
        return (ncclResult_t)init_rank(newcomm, nranks, &commIds[0], myrank, cfg,
                                       "ncclCommInitRankScalable");
    nccl_env_log_once();
    return (ncclResult_t)ecclCommInitRankScalable((ecclComm_t *)(void *)newcomm, nranks, myrank,
                                                  nId, (ecclUniqueId *)(void *)commIds, cfg);
}
PNCCL(ncclCommInitRankScalable);

NCCL_EXPORT ncclResult_t ncclCommInitAll(ncclComm_t *comm, int ndev, const int *devlist)
{
    nccl_env_log_once();
    return (ncclResult_t)ecclCommInitAll((ecclComm_t *)(void *)comm, ndev, devlist);
}
PNCCL(ncclCommInitAll);

NCCL_EXPORT ncclResult_t ncclCommFinalize(ncclComm_t comm)
{
    return (ncclResult_t)ecclCommFinalize((ecclComm_t)comm);
}
PNCCL(ncclCommFinalize);

NCCL_EXPORT ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    nccl_el_forget((ecclComm_t)comm);
    return (ncclResult_t)ecclCommDestroy((ecclComm_t)comm);
}
PNCCL(ncclCommDestroy);

NCCL_EXPORT ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    nccl_el_forget((ecclComm_t)comm);
    return (ncclResult_t)ecclCommAbort((ecclComm_t)comm);
}
PNCCL(ncclCommAbort);

NCCL_EXPORT ncclResult_t ncclCommRevoke(ncclComm_t comm, int revokeFlags)
{
    return (ncclResult_t)ecclCommRevoke((ecclComm_t)comm, revokeFlags);
}
PNCCL(ncclCommRevoke);

NCCL_EXPORT ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm,
                                       ncclConfig_t *config)
{
    ecclConfig_t buf, *cfg;
    ecclResult_t res = config_get(config, &buf, &cfg, "ncclCommSplit");
    if (res != ecclSuccess)
        return (ncclResult_t)res;
    return (ncclResult_t)ecclCommSplit((ecclComm_t)comm, color, key, (ecclComm_t *)(void *)newcomm,
                                       cfg);
}
PNCCL(ncclCommSplit);

NCCL_EXPORT ncclResult_t ncclCommShrink(ncclComm_t comm, int *excludeRanksList,
                                        int excludeRanksCount, ncclComm_t *newcomm,
                                        ncclConfig_t *config, int shrinkFlags)
{
    ecclConfig_t buf, *cfg;
    ecclResult_t res = config_get(config, &buf, &cfg, "ncclCommShrink");
    if (res != ecclSuccess)
        return (ncclResult_t)res;
    return (ncclResult_t)ecclCommShrink((ecclComm_t)comm, excludeRanksList, excludeRanksCount,
                                        (ecclComm_t *)(void *)newcomm, cfg, shrinkFlags);
}
PNCCL(ncclCommShrink);

/* --- errors ---------------------------------------------------------------------------------- */

NCCL_EXPORT const char *ncclGetErrorString(ncclResult_t result)
{
    switch (result) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError:
        return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
        return "internal error - please report this issue to the eccl developers";
    case ncclInvalidArgument:
        return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage:
        return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError:
        return "remote process exited or there was a network error (eccl: ncclGetLastError "
               "names the peer; abort the communicator and create a new one)";
    case ncclInProgress:
        return "operation in progress";
    default:
        return "unknown result code";
    }
}
PNCCL(ncclGetErrorString);

NCCL_EXPORT const char *ncclGetLastError(ncclComm_t comm)
{
    return ecclGetLastError((ecclComm_t)comm);
}
PNCCL(ncclGetLastError);

NCCL_EXPORT void ncclResetDebugInit(void)
{
    eccl_log_reset();
}
PNCCL(ncclResetDebugInit);

NCCL_EXPORT void ncclResetDebugInitInternal(void)
{
    eccl_log_reset();
}

NCCL_EXPORT ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError)
{
    ecclResult_t e = ecclSuccess;
    if (!asyncError) {
        WARN("ncclCommGetAsyncError: asyncError is NULL");
        return ncclInvalidArgument;
    }
    ecclResult_t res = nccl_el_async_error((ecclComm_t)comm, &e);
    if (res == ecclSuccess)
        *asyncError = (ncclResult_t)e;
    return (ncclResult_t)res;
}
PNCCL(ncclCommGetAsyncError);

/* --- queries --------------------------------------------------------------------------------- */

NCCL_EXPORT ncclResult_t ncclCommCount(const ncclComm_t comm, int *count)
{
    return (ncclResult_t)ecclCommCount((const ecclComm_t)comm, count);
}
PNCCL(ncclCommCount);

NCCL_EXPORT ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device)
{
    return (ncclResult_t)ecclCommCuDevice((const ecclComm_t)comm, device);
}
PNCCL(ncclCommCuDevice);

NCCL_EXPORT ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank)
{
    return (ncclResult_t)ecclCommUserRank((const ecclComm_t)comm, rank);
}
PNCCL(ncclCommUserRank);

/* --- registration ---------------------------------------------------------------------------- */

NCCL_EXPORT ncclResult_t ncclCommRegister(const ncclComm_t comm, void *buff, size_t size,
                                          void **handle)
{
    return (ncclResult_t)ecclCommRegister((const ecclComm_t)comm, buff, size, handle);
}
PNCCL(ncclCommRegister);

NCCL_EXPORT ncclResult_t ncclCommDeregister(const ncclComm_t comm, void *handle)
{
    return (ncclResult_t)ecclCommDeregister((const ecclComm_t)comm, handle);
}
PNCCL(ncclCommDeregister);

NCCL_EXPORT ncclResult_t ncclCommWindowRegister(ncclComm_t comm, void *buff, size_t size,
                                                ncclWindow_t *win, int winFlags)
{
    return (ncclResult_t)ecclCommWindowRegister((ecclComm_t)comm, buff, size,
                                                (ecclWindow_t *)(void *)win, winFlags);
}
PNCCL(ncclCommWindowRegister);

NCCL_EXPORT ncclResult_t ncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win)
{
    return (ncclResult_t)ecclCommWindowDeregister((ecclComm_t)comm, (ecclWindow_t)(void *)win);
}
PNCCL(ncclCommWindowDeregister);

/* --- reduction operators --------------------------------------------------------------------- */

NCCL_EXPORT ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t *op, void *scalar,
                                                  ncclDataType_t datatype,
                                                  ncclScalarResidence_t residence, ncclComm_t comm)
{
    ecclRedOp_t e;
    ecclResult_t res = ecclRedOpCreatePreMulSum(&e, scalar, (ecclDataType_t)datatype,
                                                (ecclScalarResidence_t)residence, (ecclComm_t)comm);
    if (res == ecclSuccess && op)
        *op = (ncclRedOp_t)e;
    return (ncclResult_t)res;
}
PNCCL(ncclRedOpCreatePreMulSum);

NCCL_EXPORT ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm)
{
    return (ncclResult_t)ecclRedOpDestroy((ecclRedOp_t)op, (ecclComm_t)comm);
}
PNCCL(ncclRedOpDestroy);

/* --- collectives ----------------------------------------------------------------------------- */

NCCL_EXPORT ncclResult_t ncclReduce(const void *sendbuff, void *recvbuff, size_t count,
                                    ncclDataType_t datatype, ncclRedOp_t op, int root,
                                    ncclComm_t comm, cudaStream_t stream)
{
    return (ncclResult_t)ecclReduce(sendbuff, recvbuff, count, (ecclDataType_t)datatype,
                                    (ecclRedOp_t)op, root, (ecclComm_t)comm, stream);
}
PNCCL(ncclReduce);

NCCL_EXPORT ncclResult_t ncclBcast(void *buff, size_t count, ncclDataType_t datatype, int root,
                                   ncclComm_t comm, cudaStream_t stream)
{
    return (ncclResult_t)ecclBcast(buff, count, (ecclDataType_t)datatype, root, (ecclComm_t)comm,
                                   stream);
}
PNCCL(ncclBcast);

NCCL_EXPORT ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                                       ncclDataType_t datatype, int root, ncclComm_t comm,
                                       cudaStream_t stream)
{
    return (ncclResult_t)ecclBroadcast(sendbuff, recvbuff, count, (ecclDataType_t)datatype, root,
                                       (ecclComm_t)comm, stream);
}
PNCCL(ncclBroadcast);

NCCL_EXPORT ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                       ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                       cudaStream_t stream)
{
    return (ncclResult_t)ecclAllReduce(sendbuff, recvbuff, count, (ecclDataType_t)datatype,
                                       (ecclRedOp_t)op, (ecclComm_t)comm, stream);
}
PNCCL(ncclAllReduce);

NCCL_EXPORT ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                           cudaStream_t stream)
{
    return (ncclResult_t)ecclReduceScatter(sendbuff, recvbuff, recvcount, (ecclDataType_t)datatype,
                                           (ecclRedOp_t)op, (ecclComm_t)comm, stream);
}
PNCCL(ncclReduceScatter);

NCCL_EXPORT ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                                       ncclDataType_t datatype, ncclComm_t comm,
                                       cudaStream_t stream)
{
    return (ncclResult_t)ecclAllGather(sendbuff, recvbuff, sendcount, (ecclDataType_t)datatype,
                                       (ecclComm_t)comm, stream);
}
PNCCL(ncclAllGather);

NCCL_EXPORT ncclResult_t ncclAlltoAll(const void *sendbuff, void *recvbuff, size_t count,
                                      ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)
{
    return (ncclResult_t)ecclAlltoAll(sendbuff, recvbuff, count, (ecclDataType_t)datatype,
                                      (ecclComm_t)comm, stream);
}
PNCCL(ncclAlltoAll);

NCCL_EXPORT ncclResult_t ncclGather(const void *sendbuff, void *recvbuff, size_t count,
                                    ncclDataType_t datatype, int root, ncclComm_t comm,
                                    cudaStream_t stream)
{
    return (ncclResult_t)ecclGather(sendbuff, recvbuff, count, (ecclDataType_t)datatype, root,
                                    (ecclComm_t)comm, stream);
}
PNCCL(ncclGather);

NCCL_EXPORT ncclResult_t ncclScatter(const void *sendbuff, void *recvbuff, size_t count,
                                     ncclDataType_t datatype, int root, ncclComm_t comm,
                                     cudaStream_t stream)
{
    return (ncclResult_t)ecclScatter(sendbuff, recvbuff, count, (ecclDataType_t)datatype, root,
                                     (ecclComm_t)comm, stream);
}
PNCCL(ncclScatter);

/* --- point to point and groups --------------------------------------------------------------- */

NCCL_EXPORT ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype,
                                  int peer, ncclComm_t comm, cudaStream_t stream)
{
    return (ncclResult_t)ecclSend(sendbuff, count, (ecclDataType_t)datatype, peer, (ecclComm_t)comm,
                                  stream);
}
PNCCL(ncclSend);

NCCL_EXPORT ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                                  ncclComm_t comm, cudaStream_t stream)
{
    return (ncclResult_t)ecclRecv(recvbuff, count, (ecclDataType_t)datatype, peer, (ecclComm_t)comm,
                                  stream);
}
PNCCL(ncclRecv);

NCCL_EXPORT ncclResult_t ncclGroupStart(void)
{
    return (ncclResult_t)ecclGroupStart();
}
PNCCL(ncclGroupStart);

NCCL_EXPORT ncclResult_t ncclGroupEnd(void)
{
    return (ncclResult_t)ecclGroupEnd();
}
PNCCL(ncclGroupEnd);

NCCL_EXPORT ncclResult_t ncclGroupSimulateEnd(ncclSimInfo_t *simInfo)
{
    return (ncclResult_t)ecclGroupSimulateEnd((ecclSimInfo_t *)(void *)simInfo);
}
PNCCL(ncclGroupSimulateEnd);

/* --- host side of the device API ------------------------------------------------------------- */

static ncclResult_t no_device_api(const char *fn)
{
    WARN("%s: NCCL's device API (device communicators, LSA/GIN barriers, LL all-to-all) is not "
         "implemented by eccl; collectives and point-to-point calls are",
         fn);
    return ncclInvalidUsage;
}

NCCL_EXPORT ncclResult_t ncclDevCommCreate(ncclComm_t comm, ncclDevCommRequirements_t const *reqs,
                                           ncclDevComm_t *outDevComm)
{
    (void)comm;
    (void)reqs;
    (void)outDevComm;
    return no_device_api("ncclDevCommCreate");
}
PNCCL(ncclDevCommCreate);

NCCL_EXPORT ncclResult_t ncclDevCommDestroy(ncclComm_t comm, ncclDevComm_t const *devComm)
{
    (void)comm;
    (void)devComm;
    return no_device_api("ncclDevCommDestroy");
}
PNCCL(ncclDevCommDestroy);

/* The team of every rank of comm (stride 1); an invalid comm gives the empty team. */
static ncclTeam_t team_world(ncclComm_t comm, const char *fn)
{
    ncclTeam_t t = {0, 0, 0};
    int n = 0, r = 0;
    if (ecclCommCount((ecclComm_t)comm, &n) != ecclSuccess ||
        ecclCommUserRank((ecclComm_t)comm, &r) != ecclSuccess) {
        WARN("%s: comm %p is not a live communicator", fn, (void *)comm);
        return t;
    }
    t.nRanks = n;
    t.rank = r;
    t.stride = 1;
    return t;
}

NCCL_EXPORT ncclTeam_t ncclTeamWorld(ncclComm_t comm)
{
    return team_world(comm, "ncclTeamWorld");
}
PNCCL(ncclTeamWorld);

/* eccl gives no rank load/store access to another's memory: the LSA team is the rank alone, and
 * the rail team (one rank of each LSA team) is the world. */
NCCL_EXPORT ncclTeam_t ncclTeamLsa(ncclComm_t comm)
{
    ncclTeam_t w = team_world(comm, "ncclTeamLsa");
    ncclTeam_t t = {w.nRanks > 0 ? 1 : 0, 0, w.nRanks > 0 ? 1 : 0};
    return t;
}
PNCCL(ncclTeamLsa);

NCCL_EXPORT ncclTeam_t ncclTeamRail(ncclComm_t comm)
{
    return team_world(comm, "ncclTeamRail");
}
PNCCL(ncclTeamRail);

NCCL_EXPORT int ncclTeamRankToWorld(ncclComm_t comm, ncclTeam_t team, int rank)
{
    ncclTeam_t w = team_world(comm, "ncclTeamRankToWorld");
    return w.rank + (rank - team.rank) * team.stride;
}
PNCCL(ncclTeamRankToWorld);

/* The LSA rank of this rank is 0 (its LSA team is itself). */
NCCL_EXPORT int ncclTeamRankToLsa(ncclComm_t comm, ncclTeam_t team, int rank)
{
    (void)comm;
    return (rank - team.rank) * team.stride;
}
PNCCL(ncclTeamRankToLsa);

NCCL_EXPORT ncclResult_t ncclLsaBarrierCreateRequirement(ncclTeam_t team, int nBarriers,
                                                         ncclLsaBarrierHandle_t *outHandle,
                                                         ncclDevResourceRequirements_t *outReq)
{
    (void)team;
    (void)nBarriers;
    (void)outHandle;
    (void)outReq;
    return no_device_api("ncclLsaBarrierCreateRequirement");
}
PNCCL(ncclLsaBarrierCreateRequirement);

NCCL_EXPORT ncclResult_t ncclGinBarrierCreateRequirement(ncclComm_t comm, ncclTeam_t team,
                                                         int nBarriers,
                                                         ncclGinBarrierHandle_t *outHandle,
                                                         ncclDevResourceRequirements_t *outReq)
{
    (void)comm;
    (void)team;
    (void)nBarriers;
    (void)outHandle;
    (void)outReq;
    return no_device_api("ncclGinBarrierCreateRequirement");
}
PNCCL(ncclGinBarrierCreateRequirement);

/* Slots of 8 bytes that maxElts elements of maxEltSize bytes take (NCCL's definition). */
NCCL_EXPORT int ncclLLA2ACalcSlots(int maxElts, int maxEltSize)
{
    return maxElts * ((maxEltSize + 7) / 8);
}
PNCCL(ncclLLA2ACalcSlots);

NCCL_EXPORT ncclResult_t ncclLLA2ACreateRequirement(int nBlocks, int nSlots,
                                                    ncclLLA2AHandle_t *outHandle,
                                                    ncclDevResourceRequirements_t *outReq)
{
    (void)nBlocks;
    (void)nSlots;
    (void)outHandle;
    (void)outReq;
    return no_device_api("ncclLLA2ACreateRequirement");
}
PNCCL(ncclLLA2ACreateRequirement);

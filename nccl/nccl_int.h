/*
 * nccl_int.h - what the files of nccl/ (the drop-in libnccl.so.2) share: the NCCL_* variable
 * mapping (nccl_env.c) and the ECCL_ELASTIC=1 mode of the NCCL init functions (nccl_elastic.c).
 * Never included from another folder.
 */
#ifndef ECCL_NCCL_NCCL_INT_H
#define ECCL_NCCL_NCCL_INT_H

#include <stdbool.h>

#include "eccl.h"

/* Logs, once per process at INFO ENV, what the mapping of NCCL_* variables did when the library
 * was loaded (which ECCL_* variables it set, which NCCL_* variables have no counterpart). */
void nccl_env_log_once(void);

/* NCCL exports this next to ncclResetDebugInit (no header declares it). */
void ncclResetDebugInitInternal(void);

/* ECCL_ELASTIC=1: communicators of the job's size made by the NCCL init functions come from the
 * elastic membership (docs/pytorch.md). */
bool nccl_el_enabled(void);

/* Makes the communicator for an NCCL init call of nranks ranks where this process is `rank`,
 * from the current generation of the job (joining the job at the first call, recovering first
 * when the generation failed since the last call). *handled is false when nranks is smaller
 * than the job (a sub-communicator: the caller makes it the ordinary way, from its unique id);
 * then nothing was created. config may be NULL. */
ecclResult_t nccl_el_init(ecclComm_t *comm, int nranks, int rank, const ecclConfig_t *config,
                          bool *handled);

/* ncclCommGetAsyncError for every communicator: for one made by nccl_el_init, a failure of its
 * generation seen by the membership (a member evicted, its lease expired, the generation revoked)
 * is reported as ecclRemoteError and the communicator is revoked, even when its own transports
 * saw nothing yet. Never blocks on a recovery running on another thread. */
ecclResult_t nccl_el_async_error(ecclComm_t comm, ecclResult_t *asyncError);

/* The application aborts or destroys comm: forget it (no-op for other communicators). */
void nccl_el_forget(ecclComm_t comm);

#endif

/*
 * core.h - what core/ offers to the layers above it besides the public API: the schedule state
 * that the elastic layer compares across ranks, and the async-error callback through which it
 * hears of failures.
 */
#ifndef ECCL_CORE_CORE_H
#define ECCL_CORE_CORE_H

#include <stdatomic.h>
#include <stdint.h>

#include "eccl.h"

/* Collectives completed on comm and the chained fingerprint of every plan launched so far
 * (ignoring buffer addresses and point-to-point work): equal on every rank that made the same
 * sequence of collective calls. */
ecclResult_t core_comm_schedule(ecclComm_t comm, uint64_t *coll_seq, uint64_t *fingerprint);

/* Called on the thread that saw the failure (an executor, the UDS service, the proxy), right
 * after comm is marked failed, with `res` and the text of what was seen; a failure seen before
 * the registration is reported by the registration itself. It may come twice for one failure
 * when the two race: make it idempotent. It must return quickly and must not call eccl
 * functions on comm (raising a flag and waking a thread of its own is what it is for). fn NULL
 * unregisters. */
typedef void (*core_error_fn)(void *arg, ecclResult_t res, const char *text);
ecclResult_t core_comm_set_error_callback(ecclComm_t comm, core_error_fn fn, void *arg);

/* Returns once every rank of comm called it: the bootstrap's allgather of one byte over its ring
 * of sockets, on the host whatever the communicator's device. Bounded by ECCL_BOOTSTRAP_TIMEOUT;
 * ecclRemoteError at once when comm is aborted or revoked, or a peer's socket fails. For the
 * elastic layer's closing barrier, where a CUDA communicator has no host buffer to reduce. */
ecclResult_t core_comm_barrier(ecclComm_t comm);

/* ecclCommInitRankConfig with two more bounds, for the elastic layer: init stops with
 * ecclRemoteError as soon as *cancel becomes nonzero (a member of the generation died while the
 * others were meeting), and the bootstrap waits at most bootstrap_timeout_ms (0: the default). */
struct core_init_opts {
    const _Atomic uint32_t *cancel;
    int64_t bootstrap_timeout_ms;
};
ecclResult_t core_comm_init_opts(ecclComm_t *comm, int nranks, const ecclUniqueId *id, int rank,
                                 const ecclConfig_t *config, const struct core_init_opts *opts);

#endif

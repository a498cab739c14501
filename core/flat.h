/*
 * flat.h - core/'s side of the flat algorithm (kernels/host_flat.h): the communicator's shared
 * segment, and which calls take the flat path.
 *
 * A call takes it when the communicator has a segment (a host communicator whose ranks are all
 * on one host and agreed on it at init), the call is an AllReduce, AllGather, ReduceScatter or
 * Broadcast of at most ECCL_FLAT_MAX_BYTES (as nccl-tests counts bytes: the larger buffer) and
 * ECCL_ALGO does not name ring or tree. Nothing else enters the choice (not timing, not whether
 * the call is in a group), so every rank makes the same one. Outside a group the call runs at
 * once, without a task or a plan; inside a group it runs in its place among the group's
 * collectives (core_flat_launch).
 */
#ifndef ECCL_CORE_FLAT_H
#define ECCL_CORE_FLAT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/core_int.h"

/* At init, on every rank (it exchanges through the bootstrap): maps the communicator's segment,
 * or leaves comm->flat.base NULL on every rank. Fails only when the bootstrap does. */
ecclResult_t core_flat_init(struct ecclComm *comm);
/* Unmaps the segment. */
void core_flat_fini(struct ecclComm *comm);
/* A failure or an abort: the other ranks stop waiting in the flat path. */
void core_flat_close(struct ecclComm *comm);

/* Whether this call takes the flat path. */
bool core_flat_fits(const struct ecclComm *comm, int func, size_t count, int dtype);
/* Runs one call outside a group, at once. ecclInProgress: the communicator has failed or was
 * revoked, and the call goes the ordinary way (which refuses it with the reason). */
ecclResult_t core_flat_call(struct ecclComm *comm, const struct core_task *t);
/* Group end: plans and runs the communicator's gathered tasks in call order, flat collectives
 * in their place (a plan for the tasks between two of them). Plans that were built but not run
 * are left in `plans`. */
ecclResult_t core_flat_launch(struct ecclComm *comm, struct eccl_queue *plans);

#endif

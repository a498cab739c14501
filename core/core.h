/*
 * core.h - what core/ offers to the layers above it besides the public API: the schedule state
 * that the elastic layer compares across ranks, and the async-error callback through which it
 * hears of failures.
 */
#ifndef ECCL_CORE_CORE_H
#define ECCL_CORE_CORE_H

#include <stdint.h>

#include "eccl.h"

/* Collectives completed on comm and the chained fingerprint of every plan launched so far
 * (ignoring buffer addresses and point-to-point work): equal on every rank that made the same
 * sequence of collective calls. */
ecclResult_t core_comm_schedule(ecclComm_t comm, uint64_t *coll_seq, uint64_t *fingerprint);

#endif

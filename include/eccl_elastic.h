/*
 * eccl_elastic.h - elastic jobs: membership over a store (etcd, or the embedded store), a
 * communicator per generation, and recovery without a restart when ranks die or join.
 *
 * A process joins a job (ecclElasticJoin); once enough members arrived they agree a generation
 * (a numbered member list) and build its communicator. The application runs its steps on the
 * communicator of the current generation and commits each step it finished
 * (ecclElasticCommit). When a collective fails, or ecclElasticPoll reports a change, it calls
 * ecclElasticRecover: the old communicator is aborted (never destroyed, never waited on), the
 * members agree the next generation and the last step that every one of them committed, and the
 * new communicator is built; ecclElasticSyncState then brings every member's state to that step
 * from a member that has it (a replacement or a joiner gets it, a member that ran ahead is rolled
 * back). docs/elastic.md describes the use, docs/internals/elastic.md the state machine.
 *
 * Every call returns an ecclResult_t; ecclGetLastError(NULL) says what failed. Calls on one
 * handle are made from one thread at a time (the handle has threads of its own).
 */
#ifndef ECCL_ELASTIC_H
#define ECCL_ELASTIC_H

#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ecclElastic *ecclElastic_t;

typedef enum {
    ecclElasticShrink = 0,  /* carry on with the survivors */
    ecclElasticReplace = 1, /* wait (ECCL_ELASTIC_REPLACE_WAIT_MS) for replacements, else shrink */
    ecclElasticGrow = 2,    /* admit joiners at a step boundary, up to maxRanks */
} ecclElasticMode_t;

typedef struct {
    size_t size; /* sizeof(ecclElasticConfig_t): set by ECCL_ELASTIC_CONFIG_INITIALIZER */
    unsigned int magic;
    unsigned int version;
    const char *storeUrl; /* etcd://host:port/prefix, tcp://host:port/prefix; NULL:
                             ECCL_ELASTIC_STORE, then ECCL_STORE_URL */
    const char *jobId;    /* NULL: ECCL_ELASTIC_JOB_ID */
    const char *memberId; /* NULL: "<host>:<pid>:<random>" */
    int minRanks;         /* <= 0: ECCL_ELASTIC_MIN_RANKS (default 1) */
    int maxRanks;         /* <= 0: ECCL_ELASTIC_MAX_RANKS (default minRanks) */
    int replaceRank;      /* -2: ECCL_ELASTIC_REPLACE_RANK (default -1: none); a launcher sets it
                             for the replacement of a dead rank */
    int mode;             /* ecclElasticMode_t; -1: ECCL_ELASTIC_MODE (default replace) */
    ecclConfig_t *commConfig; /* for every generation's communicator; NULL: defaults */
} ecclElasticConfig_t;

#define ECCL_ELASTIC_CONFIG_MAGIC 0x656c6173u /* "elas" */
#define ECCL_ELASTIC_CONFIG_INITIALIZER                                                            \
    {                                                                                              \
        sizeof(ecclElasticConfig_t), ECCL_ELASTIC_CONFIG_MAGIC, 1, NULL, NULL, NULL, 0, 0, -2, -1, \
            NULL                                                                                   \
    }

typedef struct {
    int64_t generation;
    int rank;
    int nranks;
    int64_t step;  /* the last step every member committed when the generation formed (-1: none) */
    int newMember; /* 1: this process joined in this generation (it has no state yet) */
} ecclElasticInfo_t;

/* What ecclElasticPoll reports. */
typedef enum {
    ecclElasticNoChange = 0,
    ecclElasticFailed = 1,  /* the generation failed (a member died, left, or revoked it) */
    ecclElasticJoiners = 2, /* members wait to join (acted on in grow mode), agreed at a commit */
} ecclElasticChange_t;

/* Joins the job, waits for the first generation that admits this process, builds its
 * communicator. Bounded by ECCL_ELASTIC_JOIN_TIMEOUT_MS. */
ecclResult_t ecclElasticJoin(ecclElastic_t *el, const ecclElasticConfig_t *config);
/* The current generation's communicator (owned by el: do not destroy it). */
ecclResult_t ecclElasticGetComm(ecclElastic_t el, ecclComm_t *comm);
ecclResult_t ecclElasticGetInfo(ecclElastic_t el, ecclElasticInfo_t *info);
/* Never blocks. *change: a failure seen (by the communicator, the store's watch, or a revoke
 * record of another member), or joiners agreed at the last commit. */
ecclResult_t ecclElasticPoll(ecclElastic_t el, ecclElasticChange_t *change);
/* Aborts the current communicator, agrees the next generation (in the configured mode; grow
 * when joiners are pending), builds its communicator and checks that every member's schedule
 * state agrees. A second failure during recovery restarts the agreement; bounded by
 * ECCL_ELASTIC_RECOVER_TIMEOUT_MS. */
ecclResult_t ecclElasticRecover(ecclElastic_t el);
/* Records that this member finished `step` (steps grow by one). Every ECCL_ELASTIC_CHECK_STEPS
 * commits, the members agree over the communicator whether joiners wait (ecclElasticPoll then
 * reports it on every member at the same step). Returns a failure of that check like a failed
 * collective. */
ecclResult_t ecclElasticCommit(ecclElastic_t el, int64_t step);
/* After a recovery (and after the first join): makes buf (bytes, equal on every member) the state
 * of a member that committed the generation's step, on every member. *restored: 1 when this
 * member's buf was overwritten. */
ecclResult_t ecclElasticSyncState(ecclElastic_t el, void *buf, size_t bytes, int *restored);
/* Leaves the job cleanly and frees el: a closing barrier with the other members, a graceful
 * destroy of the communicator, then the leave announced in the store and the lease revoked (the
 * others see it at once, as a departure when they are leaving too: docs/elastic.md). */
ecclResult_t ecclElasticLeave(ecclElastic_t el);
/* Frees el without leaving cleanly (the lease expires). */
ecclResult_t ecclElasticDestroy(ecclElastic_t el);

#ifdef __cplusplus
}
#endif

#endif

/*
 * service.h - the per-rank UDS service: a thread that keeps a stream connection to every other
 * rank of the same host and turns a vanished peer into a failure report within milliseconds.
 *
 * A rank process that dies (SIGKILL, OOM) has its sockets closed by the kernel; its peers see
 * EOF at once. The service reports that to core (a callback) and tells every other local peer
 * (REVOKE), so that ranks blocked in a collective with healthy peers stop as well. A rank that
 * leaves cleanly (destroy) says BYE first and is not reported. A service thread that stops
 * answering pings within ECCL_PROXY_HEARTBEAT_MS x 4 is reported like a dead peer.
 * docs/internals/uds-service.md describes the messages.
 */
#ifndef ECCL_PROXY_SERVICE_H
#define ECCL_PROXY_SERVICE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

struct proxy_service;

/* Called on the service thread, once per failed peer: `peer` is the rank that failed (or -1
 * when unknown), `text` says what was seen. */
typedef void (*proxy_failure_fn)(void *arg, int peer, const char *text);

/* Opens the listener @eccl-<magic>-<rank>-svc. Every local rank must have opened its listener
 * (a bootstrap barrier) before any calls proxy_service_connect. */
ecclResult_t proxy_service_create(struct proxy_service **out, uint64_t comm_magic, int rank,
                                  int nranks, proxy_failure_fn fn, void *arg);
/* Connects to every rank in local[] (true: on this host) and accepts their connections, then
 * starts the service thread. pids[r]: rank r's process id when this process can see it (same
 * pid namespace), else 0; a peer whose heartbeats stop is then declared failed only when its
 * service thread (known from its pings) is stopped or gone: a running one is slow, not dead (the
 * watchdog remains for hangs). Bounded by deadline_ns; checks *abort. */
ecclResult_t proxy_service_connect(struct proxy_service *svc, const bool *local, const int *pids,
                                   uint64_t deadline_ns, const _Atomic uint32_t *abort);
/* Also watches this rank's proxy thread (heartbeat `beat`, thread id `tid`): when the heartbeat
 * does not advance for ECCL_PROXY_STALL_MS and the thread has exited or is not runnable (a
 * runnable thread is only starved of CPU), the proxy is reported like a failed peer (this
 * rank). Call before proxy_service_connect. */
void proxy_service_watch(struct proxy_service *svc, const _Atomic uint64_t *beat,
                         const _Atomic int *tid);
/* Tells every connected peer that `peer` failed (peer -1: this rank gave up). */
void proxy_service_revoke(struct proxy_service *svc, int peer, const char *why);
/* Stops the thread and closes everything; `clean`: say BYE first. Safe on a service that was
 * only created, and on NULL. */
void proxy_service_destroy(struct proxy_service *svc, bool clean);

/* A service record as a peer sends it (128 bytes): decoded without I/O for tests and fuzzing
 * (tests/fuzz/fuzz_proxy_msgs.c) with the checks the service thread runs; ecclRemoteError when
 * the service would refuse it. */
#define PROXY_SERVICE_REC_BYTES 128
struct proxy_service_rec {
    int type; /* 1 hello, 2 ping, 3 bye, 4 revoke */
    int from;
    int failed;
    char text[104];
};
ecclResult_t proxy_service_rec_decode(const void *buf, size_t len, uint64_t comm_magic,
                                      struct proxy_service_rec *out);
size_t proxy_service_rec_encode(const struct proxy_service_rec *r, uint64_t comm_magic,
                                void *buf /* PROXY_SERVICE_REC_BYTES */);

#endif

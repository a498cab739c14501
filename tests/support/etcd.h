/*
 * etcd.h - a real etcd (Debian's etcd-server, /usr/bin/etcd) for tests and benchmarks: one member
 * on 127.0.0.1 with free ports and a temporary data dir (on /dev/shm when there, so that fsync is
 * cheap), killed by pid, restartable on the same ports and data (what an etcd crash and restart
 * looks like to clients), or a member of a cluster on loopback. The child dies with the test
 * (PR_SET_PDEATHSIG). Every test that needs etcd skips (exit 77) when etcd_available() is false.
 */
#ifndef ECCL_TESTS_SUPPORT_ETCD_H
#define ECCL_TESTS_SUPPORT_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define ETCD_BIN "/usr/bin/etcd"

struct etcd_proc {
    pid_t pid;
    int client_port;
    int peer_port;
    char dir[256];
    char extra[1024]; /* extra arguments, space-separated (no quoting) */
    bool tls;         /* client URL is https (extra has the cert options) */
    char ca[256];     /* with tls: files the helper's own requests use */
    char cert[256];
    char key[256];
    char name[16];     /* member name ("t" when empty) */
    char cluster[512]; /* --initial-cluster of a multi-member cluster ("" for one member) */
};

/* Whether /usr/bin/etcd is there. */
bool etcd_available(void);
/* A free TCP port on 127.0.0.1 (-1 on failure). */
int etcd_free_port(void);
/* True when etcd answers /health with "true" (1 s at most). */
bool etcd_healthy(const struct etcd_proc *e);
/* POSTs a JSON body to the gateway (auth administration, compaction); `token` may be NULL.
 * Returns the HTTP status (0 on transport failure); `out` (256 bytes, may be NULL) gets the start
 * of the answer. */
long etcd_post(const struct etcd_proc *e, const char *path, const char *body, const char *token,
               char *out);
/* Picks the ports and makes the data dir of a member that has none yet. 0 on success. */
int etcd_prepare(struct etcd_proc *e);
/* Starts the etcd process (a first start picks ports and makes the data dir). 0 on success. */
int etcd_spawn(struct etcd_proc *e);
/* Waits until a started etcd answers /health (15 s at most). 0 on success. */
int etcd_wait_healthy(struct etcd_proc *e);
/* Starts etcd and waits for it. 0 when it answered /health within 15 s. */
int etcd_start(struct etcd_proc *e);
/* Kills etcd (SIGKILL: a crash) and reaps it. */
void etcd_kill(struct etcd_proc *e);
/* Kills etcd and removes its data dir. */
void etcd_destroy(struct etcd_proc *e);
/* "etcd://127.0.0.1:PORT" (or etcds://) into buf. */
void etcd_url(const struct etcd_proc *e, char *buf, size_t size);

#endif

/*
 * auth.h - the job secret: mutual challenge-response on every connection, MACs on records.
 *
 * ECCL_JOB_SECRET_FILE names a file whose bytes are the job's secret (a Kubernetes Secret
 * mounts it). It is read once (again after eccl_param_reset); a per-purpose key is derived from
 * it with HMAC-SHA256 (OpenSSL libcrypto). Unset: authentication is off, connections carry no
 * handshake (the wire is as before) and records no MAC. docs/security.md has the protocol.
 *
 * A handshake runs right after connect (client) or accept (server), before any other byte:
 *   client -> server  hello:  "EATH" v1 purpose, client nonce (32 random bytes)
 *   server -> client  hello:  "EATH" v1 purpose, server nonce, HMAC(key, "server" transcript)
 *   client -> server  HMAC(key, "client" transcript)
 * where the transcript is purpose || client nonce || server nonce. MACs are compared in constant
 * time. A failure is logged once (WARN, with the peer's address and the probable cause) and the
 * connection must be closed by the caller.
 */
#ifndef ECCL_COMMON_AUTH_H
#define ECCL_COMMON_AUTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eccl.h"

enum eccl_auth_purpose {
    ECCL_AUTH_BOOTSTRAP = 1, /* rank <-> bootstrap root, rank <-> rank (core/bootstrap.c) */
    ECCL_AUTH_UDS = 2,       /* local ranks' UDS service (proxy/service.c) */
    ECCL_AUTH_NET = 3,       /* network transport connections (proxy/net_socket.c, net_ib.c) */
    ECCL_AUTH_RECORD = 4,    /* elastic store records (elastic/rdzv_codec.c) */
};

#define ECCL_AUTH_NONCE_BYTES 32
#define ECCL_AUTH_MAC_BYTES   32
#define ECCL_AUTH_HELLO_BYTES (8 + ECCL_AUTH_NONCE_BYTES)

/*
 * Loads the secret if needed. *on_out (may be NULL) says whether authentication is on.
 * ecclInvalidUsage (with a WARN that names the file and the cause) when ECCL_JOB_SECRET_FILE is
 * set but cannot be used: missing, unreadable, empty, larger than 64 KiB. Thread-safe.
 */
ecclResult_t eccl_auth_load(bool *on_out);
/* Whether a secret is loaded (false when unset or not usable). */
bool eccl_auth_enabled(void);

/* One connection's handshake, advanced without blocking (caller's memory; zero it, then
 * eccl_auth_hs_init). */
struct eccl_auth_hs {
    int purpose;
    bool server;
    int state;
    size_t done; /* bytes of the current message sent or received */
    unsigned char nonce_c[ECCL_AUTH_NONCE_BYTES];
    unsigned char nonce_s[ECCL_AUTH_NONCE_BYTES];
    unsigned char buf[ECCL_AUTH_HELLO_BYTES + ECCL_AUTH_MAC_BYTES];
    char peer[64]; /* for the logs */
};

/* Prepares a handshake (draws the nonce). peer: the address for the logs (may be NULL). */
ecclResult_t eccl_auth_hs_init(struct eccl_auth_hs *hs, int purpose, bool server, const char *peer);
/* Sends and receives what the socket takes now (non-blocking I/O on fd, the fd's own mode is not
 * changed). ecclSuccess: authenticated; ecclInProgress: call again when fd is ready for
 * eccl_auth_hs_events(); any other result: refused (logged once), close the connection. */
ecclResult_t eccl_auth_hs_step(struct eccl_auth_hs *hs, int fd);
/* POLLIN or POLLOUT: what the handshake waits for now. */
short eccl_auth_hs_events(const struct eccl_auth_hs *hs);

/*
 * The whole handshake on a connected socket, blocking up to deadline_ns (an abort flag is
 * polled). A no-op returning ecclSuccess when authentication is off. peer may be NULL.
 */
ecclResult_t eccl_auth_handshake(int fd, int purpose, bool server, const char *peer,
                                 uint64_t deadline_ns, const _Atomic uint32_t *abort);

/* HMAC-SHA256 with the key of `purpose` over the concatenation of parts a and b (b may be NULL).
 * ecclInvalidUsage when authentication is off. */
ecclResult_t eccl_auth_mac(int purpose, const void *a, size_t alen, const void *b, size_t blen,
                           unsigned char mac[ECCL_AUTH_MAC_BYTES]);
/* Constant-time comparison of two MACs. */
bool eccl_auth_mac_equal(const unsigned char *x, const unsigned char *y);
/* Fills buf with cryptographically random bytes (RAND_bytes). */
ecclResult_t eccl_auth_random(void *buf, size_t len);

#endif

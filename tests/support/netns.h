/*
 * netns.h - network namespaces as "hosts" for the multi-host tests.
 *
 * netns_setup makes K network namespaces named eccl-<pid>-<set>h<i> (set: 0 for the first set
 * this process makes, then 1...; the pid keeps parallel runs apart), each with `lo` up and one interface named NETNS_IFNAME (the
 * same name in every namespace, so ECCL_SOCKET_IFNAME=eccl0 works in all of them) holding
 * 10.231.<subnet>.<i+1>/24. Two hosts are joined by one veth pair; more hosts by veth pairs to a
 * bridge in an extra namespace eccl-<pid>-<set>hub. Everything goes through iproute2 (`ip`), run with
 * fork/exec and an argument vector (no shell), each exit status checked.
 *
 * Teardown deletes every namespace the set created; it runs from netns_teardown, from an atexit
 * handler and from a SIGINT/SIGTERM/SIGHUP handler (only in the process that made the set, never
 * in a forked rank), and netns_setup first deletes namespaces of earlier runs whose pid is dead.
 *
 * Where namespaces cannot be made (not root, no `ip`, `ip netns add` refused in a container)
 * netns_setup prints why and returns NETNS_SKIP: the test then exits 77.
 */
#ifndef ECCL_TESTS_SUPPORT_NETNS_H
#define ECCL_TESTS_SUPPORT_NETNS_H

#include <stdbool.h>
#include <sys/types.h>

#define NETNS_SKIP      77
#define NETNS_MAX_HOSTS 8
#define NETNS_NAME_MAX  48
#define NETNS_IFNAME    "eccl0"
#define NETNS_PREFIX    "eccl-"

struct netns_set {
    int nhosts;
    int subnet;                                 /* the third byte of the addresses */
    pid_t owner;                                /* the process that made it */
    char host[NETNS_MAX_HOSTS][NETNS_NAME_MAX]; /* namespace names */
    char addr[NETNS_MAX_HOSTS][16];             /* dotted IPv4 address on NETNS_IFNAME */
    char hub[NETNS_NAME_MAX];                   /* the bridge's namespace; "" for 2 hosts */
    int orig_fd;                                /* owner's namespace before netns_enter, or -1 */
    bool up;                                    /* created and not yet torn down */
};

/* Makes nhosts (2..NETNS_MAX_HOSTS) namespaces. *s must stay valid until netns_teardown (the
 * exit and signal handlers keep a pointer to it): use static storage. Returns 0, NETNS_SKIP (reason printed: the
 * machine cannot make namespaces) or -1 (an unexpected failure, printed; what was made is
 * deleted again). */
int netns_setup(struct netns_set *s, int nhosts);
/* Deletes what setup made (and moves the owner back to its first namespace if netns_enter
 * moved it). Idempotent; does nothing in another process than the owner. */
void netns_teardown(struct netns_set *s);
/* Moves the calling thread (in a single-threaded process: the process) into host's namespace.
 * In the owner the first call remembers where it was, for netns_leave. Returns 0 or -1
 * (printed). Use it in a forked rank right after the fork, before any eccl call. */
int netns_enter(struct netns_set *s, int host);
/* In the owner: back to the namespace it was in before netns_enter. 0 or -1 (printed). */
int netns_leave(struct netns_set *s);
/* Deletes namespaces named NETNS_PREFIX<pid>-* whose pid no longer runs. Returns how many. */
int netns_cleanup_stale(void);
/* What made the last netns_setup skip or fail (for the test's closing line). */
const char *netns_last_error(void);
/* Where netns_setup would skip, the reason (for a test that checks before doing anything);
 * NULL when namespaces look possible. */
const char *netns_unavailable(void);

#endif

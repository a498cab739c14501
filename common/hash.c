/*
 * hash.c - FNV-1a with a final avalanche, the host hash, random bits and the host name.
 */
#include "common/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <stdio.h>

#include "common/time.h"

uint64_t eccl_hash_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t eccl_hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ eccl_hash_mix(seed);
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return eccl_hash_mix(h ^ len);
}

static char host_name[256];
static char host_boot[64];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void host_init(void)
{
    char full[256] = "unknown";
    if (gethostname(full, sizeof(full) - 1) != 0)
        strcpy(full, "unknown");
    full[sizeof(full) - 1] = '\0';
    size_t i;
    for (i = 0; full[i] && full[i] != '.' && i < sizeof(host_name) - 1; i++)
        host_name[i] = (full[i] == '/' || full[i] == '%') ? '-' : full[i];
    host_name[i] = '\0';
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, host_boot, sizeof(host_boot) - 1);
        host_boot[n > 0 ? n : 0] = '\0';
        close(fd);
    }
}

/* Not cached: a process may move to another network namespace (tests do, after fork), and
 * ECCL_HOSTID may be set after the first call. */
uint64_t eccl_host_hash(void)
{
    pthread_once(&host_once, host_init);
    char id[512];
    const char *env = getenv("ECCL_HOSTID");
    if (env && *env) {
        snprintf(id, sizeof(id), "%s", env);
    } else {
        /* Ranks in different network namespaces (containers, pods) cannot reach each other's
         * abstract unix sockets, which shared memory needs: they count as different hosts. */
        char ns[64] = "";
        ssize_t n = readlink("/proc/self/ns/net", ns, sizeof(ns) - 1);
        ns[n > 0 ? n : 0] = '\0';
        char full[256] = "unknown";
        if (gethostname(full, sizeof(full) - 1) != 0)
            strcpy(full, "unknown");
        full[sizeof(full) - 1] = '\0';
        snprintf(id, sizeof(id), "%s|%s|%s", full, host_boot, ns);
    }
    return eccl_hash64(id, strlen(id), 0x6563636c);
}

const char *eccl_hostname(void)
{
    pthread_once(&host_once, host_init);
    return host_name;
}

uint64_t eccl_random64(void)
{
    uint64_t v;
    ssize_t n;
    do {
        n = getrandom(&v, sizeof(v), 0);
    } while (n == -1 && errno == EINTR);
    if (n != (ssize_t)sizeof(v)) /* no entropy source: never expected on Linux >= 3.17 */
        v = eccl_hash_mix(eccl_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)&v);
    return v;
}

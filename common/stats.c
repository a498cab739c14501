/*
 * stats.c - maps the worker's counter page (stats.h) from ECCL_METRICS_FILE, once per process.
 */
#include "common/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/param.h"

ECCL_PARAM_STR(metrics_file, "ECCL_METRICS_FILE", NULL)

static _Atomic(struct eccl_stats_page *) stats_page;
static pthread_once_t stats_once = PTHREAD_ONCE_INIT;

void eccl_stats_page_init(struct eccl_stats_page *p)
{
    p->magic = ECCL_STATS_MAGIC;
    p->version = ECCL_STATS_VERSION;
    p->size = (uint32_t)sizeof(*p);
    atomic_store_explicit(&p->rank, -1, memory_order_relaxed);
}

static void stats_map(void)
{
    const char *path = eccl_param_metrics_file();
    if (!path || !path[0])
        return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        WARN("ECCL_METRICS_FILE=%s: open: %s (no metrics from this process)", path,
             strerror(errno));
        return;
    }
    struct stat st;
    size_t size = sizeof(struct eccl_stats_page);
    if (fstat(fd, &st) != 0 || (st.st_size == 0 && ftruncate(fd, (off_t)size) != 0)) {
        WARN("ECCL_METRICS_FILE=%s: cannot size it: %s", path, strerror(errno));
        goto out_close;
    }
    if (st.st_size != 0 && (size_t)st.st_size < size) {
        WARN("ECCL_METRICS_FILE=%s: %lld bytes, not a counter page of %zu bytes", path,
             (long long)st.st_size, size);
        goto out_close;
    }
    struct eccl_stats_page *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        WARN("ECCL_METRICS_FILE=%s: mmap: %s", path, strerror(errno));
        goto out_close;
    }
    if (p->magic == 0 && p->version == 0 && p->size == 0) {
        eccl_stats_page_init(p); /* a file this process created */
    } else if (p->magic != ECCL_STATS_MAGIC || p->version != ECCL_STATS_VERSION ||
               p->size != size) {
        WARN("ECCL_METRICS_FILE=%s: not an eccl counter page of version %d", path,
             ECCL_STATS_VERSION);
        munmap(p, size);
        goto out_close;
    }
    atomic_store_explicit(&stats_page, p, memory_order_release);
out_close:
    close(fd); /* the mapping stays until the process ends */
}

struct eccl_stats_page *eccl_stats_page(void)
{
    struct eccl_stats_page *p = atomic_load_explicit(&stats_page, memory_order_acquire);
    if (p)
        return p;
    pthread_once(&stats_once, stats_map);
    return atomic_load_explicit(&stats_page, memory_order_acquire);
}

const char *eccl_stats_kind_name(int kind)
{
    static const char *const names[ECCL_STATS_KINDS] = {"allreduce", "allgather", "reducescatter",
                                                        "broadcast", "reduce",    "alltoall",
                                                        "sendrecv",  "gather",    "scatter"};
    return kind >= 0 && kind < ECCL_STATS_KINDS ? names[kind] : "?";
}

const char *eccl_stats_cause_name(int cause)
{
    static const char *const names[ECCL_STATS_CAUSE_COUNT] = {
        "none", "revoked", "heartbeat_lost", "store_lost", "superseded", "comm_error", "requested"};
    return cause >= 0 && cause < ECCL_STATS_CAUSE_COUNT ? names[cause] : "?";
}

/*
 * log.h - NCCL-style logging: `host:pid:tid [dev] ECCL INFO ...`.
 *
 * Controlled by ECCL_DEBUG (VERSION, WARN, INFO, ABORT, TRACE), ECCL_DEBUG_SUBSYS (comma list,
 * ^ inverts) and ECCL_DEBUG_FILE (%h host, %p pid). NCCL_* names are honoured when the ECCL_*
 * one is unset. Every WARN, printed or not, becomes the calling thread's last-error text.
 */
#ifndef ECCL_COMMON_LOG_H
#define ECCL_COMMON_LOG_H

#include <stdint.h>

enum eccl_log_level {
    ECCL_LOG_NONE = 0,
    ECCL_LOG_VERSION = 1,
    ECCL_LOG_WARN = 2,
    ECCL_LOG_INFO = 3,
    ECCL_LOG_ABORT = 4,
    ECCL_LOG_TRACE = 5,
};

/* Subsystems, as NCCL names them, plus eccl's STORE and ELASTIC. */
#define ECCL_LOG_INIT      0x1ULL
#define ECCL_LOG_COLL      0x2ULL
#define ECCL_LOG_P2P       0x4ULL
#define ECCL_LOG_SHM       0x8ULL
#define ECCL_LOG_NET       0x10ULL
#define ECCL_LOG_GRAPH     0x20ULL
#define ECCL_LOG_TUNING    0x40ULL
#define ECCL_LOG_ENV       0x80ULL
#define ECCL_LOG_ALLOC     0x100ULL
#define ECCL_LOG_CALL      0x200ULL
#define ECCL_LOG_PROXY     0x400ULL
#define ECCL_LOG_NVLS      0x800ULL
#define ECCL_LOG_BOOTSTRAP 0x1000ULL
#define ECCL_LOG_REG       0x2000ULL
#define ECCL_LOG_PROFILE   0x4000ULL
#define ECCL_LOG_RAS       0x8000ULL
#define ECCL_LOG_DESTROY   0x10000ULL
#define ECCL_LOG_STORE     0x20000ULL
#define ECCL_LOG_ELASTIC   0x40000ULL
#define ECCL_LOG_ALL       (~0ULL)

extern int eccl_log_level_cached; /* -1 until the environment was read */

void eccl_log(int level, uint64_t subsys, const char *file, int line, const char *func,
              const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The device (or host rank) printed in brackets, per thread; -1 until set. */
void eccl_log_set_dev(int dev);
int eccl_log_get_dev(void);

/* The calling thread's last WARN text ("" if none). */
const char *eccl_log_last_error(void);
void eccl_log_clear_last_error(void);
/* Sets the calling thread's last-error text (to carry a failure's text across threads). */
void eccl_log_set_last_error(const char *text);

/* Re-reads ECCL_DEBUG* (tests). */
void eccl_log_reset(void);

#define WARN(...) eccl_log(ECCL_LOG_WARN, ECCL_LOG_ALL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define INFO(subsys, ...)                                                                 \
    do {                                                                                  \
        if (eccl_log_level_cached < 0 || eccl_log_level_cached >= ECCL_LOG_INFO)          \
            eccl_log(ECCL_LOG_INFO, (subsys), __FILE__, __LINE__, __func__, __VA_ARGS__); \
    } while (0)
#define TRACE(subsys, ...)                                                                 \
    do {                                                                                   \
        if (eccl_log_level_cached < 0 || eccl_log_level_cached >= ECCL_LOG_TRACE)          \
            eccl_log(ECCL_LOG_TRACE, (subsys), __FILE__, __LINE__, __func__, __VA_ARGS__); \
    } while (0)

#endif

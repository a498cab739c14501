/*
 * check.h - the error-propagation macros every layer uses.
 *
 * The macro's name says what it does on failure: ECCL_TRY returns (only before the function owns
 * anything), the _GOTO forms store the result and jump to a cleanup label. Failures are logged
 * once where they are first seen (WARN with the real cause); propagation leaves only a TRACE
 * breadcrumb.
 */
#ifndef ECCL_COMMON_CHECK_H
#define ECCL_COMMON_CHECK_H

#include <errno.h>
#include <string.h>

#include "eccl.h"
#include "common/log.h"

#define ECCL_TRY(expr)                                                        \
    do {                                                                      \
        ecclResult_t try_res_ = (expr);                                       \
        if (try_res_ != ecclSuccess) {                                        \
            TRACE(ECCL_LOG_ALL, "-> %d %s:%d", try_res_, __FILE__, __LINE__); \
            return try_res_;                                                  \
        }                                                                     \
    } while (0)

#define ECCL_TRY_GOTO(expr, res, label)                                    \
    do {                                                                   \
        (res) = (expr);                                                    \
        if ((res) != ecclSuccess) {                                        \
            TRACE(ECCL_LOG_ALL, "-> %d %s:%d", (res), __FILE__, __LINE__); \
            goto label;                                                    \
        }                                                                  \
    } while (0)

/* For calls that return -1 and set errno. */
#define ECCL_SYS_GOTO(call, res, label)                    \
    do {                                                   \
        if ((call) == -1) {                                \
            WARN("%s failed: %s", #call, strerror(errno)); \
            (res) = ecclSystemError;                       \
            goto label;                                    \
        }                                                  \
    } while (0)

/* Allocates n objects of *ptr's type through the tagged allocator, or jumps with ecclSystemError. */
#define ECCL_CALLOC_GOTO(ptr, n, tag, res, label)        \
    do {                                                 \
        (ptr) = eccl_calloc((n), sizeof(*(ptr)), (tag)); \
        if ((ptr) == NULL) {                             \
            (res) = ecclSystemError;                     \
            goto label;                                  \
        }                                                \
    } while (0)

/* Argument checks for the public API: a WARN that names the argument, then a return. */
#define ECCL_ARG_CHECK(cond, ...)       \
    do {                                \
        if (!(cond)) {                  \
            WARN(__VA_ARGS__);          \
            return ecclInvalidArgument; \
        }                               \
    } while (0)

#ifdef ECCL_DEBUG_BUILD
#define ECCL_ASSERT(cond)                                \
    do {                                                 \
        if (!(cond))                                     \
            eccl_assert_fail(#cond, __FILE__, __LINE__); \
    } while (0)
#else
#define ECCL_ASSERT(cond) ((void)0)
#endif

void eccl_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

#define ECCL_MIN(a, b)      ((a) < (b) ? (a) : (b))
#define ECCL_MAX(a, b)      ((a) > (b) ? (a) : (b))
#define ECCL_DIV_UP(a, b)   (((a) + (b)-1) / (b))
#define ECCL_ALIGN_UP(a, b) (ECCL_DIV_UP((a), (b)) * (b))
#define ECCL_ARRAY_SIZE(a)  (sizeof(a) / sizeof((a)[0]))

#endif

/*
 * param.h - ECCL_* configuration variables.
 *
 * Each variable is declared once, with ECCL_PARAM_INT or ECCL_PARAM_STR, which defines an
 * accessor eccl_param_<name>() that reads ECCL_<NAME> (or, if unset, NCCL_<NAME>) once, caches
 * it, and logs the value at INFO ENV when it was set. docs/env.md lists every variable;
 * tools/check-env-docs.sh keeps the two in step.
 */
#ifndef ECCL_COMMON_PARAM_H
#define ECCL_COMMON_PARAM_H

#include <stdint.h>

int64_t eccl_param_read_int(const char *name, int64_t def);
const char *eccl_param_read_str(const char *name, const char *def);
/* Forgets cached values (tests that change the environment). */
void eccl_param_reset(void);
uint64_t eccl_param_generation(void);

#define ECCL_PARAM_INT(fn, name, def)           \
    static inline int64_t eccl_param_##fn(void) \
    {                                           \
        return eccl_param_read_int(name, def);  \
    }

#define ECCL_PARAM_STR(fn, name, def)               \
    static inline const char *eccl_param_##fn(void) \
    {                                               \
        return eccl_param_read_str(name, def);      \
    }

#endif

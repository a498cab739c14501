/*
 * ib_hca.h - ECCL_IB_HCA, the choice of HCAs and ports, in NCCL's grammar.
 *
 *   mlx5            every device whose name starts with "mlx5", every port
 *   mlx5_0:1,mlx5_1 port 1 of mlx5_0 (and prefixes: mlx5_0x too), every port of mlx5_1
 *   =mlx5_0         exactly mlx5_0 (not mlx5_01)
 *   ^mlx5_1         everything but devices starting with mlx5_1 ("^=" excludes exact names)
 *
 * An unset or empty value selects everything. Pure functions.
 */
#ifndef ECCL_PROXY_IB_HCA_H
#define ECCL_PROXY_IB_HCA_H

#include <stdbool.h>

#include "eccl.h"

#define PROXY_IB_HCA_MAX      32
#define PROXY_IB_HCA_NAME_MAX 64

struct proxy_ib_hca_spec {
    bool exclude; /* leading '^' */
    bool exact;   /* '=' (after '^' if both) */
    int n;        /* entries; 0: everything matches */
    struct {
        char name[PROXY_IB_HCA_NAME_MAX];
        int port; /* -1: any port */
    } ent[PROXY_IB_HCA_MAX];
};

/* Parses text (NULL or "" select everything). ecclInvalidUsage with a WARN naming ECCL_IB_HCA
 * for a bad port, an over-long name or too many entries. */
ecclResult_t proxy_ib_hca_parse(const char *text, struct proxy_ib_hca_spec *out);
/* Whether port `port` of device `dev` is selected. */
bool proxy_ib_hca_match(const struct proxy_ib_hca_spec *spec, const char *dev, int port);

#endif

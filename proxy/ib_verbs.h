/*
 * ib_verbs.h - the libibverbs entry points eccl uses, as a table of function pointers.
 *
 * eccl never links -libverbs: proxy_ib_verbs_open dlopens libibverbs.so.1 and resolves every
 * exported function below with dlsym; the pointer types come from Debian's libibverbs-dev
 * headers (__typeof__ of each declaration), so a mismatch with the installed ABI is a compile
 * error. Tests may fill a table by hand (a fake provider) instead of opening the library.
 *
 * Three verbs used on the data path are static inline in <infiniband/verbs.h> and go through
 * the context's ops table (qp->context->ops.post_send, ...): ibv_post_send, ibv_post_recv and
 * ibv_poll_cq. They are called straight from the header: they reference no exported symbol,
 * so they need no dlsym and work for any context (real or fake). ibv_query_port is an inline
 * wrapper too, but it falls back to the exported compat symbol: use proxy_ib_verbs_query_port,
 * which calls the context's extended query_port op where the provider has one and the dlsym'd
 * ibv_query_port otherwise. ibv_reg_mr is a macro in newer headers that may call ibv_reg_mr or
 * ibv_reg_mr_iova2: eccl always calls the exported ibv_reg_mr through the table.
 */
#ifndef ECCL_PROXY_IB_VERBS_H
#define ECCL_PROXY_IB_VERBS_H

#include <infiniband/verbs.h>

#include "eccl.h"

#define PROXY_IB_VERBS_LIB "libibverbs.so.1"

struct proxy_ib_verbs {
    void *lib; /* dlopen handle; NULL for a table filled by a test */
    /* Required: open fails (INFO, not WARN) when one is missing. */
    __typeof__(ibv_get_device_list) *get_device_list;
    __typeof__(ibv_free_device_list) *free_device_list;
    __typeof__(ibv_get_device_name) *get_device_name;
    __typeof__(ibv_open_device) *open_device;
    __typeof__(ibv_close_device) *close_device;
    __typeof__(ibv_query_device) *query_device;
    __typeof__(ibv_query_port) *query_port; /* compat entry point: see the header comment */
    __typeof__(ibv_query_gid) *query_gid;
    __typeof__(ibv_alloc_pd) *alloc_pd;
    __typeof__(ibv_dealloc_pd) *dealloc_pd;
    __typeof__(ibv_reg_mr) *reg_mr;
    __typeof__(ibv_dereg_mr) *dereg_mr;
    __typeof__(ibv_create_cq) *create_cq;
    __typeof__(ibv_destroy_cq) *destroy_cq;
    __typeof__(ibv_create_qp) *create_qp;
    __typeof__(ibv_modify_qp) *modify_qp;
    __typeof__(ibv_destroy_qp) *destroy_qp;
    /* Optional (NULL when the library is too old): dma-buf registration (rdma-core >= 34). */
    __typeof__(ibv_reg_dmabuf_mr) *reg_dmabuf_mr;
};

/*
 * Opens `lib` (PROXY_IB_VERBS_LIB) and resolves the table. When the library is missing or lacks
 * a required symbol: ecclInternalError with an INFO NET line, nothing left open. *v is written
 * only on success.
 */
ecclResult_t proxy_ib_verbs_open(struct proxy_ib_verbs *v, const char *lib);
/* dlcloses the library (if the table came from one) and clears the table. */
void proxy_ib_verbs_close(struct proxy_ib_verbs *v);

/* ibv_query_port done right for both old and new providers (see above). Returns 0 or an errno
 * value. */
int proxy_ib_verbs_query_port(const struct proxy_ib_verbs *v, struct ibv_context *ctx, uint8_t port,
                              struct ibv_port_attr *attr);

#endif

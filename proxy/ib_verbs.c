/*
 * ib_verbs.c - loads libibverbs with dlopen and resolves the verbs eccl uses (ib_verbs.h).
 *
 * A missing library or symbol is not an error of eccl's: the machine simply has no usable
 * verbs stack, and the network selection falls back to sockets. Such failures are therefore
 * logged at INFO NET, never WARN.
 */
#include "proxy/ib_verbs.h"

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#include "common/check.h"
#include "common/log.h"

struct verbs_sym {
    const char *name;
    size_t offset; /* of the pointer in struct proxy_ib_verbs */
    int required;
};

#define SYM(field, sym, req)                              \
    {                                                     \
#sym, offsetof(struct proxy_ib_verbs, field), req \
    }

static const struct verbs_sym verbs_syms[] = {
    SYM(get_device_list, ibv_get_device_list, 1),
    SYM(free_device_list, ibv_free_device_list, 1),
    SYM(get_device_name, ibv_get_device_name, 1),
    SYM(open_device, ibv_open_device, 1),
    SYM(close_device, ibv_close_device, 1),
    SYM(query_device, ibv_query_device, 1),
    SYM(query_port, ibv_query_port, 1),
    SYM(query_gid, ibv_query_gid, 1),
    SYM(alloc_pd, ibv_alloc_pd, 1),
    SYM(dealloc_pd, ibv_dealloc_pd, 1),
    SYM(reg_mr, ibv_reg_mr, 1),
    SYM(dereg_mr, ibv_dereg_mr, 1),
    SYM(create_cq, ibv_create_cq, 1),
    SYM(destroy_cq, ibv_destroy_cq, 1),
    SYM(create_qp, ibv_create_qp, 1),
    SYM(modify_qp, ibv_modify_qp, 1),
    SYM(destroy_qp, ibv_destroy_qp, 1),
    SYM(reg_dmabuf_mr, ibv_reg_dmabuf_mr, 0),
};

ecclResult_t proxy_ib_verbs_open(struct proxy_ib_verbs *v, const char *lib)
{
    struct proxy_ib_verbs t;
    memset(&t, 0, sizeof(t));
    t.lib = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!t.lib) {
        INFO(ECCL_LOG_NET, "NET/IB : cannot load %s (%s): InfiniBand/RoCE not available", lib,
             dlerror());
        return ecclInternalError;
    }
    for (size_t i = 0; i < ECCL_ARRAY_SIZE(verbs_syms); i++) {
        dlerror();
        void *sym = dlsym(t.lib, verbs_syms[i].name);
        if (!sym && verbs_syms[i].required) {
            INFO(ECCL_LOG_NET, "NET/IB : %s lacks %s: InfiniBand/RoCE not available", lib,
                 verbs_syms[i].name);
            dlclose(t.lib);
            return ecclInternalError;
        }
        /* POSIX guarantees that a void * from dlsym converts to a function pointer. */
        memcpy((char *)&t + verbs_syms[i].offset, &sym, sizeof(sym));
    }
    *v = t;
    return ecclSuccess;
}

void proxy_ib_verbs_close(struct proxy_ib_verbs *v)
{
    if (v->lib)
        dlclose(v->lib);
    memset(v, 0, sizeof(*v));
}

int proxy_ib_verbs_query_port(const struct proxy_ib_verbs *v, struct ibv_context *ctx, uint8_t port,
                              struct ibv_port_attr *attr)
{
    /* Providers of rdma-core >= 21 give an extended context with a query_port op that fills
     * the whole (newer, larger) struct; older ones only have the compat entry point, which
     * fills the leading fields that struct _compat_ibv_port_attr shares with it. */
    struct verbs_context *vctx = verbs_get_ctx_op(ctx, query_port);
    memset(attr, 0, sizeof(*attr));
    if (vctx)
        return vctx->query_port(ctx, port, attr, sizeof(*attr));
    return v->query_port(ctx, port, (struct _compat_ibv_port_attr *)attr);
}

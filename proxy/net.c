/*
 * net.c - picks the network backend the proxy drives (ECCL_NET).
 *
 * ECCL_NET=socket forces TCP sockets, ECCL_NET=ib forces InfiniBand/RoCE verbs (an error when
 * no device is usable), and unset tries verbs first and falls back to sockets with an INFO line.
 * NCCL's spellings ("Socket", "IB") are accepted. The verbs backend's init reports "no device"
 * (with an INFO line of its own) where libibverbs or an RDMA device is missing.
 */
#include "proxy/net.h"

#include <stddef.h>
#include <strings.h>

#include "common/check.h"
#include "common/log.h"
#include "common/param.h"

ECCL_PARAM_STR(net, "ECCL_NET", NULL)

static const struct eccl_net_ops *net_ib_ops(void)
{
    return eccl_net_ib.init != NULL ? &eccl_net_ib : NULL;
}

static ecclResult_t use_socket(const struct eccl_net_ops **out, const char *why)
{
    ECCL_TRY(eccl_net_socket.init());
    INFO(ECCL_LOG_NET | ECCL_LOG_INIT, "NET : using network backend socket%s", why);
    *out = &eccl_net_socket;
    return ecclSuccess;
}

ecclResult_t proxy_net_select(const struct eccl_net_ops **out)
{
    ECCL_ARG_CHECK(out != NULL, "proxy_net_select: out is NULL");
    const char *want = eccl_param_net();
    const struct eccl_net_ops *ib = net_ib_ops();
    if (want && want[0] != '\0') {
        if (strcasecmp(want, "socket") == 0)
            return use_socket(out, " (ECCL_NET=socket)");
        if (strcasecmp(want, "ib") != 0) {
            WARN("NET : ECCL_NET=%s is not a network backend (socket or ib)", want);
            return ecclInvalidUsage;
        }
        if (!ib) {
            WARN("NET : ECCL_NET=ib but this library was built without the InfiniBand backend");
            return ecclInvalidUsage;
        }
        ecclResult_t res = ib->init();
        if (res != ecclSuccess) {
            WARN("NET : ECCL_NET=ib but no InfiniBand/RoCE device is usable here");
            return ecclInvalidUsage;
        }
        INFO(ECCL_LOG_NET | ECCL_LOG_INIT, "NET : using network backend ib (ECCL_NET=ib)");
        *out = ib;
        return ecclSuccess;
    }
    if (ib && ib->init() == ecclSuccess) {
        INFO(ECCL_LOG_NET | ECCL_LOG_INIT, "NET : using network backend ib");
        *out = ib;
        return ecclSuccess;
    }
    INFO(ECCL_LOG_NET | ECCL_LOG_INIT, "NET/IB : no device found, using sockets");
    return use_socket(out, "");
}

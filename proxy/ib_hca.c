/*
 * ib_hca.c - the ECCL_IB_HCA matcher (ib_hca.h). Pure functions.
 */
#include "proxy/ib_hca.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

ecclResult_t proxy_ib_hca_parse(const char *text, struct proxy_ib_hca_spec *out)
{
    struct proxy_ib_hca_spec s;
    memset(&s, 0, sizeof(s));
    const char *p = text ? text : "";
    if (*p == '^') {
        s.exclude = true;
        p++;
    }
    if (*p == '=') {
        s.exact = true;
        p++;
    }
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *tok = p;
        p += n;
        if (*p == ',')
            p++;
        if (n == 0)
            continue; /* "a,,b" */
        size_t name_len = n;
        int port = -1;
        const char *colon = memchr(tok, ':', n);
        if (colon) {
            name_len = (size_t)(colon - tok);
            char digits[16];
            size_t dl = n - name_len - 1;
            if (dl == 0 || dl >= sizeof(digits)) {
                WARN("ECCL_IB_HCA='%s': bad port in '%.*s'", text, (int)n, tok);
                return ecclInvalidUsage;
            }
            memcpy(digits, colon + 1, dl);
            digits[dl] = '\0';
            char *end = NULL;
            long v = strtol(digits, &end, 10);
            if (*end != '\0' || v < 1 || v > 255) {
                WARN("ECCL_IB_HCA='%s': bad port in '%.*s' (1..255)", text, (int)n, tok);
                return ecclInvalidUsage;
            }
            port = (int)v;
        }
        if (name_len == 0 || name_len >= PROXY_IB_HCA_NAME_MAX) {
            WARN("ECCL_IB_HCA='%s': bad device name '%.*s'", text, (int)n, tok);
            return ecclInvalidUsage;
        }
        if (s.n == PROXY_IB_HCA_MAX) {
            WARN("ECCL_IB_HCA='%s': more than %d entries", text, PROXY_IB_HCA_MAX);
            return ecclInvalidUsage;
        }
        memcpy(s.ent[s.n].name, tok, name_len);
        s.ent[s.n].name[name_len] = '\0';
        s.ent[s.n].port = port;
        s.n++;
    }
    *out = s;
    return ecclSuccess;
}

bool proxy_ib_hca_match(const struct proxy_ib_hca_spec *spec, const char *dev, int port)
{
    if (spec->n == 0)
        return true;
    bool found = false;
    for (int i = 0; i < spec->n && !found; i++) {
        const char *name = spec->ent[i].name;
        bool name_ok = spec->exact ? strcmp(name, dev) == 0 : strncmp(name, dev, strlen(name)) == 0;
        found = name_ok && (spec->ent[i].port < 0 || spec->ent[i].port == port);
    }
    return spec->exclude ? !found : found;
}

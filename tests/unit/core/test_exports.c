/*
 * test_exports.c - libeccl.so exports exactly the public API: every function of NCCL 2.28's API
 * with the eccl prefix (include/eccl.h), the elastic API (include/eccl_elastic.h), and nothing
 * else (checked with nm -D).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *expected[] = {
    "ecclAllGather",
    "ecclAllReduce",
    "ecclAlltoAll",
    "ecclBcast",
    "ecclBroadcast",
    "ecclCommAbort",
    "ecclCommCount",
    "ecclCommCuDevice",
    "ecclCommDeregister",
    "ecclCommDestroy",
    "ecclCommFinalize",
    "ecclCommGetAsyncError",
    "ecclCommInitAll",
    "ecclCommInitRank",
    "ecclCommInitRankConfig",
    "ecclCommInitRankScalable",
    "ecclCommRegister",
    "ecclCommRevoke",
    "ecclCommShrink",
    "ecclCommSplit",
    "ecclCommUserRank",
    "ecclCommWindowDeregister",
    "ecclCommWindowRegister",
    "ecclElasticCommit",
    "ecclElasticDestroy",
    "ecclElasticGetComm",
    "ecclElasticGetInfo",
    "ecclElasticJoin",
    "ecclElasticLeave",
    "ecclElasticPoll",
    "ecclElasticRecover",
    "ecclElasticSyncState",
    "ecclGather",
    "ecclGetErrorString",
    "ecclGetLastError",
    "ecclGetUniqueId",
    "ecclGetVersion",
    "ecclGroupEnd",
    "ecclGroupSimulateEnd",
    "ecclGroupStart",
    "ecclMemAlloc",
    "ecclMemFree",
    "ecclRecv",
    "ecclRedOpCreatePreMulSum",
    "ecclRedOpDestroy",
    "ecclReduce",
    "ecclReduceScatter",
    "ecclScatter",
    "ecclSend",
};

int main(void)
{
    const char *build = getenv("ECCL_BUILD") ? getenv("ECCL_BUILD") : "build";
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "nm -D --defined-only %s/lib/libeccl.so", build);
    FILE *p = popen(cmd, "r");
    if (!p) {
        perror("popen");
        return 1;
    }
    size_t n = sizeof(expected) / sizeof(expected[0]);
    int found[sizeof(expected) / sizeof(expected[0])] = {0};
    char line[512];
    int bad = 0, total = 0;
    while (fgets(line, sizeof(line), p)) {
        char addr[64], type[8], name[400];
        if (sscanf(line, "%63s %7s %399s", addr, type, name) != 3)
            continue;
        /* Linker-made symbols of the shared object itself. */
        if (strcmp(name, "_init") == 0 || strcmp(name, "_fini") == 0)
            continue;
        total++;
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(name, expected[i]) == 0)
                break;
        if (i == n) {
            printf("unexpected export: %s (%s)\n", name, type);
            bad = 1;
        } else {
            found[i] = 1;
        }
    }
    int rc = pclose(p);
    if (rc != 0 || total == 0) {
        printf("'%s' failed or printed nothing (rc %d)\n", cmd, rc);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!found[i]) {
            printf("missing export: %s\n", expected[i]);
            bad = 1;
        }
    }
    printf("%d exports checked: %s\n", total, bad ? "FAILED" : "OK");
    return bad;
}

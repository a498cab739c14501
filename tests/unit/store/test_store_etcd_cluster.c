/*
 * test_store_etcd_cluster.c - the etcd backend against a three-member etcd cluster on loopback,
 * with two members in the client's endpoint list. The member the client talks to is killed in
 * the middle of a watch under writes: the client moves to the other endpoint, the watch resumes
 * there and no event is lost. Then contract cases run with that member still down (each call
 * first finds it refusing and moves on). Exits 77 when /usr/bin/etcd is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/param.h"
#include "common/time.h"
#include "store/store.h"

#include "etcd_helper.h"

static char contract_url[256];
static struct etcd_proc members[3];

/* The first listed member dies (and stays down). */
static void contract_disrupt(void)
{
    etcd_kill(&members[0]);
}

/* This binary runs a subset of the contract cases. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "contract.h"

static int start_cluster(void)
{
    char cluster[512] = "";
    for (int i = 0; i < 3; i++) {
        snprintf(members[i].name, sizeof(members[i].name), "m%d", i);
        if (etcd_prepare(&members[i]) != 0)
            return -1;
        char part[64];
        snprintf(part, sizeof(part), "%sm%d=http://127.0.0.1:%d", i ? "," : "", i,
                 members[i].peer_port);
        strncat(cluster, part, sizeof(cluster) - strlen(cluster) - 1);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(members[i].cluster, sizeof(members[i].cluster), "%s", cluster);
        if (etcd_spawn(&members[i]) != 0)
            return -1;
    }
    for (int i = 0; i < 3; i++)
        if (etcd_wait_healthy(&members[i]) != 0)
            return -1;
    return 0;
}

int main(void)
{
    if (!etcd_available()) {
        fprintf(stderr, "SKIP: %s is not installed (apt-get install etcd-server)\n", ETCD_BIN);
        return 77;
    }
    int rc = 1;
    if (start_cluster() != 0) {
        fprintf(stderr, "the etcd cluster did not start\n");
        goto out;
    }
    snprintf(contract_url, sizeof(contract_url), "etcd://127.0.0.1:%d,127.0.0.1:%d",
             members[0].client_port, members[1].client_port);
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(contract_watch_resume), /* kills member 0 in the middle */
        cmocka_unit_test(contract_put_get),      cmocka_unit_test(contract_txn),
        cmocka_unit_test(contract_cas_race),     cmocka_unit_test(contract_lease_expiry),
        cmocka_unit_test(contract_watch_replay),
    };
    rc = cmocka_run_group_tests_name("store etcd cluster failover", tests, NULL, NULL) ? 1 : 0;
    if (eccl_alloc_live_blocks(NULL) != blocks0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks\n", (long long)(eccl_alloc_live_blocks(NULL) - blocks0));
        rc = 1;
    }
out:
    for (int i = 0; i < 3; i++)
        etcd_destroy(&members[i]);
    return rc;
}

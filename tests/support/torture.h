/*
 * torture.h - scenarios shared by the fault sweeps: the store scenario that
 * tests/unit/store/test_store_alloc.c sweeps inside one process and that tests/fault/test_torture.c
 * runs once per injected fault (tests/torture.sh).
 */
#ifndef ECCL_TESTS_SUPPORT_TORTURE_H
#define ECCL_TESTS_SUPPORT_TORTURE_H

/* Every store operation against an embedded server started here (server start, open, watches
 * with a shared replayed stream, put, get, get_prefix, cas, lease grant/keep/ttl/revoke,
 * delete, watch poll, wait_key), each allowed to fail; everything it took is released. Returns
 * how many steps succeeded (a clean run does 16). */
int torture_store_ops(void);

#endif

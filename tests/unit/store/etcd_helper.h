/*
 * etcd_helper.h - the store tests' name for the shared etcd helper (tests/support/etcd.h): a real
 * etcd on loopback, started and stopped by pid.
 */
#ifndef ECCL_TESTS_STORE_ETCD_HELPER_H
#define ECCL_TESTS_STORE_ETCD_HELPER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/time.h"
#include "tests/support/etcd.h"

#endif

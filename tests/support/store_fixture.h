/*
 * store_fixture.h - the embedded store server started inside a test process (store_server_start
 * on 127.0.0.1 with a free port), with its base URL for store_open.
 */
#ifndef ECCL_TESTS_SUPPORT_STORE_FIXTURE_H
#define ECCL_TESTS_SUPPORT_STORE_FIXTURE_H

#include "store/store.h"

struct store_fixture {
    struct store_server *srv;
    int port;
    char url[128]; /* "tcp://127.0.0.1:PORT" (append "/prefix") */
};

/* Starts the server. 0 on success. */
int store_fixture_start(struct store_fixture *f);
/* Stops it (joins its threads). Idempotent. */
void store_fixture_stop(struct store_fixture *f);

#endif

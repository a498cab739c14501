/*
 * store_fixture.c - the embedded store server for tests (store_fixture.h).
 */
#include "tests/support/store_fixture.h"

#include <stdio.h>
#include <string.h>

int store_fixture_start(struct store_fixture *f)
{
    memset(f, 0, sizeof(*f));
    if (store_server_start("127.0.0.1:0", &f->srv, &f->port) != ecclSuccess)
        return -1;
    snprintf(f->url, sizeof(f->url), "tcp://127.0.0.1:%d", f->port);
    return 0;
}

void store_fixture_stop(struct store_fixture *f)
{
    store_server_stop(f->srv);
    f->srv = NULL;
}

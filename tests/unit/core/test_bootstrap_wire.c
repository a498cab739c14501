/*
 * test_bootstrap_wire.c - the checks bootstrap runs on what other processes send it
 * (core_bootstrap_decode, shared with tests/fuzz/fuzz_bootstrap.c): valid messages pass; a wrong
 * magic, ranks out of range, a lying length, a bad peer table or a malformed reply are refused
 * with the error bootstrap would return. Includes the fuzzer's finding: a reply whose status is
 * ecclInProgress is malformed (it used to be passed on to the caller of init).
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "core/core_int.h"

#define MAGIC 0x1234567890abcdefULL
#define NR    4
#define REPLY 256 /* sizeof(struct reply) in bootstrap.c: magic, status, nranks, text[240] */

static struct core_peer_info peers[NR];
static unsigned char buf[sizeof(ecclUniqueId) + REPLY + NR * sizeof(struct core_peer_info)];

static size_t encode(enum core_bootstrap_wire kind, int rank)
{
    memset(peers, 0, sizeof(peers));
    for (int i = 0; i < NR; i++) {
        peers[i].rank = i;
        peers[i].listen_addr.sin.sin_family = AF_INET;
        peers[i].listen_addr.sin.sin_port = htons((uint16_t)(20000 + i));
        peers[i].listen_addr.sin.sin_addr.s_addr = htonl(0x7f000001);
    }
    size_t len = 0;
    const struct core_peer_info *p = kind == CORE_BOOTSTRAP_REPLY ? peers : peers + rank;
    assert_int_equal(core_bootstrap_encode(kind, MAGIC, rank, NR, p, buf, sizeof(buf), &len),
                     ecclSuccess);
    return len;
}

static void test_valid_messages(void **state)
{
    (void)state;
    for (int k = CORE_BOOTSTRAP_HELLO; k <= CORE_BOOTSTRAP_ID; k++) {
        size_t len = encode((enum core_bootstrap_wire)k, 1);
        assert_int_equal(core_bootstrap_decode((enum core_bootstrap_wire)k, buf, len, MAGIC, NR),
                         ecclSuccess);
        /* One byte short is refused, never read past. */
        assert_int_not_equal(
            core_bootstrap_decode((enum core_bootstrap_wire)k, buf, len - 1, MAGIC, NR),
            ecclSuccess);
    }
}

static void test_wrong_magic(void **state)
{
    (void)state;
    size_t len = encode(CORE_BOOTSTRAP_HELLO, 0);
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_HELLO, buf, len, MAGIC + 1, NR),
                     ecclRemoteError);
    len = encode(CORE_BOOTSTRAP_CONN, 0);
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_CONN, buf, len, MAGIC + 1, NR),
                     ecclRemoteError);
    len = encode(CORE_BOOTSTRAP_REPLY, 0);
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_REPLY, buf, len, MAGIC + 1, NR),
                     ecclSystemError);
    memset(buf, 0, sizeof(ecclUniqueId));
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_ID, buf, sizeof(ecclUniqueId), MAGIC, NR),
                     ecclInvalidArgument);
}

static void test_ranks_out_of_range(void **state)
{
    (void)state;
    /* A hello's rank must be below its nranks; a connection's sender below ours. */
    size_t len = encode(CORE_BOOTSTRAP_HELLO, 3);
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_HELLO, buf, len, MAGIC, NR), ecclSuccess);
    len = encode(CORE_BOOTSTRAP_CONN, 3);
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_CONN, buf, len, MAGIC, 3),
                     ecclRemoteError);
    /* A peer table whose entry does not name its rank. */
    len = encode(CORE_BOOTSTRAP_REPLY, 0);
    struct core_peer_info bad = peers[2];
    bad.rank = 3;
    memcpy(buf + REPLY + 2 * sizeof(bad), &bad, sizeof(bad));
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_REPLY, buf, len, MAGIC, NR),
                     ecclSystemError);
    /* A reply for another communicator size. */
    len = encode(CORE_BOOTSTRAP_REPLY, 0);
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_REPLY, buf, len, MAGIC, NR - 1),
                     ecclSystemError);
}

static void test_reply_status(void **state)
{
    (void)state;
    size_t len = encode(CORE_BOOTSTRAP_REPLY, 0);
    int32_t status = ecclInvalidUsage; /* the root's error is what init returns */
    memcpy(buf + 8, &status, sizeof(status));
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_REPLY, buf, len, MAGIC, NR),
                     ecclInvalidUsage);
    /* Found by fuzz_bootstrap: ecclInProgress is no answer; it is a malformed reply. */
    status = ecclInProgress;
    memcpy(buf + 8, &status, sizeof(status));
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_REPLY, buf, len, MAGIC, NR),
                     ecclSystemError);
    status = -1;
    memcpy(buf + 8, &status, sizeof(status));
    assert_int_equal(core_bootstrap_decode(CORE_BOOTSTRAP_REPLY, buf, len, MAGIC, NR),
                     ecclSystemError);
}

int main(void)
{
    setenv("ECCL_DEBUG", "NONE", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_messages),
        cmocka_unit_test(test_wrong_magic),
        cmocka_unit_test(test_ranks_out_of_range),
        cmocka_unit_test(test_reply_status),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (eccl_alloc_live_blocks(NULL) != 0) {
        eccl_alloc_report();
        return 1;
    }
    return rc;
}

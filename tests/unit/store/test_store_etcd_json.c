/*
 * test_store_etcd_json.c - the etcd backend's JSON parsing without an etcd: base64 both ways,
 * int64 as strings or numbers (lease IDs above 2^53), omitted defaults, the gateway's exact
 * answers quoted in the etcd notes, and hostile input (wrong types, bad base64, truncated JSON)
 * that must give an error, never a crash or a leak.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "store/etcd_json.h"

static json_t *load(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    assert_non_null(j);
    return j;
}

static void b64_roundtrip(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"/nccl/job1/leader", "L25jY2wvam9iMS9sZWFkZXI="},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *enc;
        assert_int_equal(etcd_b64_encode(cases[i][0], strlen(cases[i][0]), &enc), ecclSuccess);
        assert_string_equal(enc, cases[i][1]);
        uint8_t *dec;
        size_t len;
        assert_int_equal(etcd_b64_decode(enc, strlen(enc), &dec, &len), ecclSuccess);
        assert_int_equal(len, strlen(cases[i][0]));
        assert_memory_equal(dec, cases[i][0], len);
        assert_int_equal(dec[len], 0);
        eccl_free(enc);
        eccl_free(dec);
    }
    /* Every byte value survives. */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *enc;
    uint8_t *dec;
    size_t len;
    assert_int_equal(etcd_b64_encode(all, 256, &enc), ecclSuccess);
    assert_int_equal(etcd_b64_decode(enc, strlen(enc), &dec, &len), ecclSuccess);
    assert_int_equal(len, 256);
    assert_memory_equal(dec, all, 256);
    eccl_free(enc);
    eccl_free(dec);
    /* Malformed: bad length, bad bytes, padding in the middle or too much of it. */
    const char *bad[] = {"Zg=", "Z", "Zm9v!A==", "Zg==Zg==", "====", "Z===", "Zm 9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dec = (uint8_t *)1;
        assert_int_equal(etcd_b64_decode(bad[i], strlen(bad[i]), &dec, &len), ecclRemoteError);
        assert_ptr_equal(dec, (uint8_t *)1);
    }
}

static void ints_and_defaults(void **state)
{
    (void)state;
    json_t *j = load("{\"a\":\"2324035570966067735\",\"b\":17,\"c\":\"-1\",\"d\":null,"
                     "\"e\":\"12x\",\"f\":1.5,\"g\":\"\",\"h\":\"99999999999999999999\","
                     "\"t\":true,\"s\":\"true\"}");
    int64_t v = 7;
    assert_int_equal(etcd_json_i64(j, "a", &v), ecclSuccess);
    assert_true(v == 2324035570966067735LL); /* above 2^53: no double on the way */
    assert_int_equal(etcd_json_i64(j, "b", &v), ecclSuccess);
    assert_int_equal(v, 17);
    assert_int_equal(etcd_json_i64(j, "c", &v), ecclSuccess);
    assert_int_equal(v, -1);
    assert_int_equal(etcd_json_i64(j, "d", &v), ecclSuccess);
    assert_int_equal(v, 0);
    assert_int_equal(etcd_json_i64(j, "absent", &v), ecclSuccess);
    assert_int_equal(v, 0);
    v = 7;
    assert_int_equal(etcd_json_i64(j, "e", &v), ecclRemoteError);
    assert_int_equal(etcd_json_i64(j, "f", &v), ecclRemoteError);
    assert_int_equal(etcd_json_i64(j, "g", &v), ecclRemoteError);
    assert_int_equal(etcd_json_i64(j, "h", &v), ecclRemoteError);
    assert_int_equal(v, 7);
    bool b = false;
    assert_int_equal(etcd_json_bool(j, "t", &b), ecclSuccess);
    assert_true(b);
    assert_int_equal(etcd_json_bool(j, "absent", &b), ecclSuccess);
    assert_false(b);
    assert_int_equal(etcd_json_bool(j, "s", &b), ecclRemoteError);
    json_decref(j);
}

static void range_and_txn(void **state)
{
    (void)state;
    /* The notes' failed create-if-absent: no "succeeded" at all, the holder in response_range. */
    json_t *j = load(
        "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\","
        "\"revision\":\"5\",\"raft_term\":\"2\"},\"responses\":[{\"response_range\":{\"header\":"
        "{\"revision\":\"5\"},\"kvs\":[{\"key\":\"L25jY2wvam9iMS9sZWFkZXI=\",\"create_revision\":"
        "\"5\",\"mod_revision\":\"5\",\"version\":\"1\",\"value\":\"cmFuazA=\"}],\"count\":\"1\"}}]"
        "}");
    struct store_txn_result r;
    assert_int_equal(etcd_parse_txn(j, &r), ecclSuccess);
    assert_false(r.succeeded);
    assert_int_equal(r.revision, 5);
    assert_int_equal(r.count, 1);
    assert_string_equal(r.kvs[0].key, "/nccl/job1/leader");
    assert_string_equal(r.kvs[0].value, "rank0");
    assert_int_equal(r.kvs[0].create_rev, 5);
    assert_int_equal(r.kvs[0].lease, 0);
    store_txn_result_fini(&r);
    json_decref(j);

    j = load("{\"header\":{\"revision\":\"6\"},\"succeeded\":true,\"responses\":[{"
             "\"response_put\":{\"header\":{\"revision\":\"6\"}}}]}");
    assert_int_equal(etcd_parse_txn(j, &r), ecclSuccess);
    assert_true(r.succeeded);
    assert_int_equal(r.count, 0);
    json_decref(j);

    /* An empty range: kvs, count and more omitted. */
    j = load("{\"header\":{\"revision\":\"9\"}}");
    struct store_kvs kvs;
    assert_int_equal(etcd_parse_range(j, &kvs), ecclSuccess);
    assert_int_equal(kvs.count, 0);
    assert_int_equal(kvs.revision, 9);
    assert_false(kvs.more);
    json_decref(j);

    /* A kv with an empty value (omitted) and a lease. */
    j = load("{\"kvs\":[{\"key\":\"YQ==\",\"lease\":\"2324035570966067742\"}],\"more\":true}");
    assert_int_equal(etcd_parse_range(j, &kvs), ecclSuccess);
    assert_int_equal(kvs.count, 1);
    assert_int_equal(kvs.kvs[0].value_len, 0);
    assert_string_equal(kvs.kvs[0].value, "");
    assert_true(kvs.kvs[0].lease == 2324035570966067742LL);
    assert_true(kvs.more);
    for (size_t i = 0; i < kvs.count; i++)
        store_kv_fini(&kvs.kvs[i]);
    eccl_free(kvs.kvs);
    json_decref(j);

    /* Hostile shapes: errors, nothing written, nothing leaked. */
    const char *bad[] = {
        "{\"kvs\":{}}",
        "{\"kvs\":[1]}",
        "{\"kvs\":[{\"key\":5}]}",
        "{\"kvs\":[{\"key\":\"YQ==\"},{\"key\":\"@@@@\"}]}",
        "{\"kvs\":[{\"key\":\"YQ==\",\"mod_revision\":\"x\"}]}",
        "{\"header\":[]}",
        "{\"header\":{\"revision\":true}}",
        "{\"more\":\"yes\"}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = load(bad[i]);
        kvs.count = 12345;
        assert_int_equal(etcd_parse_range(j, &kvs), ecclRemoteError);
        assert_int_equal(kvs.count, 12345);
        json_decref(j);
    }
    const char *badtxn[] = {"{\"responses\":{}}", "{\"responses\":[3]}",
                            "{\"responses\":[{\"response_range\":[]}]}", "{\"succeeded\":1}"};
    for (size_t i = 0; i < sizeof(badtxn) / sizeof(badtxn[0]); i++) {
        j = load(badtxn[i]);
        assert_int_equal(etcd_parse_txn(j, &r), ecclRemoteError);
        json_decref(j);
    }
}

static void watch_lines(void **state)
{
    (void)state;
    struct etcd_watch_msg m;
    const char *created = "{\"result\":{\"header\":{\"cluster_id\":\"324952591200643719\","
                          "\"member_id\":\"3319814642761637952\",\"revision\":\"11\","
                          "\"raft_term\":\"2\"},\"created\":true}}";
    assert_int_equal(etcd_parse_watch_line(created, strlen(created), &m), ecclSuccess);
    assert_true(m.created);
    assert_false(m.canceled);
    assert_int_equal(m.revision, 11);
    assert_int_equal(m.nevents, 0);
    etcd_watch_msg_fini(&m);

    /* One txn = one message: a PUT (no "type") and a DELETE at one revision. */
    const char *events =
        "{\"result\":{\"header\":{\"revision\":\"15\"},\"events\":[{\"kv\":{\"key\":\"eA==\","
        "\"create_revision\":\"15\",\"mod_revision\":\"15\",\"version\":\"1\",\"value\":\"MQ==\"}},"
        "{\"type\":\"DELETE\",\"kv\":{\"key\":\"eQ==\",\"mod_revision\":\"15\"}}]}}";
    assert_int_equal(etcd_parse_watch_line(events, strlen(events), &m), ecclSuccess);
    assert_int_equal(m.nevents, 2);
    assert_int_equal(m.events[0].type, STORE_EVENT_PUT);
    assert_string_equal(m.events[0].kv.key, "x");
    assert_string_equal(m.events[0].kv.value, "1");
    assert_int_equal(m.events[1].type, STORE_EVENT_DELETE);
    assert_string_equal(m.events[1].kv.key, "y");
    assert_int_equal(m.events[1].kv.mod_rev, 15);
    etcd_watch_msg_fini(&m);

    const char *compacted = "{\"result\":{\"header\":{\"revision\":\"20\"},\"canceled\":true,"
                            "\"compact_revision\":\"13\"}}";
    assert_int_equal(etcd_parse_watch_line(compacted, strlen(compacted), &m), ecclSuccess);
    assert_true(m.canceled);
    assert_int_equal(m.compact_revision, 13);
    etcd_watch_msg_fini(&m);

    const char *auth = "{\"result\":{\"header\":{},\"watch_id\":\"-1\",\"created\":true,"
                       "\"canceled\":true,\"cancel_reason\":\"rpc error: code = Unauthenticated "
                       "desc = etcdserver: invalid auth token\"}}";
    assert_int_equal(etcd_parse_watch_line(auth, strlen(auth), &m), ecclSuccess);
    assert_true(m.canceled);
    assert_non_null(strstr(m.cancel_reason, "invalid auth token"));
    etcd_watch_msg_fini(&m);

    const char *err = "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"gone\"}}";
    assert_int_equal(etcd_parse_watch_line(err, strlen(err), &m), ecclSuccess);
    assert_true(m.is_error);
    assert_string_equal(m.cancel_reason, "gone");
    etcd_watch_msg_fini(&m);

    const char *bad[] = {
        "{\"result\":",
        "{}",
        "[1]",
        "{\"result\":{\"events\":{}}}",
        "{\"result\":{\"events\":[{\"type\":\"PUTX\",\"kv\":{\"key\":\"eA==\",\"mod_revision\":"
        "\"1\"}}]}}",
        "{\"result\":{\"events\":[{\"kv\":{\"key\":\"eA==\"}}]}}", /* no revision */
        "{\"result\":{\"events\":[{\"kv\":{\"key\":\"eA==\",\"mod_revision\":\"9\"}},"
        "{\"kv\":{\"key\":\"eA==\",\"mod_revision\":\"8\"}}]}}", /* out of order */
        "{\"result\":{\"events\":[{}]}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(etcd_parse_watch_line(bad[i], strlen(bad[i]), &m), ecclRemoteError);
        assert_int_equal(m.nevents, 0);
        assert_null(m.events);
    }
}

static void error_bodies(void **state)
{
    (void)state;
    char msg[256];
    int code;
    const char *b = "{\"error\":\"etcdserver: requested lease not found\",\"message\":"
                    "\"etcdserver: requested lease not found\",\"code\":5}";
    etcd_parse_error(b, strlen(b), msg, sizeof(msg), &code);
    assert_string_equal(msg, "etcdserver: requested lease not found");
    assert_int_equal(code, 5);
    etcd_parse_error("404 page not found", 18, msg, sizeof(msg), &code);
    assert_string_equal(msg, "");
    assert_int_equal(code, -1);
    etcd_parse_error(NULL, 0, msg, sizeof(msg), &code);
    assert_int_equal(code, -1);
}

int main(void)
{
    int64_t blocks0 = eccl_alloc_live_blocks(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(b64_roundtrip), cmocka_unit_test(ints_and_defaults),
        cmocka_unit_test(range_and_txn), cmocka_unit_test(watch_lines),
        cmocka_unit_test(error_bodies),
    };
    int failed = cmocka_run_group_tests_name("store etcd json", tests, NULL, NULL);
    if (eccl_alloc_live_blocks(NULL) != blocks0) {
        eccl_alloc_report();
        fprintf(stderr, "leak: %lld blocks\n", (long long)(eccl_alloc_live_blocks(NULL) - blocks0));
        return 1;
    }
    return failed ? 1 : 0;
}

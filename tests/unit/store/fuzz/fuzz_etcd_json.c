/*
 * fuzz_etcd_json.c - libFuzzer target for the etcd backend's response parsing: each input is
 * parsed as a watch stream line, as a range response, a txn response and an error body, and as
 * base64. Build and run: tests/unit/store/fuzz/run.sh.
 */
#include <stddef.h>
#include <stdint.h>

#include "common/alloc.h"
#include "store/etcd_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct etcd_watch_msg m;
    if (etcd_parse_watch_line(text, size, &m) == ecclSuccess)
        etcd_watch_msg_fini(&m);

    json_error_t err;
    json_t *j = json_loadb(text, size, 0, &err);
    if (j) {
        struct store_kvs kvs;
        if (etcd_parse_range(j, &kvs) == ecclSuccess) {
            for (size_t i = 0; i < kvs.count; i++)
                store_kv_fini(&kvs.kvs[i]);
            eccl_free(kvs.kvs);
        }
        struct store_txn_result r;
        if (etcd_parse_txn(j, &r) == ecclSuccess)
            store_txn_result_fini(&r);
        json_decref(j);
    }
    char msg[256];
    int code;
    etcd_parse_error(text, size, msg, sizeof(msg), &code);

    uint8_t *dec;
    size_t len;
    if (etcd_b64_decode(text, size, &dec, &len) == ecclSuccess) {
        char *enc;
        if (etcd_b64_encode(dec, len, &enc) == ecclSuccess)
            eccl_free(enc);
        eccl_free(dec);
    }
    return 0;
}

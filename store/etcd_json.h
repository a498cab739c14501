/*
 * etcd_json.h - encoding and decoding of etcd v3 JSON gateway messages (jansson): base64 bytes,
 * int64 fields sent as strings, omitted defaults (absent = 0 / false / empty), kvs, txn results,
 * watch stream lines. Separate from the HTTP side so that the parsers can be fuzzed alone. Every
 * parser treats its input as hostile: wrong types, bad base64 or numbers out of range are errors
 * (ecclRemoteError with a WARN), never a crash.
 */
#ifndef ECCL_STORE_ETCD_JSON_H
#define ECCL_STORE_ETCD_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Standard base64 with padding. *out is NUL-terminated, allocated with eccl_calloc. */
ecclResult_t etcd_b64_encode(const void *in, size_t len, char **out);
ecclResult_t etcd_b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len);

/* Adds `name`: base64(bytes) to obj. */
ecclResult_t etcd_json_set_bytes(json_t *obj, const char *name, const void *p, size_t len);
/* Adds `name`: "<decimal>" to obj. */
ecclResult_t etcd_json_set_i64(json_t *obj, const char *name, int64_t v);

/* Reads an int64 member sent as a string or a number; absent gives 0. */
ecclResult_t etcd_json_i64(const json_t *obj, const char *name, int64_t *out);
/* Reads a bool member; absent gives false. */
ecclResult_t etcd_json_bool(const json_t *obj, const char *name, bool *out);
/* header.revision of a response (0 when absent). */
ecclResult_t etcd_json_revision(const json_t *resp, int64_t *out);
/* One mvccpb.KeyValue object into kv (key and value copied). */
ecclResult_t etcd_json_kv(const json_t *obj, struct store_kv *kv);
/* Appends the "kvs" array of a range response to an array. */
ecclResult_t etcd_json_kvs(const json_t *resp, struct store_kv **kvs, size_t *count, size_t *cap);

/* A range response. */
ecclResult_t etcd_parse_range(const json_t *resp, struct store_kvs *out);
/* A txn response: succeeded, header revision, kvs of its response_range entries. */
ecclResult_t etcd_parse_txn(const json_t *resp, struct store_txn_result *out);

/* A line of the watch stream, decoded. */
struct etcd_watch_msg {
    bool created;
    bool canceled;
    int64_t revision; /* header.revision */
    int64_t compact_revision;
    char cancel_reason[256];
    bool is_error; /* a stream-level {"error":{...}} object */
    struct store_event *events;
    size_t nevents;
};

/* Parses one JSON line of a watch stream (text of `len` bytes). Events keep full keys. */
ecclResult_t etcd_parse_watch_line(const char *text, size_t len, struct etcd_watch_msg *out);
void etcd_watch_msg_fini(struct etcd_watch_msg *m);

/* The "message" (or "error") text and gRPC "code" of an error body; "" and -1 when absent. */
void etcd_parse_error(const char *body, size_t len, char *msg, size_t msg_len, int *code);

#endif

/*
 * fuzz_bootstrap.c - libFuzzer target for what bootstrap (core/bootstrap.c) reads from other
 * processes: the hello a rank sends the root, the root's reply and peer table, the header of a
 * ring or point-to-point connection, and a unique id handed in by the application
 * (core_bootstrap_decode, the checks bootstrap itself runs on those bytes).
 *
 * Input: byte 0 picks the message, byte 1 the communicator size (1..64), the rest is the
 * message. Contract: any bytes give a result (accepted, or refused with an error), never a crash
 * or an overrun; what core_bootstrap_encode writes for the input's rank is accepted, and refused
 * under another communicator's magic.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "core/core_int.h"
#include "tests/fuzz/fuzz_util.h"

#define MAGIC   0x6a6f622d6d616769ULL
#define MAX_NR  64
#define MAX_BUF (sizeof(ecclUniqueId) + 512 + MAX_NR * sizeof(struct core_peer_info))

static void fill_peers(struct core_peer_info *peers, int nranks)
{
    memset(peers, 0, sizeof(*peers) * (size_t)nranks);
    for (int i = 0; i < nranks; i++) {
        peers[i].rank = i;
        peers[i].pid = 1000 + i;
        peers[i].host_hash = 0xabcdefULL;
        peers[i].listen_addr.sin.sin_family = AF_INET;
        peers[i].listen_addr.sin.sin_port = htons((uint16_t)(30000 + i));
        peers[i].listen_addr.sin.sin_addr.s_addr = htonl(0x7f000001);
        peers[i].cuda_dev = -1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    enum core_bootstrap_wire kind = (enum core_bootstrap_wire)(data[0] % 4);
    int nranks = 1 + data[1] % MAX_NR;
    ecclResult_t res = core_bootstrap_decode(kind, data + 2, size - 2, MAGIC, nranks);
    FUZZ_CHECK(res >= ecclSuccess && res < ecclNumResults && res != ecclInProgress);

    /* Valid messages of this size are accepted; a foreign magic is refused. */
    static struct core_peer_info peers[MAX_NR];
    fill_peers(peers, nranks);
    int rank = size > 2 ? data[2] % nranks : 0;
    static unsigned char buf[MAX_BUF];
    size_t len = 0;
    const struct core_peer_info *p = kind == CORE_BOOTSTRAP_REPLY ? peers : peers + rank;
    FUZZ_CHECK(core_bootstrap_encode(kind, MAGIC, rank, nranks, p, buf, sizeof(buf), &len) ==
               ecclSuccess);
    FUZZ_CHECK(core_bootstrap_decode(kind, buf, len, MAGIC, nranks) == ecclSuccess);
    if (kind != CORE_BOOTSTRAP_ID)
        FUZZ_CHECK(core_bootstrap_decode(kind, buf, len, MAGIC ^ 1, nranks) != ecclSuccess);
    return 0;
}

static void seed_msg(const char *name, enum core_bootstrap_wire kind, int rank, int nranks)
{
    static struct core_peer_info peers[MAX_NR];
    static unsigned char buf[2 + MAX_BUF];
    fill_peers(peers, nranks);
    size_t len = 0;
    const struct core_peer_info *p = kind == CORE_BOOTSTRAP_REPLY ? peers : peers + rank;
    FUZZ_CHECK(core_bootstrap_encode(kind, MAGIC, rank, nranks, p, buf + 2, MAX_BUF, &len) ==
               ecclSuccess);
    buf[0] = (unsigned char)kind;
    buf[1] = (unsigned char)(nranks - 1);
    fuzz_seed(name, buf, len + 2);
}

static void fuzz_seeds(void)
{
    seed_msg("hello", CORE_BOOTSTRAP_HELLO, 2, 4);
    seed_msg("reply-1", CORE_BOOTSTRAP_REPLY, 0, 1);
    seed_msg("reply-4", CORE_BOOTSTRAP_REPLY, 0, 4);
    seed_msg("conn", CORE_BOOTSTRAP_CONN, 3, 8);
    seed_msg("id", CORE_BOOTSTRAP_ID, 0, 1);
}

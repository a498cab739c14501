/*
 * test_proxy.c - the proxy on its own: setup operations, descriptor passing over its UDS socket
 * (and what it does with requests that lie), network connectors moved by the proxy thread over
 * loopback sockets, and what an abort or a vanished peer does to them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/hash.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"
#include "proxy/proxy.h"
#include "tests/support/mp.h"

#define MAGIC 0x1234abcd5678ef00ULL

static _Atomic uint32_t no_abort;

static struct proxy_state *make_proxy(uint64_t magic, int rank, int nranks,
                                      const _Atomic uint32_t *abort)
{
    struct proxy_params p = {.comm_magic = magic, .rank = rank, .nranks = nranks, .abort = abort};
    struct proxy_state *px = NULL;
    assert_int_equal(proxy_create(&px, &p), ecclSuccess);
    return px;
}

static int client_open(uint64_t magic, int rank)
{
    char name[96];
    snprintf(name, sizeof(name), "eccl-%016llx-%d", (unsigned long long)magic, rank);
    int fd = -1;
    assert_int_equal(eccl_uds_open(name, &fd), ecclSuccess);
    return fd;
}

static ecclResult_t call(struct proxy_state *px, enum proxy_op_type type, int conn, const void *req,
                         size_t req_size, void *resp, size_t resp_size)
{
    return proxy_op_call(px, type, conn, req, req_size, resp, resp_size, eccl_deadline_ms(5000),
                         NULL);
}

static int conn_init(struct proxy_state *px, int transport, bool send, int peer, uint32_t nslots,
                     uint32_t slot_bytes)
{
    struct proxy_init_req req = {.transport = transport,
                                 .send = send,
                                 .peer = peer,
                                 .tag = 7,
                                 .nslots = nslots,
                                 .slot_bytes = slot_bytes};
    struct proxy_init_resp resp;
    assert_int_equal(call(px, PROXY_OP_INIT, -1, &req, sizeof(req), &resp, sizeof(resp)),
                     ecclSuccess);
    return resp.conn;
}

static bool last_error_has(const char *text)
{
    const char *e = eccl_log_last_error();
    return e && strstr(e, text);
}

/* Rank 1's proxy offers a segment to rank 0, which fetches it once and sees the same memory. */
static void test_shm_segment_passing(void **s)
{
    (void)s;
    struct proxy_state *px = make_proxy(MAGIC, 1, 3, &no_abort);
    int c0 = client_open(MAGIC, 0);
    int c2 = client_open(MAGIC, 2);
    int conn = conn_init(px, PROXY_TRANSPORT_SHM, false, 0, 4, 4096);
    struct proxy_setup_resp setup;
    assert_int_equal(call(px, PROXY_OP_SETUP, conn, NULL, 0, &setup, sizeof(setup)), ecclSuccess);
    assert_non_null(setup.ctrl);
    assert_int_equal(setup.ctrl->magic, ECCL_CONN_MAGIC);
    assert_int_equal(setup.size, eccl_conn_bytes(4, 4096));

    /* Another rank asks for it: refused, and the segment stays for its owner. */
    int fd = -1;
    assert_int_equal(
        proxy_client_get_fd(c2, MAGIC, 2, 1, setup.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclRemoteError);
    assert_int_equal(fd, -1);
    /* A handle that does not exist. */
    assert_int_equal(proxy_client_get_fd(c0, MAGIC, 0, 1, setup.handle ^ 0x10, &fd,
                                         eccl_deadline_ms(2000), NULL),
                     ecclRemoteError);

    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, setup.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclSuccess);
    assert_true(fd >= 0);
    void *p = mmap(NULL, setup.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    close(fd);
    struct eccl_conn_ctrl *mine = p;
    assert_int_equal(mine->magic, ECCL_CONN_MAGIC);
    memcpy(eccl_conn_data(mine), "hello", 6);
    assert_string_equal(eccl_conn_data(setup.ctrl), "hello");
    munmap(p, setup.size);

    /* Served once: a second request is refused. */
    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, setup.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclRemoteError);
    close(c0);
    close(c2);
    proxy_destroy(px);
}

/* A receive connection's Setup may hand the proxy a second descriptor (a GPU connector's device
 * memory): the proxy serves it under its own handle, once, to the same peer only, beside the
 * segment; descriptors handed to a failing Setup and never fetched are closed. */
static void test_shm_device_descriptor(void **s)
{
    (void)s;
    int fds_before = mp_count_fds();
    struct proxy_state *px = make_proxy(MAGIC, 1, 3, &no_abort);
    int c0 = client_open(MAGIC, 0);
    int c2 = client_open(MAGIC, 2);
    int conn = conn_init(px, PROXY_TRANSPORT_SHM, false, 0, 4, 4096);
    int dev = memfd_create("fake-device-memory", MFD_CLOEXEC);
    assert_true(dev >= 0);
    assert_int_equal(ftruncate(dev, 8192), 0);
    struct proxy_setup_req req = {.dev_fd = dev};
    struct proxy_setup_resp setup;
    assert_int_equal(call(px, PROXY_OP_SETUP, conn, &req, sizeof(req), &setup, sizeof(setup)),
                     ecclSuccess);
    assert_true(setup.dev_handle != 0);
    assert_true(setup.dev_handle != setup.handle);

    /* Another rank may not have it. */
    int fd = -1;
    assert_int_equal(
        proxy_client_get_fd(c2, MAGIC, 2, 1, setup.dev_handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclRemoteError);
    /* The peer gets the very file the Setup handed over, and the segment separately. */
    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, setup.dev_handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclSuccess);
    assert_true(fd >= 0);
    assert_int_equal(lseek(fd, 0, SEEK_END), 8192);
    close(fd);
    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, setup.dev_handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclRemoteError);
    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, setup.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclSuccess);
    assert_int_equal(lseek(fd, 0, SEEK_END), (off_t)setup.size);
    close(fd);

    /* A second Setup of the same connection fails; the proxy still closes its descriptor. */
    int dev2 = memfd_create("fake-device-memory-2", MFD_CLOEXEC);
    assert_true(dev2 >= 0);
    req.dev_fd = dev2;
    assert_int_equal(call(px, PROXY_OP_SETUP, conn, &req, sizeof(req), &setup, sizeof(setup)),
                     ecclInternalError);
    /* A descriptor the peer never fetches is closed with the proxy. */
    int conn2 = conn_init(px, PROXY_TRANSPORT_SHM, false, 0, 2, 4096);
    int dev3 = memfd_create("fake-device-memory-3", MFD_CLOEXEC);
    assert_true(dev3 >= 0);
    req.dev_fd = dev3;
    assert_int_equal(call(px, PROXY_OP_SETUP, conn2, &req, sizeof(req), &setup, sizeof(setup)),
                     ecclSuccess);
    close(c0);
    close(c2);
    proxy_destroy(px);
    assert_int_equal(mp_count_fds(), fds_before);
}

/* Export (registered buffers): the proxy keeps a descriptor for one peer, serves it once to
 * that peer only; a request that is not well formed fails and its descriptor is closed, as is
 * one never fetched when the proxy goes. */
static void test_export(void **s)
{
    (void)s;
    int fds_before = mp_count_fds();
    struct proxy_state *px = make_proxy(MAGIC, 1, 3, &no_abort);
    int c0 = client_open(MAGIC, 0);
    int c2 = client_open(MAGIC, 2);
    int mem = memfd_create("fake-registered-buffer", MFD_CLOEXEC);
    assert_true(mem >= 0);
    assert_int_equal(ftruncate(mem, 12288), 0);
    struct proxy_export_req req = {.fd = mem, .peer = 2};
    struct proxy_export_resp resp = {0};
    assert_int_equal(call(px, PROXY_OP_EXPORT, -1, &req, sizeof(req), &resp, sizeof(resp)),
                     ecclSuccess);
    assert_true(resp.handle != 0);
    int fd = -1;
    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, resp.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclRemoteError);
    assert_int_equal(fd, -1);
    assert_int_equal(
        proxy_client_get_fd(c2, MAGIC, 2, 1, resp.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclSuccess);
    assert_true(fd >= 0);
    assert_int_equal(lseek(fd, 0, SEEK_END), 12288);
    close(fd);
    assert_int_equal(
        proxy_client_get_fd(c2, MAGIC, 2, 1, resp.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclRemoteError);

    /* Not for this rank itself, nor for a rank that does not exist, nor without a descriptor;
     * the descriptors given are closed. */
    int bad_peers[] = {1, 3, -1};
    for (int i = 0; i < 3; i++) {
        int m = memfd_create("fake-registered-buffer-bad", MFD_CLOEXEC);
        assert_true(m >= 0);
        req = (struct proxy_export_req){.fd = m, .peer = bad_peers[i]};
        assert_int_equal(call(px, PROXY_OP_EXPORT, -1, &req, sizeof(req), &resp, sizeof(resp)),
                         ecclInternalError);
    }
    req = (struct proxy_export_req){.fd = -1, .peer = 0};
    assert_int_equal(call(px, PROXY_OP_EXPORT, -1, &req, sizeof(req), &resp, sizeof(resp)),
                     ecclInternalError);
    int m = memfd_create("fake-registered-buffer-short", MFD_CLOEXEC);
    req = (struct proxy_export_req){.fd = m, .peer = 0};
    assert_int_equal(call(px, PROXY_OP_EXPORT, -1, &req, sizeof(req) - 1, &resp, sizeof(resp)),
                     ecclInternalError);
    /* One the peer never fetches goes with the proxy. */
    m = memfd_create("fake-registered-buffer-kept", MFD_CLOEXEC);
    req = (struct proxy_export_req){.fd = m, .peer = 0};
    assert_int_equal(call(px, PROXY_OP_EXPORT, -1, &req, sizeof(req), &resp, sizeof(resp)),
                     ecclSuccess);
    close(c0);
    close(c2);
    proxy_destroy(px);
    assert_int_equal(mp_count_fds(), fds_before);
}

/* Datagrams that lie: wrong size, magic, communicator, type, sender, with descriptors attached.
 * The proxy drops them (closing the descriptors) and still serves an honest request. */
static void test_uds_garbage(void **s)
{
    (void)s;
    struct proxy_state *px = make_proxy(MAGIC, 1, 2, &no_abort);
    int c0 = client_open(MAGIC, 0);
    int conn = conn_init(px, PROXY_TRANSPORT_SHM, false, 0, 2, 4096);
    struct proxy_setup_resp setup;
    assert_int_equal(call(px, PROXY_OP_SETUP, conn, NULL, 0, &setup, sizeof(setup)), ecclSuccess);
    int fds_before = mp_count_fds();

    char name[96];
    snprintf(name, sizeof(name), "eccl-%016llx-1-proxy", (unsigned long long)MAGIC);
    uint64_t words[6] = {0};
    int carry = dup(0);
    assert_int_equal(eccl_uds_send(c0, name, "x", 1, carry, eccl_deadline_ms(1000), NULL),
                     ecclSuccess);
    close(carry);
    assert_int_equal(
        eccl_uds_send(c0, name, words, sizeof(words), -1, eccl_deadline_ms(1000), NULL),
        ecclSuccess);
    words[0] = 0x6570787975647331ULL; /* the right magic, the wrong communicator */
    words[1] = MAGIC + 1;
    assert_int_equal(
        eccl_uds_send(c0, name, words, sizeof(words), -1, eccl_deadline_ms(1000), NULL),
        ecclSuccess);
    /* Right communicator, bad sender rank and type (layout: magic, comm, op, handle, type,
     * from, result, pad). */
    words[1] = MAGIC;
    words[3] = setup.handle;
    int32_t *tail = (int32_t *)&words[4];
    tail[0] = 1;   /* GETFD */
    tail[1] = 999; /* from: out of range */
    assert_int_equal(
        eccl_uds_send(c0, name, words, sizeof(words), -1, eccl_deadline_ms(1000), NULL),
        ecclSuccess);
    tail[0] = 77; /* unknown type */
    tail[1] = 0;
    assert_int_equal(
        eccl_uds_send(c0, name, words, sizeof(words), -1, eccl_deadline_ms(1000), NULL),
        ecclSuccess);

    int fd = -1;
    assert_int_equal(
        proxy_client_get_fd(c0, MAGIC, 0, 1, setup.handle, &fd, eccl_deadline_ms(2000), NULL),
        ecclSuccess);
    close(fd);
    /* The descriptor that rode on garbage was closed by the proxy; the segment's memfd too
     * (served once). */
    assert_true(mp_count_fds() <= fds_before);
    close(c0);
    proxy_destroy(px);
}

static void test_bad_ops(void **s)
{
    (void)s;
    struct proxy_state *px = make_proxy(MAGIC, 0, 2, &no_abort);
    struct proxy_init_req bad = {.transport = 9, .peer = 1, .nslots = 4, .slot_bytes = 4096};
    struct proxy_init_resp resp;
    assert_int_equal(call(px, PROXY_OP_INIT, -1, &bad, sizeof(bad), &resp, sizeof(resp)),
                     ecclInternalError);
    bad.transport = PROXY_TRANSPORT_SHM;
    bad.peer = 2; /* out of range */
    assert_int_equal(call(px, PROXY_OP_INIT, -1, &bad, sizeof(bad), &resp, sizeof(resp)),
                     ecclInternalError);
    bad.peer = 1;
    bad.nslots = ECCL_CONN_MAX_SLOTS + 1;
    assert_int_equal(call(px, PROXY_OP_INIT, -1, &bad, sizeof(bad), &resp, sizeof(resp)),
                     ecclInternalError);
    struct proxy_setup_resp setup;
    assert_int_equal(call(px, PROXY_OP_SETUP, 42, NULL, 0, &setup, sizeof(setup)),
                     ecclInternalError);
    assert_true(last_error_has("unknown connection"));
    assert_int_equal(proxy_op_poll(px, 0xdead, NULL, 0), ecclInternalError);
    /* Connect of a shm send connection with a descriptor that is not a segment of the right
     * size: refused, descriptor closed. */
    int conn = conn_init(px, PROXY_TRANSPORT_SHM, true, 1, 4, 4096);
    int fds_before = mp_count_fds();
    struct proxy_connect_req req;
    memset(&req, 0, sizeof(req));
    req.fd = memfd_create("small", MFD_CLOEXEC);
    assert_true(req.fd >= 0);
    assert_int_equal(ftruncate(req.fd, 100), 0);
    req.size = eccl_conn_bytes(4, 4096);
    struct proxy_connect_resp cresp;
    assert_int_equal(call(px, PROXY_OP_CONNECT, conn, &req, sizeof(req), &cresp, sizeof(cresp)),
                     ecclRemoteError);
    assert_true(last_error_has("smaller than its header says"));
    assert_int_equal(mp_count_fds(), fds_before);
    proxy_destroy(px);
}

/* Executor side of a FIFO, for the network tests. */
static void fifo_post(struct eccl_conn_ctrl *c, struct eccl_bell *bell, const void *data,
                      uint32_t size)
{
    uint32_t tail = atomic_load(&c->tail);
    uint64_t deadline = eccl_deadline_ms(5000);
    while (tail - atomic_load(&c->head) >= c->nslots) {
        assert_false(eccl_deadline_passed(deadline));
        usleep(50);
    }
    memcpy(eccl_conn_data(c) + (size_t)(tail % c->nslots) * c->slot_bytes, data, size);
    atomic_store(&c->sizes[tail % c->nslots], size);
    atomic_store(&c->tail, tail + 1);
    eccl_bell_ring(bell);
}

/* Returns the step's size (its bytes copied to out), or -1 when the FIFO closed. */
static int fifo_take(struct eccl_conn_ctrl *c, struct eccl_bell *bell, void *out)
{
    uint32_t head = atomic_load(&c->head);
    uint64_t deadline = eccl_deadline_ms(5000);
    while (atomic_load(&c->tail) == head) {
        if (atomic_load(&c->closed))
            return -1;
        assert_false(eccl_deadline_passed(deadline));
        usleep(50);
    }
    uint32_t size = atomic_load(&c->sizes[head % c->nslots]);
    memcpy(out, eccl_conn_data(c) + (size_t)(head % c->nslots) * c->slot_bytes, size);
    atomic_store(&c->head, head + 1);
    eccl_bell_ring(bell);
    return (int)size;
}

struct net_pair {
    struct proxy_state *a; /* sends */
    struct proxy_state *b; /* receives */
    struct eccl_conn_ctrl *send;
    struct eccl_conn_ctrl *recv;
};

/* Two proxies (ranks 0 and 1 of one communicator): a network connection from 0 to 1. */
static void net_pair_make(struct net_pair *np, const _Atomic uint32_t *abort_a,
                          const _Atomic uint32_t *abort_b, uint32_t nslots, uint32_t slot_bytes)
{
    np->a = make_proxy(MAGIC + 7, 0, 2, abort_a);
    np->b = make_proxy(MAGIC + 7, 1, 2, abort_b);
    assert_int_equal(call(np->a, PROXY_OP_SHARED_INIT, -1, NULL, 0, NULL, 0), ecclSuccess);
    assert_int_equal(call(np->b, PROXY_OP_SHARED_INIT, -1, NULL, 0, NULL, 0), ecclSuccess);
    int rc = conn_init(np->b, PROXY_TRANSPORT_NET, false, 0, nslots, slot_bytes);
    struct proxy_setup_resp rs;
    assert_int_equal(call(np->b, PROXY_OP_SETUP, rc, NULL, 0, &rs, sizeof(rs)), ecclSuccess);
    int sc = conn_init(np->a, PROXY_TRANSPORT_NET, true, 1, nslots, slot_bytes);
    struct proxy_setup_resp ss;
    assert_int_equal(call(np->a, PROXY_OP_SETUP, sc, NULL, 0, &ss, sizeof(ss)), ecclSuccess);
    struct proxy_connect_req req;
    memset(&req, 0, sizeof(req));
    req.fd = -1;
    memcpy(req.net_handle, rs.net_handle, sizeof(req.net_handle));
    uint64_t op_a = 0, op_b = 0;
    assert_int_equal(proxy_op_post(np->a, PROXY_OP_CONNECT, sc, &req, sizeof(req),
                                   sizeof(struct proxy_connect_resp), &op_a),
                     ecclSuccess);
    assert_int_equal(proxy_op_post(np->b, PROXY_OP_CONNECT, rc, NULL, 0,
                                   sizeof(struct proxy_connect_resp), &op_b),
                     ecclSuccess);
    struct proxy_connect_resp ra, rb;
    ecclResult_t a = ecclInProgress, b = ecclInProgress;
    uint64_t deadline = eccl_deadline_ms(10000);
    while (a == ecclInProgress || b == ecclInProgress) {
        assert_false(eccl_deadline_passed(deadline));
        if (a == ecclInProgress)
            a = proxy_op_poll(np->a, op_a, &ra, sizeof(ra));
        if (b == ecclInProgress)
            b = proxy_op_poll(np->b, op_b, &rb, sizeof(rb));
        usleep(100);
    }
    assert_int_equal(a, ecclSuccess);
    assert_int_equal(b, ecclSuccess);
    np->send = ra.ctrl;
    np->recv = rb.ctrl;
    assert_ptr_equal(np->send, ss.ctrl);
    assert_ptr_equal(np->recv, rs.ctrl);
}

/* Steps of every size from 0 to a full slot, several times round the FIFO, arrive in order. */
static void test_net_steps(void **s)
{
    (void)s;
    struct net_pair np;
    net_pair_make(&np, &no_abort, &no_abort, 4, 8192);
    static char in[8192], out[8192];
    uint32_t sizes[] = {0, 1, 8, 4095, 8192, 100, 8192, 7, 3000, 0, 8192, 64, 1, 2, 3, 8191};
    int n = (int)(sizeof(sizes) / sizeof(sizes[0]));
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < n; i++) {
            for (uint32_t k = 0; k < sizes[i]; k++)
                in[k] = (char)(k * 31 + (uint32_t)i + (uint32_t)round);
            fifo_post(np.send, proxy_bell(np.a), in, sizes[i]);
            /* Keep a few steps in flight before taking. */
            if (i % 3 == 2 || i == n - 1) {
                for (int j = i - (i % 3); j <= i; j++) {
                    int got = fifo_take(np.recv, proxy_bell(np.b), out);
                    assert_int_equal(got, (int)sizes[j]);
                    for (uint32_t k = 0; k < sizes[j]; k++)
                        assert_int_equal(out[k], (char)(k * 31 + (uint32_t)j + (uint32_t)round));
                }
            }
        }
    }
    proxy_destroy(np.a);
    proxy_destroy(np.b);
}

/* A sender whose communicator aborts closes the network: the receiving FIFO closes too. */
static void test_net_abort_propagates(void **s)
{
    (void)s;
    _Atomic uint32_t abort_a = 0;
    struct net_pair np;
    net_pair_make(&np, &abort_a, &no_abort, 4, 4096);
    char buf[16] = "x";
    fifo_post(np.send, proxy_bell(np.a), buf, 1);
    assert_int_equal(fifo_take(np.recv, proxy_bell(np.b), buf), 1);
    double t0 = mp_now_ms();
    atomic_store(&abort_a, 1);
    eccl_bell_ring(proxy_bell(np.a));
    assert_int_equal(fifo_take(np.recv, proxy_bell(np.b), buf), -1);
    double took = mp_now_ms() - t0;
    printf("receiver saw the sender's abort after %.1f ms\n", took);
    assert_true(took < 2000);
    assert_true(atomic_load(&np.send->closed));
    proxy_destroy(np.a);
    proxy_destroy(np.b);
}

/* A sender that vanishes (its proxy destroyed mid-stream): the receiving FIFO closes. */
static void test_net_peer_vanishes(void **s)
{
    (void)s;
    struct net_pair np;
    net_pair_make(&np, &no_abort, &no_abort, 4, 4096);
    char buf[16] = "y";
    fifo_post(np.send, proxy_bell(np.a), buf, 1);
    assert_int_equal(fifo_take(np.recv, proxy_bell(np.b), buf), 1);
    proxy_destroy(np.a);
    assert_int_equal(fifo_take(np.recv, proxy_bell(np.b), buf), -1);
    proxy_destroy(np.b);
}

int main(void)
{
    setenv("ECCL_SOCKET_IFNAME", "lo", 0);
    setenv("ECCL_NET", "socket", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shm_segment_passing),
        cmocka_unit_test(test_shm_device_descriptor),
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_uds_garbage),
        cmocka_unit_test(test_bad_ops),
        cmocka_unit_test(test_net_steps),
        cmocka_unit_test(test_net_abort_propagates),
        cmocka_unit_test(test_net_peer_vanishes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

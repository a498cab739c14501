/*
 * test_net_auth.c - the socket network backend (proxy/net_socket.c) with a job secret
 * (ECCL_JOB_SECRET_FILE): connections made by the backend authenticate and carry data; a raw
 * client that knows the listener's handle (address and magic) and speaks the documented wire
 * format, but has no secret, is refused (logged with its address), gets no connection, and
 * cannot inject bytes into a receive; the listener keeps serving good connections afterwards.
 * Also the handshake of common/auth.h on a socket pair: same secret passes, a peer without a
 * handshake or with another secret is refused with a clear text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "proxy/net.h"
#include "tests/support/jobsecret.h"
#include "tests/support/mp.h"
#include "tests/support/netpair.h"

#define DEADLINE_MS 10000
#define HELLO_PROTO 0x45434e53u
#define MSG_PROTO   0x45434e4du
#define HELLO_BYTES 32
#define MSG_BYTES   24

static const struct eccl_net_ops *N = &eccl_net_socket;
static char secret_path[64], other_path[64];

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void write_secret(char *path, size_t len, const char *content)
{
    assert_int_equal(jobsecret_make(path, len, NULL, content), 0);
}

static void fill(unsigned char *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 131 + seed);
}

static void transfer(void *sc, void *rc, size_t size, unsigned seed)
{
    unsigned char *src = malloc(size), *dst = calloc(1, size);
    assert_non_null(src);
    assert_non_null(dst);
    fill(src, size, seed);
    void *reqs[2];
    size_t sizes[2] = {0, 0};
    assert_int_equal(N->irecv(rc, dst, size, 5, NULL, &reqs[1]), ecclSuccess);
    assert_int_equal(N->isend(sc, src, size, 5, NULL, &reqs[0]), ecclSuccess);
    assert_int_equal(netpair_drive(N, reqs, sizes, 2, DEADLINE_MS), ecclSuccess);
    assert_int_equal(sizes[1], size);
    assert_memory_equal(src, dst, size);
    free(src);
    free(dst);
}

/* A raw client without the secret, speaking the documented format with the right magic. */
static void test_raw_client_refused(void **state)
{
    (void)state;
    jobsecret_use(secret_path);
    unsigned char h[ECCL_NET_HANDLE_BYTES];
    void *lc = NULL, *sc = NULL, *rc = NULL;
    assert_int_equal(N->listen(0, h, &lc), ecclSuccess);
    union eccl_sockaddr addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin.sin_family = AF_INET;
    memcpy(&addr.sin.sin_port, h + 16, 2);
    memcpy(&addr.sin.sin_addr, h + 20, 4);
    uint64_t magic = get64(h + 8);

    int fds[2];
    for (int i = 0; i < 2; i++) {
        fds[i] = -1;
        assert_int_equal(eccl_socket_connect(&addr, &fds[i], eccl_deadline_ms(DEADLINE_MS), NULL),
                         ecclSuccess);
        unsigned char b[HELLO_BYTES + MSG_BYTES + 64];
        memset(b, 0, sizeof(b));
        put32(b, HELLO_PROTO);
        put16(b + 4, 1);
        put16(b + 6, 1);
        put64(b + 8, magic);
        put64(b + 16, 4321);
        put16(b + 24, (uint16_t)i);
        put32(b + HELLO_BYTES, MSG_PROTO); /* then a message of 64 bytes, tag 5 */
        put64(b + HELLO_BYTES + 8, 64);
        put32(b + HELLO_BYTES + 16, 5);
        memset(b + HELLO_BYTES + MSG_BYTES, 0xee, 64);
        assert_int_equal(
            eccl_socket_send_all(fds[i], b, sizeof(b), eccl_deadline_ms(DEADLINE_MS), NULL),
            ecclSuccess);
    }
    /* The listener refuses both (no connection comes out of accept) and closes them. */
    eccl_log_clear_last_error();
    uint64_t until = eccl_deadline_ms(500);
    while (!eccl_deadline_passed(until)) {
        assert_int_equal(N->accept(lc, &rc), ecclSuccess);
        assert_null(rc);
        eccl_sleep_us(1000);
    }
    printf("    refused: %s\n", eccl_log_last_error());
    assert_true(mp_text_has(eccl_log_last_error(), "auth: refused a net-transport connection"));
    assert_true(mp_text_has(eccl_log_last_error(), "127.0.0.1"));
    assert_true(mp_text_has(eccl_log_last_error(), "no authentication handshake"));
    for (int i = 0; i < 2; i++) {
        char buf[256];
        ssize_t n;
        uint64_t dl = eccl_deadline_ms(DEADLINE_MS);
        do {
            struct pollfd p = {.fd = fds[i], .events = POLLIN};
            poll(&p, 1, 10);
            n = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT);
        } while (n != 0 && !(n < 0 && errno == ECONNRESET) && !eccl_deadline_passed(dl));
        assert_false(eccl_deadline_passed(dl)); /* the listener closed it */
        close(fds[i]);
    }
    /* The same listener still serves a good connection, and the data is the sender's. */
    netpair_connect(N, 0, lc, h, &sc, &rc, DEADLINE_MS);
    transfer(sc, rc, 64, 1);
    transfer(sc, rc, 100000, 2);
    assert_int_equal(N->close_send(sc), ecclSuccess);
    assert_int_equal(N->close_recv(rc), ecclSuccess);
    assert_int_equal(N->close_listen(lc), ecclSuccess);
}

/* ---- the handshake itself, on socket pairs ---- */

struct side {
    int fd;
    bool server;
    const char *secret; /* NULL: no handshake at all (sends junk of a hello's size) */
    ecclResult_t res;
    char text[512];
};

static pthread_mutex_t env_lock = PTHREAD_MUTEX_INITIALIZER;

static void *side_main(void *arg)
{
    struct side *s = arg;
    if (!s->secret) {
        unsigned char junk[64];
        memset(junk, 'x', sizeof(junk));
        s->res = eccl_socket_send_all(s->fd, junk, sizeof(junk), eccl_deadline_ms(2000), NULL);
        char buf[128];
        while (recv(s->fd, buf, sizeof(buf), 0) > 0) {
        }
        return NULL;
    }
    s->res = eccl_auth_handshake(s->fd, ECCL_AUTH_NET, s->server, "the test peer",
                                 eccl_deadline_ms(3000), NULL);
    snprintf(s->text, sizeof(s->text), "%s", eccl_log_last_error());
    shutdown(s->fd, SHUT_RDWR);
    return NULL;
}

/* One handshake between a client and a server over a socket pair. The secret is process-wide,
 * so when the two sides want different ones the client runs with keys loaded from its file
 * first and the server's keys are loaded after: the handshake runs in two steps. */
static void pair_run(struct side *c, struct side *s)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    c->fd = sv[0];
    s->fd = sv[1];
    c->server = false;
    s->server = true;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, side_main, c), 0);
    side_main(s);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
}

static void test_handshake_pairs(void **state)
{
    (void)state;
    pthread_mutex_lock(&env_lock);
    jobsecret_use(secret_path);
    assert_true(eccl_auth_enabled());
    struct side c = {.secret = secret_path}, s = {.secret = secret_path};
    eccl_log_clear_last_error();
    pair_run(&c, &s);
    assert_int_equal(c.res, ecclSuccess);
    assert_int_equal(s.res, ecclSuccess);

    /* A client that sends no handshake: refused, with the hint. */
    struct side j = {.secret = NULL}, s2 = {.secret = secret_path};
    pair_run(&j, &s2);
    assert_int_equal(s2.res, ecclRemoteError);
    printf("    %s\n", s2.text);
    assert_true(
        mp_text_has(s2.text, "auth: refused a net-transport connection from the test peer"));
    assert_true(mp_text_has(s2.text, "ECCL_JOB_SECRET_FILE"));

    /* MACs under another secret do not verify: the keys of the other file are derived here and
     * used by a handshake that the test drives by hand (client side) against a server thread
     * that holds the first secret. */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct eccl_auth_hs hc;
    assert_int_equal(eccl_auth_hs_init(&hc, ECCL_AUTH_NET, false, "server"), ecclSuccess);
    assert_int_equal(eccl_auth_hs_step(&hc, sv[0]), ecclInProgress); /* hello sent */
    struct side s3 = {.fd = sv[1], .server = true, .secret = secret_path};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, side_main, &s3), 0);
    /* Wait for the server's hello and MAC, then switch the secret before verifying. */
    struct pollfd p = {.fd = sv[0], .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    eccl_sleep_us(20000);
    jobsecret_use(other_path);
    assert_true(eccl_auth_enabled());
    eccl_log_clear_last_error();
    assert_int_equal(eccl_auth_hs_step(&hc, sv[0]), ecclRemoteError);
    printf("    %s\n", eccl_log_last_error());
    assert_true(mp_text_has(eccl_log_last_error(), "failed authentication"));
    assert_true(mp_text_has(eccl_log_last_error(), "job secret"));
    close(sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
    assert_int_equal(s3.res, ecclRemoteError);
    assert_true(mp_text_has(s3.text, "closed the connection during the handshake"));
    jobsecret_use(secret_path);
    pthread_mutex_unlock(&env_lock);
}

/* Unusable secret files give clear errors; unset means off. */
static void test_secret_file_errors(void **state)
{
    (void)state;
    jobsecret_use(NULL);
    bool on = true;
    assert_int_equal(eccl_auth_load(&on), ecclSuccess);
    assert_false(on);
    jobsecret_use("/nonexistent/eccl-secret");
    assert_int_equal(eccl_auth_load(&on), ecclInvalidUsage);
    assert_true(mp_text_has(eccl_log_last_error(), "/nonexistent/eccl-secret: cannot open"));
    char empty[64];
    write_secret(empty, sizeof(empty), "");
    jobsecret_use(empty);
    assert_int_equal(eccl_auth_load(&on), ecclInvalidUsage);
    assert_true(mp_text_has(eccl_log_last_error(), "the file is empty"));
    unlink(empty);
    char loose[64];
    write_secret(loose, sizeof(loose), "0123456789abcdef0123456789abcdef");
    assert_int_equal(chmod(loose, 0644), 0);
    jobsecret_use(loose);
    eccl_log_clear_last_error();
    assert_int_equal(eccl_auth_load(&on), ecclSuccess);
    assert_true(on);
    assert_true(mp_text_has(eccl_log_last_error(), "readable by group or others"));
    unlink(loose);
    jobsecret_use(secret_path);
}

static int group_setup(void **state)
{
    (void)state;
    setenv("ECCL_SOCKET_IFNAME", "lo", 1);
    write_secret(secret_path, sizeof(secret_path), "this-is-the-job-secret-0123456789");
    write_secret(other_path, sizeof(other_path), "another-jobs-secret-0123456789abc");
    jobsecret_use(secret_path);
    return N->init() == ecclSuccess ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    N->fini();
    unlink(secret_path);
    unlink(other_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_client_refused),
        cmocka_unit_test(test_handshake_pairs),
        cmocka_unit_test(test_secret_file_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * test_auth.c - communicators with a job secret (ECCL_JOB_SECRET_FILE), ranks as processes.
 *
 *  - every rank holds the secret: init and AllReduce work over the network transport
 *    (ECCL_SHM_DISABLE=1, so bootstrap, UDS service and network connections all authenticate);
 *    each rank's log says authentication is on.
 *  - one rank holds another secret, or none: that rank's init fails at once with a clear error,
 *    the bootstrap root (in this process) refuses it and logs the refusal with its address, and
 *    the other ranks' init fails at the bootstrap deadline naming the missing rank (no hang).
 *  - a raw TCP client connects to a rank's bootstrap listener and sends bytes: refused and
 *    logged; the point-to-point and collective results that follow are the right ones. A
 *    well-formed descriptor request (shared-memory segment) without a MAC, sent to the rank's
 *    proxy datagram socket, is refused and logged too.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/param.h"
#include "common/socket.h"
#include "common/time.h"
#include "eccl.h"
#include "proxy/proxy.h"
#include "tests/support/jobsecret.h"
#include "tests/support/mp.h"

#define NRANKS     3
#define TIMEOUT_MS 3000 /* the bootstrap deadline of the refusal cases */

static char dir[64], good_path[96], other_path[96];

enum who { SECRET_GOOD, SECRET_OTHER, SECRET_NONE };

struct case_arg {
    const char *name;
    enum who odd; /* what the last rank holds */
};

/* In a rank: its own log file and its secret, then the library reads its variables again. */
static void rank_env(const char *name, int rank, enum who w, char *log, size_t loglen)
{
    snprintf(log, loglen, "%s/%s.r%d.log", dir, name, rank);
    setenv("ECCL_DEBUG_FILE", log, 1);
    jobsecret_use(w == SECRET_GOOD ? good_path : w == SECRET_OTHER ? other_path : NULL);
    eccl_log_reset();
}

static int allreduce_ok(ecclComm_t comm, int nranks, int rank)
{
    float a[4096], b[4096];
    for (int i = 0; i < 4096; i++)
        a[i] = (float)(rank + 1) * (float)(i % 7);
    if (ecclAllReduce(a, b, 4096, ecclFloat, ecclSum, comm, NULL) != ecclSuccess)
        return 0;
    float sum = (float)(nranks * (nranks + 1) / 2);
    for (int i = 0; i < 4096; i++) {
        if (b[i] != sum * (float)(i % 7)) {
            printf("rank %d: element %d is %g, expected %g\n", rank, i, b[i], sum * (float)(i % 7));
            return 0;
        }
    }
    return 1;
}

static int rank_good(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    char log[160];
    rank_env("good", rank, SECRET_GOOD, log, sizeof(log));
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess) {
        printf("rank %d: init failed: %s\n", rank, ecclGetLastError(NULL));
        return 1;
    }
    int ok = allreduce_ok(comm, nranks, rank) && allreduce_ok(comm, nranks, rank);
    ok &= ecclCommDestroy(comm) == ecclSuccess;
    const char *text = jobsecret_log_text(log);
    if (!strstr(text, "authentication is on") || strstr(text, "auth: refused")) {
        printf("rank %d: log %s does not say authentication is on (or refused someone)\n", rank,
               log);
        ok = 0;
    }
    return ok ? 0 : 1;
}

static void test_good(void **state)
{
    (void)state;
    unsetenv("ECCL_BOOTSTRAP_TIMEOUT");
    eccl_param_reset();
    assert_int_equal(mp_run(NRANKS, rank_good, NULL, 50000), 0);
}

/* The last rank holds another secret or none; the others the job's. */
static int rank_odd(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    const struct case_arg *c = arg;
    bool odd = rank == nranks - 1;
    char log[160];
    rank_env(c->name, rank, odd ? c->odd : SECRET_GOOD, log, sizeof(log));
    ecclComm_t comm = NULL;
    double t0 = mp_now_ms();
    ecclResult_t r = mp_comm_init(&comm, nranks, id, rank);
    double ms = mp_now_ms() - t0;
    char err[512];
    snprintf(err, sizeof(err), "%s", ecclGetLastError(NULL));
    printf("    rank %d (%s): init returned %d after %.0f ms: %s\n", rank,
           odd ? (c->odd == SECRET_NONE ? "no secret" : "another secret") : "the secret", (int)r,
           ms, err);
    if (r == ecclSuccess) {
        ecclCommAbort(comm);
        return 1;
    }
    if (ms > TIMEOUT_MS + 8000)
        return 1;
    if (odd) {
        /* Refused at once, not at the deadline. */
        if (ms > TIMEOUT_MS * 0.8)
            return 1;
        if (c->odd == SECRET_OTHER && !strstr(jobsecret_log_text(log), "failed authentication"))
            return 1;
        return 0;
    }
    /* The others wait for the missing rank until the deadline, and say which one it is. */
    return strstr(err, "timed out") && strstr(err, "missing: 2") ? 0 : 1;
}

static void run_odd(const char *name, enum who w, const char *root_says)
{
    setenv("ECCL_BOOTSTRAP_TIMEOUT", "3000", 1);
    eccl_param_reset();
    struct case_arg c = {.name = name, .odd = w};
    assert_int_equal(mp_run(NRANKS, rank_odd, &c, 30000), 0);
    char path[160];
    snprintf(path, sizeof(path), "%s/parent.log", dir);
    const char *text = jobsecret_log_text(path);
    const char *line = strstr(text, root_says);
    if (!line)
        printf("%s has no \"%s\":\n%s\n", path, root_says, text);
    assert_non_null(line);
    assert_non_null(strstr(text, "auth: refused a bootstrap connection from 127.0.0.1"));
    unsetenv("ECCL_BOOTSTRAP_TIMEOUT");
    eccl_param_reset();
}

static void test_other_secret(void **state)
{
    (void)state;
    run_odd("other", SECRET_OTHER, "closed the connection during the handshake");
}

static void test_no_secret(void **state)
{
    (void)state;
    run_odd("none", SECRET_NONE, "it sent no authentication handshake");
}

/* Reads this rank's bootstrap listening address from its INFO line ("... listening on
 * 127.0.0.1<port>"). */
static int listen_addr(const char *log, struct sockaddr_in *out)
{
    const char *p = strstr(jobsecret_log_text(log), "connected, listening on ");
    if (!p)
        return -1;
    p += strlen("connected, listening on ");
    char ip[64];
    int port = 0;
    if (sscanf(p, "%63[0-9.]<%d>", ip, &port) != 2)
        return -1;
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -1;
}

/* Sends this rank's proxy a well-formed descriptor request without a MAC (what a process without
 * the secret can write); the proxy thread must refuse it. The proxy's socket name holds the
 * communicator's magic, which is the unique id's (bytes 8..15). */
static int forge_getfd(const ecclUniqueId *id, int rank, int nranks)
{
    uint64_t magic;
    memcpy(&magic, id->internal + 8, sizeof(magic));
    char to[96], mine[96];
    snprintf(to, sizeof(to), "eccl-%016llx-%d-proxy", (unsigned long long)magic, rank);
    snprintf(mine, sizeof(mine), "eccl-authtest-%d", (int)getpid());
    int s = -1;
    if (eccl_uds_open(mine, &s) != ecclSuccess)
        return -1;
    struct proxy_uds_rec r = {.op_id = 77, .handle = 0, .from = (rank + 1) % nranks};
    unsigned char buf[PROXY_UDS_REC_BYTES];
    proxy_uds_rec_encode(&r, magic, false, buf);
    ecclResult_t res = eccl_uds_send(s, to, buf, sizeof(buf), -1, eccl_deadline_ms(2000), NULL);
    eccl_sleep_us(300 * 1000); /* the proxy thread serves its socket on every round */
    close(s);
    return res == ecclSuccess ? 0 : -1;
}

static int rank_inject(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    (void)arg;
    char log[160];
    rank_env("inject", rank, SECRET_GOOD, log, sizeof(log));
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    /* The intruder: a plain TCP client with bytes that look like a bootstrap header. */
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_addr(log, &a) != 0 || fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        printf("rank %d: cannot reach its own bootstrap listener\n", rank);
        return 1;
    }
    unsigned char junk[512];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 7 + 1);
    if (send(fd, junk, sizeof(junk), MSG_NOSIGNAL) != (ssize_t)sizeof(junk))
        return 1;
    /* Point-to-point connects now (over the bootstrap listener): the intruder is refused there
     * and the data is the peer's. */
    int peer = (rank + 1) % nranks, from = (rank + nranks - 1) % nranks;
    int sbuf[1000], rbuf[1000];
    for (int i = 0; i < 1000; i++) {
        sbuf[i] = rank * 100000 + i;
        rbuf[i] = -1;
    }
    int ok = ecclGroupStart() == ecclSuccess;
    ok &= ecclSend(sbuf, 1000, ecclInt32, peer, comm, NULL) == ecclSuccess;
    ok &= ecclRecv(rbuf, 1000, ecclInt32, from, comm, NULL) == ecclSuccess;
    ok &= ecclGroupEnd() == ecclSuccess;
    for (int i = 0; i < 1000 && ok; i++)
        if (rbuf[i] != from * 100000 + i) {
            printf("rank %d: p2p element %d is %d\n", rank, i, rbuf[i]);
            ok = 0;
        }
    ok &= allreduce_ok(comm, nranks, rank);
    close(fd);
    if (forge_getfd(id, rank, nranks) != 0) {
        printf("rank %d: could not send the forged descriptor request\n", rank);
        ok = 0;
    }
    ok &= allreduce_ok(comm, nranks, rank);
    ok &= ecclCommDestroy(comm) == ecclSuccess;
    const char *text = jobsecret_log_text(log);
    const char *dg = strstr(text, "refused a descriptor request: no MAC");
    if (!dg) {
        printf("rank %d: the forged descriptor request was not refused (%s)\n", rank, log);
        ok = 0;
    } else {
        const char *end = strchr(dg, '\n');
        printf("    rank %d logged: ...%.*s\n", rank, end ? (int)(end - dg) : 200, dg);
    }
    const char *line = strstr(text, "auth: refused a bootstrap connection from 127.0.0.1");
    if (!line) {
        printf("rank %d: no refusal in %s\n", rank, log);
        ok = 0;
    } else {
        const char *end = strchr(line, '\n');
        printf("    rank %d logged: %.*s\n", rank, end ? (int)(end - line) : 200, line);
    }
    return ok ? 0 : 1;
}

static void test_inject(void **state)
{
    (void)state;
    assert_int_equal(mp_run(NRANKS, rank_inject, NULL, 50000), 0);
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/eccl-auth-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (jobsecret_make(good_path, sizeof(good_path), dir, "the-secret-of-this-job-0123456789") ||
        jobsecret_make(other_path, sizeof(other_path), dir, "the-secret-of-another-job-012345"))
        return 1;
    char plog[128];
    snprintf(plog, sizeof(plog), "%s/parent.log", dir);
    setenv("ECCL_JOB_SECRET_FILE", good_path, 1);
    setenv("ECCL_SHM_DISABLE", "1", 1);
    setenv("ECCL_DEBUG", "INFO", 1);
    setenv("ECCL_DEBUG_SUBSYS", "INIT,BOOTSTRAP", 1);
    setenv("ECCL_DEBUG_FILE", plog, 1);
    mp_env_setup();
    eccl_param_reset();
    eccl_log_reset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_other_secret),
        cmocka_unit_test(test_no_secret),
        cmocka_unit_test(test_inject),
    };
    int failed = cmocka_run_group_tests_name("job secret", tests, NULL, NULL);
    if (failed)
        printf("logs kept in %s\n", dir);
    else
        remove_dir();
    return failed ? 1 : 0;
}

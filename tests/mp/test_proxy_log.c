/*
 * test_proxy_log.c - with ECCL_DEBUG=INFO ECCL_DEBUG_SUBSYS=PROXY,NET,SHM the log tells how
 * connections were set up, the way NCCL's proxy log does: a new proxy connection, the op id of
 * each operation, the response received and matched, the descriptor fetched over the UDS socket,
 * connected. Two ranks over shared memory, then two over the network (ECCL_SHM_DISABLE=1); each
 * rank's log (ECCL_DEBUG_FILE) must contain the story in order, and the collective must work.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "eccl.h"
#include "tests/support/mp.h"

static char logdir[64];

static int rank_main(int rank, int nranks, const ecclUniqueId *id, void *arg)
{
    if (arg)
        setenv("ECCL_SHM_DISABLE", "1", 1);
    else
        unsetenv("ECCL_SHM_DISABLE");
    ecclComm_t comm;
    if (mp_comm_init(&comm, nranks, id, rank) != ecclSuccess)
        return 1;
    float a[1024], b[1024];
    for (int i = 0; i < 1024; i++)
        a[i] = (float)(rank + 1);
    int bad = ecclAllReduce(a, b, 1024, ecclFloat, ecclSum, comm, NULL) != ecclSuccess;
    for (int i = 0; i < 1024 && !bad; i++)
        bad = b[i] != 3.0f;
    bad |= ecclCommDestroy(comm) != ecclSuccess;
    return bad;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Each needle must appear after the previous one. */
static int story_in_order(const char *text, const char *const *needles, int n, const char *path)
{
    const char *at = text;
    for (int i = 0; i < n; i++) {
        const char *p = strstr(at, needles[i]);
        if (!p) {
            printf("%s: \"%s\" missing (after \"%s\")\n", path, needles[i],
                   i ? needles[i - 1] : "the start");
            return 0;
        }
        at = p;
    }
    return 1;
}

static void check_logs(const char *const *needles, int n)
{
    DIR *d = opendir(logdir);
    assert_non_null(d);
    int files = 0, good = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "log.", 4) != 0)
            continue;
        char path[384];
        snprintf(path, sizeof(path), "%s/%s", logdir, e->d_name);
        char *text = read_file(path);
        if (text && strstr(text, "New proxy")) { /* a rank's log (the parent's has none) */
            files++;
            good += story_in_order(text, needles, n, path);
        }
        unlink(path);
    }
    closedir(d);
    assert_int_equal(files, 2);
    assert_int_equal(good, 2);
}

static void test_shm_story(void **s)
{
    (void)s;
    assert_int_equal(mp_run(2, rank_main, NULL, 60000), 0);
    const char *const story[] = {
        "proxy of rank",
        "New proxy recv connection",
        "op.type=1",
        "Received and initiated operation=Init res=0",
        "ecclPollProxyResponse Received new opId",
        "matches expected opId",
        "Connected to proxy localRank",
        "Received and initiated operation=Setup res=0",
        "ProxyCall UDS",
        "UDS: ClientGetFd handle",
        "Received and initiated operation=Connect res=0",
        "via SHM",
    };
    check_logs(story, (int)(sizeof(story) / sizeof(story[0])));
}

static void test_net_story(void **s)
{
    (void)s;
    assert_int_equal(mp_run(2, rank_main, (void *)"net", 60000), 0);
    const char *const story[] = {
        "Received and initiated operation=SharedInit res=0",
        "New proxy recv connection",
        "Received and initiated operation=Init res=0",
        "Received and initiated operation=Setup res=0",
        "New proxy send connection",
        "Received and initiated operation=Connect res=0",
        "via NET/Socket",
    };
    check_logs(story, (int)(sizeof(story) / sizeof(story[0])));
}

int main(void)
{
    snprintf(logdir, sizeof(logdir), "/tmp/eccl-proxylog-%d", (int)getpid());
    if (mkdir(logdir, 0700) != 0) {
        perror("mkdir");
        return 1;
    }
    char pattern[96];
    snprintf(pattern, sizeof(pattern), "%s/log.%%p", logdir);
    setenv("ECCL_DEBUG", "INFO", 1);
    setenv("ECCL_DEBUG_SUBSYS", "PROXY,NET,SHM", 1);
    setenv("ECCL_DEBUG_FILE", pattern, 1);
    setenv("ECCL_NCHANNELS", "1", 1);
    mp_env_setup();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_shm_story),
                                       cmocka_unit_test(test_net_story)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(logdir);
    return rc;
}

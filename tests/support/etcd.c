/*
 * etcd.c - starts and stops a real etcd for tests (etcd.h): fork + exec of /usr/bin/etcd on
 * loopback ports, a /health probe with libcurl, SIGKILL by pid, and removal of the data dir.
 */
#include "tests/support/etcd.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/time.h"

bool etcd_available(void)
{
    return access(ETCD_BIN, X_OK) == 0;
}

int etcd_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

struct etcd_health_buf {
    char buf[256];
    size_t len;
};

static size_t etcd_discard(char *p, size_t s, size_t n, void *arg)
{
    struct etcd_health_buf *b = arg;
    size_t len = s * n,
           take = len < sizeof(b->buf) - 1 - b->len ? len : sizeof(b->buf) - 1 - b->len;
    memcpy(b->buf + b->len, p, take);
    b->len += take;
    b->buf[b->len] = 0;
    return len;
}

static void tls_opts(const struct etcd_proc *e, CURL *h)
{
    if (e->ca[0])
        curl_easy_setopt(h, CURLOPT_CAINFO, e->ca);
    if (e->cert[0])
        curl_easy_setopt(h, CURLOPT_SSLCERT, e->cert);
    if (e->key[0])
        curl_easy_setopt(h, CURLOPT_SSLKEY, e->key);
}

bool etcd_healthy(const struct etcd_proc *e)
{
    CURL *h = curl_easy_init();
    if (!h)
        return false;
    char url[128];
    snprintf(url, sizeof(url), "%s://127.0.0.1:%d/health", e->tls ? "https" : "http",
             e->client_port);
    struct etcd_health_buf b = {.len = 0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    tls_opts(e, h);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, etcd_discard);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    return rc == CURLE_OK && strstr(b.buf, "true") != NULL;
}

long etcd_post(const struct etcd_proc *e, const char *path, const char *body, const char *token,
               char *out)
{
    CURL *h = curl_easy_init();
    if (!h)
        return 0;
    char url[256], auth[300];
    snprintf(url, sizeof(url), "%s://127.0.0.1:%d%s", e->tls ? "https" : "http", e->client_port,
             path);
    struct curl_slist *hdrs = NULL;
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    struct etcd_health_buf b = {.len = 0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    tls_opts(e, h);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, etcd_discard);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (out)
        memcpy(out, b.buf, sizeof(b.buf));
    return status;
}

int etcd_prepare(struct etcd_proc *e)
{
    if (!e->dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(e->dir, sizeof(e->dir), "%s/eccl-etcd-XXXXXX", base);
        if (!mkdtemp(e->dir))
            return -1;
        e->client_port = etcd_free_port();
        e->peer_port = etcd_free_port();
        if (e->client_port < 0 || e->peer_port < 0 || e->client_port == e->peer_port)
            return -1;
    }
    return 0;
}

int etcd_spawn(struct etcd_proc *e)
{
    if (etcd_prepare(e) != 0)
        return -1;
    char data[300], log[300], curl_[64], purl[64], cluster[600];
    snprintf(data, sizeof(data), "%s/data", e->dir);
    snprintf(log, sizeof(log), "%s/etcd.log", e->dir);
    snprintf(curl_, sizeof(curl_), "%s://127.0.0.1:%d", e->tls ? "https" : "http", e->client_port);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", e->peer_port);
    const char *name = e->name[0] ? e->name : "t";
    if (e->cluster[0])
        snprintf(cluster, sizeof(cluster), "%s", e->cluster);
    else
        snprintf(cluster, sizeof(cluster), "%s=%s", name, purl);
    char extra[1024];
    snprintf(extra, sizeof(extra), "%s", e->extra);
    char *argv[64] = {ETCD_BIN,     "--name",
                      (char *)name, "--data-dir",
                      data,         "--listen-client-urls",
                      curl_,        "--advertise-client-urls",
                      curl_,        "--listen-peer-urls",
                      purl,         "--initial-advertise-peer-urls",
                      purl,         "--initial-cluster",
                      cluster,      "--log-level",
                      "error"};
    int argc = 17;
    char *save = NULL;
    for (char *tok = strtok_r(extra, " ", &save); tok && argc < 62;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(ETCD_BIN, argv);
        _exit(127);
    }
    e->pid = pid;
    return 0;
}

int etcd_wait_healthy(struct etcd_proc *e)
{
    char log[300];
    snprintf(log, sizeof(log), "%s/etcd.log", e->dir);
    pid_t pid = e->pid;
    uint64_t until = eccl_deadline_ms(15000);
    while (!eccl_deadline_passed(until)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            e->pid = 0;
            fprintf(stderr, "etcd exited during start-up; see %s\n", log);
            return -1;
        }
        if (etcd_healthy(e))
            return 0;
        eccl_sleep_us(50000);
    }
    fprintf(stderr, "etcd did not become healthy in 15 s; see %s\n", log);
    return -1;
}

int etcd_start(struct etcd_proc *e)
{
    if (etcd_spawn(e) != 0)
        return -1;
    return etcd_wait_healthy(e);
}

void etcd_kill(struct etcd_proc *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
        e->pid = 0;
    }
}

void etcd_destroy(struct etcd_proc *e)
{
    etcd_kill(e);
    if (e->dir[0] && strncmp(e->dir, "/", 1) == 0 && strstr(e->dir, "eccl-etcd-")) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", e->dir);
    }
    e->dir[0] = 0;
}

void etcd_url(const struct etcd_proc *e, char *buf, size_t size)
{
    snprintf(buf, size, "%s://127.0.0.1:%d", e->tls ? "etcds" : "etcd", e->client_port);
}

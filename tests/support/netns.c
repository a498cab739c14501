/*
 * netns.c - network namespaces as "hosts" for the multi-host tests (see netns.h).
 *
 * Every change goes through `ip` (iproute2) run by fork + execve with an argument vector: no
 * shell, so no name is ever parsed as a command. Each command's exit status is checked and its
 * output kept for the message. Teardown commands are prepared as argument vectors at setup, so
 * that the signal handler only needs fork, execve and waitpid (async-signal-safe).
 */
#include "tests/support/netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define NETNS_RUN_DIR "/var/run/netns"
#define IP_TIMEOUT_MS 10000
#define MAX_SETS      4
#define OUT_MAX       512

static char ip_path[256];
static char unavailable[256];
static char last_msg[768];

/* Sets that the exit and signal handlers tear down. */
static struct netns_set *registered[MAX_SETS];
static bool handlers_installed;
static int set_seq; /* sets made by this process: part of the names */
static struct sigaction old_actions[3];
static const int caught_signals[3] = {SIGINT, SIGTERM, SIGHUP};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool find_ip(void)
{
    if (ip_path[0] != '\0')
        return true;
    char dirs[1024];
    const char *path = getenv("PATH");
    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
        char cand[sizeof(ip_path)];
        if (snprintf(cand, sizeof(cand), "%s/ip", d) >= (int)sizeof(cand))
            continue;
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) {
            snprintf(ip_path, sizeof(ip_path), "%s", cand);
            return true;
        }
    }
    return false;
}

const char *netns_unavailable(void)
{
    if (geteuid() != 0) {
        snprintf(unavailable, sizeof(unavailable),
                 "not root (euid %d): making network namespaces needs root (CAP_SYS_ADMIN)",
                 (int)geteuid());
        return unavailable;
    }
    if (!find_ip()) {
        snprintf(unavailable, sizeof(unavailable),
                 "iproute2's `ip` was not found (PATH, /usr/sbin, /sbin, /usr/bin, /bin)");
        return unavailable;
    }
    return NULL;
}

/* Waits for pid at most timeout_ms, then SIGKILLs it. Returns the wait status, or -1.
 * Async-signal-safe. */
static int wait_child(pid_t pid, int timeout_ms)
{
    int waited = 0;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return -1;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited += 2;
    }
}

/* Runs ip with argv (argv[0] is "ip"); out gets what it printed (stdout and stderr). Returns 0
 * when it exited 0, else -1 (out says why). */
static int run_ip(char *const argv[], char *out, size_t out_len)
{
    out[0] = '\0';
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(out, out_len, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(out, out_len, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execve(ip_path, argv, environ);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    double deadline = now_ms() + IP_TIMEOUT_MS;
    for (;;) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int r = poll(&pfd, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        char buf[256];
        ssize_t n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && got + 1 < out_len; i++)
            out[got++] = buf[i] == '\n' ? ' ' : buf[i];
        out[got] = '\0';
    }
    close(fds[0]);
    while (got > 0 && out[got - 1] == ' ')
        out[--got] = '\0';
    int status = wait_child(pid, (int)(deadline - now_ms()) > 0 ? (int)(deadline - now_ms()) : 1);
    if (status == -1) {
        snprintf(out + got, out_len - got, "%s(no exit status within %d ms; killed)",
                 got ? " " : "", IP_TIMEOUT_MS);
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && got == 0)
        snprintf(out, out_len, "could not execute %s", ip_path);
    return -1;
}

/* Prints the command line and its output. */
static void print_failure(const char *what, char *const argv[], const char *out)
{
    char line[512];
    size_t n = 0;
    for (int i = 0; argv[i] != NULL && n < sizeof(line) - 1; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", i ? " " : "", argv[i]);
    snprintf(last_msg, sizeof(last_msg), "`%s` failed: %s", line, out[0] ? out : "(no output)");
    fprintf(stderr, "netns: %s%s\n", what, last_msg);
}

/* ip with a NULL-terminated list of arguments. */
#define IP(out, ...) run_ip((char *const[]){"ip", __VA_ARGS__, NULL}, out, sizeof(out))
#define IP_ARGV(...) ((char *const[]){"ip", __VA_ARGS__, NULL})

/* Deletes one namespace quietly; async-signal-safe (no stdio, no allocation). */
static void delete_ns_quiet(const char *name)
{
    if (name[0] == '\0' || ip_path[0] == '\0')
        return;
    char *const argv[] = {"ip", "netns", "delete", (char *)name, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execve(ip_path, argv, environ);
        _exit(127);
    }
    if (pid > 0)
        wait_child(pid, IP_TIMEOUT_MS);
}

static bool ns_exists(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), NETNS_RUN_DIR "/%s", name);
    return access(path, F_OK) == 0;
}

/* Tears a set down without stdio: used by the handlers too. */
static void teardown_quiet(struct netns_set *s)
{
    if (!s->up || getpid() != s->owner)
        return;
    s->up = false;
    if (s->orig_fd >= 0) {
        setns(s->orig_fd, CLONE_NEWNET);
        close(s->orig_fd);
        s->orig_fd = -1;
    }
    for (int i = 0; i < s->nhosts; i++)
        delete_ns_quiet(s->host[i]);
    delete_ns_quiet(s->hub);
}

static void at_exit_teardown(void)
{
    for (int i = 0; i < MAX_SETS; i++) {
        if (registered[i] != NULL)
            teardown_quiet(registered[i]);
    }
}

static void on_signal(int sig)
{
    at_exit_teardown();
    /* The default action, as if the handler had not been there. */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void register_set(struct netns_set *s)
{
    if (!handlers_installed) {
        handlers_installed = true;
        atexit(at_exit_teardown);
        for (int i = 0; i < 3; i++) {
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = on_signal;
            sigemptyset(&sa.sa_mask);
            sigaction(caught_signals[i], &sa, &old_actions[i]);
        }
    }
    for (int i = 0; i < MAX_SETS; i++) {
        if (registered[i] == s)
            return;
    }
    for (int i = 0; i < MAX_SETS; i++) {
        if (registered[i] == NULL) {
            registered[i] = s;
            return;
        }
    }
}

static void unregister_set(struct netns_set *s)
{
    for (int i = 0; i < MAX_SETS; i++) {
        if (registered[i] == s)
            registered[i] = NULL;
    }
}

int netns_cleanup_stale(void)
{
    if (netns_unavailable() != NULL)
        return 0;
    DIR *d = opendir(NETNS_RUN_DIR);
    if (d == NULL)
        return 0;
    char names[64][NETNS_NAME_MAX];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64) {
        const char *p = e->d_name;
        if (strncmp(p, NETNS_PREFIX, strlen(NETNS_PREFIX)) != 0 || strlen(p) >= NETNS_NAME_MAX)
            continue;
        p += strlen(NETNS_PREFIX);
        char *end = NULL;
        long pid = strtol(p, &end, 10);
        if (end == p || *end != '-' || pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive (or not ours to judge) */
        snprintf(names[n++], NETNS_NAME_MAX, "%s", e->d_name);
    }
    closedir(d);
    int deleted = 0;
    for (int i = 0; i < n; i++) {
        char out[OUT_MAX];
        if (IP(out, "netns", "delete", names[i]) == 0) {
            deleted++;
            fprintf(stderr, "netns: deleted stale namespace %s\n", names[i]);
        } else {
            print_failure("stale namespace: ", IP_ARGV("netns", "delete", names[i]), out);
        }
    }
    return deleted;
}

/* Makes the links of a set whose namespaces exist. Returns 0, NETNS_SKIP or -1. */
static int make_links(struct netns_set *s)
{
    char out[OUT_MAX];
    if (s->nhosts == 2) {
        char *const *argv = IP_ARGV("link", "add", NETNS_IFNAME, "netns", s->host[0], "type",
                                    "veth", "peer", "name", NETNS_IFNAME, "netns", s->host[1]);
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("skip: no veth pair: ", argv, out);
            return NETNS_SKIP;
        }
        return 0;
    }
    char *const *argv = IP_ARGV("-n", s->hub, "link", "add", "br0", "type", "bridge");
    if (run_ip(argv, out, sizeof(out)) != 0) {
        print_failure("skip: no bridge: ", argv, out);
        return NETNS_SKIP;
    }
    argv = IP_ARGV("-n", s->hub, "link", "set", "br0", "up");
    if (run_ip(argv, out, sizeof(out)) != 0) {
        print_failure("", argv, out);
        return -1;
    }
    for (int i = 0; i < s->nhosts; i++) {
        char port[16];
        snprintf(port, sizeof(port), "p%d", i);
        argv = IP_ARGV("link", "add", NETNS_IFNAME, "netns", s->host[i], "type", "veth", "peer",
                       "name", port, "netns", s->hub);
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("skip: no veth pair: ", argv, out);
            return NETNS_SKIP;
        }
        argv = IP_ARGV("-n", s->hub, "link", "set", port, "master", "br0");
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("", argv, out);
            return -1;
        }
        argv = IP_ARGV("-n", s->hub, "link", "set", port, "up");
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("", argv, out);
            return -1;
        }
    }
    return 0;
}

int netns_setup(struct netns_set *s, int nhosts)
{
    memset(s, 0, sizeof(*s));
    s->orig_fd = -1;
    if (nhosts < 2 || nhosts > NETNS_MAX_HOSTS) {
        fprintf(stderr, "netns: %d hosts (2..%d)\n", nhosts, NETNS_MAX_HOSTS);
        return -1;
    }
    last_msg[0] = '\0';
    const char *why = netns_unavailable();
    if (why != NULL) {
        snprintf(last_msg, sizeof(last_msg), "%s", why);
        fprintf(stderr, "netns: skip: %s\n", why);
        return NETNS_SKIP;
    }
    netns_cleanup_stale();
    pid_t pid = getpid();
    int seq = set_seq++;
    s->nhosts = nhosts;
    s->owner = pid;
    s->subnet = 1 + (int)(pid % 250);
    for (int i = 0; i < nhosts; i++) {
        snprintf(s->host[i], NETNS_NAME_MAX, NETNS_PREFIX "%d-%dh%d", (int)pid, seq, i);
        snprintf(s->addr[i], sizeof(s->addr[i]), "10.231.%d.%d", s->subnet, i + 1);
    }
    if (nhosts > 2)
        snprintf(s->hub, NETNS_NAME_MAX, NETNS_PREFIX "%d-%dhub", (int)pid, seq);

    char out[OUT_MAX];
    int ret = -1;
    register_set(s);
    s->up = true;
    for (int i = 0; i <= nhosts; i++) {
        const char *name = i < nhosts ? s->host[i] : s->hub;
        if (name[0] == '\0')
            continue;
        if (ns_exists(name)) {
            snprintf(last_msg, sizeof(last_msg),
                     "%s already exists (a run with this pid still going?)", name);
            fprintf(stderr, "netns: %s\n", last_msg);
            /* Not ours: teardown must not delete it. */
            if (i < nhosts)
                s->host[i][0] = '\0';
            else
                s->hub[0] = '\0';
            goto fail;
        }
        char *const *argv = IP_ARGV("netns", "add", (char *)name);
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("skip: cannot make a network namespace: ", argv, out);
            ret = NETNS_SKIP;
            goto fail;
        }
        argv = IP_ARGV("-n", (char *)name, "link", "set", "lo", "up");
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("", argv, out);
            goto fail;
        }
    }
    int links = make_links(s);
    if (links != 0) {
        ret = links;
        goto fail;
    }
    for (int i = 0; i < nhosts; i++) {
        char cidr[24];
        snprintf(cidr, sizeof(cidr), "%s/24", s->addr[i]);
        char *const *argv = IP_ARGV("-n", s->host[i], "addr", "add", cidr, "dev", NETNS_IFNAME);
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("", argv, out);
            goto fail;
        }
        argv = IP_ARGV("-n", s->host[i], "link", "set", NETNS_IFNAME, "up");
        if (run_ip(argv, out, sizeof(out)) != 0) {
            print_failure("", argv, out);
            goto fail;
        }
    }
    return 0;

fail:
    netns_teardown(s);
    return ret;
}

void netns_teardown(struct netns_set *s)
{
    if (!s->up || getpid() != s->owner)
        return;
    teardown_quiet(s);
    unregister_set(s);
    /* Say so when something is left (ip refused, or a process still holds a name). */
    for (int i = 0; i <= s->nhosts; i++) {
        const char *name = i < s->nhosts ? s->host[i] : s->hub;
        if (name[0] != '\0' && ns_exists(name))
            fprintf(stderr, "netns: %s is still there after `ip netns delete`\n", name);
    }
}

int netns_enter(struct netns_set *s, int host)
{
    if (host < 0 || host >= s->nhosts || s->host[host][0] == '\0') {
        fprintf(stderr, "netns: no host %d\n", host);
        return -1;
    }
    char path[128];
    snprintf(path, sizeof(path), NETNS_RUN_DIR "/%s", s->host[host]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "netns: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (getpid() == s->owner && s->orig_fd < 0) {
        s->orig_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (s->orig_fd < 0) {
            fprintf(stderr, "netns: open /proc/self/ns/net: %s\n", strerror(errno));
            close(fd);
            return -1;
        }
    }
    int rc = setns(fd, CLONE_NEWNET);
    int err = errno;
    close(fd);
    if (rc != 0) {
        fprintf(stderr, "netns: setns(%s): %s\n", s->host[host], strerror(err));
        return -1;
    }
    return 0;
}

int netns_leave(struct netns_set *s)
{
    if (getpid() != s->owner || s->orig_fd < 0)
        return 0;
    int rc = setns(s->orig_fd, CLONE_NEWNET);
    int err = errno;
    close(s->orig_fd);
    s->orig_fd = -1;
    if (rc != 0) {
        fprintf(stderr, "netns: setns(back): %s\n", strerror(err));
        return -1;
    }
    return 0;
}

const char *netns_last_error(void)
{
    return last_msg[0] ? last_msg : "unknown";
}

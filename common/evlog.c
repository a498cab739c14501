/*
 * evlog.c - the JSON-lines event log (evlog.h): the file is opened once per process, lines are
 * formatted in a stack buffer and appended with one write(2).
 */
#include "common/evlog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/param.h"

ECCL_PARAM_STR(event_log, "ECCL_EVENT_LOG", NULL)

static int evlog_fd = -1;
static char evlog_host[256];
static pthread_once_t evlog_once = PTHREAD_ONCE_INIT;

static void evlog_open(void)
{
    const char *path = eccl_param_event_log();
    if (!path || !path[0])
        return;
    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    eccl_evlog_str(evlog_host, sizeof(evlog_host), host);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        WARN("ECCL_EVENT_LOG=%s: open: %s (no event log from this process)", path, strerror(errno));
        return;
    }
    evlog_fd = fd; /* stays open until the process ends */
}

bool eccl_evlog_enabled(void)
{
    pthread_once(&evlog_once, evlog_open);
    return evlog_fd >= 0;
}

const char *eccl_evlog_str(char *out, size_t size, const char *s)
{
    size_t o = 0;
    if (size == 0)
        return out;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        size_t n;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c >= 0x7f) {
            /* Control bytes and anything not ASCII (no UTF-8 is promised): \u00XX. */
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            n = 6;
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (o + n >= size)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = 0;
    return out;
}

void eccl_evlog_emit(const char *event, const char *fields_fmt, ...)
{
    if (!eccl_evlog_enabled())
        return;
    int saved_errno = errno;
    char fields[ECCL_EVLOG_MAX_LINE];
    fields[0] = 0;
    if (fields_fmt) {
        va_list ap;
        va_start(ap, fields_fmt);
        int n = vsnprintf(fields, sizeof(fields), fields_fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof(fields))
            snprintf(fields, sizeof(fields), ",\"truncated\":true");
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char ev[64];
    char line[ECCL_EVLOG_MAX_LINE + 512];
    int n = snprintf(line, sizeof(line),
                     "{\"ts\":%lld.%06ld,\"event\":\"%s\",\"pid\":%d,\"host\":\"%s\"%s}\n",
                     (long long)ts.tv_sec, ts.tv_nsec / 1000, eccl_evlog_str(ev, sizeof(ev), event),
                     (int)getpid(), evlog_host, fields);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = snprintf(line, sizeof(line),
                     "{\"ts\":%lld.%06ld,\"event\":\"%s\",\"pid\":%d,\"host\":\"%s\","
                     "\"truncated\":true}\n",
                     (long long)ts.tv_sec, ts.tv_nsec / 1000, ev, (int)getpid(), evlog_host);
    ssize_t w;
    do {
        w = write(evlog_fd, line, (size_t)n);
    } while (w < 0 && errno == EINTR);
    errno = saved_errno;
}

/*
 * jobsecret.c - the job secret of the authentication tests (jobsecret.h).
 */
#include "tests/support/jobsecret.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/param.h"

int jobsecret_make(char *path, size_t size, const char *dir, const char *content)
{
    int n = snprintf(path, size, "%s/eccl-secret-XXXXXX", dir ? dir : "/tmp");
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "jobsecret_make: the path in %s does not fit in %zu bytes\n",
                dir ? dir : "/tmp", size);
        return -1;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        perror(path);
        return -1;
    }
    size_t len = strlen(content);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, content, len) == (ssize_t)len;
    if (close(fd) != 0)
        ok = false;
    if (!ok) {
        perror(path);
        unlink(path);
        return -1;
    }
    return 0;
}

void jobsecret_use(const char *path)
{
    if (path)
        setenv("ECCL_JOB_SECRET_FILE", path, 1);
    else
        unsetenv("ECCL_JOB_SECRET_FILE");
    eccl_param_reset();
}

char *jobsecret_log_text(const char *path)
{
    static char buf[1 << 20];
    FILE *f = fopen(path, "r");
    if (!f)
        return strcpy(buf, "");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

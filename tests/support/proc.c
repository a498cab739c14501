/*
 * proc.c - child processes and scratch directories for the tests that run the tools as programs
 * (proc.h).
 */
#include "tests/support/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/time.h"

extern char **environ;

int proc_dir_make(char *dir, size_t size, const char *prefix)
{
    int n = snprintf(dir, size, "/tmp/%s-XXXXXX", prefix);
    if (n < 0 || (size_t)n >= size) {
        if (size)
            dir[0] = 0;
        errno = ENAMETOOLONG;
        return -1;
    }
    if (!mkdtemp(dir)) {
        dir[0] = 0;
        return -1;
    }
    return 0;
}

void proc_dir_remove(char *dir)
{
    DIR *d = dir[0] ? opendir(dir) : NULL;
    if (!d)
        return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
    dir[0] = 0;
}

pid_t proc_spawn(const char *const *argv, const char *const *envp, const char *const *extra,
                 const char *out, const char *err)
{
    if (envp && extra && *extra) {
        errno = EINVAL;
        return -1;
    }
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
        _exit(126);
    for (; extra && *extra; extra++)
        putenv((char *)*extra);
    execve(argv[0], (char **)argv, envp ? (char **)envp : environ);
    _exit(126);
}

int proc_wait(pid_t pid, int timeout_ms)
{
    uint64_t dl = eccl_deadline_ms(timeout_ms);
    int st;
    for (;;) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            break;
        if (eccl_deadline_passed(dl)) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        eccl_sleep_us(5000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

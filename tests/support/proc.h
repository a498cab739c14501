/*
 * proc.h - child processes and scratch directories for the tests that run the tools (ecclrun,
 * eccl-timeline, eccl-perf) as programs: a fresh /tmp directory, a child started with its stdout
 * and stderr in files, and a wait for it with a deadline that kills it when time runs out.
 */
#ifndef ECCL_TESTS_SUPPORT_PROC_H
#define ECCL_TESTS_SUPPORT_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Makes a new directory /tmp/<prefix>-XXXXXX and writes its path into dir (size bytes).
 * 0, or -1 (errno set) when it could not be made. */
int proc_dir_make(char *dir, size_t size, const char *prefix);
/* Removes the files in dir, then dir, and sets dir to "". Does nothing when dir is "". */
void proc_dir_remove(char *dir);
/* Starts argv[0] with argv, stdout into the file `out` and stderr into `err` (created or
 * truncated, mode 0600). Its environment is envp, or, when envp is NULL, this process's with the
 * "K=V" strings of `extra` (NULL-terminated; NULL: none) set in it (they replace variables of
 * the same name). The child exits 126 when a file cannot be opened or the exec fails. The pid,
 * or -1 (errno set) when fork failed or both envp and extra were given. */
pid_t proc_spawn(const char *const *argv, const char *const *envp, const char *const *extra,
                 const char *out, const char *err);
/* Waits for pid for at most timeout_ms: its exit code, 128 + the signal when a signal ended it,
 * or -1 when time ran out (it is then SIGKILLed and reaped). */
int proc_wait(pid_t pid, int timeout_ms);

#endif

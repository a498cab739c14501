/*
 * jobsecret.h - the job secret of the authentication tests (test_auth, test_rdzv_auth,
 * test_net_auth): a secret file made as the library wants it (mode 0600), ECCL_JOB_SECRET_FILE
 * pointed at it with the variables read again, and the text of the log in which those tests
 * look for refusals.
 */
#ifndef ECCL_TESTS_SUPPORT_JOBSECRET_H
#define ECCL_TESTS_SUPPORT_JOBSECRET_H

#include <stddef.h>

/* Writes `content` into a new file <dir>/eccl-secret-XXXXXX (dir NULL: /tmp) of mode 0600 and
 * its path into path (size bytes). 0, or -1 with a line on stderr (nothing is left behind). */
int jobsecret_make(char *path, size_t size, const char *dir, const char *content);
/* Points ECCL_JOB_SECRET_FILE at path (NULL: unsets it), then makes the library read its
 * variables again (eccl_param_reset). */
void jobsecret_use(const char *path);
/* The text of the file at path (a log), in a static buffer (the first 1 MiB): "" when it cannot
 * be read. The next call overwrites it. */
char *jobsecret_log_text(const char *path);

#endif

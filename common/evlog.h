/*
 * evlog.h - the JSON-lines event log (ECCL_EVENT_LOG=path; docs/observability.md): one object per
 * line, each line written with one write(2) on a descriptor opened with O_APPEND, so that the
 * library in every worker and the launcher can share one file. Written by the elastic layer and
 * by ecclrun; nothing is written, and nothing costs more than a check, when the variable is unset.
 */
#ifndef ECCL_COMMON_EVLOG_H
#define ECCL_COMMON_EVLOG_H

#include <stdbool.h>
#include <stddef.h>

#define ECCL_EVLOG_MAX_LINE 4096 /* a longer line is cut (and stays valid JSON) */

/* Whether ECCL_EVENT_LOG names a file that could be opened (opens it on the first call). */
bool eccl_evlog_enabled(void);

/*
 * Appends {"ts":<unix seconds, 6 decimals>,"event":"<event>","pid":<pid>,"host":"<host>"<fields>}.
 * `fields_fmt` (may be NULL) formats further members, each starting with a comma, e.g.
 * ",\"rank\":%d"; strings in it must be escaped with eccl_evlog_str. Any thread; never blocks on
 * anything but the write itself; failures are ignored (a log must not break the job).
 */
void eccl_evlog_emit(const char *event, const char *fields_fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* `s` escaped as the content of a JSON string (no quotes) into out (cut to fit); returns out. */
const char *eccl_evlog_str(char *out, size_t size, const char *s);

#endif

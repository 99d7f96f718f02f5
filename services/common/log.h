/* log — one logging interface for every bursar program.
 *
 * Writes to stderr only. When stderr is the journal (JOURNAL_STREAM set) each
 * line carries a syslog "<N>" prefix so journald keeps the level; otherwise a
 * timestamp and the program name. Libraries must not log above debug level.
 */
#pragma once
#include <syslog.h>

void log_init(const char *prog);
void log_set_level(int level);
int log_get_level(void);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs "msg: strerror(-r)" at error level and returns r (a negative errno). */
int log_err_errno_impl(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_err_errno(r, ...) log_err_errno_impl((r), __VA_ARGS__)

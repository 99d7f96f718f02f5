/* log — stderr logging, journald-friendly. Owns the process-wide level and
 * program name; never allocates, never exits. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "bursar";
static int log_level = LOG_INFO;
static int log_journal;

void log_init(const char *prog)
{
	const char *lvl = getenv("BURSAR_LOG_LEVEL");

	log_prog = prog;
	log_journal = getenv("JOURNAL_STREAM") != NULL;
	if (lvl && !strcmp(lvl, "debug"))
		log_level = LOG_DEBUG;
	else if (lvl && !strcmp(lvl, "warn"))
		log_level = LOG_WARNING;
	else if (lvl && !strcmp(lvl, "err"))
		log_level = LOG_ERR;
}

void log_set_level(int level)
{
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

static void log_vmsg(int level, const char *fmt, va_list ap, const char *suffix)
{
	char line[2048];
	int n;

	if (level > log_level)
		return;
	if (log_journal) {
		n = snprintf(line, sizeof(line), "<%d>", level);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s[%d]: ", tm.tm_hour,
			     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_prog, (int)getpid());
	}
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	/* One write per line so concurrent processes do not interleave. */
	fprintf(stderr, "%s%s\n", line, suffix ? suffix : "");
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap, NULL);
	va_end(ap);
	errno = saved;
}

int log_err_errno_impl(int r, const char *fmt, ...)
{
	char suffix[256];
	va_list ap;

	snprintf(suffix, sizeof(suffix), ": %s", strerror(r < 0 ? -r : r));
	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap, suffix);
	va_end(ap);
	return r < 0 ? r : -r;
}

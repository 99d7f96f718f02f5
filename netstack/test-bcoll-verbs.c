/* test-bcoll-verbs.c — runs libbcoll's own test suite (collectives/
 * test-bcoll.c, unchanged, linked beside this file) over the verbs transport
 * on libbnet: the suite selects its transports with
 * setenv("BCOLL_TRANSPORT", ...), and this binary is linked with
 * -Wl,--wrap=setenv, so every case the suite runs over tcp runs over verbs
 * instead (shm cases stay shm: they need no network). Case names keep their
 * "tcp_" prefix; tests/collectives/test-verbs.sh renames them.
 */
#include <execinfo.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

int __real_setenv(const char *name, const char *value, int overwrite);

int __wrap_setenv(const char *name, const char *value, int overwrite)
{
	if (!strcmp(name, "BCOLL_TRANSPORT") && !strcmp(value, "tcp"))
		value = "verbs";
	return __real_setenv(name, value, overwrite);
}
/* A rank that crashes prints where (the memif PMD's threads have crashed on
 * teardown before), then dies of the same signal, so the suite sees it. */
static void on_crash(int sig)
{
	void *bt[32];
	int n = backtrace(bt, 32);

	backtrace_symbols_fd(bt, n, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

__attribute__((constructor)) static void crash_trace_init(void)
{
	signal(SIGSEGV, on_crash);
}

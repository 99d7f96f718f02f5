/* probe — measures what one rank's kernels sustain on this node.
 *
 * Runs `TRAINER --probe` once (at first start, or with --reprobe) with the
 * rank's thread count and reads one JSON line {"flops": X} from its stdout.
 * Blocking on purpose: it runs before the event loop starts, under a hard
 * deadline, and kills the probe if it overruns. The caller stores the result.
 */
#include "noded.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROBE_MAX_OUTPUT 4096

/* Reads the probe's stdout until EOF, a full buffer or the deadline. */
static int probe_read(int fd, uint64_t deadline_us, char *buf, size_t cap, size_t *len)
{
	size_t got = 0;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint64_t now = util_now_us();
		ssize_t k;
		int r;

		if (now >= deadline_us)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)((deadline_us - now) / 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			continue;
		k = read(fd, buf + got, cap - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0 || (got += (size_t)k) == cap - 1)
			break;
	}
	buf[got] = 0;
	*len = got;
	return 0;
}

int probe_run(const char *trainer, int threads, int timeout_s, double *flops, char *err,
	      size_t errlen)
{
	char buf[PROBE_MAX_OUTPUT], th[32];
	uint64_t deadline = util_now_us() + (uint64_t)timeout_s * 1000000;
	int pfd[2], status = 0, r;
	size_t len = 0;
	json_t *o;
	double v;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return snprintf(err, errlen, "cannot create a pipe: %m"), -errno;
	snprintf(th, sizeof(th), "%d", threads);
	pid = fork();
	if (pid == 0) {
		sigset_t ss;

		sigemptyset(&ss);
		sigprocmask(SIG_SETMASK, &ss, NULL);
		dup2(pfd[1], 1);
		setenv("OMP_NUM_THREADS", th, 1);
		setenv("OPENBLAS_NUM_THREADS", th, 1);
		execl(trainer, trainer, "--probe", (char *)NULL);
		dprintf(2, "cannot execute '%s': %s\n", trainer, strerror(errno));
		_exit(127);
	}
	r = pid < 0 ? -errno : 0;
	close(pfd[1]);
	if (r < 0) {
		close(pfd[0]);
		return snprintf(err, errlen, "cannot fork: %s", strerror(-r)), r;
	}
	r = probe_read(pfd[0], deadline, buf, sizeof(buf), &len);
	close(pfd[0]);
	if (r == -ETIMEDOUT) {
		kill(pid, SIGKILL);
		snprintf(err, errlen, "'%s --probe' did not finish within %d s", trainer, timeout_s);
	} else if (r < 0) {
		kill(pid, SIGKILL);
		snprintf(err, errlen, "cannot read the output of '%s --probe': %s", trainer,
			 strerror(-r));
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r < 0)
		return r;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return snprintf(err, errlen, "'%s --probe' exited with status %d", trainer,
				WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)),
		       -EIO;
	buf[strcspn(buf, "\n")] = 0;
	o = json_loads(buf, 0, NULL);
	v = json_number_value(json_object_get(o, "flops"));
	json_decref(o);
	if (!(v > 0) || !isfinite(v) || v > 1e18)
		return snprintf(err, errlen, "'%s --probe' printed '%.100s', not {\"flops\": X} "
				"with 0 < X <= 1e18", trainer, buf), -EBADMSG;
	*flops = v;
	return 0;
}

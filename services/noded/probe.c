/* probe — measures this node: what one rank's kernels sustain, its memory,
 * and the allreduce between its ranks.
 *
 * Runs `TRAINER --probe --device cpu|cuda` (cuda on a GPU node: one GPU's
 * bf16 matmul rate) with the rank's thread count and reads one JSON line
 * {"flops": X} from its stdout; runs bursar-arprobe (two libbcoll ranks, see
 * arprobe.c) for {"alpha_s", "beta_bps"}; reads MemTotal from /proc/meminfo.
 * Blocking on purpose: at first start, with --reprobe, or when admitd asks
 * while no job runs; each under a hard deadline, the child killed if it
 * overruns. The caller stores the result.
 */
#include "noded.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROBE_MAX_OUTPUT 4096
#define PROBE_TIMEOUT_S 60

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

/* Runs prog [arg] with threads threads under a deadline and parses the first
 * line of its stdout as JSON into *out. */
static int probe_json(const char *prog, const char *arg, const char *device, int threads,
		      int timeout_s, json_t **out, char *err, size_t errlen)
{
	char buf[PROBE_MAX_OUTPUT], th[32];
	uint64_t deadline = util_now_us() + (uint64_t)timeout_s * 1000000;
	int pfd[2], status = 0, r;
	size_t len = 0;
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
		if (device)
			execl(prog, prog, arg, "--device", device, (char *)NULL);
		else
			execl(prog, prog, arg, (char *)NULL);
		dprintf(2, "cannot execute '%s': %s\n", prog, strerror(errno));
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
		snprintf(err, errlen, "'%s %s' did not finish within %d s", prog, arg ?: "",
			 timeout_s);
	} else if (r < 0) {
		kill(pid, SIGKILL);
		snprintf(err, errlen, "cannot read the output of '%s %s': %s", prog, arg ?: "",
			 strerror(-r));
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r < 0)
		return r;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return snprintf(err, errlen, "'%s %s' exited with status %d", prog, arg ?: "",
				WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)),
		       -EIO;
	buf[strcspn(buf, "\n")] = 0;
	*out = json_loads(buf, 0, NULL);
	if (!*out)
		return snprintf(err, errlen, "'%s %s' printed '%.100s', not JSON", prog, arg ?: "",
				buf), -EBADMSG;
	return 0;
}

int probe_run(const char *trainer, const char *device, int threads, int timeout_s, double *flops,
	      char *err, size_t errlen)
{
	json_t *o = NULL;
	double v;
	int r;

	r = probe_json(trainer, "--probe", device, threads, timeout_s, &o, err, errlen);
	if (r < 0)
		return r;
	v = json_number_value(json_object_get(o, "flops"));
	json_decref(o);
	if (!(v > 0) || !isfinite(v) || v > 1e18)
		return snprintf(err, errlen, "'%s --probe --device %s' did not print {\"flops\": X} "
				"with 0 < X <= 1e18", trainer, device), -EBADMSG;
	*flops = v;
	return 0;
}

int probe_allreduce(const char *prog, int timeout_s, double *alpha_s, double *beta_bps,
		    char *err, size_t errlen)
{
	json_t *o = NULL;
	double a, b;
	int r;

	r = probe_json(prog, NULL, NULL, 1, timeout_s, &o, err, errlen);
	if (r < 0)
		return r;
	a = json_number_value(json_object_get(o, "alpha_s"));
	b = json_number_value(json_object_get(o, "beta_bps"));
	json_decref(o);
	/* the ranges admitd accepts */
	if (!(a >= 1e-9 && a <= 10) || !(b >= 1e3 && b <= 1e13))
		return snprintf(err, errlen, "'%s' measured alpha %g s, beta %g B/s: out of range",
				prog, a, b), -ERANGE;
	*alpha_s = a;
	*beta_bps = b;
	return 0;
}

int probe_mem(double *bytes)
{
	char line[256];
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			break;
	fclose(f);
	if (kb == 0)
		return -ENODATA;
	*bytes = kb * 1024.0;
	return 0;
}

/* The node's FLOP/s per rank: stored from an earlier probe, or probed now. */
static void setup_flops(struct noded *n, int force)
{
	char err[512];
	int r;

	if (!force && jobdb_get_flops(n, &n->flops) == 0) {
		log_info("using the stored probe result: %.3g FLOP/s per rank", n->flops);
		return;
	}
	log_info("probing this node's FLOP/s per rank with '%s --probe --device %s' (%d threads)",
		 n->trainer, noded_device(n), n->threads_per_rank);
	r = probe_run(n->trainer, noded_device(n), n->threads_per_rank, PROBE_TIMEOUT_S, &n->flops,
		      err, sizeof(err));
	if (r < 0) {
		n->flops = NODED_DEFAULT_FLOPS;
		log_err("probe failed: %s; using the conservative default %.3g FLOP/s per rank "
			"(rerun with --reprobe)", err, n->flops);
		return; /* not stored: the next start probes again */
	}
	log_info("probe: %.3g FLOP/s per rank", n->flops);
	r = jobdb_set_flops(n, n->flops);
	if (r < 0)
		log_err_errno(r, "cannot store the probe result in noded.db");
}

/* bursar-arprobe next to this binary. */
static void arprobe_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	self[k > 0 ? k : 0] = 0;
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	snprintf(buf, len, "%s/bursar-arprobe", slash ? self : ".");
}

/* Memory and allreduce α-β: stored from an earlier probe, or measured now. */
static void setup_profile(struct noded *n, int force)
{
	char err[512], prog[PATH_MAX + 32], text[512];
	json_t *o;
	int r;

	if (!force && jobdb_get_profile(n, text, sizeof(text)) == 0 &&
	    (o = json_loads(text, 0, NULL))) {
		n->mem_bytes = json_number_value(json_object_get(o, "mem_bytes"));
		n->alpha_s = json_number_value(json_object_get(o, "alpha_s"));
		n->beta_bps = json_number_value(json_object_get(o, "beta_bps"));
		n->probed_us = (uint64_t)json_integer_value(json_object_get(o, "probed_us"));
		json_decref(o);
		return;
	}
	n->mem_bytes = n->alpha_s = n->beta_bps = 0;
	n->gpu_mem_bytes = 0;
	for (int i = 0; i < n->n_gpus; i++)
		n->gpu_mem_bytes += (double)n->gpus[i].mem_bytes;
	if (probe_mem(&n->mem_bytes) < 0)
		log_warn("cannot read MemTotal from /proc/meminfo; memory is not reported");
	arprobe_path(prog, sizeof(prog));
	r = probe_allreduce(prog, PROBE_TIMEOUT_S, &n->alpha_s, &n->beta_bps, err, sizeof(err));
	if (r < 0) {
		log_err("allreduce probe failed: %s; admission uses its built-in guesses", err);
		n->alpha_s = n->beta_bps = 0;
	} else {
		log_info("probe: allreduce between 2 ranks alpha %.3g s, beta %.3g B/s; memory "
			 "%.1f GiB", n->alpha_s, n->beta_bps, n->mem_bytes / (1 << 30));
	}
	n->probed_us = util_wall_us();
	o = json_pack("{s:f, s:f, s:f, s:I}", "mem_bytes", n->mem_bytes, "alpha_s", n->alpha_s,
		      "beta_bps", n->beta_bps, "probed_us", (json_int_t)n->probed_us);
	if (r == 0 && o) { /* a failed measurement is tried again at the next start */
		char *t = json_dumps(o, JSON_COMPACT);

		if (!t || jobdb_set_profile(n, t) < 0)
			log_err("cannot store the node profile in noded.db");
		free(t);
	}
	json_decref(o);
}

void noded_profile(struct noded *n, int force)
{
	setup_flops(n, force);
	setup_profile(n, force);
}

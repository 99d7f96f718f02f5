/* bursar-train — the trainer one rank runs; main() only: arguments, mode
 * and signals. The work is in run.c (one rank), model.c, gpt2.c, llama.c and
 * layers.c (the models),
 * optim.c, data.c, safetensors.c and rdv_http.c.
 *
 * Modes:
 *   bursar-train BUNDLE --out DIR [--steps S] [--ckpt DIR]  one rank; with BURSAR_RANK,
 *       BURSAR_SIZE, BURSAR_RDV, BURSAR_RDV_KEY from noded, or alone (size 1)
 *   bursar-train BUNDLE --ranks N [--steps S] [--out DIR]   forks N local ranks
 *       that meet through a directory rendezvous; any failure stops them all
 *   --zero 1: ZeRO-1, the AdamW moments sharded across the ranks (zero.h)
 *   --device cuda|auto: train on the GPU (cuda/, loaded at run time; auto
 *            falls back to the CPU when no GPU answers); default bursar.json's
 *            "device", else cpu
 *   --ckpt DIR: checkpoints there (bursar.json ckpt_every, and at the end);
 *       resumes from it when it holds one. SIGUSR1: checkpoint at the next
 *       step boundary and exit 75 (the parent of --ranks forwards it).
 *   bursar-train --probe [--device cpu|cuda]        prints {"flops": X} (cuda:
 *       the GPU's bf16 matmul rate; exits 2 saying why without one)
 *   bursar-train --encode TOKENIZER_JSON            (tests) the token ids of
 *       stdin, space-separated on one line
 *   bursar-train BUNDLE --dump-grads FILE           (tests) one forward and
 *       backward of step 1's batch: gradients to FILE (safetensors, the
 *       weights' names), log-softmax of the logits to FILE.logprobs (raw f32)
 */
#include "log.h"
#include "tok.h"
#include "trainer.h"
#include "util.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* probe.c: bursar-train --probe [--device cpu|cuda] prints {"flops": X}; 0, or 2. */
int train_probe_main(int argc, char **argv);

static volatile sig_atomic_t got_signal, got_usr1;
static char term_msg[128];

static void usage(void)
{
	fprintf(stderr, "usage: bursar-train BUNDLE_DIR [--out DIR] [--steps S] [--ranks N] "
			"[--ckpt DIR] [--zero 0|1] [--device cpu|cuda|auto]\n"
			"                   [--params FILE]   (training params over bursar.json)\n"
			"       bursar-train --probe [--device cpu|cuda]\n");
}

/* A rank stops at once on SIGTERM/SIGINT: nothing it holds needs saving
 * (checkpoints are written atomically), and a collective could block. */
static void on_term_rank(int sig)
{
	ssize_t n = write(STDERR_FILENO, term_msg, strlen(term_msg));

	(void)n;
	_exit(128 + sig);
}

static void on_term_parent(int sig)
{
	got_signal = sig;
}

static void on_usr1_rank(int sig)
{
	(void)sig;
	train_stop_requested = 1;
}

static void on_usr1_parent(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || !*s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Reads BURSAR_RANK/BURSAR_SIZE; both absent means a lone rank. */
static int env_rank(struct train_opts *o)
{
	const char *r = getenv("BURSAR_RANK"), *s = getenv("BURSAR_SIZE");
	long rank = 0, size = 1;

	if (!r && !s)
		return 0;
	if (!r || !s || parse_long(s, 1, TRAIN_MAX_RANKS, &size) < 0 ||
	    parse_long(r, 0, size - 1, &rank) < 0) {
		log_err("BURSAR_RANK '%s' and BURSAR_SIZE '%s' must be set together, with 0 <= "
			"rank < size <= %d", r ? r : "", s ? s : "", TRAIN_MAX_RANKS);
		return -EINVAL;
	}
	o->rank = (int)rank;
	o->size = (int)size;
	o->rdv = getenv("BURSAR_RDV");
	o->rdv_key = getenv("BURSAR_RDV_KEY");
	o->job = getenv("BURSAR_JOB");
	return 0;
}

static void stop_all(pid_t *pids, int n, int sig)
{
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], sig);
}

/* The bundle and its batch split checked once, before n ranks are forked
 * only to fail alike; 0, or the exit status. */
static int local_batch_ok(const struct train_opts *o, int n)
{
	struct bundle_info bi;
	char err[512] = "";

	if (train_load_bundle(o, &bi, err, sizeof(err)) < 0) {
		log_err("%s", err);
		return 2;
	}
	return train_batch_splits(&bi.params, n) < 0 ? 2 : 0;
}

/* Forks n ranks of this same program (exec, so each starts clean) meeting in
 * a fresh directory; the first failure stops the rest. */
static int run_local(int n, char **argv, int argc, const sigset_t *usr1)
{
	char tmpl[] = "/tmp/bursar-train-rdv-XXXXXX", rdv[PATH_MAX], num[16], size[16];
	char *args[32];
	pid_t pids[TRAIN_MAX_LOCAL_RANKS] = {0};
	int left = n, status = 0, na = 0, threads, ckpted = 0;
	struct sigaction sa = {.sa_handler = on_term_parent}, su = {.sa_handler = on_usr1_parent};
	pid_t parent = getpid(); /* a rank checks it still has this parent */

	for (int i = 0; i < argc && na < 30; i++) {
		if (!strcmp(argv[i], "--ranks")) {
			i++;
			continue;
		}
		args[na++] = argv[i];
	}
	args[na] = NULL;
	if (!mkdtemp(tmpl))
		return log_err_errno(-errno, "cannot create a rendezvous directory"), 1;
	snprintf(rdv, sizeof(rdv), "dir:%s", tmpl);
	snprintf(size, sizeof(size), "%d", n);
	threads = (int)sysconf(_SC_NPROCESSORS_ONLN) / n;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &su, NULL);
	/* the ranks start with SIGUSR1 held (the mask survives exec) and let it
	 * in once their handler is in; here it is let in after the forks */
	for (int r = 0; r < n; r++) {
		pids[r] = fork();
		if (pids[r] < 0) {
			log_err_errno(-errno, "cannot fork rank %d", r);
			stop_all(pids, r, SIGKILL);
			left = r;
			status = 1;
			break;
		}
		if (pids[r] == 0) {
			/* a rank does not outlive this parent (kill -9 included) */
			if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
				_exit(127);
			snprintf(num, sizeof(num), "%d", r);
			setenv("BURSAR_RANK", num, 1);
			setenv("BURSAR_SIZE", size, 1);
			setenv("BURSAR_RDV", rdv, 1);
			snprintf(num, sizeof(num), "%d", threads > 1 ? threads : 1);
			setenv("OMP_NUM_THREADS", num, 0);
			execv("/proc/self/exe", args);
			fprintf(stderr, "bursar-train: cannot exec rank %d: %s\n", r, strerror(errno));
			_exit(127);
		}
	}
	sigprocmask(SIG_UNBLOCK, usr1, NULL);
	while (left > 0) {
		int st;
		pid_t p = waitpid(-1, &st, 0);

		if (p < 0 && errno == EINTR) {
			if (got_signal)
				stop_all(pids, n, SIGTERM);
			if (got_usr1) {
				got_usr1 = 0;
				stop_all(pids, n, SIGUSR1);
			}
			continue;
		}
		if (p < 0)
			break;
		for (int r = 0; r < n; r++) {
			if (pids[r] != p)
				continue;
			pids[r] = 0;
			left--;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				break;
			if (WIFEXITED(st) && WEXITSTATUS(st) == TRAIN_EXIT_CHECKPOINTED) {
				ckpted++;
				break;
			}
			if (!status)
				log_err("rank %d %s %d; stopping the other ranks", r,
					WIFEXITED(st) ? "exited with status" : "was killed by signal",
					WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			if (!status)
				stop_all(pids, n, SIGTERM);
			status = 1;
		}
	}
	util_rm_rf(tmpl);
	if (got_signal)
		return 128 + got_signal;
	return status ? status : ckpted ? TRAIN_EXIT_CHECKPOINTED : 0;
}

static int put_id(void *ctx, int id)
{
	int *first = ctx;

	printf(*first ? "%d" : " %d", id);
	*first = 0;
	return 0;
}

/* Test hook: stdin (at most TOK_MAX_FILE bytes) encoded with a tokenizer. */
static int encode_stdin(const char *path)
{
	static char buf[TOK_MAX_FILE];
	char err[512];
	struct tok t;
	size_t n = 0, k;
	int first = 1;

	if (tok_load(path, &t, err, sizeof(err)) < 0) {
		log_err("%s", err);
		return 2;
	}
	while (n < sizeof(buf) && (k = fread(buf + n, 1, sizeof(buf) - n, stdin)) > 0)
		n += k;
	tok_encode(&t, buf, n, put_id, &first);
	printf("\n");
	tok_free(&t);
	return 0;
}

/* The OpenBLAS core to force, or NULL. OpenBLAS 0.3.21 does not know newer
 * CPUs (e.g. Emerald Rapids, family 6 model 207) and falls back to its SSE3
 * "Prescott" kernels, 3x slower than its AVX-512 ones there; it reads
 * OPENBLAS_CORETYPE when it loads, so the override needs the re-exec too. */
static const char *blas_core_override(void)
{
	static const char *const good[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
					   "SapphireRapids"};
	const char *core = openblas_get_corename();

	if (getenv("OPENBLAS_CORETYPE") || !core)
		return NULL;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!strcasecmp(core, good[i]))
			return NULL;
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
		return "SkylakeX";
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return "Haswell";
	return NULL;
}

int main(int argc, char **argv)
{
	struct train_opts o = {.rank = 0, .size = 1};
	struct sigaction sa = {.sa_handler = on_term_rank}, su = {.sa_handler = on_usr1_rank};
	long ranks = 0;
	const char *core;
	sigset_t usr1;

	/* SIGUSR1 (checkpoint and exit) held until its handler is in: before
	 * that its default action would kill the rank. The mask and a pending
	 * signal survive the re-exec below. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);

	/* OpenMP threads that spin between parallel regions steal the cores
	 * OpenBLAS's own threads need (2x slower on 2 cores). libgomp reads the
	 * policy when it loads, before main, hence the one re-exec. */
	core = blas_core_override();
	if (!getenv("OMP_WAIT_POLICY") || core) {
		if (!getenv("OMP_WAIT_POLICY"))
			setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
		if (core)
			setenv("OPENBLAS_CORETYPE", core, 1);
		execv("/proc/self/exe", argv);
	}
	log_init("bursar-train");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--encode") && i + 1 < argc) {
			return encode_stdin(argv[i + 1]);
		} else if (!strcmp(a, "--probe")) {
			return train_probe_main(argc, argv);
		} else if (!strcmp(a, "--dump-grads") && i + 1 < argc) {
			o.dump_grads = argv[++i];
		} else if (!strcmp(a, "--ckpt") && i + 1 < argc) {
			o.ckpt = argv[++i];
		} else if (!strcmp(a, "--params") && i + 1 < argc) {
			o.params = argv[++i];
		} else if (!strcmp(a, "--zero") && i + 1 < argc) {
			long z;

			if (parse_long(argv[++i], 0, 1, &z) < 0) {
				log_err("--zero '%s' must be 0 (off) or 1 (optimizer state sharded)",
					argv[i]);
				return 2;
			}
			o.zero = (int)z;
		} else if (!strcmp(a, "--device") && i + 1 < argc) {
			o.device = argv[++i];
			if (strcmp(o.device, "cpu") && strcmp(o.device, "cuda") &&
			    strcmp(o.device, "auto")) {
				log_err("--device '%s' must be cpu, cuda or auto", o.device);
				return 2;
			}
		} else if (!strcmp(a, "--out") && i + 1 < argc) {
			o.out = argv[++i];
		} else if (!strcmp(a, "--steps") && i + 1 < argc) {
			if (parse_long(argv[++i], 1, 10000000, &o.steps) < 0) {
				log_err("--steps '%s' must be a number in [1, 10000000]", argv[i]);
				return 2;
			}
		} else if (!strcmp(a, "--ranks") && i + 1 < argc) {
			if (parse_long(argv[++i], 1, TRAIN_MAX_LOCAL_RANKS, &ranks) < 0) {
				log_err("--ranks '%s' must be a number in [1, %d]", argv[i],
					TRAIN_MAX_LOCAL_RANKS);
				return 2;
			}
		} else if (a[0] == '-' || o.bundle) {
			usage();
			return 2;
		} else {
			o.bundle = a;
		}
	}
	if (!o.bundle) {
		usage();
		return 2;
	}
	if (ranks > 0 && !getenv("BURSAR_RANK")) {
		int r = local_batch_ok(&o, (int)ranks);

		if (r)
			return r;
		r = run_local((int)ranks, argv, argc, &usr1);
		return r;
	}
	if (env_rank(&o) < 0)
		return 2;
	snprintf(term_msg, sizeof(term_msg), "bursar-train: rank %d of %d stopped by a signal\n",
		 o.rank, o.size);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &su, NULL);
	sigprocmask(SIG_UNBLOCK, &usr1, NULL); /* one that came early lands now */
	return train_rank(&o);
}

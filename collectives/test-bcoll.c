/* test-bcoll — libbcoll against a serial reference, with real processes on
 * real sockets: 1..8 ranks forked from this test meet through the directory
 * rendezvous and run allreduce (counts 0, 1, odd, a few MB; in-place and
 * out-of-place; sum, avg, max), broadcast and barrier. Fault cases kill -9 or
 * freeze one rank mid-allreduce and check the survivors fail within the
 * deadline with an error that names it. */
#include "../tests/t.h"
#include "bcoll.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static char tmpl[] = "/tmp/test-bcoll-XXXXXX";
static char *root;

static float value(int rank, size_t i)
{
	return (float)((int)((rank + 1) * 31 + i * 7) % 97 - 48);
}

/* Child: runs every correctness case; returns the number of wrong results. */
static int rank_cases(struct bcoll_comm *c, int rank, int size)
{
	static const size_t counts[] = {0, 1, 2, 7, 1001, (1u << 20) + 3};
	static const enum bcoll_op ops[] = {BCOLL_SUM, BCOLL_AVG, BCOLL_MAX};
	size_t maxn = (1u << 20) + 3;
	float *a = malloc(maxn * 4), *b = malloc(maxn * 4);
	double *d = malloc(16 * 8);
	int wrong = 0, r;

	for (size_t k = 0; k < ARRAY_SIZE(counts); k++) {
		for (size_t o = 0; o < ARRAY_SIZE(ops); o++) {
			for (int inplace = 0; inplace < 2; inplace++) {
				size_t n = counts[k];
				float *out = inplace ? a : b;

				for (size_t i = 0; i < n; i++)
					a[i] = value(rank, i), b[i] = -1;
				r = bcoll_allreduce(c, a, out, n, BCOLL_F32, ops[o]);
				if (r < 0) {
					fprintf(stderr, "rank %d: %s\n", rank, bcoll_last_error(c));
					return 1000;
				}
				for (size_t i = 0; i < n; i++) {
					float want = ops[o] == BCOLL_MAX ? -1e30f : 0;
					for (int q = 0; q < size; q++)
						want = ops[o] == BCOLL_MAX ? fmaxf(want, value(q, i))
									   : want + value(q, i);
					if (ops[o] == BCOLL_AVG)
						want /= size;
					if (fabsf(out[i] - want) > 1e-5f * (1 + fabsf(want))) {
						if (!wrong)
							fprintf(stderr, "rank %d: count %zu op %d inplace "
								"%d: [%zu] got %g want %g\n", rank, n,
								(int)ops[o], inplace, i, out[i], want);
						wrong++;
						break;
					}
				}
			}
		}
	}
	for (int i = 0; i < 16; i++)
		d[i] = rank == size - 1 ? i * 1.5 : -7;
	if (bcoll_broadcast(c, d, 16, BCOLL_F64, size - 1) < 0)
		return 1000;
	for (int i = 0; i < 16; i++)
		wrong += d[i] != i * 1.5;
	for (size_t i = 0; i < maxn; i++)
		a[i] = rank == 0 ? value(0, i) : 0;
	if (bcoll_broadcast(c, a, maxn, BCOLL_F32, 0) < 0)
		return 1000;
	for (size_t i = 0; i < maxn; i++)
		if (a[i] != value(0, i)) {
			wrong++;
			break;
		}
	if (bcoll_barrier(c) < 0)
		return 1000;
	free(a), free(b), free(d);
	return wrong;
}

/* Child: a loop of large allreduces until one fails; writes the error to
 * dir/err-RANK and exits 3 on failure. */
static int rank_loop(struct bcoll_comm *c, int rank, const char *dir)
{
	size_t n = 1u << 21;
	float *a = calloc(n, 4);
	char p[300];
	FILE *f;

	for (int it = 0; it < 100000; it++) {
		if (bcoll_allreduce(c, a, a, n, BCOLL_F32, BCOLL_SUM) < 0) {
			snprintf(p, sizeof(p), "%s/err-%d", dir, rank);
			f = fopen(p, "w");
			if (f) {
				fputs(bcoll_last_error(c), f);
				fclose(f);
			}
			free(a);
			return 3;
		}
		if (it == 0) {
			snprintf(p, sizeof(p), "%s/started-%d", dir, rank);
			close(open(p, O_CREAT | O_WRONLY, 0600));
		}
	}
	free(a);
	return 0;
}

/* Forks size ranks meeting in a fresh sub-directory; mode 0 = cases,
 * 1 = loop. Fills pids. */
static void spawn(int size, int mode, const char *dir, pid_t *pids)
{
	mkdir(dir, 0700);
	for (int r = 0; r < size; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			struct bcoll_rendezvous rdv = bcoll_rendezvous_dir(dir);
			struct bcoll_comm *c;
			char err[256];
			int e = bcoll_comm_init_err(r, size, &rdv, 0, &c, err, sizeof(err)), w;

			if (e < 0) {
				fprintf(stderr, "rank %d: init: %s\n", r, err);
				_exit(2);
			}
			w = mode == 0 ? rank_cases(c, r, size) : rank_loop(c, r, dir);
			bcoll_comm_destroy(c);
			_exit(w ? (mode == 0 ? 1 : w) : 0);
		}
	}
}

static int wait_all(int size, pid_t *pids)
{
	int bad = 0, st;

	for (int r = 0; r < size; r++) {
		waitpid(pids[r], &st, 0);
		bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	return bad;
}

static int n_ranks;

static void t_allreduce_ranks(void)
{
	char dir[300];
	pid_t pids[8];

	snprintf(dir, sizeof(dir), "%s/n%d", root, n_ranks);
	spawn(n_ranks, 0, dir, pids);
	T_EQ_INT(wait_all(n_ranks, pids), 0);
}

/* True when msg names "rank 1" (not rank 10, 11...). */
static int names_rank1(const char *msg)
{
	for (const char *p = strstr(msg, "rank 1"); p; p = strstr(p + 1, "rank 1"))
		if (p[6] < '0' || p[6] > '9')
			return 1;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int wait_file(const char *path, double timeout)
{
	double t0 = now_s();

	while (access(path, F_OK) != 0) {
		if (now_s() - t0 > timeout)
			return -1;
		usleep(10000);
	}
	return 0;
}

/* Kills (sig 9) or freezes (SIGSTOP) rank 1 of 3; survivors must fail within
 * the 2 s deadline plus slack, naming rank 1. */
static void fault_case(int sig, const char *sub)
{
	char dir[300], p[400], msg[300];
	pid_t pids[3];
	double t0;
	int st, named = 0;

	snprintf(dir, sizeof(dir), "%s/%s", root, sub);
	spawn(3, 1, dir, pids);
	snprintf(p, sizeof(p), "%s/started-1", dir);
	T_CHECK(wait_file(p, 20) == 0, "rank 1 never completed an allreduce");
	usleep(100000);
	kill(pids[1], sig);
	t0 = now_s();
	for (int r = 0; r < 3; r += 2) {
		waitpid(pids[r], &st, 0);
		T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3, "rank %d: status %d, want exit 3", r,
			st);
		snprintf(p, sizeof(p), "%s/err-%d", dir, r);
		FILE *f = fopen(p, "r");
		msg[0] = 0;
		if (f) {
			if (!fgets(msg, sizeof(msg), f))
				msg[0] = 0;
			fclose(f);
		}
		T_CHECK(strstr(msg, "allreduce #"), "rank %d: error '%s' names no operation", r, msg);
		named += names_rank1(msg);
		printf("# %s: rank %d: %s\n", sub, r, msg);
	}
	T_CHECK(now_s() - t0 < 6, "survivors took %.1f s to notice (deadline 2 s)", now_s() - t0);
	if (sig == SIGKILL)
		T_EQ_INT(named, 2);
	else
		T_CHECK(named >= 1, "no survivor named the frozen rank 1");
	kill(pids[1], SIGKILL);
	waitpid(pids[1], &st, 0);
}

static void t_fault_kill(void)
{
	fault_case(SIGKILL, "kill");
}

static void t_fault_freeze(void)
{
	fault_case(SIGSTOP, "freeze");
}

static void t_bad_args(void)
{
	struct bcoll_comm *c = NULL;
	float x = 2;
	char err[256];

	T_EQ_INT(bcoll_comm_init_err(0, 0, NULL, 0, &c, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "size 0"), "err: %s", err);
	T_EQ_INT(bcoll_comm_init_err(2, 2, NULL, 0, &c, err, sizeof(err)), -EINVAL);
	T_CHECK(c == NULL, "out written on failure");
	T_EQ_INT(bcoll_comm_init(0, 1, NULL, 0, &c), 0);
	T_EQ_INT(bcoll_allreduce(c, &x, &x, 1, BCOLL_F32, 99), -EINVAL);
	T_CHECK(strstr(bcoll_last_error(c), "allreduce #1: unknown op"), "err: %s",
		bcoll_last_error(c));
	T_EQ_INT(bcoll_broadcast(c, &x, 1, BCOLL_F32, 1), -EINVAL);
	T_EQ_INT(bcoll_allreduce(c, &x, &x, 1, BCOLL_F32, BCOLL_AVG), 0);
	T_CHECK(x == 2, "size-1 avg changed the value: %g", x);
	bcoll_comm_destroy(c);
	bcoll_comm_destroy(NULL);
}

int main(void)
{
	char name[64];

	root = mkdtemp(tmpl);
	if (!root)
		return 1;
	t_run("bad_args", t_bad_args);
	for (n_ranks = 1; n_ranks <= 8; n_ranks++) {
		snprintf(name, sizeof(name), "allreduce_broadcast_barrier_%d_ranks", n_ranks);
		t_run(name, t_allreduce_ranks);
	}
	setenv("BCOLL_TIMEOUT_MS", "2000", 1);
	t_run("fault_kill_rank_mid_allreduce", t_fault_kill);
	t_run("fault_frozen_rank_times_out", t_fault_freeze);
	{
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
		if (system(cmd) != 0)
			return 1;
	}
	return t_done();
}

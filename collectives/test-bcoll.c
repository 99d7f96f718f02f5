/* test-bcoll — libbcoll against a serial reference, with real processes on
 * real sockets and real shared memory: 1..8 ranks forked from this test meet
 * through the directory rendezvous and run every collective for every dtype
 * and op (sizes 0, 1, odd, piece boundaries +-1, 64 MiB once; in and out of
 * place; blocking and non-blocking), each algorithm forced, over shm and tcp.
 * Fault cases kill -9, freeze or abort one rank mid-allreduce and check that
 * every survivor fails within the bound naming it; bad-use cases (mismatched
 * counts or dtypes, a rank joining twice, a wrong size) must fail clearly. */
#include "../tests/t.h"
#include "bcoll.h"
#include "bcoll_int.h" /* bcoll_reduce3, bcoll_simd_cap: kernels against each other */

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
#define PIECE_F32 262144 /* BCOLL_SCRATCH_BYTES / 4 */

static char tmpl[] = "/tmp/test-bcoll-XXXXXX";
static char *root;
static int case_no;

static double value(int rank, size_t i)
{
	return (double)((int)(((rank + 1) * 31 + i * 7) % 17) - 8);
}

/* Exact for the small integers value() makes. */
static uint16_t to_f16(double v)
{
	int e;
	double m;

	if (v == 0)
		return 0;
	m = frexp(fabs(v), &e); /* m in [0.5, 1) */
	return (v < 0 ? 0x8000 : 0) | (uint16_t)((e - 1 + 15) << 10) |
	       (uint16_t)((m * 2 - 1) * 1024);
}

static double from_f16(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v = e ? ldexp(1 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);

	return h & 0x8000 ? -v : v;
}

static void put(enum bcoll_dtype dt, void *b, size_t i, double v)
{
	float f = (float)v;
	uint32_t u;

	switch (dt) {
	case BCOLL_F32: ((float *)b)[i] = (float)v; break;
	case BCOLL_F64: ((double *)b)[i] = v; break;
	case BCOLL_I32: ((int32_t *)b)[i] = (int32_t)v; break;
	case BCOLL_I64: ((int64_t *)b)[i] = (int64_t)v; break;
	case BCOLL_F16: ((uint16_t *)b)[i] = to_f16(v); break;
	case BCOLL_BF16:
		memcpy(&u, &f, 4);
		((uint16_t *)b)[i] = u >> 16;
		break;
	}
}

static double get(enum bcoll_dtype dt, const void *b, size_t i)
{
	uint32_t u;
	float f;

	switch (dt) {
	case BCOLL_F32: return ((const float *)b)[i];
	case BCOLL_F64: return ((const double *)b)[i];
	case BCOLL_I32: return ((const int32_t *)b)[i];
	case BCOLL_I64: return (double)((const int64_t *)b)[i];
	case BCOLL_F16: return from_f16(((const uint16_t *)b)[i]);
	case BCOLL_BF16:
		u = (uint32_t)((const uint16_t *)b)[i] << 16;
		memcpy(&f, &u, 4);
		return f;
	}
	return NAN;
}

static double want(enum bcoll_op op, enum bcoll_dtype dt, int size, size_t i)
{
	double w = value(0, i);

	for (int q = 1; q < size; q++) {
		double v = value(q, i);
		w = op == BCOLL_MIN ? fmin(w, v) : op == BCOLL_MAX ? fmax(w, v) : w + v;
	}
	if (op == BCOLL_AVG)
		w = dt == BCOLL_I32 || dt == BCOLL_I64 ? trunc(w / size) : w / size;
	return w;
}

static int close_enough(enum bcoll_dtype dt, double got, double w)
{
	double tol = dt == BCOLL_F16 || dt == BCOLL_BF16 ? 1e-2 : dt == BCOLL_F32 ? 1e-6 : 0;

	return fabs(got - w) <= tol * (1 + fabs(w));
}

struct ctx {
	struct bcoll_comm *c;
	int rank, size, wrong;
	char *a, *b; /* inputs, outputs: max count * 8 bytes * size */
};

static void report(struct ctx *x, const char *what, enum bcoll_dtype dt, int op, size_t n,
		   size_t i, double got, double w)
{
	if (x->wrong++ < 3)
		fprintf(stderr, "rank %d: %s %s op %d count %zu: [%zu] got %g want %g (%s)\n",
			x->rank, what, bcoll_dtype_name(dt), op, n, i, got, w,
			bcoll_last_error(x->c));
}

static void fill(struct ctx *x, enum bcoll_dtype dt, void *buf, int rank, size_t n, size_t base)
{
	for (size_t i = 0; i < n; i++)
		put(dt, buf, i, value(rank, base + i));
}

static void check_allreduce(struct ctx *x, enum bcoll_dtype dt, enum bcoll_op op, size_t n,
			    int inplace)
{
	char *out = inplace ? x->a : x->b;
	int r;

	fill(x, dt, x->a, x->rank, n, 0);
	r = bcoll_allreduce(x->c, x->a, out, n, dt, op);
	if (r < 0)
		return report(x, "allreduce failed", dt, op, n, 0, r, 0);
	for (size_t i = 0; i < n; i++)
		if (!close_enough(dt, get(dt, out, i), want(op, dt, x->size, i)))
			return report(x, "allreduce", dt, op, n, i, get(dt, out, i),
				      want(op, dt, x->size, i));
}

/* inplace: recv is this rank's own block of send (as ZeRO calls it). */
static void check_reduce_scatter(struct ctx *x, enum bcoll_dtype dt, enum bcoll_op op, size_t n,
				 int inplace)
{
	size_t esz = bcoll_dtype_size(dt);
	char *out = inplace ? x->a + x->rank * n * esz : x->b;
	int r;

	fill(x, dt, x->a, x->rank, n * x->size, 0);
	r = bcoll_reduce_scatter(x->c, x->a, out, n, dt, op);
	if (r < 0)
		return report(x, "reduce_scatter failed", dt, op, n, 0, r, 0);
	for (size_t i = 0; i < n; i++) {
		double w = want(op, dt, x->size, x->rank * n + i);

		if (!close_enough(dt, get(dt, out, i), w))
			return report(x, "reduce_scatter", dt, op, n, i, get(dt, out, i), w);
	}
}

static void check_allgather(struct ctx *x, enum bcoll_dtype dt, size_t n, int inplace)
{
	size_t esz = bcoll_dtype_size(dt);
	char *mine = inplace ? x->b + x->rank * n * esz : x->a;
	int r;

	fill(x, dt, mine, x->rank, n, 0);
	r = bcoll_allgather(x->c, mine, x->b, n, dt);
	if (r < 0)
		return report(x, "allgather failed", dt, 0, n, 0, r, 0);
	for (int q = 0; q < x->size; q++)
		for (size_t i = 0; i < n; i++)
			if (get(dt, x->b, q * n + i) != value(q, i))
				return report(x, "allgather", dt, 0, n, q * n + i,
					      get(dt, x->b, q * n + i), value(q, i));
}

static void check_bcast(struct ctx *x, enum bcoll_dtype dt, size_t n, int rootr)
{
	int r;

	fill(x, dt, x->a, x->rank == rootr ? 5 : x->rank + 100, n, 0);
	r = bcoll_broadcast(x->c, x->a, n, dt, rootr);
	if (r < 0)
		return report(x, "broadcast failed", dt, 0, n, 0, r, 0);
	for (size_t i = 0; i < n; i++)
		if (get(dt, x->a, i) != value(5, i))
			return report(x, "broadcast", dt, 0, n, i, get(dt, x->a, i), value(5, i));
}

static void check_reduce(struct ctx *x, enum bcoll_dtype dt, enum bcoll_op op, size_t n, int rt)
{
	int r;

	fill(x, dt, x->a, x->rank, n, 0);
	r = bcoll_reduce(x->c, x->a, x->rank == rt ? x->b : NULL, n, dt, op, rt);
	if (r < 0)
		return report(x, "reduce failed", dt, op, n, 0, r, 0);
	for (size_t i = 0; x->rank == rt && i < n; i++)
		if (!close_enough(dt, get(dt, x->b, i), want(op, dt, x->size, i)))
			return report(x, "reduce", dt, op, n, i, get(dt, x->b, i),
				      want(op, dt, x->size, i));
}

/* Three allreduces in flight at once, then a blocking one behind them. */
static void check_nonblocking(struct ctx *x)
{
	struct bcoll_req *req[3];
	size_t n = 5000;
	float *in = (float *)x->a, *out = (float *)x->b;
	int r, done = 0, res = 1;

	for (int k = 0; k < 3; k++) {
		for (size_t i = 0; i < n; i++)
			in[k * n + i] = (float)(value(x->rank, i) * (k + 1));
		r = bcoll_iallreduce(x->c, in + k * n, out + k * n, n, BCOLL_F32, BCOLL_SUM,
				     &req[k]);
		if (r < 0)
			return report(x, "iallreduce failed", BCOLL_F32, 0, n, 0, r, 0);
	}
	while (!done)
		done = bcoll_test(req[0], &res);
	if (res < 0 || bcoll_wait(req[1]) < 0 || bcoll_wait(req[2]) < 0)
		return report(x, "wait failed", BCOLL_F32, 0, n, 0, res, 0);
	for (int k = 0; k < 3; k++)
		for (size_t i = 0; i < n; i++)
			if (out[k * n + i] != (float)(want(BCOLL_SUM, BCOLL_F32, x->size, i) * (k + 1)))
				return report(x, "iallreduce", BCOLL_F32, 0, n, i, out[k * n + i],
					      want(BCOLL_SUM, BCOLL_F32, x->size, i) * (k + 1));
	check_allreduce(x, BCOLL_F32, BCOLL_MAX, 3, 0);
}

static const enum bcoll_dtype all_dt[] = {BCOLL_F32, BCOLL_F64, BCOLL_I32,
					   BCOLL_I64, BCOLL_F16, BCOLL_BF16};
static const enum bcoll_op all_op[] = {BCOLL_SUM, BCOLL_AVG, BCOLL_MIN, BCOLL_MAX};

/* level 0: every dtype x op x small size and every collective;
 * level 1: piece boundaries +-1 for the forced algorithm; level 2: 64 MiB. */
static void rank_cases(struct ctx *x, int level)
{
	static const size_t small[] = {0, 1, 7, 24, 25, 1001}; /* 24 f32: shm's tiny path */
	static const size_t mid[] = {PIECE_F32 - 1, PIECE_F32 + 1, 3 * PIECE_F32 + 5};

	if (level == 2) {
		check_allreduce(x, BCOLL_F32, BCOLL_SUM, 16u << 20, 1);
		return;
	}
	if (level == 1) {
		for (size_t k = 0; k < ARRAY_SIZE(mid); k++) {
			check_allreduce(x, BCOLL_F32, BCOLL_SUM, mid[k], k & 1);
			check_allreduce(x, BCOLL_I64, BCOLL_MAX, mid[k], !(k & 1));
		}
		check_allreduce(x, BCOLL_BF16, BCOLL_AVG, PIECE_F32 * 4 + 3, 0);
		check_reduce_scatter(x, BCOLL_F32, BCOLL_SUM, PIECE_F32 + 1, 1);
		check_bcast(x, BCOLL_F32, PIECE_F32 + 1, x->size - 1);
		/* Several of shm's 1 MiB slot chunks, with a ragged tail. */
		check_reduce_scatter(x, BCOLL_F64, BCOLL_AVG, mid[2] / 2, 0);
		check_reduce_scatter(x, BCOLL_F32, BCOLL_SUM, mid[2] / 2, 1);
		check_allgather(x, BCOLL_I32, mid[2], 1);
		check_bcast(x, BCOLL_I64, mid[2], 1);
		return;
	}
	for (size_t d = 0; d < ARRAY_SIZE(all_dt); d++) {
		for (size_t o = 0; o < ARRAY_SIZE(all_op); o++) {
			for (size_t k = 0; k < ARRAY_SIZE(small); k++)
				for (int inplace = 0; inplace < 2; inplace++)
					check_allreduce(x, all_dt[d], all_op[o], small[k], inplace);
			check_reduce_scatter(x, all_dt[d], all_op[o], 33, o & 1);
			check_reduce(x, all_dt[d], all_op[o], 1001, x->size - 1);
		}
		check_allgather(x, all_dt[d], 1001, d & 1);
		check_bcast(x, all_dt[d], 1001, 0);
	}
	check_reduce_scatter(x, BCOLL_F32, BCOLL_SUM, 0, 0);
	check_allgather(x, BCOLL_F32, 1, 0);
	check_bcast(x, BCOLL_F32, 100000, x->size - 1);
	check_nonblocking(x);
	if (bcoll_barrier(x->c) < 0)
		report(x, "barrier failed", 0, 0, 0, 0, 0, 0);
}

/* Child: a loop of allreduces; rank 1 aborts at iteration 3 when told to.
 * On failure writes the error to dir/err-RANK and exits 3. */
static int rank_loop(struct bcoll_comm *c, int rank, const char *dir, int abort_rank1)
{
	size_t n = 1u << 20;
	float *a = calloc(n, 4);
	char p[300];
	FILE *f;

	for (int it = 0; it < 100000; it++) {
		if (abort_rank1 && rank == 1 && it == 3) {
			bcoll_abort(c);
			pause();
		}
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

enum { M_CASES, M_LOOP, M_ABORT, M_BADCOUNT, M_BADTYPE, M_PLAIN, M_BADPATH };

/* Forks one rank: init (as rank r of size), then the mode's work. Exit 0 ok,
 * 1 wrong results, 2 init failed, 3 collective failed. Errors go to dir/err-r. */
static pid_t spawn_rank(const char *dir, int r, int size, int mode, int level)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct bcoll_rendezvous rdv = bcoll_rendezvous_dir(dir);
		struct bcoll_comm *c;
		char err[256], p[300];
		int e = bcoll_comm_init_err(r, size, &rdv, 0, &c, err, sizeof(err)), w = 0;

		if (e < 0) {
			FILE *f;

			snprintf(p, sizeof(p), "%s/err-%d", dir, r);
			if ((f = fopen(p, "a"))) {
				fprintf(f, "%s\n", err);
				fclose(f);
			}
			_exit(2);
		}
		if (mode == M_CASES) {
			size_t maxb = (size_t)(level == 2 ? 16u << 20 : 4 * PIECE_F32 + 8) * 8 *
				      (level == 2 ? 1 : size);
			struct ctx x = {.c = c, .rank = r, .size = size, .a = malloc(maxb),
					.b = malloc(maxb)};

			rank_cases(&x, level);
			w = x.wrong ? 1 : 0;
			free(x.a), free(x.b);
		} else if (mode == M_LOOP || mode == M_ABORT) {
			w = rank_loop(c, r, dir, mode == M_ABORT);
		} else {
			float v[1002] = {0};
			size_t n = r != 1 ? 1001 : mode == M_BADCOUNT ? 1002 : mode == M_BADPATH ? 8 : 1001;
			enum bcoll_dtype dt = mode == M_BADTYPE && r == 1 ? BCOLL_I32 : BCOLL_F32;

			if (bcoll_allreduce(c, v, v, n, dt, BCOLL_SUM) < 0) {
				FILE *f;

				snprintf(p, sizeof(p), "%s/err-%d", dir, r);
				if ((f = fopen(p, "w"))) {
					fputs(bcoll_last_error(c), f);
					fclose(f);
				}
				w = 3;
			}
		}
		bcoll_comm_destroy(c);
		_exit(w);
	}
	return pid;
}

static void new_dir(char *dir, size_t len)
{
	snprintf(dir, len, "%s/c%d", root, case_no++);
	mkdir(dir, 0700);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void read_err(const char *dir, int r, char *msg, size_t len)
{
	char p[400];
	FILE *f;

	snprintf(p, sizeof(p), "%s/err-%d", dir, r);
	msg[0] = 0;
	f = fopen(p, "r");
	if (f) {
		if (!fgets(msg, (int)len, f))
			msg[0] = 0;
		fclose(f);
	}
}

static const char *g_transport, *g_algo;
static int g_ranks, g_level;

static void t_cases(void)
{
	char dir[300], msg[300];
	pid_t pids[8];
	int st;

	setenv("BCOLL_TRANSPORT", g_transport, 1);
	setenv("BCOLL_ALGO", g_algo, 1);
	new_dir(dir, sizeof(dir));
	for (int r = 0; r < g_ranks; r++)
		pids[r] = spawn_rank(dir, r, g_ranks, M_CASES, g_level);
	for (int r = 0; r < g_ranks; r++) {
		waitpid(pids[r], &st, 0);
		read_err(dir, r, msg, sizeof(msg));
		T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank %d: status 0x%x %s", r, st,
			msg);
	}
}

static void run_cases(const char *tp, const char *algo, int ranks, int level)
{
	char name[96];

	g_transport = tp, g_algo = algo, g_ranks = ranks, g_level = level;
	snprintf(name, sizeof(name), "%s_%s_%d_ranks_%s", tp, algo, ranks,
		 level == 0 ? "all_types_ops_collectives" : level == 1 ? "piece_boundaries"
								       : "64MiB");
	t_run(name, t_cases);
}

/* The rank an error blames: the first "rank N" after "#seq: ", or -1. */
static int culprit_of(const char *msg)
{
	const char *p = strstr(msg, ": rank ");

	return p && p[7] >= '0' && p[7] <= '9' ? atoi(p + 7) : -1;
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

static int g_sig; /* SIGKILL, SIGSTOP, or 0 for rank 1 aborting */

/* Rank 1 of 4 dies, freezes or aborts; every survivor (rank 3 is nobody's
 * neighbour of rank 1 in a ring) must fail within 2x the 1 s deadline plus
 * slack, blaming rank 1 and naming the operation; nothing is left running. */
static void t_fault(void)
{
	char dir[300], p[400], msg[300];
	pid_t pids[4];
	double t0;
	int st;

	setenv("BCOLL_TRANSPORT", g_transport, 1);
	setenv("BCOLL_ALGO", "auto", 1);
	new_dir(dir, sizeof(dir));
	for (int r = 0; r < 4; r++)
		pids[r] = spawn_rank(dir, r, 4, g_sig ? M_LOOP : M_ABORT, 0);
	snprintf(p, sizeof(p), "%s/started-1", dir);
	T_CHECK(wait_file(p, 30) == 0, "rank 1 never completed an allreduce");
	t0 = now_s();
	if (g_sig) {
		usleep(50000);
		t0 = now_s();
		kill(pids[1], g_sig);
	}
	for (int r = 0; r < 4; r += 1 + (r == 0)) {
		waitpid(pids[r], &st, 0);
		read_err(dir, r, msg, sizeof(msg));
		T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3, "rank %d: status 0x%x, want exit 3",
			r, st);
		T_CHECK(strstr(msg, "allreduce #"), "rank %d: error '%s' names no operation", r,
			msg);
		T_CHECK(culprit_of(msg) == 1, "rank %d blames rank %d, not rank 1: '%s'", r,
			culprit_of(msg), msg);
		printf("# rank %d: %s\n", r, msg);
	}
	printf("# survivors failed %.2f s after the fault (deadline 1 s)\n", now_s() - t0);
	T_CHECK(now_s() - t0 < 4.5, "survivors took %.1f s to fail (deadline 1 s)", now_s() - t0);
	kill(pids[1], SIGKILL);
	if (g_sig == SIGSTOP)
		kill(pids[1], SIGCONT);
	waitpid(pids[1], &st, 0);
	for (int r = 0; r < 4; r++)
		T_CHECK(kill(pids[r], 0) < 0 && errno == ESRCH, "rank %d (pid %d) is still there",
			r, (int)pids[r]);
}

static int g_mode;

/* Mismatched counts or dtypes: every rank fails, none hangs, one says why. */
static void t_mismatch(void)
{
	char dir[300], msg[300];
	pid_t pids[3];
	int st, why = 0;
	double t0 = now_s();

	setenv("BCOLL_TRANSPORT", g_transport, 1);
	new_dir(dir, sizeof(dir));
	for (int r = 0; r < 3; r++)
		pids[r] = spawn_rank(dir, r, 3, g_mode, 0);
	for (int r = 0; r < 3; r++) {
		waitpid(pids[r], &st, 0);
		read_err(dir, r, msg, sizeof(msg));
		printf("# rank %d: %s\n", r, msg);
		T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3, "rank %d: status 0x%x", r, st);
		why += strstr(msg, g_mode == M_BADCOUNT ? "count 1002" : g_mode == M_BADPATH ?
			      "count 8," : "int32") != NULL;
	}
	T_CHECK(why >= 1, "no rank explained the mismatch");
	T_CHECK(now_s() - t0 < 10, "took %.1f s", now_s() - t0);
}

/* A second rank 1 (same directory) or a rank with another size: a clear
 * error on some rank, every process gone within the bound. */
static void t_bad_join(void)
{
	char dir[300], msg[300], all[1500] = "";
	pid_t pids[4];
	int st, bad = 0;
	double t0 = now_s();

	setenv("BCOLL_TRANSPORT", g_transport, 1);
	new_dir(dir, sizeof(dir));
	if (g_mode == 0) { /* twice */
		for (int r = 0; r < 3; r++)
			pids[r] = spawn_rank(dir, r, 3, M_PLAIN, 0);
		pids[3] = spawn_rank(dir, 1, 3, M_PLAIN, 0);
	} else { /* rank 0 believes in 2 ranks, the others in 3 */
		pids[0] = spawn_rank(dir, 0, 2, M_PLAIN, 0);
		for (int r = 1; r < 3; r++)
			pids[r] = spawn_rank(dir, r, 3, M_PLAIN, 0);
		pids[3] = 0;
	}
	for (int r = 0; r < 4; r++) {
		if (!pids[r])
			continue;
		waitpid(pids[r], &st, 0);
		bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	for (int r = 0; r < 3; r++) {
		read_err(dir, r, msg, sizeof(msg));
		strncat(all, msg, sizeof(all) - strlen(all) - 1);
	}
	printf("# %s\n", all);
	T_CHECK(bad >= 1, "every process succeeded");
	if (g_mode == 0 && !strcmp(g_transport, "shm"))
		/* Which of the two rank-1 processes the rendezvous and the segment
		 * see first is a race: the error names the double join, the
		 * rendezvous or the rank 1 that left. */
		T_CHECK(strstr(all, "joined twice") || strstr(all, "rendezvous") ||
				strstr(all, "rank 1 "),
			"no clear error: %s", all);
	else if (g_mode == 0)
		T_CHECK(all[0], "no rank said what went wrong");
	else
		T_CHECK(strstr(all, "of 2") || strstr(all, "size"), "no clear error: %s", all);
	T_CHECK(now_s() - t0 < 10, "took %.1f s", now_s() - t0);
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
	T_EQ_INT(bcoll_allreduce(c, &x, &x, 1, (enum bcoll_dtype)42, BCOLL_SUM), -EINVAL);
	bcoll_abort(c);
	T_EQ_INT(bcoll_allreduce(c, &x, &x, 1, BCOLL_F32, BCOLL_SUM), -ECANCELED);
	bcoll_comm_destroy(c);
	bcoll_comm_destroy(NULL);
	setenv("BCOLL_TRANSPORT", "carrier-pigeon", 1);
	struct bcoll_rendezvous rdv = bcoll_rendezvous_dir(root);
	T_EQ_INT(bcoll_comm_init_err(0, 2, &rdv, 0, &c, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "BCOLL_TRANSPORT"), "err: %s", err);
}

/* Bitwise equal, except that any two NaNs are equal (the payload of a sum of
 * two NaNs depends on operand order, which the compiler may swap). */
static int same_bits(const void *g, const void *w, size_t cnt, enum bcoll_dtype dt)
{
	for (size_t i = 0; i < cnt; i++) {
		if (dt == BCOLL_F32 && isnan(((const float *)g)[i]) && isnan(((const float *)w)[i]))
			continue;
		if (dt == BCOLL_F64 && isnan(((const double *)g)[i]) &&
		    isnan(((const double *)w)[i]))
			continue;
		if (memcmp((const char *)g + i * bcoll_dtype_size(dt),
			   (const char *)w + i * bcoll_dtype_size(dt), bcoll_dtype_size(dt)))
			return 0;
	}
	return 1;
}

/* Every SIMD level the CPU has gives the scalar loop's bits: all dtypes and
 * ops, lengths 0..67 and 1000 (tails), NaNs, signed zeros, infinities. */
static void t_reduce_kernels(void)
{
	static const enum bcoll_dtype dts[] = {BCOLL_F32, BCOLL_F64, BCOLL_I32, BCOLL_I64};
	static const enum bcoll_op ops[] = {BCOLL_SUM, BCOLL_MIN, BCOLL_MAX};
	enum { N = 1000 };
	static uint64_t a[N], b[N], ia[N], ib[N], want[N + 1], got[N + 1];
	int best = bcoll_simd_cap(2), checked = 0;
	uint64_t x = 88172645463325252ull;

	for (int i = 0; i < N; i++) {
		double v[] = {NAN, -0.0, 0.0, INFINITY, -INFINITY};

		for (int k = 0; k < 2; k++) {
			uint64_t *p = k ? &b[i] : &a[i];

			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			*p = x;
			/* Integers: 32-bit halves in +-2^28, so no sum overflows. */
			(k ? ib : ia)[i] = (uint64_t)(uint32_t)((int32_t)(x % (1u << 29)) - (1 << 28)) << 32 |
					   (uint32_t)((int32_t)((x >> 32) % (1u << 29)) - (1 << 28));
			if (x % 7 == 0) { /* specials, as f32 pairs and as f64 */
				float f = (float)v[x % 5];
				uint32_t u;

				memcpy(&u, &f, 4);
				*p = x % 2 ? (uint64_t)u << 32 | u : 0;
				if (x % 2 == 0)
					memcpy(p, &v[x % 5], 8);
			}
		}
	}
	for (int lvl = 1; lvl <= best; lvl++)
		for (size_t d = 0; d < ARRAY_SIZE(dts); d++)
			for (size_t o = 0; o < ARRAY_SIZE(ops); o++)
				for (size_t n = 0; n <= 68; n++) {
					size_t len = n == 68 ? N : n, esz = bcoll_dtype_size(dts[d]);
					size_t cnt = len * 8 / esz;
					int fl = dts[d] == BCOLL_F32 || dts[d] == BCOLL_F64;

					bcoll_simd_cap(0);
					want[N] = got[N] = 0x5a5a;
					bcoll_reduce3(want, fl ? a : ia, fl ? b : ib, cnt, dts[d], ops[o]);
					bcoll_simd_cap(lvl);
					bcoll_reduce3(got, fl ? a : ia, fl ? b : ib, cnt, dts[d], ops[o]);
					T_CHECK(same_bits(got, want, cnt, dts[d]) && got[N] == 0x5a5a,
						"level %d %s op %d count %zu differs from scalar", lvl,
						bcoll_dtype_name(dts[d]), ops[o], cnt);
					checked++;
				}
	printf("# SIMD levels checked against scalar: 1..%d (%d cases)\n", best, checked);
	if (best == 0)
		t_skip("no AVX2 on this CPU");
	bcoll_simd_cap(2);
}

int main(void)
{
	static const char *const tps[] = {"shm", "tcp"};
	static const char *const algos[] = {"ring", "rd", "rabenseifner"};
	static const int level0_tcp[] = {2, 3, 5, 8}, level1[][2] = {{3, 7}, {4, 5}};
	char name[64];

	setvbuf(stdout, NULL, _IOLBF, 0);
	root = mkdtemp(tmpl);
	if (!root)
		return 1;
	t_run("bad_args", t_bad_args);
	t_run("reduce_kernels_match_scalar", t_reduce_kernels);
	/* BCOLL_TEST_FAULTS=1 runs only the fault and bad-use cases (for iterating). */
	for (int n = 1; n <= 8 && !getenv("BCOLL_TEST_FAULTS"); n++)
		run_cases("shm", "auto", n, 0);
	for (size_t i = 0; i < ARRAY_SIZE(level0_tcp) && !getenv("BCOLL_TEST_FAULTS"); i++)
		run_cases("tcp", "auto", level0_tcp[i], 0);
	for (size_t a = 0; a < ARRAY_SIZE(algos) && !getenv("BCOLL_TEST_FAULTS"); a++)
		for (int t = 0; t < 2; t++)
			for (int k = 0; k < 2; k++)
				run_cases(tps[t], algos[a], level1[t][k], 1);
	if (!getenv("BCOLL_TEST_FAULTS")) {
		run_cases("shm", "direct", 3, 1);
		run_cases("shm", "auto", 4, 2);
	}
	setenv("BCOLL_TIMEOUT_MS", "1000", 1);
	for (int t = 0; t < 2; t++) {
		static const int sigs[] = {SIGKILL, SIGSTOP, 0};
		static const char *const sn[] = {"kill9", "sigstop", "abort_closes"};

		g_transport = tps[t];
		for (int s = 0; s < 3; s++)
			for (int trial = 0; trial < (sigs[s] == SIGSTOP ? 4 : 8); trial++) {
				g_sig = sigs[s];
				snprintf(name, sizeof(name), "%s_fault_%s_rank1_trial%d", tps[t],
					 sn[s], trial);
				t_run(name, t_fault);
			}
		g_mode = M_BADCOUNT;
		snprintf(name, sizeof(name), "%s_mismatched_counts", tps[t]);
		t_run(name, t_mismatch);
		g_mode = M_BADTYPE;
		snprintf(name, sizeof(name), "%s_mismatched_dtypes", tps[t]);
		t_run(name, t_mismatch);
		g_mode = M_BADPATH; /* shm: the tiny path against the slot path */
		snprintf(name, sizeof(name), "%s_mismatched_small_and_tiny", tps[t]);
		t_run(name, t_mismatch);
		for (g_mode = 0; g_mode < 2; g_mode++) {
			snprintf(name, sizeof(name), "%s_%s", tps[t],
				 g_mode ? "wrong_size_rendezvous" : "rank_joins_twice");
			t_run(name, t_bad_join);
		}
	}
	{
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
		if (system(cmd) != 0)
			return 1;
	}
	return t_done();
}

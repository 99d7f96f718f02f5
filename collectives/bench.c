/* bcoll-bench — nccl-tests-style benchmark for libbcoll. Forks its own ranks
 * (-n) that meet through a temporary rendezvous directory, over a chosen
 * transport (-t shm|tcp), for sizes -b to -e stepping by factor -f, with op
 * -o and dtype -d, of one collective (-c allreduce|reduce_scatter|allgather|
 * broadcast; size is the whole buffer, as in nccl-tests: reduce_scatter's
 * input, allgather's output). Prints size, count, type, redop, time(us),
 * algbw, busbw (algbw times 2(n-1)/n for allreduce, (n-1)/n for
 * reduce_scatter and allgather, 1 for broadcast) and #wrong (every result is
 * checked against a serial reference after the timed loop), then the average
 * busbw. -m prints one core's memcpy bandwidth first (the memory-bound
 * yardstick).
 */
#include "bcoll.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES ((size_t)1 << 32)

enum coll { C_ALLREDUCE, C_REDUCE_SCATTER, C_ALLGATHER, C_BROADCAST };

struct opts {
	int n, iters, memcpy_bw;
	enum coll coll;
	size_t b, e;
	double f;
	enum bcoll_dtype dt;
	enum bcoll_op op;
	const char *tp;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || v < 0)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		v *= 1024, end++;
	else if (*end == 'M' || *end == 'm')
		v *= 1024 * 1024, end++;
	else if (*end == 'G' || *end == 'g')
		v *= 1024.0 * 1024 * 1024, end++;
	if (*end || v > MAX_BYTES)
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

static double value(int rank, size_t i)
{
	return (double)((int)(((rank + 1) * 31 + i * 7) % 17) - 8);
}

static void put(enum bcoll_dtype dt, void *b, size_t i, double v)
{
	float f = (float)v;
	uint32_t u;
	int e;
	double m;

	switch (dt) {
	case BCOLL_F32: ((float *)b)[i] = f; break;
	case BCOLL_F64: ((double *)b)[i] = v; break;
	case BCOLL_I32: ((int32_t *)b)[i] = (int32_t)v; break;
	case BCOLL_I64: ((int64_t *)b)[i] = (int64_t)v; break;
	case BCOLL_BF16:
		memcpy(&u, &f, 4);
		((uint16_t *)b)[i] = u >> 16;
		break;
	case BCOLL_F16:
		m = frexp(fabs(v), &e);
		((uint16_t *)b)[i] = v == 0 ? 0 : (v < 0 ? 0x8000 : 0) |
			(uint16_t)((e + 14) << 10) | (uint16_t)((m * 2 - 1) * 1024);
		break;
	}
}

static double get(enum bcoll_dtype dt, const void *b, size_t i)
{
	uint32_t u;
	float f;
	uint16_t h;
	int e;

	switch (dt) {
	case BCOLL_F32: return ((const float *)b)[i];
	case BCOLL_F64: return ((const double *)b)[i];
	case BCOLL_I32: return ((const int32_t *)b)[i];
	case BCOLL_I64: return (double)((const int64_t *)b)[i];
	case BCOLL_BF16:
		u = (uint32_t)((const uint16_t *)b)[i] << 16;
		memcpy(&f, &u, 4);
		return f;
	case BCOLL_F16:
		h = ((const uint16_t *)b)[i];
		e = (h >> 10) & 0x1f;
		f = e ? ldexpf(1 + (h & 0x3ff) / 1024.0f, e - 15) : ldexpf((h & 0x3ff) / 1024.0f, -14);
		return h & 0x8000 ? -f : f;
	}
	return NAN;
}

/* The reduced value of element i (of the whole vector) over all ranks. */
static double reduced(const struct opts *o, size_t i)
{
	int intg = o->dt == BCOLL_I32 || o->dt == BCOLL_I64;
	double w = value(0, i);

	for (int q = 1; q < o->n; q++)
		w = o->op == BCOLL_MIN ? fmin(w, value(q, i))
		    : o->op == BCOLL_MAX ? fmax(w, value(q, i)) : w + value(q, i);
	if (o->op == BCOLL_AVG)
		w = intg ? trunc(w / o->n) : w / o->n;
	return w;
}

/* Elements of recv (count per rank) that differ from the serial reference. */
static size_t count_wrong(const struct opts *o, int rank, const void *recv, size_t count)
{
	double tol = o->dt == BCOLL_F16 || o->dt == BCOLL_BF16 ? 1e-2 : 1e-6;
	size_t wrong = 0, all = o->coll == C_ALLGATHER ? count * o->n : count;

	for (size_t i = 0; i < all; i++) {
		double w = o->coll == C_ALLREDUCE ? reduced(o, i)
			   : o->coll == C_REDUCE_SCATTER ? reduced(o, rank * count + i)
			   : o->coll == C_ALLGATHER ? value((int)(i / count), i % count)
			   : value(0, i);

		wrong += fabs(get(o->dt, recv, i) - w) > tol * (1 + fabs(w));
	}
	return wrong;
}

/* One call of the chosen collective; count is per rank (see the top). */
static int coll_run(const struct opts *o, struct bcoll_comm *c, const char *send, char *recv,
		    size_t count)
{
	switch (o->coll) {
	case C_REDUCE_SCATTER:
		return bcoll_reduce_scatter(c, send, recv, count, o->dt, o->op);
	case C_ALLGATHER:
		return bcoll_allgather(c, send, recv, count, o->dt);
	case C_BROADCAST:
		return bcoll_broadcast(c, recv, count, o->dt, 0);
	default:
		return bcoll_allreduce(c, send, recv, count, o->dt, o->op);
	}
}

static const char *const coll_names[] = {"allreduce", "reduce_scatter", "allgather",
					  "broadcast"};

/* nccl-tests' bus bandwidth factor: what each rank's links must carry. */
static double bus_factor(const struct opts *o)
{
	if (o->coll == C_BROADCAST)
		return 1;
	return (double)(o->n - 1) / o->n * (o->coll == C_ALLREDUCE ? 2 : 1);
}

static int rank_main(const struct opts *o, int rank, const char *dir)
{
	struct bcoll_rendezvous rdv = bcoll_rendezvous_dir(dir);
	size_t esz = bcoll_dtype_size(o->dt), maxc = o->e / esz;
	struct bcoll_comm *c;
	char err[256];
	double sum_bus = 0;
	int nsz = 0, r;
	char *send, *recv;

	r = bcoll_comm_init_err(rank, o->n, &rdv, 0, &c, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "bcoll-bench: rank %d: %s\n", rank, err);
		return 1;
	}
	send = malloc(maxc * esz + 1);
	recv = malloc(maxc * esz + 1);
	if (!send || !recv)
		return 1;
	if (rank == 0)
		printf("# bcoll-bench: %s, %d ranks, transport %s, %s %s\n#%11s %12s %9s %7s %11s "
		       "%12s %12s %7s %s\n", coll_names[o->coll], o->n, bcoll_transport(c),
		       bcoll_dtype_name(o->dt),
		       bcoll_op_name(o->op), "size", "count", "type", "redop", "time(us)",
		       "algbw(GB/s)", "busbw(GB/s)", "#wrong", "algo");
	for (size_t bytes = o->b; bytes <= o->e; bytes = (size_t)(bytes * o->f) > bytes
						     ? (size_t)(bytes * o->f) : bytes + 1) {
		int per_rank = o->coll == C_REDUCE_SCATTER || o->coll == C_ALLGATHER;
		size_t count = bytes / esz / (per_rank ? o->n : 1), all = count * (per_rank ? o->n : 1);
		int iters = o->iters ? o->iters : bytes < (1u << 20) ? 200 : bytes < (16u << 20) ? 20 : 5;
		double t[2], wrong;

		for (size_t i = 0; i < all; i++)
			put(o->dt, o->coll == C_BROADCAST ? recv : send, i, value(rank, i));
		r = coll_run(o, c, send, recv, count); /* warm-up */
		r = r ?: bcoll_barrier(c);
		t[0] = now_s();
		for (int k = 0; r == 0 && k < iters; k++)
			r = coll_run(o, c, send, recv, count);
		t[1] = (now_s() - t[0]) / iters;
		wrong = (double)count_wrong(o, rank, recv, count);
		r = r ?: bcoll_allreduce(c, &t[1], &t[1], 1, BCOLL_F64, BCOLL_MAX);
		r = r ?: bcoll_allreduce(c, &wrong, &wrong, 1, BCOLL_F64, BCOLL_SUM);
		if (r < 0) {
			fprintf(stderr, "bcoll-bench: rank %d: %s\n", rank, bcoll_last_error(c));
			return 1;
		}
		double alg = all * esz / t[1] / 1e9, bus = alg * bus_factor(o);

		if (rank == 0) {
			printf("%12zu %12zu %9s %7s %11.2f %12.3f %12.3f %7.0f %s\n", all * esz,
			       count, bcoll_dtype_name(o->dt), bcoll_op_name(o->op), t[1] * 1e6, alg,
			       bus, wrong, o->coll == C_ALLREDUCE ? bcoll_algo_name(c, count * esz)
			       : strcmp(bcoll_transport(c), "shm") ? "generic" : "shm-direct");
			fflush(stdout);
		}
		sum_bus += bus;
		nsz++;
	}
	if (rank == 0)
		printf("# Avg bus bandwidth    : %.3f\n", nsz ? sum_bus / nsz : 0);
	bcoll_comm_destroy(c);
	free(send);
	free(recv);
	return 0;
}

/* One core copying 64 MiB buffers, best of 5: the memory-bound yardstick. */
static void memcpy_bw(void)
{
	size_t n = 64u << 20;
	char *a = malloc(n), *b = malloc(n);
	double best = 1e9;

	if (!a || !b)
		return;
	memset(a, 1, n);
	memset(b, 2, n);
	for (int k = 0; k < 5; k++) {
		double t0 = now_s();

		memcpy(b, a, n);
		best = fmin(best, now_s() - t0);
		a[k] = b[k + 1];
	}
	printf("# memcpy bandwidth (1 core, 64 MiB): %.3f GB/s\n", n / best / 1e9);
	free(a);
	free(b);
}

static int parse_enum(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: bcoll-bench [-n ranks] [-t shm|tcp] [-b minbytes] [-e maxbytes] "
		"[-f factor] [-o sum|avg|min|max] [-d float|double|int32|int64|half|bfloat16] "
		"[-c allreduce|reduce_scatter|allgather|broadcast] [-i iters] [-m]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const char *const dts[] = {"float", "double", "int32", "int64", "half", "bfloat16"};
	static const char *const ops[] = {"sum", "avg", "min", "max"};
	struct opts o = {.n = 4, .b = 8, .e = 64u << 20, .f = 2, .dt = BCOLL_F32, .op = BCOLL_SUM};
	char dir[] = "/tmp/bcoll-bench-XXXXXX", cmd[64];
	pid_t pids[64];
	int ch, bad = 0, st, v;

	while ((ch = getopt(argc, argv, "n:t:b:e:f:o:d:i:c:m")) != -1) {
		switch (ch) {
		case 'c':
			if ((v = parse_enum(optarg, coll_names, 4)) < 0)
				usage();
			o.coll = v;
			break;
		case 'n': o.n = atoi(optarg); break;
		case 't': o.tp = optarg; break;
		case 'b': if (parse_size(optarg, &o.b) < 0) usage(); break;
		case 'e': if (parse_size(optarg, &o.e) < 0) usage(); break;
		case 'f': o.f = atof(optarg); break;
		case 'i': o.iters = atoi(optarg); break;
		case 'm': o.memcpy_bw = 1; break;
		case 'o':
			if ((v = parse_enum(optarg, ops, 4)) < 0)
				usage();
			o.op = v;
			break;
		case 'd':
			if ((v = parse_enum(optarg, dts, 6)) < 0)
				usage();
			o.dt = v;
			break;
		default: usage();
		}
	}
	if (o.n < 1 || o.n > 64 || o.f <= 1 || o.b > o.e || o.iters < 0 || o.iters > 100000)
		usage();
	if (o.tp && setenv("BCOLL_TRANSPORT", o.tp, 1) < 0)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (o.memcpy_bw)
		memcpy_bw();
	if (!mkdtemp(dir))
		return 1;
	for (int r = 0; r < o.n; r++) {
		pids[r] = fork();
		if (pids[r] == 0)
			_exit(rank_main(&o, r, dir));
	}
	for (int r = 0; r < o.n; r++) {
		waitpid(pids[r], &st, 0);
		bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		bad++;
	return bad ? 1 : 0;
}

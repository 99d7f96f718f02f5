/* api — libbcoll's public collective calls: argument checks, the sequence
 * number and descriptor every message carries, f16/bf16 staged through f32
 * (reduced in f32, rounded once), size-1 shortcuts, the selector's table
 * (BCOLL_ALGO forces one; BCOLL_TUNE_FILE loads or, with BCOLL_TUNE=1,
 * measures and saves it), and the timing that bcoll_comm_seconds() reports.
 * Blocking calls first wait for the non-blocking requests in flight (queue.c)
 * so every rank runs collectives in the order they were started.
 */
#include "bcoll_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const kind_op[] = {
	[BCOLL_K_ALLREDUCE] = "allreduce", [BCOLL_K_REDUCE_SCATTER] = "reduce_scatter",
	[BCOLL_K_ALLGATHER] = "allgather", [BCOLL_K_BROADCAST] = "broadcast",
	[BCOLL_K_REDUCE] = "reduce",	   [BCOLL_K_BARRIER] = "barrier",
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is16(enum bcoll_dtype dt)
{
	return dt == BCOLL_F16 || dt == BCOLL_BF16;
}

/* Staged allreduce for 16-bit types: chunks converted to f32, reduced, rounded once. */
static int allreduce16(struct bcoll_comm *c, const char *send, char *recv, size_t count,
		       enum bcoll_dtype dt, enum bcoll_op op)
{
	size_t per = BCOLL_STAGE_BYTES / 4;
	float *st = c->stage;
	enum bcoll_op o = op == BCOLL_AVG ? BCOLL_SUM : op;

	for (size_t off = 0; off < count; off += per) {
		size_t m = count - off < per ? count - off : per;
		int e;

		bcoll_to_f32(st, send + off * 2, m, dt);
		e = bcoll_allreduce_algo(c, st, st, m, BCOLL_F32, o,
					 bcoll_pick_algo(c, m * 4));
		if (e < 0)
			return e;
		if (op == BCOLL_AVG)
			bcoll_divide(st, m, BCOLL_F32, c->size);
		bcoll_from_f32(recv + off * 2, st, m, dt);
	}
	return 0;
}

static int reduce_scatter16(struct bcoll_comm *c, const char *send, char *recv, size_t count,
			    enum bcoll_dtype dt, enum bcoll_op op)
{
	int n = c->size;
	size_t per = BCOLL_STAGE_BYTES / 4 / (n + 1);
	float *st = c->stage;
	enum bcoll_op o = op == BCOLL_AVG ? BCOLL_SUM : op;

	for (size_t off = 0; off < count; off += per) {
		size_t m = count - off < per ? count - off : per;
		int e;

		for (int i = 0; i < n; i++)
			bcoll_to_f32(st + i * m, send + ((size_t)i * count + off) * 2, m, dt);
		e = bcoll_rs_ring(c, (char *)st, (char *)(st + n * m), 0, m, BCOLL_F32, o);
		if (e < 0)
			return e;
		if (op == BCOLL_AVG)
			bcoll_divide(st + n * m, m, BCOLL_F32, n);
		bcoll_from_f32(recv + off * 2, st + n * m, m, dt);
	}
	return 0;
}

static int reduce16(struct bcoll_comm *c, const char *send, char *recv, size_t count,
		    enum bcoll_dtype dt, enum bcoll_op op, int root)
{
	size_t per = BCOLL_STAGE_BYTES / 4;
	float *st = c->stage;
	enum bcoll_op o = op == BCOLL_AVG ? BCOLL_SUM : op;

	for (size_t off = 0; off < count; off += per) {
		size_t m = count - off < per ? count - off : per;
		int e;

		bcoll_to_f32(st, send + off * 2, m, dt);
		e = bcoll_reduce_tree(c, (char *)st, (char *)st, m, BCOLL_F32, o, root);
		if (e < 0)
			return e;
		if (c->rank == root) {
			if (op == BCOLL_AVG)
				bcoll_divide(st, m, BCOLL_F32, c->size);
			bcoll_from_f32(recv + off * 2, st, m, dt);
		}
	}
	return 0;
}

/* The transport's whole-collective path, unless an algorithm is forced. */
static int use_fast(const struct bcoll_comm *c, int has_path)
{
	return has_path && (c->algo == BCOLL_A_AUTO || c->algo == BCOLL_A_DIRECT);
}

/* Small reduce_scatter as recursive doubling on the whole vector (log2 n
 * steps, not n - 1), staged so the input is never written. */
static int rs_by_allreduce(const struct bcoll_comm *c, size_t total)
{
	if (c->algo == BCOLL_A_RD)
		return total <= BCOLL_STAGE_BYTES;
	return c->algo == BCOLL_A_AUTO && total <= c->rd_max;
}

static int reduce_scatter_rd(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			     enum bcoll_dtype dt, enum bcoll_op op)
{
	size_t esz = bcoll_dtype_size(dt);
	int e = bcoll_allreduce_algo(c, send, c->stage, count * c->size, dt, op, BCOLL_A_RD);

	if (e == 0)
		memcpy(recv, (char *)c->stage + c->rank * count * esz, count * esz);
	return e;
}

/* One rank: the results are the inputs. */
static int run_self(int kind, const void *send, void *recv, size_t count, size_t esz)
{
	if (kind != BCOLL_K_BROADCAST && kind != BCOLL_K_BARRIER && send != recv && count)
		memmove(recv, send, count * esz);
	return 0;
}

int bcoll_run(struct bcoll_comm *c, int kind, const void *send, void *recv, size_t count,
	      enum bcoll_dtype dt, enum bcoll_op op, int root)
{
	size_t esz;
	int n;

	if (!c)
		return -EINVAL;
	n = c->size;
	c->op = kind_op[kind];
	c->seq++;
	c->cur = (struct bcoll_desc){.kind = kind, .dtype = dt, .op = op, .root = root,
				     .count = count};
	if (atomic_load(&c->aborted))
		return bcoll_fail(c, -ECANCELED, "the communicator was aborted");
	if ((unsigned)dt > BCOLL_BF16)
		return bcoll_fail(c, -EINVAL, "unknown dtype %d", (int)dt);
	if ((unsigned)op > BCOLL_MAX)
		return bcoll_fail(c, -EINVAL, "unknown op %d", (int)op);
	if (root < 0 || root >= n)
		return bcoll_fail(c, -EINVAL, "root %d is not a rank of %d", root, n);
	esz = bcoll_dtype_size(dt);
	if (count > ((size_t)1 << 50) / esz / n)
		return bcoll_fail(c, -EOVERFLOW, "count %zu is too large", count);
	if (count && ((!send && kind != BCOLL_K_BROADCAST) || (!recv && kind != BCOLL_K_REDUCE) ||
		      (kind == BCOLL_K_REDUCE && c->rank == root && !recv)))
		return bcoll_fail(c, -EINVAL, "NULL buffer");
	if (n == 1)
		return run_self(kind, send, recv, count, esz);
	if (kind == BCOLL_K_BARRIER)
		return bcoll_barrier_algo(c);
	if (count == 0)
		return 0;
	switch (kind) {
	case BCOLL_K_ALLREDUCE:
		if (is16(dt))
			return allreduce16(c, send, recv, count, dt, op);
		return bcoll_allreduce_algo(c, send, recv, count, dt, op,
					    bcoll_pick_algo(c, count * esz));
	case BCOLL_K_REDUCE_SCATTER: {
		int e;

		if (is16(dt))
			return reduce_scatter16(c, send, recv, count, dt, op);
		if (use_fast(c, c->tp->reduce_scatter != NULL))
			return c->tp->reduce_scatter(c, send, recv, count, dt, op);
		if (rs_by_allreduce(c, count * esz * n))
			return reduce_scatter_rd(c, send, recv, count, dt, op);
		e = bcoll_rs_ring(c, send, recv, 0, count, dt, op);
		if (e == 0 && op == BCOLL_AVG)
			bcoll_divide(recv, count, dt, n);
		return e;
	}
	case BCOLL_K_ALLGATHER: {
		char *mine = (char *)recv + (size_t)c->rank * count * esz;

		if (use_fast(c, c->tp->allgather != NULL))
			return c->tp->allgather(c, send, recv, count * esz);
		if (send != mine)
			memmove(mine, send, count * esz);
		if (!(n & (n - 1)) && (c->algo == BCOLL_A_RD ||
				       (c->algo == BCOLL_A_AUTO && count * esz * n <= c->rd_max)))
			return bcoll_ag_rd(c, recv, count, esz);
		return bcoll_ag_ring(c, recv, 0, count, esz);
	}
	case BCOLL_K_BROADCAST:
		if (use_fast(c, c->tp->broadcast != NULL))
			return c->tp->broadcast(c, recv, count * esz, root);
		return bcoll_bcast_algo(c, recv, count * esz, root);
	case BCOLL_K_REDUCE:
		if (is16(dt))
			return reduce16(c, send, recv, count, dt, op, root);
		return bcoll_reduce_tree(c, send, recv, count, dt, op, root);
	}
	return bcoll_fail(c, -EINVAL, "unknown collective %d", kind);
}

static int blocking(struct bcoll_comm *c, int kind, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt, enum bcoll_op op, int root)
{
	double t0 = now_s();
	int r;

	if (!c)
		return -EINVAL;
	bcoll_queue_drain(c);
	r = bcoll_run(c, kind, send, recv, count, dt, op, root);
	if (r < 0)
		memcpy(c->user_err, c->err, sizeof(c->user_err));
	c->seconds += now_s() - t0;
	return r;
}

int bcoll_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt, enum bcoll_op op)
{
	return blocking(c, BCOLL_K_ALLREDUCE, send, recv, count, dt, op, 0);
}

int bcoll_reduce_scatter(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			 enum bcoll_dtype dt, enum bcoll_op op)
{
	return blocking(c, BCOLL_K_REDUCE_SCATTER, send, recv, count, dt, op, 0);
}

int bcoll_allgather(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt)
{
	return blocking(c, BCOLL_K_ALLGATHER, send, recv, count, dt, BCOLL_SUM, 0);
}

int bcoll_broadcast(struct bcoll_comm *c, void *buf, size_t count, enum bcoll_dtype dt, int root)
{
	return blocking(c, BCOLL_K_BROADCAST, buf, buf, count, dt, BCOLL_SUM, root);
}

int bcoll_reduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		 enum bcoll_dtype dt, enum bcoll_op op, int root)
{
	return blocking(c, BCOLL_K_REDUCE, send, recv, count, dt, op, root);
}

int bcoll_barrier(struct bcoll_comm *c)
{
	return blocking(c, BCOLL_K_BARRIER, NULL, NULL, 0, BCOLL_I32, BCOLL_SUM, 0);
}

/* Measures rd, rabenseifner and ring at a few sizes (slowest rank counts, so
 * every rank derives the same table) and sets the crossovers. */
static int tune_measure(struct bcoll_comm *c)
{
	enum { NSZ = 6, NA = 3 };
	static const int algos[NA] = {BCOLL_A_RD, BCOLL_A_RABEN, BCOLL_A_RING};
	double t[NSZ * NA];
	size_t sz[NSZ];
	float *buf = malloc(4u << 20);
	int e = 0, keep = c->algo;

	if (!buf)
		return bcoll_fail(c, -ENOMEM, "out of memory");
	memset(buf, 0, 4u << 20);
	for (int i = 0; i < NSZ; i++) {
		sz[i] = (size_t)4096 << (2 * i); /* 4 KiB .. 4 MiB */
		for (int a = 0; a < NA && e == 0; a++) {
			double t0 = now_s();

			c->algo = algos[a];
			for (int k = 0; k < 3 && e == 0; k++)
				e = bcoll_allreduce(c, buf, buf, sz[i] / 4, BCOLL_F32, BCOLL_SUM);
			t[i * NA + a] = now_s() - t0;
		}
	}
	c->algo = BCOLL_A_RD;
	if (e == 0)
		e = bcoll_allreduce(c, t, t, NSZ * NA, BCOLL_F64, BCOLL_MAX);
	c->algo = keep;
	free(buf);
	if (e < 0)
		return e;
	c->rd_max = 0;
	c->ring_min = (size_t)1 << 62;
	for (int i = 0; i < NSZ; i++) {
		double *x = t + i * NA;

		if (x[0] <= x[1] && x[0] <= x[2])
			c->rd_max = sz[i];
		if (x[2] < x[0] && x[2] < x[1] && c->ring_min > sz[i])
			c->ring_min = sz[i];
	}
	return 0;
}

int bcoll_tune_init(struct bcoll_comm *c)
{
	const char *a = getenv("BCOLL_ALGO"), *file = getenv("BCOLL_TUNE_FILE");
	const char *tune = getenv("BCOLL_TUNE");
	unsigned long long rd, ring;
	FILE *f;
	int e;

	c->algo = BCOLL_A_AUTO;
	c->rd_max = 16u << 10;
	c->ring_min = 512u << 10;
	if (a && *a && strcmp(a, "auto")) {
		if (!strcmp(a, "ring"))
			c->algo = BCOLL_A_RING;
		else if (!strcmp(a, "rd"))
			c->algo = BCOLL_A_RD;
		else if (!strcmp(a, "rabenseifner"))
			c->algo = BCOLL_A_RABEN;
		else if (!strcmp(a, "direct"))
			c->algo = BCOLL_A_DIRECT;
		else
			return bcoll_fail(c, -EINVAL, "BCOLL_ALGO must be ring, rd, rabenseifner, "
					  "direct or auto, not '%.20s'", a);
	}
	if (c->size == 1 || (c->tp && c->tp->allreduce))
		return 0;
	if (tune && !strcmp(tune, "1")) {
		e = tune_measure(c);
		if (e < 0)
			return e;
		if (file && c->rank == 0 && (f = fopen(file, "w"))) {
			fprintf(f, "rd_max %zu\nring_min %zu\n", c->rd_max, c->ring_min);
			fclose(f);
		}
		return 0;
	}
	if (file && (f = fopen(file, "r"))) {
		if (fscanf(f, "rd_max %llu ring_min %llu", &rd, &ring) == 2)
			c->rd_max = rd, c->ring_min = ring;
		fclose(f);
	}
	return 0;
}

/* ring — the collectives of libbcoll on the TCP ring: allreduce (ring
 * reduce-scatter then allgather), broadcast (pipelined along the ring) and
 * barrier. Each segment is reduced by exactly one sequence of ranks and then
 * copied, so every rank ends with the same bits. Large segments move in
 * pieces of the scratch buffer set up at init; nothing here allocates.
 */
#include "bcoll_int.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define REDUCE_LOOP(T)                                                                             \
	do {                                                                                       \
		T *a = dst;                                                                        \
		const T *b = src;                                                                  \
		switch (op) {                                                                      \
		case BCOLL_SUM:                                                                    \
		case BCOLL_AVG:                                                                    \
			for (size_t i = 0; i < n; i++)                                             \
				a[i] += b[i];                                                      \
			break;                                                                     \
		case BCOLL_MIN:                                                                    \
			for (size_t i = 0; i < n; i++)                                             \
				a[i] = b[i] < a[i] ? b[i] : a[i];                                  \
			break;                                                                     \
		case BCOLL_MAX:                                                                    \
			for (size_t i = 0; i < n; i++)                                             \
				a[i] = b[i] > a[i] ? b[i] : a[i];                                  \
			break;                                                                     \
		}                                                                                  \
	} while (0)

/* dst[i] = dst[i] op src[i]; AVG sums here and divides once at the end. */
static void reduce(void *dst, const void *src, size_t n, enum bcoll_dtype dt, enum bcoll_op op)
{
	switch (dt) {
	case BCOLL_F32:
		REDUCE_LOOP(float);
		break;
	case BCOLL_F64:
		REDUCE_LOOP(double);
		break;
	case BCOLL_I32:
		REDUCE_LOOP(int32_t);
		break;
	case BCOLL_I64:
		REDUCE_LOOP(int64_t);
		break;
	}
}

static void divide(void *buf, size_t n, enum bcoll_dtype dt, int by)
{
	size_t i;

	switch (dt) {
	case BCOLL_F32:
		for (i = 0; i < n; i++)
			((float *)buf)[i] /= (float)by;
		break;
	case BCOLL_F64:
		for (i = 0; i < n; i++)
			((double *)buf)[i] /= by;
		break;
	case BCOLL_I32:
		for (i = 0; i < n; i++)
			((int32_t *)buf)[i] /= by;
		break;
	case BCOLL_I64:
		for (i = 0; i < n; i++)
			((int64_t *)buf)[i] /= by;
		break;
	}
}

/* Segment i of count elements split n ways: the first count % n are longer. */
static void segment(size_t count, int n, int i, size_t *start, size_t *len)
{
	size_t q = count / n, rem = count % n;

	*start = i * q + ((size_t)i < rem ? (size_t)i : rem);
	*len = q + ((size_t)i < rem);
}

/* Checks the arguments every collective shares and opens the operation. */
static int begin(struct bcoll_comm *c, const char *op, size_t count, enum bcoll_dtype dt)
{
	if (!c)
		return -EINVAL;
	c->op = op;
	c->seq++;
	if ((unsigned)dt > BCOLL_I64)
		return bcoll_fail(c, -EINVAL, "unknown dtype %d", (int)dt);
	if (count > SIZE_MAX / 8)
		return bcoll_fail(c, -EOVERFLOW, "count %zu is too large", count);
	return 0;
}

static int reduce_scatter_ring(struct bcoll_comm *c, char *buf, size_t count, size_t esz,
			       enum bcoll_dtype dt, enum bcoll_op op)
{
	int n = c->size, r = c->rank;
	size_t piece = BCOLL_SCRATCH_BYTES / esz * esz;

	for (int s = 0; s < n - 1; s++) {
		size_t ss, sl, rs, rl, off, most;

		segment(count, n, (r - s + n) % n, &ss, &sl);
		segment(count, n, (r - s - 1 + 2 * n) % n, &rs, &rl);
		ss *= esz, sl *= esz, rs *= esz, rl *= esz;
		most = sl > rl ? sl : rl;
		for (off = 0; off < most; off += piece) {
			size_t ps = off < sl ? (sl - off < piece ? sl - off : piece) : 0;
			size_t pr = off < rl ? (rl - off < piece ? rl - off : piece) : 0;
			int e = bcoll_sendrecv(c, buf + ss + off, ps, c->scratch, pr);

			if (e < 0)
				return e;
			reduce(buf + rs + off, c->scratch, pr / esz, dt, op);
		}
	}
	return 0;
}

static int allgather_ring(struct bcoll_comm *c, char *buf, size_t count, size_t esz)
{
	int n = c->size, r = c->rank;

	for (int s = 0; s < n - 1; s++) {
		size_t ss, sl, rs, rl;
		int e;

		segment(count, n, (r + 1 - s + n) % n, &ss, &sl);
		segment(count, n, (r - s + n) % n, &rs, &rl);
		e = bcoll_sendrecv(c, buf + ss * esz, sl * esz, buf + rs * esz, rl * esz);
		if (e < 0)
			return e;
	}
	return 0;
}

int bcoll_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt, enum bcoll_op op)
{
	double t0 = now_s();
	size_t esz = bcoll_dtype_size(dt);
	int r = begin(c, "allreduce", count, dt);

	if (r < 0)
		return r;
	if ((unsigned)op > BCOLL_MAX)
		return bcoll_fail(c, -EINVAL, "unknown op %d", (int)op);
	if (count && (!send || !recv))
		return bcoll_fail(c, -EINVAL, "NULL buffer");
	if (count && send != recv)
		memmove(recv, send, count * esz);
	if (c->size > 1) {
		r = reduce_scatter_ring(c, recv, count, esz, dt, op);
		if (r == 0)
			r = allgather_ring(c, recv, count, esz);
	}
	if (r == 0 && op == BCOLL_AVG && c->size > 1)
		divide(recv, count, dt, c->size);
	c->seconds += now_s() - t0;
	return r;
}

int bcoll_broadcast(struct bcoll_comm *c, void *buf, size_t count, enum bcoll_dtype dt, int root)
{
	double t0 = now_s();
	size_t esz = bcoll_dtype_size(dt), bytes, off;
	int r = begin(c, "broadcast", count, dt), next;

	if (r < 0)
		return r;
	if (root < 0 || root >= c->size)
		return bcoll_fail(c, -EINVAL, "root %d is not a rank of %d", root, c->size);
	if (count && !buf)
		return bcoll_fail(c, -EINVAL, "NULL buffer");
	bytes = count * esz;
	next = (c->rank + 1) % c->size;
	for (off = 0; c->size > 1 && off < bytes && r == 0; off += BCOLL_SCRATCH_BYTES) {
		size_t len = bytes - off < BCOLL_SCRATCH_BYTES ? bytes - off : BCOLL_SCRATCH_BYTES;

		if (c->rank != root)
			r = bcoll_sendrecv(c, NULL, 0, (char *)buf + off, len);
		if (r == 0 && next != root)
			r = bcoll_sendrecv(c, (char *)buf + off, len, NULL, 0);
	}
	c->seconds += now_s() - t0;
	return r;
}

/* n-1 rounds of passing one byte along the ring: after them every rank has
 * heard, directly or not, from every other rank. */
int bcoll_barrier(struct bcoll_comm *c)
{
	double t0 = now_s();
	int r = begin(c, "barrier", 0, BCOLL_I32);
	char tok = 1, in;

	for (int s = 0; r == 0 && s < c->size - 1; s++)
		r = bcoll_sendrecv(c, &tok, 1, &in, 1);
	c->seconds += now_s() - t0;
	return r;
}

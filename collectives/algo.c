/* algo — the collective algorithms of libbcoll, written only against the
 * transport's sendrecv verb: ring reduce-scatter/allgather (pipelined in
 * scratch-sized pieces), recursive doubling (small messages), Rabenseifner
 * halving-doubling (mid sizes), binomial-tree and pipelined-ring broadcast,
 * binomial-tree reduce and a dissemination barrier. Non-power-of-two sizes
 * fold the first 2*rem ranks in pairs. Every element is reduced along one
 * chain of ranks (or with the lower rank's operand first), so all ranks end
 * with identical bits. Nothing here allocates: pieces go through the two
 * scratch buffers set up at init.
 */
#include "bcoll_int.h"

#include <errno.h>
#include <string.h>

#define SR(c, to, sb, sl, from, rb, rl) ((c)->tp->sendrecv((c), (to), (sb), (sl), (from), (rb), (rl)))

void bcoll_segment(size_t count, int n, int i, size_t *start, size_t *len)
{
	size_t q = count / n, rem = count % n;

	*start = i * q + ((size_t)i < rem ? (size_t)i : rem);
	*len = q + ((size_t)i < rem);
}

/* Block i: equal blocks of bsize elements, or count split n ways when bsize is 0. */
static void block(const struct bcoll_comm *c, size_t count, size_t bsize, int i, size_t *st,
		  size_t *ln)
{
	if (bsize) {
		*st = (size_t)i * bsize;
		*ln = bsize;
	} else {
		bcoll_segment(count, c->size, i, st, ln);
	}
}

static size_t clip(size_t len, size_t off, size_t piece)
{
	return off >= len ? 0 : len - off < piece ? len - off : piece;
}

/* Ring reduce-scatter: out (block rank's elements) = op over ranks of send's
 * block rank. send is only read; partial sums travel in scratch pieces. */
int bcoll_rs_ring(struct bcoll_comm *c, const char *send, char *out, size_t count, size_t bsize,
		  enum bcoll_dtype dt, enum bcoll_op op)
{
	int n = c->size, r = c->rank, prev = (r + n - 1) % n, next = (r + 1) % n;
	size_t esz = bcoll_dtype_size(dt), piece = BCOLL_SCRATCH_BYTES / esz, most, st;

	block(c, count, bsize, 0, &st, &most);
	for (size_t off = 0; off < most; off += piece) {
		int a = 0;

		for (int s = 0; s < n - 1; s++) {
			int sb = (r - s - 1 + 2 * n) % n, rb = (r - s - 2 + 2 * n) % n, e;
			size_t sst, sl, rst, rl;
			const char *src;
			char *tmp = c->scratch[1 - a];

			block(c, count, bsize, sb, &sst, &sl);
			block(c, count, bsize, rb, &rst, &rl);
			sl = clip(sl, off, piece);
			rl = clip(rl, off, piece);
			src = s == 0 ? send + (sst + off) * esz : c->scratch[a];
			e = SR(c, next, src, sl * esz, prev, tmp, rl * esz);
			if (e < 0)
				return e;
			if (s == n - 2)
				bcoll_reduce3(out + off * esz, tmp, send + (rst + off) * esz, rl, dt, op);
			else
				bcoll_reduce_buf(tmp, send + (rst + off) * esz, rl, dt, op);
			a = 1 - a;
		}
	}
	return 0;
}

/* Ring allgather in place: buf holds this rank's block; gets everyone's. */
int bcoll_ag_ring(struct bcoll_comm *c, char *buf, size_t count, size_t bsize, size_t esz)
{
	int n = c->size, r = c->rank;

	for (int s = 0; s < n - 1; s++) {
		size_t ss, sl, rs, rl;
		int e;

		block(c, count, bsize, (r - s + n) % n, &ss, &sl);
		block(c, count, bsize, (r - s - 1 + n) % n, &rs, &rl);
		e = SR(c, (r + 1) % n, buf + ss * esz, sl * esz, (r + n - 1) % n, buf + rs * esz,
		       rl * esz);
		if (e < 0)
			return e;
	}
	return 0;
}

/* Recursive-doubling allgather in place for a power-of-two size: buf holds
 * this rank's block of bsize elements; each step swaps the run of blocks
 * gathered so far with the partner's (log2 n steps instead of n - 1). */
int bcoll_ag_rd(struct bcoll_comm *c, char *buf, size_t bsize, size_t esz)
{
	size_t bytes = bsize * esz;

	for (int mask = 1; mask < c->size; mask <<= 1) {
		int peer = c->rank ^ mask, mine = c->rank & ~(mask - 1), theirs = peer & ~(mask - 1);
		int e = SR(c, peer, buf + mine * bytes, mask * bytes, peer, buf + theirs * bytes,
			   mask * bytes);

		if (e < 0)
			return e;
	}
	return 0;
}

/* buf = lower-ranked operand op higher-ranked one, whichever I am. */
static void reduce_ordered(char *buf, const char *tmp, size_t n, enum bcoll_dtype dt,
			   enum bcoll_op op, int peer_is_lower)
{
	if (peer_is_lower)
		bcoll_reduce3(buf, tmp, buf, n, dt, op);
	else
		bcoll_reduce_buf(buf, tmp, n, dt, op);
}

static int pof2_below(int n)
{
	int p = 1;

	while (p * 2 <= n)
		p *= 2;
	return p;
}

/* Folds ranks < 2*rem pairwise (even gives its vector to odd); returns the
 * rank in the power-of-two group or -1 for a rank that sits out. */
static int fold_in(struct bcoll_comm *c, char *buf, size_t count, enum bcoll_dtype dt,
		   enum bcoll_op op, int rem, int *err)
{
	size_t esz = bcoll_dtype_size(dt), piece = BCOLL_SCRATCH_BYTES / esz;
	int r = c->rank;

	*err = 0;
	if (r >= 2 * rem)
		return r - rem;
	for (size_t off = 0; off < count; off += piece) {
		size_t l = clip(count, off, piece);

		if (r % 2 == 0)
			*err = SR(c, r + 1, buf + off * esz, l * esz, -1, NULL, 0);
		else if ((*err = SR(c, -1, NULL, 0, r - 1, c->scratch[0], l * esz)) == 0)
			reduce_ordered(buf + off * esz, c->scratch[0], l, dt, op, 1);
		if (*err < 0)
			return -1;
	}
	return r % 2 ? r / 2 : -1;
}

/* Gives the result back to the ranks that sat out. */
static int fold_out(struct bcoll_comm *c, char *buf, size_t bytes, int rem)
{
	int r = c->rank;

	if (r >= 2 * rem)
		return 0;
	if (r % 2)
		return SR(c, r - 1, buf, bytes, -1, NULL, 0);
	return SR(c, -1, NULL, 0, r + 1, buf, bytes);
}

static int real_rank(int nr, int rem)
{
	return nr < rem ? nr * 2 + 1 : nr + rem;
}

/* Recursive doubling on buf (already holding this rank's input). */
static int allreduce_rd(struct bcoll_comm *c, char *buf, size_t count, enum bcoll_dtype dt,
			enum bcoll_op op)
{
	size_t esz = bcoll_dtype_size(dt), piece = BCOLL_SCRATCH_BYTES / esz;
	int pof2 = pof2_below(c->size), rem = c->size - pof2, e;

	for (size_t off = 0; off < count; off += piece) {
		size_t l = clip(count, off, piece);
		char *b = buf + off * esz;
		int nr = fold_in(c, b, l, dt, op, rem, &e);

		if (e < 0)
			return e;
		for (int mask = 1; nr >= 0 && mask < pof2; mask <<= 1) {
			int peer = real_rank(nr ^ mask, rem);

			e = SR(c, peer, b, l * esz, peer, c->scratch[0], l * esz);
			if (e < 0)
				return e;
			reduce_ordered(b, c->scratch[0], l, dt, op, peer < c->rank);
		}
		e = fold_out(c, b, l * esz, rem);
		if (e < 0)
			return e;
	}
	return 0;
}

/* Rabenseifner: reduce-scatter by recursive halving, allgather by doubling. */
static int allreduce_raben(struct bcoll_comm *c, char *buf, size_t count, enum bcoll_dtype dt,
			   enum bcoll_op op)
{
	size_t esz = bcoll_dtype_size(dt), piece = BCOLL_SCRATCH_BYTES / esz;
	size_t lo = 0, hi = count, slo[16], shi[16];
	int pof2 = pof2_below(c->size), rem = c->size - pof2, e, lvl = 0;
	int nr = fold_in(c, buf, count, dt, op, rem, &e);

	if (e < 0)
		return e;
	for (int mask = pof2 >> 1; nr >= 0 && mask >= 1; mask >>= 1) {
		int peer = real_rank(nr ^ mask, rem), upper = nr & mask;
		size_t mid = lo + (hi - lo) / 2, klo = upper ? mid : lo, khi = upper ? hi : mid;
		size_t olo = upper ? lo : mid, ohi = upper ? mid : hi;
		size_t most = khi - klo > ohi - olo ? khi - klo : ohi - olo;

		for (size_t off = 0; off < most; off += piece) {
			size_t ps = clip(ohi - olo, off, piece), pr = clip(khi - klo, off, piece);

			e = SR(c, peer, buf + (olo + off) * esz, ps * esz, peer, c->scratch[0],
			       pr * esz);
			if (e < 0)
				return e;
			reduce_ordered(buf + (klo + off) * esz, c->scratch[0], pr, dt, op,
				       peer < c->rank);
		}
		slo[lvl] = lo, shi[lvl++] = hi;
		lo = klo, hi = khi;
	}
	for (int mask = 1; nr >= 0 && mask < pof2; mask <<= 1) {
		int peer = real_rank(nr ^ mask, rem);
		size_t plo = slo[--lvl], phi = shi[lvl];
		size_t olo = lo == plo ? hi : plo, ohi = lo == plo ? phi : lo;

		e = SR(c, peer, buf + lo * esz, (hi - lo) * esz, peer, buf + olo * esz,
		       (ohi - olo) * esz);
		if (e < 0)
			return e;
		lo = plo, hi = phi;
	}
	return fold_out(c, buf, count * esz, rem);
}

int bcoll_pick_algo(const struct bcoll_comm *c, size_t bytes)
{
	if (c->algo == BCOLL_A_DIRECT)
		return c->tp->allreduce ? BCOLL_A_DIRECT : BCOLL_A_RING;
	if (c->algo != BCOLL_A_AUTO)
		return c->algo;
	if (c->tp && c->tp->allreduce)
		return BCOLL_A_DIRECT;
	if (bytes <= c->rd_max)
		return BCOLL_A_RD;
	return bytes < c->ring_min ? BCOLL_A_RABEN : BCOLL_A_RING;
}

const char *bcoll_algo_name(const struct bcoll_comm *c, size_t bytes)
{
	static const char *const n[] = {"auto", "ring", "rd", "rabenseifner", "shm-direct"};

	return c->size == 1 ? "self" : n[bcoll_pick_algo(c, bytes)];
}

int bcoll_allreduce_algo(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			 enum bcoll_dtype dt, enum bcoll_op op, int algo)
{
	size_t esz = bcoll_dtype_size(dt), st, ln;
	int e;

	if (algo == BCOLL_A_DIRECT)
		return c->tp->allreduce(c, send, recv, count, dt, op);
	if (algo == BCOLL_A_RING) {
		bcoll_segment(count, c->size, c->rank, &st, &ln);
		e = bcoll_rs_ring(c, send, (char *)recv + st * esz, count, 0, dt, op);
		if (e == 0)
			e = bcoll_ag_ring(c, recv, count, 0, esz);
	} else {
		if (send != recv)
			memmove(recv, send, count * esz);
		e = algo == BCOLL_A_RD ? allreduce_rd(c, recv, count, dt, op)
				       : allreduce_raben(c, recv, count, dt, op);
	}
	if (e == 0 && op == BCOLL_AVG)
		bcoll_divide(recv, count, dt, c->size);
	return e;
}

/* Binomial tree for small messages, a pipelined ring for large ones. */
int bcoll_bcast_algo(struct bcoll_comm *c, char *buf, size_t bytes, int root)
{
	int n = c->size, vr = (c->rank - root + n) % n, mask = 1, e;

	if (bytes > (64u << 10) || c->algo == BCOLL_A_RING) {
		int next = (c->rank + 1) % n, prev = (c->rank + n - 1) % n;

		for (size_t off = 0; off < bytes; off += BCOLL_SCRATCH_BYTES) {
			size_t l = clip(bytes, off, BCOLL_SCRATCH_BYTES);

			e = c->rank != root ? SR(c, -1, NULL, 0, prev, buf + off, l) : 0;
			if (e == 0 && next != root)
				e = SR(c, next, buf + off, l, -1, NULL, 0);
			if (e < 0)
				return e;
		}
		return 0;
	}
	while (mask < n && !(vr & mask))
		mask <<= 1;
	if (mask < n) {
		e = SR(c, -1, NULL, 0, (vr - mask + root) % n, buf, bytes);
		if (e < 0)
			return e;
	}
	for (mask >>= 1; mask > 0; mask >>= 1) {
		if (vr + mask < n) {
			e = SR(c, (vr + mask + root) % n, buf, bytes, -1, NULL, 0);
			if (e < 0)
				return e;
		}
	}
	return 0;
}

/* Binomial-tree reduce, piece by piece through the scratch buffers. */
int bcoll_reduce_tree(struct bcoll_comm *c, const char *send, char *recv, size_t count,
		      enum bcoll_dtype dt, enum bcoll_op op, int root)
{
	size_t esz = bcoll_dtype_size(dt), piece = BCOLL_SCRATCH_BYTES / esz;
	int n = c->size, vr = (c->rank - root + n) % n, e;

	for (size_t off = 0; off < count; off += piece) {
		size_t l = clip(count, off, piece);
		char *acc = c->scratch[0];

		memcpy(acc, send + off * esz, l * esz);
		for (int mask = 1; mask < n; mask <<= 1) {
			if (vr & mask) {
				e = SR(c, (vr - mask + root) % n, acc, l * esz, -1, NULL, 0);
				if (e < 0)
					return e;
				break;
			}
			if (vr + mask < n) {
				e = SR(c, -1, NULL, 0, (vr + mask + root) % n, c->scratch[1],
				       l * esz);
				if (e < 0)
					return e;
				bcoll_reduce_buf(acc, c->scratch[1], l, dt, op);
			}
		}
		if (vr == 0) {
			if (op == BCOLL_AVG)
				bcoll_divide(acc, l, dt, n);
			memcpy(recv + off * esz, acc, l * esz);
		}
	}
	return 0;
}

/* Dissemination: after ceil(log2 n) rounds everyone has heard from everyone. */
int bcoll_barrier_algo(struct bcoll_comm *c)
{
	char tok = 1, in;
	int n = c->size, e;

	for (int k = 1; k < n; k <<= 1) {
		e = SR(c, (c->rank + k) % n, &tok, 1, (c->rank - k + n) % n, &in, 1);
		if (e < 0)
			return e;
	}
	return 0;
}

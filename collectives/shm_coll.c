/* shm_coll — the shared-memory transport's whole-collective fast paths, which
 * bypass the ring verb (two copies per hop) and use the segment directly:
 *   - allreduce up to SHM_TINY_BYTES: each rank writes payload, descriptor
 *     and sequence number into its own two flag lines; a peer that sees the
 *     sequence reads the rest from the lines it just pulled in (one transfer
 *     per peer, no phase counter, no slot);
 *   - allreduce up to SHM_SMALL: copy into the slot, one phase, every rank
 *     reduces the whole vector from every slot;
 *   - larger allreduce: copy in, reduce this rank's segment of every slot in
 *     place, copy every reduced segment out (two copies per byte);
 *   - reduce_scatter: copy the blocks peers own into the slot, each rank
 *     reduces its block from every slot (and its own send buffer);
 *   - allgather: copy in, every rank copies every slot out;
 *   - broadcast: the root copies in, the others copy out.
 * Every slot use is "write own slot, phase, read any slot", banks alternate,
 * so a bank is rewritten only after a later phase that every rank enters
 * once done reading it. Elements are reduced in rank order, so every rank
 * ends with the same bits. Nothing here allocates.
 */
#include "shm_int.h"

#include <errno.h>
#include <string.h>

#define SHM_SMALL 16384		  /* bytes reduced by every rank in one phase */
#define SHM_BLOCK 8192		  /* elements reduced while hot in cache */
#define SHM_MOVE_CHUNK (1u << 20) /* bytes of a slot per phase: reduce_scatter, allgather */
#define SHM_BCAST_CHUNK (256u << 10) /* broadcast's pipelined pieces */

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* The smallest allreduces through the flag lines (see the top of the file).
 * A bank's lines are rewritten two tiny calls later, once every rank has
 * published the call between, so after it read these. */
static int allreduce_tiny(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			  enum bcoll_dtype dt, enum bcoll_op op)
{
	struct shm *s = shm_of(c);
	int n = c->size, bank = s->ntiny++ & 1;
	struct shm_tiny *row = s->tiny + (size_t)bank * n, *mine = row + c->rank;
	struct shm_waiter w;

	shm_post_cur(c);
	memcpy(mine->data, send, count * bcoll_dtype_size(dt));
	mine->d = c->cur;
	atomic_store_explicit(&mine->seq, c->seq, memory_order_release);
	shm_waiter_init(c, &w);
	for (int j = 0; j < n; j++) {
		while (atomic_load_explicit(&row[j].seq, memory_order_acquire) != c->seq) {
			int e = shm_idle(c, &w, j, "did not arrive");

			if (e < 0)
				return e;
		}
		if (memcmp(&row[j].d, &c->cur, sizeof(c->cur)))
			return bcoll_fail(c, -EPROTO, "rank %d is in collective #%llu (kind %u, "
					  "count %llu, %s, %s) but this rank is in #%llu (kind %u, "
					  "count %llu, %s, %s)", j, (unsigned long long)c->seq,
					  row[j].d.kind, (unsigned long long)row[j].d.count,
					  bcoll_dtype_name(row[j].d.dtype),
					  bcoll_op_name(row[j].d.op), (unsigned long long)c->seq,
					  c->cur.kind, (unsigned long long)c->cur.count,
					  bcoll_dtype_name(c->cur.dtype), bcoll_op_name(c->cur.op));
	}
	bcoll_reduce3(recv, row[0].data, row[1].data, count, dt, op);
	for (int j = 2; j < n; j++)
		bcoll_reduce_buf(recv, row[j].data, count, dt, op);
	if (op == BCOLL_AVG)
		bcoll_divide(recv, count, dt, n);
	return 0;
}

/* Small messages in one phase: every rank reduces the whole vector from all
 * slots in rank order. */
static int allreduce_small(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			   enum bcoll_dtype dt, enum bcoll_op op)
{
	struct shm *s = shm_of(c);
	int n = c->size, b0 = shm_begin(c), bank = s->nchunk++ & 1, e;

	if (b0 < 0)
		return b0;
	memcpy(shm_slot(s, n, c->rank, bank), send, count * bcoll_dtype_size(dt));
	e = shm_phase(c);
	if (e == 0)
		e = shm_check_descs(c, b0);
	if (e < 0)
		return e;
	bcoll_reduce3(recv, shm_slot(s, n, 0, bank), shm_slot(s, n, 1, bank), count, dt, op);
	for (int j = 2; j < n; j++)
		bcoll_reduce_buf(recv, shm_slot(s, n, j, bank), count, dt, op);
	if (op == BCOLL_AVG)
		bcoll_divide(recv, count, dt, n);
	return 0;
}

/* Direct allreduce: copy in, reduce my segment from every slot, copy out. */
int shm_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		  enum bcoll_dtype dt, enum bcoll_op op)
{
	struct shm *s = shm_of(c);
	size_t esz = bcoll_dtype_size(dt), per = s->slot_bytes / esz, off;
	int n = c->size, e, b0;

	if (count * esz <= SHM_TINY_BYTES && count)
		return allreduce_tiny(c, send, recv, count, dt, op);
	if (count * esz <= SHM_SMALL && count)
		return allreduce_small(c, send, recv, count, dt, op);
	b0 = shm_begin(c);
	if (b0 < 0)
		return b0;
	for (off = 0; off < count || off == 0; off += per) {
		size_t cnt = min_sz(count - off, per), st, ln;
		int bank = s->nchunk++ & 1;
		char *mine = shm_slot(s, n, c->rank, bank);

		e = shm_claim(c);
		if (e < 0)
			return e;
		memcpy(mine, (const char *)send + off * esz, cnt * esz);
		e = shm_phase(c);
		if (e == 0 && off == 0)
			e = shm_check_descs(c, b0);
		if (e < 0)
			return e;
		bcoll_segment(cnt, n, c->rank, &st, &ln);
		for (size_t b = 0; b < ln; b += SHM_BLOCK) {
			size_t k = min_sz(ln - b, SHM_BLOCK), at = (st + b) * esz;

			for (int j = 1; j < n; j++)
				bcoll_reduce_buf(mine + at, shm_slot(s, n, (c->rank + j) % n, bank) + at,
						 k, dt, op);
			if (op == BCOLL_AVG)
				bcoll_divide(mine + at, k, dt, n);
		}
		e = shm_phase(c);
		if (e < 0)
			return e;
		for (int j = 0; j < n; j++) {
			bcoll_segment(cnt, n, j, &st, &ln);
			memcpy((char *)recv + (off + st) * esz, shm_slot(s, n, j, bank) + st * esz,
			       ln * esz);
		}
		if (count == 0)
			break;
	}
	return 0;
}

/* The first phase of a slot collective checks every rank's descriptor. */
static int phase_checked(struct bcoll_comm *c, int first, int b0)
{
	int e = shm_phase(c);

	if (e == 0 && first)
		e = shm_check_descs(c, b0);
	return e;
}

/* recv (count) = op over ranks of their send block `rank` (send: size x count).
 * A chunk puts the blocks peers own side by side in the slot; this rank's
 * own block is read from send, not copied. */
int shm_reduce_scatter(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		       enum bcoll_dtype dt, enum bcoll_op op)
{
	struct shm *s = shm_of(c);
	size_t esz = bcoll_dtype_size(dt), per = min_sz(SHM_MOVE_CHUNK, s->slot_bytes) / esz / c->size;
	const char *in = send;
	char *out = recv;
	int n = c->size, r = c->rank, b0 = shm_begin(c), e;

	if (b0 < 0)
		return b0;
	for (size_t off = 0; off < count; off += per) {
		size_t cnt = min_sz(count - off, per);
		int bank = s->nchunk++ & 1;
		char *mine = shm_slot(s, n, r, bank);

		e = shm_claim(c);
		if (e < 0)
			return e;
		for (int i = 0; i < n; i++)
			if (i != r)
				memcpy(mine + i * cnt * esz, in + ((size_t)i * count + off) * esz,
				       cnt * esz);
		e = phase_checked(c, off == 0, b0);
		if (e < 0)
			return e;
		/* Own block first: recv may be it (in place), so it is read before
		 * any write; then the peers' in rank order. */
		for (size_t b = 0; b < cnt; b += SHM_BLOCK) {
			size_t k = min_sz(cnt - b, SHM_BLOCK), at = (r * cnt + b) * esz;
			const char *own = in + ((size_t)r * count + off + b) * esz;
			char *o = out + (off + b) * esz;
			int first = r == 0 ? 1 : 0;

			bcoll_reduce3(o, own, shm_slot(s, n, first, bank) + at, k, dt, op);
			for (int j = first + 1; j < n; j++)
				if (j != r)
					bcoll_reduce_buf(o, shm_slot(s, n, j, bank) + at, k, dt, op);
			if (op == BCOLL_AVG)
				bcoll_divide(o, k, dt, n);
		}
	}
	return 0;
}

/* recv (size x bytes) = every rank's send, in rank order. Each peer's chunk
 * is copied out as soon as that peer has published it. */
int shm_allgather(struct bcoll_comm *c, const void *send, void *recv, size_t bytes)
{
	struct shm *s = shm_of(c);
	size_t per = min_sz(SHM_MOVE_CHUNK, s->slot_bytes);
	char *out = recv, *own = out + c->rank * bytes;
	int n = c->size, r = c->rank, b0 = shm_begin(c), e;

	if (b0 < 0)
		return b0;
	if (send != own)
		memmove(own, send, bytes); /* first, in case send lies in recv */
	for (size_t off = 0; off < bytes; off += per) {
		size_t len = min_sz(bytes - off, per);
		int bank = s->nchunk++ & 1;
		uint64_t p = shm_next_phase(c);

		e = shm_claim(c);
		if (e < 0)
			return e;
		memcpy(shm_slot(s, n, r, bank), own + off, len);
		shm_publish(c, p);
		for (int k = 1; k < n; k++) {
			int j = (r + k) % n;

			e = shm_wait_for(c, j, p);
			if (e == 0 && off == 0)
				e = shm_check_desc(c, b0, j);
			if (e < 0)
				return e;
			memcpy(out + j * bytes + off, shm_slot(s, n, j, bank), len);
		}
	}
	return 0;
}

/* buf on every rank = buf on root, pipelined in SHM_BCAST_CHUNK pieces: the
 * root waits only until the bank it refills was read by everyone, the others
 * only for the root. */
int shm_broadcast(struct bcoll_comm *c, void *buf, size_t bytes, int root)
{
	struct shm *s = shm_of(c);
	size_t per = min_sz(SHM_BCAST_CHUNK, s->slot_bytes);
	int n = c->size, b0 = shm_begin(c), e;

	if (b0 < 0)
		return b0;
	for (size_t off = 0; off < bytes; off += per) {
		size_t len = min_sz(bytes - off, per);
		int bank = s->nchunk++ & 1;
		uint64_t p = shm_next_phase(c);

		if (c->rank == root) {
			e = shm_claim(c);
			if (e < 0)
				return e;
			memcpy(shm_slot(s, n, root, bank), (char *)buf + off, len);
			shm_publish(c, p);
			continue;
		}
		shm_publish(c, p);
		e = shm_wait_for(c, root, p);
		if (e == 0 && off == 0)
			e = shm_check_desc(c, b0, root);
		if (e < 0)
			return e;
		memcpy((char *)buf + off, shm_slot(s, n, root, bank), len);
	}
	return 0;
}

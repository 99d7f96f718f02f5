/* shm — libbcoll's shared-memory transport for ranks on one host. Rank 0
 * creates one /dev/shm segment per communicator before the rendezvous and
 * publishes its name in its address; every rank maps it, claims its control
 * block (a second claim of the same rank is an error) and, once all have
 * joined, the name is unlinked so nothing is left behind. The segment holds:
 *   - per-rank control blocks: pid, a phase counter, the posted descriptors;
 *   - per-rank flag lines carrying the smallest allreduces (shm_coll.c);
 *   - one single-producer ring per ordered pair of ranks (the sendrecv verb
 *     the generic algorithms use, a byte stream with wire headers like tcp);
 *   - two banks of per-rank slots for the whole-collective fast paths
 *     (shm_coll.c: allreduce, reduce_scatter, allgather, broadcast).
 * This file owns the segment, the waits and the ring verb. Waits spin
 * briefly (not at all when ranks outnumber CPUs), yield for a few ms, then
 * sleep; each has a deadline and checks the peers' pidfds (a dead rank,
 * zombies included), the shared abort word and the awaited peer's posted
 * collective, so a dead, frozen, aborting or mismatched rank fails every
 * survivor, named.
 */
#include "shm_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHM_MAGIC 0x62736d32u
#define SHM_MB_BYTES (256u << 10)
#define SHM_SLOTS_TOTAL (64u << 20) /* both banks of every rank's slot */
#define SHM_YIELD_MS 4		    /* yield, not sleep, for this long in a wait */

struct shm_mb {
	atomic_ullong head;
	char pad1[SHM_CL - 8];
	atomic_ullong tail;
	char pad2[SHM_CL - 8];
};

static size_t box_bytes(void)
{
	return sizeof(struct shm_mb) + SHM_MB_BYTES;
}

static struct shm_mb *box(struct shm *s, int size, int from, int to)
{
	return (struct shm_mb *)(s->mb + ((size_t)from * size + to) * box_bytes());
}

static size_t seg_len(int size, size_t *slot_bytes)
{
	size_t sb = SHM_SLOTS_TOTAL / 2 / size / 4096 * 4096;

	if (sb > (8u << 20))
		sb = 8u << 20;
	*slot_bytes = sb;
	return sizeof(struct shm_hdr) + (size_t)size * sizeof(struct shm_ctl) +
	       2 * (size_t)size * sizeof(struct shm_tiny) + (size_t)size * size * box_bytes() +
	       2 * (size_t)size * sb;
}

static void shm_layout(struct shm *s, int size)
{
	s->hdr = (struct shm_hdr *)s->base;
	s->ctl = (struct shm_ctl *)(s->base + sizeof(struct shm_hdr));
	s->tiny = (struct shm_tiny *)(s->ctl + size);
	s->mb = (char *)(s->tiny + 2 * size);
	s->slots = s->mb + (size_t)size * size * box_bytes();
}

/* Names the rank blamed for a failure in the shared abort word (first wins). */
static void blame(struct bcoll_comm *c, int who)
{
	struct shm *s = shm_of(c);
	int none = -1;

	if (s && s->hdr && atomic_compare_exchange_strong(&s->hdr->abort_rank, &none, who))
		atomic_store(&s->hdr->abort_by, c->rank);
}

/* True when rank j has exited (its pidfd is readable; zombies count). */
static int peer_dead(struct bcoll_comm *c, int j)
{
	struct shm *s = shm_of(c);
	struct pollfd p = {.fd = s->pfd[j].fd, .events = POLLIN};

	if (j < 0 || j == c->rank)
		return 0;
	if (p.fd >= 0)
		return poll(&p, 1, 0) == 1;
	return s->ctl[j].pid > 0 && kill(s->ctl[j].pid, 0) < 0 && errno == ESRCH;
}

/* The rank to blame when our wait on `peer` times out: follow the chain of
 * ranks that are alive (idle step within a quarter deadline) and waiting,
 * to the first one that is not: frozen, dead or never arrived. */
static int chain_culprit(struct bcoll_comm *c, int peer, int64_t now)
{
	struct shm *s = shm_of(c);
	int who = peer;

	for (int hop = 0; hop < c->size; hop++) {
		int64_t beat = atomic_load(&s->ctl[who].beat);
		int next = atomic_load(&s->ctl[who].waiting_on);

		if (now - beat > c->timeout_ms / 4 || next < 0 || next >= c->size ||
		    next == who || next == c->rank)
			break;
		who = next;
	}
	return who;
}

void shm_waiter_init(struct bcoll_comm *c, struct shm_waiter *w)
{
	w->spins = 0;
	w->start = bcoll_now_ms();
	w->deadline = w->start + c->timeout_ms;
	w->next_check = 0;
}

/* The collective rank j has posted, or 0 when it is being rewritten. */
static uint64_t peer_cur(struct shm *s, int j, struct bcoll_desc *d)
{
	uint64_t a = atomic_load_explicit(&s->ctl[j].cur_seq, memory_order_acquire), b;

	memcpy(d, &s->ctl[j].cur, sizeof(*d));
	atomic_thread_fence(memory_order_acquire);
	b = atomic_load_explicit(&s->ctl[j].cur_seq, memory_order_relaxed);
	return a == b ? a : 0;
}

void shm_post_cur(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);
	struct shm_ctl *m = &s->ctl[c->rank];

	if (s->posted == c->seq)
		return;
	atomic_store_explicit(&m->cur_seq, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	m->cur = c->cur;
	atomic_store_explicit(&m->cur_seq, c->seq, memory_order_release);
	s->posted = c->seq;
}

/* A peer in this same collective number with another descriptor (another
 * count, dtype, op, root or collective) is a usage error, not a slow peer. */
static int peer_mismatch(struct bcoll_comm *c, int j)
{
	struct bcoll_desc d;

	if (j == c->rank || c->seq == 0 || peer_cur(shm_of(c), j, &d) != c->seq ||
	    !memcmp(&d, &c->cur, sizeof(d)))
		return 0;
	return bcoll_fail(c, -EPROTO, "rank %d is in collective #%llu (kind %u, count %llu, "
			  "%s, %s, root %d) but this rank is in #%llu (kind %u, count %llu, %s, "
			  "%s, root %d)", j, (unsigned long long)c->seq, d.kind,
			  (unsigned long long)d.count, bcoll_dtype_name(d.dtype),
			  bcoll_op_name(d.op), d.root, (unsigned long long)c->seq, c->cur.kind,
			  (unsigned long long)c->cur.count, bcoll_dtype_name(c->cur.dtype),
			  bcoll_op_name(c->cur.op), c->cur.root);
}

/* One idle step while waiting on `peer`: spin, yield, then sleep; fails on
 * abort (ours or shared), a dead or mismatched peer or the deadline. */
int shm_idle(struct bcoll_comm *c, struct shm_waiter *w, int peer, const char *what)
{
	struct shm *s = shm_of(c);
	int64_t now;
	int who;

	if (peer < 0 || peer >= c->size)
		peer = c->rank;
	if (atomic_load(&c->aborted))
		return bcoll_fail(c, -ECANCELED, "aborted");
	who = atomic_load(&s->hdr->abort_rank);
	if (who >= 0) {
		int by = atomic_load(&s->hdr->abort_by);

		if (by == who)
			return bcoll_fail(c, -ECANCELED, "rank %d aborted", who);
		return bcoll_fail(c, who == c->rank ? -ECANCELED : -ECONNRESET,
				  "rank %d failed (reported by rank %d)", who, by);
	}
	if (++w->spins < s->spin_max) {
		__builtin_ia32_pause();
		return 0;
	}
	now = bcoll_now_ms();
	if (now >= w->next_check) {
		w->next_check = now + 5;
		atomic_store_explicit(&s->ctl[c->rank].waiting_on, peer, memory_order_relaxed);
		atomic_store_explicit(&s->ctl[c->rank].beat, now, memory_order_relaxed);
		/* Only the peer we wait on: a rank that finished and left is no fault. */
		if (peer_dead(c, peer)) {
			blame(c, peer);
			return bcoll_fail(c, -ECONNRESET, "rank %d (pid %d) died", peer,
					  (int)s->ctl[peer].pid);
		}
		if (peer_mismatch(c, peer) < 0)
			return -EPROTO;
	}
	if (now >= w->deadline) {
		int who = chain_culprit(c, peer, now);

		blame(c, who);
		who = atomic_load(&s->hdr->abort_rank); /* another rank may have named it first */
		if (who != peer)
			return bcoll_fail(c, -ETIMEDOUT, "rank %d failed (stuck for %d ms; rank %d "
					  "waits on it; named by rank %d)", who, c->timeout_ms, peer,
					  atomic_load(&s->hdr->abort_by));
		return bcoll_fail(c, -ETIMEDOUT, "rank %d %s within %d ms", peer, what,
				  c->timeout_ms);
	}
	/* Oversubscribed (4 ranks on 2 cores), spinning only delays the rank we
	 * wait for: yield for the first few ms, then sleep (long waits between
	 * steps must not steal the CPU from ranks still computing). */
	if (now - w->start < SHM_YIELD_MS)
		sched_yield();
	else
		nanosleep(&(struct timespec){0, 50000}, NULL);
	return 0;
}

struct cursor {
	char *p[2];
	size_t n[2], done;
};

static void cursor_init(struct cursor *k, void *hdr, const void *buf, size_t len, int active)
{
	k->p[0] = hdr;
	k->n[0] = sizeof(struct bcoll_wire);
	k->p[1] = (char *)buf;
	k->n[1] = len;
	k->done = active ? 0 : k->n[0] + len;
}

static size_t cursor_left(const struct cursor *k)
{
	return k->n[0] + k->n[1] - k->done;
}

/* Moves up to `room` bytes between the cursor and ring data at stream
 * position pos; returns how many. */
static size_t ring_move(struct cursor *k, char *ring, uint64_t pos, size_t room, int to_ring)
{
	size_t moved = 0;

	while (room && cursor_left(k)) {
		int i = k->done < k->n[0] ? 0 : 1;
		size_t off = i ? k->done - k->n[0] : k->done, n = k->n[i] - off;
		size_t at = (pos + moved) % SHM_MB_BYTES, first;

		if (n > room)
			n = room;
		if (n > SHM_MB_BYTES - at)
			n = SHM_MB_BYTES - at;
		first = n;
		if (to_ring)
			memcpy(ring + at, k->p[i] + off, first);
		else
			memcpy(k->p[i] + off, ring + at, first);
		k->done += first;
		moved += first;
		room -= first;
	}
	return moved;
}

static int shm_sendrecv(struct bcoll_comm *c, int to, const void *sbuf, size_t slen, int from,
			void *rbuf, size_t rlen)
{
	struct shm *s = shm_of(c);
	struct bcoll_wire sh, rh;
	struct cursor cs, cr;
	struct shm_waiter w;
	int checked = 0;

	shm_post_cur(c);
	bcoll_wire_fill(c, &sh, slen);
	cursor_init(&cs, &sh, sbuf, to >= 0 ? slen : 0, to >= 0);
	cursor_init(&cr, &rh, NULL, 0, from >= 0);
	shm_waiter_init(c, &w);
	while (cursor_left(&cs) || cursor_left(&cr)) {
		int progress = 0;

		if (cursor_left(&cs)) {
			struct shm_mb *b = box(s, c->size, c->rank, to);
			uint64_t head = atomic_load_explicit(&b->head, memory_order_relaxed);
			uint64_t tail = atomic_load_explicit(&b->tail, memory_order_acquire);
			size_t m = ring_move(&cs, (char *)(b + 1), head, SHM_MB_BYTES - (head - tail),
					     1);

			if (m) {
				atomic_store_explicit(&b->head, head + m, memory_order_release);
				progress = 1;
			}
		}
		if (cursor_left(&cr)) {
			struct shm_mb *b = box(s, c->size, from, c->rank);
			uint64_t tail = atomic_load_explicit(&b->tail, memory_order_relaxed);
			uint64_t head = atomic_load_explicit(&b->head, memory_order_acquire);
			size_t room = head - tail, m;

			/* The header alone first, so a wrong length never overruns rbuf. */
			if (!checked && room > sizeof(rh) - cr.done)
				room = sizeof(rh) - cr.done;
			m = ring_move(&cr, (char *)(b + 1), tail, room, 0);
			if (m) {
				atomic_store_explicit(&b->tail, tail + m, memory_order_release);
				progress = 1;
			}
			if (!checked && cr.done == sizeof(rh)) {
				int e = bcoll_wire_check(c, &rh, from, rlen);

				if (e < 0)
					return e;
				checked = 1;
				cr.p[1] = rbuf;
				cr.n[1] = rlen;
			}
		}
		if (progress) {
			shm_waiter_init(c, &w);
			continue;
		}
		int e = cursor_left(&cr) ? shm_idle(c, &w, from, "sent nothing")
					 : shm_idle(c, &w, to, "took nothing");
		if (e < 0)
			return e;
	}
	return 0;
}

int shm_wait_for(struct bcoll_comm *c, int j, uint64_t phase)
{
	struct shm *s = shm_of(c);
	struct shm_waiter w;

	if (atomic_load_explicit(&s->ctl[j].arrive, memory_order_acquire) >= phase)
		return 0;
	shm_waiter_init(c, &w);
	while (atomic_load_explicit(&s->ctl[j].arrive, memory_order_acquire) < phase) {
		int e = shm_idle(c, &w, j, "did not arrive");

		if (e < 0)
			return e;
	}
	return 0;
}

uint64_t shm_next_phase(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);

	return atomic_load_explicit(&s->ctl[c->rank].arrive, memory_order_relaxed) + 1;
}

void shm_publish(struct bcoll_comm *c, uint64_t phase)
{
	struct shm *s = shm_of(c);

	atomic_store_explicit(&s->ctl[c->rank].arrive, phase, memory_order_release);
}

/* Every rank reached the phase before the next one: none still reads the
 * bank this rank is about to write (its last use was two uses ago). */
int shm_claim(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);
	uint64_t prev = shm_next_phase(c) - 1;

	for (int j = 0; s->seen_all < prev && j < c->size; j++) {
		int e = shm_wait_for(c, j, prev);

		if (e < 0)
			return e;
	}
	s->seen_all = prev;
	return 0;
}

int shm_phase(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);
	uint64_t me = shm_next_phase(c);

	shm_publish(c, me);
	for (int j = 0; j < c->size; j++) {
		int e = shm_wait_for(c, j, me);

		if (e < 0)
			return e;
	}
	s->seen_all = me;
	return 0;
}

int shm_begin(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);
	int b0 = s->nchunk & 1, e;

	shm_post_cur(c);
	e = shm_claim(c); /* every rank has checked what this bank's post held */
	if (e < 0)
		return e;
	s->ctl[c->rank].post[b0].seq = c->seq;
	s->ctl[c->rank].post[b0].d = c->cur;
	return b0;
}

int shm_check_desc(struct bcoll_comm *c, int bank, int j)
{
	struct shm *s = shm_of(c);
	__typeof__(s->ctl[j].post[0]) *p = &s->ctl[j].post[bank];

	if (p->seq != c->seq || memcmp(&p->d, &c->cur, sizeof(c->cur)))
		return bcoll_fail(c, -EPROTO, "rank %d is in collective #%llu (kind %u, count %llu, "
				  "%s, %s, root %d) but this rank is in #%llu (kind %u, count %llu, "
				  "%s, %s, root %d)", j, (unsigned long long)p->seq, p->d.kind,
				  (unsigned long long)p->d.count, bcoll_dtype_name(p->d.dtype),
				  bcoll_op_name(p->d.op), p->d.root, (unsigned long long)c->seq,
				  c->cur.kind, (unsigned long long)c->cur.count,
				  bcoll_dtype_name(c->cur.dtype), bcoll_op_name(c->cur.op),
				  c->cur.root);
	return 0;
}

int shm_check_descs(struct bcoll_comm *c, int bank)
{
	for (int j = 0; j < c->size; j++) {
		int e = shm_check_desc(c, bank, j);

		if (e < 0)
			return e;
	}
	return 0;
}

/* A number that is equal for processes that can share this /dev/shm. */
uint32_t bcoll_host_id(void)
{
	char boot[64] = "";
	struct stat st = {0};
	uint32_t h = 2166136261u;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (read(fd, boot, sizeof(boot) - 1) < 0)
			boot[0] = 0;
		close(fd);
	}
	stat("/dev/shm", &st);
	for (const char *p = boot; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ (uint32_t)st.st_dev) * 16777619u;
	h = (h ^ (uint32_t)st.st_ino) * 16777619u;
	return h ? h : 1;
}

static int shm_map(struct bcoll_comm *c, int fd)
{
	struct shm *s = shm_of(c);

	s->base = mmap(NULL, s->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (s->base == MAP_FAILED) {
		s->base = NULL;
		return bcoll_fail(c, -errno, "cannot map the shared segment %s: %s", s->name,
				  strerror(errno));
	}
	shm_layout(s, c->size);
	return 0;
}

static int ncpus(void)
{
	cpu_set_t set;

	return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

static int shm_alloc(struct bcoll_comm *c)
{
	struct shm *s = calloc(1, sizeof(*s));

	if (!s || !(s->pfd = calloc(c->size, sizeof(*s->pfd)))) {
		free(s);
		return bcoll_fail(c, -ENOMEM, "out of memory");
	}
	for (int j = 0; j < c->size; j++)
		s->pfd[j].fd = -1;
	s->len = seg_len(c->size, &s->slot_bytes);
	s->spin_max = c->size > ncpus() ? 2 : 64;
	c->shm_priv = s;
	return 0;
}

int bcoll_shm_create(struct bcoll_comm *c, char *tag, size_t tlen)
{
	static atomic_uint serial;
	struct shm *s;
	int fd, r = shm_alloc(c);

	if (r < 0)
		return r;
	s = shm_of(c);
	snprintf(tag, tlen, "s%dx%u", (int)getpid(), atomic_fetch_add(&serial, 1));
	snprintf(s->name, sizeof(s->name), "/bcoll-%s", tag);
	fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return bcoll_fail(c, -errno, "cannot create %s: %s", s->name, strerror(errno));
	if (ftruncate(fd, (off_t)s->len) < 0) {
		r = -errno;
		close(fd);
		shm_unlink(s->name);
		return bcoll_fail(c, r, "cannot size %s to %zu bytes: %s", s->name, s->len,
				  strerror(-r));
	}
	r = shm_map(c, fd);
	if (r < 0) {
		shm_unlink(s->name);
		return r;
	}
	s->hdr->size = c->size;
	s->hdr->slot_bytes = s->slot_bytes;
	atomic_store(&s->hdr->abort_rank, -1);
	atomic_store(&s->hdr->abort_by, -1);
	atomic_thread_fence(memory_order_release);
	((volatile struct shm_hdr *)s->hdr)->magic = SHM_MAGIC;
	return 0;
}

/* Maps rank 0's segment (named in its address), claims this rank's block and
 * waits until every rank has claimed its own. */
int bcoll_shm_attach(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN])
{
	struct shm *s;
	struct shm_waiter w;
	unsigned zero = 0;
	int r;

	if (c->rank != 0) {
		const char *t = strstr(addrs[0], "_s");
		size_t tl = t ? strcspn(t + 1, "_:") : 0;
		int fd;

		if (!t || tl > 40)
			return bcoll_fail(c, -EPROTO, "rank 0 published no shared segment ('%s')",
					  addrs[0]);
		r = shm_alloc(c);
		if (r < 0)
			return r;
		s = shm_of(c);
		snprintf(s->name, sizeof(s->name), "/bcoll-%.*s", (int)tl, t + 1);
		fd = shm_open(s->name, O_RDWR | O_CLOEXEC, 0);
		if (fd < 0 && errno == ENOENT)
			return bcoll_fail(c, -EPROTO, "rank 0's segment %s is gone: every rank "
					  "had joined already, so rank %d joined twice", s->name,
					  c->rank);
		if (fd < 0)
			return bcoll_fail(c, -errno, "cannot open rank 0's segment %s: %s",
					  s->name, strerror(errno));
		struct stat st;
		if (fstat(fd, &st) < 0 || (size_t)st.st_size != s->len) {
			close(fd);
			return bcoll_fail(c, -EPROTO, "rank 0's segment %s is for another "
					  "communicator size (not %d ranks)", s->name, c->size);
		}
		r = shm_map(c, fd);
		if (r < 0)
			return r;
		if (((volatile struct shm_hdr *)s->hdr)->magic != SHM_MAGIC ||
		    s->hdr->size != (uint32_t)c->size)
			return bcoll_fail(c, -EPROTO, "rank 0's segment %s is for %u ranks, not %d",
					  s->name, s->hdr->size, c->size);
	}
	s = shm_of(c);
	s->ctl[c->rank].pid = getpid();
	if (!atomic_compare_exchange_strong(&s->ctl[c->rank].joined, &zero, 1))
		return bcoll_fail(c, -EPROTO, "rank %d joined twice (pid %d holds it)", c->rank,
				  (int)s->ctl[c->rank].pid);
	shm_waiter_init(c, &w);
	for (int j = 0; j < c->size; j++) {
		while (!atomic_load(&s->ctl[j].joined)) {
			r = shm_idle(c, &w, j, "did not join the shared segment");
			if (r < 0)
				return r;
		}
		if (j != c->rank)
			s->pfd[j].fd = (int)syscall(SYS_pidfd_open, s->ctl[j].pid, 0);
	}
	shm_unlink(s->name);
	return 0;
}

static void shm_abort(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);
	int none = -1;

	if (s && s->hdr && atomic_compare_exchange_strong(&s->hdr->abort_rank, &none, c->rank))
		atomic_store(&s->hdr->abort_by, c->rank);
}

static void shm_destroy(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);

	if (!s)
		return;
	if (s->base && c->rank == 0)
		shm_unlink(s->name); /* when init failed before everyone joined */
	if (s->base)
		munmap(s->base, s->len);
	for (int j = 0; s->pfd && j < c->size; j++)
		if (s->pfd[j].fd >= 0)
			close(s->pfd[j].fd);
	free(s->pfd);
	free(s);
	c->shm_priv = NULL;
}

const struct bcoll_tp bcoll_tp_shm = {
	.name = "shm",
	.sendrecv = shm_sendrecv,
	.allreduce = shm_allreduce,
	.reduce_scatter = shm_reduce_scatter,
	.allgather = shm_allgather,
	.broadcast = shm_broadcast,
	.abort = shm_abort,
	.destroy = shm_destroy,
};

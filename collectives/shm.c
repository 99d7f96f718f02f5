/* shm — libbcoll's shared-memory transport for ranks on one host. Rank 0
 * creates one /dev/shm segment per communicator before the rendezvous and
 * publishes its name in its address; every rank maps it, claims its control
 * block (a second claim of the same rank is an error) and, once all have
 * joined, the name is unlinked so nothing is left behind. The segment holds:
 *   - per-rank control blocks: pid, a phase counter, the posted descriptor;
 *   - one single-producer ring per ordered pair of ranks (the sendrecv verb
 *     the generic algorithms use, a byte stream with wire headers like tcp);
 *   - two banks of per-rank slots for the direct allreduce: each rank copies
 *     its chunk in, reduces its own segment reading every peer's slot in
 *     place, and copies every reduced segment out: two copies per byte.
 * Waits spin briefly (not at all when ranks outnumber CPUs), yield for a
 * few ms, then sleep; each has a deadline and checks
 * the peers' pidfds (a dead rank, zombies included) and the shared abort
 * word, so a dead, frozen or aborting rank fails every survivor, named.
 */
#include "bcoll_int.h"

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

#define SHM_MAGIC 0x62736d31u
#define SHM_MB_BYTES (256u << 10)
#define SHM_SLOTS_TOTAL (64u << 20) /* both banks of every rank's slot */
#define SHM_SMALL 16384		    /* bytes reduced by every rank in one phase */
#define SHM_BLOCK 8192		    /* elements reduced while hot in cache */
#define SHM_YIELD_MS 4		    /* yield, not sleep, for this long in a wait */
#define CL 64

struct shm_ctl {
	atomic_uint joined;
	int32_t pid;
	atomic_ullong arrive;
	struct {
		uint64_t seq;
		struct bcoll_desc d;
	} post[2]; /* by bank: rewritten only once every rank has read it */
	atomic_llong beat;     /* bcoll_now_ms() of this rank's last idle step */
	atomic_int waiting_on; /* and the rank it was waiting on then */
	char pad[2 * CL - 96];
};
_Static_assert(sizeof(struct shm_ctl) == 2 * CL, "shm_ctl is two cache lines");

struct shm_mb {
	atomic_ullong head;
	char pad1[CL - 8];
	atomic_ullong tail;
	char pad2[CL - 8];
};

struct shm_hdr {
	uint32_t magic, size;
	atomic_int abort_rank, abort_by;
	uint64_t slot_bytes;
	char pad[4096 - 24];
};

struct shm {
	char name[64];
	char *base;
	size_t len, slot_bytes;
	struct shm_hdr *hdr;
	struct shm_ctl *ctl;
	char *mb;	    /* size*size boxes of sizeof(struct shm_mb) + SHM_MB_BYTES */
	char *slots;	    /* 2 banks x size slots */
	uint64_t nchunk;    /* chunks of direct allreduce so far: picks the bank */
	unsigned spin_max;  /* busy polls before yielding: few when ranks > CPUs */
	struct pollfd *pfd; /* pidfds of peers, -1 when unavailable */
};

struct shm_waiter {
	unsigned spins;
	int64_t start, deadline, next_check;
};

static struct shm *shm_of(struct bcoll_comm *c)
{
	return c->shm_priv;
}

static size_t box_bytes(void)
{
	return sizeof(struct shm_mb) + SHM_MB_BYTES;
}

static struct shm_mb *box(struct shm *s, int size, int from, int to)
{
	return (struct shm_mb *)(s->mb + ((size_t)from * size + to) * box_bytes());
}

static char *slot(struct shm *s, int size, int rank, int bank)
{
	return s->slots + ((size_t)bank * size + rank) * s->slot_bytes;
}

static size_t seg_len(int size, size_t *slot_bytes)
{
	size_t sb = SHM_SLOTS_TOTAL / 2 / size / 4096 * 4096;

	if (sb > (8u << 20))
		sb = 8u << 20;
	*slot_bytes = sb;
	return sizeof(struct shm_hdr) + (size_t)size * sizeof(struct shm_ctl) +
	       (size_t)size * size * box_bytes() + 2 * (size_t)size * sb;
}

static void shm_layout(struct shm *s, int size)
{
	s->hdr = (struct shm_hdr *)s->base;
	s->ctl = (struct shm_ctl *)(s->base + sizeof(struct shm_hdr));
	s->mb = (char *)(s->ctl + size);
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

static void waiter_init(struct bcoll_comm *c, struct shm_waiter *w)
{
	w->spins = 0;
	w->start = bcoll_now_ms();
	w->deadline = w->start + c->timeout_ms;
	w->next_check = 0;
}

/* One idle step while waiting on `peer`: spin, yield, then sleep; fails on
 * abort (ours or shared), a dead peer or the deadline. */
static int shm_idle(struct bcoll_comm *c, struct shm_waiter *w, int peer, const char *what)
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

	bcoll_wire_fill(c, &sh, slen);
	cursor_init(&cs, &sh, sbuf, to >= 0 ? slen : 0, to >= 0);
	cursor_init(&cr, &rh, NULL, 0, from >= 0);
	waiter_init(c, &w);
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
			waiter_init(c, &w);
			continue;
		}
		int e = cursor_left(&cr) ? shm_idle(c, &w, from, "sent nothing")
					 : shm_idle(c, &w, to, "took nothing");
		if (e < 0)
			return e;
	}
	return 0;
}

/* Arrives at the next phase and waits for every rank to arrive there. */
static int shm_phase(struct bcoll_comm *c)
{
	struct shm *s = shm_of(c);
	uint64_t me = atomic_fetch_add(&s->ctl[c->rank].arrive, 1) + 1;
	struct shm_waiter w;

	waiter_init(c, &w);
	for (int j = 0; j < c->size; j++) {
		while (atomic_load_explicit(&s->ctl[j].arrive, memory_order_acquire) < me) {
			int e = shm_idle(c, &w, j, "did not arrive");

			if (e < 0)
				return e;
		}
	}
	return 0;
}

/* After the first phase: every rank must have posted this descriptor. */
static int check_descs(struct bcoll_comm *c, int bank)
{
	struct shm *s = shm_of(c);

	for (int j = 0; j < c->size; j++) {
		__typeof__(s->ctl[j].post[0]) *p = &s->ctl[j].post[bank];

		if (p->seq != c->seq || memcmp(&p->d, &c->cur, sizeof(c->cur)))
			return bcoll_fail(c, -EPROTO, "rank %d is in collective #%llu (kind %u, "
					  "count %llu, %s, %s) but this rank is in #%llu (kind %u, "
					  "count %llu, %s, %s)", j, (unsigned long long)p->seq,
					  p->d.kind, (unsigned long long)p->d.count,
					  bcoll_dtype_name(p->d.dtype), bcoll_op_name(p->d.op),
					  (unsigned long long)c->seq, c->cur.kind,
					  (unsigned long long)c->cur.count,
					  bcoll_dtype_name(c->cur.dtype), bcoll_op_name(c->cur.op));
	}
	return 0;
}

/* Small messages in one phase: every rank reduces the whole vector from all
 * slots in rank order (so all get the same bits). This bank is written again
 * two chunks later, after a phase that every rank enters only once it has
 * read these slots. */
static int shm_allreduce_small(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			       enum bcoll_dtype dt, enum bcoll_op op)
{
	struct shm *s = shm_of(c);
	size_t bytes = count * bcoll_dtype_size(dt);
	int n = c->size, bank = s->nchunk++ & 1, e;

	memcpy(slot(s, n, c->rank, bank), send, bytes);
	e = shm_phase(c);
	if (e == 0)
		e = check_descs(c, bank);
	if (e < 0)
		return e;
	memcpy(recv, slot(s, n, 0, bank), bytes);
	for (int j = 1; j < n; j++)
		bcoll_reduce_buf(recv, slot(s, n, j, bank), count, dt, op);
	if (op == BCOLL_AVG)
		bcoll_divide(recv, count, dt, n);
	return 0;
}

/* Direct allreduce: copy in, reduce my segment from every slot, copy out. */
static int shm_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			 enum bcoll_dtype dt, enum bcoll_op op)
{
	struct shm *s = shm_of(c);
	size_t esz = bcoll_dtype_size(dt), per = s->slot_bytes / esz, off;
	int n = c->size, e, b0 = s->nchunk & 1;

	s->ctl[c->rank].post[b0].seq = c->seq;
	s->ctl[c->rank].post[b0].d = c->cur;
	if (count * esz <= SHM_SMALL)
		return shm_allreduce_small(c, send, recv, count, dt, op);
	for (off = 0; off < count || off == 0; off += per) {
		size_t cnt = count - off < per ? count - off : per, st, ln;
		int bank = s->nchunk++ & 1;
		char *mine = slot(s, n, c->rank, bank);

		memcpy(mine, (const char *)send + off * esz, cnt * esz);
		e = shm_phase(c);
		if (e == 0 && off == 0)
			e = check_descs(c, b0);
		if (e < 0)
			return e;
		bcoll_segment(cnt, n, c->rank, &st, &ln);
		for (size_t b = 0; b < ln; b += SHM_BLOCK) {
			size_t k = ln - b < SHM_BLOCK ? ln - b : SHM_BLOCK, at = (st + b) * esz;

			for (int j = 1; j < n; j++)
				bcoll_reduce_buf(mine + at, slot(s, n, (c->rank + j) % n, bank) + at,
						 k, dt, op);
			if (op == BCOLL_AVG)
				bcoll_divide(mine + at, k, dt, n);
		}
		e = shm_phase(c);
		if (e < 0)
			return e;
		for (int j = 0; j < n; j++) {
			bcoll_segment(cnt, n, j, &st, &ln);
			memcpy((char *)recv + (off + st) * esz, slot(s, n, j, bank) + st * esz,
			       ln * esz);
		}
		if (count == 0)
			break;
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
	waiter_init(c, &w);
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
	.abort = shm_abort,
	.destroy = shm_destroy,
};

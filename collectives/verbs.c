/* verbs.c — libbcoll's verbs transport: one RC queue pair per peer, written
 * against the libibverbs types; the setup calls go through a provider table
 * and the data path through ibv_post_send/ibv_post_recv/ibv_poll_cq.
 *
 * Providers: rdma-core (probed with ibv_get_device_list through dlopen; with
 * no device it returns NULL/ENOSYS and we say so) and libbnet over DPDK
 * net_memif: one memif per pair of ranks (the lower rank is the server, its
 * socket in BCOLL_VERBS_DIR, default /tmp), so a rank has size-1 ports and a
 * QP on each. EAL inits are chained over the tcp mesh (rank j starts after
 * every i < j), since a memif client does not retry a missing socket.
 *
 * sendrecv: the receiver registers its buffer (registration cache) and RDMA
 * WRITEs a clear-to-send (wire header, address, rkey, size, stamp) into its
 * slot of the sender's FIFO; the sender checks the header, RDMA WRITEs the data
 * in chunks (at most VB_INFLIGHT in flight), the last WITH IMMEDIATE carrying
 * the sequence number, which completes a posted receive at the receiver.
 *
 * Waiting: spin (yielding) a while, then sleep on this rank's futex bell,
 * which a peer rings after sending us frames (memif has no receive
 * interrupts). Faults: every wait watches every peer's link and the failure
 * notices peers WRITE into our notice row; a rank that fails tells all live
 * peers whom it blames, and at a deadline a peer that still acknowledges a
 * zero-length WRITE is waiting itself, so we wait once more for the notice
 * that names the rank really at fault: every survivor names the same rank.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "verbs_int.h"

/* Says whether rdma-core sees a device; msg gets the sentence for the log. */
int bcoll_verbs_rdma_core_probe(char *msg, size_t len)
{
	struct ibv_device **(*get)(int *);
	void (*put)(struct ibv_device **);
	struct ibv_device **l;
	void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
	int n = 0;

	if (!h) {
		snprintf(msg, len, "no RDMA device (libibverbs not installed)");
		return 0;
	}
	get = (struct ibv_device **(*)(int *))dlsym(h, "ibv_get_device_list");
	put = (void (*)(struct ibv_device **))dlsym(h, "ibv_free_device_list");
	errno = 0;
	l = get ? get(&n) : NULL;
	if (!l || !n)
		snprintf(msg, len, "no RDMA device (ibv_get_device_list: %s)",
			 l ? "0 devices" : strerror(errno ? errno : ENOSYS));
	else
		snprintf(msg, len, "%d RDMA device(s), but the rdma-core provider is not "
			 "supported yet", n);
	if (l && put)
		put(l);
	dlclose(h);
	return l && n ? n : 0;
}

static struct vb_state *vs(struct bcoll_comm *c)
{
	return c->verbs_priv;
}

/* The MR covering [p, p+len), registering (and evicting the LRU) on a miss. */
static struct ibv_mr *vb_reg(struct bcoll_comm *c, void *p, size_t len)
{
	struct vb_state *s = vs(c);
	struct vb_cache *lru = &s->cache[0];

	for (int i = 0; i < VB_CACHE; i++) {
		struct vb_cache *e = &s->cache[i];

		if (e->mr && (char *)p >= e->addr && (char *)p + len <= e->addr + e->len) {
			e->used = ++s->tick;
			return e->mr;
		}
		if (!e->mr || e->used < lru->used)
			lru = e;
	}
	if (lru->mr)
		s->pv->dereg_mr(lru->mr);
	lru->mr = s->pv->reg_mr(s->pd, p, len ? len : 1, IBV_ACCESS_LOCAL_WRITE |
			       IBV_ACCESS_REMOTE_WRITE);
	lru->addr = p;
	lru->len = len ? len : 1;
	lru->used = ++s->tick;
	return lru->mr;
}

static int vb_write(struct bcoll_comm *c, int peer, int kind, const void *buf, uint32_t len,
		    uint32_t lkey, uint64_t va, uint32_t rkey, int imm, uint32_t immv)
{
	struct ibv_sge sge = { (uintptr_t)buf, len, lkey };
	struct ibv_send_wr wr = { 0 }, *bad;

	wr.wr_id = (uint64_t)peer << 8 | (uint64_t)kind;
	wr.sg_list = &sge;
	wr.num_sge = len ? 1 : 0;
	wr.opcode = imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.imm_data = htonl(immv);
	wr.wr.rdma.remote_addr = va;
	wr.wr.rdma.rkey = rkey;
	return -ibv_post_send(vs(c)->peers[peer].qp, &wr, &bad);
}

int vb_post_recv(struct bcoll_comm *c, int peer)
{
	struct ibv_recv_wr wr = { .wr_id = (uint64_t)peer << 8 | WR_RECV }, *bad;

	return -ibv_post_recv(vs(c)->peers[peer].qp, &wr, &bad);
}

struct vb_op {
	int to, from;
	const char *sbuf;
	size_t slen, off;
	uint32_t lkey, rkey;
	uint64_t va;
	int have_cts, inflight, send_done, recv_done, mismatch;
	int probe_peer, probe_ok, extended; /* the liveness probe at the deadline */
	int64_t probe_end;
};

/* Handles one completion; returns 0 or a failure naming the peer. */
static int vb_complete(struct bcoll_comm *c, struct vb_op *o, const struct ibv_wc *wc)
{
	int peer = (int)(wc->wr_id >> 8), kind = (int)(wc->wr_id & 0xff);

	if (kind == WR_PROBE || kind == WR_NOTICE) {
		if (kind == WR_PROBE && wc->status == IBV_WC_SUCCESS && peer == o->probe_peer)
			o->probe_ok = 1;
		return 0;
	}
	vs(c)->culprit = peer;
	if (wc->status != IBV_WC_SUCCESS)
		return bcoll_fail(c, -ECONNRESET, "rank %d: work request failed (ibv_wc_status %d)", peer,
				  (int)wc->status);
	if (kind == WR_DATA && peer == o->to)
		o->inflight--;
	if (kind != WR_RECV)
		return 0;
	if (vb_post_recv(c, peer) < 0)
		return bcoll_fail(c, -EIO, "rank %d: cannot post a receive", peer);
	if (peer != o->from || o->recv_done)
		return bcoll_fail(c, -EPROTO, "rank %d wrote without a clear-to-send", peer);
	if (ntohl(wc->imm_data) & VB_MISMATCH)
		return bcoll_fail(c, -EPROTO, "rank %d is in a different collective than this "
				  "rank's #%llu (see its error)", peer, (unsigned long long)c->seq);
	if ((ntohl(wc->imm_data) ^ (uint32_t)c->seq) & ~VB_MISMATCH)
		return bcoll_fail(c, -EPROTO, "rank %d completed a message of another collective",
				  peer);
	o->recv_done = 1;
	return 0;
}

/* Sends the next chunks once the receiver's clear-to-send is in our FIFO. */
static int vb_push(struct bcoll_comm *c, struct vb_op *o, int *busy)
{
	struct vb_state *s = vs(c);
	struct vb_peer *p = &s->peers[o->to];
	int r;

	if (!o->have_cts) {
		volatile struct vb_cts *k = &s->fifo[o->to][p->cts_seen % VB_FIFO];
		struct vb_cts cts;

		if (k->stamp != p->cts_seen + 1)
			return 0;
		memcpy(&cts, (const void *)k, sizeof(cts));
		p->cts_seen++;
		o->have_cts = 1;
		*busy = 1;
		o->va = cts.va;
		o->rkey = cts.rkey;
		r = bcoll_wire_check(c, &cts.w, o->to, o->slen);
		if (r < 0) {
			s->culprit = o->to;
			o->mismatch = 1;
			vb_write(c, o->to, WR_DATA, NULL, 0, 0, 0, 0, 1,
				 VB_MISMATCH | (uint32_t)c->seq);
			return r;
		}
		if (o->slen)
			o->lkey = vb_reg(c, (void *)o->sbuf, o->slen)->lkey;
	}
	while (!o->send_done && o->inflight < VB_INFLIGHT) {
		size_t n = o->slen - o->off < VB_CHUNK ? o->slen - o->off : VB_CHUNK;
		int last = o->off + n == o->slen;

		r = vb_write(c, o->to, WR_DATA, o->sbuf + o->off, (uint32_t)n, o->lkey,
			     o->va + o->off, o->rkey, last, (uint32_t)c->seq & ~VB_MISMATCH);
		if (r < 0)
			return bcoll_fail(c, r, "rank %d: posting a write failed", o->to);
		o->off += n;
		o->inflight++;
		o->send_done = last;
		*busy = 1;
	}
	return 0;
}

/* Prints libbnet's counters for each peer to stderr: after a failure with
 * BCOLL_VERBOSE, at destroy with BCOLL_VERBS_STATS. */
static void vb_dump_stats(struct bcoll_comm *c, const char *env)
{
	struct vb_state *s = vs(c);

	if (!getenv(env))
		return;
	for (int j = 0; j < c->size; j++) {
		struct bnet_qp *q = s->peers[j].qp ? bnet_ibv_qp(s->peers[j].qp) : NULL;
		struct bnet_stats *t = q ? bnet_qp_stats(q) : NULL;
		struct bnet_stats *ps;

		if (!t || !s->ports[s->peers[j].port])
			continue;
		ps = bnet_port_stats(s->ports[s->peers[j].port]);
		fprintf(stderr, "bcoll: rank %d -> %d: tx %llu rx %llu retx %llu timeouts %llu "
			"nak %llu/%llu ack %llu/%llu dup %llu oos %llu oow %llu badseq %llu "
			"badrkey %llu badlen %llu; port: oversize %llu short %llu icrc %llu "
			"wrongqpn %llu cts %llu/%llu\n", c->rank, j,
			(unsigned long long)t->tx_pkts, (unsigned long long)t->rx_pkts,
			(unsigned long long)t->retransmits, (unsigned long long)t->timeouts,
			(unsigned long long)t->naks_sent, (unsigned long long)t->naks_rcvd,
			(unsigned long long)t->acks_sent, (unsigned long long)t->acks_rcvd,
			(unsigned long long)t->dup_pkts, (unsigned long long)t->out_of_seq,
			(unsigned long long)t->out_of_window, (unsigned long long)t->bad_opcode_seq,
			(unsigned long long)t->bad_rkey, (unsigned long long)t->bad_len,
			(unsigned long long)ps->oversize, (unsigned long long)ps->short_pkts,
			(unsigned long long)ps->bad_icrc, (unsigned long long)ps->wrong_qpn,
			(unsigned long long)s->peers[j].cts_sent,
			(unsigned long long)s->peers[j].cts_seen);
	}
}

static int vb_sendrecv_once(struct bcoll_comm *c, int to, const void *sbuf, size_t slen,
			    int from, void *rbuf, size_t rlen);

/* Frames in and out on every QP so far: any change is progress, even when
 * no completion came (a long message arrives in many frames). */
static uint64_t vb_activity(struct vb_state *s, int size)
{
	uint64_t n = 0;

	for (int j = 0; j < size; j++) {
		struct bnet_qp *q = s->peers[j].qp ? bnet_ibv_qp(s->peers[j].qp) : NULL;

		if (q)
			n += bnet_qp_stats(q)->tx_pkts + bnet_qp_stats(q)->rx_pkts;
	}
	return n;
}

/* Wakes every peer that sleeps while frames we sent it wait in its ring. The
 * fence orders our ring writes before the look at its asleep flag; the sleeper
 * orders its flag before its last look at the ring (Dekker), so one of the
 * two always sees the other. */
static void vb_ring_bells(struct bcoll_comm *c, struct vb_state *s)
{
	if (!s->bells)
		return;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (int j = 0; j < c->size; j++) {
		struct bnet_qp *q = s->peers[j].qp ? bnet_ibv_qp(s->peers[j].qp) : NULL;
		uint64_t tx = q ? bnet_qp_stats(q)->tx_pkts : 0;

		if (tx == s->tx_seen[j])
			continue;
		s->tx_seen[j] = tx;
		if (__atomic_load_n(&s->bells[j].asleep, __ATOMIC_SEQ_CST)) {
			__atomic_fetch_add(&s->bells[j].seq, 1, __ATOMIC_SEQ_CST);
			syscall(SYS_futex, &s->bells[j].seq, FUTEX_WAKE, 1, NULL, NULL, 0);
		}
	}
}

/* Gives the CPU away while nothing arrives: yields for s->spin idle turns (a
 * peer sharing this core runs at once), then sleeps on this rank's bell until
 * a peer sends a frame or 1 ms passes (retransmit timers still run), so ranks
 * that outnumber cores, or a loaded host, are not starved by spinning ones. */
static void vb_idle(struct bcoll_comm *c, struct vb_state *s, unsigned idle)
{
	struct vb_bell *me;
	struct ibv_wc wc[1];
	uint32_t seq;

	if (!s->bells || idle < s->spin) {
		sched_yield();
		return;
	}
	me = &s->bells[c->rank];
	__atomic_store_n(&me->asleep, 1, __ATOMIC_SEQ_CST);
	seq = __atomic_load_n(&me->seq, __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* a last look, after the flag: poll without taking completions */
	if (ibv_poll_cq(s->cq, 0, wc) == 0 && vb_activity(s, c->size) == s->activity) {
		struct timespec ts = { 0, 1000000 };

		syscall(SYS_futex, &me->seq, FUTEX_WAIT, seq, &ts, NULL, 0);
	}
	__atomic_store_n(&me->asleep, 0, __ATOMIC_SEQ_CST);
}

/* Maps (creating when first) the host's bell file for this communicator. */
int vb_bells_map(struct bcoll_comm *c, struct vb_state *s, const char *path)
{
	size_t len = (size_t)c->size * sizeof(struct vb_bell);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	void *m;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) < 0) {
		close(fd);
		return -errno;
	}
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -errno;
	s->bells = m;
	return 0;
}

/* Tells every other live peer whom this rank's failure blames (an RDMA WRITE
 * into its notice slot), so ranks that wait on someone else fail at once
 * naming the same culprit; waits up to 200 ms for the writes to land. */
static void vb_tell_peers(struct bcoll_comm *c, struct vb_state *s)
{
	uint64_t *v = (uint64_t *)&s->out[c->size];
	int64_t end = bcoll_now_ms() + 200;
	int posted = 0, done = 0;
	struct ibv_wc wc[16];

	*v = VB_NOTICE_TAG | (uint64_t)(s->culprit + 1);
	for (int j = 0; j < c->size; j++) {
		struct vb_peer *p = &s->peers[j];
		uint64_t base = p->fifo_va - (uint64_t)c->rank * sizeof(*s->fifo);

		if (j == c->rank || j == s->culprit || !p->qp || p->qp->state == IBV_QPS_ERR)
			continue;
		if (vb_write(c, j, WR_NOTICE, v, sizeof(*v), s->out_mr->lkey,
			     base + (uint64_t)c->size * sizeof(*s->fifo) +
				     (uint64_t)c->rank * sizeof(*v), p->fifo_rkey, 0, 0) == 0)
			posted++;
	}
	while (done < posted && bcoll_now_ms() < end) {
		int n = ibv_poll_cq(s->cq, 16, wc);

		for (int i = 0; i < n; i++)
			done += (wc[i].wr_id & 0xff) == WR_NOTICE;
		vb_ring_bells(c, s);
		if (!n)
			sched_yield();
	}
}

static int vb_sendrecv(struct bcoll_comm *c, int to, const void *sbuf, size_t slen, int from,
		       void *rbuf, size_t rlen)
{
	struct vb_state *s = vs(c);
	int r;

	s->culprit = -1;
	r = vb_sendrecv_once(c, to, sbuf, slen, from, rbuf, rlen);
	if (r < 0) {
		s->failed = 1;
		if (s->culprit >= 0)
			vb_tell_peers(c, s);
		vb_dump_stats(c, "BCOLL_VERBOSE");
	}
	return r;
}

/* A failure any peer reported, or a peer whose link dropped: 0 or an error
 * naming the culprit. Notices first: a survivor that saw a rank die tells us
 * before its own exit drops its link, which must not be blamed. */
static int vb_check_peers(struct bcoll_comm *c, struct vb_state *s)
{
	for (int j = 0; j < c->size; j++) {
		uint64_t v = __atomic_load_n(&s->notice[j], __ATOMIC_ACQUIRE);
		int x = (int)(v & 0xffff) - 1;

		if ((v & ~0xffffull) != VB_NOTICE_TAG || x < 0 || x >= c->size)
			continue;
		s->culprit = x;
		if (x == c->rank)
			return bcoll_fail(c, -ECONNRESET, "rank %d blames this rank", j);
		return bcoll_fail(c, -ECONNRESET, "rank %d failed (as rank %d found)", x, j);
	}
	for (int j = 0; j < c->size; j++)
		if (j != c->rank && s->peers[j].qp->state == IBV_QPS_ERR) {
			s->culprit = j;
			return bcoll_fail(c, -ECONNRESET, "rank %d died (link down)", j);
		}
	return 0;
}

/* At the deadline: the awaited peer is to blame only if it does not even
 * acknowledge a zero-length write (frozen or gone); a peer that does is
 * itself waiting on someone, so wait once more for the notice that names
 * the rank really at fault. Returns 1 to keep waiting, or the error. */
static int vb_deadline(struct bcoll_comm *c, struct vb_state *s, struct vb_op *o, int peer,
		       int64_t *deadline)
{
	int64_t now = bcoll_now_ms();

	if (!o->extended && !o->probe_end && peer >= 0 &&
	    vb_write(c, peer, WR_PROBE, NULL, 0, 0, 0, 0, 0, 0) == 0) {
		o->probe_peer = peer;
		o->probe_end = now + (c->timeout_ms / 4 > 200 ? c->timeout_ms / 4 : 200);
		return 1;
	}
	if (o->probe_end && !o->probe_ok && now < o->probe_end)
		return 1;
	if (o->probe_ok && !o->extended) {
		o->extended = 1;
		*deadline = now + c->timeout_ms;
		return 1;
	}
	s->culprit = peer;
	return bcoll_fail(c, -ETIMEDOUT, "rank %d did not arrive within %d ms", peer,
			  c->timeout_ms);
}

static int vb_sendrecv_once(struct bcoll_comm *c, int to, const void *sbuf, size_t slen,
			    int from, void *rbuf, size_t rlen)
{
	struct vb_state *s = vs(c);
	struct vb_op o = { .to = to, .from = from, .sbuf = sbuf, .slen = slen, .probe_peer = -1 };
	int64_t deadline = bcoll_now_ms() + c->timeout_ms;
	struct ibv_wc wc[16];
	unsigned idle = 0;
	uint64_t act;
	int r;

	if (from >= 0) {
		struct vb_peer *p = &s->peers[from];
		struct vb_cts *k = &s->out[from];
		struct ibv_mr *mr = rlen ? vb_reg(c, rbuf, rlen) : NULL;

		if (rlen && !mr)
			return bcoll_fail(c, -ENOMEM, "cannot register %zu bytes", rlen);
		bcoll_wire_fill(c, &k->w, rlen);
		k->va = (uintptr_t)rbuf;
		k->rkey = mr ? mr->rkey : 0;
		k->stamp = ++p->cts_sent;
		r = vb_write(c, from, WR_CTS, k, sizeof(*k), s->out_mr->lkey,
			     p->fifo_va + ((k->stamp - 1) % VB_FIFO) * sizeof(*k), p->fifo_rkey, 0,
			     0);
		if (r < 0)
			return bcoll_fail(c, r, "rank %d: posting a clear-to-send failed", from);
	}
	o.send_done = to < 0;
	o.recv_done = from < 0;
	while (!o.send_done || o.inflight || !o.recv_done) {
		int busy = 0, n = ibv_poll_cq(s->cq, 16, wc);

		for (int i = 0; i < n; i++)
			if ((r = vb_complete(c, &o, &wc[i])) < 0)
				return r;
		if (to >= 0 && !o.send_done && (r = vb_push(c, &o, &busy)) < 0)
			return r;
		if (atomic_load(&c->aborted)) {
			s->culprit = c->rank;
			return bcoll_fail(c, -ECANCELED, "rank %d aborted", c->rank);
		}
		if ((r = vb_check_peers(c, s)) < 0)
			return r;
		if (bcoll_now_ms() > deadline &&
		    (r = vb_deadline(c, s, &o, !o.recv_done ? from : to, &deadline)) < 0)
			return r;
		vb_ring_bells(c, s);
		act = vb_activity(s, c->size);
		if (n || busy || act != s->activity)
			idle = 0;
		else
			vb_idle(c, s, ++idle);
		s->activity = act;
	}
	return 0;
}

static void vb_abort(struct bcoll_comm *c)
{
	atomic_store(&c->aborted, 1);
}

/* Orderly close: waits (polling, so peers' retransmits are still answered)
 * until every send of ours is acknowledged, then meets every peer over tcp,
 * so no rank stops its memif while a peer still waits for an ACK from it. */
static int vb_quiesce(struct bcoll_comm *c)
{
	struct vb_state *s = vs(c);
	int64_t deadline = bcoll_now_ms() + c->timeout_ms;
	struct ibv_wc wc[16];
	int busy = 1;

	while (busy && bcoll_now_ms() < deadline) {
		ibv_poll_cq(s->cq, 16, wc);
		busy = 0;
		for (int j = 0; j < c->size; j++) {
			struct bnet_qp *q = s->peers[j].qp ? bnet_ibv_qp(s->peers[j].qp) : NULL;

			if (q && bnet_qp_state(q) == BNET_QPS_RTS && bnet_qp_busy(q))
				busy = 1;
		}
		if (busy)
			sched_yield();
	}
	for (int k = 1; k < c->size; k++) {
		char a = 1, b = 0;

		if (bcoll_tp_tcp.sendrecv(c, (c->rank + k) % c->size, &a, 1,
					  (c->rank - k + c->size) % c->size, &b, 1) < 0)
			return -1;
	}
	return 0;
}

/* Stops the memif ports. The memif PMD's interrupt thread crashes when a
 * peer's disconnect arrives while this process closes another port, so after
 * an orderly quiesce the ranks close in turn along a token over tcp: rank r
 * waits for rank r-1, then for the links of lower ranks (closed already) to
 * drop, closes all its ports and passes the token on; higher ranks wait idle
 * meanwhile. After a failure no such order exists (peers die or leave when
 * they like), so the ports stay open until the process exits: returns 0 then,
 * and the EAL is not cleaned up either. */
static int vb_close_ports(struct bcoll_comm *c, int orderly)
{
	struct vb_state *s = vs(c);
	char a = 1, b = 0;

	if (!orderly)
		return 0;
	if (c->rank > 0 && bcoll_tp_tcp.sendrecv(c, -1, NULL, 0, c->rank - 1, &b, 1) < 0)
		return 0;
	for (int j = 0; j < c->rank; j++)
		bnet_port_wait_down(s->ports[s->peers[j].port], 2000000000ull);
	for (int i = 0; i < s->n_ports; i++) {
		bnet_port_stop(s->ports[i]);
		s->ports[i] = NULL;
	}
	if (c->rank + 1 < c->size)
		bcoll_tp_tcp.sendrecv(c, c->rank + 1, &a, 1, -1, NULL, 0);
	return 1;
}

static void vb_destroy(struct bcoll_comm *c)
{
	struct vb_state *s = vs(c);
	int closed;

	if (!s)
		return;
	if (s->n_ports)
		vb_dump_stats(c, "BCOLL_VERBS_STATS");
	closed = vb_close_ports(c, c->tp == &bcoll_tp_verbs && !s->failed &&
				       !atomic_load(&c->aborted) && vb_quiesce(c) == 0);
	for (int i = 0; i < c->size && s->peers; i++)
		if (s->peers[i].qp)
			s->pv->destroy_qp(s->peers[i].qp);
	for (int i = 0; i < VB_CACHE; i++)
		if (s->cache[i].mr)
			s->pv->dereg_mr(s->cache[i].mr);
	if (s->fifo_mr)
		s->pv->dereg_mr(s->fifo_mr);
	if (s->out_mr)
		s->pv->dereg_mr(s->out_mr);
	if (s->cq)
		s->pv->destroy_cq(s->cq);
	if (s->pd)
		s->pv->dealloc_pd(s->pd);
	if (s->ctx)
		s->pv->close(s->ctx);
	for (int i = 0; i < VB_MAX_PEERS; i++)
		if (s->sock[i][0])
			unlink(s->sock[i]);
	if (s->n_ports && closed)
		bnet_eal_cleanup();
	if (s->bells)
		munmap(s->bells, (size_t)c->size * sizeof(struct vb_bell));
	free(s->tx_seen);
	free(s->fifo);
	free(s->out);
	free(s->peers);
	free(s);
	c->verbs_priv = NULL;
}

const struct bcoll_tp bcoll_tp_verbs = {
	.name = "verbs",
	.sendrecv = vb_sendrecv,
	.abort = vb_abort,
	.destroy = vb_destroy,
};

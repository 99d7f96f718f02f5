/* test-bnet-qp.c — the RC queue pair between two in-memory endpoints over a
 * link that encodes every packet to a real RoCEv2 frame (ICRC included) and,
 * with a seeded RNG, drops, duplicates, reorders and corrupts them. Checks:
 * byte-exact SEND / WRITE / WRITE WITH IMM of 0 B..1 MiB across MTU edges,
 * nothing delivered twice, go-back-N recovery, coalesced ACKs, the send
 * window, and the error paths (bad rkey, short receive, dead peer, wrong QPN,
 * PSN far outside the window), and a fuzz of the whole receive path.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "bnet.h"
#include "t.h"

#define NSLOT 4096
#define PMTU 1024
#define SLOT (PMTU + 128)

struct link {
	uint8_t (*slot)[SLOT];
	uint32_t len[NSLOT];
	uint32_t head, tail;
	int loss, dup, reorder, corrupt; /* per mille */
	uint64_t rng;
	int full; /* refuse every packet: a dead peer */
};

struct ep {
	struct bnet_pd pd;
	struct bnet_cq scq, rcq;
	struct bnet_qp *qp;
	struct link out;
	struct bnet_stats dec; /* decode errors seen by this endpoint */
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int link_tx(void *arg, struct bnet_hdr *h, const void *payload, uint32_t len)
{
	struct link *l = arg;
	uint8_t buf[SLOT];
	int n, copies = 1;

	if (l->full || l->tail - l->head >= NSLOT - 1)
		return -EAGAIN;
	h->src_ip = 0x0a000001;
	h->dst_ip = 0x0a000002;
	n = bnet_pkt_encode(buf, sizeof(buf), h, payload, len);
	if (n < 0)
		return n;
	if ((int)(rnd(&l->rng) % 1000) < l->loss)
		return 0;
	if ((int)(rnd(&l->rng) % 1000) < l->dup)
		copies = 2;
	while (copies-- && l->tail - l->head < NSLOT) {
		uint32_t i = l->tail++ % NSLOT;

		memcpy(l->slot[i], buf, (size_t)n);
		l->len[i] = (uint32_t)n;
		if ((int)(rnd(&l->rng) % 1000) < l->corrupt)
			l->slot[i][rnd(&l->rng) % (uint32_t)n] ^= 0x10;
		if (l->tail - l->head > 1 && (int)(rnd(&l->rng) % 1000) < l->reorder) {
			uint32_t span = l->tail - l->head - 1, j;
			uint8_t tmp[SLOT];
			uint32_t tl;

			j = (l->tail - 2 - (uint32_t)(rnd(&l->rng) % (span < 8 ? span : 8))) % NSLOT;
			memcpy(tmp, l->slot[i], SLOT);
			memcpy(l->slot[i], l->slot[j], SLOT);
			memcpy(l->slot[j], tmp, SLOT);
			tl = l->len[i];
			l->len[i] = l->len[j];
			l->len[j] = tl;
		}
	}
	return 0;
}

static void ep_init(struct ep *e, uint32_t qpn, uint32_t peer, uint32_t psn, uint32_t peer_psn,
		    uint64_t seed, uint32_t window)
{
	struct bnet_qp_attr a = {
		.qpn = qpn, .dest_qpn = peer, .sq_psn = psn, .rq_psn = peer_psn, .pmtu = PMTU,
		.max_send_wr = 64, .max_recv_wr = 64, .window = window, .ack_every = 16,
		.timeout_ns = 200000, .retry_cnt = 7,
	};

	memset(e, 0, sizeof(*e));
	bnet_pd_init(&e->pd, (uint32_t)seed);
	bnet_cq_init(&e->scq, 256);
	bnet_cq_init(&e->rcq, 256);
	e->out.slot = calloc(NSLOT, SLOT);
	e->out.rng = seed | 1;
	a.pd = &e->pd;
	a.send_cq = &e->scq;
	a.recv_cq = &e->rcq;
	a.tx = link_tx;
	a.tx_arg = &e->out;
	if (bnet_qp_create(&a, &e->qp))
		abort();
}

static void ep_fini(struct ep *e)
{
	bnet_qp_destroy(e->qp);
	bnet_cq_destroy(&e->scq);
	bnet_cq_destroy(&e->rcq);
	free(e->out.slot);
}

/* Moves up to n frames from src's link into dst. */
static void deliver(struct ep *src, struct ep *dst, int n, uint64_t now)
{
	struct link *l = &src->out;
	struct bnet_hdr h;

	while (n-- && l->head != l->tail) {
		uint32_t i = l->head++ % NSLOT;
		int r = bnet_pkt_decode(l->slot[i], l->len[i], &h);

		if (r < 0)
			bnet_stats_count_decode(&dst->dec, r);
		else
			bnet_qp_input(dst->qp, &h, now);
	}
}

/* Runs both endpoints until done() or the step limit; returns the time. */
static uint64_t run(struct ep *a, struct ep *b, uint64_t now, int steps,
		    int (*done)(struct ep *, struct ep *))
{
	for (int s = 0; s < steps && !done(a, b); s++) {
		now += 1000;
		bnet_qp_progress(a->qp, now, 32);
		bnet_qp_progress(b->qp, now, 32);
		deliver(a, b, 48, now);
		deliver(b, a, 48, now);
	}
	return now;
}

static int idle(struct ep *a, struct ep *b)
{
	return !bnet_qp_busy(a->qp) && !bnet_qp_busy(b->qp);
}

static void pattern(uint8_t *p, size_t n, uint32_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rnd(&s) >> 24);
}

static const uint32_t sizes[] = { 0, 1, 3, PMTU - 1, PMTU, PMTU + 1, 3 * PMTU, 100000, 1 << 20 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* A sends every size as SEND, SEND_IMM, WRITE and WRITE_IMM to B. */
static void transfer(int loss, int dup, int reorder, int corrupt, uint64_t seed)
{
	struct ep a, b;
	size_t total = 0;
	uint8_t *src, *dst, *rbuf;
	struct bnet_mr *mr;
	struct bnet_wc wc[64];
	int n_send_wc = 0, n_recv_wc = 0, n_sends = 0, bad = 0;
	uint64_t now = 0;

	for (size_t i = 0; i < NSIZES; i++)
		total += sizes[i];
	ep_init(&a, 0x11, 0x22, 100, 0xfffff0, seed, 64); /* B's PSNs wrap at 2^24 */
	ep_init(&b, 0x22, 0x11, 0xfffff0, 100, seed * 7, 64);
	a.out.loss = b.out.loss = loss;
	a.out.dup = b.out.dup = dup;
	a.out.reorder = b.out.reorder = reorder;
	a.out.corrupt = b.out.corrupt = corrupt;
	src = malloc(total);
	dst = calloc(1, 2 * total);
	rbuf = calloc(NSIZES * 2, sizes[NSIZES - 1] + 16);
	pattern(src, total, (uint32_t)seed);
	T_EQ_INT(bnet_reg_mr(&b.pd, dst, 2 * total, &mr), 0);

	for (int kind = 0; kind < 4; kind++) {
		size_t off = 0;

		for (size_t i = 0; i < NSIZES; i++) {
			struct bnet_send_wr wr = {
				.wr_id = kind * 100 + i, .op = (enum bnet_send_op)kind,
				.addr = src + off, .len = sizes[i], .rkey = mr->rkey,
				.remote_va = (uintptr_t)dst + (kind == 3 ? total : 0) + off,
				.imm = 0x1000 + kind * 100 + (uint32_t)i,
			};
			size_t slot = (size_t)(kind * NSIZES + i) % (NSIZES * 2);

			if (kind < 2) {
				T_EQ_INT(bnet_post_recv(b.qp, slot, rbuf + slot * (sizes[NSIZES - 1] + 16),
							sizes[NSIZES - 1] + 16), 0);
				n_sends++;
			} else if (kind == 3) {
				T_EQ_INT(bnet_post_recv(b.qp, 999, NULL, 0), 0);
			}
			T_EQ_INT(bnet_post_send(a.qp, &wr), 0);
			off += sizes[i];
		}
		now = run(&a, &b, now, 400000, idle);
		for (int k; (k = bnet_cq_poll(&a.scq, wc, 64)) > 0;)
			for (int j = 0; j < k; j++, n_send_wc++)
				if (wc[j].status != BNET_WC_SUCCESS || wc[j].wr_id != (uint64_t)(kind * 100) + (uint64_t)(n_send_wc % NSIZES))
					bad++;
		for (int k; (k = bnet_cq_poll(&b.rcq, wc, 64)) > 0;)
			for (int j = 0; j < k; j++, n_recv_wc++) {
				size_t i = (size_t)n_recv_wc % NSIZES, o = 0;

				for (size_t q = 0; q < i; q++)
					o += sizes[q];
				if (wc[j].status != BNET_WC_SUCCESS)
					bad++;
				else if (kind < 2 && (wc[j].byte_len != sizes[i] ||
						      memcmp(rbuf + wc[j].wr_id * (sizes[NSIZES - 1] + 16),
							     src + o, sizes[i])))
					bad++;
				else if ((kind == 1 || kind == 3) &&
					 (!wc[j].has_imm || wc[j].imm != 0x1000 + kind * 100 + i))
					bad++;
			}
	}
	T_EQ_INT(bad, 0);
	T_EQ_INT(n_send_wc, 4 * NSIZES);
	T_EQ_INT(n_recv_wc, 3 * NSIZES); /* SEND, SEND_IMM, WRITE_IMM: once each */
	T_CHECK(!memcmp(dst, src, total), "WRITE data differs");
	T_CHECK(!memcmp(dst + total, src, total), "WRITE_IMM data differs");
	T_EQ_INT(bnet_qp_state(a.qp), BNET_QPS_RTS);
	T_EQ_INT(bnet_qp_state(b.qp), BNET_QPS_RTS);
	if (loss || corrupt)
		T_CHECK(bnet_qp_stats(a.qp)->retransmits > 0, "no retransmits under loss");
	if (corrupt)
		T_CHECK(b.dec.bad_icrc > 0, "corruption not caught by the ICRC");
	struct bnet_stats *sa = bnet_qp_stats(a.qp), *sb = bnet_qp_stats(b.qp);
	printf("  loss %d dup %d reorder %d corrupt %d permille: %llu pkts, %llu retransmits, "
	       "%llu timeouts, %llu NAKs, %llu dups, %llu acks sent, %llu bad icrc, sim %.1f ms\n",
	       loss, dup, reorder, corrupt, (unsigned long long)sa->tx_pkts,
	       (unsigned long long)sa->retransmits, (unsigned long long)sa->timeouts,
	       (unsigned long long)sb->naks_sent, (unsigned long long)sb->dup_pkts,
	       (unsigned long long)sb->acks_sent, (unsigned long long)b.dec.bad_icrc, now / 1e6);
	free(src);
	free(dst);
	free(rbuf);
	ep_fini(&a);
	ep_fini(&b);
}

static void test_lossless(void)
{
	transfer(0, 0, 0, 0, 1);
}

static void test_lossy(void)
{
	for (uint64_t seed = 1; seed <= 3; seed++)
		transfer(50, 50, 50, 10, seed);
}

static void test_heavy_loss(void)
{
	transfer(200, 100, 200, 20, 42);
}

/* Without ACKs, the requester sends exactly one window, then retries and
 * gives up with RETRY_EXC after retry_cnt timeouts. */
static void test_window_and_dead_peer(void)
{
	static uint8_t buf[64 * PMTU];
	struct bnet_send_wr wr = { .wr_id = 7, .op = BNET_WR_WRITE, .addr = buf, .len = sizeof(buf),
				   .remote_va = 0x1000, .rkey = 1 };
	struct ep a;
	struct bnet_wc wc[4];
	uint64_t now = 0;
	int n;

	ep_init(&a, 0x11, 0x22, 0, 0, 5, 16);
	T_EQ_INT(bnet_post_send(a.qp, &wr), 0);
	n = bnet_qp_progress(a.qp, now, 1000);
	T_EQ_INT(n, 16);
	T_EQ_INT(bnet_qp_progress(a.qp, now + 1, 1000), 0);
	for (int i = 0; i < 100 && bnet_qp_state(a.qp) == BNET_QPS_RTS; i++) {
		now += 100000;
		bnet_qp_progress(a.qp, now, 1000);
	}
	T_EQ_INT(bnet_qp_state(a.qp), BNET_QPS_ERR);
	T_EQ_INT(bnet_qp_stats(a.qp)->timeouts, 8);
	T_CHECK(now <= 8 * 200000 + 200000, "gave up after %llu ns", (unsigned long long)now);
	n = bnet_cq_poll(&a.scq, wc, 4);
	T_EQ_INT(n, 1);
	T_EQ_INT(wc[0].status, BNET_WC_RETRY_EXC_ERR);
	T_EQ_INT(bnet_post_send(a.qp, &wr), -EINVAL);
	ep_fini(&a);
}

static int a_done(struct ep *a, struct ep *b)
{
	(void)b;
	return !bnet_qp_busy(a->qp);
}

static void test_errors(void)
{
	static uint8_t buf[4 * PMTU], dst[4 * PMTU], small[100];
	struct ep a, b;
	struct bnet_mr *mr;
	struct bnet_wc wc[4];
	struct bnet_hdr h = { 0 };

	ep_init(&a, 0x11, 0x22, 0, 0, 9, 64);
	ep_init(&b, 0x22, 0x11, 0, 0, 10, 64);
	bnet_reg_mr(&b.pd, dst, sizeof(dst), &mr);
	/* WRITE past the end of the MR: REM_ACCESS_ERR, nothing written */
	struct bnet_send_wr wr = { .wr_id = 1, .op = BNET_WR_WRITE, .addr = buf, .len = sizeof(buf),
				   .remote_va = (uintptr_t)dst + 1, .rkey = mr->rkey };
	memset(buf, 0xab, sizeof(buf));
	T_EQ_INT(bnet_post_send(a.qp, &wr), 0);
	run(&a, &b, 0, 1000, a_done);
	T_EQ_INT(bnet_cq_poll(&a.scq, wc, 4), 1);
	T_EQ_INT(wc[0].status, BNET_WC_REM_ACCESS_ERR);
	T_EQ_INT(bnet_qp_stats(b.qp)->bad_rkey, 1);
	T_EQ_INT(dst[1], 0);
	ep_fini(&a);
	ep_fini(&b);

	/* SEND larger than the posted receive: LOC_LEN_ERR there, error here */
	ep_init(&a, 0x11, 0x22, 0, 0, 11, 64);
	ep_init(&b, 0x22, 0x11, 0, 0, 12, 64);
	/* wrong QPN and a PSN far outside the window: dropped and counted */
	struct bnet_stats before = *bnet_qp_stats(b.qp);
	h.opcode = BNET_OP_SEND_ONLY;
	h.dqpn = 0x33;
	bnet_qp_input(b.qp, &h, 0);
	h.dqpn = 0x22;
	h.psn = 0x800000;
	bnet_qp_input(b.qp, &h, 0);
	T_EQ_INT(bnet_qp_stats(b.qp)->wrong_qpn, before.wrong_qpn + 1);
	T_EQ_INT(bnet_qp_stats(b.qp)->out_of_window, before.out_of_window + 1);
	bnet_post_recv(b.qp, 5, small, sizeof(small));
	wr.op = BNET_WR_SEND;
	T_EQ_INT(bnet_post_send(a.qp, &wr), 0);
	run(&a, &b, 0, 1000, a_done);
	T_EQ_INT(bnet_cq_poll(&b.rcq, wc, 4), 1);
	T_EQ_INT(wc[0].status, BNET_WC_LOC_LEN_ERR);
	T_EQ_INT(bnet_cq_poll(&a.scq, wc, 4), 1);
	T_EQ_INT(wc[0].status, BNET_WC_REM_INV_REQ_ERR);

	T_EQ_INT(bnet_post_send(a.qp, &wr), -EINVAL); /* a QP in error takes nothing */
	ep_fini(&a);
	ep_fini(&b);
}

/* The attributes ep_init gives a QP (to make a fresh one in its place). */
static const struct bnet_qp_attr *ep_attr(struct ep *e)
{
	static struct bnet_qp_attr a;

	a = (struct bnet_qp_attr){
		.qpn = bnet_qp_num(e->qp), .dest_qpn = 0x11, .sq_psn = 0, .rq_psn = 1000,
		.pmtu = PMTU, .max_send_wr = 64, .max_recv_wr = 64, .window = 64, .ack_every = 16,
		.timeout_ns = 200000, .retry_cnt = 7, .pd = &e->pd, .send_cq = &e->scq,
		.recv_cq = &e->rcq, .tx = link_tx, .tx_arg = &e->out,
	};
	return &a;
}

/* The whole receive path under hostile frames: random opcodes, QPNs, PSNs
 * around and far from the expected one, rkeys, addresses and DMA lengths in
 * and around a registered region, payload lengths from 0 past the path MTU,
 * and posted receives of random sizes, all encoded with a valid ICRC, decoded
 * and fed to a responder QP. ASan watches the exact-size heap buffers that
 * writes may target; every decoded frame must be counted (rx or wrong QPN),
 * no completion may claim more bytes than its buffer, and the QP must never
 * write outside the registered region. */
static void test_fuzz_responder(void)
{
	static const uint8_t ops[] = {
		BNET_OP_SEND_FIRST, BNET_OP_SEND_MIDDLE, BNET_OP_SEND_LAST, BNET_OP_SEND_LAST_IMM,
		BNET_OP_SEND_ONLY, BNET_OP_SEND_ONLY_IMM, BNET_OP_WRITE_FIRST, BNET_OP_WRITE_MIDDLE,
		BNET_OP_WRITE_LAST, BNET_OP_WRITE_LAST_IMM, BNET_OP_WRITE_ONLY,
		BNET_OP_WRITE_ONLY_IMM, BNET_OP_ACK,
	};
	const size_t region = 8 * PMTU, rbuf_len = 3 * PMTU;
	uint8_t *dst = malloc(region), *rbuf = malloc(rbuf_len), *payload = calloc(1, 2 * PMTU);
	uint8_t frame[2 * PMTU + 128];
	uint64_t rng = 0x9e3779b97f4a7c15ull, decoded = 0, frames = 0, counted = 0, fatal = 0;
	uint32_t epsn = 1000;
	struct bnet_qp_attr a;
	struct bnet_stats sum = { 0 }, *st;
	struct bnet_wc wc[64];
	struct bnet_mr *mr;
	struct ep b;

	ep_init(&b, 0x22, 0x11, 0, 1000, 77, 64);
	bnet_reg_mr(&b.pd, dst, region, &mr);
	for (int it = 0; it < 50000; it++) {
		struct bnet_hdr h = { .src_ip = 0x0a000001, .dst_ip = 0x0a000002, .pkey = 0xffff };
		uint64_t r = rnd(&rng);
		struct bnet_hdr g;
		int n;

		h.opcode = r % 16 ? ops[(r >> 4) % sizeof(ops)] : (uint8_t)(r >> 8);
		h.dqpn = (r >> 16) % 32 ? 0x22 : (uint32_t)(r >> 20) & BNET_QPN_MASK;
		/* mostly the expected PSN (learnt from the QP's ACKs), else near it,
		 * else anywhere */
		h.psn = (r >> 28) % 4 < 2 ? epsn
			: (r >> 28) % 4 == 2 ? (epsn + (uint32_t)(rnd(&rng) % 64) - 32) & BNET_PSN_MASK
					     : (uint32_t)rnd(&rng) & BNET_PSN_MASK;
		r = rnd(&rng);
		h.rkey = r % 4 ? mr->rkey : (uint32_t)(r >> 2);
		h.va = (uintptr_t)dst + (r >> 8) % (region + 2 * PMTU) - PMTU;
		h.dma_len = (r >> 24) % 3 ? (uint32_t)((r >> 32) % (region + PMTU))
					  : (uint32_t)(r >> 32);
		h.imm = (uint32_t)r;
		h.ackreq = r & 1;
		r = rnd(&rng);
		uint32_t len = r % 4 ? PMTU : (uint32_t)((r >> 8) % (PMTU + 300));
		if (r % 64 == 0 && b.out.tail - b.out.head < NSLOT / 2)
			bnet_post_recv(b.qp, it, rbuf, (uint32_t)((r >> 20) % rbuf_len));
		n = bnet_pkt_encode(frame, sizeof(frame), &h, payload, len);
		if (n < 0)
			continue;
		frames++;
		if (bnet_pkt_decode(frame, (size_t)n, &g) < 0)
			continue;
		decoded++;
		bnet_qp_input(b.qp, &g, (uint64_t)it * 1000);
		bnet_qp_progress(b.qp, (uint64_t)it * 1000, 16);
		if (bnet_qp_state(b.qp) == BNET_QPS_ERR) { /* a fatal NAK: a fresh QP */
			st = bnet_qp_stats(b.qp);
			counted += st->rx_pkts + st->wrong_qpn;
			sum.dup_pkts += st->dup_pkts, sum.out_of_seq += st->out_of_seq;
			sum.out_of_window += st->out_of_window, sum.bad_rkey += st->bad_rkey;
			sum.bad_opcode_seq += st->bad_opcode_seq, sum.bad_len += st->bad_len;
			sum.wrong_qpn += st->wrong_qpn;
			fatal++;
			a = *ep_attr(&b);
			bnet_qp_destroy(b.qp);
			if (bnet_qp_create(&a, &b.qp) < 0)
				abort();
			epsn = 1000;
		}
		for (; b.out.head != b.out.tail; b.out.head++) { /* ACKs, NAKs: read, dropped */
			uint32_t i = b.out.head % NSLOT;

			if (bnet_pkt_decode(b.out.slot[i], b.out.len[i], &g) == 0 &&
			    g.opcode == BNET_OP_ACK)
				epsn = g.syndrome >> 5 ? g.psn : (g.psn + 1) & BNET_PSN_MASK;
		}
		for (int k; (k = bnet_cq_poll(&b.rcq, wc, 64)) > 0;)
			for (int i = 0; i < k; i++)
				T_CHECK(wc[i].status != BNET_WC_SUCCESS || wc[i].opcode ==
						BNET_WC_RECV_WRITE_IMM || wc[i].byte_len <= rbuf_len,
					"a receive completed with %u bytes", wc[i].byte_len);
	}
	st = bnet_qp_stats(b.qp);
	counted += st->rx_pkts + st->wrong_qpn;
	T_EQ_INT(counted, decoded);
	T_CHECK(sum.bad_rkey && sum.out_of_window && sum.wrong_qpn && sum.bad_len &&
			sum.bad_opcode_seq && sum.out_of_seq,
		"the fuzz missed a drop reason");
	printf("fuzz responder: %llu frames, %llu decoded; dropped in QPs before a fatal NAK: "
	       "%llu dup, %llu out of seq, %llu out of window, %llu bad opcode order, %llu bad "
	       "rkey, %llu bad len, %llu wrong qpn; %llu fatal NAKs (fresh QP each)\n",
	       (unsigned long long)frames, (unsigned long long)decoded,
	       (unsigned long long)sum.dup_pkts, (unsigned long long)sum.out_of_seq,
	       (unsigned long long)sum.out_of_window, (unsigned long long)sum.bad_opcode_seq,
	       (unsigned long long)sum.bad_rkey, (unsigned long long)sum.bad_len,
	       (unsigned long long)sum.wrong_qpn, (unsigned long long)fatal);
	ep_fini(&b);
	free(dst);
	free(rbuf);
	free(payload);
}

/* A zero-length WRITE WITH IMM with no rkey (a receiver with nothing to
 * receive hands out none) completes at both ends; a non-empty one with rkey 0
 * is still refused. */
static void test_zero_len_no_rkey(void)
{
	struct ep a, b;
	struct bnet_wc wc[4];
	struct bnet_send_wr wr = { .wr_id = 3, .op = BNET_WR_WRITE_IMM, .imm = 0x1234 };

	ep_init(&a, 0x11, 0x22, 0, 0, 13, 64);
	ep_init(&b, 0x22, 0x11, 0, 0, 14, 64);
	T_EQ_INT(bnet_post_recv(b.qp, 9, NULL, 0), 0);
	T_EQ_INT(bnet_post_send(a.qp, &wr), 0);
	run(&a, &b, 0, 1000, a_done);
	T_EQ_INT(bnet_cq_poll(&a.scq, wc, 4), 1);
	T_EQ_INT(wc[0].status, BNET_WC_SUCCESS);
	T_EQ_INT(bnet_cq_poll(&b.rcq, wc, 4), 1);
	T_EQ_INT(wc[0].status, BNET_WC_SUCCESS);
	T_EQ_INT(wc[0].imm, 0x1234);
	T_EQ_INT(wc[0].byte_len, 0);
	T_EQ_INT(bnet_qp_stats(b.qp)->bad_rkey, 0);
	ep_fini(&a);
	ep_fini(&b);
}

int main(void)
{
	t_run("bnet_qp_lossless", test_lossless);
	t_run("bnet_qp_lossy_5pct", test_lossy);
	t_run("bnet_qp_heavy_loss", test_heavy_loss);
	t_run("bnet_qp_window_dead_peer", test_window_and_dead_peer);
	t_run("bnet_qp_errors", test_errors);
	t_run("bnet_qp_zero_len_no_rkey", test_zero_len_no_rkey);
	t_run("bnet_qp_fuzz_responder", test_fuzz_responder);
	return t_done();
}

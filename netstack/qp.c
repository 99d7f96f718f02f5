/* qp.c — the RoCEv2 reliable-connection queue pair, without I/O.
 *
 * Requester: work requests get their PSNs when posted, are cut into
 * path-MTU packets as the window allows, and complete when a (coalesced) ACK
 * covers their last PSN; a NAK (PSN sequence error) or a timeout rewinds the
 * transmit cursor to the oldest unacknowledged PSN (go-back-N). After a
 * timeout only that packet goes out, with AckReq, until an ACK moves (or a
 * second timeout): a spurious timeout (a peer that was merely descheduled)
 * then costs one packet, not the whole window again.
 * Responder: accepts only the expected PSN, so nothing is delivered twice;
 * duplicates are re-acknowledged, a gap is NAKed once, PSNs far outside the
 * window and malformed requests (opcode order, lengths, rkey/range) are
 * dropped and counted. Rings are sized at create; the data path allocates
 * nothing. The caller passes the time in, so tests are deterministic.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bnet.h"

#define MAX_WINDOW (1u << 22)

struct swqe {
	struct bnet_send_wr wr;
	uint32_t first_psn, npkts;
};

struct rwqe {
	uint64_t wr_id;
	uint8_t *addr;
	uint32_t len;
};

enum in_msg { IN_NONE, IN_SEND, IN_WRITE };

struct bnet_qp {
	struct bnet_qp_attr a;
	enum bnet_qp_state state;
	struct bnet_stats st;

	/* requester */
	struct swqe *sq;
	uint32_t sq_head, sq_tail;	/* ring indices, free-running */
	uint32_t sq_cur, cur_pkt;	/* the packet next_psn names */
	uint32_t next_psn, una_psn, end_psn; /* end: first PSN not yet assigned */
	uint64_t last_progress;
	uint32_t retries, since_ackreq;
	int probing;	/* after a timeout: one packet out until an ACK moves una */

	/* responder */
	struct rwqe *rq;
	uint32_t rq_head, rq_tail;
	uint32_t epsn, msn, unacked_rx;
	int ack_pending, nak_sent;
	uint8_t nak_pending; /* a NAK syndrome to send, or 0 */
	enum in_msg in;
	uint8_t *dst;
	uint32_t off, msg_len;
};

/* Signed distance a - b in the 24-bit PSN space. */
static int32_t psn_diff(uint32_t a, uint32_t b)
{
	return (int32_t)((a - b) << 8) >> 8;
}

static uint32_t psn_add(uint32_t a, uint32_t n)
{
	return (a + n) & BNET_PSN_MASK;
}

void bnet_pd_init(struct bnet_pd *pd, uint32_t key_seed)
{
	memset(pd, 0, sizeof(*pd));
	pd->next_key = key_seed | 1;
}

int bnet_reg_mr(struct bnet_pd *pd, void *addr, size_t len, struct bnet_mr **out)
{
	struct bnet_mr *mr = NULL;

	if (!addr && len)
		return -EINVAL;
	for (int i = 0; i < pd->n_mrs; i++)
		if (!pd->mrs[i].rkey) {
			mr = &pd->mrs[i];
			break;
		}
	if (!mr) {
		if (pd->n_mrs == BNET_MAX_MRS)
			return -ENOSPC;
		mr = &pd->mrs[pd->n_mrs++];
	}
	mr->addr = addr;
	mr->len = len;
	pd->next_key += 0x100; /* low byte stays: keys never repeat soon */
	mr->lkey = mr->rkey = pd->next_key;
	*out = mr;
	return 0;
}

int bnet_dereg_mr(struct bnet_pd *pd, struct bnet_mr *mr)
{
	if (mr < pd->mrs || mr >= pd->mrs + pd->n_mrs || !mr->rkey)
		return -EINVAL;
	memset(mr, 0, sizeof(*mr));
	return 0;
}

/* The MR that rkey names, when [va, va+len) lies inside it. */
static struct bnet_mr *mr_check(struct bnet_pd *pd, uint32_t rkey, uint64_t va, uint32_t len)
{
	for (int i = 0; i < pd->n_mrs; i++) {
		struct bnet_mr *mr = &pd->mrs[i];
		uint64_t base = (uintptr_t)mr->addr;

		if (mr->rkey != rkey || !rkey)
			continue;
		if (va < base || va - base > mr->len || len > mr->len - (va - base))
			return NULL;
		return mr;
	}
	return NULL;
}

int bnet_cq_init(struct bnet_cq *cq, uint32_t cap)
{
	memset(cq, 0, sizeof(*cq));
	if (!cap || cap > BNET_CQ_MAX)
		return -EINVAL;
	cq->ring = calloc(cap, sizeof(*cq->ring));
	if (!cq->ring)
		return -ENOMEM;
	cq->cap = cap;
	return 0;
}

void bnet_cq_destroy(struct bnet_cq *cq)
{
	if (!cq)
		return;
	free(cq->ring);
	cq->ring = NULL;
}

static void cq_push(struct bnet_cq *cq, const struct bnet_wc *wc)
{
	if (cq->tail - cq->head == cq->cap) {
		cq->overflowed = 1;
		return;
	}
	cq->ring[cq->tail++ % cq->cap] = *wc;
}

int bnet_cq_poll(struct bnet_cq *cq, struct bnet_wc *wc, int n)
{
	int i = 0;

	while (i < n && cq->head != cq->tail)
		wc[i++] = cq->ring[cq->head++ % cq->cap];
	return i;
}

int bnet_qp_create(const struct bnet_qp_attr *attr, struct bnet_qp **out)
{
	const struct bnet_qp_attr *a = attr;
	struct bnet_qp *qp;

	if (a->pmtu < 256 || a->pmtu > BNET_MAX_PMTU || (a->pmtu & (a->pmtu - 1)))
		return -EINVAL;
	if (!a->max_send_wr || a->max_send_wr > 65536 || !a->max_recv_wr ||
	    a->max_recv_wr > 65536 || !a->window || a->window > MAX_WINDOW)
		return -EINVAL;
	if (!a->tx || !a->pd || !a->send_cq || !a->recv_cq || !a->timeout_ns)
		return -EINVAL;
	qp = calloc(1, sizeof(*qp));
	if (!qp)
		return -ENOMEM;
	qp->sq = calloc(a->max_send_wr, sizeof(*qp->sq));
	qp->rq = calloc(a->max_recv_wr, sizeof(*qp->rq));
	if (!qp->sq || !qp->rq) {
		bnet_qp_destroy(qp);
		return -ENOMEM;
	}
	qp->a = *a;
	if (!qp->a.ack_every)
		qp->a.ack_every = 1;
	qp->next_psn = qp->una_psn = qp->end_psn = a->sq_psn & BNET_PSN_MASK;
	qp->epsn = a->rq_psn & BNET_PSN_MASK;
	qp->state = BNET_QPS_RTS;
	*out = qp;
	return 0;
}

void bnet_qp_destroy(struct bnet_qp *qp)
{
	if (!qp)
		return;
	free(qp->sq);
	free(qp->rq);
	free(qp);
}

enum bnet_qp_state bnet_qp_state(const struct bnet_qp *qp)
{
	return qp->state;
}

int bnet_qp_busy(const struct bnet_qp *qp)
{
	return qp->sq_head != qp->sq_tail;
}

uint32_t bnet_qp_num(const struct bnet_qp *qp)
{
	return qp->a.qpn;
}

struct bnet_stats *bnet_qp_stats(struct bnet_qp *qp)
{
	return &qp->st;
}

/* Moves the QP to error: the first send WQE gets status, the rest are flushed. */
static void qp_fail(struct bnet_qp *qp, enum bnet_wc_status status)
{
	struct bnet_wc wc = { 0 };

	if (qp->state == BNET_QPS_ERR)
		return;
	qp->state = BNET_QPS_ERR;
	for (; qp->sq_head != qp->sq_tail; qp->sq_head++) {
		struct swqe *w = &qp->sq[qp->sq_head % qp->a.max_send_wr];

		wc.wr_id = w->wr.wr_id;
		wc.status = status;
		wc.opcode = w->wr.op >= BNET_WR_WRITE ? BNET_WC_WRITE : BNET_WC_SEND;
		cq_push(qp->a.send_cq, &wc);
		status = BNET_WC_FLUSH_ERR;
	}
	for (; qp->rq_head != qp->rq_tail; qp->rq_head++) {
		wc.wr_id = qp->rq[qp->rq_head % qp->a.max_recv_wr].wr_id;
		wc.status = BNET_WC_FLUSH_ERR;
		wc.opcode = BNET_WC_RECV;
		cq_push(qp->a.recv_cq, &wc);
	}
}

int bnet_post_send(struct bnet_qp *qp, const struct bnet_send_wr *wr)
{
	struct swqe *w;

	if (qp->state != BNET_QPS_RTS)
		return -EINVAL;
	if (wr->op > BNET_WR_WRITE_IMM || wr->len > BNET_MAX_MSG || (!wr->addr && wr->len))
		return -EINVAL;
	if (qp->sq_tail - qp->sq_head == qp->a.max_send_wr)
		return -ENOMEM;
	w = &qp->sq[qp->sq_tail % qp->a.max_send_wr];
	w->wr = *wr;
	w->npkts = wr->len ? (wr->len + qp->a.pmtu - 1) / qp->a.pmtu : 1;
	w->first_psn = qp->end_psn;
	qp->end_psn = psn_add(qp->end_psn, w->npkts);
	qp->sq_tail++;
	return 0;
}

int bnet_post_recv(struct bnet_qp *qp, uint64_t wr_id, void *addr, uint32_t len)
{
	struct rwqe *w;

	if (qp->state != BNET_QPS_RTS || (!addr && len) || len > BNET_MAX_MSG)
		return -EINVAL;
	if (qp->rq_tail - qp->rq_head == qp->a.max_recv_wr)
		return -ENOMEM;
	w = &qp->rq[qp->rq_tail++ % qp->a.max_recv_wr];
	w->wr_id = wr_id;
	w->addr = addr;
	w->len = len;
	return 0;
}

static int emit(struct bnet_qp *qp, struct bnet_hdr *h, const void *payload, uint32_t len)
{
	h->dqpn = qp->a.dest_qpn;
	h->pkey = 0xffff;
	h->src_port = (uint16_t)(0xc000 | (qp->a.qpn & 0x3fff));
	qp->st.tx_pkts++;
	qp->st.tx_bytes += len;
	return qp->a.tx(qp->a.tx_arg, h, payload, len);
}

/* Sends an ACK or NAK; < 0 when the link had no room (try again later). */
static int send_aeth(struct bnet_qp *qp, uint8_t syndrome, uint32_t psn)
{
	struct bnet_hdr h = { .opcode = BNET_OP_ACK, .syndrome = syndrome, .psn = psn,
			      .msn = qp->msn & 0xffffff };

	return emit(qp, &h, NULL, 0);
}

/* Points the transmit cursor at PSN psn (which lies in [una, end]). */
static void rewind_to(struct bnet_qp *qp, uint32_t psn)
{
	uint32_t i;

	qp->next_psn = psn;
	for (i = qp->sq_head; i != qp->sq_tail; i++) {
		struct swqe *w = &qp->sq[i % qp->a.max_send_wr];
		int32_t d = psn_diff(psn, w->first_psn);

		if (d >= 0 && (uint32_t)d < w->npkts) {
			qp->sq_cur = i;
			qp->cur_pkt = (uint32_t)d;
			return;
		}
	}
	qp->sq_cur = qp->sq_tail;
	qp->cur_pkt = 0;
}

/* Completes every WQE whose last PSN is at or before psn. */
static void ack_upto(struct bnet_qp *qp, uint32_t psn, uint64_t now)
{
	struct bnet_wc wc = { 0 };

	while (qp->sq_head != qp->sq_tail) {
		struct swqe *w = &qp->sq[qp->sq_head % qp->a.max_send_wr];

		if (psn_diff(psn_add(w->first_psn, w->npkts - 1), psn) > 0)
			break;
		wc.wr_id = w->wr.wr_id;
		wc.opcode = w->wr.op >= BNET_WR_WRITE ? BNET_WC_WRITE : BNET_WC_SEND;
		wc.byte_len = w->wr.len;
		cq_push(qp->a.send_cq, &wc);
		qp->sq_head++;
	}
	if (psn_diff(psn_add(psn, 1), qp->una_psn) > 0) {
		qp->una_psn = psn_add(psn, 1);
		qp->last_progress = now;
		qp->retries = 0;
		qp->probing = 0;
	}
	if (psn_diff(qp->next_psn, qp->una_psn) < 0)
		rewind_to(qp, qp->una_psn);
}

/* Requester side: an ACK or NAK arrived. */
static void rx_ack(struct bnet_qp *qp, const struct bnet_hdr *h, uint64_t now)
{
	uint8_t kind = h->syndrome >> 5;

	qp->st.acks_rcvd++;
	/* an ACK for a PSN we never sent is bogus; one for an old PSN is stale */
	if (psn_diff(h->psn, qp->end_psn) >= 0) {
		qp->st.out_of_window++;
		return;
	}
	if (psn_diff(h->psn, psn_add(qp->una_psn, BNET_PSN_MASK)) < 0)
		return;
	if (kind == 0) {
		ack_upto(qp, h->psn, now);
		return;
	}
	if (kind == 3 && h->syndrome == BNET_AETH_NAK_PSN_SEQ) {
		qp->st.naks_rcvd++;
		ack_upto(qp, psn_add(h->psn, BNET_PSN_MASK), now);
		if (psn_diff(h->psn, qp->una_psn) == 0 && psn_diff(qp->next_psn, h->psn) > 0) {
			qp->st.retransmits++;
			rewind_to(qp, h->psn);
		}
		qp->probing = 0; /* the NAK says where the responder is */
		return;
	}
	if (kind == 1) /* RNR NAK: we never send one; wait for the timeout */
		return;
	qp->st.naks_rcvd++;
	ack_upto(qp, psn_add(h->psn, BNET_PSN_MASK), now);
	qp_fail(qp, h->syndrome == BNET_AETH_NAK_REM_ACCESS ? BNET_WC_REM_ACCESS_ERR
							     : BNET_WC_REM_INV_REQ_ERR);
}

/* Checks that op may follow what the responder is in the middle of, and that
 * the payload length suits its place in the message. */
static int req_valid(struct bnet_qp *qp, const struct bnet_hdr *h)
{
	uint8_t op = h->opcode;
	int first = op == BNET_OP_SEND_FIRST || op == BNET_OP_WRITE_FIRST;
	int middle = op == BNET_OP_SEND_MIDDLE || op == BNET_OP_WRITE_MIDDLE;
	int only = op == BNET_OP_SEND_ONLY || op == BNET_OP_SEND_ONLY_IMM ||
		   op == BNET_OP_WRITE_ONLY || op == BNET_OP_WRITE_ONLY_IMM;
	int is_send = op <= BNET_OP_SEND_ONLY_IMM;

	if (first || only) {
		if (qp->in != IN_NONE)
			return -EPROTO;
	} else if (qp->in != (is_send ? IN_SEND : IN_WRITE)) {
		return -EPROTO;
	}
	if ((first || middle) && h->payload_len != qp->a.pmtu)
		return -EMSGSIZE;
	if (!first && !middle && !only && (!h->payload_len || h->payload_len > qp->a.pmtu))
		return -EMSGSIZE;
	if (only && h->payload_len > qp->a.pmtu)
		return -EMSGSIZE;
	return 0;
}

static void deliver(struct bnet_qp *qp, enum bnet_wc_opcode op, const struct bnet_hdr *h, int imm)
{
	struct rwqe *w = &qp->rq[qp->rq_head++ % qp->a.max_recv_wr];
	struct bnet_wc wc = { .wr_id = w->wr_id, .opcode = op, .byte_len = qp->off,
			      .imm = h->imm, .has_imm = imm };

	cq_push(qp->a.recv_cq, &wc);
}

/* Responder side: one request packet with the expected PSN. Returns 0 when it
 * was consumed, or a NAK syndrome, or -EAGAIN to drop it without a NAK. */
static int rx_req(struct bnet_qp *qp, const struct bnet_hdr *h)
{
	uint8_t op = h->opcode;
	int is_send = op <= BNET_OP_SEND_ONLY_IMM;
	int last = op == BNET_OP_SEND_LAST || op == BNET_OP_SEND_LAST_IMM ||
		   op == BNET_OP_SEND_ONLY || op == BNET_OP_SEND_ONLY_IMM ||
		   op == BNET_OP_WRITE_LAST || op == BNET_OP_WRITE_LAST_IMM ||
		   op == BNET_OP_WRITE_ONLY || op == BNET_OP_WRITE_ONLY_IMM;
	int imm = op == BNET_OP_SEND_LAST_IMM || op == BNET_OP_SEND_ONLY_IMM ||
		  op == BNET_OP_WRITE_LAST_IMM || op == BNET_OP_WRITE_ONLY_IMM;
	int need_rwqe = is_send || imm;
	struct bnet_mr *mr;
	int r = req_valid(qp, h);

	if (r == -EPROTO) {
		qp->st.bad_opcode_seq++;
		return BNET_AETH_NAK_INV_REQ;
	}
	if (r < 0) {
		qp->st.bad_len++;
		return BNET_AETH_NAK_INV_REQ;
	}
	/* no receive posted: drop, the requester retries after its timeout */
	if (need_rwqe && qp->rq_head == qp->rq_tail && (is_send ? qp->in == IN_NONE : last))
		return -EAGAIN;

	if (qp->in == IN_NONE) {
		qp->off = 0;
		if (is_send) {
			struct rwqe *w = &qp->rq[qp->rq_head % qp->a.max_recv_wr];

			qp->dst = w->addr;
			qp->msg_len = w->len;
		} else {
			if (h->dma_len > BNET_MAX_MSG) {
				qp->st.bad_len++;
				return BNET_AETH_NAK_INV_REQ;
			}
			/* a zero-length write touches no memory: no R_Key check
			 * (IBA 9.7.4.1.1), as a receiver with nothing to
			 * receive may hand out no key */
			mr = h->dma_len ? mr_check(qp->a.pd, h->rkey, h->va, h->dma_len) : NULL;
			if (!mr && h->dma_len) {
				qp->st.bad_rkey++;
				return BNET_AETH_NAK_REM_ACCESS;
			}
			qp->dst = (uint8_t *)(uintptr_t)h->va;
			qp->msg_len = h->dma_len;
		}
	}
	if (h->payload_len > qp->msg_len - qp->off ||
	    (!is_send && last && qp->off + h->payload_len != qp->msg_len)) {
		qp->st.bad_len++;
		if (is_send) {
			struct bnet_wc wc = { .wr_id = qp->rq[qp->rq_head % qp->a.max_recv_wr].wr_id,
					      .status = BNET_WC_LOC_LEN_ERR, .opcode = BNET_WC_RECV };

			qp->rq_head++;
			cq_push(qp->a.recv_cq, &wc);
		}
		qp->in = IN_NONE;
		return BNET_AETH_NAK_INV_REQ;
	}
	if (h->payload_len) /* never for a zero-length write (dst unchecked) */
		memcpy(qp->dst + qp->off, h->payload, h->payload_len);
	qp->off += h->payload_len;
	qp->st.rx_payload += h->payload_len;
	qp->in = last ? IN_NONE : is_send ? IN_SEND : IN_WRITE;
	if (last) {
		qp->msn++;
		if (is_send)
			deliver(qp, BNET_WC_RECV, h, imm);
		else if (imm)
			deliver(qp, BNET_WC_RECV_WRITE_IMM, h, 1);
	}
	return 0;
}

void bnet_qp_input(struct bnet_qp *qp, const struct bnet_hdr *h, uint64_t now)
{
	int32_t d;
	int r;

	if (h->dqpn != qp->a.qpn) {
		qp->st.wrong_qpn++;
		return;
	}
	qp->st.rx_pkts++;
	if (qp->state != BNET_QPS_RTS)
		return;
	if (h->opcode == BNET_OP_ACK) {
		rx_ack(qp, h, now);
		return;
	}
	d = psn_diff(h->psn, qp->epsn);
	if (d < -(int32_t)MAX_WINDOW || d > (int32_t)MAX_WINDOW) {
		qp->st.out_of_window++;
		return;
	}
	if (d < 0) {
		qp->st.dup_pkts++;
		qp->ack_pending = 1;
		return;
	}
	if (d > 0) {
		qp->st.out_of_seq++;
		if (!qp->nak_sent && !qp->nak_pending) {
			qp->nak_pending = BNET_AETH_NAK_PSN_SEQ;
			qp->nak_sent = 1;
		}
		return;
	}
	r = rx_req(qp, h);
	if (r == -EAGAIN)
		return;
	if (r > 0) {
		qp->nak_pending = (uint8_t)r;
		qp->nak_sent = 1;
		return;
	}
	qp->epsn = psn_add(qp->epsn, 1);
	qp->nak_sent = 0;
	if (h->ackreq || ++qp->unacked_rx >= qp->a.ack_every)
		qp->ack_pending = 1;
}

/* Emits the packet the transmit cursor names and advances the cursor. */
static int send_one(struct bnet_qp *qp, uint64_t now)
{
	struct swqe *w = &qp->sq[qp->sq_cur % qp->a.max_send_wr];
	uint32_t k = qp->cur_pkt, off = k * qp->a.pmtu;
	uint32_t len = w->wr.len - off < qp->a.pmtu ? w->wr.len - off : qp->a.pmtu;
	int is_write = w->wr.op >= BNET_WR_WRITE;
	int imm = w->wr.op == BNET_WR_SEND_IMM || w->wr.op == BNET_WR_WRITE_IMM;
	struct bnet_hdr h = { .psn = qp->next_psn };
	uint8_t base = is_write ? BNET_OP_WRITE_FIRST : BNET_OP_SEND_FIRST;

	if (w->npkts == 1)
		h.opcode = base + 4 + imm;
	else if (k == 0)
		h.opcode = base;
	else if (k + 1 < w->npkts)
		h.opcode = base + 1;
	else
		h.opcode = base + 2 + imm;
	if (is_write && k == 0) {
		h.va = w->wr.remote_va;
		h.rkey = w->wr.rkey;
		h.dma_len = w->wr.len;
	}
	h.imm = w->wr.imm;
	if (qp->una_psn == qp->next_psn)
		qp->last_progress = now; /* the timer starts with the first packet out */
	if (k + 1 == w->npkts || ++qp->since_ackreq >= qp->a.window / 4 + 1 || qp->probing) {
		h.ackreq = 1;
		qp->since_ackreq = 0;
	}
	if (emit(qp, &h, (const uint8_t *)w->wr.addr + off, len) < 0)
		return -EAGAIN; /* link full: try the same packet again later */
	qp->next_psn = psn_add(qp->next_psn, 1);
	if (++qp->cur_pkt == w->npkts) {
		qp->sq_cur++;
		qp->cur_pkt = 0;
	}
	return 0;
}

int bnet_qp_progress(struct bnet_qp *qp, uint64_t now, uint32_t budget)
{
	int n = 0;

	if (qp->state != BNET_QPS_RTS)
		return 0;
	/* when the link is full, a NAK or ACK stays pending for the next call */
	if (qp->nak_pending && send_aeth(qp, qp->nak_pending, qp->epsn) == 0) {
		uint8_t syn = qp->nak_pending;

		qp->st.naks_sent++;
		qp->nak_pending = 0;
		qp->ack_pending = 0;
		qp->unacked_rx = 0;
		n++;
		if (syn != BNET_AETH_NAK_PSN_SEQ) { /* a fatal NAK ends the connection */
			qp_fail(qp, BNET_WC_REM_INV_REQ_ERR);
			return n;
		}
	} else if (!qp->nak_pending && qp->ack_pending &&
		   send_aeth(qp, BNET_AETH_ACK | 0x1f, psn_add(qp->epsn, BNET_PSN_MASK)) == 0) {
		qp->st.acks_sent++;
		qp->ack_pending = 0;
		qp->unacked_rx = 0;
		n++;
	}
	if (qp->una_psn != qp->next_psn && now - qp->last_progress >= qp->a.timeout_ns) {
		qp->st.timeouts++;
		if (++qp->retries > qp->a.retry_cnt) {
			qp_fail(qp, BNET_WC_RETRY_EXC_ERR);
			return n;
		}
		qp->st.retransmits++;
		qp->last_progress = now;
		rewind_to(qp, qp->una_psn);
		/* first timeout in a row: resend only the oldest packet, asking
		 * for an ACK; when the timeout was spurious (a descheduled
		 * peer), its ACK covers the whole window and nothing else is
		 * sent twice. A second one in a row resends the window. */
		qp->probing = qp->retries == 1;
	}
	while ((uint32_t)n < budget && qp->next_psn != qp->end_psn &&
	       (uint32_t)psn_diff(qp->next_psn, qp->una_psn) < qp->a.window &&
	       (!qp->probing || qp->next_psn == qp->una_psn)) {
		if (send_one(qp, now) < 0)
			break;
		n++;
	}
	return n;
}

/* verbs.c — libbnet behind the libibverbs types (see bnet_verbs.h). Each ibv
 * object embeds the libibverbs struct first and libbnet's state after it.
 * ibv_poll_cq polls every port of the context (receive, dispatch, let QPs
 * send), then copies completions out; a QP whose port lost its link is
 * marked IBV_QPS_ERR in ibv_qp.state. No allocation on the data path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnet_verbs.h"

struct bctx {
	struct ibv_context ctx;
	struct ibv_device dev;
	struct bnet_port *ports[BNET_IBV_MAX_PORTS];
	int n_ports;
	uint32_t next_qpn;
	struct bqp *qps[64]; /* at RTS, to mark those of a dead port */
	int n_qps;
};

struct bpd {
	struct ibv_pd pd;
	struct bnet_pd bpd;
};

struct bmr {
	struct ibv_mr mr;
	struct bnet_mr *bmr;
	struct bpd *pd;
};

struct bqp;

struct bcq {
	struct ibv_cq cq;
	struct bnet_cq bcq;
};

struct bqp {
	struct ibv_qp qp;
	struct ibv_qp_init_attr init;
	struct bnet_qp_attr a;
	struct bnet_qp *bqp;
	int port;
};

static struct bctx *to_ctx(struct ibv_context *c)
{
	return (struct bctx *)c;
}

/* Drives every live port once; marks QPs of a dead port as in error. */
static void ctx_progress(struct bctx *x)
{
	for (int i = 0; i < x->n_ports; i++)
		if (x->ports[i] && !bnet_port_dead(x->ports[i]))
			bnet_port_poll(x->ports[i]);
	for (int i = 0; i < x->n_qps; i++)
		if (bnet_port_dead(x->ports[x->qps[i]->port]) ||
		    bnet_qp_state(x->qps[i]->bqp) == BNET_QPS_ERR)
			x->qps[i]->qp.state = IBV_QPS_ERR;
}

static enum ibv_wc_status map_status(enum bnet_wc_status s)
{
	switch (s) {
	case BNET_WC_SUCCESS: return IBV_WC_SUCCESS;
	case BNET_WC_LOC_LEN_ERR: return IBV_WC_LOC_LEN_ERR;
	case BNET_WC_REM_ACCESS_ERR: return IBV_WC_REM_ACCESS_ERR;
	case BNET_WC_REM_INV_REQ_ERR: return IBV_WC_REM_INV_REQ_ERR;
	case BNET_WC_RETRY_EXC_ERR: return IBV_WC_RETRY_EXC_ERR;
	default: return IBV_WC_WR_FLUSH_ERR;
	}
}

static enum ibv_wc_opcode map_op(enum bnet_wc_opcode o)
{
	switch (o) {
	case BNET_WC_SEND: return IBV_WC_SEND;
	case BNET_WC_WRITE: return IBV_WC_RDMA_WRITE;
	case BNET_WC_RECV: return IBV_WC_RECV;
	default: return IBV_WC_RECV_RDMA_WITH_IMM;
	}
}

static int op_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	struct bcq *q = (struct bcq *)cq;
	struct bnet_wc b[16];
	int got = 0;

	ctx_progress(to_ctx(cq->context));
	while (got < n) {
		int k = bnet_cq_poll(&q->bcq, b, n - got < 16 ? n - got : 16);

		if (k <= 0)
			break;
		for (int i = 0; i < k; i++, got++) {
			memset(&wc[got], 0, sizeof(wc[got]));
			wc[got].wr_id = b[i].wr_id;
			wc[got].status = map_status(b[i].status);
			wc[got].opcode = map_op(b[i].opcode);
			wc[got].byte_len = b[i].byte_len;
			if (b[i].has_imm) {
				wc[got].wc_flags = IBV_WC_WITH_IMM;
				wc[got].imm_data = htonl(b[i].imm);
			}
		}
	}
	return got;
}

static int op_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	struct bqp *q = (struct bqp *)qp;

	for (; wr; wr = wr->next) {
		struct bnet_send_wr b = { .wr_id = wr->wr_id };
		int r;

		if (!q->bqp || qp->state != IBV_QPS_RTS || wr->num_sge > 1) {
			r = -EINVAL;
			goto out_bad;
		}
		switch (wr->opcode) {
		case IBV_WR_RDMA_WRITE: b.op = BNET_WR_WRITE; break;
		case IBV_WR_RDMA_WRITE_WITH_IMM: b.op = BNET_WR_WRITE_IMM; break;
		case IBV_WR_SEND: b.op = BNET_WR_SEND; break;
		case IBV_WR_SEND_WITH_IMM: b.op = BNET_WR_SEND_IMM; break;
		default: r = -EOPNOTSUPP; goto out_bad;
		}
		if (wr->num_sge == 1) {
			b.addr = (const void *)(uintptr_t)wr->sg_list[0].addr;
			b.len = wr->sg_list[0].length;
		}
		b.remote_va = wr->wr.rdma.remote_addr;
		b.rkey = wr->wr.rdma.rkey;
		b.imm = ntohl(wr->imm_data);
		r = bnet_post_send(q->bqp, &b);
		if (r < 0)
			goto out_bad;
		continue;
out_bad:
		*bad = wr;
		return -r;
	}
	return 0;
}

static int op_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	struct bqp *q = (struct bqp *)qp;

	for (; wr; wr = wr->next) {
		void *addr = NULL;
		uint32_t len = 0;
		int r = -EINVAL;

		if (q->bqp && wr->num_sge <= 1) {
			if (wr->num_sge == 1) {
				addr = (void *)(uintptr_t)wr->sg_list[0].addr;
				len = wr->sg_list[0].length;
			}
			r = bnet_post_recv(q->bqp, wr->wr_id, addr, len);
		}
		if (r < 0) {
			*bad = wr;
			return -r;
		}
	}
	return 0;
}

struct ibv_context *bnet_ibv_open(struct bnet_port **ports, int n_ports)
{
	struct bctx *x;

	if (n_ports < 0 || n_ports > BNET_IBV_MAX_PORTS) {
		errno = EINVAL;
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	snprintf(x->dev.name, sizeof(x->dev.name), "bnet0");
	x->dev.transport_type = IBV_TRANSPORT_IB;
	x->ctx.device = &x->dev;
	x->ctx.cmd_fd = x->ctx.async_fd = -1;
	x->ctx.ops.poll_cq = op_poll_cq;
	x->ctx.ops.post_send = op_post_send;
	x->ctx.ops.post_recv = op_post_recv;
	memcpy(x->ports, ports, sizeof(*ports) * (size_t)n_ports);
	x->n_ports = n_ports;
	x->next_qpn = 0x100;
	return &x->ctx;
}

int bnet_ibv_close(struct ibv_context *ctx)
{
	free(ctx);
	return 0;
}

struct ibv_pd *bnet_ibv_alloc_pd(struct ibv_context *ctx)
{
	struct bpd *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->pd.context = ctx;
	bnet_pd_init(&p->bpd, (uint32_t)random());
	return &p->pd;
}

int bnet_ibv_dealloc_pd(struct ibv_pd *pd)
{
	free(pd);
	return 0;
}

struct ibv_mr *bnet_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access)
{
	struct bmr *m = calloc(1, sizeof(*m));
	int r;

	(void)access;
	if (!m)
		return NULL;
	m->pd = (struct bpd *)pd;
	r = bnet_reg_mr(&m->pd->bpd, addr, len, &m->bmr);
	if (r < 0) {
		free(m);
		errno = -r;
		return NULL;
	}
	m->mr.context = pd->context;
	m->mr.pd = pd;
	m->mr.addr = addr;
	m->mr.length = len;
	m->mr.lkey = m->bmr->lkey;
	m->mr.rkey = m->bmr->rkey;
	return &m->mr;
}

int bnet_ibv_dereg_mr(struct ibv_mr *mr)
{
	struct bmr *m = (struct bmr *)mr;
	int r = bnet_dereg_mr(&m->pd->bpd, m->bmr);

	free(m);
	return -r;
}

struct ibv_cq *bnet_ibv_create_cq(struct ibv_context *ctx, int cqe, void *cq_context,
				  struct ibv_comp_channel *ch, int vec)
{
	struct bcq *q;

	(void)ch, (void)vec;
	if (cqe < 1 || cqe > BNET_CQ_MAX) {
		errno = EINVAL;
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	if (bnet_cq_init(&q->bcq, (uint32_t)cqe) < 0) {
		free(q);
		errno = ENOMEM;
		return NULL;
	}
	q->cq.context = ctx;
	q->cq.cq_context = cq_context;
	q->cq.cqe = cqe;
	return &q->cq;
}

int bnet_ibv_destroy_cq(struct ibv_cq *cq)
{
	struct bcq *q = (struct bcq *)cq;

	bnet_cq_destroy(&q->bcq);
	free(q);
	return 0;
}

struct ibv_qp *bnet_ibv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
	struct bctx *x = to_ctx(pd->context);
	struct bqp *q;

	if (attr->qp_type != IBV_QPT_RC || !attr->send_cq || !attr->recv_cq) {
		errno = EINVAL;
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->init = *attr;
	q->qp.context = pd->context;
	q->qp.pd = pd;
	q->qp.send_cq = attr->send_cq;
	q->qp.recv_cq = attr->recv_cq;
	q->qp.qp_type = IBV_QPT_RC;
	q->qp.state = IBV_QPS_RESET;
	q->qp.qp_num = x->next_qpn++ & BNET_QPN_MASK;
	return &q->qp;
}

int bnet_ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask)
{
	struct bqp *q = (struct bqp *)qp;
	struct bctx *x = to_ctx(qp->context);
	struct bnet_qp_attr *a = &q->a;
	int r;

	if (!(mask & IBV_QP_STATE))
		return EINVAL;
	switch (attr->qp_state) {
	case IBV_QPS_INIT:
		if (!(mask & IBV_QP_PORT) || attr->port_num < 1 || attr->port_num > x->n_ports)
			return EINVAL;
		q->port = attr->port_num - 1;
		break;
	case IBV_QPS_RTR:
		if (qp->state != IBV_QPS_INIT)
			return EINVAL;
		a->dest_qpn = attr->dest_qp_num;
		a->rq_psn = attr->rq_psn;
		a->pmtu = (mask & IBV_QP_PATH_MTU) ? 128u << attr->path_mtu : 1024;
		/* as an RNIC caps it at the port's active MTU (net_af_xdp: 2048) */
		if (x->ports[q->port] && a->pmtu > bnet_port_max_pmtu(x->ports[q->port]))
			a->pmtu = bnet_port_max_pmtu(x->ports[q->port]);
		break;
	case IBV_QPS_RTS:
		if (qp->state != IBV_QPS_RTR)
			return EINVAL;
		a->qpn = qp->qp_num;
		a->sq_psn = attr->sq_psn;
		a->max_send_wr = q->init.cap.max_send_wr;
		a->max_recv_wr = q->init.cap.max_recv_wr;
		a->window = 256;
		a->ack_every = 16;
		a->timeout_ns = 4096ull << (attr->timeout ? attr->timeout : 14);
		a->retry_cnt = attr->retry_cnt ? attr->retry_cnt : 7;
		a->pd = &((struct bpd *)qp->pd)->bpd;
		a->send_cq = &((struct bcq *)qp->send_cq)->bcq;
		a->recv_cq = &((struct bcq *)qp->recv_cq)->bcq;
		a->tx = bnet_port_tx;
		a->tx_arg = x->ports[q->port];
		r = bnet_qp_create(a, &q->bqp);
		if (r < 0)
			return -r;
		r = x->n_qps < 64 ? bnet_port_attach(x->ports[q->port], q->bqp) : -ENOSPC;
		if (r == 0)
			x->qps[x->n_qps++] = q;
		if (r < 0) {
			bnet_qp_destroy(q->bqp);
			q->bqp = NULL;
			return -r;
		}
		break;
	case IBV_QPS_ERR:
		break;
	default:
		return EINVAL;
	}
	qp->state = attr->qp_state;
	return 0;
}

int bnet_ibv_destroy_qp(struct ibv_qp *qp)
{
	struct bqp *q = (struct bqp *)qp;

	bnet_qp_destroy(q->bqp);
	free(q);
	return 0;
}

struct bnet_qp *bnet_ibv_qp(struct ibv_qp *qp)
{
	return ((struct bqp *)qp)->bqp;
}

/* verbs_setup.c — connects the verbs transport (see verbs.c): the tcp mesh
 * first (it carries the chained EAL start and the QP numbers), then one
 * net_memif port per peer, ARP, the libbnet verbs context, a QP per peer
 * taken through INIT, RTR and RTS. The DPDK EAL can start once per process,
 * so one verbs communicator per process.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bcoll_int.h"
#include "verbs_int.h"

static int eal_started;

static int tok(struct bcoll_comm *c, int to, int from)
{
	char a = 1, b = 0;

	return bcoll_tp_tcp.sendrecv(c, to, &a, to >= 0, from, &b, from >= 0);
}

/* Starts the EAL with one memif per peer and resolves every peer by ARP. */
static int vb_ports(struct bcoll_comm *c, struct vb_state *s, char (*addrs)[BCOLL_ADDR_LEN])
{
	const char *dir = getenv("BCOLL_VERBS_DIR");
	char *argv[VB_MAX_PEERS + 16], args[VB_MAX_PEERS + 16][256];
	uint32_t key = 2166136261u;
	cpu_set_t saved;
	int argc = 0, r;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	for (const char *p = addrs[0]; *p; p++)
		key = (key ^ (uint8_t)*p) * 16777619u;
	if (!dir || !*dir)
		dir = "/tmp";
	/* the bells: every rank of the host maps one file (memif is host-local) */
	snprintf(s->bell_path, sizeof(s->bell_path), "%s/bcv-%08x.bell", dir, key);
	r = vb_bells_map(c, s, s->bell_path);
	if (r < 0)
		return bcoll_fail(c, r, "cannot map %s: %s", s->bell_path, strerror(-r));
#define ARG(...) (snprintf(args[argc], sizeof(args[0]), __VA_ARGS__), argv[argc] = args[argc], argc++)
	ARG("bcoll");
	ARG("-l");
	ARG("%ld", c->rank % (ncpu > 0 ? ncpu : 1));
	ARG("--no-huge");
	ARG("-m");
	ARG("%d", 64 + 80 * (c->size - 1));
	ARG("--no-pci");
	ARG("--file-prefix");
	ARG("bcv%08x-%d", key, c->rank);
	ARG("--log-level=*:error");
	for (int j = 0; j < c->size; j++) {
		int lo = j < c->rank ? j : c->rank, hi = j < c->rank ? c->rank : j;
		char sock[128];

		if (j == c->rank)
			continue;
		snprintf(sock, sizeof(sock), "%s/bcv-%08x-%d-%d.sock", dir, key, lo, hi);
		if (c->rank < j)
			snprintf(s->sock[s->n_ports], sizeof(s->sock[0]), "%s", sock);
		ARG("--vdev=net_memif%d,role=%s,socket=%s,socket-abstract=no,bsize=%d", j,
		    c->rank < j ? "server" : "client", sock, VB_MEMIF_BSIZE);
		s->peers[j].port = s->n_ports++;
	}
	for (int j = 0; j < c->rank; j++)
		if ((r = tok(c, -1, j)) < 0)
			return r;
	sched_getaffinity(0, sizeof(saved), &saved);
	r = bnet_eal_init(argc, argv);
	sched_setaffinity(0, sizeof(saved), &saved);
	eal_started = 1;
	if (r < 0)
		return bcoll_fail(c, r, "DPDK EAL init failed: %s", strerror(-r));
	s->n_ports = 0;
	for (int j = 0; j < c->size; j++) {
		char name[32];

		if (j == c->rank)
			continue;
		snprintf(name, sizeof(name), "net_memif%d", j);
		r = bnet_port_start(name, 0x0a580001u + (uint32_t)c->rank, &s->ports[s->n_ports]);
		if (r < 0)
			return bcoll_fail(c, r, "starting %s failed: %s", name, strerror(-r));
		s->n_ports++;
	}
	for (int j = c->rank + 1; j < c->size; j++)
		if ((r = tok(c, j, -1)) < 0)
			return r;
	for (int j = 0; j < c->size; j++) {
		struct bnet_port *p = s->ports[s->peers[j].port];

		if (j == c->rank)
			continue;
		r = bnet_port_wait_link(p, (uint64_t)c->timeout_ms * 1000000);
		if (r == 0)
			r = bnet_port_resolve(p, 0x0a580001u + (uint32_t)j,
					      (uint64_t)c->timeout_ms * 1000000);
		if (r < 0)
			return bcoll_fail(c, r, "rank %d: memif link or ARP failed: %s", j,
					  strerror(-r));
	}
	return 0;
}

static int vb_qps(struct bcoll_comm *c, struct vb_state *s)
{
	struct vb_info *mine = calloc(c->size, sizeof(*mine)), *theirs = calloc(c->size,
										sizeof(*theirs));
	int r = -ENOMEM;

	if (!mine || !theirs)
		goto out;
	for (int j = 0; j < c->size; j++) {
		struct ibv_qp_init_attr ia = { .send_cq = s->cq, .recv_cq = s->cq,
					       .qp_type = IBV_QPT_RC,
					       .cap = { .max_send_wr = 64, .max_recv_wr = VB_RECVS,
							.max_send_sge = 1, .max_recv_sge = 1 } };
		struct ibv_qp_attr a = { .qp_state = IBV_QPS_INIT,
					 .port_num = (uint8_t)(s->peers[j].port + 1) };

		if (j == c->rank)
			continue;
		s->peers[j].qp = s->pv->create_qp(s->pd, &ia);
		if (!s->peers[j].qp || s->pv->modify_qp(s->peers[j].qp, &a, IBV_QP_STATE |
							 IBV_QP_PORT)) {
			r = bcoll_fail(c, -EIO, "rank %d: creating the queue pair failed", j);
			goto out;
		}
		mine[j].qpn = s->peers[j].qp->qp_num;
		mine[j].psn = (uint32_t)random() & 0xffffff;
		mine[j].rkey = s->fifo_mr->rkey;
		mine[j].fifo_va = (uintptr_t)s->fifo[j];
	}
	for (int k = 1; k < c->size; k++) {
		int to = (c->rank + k) % c->size, from = (c->rank - k + c->size) % c->size;

		r = bcoll_tp_tcp.sendrecv(c, to, &mine[to], sizeof(mine[0]), from, &theirs[from],
					  sizeof(theirs[0]));
		if (r < 0)
			goto out;
	}
	for (int j = 0; j < c->size; j++) {
		struct vb_peer *p = &s->peers[j];
		struct ibv_qp_attr a = { .qp_state = IBV_QPS_RTR, .path_mtu = IBV_MTU_4096,
					 .dest_qp_num = theirs[j].qpn, .rq_psn = theirs[j].psn };

		if (j == c->rank)
			continue;
		/* peer j's slots for us are fifo[c->rank] in its memory */
		p->fifo_va = theirs[j].fifo_va;
		p->fifo_rkey = theirs[j].rkey;
		r = s->pv->modify_qp(p->qp, &a, IBV_QP_STATE | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				     IBV_QP_RQ_PSN);
		if (!r) {
			struct ibv_qp_attr b = { .qp_state = IBV_QPS_RTS, .sq_psn = mine[j].psn,
						 .timeout = 16, .retry_cnt = 7 };

			r = s->pv->modify_qp(p->qp, &b, IBV_QP_STATE | IBV_QP_SQ_PSN |
					     IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT);
		}
		if (r) {
			r = bcoll_fail(c, -EIO, "rank %d: queue pair to RTS failed (path MTU 4096, "
				       "timeout 16, retry 7): %s", j, strerror(r));
			goto out;
		}
		for (int i = 0; i < VB_RECVS; i++)
			if (vb_post_recv(c, j) < 0) {
				r = bcoll_fail(c, -EIO, "rank %d: posting receives failed", j);
				goto out;
			}
	}
	r = 0;
out:
	free(mine);
	free(theirs);
	return r;
}

static int vb_connect(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN])
{
	struct vb_state *s;
	char msg[160];
	int r;

	bcoll_verbs_rdma_core_probe(msg, sizeof(msg));
	if (c->rank == 0 && getenv("BCOLL_VERBOSE"))
		fprintf(stderr, "bcoll: %s; using libbnet over net_memif\n", msg);
	s = calloc(1, sizeof(*s));
	if (!s)
		return bcoll_fail(c, -ENOMEM, "out of memory");
	c->verbs_priv = s;
	s->pv = &vb_bnet;
	s->peers = calloc(c->size, sizeof(*s->peers));
	_Static_assert((VB_MAX_PEERS + 1) * sizeof(uint64_t) <= sizeof(*s->fifo),
		       "the notices fit one FIFO row");
	s->fifo = calloc(c->size + 1, sizeof(*s->fifo));
	s->out = calloc(c->size + 1, sizeof(*s->out));
	s->tx_seen = calloc(c->size, sizeof(*s->tx_seen));
	s->spin = getenv("BCOLL_VERBS_SPIN") ? (unsigned)atoi(getenv("BCOLL_VERBS_SPIN")) : 16;
	if (!s->peers || !s->fifo || !s->out || !s->tx_seen) {
		r = bcoll_fail(c, -ENOMEM, "out of memory");
		goto out_free;
	}
	c->op = "verbs setup";
	r = vb_ports(c, s, addrs);
	if (r < 0)
		goto out_free;
	s->ctx = bnet_ibv_open(s->ports, s->n_ports);
	s->pd = s->ctx ? s->pv->alloc_pd(s->ctx) : NULL;
	s->cq = s->pd ? s->pv->create_cq(s->ctx, 4096, NULL, NULL, 0) : NULL;
	s->notice = s->fifo ? (uint64_t *)&s->fifo[c->size] : NULL;
	s->fifo_mr = s->cq ? s->pv->reg_mr(s->pd, s->fifo, (c->size + 1) * sizeof(*s->fifo),
					  IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE) : NULL;
	s->out_mr = s->fifo_mr ? s->pv->reg_mr(s->pd, s->out, (c->size + 1) * sizeof(*s->out),
					      IBV_ACCESS_LOCAL_WRITE) : NULL;
	if (!s->out_mr) {
		r = bcoll_fail(c, -ENOMEM, "verbs context setup failed");
		goto out_free;
	}
	r = vb_qps(c, s);
	if (r < 0)
		goto out_free;
	/* every rank mapped the bells before the QP exchange it just finished */
	if (c->rank == 0)
		unlink(s->bell_path);
	c->tp = &bcoll_tp_verbs;
	c->op = NULL;
	return 0;
out_free:
	bcoll_tp_verbs.destroy(c);
	return r;
}

/* The tcp mesh under the collective deadline (a rank that is missing fails
 * as over tcp), then the verbs setup under at least VB_SETUP_MS: DPDK's EAL
 * starts one rank after another and takes a while on a loaded host, and a
 * slow start is not a fault (a dead rank still fails it at once: its tcp
 * connection closes). */
int bcoll_verbs_connect(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN])
{
	int t = c->timeout_ms, r;

	if (c->size - 1 > VB_MAX_PEERS)
		return bcoll_fail(c, -EINVAL, "BCOLL_TRANSPORT=verbs over libbnet supports at most "
				  "%d ranks", VB_MAX_PEERS + 1);
	if (eal_started)
		return bcoll_fail(c, -EALREADY, "one verbs communicator per process (the DPDK EAL "
				  "starts once)");
	r = bcoll_tcp_connect(c, addrs);
	if (r < 0)
		return r;
	if (c->timeout_ms < VB_SETUP_MS)
		c->timeout_ms = VB_SETUP_MS;
	r = vb_connect(c, addrs);
	c->timeout_ms = t;
	return r;
}

/* verbs_int.h — state shared by verbs.c (data path) and verbs_setup.c. */
#pragma once
#include "bcoll_int.h"
#include "../netstack/bnet_verbs.h"

#define VB_MAX_PEERS BNET_IBV_MAX_PORTS
#define VB_FIFO 4
#define VB_CHUNK (1u << 20)
#define VB_INFLIGHT 8
#define VB_RECVS 16
#define VB_CACHE 32
#define VB_MISMATCH 0x80000000u
/* memif buffer: one whole frame at path MTU 4096, so no frame is chained */
#define VB_MEMIF_BSIZE ((BNET_MAX_FRAME + 63) & ~63)
enum { WR_CTS = 1, WR_DATA, WR_RECV };

struct vb_cts {
	struct bcoll_wire w;
	uint64_t va;
	uint32_t rkey, pad;
	uint64_t stamp;
};

struct vb_prov {
	const char *name;
	struct ibv_pd *(*alloc_pd)(struct ibv_context *);
	int (*dealloc_pd)(struct ibv_pd *);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
	int (*dereg_mr)(struct ibv_mr *);
	struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *,
				    int);
	int (*destroy_cq)(struct ibv_cq *);
	struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
	int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
	int (*destroy_qp)(struct ibv_qp *);
	int (*close)(struct ibv_context *);
};

static const struct vb_prov vb_bnet __attribute__((unused)) = {
	"libbnet", bnet_ibv_alloc_pd, bnet_ibv_dealloc_pd, bnet_ibv_reg_mr, bnet_ibv_dereg_mr,
	bnet_ibv_create_cq, bnet_ibv_destroy_cq, bnet_ibv_create_qp, bnet_ibv_modify_qp,
	bnet_ibv_destroy_qp, bnet_ibv_close,
};

struct vb_peer {
	int port;		/* index into ports[], -1 for this rank */
	struct ibv_qp *qp;
	uint64_t fifo_va;	/* our slots in the peer's FIFO */
	uint32_t fifo_rkey;
	uint64_t cts_sent, cts_seen;
};

struct vb_info {
	uint32_t qpn, psn, rkey, pad;
	uint64_t fifo_va;
};

struct vb_cache {
	char *addr;
	size_t len;
	struct ibv_mr *mr;
	uint64_t used;
};

struct vb_state {
	const struct vb_prov *pv;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct bnet_port *ports[VB_MAX_PEERS];
	int n_ports;
	struct vb_cts (*fifo)[VB_FIFO]; /* [size][VB_FIFO]: peers write CTS here */
	struct vb_cts *out;		/* [size]: our CTS staging */
	struct ibv_mr *fifo_mr, *out_mr;
	struct vb_cache cache[VB_CACHE];
	uint64_t tick;
	int failed;		/* a sendrecv failed: no orderly close */
	struct vb_peer *peers;
	char sock[VB_MAX_PEERS][128];	/* memif sockets this rank serves */
};


extern const struct bcoll_tp bcoll_tp_verbs;
int bcoll_verbs_rdma_core_probe(char *msg, size_t len);
int vb_post_recv(struct bcoll_comm *c, int peer);

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
#define VB_SETUP_MS 20000 /* the least time the verbs setup gets */
/* memif buffer: one whole frame at path MTU 4096, so no frame is chained */
#define VB_MEMIF_BSIZE ((BNET_MAX_FRAME + 63) & ~63)
enum { WR_CTS = 1, WR_DATA, WR_RECV, WR_NOTICE, WR_PROBE };
/* a failure notice in a peer's slot: this tag | (culprit rank + 1) */
#define VB_NOTICE_TAG 0x4641494c00000000ull

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

/* One per rank in a file every rank of the host maps: a rank about to sleep
 * sets asleep and waits on seq (a futex); a peer that sent it frames bumps
 * seq and wakes it. Padded to a cache line so ranks do not share one. */
struct vb_bell {
	uint32_t seq, asleep;
	uint8_t pad[56];
};

struct vb_state {
	const struct vb_prov *pv;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct bnet_port *ports[VB_MAX_PEERS];
	int n_ports;
	struct vb_cts (*fifo)[VB_FIFO]; /* [size + 1][VB_FIFO]: peers write CTS here;
					 * row [size] holds their failure notices */
	uint64_t *notice;		/* [size] in that last row, by sender */
	struct vb_cts *out;		/* [size + 1]: our CTS staging; [size]: notice */
	struct ibv_mr *fifo_mr, *out_mr;
	struct vb_cache cache[VB_CACHE];
	uint64_t tick;
	int failed;		/* a sendrecv failed: no orderly close */
	struct vb_peer *peers;
	struct vb_bell *bells;		/* [size], shared; NULL: spin only */
	uint64_t *tx_seen;		/* [size]: frames sent to each peer at the last ring */
	uint64_t activity;		/* frames in and out on every QP, last look */
	unsigned spin;			/* idle turns before sleeping */
	int culprit;			/* the rank the last failure blamed */
	char sock[VB_MAX_PEERS][128];	/* memif sockets this rank serves */
	char bell_path[128];		/* unlinked by rank 0 once all mapped it */
};


extern const struct bcoll_tp bcoll_tp_verbs;
int bcoll_verbs_rdma_core_probe(char *msg, size_t len);
int vb_post_recv(struct bcoll_comm *c, int peer);
int vb_bells_map(struct bcoll_comm *c, struct vb_state *s, const char *path);

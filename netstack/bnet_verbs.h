/* bnet_verbs.h — libbnet as a verbs provider: real libibverbs objects
 * (struct ibv_context, ibv_pd, ibv_mr, ibv_cq, ibv_qp) whose context ops table
 * is filled, so the inline data-path calls ibv_post_send, ibv_post_recv and
 * ibv_poll_cq dispatch into libbnet. The setup calls below have libibverbs'
 * signatures, so a caller keeps one provider table for rdma-core and for us.
 * A context owns n DPDK ports (libbnet-dpdk); ibv port_num k uses ports[k-1].
 * Progress is driven by ibv_poll_cq (software provider: no threads).
 */
#pragma once
#include <infiniband/verbs.h>

#include "bnet.h"

#define BNET_IBV_MAX_PORTS 16

struct ibv_context *bnet_ibv_open(struct bnet_port **ports, int n_ports);
int bnet_ibv_close(struct ibv_context *ctx);
struct ibv_pd *bnet_ibv_alloc_pd(struct ibv_context *ctx);
int bnet_ibv_dealloc_pd(struct ibv_pd *pd);
struct ibv_mr *bnet_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access);
int bnet_ibv_dereg_mr(struct ibv_mr *mr);
struct ibv_cq *bnet_ibv_create_cq(struct ibv_context *ctx, int cqe, void *cq_context,
				  struct ibv_comp_channel *ch, int vec);
int bnet_ibv_destroy_cq(struct ibv_cq *cq);
struct ibv_qp *bnet_ibv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr);
/* INIT takes port_num; RTR dest_qp_num, rq_psn, path_mtu; RTS sq_psn,
 * timeout (4.096 us << timeout) and retry_cnt, and creates the libbnet QP. */
int bnet_ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask);
int bnet_ibv_destroy_qp(struct ibv_qp *qp);
/* The libbnet QP under an RTS ibv_qp (NULL before RTS), for its counters. */
struct bnet_qp *bnet_ibv_qp(struct ibv_qp *qp);

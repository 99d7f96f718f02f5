/* bcoll_int.h — libbcoll's private state: the communicator, the transport
 * interface every algorithm is written against, and the helpers they share.
 * Not installed; only collectives/ includes it.
 *
 * The transport interface is one verb, sendrecv(to, from): send slen bytes to
 * rank `to` while receiving rlen bytes from rank `from` (either may be -1),
 * with a deadline, checking that the peer runs the same collective (the
 * descriptor c->cur travels with every message). Ring, recursive doubling,
 * Rabenseifner and tree algorithms are written only against it, so a verbs
 * transport (RC QPs, RDMA WRITE WITH IMM) slots in by implementing it. A
 * transport may also offer whole-collective fast paths (shm's direct
 * allreduce reads peers' buffers in place).
 */
#pragma once
#include "bcoll.h"

#include <stdatomic.h>
#include <stdint.h>

#define BCOLL_SCRATCH_BYTES (1u << 20) /* largest piece received before reducing */
#define BCOLL_STAGE_BYTES (4u << 20)   /* f32 staging for f16/bf16 */
#define BCOLL_WIRE_MAGIC 0x62634f4cu

enum bcoll_kind {
	BCOLL_K_ALLREDUCE = 1, BCOLL_K_REDUCE_SCATTER, BCOLL_K_ALLGATHER, BCOLL_K_BROADCAST,
	BCOLL_K_REDUCE, BCOLL_K_BARRIER,
};

enum bcoll_algo { BCOLL_A_AUTO, BCOLL_A_RING, BCOLL_A_RD, BCOLL_A_RABEN, BCOLL_A_DIRECT };

/* What a rank is doing; peers must agree on all of it. */
struct bcoll_desc {
	uint32_t kind, dtype, op;
	int32_t root;
	uint64_t count;
};

/* The header in front of every message: the collective and its sequence. */
struct bcoll_wire {
	uint32_t magic, pad;
	uint64_t len, seq;
	struct bcoll_desc d;
};

struct bcoll_comm;

struct bcoll_tp {
	const char *name;
	/* See the top of this file. Returns 0 or a negative errno with c->err set. */
	int (*sendrecv)(struct bcoll_comm *c, int to, const void *sbuf, size_t slen, int from,
			void *rbuf, size_t rlen);
	/* Optional whole-collective fast paths; NULL when absent. allreduce and
	 * reduce_scatter take f32/f64/i32/i64 and apply avg's division
	 * themselves; allgather and broadcast move bytes (any dtype). */
	int (*allreduce)(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			 enum bcoll_dtype dt, enum bcoll_op op);
	int (*reduce_scatter)(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			      enum bcoll_dtype dt, enum bcoll_op op);
	int (*allgather)(struct bcoll_comm *c, const void *send, void *recv, size_t bytes);
	int (*broadcast)(struct bcoll_comm *c, void *buf, size_t bytes, int root);
	/* Wakes and fails every wait of this rank and tells peers; thread-safe. */
	void (*abort)(struct bcoll_comm *c);
	void (*destroy)(struct bcoll_comm *c);
};

extern const struct bcoll_tp bcoll_tp_tcp, bcoll_tp_shm;

struct bcoll_queue;

struct bcoll_comm {
	int rank, size;
	int timeout_ms;
	const struct bcoll_tp *tp;
	void *tp_priv;	       /* tcp's state (the listener exists before the choice) */
	void *shm_priv;	       /* shm's state */
	void *verbs_priv;      /* verbs' state (tcp stays up under it) */
	uint64_t seq;	       /* collective calls so far, for messages */
	const char *op;	       /* the collective in progress, for messages */
	struct bcoll_desc cur; /* and its descriptor */
	void *scratch[2];      /* BCOLL_SCRATCH_BYTES each, allocated at init */
	void *stage;	       /* BCOLL_STAGE_BYTES, f32 work space for 16-bit types */
	int algo;	       /* BCOLL_ALGO, BCOLL_A_AUTO when not forced */
	size_t rd_max;	       /* allreduce bytes up to which rd is picked */
	size_t ring_min;       /* and from which ring is picked (rabenseifner between) */
	atomic_int aborted;
	double seconds;	       /* cumulative time inside collectives */
	struct bcoll_queue *q; /* progress thread, NULL until the first i-call */
	char err[256];	       /* the running collective's sentence (either thread) */
	/* What bcoll_last_error() returns: the sentence of the caller's last
	 * failed call, copied when a blocking call fails or a failed request is
	 * waited for, so the progress thread (which goes on writing err for the
	 * next queued request) can never tear or replace it under the caller. */
	char user_err[256];
};

/* Records "op #seq: <sentence>" in c->err and returns r. */
int bcoll_fail(struct bcoll_comm *c, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int64_t bcoll_now_ms(void);
/* Checks a received header against this rank's collective; names `from`. */
int bcoll_wire_check(struct bcoll_comm *c, const struct bcoll_wire *w, int from, size_t rlen);
void bcoll_wire_fill(const struct bcoll_comm *c, struct bcoll_wire *w, size_t len);

/* Transport setup: my_addr is published; addrs are everyone's after exchange. */
int bcoll_tcp_listen(struct bcoll_comm *c, char *host_out, size_t hlen, int *port_out);
int bcoll_tcp_connect(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN]);
int bcoll_shm_create(struct bcoll_comm *c, char *tag, size_t tlen);
int bcoll_shm_attach(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN]);
void bcoll_shm_unlink_own(void);
/* verbs*.c, in libbcoll-verbs.a (DPDK): weak, NULL when not linked in. */
int bcoll_verbs_connect(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN])
	__attribute__((weak));

/* Reductions: dst[i] = dst[i] op src[i] for f32/f64/i32/i64 (AVX2 when the
 * CPU has it); AVG sums here and bcoll_divide() runs once at the end. */
void bcoll_reduce_buf(void *dst, const void *src, size_t n, enum bcoll_dtype dt,
		      enum bcoll_op op);
/* dst[i] = a[i] op b[i], the out-of-place form. */
void bcoll_reduce3(void *dst, const void *a, const void *b, size_t n, enum bcoll_dtype dt,
		   enum bcoll_op op);
void bcoll_divide(void *buf, size_t n, enum bcoll_dtype dt, int by);
/* Caps the kernels at level (0 scalar, 1 AVX2, 2 AVX-512; BCOLL_SIMD=scalar|
 * avx2 at first use does the same); returns the level now in use. */
int bcoll_simd_cap(int level);
void bcoll_to_f32(float *dst, const void *src, size_t n, enum bcoll_dtype dt);
void bcoll_from_f32(void *dst, const float *src, size_t n, enum bcoll_dtype dt);

/* Generic algorithms over tp->sendrecv (algo.c); buffers are byte counts of
 * element size esz, dt only for reductions (never f16/bf16 here). */
void bcoll_segment(size_t count, int n, int i, size_t *start, size_t *len);
int bcoll_allreduce_algo(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			 enum bcoll_dtype dt, enum bcoll_op op, int algo);
int bcoll_rs_ring(struct bcoll_comm *c, const char *send, char *out, size_t count,
		  size_t bsize, enum bcoll_dtype dt, enum bcoll_op op);
int bcoll_ag_ring(struct bcoll_comm *c, char *buf, size_t count, size_t bsize, size_t esz);
int bcoll_ag_rd(struct bcoll_comm *c, char *buf, size_t bsize, size_t esz);
int bcoll_bcast_algo(struct bcoll_comm *c, char *buf, size_t bytes, int root);
int bcoll_reduce_tree(struct bcoll_comm *c, const char *send, char *recv, size_t count,
		      enum bcoll_dtype dt, enum bcoll_op op, int root);
int bcoll_barrier_algo(struct bcoll_comm *c);
int bcoll_pick_algo(const struct bcoll_comm *c, size_t bytes);
int bcoll_tune_init(struct bcoll_comm *c);

/* Blocking bodies the public calls and the progress thread share (api.c). */
int bcoll_run(struct bcoll_comm *c, int kind, const void *send, void *recv, size_t count,
	      enum bcoll_dtype dt, enum bcoll_op op, int root);
void bcoll_queue_drain(struct bcoll_comm *c);
void bcoll_queue_free(struct bcoll_comm *c);
/* Equal for processes that can share this host's /dev/shm. */
uint32_t bcoll_host_id(void);

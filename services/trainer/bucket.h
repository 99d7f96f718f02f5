/* bucket — gradient buckets allreduced while the backward pass runs.
 *
 * Set up once per run from the model's parameter layout: every per-layer
 * tensor's slice of layer l is ready when backward has passed layer l (last
 * layer first), the whole-model tensors (embeddings, final norm, lm_head)
 * when backward ends. Slices of at least BUCKET_MAX / 2 floats are
 * reduced in place, split into buckets of at most BUCKET_MAX floats; the
 * smaller ones of a layer are packed into staging buckets of at most
 * BUCKET_MAX floats (fewer, larger collectives: each one is a meeting point
 * of every rank, costly when ranks share cores with their progress threads).
 * model_backward() calls bucket_ready() after each layer, which starts a
 * bcoll_iallreduce (average) per ready bucket; bucket_wait_all() waits for
 * them before the optimizer step. Nothing is allocated after bucket_init().
 */
#pragma once
#include "bcoll.h"
#include "model.h"

#define BUCKET_MAX (1u << 20)	     /* floats: 4 MiB; BURSAR_BUCKET_FLOATS overrides */
#define BUCKET_MAX_LO 1024
#define BUCKET_MAX_HI (1u << 26)

struct bucket_seg {
	float *p;
	size_t n;
};

struct bucket {
	int layer;	      /* ready once backward has done this layer; -1: at the end */
	int seg0, nseg;	      /* its segments in grad_buckets.segs */
	float *buf;	      /* the reduced floats: the one segment, or a packed range */
	size_t n;
	struct bcoll_req *req;
};

struct grad_buckets {
	struct bcoll_comm *comm;
	struct bucket *b;
	struct bucket_seg *segs;
	float *pack;	      /* staging for packed buckets */
	size_t max;	      /* floats per bucket */
	int nb, nsegs;
	int next;	      /* first bucket not started this step */
	int waited;	      /* first bucket not waited for this step */
	int err;	      /* first failure this step (negative errno) */
	char errmsg[256];     /* bcoll_last_error() of that failure */
	const float *acc;     /* non-NULL: grads = (acc + grads) * inv before sending */
	float inv;
	struct model *g;
};

/* Builds the buckets of g's gradients for comm. Returns 0 or -ENOMEM. */
int bucket_init(struct grad_buckets *gb, struct model *g, struct bcoll_comm *comm);
void bucket_free(struct grad_buckets *gb);
/* Arms gb for one backward pass: hooks it into g (model.grad_ready); acc,
 * when not NULL, is added to each bucket and the sum scaled by inv first. */
void bucket_arm(struct grad_buckets *gb, const float *acc, float inv);
/* model.grad_ready hook: layer's gradients are complete (-1: all of them). */
void bucket_ready(void *ctx, int layer);
/* Waits for every started bucket, unpacks, unhooks. Returns 0 or the first
 * failure (negative errno; gb->errmsg says why: later requests of a broken
 * communicator fail with vaguer sentences). */
int bucket_wait_all(struct grad_buckets *gb);

/* zero — ZeRO stage 1 for bursar-train: the AdamW moments (m, v) sharded
 * across the ranks of the data-parallel communicator.
 *
 * The flat parameter vector of n floats is cut into size shards of
 * q = n / size floats, rank r owning [r*q, (r+1)*q); the last n - size*q
 * floats (fewer than size, the "tail") are owned by every rank. Each step:
 * reduce_scatter (average) of the gradients gives each rank its shard's
 * mean gradient (the tail is allreduced), the global norm for clipping is
 * one scalar allreduce, each rank applies AdamW to its shard with its own
 * moments, and an in-place allgather hands every rank the full new
 * weights. The moments take 2 * (q + tail) floats per rank instead of 2n;
 * the communication volume equals one allreduce.
 *
 * Checkpoints stay in the unsharded format: zero_gather() assembles the
 * full moments (through the gradient buffer, free between steps), so a run
 * resumes with another rank count or without ZeRO. On resume every rank
 * receives rank 0's full moments and zero_init() keeps its shard.
 */
#pragma once
#include "bcoll.h"
#include "model.h"
#include "optim.h"

struct zero {
	struct bcoll_comm *comm; /* NULL: ZeRO off */
	struct model *g;
	int rank, size;
	size_t q;	      /* floats per rank's shard of [0, size*q) */
	size_t tail;	      /* n - size*q, updated by every rank */
	size_t full_bytes;    /* moments without sharding */
};

/* Bytes of AdamW moments one rank saves with ZeRO-1 over size ranks. */
uint64_t zero_saved_bytes(uint64_t n_params, int size);
/* Shards o (full moments on entry, identical on every rank) for comm: keeps
 * this rank's slices and frees the rest. Returns 0 or -ENOMEM (o unchanged). */
int zero_init(struct zero *z, struct model *g, struct adamw *o, struct bcoll_comm *comm);
/* Averages the gradients across ranks: this rank's shard and the tail of
 * g->grads hold the mean afterwards (the rest is stale). 0 or negative errno. */
int zero_reduce(struct zero *z);
/* Clips by the global norm (returned in *norm), applies AdamW to this rank's
 * shard and the tail, and allgathers the weights. 0 or negative errno. */
int zero_update(struct zero *z, struct adamw *o, float lr, float weight_decay, float clip,
		float *norm);
/* Assembles the full moments for a checkpoint; every rank must call it. On
 * rank 0 *full gets t and full m, v (m allocated, v the gradient buffer)
 * until zero_gather_done(). 0 or negative errno. */
int zero_gather(struct zero *z, const struct adamw *o, struct adamw *full);
void zero_gather_done(struct zero *z, struct adamw *full);

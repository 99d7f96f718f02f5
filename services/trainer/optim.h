/* optim — AdamW, the learning-rate schedule and global-norm clipping for
 * bursar-train. Pure arithmetic over flat buffers; every rank runs it on the
 * same averaged gradients, so the weights stay bit-identical across ranks. */
#pragma once
#include <stddef.h>

#include "model.h"

struct adamw {
	float *m, *v; /* n_params each, allocated by adamw_init */
	size_t n;
	float beta1, beta2, eps;
	long t; /* updates applied so far */
	float c1, c2; /* bias corrections of update t (adamw_begin) */
	float gscale; /* gradient scale of update t (clipping folded in) */
};

int adamw_init(struct adamw *o, size_t n);
void adamw_free(struct adamw *o);
/* One update of every tensor of g with its grads; weight decay (decoupled)
 * applies to matrices and embeddings only, as in nanoGPT and llm.c. */
void adamw_step(struct adamw *o, struct model *g, float lr, float weight_decay);
/* The same update in pieces, for a shard of the parameters (zero.c):
 * adamw_begin() counts the update and sets the factor every gradient is
 * multiplied by as it is read (optim_clip_scale(): clipping without a pass
 * of its own), then adamw_range() updates params [lo, hi) of g with the
 * moments at m[mo], v[mo] onwards. */
void adamw_begin(struct adamw *o, float gscale);
void adamw_range(struct adamw *o, struct model *g, size_t lo, size_t hi, size_t mo, float lr,
		 float weight_decay);

/* lr at 0-based step: linear warmup to peak over `warmup` steps, then
 * "cosine" or "linear" decay to peak/10 at the last step, or "constant". */
float optim_lr(const char *schedule, float peak, long step, long steps, int warmup);
/* Scales grads so their global L2 norm is at most clip (clip <= 0: no-op).
 * Returns the norm before clipping. */
float optim_clip(float *grads, size_t n, float clip);
/* The global L2 norm of grads (summed in double). */
float optim_norm(const float *grads, size_t n);
/* The factor that clips gradients of this norm to clip: 1 when clip <= 0,
 * norm <= clip or norm is not finite. */
float optim_clip_scale(float norm, float clip);

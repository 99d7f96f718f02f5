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
};

int adamw_init(struct adamw *o, size_t n);
void adamw_free(struct adamw *o);
/* One update of every tensor of g with its grads; weight decay (decoupled)
 * applies to matrices and embeddings only, as in nanoGPT and llm.c. */
void adamw_step(struct adamw *o, struct model *g, float lr, float weight_decay);

/* lr at 0-based step: linear warmup to peak over `warmup` steps, then
 * "cosine" or "linear" decay to peak/10 at the last step, or "constant". */
float optim_lr(const char *schedule, float peak, long step, long steps, int warmup);
/* Scales grads so their global L2 norm is at most clip (clip <= 0: no-op).
 * Returns the norm before clipping. */
float optim_clip(float *grads, size_t n, float clip);

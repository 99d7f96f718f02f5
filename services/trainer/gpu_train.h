/* gpu_train.h — one rank of bursar-train on the GPU (gpu_train.c), the
 * pieces run.c calls in place of the CPU model's when g->on. Functions
 * return 0 or a negative errno; gpu_rank_error() says what the device said.
 */
#pragma once
#include "bcoll.h"
#include "cuda/gpu.h"
#include "model.h"
#include "optim.h"

struct gpu_rank {
	int on; /* this rank trains on the GPU */
	const struct gpu_ops *ops;
	struct gpu_model *m;
	struct gpu_info info;
};

/* device "cpu" (or NULL), "cuda" (an error without a usable GPU or for a
 * model the backend cannot train) or "auto" (the GPU when one answers). */
int gpu_rank_select(struct gpu_rank *g, const char *device, const struct model_config *cfg,
		    int rank, char *err, size_t errlen);
/* grad_accum (0: the fewest micro-batches that fit 90% of free GPU memory). */
int gpu_rank_micro_batch(struct gpu_rank *g, const struct model *host, int rows, int T,
			 int grad_accum, int *B, int *accum, char *err, size_t errlen);
/* The device model from the host's weights (and moments when resumed). */
int gpu_rank_start(struct gpu_rank *g, const struct model *host, const struct adamw *opt,
		   int resumed, int B, int T, char *err, size_t errlen);
int gpu_rank_zero_grads(struct gpu_rank *g);
/* One micro-batch; with backward, adds grad_scale x its gradient. */
int gpu_rank_micro(struct gpu_rank *g, const int *inputs, const int *targets, int backward,
		   float grad_scale, float *loss);
/* Averages the gradients across the ranks (through host->grads). */
int gpu_rank_exchange(struct gpu_rank *g, struct bcoll_comm *comm, struct model *host);
/* Global norm, clipping to clip (> 0), AdamW; counts opt->t. */
int gpu_rank_update(struct gpu_rank *g, struct adamw *opt, float lr, float weight_decay,
		    float clip, float *norm);
/* Weights (and moments when opt) back into host memory. */
int gpu_rank_pull(struct gpu_rank *g, struct model *host, struct adamw *opt);
const char *gpu_rank_error(struct gpu_rank *g);
/* The card's bf16 FLOP/s for MFU: its datasheet figure, else measured. */
double gpu_rank_peak(struct gpu_rank *g);
void gpu_rank_close(struct gpu_rank *g);

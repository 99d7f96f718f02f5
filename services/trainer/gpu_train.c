/* gpu_train — one rank's training on the GPU, for run.c: device selection
 * (--device cpu|cuda|auto), the micro-batch that fits the card, and the
 * pieces of a step. The host model keeps the parameters in host memory for
 * checkpoints, outputs and the broadcast from rank 0 (it is built for one
 * token, so it holds no activations); the device model (cuda/) holds the
 * working copy, the gradients and the AdamW moments. With several ranks the
 * gradients cross through host memory for libbcoll's allreduce, after the
 * backward pass (no overlap yet).
 */
#include "gpu_train.h"

#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gpu_rank_select(struct gpu_rank *g, const char *device, const struct model_config *cfg,
		    int rank, char *err, size_t errlen)
{
	char why[256] = "";
	int want = device && !strcmp(device, "cuda"), maybe = device && !strcmp(device, "auto");

	memset(g, 0, sizeof(*g));
	if (device && !want && !maybe && strcmp(device, "cpu")) {
		snprintf(err, errlen, "--device '%s' must be cpu, cuda or auto", device);
		return -EINVAL;
	}
	if (!want && !maybe)
		return 0;
	/* the CUDA Llama passes test-cuda; bursar-train takes it once an end to
	 * end run has (test-device.sh's llama case), until then on request */
	if (strcmp(cfg->model_type, "gpt2") &&
	    !(getenv("BURSAR_CUDA_LLAMA") && atoi(getenv("BURSAR_CUDA_LLAMA")))) {
		if (want) {
			snprintf(err, errlen, "the CUDA backend trains GPT-2 only so far "
					      "(BURSAR_CUDA_LLAMA=1 enables its Llama); train this %s "
					      "model with --device cpu", cfg->model_type);
			return -ENOTSUP;
		}
		log_info("rank %d: training on the CPU: the CUDA backend trains GPT-2 only so far",
			 rank);
		return 0;
	}
	g->ops = gpu_load(why, sizeof(why));
	if (!g->ops) {
		if (want) {
			snprintf(err, errlen, "--device cuda: %s", why);
			return -ENODEV;
		}
		log_info("rank %d: training on the CPU (%s)", rank, why);
		return 0;
	}
	g->ops->probe(&g->info, why, sizeof(why));
	g->on = 1;
	log_info("rank %d: training on %s (%.1f GiB free of %.1f)", rank, g->info.name,
		 g->info.mem_free / 1073741824.0, g->info.mem_total / 1073741824.0);
	return 0;
}

int gpu_rank_micro_batch(struct gpu_rank *g, const struct model *host, int rows, int T,
			 int grad_accum, int *B, int *accum, char *err, size_t errlen)
{
	struct gpu_dims d;
	uint64_t cap = g->info.mem_free / 10 * 9, need = 0;

	gpu_dims_of(host, &d);
	if (grad_accum > 0) {
		if (rows % grad_accum) {
			snprintf(err, errlen, "the %d sequences of each rank cannot be split into "
				 "grad_accum %d micro-batches; make \"batch\" a multiple of ranks "
				 "x grad_accum", rows, grad_accum);
			return -EINVAL;
		}
		*accum = grad_accum;
		*B = rows / grad_accum;
		need = g->ops->memory_bytes(&d, *B, T);
	} else {
		for (*accum = 1; *accum <= rows; (*accum)++) {
			if (rows % *accum)
				continue;
			*B = rows / *accum;
			need = g->ops->memory_bytes(&d, *B, T);
			if (need <= cap)
				break;
		}
	}
	if (need > cap) {
		snprintf(err, errlen, "the model needs %.1f GiB of GPU memory for a micro-batch "
			 "of %d x %d tokens; %s has %.1f GiB free", need / 1073741824.0, *B, T,
			 g->info.name, g->info.mem_free / 1073741824.0);
		return -ENOMEM;
	}
	return 0;
}

int gpu_rank_start(struct gpu_rank *g, const struct model *host, const struct adamw *opt,
		   int resumed, int B, int T, char *err, size_t errlen)
{
	struct gpu_dims d;
	int r;

	gpu_dims_of(host, &d);
	r = g->ops->create(&g->m, &d, B, T, err, errlen);
	if (r < 0)
		return r;
	if (g->ops->set_params(g->m, host->params) < 0 ||
	    (resumed && g->ops->set_moments(g->m, opt->m, opt->v) < 0)) {
		snprintf(err, errlen, "%s", g->ops->last_error(g->m));
		return -EIO;
	}
	return 0;
}

int gpu_rank_micro(struct gpu_rank *g, const int *inputs, const int *targets, int backward,
		   float grad_scale, float *loss)
{
	return g->ops->step(g->m, inputs, targets, backward, grad_scale, loss);
}

int gpu_rank_zero_grads(struct gpu_rank *g)
{
	return g->ops->zero_grads(g->m);
}

int gpu_rank_exchange(struct gpu_rank *g, struct bcoll_comm *comm, struct model *host)
{
	int r;

	if (bcoll_size(comm) < 2)
		return 0;
	r = g->ops->get_grads(g->m, host->grads);
	if (r < 0)
		return r;
	r = bcoll_allreduce(comm, host->grads, host->grads, host->n_params, BCOLL_F32,
			    BCOLL_AVG);
	if (r < 0)
		return r;
	return g->ops->set_grads(g->m, host->grads);
}

int gpu_rank_update(struct gpu_rank *g, struct adamw *opt, float lr, float weight_decay,
		    float clip, float *norm)
{
	struct gpu_adamw_args a = {.lr = lr, .beta1 = opt->beta1, .beta2 = opt->beta2,
				   .eps = opt->eps, .weight_decay = weight_decay};
	int r = g->ops->grad_norm(g->m, norm);

	if (r < 0)
		return r;
	a.grad_scale = clip > 0 && *norm > clip ? clip / *norm : 1.0f;
	a.t = ++opt->t;
	return g->ops->adamw(g->m, &a);
}

int gpu_rank_pull(struct gpu_rank *g, struct model *host, struct adamw *opt)
{
	int r = g->ops->get_params(g->m, host->params);

	if (r == 0 && opt)
		r = g->ops->get_moments(g->m, opt->m, opt->v);
	return r;
}

const char *gpu_rank_error(struct gpu_rank *g)
{
	return g->m ? g->ops->last_error(g->m) : "no device model";
}

double gpu_rank_peak(struct gpu_rank *g)
{
	double f = 0;
	char err[256];

	if (g->info.peak_bf16 > 0)
		return g->info.peak_bf16;
	if (g->ops->probe_flops(0.3, &f, err, sizeof(err)) < 0)
		return 1e12;
	return f;
}

void gpu_rank_close(struct gpu_rank *g)
{
	if (g->m)
		g->ops->destroy(g->m);
	g->m = NULL;
}

/* bench-cuda — GPT-2 training throughput of the CUDA backend: random init,
 * random tokens, full steps (forward, backward, global norm, AdamW) timed
 * after warm-up. Prints tokens/s and MFU (6N + 12·L·T·C FLOPs per token,
 * against the card's datasheet bf16 rate and against a measured matmul).
 *
 *   bench-cuda [-B 32] [-T 1024] [-L 12] [-H 12] [-C 768] [-V 50257] [-s 20]
 */
#include "gpu.h"
#include "model.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct model_config cfg = {.model_type = "gpt2", .n_layer = 12, .n_head = 12,
				   .n_embd = 768, .n_positions = 1024, .vocab_size = 50257,
				   .layer_norm_epsilon = 1e-5};
	int B = 32, T = 1024, steps = 20, warm = 3, c;
	const struct gpu_ops *ops;
	struct gpu_model *g = NULL;
	struct gpu_info info;
	struct gpu_dims d;
	struct model host;
	char err[256];
	double flops = 0, fpt, sum = 0, best = 1e30;
	int *in, *tg;

	while ((c = getopt(argc, argv, "B:T:L:H:C:V:s:")) != -1) {
		switch (c) {
		case 'B': B = atoi(optarg); break;
		case 'T': T = atoi(optarg); break;
		case 'L': cfg.n_layer = atoi(optarg); break;
		case 'H': cfg.n_head = atoi(optarg); break;
		case 'C': cfg.n_embd = atoi(optarg); break;
		case 'V': cfg.vocab_size = atoi(optarg); break;
		case 's': steps = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench-cuda [-B b] [-T t] [-L l] [-H h] [-C c] [-V v] "
					"[-s steps]\n");
			return 2;
		}
	}
	if (T > cfg.n_positions)
		cfg.n_positions = T;
	if (!(ops = gpu_load(err, sizeof(err)))) {
		printf("SKIP bench-cuda: %s\n", err);
		return 0;
	}
	ops->probe(&info, err, sizeof(err));
	/* the host model only for the layout and the seeded init: one token */
	if (model_build(&host, &cfg, 1, 1) < 0) {
		fprintf(stderr, "bench-cuda: out of memory\n");
		return 1;
	}
	model_init_weights(&host, 1);
	gpu_dims_of(&host, &d);
	if (ops->create(&g, &d, B, T, err, sizeof(err)) < 0 || ops->set_params(g, host.params) < 0) {
		fprintf(stderr, "bench-cuda: %s\n", g ? ops->last_error(g) : err);
		return 1;
	}
	in = malloc((size_t)B * T * sizeof(int));
	tg = malloc((size_t)B * T * sizeof(int));
	for (size_t i = 0; i < (size_t)B * T; i++) {
		in[i] = (int)((i * 2654435761u) % cfg.vocab_size);
		tg[i] = (int)((i * 40503u + 11) % cfg.vocab_size);
	}
	fpt = 6.0 * modelcfg_n_params(&cfg) + 12.0 * cfg.n_layer * T * cfg.n_embd;
	for (int s = 1; s <= warm + steps; s++) {
		struct gpu_adamw_args a = {.lr = 6e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
					   .weight_decay = 0.1f, .t = s};
		uint64_t t0 = util_now_us();
		float loss, norm;
		double dt;

		if (ops->zero_grads(g) < 0 || ops->step(g, in, tg, 1, 1.0f, &loss) < 0 ||
		    ops->grad_norm(g, &norm) < 0) {
			fprintf(stderr, "bench-cuda: %s\n", ops->last_error(g));
			return 1;
		}
		a.grad_scale = norm > 1.0f ? 1.0f / norm : 1.0f;
		if (ops->adamw(g, &a) < 0) {
			fprintf(stderr, "bench-cuda: %s\n", ops->last_error(g));
			return 1;
		}
		dt = (util_now_us() - t0) / 1e6;
		if (s > warm) {
			sum += dt;
			if (dt < best)
				best = dt;
		}
		printf("step %2d: loss %.4f, norm %.3f, %.1f ms, %.0f tok/s\n", s, loss, norm,
		       dt * 1e3, B * T / dt);
	}
	ops->destroy(g);
	ops->probe_flops(1.0, &flops, err, sizeof(err));
	double mean = sum / steps, tps = B * T / mean;
	printf("bench-cuda: %s, GPT-2 L=%d C=%d V=%d, %llu params, B=%d T=%d bf16\n", info.name,
	       cfg.n_layer, cfg.n_embd, cfg.vocab_size,
	       (unsigned long long)modelcfg_n_params(&cfg), B, T);
	printf("bursar_cuda tokens_per_s=%.0f step_ms=%.2f best_ms=%.2f mfu_datasheet=%.3f "
	       "mfu_measured=%.3f matmul_tflops=%.1f\n",
	       tps, mean * 1e3, best * 1e3, info.peak_bf16 > 0 ? tps * fpt / info.peak_bf16 : 0,
	       flops > 0 ? tps * fpt / flops : 0, flops / 1e12);
	model_free(&host);
	free(in);
	free(tg);
	return 0;
}

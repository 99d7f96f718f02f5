/* gpu.h — the CUDA backend of bursar-train, seen from the C side.
 *
 * The backend is a shared library (build/lib/libbursar-cuda.so, built by
 * nvcc when the CUDA toolkit is present) that bursar-train loads with
 * dlopen() when it runs with `--device cuda` (or `auto` and a GPU answers).
 * Everything crosses this boundary as plain C: one table of functions,
 * returned by bursar_gpu_ops(), and an opaque model handle.
 *
 * On the device a model keeps fp32 master weights, their bf16 copy (what
 * the matmuls read), fp32 gradients and the AdamW moments. Activations are
 * bf16 except the residual stream and the norm statistics (fp32). The
 * parameter layout is the host's (model.h: the tensors back to back, in the
 * same order), so weights, gradients and moments travel as one flat array.
 * Every reduction is done in a fixed order: the same inputs give the same
 * bits, run after run.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GPU_ABI_VERSION 3
#define GPU_MAX_TENSORS 20

struct gpu_model;

struct gpu_info {
	char name[128];
	int sm_count, cc_major, cc_minor;
	size_t mem_total, mem_free;
	double peak_bf16; /* the card's dense bf16 FLOP/s from its datasheet, 0: unknown */
};

/* Shapes: arch 0 GPT-2, 1 Llama (model.h's ARCH_*). */
struct gpu_dims {
	int arch;
	int L, NH, C, V, maxT;
	float eps;
	int KVH, hd, F;               /* llama: kv heads, head dim, MLP width */
	int tied;                     /* llama: lm_head is the embedding */
	const float *rope_cos, *rope_sin; /* llama: host (rope_T, hd/2), copied by create */
	int rope_T;
	size_t sizes[GPU_MAX_TENSORS]; /* elements of each host tensor, model.h order */
	int decays[GPU_MAX_TENSORS];   /* weight decay applies */
};

struct gpu_adamw_args {
	float lr, beta1, beta2, eps, weight_decay;
	float grad_scale; /* multiplies the gradients first (clipping) */
	long t;           /* 1-based update number, for the bias corrections */
};

struct gpu_ops {
	int abi;
	/* 0 when a usable device exists; else -errno and a sentence in err. */
	int (*probe)(struct gpu_info *info, char *err, size_t errlen);
	/* Device bytes a model of these shapes needs for micro-batch (B, T). */
	uint64_t (*memory_bytes)(const struct gpu_dims *d, int B, int T);
	int (*create)(struct gpu_model **out, const struct gpu_dims *d, int B, int T, char *err,
		      size_t errlen);
	void (*destroy)(struct gpu_model *m);
	/* Host flat arrays of n_params floats (the host layout). */
	int (*set_params)(struct gpu_model *m, const float *host);
	int (*get_params)(struct gpu_model *m, float *host);
	int (*get_grads)(struct gpu_model *m, float *host);
	int (*set_grads)(struct gpu_model *m, const float *host);
	int (*get_moments)(struct gpu_model *m, float *mom1, float *mom2);
	int (*set_moments)(struct gpu_model *m, const float *mom1, const float *mom2);
	int (*zero_grads)(struct gpu_model *m);
	/* Forward over (B,T) token ids; with backward, adds grad_scale × the
	 * gradient of the mean loss into the gradients. *loss: the mean loss. */
	int (*step)(struct gpu_model *m, const int *inputs, const int *targets, int backward,
		    float grad_scale, float *loss);
	int (*grad_norm)(struct gpu_model *m, float *norm);
	int (*adamw)(struct gpu_model *m, const struct gpu_adamw_args *a);
	/* Sustained bf16 matmul FLOP/s over about `seconds` (8192^3 products). */
	int (*probe_flops)(double seconds, double *flops, char *err, size_t errlen);
	/* Flash attention against the plain reference kernels on random data:
	 * relative errors of the output and of dq/dk/dv. Self-check and tests. */
	int (*attn_check)(int B, int T, int NH, int HS, uint64_t seed, double *err_out,
			  double *err_grad, char *err, size_t errlen);
	/* The last CUDA or cuBLAS error of this model, as a sentence. */
	const char *(*last_error)(struct gpu_model *m);
	/* The fused paths against the unfused ones on random data (tests):
	 *   which 0: the cross-entropy kernels against the three-pass one over
	 *            N rows of vocabulary M (err_out: losses, the logits'
	 *            gradient off the target column, on it);
	 *   which 1: a GELU layer (N,K) @ (K,M) + bias, the GELU epilogue
	 *            against matmul + kernel (err_out: output, pre-activation);
	 *   which 2: its backward, the GELU-derivative and bias-gradient
	 *            epilogues against matmul + kernels (err_out: input
	 *            gradient, bias gradient, weight gradient).
	 * Relative L2 errors; -ENOTSUP and a sentence when cuBLASLt offers no
	 * such epilogue on this GPU. */
	int (*fused_check)(int which, int N, int M, int K, uint64_t seed, double err_out[3],
			   char *err, size_t errlen);
};

/* The one symbol the library exports. */
const struct gpu_ops *bursar_gpu_ops(void);

/* Host side (gpu_load.c): dlopen the library once; NULL and a sentence in
 * err when it or a device is missing. BURSAR_CUDA_LIB overrides the path
 * (default: ../lib/libbursar-cuda.so beside the executable). */
const struct gpu_ops *gpu_load(char *err, size_t errlen);
struct model;
/* The backend's shapes, sizes and decay flags of a CPU model. */
void gpu_dims_of(const struct model *g, struct gpu_dims *d);

#ifdef __cplusplus
}
#endif

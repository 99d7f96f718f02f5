/* gpt2 — the GPT-2 model of bursar-train on the CPU: parameters, forward,
 * backward. The readable reference the CUDA backend is checked against.
 *
 * Weights are stored in Hugging Face's layout (Conv1D matrices are (in, out))
 * so checkpoints are read and written without transposes. All buffers are
 * allocated by gpt2_build() for a fixed micro-batch (B, T); forward and
 * backward allocate nothing.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "bundle.h"

#define GPT2_NUM_TENSORS 16

struct gpt2_dims {
	int L, NH, C, V, maxT;
	float eps;
	double eps64; /* as configured, for config.json */
};

struct gpt2 {
	struct gpt2_dims d;
	int B, T;
	size_t n_params;
	size_t sizes[GPT2_NUM_TENSORS]; /* elements of each parameter tensor */
	float *params;                  /* n_params, the tensors back to back */
	float *grads;                   /* n_params, same layout */
	float *p[GPT2_NUM_TENSORS];     /* tensor i inside params */
	float *g[GPT2_NUM_TENSORS];     /* tensor i inside grads */
	float *acts;                    /* forward activations, see gpt2.c */
	float *dacts;                   /* backward scratch */
	float *attn_scratch;            /* per thread, 2T floats */
	int *inputs, *targets;          /* (B,T) */
	float loss;                     /* mean loss of the last forward */
	/* activations (pointers into acts) */
	float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *residual2, *ln2,
		*ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3, *lnf, *lnf_mean,
		*lnf_rstd, *probs, *losses;
	/* backward buffers (pointers into dacts) */
	float *dres, *dC, *d3, *d4, *dlogits;
};

/* Names, in checkpoint order, and the tensor index and layer of each. */
struct gpt2_tensor_ref {
	char name[64];
	int idx;   /* tensor index 0..GPT2_NUM_TENSORS-1 */
	int layer; /* -1 for whole-model tensors */
	int ndim;
	int64_t shape[2];
};

/* Bytes gpt2_build() would allocate for this config and micro-batch. */
uint64_t gpt2_memory_bytes(const struct model_config *m, int B, int T);
/* Allocates the model for micro-batch (B, T). Returns 0 or -ENOMEM/-EINVAL. */
int gpt2_build(struct gpt2 *g, const struct model_config *m, int B, int T);
void gpt2_free(struct gpt2 *g);
/* GPT-2 init from seed: N(0, 0.02); residual projections N(0, 0.02/sqrt(2L));
 * biases 0; LayerNorm weight 1, bias 0. Same bits on every machine. */
void gpt2_init_weights(struct gpt2 *g, uint64_t seed);
/* inputs, targets (B,T) token ids < V. Returns the mean cross-entropy. */
float gpt2_forward(struct gpt2 *g, const int *inputs, const int *targets);
/* Gradients of the last forward's mean loss, written (not added) to grads. */
void gpt2_backward(struct gpt2 *g);

/* Number of named checkpoint tensors (2 + 12 per layer + 2). */
int gpt2_n_named(const struct gpt2 *g);
/* The i-th named tensor: its HF name, shape and data inside params. */
float *gpt2_named(const struct gpt2 *g, int i, struct gpt2_tensor_ref *ref);
/* True for tensors that take weight decay (matrices and embeddings). */
int gpt2_decays(int idx);

/* model — the transformer of bursar-train on the CPU: GPT-2 (gpt2.c) or
 * Llama (llama.c) behind one struct and one API. Parameters, forward,
 * backward, and the Hugging Face names of every tensor. The readable
 * reference the CUDA backend is checked against.
 *
 * Weights are stored in Hugging Face's layout (GPT-2 Conv1D matrices are
 * (in, out), Llama nn.Linear matrices (out, in)) so checkpoints are read and
 * written without transposes. All buffers are allocated by model_build() for
 * a fixed micro-batch (B, T); forward and backward allocate nothing.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "bundle.h"

#define MODEL_MAX_TENSORS 20

enum { ARCH_GPT2, ARCH_LLAMA };

struct model_dims {
	int arch;
	int L, NH, C, V, maxT;
	int KVH, hd, F;      /* kv heads, head dim, MLP width */
	int tied;            /* lm_head is the token embedding */
	int attn_bias, mlp_bias;
	float eps;
	struct model_config cfg; /* as configured, for config.json */
};

struct model {
	struct model_dims d;
	int B, T;
	int n_tensors;
	size_t n_params;
	size_t sizes[MODEL_MAX_TENSORS]; /* elements of each parameter tensor (0: absent) */
	float *params;                   /* n_params, the tensors back to back */
	float *grads;                    /* n_params, same layout */
	float *p[MODEL_MAX_TENSORS];     /* tensor i inside params */
	float *g[MODEL_MAX_TENSORS];     /* tensor i inside grads */
	float *acts;                     /* forward activations, see model.c */
	float *dacts;                    /* backward scratch */
	float *attn_scratch;             /* per thread, 2T floats */
	float *rope_cos, *rope_sin;      /* llama: (maxT, hd/2) */
	int *inputs, *targets;           /* (B,T) */
	float loss;                      /* mean loss of the last forward */
	/* activations (pointers into acts); llama uses ln* as its RMSNorms */
	float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *residual2, *ln2,
		*ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3, *lnf, *lnf_mean,
		*lnf_rstd, *probs, *losses;
	float *gate, *up, *swi; /* llama MLP: (L,BT,F) each */
	/* backward buffers (pointers into dacts) */
	float *dres, *dC, *d3, *d4, *dlogits;
	/* Called by backward once layer l's gradients are final (last layer
	 * first) and with -1 when all are; NULL: none (see bucket.h). */
	void (*grad_ready)(void *ctx, int layer);
	void *grad_ready_ctx;
};

/* A named checkpoint tensor: its HF name, tensor index, layer and shape. */
struct model_tensor_ref {
	char name[64];
	int idx;   /* tensor index 0..MODEL_MAX_TENSORS-1 */
	int layer; /* -1 for whole-model tensors */
	int ndim;
	int64_t shape[2];
};

/* Bytes model_build() would allocate for this config and micro-batch. */
uint64_t model_memory_bytes(const struct model_config *m, int B, int T);
/* Allocates the model for micro-batch (B, T). Returns 0 or -ENOMEM/-EINVAL. */
int model_build(struct model *g, const struct model_config *m, int B, int T);
void model_free(struct model *g);
/* Init from seed: matrices N(0, 0.02) (GPT-2: residual projections
 * N(0, 0.02/sqrt(2L))); biases 0; norm weights 1. Same bits everywhere. */
void model_init_weights(struct model *g, uint64_t seed);
/* inputs, targets (B,T) token ids < V. Returns the mean cross-entropy. */
float model_forward(struct model *g, const int *inputs, const int *targets);
/* Gradients of the last forward's mean loss, written (not added) to grads. */
void model_backward(struct model *g);

/* Number of named checkpoint tensors. */
int model_n_named(const struct model *g);
/* The i-th named tensor: its HF name, shape and data inside params. */
float *model_named(const struct model *g, int i, struct model_tensor_ref *ref);
/* True for tensors that take weight decay (matrices and embeddings). */
int model_decays(const struct model *g, int idx);
/* True for tensors with one slice per layer (layer outermost). */
int model_per_layer(const struct model *g, int idx);

/* The two families (gpt2.c, llama.c), called through the functions above. */
enum { WTE, WPE, LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW,
       FCPROJB, LNFW, LNFB, GPT2_NUM_TENSORS };
enum { LL_EMB, LL_ATTN_NORM, LL_WQ, LL_WK, LL_WV, LL_WO, LL_BQ, LL_BK, LL_BV, LL_BO,
       LL_MLP_NORM, LL_WGATE, LL_WUP, LL_WDOWN, LL_BGATE, LL_BUP, LL_BDOWN, LL_NORM, LL_HEAD,
       LLAMA_NUM_TENSORS };
float gpt2_forward(struct model *g, const int *inputs, const int *targets);
void gpt2_backward(struct model *g);
float llama_forward(struct model *g, const int *inputs, const int *targets);
void llama_backward(struct model *g);

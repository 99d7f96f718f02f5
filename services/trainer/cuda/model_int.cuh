/* model_int.cuh — the device model shared by model.cu (GPT-2, buffers,
 * AdamW, the ops table) and llama.cu (Llama's forward and backward): the
 * struct, the cuBLASLt wrapper and the timing marks.
 */
#pragma once
#include "common.cuh"
#include "gpu.h"

#include <cublasLt.h>
#include <errno.h>
#include <stdio.h>

/* GPT-2's tensors in model.h's order */
enum { WTE, WPE, LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW,
       FCPROJB, LNFW, LNFB, NT };

/* Llama's tensors in model.h's order */
enum { LL_EMB, LL_ATTN_NORM, LL_WQ, LL_WK, LL_WV, LL_WO, LL_BQ, LL_BK, LL_BV, LL_BO,
       LL_MLP_NORM, LL_WGATE, LL_WUP, LL_WDOWN, LL_BGATE, LL_BUP, LL_BDOWN, LL_NORM, LL_HEAD,
       LL_NT };
#define MAX_NT LL_NT

/* BURSAR_CUDA_TIMING=2: time per kind of work, from events between calls */
enum { T_GEMM, T_ATTF, T_ATTB, T_LN, T_LNB, T_GELU, T_CE, T_BIAS, T_ENC, T_NCAT };
static const char *const t_names[T_NCAT] = {"matmul", "attn fwd", "attn bwd", "layernorm",
					    "layernorm bwd", "gelu", "cross-entropy", "bias grads",
					    "embeddings"};
#define T_MAXEV 1024

#define GEMM_CACHE 96
#define WORKSPACE (32u << 20)

struct gemm_key {
	int M, N, K, ta, tb, lda, ldb, ldd, f32, bias, accum, act, aux_ld, bgrad;
};

/* What a matmul's epilogue does besides adding a bias (gemm_ex). */
enum { EPI_NONE, EPI_GELU, EPI_DGELU };
enum { BGRAD_NONE, BGRAD_A, BGRAD_B };
struct gemm_epi {
	int act;           /* EPI_GELU: D = gelu(A.B + bias), aux = A.B + bias;
			      EPI_DGELU: D = A.B * gelu'(aux) */
	bf16 *aux;         /* M x N, column-major, leading dimension aux_ld (bf16) */
	int aux_ld;
	int bgrad;         /* BGRAD_A: the M row sums of op(A) over K; BGRAD_B: the N
			      column sums of op(B) over K; written (not added) to bgrad_out */
	float *bgrad_out;
};

struct gemm_slot {
	struct gemm_key k;
	cublasLtMatmulAlgo_t algo;
};

struct gpu_model {
	struct gpu_dims d;
	int B, T, N, C, L, NH, V, Vp;
	size_t n_host, n_dev;
	int nt;      /* tensors of the architecture */
	size_t hoff[MAX_NT], off[MAX_NT], dsz[MAX_NT];
	float *params, *grads, *mom1, *mom2;
	bf16 *params_bf;
	/* activations */
	float *encoded, *res2, *res3, *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lnf_mean,
		*lnf_rstd, *lse;
	bf16 *ln1, *ln2, *qkv, *atty, *fch, *fchg, *lnf, *logits, *tmp;
	/* backward */
	float *dres, *scratch, *attn_scratch, *losses, *dloss;
	bf16 *dres_bf, *dC, *d4, *dqkv;
	int *d_in, *d_tg, *d_order, *d_starts, *d_toks;
	int *h_in, *h_tg, *h_order, *h_starts, *h_toks, *h_count; /* pinned except count */
	float *h_loss;
	/* llama (llama.cu): Q, KV query and key/value widths, F MLP width */
	int KVH, hd, Q, KV, QKV, F;
	bf16 *qkv_ll, *gate, *up, *swi, *dqkv_ll, *dgate, *dup;
	float *rstd1, *rstd2, *rstdf, *rope_cos, *rope_sin, *dCf;
	int U, naive_attn, flash2, timing;
	/* BURSAR_CUDA_FUSED=1: GELU in the matmul epilogues, bias gradients from
	 * the weight-gradient matmuls; no_*: cuBLASLt had no kernel for it here */
	int fuse_gelu, fuse_bgrad, no_epi_gelu, no_epi_dgelu, no_epi_bgrad;
	int ce_mode; /* k_crossentropy_mode() at create */
	float *bgrad_tmp; /* widest row, for the bias-gradient epilogue */
	cudaEvent_t ev[3];
	cudaEvent_t *tev; /* T_MAXEV, timing 2 only */
	int tcat[T_MAXEV], nev;
	cudaStream_t st;
	cublasLtHandle_t lt;
	unsigned char *ws;
	struct gemm_slot cache[GEMM_CACHE];
	int n_cache;
	char err[256];
};

/* End of a stretch of work of kind cat (timing 2). */
static inline void mark(struct gpu_model *m, int cat)
{
	if (m->timing < 2 || m->nev >= T_MAXEV)
		return;
	cudaEventRecord(m->tev[m->nev], m->st);
	m->tcat[m->nev++] = cat;
}

/* D (M x N, col-major, ldd) (+)= op(A) (M x K) . op(B) (K x N), bf16 operands, fp32
 * accumulation; D fp32 (f32) or bf16; bias (M) bf16 added when not NULL. */
int gemm(struct gpu_model *m, void *D, int f32, const bf16 *A, int ta, int lda, const bf16 *Bm,
	 int tb, int ldb, int M, int N, int K, int ldd, int accum, const bf16 *bias);
/* The same with an epilogue; -ENOTSUP (nothing done; the reason in m->err)
 * when cuBLASLt has no kernel for it: the caller does it the unfused way. */
int gemm_ex(struct gpu_model *m, void *D, int f32, const bf16 *A, int ta, int lda,
	    const bf16 *Bm, int tb, int ldb, int M, int N, int K, int ldd, int accum,
	    const bf16 *bias, const struct gemm_epi *epi);

/* logits of lnf against tensor head (Vp rows), the mean loss into dloss and,
 * with grad, the logits' gradient in place (model.cu) */
int logits_and_loss(struct gpu_model *m, int head, int grad, float grad_scale);

/* model.cu, for checks.cu too: a model (gpu.h's create/destroy), the
 * vocabulary padded to a multiple of 64, and the MLP's GELU layer forward
 * (pre = inp @ w + bias, out = gelu(pre)) and any linear layer's backward
 * (dinp, times gelu'(pre) when pre is given; dw += ; dbias += ), each fused
 * in cuBLASLt's epilogues under BURSAR_CUDA_FUSED where it offers them */
int gpu_create(struct gpu_model **out, const struct gpu_dims *d, int B, int T, char *err,
	       size_t errlen);
void gpu_destroy(struct gpu_model *m);
int pad_v(int V);
int linear_gelu_forward(struct gpu_model *m, bf16 *out, bf16 *pre, const bf16 *inp,
			const bf16 *w, const bf16 *bias, int N, int IC, int OC);
int linear_backward(struct gpu_model *m, bf16 *dinp, float *dw, float *dbias, const bf16 *dout,
		    const float *dout_f32, const bf16 *inp, const bf16 *w, int N, int IC, int OC,
		    const bf16 *pre);

/* checks.cu: gpu.h's attn_check and fused_check */
int gpu_attn_check(int B, int T, int NH, int HS, uint64_t seed, double *err_out,
		   double *err_grad, char *err, size_t errlen);
int gpu_fused_check(int which, int N, int M, int K, uint64_t seed, double err_out[3],
		    char *err, size_t errlen);

/* llama.cu */
int llama_alloc(struct gpu_model *m, char *err, size_t errlen);
void llama_free(struct gpu_model *m);
uint64_t llama_act_bytes(const struct gpu_dims *d, int B, int T);
int llama_forward(struct gpu_model *m, int grad, float grad_scale);
int llama_backward(struct gpu_model *m);

#define PF(i) (m->params + m->off[i])
#define PB(i) (m->params_bf + m->off[i])
#define GR(i) (m->grads + m->off[i])

#define CK(m, call)                                                                           \
	do {                                                                                  \
		cudaError_t e_ = (call);                                                      \
		if (e_ != cudaSuccess) {                                                      \
			snprintf((m)->err, sizeof((m)->err), "%s: %s", #call,                 \
				 cudaGetErrorString(e_));                                     \
			return -EIO;                                                          \
		}                                                                             \
	} while (0)

#define CKL(m, call)                                                                          \
	do {                                                                                  \
		cublasStatus_t s_ = (call);                                                   \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                            \
			snprintf((m)->err, sizeof((m)->err), "%s: cuBLAS status %d", #call,   \
				 (int)s_);                                                    \
			return -EIO;                                                          \
		}                                                                             \
	} while (0)


/* common.cuh — what the CUDA files of bursar-train share: bf16 helpers,
 * launch geometry, and the kernels' C++ declarations (kernels.cu,
 * attention.cu) called by model.cu. Shapes: N rows (B*T), C channels,
 * NH heads, HS head size, V vocabulary, Vp V padded to a multiple of 64.
 */
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* Partial-sum rows used by the deterministic reductions. */
#define LN_BWD_BLOCKS 128
#define LN_BWD_WARPS 8
#define COLSUM_CHUNKS 64
#define NORM_BLOCKS 264

/* ---- kernels.cu ---- */
// out (N,C) fp32 = wte[inp] + wpe[t]
void k_encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int N,
		       int T, int C, cudaStream_t st);
// dwte[tok] += sum of dres over the positions holding tok (order[] sorted by
// token, starts[u]..starts[u+1] of unique token toks[u]); dwpe[t] += sum_b
void k_encoder_backward(float *dwte, float *dwpe, const float *dres, const int *order,
			const int *starts, const int *toks, int U, int B, int T, int C,
			cudaStream_t st);
// res (N,C) = a + b (b NULL: res = a, not written when res == a);
// ln (N,C) bf16 = layernorm(res) with w, bias; mean, rstd (N)
void k_residual_layernorm(float *res, bf16 *ln, float *mean, float *rstd, const float *a,
			  const bf16 *b, const float *w, const float *bias, int N, int C, float eps,
			  cudaStream_t st);
// dres (N,C) (+)= layernorm'(dout); dres_bf = bf16(dres); dw, db (C) +=
void k_layernorm_backward(float *dres, bf16 *dres_bf, float *dw, float *db, float *scratch,
			  const bf16 *dout, const float *inp, const float *w, const float *mean,
			  const float *rstd, int N, int C, int overwrite, cudaStream_t st);
// out = gelu_tanh(inp), n elements (n % 8 == 0)
void k_gelu_forward(bf16 *out, const bf16 *inp, size_t n, cudaStream_t st);
// d *= gelu_tanh'(inp)
void k_gelu_backward(bf16 *d, const bf16 *inp, size_t n, cudaStream_t st);
// out (OC) += column sums of x (N,OC); bf16 or fp32 rows
void k_colsum_bf16(float *out, float *scratch, const bf16 *x, int N, int OC, cudaStream_t st);
void k_colsum_f32(float *out, float *scratch, const float *x, int N, int OC, cudaStream_t st);
// losses (N); logits (N,Vp) bf16 turned into dlogits * dscale when grad, by
// one of three kernels: three passes (the reference), the row in registers
// (one read, one write), online softmax (two reads, one write)
enum { CE_3PASS, CE_REGS, CE_ONLINE };
// BURSAR_CUDA_CE / BURSAR_CUDA_FUSED as a mode
enum { CE_MODE_AUTO, CE_MODE_3PASS, CE_MODE_ONLINE };
int k_crossentropy_mode(void);
// the variant a mode runs for this row length (mode -1: the environment's);
// rows whose Vp is not a multiple of 8 always take the three passes
int k_crossentropy_variant(int V, int Vp, int mode);
void k_crossentropy_as(int variant, float *losses, bf16 *logits, const int *targets, int N, int V,
		       int Vp, float dscale, int grad, cudaStream_t st);
// *out = mean of x (n), one block, fixed order
void k_mean(float *out, const float *x, int n, cudaStream_t st);
// *out = sum of squares of x (n) in fixed order; scratch NORM_BLOCKS floats
void k_sumsq(float *out, float *scratch, const float *x, size_t n, cudaStream_t st);
// AdamW on n elements; p_bf = bf16(p)
void k_adamw(float *p, bf16 *p_bf, const float *g, float *m, float *v, size_t n, float lr,
	     float b1, float b2, float c1, float c2, float eps, float wd, float gscale,
	     cudaStream_t st);
void k_f32_to_bf16(bf16 *out, const float *in, size_t n, cudaStream_t st);
void k_bf16_to_f32(float *out, const bf16 *in, size_t n, cudaStream_t st);
// x (n) = uniform(-1, 1) * scale from a counter hash (tests, probes)
void k_fill_random(bf16 *x, size_t n, uint64_t seed, float scale, cudaStream_t st);

// llama.cu's helpers: demb[tok] += dres (as k_encoder_backward, no positions);
// column sums of x (N rows, row pitch ld); out (C) += sum of part's nrows rows
void k_embed_backward(float *demb, const float *dres, const int *order, const int *starts,
		      const int *toks, int U, int C, cudaStream_t st);
void k_colsum_bf16_ld(float *out, float *scratch, const bf16 *x, int N, int OC, int ld,
		      cudaStream_t st);
void k_rows_sum(float *out, const float *part, int nrows, int C, cudaStream_t st);

/* ---- attention.cu ---- */
/* qkv (B,T,3,NH,HS) bf16; out (B,T,NH,HS); lse (B,NH,T) fp32 */
struct attn_args {
	int B, T, NH, HS;
	float scale;
	int flash2; /* flash2.cu's kernels where they apply (head size 64), else attention.cu's */
};
// 0, or -EINVAL when the flash kernels don't cover the shape (naive then)
int attn_flash_supported(const struct attn_args *a);
void k_attn_forward(bf16 *out, float *lse, const bf16 *qkv, const struct attn_args *a,
		    int naive, cudaStream_t st);
// dqkv (B,T,3,NH,HS) bf16 written; scratch: B*NH*T floats (flash) or
// B*T*3*NH*HS floats (naive)
void k_attn_backward(bf16 *dqkv, float *scratch, const bf16 *dout, const bf16 *out,
		     const float *lse, const bf16 *qkv, const struct attn_args *a, int naive,
		     cudaStream_t st);
size_t attn_scratch_floats(const struct attn_args *a, int naive);

/* ---- flash2.cu: head size 64, T % 64 == 0 ---- */
int flash2_supported(const struct attn_args *a);
void flash2_forward(bf16 *out, float *lse, const bf16 *qkv, const struct attn_args *a,
		    cudaStream_t st);
void flash2_backward(bf16 *dqkv, const float *D, const bf16 *dout, const float *lse,
		     const bf16 *qkv, const struct attn_args *a, cudaStream_t st);

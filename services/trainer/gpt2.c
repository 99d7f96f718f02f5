/* gpt2 — GPT-2 forward and backward on the CPU (OpenMP + OpenBLAS sgemm).
 *
 * Follows llm.c's structure: one function per layer, forward and backward,
 * with shape comments. B batch, T time, C channels, NH heads, hs = C/NH,
 * V vocabulary, L layers. Differences from llm.c: matrices are (in, out) as
 * in HF's Conv1D, matmuls go to cblas_sgemm, and the backward pass keeps one
 * residual-stream gradient instead of per-layer gradient activations.
 * Buffers and names live in model.c; attention and cross-entropy in layers.c.
 */
#include "layers.h"
#include "model.h"
#include "vmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- layers ------------------------------------------------------------ */

// out (B,T,C) = wte[inp] + wpe[t]
static void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B,
			    int T, int C)
{
#pragma omp parallel for collapse(2)
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			float *o = out + ((size_t)b * T + t) * C;
			const float *we = wte + (size_t)inp[b * T + t] * C, *pe = wpe + (size_t)t * C;
			for (int i = 0; i < C; i++)
				o[i] = we[i] + pe[i];
		}
}

static void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B,
			     int T, int C)
{
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			const float *d = dout + ((size_t)b * T + t) * C;
			float *dw = dwte + (size_t)inp[b * T + t] * C, *dp = dwpe + (size_t)t * C;
			for (int i = 0; i < C; i++) {
				dw[i] += d[i];
				dp[i] += d[i];
			}
		}
}

// out (N,C) = (inp - mean) * rstd * w + b; mean, rstd (N) kept for backward
static void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
			      const float *w, const float *bias, int N, int C, float eps)
{
#pragma omp parallel for
	for (int n = 0; n < N; n++) {
		const float *x = inp + (size_t)n * C;
		float *o = out + (size_t)n * C, m = 0, v = 0, s;

		for (int i = 0; i < C; i++)
			m += x[i];
		m /= C;
		for (int i = 0; i < C; i++)
			v += (x[i] - m) * (x[i] - m);
		s = 1.0f / sqrtf(v / C + eps);
		for (int i = 0; i < C; i++)
			o[i] = (x[i] - m) * s * w[i] + bias[i];
		mean[n] = m;
		rstd[n] = s;
	}
}

// dinp (N,C) += layernorm'; dw, db (C) +=
static void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
			       const float *inp, const float *w, const float *mean,
			       const float *rstd, int N, int C)
{
	for (int n = 0; n < N; n++) {
		const float *d = dout + (size_t)n * C, *x = inp + (size_t)n * C;
		float *di = dinp + (size_t)n * C, m = mean[n], s = rstd[n];
		float dmean = 0, dnmean = 0;

		for (int i = 0; i < C; i++) {
			float norm = (x[i] - m) * s, dn = w[i] * d[i];
			dmean += dn;
			dnmean += dn * norm;
		}
		dmean /= C;
		dnmean /= C;
		for (int i = 0; i < C; i++) {
			float norm = (x[i] - m) * s, dn = w[i] * d[i];
			db[i] += d[i];
			dw[i] += norm * d[i];
			di[i] += (dn - dmean - norm * dnmean) * s;
		}
	}
}

// out (N,OC) = inp (N,IC) @ w (IC,OC) + bias (OC)
static void matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N,
			   int IC, int OC)
{
	for (int n = 0; n < N; n++)
		memcpy(out + (size_t)n * OC, bias, (size_t)OC * 4);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, inp, IC, w, OC,
		    1.0f, out, OC);
}

// dinp (N,IC) = dout @ w^T (overwritten); dw (IC,OC) += inp^T @ dout; dbias (OC) +=
static void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
			    const float *inp, const float *w, int N, int IC, int OC)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, OC, 1.0f, dout, OC, w, OC, 0.0f,
		    dinp, IC);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, OC, N, 1.0f, inp, IC, dout, OC,
		    1.0f, dw, OC);
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++)
			dbias[o] += dout[(size_t)n * OC + o];
}

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_CHUNK 16384		       /* floats per OpenMP work item */

// gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), n floats
VM_CLONES static void gelu_span(float *out, const float *inp, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float x = inp[i];
		out[i] = 0.5f * x * (1.0f + vm_tanh(GELU_SCALE * (x + 0.044715f * x * x * x)));
	}
}

// d (n) *= gelu'(inp), in place
VM_CLONES static void gelu_backward_span(float *d, const float *inp, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float x = inp[i];
		float th = vm_tanh(GELU_SCALE * (x + 0.044715f * x * x * x));
		float sech2 = 1.0f - th * th;
		d[i] *= 0.5f * (1.0f + th) +
			0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
	}
}

static void gelu_forward(float *out, const float *inp, size_t N)
{
#pragma omp parallel for
	for (size_t c = 0; c < N; c += GELU_CHUNK)
		gelu_span(out + c, inp + c, N - c < GELU_CHUNK ? N - c : GELU_CHUNK);
}

static void gelu_backward_inplace(float *d, const float *inp, size_t N)
{
#pragma omp parallel for
	for (size_t c = 0; c < N; c += GELU_CHUNK)
		gelu_backward_span(d + c, inp + c, N - c < GELU_CHUNK ? N - c : GELU_CHUNK);
}

/* ---- model ------------------------------------------------------------- */

float gpt2_forward(struct model *g, const int *inputs, const int *targets)
{
	int B = g->B, T = g->T, C = g->d.C, NH = g->d.NH, V = g->d.V, BT = B * T;
	size_t BTC = (size_t)BT * C;
	struct attn_shape as = {.B = B, .T = T, .NH = NH, .KVH = NH, .hs = C / NH,
				.row = 3 * (size_t)C, .koff = C, .voff = 2 * (size_t)C};
	float *residual;

	memcpy(g->inputs, inputs, (size_t)BT * sizeof(int));
	memcpy(g->targets, targets, (size_t)BT * sizeof(int));
	encoder_forward(g->encoded, inputs, g->p[WTE], g->p[WPE], B, T, C);
	for (int l = 0; l < g->d.L; l++) {
		size_t lc = (size_t)l * C;
		float *ln1 = g->ln1 + l * BTC, *qkv = g->qkv + l * BTC * 3;
		float *atty = g->atty + l * BTC, *att = g->att + (size_t)l * B * NH * T * T;
		float *attproj = g->attproj + l * BTC, *res2 = g->residual2 + l * BTC;
		float *ln2 = g->ln2 + l * BTC, *fch = g->fch + l * BTC * 4;
		float *fchg = g->fch_gelu + l * BTC * 4, *fcproj = g->fcproj + l * BTC;
		float *res3 = g->residual3 + l * BTC;

		residual = l == 0 ? g->encoded : g->residual3 + (l - 1) * BTC;
		layernorm_forward(ln1, g->ln1_mean + (size_t)l * BT, g->ln1_rstd + (size_t)l * BT,
				  residual, g->p[LN1W] + lc, g->p[LN1B] + lc, BT, C, g->d.eps);
		matmul_forward(qkv, ln1, g->p[QKVW] + lc * 3 * C, g->p[QKVB] + lc * 3, BT, C,
			       3 * C);
		attention_forward(atty, att, qkv, &as);
		matmul_forward(attproj, atty, g->p[ATTPROJW] + lc * C, g->p[ATTPROJB] + lc, BT, C,
			       C);
		for (size_t i = 0; i < BTC; i++)
			res2[i] = residual[i] + attproj[i];
		layernorm_forward(ln2, g->ln2_mean + (size_t)l * BT, g->ln2_rstd + (size_t)l * BT,
				  res2, g->p[LN2W] + lc, g->p[LN2B] + lc, BT, C, g->d.eps);
		matmul_forward(fch, ln2, g->p[FCW] + lc * 4 * C, g->p[FCB] + lc * 4, BT, C, 4 * C);
		gelu_forward(fchg, fch, BTC * 4);
		matmul_forward(fcproj, fchg, g->p[FCPROJW] + lc * 4 * C, g->p[FCPROJB] + lc, BT,
			       4 * C, C);
		for (size_t i = 0; i < BTC; i++)
			res3[i] = res2[i] + fcproj[i];
	}
	residual = g->residual3 + (size_t)(g->d.L - 1) * BTC;
	layernorm_forward(g->lnf, g->lnf_mean, g->lnf_rstd, residual, g->p[LNFW], g->p[LNFB], BT, C,
			  g->d.eps);
	// logits (BT,V) = lnf (BT,C) @ wte^T; kept in probs, then softmaxed in place
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, V, C, 1.0f, g->lnf, C, g->p[WTE],
		    C, 0.0f, g->probs, V);
	g->loss = crossentropy_forward(g->probs, g->losses, g->probs, targets, BT, V);
	return g->loss;
}

void gpt2_backward(struct model *g)
{
	int B = g->B, T = g->T, C = g->d.C, NH = g->d.NH, V = g->d.V, BT = B * T, L = g->d.L;
	size_t BTC = (size_t)BT * C;
	struct attn_shape as = {.B = B, .T = T, .NH = NH, .KVH = NH, .hs = C / NH,
				.row = 3 * (size_t)C, .koff = C, .voff = 2 * (size_t)C};

	memset(g->grads, 0, g->n_params * 4);
	crossentropy_backward(g->dlogits, g->probs, g->targets, BT, V);
	// dlnf (BT,C) = dlogits @ wte; dwte += dlogits^T @ lnf
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, C, V, 1.0f, g->dlogits, V,
		    g->p[WTE], C, 0.0f, g->dC, C);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, BT, 1.0f, g->dlogits, V, g->lnf,
		    C, 1.0f, g->g[WTE], C);
	memset(g->dres, 0, BTC * 4);
	layernorm_backward(g->dres, g->g[LNFW], g->g[LNFB], g->dC,
			   g->residual3 + (size_t)(L - 1) * BTC, g->p[LNFW], g->lnf_mean,
			   g->lnf_rstd, BT, C);
	// dres holds dL/d residual3[l]; each block adds its branch into it
	for (int l = L - 1; l >= 0; l--) {
		size_t lc = (size_t)l * C;
		float *residual = l == 0 ? g->encoded : g->residual3 + (l - 1) * BTC;

		matmul_backward(g->d4, g->g[FCPROJW] + lc * 4 * C, g->g[FCPROJB] + lc, g->dres,
				g->fch_gelu + l * BTC * 4, g->p[FCPROJW] + lc * 4 * C, BT, 4 * C,
				C);
		gelu_backward_inplace(g->d4, g->fch + l * BTC * 4, BTC * 4);
		matmul_backward(g->dC, g->g[FCW] + lc * 4 * C, g->g[FCB] + lc * 4, g->d4,
				g->ln2 + l * BTC, g->p[FCW] + lc * 4 * C, BT, C, 4 * C);
		layernorm_backward(g->dres, g->g[LN2W] + lc, g->g[LN2B] + lc, g->dC,
				   g->residual2 + l * BTC, g->p[LN2W] + lc,
				   g->ln2_mean + (size_t)l * BT, g->ln2_rstd + (size_t)l * BT, BT, C);
		// dres is now dL/d residual2
		matmul_backward(g->dC, g->g[ATTPROJW] + lc * C, g->g[ATTPROJB] + lc, g->dres,
				g->atty + l * BTC, g->p[ATTPROJW] + lc * C, BT, C, C);
		attention_backward(g->d3, g->attn_scratch, g->dC, g->qkv + l * BTC * 3,
				   g->att + (size_t)l * B * NH * T * T, &as);
		matmul_backward(g->dC, g->g[QKVW] + lc * 3 * C, g->g[QKVB] + lc * 3, g->d3,
				g->ln1 + l * BTC, g->p[QKVW] + lc * 3 * C, BT, C, 3 * C);
		layernorm_backward(g->dres, g->g[LN1W] + lc, g->g[LN1B] + lc, g->dC, residual,
				   g->p[LN1W] + lc, g->ln1_mean + (size_t)l * BT,
				   g->ln1_rstd + (size_t)l * BT, BT, C);
		if (g->grad_ready)
			g->grad_ready(g->grad_ready_ctx, l);
	}
	encoder_backward(g->g[WTE], g->g[WPE], g->dres, g->inputs, B, T, C);
}

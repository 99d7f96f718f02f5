/* llama — Llama forward and backward on the CPU, as Hugging Face's
 * LlamaForCausalLM computes it: RMSNorm, rotary position embedding (rotate
 * half, llama3 frequency scaling from model.c), grouped-query causal
 * attention, SwiGLU MLP, optional biases, tied or separate lm_head.
 *
 * Shapes: B batch, T time, C hidden, NH query heads, KVH key/value heads,
 * hd head dim, Q = NH*hd, KV = KVH*hd, F MLP width, V vocabulary. One
 * activation row of qkv holds [q (Q) | k (KV) | v (KV)] after RoPE; the
 * backward pass rotates the gradient back. Matrices are nn.Linear (out, in).
 * Never allocates.
 */
#include "layers.h"
#include "model.h"
#include "vmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

// out (N,C) = inp * rstd * w, rstd (N) = 1/sqrt(mean(inp^2) + eps)
static void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N,
			    int C, float eps)
{
#pragma omp parallel for
	for (int n = 0; n < N; n++) {
		const float *x = inp + (size_t)n * C;
		float *o = out + (size_t)n * C, ss = 0, s;

		for (int i = 0; i < C; i++)
			ss += x[i] * x[i];
		s = 1.0f / sqrtf(ss / C + eps);
		for (int i = 0; i < C; i++)
			o[i] = x[i] * s * w[i];
		rstd[n] = s;
	}
}

// dinp (N,C) += rmsnorm'(dout); dw (C) +=
static void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
			     const float *w, const float *rstd, int N, int C)
{
	for (int n = 0; n < N; n++) {
		const float *d = dout + (size_t)n * C, *x = inp + (size_t)n * C;
		float *di = dinp + (size_t)n * C, s = rstd[n], dot = 0;

		for (int i = 0; i < C; i++)
			dot += w[i] * d[i] * x[i];
		dot *= s * s * s / C;
		for (int i = 0; i < C; i++) {
			dw[i] += d[i] * x[i] * s;
			di[i] += s * w[i] * d[i] - x[i] * dot;
		}
	}
}

// rotates the q and k heads of every row of qkv (BT, row) in place; dir -1: inverse
static void rope(float *qkv, const struct model *g, size_t row, int dir)
{
	int BT = g->B * g->T, half = g->d.hd / 2, heads = g->d.NH + g->d.KVH;

#pragma omp parallel for
	for (int n = 0; n < BT; n++) {
		const float *c = g->rope_cos + (size_t)(n % g->T) * half;
		const float *s = g->rope_sin + (size_t)(n % g->T) * half;

		for (int h = 0; h < heads; h++) {
			float *v = qkv + (size_t)n * row + (size_t)h * g->d.hd;
			for (int i = 0; i < half; i++) {
				float x1 = v[i], x2 = v[i + half], sn = dir * s[i];
				v[i] = x1 * c[i] - x2 * sn;
				v[i + half] = x2 * c[i] + x1 * sn;
			}
		}
	}
}

#define SWIGLU_CHUNK 16384 /* floats per OpenMP work item */

// swi (n) = silu(gate) * up
VM_CLONES static void swiglu_span(float *swi, const float *gate, const float *up, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++)
		swi[i] = gate[i] / (1.0f + vm_exp(-gate[i])) * up[i];
}

// dgate holds dswi on entry; dgate, dup (n) = swiglu'(dswi)
VM_CLONES static void swiglu_backward_span(float *dgate, float *dup, const float *gate,
					   const float *up, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float x = gate[i], sig = 1.0f / (1.0f + vm_exp(-x)), ds = dgate[i];
		dup[i] = ds * x * sig;
		dgate[i] = ds * up[i] * sig * (1.0f + x * (1.0f - sig));
	}
}

static void swiglu_forward(float *swi, const float *gate, const float *up, size_t N)
{
#pragma omp parallel for
	for (size_t c = 0; c < N; c += SWIGLU_CHUNK)
		swiglu_span(swi + c, gate + c, up + c, N - c < SWIGLU_CHUNK ? N - c : SWIGLU_CHUNK);
}

static void swiglu_backward(float *dgate, float *dup, const float *gate, const float *up,
			    size_t N)
{
#pragma omp parallel for
	for (size_t c = 0; c < N; c += SWIGLU_CHUNK)
		swiglu_backward_span(dgate + c, dup + c, gate + c, up + c,
				     N - c < SWIGLU_CHUNK ? N - c : SWIGLU_CHUNK);
}

static const float *opt(const struct model *g, int idx, size_t off)
{
	return g->sizes[idx] ? g->p[idx] + off : NULL;
}

static float *gopt(const struct model *g, int idx, size_t off)
{
	return g->sizes[idx] ? g->g[idx] + off : NULL;
}

#define LLAMA_DIMS                                                                              \
	int B = g->B, T = g->T, C = g->d.C, NH = g->d.NH, V = g->d.V, BT = B * T, F = g->d.F;   \
	size_t Q = (size_t)NH * g->d.hd, KV = (size_t)g->d.KVH * g->d.hd, QKV = Q + 2 * KV;      \
	size_t BTC = (size_t)BT * C, BTF = (size_t)BT * F;                                       \
	struct attn_shape as = {.B = B, .T = T, .NH = NH, .KVH = g->d.KVH, .hs = g->d.hd,       \
				.row = QKV, .koff = Q, .voff = Q + KV};                         \
	const float *head = g->d.tied ? g->p[LL_EMB] : g->p[LL_HEAD]

float llama_forward(struct model *g, const int *inputs, const int *targets)
{
	LLAMA_DIMS;

	memcpy(g->inputs, inputs, (size_t)BT * sizeof(int));
	memcpy(g->targets, targets, (size_t)BT * sizeof(int));
	// encoded (BT,C) = embed[inp]
#pragma omp parallel for
	for (int n = 0; n < BT; n++)
		memcpy(g->encoded + (size_t)n * C, g->p[LL_EMB] + (size_t)inputs[n] * C,
		       (size_t)C * 4);
	for (int l = 0; l < g->d.L; l++) {
		const float *x = l == 0 ? g->encoded : g->residual3 + (l - 1) * BTC;
		float *h1 = g->ln1 + l * BTC, *qkv = g->qkv + l * BT * QKV;
		float *atty = g->atty + l * BT * Q, *att = g->att + (size_t)l * B * NH * T * T;
		float *res2 = g->residual2 + l * BTC, *h2 = g->ln2 + l * BTC;
		float *gate = g->gate + l * BTF, *up = g->up + l * BTF, *swi = g->swi + l * BTF;
		float *res3 = g->residual3 + l * BTC;

		rmsnorm_forward(h1, g->ln1_rstd + (size_t)l * BT, x, g->p[LL_ATTN_NORM] + l * C, BT,
				C, g->d.eps);
		linear_forward(qkv, QKV, 0, h1, C, g->p[LL_WQ] + l * Q * C, opt(g, LL_BQ, l * Q), BT,
			       C, Q);
		linear_forward(qkv + Q, QKV, 0, h1, C, g->p[LL_WK] + l * KV * C,
			       opt(g, LL_BK, l * KV), BT, C, KV);
		linear_forward(qkv + Q + KV, QKV, 0, h1, C, g->p[LL_WV] + l * KV * C,
			       opt(g, LL_BV, l * KV), BT, C, KV);
		rope(qkv, g, QKV, 1);
		attention_forward(atty, att, qkv, &as);
		memcpy(res2, x, BTC * 4);
		linear_forward(res2, C, 1, atty, Q, g->p[LL_WO] + l * C * Q,
			       opt(g, LL_BO, (size_t)l * C), BT, Q, C);
		rmsnorm_forward(h2, g->ln2_rstd + (size_t)l * BT, res2, g->p[LL_MLP_NORM] + l * C,
				BT, C, g->d.eps);
		linear_forward(gate, F, 0, h2, C, g->p[LL_WGATE] + l * (size_t)F * C,
			       opt(g, LL_BGATE, (size_t)l * F), BT, C, F);
		linear_forward(up, F, 0, h2, C, g->p[LL_WUP] + l * (size_t)F * C,
			       opt(g, LL_BUP, (size_t)l * F), BT, C, F);
		swiglu_forward(swi, gate, up, BTF);
		memcpy(res3, res2, BTC * 4);
		linear_forward(res3, C, 1, swi, F, g->p[LL_WDOWN] + l * (size_t)C * F,
			       opt(g, LL_BDOWN, (size_t)l * C), BT, F, C);
	}
	rmsnorm_forward(g->lnf, g->lnf_rstd, g->residual3 + (size_t)(g->d.L - 1) * BTC,
			g->p[LL_NORM], BT, C, g->d.eps);
	// logits (BT,V) = norm (BT,C) @ lm_head^T; kept in probs, then softmaxed in place
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, V, C, 1.0f, g->lnf, C, head, C,
		    0.0f, g->probs, V);
	g->loss = crossentropy_forward(g->probs, g->losses, g->probs, targets, BT, V);
	return g->loss;
}

void llama_backward(struct model *g)
{
	LLAMA_DIMS;
	float *dhead = g->d.tied ? g->g[LL_EMB] : g->g[LL_HEAD];
	float *dgate = g->d4, *dup = g->d4 + BTF;

	memset(g->grads, 0, g->n_params * 4);
	crossentropy_backward(g->dlogits, g->probs, g->targets, BT, V);
	// dnorm (BT,C) = dlogits @ lm_head; dlm_head += dlogits^T @ norm
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, C, V, 1.0f, g->dlogits, V, head,
		    C, 0.0f, g->dC, C);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, BT, 1.0f, g->dlogits, V, g->lnf,
		    C, 1.0f, dhead, C);
	memset(g->dres, 0, BTC * 4);
	rmsnorm_backward(g->dres, g->g[LL_NORM], g->dC, g->residual3 + (size_t)(g->d.L - 1) * BTC,
			 g->p[LL_NORM], g->lnf_rstd, BT, C);
	// dres holds dL/d residual3[l]; each block adds its branch into it
	for (int l = g->d.L - 1; l >= 0; l--) {
		const float *x = l == 0 ? g->encoded : g->residual3 + (l - 1) * BTC;
		size_t lq = l * Q, lkv = l * KV, lc = (size_t)l * C, lf = (size_t)l * F;

		linear_backward(dgate, 0, g->g[LL_WDOWN] + lc * F, gopt(g, LL_BDOWN, lc), g->dres, C,
				g->swi + l * BTF, g->p[LL_WDOWN] + lc * F, BT, F, C);
		swiglu_backward(dgate, dup, g->gate + l * BTF, g->up + l * BTF, BTF);
		linear_backward(g->dC, 0, g->g[LL_WGATE] + lf * C, gopt(g, LL_BGATE, lf), dgate, F,
				g->ln2 + l * BTC, g->p[LL_WGATE] + lf * C, BT, C, F);
		linear_backward(g->dC, 1, g->g[LL_WUP] + lf * C, gopt(g, LL_BUP, lf), dup, F,
				g->ln2 + l * BTC, g->p[LL_WUP] + lf * C, BT, C, F);
		rmsnorm_backward(g->dres, g->g[LL_MLP_NORM] + lc, g->dC, g->residual2 + l * BTC,
				 g->p[LL_MLP_NORM] + lc, g->ln2_rstd + (size_t)l * BT, BT, C);
		// dres is now dL/d residual2
		linear_backward(g->dC, 0, g->g[LL_WO] + lc * Q, gopt(g, LL_BO, lc), g->dres, C,
				g->atty + l * BT * Q, g->p[LL_WO] + lc * Q, BT, Q, C);
		attention_backward(g->d3, g->attn_scratch, g->dC, g->qkv + l * BT * QKV,
				   g->att + (size_t)l * B * NH * T * T, &as);
		rope(g->d3, g, QKV, -1);
		linear_backward(g->dC, 0, g->g[LL_WQ] + lq * C, gopt(g, LL_BQ, lq), g->d3, QKV,
				g->ln1 + l * BTC, g->p[LL_WQ] + lq * C, BT, C, Q);
		linear_backward(g->dC, 1, g->g[LL_WK] + lkv * C, gopt(g, LL_BK, lkv), g->d3 + Q, QKV,
				g->ln1 + l * BTC, g->p[LL_WK] + lkv * C, BT, C, KV);
		linear_backward(g->dC, 1, g->g[LL_WV] + lkv * C, gopt(g, LL_BV, lkv),
				g->d3 + Q + KV, QKV, g->ln1 + l * BTC, g->p[LL_WV] + lkv * C, BT,
				C, KV);
		rmsnorm_backward(g->dres, g->g[LL_ATTN_NORM] + lc, g->dC, x,
				 g->p[LL_ATTN_NORM] + lc, g->ln1_rstd + (size_t)l * BT, BT, C);
		if (g->grad_ready)
			g->grad_ready(g->grad_ready_ctx, l);
	}
	for (int n = 0; n < BT; n++) {
		const float *d = g->dres + (size_t)n * C;
		float *dw = g->g[LL_EMB] + (size_t)g->inputs[n] * C;
		for (int i = 0; i < C; i++)
			dw[i] += d[i];
	}
}

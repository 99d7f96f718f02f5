/* gpt2 — GPT-2 forward and backward on the CPU (OpenMP + OpenBLAS sgemm).
 *
 * Follows llm.c's structure: one function per layer, forward and backward,
 * with shape comments. B batch, T time, C channels, NH heads, hs = C/NH,
 * V vocabulary, L layers. Differences from llm.c: matrices are (in, out) as
 * in HF's Conv1D, matmuls go to cblas_sgemm, and the backward pass keeps one
 * residual-stream gradient instead of per-layer gradient activations.
 * Never allocates outside gpt2_build().
 */
#include "gpt2.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WTE, WPE, LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW,
       FCPROJB, LNFW, LNFB };

static void param_sizes(const struct gpt2_dims *d, size_t s[GPT2_NUM_TENSORS])
{
	size_t L = d->L, C = d->C;

	s[WTE] = (size_t)d->V * C;
	s[WPE] = (size_t)d->maxT * C;
	s[LN1W] = s[LN1B] = s[LN2W] = s[LN2B] = L * C;
	s[QKVW] = L * C * 3 * C;
	s[QKVB] = L * 3 * C;
	s[ATTPROJW] = L * C * C;
	s[ATTPROJB] = L * C;
	s[FCW] = L * C * 4 * C;
	s[FCB] = L * 4 * C;
	s[FCPROJW] = L * 4 * C * C;
	s[FCPROJB] = L * C;
	s[LNFW] = s[LNFB] = C;
}

/* Element counts of activations (forward) and backward buffers. */
static void act_sizes(const struct gpt2_dims *d, size_t B, size_t T, size_t *acts, size_t *dacts)
{
	size_t L = d->L, C = d->C, NH = d->NH, V = d->V, BT = B * T;

	*acts = BT * C				   /* encoded */
		+ L * BT * C * 2 + L * BT * 2	   /* ln1, ln2 */
		+ L * BT * 2 * 2		   /* (means and rstds counted twice: slack) */
		+ L * BT * 3 * C + L * BT * C	   /* qkv, atty */
		+ L * B * NH * T * T		   /* att */
		+ L * BT * C * 3		   /* attproj, residual2, fcproj */
		+ L * BT * 4 * C * 2		   /* fch, fch_gelu */
		+ L * BT * C			   /* residual3 */
		+ BT * C + BT * 2		   /* lnf */
		+ BT * V + BT;			   /* probs, losses */
	*dacts = BT * C * 2 + BT * 3 * C + BT * 4 * C + BT * V;
}

static struct gpt2_dims dims_of(const struct model_config *m)
{
	return (struct gpt2_dims){.L = m->n_layer, .NH = m->n_head, .C = m->n_embd,
				  .V = m->vocab_size, .maxT = m->n_positions,
				  .eps = (float)m->layer_norm_epsilon,
				  .eps64 = m->layer_norm_epsilon};
}

uint64_t gpt2_memory_bytes(const struct model_config *m, int B, int T)
{
	struct gpt2_dims d = dims_of(m);
	size_t s[GPT2_NUM_TENSORS], a, da, np = 0;

	param_sizes(&d, s);
	for (int i = 0; i < GPT2_NUM_TENSORS; i++)
		np += s[i];
	act_sizes(&d, B, T, &a, &da);
	/* params, grads, AdamW m and v, activations, backward buffers */
	return 4ull * (4 * np + a + da) + 8ull * B * T;
}

int gpt2_build(struct gpt2 *g, const struct model_config *m, int B, int T)
{
	size_t a, da, BT = (size_t)B * T, L, C, NH;
	float *p;
	int nt = omp_get_max_threads();

	memset(g, 0, sizeof(*g));
	g->d = dims_of(m);
	if (B < 1 || T < 1 || T > g->d.maxT)
		return -EINVAL;
	g->B = B, g->T = T;
	L = g->d.L, C = g->d.C, NH = g->d.NH;
	param_sizes(&g->d, g->sizes);
	for (int i = 0; i < GPT2_NUM_TENSORS; i++)
		g->n_params += g->sizes[i];
	act_sizes(&g->d, B, T, &a, &da);
	g->params = calloc(g->n_params, 4);
	g->grads = calloc(g->n_params, 4);
	g->acts = calloc(a, 4);
	g->dacts = calloc(da, 4);
	g->attn_scratch = calloc((size_t)nt * 2 * T, 4);
	g->inputs = calloc(BT, sizeof(int));
	g->targets = calloc(BT, sizeof(int));
	if (!g->params || !g->grads || !g->acts || !g->dacts || !g->attn_scratch || !g->inputs ||
	    !g->targets) {
		gpt2_free(g);
		return -ENOMEM;
	}
	for (int i = 0, off = 0; i < GPT2_NUM_TENSORS; off += g->sizes[i], i++) {
		g->p[i] = g->params + off;
		g->g[i] = g->grads + off;
	}
	p = g->acts;
#define TAKE(field, n) (g->field = p, p += (n))
	TAKE(encoded, BT * C);
	TAKE(ln1, L * BT * C);
	TAKE(ln1_mean, L * BT);
	TAKE(ln1_rstd, L * BT);
	TAKE(qkv, L * BT * 3 * C);
	TAKE(atty, L * BT * C);
	TAKE(att, L * B * NH * T * T);
	TAKE(attproj, L * BT * C);
	TAKE(residual2, L * BT * C);
	TAKE(ln2, L * BT * C);
	TAKE(ln2_mean, L * BT);
	TAKE(ln2_rstd, L * BT);
	TAKE(fch, L * BT * 4 * C);
	TAKE(fch_gelu, L * BT * 4 * C);
	TAKE(fcproj, L * BT * C);
	TAKE(residual3, L * BT * C);
	TAKE(lnf, BT * C);
	TAKE(lnf_mean, BT);
	TAKE(lnf_rstd, BT);
	TAKE(probs, BT * g->d.V);
	TAKE(losses, BT);
	p = g->dacts;
	TAKE(dres, BT * C);
	TAKE(dC, BT * C);
	TAKE(d3, BT * 3 * C);
	TAKE(d4, BT * 4 * C);
	TAKE(dlogits, BT * g->d.V);
#undef TAKE
	return 0;
}

void gpt2_free(struct gpt2 *g)
{
	free(g->params);
	free(g->grads);
	free(g->acts);
	free(g->dacts);
	free(g->attn_scratch);
	free(g->inputs);
	free(g->targets);
	memset(g, 0, sizeof(*g));
}

/* splitmix64: a tiny, well-mixed, portable generator for the init. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_normal(float *x, size_t n, float std, uint64_t *s)
{
	for (size_t i = 0; i < n; i += 2) {
		double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0;
		double u2 = (rng_next(s) >> 11) / 9007199254740992.0;
		double r = sqrt(-2.0 * log(u1));

		x[i] = (float)(std * r * cos(2 * M_PI * u2));
		if (i + 1 < n)
			x[i + 1] = (float)(std * r * sin(2 * M_PI * u2));
	}
}

void gpt2_init_weights(struct gpt2 *g, uint64_t seed)
{
	uint64_t s = seed ^ 0x6270743267707432ull;
	float resid_std = 0.02f / sqrtf(2.0f * g->d.L);

	memset(g->params, 0, g->n_params * 4);
	for (int i = 0; i < GPT2_NUM_TENSORS; i++) {
		if (i == LN1W || i == LN2W || i == LNFW)
			for (size_t k = 0; k < g->sizes[i]; k++)
				g->p[i][k] = 1.0f;
		else if (i == WTE || i == WPE || i == QKVW || i == FCW)
			fill_normal(g->p[i], g->sizes[i], 0.02f, &s);
		else if (i == ATTPROJW || i == FCPROJW)
			fill_normal(g->p[i], g->sizes[i], resid_std, &s);
	}
}

int gpt2_decays(int idx)
{
	return idx == WTE || idx == WPE || idx == QKVW || idx == ATTPROJW || idx == FCW ||
	       idx == FCPROJW;
}

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

// inp (B,T,3C) holds q,k,v; att (B,NH,T,T) softmax weights; out (B,T,C)
static void attention_forward(float *out, float *att, const float *inp, int B, int T, int C,
			      int NH)
{
	int hs = C / NH;
	size_t C3 = (size_t)C * 3;
	float scale = 1.0f / sqrtf((float)hs);

#pragma omp parallel for collapse(3)
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			for (int h = 0; h < NH; h++) {
				const float *q = inp + ((size_t)b * T + t) * C3 + (size_t)h * hs;
				float *a = att + (((size_t)b * NH + h) * T + t) * T;
				float *o = out + ((size_t)b * T + t) * C + (size_t)h * hs;
				float maxv = -INFINITY, sum = 0;

				for (int t2 = 0; t2 <= t; t2++) {
					const float *k = inp + ((size_t)b * T + t2) * C3 + C +
							 (size_t)h * hs;
					float v = 0;
					for (int i = 0; i < hs; i++)
						v += q[i] * k[i];
					a[t2] = v * scale;
					if (a[t2] > maxv)
						maxv = a[t2];
				}
				for (int t2 = 0; t2 <= t; t2++) {
					a[t2] = expf(a[t2] - maxv);
					sum += a[t2];
				}
				for (int t2 = 0; t2 < T; t2++)
					a[t2] = t2 <= t ? a[t2] / sum : 0.0f;
				for (int i = 0; i < hs; i++)
					o[i] = 0;
				for (int t2 = 0; t2 <= t; t2++) {
					const float *v = inp + ((size_t)b * T + t2) * C3 + 2 * C +
							 (size_t)h * hs;
					for (int i = 0; i < hs; i++)
						o[i] += a[t2] * v[i];
				}
			}
}

// dinp (B,T,3C) = attention'(dout (B,T,C)); one (b,h) per thread: no races
static void attention_backward(float *dinp, float *scratch, const float *dout, const float *inp,
			       const float *att, int B, int T, int C, int NH)
{
	int hs = C / NH;
	size_t C3 = (size_t)C * 3;
	float scale = 1.0f / sqrtf((float)hs);

	memset(dinp, 0, (size_t)B * T * C3 * 4);
#pragma omp parallel for collapse(2)
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++) {
			float *datt = scratch + (size_t)omp_get_thread_num() * 2 * T;
			float *dpre = datt + T;

			for (int t = 0; t < T; t++) {
				const float *a = att + (((size_t)b * NH + h) * T + t) * T;
				const float *d = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
				const float *q = inp + ((size_t)b * T + t) * C3 + (size_t)h * hs;
				float *dq = dinp + ((size_t)b * T + t) * C3 + (size_t)h * hs;
				float dot = 0;

				for (int t2 = 0; t2 <= t; t2++) {
					size_t row = ((size_t)b * T + t2) * C3 + (size_t)h * hs;
					const float *v = inp + row + 2 * C;
					float *dv = dinp + row + 2 * C, s = 0;
					for (int i = 0; i < hs; i++) {
						s += v[i] * d[i];
						dv[i] += a[t2] * d[i];
					}
					datt[t2] = s;
					dot += a[t2] * s;
				}
				for (int t2 = 0; t2 <= t; t2++)
					dpre[t2] = a[t2] * (datt[t2] - dot) * scale;
				for (int t2 = 0; t2 <= t; t2++) {
					size_t row = ((size_t)b * T + t2) * C3 + (size_t)h * hs;
					const float *k = inp + row + C;
					float *dk = dinp + row + C;
					for (int i = 0; i < hs; i++) {
						dq[i] += k[i] * dpre[t2];
						dk[i] += q[i] * dpre[t2];
					}
				}
			}
		}
}

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

// gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
static void gelu_forward(float *out, const float *inp, size_t N)
{
#pragma omp parallel for
	for (size_t i = 0; i < N; i++) {
		float x = inp[i];
		out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
	}
}

// d (N) *= gelu'(inp), in place
static void gelu_backward_inplace(float *d, const float *inp, size_t N)
{
#pragma omp parallel for
	for (size_t i = 0; i < N; i++) {
		float x = inp[i];
		float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
		float sech2 = 1.0f - th * th;
		d[i] *= 0.5f * (1.0f + th) +
			0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
	}
}

// probs (N,V) = softmax(logits); losses (N) = -log probs[target]
static float crossentropy_forward(float *probs, float *losses, const float *logits,
				  const int *targets, int N, int V)
{
	double total = 0;

#pragma omp parallel for reduction(+ : total)
	for (int n = 0; n < N; n++) {
		const float *l = logits + (size_t)n * V;
		float *p = probs + (size_t)n * V, maxv = -INFINITY, sum = 0;

		for (int i = 0; i < V; i++)
			maxv = l[i] > maxv ? l[i] : maxv;
		for (int i = 0; i < V; i++) {
			p[i] = expf(l[i] - maxv);
			sum += p[i];
		}
		for (int i = 0; i < V; i++)
			p[i] /= sum;
		losses[n] = -logf(p[targets[n]] > 1e-30f ? p[targets[n]] : 1e-30f);
		total += losses[n];
	}
	return (float)(total / N);
}

/* ---- model ------------------------------------------------------------- */

float gpt2_forward(struct gpt2 *g, const int *inputs, const int *targets)
{
	int B = g->B, T = g->T, C = g->d.C, NH = g->d.NH, V = g->d.V, BT = B * T;
	size_t BTC = (size_t)BT * C;
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
		attention_forward(atty, att, qkv, B, T, C, NH);
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

void gpt2_backward(struct gpt2 *g)
{
	int B = g->B, T = g->T, C = g->d.C, NH = g->d.NH, V = g->d.V, BT = B * T, L = g->d.L;
	size_t BTC = (size_t)BT * C;
	float dloss = 1.0f / BT;

	memset(g->grads, 0, g->n_params * 4);
	// dlogits (BT,V) = (probs - onehot(target)) / BT
#pragma omp parallel for
	for (int n = 0; n < BT; n++) {
		const float *p = g->probs + (size_t)n * V;
		float *d = g->dlogits + (size_t)n * V;
		for (int i = 0; i < V; i++)
			d[i] = p[i] * dloss;
		d[g->targets[n]] -= dloss;
	}
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
				   g->att + (size_t)l * B * NH * T * T, B, T, C, NH);
		matmul_backward(g->dC, g->g[QKVW] + lc * 3 * C, g->g[QKVB] + lc * 3, g->d3,
				g->ln1 + l * BTC, g->p[QKVW] + lc * 3 * C, BT, C, 3 * C);
		layernorm_backward(g->dres, g->g[LN1W] + lc, g->g[LN1B] + lc, g->dC, residual,
				   g->p[LN1W] + lc, g->ln1_mean + (size_t)l * BT,
				   g->ln1_rstd + (size_t)l * BT, BT, C);
	}
	encoder_backward(g->g[WTE], g->g[WPE], g->dres, g->inputs, B, T, C);
}

/* ---- checkpoint names -------------------------------------------------- */

int gpt2_n_named(const struct gpt2 *g)
{
	return 4 + 12 * g->d.L;
}

float *gpt2_named(const struct gpt2 *g, int i, struct gpt2_tensor_ref *ref)
{
	static const char *const layer_names[12] = {
		"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
		"attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
		"mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
	static const int in_mult[12] = {0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 0};
	static const int out_mult[12] = {1, 1, 3, 3, 1, 1, 1, 1, 4, 4, 1, 1};
	int C = g->d.C, n = gpt2_n_named(g);

	memset(ref, 0, sizeof(*ref));
	if (i < 2 || i >= n - 2) {
		int first = i < 2;
		ref->idx = first ? i : LNFW + (i - (n - 2));
		ref->layer = -1;
		snprintf(ref->name, sizeof(ref->name), "%s",
			 (const char *[]){"wte.weight", "wpe.weight", "ln_f.weight",
					  "ln_f.bias"}[first ? i : 2 + i - (n - 2)]);
		ref->ndim = first ? 2 : 1;
		ref->shape[0] = first ? (i == 0 ? g->d.V : g->d.maxT) : C;
		ref->shape[1] = first ? C : 0;
		return g->p[ref->idx];
	}
	i -= 2;
	ref->layer = i / 12;
	ref->idx = LN1W + i % 12;
	snprintf(ref->name, sizeof(ref->name), "h.%d.%s", ref->layer, layer_names[i % 12]);
	ref->ndim = in_mult[i % 12] ? 2 : 1;
	ref->shape[0] = in_mult[i % 12] ? (int64_t)in_mult[i % 12] * C : (int64_t)out_mult[i % 12] * C;
	ref->shape[1] = in_mult[i % 12] ? (int64_t)out_mult[i % 12] * C : 0;
	return g->p[ref->idx] + (g->sizes[ref->idx] / g->d.L) * ref->layer;
}

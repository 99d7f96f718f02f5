/* model — what GPT-2 and Llama share: the parameter layout, allocation of
 * every buffer for a micro-batch, the seeded init, the Hugging Face name of
 * each tensor, and the dispatch of forward and backward to gpt2.c or
 * llama.c. Never allocates outside model_build().
 */
#include "layers.h"
#include "model.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void param_sizes(const struct model_dims *d, size_t s[MODEL_MAX_TENSORS])
{
	size_t L = d->L, C = d->C, V = d->V, F = d->F;
	size_t Q = (size_t)d->NH * d->hd, KV = (size_t)d->KVH * d->hd;

	memset(s, 0, MODEL_MAX_TENSORS * sizeof(size_t));
	if (d->arch == ARCH_GPT2) {
		s[WTE] = V * C;
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
		return;
	}
	s[LL_EMB] = V * C;
	s[LL_ATTN_NORM] = s[LL_MLP_NORM] = L * C;
	s[LL_WQ] = s[LL_WO] = L * Q * C;
	s[LL_WK] = s[LL_WV] = L * KV * C;
	if (d->attn_bias) {
		s[LL_BQ] = L * Q;
		s[LL_BK] = s[LL_BV] = L * KV;
		s[LL_BO] = L * C;
	}
	s[LL_WGATE] = s[LL_WUP] = s[LL_WDOWN] = L * F * C;
	if (d->mlp_bias) {
		s[LL_BGATE] = s[LL_BUP] = L * F;
		s[LL_BDOWN] = L * C;
	}
	s[LL_NORM] = C;
	s[LL_HEAD] = d->tied ? 0 : V * C;
}

/* Element counts of activations (forward) and backward buffers. */
static void act_sizes(const struct model_dims *d, size_t B, size_t T, size_t *acts, size_t *dacts)
{
	size_t L = d->L, C = d->C, NH = d->NH, V = d->V, BT = B * T, F = d->F;
	size_t Q = NH * d->hd, QKV = Q + 2 * (size_t)d->KVH * d->hd;

	if (d->arch == ARCH_GPT2) {
		*acts = BT * C + L * BT * C * 2 + L * BT * 4 /* ln1, ln2 and their stats */
			+ L * BT * 3 * C + L * BT * C	     /* qkv, atty */
			+ L * B * NH * T * T		     /* att */
			+ L * BT * C * 3		     /* attproj, residual2, fcproj */
			+ L * BT * 4 * C * 2		     /* fch, fch_gelu */
			+ L * BT * C			     /* residual3 */
			+ BT * C + BT * 2 + BT * V + BT;     /* lnf, probs, losses */
		*dacts = BT * C * 2 + BT * 3 * C + BT * 4 * C + BT * V;
		return;
	}
	*acts = BT * C + L * BT * C * 2 + L * BT * 2 /* rms 1 and 2 with rstd */
		+ L * BT * QKV + L * BT * Q	     /* qkv (roped), atty */
		+ L * B * NH * T * T		     /* att */
		+ L * BT * C * 2		     /* residual2, residual3 */
		+ L * BT * F * 3		     /* gate, up, swi */
		+ BT * C + BT + BT * V + BT;	     /* final norm, probs, losses */
	*dacts = BT * C + BT * (C > Q ? C : Q) + BT * QKV + BT * 2 * F + BT * V;
}

static struct model_dims dims_of(const struct model_config *m)
{
	int llama = !strcmp(m->model_type, "llama");

	return (struct model_dims){.arch = llama ? ARCH_LLAMA : ARCH_GPT2, .L = m->n_layer,
				   .NH = m->n_head, .C = m->n_embd, .V = m->vocab_size,
				   .maxT = m->n_positions,
				   .KVH = llama ? m->n_kv_head : m->n_head,
				   .hd = llama ? m->head_dim : m->n_embd / m->n_head,
				   .F = llama ? m->intermediate_size : 4 * m->n_embd,
				   .tied = llama ? m->tie_word_embeddings : 1,
				   .attn_bias = llama ? m->attention_bias : 1,
				   .mlp_bias = llama ? m->mlp_bias : 1,
				   .eps = (float)m->layer_norm_epsilon, .cfg = *m};
}

uint64_t model_memory_bytes(const struct model_config *m, int B, int T)
{
	struct model_dims d = dims_of(m);
	size_t s[MODEL_MAX_TENSORS], a, da, np = 0;

	param_sizes(&d, s);
	for (int i = 0; i < MODEL_MAX_TENSORS; i++)
		np += s[i];
	act_sizes(&d, B, T, &a, &da);
	/* params, grads, AdamW m and v, activations, backward buffers, rope */
	return 4ull * (4 * np + a + da) + 8ull * B * T + 4ull * T * d.hd;
}

/* inv_freq of HF's Llama rotary embedding, llama3 scaling included. */
static double rope_inv_freq(const struct model_config *m, int i, int hd)
{
	double f = 1.0 / pow(m->rope_theta, (2.0 * i) / hd), wl, lo, hi, smooth;

	if (m->rope_type != ROPE_LLAMA3)
		return f;
	wl = 2 * M_PI / f;
	lo = m->rope_original_max / m->rope_low_freq_factor; /* low-frequency wavelength */
	hi = m->rope_original_max / m->rope_high_freq_factor;
	if (wl < hi)
		return f;
	if (wl > lo)
		return f / m->rope_factor;
	smooth = (m->rope_original_max / wl - m->rope_low_freq_factor) /
		 (m->rope_high_freq_factor - m->rope_low_freq_factor);
	return (1 - smooth) * f / m->rope_factor + smooth * f;
}

static void take_acts(struct model *g)
{
	size_t B = g->B, T = g->T, BT = B * T, L = g->d.L, C = g->d.C, NH = g->d.NH, F = g->d.F;
	size_t Q = NH * g->d.hd, QKV = Q + 2 * (size_t)g->d.KVH * g->d.hd;
	float *p = g->acts;

#define TAKE(field, n) (g->field = p, p += (n))
	TAKE(encoded, BT * C);
	TAKE(ln1, L * BT * C);
	TAKE(ln1_rstd, L * BT);
	TAKE(qkv, L * BT * QKV);
	TAKE(atty, L * BT * Q);
	TAKE(att, L * B * NH * T * T);
	TAKE(residual2, L * BT * C);
	TAKE(ln2, L * BT * C);
	TAKE(ln2_rstd, L * BT);
	TAKE(residual3, L * BT * C);
	TAKE(lnf, BT * C);
	TAKE(lnf_rstd, BT);
	TAKE(probs, BT * g->d.V);
	TAKE(losses, BT);
	if (g->d.arch == ARCH_GPT2) {
		TAKE(ln1_mean, L * BT);
		TAKE(ln2_mean, L * BT);
		TAKE(attproj, L * BT * C);
		TAKE(fch, L * BT * 4 * C);
		TAKE(fch_gelu, L * BT * 4 * C);
		TAKE(fcproj, L * BT * C);
		TAKE(lnf_mean, BT);
	} else {
		TAKE(gate, L * BT * F);
		TAKE(up, L * BT * F);
		TAKE(swi, L * BT * F);
	}
	p = g->dacts;
	TAKE(dres, BT * C);
	TAKE(dC, BT * (C > Q ? C : Q));
	TAKE(d3, BT * QKV);
	TAKE(d4, BT * (g->d.arch == ARCH_GPT2 ? 4 * C : 2 * F));
	TAKE(dlogits, BT * g->d.V);
#undef TAKE
}

int model_build(struct model *g, const struct model_config *m, int B, int T)
{
	size_t a, da, BT = (size_t)B * T, off = 0;
	int nt = omp_get_max_threads(), half;

	memset(g, 0, sizeof(*g));
	g->d = dims_of(m);
	if (B < 1 || T < 1 || T > g->d.maxT)
		return -EINVAL;
	g->B = B, g->T = T;
	g->n_tensors = g->d.arch == ARCH_GPT2 ? GPT2_NUM_TENSORS : LLAMA_NUM_TENSORS;
	param_sizes(&g->d, g->sizes);
	for (int i = 0; i < MODEL_MAX_TENSORS; i++)
		g->n_params += g->sizes[i];
	act_sizes(&g->d, B, T, &a, &da);
	half = g->d.hd / 2;
	g->params = calloc(g->n_params, 4);
	g->grads = calloc(g->n_params, 4);
	g->acts = calloc(a, 4);
	g->dacts = calloc(da, 4);
	g->attn_scratch = calloc((size_t)nt * 2 * T, 4);
	g->rope_cos = calloc((size_t)T * half, 4);
	g->rope_sin = calloc((size_t)T * half, 4);
	g->inputs = calloc(BT, sizeof(int));
	g->targets = calloc(BT, sizeof(int));
	if (!g->params || !g->grads || !g->acts || !g->dacts || !g->attn_scratch ||
	    !g->rope_cos || !g->rope_sin || !g->inputs || !g->targets) {
		model_free(g);
		return -ENOMEM;
	}
	for (int i = 0; i < MODEL_MAX_TENSORS; off += g->sizes[i], i++) {
		g->p[i] = g->params + off;
		g->g[i] = g->grads + off;
	}
	take_acts(g);
	for (int i = 0; g->d.arch == ARCH_LLAMA && i < half; i++) {
		/* float32 inv_freq and angle, as HF computes them */
		float f = (float)rope_inv_freq(m, i, g->d.hd);
		for (int t = 0; t < T; t++) {
			float ang = (float)t * f;
			g->rope_cos[(size_t)t * half + i] = cosf(ang);
			g->rope_sin[(size_t)t * half + i] = sinf(ang);
		}
	}
	return 0;
}

void model_free(struct model *g)
{
	free(g->params);
	free(g->grads);
	free(g->acts);
	free(g->dacts);
	free(g->attn_scratch);
	free(g->rope_cos);
	free(g->rope_sin);
	free(g->inputs);
	free(g->targets);
	memset(g, 0, sizeof(*g));
}

static int is_norm_weight(const struct model *g, int i)
{
	if (g->d.arch == ARCH_GPT2)
		return i == LN1W || i == LN2W || i == LNFW;
	return i == LL_ATTN_NORM || i == LL_MLP_NORM || i == LL_NORM;
}

void model_init_weights(struct model *g, uint64_t seed)
{
	uint64_t s = seed ^ 0x6270743267707432ull;
	float resid_std = 0.02f / sqrtf(2.0f * g->d.L);

	memset(g->params, 0, g->n_params * 4);
	for (int i = 0; i < g->n_tensors; i++) {
		if (is_norm_weight(g, i))
			for (size_t k = 0; k < g->sizes[i]; k++)
				g->p[i][k] = 1.0f;
		else if (g->d.arch == ARCH_GPT2 && (i == ATTPROJW || i == FCPROJW))
			fill_normal(g->p[i], g->sizes[i], resid_std, &s);
		else if (model_decays(g, i))
			fill_normal(g->p[i], g->sizes[i], 0.02f, &s);
	}
}

int model_decays(const struct model *g, int idx)
{
	if (g->d.arch == ARCH_GPT2)
		return idx == WTE || idx == WPE || idx == QKVW || idx == ATTPROJW || idx == FCW ||
		       idx == FCPROJW;
	return idx == LL_EMB || idx == LL_WQ || idx == LL_WK || idx == LL_WV || idx == LL_WO ||
	       idx == LL_WGATE || idx == LL_WUP || idx == LL_WDOWN || idx == LL_HEAD;
}

int model_per_layer(const struct model *g, int idx)
{
	if (g->d.arch == ARCH_GPT2)
		return idx != WTE && idx != WPE && idx != LNFW && idx != LNFB;
	return idx != LL_EMB && idx != LL_NORM && idx != LL_HEAD;
}

float model_forward(struct model *g, const int *inputs, const int *targets)
{
	return g->d.arch == ARCH_GPT2 ? gpt2_forward(g, inputs, targets) :
					llama_forward(g, inputs, targets);
}

void model_backward(struct model *g)
{
	if (g->d.arch == ARCH_GPT2)
		gpt2_backward(g);
	else
		llama_backward(g);
	if (g->grad_ready)
		g->grad_ready(g->grad_ready_ctx, -1);
}

/* ---- checkpoint names -------------------------------------------------- */

struct named {
	const char *name;
	int idx;
	int rows, cols; /* cols 0: a vector */
};

/* The whole-model tensors before the layers, each layer's, and those after. */
static int named_tables(const struct model *g, struct named *first, int *nf, struct named *layer,
			int *nl, struct named *last, int *nlast)
{
	int C = g->d.C, V = g->d.V, F = g->d.F, Q = g->d.NH * g->d.hd, KV = g->d.KVH * g->d.hd;
	int n = 0;

	if (g->d.arch == ARCH_GPT2) {
		static const char *const names[12] = {
			"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
			"attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
			"mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
		static const int in_mult[12] = {0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 0};
		static const int out_mult[12] = {1, 1, 3, 3, 1, 1, 1, 1, 4, 4, 1, 1};

		first[0] = (struct named){"wte.weight", WTE, V, C};
		first[1] = (struct named){"wpe.weight", WPE, g->d.maxT, C};
		*nf = 2;
		for (int i = 0; i < 12; i++)
			layer[i] = in_mult[i] ?
				(struct named){names[i], LN1W + i, in_mult[i] * C, out_mult[i] * C} :
				(struct named){names[i], LN1W + i, out_mult[i] * C, 0};
		*nl = 12;
		last[0] = (struct named){"ln_f.weight", LNFW, C, 0};
		last[1] = (struct named){"ln_f.bias", LNFB, C, 0};
		*nlast = 2;
		return 0;
	}
	{
		const struct named all[] = {
			{"input_layernorm.weight", LL_ATTN_NORM, C, 0},
			{"self_attn.q_proj.weight", LL_WQ, Q, C},
			{"self_attn.k_proj.weight", LL_WK, KV, C},
			{"self_attn.v_proj.weight", LL_WV, KV, C},
			{"self_attn.o_proj.weight", LL_WO, C, Q},
			{"self_attn.q_proj.bias", LL_BQ, Q, 0},
			{"self_attn.k_proj.bias", LL_BK, KV, 0},
			{"self_attn.v_proj.bias", LL_BV, KV, 0},
			{"self_attn.o_proj.bias", LL_BO, C, 0},
			{"post_attention_layernorm.weight", LL_MLP_NORM, C, 0},
			{"mlp.gate_proj.weight", LL_WGATE, F, C},
			{"mlp.up_proj.weight", LL_WUP, F, C},
			{"mlp.down_proj.weight", LL_WDOWN, C, F},
			{"mlp.gate_proj.bias", LL_BGATE, F, 0},
			{"mlp.up_proj.bias", LL_BUP, F, 0},
			{"mlp.down_proj.bias", LL_BDOWN, C, 0},
		};
		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			if (g->sizes[all[i].idx])
				layer[n++] = all[i];
	}
	*nl = n;
	first[0] = (struct named){"model.embed_tokens.weight", LL_EMB, V, C};
	*nf = 1;
	last[0] = (struct named){"model.norm.weight", LL_NORM, C, 0};
	last[1] = (struct named){"lm_head.weight", LL_HEAD, V, C};
	*nlast = g->d.tied ? 1 : 2;
	return 0;
}

int model_n_named(const struct model *g)
{
	struct named f[2], l[16], z[2];
	int nf, nl, nz;

	named_tables(g, f, &nf, l, &nl, z, &nz);
	return nf + nl * g->d.L + nz;
}

float *model_named(const struct model *g, int i, struct model_tensor_ref *ref)
{
	struct named f[2], l[16], z[2], *e;
	int nf, nl, nz;
	float *p;

	named_tables(g, f, &nf, l, &nl, z, &nz);
	memset(ref, 0, sizeof(*ref));
	ref->layer = -1;
	if (i < nf) {
		e = &f[i];
	} else if (i >= nf + nl * g->d.L) {
		e = &z[i - nf - nl * g->d.L];
	} else {
		i -= nf;
		ref->layer = i / nl;
		e = &l[i % nl];
	}
	p = g->p[e->idx];
	if (ref->layer >= 0) {
		p += g->sizes[e->idx] / g->d.L * ref->layer;
		snprintf(ref->name, sizeof(ref->name), g->d.arch == ARCH_GPT2 ? "h.%d.%s" :
			 "model.layers.%d.%s", ref->layer, e->name);
	} else {
		snprintf(ref->name, sizeof(ref->name), "%s", e->name);
	}
	ref->idx = e->idx;
	ref->ndim = e->cols ? 2 : 1;
	ref->shape[0] = e->rows;
	ref->shape[1] = e->cols;
	return p;
}

/* optim — AdamW with bias correction, warmup + cosine/linear/constant lr,
 * gradient clipping by global norm. No allocation outside adamw_init(). */
#include "optim.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int adamw_init(struct adamw *o, size_t n)
{
	memset(o, 0, sizeof(*o));
	o->m = calloc(n, 4);
	o->v = calloc(n, 4);
	if (!o->m || !o->v) {
		adamw_free(o);
		return -ENOMEM;
	}
	o->n = n;
	o->beta1 = 0.9f;
	o->beta2 = 0.95f;
	o->eps = 1e-8f;
	return 0;
}

void adamw_free(struct adamw *o)
{
	free(o->m);
	free(o->v);
	o->m = o->v = NULL;
}

void adamw_begin(struct adamw *o, float gscale)
{
	o->t++;
	o->gscale = gscale;
	o->c1 = 1.0f - powf(o->beta1, (float)o->t);
	o->c2 = 1.0f - powf(o->beta2, (float)o->t);
}

void adamw_range(struct adamw *o, struct model *g, size_t lo, size_t hi, size_t mo, float lr,
		 float weight_decay)
{
	float b1 = o->beta1, b2 = o->beta2, c1 = o->c1, c2 = o->c2, gs = o->gscale;
	size_t off = 0;

	for (int k = 0; k < MODEL_MAX_TENSORS && off < hi; k++) {
		size_t a = off > lo ? off : lo, e = off + g->sizes[k] < hi ? off + g->sizes[k] : hi;
		float wd = model_decays(g, k) ? weight_decay : 0.0f;
		float *p, *gr, *m, *v;
		size_t n;

		off += g->sizes[k];
		if (e <= a)
			continue;
		n = e - a;
		p = g->params + a;
		gr = g->grads + a;
		m = o->m + mo + (a - lo);
		v = o->v + mo + (a - lo);
#pragma omp parallel for
		for (size_t i = 0; i < n; i++) {
			float d = gr[i] * gs;

			m[i] = b1 * m[i] + (1.0f - b1) * d;
			v[i] = b2 * v[i] + (1.0f - b2) * d * d;
			p[i] -= lr * ((m[i] / c1) / (sqrtf(v[i] / c2) + o->eps) + wd * p[i]);
		}
	}
}

void adamw_step(struct adamw *o, struct model *g, float lr, float weight_decay)
{
	adamw_begin(o, 1.0f);
	adamw_range(o, g, 0, g->n_params, 0, lr, weight_decay);
}

float optim_lr(const char *schedule, float peak, long step, long steps, int warmup)
{
	float min_lr = peak * 0.1f, frac;

	if (step < warmup)
		return peak * (float)(step + 1) / (float)warmup;
	if (!strcmp(schedule, "constant") || steps - warmup <= 1)
		return peak;
	frac = (float)(step - warmup) / (float)(steps - warmup - 1);
	if (frac > 1)
		frac = 1;
	if (!strcmp(schedule, "linear"))
		return peak - (peak - min_lr) * frac;
	return min_lr + 0.5f * (peak - min_lr) * (1.0f + cosf((float)M_PI * frac));
}

float optim_norm(const float *grads, size_t n)
{
	double ss = 0;

#pragma omp parallel for reduction(+ : ss)
	for (size_t i = 0; i < n; i++)
		ss += (double)grads[i] * grads[i];
	return (float)sqrt(ss);
}

float optim_clip_scale(float norm, float clip)
{
	if (clip <= 0 || norm <= clip || !isfinite(norm))
		return 1.0f;
	return clip / norm;
}

float optim_clip(float *grads, size_t n, float clip)
{
	float norm = optim_norm(grads, n), s = optim_clip_scale(norm, clip);

	if (s == 1.0f)
		return norm;
#pragma omp parallel for
	for (size_t i = 0; i < n; i++)
		grads[i] *= s;
	return norm;
}

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

void adamw_step(struct adamw *o, struct model *g, float lr, float weight_decay)
{
	float b1 = o->beta1, b2 = o->beta2;
	float c1, c2;
	size_t off = 0;

	o->t++;
	c1 = 1.0f - powf(b1, (float)o->t);
	c2 = 1.0f - powf(b2, (float)o->t);
	for (int k = 0; k < MODEL_MAX_TENSORS; k++) {
		float wd = model_decays(g, k) ? weight_decay : 0.0f;
		float *p = g->params + off, *gr = g->grads + off, *m = o->m + off, *v = o->v + off;
		size_t n = g->sizes[k];

#pragma omp parallel for
		for (size_t i = 0; i < n; i++) {
			m[i] = b1 * m[i] + (1.0f - b1) * gr[i];
			v[i] = b2 * v[i] + (1.0f - b2) * gr[i] * gr[i];
			p[i] -= lr * ((m[i] / c1) / (sqrtf(v[i] / c2) + o->eps) + wd * p[i]);
		}
		off += n;
	}
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

float optim_clip(float *grads, size_t n, float clip)
{
	double ss = 0;
	float norm, s;

#pragma omp parallel for reduction(+ : ss)
	for (size_t i = 0; i < n; i++)
		ss += (double)grads[i] * grads[i];
	norm = (float)sqrt(ss);
	if (clip <= 0 || norm <= clip || !isfinite(norm))
		return norm;
	s = clip / norm;
#pragma omp parallel for
	for (size_t i = 0; i < n; i++)
		grads[i] *= s;
	return norm;
}

/* layers — shared CPU kernels of the GPT-2 and Llama models: OpenMP loops
 * and OpenBLAS sgemm, no allocation. See layers.h for the shapes. */
#include "layers.h"
#include "vmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* p[0..n) = softmax(l[0..n)) (in place when p == l). */
VM_CLONES static void softmax_row(float *p, const float *l, int n)
{
	float maxv = -INFINITY, sum = 0, inv;

#pragma omp simd reduction(max : maxv)
	for (int i = 0; i < n; i++)
		maxv = l[i] > maxv ? l[i] : maxv;
#pragma omp simd reduction(+ : sum)
	for (int i = 0; i < n; i++) {
		p[i] = vm_exp(l[i] - maxv);
		sum += p[i];
	}
	inv = 1.0f / sum;
#pragma omp simd
	for (int i = 0; i < n; i++)
		p[i] *= inv;
}

void attention_forward(float *out, float *att, const float *inp, const struct attn_shape *s)
{
	int B = s->B, T = s->T, NH = s->NH, hs = s->hs, grp = s->NH / s->KVH;
	size_t R = s->row, OC = (size_t)NH * hs;
	float scale = 1.0f / sqrtf((float)hs);

#pragma omp parallel for collapse(3)
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			for (int h = 0; h < NH; h++) {
				size_t kh = (size_t)(h / grp) * hs;
				const float *q = inp + ((size_t)b * T + t) * R + (size_t)h * hs;
				float *a = att + (((size_t)b * NH + h) * T + t) * T;
				float *o = out + ((size_t)b * T + t) * OC + (size_t)h * hs;

				for (int t2 = 0; t2 <= t; t2++) {
					const float *k = inp + ((size_t)b * T + t2) * R + s->koff + kh;
					float v = 0;
					for (int i = 0; i < hs; i++)
						v += q[i] * k[i];
					a[t2] = v * scale;
				}
				softmax_row(a, a, t + 1);
				for (int t2 = t + 1; t2 < T; t2++)
					a[t2] = 0.0f;
				for (int i = 0; i < hs; i++)
					o[i] = 0;
				for (int t2 = 0; t2 <= t; t2++) {
					const float *v = inp + ((size_t)b * T + t2) * R + s->voff + kh;
					for (int i = 0; i < hs; i++)
						o[i] += a[t2] * v[i];
				}
			}
}

/* One (b, kv head) per thread, its query heads in turn: dk, dv never race. */
void attention_backward(float *dinp, float *scratch, const float *dout, const float *inp,
			const float *att, const struct attn_shape *s)
{
	int B = s->B, T = s->T, NH = s->NH, KVH = s->KVH, hs = s->hs, grp = NH / KVH;
	size_t R = s->row, OC = (size_t)NH * hs;
	float scale = 1.0f / sqrtf((float)hs);

	memset(dinp, 0, (size_t)B * T * R * 4);
#pragma omp parallel for collapse(2)
	for (int b = 0; b < B; b++)
		for (int kvh = 0; kvh < KVH; kvh++) {
			float *datt = scratch + (size_t)omp_get_thread_num() * 2 * T;
			float *dpre = datt + T;
			size_t kh = (size_t)kvh * hs;

			for (int h = kvh * grp; h < (kvh + 1) * grp; h++)
				for (int t = 0; t < T; t++) {
					const float *a = att + (((size_t)b * NH + h) * T + t) * T;
					const float *d = dout + ((size_t)b * T + t) * OC + (size_t)h * hs;
					const float *q = inp + ((size_t)b * T + t) * R + (size_t)h * hs;
					float *dq = dinp + ((size_t)b * T + t) * R + (size_t)h * hs;
					float dot = 0;

					for (int t2 = 0; t2 <= t; t2++) {
						size_t row = ((size_t)b * T + t2) * R + kh;
						const float *v = inp + row + s->voff;
						float *dv = dinp + row + s->voff, sum = 0;
						for (int i = 0; i < hs; i++) {
							sum += v[i] * d[i];
							dv[i] += a[t2] * d[i];
						}
						datt[t2] = sum;
						dot += a[t2] * sum;
					}
					for (int t2 = 0; t2 <= t; t2++)
						dpre[t2] = a[t2] * (datt[t2] - dot) * scale;
					for (int t2 = 0; t2 <= t; t2++) {
						size_t row = ((size_t)b * T + t2) * R + kh;
						const float *k = inp + row + s->koff;
						float *dk = dinp + row + s->koff;
						for (int i = 0; i < hs; i++) {
							dq[i] += k[i] * dpre[t2];
							dk[i] += q[i] * dpre[t2];
						}
					}
				}
		}
}

void linear_forward(float *out, int ldo, int accumulate, const float *inp, int ldi,
		    const float *w, const float *bias, int N, int IC, int OC)
{
	if (bias)
		for (int n = 0; n < N; n++)
			for (int o = 0; o < OC; o++)
				out[(size_t)n * ldo + o] = (accumulate ? out[(size_t)n * ldo + o] : 0) +
							   bias[o];
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, ldi, w, IC,
		    bias || accumulate ? 1.0f : 0.0f, out, ldo);
}

void linear_backward(float *dinp, int accumulate, float *dw, float *dbias, const float *dout,
		     int ldd, const float *inp, const float *w, int N, int IC, int OC)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, ldd, w, IC,
		    accumulate ? 1.0f : 0.0f, dinp, IC);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, ldd, inp, IC,
		    1.0f, dw, IC);
	if (dbias)
		for (int n = 0; n < N; n++)
			for (int o = 0; o < OC; o++)
				dbias[o] += dout[(size_t)n * ldd + o];
}

float crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets,
			   int N, int V)
{
	double total = 0;

#pragma omp parallel for reduction(+ : total)
	for (int n = 0; n < N; n++) {
		float *p = probs + (size_t)n * V;

		softmax_row(p, logits + (size_t)n * V, V);
		float pt = p[targets[n]];

		/* clamped from below only: a NaN stays a NaN, for the trainer to see */
		losses[n] = -logf(pt < 1e-30f ? 1e-30f : pt);
		total += losses[n];
	}
	return (float)(total / N);
}

void crossentropy_backward(float *dlogits, const float *probs, const int *targets, int N, int V)
{
	float dloss = 1.0f / N;

#pragma omp parallel for
	for (int n = 0; n < N; n++) {
		const float *p = probs + (size_t)n * V;
		float *d = dlogits + (size_t)n * V;
		for (int i = 0; i < V; i++)
			d[i] = p[i] * dloss;
		d[targets[n]] -= dloss;
	}
}

/* splitmix64: a tiny, well-mixed, portable generator for the init. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void fill_normal(float *x, size_t n, float std, uint64_t *s)
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

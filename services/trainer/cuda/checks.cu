/* checks — the GPU's self-checks behind gpu.h's attn_check and fused_check
 * (tests and gpu-check): flash attention against the plain kernels, and
 * each fused path (cuBLASLt epilogues, the one-read cross-entropy kernels)
 * against its unfused twin, on random data, as relative L2 errors. */
#include "model_int.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* n bf16 device values as host floats (malloc'd; NULL when out of memory) */
static float *host_f32(const bf16 *x, size_t n)
{
	float *h = (float *)malloc(n * 4), *d = NULL;

	if (!h || cudaMalloc((void **)&d, n * 4)) {
		free(h);
		return NULL;
	}
	k_bf16_to_f32(d, x, n, 0);
	cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost);
	cudaFree(d);
	return h;
}

/* adds x's squared distance from ref to *num and ref's square to *den */
static void sq_acc(float x, float ref, double *num, double *den)
{
	if (!isfinite(x))
		*num = INFINITY;
	*num += ((double)x - ref) * ((double)x - ref);
	*den += (double)ref * ref;
}

static double rel_of(double num, double den) { return den > 0 ? sqrt(num / den) : sqrt(num); }

/* rel L2 error of x against ref, both bf16 on the device, n elements */
static double rel_err(const bf16 *x, const bf16 *ref, size_t n)
{
	float *hx = host_f32(x, n), *hr = host_f32(ref, n);
	double num = 0, den = 0;

	if (!hx || !hr)
		num = INFINITY;
	else
		for (size_t i = 0; i < n; i++)
			sq_acc(hx[i], hr[i], &num, &den);
	free(hx);
	free(hr);
	return rel_of(num, den);
}

int gpu_attn_check(int B, int T, int NH, int HS, uint64_t seed, double *err_out,
		   double *err_grad, char *err, size_t errlen)
{
	struct attn_args a = {B, T, NH, HS, 1.0f / sqrtf((float)HS)};
	size_t nq = (size_t)B * T * 3 * NH * HS, no = (size_t)B * T * NH * HS;
	bf16 *qkv = NULL, *dout = NULL, *o1 = NULL, *o2 = NULL, *g1 = NULL, *g2 = NULL;
	float *l1 = NULL, *l2 = NULL, *s1 = NULL, *s2 = NULL;
	int r = -EIO;

	if (attn_flash_supported(&a) < 0) {
		snprintf(err, errlen, "flash kernels need head size 64 or 128 and T %% 64 == 0");
		return -EINVAL;
	}
	if (cudaMalloc((void **)&qkv, nq * 2) || cudaMalloc((void **)&dout, no * 2) ||
	    cudaMalloc((void **)&o1, no * 2) || cudaMalloc((void **)&o2, no * 2) ||
	    cudaMalloc((void **)&g1, nq * 2) || cudaMalloc((void **)&g2, nq * 2) ||
	    cudaMalloc((void **)&l1, (size_t)B * NH * T * 4) ||
	    cudaMalloc((void **)&l2, (size_t)B * NH * T * 4) ||
	    cudaMalloc((void **)&s1, attn_scratch_floats(&a, 0) * 4) ||
	    cudaMalloc((void **)&s2, attn_scratch_floats(&a, 1) * 4)) {
		snprintf(err, errlen, "cudaMalloc failed");
		goto out;
	}
	/* scores of a few units: a peaked softmax, as trained models have */
	k_fill_random(qkv, nq, seed, 2.0f, 0);
	k_fill_random(dout, no, seed + 7, 1.0f, 0);
	k_attn_forward(o2, l2, qkv, &a, 1, 0);
	k_attn_backward(g2, s2, dout, o2, l2, qkv, &a, 1, 0);
	*err_out = *err_grad = 0;
	/* every flash variant: attention.cu's, then flash2.cu's where it applies */
	for (int f2 = 0; f2 < 2 && (f2 == 0 || flash2_supported(&a)); f2++) {
		a.flash2 = f2;
		cudaMemset(o1, 0xff, no * 2); /* NaN: unwritten elements fail */
		cudaMemset(g1, 0xff, nq * 2);
		k_attn_forward(o1, l1, qkv, &a, 0, 0);
		k_attn_backward(g1, s1, dout, o1, l1, qkv, &a, 0, 0);
		if (cudaDeviceSynchronize() != cudaSuccess || cudaGetLastError() != cudaSuccess) {
			snprintf(err, errlen, "attention kernels failed: %s",
				 cudaGetErrorString(cudaGetLastError()));
			goto out;
		}
		double eo = rel_err(o1, o2, no), eg = rel_err(g1, g2, nq);
		if (!(eo <= *err_out))
			*err_out = eo;
		if (!(eg <= *err_grad))
			*err_grad = eg;
	}
	r = 0;
out:
	cudaFree(qkv);
	cudaFree(dout);
	cudaFree(o1);
	cudaFree(o2);
	cudaFree(g1);
	cudaFree(g2);
	cudaFree(l1);
	cudaFree(l2);
	cudaFree(s1);
	cudaFree(s2);
	return r;
}

/* rel L2 error of x against ref, fp32 on the device, n elements */
static double rel_err_f32(const float *x, const float *ref, size_t n)
{
	float *hx = (float *)malloc(n * 4), *hr = (float *)malloc(n * 4);
	double num = 0, den = 0;

	if (!hx || !hr) {
		num = INFINITY;
	} else {
		cudaMemcpy(hx, x, n * 4, cudaMemcpyDeviceToHost);
		cudaMemcpy(hr, ref, n * 4, cudaMemcpyDeviceToHost);
		for (size_t i = 0; i < n; i++)
			sq_acc(hx[i], hr[i], &num, &den);
	}
	free(hx);
	free(hr);
	return rel_of(num, den);
}

/* The logits' gradients (N,Vp) against ref's: off the target column (the
 * softmax, small values) into *off, on it (p - 1, which would swamp the
 * rest in one norm) into *on. */
static void ce_grad_err(const bf16 *x, const bf16 *ref, const int *htg, int N, int Vp,
			double *off, double *on)
{
	size_t n = (size_t)N * Vp;
	float *hx = host_f32(x, n), *hr = host_f32(ref, n);
	double num[2] = {}, den[2] = {};

	if (!hx || !hr) {
		num[0] = num[1] = INFINITY;
	} else {
		for (int r = 0; r < N; r++)
			for (int c = 0; c < Vp; c++) {
				size_t i = (size_t)r * Vp + c;
				int t = c == htg[r];
				sq_acc(hx[i], hr[i], &num[t], &den[t]);
			}
	}
	free(hx);
	free(hr);
	*off = rel_of(num[0], den[0]);
	*on = rel_of(num[1], den[1]);
}

/* The cross-entropy kernels against the three-pass one: N rows of V. */
static int ce_check(struct gpu_model *m, int N, int V, uint64_t seed, double e[3])
{
	int Vp = pad_v(V), *tg = NULL, *htg = (int *)malloc(N * sizeof(int));
	size_t n = (size_t)N * Vp;
	bf16 *ref = NULL, *x = NULL;
	float *lref = NULL, *l = NULL;
	int r = -EIO;

	if (!htg || cudaMalloc((void **)&ref, n * 2) || cudaMalloc((void **)&x, n * 2) ||
	    cudaMalloc((void **)&lref, N * 4) || cudaMalloc((void **)&l, N * 4) ||
	    cudaMalloc((void **)&tg, N * sizeof(int))) {
		snprintf(m->err, sizeof(m->err), "cudaMalloc failed");
		goto out;
	}
	for (int i = 0; i < N; i++)
		htg[i] = (int)((seed + (uint64_t)i * 2654435761u) % (uint64_t)V);
	/* on the model's stream: a plain cudaMemcpy does not order itself
	 * with a non-blocking stream */
	cudaMemcpyAsync(tg, htg, N * sizeof(int), cudaMemcpyHostToDevice, m->st);
	/* logits of a few units, as a trained model's are */
	k_fill_random(ref, n, seed, 6.0f, m->st);
	k_crossentropy_as(CE_3PASS, lref, ref, tg, N, V, Vp, 1.0f / N, 1, m->st);
	e[0] = e[1] = e[2] = 0;
	for (int v = CE_REGS; v <= CE_ONLINE; v++) {
		if (k_crossentropy_variant(V, Vp, v == CE_REGS ? CE_MODE_AUTO : CE_MODE_ONLINE) != v)
			continue; /* the row does not fit in registers */
		k_fill_random(x, n, seed, 6.0f, m->st);
		cudaMemsetAsync(l, 0xff, N * 4, m->st);
		k_crossentropy_as(v, l, x, tg, N, V, Vp, 1.0f / N, 1, m->st);
		if (cudaStreamSynchronize(m->st) != cudaSuccess) {
			snprintf(m->err, sizeof(m->err), "cross-entropy kernels failed: %s",
				 cudaGetErrorString(cudaGetLastError()));
			goto out;
		}
		double el = rel_err_f32(l, lref, N), eoff, eon;
		ce_grad_err(x, ref, htg, N, Vp, &eoff, &eon);
		if (!(el <= e[0]))
			e[0] = el;
		if (!(eoff <= e[1]))
			e[1] = eoff;
		if (!(eon <= e[2]))
			e[2] = eon;
	}
	r = 0;
out:
	free(htg);
	cudaFree(ref);
	cudaFree(x);
	cudaFree(lref);
	cudaFree(l);
	cudaFree(tg);
	return r;
}

/* A GELU layer of (N,K) @ (K,M) + bias through the epilogues against the
 * matmul and the kernels: forward (which 1) or backward (which 2). */
static int epilogue_check(struct gpu_model *m, int which, int N, int M, int K, uint64_t seed,
			  double e[3])
{
	size_t nin = (size_t)N * K, nout = (size_t)N * M;
	bf16 *inp = NULL, *w = NULL, *b = NULL, *o[2] = {}, *p[2] = {}, *dout = NULL;
	float *dw[2] = {}, *db[2] = {};
	int r = -EIO;

	if (cudaMalloc((void **)&inp, nin * 2) || cudaMalloc((void **)&w, (size_t)K * M * 2) ||
	    cudaMalloc((void **)&b, M * 2) || cudaMalloc((void **)&dout, nout * 2))
		goto oom;
	for (int i = 0; i < 2; i++)
		if (cudaMalloc((void **)&o[i], (which == 1 ? nout : nin) * 2) ||
		    cudaMalloc((void **)&p[i], (which == 1 ? nout : nin) * 2) ||
		    cudaMalloc((void **)&dw[i], (size_t)K * M * 4) ||
		    cudaMalloc((void **)&db[i], M * 4))
			goto oom;
	k_fill_random(inp, nin, seed, 1.0f, m->st);
	k_fill_random(w, (size_t)K * M, seed + 1, 0.05f, m->st);
	k_fill_random(b, M, seed + 2, 0.5f, m->st);
	k_fill_random(dout, nout, seed + 3, 1.0f, m->st);
	for (int i = 0; i < 2; i++) { /* 0 fused, 1 not */
		m->fuse_gelu = m->fuse_bgrad = i == 0;
		if (which == 1) {
			r = linear_gelu_forward(m, o[i], p[i], inp, w, b, N, K, M);
		} else {
			/* pre-activations of a few units around the GELU's bend */
			k_fill_random(p[i], nin, seed + 4, 3.0f, m->st);
			cudaMemsetAsync(dw[i], 0, (size_t)K * M * 4, m->st);
			cudaMemsetAsync(db[i], 0, M * 4, m->st);
			r = linear_backward(m, o[i], dw[i], db[i], dout, NULL, inp, w, N, K, M, p[i]);
		}
		if (r)
			goto out;
		/* m->err holds gemm_ex's reason */
		if (i == 0 && (which == 1 ? m->no_epi_gelu : m->no_epi_dgelu || m->no_epi_bgrad)) {
			r = -ENOTSUP;
			goto out;
		}
	}
	if (cudaStreamSynchronize(m->st) != cudaSuccess) {
		snprintf(m->err, sizeof(m->err), "epilogue check failed: %s",
			 cudaGetErrorString(cudaGetLastError()));
		r = -EIO;
		goto out;
	}
	if (which == 1) {
		e[0] = rel_err(o[0], o[1], nout);
		e[1] = rel_err(p[0], p[1], nout);
		e[2] = 0;
	} else {
		e[0] = rel_err(o[0], o[1], nin);
		e[1] = rel_err_f32(db[0], db[1], M);
		e[2] = rel_err_f32(dw[0], dw[1], (size_t)K * M);
	}
	r = 0;
	goto out;
oom:
	snprintf(m->err, sizeof(m->err), "cudaMalloc failed");
out:
	cudaFree(inp);
	cudaFree(w);
	cudaFree(b);
	cudaFree(dout);
	for (int i = 0; i < 2; i++) {
		cudaFree(o[i]);
		cudaFree(p[i]);
		cudaFree(dw[i]);
		cudaFree(db[i]);
	}
	return r;
}

int gpu_fused_check(int which, int N, int M, int K, uint64_t seed, double err_out[3],
		    char *err, size_t errlen)
{
	struct gpu_dims d = {};
	struct gpu_model *m;
	int r;

	if (which < 0 || which > 2 || N < 1 || M < 2 || (which && (M % 8 || K < 8 || K % 8))) {
		snprintf(err, errlen, "fused_check: bad arguments");
		return -EINVAL;
	}
	/* a throwaway model: the stream, cuBLASLt, and scratch rows M wide */
	d.L = 1, d.NH = 1, d.C = which ? CEIL_DIV(M, 256) * 64 : 64, d.V = 64, d.maxT = 64;
	if ((r = gpu_create(&m, &d, 1, 64, err, errlen)))
		return r;
	m->err[0] = 0;
	r = which == 0 ? ce_check(m, N, M, seed, err_out)
		       : epilogue_check(m, which, N, M, K, seed, err_out);
	if (r)
		snprintf(err, errlen, "%s", m->err[0] ? m->err : "failed");
	gpu_destroy(m);
	return r;
}

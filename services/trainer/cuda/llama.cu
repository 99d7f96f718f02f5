/* llama — Llama on one GPU, as llama.c computes it on the CPU: RMSNorm
 * (fused with the residual add), q/k/v projections, rotary embedding,
 * grouped-query causal attention, SwiGLU MLP, optional biases, tied or
 * separate lm_head.
 *
 * The attention kernels of attention.cu work on one packed (B,T,3,NH,hd)
 * buffer: rope_pack() writes q and k rotated and each key/value head
 * repeated for the query heads of its group; rope_unpack() rotates the
 * gradients back and sums each group's k and v gradients in a fixed order.
 * Matrices are nn.Linear (out, in) row-major, which cuBLASLt reads as
 * column-major (in x out) and transposes. Gradients flowing into a norm are
 * fp32 (dCf), since q, k and v (and gate and up) all add into them.
 *
 * Behind BURSAR_CUDA_LLAMA=1 until test-cuda has passed with it on a GPU.
 */
#include "model_int.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- kernels ---- */

__device__ __forceinline__ float ll_warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

// encoded (N,C) = emb[inp]
__global__ void embed_kernel(float *out, const int *inp, const float *emb, int N, int C)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (size_t)N * C)
		return;
	out[i] = emb[(size_t)inp[i / C] * C + i % C];
}

// res = a + b (b NULL: res is a); out bf16 = res * rstd * w; one warp per row
__global__ void rmsnorm_kernel(float *res, bf16 *out, float *rstd, const float *a, const bf16 *b,
			       const float *w, int N, int C, float eps)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const float *x = a + (size_t)row * C;
	float *r = res + (size_t)row * C, ss = 0;

	for (int c = lane; c < C; c += 32) {
		float v = x[c];
		if (b)
			v += __bfloat162float(b[(size_t)row * C + c]);
		if (r != x)
			r[c] = v;
		ss += v * v;
	}
	float s = rsqrtf(ll_warp_sum(ss) / C + eps);
	__syncwarp();
	for (int c = lane; c < C; c += 32)
		out[(size_t)row * C + c] = __float2bfloat16(r[c] * s * w[c]);
	if (lane == 0)
		rstd[row] = s;
}

// dres (+)= s w d - x dot, dot = sum(w d x) s^3 / C; dres_bf = bf16(dres);
// warp gw accumulates dw partial row gw of scratch
__global__ void rmsnorm_backward_kernel(float *dres, bf16 *dres_bf, float *scratch,
				       const float *dout, const float *inp, const float *w,
				       const float *rstd, int N, int C, int overwrite)
{
	int nw = gridDim.x * (blockDim.x / 32);
	int gw = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	float *pdw = scratch + (size_t)gw * C;

	for (int c = lane; c < C; c += 32)
		pdw[c] = 0;
	for (int row = gw; row < N; row += nw) {
		const float *d = dout + (size_t)row * C, *x = inp + (size_t)row * C;
		float *di = dres + (size_t)row * C, s = rstd[row], dot = 0;

		for (int c = lane; c < C; c += 32)
			dot += w[c] * d[c] * x[c];
		dot = ll_warp_sum(dot) * s * s * s / C;
		for (int c = lane; c < C; c += 32) {
			float g = s * w[c] * d[c] - x[c] * dot;
			float nv = overwrite ? g : di[c] + g;
			pdw[c] += d[c] * x[c] * s;
			di[c] = nv;
			dres_bf[(size_t)row * C + c] = __float2bfloat16(nv);
		}
	}
}

// swi = silu(gate) * up, 8 per thread
__global__ void swiglu_kernel(bf16 *swi, const bf16 *gate, const bf16 *up, size_t n8)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n8)
		return;
	uint4 rg = ((const uint4 *)gate)[i], ru = ((const uint4 *)up)[i], ro;
	const bf16 *g = (const bf16 *)&rg, *u = (const bf16 *)&ru;
	bf16 *o = (bf16 *)&ro;
#pragma unroll
	for (int k = 0; k < 8; k++) {
		float x = __bfloat162float(g[k]);
		o[k] = __float2bfloat16(x / (1.0f + __expf(-x)) * __bfloat162float(u[k]));
	}
	((uint4 *)swi)[i] = ro;
}

// dgate holds dswi on entry; dgate, dup = swiglu'(dswi)
__global__ void swiglu_backward_kernel(bf16 *dgate, bf16 *dup, const bf16 *gate, const bf16 *up,
				       size_t n8)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n8)
		return;
	uint4 rg = ((const uint4 *)gate)[i], ru = ((const uint4 *)up)[i];
	uint4 rd = ((const uint4 *)dgate)[i], rdu;
	const bf16 *g = (const bf16 *)&rg, *u = (const bf16 *)&ru;
	bf16 *dg = (bf16 *)&rd, *du = (bf16 *)&rdu;
#pragma unroll
	for (int k = 0; k < 8; k++) {
		float x = __bfloat162float(g[k]), sig = 1.0f / (1.0f + __expf(-x));
		float ds = __bfloat162float(dg[k]);
		du[k] = __float2bfloat16(ds * x * sig);
		dg[k] = __float2bfloat16(ds * __bfloat162float(u[k]) * sig * (1.0f + x * (1.0f - sig)));
	}
	((uint4 *)dgate)[i] = rd;
	((uint4 *)dup)[i] = rdu;
}

struct rope_shape {
	int N, T, NH, KVH, hd, QKV;
};

// packed (N,3,NH,hd) from qkv (N, [q NH*hd | k KVH*hd | v KVH*hd]); one thread
// per (n, part, head, i < hd/2)
__global__ void rope_pack_kernel(bf16 *packed, const bf16 *qkv, const float *cosr,
				 const float *sinr, struct rope_shape s)
{
	int half = s.hd / 2, grp = s.NH / s.KVH, Q = s.NH * s.hd, KV = s.KVH * s.hd;
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (size_t)s.N * 3 * s.NH * half)
		return;
	int j = (int)(i % half), h = (int)(i / half % s.NH), part = (int)(i / half / s.NH % 3);
	int n = (int)(i / half / s.NH / 3), t = n % s.T;
	const bf16 *src = qkv + (size_t)n * s.QKV +
			  (part == 0 ? h * s.hd : (part == 1 ? Q : Q + KV) + (h / grp) * s.hd);
	bf16 *dst = packed + ((size_t)n * 3 + part) * Q + h * s.hd;
	float x1 = __bfloat162float(src[j]), x2 = __bfloat162float(src[j + half]);

	if (part < 2) {
		float c = cosr[(size_t)t * half + j], sn = sinr[(size_t)t * half + j];
		float y1 = x1 * c - x2 * sn, y2 = x2 * c + x1 * sn;
		x1 = y1;
		x2 = y2;
	}
	dst[j] = __float2bfloat16(x1);
	dst[j + half] = __float2bfloat16(x2);
}

// dqkv (N, [dq | dk | dv]) from dpacked (N,3,NH,hd): rotated back, each group's
// k and v gradients summed in head order; one thread per (n, q or kv head, i)
__global__ void rope_unpack_kernel(bf16 *dqkv, const bf16 *dpacked, const float *cosr,
				   const float *sinr, struct rope_shape s)
{
	int half = s.hd / 2, grp = s.NH / s.KVH, Q = s.NH * s.hd, KV = s.KVH * s.hd;
	int heads = s.NH + 2 * s.KVH; /* q heads, then k heads, then v heads */
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (size_t)s.N * heads * half)
		return;
	int j = (int)(i % half), hh = (int)(i / half % heads), n = (int)(i / half / heads);
	int t = n % s.T, part = hh < s.NH ? 0 : (hh < s.NH + s.KVH ? 1 : 2);
	int h = part == 0 ? hh : (part == 1 ? hh - s.NH : hh - s.NH - s.KVH);
	int h0 = part == 0 ? h : h * grp, nh = part == 0 ? 1 : grp;
	float c = cosr[(size_t)t * half + j], sn = sinr[(size_t)t * half + j], d1 = 0, d2 = 0;

	for (int k = 0; k < nh; k++) {
		const bf16 *src = dpacked + ((size_t)n * 3 + part) * Q + (h0 + k) * s.hd;
		float g1 = __bfloat162float(src[j]), g2 = __bfloat162float(src[j + half]);
		if (part < 2) {
			float y1 = g1 * c + g2 * sn, y2 = g2 * c - g1 * sn;
			g1 = y1;
			g2 = y2;
		}
		d1 += g1;
		d2 += g2;
	}
	bf16 *dst = dqkv + (size_t)n * s.QKV + (part == 0 ? 0 : (part == 1 ? Q : Q + KV)) + h * s.hd;
	dst[j] = __float2bfloat16(d1);
	dst[j + half] = __float2bfloat16(d2);
}

/* ---- buffers ---- */

uint64_t llama_act_bytes(const struct gpu_dims *d, int B, int T)
{
	uint64_t N = (uint64_t)B * T, C = d->C, L = d->L, F = d->F, Q = (uint64_t)d->NH * d->hd;
	uint64_t QKV = Q + 2ull * d->KVH * d->hd;

	return 4 * (N * C + 2 * L * N * C + 2 * L * N + N + (uint64_t)B * d->NH * T * L + N * C) +
	       2 * (2 * L * N * C + L * N * QKV + L * N * 3 * Q + L * N * Q + 3 * L * N * F +
		    N * QKV + 2 * N * F) +
	       8ull * d->rope_T * d->hd;
}

int llama_alloc(struct gpu_model *m, char *err, size_t errlen)
{
	size_t N = m->N, L = m->L, half = m->hd / 2;
	cudaError_t e;

#define LALLOC(p, n)                                                                          \
	if ((e = cudaMalloc((void **)&(p), (size_t)(n) * sizeof(*(p)))) != cudaSuccess)       \
		goto out;
	LALLOC(m->qkv_ll, L * N * m->QKV);
	LALLOC(m->gate, L * N * m->F);
	LALLOC(m->up, L * N * m->F);
	LALLOC(m->swi, L * N * m->F);
	LALLOC(m->dqkv_ll, N * m->QKV);
	LALLOC(m->dgate, N * m->F);
	LALLOC(m->dup, N * m->F);
	LALLOC(m->rstd1, L * N);
	LALLOC(m->rstd2, L * N);
	LALLOC(m->rstdf, N);
	LALLOC(m->dCf, N * m->C);
	LALLOC(m->rope_cos, (size_t)m->d.rope_T * half);
	LALLOC(m->rope_sin, (size_t)m->d.rope_T * half);
#undef LALLOC
	if ((e = cudaMemcpy(m->rope_cos, m->d.rope_cos, (size_t)m->d.rope_T * half * 4,
			    cudaMemcpyHostToDevice)) != cudaSuccess ||
	    (e = cudaMemcpy(m->rope_sin, m->d.rope_sin, (size_t)m->d.rope_T * half * 4,
			    cudaMemcpyHostToDevice)) != cudaSuccess)
		goto out;
	return 0;
out:
	snprintf(err, errlen, "%s", cudaGetErrorString(e));
	return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

void llama_free(struct gpu_model *m)
{
	void *p[] = {m->qkv_ll, m->gate, m->up, m->swi, m->dqkv_ll, m->dgate, m->dup, m->rstd1,
		     m->rstd2, m->rstdf, m->dCf, m->rope_cos, m->rope_sin};
	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
		if (p[i])
			cudaFree(p[i]);
}

/* ---- layers ---- */

static const bf16 *bias_of(struct gpu_model *m, int idx, size_t off)
{
	return m->d.sizes[idx] ? PB(idx) + off : NULL;
}

static float *gbias_of(struct gpu_model *m, int idx, size_t off)
{
	return m->d.sizes[idx] ? GR(idx) + off : NULL;
}

// out (N,OC; row pitch ldo) = inp (N,IC; ldi) @ W^T + bias, W (OC,IC)
static int ll_fwd(struct gpu_model *m, bf16 *out, int ldo, const bf16 *inp, int ldi, const bf16 *w,
		  const bf16 *bias, int IC, int OC)
{
	return gemm(m, out, 0, w, 1, IC, inp, 0, ldi, OC, m->N, IC, ldo, 0, bias);
}

// dinp (N,IC) (+)= dout @ W (fp32 when f32); dW (OC,IC) += dout^T @ inp;
// dbias (OC) += column sums of dout (of dout_f32, row pitch OC, when given)
static int ll_bwd(struct gpu_model *m, void *dinp, int f32, int accum, float *dw, float *dbias,
		  const bf16 *dout, int ldo, const float *dout_f32, const bf16 *inp, int ldi,
		  const bf16 *w, int IC, int OC)
{
	int N = m->N, r;

	if ((r = gemm(m, dinp, f32, w, 0, IC, dout, 0, ldo, IC, N, OC, IC, accum, NULL)) ||
	    (r = gemm(m, dw, 1, inp, 0, ldi, dout, 1, ldo, IC, OC, N, IC, 1, NULL)))
		return r;
	if (dbias && dout_f32)
		k_colsum_f32(dbias, m->scratch, dout_f32, N, OC, m->st);
	else if (dbias)
		k_colsum_bf16_ld(dbias, m->scratch, dout, N, OC, ldo, m->st);
	mark(m, T_BIAS);
	return 0;
}

static void rmsnorm(struct gpu_model *m, float *res, bf16 *out, float *rstd, const float *a,
		    const bf16 *b, const float *w)
{
	rmsnorm_kernel<<<CEIL_DIV(m->N, 8), 256, 0, m->st>>>(res, out, rstd, a, b, w, m->N, m->C,
							       m->d.eps);
	mark(m, T_LN);
}

static void rmsnorm_backward(struct gpu_model *m, float *dw, const float *dout, const float *inp,
			     const float *w, const float *rstd, int overwrite)
{
	int nw = LN_BWD_BLOCKS * LN_BWD_WARPS;
	rmsnorm_backward_kernel<<<LN_BWD_BLOCKS, LN_BWD_WARPS * 32, 0, m->st>>>(
		m->dres, m->dres_bf, m->scratch, dout, inp, w, rstd, m->N, m->C, overwrite);
	k_rows_sum(dw, m->scratch, nw, m->C, m->st);
	mark(m, T_LNB);
}

static struct rope_shape rope_shape_of(struct gpu_model *m)
{
	return (struct rope_shape){m->N, m->T, m->NH, m->KVH, m->hd, m->QKV};
}

/* ---- forward and backward ---- */

int llama_forward(struct gpu_model *m, int grad, float grad_scale)
{
	int N = m->N, C = m->C, L = m->L, B = m->B, T = m->T, NH = m->NH, Q = m->Q, KV = m->KV;
	int QKV = m->QKV, F = m->F, head = m->d.tied ? LL_EMB : LL_HEAD, r;
	size_t NC = (size_t)N * C, NF = (size_t)N * F;
	struct attn_args a = {B, T, NH, m->hd, 1.0f / sqrtf((float)m->hd), m->flash2};
	struct rope_shape rs = rope_shape_of(m);
	size_t npack = (size_t)N * 3 * NH * (m->hd / 2);

	embed_kernel<<<CEIL_DIV(NC, 256), 256, 0, m->st>>>(m->encoded, m->d_in, PF(LL_EMB), N, C);
	mark(m, T_ENC);
	rmsnorm(m, m->encoded, m->ln1, m->rstd1, m->encoded, NULL, PF(LL_ATTN_NORM));
	for (int l = 0; l < L; l++) {
		size_t lc = (size_t)l * C, lf = (size_t)l * F;
		const float *x = l == 0 ? m->encoded : m->res3 + (l - 1) * NC;
		bf16 *h1 = m->ln1 + l * NC, *h2 = m->ln2 + l * NC;
		bf16 *qkv = m->qkv_ll + (size_t)l * N * QKV, *packed = m->qkv + (size_t)l * N * 3 * Q;
		bf16 *atty = m->atty + (size_t)l * N * Q;
		bf16 *gate = m->gate + l * NF, *up = m->up + l * NF, *swi = m->swi + l * NF;
		float *res2 = m->res2 + l * NC, *res3 = m->res3 + l * NC;

		if ((r = ll_fwd(m, qkv, QKV, h1, C, PB(LL_WQ) + (size_t)l * Q * C,
				bias_of(m, LL_BQ, (size_t)l * Q), C, Q)) ||
		    (r = ll_fwd(m, qkv + Q, QKV, h1, C, PB(LL_WK) + (size_t)l * KV * C,
				bias_of(m, LL_BK, (size_t)l * KV), C, KV)) ||
		    (r = ll_fwd(m, qkv + Q + KV, QKV, h1, C, PB(LL_WV) + (size_t)l * KV * C,
				bias_of(m, LL_BV, (size_t)l * KV), C, KV)))
			return r;
		rope_pack_kernel<<<CEIL_DIV(npack, 256), 256, 0, m->st>>>(packed, qkv, m->rope_cos,
									   m->rope_sin, rs);
		k_attn_forward(atty, m->lse + (size_t)l * B * NH * T, packed, &a, m->naive_attn, m->st);
		mark(m, T_ATTF);
		if ((r = ll_fwd(m, m->tmp, C, atty, Q, PB(LL_WO) + lc * Q, bias_of(m, LL_BO, lc), Q,
				C)))
			return r;
		rmsnorm(m, res2, h2, m->rstd2 + (size_t)l * N, x, m->tmp, PF(LL_MLP_NORM) + lc);
		if ((r = ll_fwd(m, gate, F, h2, C, PB(LL_WGATE) + lf * C, bias_of(m, LL_BGATE, lf), C,
				F)) ||
		    (r = ll_fwd(m, up, F, h2, C, PB(LL_WUP) + lf * C, bias_of(m, LL_BUP, lf), C, F)))
			return r;
		swiglu_kernel<<<CEIL_DIV(NF / 8, 256), 256, 0, m->st>>>(swi, gate, up, NF / 8);
		mark(m, T_GELU);
		if ((r = ll_fwd(m, m->tmp, C, swi, F, PB(LL_WDOWN) + lc * F, bias_of(m, LL_BDOWN, lc),
				F, C)))
			return r;
		if (l + 1 < L)
			rmsnorm(m, res3, m->ln1 + (l + 1) * NC, m->rstd1 + (size_t)(l + 1) * N, res2,
				m->tmp, PF(LL_ATTN_NORM) + lc + C);
		else
			rmsnorm(m, res3, m->lnf, m->rstdf, res2, m->tmp, PF(LL_NORM));
	}
	return logits_and_loss(m, head, grad, grad_scale);
}

int llama_backward(struct gpu_model *m)
{
	int N = m->N, C = m->C, L = m->L, B = m->B, T = m->T, NH = m->NH, Q = m->Q, KV = m->KV;
	int QKV = m->QKV, F = m->F, head = m->d.tied ? LL_EMB : LL_HEAD, r;
	size_t NC = (size_t)N * C, NF = (size_t)N * F;
	struct attn_args a = {B, T, NH, m->hd, 1.0f / sqrtf((float)m->hd), m->flash2};
	struct rope_shape rs = rope_shape_of(m);
	size_t nunpack = (size_t)N * (NH + 2 * m->KVH) * (m->hd / 2);

	// dnorm (N,C) fp32 = dlogits @ head; dhead += dlogits^T @ norm
	if ((r = gemm(m, m->dCf, 1, PB(head), 0, C, m->logits, 0, m->Vp, C, N, m->Vp, C, 0,
		      NULL)) ||
	    (r = gemm(m, GR(head), 1, m->lnf, 0, C, m->logits, 1, m->Vp, C, m->Vp, N, C, 1, NULL)))
		return r;
	rmsnorm_backward(m, GR(LL_NORM), m->dCf, m->res3 + (L - 1) * NC, PF(LL_NORM), m->rstdf, 1);
	for (int l = L - 1; l >= 0; l--) {
		size_t lc = (size_t)l * C, lf = (size_t)l * F;
		const float *x = l == 0 ? m->encoded : m->res3 + (l - 1) * NC;
		bf16 *h1 = m->ln1 + l * NC, *h2 = m->ln2 + l * NC;
		bf16 *packed = m->qkv + (size_t)l * N * 3 * Q, *atty = m->atty + (size_t)l * N * Q;

		/* MLP: dgate holds dswi until swiglu_backward */
		if ((r = ll_bwd(m, m->dgate, 0, 0, GR(LL_WDOWN) + lc * F, gbias_of(m, LL_BDOWN, lc),
				m->dres_bf, C, m->dres, m->swi + l * NF, F, PB(LL_WDOWN) + lc * F, F,
				C)))
			return r;
		swiglu_backward_kernel<<<CEIL_DIV(NF / 8, 256), 256, 0, m->st>>>(
			m->dgate, m->dup, m->gate + l * NF, m->up + l * NF, NF / 8);
		mark(m, T_GELU);
		if ((r = ll_bwd(m, m->dCf, 1, 0, GR(LL_WGATE) + lf * C, gbias_of(m, LL_BGATE, lf),
				m->dgate, F, NULL, h2, C, PB(LL_WGATE) + lf * C, C, F)) ||
		    (r = ll_bwd(m, m->dCf, 1, 1, GR(LL_WUP) + lf * C, gbias_of(m, LL_BUP, lf), m->dup,
				F, NULL, h2, C, PB(LL_WUP) + lf * C, C, F)))
			return r;
		rmsnorm_backward(m, GR(LL_MLP_NORM) + lc, m->dCf, m->res2 + l * NC,
				 PF(LL_MLP_NORM) + lc, m->rstd2 + (size_t)l * N, 0);
		/* attention: datty (N,Q) bf16 in dC */
		if ((r = ll_bwd(m, m->dC, 0, 0, GR(LL_WO) + lc * Q, gbias_of(m, LL_BO, lc),
				m->dres_bf, C, m->dres, atty, Q, PB(LL_WO) + lc * Q, Q, C)))
			return r;
		k_attn_backward(m->dqkv, m->attn_scratch, m->dC, atty, m->lse + (size_t)l * B * NH * T,
				packed, &a, m->naive_attn, m->st);
		rope_unpack_kernel<<<CEIL_DIV(nunpack, 256), 256, 0, m->st>>>(
			m->dqkv_ll, m->dqkv, m->rope_cos, m->rope_sin, rs);
		mark(m, T_ATTB);
		if ((r = ll_bwd(m, m->dCf, 1, 0, GR(LL_WQ) + (size_t)l * Q * C,
				gbias_of(m, LL_BQ, (size_t)l * Q), m->dqkv_ll, QKV, NULL, h1, C,
				PB(LL_WQ) + (size_t)l * Q * C, C, Q)) ||
		    (r = ll_bwd(m, m->dCf, 1, 1, GR(LL_WK) + (size_t)l * KV * C,
				gbias_of(m, LL_BK, (size_t)l * KV), m->dqkv_ll + Q, QKV, NULL, h1, C,
				PB(LL_WK) + (size_t)l * KV * C, C, KV)) ||
		    (r = ll_bwd(m, m->dCf, 1, 1, GR(LL_WV) + (size_t)l * KV * C,
				gbias_of(m, LL_BV, (size_t)l * KV), m->dqkv_ll + Q + KV, QKV, NULL,
				h1, C, PB(LL_WV) + (size_t)l * KV * C, C, KV)))
			return r;
		rmsnorm_backward(m, GR(LL_ATTN_NORM) + lc, m->dCf, x, PF(LL_ATTN_NORM) + lc,
				 m->rstd1 + (size_t)l * N, 0);
	}
	k_embed_backward(GR(LL_EMB), m->dres, m->d_order, m->d_starts, m->d_toks, m->U, C, m->st);
	mark(m, T_ENC);
	return 0;
}

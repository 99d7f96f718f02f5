/* kernels — the elementwise and reduction kernels of bursar-train's CUDA
 * backend: embeddings, fused residual + layernorm, GELU (tanh), bias
 * gradients, fused softmax cross-entropy, global norm, AdamW.
 *
 * Every reduction runs in a fixed order (per-warp or per-chunk partial rows,
 * then one pass that sums them in index order), never with float atomics,
 * so a step's gradients are the same bits on every run.
 */
#include "common.cuh"

#include <math.h>

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* ---- embeddings ---- */

__global__ void encoder_forward_kernel(float *out, const int *inp, const float *wte,
				       const float *wpe, int N, int T, int C)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (size_t)N * C)
		return;
	int n = (int)(i / C), c = (int)(i % C), t = n % T;
	out[i] = wte[(size_t)inp[n] * C + c] + wpe[(size_t)t * C + c];
}

void k_encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int N,
		       int T, int C, cudaStream_t st)
{
	size_t n = (size_t)N * C;
	encoder_forward_kernel<<<CEIL_DIV(n, 256), 256, 0, st>>>(out, inp, wte, wpe, N, T, C);
}

// grid (U, ceil(C/256)): one block column per unique token, summed in position order
__global__ void encoder_backward_wte_kernel(float *dwte, const float *dres, const int *order,
					    const int *starts, const int *toks, int C)
{
	int u = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
	if (c >= C)
		return;
	float s = 0;
	for (int j = starts[u]; j < starts[u + 1]; j++)
		s += dres[(size_t)order[j] * C + c];
	dwte[(size_t)toks[u] * C + c] += s;
}

__global__ void encoder_backward_wpe_kernel(float *dwpe, const float *dres, int B, int T, int C)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (size_t)T * C)
		return;
	int t = (int)(i / C), c = (int)(i % C);
	float s = 0;
	for (int b = 0; b < B; b++)
		s += dres[((size_t)b * T + t) * C + c];
	dwpe[i] += s;
}

void k_embed_backward(float *demb, const float *dres, const int *order, const int *starts,
		      const int *toks, int U, int C, cudaStream_t st)
{
	dim3 g(U, CEIL_DIV(C, 256));
	if (U > 0)
		encoder_backward_wte_kernel<<<g, 256, 0, st>>>(demb, dres, order, starts, toks, C);
}

void k_encoder_backward(float *dwte, float *dwpe, const float *dres, const int *order,
			const int *starts, const int *toks, int U, int B, int T, int C,
			cudaStream_t st)
{
	k_embed_backward(dwte, dres, order, starts, toks, U, C, st);
	encoder_backward_wpe_kernel<<<CEIL_DIV((size_t)T * C, 256), 256, 0, st>>>(dwpe, dres, B,
										   T, C);
}

/* ---- layernorm ---- */

// one warp per row
__global__ void residual_layernorm_kernel(float *res, bf16 *ln, float *mean, float *rstd,
					  const float *a, const bf16 *b, const float *w,
					  const float *bias, int N, int C, float eps)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const float *x = a + (size_t)row * C;
	float *r = res + (size_t)row * C;
	float s = 0, v = 0, m, rs;

	for (int c = lane; c < C; c += 32) {
		float xv = x[c];
		if (b)
			xv += __bfloat162float(b[(size_t)row * C + c]);
		if (r != x)
			r[c] = xv;
		s += xv;
	}
	m = warp_sum(s) / C;
	__syncwarp();
	for (int c = lane; c < C; c += 32) {
		float d = r[c] - m;
		v += d * d;
	}
	rs = rsqrtf(warp_sum(v) / C + eps);
	for (int c = lane; c < C; c += 32)
		ln[(size_t)row * C + c] = __float2bfloat16((r[c] - m) * rs * w[c] + bias[c]);
	if (lane == 0) {
		mean[row] = m;
		rstd[row] = rs;
	}
}

void k_residual_layernorm(float *res, bf16 *ln, float *mean, float *rstd, const float *a,
			  const bf16 *b, const float *w, const float *bias, int N, int C, float eps,
			  cudaStream_t st)
{
	residual_layernorm_kernel<<<CEIL_DIV(N, 8), 256, 0, st>>>(res, ln, mean, rstd, a, b, w,
								  bias, N, C, eps);
}

// grid LN_BWD_BLOCKS x LN_BWD_WARPS warps; warp gw owns partial rows gw of
// scratch (dw) and LN_BWD_BLOCKS*LN_BWD_WARPS + gw (db)
// BURSAR_CUDA_LN=scalar: the one-element-per-lane kernel below (to compare)
static int ln_scalar(void)
{
	static int v = -1;
	if (v < 0)
		v = getenv("BURSAR_CUDA_LN") && !strcmp(getenv("BURSAR_CUDA_LN"), "scalar");
	return v;
}

__global__ void layernorm_backward_kernel(float *dres, bf16 *dres_bf, float *scratch,
					  const bf16 *dout, const float *inp, const float *w,
					  const float *mean, const float *rstd, int N, int C,
					  int overwrite)
{
	int nw = gridDim.x * (blockDim.x / 32);
	int gw = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	float *pdw = scratch + (size_t)gw * C, *pdb = scratch + (size_t)(nw + gw) * C;

	for (int c = lane; c < C; c += 32)
		pdw[c] = pdb[c] = 0;
	for (int row = gw; row < N; row += nw) {
		const bf16 *d = dout + (size_t)row * C;
		const float *x = inp + (size_t)row * C;
		float *di = dres + (size_t)row * C;
		bf16 *dib = dres_bf + (size_t)row * C;
		float m = mean[row], s = rstd[row], dm = 0, dnm = 0;

		for (int c = lane; c < C; c += 32) {
			float dv = __bfloat162float(d[c]), norm = (x[c] - m) * s, dn = w[c] * dv;
			dm += dn;
			dnm += dn * norm;
		}
		dm = warp_sum(dm) / C;
		dnm = warp_sum(dnm) / C;
		for (int c = lane; c < C; c += 32) {
			float dv = __bfloat162float(d[c]), norm = (x[c] - m) * s, dn = w[c] * dv;
			float g = (dn - dm - norm * dnm) * s;
			float nv = overwrite ? g : di[c] + g;
			pdb[c] += dv;
			pdw[c] += norm * dv;
			di[c] = nv;
			dib[c] = __float2bfloat16(nv);
		}
	}
}

// The same backward with 16-byte loads and the dw/db partial sums kept in
// registers: lane l owns the 8-column chunks l, l+32, ... (K8 of them, C =
// 256*K8), reads its row's values once into registers for both passes, and
// writes its partial sums to scratch once, at the end.
template <int K8>
__global__ void layernorm_backward_vec_kernel(float *dres, bf16 *dres_bf, float *scratch,
					      const bf16 *dout, const float *inp, const float *w,
					      const float *mean, const float *rstd, int N, int C,
					      int overwrite)
{
	int nw = gridDim.x * (blockDim.x / 32);
	int gw = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	float wv[K8 * 8], adw[K8 * 8], adb[K8 * 8];

#pragma unroll
	for (int k = 0; k < K8; k++) {
		int c0 = (lane + 32 * k) * 8;
		float4 w0 = make_float4(0, 0, 0, 0), w1 = w0;
		if (c0 < C)
			w0 = *(const float4 *)(w + c0), w1 = *(const float4 *)(w + c0 + 4);
		float t[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
		for (int j = 0; j < 8; j++) {
			wv[k * 8 + j] = t[j];
			adw[k * 8 + j] = adb[k * 8 + j] = 0;
		}
	}
	for (int row = gw; row < N; row += nw) {
		const bf16 *d = dout + (size_t)row * C;
		const float *x = inp + (size_t)row * C;
		float *di = dres + (size_t)row * C;
		bf16 *dib = dres_bf + (size_t)row * C;
		float m = mean[row], s = rstd[row], dm = 0, dnm = 0;
		float dv[K8 * 8], nv[K8 * 8];

#pragma unroll
		for (int k = 0; k < K8; k++) {
			int c0 = (lane + 32 * k) * 8;
			uint4 rd = make_uint4(0, 0, 0, 0);
			float4 x0 = make_float4(m, m, m, m), x1 = x0; /* past C: norm 0, dout 0 */
			if (c0 < C) {
				rd = *(const uint4 *)(d + c0);
				x0 = *(const float4 *)(x + c0), x1 = *(const float4 *)(x + c0 + 4);
			}
			const bf16 *db16 = (const bf16 *)&rd;
			float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
			for (int j = 0; j < 8; j++) {
				float v = __bfloat162float(db16[j]), nrm = (xs[j] - m) * s;
				float dn = wv[k * 8 + j] * v;
				dv[k * 8 + j] = v;
				nv[k * 8 + j] = nrm;
				dm += dn;
				dnm += dn * nrm;
			}
		}
		dm = warp_sum(dm) / C;
		dnm = warp_sum(dnm) / C;
#pragma unroll
		for (int k = 0; k < K8; k++) {
			int c0 = (lane + 32 * k) * 8;
			float o[8] = {0, 0, 0, 0, 0, 0, 0, 0}, g[8];
			uint4 rb;
			bf16 *gb = (bf16 *)&rb;

			if (c0 >= C)
				continue;
			if (!overwrite) {
				float4 o0 = *(const float4 *)(di + c0), o1 = *(const float4 *)(di + c0 + 4);
				o[0] = o0.x, o[1] = o0.y, o[2] = o0.z, o[3] = o0.w;
				o[4] = o1.x, o[5] = o1.y, o[6] = o1.z, o[7] = o1.w;
			}
#pragma unroll
			for (int j = 0; j < 8; j++) {
				float v = dv[k * 8 + j], nrm = nv[k * 8 + j], dn = wv[k * 8 + j] * v;
				g[j] = o[j] + (dn - dm - nrm * dnm) * s;
				gb[j] = __float2bfloat16(g[j]);
				adb[k * 8 + j] += v;
				adw[k * 8 + j] += nrm * v;
			}
			*(float4 *)(di + c0) = make_float4(g[0], g[1], g[2], g[3]);
			*(float4 *)(di + c0 + 4) = make_float4(g[4], g[5], g[6], g[7]);
			*(uint4 *)(dib + c0) = rb;
		}
	}
	float *pdw = scratch + (size_t)gw * C, *pdb = scratch + (size_t)(nw + gw) * C;
#pragma unroll
	for (int k = 0; k < K8; k++) {
		int c0 = (lane + 32 * k) * 8;
		float *a = adw + k * 8, *b = adb + k * 8;
		if (c0 >= C)
			continue;
		*(float4 *)(pdw + c0) = make_float4(a[0], a[1], a[2], a[3]);
		*(float4 *)(pdw + c0 + 4) = make_float4(a[4], a[5], a[6], a[7]);
		*(float4 *)(pdb + c0) = make_float4(b[0], b[1], b[2], b[3]);
		*(float4 *)(pdb + c0 + 4) = make_float4(b[4], b[5], b[6], b[7]);
	}
}

// out[c] += sum over rows r < nrows of part[r*C + c], in row order
__global__ void rows_sum_kernel(float *out, const float *part, int nrows, int C)
{
	int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= C)
		return;
	float s = 0;
	for (int r = 0; r < nrows; r++)
		s += part[(size_t)r * C + c];
	out[c] += s;
}

void k_layernorm_backward(float *dres, bf16 *dres_bf, float *dw, float *db, float *scratch,
			  const bf16 *dout, const float *inp, const float *w, const float *mean,
			  const float *rstd, int N, int C, int overwrite, cudaStream_t st)
{
	int nw = LN_BWD_BLOCKS * LN_BWD_WARPS, k8 = C % 8 ? 0 : CEIL_DIV(C, 256);
	int aligned = !(((uintptr_t)dres | (uintptr_t)dres_bf | (uintptr_t)dout | (uintptr_t)inp |
			 (uintptr_t)w | (uintptr_t)scratch) % 16);
	dim3 g(LN_BWD_BLOCKS), b(LN_BWD_WARPS * 32);

	if (!aligned || ln_scalar())
		k8 = 0;
	/* up to C = 1280 (GPT-2's 768, 1024, 1280): wider rows would spill registers */
	switch (k8) {
	case 1: layernorm_backward_vec_kernel<1><<<g, b, 0, st>>>(dres, dres_bf, scratch, dout, inp,
								     w, mean, rstd, N, C, overwrite); break;
	case 2: layernorm_backward_vec_kernel<2><<<g, b, 0, st>>>(dres, dres_bf, scratch, dout, inp,
								     w, mean, rstd, N, C, overwrite); break;
	case 3: layernorm_backward_vec_kernel<3><<<g, b, 0, st>>>(dres, dres_bf, scratch, dout, inp,
								     w, mean, rstd, N, C, overwrite); break;
	case 4: layernorm_backward_vec_kernel<4><<<g, b, 0, st>>>(dres, dres_bf, scratch, dout, inp,
								     w, mean, rstd, N, C, overwrite); break;
	case 5: layernorm_backward_vec_kernel<5><<<g, b, 0, st>>>(dres, dres_bf, scratch, dout, inp,
								     w, mean, rstd, N, C, overwrite); break;

	default:
		layernorm_backward_kernel<<<g, b, 0, st>>>(dres, dres_bf, scratch, dout, inp, w, mean,
							   rstd, N, C, overwrite);
	}
	rows_sum_kernel<<<CEIL_DIV(C, 256), 256, 0, st>>>(dw, scratch, nw, C);
	rows_sum_kernel<<<CEIL_DIV(C, 256), 256, 0, st>>>(db, scratch + (size_t)nw * C, nw, C);
}

/* ---- GELU (tanh approximation, HF's gelu_new) ---- */

__device__ __forceinline__ float gelu_f(float x)
{
	return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ float gelu_grad(float x)
{
	float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
	return 0.5f * (1.0f + th) +
	       0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
}

// 8 elements per thread, 16-byte loads
__global__ void gelu_forward_kernel(bf16 *out, const bf16 *inp, size_t n8)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n8)
		return;
	uint4 raw = ((const uint4 *)inp)[i], res;
	const bf16 *x = (const bf16 *)&raw;
	bf16 *y = (bf16 *)&res;
#pragma unroll
	for (int k = 0; k < 8; k++)
		y[k] = __float2bfloat16(gelu_f(__bfloat162float(x[k])));
	((uint4 *)out)[i] = res;
}

__global__ void gelu_backward_kernel(bf16 *d, const bf16 *inp, size_t n8)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n8)
		return;
	uint4 rx = ((const uint4 *)inp)[i], rd = ((uint4 *)d)[i];
	const bf16 *x = (const bf16 *)&rx;
	bf16 *g = (bf16 *)&rd;
#pragma unroll
	for (int k = 0; k < 8; k++)
		g[k] = __float2bfloat16(__bfloat162float(g[k]) * gelu_grad(__bfloat162float(x[k])));
	((uint4 *)d)[i] = rd;
}

void k_gelu_forward(bf16 *out, const bf16 *inp, size_t n, cudaStream_t st)
{
	gelu_forward_kernel<<<CEIL_DIV(n / 8, 256), 256, 0, st>>>(out, inp, n / 8);
}

void k_gelu_backward(bf16 *d, const bf16 *inp, size_t n, cudaStream_t st)
{
	gelu_backward_kernel<<<CEIL_DIV(n / 8, 256), 256, 0, st>>>(d, inp, n / 8);
}

/* ---- bias gradients: column sums ---- */

// BURSAR_CUDA_COLSUM=scalar: the one-column-per-thread kernel (to compare)
static int colsum_scalar(void)
{
	static int v = -1;
	if (v < 0)
		v = getenv("BURSAR_CUDA_COLSUM") && !strcmp(getenv("BURSAR_CUDA_COLSUM"), "scalar");
	return v;
}

__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }

// grid (ceil(OC/256), COLSUM_CHUNKS): chunk k sums rows k, k+chunks, ... (row pitch ld)
template <typename T>
__global__ void colsum_kernel(float *part, const T *x, int N, int OC, int ld)
{
	int c = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
	if (c >= OC)
		return;
	float s = 0;
	for (int r = k; r < N; r += gridDim.y)
		s += to_f(x[(size_t)r * ld + c]);
	part[(size_t)k * OC + c] = s;
}

// The same sums with 16-byte loads: a block covers 256 columns, each thread
// VEC adjacent ones (8 bf16 or 4 floats) of every blockDim.y-th row of its
// chunk; the row lanes are then added in a fixed order, so the bits do not
// depend on timing. Needs OC and ld multiples of VEC and x 16-byte aligned.
template <typename T, int VEC>
__global__ void colsum_vec_kernel(float *part, const T *x, int N, int OC, int ld)
{
	__shared__ float sh[8][256];
	int c0 = blockIdx.x * 256 + threadIdx.x * VEC, t, c;
	float s[VEC];

#pragma unroll
	for (int k = 0; k < VEC; k++)
		s[k] = 0;
	if (c0 < OC) {
#pragma unroll 4
		for (int r = blockIdx.y * blockDim.y + threadIdx.y; r < N;
		     r += gridDim.y * blockDim.y) {
			uint4 v = *(const uint4 *)(x + (size_t)r * ld + c0);
			const T *e = (const T *)&v;
#pragma unroll
			for (int k = 0; k < VEC; k++)
				s[k] += to_f(e[k]);
		}
	}
#pragma unroll
	for (int k = 0; k < VEC; k++)
		sh[threadIdx.y][threadIdx.x * VEC + k] = s[k];
	__syncthreads();
	t = threadIdx.y * blockDim.x + threadIdx.x;
	c = blockIdx.x * 256 + t;
	if (c < OC) {
		float a = 0;
		for (int y = 0; y < (int)blockDim.y; y++)
			a += sh[y][t];
		part[(size_t)blockIdx.y * OC + c] = a;
	}
}

static int vec_ok(const void *x, int OC, int ld, int vec)
{
	return !((uintptr_t)x % 16) && OC % vec == 0 && ld % vec == 0;
}

void k_colsum_bf16_ld(float *out, float *scratch, const bf16 *x, int N, int OC, int ld,
		      cudaStream_t st)
{
	dim3 g(CEIL_DIV(OC, 256), COLSUM_CHUNKS);
	if (vec_ok(x, OC, ld, 8) && !colsum_scalar())
		colsum_vec_kernel<bf16, 8><<<g, dim3(32, 8), 0, st>>>(scratch, x, N, OC, ld);
	else
		colsum_kernel<bf16><<<g, 256, 0, st>>>(scratch, x, N, OC, ld);
	rows_sum_kernel<<<CEIL_DIV(OC, 256), 256, 0, st>>>(out, scratch, COLSUM_CHUNKS, OC);
}

void k_colsum_bf16(float *out, float *scratch, const bf16 *x, int N, int OC, cudaStream_t st)
{
	k_colsum_bf16_ld(out, scratch, x, N, OC, OC, st);
}

void k_colsum_f32(float *out, float *scratch, const float *x, int N, int OC, cudaStream_t st)
{
	dim3 g(CEIL_DIV(OC, 256), COLSUM_CHUNKS);
	if (vec_ok(x, OC, OC, 4) && !colsum_scalar())
		colsum_vec_kernel<float, 4><<<g, dim3(64, 4), 0, st>>>(scratch, x, N, OC, OC);
	else
		colsum_kernel<float><<<g, 256, 0, st>>>(scratch, x, N, OC, OC);
	rows_sum_kernel<<<CEIL_DIV(OC, 256), 256, 0, st>>>(out, scratch, COLSUM_CHUNKS, OC);
}

/* ---- fused softmax cross-entropy ---- */

__device__ float block_reduce(float v, int is_max)
{
	__shared__ float sh[32];
	int lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = blockDim.x / 32;

	v = is_max ? warp_max(v) : warp_sum(v);
	__syncthreads();
	if (lane == 0)
		sh[w] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : (is_max ? -INFINITY : 0.0f);
	v = is_max ? warp_max(v) : warp_sum(v);
	return v;
}

// One block per row; logits rows of Vp (V real columns, pad columns zero).
// Three passes over the row with 2-byte loads (BURSAR_CUDA_CE=3pass: the
// kernel the others are checked against).
__global__ void crossentropy_kernel(float *losses, bf16 *logits, const int *targets, int V, int Vp,
				    float dscale, int grad)
{
	int row = blockIdx.x;
	bf16 *x = logits + (size_t)row * Vp;
	int tgt = targets[row];
	float mx = -INFINITY, sum = 0;

	for (int i = threadIdx.x; i < V; i += blockDim.x)
		mx = fmaxf(mx, __bfloat162float(x[i]));
	mx = block_reduce(mx, 1);
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		sum += expf(__bfloat162float(x[i]) - mx);
	sum = block_reduce(sum, 0);
	if (threadIdx.x == 0)
		losses[row] = logf(sum) + mx - __bfloat162float(x[tgt]);
	if (!grad)
		return;
	__syncthreads(); /* x[tgt] read above before it is overwritten */
	float inv = 1.0f / sum;
	for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
		float g = 0;
		if (i < V)
			g = (expf(__bfloat162float(x[i]) - mx) * inv - (i == tgt ? 1.0f : 0.0f)) * dscale;
		x[i] = __float2bfloat16(g);
	}
}

// The gradient of 8 logits from column c0 on (pad columns: 0).
__device__ __forceinline__ uint4 ce_grad8(uint4 v, int c0, int V, int tgt, float mx, float inv,
					  float dscale)
{
	const bf16 *e = (const bf16 *)&v;
	uint4 out;
	bf16 *o = (bf16 *)&out;
#pragma unroll
	for (int j = 0; j < 8; j++) {
		int c = c0 + j;
		float g = 0;
		if (c < V)
			g = (expf(__bfloat162float(e[j]) - mx) * inv - (c == tgt ? 1.0f : 0.0f)) *
			    dscale;
		o[j] = __float2bfloat16(g);
	}
	return out;
}

// The same with the row held in registers: each thread loads VPT 16-byte
// vectors (8 logits each) once; the max, the sum of exponentials and the
// gradient all come from those registers, so the logits are read once and
// written once (3.3 GB each way for GPT-2 at B=32 T=1024, instead of three
// reads and a write). Needs Vp % 8 == 0 and Vp / 8 <= VPT * blockDim.x.
template <int VPT>
__global__ void __launch_bounds__(1024)
	crossentropy_reg_kernel(float *losses, bf16 *logits, const int *targets, int V, int Vp,
				float dscale, int grad)
{
	int row = blockIdx.x, n8 = Vp / 8;
	bf16 *x = logits + (size_t)row * Vp;
	int tgt = targets[row];
	float mx = -INFINITY, sum = 0, xt = 0;
	uint4 v[VPT];

	if (threadIdx.x == 0) /* read before the barriers of block_reduce, so before any write */
		xt = __bfloat162float(x[tgt]);
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int i = threadIdx.x + k * blockDim.x;
		v[k] = i < n8 ? ((const uint4 *)x)[i] : make_uint4(0, 0, 0, 0);
		const bf16 *e = (const bf16 *)&v[k];
#pragma unroll
		for (int j = 0; j < 8; j++)
			if (i * 8 + j < V)
				mx = fmaxf(mx, __bfloat162float(e[j]));
	}
	mx = block_reduce(mx, 1);
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int i = threadIdx.x + k * blockDim.x;
		const bf16 *e = (const bf16 *)&v[k];
#pragma unroll
		for (int j = 0; j < 8; j++)
			if (i * 8 + j < V)
				sum += expf(__bfloat162float(e[j]) - mx);
	}
	sum = block_reduce(sum, 0);
	if (threadIdx.x == 0)
		losses[row] = logf(sum) + mx - xt;
	if (!grad)
		return;
	float inv = 1.0f / sum;
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int i = threadIdx.x + k * blockDim.x;
		if (i < n8)
			((uint4 *)x)[i] = ce_grad8(v[k], i * 8, V, tgt, mx, inv, dscale);
	}
}

// Rows too long for registers (Llama 3's 128K vocabulary): one pass of
// 16-byte loads keeps a running max and a sum rescaled to it (online
// softmax), a second reads the row again (mostly from L2) to write the
// gradient: two reads and a write instead of three reads and a write.
__global__ void __launch_bounds__(1024)
	crossentropy_online_kernel(float *losses, bf16 *logits, const int *targets, int V, int Vp,
				   float dscale, int grad)
{
	int row = blockIdx.x, n8 = Vp / 8;
	bf16 *x = logits + (size_t)row * Vp;
	int tgt = targets[row];
	float mx = -INFINITY, sum = 0, xt = 0;

	if (threadIdx.x == 0)
		xt = __bfloat162float(x[tgt]);
	for (int i = threadIdx.x; i < n8; i += blockDim.x) {
		uint4 v = ((const uint4 *)x)[i];
		const bf16 *e = (const bf16 *)&v;
		float f[8], m8 = -INFINITY;
#pragma unroll
		for (int j = 0; j < 8; j++) {
			f[j] = i * 8 + j < V ? __bfloat162float(e[j]) : -INFINITY;
			m8 = fmaxf(m8, f[j]);
		}
		if (m8 > mx) {
			sum *= expf(mx - m8); /* exp(-inf) = 0 on the first vector */
			mx = m8;
		}
		if (m8 > -INFINITY)
#pragma unroll
			for (int j = 0; j < 8; j++)
				sum += expf(f[j] - mx);
	}
	/* each thread's (max, sum) rescaled to the row's max, then summed */
	float rmx = block_reduce(mx, 1);
	sum = mx > -INFINITY ? sum * expf(mx - rmx) : 0.0f;
	sum = block_reduce(sum, 0);
	mx = rmx;
	if (threadIdx.x == 0)
		losses[row] = logf(sum) + mx - xt;
	if (!grad)
		return;
	float inv = 1.0f / sum;
	for (int i = threadIdx.x; i < n8; i += blockDim.x)
		((uint4 *)x)[i] = ce_grad8(((const uint4 *)x)[i], i * 8, V, tgt, mx, inv, dscale);
}

// BURSAR_CUDA_CE: "3pass" the first kernel, "online" the two-pass one for
// every row, "auto" registers where the row fits (Vp <= 8 * 8 * 1024), else
// the two-pass one. Unset: "auto" with BURSAR_CUDA_FUSED=1, else "3pass"
// (until gpu-check has run the new kernels on a GPU).
int k_crossentropy_mode(void)
{
	const char *s = getenv("BURSAR_CUDA_CE"), *f = getenv("BURSAR_CUDA_FUSED");
	if (!s)
		s = f && atoi(f) ? "auto" : "3pass";
	return !strcmp(s, "3pass")	 ? CE_MODE_3PASS
	       : !strcmp(s, "online") ? CE_MODE_ONLINE
				      : CE_MODE_AUTO;
}

int k_crossentropy_variant(int V, int Vp, int mode)
{
	int vpt = CEIL_DIV(Vp / 8, 1024);
	if (mode < 0)
		mode = k_crossentropy_mode();
	if (mode == CE_MODE_3PASS || Vp % 8)
		return CE_3PASS;
	if (mode == CE_MODE_ONLINE || vpt > 8)
		return CE_ONLINE;
	(void)V;
	return CE_REGS;
}

void k_crossentropy_as(int variant, float *losses, bf16 *logits, const int *targets, int N, int V,
		       int Vp, float dscale, int grad, cudaStream_t st)
{
	int vpt = CEIL_DIV(Vp / 8, 1024);
	/* fewer threads for short rows (a test's vocabulary of a few hundred) */
	int th = vpt > 1 ? 1024 : CEIL_DIV(Vp / 8, 32) * 32;

	if (Vp % 8) /* the one-read kernels move 8 logits at a time */
		variant = CE_3PASS;
	if (variant == CE_ONLINE) {
		crossentropy_online_kernel<<<N, 1024, 0, st>>>(losses, logits, targets, V, Vp,
								dscale, grad);
		return;
	}
	if (variant != CE_REGS || vpt > 8) {
		crossentropy_kernel<<<N, 1024, 0, st>>>(losses, logits, targets, V, Vp, dscale, grad);
		return;
	}
	switch (vpt) {
#define CE_CASE(n)                                                                            \
	case n:                                                                               \
		crossentropy_reg_kernel<n><<<N, th, 0, st>>>(losses, logits, targets, V, Vp,  \
							     dscale, grad);                   \
		break;
		CE_CASE(1) CE_CASE(2) CE_CASE(3) CE_CASE(4) CE_CASE(5) CE_CASE(6) CE_CASE(7)
			CE_CASE(8)
#undef CE_CASE
	}
}

__global__ void mean_kernel(float *out, const float *x, int n)
{
	float s = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x)
		s += x[i];
	s = block_reduce(s, 0);
	if (threadIdx.x == 0)
		*out = s / n;
}

void k_mean(float *out, const float *x, int n, cudaStream_t st)
{
	mean_kernel<<<1, 1024, 0, st>>>(out, x, n);
}

/* ---- global norm ---- */

__global__ void sumsq_kernel(float *part, const float *x, size_t n)
{
	float s = 0;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		s += x[i] * x[i];
	s = block_reduce(s, 0);
	if (threadIdx.x == 0)
		part[blockIdx.x] = s;
}

__global__ void sum_parts_kernel(float *out, const float *part, int n)
{
	float s = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x)
		s += part[i];
	s = block_reduce(s, 0);
	if (threadIdx.x == 0)
		*out = s;
}

void k_sumsq(float *out, float *scratch, const float *x, size_t n, cudaStream_t st)
{
	sumsq_kernel<<<NORM_BLOCKS, 512, 0, st>>>(scratch, x, n);
	sum_parts_kernel<<<1, 512, 0, st>>>(out, scratch, NORM_BLOCKS);
}

/* ---- AdamW (decoupled weight decay, bias-corrected), as optim.c ---- */

__global__ void adamw_kernel(float *p, bf16 *p_bf, const float *g, float *m, float *v, size_t n,
			     float lr, float b1, float b2, float c1, float c2, float eps, float wd,
			     float gscale)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float gr = g[i] * gscale, mi = b1 * m[i] + (1.0f - b1) * gr;
	float vi = b2 * v[i] + (1.0f - b2) * gr * gr, pi = p[i];
	pi -= lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + wd * pi);
	m[i] = mi;
	v[i] = vi;
	p[i] = pi;
	p_bf[i] = __float2bfloat16(pi);
}

void k_adamw(float *p, bf16 *p_bf, const float *g, float *m, float *v, size_t n, float lr,
	     float b1, float b2, float c1, float c2, float eps, float wd, float gscale,
	     cudaStream_t st)
{
	if (n)
		adamw_kernel<<<CEIL_DIV(n, 256), 256, 0, st>>>(p, p_bf, g, m, v, n, lr, b1, b2, c1,
							       c2, eps, wd, gscale);
}

/* ---- casts and fills ---- */

__global__ void f32_to_bf16_kernel(bf16 *out, const float *in, size_t n)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		out[i] = __float2bfloat16(in[i]);
}

__global__ void bf16_to_f32_kernel(float *out, const bf16 *in, size_t n)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		out[i] = __bfloat162float(in[i]);
}

void k_f32_to_bf16(bf16 *out, const float *in, size_t n, cudaStream_t st)
{
	if (n)
		f32_to_bf16_kernel<<<CEIL_DIV(n, 256), 256, 0, st>>>(out, in, n);
}

void k_bf16_to_f32(float *out, const bf16 *in, size_t n, cudaStream_t st)
{
	if (n)
		bf16_to_f32_kernel<<<CEIL_DIV(n, 256), 256, 0, st>>>(out, in, n);
}

__global__ void fill_random_kernel(bf16 *x, size_t n, uint64_t seed, float scale)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	x[i] = __float2bfloat16(((float)(z >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * scale);
}

void k_fill_random(bf16 *x, size_t n, uint64_t seed, float scale, cudaStream_t st)
{
	if (n)
		fill_random_kernel<<<CEIL_DIV(n, 256), 256, 0, st>>>(x, n, seed, scale);
}

/* ---- for llama.cu: row sums ---- */


void k_rows_sum(float *out, const float *part, int nrows, int C, cudaStream_t st)
{
	rows_sum_kernel<<<CEIL_DIV(C, 256), 256, 0, st>>>(out, part, nrows, C);
}

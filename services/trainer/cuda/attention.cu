/* attention — causal self-attention on the GPU, flash-style: the T x T
 * score matrix never reaches device memory. Forward keeps only the output
 * and the log-sum-exp of each query row; backward recomputes the scores a
 * tile at a time (FlashAttention-2's split: one kernel accumulates dK, dV
 * per key tile, another dQ per query tile, so no float atomics and the
 * same bits every run).
 *
 * Tiles of 64 queries x 64 keys, four warps per block, each warp 16 rows;
 * the products run on the tensor cores through WMMA (bf16 in, fp32
 * accumulate), the online softmax in fp32. Head sizes 64 and 128 with T a
 * multiple of 64 take these kernels (or, with attn_args.flash2, flash2.cu's
 * register-resident ones for head size 64); other shapes use the plain kernels at
 * the end of this file, which are also the reference the tests check the
 * flash kernels against.
 *
 * Layout: qkv (B,T,3,NH,HS) as the QKV projection writes it; out and dout
 * (B,T,NH,HS); lse (B,NH,T).
 */
#include "common.cuh"

#include <errno.h>
#include <mma.h>

using namespace nvcuda;

#define TILE 64
#define SLD (TILE + 4) /* fp32 score rows */
#define PLD (TILE + 8) /* bf16 probability rows */

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a_row;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> frag_a_col;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_acc;

/* Rows [t0, t0+64) of q, k or v (part 0, 1, 2) of head h into smem (ld). */
template <int HS>
__device__ __forceinline__ void load_tile(bf16 *dst, int ld, const bf16 *qkv, int b, int t0,
					  int part, int h, const struct attn_args &a)
{
	const int C = a.NH * HS, vec = HS / 8;
	for (int i = threadIdx.x; i < TILE * vec; i += blockDim.x) {
		int r = i / vec, c = (i % vec) * 8;
		const bf16 *src = qkv + ((size_t)b * a.T + t0 + r) * 3 * C + part * C + h * HS + c;
		*(uint4 *)(dst + r * ld + c) = *(const uint4 *)src;
	}
}

/* Rows [t0, t0+64) of a (B,T,NH,HS) tensor into smem. */
template <int HS>
__device__ __forceinline__ void load_rows(bf16 *dst, int ld, const bf16 *x, int b, int t0, int h,
					  const struct attn_args &a)
{
	const int C = a.NH * HS, vec = HS / 8;
	for (int i = threadIdx.x; i < TILE * vec; i += blockDim.x) {
		int r = i / vec, c = (i % vec) * 8;
		*(uint4 *)(dst + r * ld + c) =
			*(const uint4 *)(x + ((size_t)b * a.T + t0 + r) * C + h * HS + c);
	}
}

/* S (16 x 64, fp32, ld SLD) = A rows (16 x HS) . B rows (64 x HS)^T */
template <int HS>
__device__ __forceinline__ void mm_abt(float *S, const bf16 *A, const bf16 *Bm, int ld)
{
	for (int j = 0; j < TILE / 16; j++) {
		frag_acc acc;
		wmma::fill_fragment(acc, 0.0f);
#pragma unroll
		for (int k = 0; k < HS / 16; k++) {
			frag_a_row fa;
			frag_b_col fb;
			wmma::load_matrix_sync(fa, A + k * 16, ld);
			wmma::load_matrix_sync(fb, Bm + j * 16 * ld + k * 16, ld);
			wmma::mma_sync(acc, fa, fb, acc);
		}
		wmma::store_matrix_sync(S + j * 16, acc, SLD, wmma::mem_row_major);
	}
}

template <int HS> struct fwd_smem {
	bf16 q[TILE][HS + 8], k[TILE][HS + 8], v[TILE][HS + 8];
	float s[TILE][SLD];
	bf16 p[TILE][PLD];
	float o[TILE][HS + 4];
};

// grid (T/64, B*NH), 128 threads
template <int HS>
__global__ void __launch_bounds__(128) flash_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv,
							struct attn_args a)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	fwd_smem<HS> &sm = *(fwd_smem<HS> *)smem_raw;
	const int qt = blockIdx.x, b = blockIdx.y / a.NH, h = blockIdx.y % a.NH;
	const int w = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
	const int row = w * 16 + r, q_idx = qt * TILE + row;
	float m = -INFINITY, l = 0;

	load_tile<HS>(&sm.q[0][0], HS + 8, qkv, b, qt * TILE, 0, h, a);
	for (int c = half * (HS / 2); c < (half + 1) * (HS / 2); c++)
		sm.o[row][c] = 0;
	for (int kt = 0; kt <= qt; kt++) {
		__syncthreads();
		load_tile<HS>(&sm.k[0][0], HS + 8, qkv, b, kt * TILE, 1, h, a);
		load_tile<HS>(&sm.v[0][0], HS + 8, qkv, b, kt * TILE, 2, h, a);
		__syncthreads();
		mm_abt<HS>(&sm.s[w * 16][0], &sm.q[w * 16][0], &sm.k[0][0], HS + 8);
		__syncwarp();
		/* online softmax: lanes 2r and 2r+1 share row r, 32 columns each */
		float mx = -INFINITY, sum = 0, mnew, alpha;
		for (int c = half * 32; c < half * 32 + 32; c++) {
			float s = sm.s[row][c] * a.scale;
			if (kt == qt && c > row)
				s = -INFINITY;
			sm.s[row][c] = s;
			mx = fmaxf(mx, s);
		}
		mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
		mnew = fmaxf(m, mx);
		alpha = __expf(m - mnew);
		for (int c = half * 32; c < half * 32 + 32; c++) {
			float p = __expf(sm.s[row][c] - mnew);
			bf16 pb = __float2bfloat16(p);
			sm.p[row][c] = pb;
			sum += __bfloat162float(pb);
		}
		sum += __shfl_xor_sync(0xffffffffu, sum, 1);
		l = l * alpha + sum;
		m = mnew;
		for (int c = half * (HS / 2); c < (half + 1) * (HS / 2); c++)
			sm.o[row][c] *= alpha;
		__syncwarp();
		/* O (16 x HS) += P (16 x 64) . V (64 x HS) */
		for (int j = 0; j < HS / 16; j++) {
			frag_acc acc;
			wmma::load_matrix_sync(acc, &sm.o[w * 16][j * 16], HS + 4, wmma::mem_row_major);
#pragma unroll
			for (int k = 0; k < TILE / 16; k++) {
				frag_a_row fa;
				frag_b_row fb;
				wmma::load_matrix_sync(fa, &sm.p[w * 16][k * 16], PLD);
				wmma::load_matrix_sync(fb, &sm.v[k * 16][j * 16], HS + 8);
				wmma::mma_sync(acc, fa, fb, acc);
			}
			wmma::store_matrix_sync(&sm.o[w * 16][j * 16], acc, HS + 4,
						wmma::mem_row_major);
		}
		__syncwarp();
	}
	const int C = a.NH * HS;
	bf16 *o = out + ((size_t)b * a.T + q_idx) * C + h * HS;
	float inv = 1.0f / l;
	for (int c = half * (HS / 2); c < (half + 1) * (HS / 2); c++)
		o[c] = __float2bfloat16(sm.o[row][c] * inv);
	if (half == 0)
		lse[((size_t)b * a.NH + h) * a.T + q_idx] = m + logf(l);
}

/* D (B,NH,T) = rowsum(dout * out), one warp per row */
__global__ void attn_delta_kernel(float *D, const bf16 *dout, const bf16 *out,
				  struct attn_args a)
{
	int gw = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	int C = a.NH * a.HS;
	if (gw >= a.B * a.T * a.NH)
		return;
	int h = gw % a.NH, bt = gw / a.NH, b = bt / a.T, t = bt % a.T;
	const bf16 *x = dout + (size_t)bt * C + h * a.HS, *y = out + (size_t)bt * C + h * a.HS;
	float s = 0;
	for (int c = lane; c < a.HS; c += 32)
		s += __bfloat162float(x[c]) * __bfloat162float(y[c]);
	for (int o = 16; o > 0; o >>= 1)
		s += __shfl_xor_sync(0xffffffffu, s, o);
	if (lane == 0)
		D[((size_t)b * a.NH + h) * a.T + t] = s;
}

template <int HS> struct bwd_smem {
	bf16 q[TILE][HS + 8], k[TILE][HS + 8], v[TILE][HS + 8], d[TILE][HS + 8];
	float s[TILE][SLD], dp[TILE][SLD];
	bf16 p[TILE][PLD], ds[TILE][PLD];
	float lse[TILE], delta[TILE];
};

/* P and dS of the warp's 16 rows: p = exp(s*scale - lse), ds = p (dp - D) scale.
 * Query row index qi0 + row, key index ki0 + column; causal mask. */
template <int HS>
__device__ __forceinline__ void p_and_ds(bwd_smem<HS> &sm, int row, int half, int qi, int ki0,
					 float scale, int write_p)
{
	for (int c = half * 32; c < half * 32 + 32; c++) {
		float p = 0;
		if (ki0 + c <= qi)
			p = __expf(sm.s[row][c] * scale - sm.lse[row]);
		bf16 pb = __float2bfloat16(p);
		if (write_p)
			sm.p[row][c] = pb;
		sm.ds[row][c] = __float2bfloat16(p * (sm.dp[row][c] - sm.delta[row]) * scale);
	}
}

__device__ __forceinline__ void load_stats(float *dst, const float *src, int b, int h, int t0,
					   const struct attn_args &a)
{
	for (int i = threadIdx.x; i < TILE; i += blockDim.x)
		dst[i] = src[((size_t)b * a.NH + h) * a.T + t0 + i];
}

/* Write an fp32 (64 x HS) smem tile as bf16 into part `part` of dqkv. */
template <int HS>
__device__ __forceinline__ void store_part(bf16 *dqkv, const float *src, int ld, int b, int t0,
					   int part, int h, const struct attn_args &a)
{
	const int C = a.NH * HS;
	for (int i = threadIdx.x; i < TILE * HS; i += blockDim.x) {
		int r = i / HS, c = i % HS;
		dqkv[((size_t)b * a.T + t0 + r) * 3 * C + part * C + h * HS + c] =
			__float2bfloat16(src[r * ld + c]);
	}
}

// dK, dV of one key tile; grid (T/64, B*NH), 128 threads
template <int HS>
__global__ void __launch_bounds__(128) flash_bwd_kv_kernel(bf16 *dqkv, const bf16 *dout,
							   const float *lse, const float *D,
							   const bf16 *qkv, struct attn_args a)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bwd_smem<HS> &sm = *(bwd_smem<HS> *)smem_raw;
	const int kt = blockIdx.x, b = blockIdx.y / a.NH, h = blockIdx.y % a.NH;
	const int w = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
	const int row = w * 16 + r, nqt = a.T / TILE;
	frag_acc dk[HS / 16], dv[HS / 16];

	for (int j = 0; j < HS / 16; j++) {
		wmma::fill_fragment(dk[j], 0.0f);
		wmma::fill_fragment(dv[j], 0.0f);
	}
	load_tile<HS>(&sm.k[0][0], HS + 8, qkv, b, kt * TILE, 1, h, a);
	load_tile<HS>(&sm.v[0][0], HS + 8, qkv, b, kt * TILE, 2, h, a);
	for (int qt = kt; qt < nqt; qt++) {
		__syncthreads();
		load_tile<HS>(&sm.q[0][0], HS + 8, qkv, b, qt * TILE, 0, h, a);
		load_rows<HS>(&sm.d[0][0], HS + 8, dout, b, qt * TILE, h, a);
		load_stats(sm.lse, lse, b, h, qt * TILE, a);
		load_stats(sm.delta, D, b, h, qt * TILE, a);
		__syncthreads();
		/* rows are queries: S = Q K^T, dP = dO V^T */
		mm_abt<HS>(&sm.s[w * 16][0], &sm.q[w * 16][0], &sm.k[0][0], HS + 8);
		mm_abt<HS>(&sm.dp[w * 16][0], &sm.d[w * 16][0], &sm.v[0][0], HS + 8);
		__syncwarp();
		p_and_ds<HS>(sm, row, half, qt * TILE + row, kt * TILE, a.scale, 1);
		__syncthreads();
		/* the warp's 16 keys: dV += P^T dO, dK += dS^T Q */
		for (int j = 0; j < HS / 16; j++) {
#pragma unroll
			for (int k = 0; k < TILE / 16; k++) {
				frag_a_col fa;
				frag_b_row fb;
				wmma::load_matrix_sync(fa, &sm.p[k * 16][w * 16], PLD);
				wmma::load_matrix_sync(fb, &sm.d[k * 16][j * 16], HS + 8);
				wmma::mma_sync(dv[j], fa, fb, dv[j]);
				wmma::load_matrix_sync(fa, &sm.ds[k * 16][w * 16], PLD);
				wmma::load_matrix_sync(fb, &sm.q[k * 16][j * 16], HS + 8);
				wmma::mma_sync(dk[j], fa, fb, dk[j]);
			}
		}
	}
	__syncthreads();
	/* the score buffers are free now: stage dK in s, dV in dp (64 x HS <= 64 x SLD
	 * for HS 64; HS 128 uses both halves of s and dp as one 64 x 136 area) */
	float *stage = &sm.s[0][0];
	const int sld = HS + 4;
	for (int j = 0; j < HS / 16; j++)
		wmma::store_matrix_sync(stage + w * 16 * sld + j * 16, dk[j], sld,
					wmma::mem_row_major);
	__syncthreads();
	store_part<HS>(dqkv, stage, sld, b, kt * TILE, 1, h, a);
	__syncthreads();
	for (int j = 0; j < HS / 16; j++)
		wmma::store_matrix_sync(stage + w * 16 * sld + j * 16, dv[j], sld,
					wmma::mem_row_major);
	__syncthreads();
	store_part<HS>(dqkv, stage, sld, b, kt * TILE, 2, h, a);
}

// dQ of one query tile; grid (T/64, B*NH), 128 threads
template <int HS>
__global__ void __launch_bounds__(128) flash_bwd_q_kernel(bf16 *dqkv, const bf16 *dout,
							  const float *lse, const float *D,
							  const bf16 *qkv, struct attn_args a)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bwd_smem<HS> &sm = *(bwd_smem<HS> *)smem_raw;
	const int qt = blockIdx.x, b = blockIdx.y / a.NH, h = blockIdx.y % a.NH;
	const int w = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
	const int row = w * 16 + r;
	frag_acc dq[HS / 16];

	for (int j = 0; j < HS / 16; j++)
		wmma::fill_fragment(dq[j], 0.0f);
	load_tile<HS>(&sm.q[0][0], HS + 8, qkv, b, qt * TILE, 0, h, a);
	load_rows<HS>(&sm.d[0][0], HS + 8, dout, b, qt * TILE, h, a);
	load_stats(sm.lse, lse, b, h, qt * TILE, a);
	load_stats(sm.delta, D, b, h, qt * TILE, a);
	for (int kt = 0; kt <= qt; kt++) {
		__syncthreads();
		load_tile<HS>(&sm.k[0][0], HS + 8, qkv, b, kt * TILE, 1, h, a);
		load_tile<HS>(&sm.v[0][0], HS + 8, qkv, b, kt * TILE, 2, h, a);
		__syncthreads();
		mm_abt<HS>(&sm.s[w * 16][0], &sm.q[w * 16][0], &sm.k[0][0], HS + 8);
		mm_abt<HS>(&sm.dp[w * 16][0], &sm.d[w * 16][0], &sm.v[0][0], HS + 8);
		__syncwarp();
		p_and_ds<HS>(sm, row, half, qt * TILE + row, kt * TILE, a.scale, 0);
		__syncwarp();
		/* dQ (16 x HS) += dS (16 x 64) . K (64 x HS) */
		for (int j = 0; j < HS / 16; j++) {
#pragma unroll
			for (int k = 0; k < TILE / 16; k++) {
				frag_a_row fa;
				frag_b_row fb;
				wmma::load_matrix_sync(fa, &sm.ds[w * 16][k * 16], PLD);
				wmma::load_matrix_sync(fb, &sm.k[k * 16][j * 16], HS + 8);
				wmma::mma_sync(dq[j], fa, fb, dq[j]);
			}
		}
	}
	__syncthreads();
	float *stage = &sm.s[0][0];
	const int sld = HS + 4;
	for (int j = 0; j < HS / 16; j++)
		wmma::store_matrix_sync(stage + w * 16 * sld + j * 16, dq[j], sld,
					wmma::mem_row_major);
	__syncthreads();
	store_part<HS>(dqkv, stage, sld, b, qt * TILE, 0, h, a);
}

/* ---- the plain kernels: any HS <= 256, T <= 4096 ---- */

#define NAIVE_MAX_T 4096

// grid (T, B*NH), 128 threads; one query row per block
__global__ void naive_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, struct attn_args a)
{
	extern __shared__ float nsh[];
	float *q = nsh, *sc = nsh + a.HS, *red = sc + a.T;
	const int t = blockIdx.x, b = blockIdx.y / a.NH, h = blockIdx.y % a.NH, C = a.NH * a.HS;
	const bf16 *base = qkv + (size_t)b * a.T * 3 * C;

	for (int d = threadIdx.x; d < a.HS; d += blockDim.x)
		q[d] = __bfloat162float(base[(size_t)t * 3 * C + h * a.HS + d]);
	__syncthreads();
	float mx = -INFINITY;
	for (int k = threadIdx.x; k <= t; k += blockDim.x) {
		const bf16 *kr = base + (size_t)k * 3 * C + C + h * a.HS;
		float s = 0;
		for (int d = 0; d < a.HS; d++)
			s += q[d] * __bfloat162float(kr[d]);
		sc[k] = s * a.scale;
		mx = fmaxf(mx, sc[k]);
	}
	red[threadIdx.x] = mx;
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int i = 1; i < blockDim.x; i++)
			mx = fmaxf(mx, red[i]);
		float s = 0;
		for (int k = 0; k <= t; k++)
			s += expf(sc[k] - fmaxf(red[0], mx));
		red[0] = fmaxf(red[0], mx);
		red[1] = s;
	}
	__syncthreads();
	mx = red[0];
	float sum = red[1];
	for (int d = threadIdx.x; d < a.HS; d += blockDim.x) {
		float o = 0;
		for (int k = 0; k <= t; k++)
			o += expf(sc[k] - mx) * __bfloat162float(base[(size_t)k * 3 * C + 2 * C +
								      h * a.HS + d]);
		out[((size_t)b * a.T + t) * C + h * a.HS + d] = __float2bfloat16(o / sum);
	}
	if (threadIdx.x == 0)
		lse[((size_t)b * a.NH + h) * a.T + t] = mx + logf(sum);
}

// grid (T, B*NH): dq of row t written, dk/dv of keys <= t added (atomics) to g (fp32)
__global__ void naive_bwd_kernel(float *g, const bf16 *dout, const float *lse, const bf16 *qkv,
				 struct attn_args a)
{
	extern __shared__ float nsh[];
	float *q = nsh, *dq = q + a.HS, *p = dq + a.HS, *ds = p + a.T, *red = ds + a.T;
	const int t = blockIdx.x, b = blockIdx.y / a.NH, h = blockIdx.y % a.NH, C = a.NH * a.HS;
	const bf16 *base = qkv + (size_t)b * a.T * 3 * C;
	const bf16 *dor = dout + ((size_t)b * a.T + t) * C + h * a.HS;
	float L = lse[((size_t)b * a.NH + h) * a.T + t], part = 0;

	for (int d = threadIdx.x; d < a.HS; d += blockDim.x)
		q[d] = __bfloat162float(base[(size_t)t * 3 * C + h * a.HS + d]);
	__syncthreads();
	for (int k = threadIdx.x; k <= t; k += blockDim.x) {
		const bf16 *kr = base + (size_t)k * 3 * C + C + h * a.HS, *vr = kr + C;
		float s = 0, dp = 0;
		for (int d = 0; d < a.HS; d++) {
			s += q[d] * __bfloat162float(kr[d]);
			dp += __bfloat162float(dor[d]) * __bfloat162float(vr[d]);
		}
		p[k] = expf(s * a.scale - L);
		ds[k] = dp;
		part += p[k] * dp;
	}
	red[threadIdx.x] = part;
	__syncthreads();
	if (threadIdx.x == 0) {
		float s = 0;
		for (int i = 0; i < blockDim.x; i++)
			s += red[i];
		red[0] = s;
	}
	__syncthreads();
	float Dv = red[0];
	for (int k = threadIdx.x; k <= t; k += blockDim.x)
		ds[k] = p[k] * (ds[k] - Dv) * a.scale;
	__syncthreads();
	float *gb = g + (size_t)b * a.T * 3 * C;
	for (int d = threadIdx.x; d < a.HS; d += blockDim.x) {
		float s = 0;
		for (int k = 0; k <= t; k++)
			s += ds[k] * __bfloat162float(base[(size_t)k * 3 * C + C + h * a.HS + d]);
		gb[(size_t)t * 3 * C + h * a.HS + d] = s;
	}
	for (int i = threadIdx.x; i < (t + 1) * a.HS; i += blockDim.x) {
		int k = i / a.HS, d = i % a.HS;
		atomicAdd(&gb[(size_t)k * 3 * C + C + h * a.HS + d], ds[k] * q[d]);
		atomicAdd(&gb[(size_t)k * 3 * C + 2 * C + h * a.HS + d],
			  p[k] * __bfloat162float(dor[d]));
	}
}

/* ---- dispatch ---- */

int attn_flash_supported(const struct attn_args *a)
{
	return (a->HS == 64 || a->HS == 128) && a->T % TILE == 0 ? 0 : -EINVAL;
}

size_t attn_scratch_floats(const struct attn_args *a, int naive)
{
	if (naive || attn_flash_supported(a) < 0)
		return (size_t)a->B * a->T * 3 * a->NH * a->HS;
	return (size_t)a->B * a->NH * a->T;
}

template <int HS> static void flash_forward(bf16 *out, float *lse, const bf16 *qkv,
					    const struct attn_args *a, cudaStream_t st)
{
	size_t sm = sizeof(fwd_smem<HS>);
	static int raised;
	if (!raised) {
		cudaFuncSetAttribute(flash_fwd_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				     (int)sm);
		raised = 1;
	}
	dim3 g(a->T / TILE, a->B * a->NH);
	flash_fwd_kernel<HS><<<g, 128, sm, st>>>(out, lse, qkv, *a);
}

template <int HS>
static void flash_backward(bf16 *dqkv, float *D, const bf16 *dout, const float *lse,
			   const bf16 *qkv, const struct attn_args *a, cudaStream_t st)
{
	size_t sm = sizeof(bwd_smem<HS>);
	static int raised;
	if (!raised) {
		cudaFuncSetAttribute(flash_bwd_kv_kernel<HS>,
				     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
		cudaFuncSetAttribute(flash_bwd_q_kernel<HS>,
				     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
		raised = 1;
	}
	dim3 g(a->T / TILE, a->B * a->NH);
	flash_bwd_kv_kernel<HS><<<g, 128, sm, st>>>(dqkv, dout, lse, D, qkv, *a);
	flash_bwd_q_kernel<HS><<<g, 128, sm, st>>>(dqkv, dout, lse, D, qkv, *a);
}

void k_attn_forward(bf16 *out, float *lse, const bf16 *qkv, const struct attn_args *a,
		    int naive, cudaStream_t st)
{
	if (naive || attn_flash_supported(a) < 0) {
		size_t sm = (a->HS + a->T + 128) * sizeof(float);
		naive_fwd_kernel<<<dim3(a->T, a->B * a->NH), 128, sm, st>>>(out, lse, qkv, *a);
	} else if (a->flash2 && flash2_supported(a))
		flash2_forward(out, lse, qkv, a, st);
	else if (a->HS == 64)
		flash_forward<64>(out, lse, qkv, a, st);
	else
		flash_forward<128>(out, lse, qkv, a, st);
}

void k_attn_backward(bf16 *dqkv, float *scratch, const bf16 *dout, const bf16 *out,
		     const float *lse, const bf16 *qkv, const struct attn_args *a, int naive,
		     cudaStream_t st)
{
	if (naive || attn_flash_supported(a) < 0) {
		size_t n = (size_t)a->B * a->T * 3 * a->NH * a->HS;
		size_t sm = (2 * a->HS + 2 * a->T + 128) * sizeof(float);
		cudaMemsetAsync(scratch, 0, n * sizeof(float), st);
		naive_bwd_kernel<<<dim3(a->T, a->B * a->NH), 128, sm, st>>>(scratch, dout, lse, qkv,
									     *a);
		k_f32_to_bf16(dqkv, scratch, n, st);
		return;
	}
	int rows = a->B * a->T * a->NH;
	attn_delta_kernel<<<CEIL_DIV(rows, 8), 256, 0, st>>>(scratch, dout, out, *a);
	if (a->flash2 && flash2_supported(a))
		flash2_backward(dqkv, scratch, dout, lse, qkv, a, st);
	else if (a->HS == 64)
		flash_backward<64>(dqkv, scratch, dout, lse, qkv, a, st);
	else
		flash_backward<128>(dqkv, scratch, dout, lse, qkv, a, st);
}

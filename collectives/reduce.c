/* reduce — the arithmetic of libbcoll: elementwise sum/min/max for f32, f64,
 * i32 and i64 (AVX-512 for all four with masked tails, else AVX2 for the
 * float types, chosen once by __builtin_cpu_supports; a scalar loop
 * otherwise and for AVX2's tails), the final
 * division of avg, and f16/bf16 <-> f32 conversion rounding to nearest even.
 * Both paths give the same bits: min/max pick the same operand, sums are
 * elementwise. Nothing here allocates or fails.
 */
#include "bcoll_int.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define REDUCE3_LOOP(T)                                                                            \
	do {                                                                                       \
		T *d = dst;                                                                        \
		const T *x = a, *y = b;                                                            \
		switch (op) {                                                                      \
		case BCOLL_SUM:                                                                    \
		case BCOLL_AVG:                                                                    \
			for (size_t i = 0; i < n; i++)                                             \
				d[i] = x[i] + y[i];                                                \
			break;                                                                     \
		case BCOLL_MIN:                                                                    \
			for (size_t i = 0; i < n; i++)                                             \
				d[i] = y[i] < x[i] ? y[i] : x[i];                                  \
			break;                                                                     \
		case BCOLL_MAX:                                                                    \
			for (size_t i = 0; i < n; i++)                                             \
				d[i] = y[i] > x[i] ? y[i] : x[i];                                  \
			break;                                                                     \
		}                                                                                  \
	} while (0)

static void reduce3_scalar(void *dst, const void *a, const void *b, size_t n, enum bcoll_dtype dt,
			   enum bcoll_op op)
{
	switch (dt) {
	case BCOLL_F32:
		REDUCE3_LOOP(float);
		break;
	case BCOLL_F64:
		REDUCE3_LOOP(double);
		break;
	case BCOLL_I32:
		REDUCE3_LOOP(int32_t);
		break;
	case BCOLL_I64:
		REDUCE3_LOOP(int64_t);
		break;
	default:
		break;
	}
}

/* The vector body; returns how many leading elements it handled. min/max
 * take (y, x) so that ties and NaNs pick what the scalar loop picks. */
__attribute__((target("avx2"))) static size_t reduce3_avx2(void *dst, const void *a,
							    const void *b, size_t n,
							    enum bcoll_dtype dt, enum bcoll_op op)
{
	size_t i = 0;

	if (dt == BCOLL_F32) {
		float *d = dst;
		const float *x = a, *y = b;

		for (; i + 8 <= n; i += 8) {
			__m256 vx = _mm256_loadu_ps(x + i), vy = _mm256_loadu_ps(y + i), r;

			if (op == BCOLL_MIN)
				r = _mm256_min_ps(vy, vx);
			else if (op == BCOLL_MAX)
				r = _mm256_max_ps(vy, vx);
			else
				r = _mm256_add_ps(vx, vy);
			_mm256_storeu_ps(d + i, r);
		}
	} else if (dt == BCOLL_F64) {
		double *d = dst;
		const double *x = a, *y = b;

		for (; i + 4 <= n; i += 4) {
			__m256d vx = _mm256_loadu_pd(x + i), vy = _mm256_loadu_pd(y + i), r;

			if (op == BCOLL_MIN)
				r = _mm256_min_pd(vy, vx);
			else if (op == BCOLL_MAX)
				r = _mm256_max_pd(vy, vx);
			else
				r = _mm256_add_pd(vx, vy);
			_mm256_storeu_pd(d + i, r);
		}
	}
	return i;
}

/* One op over 512-bit vectors: full vectors unmasked, the tail under a mask
 * (so tiny vectors need no scalar loop); y first in min/max as in the
 * scalar loop. */
#define AVX512_OP(F, ld, st, mld, mst, W)                                                          \
	do {                                                                                       \
		size_t i = 0;                                                                      \
		for (; i + W <= n; i += W)                                                         \
			st((void *)(d + i), F(ld((const void *)(x + i)), ld((const void *)(y + i)))); \
		if (i < n) {                                                                       \
			__mmask16 m = (__mmask16)((1u << (n - i)) - 1);                            \
			mst(d + i, m, F(mld(m, x + i), mld(m, y + i)));                            \
		}                                                                                  \
	} while (0)
#define AVX512_LOOP(ld, st, mld, mst, add, min, max, W)                                            \
	do {                                                                                       \
		if (op == BCOLL_MIN)                                                               \
			AVX512_OP(SWAPPED_##min, ld, st, mld, mst, W);                             \
		else if (op == BCOLL_MAX)                                                          \
			AVX512_OP(SWAPPED_##max, ld, st, mld, mst, W);                             \
		else                                                                               \
			AVX512_OP(add, ld, st, mld, mst, W);                                       \
	} while (0)
#define SWAPPED__mm512_min_ps(a, b) _mm512_min_ps(b, a)
#define SWAPPED__mm512_max_ps(a, b) _mm512_max_ps(b, a)
#define SWAPPED__mm512_min_pd(a, b) _mm512_min_pd(b, a)
#define SWAPPED__mm512_max_pd(a, b) _mm512_max_pd(b, a)
#define SWAPPED__mm512_min_epi32(a, b) _mm512_min_epi32(b, a)
#define SWAPPED__mm512_max_epi32(a, b) _mm512_max_epi32(b, a)
#define SWAPPED__mm512_min_epi64(a, b) _mm512_min_epi64(b, a)
#define SWAPPED__mm512_max_epi64(a, b) _mm512_max_epi64(b, a)

/* Every element, tails under a mask (so tiny vectors need no scalar loop). */
__attribute__((target("avx512f"))) static size_t reduce3_avx512(void *dst, const void *a,
								 const void *b, size_t n,
								 enum bcoll_dtype dt,
								 enum bcoll_op op)
{
	if (dt == BCOLL_F32) {
		float *d = dst;
		const float *x = a, *y = b;

		AVX512_LOOP(_mm512_loadu_ps, _mm512_storeu_ps, _mm512_maskz_loadu_ps,
			    _mm512_mask_storeu_ps, _mm512_add_ps, _mm512_min_ps, _mm512_max_ps, 16);
	} else if (dt == BCOLL_F64) {
		double *d = dst;
		const double *x = a, *y = b;

		AVX512_LOOP(_mm512_loadu_pd, _mm512_storeu_pd, _mm512_maskz_loadu_pd,
			    _mm512_mask_storeu_pd, _mm512_add_pd, _mm512_min_pd, _mm512_max_pd, 8);
	} else if (dt == BCOLL_I32) {
		int32_t *d = dst;
		const int32_t *x = a, *y = b;

		AVX512_LOOP(_mm512_loadu_si512, _mm512_storeu_si512, _mm512_maskz_loadu_epi32,
			    _mm512_mask_storeu_epi32, _mm512_add_epi32, _mm512_min_epi32,
			    _mm512_max_epi32, 16);
	} else if (dt == BCOLL_I64) {
		int64_t *d = dst;
		const int64_t *x = a, *y = b;

		AVX512_LOOP(_mm512_loadu_si512, _mm512_storeu_si512, _mm512_maskz_loadu_epi64,
			    _mm512_mask_storeu_epi64, _mm512_add_epi64, _mm512_min_epi64,
			    _mm512_max_epi64, 8);
	}
	return n;
}

static int have_avx2 = -1, have_avx512;

/* The kernels the CPU has, capped at `level` (0 scalar, 1 AVX2, 2 AVX-512). */
int bcoll_simd_cap(int level)
{
	have_avx512 = level >= 2 && __builtin_cpu_supports("avx512f");
	have_avx2 = level >= 1 && __builtin_cpu_supports("avx2");
	return have_avx512 ? 2 : have_avx2;
}

/* BCOLL_SIMD=scalar|avx2 caps the kernels; default: the best there is. */
static void pick_simd(void)
{
	const char *cap = getenv("BCOLL_SIMD");

	bcoll_simd_cap(!cap ? 2 : !strcmp(cap, "scalar") ? 0 : !strcmp(cap, "avx2") ? 1 : 2);
}

void bcoll_reduce3(void *dst, const void *a, const void *b, size_t n, enum bcoll_dtype dt,
		   enum bcoll_op op)
{
	size_t done = 0, esz = bcoll_dtype_size(dt);

	if (have_avx2 < 0)
		pick_simd();
	if (have_avx512)
		done = reduce3_avx512(dst, a, b, n, dt, op);
	else if (have_avx2 && (dt == BCOLL_F32 || dt == BCOLL_F64))
		done = reduce3_avx2(dst, a, b, n, dt, op);
	if (done < n)
		reduce3_scalar((char *)dst + done * esz, (const char *)a + done * esz,
			       (const char *)b + done * esz, n - done, dt, op);
}

void bcoll_reduce_buf(void *dst, const void *src, size_t n, enum bcoll_dtype dt, enum bcoll_op op)
{
	bcoll_reduce3(dst, dst, src, n, dt, op);
}

void bcoll_divide(void *buf, size_t n, enum bcoll_dtype dt, int by)
{
	size_t i;

	switch (dt) {
	case BCOLL_F32:
		for (i = 0; i < n; i++)
			((float *)buf)[i] /= (float)by;
		break;
	case BCOLL_F64:
		for (i = 0; i < n; i++)
			((double *)buf)[i] /= by;
		break;
	case BCOLL_I32:
		for (i = 0; i < n; i++)
			((int32_t *)buf)[i] /= by;
		break;
	case BCOLL_I64:
		for (i = 0; i < n; i++)
			((int64_t *)buf)[i] /= by;
		break;
	default:
		break;
	}
}

static float bits_f32(uint32_t x)
{
	float f;

	memcpy(&f, &x, 4);
	return f;
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;

	if (e == 0)
		return sign ? -(m * (1.0f / 16777216.0f)) : m * (1.0f / 16777216.0f);
	if (e == 31)
		return bits_f32(sign | 0x7f800000 | (m << 13));
	return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

/* IEEE half, round to nearest even; overflow to infinity. */
static uint16_t f32_to_f16(float f)
{
	uint32_t x, sign, ax, m, r, rem, half;
	int shift;

	memcpy(&x, &f, 4);
	sign = (x >> 16) & 0x8000;
	ax = x & 0x7fffffff;
	if (ax >= 0x7f800000)
		return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0);
	if (ax >= 0x477ff000)
		return sign | 0x7c00;
	if (ax < 0x38800000) {
		if (ax < 0x33000000)
			return sign;
		m = (ax & 0x7fffff) | 0x800000;
		shift = 126 - (int)(ax >> 23);
		r = m >> shift;
		rem = m & ((1u << shift) - 1);
		half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return sign | r;
	}
	r = (ax - 0x38000000) >> 13;
	rem = ax & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
		r++;
	return sign | r;
}

static uint16_t f32_to_bf16(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	if ((x & 0x7fffffff) > 0x7f800000)
		return (x >> 16) | 0x40;
	return (x + 0x7fff + ((x >> 16) & 1)) >> 16;
}

void bcoll_to_f32(float *dst, const void *src, size_t n, enum bcoll_dtype dt)
{
	const uint16_t *s = src;

	for (size_t i = 0; i < n; i++)
		dst[i] = dt == BCOLL_BF16 ? bits_f32((uint32_t)s[i] << 16) : f16_to_f32(s[i]);
}

void bcoll_from_f32(void *dst, const float *src, size_t n, enum bcoll_dtype dt)
{
	uint16_t *d = dst;

	for (size_t i = 0; i < n; i++)
		d[i] = dt == BCOLL_BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
}

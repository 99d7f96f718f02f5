/* reduce — the arithmetic of libbcoll: elementwise sum/min/max for f32, f64,
 * i32 and i64 (AVX2 for the float types when the CPU has it, chosen once by
 * __builtin_cpu_supports; a scalar loop otherwise and for tails), the final
 * division of avg, and f16/bf16 <-> f32 conversion rounding to nearest even.
 * Both paths give the same bits: min/max pick the same operand, sums are
 * elementwise. Nothing here allocates or fails.
 */
#include "bcoll_int.h"

#include <immintrin.h>
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

static int have_avx2 = -1;

void bcoll_reduce3(void *dst, const void *a, const void *b, size_t n, enum bcoll_dtype dt,
		   enum bcoll_op op)
{
	size_t done = 0, esz = bcoll_dtype_size(dt);

	if (have_avx2 < 0)
		have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
	if (have_avx2 && (dt == BCOLL_F32 || dt == BCOLL_F64))
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

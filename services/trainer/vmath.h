/* vmath — exp and tanh for the element-wise CPU kernels, written so that
 * GCC vectorises them (libm's expf/tanhf are calls, one element at a time).
 *
 * vm_exp: Cody-Waite range reduction (x = n ln2 + r) and a degree-7 Taylor
 * polynomial of e^r on |r| <= ln2/2, scaled by 2^n through the exponent
 * bits: relative error under 1e-7 on [-87, 88]; inputs are clamped there
 * (e^-87 ~ 1.6e-38 stands in for 0, no denormals, no infinities), NaN stays
 * NaN. vm_tanh(y) = 1 - 2 / (e^2y + 1): absolute error under 2e-7.
 *
 * VM_CLONES compiles a kernel for AVX-512, AVX2 and plain x86-64, picked
 * once at load by the CPU; kernels loop with "#pragma omp simd".
 */
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define VM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VM_CLONES
#endif

static inline float vm_exp(float x)
{
	float z = x > -87.0f ? x : -87.0f, n, r, p, s;
	int32_t i;

	z = z < 88.0f ? z : 88.0f;
	/* n = round(z / ln2) by the 1.5 * 2^23 trick (round to nearest) */
	n = (z * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	r = z - n * 0.693145751953125f; /* ln2 in two parts: exact product */
	r = r - n * 1.42860682030941723212e-6f;
	p = 1.0f / 5040;
	p = p * r + 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	i = ((int32_t)n + 127) << 23;
	memcpy(&s, &i, sizeof(s));
	return x != x ? x : p * s;
}

static inline float vm_tanh(float y)
{
	float z = y > -9.0f ? y : -9.0f;

	z = z < 9.0f ? z : 9.0f;
	return y != y ? y : 1.0f - 2.0f / (vm_exp(2.0f * z) + 1.0f);
}

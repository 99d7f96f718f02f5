/* crc.c — CRC-32 (IEEE 802.3, reflected) for the RoCEv2 ICRC, without the
 * pre/post inversion (the caller seeds and inverts). Every 4 KiB packet is
 * checksummed once on transmit and once on receive, so this is the hottest
 * loop of the stack: on x86 with PCLMULQDQ, blocks of 64 bytes are folded
 * with carry-less multiplies (Intel, "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ", constants for 0x04c11db7 bit-reflected) at
 * several GB/s, four times that with 512-bit VPCLMULQDQ (AVX-512), optionally
 * copying the bytes in the same pass; elsewhere, and for heads and tails,
 * slicing-by-8 tables. The tables are built by a
 * constructor, before any thread can race on them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnet.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_CLMUL 1
#endif

static uint32_t crc_tab[8][256];
static int use_clmul, crc_cap; /* the path in use, the best the CPU has */

__attribute__((constructor)) static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = crc_tab[0][crc_tab[t - 1][i] & 0xff] ^ (crc_tab[t - 1][i] >> 8);
#ifdef HAVE_CLMUL
	__builtin_cpu_init();
	use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
	if (use_clmul && __builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("vpclmulqdq") && !getenv("BNET_CRC_NO_AVX512"))
		use_clmul = 2;
	crc_cap = use_clmul;
#endif
}

/* Slicing-by-8: eight table lookups per 8 bytes. */
static uint32_t crc_tables(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint32_t lo, hi;

		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		lo = __builtin_bswap32(lo);
		hi = __builtin_bswap32(hi);
#endif
		lo ^= crc;
		crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
		      crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^
		      crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
		      crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#ifdef HAVE_CLMUL
#define LD(o) _mm_loadu_si128((const __m128i *)(buf + (o)))
/* Stores a loaded block to dst too, when copying. */
#define CP(o, v) (dst ? _mm_storeu_si128((__m128i *)(dst + (o)), v) : (void)0)

/* Folds four 128-bit lanes (x1..x4, the state over the 64 bytes before buf)
 * on over len more bytes (a multiple of 16), then to one lane, then reduces
 * to 32 bits (Barrett). With dst, also copies the bytes there: the stores hide
 * under the multiplies' latency, so a checksummed copy costs about what the
 * checksum does. */
static inline __attribute__((always_inline, target("pclmul,sse4.1"))) uint32_t fold4(__m128i x1, __m128i x2,
								__m128i x3, __m128i x4,
								uint8_t *dst, const uint8_t *buf,
								size_t len)
{
	const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4); /* 512 bits */
	const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0); /* 128 bits */
	const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);
	const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
	const __m128i mask32 = _mm_setr_epi32(~0, 0, ~0, 0);
	__m128i x0, x2b, x5, x6, x7, x8;

	while (len >= 64) {
		__m128i y1 = LD(0x00), y2 = LD(0x10), y3 = LD(0x20), y4 = LD(0x30);

		x5 = _mm_clmulepi64_si128(x1, k1k2, 0x00);
		x6 = _mm_clmulepi64_si128(x2, k1k2, 0x00);
		x7 = _mm_clmulepi64_si128(x3, k1k2, 0x00);
		x8 = _mm_clmulepi64_si128(x4, k1k2, 0x00);
		x1 = _mm_clmulepi64_si128(x1, k1k2, 0x11);
		x2 = _mm_clmulepi64_si128(x2, k1k2, 0x11);
		x3 = _mm_clmulepi64_si128(x3, k1k2, 0x11);
		x4 = _mm_clmulepi64_si128(x4, k1k2, 0x11);
		CP(0x00, y1);
		CP(0x10, y2);
		CP(0x20, y3);
		CP(0x30, y4);
		x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y1);
		x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y2);
		x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y3);
		x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y4);
		buf += 64;
		dst = dst ? dst + 64 : NULL;
		len -= 64;
	}
	/* four lanes into one */
	x0 = k3k4;
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
	while (len >= 16) {
		x2b = LD(0);
		CP(0, x2b);
		x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
		x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
		x1 = _mm_xor_si128(_mm_xor_si128(x1, x2b), x5);
		buf += 16;
		dst = dst ? dst + 16 : NULL;
		len -= 16;
	}
	/* 128 bits to 64 */
	x2b = _mm_clmulepi64_si128(x1, x0, 0x10);
	x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2b);
	x2b = _mm_srli_si128(x1, 4);
	x1 = _mm_and_si128(x1, mask32);
	x1 = _mm_clmulepi64_si128(x1, k5k0, 0x00);
	x1 = _mm_xor_si128(x1, x2b);
	/* Barrett reduction to 32 bits */
	x2b = _mm_and_si128(x1, mask32);
	x2b = _mm_clmulepi64_si128(x2b, poly, 0x10);
	x2b = _mm_and_si128(x2b, mask32);
	x2b = _mm_clmulepi64_si128(x2b, poly, 0x00);
	x1 = _mm_xor_si128(x1, x2b);
	return (uint32_t)_mm_extract_epi32(x1, 1);
}

/* len >= 64, a multiple of 16: 128-bit carry-less multiplies. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc_clmul(uint32_t crc, uint8_t *dst,
								    const uint8_t *buf, size_t len)
{
	__m128i x1 = LD(0x00), x2 = LD(0x10), x3 = LD(0x20), x4 = LD(0x30);

	CP(0x00, x1);
	CP(0x10, x2);
	CP(0x20, x3);
	CP(0x30, x4);
	x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
	return fold4(x1, x2, x3, x4, dst ? dst + 64 : NULL, buf + 64, len - 64);
}

#define ZLD(o) _mm512_loadu_si512((const void *)(buf + (o)))
#define ZCP(o, v) (dst ? _mm512_storeu_si512((void *)(dst + (o)), v) : (void)0)

/* len >= 256, a multiple of 16: four 512-bit lanes (VPCLMULQDQ) folded by 256
 * bytes, then by 64 into one, whose four 128-bit parts go on through fold4. */
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.1"))) static uint32_t
crc_vclmul(uint32_t crc, uint8_t *dst, const uint8_t *buf, size_t len)
{
	const __m512i k2048 = _mm512_broadcast_i32x4(_mm_set_epi64x(0x01322d1430, 0x011542778a));
	const __m512i k512 = _mm512_broadcast_i32x4(_mm_set_epi64x(0x01c6e41596, 0x0154442bd4));
	__m512i z0 = ZLD(0x00), z1 = ZLD(0x40), z2 = ZLD(0x80), z3 = ZLD(0xc0);

	ZCP(0x00, z0);
	ZCP(0x40, z1);
	ZCP(0x80, z2);
	ZCP(0xc0, z3);
	z0 = _mm512_xor_si512(z0, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)crc)));
	buf += 256;
	dst = dst ? dst + 256 : NULL;
	len -= 256;
	while (len >= 256) {
		__m512i y0 = ZLD(0x00), y1 = ZLD(0x40), y2 = ZLD(0x80), y3 = ZLD(0xc0);

		ZCP(0x00, y0);
		ZCP(0x40, y1);
		ZCP(0x80, y2);
		ZCP(0xc0, y3);
		z0 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z0, k2048, 0x00),
					       _mm512_clmulepi64_epi128(z0, k2048, 0x11), y0, 0x96);
		z1 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z1, k2048, 0x00),
					       _mm512_clmulepi64_epi128(z1, k2048, 0x11), y1, 0x96);
		z2 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z2, k2048, 0x00),
					       _mm512_clmulepi64_epi128(z2, k2048, 0x11), y2, 0x96);
		z3 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z3, k2048, 0x00),
					       _mm512_clmulepi64_epi128(z3, k2048, 0x11), y3, 0x96);
		buf += 256;
		dst = dst ? dst + 256 : NULL;
		len -= 256;
	}
	z1 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z0, k512, 0x00),
				       _mm512_clmulepi64_epi128(z0, k512, 0x11), z1, 0x96);
	z2 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z1, k512, 0x00),
				       _mm512_clmulepi64_epi128(z1, k512, 0x11), z2, 0x96);
	z3 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z2, k512, 0x00),
				       _mm512_clmulepi64_epi128(z2, k512, 0x11), z3, 0x96);
	return fold4(_mm512_extracti32x4_epi32(z3, 0), _mm512_extracti32x4_epi32(z3, 1),
		     _mm512_extracti32x4_epi32(z3, 2), _mm512_extracti32x4_epi32(z3, 3), dst, buf,
		     len);
}

/* Checksums (and copies, with dst) the largest multiple of 16 of len with the
 * widest multiply the CPU has; returns how many bytes it took. */
static size_t crc_fast(uint32_t *crc, uint8_t *dst, const uint8_t *src, size_t len)
{
	size_t n = len & ~(size_t)15;

	if (use_clmul > 1 && n >= 256)
		*crc = crc_vclmul(*crc, dst, src, n);
	else if (use_clmul && n >= 64)
		*crc = crc_clmul(*crc, dst, src, n);
	else
		n = 0;
	return n;
}
#endif

uint32_t bnet_crc32_raw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

#ifdef HAVE_CLMUL
	size_t n = crc_fast(&crc, NULL, p, len);

	p += n;
	len -= n;
#endif
	return crc_tables(crc, p, len);
}

uint32_t bnet_crc32_copy(uint32_t crc, void *dst, const void *src, size_t len)
{
	const uint8_t *p = src;
	uint8_t *d = dst;

#ifdef HAVE_CLMUL
	size_t n = crc_fast(&crc, d, p, len);

	p += n;
	d += n;
	len -= n;
#endif
	if (len)
		memcpy(d, p, len);
	return crc_tables(crc, p, len);
}

int bnet_crc32_level(int max)
{
	int was = use_clmul;

	use_clmul = max < 0 ? 0 : max < crc_cap ? max : crc_cap;
	return was;
}

/* The portable path alone, so tests can hold the two against each other. */
uint32_t bnet_crc32_raw_tables(uint32_t crc, const void *buf, size_t len)
{
	return crc_tables(crc, buf, len);
}

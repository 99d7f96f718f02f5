/* test-fuzz.h — the pieces the trainer's fuzz tests share (test-fuzz.c,
 * test-fuzz-tok.c): a seeded xorshift generator, random JSON values, byte-
 * level mutation of JSON text, plain file writes. Header-only and static,
 * like tests/t.h, so each test stays one .c file. */
#pragma once
#include "../../tests/t.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static inline uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Plain write, no fsync: thousands of these per run. */
static inline void write_file(const char *path, const char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	T_CHECK(fd >= 0 && write(fd, buf, len) == (ssize_t)len, "cannot write %s", path);
	if (fd >= 0)
		close(fd);
}

/* Random values of random types for each key of a valid config. */
static inline json_t *random_value(void)
{
	static const double nums[] = {0, -1, 1, 2, 3, 7, 64, 1e9, 1e300, -1e300, 0.5, 65536,
				      2147483648.0, 1e-12};
	switch (next() % 6) {
	case 0:
		return json_integer((json_int_t)(next() % 5 == 0 ? next() : next() % 300));
	case 1:
		return json_real(nums[next() % (sizeof(nums) / sizeof(nums[0]))]);
	case 2:
		return json_string(next() % 2 ? "llama3" : "gelu_new");
	case 3:
		return json_null();
	case 4:
		return json_pack("{s:s, s:f}", "rope_type", "llama3", "factor",
				 nums[next() % (sizeof(nums) / sizeof(nums[0]))]);
	default:
		return json_boolean(next() % 2);
	}
}

/* One to three byte-level edits of JSON text (len bytes into out, as long):
 * bit flips, structural bytes, truncation, span copies, digit changes. */
static inline size_t mutate_text(const char *in, size_t len, char *out)
{
	static const char special[] = "\"[]{},:-9e0\\ \x01\xff\xc3u";
	size_t n = len;

	memcpy(out, in, len);
	for (int j = 0, k = (int)(next() % 3) + 1; j < k && n > 0; j++) {
		size_t at = next() % n, b = next() % n, l = next() % 16;

		switch (next() % 5) {
		case 0:
			out[at] ^= (char)(1u << (next() % 8));
			break;
		case 1:
			out[at] = special[next() % (sizeof(special) - 1)];
			break;
		case 2:
			n = at;
			break;
		case 3:
			if (at + l <= n && b + l <= n)
				memmove(out + at, out + b, l);
			break;
		default:
			if (out[at] >= '0' && out[at] <= '9')
				out[at] = (char)('0' + next() % 10);
			break;
		}
	}
	return n;
}

/* A random member name of object o, or NULL when it is empty. */
static inline const char *random_key(json_t *o)
{
	size_t n = json_object_size(o), i = 0, want;
	const char *k;
	json_t *v;

	if (!n)
		return NULL;
	want = next() % n;
	json_object_foreach(o, k, v)
		if (i++ == want)
			return k;
	return NULL;
}


/* util — small helpers every service uses: clocks, ids, files, hashes.
 * Functions return 0 or a negative errno and never log above debug. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

uint64_t util_now_us(void);  /* CLOCK_MONOTONIC */
uint64_t util_wall_us(void); /* CLOCK_REALTIME */
/* ISO-8601 UTC ("2026-11-27T20:03:00Z") of a wall time in microseconds. */
void util_iso8601(uint64_t wall_us, char buf[32]);

/* Creates dir and its parents (mode 0750). */
int util_mkdir_p(const char *path);
/* Reads a whole file of at most cap bytes; *out is NUL-terminated, caller frees. */
int util_read_file(const char *path, size_t cap, char **out, size_t *len);
/* Writes data to path atomically (temp file, fsync, rename, fsync dir). */
int util_write_file_atomic(const char *path, const void *data, size_t len);
/* Removes a directory tree (no symlink following). */
int util_rm_rf(const char *path);
/* Writes 2*n lowercase hex chars of n random bytes plus a NUL into out. */
int util_random_hex(char *out, size_t n);
/* SHA-256 of data as 64 hex chars plus a NUL. */
void util_sha256_hex(const void *data, size_t len, char out[65]);
/* Formats a sentence into err (for the caller to show) and returns r: the
 * one-line way parsers report what is wrong with user input. */
int util_fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Parses a whole string as a finite number in [lo, hi]; -EINVAL otherwise. */
int util_parse_double(const char *s, double lo, double hi, double *out);
/* Parses a decimal size with optional K/M/G suffix (binary). */
int util_parse_size(const char *s, uint64_t *out);
/* n bytes as "12.3 GiB", "4.5 MiB" or "6.7 KiB" in buf; returns buf. */
const char *util_fmt_bytes(uint64_t n, char *buf, size_t len);
/* True when s is 1..max chars of [A-Za-z0-9_.-] and not "." or "..". */
int util_valid_name(const char *s, size_t max);

/* fastingest — a strict, bounded parser for the common ingest body, so a
 * batch of meter records is not built into a jansson tree first.
 *
 * It takes only the plain case: {"source": S, "records": [{...}, ...]} with
 * no other envelope fields, strings without escapes or non-ASCII bytes, no
 * nulls, no duplicate keys, and every record valid and priceable. Anything
 * else (a bad record, an escape, malformed JSON) makes it step aside before
 * it has touched the database, and the request goes through jansson and
 * ledger_ingest, which give the exact errors and partial acceptance. So this
 * file never words an error for a record; it only has to be sure that what it
 * accepts is what ledger_parse_entry would have accepted, value for value.
 * The record array is allocated once, at the first request, for
 * LEDGER_MAX_RECORDS entries.
 */
#include "ledger.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON number token is at most this long on the fast path. */
#define FAST_MAX_NUM 40

struct fast_parser {
	const char *p, *end;
};

static struct ledger_entry *fast_recs;
static char *fast_reply;
#define FAST_REPLY_SIZE ((size_t)LEDGER_MAX_RECORDS * 22 + 64)

static void skip_ws(struct fast_parser *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\n' || *f->p == '\r' || *f->p == '\t'))
		f->p++;
}

/* Consumes c after optional whitespace; 0 when it is not there. */
static int eat(struct fast_parser *f, char c)
{
	skip_ws(f);
	if (f->p < f->end && *f->p == c) {
		f->p++;
		return 1;
	}
	return 0;
}

/* A string of printable ASCII without escapes; s and n point into the body. */
static int get_string(struct fast_parser *f, const char **s, size_t *n)
{
	const char *q;

	if (!eat(f, '"'))
		return -1;
	for (q = f->p; q < f->end && *q != '"'; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f || *q == '\\')
			return -1;
	if (q >= f->end)
		return -1;
	*s = f->p;
	*n = (size_t)(q - f->p);
	f->p = q + 1;
	return 0;
}

/* Copies a string value of 1..max bytes into buf (max + 1 bytes). */
static int get_str_field(struct fast_parser *f, char *buf, size_t max)
{
	const char *s;
	size_t n;

	if (get_string(f, &s, &n) < 0 || n == 0 || n > max)
		return -1;
	memcpy(buf, s, n);
	buf[n] = 0;
	return 0;
}

/* The extent of a JSON number token per RFC 8259; *is_int when it has no
 * fraction or exponent. */
static int number_token(struct fast_parser *f, const char **s, size_t *n, int *is_int)
{
	const char *q;

	skip_ws(f);
	q = f->p;
	*is_int = 1;
	if (q < f->end && *q == '-')
		q++;
	if (q >= f->end)
		return -1;
	if (*q == '0')
		q++;
	else if (*q >= '1' && *q <= '9')
		while (q < f->end && *q >= '0' && *q <= '9')
			q++;
	else
		return -1;
	if (q < f->end && *q == '.') {
		*is_int = 0;
		if (++q >= f->end || *q < '0' || *q > '9')
			return -1;
		while (q < f->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < f->end && (*q == 'e' || *q == 'E')) {
		*is_int = 0;
		if (++q < f->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= f->end || *q < '0' || *q > '9')
			return -1;
		while (q < f->end && *q >= '0' && *q <= '9')
			q++;
	}
	*s = f->p;
	*n = (size_t)(q - f->p);
	if (*n > FAST_MAX_NUM)
		return -1;
	f->p = q;
	return 0;
}

/* A non-negative JSON integer of at most 18 digits in min..max. */
static int get_int_field(struct fast_parser *f, int64_t min, int64_t max, int64_t *out)
{
	const char *s;
	size_t n;
	int is_int;
	int64_t v = 0;

	if (number_token(f, &s, &n, &is_int) < 0 || !is_int || s[0] == '-' || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Any JSON number in min..max, as jansson reads it (strtod for reals). */
static int get_num_field(struct fast_parser *f, double min, double max, double *out)
{
	char tmp[FAST_MAX_NUM + 1];
	const char *s;
	size_t n;
	int is_int;
	double x;

	if (number_token(f, &s, &n, &is_int) < 0)
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	if (is_int) {
		if (n > 18 || (tmp[0] == '-' && n > 19))
			return -1;
		x = (double)strtoll(tmp, NULL, 10);
	} else {
		x = strtod(tmp, NULL);
	}
	if (!isfinite(x) || x < min || x > max)
		return -1;
	*out = x;
	return 0;
}

enum {
	K_SEQ, K_JOB, K_TENANT, K_USER, K_RANK, K_KIND, K_QUANTITY, K_UNIT, K_START, K_END,
	K_CLASS, K_ENERGY, K_N
};

static const char *const fast_keys[K_N] = {
	"seq", "job", "tenant", "user", "rank", "kind", "quantity", "unit", "start_us", "end_us",
	"node_class", "energy_kwh",
};

static int key_index(const char *s, size_t n)
{
	for (int i = 0; i < K_N; i++)
		if (strlen(fast_keys[i]) == n && !memcmp(fast_keys[i], s, n))
			return i;
	return -1;
}

/* One record into e, with ledger_parse_entry's rules; -1: not the fast case. */
static int parse_record(struct fast_parser *f, struct ledger_entry *e)
{
	unsigned seen = 0;
	const char *ks;
	size_t kn;
	int k, r;

	memset(e, 0, offsetof(struct ledger_entry, prev_hash));
	e->energy_kwh = 0;
	if (!eat(f, '{'))
		return -1;
	if (eat(f, '}'))
		return -1; /* missing fields */
	do {
		if (get_string(f, &ks, &kn) < 0 || !eat(f, ':'))
			return -1;
		k = key_index(ks, kn);
		if (k < 0 || (seen & (1u << k)))
			return -1;
		seen |= 1u << k;
		switch (k) {
		case K_SEQ: r = get_int_field(f, 1, INT64_MAX, &e->seq); break;
		case K_JOB: r = get_str_field(f, e->job, LEDGER_MAX_STR); break;
		case K_TENANT: r = get_str_field(f, e->tenant, LEDGER_MAX_STR); break;
		case K_USER: r = get_str_field(f, e->user, LEDGER_MAX_STR); break;
		case K_RANK: r = get_int_field(f, 0, LEDGER_MAX_RANK, &e->rank); break;
		case K_KIND: r = get_str_field(f, e->kind, LEDGER_MAX_STR); break;
		case K_QUANTITY: r = get_num_field(f, 0, LEDGER_MAX_QUANTITY, &e->quantity); break;
		case K_UNIT: r = get_str_field(f, e->unit, LEDGER_MAX_STR); break;
		case K_START: r = get_int_field(f, 0, INT64_MAX, &e->start_us); break;
		case K_END: r = get_int_field(f, 0, INT64_MAX, &e->end_us); break;
		case K_CLASS: r = get_str_field(f, e->node_class, LEDGER_MAX_CLASS_NAME); break;
		default: r = get_num_field(f, 0, LEDGER_MAX_KWH, &e->energy_kwh); break;
		}
		if (r < 0)
			return -1;
	} while (eat(f, ','));
	if (!eat(f, '}'))
		return -1;
	/* unit, node_class and energy_kwh are optional */
	if ((seen | (1u << K_UNIT) | (1u << K_CLASS) | (1u << K_ENERGY)) != (1u << K_N) - 1)
		return -1;
	if (strcmp(e->kind, "compute") && strcmp(e->kind, "comm_wait") && strcmp(e->kind, "idle"))
		return -1;
	if (!(seen & (1u << K_UNIT)))
		strcpy(e->unit, "rank_s");
	else if (strcmp(e->unit, "rank_s"))
		return -1;
	if (!(seen & (1u << K_CLASS)))
		strcpy(e->node_class, "cpu");
	if (e->end_us < e->start_us)
		return -1;
	return 0;
}

/* The envelope; fills fast_recs and returns how many, -1: not the fast case. */
static int parse_body(struct fast_parser *f, char *source)
{
	int have_source = 0, have_recs = 0, n = 0;
	const char *ks;
	size_t kn;

	if (!eat(f, '{'))
		return -1;
	do {
		if (get_string(f, &ks, &kn) < 0 || !eat(f, ':'))
			return -1;
		if (kn == 6 && !memcmp(ks, "source", 6) && !have_source) {
			if (get_str_field(f, source, LEDGER_MAX_STR) < 0)
				return -1;
			have_source = 1;
		} else if (kn == 7 && !memcmp(ks, "records", 7) && !have_recs) {
			if (!eat(f, '['))
				return -1;
			if (!eat(f, ']')) {
				do {
					if (n == LEDGER_MAX_RECORDS || parse_record(f, &fast_recs[n]) < 0)
						return -1;
					n++;
				} while (eat(f, ','));
				if (!eat(f, ']'))
					return -1;
			}
			have_recs = 1;
		} else {
			return -1;
		}
	} while (eat(f, ','));
	if (!eat(f, '}') || !have_source || !have_recs)
		return -1;
	skip_ws(f);
	return f->p == f->end ? n : -1;
}

/* Writes [sep] and the decimal digits of v at p; returns the new end. */
static char *put_u64(char *p, char sep, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);

	if (sep)
		*p++ = sep;
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(p, tmp + i, sizeof(tmp) - i);
	return p + sizeof(tmp) - i;
}

int ledger_fast_ingest(struct ledger *l, const char *body, size_t len, const char **reply,
		       size_t *reply_len, char *err, size_t errlen)
{
	struct fast_parser f = {body, body + len};
	char source[LEDGER_MAX_STR + 1];
	char *p;
	int n, dup, r;

	if (!fast_recs) {
		fast_recs = malloc(sizeof(*fast_recs) * LEDGER_MAX_RECORDS);
		fast_reply = malloc(FAST_REPLY_SIZE);
		if (!fast_recs || !fast_reply) {
			free(fast_recs);
			free(fast_reply);
			fast_recs = NULL;
			fast_reply = NULL;
			return 1;
		}
	}
	n = parse_body(&f, source);
	if (n < 0)
		return 1;
	for (int i = 0; i < n; i++) {
		strcpy(fast_recs[i].source, source);
		if (ledger_price(l, &fast_recs[i]) < 0)
			return 1; /* the slow path words the rejection */
	}
	r = ledger_batch_begin(l);
	if (r < 0)
		return r;
	p = fast_reply;
	p += sprintf(p, "{\"acked\":[");
	for (int i = 0; i < n; i++) {
		r = ledger_append(l, &fast_recs[i], &dup);
		if (r < 0) {
			snprintf(err, errlen, "cannot store record %d (seq %lld): %s", i,
				 (long long)fast_recs[i].seq, strerror(-r));
			ledger_batch_rollback(l);
			return r;
		}
		p = put_u64(p, i ? ',' : 0, (uint64_t)fast_recs[i].seq);
	}
	p += sprintf(p, "],\"rejected\":[]}");
	r = ledger_batch_commit(l);
	if (r < 0) {
		snprintf(err, errlen, "cannot commit %d records: %s", n, strerror(-r));
		return r;
	}
	*reply = fast_reply;
	*reply_len = (size_t)(p - fast_reply);
	return 0;
}

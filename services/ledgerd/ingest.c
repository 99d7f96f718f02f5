/* ingest — validates meter records and estimates and appends a request's
 * batch in one transaction.
 *
 * A bad record is rejected alone, with a sentence naming the field and the
 * value; the rest of the batch still goes in. Nothing is acknowledged before
 * the transaction commits (synchronous=FULL), so an acked record survives a
 * crash, and a resent one is acked again without a second entry. This file
 * never decides a price beyond calling ledger_price at the current rate.
 */
#include "ledger.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int __attribute__((format(printf, 3, 4))) fail(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Checks a user string: 1..max bytes, no control characters. */
static int check_str(const char *key, const char *s, size_t max, char *why, size_t n)
{
	size_t len = strlen(s);

	if (len == 0)
		return fail(why, n, "field '%s' is empty", key);
	if (len > max)
		return fail(why, n, "field '%s' is too long (%zu characters > limit %zu)", key, len,
			    max);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return fail(why, n, "field '%s' contains a control character (0x%02x)", key,
				    *p);
	return 0;
}

static int get_str(json_t *rec, const char *key, char *buf, size_t max, int required, char *why,
		   size_t n)
{
	json_t *v = json_object_get(rec, key);
	int r;

	if (!v || json_is_null(v)) {
		if (required)
			return fail(why, n, "missing field '%s'", key);
		return 1;
	}
	if (!json_is_string(v))
		return fail(why, n, "field '%s' must be a string", key);
	r = check_str(key, json_string_value(v), max, why, n);
	if (r < 0)
		return r;
	memcpy(buf, json_string_value(v), strlen(json_string_value(v)) + 1);
	return 0;
}

static int get_int(json_t *rec, const char *key, int64_t min, int64_t max, int64_t *out,
		   char *why, size_t n)
{
	json_t *v = json_object_get(rec, key);
	json_int_t x;

	if (!v || json_is_null(v))
		return fail(why, n, "missing field '%s'", key);
	if (!json_is_integer(v))
		return fail(why, n, "field '%s' must be an integer", key);
	x = json_integer_value(v);
	if (x < min || x > max)
		return fail(why, n, "field '%s' is out of range (%lld not in %lld..%lld)", key,
			    (long long)x, (long long)min, (long long)max);
	*out = x;
	return 0;
}

static int get_num(json_t *rec, const char *key, double min, double max, double *out, char *why,
		   size_t n)
{
	json_t *v = json_object_get(rec, key);
	double x;

	if (!v || json_is_null(v))
		return fail(why, n, "missing field '%s'", key);
	if (!json_is_number(v))
		return fail(why, n, "field '%s' must be a number", key);
	x = json_number_value(v);
	if (!isfinite(x) || x < min || x > max)
		return fail(why, n, "field '%s' is out of range (%g not in %g..%g)", key, x, min,
			    max);
	*out = x;
	return 0;
}

static int is_kind(const char *k)
{
	return !strcmp(k, "compute") || !strcmp(k, "comm_wait") || !strcmp(k, "idle");
}

static const char *const entry_keys[] = {
	"seq", "job", "tenant", "user", "rank", "kind", "quantity", "unit", "start_us", "end_us",
	"node_class", "energy_kwh",
};

/* An unknown field is an error, not ignored: it is most likely a typo of a
 * field that changes the price. */
static int check_keys(json_t *rec, char *why, size_t n)
{
	const char *key;
	json_t *v;

	json_object_foreach(rec, key, v) {
		size_t i;

		for (i = 0; i < sizeof(entry_keys) / sizeof(entry_keys[0]); i++)
			if (!strcmp(key, entry_keys[i]))
				break;
		if (i == sizeof(entry_keys) / sizeof(entry_keys[0]))
			return fail(why, n, "unknown field '%.64s'", key);
	}
	return 0;
}

int ledger_parse_entry(json_t *rec, struct ledger_entry *e, char *why, size_t n)
{
	int r;

	memset(e, 0, sizeof(*e));
	if (!json_is_object(rec))
		return fail(why, n, "record must be a JSON object");
	r = check_keys(rec, why, n);
	if (r < 0)
		return r;
	if ((r = get_int(rec, "seq", 1, INT64_MAX, &e->seq, why, n)) < 0 ||
	    (r = get_str(rec, "job", e->job, LEDGER_MAX_STR, 1, why, n)) < 0 ||
	    (r = get_str(rec, "tenant", e->tenant, LEDGER_MAX_STR, 1, why, n)) < 0 ||
	    (r = get_str(rec, "user", e->user, LEDGER_MAX_STR, 1, why, n)) < 0 ||
	    (r = get_int(rec, "rank", 0, LEDGER_MAX_RANK, &e->rank, why, n)) < 0 ||
	    (r = get_str(rec, "kind", e->kind, LEDGER_MAX_STR, 1, why, n)) < 0)
		return r;
	if (!is_kind(e->kind))
		return fail(why, n, "field 'kind' is '%s'; expected compute, comm_wait or idle",
			    e->kind);
	r = get_num(rec, "quantity", 0, LEDGER_MAX_QUANTITY, &e->quantity, why, n);
	if (r < 0)
		return r;
	r = get_str(rec, "unit", e->unit, LEDGER_MAX_STR, 0, why, n);
	if (r < 0)
		return r;
	if (r == 1)
		strcpy(e->unit, "rank_s");
	else if (strcmp(e->unit, "rank_s"))
		return fail(why, n, "field 'unit' is '%s'; only rank_s is priced", e->unit);
	if ((r = get_int(rec, "start_us", 0, INT64_MAX, &e->start_us, why, n)) < 0 ||
	    (r = get_int(rec, "end_us", 0, INT64_MAX, &e->end_us, why, n)) < 0)
		return r;
	if (e->end_us < e->start_us)
		return fail(why, n, "end_us %lld is before start_us %lld", (long long)e->end_us,
			    (long long)e->start_us);
	r = get_str(rec, "node_class", e->node_class, LEDGER_MAX_CLASS_NAME, 0, why, n);
	if (r < 0)
		return r;
	if (r == 1)
		strcpy(e->node_class, "cpu");
	if (json_object_get(rec, "energy_kwh")) {
		r = get_num(rec, "energy_kwh", 0, LEDGER_MAX_KWH, &e->energy_kwh, why, n);
		if (r < 0)
			return r;
	}
	return 0;
}

int ledger_parse_estimate(json_t *rec, struct ledger_estimate *e, char *why, size_t n)
{
	double amount;
	int r;

	memset(e, 0, sizeof(*e));
	if (!json_is_object(rec))
		return fail(why, n, "record must be a JSON object");
	if ((r = get_int(rec, "seq", 1, INT64_MAX, &e->seq, why, n)) < 0 ||
	    (r = get_str(rec, "job", e->job, LEDGER_MAX_STR, 1, why, n)) < 0 ||
	    (r = get_str(rec, "tenant", e->tenant, LEDGER_MAX_STR, 1, why, n)) < 0 ||
	    (r = get_str(rec, "user", e->user, LEDGER_MAX_STR, 1, why, n)) < 0 ||
	    (r = get_int(rec, "ranks", 1, LEDGER_MAX_RANK, &e->ranks, why, n)) < 0 ||
	    (r = get_num(rec, "seconds", 0, 1e9, &e->seconds, why, n)) < 0)
		return r;
	/* The exact integer wins when the sender gives both. */
	if (json_object_get(rec, "amount_micro")) {
		r = get_int(rec, "amount_micro", 0, (int64_t)1e15, &e->amount_micro, why, n);
		if (r < 0)
			return r;
	} else {
		r = get_num(rec, "amount", 0, 1e9, &amount, why, n);
		if (r < 0)
			return r;
		e->amount_micro = llround(amount * 1e6);
	}
	r = get_str(rec, "explain", e->explain, LEDGER_MAX_EXPLAIN, 0, why, n);
	return r < 0 ? r : 0;
}

/* Adds {"seq", "error"} (plus "index" when there is no usable seq). */
static int add_rejected(json_t *rejected, json_t *rec, size_t index, const char *why)
{
	json_t *seq = json_is_object(rec) ? json_object_get(rec, "seq") : NULL;
	json_t *o;

	if (json_is_integer(seq) && json_integer_value(seq) > 0)
		o = json_pack("{s:I, s:s}", "seq", (json_int_t)json_integer_value(seq), "error",
			      why); /* a copy: the request is freed before the reply */
	else
		o = json_pack("{s:n, s:I, s:s}", "seq", "index", (json_int_t)index, "error", why);
	return o && !json_array_append_new(rejected, o) ? 0 : -ENOMEM;
}

/* Parses and appends one record; 1 when it was rejected (why set). */
static int ingest_one(struct ledger *l, json_t *rec, const char *source, int estimates,
		      int64_t *seq, char *why, size_t n)
{
	union {
		struct ledger_entry en;
		struct ledger_estimate es;
	} u;
	int dup, r;

	if (estimates) {
		if (ledger_parse_estimate(rec, &u.es, why, n) < 0)
			return 1;
		strcpy(u.es.source, source);
		*seq = u.es.seq;
		return ledger_append_estimate(l, &u.es, &dup);
	}
	if (ledger_parse_entry(rec, &u.en, why, n) < 0)
		return 1;
	strcpy(u.en.source, source);
	*seq = u.en.seq;
	if (ledger_price(l, &u.en) < 0) {
		snprintf(why, n, "node class '%s' has no rate in rate version %lld",
			 u.en.node_class, (long long)l->rate.version);
		return 1;
	}
	r = ledger_append(l, &u.en, &dup);
	return r;
}

int ledger_ingest(struct ledger *l, json_t *req, int estimates, json_t **reply, char *err,
		  size_t errlen)
{
	json_t *src = json_object_get(req, "source");
	json_t *recs = json_object_get(req, "records");
	json_t *acked, *rejected, *rec;
	char why[320];
	size_t i;
	int r;

	if (!json_is_string(src))
		return fail(err, errlen, "field 'source' is missing or not a string");
	r = check_str("source", json_string_value(src), LEDGER_MAX_STR, err, errlen);
	if (r < 0)
		return r;
	if (!json_is_array(recs))
		return fail(err, errlen, "field 'records' is missing or not an array");
	if (json_array_size(recs) > LEDGER_MAX_RECORDS) {
		snprintf(err, errlen, "too many records in one request (%zu > limit %d)",
			 json_array_size(recs), LEDGER_MAX_RECORDS);
		return -E2BIG;
	}
	acked = json_array();
	rejected = json_array();
	if (!acked || !rejected) {
		r = -ENOMEM;
		goto out_decref;
	}
	r = ledger_batch_begin(l);
	if (r < 0)
		goto out_decref;
	json_array_foreach(recs, i, rec) {
		int64_t seq = 0;

		r = ingest_one(l, rec, json_string_value(src), estimates, &seq, why, sizeof(why));
		if (r == 1) {
			l->n_rejected++;
			r = add_rejected(rejected, rec, i, why);
		}
		else if (r == 0)
			r = json_array_append_new(acked, json_integer(seq)) ? -ENOMEM : 0;
		if (r < 0) {
			snprintf(err, errlen, "cannot store record %zu (seq %lld): %s", i,
				 (long long)seq, strerror(-r));
			ledger_batch_rollback(l);
			goto out_decref;
		}
	}
	r = ledger_batch_commit(l);
	if (r < 0) {
		snprintf(err, errlen, "cannot commit %zu records: %s", json_array_size(recs),
			 strerror(-r));
		goto out_decref;
	}
	*reply = json_pack("{s:o, s:o}", "acked", acked, "rejected", rejected);
	return *reply ? 0 : -ENOMEM;
out_decref:
	json_decref(acked);
	json_decref(rejected);
	return r;
}

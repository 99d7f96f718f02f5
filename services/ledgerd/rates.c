/* rates — versioned prices: per rank-hour by node class and per kWh.
 *
 * A version is never edited (triggers refuse it): an operator's change adds
 * version N+1, effective from now, and applies only to entries ingested from
 * then on; every entry keeps the rate_version it was priced at. This file
 * owns the rates and rate_classes tables and nothing else.
 */
#include "ledger.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static double dollars(int64_t micro)
{
	return (double)micro / 1e6;
}

/* Reads the classes of version v into r. */
static int load_classes(sqlite3 *db, int64_t v, struct ledger_rate *r)
{
	sqlite3_stmt *st;
	int ret, rc;

	ret = db_prepare(db,
			 "SELECT node_class, rank_hour_micro FROM rate_classes WHERE version = ?"
			 " ORDER BY node_class LIMIT ?",
			 &st);
	if (ret < 0)
		return ret;
	sqlite3_bind_int64(st, 1, v);
	sqlite3_bind_int(st, 2, LEDGER_MAX_CLASSES);
	r->n_classes = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct ledger_class_rate *c = &r->classes[r->n_classes];

		if (ledger_col_text(st, 0, c->name, sizeof(c->name)) < 0)
			continue;
		c->rank_hour_micro = sqlite3_column_int64(st, 1);
		if (!strcmp(c->name, "cpu"))
			r->rank_hour_micro = c->rank_hour_micro;
		r->n_classes++;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_errno(rc);
}

int ledger_load_rate(struct ledger *l)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT version, rank_hour_micro, effective_us, kwh_micro FROM rates"
		       " ORDER BY version DESC LIMIT 1",
		       &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	memset(&l->rate, 0, sizeof(l->rate));
	if (rc == SQLITE_ROW) {
		l->rate.version = sqlite3_column_int64(st, 0);
		l->rate.rank_hour_micro = sqlite3_column_int64(st, 1);
		l->rate.effective_us = sqlite3_column_int64(st, 2);
		l->rate.kwh_micro = sqlite3_column_int64(st, 3);
	} else if (rc != SQLITE_DONE) {
		r = db_errno(rc);
	}
	sqlite3_finalize(st);
	if (r == 0 && l->rate.version > 0)
		r = load_classes(l->db, l->rate.version, &l->rate);
	return r;
}

static const struct ledger_class_rate *find_class(const struct ledger_rate *r, const char *name)
{
	for (int i = 0; i < r->n_classes; i++)
		if (!strcmp(r->classes[i].name, name))
			return &r->classes[i];
	return NULL;
}

int ledger_add_rate(struct ledger *l, struct ledger_rate *nr)
{
	const struct ledger_class_rate *cpu = find_class(nr, "cpu");
	sqlite3_stmt *st = NULL, *sc = NULL;
	int r, rc;

	nr->version = l->rate.version + 1;
	nr->effective_us = (int64_t)util_wall_us();
	nr->rank_hour_micro = cpu ? cpu->rank_hour_micro : 0;
	r = db_begin(l->db);
	if (r < 0)
		return r;
	r = db_prepare(l->db,
		       "INSERT INTO rates (version, rank_hour_micro, rank_second_micro, currency,"
		       " effective_us, kwh_micro) VALUES (?, ?, ?, 'USD', ?, ?)",
		       &st);
	if (r < 0)
		goto out_rollback;
	sqlite3_bind_int64(st, 1, nr->version);
	sqlite3_bind_int64(st, 2, nr->rank_hour_micro);
	sqlite3_bind_double(st, 3, (double)nr->rank_hour_micro / 3600.0);
	sqlite3_bind_int64(st, 4, nr->effective_us);
	sqlite3_bind_int64(st, 5, nr->kwh_micro);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = db_errno(rc);
		goto out_rollback;
	}
	r = db_prepare(l->db,
		       "INSERT INTO rate_classes (version, node_class, rank_hour_micro)"
		       " VALUES (?, ?, ?)",
		       &sc);
	if (r < 0)
		goto out_rollback;
	for (int i = 0; i < nr->n_classes; i++) {
		sqlite3_reset(sc);
		sqlite3_bind_int64(sc, 1, nr->version);
		sqlite3_bind_text(sc, 2, nr->classes[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(sc, 3, nr->classes[i].rank_hour_micro);
		rc = sqlite3_step(sc);
		if (rc != SQLITE_DONE) {
			r = db_errno(rc);
			goto out_rollback;
		}
	}
	r = db_commit(l->db);
	if (r < 0)
		goto out_finalize;
	l->rate = *nr;
	goto out_finalize;
out_rollback:
	db_rollback(l->db);
out_finalize:
	sqlite3_finalize(st);
	sqlite3_finalize(sc);
	return r;
}

int ledger_set_rate(struct ledger *l, int64_t rank_hour_micro)
{
	struct ledger_rate nr = l->rate;
	struct ledger_class_rate *cpu = (struct ledger_class_rate *)find_class(&nr, "cpu");

	if (rank_hour_micro < 0)
		return -EINVAL;
	if (l->rate.version > 0 && cpu && cpu->rank_hour_micro == rank_hour_micro)
		return 0;
	if (!cpu) {
		if (nr.n_classes >= LEDGER_MAX_CLASSES)
			return -E2BIG;
		cpu = &nr.classes[nr.n_classes++];
		strcpy(cpu->name, "cpu");
	}
	cpu->rank_hour_micro = rank_hour_micro;
	return ledger_add_rate(l, &nr);
}

static int __attribute__((format(printf, 3, 4))) fail(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A price in dollars (or exact micro-dollars) in 0..max dollars. */
static int parse_price(json_t *v, int micro, double max, const char *what, int64_t *out,
		       char *why, size_t n)
{
	double x;

	if (micro) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > (json_int_t)(max * 1e6))
			return fail(why, n, "%s must be an integer in 0..%.0f micro-dollars", what,
				    max * 1e6);
		*out = json_integer_value(v);
		return 0;
	}
	if (!json_is_number(v))
		return fail(why, n, "%s must be a number of dollars", what);
	x = json_number_value(v);
	if (!isfinite(x) || x < 0 || x > max)
		return fail(why, n, "%s is out of range (%g not in 0..%g dollars)", what, x, max);
	*out = llround(x * 1e6);
	return 0;
}

/* {"cpu": 0.72, "h100": 3.1}: replaces or adds these classes in out. */
static int parse_classes(json_t *obj, int micro, struct ledger_rate *out, char *why, size_t n)
{
	const char *name;
	json_t *v;
	char what[96];
	int r;

	if (!json_is_object(obj))
		return fail(why, n, "field 'rank_hour%s' must be an object of node class -> price",
			    micro ? "_micro" : "");
	json_object_foreach(obj, name, v) {
		struct ledger_class_rate *c = (struct ledger_class_rate *)find_class(out, name);

		/* the names admission and the node agents use (bundle_valid_class) */
		if (!name[0] || strlen(name) > LEDGER_MAX_CLASS_NAME ||
		    strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != strlen(name))
			return fail(why, n, "node class '%.40s' is not 1..%d characters of "
				    "[a-z0-9_.-]", name, LEDGER_MAX_CLASS_NAME);
		snprintf(what, sizeof(what), "the rank-hour price of class '%s'", name);
		if (!c) {
			if (out->n_classes >= LEDGER_MAX_CLASSES)
				return fail(why, n, "too many node classes (limit %d)",
					    LEDGER_MAX_CLASSES);
			c = &out->classes[out->n_classes++];
			strcpy(c->name, name);
		}
		r = parse_price(v, micro, LEDGER_MAX_RANK_HOUR, what, &c->rank_hour_micro, why, n);
		if (r < 0)
			return r;
		/* admission offers no class at 0 (and would price work as free) */
		if (c->rank_hour_micro == 0)
			return fail(why, n, "%s must be above 0", what);
	}
	return 0;
}

int ledger_parse_rate(const struct ledger *l, json_t *req, struct ledger_rate *out, char *why,
		      size_t n)
{
	struct ledger_rate nr = l->rate;
	const char *key;
	json_t *v;
	int r, any = 0;

	json_object_foreach(req, key, v) {
		if (!strcmp(key, "rank_hour") || !strcmp(key, "rank_hour_micro"))
			r = parse_classes(v, !strcmp(key, "rank_hour_micro"), &nr, why, n);
		else if (!strcmp(key, "kwh") || !strcmp(key, "kwh_micro"))
			r = parse_price(v, !strcmp(key, "kwh_micro"), LEDGER_MAX_KWH_PRICE,
					"field 'kwh'", &nr.kwh_micro, why, n);
		else
			r = fail(why, n, "unknown field '%.64s' (expected rank_hour, "
				 "rank_hour_micro, kwh, kwh_micro)", key);
		if (r < 0)
			return r;
		any = 1;
	}
	if (!any)
		return fail(why, n, "no rates given (expected rank_hour {class: USD} and/or kwh)");
	if (!find_class(&nr, "cpu"))
		return fail(why, n, "the default node class 'cpu' needs a rank-hour price");
	*out = nr;
	return 0;
}

int ledger_price(const struct ledger *l, struct ledger_entry *e)
{
	const struct ledger_class_rate *c = find_class(&l->rate, e->node_class[0] ? e->node_class
										 : "cpu");

	if (!c)
		return -ENOENT;
	e->rate_version = l->rate.version;
	/* One rounding over the exact products: a bill is the sum of these. */
	e->amount_micro = llround(e->quantity * ((double)c->rank_hour_micro / 3600.0) +
				  e->energy_kwh * (double)l->rate.kwh_micro);
	return 0;
}

/* {"cpu": {"rank_hour", "rank_hour_micro", "rank_second"}, ...} */
static json_t *classes_json(const struct ledger_rate *r)
{
	json_t *o = json_object();

	for (int i = 0; i < r->n_classes; i++)
		json_object_set_new(o, r->classes[i].name,
				    json_pack("{s:f, s:I, s:f}", "rank_hour",
					      dollars(r->classes[i].rank_hour_micro),
					      "rank_hour_micro",
					      (json_int_t)r->classes[i].rank_hour_micro,
					      "rank_second",
					      dollars(r->classes[i].rank_hour_micro) / 3600.0));
	return o;
}

static json_t *rate_json(const struct ledger_rate *r)
{
	return json_pack("{s:I, s:f, s:f, s:I, s:f, s:I, s:s, s:I, s:o}", "version",
			 (json_int_t)r->version, "rank_second",
			 dollars(r->rank_hour_micro) / 3600.0, "rank_hour",
			 dollars(r->rank_hour_micro), "rank_hour_micro",
			 (json_int_t)r->rank_hour_micro, "kwh", dollars(r->kwh_micro), "kwh_micro",
			 (json_int_t)r->kwh_micro, "currency", "USD", "effective_us",
			 (json_int_t)r->effective_us, "classes", classes_json(r));
}

/* The current version plus "history": every version, newest first (capped). */
json_t *ledger_rates_json(struct ledger *l)
{
	json_t *cur = rate_json(&l->rate), *hist = json_array();
	sqlite3_stmt *st;
	int rc;

	if (db_prepare(l->db,
		       "SELECT version, effective_us, kwh_micro FROM rates ORDER BY version DESC"
		       " LIMIT ?",
		       &st) == 0) {
		sqlite3_bind_int(st, 1, LEDGER_MAX_HISTORY);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			struct ledger_rate r = {
				.version = sqlite3_column_int64(st, 0),
				.effective_us = sqlite3_column_int64(st, 1),
				.kwh_micro = sqlite3_column_int64(st, 2),
			};

			if (load_classes(l->db, r.version, &r) < 0)
				break;
			json_array_append_new(hist, rate_json(&r));
		}
		sqlite3_finalize(st);
	}
	json_object_set_new(cur, "history", hist);
	return cur;
}

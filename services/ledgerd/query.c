/* query — read side of the ledger: a job's bill, entry listings (JSON and
 * CSV) with keyset pagination and filters (job, tenant, user, time).
 *
 * Sums are SQLite integer sums of amount_micro, so a bill is exactly the sum
 * of its entries. Every listing is capped at LEDGER_MAX_ROWS rows. This file
 * only reads.
 */
#include "ledger.h"
#include "db.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kinds[] = {"compute", "comm_wait", "idle"};

static double dollars(int64_t micro)
{
	return (double)micro / 1e6;
}

/* Sets o[key] to a copy of text column i. */
static void set_col_str(json_t *o, const char *key, sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	json_object_set_new(o, key, json_string(s ? s : ""));
}

/* The latest estimate of job as {"amount", ...}, or json null; also fills
 * tenant/user from it when they are still empty. */
static int bill_predicted(struct ledger *l, const char *job, json_t **out, int64_t *micro,
			  json_t *bill)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT amount_micro, seconds, ranks, tenant, user FROM estimates"
		       " WHERE job = ? ORDER BY id DESC LIMIT 1",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*micro = sqlite3_column_int64(st, 0);
		*out = json_pack("{s:f, s:I, s:f, s:I}", "amount", dollars(*micro), "amount_micro",
				 (json_int_t)*micro, "seconds", sqlite3_column_double(st, 1),
				 "ranks", (json_int_t)sqlite3_column_int64(st, 2));
		if (!json_object_get(bill, "tenant")) {
			set_col_str(bill, "tenant", st, 3);
			set_col_str(bill, "user", st, 4);
		}
	} else if (rc == SQLITE_DONE) {
		*micro = -1;
		*out = json_null();
	} else {
		r = db_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* Metered totals, first/last times and tenant/user of the job's entries. */
static int bill_metered(struct ledger *l, const char *job, json_t *bill, int64_t *micro,
			int64_t *count)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT COUNT(*), SUM(amount_micro), TOTAL(quantity), MIN(start_us),"
		       " MAX(end_us), (SELECT tenant FROM entries WHERE job = ?1 ORDER BY id"
		       " LIMIT 1), (SELECT user FROM entries WHERE job = ?1 ORDER BY id LIMIT 1),"
		       " TOTAL(energy_kwh), TOTAL(CASE WHEN energy_kwh > 0 THEN quantity ELSE 0 END)"
		       " FROM entries WHERE job = ?1",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(st);
		return db_errno(rc);
	}
	*count = sqlite3_column_int64(st, 0);
	*micro = sqlite3_column_int64(st, 1);
	json_object_set_new(bill, "metered",
			    json_pack("{s:f, s:I, s:f, s:I, s:f, s:f}", "amount", dollars(*micro),
				      "amount_micro", (json_int_t)*micro, "rank_seconds",
				      sqlite3_column_double(st, 2), "entries", (json_int_t)*count,
				      "energy_kwh", sqlite3_column_double(st, 7),
				      "energy_rank_seconds", sqlite3_column_double(st, 8)));
	if (*count > 0) {
		json_object_set_new(bill, "first_us", json_integer(sqlite3_column_int64(st, 3)));
		json_object_set_new(bill, "last_us", json_integer(sqlite3_column_int64(st, 4)));
		set_col_str(bill, "tenant", st, 5);
		set_col_str(bill, "user", st, 6);
	} else {
		json_object_set_new(bill, "first_us", json_null());
		json_object_set_new(bill, "last_us", json_null());
	}
	sqlite3_finalize(st);
	return 0;
}

/* Line items by kind, in a fixed order, only kinds the job has. */
static int bill_lines(struct ledger *l, const char *job, json_t *bill)
{
	json_t *lines = json_array();
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT COUNT(*), TOTAL(quantity), SUM(amount_micro) FROM entries"
		       " WHERE job = ? AND kind = ?",
		       &st);
	if (r < 0)
		goto out_decref;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		int64_t micro;

		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, kinds[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			r = db_errno(rc);
			goto out_finalize;
		}
		if (sqlite3_column_int64(st, 0) == 0)
			continue;
		micro = sqlite3_column_int64(st, 2);
		json_array_append_new(lines,
				      json_pack("{s:s, s:f, s:s, s:f, s:I}", "kind", kinds[i],
						"quantity", sqlite3_column_double(st, 1), "unit",
						"rank_s", "amount", dollars(micro), "amount_micro",
						(json_int_t)micro));
	}
	json_object_set_new(bill, "line_items", lines);
	sqlite3_finalize(st);
	return 0;
out_finalize:
	sqlite3_finalize(st);
out_decref:
	json_decref(lines);
	return r;
}

/* What the job's entries say by node class, and the energy part of the
 * amount: each entry's kWh at the kWh price of the rate version it was
 * priced at (an entry's amount is rounded once over both parts, so this part
 * is exact to within a micro-dollar per entry). */
static int bill_classes(struct ledger *l, const char *job, json_t *bill)
{
	json_t *cls = json_array();
	double kwh_all = 0, emicro_all = 0;
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT e.node_class, TOTAL(e.quantity), TOTAL(e.energy_kwh),"
		       " SUM(e.amount_micro), TOTAL(e.energy_kwh * r.kwh_micro), COUNT(*)"
		       " FROM entries e JOIN rates r ON r.version = e.rate_version"
		       " WHERE e.job = ? GROUP BY e.node_class ORDER BY e.node_class LIMIT ?",
		       &st);
	if (r < 0) {
		json_decref(cls);
		return r;
	}
	sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, LEDGER_MAX_CLASSES);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		int64_t micro = sqlite3_column_int64(st, 3);

		kwh_all += sqlite3_column_double(st, 2);
		emicro_all += sqlite3_column_double(st, 4);
		json_array_append_new(cls, json_pack("{s:s, s:f, s:f, s:f, s:I, s:I}", "node_class",
						     name && *name ? name : "cpu", "rank_seconds",
						     sqlite3_column_double(st, 1), "energy_kwh",
						     sqlite3_column_double(st, 2), "amount",
						     dollars(micro), "amount_micro",
						     (json_int_t)micro, "entries",
						     (json_int_t)sqlite3_column_int64(st, 5)));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		json_decref(cls);
		return db_errno(rc);
	}
	json_object_set_new(bill, "classes", cls);
	json_object_set_new(bill, "energy",
			    json_pack("{s:f, s:f, s:I}", "kwh", kwh_all, "amount",
				      dollars(llround(emicro_all)), "amount_micro",
				      (json_int_t)llround(emicro_all)));
	return 0;
}

int ledger_bill(struct ledger *l, const char *job, json_t **out)
{
	json_t *bill = json_object(), *pred = NULL;
	int64_t metered = 0, predicted = -1, count = 0;
	int r;

	if (!bill)
		return -ENOMEM;
	json_object_set_new(bill, "job", json_string(job));
	r = bill_metered(l, job, bill, &metered, &count);
	if (r < 0)
		goto out_decref;
	r = bill_predicted(l, job, &pred, &predicted, bill);
	if (r < 0)
		goto out_decref;
	if (count == 0 && predicted < 0) {
		json_decref(pred);
		r = -ENOENT;
		goto out_decref;
	}
	json_object_set_new(bill, "currency", json_string("USD"));
	json_object_set_new(bill, "predicted", pred);
	r = bill_lines(l, job, bill);
	if (r == 0)
		r = bill_classes(l, job, bill);
	if (r < 0)
		goto out_decref;
	if (predicted > 0)
		json_object_set_new(bill, "delta_pct",
				    json_real(100.0 * (double)(metered - predicted) /
					      (double)predicted));
	else
		json_object_set_new(bill, "delta_pct", json_null());
	*out = bill;
	return 0;
out_decref:
	json_decref(bill);
	return r;
}

/* Prepares the filtered, keyset-paginated listing (limit + 1 rows). Only the
 * filters given go into the SQL, so SQLite can use the job or tenant index
 * instead of walking every entry (a user is found through its tenants). */
static int prepare_listing(struct ledger *l, const struct ledger_query *q, sqlite3_stmt **out)
{
	char sql[1024];
	sqlite3_stmt *st;
	int r;

	snprintf(sql, sizeof(sql),
		 "SELECT id, source, seq, job, tenant, user, rank, kind, quantity, unit,"
		 " rate_version, amount_micro, start_us, end_us, ts_us, prev_hash, hash,"
		 " node_class, energy_kwh FROM entries WHERE id > ?1%s%s%s%s%s ORDER BY id LIMIT ?4",
		 q->job ? " AND job = ?2" : "", q->tenant ? " AND tenant = ?3" : "",
		 q->user ? (q->tenant ? " AND user = ?5"
				  : " AND user = ?5 AND tenant IN (SELECT tenant FROM daily"
				    " WHERE user = ?5)")
			: "", q->from_us > 0 ? " AND start_us >= ?6" : "",
		 q->to_us > 0 && q->to_us < INT64_MAX ? " AND start_us < ?7" : "");
	r = db_prepare(l->db, sql, &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, q->after);
	if (q->job)
		sqlite3_bind_text(st, 2, q->job, -1, SQLITE_STATIC);
	if (q->tenant)
		sqlite3_bind_text(st, 3, q->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, q->limit + 1);
	if (q->user)
		sqlite3_bind_text(st, 5, q->user, -1, SQLITE_STATIC);
	if (q->from_us > 0)
		sqlite3_bind_int64(st, 6, q->from_us);
	if (q->to_us > 0 && q->to_us < INT64_MAX)
		sqlite3_bind_int64(st, 7, q->to_us);
	*out = st;
	return 0;
}

static const char *const entry_keys[] = {
	"id",	      "source",	      "seq",	  "job",    "tenant", "user",
	"rank",	      "kind",	      "quantity", "unit",   "rate_version",
	"amount_micro", "start_us",   "end_us",	  "ts_us",  "prev_hash", "hash",
	"node_class", "energy_kwh",
};

int ledger_entries_json(struct ledger *l, const struct ledger_query *q, json_t **out)
{
	json_t *list = json_array(), *next = json_null();
	int64_t last_id = 0;
	sqlite3_stmt *st;
	int r, rc, n = 0;

	if (!list)
		return -ENOMEM;
	r = prepare_listing(l, q, &st);
	if (r < 0)
		goto out_decref;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o;

		if (n == q->limit) { /* one more row exists: there is a next page */
			next = json_integer(last_id);
			break;
		}
		last_id = sqlite3_column_int64(st, 0);
		o = json_object();
		for (int i = 0; i < (int)(sizeof(entry_keys) / sizeof(entry_keys[0])); i++) {
			int t = sqlite3_column_type(st, i);

			if (t == SQLITE_INTEGER)
				json_object_set_new(o, entry_keys[i],
						    json_integer(sqlite3_column_int64(st, i)));
			else if (t == SQLITE_FLOAT)
				json_object_set_new(o, entry_keys[i],
						    json_real(sqlite3_column_double(st, i)));
			else
				set_col_str(o, entry_keys[i], st, i);
		}
		json_object_set_new(o, "amount", json_real(dollars(sqlite3_column_int64(st, 11))));
		json_array_append_new(list, o);
		n++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = db_errno(rc);
		goto out_decref;
	}
	*out = json_pack("{s:o, s:o}", "entries", list, "next_after", next);
	return *out ? 0 : -ENOMEM;
out_decref:
	json_decref(next);
	json_decref(list);
	return r;
}

/* Writes s as a CSV field: always quoted, quotes doubled. A leading = + - @
 * gets a ' so a spreadsheet never runs a job name as a formula. */
static void csv_str(FILE *f, const char *s)
{
	fputc('"', f);
	if (s && s[0] && strchr("=+-@", s[0]))
		fputc('\'', f);
	for (; s && *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

int ledger_entries_csv(struct ledger *l, const struct ledger_query *q, char **out, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	sqlite3_stmt *st;
	FILE *f;
	int r, rc = SQLITE_DONE, n = 0;

	r = prepare_listing(l, q, &st);
	if (r < 0)
		return r;
	f = open_memstream(&buf, &size);
	if (!f) {
		sqlite3_finalize(st);
		return -ENOMEM;
	}
	fputs("id,source,seq,job,tenant,user,rank,kind,quantity,unit,rate_version,amount_micro,"
	      "amount,start_us,end_us,ts_us,prev_hash,hash,node_class,energy_kwh\r\n",
	      f);
	while (n < q->limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t micro = sqlite3_column_int64(st, 11);

		fprintf(f, "%lld,", (long long)sqlite3_column_int64(st, 0));
		csv_str(f, (const char *)sqlite3_column_text(st, 1));
		fprintf(f, ",%lld,", (long long)sqlite3_column_int64(st, 2));
		for (int i = 3; i <= 5; i++) {
			csv_str(f, (const char *)sqlite3_column_text(st, i));
			fputc(',', f);
		}
		fprintf(f, "%lld,", (long long)sqlite3_column_int64(st, 6));
		csv_str(f, (const char *)sqlite3_column_text(st, 7));
		fprintf(f, ",%.17g,", sqlite3_column_double(st, 8));
		csv_str(f, (const char *)sqlite3_column_text(st, 9));
		fprintf(f, ",%lld,%lld,%s%lld.%06lld,%lld,%lld,%lld,",
			(long long)sqlite3_column_int64(st, 10), (long long)micro,
			micro < 0 ? "-" : "", (long long)llabs(micro / 1000000),
			(long long)llabs(micro % 1000000), (long long)sqlite3_column_int64(st, 12),
			(long long)sqlite3_column_int64(st, 13),
			(long long)sqlite3_column_int64(st, 14));
		csv_str(f, (const char *)sqlite3_column_text(st, 15));
		fputc(',', f);
		csv_str(f, (const char *)sqlite3_column_text(st, 16));
		fputc(',', f);
		csv_str(f, (const char *)sqlite3_column_text(st, 17));
		fprintf(f, ",%.17g\r\n", sqlite3_column_double(st, 18));
		n++;
	}
	if (n < q->limit && rc != SQLITE_DONE)
		r = db_errno(rc);
	sqlite3_finalize(st);
	if (fclose(f) != 0 && r == 0)
		r = -ENOMEM;
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	*len = size;
	return 0;
}

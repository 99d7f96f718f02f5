/* summary — running totals per tenant, job and UTC day, kept in the ingest
 * transaction, so a tenant's bill or balance never scans its entries.
 *
 * During a batch, appended entries are summed in memory by (tenant, day, job,
 * user, kind, node class): a batch of 10,000 records from a few jobs becomes a
 * few upserts. The table is allocated once when the ledger opens; when it
 * fills up mid-batch it is written out early, still inside the transaction.
 * The totals are derived data: the entries stay the truth (verify walks them).
 */
#include "ledger.h"
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGG_SLOTS 4096 /* power of two */
#define AGG_FLUSH_AT (AGG_SLOTS / 2)

struct agg_slot {
	int used;
	int64_t day;
	char tenant[LEDGER_MAX_STR + 1], job[LEDGER_MAX_STR + 1], user[LEDGER_MAX_STR + 1];
	char kind[LEDGER_MAX_STR + 1], node_class[LEDGER_MAX_CLASS_NAME + 1];
	int64_t amount_micro, entries;
	double quantity, energy_kwh;
};

struct ledger_agg {
	struct agg_slot *slots;
	uint32_t used[AGG_FLUSH_AT];
	int n_used;
	sqlite3_stmt *st_daily, *st_job, *st_tenant;
};

int ledger_agg_new(struct ledger_agg **out)
{
	struct ledger_agg *a = calloc(1, sizeof(*a));

	if (!a)
		return -ENOMEM;
	a->slots = calloc(AGG_SLOTS, sizeof(*a->slots));
	if (!a->slots) {
		free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

void ledger_agg_free(struct ledger_agg *a)
{
	if (!a)
		return;
	sqlite3_finalize(a->st_daily);
	sqlite3_finalize(a->st_job);
	sqlite3_finalize(a->st_tenant);
	free(a->slots);
	free(a);
}

void ledger_agg_reset(struct ledger_agg *a)
{
	for (int i = 0; i < a->n_used; i++)
		a->slots[a->used[i]].used = 0;
	a->n_used = 0;
}

static uint32_t fnv(uint32_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return (h ^ 0xff) * 16777619u;
}

static int prepare(struct ledger *l)
{
	struct ledger_agg *a = l->agg;
	int r;

	if (a->st_daily)
		return 0;
	r = db_prepare(l->db,
		       "INSERT INTO daily (tenant, day, job, user, kind, node_class, amount_micro,"
		       " quantity, energy_kwh, entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
		       " ON CONFLICT(tenant, day, job, user, kind, node_class) DO UPDATE SET"
		       " amount_micro = amount_micro + excluded.amount_micro,"
		       " quantity = quantity + excluded.quantity,"
		       " energy_kwh = energy_kwh + excluded.energy_kwh,"
		       " entries = entries + excluded.entries",
		       &a->st_daily);
	if (r == 0)
		r = db_prepare(l->db,
			       "INSERT INTO job_totals (job, spent_micro, quantity, entries)"
			       " VALUES (?, ?, ?, ?) ON CONFLICT(job) DO UPDATE SET"
			       " spent_micro = spent_micro + excluded.spent_micro,"
			       " quantity = quantity + excluded.quantity,"
			       " entries = entries + excluded.entries",
			       &a->st_job);
	if (r == 0)
		r = db_prepare(l->db,
			       "INSERT INTO tenant_totals (tenant, spent_micro, quantity, energy_kwh,"
			       " entries) VALUES (?, ?, ?, ?, ?) ON CONFLICT(tenant) DO UPDATE SET"
			       " spent_micro = spent_micro + excluded.spent_micro,"
			       " quantity = quantity + excluded.quantity,"
			       " energy_kwh = energy_kwh + excluded.energy_kwh,"
			       " entries = entries + excluded.entries",
			       &a->st_tenant);
	return r;
}

static int step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int ledger_agg_flush(struct ledger *l)
{
	struct ledger_agg *a = l->agg;
	int r = prepare(l);

	for (int i = 0; r == 0 && i < a->n_used; i++) {
		const struct agg_slot *s = &a->slots[a->used[i]];

		sqlite3_bind_text(a->st_daily, 1, s->tenant, -1, SQLITE_STATIC);
		sqlite3_bind_int64(a->st_daily, 2, s->day);
		sqlite3_bind_text(a->st_daily, 3, s->job, -1, SQLITE_STATIC);
		sqlite3_bind_text(a->st_daily, 4, s->user, -1, SQLITE_STATIC);
		sqlite3_bind_text(a->st_daily, 5, s->kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(a->st_daily, 6, s->node_class, -1, SQLITE_STATIC);
		sqlite3_bind_int64(a->st_daily, 7, s->amount_micro);
		sqlite3_bind_double(a->st_daily, 8, s->quantity);
		sqlite3_bind_double(a->st_daily, 9, s->energy_kwh);
		sqlite3_bind_int64(a->st_daily, 10, s->entries);
		r = step(a->st_daily);
		if (r < 0)
			break;
		sqlite3_bind_text(a->st_job, 1, s->job, -1, SQLITE_STATIC);
		sqlite3_bind_int64(a->st_job, 2, s->amount_micro);
		sqlite3_bind_double(a->st_job, 3, s->quantity);
		sqlite3_bind_int64(a->st_job, 4, s->entries);
		r = step(a->st_job);
		if (r < 0)
			break;
		sqlite3_bind_text(a->st_tenant, 1, s->tenant, -1, SQLITE_STATIC);
		sqlite3_bind_int64(a->st_tenant, 2, s->amount_micro);
		sqlite3_bind_double(a->st_tenant, 3, s->quantity);
		sqlite3_bind_double(a->st_tenant, 4, s->energy_kwh);
		sqlite3_bind_int64(a->st_tenant, 5, s->entries);
		r = step(a->st_tenant);
	}
	ledger_agg_reset(a);
	return r;
}

int ledger_agg_add(struct ledger *l, const struct ledger_entry *e)
{
	struct ledger_agg *a = l->agg;
	int64_t day = e->start_us / LEDGER_DAY_US;
	uint32_t h = fnv(fnv(fnv(fnv(fnv(2166136261u ^ (uint32_t)day, e->tenant), e->job),
				 e->user), e->kind), e->node_class);
	struct agg_slot *s;

	for (;; h++) {
		s = &a->slots[h & (AGG_SLOTS - 1)];
		if (!s->used)
			break;
		if (s->day == day && !strcmp(s->job, e->job) && !strcmp(s->tenant, e->tenant) &&
		    !strcmp(s->user, e->user) && !strcmp(s->kind, e->kind) &&
		    !strcmp(s->node_class, e->node_class))
			goto add;
	}
	if (a->n_used == AGG_FLUSH_AT) {
		int r = ledger_agg_flush(l);

		if (r < 0)
			return r;
		return ledger_agg_add(l, e);
	}
	memset(s, 0, sizeof(*s));
	s->used = 1;
	s->day = day;
	strcpy(s->tenant, e->tenant);
	strcpy(s->job, e->job);
	strcpy(s->user, e->user);
	strcpy(s->kind, e->kind);
	strcpy(s->node_class, e->node_class);
	a->used[a->n_used++] = h & (AGG_SLOTS - 1);
add:
	s->amount_micro += e->amount_micro;
	s->quantity += e->quantity;
	s->energy_kwh += e->energy_kwh;
	s->entries++;
	return 0;
}

/* Runs "SELECT key, sum(amount_micro), total(quantity), total(energy_kwh),
 * sum(entries) FROM daily WHERE tenant/day range GROUP BY key" into an array
 * of {key_name: key, "amount", "amount_micro", ...}. */
static int group(struct ledger *l, const char *tenant, int64_t d0, int64_t d1, const char *key,
		 const char *order, json_t **out)
{
	char sql[512];
	json_t *arr = json_array();
	sqlite3_stmt *st;
	int r, rc;

	snprintf(sql, sizeof(sql),
		 "SELECT %s, sum(amount_micro) AS a, total(quantity), total(energy_kwh),"
		 " sum(entries) FROM daily WHERE tenant = ? AND day >= ? AND day < ?"
		 " GROUP BY %s ORDER BY %s LIMIT %d",
		 key, key, order, LEDGER_MAX_BILL_ROWS);
	r = db_prepare(l->db, sql, &st);
	if (r < 0) {
		json_decref(arr);
		return r;
	}
	sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, d0);
	sqlite3_bind_int64(st, 3, d1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int nk = sqlite3_column_count(st) - 4;
		int64_t micro = sqlite3_column_int64(st, nk);
		json_t *o = json_pack("{s:f, s:I, s:f, s:f, s:I}", "amount", (double)micro / 1e6,
				      "amount_micro", (json_int_t)micro, "rank_seconds",
				      sqlite3_column_double(st, nk + 1), "energy_kwh",
				      sqlite3_column_double(st, nk + 2), "entries",
				      (json_int_t)sqlite3_column_int64(st, nk + 3));

		for (int i = 0; i < nk; i++) {
			const char *name = sqlite3_column_name(st, i);

			if (sqlite3_column_type(st, i) == SQLITE_INTEGER) /* day */
				json_object_set_new(o, "from_us",
						    json_integer(sqlite3_column_int64(st, i) *
								 LEDGER_DAY_US));
			else
				json_object_set_new(o, name, json_string((const char *)
									 sqlite3_column_text(st, i)));
		}
		json_array_append_new(arr, o);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		json_decref(arr);
		return db_errno(rc);
	}
	*out = arr;
	return 0;
}

int ledger_tenant_bill(struct ledger *l, const char *tenant, int64_t from_us, int64_t to_us,
		       json_t **out)
{
	int64_t d0 = from_us / LEDGER_DAY_US;
	int64_t d1 = to_us == INT64_MAX ? INT64_MAX : (to_us + LEDGER_DAY_US - 1) / LEDGER_DAY_US;
	json_t *bill, *total = NULL, *jobs = NULL, *users = NULL, *kinds = NULL, *classes = NULL,
		     *days = NULL;
	int r;

	if ((r = group(l, tenant, d0, d1, "tenant", "a DESC", &total)) < 0 ||
	    (r = group(l, tenant, d0, d1, "job, user", "a DESC, job", &jobs)) < 0 ||
	    (r = group(l, tenant, d0, d1, "user", "a DESC, user", &users)) < 0 ||
	    (r = group(l, tenant, d0, d1, "kind", "kind", &kinds)) < 0 ||
	    (r = group(l, tenant, d0, d1, "node_class", "node_class", &classes)) < 0 ||
	    (r = group(l, tenant, d0, d1, "day", "day", &days)) < 0)
		goto out_decref;
	if (json_array_size(total) == 0)
		json_array_append_new(total, json_pack("{s:f, s:i, s:f, s:f, s:i}", "amount", 0.0,
						       "amount_micro", 0, "rank_seconds", 0.0,
						       "energy_kwh", 0.0, "entries", 0));
	json_object_del(json_array_get(total, 0), "tenant");
	bill = json_pack("{s:s, s:s, s:I, s:o, s:O, s:o, s:o, s:o, s:o, s:o, s:i}", "tenant",
			 tenant, "currency", "USD", "from_us", (json_int_t)(d0 * LEDGER_DAY_US),
			 "to_us", d1 == INT64_MAX ? json_null() : json_integer(d1 * LEDGER_DAY_US),
			 "total", json_array_get(total, 0), "line_items", kinds, "node_classes",
			 classes, "jobs", jobs, "users", users, "days", days, "row_limit",
			 LEDGER_MAX_BILL_ROWS);
	json_decref(total);
	if (!bill)
		return -ENOMEM;
	*out = bill;
	return 0;
out_decref:
	json_decref(total);
	json_decref(jobs);
	json_decref(users);
	json_decref(kinds);
	json_decref(classes);
	json_decref(days);
	return r;
}

/* Writes s as a Prometheus label value (backslash, quote, newline escaped). */
static void label(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

int ledger_metrics(struct ledger *l, char **out, size_t *len)
{
	static const struct {
		const char *name, *type, *help, *sql_col;
	} per_tenant[] = {
		{"bursar_ledger_spend_micro_total", "counter",
		 "Metered spend in micro-dollars.", "spent_micro"},
		{"bursar_ledger_usage_rank_seconds_total", "counter", "Metered rank-seconds.",
		 "quantity"},
		{"bursar_ledger_energy_kwh_total", "counter", "Metered energy in kWh.",
		 "energy_kwh"},
		{"bursar_ledger_tenant_entries_total", "counter", "Ledger entries per tenant.",
		 "entries"},
		{"bursar_ledger_credits_micro", "gauge", "Credits granted, in micro-dollars.",
		 "credits_micro"},
	};
	char *buf = NULL, sql[256];
	size_t size = 0;
	sqlite3_stmt *st;
	FILE *f;
	int r = 0, rc;

	f = open_memstream(&buf, &size);
	if (!f)
		return -ENOMEM;
	fprintf(f, "# HELP bursar_ledger_entries_total Ledger entries appended.\n"
		   "# TYPE bursar_ledger_entries_total counter\n"
		   "bursar_ledger_entries_total %lld\n"
		   "# HELP bursar_ledger_credits_total Credit entries appended.\n"
		   "# TYPE bursar_ledger_credits_total counter\n"
		   "bursar_ledger_credits_total %lld\n"
		   "# HELP bursar_ledger_ingest_errors_total Records rejected and requests failed "
		   "since the daemon started.\n"
		   "# TYPE bursar_ledger_ingest_errors_total counter\n"
		   "bursar_ledger_ingest_errors_total{reason=\"rejected\"} %llu\n"
		   "bursar_ledger_ingest_errors_total{reason=\"failed\"} %llu\n"
		   "# HELP bursar_ledger_rate_version Current rate version.\n"
		   "# TYPE bursar_ledger_rate_version gauge\n"
		   "bursar_ledger_rate_version %lld\n",
		(long long)l->head_id, (long long)l->credit_head_id,
		(unsigned long long)l->n_rejected, (unsigned long long)l->n_failed,
		(long long)l->rate.version);
	for (size_t m = 0; r == 0 && m < sizeof(per_tenant) / sizeof(per_tenant[0]); m++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", per_tenant[m].name, per_tenant[m].help,
			per_tenant[m].name, per_tenant[m].type);
		snprintf(sql, sizeof(sql), "SELECT tenant, %s FROM tenant_totals ORDER BY tenant"
			 " LIMIT %d", per_tenant[m].sql_col, LEDGER_MAX_BILL_ROWS);
		r = db_prepare(l->db, sql, &st);
		if (r < 0)
			break;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			fprintf(f, "%s{tenant=\"", per_tenant[m].name);
			label(f, (const char *)sqlite3_column_text(st, 0));
			if (sqlite3_column_type(st, 1) == SQLITE_INTEGER)
				fprintf(f, "\"} %lld\n", (long long)sqlite3_column_int64(st, 1));
			else
				fprintf(f, "\"} %.17g\n", sqlite3_column_double(st, 1));
		}
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			r = db_errno(rc);
	}
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

/* ledger.h — ledgerd's internal interface (not installed): the append-only,
 * hash-chained cost ledger in one SQLite file, its ingest, queries and HTTP
 * routes. Every function returns 0 or a negative errno and logs nothing above
 * debug; the daemon logs where it handles the error.
 *
 * Limits: strings in a record ≤ LEDGER_MAX_STR, records per request
 * ≤ LEDGER_MAX_RECORDS, quantity ≤ LEDGER_MAX_QUANTITY rank-seconds, query rows
 * ≤ LEDGER_MAX_ROWS, money amounts ≤ LEDGER_MAX_MICRO, node classes per rate
 * version ≤ LEDGER_MAX_CLASSES.
 */
#pragma once
#include <jansson.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "httpd.h"

#define LEDGER_MAX_STR 128
#define LEDGER_MAX_EXPLAIN 2048
#define LEDGER_MAX_RECORDS 10000
#define LEDGER_MAX_QUANTITY 86400.0
#define LEDGER_MAX_ROWS 10000
#define LEDGER_DEFAULT_ROWS 1000
#define LEDGER_MAX_RANK 1000000
/* Rates above this many dollars per rank-hour are refused as typos. */
#define LEDGER_MAX_RANK_HOUR 1000000.0
/* One credit, hold or extension: at most $1e9. */
#define LEDGER_MAX_MICRO 1000000000000000LL
/* Running credit totals of a tenant stay inside this (no int64 overflow). */
#define LEDGER_MAX_TOTAL_MICRO 4000000000000000000LL
#define LEDGER_MAX_NOTE 512
#define LEDGER_MAX_CLASSES 16
#define LEDGER_MAX_CLASS_NAME 32
#define LEDGER_MAX_KWH 1000.0
/* $ per kWh above this is refused as a typo. */
#define LEDGER_MAX_KWH_PRICE 1000.0
/* Rows in the jobs/users/days parts of a tenant bill, tenants in /metrics. */
#define LEDGER_MAX_BILL_ROWS 1000
#define LEDGER_MAX_HISTORY 1000
#define LEDGER_DAY_US 86400000000LL
#define LEDGER_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* One ledger entry, every field that the chain hash covers. */
struct ledger_entry {
	int64_t id;
	char source[LEDGER_MAX_STR + 1];
	int64_t seq;
	char job[LEDGER_MAX_STR + 1];
	char tenant[LEDGER_MAX_STR + 1];
	char user[LEDGER_MAX_STR + 1];
	int64_t rank;
	char kind[LEDGER_MAX_STR + 1];
	double quantity;
	char unit[LEDGER_MAX_STR + 1];
	int64_t rate_version;
	int64_t amount_micro;
	int64_t start_us, end_us, ts_us;
	char prev_hash[65];
	char hash[65];
	/* hashed in the v2 canonical form only when not "cpu" / 0 */
	char node_class[LEDGER_MAX_CLASS_NAME + 1];
	double energy_kwh;
};

/* One tenant credit (or a negative correction), in its own hash chain. */
struct ledger_credit {
	int64_t id;
	char source[LEDGER_MAX_STR + 1];
	int64_t seq;
	char tenant[LEDGER_MAX_STR + 1];
	int64_t amount_micro;
	char note[LEDGER_MAX_NOTE + 1];
	int64_t ts_us;
	char prev_hash[65];
	char hash[65];
};

/* available = credits - spent - open holds' unspent reservations. */
struct ledger_balance {
	int limited; /* 0: the tenant has no credit entries: no limit */
	int64_t credits_micro, spent_micro, reserved_micro, available_micro;
};

/* One admission estimate (a prediction, never part of what is owed). */
struct ledger_estimate {
	char source[LEDGER_MAX_STR + 1];
	int64_t seq;
	char job[LEDGER_MAX_STR + 1];
	char tenant[LEDGER_MAX_STR + 1];
	char user[LEDGER_MAX_STR + 1];
	int64_t ranks;
	double seconds;
	int64_t amount_micro;
	char explain[LEDGER_MAX_EXPLAIN + 1];
};

struct ledger_class_rate {
	char name[LEDGER_MAX_CLASS_NAME + 1];
	int64_t rank_hour_micro; /* exact: millionths of a dollar per rank-hour */
};

/* One rate version: per rank-hour by node class, per kWh. */
struct ledger_rate {
	int64_t version;
	int64_t rank_hour_micro; /* the "cpu" class (the default) */
	int64_t kwh_micro;
	int64_t effective_us;
	int n_classes;
	struct ledger_class_rate classes[LEDGER_MAX_CLASSES];
};

struct ledger_agg;

struct ledger {
	sqlite3 *db;
	int64_t head_id; /* id of the last entry (0: empty) */
	char head_hash[65];
	struct ledger_rate rate;
	/* saved at batch begin, restored when the batch rolls back */
	int64_t saved_head_id;
	char saved_head_hash[65];
	sqlite3_stmt *st_find;
	sqlite3_stmt *st_insert;
	sqlite3_stmt *st_est_find;
	sqlite3_stmt *st_est_insert;
	/* per-batch running totals, flushed into the summary tables at commit */
	struct ledger_agg *agg;
	int64_t credit_head_id;
	char credit_head_hash[65];
	/* the hold events chain; pend: appended, not yet committed */
	int64_t hold_head_id, hold_pend_id;
	char hold_head_hash[65], hold_pend_hash[65];
	uint64_t n_rejected, n_failed; /* since start, for /metrics */
};

struct ledger_verify {
	int ok;
	int64_t entries;
	char head[65];
	int64_t first_bad_id;
	char reason[320];
	int64_t credits;
	char credit_head[65];
	int bad_credit; /* first_bad_id names a credit, not an entry */
	int64_t holds;	/* hold events */
	char hold_head[65];
	int bad_hold; /* first_bad_id names a hold event (0: a hold row, see reason) */
};

/* chain.c: storage, hashing, append, verify */
int ledger_open(const char *path, struct ledger **out);
void ledger_free(struct ledger *l);
/* The canonical bytes the hash covers; returns their length or -E2BIG. */
int ledger_entry_canon(const struct ledger_entry *e, char *buf, size_t size);
/* SHA-256 hex of the canonical form of e (with e->prev_hash). */
int ledger_entry_hash(const struct ledger_entry *e, char out[65]);
/* rates.c: versioned rates */
int ledger_load_rate(struct ledger *l);
/* Makes rank_hour_micro the current "cpu" rate, adding a version when it
 * changed (other classes and the kWh price carry over). */
int ledger_set_rate(struct ledger *l, int64_t rank_hour_micro);
/* Adds rate version l->rate.version + 1 = *nr (effective now). */
int ledger_add_rate(struct ledger *l, struct ledger_rate *nr);
/* Parses {"rank_hour": {"cpu": 0.72, ...}, "kwh": 0.15} (or *_micro). */
int ledger_parse_rate(const struct ledger *l, json_t *req, struct ledger_rate *out, char *why,
		      size_t n);
/* Prices e at the current rate: sets rate_version and amount_micro;
 * -ENOENT when the current version has no rate for e->node_class. */
int ledger_price(const struct ledger *l, struct ledger_entry *e);
json_t *ledger_rates_json(struct ledger *l);
int ledger_batch_begin(struct ledger *l);
int ledger_batch_commit(struct ledger *l);
void ledger_batch_rollback(struct ledger *l);
/* Inside a batch: appends e (sets id, ts_us when 0, prev_hash, hash), or sets
 * *dup and leaves the ledger alone when (source, seq) is already stored. */
int ledger_append(struct ledger *l, struct ledger_entry *e, int *dup);
int ledger_append_estimate(struct ledger *l, const struct ledger_estimate *e, int *dup);
/* Walks every entry in id order. expect_id/expect_hash (NULL: unknown) is the
 * head the appending daemon holds, so entries deleted from or added at the
 * tail behind its back are caught too. */
int ledger_verify(sqlite3 *db, int64_t expect_id, const char *expect_hash,
		  struct ledger_verify *out);
/* The credits chain, same rules; fills out->credits and out->credit_head and
 * marks out bad (reason naming the credit) when it does not hold. */
int ledger_verify_credits(sqlite3 *db, int64_t expect_id, const char *expect_hash,
			  struct ledger_verify *out);
json_t *ledger_verify_json(const struct ledger_verify *v);
/* Marks v bad at id with a reason; returns 0. */
int ledger_verify_bad(struct ledger_verify *v, int64_t id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Copies text column i into buf; -E2BIG when it does not fit (edited). */
int ledger_col_text(sqlite3_stmt *st, int i, char *buf, size_t size);
/* credits.c: the credits chain */
int ledger_load_credit_head(struct ledger *l);
/* holds.c: the hold events chain. Append inside the caller's transaction,
 * ledger_hold_commit after it commits. */
int ledger_hold_append(struct ledger *l, const char *job, const char *tenant, const char *user,
		       const char *op, int64_t amount_micro);
void ledger_hold_commit(struct ledger *l);
/* Loads the head; appends events for holds written before the chain. */
int ledger_load_hold_head(struct ledger *l);
/* Walks the chain and checks the holds table is its replay. */
int ledger_verify_holds(sqlite3 *db, int64_t expect_id, const char *expect_hash,
			struct ledger_verify *v);

/* ingest.c: validation of one record into an entry; why gets the reason */
int ledger_parse_entry(json_t *rec, struct ledger_entry *e, char *why, size_t n);
int ledger_parse_estimate(json_t *rec, struct ledger_estimate *e, char *why, size_t n);
/* Ingests {"source", "records": [...]} as one transaction. -EINVAL/-E2BIG with
 * err set for a bad envelope; otherwise *reply = {"acked", "rejected"}. */
int ledger_ingest(struct ledger *l, json_t *req, int estimates, json_t **reply, char *err,
		  size_t errlen);

/* fastingest.c: the plain case of an ingest body without a JSON tree. 0: done,
 * *reply (valid until the next call) is the reply body; 1: not the plain case
 * (nothing touched; use ledger_ingest); <0: a storage error, err set. */
int ledger_fast_ingest(struct ledger *l, const char *body, size_t len, const char **reply,
		       size_t *reply_len, char *err, size_t errlen);

/* query.c: bills and entry listings */
int ledger_bill(struct ledger *l, const char *job, json_t **out);
struct ledger_query {
	const char *job;    /* NULL: any */
	const char *tenant; /* NULL: any */
	const char *user;   /* NULL: any */
	int64_t from_us, to_us; /* start_us in [from_us, to_us) */
	int64_t after;
	int limit;
};
int ledger_entries_json(struct ledger *l, const struct ledger_query *q, json_t **out);
/* CSV with a header row; *out is malloc'd. */
int ledger_entries_csv(struct ledger *l, const struct ledger_query *q, char **out, size_t *len);

/* summary.c: running totals per tenant/job/day kept in the ingest transaction */
int ledger_agg_new(struct ledger_agg **out);
void ledger_agg_free(struct ledger_agg *a);
void ledger_agg_reset(struct ledger_agg *a);
/* Adds an appended entry to the batch's totals. */
int ledger_agg_add(struct ledger *l, const struct ledger_entry *e);
/* Writes the batch's totals into daily, job_totals and tenant_totals. */
int ledger_agg_flush(struct ledger *l);
/* from_us/to_us: 0/INT64_MAX for open ends; whole UTC days are billed. */
int ledger_tenant_bill(struct ledger *l, const char *tenant, int64_t from_us, int64_t to_us,
		       json_t **out);
/* Prometheus text exposition; *out is malloc'd. */
int ledger_metrics(struct ledger *l, char **out, size_t *len);

/* budget.c: credits, holds, balances (each call is one transaction) */
int ledger_balance(struct ledger *l, const char *tenant, struct ledger_balance *b);
json_t *ledger_balance_json(const char *tenant, const struct ledger_balance *b);
/* Parses and appends a credit; *dup set when (source, seq) was stored before
 * (-EEXIST when with another tenant or amount). why gets the reason of -EINVAL. */
int ledger_credit(struct ledger *l, json_t *req, struct ledger_credit *c, int *dup, char *why,
		  size_t n);
/* Opens a hold (or returns the job's existing one): -EDQUOT with why set when
 * the tenant cannot afford it, -EEXIST when another tenant holds the job. */
int ledger_hold(struct ledger *l, json_t *req, json_t **hold, json_t **balance, char *why,
		size_t n);
int ledger_hold_get(struct ledger *l, const char *job, json_t **hold);
int ledger_hold_release(struct ledger *l, const char *job, json_t **hold, json_t **balance,
			char *why, size_t n);
int ledger_hold_extend(struct ledger *l, const char *job, json_t *req, json_t **hold,
		       json_t **balance, char *why, size_t n);
/* "$12.40", "$0.0012", "-$3.20" */
void ledger_fmt_money(int64_t micro, char *buf, size_t size);

/* api_budget.c: route handlers for credits, holds, rates, tenant bills, metrics */
/* Roles: consoled forwards the caller's role in X-Bursar-Role; a request
 * without it comes from a local operator on ledgerd's private socket. Replies
 * 403 naming the role needed and returns -EPERM unless the caller may. */
int ledger_need_operator(struct httpd_req *req, const char *what);
void ledger_on_credit(struct httpd_req *req, void *ud);
void ledger_on_balance(struct httpd_req *req, void *ud);
void ledger_on_hold(struct httpd_req *req, void *ud);
void ledger_on_hold_get(struct httpd_req *req, void *ud);
void ledger_on_hold_release(struct httpd_req *req, void *ud);
void ledger_on_hold_extend(struct httpd_req *req, void *ud);
void ledger_on_rates_post(struct httpd_req *req, void *ud);
void ledger_on_tenant_bill(struct httpd_req *req, void *ud);
void ledger_on_metrics(struct httpd_req *req, void *ud);
/* from_us/to_us query parameters (0 / INT64_MAX when absent); replies 400 itself. */
int ledger_query_range(struct httpd_req *req, int64_t *from_us, int64_t *to_us);

/* jarena.c: an ingest body parsed into a bump arena (same errors as
 * json_loadb with JSON_REJECT_DUPLICATES); drop it before the next load and
 * never keep a reference into it. */
json_t *ledger_jarena_load(const char *buf, size_t len, json_error_t *err);
void ledger_jarena_drop(json_t *j);

/* api.c: the HTTP routes (userdata: struct ledger) */
extern const struct httpd_route ledger_routes[];
extern const size_t ledger_n_routes;

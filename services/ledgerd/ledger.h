/* ledger.h — ledgerd's internal interface (not installed): the append-only,
 * hash-chained cost ledger in one SQLite file, its ingest, queries and HTTP
 * routes. Every function returns 0 or a negative errno and logs nothing above
 * debug; the daemon logs where it handles the error.
 *
 * Limits: strings in a record ≤ LEDGER_MAX_STR, records per request
 * ≤ LEDGER_MAX_RECORDS, quantity ≤ LEDGER_MAX_QUANTITY rank-seconds, query rows
 * ≤ LEDGER_MAX_ROWS.
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

struct ledger_rate {
	int64_t version;
	int64_t rank_hour_micro; /* exact: millionths of a dollar per rank-hour */
	int64_t effective_us;
};

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
};

struct ledger_verify {
	int ok;
	int64_t entries;
	char head[65];
	int64_t first_bad_id;
	char reason[320];
};

/* chain.c: storage, hashing, append, verify */
int ledger_open(const char *path, struct ledger **out);
void ledger_free(struct ledger *l);
/* Makes rank_hour_micro the current rate, adding a version when it changed. */
int ledger_set_rate(struct ledger *l, int64_t rank_hour_micro);
/* The canonical bytes the hash covers; returns their length or -E2BIG. */
int ledger_entry_canon(const struct ledger_entry *e, char *buf, size_t size);
/* SHA-256 hex of the canonical form of e (with e->prev_hash). */
int ledger_entry_hash(const struct ledger_entry *e, char out[65]);
/* Prices e at the current rate: sets rate_version and amount_micro. */
void ledger_price(const struct ledger *l, struct ledger_entry *e);
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
json_t *ledger_verify_json(const struct ledger_verify *v);

/* ingest.c: validation of one record into an entry; why gets the reason */
int ledger_parse_entry(json_t *rec, struct ledger_entry *e, char *why, size_t n);
int ledger_parse_estimate(json_t *rec, struct ledger_estimate *e, char *why, size_t n);
/* Ingests {"source", "records": [...]} as one transaction. -EINVAL/-E2BIG with
 * err set for a bad envelope; otherwise *reply = {"acked", "rejected"}. */
int ledger_ingest(struct ledger *l, json_t *req, int estimates, json_t **reply, char *err,
		  size_t errlen);

/* query.c: bills and entry listings */
int ledger_bill(struct ledger *l, const char *job, json_t **out);
struct ledger_query {
	const char *job;    /* NULL: any */
	const char *tenant; /* NULL: any */
	int64_t after;
	int limit;
};
int ledger_entries_json(struct ledger *l, const struct ledger_query *q, json_t **out);
/* CSV with a header row; *out is malloc'd. */
int ledger_entries_csv(struct ledger *l, const struct ledger_query *q, char **out, size_t *len);
json_t *ledger_rates_json(const struct ledger *l);

/* api.c: the HTTP routes (userdata: struct ledger) */
extern const struct httpd_route ledger_routes[];
extern const size_t ledger_n_routes;

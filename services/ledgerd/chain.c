/* chain — the ledger's storage: schema, rates, the hash chain and verify.
 *
 * Entries are append-only: each one carries the SHA-256 of its canonical
 * serialization (every field plus the previous entry's hash), ids are dense
 * from 1, and SQLite triggers refuse UPDATE and DELETE. The triggers are a
 * guard, not the proof: verify recomputes the chain, so an edit made with the
 * triggers dropped is still named. Appends happen inside the caller's
 * transaction, so a crash leaves either the whole batch or none of it. This
 * file must never update or delete an entry.
 */
#include "ledger.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ledger_migrations[] = {
	"CREATE TABLE entries ("
	" id INTEGER PRIMARY KEY, source TEXT NOT NULL, seq INTEGER NOT NULL,"
	" job TEXT NOT NULL, tenant TEXT NOT NULL, user TEXT NOT NULL, rank INTEGER NOT NULL,"
	" kind TEXT NOT NULL, quantity REAL NOT NULL, unit TEXT NOT NULL,"
	" rate_version INTEGER NOT NULL, amount_micro INTEGER NOT NULL,"
	" start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, ts_us INTEGER NOT NULL,"
	" prev_hash TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE(source, seq));"
	"CREATE INDEX entries_job ON entries(job, id);"
	"CREATE INDEX entries_tenant ON entries(tenant, id);"
	"CREATE TABLE estimates ("
	" id INTEGER PRIMARY KEY, source TEXT NOT NULL, seq INTEGER NOT NULL,"
	" job TEXT NOT NULL, tenant TEXT NOT NULL, user TEXT NOT NULL, ranks INTEGER NOT NULL,"
	" seconds REAL NOT NULL, amount_micro INTEGER NOT NULL, explain TEXT NOT NULL,"
	" ts_us INTEGER NOT NULL, UNIQUE(source, seq));"
	"CREATE INDEX estimates_job ON estimates(job, id);"
	"CREATE TABLE rates ("
	" version INTEGER PRIMARY KEY, rank_hour_micro INTEGER NOT NULL,"
	" rank_second_micro REAL NOT NULL, currency TEXT NOT NULL, effective_us INTEGER NOT NULL);"
	"CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries"
	" BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;"
	"CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries"
	" BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;"
	"CREATE TRIGGER estimates_no_update BEFORE UPDATE ON estimates"
	" BEGIN SELECT RAISE(ABORT, 'ledger estimates are append-only'); END;"
	"CREATE TRIGGER estimates_no_delete BEFORE DELETE ON estimates"
	" BEGIN SELECT RAISE(ABORT, 'ledger estimates are append-only'); END;"
	"CREATE TRIGGER rates_no_update BEFORE UPDATE ON rates"
	" BEGIN SELECT RAISE(ABORT, 'ledger rates are versioned, never edited'); END;"
	"CREATE TRIGGER rates_no_delete BEFORE DELETE ON rates"
	" BEGIN SELECT RAISE(ABORT, 'ledger rates are versioned, never edited'); END;",
	/* 2: node classes and energy, credits, holds, running totals */
	"ALTER TABLE entries ADD COLUMN node_class TEXT NOT NULL DEFAULT 'cpu';"
	"ALTER TABLE entries ADD COLUMN energy_kwh REAL NOT NULL DEFAULT 0;"
	"CREATE INDEX entries_user ON entries(user, id);"
	"ALTER TABLE rates ADD COLUMN kwh_micro INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE rate_classes ("
	" version INTEGER NOT NULL, node_class TEXT NOT NULL, rank_hour_micro INTEGER NOT NULL,"
	" PRIMARY KEY (version, node_class)) WITHOUT ROWID;"
	"INSERT INTO rate_classes SELECT version, 'cpu', rank_hour_micro FROM rates;"
	"CREATE TRIGGER rate_classes_no_update BEFORE UPDATE ON rate_classes"
	" BEGIN SELECT RAISE(ABORT, 'ledger rates are versioned, never edited'); END;"
	"CREATE TRIGGER rate_classes_no_delete BEFORE DELETE ON rate_classes"
	" BEGIN SELECT RAISE(ABORT, 'ledger rates are versioned, never edited'); END;"
	"CREATE TABLE credits ("
	" id INTEGER PRIMARY KEY, source TEXT NOT NULL, seq INTEGER NOT NULL,"
	" tenant TEXT NOT NULL, amount_micro INTEGER NOT NULL, note TEXT NOT NULL,"
	" ts_us INTEGER NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,"
	" UNIQUE(source, seq));"
	"CREATE INDEX credits_tenant ON credits(tenant, id);"
	"CREATE TRIGGER credits_no_update BEFORE UPDATE ON credits"
	" BEGIN SELECT RAISE(ABORT, 'ledger credits are append-only'); END;"
	"CREATE TRIGGER credits_no_delete BEFORE DELETE ON credits"
	" BEGIN SELECT RAISE(ABORT, 'ledger credits are append-only'); END;"
	"CREATE TABLE holds ("
	" job TEXT PRIMARY KEY, tenant TEXT NOT NULL, user TEXT NOT NULL,"
	" reserved_micro INTEGER NOT NULL, state TEXT NOT NULL,"
	" created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL);"
	"CREATE INDEX holds_open ON holds(tenant) WHERE state = 'open';"
	"CREATE TABLE tenant_totals ("
	" tenant TEXT PRIMARY KEY, credits INTEGER NOT NULL DEFAULT 0,"
	" credits_micro INTEGER NOT NULL DEFAULT 0, spent_micro INTEGER NOT NULL DEFAULT 0,"
	" quantity REAL NOT NULL DEFAULT 0, energy_kwh REAL NOT NULL DEFAULT 0,"
	" entries INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE job_totals ("
	" job TEXT PRIMARY KEY, spent_micro INTEGER NOT NULL, quantity REAL NOT NULL,"
	" entries INTEGER NOT NULL);"
	"CREATE TABLE daily ("
	" tenant TEXT NOT NULL, day INTEGER NOT NULL, job TEXT NOT NULL, user TEXT NOT NULL,"
	" kind TEXT NOT NULL, node_class TEXT NOT NULL, amount_micro INTEGER NOT NULL,"
	" quantity REAL NOT NULL, energy_kwh REAL NOT NULL, entries INTEGER NOT NULL,"
	" PRIMARY KEY (tenant, day, job, user, kind, node_class)) WITHOUT ROWID;"
	"INSERT INTO daily SELECT tenant, start_us / 86400000000, job, user, kind, node_class,"
	" sum(amount_micro), total(quantity), total(energy_kwh), count(*) FROM entries"
	" GROUP BY 1, 2, 3, 4, 5, 6;"
	"INSERT INTO job_totals SELECT job, sum(amount_micro), total(quantity), count(*)"
	" FROM entries GROUP BY job;"
	"INSERT INTO tenant_totals (tenant, spent_micro, quantity, energy_kwh, entries)"
	" SELECT tenant, sum(amount_micro), total(quantity), total(energy_kwh), count(*)"
	" FROM entries GROUP BY tenant;",
	/* 3: ingest speed. Users belong to one tenant, so a user's entries are
	 * found through the tenant index (consoled always names the tenant);
	 * one index fewer to update per appended entry. */
	"DROP INDEX entries_user;",
	/* 4: holds chained: every open/extend/release as an append-only event */
	"CREATE TABLE hold_events ("
	" id INTEGER PRIMARY KEY, job TEXT NOT NULL, tenant TEXT NOT NULL, user TEXT NOT NULL,"
	" op TEXT NOT NULL, amount_micro INTEGER NOT NULL, ts_us INTEGER NOT NULL,"
	" prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
	"CREATE TRIGGER hold_events_no_update BEFORE UPDATE ON hold_events"
	" BEGIN SELECT RAISE(ABORT, 'ledger hold events are append-only'); END;"
	"CREATE TRIGGER hold_events_no_delete BEFORE DELETE ON hold_events"
	" BEGIN SELECT RAISE(ABORT, 'ledger hold events are append-only'); END;",
};

#define ENTRY_COLS                                                                                 \
	"id, source, seq, job, tenant, user, rank, kind, quantity, unit, rate_version, "           \
	"amount_micro, start_us, end_us, ts_us, prev_hash, hash, node_class, energy_kwh"

/* A bounded writer for the canonical form: no printf on the ingest path
 * except for the doubles (%.17g). */
struct canon {
	char *p, *end;
	int over;
};

static void canon_mem(struct canon *c, const char *s, size_t n)
{
	if (c->over || (size_t)(c->end - c->p) < n) {
		c->over = 1;
		return;
	}
	memcpy(c->p, s, n);
	c->p += n;
}

static void canon_u64(struct canon *c, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	canon_mem(c, tmp + i, sizeof(tmp) - i);
}

/* "key=" INT "\n" */
static void canon_int(struct canon *c, const char *key, int64_t v)
{
	canon_mem(c, key, strlen(key));
	if (v < 0) {
		canon_mem(c, "-", 1);
		canon_u64(c, (uint64_t)0 - (uint64_t)v);
	} else {
		canon_u64(c, (uint64_t)v);
	}
	canon_mem(c, "\n", 1);
}

/* "key=" LEN ":" STR "\n": length-prefixed, so no content forges a boundary */
static void canon_str(struct canon *c, const char *key, const char *s)
{
	size_t n = strlen(s);

	canon_mem(c, key, strlen(key));
	canon_u64(c, n);
	canon_mem(c, ":", 1);
	canon_mem(c, s, n);
	canon_mem(c, "\n", 1);
}

/* "key=" %.17g "\n": round-trips every double */
static void canon_dbl(struct canon *c, const char *key, double v)
{
	char tmp[40];
	int n;

	/* A whole number below 1e15 prints as its digits under %.17g too. */
	if (v >= 0 && v < 1e15 && v == (double)(int64_t)v && !signbit(v)) {
		canon_mem(c, key, strlen(key));
		canon_u64(c, (uint64_t)v);
		canon_mem(c, "\n", 1);
		return;
	}
	n = snprintf(tmp, sizeof(tmp), "%.17g", v);
	canon_mem(c, key, strlen(key));
	canon_mem(c, tmp, n);
	canon_mem(c, "\n", 1);
}

/* Entries of the default class without energy keep the v1 form (and so the
 * hashes written before classes existed); the others add both fields under a
 * different header, so no entry can be read in the other form. */
int ledger_entry_canon(const struct ledger_entry *e, char *buf, size_t size)
{
	int v2 = strcmp(e->node_class[0] ? e->node_class : "cpu", "cpu") || e->energy_kwh != 0;
	struct canon c = {buf, buf + size, 0};

	canon_mem(&c, v2 ? "bursar-ledger-entry-v2\n" : "bursar-ledger-entry-v1\n", 23);
	canon_int(&c, "id=", e->id);
	canon_str(&c, "source=", e->source);
	canon_int(&c, "seq=", e->seq);
	canon_str(&c, "job=", e->job);
	canon_str(&c, "tenant=", e->tenant);
	canon_str(&c, "user=", e->user);
	canon_int(&c, "rank=", e->rank);
	canon_str(&c, "kind=", e->kind);
	canon_dbl(&c, "quantity=", e->quantity);
	canon_str(&c, "unit=", e->unit);
	canon_int(&c, "rate_version=", e->rate_version);
	canon_int(&c, "amount_micro=", e->amount_micro);
	canon_int(&c, "start_us=", e->start_us);
	canon_int(&c, "end_us=", e->end_us);
	canon_int(&c, "ts_us=", e->ts_us);
	canon_mem(&c, "prev_hash=", 10);
	canon_mem(&c, e->prev_hash, strlen(e->prev_hash));
	canon_mem(&c, "\n", 1);
	if (v2) {
		canon_str(&c, "node_class=", e->node_class);
		canon_dbl(&c, "energy_kwh=", e->energy_kwh);
	}
	/* keep one byte spare, as snprintf did (callers may NUL-terminate) */
	canon_mem(&c, "", 1);
	if (c.over)
		return -E2BIG;
	c.p[-1] = 0;
	return (int)(c.p - buf - 1);
}

/* util_sha256_hex with the digest fetched once and one context reused: the
 * implicit fetch of EVP_Digest takes a lock and allocates on every entry.
 * Falls back to util_sha256_hex when OpenSSL refuses. */
static void sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	static EVP_MD *md;
	static EVP_MD_CTX *ctx;
	unsigned char d[32];
	unsigned int n = 0;

	if (!md)
		md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!ctx)
		ctx = EVP_MD_CTX_new();
	if (!md || !ctx || !EVP_DigestInit_ex2(ctx, md, NULL) ||
	    !EVP_DigestUpdate(ctx, data, len) || !EVP_DigestFinal_ex(ctx, d, &n) || n != 32) {
		util_sha256_hex(data, len, out);
		return;
	}
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[64] = 0;
}

int ledger_entry_hash(const struct ledger_entry *e, char out[65])
{
	char buf[2048];
	int n = ledger_entry_canon(e, buf, sizeof(buf));

	if (n < 0)
		return n;
	sha256_hex(buf, n, out);
	return 0;
}

/* Copies column i as text into buf; -E2BIG when it does not fit (edited). */
int ledger_col_text(sqlite3_stmt *st, int i, char *buf, size_t size)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	int n = sqlite3_column_bytes(st, i);

	if (!s) {
		buf[0] = 0;
		return 0;
	}
	if ((size_t)n >= size || memchr(s, 0, n))
		return -E2BIG;
	memcpy(buf, s, n);
	buf[n] = 0;
	return 0;
}

/* Reads one row of ENTRY_COLS; -E2BIG when a text field is over its limit. */
static int entry_from_row(sqlite3_stmt *st, struct ledger_entry *e)
{
	int r = 0;

	e->id = sqlite3_column_int64(st, 0);
	r |= ledger_col_text(st, 1, e->source, sizeof(e->source));
	e->seq = sqlite3_column_int64(st, 2);
	r |= ledger_col_text(st, 3, e->job, sizeof(e->job));
	r |= ledger_col_text(st, 4, e->tenant, sizeof(e->tenant));
	r |= ledger_col_text(st, 5, e->user, sizeof(e->user));
	e->rank = sqlite3_column_int64(st, 6);
	r |= ledger_col_text(st, 7, e->kind, sizeof(e->kind));
	e->quantity = sqlite3_column_double(st, 8);
	r |= ledger_col_text(st, 9, e->unit, sizeof(e->unit));
	e->rate_version = sqlite3_column_int64(st, 10);
	e->amount_micro = sqlite3_column_int64(st, 11);
	e->start_us = sqlite3_column_int64(st, 12);
	e->end_us = sqlite3_column_int64(st, 13);
	e->ts_us = sqlite3_column_int64(st, 14);
	r |= ledger_col_text(st, 15, e->prev_hash, sizeof(e->prev_hash));
	r |= ledger_col_text(st, 16, e->hash, sizeof(e->hash));
	r |= ledger_col_text(st, 17, e->node_class, sizeof(e->node_class));
	e->energy_kwh = sqlite3_column_double(st, 18);
	return r ? -E2BIG : 0;
}

static int load_head(struct ledger *l)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db, "SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	l->head_id = 0;
	strcpy(l->head_hash, LEDGER_ZERO_HASH);
	if (rc == SQLITE_ROW) {
		l->head_id = sqlite3_column_int64(st, 0);
		if (ledger_col_text(st, 1, l->head_hash, sizeof(l->head_hash)) < 0)
			r = -EBADMSG;
	} else if (rc != SQLITE_DONE) {
		r = db_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

void ledger_free(struct ledger *l)
{
	if (!l)
		return;
	sqlite3_finalize(l->st_find);
	sqlite3_finalize(l->st_insert);
	sqlite3_finalize(l->st_est_find);
	sqlite3_finalize(l->st_est_insert);
	ledger_agg_free(l->agg);
	db_close(l->db);
	free(l);
}

int ledger_open(const char *path, struct ledger **out)
{
	struct ledger *l = calloc(1, sizeof(*l));
	int r;

	if (!l)
		return -ENOMEM;
	r = db_open(path, 1, &l->db);
	if (r < 0)
		goto out_free;
	/* Index pages of a large ledger stay in memory; fewer, larger checkpoints.
	 * Durability is unchanged: every commit still fsyncs the WAL. */
	r = db_exec(l->db, "PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=8192;");
	if (r < 0)
		goto out_free;
	r = db_migrate(l->db, ledger_migrations, (int)(sizeof(ledger_migrations) /
						       sizeof(ledger_migrations[0])));
	if (r < 0)
		goto out_free;
	r = ledger_agg_new(&l->agg);
	if (r < 0)
		goto out_free;
	r = db_prepare(l->db, "SELECT id FROM entries WHERE source = ? AND seq = ?", &l->st_find);
	if (r < 0)
		goto out_free;
	/* A duplicate (source, seq) inserts nothing: one B-tree probe, not two. */
	r = db_prepare(l->db, "INSERT INTO entries (" ENTRY_COLS ") VALUES"
			      " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
			      " ON CONFLICT(source, seq) DO NOTHING",
		       &l->st_insert);
	if (r < 0)
		goto out_free;
	r = db_prepare(l->db, "SELECT id FROM estimates WHERE source = ? AND seq = ?",
		       &l->st_est_find);
	if (r < 0)
		goto out_free;
	r = db_prepare(l->db,
		       "INSERT INTO estimates (source, seq, job, tenant, user, ranks, seconds,"
		       " amount_micro, explain, ts_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       &l->st_est_insert);
	if (r < 0)
		goto out_free;
	r = load_head(l);
	if (r < 0)
		goto out_free;
	r = ledger_load_rate(l);
	if (r < 0)
		goto out_free;
	r = ledger_load_credit_head(l);
	if (r < 0)
		goto out_free;
	r = ledger_load_hold_head(l);
	if (r < 0)
		goto out_free;
	*out = l;
	return 0;
out_free:
	ledger_free(l);
	return r;
}

int ledger_batch_begin(struct ledger *l)
{
	int r = db_begin(l->db);

	if (r < 0)
		return r;
	l->saved_head_id = l->head_id;
	memcpy(l->saved_head_hash, l->head_hash, sizeof(l->head_hash));
	ledger_agg_reset(l->agg);
	return 0;
}

void ledger_batch_rollback(struct ledger *l)
{
	db_rollback(l->db);
	ledger_agg_reset(l->agg);
	l->head_id = l->saved_head_id;
	memcpy(l->head_hash, l->saved_head_hash, sizeof(l->head_hash));
}

int ledger_batch_commit(struct ledger *l)
{
	int r = ledger_agg_flush(l);

	if (r == 0)
		r = db_commit(l->db);
	if (r < 0)
		ledger_batch_rollback(l);
	return r;
}

/* Looks (source, seq) up with a prepared statement; 1 when present. */
static int exists(sqlite3_stmt *st, const char *source, int64_t seq)
{
	int rc;

	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int ledger_append(struct ledger *l, struct ledger_entry *e, int *dup)
{
	sqlite3_stmt *st = l->st_insert;
	int r, rc;

	if (!e->node_class[0])
		strcpy(e->node_class, "cpu");
	e->id = l->head_id + 1;
	if (!e->ts_us)
		e->ts_us = (int64_t)util_wall_us();
	memcpy(e->prev_hash, l->head_hash, sizeof(e->prev_hash));
	r = ledger_entry_hash(e, e->hash);
	if (r < 0)
		return r;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, e->id);
	sqlite3_bind_text(st, 2, e->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, e->seq);
	sqlite3_bind_text(st, 4, e->job, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, e->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, e->user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, e->rank);
	sqlite3_bind_text(st, 8, e->kind, -1, SQLITE_STATIC);
	sqlite3_bind_double(st, 9, e->quantity);
	sqlite3_bind_text(st, 10, e->unit, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, e->rate_version);
	sqlite3_bind_int64(st, 12, e->amount_micro);
	sqlite3_bind_int64(st, 13, e->start_us);
	sqlite3_bind_int64(st, 14, e->end_us);
	sqlite3_bind_int64(st, 15, e->ts_us);
	sqlite3_bind_text(st, 16, e->prev_hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 17, e->hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 18, e->node_class, -1, SQLITE_STATIC);
	sqlite3_bind_double(st, 19, e->energy_kwh);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return db_errno(rc);
	*dup = sqlite3_changes(l->db) == 0;
	if (*dup)
		return 0;
	r = ledger_agg_add(l, e);
	if (r < 0)
		return r;
	l->head_id = e->id;
	memcpy(l->head_hash, e->hash, sizeof(l->head_hash));
	return 0;
}

int ledger_append_estimate(struct ledger *l, const struct ledger_estimate *e, int *dup)
{
	sqlite3_stmt *st = l->st_est_insert;
	int r, rc;

	r = exists(l->st_est_find, e->source, e->seq);
	if (r < 0)
		return r;
	*dup = r;
	if (r)
		return 0;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, e->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, e->seq);
	sqlite3_bind_text(st, 3, e->job, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, e->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, e->user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, e->ranks);
	sqlite3_bind_double(st, 7, e->seconds);
	sqlite3_bind_int64(st, 8, e->amount_micro);
	sqlite3_bind_text(st, 9, e->explain, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, (int64_t)util_wall_us());
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* Marks v bad at id with a reason; returns 0 so callers can `return ledger_verify_bad(..)`. */
int ledger_verify_bad(struct ledger_verify *v, int64_t id, const char *fmt, ...)
{
	va_list ap;

	v->ok = 0;
	v->first_bad_id = id;
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
	va_end(ap);
	return 0;
}

/* Checks one stored entry against the chain so far (prev_id, prev_hash). */
static int check_entry(struct ledger_verify *v, const struct ledger_entry *e, int64_t prev_id,
		       const char *prev_hash)
{
	char h[65];

	if (e->id != prev_id + 1) {
		if (e->id <= prev_id) /* cannot happen with INTEGER PRIMARY KEY order */
			return ledger_verify_bad(v, e->id, "entry %" PRId64 " is out of order", e->id);
		if (e->id == prev_id + 2)
			return ledger_verify_bad(v, prev_id + 1,
				   "entry %" PRId64 " is missing (entry %" PRId64
				   " follows entry %" PRId64 "): it was deleted",
				   prev_id + 1, e->id, prev_id);
		return ledger_verify_bad(v, prev_id + 1,
			   "entries %" PRId64 "..%" PRId64 " are missing (entry %" PRId64
			   " follows entry %" PRId64 "): they were deleted",
			   prev_id + 1, e->id - 1, e->id, prev_id);
	}
	if (strcmp(e->prev_hash, prev_hash))
		return ledger_verify_bad(v, e->id,
			   "entry %" PRId64 " does not link to entry %" PRId64
			   " (prev_hash %.12s... != %.12s...): entries were deleted, inserted or "
			   "reordered",
			   e->id, prev_id, e->prev_hash, prev_hash);
	if (ledger_entry_hash(e, h) < 0 || strcmp(h, e->hash))
		return ledger_verify_bad(v, e->id,
			   "entry %" PRId64 " was edited: its stored hash %.12s... does not match "
			   "its contents (%.12s...)",
			   e->id, e->hash, h);
	return 1;
}

int ledger_verify(sqlite3 *db, int64_t expect_id, const char *expect_hash,
		  struct ledger_verify *out)
{
	struct ledger_verify v = {.ok = 1};
	struct ledger_entry e;
	char prev[65] = LEDGER_ZERO_HASH;
	int64_t prev_id = 0;
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(db, "SELECT " ENTRY_COLS " FROM entries ORDER BY id", &st);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		v.entries++;
		if (!v.ok)
			continue; /* keep counting */
		if (entry_from_row(st, &e) < 0) {
			ledger_verify_bad(&v, e.id, "entry %" PRId64 " has a field over %d characters: it was edited",
			    e.id, LEDGER_MAX_STR);
			continue;
		}
		if (check_entry(&v, &e, prev_id, prev) <= 0)
			continue;
		prev_id = e.id;
		memcpy(prev, e.hash, sizeof(prev));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_errno(rc);
	if (v.ok && expect_id > prev_id)
		ledger_verify_bad(&v, prev_id + 1,
		    "the chain ends at entry %" PRId64 " but the ledger's head is entry %" PRId64
		    ": entries after %" PRId64 " were deleted",
		    prev_id, expect_id, prev_id);
	else if (v.ok && expect_hash && expect_id < prev_id)
		ledger_verify_bad(&v, expect_id + 1,
		    "entry %" PRId64 " was added behind the ledger's back (the ledger appended up "
		    "to entry %" PRId64 ")",
		    expect_id + 1, expect_id);
	else if (v.ok && expect_hash && expect_id == prev_id && strcmp(expect_hash, prev))
		ledger_verify_bad(&v, prev_id,
		    "entry %" PRId64 " is not the head the ledger appended (hash %.12s... != "
		    "%.12s...): it was replaced",
		    prev_id, prev, expect_hash);
	memcpy(v.head, prev, sizeof(v.head));
	*out = v;
	return 0;
}

json_t *ledger_verify_json(const struct ledger_verify *v)
{
	if (v->ok)
		return json_pack("{s:b, s:I, s:s, s:I, s:s, s:I, s:s}", "ok", 1, "entries",
				 (json_int_t)v->entries, "head", v->head, "credits",
				 (json_int_t)v->credits, "credit_head", v->credit_head, "holds",
				 (json_int_t)v->holds, "hold_head", v->hold_head);
	return json_pack("{s:b, s:I, s:I, s:s, s:I, s:I, s:s}", "ok", 0, "entries",
			 (json_int_t)v->entries, "first_bad_id", (json_int_t)v->first_bad_id,
			 "reason", v->reason, "credits", (json_int_t)v->credits, "holds",
			 (json_int_t)v->holds, "chain",
			 v->bad_credit ? "credits" : v->bad_hold ? "holds" : "entries");
}

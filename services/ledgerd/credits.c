/* credits — the tenants' credits: an append-only hash chain of its own
 * (same rules as the entries: dense ids, each row carrying the SHA-256 of its
 * canonical form and of the previous credit's hash, triggers refusing UPDATE
 * and DELETE). A correction is a new, negative credit. Idempotent by
 * (source, seq). This file never updates or deletes a credit.
 */
#include "ledger.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define CREDIT_COLS "id, source, seq, tenant, amount_micro, note, ts_us, prev_hash, hash"

static int credit_canon(const struct ledger_credit *c, char *buf, size_t size)
{
	int n = snprintf(buf, size,
			 "bursar-ledger-credit-v1\nid=%" PRId64 "\nsource=%zu:%s\nseq=%" PRId64
			 "\ntenant=%zu:%s\namount_micro=%" PRId64 "\nnote=%zu:%s\nts_us=%" PRId64
			 "\nprev_hash=%s\n",
			 c->id, strlen(c->source), c->source, c->seq, strlen(c->tenant), c->tenant,
			 c->amount_micro, strlen(c->note), c->note, c->ts_us, c->prev_hash);

	return n < 0 || (size_t)n >= size ? -E2BIG : n;
}

static int credit_hash(const struct ledger_credit *c, char out[65])
{
	char buf[2048];
	int n = credit_canon(c, buf, sizeof(buf));

	if (n < 0)
		return n;
	util_sha256_hex(buf, n, out);
	return 0;
}

static int credit_from_row(sqlite3_stmt *st, struct ledger_credit *c)
{
	int r = 0;

	c->id = sqlite3_column_int64(st, 0);
	r |= ledger_col_text(st, 1, c->source, sizeof(c->source));
	c->seq = sqlite3_column_int64(st, 2);
	r |= ledger_col_text(st, 3, c->tenant, sizeof(c->tenant));
	c->amount_micro = sqlite3_column_int64(st, 4);
	r |= ledger_col_text(st, 5, c->note, sizeof(c->note));
	c->ts_us = sqlite3_column_int64(st, 6);
	r |= ledger_col_text(st, 7, c->prev_hash, sizeof(c->prev_hash));
	r |= ledger_col_text(st, 8, c->hash, sizeof(c->hash));
	return r ? -E2BIG : 0;
}

int ledger_load_credit_head(struct ledger *l)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db, "SELECT id, hash FROM credits ORDER BY id DESC LIMIT 1", &st);
	if (r < 0)
		return r;
	l->credit_head_id = 0;
	strcpy(l->credit_head_hash, LEDGER_ZERO_HASH);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		l->credit_head_id = sqlite3_column_int64(st, 0);
		if (ledger_col_text(st, 1, l->credit_head_hash, sizeof(l->credit_head_hash)) < 0)
			r = -EBADMSG;
	} else if (rc != SQLITE_DONE) {
		r = db_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* The stored credit (source, seq) into *c; -ENOENT when there is none. */
static int find_credit(struct ledger *l, const char *source, int64_t seq,
		       struct ledger_credit *c)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db, "SELECT " CREDIT_COLS " FROM credits WHERE source = ? AND seq = ?",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = credit_from_row(st, c) < 0 ? -EBADMSG : 0;
	else
		r = rc == SQLITE_DONE ? -ENOENT : db_errno(rc);
	sqlite3_finalize(st);
	return r;
}

/* Appends c (id, ts_us, hashes set here) and adds it to the tenant's totals,
 * inside the caller's transaction. */
static int append_credit(struct ledger *l, struct ledger_credit *c)
{
	sqlite3_stmt *st;
	int64_t total = 0;
	int r, rc;

	r = db_prepare(l->db, "SELECT credits_micro FROM tenant_totals WHERE tenant = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, c->tenant, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		total = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (total + c->amount_micro > LEDGER_MAX_TOTAL_MICRO ||
	    total + c->amount_micro < -LEDGER_MAX_TOTAL_MICRO)
		return -EOVERFLOW;
	c->id = l->credit_head_id + 1;
	c->ts_us = (int64_t)util_wall_us();
	memcpy(c->prev_hash, l->credit_head_hash, sizeof(c->prev_hash));
	r = credit_hash(c, c->hash);
	if (r < 0)
		return r;
	r = db_prepare(l->db, "INSERT INTO credits (" CREDIT_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, c->id);
	sqlite3_bind_text(st, 2, c->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, c->seq);
	sqlite3_bind_text(st, 4, c->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, c->amount_micro);
	sqlite3_bind_text(st, 6, c->note, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, c->ts_us);
	sqlite3_bind_text(st, 8, c->prev_hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, c->hash, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_errno(rc);
	r = db_prepare(l->db,
		       "INSERT INTO tenant_totals (tenant, credits, credits_micro) VALUES (?, 1, ?)"
		       " ON CONFLICT(tenant) DO UPDATE SET credits = credits + 1,"
		       " credits_micro = credits_micro + excluded.credits_micro",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, c->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, c->amount_micro);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* Strict parse of {"source", "seq", "tenant", "amount_micro", "note"?}. */
static int parse_credit(json_t *req, struct ledger_credit *c, char *why, size_t n)
{
	static const char *const keys[] = {"source", "seq", "tenant", "amount_micro", "note"};
	const char *key, *s;
	json_t *v;

	memset(c, 0, sizeof(*c));
	json_object_foreach(req, key, v) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(keys) && strcmp(key, keys[i]); i++)
			;
		if (i == ARRAY_SIZE(keys))
			return util_fail(why, n, -EINVAL, "unknown field '%.64s' (expected source, "
					 "seq, tenant, amount_micro, note)", key);
	}
	s = json_string_value(json_object_get(req, "source"));
	if (!s || !util_valid_name(s, LEDGER_MAX_STR))
		return util_fail(why, n, -EINVAL, "field 'source' must be 1..%d characters of "
				 "[A-Za-z0-9_.-]", LEDGER_MAX_STR);
	strcpy(c->source, s);
	v = json_object_get(req, "seq");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return util_fail(why, n, -EINVAL, "field 'seq' must be an integer >= 1");
	c->seq = json_integer_value(v);
	s = json_string_value(json_object_get(req, "tenant"));
	if (!s || !util_valid_name(s, LEDGER_MAX_STR))
		return util_fail(why, n, -EINVAL, "field 'tenant' must be 1..%d characters of "
				 "[A-Za-z0-9_.-]", LEDGER_MAX_STR);
	strcpy(c->tenant, s);
	v = json_object_get(req, "amount_micro");
	if (!json_is_integer(v))
		return util_fail(why, n, -EINVAL, "field 'amount_micro' must be an integer "
				 "(millionths of a dollar)");
	c->amount_micro = json_integer_value(v);
	if (c->amount_micro == 0 || c->amount_micro > LEDGER_MAX_MICRO ||
	    c->amount_micro < -LEDGER_MAX_MICRO)
		return util_fail(why, n, -EINVAL, "field 'amount_micro' is out of range (%lld: "
				 "not 0, within +-%lld)", (long long)c->amount_micro,
				 (long long)LEDGER_MAX_MICRO);
	v = json_object_get(req, "note");
	if (v && !json_is_null(v)) {
		s = json_string_value(v);
		if (!s || strlen(s) > LEDGER_MAX_NOTE)
			return util_fail(why, n, -EINVAL, "field 'note' must be a string of at most "
					 "%d bytes", LEDGER_MAX_NOTE);
		for (const unsigned char *p = (const unsigned char *)s; *p; p++)
			if (*p < 0x20 || *p == 0x7f)
				return util_fail(why, n, -EINVAL, "field 'note' contains a control "
						 "character (0x%02x)", *p);
		strcpy(c->note, s);
	}
	return 0;
}

int ledger_credit(struct ledger *l, json_t *req, struct ledger_credit *c, int *dup, char *why,
		  size_t n)
{
	struct ledger_credit old;
	int r;

	r = parse_credit(req, c, why, n);
	if (r < 0)
		return r;
	r = db_begin(l->db);
	if (r < 0)
		return r;
	r = find_credit(l, c->source, c->seq, &old);
	if (r == 0) {
		db_rollback(l->db);
		if (strcmp(old.tenant, c->tenant) || old.amount_micro != c->amount_micro)
			return util_fail(why, n, -EEXIST, "credit (%s, %lld) is already recorded "
					 "for tenant %s, amount_micro %lld; a correction is a new "
					 "credit with its own seq", old.source, (long long)old.seq,
					 old.tenant, (long long)old.amount_micro);
		*c = old;
		*dup = 1;
		return 0;
	}
	if (r != -ENOENT)
		goto out_rollback;
	r = append_credit(l, c);
	if (r == -EOVERFLOW) {
		util_fail(why, n, -EINVAL, "the credits of tenant %s would exceed +-%lld micro-dollars",
			  c->tenant, (long long)LEDGER_MAX_TOTAL_MICRO);
		r = -EINVAL;
	}
	if (r < 0)
		goto out_rollback;
	r = db_commit(l->db);
	if (r < 0)
		return r;
	l->credit_head_id = c->id;
	memcpy(l->credit_head_hash, c->hash, sizeof(l->credit_head_hash));
	*dup = 0;
	return 0;
out_rollback:
	db_rollback(l->db);
	return r;
}

/* Checks one stored credit against the chain so far; 1 when it holds. */
static int check_credit(struct ledger_verify *v, const struct ledger_credit *c, int64_t prev_id,
			const char *prev_hash)
{
	char h[65];

	v->bad_credit = 1;
	if (c->id != prev_id + 1)
		return ledger_verify_bad(v, prev_id + 1, "credit %" PRId64 " is missing (credit %"
					 PRId64 " follows credit %" PRId64 "): it was deleted",
					 prev_id + 1, c->id, prev_id);
	if (strcmp(c->prev_hash, prev_hash))
		return ledger_verify_bad(v, c->id, "credit %" PRId64 " does not link to credit %"
					 PRId64 ": credits were deleted, inserted or reordered",
					 c->id, prev_id);
	if (credit_hash(c, h) < 0 || strcmp(h, c->hash))
		return ledger_verify_bad(v, c->id, "credit %" PRId64 " was edited: its stored hash "
					 "%.12s... does not match its contents (%.12s...)",
					 c->id, c->hash, h);
	v->bad_credit = 0;
	return 1;
}

int ledger_verify_credits(sqlite3 *db, int64_t expect_id, const char *expect_hash,
			  struct ledger_verify *v)
{
	char prev[65] = LEDGER_ZERO_HASH;
	struct ledger_credit c;
	int64_t prev_id = 0;
	int was_ok = v->ok;
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(db, "SELECT " CREDIT_COLS " FROM credits ORDER BY id", &st);
	if (r < 0)
		return r;
	v->credits = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		v->credits++;
		if (!v->ok)
			continue;
		if (credit_from_row(st, &c) < 0) {
			v->bad_credit = 1;
			ledger_verify_bad(v, c.id, "credit %" PRId64 " has an over-long field: it "
					  "was edited", c.id);
			continue;
		}
		if (check_credit(v, &c, prev_id, prev) <= 0)
			continue;
		prev_id = c.id;
		memcpy(prev, c.hash, sizeof(prev));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_errno(rc);
	if (v->ok && expect_hash && expect_id != prev_id) {
		v->bad_credit = 1;
		ledger_verify_bad(v, (expect_id < prev_id ? expect_id : prev_id) + 1,
				  "the credits chain ends at credit %" PRId64 " but the ledger "
				  "appended up to credit %" PRId64 ": credits were deleted or added "
				  "behind its back", prev_id, expect_id);
	} else if (v->ok && expect_hash && strcmp(expect_hash, prev)) {
		v->bad_credit = 1;
		ledger_verify_bad(v, prev_id, "credit %" PRId64 " is not the head the ledger "
				  "appended: it was replaced", prev_id);
	}
	if (!was_ok)
		v->bad_credit = 0;
	memcpy(v->credit_head, prev, sizeof(v->credit_head));
	return 0;
}

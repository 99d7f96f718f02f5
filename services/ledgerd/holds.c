/* holds — the hold events chain: every open, extend and release of a job's
 * hold is appended to hold_events, hash-chained like credits, in the same
 * transaction that changes the holds row. The holds table is the state the
 * balance reads; verify walks the events chain and checks that replaying it
 * gives exactly the holds table, so an edited, deleted or forged hold (which
 * would free or block budget) is named. Holds written before the chain
 * existed get their events when the ledger is opened.
 */
#include "ledger.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define HOLD_COLS "id, job, tenant, user, op, amount_micro, ts_us, prev_hash, hash"

struct hold_event {
	int64_t id;
	char job[LEDGER_MAX_STR + 1], tenant[LEDGER_MAX_STR + 1], user[LEDGER_MAX_STR + 1];
	char op[16];
	int64_t amount_micro, ts_us;
	char prev_hash[65], hash[65];
};

static int hold_hash(const struct hold_event *e, char out[65])
{
	char buf[1024];
	int n = snprintf(buf, sizeof(buf),
			 "bursar-ledger-hold-v1\nid=%" PRId64 "\njob=%zu:%s\ntenant=%zu:%s\n"
			 "user=%zu:%s\nop=%zu:%s\namount_micro=%" PRId64 "\nts_us=%" PRId64
			 "\nprev_hash=%s\n",
			 e->id, strlen(e->job), e->job, strlen(e->tenant), e->tenant,
			 strlen(e->user), e->user, strlen(e->op), e->op, e->amount_micro, e->ts_us,
			 e->prev_hash);

	if (n < 0 || (size_t)n >= sizeof(buf))
		return -E2BIG;
	util_sha256_hex(buf, n, out);
	return 0;
}

int ledger_hold_append(struct ledger *l, const char *job, const char *tenant, const char *user,
		       const char *op, int64_t amount_micro)
{
	struct hold_event e = {.id = l->hold_head_id + 1, .amount_micro = amount_micro,
			       .ts_us = (int64_t)util_wall_us()};
	sqlite3_stmt *st;
	int r, rc;

	if (strlen(job) > LEDGER_MAX_STR || strlen(tenant) > LEDGER_MAX_STR ||
	    strlen(user) > LEDGER_MAX_STR || strlen(op) >= sizeof(e.op))
		return -E2BIG;
	strcpy(e.job, job);
	strcpy(e.tenant, tenant);
	strcpy(e.user, user);
	strcpy(e.op, op);
	memcpy(e.prev_hash, l->hold_head_hash, sizeof(e.prev_hash));
	r = hold_hash(&e, e.hash);
	if (r < 0)
		return r;
	r = db_prepare(l->db, "INSERT INTO hold_events (" HOLD_COLS ") VALUES"
			      " (?, ?, ?, ?, ?, ?, ?, ?, ?)", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, e.id);
	sqlite3_bind_text(st, 2, e.job, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, e.tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, e.user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, e.op, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, e.amount_micro);
	sqlite3_bind_int64(st, 7, e.ts_us);
	sqlite3_bind_text(st, 8, e.prev_hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, e.hash, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_errno(rc);
	/* the head moves only when the caller commits (ledger_hold_commit) */
	l->hold_pend_id = e.id;
	memcpy(l->hold_pend_hash, e.hash, sizeof(l->hold_pend_hash));
	return 0;
}

void ledger_hold_commit(struct ledger *l)
{
	if (l->hold_pend_id > l->hold_head_id) {
		l->hold_head_id = l->hold_pend_id;
		memcpy(l->hold_head_hash, l->hold_pend_hash, sizeof(l->hold_head_hash));
	}
}

/* Appends open (+ release) events for holds that have none (written before
 * the chain existed), in one transaction. */
static int backfill(struct ledger *l)
{
	sqlite3_stmt *st;
	int r, rc, any = 0;

	r = db_begin(l->db);
	if (r < 0)
		return r;
	r = db_prepare(l->db, "SELECT job, tenant, user, reserved_micro, state FROM holds h"
			      " WHERE NOT EXISTS (SELECT 1 FROM hold_events e WHERE e.job = h.job)"
			      " ORDER BY created_us, job", &st);
	if (r < 0)
		goto out_rollback;
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *job = (const char *)sqlite3_column_text(st, 0);
		const char *tenant = (const char *)sqlite3_column_text(st, 1);
		const char *user = (const char *)sqlite3_column_text(st, 2);
		const char *state = (const char *)sqlite3_column_text(st, 4);

		any = 1;
		r = ledger_hold_append(l, job ? job : "", tenant ? tenant : "", user ? user : "",
				       "open", sqlite3_column_int64(st, 3));
		if (r == 0)
			ledger_hold_commit(l); /* the next event links to this one */
		if (r == 0 && state && !strcmp(state, "released")) {
			r = ledger_hold_append(l, job, tenant, user, "release", 0);
			if (r == 0)
				ledger_hold_commit(l);
		}
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_errno(rc);
	sqlite3_finalize(st);
	if (r < 0 || !any)
		goto out_rollback;
	r = db_commit(l->db);
	if (r < 0)
		return r;
	return 0;
out_rollback:
	db_rollback(l->db);
	return r;
}

int ledger_load_hold_head(struct ledger *l)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db, "SELECT id, hash FROM hold_events ORDER BY id DESC LIMIT 1", &st);
	if (r < 0)
		return r;
	l->hold_head_id = 0;
	strcpy(l->hold_head_hash, LEDGER_ZERO_HASH);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		l->hold_head_id = sqlite3_column_int64(st, 0);
		if (ledger_col_text(st, 1, l->hold_head_hash, sizeof(l->hold_head_hash)) < 0)
			r = -EBADMSG;
	} else if (rc != SQLITE_DONE) {
		r = db_errno(rc);
	}
	sqlite3_finalize(st);
	if (r < 0)
		return r;
	l->hold_pend_id = l->hold_head_id;
	r = backfill(l);
	if (r < 0) { /* reload what is stored */
		l->hold_pend_id = 0;
		return r;
	}
	return 0;
}

static int event_from_row(sqlite3_stmt *st, struct hold_event *e)
{
	int r = 0;

	e->id = sqlite3_column_int64(st, 0);
	r |= ledger_col_text(st, 1, e->job, sizeof(e->job));
	r |= ledger_col_text(st, 2, e->tenant, sizeof(e->tenant));
	r |= ledger_col_text(st, 3, e->user, sizeof(e->user));
	r |= ledger_col_text(st, 4, e->op, sizeof(e->op));
	e->amount_micro = sqlite3_column_int64(st, 5);
	e->ts_us = sqlite3_column_int64(st, 6);
	r |= ledger_col_text(st, 7, e->prev_hash, sizeof(e->prev_hash));
	r |= ledger_col_text(st, 8, e->hash, sizeof(e->hash));
	return r ? -E2BIG : 0;
}

/* Marks v bad at a hold event (or a hold, id 0 then names the job). */
#define hold_bad(v, id, ...) ((v)->bad_hold = 1, ledger_verify_bad(v, id, __VA_ARGS__))

/* The first job whose holds row differs from the replay of its events. */
static int replay_check(sqlite3 *db, struct ledger_verify *v)
{
	static const char sql[] =
		"WITH ev AS (SELECT job, min(CASE WHEN op = 'open' THEN tenant END) AS tenant,"
		"  min(CASE WHEN op = 'open' THEN user END) AS user,"
		"  sum(CASE WHEN op = 'release' THEN 0 ELSE amount_micro END) AS reserved,"
		"  CASE WHEN max(op = 'release') THEN 'released' ELSE 'open' END AS state"
		"  FROM hold_events GROUP BY job),"
		" h AS (SELECT job, tenant, user, reserved_micro AS reserved, state FROM holds)"
		" SELECT job FROM (SELECT * FROM h EXCEPT SELECT * FROM ev)"
		" UNION SELECT job FROM (SELECT * FROM ev EXCEPT SELECT * FROM h)"
		" ORDER BY 1 LIMIT 1";
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		char job[LEDGER_MAX_STR + 1] = "?";

		ledger_col_text(st, 0, job, sizeof(job));
		hold_bad(v, 0, "the hold of job %s does not match its hold events: it was "
			 "edited, deleted or added behind the ledger's back", job);
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int ledger_verify_holds(sqlite3 *db, int64_t expect_id, const char *expect_hash,
			struct ledger_verify *v)
{
	char prev[65] = LEDGER_ZERO_HASH, h[65];
	struct hold_event e;
	int64_t prev_id = 0;
	int was_ok = v->ok;
	sqlite3_stmt *st;
	int r, rc;

	v->holds = 0;
	memcpy(v->hold_head, prev, sizeof(v->hold_head));
	/* a ledger no daemon of this version has opened yet: no chain to walk */
	r = db_prepare(db, "SELECT 1 FROM sqlite_master WHERE name = 'hold_events'", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE) {
		if (v->ok && expect_hash && expect_id > 0)
			hold_bad(v, 1, "the hold events table is gone (the ledger appended %" PRId64
				 " hold events): it was dropped", expect_id);
		return 0;
	}
	if (rc != SQLITE_ROW)
		return db_errno(rc);
	r = db_prepare(db, "SELECT " HOLD_COLS " FROM hold_events ORDER BY id", &st);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		v->holds++;
		if (!v->ok)
			continue;
		if (event_from_row(st, &e) < 0) {
			hold_bad(v, e.id, "hold event %" PRId64 " has an over-long field: it was "
				 "edited", e.id);
		} else if (e.id != prev_id + 1) {
			hold_bad(v, prev_id + 1, "hold event %" PRId64 " is missing (hold event %"
				 PRId64 " follows %" PRId64 "): it was deleted", prev_id + 1, e.id,
				 prev_id);
		} else if (strcmp(e.prev_hash, prev)) {
			hold_bad(v, e.id, "hold event %" PRId64 " does not link to hold event %"
				 PRId64 ": hold events were deleted, inserted or reordered", e.id,
				 prev_id);
		} else if (hold_hash(&e, h) < 0 || strcmp(h, e.hash)) {
			hold_bad(v, e.id, "hold event %" PRId64 " (job %s) was edited: its stored "
				 "hash does not match its contents", e.id, e.job);
		} else {
			prev_id = e.id;
			memcpy(prev, e.hash, sizeof(prev));
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_errno(rc);
	if (v->ok && expect_hash && expect_id != prev_id)
		hold_bad(v, (expect_id < prev_id ? expect_id : prev_id) + 1,
			 "the hold events chain ends at %" PRId64 " but the ledger appended up to %"
			 PRId64 ": hold events were deleted or added behind its back", prev_id,
			 expect_id);
	else if (v->ok && expect_hash && strcmp(expect_hash, prev))
		hold_bad(v, prev_id, "hold event %" PRId64 " is not the head the ledger "
			 "appended: it was replaced", prev_id);
	if (v->ok) {
		r = replay_check(db, v);
		if (r < 0)
			return r;
	}
	if (!was_ok)
		v->bad_hold = 0;
	memcpy(v->hold_head, prev, sizeof(v->hold_head));
	return 0;
}

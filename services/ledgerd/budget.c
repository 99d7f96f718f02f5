/* budget — tenants' balances and jobs' holds (two-phase budgets).
 *
 * A tenant with no credit entries has no limit. Otherwise
 *   available = credits - metered spend - sum over open holds of
 *               max(0, reserved - metered spend of the job),
 * read from the running totals (tenant_totals, job_totals) that the ingest
 * transaction keeps, so a balance costs a few index look-ups. A hold is
 * checked and written in one BEGIN IMMEDIATE transaction on the daemon's one
 * connection, so concurrent holds can never overspend. Holds are state, not
 * money: what is owed is always the entries. Every change of a hold also
 * appends a hold event (holds.c), so verify catches an edited hold.
 */
#include "ledger.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ledger_fmt_money(int64_t micro, char *buf, size_t size)
{
	uint64_t a = micro < 0 ? -(uint64_t)micro : (uint64_t)micro;
	char frac[8];
	int len;

	snprintf(frac, sizeof(frac), "%06llu", (unsigned long long)(a % 1000000));
	/* cents always; more digits only where they are not zero */
	for (len = 6; len > 2 && frac[len - 1] == '0'; len--)
		;
	frac[len] = 0;
	snprintf(buf, size, "%s$%llu.%s", micro < 0 ? "-" : "", (unsigned long long)(a / 1000000),
		 frac);
}

int ledger_balance(struct ledger *l, const char *tenant, struct ledger_balance *b)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT coalesce(t.credits, 0), coalesce(t.credits_micro, 0),"
		       " coalesce(t.spent_micro, 0),"
		       " (SELECT coalesce(sum(max(0, h.reserved_micro - coalesce(j.spent_micro, 0))), 0)"
		       "  FROM holds h LEFT JOIN job_totals j ON j.job = h.job"
		       "  WHERE h.tenant = ?1 AND h.state = 'open')"
		       " FROM (SELECT ?1 AS tn) LEFT JOIN tenant_totals t ON t.tenant = tn",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		b->limited = sqlite3_column_int64(st, 0) > 0;
		b->credits_micro = sqlite3_column_int64(st, 1);
		b->spent_micro = sqlite3_column_int64(st, 2);
		b->reserved_micro = sqlite3_column_int64(st, 3);
		b->available_micro = b->credits_micro - b->spent_micro - b->reserved_micro;
	} else {
		r = db_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

json_t *ledger_balance_json(const char *tenant, const struct ledger_balance *b)
{
	return json_pack("{s:s, s:b, s:I, s:I, s:I, s:o, s:o, s:s}", "tenant", tenant, "limited",
			 b->limited, "credits_micro", (json_int_t)b->credits_micro, "spent_micro",
			 (json_int_t)b->spent_micro, "reserved_micro",
			 (json_int_t)b->reserved_micro, "available_micro",
			 b->limited ? json_integer(b->available_micro) : json_null(), "available",
			 b->limited ? json_real((double)b->available_micro / 1e6) : json_null(),
			 "currency", "USD");
}

/* The hold of job as JSON (with its metered spend); -ENOENT when none. */
static int hold_json(struct ledger *l, const char *job, json_t **out, char *tenant,
		     size_t tenant_size)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(l->db,
		       "SELECT h.tenant, h.user, h.reserved_micro, coalesce(j.spent_micro, 0),"
		       " h.state, h.created_us, h.updated_us FROM holds h"
		       " LEFT JOIN job_totals j ON j.job = h.job WHERE h.job = ?",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);

		*out = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I}", "job", job, "tenant",
				 t ? t : "", "user", (const char *)sqlite3_column_text(st, 1),
				 "reserved_micro", (json_int_t)sqlite3_column_int64(st, 2),
				 "spent_micro", (json_int_t)sqlite3_column_int64(st, 3), "state",
				 (const char *)sqlite3_column_text(st, 4), "created_us",
				 (json_int_t)sqlite3_column_int64(st, 5), "updated_us",
				 (json_int_t)sqlite3_column_int64(st, 6));
		if (tenant)
			snprintf(tenant, tenant_size, "%s", t ? t : "");
		r = *out ? 0 : -ENOMEM;
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : db_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int ledger_hold_get(struct ledger *l, const char *job, json_t **hold)
{
	return hold_json(l, job, hold, NULL, 0);
}

/* amount_micro of req in 0..LEDGER_MAX_MICRO; only the keys named in allowed. */
static int parse_amount(json_t *req, const char *const *allowed, size_t n_allowed,
			int64_t *amount, char *why, size_t n)
{
	const char *key;
	json_t *v;

	json_object_foreach(req, key, v) {
		size_t i;

		for (i = 0; i < n_allowed && strcmp(key, allowed[i]); i++)
			;
		if (i == n_allowed)
			return util_fail(why, n, -EINVAL, "unknown field '%.64s'", key);
	}
	v = json_object_get(req, "amount_micro");
	if (!json_is_integer(v))
		return util_fail(why, n, -EINVAL, "field 'amount_micro' must be an integer "
				 "(millionths of a dollar)");
	*amount = json_integer_value(v);
	if (*amount < 0 || *amount > LEDGER_MAX_MICRO)
		return util_fail(why, n, -EINVAL, "field 'amount_micro' is out of range (%lld not "
				 "in 0..%lld)", (long long)*amount, (long long)LEDGER_MAX_MICRO);
	return 0;
}

static int get_name(json_t *req, const char *key, char *buf, char *why, size_t n)
{
	const char *s = json_string_value(json_object_get(req, key));

	if (!s || !util_valid_name(s, LEDGER_MAX_STR))
		return util_fail(why, n, -EINVAL, "field '%s' must be 1..%d characters of "
				 "[A-Za-z0-9_.-]", key, LEDGER_MAX_STR);
	strcpy(buf, s);
	return 0;
}

/* -EDQUOT with the sentence when b cannot cover amount. */
static int afford(const char *tenant, const char *job, const struct ledger_balance *b,
		  int64_t amount, int more, char *why, size_t n)
{
	char have[48], need[48];

	if (!b->limited || b->available_micro >= amount)
		return 0;
	ledger_fmt_money(b->available_micro, have, sizeof(have));
	ledger_fmt_money(amount, need, sizeof(need));
	if (more)
		return util_fail(why, n, -EDQUOT, "tenant %s has %s available, job %s needs %s more",
				 tenant, have, job, need);
	return util_fail(why, n, -EDQUOT, "tenant %s has %s available, job needs %s", tenant, have,
			 need);
}

/* Finishes a hold call: commits and fills the hold and balance replies. */
static int hold_reply(struct ledger *l, const char *job, json_t **hold, json_t **balance)
{
	struct ledger_balance b;
	char tenant[LEDGER_MAX_STR + 1];
	int r;

	r = hold_json(l, job, hold, tenant, sizeof(tenant));
	if (r < 0)
		return r;
	r = ledger_balance(l, tenant, &b);
	if (r < 0) {
		json_decref(*hold);
		return r;
	}
	*balance = ledger_balance_json(tenant, &b);
	return 0;
}

int ledger_hold(struct ledger *l, json_t *req, json_t **hold, json_t **balance, char *why,
		size_t n)
{
	static const char *const keys[] = {"job", "tenant", "user", "amount_micro"};
	char job[LEDGER_MAX_STR + 1], tenant[LEDGER_MAX_STR + 1], user[LEDGER_MAX_STR + 1];
	char held_by[LEDGER_MAX_STR + 1];
	struct ledger_balance b;
	int64_t amount, now = (int64_t)util_wall_us();
	sqlite3_stmt *st;
	json_t *old;
	int r, rc;

	if ((r = parse_amount(req, keys, ARRAY_SIZE(keys), &amount, why, n)) < 0 ||
	    (r = get_name(req, "job", job, why, n)) < 0 ||
	    (r = get_name(req, "tenant", tenant, why, n)) < 0 ||
	    (r = get_name(req, "user", user, why, n)) < 0)
		return r;
	r = db_begin(l->db);
	if (r < 0)
		return r;
	r = hold_json(l, job, &old, held_by, sizeof(held_by));
	if (r == 0) { /* idempotent by job */
		json_decref(old);
		if (strcmp(held_by, tenant)) {
			r = util_fail(why, n, -EEXIST, "job %s is already held for another tenant",
				      job);
			goto out_rollback;
		}
		r = hold_reply(l, job, hold, balance);
		goto out_rollback; /* nothing was written */
	}
	if (r != -ENOENT)
		goto out_rollback;
	r = ledger_balance(l, tenant, &b);
	if (r < 0)
		goto out_rollback;
	r = afford(tenant, job, &b, amount, 0, why, n);
	if (r < 0)
		goto out_rollback;
	r = db_prepare(l->db,
		       "INSERT INTO holds (job, tenant, user, reserved_micro, state, created_us,"
		       " updated_us) VALUES (?, ?, ?, ?, 'open', ?, ?)",
		       &st);
	if (r < 0)
		goto out_rollback;
	sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, amount);
	sqlite3_bind_int64(st, 5, now);
	sqlite3_bind_int64(st, 6, now);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = db_errno(rc);
		goto out_rollback;
	}
	r = ledger_hold_append(l, job, tenant, user, "open", amount);
	if (r < 0)
		goto out_rollback;
	r = db_commit(l->db);
	if (r < 0)
		return r;
	ledger_hold_commit(l);
	return hold_reply(l, job, hold, balance);
out_rollback:
	db_rollback(l->db);
	return r;
}

/* Updates the open hold of job: adds `add` to it, or closes it when release. */
static int hold_update(struct ledger *l, const char *job, int release, int64_t add, json_t **hold,
		       json_t **balance, char *why, size_t n)
{
	char tenant[LEDGER_MAX_STR + 1], user[LEDGER_MAX_STR + 1];
	struct ledger_balance b;
	sqlite3_stmt *st;
	json_t *old;
	const char *state;
	int open, r, rc;

	r = db_begin(l->db);
	if (r < 0)
		return r;
	r = hold_json(l, job, &old, tenant, sizeof(tenant));
	if (r == -ENOENT)
		util_fail(why, n, r, "job %s has no hold", job);
	if (r < 0)
		goto out_rollback;
	state = json_string_value(json_object_get(old, "state"));
	open = state && !strcmp(state, "open");
	snprintf(user, sizeof(user), "%s", json_string_value(json_object_get(old, "user")) ?: "");
	json_decref(old);
	if (!open && !release) {
		r = util_fail(why, n, -ESTALE, "the hold of job %s is released; it cannot be "
			      "extended", job);
		goto out_rollback;
	}
	if (!open) /* released twice: idempotent */
		goto out_reply;
	if (!release) {
		r = ledger_balance(l, tenant, &b);
		if (r < 0)
			goto out_rollback;
		r = afford(tenant, job, &b, add, 1, why, n);
		if (r < 0)
			goto out_rollback;
	}
	r = db_prepare(l->db,
		       release ? "UPDATE holds SET state = 'released', updated_us = ?2 WHERE job = ?1"
			       : "UPDATE holds SET reserved_micro = reserved_micro + ?3,"
				 " updated_us = ?2 WHERE job = ?1 AND reserved_micro + ?3 <= ?4",
		       &st);
	if (r < 0)
		goto out_rollback;
	sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)util_wall_us());
	if (!release) {
		sqlite3_bind_int64(st, 3, add);
		sqlite3_bind_int64(st, 4, LEDGER_MAX_TOTAL_MICRO);
	}
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = db_errno(rc);
		goto out_rollback;
	}
	if (sqlite3_changes(l->db) != 1) {
		r = util_fail(why, n, -EINVAL, "the hold of job %s would exceed %lld micro-dollars",
			      job, (long long)LEDGER_MAX_TOTAL_MICRO);
		goto out_rollback;
	}
	r = ledger_hold_append(l, job, tenant, user, release ? "release" : "extend",
			       release ? 0 : add);
	if (r < 0)
		goto out_rollback;
	r = db_commit(l->db);
	if (r < 0)
		return r;
	ledger_hold_commit(l);
	return hold_reply(l, job, hold, balance);
out_reply:
	r = hold_reply(l, job, hold, balance);
out_rollback:
	db_rollback(l->db);
	return r;
}

int ledger_hold_release(struct ledger *l, const char *job, json_t **hold, json_t **balance,
			char *why, size_t n)
{
	return hold_update(l, job, 1, 0, hold, balance, why, n);
}

int ledger_hold_extend(struct ledger *l, const char *job, json_t *req, json_t **hold,
		       json_t **balance, char *why, size_t n)
{
	static const char *const keys[] = {"amount_micro"};
	int64_t add;
	int r = parse_amount(req, keys, ARRAY_SIZE(keys), &add, why, n);

	if (r < 0)
		return r;
	return hold_update(l, job, 0, add, hold, balance, why, n);
}

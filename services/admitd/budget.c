/* budget — admitd's side of the ledger's two-phase budgets (services/README.md,
 * "budgets"): a hold of the predicted cost before a job is placed, its release
 * once the job has ended, and on overrun an extension when the tenant can
 * afford it; when it cannot, the job is checkpointed (the preemption path)
 * and paused until the budget covers the rest of it (--overrun pause, the
 * default) or ended (--overrun stop), with the reason. A job that cannot
 * checkpoint yet is stopped at once. Never an overspend in silence.
 *
 * Holds are idempotent by job in ledgerd, so a crash between taking a hold and
 * committing the placement only makes the next pass find the same hold again:
 * a job is never held twice. The hold state is kept on the job row
 * (hold_state NULL | 'held' | 'released'); releases are retried every tick
 * until ledgerd acknowledges them. Without a reachable ledgerd nothing starts
 * (no hold, no start); a ledgerd that predates budgets ("no such endpoint")
 * counts as one without limits.
 */
#include "admitd.h"
#include "db.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define BUDGET_TIMEOUT_MS 2000
#define BUDGET_RELEASE_BATCH 32   /* releases per tick */
#define BUDGET_CHECK_BATCH 64     /* running jobs checked for overrun per tick */
#define BUDGET_CHECK_US (2 * 1000000ull)
#define BUDGET_MIN_EXTEND 1000    /* micro-dollars: the smallest extension asked for */

static int no_endpoint(long status, json_t *resp)
{
	const char *e = json_string_value(json_object_get(resp, "error"));

	return status == 404 && e && !strncmp(e, "no such endpoint", 16);
}

int budget_hold(struct admitd *a, const char *id, const char *tenant, const char *user,
		int64_t amount_micro, char *err, size_t errlen)
{
	json_t *body, *resp = NULL;
	long status = 0;
	int r;

	if (!a->ledgerd)
		return 0; /* no ledger configured: budgets are not enforced */
	body = json_pack("{s:s, s:s, s:s, s:I}", "job", id, "tenant", tenant, "user", user,
			 "amount_micro", (json_int_t)amount_micro);
	r = hclient_json(a->ledgerd, "POST", "/v1/holds", NULL, body, BUDGET_TIMEOUT_MS, &status,
			 &resp);
	json_decref(body);
	if (r < 0) {
		r = util_fail(err, errlen, -EAGAIN, "cannot reserve its cost: ledgerd is unreachable "
			      "(%s), and no job starts without a hold", hclient_strerror(r));
		goto out;
	}
	if (status == 200) {
		r = store_run(a->db, "UPDATE jobs SET hold_state = 'held', hold_micro = ? WHERE id = ?",
			      "is", (int64_t)amount_micro, id);
	} else if (no_endpoint(status, resp)) {
		if (!a->budgets_absent)
			log_warn("ledgerd %s has no /v1/holds: budgets are not enforced", a->ledgerd);
		a->budgets_absent = 1;
		r = 0;
	} else if (status == 409) {
		const char *e = json_string_value(json_object_get(resp, "error"));

		r = util_fail(err, errlen, -EDQUOT, "%s", e ? e : "the tenant's budget is exhausted");
	} else {
		r = util_fail(err, errlen, -EAGAIN, "cannot reserve its cost: ledgerd answered %ld",
			      status);
	}
out:
	json_decref(resp);
	return r;
}

/* Releases the holds of ended jobs; a failure is retried on the next tick. */
static void release_ended(struct admitd *a)
{
	char ids[BUDGET_RELEASE_BATCH][ADMIT_MAX_STR + 1], path[ADMIT_MAX_STR + 32];
	sqlite3_stmt *st;
	int n = 0;

	if (store_prep(a->db, "SELECT id FROM jobs WHERE hold_state = 'held' AND state IN"
		       " ('succeeded', 'failed', 'cancelled') LIMIT ?", "i", &st,
		       (int64_t)BUDGET_RELEASE_BATCH) < 0)
		return;
	while (n < BUDGET_RELEASE_BATCH && sqlite3_step(st) == SQLITE_ROW)
		snprintf(ids[n++], sizeof(ids[0]), "%s", (const char *)sqlite3_column_text(st, 0));
	store_done(st);
	for (int i = 0; i < n; i++) {
		json_t *resp = NULL;
		long status = 0;
		int r;

		snprintf(path, sizeof(path), "/v1/holds/%s/release", ids[i]);
		r = hclient_json(a->ledgerd, "POST", path, NULL, NULL, BUDGET_TIMEOUT_MS, &status,
				 &resp);
		json_decref(resp);
		if (r < 0)
			return; /* unreachable: try again next tick */
		if (status == 200 || status == 404)
			store_run(a->db, "UPDATE jobs SET hold_state = 'released' WHERE id = ?", "s",
				  ids[i]);
		else
			log_warn("ledgerd refused to release the hold of job %s (%ld)", ids[i], status);
	}
}

/* The budget cannot extend running job id's hold (spent sp of rs; the
 * ledger said why): a job that can checkpoint is asked to (as a preemption),
 * then paused, or ended under --overrun stop (nodes.c settles it); one that
 * cannot is stopped at once, since it has no work to lose yet. */
static void stop_or_pause(struct admitd *a, const char *id, const char *sp, const char *rs,
			  const char *why)
{
	char reason[ADMIT_MAX_ERROR + 128];
	int64_t can = 0;
	int r;

	if (store_begin(a->db) < 0)
		return;
	r = store_int_s(a->db, "SELECT " QUEUE_CAN_CHECKPOINT " FROM jobs WHERE id = ?", id, &can);
	if (r == 0 && can) {
		snprintf(reason, sizeof(reason), "%s: spent %s of its %s hold and the budget cannot "
			 "extend it (%s)", a->overrun_stop ? "stopped" : "paused", sp, rs,
			 why ? why : "no funds");
		r = store_run(a->db, "UPDATE jobs SET preempt = ?, overrun = ? WHERE id = ? AND"
			      " state = 'running' AND preempt IS NULL", "sss", reason,
			      a->overrun_stop ? "stop" : "pause", id);
		if (r == 0)
			r = store_set_reason(a->db, id, a->overrun_stop ?
					     "running: over its hold, checkpointing to stop" :
					     "running: over its hold, checkpointing to pause");
	} else if (r == 0) {
		snprintf(reason, sizeof(reason), "stopped: spent %s of its %s hold and the budget "
			 "cannot extend it (%s); it had no checkpoint yet", sp, rs,
			 why ? why : "no funds");
		r = store_run(a->db, "UPDATE jobs SET cancel_requested = 1, stop_reason = ? WHERE"
			      " id = ? AND state = 'running'", "ss", reason, id);
		if (r == 0)
			r = store_set_state(a->db, id, "running", reason);
	}
	if (r == 0 && store_commit(a->db) == 0) {
		log_info("job %s: %s", id, reason);
		return;
	}
	db_rollback(a->db);
}

/* Extends a running job's hold by half its estimate, or stops or pauses the
 * job (stop_or_pause). */
static void check_overrun(struct admitd *a, const char *id, int64_t est_micro)
{
	char path[ADMIT_MAX_STR + 32], sp[32], rs[32];
	int64_t reserved, spent, more = est_micro / 2 > BUDGET_MIN_EXTEND ? est_micro / 2
									  : BUDGET_MIN_EXTEND;
	json_t *resp = NULL, *body;
	long status = 0;

	snprintf(path, sizeof(path), "/v1/holds/%s", id);
	if (hclient_json(a->ledgerd, "GET", path, NULL, NULL, BUDGET_TIMEOUT_MS, &status, &resp) < 0 ||
	    status != 200)
		goto out;
	reserved = json_integer_value(json_object_get(resp, "reserved_micro"));
	spent = json_integer_value(json_object_get(resp, "spent_micro"));
	json_decref(resp);
	resp = NULL;
	/* act at 90%: metering lags by a few seconds, the hold must not be passed */
	if (spent < reserved - reserved / 10)
		goto out;
	snprintf(path, sizeof(path), "/v1/holds/%s/extend", id);
	body = json_pack("{s:I}", "amount_micro", (json_int_t)more);
	if (hclient_json(a->ledgerd, "POST", path, NULL, body, BUDGET_TIMEOUT_MS, &status, &resp) < 0) {
		json_decref(body);
		goto out;
	}
	json_decref(body);
	pricing_fmt_money(spent / 1e6, sp, sizeof(sp));
	pricing_fmt_money(reserved / 1e6, rs, sizeof(rs));
	if (status == 200) {
		log_info("job %s spent %s of its %s hold; extended by $%.4f", id, sp, rs, more / 1e6);
		store_run(a->db, "UPDATE jobs SET hold_micro = hold_micro + ? WHERE id = ?", "is",
			  more, id);
		goto out;
	}
	if (status != 409)
		goto out;
	stop_or_pause(a, id, sp, rs, json_string_value(json_object_get(resp, "error")));
out:
	json_decref(resp);
}

/* Resumes paused job id when the ledger extends its hold by what the rest of
 * the job is estimated to cost: back to the queue, its hold kept, relaunched
 * from its checkpoint by a pass. */
static void try_resume(struct admitd *a, const char *id, int64_t rest_micro)
{
	char path[ADMIT_MAX_STR + 32], reason[128], m[32];
	json_t *resp = NULL, *body;
	long status = 0;
	int r;

	snprintf(path, sizeof(path), "/v1/holds/%s/extend", id);
	body = json_pack("{s:I}", "amount_micro", (json_int_t)rest_micro);
	r = hclient_json(a->ledgerd, "POST", path, NULL, body, BUDGET_TIMEOUT_MS, &status, &resp);
	json_decref(body);
	json_decref(resp);
	if (r < 0 || status != 200)
		return; /* still short (409), or ledgerd is away: try again later */
	pricing_fmt_money(rest_micro / 1e6, m, sizeof(m));
	snprintf(reason, sizeof(reason), "queued: resumed, the budget covers the rest (%s);"
		 " waiting for its turn", m);
	if (store_begin(a->db) < 0)
		return;
	if (store_run(a->db, "UPDATE jobs SET hold_micro = hold_micro + ? WHERE id = ? AND"
		      " state = 'paused'", "is", rest_micro, id) == 0 &&
	    store_set_state(a->db, id, "queued", reason) == 0 && store_commit(a->db) == 0) {
		log_info("job %s: %s", id, reason);
		a->qm->loaded = 0; /* the next pass reads it into the queue */
		a->sched_dirty = 1;
		return;
	}
	db_rollback(a->db);
}

/* Paused jobs whose tenant can now afford the rest of them go back to the
 * queue. The rest: the estimate times the share of steps still to run, at
 * least BUDGET_MIN_EXTEND. */
static void resume_paused(struct admitd *a)
{
	char ids[BUDGET_CHECK_BATCH][ADMIT_MAX_STR + 1];
	int64_t rest[BUDGET_CHECK_BATCH];
	sqlite3_stmt *st;
	int n = 0;

	if (store_prep(a->db, "SELECT id, CAST(est_micro * (1.0 - min(1.0, max(0.0,"
		       " coalesce(json_extract(progress, '$.step'), 0) * 1.0 /"
		       " max(1, coalesce(json_extract(progress, '$.steps'), 1))))) AS INTEGER)"
		       " FROM jobs WHERE state = 'paused' AND hold_state = 'held' ORDER BY seq"
		       " LIMIT ?", "i", &st, (int64_t)BUDGET_CHECK_BATCH) < 0)
		return;
	while (n < BUDGET_CHECK_BATCH && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(ids[n], sizeof(ids[0]), "%s", (const char *)sqlite3_column_text(st, 0));
		rest[n] = sqlite3_column_int64(st, 1);
		if (rest[n] < BUDGET_MIN_EXTEND)
			rest[n] = BUDGET_MIN_EXTEND;
		n++;
	}
	store_done(st);
	for (int i = 0; i < n; i++)
		try_resume(a, ids[i], rest[i]);
}

void budget_tick(struct admitd *a)
{
	char ids[BUDGET_CHECK_BATCH][ADMIT_MAX_STR + 1];
	int64_t est[BUDGET_CHECK_BATCH];
	uint64_t now = util_now_us();
	sqlite3_stmt *st;
	int n = 0;

	if (!a->ledgerd)
		return;
	release_ended(a);
	if (now < a->budget_next_us)
		return;
	a->budget_next_us = now + BUDGET_CHECK_US;
	resume_paused(a);
	if (store_prep(a->db, "SELECT id, coalesce(hold_micro, 0) FROM jobs WHERE state = 'running'"
		       " AND hold_state = 'held' AND cancel_requested = 0 AND preempt IS NULL"
		       " ORDER BY seq LIMIT ?", "i", &st, (int64_t)BUDGET_CHECK_BATCH) < 0)
		return;
	while (n < BUDGET_CHECK_BATCH && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(ids[n], sizeof(ids[0]), "%s", (const char *)sqlite3_column_text(st, 0));
		est[n++] = sqlite3_column_int64(st, 1);
	}
	store_done(st);
	for (int i = 0; i < n; i++)
		check_overrun(a, ids[i], est[i]);
}

/* queue — the job state machine up to "running": pricing of submitted jobs,
 * admission of queued jobs by the queue policy (sched.c), placement of their ranks on nodes,
 * and cancellation. Also keeps the cached ledgerd rate pricing uses.
 *
 * Every pass runs in one SQLite transaction, so a crash leaves either the old
 * or the new assignment of a job, never half of one. Placement writes the
 * assign rows that the next heartbeat of each node turns into launches; this
 * file never talks to a node. A waiting job that cannot start and outranks
 * running jobs marks the lowest-priority ones for preemption (nodes.c asks
 * their nodes to checkpoint them; they come back queued, keeping their hold).
 */
#include "admitd.h"
#include "db.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_BATCH 256 /* jobs priced per pass; the rest wait for the next tick */
#define QUEUE_PREEMPT_MAX 64 /* running jobs one preemption may stop */

struct node_free {
	char id[ADMIT_MAX_STR + 1];
	int free;
};

void queue_refresh_rate(struct admitd *a, int force)
{
	uint64_t now = util_now_us();
	json_t *resp = NULL, *v;
	long status = 0;
	int r;

	if (!a->ledgerd || (!force && now < a->rate_next_us))
		return;
	r = hclient_json(a->ledgerd, "GET", "/v1/rates", NULL, NULL, 1000, &status, &resp);
	v = json_object_get(resp, "rank_second");
	if (r == 0 && status == 200 && json_is_number(v) && json_number_value(v) > 0 &&
	    json_number_value(v) < 1e6) {
		if (!a->rate_known || a->rate != json_number_value(v))
			log_info("rate from ledgerd %s: $%g per rank-second", a->ledgerd,
				 json_number_value(v));
		a->rate = json_number_value(v);
		a->rate_known = 1;
		a->rate_next_us = now + 60 * 1000000ull;
	} else {
		if (a->rate_next_us == 0 || a->rate_known)
			log_warn("cannot read rates from ledgerd %s: %s; pricing with %s", a->ledgerd,
				 r < 0 ? hclient_strerror(r) : "unexpected reply",
				 a->rate_known ? "the cached rate" : "the default $0.0002/rank-s");
		a->rate_next_us = now + 10 * 1000000ull;
	}
	json_decref(resp);
}

/* Prices one submitted job: priced then queued, or failed when rejected. */
int queue_price_job(struct admitd *a, const struct price_cluster *c, const char *id,
		    const char *tenant, const char *user, json_t *mj, json_t *pj)
{
	char err[512] = "", reason[600];
	struct price_result pr;
	struct model_config m;
	struct train_params p;
	json_t *est = NULL, *rec = NULL;
	char *est_s = NULL;
	int r;

	r = pricing_parse_spec(mj, pj, &m, &p, err, sizeof(err));
	if (r == 0)
		r = pricing_choose(&m, &p, c, &pr, err, sizeof(err));
	if (r == -E2BIG || r == -EDQUOT || r == -EINVAL || r == -ERANGE || r == -EOPNOTSUPP) {
		snprintf(reason, sizeof(reason), "%s%s", strncmp(err, "rejected", 8) ?
			 "rejected: " : "", err);
		r = store_run(a->db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", reason, id);
		if (r == 0)
			r = store_set_state(a->db, id, "failed", reason);
		goto out;
	}
	if (r < 0)
		goto out;
	est = pricing_estimate_json(&pr, c);
	est_s = est ? json_dumps(est, JSON_COMPACT) : NULL;
	rec = json_pack("{s:s, s:s, s:s, s:i, s:f, s:f, s:I, s:s}", "job", id, "tenant", tenant,
			"user", user, "ranks", pr.chosen.ranks, "seconds", pr.chosen.seconds,
			"amount", pr.chosen.amount, "amount_micro",
			json_integer_value(json_object_get(est, "amount_micro")), "explain",
			pr.explain);
	if (!est_s || !rec) {
		r = -ENOMEM;
		goto out;
	}
	r = store_run(a->db, "UPDATE jobs SET ranks = ?, estimate = ?, est_s = ?, est_micro = ?"
		      " WHERE id = ?", "isdis", (int64_t)pr.chosen.ranks, est_s, pr.chosen.seconds,
		      (int64_t)json_integer_value(json_object_get(est, "amount_micro")), id);
	if (r < 0)
		goto out;
	snprintf(reason, sizeof(reason), "priced: %s", pr.explain);
	r = store_set_state(a->db, id, "priced", reason);
	if (r == 0)
		r = store_set_state(a->db, id, "queued", "queued: waiting for its turn");
	if (r < 0)
		goto out;
	/* Same transaction as the job row: the estimate is sent iff the price stands. */
	r = outbox_put(a->estimates, rec, NULL);
	if (r == -ENOSPC)
		log_err("estimate outbox is full (%d records): ledgerd has been unreachable for "
			"long; job %s keeps its price but its estimate is not queued",
			ADMIT_OUTBOX_MAX, id);
	if (r == -ENOSPC)
		r = 0;
out:
	free(est_s);
	json_decref(est);
	json_decref(rec);
	return r;
}

/* Prices one row (id, tenant, user, model, params) of the submitted jobs. */
static int price_row(struct admitd *a, const struct price_cluster *c, sqlite3_stmt *row)
{
	json_t *mj = json_loads((const char *)sqlite3_column_text(row, 3), 0, NULL);
	json_t *pj = json_loads((const char *)sqlite3_column_text(row, 4), 0, NULL);
	int r;

	r = queue_price_job(a, c, (const char *)sqlite3_column_text(row, 0),
			    (const char *)sqlite3_column_text(row, 1),
			    (const char *)sqlite3_column_text(row, 2), mj, pj);
	json_decref(mj);
	json_decref(pj);
	return r;
}

static int price_submitted(struct admitd *a, const struct price_cluster *c)
{
	sqlite3_stmt *st;
	int r, rc;

	if (c->total_slots <= 0)
		return 0; /* stay "submitted": nothing to price against */
	r = store_prep(a->db, "SELECT id, tenant, user, model, params FROM jobs"
		       " WHERE state = 'submitted' ORDER BY seq LIMIT ?", "i", &st,
		       (int64_t)QUEUE_BATCH);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r = price_row(a, c, st);
		if (r < 0)
			break;
		a->qm->loaded = 0; /* newly queued rows: reload the queue this pass */
	}
	sqlite3_finalize(st);
	return r;
}

/* Free slots of each node that is up, most free first. */
static int load_free(struct admitd *a, struct node_free *nf, int max, int *n, int *total)
{
	sqlite3_stmt *st;
	int r;

	r = store_prep(a->db, "SELECT n.id, n.slots - coalesce((SELECT sum(x.n) FROM assign x"
		       " WHERE x.node = n.id AND (x.state IS NULL OR x.state = 'running')), 0) AS f"
		       " FROM nodes n WHERE n.down = 0 ORDER BY f DESC, n.id LIMIT ?", "i", &st,
		       (int64_t)max);
	if (r < 0)
		return r;
	*n = 0;
	*total = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct node_free *f = &nf[(*n)++];

		snprintf(f->id, sizeof(f->id), "%s", (const char *)sqlite3_column_text(st, 0));
		f->free = sqlite3_column_int(st, 1) > 0 ? sqlite3_column_int(st, 1) : 0;
		*total += f->free;
	}
	sqlite3_finalize(st);
	return 0;
}

/* Places `ranks` ranks: on the one node that fits best when one can hold them
 * all, else across the nodes with the most free slots (fewest nodes). */
static int place(struct admitd *a, const char *id, int ranks, struct node_free *nf, int n)
{
	char reason[512];
	int best = -1, first = 0, k, r;
	size_t len;

	for (int i = 0; i < n; i++)
		if (nf[i].free >= ranks && (best < 0 || nf[i].free < nf[best].free))
			best = i;
	len = snprintf(reason, sizeof(reason), "running on ");
	for (int i = best >= 0 ? best : 0; first < ranks && i < n; i++) {
		k = nf[i].free < ranks - first ? nf[i].free : ranks - first;
		if (k <= 0)
			continue;
		r = store_run(a->db, "INSERT OR REPLACE INTO assign (job, node, first_rank, n)"
			      " VALUES (?, ?, ?, ?)", "ssii", id, nf[i].id, (int64_t)first,
			      (int64_t)k);
		if (r < 0)
			return r;
		if (len < sizeof(reason) && k == 1)
			len += snprintf(reason + len, sizeof(reason) - len, "%s%s rank %d",
					first ? ", " : "", nf[i].id, first);
		else if (len < sizeof(reason))
			len += snprintf(reason + len, sizeof(reason) - len, "%s%s ranks %d-%d",
					first ? ", " : "", nf[i].id, first, first + k - 1);
		if (first == 0)
			r = store_run(a->db, "UPDATE jobs SET node = ?, attempt = attempt + 1,"
				      " progress = NULL WHERE id = ?", "ss", nf[i].id, id);
		if (r < 0)
			return r;
		first += k;
		nf[i].free -= k;
		if (best >= 0)
			break;
	}
	return store_set_state(a->db, id, "running", reason);
}

/* What one admission pass knows about tenants: names, quotas, what runs. */
struct pass {
	char tenants[SCHED_MAX_TENANTS][ADMIT_MAX_STR + 1];
	struct tenant_quota quota[SCHED_MAX_TENANTS];
	int run_ranks[SCHED_MAX_TENANTS], run_jobs[SCHED_MAX_TENANTS];
	int n_tenants;
	struct sched_usage usage;
};

static int pass_tenant(struct admitd *a, struct pass *p, const char *t)
{
	for (int i = 0; i < p->n_tenants; i++)
		if (!strcmp(p->tenants[i], t))
			return i;
	if (p->n_tenants == SCHED_MAX_TENANTS)
		return -ENOSPC;
	snprintf(p->tenants[p->n_tenants], sizeof(p->tenants[0]), "%s", t);
	if (tenants_quota(a->db, t, &p->quota[p->n_tenants]) < 0)
		return -EIO;
	p->run_ranks[p->n_tenants] = p->run_jobs[p->n_tenants] = 0;
	return p->n_tenants++;
}

/* Fair-share usage: rank-seconds of jobs that ended in the last 8 half-lives. */
static int load_usage(struct admitd *a, struct pass *p, double now_s)
{
	double since = now_s - 8 * a->sched.half_life_s;
	sqlite3_stmt *st;
	int r;

	memset(&p->usage, 0, sizeof(p->usage));
	p->usage.at_s = since;
	r = store_prep(a->db, "SELECT tenant, ranks, started_us, finished_us FROM jobs"
		       " WHERE finished_us > ? AND started_us IS NOT NULL ORDER BY finished_us"
		       " LIMIT ?", "ii", &st, (int64_t)(since * 1e6), (int64_t)ADMIT_MAX_QUEUE);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW) {
		int t = pass_tenant(a, p, (const char *)sqlite3_column_text(st, 0));
		double s = sqlite3_column_int64(st, 2) / 1e6, f = sqlite3_column_int64(st, 3) / 1e6;

		if (t >= 0 && f > s)
			sched_usage_add(&p->usage, &a->sched, t, sqlite3_column_int(st, 1) * (f - s), f);
	}
	sqlite3_finalize(st);
	return 0;
}

/* "14:05" (local time), or "unknown" when no start can be foreseen. */
static void fmt_clock(double t_s, char *buf, size_t len)
{
	time_t t = (time_t)t_s;
	struct tm tm;

	if (!isfinite(t_s) || !localtime_r(&t, &tm))
		snprintf(buf, len, "unknown");
	else
		strftime(buf, len, "%H:%M", &tm);
}

static int quota_blocks(const struct pass *p, int t, int ranks, char *why, size_t len)
{
	const struct tenant_quota *q = &p->quota[t];

	if (q->max_jobs && p->run_jobs[t] >= q->max_jobs)
		return snprintf(why, len, "queued: tenant %s runs %d job%s, its quota is %d",
				p->tenants[t], p->run_jobs[t], p->run_jobs[t] == 1 ? "" : "s",
				q->max_jobs) > 0;
	if (q->max_ranks && p->run_ranks[t] + ranks > q->max_ranks)
		return snprintf(why, len, "queued: tenant %s runs %d rank%s, %d more would pass its "
				"quota of %d", p->tenants[t], p->run_ranks[t],
				p->run_ranks[t] == 1 ? "" : "s", ranks, q->max_ranks) > 0;
	return 0;
}

/* Holds the job's cost and places it; 1 when it started, 0 when it must
 * wait or was rejected, -EAGAIN when the ledger cannot be asked. */
static int start_one(struct admitd *a, struct pass *p, struct qent *row, int ranks,
		     struct node_free *nf, int n)
{
	char err[ADMIT_MAX_ERROR], reason[ADMIT_MAX_ERROR + 16];
	sqlite3_stmt *st;
	int held, r;

	/* a preempted job comes back with its hold: billed once, never held twice */
	r = store_prep(a->db, "SELECT 1 FROM jobs WHERE id = ? AND hold_state = 'held'", "s", &st,
		       row->id);
	if (r < 0)
		return r;
	held = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	r = held ? 0 : budget_hold(a, row->id, row->tenant, row->user, row->est_micro, err,
					sizeof(err));
	if (r == -EDQUOT) {
		snprintf(reason, sizeof(reason), "rejected: %s", err);
		r = store_run(a->db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", reason, row->id);
		return r < 0 ? r : store_set_state(a->db, row->id, "failed", reason);
	}
	if (r == -EAGAIN) {
		snprintf(reason, sizeof(reason), "queued: %s", err);
		r = qmem_set_reason(a, row, reason);
		return r < 0 ? r : -EAGAIN;
	}
	if (r < 0)
		return r;
	r = place(a, row->id, ranks, nf, n);
	if (r < 0)
		return r;
	p->run_ranks[row->t] += ranks;
	p->run_jobs[row->t]++;
	return 1;
}

/* Explains every waiting job near the front: place in line and projected start. */
static int explain_waiting(struct admitd *a, const struct sched_job *q, int n,
			   struct qent *rows, const int *started, struct sched_run *run,
			   int n_run, int free, int slots, double now_s, int64_t *tail_seq)
{
	static struct sched_job w[SCHED_PROJECT_DEPTH];
	double est[SCHED_PROJECT_DEPTH];
	char reason[256], clk[16];
	int m = 0, r = 0;

	for (int i = 0; i < n && m < SCHED_PROJECT_DEPTH; i++)
		if (!started[i] && q[i].ranks > 0)
			w[m++] = q[i];
	sched_project(now_s, free, run, n_run, w, m, est);
	for (int i = 0; i < m && r == 0; i++) {
		fmt_clock(est[i], clk, sizeof(clk));
		if (i == 0)
			snprintf(reason, sizeof(reason), "queued: next in line, needs %d rank%s (%d free"
				 " of %d), est. start %s", w[i].ranks, w[i].ranks == 1 ? "" : "s",
				 free, slots, clk);
		else
			snprintf(reason, sizeof(reason), "queued: %d job%s ahead, est. start %s", i,
				 i == 1 ? "" : "s", clk);
		r = qmem_set_reason(a, &rows[w[i].id], reason);
	}
	*tail_seq = m;
	return r;
}

/* A waiting job that cannot start now and outranks running jobs marks the
 * lowest-priority of them (never an equal or higher priority, newest first)
 * that free enough ranks for preemption; one preemption at a time. */
static int preempt_for(struct admitd *a, const struct sched_job *q, int nq, const int *started,
		       int free)
{
	static char ids[QUEUE_PREEMPT_MAX][ADMIT_MAX_STR + 1];
	char why[ADMIT_MAX_ERROR];
	int64_t pending = 0;
	sqlite3_stmt *st;
	int r;

	r = db_query_int(a->db, "SELECT count(*) FROM jobs WHERE state = 'running' AND"
			 " preempt IS NOT NULL", 0, &pending);
	if (r < 0 || pending > 0)
		return r;
	for (int i = 0; i < nq; i++) {
		struct qent *row = &a->qm->e[q[i].id];
		int freed = free, m = 0;

		if (started[i] || q[i].ranks <= free)
			continue;
		r = store_prep(a->db, "SELECT id, ranks FROM jobs WHERE state = 'running' AND"
			       " cancel_requested = 0 AND prio < ? ORDER BY prio, seq DESC LIMIT ?",
			       "ii", &st, (int64_t)q[i].prio, (int64_t)QUEUE_PREEMPT_MAX);
		if (r < 0)
			return r;
		while (freed < q[i].ranks && sqlite3_step(st) == SQLITE_ROW) {
			snprintf(ids[m++], sizeof(ids[0]), "%s",
				 (const char *)sqlite3_column_text(st, 0));
			freed += sqlite3_column_int(st, 1);
		}
		sqlite3_finalize(st);
		if (freed < q[i].ranks)
			continue;
		snprintf(why, sizeof(why), "preempted by higher-priority job %s (priority %d)",
			 row->id, row->prio);
		for (int k = 0; k < m && r == 0; k++) {
			r = store_run(a->db, "UPDATE jobs SET preempt = ? WHERE id = ?", "ss", why,
				      ids[k]);
			log_info("job %s: %s; asking its nodes to checkpoint it", ids[k], why);
		}
		return r;
	}
	return 0;
}

/* Starts queued jobs by the queue policy (sched.c): priority, fair share,
 * EASY backfill that never delays the head's reserved start; each start takes
 * a ledger hold first and respects the tenant's quota. */
static int admit_queued(struct admitd *a)
{
	static struct node_free nf[ADMIT_MAX_NODES];
	static struct sched_job q[ADMIT_MAX_QUEUE];
	static struct sched_run run[2 * ADMIT_MAX_QUEUE];
	struct qent *rows = a->qm->e;
	static int start[ADMIT_MAX_QUEUE], started[ADMIT_MAX_QUEUE];
	static struct pass p;
	double now_s = util_wall_us() / 1e6;
	int n, total, nq = 0, n_run = 0, r;
	int64_t slots, shown;
	struct sched_result res;
	sqlite3_stmt *st;
	char why[256];

	p.n_tenants = 0;
	r = load_free(a, nf, ADMIT_MAX_NODES, &n, &total);
	if (r == 0)
		r = db_query_int(a->db, "SELECT coalesce(sum(slots), 0) FROM nodes WHERE down = 0",
				 0, &slots);
	if (r == 0)
		r = load_usage(a, &p, now_s);
	if (r == 0)
		r = store_prep(a->db, "SELECT tenant, ranks, coalesce(started_us, updated_us), est_s"
			       " FROM jobs WHERE state = 'running' LIMIT ?", "i", &st,
			       (int64_t)ADMIT_MAX_QUEUE);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW) {
		int t = pass_tenant(a, &p, (const char *)sqlite3_column_text(st, 0));

		run[n_run].ranks = sqlite3_column_int(st, 1);
		run[n_run++].end_s = sqlite3_column_int64(st, 2) / 1e6 + sqlite3_column_double(st, 3);
		if (t >= 0) {
			p.run_ranks[t] += sqlite3_column_int(st, 1);
			p.run_jobs[t]++;
		}
	}
	sqlite3_finalize(st);
	if (!a->qm->loaded)
		r = qmem_load(a);
	for (int i = 0; r == 0 && i < a->qm->n; i++) {
		struct qent *row = &rows[i];
		struct sched_job *j = &q[nq];

		row->gone = 0;
		row->t = pass_tenant(a, &p, row->tenant);
		j->id = i;
		j->ranks = row->ranks;
		j->prio = row->prio;
		j->tenant = row->t < 0 ? SCHED_MAX_TENANTS - 1 : row->t;
		j->est_s = row->est_s;
		j->submit_s = row->submit_s;
		if (row->t < 0 || j->ranks <= 0)
			continue;
		/* a tenant at its quota waits whatever the policy says */
		if (quota_blocks(&p, row->t, j->ranks, why, sizeof(why))) {
			r = qmem_set_reason(a, row, why);
			continue;
		}
		nq++;
	}
	if (r < 0)
		return r;
	sched_order(&a->sched, &p.usage, now_s, q, nq);
	sched_pass(&a->sched, now_s, total, q, nq, run, n_run, start, &res);
	memset(started, 0, nq * sizeof(*started));
	for (int k = 0; k < res.n_start && r >= 0; k++) {
		const struct sched_job *j = &q[start[k]];
		struct qent *row = &rows[j->id];

		if (quota_blocks(&p, row->t, j->ranks, why, sizeof(why))) {
			r = qmem_set_reason(a, row, why);
			continue;
		}
		r = start_one(a, &p, row, j->ranks, nf, n);
		if (r >= 0) {
			started[start[k]] = 1; /* started, or rejected and out of the queue */
			row->gone = 1;
			total -= r > 0 ? j->ranks : 0;
			if (r > 0) {
				run[n_run].ranks = j->ranks;
				run[n_run++].end_s = now_s + j->est_s;
			}
		}
	}
	if (r == -EAGAIN)
		return 0; /* the ledger is unreachable: nothing starts, the first says why */
	if (r < 0)
		return r;
	r = explain_waiting(a, q, nq, rows, started, run, n_run, total, (int)slots, now_s, &shown);
	if (r == 0)
		r = preempt_for(a, q, nq, started, total);
	if (r < 0 || nq <= shown + res.n_start)
		return r;
	snprintf(why, sizeof(why), "queued: more than %d jobs ahead", SCHED_PROJECT_DEPTH);
	for (int i = 0, m = 0; i < nq && r == 0; i++) {
		if (started[i])
			continue;
		if (m++ >= SCHED_PROJECT_DEPTH)
			r = qmem_set_reason(a, &rows[q[i].id], why);
	}
	return r;
}

int queue_schedule(struct admitd *a)
{
	uint64_t t0 = util_now_us();
	struct price_cluster c;
	int r;

	a->sched_dirty = 0;
	r = nodes_cluster(a, &c);
	if (r < 0)
		return r;
	r = db_begin(a->db);
	if (r < 0)
		return r;
	r = price_submitted(a, &c);
	if (r == 0)
		r = admit_queued(a);
	if (r == 0)
		r = db_commit(a->db);
	if (r < 0) {
		db_rollback(a->db);
		a->qm->loaded = 0; /* its reasons and removals did not happen */
		log_err_errno(r, "scheduling pass failed; will retry on the next tick");
		return r;
	}
	qmem_compact(a);
	a->pass_ms[a->n_passes++ % ADMIT_PASS_STATS] = (util_now_us() - t0) / 1e3;
	return 0;
}

int queue_cancel(struct admitd *a, const char *id, unsigned *status, char *err, size_t errlen)
{
	char state[16] = "", reason[256];
	sqlite3_stmt *st;
	int r, cancelling = 0;

	r = db_begin(a->db);
	if (r < 0)
		return r;
	r = store_prep(a->db, "SELECT state, cancel_requested, node FROM jobs WHERE id = ?", "s",
		       &st, id);
	if (r < 0)
		goto out_rollback;
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(state, sizeof(state), "%s", (const char *)sqlite3_column_text(st, 0));
		cancelling = sqlite3_column_int(st, 1);
		snprintf(reason, sizeof(reason), "cancelling: asked node %s to stop the ranks",
			 sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "?");
	}
	sqlite3_finalize(st);
	*status = 200;
	if (!state[0]) {
		*status = 404;
		snprintf(err, errlen, "no such job: %s", id);
	} else if (!strcmp(state, "succeeded") || !strcmp(state, "failed")) {
		*status = 409;
		snprintf(err, errlen, "job %s already %s; nothing to cancel", id, state);
	} else if (!strcmp(state, "running")) {
		if (!cancelling)
			r = store_run(a->db, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?", "s",
				      id);
		if (r == 0 && !cancelling)
			r = store_set_state(a->db, id, "running", reason);
	} else if (strcmp(state, "cancelled")) {
		r = store_set_state(a->db, id, "cancelled", "cancelled by request before it started");
	}
	if (r < 0)
		goto out_rollback;
	r = db_commit(a->db);
	if (r < 0)
		goto out_rollback;
	if (*status == 200 && strcmp(state, "running"))
		qmem_remove(a, id);
	return 0;
out_rollback:
	db_rollback(a->db);
	return r;
}

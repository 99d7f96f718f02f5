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
 *
 * A pass must stay cheap with 10,000 jobs queued: it reads the queue from
 * memory (qmem.c), orders only its front (sched_order_top), keeps tenants and
 * fair-share usage from pass to pass, reads the running jobs once, and writes
 * only reasons that changed; nothing in it costs a query per queued job.
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

int queue_refresh_rate(struct admitd *a, int force, char *err, size_t errlen)
{
	uint64_t now = util_now_us();
	json_t *resp = NULL, *v;
	long status = 0;
	int r;

	if (!a->ledgerd)
		return util_fail(err, errlen, -ENOENT, "admitd runs without a ledgerd (--ledgerd)");
	if (!force && now < a->rate_next_us)
		return 0;
	r = hclient_json(a->ledgerd, "GET", "/v1/rates", NULL, NULL, 1000, &status, &resp);
	v = json_object_get(resp, "rank_second");
	if (r == 0 && status == 200 && json_is_number(v) && json_number_value(v) > 0 &&
	    json_number_value(v) < 1e6) {
		json_t *classes = json_object_get(resp, "classes"), *cv;
		const char *k;
		int n = 0;

		if (!a->rate_known || a->rate != json_number_value(v))
			log_info("rate from ledgerd %s: $%g per rank-second", a->ledgerd,
				 json_number_value(v));
		a->rate = json_number_value(v);
		a->rate_known = 1;
		/* the rate of every node class (a class without one is not offered) */
		json_object_foreach(classes, k, cv) {
			double rs = json_number_value(json_object_get(cv, "rank_second"));

			if (n == ADMIT_MAX_CLASSES || !bundle_valid_class(k) || !(rs > 0) || rs >= 1e6)
				continue;
			snprintf(a->rates[n].cls, sizeof(a->rates[n].cls), "%s", k);
			a->rates[n++].rank_second = rs;
		}
		a->n_rates = n;
		v = json_object_get(resp, "kwh");
		a->kwh_price = json_is_number(v) && json_number_value(v) > 0 &&
			       json_number_value(v) < 1e4 ? json_number_value(v) : 0;
		a->rate_version = json_integer_value(json_object_get(resp, "version"));
		a->rate_next_us = now + 60 * 1000000ull;
		r = 0;
	} else {
		if (a->rate_next_us == 0 || a->rate_known)
			log_warn("cannot read rates from ledgerd %s: %s; pricing with %s", a->ledgerd,
				 r < 0 ? hclient_strerror(r) : "unexpected reply",
				 a->rate_known ? "the cached rate" : "the default $0.0002/rank-s");
		a->rate_next_us = now + 10 * 1000000ull;
		r = r < 0 ? util_fail(err, errlen, r, "cannot read rates from ledgerd: %s",
				      hclient_strerror(r))
			  : util_fail(err, errlen, -EPROTO, "ledgerd answered GET /v1/rates with "
				      "status %ld and no usable rate", status);
	}
	json_decref(resp);
	return r;
}

void queue_priced_free(struct queue_priced *q)
{
	free(q->est_json);
	json_decref(q->rec);
	json_decref(q->est);
	q->est_json = NULL;
	q->rec = NULL;
	q->est = NULL;
}

int queue_price(const struct price_world *w, const char *id, const char *tenant,
		const char *user, json_t *mj, json_t *pj, struct queue_priced *out)
{
	char err[512] = "";
	struct price_result pr;
	struct model_config m;
	struct train_params p;
	json_t *est;
	int r;

	memset(out, 0, sizeof(*out));
	r = pricing_parse_spec(mj, pj, &m, &p, err, sizeof(err));
	if (r == 0)
		r = pricing_world_choose(&m, &p, w, &pr, err, sizeof(err));
	if (r == -E2BIG || r == -EDQUOT || r == -EINVAL || r == -ERANGE || r == -EOPNOTSUPP) {
		out->rejected = 1;
		snprintf(out->reason, sizeof(out->reason), "%s%s", strncmp(err, "rejected", 8) ?
			 "rejected: " : "", err);
		return 0;
	}
	if (r < 0)
		return r;
	est = pricing_estimate_json(&pr, &w->c[pr.cls]);
	snprintf(out->cls, sizeof(out->cls), "%s", w->c[pr.cls].cls);
	out->ranks = pr.chosen.ranks;
	out->est_s = pr.chosen.seconds;
	out->est_micro = json_integer_value(json_object_get(est, "amount_micro"));
	out->est_json = est ? json_dumps(est, JSON_COMPACT) : NULL;
	out->rec = json_pack("{s:s, s:s, s:s, s:i, s:f, s:f, s:I, s:s}", "job", id, "tenant",
			     tenant, "user", user, "ranks", pr.chosen.ranks, "seconds",
			     pr.chosen.seconds, "amount", pr.chosen.amount, "amount_micro",
			     (json_int_t)out->est_micro, "explain", pr.explain);
	out->est = est;
	snprintf(out->reason, sizeof(out->reason), "priced: %s", pr.explain);
	if (!out->est_json || !out->rec) {
		queue_priced_free(out);
		return -ENOMEM;
	}
	return 0;
}

int queue_put_estimate(struct admitd *a, const char *id, const struct queue_priced *q)
{
	/* Same transaction as the job row: the estimate is sent iff the price stands. */
	int r = outbox_put(a->estimates, q->rec, NULL);

	if (r == -ENOSPC)
		log_err("estimate outbox is full (%d records): ledgerd has been unreachable for "
			"long; job %s keeps its price but its estimate is not queued",
			ADMIT_OUTBOX_MAX, id);
	return r == -ENOSPC ? 0 : r;
}

/* Prices one submitted job that is already stored (it came before any node):
 * priced then queued, or failed when rejected. */
static int price_stored_job(struct admitd *a, const struct price_world *c, const char *id,
			    const char *tenant, const char *user, json_t *mj, json_t *pj)
{
	struct queue_priced q;
	int r;

	r = queue_price(c, id, tenant, user, mj, pj, &q);
	if (r < 0)
		return r;
	if (q.rejected) {
		r = store_run(a->db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", q.reason, id);
		if (r == 0)
			r = store_set_state(a->db, id, "failed", q.reason);
		goto out;
	}
	r = store_run(a->db, "UPDATE jobs SET ranks = ?, estimate = ?, est_s = ?, est_micro = ?,"
		      " class = ? WHERE id = ?", "isdiss", (int64_t)q.ranks, q.est_json, q.est_s,
		      q.est_micro, q.cls, id);
	if (r == 0)
		r = store_set_state(a->db, id, "priced", q.reason);
	if (r == 0)
		r = store_set_state(a->db, id, "queued", QUEUE_QUEUED_REASON);
	if (r == 0)
		r = queue_put_estimate(a, id, &q);
out:
	queue_priced_free(&q);
	return r;
}

/* Prices one row (id, tenant, user, model, params) of the submitted jobs. */
static int price_row(struct admitd *a, const struct price_world *c, sqlite3_stmt *row)
{
	json_t *mj = json_loads((const char *)sqlite3_column_text(row, 3), 0, NULL);
	json_t *pj = json_loads((const char *)sqlite3_column_text(row, 4), 0, NULL);
	int r;

	r = price_stored_job(a, c, (const char *)sqlite3_column_text(row, 0),
			    (const char *)sqlite3_column_text(row, 1),
			    (const char *)sqlite3_column_text(row, 2), mj, pj);
	json_decref(mj);
	json_decref(pj);
	return r;
}

static int price_submitted(struct admitd *a, const struct price_world *c)
{
	sqlite3_stmt *st;
	int r, rc;

	if (nodes_total_slots(c) <= 0)
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
	store_done(st);
	return r;
}

/* Free slots of each node of class cls that is up, most free first; *slots:
 * all their slots. */
static int load_free(struct admitd *a, const char *cls, struct node_free *nf, int max, int *n,
		     int *total, int *slots)
{
	sqlite3_stmt *st;
	int r;

	r = store_prep(a->db, "SELECT n.id, n.slots - coalesce((SELECT sum(x.n) FROM assign x"
		       " WHERE x.node = n.id AND (x.state IS NULL OR x.state = 'running')), 0) AS f,"
		       " n.slots FROM nodes n WHERE n.down = 0 AND n.class = ? ORDER BY f DESC, n.id"
		       " LIMIT ?", "si", &st, cls, (int64_t)max);
	if (r < 0)
		return r;
	*n = 0;
	*total = 0;
	*slots = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		*slots += sqlite3_column_int(st, 2);
		struct node_free *f = &nf[(*n)++];

		snprintf(f->id, sizeof(f->id), "%s", (const char *)sqlite3_column_text(st, 0));
		f->free = sqlite3_column_int(st, 1) > 0 ? sqlite3_column_int(st, 1) : 0;
		*total += f->free;
	}
	store_done(st);
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

#define PASS_TENANT_HASH 4096 /* open-addressing slots for tenant names (> 2 x SCHED_MAX_TENANTS) */
#define PASS_USAGE_TTL_S 60.0 /* fair-share usage is re-read at least this often */

/* What admission passes know about tenants: names (hashed), quotas, what
 * runs, fair-share usage. Names and usage are kept from pass to pass and
 * re-read from SQLite only when a job finished or PASS_USAGE_TTL_S passed, so
 * a pass does not re-read the history of finished jobs. */
struct pass {
	char tenants[SCHED_MAX_TENANTS][ADMIT_MAX_STR + 1];
	struct tenant_quota quota[SCHED_MAX_TENANTS];
	int run_ranks[SCHED_MAX_TENANTS], run_jobs[SCHED_MAX_TENANTS];
	int quota_known[SCHED_MAX_TENANTS];
	short slot[PASS_TENANT_HASH]; /* tenant index + 1, 0: empty */
	int n_tenants;
	struct sched_usage usage;
	uint32_t gen;         /* bumped when the tenant table is rebuilt (qent.t_gen) */
	double usage_s;       /* when usage was read (0: never) */
	int64_t usage_mark;   /* max(finished_us) then */
};

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* The tenant's index in this pass (its quota read once per pass). */
static int pass_tenant(struct admitd *a, struct pass *p, const char *t)
{
	unsigned h = (unsigned)name_hash(t) & (PASS_TENANT_HASH - 1);
	int i;

	while (p->slot[h]) {
		i = p->slot[h] - 1;
		if (!strcmp(p->tenants[i], t))
			goto found;
		h = (h + 1) & (PASS_TENANT_HASH - 1);
	}
	if (p->n_tenants == SCHED_MAX_TENANTS)
		return -ENOSPC;
	i = p->n_tenants++;
	snprintf(p->tenants[i], sizeof(p->tenants[0]), "%s", t);
	p->slot[h] = (short)(i + 1);
	p->run_ranks[i] = p->run_jobs[i] = 0;
	p->quota_known[i] = 0;
found:
	if (!p->quota_known[i]) {
		if (tenants_quota(a->db, t, &p->quota[i]) < 0)
			return -EIO;
		p->quota_known[i] = 1;
	}
	return i;
}

/* Starts a pass: forgets what ran and the quotas (re-read as tenants show up). */
static void pass_reset(struct pass *p)
{
	memset(p->run_ranks, 0, p->n_tenants * sizeof(p->run_ranks[0]));
	memset(p->run_jobs, 0, p->n_tenants * sizeof(p->run_jobs[0]));
	memset(p->quota_known, 0, p->n_tenants * sizeof(p->quota_known[0]));
}

/* Fair-share usage: rank-seconds of jobs that ended in the last 8 half-lives,
 * re-read only when a job finished since, or after PASS_USAGE_TTL_S. */
static int load_usage(struct admitd *a, struct pass *p, double now_s)
{
	double since = now_s - 8 * a->sched.half_life_s;
	int64_t mark = 0;
	sqlite3_stmt *st;
	int r;

	r = store_int(a->db, "SELECT max(finished_us) FROM jobs", 0, &mark);
	if (r < 0)
		return r;
	if (p->usage_s > 0 && mark == p->usage_mark && now_s - p->usage_s < PASS_USAGE_TTL_S &&
	    p->n_tenants < SCHED_MAX_TENANTS / 2)
		return 0;
	/* a fresh tenant table: tenants that left do not fill it up */
	p->n_tenants = 0;
	p->gen++;
	memset(p->slot, 0, sizeof(p->slot));
	memset(&p->usage, 0, sizeof(p->usage));
	p->usage.at_s = since;
	p->usage_s = 0;
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
	store_done(st);
	p->usage_s = now_s;
	p->usage_mark = mark;
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
	const struct qname *nm = qmem_name(a->qm, row);
	sqlite3_stmt *st;
	int held, r;

	/* a preempted job comes back with its hold: billed once, never held twice */
	r = store_prep(a->db, "SELECT 1 FROM jobs WHERE id = ? AND hold_state = 'held'", "s", &st,
		       nm->id);
	if (r < 0)
		return r;
	held = sqlite3_step(st) == SQLITE_ROW;
	store_done(st);
	r = held ? 0 : budget_hold(a, nm->id, nm->tenant, nm->user, nm->est_micro, err,
					sizeof(err));
	if (r == -EDQUOT) {
		snprintf(reason, sizeof(reason), "rejected: %s", err);
		r = store_run(a->db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", reason, nm->id);
		return r < 0 ? r : store_set_state(a->db, nm->id, "failed", reason);
	}
	if (r == -EAGAIN) {
		snprintf(reason, sizeof(reason), "queued: %s", err);
		r = qmem_set_reason(a, row, reason);
		return r < 0 ? r : -EAGAIN;
	}
	if (r < 0)
		return r;
	r = place(a, nm->id, ranks, nf, n);
	if (r < 0)
		return r;
	p->run_ranks[row->t] += ranks;
	p->run_jobs[row->t]++;
	return 1;
}

/* Explains every waiting job near the front: place in line and projected start. */
static int explain_waiting(struct admitd *a, const char *cls, const struct sched_job *q, int n,
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
		if (slots == 0)
			snprintf(reason, sizeof(reason), "queued: no node of class %s is up; it "
				 "starts when one is back", cls ? cls : "cpu");
		else if (i == 0)
			snprintf(reason, sizeof(reason), "queued: next in line%s%s, needs %d rank%s "
				 "(%d free of %d), est. start %s", cls ? " on " : "", cls ? cls : "",
				 w[i].ranks, w[i].ranks == 1 ? "" : "s", free, slots, clk);
		else
			snprintf(reason, sizeof(reason), "queued: %d job%s ahead, est. start %s", i,
				 i == 1 ? "" : "s", clk);
		r = qmem_set_reason(a, &rows[w[i].id], reason);
		rows[w[i].id].shown = (uint32_t)(a->n_passes + 1);
	}
	*tail_seq = m;
	return r;
}

/* Whether any of the unsorted waiting jobs could ask for a preemption. */
static int tail_wants(const struct sched_job *q, int n, int free, int64_t low)
{
	for (int i = 0; i < n; i++)
		if (q[i].ranks > free && q[i].prio > low)
			return 1;
	return 0;
}

/* A waiting job that cannot start now and outranks running jobs marks the
 * lowest-priority of them (never an equal or higher priority, newest first)
 * that free enough ranks for preemption; one preemption at a time. Only jobs
 * that can checkpoint are taken (QUEUE_CAN_CHECKPOINT): one still starting
 * would lose its start-up, or die of the signal before its handler is set. The
 * running jobs are read once per pass (lowest priority first), and only when
 * some waiting job outranks one of them. */
static int preempt_for(struct admitd *a, const char *cls, struct sched_job *q, int nq,
		       int sorted, const int *started, int free)
{
	static struct {
		char id[ADMIT_MAX_STR + 1], tenant[ADMIT_MAX_STR + 1];
		int ranks, prio;
	} runs[QUEUE_PREEMPT_MAX];
	char why[ADMIT_MAX_ERROR];
	int64_t pending = 0, low = 0;
	int n_runs = -1, r;
	sqlite3_stmt *st;

	r = store_int_s(a->db, "SELECT count(*) FROM jobs WHERE state = 'running' AND"
			" preempt IS NOT NULL AND coalesce(class, 'cpu') = ?", cls, &pending);
	if (r == 0 && pending == 0)
		r = store_int_s(a->db, "SELECT coalesce(min(prio), 9223372036854775807) FROM jobs"
				" WHERE state = 'running' AND cancel_requested = 0 AND"
				" coalesce(class, 'cpu') = ? AND " QUEUE_CAN_CHECKPOINT, cls, &low);
	if (r < 0 || pending > 0 || low == INT64_MAX)
		return r;
	for (int i = 0; i < nq; i++) {
		struct qent *row = &a->qm->e[q[i].id];
		int freed = free, m = 0;

		if (i == sorted && tail_wants(q + i, nq - i, free, low)) {
			sched_order_rest(&a->sched, q, nq, sorted); /* rare: only then order it */
			sorted = nq;
		} else if (i == sorted) {
			break;
		}
		if (started[i] || q[i].ranks <= free || q[i].prio <= low)
			continue;
		if (n_runs < 0) {
			r = store_prep(a->db, "SELECT id, ranks, prio, tenant FROM jobs WHERE state ="
				       " 'running'"
				       " AND cancel_requested = 0 AND coalesce(class, 'cpu') = ? AND "
				       QUEUE_CAN_CHECKPOINT " ORDER BY prio, seq DESC LIMIT ?", "si",
				       &st, cls, (int64_t)QUEUE_PREEMPT_MAX);
			if (r < 0)
				return r;
			for (n_runs = 0; sqlite3_step(st) == SQLITE_ROW; n_runs++) {
				snprintf(runs[n_runs].id, sizeof(runs[0].id), "%s",
					 (const char *)sqlite3_column_text(st, 0));
				runs[n_runs].ranks = sqlite3_column_int(st, 1);
				runs[n_runs].prio = sqlite3_column_int(st, 2);
				snprintf(runs[n_runs].tenant, sizeof(runs[0].tenant), "%s",
					 (const char *)sqlite3_column_text(st, 3));
			}
			store_done(st);
		}
		while (m < n_runs && freed < q[i].ranks && runs[m].prio < q[i].prio)
			freed += runs[m++].ranks;
		if (freed < q[i].ranks)
			continue;
		for (int k = 0; k < m && r == 0; k++) {
			const struct qname *nm = qmem_name(a->qm, row);

			/* another tenant's job id is not the victim's to see */
			if (!strcmp(nm->tenant, runs[k].tenant))
				snprintf(why, sizeof(why), "preempted by higher-priority job %s "
					 "(priority %d)", nm->id, row->prio);
			else
				snprintf(why, sizeof(why), "preempted by a higher-priority job of "
					 "another tenant (priority %d)", row->prio);
			r = store_run(a->db, "UPDATE jobs SET preempt = ? WHERE id = ?", "ss", why,
				      runs[k].id);
			log_info("job %s: %s; asking its nodes to checkpoint it", runs[k].id, why);
		}
		return r;
	}
	return 0;
}

#define QUEUE_REPRICE_MAX 64 /* stranded jobs moved to another class per pass */

/* Queued jobs of node class k, whose nodes are all down, are priced again on
 * the classes that are up: one that another class may run (its device,
 * node_class and budget allow) moves there, with its new price, estimate and
 * an event saying why; one that no other class may run keeps waiting for its
 * own. A job that already holds budget (it was preempted or paused) stays:
 * its hold is for its price. Returns how many moved. */
static int reprice_stranded(struct admitd *a, const struct price_world *w, int k)
{
	const char *cls = a->qm->cls[k];
	char why[ADMIT_MAX_ERROR + 64];
	int moved = 0, tried = 0, r = 0;

	for (int i = 0; i < a->qm->n && r == 0 && tried < QUEUE_REPRICE_MAX; i++) {
		struct qent *row = &a->qm->e[i];
		const struct qname *nm = qmem_name(a->qm, row);
		struct queue_priced q;
		json_t *mj, *pj;
		sqlite3_stmt *st;
		int held;

		if (row->cls != k || row->gone)
			continue;
		tried++;
		r = store_prep(a->db, "SELECT model, params, hold_state IS NOT NULL FROM jobs WHERE"
			       " id = ? AND state = 'queued'", "s", &st, nm->id);
		if (r < 0)
			break;
		if (sqlite3_step(st) != SQLITE_ROW) {
			store_done(st);
			continue;
		}
		mj = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
		pj = json_loads((const char *)sqlite3_column_text(st, 1), 0, NULL);
		held = sqlite3_column_int(st, 2);
		store_done(st);
		r = held ? 0 : queue_price(w, nm->id, nm->tenant, nm->user, mj, pj, &q);
		json_decref(mj);
		json_decref(pj);
		if (r < 0 || held)
			continue;
		if (!q.rejected && strcmp(q.cls, cls)) {
			snprintf(why, sizeof(why), "re-priced: no node of class %s is up, so on %s: %s",
				 cls, q.cls, q.reason + strlen("priced: "));
			r = store_run(a->db, "UPDATE jobs SET ranks = ?, estimate = ?, est_s = ?,"
				      " est_micro = ?, class = ? WHERE id = ?", "isdiss",
				      (int64_t)q.ranks, q.est_json, q.est_s, q.est_micro, q.cls,
				      nm->id);
			if (r == 0)
				r = store_set_state(a->db, nm->id, "priced", why);
			if (r == 0)
				r = store_set_state(a->db, nm->id, "queued", QUEUE_QUEUED_REASON);
			if (r == 0)
				r = queue_put_estimate(a, nm->id, &q);
			if (r == 0) {
				log_info("job %s: %s", nm->id, why);
				moved++;
			}
		}
		queue_priced_free(&q);
	}
	if (moved)
		a->qm->loaded = 0; /* their rows changed class: the next pass reloads them */
	return r < 0 ? r : moved;
}

/* One pass over the queued jobs of node class k (queue_mem.cls[k]): the
 * policy orders them and starts what fits on that class's free slots. */
static int admit_class(struct admitd *a, const struct price_world *w, struct pass *p, int k,
		       struct sched_run *run, int n_run, double now_s)
{
	static struct node_free nf[ADMIT_MAX_NODES];
	static struct sched_job q[ADMIT_MAX_QUEUE];
	static int start[ADMIT_MAX_QUEUE], started[ADMIT_MAX_QUEUE];
	struct qent *rows = a->qm->e;
	const char *cls = a->qm->cls[k];
	/* name the class in reasons once there is more than the plain one */
	const char *label = a->qm->n_cls > 1 || strcmp(cls, "cpu") ? cls : NULL;
	int n, total, slots, nq = 0, sorted, r;
	struct sched_result res;
	int64_t shown;
	char why[256];

	r = load_free(a, cls, nf, ADMIT_MAX_NODES, &n, &total, &slots);
	if (r == 0 && slots == 0 && nodes_total_slots(w) > 0) {
		r = reprice_stranded(a, w, k);
		if (r > 0)
			return 0; /* the queue reloads next pass; the rest wait for it */
	}
	for (int i = 0; r == 0 && i < a->qm->n; i++) {
		struct qent *row = &rows[i];
		struct sched_job *j = &q[nq];

		if (row->cls != k)
			continue;
		row->gone = 0;
		if (row->t_gen != p->gen || row->t < 0) {
			row->t = pass_tenant(a, p, qmem_name(a->qm, row)->tenant);
			row->t_gen = p->gen;
		} else if (!p->quota_known[row->t]) {
			row->t = pass_tenant(a, p, qmem_name(a->qm, row)->tenant);
		}
		j->id = i;
		j->ranks = row->ranks;
		j->prio = row->prio;
		j->tenant = row->t < 0 ? SCHED_MAX_TENANTS - 1 : row->t;
		j->est_s = row->est_s;
		j->submit_s = row->submit_s;
		if (row->t < 0 || j->ranks <= 0)
			continue;
		/* a tenant at its quota waits whatever the policy says */
		if (quota_blocks(p, row->t, j->ranks, why, sizeof(why))) {
			r = qmem_set_reason(a, row, why);
			continue;
		}
		row->in_pass = (uint32_t)(a->n_passes + 1);
		nq++;
	}
	if (r < 0 || nq == 0)
		return r;
	/* a pass reads only the front of the order: the jobs that start (at most
	 * one per free rank), the blocked head, the backfill window and the jobs
	 * it explains; the rest share one reason and stay unsorted */
	sorted = sched_order_top(&a->sched, &p->usage, now_s, q, nq,
				 total + 1 + SCHED_BF_DEPTH + SCHED_PROJECT_DEPTH);
	sched_pass(&a->sched, now_s, total, q, nq, run, n_run, start, &res);
	memset(started, 0, nq * sizeof(*started));
	for (int i = 0; i < res.n_start && r >= 0; i++) {
		const struct sched_job *j = &q[start[i]];
		struct qent *row = &rows[j->id];

		if (quota_blocks(p, row->t, j->ranks, why, sizeof(why))) {
			r = qmem_set_reason(a, row, why);
			continue;
		}
		r = start_one(a, p, row, j->ranks, nf, n);
		if (r >= 0) {
			started[start[i]] = 1; /* started, or rejected and out of the queue */
			row->gone = 1;
			a->qm->n_gone++;
			total -= r > 0 ? j->ranks : 0;
			if (r > 0) {
				run[n_run].ranks = j->ranks;
				run[n_run++].end_s = now_s + j->est_s;
			}
		}
	}
	if (r < 0)
		return r; /* -EAGAIN: the ledger is unreachable, the first job says why */
	r = explain_waiting(a, label, q, nq, rows, started, run, n_run, total, slots, now_s,
			    &shown);
	if (r == 0 && slots > 0)
		r = preempt_for(a, cls, q, nq, sorted, started, total);
	return r;
}

/* Starts queued jobs by the queue policy (sched.c), class by class:
 * priority, fair share, EASY backfill that never delays the head's reserved
 * start; each start takes a ledger hold first and respects the tenant's
 * quota (counted over all classes). */
static int admit_queued(struct admitd *a, const struct price_world *w)
{
	static struct sched_run run[2 * ADMIT_MAX_QUEUE], cls_run[2 * ADMIT_MAX_QUEUE];
	static uint8_t run_cls[2 * ADMIT_MAX_QUEUE];
	static struct pass p;
	struct qent *rows = a->qm->e;
	double now_s = util_wall_us() / 1e6;
	int n_run = 0, r;
	uint64_t h;
	sqlite3_stmt *st;
	char why[256];

	r = load_usage(a, &p, now_s);
	pass_reset(&p);
	if (r == 0 && !a->qm->loaded)
		r = qmem_load(a);
	else if (r == 0 && a->qm->topup)
		r = qmem_topup(a);
	if (r == 0)
		r = store_prep(a->db, "SELECT tenant, ranks, coalesce(started_us, updated_us), est_s,"
			       " coalesce(class, 'cpu') FROM jobs WHERE state = 'running' LIMIT ?",
			       "i", &st, (int64_t)ADMIT_MAX_QUEUE);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW) {
		int t = pass_tenant(a, &p, (const char *)sqlite3_column_text(st, 0));

		run[n_run].ranks = sqlite3_column_int(st, 1);
		run[n_run].end_s = sqlite3_column_int64(st, 2) / 1e6 + sqlite3_column_double(st, 3);
		run_cls[n_run++] = (uint8_t)qmem_class(a->qm, (const char *)sqlite3_column_text(st, 4));
		if (t >= 0) {
			p.run_ranks[t] += sqlite3_column_int(st, 1);
			p.run_jobs[t]++;
		}
	}
	store_done(st);
	for (int k = 0; r == 0 && k < a->qm->n_cls; k++) {
		int m = 0;

		for (int i = 0; i < n_run; i++)
			if (run_cls[i] == k)
				cls_run[m++] = run[i];
		r = admit_class(a, w, &p, k, cls_run, m, now_s);
	}
	if (r == -EAGAIN)
		return 0; /* the ledger is unreachable: nothing more starts */
	if (r < 0)
		return r;
	snprintf(why, sizeof(why), "queued: more than %d jobs ahead", SCHED_PROJECT_DEPTH);
	h = qmem_reason_hash(why);
	/* every other waiting job: in row order, not policy order (memory order) */
	for (int i = 0; i < a->qm->n && r == 0; i++) {
		struct qent *row = &rows[i];

		if (row->cls == QMEM_NO_CLASS) {
			r = qmem_set_reason(a, row, "queued: more node classes are queued for than "
					    "admitd tracks at once (64); it is placed when the "
					    "others are gone");
			a->qm->loaded = 0; /* the next pass interns the classes afresh */
		}
		else if (row->in_pass == (uint32_t)(a->n_passes + 1) && !row->gone &&
			 row->shown != (uint32_t)(a->n_passes + 1))
			r = qmem_set_reason_h(a, row, why, h);
	}
	return r;
}

static double thread_cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int queue_schedule(struct admitd *a)
{
	uint64_t t0 = util_now_us();
	double c0 = thread_cpu_ms();
	struct price_world c;
	int r;

	a->sched_dirty = 0;
	r = nodes_world(a, &c);
	if (r < 0)
		return r;
	r = store_begin(a->db);
	if (r < 0)
		return r;
	r = price_submitted(a, &c);
	if (r == 0)
		r = admit_queued(a, &c);
	if (r == 0)
		r = store_commit(a->db);
	if (r < 0) {
		db_rollback(a->db);
		a->qm->loaded = 0; /* its reasons and removals did not happen */
		log_err_errno(r, "scheduling pass failed; will retry on the next tick");
		return r;
	}
	qmem_compact(a);
	a->pass_cpu_ms[a->n_passes % ADMIT_PASS_STATS] = thread_cpu_ms() - c0;
	a->pass_ms[a->n_passes++ % ADMIT_PASS_STATS] = (util_now_us() - t0) / 1e3;
	return 0;
}

int queue_cancel(struct admitd *a, const char *id, unsigned *status, char *err, size_t errlen)
{
	char state[16] = "", reason[256];
	sqlite3_stmt *st;
	int r, cancelling = 0;

	r = store_begin(a->db);
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
	store_done(st);
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
	r = store_commit(a->db);
	if (r < 0)
		goto out_rollback;
	if (*status == 200 && strcmp(state, "running"))
		qmem_remove(a, id);
	return 0;
out_rollback:
	db_rollback(a->db);
	return r;
}

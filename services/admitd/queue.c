/* queue — the job state machine up to "running": pricing of submitted jobs,
 * strict FIFO admission of queued jobs, placement of their ranks on nodes,
 * and cancellation. Also keeps the cached ledgerd rate pricing uses.
 *
 * Every pass runs in one SQLite transaction, so a crash leaves either the old
 * or the new assignment of a job, never half of one. Placement writes the
 * assign rows that the next heartbeat of each node turns into launches; this
 * file never talks to a node.
 */
#include "admitd.h"
#include "db.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_BATCH 256 /* jobs priced per pass; the rest wait for the next tick */

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
static int price_one(struct admitd *a, const struct price_cluster *c, sqlite3_stmt *row)
{
	const char *id = (const char *)sqlite3_column_text(row, 0);
	const char *tenant = (const char *)sqlite3_column_text(row, 1);
	const char *user = (const char *)sqlite3_column_text(row, 2);
	json_t *mj = json_loads((const char *)sqlite3_column_text(row, 3), 0, NULL);
	json_t *pj = json_loads((const char *)sqlite3_column_text(row, 4), 0, NULL);
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
	est = pricing_estimate_json(&pr);
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
	r = store_run(a->db, "UPDATE jobs SET ranks = ?, estimate = ? WHERE id = ?", "iss",
		      (int64_t)pr.chosen.ranks, est_s, id);
	if (r < 0)
		goto out;
	snprintf(reason, sizeof(reason), "priced: %s", pr.explain);
	r = store_set_state(a->db, id, "priced", reason);
	if (r == 0)
		r = store_set_state(a->db, id, "queued", "queued: in the FIFO queue");
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
		r = price_one(a, c, st);
		if (r < 0)
			break;
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

/* Starts queued jobs strictly in submission order while they fit. The head
 * that does not fit says what it waits for; the jobs behind it name it. */
static int admit_queued(struct admitd *a)
{
	static struct node_free nf[ADMIT_MAX_NODES];
	char reason[256], head[ADMIT_MAX_STR + 1];
	int n, total, ranks = 0, r;
	int64_t slots, seq = 0;
	sqlite3_stmt *st;

	r = load_free(a, nf, ADMIT_MAX_NODES, &n, &total);
	if (r == 0)
		r = db_query_int(a->db, "SELECT coalesce(sum(slots), 0) FROM nodes WHERE down = 0",
				 0, &slots);
	while (r == 0) {
		r = store_prep(a->db, "SELECT id, ranks, seq FROM jobs WHERE state = 'queued'"
			       " ORDER BY seq LIMIT 1", "", &st);
		if (r < 0)
			return r;
		if (sqlite3_step(st) != SQLITE_ROW) {
			sqlite3_finalize(st);
			return 0;
		}
		snprintf(head, sizeof(head), "%s", (const char *)sqlite3_column_text(st, 0));
		ranks = sqlite3_column_int(st, 1);
		seq = sqlite3_column_int64(st, 2);
		sqlite3_finalize(st);
		if (ranks <= 0 || ranks > total)
			break;
		r = place(a, head, ranks, nf, n);
		total -= ranks;
	}
	if (r < 0)
		return r;
	snprintf(reason, sizeof(reason), "queued: waiting for %d free rank%s (%d free of %lld)",
		 ranks, ranks == 1 ? "" : "s", total, (long long)slots);
	r = store_set_reason(a->db, head, reason);
	if (r < 0)
		return r;
	/* one statement for everyone behind the head, however long the queue */
	snprintf(reason, sizeof(reason), "queued: behind job %s in the FIFO queue", head);
	return store_run(a->db, "UPDATE jobs SET reason = ? WHERE state = 'queued' AND seq > ?"
			 " AND reason != ?", "sis", reason, seq, reason);
}

int queue_schedule(struct admitd *a)
{
	struct price_cluster c;
	int r;

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
		log_err_errno(r, "scheduling pass failed; will retry on the next tick");
	}
	return r;
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
	return 0;
out_rollback:
	db_rollback(a->db);
	return r;
}

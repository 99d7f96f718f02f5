/* learn — the estimator corrects itself from the ledger.
 *
 * A few seconds after a job succeeds (so the node's meter spool has reached
 * ledgerd), admitd reads the job's bill (GET /v1/jobs/{J}/bill), takes the
 * seconds one rank actually ran (metered rank-seconds ÷ ranks), derives the
 * efficiency the job achieved against what it was priced with
 * (pricing_observed_efficiency) and moves the efficiency of every node the
 * job ran on towards it (pricing_learn); when the bill shows metered energy,
 * the power one rank drew (kWh × 3.6e6 ÷ rank-seconds) moves those nodes'
 * watts per slot the same way. The update and jobs.learned = 1 are
 * one transaction, so a crash can neither lose nor repeat an observation.
 * Failed and cancelled jobs, and jobs dominated by fixed costs, teach nothing
 * (learned = -1). A bill that never arrives is given up after LEARN_GIVEUP_US.
 */
#include "admitd.h"
#include "db.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LEARN_DELAY_US (3 * 1000000ll)     /* after finish: the spool drains */
#define LEARN_GIVEUP_US (600 * 1000000ll)  /* no metered entries by then: skip */
#define LEARN_BATCH 8                      /* bills read per tick */
#define LEARN_TIMEOUT_MS 2000

struct learn_job {
	char id[ADMIT_MAX_STR + 1];
	int ranks;
	int64_t finished_us;
	struct price_option pred;
	double eff_used;
	int skip; /* priced before the estimator learned: nothing to compare */
};

/* Marks job id learned (1) or not learnable (-1). */
static int mark(struct admitd *a, const char *id, int v)
{
	return store_run(a->db, "UPDATE jobs SET learned = ? WHERE id = ?", "is", (int64_t)v, id);
}

/* Applies the efficiency observation obs (NAN: none) and the watts one
 * (NAN: no energy metered) to the nodes of job j and marks it learned (mark:
 * 1, or -1 when it taught nothing about speed). */
static int apply(struct admitd *a, const struct learn_job *j, double obs, double watts,
		 double actual_s, int mark_as)
{
	char nodes[8][ADMIT_MAX_STR + 1];
	double eff[8], w[8];
	int jobs[8], wjobs[8], n = 0, r;
	sqlite3_stmt *st;

	r = store_begin(a->db);
	if (r < 0)
		return r;
	r = store_prep(a->db, "SELECT n.id, coalesce(n.eff, ?), n.eff_jobs, n.watts, n.watts_jobs"
		       " FROM assign x JOIN nodes n ON n.id = x.node WHERE x.job = ? ORDER BY"
		       " x.first_rank LIMIT 8", "ds", &st, a->efficiency, j->id);
	if (r < 0)
		goto out_rollback;
	while (n < 8 && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(nodes[n], sizeof(nodes[0]), "%s", (const char *)sqlite3_column_text(st, 0));
		eff[n] = sqlite3_column_double(st, 1);
		jobs[n] = sqlite3_column_int(st, 2);
		w[n] = sqlite3_column_type(st, 3) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 3);
		wjobs[n++] = sqlite3_column_int(st, 4);
	}
	store_done(st);
	/* watts per busy slot: the first metered figure replaces the node's
	 * reported limit, later ones move it like the efficiency */
	for (int i = 0; r == 0 && !isnan(watts) && i < n; i++) {
		double nw = isnan(w[i]) ? watts : pricing_learn(w[i], wjobs[i], watts);

		r = store_run(a->db, "UPDATE nodes SET watts = ?, watts_jobs = watts_jobs + 1 WHERE"
			      " id = ?", "ds", nw, nodes[i]);
		if (r == 0)
			log_info("job %s drew %.0f W per rank: node %s power per slot %s%.0f W", j->id,
				 watts, nodes[i], isnan(w[i]) ? "" : "moves to ", nw);
	}
	for (int i = 0; r == 0 && !isnan(obs) && i < n; i++) {
		double e = pricing_learn(eff[i], jobs[i], obs);

		r = store_run(a->db, "UPDATE nodes SET eff = ?, eff_jobs = eff_jobs + 1 WHERE id = ?",
			      "ds", e, nodes[i]);
		if (r == 0)
			log_info("job %s ran %.1f s (predicted %.1f s at efficiency %.3f): node %s "
				 "efficiency %.3f -> %.3f (%d job%s)", j->id, actual_s,
				 j->pred.seconds, j->eff_used, nodes[i], eff[i], e, jobs[i] + 1,
				 jobs[i] ? "s" : "");
	}
	if (r == 0)
		r = mark(a, j->id, mark_as);
	if (r == 0)
		r = store_commit(a->db);
	if (r == 0)
		return 0;
out_rollback:
	db_rollback(a->db);
	return r;
}

/* Reads j's bill: 1 when learned or given up, 0 to retry later, -errno
 * when ledgerd is unreachable. */
static int learn_one(struct admitd *a, const struct learn_job *j)
{
	char path[ADMIT_MAX_STR + 32];
	json_t *resp = NULL, *met;
	double actual, obs, kwh, esec, watts;
	int64_t entries;
	long status = 0;
	int r;

	snprintf(path, sizeof(path), "/v1/jobs/%s/bill", j->id);
	r = hclient_json(a->ledgerd, "GET", path, NULL, NULL, LEARN_TIMEOUT_MS, &status, &resp);
	if (r < 0)
		return r;
	met = json_object_get(resp, "metered");
	entries = json_integer_value(json_object_get(met, "entries"));
	actual = json_number_value(json_object_get(met, "rank_seconds")) / j->ranks;
	kwh = json_number_value(json_object_get(met, "energy_kwh"));
	esec = json_number_value(json_object_get(met, "energy_rank_seconds"));
	/* average power of a rank over the metered time that carries energy
	 * (compute, wait and idle; an interval the node could not measure, e.g.
	 * across an agent crash, would otherwise dilute it) */
	watts = kwh > 0 && esec > 0 ? kwh * 3.6e6 / esec : NAN;
	if (!(watts < 1e5))
		watts = NAN;
	if (status != 200 || entries <= 0 || !(actual > 0)) {
		r = 0;
		if ((int64_t)util_wall_us() - j->finished_us > LEARN_GIVEUP_US) {
			log_warn("job %s: no metered bill in ledgerd %.0f s after it ended (%ld); "
				 "the estimator skips it", j->id, LEARN_GIVEUP_US / 1e6, status);
			r = mark(a, j->id, -1) < 0 ? 0 : 1;
		}
		goto out;
	}
	if (pricing_observed_efficiency(&j->pred, j->eff_used, actual, &obs) < 0) {
		log_info("job %s ran %.1f s, mostly fixed costs (predicted compute %.1f s): "
			 "nothing to learn about its speed", j->id, actual, j->pred.compute_s);
		if (isnan(watts))
			r = mark(a, j->id, -1) < 0 ? 0 : 1;
		else
			r = apply(a, j, NAN, watts, actual, -1) < 0 ? 0 : 1;
		goto out;
	}
	r = apply(a, j, obs, watts, actual, 1) < 0 ? 0 : 1;
out:
	json_decref(resp);
	return r;
}

void learn_tick(struct admitd *a)
{
	static struct learn_job jobs[LEARN_BATCH];
	int64_t now = (int64_t)util_wall_us();
	sqlite3_stmt *st;
	int n = 0;

	/* nothing to learn from jobs that did not run to the end */
	store_run(a->db, "UPDATE jobs SET learned = -1 WHERE learned = 0 AND state IN"
		  " ('failed', 'cancelled')", "");
	if (!a->ledgerd)
		return;
	if (store_prep(a->db, "SELECT id, ranks, finished_us, estimate FROM jobs WHERE learned = 0"
		       " AND state = 'succeeded' AND finished_us < ? ORDER BY finished_us LIMIT ?",
		       "ii", &st, now - LEARN_DELAY_US, (int64_t)LEARN_BATCH) < 0)
		return;
	while (n < LEARN_BATCH && sqlite3_step(st) == SQLITE_ROW) {
		struct learn_job *j = &jobs[n];
		json_t *e = json_loads((const char *)sqlite3_column_text(st, 3) ?: "null", 0, NULL);

		snprintf(j->id, sizeof(j->id), "%s", (const char *)sqlite3_column_text(st, 0));
		j->ranks = sqlite3_column_int(st, 1);
		j->finished_us = sqlite3_column_int64(st, 2);
		j->pred.ranks = j->ranks;
		j->pred.seconds = json_number_value(json_object_get(e, "seconds"));
		j->pred.compute_s = json_number_value(json_object_get(e, "compute_s"));
		j->pred.comm_s = json_number_value(json_object_get(e, "comm_s"));
		j->eff_used = json_number_value(json_object_get(e, "efficiency"));
		json_decref(e);
		j->skip = j->ranks <= 0 || !(j->eff_used > 0);
		n++;
	}
	store_done(st);
	for (int i = 0; i < n; i++) {
		if (jobs[i].skip)
			mark(a, jobs[i].id, -1);
		else if (learn_one(a, &jobs[i]) < 0)
			return; /* ledgerd unreachable: next tick */
	}
}

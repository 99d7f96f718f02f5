/* nodes — the node side of admission: heartbeats from noded and node liveness.
 *
 * A heartbeat upserts the node, applies what it reports about its jobs
 * (idempotently: a repeated report changes nothing), and is answered with the
 * launches assigned to that node that it has not reported yet, the jobs it
 * must kill and the jobs it must preempt (checkpoint and exit). A job whose
 * every assignment reports "preempted" goes back to the queue, keeping its
 * hold; it is relaunched with the next attempt's rendezvous key. A node
 * silent for --node-timeout is down: its running jobs fail and its slots are
 * not used until it speaks again. admitd never calls a node;
 * a slow node can only delay its own heartbeat.
 */
#include "admitd.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct hb_report {
	const char *job, *state, *error, *output_dir;
	json_t *progress;
};

/* The price of a rank-second on class c: ledgerd's rate for it; the default
 * when ledgerd cannot be asked; not offered (no_rate) when ledgerd has
 * rates but none for c. */
static void class_rate(const struct admitd *a, struct price_cluster *c)
{
	c->rate = a->rate_known ? a->rate : ADMIT_DEFAULT_RATE;
	c->rate_is_default = !a->rate_known;
	if (!a->rate_known || (a->n_rates == 0 && !strcmp(c->cls, "cpu")))
		return;
	for (int i = 0; i < a->n_rates; i++)
		if (!strcmp(a->rates[i].cls, c->cls)) {
			c->rate = a->rates[i].rank_second;
			return;
		}
	c->no_rate = 1;
}

/* The classes pricing sees, each from its nodes that are up: all their
 * slots, the speed of the slowest (probed FLOP/s × learned efficiency), the
 * worst measured allreduce α and β, the smallest memory (a GPU class: the
 * smallest GPU's). */
int nodes_world(struct admitd *a, struct price_world *w)
{
	sqlite3_stmt *st;
	int r;

	memset(w, 0, sizeof(*w));
	r = store_prep(a->db, "SELECT class, max(device = 'cuda'), coalesce(sum(slots), 0),"
		       " max(alpha_s), min(beta_bps), min(CASE WHEN device = 'cuda' THEN gpu_mem"
		       " ELSE mem_bytes END), max(coalesce(watts, watts_reported)),"
		       " max(watts IS NOT NULL) FROM nodes WHERE down = 0 AND slots > 0 GROUP BY class"
		       " ORDER BY class LIMIT ?", "i", &st, (int64_t)ADMIT_MAX_CLASSES);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct price_cluster *c = &w->c[w->n++];

		snprintf(c->cls, sizeof(c->cls), "%s", (const char *)sqlite3_column_text(st, 0));
		c->gpu = sqlite3_column_int(st, 1);
		c->total_slots = sqlite3_column_int(st, 2);
		c->alpha_s = sqlite3_column_double(st, 3);
		c->beta_bps = sqlite3_column_double(st, 4);
		c->mem_bytes = sqlite3_column_double(st, 5);
		c->watts = sqlite3_column_double(st, 6);
		c->watts_learned = sqlite3_column_int(st, 7);
		c->kwh_price = a->kwh_price;
	}
	store_done(st);
	for (int i = 0; i < w->n; i++) {
		struct price_cluster *c = &w->c[i];

		c->show_cls = w->n > 1 || strcmp(c->cls, "cpu");
		c->efficiency = a->efficiency;
		r = store_prep(a->db, "SELECT id, flops_per_slot, coalesce(eff, ?), eff_jobs FROM"
			       " nodes WHERE down = 0 AND slots > 0 AND class = ? ORDER BY"
			       " flops_per_slot * coalesce(eff, ?), id LIMIT 1", "dsd", &st,
			       a->efficiency, c->cls, a->efficiency);
		if (r < 0)
			return r;
		if (sqlite3_step(st) == SQLITE_ROW) {
			snprintf(c->eff_node, sizeof(c->eff_node), "%s",
				 (const char *)sqlite3_column_text(st, 0));
			c->flops_per_slot = sqlite3_column_double(st, 1);
			c->efficiency = sqlite3_column_double(st, 2);
			c->eff_jobs = sqlite3_column_int(st, 3);
		}
		store_done(st);
		class_rate(a, c);
	}
	return 0;
}

int nodes_total_slots(const struct price_world *w)
{
	int n = 0;

	for (int i = 0; i < w->n; i++)
		n += w->c[i].total_slots;
	return n;
}

/* Every rank of job id checkpointed on request. Preempted: back to the queue
 * with the same hold; the next placement bumps the attempt (a new rendezvous
 * key). Over its hold (jobs.overrun): paused with its hold, until the budget
 * allows the rest (budget.c resumes it) or it is cancelled; or, under
 * --overrun stop, ended with its checkpoint kept. The attempt's run time is
 * added to run_us either way. */
static int settle_preempted(sqlite3 *db, const char *id)
{
	char reason[ADMIT_MAX_ERROR + 192] = "", overrun[8] = "";
	int64_t step = 0, now = (int64_t)util_wall_us();
	const char *state = "queued";
	sqlite3_stmt *st;
	int r;

	r = store_prep(db, "SELECT coalesce(preempt, 'preempted'), max(coalesce(json_extract("
		       "progress, '$.step'), 0), coalesce(json_extract(progress, '$.ckpt_step'), 0)),"
		       " coalesce(overrun, '') FROM jobs WHERE id = ?", "s", &st, id);
	if (r < 0)
		return r;
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(reason, sizeof(reason), "%s", (const char *)sqlite3_column_text(st, 0));
		step = sqlite3_column_int64(st, 1);
		snprintf(overrun, sizeof(overrun), "%s", (const char *)sqlite3_column_text(st, 2));
	}
	store_done(st);
	if (!strcmp(overrun, "pause")) {
		state = "paused";
		snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
			 "; checkpointed at step %lld, resumes when the tenant's budget covers the"
			 " rest (or cancel it)", (long long)step);
	} else if (!strcmp(overrun, "stop")) {
		state = "failed";
		snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
			 "; checkpointed at step %lld", (long long)step);
	} else {
		snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
			 "; resumes from step %lld", (long long)step);
	}
	r = store_run(db, "DELETE FROM assign WHERE job = ?", "s", id);
	if (r == 0)
		r = store_run(db, "UPDATE jobs SET preempt = NULL, overrun = NULL, node = NULL,"
			      " run_us = run_us + max(0, ? - coalesce(attempt_us, ?)), attempt_us = NULL,"
			      " error = CASE WHEN ? THEN ? ELSE error END WHERE id = ?", "iiiss", now, now,
			      (int64_t)!strcmp(state, "failed"), reason, id);
	if (r == 0)
		r = store_rdv_cleanup(db, id);
	return r < 0 ? r : store_set_state(db, id, state, reason);
}

int nodes_settle_job(sqlite3 *db, const char *id)
{
	char reason[ADMIT_MAX_ERROR + 128] = "", err[ADMIT_MAX_ERROR + 1] = "";
	char stray[ADMIT_MAX_STR + 1] = "", stop[ADMIT_MAX_ERROR + 128] = "";
	int n = 0, n_final = 0, n_ok = 0, n_pre = 0, failed = 0, cancel_req = 0, r;
	int64_t started = 0, run_us = 0;
	sqlite3_stmt *st;

	r = store_prep(db, "SELECT j.state, j.cancel_requested, coalesce(j.started_us, 0), x.node,"
		       " x.state, x.error, coalesce(j.stop_reason, ''), j.run_us + max(0, ? -"
		       " coalesce(j.attempt_us, j.started_us, ?)) FROM assign x JOIN jobs j ON"
		       " j.id = x.job WHERE x.job = ? ORDER BY x.first_rank", "iis", &st,
		       (int64_t)util_wall_us(), (int64_t)util_wall_us(), id);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *js = (const char *)sqlite3_column_text(st, 0);
		const char *node = (const char *)sqlite3_column_text(st, 3);
		const char *as = (const char *)sqlite3_column_text(st, 4);
		const char *e = (const char *)sqlite3_column_text(st, 5);

		if (strcmp(js, "running"))
			goto out_finalize; /* already settled */
		cancel_req = sqlite3_column_int(st, 1);
		snprintf(stop, sizeof(stop), "%s", (const char *)sqlite3_column_text(st, 6));
		started = sqlite3_column_int64(st, 2);
		run_us = sqlite3_column_int64(st, 7);
		n++;
		if (!as || !strcmp(as, "running"))
			continue;
		n_final++;
		n_ok += !strcmp(as, "succeeded");
		n_pre += !strcmp(as, "preempted");
		if (!failed && (!strcmp(as, "failed") || !strcmp(as, "lost"))) {
			failed = 1;
			snprintf(err, sizeof(err), "%s", e && *e ? e : "");
			if (!err[0])
				snprintf(err, sizeof(err), "a rank on node %s failed", node);
		}
		if (!strcmp(as, "cancelled") && !stray[0])
			snprintf(stray, sizeof(stray), "%s", node);
	}
	if (n == 0)
		goto out_finalize;
	if (failed) {
		snprintf(reason, sizeof(reason), "failed: %s", err);
		r = store_run(db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", err, id);
		if (r == 0)
			r = store_set_state(db, id, "failed", reason);
	} else if (n_final == n && n_pre > 0 && n_pre + n_ok == n && !cancel_req) {
		r = settle_preempted(db, id);
	} else if (n_final == n && n_ok == n) {
		char d[32];

		/* the time it ran: attempts before a preemption or pause, and this one */
		pricing_fmt_duration(started ? run_us / 1e6 : 0, d, sizeof(d));
		snprintf(reason, sizeof(reason), "succeeded in %s", d);
		r = store_set_state(db, id, "succeeded", reason);
	} else if (n_final == n && cancel_req && stop[0]) {
		r = store_run(db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", stop, id);
		if (r == 0)
			r = store_set_state(db, id, "failed", stop);
	} else if (n_final == n && cancel_req) {
		r = store_set_state(db, id, "cancelled", "cancelled by request while running");
	} else if (n_final == n) {
		snprintf(err, sizeof(err), "node %s stopped the ranks without being asked", stray);
		snprintf(reason, sizeof(reason), "failed: %s", err);
		r = store_run(db, "UPDATE jobs SET error = ? WHERE id = ?", "ss", err, id);
		if (r == 0)
			r = store_set_state(db, id, "failed", reason);
	}
out_finalize:
	store_done(st);
	return r;
}

/* Stores a rank-0 progress report with the derived ETA. */
static int store_progress(sqlite3 *db, const char *id, json_t *in)
{
	static const char *const keys[] = {"step", "steps", "loss", "first_loss", "tokens_per_s",
					   "elapsed_s", "ckpt_step"};
	json_t *p = json_object(), *step, *steps, *el;
	char *s;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		json_t *v = json_object_get(in, keys[i]);

		if (json_is_number(v) && isfinite(json_number_value(v)))
			json_object_set(p, keys[i], v);
	}
	step = json_object_get(p, "step");
	steps = json_object_get(p, "steps");
	el = json_object_get(p, "elapsed_s");
	if (step && steps && el && json_number_value(step) > 0)
		json_object_set_new(p, "eta_s", json_real(json_number_value(el) *
			(json_number_value(steps) - json_number_value(step)) / json_number_value(step)));
	else
		json_object_set_new(p, "eta_s", json_null());
	json_object_set_new(p, "updated_us", json_integer((json_int_t)util_wall_us()));
	s = json_dumps(p, JSON_COMPACT);
	json_decref(p);
	if (!s)
		return -ENOMEM;
	r = store_run(db, "UPDATE jobs SET progress = ? WHERE id = ?", "ss", s, id);
	free(s);
	return r;
}

static void add_kill(json_t *kill, const char *job)
{
	size_t i;
	json_t *v;

	json_array_foreach(kill, i, v)
		if (!strcmp(json_string_value(v), job))
			return;
	json_array_append_new(kill, json_string(job));
}

/* Applies one job report of node; adds jobs the node must stop to kill. */
static int apply_report(sqlite3 *db, const char *node, const struct hb_report *rep, json_t *kill)
{
	int running = !strcmp(rep->state, "running"), first_rank = -1, r = 0;
	char as[16] = "";
	sqlite3_stmt *st;

	r = store_prep(db, "SELECT coalesce(state, ''), first_rank FROM assign WHERE job = ? AND"
		       " node = ?", "ss", &st, rep->job, node);
	if (r < 0)
		return r;
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(as, sizeof(as), "%s", (const char *)sqlite3_column_text(st, 0));
		first_rank = sqlite3_column_int(st, 1);
	}
	store_done(st);
	/* a preemption is only taken from the run it stopped, never from a
	 * stale report landing on the relaunch's fresh assignment */
	if (!strcmp(rep->state, "preempted") && strcmp(as, "running"))
		return 0;
	if (first_rank < 0 || (as[0] && strcmp(as, "running"))) {
		if (running) /* unknown here, or already settled: stop it */
			add_kill(kill, rep->job);
		return 0;
	}
	if (first_rank == 0 && rep->progress)
		r = store_progress(db, rep->job, rep->progress);
	if (r == 0 && running)
		r = store_run(db, "UPDATE assign SET state = 'running' WHERE job = ? AND node = ?",
			      "ss", rep->job, node);
	if (r == 0 && running)
		r = store_run(db, "UPDATE jobs SET started_us = coalesce(started_us, ?),"
			      " attempt_us = coalesce(attempt_us, ?) WHERE id = ?", "iis",
			      (int64_t)util_wall_us(), (int64_t)util_wall_us(), rep->job);
	if (r < 0 || running)
		return r;
	r = store_run(db, "UPDATE assign SET state = ?, error = ? WHERE job = ? AND node = ?",
		      "ssss", rep->state, rep->error, rep->job, node);
	if (r == 0 && first_rank == 0 && rep->output_dir)
		r = store_run(db, "UPDATE jobs SET output_dir = ? WHERE id = ?", "ss",
			      rep->output_dir, rep->job);
	if (r == 0)
		r = nodes_settle_job(db, rep->job);
	return r;
}

/* Assignments on node it has not reported although their job is being
 * cancelled or has ended: the node does not run them, so they end here. */
static int drop_unreported(sqlite3 *db, const char *node)
{
	char ids[64][ADMIT_MAX_STR + 1];
	sqlite3_stmt *st;
	int n, r = 0;

	/* batches: each dropped assignment leaves the selection */
	do {
		n = 0;
		r = store_prep(db, "SELECT x.job FROM assign x JOIN jobs j ON j.id = x.job WHERE"
			       " x.node = ? AND x.state IS NULL AND (j.cancel_requested = 1 OR"
			       " j.state != 'running') LIMIT 64", "s", &st, node);
		if (r < 0)
			return r;
		while (sqlite3_step(st) == SQLITE_ROW)
			snprintf(ids[n++], sizeof(ids[0]), "%s",
				 (const char *)sqlite3_column_text(st, 0));
		store_done(st);
		for (int i = 0; r == 0 && i < n; i++) {
			r = store_run(db, "UPDATE assign SET state = 'cancelled' WHERE job = ? AND"
				      " node = ?", "ss", ids[i], node);
			if (r == 0)
				r = nodes_settle_job(db, ids[i]);
		}
	} while (r == 0 && n > 0);
	return r;
}

/* A number field in [lo, hi] or absent; -EINVAL after replying 400. */
static int opt_number(struct httpd_req *req, json_t *o, const char *k, double lo, double hi)
{
	json_t *v = json_object_get(o, k);

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v) || !(json_number_value(v) >= lo) || json_number_value(v) > hi)
		return httpd_reply_error(req, 400, "'%s' must be a number in [%g, %g]", k, lo, hi),
		       -EINVAL;
	return 0;
}

/* The optional measured profile: "mem_bytes", "allreduce": {"alpha_s",
 * "beta_bps"}, "probed_us". */
static int parse_profile(struct httpd_req *req, json_t *b)
{
	json_t *ar = json_object_get(b, "allreduce");

	if (opt_number(req, b, "mem_bytes", 1 << 20, 1e16) < 0 ||
	    opt_number(req, b, "probed_us", 0, 1e17) < 0 ||
	    opt_number(req, b, "watts_per_slot", 0, 1e5) < 0)
		return -EINVAL;
	if (ar && !json_is_null(ar) && !json_is_object(ar))
		return httpd_reply_error(req, 400, "'allreduce' must be an object {\"alpha_s\", "
					 "\"beta_bps\"}"), -EINVAL;
	if (opt_number(req, ar, "alpha_s", 1e-9, 10) < 0 ||
	    opt_number(req, ar, "beta_bps", 1e3, 1e13) < 0)
		return -EINVAL;
	return 0;
}

/* The optional "class" (default "cpu"), "device" ("cpu" | "cuda") and, on
 * a GPU node, "gpus": [{"index", "name", "uuid", "mem_bytes"}], one per GPU
 * (a slot is a GPU there, so slots <= GPUs). */
static int parse_class(struct httpd_req *req, json_t *b)
{
	json_t *cls = json_object_get(b, "class"), *dev = json_object_get(b, "device");
	json_t *gpus = json_object_get(b, "gpus"), *g;
	size_t i;

	if (cls && !bundle_valid_class(json_string_value(cls)))
		return httpd_reply_error(req, 400, "'class' must be a node class name of 1-%d "
					 "chars [a-z0-9_.-]", BUNDLE_MAX_CLASS), -EINVAL;
	if (dev && (!json_is_string(dev) || (strcmp(json_string_value(dev), "cpu") &&
					     strcmp(json_string_value(dev), "cuda"))))
		return httpd_reply_error(req, 400, "'device' must be \"cpu\" or \"cuda\""),
		       -EINVAL;
	if (gpus && !json_is_null(gpus) &&
	    (!json_is_array(gpus) || json_array_size(gpus) > ADMIT_MAX_GPUS))
		return httpd_reply_error(req, 400, "'gpus' must be an array of at most %d GPUs",
					 ADMIT_MAX_GPUS), -EINVAL;
	json_array_foreach(gpus, i, g) {
		const char *name = json_string_value(json_object_get(g, "name"));
		json_t *uuid = json_object_get(g, "uuid");

		if (!json_is_object(g) || !name || strlen(name) > 96 ||
		    (uuid && (!json_is_string(uuid) || strlen(json_string_value(uuid)) > 96)))
			return httpd_reply_error(req, 400, "gpus[%zu]: 'name' and 'uuid' must be "
						 "strings of at most 96 chars", i), -EINVAL;
		if (opt_number(req, g, "mem_bytes", 1 << 20, 1e15) < 0 ||
		    opt_number(req, g, "index", 0, ADMIT_MAX_GPUS - 1) < 0)
			return -EINVAL;
	}
	if (dev && !strcmp(json_string_value(dev), "cuda") &&
	    (size_t)json_integer_value(json_object_get(b, "slots")) > json_array_size(gpus))
		return httpd_reply_error(req, 400, "a GPU node (device cuda) offers one slot per "
					 "GPU: 'slots' %lld exceeds the %zu GPUs in 'gpus'",
					 (long long)json_integer_value(json_object_get(b, "slots")),
					 json_array_size(gpus)), -EINVAL;
	return 0;
}

static double opt_double(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : -1;
}

/* Validates a heartbeat body into reps; replies 400 itself on a bad one. */
static int parse_heartbeat(struct httpd_req *req, json_t *b, struct hb_report *reps, int *n)
{
	static const char *const states[] = {"running", "succeeded", "failed", "cancelled",
					     "preempted"};
	json_t *jobs = json_object_get(b, "jobs"), *v;
	const char *node = json_string_value(json_object_get(b, "node"));
	const char *addr = json_string_value(json_object_get(b, "addr"));
	json_t *slots = json_object_get(b, "slots"), *fl = json_object_get(b, "flops_per_slot");
	size_t i;

	if (!node || !util_valid_name(node, ADMIT_MAX_STR))
		goto bad_node;
	if (json_object_get(b, "addr") && (!addr || strlen(addr) > ADMIT_MAX_ADDR))
		return httpd_reply_error(req, 400, "'addr' must be a string of at most %d chars",
					 ADMIT_MAX_ADDR), -EINVAL;
	if (!json_is_integer(slots) || json_integer_value(slots) < 0 ||
	    json_integer_value(slots) > ADMIT_MAX_NODE_SLOTS)
		return httpd_reply_error(req, 400, "'slots' must be an integer in [0, %d]",
					 ADMIT_MAX_NODE_SLOTS), -EINVAL;
	if (!json_is_number(fl) || !(json_number_value(fl) > 0) || json_number_value(fl) > 1e18)
		return httpd_reply_error(req, 400, "'flops_per_slot' must be a number in (0, 1e18]"),
		       -EINVAL;
	if (jobs && !json_is_array(jobs))
		return httpd_reply_error(req, 400, "'jobs' must be an array"), -EINVAL;
	if (parse_profile(req, b) < 0 || parse_class(req, b) < 0)
		return -EINVAL;
	if (json_array_size(jobs) > ADMIT_MAX_HB_JOBS)
		return httpd_reply_error(req, 400, "too many job reports (%zu > limit %d)",
					 json_array_size(jobs), ADMIT_MAX_HB_JOBS), -E2BIG;
	*n = 0;
	json_array_foreach(jobs, i, v) {
		struct hb_report *p = &reps[(*n)++];
		size_t k;

		p->job = json_string_value(json_object_get(v, "job"));
		p->state = json_string_value(json_object_get(v, "state"));
		p->error = json_string_value(json_object_get(v, "error"));
		p->output_dir = json_string_value(json_object_get(v, "output_dir"));
		p->progress = json_object_get(v, "progress");
		if (!p->job || !util_valid_name(p->job, ADMIT_MAX_STR))
			return httpd_reply_error(req, 400, "jobs[%zu]: 'job' must be a job id", i),
			       -EINVAL;
		for (k = 0; p->state && k < ARRAY_SIZE(states) && strcmp(p->state, states[k]); k++)
			;
		if (!p->state || k == ARRAY_SIZE(states))
			return httpd_reply_error(req, 400, "jobs[%zu]: 'state' must be running, "
						 "succeeded, failed, cancelled or preempted", i), -EINVAL;
		if ((p->error && strlen(p->error) > ADMIT_MAX_ERROR) ||
		    (p->output_dir && strlen(p->output_dir) > ADMIT_MAX_PATH))
			return httpd_reply_error(req, 400, "jobs[%zu]: 'error' or 'output_dir' is "
						 "too long (limits %d and %d chars)", i,
						 ADMIT_MAX_ERROR, ADMIT_MAX_PATH), -E2BIG;
		if (p->progress && !json_is_object(p->progress))
			return httpd_reply_error(req, 400, "jobs[%zu]: 'progress' must be an object",
						 i), -EINVAL;
	}
	return 0;
bad_node:
	httpd_reply_error(req, 400, "'node' must be a name of 1-%d chars [A-Za-z0-9_.-]",
			  ADMIT_MAX_STR);
	return -EINVAL;
}

/* Whether node may be up in class cls with slots of kind dev: one class is
 * one kind of slot, and the ledger prices at most ADMIT_MAX_CLASSES; 0, or
 * -EEXIST with the sentence in why. */
static int class_admissible(struct admitd *a, const char *node, const char *cls,
			    const char *dev, char *why, size_t whylen)
{
	char other[ADMIT_MAX_STR + 1] = "";
	int64_t count = 0;
	sqlite3_stmt *st;
	int r;

	r = store_prep(a->db, "SELECT id FROM nodes WHERE class = ? AND device <> ? AND id <> ? AND"
		       " down = 0 LIMIT 1", "sss", &st, cls, dev, node);
	if (r < 0)
		return r;
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(other, sizeof(other), "%s", (const char *)sqlite3_column_text(st, 0));
	store_done(st);
	if (other[0]) {
		snprintf(why, whylen, "node class %s trains on %s on node %s and this node's slots "
			 "are %s; give this node a class of its own (bursar-noded --class)", cls,
			 strcmp(dev, "cuda") ? "GPUs" : "CPUs", other,
			 strcmp(dev, "cuda") ? "CPUs" : "GPUs");
		return -EEXIST;
	}
	r = store_prep(a->db, "SELECT count(DISTINCT class) FROM nodes WHERE down = 0 AND"
		       " class <> ? AND id <> ?", "ss", &st, cls, node);
	if (r < 0)
		return r;
	if (sqlite3_step(st) == SQLITE_ROW)
		count = sqlite3_column_int64(st, 0);
	store_done(st);
	if (count >= ADMIT_MAX_CLASSES) {
		snprintf(why, whylen, "too many node classes up (limit %d): node %s's class %s "
			 "would be one more", ADMIT_MAX_CLASSES, node, cls);
		return -EEXIST;
	}
	return 0;
}

/* Records the node and its reports in one transaction. */
static int heartbeat_store(struct admitd *a, json_t *b, struct hb_report *reps, int n,
			   json_t *kill, unsigned *status, char *why, size_t whylen)
{
	const char *node = json_string_value(json_object_get(b, "node"));
	const char *addr = json_string_value(json_object_get(b, "addr"));
	const char *cls = json_string_value(json_object_get(b, "class"));
	const char *dev = json_string_value(json_object_get(b, "device"));
	json_t *gpus = json_object_get(b, "gpus"), *g;
	int64_t down = -1, count = 0;
	char *gj = NULL;
	double gmem = -1;
	sqlite3_stmt *st;
	int same = 0, r;
	size_t i;

	cls = cls ? cls : "cpu";
	dev = dev ? dev : "cpu";
	json_array_foreach(gpus, i, g) {
		double m = json_number_value(json_object_get(g, "mem_bytes"));

		if (m > 0 && (gmem < 0 || m < gmem))
			gmem = m;
	}
	r = store_begin(a->db);
	if (r < 0)
		return r;
	r = store_prep(a->db, "SELECT down, class = ? AND device = ? FROM nodes WHERE id = ?", "sss",
		       &st, cls, dev, node);
	if (r < 0)
		goto out_rollback;
	if (sqlite3_step(st) == SQLITE_ROW) {
		down = sqlite3_column_int64(st, 0);
		same = sqlite3_column_int(st, 1);
	}
	store_done(st);
	/* a node up in the same class and device passed these when it came up */
	if (down != 0 || !same) {
		r = class_admissible(a, node, cls, dev, why, whylen);
		if (r == -EEXIST)
			*status = 409;
		if (r < 0)
			goto out_rollback;
	}
	if (json_array_size(gpus) && !(gj = json_dumps(gpus, JSON_COMPACT))) {
		r = -ENOMEM;
		goto out_rollback;
	}
	if (down < 0) {
		store_int(a->db, "SELECT count(*) FROM nodes", 0, &count);
		if (count >= ADMIT_MAX_NODES) {
			*status = 507;
			r = -ENOSPC;
			goto out_rollback;
		}
		log_info("node %s registered: class %s, %lld %s slots of %.3g FLOP/s", node, cls,
			 (long long)json_integer_value(json_object_get(b, "slots")),
			 strcmp(dev, "cuda") ? "CPU" : "GPU",
			 json_number_value(json_object_get(b, "flops_per_slot")));
	} else if (down) {
		log_info("node %s is back", node);
	}
	r = store_run(a->db, "INSERT INTO nodes (id, addr, slots, flops_per_slot, last_seen_us, down,"
		      " mem_bytes, alpha_s, beta_bps, probed_us, class, device, gpus, gpu_mem,"
		      " watts_reported) VALUES (?, ?, ?, ?, ?, 0, nullif(?, -1), nullif(?, -1),"
		      " nullif(?, -1), nullif(?, -1), ?, ?, ?, nullif(?, -1), nullif(?, -1))"
		      " ON CONFLICT(id) DO UPDATE SET addr = excluded.addr,"
		      " slots = excluded.slots, flops_per_slot = excluded.flops_per_slot,"
		      " last_seen_us = excluded.last_seen_us, down = 0,"
		      " mem_bytes = coalesce(excluded.mem_bytes, mem_bytes),"
		      " alpha_s = coalesce(excluded.alpha_s, alpha_s),"
		      " beta_bps = coalesce(excluded.beta_bps, beta_bps),"
		      " probed_us = coalesce(excluded.probed_us, probed_us),"
		      " class = excluded.class, device = excluded.device, gpus = excluded.gpus,"
		      " gpu_mem = excluded.gpu_mem, watts_reported = excluded.watts_reported",
		      "ssididddisssdd", node,
		      addr ? addr : "", (int64_t)json_integer_value(json_object_get(b, "slots")),
		      json_number_value(json_object_get(b, "flops_per_slot")),
		      (int64_t)util_wall_us(), opt_double(b, "mem_bytes"),
		      opt_double(json_object_get(b, "allreduce"), "alpha_s"),
		      opt_double(json_object_get(b, "allreduce"), "beta_bps"),
		      (int64_t)opt_double(b, "probed_us"), cls, dev, gj, gmem,
		      opt_double(b, "watts_per_slot"));
	free(gj);
	gj = NULL;
	for (int i = 0; r == 0 && i < n; i++)
		r = apply_report(a->db, node, &reps[i], kill);
	if (r == 0)
		r = drop_unreported(a->db, node);
	if (r == 0)
		r = store_commit(a->db);
	if (r < 0)
		goto out_rollback;
	return 0;
out_rollback:
	free(gj);
	db_rollback(a->db);
	return r;
}

/* The launches and kills for node. */
static int heartbeat_reply(struct admitd *a, const char *node, json_t *launch, json_t *kill,
			   json_t *preempt, int *reprobe)
{
	sqlite3_stmt *st;
	int r;

	r = store_prep(a->db, "SELECT j.id, j.tenant, j.user, j.bundle_dir, j.model, j.params,"
		       " j.ranks, j.attempt, x.first_rank, x.n FROM assign x JOIN jobs j ON"
		       " j.id = x.job WHERE x.node = ? AND x.state IS NULL AND j.state = 'running'"
		       " AND j.cancel_requested = 0 ORDER BY j.seq", "s", &st, node);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		json_t *params = json_loads((const char *)sqlite3_column_text(st, 5), 0, NULL);
		json_t *ranks = json_array();
		int first = sqlite3_column_int(st, 8), n = sqlite3_column_int(st, 9);
		char key[ADMIT_MAX_STR + 24];

		for (int k = 0; k < n; k++)
			json_array_append_new(ranks, json_integer(first + k));
		if (params) /* the trainer reads the chosen rank count here */
			json_object_set_new(params, "ranks", json_integer(sqlite3_column_int(st, 6)));
		snprintf(key, sizeof(key), "%s.%d", id, sqlite3_column_int(st, 7));
		json_array_append_new(launch, json_pack(
			"{s:s, s:s, s:s, s:s, s:o, s:o, s:i, s:o, s:s, s:s}", "job", id, "tenant",
			sqlite3_column_text(st, 1), "user", sqlite3_column_text(st, 2), "bundle_dir",
			sqlite3_column_text(st, 3), "model",
			json_loads((const char *)sqlite3_column_text(st, 4), 0, NULL), "params",
			params ? params : json_null(), "size", sqlite3_column_int(st, 6), "ranks",
			ranks, "rdv", a->rdv, "rdv_key", key));
	}
	store_done(st);
	r = store_prep(a->db, "SELECT x.job FROM assign x JOIN jobs j ON j.id = x.job WHERE"
		       " x.node = ? AND x.state = 'running' AND (j.cancel_requested = 1 OR"
		       " j.state != 'running')", "s", &st, node);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW)
		add_kill(kill, (const char *)sqlite3_column_text(st, 0));
	store_done(st);
	r = store_prep(a->db, "SELECT x.job FROM assign x JOIN jobs j ON j.id = x.job WHERE"
		       " x.node = ? AND x.state = 'running' AND j.state = 'running' AND"
		       " j.cancel_requested = 0 AND j.preempt IS NOT NULL", "s", &st, node);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW)
		add_kill(preempt, (const char *)sqlite3_column_text(st, 0));
	store_done(st);
	/* repeated until the node reports a probe newer than the request */
	r = store_prep(a->db, "SELECT reprobe_us > coalesce(probed_us, 0) FROM nodes WHERE id = ?",
		       "s", &st, node);
	if (r < 0)
		return r;
	*reprobe = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
	store_done(st);
	return 0;
}

void nodes_heartbeat(struct httpd_req *req, struct admitd *a)
{
	static struct hb_report reps[ADMIT_MAX_HB_JOBS];
	json_t *b = httpd_req_json(req), *launch, *kill, *preempt;
	char why[512] = "";
	unsigned status = 500;
	int n = 0, reprobe = 0, r;

	if (!b)
		return;
	if (parse_heartbeat(req, b, reps, &n) < 0)
		goto out_decref;
	kill = json_array();
	r = heartbeat_store(a, b, reps, n, kill, &status, why, sizeof(why));
	if (r < 0) {
		json_decref(kill);
		if (why[0])
			httpd_reply_error(req, status, "%s", why);
		else if (r == -ENOSPC)
			httpd_reply_error(req, 507, "too many nodes registered (limit %d)",
					  ADMIT_MAX_NODES);
		else
			httpd_reply_error(req, status, "cannot record heartbeat: %s", strerror(-r));
		goto out_decref;
	}
	for (int i = 0; i < n; i++)
		if (!strcmp(reps[i].state, "preempted"))
			a->qm->loaded = 0; /* a job may be back in the queue */
	queue_schedule(a); /* freed slots or a new node may start queued jobs */
	launch = json_array();
	preempt = json_array();
	r = heartbeat_reply(a, json_string_value(json_object_get(b, "node")), launch, kill,
			    preempt, &reprobe);
	if (r < 0) {
		json_decref(launch);
		json_decref(kill);
		json_decref(preempt);
		httpd_reply_error(req, 500, "cannot read launches: %s", strerror(-r));
		goto out_decref;
	}
	httpd_reply_json(req, 200, json_pack("{s:o, s:o, s:o, s:b}", "launch", launch, "kill",
					     kill, "preempt", preempt, "reprobe", reprobe));
out_decref:
	json_decref(b);
}

int nodes_check_timeouts(struct admitd *a)
{
	uint64_t now = util_wall_us();
	char ids[16][ADMIT_MAX_STR + 1], jobs[64][ADMIT_MAX_STR + 1], err[ADMIT_MAX_STR + 64];
	sqlite3_stmt *st;
	int n = 0, changed = 0, r;

	if (now < a->start_us + a->node_timeout_us)
		return 0; /* grace after a restart: nodes have not had a chance to speak */
	r = store_prep(a->db, "SELECT id FROM nodes WHERE down = 0 AND last_seen_us < ? LIMIT 16",
		       "i", &st, (int64_t)(now - a->node_timeout_us));
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW)
		snprintf(ids[n++], sizeof(ids[0]), "%s", (const char *)sqlite3_column_text(st, 0));
	store_done(st);
	for (int i = 0; i < n; i++) {
		log_warn("node %s stopped responding (no heartbeat for %.0f s); its jobs fail and "
			 "its slots are not used", ids[i], a->node_timeout_us / 1e6);
		snprintf(err, sizeof(err), "node %s stopped responding", ids[i]);
		r = store_begin(a->db);
		if (r < 0)
			return r;
		r = store_run(a->db, "UPDATE nodes SET down = 1 WHERE id = ?", "s", ids[i]);
		if (r == 0)
			r = store_run(a->db, "UPDATE assign SET state = 'lost', error = ? WHERE"
				      " node = ? AND (state IS NULL OR state = 'running')", "ss", err,
				      ids[i]);
		/* settle in batches: each settled job leaves the 'running' set */
		while (r == 0) {
			int nj = 0;

			r = store_prep(a->db, "SELECT x.job FROM assign x JOIN jobs j ON j.id = x.job"
				       " WHERE x.node = ? AND x.state = 'lost' AND j.state = 'running'"
				       " LIMIT 64", "s", &st, ids[i]);
			if (r < 0)
				break;
			while (sqlite3_step(st) == SQLITE_ROW)
				snprintf(jobs[nj++], sizeof(jobs[0]), "%s",
					 (const char *)sqlite3_column_text(st, 0));
			store_done(st);
			if (nj == 0)
				break;
			for (int k = 0; r == 0 && k < nj; k++)
				r = nodes_settle_job(a->db, jobs[k]);
		}
		if (r == 0)
			r = store_commit(a->db);
		if (r < 0) {
			db_rollback(a->db);
			return log_err_errno(r, "cannot mark node %s down", ids[i]);
		}
		changed = 1;
	}
	return changed;
}

static json_t *col_num(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return json_null();
	if (sqlite3_column_type(st, i) == SQLITE_INTEGER)
		return json_integer(sqlite3_column_int64(st, i));
	return json_real(sqlite3_column_double(st, i));
}

/* Asks node id to measure itself again: flagged in its heartbeat replies
 * until it reports a probe newer than now. 0, or -ENOENT. */
int nodes_reprobe(struct admitd *a, const char *id)
{
	int r;

	r = store_run(a->db, "UPDATE nodes SET reprobe_us = ? WHERE id = ?", "is",
		      (int64_t)util_wall_us(), id);
	if (r < 0)
		return r;
	return sqlite3_changes(a->db) ? 0 : -ENOENT;
}

/* The node table for operators: capacity, measured speed, liveness, and the
 * slots in use (assignments not yet reported finished). */
int nodes_list(struct admitd *a, json_t **out)
{
	json_t *list = json_array();
	sqlite3_stmt *st;
	int r;

	if (!list)
		return -ENOMEM;
	r = store_prep(a->db, "SELECT n.id, n.addr, n.slots, n.flops_per_slot, n.last_seen_us,"
		       " n.down, coalesce((SELECT sum(x.n) FROM assign x WHERE x.node = n.id AND"
		       " (x.state IS NULL OR x.state = 'running')), 0), coalesce(n.eff, ?),"
		       " n.eff_jobs, n.mem_bytes, n.alpha_s, n.beta_bps, n.probed_us,"
		       " n.reprobe_us > coalesce(n.probed_us, 0), n.class, n.device, n.gpus,"
		       " n.watts_reported, n.watts, n.watts_jobs FROM nodes n ORDER BY n.id"
		       " LIMIT ?", "di", &st, a->efficiency, (int64_t)ADMIT_MAX_NODES);
	if (r < 0) {
		json_decref(list);
		return r;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *gs = (const char *)sqlite3_column_text(st, 16);
		json_t *gpus = gs ? json_loads(gs, 0, NULL) : NULL;

		json_array_append_new(list, json_pack(
			"{s:s, s:s, s:i, s:f, s:I, s:b, s:i, s:f, s:i, s:o, s:{s:o, s:o}, s:o, s:b, s:s,"
			" s:s, s:o, s:{s:o, s:o, s:i}}",
			"id", (const char *)sqlite3_column_text(st, 0),
			"addr", (const char *)sqlite3_column_text(st, 1),
			"slots", sqlite3_column_int(st, 2),
			"flops_per_slot", sqlite3_column_double(st, 3),
			"last_seen_us", (json_int_t)sqlite3_column_int64(st, 4),
			"down", sqlite3_column_int(st, 5),
			"used", sqlite3_column_int(st, 6),
			"efficiency", sqlite3_column_double(st, 7),
			"efficiency_jobs", sqlite3_column_int(st, 8),
			"mem_bytes", col_num(st, 9), "allreduce", "alpha_s", col_num(st, 10),
			"beta_bps", col_num(st, 11), "probed_us", col_num(st, 12),
			"reprobe_pending", sqlite3_column_int(st, 13),
			"class", (const char *)sqlite3_column_text(st, 14),
			"device", (const char *)sqlite3_column_text(st, 15),
			"gpus", gpus ? gpus : json_array(),
			"watts_per_slot", "reported", col_num(st, 17), "metered", col_num(st, 18),
			"jobs", sqlite3_column_int(st, 19)));
	}
	store_done(st);
	*out = json_pack("{s:o}", "nodes", list);
	return 0;
}

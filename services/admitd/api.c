/* api — admitd's HTTP routes (services/README.md, "admitd"): request
 * validation, JSON in and out. Owns no state of its own: jobs are written
 * through store.c and moved through their states by queue.c and nodes.c.
 * Every user-controlled string, list and count is capped here before it
 * reaches the database.
 */
#include "admitd.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_DEFAULT_LIST 100

/* A printable string of 1..max chars (names shown to people). */
static int valid_text(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > max)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

static int valid_path(const char *s)
{
	return valid_text(s, ADMIT_MAX_PATH) && s[0] == '/' && !strstr(s, "/../") &&
	       (strlen(s) < 3 || strcmp(s + strlen(s) - 3, "/.."));
}

/* Reads a required name field; replies 400 itself when it is missing or bad. */
static const char *need_name(struct httpd_req *req, json_t *b, const char *k)
{
	const char *s = json_string_value(json_object_get(b, k));

	if (!s || !util_valid_name(s, ADMIT_MAX_STR)) {
		httpd_reply_error(req, 400, "'%s' must be a name of 1-%d chars [A-Za-z0-9_.-]%s%.60s%s",
				  k, ADMIT_MAX_STR, s ? ", got '" : "", s ? s : "", s ? "'" : "");
		return NULL;
	}
	return s;
}

int api_need_operator(struct httpd_req *req, const char *what, const char *t, int read_own)
{
	const char *role = httpd_req_header(req, ADMIT_ROLE_HEADER);
	const char *own = httpd_req_header(req, ADMIT_TENANT_HEADER);

	if (!role || !strcmp(role, "operator"))
		return 0;
	if (read_own && t && own && !strcmp(own, t))
		return 0;
	httpd_reply_error(req, 403, "%s needs the operator role (the caller has role '%.32s')",
			  what, role);
	return -EPERM;
}

static void reply_job(struct httpd_req *req, struct admitd *a, unsigned status, const char *id)
{
	json_t *j;
	int r = store_job_get(a->db, id, &j);

	if (r == -ENOENT)
		httpd_reply_error(req, 404, "no such job: %s", id);
	else if (r < 0)
		httpd_reply_error(req, 500, "cannot read job %s: %s", id, strerror(-r));
	else
		httpd_reply_json(req, status, j);
}

/* Prices the job and inserts its row in its final state, in one transaction:
 * "queued" (or "failed" when its price is refused), or "submitted" when there
 * is no node to price against yet. Its events say submitted, priced, queued,
 * as if it had moved through them. -EDQUOT when the tenant is at its cap.
 *
 * Durability: this transaction commits with synchronous=NORMAL (WAL), and
 * the reply leaves only after the commit, so kill -9 or a crash of admitd
 * never loses an acknowledged job. A power cut may lose the submissions of
 * the last second at most (admitd.c syncs the WAL every second, and every
 * pass that starts a job, takes a hold or cancels commits FULL, which syncs
 * these too); nothing of such a job has left admitd then: no ledger hold, no
 * launch. The ledger itself stays FULL. */
static int insert_job(struct admitd *a, const char *id, json_t *b, const char *name,
		      json_t *model, json_t *params, const struct price_world *c, json_t **out)
{
	int have_nodes = nodes_total_slots(c) > 0;
	const char *tenant = json_string_value(json_object_get(b, "tenant"));
	const char *user = json_string_value(json_object_get(b, "user"));
	const char *submitted = have_nodes ? "submitted: waiting to be priced"
					   : "waiting for a node to register (nothing to price against)";
	const char *state = "submitted", *reason = submitted;
	char *ms = json_dumps(model, JSON_COMPACT), *ps = json_dumps(params, JSON_COMPACT);
	int64_t now = (int64_t)util_wall_us(), active = 0;
	/* The request's "priority" wins; else the bundle's (bursar.json, overrides). */
	int64_t prio = json_integer_value(json_object_get(b, "priority") ?
					  json_object_get(b, "priority") :
					  json_object_get(params, "priority"));
	struct queue_priced q = {0};
	struct store_fresh f = {0};
	struct qent e = {0};
	struct qname nm;
	sqlite3_stmt *st;
	int r = -ENOMEM;

	if (!ms || !ps)
		goto out_free;
	if (have_nodes) {
		r = queue_price(c, id, tenant, user, model, params, &q);
		if (r < 0)
			goto out_free;
		state = q.rejected ? "failed" : "queued";
		reason = q.rejected ? q.reason : QUEUE_QUEUED_REASON;
	}
	r = store_run(a->db, "PRAGMA synchronous=NORMAL", "");
	if (r == 0)
		r = store_begin(a->db);
	if (r < 0)
		goto out_sync;
	/* unfinished jobs, through the (tenant, state) index: never the tenant's history */
	r = store_prep(a->db, "SELECT count(*) FROM jobs WHERE tenant = ? AND state IN "
		       STORE_UNFINISHED, "s", &st, tenant);
	if (r < 0)
		goto out_rollback;
	if (sqlite3_step(st) == SQLITE_ROW)
		active = sqlite3_column_int64(st, 0);
	store_done(st);
	if (active >= ADMIT_MAX_ACTIVE) {
		r = -EDQUOT;
		goto out_rollback;
	}
	r = store_run(a->db, "INSERT INTO jobs (id, tenant, user, bundle_id, bundle_dir, name, state,"
		      " reason, model, params, created_us, updated_us, prio, ranks, estimate, est_s,"
		      " est_micro, error, finished_us, class) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
		      " ?, ?, ?, ?, ?, ?, ?, nullif(?, 0), nullif(?, ''))", "ssssssssssiiiisdisis", id,
		      tenant, user,
		      json_string_value(json_object_get(b, "bundle_id")),
		      json_string_value(json_object_get(b, "bundle_dir")), name, state, reason, ms,
		      ps, now, now, prio, (int64_t)q.ranks, q.est_json, q.est_s, q.est_micro,
		      q.rejected ? q.reason : NULL, q.rejected ? now : (int64_t)0, q.cls);
	e.seq = sqlite3_last_insert_rowid(a->db);
	if (r == 0)
		r = store_run(a->db, "INSERT INTO job_events (job, ts_us, state, reason) VALUES"
			      " (?, ?, 'submitted', ?)", "sis", id, now, submitted);
	if (r == 0 && have_nodes && !q.rejected)
		r = store_run(a->db, "INSERT INTO job_events (job, ts_us, state, reason) VALUES"
			      " (?, ?, 'priced', ?), (?, ?, 'queued', ?)", "sissis", id, now, q.reason,
			      id, now, QUEUE_QUEUED_REASON);
	if (r == 0 && q.rejected)
		r = store_run(a->db, "INSERT INTO job_events (job, ts_us, state, reason) VALUES"
			      " (?, ?, 'failed', ?)", "sis", id, now, q.reason);
	if (r == 0 && have_nodes && !q.rejected)
		r = queue_put_estimate(a, id, &q);
	if (r == 0)
		r = store_commit(a->db);
	if (r < 0)
		goto out_rollback;
	a->unsynced = 1;
	log_info("job %s: submitted by %s/%s: %s", id, tenant, user,
		 have_nodes && !q.rejected ? q.reason : reason);
	f = (struct store_fresh){.id = id, .tenant = tenant, .user = user, .name = name,
		.bundle_id = json_string_value(json_object_get(b, "bundle_id")),
		.bundle_dir = json_string_value(json_object_get(b, "bundle_dir")), .state = state,
		.reason = reason, .error = q.rejected ? q.reason : NULL, .model = model,
		.params = params, .estimate = q.est, .ranks = q.ranks, .prio = prio,
		.created_us = now, .finished_us = q.rejected ? now : 0, .n_events = 1,
		.events = {{"submitted", submitted}}};
	if (q.rejected)
		f.events[f.n_events++] = (struct store_event){"failed", q.reason};
	else if (have_nodes) {
		f.events[f.n_events++] = (struct store_event){"priced", q.reason};
		f.events[f.n_events++] = (struct store_event){"queued", QUEUE_QUEUED_REASON};
	}
	*out = store_job_fresh(&f);
	if (have_nodes && !q.rejected) {
		snprintf(nm.id, sizeof(nm.id), "%s", id);
		snprintf(nm.tenant, sizeof(nm.tenant), "%s", tenant);
		snprintf(nm.user, sizeof(nm.user), "%s", user);
		nm.est_micro = q.est_micro;
		e.ranks = q.ranks;
		e.prio = (int)prio;
		e.est_s = q.est_s;
		e.submit_s = now / 1e6;
		e.reason_h = qmem_reason_hash(QUEUE_QUEUED_REASON);
		e.cls = (uint8_t)qmem_class(a->qm, q.cls);
		queue_note_entry(a, &e, &nm);
	} else {
		a->sched_dirty = 1;
	}
	goto out_sync;
out_rollback:
	db_rollback(a->db);
out_sync:
	if (store_run(a->db, "PRAGMA synchronous=FULL", "") < 0)
		log_err("cannot set synchronous=FULL again on admitd.db");
out_free:
	queue_priced_free(&q);
	free(ms);
	free(ps);
	return r;
}

static void post_job(struct httpd_req *req, void *ud)
{
	struct admitd *a = ud;
	json_t *b = httpd_req_json(req), *mj = NULL, *pj = NULL, *reply = NULL;
	const char *name, *dir;
	struct price_world c;
	struct model_config m;
	struct train_params p;
	char err[512], hex[13], id[16];
	int r;

	if (!b)
		return;
	if (!need_name(req, b, "tenant") || !need_name(req, b, "user") ||
	    !need_name(req, b, "bundle_id"))
		goto out;
	dir = json_string_value(json_object_get(b, "bundle_dir"));
	if (!valid_path(dir)) {
		httpd_reply_error(req, 400, "'bundle_dir' must be an absolute path of at most %d "
				  "chars without '..'", ADMIT_MAX_PATH);
		goto out;
	}
	name = json_string_value(json_object_get(b, "name"));
	if (json_object_get(b, "name") && !json_is_null(json_object_get(b, "name")) &&
	    !valid_text(name, ADMIT_MAX_STR)) {
		httpd_reply_error(req, 400, "'name' must be 1-%d printable chars", ADMIT_MAX_STR);
		goto out;
	}
	if (!name)
		name = json_string_value(json_object_get(b, "bundle_id"));
	if (json_object_get(b, "priority") &&
	    (!json_is_integer(json_object_get(b, "priority")) ||
	     llabs(json_integer_value(json_object_get(b, "priority"))) > ADMIT_MAX_PRIO)) {
		httpd_reply_error(req, 400, "'priority' must be an integer in [-%d, %d]",
				  ADMIT_MAX_PRIO, ADMIT_MAX_PRIO);
		goto out;
	}
	r = pricing_parse_spec(json_object_get(b, "model"), json_object_get(b, "params"), &m, &p,
			       err, sizeof(err));
	if (r < 0) {
		httpd_reply_error(req, 400, "%s", err);
		goto out;
	}
	r = nodes_world(a, &c);
	if (r == 0 && c.n > 0) {
		int big = 0;

		for (int i = 1; i < c.n; i++)
			if (c.c[i].total_slots > c.c[big].total_slots)
				big = i;
		if (p.ranks > c.c[big].total_slots && c.n == 1) {
			httpd_reply_error(req, 400, "needs %d ranks, the cluster has %d", p.ranks,
					  c.c[big].total_slots);
			goto out;
		} else if (p.ranks > c.c[big].total_slots) {
			httpd_reply_error(req, 400, "needs %d ranks, the largest node class (%s) has "
					  "%d", p.ranks, c.c[big].cls, c.c[big].total_slots);
			goto out;
		}
	}
	/* a priority preempts other tenants' jobs: a user asks for at most
	 * what an operator gave the tenant (max_priority, default 0) */
	{
		const char *role = httpd_req_header(req, ADMIT_ROLE_HEADER);
		const char *tenant = json_string_value(json_object_get(b, "tenant"));
		int64_t prio = json_object_get(b, "priority") ?
				       json_integer_value(json_object_get(b, "priority")) : p.priority;
		struct tenant_quota tq;

		if (role && strcmp(role, "operator") && tenant &&
		    tenants_quota(a->db, tenant, &tq) == 0 && prio > tq.max_priority) {
			httpd_reply_error(req, 403, "priority %lld is above the %d tenant %s may use; "
					  "an operator raises it (PUT /v1/tenants/%s "
					  "{\"max_priority\": N})", (long long)prio,
					  tq.max_priority, tenant, tenant);
			goto out;
		}
	}
	mj = modelcfg_to_json(&m);
	pj = trainparams_to_json(&p);
	util_random_hex(hex, 6);
	snprintf(id, sizeof(id), "j-%s", hex);
	if (r < 0) {
		httpd_reply_error(req, 500, "cannot read nodes: %s", strerror(-r));
		goto out;
	}
	r = insert_job(a, id, b, name, mj, pj, &c, &reply);
	if (r == -EDQUOT) {
		httpd_reply_error(req, 429, "tenant '%s' has %d unfinished jobs (limit %d); wait for "
				  "some to finish or cancel them",
				  json_string_value(json_object_get(b, "tenant")), ADMIT_MAX_ACTIVE,
				  ADMIT_MAX_ACTIVE);
		goto out;
	}
	if (r < 0) {
		log_err_errno(r, "cannot store job %s", id);
		httpd_reply_error(req, 500, "cannot store job: %s", strerror(-r));
		goto out;
	}
	/* answered at once: the coalesced pass (admitd.c) starts it or says
	 * where it stands within SCHED_TICK_US */
	if (reply)
		httpd_reply_json(req, 201, reply);
	else
		reply_job(req, a, 201, id);
out:
	json_decref(mj);
	json_decref(pj);
	json_decref(b);
}

static void list_jobs(struct httpd_req *req, void *ud)
{
	struct admitd *a = ud;
	const char *tenant = httpd_req_query(req, "tenant");
	const char *ls = httpd_req_query(req, "limit"), *state = httpd_req_query(req, "state");
	const char *bs = httpd_req_query(req, "before");
	static const char *const states[] = {"active", "submitted", "priced", "queued", "running",
					     "paused", "succeeded", "failed", "cancelled"};
	long limit = API_DEFAULT_LIST;
	long long before = 0;
	int64_t next = 0;
	json_t *jobs;
	char *end;
	int r, ok = !state;

	if (tenant && !util_valid_name(tenant, ADMIT_MAX_STR)) {
		httpd_reply_error(req, 400, "'tenant' must be a name of 1-%d chars [A-Za-z0-9_.-]",
				  ADMIT_MAX_STR);
		return;
	}
	if (ls) {
		limit = strtol(ls, &end, 10);
		if (*end || end == ls || limit < 1 || limit > ADMIT_MAX_LIST) {
			httpd_reply_error(req, 400, "'limit' must be an integer in [1, %d], got '%.20s'",
					  ADMIT_MAX_LIST, ls);
			return;
		}
	}
	for (size_t i = 0; state && i < ARRAY_SIZE(states); i++)
		ok |= !strcmp(state, states[i]);
	if (!ok) {
		httpd_reply_error(req, 400, "'state' must be active (the unfinished jobs) or a job "
				  "state (submitted, priced, queued, running, paused, succeeded, "
				  "failed, cancelled), got '%.20s'", state);
		return;
	}
	if (bs) {
		before = strtoll(bs, &end, 10);
		if (*end || end == bs || before < 1) {
			httpd_reply_error(req, 400, "'before' must be the 'next_before' of a previous "
					  "page, got '%.20s'", bs);
			return;
		}
	}
	r = store_job_list(a->db, tenant, state ? state : "", before, (int)limit, &jobs, &next);
	if (r < 0) {
		httpd_reply_error(req, 500, "cannot list jobs: %s", strerror(-r));
		return;
	}
	/* next_before: where the next (older) page starts, when there may be one */
	httpd_reply_json(req, 200, json_pack("{s:o, s:o}", "jobs", jobs, "next_before",
					     next ? json_integer(next) : json_null()));
}

static void get_job(struct httpd_req *req, void *ud)
{
	reply_job(req, ud, 200, httpd_req_arg(req, 0));
}

static void cancel_job(struct httpd_req *req, void *ud)
{
	struct admitd *a = ud;
	const char *id = httpd_req_arg(req, 0);
	unsigned status = 500;
	char err[256] = "";
	int r;

	r = queue_cancel(a, id, &status, err, sizeof(err));
	if (r < 0) {
		httpd_reply_error(req, 500, "cannot cancel job %s: %s", id, strerror(-r));
		return;
	}
	if (status != 200) {
		httpd_reply_error(req, status, "%s", err);
		return;
	}
	queue_schedule(a); /* the next job may now be at the head of the queue */
	reply_job(req, a, 200, id);
}

static void post_estimate(struct httpd_req *req, void *ud)
{
	struct admitd *a = ud;
	json_t *b = httpd_req_json(req), *est;
	struct price_result pr;
	struct price_world c;
	struct model_config m;
	struct train_params p;
	char err[512];
	int r;

	if (!b)
		return;
	r = pricing_parse_spec(json_object_get(b, "model"), json_object_get(b, "params"), &m, &p,
			       err, sizeof(err));
	if (r < 0) {
		httpd_reply_error(req, 400, "%s", err);
		goto out;
	}
	r = nodes_world(a, &c);
	if (r < 0) {
		httpd_reply_error(req, 500, "cannot read nodes: %s", strerror(-r));
		goto out;
	}
	r = pricing_world_choose(&m, &p, &c, &pr, err, sizeof(err));
	if (r == -ENODEV)
		httpd_reply_error(req, 409, "%s", err);
	else if (r == -E2BIG || r == -EOPNOTSUPP)
		httpd_reply_error(req, 400, "%s", err);
	else if (r < 0 && r != -EDQUOT)
		httpd_reply_error(req, 500, "cannot price: %s", strerror(-r));
	if (r < 0 && r != -EDQUOT)
		goto out;
	est = pricing_estimate_json(&pr, &c.c[pr.cls]);
	if (r == -EDQUOT) /* the price of the cheapest, and why a job would be refused */
		json_object_set_new(est, "rejected", json_string(err));
	json_object_set_new(est, "candidates", pricing_candidates_json(&m, &p, &c));
	httpd_reply_json(req, 200, est);
out:
	json_decref(b);
}

static void heartbeat(struct httpd_req *req, void *ud)
{
	nodes_heartbeat(req, ud);
}

static void rdv_post_route(struct httpd_req *req, void *ud)
{
	rdv_post(req, ud);
}

static void rdv_get_route(struct httpd_req *req, void *ud)
{
	rdv_get(req, ud);
}

static void list_nodes(struct httpd_req *req, void *ud)
{
	json_t *out;

	if (api_need_operator(req, "listing the nodes", NULL, 0) < 0)
		return;
	if (nodes_list(ud, &out) < 0)
		httpd_reply_error(req, 500, "cannot read the node table");
	else
		httpd_reply_json(req, 200, out);
}

static void reprobe_node(struct httpd_req *req, void *ud)
{
	const char *id = httpd_req_arg(req, 0);
	int r;

	if (api_need_operator(req, "re-measuring a node", NULL, 0) < 0)
		return;
	r = nodes_reprobe(ud, id);
	if (r == -ENOENT)
		httpd_reply_error(req, 404, "no such node: %s", id);
	else if (r < 0)
		httpd_reply_error(req, 500, "cannot flag node %s: %s", id, strerror(-r));
	else
		httpd_reply_json(req, 202, json_pack("{s:s, s:b}", "node", id, "reprobe", 1));
}

/* POST /v1/rates/refresh (operator): reads ledgerd's rates now instead of
 * at the next minute, so a rate just set prices the next submission; queued
 * jobs keep the price they were admitted with. */
static void refresh_rates(struct httpd_req *req, void *ud)
{
	struct admitd *a = ud;
	char err[256];
	json_t *cls;

	if (api_need_operator(req, "reloading the rates", NULL, 0) < 0)
		return;
	if (queue_refresh_rate(a, 1, err, sizeof(err)) < 0) {
		httpd_reply_error(req, 503, "%s", err);
		return;
	}
	cls = json_object();
	for (int i = 0; cls && i < a->n_rates; i++)
		json_object_set_new(cls, a->rates[i].cls, json_real(a->rates[i].rank_second));
	a->sched_dirty = 1;
	httpd_reply_json(req, 200, json_pack("{s:I, s:o*, s:f}", "version",
					     (json_int_t)a->rate_version, "rank_second", cls,
					     "kwh", a->kwh_price));
}

static void tenants_list_route(struct httpd_req *req, void *ud)
{
	tenants_list(req, ud);
}

static void tenants_get_route(struct httpd_req *req, void *ud)
{
	tenants_get(req, ud);
}

static void tenants_put_route(struct httpd_req *req, void *ud)
{
	tenants_put(req, ud);
}

static void sched_stats(struct httpd_req *req, void *ud)
{
	json_t *j = queue_stats_json(ud);

	if (j)
		httpd_reply_json(req, 200, j);
	else
		httpd_reply_error(req, 500, "out of memory");
}

static void health(struct httpd_req *req, void *ud)
{
	httpd_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

const struct httpd_route admit_routes[] = {
	{"POST", "/v1/jobs", post_job, 0, 0},
	{"GET", "/v1/jobs", list_jobs, 0, 0},
	{"GET", "/v1/jobs/{}", get_job, 0, 0},
	{"POST", "/v1/jobs/{}/cancel", cancel_job, 0, 0},
	{"POST", "/v1/estimate", post_estimate, 0, 0},
	{"GET", "/v1/nodes", list_nodes, 0, 0},
	{"POST", "/v1/nodes/heartbeat", heartbeat, 0, 0},
	{"POST", "/v1/nodes/{}/reprobe", reprobe_node, 0, 0},
	{"POST", "/v1/rdv/{}", rdv_post_route, 0, 0},
	{"GET", "/v1/rdv/{}", rdv_get_route, 0, 0},
	{"GET", "/v1/tenants", tenants_list_route, 0, 0},
	{"GET", "/v1/tenants/{}", tenants_get_route, 0, 0},
	{"PUT", "/v1/tenants/{}", tenants_put_route, 0, 0},
	{"GET", "/v1/sched", sched_stats, 0, 0},
	{"POST", "/v1/rates/refresh", refresh_rates, 0, 0},
	{"GET", "/v1/health", health, 0, 0},
};
const size_t admit_n_routes = ARRAY_SIZE(admit_routes);

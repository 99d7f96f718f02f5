/* tenants — per-tenant quotas as admission sees them: the most ranks a
 * tenant may run at once, the most jobs it may run at once, and its share
 * (weight in fair share). Set by an operator with PUT /v1/tenants/{T};
 * a tenant without a row has no quota and share 1. Budgets are not here:
 * they live in the ledger (budget.c). Users and roles live in consoled,
 * which passes tenant and user with every job.
 */
#include "admitd.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define TENANT_MAX_RANKS 1000000
#define TENANT_MAX_JOBS 1000000
#define TENANT_MAX_SHARE 1000.0
#define TENANT_MAX_LIST 1000

int tenants_quota(sqlite3 *db, const char *tenant, struct tenant_quota *q)
{
	sqlite3_stmt *st;
	int r;

	q->max_ranks = 0;
	q->max_jobs = 0;
	q->share = 1;
	q->max_priority = 0;
	r = store_prep(db, "SELECT max_ranks, max_jobs, share, max_priority FROM tenants WHERE"
		       " id = ?", "s", &st, tenant);
	if (r < 0)
		return r;
	if (sqlite3_step(st) == SQLITE_ROW) {
		q->max_ranks = sqlite3_column_int(st, 0);
		q->max_jobs = sqlite3_column_int(st, 1);
		q->share = sqlite3_column_double(st, 2);
		q->max_priority = sqlite3_column_int(st, 3);
	}
	store_done(st);
	return 0;
}

static json_t *tenant_json(sqlite3 *db, const char *t)
{
	struct tenant_quota q;
	int64_t ranks = 0, jobs = 0, queued = 0;
	sqlite3_stmt *st;

	if (tenants_quota(db, t, &q) < 0)
		return NULL;
	if (store_prep(db, "SELECT coalesce(sum(CASE WHEN state = 'running' THEN ranks END), 0),"
		       " count(CASE WHEN state = 'running' THEN 1 END),"
		       " count(CASE WHEN state IN ('submitted', 'priced', 'queued') THEN 1 END)"
		       " FROM jobs WHERE tenant = ? AND state IN ('submitted', 'priced', 'queued',"
		       " 'running')", "s", &st, t) < 0)
		return NULL;
	if (sqlite3_step(st) == SQLITE_ROW) {
		ranks = sqlite3_column_int64(st, 0);
		jobs = sqlite3_column_int64(st, 1);
		queued = sqlite3_column_int64(st, 2);
	}
	store_done(st);
	return json_pack("{s:s, s:i, s:i, s:f, s:i, s:{s:I, s:I, s:I}}", "tenant", t, "max_ranks",
			 q.max_ranks, "max_jobs", q.max_jobs, "share", q.share, "max_priority",
			 q.max_priority, "running",
			 "ranks", (json_int_t)ranks, "jobs", (json_int_t)jobs, "queued",
			 (json_int_t)queued);
}

/* Reads an optional integer field in [0, max]; -EINVAL with a sentence. */
static int opt_int(json_t *b, const char *k, int max, int *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(b, k);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return util_fail(err, errlen, -EINVAL, "'%s' must be an integer in [0, %d]%s", k,
				 max, strcmp(k, "max_priority") ? " (0: no limit)" : "");
	*out = (int)json_integer_value(v);
	return 0;
}

void tenants_put(struct httpd_req *req, struct admitd *a)
{
	const char *t = httpd_req_arg(req, 0), *k;
	json_t *b = httpd_req_json(req), *v;
	struct tenant_quota q;
	char err[256];

	if (!b)
		return;
	if (api_need_operator(req, "setting a tenant's quota", t, 0) < 0)
		goto out;
	if (!util_valid_name(t, ADMIT_MAX_STR) || !json_is_object(b)) {
		httpd_reply_error(req, 400, "tenant must be a name of 1-%d chars [A-Za-z0-9_.-] and "
				  "the body an object", ADMIT_MAX_STR);
		goto out;
	}
	json_object_foreach(b, k, v) {
		if (strcmp(k, "max_ranks") && strcmp(k, "max_jobs") && strcmp(k, "share") &&
		    strcmp(k, "max_priority")) {
			httpd_reply_error(req, 400, "unknown key '%.40s' (max_ranks, max_jobs, share, "
					  "max_priority)", k);
			goto out;
		}
	}
	if (tenants_quota(a->db, t, &q) < 0 ||
	    opt_int(b, "max_ranks", TENANT_MAX_RANKS, &q.max_ranks, err, sizeof(err)) < 0 ||
	    opt_int(b, "max_jobs", TENANT_MAX_JOBS, &q.max_jobs, err, sizeof(err)) < 0 ||
	    opt_int(b, "max_priority", ADMIT_MAX_PRIO, &q.max_priority, err, sizeof(err)) < 0) {
		httpd_reply_error(req, 400, "%s", err);
		goto out;
	}
	v = json_object_get(b, "share");
	if (v && (!json_is_number(v) || !isfinite(json_number_value(v)) ||
		  json_number_value(v) <= 0 || json_number_value(v) > TENANT_MAX_SHARE)) {
		httpd_reply_error(req, 400, "'share' must be a number in (0, %g]", TENANT_MAX_SHARE);
		goto out;
	}
	if (v)
		q.share = json_number_value(v);
	if (store_run(a->db, "INSERT INTO tenants (id, max_ranks, max_jobs, share, max_priority,"
		      " updated_us) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET max_ranks ="
		      " excluded.max_ranks, max_jobs = excluded.max_jobs, share = excluded.share,"
		      " max_priority = excluded.max_priority, updated_us = excluded.updated_us",
		      "siidii", t, (int64_t)q.max_ranks, (int64_t)q.max_jobs, q.share,
		      (int64_t)q.max_priority, (int64_t)util_wall_us()) < 0) {
		httpd_reply_error(req, 500, "cannot store the quota of tenant %s", t);
		goto out;
	}
	log_info("tenant %s: max_ranks %d, max_jobs %d, share %g, max_priority %d", t,
		 q.max_ranks, q.max_jobs, q.share, q.max_priority);
	queue_schedule(a);
	v = tenant_json(a->db, t);
	if (v)
		httpd_reply_json(req, 200, v);
	else
		httpd_reply_error(req, 500, "cannot read tenant %s", t);
out:
	json_decref(b);
}

void tenants_get(struct httpd_req *req, struct admitd *a)
{
	const char *t = httpd_req_arg(req, 0);
	json_t *v;

	if (!util_valid_name(t, ADMIT_MAX_STR)) {
		httpd_reply_error(req, 400, "tenant must be a name of 1-%d chars [A-Za-z0-9_.-]",
				  ADMIT_MAX_STR);
		return;
	}
	if (api_need_operator(req, "reading another tenant's quota", t, 1) < 0)
		return;
	v = tenant_json(a->db, t);
	if (v)
		httpd_reply_json(req, 200, v);
	else
		httpd_reply_error(req, 500, "cannot read tenant %s", t);
}

void tenants_list(struct httpd_req *req, struct admitd *a)
{
	json_t *arr;
	sqlite3_stmt *st;

	if (api_need_operator(req, "listing tenants", NULL, 0) < 0)
		return;
	arr = json_array();
	if (store_prep(a->db, "SELECT id FROM tenants UNION SELECT DISTINCT tenant FROM jobs"
		       " WHERE state IN ('submitted', 'priced', 'queued', 'running') ORDER BY 1"
		       " LIMIT ?", "i", &st, (int64_t)TENANT_MAX_LIST) < 0) {
		json_decref(arr);
		httpd_reply_error(req, 500, "cannot list tenants");
		return;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *v = tenant_json(a->db, (const char *)sqlite3_column_text(st, 0));

		if (v)
			json_array_append_new(arr, v);
	}
	store_done(st);
	httpd_reply_json(req, 200, json_pack("{s:o}", "tenants", arr));
}

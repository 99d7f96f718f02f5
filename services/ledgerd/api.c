/* api — ledgerd's HTTP routes (services/README.md, "ledgerd"): maps requests
 * to the chain, ingest and query functions and their errors to statuses.
 *
 * Handlers run on the event loop and reply exactly once. Query parameters are
 * parsed strictly and capped here; nothing in this file touches SQL.
 */
#include "ledger.h"
#include "httpd.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* 10000 records of a few hundred bytes each fit well inside this. */
#define LEDGER_MAX_BODY (16u << 20)
#define LEDGER_SMALL_BODY (64u << 10)

static void reply_db_error(struct httpd_req *req, int r, const char *what)
{
	if (r == -EBUSY) {
		httpd_reply_error(req, 503, "%s: the ledger database is busy; retry", what);
		return;
	}
	log_err("%s %s: %s: %s", httpd_req_method(req), httpd_req_path(req), what, strerror(-r));
	httpd_reply_error(req, 500, "%s: %s", what, strerror(-r));
}

static void do_ingest(struct httpd_req *req, void *ud, int estimates)
{
	struct ledger *l = ud;
	json_t *body, *reply = NULL;
	json_error_t je;
	const char *data;
	char err[512] = "";
	size_t len;
	int r;

	/* httpd_req_json's checks and words, parsed into the arena */
	data = httpd_req_body(req, &len);
	if (!data || len == 0) {
		httpd_reply_error(req, 400, "request body is empty; a JSON object is required");
		return;
	}
	if (!estimates) {
		const char *out;
		size_t out_len;

		r = ledger_fast_ingest(l, data, len, &out, &out_len, err, sizeof(err));
		if (r == 0) {
			httpd_reply_data(req, 200, "application/json", out, out_len);
			return;
		}
		if (r < 0) {
			l->n_failed++;
			reply_db_error(req, r, err[0] ? err : "cannot ingest records");
			return;
		}
	}
	body = ledger_jarena_load(data, len, &je);
	if (!body) {
		httpd_reply_error(req, 400, "malformed JSON at line %d column %d: %s", je.line,
				  je.column, je.text);
		return;
	}
	if (!json_is_object(body)) {
		ledger_jarena_drop(body);
		httpd_reply_error(req, 400, "request body must be a JSON object");
		return;
	}
	r = ledger_ingest(l, body, estimates, &reply, err, sizeof(err));
	ledger_jarena_drop(body);
	if (r < 0)
		l->n_failed++;
	if (r == -EINVAL)
		httpd_reply_error(req, 400, "%s", err);
	else if (r == -E2BIG)
		httpd_reply_error(req, 413, "%s", err);
	else if (r < 0)
		reply_db_error(req, r, err[0] ? err : "cannot ingest records");
	else
		httpd_reply_json(req, 200, reply);
}

static void on_ingest(struct httpd_req *req, void *ud)
{
	do_ingest(req, ud, 0);
}

static void on_estimates(struct httpd_req *req, void *ud)
{
	do_ingest(req, ud, 1);
}

static void on_rates(struct httpd_req *req, void *ud)
{
	httpd_reply_json(req, 200, ledger_rates_json(ud));
}

static void on_bill(struct httpd_req *req, void *ud)
{
	const char *job = httpd_req_arg(req, 0);
	json_t *bill;
	int r;

	if (!job || strlen(job) > LEDGER_MAX_STR) {
		httpd_reply_error(req, 400, "job id is too long (limit %d characters)",
				  LEDGER_MAX_STR);
		return;
	}
	r = ledger_bill(ud, job, &bill);
	if (r == -ENOENT)
		httpd_reply_error(req, 404, "no ledger entries or estimate for job '%s'", job);
	else if (r < 0)
		reply_db_error(req, r, "cannot compute the bill");
	else
		httpd_reply_json(req, 200, bill);
}

/* Parses a decimal query parameter in min..max; dflt when absent. */
static int query_int(struct httpd_req *req, const char *name, int64_t min, int64_t max,
		     int64_t dflt, int64_t *out)
{
	const char *s = httpd_req_query(req, name);
	char *end;
	long long v;

	if (!s) {
		*out = dflt;
		return 0;
	}
	errno = 0;
	v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < min || v > max) {
		httpd_reply_error(req, 400, "query parameter %s='%.64s' must be an integer in %lld..%lld",
				  name, s, (long long)min, (long long)max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int query_str(struct httpd_req *req, const char *name, const char **out)
{
	const char *s = httpd_req_query(req, name);

	if (s && strlen(s) > LEDGER_MAX_STR) {
		httpd_reply_error(req, 400, "query parameter %s is too long (%zu > limit %d)", name,
				  strlen(s), LEDGER_MAX_STR);
		return -EINVAL;
	}
	*out = s && *s ? s : NULL;
	return 0;
}

static void on_entries(struct httpd_req *req, void *ud)
{
	struct ledger_query q = {0};
	const char *fmt = httpd_req_query(req, "format");
	int64_t after, limit;
	json_t *out;
	char *csv;
	size_t len;
	int r;

	if (query_str(req, "job", &q.job) < 0 || query_str(req, "tenant", &q.tenant) < 0 ||
	    query_str(req, "user", &q.user) < 0 ||
	    ledger_query_range(req, &q.from_us, &q.to_us) < 0 ||
	    query_int(req, "after", 0, INT64_MAX, 0, &after) < 0 ||
	    query_int(req, "limit", 1, LEDGER_MAX_ROWS, LEDGER_DEFAULT_ROWS, &limit) < 0)
		return;
	q.after = after;
	q.limit = (int)limit;
	if (fmt && *fmt && strcmp(fmt, "json") && strcmp(fmt, "csv")) {
		httpd_reply_error(req, 400, "format='%.32s' is not supported; use json or csv", fmt);
		return;
	}
	if (fmt && !strcmp(fmt, "csv")) {
		r = ledger_entries_csv(ud, &q, &csv, &len);
		if (r < 0) {
			reply_db_error(req, r, "cannot list entries");
			return;
		}
		httpd_reply_data(req, 200, "text/csv; charset=utf-8", csv, len);
		free(csv);
		return;
	}
	r = ledger_entries_json(ud, &q, &out);
	if (r < 0)
		reply_db_error(req, r, "cannot list entries");
	else
		httpd_reply_json(req, 200, out);
}

static void on_verify(struct httpd_req *req, void *ud)
{
	struct ledger *l = ud;
	struct ledger_verify v;
	int r;

	r = ledger_verify(l->db, l->head_id, l->head_hash, &v);
	if (r == 0)
		r = ledger_verify_credits(l->db, l->credit_head_id, l->credit_head_hash, &v);
	if (r == 0)
		r = ledger_verify_holds(l->db, l->hold_head_id, l->hold_head_hash, &v);
	if (r < 0) {
		reply_db_error(req, r, "cannot verify the ledger");
		return;
	}
	if (!v.ok)
		log_err("ledger verify failed at %s %lld: %s",
			v.bad_credit ? "credit" : v.bad_hold ? "hold event" : "entry",
			(long long)v.first_bad_id, v.reason);
	httpd_reply_json(req, 200, ledger_verify_json(&v));
}

static void on_health(struct httpd_req *req, void *ud)
{
	httpd_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

const struct httpd_route ledger_routes[] = {
	{"POST", "/v1/ingest", on_ingest, 0, LEDGER_MAX_BODY},
	{"POST", "/v1/estimates", on_estimates, 0, LEDGER_MAX_BODY},
	{"GET", "/v1/rates", on_rates, 0, 0},
	{"POST", "/v1/rates", ledger_on_rates_post, 0, LEDGER_SMALL_BODY},
	{"POST", "/v1/credits", ledger_on_credit, 0, LEDGER_SMALL_BODY},
	{"GET", "/v1/tenants/{}/balance", ledger_on_balance, 0, 0},
	{"GET", "/v1/tenants/{}/bill", ledger_on_tenant_bill, 0, 0},
	{"POST", "/v1/holds", ledger_on_hold, 0, LEDGER_SMALL_BODY},
	{"GET", "/v1/holds/{}", ledger_on_hold_get, 0, 0},
	{"POST", "/v1/holds/{}/release", ledger_on_hold_release, 0, LEDGER_SMALL_BODY},
	{"POST", "/v1/holds/{}/extend", ledger_on_hold_extend, 0, LEDGER_SMALL_BODY},
	{"GET", "/metrics", ledger_on_metrics, 0, 0},
	{"GET", "/v1/jobs/{}/bill", on_bill, 0, 0},
	{"GET", "/v1/entries", on_entries, 0, 0},
	{"GET", "/v1/verify", on_verify, 0, 0},
	{"GET", "/v1/health", on_health, 0, 0},
};
const size_t ledger_n_routes = sizeof(ledger_routes) / sizeof(ledger_routes[0]);

/* api_budget — ledgerd's HTTP routes for money that is not metering:
 * credits, balances, holds, rates (operator), the tenant bill and the
 * Prometheus metrics. Maps the budget, rates and summary functions and their
 * errors to statuses; nothing in this file touches SQL.
 */
#include "ledger.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void reply_err(struct ledger *l, struct httpd_req *req, int r, const char *why,
		      const char *what)
{
	switch (r) {
	case -EINVAL:
		httpd_reply_error(req, 400, "%s", why);
		return;
	case -ENOENT:
		httpd_reply_error(req, 404, "%s", why);
		return;
	case -EEXIST:
	case -ESTALE:
		httpd_reply_error(req, 409, "%s", why);
		return;
	case -EBUSY:
		httpd_reply_error(req, 503, "%s: the ledger database is busy; retry", what);
		return;
	}
	l->n_failed++;
	log_err("%s %s: %s: %s", httpd_req_method(req), httpd_req_path(req), what, strerror(-r));
	httpd_reply_error(req, 500, "%s: %s", what, strerror(-r));
}

/* The {} argument of the route as a name; replies 400 and returns NULL when bad. */
static const char *arg_name(struct httpd_req *req, const char *what)
{
	const char *s = httpd_req_arg(req, 0);

	if (!s || !util_valid_name(s, LEDGER_MAX_STR)) {
		httpd_reply_error(req, 400, "%s must be 1..%d characters of [A-Za-z0-9_.-]", what,
				  LEDGER_MAX_STR);
		return NULL;
	}
	return s;
}

int ledger_need_operator(struct httpd_req *req, const char *what)
{
	const char *role = httpd_req_header(req, "X-Bursar-Role");

	if (!role || !strcmp(role, "operator"))
		return 0;
	httpd_reply_error(req, 403, "%s needs the operator role (the caller has role '%.32s')",
			  what, role);
	return -EPERM;
}

void ledger_on_credit(struct httpd_req *req, void *ud)
{
	struct ledger *l = ud;
	json_t *body = httpd_req_json(req);
	struct ledger_credit c;
	struct ledger_balance b;
	char why[512] = "";
	int dup, r;

	if (!body)
		return;
	if (ledger_need_operator(req, "crediting a tenant") < 0) {
		json_decref(body);
		return;
	}
	r = ledger_credit(l, body, &c, &dup, why, sizeof(why));
	json_decref(body);
	if (r == 0)
		r = ledger_balance(l, c.tenant, &b);
	if (r < 0) {
		reply_err(l, req, r, why, "cannot record the credit");
		return;
	}
	httpd_reply_json(req, 200,
			 json_pack("{s:b, s:b, s:{s:I, s:s, s:I, s:s, s:I, s:s, s:I, s:s}, s:o}",
				   "acked", 1, "duplicate", dup, "credit", "id", (json_int_t)c.id,
				   "source", c.source, "seq", (json_int_t)c.seq, "tenant", c.tenant,
				   "amount_micro", (json_int_t)c.amount_micro, "note", c.note,
				   "ts_us", (json_int_t)c.ts_us, "hash", c.hash, "balance",
				   ledger_balance_json(c.tenant, &b)));
}

void ledger_on_balance(struct httpd_req *req, void *ud)
{
	const char *tenant = arg_name(req, "tenant");
	struct ledger_balance b;
	int r;

	if (!tenant)
		return;
	r = ledger_balance(ud, tenant, &b);
	if (r < 0)
		reply_err(ud, req, r, "", "cannot compute the balance");
	else
		httpd_reply_json(req, 200, ledger_balance_json(tenant, &b));
}

static void reply_hold(struct httpd_req *req, json_t *hold, json_t *balance)
{
	httpd_reply_json(req, 200,
			 json_pack("{s:b, s:o, s:o}", "ok", 1, "hold", hold, "balance", balance));
}

/* 409 with the sentence and the tenant's available amount. */
static void reply_quota(struct ledger *l, struct httpd_req *req, const char *tenant,
			const char *why)
{
	struct ledger_balance b = {0};

	ledger_balance(l, tenant, &b);
	httpd_reply_json(req, 409, json_pack("{s:s, s:I, s:s}", "error", why, "available_micro",
					     (json_int_t)b.available_micro, "tenant", tenant));
}

void ledger_on_hold(struct httpd_req *req, void *ud)
{
	struct ledger *l = ud;
	json_t *body = httpd_req_json(req), *hold, *balance;
	char why[512] = "", tenant[LEDGER_MAX_STR + 1] = "";
	int r;

	if (!body)
		return;
	r = ledger_hold(l, body, &hold, &balance, why, sizeof(why));
	snprintf(tenant, sizeof(tenant), "%s",
		 json_string_value(json_object_get(body, "tenant")) ?: "");
	json_decref(body);
	if (r == -EDQUOT)
		reply_quota(l, req, tenant, why);
	else if (r < 0)
		reply_err(l, req, r, why, "cannot open the hold");
	else
		reply_hold(req, hold, balance);
}

void ledger_on_hold_get(struct httpd_req *req, void *ud)
{
	const char *job = arg_name(req, "job id");
	json_t *hold;
	int r;

	if (!job)
		return;
	r = ledger_hold_get(ud, job, &hold);
	if (r == -ENOENT)
		httpd_reply_error(req, 404, "job %s has no hold", job);
	else if (r < 0)
		reply_err(ud, req, r, "", "cannot read the hold");
	else
		httpd_reply_json(req, 200, hold);
}

void ledger_on_hold_release(struct httpd_req *req, void *ud)
{
	const char *job = arg_name(req, "job id");
	json_t *hold, *balance;
	char why[512] = "";
	int r;

	if (!job)
		return;
	r = ledger_hold_release(ud, job, &hold, &balance, why, sizeof(why));
	if (r < 0)
		reply_err(ud, req, r, why, "cannot release the hold");
	else
		reply_hold(req, hold, balance);
}

void ledger_on_hold_extend(struct httpd_req *req, void *ud)
{
	struct ledger *l = ud;
	const char *job = arg_name(req, "job id");
	json_t *body, *hold, *balance;
	char why[512] = "";
	int r;

	if (!job)
		return;
	body = httpd_req_json(req);
	if (!body)
		return;
	r = ledger_hold_extend(l, job, body, &hold, &balance, why, sizeof(why));
	json_decref(body);
	if (r == -EDQUOT) {
		json_t *h;
		char tenant[LEDGER_MAX_STR + 1] = "";

		if (ledger_hold_get(l, job, &h) == 0) {
			snprintf(tenant, sizeof(tenant), "%s",
				 json_string_value(json_object_get(h, "tenant")) ?: "");
			json_decref(h);
		}
		reply_quota(l, req, tenant, why);
	} else if (r < 0) {
		reply_err(l, req, r, why, "cannot extend the hold");
	} else {
		reply_hold(req, hold, balance);
	}
}

void ledger_on_rates_post(struct httpd_req *req, void *ud)
{
	struct ledger *l = ud;
	json_t *body = httpd_req_json(req);
	struct ledger_rate nr;
	char why[512] = "";
	int r;

	if (!body)
		return;
	if (ledger_need_operator(req, "changing the rates") < 0) {
		json_decref(body);
		return;
	}
	r = ledger_parse_rate(l, body, &nr, why, sizeof(why));
	json_decref(body);
	if (r == 0)
		r = ledger_add_rate(l, &nr);
	if (r < 0) {
		reply_err(l, req, r, why, "cannot add the rate version");
		return;
	}
	log_info("rate version %lld: %d node classes, %.6f USD/kWh, for entries ingested from "
		 "now on", (long long)l->rate.version, l->rate.n_classes,
		 (double)l->rate.kwh_micro / 1e6);
	httpd_reply_json(req, 200, ledger_rates_json(l));
}

/* Parses a decimal query parameter in 0..INT64_MAX; dflt when absent. */
static int query_us(struct httpd_req *req, const char *name, int64_t dflt, int64_t *out)
{
	const char *s = httpd_req_query(req, name);
	char *end;
	long long v;

	if (!s || !*s) {
		*out = dflt;
		return 0;
	}
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end || errno || v < 0) {
		httpd_reply_error(req, 400, "query parameter %s='%.64s' must be microseconds since "
				  "the epoch (an integer >= 0)", name, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int ledger_query_range(struct httpd_req *req, int64_t *from_us, int64_t *to_us)
{
	if (query_us(req, "from_us", 0, from_us) < 0 || query_us(req, "to_us", INT64_MAX, to_us) < 0)
		return -EINVAL;
	if (*to_us < *from_us) {
		httpd_reply_error(req, 400, "to_us %lld is before from_us %lld", (long long)*to_us,
				  (long long)*from_us);
		return -EINVAL;
	}
	return 0;
}

void ledger_on_tenant_bill(struct httpd_req *req, void *ud)
{
	const char *tenant = arg_name(req, "tenant");
	int64_t from_us, to_us;
	json_t *bill;
	int r;

	if (!tenant || ledger_query_range(req, &from_us, &to_us) < 0)
		return;
	r = ledger_tenant_bill(ud, tenant, from_us, to_us, &bill);
	if (r < 0)
		reply_err(ud, req, r, "", "cannot compute the tenant bill");
	else
		httpd_reply_json(req, 200, bill);
}

void ledger_on_metrics(struct httpd_req *req, void *ud)
{
	char *text;
	size_t len;
	int r = ledger_metrics(ud, &text, &len);

	if (r < 0) {
		reply_err(ud, req, r, "", "cannot collect metrics");
		return;
	}
	httpd_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
}

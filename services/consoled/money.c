/* money — the /api/v1 routes for budgets and prices: the caller's balance, a
 * tenant's bill over a time range, and the operator-only credits and rates.
 * Everything is proxied to ledgerd, which owns the numbers; this file only
 * authenticates, applies the tenant wall (another tenant's bill is 404 to a
 * user, as everywhere in consoled) and the role check (403: a user may know
 * credits exist, not add them), and names who gave a credit (its source).
 */
#include "consoled.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* A credit or correction given in dollars: at most $1e9 either way. */
#define MONEY_MAX_USD 1e9

static int is_operator(const struct console_user *u)
{
	return !strcmp(u->role, "operator");
}

/* 403 unless the caller is an operator. */
static int money_operator(struct httpd_req *req, const struct console_user *u, const char *what)
{
	if (is_operator(u))
		return 0;
	httpd_reply_error(req, 403, "%s needs the operator role (user %s has role %s)", what,
			  u->user, u->role);
	return -EPERM;
}

/* Calls ledgerd and replies with its answer (or 503/502 naming it). */
static void money_proxy(struct console *c, struct httpd_req *req, const struct console_user *u,
			const char *method, const char *path, json_t *body)
{
	json_t *resp = NULL;
	long st = 0;

	if (console_peer_call(req, u, c->ledgerd, "ledger", method, path, body, &st, &resp) == 0)
		console_pass_through(req, "ledger", st, resp);
}

/* A time bound: absent, or 1..19 digits (microseconds since the epoch). */
static int money_time_arg(struct httpd_req *req, const char *key, char *out, size_t len)
{
	const char *v = httpd_req_query(req, key);

	out[0] = 0;
	if (!v || !*v)
		return 0;
	if (strspn(v, "0123456789") != strlen(v) || strlen(v) > 18) {
		httpd_reply_error(req, 400, "%s '%.40s' must be microseconds since the epoch "
				  "(0..999999999999999999)", key, v);
		return -EINVAL;
	}
	snprintf(out, len, "%s=%s", key, v);
	return 0;
}

/* GET /api/v1/balance[?tenant=T]: the caller's tenant (operators: any). */
void money_on_balance(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	const char *tenant = httpd_req_query(req, "tenant");
	struct console_user u;
	char path[256];

	if (console_authed(c, req, &u) < 0)
		return;
	if (!tenant || !*tenant || !is_operator(&u))
		tenant = u.tenant;
	if (!util_valid_name(tenant, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 400, "invalid tenant '%.80s'", tenant);
		return;
	}
	snprintf(path, sizeof(path), "/v1/tenants/%s/balance", tenant);
	money_proxy(c, req, &u, "GET", path, NULL);
}

/* GET /api/v1/tenants/{T}/bill?from_us=&to_us=: own tenant; operators any. */
void money_on_tenant_bill(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	const char *tenant = httpd_req_arg(req, 0);
	char path[512], from[40], to[40];
	struct console_user u;

	if (console_authed(c, req, &u) < 0)
		return;
	if (!util_valid_name(tenant, CONSOLE_NAME_MAX) ||
	    (!is_operator(&u) && strcmp(tenant, u.tenant))) {
		httpd_reply_error(req, 404, "no such tenant: '%.80s'", tenant);
		return;
	}
	if (money_time_arg(req, "from_us", from, sizeof(from)) < 0 ||
	    money_time_arg(req, "to_us", to, sizeof(to)) < 0)
		return;
	snprintf(path, sizeof(path), "/v1/tenants/%s/bill?%s%s%s", tenant, from,
		 from[0] && to[0] ? "&" : "", to);
	money_proxy(c, req, &u, "GET", path, NULL);
}

/* POST /api/v1/credits {"tenant", "amount" | "amount_micro", "note"?, "seq"?}
 * (operator). The ledger source is "console-USER"; seq defaults to the wall
 * clock in microseconds, a client that retries passes its own. */
void money_on_credit(struct httpd_req *req, void *ud)
{
	static const char *const keys[] = {"tenant", "amount", "amount_micro", "note", "seq"};
	struct console *c = ud;
	struct console_user u;
	json_t *body, *v, *out;
	const char *key, *tenant;
	char source[CONSOLE_NAME_MAX + 16];
	json_int_t micro, seq;

	if (console_authed(c, req, &u) < 0 || money_operator(req, &u, "adding credit") < 0)
		return;
	body = httpd_req_json(req);
	if (!body)
		return;
	json_object_foreach(body, key, v) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(keys) && strcmp(key, keys[i]); i++)
			;
		if (i == ARRAY_SIZE(keys)) {
			httpd_reply_error(req, 400, "unknown field '%.64s' (expected tenant, amount "
					  "or amount_micro, note, seq)", key);
			goto out_decref;
		}
	}
	tenant = json_string_value(json_object_get(body, "tenant"));
	if (!tenant || !util_valid_name(tenant, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 400, "field 'tenant' must be a tenant name");
		goto out_decref;
	}
	v = json_object_get(body, "amount_micro");
	if (v) {
		if (!json_is_integer(v)) {
			httpd_reply_error(req, 400, "field 'amount_micro' must be an integer");
			goto out_decref;
		}
		micro = json_integer_value(v);
	} else {
		double usd = json_number_value(json_object_get(body, "amount"));

		if (!json_is_number(json_object_get(body, "amount")) || !isfinite(usd) ||
		    fabs(usd) > MONEY_MAX_USD) {
			httpd_reply_error(req, 400, "field 'amount' must be a number of dollars "
					  "within +-%.0f", MONEY_MAX_USD);
			goto out_decref;
		}
		micro = llround(usd * 1e6);
	}
	v = json_object_get(body, "seq");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 1)) {
		httpd_reply_error(req, 400, "field 'seq' must be an integer >= 1");
		goto out_decref;
	}
	seq = v ? json_integer_value(v) : (json_int_t)util_wall_us();
	snprintf(source, sizeof(source), "console-%s", u.user);
	out = json_pack("{s:s, s:I, s:s, s:I}", "source", source, "seq", seq, "tenant", tenant,
			"amount_micro", micro);
	v = json_object_get(body, "note");
	if (out && v)
		json_object_set(out, "note", v);
	if (!out) {
		httpd_reply_error(req, 500, "out of memory");
		goto out_decref;
	}
	log_info("credit %lld micro-dollars to tenant %s by %s/%s", (long long)micro, tenant,
		 u.tenant, u.user);
	money_proxy(c, req, &u, "POST", "/v1/credits", out);
	json_decref(out);
out_decref:
	json_decref(body);
}

/* GET /api/v1/rates: the current rates and their history (any user). */
void money_on_rates_get(struct httpd_req *req, void *ud)
{
	struct console_user u;

	if (console_authed(ud, req, &u) == 0)
		money_proxy(ud, req, &u, "GET", "/v1/rates", NULL);
}

/* POST /api/v1/rates (operator): ledgerd's body, checked there. */
void money_on_rates_post(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	struct console_user u;
	json_t *body, *resp = NULL;
	long st = 0;

	if (console_authed(ud, req, &u) < 0 || money_operator(req, &u, "changing rates") < 0)
		return;
	body = httpd_req_json(req);
	if (!body)
		return;
	log_info("rates changed by %s/%s", u.tenant, u.user);
	if (console_peer_call(req, &u, c->ledgerd, "ledger", "POST", "/v1/rates", body, &st,
			      &resp) == 0) {
		/* admission reads rates every minute; a new version prices the
		 * next submission at once. Its answer goes along ("admission"):
		 * the version it now prices with, or why it could not reload. */
		if (st == 200 && json_is_object(resp)) {
			json_t *ar = NULL;
			long ast = 0;
			int r = console_peer_try(&u, c->admitd, "POST", "/v1/rates/refresh", NULL,
						 &ast, &ar);

			if (r == 0 && ast == 200 && json_is_object(ar)) {
				json_object_set(resp, "admission", ar);
			} else {
				const char *e = json_string_value(json_object_get(ar, "error"));
				char why[512];

				snprintf(why, sizeof(why), "admission did not reload the rates (%s); "
					 "it reads them within a minute",
					 r < 0 ? hclient_strerror(r) : e ? e : "unexpected reply");
				log_warn("%s", why);
				json_object_set_new(resp, "admission",
						    json_pack("{s:s}", "error", why));
			}
			json_decref(ar);
		}
		console_pass_through(req, "ledger", st, resp);
	}
	json_decref(body);
}

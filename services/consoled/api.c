/* api — the /api/v1 routes of consoled: bearer-token authentication, the
 * tenant wall, and proxying to admitd (jobs) and ledgerd (bills, ledger).
 * Another tenant's resource is always 404, never 403, so ids do not leak.
 * Calls to peers are blocking but bounded (CONSOLE_PEER_TIMEOUT_MS); a dead
 * peer becomes a 503 that names the service, never a hang. */
#include "consoled.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_DEFAULT_JOBS 100

/* Authenticates the request; on failure replies 401 and returns -EACCES. */
int console_authed(struct console *c, struct httpd_req *req, struct console_user *u)
{
	if (auth_lookup(c->db, httpd_req_bearer(req), u) < 0) {
		httpd_reply_error(req, 401, "missing or invalid bearer token");
		return -EACCES;
	}
	return 0;
}

static const char *peer_strerror(int r)
{
	return r == -ECONNREFUSED || r == -ENOENT ? "connection refused" : hclient_strerror(r);
}

int console_peer_try(const struct console_user *u, const char *base, const char *method,
		     const char *path, json_t *body, long *status, json_t **resp)
{
	char role[64], tenant[CONSOLE_NAME_MAX + 32];
	const char *hdrs[] = {role, tenant, NULL};

	snprintf(role, sizeof(role), "X-Bursar-Role: %s", u->role);
	snprintf(tenant, sizeof(tenant), "X-Bursar-Tenant: %s", u->tenant);
	return hclient_json_h(base, method, path, NULL, hdrs, body, CONSOLE_PEER_TIMEOUT_MS,
			      status, resp);
}

/* Calls a peer; on an unreachable peer replies 503 and returns its error. */
int console_peer_call(struct httpd_req *req, const struct console_user *u, const char *base,
		      const char *what, const char *method, const char *path, json_t *body,
		      long *status, json_t **resp)
{
	int r = console_peer_try(u, base, method, path, body, status, resp);

	if (r < 0) {
		log_warn("%s at %s: %s %s: %s", what, base, method, path, hclient_strerror(r));
		httpd_reply_error(req, 503, "%s service unavailable: %s", what, peer_strerror(r));
	}
	return r;
}

/* Replies with a peer's answer: its JSON as is, or an error naming it. */
void console_pass_through(struct httpd_req *req, const char *what, long status, json_t *resp)
{
	if (!resp) {
		httpd_reply_error(req, 502, "%s service answered status %ld without a JSON body",
				  what, status);
		return;
	}
	httpd_reply_json(req, (unsigned)status, resp);
}

/* Fetches a job of the caller's tenant; replies 404/503 itself on failure. */
static int get_job(struct console *c, struct httpd_req *req, const struct console_user *u,
		   json_t **out)
{
	const char *id = httpd_req_arg(req, 0), *tenant;
	char path[256];
	json_t *job = NULL;
	long st = 0;

	if (!util_valid_name(id, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 404, "no such job: '%.80s'", id);
		return -ENOENT;
	}
	snprintf(path, sizeof(path), "/v1/jobs/%s", id);
	if (console_peer_call(req, u, c->admitd, "admission", "GET", path, NULL, &st, &job) < 0)
		return -EIO;
	tenant = json_string_value(json_object_get(job, "tenant"));
	if (st == 200 && tenant && !strcmp(tenant, u->tenant)) {
		*out = job;
		return 0;
	}
	if (st == 200 || st == 404)
		httpd_reply_error(req, 404, "no such job: %s", id);
	else
		console_pass_through(req, "admission", st, json_incref(job));
	json_decref(job);
	return -ENOENT;
}

static void on_whoami(struct httpd_req *req, void *ud)
{
	struct console_user u;

	if (console_authed(ud, req, &u) == 0)
		httpd_reply_json(req, 200, json_pack("{s:s, s:s, s:s}", "user", u.user, "tenant",
						     u.tenant, "role", u.role));
}

static void on_bundle_upload(struct httpd_req *req, void *ud)
{
	struct console_user u;

	if (console_authed(ud, req, &u) == 0)
		bundles_upload(ud, req, &u);
}

/* Checks the token before an upload's body is read, so an anonymous client
 * cannot fill the disk up to the upload cap just to be told 401. */
static void on_bundle_upload_pre(struct httpd_req *req, void *ud)
{
	struct console_user u;

	console_authed(ud, req, &u);
}

static void on_bundle_list(struct httpd_req *req, void *ud)
{
	struct console_user u;

	if (console_authed(ud, req, &u) == 0)
		bundles_list(ud, req, &u);
}

static void on_bundle_get(struct httpd_req *req, void *ud)
{
	struct console_user u;
	json_t *b;

	if (console_authed(ud, req, &u) < 0)
		return;
	if (bundles_get(ud, u.tenant, httpd_req_arg(req, 0), &b) < 0)
		httpd_reply_error(req, 404, "no such bundle: '%.80s'", httpd_req_arg(req, 0));
	else
		httpd_reply_json(req, 200, b);
}

static void on_bundle_delete(struct httpd_req *req, void *ud)
{
	struct console_user u;

	if (console_authed(ud, req, &u) == 0)
		bundles_delete(ud, req, &u);
}

/* Builds admitd's job request from a bundle and the caller's overrides. */
static int job_request(struct console *c, struct httpd_req *req, const struct console_user *u,
		       json_t *in, json_t **out)
{
	const char *bid = json_string_value(json_object_get(in, "bundle"));
	json_t *name = json_object_get(in, "name"), *ov = json_object_get(in, "overrides"), *b, *pr;
	char dir[4400], err[1024] = "";
	struct bundle_info bi;
	const char *jname;

	if (!bid) {
		httpd_reply_error(req, 400, "'bundle' (a bundle id string) is required");
		return -EINVAL;
	}
	if (!util_valid_name(bid, CONSOLE_NAME_MAX) || bundles_get(c, u->tenant, bid, &b) < 0) {
		httpd_reply_error(req, 404, "no such bundle: '%.80s'", bid);
		return -ENOENT;
	}
	jname = name ? json_string_value(name) : json_string_value(json_object_get(b, "name"));
	if (!jname || !util_valid_name(jname, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 400, "invalid job name: use 1..%d of [A-Za-z0-9_.-]",
				  CONSOLE_NAME_MAX);
		goto out_free;
	}
	snprintf(dir, sizeof(dir), "%s/%s", c->bundles_dir, bid);
	if (bundle_check(dir, &bi, err, sizeof(err)) < 0) {
		httpd_reply_error(req, 409, "bundle %s is no longer valid: %s", bid, err);
		goto out_free;
	}
	if (ov && !json_is_null(ov) &&
	    trainparams_apply(ov, &bi.model, &bi.params, err, sizeof(err)) < 0) {
		httpd_reply_error(req, 400, "overrides: %s", err);
		goto out_free;
	}
	/* "priority" beside the bundle's (bursar.json or overrides): admitd checks
	 * its range and prefers it */
	pr = json_object_get(in, "priority");
	if (pr && !json_is_integer(pr)) {
		httpd_reply_error(req, 400, "'priority' must be an integer");
		goto out_free;
	}
	*out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "tenant", u->tenant, "user",
			 u->user, "bundle_id", bid, "bundle_dir", dir, "name", jname, "model",
			 modelcfg_to_json(&bi.model), "params", trainparams_to_json(&bi.params));
	if (*out && pr)
		json_object_set(*out, "priority", pr);
	json_decref(b);
	if (!*out) {
		httpd_reply_error(req, 500, "out of memory");
		return -ENOMEM;
	}
	return 0;
out_free:
	json_decref(b);
	return -EINVAL;
}

static void on_job_submit(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	struct console_user u;
	json_t *in, *body = NULL, *resp = NULL;
	long st = 0;

	if (console_authed(c, req, &u) < 0)
		return;
	in = httpd_req_json(req);
	if (!in)
		return;
	if (job_request(c, req, &u, in, &body) == 0 &&
	    console_peer_call(req, &u, c->admitd, "admission", "POST", "/v1/jobs", body, &st, &resp) == 0) {
		log_info("job for bundle %s of %s/%s: admitd answered %ld",
			 json_string_value(json_object_get(body, "bundle_id")), u.tenant, u.user,
			 st);
		console_pass_through(req, "admission", st, resp);
	}
	json_decref(body);
	json_decref(in);
}

static void on_job_list(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	const char *ls = httpd_req_query(req, "limit"), *state = httpd_req_query(req, "state");
	const char *before = httpd_req_query(req, "before");
	struct console_user u;
	json_t *resp = NULL, *jobs, *mine, *j;
	char path[320];
	long st = 0, limit = API_DEFAULT_JOBS;
	size_t i;

	if (console_authed(c, req, &u) < 0)
		return;
	if (ls) {
		char *end;

		limit = strtol(ls, &end, 10);
		if (*end || limit < 1 || limit > CONSOLE_MAX_JOBS) {
			httpd_reply_error(req, 400, "limit '%.20s' must be in [1, %d]", ls,
					  CONSOLE_MAX_JOBS);
			return;
		}
	}
	/* state and before go on to admitd, which says what is wrong with them;
	 * here only that they cannot change the query */
	if ((state && (!*state || strlen(state) > 16 ||
		       strspn(state, "abcdefghijklmnopqrstuvwxyz") != strlen(state))) ||
	    (before && (!*before || strlen(before) > 19 ||
			strspn(before, "0123456789") != strlen(before)))) {
		httpd_reply_error(req, 400, "'state' must be a job state or active, 'before' the "
				  "next_before of a previous page");
		return;
	}
	snprintf(path, sizeof(path), "/v1/jobs?tenant=%s&limit=%ld%s%s%s%s", u.tenant, limit,
		 state ? "&state=" : "", state ? state : "", before ? "&before=" : "",
		 before ? before : "");
	if (console_peer_call(req, &u, c->admitd, "admission", "GET", path, NULL, &st, &resp) < 0)
		return;
	jobs = json_object_get(resp, "jobs");
	if (st != 200 || !json_is_array(jobs)) {
		console_pass_through(req, "admission", st, resp);
		return;
	}
	/* admitd filters by tenant already; filter again so a bug there cannot leak. */
	mine = json_array();
	json_array_foreach(jobs, i, j) {
		const char *t = json_string_value(json_object_get(j, "tenant"));

		if (t && !strcmp(t, u.tenant))
			json_array_append(mine, j);
	}
	j = json_incref(json_object_get(resp, "next_before"));
	json_decref(resp);
	httpd_reply_json(req, 200, json_pack("{s:o, s:o}", "jobs", mine, "next_before",
					     j ? j : json_null()));
}

static void on_job_get(struct httpd_req *req, void *ud)
{
	struct console_user u;
	json_t *job;

	if (console_authed(ud, req, &u) == 0 && get_job(ud, req, &u, &job) == 0)
		httpd_reply_json(req, 200, job);
}

static void on_job_cancel(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	struct console_user u;
	json_t *job, *resp = NULL;
	char path[256];
	long st = 0;

	if (console_authed(c, req, &u) < 0 || get_job(c, req, &u, &job) < 0)
		return;
	json_decref(job);
	snprintf(path, sizeof(path), "/v1/jobs/%s/cancel", httpd_req_arg(req, 0));
	if (console_peer_call(req, &u, c->admitd, "admission", "POST", path, NULL, &st, &resp) == 0) {
		log_info("job %s cancelled by %s/%s: admitd answered %ld", httpd_req_arg(req, 0),
			 u.tenant, u.user, st);
		console_pass_through(req, "admission", st, resp);
	}
}

static void on_job_bill(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	struct console_user u;
	json_t *job, *resp = NULL;
	char path[256];
	long st = 0;

	if (console_authed(c, req, &u) < 0 || get_job(c, req, &u, &job) < 0)
		return;
	json_decref(job);
	snprintf(path, sizeof(path), "/v1/jobs/%s/bill", httpd_req_arg(req, 0));
	if (console_peer_call(req, &u, c->ledgerd, "ledger", "GET", path, NULL, &st, &resp) < 0)
		return;
	if (st == 404) {
		json_decref(resp);
		httpd_reply_error(req, 404, "no bill yet for job %s: the ledger has no entries "
				  "or estimate for it", httpd_req_arg(req, 0));
		return;
	}
	console_pass_through(req, "ledger", st, resp);
}

static void on_job_file(struct httpd_req *req, void *ud)
{
	struct console_user u;
	json_t *job;

	if (console_authed(ud, req, &u) < 0 || get_job(ud, req, &u, &job) < 0)
		return;
	files_job_output(ud, req, job, httpd_req_arg(req, 1));
	json_decref(job);
}

/* Appends "&key=value" when the query has key; value must be a plain name. */
static int add_query(struct httpd_req *req, const char *key, char *path, size_t len)
{
	const char *v = httpd_req_query(req, key);
	size_t n = strlen(path);

	if (!v || !*v)
		return 0;
	if (!util_valid_name(v, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 400, "invalid %s '%.80s'", key, v);
		return -EINVAL;
	}
	if (snprintf(path + n, len - n, "&%s=%s", key, v) >= (int)(len - n)) {
		httpd_reply_error(req, 400, "query too long");
		return -EINVAL;
	}
	return 0;
}

/* Downloads a ledger answer into a temp file and streams it to the caller,
 * so a CSV export passes through without being parsed or held in memory. */
static void ledger_stream(struct console *c, struct httpd_req *req, const char *path,
			  const char *ctype)
{
	char tmp[4200], hex[17];
	json_t *resp = NULL;
	struct stat sb;
	long st = 0;
	int r, fd;

	util_random_hex(hex, 8);
	snprintf(tmp, sizeof(tmp), "%s/.ledger-%s", c->uploads_dir, hex);
	r = hclient_download(c->ledgerd, path, NULL, tmp, CONSOLE_PEER_TIMEOUT_MS, &st, &resp);
	if (r < 0) {
		unlink(tmp);
		log_warn("ledger at %s: GET %s: %s", c->ledgerd, path, hclient_strerror(r));
		httpd_reply_error(req, 503, "ledger service unavailable: %s", peer_strerror(r));
		return;
	}
	if (st / 100 != 2) {
		console_pass_through(req, "ledger", st, resp);
		return;
	}
	fd = open(tmp, O_RDONLY | O_CLOEXEC);
	unlink(tmp);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		if (fd >= 0)
			close(fd);
		httpd_reply_error(req, 500, "cannot read the ledger's answer");
		return;
	}
	httpd_reply_fd(req, 200, ctype, fd, (uint64_t)sb.st_size, NULL);
}

static void on_ledger(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	const char *fmt = httpd_req_query(req, "format"), *tenant, *lim;
	struct console_user u;
	char path[512];
	int csv;

	if (console_authed(c, req, &u) < 0)
		return;
	if (fmt && strcmp(fmt, "json") && strcmp(fmt, "csv")) {
		httpd_reply_error(req, 400, "format '%.20s' must be json or csv", fmt);
		return;
	}
	csv = fmt && !strcmp(fmt, "csv");
	tenant = httpd_req_query(req, "tenant");
	if (strcmp(u.role, "operator") || !tenant)
		tenant = u.tenant; /* users see only their own tenant */
	if (*tenant && !util_valid_name(tenant, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 400, "invalid tenant '%.80s'", tenant);
		return;
	}
	lim = httpd_req_query(req, "limit");
	if (lim && (strspn(lim, "0123456789") != strlen(lim) || !*lim || atol(lim) > 10000 ||
		    strlen(lim) > 6)) {
		httpd_reply_error(req, 400, "limit '%.20s' must be a number in [1, 10000]", lim);
		return;
	}
	snprintf(path, sizeof(path), "/v1/entries?format=%s%s%s", csv ? "csv" : "json",
		 *tenant ? "&tenant=" : "", tenant);
	if (add_query(req, "job", path, sizeof(path)) < 0 ||
	    add_query(req, "user", path, sizeof(path)) < 0 ||
	    add_query(req, "from_us", path, sizeof(path)) < 0 ||
	    add_query(req, "to_us", path, sizeof(path)) < 0 ||
	    add_query(req, "after", path, sizeof(path)) < 0 ||
	    add_query(req, "limit", path, sizeof(path)) < 0)
		return;
	ledger_stream(c, req, path, csv ? "text/csv; charset=utf-8" : "application/json");
}

static void on_ledger_verify(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	struct console_user u;
	json_t *resp = NULL;
	long st = 0;

	if (console_authed(c, req, &u) < 0)
		return;
	if (console_peer_call(req, &u, c->ledgerd, "ledger", "GET", "/v1/verify", NULL, &st, &resp) == 0)
		console_pass_through(req, "ledger", st, resp);
}

static void on_index(struct httpd_req *req, void *ud)
{
	files_static(ud, req, "index.html");
}

static void on_static(struct httpd_req *req, void *ud)
{
	files_static(ud, req, httpd_req_arg(req, 0));
}

size_t api_routes(struct console *c, struct httpd_route *routes, size_t max)
{
	const struct httpd_route table[] = {
		{"GET", "/", on_index, 0, 0},
		{"GET", "/static/{}", on_static, 0, 0},
		{"GET", "/api/v1/whoami", on_whoami, 0, 0},
		{"POST", "/api/v1/bundles", on_bundle_upload, 1, c->max_upload, on_bundle_upload_pre},
		{"GET", "/api/v1/bundles", on_bundle_list, 0, 0},
		{"GET", "/api/v1/bundles/{}", on_bundle_get, 0, 0},
		{"DELETE", "/api/v1/bundles/{}", on_bundle_delete, 0, 0},
		{"POST", "/api/v1/jobs", on_job_submit, 0, 0},
		{"GET", "/api/v1/jobs", on_job_list, 0, 0},
		{"GET", "/api/v1/jobs/{}", on_job_get, 0, 0},
		{"POST", "/api/v1/jobs/{}/cancel", on_job_cancel, 0, 0},
		{"GET", "/api/v1/jobs/{}/bill", on_job_bill, 0, 0},
		{"GET", "/api/v1/jobs/{}/files/{}", on_job_file, 0, 0},
		{"GET", "/api/v1/ledger", on_ledger, 0, 0},
		{"GET", "/api/v1/ledger/verify", on_ledger_verify, 0, 0},
		{"POST", "/api/v1/estimate", console_estimate, 0, 0},
		{"GET", "/api/v1/balance", money_on_balance, 0, 0},
		{"GET", "/api/v1/tenants/{}/bill", money_on_tenant_bill, 0, 0},
		{"POST", "/api/v1/credits", money_on_credit, 0, 0},
		{"GET", "/api/v1/rates", money_on_rates_get, 0, 0},
		{"POST", "/api/v1/rates", money_on_rates_post, 0, 0},
		{"GET", "/api/v1/nodes", nodes_on_list, 0, 0},
		{"POST", "/api/v1/nodes/{}/reprobe", nodes_on_reprobe, 0, 0},
	};
	size_t n = ARRAY_SIZE(table) < max ? ARRAY_SIZE(table) : max;

	_Static_assert(ARRAY_SIZE(table) <= API_MAX_ROUTES, "raise API_MAX_ROUTES");

	memcpy(routes, table, n * sizeof(*routes));
	return n;
}

/* estimate — POST /api/v1/estimate: what a job would cost, without submitting
 * it. The body names an uploaded bundle of the caller's tenant
 * ({"bundle": "b-…", "overrides"?: {bursar.json keys}}) or carries the model
 * and parameters themselves ({"model": config, "params"?: {…}}, what
 * `bursarctl estimate DIR` sends after parsing the directory with the same
 * bundle parser, so nothing is uploaded). admitd prices it
 * (POST /v1/estimate) against the nodes that are up and answers every
 * candidate allocation with its time and cost and the one it would choose,
 * with the reason. Nothing is stored and nothing is held in the ledger.
 */
#include "consoled.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void console_estimate(struct httpd_req *req, void *ud);

/* The model and params of bundle bid of tenant with overrides ov applied;
 * replies itself on failure. */
static int from_bundle(struct console *c, struct httpd_req *req, const char *tenant,
		       const char *bid, json_t *ov, json_t **model, json_t **params)
{
	char dir[4400], err[1024] = "";
	struct bundle_info bi;
	json_t *b;

	if (!util_valid_name(bid, CONSOLE_NAME_MAX) || bundles_get(c, tenant, bid, &b) < 0) {
		httpd_reply_error(req, 404, "no such bundle: '%.80s'", bid);
		return -ENOENT;
	}
	json_decref(b);
	snprintf(dir, sizeof(dir), "%s/%s", c->bundles_dir, bid);
	if (bundle_check(dir, &bi, err, sizeof(err)) < 0) {
		httpd_reply_error(req, 409, "bundle %s is no longer valid: %s", bid, err);
		return -EINVAL;
	}
	if (ov && !json_is_null(ov) &&
	    trainparams_apply(ov, &bi.model, &bi.params, err, sizeof(err)) < 0) {
		httpd_reply_error(req, 400, "overrides: %s", err);
		return -EINVAL;
	}
	*model = modelcfg_to_json(&bi.model);
	*params = trainparams_to_json(&bi.params);
	return 0;
}

/* Checks the body's keys and shapes; replies 400 itself. */
static int check_body(struct httpd_req *req, json_t *in)
{
	static const char *const keys[] = {"bundle", "overrides", "model", "params"};
	const char *k;
	json_t *v;

	if (!json_is_object(in))
		return httpd_reply_error(req, 400, "the body must be a JSON object"), -EINVAL;
	json_object_foreach(in, k, v) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(keys) && strcmp(k, keys[i]); i++)
			;
		if (i == ARRAY_SIZE(keys))
			return httpd_reply_error(req, 400, "unknown key '%.64s' (expected bundle, "
						 "overrides, model, params)", k), -EINVAL;
	}
	v = json_object_get(in, "bundle");
	if (!!v == !!json_object_get(in, "model"))
		return httpd_reply_error(req, 400, "give either 'bundle' (an uploaded bundle id) "
					 "or 'model' (a config.json object)"), -EINVAL;
	if (v && !json_is_string(v))
		return httpd_reply_error(req, 400, "'bundle' must be a bundle id string"), -EINVAL;
	if (json_object_get(in, "model") && !json_is_object(json_object_get(in, "model")))
		return httpd_reply_error(req, 400, "'model' must be a JSON object"), -EINVAL;
	if (json_object_get(in, "params") && !json_is_object(json_object_get(in, "params")))
		return httpd_reply_error(req, 400, "'params' must be a JSON object"), -EINVAL;
	if (json_object_get(in, "overrides") && !json_is_null(json_object_get(in, "overrides")) &&
	    !json_is_object(json_object_get(in, "overrides")))
		return httpd_reply_error(req, 400, "'overrides' must be a JSON object"), -EINVAL;
	return 0;
}

void console_estimate(struct httpd_req *req, void *ud)
{
	struct console *c = ud;
	struct console_user u;
	json_t *in, *model = NULL, *params = NULL, *body = NULL, *resp = NULL;
	long st = 0;

	if (console_authed(c, req, &u) < 0)
		return;
	in = httpd_req_json(req);
	if (!in)
		return;
	if (check_body(req, in) < 0)
		goto out;
	if (json_object_get(in, "bundle")) {
		if (from_bundle(c, req, u.tenant, json_string_value(json_object_get(in, "bundle")),
				json_object_get(in, "overrides"), &model, &params) < 0)
			goto out;
	} else {
		model = json_incref(json_object_get(in, "model"));
		params = json_incref(json_object_get(in, "params"));
	}
	body = json_pack("{s:O, s:O*}", "model", model, "params", params);
	if (!body) {
		httpd_reply_error(req, 500, "out of memory");
		goto out;
	}
	if (console_peer_call(req, &u, c->admitd, "admission", "POST", "/v1/estimate", body, &st,
			      &resp) == 0) {
		console_pass_through(req, "admission", st, resp);
		resp = NULL;
	}
out:
	json_decref(resp);
	json_decref(body);
	json_decref(model);
	json_decref(params);
	json_decref(in);
}

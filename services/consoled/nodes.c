/* nodes — the operator's view of the cluster: GET /api/v1/nodes (capacity,
 * class, devices, measured speed and liveness of every node) and
 * POST /api/v1/nodes/{id}/reprobe (ask a node to measure itself again).
 * admitd owns the node table; this file only authenticates, refuses users
 * (403: a user may know nodes exist, not list or poke them) and checks the
 * node id before it becomes part of a path. It must never cache node state.
 */
#include "consoled.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Authenticates the caller and refuses anyone but an operator (401/403). */
static int nodes_operator(struct console *c, struct httpd_req *req, struct console_user *u,
			  const char *what)
{
	if (console_authed(c, req, u) < 0)
		return -EACCES;
	if (!strcmp(u->role, "operator"))
		return 0;
	httpd_reply_error(req, 403, "%s needs the operator role (user %s has role %s)", what,
			  u->user, u->role);
	return -EPERM;
}

/* Calls admitd and replies with its answer (or 503/502 naming it). */
static void nodes_proxy(struct console *c, struct httpd_req *req, const struct console_user *u,
			const char *method, const char *path)
{
	json_t *resp = NULL;
	long st = 0;

	if (console_peer_call(req, u, c->admitd, "admission", method, path, NULL, &st, &resp) == 0)
		console_pass_through(req, "admission", st, resp);
}

/* GET /api/v1/nodes (operator): admitd's node table as is. */
void nodes_on_list(struct httpd_req *req, void *ud)
{
	struct console_user u;

	if (nodes_operator(ud, req, &u, "listing nodes") == 0)
		nodes_proxy(ud, req, &u, "GET", "/v1/nodes");
}

/* POST /api/v1/nodes/{id}/reprobe (operator): 202 once admitd has flagged
 * the node; it measures itself at its next heartbeat. */
void nodes_on_reprobe(struct httpd_req *req, void *ud)
{
	const char *id = httpd_req_arg(req, 0);
	struct console_user u;
	char path[CONSOLE_NODE_ID_MAX + 32];

	if (nodes_operator(ud, req, &u, "re-measuring a node") < 0)
		return;
	if (!util_valid_name(id, CONSOLE_NODE_ID_MAX)) {
		httpd_reply_error(req, 400,
				  "'%.80s' is not a node id (1-%d characters of "
				  "A-Za-z0-9_.-); list the nodes to see their ids",
				  id, CONSOLE_NODE_ID_MAX);
		return;
	}
	snprintf(path, sizeof(path), "/v1/nodes/%s/reprobe", id);
	log_info("reprobe of node %s asked by %s/%s", id, u.tenant, u.user);
	nodes_proxy(ud, req, &u, "POST", path);
}

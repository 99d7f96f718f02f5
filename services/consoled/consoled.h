/* consoled.h — internal interfaces of bursar-consoled: the daemon context,
 * users and tokens (auth.c), bundle extraction (upload.c), bundle records
 * (bundles.c), the REST routes (api.c), the node table (nodes.c) and file
 * serving (files.c). Never installed; nothing outside services/consoled
 * includes it. */
#pragma once
#include "bundle.h"
#include "httpd.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#define CONSOLE_MAX_LISTEN 4
#define CONSOLE_NAME_MAX 64	     /* tenant, user and bundle names */
#define CONSOLE_NODE_ID_MAX 128      /* node ids, as admitd takes them */
#define CONSOLE_TOKEN_MIN 16	     /* shortest token adduser accepts */
#define CONSOLE_TOKEN_MAX 256
#define CONSOLE_MAX_BUNDLES 1000     /* bundles per tenant (and rows a list returns) */
#define CONSOLE_MAX_JOBS 500	     /* rows a job list returns */
#define CONSOLE_PEER_TIMEOUT_MS 5000 /* every call to admitd/ledgerd */

struct console {
	sqlite3 *db;
	const char *state;	 /* state directory as given */
	char state_abs[4096];	 /* the same, absolute */
	char bundles_dir[4096];	 /* state/bundles, absolute (admitd and noded read it) */
	char uploads_dir[4096];	 /* state/uploads: request bodies, proxied downloads */
	const char *admitd;	 /* hclient base of admitd */
	const char *ledgerd;	 /* hclient base of ledgerd */
	const char *www;	 /* folder of index.html, app.js, style.css */
	uint64_t max_upload;	 /* bytes of one uploaded archive */
	uint64_t max_bundle;	 /* extracted bytes of one bundle */
	uint64_t max_tenant;	 /* extracted bytes of all of a tenant's bundles */
	uint64_t max_files;	 /* entries of one bundle */
};

/* The caller of an /api request, from its bearer token. */
struct console_user {
	char user[CONSOLE_NAME_MAX + 1];
	char tenant[CONSOLE_NAME_MAX + 1];
	char role[16]; /* "user" | "operator" */
};

/* auth.c: the database (schema of users and bundles) and tokens. */
int auth_db_open(const char *state, sqlite3 **out);
int auth_add_user(sqlite3 *db, const char *tenant, const char *user, const char *role,
		  const char *token, char *err, size_t errlen);
/* 0 and *out on a known token; -EACCES on an unknown one. */
int auth_lookup(sqlite3 *db, const char *token, struct console_user *out);
/* Constant-time comparison of two equal-length strings. */
int auth_equal(const char *a, const char *b, size_t n);

/* upload.c: turning an archive into a directory, safely. */
struct upload_limits {
	uint64_t max_files;
	uint64_t max_bytes;
};
#define UPLOAD_MAX_DEPTH 16
#define UPLOAD_MAX_COMPONENT 255
#define UPLOAD_MAX_PATH 1024

/* Normalises an archive entry path into out ("./a//b/" -> "a/b"); fails with
 * a sentence on absolute paths, "..", too deep or too long paths. */
int upload_clean_path(const char *path, char *out, size_t outlen, char *err, size_t errlen);
/* Extracts archive (tar, tar.gz, tar.zst) into the empty directory dest,
 * stripping one common top-level directory. Returns -EPROTONOSUPPORT when the
 * file is not a tar archive at all, other negative errnos with err set. */
int upload_extract(const char *archive, const char *dest, const struct upload_limits *lim,
		   uint64_t *files, uint64_t *bytes, char *err, size_t errlen);

/* bundles.c: upload handling and bundle records. */
void bundles_upload(struct console *c, struct httpd_req *req, const struct console_user *u);
void bundles_list(struct console *c, struct httpd_req *req, const struct console_user *u);
/* Loads the caller's bundle; 0, -ENOENT (not found or another tenant's). */
int bundles_get(struct console *c, const char *tenant, const char *id, json_t **out);
/* DELETE /api/v1/bundles/{id}: the caller's tenant's bundle, when no
 * unfinished job uses it (admitd is asked). */
void bundles_delete(struct console *c, struct httpd_req *req, const struct console_user *u);

/* api.c: fills routes (at most max) for c; returns how many. */
size_t api_routes(struct console *c, struct httpd_route *routes, size_t max);
#define API_MAX_ROUTES 32

/* money.c: balance, tenant bills, credits and rates (proxied to ledgerd). */
void money_on_balance(struct httpd_req *req, void *ud);
void money_on_tenant_bill(struct httpd_req *req, void *ud);
void money_on_credit(struct httpd_req *req, void *ud);
void money_on_rates_get(struct httpd_req *req, void *ud);
void money_on_rates_post(struct httpd_req *req, void *ud);

/* nodes.c: the node table and re-measuring a node (operator; proxied to admitd). */
void nodes_on_list(struct httpd_req *req, void *ud);
void nodes_on_reprobe(struct httpd_req *req, void *ud);

/* files.c: the web page and job outputs. */
void files_static(struct console *c, struct httpd_req *req, const char *name);
void files_job_output(struct console *c, struct httpd_req *req, json_t *job, const char *name);

/* estimate.c: POST /api/v1/estimate, prices a bundle without submitting it. */
void console_estimate(struct httpd_req *req, void *ud);

/* api.c: the helpers every handler uses. */
/* Authenticates the request; on failure replies 401 and returns -EACCES. */
int console_authed(struct console *c, struct httpd_req *req, struct console_user *u);
/* Calls a peer daemon on behalf of caller u (its role and tenant go along in
 * X-Bursar-Role and X-Bursar-Tenant, so the daemon enforces them too); when
 * the peer is unreachable replies 503 naming it. */
int console_peer_call(struct httpd_req *req, const struct console_user *u, const char *base,
		      const char *what, const char *method, const char *path, json_t *body,
		      long *status, json_t **resp);
/* The same call without a reply: hclient's result (0 or -errno). */
int console_peer_try(const struct console_user *u, const char *base, const char *method,
		     const char *path, json_t *body, long *status, json_t **resp);
/* Replies with a peer's JSON answer as is, or 502 when it sent none. */
void console_pass_through(struct httpd_req *req, const char *what, long status, json_t *resp);

/* bundles — uploaded bundles: the upload handler (archive → .partial-<id>/ →
 * checked → renamed to <id>/ → recorded), the tenant's list and lookups.
 * A bundle directory exists under its final name only when it was fully
 * extracted, checked and synced; a failed upload leaves nothing behind. */
#include "consoled.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A row of the bundles table as the API shows it. */
static json_t *row_json(sqlite3_stmt *st)
{
	json_t *model = json_loads((const char *)sqlite3_column_text(st, 7), 0, NULL);
	json_t *params = json_loads((const char *)sqlite3_column_text(st, 8), 0, NULL);

	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:I, s:I}",
			 "id", sqlite3_column_text(st, 0), "tenant", sqlite3_column_text(st, 1),
			 "user", sqlite3_column_text(st, 2), "name", sqlite3_column_text(st, 3),
			 "size", (json_int_t)sqlite3_column_int64(st, 4),
			 "files", (json_int_t)sqlite3_column_int64(st, 5),
			 "data_bytes", (json_int_t)sqlite3_column_int64(st, 6),
			 "model", model ? model : json_null(), "params", params ? params : json_null(),
			 "created_us", (json_int_t)sqlite3_column_int64(st, 9),
			 "bytes", (json_int_t)sqlite3_column_int64(st, 10));
}

#define BUNDLE_COLS                                                                               \
	"id, tenant, user, name, size, files, data_bytes, model, params, created_us, extracted"

static int record(struct console *c, const char *id, const struct console_user *u,
		  const char *name, uint64_t size, uint64_t files, uint64_t extracted,
		  const struct bundle_info *bi, uint64_t now, json_t **out)
{
	json_t *model = modelcfg_to_json(&bi->model), *params = trainparams_to_json(&bi->params);
	char *ms = json_dumps(model, JSON_COMPACT), *ps = json_dumps(params, JSON_COMPACT);
	sqlite3_stmt *st;
	int r = -ENOMEM, rc;

	if (!ms || !ps)
		goto out_free;
	r = db_prepare(c->db, "INSERT INTO bundles (" BUNDLE_COLS ") VALUES (?,?,?,?,?,?,?,?,?,?,?)",
		       &st);
	if (r < 0)
		goto out_free;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, u->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, u->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)size);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)files);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)bi->data_bytes);
	sqlite3_bind_text(st, 8, ms, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, ps, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 11, (sqlite3_int64)extracted);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	r = rc == SQLITE_DONE ? 0 : (db_errno(rc) ? db_errno(rc) : -EIO);
	if (r == 0)
		*out = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:O, s:O, s:I, s:I}", "id",
				 id, "tenant", u->tenant, "user", u->user, "name", name,
				 "size", (json_int_t)size, "files", (json_int_t)files,
				 "data_bytes", (json_int_t)bi->data_bytes, "model", model,
				 "params", params, "created_us", (json_int_t)now, "bytes",
				 (json_int_t)extracted);
out_free:
	free(ms);
	free(ps);
	json_decref(model);
	json_decref(params);
	return r;
}

/* Flushes the extracted files and the rename to disk before the row exists. */
static int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (syncfs(fd) < 0 || fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Status code for an extraction error. */
static unsigned extract_status(int r)
{
	switch (r) {
	case -EPROTONOSUPPORT:
		return 415;
	case -ENOSPC:
	case -EIO:
	case -ENOMEM:
		return 500;
	default:
		return 400;
	}
}

/* Bundles a tenant holds (each one is disk space: capped per tenant). */
static int64_t count_bundles(struct console *c, const char *tenant)
{
	sqlite3_stmt *st;
	int64_t n = 0;

	if (db_prepare(c->db, "SELECT count(*) FROM bundles WHERE tenant = ?", &st) < 0)
		return INT64_MAX;
	sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* Bytes the tenant's bundles take on disk (0 when it cannot be read: the
 * per-bundle cap still holds). */
static uint64_t tenant_bytes(struct console *c, const char *tenant)
{
	sqlite3_stmt *st;
	uint64_t n = 0;

	if (db_prepare(c->db, "SELECT coalesce(sum(extracted), 0) FROM bundles WHERE tenant = ?",
		       &st) < 0)
		return 0;
	sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

void bundles_upload(struct console *c, struct httpd_req *req, const struct console_user *u)
{
	struct upload_limits lim = {.max_files = c->max_files, .max_bytes = c->max_bundle};
	const char *name = httpd_req_query(req, "name"), *file;
	char id[3 + 33], partial[4200], final[4200], err[1024] = "";
	struct bundle_info bi;
	uint64_t size = 0, files = 0, bytes = 0, now = util_wall_us(), used;
	json_t *out = NULL;
	int r;

	if (!name || !*name)
		name = "bundle";
	if (!util_valid_name(name, CONSOLE_NAME_MAX)) {
		httpd_reply_error(req, 400, "invalid bundle name '%.80s': use 1..%d of "
				  "[A-Za-z0-9_.-]", name, CONSOLE_NAME_MAX);
		return;
	}
	if (count_bundles(c, u->tenant) >= CONSOLE_MAX_BUNDLES) {
		httpd_reply_error(req, 409, "tenant '%s' already has %d bundles (the limit)",
				  u->tenant, CONSOLE_MAX_BUNDLES);
		return;
	}
	/* the tenant's storage quota: a bundle may take what is left of it */
	used = tenant_bytes(c, u->tenant);
	if (used >= c->max_tenant) {
		char a[32];

		httpd_reply_error(req, 409, "tenant '%s' has %s of bundles, its limit "
				  "(--max-tenant-bytes); delete some first (DELETE "
				  "/api/v1/bundles/{id})", u->tenant, util_fmt_bytes(used, a, sizeof(a)));
		return;
	}
	if (c->max_tenant - used < lim.max_bytes)
		lim.max_bytes = c->max_tenant - used;
	file = httpd_req_body_file(req, &size);
	if (!file || size == 0) {
		httpd_reply_error(req, 400, "the request body is empty: upload a tar archive "
				  "(tar, tar.gz or tar.zst)");
		return;
	}
	memcpy(id, "b-", 2);
	if (util_random_hex(id + 2, 8) < 0) {
		httpd_reply_error(req, 500, "cannot make a bundle id");
		return;
	}
	snprintf(partial, sizeof(partial), "%s/.partial-%s", c->bundles_dir, id);
	snprintf(final, sizeof(final), "%s/%s", c->bundles_dir, id);
	if (mkdir(partial, 0750) < 0) {
		log_err("cannot create %s: %m", partial);
		httpd_reply_error(req, 500, "cannot store the bundle: %s", strerror(errno));
		return;
	}
	r = upload_extract(file, partial, &lim, &files, &bytes, err, sizeof(err));
	if (r == -EFBIG && lim.max_bytes < c->max_bundle) {
		char a[32], b[32];

		snprintf(err + strlen(err), sizeof(err) - strlen(err), "; that is what is left of "
			 "tenant '%s''s storage (%s of %s used; delete bundles to make room)",
			 u->tenant, util_fmt_bytes(used, a, sizeof(a)),
			 util_fmt_bytes(c->max_tenant, b, sizeof(b)));
	}
	if (r < 0) {
		log_info("upload of '%s' by %s/%s rejected: %s", name, u->tenant, u->user, err);
		httpd_reply_error(req, extract_status(r), "%s", err);
		goto out_rm;
	}
	r = bundle_check(partial, &bi, err, sizeof(err));
	if (r < 0) {
		log_info("bundle '%s' of %s/%s rejected: %s", name, u->tenant, u->user, err);
		httpd_reply_error(req, 400, "%s", err);
		goto out_rm;
	}
	if ((r = sync_dir(partial)) < 0 || rename(partial, final) < 0 ||
	    (r = sync_dir(c->bundles_dir)) < 0) {
		r = r < 0 ? r : -errno;
		log_err_errno(r, "cannot commit bundle %s", final);
		httpd_reply_error(req, 500, "cannot store the bundle: %s", strerror(-r));
		util_rm_rf(final);
		goto out_rm;
	}
	r = record(c, id, u, name, size, files, bytes, &bi, now, &out);
	if (r < 0) {
		log_err_errno(r, "cannot record bundle %s", id);
		httpd_reply_error(req, 500, "cannot record the bundle: %s", strerror(-r));
		util_rm_rf(final);
		return;
	}
	log_info("bundle %s '%s' of %s/%s: %llu bytes, %llu files, %llu extracted", id, name,
		 u->tenant, u->user, (unsigned long long)size, (unsigned long long)files,
		 (unsigned long long)bytes);
	httpd_reply_json(req, 201, out);
	return;
out_rm:
	util_rm_rf(partial);
}

void bundles_list(struct console *c, struct httpd_req *req, const struct console_user *u)
{
	json_t *arr = json_array();
	sqlite3_stmt *st;

	if (db_prepare(c->db, "SELECT " BUNDLE_COLS " FROM bundles WHERE tenant = ? "
			      "ORDER BY created_us DESC LIMIT ?", &st) < 0) {
		json_decref(arr);
		httpd_reply_error(req, 500, "cannot list bundles");
		return;
	}
	sqlite3_bind_text(st, 1, u->tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, CONSOLE_MAX_BUNDLES);
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(arr, row_json(st));
	sqlite3_finalize(st);
	httpd_reply_json(req, 200, json_pack("{s:o}", "bundles", arr));
}

int bundles_get(struct console *c, const char *tenant, const char *id, json_t **out)
{
	sqlite3_stmt *st;
	int r = -ENOENT;

	if (db_prepare(c->db, "SELECT " BUNDLE_COLS " FROM bundles WHERE id = ? AND tenant = ?",
		       &st) < 0)
		return -EIO;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*out = row_json(st);
		r = *out ? 0 : -ENOMEM;
	}
	sqlite3_finalize(st);
	return r;
}

void bundles_delete(struct console *c, struct httpd_req *req, const struct console_user *u)
{
	const char *id = httpd_req_arg(req, 0);
	char path[320], dir[4200], gone[4200];
	json_t *b = NULL, *resp = NULL, *j;
	sqlite3_stmt *st;
	long status = 0;
	size_t i;
	int r;

	if (bundles_get(c, u->tenant, id, &b) < 0) {
		httpd_reply_error(req, 404, "no such bundle: '%.80s'", id);
		return;
	}
	json_decref(b);
	/* a queued, running or paused job reads the bundle's files: ask
	 * admission (a tenant has at most 1000 unfinished jobs, one page) */
	snprintf(path, sizeof(path), "/v1/jobs?tenant=%s&state=active&limit=1000", u->tenant);
	if (console_peer_call(req, u, c->admitd, "admission", "GET", path, NULL, &status, &resp) < 0)
		return;
	if (status != 200 || !json_is_array(json_object_get(resp, "jobs"))) {
		console_pass_through(req, "admission", status, resp);
		return;
	}
	json_array_foreach(json_object_get(resp, "jobs"), i, j) {
		const char *bid = json_string_value(json_object_get(j, "bundle_id"));

		if (bid && !strcmp(bid, id)) {
			httpd_reply_error(req, 409, "bundle %s is in use by job %s (%s); cancel it or "
					  "wait for it to end", id,
					  json_string_value(json_object_get(j, "id")),
					  json_string_value(json_object_get(j, "state")));
			json_decref(resp);
			return;
		}
	}
	json_decref(resp);
	/* the row first: once it is gone no new job can name the bundle; a
	 * crash before the files go leaves only a directory nothing refers to */
	r = db_prepare(c->db, "DELETE FROM bundles WHERE id = ? AND tenant = ?", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, u->tenant, -1, SQLITE_STATIC);
		r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
		sqlite3_finalize(st);
	}
	if (r < 0) {
		httpd_reply_error(req, 500, "cannot remove bundle %s from the database", id);
		return;
	}
	snprintf(dir, sizeof(dir), "%s/%s", c->bundles_dir, id);
	snprintf(gone, sizeof(gone), "%s/.partial-%s", c->bundles_dir, id);
	if (rename(dir, gone) < 0)
		log_warn("bundle %s: cannot move %s aside: %m; its files stay", id, dir);
	util_rm_rf(gone);
	log_info("bundle %s of %s deleted by %s", id, u->tenant, u->user);
	httpd_reply_json(req, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1));
}

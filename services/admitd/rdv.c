/* rdv — rendezvous for the ranks of one launch attempt.
 *
 * Each rank posts (key, rank, size, addr); a GET on the key is complete once
 * all `size` ranks have posted, and lists their addresses by rank. Keys are
 * "JOBID.ATTEMPT", so a relaunch never meets stale ranks; store.c removes a
 * job's keys when it ends, and the daemon's tick drops keys older than a day.
 * Never blocks: ranks poll.
 */
#include "admitd.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* host:port with a port in 1..65535 and a non-empty host of safe chars. */
static int valid_addr(const char *s)
{
	const char *colon = s ? strrchr(s, ':') : NULL;
	char *end;
	long port;

	if (!colon || colon == s || strlen(s) > ADMIT_MAX_ADDR)
		return 0;
	for (const char *p = s; p < colon; p++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_[]:",
			    *p))
			return 0;
	port = strtol(colon + 1, &end, 10);
	return *end == 0 && end != colon + 1 && port > 0 && port < 65536;
}

void rdv_post(struct httpd_req *req, struct admitd *a)
{
	const char *key = httpd_req_arg(req, 0), *addr;
	json_t *b = httpd_req_json(req), *rank, *size;
	int64_t have_size = 0, rows = 0;
	sqlite3_stmt *st;
	int r;

	if (!b)
		return;
	rank = json_object_get(b, "rank");
	size = json_object_get(b, "size");
	addr = json_string_value(json_object_get(b, "addr"));
	if (!util_valid_name(key, ADMIT_MAX_STR)) {
		httpd_reply_error(req, 400, "rendezvous key must be 1-%d chars [A-Za-z0-9_.-]",
				  ADMIT_MAX_STR);
		goto out;
	}
	if (!json_is_integer(size) || json_integer_value(size) < 1 ||
	    json_integer_value(size) > ADMIT_MAX_RANKS) {
		httpd_reply_error(req, 400, "'size' must be an integer in [1, %d]", ADMIT_MAX_RANKS);
		goto out;
	}
	if (!json_is_integer(rank) || json_integer_value(rank) < 0 ||
	    json_integer_value(rank) >= json_integer_value(size)) {
		httpd_reply_error(req, 400, "'rank' must be an integer in [0, size %lld)",
				  (long long)json_integer_value(size));
		goto out;
	}
	if (!valid_addr(addr)) {
		httpd_reply_error(req, 400, "'addr' must be host:port of at most %d chars, got '%.80s'",
				  ADMIT_MAX_ADDR, addr ? addr : "(not a string)");
		goto out;
	}
	r = store_prep(a->db, "SELECT size FROM rdv WHERE key = ? LIMIT 1", "s", &st, key);
	if (r < 0)
		goto out_err;
	if (sqlite3_step(st) == SQLITE_ROW)
		have_size = sqlite3_column_int64(st, 0);
	store_done(st);
	if (have_size && have_size != json_integer_value(size)) {
		httpd_reply_error(req, 409, "rendezvous key '%s' has size %lld, not %lld", key,
				  (long long)have_size, (long long)json_integer_value(size));
		goto out;
	}
	store_int(a->db, "SELECT count(*) FROM rdv", 0, &rows);
	if (rows >= ADMIT_MAX_RDV_ROWS) {
		httpd_reply_error(req, 507, "too many rendezvous entries (limit %d)",
				  ADMIT_MAX_RDV_ROWS);
		goto out;
	}
	/* A restarted rank posts again: its new address replaces the old one. */
	r = store_run(a->db, "INSERT OR REPLACE INTO rdv (key, rank, size, addr, ts_us)"
		      " VALUES (?, ?, ?, ?, ?)", "siisi", key, (int64_t)json_integer_value(rank),
		      (int64_t)json_integer_value(size), addr, (int64_t)util_wall_us());
	if (r < 0)
		goto out_err;
	httpd_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
	goto out;
out_err:
	log_err_errno(r, "cannot store rendezvous entry for '%s'", key);
	httpd_reply_error(req, 500, "cannot store rendezvous entry: %s", strerror(-r));
out:
	json_decref(b);
}

void rdv_get(struct httpd_req *req, struct admitd *a)
{
	const char *key = httpd_req_arg(req, 0);
	json_t *addrs = json_array();
	int64_t size = 0, n = 0;
	sqlite3_stmt *st;
	int r;

	if (!util_valid_name(key, ADMIT_MAX_STR)) {
		json_decref(addrs);
		httpd_reply_error(req, 400, "rendezvous key must be 1-%d chars [A-Za-z0-9_.-]",
				  ADMIT_MAX_STR);
		return;
	}
	r = store_prep(a->db, "SELECT rank, size, addr FROM rdv WHERE key = ? ORDER BY rank", "s",
		       &st, key);
	if (r < 0) {
		json_decref(addrs);
		httpd_reply_error(req, 500, "cannot read rendezvous: %s", strerror(-r));
		return;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		int64_t rank = sqlite3_column_int64(st, 0);

		size = sqlite3_column_int64(st, 1);
		while ((int64_t)json_array_size(addrs) < rank)
			json_array_append_new(addrs, json_null()); /* not posted yet */
		json_array_append_new(addrs, json_string((const char *)sqlite3_column_text(st, 2)));
		n++;
	}
	store_done(st);
	while ((int64_t)json_array_size(addrs) < size)
		json_array_append_new(addrs, json_null());
	httpd_reply_json(req, 200, json_pack("{s:b, s:I, s:o}", "complete", size > 0 && n == size,
					     "size", (json_int_t)size, "addrs", addrs));
}

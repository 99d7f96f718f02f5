/* outbox — durable at-least-once delivery over HTTP; see outbox.h. */
#include "outbox.h"
#include "db.h"
#include "hclient.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct outbox {
	sqlite3 *db;
	char table[64];
	int64_t max;
	sqlite3_stmt *put, *pending; /* prepared once: a put is on every hot path */
};

int outbox_open(sqlite3 *db, const char *table, int64_t max_records, struct outbox **out)
{
	char sql[512];
	struct outbox *o;
	int r;

	if (strlen(table) >= sizeof(o->table) - 8 || strspn(table, "abcdefghijklmnopqrstuvwxyz_") !=
							     strlen(table))
		return -EINVAL;
	snprintf(sql, sizeof(sql),
		 "CREATE TABLE IF NOT EXISTS %s (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);"
		 "CREATE TABLE IF NOT EXISTS %s_dead (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, error TEXT);",
		 table, table);
	r = db_exec(db, sql);
	if (r < 0)
		return r;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->db = db;
	o->max = max_records;
	snprintf(o->table, sizeof(o->table), "%s", table);
	*out = o;
	return 0;
}

void outbox_free(struct outbox *o)
{
	if (!o)
		return;
	sqlite3_finalize(o->put);
	sqlite3_finalize(o->pending);
	free(o);
}

void outbox_set_limit(struct outbox *o, int64_t max_records)
{
	o->max = max_records;
}

/* The span of queued sequence numbers: two rowid look-ups, not a count(*)
 * scan, so a spool grown large while its receiver was down stays cheap to
 * bound. Exact, since records leave in sequence order (flush takes the lowest
 * ones and every one it sends is acknowledged or rejected); were a receiver
 * ever to acknowledge out of order, it would over-count, which errs on the
 * side of refusing work, never of dropping records. */
int64_t outbox_pending(struct outbox *o)
{
	char sql[192];
	int64_t n = -EIO;

	if (!o->pending) {
		snprintf(sql, sizeof(sql), "SELECT coalesce((SELECT max(seq) FROM %s) - "
			 "(SELECT min(seq) FROM %s) + 1, 0)", o->table, o->table);
		if (db_prepare(o->db, sql, &o->pending) < 0)
			return -EIO;
	}
	if (sqlite3_step(o->pending) == SQLITE_ROW)
		n = sqlite3_column_int64(o->pending, 0);
	sqlite3_reset(o->pending);
	return n;
}

int outbox_put(struct outbox *o, json_t *rec, int64_t *seq)
{
	int64_t pending = outbox_pending(o);
	char sql[128];
	char *s;
	int r, rc;

	if (pending < 0)
		return (int)pending;
	if (pending >= o->max)
		return -ENOSPC;
	s = json_dumps(rec, JSON_COMPACT);
	if (!s)
		return -ENOMEM;
	if (!o->put) {
		snprintf(sql, sizeof(sql), "INSERT INTO %s (body) VALUES (?)", o->table);
		r = db_prepare(o->db, sql, &o->put);
		if (r < 0)
			goto out_free;
	}
	sqlite3_bind_text(o->put, 1, s, -1, SQLITE_STATIC);
	rc = sqlite3_step(o->put);
	r = rc == SQLITE_DONE ? 0 : db_errno(rc);
	if (r == 0 && seq)
		*seq = sqlite3_last_insert_rowid(o->db);
	sqlite3_reset(o->put);
	sqlite3_clear_bindings(o->put);
out_free:
	free(s);
	return r;
}

/* Deletes seq from the queue, optionally keeping it in the dead-letter table. */
static void outbox_remove(struct outbox *o, int64_t seq, const char *dead_error)
{
	char sql[256];
	sqlite3_stmt *st;

	if (dead_error) {
		snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO %s_dead SELECT seq, body, ? FROM %s "
			 "WHERE seq = ?", o->table, o->table);
		if (db_prepare(o->db, sql, &st) == 0) {
			sqlite3_bind_text(st, 1, dead_error, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 2, seq);
			sqlite3_step(st);
			sqlite3_finalize(st);
		}
	}
	snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE seq = ?", o->table);
	if (db_prepare(o->db, sql, &st) == 0) {
		sqlite3_bind_int64(st, 1, seq);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
}

int outbox_flush(struct outbox *o, const char *base, const char *path, const char *source,
		 int batch, int timeout_ms)
{
	json_t *req, *recs, *resp = NULL, *x;
	sqlite3_stmt *st;
	char sql[128];
	long status = 0;
	size_t i;
	int r, n = 0;

	snprintf(sql, sizeof(sql), "SELECT seq, body FROM %s ORDER BY seq LIMIT ?", o->table);
	r = db_prepare(o->db, sql, &st);
	if (r < 0)
		return r;
	sqlite3_bind_int(st, 1, batch);
	recs = json_array();
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *rec = json_loads((const char *)sqlite3_column_text(st, 1), 0, NULL);

		if (!rec)
			rec = json_object();
		json_object_set_new(rec, "seq", json_integer(sqlite3_column_int64(st, 0)));
		json_array_append_new(recs, rec);
	}
	sqlite3_finalize(st);
	if (json_array_size(recs) == 0) {
		json_decref(recs);
		return 0;
	}
	req = json_pack("{s:s, s:o}", "source", source, "records", recs);
	r = hclient_json(base, "POST", path, NULL, req, timeout_ms, &status, &resp);
	json_decref(req);
	if (r < 0)
		return r;
	if (status != 200 || !json_is_object(resp)) {
		json_decref(resp);
		return -EPROTO;
	}
	r = db_begin(o->db);
	if (r < 0)
		goto out_decref;
	json_array_foreach(json_object_get(resp, "acked"), i, x) {
		if (json_is_integer(x)) {
			outbox_remove(o, json_integer_value(x), NULL);
			n++;
		}
	}
	json_array_foreach(json_object_get(resp, "rejected"), i, x) {
		json_t *seq = json_object_get(x, "seq");
		const char *e = json_string_value(json_object_get(x, "error"));

		if (!json_is_integer(seq))
			continue;
		log_err("%s record %lld rejected by %s: %s; kept in %s_dead", o->table,
			(long long)json_integer_value(seq), base, e ? e : "?", o->table);
		outbox_remove(o, json_integer_value(seq), e ? e : "rejected");
		n++;
	}
	r = db_commit(o->db);
	if (r < 0)
		db_rollback(o->db);
out_decref:
	json_decref(resp);
	return r < 0 ? r : n;
}

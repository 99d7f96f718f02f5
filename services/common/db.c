/* db — SQLite open/migrate/transaction helpers shared by every daemon. */
#include "db.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>

int db_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return -EACCES;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

int db_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK) {
		log_debug("sqlite: %s (in: %.80s)", err ? err : sqlite3_errstr(rc), sql);
		sqlite3_free(err);
		return db_errno(rc);
	}
	return 0;
}

int db_open(const char *path, int durable, sqlite3 **out)
{
	sqlite3 *db = NULL;
	int rc, r;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				   SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = db_errno(rc);
		goto out_close;
	}
	sqlite3_busy_timeout(db, 5000);
	r = db_exec(db, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;");
	if (r < 0)
		goto out_close;
	r = db_exec(db, durable ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;");
	if (r < 0)
		goto out_close;
	*out = db;
	return 0;
out_close:
	sqlite3_close(db);
	return r;
}

void db_close(sqlite3 *db)
{
	if (db)
		sqlite3_close(db);
}

int db_begin(sqlite3 *db)
{
	return db_exec(db, "BEGIN IMMEDIATE");
}

int db_commit(sqlite3 *db)
{
	return db_exec(db, "COMMIT");
}

void db_rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		db_exec(db, "ROLLBACK");
}

int db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
	int rc = sqlite3_prepare_v2(db, sql, -1, out, NULL);

	if (rc != SQLITE_OK) {
		log_debug("sqlite prepare: %s (in: %.80s)", sqlite3_errmsg(db), sql);
		return db_errno(rc);
	}
	return 0;
}

int db_query_int(sqlite3 *db, const char *sql, int64_t dflt, int64_t *out)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_type(st, 0) == SQLITE_NULL ? dflt : sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*out = dflt;
	else
		r = db_errno(rc);
	sqlite3_finalize(st);
	return r;
}

int db_migrate(sqlite3 *db, const char *const *migrations, int n)
{
	int64_t v;
	int r;

	r = db_query_int(db, "PRAGMA user_version", 0, &v);
	if (r < 0)
		return r;
	if (v > n)
		return -EPROTO; /* database from a newer version */
	for (int i = (int)v; i < n; i++) {
		char pragma[64];

		r = db_begin(db);
		if (r < 0)
			return r;
		r = db_exec(db, migrations[i]);
		if (r < 0)
			goto out_rollback;
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version=%d", i + 1);
		r = db_exec(db, pragma);
		if (r < 0)
			goto out_rollback;
		r = db_commit(db);
		if (r < 0)
			goto out_rollback;
	}
	return 0;
out_rollback:
	db_rollback(db);
	return r;
}

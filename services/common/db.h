/* db — SQLite helpers: open in WAL mode with a busy timeout, run schema
 * migrations keyed on PRAGMA user_version, and small statement helpers.
 * Every daemon owns exactly one database file under its state directory. */
#pragma once
#include <sqlite3.h>
#include <stdint.h>

/* durable=1 sets synchronous=FULL (ledger, spools); else NORMAL (safe in WAL
 * against application crashes, may lose the last commits on power loss). */
int db_open(const char *path, int durable, sqlite3 **out);
void db_close(sqlite3 *db);
/* Applies migrations[v..n-1] where v is the current user_version, each in a
 * transaction, then sets user_version = n. */
int db_migrate(sqlite3 *db, const char *const *migrations, int n);
int db_exec(sqlite3 *db, const char *sql);
int db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out);
int db_begin(sqlite3 *db);   /* BEGIN IMMEDIATE: take the write lock up front */
int db_commit(sqlite3 *db);
void db_rollback(sqlite3 *db);
/* Maps an SQLite result code to a negative errno. */
int db_errno(int rc);
/* Runs a statement that returns one integer (or none: *out = dflt). */
int db_query_int(sqlite3 *db, const char *sql, int64_t dflt, int64_t *out);

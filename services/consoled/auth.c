/* auth — consoled's database and its users: tenants, users, roles and the
 * SHA-256 of their bearer tokens. A token itself is never stored or logged;
 * lookups compare hashes in constant time. Also holds the schema of the
 * whole consoled.db (users and bundles) so migrations live in one place. */
#include "consoled.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const migrations[] = {
	"CREATE TABLE users ("
	"  token_sha256 TEXT PRIMARY KEY,"
	"  tenant TEXT NOT NULL,"
	"  user TEXT NOT NULL,"
	"  role TEXT NOT NULL CHECK (role IN ('user', 'operator')),"
	"  created_us INTEGER NOT NULL,"
	"  UNIQUE (tenant, user));"
	"CREATE TABLE bundles ("
	"  id TEXT PRIMARY KEY,"
	"  tenant TEXT NOT NULL,"
	"  user TEXT NOT NULL,"
	"  name TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  files INTEGER NOT NULL,"
	"  data_bytes INTEGER NOT NULL,"
	"  model TEXT NOT NULL,"
	"  params TEXT NOT NULL,"
	"  created_us INTEGER NOT NULL);"
	"CREATE INDEX bundles_tenant ON bundles (tenant, created_us);",
	/* 2: bytes on disk once extracted, for the tenant's storage quota
	 * (older rows: their data bytes, the bulk of a bundle) */
	"ALTER TABLE bundles ADD COLUMN extracted INTEGER NOT NULL DEFAULT 0;"
	"UPDATE bundles SET extracted = data_bytes;",
};

int auth_db_open(const char *state, sqlite3 **out)
{
	char path[4096];
	sqlite3 *db;
	int r;

	if (snprintf(path, sizeof(path), "%s/consoled.db", state) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	r = util_mkdir_p(state);
	if (r < 0)
		return r;
	r = db_open(path, 1, &db);
	if (r < 0)
		return r;
	r = db_migrate(db, migrations, (int)ARRAY_SIZE(migrations));
	if (r < 0) {
		db_close(db);
		return r;
	}
	*out = db;
	return 0;
}

int auth_equal(const char *a, const char *b, size_t n)
{
	unsigned char d = 0;

	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)a[i] ^ (unsigned char)b[i];
	return d == 0;
}

/* Tokens are printable ASCII without spaces, so they survive an HTTP header. */
static int valid_token(const char *t)
{
	size_t n = strlen(t);

	if (n < CONSOLE_TOKEN_MIN || n > CONSOLE_TOKEN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (t[i] <= ' ' || t[i] > '~')
			return 0;
	return 1;
}

int auth_add_user(sqlite3 *db, const char *tenant, const char *user, const char *role,
		  const char *token, char *err, size_t errlen)
{
	char hash[65];
	sqlite3_stmt *st;
	int r, rc;

	if (!util_valid_name(tenant, CONSOLE_NAME_MAX)) {
		snprintf(err, errlen, "invalid tenant '%.80s': use 1..%d of [A-Za-z0-9_.-]", tenant,
			 CONSOLE_NAME_MAX);
		return -EINVAL;
	}
	if (!util_valid_name(user, CONSOLE_NAME_MAX)) {
		snprintf(err, errlen, "invalid user '%.80s': use 1..%d of [A-Za-z0-9_.-]", user,
			 CONSOLE_NAME_MAX);
		return -EINVAL;
	}
	if (strcmp(role, "user") && strcmp(role, "operator")) {
		snprintf(err, errlen, "invalid role '%.40s': use user or operator", role);
		return -EINVAL;
	}
	if (!valid_token(token)) {
		snprintf(err, errlen, "invalid token: use %d..%d printable characters without spaces",
			 CONSOLE_TOKEN_MIN, CONSOLE_TOKEN_MAX);
		return -EINVAL;
	}
	util_sha256_hex(token, strlen(token), hash);
	r = db_prepare(db, "INSERT INTO users (token_sha256, tenant, user, role, created_us) "
			   "VALUES (?, ?, ?, ?, ?)", &st);
	if (r < 0) {
		snprintf(err, errlen, "cannot prepare the user insert: %s", sqlite3_errmsg(db));
		return r;
	}
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, role, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)util_wall_us());
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = db_errno(rc);
		if (r == -EEXIST)
			snprintf(err, errlen, "user '%s' of tenant '%s' already exists (or the token "
				 "is already in use)", user, tenant);
		else
			snprintf(err, errlen, "cannot add user '%s': %s", user, sqlite3_errstr(rc));
		return r ? r : -EIO;
	}
	return 0;
}

int auth_lookup(sqlite3 *db, const char *token, struct console_user *out)
{
	struct console_user u;
	char hash[65];
	sqlite3_stmt *st;
	int r = -EACCES;

	memset(&u, 0, sizeof(u));
	if (!token || !valid_token(token))
		return -EACCES;
	util_sha256_hex(token, strlen(token), hash);
	if (db_prepare(db, "SELECT token_sha256, tenant, user, role FROM users "
			   "WHERE token_sha256 = ?", &st) < 0)
		return -EIO;
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *h = (const char *)sqlite3_column_text(st, 0);

		if (h && strlen(h) == 64 && auth_equal(h, hash, 64)) {
			snprintf(u.tenant, sizeof(u.tenant), "%s", sqlite3_column_text(st, 1));
			snprintf(u.user, sizeof(u.user), "%s", sqlite3_column_text(st, 2));
			snprintf(u.role, sizeof(u.role), "%s", sqlite3_column_text(st, 3));
			*out = u;
			r = 0;
		}
	}
	sqlite3_finalize(st);
	return r;
}

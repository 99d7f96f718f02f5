/* store — admitd's SQLite file: schema, migrations and the job rows.
 *
 * Owns the tables jobs (one row per job, FIFO order = seq), job_events (every
 * state change with its reason), nodes, assign (which ranks of a job run on
 * which node, and what that node last reported) and rdv (rendezvous). The
 * estimate outbox lives in the same file (common/outbox.h). Everything that
 * must survive kill -9 is written here before a reply leaves the daemon.
 * Statements are prepared once and reused (store_prep, store_done).
 */
#include "admitd.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const store_migrations[] = {
	"CREATE TABLE jobs ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" id TEXT NOT NULL UNIQUE,"
	" tenant TEXT NOT NULL, user TEXT NOT NULL, bundle_id TEXT NOT NULL,"
	" bundle_dir TEXT NOT NULL, name TEXT NOT NULL,"
	" state TEXT NOT NULL, reason TEXT NOT NULL,"
	" ranks INTEGER NOT NULL DEFAULT 0,"
	" model TEXT NOT NULL, params TEXT NOT NULL, estimate TEXT, progress TEXT,"
	" node TEXT, attempt INTEGER NOT NULL DEFAULT 0,"
	" cancel_requested INTEGER NOT NULL DEFAULT 0,"
	" output_dir TEXT, error TEXT,"
	" created_us INTEGER NOT NULL, started_us INTEGER, finished_us INTEGER,"
	" updated_us INTEGER NOT NULL);"
	"CREATE INDEX jobs_state ON jobs(state, seq);"
	"CREATE INDEX jobs_tenant ON jobs(tenant, seq);"
	"CREATE TABLE job_events (id INTEGER PRIMARY KEY, job TEXT NOT NULL,"
	" ts_us INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL);"
	"CREATE INDEX job_events_job ON job_events(job, id);"
	"CREATE TABLE nodes (id TEXT PRIMARY KEY, addr TEXT NOT NULL, slots INTEGER NOT NULL,"
	" flops_per_slot REAL NOT NULL, last_seen_us INTEGER NOT NULL,"
	" down INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE assign (job TEXT NOT NULL, node TEXT NOT NULL,"
	" first_rank INTEGER NOT NULL, n INTEGER NOT NULL, state TEXT, error TEXT,"
	" PRIMARY KEY (job, node));"
	"CREATE INDEX assign_node ON assign(node, state);"
	"CREATE TABLE rdv (key TEXT NOT NULL, rank INTEGER NOT NULL, size INTEGER NOT NULL,"
	" addr TEXT NOT NULL, ts_us INTEGER NOT NULL, PRIMARY KEY (key, rank));",
	/* 2: priorities, runtime estimates for the queue policy, ledger holds,
	 * budget stops, per-tenant quotas */
	"ALTER TABLE jobs ADD COLUMN prio INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN est_s REAL NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN est_micro INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN hold_state TEXT;"
	"ALTER TABLE jobs ADD COLUMN hold_micro INTEGER;"
	"ALTER TABLE jobs ADD COLUMN stop_reason TEXT;"
	"CREATE INDEX jobs_finished ON jobs(finished_us);"
	"CREATE TABLE tenants (id TEXT PRIMARY KEY, max_ranks INTEGER NOT NULL DEFAULT 0,"
	" max_jobs INTEGER NOT NULL DEFAULT 0, share REAL NOT NULL DEFAULT 1,"
	" updated_us INTEGER NOT NULL);",
	/* 3: the estimator learns per node (eff, eff_jobs; jobs.learned: 0 to
	 * do, 1 learned, -1 nothing to learn); the node's measured profile
	 * (memory, allreduce α-β) and operator re-probe requests */
	"ALTER TABLE nodes ADD COLUMN eff REAL;"
	"ALTER TABLE nodes ADD COLUMN eff_jobs INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE nodes ADD COLUMN mem_bytes REAL;"
	"ALTER TABLE nodes ADD COLUMN alpha_s REAL;"
	"ALTER TABLE nodes ADD COLUMN beta_bps REAL;"
	"ALTER TABLE nodes ADD COLUMN probed_us INTEGER;"
	"ALTER TABLE nodes ADD COLUMN reprobe_us INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN learned INTEGER NOT NULL DEFAULT 0;"
	"UPDATE jobs SET learned = -1 WHERE state IN ('succeeded', 'failed', 'cancelled');"
	"CREATE INDEX jobs_learn ON jobs(learned, state);",
	/* 4: preemption: why a running job is being checkpointed and stopped
	 * ("preempted by higher-priority job j-… (priority P)"), NULL otherwise */
	"ALTER TABLE jobs ADD COLUMN preempt TEXT;",
	/* 5: a submission counts its tenant's unfinished jobs without reading
	 * the tenant's history */
	"CREATE INDEX jobs_tenant_state ON jobs(tenant, state);",
	/* 6: a job over its hold that the budget cannot extend is checkpointed
	 * and then paused or stopped ('pause' | 'stop', with jobs.preempt
	 * holding the reason); attempt_us: when the current attempt started
	 * running; run_us: time run by the attempts that ended */
	"ALTER TABLE jobs ADD COLUMN overrun TEXT;"
	"ALTER TABLE jobs ADD COLUMN attempt_us INTEGER;"
	"ALTER TABLE jobs ADD COLUMN run_us INTEGER NOT NULL DEFAULT 0;",
	/* 7: node classes: what a node is ("cpu", "h100", an operator's label),
	 * whether its slots are GPUs, its GPUs as reported (JSON) and the
	 * smallest one's memory; the class a job was priced for (NULL: "cpu") */
	"ALTER TABLE nodes ADD COLUMN class TEXT NOT NULL DEFAULT 'cpu';"
	"ALTER TABLE nodes ADD COLUMN device TEXT NOT NULL DEFAULT 'cpu';"
	"ALTER TABLE nodes ADD COLUMN gpus TEXT;"
	"ALTER TABLE nodes ADD COLUMN gpu_mem REAL;"
	"ALTER TABLE jobs ADD COLUMN class TEXT;",
	/* 8: power per busy slot: what the node reports (a GPU's power limit)
	 * and what its metered energy says (learned like eff) */
	"ALTER TABLE nodes ADD COLUMN watts_reported REAL;"
	"ALTER TABLE nodes ADD COLUMN watts REAL;"
	"ALTER TABLE nodes ADD COLUMN watts_jobs INTEGER NOT NULL DEFAULT 0;",
	/* 9: the highest priority a tenant's users may ask for (an operator
	 * sets it; priorities preempt other tenants' jobs) */
	"ALTER TABLE tenants ADD COLUMN max_priority INTEGER NOT NULL DEFAULT 0;",
};

int store_open(const char *path, sqlite3 **out)
{
	sqlite3 *db;
	int r;

	/* durable: a job accepted with 201 must survive a power cut too. */
	r = db_open(path, 1, &db);
	if (r < 0)
		return r;
	r = db_migrate(db, store_migrations, (int)ARRAY_SIZE(store_migrations));
	if (r < 0) {
		store_close(db);
		return r;
	}
	*out = db;
	return 0;
}

static int bind_args(sqlite3_stmt *st, const char *types, va_list ap)
{
	for (int i = 0; types[i]; i++) {
		int rc;

		switch (types[i]) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(st, i + 1);
			break;
		}
		case 'i':
			rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
			break;
		case 'd':
			rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
			break;
		default:
			return -EINVAL;
		}
		if (rc != SQLITE_OK)
			return db_errno(rc);
	}
	return 0;
}

/* Prepared statements, reused: every statement admitd runs is a string
 * literal, so the cache is keyed by its address (checked against the text).
 * Parsing SQL was most of a submission's CPU time. A statement still in use
 * (nested use of the same SQL) gets a fresh one that store_done finalizes. */
#define STORE_CACHE 192 /* > the statements admitd has (about 100) */

static struct store_cached {
	sqlite3 *db;
	const char *sql;
	sqlite3_stmt *st;
	int busy;
} store_cache[STORE_CACHE];

static int cache_get(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
	struct store_cached *free_slot = NULL;
	int r;

	for (int i = 0; i < STORE_CACHE; i++) {
		struct store_cached *c = &store_cache[i];

		if (!c->st) {
			if (!free_slot)
				free_slot = c;
			continue;
		}
		if (c->sql == sql && c->db == db && !c->busy && !strcmp(sqlite3_sql(c->st), sql)) {
			c->busy = 1;
			*out = c->st;
			return 0;
		}
	}
	r = db_prepare(db, sql, out);
	if (r < 0 || !free_slot)
		return r;
	*free_slot = (struct store_cached){.db = db, .sql = sql, .st = *out, .busy = 1};
	return 0;
}

void store_done(sqlite3_stmt *st)
{
	if (!st)
		return;
	for (int i = 0; i < STORE_CACHE; i++)
		if (store_cache[i].st == st) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			store_cache[i].busy = 0;
			return;
		}
	store_done(st);
}

void store_close(sqlite3 *db)
{
	if (!db)
		return;
	for (int i = 0; i < STORE_CACHE; i++)
		if (store_cache[i].db == db) {
			sqlite3_finalize(store_cache[i].st);
			store_cache[i] = (struct store_cached){0};
		}
	db_close(db);
}

int store_prep(sqlite3 *db, const char *sql, const char *types, sqlite3_stmt **out, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r;

	r = cache_get(db, sql, &st);
	if (r < 0)
		return r;
	va_start(ap, out);
	r = bind_args(st, types, ap);
	va_end(ap);
	if (r < 0) {
		store_done(st);
		return r;
	}
	*out = st;
	return 0;
}

int store_run(sqlite3 *db, const char *sql, const char *types, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r, rc;

	r = cache_get(db, sql, &st);
	if (r < 0)
		return r;
	va_start(ap, types);
	r = bind_args(st, types, ap);
	va_end(ap);
	if (r == 0) {
		rc = sqlite3_step(st);
		r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_errno(rc);
		if (r < 0)
			log_debug("sqlite: %s (in: %.80s)", sqlite3_errmsg(db), sql);
	}
	store_done(st);
	return r;
}

int store_int(sqlite3 *db, const char *sql, int64_t dflt, int64_t *out)
{
	sqlite3_stmt *st;
	int r, rc;

	r = cache_get(db, sql, &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL ?
		       sqlite3_column_int64(st, 0) : dflt;
	r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_errno(rc);
	store_done(st);
	return r;
}

int store_int_s(sqlite3 *db, const char *sql, const char *arg, int64_t *out)
{
	sqlite3_stmt *st;
	int r, rc;

	r = store_prep(db, sql, "s", &st, arg);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_errno(rc);
	store_done(st);
	return r;
}

int store_begin(sqlite3 *db)
{
	return store_run(db, "BEGIN IMMEDIATE", "");
}

int store_commit(sqlite3 *db)
{
	return store_run(db, "COMMIT", "");
}

int store_job_final(const char *state)
{
	return !strcmp(state, "succeeded") || !strcmp(state, "failed") ||
	       !strcmp(state, "cancelled");
}

#define JOB_COLS                                                                                 \
	"id, tenant, user, bundle_id, name, state, reason, ranks, model, params, estimate,"     \
	" progress, node, output_dir, error, created_us, started_us, finished_us, bundle_dir,"  \
	" attempt, prio, hold_state, hold_micro"

static json_t *col_json(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);
	json_t *j = s ? json_loads(s, 0, NULL) : NULL;

	return j ? j : json_null();
}

static json_t *col_str(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	return s ? json_string(s) : json_null();
}

static json_t *col_int(sqlite3_stmt *st, int i)
{
	return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
							 : json_integer(sqlite3_column_int64(st, i));
}

/* Builds the API's job object from a row selected with JOB_COLS. */
static json_t *job_from_row(sqlite3_stmt *st)
{
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
			 " s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o}}",
			 "id", col_str(st, 0), "tenant", col_str(st, 1), "user", col_str(st, 2),
			 "bundle_id", col_str(st, 3), "name", col_str(st, 4), "state",
			 col_str(st, 5), "reason", col_str(st, 6), "ranks", col_int(st, 7), "model",
			 col_json(st, 8), "params", col_json(st, 9), "estimate", col_json(st, 10),
			 "progress", col_json(st, 11), "node", col_str(st, 12), "output_dir",
			 col_str(st, 13), "error", col_str(st, 14), "created_us", col_int(st, 15),
			 "started_us", col_int(st, 16), "finished_us", col_int(st, 17),
			 "bundle_dir", col_str(st, 18), "attempt", col_int(st, 19), "priority",
			 col_int(st, 20), "hold", "state", col_str(st, 21), "amount_micro",
			 col_int(st, 22));
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *store_job_fresh(const struct store_fresh *f)
{
	json_t *ev = json_array(), *j;

	for (int i = 0; i < f->n_events; i++)
		json_array_append_new(ev, json_pack("{s:I, s:s, s:s}", "ts_us",
						    (json_int_t)f->created_us, "state",
						    f->events[i].state, "reason", f->events[i].reason));
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:O, s:O, s:o, s:n, s:n, s:n,"
		      " s:o, s:I, s:n, s:o, s:s, s:I, s:I, s:{s:n, s:n}, s:[], s:o}",
		      "id", f->id, "tenant", f->tenant, "user", f->user, "bundle_id", f->bundle_id,
		      "name", f->name, "state", f->state, "reason", f->reason, "ranks",
		      (json_int_t)f->ranks, "model", f->model, "params", f->params, "estimate",
		      f->estimate ? json_incref(f->estimate) : json_null(), "progress", "node",
		      "output_dir", "error", str_or_null(f->error), "created_us",
		      (json_int_t)f->created_us, "started_us", "finished_us",
		      f->finished_us ? json_integer(f->finished_us) : json_null(), "bundle_dir",
		      f->bundle_dir, "attempt", (json_int_t)0, "priority", (json_int_t)f->prio,
		      "hold", "state", "amount_micro", "placement", "events", ev);
	return j;
}

/* The job's placement and event history, for GET /v1/jobs/{id}. */
static int job_add_detail(sqlite3 *db, const char *id, json_t *job)
{
	json_t *pl = json_array(), *ev = json_array();
	sqlite3_stmt *st;
	int r;

	r = store_prep(db, "SELECT node, first_rank, n, state, error FROM assign WHERE job = ?"
		       " ORDER BY first_rank", "s", &st, id);
	if (r < 0)
		goto out;
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *ranks = json_array();
		int first = sqlite3_column_int(st, 1), n = sqlite3_column_int(st, 2);

		for (int k = 0; k < n; k++)
			json_array_append_new(ranks, json_integer(first + k));
		json_array_append_new(pl, json_pack("{s:o, s:o, s:o, s:o}", "node", col_str(st, 0),
						    "ranks", ranks, "reported", col_str(st, 3),
						    "error", col_str(st, 4)));
	}
	store_done(st);
	r = store_prep(db, "SELECT ts_us, state, reason FROM job_events WHERE job = ? ORDER BY id",
		       "s", &st, id);
	if (r < 0)
		goto out;
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(ev, json_pack("{s:o, s:o, s:o}", "ts_us", col_int(st, 0),
						    "state", col_str(st, 1), "reason",
						    col_str(st, 2)));
	store_done(st);
out:
	json_object_set_new(job, "placement", pl);
	json_object_set_new(job, "events", ev);
	return r;
}

int store_job_get(sqlite3 *db, const char *id, json_t **out)
{
	sqlite3_stmt *st;
	json_t *j = NULL;
	int r, rc;

	r = store_prep(db, "SELECT " JOB_COLS " FROM jobs WHERE id = ?", "s", &st, id);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		j = job_from_row(st);
	else
		r = rc == SQLITE_DONE ? -ENOENT : db_errno(rc);
	store_done(st);
	if (r < 0)
		return r;
	if (!j)
		return -ENOMEM;
	r = job_add_detail(db, id, j);
	if (r < 0) {
		json_decref(j);
		return r;
	}
	*out = j;
	return 0;
}

int store_job_list(sqlite3 *db, const char *tenant, const char *state, int64_t before, int limit,
		   json_t **out, int64_t *next_before)
{
	sqlite3_stmt *st;
	json_t *a;
	int r, rc, n = 0;

	*next_before = 0;
	if (before <= 0)
		before = INT64_MAX;
	/* ?1 the state filter in both: "" any, "active" the unfinished ones */
#define LIST_STATE " AND (?1 = '' OR state = ?1 OR (?1 = 'active' AND state IN " \
		   STORE_UNFINISHED "))"
	if (tenant)
		r = store_prep(db, "SELECT " JOB_COLS ", seq FROM jobs WHERE tenant = ?2"
			       " AND seq < ?3" LIST_STATE " ORDER BY seq DESC LIMIT ?4", "ssii", &st,
			       state, tenant, before, (int64_t)limit);
	else
		r = store_prep(db, "SELECT " JOB_COLS ", seq FROM jobs WHERE seq < ?2" LIST_STATE
			       " ORDER BY seq DESC LIMIT ?3", "sii", &st, state, before,
			       (int64_t)limit);
#undef LIST_STATE
	if (r < 0)
		return r;
	a = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_array_append_new(a, job_from_row(st));
		if (++n == limit) /* a full page: there may be more before this one */
			*next_before = sqlite3_column_int64(st, 23);
	}
	store_done(st);
	if (rc != SQLITE_DONE) {
		json_decref(a);
		return db_errno(rc);
	}
	*out = a;
	return 0;
}

int store_set_state(sqlite3 *db, const char *id, const char *state, const char *reason)
{
	int64_t now = (int64_t)util_wall_us();
	int r;

	r = store_run(db, "INSERT INTO job_events (job, ts_us, state, reason) SELECT id, ?, ?, ?"
		      " FROM jobs WHERE id = ? AND (state != ? OR reason != ?)", "isssss", now,
		      state, reason, id, state, reason);
	if (r < 0)
		return r;
	r = store_run(db, "UPDATE jobs SET state = ?, reason = ?, updated_us = ?,"
		      " finished_us = CASE WHEN ? THEN coalesce(finished_us, ?) ELSE finished_us END"
		      " WHERE id = ?", "ssiiis", state, reason, now,
		      (int64_t)store_job_final(state), now, id);
	if (r < 0)
		return r;
	if (store_job_final(state))
		r = store_rdv_cleanup(db, id);
	log_info("job %s -> %s (%s)", id, state, reason);
	return r;
}

int store_set_reason(sqlite3 *db, const char *id, const char *reason)
{
	return store_run(db, "UPDATE jobs SET reason = ?, updated_us = ? WHERE id = ?"
			 " AND reason != ?", "siss", reason, (int64_t)util_wall_us(), id, reason);
}

int store_rdv_cleanup(sqlite3 *db, const char *id)
{
	char lo[ADMIT_MAX_STR + 4], hi[ADMIT_MAX_STR + 4];

	/* keys "ID.ATTEMPT": everything in ["ID.", "ID/") ('/' follows '.') */
	snprintf(lo, sizeof(lo), "%s.", id);
	snprintf(hi, sizeof(hi), "%s/", id);
	return store_run(db, "DELETE FROM rdv WHERE key >= ? AND key < ?", "ss", lo, hi);
}

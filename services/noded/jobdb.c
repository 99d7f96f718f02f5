/* jobdb — noded.db: the jobs this node has seen, and the probe result.
 *
 * A job row is written before any rank is forked, so a launch repeated by
 * admitd (a lost heartbeat reply) or seen again after a restart is never run
 * twice. Rows are never deleted: they are the node's record of what it ran.
 * The meter spool lives in the same file (spool.c) so a job's state and its
 * records share one durable store.
 */
#include "noded.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const jobdb_migrations[] = {
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user TEXT NOT NULL,"
	" bundle_dir TEXT NOT NULL, size INTEGER NOT NULL, ranks TEXT NOT NULL,"
	" state TEXT NOT NULL, error TEXT, output_dir TEXT, progress TEXT,"
	" pgid INTEGER NOT NULL DEFAULT 0, pgid_start INTEGER NOT NULL DEFAULT 0,"
	" reports_left INTEGER NOT NULL DEFAULT 3, created_us INTEGER NOT NULL,"
	" finished_us INTEGER);",
};

const char *job_state_name(enum job_state s)
{
	switch (s) {
	case JOB_RUNNING:
		return "running";
	case JOB_SUCCEEDED:
		return "succeeded";
	case JOB_FAILED:
		return "failed";
	case JOB_CANCELLED:
		return "cancelled";
	case JOB_PREEMPTED:
		return "preempted";
	}
	return "failed";
}

static enum job_state job_state_parse(const char *s)
{
	if (!strcmp(s, "running"))
		return JOB_RUNNING;
	if (!strcmp(s, "succeeded"))
		return JOB_SUCCEEDED;
	if (!strcmp(s, "cancelled"))
		return JOB_CANCELLED;
	if (!strcmp(s, "preempted"))
		return JOB_PREEMPTED;
	return JOB_FAILED;
}

int jobdb_open(struct noded *n)
{
	char path[PATH_MAX];
	int r;

	snprintf(path, sizeof(path), "%s/noded.db", n->state_dir);
	r = db_open(path, 1, &n->db);
	if (r < 0)
		return r;
	r = db_migrate(n->db, jobdb_migrations, (int)ARRAY_SIZE(jobdb_migrations));
	if (r < 0) {
		db_close(n->db);
		n->db = NULL;
	}
	return r;
}

/* Runs one statement with text/integer binds given as a format: 't' text, 'i' int64. */
static int jobdb_run(struct noded *n, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r, rc, i = 1;

	r = db_prepare(n->db, sql, &st);
	if (r < 0)
		return r;
	va_start(ap, fmt);
	for (const char *f = fmt; *f; f++, i++) {
		if (*f == 't') {
			const char *s = va_arg(ap, const char *);

			if (s)
				sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
			else
				sqlite3_bind_null(st, i);
		} else {
			sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
		}
	}
	va_end(ap);
	rc = sqlite3_step(st);
	r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : db_errno(rc);
	sqlite3_finalize(st);
	return r;
}

int jobdb_known(struct noded *n, const char *id)
{
	return jobdb_run(n, "SELECT 1 FROM jobs WHERE id = ?", "t", id);
}

int jobdb_preempted(struct noded *n, const char *id)
{
	return jobdb_run(n, "SELECT 1 FROM jobs WHERE id = ? AND state = 'preempted'", "t", id);
}

int jobdb_insert(struct noded *n, struct job *j, const char *ranks_json)
{
	/* REPLACE: only a preempted job's row is ever there (heartbeat.c) */
	return jobdb_run(n, "INSERT OR REPLACE INTO jobs (id, tenant, user, bundle_dir, size,"
			 " ranks, state, output_dir, reports_left, created_us)"
			 " VALUES (?,?,?,?,?,?,'running',?,?,?)",
			 "ttttittii", j->id, j->tenant, j->user, j->bundle_dir, (int64_t)j->size,
			 ranks_json, j->out_dir, (int64_t)NODED_REPORTS_AFTER_FINISH,
			 (int64_t)util_wall_us());
}

int jobdb_insert_refused(struct noded *n, const char *id, const char *tenant, const char *user,
			 const char *error)
{
	return jobdb_run(n, "INSERT INTO jobs (id, tenant, user, bundle_dir, size, ranks, state,"
			 " error, reports_left, created_us, finished_us)"
			 " VALUES (?,?,?,'',0,'[]','failed',?,?,?,?)", "ttttiii", id, tenant, user,
			 error, (int64_t)NODED_REPORTS_AFTER_FINISH, (int64_t)util_wall_us(),
			 (int64_t)util_wall_us());
}

int jobdb_set_pgid(struct noded *n, struct job *j, uint64_t starttime)
{
	return jobdb_run(n, "UPDATE jobs SET pgid = ?, pgid_start = ? WHERE id = ?", "iit",
			 (int64_t)j->pgid, (int64_t)starttime, j->id);
}

int jobdb_finish(struct noded *n, struct job *j)
{
	json_t *p = job_progress_json(j);
	char *ps = p ? json_dumps(p, JSON_COMPACT) : NULL;
	int r;

	r = jobdb_run(n, "UPDATE jobs SET state = ?, error = ?, output_dir = ?, progress = ?,"
		      " reports_left = ?, finished_us = ? WHERE id = ?", "ttttiit",
		      job_state_name(j->state), j->error[0] ? j->error : NULL,
		      j->state == JOB_SUCCEEDED ? j->out_dir : NULL, ps,
		      (int64_t)j->reports_left, (int64_t)util_wall_us(), j->id);
	free(ps);
	json_decref(p);
	return r;
}

int jobdb_set_reports_left(struct noded *n, struct job *j)
{
	return jobdb_run(n, "UPDATE jobs SET reports_left = ? WHERE id = ?", "it",
			 (int64_t)j->reports_left, j->id);
}

/* Kills what is left of a job that ran when the previous agent died: only if
 * its process group leader is still the process we started (same start time). */
static void jobdb_kill_orphans(const char *id, pid_t pgid, uint64_t start)
{
	uint64_t cpu, now_start;

	if (pgid <= 1 || meter_read_cpu(pgid, &cpu, &now_start) < 0 || now_start != start)
		return;
	log_warn("stopping the ranks of job %s (process group %d) left by the previous agent", id,
		 (int)pgid);
	kill(-pgid, SIGKILL);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	return s ? s : "";
}

int jobdb_recover(struct noded *n)
{
	sqlite3_stmt *st;
	int r;

	r = db_prepare(n->db, "SELECT id, pgid, pgid_start FROM jobs WHERE state = 'running'", &st);
	if (r < 0)
		return r;
	while (sqlite3_step(st) == SQLITE_ROW)
		jobdb_kill_orphans(col_text(st, 0), (pid_t)sqlite3_column_int64(st, 1),
				   (uint64_t)sqlite3_column_int64(st, 2));
	sqlite3_finalize(st);
	r = jobdb_run(n, "UPDATE jobs SET state = 'failed', error = 'the node agent restarted "
		      "while the job was running; its ranks were stopped', reports_left = ?,"
		      " finished_us = ? WHERE state = 'running'", "ii",
		      (int64_t)NODED_REPORTS_AFTER_FINISH, (int64_t)util_wall_us());
	if (r < 0)
		return r;
	r = db_prepare(n->db, "SELECT id, tenant, user, state, error, output_dir, progress,"
		       " reports_left FROM jobs WHERE reports_left > 0 ORDER BY created_us LIMIT ?",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_int(st, 1, NODED_MAX_JOBS);
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct job *j = job_new(n, col_text(st, 0), col_text(st, 1), col_text(st, 2));

		if (!j) {
			r = -ENOMEM;
			break;
		}
		j->state = job_state_parse(col_text(st, 3));
		snprintf(j->error, sizeof(j->error), "%s", col_text(st, 4));
		snprintf(j->out_dir, sizeof(j->out_dir), "%s", col_text(st, 5));
		job_progress_load(j, col_text(st, 6));
		j->reports_left = sqlite3_column_int(st, 7);
	}
	sqlite3_finalize(st);
	return r;
}

int jobdb_get_flops(struct noded *n, double *flops)
{
	sqlite3_stmt *st;
	int r;

	r = db_prepare(n->db, "SELECT value FROM meta WHERE key = 'flops_per_slot'", &st);
	if (r < 0)
		return r;
	r = -ENOENT;
	if (sqlite3_step(st) == SQLITE_ROW) {
		double v = sqlite3_column_double(st, 0);

		if (v > 0) {
			*flops = v;
			r = 0;
		}
	}
	sqlite3_finalize(st);
	return r;
}

int jobdb_set_flops(struct noded *n, double flops)
{
	char v[64];

	snprintf(v, sizeof(v), "%.17g", flops);
	return jobdb_run(n, "INSERT OR REPLACE INTO meta (key, value) VALUES ('flops_per_slot', ?)",
			 "t", v);
}

int jobdb_get_profile(struct noded *n, char *buf, size_t len)
{
	sqlite3_stmt *st;
	int r;

	r = db_prepare(n->db, "SELECT value FROM meta WHERE key = 'profile'", &st);
	if (r < 0)
		return r;
	r = -ENOENT;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
		snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

int jobdb_set_profile(struct noded *n, const char *json_text)
{
	return jobdb_run(n, "INSERT OR REPLACE INTO meta (key, value) VALUES ('profile', ?)", "t",
			 json_text);
}

/* jobdb — noded.db: the jobs this node has seen, and the probe result.
 *
 * A job row is written before any rank is forked, so a launch repeated by
 * admitd (a lost heartbeat reply) or seen again after a restart is never run
 * twice. Rows are never deleted: they are the node's record of what it ran.
 * The meter spool lives in the same file (spool.c) so a job's state and its
 * records share one durable store. A "ranks" row per forked rank holds its
 * pid, start time and last metered mark, advanced in the transaction that
 * spools the mark's records: after a kill -9 of the agent, the restart meters
 * each orphan from that mark up to now (jobdb_recover_meter), so no second is
 * lost and none is metered twice, even if the restart itself is killed. An
 * exit mark the full spool could not take yet is kept there too.
 */
#include "noded.h"
#include "db.h"
#include "log.h"
#include "outbox.h"
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
	"CREATE TABLE ranks (job TEXT NOT NULL, rank INTEGER NOT NULL, pid INTEGER NOT NULL,"
	" pid_start INTEGER NOT NULL, boot_id TEXT NOT NULL, launch_mono_us INTEGER NOT NULL,"
	" launch_wall_us INTEGER NOT NULL, mark_mono_us INTEGER NOT NULL,"
	" mark_cpu_us INTEGER NOT NULL, mark_comm_us INTEGER NOT NULL,"
	" exit_mono_us INTEGER NOT NULL DEFAULT 0, exit_cpu_us INTEGER NOT NULL DEFAULT 0,"
	" exit_comm_us INTEGER NOT NULL DEFAULT 0,"
	" done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (job, rank));",
	/* the GPU a rank holds (-1: none) and its energy counter at the mark and
	 * at its exit, in microjoules (-1: unknown) */
	"ALTER TABLE ranks ADD COLUMN gpu INTEGER NOT NULL DEFAULT -1;"
	"ALTER TABLE ranks ADD COLUMN mark_energy_uj INTEGER NOT NULL DEFAULT -1;"
	"ALTER TABLE ranks ADD COLUMN exit_energy_uj INTEGER NOT NULL DEFAULT -1;",
};

static int64_t energy_col(const struct meter_mark *m)
{
	return m->have_energy ? (int64_t)m->energy_uj : -1;
}

static void energy_load(struct meter_mark *m, int64_t v)
{
	m->have_energy = v >= 0;
	m->energy_uj = v >= 0 ? (uint64_t)v : 0;
}

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

/* The kernel's boot id: CLOCK_MONOTONIC values compare only within one boot. */
static void jobdb_read_boot_id(struct noded *n)
{
	char *buf = NULL;
	size_t len = 0;

	snprintf(n->boot_id, sizeof(n->boot_id), "unknown");
	if (util_read_file("/proc/sys/kernel/random/boot_id", 64, &buf, &len) < 0)
		return;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		len--;
	if (len > 0 && len < sizeof(n->boot_id))
		snprintf(n->boot_id, sizeof(n->boot_id), "%.*s", (int)len, buf);
	free(buf);
}

int jobdb_open(struct noded *n)
{
	char path[PATH_MAX];
	int r;

	jobdb_read_boot_id(n);
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

void jobdb_close(struct noded *n)
{
	sqlite3_finalize(n->mark_st);
	n->mark_st = NULL;
	db_close(n->db);
	n->db = NULL;
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

int jobdb_insert_rank(struct noded *n, struct rank *rk, uint64_t starttime)
{
	/* REPLACE: a preempted job's relaunch reuses its (job, rank) */
	return jobdb_run(n, "INSERT OR REPLACE INTO ranks (job, rank, pid, pid_start, boot_id,"
			 " launch_mono_us, launch_wall_us, mark_mono_us, mark_cpu_us, mark_comm_us,"
			 " gpu, mark_energy_uj) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", "tiiitiiiiiii",
			 rk->job->id, (int64_t)rk->rank, (int64_t)rk->pid, (int64_t)starttime,
			 n->boot_id, (int64_t)rk->launch_mono_us, (int64_t)rk->launch_wall_us,
			 (int64_t)rk->mark.mono_us, (int64_t)rk->mark.cpu_us,
			 (int64_t)rk->mark.comm_us, (int64_t)rk->gpu, energy_col(&rk->mark));
}

int jobdb_put_exit(struct noded *n, struct rank *rk)
{
	return jobdb_run(n, "UPDATE ranks SET exit_mono_us = ?, exit_cpu_us = ?, exit_comm_us = ?,"
			 " exit_energy_uj = ? WHERE job = ? AND rank = ?", "iiiiti",
			 (int64_t)rk->exit_mark.mono_us, (int64_t)rk->exit_mark.cpu_us,
			 (int64_t)rk->exit_mark.comm_us, energy_col(&rk->exit_mark), rk->job->id,
			 (int64_t)rk->rank);
}

/* On every meter tick: one prepared statement, no allocation. A rank with no
 * row (launched by an older agent, or a unit test's) just has nothing to move. */
int jobdb_put_mark(struct noded *n, struct rank *rk, const struct meter_mark *m, int final)
{
	int r, rc;

	if (!n->mark_st) {
		r = db_prepare(n->db, "UPDATE ranks SET mark_mono_us = ?, mark_cpu_us = ?,"
			       " mark_comm_us = ?, mark_energy_uj = ?, done = ?"
			       " WHERE job = ? AND rank = ?",
			       &n->mark_st);
		if (r < 0)
			return r;
	}
	sqlite3_bind_int64(n->mark_st, 1, (int64_t)m->mono_us);
	sqlite3_bind_int64(n->mark_st, 2, (int64_t)m->cpu_us);
	sqlite3_bind_int64(n->mark_st, 3, (int64_t)m->comm_us);
	sqlite3_bind_int64(n->mark_st, 4, energy_col(m));
	sqlite3_bind_int(n->mark_st, 5, final ? 1 : 0);
	sqlite3_bind_text(n->mark_st, 6, rk->job->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(n->mark_st, 7, rk->rank);
	rc = sqlite3_step(n->mark_st);
	sqlite3_reset(n->mark_st);
	sqlite3_clear_bindings(n->mark_st);
	return rc == SQLITE_DONE ? 0 : db_errno(rc);
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

/* Signals what is left of a job that ran when the previous agent died: only
 * if its process group leader is still the process we started (same start
 * time). SIGSTOP freezes the ranks' CPU time while their gap is metered. */
static void jobdb_signal_orphans(const char *id, pid_t pgid, uint64_t start, int sig)
{
	uint64_t cpu, now_start;

	if (pgid <= 1 || meter_read_cpu(pgid, &cpu, &now_start) < 0 || now_start != start)
		return;
	if (sig == SIGKILL)
		log_warn("stopping the ranks of job %s (process group %d) left by the previous "
			 "agent", id, (int)pgid);
	kill(-pgid, sig);
}

static void jobdb_signal_running(struct noded *n, int sig)
{
	sqlite3_stmt *st;

	if (db_prepare(n->db, "SELECT id, pgid, pgid_start FROM jobs WHERE state = 'running'",
		       &st) < 0)
		return;
	while (sqlite3_step(st) == SQLITE_ROW)
		jobdb_signal_orphans((const char *)sqlite3_column_text(st, 0),
				     (pid_t)sqlite3_column_int64(st, 1),
				     (uint64_t)sqlite3_column_int64(st, 2), sig);
	sqlite3_finalize(st);
}

/* Meters one orphaned rank (the current row of st) from its last mark to now. */
static int jobdb_recover_rank(struct noded *n, struct job *tj, sqlite3_stmt *st)
{
	struct rank rk = {.job = tj, .gpu = -1};
	struct meter_mark m;
	uint64_t cpu = 0, start = 0, gap;
	pid_t pid;
	int alive, r;

	snprintf(tj->id, sizeof(tj->id), "%s", (const char *)sqlite3_column_text(st, 0));
	snprintf(tj->tenant, sizeof(tj->tenant), "%s", (const char *)sqlite3_column_text(st, 1));
	snprintf(tj->user, sizeof(tj->user), "%s", (const char *)sqlite3_column_text(st, 2));
	rk.rank = sqlite3_column_int(st, 3);
	pid = (pid_t)sqlite3_column_int64(st, 4);
	rk.launch_mono_us = (uint64_t)sqlite3_column_int64(st, 7);
	rk.launch_wall_us = (uint64_t)sqlite3_column_int64(st, 8);
	rk.mark.mono_us = (uint64_t)sqlite3_column_int64(st, 9);
	rk.mark.cpu_us = (uint64_t)sqlite3_column_int64(st, 10);
	rk.mark.comm_us = (uint64_t)sqlite3_column_int64(st, 11);
	rk.gpu = sqlite3_column_int(st, 15);
	energy_load(&rk.mark, sqlite3_column_int64(st, 16));
	rk.exit_mark.mono_us = (uint64_t)sqlite3_column_int64(st, 12);
	if (rk.exit_mark.mono_us) {
		rk.exit_mark.cpu_us = (uint64_t)sqlite3_column_int64(st, 13);
		rk.exit_mark.comm_us = (uint64_t)sqlite3_column_int64(st, 14);
		energy_load(&rk.exit_mark, sqlite3_column_int64(st, 17));
		log_warn("job %s rank %d exited before the previous agent could spool its last "
			 "interval: metering those %.3f s now", tj->id, rk.rank,
			 (double)(rk.exit_mark.mono_us - rk.mark.mono_us) / 1e6);
		r = meter_emit(n, &rk, &rk.exit_mark);
		if (r < 0)
			return log_err_errno(r, "cannot meter the last interval of job %s rank %d",
					     tj->id, rk.rank);
		return 0;
	}
	if (strcmp((const char *)sqlite3_column_text(st, 6), n->boot_id)) {
		log_warn("job %s rank %d ran before the machine restarted: the time since its last "
			 "sample cannot be known and is not metered", tj->id, rk.rank);
		return 0;
	}
	alive = pid > 1 && meter_read_cpu(pid, &cpu, &start) == 0 &&
		start == (uint64_t)sqlite3_column_int64(st, 5);
	/* its group leader may be gone: freeze the rank itself while it is metered */
	if (alive && kill(pid, SIGSTOP) == 0)
		meter_read_cpu(pid, &cpu, NULL);
	meter_gap_mark(&rk.mark, util_now_us(), alive, cpu, &m);
	/* a GPU's counter runs on without the agent: read it now; a CPU rank's
	 * share of the node's energy in the gap is unknown */
	m.have_energy = 0;
	if (rk.gpu >= 0 && rk.mark.have_energy && gpu_energy_uj(n, rk.gpu, &m.energy_uj) == 0)
		m.have_energy = 1;
	gap = m.mono_us - rk.mark.mono_us;
	if (alive)
		log_warn("job %s rank %d (pid %d) outlived the previous agent: metering the %.3f s "
			 "since its last sample, %.3f s of CPU as compute and the rest as idle "
			 "(its comm_wait in that time is unknown)", tj->id, rk.rank, (int)pid,
			 (double)gap / 1e6, (double)(m.cpu_us - rk.mark.cpu_us) / 1e6);
	else
		log_warn("job %s rank %d (pid %d) was gone when the agent restarted: metering the "
			 "%.3f s since its last sample as idle (its slot was held)", tj->id,
			 rk.rank, (int)pid, (double)gap / 1e6);
	r = meter_emit(n, &rk, &m);
	if (r < 0)
		return log_err_errno(r, "cannot meter the last interval of job %s rank %d", tj->id,
				     rk.rank);
	if (alive)
		kill(pid, SIGKILL); /* metered up to now: it must not run on unmetered */
	return 0;
}

/* Every unfinished rank of a job that was running when the previous agent
 * died, and every rank whose exit was taken but not yet spooled (a full
 * spool), one at a time in (job, rank) order: its records and its advanced mark
 * commit together, so a crash here leaves each rank metered up to exactly one
 * mark and the next restart goes on from it. The spool's bound does not apply:
 * this is the last chance to meter these seconds. */
static int jobdb_recover_meter(struct noded *n)
{
	char last_job[NODED_ID_MAX] = "";
	int last_rank = -1, r = 0;
	struct job *tj;
	sqlite3_stmt *st;

	tj = calloc(1, sizeof(*tj));
	if (!tj)
		return -ENOMEM;
	r = db_prepare(n->db, "SELECT r.job, j.tenant, j.user, r.rank, r.pid, r.pid_start,"
		       " r.boot_id, r.launch_mono_us, r.launch_wall_us, r.mark_mono_us,"
		       " r.mark_cpu_us, r.mark_comm_us, r.exit_mono_us, r.exit_cpu_us,"
		       " r.exit_comm_us, r.gpu, r.mark_energy_uj, r.exit_energy_uj"
		       " FROM ranks r JOIN jobs j ON j.id = r.job WHERE r.done = 0"
		       " AND (j.state = 'running' OR r.exit_mono_us > 0)"
		       " AND (r.job, r.rank) > (?, ?)"
		       " ORDER BY r.job, r.rank LIMIT 1", &st);
	if (r < 0)
		goto out_free;
	outbox_set_limit(n->spool, INT64_MAX);
	for (;;) {
		sqlite3_bind_text(st, 1, last_job, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 2, last_rank);
		if (sqlite3_step(st) != SQLITE_ROW)
			break;
		snprintf(last_job, sizeof(last_job), "%s",
			 (const char *)sqlite3_column_text(st, 0));
		last_rank = sqlite3_column_int(st, 3);
		r = jobdb_recover_rank(n, tj, st);
		sqlite3_reset(st);
		if (r < 0)
			break;
	}
	outbox_set_limit(n->spool, n->spool_max);
	sqlite3_finalize(st);
out_free:
	free(tj);
	return r;
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

	jobdb_signal_running(n, SIGSTOP);
	r = jobdb_recover_meter(n);
	if (r < 0)
		return r; /* the orphans stay (stopped); the next start meters them */
	jobdb_signal_running(n, SIGKILL);
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

	r = db_prepare(n->db, n->n_gpus ? "SELECT value FROM meta WHERE key = 'flops_per_slot_cuda'" :
		       "SELECT value FROM meta WHERE key = 'flops_per_slot'", &st);
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
	/* a GPU node's rate is one GPU's: kept apart from the CPU probe's */
	return jobdb_run(n, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", "tt",
			 n->n_gpus ? "flops_per_slot_cuda" : "flops_per_slot", v);
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

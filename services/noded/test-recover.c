/* test-recover — what a restarted agent meters for the ranks a killed one
 * left behind: the gap arithmetic (meter_gap_mark + meter_split), and
 * jobdb_recover against a real noded.db with real orphaned processes: a rank
 * still alive has its CPU since the last mark metered as compute and is then
 * killed; a rank already gone has its gap metered as idle; the spool's bound
 * does not hold these records back; a restart killed during recovery (the
 * job still "running") meters on from the advanced mark, never twice; and an
 * exit the full spool held back is metered up to the exit, once.
 */
#include "noded.h"
#include "../../tests/t.h"
#include "db.h"
#include "outbox.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WALL0 1700000000000000ULL

static char tmp[] = "/tmp/test-noded-recover-XXXXXX";
static struct noded n;

static void test_gap_alive(void)
{
	struct meter_mark last = {1000000, 200000, 50000}, m;
	struct meter_split sp;

	meter_gap_mark(&last, 4000000, 1, 1700000, &m);
	T_EQ_INT(m.mono_us, 4000000);
	T_EQ_INT(m.cpu_us, 1700000);
	T_EQ_INT(m.comm_us, 50000); /* unknown: no comm_wait in the gap */
	meter_split(m.mono_us - last.mono_us, m.cpu_us - last.cpu_us, m.comm_us - last.comm_us,
		    &sp);
	T_EQ_INT(sp.compute_us, 1500000);
	T_EQ_INT(sp.comm_us, 0);
	T_EQ_INT(sp.idle_us, 1500000);
	/* several threads: CPU beyond the wall time is capped, not carried */
	meter_gap_mark(&last, 2000000, 1, 9000000, &m);
	meter_split(m.mono_us - last.mono_us, m.cpu_us - last.cpu_us, 0, &sp);
	T_EQ_INT(sp.compute_us, 1000000);
	T_EQ_INT(sp.idle_us, 0);
}

static void test_gap_gone(void)
{
	struct meter_mark last = {1000000, 200000, 50000}, m;
	struct meter_split sp;

	/* a gone rank's CPU reading (whatever it is) is not used */
	meter_gap_mark(&last, 3500000, 0, 1700000, &m);
	T_EQ_INT(m.cpu_us, 200000);
	meter_split(m.mono_us - last.mono_us, m.cpu_us - last.cpu_us, m.comm_us - last.comm_us,
		    &sp);
	T_EQ_INT(sp.compute_us, 0);
	T_EQ_INT(sp.idle_us, 2500000);
	/* a clock at or before the mark, CPU that went backwards: nothing to meter */
	meter_gap_mark(&last, 900000, 1, 100000, &m);
	T_EQ_INT(m.mono_us, last.mono_us);
	T_EQ_INT(m.cpu_us, last.cpu_us);
}

static int64_t q(const char *sql)
{
	int64_t v = -1;

	db_query_int(n.db, sql, -1, &v);
	return v;
}

/* Burns CPU in its own process group until killed (at most 60 s). */
static pid_t spawn_burner(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		uint64_t end;
		volatile uint64_t x = 0;

		setpgid(0, 0);
		end = util_now_us() + 60 * 1000000ULL;
		while (util_now_us() < end)
			x++;
		_exit(0);
	}
	if (pid > 0)
		setpgid(pid, pid);
	return pid;
}

static void free_jobs(void)
{
	while (n.jobs) {
		struct job *j = n.jobs;

		job_unlink(&n, j);
		job_free(j);
	}
}

static void test_recover_meters_orphans(void)
{
	static struct job job;
	struct rank r0 = {.job = &job, .rank = 0}, r1 = {.job = &job, .rank = 1};
	uint64_t cpu, start0, start1, now;
	int64_t mark0, mark1, s0, s1;
	pid_t gone;
	int st = 0;

	snprintf(job.id, sizeof(job.id), "j-recover");
	snprintf(job.tenant, sizeof(job.tenant), "acme");
	snprintf(job.user, sizeof(job.user), "alice");
	snprintf(job.bundle_dir, sizeof(job.bundle_dir), "/nonexistent");
	T_EQ_INT(jobdb_insert(&n, &job, "[0,1]"), 0);
	/* rank 1: a process that has already gone (forked, exited, reaped) */
	gone = fork();
	if (gone == 0)
		_exit(0);
	T_CHECK(gone > 0 && meter_read_cpu(gone, &cpu, &start1) == 0, "cannot fork");
	waitpid(gone, NULL, 0);
	/* rank 0: alive, burning CPU, leading the job's process group */
	r0.pid = spawn_burner();
	T_CHECK(r0.pid > 0, "cannot fork");
	nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	T_EQ_INT(meter_read_cpu(r0.pid, &cpu, &start0), 0);
	job.pgid = r0.pid;
	T_EQ_INT(jobdb_set_pgid(&n, &job, start0), 0);
	now = util_now_us();
	r0.launch_mono_us = r1.launch_mono_us = now - 3000000;
	r0.launch_wall_us = r1.launch_wall_us = WALL0;
	r0.mark = (struct meter_mark){now - 1000000, cpu, 400000};
	r1.pid = gone;
	r1.mark = (struct meter_mark){now - 1500000, 700000, 0};
	T_EQ_INT(jobdb_insert_rank(&n, &r0, start0), 0);
	T_EQ_INT(jobdb_insert_rank(&n, &r1, start1), 0);
	/* a full spool: the recovered records go in regardless */
	for (int i = 0; i < 5; i++) {
		json_t *rec = json_pack("{s:s}", "filler", "x");

		T_EQ_INT(outbox_put(n.spool, rec, NULL), 0);
		json_decref(rec);
	}
	{
		json_t *rec = json_object();

		T_EQ_INT(outbox_put(n.spool, rec, NULL), -ENOSPC);
		json_decref(rec);
	}
	nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);

	T_EQ_INT(jobdb_recover(&n), 0);
	T_EQ_INT(waitpid(r0.pid, &st, 0), r0.pid);
	T_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "rank 0 was not killed (status %d)",
		st);
	T_EQ_INT(q("SELECT count(*) FROM jobs WHERE id = 'j-recover' AND state = 'failed' AND "
		   "error LIKE 'the node agent restarted%'"), 1);
	mark0 = q("SELECT mark_mono_us FROM ranks WHERE rank = 0");
	mark1 = q("SELECT mark_mono_us FROM ranks WHERE rank = 1");
	T_CHECK(mark0 >= (int64_t)now + 300000, "rank 0's mark did not advance to the restart");
	T_CHECK(mark1 >= (int64_t)now + 300000, "rank 1's mark did not advance to the restart");
	/* each rank's records sum to the mark's advance and tile it from the old mark */
	s0 = q("SELECT CAST(round(sum(json_extract(body, '$.quantity')) * 1e6) AS INTEGER) FROM "
	       "meter_spool WHERE json_extract(body, '$.rank') = 0");
	T_CHECK(llabs(s0 - (mark0 - (int64_t)(now - 1000000))) <= 2, "rank 0: %lld metered, "
		"mark advanced %lld", (long long)s0, (long long)(mark0 - (int64_t)(now - 1000000)));
	s1 = q("SELECT CAST(round(sum(json_extract(body, '$.quantity')) * 1e6) AS INTEGER) FROM "
	       "meter_spool WHERE json_extract(body, '$.rank') = 1");
	T_CHECK(llabs(s1 - (mark1 - (int64_t)(now - 1500000))) <= 2, "rank 1: %lld metered, "
		"mark advanced %lld", (long long)s1, (long long)(mark1 - (int64_t)(now - 1500000)));
	T_EQ_INT(q("SELECT min(json_extract(body, '$.start_us')) FROM meter_spool WHERE "
		   "json_extract(body, '$.rank') = 0"), WALL0 + 2000000);
	T_EQ_INT(q("SELECT min(json_extract(body, '$.start_us')) FROM meter_spool WHERE "
		   "json_extract(body, '$.rank') = 1"), WALL0 + 1500000);
	/* the live rank burned CPU in the gap: compute; comm_wait unknown: none */
	T_CHECK(q("SELECT sum(json_extract(body, '$.quantity')) * 1e6 FROM meter_spool WHERE "
		  "json_extract(body, '$.rank') = 0 AND json_extract(body, '$.kind') = 'compute'") >
			100000, "rank 0 has no compute in its gap");
	T_EQ_INT(q("SELECT count(*) FROM meter_spool WHERE json_extract(body, '$.kind') = "
		   "'comm_wait'"), 0);
	T_EQ_INT(q("SELECT count(*) FROM meter_spool WHERE json_extract(body, '$.rank') = 1 AND "
		   "json_extract(body, '$.kind') != 'idle'"), 0);
	T_EQ_INT(spool_pending(&n), 5 + q("SELECT count(*) FROM meter_spool WHERE body LIKE "
					 "'%j-recover%'"));
	free_jobs();

	/* the restart was killed after metering, before failing the job: the next
	 * one meters on from the advanced marks (both ranks gone now: idle) */
	T_EQ_INT(db_exec(n.db, "UPDATE jobs SET state = 'running'"), 0);
	nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
	T_EQ_INT(jobdb_recover(&n), 0);
	for (int rank = 0; rank < 2; rank++) {
		char sql[512];
		int64_t first = rank == 0 ? (int64_t)now - 1000000 : (int64_t)now - 1500000;
		int64_t mark, sum;

		snprintf(sql, sizeof(sql), "SELECT mark_mono_us FROM ranks WHERE rank = %d", rank);
		mark = q(sql);
		snprintf(sql, sizeof(sql), "SELECT CAST(round(sum(json_extract(body, '$.quantity')) * "
			 "1e6) AS INTEGER) FROM meter_spool WHERE json_extract(body, '$.rank') = %d",
			 rank);
		sum = q(sql);
		T_CHECK(mark >= (rank ? mark1 : mark0) + 200000, "rank %d's mark did not advance",
			rank);
		T_CHECK(llabs(sum - (mark - first)) <= 4, "rank %d: %lld metered over %lld", rank,
			(long long)sum, (long long)(mark - first));
		/* no overlap: every record but the first starts where another ends */
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM meter_spool a WHERE "
			 "json_extract(a.body, '$.rank') = %d AND json_extract(a.body, '$.start_us') "
			 "> %llu AND NOT EXISTS (SELECT 1 FROM meter_spool b WHERE "
			 "json_extract(b.body, '$.rank') = %d AND json_extract(b.body, '$.end_us') = "
			 "json_extract(a.body, '$.start_us'))", rank,
			 (unsigned long long)(WALL0 + (uint64_t)(first - ((int64_t)now - 3000000))),
			 rank);
		T_EQ_INT(q(sql), 0);
	}
	T_EQ_INT(q("SELECT count(*) FROM jobs WHERE state = 'failed'"), 1);
	free_jobs();
}

/* A rank exits while the spool is full: its exit mark waits in noded.db. The
 * agent dies before there is room, after the job finished: the restart
 * meters the rank up to its exit (not up to the restart), once. */
static void test_recover_unspooled_exit(void)
{
	static struct job job;
	struct rank rk = {.job = &job, .rank = 0};
	int64_t before, sum;
	pid_t gone;

	snprintf(job.id, sizeof(job.id), "j-exit");
	snprintf(job.tenant, sizeof(job.tenant), "acme");
	snprintf(job.user, sizeof(job.user), "alice");
	snprintf(job.bundle_dir, sizeof(job.bundle_dir), "/nonexistent");
	T_EQ_INT(jobdb_insert(&n, &job, "[0]"), 0);
	gone = fork();
	if (gone == 0)
		_exit(0);
	T_CHECK(gone > 0, "cannot fork");
	waitpid(gone, NULL, 0);
	rk.pid = gone;
	rk.launch_mono_us = util_now_us() - 2000000;
	rk.launch_wall_us = WALL0;
	rk.mark = (struct meter_mark){rk.launch_mono_us + 500000, 300000, 100000};
	T_EQ_INT(jobdb_insert_rank(&n, &rk, 1), 0);
	T_CHECK(spool_pending(&n) >= n.spool_max, "the spool is not full");
	before = spool_pending(&n);
	/* reaped already: its CPU cannot be read, so the fallback counts */
	meter_rank_exited(&n, &rk, 900000);
	T_EQ_INT(rk.final_pending, 1);
	T_EQ_INT(spool_pending(&n), before);
	T_EQ_INT(q("SELECT count(*) FROM ranks WHERE job = 'j-exit' AND exit_mono_us > 0 AND "
		   "done = 0"), 1);
	T_EQ_INT(db_exec(n.db, "UPDATE jobs SET state = 'succeeded' WHERE id = 'j-exit'"), 0);
	nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
	T_EQ_INT(jobdb_recover(&n), 0);
	sum = q("SELECT CAST(round(sum(json_extract(body, '$.quantity')) * 1e6) AS INTEGER) FROM "
		"meter_spool WHERE body LIKE '%j-exit%'");
	T_EQ_INT(sum, (int64_t)(rk.exit_mark.mono_us - rk.mark.mono_us));
	T_EQ_INT(q("SELECT CAST(round(sum(json_extract(body, '$.quantity')) * 1e6) AS INTEGER) "
		   "FROM meter_spool WHERE body LIKE '%j-exit%' AND body LIKE '%compute%'"), 600000);
	T_EQ_INT(q("SELECT done FROM ranks WHERE job = 'j-exit'"), 1);
	T_EQ_INT(q("SELECT count(*) FROM jobs WHERE id = 'j-exit' AND state = 'succeeded'"), 1);
	free_jobs();
	before = spool_pending(&n);
	T_EQ_INT(jobdb_recover(&n), 0);
	T_EQ_INT(spool_pending(&n), before);
	free_jobs();
}

int main(void)
{
	char cmd[PATH_MAX + 16];
	int rc;

	if (!mkdtemp(tmp))
		return 2;
	n.state_dir = tmp;
	n.spool_max = 5;
	snprintf(n.node_id, sizeof(n.node_id), "node-recovertest");
	if (jobdb_open(&n) < 0 || spool_open(&n) < 0)
		return 2;
	t_run("recover_gap_alive_cpu_is_compute", test_gap_alive);
	t_run("recover_gap_gone_is_idle", test_gap_gone);
	t_run("recover_meters_orphans_once", test_recover_meters_orphans);
	t_run("recover_meters_unspooled_exit_once", test_recover_unspooled_exit);
	outbox_free(n.spool);
	jobdb_close(&n);
	rc = t_done();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		rc = 1;
	return rc;
}

/* test-spool — the meter spool's put/flush semantics against a real
 * bursar-ledgerd (SKIP when it is not built): bounded puts that never drop,
 * marks that advance only once records are committed, records kept while
 * ledgerd is down, delivered once it is up, and a resend after a lost ack
 * acknowledged without a second ledger entry. */
#include "noded.h"
#include "../../tests/t.h"
#include "db.h"
#include "outbox.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmp[] = "/tmp/test-noded-spool-XXXXXX";
static char ledger_state[PATH_MAX], ledger_db[PATH_MAX], ledger_bin[PATH_MAX];
static char ledger_addr[PATH_MAX + 16];
static pid_t ledger_pid;
static struct noded n;
static struct job job;
static struct rank rk;
static uint64_t t0;

static void setup(void)
{
	const char *b = getenv("BUILD");
	char *p;

	if (!mkdtemp(tmp))
		exit(2);
	/* the ASan build runs with BUILD=build; ledgerd is the normal build's */
	snprintf(ledger_bin, sizeof(ledger_bin), "%s/bin/bursar-ledgerd", b ? b : "build");
	if ((p = strstr(ledger_bin, "/asan/")))
		memmove(p, p + 5, strlen(p + 5) + 1);
	snprintf(ledger_state, sizeof(ledger_state), "%s/ledger", tmp);
	snprintf(ledger_db, sizeof(ledger_db), "%s/ledgerd.db", ledger_state);
	snprintf(ledger_addr, sizeof(ledger_addr), "unix:%s/run/ledgerd.sock", ledger_state);
	n.state_dir = tmp;
	n.ledgerd = ledger_addr;
	n.spool_max = 5;
	snprintf(n.node_id, sizeof(n.node_id), "node-spooltest");
	if (jobdb_open(&n) < 0 || spool_open(&n) < 0)
		exit(2);
	snprintf(job.id, sizeof(job.id), "j-spool");
	snprintf(job.tenant, sizeof(job.tenant), "acme");
	snprintf(job.user, sizeof(job.user), "alice");
	rk.job = &job;
	rk.rank = 1;
	t0 = util_now_us();
	rk.launch_mono_us = t0;
	rk.launch_wall_us = 1700000000000000ULL;
	rk.mark.mono_us = t0;
}

static int ledger_start(void)
{
	char sock[PATH_MAX];
	struct stat st;

	if (access(ledger_bin, X_OK) < 0)
		return -ENOENT;
	snprintf(sock, sizeof(sock), "%s/run/ledgerd.sock", ledger_state);
	ledger_pid = fork();
	if (ledger_pid == 0) {
		execl(ledger_bin, ledger_bin, "--state", ledger_state, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		if (stat(sock, &st) == 0)
			return 0;
		nanosleep(&(struct timespec){0, 25 * 1000 * 1000}, NULL);
	}
	return -ETIMEDOUT;
}

static void ledger_stop(void)
{
	if (ledger_pid > 0) {
		kill(ledger_pid, SIGTERM);
		waitpid(ledger_pid, NULL, 0);
		ledger_pid = 0;
	}
}

/* One integer from the ledger's own SQLite file. */
static int64_t ledger_int(const char *sql)
{
	sqlite3 *db;
	int64_t v = -1;

	if (sqlite3_open_v2(ledger_db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return -1;
	db_query_int(db, sql, -1, &v);
	sqlite3_close(db);
	return v;
}

static void test_bound_never_drops(void)
{
	struct meter_mark m1 = {t0 + 1000000, 600000, 300000};
	struct meter_mark m2 = {t0 + 2000000, 1000000, 500000};
	int r;

	r = meter_emit(&n, &rk, &m1); /* compute, comm_wait, idle: 3 records */
	T_EQ_INT(r, 0);
	T_EQ_INT(spool_pending(&n), 3);
	T_EQ_INT(rk.mark.mono_us, m1.mono_us);
	r = meter_emit(&n, &rk, &m2); /* 3 more do not fit in 5: none go in */
	T_EQ_INT(r, -ENOSPC);
	T_EQ_INT(spool_pending(&n), 3);
	T_EQ_INT(rk.mark.mono_us, m1.mono_us);
	T_EQ_INT(n.spool_full, 1);
}

static void test_ledgerd_down_keeps_records(void)
{
	spool_flush(&n, 3);
	T_EQ_INT(spool_pending(&n), 3);
	T_EQ_INT(n.ledgerd_down, 1);
}

static void test_flush_delivers(void)
{
	struct meter_mark m3 = {t0 + 3000000, 1500000, 500000};
	int r = ledger_start();

	if (r == -ENOENT) {
		t_skip("bursar-ledgerd is not built");
		return;
	}
	T_EQ_INT(r, 0);
	spool_flush(&n, 3);
	T_EQ_INT(spool_pending(&n), 0);
	T_EQ_INT(n.ledgerd_down, 0);
	T_EQ_INT(n.spool_full, 0);
	T_EQ_INT(ledger_int("SELECT count(*) FROM entries WHERE source = 'node-spooltest'"), 3);
	/* the interval that did not fit is metered now, as one longer interval */
	r = meter_emit(&n, &rk, &m3);
	T_EQ_INT(r, 0);
	spool_flush(&n, 3);
	T_EQ_INT(spool_pending(&n), 0);
	T_EQ_INT(ledger_int("SELECT count(*) FROM entries WHERE source = 'node-spooltest'"), 6);
	T_EQ_INT(ledger_int("SELECT max(seq) - min(seq) + 1 FROM entries"), 6);
	/* quantities sum to the wall time exactly; records tile [launch, m3] */
	T_EQ_INT(ledger_int("SELECT CAST(round(sum(quantity) * 1e6) AS INTEGER) FROM entries"),
		 3000000);
	T_EQ_INT(ledger_int("SELECT max(end_us) - min(start_us) FROM entries"), 3000000);
	T_EQ_INT(ledger_int("SELECT count(*) FROM entries a WHERE a.start_us != 1700000000000000 "
			    "AND NOT EXISTS (SELECT 1 FROM entries b WHERE b.end_us = a.start_us)"),
		 0);
	T_EQ_INT(ledger_int("SELECT CAST(round(sum(quantity) * 1e6) AS INTEGER) FROM entries "
			    "WHERE kind = 'comm_wait'"), 500000);
	T_EQ_INT(ledger_int("SELECT CAST(round(sum(quantity) * 1e6) AS INTEGER) FROM entries "
			    "WHERE kind = 'compute'"), 1500000);
}

/* A lost acknowledgement leaves a delivered record in the spool; sending it
 * again is acknowledged and stored once. */
static void test_resend_after_lost_ack(void)
{
	int64_t before;

	if (!ledger_pid) {
		t_skip("bursar-ledgerd is not built");
		return;
	}
	before = ledger_int("SELECT count(*) FROM entries");
	T_EQ_INT(db_exec(n.db, "INSERT INTO meter_spool (seq, body) VALUES (1, '{\"job\": "
			      "\"j-spool\", \"tenant\": \"acme\", \"user\": \"alice\", \"rank\": 1, "
			      "\"kind\": \"compute\", \"quantity\": 0.6, \"unit\": \"rank_s\", "
			      "\"start_us\": 1700000000000000, \"end_us\": 1700000000600000}')"),
		 0);
	T_EQ_INT(spool_pending(&n), 1);
	spool_flush(&n, 3);
	T_EQ_INT(spool_pending(&n), 0);
	T_EQ_INT(ledger_int("SELECT count(*) FROM entries"), before);
	T_EQ_INT(db_query_int(n.db, "SELECT count(*) FROM meter_spool_dead", -1, &before), 0);
	T_EQ_INT(before, 0);
}

int main(void)
{
	char cmd[PATH_MAX + 16];
	int rc;

	setup();
	t_run("spool_bound_never_drops", test_bound_never_drops);
	t_run("spool_keeps_records_while_ledgerd_is_down", test_ledgerd_down_keeps_records);
	t_run("spool_flush_delivers_to_ledgerd", test_flush_delivers);
	t_run("spool_resend_after_lost_ack_is_stored_once", test_resend_after_lost_ack);
	ledger_stop();
	outbox_free(n.spool);
	jobdb_close(&n);
	rc = t_done();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		rc = 1;
	return rc;
}

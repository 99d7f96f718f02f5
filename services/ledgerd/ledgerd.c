/* bursar-ledgerd — the cost ledger daemon: main only.
 *
 *   bursar-ledgerd --state DIR [--listen ADDR]... [--rate-rank-hour USD]
 *   bursar-ledgerd verify --state DIR
 *   bursar-ledgerd bench-fill --state DIR --entries N [--tenants T] [--jobs J]
 *
 * --rate-rank-hour sets the "cpu" rate (a new version when it changed); left
 * out, a new ledger starts at 0.72 USD/rank-hour and an existing one keeps
 * the rates an operator set with POST /v1/rates. `bench-fill` appends N
 * synthetic entries through the real append path (chain, totals), in batches
 * of 10,000, for benchmarks and tests of large ledgers.
 *
 * The daemon keeps DIR/ledgerd.db and listens on unix:DIR/run/ledgerd.sock
 * unless --listen says otherwise. `verify` walks the chain offline and exits 0
 * when it holds, 1 (with a sentence naming the first bad entry) when it does
 * not, 2 when the ledger cannot be read.
 */
#include "ledger.h"
#include "db.h"
#include "httpd.h"
#include "log.h"
#include "svc.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct opts {
	const char *state;
	const char *listen[HTTPD_MAX_LISTEN];
	int n_listen;
	double rate_rank_hour;
	int rate_given;
	long long fill_entries, fill_tenants, fill_jobs;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bursar-ledgerd --state DIR [--listen ADDR]... [--rate-rank-hour USD]\n"
		   "       bursar-ledgerd verify --state DIR\n"
		   "       bursar-ledgerd bench-fill --state DIR --entries N [--tenants T] "
		   "[--jobs J]\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	o->rate_rank_hour = 0.72;
	o->fill_tenants = 1;
	o->fill_jobs = 1000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (!v) {
			log_err("option %s needs a value", a);
			return -EINVAL;
		}
		i++;
		if (!strcmp(a, "--state")) {
			o->state = v;
		} else if (!strcmp(a, "--listen")) {
			if (o->n_listen >= HTTPD_MAX_LISTEN) {
				log_err("too many --listen options (limit %d)", HTTPD_MAX_LISTEN);
				return -E2BIG;
			}
			o->listen[o->n_listen++] = v;
		} else if (!strcmp(a, "--rate-rank-hour")) {
			char *end;

			o->rate_rank_hour = strtod(v, &end);
			if (!*v || *end || !isfinite(o->rate_rank_hour) || o->rate_rank_hour < 0 ||
			    o->rate_rank_hour > LEDGER_MAX_RANK_HOUR) {
				log_err("--rate-rank-hour '%s' is not a price in 0..%g USD", v,
					LEDGER_MAX_RANK_HOUR);
				return -EINVAL;
			}
			o->rate_given = 1;
		} else if (!strcmp(a, "--entries") || !strcmp(a, "--tenants") ||
			   !strcmp(a, "--jobs")) {
			long long *p = a[2] == 'e' ? &o->fill_entries
				       : a[2] == 't' ? &o->fill_tenants : &o->fill_jobs;
			char *end;

			*p = strtoll(v, &end, 10);
			if (!*v || *end || *p < 1 || *p > 1000000000LL) {
				log_err("%s '%s' is not a count in 1..1000000000", a, v);
				return -EINVAL;
			}
		} else {
			log_err("unknown option '%s'", a);
			usage(stderr);
			return -EINVAL;
		}
	}
	if (!o->state) {
		log_err("--state DIR is required");
		usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/* The offline `verify` subcommand. */
static int run_verify(const struct opts *o)
{
	struct ledger_verify v;
	char path[PATH_MAX];
	sqlite3 *db;
	int r;

	snprintf(path, sizeof(path), "%s/ledgerd.db", o->state);
	if (access(path, R_OK) < 0) {
		fprintf(stderr, "cannot verify: no ledger at '%s': %s\n", path, strerror(errno));
		return 2;
	}
	r = db_open(path, 1, &db);
	if (r < 0) {
		fprintf(stderr, "cannot open ledger '%s': %s\n", path, strerror(-r));
		return 2;
	}
	r = ledger_verify(db, 0, NULL, &v);
	if (r == 0)
		r = ledger_verify_credits(db, 0, NULL, &v);
	if (r == 0)
		r = ledger_verify_holds(db, 0, NULL, &v);
	db_close(db);
	if (r < 0) {
		fprintf(stderr, "cannot read the entries of '%s' (is it a ledger?): %s\n", path,
			strerror(-r));
		return 2;
	}
	if (!v.ok) {
		printf("ledger '%s' is broken at %s %lld: %s\n", path,
		       v.bad_credit ? "credit" : v.bad_hold ? "hold event" : "entry",
		       (long long)v.first_bad_id, v.reason);
		return 1;
	}
	printf("ledger '%s' verified: %lld entries, head %s; %lld credits, head %s; %lld hold "
	       "events, head %s\n", path, (long long)v.entries, v.head, (long long)v.credits,
	       v.credit_head, (long long)v.holds, v.hold_head);
	return 0;
}

/* Holds DIR/ledgerd.lock for the life of the process: two daemons appending
 * to one chain would fight over entry ids. Returns the fd or a negative errno. */
static int lock_state(const char *state)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/ledgerd.lock", state);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return log_err_errno(-errno, "cannot open lock file '%s'", path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = -errno;

		close(fd);
		if (r == -EWOULDBLOCK)
			log_err("another bursar-ledgerd already runs on state directory '%s'",
				state);
		else
			log_err_errno(r, "cannot lock '%s'", path);
		return r;
	}
	return fd;
}

static int run_daemon(const struct opts *o)
{
	struct httpd_config cfg = {
		.routes = ledger_routes,
		.n_routes = ledger_n_routes,
		.max_body = 1 << 20,
	};
	char path[PATH_MAX], sock[PATH_MAX], status[256];
	struct svc svc = {0};
	struct ledger *l = NULL;
	struct httpd *h = NULL;
	int64_t old_version;
	int lock_fd, r;

	snprintf(path, sizeof(path), "%s/run", o->state);
	r = util_mkdir_p(path);
	if (r < 0) {
		log_err_errno(r, "cannot create state directory '%s'", path);
		return 1;
	}
	lock_fd = lock_state(o->state);
	if (lock_fd < 0)
		return 1;
	snprintf(path, sizeof(path), "%s/ledgerd.db", o->state);
	r = ledger_open(path, &l);
	if (r < 0) {
		log_err_errno(r, "cannot open ledger '%s'", path);
		goto out_unlock;
	}
	old_version = l->rate.version;
	r = 0;
	if (o->rate_given || l->rate.version == 0)
		r = ledger_set_rate(l, llround(o->rate_rank_hour * 1e6));
	if (r < 0) {
		log_err_errno(r, "cannot record rate %.6f USD/rank-hour", o->rate_rank_hour);
		goto out_free;
	}
	if (l->rate.version != old_version)
		log_info("rate version %lld: %.6f USD/rank-hour, for entries ingested from now on",
			 (long long)l->rate.version, o->rate_rank_hour);
	r = svc_setup(&svc, "bursar-ledgerd");
	if (r < 0) {
		log_err_errno(r, "cannot set up the event loop");
		goto out_free;
	}
	cfg.userdata = l;
	r = httpd_new(svc.ev, &cfg, &h);
	if (r < 0) {
		log_err_errno(r, "cannot create the HTTP server");
		goto out_teardown;
	}
	snprintf(sock, sizeof(sock), "unix:%s/run/ledgerd.sock", o->state);
	for (int i = 0; i < (o->n_listen ? o->n_listen : 1); i++) {
		const char *addr = o->n_listen ? o->listen[i] : sock;

		r = httpd_listen(h, addr);
		if (r < 0) {
			log_err_errno(r, "cannot listen on '%s'", addr);
			goto out_httpd;
		}
		if (httpd_port(h, i) > 0)
			log_info("listening on %s (port %d)", addr, httpd_port(h, i));
		else
			log_info("listening on %s", addr);
	}
	snprintf(status, sizeof(status),
		 "ledger '%s': head entry %lld, rate v%lld %.6f USD/rank-hour", path,
		 (long long)l->head_id, (long long)l->rate.version,
		 (double)l->rate.rank_hour_micro / 1e6);
	r = svc_run(&svc, status);
	if (r < 0)
		log_err_errno(r, "event loop failed");
out_httpd:
	httpd_free(h);
out_teardown:
	svc_teardown(&svc);
out_free:
	ledger_free(l);
out_unlock:
	close(lock_fd);
	return r < 0 ? 1 : 0;
}

/* `bench-fill`: N entries for T tenants and J jobs (each job 1 rank-second a
 * record, 3 kinds, start times one second apart from 2024-01-01). */
static int run_fill(const struct opts *o)
{
	static const char *const kinds[] = {"compute", "comm_wait", "idle"};
	char path[PATH_MAX], source[64];
	struct ledger *l;
	uint64_t t0 = util_now_us();
	long long done = 0, base;
	int lock_fd, r;

	if (!o->fill_entries) {
		log_err("bench-fill needs --entries N");
		return 2;
	}
	r = util_mkdir_p(o->state);
	if (r < 0)
		return log_err_errno(r, "cannot create '%s'", o->state), 1;
	lock_fd = lock_state(o->state);
	if (lock_fd < 0)
		return 1;
	snprintf(path, sizeof(path), "%s/ledgerd.db", o->state);
	r = ledger_open(path, &l);
	if (r < 0) {
		log_err_errno(r, "cannot open ledger '%s'", path);
		goto out_unlock;
	}
	if (l->rate.version == 0)
		r = ledger_set_rate(l, llround(o->rate_rank_hour * 1e6));
	base = l->head_id;
	snprintf(source, sizeof(source), "bench-%lld", (long long)util_wall_us());
	while (r == 0 && done < o->fill_entries) {
		long long n = o->fill_entries - done < 10000 ? o->fill_entries - done : 10000;

		r = ledger_batch_begin(l);
		for (long long i = 0; r == 0 && i < n; i++) {
			long long k = done + i, job = k % o->fill_jobs;
			struct ledger_entry e = {.seq = k + 1, .rank = k % 8, .quantity = 1.0};
			int dup;

			snprintf(e.source, sizeof(e.source), "%s", source);
			snprintf(e.job, sizeof(e.job), "j-bench-%lld", job);
			snprintf(e.tenant, sizeof(e.tenant), "tenant-%lld", job % o->fill_tenants);
			snprintf(e.user, sizeof(e.user), "user-%lld", job % 17);
			snprintf(e.kind, sizeof(e.kind), "%s", kinds[k % 3]);
			strcpy(e.unit, "rank_s");
			e.start_us = 1704067200000000LL + (k / o->fill_jobs) * 1000000LL;
			e.end_us = e.start_us + 1000000;
			ledger_price(l, &e);
			r = ledger_append(l, &e, &dup);
		}
		if (r == 0)
			r = ledger_batch_commit(l);
		else
			ledger_batch_rollback(l);
		done += n;
	}
	if (r < 0)
		log_err_errno(r, "bench-fill stopped after %lld entries", done);
	else
		printf("{\"entries\": %lld, \"first_id\": %lld, \"seconds\": %.3f}\n", done,
		       base + 1, (double)(util_now_us() - t0) / 1e6);
	ledger_free(l);
out_unlock:
	close(lock_fd);
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	int verify = argc > 1 && !strcmp(argv[1], "verify");
	int fill = argc > 1 && !strcmp(argv[1], "bench-fill");

	log_init("bursar-ledgerd");
	/* One thread uses the one connection: no SQLite mutexes or memory
	 * statistics on the ingest path (before any other SQLite call). */
	sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (parse_args(argc - (verify | fill), argv + (verify | fill), &o) < 0)
		return 2;
	if (fill)
		return run_fill(&o);
	return verify ? run_verify(&o) : run_daemon(&o);
}

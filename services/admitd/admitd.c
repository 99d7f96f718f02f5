/* bursar-admitd — job admission: pricing, FIFO queue, placement, node
 * heartbeats and rendezvous, with all state in $STATE/admitd.db.
 *
 * This file only parses arguments, opens the database and the listeners, and
 * runs the loop with a one-second tick (node liveness, scheduling, rates,
 * the estimate outbox to ledgerd) and a 50 ms one that runs a scheduling pass
 * when something changed since the last (submissions answer at once and
 * leave the pass to it). The logic lives in pricing.c, queue.c,
 * nodes.c, rdv.c, api.c and store.c. admitd never calls noded.
 */
#include "admitd.h"
#include "db.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_US 1000000ull
#define SCHED_TICK_US 50000ull /* a submission waits at most this long for its pass */
#define FLUSH_MAX_BACKOFF_US (60 * 1000000ull)
#define RDV_MAX_AGE_US (24 * 3600 * 1000000ull)

static void usage(FILE *f)
{
	fprintf(f, "usage: bursar-admitd --state DIR [--listen ADDR]... [--ledgerd ADDR]\n"
		   "                     [--rdv ADDR] [--efficiency F] [--node-timeout S]\n"
		   "                     [--policy fifo|backfill|bursar] [--overrun pause|stop]\n"
		   "  --state DIR        state directory (database DIR/admitd.db)\n"
		   "  --listen ADDR      unix:PATH or HOST:PORT (repeatable; default\n"
		   "                     unix:DIR/run/admitd.sock)\n"
		   "  --ledgerd ADDR     ledgerd base (unix:PATH or http://HOST:PORT)\n"
		   "  --rdv ADDR         base ranks use for rendezvous (default: the first\n"
		   "                     unix listen address)\n"
		   "  --efficiency F     fraction of probed FLOP/s a step achieves (default 0.3)\n"
		   "  --node-timeout S   seconds of silence before a node is down (default 10)\n"
		   "  --policy P         queue policy: fifo, backfill or bursar (default: bursar,\n"
		   "                     priority + fair share + EASY backfill)\n"
		   "  --overrun P        a job over its hold that the budget cannot extend is\n"
		   "                     checkpointed, then paused until the budget allows the\n"
		   "                     rest (pause, the default) or ended (stop)\n");
}

/* Sends queued estimates to ledgerd; backs off while it is unreachable. */
static void flush_estimates(struct admitd *a, uint64_t now)
{
	int r;

	if (!a->ledgerd || now < a->flush_next_us || outbox_pending(a->estimates) <= 0)
		return;
	r = outbox_flush(a->estimates, a->ledgerd, "/v1/estimates", "admitd", 100, 2000);
	if (r < 0) {
		if (!a->flush_backoff_us)
			log_warn("cannot send estimates to ledgerd %s: %s; %lld kept in the outbox, "
				 "retrying with backoff", a->ledgerd, hclient_strerror(r),
				 (long long)outbox_pending(a->estimates));
		a->flush_backoff_us = a->flush_backoff_us ? a->flush_backoff_us * 2 : TICK_US;
		if (a->flush_backoff_us > FLUSH_MAX_BACKOFF_US)
			a->flush_backoff_us = FLUSH_MAX_BACKOFF_US;
		a->flush_next_us = now + a->flush_backoff_us;
		return;
	}
	if (a->flush_backoff_us)
		log_info("estimates reach ledgerd %s again", a->ledgerd);
	a->flush_backoff_us = 0;
	a->flush_next_us = 0;
}

/* The coalesced scheduling pass: at most one every SCHED_TICK_US, and only
 * when a submission (or anything else) changed the queue since the last. */
static void on_sched_tick(void *ud)
{
	struct admitd *a = ud;

	if (a->sched_dirty)
		queue_schedule(a);
}

/* Submissions commit with synchronous=NORMAL (api.c): sync the WAL at least
 * once a second, so a power cut loses at most the last second of them. */
static void sync_submissions(struct admitd *a)
{
	int r;

	if (!a->unsynced)
		return;
	r = sqlite3_wal_checkpoint_v2(a->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	if (r == SQLITE_OK)
		a->unsynced = 0;
}

static void on_tick(void *ud)
{
	static uint64_t last_rdv_sweep;
	struct admitd *a = ud;
	uint64_t now = util_now_us();

	nodes_check_timeouts(a);
	queue_refresh_rate(a, 0, NULL, 0);
	queue_schedule(a);
	sync_submissions(a);
	budget_tick(a);
	flush_estimates(a, now);
	learn_tick(a);
	if (now - last_rdv_sweep > 60 * TICK_US) {
		store_run(a->db, "DELETE FROM rdv WHERE ts_us < ?", "i",
			  (int64_t)(util_wall_us() - RDV_MAX_AGE_US));
		last_rdv_sweep = now;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state", required_argument, NULL, 's'},   {"listen", required_argument, NULL, 'l'},
		{"ledgerd", required_argument, NULL, 'L'}, {"rdv", required_argument, NULL, 'r'},
		{"efficiency", required_argument, NULL, 'e'},
		{"node-timeout", required_argument, NULL, 't'},
		{"policy", required_argument, NULL, 'p'},
		{"overrun", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	const char *state = NULL, *listen[HTTPD_MAX_LISTEN], *rdv = NULL;
	char path[4096], dflt_listen[4200];
	/* 0.3: bursar-train's CPU step reaches 0.1 (tiny models) to 0.4 (GPT-2
	 * 124M) of the single-thread AVX-512 sgemm probe on a 2-core machine. A
	 * first guess: each node's own value is learned from its metered bills. */
	struct admitd a = {.efficiency = 0.3, .node_timeout_us = 10 * 1000000ull};
	struct httpd_config hc = {0};
	double timeout_s = 10;
	int n_listen = 0, c, r;

	sched_conf_default(&a.sched, SCHED_BURSAR);

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			state = optarg;
			break;
		case 'l':
			if (n_listen == HTTPD_MAX_LISTEN) {
				fprintf(stderr, "bursar-admitd: at most %d --listen addresses\n",
					HTTPD_MAX_LISTEN);
				return 2;
			}
			listen[n_listen++] = optarg;
			break;
		case 'L':
			a.ledgerd = optarg;
			break;
		case 'r':
			rdv = optarg;
			break;
		case 'e':
			if (util_parse_double(optarg, 0.001, 1, &a.efficiency) < 0) {
				fprintf(stderr, "bursar-admitd: --efficiency '%s' must be a number "
					"in [0.001, 1]\n", optarg);
				return 2;
			}
			break;
		case 't':
			if (util_parse_double(optarg, 0.1, 86400, &timeout_s) < 0) {
				fprintf(stderr, "bursar-admitd: --node-timeout '%s' must be seconds "
					"in [0.1, 86400]\n", optarg);
				return 2;
			}
			a.node_timeout_us = (uint64_t)(timeout_s * 1e6);
			break;
		case 'p':
			if (sched_policy_parse(optarg, &a.sched.policy) < 0) {
				fprintf(stderr, "bursar-admitd: --policy '%s' must be fifo, backfill "
					"or bursar\n", optarg);
				return 2;
			}
			break;
		case 'o':
			if (strcmp(optarg, "pause") && strcmp(optarg, "stop")) {
				fprintf(stderr, "bursar-admitd: --overrun '%s' must be pause or stop\n",
					optarg);
				return 2;
			}
			a.overrun_stop = !strcmp(optarg, "stop");
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!state || optind != argc) {
		usage(stderr);
		return 2;
	}
	r = svc_setup(&a.svc, "bursar-admitd");
	if (r < 0) {
		fprintf(stderr, "bursar-admitd: cannot set up the event loop: %s\n", strerror(-r));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/run", state);
	r = util_mkdir_p(path);
	if (r < 0) {
		log_err_errno(r, "cannot create state directory '%s'", path);
		goto out_teardown;
	}
	if (n_listen == 0) {
		snprintf(dflt_listen, sizeof(dflt_listen), "unix:%s/run/admitd.sock", state);
		listen[n_listen++] = dflt_listen;
	}
	for (int i = 0; !rdv && i < n_listen; i++)
		if (!strncmp(listen[i], "unix:", 5))
			rdv = listen[i];
	if (!rdv) {
		log_err("no unix listen address to default --rdv to; pass --rdv ADDR");
		r = -EINVAL;
		goto out_teardown;
	}
	snprintf(a.rdv, sizeof(a.rdv), "%s", rdv);
	snprintf(path, sizeof(path), "%s/admitd.db", state);
	r = store_open(path, &a.db);
	if (r < 0) {
		log_err_errno(r, "cannot open database '%s'", path);
		goto out_teardown;
	}
	r = queue_init(&a);
	if (r < 0)
		goto out_close_db;
	r = outbox_open(a.db, "estimate_outbox", ADMIT_OUTBOX_MAX, &a.estimates);
	if (r < 0) {
		log_err_errno(r, "cannot open the estimate outbox in '%s'", path);
		goto out_close_db;
	}
	hc.routes = admit_routes;
	hc.n_routes = admit_n_routes;
	hc.userdata = &a;
	hc.max_body = 1 << 20;
	r = httpd_new(a.svc.ev, &hc, &a.httpd);
	if (r < 0)
		goto out_free_outbox;
	for (int i = 0; i < n_listen; i++) {
		r = httpd_listen(a.httpd, listen[i]);
		if (r < 0) {
			log_err_errno(r, "cannot listen on '%s'", listen[i]);
			goto out_free_httpd;
		}
	}
	a.start_us = util_wall_us();
	queue_refresh_rate(&a, 1, NULL, 0);
	queue_schedule(&a);
	r = svc_periodic(&a.svc, TICK_US, on_tick, &a);
	if (r == 0)
		r = svc_periodic(&a.svc, SCHED_TICK_US, on_sched_tick, &a);
	if (r < 0)
		goto out_free_httpd;
	r = svc_run(&a.svc, "admitd ready");
out_free_httpd:
	httpd_free(a.httpd);
out_free_outbox:
	outbox_free(a.estimates);
out_close_db:
	queue_free(&a);
	store_close(a.db);
out_teardown:
	svc_teardown(&a.svc);
	return r < 0 ? 1 : 0;
}

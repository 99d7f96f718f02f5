/* bursar-noded — the node agent: pulls work from admitd in its heartbeat,
 * runs each job's ranks as child processes, meters them every second into a
 * durable spool and sends that spool to ledgerd.
 *
 * This file only parses arguments, sets up and tears down; the logic is in
 * heartbeat.c, launch.c, meter.c, spool.c, jobdb.c and probe.c. It must never
 * exit with ranks still running or spooled records uncommitted.
 */
#include "noded.h"
#include "db.h"
#include "httpd.h"
#include "log.h"
#include "outbox.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STOP_GRACE_US (3 * 1000000ULL)

static void usage(FILE *f)
{
	fprintf(f, "usage: bursar-noded --state DIR --admitd ADDR --ledgerd ADDR --trainer PATH\n"
		   "       [--slots N] [--node-id ID] [--threads-per-rank N] [--listen ADDR]\n"
		   "       [--addr HOST] [--reprobe] [--spool-max N] [--class NAME] [--cpu-only]\n");
}

static void on_health(struct httpd_req *req, void *ud)
{
	struct noded *n = ud;

	json_t *o = json_pack("{s:b, s:s, s:i, s:I, s:s, s:s, s:i, s:o}", "ok", 1, "node",
			      n->node_id, "jobs", n->n_jobs, "spool_pending",
			      (json_int_t)spool_pending(n), "class", n->node_class, "device",
			      noded_device(n), "slots", n->slots, "gpus", gpu_json(n));

	httpd_reply_json(req, 200, o);
}

static const struct httpd_route routes[] = {
	{"GET", "/v1/health", on_health, 0, 0},
};

/* Parses a positive integer option within [1, max]. */
static int parse_count(const char *opt, const char *s, long max, long *out)
{
	char *e;
	long v;

	errno = 0;
	v = strtol(s, &e, 10);
	if (errno || e == s || *e || v < 1 || v > max) {
		log_err("%s: '%s' is not a whole number in 1..%ld", opt, s, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_args(struct noded *n, int argc, char **argv)
{
	static const struct option opts[] = {
		{"state", required_argument, NULL, 's'},   {"admitd", required_argument, NULL, 'a'},
		{"ledgerd", required_argument, NULL, 'l'}, {"trainer", required_argument, NULL, 't'},
		{"slots", required_argument, NULL, 'n'},   {"node-id", required_argument, NULL, 'i'},
		{"threads-per-rank", required_argument, NULL, 'T'},
		{"listen", required_argument, NULL, 'L'},  {"addr", required_argument, NULL, 'A'},
		{"reprobe", no_argument, NULL, 'R'},       {"spool-max", required_argument, NULL, 'S'},
		{"class", required_argument, NULL, 'C'},   {"cpu-only", no_argument, NULL, 'G'},
		{"help", no_argument, NULL, 'h'},          {},
	};
	const char *cls = NULL;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN), v, threads = 0;
	char host[64];
	int c;

	if (cpus < 1)
		cpus = 1;
	n->slots = (int)cpus;
	n->spool_max = NODED_SPOOL_MAX;
	n->addr = "127.0.0.1";
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': n->state_dir = optarg; break;
		case 'a': n->admitd = optarg; break;
		case 'l': n->ledgerd = optarg; break;
		case 't': n->trainer = optarg; break;
		case 'L': n->listen = optarg; break;
		case 'A': n->addr = optarg; break;
		case 'R': n->reprobe = 1; break;
		case 'G': n->cpu_only = 1; break;
		case 'i':
			if (!util_valid_name(optarg, NODED_ID_MAX - 1)) {
				log_err("--node-id: '%s' must be 1..%d characters of [A-Za-z0-9_.-]",
					optarg, NODED_ID_MAX - 1);
				return -EINVAL;
			}
			snprintf(n->node_id, sizeof(n->node_id), "%s", optarg);
			break;
		case 'n':
			if (parse_count("--slots", optarg, NODED_MAX_RANKS, &v) < 0)
				return -EINVAL;
			n->slots = (int)v;
			n->slots_given = 1;
			break;
		case 'C':
			if (!noded_valid_class(optarg)) {
				log_err("--class: '%s' is not a node class name: use 1..%d characters "
					"of [a-z0-9_.-], the name the ledger has a rate for (e.g. "
					"'cpu' or 'h100')", optarg, NODED_CLASS_MAX);
				return -EINVAL;
			}
			cls = optarg;
			break;
		case 'T':
			if (parse_count("--threads-per-rank", optarg, 1024, &threads) < 0)
				return -EINVAL;
			break;
		case 'S':
			if (parse_count("--spool-max", optarg, NODED_SPOOL_MAX, &v) < 0)
				return -EINVAL;
			n->spool_max = v;
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc || !n->state_dir || !n->admitd || !n->ledgerd || !n->trainer) {
		usage(stderr);
		log_err("--state, --admitd, --ledgerd and --trainer are required");
		return -EINVAL;
	}
	if (access(n->trainer, X_OK) < 0) {
		log_err("--trainer: '%s' is not an executable file: %m", n->trainer);
		return -EINVAL;
	}
	/* a GPU node runs one rank per GPU; the class prices its rank-hours */
	if (gpu_setup(n, cls) < 0)
		return -EINVAL;
	n->threads_per_rank = threads ? (int)threads : (int)(cpus / n->slots > 1 ? cpus / n->slots : 1);
	if (!n->node_id[0]) {
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = 0;
		snprintf(n->node_id, sizeof(n->node_id), "node-%s", host);
	}
	return 0;
}

/* A daemon started with a closed stdin/stdout would hand those fds to pipes. */
static void ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			_exit(1);
}

static int setup(struct noded *n)
{
	char jobs[PATH_MAX];
	int r;

	r = util_mkdir_p(n->state_dir);
	if (r < 0)
		return log_err_errno(r, "cannot create the state directory '%s'", n->state_dir);
	/* job paths go to admitd and consoled: make them absolute */
	if (!realpath(n->state_dir, n->state_abs))
		return log_err_errno(-errno, "cannot resolve the state directory '%s'", n->state_dir);
	n->state_dir = n->state_abs;
	if (strlen(n->state_dir) > 512)
		return log_err("the state directory path '%s' is too long (limit 512 characters: "
			       "job paths are reported to admitd)", n->state_dir), -ENAMETOOLONG;
	snprintf(jobs, sizeof(jobs), "%s/jobs", n->state_dir);
	r = util_mkdir_p(jobs);
	if (r < 0)
		return log_err_errno(r, "cannot create '%s'", jobs);
	r = jobdb_open(n);
	if (r < 0)
		return log_err_errno(r, "cannot open %s/noded.db", n->state_dir);
	r = spool_open(n);
	if (r < 0)
		return log_err_errno(r, "cannot open the meter spool in %s/noded.db", n->state_dir);
	r = jobdb_recover(n);
	if (r < 0)
		return log_err_errno(r, "cannot load the jobs in %s/noded.db", n->state_dir);
	noded_profile(n, n->reprobe);
	meter_energy_setup(n);
	if (n->listen) {
		struct httpd_config cfg = {.routes = routes, .n_routes = ARRAY_SIZE(routes),
					   .userdata = n, .max_body = 4096, .max_conns = 16};

		r = httpd_new(n->svc.ev, &cfg, &n->httpd);
		if (r < 0)
			return log_err_errno(r, "cannot start the health endpoint");
		r = httpd_listen(n->httpd, n->listen);
		if (r < 0)
			return log_err_errno(r, "cannot listen on '%s'", n->listen);
	}
	if ((r = svc_periodic(&n->svc, 500000, heartbeat_tick, n)) < 0 ||
	    (r = svc_periodic(&n->svc, 1000000, meter_tick, n)) < 0 ||
	    (r = svc_periodic(&n->svc, 1000000, spool_tick, n)) < 0)
		return log_err_errno(r, "cannot start the agent's timers");
	return 0;
}

int main(int argc, char **argv)
{
	struct noded n = {0};
	char status[512];
	int r;

	ensure_std_fds();
	r = svc_setup(&n.svc, "bursar-noded");
	if (r < 0) {
		fprintf(stderr, "bursar-noded: cannot set up the event loop: %s\n", strerror(-r));
		return 1;
	}
	/* before anything forks, so no child exit goes unseen */
	r = svc_watch_children(&n.svc);
	if (r < 0) {
		log_err_errno(r, "cannot block SIGCHLD");
		goto out_teardown;
	}
	r = parse_args(&n, argc, argv);
	if (r < 0)
		goto out_teardown;
	r = setup(&n);
	if (r < 0)
		goto out_free;
	snprintf(status, sizeof(status), "node %s (class %s, %s): %d slots, %d threads per rank, "
		 "%.3g FLOP/s per rank, admitd %s, ledgerd %s", n.node_id, n.node_class,
		 noded_device(&n), n.slots, n.threads_per_rank, n.flops,
		 n.admitd, n.ledgerd);
	r = svc_run(&n.svc, status);
	if (r < 0)
		log_err_errno(r, "event loop failed");
	/* stop: no more heartbeats; end every job, meter it, flush once */
	n.stopping = 1;
	launch_stop_all(&n, STOP_GRACE_US);
	meter_drain(&n);
	spool_flush(&n, 5);
	log_info("stopped with %lld meter records spooled", (long long)spool_pending(&n));
out_free:
	while (n.jobs) {
		struct job *j = n.jobs;

		job_unlink(&n, j);
		job_free(j);
	}
	httpd_free(n.httpd);
	outbox_free(n.spool);
	jobdb_close(&n);
	gpu_close(&n);
out_teardown:
	svc_teardown(&n.svc);
	return r < 0 ? 1 : 0;
}

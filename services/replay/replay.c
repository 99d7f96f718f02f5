/* bursar-replay — replays a job trace through admitd's real queue policy
 * (services/admitd/sched.c) on an in-memory cluster with a simulated clock:
 * no daemons, no HTTP, no SQLite. Reports job completion time, queueing
 * delay, utilisation, makespan and the longest wait per policy.
 *
 * The trace format is that of ../shared/data/philly-jobs.csv:
 * timestamp,duration,num_gpus,gpu_time,cluster — GPU job arrivals from
 * Microsoft's Philly cluster trace (msr-fiddle/philly-traces, CC BY 4.0), as
 * preprocessed for the Pollux (OSDI'21) simulator (petuum/adaptdl,
 * simulator/traces/philly.csv). The virtual cluster id stands in for the
 * tenant. Policies never see a job's true duration, only an estimate =
 * duration × lognormal(0, sigma) drawn from a seeded generator, the same
 * estimates for every policy.
 *
 * --check verifies invariants after every pass (used <= capacity; a backfill
 * pass never moves the head's reserved start later; every job ends) and
 * exits 1 naming the first violation.
 */
#include "sched.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPLAY_MAX_JOBS 2000000 /* rows read from a trace */
#define REPLAY_MAX_SLOTS 1000000
#define REPLAY_LINE 512

static const char attribution[] =
	"# trace: Microsoft Philly cluster trace (msr-fiddle/philly-traces, CC BY 4.0),\n"
	"#        as preprocessed for Pollux OSDI'21 (petuum/adaptdl simulator/traces/philly.csv)\n";

struct rjob {
	double arrive, dur, est;
	int ranks, tenant;
	double start, end;
};

struct trace {
	struct rjob *jobs;
	int n, n_too_big;
	char tenants[SCHED_MAX_TENANTS][16];
	int n_tenants;
};

static int tenant_index(struct trace *t, const char *name)
{
	for (int i = 0; i < t->n_tenants; i++)
		if (!strcmp(t->tenants[i], name))
			return i;
	if (t->n_tenants == SCHED_MAX_TENANTS)
		return SCHED_MAX_TENANTS - 1; /* the rest share the last bucket */
	snprintf(t->tenants[t->n_tenants], sizeof(t->tenants[0]), "%s", name);
	return t->n_tenants++;
}

/* "2017-10-09 07:01:55" or plain seconds → seconds since the epoch (UTC). */
static int parse_time(const char *s, double *out)
{
	struct tm tm = {0};
	char *end;

	if (strptime(s, "%Y-%m-%d %H:%M:%S", &tm) && strlen(s) == 19) {
		*out = (double)timegm(&tm);
		return 0;
	}
	*out = strtod(s, &end);
	return *end || end == s || !isfinite(*out) ? -EINVAL : 0;
}

static int cmp_arrive(const void *pa, const void *pb)
{
	const struct rjob *a = pa, *b = pb;

	return a->arrive < b->arrive ? -1 : a->arrive > b->arrive;
}

/* Reads the trace; jobs wider than the cluster are counted and left out. */
static int load_trace(const char *path, int slots, struct trace *t)
{
	char line[REPLAY_LINE], *f[5], *save;
	int cap = 4096, lineno = 0;
	FILE *fp = fopen(path, "r");

	if (!fp) {
		fprintf(stderr, "bursar-replay: cannot open trace '%s': %s\n", path,
			strerror(errno));
		return -errno;
	}
	t->jobs = malloc(cap * sizeof(*t->jobs));
	while (t->jobs && fgets(line, sizeof(line), fp)) {
		struct rjob *j;
		double ts, dur;
		char *e1, *e2;
		long g;
		int k = 0;

		lineno++;
		line[strcspn(line, "\r\n")] = 0;
		if (lineno == 1 && !strncmp(line, "timestamp", 9))
			continue;
		for (char *p = strtok_r(line, ",", &save); p && k < 5; p = strtok_r(NULL, ",", &save))
			f[k++] = p;
		if (k < 3 || parse_time(f[0], &ts) < 0)
			goto bad;
		dur = strtod(f[1], &e1);
		g = strtol(f[2], &e2, 10);
		if (*e1 || *e2 || !isfinite(dur) || dur < 0 || dur > 1e9 || g < 1 || g > 1000000)
			goto bad;
		if (g > slots) {
			t->n_too_big++;
			continue;
		}
		if (t->n == REPLAY_MAX_JOBS) {
			fprintf(stderr, "bursar-replay: '%s' has more than %d jobs\n", path,
				REPLAY_MAX_JOBS);
			goto out_err;
		}
		if (t->n == cap) {
			struct rjob *nj = realloc(t->jobs, 2 * cap * sizeof(*nj));

			if (!nj)
				break;
			t->jobs = nj;
			cap *= 2;
		}
		j = &t->jobs[t->n++];
		j->arrive = ts;
		j->dur = dur;
		j->ranks = (int)g;
		j->tenant = tenant_index(t, k >= 5 ? f[4] : "-");
		continue;
bad:
		fprintf(stderr, "bursar-replay: %s:%d: expected timestamp,duration,num_gpus[,...]\n",
			path, lineno);
		goto out_err;
	}
	fclose(fp);
	if (!t->jobs)
		return -ENOMEM;
	qsort(t->jobs, t->n, sizeof(*t->jobs), cmp_arrive);
	return 0;
out_err:
	fclose(fp);
	return -EINVAL;
}

/* splitmix64: a small, seedable generator (the same stream on every machine) */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rng_normal(uint64_t *s)
{
	double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (rng_next(s) >> 11) / 9007199254740992.0;

	return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* ---- the simulation: a binary heap of completions by true end ---- */

struct sim {
	const struct sched_conf *conf;
	struct rjob *jobs;
	int n, slots, free;
	int *heap, n_heap;         /* running job indices by true end */
	struct sched_job *wait;    /* waiting jobs (id = job index) */
	int n_wait;
	struct sched_run *run;     /* scratch: running jobs by estimated end */
	int *start;
	struct sched_usage usage;
	int check, violations;
	long passes, backfilled;
};

static void heap_push(struct sim *s, int j)
{
	int i = s->n_heap++;

	while (i > 0 && s->jobs[s->heap[(i - 1) / 2]].end > s->jobs[j].end) {
		s->heap[i] = s->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	s->heap[i] = j;
}

static int heap_pop(struct sim *s)
{
	int top = s->heap[0], last = s->heap[--s->n_heap], i = 0;

	for (;;) {
		int c = 2 * i + 1;

		if (c >= s->n_heap)
			break;
		if (c + 1 < s->n_heap && s->jobs[s->heap[c + 1]].end < s->jobs[s->heap[c]].end)
			c++;
		if (s->jobs[last].end <= s->jobs[s->heap[c]].end)
			break;
		s->heap[i] = s->heap[c];
		i = c;
	}
	if (s->n_heap)
		s->heap[i] = last;
	return top;
}

static void violation(struct sim *s, const char *what, double now)
{
	if (s->violations++ < 5)
		fprintf(stderr, "bursar-replay: check failed at t=%.0f s: %s\n", now, what);
}

/* One admission pass at now: the real sched_order + sched_pass. */
static void sim_pass(struct sim *s, double now)
{
	struct sched_result res;
	int n_run = 0, w = 0;

	sched_order(s->conf, &s->usage, now, s->wait, s->n_wait);
	for (int i = 0; i < s->n_heap; i++) {
		struct rjob *j = &s->jobs[s->heap[i]];

		s->run[n_run].ranks = j->ranks;
		s->run[n_run++].end_s = j->start + j->est;
	}
	sched_pass(s->conf, now, s->free, s->wait, s->n_wait, s->run, n_run, s->start, &res);
	s->passes++;
	s->backfilled += res.n_backfilled;
	for (int k = 0; k < res.n_start; k++) {
		struct sched_job *q = &s->wait[s->start[k]];
		struct rjob *j = &s->jobs[q->id];

		j->start = now;
		j->end = now + j->dur;
		s->free -= j->ranks;
		heap_push(s, (int)q->id);
		q->ranks = -q->ranks; /* mark started */
	}
	if (s->free < 0)
		violation(s, "more ranks in use than the cluster has", now);
	if (s->check && res.head >= 0 && s->conf->policy != SCHED_FIFO && isfinite(res.reserve_s)) {
		/* with everything this pass started counted, the head's shadow must not move */
		int extra, m = 0;
		double t;

		for (int i = 0; i < s->n_heap; i++) {
			struct rjob *j = &s->jobs[s->heap[i]];

			s->run[m].ranks = j->ranks;
			s->run[m++].end_s = j->start + j->est;
		}
		t = sched_shadow(now, s->free, s->run, m, s->wait[res.head].ranks, &extra);
		if (t > res.reserve_s + 1e-6)
			violation(s, "a backfilled job delayed the head's reserved start", now);
	}
	for (int i = 0; i < s->n_wait; i++)
		if (s->wait[i].ranks > 0)
			s->wait[w++] = s->wait[i];
	s->n_wait = w;
}

static int cmp_double(const void *pa, const void *pb)
{
	double a = *(const double *)pa, b = *(const double *)pb;

	return a < b ? -1 : a > b;
}

/* Runs one policy over the whole trace and prints its report. */
static int simulate(struct trace *t, int slots, const struct sched_conf *conf, int check)
{
	struct sim s = {.conf = conf, .jobs = t->jobs, .n = t->n, .slots = slots, .free = slots,
			.check = check};
	double now, t0 = t->n ? t->jobs[0].arrive : 0, last_end = t0, sum_jct = 0, sum_wait = 0;
	double max_wait = 0, work = 0, *jct = NULL;
	int next = 0, done = 0, r = -ENOMEM;

	s.heap = malloc((t->n + 1) * sizeof(*s.heap));
	s.wait = malloc((t->n + 1) * sizeof(*s.wait));
	s.run = malloc((2 * t->n + 2) * sizeof(*s.run));
	s.start = malloc((t->n + 1) * sizeof(*s.start));
	jct = malloc((t->n + 1) * sizeof(*jct));
	if (!s.heap || !s.wait || !s.run || !s.start || !jct)
		goto out;
	s.usage.at_s = t0;
	while (next < t->n || s.n_heap) {
		int changed = 0;

		now = next < t->n ? t->jobs[next].arrive : INFINITY;
		if (s.n_heap && s.jobs[s.heap[0]].end < now)
			now = s.jobs[s.heap[0]].end;
		while (s.n_heap && s.jobs[s.heap[0]].end <= now) {
			struct rjob *j = &t->jobs[heap_pop(&s)];

			s.free += j->ranks;
			sched_usage_add(&s.usage, conf, j->tenant, j->ranks * j->dur, now);
			done++;
			changed = 1;
		}
		while (next < t->n && t->jobs[next].arrive <= now) {
			struct rjob *j = &t->jobs[next];
			struct sched_job *q = &s.wait[s.n_wait++];

			q->id = next++;
			q->ranks = j->ranks;
			q->prio = 0;
			q->tenant = j->tenant;
			q->submit_s = j->arrive;
			q->est_s = j->est;
			changed = 1;
		}
		if (changed && s.free > 0 && s.n_wait)
			sim_pass(&s, now);
	}
	if (s.n_wait || done != t->n)
		violation(&s, "jobs were left waiting at the end of the trace", last_end);
	for (int i = 0; i < t->n; i++) {
		struct rjob *j = &t->jobs[i];
		double wait = j->start - j->arrive;

		jct[i] = j->end - j->arrive;
		sum_jct += jct[i];
		sum_wait += wait;
		if (wait > max_wait)
			max_wait = wait;
		if (j->end > last_end)
			last_end = j->end;
		work += j->ranks * j->dur;
	}
	qsort(jct, t->n, sizeof(*jct), cmp_double);
	{
		int n = t->n ? t->n : 1;
		double mk = last_end - t0, p99 = t->n ? jct[(int)floor(0.99 * (t->n - 1))] : 0;
		double util = mk > 0 ? work / (slots * mk) : 0;

		printf("%-8s jobs %d  avg JCT %.0f s  p99 JCT %.0f s  avg wait %.0f s  max wait %.0f s"
		       "  util %.3f  makespan %.0f s  passes %ld  backfilled %ld\n",
		       sched_policy_name(conf->policy), t->n, sum_jct / n, p99, sum_wait / n,
		       max_wait, util, mk, s.passes, s.backfilled);
		printf("policy=%s jobs=%d avg_jct_s=%.0f p99_jct_s=%.0f avg_wait_s=%.0f "
		       "max_wait_s=%.0f util=%.4f makespan_s=%.0f\n", sched_policy_name(conf->policy),
		       t->n, sum_jct / n, p99, sum_wait / n, max_wait, util, mk);
	}
	if (check)
		printf("check policy=%s %s\n", sched_policy_name(conf->policy),
		       s.violations ? "FAILED" : "ok");
	r = s.violations ? -EPROTO : 0;
out:
	free(s.heap);
	free(s.wait);
	free(s.run);
	free(s.start);
	free(jct);
	return r;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bursar-replay TRACE.csv [--policy fifo|backfill|bursar[,...]] [--nodes N]\n"
		   "                     [--gpus-per-node G] [--sigma S] [--seed S] [--starve H]\n"
		   "                     [--fs-weight W] [--check]\n"
		   "  --policy P      one policy or a comma list (default fifo,backfill,bursar)\n"
		   "  --nodes N       nodes in the simulated cluster (default 64)\n"
		   "  --gpus-per-node G  slots per node (default 8)\n"
		   "  --sigma S       runtime estimate error: duration x lognormal(0, S) (default 0.5)\n"
		   "  --seed S        seed of the estimate errors (default 1)\n"
		   "  --starve H      bursar: hours after which a waiting job goes first (default 36)\n"
		   "  --fs-weight W   bursar: how much a tenant's decayed over-use delays its jobs\n"
		   "                  (default 0.5)\n"
		   "  --check         verify the scheduling invariants; exit 1 on a violation\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"policy", required_argument, NULL, 'p'}, {"nodes", required_argument, NULL, 'n'},
		{"gpus-per-node", required_argument, NULL, 'g'},
		{"sigma", required_argument, NULL, 's'},  {"seed", required_argument, NULL, 'S'},
		{"starve", required_argument, NULL, 'w'}, {"check", no_argument, NULL, 'c'},
		{"fs-weight", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	double nodes = 64, gpn = 8, sigma = 0.5, seed = 1, starve_h = 36, fs_weight = 0.5;
	char policies[64] = "fifo,backfill,bursar", *save;
	struct trace t = {0};
	int c, check = 0, rc = 0, slots;
	uint64_t rng;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		double *dst = c == 'n' ? &nodes : c == 'g' ? &gpn : c == 's' ? &sigma :
			      c == 'S' ? &seed : c == 'w' ? &starve_h : c == 'f' ? &fs_weight : NULL;
		double hi = c == 's' || c == 'f' ? 5 : c == 'S' ? 4e9 : c == 'w' ? 1e4 : 1e5;

		if (dst && util_parse_double(optarg, c == 'n' || c == 'g' ? 1 : 0, hi, dst) < 0) {
			fprintf(stderr, "bursar-replay: bad value '%s' for --%s\n", optarg,
				opts[c == 'n' ? 1 : c == 'g' ? 2 : c == 's' ? 3 : c == 'S' ? 4 :
				     c == 'w' ? 5 : 7].name);
			return 2;
		}
		if (c == 'p')
			snprintf(policies, sizeof(policies), "%s", optarg);
		else if (c == 'c')
			check = 1;
		else if (c == 'h') {
			usage(stdout);
			return 0;
		} else if (!dst) {
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	if (nodes * gpn > REPLAY_MAX_SLOTS) {
		fprintf(stderr, "bursar-replay: at most %d slots in all\n", REPLAY_MAX_SLOTS);
		return 2;
	}
	slots = (int)nodes * (int)gpn;
	if (load_trace(argv[optind], slots, &t) < 0)
		return 1;
	rng = (uint64_t)seed;
	for (int i = 0; i < t.n; i++) {
		double e = t.jobs[i].dur * exp(sigma * rng_normal(&rng));

		t.jobs[i].est = e < 1 ? 1 : e;
	}
	printf("%s", attribution);
	printf("# %s: %d jobs (%d wider than the cluster left out), %d tenants; cluster %d x %d"
	       " = %d slots; estimates = duration x lognormal(0, %.2f), seed %.0f\n",
	       argv[optind], t.n, t.n_too_big, t.n_tenants, (int)nodes, (int)gpn, slots, sigma,
	       seed);
	for (char *p = strtok_r(policies, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		struct sched_conf conf;
		enum sched_policy pol;

		if (sched_policy_parse(p, &pol) < 0) {
			fprintf(stderr, "bursar-replay: unknown policy '%s' (fifo, backfill, bursar)\n",
				p);
			rc = 2;
			break;
		}
		sched_conf_default(&conf, pol);
		conf.starve_s = starve_h * 3600;
		conf.fs_weight = fs_weight;
		if (simulate(&t, slots, &conf, check) < 0)
			rc = 1;
		fflush(stdout);
	}
	free(t.jobs);
	return rc;
}

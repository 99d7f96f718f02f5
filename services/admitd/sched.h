/* sched.h — admission's queue policy as pure functions: ordering of the
 * waiting jobs (FIFO, backfill or bursar's), EASY backfill against the head's
 * reservation, fair-share usage decay, and projected start times. No I/O, no
 * clock, no allocation: admitd (queue.c) runs it against SQLite rows with the
 * wall clock, bursar-replay against an in-memory cluster with a simulated
 * clock, so the replay measures the code that admits real jobs.
 */
#pragma once
#include <stddef.h>

#define SCHED_MAX_TENANTS 1024  /* distinct tenants fair share tracks */
#define SCHED_BF_DEPTH 1000     /* waiting jobs one backfill pass may look at */
#define SCHED_PROJECT_DEPTH 100 /* waiting jobs that get a projected start */

enum sched_policy {
	SCHED_FIFO,     /* strict order: nothing passes a head that does not fit */
	SCHED_BACKFILL, /* FIFO order plus EASY backfill (Slurm-style) */
	SCHED_BURSAR,   /* priority, starvation guard, fair share, shortest first, EASY backfill */
};

struct sched_conf {
	enum sched_policy policy;
	double starve_s;      /* bursar: a job waiting longer than this goes first, FIFO among those */
	double half_life_s;   /* fair share: usage halves every half_life_s */
	double fs_weight;     /* bursar: how much a tenant's over-use stretches its jobs' keys */
	int bf_depth;         /* cap on jobs a backfill pass looks at (<= SCHED_BF_DEPTH) */
};

/* One waiting job. submit_s and est_s are seconds; key is the pass's own. */
struct sched_job {
	long id;      /* the caller's handle (row index) */
	int ranks;
	int prio;     /* higher first, in every policy */
	int tenant;   /* index into the usage table, < SCHED_MAX_TENANTS */
	double submit_s;
	double est_s; /* runtime estimate; the true duration is never seen */
	double key;
	int starved;
};

/* One running job: its ranks come back at end_s (its estimated end). */
struct sched_run {
	int ranks;
	double end_s;
};

/* Decayed rank-seconds per tenant at time at_s. */
struct sched_usage {
	double used[SCHED_MAX_TENANTS];
	double at_s;
	int n_tenants;
};

/* What one pass decided. start[] holds indices into the ordered queue. */
struct sched_result {
	int n_start;
	int head;          /* index of the blocked head in the ordered queue, -1 when none */
	double reserve_s;  /* the head's reserved start (+inf when it can never fit) */
	int n_backfilled;  /* of n_start, how many passed the blocked head */
};

void sched_conf_default(struct sched_conf *c, enum sched_policy p);
/* Parses "fifo" | "backfill" | "bursar"; -EINVAL otherwise. */
int sched_policy_parse(const char *s, enum sched_policy *out);
const char *sched_policy_name(enum sched_policy p);

/* Adds rank_s rank-seconds of tenant at now_s, decaying what was there. */
void sched_usage_add(struct sched_usage *u, const struct sched_conf *c, int tenant,
		     double rank_s, double now_s);

/* Orders q[0..n) for policy c at now_s (in place). */
void sched_order(const struct sched_conf *c, const struct sched_usage *u, double now_s,
		 struct sched_job *q, int n);

/* Orders only the first k of q[0..n) (in place): afterwards q[0..k) are the
 * k first jobs in policy order, sorted, and q[k..n) the rest in no order;
 * O(n + k log k) instead of O(n log n). Returns how many are sorted (n when
 * k < 0 or k >= n). sched_order_rest sorts the rest when it is needed. */
int sched_order_top(const struct sched_conf *c, const struct sched_usage *u, double now_s,
		    struct sched_job *q, int n, int k);
void sched_order_rest(const struct sched_conf *c, struct sched_job *q, int n, int k);

/* Earliest time >= now_s at which `need` ranks are free, given `free` free
 * now and the running jobs' estimated ends (run is sorted in place by end);
 * *extra receives the ranks left over then. +inf when total is too small. */
double sched_shadow(double now_s, int free, struct sched_run *run, int n_run, int need,
		    int *extra);

/* One admission pass over the ordered queue: starts jobs from the head while
 * they fit; FIFO stops at the first that does not; the backfill policies
 * reserve the blocked head's start and start later jobs only when they fit
 * now and either end (by estimate) before the reservation or use ranks the
 * head will not need then. start[] (capacity n) receives queue indices. */
int sched_pass(const struct sched_conf *c, double now_s, int free, const struct sched_job *q,
	       int n, struct sched_run *run, int n_run, int *start, struct sched_result *res);

/* Projected start of the first min(n, SCHED_PROJECT_DEPTH) ordered jobs if
 * they started in order as ranks free up (no backfill): est_start[i]. run is
 * sorted in place. Jobs beyond the depth, or that can never fit, get +inf. */
void sched_project(double now_s, int free, struct sched_run *run, int n_run,
		   const struct sched_job *q, int n, double *est_start);

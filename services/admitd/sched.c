/* sched — the queue policy (see sched.h): ordering, EASY backfill, fair-share
 * decay and projected starts. Pure: the same code admits real jobs in admitd
 * and simulated ones in bursar-replay. It must never read a clock, do I/O or
 * allocate; callers pass time and own every array.
 *
 * EASY backfill (Lifka 1995, as in Slurm's sched/backfill): the first job in
 * policy order that does not fit gets a reservation at the earliest time
 * enough ranks come back by the running jobs' estimates (the "shadow" time);
 * a later job may start now only if it fits now and either ends by its
 * estimate before the shadow time or uses ranks the head will not need then.
 * So no backfilled job can move the head's reserved start later.
 */
#include "sched.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sched_conf_default(struct sched_conf *c, enum sched_policy p)
{
	c->policy = p;
	c->starve_s = 36 * 3600.0;
	c->half_life_s = 3600.0;
	c->fs_weight = 0.5;
	c->bf_depth = SCHED_BF_DEPTH;
}

int sched_policy_parse(const char *s, enum sched_policy *out)
{
	if (!strcmp(s, "fifo"))
		*out = SCHED_FIFO;
	else if (!strcmp(s, "backfill"))
		*out = SCHED_BACKFILL;
	else if (!strcmp(s, "bursar"))
		*out = SCHED_BURSAR;
	else
		return -EINVAL;
	return 0;
}

const char *sched_policy_name(enum sched_policy p)
{
	return p == SCHED_FIFO ? "fifo" : p == SCHED_BACKFILL ? "backfill" : "bursar";
}

static void usage_decay(struct sched_usage *u, const struct sched_conf *c, double now_s)
{
	double f;

	if (now_s <= u->at_s)
		return;
	f = exp2(-(now_s - u->at_s) / c->half_life_s);
	for (int i = 0; i < u->n_tenants; i++)
		u->used[i] *= f;
	u->at_s = now_s;
}

void sched_usage_add(struct sched_usage *u, const struct sched_conf *c, int tenant,
		     double rank_s, double now_s)
{
	if (tenant < 0 || tenant >= SCHED_MAX_TENANTS || !(rank_s > 0))
		return;
	usage_decay(u, c, now_s);
	if (tenant >= u->n_tenants) {
		for (int i = u->n_tenants; i <= tenant; i++)
			u->used[i] = 0;
		u->n_tenants = tenant + 1;
	}
	u->used[tenant] += rank_s;
}

static int cmp_fifo(const void *pa, const void *pb)
{
	const struct sched_job *a = pa, *b = pb;

	if (a->prio != b->prio)
		return a->prio > b->prio ? -1 : 1;
	if (a->submit_s != b->submit_s)
		return a->submit_s < b->submit_s ? -1 : 1;
	return a->id < b->id ? -1 : a->id > b->id;
}

static int cmp_bursar(const void *pa, const void *pb)
{
	const struct sched_job *a = pa, *b = pb;

	if (a->prio != b->prio)
		return a->prio > b->prio ? -1 : 1;
	if (a->starved != b->starved)
		return a->starved ? -1 : 1;
	if (!a->starved && a->key != b->key)
		return a->key < b->key ? -1 : 1;
	return cmp_fifo(pa, pb);
}

/* Sets the bursar policy's keys (fair-share stretched size, starvation). */
static void order_keys(const struct sched_conf *c, const struct sched_usage *u, double now_s,
		       struct sched_job *q, int n)
{
	double sum = 0, mean;
	int users = 0;

	/* every tenant's usage decays by the same factor, so ratios need no decay */
	for (int i = 0; u && i < u->n_tenants; i++)
		if (u->used[i] > 0) {
			sum += u->used[i];
			users++;
		}
	mean = users ? sum / users : 0;
	for (int i = 0; i < n; i++) {
		double share = 0;

		if (mean > 0 && q[i].tenant >= 0 && q[i].tenant < u->n_tenants)
			share = u->used[q[i].tenant] / mean;
		if (share > 4)
			share = 4;
		/* shortest (estimated rank-seconds) first, stretched by over-use */
		q[i].key = q[i].est_s * q[i].ranks * (1 + c->fs_weight * share);
		q[i].starved = now_s - q[i].submit_s > c->starve_s;
	}
}

void sched_order(const struct sched_conf *c, const struct sched_usage *u, double now_s,
		 struct sched_job *q, int n)
{
	if (c->policy == SCHED_BURSAR)
		order_keys(c, u, now_s, q, n);
	qsort(q, n, sizeof(*q), c->policy == SCHED_BURSAR ? cmp_bursar : cmp_fifo);
}

static void swap_job(struct sched_job *x, struct sched_job *y)
{
	struct sched_job t = *x;

	*x = *y;
	*y = t;
}

/* Moves the k first of q[0..n) in order cmp to q[0..k), in any order:
 * quickselect (Hoare), median-of-three pivots, O(n) on average. The ids are
 * unique, so cmp is a strict total order. */
static void select_top(struct sched_job *q, int n, int k, int (*cmp)(const void *, const void *))
{
	int lo = 0, hi = n - 1;

	while (hi > lo) {
		int mid = lo + (hi - lo) / 2, i = lo, j = hi;
		struct sched_job pivot;

		if (cmp(&q[mid], &q[lo]) < 0)
			swap_job(&q[mid], &q[lo]);
		if (cmp(&q[hi], &q[lo]) < 0)
			swap_job(&q[hi], &q[lo]);
		if (cmp(&q[hi], &q[mid]) < 0)
			swap_job(&q[hi], &q[mid]);
		pivot = q[mid];
		while (i <= j) {
			while (cmp(&q[i], &pivot) < 0)
				i++;
			while (cmp(&pivot, &q[j]) < 0)
				j--;
			if (i <= j)
				swap_job(&q[i++], &q[j--]);
		}
		/* q[lo..j] <= pivot <= q[i..hi] */
		if (k - 1 <= j)
			hi = j;
		else if (k - 1 >= i)
			lo = i;
		else
			return;
	}
}

int sched_order_top(const struct sched_conf *c, const struct sched_usage *u, double now_s,
		    struct sched_job *q, int n, int k)
{
	int (*cmp)(const void *, const void *) = c->policy == SCHED_BURSAR ? cmp_bursar : cmp_fifo;

	if (c->policy == SCHED_BURSAR)
		order_keys(c, u, now_s, q, n);
	if (k < 0 || k >= n) {
		qsort(q, n, sizeof(*q), cmp);
		return n;
	}
	select_top(q, n, k, cmp);
	qsort(q, k, sizeof(*q), cmp);
	return k;
}

void sched_order_rest(const struct sched_conf *c, struct sched_job *q, int n, int k)
{
	if (k < n)
		qsort(q + k, n - k, sizeof(*q), c->policy == SCHED_BURSAR ? cmp_bursar : cmp_fifo);
}

static int cmp_run(const void *pa, const void *pb)
{
	const struct sched_run *a = pa, *b = pb;

	return a->end_s < b->end_s ? -1 : a->end_s > b->end_s;
}

double sched_shadow(double now_s, int free, struct sched_run *run, int n_run, int need,
		    int *extra)
{
	double t = now_s;

	if (free < need)
		qsort(run, n_run, sizeof(*run), cmp_run);
	for (int i = 0; free < need && i < n_run; i++) {
		free += run[i].ranks;
		/* a job past its estimate is taken to end now: nothing better is known */
		if (run[i].end_s > t)
			t = run[i].end_s;
	}
	*extra = free - need;
	return free >= need ? t : INFINITY;
}

int sched_pass(const struct sched_conf *c, double now_s, int free, const struct sched_job *q,
	       int n, struct sched_run *run, int n_run, int *start, struct sched_result *res)
{
	int depth = c->bf_depth > 0 && c->bf_depth < SCHED_BF_DEPTH ? c->bf_depth : SCHED_BF_DEPTH;
	int i, extra = 0, looked = 0;
	double shadow;

	memset(res, 0, sizeof(*res));
	res->head = -1;
	res->reserve_s = INFINITY;
	for (i = 0; i < n && q[i].ranks <= free; i++) {
		start[res->n_start++] = i;
		free -= q[i].ranks;
		/* run has room for n_run + n: started jobs count for the shadow */
		run[n_run].ranks = q[i].ranks;
		run[n_run++].end_s = now_s + q[i].est_s;
	}
	if (i == n)
		return 0;
	res->head = i;
	shadow = sched_shadow(now_s, free, run, n_run, q[i].ranks, &extra);
	res->reserve_s = shadow;
	if (c->policy == SCHED_FIFO)
		return 0;
	for (i++; i < n && free > 0 && looked < depth; i++, looked++) {
		int fits_before = now_s + q[i].est_s <= shadow;

		if (q[i].ranks > free || (!fits_before && q[i].ranks > extra))
			continue;
		start[res->n_start++] = i;
		res->n_backfilled++;
		free -= q[i].ranks;
		if (!fits_before)
			extra -= q[i].ranks;
	}
	return 0;
}

/* Inserts (t, ranks) into the sorted release list ev[0..*n). */
static void ev_insert(struct sched_run *ev, int *n, double t, int ranks)
{
	int i = *n;

	while (i > 0 && ev[i - 1].end_s > t) {
		ev[i] = ev[i - 1];
		i--;
	}
	ev[i].end_s = t;
	ev[i].ranks = ranks;
	(*n)++;
}

void sched_project(double now_s, int free, struct sched_run *run, int n_run,
		   const struct sched_job *q, int n, double *est_start)
{
	struct sched_run mine[SCHED_PROJECT_DEPTH];
	int n_mine = 0, ri = 0, mi = 0, i;
	double t = now_s;

	qsort(run, n_run, sizeof(*run), cmp_run);
	for (i = 0; i < n && i < SCHED_PROJECT_DEPTH; i++) {
		/* take the earliest release from the running jobs or the projected ones */
		while (free < q[i].ranks && (ri < n_run || mi < n_mine)) {
			struct sched_run *e = ri < n_run && (mi >= n_mine ||
				run[ri].end_s <= mine[mi].end_s) ? &run[ri++] : &mine[mi++];

			free += e->ranks;
			if (e->end_s > t)
				t = e->end_s;
		}
		if (free < q[i].ranks)
			break;
		est_start[i] = t;
		free -= q[i].ranks;
		/* mine[mi..n_mine) is the live part; compact before it fills */
		if (n_mine == SCHED_PROJECT_DEPTH) {
			memmove(mine, mine + mi, (n_mine - mi) * sizeof(*mine));
			n_mine -= mi;
			mi = 0;
		}
		{
			int live = n_mine - mi;
			struct sched_run *base = mine + mi;

			ev_insert(base, &live, t + q[i].est_s, q[i].ranks);
			n_mine = mi + live;
		}
	}
	for (; i < n; i++)
		est_start[i] = INFINITY;
}

/* test-sched — sched_order_top, the partial ordering a scheduling pass uses
 * instead of sorting the whole queue: for every policy, queue shape and k,
 * its first k jobs are exactly the first k of the full sort (sched_order),
 * and sched_order_rest completes it to the same order. Pure code, no I/O. */
#include "sched.h"
#include "../../tests/t.h"

#include <math.h>

#define N_MAX 3000

static struct sched_job full[N_MAX], top[N_MAX];
static unsigned rng = 12345;

static unsigned next(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 8;
}

/* n jobs: few priorities and tenants, many equal estimates (ties decided by
 * submit time, then id), some starved. */
static void fill(int n, int prios, int sizes)
{
	for (int i = 0; i < n; i++) {
		struct sched_job *j = &full[i];

		j->id = i;
		j->ranks = 1 + (int)(next() % 4);
		j->prio = (int)(next() % prios) - prios / 2;
		j->tenant = (int)(next() % 7);
		j->submit_s = 1000 + (double)(next() % 500);
		j->est_s = 10.0 * (1 + next() % sizes);
		j->key = 0;
		j->starved = 0;
	}
	memcpy(top, full, n * sizeof(*full));
}

static int same(const struct sched_job *a, const struct sched_job *b, int n)
{
	for (int i = 0; i < n; i++)
		if (a[i].id != b[i].id)
			return 0;
	return 1;
}

static void test_top_matches_full_sort(void)
{
	static const int ns[] = {0, 1, 2, 5, 100, 1000, N_MAX};
	static const int ks[] = {0, 1, 3, 50, 999, 1000, 2999, 3000, 5000, -1};
	static const enum sched_policy pol[] = {SCHED_FIFO, SCHED_BACKFILL, SCHED_BURSAR};
	struct sched_usage u = {.n_tenants = 7, .used = {5, 0, 100, 7, 0, 3, 50}};
	double now = 1000 + 36 * 3600.0 + 200; /* some jobs are starved */

	for (size_t p = 0; p < sizeof(pol) / sizeof(pol[0]); p++) {
		struct sched_conf c;

		sched_conf_default(&c, pol[p]);
		for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
			for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++) {
				int n = ns[a], k = ks[b], sorted;

				fill(n, 1 + (int)(b % 3) * 3, 1 + (int)(a % 4) * 5);
				sched_order(&c, &u, now, full, n);
				sorted = sched_order_top(&c, &u, now, top, n, k);
				T_CHECK(sorted == (k < 0 || k >= n ? n : k),
					"policy %d n %d k %d: sorted %d", pol[p], n, k, sorted);
				T_CHECK(same(full, top, sorted), "policy %d n %d k %d: first %d differ",
					pol[p], n, k, sorted);
				sched_order_rest(&c, top, n, sorted);
				T_CHECK(same(full, top, n), "policy %d n %d k %d: rest differs", pol[p],
					n, k);
			}
	}
}

int main(void)
{
	t_run("sched_order_top_matches_full_sort", test_top_matches_full_sort);
	return t_done();
}

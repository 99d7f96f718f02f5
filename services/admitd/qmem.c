/* qmem — the queued jobs in memory, so that a scheduling pass never reloads
 * the whole queue from SQLite: loaded once at start (or after a failed pass),
 * then a submission appends its job, a pass drops what it started or
 * rejected, a cancellation removes its job. SQLite stays the truth; this is a
 * cache that can be rebuilt from it at any time (qmem_load).
 *
 * Each entry remembers a hash of the reason SQLite holds, so a pass rewrites
 * only the reasons that changed (most of a long queue keeps "more than 100
 * jobs ahead" pass after pass).
 */
#include "admitd.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t reason_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; s && *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

#define QMEM_COLS "seq, id, tenant, user, ranks, prio, est_s, est_micro, created_us, reason"

static void fill(struct qent *e, sqlite3_stmt *st)
{
	e->seq = sqlite3_column_int64(st, 0);
	snprintf(e->id, sizeof(e->id), "%s", (const char *)sqlite3_column_text(st, 1));
	snprintf(e->tenant, sizeof(e->tenant), "%s", (const char *)sqlite3_column_text(st, 2));
	snprintf(e->user, sizeof(e->user), "%s", (const char *)sqlite3_column_text(st, 3));
	e->ranks = sqlite3_column_int(st, 4);
	e->prio = sqlite3_column_int(st, 5);
	e->est_s = sqlite3_column_double(st, 6);
	e->est_micro = sqlite3_column_int64(st, 7);
	e->submit_s = sqlite3_column_int64(st, 8) / 1e6;
	e->reason_h = reason_hash((const char *)sqlite3_column_text(st, 9));
	e->gone = 0;
}

int queue_init(struct admitd *a)
{
	a->qm = calloc(1, sizeof(*a->qm));
	return a->qm ? 0 : -ENOMEM;
}

void queue_free(struct admitd *a)
{
	free(a->qm);
	a->qm = NULL;
}

int qmem_load(struct admitd *a)
{
	struct queue_mem *qm = a->qm;
	sqlite3_stmt *st;
	int r, rc;

	qm->n = qm->overflow = qm->loaded = 0;
	r = store_prep(a->db, "SELECT " QMEM_COLS " FROM jobs WHERE state = 'queued' ORDER BY seq"
		       " LIMIT ?", "i", &st, (int64_t)ADMIT_MAX_QUEUE + 1);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (qm->n == ADMIT_MAX_QUEUE) {
			qm->overflow = 1;
			break;
		}
		fill(&qm->e[qm->n++], st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_errno(rc);
	qm->loaded = 1;
	return 0;
}

void queue_note_queued(struct admitd *a, const char *id)
{
	struct queue_mem *qm = a->qm;
	sqlite3_stmt *st;

	a->sched_dirty = 1;
	if (!qm->loaded)
		return; /* the next pass loads everything */
	if (qm->n == ADMIT_MAX_QUEUE) {
		qm->overflow = 1;
		return;
	}
	if (store_prep(a->db, "SELECT " QMEM_COLS " FROM jobs WHERE id = ? AND state = 'queued'",
		       "s", &st, id) < 0) {
		qm->loaded = 0;
		return;
	}
	/* seq grows: appending keeps the queue in seq order */
	if (sqlite3_step(st) == SQLITE_ROW)
		fill(&qm->e[qm->n++], st);
	sqlite3_finalize(st);
}

int qmem_set_reason(struct admitd *a, struct qent *e, const char *reason)
{
	uint64_t h = reason_hash(reason);
	int r;

	if (h == e->reason_h)
		return 0;
	r = store_set_reason(a->db, e->id, reason);
	if (r == 0)
		e->reason_h = h;
	return r;
}

void qmem_compact(struct admitd *a)
{
	struct queue_mem *qm = a->qm;
	int k = 0;

	for (int i = 0; i < qm->n; i++)
		if (!qm->e[i].gone) {
			if (k != i)
				qm->e[k] = qm->e[i];
			k++;
		}
	if (k < qm->n && qm->overflow)
		qm->loaded = 0; /* room for jobs that did not fit: reload */
	qm->n = k;
}

void qmem_remove(struct admitd *a, const char *id)
{
	struct queue_mem *qm = a->qm;

	for (int i = 0; i < qm->n; i++)
		if (!strcmp(qm->e[i].id, id)) {
			qm->e[i].gone = 1;
			qmem_compact(a);
			return;
		}
}

static int cmp_double(const void *pa, const void *pb)
{
	double x = *(const double *)pa, y = *(const double *)pb;

	return x < y ? -1 : x > y;
}

json_t *queue_stats_json(struct admitd *a)
{
	static double v[ADMIT_PASS_STATS];
	int n = a->n_passes < ADMIT_PASS_STATS ? (int)a->n_passes : ADMIT_PASS_STATS;

	memcpy(v, a->pass_ms, n * sizeof(*v));
	qsort(v, n, sizeof(*v), cmp_double);
	return json_pack("{s:I, s:i, s:i, s:f, s:f, s:f}", "passes", (json_int_t)a->n_passes,
			 "queued", a->qm->n, "overflow", a->qm->overflow,
			 "p50_ms", n ? v[n / 2] : 0.0, "p99_ms", n ? v[(int)(n * 0.99)] : 0.0,
			 "max_ms", n ? v[n - 1] : 0.0);
}

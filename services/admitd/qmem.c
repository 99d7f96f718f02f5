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

uint64_t qmem_reason_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; s && *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

#define QMEM_COLS \
	"seq, id, tenant, user, ranks, prio, est_s, est_micro, created_us, reason," \
	" coalesce(class, 'cpu')"

/* Forgets every entry: all name slots free. */
static void reset(struct queue_mem *qm)
{
	qm->n = 0;
	qm->n_free = ADMIT_MAX_QUEUE;
	for (int i = 0; i < ADMIT_MAX_QUEUE; i++)
		qm->free_slot[i] = ADMIT_MAX_QUEUE - 1 - i;
}

int qmem_append(struct queue_mem *qm, const struct qent *e, const struct qname *nm)
{
	struct qent *d;

	if (qm->n == ADMIT_MAX_QUEUE || qm->n_free == 0)
		return -ENOSPC;
	d = &qm->e[qm->n++];
	*d = *e;
	d->gone = 0;
	d->t = -1;
	d->t_gen = 0;
	d->in_pass = d->shown = 0;
	d->slot = qm->free_slot[--qm->n_free];
	qm->names[d->slot] = *nm;
	return 0;
}

/* Appends the job in row st (QMEM_COLS). */
static int append_row(struct queue_mem *qm, sqlite3_stmt *st)
{
	struct qent e = {0};
	struct qname nm;

	e.seq = sqlite3_column_int64(st, 0);
	snprintf(nm.id, sizeof(nm.id), "%s", (const char *)sqlite3_column_text(st, 1));
	snprintf(nm.tenant, sizeof(nm.tenant), "%s", (const char *)sqlite3_column_text(st, 2));
	snprintf(nm.user, sizeof(nm.user), "%s", (const char *)sqlite3_column_text(st, 3));
	e.ranks = sqlite3_column_int(st, 4);
	e.prio = sqlite3_column_int(st, 5);
	e.est_s = sqlite3_column_double(st, 6);
	nm.est_micro = sqlite3_column_int64(st, 7);
	e.submit_s = sqlite3_column_int64(st, 8) / 1e6;
	e.reason_h = qmem_reason_hash((const char *)sqlite3_column_text(st, 9));
	e.cls = (uint8_t)qmem_class(qm, (const char *)sqlite3_column_text(st, 10));
	return qmem_append(qm, &e, &nm);
}

int qmem_class(struct queue_mem *qm, const char *name)
{
	for (int i = 0; i < qm->n_cls; i++)
		if (!strcmp(qm->cls[i], name))
			return i;
	if (qm->n_cls == QMEM_MAX_CLASSES || strlen(name) > BUNDLE_MAX_CLASS)
		return QMEM_NO_CLASS;
	snprintf(qm->cls[qm->n_cls], sizeof(qm->cls[0]), "%s", name);
	return qm->n_cls++;
}

int queue_init(struct admitd *a)
{
	a->qm = calloc(1, sizeof(*a->qm));
	if (!a->qm)
		return -ENOMEM;
	reset(a->qm);
	return 0;
}

void queue_free(struct admitd *a)
{
	free(a->qm);
	a->qm = NULL;
}

/* Appends the rows of st (QMEM_COLS) until the queue is full (overflow) and
 * finishes st; the last sqlite3_step code. */
static int append_rows(struct queue_mem *qm, sqlite3_stmt *st)
{
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (qm->n == ADMIT_MAX_QUEUE) {
			qm->overflow = 1;
			break;
		}
		append_row(qm, st);
	}
	store_done(st);
	return rc;
}

int qmem_load(struct admitd *a)
{
	struct queue_mem *qm = a->qm;
	sqlite3_stmt *st;
	int r, rc;

	qm->overflow = qm->loaded = qm->topup = qm->n_gone = 0;
	qm->n_cls = 0;
	reset(qm);
	r = store_prep(a->db, "SELECT " QMEM_COLS " FROM jobs WHERE state = 'queued' ORDER BY seq"
		       " LIMIT ?", "i", &st, (int64_t)ADMIT_MAX_QUEUE + 1);
	if (r < 0)
		return r;
	rc = append_rows(qm, st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_errno(rc);
	qm->loaded = 1;
	return 0;
}

int qmem_topup(struct admitd *a)
{
	struct queue_mem *qm = a->qm;
	int64_t last = qm->n ? qm->e[qm->n - 1].seq : 0;
	sqlite3_stmt *st;
	int r, rc;

	/* The jobs left out are all behind the last one held: submissions made
	 * while the queue was full (every other way back into the queue reloads
	 * it whole), so only the room that freed up is read, not 10,000 rows. */
	qm->topup = 0;
	qm->overflow = 0;
	r = store_prep(a->db, "SELECT " QMEM_COLS " FROM jobs WHERE state = 'queued' AND seq > ?"
		       " ORDER BY seq LIMIT ?", "ii", &st, last,
		       (int64_t)(ADMIT_MAX_QUEUE - qm->n + 1));
	if (r < 0)
		return r;
	rc = append_rows(qm, st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		qm->loaded = 0;
		return db_errno(rc);
	}
	return 0;
}

void queue_note_entry(struct admitd *a, const struct qent *e, const struct qname *nm)
{
	struct queue_mem *qm = a->qm;

	a->sched_dirty = 1;
	if (!qm->loaded)
		return; /* the next pass loads everything */
	/* seq grows and the loop is single-threaded: appending keeps seq order */
	if (qmem_append(qm, e, nm) < 0)
		qm->overflow = 1;
}

int qmem_set_reason(struct admitd *a, struct qent *e, const char *reason)
{
	return qmem_set_reason_h(a, e, reason, qmem_reason_hash(reason));
}

int qmem_set_reason_h(struct admitd *a, struct qent *e, const char *reason, uint64_t h)
{
	int r;

	if (h == e->reason_h)
		return 0;
	r = store_set_reason(a->db, qmem_name(a->qm, e)->id, reason);
	if (r == 0)
		e->reason_h = h;
	return r;
}

void qmem_compact(struct admitd *a)
{
	struct queue_mem *qm = a->qm;
	int k = 0;

	if (!qm->n_gone)
		return; /* most passes start nothing: no walk over the queue */
	qm->n_gone = 0;
	for (int i = 0; i < qm->n; i++) {
		if (qm->e[i].gone) {
			qm->free_slot[qm->n_free++] = qm->e[i].slot;
			continue;
		}
		if (k != i)
			qm->e[k] = qm->e[i];
		k++;
	}
	if (k < qm->n && qm->overflow)
		qm->topup = 1; /* room for jobs that did not fit: read them next pass */
	qm->n = k;
}

void qmem_remove(struct admitd *a, const char *id)
{
	struct queue_mem *qm = a->qm;

	for (int i = 0; i < qm->n; i++)
		if (!strcmp(qmem_name(qm, &qm->e[i])->id, id)) {
			qm->e[i].gone = 1;
			qm->n_gone++;
			qmem_compact(a);
			return;
		}
}

static int cmp_double(const void *pa, const void *pb)
{
	double x = *(const double *)pa, y = *(const double *)pb;

	return x < y ? -1 : x > y;
}

/* Sorts the n recent values of ring into v: p50, p99, max. */
static void pct(const double *ring, int n, double *v, double out[3])
{
	memcpy(v, ring, n * sizeof(*v));
	qsort(v, n, sizeof(*v), cmp_double);
	out[0] = n ? v[n / 2] : 0.0;
	out[1] = n ? v[(int)(n * 0.99)] : 0.0;
	out[2] = n ? v[n - 1] : 0.0;
}

json_t *queue_stats_json(struct admitd *a)
{
	static double v[ADMIT_PASS_STATS];
	int n = a->n_passes < ADMIT_PASS_STATS ? (int)a->n_passes : ADMIT_PASS_STATS;
	double w[3], c[3];

	pct(a->pass_ms, n, v, w);
	pct(a->pass_cpu_ms, n, v, c);
	return json_pack("{s:I, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "passes",
			 (json_int_t)a->n_passes, "queued", a->qm->n, "overflow", a->qm->overflow,
			 "p50_ms", w[0], "p99_ms", w[1], "max_ms", w[2], "cpu_p50_ms", c[0],
			 "cpu_p99_ms", c[1], "cpu_max_ms", c[2]);
}

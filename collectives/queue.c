/* queue — non-blocking collectives: a progress thread per communicator,
 * started by the first bcoll_i*() call, runs requests one at a time in the
 * order they were started, with the same blocking bodies as the blocking
 * calls (every step has a deadline, so every request finishes). Requests
 * live in a fixed pool of BCOLL_MAX_PENDING allocated with the thread; the
 * calls themselves allocate nothing. bcoll_test()/bcoll_wait() release them.
 */
#include "bcoll_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { REQ_FREE, REQ_QUEUED, REQ_RUNNING, REQ_DONE };

struct bcoll_req {
	struct bcoll_comm *c;
	int state, kind, root, result;
	uint64_t order;
	const void *send;
	void *recv;
	size_t count;
	enum bcoll_dtype dt;
	enum bcoll_op op;
	char err[256];
};

struct bcoll_queue {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	uint64_t next_order;
	int stop, busy; /* busy: queued + running */
	struct bcoll_req req[BCOLL_MAX_PENDING];
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The queued request started first, or NULL. Called with mu held. */
static struct bcoll_req *oldest(struct bcoll_queue *q)
{
	struct bcoll_req *best = NULL;

	for (int i = 0; i < BCOLL_MAX_PENDING; i++)
		if (q->req[i].state == REQ_QUEUED && (!best || q->req[i].order < best->order))
			best = &q->req[i];
	return best;
}

static void *progress(void *arg)
{
	struct bcoll_comm *c = arg;
	struct bcoll_queue *q = c->q;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct bcoll_req *r;

		while (!q->stop && !(r = oldest(q)))
			pthread_cond_wait(&q->work, &q->mu);
		if (q->stop && !oldest(q))
			break;
		r = oldest(q);
		r->state = REQ_RUNNING;
		pthread_mutex_unlock(&q->mu);
		r->result = bcoll_run(c, r->kind, r->send, r->recv, r->count, r->dt, r->op, r->root);
		pthread_mutex_lock(&q->mu);
		if (r->result < 0)
			memcpy(r->err, c->err, sizeof(r->err));
		r->state = REQ_DONE;
		q->busy--;
		pthread_cond_broadcast(&q->done);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static int queue_start(struct bcoll_comm *c)
{
	struct bcoll_queue *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->work, NULL);
	pthread_cond_init(&q->done, NULL);
	c->q = q;
	if (pthread_create(&q->thread, NULL, progress, c) != 0) {
		c->q = NULL;
		free(q);
		return -EAGAIN;
	}
	return 0;
}

static int submit(struct bcoll_comm *c, int kind, const void *send, void *recv, size_t count,
		  enum bcoll_dtype dt, enum bcoll_op op, int root, struct bcoll_req **out)
{
	struct bcoll_queue *q;
	struct bcoll_req *r = NULL;
	int e;

	if (!c || !out)
		return -EINVAL;
	if (!c->q && (e = queue_start(c)) < 0)
		return e;
	q = c->q;
	pthread_mutex_lock(&q->mu);
	for (int i = 0; i < BCOLL_MAX_PENDING && !r; i++)
		if (q->req[i].state == REQ_FREE)
			r = &q->req[i];
	if (!r) {
		pthread_mutex_unlock(&q->mu);
		return -EAGAIN;
	}
	*r = (struct bcoll_req){.c = c, .state = REQ_QUEUED, .kind = kind, .root = root,
				.order = q->next_order++, .send = send, .recv = recv,
				.count = count, .dt = dt, .op = op};
	q->busy++;
	pthread_cond_signal(&q->work);
	pthread_mutex_unlock(&q->mu);
	*out = r;
	return 0;
}

int bcoll_iallreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		     enum bcoll_dtype dt, enum bcoll_op op, struct bcoll_req **req)
{
	return submit(c, BCOLL_K_ALLREDUCE, send, recv, count, dt, op, 0, req);
}

int bcoll_ireduce_scatter(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			  enum bcoll_dtype dt, enum bcoll_op op, struct bcoll_req **req)
{
	return submit(c, BCOLL_K_REDUCE_SCATTER, send, recv, count, dt, op, 0, req);
}

int bcoll_iallgather(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		     enum bcoll_dtype dt, struct bcoll_req **req)
{
	return submit(c, BCOLL_K_ALLGATHER, send, recv, count, dt, BCOLL_SUM, 0, req);
}

int bcoll_ibroadcast(struct bcoll_comm *c, void *buf, size_t count, enum bcoll_dtype dt, int root,
		     struct bcoll_req **req)
{
	return submit(c, BCOLL_K_BROADCAST, buf, buf, count, dt, BCOLL_SUM, root, req);
}

/* Hands a finished request's result (and error sentence) back; mu held. */
static int release(struct bcoll_req *r)
{
	int res = r->result;

	if (res < 0)
		memcpy(r->c->user_err, r->err, sizeof(r->c->user_err));
	r->state = REQ_FREE;
	return res;
}

int bcoll_test(struct bcoll_req *r, int *result)
{
	struct bcoll_queue *q;
	int done;

	if (!r || !r->c || !(q = r->c->q) || r->state == REQ_FREE)
		return -EINVAL;
	pthread_mutex_lock(&q->mu);
	done = r->state == REQ_DONE;
	if (done && result)
		*result = release(r);
	else if (done)
		release(r);
	pthread_mutex_unlock(&q->mu);
	return done;
}

int bcoll_wait(struct bcoll_req *r)
{
	struct bcoll_queue *q;
	double t0 = now_s();
	int res;

	if (!r || !r->c || !(q = r->c->q) || r->state == REQ_FREE)
		return -EINVAL;
	pthread_mutex_lock(&q->mu);
	while (r->state != REQ_DONE)
		pthread_cond_wait(&q->done, &q->mu);
	res = release(r);
	r->c->seconds += now_s() - t0;
	pthread_mutex_unlock(&q->mu);
	return res;
}

void bcoll_queue_drain(struct bcoll_comm *c)
{
	struct bcoll_queue *q = c->q;

	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	while (q->busy)
		pthread_cond_wait(&q->done, &q->mu);
	pthread_mutex_unlock(&q->mu);
}

void bcoll_queue_free(struct bcoll_comm *c)
{
	struct bcoll_queue *q = c->q;

	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	pthread_cond_signal(&q->work);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->work);
	pthread_cond_destroy(&q->done);
	free(q);
	c->q = NULL;
}

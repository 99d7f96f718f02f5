/* zero — ZeRO-1 (sharded AdamW moments) over libbcoll; see zero.h. Every
 * rank calls the same collectives in the same order; nothing is allocated
 * per step (zero_gather allocates one buffer per checkpoint on rank 0). */
#include "zero.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t zero_saved_bytes(uint64_t n_params, int size)
{
	uint64_t q = size > 0 ? n_params / size : n_params;

	return 8 * (n_params - (q + (n_params - q * size)));
}

int zero_init(struct zero *z, struct model *g, struct adamw *o, struct bcoll_comm *comm)
{
	size_t n = g->n_params, k;
	float *m, *v;

	memset(z, 0, sizeof(*z));
	z->size = bcoll_size(comm);
	z->rank = bcoll_rank(comm);
	z->q = n / z->size;
	z->tail = n - z->q * z->size;
	k = z->q + z->tail;
	m = malloc((k ? k : 1) * sizeof(float));
	v = malloc((k ? k : 1) * sizeof(float));
	if (!m || !v) {
		free(m);
		free(v);
		return -ENOMEM;
	}
	memcpy(m, o->m + z->rank * z->q, z->q * sizeof(float));
	memcpy(v, o->v + z->rank * z->q, z->q * sizeof(float));
	memcpy(m + z->q, o->m + z->size * z->q, z->tail * sizeof(float));
	memcpy(v + z->q, o->v + z->size * z->q, z->tail * sizeof(float));
	free(o->m);
	free(o->v);
	o->m = m;
	o->v = v;
	o->n = k;
	z->full_bytes = 8 * n;
	z->comm = comm;
	z->g = g;
	return 0;
}

int zero_reduce(struct zero *z)
{
	float *gr = z->g->grads;
	int r = 0;

	if (z->q)
		r = bcoll_reduce_scatter(z->comm, gr, gr + z->rank * z->q, z->q, BCOLL_F32,
					 BCOLL_AVG);
	if (r == 0 && z->tail)
		r = bcoll_allreduce(z->comm, gr + z->size * z->q, gr + z->size * z->q, z->tail,
				    BCOLL_F32, BCOLL_AVG);
	return r;
}

/* Sum of squares of n floats, in double. */
static double sumsq(const float *x, size_t n)
{
	double ss = 0;

#pragma omp parallel for reduction(+ : ss)
	for (size_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	return ss;
}

int zero_update(struct zero *z, struct adamw *o, float lr, float weight_decay, float clip,
		float *norm)
{
	size_t lo = z->rank * z->q, t0 = z->size * z->q;
	float *gr = z->g->grads;
	double ss;
	int r;

	/* the tail is identical everywhere: rank 0 counts it */
	ss = sumsq(gr + lo, z->q) + (z->rank == 0 ? sumsq(gr + t0, z->tail) : 0);
	r = bcoll_allreduce(z->comm, &ss, &ss, 1, BCOLL_F64, BCOLL_SUM);
	if (r < 0)
		return r;
	*norm = (float)sqrt(ss);
	adamw_begin(o, optim_clip_scale(*norm, clip));
	adamw_range(o, z->g, lo, lo + z->q, 0, lr, weight_decay);
	adamw_range(o, z->g, t0, t0 + z->tail, z->q, lr, weight_decay);
	if (!z->q)
		return 0;
	return bcoll_allgather(z->comm, z->g->params + lo, z->g->params, z->q, BCOLL_F32);
}

/* full[0..n) = the shards of every rank's sh, then this rank's tail. */
static int gather(struct zero *z, const float *sh, float *full)
{
	int r = 0;

	if (z->q)
		r = bcoll_allgather(z->comm, sh, full, z->q, BCOLL_F32);
	memcpy(full + z->size * z->q, sh + z->q, z->tail * sizeof(float));
	return r;
}

int zero_gather(struct zero *z, const struct adamw *o, struct adamw *full)
{
	size_t n = z->g->n_params;
	float *m = NULL;
	int r;

	*full = *o;
	full->m = full->v = NULL;
	full->n = n;
	if (z->rank == 0)
		m = malloc(n * sizeof(float));
	/* every rank takes part even when rank 0 is out of memory */
	r = gather(z, o->m, z->g->grads);
	if (m)
		memcpy(m, z->g->grads, n * sizeof(float));
	if (r == 0)
		r = gather(z, o->v, z->g->grads);
	if (r == 0 && z->rank == 0 && !m)
		r = -ENOMEM;
	if (r < 0) {
		free(m);
		return r;
	}
	full->m = m;
	full->v = z->g->grads;
	return 0;
}

void zero_gather_done(struct zero *z, struct adamw *full)
{
	(void)z;
	free(full->m);
	full->m = full->v = NULL;
}

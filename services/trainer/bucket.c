/* bucket — gradient buckets allreduced while the backward pass runs; see
 * bucket.h. Bucket order is the order backward completes them, and every
 * rank builds the same list, so every rank starts the same collectives in
 * the same order.
 */
#include "bucket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds the packed bucket of segments [seg0, nsegs), pack range [from, to). */
static void add(struct grad_buckets *gb, int layer, int seg0, size_t from, size_t to)
{
	if (to == from)
		return;
	if (gb->b)
		gb->b[gb->nb] = (struct bucket){.layer = layer, .seg0 = seg0,
						.nseg = gb->nsegs - seg0,
						.buf = gb->pack + from, .n = to - from};
	gb->nb++;
}

/* One pass over the layout in backward's order, layer L-1 down to the
 * whole-model tensors (-1): each layer's small slices packed into buckets
 * of at most gb->max floats, then its large slices in place. With gb->b
 * NULL it only counts. */
static void plan(struct grad_buckets *gb, size_t *npack)
{
	struct model *g = gb->g;
	size_t off[MODEL_MAX_TENSORS], o = 0, packed = 0;
	int L = g->d.L;

	for (int i = 0; i < MODEL_MAX_TENSORS; i++) {
		off[i] = o;
		o += g->sizes[i];
	}
	gb->nb = gb->nsegs = 0;
	for (int l = L - 1; l >= -1; l--) {
		for (int small = 1; small >= 0; small--) {
			int seg0 = gb->nsegs;
			size_t pack0 = packed;

			for (int i = 0; i < MODEL_MAX_TENSORS; i++) {
				int per = model_per_layer(g, i);
				size_t n = per ? g->sizes[i] / L : g->sizes[i];
				float *p = g->grads + off[i] + (per ? (size_t)l * n : 0);

				if (!n || per != (l >= 0) || (n < gb->max / 2) != small)
					continue;
				if (small && packed - pack0 + n > gb->max) {
					add(gb, l, seg0, pack0, packed);
					seg0 = gb->nsegs;
					pack0 = packed;
				}
				for (size_t k = 0; k < n; k += gb->max) {
					size_t m = n - k < gb->max ? n - k : gb->max;

					if (gb->b)
						gb->segs[gb->nsegs] = (struct bucket_seg){p + k, m};
					gb->nsegs++;
					if (small) {
						packed += m;
						continue;
					}
					if (gb->b)
						gb->b[gb->nb] = (struct bucket){
							.layer = l, .seg0 = gb->nsegs - 1, .nseg = 1,
							.buf = p + k, .n = m};
					gb->nb++;
				}
			}
			if (small)
				add(gb, l, seg0, pack0, packed);
		}
	}
	*npack = packed;
}

int bucket_init(struct grad_buckets *gb, struct model *g, struct bcoll_comm *comm)
{
	const char *e = getenv("BURSAR_BUCKET_FLOATS");
	long long v = e ? atoll(e) : 0;
	size_t npack;

	memset(gb, 0, sizeof(*gb));
	gb->g = g;
	gb->max = v >= BUCKET_MAX_LO && v <= BUCKET_MAX_HI ? (size_t)v : BUCKET_MAX;
	gb->comm = comm && bcoll_size(comm) > 1 ? comm : NULL;
	plan(gb, &npack);
	gb->b = calloc(gb->nb, sizeof(*gb->b));
	gb->segs = calloc(gb->nsegs, sizeof(*gb->segs));
	gb->pack = malloc((npack ? npack : 1) * sizeof(float));
	if (!gb->b || !gb->segs || !gb->pack) {
		bucket_free(gb);
		return -ENOMEM;
	}
	plan(gb, &npack);
	return 0;
}

void bucket_free(struct grad_buckets *gb)
{
	free(gb->b);
	free(gb->segs);
	free(gb->pack);
	memset(gb, 0, sizeof(*gb));
}

void bucket_arm(struct grad_buckets *gb, const float *acc, float inv)
{
	gb->next = gb->waited = 0;
	gb->err = 0;
	gb->errmsg[0] = 0;
	gb->acc = acc;
	gb->inv = inv;
	gb->g->grad_ready = bucket_ready;
	gb->g->grad_ready_ctx = gb;
}

static void fail(struct grad_buckets *gb, int r)
{
	if (gb->err)
		return;
	gb->err = r;
	snprintf(gb->errmsg, sizeof(gb->errmsg), "%s", bcoll_last_error(gb->comm));
}

/* Waits for bucket i and copies a packed one back into its segments. */
static void finish(struct grad_buckets *gb, int i)
{
	struct bucket *b = &gb->b[i];
	const float *src = b->buf;
	int r;

	if (b->req) {
		r = bcoll_wait(b->req);
		b->req = NULL;
		if (r < 0)
			fail(gb, r);
	}
	if (b->nseg == 1 && b->buf == gb->segs[b->seg0].p)
		return;
	for (int s = b->seg0; s < b->seg0 + b->nseg; s++) {
		memcpy(gb->segs[s].p, src, gb->segs[s].n * sizeof(float));
		src += gb->segs[s].n;
	}
}

/* Folds the accumulated micro-batches into bucket i (grads = (acc + grads)
 * * inv), packs it when it has several segments, and starts its allreduce. */
static void start(struct grad_buckets *gb, int i)
{
	struct bucket *b = &gb->b[i];
	float *dst = b->buf, inv = gb->inv;
	int r;

	for (int s = b->seg0; s < b->seg0 + b->nseg; s++) {
		struct bucket_seg *sg = &gb->segs[s];
		const float *a = gb->acc ? gb->acc + (sg->p - gb->g->grads) : NULL;
		float *p = sg->p;
		size_t n = sg->n;

		if (a) {
#pragma omp parallel for if (n > 65536)
			for (size_t k = 0; k < n; k++)
				dst[k] = (a[k] + p[k]) * inv;
		} else if (dst != p) {
			memcpy(dst, p, n * sizeof(float));
		}
		dst += n;
	}
	if (!gb->comm || gb->err)
		return;
	for (;;) {
		r = bcoll_iallreduce(gb->comm, b->buf, b->buf, b->n, BCOLL_F32, BCOLL_AVG, &b->req);
		if (r != -EAGAIN || gb->waited >= i)
			break;
		finish(gb, gb->waited++);
	}
	if (r < 0) {
		b->req = NULL;
		fail(gb, r);
	}
}

void bucket_ready(void *ctx, int layer)
{
	struct grad_buckets *gb = ctx;

	while (gb->next < gb->nb && (layer < 0 || gb->b[gb->next].layer >= layer))
		start(gb, gb->next++);
}

int bucket_wait_all(struct grad_buckets *gb)
{
	bucket_ready(gb, -1);
	while (gb->waited < gb->nb)
		finish(gb, gb->waited++);
	gb->g->grad_ready = NULL;
	gb->g->grad_ready_ctx = NULL;
	return gb->err;
}

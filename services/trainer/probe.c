/* probe — how fast this node's matmul kernels run, for admission's pricing
 * (`bursar-train --probe`) and the MFU denominator of each step line. One
 * thread, cblas_sgemm on matrices shaped like a small GPT-2's MLP. */
#include "trainer.h"

#include <cblas.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double train_probe_flops(double seconds)
{
	const int M = 512, N = 1024, K = 256;
	float *a = calloc((size_t)M * K, 4), *b = calloc((size_t)K * N, 4),
	      *c = calloc((size_t)M * N, 4);
	int threads = openblas_get_num_threads(), iters = 0;
	double t0, dt, best = 0;

	if (!a || !b || !c)
		goto out;
	for (int i = 0; i < M * K; i++)
		a[i] = (float)(i % 7) * 0.01f;
	for (int i = 0; i < K * N; i++)
		b[i] = (float)(i % 5) * 0.01f;
	openblas_set_num_threads(1);
	/* warm up caches and the library once, then average over the window */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, a, K, b, N, 0, c, N);
	t0 = now_s();
	do {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, a, K, b, N, 0, c,
			    N);
		iters++;
		dt = now_s() - t0;
	} while (dt < seconds || iters < 3);
	best = 2.0 * M * N * K * iters / dt;
	openblas_set_num_threads(threads);
out:
	free(a);
	free(b);
	free(c);
	return best;
}

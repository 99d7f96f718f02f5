/* probe — how fast this node's matmul kernels run, for admission's pricing
 * (`bursar-train --probe [--device cpu|cuda]`) and the MFU denominator of
 * each step line. CPU: one thread, cblas_sgemm on matrices shaped like a
 * small GPT-2's MLP. CUDA: the backend's sustained bf16 matmul rate of the
 * one GPU the rank sees. */
#include "trainer.h"
#include "cuda/gpu.h"
#include "log.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* `--probe` with the --device found anywhere in argv: prints {"flops": X};
 * 2 with a sentence on stderr when that device cannot be probed. */
int train_probe_main(int argc, char **argv)
{
	const char *device = "cpu";
	const struct gpu_ops *ops;
	char err[512] = "";
	double flops = 0;

	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--device"))
			device = argv[i + 1];
	if (!strcmp(device, "cpu")) {
		printf("{\"flops\": %.6g}\n", train_probe_flops(0.3));
		return 0;
	}
	if (strcmp(device, "cuda")) {
		log_err("--probe --device '%s': the probe measures 'cpu' or 'cuda'", device);
		return 2;
	}
	ops = gpu_load(err, sizeof(err));
	if (!ops) {
		log_err("cannot probe the GPU: %s; probe the CPU with --device cpu", err);
		return 2;
	}
	if (ops->probe_flops(1.0, &flops, err, sizeof(err)) < 0 || !(flops > 0)) {
		log_err("the GPU matmul probe failed: %s", err[0] ? err : "it measured no FLOP/s");
		return 2;
	}
	printf("{\"flops\": %.6g}\n", flops);
	return 0;
}

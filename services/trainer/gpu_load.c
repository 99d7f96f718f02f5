/* gpu_load — finds and loads the CUDA backend (cuda/, built by nvcc into
 * build/lib/libbursar-cuda.so) at run time, so bursar-train itself needs no
 * CUDA library and runs on machines without a GPU. Also fills the backend's
 * shape struct from a CPU model (the device mirrors its parameter layout).
 */
#include "cuda/gpu.h"
#include "model.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ../lib/libbursar-cuda.so beside the running executable */
static int default_path(char *out, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0)
		return -errno;
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (!slash)
		return -EINVAL;
	*slash = 0;
	if ((size_t)snprintf(out, len, "%s/../lib/libbursar-cuda.so", exe) >= len)
		return -ENAMETOOLONG;
	return 0;
}

const struct gpu_ops *gpu_load(char *err, size_t errlen)
{
	static const struct gpu_ops *ops;
	static char saved[256];
	const struct gpu_ops *(*get)(void);
	const char *env = getenv("BURSAR_CUDA_LIB");
	char path[PATH_MAX];
	struct gpu_info info;
	void *h;

	if (ops || saved[0]) {
		if (!ops)
			snprintf(err, errlen, "%s", saved);
		return ops;
	}
	if (env && *env)
		snprintf(path, sizeof(path), "%s", env);
	else if (default_path(path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "libbursar-cuda.so");
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(saved, sizeof(saved), "the CUDA backend is not available (%s)", dlerror());
		goto fail;
	}
	get = (const struct gpu_ops *(*)(void))dlsym(h, "bursar_gpu_ops");
	if (!get || !get() || get()->abi != GPU_ABI_VERSION) {
		snprintf(saved, sizeof(saved), "%s is not a CUDA backend of this version", path);
		dlclose(h);
		goto fail;
	}
	if (get()->probe(&info, saved, sizeof(saved)) < 0) {
		dlclose(h);
		goto fail;
	}
	ops = get();
	return ops;
fail:
	snprintf(err, errlen, "%s", saved);
	return NULL;
}

void gpu_dims_of(const struct model *g, struct gpu_dims *d)
{
	memset(d, 0, sizeof(*d));
	d->arch = g->d.arch == ARCH_GPT2 ? 0 : 1;
	d->L = g->d.L;
	d->NH = g->d.NH;
	d->C = g->d.C;
	d->V = g->d.V;
	d->maxT = g->d.maxT;
	d->eps = g->d.eps;
	d->KVH = g->d.KVH;
	d->hd = g->d.hd;
	d->F = g->d.F;
	d->tied = g->d.tied;
	d->rope_cos = g->rope_cos;
	d->rope_sin = g->rope_sin;
	d->rope_T = g->T;
	for (int i = 0; i < GPU_MAX_TENSORS && i < MODEL_MAX_TENSORS; i++) {
		d->sizes[i] = g->sizes[i];
		d->decays[i] = model_decays(g, i);
	}
}

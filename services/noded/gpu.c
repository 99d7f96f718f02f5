/* gpu — the node's NVIDIA GPUs, seen through NVML, and its node class.
 *
 * libnvidia-ml.so.1 is opened at run time (no NVML header or library is
 * needed to build): a node without it, or where NVML finds no device, is a
 * CPU node. At start the agent takes an inventory (name, UUID, memory) of at
 * most NODED_MAX_GPUS devices; afterwards it only reads their cumulative
 * energy counters for metering. The node class (what the ledger prices a
 * rank-hour at) defaults to "cpu", or to the first GPU's model. This file
 * never exits and never fails the agent's start for want of a GPU.
 */
#include "noded.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The few NVML declarations used here (nvml.h, API version 2+). */
typedef int nvml_return_t; /* nvmlReturn_t: 0 is NVML_SUCCESS */
typedef struct nvml_device_st *nvml_device_t;
struct nvml_memory {
	unsigned long long total, free, used; /* nvmlMemory_t, bytes */
};
typedef nvml_return_t (*nvml_init_fn)(void);
typedef nvml_return_t (*nvml_shutdown_fn)(void);
typedef nvml_return_t (*nvml_count_fn)(unsigned int *count);
typedef nvml_return_t (*nvml_handle_fn)(unsigned int index, nvml_device_t *dev);
typedef nvml_return_t (*nvml_string_fn)(nvml_device_t dev, char *buf, unsigned int len);
typedef nvml_return_t (*nvml_memory_fn)(nvml_device_t dev, struct nvml_memory *mem);
typedef nvml_return_t (*nvml_energy_fn)(nvml_device_t dev, unsigned long long *mj);
typedef nvml_return_t (*nvml_uint_fn)(nvml_device_t dev, unsigned int *v);
typedef const char *(*nvml_error_fn)(nvml_return_t r);

#define NVML_NAME_LEN 96 /* NVML_DEVICE_NAME_V2_BUFFER_SIZE, NVML_DEVICE_UUID_V2_BUFFER_SIZE */

static struct {
	void *lib;
	int initialized;
	nvml_shutdown_fn shutdown;
	nvml_handle_fn handle;
	nvml_energy_fn energy;
	nvml_error_fn error;
} nvml;

int noded_valid_class(const char *s)
{
	size_t len = strlen(s);

	if (len < 1 || len > NODED_CLASS_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_' ||
		      s[i] == '.' || s[i] == '-'))
			return 0;
	return 1;
}

/* "NVIDIA H100 80GB HBM3" → h100, "NVIDIA A100-SXM4-40GB" → a100, "NVIDIA
 * GeForce RTX 4090" → rtx4090, "Tesla V100-SXM2-16GB" → v100: the vendor and
 * brand words dropped, the first word with a digit is the model, a series
 * word (RTX, GTX, Titan) joined to the word after it. Form factors and memory
 * sizes that follow are not part of the class. */
void gpu_class_from_name(const char *name, char *out, size_t outlen)
{
	static const char *const skip[] = {"nvidia", "geforce", "tesla", "quadro"};
	static const char *const series[] = {"rtx", "gtx", "titan"};
	char words[8][NVML_NAME_LEN], cls[NODED_CLASS_MAX + 1] = "";
	int nw = 0;
	const char *p = name;

	while (*p && nw < (int)ARRAY_SIZE(words)) {
		size_t k = 0;

		while (*p == ' ' || *p == '-' || *p == '_')
			p++;
		while (*p && *p != ' ' && *p != '-' && *p != '_') {
			if (k + 1 < sizeof(words[0]) && isalnum((unsigned char)*p))
				words[nw][k++] = (char)tolower((unsigned char)*p);
			p++;
		}
		words[nw][k] = 0;
		if (k)
			nw++;
	}
	for (int i = 0; i < nw && !cls[0]; i++) {
		int skipped = 0, is_series = 0;

		for (size_t s = 0; s < ARRAY_SIZE(skip); s++)
			skipped |= !strcmp(words[i], skip[s]);
		for (size_t s = 0; s < ARRAY_SIZE(series); s++)
			is_series |= !strcmp(words[i], series[s]);
		if (skipped)
			continue;
		if (is_series && i + 1 < nw)
			snprintf(cls, sizeof(cls), "%.16s%.16s", words[i], words[i + 1]);
		else if (strpbrk(words[i], "0123456789"))
			snprintf(cls, sizeof(cls), "%.32s", words[i]);
	}
	snprintf(out, outlen, "%s", cls[0] ? cls : "gpu");
}

static void *nvml_sym(const char *name)
{
	return dlsym(nvml.lib, name);
}

static const char *nvml_strerror(nvml_return_t r)
{
	const char *s = nvml.error ? nvml.error(r) : NULL;

	return s ? s : "unknown NVML error";
}

/* Copies an NVML string into dst, printable ASCII only (it goes into JSON
 * and logs as is). */
static void copy_clean(char *dst, size_t len, const char *src)
{
	size_t k = 0;

	for (; src[k] && k + 1 < len; k++)
		dst[k] = src[k] >= 0x20 && src[k] < 0x7f && src[k] != '"' && src[k] != '\\' ?
				 src[k] : '?';
	dst[k] = 0;
}

/* Fills n->gpus from NVML; 0 GPUs with why set when there is none to use. */
static int gpu_inventory(struct noded *n, char *why, size_t whylen)
{
	nvml_init_fn init;
	nvml_count_fn count;
	nvml_string_fn get_name, get_uuid;
	nvml_memory_fn get_mem;
	nvml_uint_fn get_limit;
	unsigned int cnt = 0;
	nvml_return_t r;

	nvml.lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!nvml.lib)
		return snprintf(why, whylen, "libnvidia-ml.so.1 not found"), -ENOENT;
	init = (nvml_init_fn)nvml_sym("nvmlInit_v2");
	nvml.shutdown = (nvml_shutdown_fn)nvml_sym("nvmlShutdown");
	count = (nvml_count_fn)nvml_sym("nvmlDeviceGetCount_v2");
	nvml.handle = (nvml_handle_fn)nvml_sym("nvmlDeviceGetHandleByIndex_v2");
	get_name = (nvml_string_fn)nvml_sym("nvmlDeviceGetName");
	get_uuid = (nvml_string_fn)nvml_sym("nvmlDeviceGetUUID");
	get_mem = (nvml_memory_fn)nvml_sym("nvmlDeviceGetMemoryInfo");
	nvml.energy = (nvml_energy_fn)nvml_sym("nvmlDeviceGetTotalEnergyConsumption");
	nvml.error = (nvml_error_fn)nvml_sym("nvmlErrorString");
	get_limit = (nvml_uint_fn)nvml_sym("nvmlDeviceGetEnforcedPowerLimit"); /* mW */
	if (!init || !nvml.shutdown || !count || !nvml.handle || !get_name || !get_uuid ||
	    !get_mem)
		return snprintf(why, whylen, "libnvidia-ml.so.1 lacks the NVML functions it needs "
				"(driver too old)"), -ENOSYS;
	r = init();
	if (r != 0)
		return snprintf(why, whylen, "NVML did not start: %s", nvml_strerror(r)), -EIO;
	nvml.initialized = 1;
	r = count(&cnt);
	if (r != 0)
		return snprintf(why, whylen, "NVML cannot count devices: %s", nvml_strerror(r)),
		       -EIO;
	if (cnt == 0)
		return snprintf(why, whylen, "NVML found no device"), -ENODEV;
	if (cnt > NODED_MAX_GPUS) {
		log_warn("NVML reports %u GPUs; using the first %d", cnt, NODED_MAX_GPUS);
		cnt = NODED_MAX_GPUS;
	}
	for (unsigned int i = 0; i < cnt; i++) {
		struct noded_gpu *g = &n->gpus[n->n_gpus];
		char name[NVML_NAME_LEN + 1] = "", uuid[NVML_NAME_LEN + 1] = "";
		struct nvml_memory mem = {0};
		unsigned int limit_mw = 0;
		nvml_device_t dev;

		r = nvml.handle(i, &dev);
		if (r != 0) {
			log_warn("cannot use GPU %u: %s; it gets no ranks", i, nvml_strerror(r));
			continue;
		}
		if (get_name(dev, name, NVML_NAME_LEN) != 0)
			snprintf(name, sizeof(name), "unknown");
		if (get_uuid(dev, uuid, NVML_NAME_LEN) != 0)
			uuid[0] = 0;
		name[NVML_NAME_LEN] = uuid[NVML_NAME_LEN] = 0;
		if (get_mem(dev, &mem) != 0)
			mem.total = 0; /* unknown: left out of the heartbeat */
		g->index = (int)i;
		copy_clean(g->name, sizeof(g->name), name);
		copy_clean(g->uuid, sizeof(g->uuid), uuid);
		g->mem_bytes = mem.total;
		g->power_w = get_limit && get_limit(dev, &limit_mw) == 0 && limit_mw < 100000000u ?
				     limit_mw / 1000.0 : 0;
		g->dev = dev;
		n->n_gpus++;
	}
	if (n->n_gpus == 0)
		return snprintf(why, whylen, "NVML could open none of its %u devices", cnt),
		       -ENODEV;
	return 0;
}

int gpu_setup(struct noded *n, const char *class_opt)
{
	char why[256];

	for (int i = 0; i < NODED_MAX_GPUS; i++)
		n->gpu_holder[i] = NULL;
	n->n_gpus = 0;
	if (n->cpu_only || gpu_inventory(n, why, sizeof(why)) < 0) {
		gpu_close(n);
		n->n_gpus = 0;
		snprintf(n->node_class, sizeof(n->node_class), "%s", class_opt ? class_opt : "cpu");
		n->watts_per_slot = n->slots > 0 ? meter_rapl_limit_w() / n->slots : 0;
		if (n->cpu_only)
			log_info("a CPU node by --cpu-only: this node offers %d CPU slots (class %s)",
				 n->slots, n->node_class);
		else
			log_info("no NVIDIA GPU: %s; this node offers %d CPU slots (class %s)", why,
				 n->slots, n->node_class);
		return 0;
	}
	if (n->slots_given && n->slots > n->n_gpus) {
		log_err("--slots %d is more than the %d GPUs of this node: a GPU node runs one rank "
			"per GPU; give --slots %d or less", n->slots, n->n_gpus, n->n_gpus);
		return -EINVAL;
	}
	if (!n->slots_given)
		n->slots = n->n_gpus;
	for (int i = 1; i < n->n_gpus; i++)
		if (strcmp(n->gpus[i].name, n->gpus[0].name)) {
			log_warn("this node mixes GPU models ('%s' is GPU %d, '%s' GPU %d); its "
				 "class comes from GPU %d and every rank is priced at it",
				 n->gpus[0].name, n->gpus[0].index, n->gpus[i].name,
				 n->gpus[i].index, n->gpus[0].index);
			break;
		}
	if (class_opt)
		snprintf(n->node_class, sizeof(n->node_class), "%s", class_opt);
	else
		gpu_class_from_name(n->gpus[0].name, n->node_class, sizeof(n->node_class));
	if (!nvml.energy)
		log_warn("NVML has no energy counter here; GPU energy is not metered");
	n->watts_per_slot = 0;
	for (int i = 0; i < n->n_gpus; i++)
		if (n->gpus[i].power_w > n->watts_per_slot)
			n->watts_per_slot = n->gpus[i].power_w;
	log_info("%d NVIDIA GPUs (%s, ...); this node offers %d GPU slots (class %s)", n->n_gpus,
		 n->gpus[0].name, n->slots, n->node_class);
	return 0;
}

void gpu_close(struct noded *n)
{
	if (nvml.initialized && nvml.shutdown)
		nvml.shutdown();
	nvml.initialized = 0;
	if (nvml.lib)
		dlclose(nvml.lib);
	memset(&nvml, 0, sizeof(nvml));
	(void)n;
}

int gpu_energy_uj(struct noded *n, int gpu, uint64_t *uj)
{
	unsigned long long mj = 0;

	for (int i = 0; i < n->n_gpus; i++) {
		if (n->gpus[i].index != gpu)
			continue;
		if (!nvml.energy || nvml.energy(n->gpus[i].dev, &mj) != 0)
			return -EIO;
		*uj = (uint64_t)mj * 1000;
		return 0;
	}
	return -ENODEV;
}

int gpu_take(struct noded *n, struct rank *rk)
{
	for (int i = 0; i < n->n_gpus; i++)
		if (!n->gpu_holder[i]) {
			n->gpu_holder[i] = rk;
			rk->gpu = n->gpus[i].index;
			return 0;
		}
	return -EBUSY;
}

void gpu_release(struct noded *n, struct rank *rk)
{
	for (int i = 0; n && i < n->n_gpus; i++)
		if (n->gpu_holder[i] == rk)
			n->gpu_holder[i] = NULL;
}


json_t *gpu_json(struct noded *n)
{
	json_t *a = json_array();

	for (int i = 0; a && i < n->n_gpus; i++) {
		json_t *g = json_pack("{s:i, s:s, s:s, s:f}", "index", n->gpus[i].index, "name",
				      n->gpus[i].name, "uuid", n->gpus[i].uuid, "power_limit_w",
				      n->gpus[i].power_w);

		/* admitd takes 1 MiB..1e15 or nothing */
		if (g && n->gpus[i].mem_bytes >= (1u << 20))
			json_object_set_new(g, "mem_bytes",
					    json_integer((json_int_t)n->gpus[i].mem_bytes));
		json_array_append_new(a, g);
	}
	return a;
}

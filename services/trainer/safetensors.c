/* safetensors — the checkpoint format of bursar-train.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets"}}, then
 * the raw tensors. Writes stream to a temp file and rename, so a crash never
 * leaves a half checkpoint under the real name. Reads trust nothing.
 */
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* temp file beside path, fsync, rename, fsync the directory */
static int write_atomic(const char *path, const void *head, size_t hlen, const struct model *g,
			char *err, size_t errlen)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	int fd, r, dfd;

	snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return util_fail(err, errlen, -errno, "cannot create '%s': %s", tmp, strerror(errno));
	r = write_all(fd, head, hlen);
	for (int i = 0; g && r == 0 && i < model_n_named(g); i++) {
		struct model_tensor_ref ref;
		float *p = model_named(g, i, &ref);
		size_t n = (size_t)ref.shape[0] * (ref.ndim == 2 ? (size_t)ref.shape[1] : 1);
		r = write_all(fd, p, n * 4);
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return util_fail(err, errlen, r, "cannot write '%s': %s", path, strerror(-r));
	}
	snprintf(dir, sizeof(dir), "%s", path);
	dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int st_save(const char *path, const struct model *g, char *err, size_t errlen)
{
	json_t *h = json_object(), *meta = json_pack("{s:s}", "format", "pt");
	size_t off = 0, len, pad;
	char *s, *buf;
	int r;

	json_object_set_new(h, "__metadata__", meta);
	for (int i = 0; i < model_n_named(g); i++) {
		struct model_tensor_ref ref;
		json_t *shape = json_array();
		size_t n = 1;

		model_named(g, i, &ref);
		for (int k = 0; k < ref.ndim; k++) {
			json_array_append_new(shape, json_integer(ref.shape[k]));
			n *= (size_t)ref.shape[k];
		}
		json_object_set_new(h, ref.name,
				    json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape,
					      "data_offsets", (json_int_t)off,
					      (json_int_t)(off + n * 4)));
		off += n * 4;
	}
	s = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(h);
	if (!s)
		return util_fail(err, errlen, -ENOMEM, "out of memory building the safetensors header");
	len = strlen(s);
	pad = (8 - len % 8) % 8; /* keep tensor data 8-byte aligned, as HF does */
	buf = malloc(8 + len + pad);
	if (!buf) {
		free(s);
		return util_fail(err, errlen, -ENOMEM, "out of memory");
	}
	uint64_t n = len + pad;
	for (int i = 0; i < 8; i++)
		buf[i] = (char)(n >> (8 * i));
	memcpy(buf + 8, s, len);
	memset(buf + 8 + len, ' ', pad);
	free(s);
	r = write_atomic(path, buf, 8 + len + pad, g, err, errlen);
	free(buf);
	return r;
}

/* Matches an HF name (optionally "transformer."-prefixed) to our tensor. */
static int find_named(const struct model *g, const char *name)
{
	if (!strncmp(name, "transformer.", 12))
		name += 12;
	for (int i = 0; i < model_n_named(g); i++) {
		struct model_tensor_ref ref;
		model_named(g, i, &ref);
		if (!strcmp(ref.name, name))
			return i;
	}
	return -1;
}

/* Buffers and tied weights HF writes that carry nothing to train. */
static int ignorable(const struct model *g, const char *name)
{
	size_t l = strlen(name);

	return (g->d.tied && !strcmp(name, "lm_head.weight")) ||
	       (l > 10 && !strcmp(name + l - 10, ".attn.bias")) ||
	       (l > 17 && !strcmp(name + l - 17, ".attn.masked_bias"));
}

/* IEEE half to float, subnormals and infinities included. */
static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
	float f;

	if (e == 0x1f)
		bits = sign | 0x7f800000u | (m << 13);
	else if (e)
		bits = sign | ((e + 112) << 23) | (m << 13);
	else {
		f = ldexpf((float)m, -24);
		return sign ? -f : f;
	}
	memcpy(&f, &bits, 4);
	return f;
}

/* Widens n 2-byte values stored in the upper half of p to floats, in place. */
static void widen(float *p, size_t n, int bf16)
{
	const unsigned char *raw = (const unsigned char *)p + 2 * n;

	for (size_t i = 0; i < n; i++) {
		uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
		uint32_t bits = (uint32_t)h << 16;
		float f;

		if (bf16)
			memcpy(&f, &bits, 4);
		else
			f = half_to_float(h);
		p[i] = f;
	}
}

/* One tensor of a header check_layout() has passed: its offsets hold its
 * bytes inside the data; here its dtype and shape must be what g needs. */
static int load_tensor(int fd, const struct model *g, int i, json_t *t, const char *name,
		       uint64_t data_start, const char *fname, char *err, size_t errlen)
{
	struct model_tensor_ref ref;
	float *p = model_named(g, i, &ref);
	json_t *shape = json_object_get(t, "shape"), *offs = json_object_get(t, "data_offsets");
	const char *dt = json_string_value(json_object_get(t, "dtype"));
	uint64_t n = 1, a = (uint64_t)json_integer_value(json_array_get(offs, 0));
	ssize_t got;

	int es = !dt ? 0 : !strcmp(dt, "F32") ? 4 : !strcmp(dt, "BF16") || !strcmp(dt, "F16") ? 2 : 0;

	if (!es)
		return util_fail(err, errlen, -EINVAL, "%s: tensor '%s' has dtype %s, "
			    "supported: F32, BF16, F16", fname, name, dt ? dt : "(missing)");
	if (!json_is_array(shape) || json_array_size(shape) != (size_t)ref.ndim)
		return util_fail(err, errlen, -EINVAL, "%s: tensor '%s' must have %d "
			    "dimensions", fname, name, ref.ndim);
	for (int k = 0; k < ref.ndim; k++) {
		json_t *x = json_array_get(shape, k);
		if (!json_is_integer(x) || json_integer_value(x) != ref.shape[k])
			return util_fail(err, errlen, -EINVAL, "%s: tensor '%s' dimension "
				    "%d is %lld, the config needs %lld", fname, name, k,
				    json_is_integer(x) ? (long long)json_integer_value(x) : -1LL,
				    (long long)ref.shape[k]);
		n *= (uint64_t)ref.shape[k];
	}
	got = pread(fd, (char *)p + (4 - es) * n, n * es, (off_t)(data_start + a));
	if (got != (ssize_t)(n * es))
		return util_fail(err, errlen, -EIO, "%s: short read of tensor '%s'", fname, name);
	if (es == 2)
		widen(p, n, !strcmp(dt, "BF16"));
	/* a NaN or infinity would train to NaN and be written back out */
	for (uint64_t k = 0; k < n; k++)
		if (!isfinite(p[k]))
			return util_fail(err, errlen, -EINVAL, "%s: tensor '%s' holds %s at element "
					 "%llu", fname, name, isnan(p[k]) ? "NaN" : "an infinity",
					 (unsigned long long)k);
	return 0;
}

/* The bytes of a safetensors dtype, 0 for one the format does not have. */
static int dtype_size(const char *dt)
{
	static const struct {
		const char *name;
		int size;
	} d[] = {{"F64", 8}, {"I64", 8}, {"U64", 8}, {"F32", 4}, {"I32", 4}, {"U32", 4},
		 {"F16", 2}, {"BF16", 2}, {"I16", 2}, {"U16", 2}, {"I8", 1}, {"U8", 1},
		 {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};

	for (size_t i = 0; dt && i < sizeof(d) / sizeof(d[0]); i++)
		if (!strcmp(dt, d[i].name))
			return d[i].size;
	return 0;
}

struct span {
	uint64_t a, b;
	const char *name;
};

static int span_cmp(const void *x, const void *y)
{
	const struct span *p = x, *q = y;

	return p->a < q->a ? -1 : p->a > q->a ? 1 : p->b < q->b ? -1 : p->b > q->b;
}

/* What the safetensors format itself requires of a header, for every entry
 * (those we ignore too), as its reference reader checks: __metadata__ an
 * object of strings; each tensor a known dtype, a shape of non-negative
 * integers and data_offsets that hold exactly its bytes; the tensors' bytes
 * tile the data region with no gap, overlap or trailing bytes. */
static int check_layout(json_t *h, uint64_t data_len, const char *fname, char *err,
			size_t errlen)
{
	size_t n = 0, cap = json_object_size(h);
	struct span *sp = calloc(cap ? cap : 1, sizeof(*sp));
	uint64_t end = 0;
	const char *name;
	json_t *t;
	int r = 0;

	if (!sp)
		return util_fail(err, errlen, -ENOMEM, "out of memory");
	json_object_foreach(h, name, t) {
		json_t *shape = json_object_get(t, "shape"), *offs = json_object_get(t, "data_offsets");
		int es = dtype_size(json_string_value(json_object_get(t, "dtype")));
		uint64_t count = 1, a, b;
		size_t k;
		json_t *x;

		if (!strcmp(name, "__metadata__")) {
			const char *mk;
			json_t *mv;

			if (!json_is_object(t)) {
				r = util_fail(err, errlen, -EINVAL, "%s: __metadata__ must be an object "
					      "of strings", fname);
				goto out;
			}
			json_object_foreach(t, mk, mv)
				if (!json_is_string(mv)) {
					r = util_fail(err, errlen, -EINVAL, "%s: __metadata__ '%.80s' "
						      "is not a string", fname, mk);
					goto out;
				}
			continue;
		}
		if (!json_is_object(t) || !es || !json_is_array(shape) || !json_is_array(offs) ||
		    json_array_size(offs) != 2 || !json_is_integer(json_array_get(offs, 0)) ||
		    !json_is_integer(json_array_get(offs, 1)) ||
		    json_integer_value(json_array_get(offs, 0)) < 0 ||
		    json_integer_value(json_array_get(offs, 1)) < 0) {
			r = util_fail(err, errlen, -EINVAL, "%s: entry '%.80s' is not a tensor (a "
				      "safetensors dtype, a shape and two data_offsets)", fname, name);
			goto out;
		}
		json_array_foreach(shape, k, x) {
			if (!json_is_integer(x) || json_integer_value(x) < 0 ||
			    (json_integer_value(x) > 0 &&
			     count > (UINT64_MAX / es) / (uint64_t)json_integer_value(x))) {
				r = util_fail(err, errlen, -EINVAL, "%s: tensor '%.80s' has a bad shape",
					      fname, name);
				goto out;
			}
			count *= (uint64_t)json_integer_value(x);
		}
		a = (uint64_t)json_integer_value(json_array_get(offs, 0));
		b = (uint64_t)json_integer_value(json_array_get(offs, 1));
		if (b < a || b - a != count * es || b > data_len) {
			r = util_fail(err, errlen, -EINVAL, "%s: tensor '%.80s' of dtype %s: "
				      "data_offsets [%llu, %llu] do not hold its %llu bytes inside the "
				      "%llu data bytes", fname, name,
				      json_string_value(json_object_get(t, "dtype")),
				      (unsigned long long)a, (unsigned long long)b,
				      (unsigned long long)(count * es), (unsigned long long)data_len);
			goto out;
		}
		sp[n++] = (struct span){a, b, name};
	}
	qsort(sp, n, sizeof(*sp), span_cmp);
	for (size_t i = 0; i < n; i++) {
		if (sp[i].a != end) {
			r = util_fail(err, errlen, -EINVAL, "%s: tensor '%.80s' starts at data byte "
				      "%llu, where %llu was expected (tensors overlap or leave a gap)",
				      fname, sp[i].name, (unsigned long long)sp[i].a,
				      (unsigned long long)end);
			goto out;
		}
		end = sp[i].b;
	}
	if (end != data_len)
		r = util_fail(err, errlen, -EINVAL, "%s: %llu bytes after the last tensor's data "
			      "(the tensors hold %llu of the %llu data bytes)", fname,
			      (unsigned long long)(data_len - end), (unsigned long long)end,
			      (unsigned long long)data_len);
out:
	free(sp);
	return r;
}

/* Loads the tensors of one file into g, marking them in seen. With map
 * (a shard of an index), every tensor must be mapped to `shard` there. */
static int load_file(const char *path, struct model *g, char *seen, int *nfound, json_t *map,
		     const char *shard, char *err, size_t errlen)
{
	unsigned char lenbuf[8];
	char *head = NULL;
	uint64_t hlen = 0;
	struct stat st;
	json_error_t je;
	json_t *h = NULL, *t;
	const char *name, *fname = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	int fd, r = 0;

	/* O_NONBLOCK: a FIFO in the bundle is refused, not waited on */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return util_fail(err, errlen, -errno, "cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = util_fail(err, errlen, -EINVAL, "'%s' is not a regular file", path);
		goto out;
	}
	if (st.st_size < 8 || pread(fd, lenbuf, 8, 0) != 8) {
		r = util_fail(err, errlen, -EINVAL, "%s is truncated (%lld bytes)", fname,
			      (long long)st.st_size);
		goto out;
	}
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | lenbuf[i];
	if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > (uint64_t)st.st_size - 8) {
		r = util_fail(err, errlen, -EINVAL, "%s: header length %llu is invalid "
			 "(file %lld bytes, limit %u)", fname, (unsigned long long)hlen,
			 (long long)st.st_size, ST_MAX_HEADER);
		goto out;
	}
	head = malloc(hlen);
	if (!head) {
		r = util_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	if (pread(fd, head, hlen, 8) != (ssize_t)hlen) {
		r = util_fail(err, errlen, -EIO, "%s: short read of the header", fname);
		goto out;
	}
	h = json_loadb(head, hlen, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(h)) {
		r = util_fail(err, errlen, -EINVAL, "%s: the header is not a JSON object "
			 "(%s)", fname, h ? "wrong type" : je.text);
		goto out;
	}
	r = check_layout(h, (uint64_t)st.st_size - 8 - hlen, fname, err, errlen);
	if (r < 0)
		goto out;
	json_object_foreach(h, name, t) {
		int i;

		if (!strcmp(name, "__metadata__"))
			continue;
		if (map && strcmp(json_string_value(json_object_get(map, name)) ?: "", shard)) {
			r = util_fail(err, errlen, -EINVAL, "%s: tensor '%.80s' is not "
				      "mapped to this shard by the index's weight_map", fname, name);
			goto out;
		}
		i = find_named(g, name);
		if (i < 0 && ignorable(g, name))
			continue;
		if (i < 0 || !json_is_object(t)) {
			r = util_fail(err, errlen, -EINVAL, "%s: unexpected tensor '%.80s' "
				 "for a %s with %d layers", fname, name,
				 g->d.arch == ARCH_GPT2 ? "GPT-2" : "Llama", g->d.L);
			goto out;
		}
		if (seen[i]) {
			r = util_fail(err, errlen, -EINVAL, "%s: tensor '%.80s' appears "
				 "twice", fname, name);
			goto out;
		}
		r = load_tensor(fd, g, i, t, name, 8 + hlen, fname, err, errlen);
		if (r < 0)
			goto out;
		seen[i] = 1;
		(*nfound)++;
	}
out:
	json_decref(h);
	free(head);
	close(fd);
	return r;
}

/* The first tensor of g not in seen, as an error; 0 when none is missing. */
static int check_missing(const struct model *g, const char *seen, int nfound, const char *what,
			 char *err, size_t errlen)
{
	for (int i = 0, n = model_n_named(g); nfound < n && i < n; i++)
		if (!seen[i]) {
			struct model_tensor_ref ref;
			model_named(g, i, &ref);
			return util_fail(err, errlen, -EINVAL, "%s: tensor '%s' is missing", what,
					 ref.name);
		}
	return 0;
}

int st_load(const char *path, struct model *g, char *err, size_t errlen)
{
	char *seen = calloc(model_n_named(g), 1);
	int nfound = 0, r;

	if (!seen)
		return util_fail(err, errlen, -ENOMEM, "out of memory");
	r = load_file(path, g, seen, &nfound, NULL, NULL, err, errlen);
	if (r == 0)
		r = check_missing(g, seen, nfound, "model.safetensors", err, errlen);
	free(seen);
	return r;
}

/* A shard name of an index: a plain file name ending in .safetensors. */
static int valid_shard(const char *f)
{
	size_t l = strlen(f);

	return l > 12 && l < 200 && !strchr(f, '/') && f[0] != '.' &&
	       !strcmp(f + l - 12, ".safetensors");
}

/* Prefixes an error of load_file() with the shard it came from. */
static void name_shard(char *err, size_t errlen, const char *shard)
{
	char tmp[512];
	const char *msg = err;

	size_t l = strlen(shard);

	if (!strncmp(msg, shard, l) && !strncmp(msg + l, ": ", 2))
		msg += l + 2;
	snprintf(tmp, sizeof(tmp), "shard '%s': %s", shard, msg);
	snprintf(err, errlen, "%s", tmp);
}

int st_load_index(const char *dir, struct model *g, char *err, size_t errlen)
{
	char path[PATH_MAX], *buf = NULL, *seen = NULL;
	const char *shards[ST_MAX_SHARDS], *name;
	json_t *j = NULL, *map, *v;
	int nshards = 0, nfound = 0, r;
	json_error_t je;
	size_t len;

	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	r = util_read_file(path, ST_MAX_HEADER, &buf, &len);
	if (r < 0)
		return util_fail(err, errlen, r, "cannot read model.safetensors.index.json (at most "
				 "%u MiB): %s", ST_MAX_HEADER >> 20, strerror(-r));
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	free(buf);
	map = json_object_get(j, "weight_map");
	if (!json_is_object(map) || json_object_size(map) == 0) {
		r = util_fail(err, errlen, -EINVAL, "model.safetensors.index.json: expected an object "
			      "with a non-empty \"weight_map\" (%s)", j ? "no weight_map" : je.text);
		goto out;
	}
	json_object_foreach(map, name, v) {
		const char *f = json_string_value(v);
		int k;

		if (!f || !valid_shard(f)) {
			r = util_fail(err, errlen, -EINVAL, "model.safetensors.index.json: tensor "
				      "'%.80s' maps to '%.80s', not a *.safetensors file beside it",
				      name, f ? f : "(not a string)");
			goto out;
		}
		for (k = 0; k < nshards && strcmp(shards[k], f); k++)
			;
		if (k == nshards && nshards == ST_MAX_SHARDS) {
			r = util_fail(err, errlen, -EINVAL, "model.safetensors.index.json names more "
				      "than %d shards", ST_MAX_SHARDS);
			goto out;
		}
		if (k == nshards)
			shards[nshards++] = f;
	}
	seen = calloc(model_n_named(g), 1);
	if (!seen) {
		r = util_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	for (int k = 0; k < nshards; k++) {
		snprintf(path, sizeof(path), "%s/%s", dir, shards[k]);
		r = load_file(path, g, seen, &nfound, map, shards[k], err, errlen);
		if (r < 0) {
			name_shard(err, errlen, shards[k]);
			goto out;
		}
	}
	/* every mapped tensor must have been in its shard */
	json_object_foreach(map, name, v) {
		int i = find_named(g, name);

		if (i < 0 && !ignorable(g, name)) {
			r = util_fail(err, errlen, -EINVAL, "model.safetensors.index.json: unexpected "
				      "tensor '%.80s' for a %s with %d layers", name,
				      g->d.arch == ARCH_GPT2 ? "GPT-2" : "Llama", g->d.L);
			goto out;
		}
		if (i >= 0 && !seen[i]) {
			r = util_fail(err, errlen, -EINVAL, "model.safetensors.index.json maps '%.80s' "
				      "to '%s', which does not hold it", name, json_string_value(v));
			goto out;
		}
	}
	r = check_missing(g, seen, nfound, "model.safetensors.index.json", err, errlen);
out:
	free(seen);
	json_decref(j);
	return r;
}

/* HF's config.json for g: GPT2LMHeadModel or LlamaForCausalLM. */
static json_t *config_json(const struct model *g)
{
	const struct model_config *m = &g->d.cfg;
	int eot = g->d.V > 256 ? g->d.V - 1 : 0; /* the end-of-text token, see data.h */
	json_t *c, *rope = json_null();

	if (g->d.arch == ARCH_GPT2)
		return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:b, s:f, "
				 "s:f, s:f, s:f, s:b, s:b, s:i, s:i}",
				 "architectures", "GPT2LMHeadModel", "model_type", "gpt2", "n_layer",
				 g->d.L, "n_head", g->d.NH, "n_embd", g->d.C, "n_positions",
				 g->d.maxT, "n_ctx", g->d.maxT, "vocab_size", g->d.V,
				 "activation_function", "gelu_new", "layer_norm_epsilon",
				 m->layer_norm_epsilon, "tie_word_embeddings", 1, "resid_pdrop", 0.0,
				 "embd_pdrop", 0.0, "attn_pdrop", 0.0, "initializer_range", 0.02,
				 "scale_attn_weights", 1, "use_cache", 1, "bos_token_id", eot,
				 "eos_token_id", eot);
	if (m->rope_type == ROPE_LLAMA3)
		rope = json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
				 m->rope_factor, "low_freq_factor", m->rope_low_freq_factor,
				 "high_freq_factor", m->rope_high_freq_factor,
				 "original_max_position_embeddings", m->rope_original_max);
	c = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:f, s:o, "
		      "s:b, s:b, s:b, s:f, s:f, s:b, s:i, s:i}",
		      "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
		      g->d.C, "intermediate_size", g->d.F, "num_hidden_layers", g->d.L,
		      "num_attention_heads", g->d.NH, "num_key_value_heads", g->d.KVH, "head_dim",
		      g->d.hd, "max_position_embeddings", g->d.maxT, "vocab_size", g->d.V,
		      "hidden_act", "silu", "rms_norm_eps", m->layer_norm_epsilon, "rope_theta",
		      m->rope_theta, "rope_scaling", rope, "tie_word_embeddings", g->d.tied,
		      "attention_bias", g->d.attn_bias, "mlp_bias", g->d.mlp_bias,
		      "attention_dropout", 0.0, "initializer_range", 0.02, "use_cache", 1,
		      "bos_token_id", eot, "eos_token_id", eot);
	return c;
}

int st_save_config(const char *path, const struct model *g, char *err, size_t errlen)
{
	json_t *c = config_json(g);
	char *s = c ? json_dumps(c, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	int r;

	json_decref(c);
	if (!s)
		return util_fail(err, errlen, -ENOMEM, "out of memory building config.json");
	r = util_write_file_atomic(path, s, strlen(s));
	free(s);
	if (r < 0)
		return util_fail(err, errlen, r, "cannot write '%s': %s", path, strerror(-r));
	return 0;
}

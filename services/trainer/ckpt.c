/* ckpt — checkpoints as a directory of safetensors plus state.json, made
 * visible by an atomic rename of DIR/latest. See ckpt.h for the layout. */
#include "ckpt.h"
#include "safetensors.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MAX_STATE 65536

/* A model whose tensors are the moments buffer buf (same layout). */
static void moment_view(const struct model *g, float *buf, struct model *view)
{
	size_t off = 0;

	*view = *g;
	view->params = buf;
	for (int k = 0; k < MODEL_MAX_TENSORS; k++) {
		view->p[k] = g->sizes[k] ? buf + off : NULL;
		off += g->sizes[k];
	}
}

static void fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* Removes DIR/step-* other than keep, and stale temp directories. */
static void prune(const char *dir, const char *keep)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if ((strncmp(de->d_name, "step-", 5) && strncmp(de->d_name, "tmp-", 4)) ||
		    !strcmp(de->d_name, keep))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		util_rm_rf(p);
	}
	closedir(d);
}

static json_t *state_json(const struct model *g, const struct adamw *o, long step,
			  const struct train_params *p)
{
	return json_pack("{s:I, s:I, s:I, s:i, s:i, s:I, s:s, s:I}", "step", (json_int_t)step,
			 "adam_t", (json_int_t)o->t, "steps", (json_int_t)p->steps, "batch",
			 p->batch, "seq_len", p->seq_len, "seed", (json_int_t)p->seed,
			 "model_type", g->d.cfg.model_type, "n_params", (json_int_t)g->n_params);
}

int ckpt_save(const char *dir, const struct model *g, const struct adamw *o, long step,
	      const struct train_params *p, char *err, size_t errlen)
{
	char tmp[PATH_MAX], fin[PATH_MAX], path[PATH_MAX + 32], name[32];
	struct model view;
	json_t *st;
	char *s;
	int r;

	r = util_mkdir_p(dir);
	if (r < 0)
		return util_fail(err, errlen, r, "cannot create the checkpoint directory '%s': %s",
				 dir, strerror(-r));
	snprintf(name, sizeof(name), "step-%ld", step);
	snprintf(tmp, sizeof(tmp), "%s/tmp-%d", dir, (int)getpid());
	snprintf(fin, sizeof(fin), "%s/%s", dir, name);
	util_rm_rf(tmp);
	if (mkdir(tmp, 0750) < 0)
		return util_fail(err, errlen, -errno, "cannot create '%s': %s", tmp, strerror(errno));
	snprintf(path, sizeof(path), "%s/model.safetensors", tmp);
	r = st_save(path, g, err, errlen);
	if (r < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/config.json", tmp);
	r = st_save_config(path, g, err, errlen);
	if (r < 0)
		goto out;
	moment_view(g, o->m, &view);
	snprintf(path, sizeof(path), "%s/optim-m.safetensors", tmp);
	r = st_save(path, &view, err, errlen);
	if (r < 0)
		goto out;
	moment_view(g, o->v, &view);
	snprintf(path, sizeof(path), "%s/optim-v.safetensors", tmp);
	r = st_save(path, &view, err, errlen);
	if (r < 0)
		goto out;
	st = state_json(g, o, step, p);
	s = st ? json_dumps(st, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(st);
	if (!s) {
		r = util_fail(err, errlen, -ENOMEM, "out of memory writing state.json");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/state.json", tmp);
	r = util_write_file_atomic(path, s, strlen(s));
	free(s);
	if (r < 0) {
		util_fail(err, errlen, r, "cannot write '%s': %s", path, strerror(-r));
		goto out;
	}
	fsync_dir(tmp);
	util_rm_rf(fin);
	if (rename(tmp, fin) < 0) {
		r = util_fail(err, errlen, -errno, "cannot rename '%s' to '%s': %s", tmp, fin,
			      strerror(errno));
		goto out;
	}
	fsync_dir(dir);
	snprintf(path, sizeof(path), "%s/latest", dir);
	r = util_write_file_atomic(path, name, strlen(name));
	if (r < 0) {
		util_fail(err, errlen, r, "cannot write '%s': %s", path, strerror(-r));
		return r;
	}
	prune(dir, name);
	return 0;
out:
	util_rm_rf(tmp);
	return r;
}

static long get_int(json_t *st, const char *k)
{
	json_t *v = json_object_get(st, k);

	return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* state.json of the checkpoint must describe this run. */
static int check_state(json_t *st, const struct model *g, const struct train_params *p,
		       const char *where, char *err, size_t errlen)
{
	const char *mt = json_string_value(json_object_get(st, "model_type"));
	long step = get_int(st, "step"), t = get_int(st, "adam_t");

	if (!json_is_object(st) || step < 0 || t < 0 || t != step)
		return util_fail(err, errlen, -EINVAL, "%s/state.json is damaged (step %ld, "
				 "adam_t %ld)", where, step, t);
	if (!mt || strcmp(mt, g->d.cfg.model_type) || get_int(st, "n_params") != (long)g->n_params)
		return util_fail(err, errlen, -EINVAL, "the checkpoint in %s is of another model "
				 "(%s, %ld parameters; this bundle: %s, %zu)", where, mt ? mt : "?",
				 get_int(st, "n_params"), g->d.cfg.model_type, g->n_params);
	if (get_int(st, "batch") != p->batch || get_int(st, "seq_len") != p->seq_len)
		return util_fail(err, errlen, -EINVAL, "the checkpoint in %s was trained with batch "
				 "%ld x seq_len %ld, this run asks for %d x %d; resuming would "
				 "not continue the same run", where, get_int(st, "batch"),
				 get_int(st, "seq_len"), p->batch, p->seq_len);
	if (step > p->steps)
		return util_fail(err, errlen, -EINVAL, "the checkpoint in %s is at step %ld, past "
				 "the %ld steps of this run", where, step, p->steps);
	return 0;
}

int ckpt_load(const char *dir, struct model *g, struct adamw *o, long *step,
	      const struct train_params *p, char *err, size_t errlen)
{
	char path[PATH_MAX], sub[PATH_MAX + 64], *name = NULL, *buf = NULL;
	struct model view;
	json_error_t je;
	json_t *st = NULL;
	size_t len;
	int r;

	/* -ENOENT means "no checkpoint yet" (no latest) and nothing else: a
	 * checkpoint that is named but damaged or gone is an error, never a
	 * fresh start (whose first save would prune what is left of it) */
	snprintf(path, sizeof(path), "%s/latest", dir);
	r = util_read_file(path, 64, &name, &len);
	if (r == -ENOENT)
		return r;
	if (r < 0)
		return util_fail(err, errlen, r, "cannot read '%s': %s", path, strerror(-r));
	if (len < 6 || len > 30 || strncmp(name, "step-", 5) || strspn(name + 5, "0123456789") !=
	    len - 5) {
		r = util_fail(err, errlen, -EINVAL, "'%s' does not name a checkpoint", path);
		goto out;
	}
	name[len] = 0;
	snprintf(sub, sizeof(sub), "%s/%s", dir, name);
	snprintf(path, sizeof(path), "%s/state.json", sub);
	r = util_read_file(path, CKPT_MAX_STATE, &buf, &len);
	if (r < 0) {
		r = util_fail(err, errlen, r == -ENOENT ? -EIO : r, "%s/latest names %s, and "
			      "'%s' cannot be read: %s", dir, name, path, strerror(-r));
		goto out;
	}
	st = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	r = check_state(st, g, p, sub, err, errlen);
	if (r < 0)
		goto out;
	if (get_int(st, "step") != strtol(name + 5, NULL, 10)) {
		r = util_fail(err, errlen, -EINVAL, "%s/state.json says step %ld, but it lies in %s",
			      sub, get_int(st, "step"), name);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/model.safetensors", sub);
	r = st_load(path, g, err, errlen);
	moment_view(g, o->m, &view);
	snprintf(path, sizeof(path), "%s/optim-m.safetensors", sub);
	if (r == 0)
		r = st_load(path, &view, err, errlen);
	moment_view(g, o->v, &view);
	snprintf(path, sizeof(path), "%s/optim-v.safetensors", sub);
	if (r == 0)
		r = st_load(path, &view, err, errlen);
	if (r < 0) {
		char why[384];
		snprintf(why, sizeof(why), "%s", err);
		r = util_fail(err, errlen, r == -ENOENT ? -EIO : r, "checkpoint %s: %s", sub, why);
		goto out;
	}
	*step = get_int(st, "step");
	o->t = get_int(st, "adam_t");
out:
	json_decref(st);
	free(buf);
	free(name);
	return r;
}

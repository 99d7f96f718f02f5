/* run — one rank of bursar-train from bundle to checkpoint.
 *
 * Loads the bundle, builds the model for a micro-batch of this rank's share
 * of the global batch (grad_accum micro-batches per step, chosen to fit the
 * memory cap unless bursar.json sets it), resumes from --ckpt DIR when it
 * holds a checkpoint, joins the communicator, then each step: forward and
 * backward over the micro-batches (gradients summed), allreduce-average the
 * gradients in buckets started as backward completes each layer (bucket.c;
 * BURSAR_NO_OVERLAP=1: one flat allreduce after backward), clip, AdamW.
 * Every rank applies the identical update, so the weights never diverge.
 * With --zero 1 the AdamW moments are sharded instead (zero.c: reduce_scatter,
 * a shard update each, allgather; no overlap). Prints the JSON lines of
 * services/README.md on stdout; rank 0 writes outputs and checkpoints.
 * Allocates nothing inside the step loop.
 */
#include "bucket.h"
#include "ckpt.h"
#include "data.h"
#include "gpu_train.h"
#include "model.h"
#include "log.h"
#include "optim.h"
#include "safetensors.h"
#include "trainer.h"
#include "util.h"
#include "zero.h"

#include <cblas.h>
#include <fcntl.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EVAL_MAX_BATCHES 8

volatile sig_atomic_t train_stop_requested;

/* One JSON line on stdout in a single write(), so lines of ranks sharing a
 * pipe or file never interleave. */
static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
	char buf[12288];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDOUT_FILENO, buf, n) < 0)
		return;
}

/* A JSON string body for a path (escapes quotes, backslashes, controls). */
static void json_escape(const char *s, char *out, size_t len)
{
	size_t o = 0;

	for (; *s && o + 7 < len; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			o += snprintf(out + o, len - o, "\\%c", ch);
		else if (ch < 0x20)
			o += snprintf(out + o, len - o, "\\u%04x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = 0;
}

static uint64_t memory_limit(void)
{
	const char *s = getenv("BURSAR_TRAIN_MAX_MEM");
	uint64_t v;

	if (s && util_parse_size(s, &v) == 0 && v > 0)
		return v;
	return (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE) / 4 * 3;
}

struct rank_state {
	const struct train_opts *o;
	struct bundle_info bi;
	struct data data;
	struct model model;
	struct adamw opt;
	struct bcoll_comm *comm;
	int B, T;     /* micro-batch */
	int accum;    /* micro-batches per rank per step */
	long start;   /* steps already done (resumed checkpoint) */
	uint64_t host_need; /* host bytes the model takes (the data gets the rest of the cap) */
	int *inputs, *targets;
	float *acc;   /* summed gradients when accum > 1 */
	double peak_flops;
	int overlap;  /* allreduce buckets during backward (BURSAR_NO_OVERLAP=1: after) */
	struct grad_buckets gb;
	struct zero zero; /* zero.comm != NULL: ZeRO-1 */
	struct gpu_rank gpu; /* gpu.on: the model trains on the GPU (gpu_train.c) */
	int gpu_failed;      /* a GPU call failed inside micro_steps() */
};

/* ZeRO-1 asked for: --zero 1 or bursar.json's "zero": 1. */
static int zero_wanted(const struct rank_state *s)
{
	return s->o->zero || s->bi.params.zero;
}

/* The micro-batch: bursar.json's grad_accum, or the fewest micro-batches
 * whose activations (plus an accumulation buffer) fit the memory cap. */
static int pick_micro_batch(struct rank_state *s, int rows)
{
	const struct train_params *p = &s->bi.params;
	uint64_t limit = memory_limit(), need = 0;
	uint64_t accb = modelcfg_n_params(&s->bi.model) * 4;
	uint64_t credit = zero_wanted(s) ? zero_saved_bytes(accb / 4, s->o->size) : 0;

	if (p->grad_accum > 0) {
		if (rows % p->grad_accum) {
			log_err("the %d sequences of each rank cannot be split into grad_accum %d "
				"micro-batches; make \"batch\" a multiple of ranks x grad_accum",
				rows, p->grad_accum);
			return 2;
		}
		s->accum = p->grad_accum;
		s->B = rows / s->accum;
		need = model_memory_bytes(&s->bi.model, s->B, s->T) + (s->accum > 1 ? accb : 0) -
		       credit;
	} else {
		for (s->accum = 1; s->accum <= rows; s->accum++) {
			if (rows % s->accum)
				continue;
			s->B = rows / s->accum;
			need = model_memory_bytes(&s->bi.model, s->B, s->T) +
			       (s->accum > 1 ? accb : 0) - credit;
			if (need <= limit)
				break;
		}
		if (s->accum > rows)
			s->accum = rows;
	}
	if (need > limit) {
		log_err("the model needs %.1f MiB for a micro-batch of %d x %d tokens, more than "
			"the %.1f MiB allowed (BURSAR_TRAIN_MAX_MEM)", need / 1048576.0, s->B,
			s->T, limit / 1048576.0);
		return 2;
	}
	s->host_need = need;
	return 0;
}

/* dir exists (made if need be) and takes a new file, checked before
 * training: a bad --out or --ckpt fails in a second, not after the run. */
static int probe_dir(const char *dir, const char *what)
{
	char path[PATH_MAX];
	int r = util_mkdir_p(dir), fd;

	if (r < 0) {
		log_err("cannot create the %s '%s': %s", what, dir, strerror(-r));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/.bursar-probe-%d", dir, (int)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_err("cannot write in the %s '%s': %s", what, dir, strerror(errno));
		return -1;
	}
	close(fd);
	unlink(path);
	return 0;
}

#define TRAIN_MAX_PARAMS_FILE (64 << 10)

int train_load_bundle(const struct train_opts *o, struct bundle_info *bi, char *err,
		      size_t errlen)
{
	char *buf = NULL, why[384];
	json_error_t je;
	size_t len;
	json_t *j;
	int r = bundle_check(o->bundle, bi, err, errlen);

	if (r < 0) {
		snprintf(why, sizeof(why), "%s", err[0] ? err : strerror(-r));
		return util_fail(err, errlen, r, "bundle '%s' is not usable: %s", o->bundle, why);
	}
	if (o->params) {
		r = util_read_file(o->params, TRAIN_MAX_PARAMS_FILE, &buf, &len);
		if (r < 0)
			return util_fail(err, errlen, r, "--params '%s': %s", o->params,
					 strerror(-r));
		j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
		free(buf);
		if (!json_is_object(j)) {
			json_decref(j);
			return util_fail(err, errlen, -EINVAL, "--params '%s': not a JSON object "
					 "(%s)", o->params, j ? "wrong type" : je.text);
		}
		r = trainparams_apply(j, &bi->model, &bi->params, why, sizeof(why));
		json_decref(j);
		if (r < 0)
			return util_fail(err, errlen, r, "--params '%s': %s", o->params,
					 strncmp(why, "bursar.json: ", 13) ? why : why + 13);
	}
	if (o->steps > 0)
		bi->params.steps = o->steps;
	return 0;
}

int train_batch_splits(const struct train_params *p, int n)
{
	if (p->batch % n == 0)
		return 0;
	log_err("the global batch of %d sequences cannot be split evenly across %d ranks; "
		"set \"batch\" in bursar.json to a multiple of %d", p->batch, n, n);
	return -EINVAL;
}

/* Bundle, batch split, memory budget, data. Returns an exit status. */
static int setup_model(struct rank_state *s)
{
	const struct train_opts *o = s->o;
	struct train_params *p = &s->bi.params;
	char err[512] = "", path[PATH_MAX];
	struct stat st;
	uint64_t limit;
	int r;

	if (train_load_bundle(o, &s->bi, err, sizeof(err)) < 0) {
		log_err("%s", err);
		return 2;
	}
	if (o->rank == 0 && ((o->out && probe_dir(o->out, "output directory") < 0) ||
			     (o->ckpt && probe_dir(o->ckpt, "checkpoint directory") < 0)))
		return 2;
	if (o->rank == 0 && s->bi.model.dropout > 0)
		log_warn("config.json asks for dropout %g; bursar trains without dropout",
			 s->bi.model.dropout);
	if (o->rank == 0 && p->warmup > 0 && p->warmup >= p->steps)
		log_warn("the warmup (%ld steps) is as long as the run (%ld steps): the learning rate "
			 "never reaches \"lr\"", (long)p->warmup, (long)p->steps);
	if (train_batch_splits(p, o->size) < 0)
		return 2;
	s->T = p->seq_len;
	r = gpu_rank_select(&s->gpu, o->device ? o->device : p->device, &s->bi.model, o->rank, err,
			    sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		return 2;
	}
	if (s->gpu.on && zero_wanted(s)) {
		if (strcmp(o->device ? o->device : p->device, "auto")) {
			log_err("ZeRO-1 runs on the CPU only so far; drop \"zero\" or use "
				"--device cpu");
			return 2;
		}
		log_info("rank %d: training on the CPU: ZeRO-1 runs on the CPU only so far",
			 o->rank);
		s->gpu.on = 0;
	}
	if (s->gpu.on) {
		/* the host model only holds the weights (and llama's rope tables) */
		int llama = strcmp(s->bi.model.model_type, "gpt2") != 0;

		if (model_build(&s->model, &s->bi.model, 1, llama ? s->T : 1) < 0) {
			log_err("out of memory building a model of %zu parameters",
				(size_t)modelcfg_n_params(&s->bi.model));
			return 1;
		}
		r = gpu_rank_micro_batch(&s->gpu, &s->model, p->batch / o->size, s->T,
					 p->grad_accum, &s->B, &s->accum, err, sizeof(err));
		if (r < 0) {
			log_err("%s", err);
			return 2;
		}
	} else {
		r = pick_micro_batch(s, p->batch / o->size);
		if (r)
			return r;
	}
	if (s->gpu.on) /* the host holds the weights, gradients and moments */
		s->host_need = modelcfg_n_params(&s->bi.model) * 16;
	limit = memory_limit();
	r = data_load(o->bundle, s->bi.model.vocab_size, s->T,
		      limit > s->host_need ? limit - s->host_need : 1, &s->data, err, sizeof(err));
	if (r < 0) {
		log_err("cannot load the training data of '%s': %s", o->bundle, err);
		return 2;
	}
	if ((!s->gpu.on && model_build(&s->model, &s->bi.model, s->B, s->T) < 0) ||
	    adamw_init(&s->opt, s->model.n_params) < 0 ||
	    !(s->inputs = calloc((size_t)s->B * s->T, sizeof(int))) ||
	    !(s->targets = calloc((size_t)s->B * s->T, sizeof(int))) ||
	    (!s->gpu.on && s->accum > 1 &&
	     !(s->acc = calloc(s->model.n_params, sizeof(float))))) {
		log_err("out of memory building a model of %zu parameters",
			(size_t)modelcfg_n_params(&s->bi.model));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/model.safetensors", o->bundle);
	if (stat(path, &st) == 0) {
		r = st_load(path, &s->model, err, sizeof(err));
		if (r < 0) {
			log_err("cannot load the bundle's weights: %s", err);
			return 2;
		}
		log_info("rank %d: loaded weights from %s", o->rank, path);
	} else if (snprintf(path, sizeof(path), "%s/model.safetensors.index.json", o->bundle),
		   stat(path, &st) == 0) {
		r = st_load_index(o->bundle, &s->model, err, sizeof(err));
		if (r < 0) {
			log_err("cannot load the bundle's sharded weights: %s", err);
			return 2;
		}
		log_info("rank %d: loaded weights from the shards of %s", o->rank, path);
	} else {
		model_init_weights(&s->model, p->seed);
	}
	if (o->ckpt && o->rank == 0) {
		r = ckpt_load(o->ckpt, &s->model, &s->opt, &s->start, p, err, sizeof(err));
		if (r < 0 && r != -ENOENT) {
			log_err("cannot resume: %s", err);
			return 2;
		}
		if (r == 0)
			log_info("resumed from the checkpoint in %s at step %ld", o->ckpt, s->start);
	}
	return 0;
}

/* Joins the other ranks and makes sure every rank starts from rank 0's bits. */
static int setup_comm(struct rank_state *s)
{
	const struct train_opts *o = s->o;
	struct rdv_http http = {.base = o->rdv, .key = o->rdv_key,
				.timeout_ms = TRAIN_RDV_TIMEOUT_MS};
	struct bcoll_rendezvous rdv = {.exchange = rdv_http_exchange, .ctx = &http};
	char err[256];
	int r;

	if (o->size > 1 && o->rdv && !strncmp(o->rdv, "dir:", 4))
		rdv = bcoll_rendezvous_dir(o->rdv + 4);
	else if (o->size > 1 && (!o->rdv || !o->rdv_key)) {
		log_err("rank %d of %d: BURSAR_RDV and BURSAR_RDV_KEY must name the rendezvous",
			o->rank, o->size);
		return 2;
	}
	r = bcoll_comm_init_err(o->rank, o->size, &rdv, 0, &s->comm, err, sizeof(err));
	if (r < 0) {
		log_err("rank %d of %d cannot join the other ranks: %s", o->rank, o->size,
			http.err[0] ? http.err : err);
		return 3;
	}
	r = bcoll_broadcast(s->comm, s->model.params, s->model.n_params, BCOLL_F32, 0);
	if (r == 0 && o->ckpt) {
		int64_t st[2] = {s->start, s->opt.t};

		r = bcoll_broadcast(s->comm, st, 2, BCOLL_I64, 0);
		s->start = (long)st[0];
		s->opt.t = (long)st[1];
		if (r == 0 && s->start > 0)
			r = bcoll_broadcast(s->comm, s->opt.m, s->model.n_params, BCOLL_F32, 0);
		if (r == 0 && s->start > 0)
			r = bcoll_broadcast(s->comm, s->opt.v, s->model.n_params, BCOLL_F32, 0);
	}
	if (r < 0) {
		log_err("rank %d: cannot receive the initial weights: %s", o->rank,
			bcoll_last_error(s->comm));
		return 3;
	}
	return 0;
}

/* Mean validation loss over up to EVAL_MAX_BATCHES micro-batches per rank,
 * averaged across ranks; NAN when there is no validation split. */
static int evaluate(struct rank_state *s, float *out)
{
	size_t count = data_val_count(&s->data, s->T), per = (size_t)s->B * s->o->size;
	size_t nb = count / per;
	float sum = 0;

	*out = NAN;
	if (count == 0)
		return 0;
	if (nb < 1)
		nb = 1;
	if (nb > EVAL_MAX_BATCHES)
		nb = EVAL_MAX_BATCHES;
	for (size_t i = 0; i < nb; i++) {
		for (int b = 0; b < s->B; b++) {
			size_t k = ((i * s->o->size + s->o->rank) * s->B + b) % count;
			data_val_seq(&s->data, k, s->T, s->inputs + (size_t)b * s->T,
				     s->targets + (size_t)b * s->T);
		}
		if (s->gpu.on) {
			float l;

			if (gpu_rank_micro(&s->gpu, s->inputs, s->targets, 0, 0, &l) < 0) {
				log_err("rank %d: the GPU failed in evaluation: %s", s->o->rank,
					gpu_rank_error(&s->gpu));
				return -EIO;
			}
			sum += l;
		} else {
			sum += model_forward(&s->model, s->inputs, s->targets);
		}
	}
	sum /= nb;
	if (bcoll_allreduce(s->comm, &sum, &sum, 1, BCOLL_F32, BCOLL_AVG) < 0)
		return -EIO;
	*out = sum;
	return 0;
}

static int write_outputs(struct rank_state *s)
{
	char err[512], path[PATH_MAX];
	int r = util_mkdir_p(s->o->out);

	if (r < 0) {
		log_err("cannot create the output directory '%s': %s", s->o->out, strerror(-r));
		return 1;
	}
	if (s->gpu.on && gpu_rank_pull(&s->gpu, &s->model, NULL) < 0) {
		log_err("cannot copy the weights off the GPU: %s", gpu_rank_error(&s->gpu));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/model.safetensors", s->o->out);
	if (st_save(path, &s->model, err, sizeof(err)) < 0 ||
	    (snprintf(path, sizeof(path), "%s/config.json", s->o->out),
	     st_save_config(path, &s->model, err, sizeof(err)) < 0)) {
		log_err("cannot write the trained model to '%s': %s", s->o->out, err);
		return 1;
	}
	return 0;
}

/* Test hook: gradients of step 1's batch from the loaded weights, written
 * under the weights' names, and the log-probabilities beside them. */
static int dump_grads(struct rank_state *s)
{
	struct model view = s->model;
	size_t n = (size_t)s->B * s->T * s->model.d.V;
	char err[512], path[PATH_MAX];
	float loss;
	int r;

	data_train_batch(&s->data, 0, s->bi.params.batch, 0, s->B, s->T, s->inputs, s->targets);
	loss = model_forward(&s->model, s->inputs, s->targets);
	model_backward(&s->model);
	memcpy(view.p, s->model.g, sizeof(view.p));
	if (st_save(s->o->dump_grads, &view, err, sizeof(err)) < 0) {
		log_err("cannot write the gradients: %s", err);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		s->model.probs[i] = logf(s->model.probs[i]);
	snprintf(path, sizeof(path), "%s.logprobs", s->o->dump_grads);
	r = util_write_file_atomic(path, s->model.probs, n * 4);
	if (r < 0) {
		log_err("cannot write '%s': %s", path, strerror(-r));
		return 1;
	}
	emit("{\"event\": \"grads\", \"loss\": %.8f}", loss);
	return 0;
}

/* Forward and backward over this rank's accum micro-batches of `step`;
 * leaves the mean gradient in model.grads. With overlap, the last backward
 * starts each bucket's allreduce as it completes (bucket_wait_all() ends
 * them). Returns the mean loss. */
static float gpu_micro_steps(struct rank_state *s, long step)
{
	const struct train_params *p = &s->bi.params;
	int row0 = s->o->rank * s->B * s->accum;
	double loss = 0;

	if (gpu_rank_zero_grads(&s->gpu) < 0)
		goto fail;
	for (int k = 0; k < s->accum; k++) {
		float l;

		data_train_batch(&s->data, step, p->batch, row0 + k * s->B, s->B, s->T, s->inputs,
				 s->targets);
		if (gpu_rank_micro(&s->gpu, s->inputs, s->targets, 1, 1.0f / s->accum, &l) < 0)
			goto fail;
		loss += l;
	}
	return (float)(loss / s->accum);
fail:
	log_err("rank %d: the GPU failed at step %ld: %s", s->o->rank, step + 1,
		gpu_rank_error(&s->gpu));
	s->gpu_failed = 1;
	return NAN;
}

static float micro_steps(struct rank_state *s, long step)
{
	if (s->gpu.on)
		return gpu_micro_steps(s, step);
	const struct train_params *p = &s->bi.params;
	int row0 = s->o->rank * s->B * s->accum;
	size_t n = s->model.n_params;
	float *g = s->model.grads, inv = 1.0f / s->accum;
	double loss = 0;

	for (int k = 0; k < s->accum; k++) {
		data_train_batch(&s->data, step, p->batch, row0 + k * s->B, s->B, s->T, s->inputs,
				 s->targets);
		loss += model_forward(&s->model, s->inputs, s->targets);
		if (s->overlap && k == s->accum - 1)
			bucket_arm(&s->gb, k > 0 ? s->acc : NULL, inv);
		model_backward(&s->model);
		if (s->accum == 1 || (s->overlap && k == s->accum - 1))
			break;
		if (k == 0)
			memcpy(s->acc, g, n * sizeof(float));
		else if (k < s->accum - 1) {
#pragma omp parallel for
			for (size_t i = 0; i < n; i++)
				s->acc[i] += g[i];
		} else {
#pragma omp parallel for
			for (size_t i = 0; i < n; i++)
				g[i] = (s->acc[i] + g[i]) * inv;
		}
	}
	return (float)(loss / s->accum);
}

/* Rank 0 writes the checkpoint after `done` steps (with ZeRO-1 every rank
 * first helps gather the full moments); every rank waits for it, so no rank
 * reports a checkpoint that is not on disk yet. */
static int checkpoint(struct rank_state *s, long done)
{
	char err[512] = "", esc[PATH_MAX * 2];
	struct adamw full = s->opt;
	float ok = 1;
	int r = 0;

	if (s->zero.comm && (r = zero_gather(&s->zero, &s->opt, &full)) < 0) {
		log_err("rank %d: cannot gather the optimizer state for the checkpoint: %s",
			s->o->rank, r == -ENOMEM ? strerror(-r) : bcoll_last_error(s->comm));
		return r == -ENOMEM ? 1 : 3;
	}
	if (s->gpu.on && s->o->rank == 0 && gpu_rank_pull(&s->gpu, &s->model, &s->opt) < 0) {
		log_err("cannot copy the weights off the GPU for the checkpoint: %s",
			gpu_rank_error(&s->gpu));
		return 1;
	}
	if (s->o->rank == 0) {
		r = ckpt_save(s->o->ckpt, &s->model, &full, done, &s->bi.params, err,
			      sizeof(err));
		if (r < 0) {
			log_err("cannot write the checkpoint at step %ld: %s", done, err);
			ok = 0;
		}
	}
	if (s->zero.comm)
		zero_gather_done(&s->zero, &full);
	if (bcoll_allreduce(s->comm, &ok, &ok, 1, BCOLL_F32, BCOLL_MIN) < 0) {
		log_err("rank %d: checkpoint barrier failed: %s", s->o->rank,
			bcoll_last_error(s->comm));
		return 3;
	}
	if (ok < 1)
		return 1;
	json_escape(s->o->ckpt, esc, sizeof(esc));
	emit("{\"event\": \"checkpoint\", \"rank\": %d, \"step\": %ld, \"dir\": \"%s\"}",
	     s->o->rank, done, esc);
	return 0;
}

/* A periodic eval line; the losses of every rank are averaged. */
static int eval_line(struct rank_state *s, long done)
{
	float ev;

	if (evaluate(s, &ev) < 0) {
		log_err("rank %d: evaluation failed: %s", s->o->rank, bcoll_last_error(s->comm));
		return 3;
	}
	if (!isnan(ev))
		emit("{\"event\": \"eval\", \"rank\": %d, \"step\": %ld, \"eval_loss\": %.6f}",
		     s->o->rank, done, ev);
	return 0;
}

static int train_loop(struct rank_state *s, float *final_loss)
{
	const struct train_opts *o = s->o;
	const struct train_params *p = &s->bi.params;
	double fpt = modelcfg_flops_per_token(&s->bi.model, s->T);
	double tokens_step = (double)p->batch * s->T, comm_total = 0;
	int r, warned = 0;

	for (long step = s->start; step < p->steps; step++) {
		uint64_t t0 = util_now_us();
		double step_s, comm_s, c0 = bcoll_comm_seconds(s->comm);
		float lr, norm, ls[2];
		int stop;

		ls[0] = micro_steps(s, step);
		if (s->gpu_failed)
			return 1;
		ls[1] = train_stop_requested ? 1.0f : 0.0f;
		if (s->overlap && bucket_wait_all(&s->gb) < 0) {
			log_err("rank %d: gradient exchange failed at step %ld: %s", o->rank,
				step + 1, s->gb.errmsg);
			return 3;
		}
		if ((s->zero.comm && zero_reduce(&s->zero) < 0) ||
		    (!s->overlap && !s->zero.comm &&
		     (s->gpu.on ? gpu_rank_exchange(&s->gpu, s->comm, &s->model)
				: bcoll_allreduce(s->comm, s->model.grads, s->model.grads,
						  s->model.n_params, BCOLL_F32, BCOLL_AVG)) < 0) ||
		    bcoll_allreduce(s->comm, ls, ls, 2, BCOLL_F32, BCOLL_AVG) < 0) {
			log_err("rank %d: gradient exchange failed at step %ld: %s", o->rank,
				step + 1, bcoll_last_error(s->comm));
			return 3;
		}
		stop = ls[1] > 0 && o->ckpt;
		if (ls[1] > 0 && !o->ckpt && !warned++)
			log_warn("rank %d: SIGUSR1 asks for a checkpoint, but no --ckpt DIR was "
				 "given; training on", o->rank);
		if (!isfinite(ls[0])) {
			log_err("the loss became %f at step %ld; lower \"lr\" (now %g) or check the "
				"data", ls[0], step + 1, p->lr);
			return 1;
		}
		lr = optim_lr(p->schedule, (float)p->lr, step, p->steps, p->warmup);
		if (s->gpu.on) {
			if (gpu_rank_update(&s->gpu, &s->opt, lr, (float)p->weight_decay,
					    (float)p->grad_clip, &norm) < 0) {
				log_err("rank %d: the GPU failed in the update at step %ld: %s",
					o->rank, step + 1, gpu_rank_error(&s->gpu));
				return 1;
			}
		} else if (s->zero.comm) {
			if (zero_update(&s->zero, &s->opt, lr, (float)p->weight_decay,
					(float)p->grad_clip, &norm) < 0) {
				log_err("rank %d: weight exchange failed at step %ld: %s", o->rank,
					step + 1, bcoll_last_error(s->comm));
				return 3;
			}
		} else {
			norm = optim_norm(s->model.grads, s->model.n_params);
			adamw_begin(&s->opt, optim_clip_scale(norm, (float)p->grad_clip));
			adamw_range(&s->opt, &s->model, 0, s->model.n_params, 0, lr,
				    (float)p->weight_decay);
		}
		if (!isfinite(norm)) {
			/* every rank has the same averaged gradients: all stop here */
			log_err("the gradient norm became %f at step %ld (loss %f); lower \"lr\" (now "
				"%g) or check the data and the weights", norm, step + 1, ls[0], p->lr);
			return 1;
		}
		comm_s = bcoll_comm_seconds(s->comm) - c0;
		comm_total += comm_s;
		step_s = (util_now_us() - t0) / 1e6;
		if (!(step_s > 0))
			step_s = 1e-6; /* the rates below stay finite: the line stays JSON */
		emit("{\"event\": \"step\", \"rank\": %d, \"step\": %ld, \"steps\": %ld, \"loss\": "
		     "%.6f, \"lr\": %.6g, \"tokens_per_s\": %.1f, \"step_ms\": %.3f, \"comm_ms\": "
		     "%.3f, \"comm_s\": %.6f, \"mfu\": %.4f, \"grad_norm\": %.4f}",
		     o->rank, step + 1, p->steps, ls[0], lr, tokens_step / step_s, step_s * 1e3,
		     comm_s * 1e3, comm_total, fpt * tokens_step / o->size / step_s / s->peak_flops,
		     norm);
		*final_loss = ls[0];
		if (p->eval_every > 0 && (step + 1) % p->eval_every == 0 && step + 1 < p->steps) {
			r = eval_line(s, step + 1);
			if (r)
				return r;
		}
		if (o->ckpt && (stop || step + 1 == p->steps ||
				(p->ckpt_every > 0 && (step + 1) % p->ckpt_every == 0))) {
			r = checkpoint(s, step + 1);
			if (r)
				return r;
		}
		if (stop && step + 1 < p->steps) {
			log_info("rank %d: checkpointed at step %ld on request; exiting %d", o->rank,
				 step + 1, TRAIN_EXIT_CHECKPOINTED);
			return TRAIN_EXIT_CHECKPOINTED;
		}
	}
	return 0;
}

/* ZeRO-1: keep this rank's shard of the moments; says what it saves. */
static int setup_zero(struct rank_state *s)
{
	int r = zero_init(&s->zero, &s->model, &s->opt, s->comm);

	if (r < 0) {
		log_err("out of memory sharding the optimizer state");
		return 1;
	}
	log_info("rank %d: ZeRO-1 over %d ranks: AdamW state %.2f MiB on this rank instead of "
		 "%.2f MiB (%.2f MiB saved); gradients reduce-scattered, weights allgathered",
		 s->o->rank, s->o->size, s->opt.n * 8 / 1048576.0,
		 s->zero.full_bytes / 1048576.0,
		 (s->zero.full_bytes - s->opt.n * 8) / 1048576.0);
	return 0;
}

static double peak_flops(void)
{
	const char *e = getenv("BURSAR_PEAK_FLOPS");
	double v = e ? strtod(e, NULL) : 0;

	if (v > 0)
		return v;
	return train_probe_flops(0.15) * omp_get_max_threads();
}

int train_rank(const struct train_opts *o)
{
	struct rank_state s = {.o = o};
	float final_loss = NAN, eval_loss;
	char out_json[PATH_MAX * 2] = "null", where[160];
	int r;

	openblas_set_num_threads(omp_get_max_threads());
	r = setup_model(&s);
	if (r)
		goto out;
	r = setup_comm(&s);
	if (r)
		goto out;
	if (o->dump_grads) {
		r = o->size == 1 && !s.gpu.on ? dump_grads(&s) : 2;
		goto out;
	}
	if (s.gpu.on) {
		char err[512] = "";

		if (gpu_rank_start(&s.gpu, &s.model, &s.opt, s.start > 0, s.B, s.T, err,
				   sizeof(err)) < 0) {
			log_err("rank %d: cannot set the model up on %s: %s", o->rank,
				s.gpu.info.name, err[0] ? err : gpu_rank_error(&s.gpu));
			r = 1;
			goto out;
		}
	}
	if (zero_wanted(&s)) {
		r = setup_zero(&s);
		if (r)
			goto out;
	}
	s.overlap = !s.zero.comm && !s.gpu.on &&
		    (!getenv("BURSAR_NO_OVERLAP") || strcmp(getenv("BURSAR_NO_OVERLAP"), "1"));
	if (s.overlap && bucket_init(&s.gb, &s.model, s.comm) < 0) {
		log_err("out of memory setting up the gradient buckets");
		r = 1;
		goto out;
	}
	s.peak_flops = s.gpu.on ? gpu_rank_peak(&s.gpu) : peak_flops();
	if (s.gpu.on)
		snprintf(where, sizeof(where), "on %s", s.gpu.info.name);
	else
		snprintf(where, sizeof(where), "%d threads", omp_get_max_threads());
	log_info("rank %d of %d: %zu parameters, micro-batch %d x %d (x%d), %ld steps from %ld, "
		 "%zu train tokens, %s, peak %.3g FLOP/s, %d gradient buckets%s", o->rank,
		 o->size, s.model.n_params, s.B, s.T, s.accum, s.bi.params.steps, s.start,
		 s.data.n_train, where, s.peak_flops, s.gb.nb,
		 s.overlap ? " overlapped with backward" : ", not overlapped");
	emit("{\"event\": \"start\", \"rank\": %d, \"size\": %d, \"steps\": %ld, \"n_params\": %zu, "
	     "\"tokens_per_step\": %ld, \"grad_accum\": %d, \"micro_batch\": %d, \"start_step\": "
	     "%ld, \"zero\": %d, \"optim_bytes\": %zu, \"device\": \"%s\"}", o->rank, o->size,
	     s.bi.params.steps, s.model.n_params, (long)s.bi.params.batch * s.T, s.accum, s.B,
	     s.start, s.zero.comm ? 1 : 0, s.opt.n * 8, s.gpu.on ? "cuda" : "cpu");
	r = train_loop(&s, &final_loss);
	if (r)
		goto out;
	if (evaluate(&s, &eval_loss) < 0) {
		log_err("rank %d: evaluation failed: %s", o->rank, bcoll_last_error(s.comm));
		r = 3;
		goto out;
	}
	if (o->out && o->rank == 0) {
		r = write_outputs(&s);
		if (r)
			goto out;
	}
	if (o->out) {
		char esc[PATH_MAX * 2 - 3];
		json_escape(o->out, esc, sizeof(esc));
		snprintf(out_json, sizeof(out_json), "\"%s\"", esc);
	}
	{
		char fl[32] = "null", el[32] = "null";

		if (!isnan(final_loss))
			snprintf(fl, sizeof(fl), "%.6f", final_loss);
		if (!isnan(eval_loss))
			snprintf(el, sizeof(el), "%.6f", eval_loss);
		emit("{\"event\": \"done\", \"rank\": %d, \"final_loss\": %s, \"eval_loss\": %s, "
		     "\"out\": %s}", o->rank, fl, el, out_json);
	}
	log_info("rank %d: done, final loss %.4f, eval loss %.4f", o->rank, final_loss, eval_loss);
out:
	gpu_rank_close(&s.gpu);
	bcoll_comm_destroy(s.comm);
	bucket_free(&s.gb);
	free(s.inputs);
	free(s.targets);
	free(s.acc);
	adamw_free(&s.opt);
	model_free(&s.model);
	data_free(&s.data);
	return r;
}

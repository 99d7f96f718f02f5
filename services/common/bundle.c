/* bundle — parse and check config.json, bursar.json and data/ of a bundle.
 * Pure functions over jansson values and the filesystem; never logs. */
#include "bundle.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define BUNDLE_MAX_DATA_FILES 10000
#define BUNDLE_MAX_DATA_DEPTH 4

/* Keys of a config.json that carry no maths (metadata, inference). */
static const char *const inert_keys[] = {
	"architectures", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
	"transformers_version", "torch_dtype", "dtype", "use_cache", "task_specific_params",
	"summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
	"summary_first_dropout", "_name_or_path", "id2label", "label2id", "output_past",
	"gradient_checkpointing", "n_ctx", "reorder_and_upcast_attn", "return_dict",
	"output_hidden_states", "output_attentions", "model_type", "prefix", "tokenizer_class",
	"n_params", /* written by modelcfg_to_json */
};

static int is_inert(const char *k)
{
	for (size_t i = 0; i < ARRAY_SIZE(inert_keys); i++)
		if (!strcmp(k, inert_keys[i]))
			return 1;
	return 0;
}

/* Reads an integer key in [lo, hi]; absent keeps *v (when dflt_ok). */
static int get_int(json_t *o, const char *k, int lo, int hi, int required, int *v, char *err,
		   size_t errlen)
{
	json_t *x = json_object_get(o, k);

	if (!x) {
		if (required)
			return util_fail(err, errlen, -EINVAL, "config.json: missing required key '%s'", k);
		return 0;
	}
	if (!json_is_integer(x))
		return util_fail(err, errlen, -EINVAL, "config.json: '%s' must be an integer", k);
	if (json_integer_value(x) < lo || json_integer_value(x) > hi)
		return util_fail(err, errlen, -ERANGE, "config.json: '%s' = %lld is out of range [%d, %d]",
			    k, (long long)json_integer_value(x), lo, hi);
	*v = (int)json_integer_value(x);
	return 0;
}

/* A key whose only accepted value is the one we implement. */
static int expect_value(json_t *o, const char *k, json_t *want, char *err, size_t errlen)
{
	json_t *x = json_object_get(o, k);
	int ok = !x || json_is_null(x) || json_equal(x, want);
	char *s;

	json_decref(want);
	if (ok)
		return 0;
	s = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
	util_fail(err, errlen, -EOPNOTSUPP, "config.json: '%s' = %s is not supported (it changes the "
	     "model's maths and bursar does not implement it)", k, s ? s : "?");
	free(s);
	return -EOPNOTSUPP;
}

/* A positive number key of config.json in (0, hi]; absent keeps *v. */
static int get_pos(json_t *o, const char *k, double hi, double *v, char *err, size_t errlen)
{
	json_t *x = json_object_get(o, k);

	if (!x || json_is_null(x))
		return 0;
	if (!json_is_number(x) || !(json_number_value(x) > 0) || json_number_value(x) > hi)
		return util_fail(err, errlen, -EINVAL, "config.json: '%s' must be a number in (0, %g]",
			    k, hi);
	*v = json_number_value(x);
	return 0;
}

static int get_bool(json_t *o, const char *k, int *v, char *err, size_t errlen)
{
	json_t *x = json_object_get(o, k);

	if (!x || json_is_null(x))
		return 0;
	if (!json_is_boolean(x))
		return util_fail(err, errlen, -EINVAL, "config.json: '%s' must be true or false", k);
	*v = json_is_true(x);
	return 0;
}

/* Every key of cfg must be inert or in known[]; the error names the first other. */
static int check_keys(json_t *cfg, const char *mt, const char *const *known, size_t nknown,
		      char *err, size_t errlen)
{
	const char *k;
	json_t *v;

	json_object_foreach(cfg, k, v) {
		int found = is_inert(k);

		for (size_t i = 0; !found && i < nknown; i++)
			found = !strcmp(k, known[i]);
		if (!found)
			return util_fail(err, errlen, -EOPNOTSUPP,
				    "config.json: unknown key '%.60s' for model_type %s (it may "
				    "change the maths; remove it or use a supported model)", k, mt);
	}
	return 0;
}

static int parse_gpt2(json_t *cfg, struct model_config *m, char *err, size_t errlen)
{
	static const char *const known[] = {
		"n_layer", "n_head", "n_embd", "n_positions", "vocab_size",
		"layer_norm_epsilon", "activation_function", "n_inner",
		"scale_attn_weights", "scale_attn_by_inverse_layer_idx",
		"tie_word_embeddings", "add_cross_attention", "resid_pdrop",
		"embd_pdrop", "attn_pdrop",
	};
	json_t *v;
	int r;

	m->n_positions = 1024;
	m->layer_norm_epsilon = 1e-5;
	if ((r = check_keys(cfg, "gpt2", known, ARRAY_SIZE(known), err, errlen)) < 0)
		return r;
	if ((r = get_int(cfg, "n_layer", 1, 256, 1, &m->n_layer, err, errlen)) < 0 ||
	    (r = get_int(cfg, "n_head", 1, 1024, 1, &m->n_head, err, errlen)) < 0 ||
	    (r = get_int(cfg, "n_embd", 1, 16384, 1, &m->n_embd, err, errlen)) < 0 ||
	    (r = get_int(cfg, "vocab_size", 256, 1000000, 1, &m->vocab_size, err, errlen)) < 0 ||
	    (r = get_int(cfg, "n_positions", 1, 131072, 0, &m->n_positions, err, errlen)) < 0)
		return r;
	v = json_object_get(cfg, "n_ctx");
	if (v && (!json_is_integer(v) || json_integer_value(v) != m->n_positions))
		return util_fail(err, errlen, -EINVAL, "config.json: 'n_ctx' must equal 'n_positions' (%d)",
			    m->n_positions);
	if (m->n_embd % m->n_head)
		return util_fail(err, errlen, -EINVAL,
			    "config.json: n_embd (%d) must be a multiple of n_head (%d)", m->n_embd,
			    m->n_head);
	if ((r = get_pos(cfg, "layer_norm_epsilon", 1, &m->layer_norm_epsilon, err, errlen)) < 0)
		return r;
	if ((r = expect_value(cfg, "activation_function", json_string("gelu_new"), err, errlen)) ||
	    (r = expect_value(cfg, "n_inner", json_integer(4 * m->n_embd), err, errlen)) ||
	    (r = expect_value(cfg, "scale_attn_weights", json_true(), err, errlen)) ||
	    (r = expect_value(cfg, "scale_attn_by_inverse_layer_idx", json_false(), err, errlen)) ||
	    (r = expect_value(cfg, "tie_word_embeddings", json_true(), err, errlen)) ||
	    (r = expect_value(cfg, "add_cross_attention", json_false(), err, errlen)))
		return r;
	for (const char *const *p = (const char *const[]){"resid_pdrop", "embd_pdrop", "attn_pdrop",
							    NULL}; *p; p++) {
		v = json_object_get(cfg, *p);
		if (v && (!json_is_number(v) || !(json_number_value(v) >= 0) ||
			  !(json_number_value(v) < 1)))
			return util_fail(err, errlen, -EINVAL, "config.json: '%s' must be a number "
					 "in [0, 1)", *p);
		if (v && json_number_value(v) > m->dropout)
			m->dropout = json_number_value(v);
	}
	m->n_kv_head = m->n_head;
	m->head_dim = m->n_embd / m->n_head;
	m->intermediate_size = 4 * m->n_embd;
	m->tie_word_embeddings = 1;
	m->attention_bias = m->mlp_bias = 1;
	return 0;
}

/* rope_scaling or rope_parameters: null, default, or llama3 with its four keys. */
static int parse_rope(json_t *cfg, struct model_config *m, char *err, size_t errlen)
{
	json_t *rs = json_object_get(cfg, "rope_scaling"), *rp = json_object_get(cfg, "rope_parameters");
	const char *name = "rope_scaling", *type, *k;
	json_t *v, *x;
	int r;

	if (rs && !json_is_null(rs) && rp && !json_is_null(rp))
		return util_fail(err, errlen, -EINVAL, "config.json: give 'rope_scaling' or "
			    "'rope_parameters', not both");
	if (!rs || json_is_null(rs))
		rs = rp, name = "rope_parameters";
	if (!rs || json_is_null(rs))
		return 0;
	if (!json_is_object(rs))
		return util_fail(err, errlen, -EINVAL, "config.json: '%s' must be an object", name);
	x = json_object_get(rs, "rope_type");
	if (!x)
		x = json_object_get(rs, "type");
	type = x ? json_string_value(x) : "default";
	if (!type)
		return util_fail(err, errlen, -EINVAL, "config.json: %s.rope_type must be a string",
			    name);
	if (strcmp(type, "default") && strcmp(type, "llama3"))
		return util_fail(err, errlen, -EOPNOTSUPP, "config.json: %s type '%.40s' is not "
			    "supported (supported: default, llama3)", name, type);
	m->rope_type = strcmp(type, "llama3") ? ROPE_DEFAULT : ROPE_LLAMA3;
	json_object_foreach(rs, k, v) {
		double d = 0;

		if (!strcmp(k, "rope_type") || !strcmp(k, "type"))
			continue;
		if (!strcmp(k, "rope_theta")) {
			r = get_pos(rs, k, 1e12, &m->rope_theta, err, errlen);
		} else if (m->rope_type == ROPE_LLAMA3 && !strcmp(k, "factor")) {
			r = get_pos(rs, k, 1e6, &m->rope_factor, err, errlen);
		} else if (m->rope_type == ROPE_LLAMA3 && !strcmp(k, "low_freq_factor")) {
			r = get_pos(rs, k, 1e6, &m->rope_low_freq_factor, err, errlen);
		} else if (m->rope_type == ROPE_LLAMA3 && !strcmp(k, "high_freq_factor")) {
			r = get_pos(rs, k, 1e6, &m->rope_high_freq_factor, err, errlen);
		} else if (m->rope_type == ROPE_LLAMA3 && !strcmp(k, "original_max_position_embeddings")) {
			r = get_pos(rs, k, 1e7, &d, err, errlen);
			if (r == 0 && floor(d) != d)
				r = util_fail(err, errlen, -EINVAL, "config.json: %s.%s must be a whole "
					 "number", name, k);
			m->rope_original_max = (int)d;
		} else {
			return util_fail(err, errlen, -EOPNOTSUPP, "config.json: unknown key '%s.%.40s' "
				    "(it may change the maths)", name, k);
		}
		if (r < 0)
			return r;
	}
	if (m->rope_type == ROPE_LLAMA3 &&
	    (!m->rope_factor || !m->rope_low_freq_factor || !m->rope_high_freq_factor ||
	     !m->rope_original_max || m->rope_high_freq_factor <= m->rope_low_freq_factor))
		return util_fail(err, errlen, -EINVAL, "config.json: %s type llama3 needs factor, "
			    "low_freq_factor < high_freq_factor and original_max_position_embeddings",
			    name);
	return 0;
}

static int parse_llama(json_t *cfg, struct model_config *m, char *err, size_t errlen)
{
	static const char *const known[] = {
		"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
		"num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
		"rope_parameters", "tie_word_embeddings", "attention_bias", "mlp_bias",
		"max_position_embeddings", "vocab_size", "hidden_act", "attention_dropout",
		"pretraining_tp",
	};
	json_t *v;
	int r;

	m->n_positions = 2048;
	m->vocab_size = 32000;
	m->layer_norm_epsilon = 1e-6;
	m->rope_theta = 10000;
	if ((r = check_keys(cfg, "llama", known, ARRAY_SIZE(known), err, errlen)) < 0)
		return r;
	if ((r = get_int(cfg, "num_hidden_layers", 1, 256, 1, &m->n_layer, err, errlen)) < 0 ||
	    (r = get_int(cfg, "num_attention_heads", 1, 1024, 1, &m->n_head, err, errlen)) < 0 ||
	    (r = get_int(cfg, "hidden_size", 1, 32768, 1, &m->n_embd, err, errlen)) < 0 ||
	    (r = get_int(cfg, "intermediate_size", 1, 262144, 1, &m->intermediate_size, err,
			 errlen)) < 0 ||
	    (r = get_int(cfg, "vocab_size", 256, 1000000, 0, &m->vocab_size, err, errlen)) < 0 ||
	    (r = get_int(cfg, "max_position_embeddings", 1, 1048576, 0, &m->n_positions, err,
			 errlen)) < 0)
		return r;
	m->n_kv_head = m->n_head;
	if (m->n_embd % m->n_head == 0)
		m->head_dim = m->n_embd / m->n_head;
	v = json_object_get(cfg, "head_dim");
	if ((r = get_int(cfg, "num_key_value_heads", 1, 1024, 0, &m->n_kv_head, err, errlen)) < 0 ||
	    (v && !json_is_null(v) &&
	     (r = get_int(cfg, "head_dim", 2, 1024, 0, &m->head_dim, err, errlen)) < 0))
		return r;
	if (m->head_dim == 0)
		return util_fail(err, errlen, -EINVAL, "config.json: hidden_size (%d) is not a multiple "
			    "of num_attention_heads (%d); give head_dim", m->n_embd, m->n_head);
	if (m->head_dim % 2)
		return util_fail(err, errlen, -EINVAL, "config.json: head_dim %d must be even (RoPE "
			    "rotates pairs)", m->head_dim);
	if (m->n_head % m->n_kv_head)
		return util_fail(err, errlen, -EINVAL, "config.json: num_attention_heads (%d) must be "
			    "a multiple of num_key_value_heads (%d)", m->n_head, m->n_kv_head);
	if ((r = get_pos(cfg, "rms_norm_eps", 1, &m->layer_norm_epsilon, err, errlen)) < 0 ||
	    (r = get_pos(cfg, "rope_theta", 1e12, &m->rope_theta, err, errlen)) < 0 ||
	    (r = get_bool(cfg, "tie_word_embeddings", &m->tie_word_embeddings, err, errlen)) < 0 ||
	    (r = get_bool(cfg, "attention_bias", &m->attention_bias, err, errlen)) < 0 ||
	    (r = get_bool(cfg, "mlp_bias", &m->mlp_bias, err, errlen)) < 0 ||
	    (r = parse_rope(cfg, m, err, errlen)) < 0)
		return r;
	if ((r = expect_value(cfg, "hidden_act", json_string("silu"), err, errlen)))
		return r;
	/* a base below 1 turns the rotation frequencies into infinities */
	if (m->rope_theta < 1)
		return util_fail(err, errlen, -EINVAL, "config.json: 'rope_theta' must be at least 1 "
				 "(it is %g)", m->rope_theta);
	v = json_object_get(cfg, "attention_dropout");
	if (v && (!json_is_number(v) || !(json_number_value(v) >= 0) ||
		  !(json_number_value(v) < 1)))
		return util_fail(err, errlen, -EINVAL, "config.json: 'attention_dropout' must be a "
			    "number in [0, 1)");
	if (v)
		m->dropout = json_number_value(v);
	/* pretraining_tp only splits the matmuls; the maths is the same */
	v = json_object_get(cfg, "pretraining_tp");
	if (v && !json_is_integer(v))
		return util_fail(err, errlen, -EINVAL, "config.json: 'pretraining_tp' must be an "
			    "integer");
	return 0;
}

int modelcfg_parse(json_t *cfg, struct model_config *out, char *err, size_t errlen)
{
	struct model_config m = {0};
	const char *mt;
	json_t *v;
	int r;

	if (!json_is_object(cfg))
		return util_fail(err, errlen, -EINVAL, "config.json must be a JSON object");
	v = json_object_get(cfg, "model_type");
	if (!v)
		return util_fail(err, errlen, -EINVAL, "config.json: missing required key 'model_type'");
	mt = json_string_value(v);
	if (!mt)
		return util_fail(err, errlen, -EINVAL, "config.json: 'model_type' must be a string");
	if (!strcmp(mt, "gpt2"))
		r = parse_gpt2(cfg, &m, err, errlen);
	else if (!strcmp(mt, "llama"))
		r = parse_llama(cfg, &m, err, errlen);
	else
		return util_fail(err, errlen, -EOPNOTSUPP,
			    "config.json: unknown model_type '%.40s' (supported: gpt2, llama)", mt);
	if (r < 0)
		return r;
	snprintf(m.model_type, sizeof(m.model_type), "%s", mt);
	*out = m;
	return 0;
}

uint64_t modelcfg_n_params(const struct model_config *m)
{
	uint64_t C = m->n_embd, L = m->n_layer, V = m->vocab_size, F = m->intermediate_size;
	uint64_t Q = (uint64_t)m->n_head * m->head_dim, KV = (uint64_t)m->n_kv_head * m->head_dim;
	uint64_t layer;

	if (strcmp(m->model_type, "llama")) {
		/* wte + wpe + per layer (ln1, qkv, proj, ln2, fc, fcproj) + ln_f */
		layer = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) +
			(4 * C * C + C);
		return V * C + (uint64_t)m->n_positions * C + L * layer + 2 * C;
	}
	/* embed (+ lm_head) + per layer (2 norms, q k v o, gate up down) + norm */
	layer = 2 * C + C * (Q + 2 * KV) + Q * C + 3 * C * F;
	if (m->attention_bias)
		layer += Q + 2 * KV + C;
	if (m->mlp_bias)
		layer += 2 * F + C;
	return V * C * (m->tie_word_embeddings ? 1 : 2) + L * layer + C;
}

double modelcfg_flops_per_token(const struct model_config *m, int seq_len)
{
	int hd = m->head_dim ? m->head_dim : m->n_embd / (m->n_head ? m->n_head : 1);

	return 6.0 * (double)modelcfg_n_params(m) + 6.0 * m->n_layer * (double)seq_len * m->n_head * hd;
}

json_t *modelcfg_to_json(const struct model_config *m)
{
	json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:f, s:I}", "model_type",
			      m->model_type, "n_layer", m->n_layer, "n_head", m->n_head, "n_embd",
			      m->n_embd, "n_positions", m->n_positions, "vocab_size", m->vocab_size,
			      "layer_norm_epsilon", m->layer_norm_epsilon, "n_params",
			      (json_int_t)modelcfg_n_params(m));

	if (o && !strcmp(m->model_type, "llama")) {
		json_object_set_new(o, "n_kv_head", json_integer(m->n_kv_head));
		json_object_set_new(o, "head_dim", json_integer(m->head_dim));
		json_object_set_new(o, "intermediate_size", json_integer(m->intermediate_size));
		json_object_set_new(o, "rope_theta", json_real(m->rope_theta));
		json_object_set_new(o, "tie_word_embeddings", json_boolean(m->tie_word_embeddings));
	}
	return o;
}

void trainparams_defaults(const struct model_config *m, struct train_params *p)
{
	memset(p, 0, sizeof(*p));
	p->steps = 100;
	p->batch = 8;
	p->seq_len = m->n_positions < 64 ? m->n_positions : 64;
	p->lr = 1e-3;
	p->warmup = 10;
	snprintf(p->schedule, sizeof(p->schedule), "cosine");
	p->weight_decay = 0.0;
	p->grad_clip = 1.0;
	p->seed = 1337;
	snprintf(p->device, sizeof(p->device), "auto");
}

int bundle_valid_class(const char *s)
{
	size_t n = 0;

	if (!s)
		return 0;
	for (; s[n]; n++)
		if (n >= BUNDLE_MAX_CLASS ||
		    !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_' ||
		      s[n] == '.' || s[n] == '-'))
			return 0;
	return n > 0;
}

static int get_num(json_t *v, const char *k, double lo, double hi, double *out, char *err,
		   size_t errlen)
{
	if (!json_is_number(v))
		return util_fail(err, errlen, -EINVAL, "bursar.json: '%s' must be a number", k);
	if (!isfinite(json_number_value(v)) || json_number_value(v) < lo ||
	    json_number_value(v) > hi)
		return util_fail(err, errlen, -ERANGE, "bursar.json: '%s' = %g is out of range [%g, %g]",
			    k, json_number_value(v), lo, hi);
	*out = json_number_value(v);
	return 0;
}

/* Integer-valued keys of bursar.json: name, bounds, and where they go. */
static int apply_int(json_t *v, const char *k, double lo, double hi, double *d, char *err,
		     size_t errlen)
{
	int r = get_num(v, k, lo, hi, d, err, errlen);

	if (r == 0 && floor(*d) != *d)
		return util_fail(err, errlen, -EINVAL, "bursar.json: '%s' must be a whole number", k);
	return r;
}

int trainparams_apply(json_t *o, const struct model_config *m, struct train_params *p, char *err,
		      size_t errlen)
{
	struct train_params q = *p;
	double tokens = 0, d;
	const char *k;
	json_t *v;
	int r = 0;

	if (!json_is_object(o))
		return util_fail(err, errlen, -EINVAL, "bursar.json must be a JSON object");
	json_object_foreach(o, k, v) {
		if (!strcmp(k, "steps")) {
			r = apply_int(v, k, 1, 1e7, &d, err, errlen);
			q.steps = (long)d;
		} else if (!strcmp(k, "tokens")) {
			r = apply_int(v, k, 1, 1e13, &tokens, err, errlen);
		} else if (!strcmp(k, "batch")) {
			r = apply_int(v, k, 1, 4096, &d, err, errlen);
			q.batch = (int)d;
		} else if (!strcmp(k, "seq_len")) {
			r = apply_int(v, k, 2, m->n_positions, &d, err, errlen);
			q.seq_len = (int)d;
		} else if (!strcmp(k, "lr")) {
			r = get_num(v, k, 0, 10, &q.lr, err, errlen);
		} else if (!strcmp(k, "warmup")) {
			r = apply_int(v, k, 0, 1e7, &d, err, errlen);
			q.warmup = (int)d;
		} else if (!strcmp(k, "schedule")) {
			const char *s = json_string_value(v);
			if (!s || (strcmp(s, "cosine") && strcmp(s, "linear") && strcmp(s, "constant")))
				return util_fail(err, errlen, -EINVAL, "bursar.json: 'schedule' must be "
					    "\"cosine\", \"linear\" or \"constant\"");
			snprintf(q.schedule, sizeof(q.schedule), "%s", s);
		} else if (!strcmp(k, "weight_decay")) {
			r = get_num(v, k, 0, 10, &q.weight_decay, err, errlen);
		} else if (!strcmp(k, "grad_clip")) {
			r = get_num(v, k, 0, 1e6, &q.grad_clip, err, errlen);
		} else if (!strcmp(k, "seed")) {
			r = apply_int(v, k, 0, 9007199254740991.0, &d, err, errlen);
			q.seed = (uint64_t)d;
		} else if (!strcmp(k, "ranks") || !strcmp(k, "gpus")) {
			if (json_is_string(v) && !strcmp(json_string_value(v), "auto")) {
				q.ranks = 0;
				continue;
			}
			/* 0 is "auto" too, as trainparams_to_json writes it. */
			r = apply_int(v, k, 0, 1024, &d, err, errlen);
			q.ranks = (int)d;
		} else if (!strcmp(k, "budget")) {
			r = get_num(v, k, 0, 1e9, &q.budget, err, errlen);
		} else if (!strcmp(k, "deadline")) {
			r = get_num(v, k, 0, 1e9, &q.deadline_s, err, errlen);
		} else if (!strcmp(k, "priority")) {
			r = apply_int(v, k, -100, 100, &d, err, errlen);
			q.priority = (int)d;
		} else if (!strcmp(k, "ckpt_every")) {
			r = apply_int(v, k, 0, 1e7, &d, err, errlen);
			q.ckpt_every = (long)d;
		} else if (!strcmp(k, "eval_every")) {
			r = apply_int(v, k, 0, 1e7, &d, err, errlen);
			q.eval_every = (long)d;
		} else if (!strcmp(k, "grad_accum")) {
			r = apply_int(v, k, 0, 4096, &d, err, errlen);
			q.grad_accum = (int)d;
		} else if (!strcmp(k, "zero")) {
			r = apply_int(v, k, 0, 1, &d, err, errlen);
			q.zero = (int)d;
		} else if (!strcmp(k, "device")) {
			const char *s = json_string_value(v);
			if (!s || (strcmp(s, "cpu") && strcmp(s, "cuda") && strcmp(s, "auto")))
				return util_fail(err, errlen, -EINVAL, "bursar.json: 'device' must be "
					    "\"cpu\", \"cuda\" or \"auto\"");
			snprintf(q.device, sizeof(q.device), "%s", s);
		} else if (!strcmp(k, "node_class")) {
			const char *s = json_string_value(v);
			if (!s || (s[0] && !bundle_valid_class(s)))
				return util_fail(err, errlen, -EINVAL, "bursar.json: 'node_class' must "
					    "be a node class name (1-%d chars of [a-z0-9_.-], e.g. "
					    "\"h100\"), or \"\" for any", BUNDLE_MAX_CLASS);
			snprintf(q.node_class, sizeof(q.node_class), "%s", s);
		} else {
			return util_fail(err, errlen, -EINVAL, "bursar.json: unknown key '%.60s' (known: "
				    "steps, tokens, batch, seq_len, lr, warmup, schedule, "
				    "weight_decay, grad_clip, seed, ranks, budget, deadline, priority, "
				    "ckpt_every, eval_every, grad_accum, zero, device, node_class)",
				    k);
		}
		if (r < 0)
			return r;
	}
	if (tokens > 0) {
		double per = (double)q.batch * q.seq_len;
		q.steps = (long)ceil(tokens / per);
		if (q.steps > 10000000)
			return util_fail(err, errlen, -ERANGE, "bursar.json: 'tokens' needs %ld steps "
				    "(limit 10000000)", q.steps);
	}
	if (q.seq_len > m->n_positions)
		return util_fail(err, errlen, -ERANGE, "bursar.json: seq_len %d exceeds the model's "
			    "n_positions %d", q.seq_len, m->n_positions);
	if (q.ranks > 0 && q.batch % q.ranks)
		return util_fail(err, errlen, -EINVAL, "bursar.json: batch %d must be a multiple of "
			    "ranks %d", q.batch, q.ranks);
	if (q.grad_accum > 0 && q.batch % q.grad_accum)
		return util_fail(err, errlen, -EINVAL, "bursar.json: batch %d must be a multiple of "
			    "grad_accum %d", q.batch, q.grad_accum);
	if (q.grad_accum > 0 && q.ranks > 0 && q.batch % ((long)q.ranks * q.grad_accum))
		return util_fail(err, errlen, -EINVAL, "bursar.json: batch %d must be a multiple of "
			    "ranks x grad_accum = %d", q.batch, q.ranks * q.grad_accum);
	*p = q;
	return 0;
}

json_t *trainparams_to_json(const struct train_params *p)
{
	return json_pack("{s:I, s:i, s:i, s:f, s:i, s:s, s:f, s:f, s:I, s:i, s:f, s:f, s:i, s:I, "
			 "s:I, s:i, s:i, s:s, s:s}",
			 "steps", (json_int_t)p->steps, "batch", p->batch, "seq_len", p->seq_len,
			 "lr", p->lr, "warmup", p->warmup, "schedule", p->schedule,
			 "weight_decay", p->weight_decay, "grad_clip", p->grad_clip, "seed",
			 (json_int_t)p->seed, "ranks", p->ranks, "budget", p->budget, "deadline",
			 p->deadline_s, "priority", p->priority, "ckpt_every",
			 (json_int_t)p->ckpt_every, "eval_every", (json_int_t)p->eval_every,
			 "grad_accum", p->grad_accum, "zero", p->zero, "device", p->device, "node_class", p->node_class);
}

static int load_json(const char *path, const char *name, json_t **out, char *err, size_t errlen)
{
	json_error_t je;
	char *buf;
	size_t len;
	int r;

	r = util_read_file(path, BUNDLE_MAX_CONFIG, &buf, &len);
	if (r == -EFBIG)
		return util_fail(err, errlen, r, "%s is too large (limit %u bytes)", name,
			    BUNDLE_MAX_CONFIG);
	if (r == -EINVAL)
		return util_fail(err, errlen, r, "%s is not a regular file", name);
	if (r < 0)
		return r;
	*out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	free(buf);
	if (!*out)
		return util_fail(err, errlen, -EINVAL, "%s is not valid JSON: line %d: %s", name, je.line,
			    je.text);
	return 0;
}

static int is_data_file(const char *n)
{
	size_t l = strlen(n);

	return (l > 4 && !strcmp(n + l - 4, ".txt")) || (l > 6 && !strcmp(n + l - 6, ".jsonl"));
}

/* Sums the sizes of data files under dir (regular files only, bounded depth). */
static int scan_data(const char *dir, int depth, struct bundle_info *bi, char *err, size_t errlen)
{
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (depth > BUNDLE_MAX_DATA_DEPTH)
		return 0;
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d)) && r == 0) {
		char p[PATH_MAX];
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			r = scan_data(p, depth + 1, bi, err, errlen);
		} else if (S_ISREG(st.st_mode) && is_data_file(de->d_name)) {
			if (++bi->data_files > BUNDLE_MAX_DATA_FILES)
				r = util_fail(err, errlen, -E2BIG, "data/ holds more than %d files",
					 BUNDLE_MAX_DATA_FILES);
			bi->data_bytes += st.st_size;
		}
	}
	closedir(d);
	return r;
}

int bundle_check(const char *dir, struct bundle_info *out, char *err, size_t errlen)
{
	struct bundle_info bi = {0};
	char p[PATH_MAX];
	struct stat st;
	json_t *j = NULL;
	int r;

	snprintf(p, sizeof(p), "%s/config.json", dir);
	r = load_json(p, "config.json", &j, err, errlen);
	if (r == -ENOENT)
		return util_fail(err, errlen, r, "the bundle has no config.json at its top level");
	if (r < 0)
		return err[0] ? r : util_fail(err, errlen, r, "cannot read config.json: %s", strerror(-r));
	r = modelcfg_parse(j, &bi.model, err, errlen);
	json_decref(j);
	if (r < 0)
		return r;
	trainparams_defaults(&bi.model, &bi.params);

	snprintf(p, sizeof(p), "%s/bursar.json", dir);
	r = load_json(p, "bursar.json", &j, err, errlen);
	if (r < 0 && r != -ENOENT)
		return err[0] ? r : util_fail(err, errlen, r, "cannot read bursar.json: %s", strerror(-r));
	if (r == 0) {
		r = trainparams_apply(j, &bi.model, &bi.params, err, errlen);
		json_decref(j);
		if (r < 0)
			return r;
	}

	snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
	if (lstat(p, &st) == 0) {
		if (!S_ISREG(st.st_mode) || st.st_size > BUNDLE_MAX_TOKENIZER)
			return util_fail(err, errlen, -EINVAL, "tokenizer.json must be a regular file "
					 "of at most %u MiB", BUNDLE_MAX_TOKENIZER >> 20);
		bi.has_tokenizer = 1;
	}
	snprintf(p, sizeof(p), "%s/model.safetensors", dir);
	bi.has_weights = lstat(p, &st) == 0 && S_ISREG(st.st_mode);
	snprintf(p, sizeof(p), "%s/model.safetensors.index.json", dir);
	if (!bi.has_weights)
		bi.has_weights = lstat(p, &st) == 0 && S_ISREG(st.st_mode);

	snprintf(p, sizeof(p), "%s/data", dir);
	if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode))
		return util_fail(err, errlen, -ENOENT, "the bundle has no data/ directory");
	r = scan_data(p, 0, &bi, err, errlen);
	if (r < 0)
		return err[0] ? r : util_fail(err, errlen, r, "cannot read data/: %s", strerror(-r));
	if (bi.data_bytes == 0)
		return util_fail(err, errlen, -ENODATA, "data/ holds no text: add *.txt or *.jsonl files");
	*out = bi;
	return 0;
}

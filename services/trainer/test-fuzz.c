/* test-fuzz — deterministic mutation fuzzing of the trainer's untrusted
 * parsers: st_load() over mutated safetensors files (bit flips, byte
 * overwrites with boundary values, truncations, header length edits, header
 * JSON splices), modelcfg_parse() over mutated config.json values, keys and
 * text (accepted small models are built and run once), tok_load() over
 * mutated tokenizer.json files (then encoding random bytes with whatever
 * loads), and st_load_index() over mutated model.safetensors.index.json
 * files. Each input must load or fail with a sentence; ASan/UBSan (make test
 * builds this under both) catch the rest. Seeded and bounded, so every run
 * is the same. Also the three bad-bundle errors by name: shape mismatch,
 * truncation, header length past the file. */
#include "../../tests/t.h"
#include "test-fuzz.h"
#include "bundle.h"
#include "model.h"
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define FUZZ_ITERS 3000

static char dir[] = "/tmp/test-fuzz-XXXXXX";
static struct model_config gpt = {.model_type = "gpt2", .n_layer = 1, .n_head = 2, .n_embd = 8,
				  .n_positions = 8, .vocab_size = 11, .layer_norm_epsilon = 1e-5};

/* One mutation of orig (len bytes) into out; returns the new length. */
static size_t mutate(const char *orig, size_t len, char *out, uint64_t hlen)
{
	static const unsigned char special[] = {0, 0xff, 0x7f, 0x80, '"', '[', ']', '{', '}',
						',', ':', '-', '9', 'e'};
	size_t n = len, k = next() % 4 + 1;

	memcpy(out, orig, len);
	for (size_t j = 0; j < k; j++) {
		size_t at;

		switch (next() % 6) {
		case 0: /* bit flip anywhere */
			at = next() % n;
			out[at] ^= (char)(1u << (next() % 8));
			break;
		case 1: /* a structural byte inside the header */
			at = 8 + next() % (hlen < n - 8 ? hlen : n - 8);
			out[at] = (char)special[next() % sizeof(special)];
			break;
		case 2: /* truncate */
			n = next() % n;
			if (n == 0)
				return 0;
			break;
		case 3: /* header length: random, off by a little, or huge */
			if (n >= 8) {
				uint64_t v = next() % 3 == 0 ? next() : hlen + (next() % 17) - 8;
				for (int i = 0; i < 8; i++)
					out[i] = (char)(v >> (8 * i));
			}
			break;
		case 4: /* a digit in the header becomes another digit */
			for (size_t t = 0; t < 64; t++) {
				at = 8 + next() % (hlen < n - 8 ? hlen : n - 8);
				if (at < n && out[at] >= '0' && out[at] <= '9') {
					out[at] = (char)('0' + next() % 10);
					break;
				}
			}
			break;
		default: /* copy a header span over another */
			if (hlen > 16 && n > 8 + hlen) {
				size_t a = 8 + next() % hlen, b = 8 + next() % hlen, l = next() % 12;
				if (a + l <= 8 + hlen && b + l <= 8 + hlen)
					memmove(out + a, out + b, l);
			}
			break;
		}
		if (n < 1)
			return 0;
	}
	return n;
}

static void t_safetensors_fuzz(void)
{
	struct model g, h;
	char path[300], mpath[300], err[512], *orig = NULL, *buf;
	size_t len = 0;
	uint64_t hlen = 0;
	int ok = 0, rejected = 0;

	T_EQ_INT(model_build(&g, &gpt, 1, 4), 0);
	T_EQ_INT(model_build(&h, &gpt, 1, 4), 0);
	model_init_weights(&g, 3);
	snprintf(path, sizeof(path), "%s/orig.safetensors", dir);
	snprintf(mpath, sizeof(mpath), "%s/m.safetensors", dir);
	T_EQ_INT(st_save(path, &g, err, sizeof(err)), 0);
	T_EQ_INT(util_read_file(path, 1 << 20, &orig, &len), 0);
	buf = malloc(len);
	if (!orig || !buf)
		return;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | (unsigned char)orig[i];
	for (int it = 0; it < FUZZ_ITERS; it++) {
		size_t n = mutate(orig, len, buf, hlen);
		int r;

		write_file(mpath, buf, n);
		err[0] = 0;
		r = st_load(mpath, &h, err, sizeof(err));
		if (r == 0)
			ok++;
		else
			rejected++;
		T_CHECK(r == 0 || (r < 0 && strlen(err) > 10), "iteration %d: status %d, error '%s'",
			it, r, err);
		if (t_case_failed)
			break;
	}
	T_CHECK(rejected > FUZZ_ITERS / 2, "only %d of %d mutations rejected", rejected, FUZZ_ITERS);
	printf("# safetensors fuzz: %d loaded, %d rejected with a sentence\n", ok, rejected);
	free(orig);
	free(buf);
	model_free(&g);
	model_free(&h);
}

/* The named bad-bundle errors. */
static void t_bad_weights(void)
{
	struct model g, wide;
	struct model_config w = gpt;
	char path[300], err[512], *orig = NULL;
	size_t len = 0;

	w.n_embd = 12;
	T_EQ_INT(model_build(&g, &gpt, 1, 4), 0);
	T_EQ_INT(model_build(&wide, &w, 1, 4), 0);
	model_init_weights(&wide, 1);
	snprintf(path, sizeof(path), "%s/wide.safetensors", dir);
	T_EQ_INT(st_save(path, &wide, err, sizeof(err)), 0);
	T_CHECK(st_load(path, &g, err, sizeof(err)) == -EINVAL &&
		strstr(err, "tensor 'wte.weight' dimension 1 is 12, the config needs 8"),
		"shape mismatch: %s", err);
	T_EQ_INT(util_read_file(path, 1 << 20, &orig, &len), 0);
	if (!orig)
		return;
	write_file(path, orig, len - 5);
	T_CHECK(st_load(path, &wide, err, sizeof(err)) == -EINVAL && strstr(err, "data_offsets"),
		"truncated data: %s", err);
	write_file(path, orig, 100);
	T_CHECK(st_load(path, &wide, err, sizeof(err)) == -EINVAL &&
		strstr(err, "header length") && strstr(err, "file 100 bytes"),
		"header length past the file: %s", err);
	free(orig);
	model_free(&g);
	model_free(&wide);
}

static void t_config_fuzz(void)
{
	static const char *bases[] = {
		"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,\"n_positions\":64,"
		"\"vocab_size\":256,\"activation_function\":\"gelu_new\",\"layer_norm_epsilon\":1e-5}",
		"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,"
		"\"num_key_value_heads\":2,\"hidden_size\":64,\"intermediate_size\":96,"
		"\"max_position_embeddings\":64,\"vocab_size\":257,\"rms_norm_eps\":1e-5,"
		"\"rope_theta\":10000.0,\"hidden_act\":\"silu\",\"tie_word_embeddings\":false,"
		"\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
		"\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}"};
	int ok = 0, rejected = 0;

	for (int it = 0; it < FUZZ_ITERS; it++) {
		json_t *c = json_loads(bases[it % 2], 0, NULL);
		struct model_config m;
		const char *keys[32];
		char err[512] = "";
		const char *k;
		json_t *v;
		int nk = 0, r;

		json_object_foreach(c, k, v)
			if (nk < 32)
				keys[nk++] = k;
		for (int j = 0, n = (int)(next() % 3) + 1; j < n; j++) {
			const char *key = keys[next() % nk];
			if (next() % 8 == 0)
				json_object_del(c, key);
			else
				json_object_set_new(c, key, random_value());
			nk = 0;
			json_object_foreach(c, k, v)
				if (nk < 32)
					keys[nk++] = k;
			if (!nk)
				break;
		}
		r = modelcfg_parse(c, &m, err, sizeof(err));
		if (r == 0) {
			ok++;
			/* an accepted config has sane sizes the trainer can build on */
			T_CHECK(m.n_layer > 0 && m.n_head > 0 && m.n_embd > 0 && m.vocab_size > 0 &&
				m.n_positions > 0 && modelcfg_n_params(&m) > 0,
				"iteration %d accepted a config with a zero size", it);
		} else {
			rejected++;
			T_CHECK(r < 0 && strlen(err) > 10, "iteration %d: status %d, error '%s'", it,
				r, err);
		}
		json_decref(c);
		if (t_case_failed)
			break;
	}
	T_CHECK(ok > 0 && rejected > 0, "%d accepted, %d rejected", ok, rejected);
	printf("# config fuzz: %d accepted, %d rejected with a sentence\n", ok, rejected);
}

/* ---- config.json: keys of both families, nested rope objects, text ----- */

static json_t *random_rope(void)
{
	static const char *types[] = {"llama3", "default", "linear", "dynamic", "yarn", ""};
	static const char *keys[] = {"factor", "low_freq_factor", "high_freq_factor",
				     "original_max_position_embeddings", "rope_theta", "beta"};
	json_t *o = json_object();

	json_object_set_new(o, next() % 4 ? "rope_type" : "type",
			    next() % 6 ? json_string(types[next() % 6]) : random_value());
	for (int i = 0, n = (int)(next() % 5); i < n; i++)
		json_object_set_new(o, keys[next() % 6], random_value());
	return o;
}

#define CONFIG_TEXT_ITERS 2500
#define CONFIG_MAX_BUILDS 120

/* Builds an accepted small config and runs one forward and backward. */
static void run_config(const struct model_config *m, int it)
{
	struct model g;
	int T = m->n_positions < 4 ? m->n_positions : 4, in[4], tg[4];
	float loss;

	T_EQ_INT(model_build(&g, m, 1, T), 0);
	if (t_case_failed)
		return;
	model_init_weights(&g, (uint64_t)it);
	for (int i = 0; i < T; i++) {
		in[i] = (int)(next() % m->vocab_size);
		tg[i] = (int)(next() % m->vocab_size);
	}
	loss = model_forward(&g, in, tg);
	model_backward(&g);
	T_CHECK(isfinite(loss) && loss > 0, "iteration %d: loss %f of an accepted config", it,
		loss);
	model_free(&g);
}

static void t_config_text_fuzz(void)
{
	static const char *bases[] = {
		"{\"model_type\":\"gpt2\",\"n_layer\":1,\"n_head\":2,\"n_embd\":8,\"n_positions\":8,"
		"\"vocab_size\":256,\"activation_function\":\"gelu_new\",\"layer_norm_epsilon\":1e-5,"
		"\"n_inner\":null,\"resid_pdrop\":0.1}",
		"{\"model_type\":\"llama\",\"num_hidden_layers\":1,\"num_attention_heads\":4,"
		"\"num_key_value_heads\":2,\"hidden_size\":16,\"intermediate_size\":24,\"head_dim\":4,"
		"\"max_position_embeddings\":8,\"vocab_size\":260,\"rms_norm_eps\":1e-5,"
		"\"hidden_act\":\"silu\",\"tie_word_embeddings\":true,\"attention_bias\":true,"
		"\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,"
		"\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
		"\"original_max_position_embeddings\":4}}"};
	static const char *keys[] = {
		"n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "n_inner",
		"scale_attn_weights", "tie_word_embeddings", "add_cross_attention", "attn_pdrop",
		"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
		"num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
		"rope_parameters", "attention_bias", "mlp_bias", "max_position_embeddings",
		"attention_dropout", "pretraining_tp", "model_type", "torch_dtype", "use_cache",
		"architectures", "sliding_window", "bos_token_id", ""};
	int ok = 0, rejected = 0, built = 0;
	char text[4096], mut[4096];

	for (int it = 0; it < CONFIG_TEXT_ITERS && !t_case_failed; it++) {
		json_t *c = json_loads(bases[it % 2], 0, NULL);
		struct model_config m;
		char err[512] = "", *s;
		json_error_t je;
		size_t n;
		int r;

		for (int j = 0, k = (int)(next() % 3) + 1; j < k; j++) {
			const char *key = keys[next() % (sizeof(keys) / sizeof(keys[0]))];

			if (next() % 6 == 0)
				json_object_del(c, random_key(c) ?: "");
			else if (!strncmp(key, "rope_", 5) && strcmp(key, "rope_theta"))
				json_object_set_new(c, key, next() % 5 ? random_rope() : random_value());
			else
				json_object_set_new(c, key, random_value());
		}
		s = json_dumps(c, JSON_COMPACT);
		json_decref(c);
		n = s ? strlen(s) : 0;
		if (n >= sizeof(text)) {
			free(s);
			continue;
		}
		memcpy(text, s ?: "", n);
		free(s);
		if (next() % 3 == 0)
			n = mutate_text(text, n, mut);
		else
			memcpy(mut, text, n);
		c = json_loadb(mut, n, JSON_REJECT_DUPLICATES, &je);
		if (!c) {
			rejected++;
			continue;
		}
		if (!json_is_object(c)) {
			json_decref(c);
			rejected++;
			continue;
		}
		r = modelcfg_parse(c, &m, err, sizeof(err));
		json_decref(c);
		if (r == 0) {
			ok++;
			T_CHECK(m.n_layer > 0 && m.n_head > 0 && m.n_embd > 0 &&
				m.vocab_size > 0 && m.n_positions > 0 && m.head_dim > 0 &&
				m.n_kv_head > 0 && m.n_head % m.n_kv_head == 0 &&
				modelcfg_n_params(&m) > 0,
				"iteration %d accepted an inconsistent config", it);
			if (modelcfg_n_params(&m) < 400000 && m.n_layer <= 4 && built < CONFIG_MAX_BUILDS) {
				built++;
				run_config(&m, it);
			}
		} else {
			rejected++;
			T_CHECK(r < 0 && strlen(err) > 10, "iteration %d: status %d, error '%s'", it, r, err);
		}
	}
	T_CHECK(ok > 0 && rejected > 0 && built > 0, "%d accepted, %d rejected, %d built", ok,
		rejected, built);
	printf("# config text fuzz: %d accepted (%d built and run), %d rejected\n", ok, built,
	       rejected);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		printf("FAIL setup: mkdtemp\n");
		return 1;
	}
	t_run("trainer-bad-weights-named", t_bad_weights);
	t_run("trainer-safetensors-fuzz", t_safetensors_fuzz);
	t_run("trainer-config-fuzz", t_config_fuzz);
	t_run("trainer-config-text-fuzz", t_config_text_fuzz);
	util_rm_rf(dir);
	return t_done();
}

/* test-fuzz-tok — deterministic mutation fuzzing of two more untrusted
 * inputs of the trainer: tokenizer.json (tok_load: vocab entries, merges,
 * pre-tokenizers, added tokens, the model block, and the text itself) and
 * model.safetensors.index.json (st_load_index: weight_map entries naming
 * other, missing, misnamed or truncated shards, unknown tensors, many
 * shards, and the text). Every input must load or fail with a sentence. A
 * tokenizer that loads must encode random bytes (invalid UTF-8, runs past
 * TOK_MAX_PIECE) into ids below its n_ids, its pre-tokenizer must cut the
 * input into contiguous pieces covering every byte; an index that loads
 * must yield exactly the weights of the shard (every shard here is a copy
 * of one model). ASan/UBSan catch the rest; seeded, so every run is the same.
 */
#include "../../tests/t.h"
#include "test-fuzz.h"
#include "model.h"
#include "safetensors.h"
#include "tok.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>

#define TOK_ITERS 1500
#define INDEX_ITERS 1500
#define TEXT_MAX (TOK_MAX_PIECE + 600)

static char dir[] = "/tmp/test-fuzz-tok-XXXXXX";

/* A valid byte-level BPE tokenizer: 256 byte symbols, a dozen merges, an
 * end-of-text token; GPT-2 style ("a b" merges, ByteLevel) or Llama-3 style
 * (["a","b"] merges, Split + ByteLevel, ignore_merges). */
static json_t *tok_base(int llama)
{
	static const char *merges[][2] = {{"t", "h"}, {"h", "e"}, {"th", "e"}, {"Ġ", "the"},
					  {"i", "n"}, {"Ġ", "in"}, {"a", "n"}, {"an", "d"},
					  {"Ġ", "and"}, {"1", "2"}, {"12", "3"}, {"Ġ", "Ġ"}};
	json_t *vocab = json_object(), *ms = json_array(), *pre, *bl;
	char sym[4], both[32];
	int id = 256;

	for (int b = 0; b < 256; b++) {
		sym[tok_byte_sym(b, sym)] = 0;
		json_object_set_new(vocab, sym, json_integer(b));
	}
	for (size_t i = 0; i < sizeof(merges) / sizeof(merges[0]); i++) {
		snprintf(both, sizeof(both), "%s%s", merges[i][0], merges[i][1]);
		if (!json_object_get(vocab, both))
			json_object_set_new(vocab, both, json_integer(id++));
		if (llama)
			json_array_append_new(ms, json_pack("[s, s]", merges[i][0], merges[i][1]));
		else
			json_array_append_new(ms, json_sprintf("%s %s", merges[i][0], merges[i][1]));
	}
	bl = json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
		       "use_regex", !llama);
	pre = llama ? json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, o]}", "type", "Sequence",
				"pretokenizers", "type", "Split", "pattern", "Regex",
				"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
				"\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
				"\\s+(?!\\S)|\\s+", "behavior", "Isolated", bl)
		    : bl;
	return json_pack("{s:[{s:i, s:s, s:b}], s:n, s:o, s:{s:s, s:n, s:b, s:o, s:o}}",
			 "added_tokens", "id", id, "content",
			 llama ? "<|end_of_text|>" : "<|endoftext|>", "special", 1, "normalizer",
			 "pre_tokenizer", pre, "model", "type", "BPE", "unk_token", "ignore_merges",
			 llama, "vocab", vocab, "merges", ms);
}

/* A random string: vocab-like symbols, spaces, long runs or raw bytes. */
static json_t *random_string(void)
{
	static const char *parts[] = {"t", "h", "e", "th", "Ġ", " ", "ĠĠ", "\xc3\xa9", "\xff",
				      "'", "1", "<|endoftext|>", ""};
	char s[1300];
	size_t n = 0;

	if (next() % 10 == 0) {
		memset(s, next() % 2 ? 'a' : ' ', sizeof(s) - 1);
		s[sizeof(s) - 1] = 0;
		return json_string(s);
	}
	for (int i = 0, k = (int)(next() % 4); i < k; i++)
		n += snprintf(s + n, sizeof(s) - n, "%s", parts[next() % 13]);
	s[n] = 0;
	return json_string(s) ?: json_string("?");
}

static json_t *random_merge(void)
{
	switch (next() % 5) {
	case 0:
		return random_string();
	case 1:
		return json_pack("[o, o]", random_string(), random_string());
	case 2:
		return json_pack("[o]", random_string());
	case 3:
		return json_pack("[o, o, o]", random_value(), random_string(), random_string());
	default:
		return random_value();
	}
}

static json_t *random_pretok(void)
{
	switch (next() % 6) {
	case 0:
		return json_pack("{s:s, s:b}", "type", "ByteLevel", "use_regex", 0);
	case 1:
		return json_pack("{s:s, s:b}", "type", "ByteLevel", "add_prefix_space", 1);
	case 2:
		return json_pack("{s:s, s:[]}", "type", "Sequence", "pretokenizers");
	case 3:
		return json_pack("{s:s, s:[{s:s, s:{s:o}}, {s:s}]}", "type", "Sequence",
				 "pretokenizers", "type", "Split", "pattern", "Regex",
				 random_string(), "type", "ByteLevel");
	case 4:
		return json_pack("{s:s, s:[{s:s, s:o}, {s:s}]}", "type", "Sequence",
				 "pretokenizers", "type", "Split", "pattern", random_value(),
				 "type", "ByteLevel");
	default:
		return random_value();
	}
}

/* One structural edit of a tokenizer.json tree. */
static void mutate_tok(json_t *j)
{
	json_t *model = json_object_get(j, "model"), *vocab = json_object_get(model, "vocab");
	json_t *ms = json_object_get(model, "merges"), *added = json_object_get(j, "added_tokens");
	const char *k;

	switch (next() % 8) {
	case 0: /* a vocab id */
		if ((k = random_key(vocab)))
			json_object_set_new(vocab, k, next() % 2 ? random_value() :
					    json_integer((json_int_t)(next() % 600)));
		break;
	case 1: /* a vocab entry gone (maybe a byte's symbol) */
		if ((k = random_key(vocab)))
			json_object_del(vocab, k);
		break;
	case 2: /* a new vocab entry */
		if (json_is_object(vocab)) {
			json_t *s = random_string();
			json_object_set_new(vocab, json_string_value(s), next() % 3 ? json_integer(
					    (json_int_t)(next() % (TOK_MAX_VOCAB + 10)) - 5) :
					    random_value());
			json_decref(s);
		}
		break;
	case 3: /* a merge replaced or added */
		if (next() % 2 && json_array_size(ms))
			json_array_set_new(ms, next() % json_array_size(ms), random_merge());
		else
			json_array_insert_new(ms, next() % (json_array_size(ms) + 1), random_merge());
		break;
	case 4:
		json_object_set_new(j, "pre_tokenizer", random_pretok());
		break;
	case 5: /* a model key */
		json_object_set_new(model, (const char *[]){"type", "byte_fallback",
				    "ignore_merges", "vocab", "merges"}[next() % 5], random_value());
		break;
	case 6: /* an added token */
		json_array_append_new(added, json_pack("{s:o, s:o}", "content", random_string(),
						       "id", next() % 2 ? random_value() :
						       json_integer((json_int_t)(next() % 5000))));
		break;
	default: /* a top-level key */
		if (next() % 2 && (k = random_key(j)))
			json_object_del(j, k);
		else
			json_object_set_new(j, next() % 2 ? "normalizer" : "model", random_value());
		break;
	}
}

struct cover {
	const char *text, *at;
	size_t len;
	int bad;
};

static int piece(void *ctx, const char *s, size_t n)
{
	struct cover *c = ctx;

	if (s != c->at || n == 0 || (size_t)(s - c->text) + n > c->len)
		c->bad = 1;
	c->at = s + n;
	return 0;
}

struct ids {
	int n_ids, bad;
	size_t count;
};

static int put(void *ctx, int id)
{
	struct ids *x = ctx;

	if (id < 0 || id >= x->n_ids)
		x->bad = 1;
	x->count++;
	return 0;
}

/* Random text: letters, digits, spaces, newlines, quotes, UTF-8, bad bytes. */
static size_t random_text(char *t)
{
	static const char *parts[] = {"the", " the", " and", "123", "45678", " ", "   ", "\n",
				      "\r\n", "'s", "'LL", "!?", "_", "\xc3\xa9t\xc3\xa9",
				      "\xe4\xb8\xad", "\xff\xfe", "\xc3", "\t", "<|endoftext|>"};
	size_t n = 0;

	if (next() % 12 == 0) {
		n = TOK_MAX_PIECE + next() % 500;
		memset(t, (const char[]){'a', ' ', '7', '!'}[next() % 4], n);
		return n;
	}
	for (int i = 0, k = (int)(next() % 40); i < k; i++) {
		const char *p = parts[next() % (sizeof(parts) / sizeof(parts[0]))];
		size_t l = strlen(p);

		if (n + l > TEXT_MAX)
			break;
		memcpy(t + n, p, l);
		n += l;
	}
	return n;
}

static void t_tokenizer_fuzz(void)
{
	static char text[TEXT_MAX], mut[1 << 16];
	char path[PATH_MAX], err[512];
	int ok = 0, rejected = 0;

	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	for (int it = 0; it < TOK_ITERS && !t_case_failed; it++) {
		json_t *j = tok_base(it % 2);
		struct tok t;
		char *s;
		size_t n;
		int r;

		for (int e = 0, k = (int)(next() % 3) + 1; e < k; e++)
			mutate_tok(j);
		s = json_dumps(j, JSON_COMPACT);
		json_decref(j);
		n = s ? strlen(s) : 0;
		if (!s || n > sizeof(mut)) {
			free(s);
			continue;
		}
		if (next() % 4 == 0)
			n = mutate_text(s, n, mut);
		else
			memcpy(mut, s, n);
		free(s);
		write_file(path, mut, n);
		err[0] = 0;
		r = tok_load(path, &t, err, sizeof(err));
		if (r < 0) {
			rejected++;
			T_CHECK(strlen(err) > 10, "iteration %d: status %d, error '%s'", it, r, err);
			continue;
		}
		ok++;
		for (int k = 0; k < 3 && !t_case_failed; k++) {
			size_t len = random_text(text);
			struct cover c = {.text = text, .at = text, .len = len};
			struct ids x = {.n_ids = t.n_ids};

			tok_pretokenize(&t, text, len, piece, &c);
			T_CHECK(!c.bad && c.at == text + len, "iteration %d: the pieces of %zu bytes "
				"do not cover them", it, len);
			tok_encode(&t, text, len, put, &x);
			T_CHECK(!x.bad && (x.count > 0) == (len > 0), "iteration %d: %zu ids for %zu "
				"bytes, bad id %d", it, x.count, len, x.bad);
		}
		tok_free(&t);
	}
	T_CHECK(ok > 50 && rejected > TOK_ITERS / 4, "%d loaded, %d rejected", ok, rejected);
	printf("# tokenizer fuzz: %d loaded and encoded, %d rejected with a sentence\n", ok,
	       rejected);
}

/* ---- model.safetensors.index.json --------------------------------------- */

static const char *shard_names[] = {
	"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
	"model-bad.safetensors", "nope.safetensors", "../model-00001-of-00002.safetensors",
	"a/b.safetensors", ".safetensors", ".hidden.safetensors", "model.bin", ""};

static json_t *random_shard(void)
{
	if (next() % 8 == 0)
		return random_value();
	return json_string(shard_names[next() % (sizeof(shard_names) / sizeof(shard_names[0]))]);
}

/* One structural edit of an index tree. */
static void mutate_index(json_t *j)
{
	json_t *map = json_object_get(j, "weight_map");
	char name[300];
	const char *k;

	switch (next() % 7) {
	case 0:
	case 1:
		if ((k = random_key(map)))
			json_object_set_new(map, k, random_shard());
		break;
	case 2:
		if ((k = random_key(map)))
			json_object_del(map, k);
		break;
	case 3: /* an extra name: unknown, aliased or ignorable */
		snprintf(name, sizeof(name), "%s", (const char *[]){"h.9.attn.c_attn.weight",
			 "transformer.wte.weight", "lm_head.weight", "h.0.attn.bias",
			 "h.0.attn.masked_bias", "wte.weight", "", "model.norm.weight"}[next() % 8]);
		json_object_set_new(map, name, random_shard());
		break;
	case 4: /* many distinct shards, past the cap now and then */
		for (int i = 0, n = next() % 4 ? 40 : ST_MAX_SHARDS + 2; i < n; i++) {
			snprintf(name, sizeof(name), "x.%d", i);
			json_object_set_new(map, name, json_sprintf("s%d.safetensors", i));
		}
		break;
	case 5:
		json_object_set_new(j, next() % 2 ? "weight_map" : "metadata", random_value());
		break;
	default: /* a very long shard name */
		memset(name, 'm', sizeof(name) - 1);
		strcpy(name + sizeof(name) - 13, ".safetensors");
		if ((k = random_key(map)))
			json_object_set_new(map, k, json_string(name));
		break;
	}
}

static void t_index_fuzz(void)
{
	static const struct model_config cfg = {.model_type = "gpt2", .n_layer = 1, .n_head = 2,
						.n_embd = 8, .n_positions = 8, .vocab_size = 11,
						.layer_norm_epsilon = 1e-5};
	char path[PATH_MAX], err[512], *orig = NULL, mut[1 << 16];
	struct model g, h;
	json_t *base, *map;
	size_t len = 0;
	int ok = 0, rejected = 0;

	T_EQ_INT(model_build(&g, &cfg, 1, 4), 0);
	T_EQ_INT(model_build(&h, &cfg, 1, 4), 0);
	if (t_case_failed)
		return;
	model_init_weights(&g, 5);
	snprintf(path, sizeof(path), "%s/%s", dir, shard_names[0]);
	T_EQ_INT(st_save(path, &g, err, sizeof(err)), 0);
	T_EQ_INT(util_read_file(path, 1 << 20, &orig, &len), 0);
	if (!orig)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, shard_names[1]);
	write_file(path, orig, len);
	snprintf(path, sizeof(path), "%s/%s", dir, shard_names[2]);
	write_file(path, orig, len / 2);
	map = json_object();
	for (int i = 0; i < model_n_named(&g); i++) {
		struct model_tensor_ref ref;

		model_named(&g, i, &ref);
		json_object_set_new(map, ref.name, json_string(shard_names[0]));
	}
	base = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", (int)len, "weight_map", map);
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	for (int it = 0; it < INDEX_ITERS && !t_case_failed; it++) {
		json_t *j = json_deep_copy(base);
		char *s;
		size_t n;
		int r;

		for (int e = 0, k = it ? (int)(next() % 3) + 1 : 0; e < k; e++)
			mutate_index(j);
		s = json_dumps(j, JSON_COMPACT);
		json_decref(j);
		n = s ? strlen(s) : 0;
		if (!s || n > sizeof(mut)) {
			free(s);
			continue;
		}
		if (it && next() % 4 == 0)
			n = mutate_text(s, n, mut);
		else
			memcpy(mut, s, n);
		free(s);
		write_file(path, mut, n);
		memset(h.params, 0, h.n_params * 4);
		err[0] = 0;
		r = st_load_index(dir, &h, err, sizeof(err));
		if (r < 0) {
			rejected++;
			T_CHECK(strlen(err) > 10, "iteration %d: status %d, error '%s'", it, r, err);
			continue;
		}
		ok++;
		T_CHECK(!memcmp(g.params, h.params, g.n_params * 4), "iteration %d loaded other "
			"weights than the shard holds", it);
	}
	T_CHECK(ok > 20 && rejected > INDEX_ITERS / 4, "%d loaded, %d rejected", ok, rejected);
	printf("# index fuzz: %d loaded, %d rejected with a sentence\n", ok, rejected);
	json_decref(base);
	free(orig);
	model_free(&g);
	model_free(&h);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		printf("FAIL setup: mkdtemp\n");
		return 1;
	}
	t_run("trainer-tokenizer-fuzz", t_tokenizer_fuzz);
	t_run("trainer-index-fuzz", t_index_fuzz);
	util_rm_rf(dir);
	return t_done();
}

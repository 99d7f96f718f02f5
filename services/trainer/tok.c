/* tok — byte-level BPE from tokenizer.json: loading, the GPT-2 and Llama-3
 * pre-tokenisation scanners and the ranked merges. See tok.h.
 */
#include "tok.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* ---- code points and classes ------------------------------------------ */

static locale_t utf8_locale(void)
{
	static locale_t loc;

	if (!loc)
		loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	return loc;
}

/* The code point at s[i] (invalid bytes read as U+FFFD, one byte long). */
static size_t cp_at(const unsigned char *s, size_t n, size_t i, unsigned *cp)
{
	unsigned c = s[i], need, v;

	if (c < 0x80)
		return *cp = c, 1;
	need = c >= 0xf5 ? 0 : c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 ? 1 : 0;
	if (!need || i + need >= n)
		goto bad;
	v = c & (0x3f >> need);
	for (unsigned k = 1; k <= need; k++) {
		if ((s[i + k] & 0xc0) != 0x80)
			goto bad;
		v = v << 6 | (s[i + k] & 0x3f);
	}
	if ((need == 2 && v < 0x800) || (need == 3 && (v < 0x10000 || v > 0x10ffff)) ||
	    (v >= 0xd800 && v < 0xe000))
		goto bad;
	*cp = v;
	return need + 1;
bad:
	*cp = 0xfffd;
	return 1;
}

static int is_s(unsigned c)
{
	return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

static int is_n(unsigned c)
{
	if (c < 0x80)
		return c >= '0' && c <= '9';
	return utf8_locale() && iswdigit_l(c, utf8_locale());
}

static int is_l(unsigned c)
{
	if (c < 0x80)
		return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
	return c != 0xfffd && utf8_locale() && iswalpha_l(c, utf8_locale()) && !is_n(c);
}

static int is_o(unsigned c)
{
	return !is_s(c) && !is_l(c) && !is_n(c);
}

/* End of the run of class `is` from i, at most max code points. */
static size_t run(const unsigned char *s, size_t n, size_t i, int (*is)(unsigned), int max)
{
	unsigned c;

	for (int k = 0; i < n && k < max; k++) {
		size_t l = cp_at(s, n, i, &c);
		if (!is(c))
			break;
		i += l;
	}
	return i;
}

/* Length of 's 't 're 've 'm 'll 'd after the apostrophe at i-1, or 0. */
static size_t contraction(const unsigned char *s, size_t n, size_t i, int fold)
{
	static const char *const v[] = {"s", "t", "re", "ve", "m", "ll", "d"};

	for (int k = 0; k < 7; k++) {
		size_t l = strlen(v[k]), j;

		for (j = 0; j < l && i + j < n; j++)
			if ((fold ? (s[i + j] | 0x20) : s[i + j]) != (unsigned char)v[k][j] ||
			    (fold && (s[i + j] < 'A' || (s[i + j] > 'Z' && s[i + j] < 'a'))))
				break;
		if (j == l)
			return l;
	}
	return 0;
}

/* \s+(?!\S)|\s+ from i (s[i] is whitespace); llama adds \s*[\r\n]+ first. */
static size_t spaces(const unsigned char *s, size_t n, size_t i, int newline_rule)
{
	size_t e = i, last = i, nl = 0;
	int cnt = 0;
	unsigned c;

	while (e < n) {
		size_t l = cp_at(s, n, e, &c);
		if (!is_s(c))
			break;
		if (c == '\r' || c == '\n')
			nl = e + 1;
		last = e;
		e += l;
		cnt++;
	}
	if (newline_rule && nl)
		return nl;
	return e == n || cnt == 1 ? e : last;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t next_gpt2(const unsigned char *s, size_t n, size_t i)
{
	unsigned c, c2;
	size_t j = i, k;

	cp_at(s, n, i, &c);
	if (c == '\'' && (k = contraction(s, n, i + 1, 0)))
		return i + 1 + k;
	c2 = c;
	if (c == ' ' && i + 1 < n) {
		j = i + 1;
		cp_at(s, n, j, &c2);
	}
	if (is_l(c2))
		return run(s, n, j, is_l, INT_MAX);
	if (is_n(c2))
		return run(s, n, j, is_n, INT_MAX);
	if (is_o(c2))
		return run(s, n, j, is_o, INT_MAX);
	return spaces(s, n, i, 0);
}

/* Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 * ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t next_llama3(const unsigned char *s, size_t n, size_t i)
{
	unsigned c, c2;
	size_t l = cp_at(s, n, i, &c), j = i, k;

	if (c == '\'' && (k = contraction(s, n, i + 1, 1)))
		return i + 1 + k;
	if (is_l(c))
		return run(s, n, i, is_l, INT_MAX);
	if (c != '\r' && c != '\n' && !is_n(c) && i + l < n) {
		cp_at(s, n, i + l, &c2);
		if (is_l(c2))
			return run(s, n, i + l, is_l, INT_MAX);
	}
	if (is_n(c))
		return run(s, n, i, is_n, 3);
	c2 = c;
	if (c == ' ' && i + 1 < n) {
		j = i + 1;
		cp_at(s, n, j, &c2);
	}
	if (is_o(c2)) {
		size_t e = run(s, n, j, is_o, INT_MAX);

		while (e < n && (s[e] == '\r' || s[e] == '\n'))
			e++;
		return e;
	}
	return spaces(s, n, i, 1);
}

int tok_pretokenize(const struct tok *t, const char *text, size_t len,
		    int (*piece)(void *ctx, const char *s, size_t n), void *ctx)
{
	const unsigned char *s = (const unsigned char *)text;

	for (size_t i = 0; i < len;) {
		size_t e = t->pretok == TOK_LLAMA3 ? next_llama3(s, len, i) : next_gpt2(s, len, i);
		int r;

		if (e <= i)
			e = i + 1;
		if (e - i > TOK_MAX_PIECE)
			e = i + TOK_MAX_PIECE;
		r = piece(ctx, text + i, e - i);
		if (r < 0)
			return r;
		i = e;
	}
	return 0;
}

/* ---- tables ------------------------------------------------------------ */

static size_t hash_str(const char *s, size_t n)
{
	size_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

static int vocab_find(const struct tok *t, const char *s, size_t n)
{
	for (size_t h = hash_str(s, n) & (t->vcap - 1);; h = (h + 1) & (t->vcap - 1)) {
		const char *k;

		if (!t->vkey[h])
			return -1;
		k = t->strs + t->vkey[h] - 1;
		if (!strncmp(k, s, n) && !k[n])
			return t->vid[h];
	}
}

static size_t pair_slot(const struct tok *t, unsigned long long key)
{
	size_t h = (size_t)(key * 0x9e3779b97f4a7c15ull >> 17) & (t->mcap - 1);

	while (t->mkey[h] && t->mkey[h] != key)
		h = (h + 1) & (t->mcap - 1);
	return h;
}

static unsigned long long pair_key(int a, int b)
{
	return ((unsigned long long)(unsigned)a << 32 | (unsigned)b) + 1;
}

/* Byte b's symbol in the byte-to-unicode map, as UTF-8 (2 bytes at most). */
size_t tok_byte_sym(int b, char *out)
{
	int cp = b, k = 0;

	if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
		for (int x = 0; x < b; x++)
			k += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) ||
			       (x >= 174 && x <= 255));
		cp = 256 + k;
	}
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	out[0] = (char)(0xc0 | cp >> 6);
	out[1] = (char)(0x80 | (cp & 0x3f));
	return 2;
}

static size_t pow2_at_least(size_t n)
{
	size_t c = 16;

	while (c < n)
		c *= 2;
	return c;
}

/* The Llama-3 Split pattern, told apart from GPT-2's by its digit groups. */
static int pretok_kind(json_t *pt, int *kind, char *err, size_t errlen)
{
	const char *type = json_string_value(json_object_get(pt, "type"));
	json_t *seq, *split = NULL, *bl = NULL;
	const char *pat;

	if (type && !strcmp(type, "ByteLevel")) {
		if (json_is_false(json_object_get(pt, "use_regex")) ||
		    json_is_true(json_object_get(pt, "add_prefix_space")))
			return util_fail(err, errlen, -EOPNOTSUPP, "tokenizer.json: a ByteLevel "
					 "pre-tokenizer without GPT-2's pattern or with add_prefix_space "
					 "is not supported");
		*kind = TOK_GPT2;
		return 0;
	}
	seq = json_object_get(pt, "pretokenizers");
	if (!type || strcmp(type, "Sequence") || json_array_size(seq) != 2)
		return util_fail(err, errlen, -EOPNOTSUPP, "tokenizer.json: pre_tokenizer must be "
				 "ByteLevel, or a Sequence of Split and ByteLevel (Llama-3)");
	split = json_array_get(seq, 0);
	bl = json_array_get(seq, 1);
	pat = json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex"));
	if (strcmp(json_string_value(json_object_get(split, "type")) ?: "", "Split") ||
	    strcmp(json_string_value(json_object_get(bl, "type")) ?: "", "ByteLevel") || !pat ||
	    json_is_true(json_object_get(bl, "use_regex")))
		return util_fail(err, errlen, -EOPNOTSUPP, "tokenizer.json: pre_tokenizer Sequence "
				 "must be Split (a Regex pattern) then ByteLevel (use_regex false)");
	if (strstr(pat, "\\p{N}{1,3}") && strstr(pat, "(?i:'s|'t|'re|'ve|'m|'ll|'d)"))
		*kind = TOK_LLAMA3;
	else if (strstr(pat, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+"))
		*kind = TOK_GPT2;
	else
		return util_fail(err, errlen, -EOPNOTSUPP, "tokenizer.json: the Split pattern is "
				 "neither GPT-2's nor Llama-3's; only those two are supported");
	return 0;
}

static int load_vocab(struct tok *t, json_t *vocab, char *err, size_t errlen)
{
	size_t n = json_object_size(vocab), bytes = 0, off = 0;
	const char *k;
	json_t *v;

	if (!json_is_object(vocab) || n == 0 || n > TOK_MAX_VOCAB)
		return util_fail(err, errlen, -EINVAL, "tokenizer.json: model.vocab must be an "
				 "object of 1 to %d entries", TOK_MAX_VOCAB);
	json_object_foreach(vocab, k, v)
		bytes += strlen(k) + 1;
	t->vcap = pow2_at_least(n * 2);
	t->strs = malloc(bytes);
	t->vkey = calloc(t->vcap, sizeof(*t->vkey));
	t->vid = calloc(t->vcap, sizeof(*t->vid));
	if (!t->strs || !t->vkey || !t->vid)
		return -ENOMEM;
	json_object_foreach(vocab, k, v) {
		size_t l = strlen(k), h = hash_str(k, l) & (t->vcap - 1);
		json_int_t id = json_integer_value(v);

		if (!json_is_integer(v) || id < 0 || id >= TOK_MAX_VOCAB)
			return util_fail(err, errlen, -EINVAL, "tokenizer.json: vocab entry '%.40s' "
					 "has no id in [0, %d)", k, TOK_MAX_VOCAB);
		while (t->vkey[h])
			h = (h + 1) & (t->vcap - 1);
		memcpy(t->strs + off, k, l + 1);
		t->vkey[h] = off + 1;
		t->vid[h] = (int)id;
		off += l + 1;
		if (id + 1 > t->n_ids)
			t->n_ids = (int)id + 1;
	}
	return 0;
}

static int load_merges(struct tok *t, json_t *merges, char *err, size_t errlen)
{
	size_t n = json_array_size(merges), i;
	json_t *m;

	if (!json_is_array(merges) || n > TOK_MAX_VOCAB)
		return util_fail(err, errlen, -EINVAL, "tokenizer.json: model.merges must be an "
				 "array of at most %d merges", TOK_MAX_VOCAB);
	t->mcap = pow2_at_least(n * 2);
	t->mkey = calloc(t->mcap, sizeof(*t->mkey));
	t->mrank = calloc(t->mcap, sizeof(int));
	t->mout = calloc(t->mcap, sizeof(int));
	if (!t->mkey || !t->mrank || !t->mout)
		return -ENOMEM;
	json_array_foreach(merges, i, m) {
		const char *a = NULL, *b = NULL, *sp;
		char both[1024];
		size_t la, lb, h;
		int ia, ib, io;

		if (json_is_string(m) && (sp = strchr(json_string_value(m), ' '))) {
			a = json_string_value(m);
			la = sp - a;
			b = sp + 1;
		} else if (json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
			   json_is_string(json_array_get(m, 1))) {
			a = json_string_value(json_array_get(m, 0));
			la = strlen(a);
			b = json_string_value(json_array_get(m, 1));
		}
		if (!a || (lb = strlen(b)) + la >= sizeof(both))
			return util_fail(err, errlen, -EINVAL, "tokenizer.json: merge %zu is not \"a "
					 "b\" or [\"a\", \"b\"]", i);
		memcpy(both, a, la);
		memcpy(both + la, b, lb);
		ia = vocab_find(t, a, la);
		ib = vocab_find(t, b, lb);
		io = vocab_find(t, both, la + lb);
		if (ia < 0 || ib < 0 || io < 0)
			return util_fail(err, errlen, -EINVAL, "tokenizer.json: merge %zu (%.*s + %.*s) "
					 "names a symbol missing from the vocab", i, (int)la, a,
					 (int)lb, b);
		h = pair_slot(t, pair_key(ia, ib));
		if (t->mkey[h])
			continue; /* a repeated merge keeps its first (best) rank */
		t->mkey[h] = pair_key(ia, ib);
		t->mrank[h] = (int)i;
		t->mout[h] = io;
	}
	return 0;
}

/* The special tokens: end-of-text among them. A malformed entry is an
 * error: a missing id read as 0 would make a byte the end-of-text token. */
static int added_tokens(struct tok *t, json_t *added, char *err, size_t errlen)
{
	size_t i;
	json_t *a;

	if (added && !json_is_array(added))
		return util_fail(err, errlen, -EINVAL, "tokenizer.json: 'added_tokens' must be a "
				 "list");
	json_array_foreach(added, i, a) {
		const char *c = json_string_value(json_object_get(a, "content"));
		json_t *jid = json_object_get(a, "id");
		json_int_t id = json_integer_value(jid);

		if (!c || !json_is_integer(jid) || id < 0 || id >= TOK_MAX_VOCAB)
			return util_fail(err, errlen, -EINVAL, "tokenizer.json: added_tokens[%zu] "
					 "needs an integer 'id' in [0, %d) and a string 'content'",
					 i, TOK_MAX_VOCAB);
		if (id + 1 > t->n_ids)
			t->n_ids = (int)id + 1;
		if (!strcmp(c, "<|endoftext|>") || !strcmp(c, "<|end_of_text|>"))
			t->eos = (int)id;
	}
	return 0;
}

int tok_load(const char *path, struct tok *t, char *err, size_t errlen)
{
	json_t *j = NULL, *model;
	json_error_t je;
	const char *type;
	char *buf = NULL;
	size_t len;
	int r;

	memset(t, 0, sizeof(*t));
	t->eos = -1;
	r = util_read_file(path, TOK_MAX_FILE, &buf, &len);
	if (r < 0)
		return util_fail(err, errlen, r, "cannot read '%s' (at most %u MiB): %s", path,
				 TOK_MAX_FILE >> 20, strerror(-r));
	j = json_loadb(buf, len, 0, &je);
	free(buf);
	if (!j)
		return util_fail(err, errlen, -EINVAL, "tokenizer.json line %d: %s", je.line,
				 je.text);
	model = json_object_get(j, "model");
	type = json_string_value(json_object_get(model, "type"));
	if (!type || strcmp(type, "BPE") || json_is_true(json_object_get(model, "byte_fallback"))) {
		r = util_fail(err, errlen, -EOPNOTSUPP, "tokenizer.json: model.type is \"%s\"; only "
			      "byte-level \"BPE\" (no byte_fallback) is supported", type ?: "");
		goto out;
	}
	if (!json_is_null(json_object_get(j, "normalizer")) && json_object_get(j, "normalizer")) {
		r = util_fail(err, errlen, -EOPNOTSUPP, "tokenizer.json: a normalizer is not "
			      "supported (byte-level BPE has none)");
		goto out;
	}
	t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
	r = pretok_kind(json_object_get(j, "pre_tokenizer"), &t->pretok, err, errlen);
	if (r == 0)
		r = load_vocab(t, json_object_get(model, "vocab"), err, errlen);
	if (r == 0)
		r = load_merges(t, json_object_get(model, "merges"), err, errlen);
	if (r < 0)
		goto out;
	for (int b = 0; b < 256; b++) {
		char sym[2];
		size_t l = tok_byte_sym(b, sym);

		t->byte_id[b] = vocab_find(t, sym, l);
		if (t->byte_id[b] < 0) {
			r = util_fail(err, errlen, -EINVAL, "tokenizer.json: the vocab lacks the "
				      "symbol of byte 0x%02x, so it is not byte-level", b);
			goto out;
		}
	}
	r = added_tokens(t, json_object_get(j, "added_tokens"), err, errlen);
	if (r < 0)
		goto out;
	t->sym = malloc(TOK_MAX_PIECE * sizeof(int));
	t->scratch = malloc(TOK_MAX_PIECE * 2 + 1);
	if (!t->sym || !t->scratch)
		r = -ENOMEM;
out:
	if (r == -ENOMEM)
		util_fail(err, errlen, r, "out of memory loading '%s'", path);
	json_decref(j);
	if (r < 0)
		tok_free(t);
	return r;
}

void tok_free(struct tok *t)
{
	free(t->mkey);
	free(t->mrank);
	free(t->mout);
	free(t->strs);
	free(t->vkey);
	free(t->vid);
	free(t->sym);
	free(t->scratch);
	memset(t, 0, sizeof(*t));
	t->eos = -1;
}

/* ---- BPE --------------------------------------------------------------- */

struct enc {
	struct tok *t;
	int (*out)(void *ctx, int id);
	void *ctx;
};

/* One piece: its bytes as symbols, then the best-ranked pair merged
 * everywhere, again and again, until no pair has a merge. */
static int bpe_piece(void *ctx, const char *s, size_t n)
{
	struct enc *e = ctx;
	struct tok *t = e->t;
	int *sym = t->sym, r;
	size_t m = 0;

	if (t->ignore_merges) {
		size_t l = 0;
		int id;

		for (size_t i = 0; i < n; i++)
			l += tok_byte_sym((unsigned char)s[i], t->scratch + l);
		id = vocab_find(t, t->scratch, l);
		if (id >= 0)
			return e->out(e->ctx, id);
	}
	for (size_t i = 0; i < n; i++)
		sym[m++] = t->byte_id[(unsigned char)s[i]];
	while (m > 1) {
		int best = INT_MAX, a = 0, b = 0, o = 0;
		size_t w = 0;

		for (size_t i = 0; i + 1 < m; i++) {
			size_t h = pair_slot(t, pair_key(sym[i], sym[i + 1]));

			if (t->mkey[h] && t->mrank[h] < best) {
				best = t->mrank[h];
				a = sym[i], b = sym[i + 1], o = t->mout[h];
			}
		}
		if (best == INT_MAX)
			break;
		for (size_t i = 0; i < m;) {
			if (i + 1 < m && sym[i] == a && sym[i + 1] == b) {
				sym[w++] = o;
				i += 2;
			} else {
				sym[w++] = sym[i++];
			}
		}
		m = w;
	}
	for (size_t i = 0; i < m; i++) {
		r = e->out(e->ctx, sym[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

int tok_encode(struct tok *t, const char *text, size_t len, int (*out)(void *ctx, int id),
	       void *ctx)
{
	struct enc e = {.t = t, .out = out, .ctx = ctx};

	return tok_pretokenize(t, text, len, bpe_piece, &e);
}

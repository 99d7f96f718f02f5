/* data — the tokens of a bundle's data/ directory: byte-level BPE when the
 * bundle has a tokenizer.json (tok.c), else one token per byte.
 *
 * Deterministic by construction: files are read in sorted path order and
 * each step's rows come from fixed positions, so every rank, and a rerun,
 * sees the same stream. Everything is capped: files, depth, tokens.
 */
#include "data.h"
#include "tok.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_MAX_DEPTH 4

struct paths {
	char **v;
	int n, alloc;
};

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);

	return a > b && !strcmp(s + a - b, suf);
}

static int collect(const char *dir, int depth, struct paths *ps)
{
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (depth > DATA_MAX_DEPTH)
		return 0;
	d = opendir(dir);
	if (!d)
		return -errno;
	while (r == 0 && (de = readdir(d))) {
		char p[PATH_MAX];
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			r = collect(p, depth + 1, ps);
		} else if (S_ISREG(st.st_mode) &&
			   (ends_with(p, ".txt") || ends_with(p, ".jsonl"))) {
			if (ps->n >= DATA_MAX_FILES)
				r = -E2BIG;
			else if (ps->n == ps->alloc) {
				int na = ps->alloc ? ps->alloc * 2 : 16;
				char **nv = realloc(ps->v, na * sizeof(char *));
				if (!nv)
					r = -ENOMEM;
				else
					ps->v = nv, ps->alloc = na;
			}
			if (r == 0 && !(ps->v[ps->n++] = strdup(p)))
				r = -ENOMEM;
		}
	}
	closedir(d);
	return r;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int grow(struct data *d, size_t *alloc, size_t len)
{
	if (d->n + len + 1 > DATA_MAX_TOKENS)
		return -EFBIG;
	if (d->n + len + 1 > *alloc) {
		size_t na = *alloc ? *alloc : 1 << 16;
		int *nt;

		while (na < d->n + len + 1)
			na *= 2;
		if (d->budget) { /* doubling stops at the budget; past it, the error */
			uint64_t room = d->budget > d->file_bytes ? d->budget - d->file_bytes : 0;

			if ((uint64_t)(d->n + len + 1) * sizeof(int) > room)
				return -EDQUOT;
			if ((uint64_t)na * sizeof(int) > room)
				na = room / sizeof(int);
		}
		nt = realloc(d->tok, na * sizeof(int));
		if (!nt)
			return -ENOMEM;
		d->tok = nt;
		*alloc = na;
	}
	return 0;
}

struct sink {
	struct data *d;
	size_t *alloc;
};

static int put_token(void *ctx, int id)
{
	struct sink *k = ctx;
	int r = grow(k->d, k->alloc, 1);

	if (r == 0)
		k->d->tok[k->d->n++] = id;
	return r;
}

/* One document: its tokens (tok, or one per byte without) and end-of-text. */
static int push(struct data *d, size_t *alloc, const unsigned char *s, size_t len, int eot)
{
	struct sink k = {d, alloc};
	int r;

	if (d->tokenizer) {
		r = tok_encode(d->tokenizer, (const char *)s, len, put_token, &k);
		if (r == 0)
			r = put_token(&k, eot);
		if (r == 0)
			d->n_docs++;
		return r;
	}
	r = grow(d, alloc, len);
	if (r < 0)
		return r;
	for (size_t i = 0; i < len; i++)
		d->tok[d->n++] = s[i];
	d->tok[d->n++] = eot;
	d->n_docs++;
	return 0;
}

/* One document per line: the line's "text" field. */
static int load_jsonl(struct data *d, size_t *alloc, const char *path, char *buf, size_t len,
		      char *err, size_t errlen)
{
	size_t pos = 0;
	int line = 0, r;

	while (pos < len) {
		char *nl = memchr(buf + pos, '\n', len - pos);
		size_t l = nl ? (size_t)(nl - (buf + pos)) : len - pos;
		json_error_t je;
		json_t *j, *t;

		line++;
		if (l == 0 || (l == 1 && buf[pos] == '\r')) {
			pos += l + 1;
			continue;
		}
		j = json_loadb(buf + pos, l, 0, &je);
		if (!j)
			return util_fail(err, errlen, -EINVAL, "%s line %d: not JSON: %s (column %d)",
					 path, line, je.text, je.column);
		t = json_object_get(j, "text");
		if (!json_is_string(t)) {
			json_decref(j);
			return util_fail(err, errlen, -EINVAL, "%s line %d: expected a JSON object with "
				    "a string \"text\" field", path, line);
		}
		r = push(d, alloc, (const unsigned char *)json_string_value(t),
			 json_string_length(t), d->eot);
		json_decref(j);
		if (r < 0)
			return r;
		pos += l + 1;
	}
	return 0;
}

int data_load(const char *bundle_dir, int vocab_size, int seq_len, uint64_t budget,
	      struct data *out, char *err, size_t errlen)
{
	struct data d = {.eot = vocab_size > 256 ? vocab_size - 1 : 0, .budget = budget};
	struct paths ps = {0};
	char dir[PATH_MAX];
	size_t alloc = 0, n_val;
	struct tok tk;
	int r, fi = 0;

	snprintf(dir, sizeof(dir), "%s/tokenizer.json", bundle_dir);
	if (access(dir, F_OK) == 0) {
		r = tok_load(dir, &tk, err, errlen);
		if (r < 0)
			return r;
		if (tk.n_ids > vocab_size || tk.eos < 0) {
			r = tk.eos < 0 ?
				util_fail(err, errlen, -EINVAL, "tokenizer.json has no <|endoftext|> or "
					  "<|end_of_text|> token to put between documents") :
				util_fail(err, errlen, -EINVAL, "config.json's vocab_size %d does not "
					  "cover the tokenizer's %d ids; raise vocab_size", vocab_size,
					  tk.n_ids);
			tok_free(&tk);
			return r;
		}
		d.tokenizer = &tk;
		d.eot = tk.eos;
	}

	snprintf(dir, sizeof(dir), "%s/data", bundle_dir);
	r = collect(dir, 0, &ps);
	if (r == -E2BIG)
		r = util_fail(err, errlen, r, "data/ holds more than %d files", DATA_MAX_FILES);
	else if (r < 0)
		r = util_fail(err, errlen, r, "cannot read '%s': %s", dir, strerror(-r));
	if (r < 0)
		goto out;
	qsort(ps.v, ps.n, sizeof(char *), cmp_str);
	for (int i = 0; i < ps.n && r == 0; i++) {
		char *buf;
		size_t len;
		struct stat st;

		fi = i;
		/* the file's bytes next to the tokens so far, checked before reading */
		d.file_bytes = budget && stat(ps.v[i], &st) == 0 ? (uint64_t)st.st_size : 0;
		if (budget && d.file_bytes + (uint64_t)d.n * sizeof(int) > budget) {
			r = -EDQUOT;
			break;
		}
		r = util_read_file(ps.v[i], (size_t)DATA_MAX_TOKENS + 1, &buf, &len);
		if (r < 0) {
			r = util_fail(err, errlen, r, "cannot read '%s': %s", ps.v[i], strerror(-r));
			break;
		}
		if (ends_with(ps.v[i], ".jsonl"))
			r = load_jsonl(&d, &alloc, ps.v[i], buf, len, err, errlen);
		else if (len)
			r = push(&d, &alloc, (unsigned char *)buf, len, d.eot);
		free(buf);
		d.file_bytes = 0;
		if (r == -EFBIG)
			r = util_fail(err, errlen, r, "data/ holds more than %u tokens (the limit)",
				 DATA_MAX_TOKENS);
		else if (r == -ENOMEM)
			r = util_fail(err, errlen, r, "out of memory loading data/");
	}
	if (r == -EDQUOT)
		r = util_fail(err, errlen, r, "data/ does not fit in the %.1f MiB the memory limit "
			      "leaves after the model (%zu tokens loaded before or from '%s'); "
			      "raise BURSAR_TRAIN_MAX_MEM or use less data", budget / 1048576.0, d.n,
			      ps.v[fi]);
	if (r < 0)
		goto out;
	n_val = d.n / 20;
	d.n_train = d.n - n_val;
	if (d.n_train < (size_t)seq_len + 1) {
		r = util_fail(err, errlen, -ENODATA, "data/ holds %zu tokens (%zu after holding out 5%% "
			 "for validation); seq_len %d needs at least %d", d.n, d.n_train, seq_len,
			 seq_len + 1);
		goto out;
	}
	*out = d;
	out->tokenizer = NULL;
	d.tok = NULL;
out:
	if (d.tokenizer)
		tok_free(d.tokenizer);
	free(d.tok);
	for (int i = 0; i < ps.n; i++)
		free(ps.v[i]);
	free(ps.v);
	return r;
}

void data_free(struct data *d)
{
	free(d->tok);
	d->tok = NULL;
}

void data_train_batch(const struct data *d, long step, int gb, int row0, int B, int T,
		      int *inputs, int *targets)
{
	size_t span = d->n_train - T; /* valid starts: [0, span) */

	for (int b = 0; b < B; b++) {
		unsigned long long row = (unsigned long long)step * gb + row0 + b;
		size_t start = (size_t)((row * T) % span);

		memcpy(inputs + (size_t)b * T, d->tok + start, (size_t)T * sizeof(int));
		memcpy(targets + (size_t)b * T, d->tok + start + 1, (size_t)T * sizeof(int));
	}
}

size_t data_val_count(const struct data *d, int T)
{
	size_t n_val = d->n - d->n_train;

	return n_val >= (size_t)T + 1 ? (n_val - 1) / T : 0;
}

void data_val_seq(const struct data *d, size_t k, int T, int *inputs, int *targets)
{
	size_t start = d->n_train + k * T;

	memcpy(inputs, d->tok + start, (size_t)T * sizeof(int));
	memcpy(targets, d->tok + start + 1, (size_t)T * sizeof(int));
}

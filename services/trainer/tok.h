/* tok — byte-level BPE from a Hugging Face tokenizer.json (GPT-2 and
 * Llama-3 style): model.type "BPE" with a ByteLevel pre-tokenizer, either
 * alone (GPT-2's pattern) or after a Split whose pattern is Llama-3's. The
 * two pre-tokenisation patterns are hand-made scanners, not a regex engine;
 * merges are applied by rank over byte-to-unicode mapped symbols.
 *
 * Known differences from the regex: \p{L} of a non-ASCII code point is
 * glibc's iswalpha() in C.UTF-8 and \p{N} beyond ASCII is iswdigit(); special
 * tokens written in the text are encoded as text. Pieces longer than
 * TOK_MAX_PIECE bytes are cut there.
 */
#pragma once
#include "bundle.h"

#include <stddef.h>

#define TOK_MAX_FILE BUNDLE_MAX_TOKENIZER
#define TOK_MAX_VOCAB (1 << 22)
#define TOK_MAX_PIECE 4096

enum { TOK_GPT2, TOK_LLAMA3 };

struct tok {
	int pretok;	      /* TOK_GPT2 | TOK_LLAMA3 */
	int ignore_merges;    /* a piece that is a whole vocab entry is that entry */
	int byte_id[256];     /* the id of each byte's symbol */
	int n_ids;	      /* 1 + the largest id (vocab and added tokens) */
	int eos;	      /* end-of-text id, -1: none */
	/* merges: open addressing on (left, right) ids */
	unsigned long long *mkey;
	int *mrank, *mout;
	size_t mcap;
	/* vocab: open addressing on the mapped string, for ignore_merges */
	char *strs;	      /* NUL-separated mapped strings */
	size_t *vkey;	      /* offset into strs + 1, 0: empty */
	int *vid;
	size_t vcap;
	int *sym;	      /* scratch: TOK_MAX_PIECE symbols */
	char *scratch;	      /* scratch: a mapped piece */
};

/* Loads path. err gets a sentence naming the problem. Returns 0 or -errno. */
int tok_load(const char *path, struct tok *t, char *err, size_t errlen);
void tok_free(struct tok *t);
/* Encodes len bytes of text, calling out(ctx, id) per token; stops at the
 * first out() < 0 and returns it, else 0. */
int tok_encode(struct tok *t, const char *text, size_t len, int (*out)(void *ctx, int id),
	       void *ctx);
/* The pre-tokenizer alone: piece(ctx, start, len) for each piece. */
int tok_pretokenize(const struct tok *t, const char *text, size_t len,
		    int (*piece)(void *ctx, const char *s, size_t n), void *ctx);
/* Byte b's symbol in GPT-2's byte-to-unicode map, as UTF-8 (1 or 2 bytes,
 * not terminated); returns its length. */
size_t tok_byte_sym(int b, char *out);

/* data — the training tokens of a bundle: read from data/ (*.txt whole,
 * *.jsonl each line's "text"), files in sorted path order, encoded with the
 * bundle's tokenizer.json (byte-level BPE) or else one token per byte, an
 * end-of-text token between documents, the last 5% held out for
 * validation. Every rank loads the same tokens and picks its own slice of
 * each step's batch deterministically. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define DATA_MAX_TOKENS (512u << 20) /* tokens loaded from a bundle (2 GiB of int32) */
#define DATA_MAX_FILES 10000

struct tok;

struct data {
	int *tok;      /* all tokens, train then validation */
	size_t n;      /* total */
	size_t n_train;
	int eot;       /* the tokenizer's end-of-text; bytes: vocab_size-1 when
			* vocab_size > 256, else byte 0 */
	int n_docs;
	struct tok *tokenizer; /* while loading only */
	uint64_t budget;       /* while loading: bytes the tokens and a file may take (0: any) */
	uint64_t file_bytes;   /* while loading: the file being read */
};

/* Loads dir/data within budget bytes (the tokens plus the file being read;
 * 0: no limit): -EDQUOT and a sentence when they would take more. err gets
 * a sentence on failure. */
int data_load(const char *bundle_dir, int vocab_size, int seq_len, uint64_t budget,
	      struct data *d, char *err, size_t errlen);
void data_free(struct data *d);
/* Fills inputs/targets (B,T) with the B sequences of global rows
 * [row0, row0+B) of step `step` in a global batch of gb rows. */
void data_train_batch(const struct data *d, long step, int gb, int row0, int B, int T,
		      int *inputs, int *targets);
/* Number of validation sequences of length T (0 when the split is too small). */
size_t data_val_count(const struct data *d, int T);
/* Sequence k of the validation split. */
void data_val_seq(const struct data *d, size_t k, int T, int *inputs, int *targets);

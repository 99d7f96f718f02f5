/* bundle — what a model bundle means: config.json (the model), bursar.json
 * (training overrides) and data/. One parser, used by consoled to validate an
 * upload, by admitd to price it and by bursar-train to build the model, so all
 * three agree on every key. Unknown keys that would change the maths are
 * errors that name the key, never silently ignored. */
#pragma once
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define BUNDLE_MAX_CONFIG (1u << 20) /* config.json / bursar.json size cap */
#define BUNDLE_MAX_TOKENIZER (64u << 20) /* tokenizer.json size cap */

enum { ROPE_DEFAULT, ROPE_LLAMA3 };

/* One model of either family. Llama keys map onto the GPT-2 names where the
 * meaning is the same (hidden_size -> n_embd, num_hidden_layers -> n_layer,
 * num_attention_heads -> n_head, max_position_embeddings -> n_positions,
 * rms_norm_eps -> layer_norm_epsilon); the rest is llama only. */
struct model_config {
	char model_type[16]; /* "gpt2" | "llama" */
	int n_layer;
	int n_head;
	int n_embd;
	int n_positions;
	int vocab_size;
	double layer_norm_epsilon;
	double dropout; /* the largest *_pdrop key; recorded, not applied */
	/* llama */
	int n_kv_head;         /* num_key_value_heads (GQA); gpt2: n_head */
	int head_dim;          /* gpt2: n_embd / n_head */
	int intermediate_size; /* MLP width; gpt2: 4 n_embd */
	int tie_word_embeddings;
	int attention_bias, mlp_bias;
	double rope_theta;
	int rope_type;         /* ROPE_DEFAULT | ROPE_LLAMA3 */
	double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
	int rope_original_max;
};

#define BUNDLE_MAX_CLASS 32 /* a node class name: 1-32 chars of [a-z0-9_.-] */

/* 1 when s is a valid node class name. */
int bundle_valid_class(const char *s);

struct train_params {
	long steps;        /* optimizer steps */
	int batch;         /* global batch in sequences, split across ranks */
	int seq_len;       /* tokens per sequence */
	double lr;         /* peak learning rate */
	int warmup;        /* warmup steps */
	char schedule[16]; /* cosine | linear | constant */
	double weight_decay;
	double grad_clip;
	uint64_t seed;
	int ranks;         /* 0 = "auto": admission chooses */
	double budget;     /* dollars; 0 = none */
	double deadline_s; /* seconds from submission; 0 = none */
	int priority;
	long ckpt_every;   /* steps between checkpoints under --ckpt; 0 = at the end only */
	long eval_every;   /* steps between eval losses; 0 = at the end only */
	int grad_accum;    /* micro-batches per rank per step; 0 = the trainer picks */
	int zero;          /* 1: ZeRO-1, the AdamW state sharded across the ranks */
	char device[8];    /* "cpu" | "cuda" | "auto" (the GPU when one answers; default) */
	/* node class admission must place the job on ("" any that suits device),
	 * e.g. "h100" or an operator's "cpu-big" */
	char node_class[BUNDLE_MAX_CLASS + 1];
};

/* Parses a Hugging Face config.json (model_type gpt2 or llama). err receives
 * a sentence naming the problem. */
int modelcfg_parse(json_t *cfg, struct model_config *out, char *err, size_t errlen);
/* Trainable parameters (a tied lm_head counts once). */
uint64_t modelcfg_n_params(const struct model_config *m);
/* Training FLOPs per token: 6N plus attention (6·L·T·n_head·head_dim: QK^T
 * and AV, fwd+bwd; 6·L·T·C for GPT-2). */
double modelcfg_flops_per_token(const struct model_config *m, int seq_len);
json_t *modelcfg_to_json(const struct model_config *m);

void trainparams_defaults(const struct model_config *m, struct train_params *p);
/* Applies bursar.json (or API overrides) on top of p. */
int trainparams_apply(json_t *o, const struct model_config *m, struct train_params *p, char *err,
		      size_t errlen);
json_t *trainparams_to_json(const struct train_params *p);

struct bundle_info {
	struct model_config model;
	struct train_params params;
	uint64_t data_bytes; /* text bytes in data/ */
	int data_files;
	int has_weights; /* model.safetensors or model.safetensors.index.json present */
	int has_tokenizer; /* tokenizer.json present (byte-level BPE; the trainer parses it) */
};

/* Checks an extracted bundle directory: config.json, optional bursar.json,
 * optional tokenizer.json (a regular file within BUNDLE_MAX_TOKENIZER; its
 * contents are checked by the trainer), at least one non-empty data/ *.txt
 * or *.jsonl file. */
int bundle_check(const char *dir, struct bundle_info *out, char *err, size_t errlen);

/* safetensors — read and write GPT-2 and Llama weights as Hugging Face
 * safetensors (written F32, read F32/BF16/F16; HF names and layouts). The reader is a parser of
 * untrusted input: the header size is capped, every shape, dtype and offset
 * is checked, and each error is a sentence naming the tensor and values. */
#pragma once
#include <stddef.h>

#include "model.h"

#define ST_MAX_HEADER (16u << 20) /* bytes of JSON header (and of an index) accepted */
#define ST_MAX_SHARDS 1024

/* Writes g's weights to path atomically (temp file, fsync, rename). */
int st_save(const char *path, const struct model *g, char *err, size_t errlen);
/* Loads every tensor of g from path; a missing, extra or mis-shaped tensor
 * is an error. An optional "transformer." prefix, a tied "lm_head.weight"
 * and the "attn.bias"/"attn.masked_bias" buffers HF may write are accepted. */
int st_load(const char *path, struct model *g, char *err, size_t errlen);
/* Loads g from dir/model.safetensors.index.json: its weight_map names each
 * tensor's shard (a *.safetensors file in dir); every shard is checked like
 * a single file, each tensor must sit in the shard the map names, and
 * together they must hold every tensor exactly once. */
int st_load_index(const char *dir, struct model *g, char *err, size_t errlen);
/* Writes a Hugging Face GPT2 or Llama config.json for g atomically. */
int st_save_config(const char *path, const struct model *g, char *err, size_t errlen);

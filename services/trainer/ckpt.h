/* ckpt — resumable checkpoints of bursar-train under --ckpt DIR.
 *
 * DIR/latest names the newest complete checkpoint directory, DIR/step-N/:
 *   model.safetensors, config.json   the weights, loadable by Hugging Face
 *   optim-m.safetensors              AdamW first moments (the weights' names)
 *   optim-v.safetensors              AdamW second moments
 *   state.json                       step, AdamW t, and the run's shape
 * A checkpoint is written into a temp directory, fsynced, renamed to
 * step-N, and only then is DIR/latest replaced (atomically), so a crash at
 * any point leaves the previous checkpoint intact. Training has no random
 * state past the seeded init (no dropout) and each step's rows are a pure
 * function of the step number, so step + weights + moments resume exactly.
 */
#pragma once
#include <stddef.h>

#include "bundle.h"
#include "model.h"
#include "optim.h"

/* Writes the state after `step` completed steps. Rank 0 only. */
int ckpt_save(const char *dir, const struct model *g, const struct adamw *o, long step,
	      const struct train_params *p, char *err, size_t errlen);
/* Loads DIR's latest checkpoint into g and o; *step gets the completed
 * steps. Returns 0, -ENOENT when DIR holds no checkpoint (start fresh), or
 * another negative errno with a sentence in err (a mismatched or damaged
 * checkpoint is never silently ignored). */
int ckpt_load(const char *dir, struct model *g, struct adamw *o, long *step,
	      const struct train_params *p, char *err, size_t errlen);

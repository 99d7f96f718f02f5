/* test-gpt2 — numerical checks of the trainer's pieces: the backward pass
 * against central finite differences on a tiny GPT-2 and tiny Llamas (GQA,
 * biases, untied head, llama3 RoPE), safetensors round
 * trip and rejection of malformed files, the lr schedule, clipping, and that
 * AdamW moves the loss down on a fixed batch. */
#include "../../tests/t.h"
#include "layers.h"
#include "model.h"
#include "optim.h"
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

static struct model_config tiny = {.model_type = "gpt2", .n_layer = 2, .n_head = 2,
				   .n_embd = 8, .n_positions = 8, .vocab_size = 11,
				   .layer_norm_epsilon = 1e-5};
enum { B = 2, T = 5 };
static int inputs[B * T], targets[B * T];
static char dir[] = "/tmp/test-gpt2-XXXXXX";

static struct model_config tiny_llama = {
	.model_type = "llama", .n_layer = 2, .n_head = 4, .n_kv_head = 2, .head_dim = 4,
	.n_embd = 12, .intermediate_size = 10, .n_positions = 8, .vocab_size = 11,
	.layer_norm_epsilon = 1e-5, .rope_theta = 10000, .tie_word_embeddings = 0,
	.attention_bias = 1, .mlp_bias = 1, .rope_type = ROPE_LLAMA3, .rope_factor = 8,
	.rope_low_freq_factor = 1, .rope_high_freq_factor = 4, .rope_original_max = 8};

static void build_model(struct model *g, const struct model_config *m)
{
	T_EQ_INT(model_build(g, m, B, T), 0);
	model_init_weights(g, 1);
	/* larger weights than GPT-2's init so every path carries real gradient */
	for (size_t i = 0; i < g->n_params; i++)
		g->params[i] *= 3.0f;
	for (int i = 0; i < B * T; i++) {
		inputs[i] = (i * 7 + 3) % m->vocab_size;
		targets[i] = (i * 5 + 1) % m->vocab_size;
	}
}

static void tiny_model(struct model *g)
{
	build_model(g, &tiny);
}

/* rtol: float32 finite differences are noisier through RMSNorm and SwiGLU's
 * products; test-torch-grads.py checks every gradient to 1e-3 in float64. */
static void grad_check(const struct model_config *m, float rtol)
{
	struct model g;
	int checked = 0, bad = 0;
	float worst = 0;

	build_model(&g, m);
	model_forward(&g, inputs, targets);
	model_backward(&g);
	for (int k = 0; k < MODEL_MAX_TENSORS; k++) {
		for (int s = 0; g.sizes[k] && s < 12; s++) {
			size_t i = (size_t)((s * 2654435761u) % g.sizes[k]);
			float *p = g.p[k] + i, keep = *p, h = 4e-3f, num, ana = g.g[k][i];
			double lp, lm;

			*p = keep + h;
			lp = model_forward(&g, inputs, targets);
			*p = keep - h;
			lm = model_forward(&g, inputs, targets);
			*p = keep;
			num = (float)((lp - lm) / (2 * h));
			checked++;
			if (fabsf(num - ana) / (1e-3f + fabsf(num)) > worst)
				worst = fabsf(num - ana) / (1e-3f + fabsf(num));
			if (fabsf(num - ana) > 5e-4f + rtol * fabsf(num)) {
				if (bad++ < 5)
					T_CHECK(0, "tensor %d [%zu]: analytic %g, numeric %g", k, i,
						ana, num);
			}
		}
	}
	printf("# %d gradients checked, worst relative error %.2e\n", checked, worst);
	T_CHECK(bad == 0, "%d of %d gradients disagree", bad, checked);
	model_free(&g);
}

static void t_grad_check(void)
{
	grad_check(&tiny, 1e-2f);
}

static void t_grad_check_llama(void)
{
	struct model_config m = tiny_llama;

	grad_check(&m, 3e-2f);
	/* tied head, no biases, plain RoPE, multi-head (no GQA) */
	m.tie_word_embeddings = 1;
	m.attention_bias = m.mlp_bias = 0;
	m.rope_type = ROPE_DEFAULT;
	m.n_kv_head = 4;
	grad_check(&m, 3e-2f);
}

static void t_adamw_learns(void)
{
	struct model g;
	struct adamw o;
	float first, last = 0;

	tiny_model(&g);
	model_init_weights(&g, 3);
	T_EQ_INT(adamw_init(&o, g.n_params), 0);
	first = model_forward(&g, inputs, targets);
	for (int s = 0; s < 50; s++) {
		last = model_forward(&g, inputs, targets);
		model_backward(&g);
		optim_clip(g.grads, g.n_params, 1.0f);
		adamw_step(&o, &g, 1e-2f, 0.01f);
	}
	T_CHECK(last < first * 0.5f, "loss %g -> %g did not halve on a fixed batch", first, last);
	adamw_free(&o);
	model_free(&g);
}

/* AdamW applied in shards (as ZeRO-1 does: slices cutting through tensors,
 * each with its own moments), clipping folded into the update, is
 * bit-identical to clipping the gradients in place and one whole update. */
static void t_adamw_shards(void)
{
	struct model g, h;
	struct adamw o, sh[3];
	size_t n, cut[4];

	tiny_model(&g);
	tiny_model(&h);
	model_init_weights(&g, 4);
	model_init_weights(&h, 4);
	n = g.n_params;
	cut[0] = 0;
	cut[1] = n / 3 + 1;
	cut[2] = 2 * (n / 3) - 7;
	cut[3] = n;
	T_EQ_INT(adamw_init(&o, n), 0);
	for (int k = 0; k < 3; k++)
		T_EQ_INT(adamw_init(&sh[k], cut[k + 1] - cut[k]), 0);
	for (int s = 0; s < 5 && !t_case_failed; s++) {
		model_forward(&g, inputs, targets);
		model_backward(&g);
		float sc = optim_clip_scale(optim_norm(g.grads, n), 0.5f);

		memcpy(h.grads, g.grads, n * sizeof(float));
		optim_clip(g.grads, n, 0.5f);
		adamw_step(&o, &g, 1e-2f, 0.1f);
		T_CHECK(sc < 1.0f || s > 0, "step %d: the gradients were not clipped", s);
		for (int k = 0; k < 3; k++) {
			adamw_begin(&sh[k], sc);
			adamw_range(&sh[k], &h, cut[k], cut[k + 1], 0, 1e-2f, 0.1f);
		}
		T_CHECK(!memcmp(g.params, h.params, n * sizeof(float)),
			"step %d: sharded update differs", s);
	}
	adamw_free(&o);
	for (int k = 0; k < 3; k++)
		adamw_free(&sh[k]);
	model_free(&g);
	model_free(&h);
}

static void t_schedule(void)
{
	T_CHECK(fabsf(optim_lr("cosine", 1.0f, 0, 100, 10) - 0.1f) < 1e-6f, "warmup step 0");
	T_CHECK(fabsf(optim_lr("cosine", 1.0f, 9, 100, 10) - 1.0f) < 1e-6f, "warmup end");
	T_CHECK(fabsf(optim_lr("cosine", 1.0f, 10, 100, 10) - 1.0f) < 1e-6f, "decay start");
	T_CHECK(fabsf(optim_lr("cosine", 1.0f, 99, 100, 10) - 0.1f) < 1e-6f, "cosine end");
	T_CHECK(fabsf(optim_lr("linear", 1.0f, 99, 100, 10) - 0.1f) < 1e-6f, "linear end");
	T_CHECK(fabsf(optim_lr("constant", 1.0f, 99, 100, 10) - 1.0f) < 1e-6f, "constant");
	T_CHECK(fabsf(optim_lr("cosine", 1.0f, 0, 1, 0) - 1.0f) < 1e-6f, "single step");
}

/* A NaN logit gives a NaN loss (for the trainer to stop on), not the
 * clamp's -log(1e-30) = 69.08 that hid it; a tiny probability is clamped. */
static void t_ce_nan(void)
{
	float logits[4] = {0, NAN, 1, 2}, tiny[2] = {0, 200}, probs[4], loss[1];
	int t = 0;

	T_CHECK(isnan(crossentropy_forward(probs, loss, logits, &t, 1, 4)), "NaN logit: loss %g",
		loss[0]);
	T_CHECK(fabsf(crossentropy_forward(probs, loss, tiny, &t, 1, 2) - 69.0776f) < 1e-3,
		"tiny probability: loss %g, want -log(1e-30)", loss[0]);
}

static void t_clip(void)
{
	float g[2] = {3, 4};

	T_CHECK(fabsf(optim_clip(g, 2, 1.0f) - 5.0f) < 1e-6f, "norm");
	T_CHECK(fabsf(g[0] - 0.6f) < 1e-6f && fabsf(g[1] - 0.8f) < 1e-6f, "clipped %g %g", g[0],
		g[1]);
}

static void t_safetensors_round_trip(void)
{
	struct model a, b;
	char path[300], err[512];

	tiny_model(&a);
	T_EQ_INT(model_build(&b, &tiny, B, T), 0);
	snprintf(path, sizeof(path), "%s/m.safetensors", dir);
	T_EQ_INT(st_save(path, &a, err, sizeof(err)), 0);
	T_EQ_INT(st_load(path, &b, err, sizeof(err)), 0);
	T_CHECK(!memcmp(a.params, b.params, a.n_params * 4), "weights differ after reload");
	model_free(&a);
	model_free(&b);
}

/* Writes a safetensors file of header h followed by data bytes of zeros. */
static void write_raw(const char *path, const char *h, uint64_t hlen_field, size_t data)
{
	FILE *f = fopen(path, "w");
	char z[4096] = {0};

	for (int i = 0; i < 8; i++)
		fputc((int)((hlen_field >> (8 * i)) & 0xff), f);
	fputs(h, f);
	while (data) {
		size_t n = data < sizeof(z) ? data : sizeof(z);
		fwrite(z, 1, n, f);
		data -= n;
	}
	fclose(f);
}

static void t_safetensors_malformed(void)
{
	static const struct {
		const char *name, *header;
		int64_t hlen; /* -1: the header's real length */
		size_t data;
		const char *want;
	} cases[] = {
		{"truncated", "", 0, 0, "truncated"},
		{"huge_header", "{}", 1ull << 40, 0, "header length"},
		{"not_json", "{nope", -1, 0, "not a JSON object"},
		{"missing", "{\"__metadata__\":{}}", -1, 0, "'wte.weight' is missing"},
		{"bad_dtype", "{\"wte.weight\":{\"dtype\":\"I64\",\"shape\":[11,8],"
			      "\"data_offsets\":[0,176]}}", -1, 352, "dtype I64"},
		{"bad_shape", "{\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[12,8],"
			      "\"data_offsets\":[0,384]}}", -1, 384, "dimension 0 is 12"},
		{"past_end", "{\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],"
			     "\"data_offsets\":[0,352]}}", -1, 100, "data_offsets"},
		{"unknown", "{\"h.7.ln_1.weight\":{\"dtype\":\"F32\",\"shape\":[8],"
			    "\"data_offsets\":[0,32]}}", -1, 32, "unexpected tensor 'h.7.ln_1"},
	};
	struct model g;
	char path[300], err[512];

	T_EQ_INT(model_build(&g, &tiny, B, T), 0);
	snprintf(path, sizeof(path), "%s/bad.safetensors", dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t hl = cases[i].hlen < 0 ? strlen(cases[i].header) : (uint64_t)cases[i].hlen;
		int r;

		if (!strcmp(cases[i].name, "truncated")) {
			FILE *f = fopen(path, "w");
			fputs("abc", f);
			fclose(f);
		} else {
			write_raw(path, cases[i].header, hl, cases[i].data);
		}
		err[0] = 0;
		r = st_load(path, &g, err, sizeof(err));
		T_CHECK(r < 0, "%s: accepted", cases[i].name);
		T_CHECK(strstr(err, cases[i].want), "%s: error '%s' lacks '%s'", cases[i].name, err,
			cases[i].want);
	}
	model_free(&g);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	t_run("grad_check_finite_differences", t_grad_check);
	t_run("grad_check_llama", t_grad_check_llama);
	t_run("adamw_lowers_loss", t_adamw_learns);
	t_run("adamw_sharded_equals_whole", t_adamw_shards);
	t_run("lr_schedule", t_schedule);
	t_run("grad_clip", t_clip);
	t_run("crossentropy_nan_not_hidden", t_ce_nan);
	t_run("safetensors_round_trip", t_safetensors_round_trip);
	t_run("safetensors_malformed_rejected", t_safetensors_malformed);
	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			return 1;
	}
	return t_done();
}

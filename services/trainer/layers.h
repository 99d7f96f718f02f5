/* layers — the kernels GPT-2 and Llama share on the CPU: causal attention
 * (multi-head or grouped-query), nn.Linear matmuls, softmax cross-entropy.
 * Shapes in the comments: N rows, B batch, T time, hs head size. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* Where q, k and v sit in one row of the attention input. */
struct attn_shape {
	int B, T;
	int NH, KVH, hs;  /* query heads, key/value heads (NH % KVH == 0), head size */
	size_t row;       /* floats per (b,t) row of the input */
	size_t koff, voff; /* k and v start inside a row; q starts at 0 */
};

// out (B,T,NH*hs); att (B,NH,T,T) softmax weights kept for backward
void attention_forward(float *out, float *att, const float *inp, const struct attn_shape *s);
// dinp (B,T,row) = attention'(dout); scratch: 2T floats per thread
void attention_backward(float *dinp, float *scratch, const float *dout, const float *inp,
			const float *att, const struct attn_shape *s);
// out (N, ldo) (+)= inp (N,IC) @ w^T with w (OC,IC), + bias (OC) when not NULL
void linear_forward(float *out, int ldo, int accumulate, const float *inp, int ldi,
		    const float *w, const float *bias, int N, int IC, int OC);
// dinp (N,IC) (+)= dout @ w; dw (OC,IC) += dout^T @ inp; dbias (OC) += (when not NULL)
void linear_backward(float *dinp, int accumulate, float *dw, float *dbias, const float *dout,
		     int ldd, const float *inp, const float *w, int N, int IC, int OC);
// probs (N,V) = softmax(logits) (may alias); losses (N) = -log probs[target]; returns mean
float crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets,
			   int N, int V);
// dlogits (N,V) = (probs - onehot(target)) / N
void crossentropy_backward(float *dlogits, const float *probs, const int *targets, int N, int V);
/* splitmix64 normal fill: portable bits for the init. */
void fill_normal(float *x, size_t n, float std, uint64_t *s);

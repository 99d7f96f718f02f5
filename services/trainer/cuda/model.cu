/* model — GPT-2 on one GPU: device buffers, the forward and backward pass
 * over cuBLASLt matmuls and the kernels of kernels.cu and attention.cu,
 * AdamW, and the table of functions bursar-train loads (gpu.h). Llama's
 * passes are in llama.cu; the buffers, transfers and AdamW are shared.
 *
 * Matrices are HF's Conv1D layout, (in, out) row-major, which cuBLASLt
 * reads as column-major (out x in): out^T = W . in^T needs no transposes.
 * The vocabulary is padded to Vp (a multiple of 64) on the device so the
 * logits matmul runs on aligned tiles; the pad rows of wte stay zero and
 * their logits are ignored by the loss. bf16 activations, fp32 residual
 * stream, fp32 gradients written by the matmuls directly (bf16 x bf16 ->
 * fp32), fp32 master weights updated by AdamW, which refreshes the bf16
 * copy the matmuls read.
 */
#include "model_int.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- cuBLASLt ---- */

int gemm(struct gpu_model *m, void *D, int f32, const bf16 *A, int ta, int lda,
		const bf16 *Bm, int tb, int ldb, int M, int N, int K, int ldd, int accum,
		const bf16 *bias)
{
	return gemm_ex(m, D, f32, A, ta, lda, Bm, tb, ldb, M, N, K, ldd, accum, bias, NULL);
}

static cublasLtEpilogue_t epilogue_of(int bias, const struct gemm_epi *e)
{
	int act = e ? e->act : EPI_NONE, bg = e ? e->bgrad : BGRAD_NONE;
	if (act == EPI_GELU)
		return bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
	if (act == EPI_DGELU)
		return CUBLASLT_EPILOGUE_DGELU;
	if (bg == BGRAD_A)
		return CUBLASLT_EPILOGUE_BGRADA;
	if (bg == BGRAD_B)
		return CUBLASLT_EPILOGUE_BGRADB;
	return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

static const char *epilogue_name(cublasLtEpilogue_t ep)
{
	switch (ep) {
	case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
	case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
	case CUBLASLT_EPILOGUE_DGELU: return "DGELU";
	case CUBLASLT_EPILOGUE_BGRADA: return "BGRADA";
	case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
	default: return "plain";
	}
}

/* A fused path refused: the separate kernels run from now on, and the
 * trainer says so once (the reason is in m->err). */
static void epi_refused(struct gpu_model *m, int *flag)
{
	*flag = 1;
	fprintf(stderr, "bursar-train: %s; the separate kernels run instead\n", m->err);
}

int gemm_ex(struct gpu_model *m, void *D, int f32, const bf16 *A, int ta, int lda,
	    const bf16 *Bm, int tb, int ldb, int M, int N, int K, int ldd, int accum,
	    const bf16 *bias, const struct gemm_epi *epi)
{
	int act = epi ? epi->act : EPI_NONE, bg = epi ? epi->bgrad : BGRAD_NONE;
	struct gemm_key key = {M, N, K, ta, tb, lda, ldb, ldd, f32, bias != NULL, accum,
			       act, act ? epi->aux_ld : 0, bg};
	cublasLtMatmulDesc_t desc = NULL;
	cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
	cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cudaDataType_t dt = f32 ? CUDA_R_32F : CUDA_R_16BF, bt = CUDA_R_16BF, gt = CUDA_R_32F;
	cublasLtEpilogue_t ep = epilogue_of(bias != NULL, epi);
	float alpha = 1.0f, beta = accum ? 1.0f : 0.0f;
	cublasLtMatmulAlgo_t *algo = NULL;
	int fused = act != EPI_NONE || bg != BGRAD_NONE, r = -EIO;
	const char *stage = "";
	int status = 0;

	if ((bg && bias) || (act && bg) || (act == EPI_DGELU && bias) ||
	    (act && (!epi->aux || epi->aux_ld < M || epi->aux_ld % 8)) ||
	    (bg && !epi->bgrad_out)) {
		snprintf(m->err, sizeof(m->err), "gemm_ex: an epilogue it does not offer");
		return -EINVAL;
	}
	for (int i = 0; i < m->n_cache; i++)
		if (!memcmp(&m->cache[i].k, &key, sizeof(key))) {
			algo = &m->cache[i].algo;
			break;
		}
	if (cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
	    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)) ||
	    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)))
		goto out_msg;
	if (ep != CUBLASLT_EPILOGUE_DEFAULT &&
	    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)))
		goto out_msg;
	if (bias && (cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
						    sizeof(bias)) ||
		     cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
						    sizeof(bt))))
		goto out_msg;
	if (act) {
		int64_t aux_ld = epi->aux_ld;
		const void *aux = epi->aux;
		if (cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
						   &aux, sizeof(aux)) ||
		    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
						   &aux_ld, sizeof(aux_ld)) ||
		    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE,
						   &bt, sizeof(bt))) {
			stage = "its auxiliary matrix";
			goto unsupported;
		}
	}
	if (bg) {
		float *out = epi->bgrad_out;
		if (cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &out,
						   sizeof(out)) ||
		    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &gt,
						   sizeof(gt))) {
			stage = "an fp32 bias gradient";
			goto unsupported;
		}
	}
	if (cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? K : M, ta ? M : K, lda) ||
	    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? N : K, tb ? K : N, ldb) ||
	    cublasLtMatrixLayoutCreate(&ld, dt, M, N, ldd))
		goto out_msg;
	if (!algo) {
		cublasLtMatmulPreference_t pref = NULL;
		cublasLtMatmulHeuristicResult_t res;
		size_t ws = WORKSPACE;
		/* split-K partials summed in a fixed order, never in place (atomics) */
		uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
				   CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
		int found = 0;

		if (cublasLtMatmulPreferenceCreate(&pref) ||
		    cublasLtMatmulPreferenceSetAttribute(
			    pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)) ||
		    cublasLtMatmulPreferenceSetAttribute(
			    pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
			    sizeof(schemes)) ||
		    cublasLtMatmulAlgoGetHeuristic(m->lt, desc, la, lb, ld, ld, pref, 1, &res,
						   &found) ||
		    !found) {
			if (pref)
				cublasLtMatmulPreferenceDestroy(pref);
			if (fused) {
				stage = "no algorithm";
				goto unsupported;
			}
			snprintf(m->err, sizeof(m->err),
				 "cuBLASLt has no algorithm for a %dx%dx%d bf16 matmul", M, N, K);
			goto out;
		}
		cublasLtMatmulPreferenceDestroy(pref);
		if (m->n_cache < GEMM_CACHE) {
			m->cache[m->n_cache].k = key;
			m->cache[m->n_cache].algo = res.algo;
			algo = &m->cache[m->n_cache++].algo;
		} else {
			static cublasLtMatmulAlgo_t one;
			one = res.algo;
			algo = &one;
		}
	}
	{
		cublasStatus_t s = cublasLtMatmul(m->lt, desc, &alpha, A, la, Bm, lb, &beta, D, ld, D,
						  ld, algo, m->ws, WORKSPACE, m->st);
		/* an epilogue refused at launch: nothing was written */
		if (fused && (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE)) {
			stage = "refused at launch";
			status = (int)s;
			goto unsupported;
		}
		if (s != CUBLAS_STATUS_SUCCESS)
			goto out_msg;
	}
	mark(m, T_GEMM);
	r = 0;
	goto out;
unsupported:
	/* the caller falls back to the separate kernels; the reason stays in
	 * m->err for epi_refused's line and fused_check's sentence */
	snprintf(m->err, sizeof(m->err),
		 "cuBLASLt offers no %s epilogue for a %dx%dx%d bf16 matmul (%s%s%.0d)",
		 epilogue_name(ep), M, N, K, stage, status ? ", status " : "", status);
	r = -ENOTSUP;
	goto out;
out_msg:
	snprintf(m->err, sizeof(m->err), "cuBLASLt failed on a %dx%dx%d bf16 matmul", M, N, K);
out:
	if (la)
		cublasLtMatrixLayoutDestroy(la);
	if (lb)
		cublasLtMatrixLayoutDestroy(lb);
	if (ld)
		cublasLtMatrixLayoutDestroy(ld);
	if (desc)
		cublasLtMatmulDescDestroy(desc);
	return r;
}

// out (N,OC) bf16 = inp (N,IC) @ w (IC,OC) + bias
static int linear_forward(struct gpu_model *m, bf16 *out, const bf16 *inp, const bf16 *w,
			  const bf16 *bias, int N, int IC, int OC)
{
	return gemm(m, out, 0, w, 0, OC, inp, 0, IC, OC, N, IC, OC, 0, bias);
}

// pre (N,OC) = inp @ w + bias and out = gelu(pre): in the matmul's epilogue
// with BURSAR_CUDA_FUSED=1 (where cuBLASLt offers it), else a GELU kernel
int linear_gelu_forward(struct gpu_model *m, bf16 *out, bf16 *pre, const bf16 *inp,
			const bf16 *w, const bf16 *bias, int N, int IC, int OC)
{
	int r;

	if (m->fuse_gelu && !m->no_epi_gelu) {
		struct gemm_epi e = {EPI_GELU, pre, OC, BGRAD_NONE, NULL};
		r = gemm_ex(m, out, 0, w, 0, OC, inp, 0, IC, OC, N, IC, OC, 0, bias, &e);
		if (r != -ENOTSUP)
			return r;
		epi_refused(m, &m->no_epi_gelu);
	}
	if ((r = linear_forward(m, pre, inp, w, bias, N, IC, OC)))
		return r;
	k_gelu_forward(out, pre, (size_t)N * OC, m->st);
	mark(m, T_GELU);
	return 0;
}

// dinp (N,IC) bf16 = dout @ w^T, times gelu'(pre) when pre (N,IC) is given;
// dw (IC,OC) += inp^T @ dout; dbias (OC) += colsum(dout). With
// BURSAR_CUDA_FUSED=1 the GELU derivative and the bias sums ride in the
// matmuls' epilogues (where cuBLASLt offers them).
int linear_backward(struct gpu_model *m, bf16 *dinp, float *dw, float *dbias, const bf16 *dout,
		    const float *dout_f32, const bf16 *inp, const bf16 *w, int N, int IC, int OC,
		    const bf16 *pre)
{
	int r = -ENOTSUP;

	if (pre && m->fuse_gelu && !m->no_epi_dgelu) {
		struct gemm_epi e = {EPI_DGELU, (bf16 *)pre, IC, BGRAD_NONE, NULL};
		if ((r = gemm_ex(m, dinp, 0, w, 1, OC, dout, 0, OC, IC, N, OC, IC, 0, NULL, &e)) ==
		    -ENOTSUP)
			epi_refused(m, &m->no_epi_dgelu);
	}
	if (r == -ENOTSUP) {
		if ((r = gemm(m, dinp, 0, w, 1, OC, dout, 0, OC, IC, N, OC, IC, 0, NULL)))
			return r;
		if (pre) {
			k_gelu_backward(dinp, pre, (size_t)N * IC, m->st);
			mark(m, T_GELU);
		}
	}
	if (r)
		return r;
	/* BGRADA sums the bf16 dout even where the fp32 one (dout_f32, the
	 * residual stream's) is at hand: the sums run in fp32, so only each
	 * element's bf16 rounding enters, as in autocast PyTorch and llm.c */
	if (m->fuse_bgrad && !m->no_epi_bgrad) {
		struct gemm_epi e = {EPI_NONE, NULL, 0, BGRAD_A, m->bgrad_tmp};
		r = gemm_ex(m, dw, 1, dout, 0, OC, inp, 1, IC, OC, IC, N, OC, 1, NULL, &e);
		if (!r) {
			k_rows_sum(dbias, m->bgrad_tmp, 1, OC, m->st);
			mark(m, T_BIAS);
			return 0;
		}
		if (r != -ENOTSUP)
			return r;
		epi_refused(m, &m->no_epi_bgrad);
	}
	if ((r = gemm(m, dw, 1, dout, 0, OC, inp, 1, IC, OC, IC, N, OC, 1, NULL)))
		return r;
	if (dout_f32)
		k_colsum_f32(dbias, m->scratch, dout_f32, N, OC, m->st);
	else
		k_colsum_bf16(dbias, m->scratch, dout, N, OC, m->st);
	mark(m, T_BIAS);
	return 0;
}

/* ---- sizes and allocation ---- */

int pad_v(int V) { return (V + 63) / 64 * 64; }

/* The tensors whose rows are the vocabulary: padded to Vp rows on the device. */
static int vocab_rows(const struct gpu_dims *d, int i)
{
	if (d->arch == 0)
		return i == WTE;
	return i == LL_EMB || (i == LL_HEAD && d->sizes[i]);
}

static void layout(struct gpu_model *m)
{
	size_t h = 0, o = 0;
	m->nt = m->d.arch == 0 ? (int)NT : (int)LL_NT;
	for (int i = 0; i < m->nt; i++) {
		m->hoff[i] = h;
		m->off[i] = o;
		m->dsz[i] = vocab_rows(&m->d, i) ? (size_t)m->Vp * m->C : m->d.sizes[i];
		h += m->d.sizes[i];
		o += (m->dsz[i] + 63) / 64 * 64; /* 256-byte aligned tensors */
	}
	m->n_host = h;
	m->n_dev = o;
}

/* The widest matrix row of the model (bias sums need COLSUM_CHUNKS of them). */
static size_t widest(const struct gpu_dims *d)
{
	size_t w = 4 * (size_t)d->C;
	if (d->arch == 1) {
		size_t q = (size_t)d->NH * d->hd, qkv = q + 2 * (size_t)d->KVH * d->hd;
		w = d->F > d->C ? d->F : d->C;
		w = qkv > w ? qkv : w;
	}
	return w;
}

static size_t scratch_floats(const struct gpu_dims *d)
{
	size_t ln = 2ull * LN_BWD_BLOCKS * LN_BWD_WARPS * d->C;
	size_t cs = (size_t)COLSUM_CHUNKS * widest(d);
	size_t s = ln > cs ? ln : cs;
	return s > NORM_BLOCKS ? s : NORM_BLOCKS;
}

static uint64_t gpu_memory_bytes(const struct gpu_dims *d, int B, int T)
{
	uint64_t N = (uint64_t)B * T, C = d->C, L = d->L, Vp = pad_v(d->V), np = 0;
	struct attn_args a = {B, T, d->NH, d->C / d->NH, 0};

	for (int i = 0; i < (d->arch == 0 ? (int)NT : (int)LL_NT); i++)
		np += vocab_rows(d, i) ? Vp * C : d->sizes[i];
	uint64_t params = np * (4 * 4 + 2);
	if (d->arch == 1) {
		uint64_t Q = (uint64_t)d->NH * d->hd;
		struct attn_args la = {B, T, d->NH, d->hd, 0};
		return params + llama_act_bytes(d, B, T) +
		       2 * (N * Vp + N * C + N * (Q > C ? Q : C) + N * 3 * Q) +
		       4 * (N * C + scratch_floats(d) + attn_scratch_floats(&la, 0) + N) + WORKSPACE +
		       24 * N + 4ull * d->V + 4 * widest(d);
	}
	uint64_t acts = 4 * (N * C + 2 * L * N * C + 6 * L * N + (uint64_t)B * d->NH * T * L) +
			2 * (L * N * C * 2 + L * N * 3 * C + L * N * C + 2 * L * N * 4 * C +
			     N * C + N * Vp + N * C);
	uint64_t bwd = 4 * N * C + 2 * (N * C * 2 + N * 4 * C + N * 3 * C) +
		       4 * (scratch_floats(d) + attn_scratch_floats(&a, 0) + N);
	return params + acts + bwd + WORKSPACE + 24 * N + 4ull * d->V + 4 * widest(d);
}

void gpu_destroy(struct gpu_model *m)
{
	if (!m)
		return;
	void *dev[] = {m->params, m->grads, m->mom1, m->mom2, m->params_bf, m->encoded, m->res2,
		       m->res3, m->ln1_mean, m->ln1_rstd, m->ln2_mean, m->ln2_rstd, m->lnf_mean,
		       m->lnf_rstd, m->lse, m->ln1, m->ln2, m->qkv, m->atty, m->fch, m->fchg,
		       m->lnf, m->logits, m->tmp, m->dres, m->scratch, m->attn_scratch,
		       m->losses, m->dloss, m->dres_bf, m->dC, m->d4, m->dqkv, m->d_in, m->d_tg,
		       m->d_order, m->d_starts, m->d_toks, m->ws, m->bgrad_tmp};
	void *pinned[] = {m->h_in, m->h_tg, m->h_order, m->h_starts, m->h_toks, m->h_loss};

	for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
		if (dev[i])
			cudaFree(dev[i]);
	for (size_t i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++)
		if (pinned[i])
			cudaFreeHost(pinned[i]);
	free(m->h_count);
	llama_free(m);
	if (m->lt)
		cublasLtDestroy(m->lt);
	for (int i = 0; i < 3; i++)
		if (m->ev[i])
			cudaEventDestroy(m->ev[i]);
	for (int i = 0; m->tev && i < T_MAXEV; i++)
		if (m->tev[i])
			cudaEventDestroy(m->tev[i]);
	free(m->tev);
	if (m->st)
		cudaStreamDestroy(m->st);
	free(m);
}

#define DALLOC(p, n)                                                                          \
	do {                                                                                  \
		e = cudaMalloc((void **)&(p), (size_t)(n) * sizeof(*(p)));                    \
		if (e != cudaSuccess)                                                         \
			goto out_cuda;                                                        \
	} while (0)
#define HALLOC(p, n)                                                                          \
	do {                                                                                  \
		e = cudaMallocHost((void **)&(p), (size_t)(n) * sizeof(*(p)));                \
		if (e != cudaSuccess)                                                         \
			goto out_cuda;                                                        \
	} while (0)

int gpu_create(struct gpu_model **out, const struct gpu_dims *d, int B, int T, char *err,
	       size_t errlen)
{
	struct gpu_model *m;
	cudaError_t e = cudaSuccess;
	size_t N = (size_t)B * T, C, L, NH;

	if (d->arch == 1 && !(getenv("BURSAR_CUDA_LLAMA") && atoi(getenv("BURSAR_CUDA_LLAMA")))) {
		snprintf(err, errlen, "the CUDA backend's Llama path has not been checked on a GPU "
				      "yet (BURSAR_CUDA_LLAMA=1 enables it); train Llama with "
				      "--device cpu");
		return -ENOTSUP;
	}
	if (d->arch == 1 && (d->C % 8 || d->hd % 16 || d->F % 8 || d->KVH < 1 ||
			     d->NH % d->KVH || B < 1 || T < 1 || T > d->rope_T || !d->rope_cos)) {
		snprintf(err, errlen, "the CUDA backend needs hidden_size and intermediate_size "
			 "multiples of 8 and head_dim a multiple of 16 (hidden %d, head_dim %d, "
			 "intermediate %d)", d->C, d->hd, d->F);
		return -EINVAL;
	}
	if (d->arch == 0 &&
	    (d->C % 64 || d->C % d->NH || (d->C / d->NH) % 8 || B < 1 || T < 1 || T > d->maxT)) {
		snprintf(err, errlen,
			 "the CUDA backend needs n_embd a multiple of 64 and a head size a "
			 "multiple of 8 (n_embd %d, n_head %d)",
			 d->C, d->NH);
		return -EINVAL;
	}
	m = (struct gpu_model *)calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->d = *d;
	m->B = B;
	m->T = T;
	m->N = (int)N;
	m->C = d->C;
	m->L = d->L;
	m->NH = d->NH;
	m->V = d->V;
	m->Vp = pad_v(d->V);
	m->naive_attn = getenv("BURSAR_CUDA_NAIVE_ATTN") && atoi(getenv("BURSAR_CUDA_NAIVE_ATTN"));
	m->timing = getenv("BURSAR_CUDA_TIMING") ? atoi(getenv("BURSAR_CUDA_TIMING")) : 0;
	/* flash2.cu where it applies (head size 64), unless BURSAR_CUDA_FLASH2=0
	 * asks for attention.cu's WMMA kernels */
	m->flash2 = !getenv("BURSAR_CUDA_FLASH2") || atoi(getenv("BURSAR_CUDA_FLASH2"));
	/* BURSAR_CUDA_FUSED=1: the matmul epilogues (GELU, its derivative, bias
	 * gradients); off by default until gpu-check has run them on a GPU */
	m->fuse_gelu = m->fuse_bgrad =
		getenv("BURSAR_CUDA_FUSED") && atoi(getenv("BURSAR_CUDA_FUSED"));
	m->ce_mode = k_crossentropy_mode();
	C = m->C;
	L = m->L;
	NH = m->NH;
	/* attention width and head size: GPT-2's C and C/NH, Llama's NH*hd and hd */
	m->hd = d->arch == 1 ? d->hd : (int)(C / NH);
	m->Q = (int)NH * m->hd;
	m->KVH = d->arch == 1 ? d->KVH : (int)NH;
	m->KV = m->KVH * m->hd;
	m->QKV = m->Q + 2 * m->KV;
	m->F = d->arch == 1 ? d->F : 4 * (int)C;
	size_t A = m->Q, CA = C > A ? C : A;
	layout(m);
	struct attn_args a = {B, T, (int)NH, m->hd, 0};

	if ((e = cudaStreamCreateWithFlags(&m->st, cudaStreamNonBlocking)) != cudaSuccess)
		goto out_cuda;
	for (int i = 0; i < 3; i++)
		if ((e = cudaEventCreate(&m->ev[i])) != cudaSuccess)
			goto out_cuda;
	if (m->timing >= 2) {
		m->tev = (cudaEvent_t *)calloc(T_MAXEV, sizeof(cudaEvent_t));
		for (int i = 0; m->tev && i < T_MAXEV; i++)
			if ((e = cudaEventCreate(&m->tev[i])) != cudaSuccess)
				goto out_cuda;
		if (!m->tev)
			m->timing = 1;
	}
	if (cublasLtCreate(&m->lt) != CUBLAS_STATUS_SUCCESS) {
		snprintf(err, errlen, "cuBLASLt did not start");
		gpu_destroy(m);
		return -EIO;
	}
	DALLOC(m->params, m->n_dev);
	DALLOC(m->grads, m->n_dev);
	DALLOC(m->mom1, m->n_dev);
	DALLOC(m->mom2, m->n_dev);
	DALLOC(m->params_bf, m->n_dev);
	DALLOC(m->encoded, N * C);
	DALLOC(m->res2, L * N * C);
	DALLOC(m->res3, L * N * C);
	if (d->arch == 0) {
		DALLOC(m->ln1_mean, L * N);
		DALLOC(m->ln1_rstd, L * N);
		DALLOC(m->ln2_mean, L * N);
		DALLOC(m->ln2_rstd, L * N);
		DALLOC(m->lnf_mean, N);
		DALLOC(m->lnf_rstd, N);
		DALLOC(m->fch, L * N * 4 * C);
		DALLOC(m->fchg, L * N * 4 * C);
		DALLOC(m->d4, N * 4 * C);
	}
	DALLOC(m->lse, L * B * NH * T);
	DALLOC(m->ln1, L * N * C);
	DALLOC(m->ln2, L * N * C);
	DALLOC(m->qkv, L * N * 3 * A);
	DALLOC(m->atty, L * N * A);
	DALLOC(m->lnf, N * C);
	DALLOC(m->logits, N * m->Vp);
	DALLOC(m->tmp, N * C);
	DALLOC(m->dres, N * C);
	DALLOC(m->scratch, scratch_floats(d));
	DALLOC(m->attn_scratch, attn_scratch_floats(&a, m->naive_attn));
	DALLOC(m->losses, N);
	DALLOC(m->dloss, 1);
	DALLOC(m->dres_bf, N * C);
	DALLOC(m->dC, N * CA);
	DALLOC(m->dqkv, N * 3 * A);
	DALLOC(m->d_in, N);
	DALLOC(m->d_tg, N);
	DALLOC(m->d_order, N);
	DALLOC(m->d_starts, N + 1);
	DALLOC(m->d_toks, N);
	DALLOC(m->ws, WORKSPACE);
	DALLOC(m->bgrad_tmp, widest(d));
	HALLOC(m->h_in, N);
	HALLOC(m->h_tg, N);
	HALLOC(m->h_order, N);
	HALLOC(m->h_starts, N + 1);
	HALLOC(m->h_toks, N);
	HALLOC(m->h_loss, 1);
	if (d->arch == 1) {
		int r = llama_alloc(m, err, errlen);
		if (r < 0) {
			gpu_destroy(m);
			return r;
		}
	}
	m->h_count = (int *)calloc(m->V + 1, sizeof(int));
	if (!m->h_count) {
		snprintf(err, errlen, "out of memory");
		gpu_destroy(m);
		return -ENOMEM;
	}
	if ((e = cudaMemset(m->params, 0, m->n_dev * 4)) != cudaSuccess ||
	    (e = cudaMemset(m->grads, 0, m->n_dev * 4)) != cudaSuccess ||
	    (e = cudaMemset(m->mom1, 0, m->n_dev * 4)) != cudaSuccess ||
	    (e = cudaMemset(m->mom2, 0, m->n_dev * 4)) != cudaSuccess ||
	    (e = cudaMemset(m->params_bf, 0, m->n_dev * 2)) != cudaSuccess)
		goto out_cuda;
	*out = m;
	return 0;
out_cuda:
	snprintf(err, errlen, "%s (the model needs %.2f GiB on the GPU at B=%d T=%d)",
		 cudaGetErrorString(e), gpu_memory_bytes(d, B, T) / 1073741824.0, B, T);
	gpu_destroy(m);
	return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

/* ---- parameter transfer ---- */

enum { BUF_PARAMS, BUF_GRADS, BUF_M1, BUF_M2 };

static float *buf_of(struct gpu_model *m, int which)
{
	return which == BUF_PARAMS ? m->params
	       : which == BUF_GRADS ? m->grads
	       : which == BUF_M1    ? m->mom1
				    : m->mom2;
}

static int copy_in(struct gpu_model *m, int which, const float *host)
{
	float *dev = buf_of(m, which);
	for (int i = 0; i < m->nt; i++)
		CK(m, cudaMemcpy(dev + m->off[i], host + m->hoff[i], m->d.sizes[i] * 4,
				 cudaMemcpyHostToDevice));
	if (which == BUF_PARAMS) {
		k_f32_to_bf16(m->params_bf, m->params, m->n_dev, m->st);
		CK(m, cudaStreamSynchronize(m->st));
	}
	return 0;
}

static int copy_out(struct gpu_model *m, int which, float *host)
{
	const float *dev = buf_of(m, which);
	CK(m, cudaStreamSynchronize(m->st));
	for (int i = 0; i < m->nt; i++)
		CK(m, cudaMemcpy(host + m->hoff[i], dev + m->off[i], m->d.sizes[i] * 4,
				 cudaMemcpyDeviceToHost));
	return 0;
}

static int gpu_set_params(struct gpu_model *m, const float *h) { return copy_in(m, BUF_PARAMS, h); }
static int gpu_get_params(struct gpu_model *m, float *h) { return copy_out(m, BUF_PARAMS, h); }
static int gpu_set_grads(struct gpu_model *m, const float *h) { return copy_in(m, BUF_GRADS, h); }
static int gpu_get_grads(struct gpu_model *m, float *h) { return copy_out(m, BUF_GRADS, h); }

static int gpu_set_moments(struct gpu_model *m, const float *a, const float *b)
{
	int r = copy_in(m, BUF_M1, a);
	return r ? r : copy_in(m, BUF_M2, b);
}

static int gpu_get_moments(struct gpu_model *m, float *a, float *b)
{
	int r = copy_out(m, BUF_M1, a);
	return r ? r : copy_out(m, BUF_M2, b);
}

static int gpu_zero_grads(struct gpu_model *m)
{
	CK(m, cudaMemsetAsync(m->grads, 0, m->n_dev * 4, m->st));
	return 0;
}

/* ---- forward and backward ---- */


/* Positions grouped by token (counting sort), for the embedding backward. */
static void sort_tokens(struct gpu_model *m)
{
	int N = m->N, V = m->V, U = 0;

	memset(m->h_count, 0, (V + 1) * sizeof(int));
	for (int i = 0; i < N; i++)
		m->h_count[m->h_in[i] + 1]++;
	for (int v = 0; v < V; v++) {
		if (m->h_count[v + 1]) {
			m->h_toks[U] = v;
			m->h_starts[U++] = m->h_count[v];
		}
		m->h_count[v + 1] += m->h_count[v];
	}
	m->h_starts[U] = N;
	for (int i = 0; i < N; i++)
		m->h_order[m->h_count[m->h_in[i]]++] = i;
	m->U = U;
}

int logits_and_loss(struct gpu_model *m, int head, int grad, float grad_scale)
{
	int N = m->N, C = m->C, r;

	// logits (N, Vp) = lnf (N,C) @ head^T; the loss; dlogits in place when grad
	if ((r = gemm(m, m->logits, 0, PB(head), 1, C, m->lnf, 0, C, m->Vp, N, C, m->Vp, 0, NULL)))
		return r;
	k_crossentropy_as(k_crossentropy_variant(m->V, m->Vp, m->ce_mode), m->losses, m->logits,
			  m->d_tg, N, m->V, m->Vp, grad_scale / N, grad, m->st);
	k_mean(m->dloss, m->losses, N, m->st);
	mark(m, T_CE);
	return 0;
}

static int forward(struct gpu_model *m, int grad, float grad_scale)
{
	int N = m->N, C = m->C, L = m->L, B = m->B, T = m->T, NH = m->NH;
	size_t NC = (size_t)N * C;
	float eps = m->d.eps;
	struct attn_args a = {B, T, NH, C / NH, 1.0f / sqrtf((float)(C / NH)), m->flash2};
	int r;

	k_encoder_forward(m->encoded, m->d_in, PF(WTE), PF(WPE), N, T, C, m->st);
	mark(m, T_ENC);
	k_residual_layernorm(m->encoded, m->ln1, m->ln1_mean, m->ln1_rstd, m->encoded, NULL,
			     PF(LN1W), PF(LN1B), N, C, eps, m->st);
	mark(m, T_LN);
	for (int l = 0; l < L; l++) {
		size_t lc = (size_t)l * C;
		const float *residual = l == 0 ? m->encoded : m->res3 + (l - 1) * NC;
		bf16 *ln1 = m->ln1 + l * NC, *qkv = m->qkv + l * NC * 3, *atty = m->atty + l * NC;
		bf16 *ln2 = m->ln2 + l * NC, *fch = m->fch + l * NC * 4, *fchg = m->fchg + l * NC * 4;
		float *res2 = m->res2 + l * NC, *res3 = m->res3 + l * NC;

		if ((r = linear_forward(m, qkv, ln1, PB(QKVW) + lc * 3 * C, PB(QKVB) + lc * 3, N, C,
					3 * C)))
			return r;
		k_attn_forward(atty, m->lse + (size_t)l * B * NH * T, qkv, &a, m->naive_attn, m->st);
		mark(m, T_ATTF);
		if ((r = linear_forward(m, m->tmp, atty, PB(ATTPROJW) + lc * C, PB(ATTPROJB) + lc, N,
					C, C)))
			return r;
		k_residual_layernorm(res2, ln2, m->ln2_mean + (size_t)l * N,
				     m->ln2_rstd + (size_t)l * N, residual, m->tmp, PF(LN2W) + lc,
				     PF(LN2B) + lc, N, C, eps, m->st);
		mark(m, T_LN);
		if ((r = linear_gelu_forward(m, fchg, fch, ln2, PB(FCW) + lc * 4 * C,
					     PB(FCB) + lc * 4, N, C, 4 * C)))
			return r;
		if ((r = linear_forward(m, m->tmp, fchg, PB(FCPROJW) + lc * 4 * C, PB(FCPROJB) + lc,
					N, 4 * C, C)))
			return r;
		if (l + 1 < L)
			k_residual_layernorm(res3, m->ln1 + (l + 1) * NC, m->ln1_mean + (size_t)(l + 1) * N,
					     m->ln1_rstd + (size_t)(l + 1) * N, res2, m->tmp,
					     PF(LN1W) + lc + C, PF(LN1B) + lc + C, N, C, eps, m->st);
		else
			k_residual_layernorm(res3, m->lnf, m->lnf_mean, m->lnf_rstd, res2, m->tmp,
					     PF(LNFW), PF(LNFB), N, C, eps, m->st);
		mark(m, T_LN);
	}
	return logits_and_loss(m, WTE, grad, grad_scale);
}

static int backward(struct gpu_model *m)
{
	int N = m->N, C = m->C, L = m->L, B = m->B, T = m->T, NH = m->NH;
	size_t NC = (size_t)N * C;
	struct attn_args a = {B, T, NH, C / NH, 1.0f / sqrtf((float)(C / NH)), m->flash2};
	int r;

	// dlnf (N,C) = dlogits (N,Vp) @ wte; dwte += dlogits^T @ lnf
	if ((r = gemm(m, m->dC, 0, PB(WTE), 0, C, m->logits, 0, m->Vp, C, N, m->Vp, C, 0, NULL)) ||
	    (r = gemm(m, GR(WTE), 1, m->lnf, 0, C, m->logits, 1, m->Vp, C, m->Vp, N, C, 1, NULL)))
		return r;
	k_layernorm_backward(m->dres, m->dres_bf, GR(LNFW), GR(LNFB), m->scratch, m->dC,
			     m->res3 + (L - 1) * NC, PF(LNFW), m->lnf_mean, m->lnf_rstd, N, C, 1,
			     m->st);
	mark(m, T_LNB);
	for (int l = L - 1; l >= 0; l--) {
		size_t lc = (size_t)l * C;
		const float *residual = l == 0 ? m->encoded : m->res3 + (l - 1) * NC;

		if ((r = linear_backward(m, m->d4, GR(FCPROJW) + lc * 4 * C, GR(FCPROJB) + lc,
					 m->dres_bf, m->dres, m->fchg + l * NC * 4,
					 PB(FCPROJW) + lc * 4 * C, N, 4 * C, C, m->fch + l * NC * 4)))
			return r;
		if ((r = linear_backward(m, m->dC, GR(FCW) + lc * 4 * C, GR(FCB) + lc * 4, m->d4,
					 NULL, m->ln2 + l * NC, PB(FCW) + lc * 4 * C, N, C, 4 * C,
					 NULL)))
			return r;
		k_layernorm_backward(m->dres, m->dres_bf, GR(LN2W) + lc, GR(LN2B) + lc, m->scratch,
				     m->dC, m->res2 + l * NC, PF(LN2W) + lc,
				     m->ln2_mean + (size_t)l * N, m->ln2_rstd + (size_t)l * N, N, C,
				     0, m->st);
		mark(m, T_LNB);
		if ((r = linear_backward(m, m->dC, GR(ATTPROJW) + lc * C, GR(ATTPROJB) + lc,
					 m->dres_bf, m->dres, m->atty + l * NC, PB(ATTPROJW) + lc * C,
					 N, C, C, NULL)))
			return r;
		k_attn_backward(m->dqkv, m->attn_scratch, m->dC, m->atty + l * NC,
				m->lse + (size_t)l * B * NH * T, m->qkv + l * NC * 3, &a,
				m->naive_attn, m->st);
		mark(m, T_ATTB);
		if ((r = linear_backward(m, m->dC, GR(QKVW) + lc * 3 * C, GR(QKVB) + lc * 3, m->dqkv,
					 NULL, m->ln1 + l * NC, PB(QKVW) + lc * 3 * C, N, C, 3 * C,
					 NULL)))
			return r;
		k_layernorm_backward(m->dres, m->dres_bf, GR(LN1W) + lc, GR(LN1B) + lc, m->scratch,
				     m->dC, residual, PF(LN1W) + lc, m->ln1_mean + (size_t)l * N,
				     m->ln1_rstd + (size_t)l * N, N, C, 0, m->st);
		mark(m, T_LNB);
	}
	k_encoder_backward(GR(WTE), GR(WPE), m->dres, m->d_order, m->d_starts, m->d_toks, m->U, B, T,
			   C, m->st);
	mark(m, T_ENC);
	return 0;
}

static int gpu_step(struct gpu_model *m, const int *inputs, const int *targets, int backward_too,
		    float grad_scale, float *loss)
{
	size_t n = (size_t)m->N * sizeof(int);
	int r;

	CK(m, cudaStreamSynchronize(m->st)); /* the pinned buffers are free again */
	for (int i = 0; i < m->N; i++)
		if (inputs[i] < 0 || inputs[i] >= m->V || targets[i] < 0 || targets[i] >= m->V) {
			snprintf(m->err, sizeof(m->err), "token id %d at position %d is outside "
				 "the vocabulary (%d)", inputs[i] < 0 || inputs[i] >= m->V ?
				 inputs[i] : targets[i], i, m->V);
			return -EINVAL;
		}
	memcpy(m->h_in, inputs, n);
	memcpy(m->h_tg, targets, n);
	CK(m, cudaMemcpyAsync(m->d_in, m->h_in, n, cudaMemcpyHostToDevice, m->st));
	CK(m, cudaMemcpyAsync(m->d_tg, m->h_tg, n, cudaMemcpyHostToDevice, m->st));
	if (backward_too) {
		sort_tokens(m);
		CK(m, cudaMemcpyAsync(m->d_order, m->h_order, n, cudaMemcpyHostToDevice, m->st));
		CK(m, cudaMemcpyAsync(m->d_starts, m->h_starts, (m->U + 1) * sizeof(int),
				      cudaMemcpyHostToDevice, m->st));
		CK(m, cudaMemcpyAsync(m->d_toks, m->h_toks, m->U * sizeof(int),
				      cudaMemcpyHostToDevice, m->st));
	}
	if (m->timing)
		cudaEventRecord(m->ev[0], m->st);
	m->nev = 0;
	mark(m, T_NCAT);
	if ((r = m->d.arch == 1 ? llama_forward(m, backward_too, grad_scale)
				: forward(m, backward_too, grad_scale)))
		return r;
	if (m->timing)
		cudaEventRecord(m->ev[1], m->st);
	if (backward_too && (r = m->d.arch == 1 ? llama_backward(m) : backward(m)))
		return r;
	if (m->timing) {
		float f = 0, b = 0;
		cudaEventRecord(m->ev[2], m->st);
		cudaEventSynchronize(m->ev[2]);
		cudaEventElapsedTime(&f, m->ev[0], m->ev[1]);
		cudaEventElapsedTime(&b, m->ev[1], m->ev[2]);
		fprintf(stderr, "cuda: forward %.2f ms, backward %.2f ms\n", f, b);
	}
	if (m->timing >= 2 && m->nev > 1) {
		float acc[T_NCAT] = {0}, dt;
		for (int i = 1; i < m->nev; i++) {
			cudaEventElapsedTime(&dt, m->tev[i - 1], m->tev[i]);
			acc[m->tcat[i]] += dt;
		}
		for (int c = 0; c < T_NCAT; c++)
			fprintf(stderr, "cuda:   %-14s %7.2f ms\n", t_names[c], acc[c]);
	}
	CK(m, cudaGetLastError());
	CK(m, cudaMemcpyAsync(m->h_loss, m->dloss, 4, cudaMemcpyDeviceToHost, m->st));
	CK(m, cudaStreamSynchronize(m->st));
	*loss = *m->h_loss;
	return 0;
}

static int gpu_grad_norm(struct gpu_model *m, float *norm)
{
	k_sumsq(m->dloss, m->scratch, m->grads, m->n_dev, m->st);
	CK(m, cudaGetLastError());
	CK(m, cudaMemcpyAsync(m->h_loss, m->dloss, 4, cudaMemcpyDeviceToHost, m->st));
	CK(m, cudaStreamSynchronize(m->st));
	*norm = sqrtf(*m->h_loss);
	return 0;
}

static int gpu_adamw(struct gpu_model *m, const struct gpu_adamw_args *a)
{
	float c1 = 1.0f - powf(a->beta1, (float)a->t), c2 = 1.0f - powf(a->beta2, (float)a->t);

	for (int i = 0; i < m->nt; i++)
		k_adamw(m->params + m->off[i], m->params_bf + m->off[i], m->grads + m->off[i],
			m->mom1 + m->off[i], m->mom2 + m->off[i], m->dsz[i], a->lr, a->beta1,
			a->beta2, c1, c2, a->eps, m->d.decays[i] ? a->weight_decay : 0.0f,
			a->grad_scale, m->st);
	CK(m, cudaGetLastError());
	return 0;
}

static const char *gpu_last_error(struct gpu_model *m) { return m->err; }

/* ---- probes ---- */

static double datasheet_bf16(const char *name)
{
	if (strstr(name, "H100") || strstr(name, "H200") || strstr(name, "H800"))
		return 989e12;
	if (strstr(name, "B200"))
		return 2250e12;
	if (strstr(name, "A100") || strstr(name, "A800"))
		return 312e12;
	if (strstr(name, "L40S"))
		return 362e12;
	return 0;
}

static int gpu_probe(struct gpu_info *info, char *err, size_t errlen)
{
	struct cudaDeviceProp p;
	int n = 0, dev = 0;
	cudaError_t e = cudaGetDeviceCount(&n);

	if (e != cudaSuccess || n < 1) {
		snprintf(err, errlen, "no CUDA device (%s)",
			 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
		return -ENODEV;
	}
	if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
	    (e = cudaGetDeviceProperties(&p, dev)) != cudaSuccess ||
	    (e = cudaMemGetInfo(&info->mem_free, &info->mem_total)) != cudaSuccess) {
		snprintf(err, errlen, "CUDA device %d: %s", dev, cudaGetErrorString(e));
		return -EIO;
	}
	snprintf(info->name, sizeof(info->name), "%.127s", p.name);
	info->sm_count = p.multiProcessorCount;
	info->cc_major = p.major;
	info->cc_minor = p.minor;
	info->peak_bf16 = datasheet_bf16(p.name);
	if (p.major < 8) {
		snprintf(err, errlen, "%s has compute capability %d.%d; bf16 training needs 8.0 or "
			 "newer", p.name, p.major, p.minor);
		return -ENOTSUP;
	}
	return 0;
}

static int gpu_probe_flops(double seconds, double *flops, char *err, size_t errlen)
{
	struct gpu_dims d = {};
	struct gpu_model *m;
	const int n = 8192;
	bf16 *a = NULL, *b = NULL, *c = NULL;
	cudaEvent_t e0, e1;
	float ms = 0;
	int r, reps = 0;

	d.L = 1, d.NH = 1, d.C = 64, d.V = 64, d.maxT = 64;
	/* a throwaway model handle for the stream, cuBLASLt and its cache */
	if ((r = gpu_create(&m, &d, 1, 64, err, errlen)))
		return r;
	r = -EIO;
	if (cudaMalloc((void **)&a, (size_t)n * n * 2) || cudaMalloc((void **)&b, (size_t)n * n * 2) ||
	    cudaMalloc((void **)&c, (size_t)n * n * 2))
		goto out;
	k_fill_random(a, (size_t)n * n, 1, 1.0f, m->st);
	k_fill_random(b, (size_t)n * n, 2, 1.0f, m->st);
	for (int i = 0; i < 3; i++)
		if (gemm(m, c, 0, a, 0, n, b, 0, n, n, n, n, n, 0, NULL))
			goto out;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	cudaEventRecord(e0, m->st);
	cudaStreamSynchronize(m->st);
	do {
		for (int i = 0; i < 10; i++)
			if (gemm(m, c, 0, a, 0, n, b, 0, n, n, n, n, n, 0, NULL))
				goto out_ev;
		reps += 10;
		cudaEventRecord(e1, m->st);
		cudaEventSynchronize(e1);
		cudaEventElapsedTime(&ms, e0, e1);
	} while (ms < seconds * 1e3);
	*flops = 2.0 * n * n * (double)n * reps / (ms / 1e3);
	r = 0;
out_ev:
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
out:
	if (r)
		snprintf(err, errlen, "matmul probe failed: %s", m->err[0] ? m->err : "cudaMalloc");
	cudaFree(a);
	cudaFree(b);
	cudaFree(c);
	gpu_destroy(m);
	return r;
}

static const struct gpu_ops ops = {
	GPU_ABI_VERSION, gpu_probe,	  gpu_memory_bytes, gpu_create,	    gpu_destroy,
	gpu_set_params,	 gpu_get_params,  gpu_get_grads,    gpu_set_grads,  gpu_get_moments,
	gpu_set_moments, gpu_zero_grads,  gpu_step,	    gpu_grad_norm,  gpu_adamw,
	gpu_probe_flops, gpu_attn_check,  gpu_last_error,   gpu_fused_check,
};

extern "C" __attribute__((visibility("default"))) const struct gpu_ops *bursar_gpu_ops(void)
{
	return &ops;
}

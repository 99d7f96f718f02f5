/* trainer.h — the pieces of bursar-train shared between its files: one
 * rank's training run, the HTTP rendezvous and the matmul probe. */
#pragma once
#include "bcoll.h"
#include "bundle.h"

#include <signal.h>

struct train_opts {
	const char *bundle;   /* bundle directory */
	const char *out;      /* output directory, NULL: write nothing */
	long steps;           /* > 0 overrides the bundle's steps */
	int rank, size;
	const char *rdv;      /* "unix:/…", "http://…" (admitd) or "dir:/…" */
	const char *rdv_key;  /* admitd rendezvous key */
	const char *job;      /* for messages */
	const char *dump_grads; /* test only: write step 1's gradients here and stop */
	const char *ckpt;     /* checkpoint directory (resume from it), NULL: none */
	int zero;             /* 1: ZeRO-1, AdamW moments sharded across ranks (zero.h) */
	const char *device;   /* "cpu" | "cuda" | "auto"; NULL: bursar.json's "device" */
	const char *params;   /* JSON file of training params over bursar.json (the job's
			       * params as admission priced them: noded writes it), or NULL */
};

/* The bundle as this run trains it: bundle_check, then o->params over its
 * bursar.json, then --steps. 0, or -errno with a sentence in err. */
int train_load_bundle(const struct train_opts *o, struct bundle_info *bi, char *err,
		      size_t errlen);
/* 0 when the global batch splits evenly across n ranks; else logs why, -EINVAL. */
int train_batch_splits(const struct train_params *p, int n);

/* Exit status of a rank that checkpointed on request (SIGUSR1) and stopped
 * before its last step: "checkpointed, resume later" (EX_TEMPFAIL). */
#define TRAIN_EXIT_CHECKPOINTED 75

/* Set by the SIGUSR1 handler: checkpoint at the next step boundary, exit 75. */
extern volatile sig_atomic_t train_stop_requested;

#define TRAIN_MAX_RANKS 1024     /* ranks of one job (libbcoll's, admitd's, bursar.json's) */
#define TRAIN_MAX_LOCAL_RANKS 256 /* ranks --ranks forks on this machine */
#define TRAIN_RDV_TIMEOUT_MS 120000

/* Runs one rank to the end. Returns the process exit status: 0 success,
 * 2 bad bundle or arguments, 3 communication failure, 75 checkpointed on
 * request, 1 anything else. */
int train_rank(const struct train_opts *o);

/* Rendezvous through admitd's /v1/rdv/{key}: POST our address, poll GET
 * until complete or the deadline. err keeps the sentence of a failure. */
struct rdv_http {
	const char *base, *key;
	int timeout_ms;
	char err[256];
};
int rdv_http_exchange(void *ctx, int rank, int size, const char *my_addr,
		      char (*addrs)[BCOLL_ADDR_LEN]);

/* Sustained single-thread sgemm FLOP/s over about `seconds`, with matrices
 * shaped like a small GPT-2's MLP (512 x 1024 x 256). */
double train_probe_flops(double seconds);

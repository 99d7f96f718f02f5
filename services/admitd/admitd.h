/* admitd.h — internal interfaces of bursar-admitd (job admission, pricing,
 * queue, placement, node heartbeats and rendezvous). Not a public header: only
 * files in services/admitd include it. All job state lives in SQLite; the
 * in-memory struct admitd holds configuration and caches that can always be
 * rebuilt after a restart.
 */
#pragma once
#include <jansson.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>

#include "bundle.h"
#include "httpd.h"
#include "outbox.h"
#include "svc.h"
#include "sched.h"

#define ADMIT_MAX_STR 128          /* tenant, user, name, ids, node names */
#define ADMIT_MAX_PATH 1024        /* bundle_dir, output_dir */
#define ADMIT_MAX_ERROR 512        /* a reported error sentence */
#define ADMIT_MAX_ACTIVE 1000      /* unfinished jobs per tenant */
#define ADMIT_MAX_LIST 1000        /* rows in one job list */
#define ADMIT_MAX_RANKS 1024       /* ranks of one job, rendezvous size */
#define ADMIT_MAX_NODES 1024       /* registered nodes */
#define ADMIT_MAX_NODE_SLOTS 1024  /* slots one node may offer */
#define ADMIT_MAX_HB_JOBS 1024     /* job reports in one heartbeat */
#define ADMIT_MAX_RDV_ROWS 100000  /* rendezvous entries in all */
#define ADMIT_MAX_ADDR 63          /* host:port of a rank */
#define ADMIT_OUTBOX_MAX 100000    /* estimates waiting for ledgerd */
#define ADMIT_DEFAULT_RATE 0.0002  /* $/rank-second when ledgerd is unreachable */
#define ADMIT_MAX_QUEUE 10000      /* queued jobs one admission pass considers */
#define ADMIT_MAX_PRIO 100         /* |priority| of a job */
#define ADMIT_PASS_STATS 1024      /* recent pass durations kept for GET /v1/sched */
#define ADMIT_MAX_CLASSES 16       /* node classes (the ledger prices up to 16) */
#define ADMIT_MAX_GPUS 64          /* GPUs one node reports */

/* ---- pricing.c: pure functions, no I/O ---- */

/* One node class (all nodes that are up and report the same class): its
 * slots, speed and rate. A job runs within one class. */
struct price_cluster {
	char cls[BUNDLE_MAX_CLASS + 1]; /* "cpu", "h100", an operator's "cpu-big" */
	int gpu;               /* its slots are GPUs (device cuda) */
	int show_cls;          /* name the class in sentences (several, or not "cpu") */
	int no_rate;           /* ledgerd has rates but none for this class: not offered */
	int total_slots;       /* slots of the nodes that are up */
	double flops_per_slot; /* probed matmul FLOP/s of one slot (slowest node) */
	double efficiency;     /* fraction of flops_per_slot a training step achieves */
	double rate;           /* $ per rank-second */
	int rate_is_default;   /* rate is ADMIT_DEFAULT_RATE because ledgerd is unreachable */
	/* where efficiency comes from: learned from eff_jobs metered jobs on
	 * eff_node, or the default (eff_jobs 0) */
	int eff_jobs;
	char eff_node[ADMIT_MAX_STR + 1];
	/* measured allreduce between ranks of a node (0: the built-in guesses) */
	double alpha_s, beta_bps;
	/* smallest memory of a node that is up, bytes (0: unknown); a GPU
	 * class: the smallest GPU's memory */
	double mem_bytes;
	/* power one busy slot draws, W (0: unknown): the highest of its nodes',
	 * learned from metered energy (watts_learned) or reported by the node
	 * (a GPU's power limit) */
	double watts;
	int watts_learned;
	double kwh_price; /* $ per kWh (0: energy is not priced) */
};

/* Every class that can run something now. */
struct price_world {
	int n;
	struct price_cluster c[ADMIT_MAX_CLASSES];
};

struct price_option {
	int ranks;
	double compute_s, comm_s, seconds, amount;
	double energy_kwh; /* of all its ranks, when the class's power is known */
};

struct price_result {
	struct price_option chosen;
	int cls;                  /* pricing_world_choose: the chosen class's index */
	double flops_per_token, tokens, node_flops;
	char explain[512];
};

/* Time and cost of running (m, p) on r ranks of cluster c. */
void pricing_option(const struct model_config *m, const struct train_params *p,
		    const struct price_cluster *c, int r, struct price_option *out);
/* Chooses the allocation for (m, p): -E2BIG when p->ranks exceeds the cluster,
 * -EDQUOT when even the cheapest allocation exceeds p->budget, -ENODEV with no
 * slots. err receives the sentence ("needs 8 ranks, the cluster has 2"). */
int pricing_choose(const struct model_config *m, const struct train_params *p,
		   const struct price_cluster *c, struct price_result *out, char *err,
		   size_t errlen);
/* Whether (m, p) may run on class c at all: p's device and node_class, and
 * what the GPU backend trains; 0 or -EOPNOTSUPP with the reason in why. */
int pricing_class_ok(const struct model_config *m, const struct train_params *p,
		     const struct price_cluster *c, char *why, size_t len);
/* Chooses the class and the allocation within it: each class that may run
 * the job is priced (pricing_choose) and the same rule picks among them
 * (deadline: cheapest that meets it; budget: fastest within it; else the
 * fastest), naming the best other class in the explanation. out->cls is the
 * class's index in w. Errors as pricing_choose; -ENODEV when no class is up,
 * -EOPNOTSUPP when none may run the job (err says why). */
int pricing_world_choose(const struct model_config *m, const struct train_params *p,
			 const struct price_world *w, struct price_result *out, char *err,
			 size_t errlen);
/* Re-parses a job's model and params JSON (defence in depth). */
int pricing_parse_spec(json_t *model, json_t *params, struct model_config *m,
		       struct train_params *p, char *err, size_t errlen);
/* "1 m 10 s", "$0.0300" */
void pricing_fmt_duration(double s, char *buf, size_t len);
void pricing_fmt_money(double amount, char *buf, size_t len);
json_t *pricing_estimate_json(const struct price_result *r, const struct price_cluster *c);
#define PRICING_MAX_CANDIDATES 64
/* [{"ranks", "node_class", "seconds", "compute_s", "comm_s", "amount",
 * "amount_micro"}] of every allocation pricing_world_choose considers (capped). */
json_t *pricing_candidates_json(const struct model_config *m, const struct train_params *p,
				const struct price_world *w);
/* Memory one data-parallel rank of m needs (fp32 weights, gradients, two
 * Adam moments, plus activations of one micro-batch), bytes. */
double pricing_rank_mem(const struct model_config *m, const struct train_params *p);
/* The efficiency a finished job achieved: its predicted option pred (priced
 * with efficiency eff_used) against the seconds one rank actually ran.
 * -ERANGE when the run was dominated by fixed costs and says nothing about
 * compute speed. */
int pricing_observed_efficiency(const struct price_option *pred, double eff_used,
				double actual_s, double *out);
/* Moves efficiency eff, learned from n jobs, towards observation obs. */
double pricing_learn(double eff, int n, double obs);
#define PRICING_EFF_MIN 0.005
#define PRICING_EFF_MAX 1.0

/* ---- the daemon ---- */

struct admitd {
	struct svc svc;
	sqlite3 *db;
	struct httpd *httpd;
	struct outbox *estimates;
	const char *ledgerd; /* NULL: no ledgerd configured */
	char rdv[256];       /* base address ranks use for rendezvous */
	double efficiency;
	uint64_t node_timeout_us;
	uint64_t start_us; /* wall clock at start: nodes get a grace period */
	/* rate cache (GET /v1/rates) */
	double rate; /* the "cpu" class's */
	int rate_known;
	struct admit_rate {
		char cls[BUNDLE_MAX_CLASS + 1];
		double rank_second;
	} rates[ADMIT_MAX_CLASSES]; /* every class ledgerd has a rate for */
	int n_rates;
	double kwh_price; /* $ per kWh from ledgerd (0: not priced, or unknown) */
	long long rate_version; /* ledgerd's rate version of the cache (0: none) */
	uint64_t rate_next_us;
	/* estimate outbox backoff */
	uint64_t flush_next_us, flush_backoff_us;
	struct sched_conf sched; /* queue policy (--policy) */
	int budgets_absent;      /* ledgerd answered "no such endpoint" for holds */
	int overrun_stop;        /* --overrun stop: a job over its hold ends (default: pauses) */
	uint64_t budget_next_us;
	struct queue_mem *qm; /* the queued jobs in seq order (queue.c), a cache of SQLite */
	int sched_dirty;      /* something changed since the last pass: run one soon */
	int unsynced;         /* submissions committed with synchronous=NORMAL, not yet synced */
	/* durations of the last ADMIT_PASS_STATS passes, ms (ring), for GET /v1/sched */
	double pass_ms[ADMIT_PASS_STATS];
	double pass_cpu_ms[ADMIT_PASS_STATS]; /* the same passes' CPU time (this thread) */
	uint64_t n_passes;
};

/* ---- store.c: schema and row helpers ---- */

int store_open(const char *path, sqlite3 **out);
/* Prepares sql and binds args by types: 's' text (NULL binds NULL), 'i'
 * int64, 'd' double. */
int store_prep(sqlite3 *db, const char *sql, const char *types, sqlite3_stmt **out, ...);
/* Runs a statement that returns no rows. */
int store_run(sqlite3 *db, const char *sql, const char *types, ...);
/* sql and types must be string literals: statements are prepared once and
 * reused (store.c). Every statement from store_prep ends with store_done. */
void store_done(sqlite3_stmt *st);
/* Runs a statement that returns one integer (none or NULL: *out = dflt). */
int store_int(sqlite3 *db, const char *sql, int64_t dflt, int64_t *out);
/* The same with one text argument (no row: *out = 0). */
int store_int_s(sqlite3 *db, const char *sql, const char *arg, int64_t *out);
int store_begin(sqlite3 *db); /* BEGIN IMMEDIATE, prepared once */
int store_commit(sqlite3 *db);
/* Finalizes the reused statements of db, then closes it. */
void store_close(sqlite3 *db);
int store_job_get(sqlite3 *db, const char *id, json_t **out);
/* A job just inserted, as store_job_get would read it back, built from what
 * the submission holds (no read back). */
struct store_fresh {
	const char *id, *tenant, *user, *bundle_id, *bundle_dir, *name, *state, *reason, *error;
	json_t *model, *params, *estimate; /* borrowed; estimate may be NULL */
	int ranks;
	int64_t prio, created_us, finished_us; /* finished_us 0: null */
	int n_events;
	struct store_event {
		const char *state, *reason;
	} events[3];
};
json_t *store_job_fresh(const struct store_fresh *f);
/* The states of a job that has not ended, as SQL ("state IN " this). */
#define STORE_UNFINISHED "('submitted', 'priced', 'queued', 'running', 'paused')"

/* The newest jobs first, at most limit, of tenant (NULL: all) in state
 * ("": any, "active": unfinished) with seq < before (0: from the newest);
 * *next_before: the cursor of the next page when this one is full, else 0. */
int store_job_list(sqlite3 *db, const char *tenant, const char *state, int64_t before, int limit,
		   json_t **out, int64_t *next_before);
/* Moves a job to state with a reason; records an event when the state changes. */
int store_set_state(sqlite3 *db, const char *id, const char *state, const char *reason);
/* Replaces the reason when it differs (no event). */
int store_set_reason(sqlite3 *db, const char *id, const char *reason);
int store_job_final(const char *state);
/* Removes rendezvous keys of a job ("ID.*"). */
int store_rdv_cleanup(sqlite3 *db, const char *id);

/* ---- nodes.c ---- */

/* The classes of the nodes that are up, each priced at its rate. */
int nodes_world(struct admitd *a, struct price_world *w);
/* Total slots of the nodes that are up. */
int nodes_total_slots(const struct price_world *w);
void nodes_heartbeat(struct httpd_req *req, struct admitd *a);
/* Marks silent nodes down and fails their jobs. */
int nodes_check_timeouts(struct admitd *a);
int nodes_list(struct admitd *a, json_t **out);
/* Flags node id for a re-probe (answered in its heartbeats); -ENOENT. */
int nodes_reprobe(struct admitd *a, const char *id);
/* Settles a running job from its assignments (succeeded, failed, cancelled). */
int nodes_settle_job(sqlite3 *db, const char *id);

/* ---- qmem.c: the queued jobs in memory ---- */

/* One queued job as the scheduling pass sees it; loaded from SQLite once and
 * kept up to date by submissions, passes and cancellations. What every pass
 * reads fits one cache line (a pass walks all 10,000 of them); the names sit
 * in a slot of their own (struct qname), which compaction never moves. */
struct qent {
	int ranks, prio;
	double est_s, submit_s;
	uint64_t reason_h; /* hash of the reason SQLite holds for it */
	uint8_t gone;      /* started or rejected by the running pass */
	uint8_t cls;       /* node class: index into queue_mem.cls (QMEM_NO_CLASS: unknown) */
	int t;             /* the pass's tenant index, valid while t_gen matches */
	uint32_t t_gen;
	uint32_t in_pass, shown; /* stamps (n_passes + 1): ordered, explained by that pass */
	int slot;                /* its struct qname in queue_mem.names */
	int64_t seq;
};

struct qname {
	char id[ADMIT_MAX_STR + 1], tenant[ADMIT_MAX_STR + 1], user[ADMIT_MAX_STR + 1];
	int64_t est_micro;
};

#define QMEM_MAX_CLASSES 64
#define QMEM_NO_CLASS 255

/* The first ADMIT_MAX_QUEUE queued jobs in seq order; overflow: there are more
 * in SQLite, read once room frees up. */
struct queue_mem {
	int n, loaded, overflow;
	int topup; /* room freed up while overflowing: read the next jobs (qmem_topup) */
	int n_gone; /* entries marked gone since the last compaction */
	int n_free;
	int free_slot[ADMIT_MAX_QUEUE];
	struct qent e[ADMIT_MAX_QUEUE];
	struct qname names[ADMIT_MAX_QUEUE];
	/* the node classes queued jobs were priced for, interned (never shrinks
	 * while the daemon runs; reset with the queue by qmem_load) */
	char cls[QMEM_MAX_CLASSES][BUNDLE_MAX_CLASS + 1];
	int n_cls;
};
/* The index of class name in qm->cls, added when new; QMEM_NO_CLASS when full. */
int qmem_class(struct queue_mem *qm, const char *name);

/* The names of queued job e. */
static inline struct qname *qmem_name(struct queue_mem *qm, const struct qent *e)
{
	return &qm->names[e->slot];
}
/* Adds a job to the end of the queue with its names (no read back). */
int qmem_append(struct queue_mem *qm, const struct qent *e, const struct qname *nm);

/* Reloads the queue from SQLite (at start, and after anything it cannot follow). */
int qmem_load(struct admitd *a);
/* Reads the queued jobs behind the last one held into the room that freed up. */
int qmem_topup(struct admitd *a);
/* Writes a queued job's reason only when it differs from what SQLite holds. */
int qmem_set_reason(struct admitd *a, struct qent *e, const char *reason);
/* The same with h = qmem_reason_hash(reason) computed once by the caller. */
int qmem_set_reason_h(struct admitd *a, struct qent *e, const char *reason, uint64_t h);
uint64_t qmem_reason_hash(const char *reason);
/* Drops the entries the committed pass started or rejected. */
void qmem_compact(struct admitd *a);
/* Forgets job id (cancelled). */
void qmem_remove(struct admitd *a, const char *id);

/* ---- queue.c ---- */

/* Allocates the in-memory queue (loaded from SQLite by the first pass). */
int queue_init(struct admitd *a);
void queue_free(struct admitd *a);
/* One scheduling pass: prices submitted jobs and admits queued ones by the
 * queue policy, in one transaction; clears a->sched_dirty. */
int queue_schedule(struct admitd *a);
/* A job's price, decided before its row is written. */
struct queue_priced {
	int rejected;     /* 1: reason holds "rejected: …" */
	char reason[600]; /* "priced: 4 ranks: …" or the rejection */
	int ranks;
	char cls[BUNDLE_MAX_CLASS + 1]; /* the node class it was priced for */
	double est_s;
	int64_t est_micro;
	char *est_json;   /* the job's "estimate" object, and parsed */
	json_t *est;
	json_t *rec;      /* the record for ledgerd's /v1/estimates */
};
#define QUEUE_QUEUED_REASON "queued: waiting for its turn"
/* SQL condition on a jobs row: the job can be checkpointed without losing
 * work, so it may be preempted or paused. Its rank 0 reported a checkpoint
 * (noded's progress "ckpt_step") or a step: inside the step loop, SIGUSR1
 * makes the trainer write one at the next step boundary and exit 75. A job
 * still loading has neither. */
#define QUEUE_CAN_CHECKPOINT                                                                     \
	"max(coalesce(json_extract(progress, '$.ckpt_step'), 0),"                                 \
	" coalesce(json_extract(progress, '$.step'), 0)) >= 1"
/* Prices job id (pure: no SQLite); queue_priced_free releases out. */
int queue_price(const struct price_world *w, const char *id, const char *tenant,
		const char *user, json_t *model, json_t *params, struct queue_priced *out);
void queue_priced_free(struct queue_priced *q);
/* Queues the estimate for ledgerd inside the caller's transaction. */
int queue_put_estimate(struct admitd *a, const char *id, const struct queue_priced *q);
/* Adds a committed queued job (its entry built by the caller, no read back)
 * to the in-memory queue and asks for a pass. */
void queue_note_entry(struct admitd *a, const struct qent *e, const struct qname *nm);
/* {"passes", "queued", "overflow", "p50_ms", "p99_ms", "max_ms", "cpu_p50_ms",
 * "cpu_p99_ms", "cpu_max_ms"} of the recent passes (wall clock, and the CPU
 * time of admitd's thread, which a busy shared machine does not inflate). */
json_t *queue_stats_json(struct admitd *a);
/* Cancels a job; *status receives the HTTP status to answer with. */
int queue_cancel(struct admitd *a, const char *id, unsigned *status, char *err, size_t errlen);
/* Refreshes the cached ledgerd rate when due. */
/* Reads ledgerd's rates when due (force: now); 0, or -errno with the reason
 * in err (the cached or default rate stays in use). */
int queue_refresh_rate(struct admitd *a, int force, char *err, size_t errlen);

/* ---- budget.c: holds in ledgerd ---- */

/* Reserves amount_micro for job id: 0 when held (or budgets are off),
 * -EDQUOT with the ledger's sentence in err when the tenant cannot afford it,
 * -EAGAIN when ledgerd cannot be asked (the job must not start). */
int budget_hold(struct admitd *a, const char *id, const char *tenant, const char *user,
		int64_t amount_micro, char *err, size_t errlen);
/* Releases holds of ended jobs; extends or stops running jobs near their hold. */
void budget_tick(struct admitd *a);

/* ---- tenants.c: quotas and fair-share usage ---- */

struct tenant_quota {
	int max_ranks, max_jobs; /* 0: no limit */
	double share;
	int max_priority; /* the highest priority its users may ask for (operators: any) */
};
/* The tenant's quota (defaults when it has no row). */
int tenants_quota(sqlite3 *db, const char *tenant, struct tenant_quota *q);
void tenants_put(struct httpd_req *req, struct admitd *a);
void tenants_get(struct httpd_req *req, struct admitd *a);
void tenants_list(struct httpd_req *req, struct admitd *a);

/* ---- learn.c: the estimator learns from metered bills ---- */

/* Reads the bills of jobs that succeeded a few seconds ago from ledgerd and
 * moves their nodes' efficiency towards what the job achieved. */
void learn_tick(struct admitd *a);

/* ---- rdv.c ---- */

void rdv_post(struct httpd_req *req, struct admitd *a);
void rdv_get(struct httpd_req *req, struct admitd *a);

/* ---- api.c ---- */

/* Roles: a request forwarded by consoled carries the caller's role and
 * tenant (X-Bursar-Role, X-Bursar-Tenant); one without them comes from a
 * local operator on admitd's private socket. Replies 403 naming the role
 * needed and returns -EPERM when the caller may not do `what` (on tenant t,
 * or on any tenant when t is NULL: users may read their own tenant only). */
#define ADMIT_ROLE_HEADER "X-Bursar-Role"
#define ADMIT_TENANT_HEADER "X-Bursar-Tenant"
int api_need_operator(struct httpd_req *req, const char *what, const char *t, int read_own);

extern const struct httpd_route admit_routes[];
extern const size_t admit_n_routes;

/* noded.h — the node agent's internal interfaces (not installed anywhere).
 *
 * One struct noded holds the agent: its sd-event loop, its SQLite file
 * (jobs, probe result, the meter spool), and the jobs it runs. A job owns its
 * ranks; a rank owns its child process, its stdout pipe and its meter mark.
 * Everything runs on the one event-loop thread; nothing here is locked.
 */
#pragma once
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "svc.h"

#define NODED_ID_MAX 128          /* job, tenant, user, node ids */
#define NODED_MAX_RANKS 256       /* ranks of one job on this node */
#define NODED_MAX_SIZE 65536      /* ranks of one job in total */
#define NODED_MAX_JOBS 1024       /* jobs held in memory */
#define NODED_ERROR_MAX 500       /* a job's error sentence (admitd takes 512) */
#define NODED_LINE_MAX (64 * 1024) /* one stdout line of a rank, newline included */
#define NODED_REPORTS_AFTER_FINISH 3
#define NODED_KILL_GRACE_US (5 * 1000000ULL)
#define NODED_SPOOL_MAX 1000000
#define NODED_SPOOL_BATCH 1000
#define NODED_DEFAULT_FLOPS 1e9 /* used when the probe fails: low on purpose */
#define NODED_MAX_GPUS 64
#define NODED_CLASS_MAX 32         /* a node class name, [a-z0-9_.-] */
#define NODED_MAX_KWH 1000.0       /* ledgerd's bound on one record's energy_kwh */

/* linebuf.c — splits a byte stream into lines with a hard length cap. */
struct linebuf {
	char buf[NODED_LINE_MAX];
	size_t len;
	int dropping;     /* inside an overlong line: discard up to the next '\n' */
	uint64_t dropped; /* overlong lines discarded */
};
typedef void (*linebuf_fn)(const char *line, size_t len, void *userdata);
void linebuf_init(struct linebuf *lb);
/* Calls fn for every complete line in data (without the '\n', NUL-terminated). */
void linebuf_feed(struct linebuf *lb, const char *data, size_t n, linebuf_fn fn, void *userdata);
/* End of stream: delivers a final unterminated line, if any. */
void linebuf_finish(struct linebuf *lb, linebuf_fn fn, void *userdata);

/* meter.c — what a rank used, as line items. */
struct meter_mark {
	uint64_t mono_us; /* CLOCK_MONOTONIC */
	uint64_t cpu_us;  /* utime + stime of the rank */
	uint64_t comm_us; /* cumulative collective wait the rank reported */
	uint64_t energy_uj; /* cumulative energy counter of the rank (GPU or share of RAPL) */
	int have_energy;    /* energy_uj is known */
};
struct meter_split {
	uint64_t compute_us, comm_us, idle_us;
};
void meter_split(uint64_t dwall_us, uint64_t dcpu_us, uint64_t dcomm_us, struct meter_split *out);
/* Splits energy e over parts proportional to q[0..n-1] (their sum the
 * interval), in whole units that sum to exactly e. */
void meter_split_energy(uint64_t e, const uint64_t *q, int nq, uint64_t *out);
/* The energy a counter gained from prev to now, wrapping at max_range (RAPL). */
uint64_t meter_counter_delta(uint64_t prev, uint64_t now, uint64_t max_range);
/* Busy CPU time (user nice system irq softirq steal) of /proc/stat's "cpu" line, in ticks. */
int meter_parse_proc_stat(const char *buf, size_t len, uint64_t *busy_ticks);
/* A rank's share of the node's energy de for its CPU time dcpu of the node's dbusy. */
uint64_t meter_cpu_share(uint64_t de, uint64_t dcpu, uint64_t dbusy);
/* The mark that closes a crashed agent's last interval of a rank at now_us:
 * alive, its CPU time cpu_us counts (compute); gone, the gap is idle (the slot
 * was held). comm_wait is unknown either way (the rank's lines were lost). */
void meter_gap_mark(const struct meter_mark *last, uint64_t now_us, int alive, uint64_t cpu_us,
		    struct meter_mark *out);
/* Parses the text of /proc/PID/stat into utime + stime clock ticks. */
int meter_parse_stat(const char *buf, size_t len, uint64_t *ticks, uint64_t *starttime);
/* utime + stime of pid in microseconds (works on a zombie). */
int meter_read_cpu(pid_t pid, uint64_t *cpu_us, uint64_t *starttime);

/* PREEMPTED: every rank checkpointed on SIGUSR1 and exited 75; admitd
 * relaunches the job later, resuming from DIR/jobs/<job>/ckpt. */
enum job_state { JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED, JOB_PREEMPTED };
#define NODED_EXIT_CHECKPOINTED 75 /* the trainer's "checkpointed, resume later" */

struct progress {
	int have;
	long step, steps;
	long ckpt_step; /* last checkpoint rank 0 wrote (or resumed from), 0: none */
	double loss, first_loss, tokens_per_s;
	int have_first;
};

struct job;

struct rank {
	struct job *job;
	int rank;
	pid_t pid;
	int out_fd; /* read end of the rank's stdout pipe, -1 once closed */
	sd_event_source *io, *child;
	int started;       /* forked */
	int alive;         /* not yet reaped */
	int final_pending; /* exited; the last interval is not yet in the spool */
	int exit_code;     /* si_code (CLD_EXITED, CLD_KILLED, ...) */
	int exit_status;   /* si_status */
	uint64_t launch_mono_us, launch_wall_us;
	struct meter_mark mark;      /* metered (in the spool) up to here */
	struct meter_mark exit_mark; /* taken at exit, metered when final_pending clears */
	uint64_t comm_us;            /* latest cumulative comm_s reported */
	int gpu;                     /* the GPU index it holds, -1: a CPU rank */
	uint64_t energy_uj;          /* CPU node: its accumulated share of the node's energy */
	uint64_t share_cpu_us;       /* CPU node: its CPU time when the share was last taken */
	struct linebuf lb;
};

struct job {
	struct noded *n;
	struct job *next;
	char id[NODED_ID_MAX], tenant[NODED_ID_MAX], user[NODED_ID_MAX];
	char bundle_dir[PATH_MAX], rdv[PATH_MAX], rdv_key[NODED_ID_MAX];
	char dir[PATH_MAX], out_dir[PATH_MAX], ckpt_dir[PATH_MAX];
	char *params; /* the launch's training params (JSON) as admission priced them, or NULL */
	int size;
	int n_ranks;
	struct rank *ranks;
	pid_t pgid;
	int live; /* ranks not yet reaped */
	enum job_state state;
	int cancel_requested;
	int preempt_requested; /* admitd asked for a checkpoint and exit (SIGUSR1 sent) */
	int checkpointed;      /* a rank exited NODED_EXIT_CHECKPOINTED */
	char error[NODED_ERROR_MAX + 1];
	int error_is_status; /* error is "rank R exited with status S" */
	struct progress prog;
	uint64_t launch_mono_us, finish_mono_us;
	double recovered_elapsed_s; /* a job loaded from noded.db after a restart */
	int reports_left; /* successful heartbeats still to carry a finished job */
	int train_log_fd;
	sd_event_source *kill_timer;
};

struct noded_gpu {
	int index; /* NVML's (and CUDA_VISIBLE_DEVICES') index */
	char name[96], uuid[96];
	uint64_t mem_bytes;
	double power_w; /* enforced power limit, W (0: NVML does not say) */
	void *dev;      /* nvmlDevice_t */
};

/* The node's RAPL package energy and busy CPU time at the last meter tick. */
struct node_energy {
	int ok;           /* RAPL readable */
	int n_zones;
	uint64_t uj[16], max_uj[16]; /* per package zone */
	uint64_t busy_us;
	int sampled;
};

struct noded {
	struct svc svc;
	sqlite3 *db;
	sqlite3_stmt *mark_st; /* a rank's last metered mark (jobdb_put_mark), prepared once */
	char boot_id[40];      /* /proc/sys/kernel/random/boot_id: CLOCK_MONOTONIC's epoch */
	struct outbox *spool;
	struct httpd *httpd;
	const char *state_dir, *admitd, *ledgerd, *trainer, *listen, *addr;
	char node_id[NODED_ID_MAX];
	char state_abs[PATH_MAX];
	int slots, threads_per_rank, reprobe;
	int64_t spool_max;
	double flops;
	/* the measured profile (0: unknown) and when it was measured */
	double mem_bytes, alpha_s, beta_bps;
	uint64_t probed_us;
	int reprobe_asked; /* admitd asked for a re-probe; done when no job runs */
	struct job *jobs;
	int n_jobs;
	int admitd_down, ledgerd_down; /* for logging transitions once */
	long admitd_last_status;
	int spool_full;
	int stopping;
	int slots_given; /* --slots was given */
	int cpu_only;    /* --cpu-only: a CPU node whatever GPUs it has */
	char node_class[NODED_CLASS_MAX + 1];
	int n_gpus; /* 0: a CPU node */
	struct noded_gpu gpus[NODED_MAX_GPUS];
	struct rank *gpu_holder[NODED_MAX_GPUS]; /* the rank on gpus[i], NULL: free */
	struct node_energy energy;
	double gpu_mem_bytes; /* sum of the GPUs' memory */
	/* what one busy slot may draw, W (0: unknown): a GPU's power limit, or
	 * the RAPL packages' limit shared by the CPU slots; admission prices
	 * energy with it until it has metered the real figure */
	double watts_per_slot;
};

/* gpu.c — NVML inventory, the node class, GPUs handed to ranks. */
int noded_valid_class(const char *s);
/* The class a GPU of this NVML name is priced as ("NVIDIA H100 80GB HBM3" → "h100"). */
void gpu_class_from_name(const char *name, char *out, size_t outlen);
/* Takes the inventory and sets the class and the slots; -EINVAL when
 * --slots exceeds the GPUs. A node without GPUs is a CPU node (0). */
int gpu_setup(struct noded *n, const char *class_opt);
void gpu_close(struct noded *n);
/* The RAPL packages' power limit in W (0: unreadable), for watts_per_slot. */
double meter_rapl_limit_w(void);
/* Cumulative energy of GPU index gpu in microjoules. */
int gpu_energy_uj(struct noded *n, int gpu, uint64_t *uj);
/* Gives rk a free GPU (rk->gpu); -EBUSY when none is free. */
int gpu_take(struct noded *n, struct rank *rk);
void gpu_release(struct noded *n, struct rank *rk);
json_t *gpu_json(struct noded *n);
/* What ranks and the probe run on: "cuda" on a GPU node, else "cpu". */
static inline const char *noded_device(const struct noded *n)
{
	return n->n_gpus ? "cuda" : "cpu";
}

/* jobdb.c — noded.db: schema, job rows, the probe result. */
int jobdb_open(struct noded *n);
void jobdb_close(struct noded *n);
/* Records a forked rank (pid, start time, launch mark) for crash recovery. */
int jobdb_insert_rank(struct noded *n, struct rank *rk, uint64_t starttime);
/* A rank's exit mark that the spool had no room for, kept for a restart. */
int jobdb_put_exit(struct noded *n, struct rank *rk);
/* Inside meter_emit's transaction: the rank's mark is now m (final: its last). */
int jobdb_put_mark(struct noded *n, struct rank *rk, const struct meter_mark *m, int final);
int jobdb_known(struct noded *n, const char *id);
/* 1 when job id's row says it was preempted (a relaunch may reuse the id). */
int jobdb_preempted(struct noded *n, const char *id);
int jobdb_insert(struct noded *n, struct job *j, const char *ranks_json);
int jobdb_set_pgid(struct noded *n, struct job *j, uint64_t starttime);
int jobdb_finish(struct noded *n, struct job *j);
int jobdb_set_reports_left(struct noded *n, struct job *j);
/* Insert a launch that was refused as a finished, failed job. */
int jobdb_insert_refused(struct noded *n, const char *id, const char *tenant, const char *user,
			 const char *error);
/* Loads finished jobs still to be reported; meters the orphans of a crash up
 * to now (jobdb_recover_meter), kills them and fails their jobs. */
int jobdb_recover(struct noded *n);
int jobdb_get_flops(struct noded *n, double *flops);
int jobdb_set_flops(struct noded *n, double flops);
/* The stored profile as JSON text in buf ({"mem_bytes", ...}); -ENOENT. */
int jobdb_get_profile(struct noded *n, char *buf, size_t len);
int jobdb_set_profile(struct noded *n, const char *json_text);
const char *job_state_name(enum job_state s);

/* launch.c — ranks as child processes. */
/* Forks every rank of j (row already persisted). On error the job is failed. */
int launch_job(struct noded *n, struct job *j);
/* Asks a job to stop: SIGTERM to its process group, SIGKILL after the grace. */
void launch_kill(struct noded *n, struct job *j);
/* Asks a job to checkpoint and exit (SIGUSR1 to its ranks). */
void launch_preempt(struct noded *n, struct job *j);
/* Called when the last rank is reaped: sets the final state, persists it. */
void launch_finish(struct noded *n, struct job *j);
/* SIGTERM: stops every job and reaps its ranks (outside the event loop). */
void launch_stop_all(struct noded *n, uint64_t grace_us);
struct job *job_new(struct noded *n, const char *id, const char *tenant, const char *user);
void job_free(struct job *j);
struct job *job_find(struct noded *n, const char *id);
void job_unlink(struct noded *n, struct job *j);

/* meter.c (continued) — records into the spool. */
/* Spools the interval since rk->mark up to m; advances the mark on success. */
int meter_emit(struct noded *n, struct rank *rk, const struct meter_mark *m);
/* Every second: samples each live rank and retries pending final intervals. */
void meter_tick(void *userdata);
void meter_drain(struct noded *n);
/* Reads RAPL and /proc/stat once (at start: logs once when energy is unknown). */
void meter_energy_setup(struct noded *n);
/* The rank's energy counter now, into m (have_energy 0 when unknown). */
void meter_energy_mark(struct noded *n, struct rank *rk, struct meter_mark *m);
/* A rank just exited: takes its exit mark and spools its last interval. */
void meter_rank_exited(struct noded *n, struct rank *rk, uint64_t fallback_cpu_us);

/* spool.c — the durable meter outbox to ledgerd. */
int spool_open(struct noded *n);
/* energy_uj < 0: unknown, the record carries no energy_kwh. */
int spool_put_record(struct noded *n, struct rank *rk, const char *kind, uint64_t start_wall_us,
		     uint64_t quantity_us, int64_t energy_uj);
/* Sends everything pending (up to max_batches batches); logs ledgerd up/down once. */
void spool_flush(struct noded *n, int max_batches);
void spool_tick(void *userdata);
int64_t spool_pending(struct noded *n);

/* heartbeat.c — report to admitd, apply its launches and kills. */
json_t *job_progress_json(const struct job *j);
int job_progress_load(struct job *j, const char *json_text);
void heartbeat_tick(void *userdata);

/* probe.c — the node's FLOP/s per rank, memory and allreduce α-β. */
int probe_run(const char *trainer, const char *device, int threads, int timeout_s, double *flops,
	      char *err, size_t errlen);
/* Runs the allreduce probe program prog (bursar-arprobe). */
int probe_allreduce(const char *prog, int timeout_s, double *alpha_s, double *beta_bps,
		    char *err, size_t errlen);
/* MemTotal of /proc/meminfo in bytes. */
int probe_mem(double *bytes);
/* noded.c: measures the node (all three probes) and stores the profile;
 * force: even when noded.db holds an earlier result. */
void noded_profile(struct noded *n, int force);

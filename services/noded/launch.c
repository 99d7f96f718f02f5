/* launch — a job's ranks as child processes of the agent.
 *
 * Each rank is `TRAINER BUNDLE_DIR --out DIR/jobs/<job>/out --ckpt
 * DIR/jobs/<job>/ckpt --device cpu|cuda` with its rank
 * and rendezvous in the environment; all ranks of a job share one process
 * group (rank 0 leads it) so a kill reaches whatever they spawn. stdout is a
 * pipe read line by line from the event loop (rank 0's JSON lines become
 * train.log and the job's progress; every rank's comm_s feeds the meter);
 * stderr goes straight to rank-N.log. On a GPU node each rank holds one
 * GPU of its own (CUDA_VISIBLE_DEVICES=<index>, --device cuda) until it is
 * reaped; on a CPU node it runs --device cpu and sees no GPU
 * (CUDA_VISIBLE_DEVICES empty), so a rank priced as a CPU never uses a GPU
 * it was not billed for. Exits arrive as sd-event child events
 * while the rank is still a zombie, so its last CPU time can be read. A
 * preemption sends SIGUSR1: ranks that exit 75 checkpointed, and the job ends
 * "preempted" (a relaunch resumes from the checkpoint). This
 * file never blocks the loop and never allocates between fork and exec.
 */
#include "noded.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct job *job_new(struct noded *n, const char *id, const char *tenant, const char *user)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->n = n;
	snprintf(j->id, sizeof(j->id), "%s", id);
	snprintf(j->tenant, sizeof(j->tenant), "%s", tenant);
	snprintf(j->user, sizeof(j->user), "%s", user);
	j->train_log_fd = -1;
	j->state = JOB_RUNNING;
	j->reports_left = NODED_REPORTS_AFTER_FINISH;
	j->next = n->jobs;
	n->jobs = j;
	n->n_jobs++;
	return j;
}

void job_unlink(struct noded *n, struct job *j)
{
	for (struct job **p = &n->jobs; *p; p = &(*p)->next) {
		if (*p == j) {
			*p = j->next;
			n->n_jobs--;
			return;
		}
	}
}

void job_free(struct job *j)
{
	if (!j)
		return;
	for (int i = 0; i < j->n_ranks; i++) {
		struct rank *rk = &j->ranks[i];

		gpu_release(j->n, rk);
		sd_event_source_disable_unref(rk->io);
		sd_event_source_disable_unref(rk->child);
		if (rk->out_fd >= 0)
			close(rk->out_fd);
	}
	free(j->ranks);
	free(j->params);
	if (j->train_log_fd >= 0)
		close(j->train_log_fd);
	sd_event_source_disable_unref(j->kill_timer);
	free(j);
}

struct job *job_find(struct noded *n, const char *id)
{
	for (struct job *j = n->jobs; j; j = j->next)
		if (!strcmp(j->id, id))
			return j;
	return NULL;
}

/* The rank's environment: ours plus the agent's, minus any stale BURSAR_* or
 * thread-count variables. Built before fork; freed by the parent. */
static char **launch_env(struct noded *n, struct job *j, const struct rank *rk)
{
	int rank = rk->rank;
	static const char *const drop[] = {"BURSAR_RANK=", "BURSAR_SIZE=", "BURSAR_RDV=",
					   "BURSAR_RDV_KEY=", "BURSAR_JOB=", "OMP_NUM_THREADS=",
					   "OPENBLAS_NUM_THREADS=", "CUDA_VISIBLE_DEVICES=",
					   "CUDA_DEVICE_ORDER="};
	size_t ne = 0, k = 0;
	char **env;

	while (environ[ne])
		ne++;
	env = calloc(ne + ARRAY_SIZE(drop) + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < ne; i++) {
		int keep = 1;

		for (size_t d = 0; d < ARRAY_SIZE(drop); d++)
			if (!strncmp(environ[i], drop[d], strlen(drop[d])))
				keep = 0;
		if (keep && !(env[k++] = strdup(environ[i])))
			goto out_free;
	}
	if (asprintf(&env[k++], "BURSAR_RANK=%d", rank) < 0 ||
	    asprintf(&env[k++], "BURSAR_SIZE=%d", j->size) < 0 ||
	    asprintf(&env[k++], "BURSAR_RDV=%s", j->rdv) < 0 ||
	    asprintf(&env[k++], "BURSAR_RDV_KEY=%s", j->rdv_key) < 0 ||
	    asprintf(&env[k++], "BURSAR_JOB=%s", j->id) < 0 ||
	    asprintf(&env[k++], "OMP_NUM_THREADS=%d", n->threads_per_rank) < 0 ||
	    asprintf(&env[k++], "OPENBLAS_NUM_THREADS=%d", n->threads_per_rank) < 0 ||
	    (rk->gpu >= 0 ? asprintf(&env[k++], "CUDA_VISIBLE_DEVICES=%d", rk->gpu)
			  : asprintf(&env[k++], "CUDA_VISIBLE_DEVICES=")) < 0 ||
	    /* CUDA's own order is fastest first; NVML's (our index) is the bus's */
	    (rk->gpu >= 0 && asprintf(&env[k++], "CUDA_DEVICE_ORDER=PCI_BUS_ID") < 0)) {
		env[--k] = NULL;
		goto out_free;
	}
	return env;
out_free:
	for (size_t i = 0; i < k; i++)
		free(env[i]);
	free(env);
	return NULL;
}

static void launch_env_free(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
}

/* In the child: async-signal-safe calls only. */
__attribute__((noreturn)) static void launch_child(const char *trainer, char *const argv[],
						   char *const envp[], int out_w, int err_fd,
						   pid_t pgid)
{
	struct sigaction sa = {.sa_handler = SIG_DFL};
	sigset_t ss;
	int fd;

	setpgid(0, pgid);
	/* SIGUSR1 (checkpoint) held: bursar-train lets it in once its handler
	 * is installed, so one sent while the rank starts is not its death */
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	sigprocmask(SIG_SETMASK, &ss, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0 && fd != 0)
		dup2(fd, 0);
	if (dup2(out_w, 1) < 0 || dup2(err_fd, 2) < 0)
		_exit(127);
	close_range(3, ~0U, 0);
	execve(trainer, argv, envp);
	dprintf(2, "bursar-noded: cannot execute trainer '%s': %s\n", trainer, strerror(errno));
	_exit(127);
}

/* The last non-empty line of a rank's stderr log, for a failure message. */
static void rank_last_err(struct job *j, int rank, char *out, size_t outlen)
{
	char path[PATH_MAX + 32], buf[4096];
	struct stat st;
	ssize_t k;
	int fd;

	out[0] = 0;
	snprintf(path, sizeof(path), "%s/rank-%d.log", j->dir, rank);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0) {
		off_t off = st.st_size > (off_t)sizeof(buf) - 1 ? st.st_size - (off_t)sizeof(buf) + 1 : 0;

		k = pread(fd, buf, sizeof(buf) - 1, off);
		if (k > 0) {
			char *e, *s;

			buf[k] = 0;
			e = buf + k;
			while (e > buf && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '))
				*--e = 0;
			s = e;
			while (s > buf && s[-1] != '\n')
				s--;
			/* stays valid JSON text whatever the rank wrote */
			for (k = 0; s[k] && (size_t)k + 1 < outlen && k < 300; k++)
				out[k] = s[k] >= 0x20 && s[k] < 0x7f ? s[k] : '?';
			out[k] = 0;
		}
	}
	close(fd);
}

/* One JSON line from a rank: comm_s for the meter; rank 0 also feeds
 * train.log and the job's progress. Anything else on stdout is ignored. */
static void rank_line(const char *line, size_t len, void *ud)
{
	struct rank *rk = ud;
	struct job *j = rk->job;
	const char *ev;
	json_t *o, *x;

	o = json_loadb(line, len, 0, NULL);
	if (!json_is_object(o)) {
		log_debug("job %s rank %d: ignoring a stdout line that is not a JSON object", j->id,
			  rk->rank);
		json_decref(o);
		return;
	}
	ev = json_string_value(json_object_get(o, "event"));
	x = json_object_get(o, "comm_s");
	if (json_is_number(x) && isfinite(json_number_value(x)) && json_number_value(x) >= 0 &&
	    json_number_value(x) < 1e12) {
		uint64_t c = (uint64_t)llround(json_number_value(x) * 1e6);

		if (c > rk->comm_us)
			rk->comm_us = c;
	}
	if (rk->rank == 0) {
		struct iovec iov[2] = {{(void *)line, len}, {"\n", 1}};

		if (j->train_log_fd >= 0 && writev(j->train_log_fd, iov, 2) < 0)
			log_warn("cannot append to %s/train.log: %m", j->dir);
		/* admitd preempts or pauses a job only once it can checkpoint */
		if (ev && !strcmp(ev, "checkpoint") && (x = json_object_get(o, "step")) &&
		    json_is_integer(x) && json_integer_value(x) > j->prog.ckpt_step)
			j->prog.ckpt_step = (long)json_integer_value(x);
		if (ev && !strcmp(ev, "start") && (x = json_object_get(o, "start_step")) &&
		    json_is_integer(x) && json_integer_value(x) > j->prog.ckpt_step)
			j->prog.ckpt_step = (long)json_integer_value(x);
		if (ev && (!strcmp(ev, "step") || !strcmp(ev, "start"))) {
			struct progress *p = &j->prog;

			if ((x = json_object_get(o, "steps")) && json_is_integer(x))
				p->steps = (long)json_integer_value(x);
			if (!strcmp(ev, "step")) {
				p->have = 1;
				if ((x = json_object_get(o, "step")) && json_is_integer(x))
					p->step = (long)json_integer_value(x);
				if ((x = json_object_get(o, "loss")) && json_is_number(x)) {
					p->loss = json_number_value(x);
					if (!p->have_first) {
						p->first_loss = p->loss;
						p->have_first = 1;
					}
				}
				if ((x = json_object_get(o, "tokens_per_s")) && json_is_number(x))
					p->tokens_per_s = json_number_value(x);
			}
		}
	}
	json_decref(o);
}

/* Ends a rank's stdout: the last partial line, the drop count, the pipe. */
static void rank_close_output(struct rank *rk)
{
	if (rk->out_fd < 0)
		return;
	linebuf_finish(&rk->lb, rank_line, rk);
	if (rk->lb.dropped)
		log_warn("job %s rank %d: dropped %llu stdout lines longer than %d bytes",
			 rk->job->id, rk->rank, (unsigned long long)rk->lb.dropped,
			 NODED_LINE_MAX - 1);
	rk->io = sd_event_source_disable_unref(rk->io);
	close(rk->out_fd);
	rk->out_fd = -1;
}

/* Reads what the rank wrote, at most max_reads chunks. Returns 0 when it may
 * have more, -EAGAIN when the pipe is empty, 1 at EOF (pipe closed). */
static int rank_read(struct rank *rk, int max_reads)
{
	static char buf[NODED_LINE_MAX];

	for (int i = 0; i < max_reads; i++) {
		ssize_t k;

		if (rk->out_fd < 0)
			return 1;
		k = read(rk->out_fd, buf, sizeof(buf));
		if (k > 0) {
			linebuf_feed(&rk->lb, buf, (size_t)k, rank_line, rk);
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			return -EAGAIN;
		if (k < 0)
			log_warn("job %s rank %d: cannot read stdout: %m", rk->job->id, rk->rank);
		rank_close_output(rk);
		return 1;
	}
	return 0;
}

static int on_rank_output(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
	rank_read(ud, 16);
	return 0;
}

/* Handles one rank's exit (in the child callback, or from launch_stop_all);
 * the rank is still a zombie here. */
static void rank_exited(struct noded *n, struct rank *rk, const siginfo_t *si)
{
	struct job *j = rk->job;
	char last[512];

	/* what it printed last (the "done" line) is still in the pipe */
	for (int k = 0; k < 16 && rank_read(rk, 64) == 0; k++)
		;
	rank_close_output(rk); /* a grandchild may hold the pipe open: stop here */
	rk->exit_code = si->si_code;
	rk->exit_status = si->si_status;
	meter_rank_exited(n, rk, rk->mark.cpu_us);
	gpu_release(n, rk); /* its last energy reading is in the exit mark */
	rk->alive = 0;
	j->live--;
	if (si->si_code == CLD_EXITED && si->si_status == 0)
		return;
	if (j->preempt_requested && si->si_code == CLD_EXITED &&
	    si->si_status == NODED_EXIT_CHECKPOINTED) {
		j->checkpointed = 1;
		return;
	}
	if (j->cancel_requested)
		return;
	/* the first failure names the job's error; a crash by a signal the agent
	 * never sends outranks a peer that exited because of it in the same beat */
	if (j->error[0] && !(si->si_code != CLD_EXITED && si->si_status != SIGTERM &&
			     si->si_status != SIGKILL && j->error_is_status))
		return;
	j->error_is_status = si->si_code == CLD_EXITED;
	rank_last_err(j, rk->rank, last, sizeof(last));
	if (si->si_code == CLD_EXITED)
		snprintf(j->error, sizeof(j->error), "rank %d exited with status %d%s%s", rk->rank,
			 si->si_status, last[0] ? ": " : "", last);
	else
		snprintf(j->error, sizeof(j->error), "rank %d was killed by signal %d (%s)%s%s",
			 rk->rank, si->si_status, strsignal(si->si_status), last[0] ? ": " : "",
			 last);
	log_warn("job %s: %s; stopping its other ranks", j->id, j->error);
	launch_kill(n, j);
}

static int on_rank_exit(sd_event_source *s, const siginfo_t *si, void *ud)
{
	struct rank *rk = ud;
	struct job *j = rk->job;

	rank_exited(j->n, rk, si);
	if (j->live == 0)
		launch_finish(j->n, j);
	return 0;
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *ud)
{
	struct job *j = ud;

	if (j->live > 0 && j->pgid > 1) {
		log_warn("job %s: %d ranks still running %llu s after SIGTERM; sending SIGKILL", j->id,
			 j->live, (unsigned long long)(NODED_KILL_GRACE_US / 1000000));
		kill(-j->pgid, SIGKILL);
	}
	return 0;
}

void launch_kill(struct noded *n, struct job *j)
{
	if (j->live == 0 || j->pgid <= 1)
		return;
	kill(-j->pgid, SIGTERM);
	if (j->kill_timer || n->stopping)
		return;
	if (sd_event_add_time_relative(n->svc.ev, &j->kill_timer, CLOCK_MONOTONIC,
				       NODED_KILL_GRACE_US, 0, on_kill_timer, j) < 0)
		kill(-j->pgid, SIGKILL); /* no timer: do not leave it running */
}

void launch_preempt(struct noded *n, struct job *j)
{
	if (j->live == 0 || j->pgid <= 1 || j->preempt_requested)
		return;
	j->preempt_requested = 1;
	kill(-j->pgid, SIGUSR1);
}

void launch_finish(struct noded *n, struct job *j)
{
	int r;

	j->finish_mono_us = util_now_us();
	if (j->cancel_requested)
		j->state = JOB_CANCELLED;
	else if (j->error[0])
		j->state = JOB_FAILED;
	else if (j->checkpointed)
		j->state = JOB_PREEMPTED;
	else
		j->state = JOB_SUCCEEDED;
	j->reports_left = NODED_REPORTS_AFTER_FINISH;
	j->kill_timer = sd_event_source_disable_unref(j->kill_timer);
	if (j->train_log_fd >= 0) {
		fsync(j->train_log_fd);
		close(j->train_log_fd);
		j->train_log_fd = -1;
	}
	r = jobdb_finish(n, j);
	if (r < 0)
		log_err_errno(r, "cannot record the end of job %s in noded.db", j->id);
	if (j->state == JOB_FAILED)
		log_warn("job %s failed: %s", j->id, j->error);
	else
		log_info("job %s %s after %.1f s", j->id, job_state_name(j->state),
			 (double)(j->finish_mono_us - j->launch_mono_us) / 1e6);
}

/* Forks rank i of j. */
static int launch_rank(struct noded *n, struct job *j, int i)
{
	struct rank *rk = &j->ranks[i];
	char path[PATH_MAX + 32], **env;
	char params[PATH_MAX + 16];
	char *argv[] = {(char *)n->trainer, j->bundle_dir, "--out", j->out_dir, "--ckpt",
			j->ckpt_dir, "--device", (char *)noded_device(n),
			j->params ? "--params" : NULL, params, NULL};
	uint64_t cpu, start;
	int pfd[2], errfd, r;
	pid_t pid;

	snprintf(params, sizeof(params), "%s/params.json", j->dir);
	snprintf(path, sizeof(path), "%s/rank-%d.log", j->dir, rk->rank);
	errfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (errfd < 0)
		return -errno;
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		r = -errno;
		goto out_close_err;
	}
	rk->gpu = -1;
	if (n->n_gpus && gpu_take(n, rk) < 0) {
		r = -EBUSY; /* the slot count keeps this from happening */
		goto out_close_pipe;
	}
	env = launch_env(n, j, rk);
	if (!env) {
		gpu_release(n, rk);
		r = -ENOMEM;
		goto out_close_pipe;
	}
	rk->launch_mono_us = util_now_us();
	rk->launch_wall_us = util_wall_us();
	pid = fork();
	if (pid == 0)
		launch_child(n->trainer, argv, env, pfd[1], errfd, j->pgid);
	r = pid < 0 ? -errno : 0;
	launch_env_free(env);
	if (r < 0) {
		gpu_release(n, rk);
		goto out_close_pipe;
	}
	if (!j->pgid)
		j->pgid = pid;
	/* both sides set the group: whichever runs first wins the race with exec */
	setpgid(pid, j->pgid);
	rk->pid = pid;
	rk->started = rk->alive = 1;
	j->live++;
	rk->mark = (struct meter_mark){.mono_us = rk->launch_mono_us};
	rk->energy_uj = rk->share_cpu_us = 0;
	meter_energy_mark(n, rk, &rk->mark);
	/* what a restarted agent needs to meter this rank should we die */
	if (meter_read_cpu(pid, &cpu, &start) < 0)
		start = 0; /* gone already: its exit is metered as usual */
	r = jobdb_insert_rank(n, rk, start);
	if (r < 0)
		log_err_errno(r, "cannot record job %s rank %d in noded.db; a crash of the agent "
			      "would leave its last interval unmetered", j->id, rk->rank);
	close(pfd[1]);
	close(errfd);
	rk->out_fd = pfd[0];
	fcntl(rk->out_fd, F_SETFL, O_NONBLOCK);
	r = sd_event_add_io(n->svc.ev, &rk->io, rk->out_fd, EPOLLIN, on_rank_output, rk);
	if (r < 0)
		return r;
	return sd_event_add_child(n->svc.ev, &rk->child, pid, WEXITED, on_rank_exit, rk);
out_close_pipe:
	close(pfd[0]);
	close(pfd[1]);
out_close_err:
	close(errfd);
	return r;
}

int launch_job(struct noded *n, struct job *j)
{
	char path[PATH_MAX + 32];
	uint64_t cpu, start = 0;
	int r = 0;

	j->launch_mono_us = util_now_us();
	r = util_mkdir_p(j->out_dir);
	if (r < 0) {
		snprintf(j->error, sizeof(j->error), "cannot create %s: %s", j->out_dir, strerror(-r));
		goto out_fail;
	}
	/* the training params admission priced (its overrides of bursar.json
	 * included): the trainer runs those, not the bundle's own */
	if (j->params) {
		snprintf(path, sizeof(path), "%s/params.json", j->dir);
		r = util_write_file_atomic(path, j->params, strlen(j->params));
		if (r < 0) {
			snprintf(j->error, sizeof(j->error), "cannot write %s: %s", path,
				 strerror(-r));
			goto out_fail;
		}
	}
	snprintf(path, sizeof(path), "%s/train.log", j->dir);
	j->train_log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (j->train_log_fd < 0)
		log_warn("cannot open %s: %m; the job runs without a train.log", path);
	for (int i = 0; i < j->n_ranks; i++) {
		r = launch_rank(n, j, i);
		if (r < 0) {
			snprintf(j->error, sizeof(j->error), "cannot start rank %d of job %s: %s",
				 j->ranks[i].rank, j->id, strerror(-r));
			goto out_fail;
		}
		if (i == 0 && meter_read_cpu(j->pgid, &cpu, &start) == 0) {
			r = jobdb_set_pgid(n, j, start);
			if (r < 0)
				log_err_errno(r, "cannot record the process group of job %s", j->id);
		}
	}
	log_info("job %s: started %d of %d ranks (process group %d)", j->id, j->n_ranks, j->size,
		 (int)j->pgid);
	return 0;
out_fail:
	log_err("job %s: %s", j->id, j->error);
	launch_kill(n, j);
	if (j->live == 0)
		launch_finish(n, j);
	return r;
}

/* Outside the loop (after SIGTERM): stop every job, meter each rank's exit
 * while it is a zombie, then reap it. SIGKILL whatever outlives grace_us. */
void launch_stop_all(struct noded *n, uint64_t grace_us)
{
	uint64_t deadline = util_now_us() + grace_us;
	int live = 0, killed = 0;

	n->stopping = 1;
	for (struct job *j = n->jobs; j; j = j->next) {
		if (j->state != JOB_RUNNING || j->live == 0)
			continue;
		if (!j->error[0] && !j->cancel_requested)
			snprintf(j->error, sizeof(j->error),
				 "the node agent stopped while the job was running");
		kill(-j->pgid, SIGTERM);
		live += j->live;
	}
	while (live > 0) {
		live = 0;
		for (struct job *j = n->jobs; j; j = j->next) {
			for (int i = 0; i < j->n_ranks; i++) {
				struct rank *rk = &j->ranks[i];
				siginfo_t si = {0};

				if (!rk->alive)
					continue;
				if (waitid(P_PID, rk->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
				    si.si_pid != rk->pid) {
					live++;
					continue;
				}
				rank_exited(n, rk, &si);
				waitpid(rk->pid, NULL, 0);
			}
			if (j->state == JOB_RUNNING && j->live == 0 && j->n_ranks > 0)
				launch_finish(n, j);
		}
		if (live > 0 && !killed && util_now_us() > deadline) {
			log_warn("%d ranks still running after SIGTERM; sending SIGKILL", live);
			for (struct job *j = n->jobs; j; j = j->next)
				if (j->live > 0 && j->pgid > 1)
					kill(-j->pgid, SIGKILL);
			killed = 1;
		}
		if (live > 0)
			nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
	}
}

/* meter — turns what each rank used into line items in the durable spool.
 *
 * Every second (and once more when a rank exits, while it is still a zombie
 * and /proc/PID/stat still holds its final times) the agent takes a mark:
 * monotonic time, utime+stime, and the rank's cumulative comm_s. The interval
 * since the previous mark is split into compute, comm_wait and idle so the
 * three always sum to exactly the interval's wall time; the records of one
 * interval tile it in time (compute, then comm_wait, then idle). A mark only
 * advances once its records are committed to the spool: a full or failing
 * spool makes the next interval longer, never loses one. Arithmetic is in
 * integer microseconds so the sums are exact. Each rank's mark is also kept in
 * noded.db, written in the records' transaction, so an agent killed mid-job
 * meters the rest of the interval when it restarts (jobdb_recover).
 */
#include "noded.h"
#include "outbox.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* comm = min(Δcomm, Δwall); compute = min(Δcpu, Δwall − comm); idle = rest.
 * CPU beyond one core (several threads per rank) is still compute: a
 * rank-second is a slot, so it is capped at the wall time, not carried. */
void meter_split(uint64_t dwall, uint64_t dcpu, uint64_t dcomm, struct meter_split *out)
{
	uint64_t comm = dcomm < dwall ? dcomm : dwall;
	uint64_t left = dwall - comm;
	uint64_t compute = dcpu < left ? dcpu : left;

	out->comm_us = comm;
	out->compute_us = compute;
	out->idle_us = left - compute;
}

void meter_gap_mark(const struct meter_mark *last, uint64_t now_us, int alive, uint64_t cpu_us,
		    struct meter_mark *out)
{
	*out = *last;
	if (now_us > last->mono_us)
		out->mono_us = now_us;
	if (alive && cpu_us > last->cpu_us)
		out->cpu_us = cpu_us;
}

/* Fields after "(comm)": 3 state ... 14 utime, 15 stime ... 22 starttime.
 * The command name may hold spaces and parentheses, so parse from the last ')'. */
int meter_parse_stat(const char *buf, size_t len, uint64_t *ticks, uint64_t *starttime)
{
	unsigned long long ut = 0, st = 0, start = 0;
	const char *p = NULL, *end = buf + len;
	int field;

	for (const char *q = buf; q < end; q++)
		if (*q == ')')
			p = q;
	if (!p)
		return -EBADMSG;
	p++;
	for (field = 3; field <= 22; field++) {
		char *e;
		unsigned long long v;

		while (p < end && *p == ' ')
			p++;
		if (p >= end)
			return -EBADMSG;
		if (field == 3) { /* state: one letter */
			p++;
			continue;
		}
		errno = 0;
		v = strtoull(p, &e, 10);
		if (e == p || errno)
			return -EBADMSG;
		if (field == 14)
			ut = v;
		else if (field == 15)
			st = v;
		else if (field == 22)
			start = v;
		p = e;
	}
	*ticks = ut + st;
	if (starttime)
		*starttime = start;
	return 0;
}

int meter_read_cpu(pid_t pid, uint64_t *cpu_us, uint64_t *starttime)
{
	static long hz;
	char path[64], buf[1024];
	uint64_t ticks;
	ssize_t k;
	int fd, r;

	if (!hz)
		hz = sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	k = read(fd, buf, sizeof(buf) - 1);
	r = k < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return r;
	buf[k] = 0;
	r = meter_parse_stat(buf, (size_t)k, &ticks, starttime);
	if (r < 0)
		return r;
	*cpu_us = ticks * (1000000 / (uint64_t)hz);
	return 0;
}

static uint64_t rank_wall_at(const struct rank *rk, uint64_t mono_us)
{
	return rk->launch_wall_us + (mono_us - rk->launch_mono_us);
}

int meter_emit(struct noded *n, struct rank *rk, const struct meter_mark *m)
{
	static const char *kinds[3] = {"compute", "comm_wait", "idle"};
	struct meter_split sp;
	uint64_t q[3], start;
	int r;

	if (m->mono_us <= rk->mark.mono_us)
		return 0;
	meter_split(m->mono_us - rk->mark.mono_us,
		    m->cpu_us > rk->mark.cpu_us ? m->cpu_us - rk->mark.cpu_us : 0,
		    m->comm_us > rk->mark.comm_us ? m->comm_us - rk->mark.comm_us : 0, &sp);
	q[0] = sp.compute_us;
	q[1] = sp.comm_us;
	q[2] = sp.idle_us;
	start = rank_wall_at(rk, rk->mark.mono_us);
	r = db_begin(n->db);
	if (r < 0)
		return r;
	for (int i = 0; i < 3; i++) {
		if (!q[i])
			continue;
		r = spool_put_record(n, rk, kinds[i], start, q[i]);
		if (r < 0)
			goto out_rollback;
		start += q[i];
	}
	/* the mark advances with its records, so a crash can never meter twice */
	r = jobdb_put_mark(n, rk, m, m == &rk->exit_mark);
	if (r < 0)
		goto out_rollback;
	r = db_commit(n->db);
	if (r < 0)
		goto out_rollback;
	rk->mark = *m;
	return 0;
out_rollback:
	db_rollback(n->db);
	if (r == -ENOSPC && !n->spool_full) {
		n->spool_full = 1;
		log_err("meter spool is full (%lld records, limit %lld): ledgerd at %s is not taking "
			"records; metering continues in longer intervals and new launches are refused",
			(long long)spool_pending(n), (long long)n->spool_max, n->ledgerd);
	} else if (r != -ENOSPC) {
		log_err_errno(r, "cannot spool meter records of job %s rank %d", rk->job->id, rk->rank);
	}
	return r;
}

void meter_rank_exited(struct noded *n, struct rank *rk, uint64_t fallback_cpu_us)
{
	uint64_t cpu;

	if (meter_read_cpu(rk->pid, &cpu, NULL) < 0) {
		log_warn("cannot read the final CPU time of job %s rank %d (pid %d); "
			 "metering its last interval from the last sample", rk->job->id, rk->rank,
			 (int)rk->pid);
		cpu = fallback_cpu_us;
	}
	rk->exit_mark.mono_us = util_now_us();
	rk->exit_mark.cpu_us = cpu;
	rk->exit_mark.comm_us = rk->comm_us;
	rk->final_pending = 1;
	if (meter_emit(n, rk, &rk->exit_mark) == 0)
		rk->final_pending = 0;
	else if (jobdb_put_exit(n, rk) < 0) /* a restart then meters up to the exit */
		log_err("cannot record the exit of job %s rank %d in noded.db; a crash of the "
			"agent before its last interval is spooled would lose it", rk->job->id,
			rk->rank);
}

/* At shutdown nothing may be lost: the spool's bound exists to refuse new
 * launches, so the intervals held back for room are spooled past it. */
void meter_drain(struct noded *n)
{
	outbox_set_limit(n->spool, INT64_MAX);
	for (struct job *j = n->jobs; j; j = j->next)
		for (int i = 0; i < j->n_ranks; i++) {
			struct rank *rk = &j->ranks[i];

			if (rk->final_pending && meter_emit(n, rk, &rk->exit_mark) == 0)
				rk->final_pending = 0;
		}
}

void meter_tick(void *userdata)
{
	struct noded *n = userdata;

	for (struct job *j = n->jobs; j; j = j->next) {
		for (int i = 0; i < j->n_ranks; i++) {
			struct rank *rk = &j->ranks[i];
			struct meter_mark m;

			if (rk->final_pending) {
				if (meter_emit(n, rk, &rk->exit_mark) == 0)
					rk->final_pending = 0;
				continue;
			}
			if (!rk->alive)
				continue;
			if (meter_read_cpu(rk->pid, &m.cpu_us, NULL) < 0)
				continue; /* exiting; the child callback takes the last mark */
			m.mono_us = util_now_us();
			m.comm_us = rk->comm_us;
			meter_emit(n, rk, &m);
		}
	}
}

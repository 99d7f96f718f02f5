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
 *
 * Energy rides on the same marks as a cumulative counter per rank: a GPU
 * rank's is its GPU's NVML total energy; a CPU rank's is its accumulated
 * share of the node's RAPL package energy, in proportion to its CPU time
 * against the node's busy CPU time in each tick. An interval's energy is
 * split over its records in proportion to their durations, in whole
 * microjoules that sum to the interval's. Where the counter is unknown (no
 * RAPL, an unreadable GPU, the gap of a crash on a CPU node) the records carry
 * no energy_kwh: unknown, never zero.
 */
#include "noded.h"
#include "outbox.h"
#include "db.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
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

/* Cumulative sums through 128-bit products: part i is
 * floor(e·Q_i/W) − floor(e·Q_{i−1}/W), so the parts telescope to e exactly. */
void meter_split_energy(uint64_t e, const uint64_t *q, int nq, uint64_t *out)
{
	unsigned __int128 w = 0, cum = 0;
	uint64_t prev = 0;

	for (int i = 0; i < nq; i++)
		w += q[i];
	for (int i = 0; i < nq; i++) {
		uint64_t upto;

		cum += q[i];
		upto = w ? (uint64_t)((unsigned __int128)e * cum / w) : (i == nq - 1 ? e : 0);
		out[i] = upto - prev;
		prev = upto;
	}
}

/* RAPL's energy_uj counts up to max_energy_range_uj and starts again at 0. */
uint64_t meter_counter_delta(uint64_t prev, uint64_t now, uint64_t max_range)
{
	if (now >= prev)
		return now - prev;
	if (max_range == UINT64_MAX)
		return 0; /* the range is unknown: this interval's energy is not counted */
	if (max_range >= prev)
		return max_range - prev + now;
	return now; /* a range smaller than the old reading: count from the wrap */
}

int meter_parse_proc_stat(const char *buf, size_t len, uint64_t *busy_ticks)
{
	unsigned long long v[8] = {0};
	char line[512];
	size_t k = 0;

	while (k < len && k + 1 < sizeof(line) && buf[k] != '\n') {
		line[k] = buf[k];
		k++;
	}
	line[k] = 0;
	/* user nice system idle iowait irq softirq steal (guest is inside user) */
	if (strncmp(line, "cpu ", 4) ||
	    sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]) < 4)
		return -EBADMSG;
	*busy_ticks = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	return 0;
}

uint64_t meter_cpu_share(uint64_t de, uint64_t dcpu, uint64_t dbusy)
{
	if (!dbusy || !dcpu)
		return 0;
	if (dcpu >= dbusy)
		return de;
	return (uint64_t)((unsigned __int128)de * dcpu / dbusy);
}

static int read_u64_file(const char *path, uint64_t *v)
{
	char buf[64];
	ssize_t k;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (k <= 0)
		return k < 0 ? -errno : -ENODATA;
	buf[k] = 0;
	*v = strtoull(buf, NULL, 10);
	return 0;
}

/* The node's busy CPU time in microseconds. */
static int read_busy_us(uint64_t *us)
{
	static long hz;
	char buf[1024];
	uint64_t ticks;
	ssize_t k;
	int fd, r;

	if (!hz)
		hz = sysconf(_SC_CLK_TCK);
	fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (k <= 0)
		return -EIO;
	buf[k] = 0;
	r = meter_parse_proc_stat(buf, (size_t)k, &ticks);
	if (r < 0)
		return r;
	*us = ticks * (1000000 / (uint64_t)hz);
	return 0;
}

/* The package zones (intel-rapl:N, not their subzones intel-rapl:N:M). */
static int rapl_read(struct node_energy *e, uint64_t *uj, int *n_zones, char *why, size_t len)
{
	glob_t g;
	int n = 0, r = 0;

	if (glob("/sys/class/powercap/intel-rapl:*", 0, NULL, &g) != 0)
		return snprintf(why, len, "no RAPL package under /sys/class/powercap"), -ENOENT;
	for (size_t i = 0; i < g.gl_pathc && n < (int)ARRAY_SIZE(e->uj); i++) {
		char path[PATH_MAX];
		const char *base = strrchr(g.gl_pathv[i], '/') + 1;

		if (strchr(strchr(base, ':') + 1, ':'))
			continue;
		snprintf(path, sizeof(path), "%s/energy_uj", g.gl_pathv[i]);
		r = read_u64_file(path, &uj[n]);
		if (r < 0) {
			snprintf(why, len, "cannot read %s: %s", path, strerror(-r));
			break;
		}
		snprintf(path, sizeof(path), "%s/max_energy_range_uj", g.gl_pathv[i]);
		if (read_u64_file(path, &e->max_uj[n]) < 0)
			e->max_uj[n] = UINT64_MAX;
		n++;
	}
	globfree(&g);
	if (r < 0)
		return r;
	if (n == 0)
		return snprintf(why, len, "no RAPL package under /sys/class/powercap"), -ENOENT;
	*n_zones = n;
	return 0;
}

double meter_rapl_limit_w(void)
{
	double w = 0;
	glob_t g;

	if (glob("/sys/class/powercap/intel-rapl:*", 0, NULL, &g) != 0)
		return 0;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *base = strrchr(g.gl_pathv[i], '/') + 1;
		char path[PATH_MAX];
		uint64_t uw = 0;

		if (strchr(strchr(base, ':') + 1, ':'))
			continue; /* a subzone */
		/* the long-term limit the package is held to (its TDP by default) */
		snprintf(path, sizeof(path), "%s/constraint_0_power_limit_uw", g.gl_pathv[i]);
		if (read_u64_file(path, &uw) == 0 && uw < 100000000000ull)
			w += uw / 1e6;
	}
	globfree(&g);
	return w;
}

void meter_energy_setup(struct noded *n)
{
	struct node_energy *e = &n->energy;
	char why[PATH_MAX + 64];

	if (n->n_gpus)
		return;
	if (rapl_read(e, e->uj, &e->n_zones, why, sizeof(why)) < 0) {
		log_info("CPU energy is not metered: %s; meter records carry no energy_kwh", why);
		return;
	}
	if (read_busy_us(&e->busy_us) < 0) {
		log_info("CPU energy is not metered: cannot read /proc/stat; meter records carry no "
			 "energy_kwh");
		return;
	}
	e->ok = 1;
	log_info("metering CPU energy from %d RAPL packages", e->n_zones);
}

/* Once per tick on a CPU node: the node's energy and busy time since the last
 * tick, handed to each live rank in proportion to its CPU time. */
static void meter_energy_tick(struct noded *n)
{
	struct node_energy *e = &n->energy;
	uint64_t uj[ARRAY_SIZE(e->uj)], busy, de = 0, dbusy;
	char why[PATH_MAX + 64] = "cannot read /proc/stat";
	int nz = 0;

	if (!e->ok || n->n_gpus)
		return;
	if (rapl_read(e, uj, &nz, why, sizeof(why)) < 0 || nz != e->n_zones ||
	    read_busy_us(&busy) < 0) {
		log_warn("CPU energy is no longer metered: %s", nz != e->n_zones && nz ? "the RAPL "
			 "packages changed" : why);
		e->ok = 0;
		return;
	}
	for (int i = 0; i < nz; i++)
		de += meter_counter_delta(e->uj[i], uj[i], e->max_uj[i]);
	dbusy = busy > e->busy_us ? busy - e->busy_us : 0;
	memcpy(e->uj, uj, sizeof(uj));
	e->busy_us = busy;
	for (struct job *j = n->jobs; j; j = j->next)
		for (int i = 0; i < j->n_ranks; i++) {
			struct rank *rk = &j->ranks[i];
			uint64_t cpu;

			if (!rk->alive || meter_read_cpu(rk->pid, &cpu, NULL) < 0)
				continue;
			rk->energy_uj += meter_cpu_share(de, cpu > rk->share_cpu_us ?
							 cpu - rk->share_cpu_us : 0, dbusy);
			rk->share_cpu_us = cpu;
		}
}

void meter_energy_mark(struct noded *n, struct rank *rk, struct meter_mark *m)
{
	m->have_energy = 0;
	m->energy_uj = 0;
	if (rk->gpu >= 0) {
		if (gpu_energy_uj(n, rk->gpu, &m->energy_uj) == 0)
			m->have_energy = 1;
	} else if (!n->n_gpus && n->energy.ok) {
		m->energy_uj = rk->energy_uj;
		m->have_energy = 1;
	}
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
	uint64_t q[3], start, eq[3];
	int64_t e = -1;
	int r;

	if (m->mono_us <= rk->mark.mono_us)
		return 0;
	meter_split(m->mono_us - rk->mark.mono_us,
		    m->cpu_us > rk->mark.cpu_us ? m->cpu_us - rk->mark.cpu_us : 0,
		    m->comm_us > rk->mark.comm_us ? m->comm_us - rk->mark.comm_us : 0, &sp);
	q[0] = sp.compute_us;
	q[1] = sp.comm_us;
	q[2] = sp.idle_us;
	if (rk->mark.have_energy && m->have_energy && m->energy_uj >= rk->mark.energy_uj) {
		uint64_t de = m->energy_uj - rk->mark.energy_uj;

		/* ledgerd takes at most NODED_MAX_KWH per record: no counter of one
		 * rank gains that in one interval; a wild reading is dropped */
		if ((double)de / 3.6e12 > NODED_MAX_KWH) {
			log_warn("job %s rank %d: energy counter jumped by %.0f kWh in %.1f s; not "
				 "metering that energy", rk->job->id, rk->rank, (double)de / 3.6e12,
				 (double)(m->mono_us - rk->mark.mono_us) / 1e6);
		} else {
			e = (int64_t)de;
			meter_split_energy(de, q, 3, eq);
		}
	}
	start = rank_wall_at(rk, rk->mark.mono_us);
	r = db_begin(n->db);
	if (r < 0)
		return r;
	for (int i = 0; i < 3; i++) {
		if (!q[i])
			continue;
		r = spool_put_record(n, rk, kinds[i], start, q[i], e < 0 ? -1 : (int64_t)eq[i]);
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
	meter_energy_mark(n, rk, &rk->exit_mark);
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

	meter_energy_tick(n);
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
			meter_energy_mark(n, rk, &m);
			meter_emit(n, rk, &m);
		}
	}
}

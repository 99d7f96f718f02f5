/* heartbeat — the node's report to admitd every 0.5 s, and what comes back.
 *
 * The report carries the node's capacity (slots, class, device, GPUs) and
 * the state of its jobs; the
 * reply carries launches, kills and preemptions (checkpoint, exit, report
 * "preempted"; admitd relaunches the same job id later, which is then taken
 * although the id is known). A launch is repeated by admitd until the
 * node reports the job, so a job is recorded in noded.db before any rank is
 * forked and a launch for a known job is ignored. A finished job is reported
 * in NODED_REPORTS_AFTER_FINISH successful heartbeats, then dropped from
 * memory (its row stays). admitd being away is logged once, not each beat.
 */
#include "noded.h"
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_TIMEOUT_MS 2000

static double job_elapsed_s(const struct job *j)
{
	if (!j->launch_mono_us)
		return j->recovered_elapsed_s;
	if (j->state != JOB_RUNNING && j->finish_mono_us)
		return (double)(j->finish_mono_us - j->launch_mono_us) / 1e6;
	return (double)(util_now_us() - j->launch_mono_us) / 1e6;
}

json_t *job_progress_json(const struct job *j)
{
	const struct progress *p = &j->prog;
	json_t *o = json_pack("{s:I, s:I, s:f, s:f}", "step", (json_int_t)p->step, "steps",
			      (json_int_t)p->steps, "tokens_per_s", p->tokens_per_s, "elapsed_s",
			      job_elapsed_s(j));

	if (!o)
		return NULL;
	json_object_set_new(o, "loss", p->have ? json_real(p->loss) : json_null());
	json_object_set_new(o, "first_loss", p->have_first ? json_real(p->first_loss) : json_null());
	json_object_set_new(o, "ckpt_step", json_integer((json_int_t)p->ckpt_step));
	return o;
}

int job_progress_load(struct job *j, const char *text)
{
	struct progress *p = &j->prog;
	json_t *o = text && text[0] ? json_loads(text, 0, NULL) : NULL, *x;

	if (!json_is_object(o)) {
		json_decref(o);
		return -EINVAL;
	}
	p->step = (long)json_integer_value(json_object_get(o, "step"));
	p->steps = (long)json_integer_value(json_object_get(o, "steps"));
	p->tokens_per_s = json_number_value(json_object_get(o, "tokens_per_s"));
	p->ckpt_step = (long)json_integer_value(json_object_get(o, "ckpt_step"));
	j->recovered_elapsed_s = json_number_value(json_object_get(o, "elapsed_s"));
	if (json_is_number(x = json_object_get(o, "loss"))) {
		p->loss = json_number_value(x);
		p->have = 1;
	}
	if (json_is_number(x = json_object_get(o, "first_loss"))) {
		p->first_loss = json_number_value(x);
		p->have_first = 1;
	}
	json_decref(o);
	return 0;
}

static json_t *heartbeat_report(struct noded *n)
{
	json_t *jobs = json_array(), *body;

	for (struct job *j = n->jobs; j; j = j->next) {
		json_t *o = json_pack("{s:s, s:s, s:o*}", "job", j->id, "state",
				      job_state_name(j->state), "progress", job_progress_json(j));

		if (!o)
			continue;
		if (j->error[0])
			json_object_set_new(o, "error", json_string(j->error));
		if (j->state == JOB_SUCCEEDED)
			json_object_set_new(o, "output_dir", json_string(j->out_dir));
		json_array_append_new(jobs, o);
	}
	body = json_pack("{s:s, s:s, s:i, s:f, s:I, s:o}", "node", n->node_id, "addr", n->addr,
			 "slots", n->slots, "flops_per_slot", n->flops, "spool_pending",
			 (json_int_t)spool_pending(n), "jobs", jobs);
	/* the measured profile; absent parts stay unknown to admitd */
	if (body && n->mem_bytes > 0)
		json_object_set_new(body, "mem_bytes", json_real(n->mem_bytes));
	if (body && n->alpha_s > 0 && n->beta_bps > 0)
		json_object_set_new(body, "allreduce", json_pack("{s:f, s:f}", "alpha_s", n->alpha_s,
								 "beta_bps", n->beta_bps));
	/* what admitd prices and places by: the class, the device, the GPUs */
	if (body) {
		json_object_set_new(body, "class", json_string(n->node_class));
		json_object_set_new(body, "device", json_string(noded_device(n)));
		if (n->n_gpus)
			json_object_set_new(body, "gpus", gpu_json(n));
		if (n->watts_per_slot > 0 && n->watts_per_slot <= 1e5)
			json_object_set_new(body, "watts_per_slot", json_real(n->watts_per_slot));
	}
	if (body && n->probed_us)
		json_object_set_new(body, "probed_us", json_integer((json_int_t)n->probed_us));
	return body;
}

/* Records a launch the node will not run as a failed job, reported to admitd. */
static void heartbeat_refuse(struct noded *n, const char *id, const char *tenant,
			     const char *user, const char *why)
{
	struct job *j;
	int r;

	log_warn("refusing to launch job %s: %s", id, why);
	r = jobdb_insert_refused(n, id, tenant, user, why);
	if (r < 0) {
		log_err_errno(r, "cannot record the refused launch of job %s", id);
		return;
	}
	j = job_new(n, id, tenant, user);
	if (!j)
		return;
	j->state = JOB_FAILED;
	snprintf(j->error, sizeof(j->error), "%s", why);
}

static int slots_in_use(struct noded *n)
{
	int used = 0;

	for (struct job *j = n->jobs; j; j = j->next)
		if (j->state == JOB_RUNNING)
			used += j->n_ranks;
	return used;
}

/* Checks a launch's fields; fills err with the first problem. */
static int launch_check(json_t *l, int *ranks, int *n_ranks, char *err, size_t errlen)
{
	const char *bd = json_string_value(json_object_get(l, "bundle_dir"));
	const char *rdv = json_string_value(json_object_get(l, "rdv"));
	const char *key = json_string_value(json_object_get(l, "rdv_key"));
	json_t *size = json_object_get(l, "size"), *rs = json_object_get(l, "ranks"), *x;
	json_int_t sz;
	size_t i;

	if (!bd || bd[0] != '/' || strlen(bd) >= PATH_MAX)
		return snprintf(err, errlen, "bundle_dir must be an absolute path"), -EINVAL;
	if (!rdv || !rdv[0] || strlen(rdv) >= PATH_MAX)
		return snprintf(err, errlen, "rdv must name admitd's address"), -EINVAL;
	if (!key || !key[0] || strlen(key) >= NODED_ID_MAX)
		return snprintf(err, errlen, "rdv_key must be 1..%d characters", NODED_ID_MAX - 1),
		       -EINVAL;
	sz = json_integer_value(size);
	if (!json_is_integer(size) || sz < 1 || sz > NODED_MAX_SIZE)
		return snprintf(err, errlen, "size must be 1..%d", NODED_MAX_SIZE), -EINVAL;
	if (!json_is_array(rs) || json_array_size(rs) < 1 ||
	    json_array_size(rs) > NODED_MAX_RANKS)
		return snprintf(err, errlen, "ranks must list 1..%d ranks", NODED_MAX_RANKS),
		       -EINVAL;
	json_array_foreach(rs, i, x) {
		json_int_t r = json_integer_value(x);

		if (!json_is_integer(x) || r < 0 || r >= sz)
			return snprintf(err, errlen, "rank %lld is outside 0..%lld",
					(long long)r, (long long)sz - 1), -EINVAL;
		for (size_t k = 0; k < i; k++)
			if (ranks[k] == r)
				return snprintf(err, errlen, "rank %lld is listed twice",
						(long long)r), -EINVAL;
		ranks[i] = (int)r;
	}
	*n_ranks = (int)json_array_size(rs);
	return 0;
}

/* Whether the node takes a launch now; err says why not (reported to admitd). */
static int launch_admissible(struct noded *n, json_t *l, int *ranks, int *n_ranks, char *err,
			     size_t errlen)
{
	char why[512];
	int64_t pending;
	int used;

	if (launch_check(l, ranks, n_ranks, why, sizeof(why)) < 0)
		return snprintf(err, errlen, "invalid launch from admitd: %s", why), -EINVAL;
	pending = spool_pending(n);
	if (n->spool_full || pending >= n->spool_max)
		return snprintf(err, errlen, "spool full: %lld meter records wait for ledgerd at %s "
				"(limit %lld)", (long long)pending, n->ledgerd,
				(long long)n->spool_max), -ENOSPC;
	used = slots_in_use(n);
	if (used + *n_ranks > n->slots)
		return snprintf(err, errlen, "node %s has %d free slots, the launch needs %d",
				n->node_id, n->slots - used, *n_ranks), -EBUSY;
	if (n->n_jobs >= NODED_MAX_JOBS)
		return snprintf(err, errlen, "node %s holds %d jobs (limit %d)", n->node_id,
				n->n_jobs, NODED_MAX_JOBS), -EBUSY;
	return 0;
}

static void heartbeat_launch(struct noded *n, json_t *l)
{
	const char *id = json_string_value(json_object_get(l, "job"));
	const char *tenant = json_string_value(json_object_get(l, "tenant"));
	const char *user = json_string_value(json_object_get(l, "user"));
	int ranks[NODED_MAX_RANKS], n_ranks = 0, r;
	char err[600], *rj;
	struct job *j;

	if (!id || !util_valid_name(id, NODED_ID_MAX - 1)) {
		log_err("ignoring a launch from admitd with an invalid job id '%.64s'", id ? id : "");
		return;
	}
	/* known (or the database cannot say): never launch twice; a preempted
	 * job is relaunched once its last report has gone */
	if (job_find(n, id) || (jobdb_known(n, id) != 0 && jobdb_preempted(n, id) != 1))
		return;
	tenant = tenant && strlen(tenant) < NODED_ID_MAX ? tenant : "";
	user = user && strlen(user) < NODED_ID_MAX ? user : "";
	if (launch_admissible(n, l, ranks, &n_ranks, err, sizeof(err)) < 0) {
		heartbeat_refuse(n, id, tenant, user, err);
		return;
	}
	j = job_new(n, id, tenant, user);
	if (!j)
		return;
	j->ranks = calloc((size_t)n_ranks, sizeof(*j->ranks));
	if (!j->ranks)
		goto out_free;
	j->n_ranks = n_ranks;
	for (int i = 0; i < n_ranks; i++) {
		j->ranks[i].job = j;
		j->ranks[i].rank = ranks[i];
		j->ranks[i].out_fd = -1;
		j->ranks[i].gpu = -1;
		linebuf_init(&j->ranks[i].lb);
	}
	j->size = (int)json_integer_value(json_object_get(l, "size"));
	if (json_is_object(json_object_get(l, "params")) &&
	    !(j->params = json_dumps(json_object_get(l, "params"), JSON_COMPACT | JSON_SORT_KEYS)))
		goto out_free;
	snprintf(j->bundle_dir, sizeof(j->bundle_dir), "%s",
		 json_string_value(json_object_get(l, "bundle_dir")));
	snprintf(j->rdv, sizeof(j->rdv), "%s", json_string_value(json_object_get(l, "rdv")));
	snprintf(j->rdv_key, sizeof(j->rdv_key), "%s",
		 json_string_value(json_object_get(l, "rdv_key")));
	if (snprintf(j->dir, sizeof(j->dir), "%s/jobs/%s", n->state_dir, id) >= (int)sizeof(j->dir) ||
	    snprintf(j->out_dir, sizeof(j->out_dir), "%s/out", j->dir) >= (int)sizeof(j->out_dir) ||
	    snprintf(j->ckpt_dir, sizeof(j->ckpt_dir), "%s/ckpt", j->dir) >=
		    (int)sizeof(j->ckpt_dir)) {
		log_err("job %s: state directory path too long", id);
		goto out_free;
	}
	rj = json_dumps(json_object_get(l, "ranks"), JSON_COMPACT);
	r = rj ? jobdb_insert(n, j, rj) : -ENOMEM;
	free(rj);
	if (r < 0) {
		/* not recorded, so not launched: admitd repeats the launch */
		log_err_errno(r, "cannot record job %s in noded.db; not launching it yet", id);
		goto out_free;
	}
	launch_job(n, j);
	return;
out_free:
	job_unlink(n, j);
	job_free(j);
}

/* After a successful heartbeat: count down finished jobs' reports. */
static void heartbeat_reported(struct noded *n)
{
	struct job *j = n->jobs, *next;

	for (; j; j = next) {
		int pending = 0;

		next = j->next;
		if (j->state == JOB_RUNNING)
			continue;
		if (j->reports_left > 0) {
			j->reports_left--;
			jobdb_set_reports_left(n, j);
		}
		for (int i = 0; i < j->n_ranks; i++)
			pending |= j->ranks[i].final_pending;
		if (j->reports_left == 0 && !pending) {
			job_unlink(n, j);
			job_free(j);
		}
	}
}

static void heartbeat_apply(struct noded *n, json_t *resp)
{
	json_t *x;
	size_t i;

	json_array_foreach(json_object_get(resp, "kill"), i, x) {
		struct job *j = json_is_string(x) ? job_find(n, json_string_value(x)) : NULL;

		if (!j || j->state != JOB_RUNNING || j->cancel_requested)
			continue;
		log_info("job %s: admitd asked to stop it; stopping %d ranks", j->id, j->live);
		j->cancel_requested = 1;
		launch_kill(n, j);
		if (j->live == 0)
			launch_finish(n, j);
	}
	json_array_foreach(json_object_get(resp, "preempt"), i, x) {
		struct job *j = json_is_string(x) ? job_find(n, json_string_value(x)) : NULL;

		if (!j || j->state != JOB_RUNNING || j->cancel_requested || j->preempt_requested)
			continue;
		log_info("job %s: admitd asks to preempt it; its %d ranks checkpoint and exit",
			 j->id, j->live);
		launch_preempt(n, j);
	}
	json_array_foreach(json_object_get(resp, "launch"), i, x)
		if (json_is_object(x))
			heartbeat_launch(n, x);
	/* an operator asked for a re-probe: measured while no rank runs (the
	 * probes would compete with the ranks), reported in the next heartbeat */
	if (json_is_true(json_object_get(resp, "reprobe")) && !n->reprobe_asked) {
		log_info("admitd asks for a re-probe; it runs once no job is running");
		n->reprobe_asked = 1;
	}
	if (n->reprobe_asked && slots_in_use(n) == 0) {
		noded_profile(n, 1);
		n->reprobe_asked = 0;
	}
}

void heartbeat_tick(void *userdata)
{
	struct noded *n = userdata;
	json_t *body, *resp = NULL;
	long status = 0;
	int r;

	if (n->stopping)
		return;
	body = heartbeat_report(n);
	if (!body)
		return;
	r = hclient_json(n->admitd, "POST", "/v1/nodes/heartbeat", NULL, body,
			 HEARTBEAT_TIMEOUT_MS, &status, &resp);
	json_decref(body);
	if (r < 0) {
		if (!n->admitd_down)
			log_warn("cannot reach admitd at %s: %s; retrying every 0.5 s", n->admitd,
				 hclient_strerror(r));
		n->admitd_down = 1;
		return;
	}
	if (status != 200) {
		if (status != n->admitd_last_status) {
			const char *e = json_string_value(json_object_get(resp, "error"));

			log_warn("admitd at %s answered the heartbeat with HTTP %ld: %s", n->admitd,
				 status, e ? e : "(no error message)");
		}
		n->admitd_last_status = status;
		json_decref(resp);
		return;
	}
	if (n->admitd_down || (n->admitd_last_status && n->admitd_last_status != 200))
		log_info("admitd at %s takes heartbeats again", n->admitd);
	n->admitd_down = 0;
	n->admitd_last_status = 200;
	heartbeat_reported(n);
	if (json_is_object(resp))
		heartbeat_apply(n, resp);
	json_decref(resp);
}

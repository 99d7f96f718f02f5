/* pricing — what a job costs and how many ranks it gets.
 *
 * Pure functions over a model, its training parameters and a summary of the
 * cluster: FLOPs per token × tokens ÷ (ranks × FLOP/s per slot × efficiency)
 * plus ring-allreduce time of the fp32 gradients (α-β model, measured by the
 * nodes' probes when they reported it) plus a fixed startup, priced at the
 * ledger's rate per rank-second. The efficiency is learned per node from
 * metered bills (learn.c); the observation and the moving average are here.
 * Never does I/O, never logs, so the unit tests exercise exactly what the
 * daemon runs.
 */
#include "admitd.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PRICE_ALPHA_S 50e-6   /* latency per ring step */
#define PRICE_BETA_BPS 2e9    /* link bandwidth, bytes/s */
#define PRICE_STARTUP_S 2.0   /* process start, rendezvous, data load */

#define PRICE_MIN_LEARN 0.25 /* weight of a new observation once history is long */

/* Ring allreduce of bytes over r ranks: 2(r-1)·α + 2(r-1)/r · bytes/β, with
 * the probed α and β when the nodes measured them. */
static double allreduce_s(const struct price_cluster *c, double bytes, int r)
{
	double alpha = c->alpha_s > 0 ? c->alpha_s : PRICE_ALPHA_S;
	double beta = c->beta_bps > 0 ? c->beta_bps : PRICE_BETA_BPS;

	if (r <= 1)
		return 0;
	return 2.0 * (r - 1) * alpha + 2.0 * (r - 1) / r * bytes / beta;
}

double pricing_rank_mem(const struct model_config *m, const struct train_params *p)
{
	double n = (double)modelcfg_n_params(m);
	int r = p->ranks > 0 ? p->ranks : 1;
	double seqs = (double)p->batch / r;

	/* weights, grads, Adam m and v in fp32; activations ~ 16 floats per
	 * token per layer per channel plus the logits */
	return 16.0 * n + 4.0 * seqs * p->seq_len *
	       (16.0 * m->n_layer * m->n_embd + 2.0 * m->vocab_size);
}

int pricing_observed_efficiency(const struct price_option *pred, double eff_used,
				double actual_s, double *out)
{
	double compute = actual_s - pred->comm_s - PRICE_STARTUP_S, e;

	/* less than a tenth of the predicted compute left: overheads dominate */
	if (!(pred->compute_s > 0) || !(eff_used > 0) || !(compute > 0.1 * pred->compute_s) ||
	    !isfinite(actual_s))
		return -ERANGE;
	e = eff_used * pred->compute_s / compute;
	*out = e < PRICING_EFF_MIN ? PRICING_EFF_MIN : e > PRICING_EFF_MAX ? PRICING_EFF_MAX : e;
	return 0;
}

double pricing_learn(double eff, int n, double obs)
{
	/* 1/2, 1/3, 1/4 for the first jobs, then an EWMA with weight 1/4:
	 * the first bill moves a guessed default half way, later ones track drift */
	double w = 1.0 / (n + 2);

	if (w < PRICE_MIN_LEARN)
		w = PRICE_MIN_LEARN;
	return (1 - w) * eff + w * obs;
}

void pricing_option(const struct model_config *m, const struct train_params *p,
		    const struct price_cluster *c, int r, struct price_option *out)
{
	double fpt = modelcfg_flops_per_token(m, p->seq_len);
	double tokens = (double)p->steps * p->batch * p->seq_len;
	double bytes = 4.0 * (double)modelcfg_n_params(m);

	out->ranks = r;
	out->compute_s = fpt * tokens / (r * c->flops_per_slot * c->efficiency);
	out->comm_s = (double)p->steps * allreduce_s(c, bytes, r);
	out->seconds = out->compute_s + out->comm_s + PRICE_STARTUP_S;
	/* a held slot draws its busy power for the whole run (conservative) */
	out->energy_kwh = out->seconds * r * (c->watts > 0 ? c->watts : 0) / 3.6e6;
	out->amount = out->seconds * r * c->rate + out->energy_kwh * c->kwh_price;
}

void pricing_fmt_duration(double s, char *buf, size_t len)
{
	if (s < 60)
		snprintf(buf, len, "%.1f s", s);
	else if (s < 3600)
		snprintf(buf, len, "%d m %02d s", (int)(s / 60), (int)fmod(s, 60));
	else if (s < 86400)
		snprintf(buf, len, "%d h %02d m", (int)(s / 3600), (int)fmod(s / 60, 60));
	else
		snprintf(buf, len, "%.0f d %02d h", floor(s / 86400), (int)fmod(s / 3600, 24));
}

void pricing_fmt_money(double amount, char *buf, size_t len)
{
	snprintf(buf, len, amount >= 1 ? "$%.2f" : "$%.4f", amount);
}

/* "2 ranks: 1 m 10 s, $0.0300", "2 ranks on h100: …" */
static void fmt_option(const struct price_option *o, const struct price_cluster *c, char *buf,
		       size_t len)
{
	char d[32], m[32];

	pricing_fmt_duration(o->seconds, d, sizeof(d));
	pricing_fmt_money(o->amount, m, sizeof(m));
	snprintf(buf, len, "%d rank%s%s%s: %s, %s", o->ranks, o->ranks == 1 ? "" : "s",
		 c->show_cls ? " on " : "", c->show_cls ? c->cls : "", d, m);
}

/* Fills out->explain: the choice, why, and one alternative for comparison. */
static void explain(struct price_result *out, const char *why, const struct price_option *alt,
		    const struct price_cluster *c)
{
	char ch[96 + BUNDLE_MAX_CLASS], al[96] = "";
	char *e = out->explain;
	size_t n = sizeof(out->explain);
	int k;

	fmt_option(&out->chosen, c, ch, sizeof(ch));
	k = snprintf(e, n, "%s (%s)", ch, why);
	if (alt && alt->ranks != out->chosen.ranks) {
		char d[32], m[32];

		pricing_fmt_duration(alt->seconds, d, sizeof(d));
		pricing_fmt_money(alt->amount, m, sizeof(m));
		snprintf(al, sizeof(al), "; %d rank%s would be %s, %s", alt->ranks,
			 alt->ranks == 1 ? "" : "s", d, m);
		k += snprintf(e + k, n - k, "%s", al);
	}
	if ((size_t)k < n && c->eff_jobs > 0)
		k += snprintf(e + k, n - k, "; efficiency %.2f learned from %d job%s on %s",
			      c->efficiency, c->eff_jobs, c->eff_jobs == 1 ? "" : "s", c->eff_node);
	else if ((size_t)k < n)
		k += snprintf(e + k, n - k, "; efficiency %.2f (default, nothing learned yet)",
			      c->efficiency);
	if (c->kwh_price > 0 && c->watts > 0 && (size_t)k < n)
		k += snprintf(e + k, n - k, "; energy %.3g kWh at %.0f W per slot (%s)",
			      out->chosen.energy_kwh, c->watts,
			      c->watts_learned ? "metered" : "the node's power limit");
	else if (c->kwh_price > 0 && (size_t)k < n)
		k += snprintf(e + k, n - k, "; energy not in the estimate (no power figure for "
			      "%s yet), billed as metered", c->cls[0] ? c->cls : "its nodes");
	if (c->rate_is_default && (size_t)k < n)
		snprintf(e + k, n - k, "; priced at the default rate $%g/rank-s because ledgerd "
			 "is unreachable", c->rate);
}

int pricing_class_ok(const struct model_config *m, const struct train_params *p,
		     const struct price_cluster *c, char *why, size_t len)
{
	if (p->node_class[0] && strcmp(p->node_class, c->cls))
		snprintf(why, len, "it asks for node class %s", p->node_class);
	else if (c->no_rate)
		snprintf(why, len, "the ledger has no rate for node class %s (an operator sets one: "
			 "bursarctl rates --set %s=USD_PER_RANK_HOUR)", c->cls, c->cls);
	else if (!strcmp(p->device, "cuda") && !c->gpu)
		snprintf(why, len, "it asks for a GPU (device cuda) and node class %s has none",
			 c->cls);
	else if (!strcmp(p->device, "cpu") && c->gpu)
		snprintf(why, len, "it asks for device cpu and node class %s trains on GPUs",
			 c->cls);
	else if (c->gpu && strcmp(m->model_type, "gpt2"))
		snprintf(why, len, "node class %s trains on GPUs and the CUDA backend trains "
			 "GPT-2 only so far", c->cls);
	else if (c->gpu && p->zero)
		snprintf(why, len, "node class %s trains on GPUs and ZeRO-1 runs on the CPU only "
			 "so far", c->cls);
	else
		return 0;
	return -EOPNOTSUPP;
}

/* Whether option a beats b under p's rule (see pricing_world_choose). */
static int better(const struct train_params *p, const struct price_option *a,
		  const struct price_option *b)
{
	int meets_a = p->deadline_s > 0 && a->seconds <= p->deadline_s &&
		      (p->budget <= 0 || a->amount <= p->budget);
	int meets_b = p->deadline_s > 0 && b->seconds <= p->deadline_s &&
		      (p->budget <= 0 || b->amount <= p->budget);

	if (p->ranks <= 0 && p->deadline_s > 0 && meets_a != meets_b)
		return meets_a;
	if (p->ranks <= 0 && p->deadline_s > 0 && meets_a)
		return a->amount < b->amount || (a->amount == b->amount && a->seconds < b->seconds);
	return a->seconds < b->seconds || (a->seconds == b->seconds && a->amount < b->amount);
}

int pricing_world_choose(const struct model_config *m, const struct train_params *p,
			 const struct price_world *w, struct price_result *out, char *err,
			 size_t errlen)
{
	static struct price_result res[ADMIT_MAX_CLASSES]; /* admitd is one thread */
	static char errs[ADMIT_MAX_CLASSES][512];
	int rc[ADMIT_MAX_CLASSES], best = -1, second = -1, cheap = -1, big = -1, k;
	char why[512] = "", alt[640];
	size_t len;

	if (w->n <= 0) {
		snprintf(err, errlen, "no node has registered yet (nothing to price against)");
		return -ENODEV;
	}
	for (int i = 0; i < w->n; i++) {
		errs[i][0] = 0;
		rc[i] = pricing_class_ok(m, p, &w->c[i], errs[i], sizeof(errs[i]));
		if (rc[i] == 0)
			rc[i] = pricing_choose(m, p, &w->c[i], &res[i], errs[i], sizeof(errs[i]));
		if (rc[i] == 0 && (best < 0 || better(p, &res[i].chosen, &res[best].chosen))) {
			second = best;
			best = i;
		} else if (rc[i] == 0 && (second < 0 ||
					  better(p, &res[i].chosen, &res[second].chosen))) {
			second = i;
		}
		if (rc[i] == -EDQUOT && (cheap < 0 || res[i].chosen.amount < res[cheap].chosen.amount))
			cheap = i;
		if (rc[i] == -E2BIG && big < 0)
			big = i;
	}
	if (best >= 0) {
		*out = res[best];
		out->cls = best;
		/* the best other class, or why the first other one is out, goes
		 * before the efficiency clause */
		alt[0] = 0;
		if (second >= 0) {
			fmt_option(&res[second].chosen, &w->c[second], why, sizeof(why));
			snprintf(alt, sizeof(alt), "; or %s", why);
		} else if (w->n > 1) {
			for (k = 0; k < w->n && (rc[k] == 0 || k == best); k++)
				;
			if (k < w->n)
				snprintf(alt, sizeof(alt), "; not on %s: %s", w->c[k].cls, errs[k]);
		}
		if (alt[0]) {
			char *e = strstr(out->explain, "; efficiency ");

			len = e ? (size_t)(e - out->explain) : strlen(out->explain);
			snprintf(why, sizeof(why), "%s", out->explain + len);
			snprintf(out->explain + len, sizeof(out->explain) - len, "%s%s", alt, why);
		}
		return 0;
	}
	if (cheap >= 0 || big >= 0) {
		k = cheap >= 0 ? cheap : big;
		*out = res[k];
		out->cls = k;
		if (w->c[k].show_cls && cheap >= 0)
			snprintf(err, errlen, "%s (%d rank%s on %s, the cheapest)", errs[k],
				 res[k].chosen.ranks, res[k].chosen.ranks == 1 ? "" : "s",
				 w->c[k].cls);
		else if (w->c[k].show_cls)
			snprintf(err, errlen, "%s (node class %s)", errs[k], w->c[k].cls);
		else
			snprintf(err, errlen, "%s", errs[k]);
		return cheap >= 0 ? -EDQUOT : -E2BIG;
	}
	for (int i = 0; i < w->n; i++) {
		if (rc[i] != -EOPNOTSUPP) {
			snprintf(err, errlen, "%s", errs[i]);
			return rc[i];
		}
		len = strlen(why);
		if (len < sizeof(why))
			snprintf(why + len, sizeof(why) - len, "%s%s", i ? "; " : "", errs[i]);
	}
	snprintf(err, errlen, "no node class that is up can run it: %s", why);
	return -EOPNOTSUPP;
}

int pricing_choose(const struct model_config *m, const struct train_params *p,
		   const struct price_cluster *c, struct price_result *out, char *err,
		   size_t errlen)
{
	struct price_option o, fastest = {0}, cheapest = {0}, best_budget = {0},
			       best_deadline = {0};
	int lo = 1, hi = c->total_slots, have_budget = 0, have_deadline = 0;
	char why[96], a[32], b[32];

	if (c->total_slots <= 0 || c->flops_per_slot <= 0 || c->efficiency <= 0) {
		snprintf(err, errlen, "no node has registered yet (nothing to price against)");
		return -ENODEV;
	}
	if (p->ranks > 0) {
		if (p->ranks > c->total_slots) {
			snprintf(err, errlen, "needs %d ranks, the cluster has %d", p->ranks,
				 c->total_slots);
			return -E2BIG;
		}
		lo = hi = p->ranks;
	}
	if (hi > ADMIT_MAX_RANKS)
		hi = ADMIT_MAX_RANKS;
	if (c->mem_bytes > 0 && pricing_rank_mem(m, p) > c->mem_bytes) {
		snprintf(err, errlen, "needs %.1f GiB per rank, the smallest node has %.1f GiB",
			 pricing_rank_mem(m, p) / (1 << 30), c->mem_bytes / (1 << 30));
		return -E2BIG;
	}
	memset(out, 0, sizeof(*out));
	for (int r = lo; r <= hi; r++) {
		if (p->batch % r)
			continue;
		pricing_option(m, p, c, r, &o);
		if (!fastest.ranks || o.seconds < fastest.seconds)
			fastest = o;
		if (!cheapest.ranks || o.amount < cheapest.amount)
			cheapest = o;
		if (p->budget > 0 && o.amount <= p->budget &&
		    (!have_budget || o.seconds < best_budget.seconds)) {
			best_budget = o;
			have_budget = 1;
		}
		if (p->deadline_s > 0 && o.seconds <= p->deadline_s &&
		    (p->budget <= 0 || o.amount <= p->budget) &&
		    (!have_deadline || o.amount < best_deadline.amount)) {
			best_deadline = o;
			have_deadline = 1;
		}
	}
	out->flops_per_token = modelcfg_flops_per_token(m, p->seq_len);
	out->tokens = (double)p->steps * p->batch * p->seq_len;
	out->node_flops = c->flops_per_slot;
	if (p->budget > 0 && cheapest.amount > p->budget) {
		pricing_fmt_money(cheapest.amount, a, sizeof(a));
		pricing_fmt_money(p->budget, b, sizeof(b));
		snprintf(err, errlen, "rejected: needs %s, budget %s", a, b);
		out->chosen = cheapest;
		return -EDQUOT;
	}
	if (p->ranks > 0) {
		out->chosen = fastest;
		explain(out, "as requested", NULL, c);
	} else if (p->deadline_s > 0 && have_deadline) {
		out->chosen = best_deadline;
		pricing_fmt_duration(p->deadline_s, a, sizeof(a));
		snprintf(why, sizeof(why), "cheapest that meets the %s deadline", a);
		explain(out, why, &fastest, c);
	} else if (p->deadline_s > 0) {
		out->chosen = have_budget ? best_budget : fastest;
		pricing_fmt_duration(p->deadline_s, a, sizeof(a));
		snprintf(why, sizeof(why), "fastest%s; nothing meets the %s deadline",
			 have_budget ? " within budget" : "", a);
		explain(out, why, &cheapest, c);
	} else if (p->budget > 0) {
		out->chosen = best_budget;
		pricing_fmt_money(p->budget, a, sizeof(a));
		snprintf(why, sizeof(why), "fastest within the %s budget", a);
		explain(out, why, &fastest, c);
	} else {
		out->chosen = fastest;
		explain(out, "fastest", &cheapest, c);
	}
	return 0;
}

int pricing_parse_spec(json_t *model, json_t *params, struct model_config *m,
		       struct train_params *p, char *err, size_t errlen)
{
	struct model_config mc;
	struct train_params tp;
	json_t *mcopy, *pcopy, *rk;
	int r;

	if (!json_is_object(model)) {
		snprintf(err, errlen, "'model' must be a JSON object (the model's config.json)");
		return -EINVAL;
	}
	if (params && !json_is_object(params)) {
		snprintf(err, errlen, "'params' must be a JSON object (training parameters)");
		return -EINVAL;
	}
	/* modelcfg_to_json adds n_params, which modelcfg_parse does not accept. */
	mcopy = json_copy(model);
	if (!mcopy)
		return -ENOMEM;
	json_object_del(mcopy, "n_params");
	r = modelcfg_parse(mcopy, &mc, err, errlen);
	json_decref(mcopy);
	if (r < 0)
		return r;
	trainparams_defaults(&mc, &tp);
	if (params) {
		/* trainparams_to_json writes "ranks": 0 for auto; apply wants "auto". */
		pcopy = json_copy(params);
		if (!pcopy)
			return -ENOMEM;
		rk = json_object_get(pcopy, "ranks");
		if (json_is_integer(rk) && json_integer_value(rk) == 0)
			json_object_set_new(pcopy, "ranks", json_string("auto"));
		r = trainparams_apply(pcopy, &mc, &tp, err, errlen);
		json_decref(pcopy);
		if (r < 0)
			return r;
	}
	*m = mc;
	*p = tp;
	return 0;
}

json_t *pricing_estimate_json(const struct price_result *r, const struct price_cluster *c)
{
	return json_pack("{s:i, s:f, s:f, s:I, s:f, s:f, s:f, s:f, s:f, s:s, s:f, s:i, s:s, s:s, "
			 "s:s, s:f, s:f, s:f, s:s}",
			 "ranks", r->chosen.ranks, "seconds", r->chosen.seconds,
			 "amount", r->chosen.amount, "amount_micro",
			 (json_int_t)llround(r->chosen.amount * 1e6), "flops_per_token",
			 r->flops_per_token, "tokens", r->tokens, "node_flops", r->node_flops,
			 "compute_s", r->chosen.compute_s, "comm_s", r->chosen.comm_s,
			 "explain", r->explain, "efficiency", c->efficiency, "efficiency_jobs",
			 c->eff_jobs, "efficiency_node", c->eff_node, "node_class", c->cls,
			 "device", c->gpu ? "cuda" : "cpu", "rank_second", c->rate,
			 "energy_kwh", r->chosen.energy_kwh, "watts_per_slot", c->watts,
			 "watts_source", c->watts <= 0 ? "unknown" : c->watts_learned ? "metered" :
			 "reported");
}

json_t *pricing_candidates_json(const struct model_config *m, const struct train_params *p,
				const struct price_world *w)
{
	json_t *list = json_array();
	struct price_option o;
	char why[512];
	int n = 0;

	for (int i = 0; list && i < w->n; i++) {
		const struct price_cluster *c = &w->c[i];

		if (pricing_class_ok(m, p, c, why, sizeof(why)) < 0 || c->flops_per_slot <= 0 ||
		    c->efficiency <= 0)
			continue;
		for (int r = 1; r <= c->total_slots && r <= ADMIT_MAX_RANKS; r++) {
			if (p->batch % r || (p->ranks > 0 && r != p->ranks))
				continue;
			/* every count up to 16, then powers of two and the largest */
			if (r > 16 && (r & (r - 1)) && r != c->total_slots)
				continue;
			if (++n > PRICING_MAX_CANDIDATES)
				return list;
			pricing_option(m, p, c, r, &o);
			json_array_append_new(list, json_pack("{s:i, s:s, s:f, s:f, s:f, s:f, s:I}",
							      "ranks", r, "node_class", c->cls,
							      "seconds", o.seconds, "compute_s",
							      o.compute_s, "comm_s", o.comm_s,
							      "amount", o.amount, "amount_micro",
							      (json_int_t)llround(o.amount * 1e6)));
		}
	}
	return list;
}

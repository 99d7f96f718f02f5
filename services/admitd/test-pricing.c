/* test-pricing — table-driven tests of admitd's pricing on the real functions:
 * time and cost per rank count, the deadline/budget choices, rejections and
 * the explanation sentences. */
#include "admitd.h"
#include "util.h"
#include "../../tests/t.h"

#include <errno.h>
#include <math.h>

static struct model_config tiny;

/* T_EQ_STR on a char array trips -Waddress; pass arrays through this. */
static const char *str(const char *s)
{
	return s;
}

static void load_tiny(void)
{
	json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i}", "model_type", "gpt2", "n_layer", 2,
			      "n_head", 2, "n_embd", 64, "n_positions", 64, "vocab_size", 256);
	char err[256];

	if (modelcfg_parse(j, &tiny, err, sizeof(err)) < 0) {
		printf("FAIL setup: %s\n", err);
		exit(1);
	}
	json_decref(j);
}

static struct train_params params(int ranks, int batch, double budget, double deadline)
{
	struct train_params p;

	trainparams_defaults(&tiny, &p);
	p.steps = 100;
	p.batch = batch;
	p.seq_len = 64;
	p.ranks = ranks;
	p.budget = budget;
	p.deadline_s = deadline;
	return p;
}

static const struct price_cluster c4 = {
	.total_slots = 4, .flops_per_slot = 2e10, .efficiency = 0.3, .rate = 0.0002,
};

static int near(double got, double want)
{
	return fabs(got - want) <= 1e-9 * fmax(1, fabs(want));
}

static void test_option_formula(void)
{
	struct train_params p = params(0, 8, 0, 0);
	double fpt = modelcfg_flops_per_token(&tiny, 64), tokens = 100.0 * 8 * 64;
	double bytes = 4.0 * modelcfg_n_params(&tiny);
	struct {
		int r;
		double want_comm;
	} cases[] = {
		{1, 0},
		{2, 100 * (2 * 1 * 50e-6 + 2.0 * 1 / 2 * bytes / 2e9)},
		{4, 100 * (2 * 3 * 50e-6 + 2.0 * 3 / 4 * bytes / 2e9)},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct price_option got;
		double want_compute = fpt * tokens / (cases[i].r * 2e10 * 0.3);
		double want_s = want_compute + cases[i].want_comm + 2.0;

		pricing_option(&tiny, &p, &c4, cases[i].r, &got);
		T_CHECK(near(got.compute_s, want_compute), "r=%d compute got %g want %g", cases[i].r,
			got.compute_s, want_compute);
		T_CHECK(near(got.comm_s, cases[i].want_comm), "r=%d comm got %g want %g", cases[i].r,
			got.comm_s, cases[i].want_comm);
		T_CHECK(near(got.seconds, want_s), "r=%d seconds got %g want %g", cases[i].r,
			got.seconds, want_s);
		T_CHECK(near(got.amount, want_s * cases[i].r * 0.0002), "r=%d amount got %g",
			cases[i].r, got.amount);
	}
}

static void test_more_ranks_faster_and_dearer(void)
{
	struct train_params p = params(0, 8, 0, 0);
	struct price_option o1, o2, o4;

	pricing_option(&tiny, &p, &c4, 1, &o1);
	pricing_option(&tiny, &p, &c4, 2, &o2);
	pricing_option(&tiny, &p, &c4, 4, &o4);
	T_CHECK(o2.seconds < o1.seconds && o4.seconds < o2.seconds, "seconds 1:%g 2:%g 4:%g",
		o1.seconds, o2.seconds, o4.seconds);
	T_CHECK(o2.amount > o1.amount && o4.amount > o2.amount, "amount 1:%g 2:%g 4:%g",
		o1.amount, o2.amount, o4.amount);
}

/* When communication dominates, one rank is the fastest. */
static void test_comm_bound_prefers_one_rank(void)
{
	struct price_cluster fast = c4;
	struct train_params p = params(0, 8, 0, 0);
	struct price_result got;
	char err[256];

	fast.flops_per_slot = 1e16;
	T_EQ_INT(pricing_choose(&tiny, &p, &fast, &got, err, sizeof(err)), 0);
	T_EQ_INT(got.chosen.ranks, 1);
}

static void test_choices(void)
{
	struct price_option o1, o2, o4;
	struct train_params p0 = params(0, 8, 0, 0);

	pricing_option(&tiny, &p0, &c4, 1, &o1);
	pricing_option(&tiny, &p0, &c4, 2, &o2);
	pricing_option(&tiny, &p0, &c4, 4, &o4);
	struct {
		const char *name;
		struct train_params p;
		int want_r, want_rc;
		const char *want_explain; /* prefix */
	} cases[] = {
		{"auto fastest", params(0, 8, 0, 0), 4, 0, "4 ranks: "},
		{"fixed ranks", params(2, 8, 0, 0), 2, 0, "2 ranks: "},
		{"loose deadline: cheapest", params(0, 8, 0, 1000), 1, 0, "1 rank: "},
		{"tight deadline", params(0, 8, 0, (o4.seconds + o2.seconds) / 2), 4, 0, "4 ranks: "},
		{"mid deadline", params(0, 8, 0, (o2.seconds + o1.seconds) / 2), 2, 0, "2 ranks: "},
		{"budget: fastest within", params(0, 8, (o2.amount + o4.amount) / 2, 0), 2, 0,
		 "2 ranks: "},
		{"budget too small", params(0, 8, o1.amount / 2, 0), 1, -EDQUOT, NULL},
		{"fixed over budget", params(4, 8, o2.amount, 0), 4, -EDQUOT, NULL},
		{"too many ranks", params(8, 8, 0, 0), 0, -E2BIG, NULL},
		{"batch 6 skips 4", params(0, 6, 0, 0), 3, 0, "3 ranks: "},
		{"impossible deadline", params(0, 8, 0, 0.5), 4, 0, "4 ranks: "},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct price_result got;
		char err[256] = "";
		int rc = pricing_choose(&tiny, &cases[i].p, &c4, &got, err, sizeof(err));

		T_CHECK(rc == cases[i].want_rc, "%s: rc got %d want %d (%s)", cases[i].name, rc,
			cases[i].want_rc, err);
		if (rc == 0) {
			T_CHECK(got.chosen.ranks == cases[i].want_r, "%s: ranks got %d want %d (%s)",
				cases[i].name, got.chosen.ranks, cases[i].want_r, got.explain);
			T_CHECK(!strncmp(got.explain, cases[i].want_explain,
					 strlen(cases[i].want_explain)),
				"%s: explain \"%s\"", cases[i].name, got.explain);
		}
	}
}

static void test_explain_text(void)
{
	struct train_params p = params(0, 8, 0, 0);
	struct price_cluster dflt = c4;
	struct price_result got;
	char err[256], want[256], d[32], m[32];
	struct price_option o1;

	T_EQ_INT(pricing_choose(&tiny, &p, &c4, &got, err, sizeof(err)), 0);
	pricing_option(&tiny, &p, &c4, 1, &o1);
	pricing_fmt_duration(o1.seconds, d, sizeof(d));
	pricing_fmt_money(o1.amount, m, sizeof(m));
	snprintf(want, sizeof(want), "(fastest); 1 rank would be %s, %s", d, m);
	T_CHECK(strstr(got.explain, want), "explain \"%s\" lacks \"%s\"", got.explain, want);
	T_CHECK(!strstr(got.explain, "default rate"), "explain \"%s\"", got.explain);

	dflt.rate_is_default = 1;
	T_EQ_INT(pricing_choose(&tiny, &p, &dflt, &got, err, sizeof(err)), 0);
	T_CHECK(strstr(got.explain, "default rate $0.0002/rank-s because ledgerd is unreachable"),
		"explain \"%s\"", got.explain);

	p = params(0, 8, 0.0001, 0);
	T_EQ_INT(pricing_choose(&tiny, &p, &c4, &got, err, sizeof(err)), -EDQUOT);
	pricing_fmt_money(o1.amount, m, sizeof(m));
	snprintf(want, sizeof(want), "rejected: needs %s, budget $0.0001", m);
	T_EQ_STR(str(err), want);

	p = params(8, 8, 0, 0);
	pricing_choose(&tiny, &p, &c4, &got, err, sizeof(err));
	T_EQ_STR(str(err), "needs 8 ranks, the cluster has 4");
}

static void test_no_nodes(void)
{
	struct price_cluster none = c4;
	struct train_params p = params(0, 8, 0, 0);
	struct price_result got;
	char err[256];

	none.total_slots = 0;
	T_EQ_INT(pricing_choose(&tiny, &p, &none, &got, err, sizeof(err)), -ENODEV);
}

static void test_formats(void)
{
	struct {
		double s;
		const char *want;
	} d[] = {{12.34, "12.3 s"}, {70, "1 m 10 s"}, {125, "2 m 05 s"}, {3725, "1 h 02 m"},
		 {90000, "1 d 01 h"}};
	struct {
		double a;
		const char *want;
	} m[] = {{0.03, "$0.0300"}, {0.00012, "$0.0001"}, {12.345, "$12.35"}};
	char buf[32];

	for (size_t i = 0; i < ARRAY_SIZE(d); i++) {
		pricing_fmt_duration(d[i].s, buf, sizeof(buf));
		T_EQ_STR(str(buf), d[i].want);
	}
	for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
		pricing_fmt_money(m[i].a, buf, sizeof(buf));
		T_EQ_STR(str(buf), m[i].want);
	}
}

/* What consoled sends (modelcfg_to_json, trainparams_to_json) parses back. */
static void test_parse_spec_roundtrip(void)
{
	struct train_params p = params(0, 8, 1.5, 60), gotp;
	struct model_config gotm;
	json_t *mj = modelcfg_to_json(&tiny), *pj = trainparams_to_json(&p), *bad;
	char err[256] = "";

	T_EQ_INT(pricing_parse_spec(mj, pj, &gotm, &gotp, err, sizeof(err)), 0);
	T_CHECK(!err[0], "err \"%s\"", err);
	T_EQ_INT(gotm.n_embd, 64);
	T_EQ_INT(gotp.batch, 8);
	T_EQ_INT(gotp.ranks, 0);
	T_CHECK(gotp.budget == 1.5 && gotp.deadline_s == 60, "budget %g deadline %g",
		gotp.budget, gotp.deadline_s);

	bad = json_pack("{s:i}", "batch", 0);
	T_CHECK(pricing_parse_spec(mj, bad, &gotm, &gotp, err, sizeof(err)) < 0, "batch 0 accepted");
	T_CHECK(strstr(err, "'batch'"), "err \"%s\"", err);
	json_decref(bad);
	json_object_set_new(mj, "n_layer", json_integer(0));
	T_CHECK(pricing_parse_spec(mj, pj, &gotm, &gotp, err, sizeof(err)) < 0, "n_layer 0 accepted");
	T_CHECK(strstr(err, "n_layer"), "err \"%s\"", err);
	T_CHECK(pricing_parse_spec(json_null(), NULL, &gotm, &gotp, err, sizeof(err)) == -EINVAL,
		"null model accepted");
	json_decref(mj);
	json_decref(pj);
}

/* A job that ran slower than predicted teaches a lower efficiency, and the
 * re-priced job predicts exactly the observed time; learning converges. */
static void test_learn_efficiency(void)
{
	struct train_params p = params(1, 8, 0, 0);
	struct price_cluster c = c4;
	struct price_option o, o2;
	double obs, actual, e;

	pricing_option(&tiny, &p, &c, 1, &o);
	actual = o.seconds + o.compute_s; /* compute took twice as long */
	T_EQ_INT(pricing_observed_efficiency(&o, c.efficiency, actual, &obs), 0);
	T_CHECK(near(obs, c.efficiency / 2), "obs %g", obs);
	c.efficiency = obs;
	pricing_option(&tiny, &p, &c, 1, &o2);
	T_CHECK(near(o2.seconds, actual), "re-priced %g, ran %g", o2.seconds, actual);
	/* overheads only: nothing to learn */
	T_EQ_INT(pricing_observed_efficiency(&o, 0.3, o.seconds - o.compute_s, &obs), -ERANGE);
	/* clamped to the plausible range */
	T_EQ_INT(pricing_observed_efficiency(&o, 0.9, o.seconds - 0.5 * o.compute_s, &obs), 0);
	T_CHECK(obs == PRICING_EFF_MAX, "obs %g", obs);
	/* first observation moves half way, a long history converges */
	T_CHECK(near(pricing_learn(0.6, 0, 0.2), 0.4), "first %g", pricing_learn(0.6, 0, 0.2));
	e = 0.6;
	for (int n = 0; n < 40; n++)
		e = pricing_learn(e, n, 0.2);
	T_CHECK(fabs(e - 0.2) < 1e-3, "after 40 jobs %g", e);
}

/* Measured α-β replaces the guesses; a model larger than a node's memory is
 * refused with a sentence; every candidate is listed. */
static void test_profile(void)
{
	struct train_params p = params(0, 8, 0, 0);
	struct price_cluster c = c4;
	struct price_option slow, fast;
	struct price_result res;
	char err[256] = "";
	json_t *cands;

	c.alpha_s = 1e-3;
	c.beta_bps = 1e6;
	pricing_option(&tiny, &p, &c, 2, &slow);
	c.alpha_s = 1e-6;
	c.beta_bps = 1e10;
	pricing_option(&tiny, &p, &c, 2, &fast);
	T_CHECK(slow.comm_s > 100 * fast.comm_s, "slow %g fast %g", slow.comm_s, fast.comm_s);
	c.mem_bytes = 1e5;
	T_EQ_INT(pricing_choose(&tiny, &p, &c, &res, err, sizeof(err)), -E2BIG);
	T_CHECK(strstr(err, "GiB per rank, the smallest node has"), "err \"%s\"", err);
	c.mem_bytes = 1e12;
	T_EQ_INT(pricing_choose(&tiny, &p, &c, &res, err, sizeof(err)), 0);
	T_CHECK(strstr(res.explain, "efficiency 0.30 (default, nothing learned yet)"), "%s",
		res.explain);
	c.eff_jobs = 3;
	snprintf(c.eff_node, sizeof(c.eff_node), "node-a");
	T_EQ_INT(pricing_choose(&tiny, &p, &c, &res, err, sizeof(err)), 0);
	T_CHECK(strstr(res.explain, "efficiency 0.30 learned from 3 jobs on node-a"), "%s",
		res.explain);
	{
		struct price_world w = {.n = 1};

		w.c[0] = c;
		snprintf(w.c[0].cls, sizeof(w.c[0].cls), "cpu");
		cands = pricing_candidates_json(&tiny, &p, &w);
	}
	T_EQ_INT((int)json_array_size(cands), 3); /* 1, 2, 4 divide the batch of 8 */
	json_decref(cands);
}

/* A CPU class and a GPU class 100x faster at 250x the rate: the rule picks
 * among the classes as it does among rank counts; device, node_class, ZeRO
 * and a missing rate rule classes out with the reason in the sentence. */
static void test_classes(void)
{
	struct price_world w = {.n = 2};
	struct price_result res, cpu_only, gpu_only;
	struct train_params p = params(0, 8, 0, 0);
	char err[512] = "";
	double mid;
	json_t *cands;

	w.c[0] = c4;
	snprintf(w.c[0].cls, sizeof(w.c[0].cls), "cpu");
	w.c[1] = c4;
	snprintf(w.c[1].cls, sizeof(w.c[1].cls), "h100");
	w.c[1].gpu = 1;
	w.c[1].total_slots = 2;
	w.c[1].flops_per_slot = 2e12;
	w.c[1].rate = 0.05;
	w.c[0].show_cls = w.c[1].show_cls = 1;
	p.steps = 100000;
	T_EQ_INT(pricing_choose(&tiny, &p, &w.c[0], &cpu_only, err, sizeof(err)), 0);
	T_EQ_INT(pricing_choose(&tiny, &p, &w.c[1], &gpu_only, err, sizeof(err)), 0);
	T_CHECK(gpu_only.chosen.seconds < cpu_only.chosen.seconds &&
		gpu_only.chosen.amount > cpu_only.chosen.amount, "gpu %g s $%g, cpu %g s $%g",
		gpu_only.chosen.seconds, gpu_only.chosen.amount, cpu_only.chosen.seconds,
		cpu_only.chosen.amount);

	/* no budget, no deadline: the fastest, the other class for comparison */
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 1);
	T_CHECK(strstr(res.explain, " on h100: ") && strstr(res.explain, " on h100: ") <
		strstr(res.explain, "(fastest); or 4 ranks on cpu: ") &&
		strstr(res.explain, "(fastest); or 4 ranks on cpu: ") <
		strstr(res.explain, "; efficiency 0.30"), "%s", res.explain);
	/* a budget the GPU class cannot meet: the CPU class */
	mid = (cpu_only.chosen.amount + gpu_only.chosen.amount) / 2;
	p.budget = mid;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 0);
	T_CHECK(res.chosen.amount <= mid, "%g > %g", res.chosen.amount, mid);
	/* a budget nothing meets: the cheapest class's price in the refusal */
	p.budget = 1e-9;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), -EDQUOT);
	T_CHECK(strstr(err, "rejected: needs $") && strstr(err, "on cpu, the cheapest)"), "%s",
		err);
	p.budget = 0;
	/* a deadline only the GPU class meets; then one both meet: the cheaper */
	p.deadline_s = (gpu_only.chosen.seconds + cpu_only.chosen.seconds) / 2;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 1);
	p.deadline_s = cpu_only.chosen.seconds * 10;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 0);
	T_CHECK(strstr(res.explain, "cheapest that meets the"), "%s", res.explain);
	p.deadline_s = 0;
	/* device and node_class choose the class; ZeRO keeps a job off GPUs */
	snprintf(p.device, sizeof(p.device), "cpu");
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 0);
	snprintf(p.device, sizeof(p.device), "cuda");
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 1);
	p.zero = 1;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), -EOPNOTSUPP);
	T_CHECK(strstr(err, "no node class that is up can run it: ") &&
		strstr(err, "it asks for a GPU (device cuda) and node class cpu has none") &&
		strstr(err, "node class h100 trains on GPUs and ZeRO-1 runs on the CPU only"),
		"%s", err);
	snprintf(p.device, sizeof(p.device), "auto");
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 0);
	T_CHECK(strstr(res.explain, "; not on h100: node class h100 trains on GPUs and ZeRO-1"),
		"%s", res.explain);
	p.zero = 0;
	snprintf(p.node_class, sizeof(p.node_class), "cpu");
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 0);
	snprintf(p.node_class, sizeof(p.node_class), "a100");
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), -EOPNOTSUPP);
	T_CHECK(strstr(err, "it asks for node class a100"), "%s", err);
	p.node_class[0] = 0;
	/* ledgerd has rates but none for h100: not offered */
	w.c[1].no_rate = 1;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), 0);
	T_EQ_INT(res.cls, 0);
	T_CHECK(strstr(res.explain, "the ledger has no rate for node class h100"), "%s",
		res.explain);
	cands = pricing_candidates_json(&tiny, &p, &w);
	T_EQ_INT((int)json_array_size(cands), 3); /* the CPU class's 1, 2, 4 */
	json_decref(cands);
	w.c[1].no_rate = 0;
	cands = pricing_candidates_json(&tiny, &p, &w);
	T_EQ_INT((int)json_array_size(cands), 5); /* and the GPU class's 1, 2 */
	T_EQ_STR(json_string_value(json_object_get(json_array_get(cands, 4), "node_class")),
		 "h100");
	json_decref(cands);
	/* nothing up */
	w.n = 0;
	T_EQ_INT(pricing_world_choose(&tiny, &p, &w, &res, err, sizeof(err)), -ENODEV);
}

/* Energy: a busy slot's power × the held time × ranks, at the kWh price,
 * inside the amount; explained with where the power figure came from. */
static void test_energy(void)
{
	struct train_params p = params(2, 8, 0, 0);
	struct price_cluster c = c4;
	struct price_result res;
	struct price_option o;
	char err[256];
	double kwh;

	c.watts = 700;
	c.kwh_price = 0.2;
	pricing_option(&tiny, &p, &c, 2, &o);
	kwh = o.seconds * 2 * 700 / 3.6e6;
	T_CHECK(near(o.energy_kwh, kwh), "energy %g want %g", o.energy_kwh, kwh);
	T_CHECK(near(o.amount, o.seconds * 2 * 0.0002 + kwh * 0.2), "amount %g", o.amount);
	T_EQ_INT(pricing_choose(&tiny, &p, &c, &res, err, sizeof(err)), 0);
	T_CHECK(strstr(res.explain, " kWh at 700 W per slot (the node's power limit)"), "%s",
		res.explain);
	c.watts_learned = 1;
	T_EQ_INT(pricing_choose(&tiny, &p, &c, &res, err, sizeof(err)), 0);
	T_CHECK(strstr(res.explain, " kWh at 700 W per slot (metered)"), "%s", res.explain);
	c.watts = 0;
	T_EQ_INT(pricing_choose(&tiny, &p, &c, &res, err, sizeof(err)), 0);
	T_CHECK(strstr(res.explain, "energy not in the estimate"), "%s", res.explain);
	T_CHECK(near(res.chosen.amount, res.chosen.seconds * 2 * 0.0002), "%g", res.chosen.amount);
}

int main(void)
{
	load_tiny();
	t_run("pricing_option_formula", test_option_formula);
	t_run("pricing_more_ranks_faster_and_dearer", test_more_ranks_faster_and_dearer);
	t_run("pricing_comm_bound_prefers_one_rank", test_comm_bound_prefers_one_rank);
	t_run("pricing_choices", test_choices);
	t_run("pricing_explain_text", test_explain_text);
	t_run("pricing_no_nodes", test_no_nodes);
	t_run("pricing_formats", test_formats);
	t_run("pricing_parse_spec_roundtrip", test_parse_spec_roundtrip);
	t_run("pricing_learn_efficiency", test_learn_efficiency);
	t_run("pricing_measured_profile", test_profile);
	t_run("pricing_node_classes", test_classes);
	t_run("pricing_energy", test_energy);
	return t_done();
}

/* cmd_estimate — `bursarctl estimate BUNDLE [--set K=V]... [--format table|json]`:
 * what a job would cost, without submitting it. A bundle directory is parsed
 * here with the same parser consoled and the trainer use (nothing is
 * uploaded) and its model and parameters are sent to consoled's
 * POST /api/v1/estimate; an already uploaded bundle is named by its id
 * (b-…). Prints every candidate allocation with its time and cost, marks the
 * one admission would choose, and says why.
 */
#include "ctl.h"
#include "bundle.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int cmd_estimate(struct ctl *c, int argc, char **argv);

/* The request for path: {"model", "params"} of a directory, or
 * {"bundle", "overrides"} of an uploaded bundle id. */
static int est_request(const char *path, json_t *ov, json_t **out)
{
	struct bundle_info bi;
	char err[1024] = "";
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (bundle_check(path, &bi, err, sizeof(err)) < 0 ||
		    trainparams_apply(ov, &bi.model, &bi.params, err, sizeof(err)) < 0) {
			fprintf(stderr, "bursarctl: bundle '%s': %s\n", path, err);
			return -EINVAL;
		}
		*out = json_pack("{s:o, s:o}", "model", modelcfg_to_json(&bi.model), "params",
				 trainparams_to_json(&bi.params));
		return *out ? 0 : -ENOMEM;
	}
	if (!strncmp(path, "b-", 2) && util_valid_name(path, 64) && !strchr(path, '/')) {
		*out = json_pack("{s:s, s:O}", "bundle", path, "overrides", ov);
		return *out ? 0 : -ENOMEM;
	}
	fprintf(stderr, "bursarctl: '%s' is neither a bundle directory nor an uploaded bundle id "
		"(b-…); to price an archive, unpack it or upload it with submit\n", path);
	return -EINVAL;
}

static double est_num(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Whether the candidates span node classes other than the plain "cpu". */
static int est_classes(json_t *e)
{
	json_t *o;
	size_t i;

	json_array_foreach(json_object_get(e, "candidates"), i, o) {
		const char *c = json_string_value(json_object_get(o, "node_class"));

		if (c && strcmp(c, "cpu"))
			return 1;
	}
	return 0;
}

static void est_print(json_t *e)
{
	int chosen = (int)json_integer_value(json_object_get(e, "ranks"));
	const char *rej = json_string_value(json_object_get(e, "rejected"));
	const char *ccls = json_string_value(json_object_get(e, "node_class"));
	int classes = est_classes(e);
	char d[32], m[32], cs[32], ms[32];
	json_t *o;
	size_t i;

	printf("%.3g FLOP/token x %.4g tokens; %.3g FLOP/s per rank at efficiency %.2f%s%s\n",
	       est_num(e, "flops_per_token"), est_num(e, "tokens"), est_num(e, "node_flops"),
	       est_num(e, "efficiency"), classes && ccls ? " on " : "", classes && ccls ? ccls : "");
	if (classes)
		printf("  %-10s", "CLASS");
	else
		printf(" ");
	printf(" %5s %12s %12s %12s %10s\n", "RANKS", "TIME", "COMPUTE", "ALLREDUCE", "COST");
	json_array_foreach(json_object_get(e, "candidates"), i, o) {
		int r = (int)json_integer_value(json_object_get(o, "ranks"));
		const char *cls = json_string_value(json_object_get(o, "node_class"));
		int mine = r == chosen && !rej && (!ccls || !cls || !strcmp(cls, ccls));

		ctl_fmt_duration(est_num(o, "seconds"), d, sizeof(d));
		ctl_fmt_duration(est_num(o, "compute_s"), cs, sizeof(cs));
		ctl_fmt_duration(est_num(o, "comm_s"), ms, sizeof(ms));
		ctl_fmt_money(est_num(o, "amount"), m, sizeof(m));
		if (classes)
			printf("%s %-10s", mine ? "*" : " ", cls ? cls : "cpu");
		else
			printf("%s", mine ? "*" : " ");
		printf(" %5d %12s %12s %12s %10s\n", r, d, cs, ms, m);
	}
	if (est_num(e, "energy_kwh") > 0)
		printf("energy: %.3g kWh at %.0f W per slot (%s), in the cost\n",
		       est_num(e, "energy_kwh"), est_num(e, "watts_per_slot"),
		       json_string_value(json_object_get(e, "watts_source")) ?: "?");
	if (rej)
		printf("would be %s\n", rej);
	else
		printf("choice: %s\n", json_string_value(json_object_get(e, "explain")) ?: "?");
}

int cmd_estimate(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"set", required_argument, NULL, 's'},
		{"format", required_argument, NULL, 'f'},
		{0},
	};
	json_t *ov = json_object(), *req = NULL, *resp = NULL;
	const char *format = "table";
	int o, r = -EINVAL;

	while ((o = getopt_long(argc, argv, "s:f:", opts, NULL)) != -1) {
		if (o == 's' && ctl_set_override(ov, optarg) == 0)
			continue;
		if (o == 'f' && (!strcmp(optarg, "table") || !strcmp(optarg, "json"))) {
			format = optarg;
			continue;
		}
		if (o == 'f')
			fprintf(stderr, "bursarctl: --format must be table or json\n");
		goto out;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: bursarctl estimate BUNDLE_DIR|BUNDLE_ID [--set K=V]... "
			"[--format table|json]\n");
		goto out;
	}
	r = est_request(argv[optind], ov, &req);
	if (r < 0)
		goto out;
	r = ctl_call(c, "POST", "/api/v1/estimate", req, &resp);
	if (r < 0)
		goto out;
	if (!strcmp(format, "json")) {
		json_dumpf(resp, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		est_print(resp);
	}
out:
	json_decref(resp);
	json_decref(req);
	json_decref(ov);
	return r;
}

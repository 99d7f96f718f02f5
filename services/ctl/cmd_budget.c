/* cmd_budget — balance, credit and rates: a tenant's budget and the prices.
 * Amounts on the command line are dollars; what goes to consoled for a credit
 * is the exact integer of micro-dollars, so "credit acme 0.10" is 100000. */
#include "ctl.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rates above this many dollars per rank-hour are refused as typos (ledgerd's cap). */
#define CTL_MAX_RATE 1000000.0
#define CTL_MAX_CREDIT 1e9
#define CTL_MAX_SETS 16

static void money_micro(json_t *o, const char *k, char *buf, size_t len)
{
	json_t *v = json_object_get(o, k);

	if (json_is_integer(v))
		ctl_fmt_money(json_integer_value(v) / 1e6, buf, len);
	else
		snprintf(buf, len, "-");
}

/* Parses a dollar amount: finite, |x| <= max; -EINVAL with a sentence. */
static int parse_usd(const char *s, double max, double *out)
{
	char *end;
	double x;

	if (*s == '$')
		s++;
	x = strtod(s, &end);
	if (end == s || *end || !isfinite(x) || fabs(x) > max) {
		fprintf(stderr, "bursarctl: '%s' is not an amount of dollars within +-%.0f\n", s,
			max);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

static void print_balance(json_t *b)
{
	char cr[32], sp[32], rs[32], av[32];

	money_micro(b, "credits_micro", cr, sizeof(cr));
	money_micro(b, "spent_micro", sp, sizeof(sp));
	money_micro(b, "reserved_micro", rs, sizeof(rs));
	money_micro(b, "available_micro", av, sizeof(av));
	printf("tenant %s\n", json_string_value(json_object_get(b, "tenant")) ?: "?");
	printf("  %-10s %14s\n", "credits", cr);
	printf("  %-10s %14s\n", "spent", sp);
	printf("  %-10s %14s\n", "reserved", rs);
	if (json_is_true(json_object_get(b, "limited")))
		printf("  %-10s %14s\n", "available", av);
	else
		printf("  %-10s %14s\n", "available", "unlimited (no credits yet)");
}

int cmd_balance(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {{"tenant", required_argument, NULL, 't'},
					     {"json", no_argument, NULL, 'j'},
					     {0}};
	const char *tenant = NULL;
	char path[160];
	int o, json = 0, r;
	json_t *b;

	while ((o = getopt_long(argc, argv, "t:j", opts, NULL)) != -1) {
		if (o == 't')
			tenant = optarg;
		else if (o == 'j')
			json = 1;
		else
			return -EINVAL;
	}
	if (optind != argc || (tenant && !util_valid_name(tenant, 64))) {
		fprintf(stderr, "usage: bursarctl balance [--tenant T (operator)] [--json]\n");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/api/v1/balance%s%s", tenant ? "?tenant=" : "",
		 tenant ? tenant : "");
	r = ctl_call(c, "GET", path, NULL, &b);
	if (r < 0)
		return r;
	if (json) {
		json_dumpf(b, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		print_balance(b);
	}
	json_decref(b);
	return 0;
}

int cmd_credit(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {{"note", required_argument, NULL, 'n'}, {0}};
	const char *note = NULL;
	json_t *body, *resp;
	char a[32];
	double usd;
	int o, r;

	while ((o = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
		if (o != 'n')
			return -EINVAL;
		note = optarg;
	}
	if (optind != argc - 2 || !util_valid_name(argv[optind], 64)) {
		fprintf(stderr, "usage: bursarctl credit TENANT AMOUNT [--note N]   (operator; a "
				"negative AMOUNT is a correction)\n");
		return -EINVAL;
	}
	r = parse_usd(argv[optind + 1], CTL_MAX_CREDIT, &usd);
	if (r < 0)
		return r;
	if (llround(usd * 1e6) == 0) {
		fprintf(stderr, "bursarctl: a credit of $0 changes nothing\n");
		return -EINVAL;
	}
	body = json_pack("{s:s, s:I}", "tenant", argv[optind], "amount_micro",
			 (json_int_t)llround(usd * 1e6));
	if (body && note)
		json_object_set_new(body, "note", json_string(note));
	if (!body)
		return -ENOMEM;
	r = ctl_call(c, "POST", "/api/v1/credits", body, &resp);
	json_decref(body);
	if (r < 0)
		return r;
	ctl_fmt_money(usd, a, sizeof(a));
	printf("credited %s to tenant %s%s\n", a, argv[optind],
	       json_is_true(json_object_get(resp, "duplicate")) ? " (already recorded)" : "");
	if (json_is_object(json_object_get(resp, "balance")))
		print_balance(json_object_get(resp, "balance"));
	json_decref(resp);
	return 0;
}

static void print_rates(json_t *rt)
{
	json_t *classes = json_object_get(rt, "classes"), *v;
	const char *k;
	char a[32];

	printf("rate version %lld (%s)\n", (long long)json_integer_value(json_object_get(rt, "version")),
	       json_string_value(json_object_get(rt, "currency")) ?: "USD");
	if (json_is_object(classes)) {
		json_object_foreach(classes, k, v) {
			double hour = json_number_value(json_object_get(v, "rank_hour"));

			if (!json_is_object(v))
				hour = json_number_value(v);
			ctl_fmt_money(hour, a, sizeof(a));
			printf("  %-16s %12s per rank-hour\n", k, a);
		}
	} else {
		ctl_fmt_money(json_number_value(json_object_get(rt, "rank_hour")), a, sizeof(a));
		printf("  %-16s %12s per rank-hour\n", "cpu", a);
	}
	v = json_object_get(rt, "kwh");
	if (json_is_number(v)) {
		ctl_fmt_money(json_number_value(v), a, sizeof(a));
		printf("  %-16s %12s per kWh\n", "energy", a);
	}
}

int cmd_rates(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {{"set", required_argument, NULL, 's'},
					     {"json", no_argument, NULL, 'j'},
					     {0}};
	json_t *hours = json_object(), *body = NULL, *rt = NULL;
	int o, json = 0, n_sets = 0, r = -EINVAL;

	if (!hours)
		return -ENOMEM;
	while ((o = getopt_long(argc, argv, "s:j", opts, NULL)) != -1) {
		char name[64], *eq;
		double usd;

		if (o == 'j') {
			json = 1;
			continue;
		}
		if (o != 's' || !(eq = strchr(optarg, '=')) || eq == optarg ||
		    (size_t)(eq - optarg) >= sizeof(name) || ++n_sets > CTL_MAX_SETS)
			goto out_usage;
		memcpy(name, optarg, eq - optarg);
		name[eq - optarg] = 0;
		if (!util_valid_name(name, 32) || parse_usd(eq + 1, CTL_MAX_RATE, &usd) < 0 ||
		    usd < 0)
			goto out_usage;
		/* "kwh" is the energy price; every other name is a node class */
		json_object_set_new(hours, name, json_real(usd));
	}
	if (optind != argc)
		goto out_usage;
	if (n_sets) {
		json_t *kwh = json_object_get(hours, "kwh");

		body = json_object();
		if (!body) {
			r = -ENOMEM;
			goto out;
		}
		if (kwh) {
			json_object_set(body, "kwh", kwh);
			json_object_del(hours, "kwh");
		}
		if (json_object_size(hours))
			json_object_set(body, "rank_hour", hours);
		r = ctl_call(c, "POST", "/api/v1/rates", body, &rt);
		if (r < 0)
			goto out;
		if (!json) {
			json_t *adm = json_object_get(rt, "admission");
			const char *e = json_string_value(json_object_get(adm, "error"));

			if (e)
				printf("warning: %s\n", e);
			else if (json_is_object(adm))
				printf("admission prices new submissions with rate version %lld now\n",
				       (long long)json_integer_value(json_object_get(adm, "version")));
		}
		json_decref(rt);
		rt = NULL;
	}
	r = ctl_call(c, "GET", "/api/v1/rates", NULL, &rt);
	if (r < 0)
		goto out;
	if (json) {
		json_dumpf(rt, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		print_rates(rt);
	}
	goto out;
out_usage:
	fprintf(stderr, "usage: bursarctl rates [--set CLASS=USD_PER_RANK_HOUR]... "
			"[--set kwh=USD_PER_KWH] [--json]   (--set: operator)\n");
	r = -EINVAL;
out:
	json_decref(rt);
	json_decref(body);
	json_decref(hours);
	return r;
}

/* cmd_ledger — bill, ledger and ledger verify: the money side of bursarctl.
 * Entries are fetched page by page (keyset pagination) and printed as a
 * table, CSV or JSON; amounts are summed as integers (micro-dollars). */
#include "ctl.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double num(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static int check_format(const char *f, int allow_csv)
{
	if (!strcmp(f, "table") || !strcmp(f, "json") || (allow_csv && !strcmp(f, "csv")))
		return 0;
	fprintf(stderr, "bursarctl: unknown format '%s' (table%s, json)\n", f,
		allow_csv ? ", csv" : "");
	return -EINVAL;
}

int cmd_bill(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {{"format", required_argument, NULL, 'f'}, {0}};
	const char *format = "table";
	char path[256], a[32], b[32];
	json_t *bill, *pred, *met, *li;
	size_t i;
	int o, r;

	while ((o = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
		if (o != 'f')
			return -EINVAL;
		format = optarg;
	}
	if (optind != argc - 1 || !util_valid_name(argv[optind], 64) || check_format(format, 0)) {
		fprintf(stderr, "usage: bursarctl bill JOB [--format table|json]\n");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/api/v1/jobs/%s/bill", argv[optind]);
	r = ctl_call(c, "GET", path, NULL, &bill);
	if (r < 0)
		return r;
	if (!strcmp(format, "json")) {
		json_dumpf(bill, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(bill);
		return 0;
	}
	pred = json_object_get(bill, "predicted");
	met = json_object_get(bill, "metered");
	printf("bill for job %s (tenant %s, user %s), %s\n", str(bill, "job"), str(bill, "tenant"),
	       str(bill, "user"), str(bill, "currency"));
	printf("  %-16s %14s %14s\n", "", "predicted", "metered");
	ctl_fmt_money(num(pred, "amount"), a, sizeof(a));
	ctl_fmt_money(num(met, "amount"), b, sizeof(b));
	printf("  %-16s %14s %14s", "total", json_is_object(pred) ? a : "-", b);
	if (!isnan(num(bill, "delta_pct")))
		printf("   (%+.1f%% vs predicted)", num(bill, "delta_pct"));
	printf("\n");
	if (json_is_object(pred))
		printf("  %-16s %14.1f %14.1f\n", "rank-seconds",
		       num(pred, "seconds") * num(pred, "ranks"), num(met, "rank_seconds"));
	else
		printf("  %-16s %14s %14.1f\n", "rank-seconds", "-", num(met, "rank_seconds"));
	printf("  line items:\n");
	json_array_foreach(json_object_get(bill, "line_items"), i, li) {
		ctl_fmt_money(num(li, "amount"), a, sizeof(a));
		printf("    %-14s %10.2f %-8s %14s\n", str(li, "kind"), num(li, "quantity"),
		       str(li, "unit"), a);
	}
	printf("  %lld ledger entries\n", (long long)num(met, "entries"));
	json_decref(bill);
	return 0;
}

static void print_entry(json_t *e, const char *format)
{
	if (!strcmp(format, "csv")) {
		printf("%lld,%s,%lld,%s,%s,%s,%lld,%s,%.6f,%s,%lld,%lld,%lld,%s\n",
		       (long long)num(e, "id"), str(e, "source"), (long long)num(e, "seq"),
		       str(e, "job"), str(e, "tenant"), str(e, "user"), (long long)num(e, "rank"),
		       str(e, "kind"), num(e, "quantity"), str(e, "unit"),
		       (long long)num(e, "amount_micro"), (long long)num(e, "start_us"),
		       (long long)num(e, "end_us"), str(e, "hash"));
	} else {
		char when[32];

		util_iso8601((uint64_t)num(e, "end_us"), when);
		printf("%8lld  %-20s %-8s %-8s r%-3lld %-10s %9.3f %-7s %12.6f  %s\n",
		       (long long)num(e, "id"), str(e, "job"), str(e, "tenant"), str(e, "user"),
		       (long long)num(e, "rank"), str(e, "kind"), num(e, "quantity"), str(e, "unit"),
		       num(e, "amount_micro") / 1e6, when);
	}
}

static int ledger_verify(struct ctl *c)
{
	json_t *v;
	int r = ctl_call(c, "GET", "/api/v1/ledger/verify", NULL, &v);

	if (r < 0)
		return r;
	if (json_is_true(json_object_get(v, "ok"))) {
		printf("ledger verified: %lld entries, chain head %s\n",
		       (long long)num(v, "entries"), str(v, "head"));
		r = 0;
	} else {
		printf("ledger BROKEN at entry %lld: %s\n", (long long)num(v, "first_bad_id"),
		       str(v, "reason"));
		r = 1;
	}
	json_decref(v);
	return r;
}

int cmd_ledger(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"job", required_argument, NULL, 'j'},
		{"tenant", required_argument, NULL, 't'},
		{"format", required_argument, NULL, 'f'},
		{"limit", required_argument, NULL, 'l'},
		{0},
	};
	const char *job = NULL, *tenant = NULL, *format = "table";
	long long after = 0, limit = 100000, shown = 0;
	int64_t total_micro = 0;
	json_t *all = json_array();
	int o, r = 0;

	while ((o = getopt_long(argc, argv, "j:t:f:l:", opts, NULL)) != -1) {
		switch (o) {
		case 'j':
			job = optarg;
			break;
		case 't':
			tenant = optarg;
			break;
		case 'f':
			format = optarg;
			break;
		case 'l':
			limit = atoll(optarg);
			break;
		default:
			r = -EINVAL;
			goto out;
		}
	}
	if (optind < argc && !strcmp(argv[optind], "verify")) {
		r = ledger_verify(c);
		goto out;
	}
	if (optind != argc || check_format(format, 1) || limit <= 0 ||
	    (job && !util_valid_name(job, 64)) || (tenant && !util_valid_name(tenant, 64))) {
		fprintf(stderr, "usage: bursarctl ledger [--job J] [--tenant T] "
			"[--format table|csv|json] [--limit N] | ledger verify\n");
		r = -EINVAL;
		goto out;
	}
	if (!strcmp(format, "csv"))
		printf("id,source,seq,job,tenant,user,rank,kind,quantity,unit,amount_micro,"
		       "start_us,end_us,hash\n");
	else if (!strcmp(format, "table"))
		printf("%8s  %-20s %-8s %-8s %-4s %-10s %9s %-7s %12s  %s\n", "ID", "JOB", "TENANT",
		       "USER", "RANK", "KIND", "QTY", "UNIT", "AMOUNT $", "TIME");
	while (shown < limit) {
		char path[512];
		json_t *page, *e, *next;
		size_t i;
		long long n = limit - shown < 10000 ? limit - shown : 10000;

		snprintf(path, sizeof(path), "/api/v1/ledger?after=%lld&limit=%lld%s%s%s%s", after,
			 n, job ? "&job=" : "", job ? job : "", tenant ? "&tenant=" : "",
			 tenant ? tenant : "");
		r = ctl_call(c, "GET", path, NULL, &page);
		if (r < 0)
			goto out;
		json_array_foreach(json_object_get(page, "entries"), i, e) {
			total_micro += (int64_t)num(e, "amount_micro");
			if (!strcmp(format, "json"))
				json_array_append(all, e);
			else
				print_entry(e, format);
			shown++;
		}
		next = json_object_get(page, "next_after");
		after = json_is_integer(next) ? json_integer_value(next) : 0;
		json_decref(page);
		if (!after)
			break;
	}
	if (!strcmp(format, "json")) {
		json_dumpf(all, stdout, JSON_INDENT(2));
		printf("\n");
	} else if (!strcmp(format, "table")) {
		printf("%lld entries, total $%" PRId64 ".%06" PRId64 "\n", shown,
		       total_micro / 1000000, total_micro % 1000000);
	}
out:
	json_decref(all);
	return r;
}

/* cmd_ledger — bill, ledger and ledger verify: the money side of bursarctl.
 * Entries are fetched page by page (keyset pagination) and printed as a
 * table, CSV or JSON, or summed per job, user or UTC day (--by, like sacct);
 * amounts are summed as integers (micro-dollars). */
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
#include <time.h>

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
	/* where it ran and what it drew: one line per node class, then energy */
	json_array_foreach(json_object_get(bill, "classes"), i, li) {
		if (json_array_size(json_object_get(bill, "classes")) == 1 &&
		    !strcmp(str(li, "node_class"), "cpu"))
			break;
		if (i == 0)
			printf("  by node class:\n");
		ctl_fmt_money(num(li, "amount"), a, sizeof(a));
		printf("    %-14s %10.2f %-8s %14s\n", str(li, "node_class"),
		       num(li, "rank_seconds"), "rank_s", a);
	}
	if (num(met, "energy_kwh") > 0) {
		ctl_fmt_money(num(json_object_get(bill, "energy"), "amount"), a, sizeof(a));
		printf("  %-16s %10.4f %-8s %14s   (metered, included above)\n", "energy",
		       num(met, "energy_kwh"), "kWh", a);
	} else if (num(met, "entries") > 0) {
		printf("  %-16s not metered (no power sensor its nodes could read)\n", "energy");
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

/* --by job|user|day: the sacct-like table, one row per group. */
#define GROUP_SLOTS 16384 /* power of two; groups shown at most GROUP_SLOTS / 2 */
#define GROUP_KEY 160

struct group {
	char key[GROUP_KEY], user[72];
	int64_t first_us, last_us, amount_micro, entries;
	double rank_s;
	long long max_rank;
	int used;
};

struct grouping {
	int by; /* 'j', 'u', 'd' */
	struct group *slots;
	int n;
	int dropped; /* entries whose group did not fit */
};

static uint32_t group_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void group_add(struct grouping *g, json_t *e)
{
	char key[GROUP_KEY];
	int64_t start = (int64_t)num(e, "start_us"), end = (int64_t)num(e, "end_us");
	struct group *s;
	uint32_t i;

	if (g->by == 'd') {
		char iso[32];

		util_iso8601((uint64_t)start, iso);
		snprintf(key, sizeof(key), "%.10s", iso);
	} else {
		snprintf(key, sizeof(key), "%s", str(e, g->by == 'j' ? "job" : "user"));
	}
	for (i = group_hash(key) & (GROUP_SLOTS - 1);; i = (i + 1) & (GROUP_SLOTS - 1)) {
		s = &g->slots[i];
		if (!s->used || !strcmp(s->key, key))
			break;
	}
	if (!s->used) {
		if (g->n >= GROUP_SLOTS / 2) {
			g->dropped++;
			return;
		}
		s->used = 1;
		g->n++;
		snprintf(s->key, sizeof(s->key), "%s", key);
		snprintf(s->user, sizeof(s->user), "%s", str(e, "user"));
		s->first_us = start;
		s->last_us = end;
	}
	if (start < s->first_us)
		s->first_us = start;
	if (end > s->last_us)
		s->last_us = end;
	s->amount_micro += (int64_t)num(e, "amount_micro");
	s->rank_s += num(e, "quantity");
	s->entries++;
	if ((long long)num(e, "rank") > s->max_rank)
		s->max_rank = (long long)num(e, "rank");
}

static int group_cmp(const void *a, const void *b)
{
	const struct group *x = a, *y = b;

	if (x->used != y->used)
		return y->used - x->used;
	if (x->first_us != y->first_us)
		return x->first_us < y->first_us ? -1 : 1;
	return strcmp(x->key, y->key);
}

static void group_print(struct grouping *g)
{
	int64_t total = 0;
	double rank_s = 0;

	qsort(g->slots, GROUP_SLOTS, sizeof(*g->slots), group_cmp);
	if (g->by == 'j')
		printf("%-24s %-10s %-20s %-20s %9s %5s %11s %12s\n", "JOB", "USER", "START",
		       "END", "ELAPSED", "RANKS", "RANK-SEC", "AMOUNT");
	else
		printf("%-24s %-20s %-20s %9s %11s %12s\n", g->by == 'u' ? "USER" : "DAY (UTC)",
		       "FIRST", "LAST", "ENTRIES", "RANK-SEC", "AMOUNT");
	for (int i = 0; i < g->n; i++) {
		struct group *s = &g->slots[i];
		char t0[32], t1[32], el[32], a[32];

		util_iso8601((uint64_t)s->first_us, t0);
		util_iso8601((uint64_t)s->last_us, t1);
		t0[19] = t1[19] = 0; /* to the second */
		ctl_fmt_money(s->amount_micro / 1e6, a, sizeof(a));
		if (g->by == 'j') {
			ctl_fmt_duration((double)(s->last_us - s->first_us) / 1e6, el, sizeof(el));
			printf("%-24s %-10s %-20s %-20s %9s %5lld %11.1f %12s\n", s->key, s->user, t0,
			       t1, el, s->max_rank + 1, s->rank_s, a);
		} else {
			printf("%-24s %-20s %-20s %9lld %11.1f %12s\n", s->key, t0, t1,
			       (long long)s->entries, s->rank_s, a);
		}
		total += s->amount_micro;
		rank_s += s->rank_s;
	}
	printf("%d %s%s, %.1f rank-seconds, total $%" PRId64 ".%06lld\n", g->n,
	       g->by == 'j' ? "jobs" : g->by == 'u' ? "users" : "days", "", rank_s,
	       total / 1000000, llabs(total % 1000000));
	if (g->dropped)
		printf("(%d entries in groups beyond the first %d are not shown)\n", g->dropped,
		       GROUP_SLOTS / 2);
}

/* "2024-01-31", "2024-01-31T12:00[:00]" (UTC), "now", or "3d"/"12h"/"30m"
 * ago; microseconds since the epoch, or -EINVAL. */
static int parse_when(const char *s, int64_t *out)
{
	int64_t now = (int64_t)util_wall_us();
	struct tm tm = {0};
	char *end;
	long long n;

	if (!strcmp(s, "now")) {
		*out = now;
		return 0;
	}
	n = strtoll(s, &end, 10);
	if (end != s && n >= 0 && n < 100000 && end[0] && !end[1] && strchr("dhm", end[0])) {
		*out = now - n * (end[0] == 'd' ? 86400 : end[0] == 'h' ? 3600 : 60) * 1000000LL;
		return 0;
	}
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end && *end == 'T')
		end = strptime(end + 1, "%H:%M", &tm);
	if (end && *end == ':')
		end = strptime(end + 1, "%S", &tm);
	if (!end || *end) {
		fprintf(stderr, "bursarctl: cannot read the time '%s' (YYYY-MM-DD[THH:MM[:SS]] "
			"UTC, now, or Nd/Nh/Nm ago)\n", s);
		return -EINVAL;
	}
	*out = (int64_t)timegm(&tm) * 1000000LL;
	return 0;
}

int cmd_ledger(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"job", required_argument, NULL, 'j'},
		{"tenant", required_argument, NULL, 't'},
		{"format", required_argument, NULL, 'f'},
		{"limit", required_argument, NULL, 'l'},
		{"user", required_argument, NULL, 'u'},
		{"by", required_argument, NULL, 'b'},
		{"since", required_argument, NULL, 's'},
		{"until", required_argument, NULL, 'U'},
		{0},
	};
	struct grouping g = {0};
	const char *user = NULL;
	int64_t since = 0, until = INT64_MAX;
	const char *job = NULL, *tenant = NULL, *format = "table";
	long long after = 0, limit = 100000, shown = 0;
	int64_t total_micro = 0;
	json_t *all = json_array();
	int o, r = 0;

	while ((o = getopt_long(argc, argv, "j:t:f:l:u:b:s:U:", opts, NULL)) != -1) {
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
		case 'u':
			user = optarg;
			break;
		case 'b':
			g.by = !strcmp(optarg, "job") ? 'j' : !strcmp(optarg, "user") ? 'u'
			     : !strcmp(optarg, "day") ? 'd' : '?';
			break;
		case 's':
		case 'U':
			if (parse_when(optarg, o == 's' ? &since : &until) < 0) {
				r = -EINVAL;
				goto out;
			}
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
	    (job && !util_valid_name(job, 64)) || (tenant && !util_valid_name(tenant, 64)) ||
	    (user && !util_valid_name(user, 64)) || g.by == '?' || since >= until ||
	    (g.by && strcmp(format, "table"))) {
		fprintf(stderr, "usage: bursarctl ledger [--job J] [--tenant T] [--user U] "
			"[--since WHEN] [--until WHEN] [--by job|user|day | --format "
			"table|csv|json] [--limit N] | ledger verify\n");
		r = -EINVAL;
		goto out;
	}
	if (g.by) {
		g.slots = calloc(GROUP_SLOTS, sizeof(*g.slots));
		if (!g.slots) {
			r = -ENOMEM;
			goto out;
		}
		if (limit == 100000)
			limit = 10000000; /* a summary reads every entry in range */
	}
	if (g.by)
		;
	else if (!strcmp(format, "csv"))
		printf("id,source,seq,job,tenant,user,rank,kind,quantity,unit,amount_micro,"
		       "start_us,end_us,hash\n");
	else if (!strcmp(format, "table"))
		printf("%8s  %-20s %-8s %-8s %-4s %-10s %9s %-7s %12s  %s\n", "ID", "JOB", "TENANT",
		       "USER", "RANK", "KIND", "QTY", "UNIT", "AMOUNT $", "TIME");
	while (shown < limit) {
		char path[640], range[80] = "";
		json_t *page, *e, *next;
		size_t i;
		long long n = limit - shown < 10000 ? limit - shown : 10000;

		if (since > 0)
			snprintf(range, sizeof(range), "&from_us=%lld", (long long)since);
		if (until < INT64_MAX)
			snprintf(range + strlen(range), sizeof(range) - strlen(range), "&to_us=%lld",
				 (long long)until);
		snprintf(path, sizeof(path), "/api/v1/ledger?after=%lld&limit=%lld%s%s%s%s%s%s%s",
			 after, n, job ? "&job=" : "", job ? job : "", tenant ? "&tenant=" : "",
			 tenant ? tenant : "", user ? "&user=" : "", user ? user : "", range);
		r = ctl_call(c, "GET", path, NULL, &page);
		if (r < 0)
			goto out;
		json_array_foreach(json_object_get(page, "entries"), i, e) {
			int64_t t = (int64_t)num(e, "start_us");

			/* the same filters again here: an older console ignores them */
			if (t < since || t >= until || (user && strcmp(str(e, "user"), user)))
				continue;
			total_micro += (int64_t)num(e, "amount_micro");
			if (g.by)
				group_add(&g, e);
			else if (!strcmp(format, "json"))
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
	if (g.by) {
		group_print(&g);
	} else if (!strcmp(format, "json")) {
		json_dumpf(all, stdout, JSON_INDENT(2));
		printf("\n");
	} else if (!strcmp(format, "table")) {
		printf("%lld entries, total $%" PRId64 ".%06" PRId64 "\n", shown,
		       total_micro / 1000000, total_micro % 1000000);
	}
out:
	free(g.slots);
	json_decref(all);
	return r;
}

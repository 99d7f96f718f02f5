/* bursarctl — the command line for users and operators. main() only: global
 * options, the command table, and the one HTTP call helper every command uses.
 * It speaks consoled's public API and nothing else. */
#include "ctl.h"
#include "hclient.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
	"usage: bursarctl [--url URL] [--token TOKEN] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  submit BUNDLE [--name N] [--set KEY=VALUE]... [--watch]\n"
	"                          upload a bundle (directory or tar/tar.gz/tar.zst) and start a job\n"
	"  estimate BUNDLE_DIR|BUNDLE_ID [--set KEY=VALUE]... [--format table|json]\n"
	"                          price a bundle without submitting it\n"
	"  jobs [--state S] [--all] list your tenant's jobs (newest 500; S: active, queued...)\n"
	"  bundles [rm BUNDLE_ID]  your tenant's uploaded bundles, or delete one (not while a\n"
	"                          queued or running job uses it)\n"
	"  watch JOB               follow a job's progress until it ends\n"
	"  cancel JOB              cancel a queued or running job\n"
	"  bill JOB [--format table|json]\n"
	"                          predicted vs metered cost and line items\n"
	"  ledger [--job J] [--tenant T] [--user U] [--since WHEN] [--until WHEN]\n"
	"         [--by job|user|day | --format table|csv|json] [--limit N]\n"
	"                          ledger entries, or one row per job, user or UTC day\n"
	"  ledger verify           walk the ledger's hash chain\n"
	"  balance [--tenant T]    credits, spent, reserved and available budget\n"
	"  credit TENANT AMOUNT [--note N]\n"
	"                          add dollars to a tenant's budget (operator)\n"
	"  rates [--set CLASS=USD_PER_RANK_HOUR]... [--set kwh=USD]\n"
	"                          show the prices; --set adds a version (operator)\n"
	"  nodes [--format table|json]\n"
	"                          the cluster's nodes: class, devices, slots in use, speed,\n"
	"                          efficiency, memory, state, and slots per class (operator)\n"
	"  nodes reprobe NODE      ask a node to measure its speed again (operator)\n"
	"\n"
	"environment: BURSAR_URL (default http://127.0.0.1:8080), BURSAR_TOKEN\n";

int ctl_call(struct ctl *c, const char *method, const char *path, json_t *body, json_t **resp)
{
	json_t *j = NULL;
	long status = 0;
	int r;

	r = hclient_json(c->url, method, path, c->token, body, c->timeout_ms, &status, &j);
	if (r < 0) {
		fprintf(stderr, "bursarctl: cannot reach %s: %s\n", c->url, hclient_strerror(r));
		return r;
	}
	if (status / 100 != 2) {
		const char *e = json_string_value(json_object_get(j, "error"));

		fprintf(stderr, "bursarctl: %s %s: %s (HTTP %ld)\n", method, path,
			e ? e : "request failed", status);
		json_decref(j);
		return status == 404 ? -ENOENT : status == 401 ? -EACCES : -EIO;
	}
	if (!j)
		j = json_object();
	*resp = j;
	return 0;
}

void ctl_fmt_duration(double s, char *buf, size_t len)
{
	long t = s < 0 ? 0 : (long)(s + 0.5);

	if (t >= 3600)
		snprintf(buf, len, "%ldh%02ldm", t / 3600, t % 3600 / 60);
	else if (t >= 60)
		snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
	else
		snprintf(buf, len, "%lds", t);
}

void ctl_fmt_money(double usd, char *buf, size_t len)
{
	/* Cents hide small jobs: show four significant digits below $10. */
	if (usd != 0 && usd < 0.01 && usd > -0.01)
		snprintf(buf, len, "$%.6f", usd);
	else if (usd < 10 && usd > -10)
		snprintf(buf, len, "$%.4f", usd);
	else
		snprintf(buf, len, "$%.2f", usd);
}

static const struct {
	const char *name;
	int (*fn)(struct ctl *c, int argc, char **argv);
} commands[] = {
	{"submit", cmd_submit}, {"jobs", cmd_jobs},  {"watch", cmd_watch},
	{"cancel", cmd_cancel}, {"bill", cmd_bill}, {"ledger", cmd_ledger},
	{"estimate", cmd_estimate}, {"balance", cmd_balance}, {"credit", cmd_credit},
	{"rates", cmd_rates}, {"nodes", cmd_nodes}, {"bundles", cmd_bundles},
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},
		{"token", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct ctl c = {
		.url = getenv("BURSAR_URL") ? getenv("BURSAR_URL") : "http://127.0.0.1:8080",
		.token = getenv("BURSAR_TOKEN"),
		.timeout_ms = 60000,
	};
	int o, r;

	log_init("bursarctl");
	/* '+': stop at the command so its own options are left to it. */
	while ((o = getopt_long(argc, argv, "+u:t:h", opts, NULL)) != -1) {
		switch (o) {
		case 'u':
			c.url = optarg;
			break;
		case 't':
			c.token = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	if (!c.token) {
		fprintf(stderr, "bursarctl: no token: pass --token or set BURSAR_TOKEN\n");
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name))
			continue;
		argc -= optind;
		argv += optind;
		optind = 0; /* 0: a full rescan (GNU getopt keeps state otherwise) */
		r = commands[i].fn(&c, argc, argv);
		curl_global_cleanup();
		return r == -EINVAL ? 2 : r < 0 ? 1 : r;
	}
	fprintf(stderr, "bursarctl: unknown command '%s'\n\n%s", argv[optind], usage);
	return 2;
}

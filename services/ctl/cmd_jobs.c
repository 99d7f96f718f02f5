/* cmd_jobs — submit, jobs, watch, cancel: the job side of bursarctl. */
#include "ctl.h"
#include "hclient.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int is_final(const char *state)
{
	return state && (!strcmp(state, "succeeded") || !strcmp(state, "failed") ||
			 !strcmp(state, "cancelled"));
}

/* Parses KEY=VALUE; VALUE is JSON when it parses as JSON, else a string. */
int ctl_set_override(json_t *ov, const char *kv)
{
	const char *eq = strchr(kv, '=');
	char key[128];
	json_t *v;

	if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof(key)) {
		fprintf(stderr, "bursarctl: --set needs KEY=VALUE, got '%s'\n", kv);
		return -EINVAL;
	}
	snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
	v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
	if (!v)
		v = json_string(eq + 1);
	json_object_set_new(ov, key, v);
	return 0;
}

/* Uploads path (a directory is packed first) and returns the bundle id. */
static int upload_bundle(struct ctl *c, const char *path, char *id, size_t idlen)
{
	char tmp[] = "/tmp/bursarctl-XXXXXX", qpath[512], namebuf[PATH_MAX];
	const char *file = path, *name;
	json_t *resp = NULL;
	struct stat st;
	long status = 0;
	char *esc;
	int r, fd;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "bursarctl: cannot open bundle '%s': %s\n", path, strerror(errno));
		return -errno;
	}
	snprintf(namebuf, sizeof(namebuf), "%s", path);
	name = basename(namebuf);
	if (S_ISDIR(st.st_mode)) {
		fd = mkstemp(tmp);
		if (fd < 0)
			return -errno;
		close(fd);
		r = ctl_pack_dir(path, tmp);
		if (r < 0) {
			fprintf(stderr, "bursarctl: cannot pack '%s': %s\n", path, strerror(-r));
			goto out_unlink;
		}
		file = tmp;
	}
	esc = curl_easy_escape(NULL, name, 0);
	snprintf(qpath, sizeof(qpath), "/api/v1/bundles?name=%s", esc ? esc : "bundle");
	curl_free(esc);
	r = hclient_upload(c->url, "POST", qpath, c->token, file, "application/octet-stream",
			   600000, &status, &resp);
	if (r < 0) {
		fprintf(stderr, "bursarctl: cannot upload to %s: %s\n", c->url, hclient_strerror(r));
		goto out_unlink;
	}
	if (status != 201) {
		const char *e = json_string_value(json_object_get(resp, "error"));

		fprintf(stderr, "bursarctl: upload rejected: %s (HTTP %ld)\n", e ? e : "?", status);
		r = -EINVAL;
		goto out_decref;
	}
	snprintf(id, idlen, "%s", json_string_value(json_object_get(resp, "id")));
	printf("bundle %s uploaded (%lld bytes, %lld files)\n", id,
	       (long long)json_integer_value(json_object_get(resp, "size")),
	       (long long)json_integer_value(json_object_get(resp, "files")));
	r = 0;
out_decref:
	json_decref(resp);
out_unlink:
	if (file == tmp)
		unlink(tmp);
	return r;
}

int cmd_submit(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"name", required_argument, NULL, 'n'},
		{"set", required_argument, NULL, 's'},
		{"watch", no_argument, NULL, 'w'},
		{0},
	};
	json_t *ov = json_object(), *req, *job = NULL;
	const char *name = NULL;
	char bundle[64], *watch_argv[3];
	int o, r, watch = 0;

	while ((o = getopt_long(argc, argv, "n:s:w", opts, NULL)) != -1) {
		switch (o) {
		case 'n':
			name = optarg;
			break;
		case 's':
			if (ctl_set_override(ov, optarg) < 0)
				goto out_einval;
			break;
		case 'w':
			watch = 1;
			break;
		default:
			goto out_einval;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: bursarctl submit BUNDLE [--name N] [--set K=V]... [--watch]\n");
		goto out_einval;
	}
	r = upload_bundle(c, argv[optind], bundle, sizeof(bundle));
	if (r < 0)
		goto out_decref;
	req = json_pack("{s:s, s:O}", "bundle", bundle, "overrides", ov);
	if (name)
		json_object_set_new(req, "name", json_string(name));
	r = ctl_call(c, "POST", "/api/v1/jobs", req, &job);
	json_decref(req);
	if (r < 0)
		goto out_decref;
	printf("job %s: %s\n", json_string_value(json_object_get(job, "id")),
	       json_string_value(json_object_get(job, "state")));
	{
		json_t *est = json_object_get(job, "estimate");
		const char *why = json_string_value(json_object_get(job, "reason"));
		const char *ex = json_string_value(json_object_get(est, "explain"));

		if (ex)
			printf("  estimate: %s\n", ex);
		if (why)
			printf("  %s\n", why);
	}
	if (watch) {
		watch_argv[0] = "watch";
		watch_argv[1] = (char *)json_string_value(json_object_get(job, "id"));
		watch_argv[2] = NULL;
		optind = 0; /* 0: a full rescan (GNU getopt keeps state otherwise) */
		r = cmd_watch(c, 2, watch_argv);
	}
out_decref:
	json_decref(job);
	json_decref(ov);
	return r;
out_einval:
	json_decref(ov);
	return -EINVAL;
}

static double num(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Prints one page of the job list; *before: the next page's cursor (0: none). */
static int jobs_page(struct ctl *c, const char *state, long long *before)
{
	json_t *resp, *job;
	char path[128];
	size_t i;
	int r;

	snprintf(path, sizeof(path), "/api/v1/jobs?limit=500%s%s", state ? "&state=" : "",
		 state ? state : "");
	if (*before)
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "&before=%lld", *before);
	r = ctl_call(c, "GET", path, NULL, &resp);
	if (r < 0)
		return r;
	json_array_foreach(json_object_get(resp, "jobs"), i, job) {
		json_t *p = json_object_get(job, "progress");
		json_t *e = json_object_get(job, "estimate");
		char step[32] = "-", loss[16] = "-", tps[16] = "-", est[24] = "-";

		if (!isnan(num(p, "step")))
			snprintf(step, sizeof(step), "%.0f/%.0f", num(p, "step"), num(p, "steps"));
		if (!isnan(num(p, "loss")))
			snprintf(loss, sizeof(loss), "%.4f", num(p, "loss"));
		if (!isnan(num(p, "tokens_per_s")))
			snprintf(tps, sizeof(tps), "%.0f", num(p, "tokens_per_s"));
		if (!isnan(num(e, "amount")))
			ctl_fmt_money(num(e, "amount"), est, sizeof(est));
		printf("%-20s %-10s %5lld %11s %8s %9s %9s  %s\n",
		       json_string_value(json_object_get(job, "id")),
		       json_string_value(json_object_get(job, "state")),
		       (long long)json_integer_value(json_object_get(job, "ranks")), step, loss, tps,
		       est, json_string_value(json_object_get(job, "name")) ?: "");
	}
	*before = json_integer_value(json_object_get(resp, "next_before"));
	json_decref(resp);
	return 0;
}

int cmd_jobs(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {{"state", required_argument, NULL, 's'},
					     {"all", no_argument, NULL, 'a'},
					     {0}};
	const char *state = NULL;
	long long before = 0;
	int r, o, all = 0, pages = 0;

	while ((o = getopt_long(argc, argv, "s:a", opts, NULL)) != -1) {
		if (o == 's' && *optarg && strlen(optarg) <= 16 &&
		    strspn(optarg, "abcdefghijklmnopqrstuvwxyz") == strlen(optarg)) {
			state = optarg;
		} else if (o == 'a') {
			all = 1;
		} else {
			optind = argc + 1;
			break;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "usage: bursarctl jobs [--state active|queued|running|paused|"
				"succeeded|failed|cancelled] [--all]\n");
		return -EINVAL;
	}
	printf("%-20s %-10s %5s %11s %8s %9s %9s  %s\n", "JOB", "STATE", "RANKS", "STEP", "LOSS",
	       "TOK/S", "EST", "NAME");
	/* the newest 500; --all: every page, following next_before */
	do {
		r = jobs_page(c, state, &before);
		if (r < 0)
			return r;
	} while (all && before && ++pages < 100000);
	if (before && !all)
		printf("(older jobs: bursarctl jobs --all%s%s)\n", state ? " --state " : "",
		       state ? state : "");
	return 0;
}

/* One progress line: bar, step, loss, throughput, ETA, state. */
static void render(json_t *job, char *line, size_t len)
{
	json_t *p = json_object_get(job, "progress");
	double step = num(p, "step"), steps = num(p, "steps"), eta = num(p, "eta_s");
	const char *state = json_string_value(json_object_get(job, "state"));
	char bar[32], etas[16] = "-";
	int fill = 0;

	if (!isnan(step) && steps > 0)
		fill = (int)(24 * step / steps);
	for (int i = 0; i < 24; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[24] = 0;
	if (!isnan(eta))
		ctl_fmt_duration(eta, etas, sizeof(etas));
	if (isnan(step))
		snprintf(line, len, "[%s] %-9s %s", bar, state ? state : "?",
			 json_string_value(json_object_get(job, "reason")) ?: "");
	else
		snprintf(line, len, "[%s] step %4.0f/%-4.0f loss %.4f  %7.0f tok/s  ETA %-6s %s%s%s",
			 bar, step, steps, num(p, "loss"), num(p, "tokens_per_s"), etas,
			 state ? state : "?",
			 /* paused, queued again after preemption: say why */
			 state && strcmp(state, "running") && json_string_value(
				 json_object_get(job, "reason")) ? ": " : "",
			 state && strcmp(state, "running") ? json_string_value(json_object_get(
				 job, "reason")) ?: "" : "");
}

int cmd_watch(struct ctl *c, int argc, char **argv)
{
	char path[256], line[512], last[512] = "";
	int tty = isatty(STDOUT_FILENO), failures = 0;
	uint64_t last_print = 0;

	if (argc != 2 || !util_valid_name(argv[1], 64)) {
		fprintf(stderr, "usage: bursarctl watch JOB\n");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/api/v1/jobs/%s", argv[1]);
	for (;;) {
		json_t *job = NULL;
		const char *state;
		int r = ctl_call(c, "GET", path, NULL, &job);

		if (r == -ENOENT || r == -EACCES)
			return r;
		if (r < 0) {
			/* consoled restarting: keep trying for a while. */
			if (++failures > 30)
				return r;
			sleep(1);
			continue;
		}
		failures = 0;
		render(job, line, sizeof(line));
		state = json_string_value(json_object_get(job, "state"));
		if (tty) {
			printf("\r\033[K%s", line);
			fflush(stdout);
		} else if (strcmp(line, last) && (util_now_us() - last_print > 5000000 ||
						  is_final(state))) {
			printf("%s\n", line);
			fflush(stdout);
			last_print = util_now_us();
		}
		snprintf(last, sizeof(last), "%s", line);
		if (is_final(state)) {
			const char *err = json_string_value(json_object_get(job, "error"));
			int ok = !strcmp(state, "succeeded");

			if (tty)
				printf("\n");
			printf("job %s %s%s%s\n", argv[1], state, err ? ": " : "", err ? err : "");
			json_decref(job);
			return ok ? 0 : 1;
		}
		json_decref(job);
		usleep(tty ? 500000 : 1000000);
	}
}

int cmd_cancel(struct ctl *c, int argc, char **argv)
{
	char path[256];
	json_t *job;
	int r;

	if (argc != 2 || !util_valid_name(argv[1], 64)) {
		fprintf(stderr, "usage: bursarctl cancel JOB\n");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", argv[1]);
	r = ctl_call(c, "POST", path, NULL, &job);
	if (r < 0)
		return r;
	printf("job %s: %s\n", argv[1], json_string_value(json_object_get(job, "state")));
	json_decref(job);
	return 0;
}

/* bundles [rm ID]: the tenant's uploaded bundles, or delete one. */
int cmd_bundles(struct ctl *c, int argc, char **argv)
{
	json_t *resp, *b;
	char path[160], sz[32];
	size_t i;
	int r;

	if (argc == 3 && !strcmp(argv[1], "rm")) {
		if (!util_valid_name(argv[2], 64)) {
			fprintf(stderr, "bursarctl: '%s' is not a bundle id\n", argv[2]);
			return -EINVAL;
		}
		snprintf(path, sizeof(path), "/api/v1/bundles/%s", argv[2]);
		r = ctl_call(c, "DELETE", path, NULL, &resp);
		if (r < 0)
			return r;
		json_decref(resp);
		printf("bundle %s deleted\n", argv[2]);
		return 0;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: bursarctl bundles [rm BUNDLE_ID]\n");
		return -EINVAL;
	}
	r = ctl_call(c, "GET", "/api/v1/bundles", NULL, &resp);
	if (r < 0)
		return r;
	printf("%-20s %10s %7s  %s\n", "BUNDLE", "SIZE", "FILES", "NAME");
	json_array_foreach(json_object_get(resp, "bundles"), i, b) {
		util_fmt_bytes((uint64_t)json_integer_value(json_object_get(b, "bytes")), sz,
			       sizeof(sz));
		printf("%-20s %10s %7lld  %s\n", json_string_value(json_object_get(b, "id")), sz,
		       (long long)json_integer_value(json_object_get(b, "files")),
		       json_string_value(json_object_get(b, "name")) ?: "");
	}
	json_decref(resp);
	return 0;
}

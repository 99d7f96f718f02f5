/* cmd_nodes — `bursarctl nodes [--format table|json]` and
 * `bursarctl nodes reprobe NODE`: the operator's view of the cluster (one row
 * per node: class, devices, slots in use, measured speed, learned efficiency,
 * memory and state; then the slots per class) and asking a node to measure
 * itself again. Everything comes from consoled's /api/v1/nodes; this file
 * only formats it and never guesses a value the node has not reported. */
#include "ctl.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define CTL_NODE_ID_MAX 128 /* as admitd takes them */

struct node_row {
	char id[80], cls[48], dev[96], slots[24], speed[24], eff[32], mem[24];
	const char *state;
};

/* Speed per slot in TFLOP/s with 3 significant digits ("989", "12.0", "0.0512"). */
static void fmt_tflops(double flops, char *buf, size_t len)
{
	double t = flops / 1e12;
	int dec;

	if (!(t > 0) || !isfinite(t)) {
		snprintf(buf, len, "-");
		return;
	}
	dec = 2 - (int)floor(log10(t));
	snprintf(buf, len, "%.*f", dec < 0 ? 0 : dec > 9 ? 9 : dec, t);
}

static void fmt_bytes(json_t *v, char *buf, size_t len)
{
	double b = json_number_value(v);

	if (!json_is_number(v) || b <= 0)
		snprintf(buf, len, "-");
	else if (b >= 1024.0 * 1024 * 1024)
		snprintf(buf, len, "%.1f GiB", b / (1024.0 * 1024 * 1024));
	else
		snprintf(buf, len, "%.0f MiB", b / (1024.0 * 1024));
}

static int is_cuda(json_t *n)
{
	const char *d = json_string_value(json_object_get(n, "device"));

	return d && !strcmp(d, "cuda");
}

/* The columns of one node, as text. */
static void node_row(json_t *n, struct node_row *r)
{
	json_t *gpus = json_object_get(n, "gpus");
	const char *s;
	long long jobs = json_integer_value(json_object_get(n, "efficiency_jobs"));

	snprintf(r->id, sizeof(r->id), "%s", json_string_value(json_object_get(n, "id")) ?: "?");
	snprintf(r->cls, sizeof(r->cls), "%s",
		 json_string_value(json_object_get(n, "class")) ?: "-");
	s = json_string_value(json_object_get(json_array_get(gpus, 0), "name"));
	if (!is_cuda(n))
		snprintf(r->dev, sizeof(r->dev), "%s",
			 json_string_value(json_object_get(n, "device")) ?: "cpu");
	else if (s)
		snprintf(r->dev, sizeof(r->dev), "%zux %s", json_array_size(gpus), s);
	else
		snprintf(r->dev, sizeof(r->dev), "cuda (GPUs not reported yet)");
	snprintf(r->slots, sizeof(r->slots), "%lld/%lld",
		 (long long)json_integer_value(json_object_get(n, "used")),
		 (long long)json_integer_value(json_object_get(n, "slots")));
	fmt_tflops(json_number_value(json_object_get(n, "flops_per_slot")), r->speed,
		   sizeof(r->speed));
	if (jobs > 0)
		snprintf(r->eff, sizeof(r->eff), "%.2f (%lld job%s)",
			 json_number_value(json_object_get(n, "efficiency")), jobs,
			 jobs == 1 ? "" : "s");
	else
		snprintf(r->eff, sizeof(r->eff), "%.2f (no jobs yet)",
			 json_number_value(json_object_get(n, "efficiency")));
	fmt_bytes(json_object_get(n, "mem_bytes"), r->mem, sizeof(r->mem));
	if (json_is_true(json_object_get(n, "down")))
		r->state = "down";
	else if (json_is_true(json_object_get(n, "reprobe_pending")) ||
		 json_is_null(json_object_get(n, "probed_us")))
		r->state = "probing";
	else
		r->state = "up";
}

static int width(int w, const char *s)
{
	int n = (int)strlen(s);

	return n > w ? n : w;
}

/* "cpu: 4 slots, 2 in use; h100: 8 GPU slots, 0 in use", classes in the
 * order they first appear (nodes come sorted by id). */
static void print_totals(json_t *nodes)
{
	json_t *by = json_object(), *n, *t;
	const char *k;
	size_t i;
	int first = 1;

	if (!by)
		return;
	json_array_foreach(nodes, i, n) {
		const char *cls = json_string_value(json_object_get(n, "class")) ?: "-";

		t = json_object_get(by, cls);
		if (!t) {
			t = json_pack("{s:I, s:I, s:b}", "slots", (json_int_t)0, "used",
				      (json_int_t)0, "gpu", is_cuda(n));
			if (!t || json_object_set_new(by, cls, t) < 0)
				break;
		}
		json_object_set_new(t, "slots",
				    json_integer(json_integer_value(json_object_get(t, "slots")) +
						 json_integer_value(json_object_get(n, "slots"))));
		json_object_set_new(t, "used",
				    json_integer(json_integer_value(json_object_get(t, "used")) +
						 json_integer_value(json_object_get(n, "used"))));
	}
	json_object_foreach(by, k, t) {
		printf("%s%s: %lld %sslots, %lld in use", first ? "" : "; ", k,
		       (long long)json_integer_value(json_object_get(t, "slots")),
		       json_is_true(json_object_get(t, "gpu")) ? "GPU " : "",
		       (long long)json_integer_value(json_object_get(t, "used")));
		first = 0;
	}
	printf("%s\n", first ? "no nodes have registered yet" : "");
	json_decref(by);
}

static void print_nodes(json_t *nodes)
{
	int wi = 4, wc = 5, wd = 6;
	struct node_row r;
	json_t *n;
	size_t i;

	json_array_foreach(nodes, i, n) {
		node_row(n, &r);
		wi = width(wi, r.id);
		wc = width(wc, r.cls);
		wd = width(wd, r.dev);
	}
	printf("%-*s %-*s %-*s %7s %8s  %-18s %10s  %s\n", wi, "NODE", wc, "CLASS", wd, "DEVICE",
	       "SLOTS", "TFLOP/S", "EFFICIENCY", "MEMORY", "STATE");
	json_array_foreach(nodes, i, n) {
		node_row(n, &r);
		printf("%-*s %-*s %-*s %7s %8s  %-18s %10s  %s\n", wi, r.id, wc, r.cls, wd, r.dev,
		       r.slots, r.speed, r.eff, r.mem, r.state);
	}
	print_totals(nodes);
}

/* bursarctl nodes reprobe NODE */
static int nodes_reprobe(struct ctl *c, int argc, char **argv)
{
	char path[CTL_NODE_ID_MAX + 32];
	json_t *resp;
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: bursarctl nodes reprobe NODE   (operator)\n");
		return -EINVAL;
	}
	if (!util_valid_name(argv[1], CTL_NODE_ID_MAX)) {
		fprintf(stderr,
			"bursarctl: '%s' is not a node id (1-%d characters of "
			"A-Za-z0-9_.-); `bursarctl nodes` lists them\n",
			argv[1], CTL_NODE_ID_MAX);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/api/v1/nodes/%s/reprobe", argv[1]);
	r = ctl_call(c, "POST", path, NULL, &resp);
	if (r == -ENOENT)
		fprintf(stderr,
			"bursarctl: `bursarctl nodes` lists the nodes that have registered\n");
	if (r < 0)
		return r;
	printf("node %s will measure itself again at its next heartbeat (state: probing)\n",
	       argv[1]);
	json_decref(resp);
	return 0;
}

int cmd_nodes(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {{"format", required_argument, NULL, 'f'}, {0}};
	const char *format = "table";
	json_t *resp, *nodes;
	int o, r;

	if (argc >= 2 && !strcmp(argv[1], "reprobe"))
		return nodes_reprobe(c, argc - 1, argv + 1);
	while ((o = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
		if (o != 'f')
			goto out_usage;
		format = optarg;
		if (strcmp(format, "table") && strcmp(format, "json")) {
			fprintf(stderr, "bursarctl: --format must be table or json\n");
			return -EINVAL;
		}
	}
	if (optind != argc)
		goto out_usage;
	r = ctl_call(c, "GET", "/api/v1/nodes", NULL, &resp);
	if (r < 0)
		return r;
	nodes = json_object_get(resp, "nodes");
	if (!strcmp(format, "json")) {
		json_dumpf(resp, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		print_nodes(nodes);
	}
	json_decref(resp);
	return 0;
out_usage:
	fprintf(stderr, "usage: bursarctl nodes [--format table|json]   (operator)\n"
			"       bursarctl nodes reprobe NODE\n");
	return -EINVAL;
}

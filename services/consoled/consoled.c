/* bursar-consoled — the web console and REST API in front of admitd and
 * ledgerd. This file only parses arguments, prepares the state directory,
 * and runs the loop; `adduser` is the one-shot subcommand that creates a
 * user and prints its token. Logic lives in auth.c, upload.c, bundles.c,
 * api.c and files.c. */
#include "consoled.h"
#include "db.h"
#include "httpd.h"
#include "log.h"
#include "svc.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CONSOLED_WWW
#define CONSOLED_WWW "/usr/share/bursar/www"
#endif

static void usage(FILE *f)
{
	fprintf(f, "usage: bursar-consoled --state DIR [--listen ADDR]... [--admitd ADDR] "
		   "[--ledgerd ADDR]\n"
		   "                       [--www DIR] [--max-upload SIZE] [--max-bundle-bytes SIZE]\n"
		   "                       [--max-files N] [--max-tenant-bytes SIZE] [--port-file PATH] [-v]\n"
		   "       bursar-consoled adduser --state DIR --tenant T --user U "
		   "[--role user|operator] [--token TOKEN]\n"
		   "ADDR: 127.0.0.1:8080 (default), tcp:HOST:PORT or unix:/path.sock; peers: "
		   "unix:/path.sock or http://host:port\n");
}

static int parse_size_arg(const char *opt, const char *v, uint64_t lo, uint64_t *out)
{
	if (util_parse_size(v, out) < 0 || *out < lo) {
		log_err("invalid %s '%s': want a size >= %llu (K/M/G suffixes allowed)", opt, v,
			(unsigned long long)lo);
		return -EINVAL;
	}
	return 0;
}

static int cmd_adduser(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state", 1, 0, 's'}, {"tenant", 1, 0, 't'}, {"user", 1, 0, 'u'},
		{"role", 1, 0, 'r'}, {"token", 1, 0, 'k'}, {0, 0, 0, 0},
	};
	const char *state = NULL, *tenant = NULL, *user = NULL, *role = "user", *token = NULL;
	char gen[65], err[512];
	sqlite3 *db;
	int o, r;

	log_init("bursar-consoled");
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 's': state = optarg; break;
		case 't': tenant = optarg; break;
		case 'u': user = optarg; break;
		case 'r': role = optarg; break;
		case 'k': token = optarg; break;
		default: usage(stderr); return 2;
		}
	}
	if (!state || !tenant || !user) {
		fprintf(stderr, "adduser: --state, --tenant and --user are required\n");
		usage(stderr);
		return 2;
	}
	if (!token) {
		if (util_random_hex(gen, 32) < 0) {
			fprintf(stderr, "adduser: cannot generate a token\n");
			return 1;
		}
		token = gen;
	}
	r = auth_db_open(state, &db);
	if (r < 0) {
		fprintf(stderr, "adduser: cannot open %s/consoled.db: %s\n", state, strerror(-r));
		return 1;
	}
	r = auth_add_user(db, tenant, user, role, token, err, sizeof(err));
	db_close(db);
	if (r < 0) {
		fprintf(stderr, "adduser: %s\n", err);
		return 1;
	}
	printf("%s\n", token);
	return 0;
}

/* Removes what a crash may have left: half-extracted bundles, upload bodies. */
static void clean_leftovers(const char *dir, const char *prefix)
{
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		char p[PATH_MAX];

		if (strncmp(de->d_name, prefix, strlen(prefix)) || !strcmp(de->d_name, ".") ||
		    !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		log_info("removing leftover %s", p);
		util_rm_rf(p);
	}
	closedir(d);
}

static int prepare_state(struct console *c, const char *state)
{
	char abs[PATH_MAX];
	int r = util_mkdir_p(state);

	if (r < 0 || !realpath(state, abs))
		return log_err_errno(r < 0 ? r : -errno, "cannot create state directory %s", state);
	snprintf(c->bundles_dir, sizeof(c->bundles_dir), "%s/bundles", abs);
	snprintf(c->uploads_dir, sizeof(c->uploads_dir), "%s/uploads", abs);
	snprintf(c->state_abs, sizeof(c->state_abs), "%s", abs);
	if ((r = util_mkdir_p(c->bundles_dir)) < 0 || (r = util_mkdir_p(c->uploads_dir)) < 0)
		return log_err_errno(r, "cannot create %s or %s", c->bundles_dir, c->uploads_dir);
	clean_leftovers(c->bundles_dir, ".partial-");
	clean_leftovers(c->uploads_dir, ".upload-"); /* common/httpd.c's body files */
	clean_leftovers(c->uploads_dir, ".ledger-");
	r = auth_db_open(abs, &c->db);
	if (r < 0)
		return log_err_errno(r, "cannot open %s/consoled.db", abs);
	return 0;
}

static int write_port_file(struct httpd *h, int n_listen, const char *path)
{
	char buf[32];

	for (int i = 0; i < n_listen; i++) {
		int port = httpd_port(h, i);

		if (port > 0) {
			int n = snprintf(buf, sizeof(buf), "%d\n", port);
			int r = util_write_file_atomic(path, buf, n);

			return r < 0 ? log_err_errno(r, "cannot write port file %s", path) : 0;
		}
	}
	log_err("--port-file %s: no TCP listener", path);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state", 1, 0, 's'}, {"listen", 1, 0, 'l'}, {"admitd", 1, 0, 'a'},
		{"ledgerd", 1, 0, 'L'}, {"www", 1, 0, 'w'}, {"max-upload", 1, 0, 'U'},
		{"max-bundle-bytes", 1, 0, 'B'}, {"max-files", 1, 0, 'F'},
		{"max-tenant-bytes", 1, 0, 'T'},
		{"port-file", 1, 0, 'p'}, {"verbose", 0, 0, 'v'}, {"help", 0, 0, 'h'},
		{0, 0, 0, 0},
	};
	struct console c = {.www = CONSOLED_WWW, .max_upload = 1ull << 30,
			    .max_bundle = 4ull << 30, .max_tenant = 64ull << 30, .max_files = 10000};
	const char *listen[CONSOLE_MAX_LISTEN], *state = NULL, *port_file = NULL;
	char admitd[4200], ledgerd[4200];
	struct httpd_route routes[API_MAX_ROUTES];
	struct httpd *h = NULL;
	struct svc svc = {0};
	int n_listen = 0, o, r;

	if (argc > 1 && !strcmp(argv[1], "adduser"))
		return cmd_adduser(argc - 1, argv + 1);
	log_init("bursar-consoled");
	while ((o = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (o) {
		case 's': state = optarg; break;
		case 'l':
			if (n_listen >= CONSOLE_MAX_LISTEN) {
				log_err("too many --listen addresses (limit %d)", CONSOLE_MAX_LISTEN);
				return 2;
			}
			listen[n_listen++] = optarg;
			break;
		case 'a': c.admitd = optarg; break;
		case 'L': c.ledgerd = optarg; break;
		case 'w': c.www = optarg; break;
		case 'U': if (parse_size_arg("--max-upload", optarg, 1, &c.max_upload)) return 2; break;
		case 'B': if (parse_size_arg("--max-bundle-bytes", optarg, 1, &c.max_bundle)) return 2; break;
		case 'F': if (parse_size_arg("--max-files", optarg, 1, &c.max_files)) return 2; break;
		case 'T': if (parse_size_arg("--max-tenant-bytes", optarg, 1, &c.max_tenant)) return 2; break;
		case 'p': port_file = optarg; break;
		case 'v': log_set_level(LOG_DEBUG); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!state || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!n_listen)
		listen[n_listen++] = "127.0.0.1:8080";
	c.state = state;
	r = prepare_state(&c, state);
	if (r < 0)
		return 1;
	if (!c.admitd) {
		snprintf(admitd, sizeof(admitd), "unix:%s/run/admitd.sock", c.state_abs);
		c.admitd = admitd;
	}
	if (!c.ledgerd) {
		snprintf(ledgerd, sizeof(ledgerd), "unix:%s/run/ledgerd.sock", c.state_abs);
		c.ledgerd = ledgerd;
	}
	r = svc_setup(&svc, "bursar-consoled");
	if (r < 0) {
		log_err_errno(r, "cannot set up the event loop");
		goto out_db;
	}
	{
		struct httpd_config cfg = {.routes = routes,
					   .n_routes = api_routes(&c, routes, API_MAX_ROUTES),
					   .userdata = &c, .max_body = 1 << 20,
					   /* a quarter of the 256: one client (a slowloris)
					    * cannot hold them all */
					   .max_conns_per_ip = 64, .upload_dir = c.uploads_dir};

		r = httpd_new(svc.ev, &cfg, &h);
		if (r < 0) {
			log_err_errno(r, "cannot create the HTTP server");
			goto out_svc;
		}
	}
	for (int i = 0; i < n_listen; i++) {
		r = httpd_listen(h, listen[i]);
		if (r < 0) {
			log_err_errno(r, "cannot listen on %s", listen[i]);
			goto out_httpd;
		}
		log_info("listening on %s (port %d)", listen[i], httpd_port(h, i));
	}
	if (port_file && (r = write_port_file(h, n_listen, port_file)) < 0)
		goto out_httpd;
	log_info("state %s, admitd %s, ledgerd %s, www %s, max upload %llu bytes", state,
		 c.admitd, c.ledgerd, c.www, (unsigned long long)c.max_upload);
	r = svc_run(&svc, "serving the console");
out_httpd:
	httpd_free(h);
out_svc:
	svc_teardown(&svc);
out_db:
	db_close(c.db);
	return r < 0 ? 1 : 0;
}

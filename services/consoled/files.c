/* files — what consoled serves from disk: the web page (a fixed allowlist of
 * names in the www folder) and the outputs of a job (model.safetensors,
 * config.json, train.log). Names never come from the request unchecked: both
 * sides are allowlists, files are opened with O_NOFOLLOW and must be regular,
 * and the body is streamed from the fd, never read into memory. */
#include "consoled.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct served {
	const char *name;
	const char *ctype;
};

static const struct served www_files[] = {
	{"index.html", "text/html; charset=utf-8"},
	{"app.js", "text/javascript; charset=utf-8"},
	{"style.css", "text/css; charset=utf-8"},
};

/* Streams path as the reply, or replies 404 naming what is missing. */
static void send_file(struct httpd_req *req, const char *path, const char *ctype,
		      const char *download, const char *what)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		if (errno != ENOENT)
			log_warn("cannot open %s: %m", path);
		httpd_reply_error(req, 404, "%s is not available", what);
		return;
	}
	httpd_reply_fd(req, 200, ctype, fd, (uint64_t)st.st_size, download);
}

void files_static(struct console *c, struct httpd_req *req, const char *name)
{
	char path[4400];

	for (size_t i = 0; i < sizeof(www_files) / sizeof(www_files[0]); i++) {
		if (strcmp(name, www_files[i].name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->www, name);
		send_file(req, path, www_files[i].ctype, NULL, name);
		return;
	}
	httpd_reply_error(req, 404, "no such file: '%.80s'", name);
}

void files_job_output(struct console *c, struct httpd_req *req, json_t *job, const char *name)
{
	const char *state = json_string_value(json_object_get(job, "state"));
	const char *out = json_string_value(json_object_get(job, "output_dir"));
	const char *id = json_string_value(json_object_get(job, "id"));
	char path[4400], what[160];
	const char *slash;
	int is_log = !strcmp(name, "train.log");

	if (!is_log && strcmp(name, "model.safetensors") && strcmp(name, "config.json")) {
		httpd_reply_error(req, 404, "no such file: '%.80s' (a job has model.safetensors, "
				  "config.json and train.log)", name);
		return;
	}
	state = state ? state : "unknown";
	if (!is_log && strcmp(state, "succeeded")) {
		httpd_reply_error(req, 404, "%s of job %s is not available: the job is %s (outputs "
				  "exist once it succeeded)", name, id ? id : "?", state);
		return;
	}
	if (!out || out[0] != '/') {
		httpd_reply_error(req, 404, "%s of job %s is not available yet: the job has no "
				  "output directory (state %s)", name, id ? id : "?", state);
		return;
	}
	snprintf(what, sizeof(what), "%s of job %s", name, id ? id : "?");
	if (is_log) {
		/* noded writes DIR/jobs/<job>/train.log beside output_dir DIR/jobs/<job>/out */
		slash = strrchr(out, '/');
		snprintf(path, sizeof(path), "%.*s/train.log", (int)(slash - out), out);
		send_file(req, path, "text/plain; charset=utf-8", NULL, what);
		return;
	}
	snprintf(path, sizeof(path), "%s/%s", out, name);
	send_file(req, path, strcmp(name, "config.json") ? "application/octet-stream" :
		  "application/json", name, what);
}

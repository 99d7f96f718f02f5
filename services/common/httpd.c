/* httpd — libmicrohttpd in external-epoll mode, driven by sd-event.
 *
 * Each listener is one MHD daemon whose epoll fd sits in the daemon's event
 * loop; MHD_run() is called when it is readable and when MHD's own timeout
 * elapses. Bodies are capped (Content-Length checked before any byte is read,
 * streamed bodies counted as they arrive) and either kept in memory or
 * streamed into a temp file for uploads. Never blocks on a slow client.
 */
#include "httpd.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct httpd_listener {
	struct httpd *h;
	struct MHD_Daemon *mhd;
	sd_event_source *io;
	sd_event_source *timer;
	int port;
	char unix_path[108];
};

struct httpd {
	sd_event *ev;
	struct httpd_config cfg;
	char *upload_dir;
	struct httpd_listener ls[HTTPD_MAX_LISTEN];
	int n_ls;
};

struct httpd_req {
	struct httpd *h;
	struct MHD_Connection *conn;
	const struct httpd_route *route;
	char method[16];
	char *path;
	char *args[HTTPD_MAX_ARGS];
	uint64_t cap;
	/* in-memory body */
	char *body;
	size_t len, alloc;
	/* file body */
	int fd;
	char *file;
	uint64_t file_len;
	int too_large; /* body exceeded cap: reply 413 at the end */
	int io_error;
	int replied;
};

static void listener_arm(struct httpd_listener *l);

/* Matches path against pattern, capturing "{}" segments into req->args. */
static int route_match(const char *pattern, const char *path, struct httpd_req *req)
{
	const char *p = pattern, *s = path;
	int na = 0;

	while (*p && *s) {
		if (p[0] == '{' && p[1] == '}') {
			const char *e = strchr(s, '/');
			size_t n = e ? (size_t)(e - s) : strlen(s);

			if (n == 0 || n > 256 || na >= HTTPD_MAX_ARGS)
				goto out_fail;
			if (req) {
				req->args[na] = strndup(s, n);
				if (!req->args[na])
					goto out_fail;
			}
			na++;
			s += n;
			p += 2;
			continue;
		}
		if (*p != *s)
			goto out_fail;
		p++;
		s++;
	}
	if (*p || *s)
		goto out_fail;
	return 1;
out_fail:
	if (req)
		for (int i = 0; i < na; i++) {
			free(req->args[i]);
			req->args[i] = NULL;
		}
	return 0;
}

static void req_free(struct httpd_req *req)
{
	if (!req)
		return;
	if (req->fd >= 0)
		close(req->fd);
	if (req->file) {
		unlink(req->file);
		free(req->file);
	}
	for (int i = 0; i < HTTPD_MAX_ARGS; i++)
		free(req->args[i]);
	free(req->path);
	free(req->body);
	free(req);
}

static void queue(struct httpd_req *req, unsigned status, struct MHD_Response *resp)
{
	if (!resp) {
		log_err("cannot build a response for %s %s", req->method, req->path);
		return;
	}
	if (req->replied) {
		log_err("handler for %s %s replied twice", req->method, req->path);
		MHD_destroy_response(resp);
		return;
	}
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (MHD_queue_response(req->conn, status, resp) != MHD_YES)
		log_warn("cannot queue response %u for %s %s", status, req->method, req->path);
	MHD_destroy_response(resp);
	req->replied = 1;
	if (status >= 500)
		log_warn("%s %s -> %u", req->method, req->path, status);
	else
		log_debug("%s %s -> %u", req->method, req->path, status);
}

void httpd_reply_data(struct httpd_req *req, unsigned status, const char *content_type,
		      const void *data, size_t len)
{
	struct MHD_Response *resp;

	resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
	if (resp && content_type)
		MHD_add_response_header(resp, "Content-Type", content_type);
	queue(req, status, resp);
}

void httpd_reply_json(struct httpd_req *req, unsigned status, json_t *body)
{
	char *s = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));

	json_decref(body);
	if (!s) {
		httpd_reply_data(req, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
		return;
	}
	httpd_reply_data(req, status, "application/json", s, strlen(s));
	free(s);
}

void httpd_reply_error(struct httpd_req *req, unsigned status, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	httpd_reply_json(req, status, json_pack("{s:s}", "error", msg));
}

void httpd_reply_fd(struct httpd_req *req, unsigned status, const char *content_type, int fd,
		    uint64_t size, const char *download_name)
{
	struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);

	if (!resp) {
		close(fd);
		httpd_reply_error(req, 500, "cannot send file");
		return;
	}
	if (content_type)
		MHD_add_response_header(resp, "Content-Type", content_type);
	if (download_name) {
		char cd[300];

		snprintf(cd, sizeof(cd), "attachment; filename=\"%s\"", download_name);
		MHD_add_response_header(resp, "Content-Disposition", cd);
	}
	queue(req, status, resp);
}

const char *httpd_req_method(struct httpd_req *req)
{
	return req->method;
}

const char *httpd_req_path(struct httpd_req *req)
{
	return req->path;
}

const char *httpd_req_arg(struct httpd_req *req, int i)
{
	return i >= 0 && i < HTTPD_MAX_ARGS ? req->args[i] : NULL;
}

const char *httpd_req_query(struct httpd_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *httpd_req_header(struct httpd_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *httpd_req_bearer(struct httpd_req *req)
{
	const char *a = httpd_req_header(req, "Authorization");

	if (!a || strncasecmp(a, "Bearer ", 7))
		return NULL;
	a += 7;
	while (*a == ' ')
		a++;
	return *a ? a : NULL;
}

const char *httpd_req_body(struct httpd_req *req, size_t *len)
{
	if (len)
		*len = req->len;
	return req->body ? req->body : "";
}

const char *httpd_req_body_file(struct httpd_req *req, uint64_t *len)
{
	if (len)
		*len = req->file_len;
	return req->file;
}

json_t *httpd_req_json(struct httpd_req *req)
{
	json_error_t e;
	json_t *j;

	if (req->len == 0) {
		httpd_reply_error(req, 400, "request body is empty; a JSON object is required");
		return NULL;
	}
	j = json_loadb(req->body, req->len, JSON_REJECT_DUPLICATES, &e);
	if (!j) {
		httpd_reply_error(req, 400, "malformed JSON at line %d column %d: %s", e.line,
				  e.column, e.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		httpd_reply_error(req, 400, "request body must be a JSON object");
		return NULL;
	}
	return j;
}

static int body_append(struct httpd_req *req, const char *data, size_t n)
{
	if (req->route->body_to_file) {
		while (n > 0) {
			ssize_t k = write(req->fd, data, n);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -errno;
			data += k;
			n -= k;
			req->file_len += k;
		}
		return 0;
	}
	if (req->len + n + 1 > req->alloc) {
		size_t na = req->alloc ? req->alloc : 4096;
		char *nb;

		while (na < req->len + n + 1)
			na *= 2;
		nb = realloc(req->body, na);
		if (!nb)
			return -ENOMEM;
		req->body = nb;
		req->alloc = na;
	}
	memcpy(req->body + req->len, data, n);
	req->len += n;
	req->body[req->len] = 0;
	return 0;
}

static int open_body_file(struct httpd_req *req)
{
	char name[64], path[4096];
	const char *dir = req->h->upload_dir ? req->h->upload_dir : "/tmp";

	util_random_hex(name, 12);
	snprintf(path, sizeof(path), "%s/.upload-%s", dir, name);
	req->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (req->fd < 0)
		return -errno;
	req->file = strdup(path);
	return req->file ? 0 : -ENOMEM;
}

/* Finds the route; sets *status to 404/405 when none matches. */
static const struct httpd_route *find_route(struct httpd *h, const char *method, const char *path,
					    struct httpd_req *req, unsigned *status)
{
	int path_ok = 0;

	for (size_t i = 0; i < h->cfg.n_routes; i++) {
		const struct httpd_route *r = &h->cfg.routes[i];

		if (!route_match(r->pattern, path, NULL))
			continue;
		path_ok = 1;
		if (strcmp(r->method, method))
			continue;
		route_match(r->pattern, path, req);
		return r;
	}
	*status = path_ok ? 405 : 404;
	return NULL;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
				 const char *method, const char *version,
				 const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct httpd *h = cls;
	struct httpd_req *req = *con_cls;

	if (!req) {
		unsigned status = 0;
		const char *cl;

		req = calloc(1, sizeof(*req));
		if (!req)
			return MHD_NO;
		req->h = h;
		req->conn = conn;
		req->fd = -1;
		snprintf(req->method, sizeof(req->method), "%s", method);
		req->path = strdup(url);
		*con_cls = req;
		if (!req->path)
			return MHD_NO;
		req->route = find_route(h, method, url, req, &status);
		if (!req->route) {
			if (status == 404)
				httpd_reply_error(req, 404, "no such endpoint: %s", url);
			else
				httpd_reply_error(req, 405, "method %s not allowed on %s", method, url);
			return MHD_YES;
		}
		req->cap = req->route->max_body ? req->route->max_body : h->cfg.max_body;
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		if (cl && strtoull(cl, NULL, 10) > req->cap) {
			httpd_reply_error(req, 413, "request body too large (%s bytes > limit %llu)",
					  cl, (unsigned long long)req->cap);
			return MHD_YES;
		}
		if (req->route->pre) {
			req->route->pre(req, h->cfg.userdata);
			if (req->replied)
				return MHD_YES;
		}
		if (req->route->body_to_file) {
			int r = open_body_file(req);
			if (r < 0) {
				log_err_errno(r, "cannot create upload file in %s",
					      h->upload_dir ? h->upload_dir : "/tmp");
				httpd_reply_error(req, 500, "cannot store upload");
			}
		}
		return MHD_YES;
	}
	if (*upload_size > 0) {
		size_t n = *upload_size;

		*upload_size = 0;
		if (req->replied || req->too_large || req->io_error)
			return MHD_YES; /* draining a request we already answered */
		if ((req->route->body_to_file ? req->file_len : req->len) + n > req->cap) {
			req->too_large = 1;
			return MHD_YES;
		}
		if (body_append(req, upload_data, n) < 0)
			req->io_error = 1;
		return MHD_YES;
	}
	/* The whole request is here. */
	if (req->replied)
		return MHD_YES;
	if (req->too_large) {
		httpd_reply_error(req, 413, "request body too large (limit %llu bytes)",
				  (unsigned long long)req->cap);
		return MHD_YES;
	}
	if (req->io_error) {
		httpd_reply_error(req, 500, "cannot store request body");
		return MHD_YES;
	}
	if (req->fd >= 0) {
		close(req->fd);
		req->fd = -1;
	}
	req->route->fn(req, h->cfg.userdata);
	if (!req->replied) {
		log_err("handler for %s %s returned without a reply", req->method, req->path);
		httpd_reply_error(req, 500, "internal error");
	}
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	req_free(*con_cls);
	*con_cls = NULL;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
	struct httpd_listener *l = ud;

	MHD_run(l->mhd);
	listener_arm(l);
	return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *ud)
{
	struct httpd_listener *l = ud;

	MHD_run(l->mhd);
	listener_arm(l);
	return 0;
}

/* Re-arms the timer to MHD's next deadline (connection timeouts). */
static void listener_arm(struct httpd_listener *l)
{
	MHD_UNSIGNED_LONG_LONG to = 0;
	uint64_t now;

	if (MHD_get_timeout(l->mhd, &to) != MHD_YES) {
		sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
		return;
	}
	sd_event_now(l->h->ev, CLOCK_MONOTONIC, &now);
	sd_event_source_set_time(l->timer, now + to * 1000);
	sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

static int open_listen_socket(const char *addr, struct httpd_listener *l)
{
	int fd, r;

	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		const char *p = addr + 5;

		if (strlen(p) >= sizeof(sa.sun_path))
			return -ENAMETOOLONG;
		strcpy(sa.sun_path, p);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -errno;
		unlink(p);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto out_errno;
		chmod(p, 0660);
		snprintf(l->unix_path, sizeof(l->unix_path), "%s", p);
	} else {
		struct sockaddr_in sa = {.sin_family = AF_INET};
		char host[64];
		const char *hp = strncmp(addr, "tcp:", 4) ? addr : addr + 4;
		const char *colon = strrchr(hp, ':');
		socklen_t sl = sizeof(sa);
		int one = 1;

		if (!colon || (size_t)(colon - hp) >= sizeof(host))
			return -EINVAL;
		snprintf(host, sizeof(host), "%.*s", (int)(colon - hp), hp);
		if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
			return -EINVAL;
		sa.sin_port = htons(atoi(colon + 1));
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -errno;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto out_errno;
		getsockname(fd, (struct sockaddr *)&sa, &sl);
		l->port = ntohs(sa.sin_port);
	}
	if (listen(fd, 128) < 0)
		goto out_errno;
	return fd;
out_errno:
	r = -errno;
	close(fd);
	return r;
}

int httpd_new(sd_event *ev, const struct httpd_config *cfg, struct httpd **out)
{
	struct httpd *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->ev = sd_event_ref(ev);
	h->cfg = *cfg;
	if (!h->cfg.max_body)
		h->cfg.max_body = 1 << 20;
	if (!h->cfg.timeout_s)
		h->cfg.timeout_s = 30;
	if (!h->cfg.max_conns)
		h->cfg.max_conns = 256;
	if (cfg->upload_dir) {
		h->upload_dir = strdup(cfg->upload_dir);
		if (!h->upload_dir) {
			httpd_free(h);
			return -ENOMEM;
		}
	}
	*out = h;
	return 0;
}

int httpd_listen(struct httpd *h, const char *addr)
{
	struct httpd_listener *l;
	const union MHD_DaemonInfo *info;
	int fd, r;

	if (h->n_ls >= HTTPD_MAX_LISTEN)
		return -E2BIG;
	l = &h->ls[h->n_ls];
	memset(l, 0, sizeof(*l));
	l->h = h;
	fd = open_listen_socket(addr, l);
	if (fd < 0)
		return fd;
	l->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_SUPPRESS_DATE_NO_CLOCK, 0, NULL, NULL,
				  on_access, h, MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->cfg.timeout_s,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->cfg.max_conns,
				  /* Unix sockets are the daemons' own peers: no per-address cap */
				  MHD_OPTION_PER_IP_CONNECTION_LIMIT,
				  strncmp(addr, "unix:", 5) ? h->cfg.max_conns_per_ip : 0u,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
				  MHD_OPTION_END);
	if (!l->mhd) {
		close(fd);
		return -EIO;
	}
	info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info) {
		r = -EIO;
		goto out_stop;
	}
	r = sd_event_add_io(h->ev, &l->io, info->epoll_fd, EPOLLIN, on_io, l);
	if (r < 0)
		goto out_stop;
	r = sd_event_add_time(h->ev, &l->timer, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_timer, l);
	if (r < 0)
		goto out_unref_io;
	h->n_ls++;
	listener_arm(l);
	return 0;
out_unref_io:
	l->io = sd_event_source_disable_unref(l->io);
out_stop:
	MHD_stop_daemon(l->mhd);
	l->mhd = NULL;
	return r;
}

int httpd_port(struct httpd *h, int i)
{
	return i >= 0 && i < h->n_ls ? h->ls[i].port : -1;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->n_ls; i++) {
		struct httpd_listener *l = &h->ls[i];

		sd_event_source_disable_unref(l->io);
		sd_event_source_disable_unref(l->timer);
		MHD_stop_daemon(l->mhd);
		if (l->unix_path[0])
			unlink(l->unix_path);
	}
	sd_event_unref(h->ev);
	free(h->upload_dir);
	free(h);
}

/* httpd — the HTTP+JSON server every daemon uses: libmicrohttpd driven from
 * the daemon's sd-event loop (one thread), listening on Unix sockets and/or
 * TCP. Owns request size caps and per-connection deadlines; handlers are plain
 * functions that must queue exactly one reply before they return. */
#pragma once
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

struct httpd;
struct httpd_req;

typedef void (*httpd_handler_fn)(struct httpd_req *req, void *userdata);

struct httpd_route {
	const char *method;  /* "GET", "POST", "DELETE", ... */
	const char *pattern; /* "/api/v1/jobs/{}": "{}" matches one path segment */
	httpd_handler_fn fn;
	int body_to_file;  /* stream the body into a temp file (uploads) */
	uint64_t max_body; /* per-route cap; 0 = the server's default */
	/* Runs when the headers are in, before any body byte is read (auth on
	 * uploads); when it replies, the body is discarded unread and fn never runs. */
	httpd_handler_fn pre;
};

struct httpd_config {
	const struct httpd_route *routes;
	size_t n_routes;
	void *userdata;
	uint64_t max_body;      /* default body cap (default 1 MiB) */
	unsigned timeout_s;     /* idle deadline per connection (default 30 s) */
	unsigned max_conns;     /* concurrent connections (default 256) */
	unsigned max_conns_per_ip; /* of them from one address on a TCP listener (0: no
				    * cap; the console's users set one so a client cannot
				    * hold them all; daemons' peers share addresses) */
	const char *upload_dir; /* where body_to_file bodies are written */
};

#define HTTPD_MAX_ARGS 4
#define HTTPD_MAX_LISTEN 4

int httpd_new(sd_event *ev, const struct httpd_config *cfg, struct httpd **out);
/* addr: "unix:/path/x.sock", "tcp:127.0.0.1:8080" or "127.0.0.1:8080"; port 0 picks one. */
int httpd_listen(struct httpd *h, const char *addr);
/* The TCP port of the i-th listener (0 for Unix sockets). */
int httpd_port(struct httpd *h, int i);
void httpd_free(struct httpd *h);

const char *httpd_req_method(struct httpd_req *req);
const char *httpd_req_path(struct httpd_req *req);
/* The i-th "{}" segment of the matched route. */
const char *httpd_req_arg(struct httpd_req *req, int i);
const char *httpd_req_query(struct httpd_req *req, const char *name);
const char *httpd_req_header(struct httpd_req *req, const char *name);
const char *httpd_req_body(struct httpd_req *req, size_t *len);
/* Path of the temp file holding the body of a body_to_file route (removed after the reply). */
const char *httpd_req_body_file(struct httpd_req *req, uint64_t *len);
/* Parses the body as a JSON object; on failure replies 400 itself and returns NULL. */
json_t *httpd_req_json(struct httpd_req *req);
/* The bearer token of the Authorization header, or NULL. */
const char *httpd_req_bearer(struct httpd_req *req);

/* Replies; exactly one per request. */
void httpd_reply_json(struct httpd_req *req, unsigned status, json_t *body /* stolen */);
void httpd_reply_error(struct httpd_req *req, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void httpd_reply_data(struct httpd_req *req, unsigned status, const char *content_type,
		      const void *data, size_t len);
/* Sends size bytes of fd (taken: closed after sending). */
void httpd_reply_fd(struct httpd_req *req, unsigned status, const char *content_type, int fd,
		    uint64_t size, const char *download_name);

/* hclient — libcurl easy calls with deadlines and caps; one handle per call
 * (calls are rare: control plane, not data plane). */
#include "hclient.h"
#include "log.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sink {
	char *buf;
	size_t len, alloc;
	FILE *file;
	int too_big;
};

static size_t on_write(char *data, size_t sz, size_t n, void *ud)
{
	struct sink *s = ud;
	size_t len = sz * n;

	if (s->file)
		return fwrite(data, 1, len, s->file);
	if (s->len + len > HCLIENT_MAX_RESPONSE) {
		s->too_big = 1;
		return 0;
	}
	if (s->len + len + 1 > s->alloc) {
		size_t na = s->alloc ? s->alloc * 2 : 4096;
		char *nb;

		while (na < s->len + len + 1)
			na *= 2;
		nb = realloc(s->buf, na);
		if (!nb)
			return 0;
		s->buf = nb;
		s->alloc = na;
	}
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	s->buf[s->len] = 0;
	return len;
}

static int curl_to_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_WRITE_ERROR:
		return -EMSGSIZE;
	case CURLE_READ_ERROR:
		return -EIO;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		return -ECONNRESET;
	default:
		return -EPROTO;
	}
}

const char *hclient_strerror(int r)
{
	switch (r) {
	case -ECONNREFUSED:
		return "connection refused (is the daemon running?)";
	case -ETIMEDOUT:
		return "timed out";
	case -EMSGSIZE:
		return "response too large";
	case -ECONNRESET:
		return "connection closed by peer";
	default:
		return strerror(-r);
	}
}

/* Sets URL (and the Unix socket path) for base + path. */
static int set_target(CURL *c, const char *base, const char *path)
{
	char url[4096];

	if (!strncmp(base, "unix:", 5)) {
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, base + 5);
		snprintf(url, sizeof(url), "http://localhost%s", path);
	} else {
		snprintf(url, sizeof(url), "%s%s", base, path);
	}
	return curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK ? 0 : -EINVAL;
}

static json_t *parse_body(struct sink *s)
{
	if (!s->buf || s->len == 0)
		return NULL;
	return json_loadb(s->buf, s->len, 0, NULL);
}

struct call {
	const char *base, *method, *path, *token;
	const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
	const char *body;
	size_t body_len;
	FILE *upload;
	curl_off_t upload_len;
	const char *content_type;
	int timeout_ms;
	int probe; /* the gate's own probe: not gated */
	struct sink sink;
};

/* ---- the gate (hclient.h) ---- */

#define GATE_MAX 8
#define GATE_BACKOFF_MIN_US 1000000ull
#define GATE_BACKOFF_MAX_US 8000000ull

struct gate {
	char base[256];
	int closed;
	uint64_t since_us, next_us, backoff_us;
	unsigned long failed_fast;
};

static const char *gate_probe_path; /* NULL: calls are not gated */
static struct gate gates[GATE_MAX];
static int n_gates;

void hclient_gate_enable(const char *probe_path) { gate_probe_path = probe_path; }

static struct gate *gate_of(const char *base)
{
	if (!gate_probe_path || strlen(base) >= sizeof(gates[0].base))
		return NULL;
	for (int i = 0; i < n_gates; i++)
		if (!strcmp(gates[i].base, base))
			return &gates[i];
	if (n_gates == GATE_MAX)
		return NULL; /* more peers than a daemon has: those go ungated */
	snprintf(gates[n_gates].base, sizeof(gates[0].base), "%s", base);
	return &gates[n_gates++];
}

static int perform(struct call *k, long *status);

/* A closed gate lets a call through only once a probe got an answer; the
 * probes back off from 1 s to 8 s. */
static int gate_passes(struct gate *g)
{
	struct call probe = {.base = g->base, .method = "GET", .path = gate_probe_path,
			     .timeout_ms = HCLIENT_PROBE_MS, .probe = 1};
	uint64_t now = util_now_us();
	long status = 0;
	int r;

	if (!g->closed)
		return 1;
	if (now < g->next_us)
		return 0;
	r = perform(&probe, &status);
	free(probe.sink.buf);
	if (r == -ETIMEDOUT) {
		g->backoff_us = g->backoff_us * 2 > GATE_BACKOFF_MAX_US ? GATE_BACKOFF_MAX_US
									: g->backoff_us * 2;
		g->next_us = util_now_us() + g->backoff_us;
		return 0;
	}
	/* an answer, or an error that comes at once (refused, no socket): the
	 * call itself is no longer a stall */
	log_info("%s answers again after %.1f s (%lu call%s to it failed at once meanwhile)",
		 g->base, (double)(util_now_us() - g->since_us) / 1e6, g->failed_fast,
		 g->failed_fast == 1 ? "" : "s");
	g->closed = 0;
	return 1;
}

static void gate_close(struct gate *g, const struct call *k)
{
	g->closed = 1;
	g->since_us = util_now_us();
	g->backoff_us = GATE_BACKOFF_MIN_US;
	g->next_us = g->since_us + g->backoff_us;
	g->failed_fast = 0;
	log_warn("%s did not answer %s %s within %d ms; calls to it fail at once until it "
		 "answers %s again (checked every 1-8 s)",
		 g->base, k->method, k->path, k->timeout_ms, gate_probe_path);
}

static int perform(struct call *k, long *status)
{
	struct curl_slist *hdrs = NULL;
	char auth[512], ct[128];
	struct gate *g = k->probe ? NULL : gate_of(k->base);
	CURLcode cc;
	CURL *c;
	int r;

	if (g && !gate_passes(g)) {
		g->failed_fast++;
		return -ETIMEDOUT;
	}
	c = curl_easy_init();
	if (!c)
		return -ENOMEM;
	r = set_target(c, k->base, k->path);
	if (r < 0)
		goto out_cleanup;
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, k->method);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)k->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(k->timeout_ms < 5000 ? k->timeout_ms : 5000));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &k->sink);
	if (k->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k->token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (k->content_type) {
		snprintf(ct, sizeof(ct), "Content-Type: %s", k->content_type);
		hdrs = curl_slist_append(hdrs, ct);
	}
	for (size_t i = 0; k->headers && k->headers[i]; i++)
		hdrs = curl_slist_append(hdrs, k->headers[i]);
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (k->upload) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READDATA, k->upload);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, k->upload_len);
	} else if (k->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, k->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)k->body_len);
	}
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		r = k->sink.too_big ? -EMSGSIZE : curl_to_errno(cc);
		if (cc == CURLE_COULDNT_CONNECT && !strncmp(k->base, "unix:", 5)) {
			struct stat st;
			if (stat(k->base + 5, &st) < 0)
				r = -ENOENT;
		}
		log_debug("http %s %s%s: %s", k->method, k->base, k->path, curl_easy_strerror(cc));
		if (g && r == -ETIMEDOUT)
			gate_close(g, k);
		goto out_cleanup;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	r = 0;
out_cleanup:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	return r;
}

int hclient_json(const char *base, const char *method, const char *path, const char *token,
		 json_t *body, int timeout_ms, long *status, json_t **resp)
{
	return hclient_json_h(base, method, path, token, NULL, body, timeout_ms, status, resp);
}

int hclient_json_h(const char *base, const char *method, const char *path, const char *token,
		   const char *const *headers, json_t *body, int timeout_ms, long *status,
		   json_t **resp)
{
	struct call k = {.base = base, .method = method, .path = path, .token = token,
			 .headers = headers, .timeout_ms = timeout_ms};
	char *s = NULL;
	long st = 0;
	int r;

	for (size_t i = 0; headers && headers[i]; i++)
		if (strpbrk(headers[i], "\r\n"))
			return -EINVAL;
	if (body) {
		s = json_dumps(body, JSON_COMPACT);
		if (!s)
			return -ENOMEM;
		k.body = s;
		k.body_len = strlen(s);
		k.content_type = "application/json";
	}
	r = perform(&k, &st);
	if (r == 0) {
		*status = st;
		if (resp)
			*resp = parse_body(&k.sink);
	}
	free(s);
	free(k.sink.buf);
	return r;
}

int hclient_upload(const char *base, const char *method, const char *path, const char *token,
		   const char *file, const char *content_type, int timeout_ms, long *status,
		   json_t **resp)
{
	struct call k = {.base = base, .method = method, .path = path, .token = token,
			 .timeout_ms = timeout_ms, .content_type = content_type};
	struct stat st;
	long code = 0;
	int r;

	k.upload = fopen(file, "rb");
	if (!k.upload)
		return -errno;
	if (fstat(fileno(k.upload), &st) < 0) {
		r = -errno;
		goto out_close;
	}
	k.upload_len = st.st_size;
	r = perform(&k, &code);
	if (r == 0) {
		*status = code;
		if (resp)
			*resp = parse_body(&k.sink);
	}
out_close:
	fclose(k.upload);
	free(k.sink.buf);
	return r;
}

int hclient_download(const char *base, const char *path, const char *token, const char *dest,
		     int timeout_ms, long *status, json_t **resp)
{
	struct call k = {.base = base, .method = "GET", .path = path, .token = token,
			 .timeout_ms = timeout_ms};
	long code = 0;
	int r;

	k.sink.file = fopen(dest, "wb");
	if (!k.sink.file)
		return -errno;
	r = perform(&k, &code);
	if (fclose(k.sink.file) != 0 && r == 0)
		r = -errno;
	if (r < 0)
		return r;
	*status = code;
	if (resp)
		*resp = NULL;
	if (code / 100 != 2) {
		char *buf = NULL;
		size_t n = 0;
		FILE *f = fopen(dest, "rb");

		if (f) {
			buf = calloc(1, 65537);
			if (buf)
				n = fread(buf, 1, 65536, f);
			fclose(f);
		}
		if (resp && buf)
			*resp = json_loadb(buf, n, 0, NULL);
		free(buf);
		unlink(dest);
	}
	return 0;
}

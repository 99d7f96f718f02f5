/* hclient — blocking HTTP+JSON client on libcurl for daemon-to-daemon and
 * CLI calls. Every call has a deadline and a response size cap. A base is
 * "unix:/path/x.sock" or "http://host:port". */
#pragma once
#include <jansson.h>

#define HCLIENT_MAX_RESPONSE (16u << 20)
#define HCLIENT_PROBE_MS 250 /* the gate's probe of a peer that stopped answering */

/* Gates every later call of this process by its peer (base): a call that
 * times out (a hung or stopped daemon, a host gone) closes the peer's gate,
 * and until a GET probe_path to it gets any answer within HCLIENT_PROBE_MS
 * (probes 1 s apart, backing off to 8 s) its calls fail at once with
 * -ETIMEDOUT instead of each waiting out its timeout. Daemons turn it on
 * (svc_setup) so a hung peer costs their event loop one timeout, not one per
 * call; a command-line tool keeps waiting. NULL turns it off. Single-threaded. */
void hclient_gate_enable(const char *probe_path);

/* Sends body (borrowed, may be NULL) as JSON and parses a JSON reply.
 * Returns 0 when any HTTP status came back (*status set, *resp the parsed
 * body or NULL), a negative errno when the peer could not be reached
 * (-ECONNREFUSED, -ENOENT for a missing socket, -ETIMEDOUT, -EMSGSIZE...). */
int hclient_json(const char *base, const char *method, const char *path, const char *token,
		 json_t *body, int timeout_ms, long *status, json_t **resp);
/* The same with extra request headers: headers is NULL or a NULL-terminated
 * list of "Name: value" lines; a line holding CR or LF is refused
 * (-EINVAL) before anything is sent. */
int hclient_json_h(const char *base, const char *method, const char *path, const char *token,
		   const char *const *headers, json_t *body, int timeout_ms, long *status,
		   json_t **resp);
/* Streams a file as the request body (uploads). */
int hclient_upload(const char *base, const char *method, const char *path, const char *token,
		   const char *file, const char *content_type, int timeout_ms, long *status,
		   json_t **resp);
/* Writes the response body into dest (created/truncated); on non-2xx returns
 * the status and the body parsed as JSON in *resp when it is JSON. */
int hclient_download(const char *base, const char *path, const char *token, const char *dest,
		     int timeout_ms, long *status, json_t **resp);
/* A short description of an hclient error for messages. */
const char *hclient_strerror(int r);

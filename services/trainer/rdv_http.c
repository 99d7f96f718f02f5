/* rdv_http — bcoll's rendezvous over admitd's HTTP API (services/README.md:
 * POST /v1/rdv/{key} {"rank","size","addr"}, then GET until "complete").
 * Lives in the trainer so libbcoll never depends on libcurl or the services. */
#include "hclient.h"
#include "trainer.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int http_fail(struct rdv_http *h, int r, const char *what, long status, json_t *resp)
{
	const char *e = json_string_value(json_object_get(resp, "error"));

	if (status)
		snprintf(h->err, sizeof(h->err), "rendezvous '%s' at %s: %s returned HTTP %ld%s%s",
			 h->key, h->base, what, status, e ? ": " : "", e ? e : "");
	else
		snprintf(h->err, sizeof(h->err), "rendezvous '%s' at %s: %s failed: %s", h->key,
			 h->base, what, hclient_strerror(r));
	json_decref(resp);
	return r;
}

int rdv_http_exchange(void *ctx, int rank, int size, const char *my_addr,
		      char (*addrs)[BCOLL_ADDR_LEN])
{
	struct rdv_http *h = ctx;
	char path[256];
	uint64_t deadline = util_now_us() + (uint64_t)h->timeout_ms * 1000;
	json_t *body, *resp = NULL;
	long status = 0;
	int r, have = 0;

	if (!util_valid_name(h->key, 128)) {
		snprintf(h->err, sizeof(h->err), "invalid rendezvous key '%.60s'", h->key);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/v1/rdv/%s", h->key);
	body = json_pack("{s:i, s:i, s:s}", "rank", rank, "size", size, "addr", my_addr);
	r = hclient_json(h->base, "POST", path, NULL, body, 10000, &status, &resp);
	json_decref(body);
	if (r < 0 || status != 200)
		return http_fail(h, r < 0 ? r : -EPROTO, "POST", r < 0 ? 0 : status, resp);
	json_decref(resp);
	for (;;) {
		json_t *a;

		resp = NULL;
		r = hclient_json(h->base, "GET", path, NULL, NULL, 10000, &status, &resp);
		if (r < 0 || status != 200)
			return http_fail(h, r < 0 ? r : -EPROTO, "GET", r < 0 ? 0 : status, resp);
		a = json_object_get(resp, "addrs");
		have = json_is_array(a) ? (int)json_array_size(a) : 0;
		if (json_is_true(json_object_get(resp, "complete"))) {
			if (have != size) {
				json_decref(resp);
				snprintf(h->err, sizeof(h->err), "rendezvous '%s': admitd returned "
					 "%d addresses for %d ranks", h->key, have, size);
				return -EPROTO;
			}
			for (int i = 0; i < size; i++) {
				const char *s = json_string_value(json_array_get(a, i));
				if (!s || strlen(s) >= BCOLL_ADDR_LEN) {
					json_decref(resp);
					snprintf(h->err, sizeof(h->err), "rendezvous '%s': address of "
						 "rank %d is missing or too long", h->key, i);
					return -EPROTO;
				}
				snprintf(addrs[i], BCOLL_ADDR_LEN, "%s", s);
			}
			json_decref(resp);
			return 0;
		}
		json_decref(resp);
		if (util_now_us() > deadline) {
			snprintf(h->err, sizeof(h->err), "rendezvous '%s' at %s timed out after %d "
				 "s: not all %d ranks arrived", h->key, h->base,
				 h->timeout_ms / 1000, size);
			return -ETIMEDOUT;
		}
		usleep(50000);
	}
}

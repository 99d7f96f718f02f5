/* spool — the node's durable meter outbox ("meter_spool" in noded.db) and
 * its delivery to ledgerd's POST /v1/ingest.
 *
 * Records are committed here before they count as metered; they leave only
 * when ledgerd acknowledges their (source, seq). A down ledgerd makes the
 * spool grow up to its bound; then meter.c stops advancing marks and the
 * heartbeat refuses new launches. Nothing here ever drops a record.
 */
#include "noded.h"
#include "log.h"
#include "hclient.h"
#include "outbox.h"

#include <errno.h>
#include <jansson.h>

int spool_open(struct noded *n)
{
	return outbox_open(n->db, "meter_spool", n->spool_max, &n->spool);
}

int64_t spool_pending(struct noded *n)
{
	return outbox_pending(n->spool);
}

int spool_put_record(struct noded *n, struct rank *rk, const char *kind, uint64_t start_wall_us,
		     uint64_t quantity_us, int64_t energy_uj)
{
	struct job *j = rk->job;
	json_t *rec;
	int r;

	rec = json_pack("{s:s, s:s, s:s, s:i, s:s, s:f, s:s, s:I, s:I}", "job", j->id, "tenant",
			j->tenant, "user", j->user, "rank", rk->rank, "kind", kind, "quantity",
			(double)quantity_us / 1e6, "unit", "rank_s", "start_us",
			(json_int_t)start_wall_us, "end_us", (json_int_t)(start_wall_us + quantity_us));
	if (!rec)
		return -ENOMEM;
	/* the class the ledger prices the rank-seconds at; "cpu" is its default */
	json_object_set_new(rec, "node_class", json_string(n->node_class[0] ? n->node_class : "cpu"));
	if (energy_uj >= 0)
		json_object_set_new(rec, "energy_kwh", json_real((double)energy_uj / 3.6e12));
	r = outbox_put(n->spool, rec, NULL);
	json_decref(rec);
	return r;
}

void spool_flush(struct noded *n, int max_batches)
{
	for (int b = 0; b < max_batches; b++) {
		int r = outbox_flush(n->spool, n->ledgerd, "/v1/ingest", n->node_id,
				     NODED_SPOOL_BATCH, 2000);

		if (r < 0) {
			if (!n->ledgerd_down)
				log_warn("cannot send meter records to ledgerd at %s: %s; keeping "
					 "%lld records spooled and retrying every second", n->ledgerd,
					 r == -EPROTO ? "it refused the batch" : hclient_strerror(r),
					 (long long)spool_pending(n));
			n->ledgerd_down = 1;
			return;
		}
		if (n->ledgerd_down) {
			log_info("ledgerd at %s is taking meter records again", n->ledgerd);
			n->ledgerd_down = 0;
		}
		if (n->spool_full && spool_pending(n) < n->spool_max) {
			log_info("meter spool has room again (%lld records)",
				 (long long)spool_pending(n));
			n->spool_full = 0;
		}
		if (r < NODED_SPOOL_BATCH)
			return;
	}
}

void spool_tick(void *userdata)
{
	spool_flush(userdata, 20);
}

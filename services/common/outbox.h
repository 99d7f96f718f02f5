/* outbox — a durable, bounded queue of JSON records in the owner's SQLite
 * file, sent in batches to another daemon and deleted only once that daemon
 * acknowledges them. Sequence numbers are assigned at put time and never
 * reused, so (source, seq) makes delivery idempotent at the receiver.
 * noded's meter spool and admitd's estimate feed to ledgerd are outboxes. */
#pragma once
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>

struct outbox;

/* table names the queue (created if needed); max_records bounds it. */
int outbox_open(sqlite3 *db, const char *table, int64_t max_records, struct outbox **out);
void outbox_free(struct outbox *o);
/* Changes the bound (at shutdown a producer may spool what it held back). */
void outbox_set_limit(struct outbox *o, int64_t max_records);
/* Stores rec durably (committed before return). -ENOSPC when the queue is full:
 * callers must stop producing, never drop. *seq gets the record's sequence. */
int outbox_put(struct outbox *o, json_t *rec, int64_t *seq);
/* Records waiting to be acknowledged (see outbox.c for how it is counted). */
int64_t outbox_pending(struct outbox *o);
/* Sends up to batch records as {"source": S, "records": [{"seq": n, ...}]}.
 * The receiver answers 200 {"acked": [seq...], "rejected": [{"seq":n,"error":s}]};
 * acked records are deleted, rejected ones moved to <table>_dead and logged.
 * Returns the number of records acknowledged or a negative errno. */
int outbox_flush(struct outbox *o, const char *base, const char *path, const char *source,
		 int batch, int timeout_ms);

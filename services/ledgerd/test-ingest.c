/* test-ingest — unit tests of record validation and batch ingest on a real
 * SQLite file: every rule has a case with the reason it must give, a mixed
 * batch keeps its good records, duplicates are acked once, envelopes that
 * cannot be processed are refused whole, bills sum entries exactly. */
#include "../../tests/t.h"
#include "db.h"
#include "ledger.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>

static char dir[64];

static struct ledger *fresh(void)
{
	char path[128];
	struct ledger *l = NULL;

	if (dir[0])
		util_rm_rf(dir);
	strcpy(dir, "/tmp/test-ledgerd-ingest.XXXXXX");
	if (!mkdtemp(dir))
		return NULL;
	snprintf(path, sizeof(path), "%s/ledgerd.db", dir);
	if (ledger_open(path, &l) < 0)
		return NULL;
	if (ledger_set_rate(l, 720000) < 0) {
		ledger_free(l);
		return NULL;
	}
	return l;
}

#define GOOD                                                                                       \
	"\"job\": \"j-1\", \"tenant\": \"acme\", \"user\": \"alice\", \"rank\": 0, "               \
	"\"kind\": \"compute\", \"unit\": \"rank_s\", \"start_us\": 10, \"end_us\": 20"

struct parse_case {
	const char *name;
	const char *json;
	const char *want; /* NULL: valid; else a substring of the reason */
};

static const struct parse_case entry_cases[] = {
	{"valid", "{\"seq\": 1, \"quantity\": 0.93, " GOOD "}", NULL},
	{"valid integer quantity", "{\"seq\": 2, \"quantity\": 1, " GOOD "}", NULL},
	{"unit defaults", "{\"seq\": 1, \"quantity\": 1, \"job\": \"j\", \"tenant\": \"t\","
			  " \"user\": \"u\", \"rank\": 3, \"kind\": \"idle\", \"start_us\": 0,"
			  " \"end_us\": 0}",
	 NULL},
	{"not an object", "[1]", "must be a JSON object"},
	{"no seq", "{\"quantity\": 1, " GOOD "}", "missing field 'seq'"},
	{"seq zero", "{\"seq\": 0, \"quantity\": 1, " GOOD "}", "field 'seq' is out of range"},
	{"seq negative", "{\"seq\": -4, \"quantity\": 1, " GOOD "}", "field 'seq' is out of range"},
	{"seq real", "{\"seq\": 1.5, \"quantity\": 1, " GOOD "}", "'seq' must be an integer"},
	{"seq string", "{\"seq\": \"1\", \"quantity\": 1, " GOOD "}", "'seq' must be an integer"},
	{"bad kind", "{\"seq\": 1, \"quantity\": 1, " GOOD ", \"kind\": \"gpu\"}",
	 "field 'kind' is 'gpu'; expected compute, comm_wait or idle"},
	{"quantity negative", "{\"seq\": 1, \"quantity\": -0.1, " GOOD "}",
	 "field 'quantity' is out of range"},
	{"quantity too big", "{\"seq\": 1, \"quantity\": 86400.5, " GOOD "}",
	 "field 'quantity' is out of range"},
	{"quantity max", "{\"seq\": 1, \"quantity\": 86400, " GOOD "}", NULL},
	{"quantity string", "{\"seq\": 1, \"quantity\": \"1\", " GOOD "}",
	 "'quantity' must be a number"},
	{"no quantity", "{\"seq\": 1, " GOOD "}", "missing field 'quantity'"},
	{"end before start",
	 "{\"seq\": 1, \"quantity\": 1, \"job\": \"j\", \"tenant\": \"t\", \"user\": \"u\","
	 " \"rank\": 0, \"kind\": \"idle\", \"start_us\": 5, \"end_us\": 4}",
	 "end_us 4 is before start_us 5"},
	{"rank negative",
	 "{\"seq\": 1, \"quantity\": 1, \"job\": \"j\", \"tenant\": \"t\", \"user\": \"u\","
	 " \"rank\": -1, \"kind\": \"idle\", \"start_us\": 5, \"end_us\": 6}",
	 "field 'rank' is out of range"},
	{"empty job",
	 "{\"seq\": 1, \"quantity\": 1, \"job\": \"\", \"tenant\": \"t\", \"user\": \"u\","
	 " \"rank\": 0, \"kind\": \"idle\", \"start_us\": 5, \"end_us\": 6}",
	 "field 'job' is empty"},
	{"control char",
	 "{\"seq\": 1, \"quantity\": 1, \"job\": \"a\\nb\", \"tenant\": \"t\", \"user\": \"u\","
	 " \"rank\": 0, \"kind\": \"idle\", \"start_us\": 5, \"end_us\": 6}",
	 "field 'job' contains a control character (0x0a)"},
	{"bad unit", "{\"seq\": 1, \"quantity\": 1, " GOOD ", \"unit\": \"gpu_h\"}",
	 "field 'unit' is 'gpu_h'; only rank_s is priced"},
	{"no tenant",
	 "{\"seq\": 1, \"quantity\": 1, \"job\": \"j\", \"user\": \"u\","
	 " \"rank\": 0, \"kind\": \"idle\", \"start_us\": 5, \"end_us\": 6}",
	 "missing field 'tenant'"},
};

static void test_parse_entry(void)
{
	char why[320];

	for (size_t i = 0; i < ARRAY_SIZE(entry_cases); i++) {
		const struct parse_case *c = &entry_cases[i];
		json_t *j = json_loads(c->json, JSON_DECODE_ANY, NULL);
		struct ledger_entry e;
		int r;

		T_CHECK(j, "%s: test JSON does not parse", c->name);
		if (!j)
			continue;
		why[0] = 0;
		r = ledger_parse_entry(j, &e, why, sizeof(why));
		if (!c->want)
			T_CHECK(r == 0, "%s: got error \"%s\", want valid", c->name, why);
		else
			T_CHECK(r == -EINVAL && strstr(why, c->want),
				"%s: got %d \"%s\", want \"%s\"", c->name, r, why, c->want);
		json_decref(j);
	}
}

static void test_parse_long_string(void)
{
	char why[320], big[200];
	struct ledger_entry e;
	json_t *j;

	memset(big, 'x', 129);
	big[129] = 0;
	j = json_pack("{s:i, s:f, s:s, s:s, s:s, s:i, s:s, s:i, s:i}", "seq", 1, "quantity", 1.0,
		      "job", big, "tenant", "t", "user", "u", "rank", 0, "kind", "idle",
		      "start_us", 0, "end_us", 1);
	T_EQ_INT(ledger_parse_entry(j, &e, why, sizeof(why)), -EINVAL);
	T_CHECK(strstr(why, "too long (129 characters > limit 128)"), "got \"%s\"", why);
	big[128] = 0;
	json_object_set_new(j, "job", json_string(big));
	T_EQ_INT(ledger_parse_entry(j, &e, why, sizeof(why)), 0);
	json_decref(j);
}

static void test_parse_estimate(void)
{
	char why[320];
	struct ledger_estimate e;
	json_t *j = json_loads("{\"seq\": 1, \"job\": \"j\", \"tenant\": \"t\", \"user\": \"u\","
			       " \"ranks\": 2, \"seconds\": 100, \"amount\": 0.04,"
			       " \"explain\": \"2 ranks\"}",
			       0, NULL);

	T_EQ_INT(ledger_parse_estimate(j, &e, why, sizeof(why)), 0);
	T_EQ_INT(e.amount_micro, 40000);
	T_EQ_INT(e.ranks, 2);
	json_object_set_new(j, "amount_micro", json_integer(40001));
	T_EQ_INT(ledger_parse_estimate(j, &e, why, sizeof(why)), 0);
	T_EQ_INT(e.amount_micro, 40001);
	json_object_set_new(j, "ranks", json_integer(0));
	T_EQ_INT(ledger_parse_estimate(j, &e, why, sizeof(why)), -EINVAL);
	T_CHECK(strstr(why, "field 'ranks' is out of range"), "got \"%s\"", why);
	json_decref(j);
}

static json_t *record(int64_t seq, const char *job, const char *kind, double q)
{
	return json_pack("{s:I, s:s, s:s, s:s, s:i, s:s, s:f, s:s, s:I, s:I}", "seq",
			 (json_int_t)seq, "job", job, "tenant", "acme", "user", "alice", "rank", 0,
			 "kind", kind, "quantity", q, "unit", "rank_s", "start_us",
			 (json_int_t)seq * 1000000, "end_us", (json_int_t)seq * 1000000 + 999999);
}

static void test_ingest_batch(void)
{
	struct ledger *l = fresh();
	json_t *req, *recs, *reply = NULL, *bill = NULL;
	struct ledger_verify v;
	char err[512];
	int64_t n, sum;

	if (!l)
		return;
	recs = json_array();
	json_array_append_new(recs, record(1, "j-1", "compute", 0.93));
	json_array_append_new(recs, record(2, "j-1", "nope", 1));
	json_array_append_new(recs, record(3, "j-1", "comm_wait", 0.07));
	json_array_append_new(recs, record(1, "j-1", "compute", 0.93)); /* dup in batch */
	json_array_append_new(recs, json_string("junk"));
	json_array_append_new(recs, record(4, "j-2", "idle", 1.0));
	req = json_pack("{s:s, s:o}", "source", "node-a", "records", recs);
	T_EQ_INT(ledger_ingest(l, req, 0, &reply, err, sizeof(err)), 0);
	T_EQ_INT(json_array_size(json_object_get(reply, "acked")), 4);
	T_EQ_INT(json_array_size(json_object_get(reply, "rejected")), 2);
	T_EQ_INT(json_integer_value(json_object_get(
			 json_array_get(json_object_get(reply, "rejected"), 0), "seq")),
		 2);
	T_CHECK(json_is_null(json_object_get(
			json_array_get(json_object_get(reply, "rejected"), 1), "seq")),
		"rejected non-object has a seq");
	json_decref(reply);
	/* resending the whole batch adds nothing */
	T_EQ_INT(ledger_ingest(l, req, 0, &reply, err, sizeof(err)), 0);
	T_EQ_INT(json_array_size(json_object_get(reply, "acked")), 4);
	json_decref(reply);
	db_query_int(l->db, "SELECT COUNT(*) FROM entries", 0, &n);
	T_EQ_INT(n, 3);
	db_query_int(l->db, "SELECT SUM(amount_micro) FROM entries WHERE job = 'j-1'", 0, &sum);
	T_EQ_INT(sum, 186 + 14);
	T_EQ_INT(ledger_bill(l, "j-1", &bill), 0);
	T_EQ_INT(json_integer_value(json_object_get(json_object_get(bill, "metered"),
						    "amount_micro")),
		 sum);
	T_EQ_INT(json_array_size(json_object_get(bill, "line_items")), 2);
	T_CHECK(json_is_null(json_object_get(bill, "predicted")), "predicted is not null");
	json_decref(bill);
	T_EQ_INT(ledger_bill(l, "j-none", &bill), -ENOENT);
	T_EQ_INT(ledger_verify(l->db, l->head_id, l->head_hash, &v), 0);
	T_EQ_INT(v.ok, 1);
	json_decref(req);
	ledger_free(l);
}

static void test_ingest_envelope(void)
{
	struct ledger *l = fresh();
	json_t *req, *recs, *reply = NULL;
	char err[512];

	if (!l)
		return;
	req = json_pack("{s:[]}", "records");
	T_EQ_INT(ledger_ingest(l, req, 0, &reply, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "'source'"), "got \"%s\"", err);
	json_decref(req);
	req = json_pack("{s:s, s:{}}", "source", "n", "records");
	T_EQ_INT(ledger_ingest(l, req, 0, &reply, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "'records'"), "got \"%s\"", err);
	json_decref(req);
	recs = json_array();
	for (int i = 0; i <= LEDGER_MAX_RECORDS; i++)
		json_array_append_new(recs, json_integer(i));
	req = json_pack("{s:s, s:o}", "source", "n", "records", recs);
	T_EQ_INT(ledger_ingest(l, req, 0, &reply, err, sizeof(err)), -E2BIG);
	T_CHECK(strstr(err, "10001 > limit 10000"), "got \"%s\"", err);
	json_decref(req);
	ledger_free(l);
}

/* Fast-path ingest of body; returns its result, *stored: head moved. */
static int fast(struct ledger *l, const char *body, const char **reply)
{
	char err[256] = "";
	size_t n;

	return ledger_fast_ingest(l, body, strlen(body), reply, &n, err, sizeof(err));
}

/* Checks the entry stored as id 1 hashes like record rec parsed by jansson. */
static void check_same_as_slow(struct ledger *l, const char *name, const char *rec)
{
	json_t *j = json_loads(rec, 0, NULL);
	struct ledger_entry e;
	sqlite3_stmt *st = NULL;
	char why[320], h[65];

	T_CHECK(j && ledger_parse_entry(j, &e, why, sizeof(why)) == 0, "%s: slow parse", name);
	json_decref(j);
	strcpy(e.source, "node-f");
	T_CHECK(ledger_price(l, &e) == 0, "%s: price", name);
	T_CHECK(db_prepare(l->db, "SELECT ts_us, hash FROM entries WHERE id = 1", &st) == 0 &&
			sqlite3_step(st) == SQLITE_ROW,
		"%s: entry 1 not stored", name);
	if (!st)
		return;
	e.id = 1;
	e.ts_us = sqlite3_column_int64(st, 0);
	strcpy(e.prev_hash, LEDGER_ZERO_HASH);
	T_CHECK(ledger_entry_hash(&e, h) == 0, "%s: hash", name);
	T_EQ_STR((const char *)sqlite3_column_text(st, 1), h);
	sqlite3_finalize(st);
}

#define ENV(recs) "{\"source\": \"node-f\", \"records\": [" recs "]}"

/* The fast path takes exactly the valid records, value for value as jansson
 * reads them, and steps aside (touching nothing) for everything else. */
static void test_fast_ingest(void)
{
	static const struct parse_case extra[] = {
		{"exponent quantity", "{\"seq\": 1, \"quantity\": 25e-1, " GOOD "}", NULL},
		{"long real", "{\"seq\": 1, \"quantity\": 0.1000000000000000055511151231257827, "
			      GOOD "}", NULL},
		{"keys reordered", "{\"end_us\": 9, \"quantity\": 3, \"seq\": 7, \"kind\": \"idle\","
				   " \"start_us\": 8, \"rank\": 2, \"user\": \"u\", \"tenant\": \"t\","
				   " \"job\": \"j\", \"node_class\": \"cpu\", \"energy_kwh\": 0}", NULL},
		{"escape", "{\"seq\": 1, \"quantity\": 1, " GOOD ", \"user\": \"a\\u0062\"}", "x"},
		{"duplicate key", "{\"seq\": 1, \"seq\": 2, \"quantity\": 1, " GOOD "}", "x"},
		{"null", "{\"seq\": 1, \"quantity\": 1, \"energy_kwh\": null, " GOOD "}", "x"},
		{"utf8", "{\"seq\": 1, \"quantity\": 1, " GOOD ", \"user\": \"\xc3\xa9\"}", "x"},
		{"leading zero", "{\"seq\": 01, \"quantity\": 1, " GOOD "}", "x"},
		{"unpriced class", "{\"seq\": 1, \"quantity\": 1, \"node_class\": \"gpu\", " GOOD "}",
		 "x"},
	};
	static const char *const bodies[] = {
		"{\"source\": \"node-f\", \"records\": [], \"x\": 1}",
		"{\"source\": \"node-f\", \"records\": []} x",
		"{\"source\": \"\", \"records\": []}",
		"{\"records\": []}",
		"{\"source\": \"node-f\", \"records\": [{\"seq\": 1}, ]}",
		"{\"source\": \"node-f\", \"records\": [",
		"[]",
	};
	char body[4096];
	const char *reply;

	for (size_t i = 0; i < ARRAY_SIZE(entry_cases) + ARRAY_SIZE(extra); i++) {
		const struct parse_case *c = i < ARRAY_SIZE(entry_cases)
						     ? &entry_cases[i]
						     : &extra[i - ARRAY_SIZE(entry_cases)];
		struct ledger *l = fresh();
		int r;

		T_CHECK(l, "cannot open a ledger");
		if (!l)
			return;
		snprintf(body, sizeof(body), ENV("%s"), c->json);
		r = fast(l, body, &reply);
		if (c->want) {
			T_CHECK(r == 1 && l->head_id == 0, "%s: fast path took it (%d)", c->name, r);
		} else {
			T_CHECK(r == 0 && l->head_id == 1, "%s: fast path refused it (%d)", c->name, r);
			if (r == 0)
				check_same_as_slow(l, c->name, c->json);
		}
		ledger_free(l);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bodies); i++) {
		struct ledger *l = fresh();

		T_CHECK(l && fast(l, bodies[i], &reply) == 1 && l->head_id == 0,
			"body %zu: fast path took it", i);
		ledger_free(l);
	}
	/* a batch with a duplicate acks both, stores one */
	{
		struct ledger *l = fresh();
		const char *two = ENV("{\"seq\": 5, \"quantity\": 1, " GOOD "},"
				      "{\"seq\": 5, \"quantity\": 1, " GOOD "},"
				      "{\"seq\": 6, \"quantity\": 2, " GOOD "}");

		T_CHECK(l && fast(l, two, &reply) == 0, "duplicate batch refused");
		if (l) {
			T_EQ_STR(reply, "{\"acked\":[5,5,6],\"rejected\":[]}");
			T_EQ_INT(l->head_id, 2);
			T_CHECK(fast(l, ENV(), &reply) == 0, "empty batch refused");
			T_EQ_STR(reply, "{\"acked\":[],\"rejected\":[]}");
		}
		ledger_free(l);
	}
}

int main(void)
{
	t_run("ingest_parse_entry", test_parse_entry);
	t_run("ingest_parse_long_string", test_parse_long_string);
	t_run("ingest_parse_estimate", test_parse_estimate);
	t_run("ingest_batch", test_ingest_batch);
	t_run("ingest_envelope", test_ingest_envelope);
	t_run("ingest_fast", test_fast_ingest);
	if (dir[0])
		util_rm_rf(dir);
	return t_done();
}

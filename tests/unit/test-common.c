/* test-common — unit tests of services/common: bundle parsing, util, db
 * migrations, the outbox, and httpd + hclient talking over real Unix and TCP
 * sockets (the server runs its own sd-event loop in a thread). */
#include "../t.h"
#include "bundle.h"
#include "db.h"
#include "hclient.h"
#include "httpd.h"
#include "outbox.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char tmpdir[256];

static void test_modelcfg(void)
{
	static const struct {
		const char *json;
		int want; /* 0 or the negative errno */
		const char *msg; /* substring of the error */
	} cases[] = {
		{"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,\"vocab_size\":256}", 0, ""},
		{"{\"model_type\":\"llama\"}", -EINVAL, "missing required key 'num_hidden_layers'"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128}", 0, ""},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"num_key_value_heads\":2,\"head_dim\":8,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},\"tie_word_embeddings\":true,\"attention_bias\":false,\"mlp_bias\":false,\"hidden_act\":\"silu\",\"pretraining_tp\":1}", 0, ""},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":500000.0}}", 0, ""},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}", -EOPNOTSUPP, "rope_scaling type 'yarn'"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"rope_scaling\":{\"type\":\"llama3\",\"factor\":8.0}}", -EINVAL, "needs factor"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"rope_scaling\":{\"type\":\"default\"},\"rope_parameters\":{\"rope_type\":\"default\"}}", -EINVAL, "not both"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"hidden_act\":\"gelu\"}", -EOPNOTSUPP, "'hidden_act'"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"num_key_value_heads\":3}", -EINVAL, "multiple of num_key_value_heads"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"sliding_window\":4096}", -EOPNOTSUPP, "unknown key 'sliding_window' for model_type llama"},
		{"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":4,\"hidden_size\":64,\"intermediate_size\":128,\"head_dim\":7}", -EINVAL, "must be even"},
		{"{\"model_type\":\"bert\"}", -EOPNOTSUPP, "unknown model_type 'bert'"},
		{"{\"n_layer\":2}", -EINVAL, "missing required key 'model_type'"},
		{"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":3,\"n_embd\":64,\"vocab_size\":256}", -EINVAL, "multiple of n_head"},
		{"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,\"vocab_size\":256,\"rotary\":true}", -EOPNOTSUPP, "unknown key 'rotary'"},
		{"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,\"vocab_size\":256,\"activation_function\":\"relu\"}", -EOPNOTSUPP, "'activation_function'"},
		{"{\"model_type\":\"gpt2\",\"n_layer\":0,\"n_head\":4,\"n_embd\":64,\"vocab_size\":256}", -ERANGE, "'n_layer' = 0"},
		{"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,\"vocab_size\":100}", -ERANGE, "vocab_size"},
		{"{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,\"vocab_size\":256,\"n_ctx\":7}", -EINVAL, "n_ctx"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct model_config m;
		char err[256] = "";
		json_t *j = json_loads(cases[i].json, 0, NULL);
		int got = modelcfg_parse(j, &m, err, sizeof(err));

		T_CHECK(got == cases[i].want, "case %zu: got %d want %d (%s)", i, got, cases[i].want, err);
		T_CHECK(strstr(err, cases[i].msg), "case %zu: error '%s' lacks '%s'", i, err, cases[i].msg);
		json_decref(j);
	}
}

static void test_model_size(void)
{
	/* GPT-2 small: 124,439,808 parameters with tied embeddings. */
	struct model_config m = {.n_layer = 12, .n_head = 12, .n_embd = 768, .n_positions = 1024,
				 .vocab_size = 50257};

	T_EQ_INT(modelcfg_n_params(&m), 124439808);
	T_CHECK(modelcfg_flops_per_token(&m, 1024) > 6.0 * 124439808, "attention flops missing");

	/* Llama-3-8B: 8,030,261,248 parameters (GQA 32/8, untied head). */
	m = (struct model_config){.model_type = "llama", .n_layer = 32, .n_head = 32,
				  .n_kv_head = 8, .head_dim = 128, .n_embd = 4096,
				  .intermediate_size = 14336, .n_positions = 8192,
				  .vocab_size = 128256};
	T_EQ_INT(modelcfg_n_params(&m), 8030261248ull);
	T_CHECK(fabs(modelcfg_flops_per_token(&m, 8192) - (6.0 * 8030261248.0 +
		6.0 * 32 * 8192 * 4096)) < 1.0, "llama flops %g", modelcfg_flops_per_token(&m, 8192));
}

static void test_trainparams(void)
{
	static const struct {
		const char *json;
		int want;
		long steps;
	} cases[] = {
		{"{\"steps\":10}", 0, 10},
		{"{\"tokens\":1000, \"batch\":2, \"seq_len\":10}", 0, 50},
		{"{\"stepz\":10}", -EINVAL, 0},
		{"{\"batch\":3, \"ranks\":2}", -EINVAL, 0},
		{"{\"seq_len\":4096}", -ERANGE, 0},
		{"{\"steps\":1.5}", -EINVAL, 0},
		{"{\"lr\":\"fast\"}", -EINVAL, 0},
		{"{\"schedule\":\"step\"}", -EINVAL, 0},
		{"{\"ranks\":\"auto\", \"budget\": 12.5}", 0, 100},
		{"{\"ranks\":0}", 0, 100}, /* what trainparams_to_json writes for auto */
		{"{\"ckpt_every\":5, \"eval_every\":10, \"grad_accum\":4}", 0, 100},
		{"{\"ckpt_every\":-1}", -ERANGE, 0},
		{"{\"eval_every\":\"often\"}", -EINVAL, 0},
		{"{\"grad_accum\":3}", -EINVAL, 0}, /* batch 8 */
		{"{\"grad_accum\":2, \"ranks\":8}", -EINVAL, 0},
		{"{\"grad_accum\":5000}", -ERANGE, 0},
	};
	struct model_config m = {.n_layer = 1, .n_head = 1, .n_embd = 8, .n_positions = 128,
				 .vocab_size = 256};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct train_params p;
		char err[256] = "";
		json_t *j = json_loads(cases[i].json, 0, NULL);
		int got;

		trainparams_defaults(&m, &p);
		got = trainparams_apply(j, &m, &p, err, sizeof(err));
		T_CHECK(got == cases[i].want, "case %zu: got %d want %d (%s)", i, got, cases[i].want, err);
		if (got == 0)
			T_CHECK(p.steps == cases[i].steps, "case %zu: steps %ld want %ld", i, p.steps,
				cases[i].steps);
		json_decref(j);
	}
}

static void test_util(void)
{
	uint64_t v = 0;
	char path[300], *buf = NULL;
	size_t len = 0;

	T_CHECK(util_parse_size("4G", &v) == 0 && v == 4ull << 30, "4G");
	T_CHECK(util_parse_size("12MiB", &v) == 0 && v == 12ull << 20, "12MiB");
	T_CHECK(util_parse_size("x", &v) == -EINVAL, "x rejected");
	T_CHECK(util_valid_name("j-abc.1", 64), "j-abc.1 valid");
	T_CHECK(!util_valid_name("..", 64) && !util_valid_name("a/b", 64) && !util_valid_name("", 64),
		"bad names rejected");
	snprintf(path, sizeof(path), "%s/f", tmpdir);
	T_EQ_INT(util_write_file_atomic(path, "hello", 5), 0);
	T_EQ_INT(util_read_file(path, 100, &buf, &len), 0);
	T_CHECK(buf && len == 5 && !strcmp(buf, "hello"), "read back");
	free(buf);
	T_EQ_INT(util_read_file(path, 4, &buf, &len), -EFBIG);
}

/* bundle_check: a tokenizer.json is accepted when it is a regular file
 * (the trainer parses it), refused as anything else. */
static void test_bundle_tokenizer(void)
{
	static const char cfg[] = "{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 1, "
				  "\"n_embd\": 8, \"n_positions\": 16, \"vocab_size\": 300}";
	struct bundle_info bi;
	char dir[300], p[400], err[256] = "";

	snprintf(dir, sizeof(dir), "%s/bundle", tmpdir);
	snprintf(p, sizeof(p), "%s/data", dir);
	T_EQ_INT(util_mkdir_p(p), 0);
	snprintf(p, sizeof(p), "%s/config.json", dir);
	T_EQ_INT(util_write_file_atomic(p, cfg, strlen(cfg)), 0);
	snprintf(p, sizeof(p), "%s/data/a.txt", dir);
	T_EQ_INT(util_write_file_atomic(p, "some text", 9), 0);
	T_EQ_INT(bundle_check(dir, &bi, err, sizeof(err)), 0);
	T_CHECK(!bi.has_tokenizer, "no tokenizer: %s", err);
	snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
	T_EQ_INT(util_write_file_atomic(p, "{}", 2), 0);
	T_EQ_INT(bundle_check(dir, &bi, err, sizeof(err)), 0);
	T_CHECK(bi.has_tokenizer, "tokenizer.json accepted: %s", err);
	unlink(p);
	T_EQ_INT(util_mkdir_p(p), 0);
	T_EQ_INT(bundle_check(dir, &bi, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "tokenizer.json must be a regular file") != NULL, "err: %s", err);
}

static void test_db_migrate(void)
{
	static const char *const m[] = {"CREATE TABLE a (x)", "CREATE TABLE b (y)"};
	char path[300];
	sqlite3 *db;
	int64_t v = 0;

	snprintf(path, sizeof(path), "%s/m.db", tmpdir);
	T_EQ_INT(db_open(path, 1, &db), 0);
	T_EQ_INT(db_migrate(db, m, 1), 0);
	T_EQ_INT(db_migrate(db, m, 2), 0);
	T_EQ_INT(db_migrate(db, m, 2), 0); /* idempotent */
	db_query_int(db, "PRAGMA user_version", 0, &v);
	T_EQ_INT(v, 2);
	T_EQ_INT(db_migrate(db, m, 1), -EPROTO); /* newer database than the code */
	db_close(db);
}

/* A server in a thread: routes exercise caps, captures and JSON replies. */
static sd_event *srv_ev;
static int acks_seen;

static void h_echo(struct httpd_req *req, void *ud)
{
	httpd_reply_json(req, 200, json_pack("{s:s, s:s?, s:s?}", "arg", httpd_req_arg(req, 0), "q",
					     httpd_req_query(req, "q"), "role",
					     httpd_req_header(req, "X-Bursar-Role")));
}

static void h_json(struct httpd_req *req, void *ud)
{
	json_t *j = httpd_req_json(req);

	if (j)
		httpd_reply_json(req, 201, j);
}

/* Acks every record of an outbox batch. */
static void h_ingest(struct httpd_req *req, void *ud)
{
	json_t *j = httpd_req_json(req), *r, *acked = json_array();
	size_t i;

	if (!j) {
		json_decref(acked);
		return;
	}
	json_array_foreach(json_object_get(j, "records"), i, r) {
		json_array_append(acked, json_object_get(r, "seq"));
		acks_seen++;
	}
	json_decref(j);
	httpd_reply_json(req, 200, json_pack("{s:o}", "acked", acked));
}

static void h_quit(struct httpd_req *req, void *ud)
{
	httpd_reply_json(req, 200, json_object());
	sd_event_exit(srv_ev, 0);
}

static const struct httpd_route routes[] = {
	{"GET", "/echo/{}", h_echo, 0, 0},
	{"POST", "/json", h_json, 0, 64},
	{"POST", "/ingest", h_ingest, 0, 0},
	{"POST", "/quit", h_quit, 0, 0},
};

static struct httpd *srv;

static void *server_main(void *arg)
{
	sd_event_loop(srv_ev);
	return NULL;
}

static void test_http(void)
{
	struct httpd_config cfg = {.routes = routes, .n_routes = ARRAY_SIZE(routes)};
	char usock[300], base[320], tbase[64];
	json_t *resp = NULL, *body;
	pthread_t th;
	long st = 0;

	snprintf(usock, sizeof(usock), "%s/s.sock", tmpdir);
	snprintf(base, sizeof(base), "unix:%s", usock);
	T_EQ_INT(sd_event_new(&srv_ev), 0);
	T_EQ_INT(httpd_new(srv_ev, &cfg, &srv), 0);
	T_EQ_INT(httpd_listen(srv, base), 0);
	T_EQ_INT(httpd_listen(srv, "127.0.0.1:0"), 0);
	T_CHECK(httpd_port(srv, 1) > 0, "tcp port bound");
	snprintf(tbase, sizeof(tbase), "http://127.0.0.1:%d", httpd_port(srv, 1));
	pthread_create(&th, NULL, server_main, NULL);

	T_EQ_INT(hclient_json(base, "GET", "/echo/abc?q=1", NULL, NULL, 2000, &st, &resp), 0);
	T_EQ_INT(st, 200);
	T_EQ_STR(json_string_value(json_object_get(resp, "arg")), "abc");
	T_EQ_STR(json_string_value(json_object_get(resp, "q")), "1");
	T_CHECK(!json_string_value(json_object_get(resp, "role")), "a header nobody sent");
	json_decref(resp);
	{
		const char *hdrs[] = {"X-Bursar-Role: user", "X-Bursar-Tenant: acme", NULL};
		const char *bad[] = {"X-Bursar-Role: user\r\nX-Evil: 1", NULL};

		T_EQ_INT(hclient_json_h(base, "GET", "/echo/h", NULL, hdrs, NULL, 2000, &st, &resp),
			 0);
		T_EQ_STR(json_string_value(json_object_get(resp, "role")), "user");
		json_decref(resp);
		resp = NULL;
		T_EQ_INT(hclient_json_h(base, "GET", "/echo/h", NULL, bad, NULL, 2000, &st, &resp),
			 -EINVAL);
	}

	body = json_pack("{s:i}", "x", 7);
	T_EQ_INT(hclient_json(tbase, "POST", "/json", NULL, body, 2000, &st, &resp), 0);
	T_EQ_INT(st, 201);
	T_EQ_INT(json_integer_value(json_object_get(resp, "x")), 7);
	json_decref(resp);
	json_decref(body);

	body = json_pack("{s:s}", "x", "a string longer than the sixty-four byte cap of this route");
	T_EQ_INT(hclient_json(base, "POST", "/json", NULL, body, 2000, &st, &resp), 0);
	T_EQ_INT(st, 413);
	json_decref(resp);
	json_decref(body);

	T_EQ_INT(hclient_json(base, "GET", "/nope", NULL, NULL, 2000, &st, &resp), 0);
	T_EQ_INT(st, 404);
	json_decref(resp);
	T_EQ_INT(hclient_json(base, "DELETE", "/json", NULL, NULL, 2000, &st, &resp), 0);
	T_EQ_INT(st, 405);
	json_decref(resp);

	/* Malformed JSON is a 400 naming the position. */
	{
		char f[300];
		FILE *fp;

		snprintf(f, sizeof(f), "%s/bad.json", tmpdir);
		fp = fopen(f, "w");
		fputs("{\"x\": ", fp);
		fclose(fp);
		T_EQ_INT(hclient_upload(base, "POST", "/json", NULL, f, "application/json", 2000, &st,
					&resp), 0);
		T_EQ_INT(st, 400);
		T_CHECK(strstr(json_string_value(json_object_get(resp, "error")) ?: "", "malformed JSON"),
			"error names malformed JSON");
		json_decref(resp);
	}

	/* The outbox delivers and deletes only what was acknowledged. */
	{
		char p[300];
		sqlite3 *db;
		struct outbox *o;
		int64_t seq = 0;

		snprintf(p, sizeof(p), "%s/ob.db", tmpdir);
		T_EQ_INT(db_open(p, 1, &db), 0);
		T_EQ_INT(outbox_open(db, "spool", 3, &o), 0);
		for (int i = 0; i < 3; i++) {
			json_t *r = json_pack("{s:i}", "n", i);
			T_EQ_INT(outbox_put(o, r, &seq), 0);
			json_decref(r);
		}
		T_EQ_INT(seq, 3);
		body = json_object();
		T_EQ_INT(outbox_put(o, body, NULL), -ENOSPC); /* full: refuse, never drop */
		T_CHECK(outbox_flush(o, "unix:/nonexistent/x.sock", "/ingest", "t", 10, 500) < 0,
			"flush to a missing peer fails");
		T_EQ_INT(outbox_pending(o), 3);
		T_EQ_INT(outbox_flush(o, base, "/ingest", "t", 2, 2000), 2);
		T_EQ_INT(outbox_pending(o), 1);
		T_EQ_INT(outbox_flush(o, base, "/ingest", "t", 10, 2000), 1);
		T_EQ_INT(outbox_pending(o), 0);
		T_EQ_INT(outbox_put(o, body, &seq), 0);
		T_EQ_INT(seq, 4); /* sequence numbers are never reused */
		json_decref(body);
		T_EQ_INT(acks_seen, 3);
		outbox_free(o);
		db_close(db);
	}

	T_EQ_INT(hclient_json(base, "POST", "/quit", NULL, NULL, 2000, &st, &resp), 0);
	json_decref(resp);
	pthread_join(th, NULL);
	httpd_free(srv);
	srv_ev = sd_event_unref(srv_ev);

	/* Nobody listening: a clear errno, not a hang. */
	T_EQ_INT(hclient_json(base, "GET", "/echo/x", NULL, NULL, 1000, &st, &resp), -ENOENT);
	T_EQ_INT(hclient_json("http://127.0.0.1:1", "GET", "/x", NULL, NULL, 1000, &st, &resp),
		 -ECONNREFUSED);
}

/* The peer gate (hclient.h): a peer whose socket accepts and never answers
 * (a stopped daemon) costs the first call its timeout; the next fails at
 * once; when the peer answers again the probe (due 1 s after the gate
 * closed) reopens the gate and calls go through. */
static void test_gate(void)
{
	struct httpd_config cfg = {.routes = routes, .n_routes = ARRAY_SIZE(routes)};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char base[sizeof(sa.sun_path) + 8];
	json_t *resp = NULL;
	uint64_t t0, dt;
	pthread_t th;
	long st = 0;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/gate.sock", tmpdir);
	snprintf(base, sizeof(base), "unix:%s", sa.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	T_CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(fd, 16),
		"a listener that never accepts");
	hclient_gate_enable("/echo/health");
	t0 = util_now_us();
	T_EQ_INT(hclient_json(base, "GET", "/echo/a", NULL, NULL, 300, &st, &resp), -ETIMEDOUT);
	dt = util_now_us() - t0;
	T_CHECK(dt >= 250000, "the first call waits out its timeout: %llu us",
		(unsigned long long)dt);
	t0 = util_now_us();
	T_EQ_INT(hclient_json(base, "GET", "/echo/b", NULL, NULL, 5000, &st, &resp), -ETIMEDOUT);
	dt = util_now_us() - t0;
	T_CHECK(dt < 1000000, "the next call fails at once, not after its 5 s: %llu us",
		(unsigned long long)dt);
	close(fd);
	unlink(sa.sun_path);

	T_EQ_INT(sd_event_new(&srv_ev), 0);
	T_EQ_INT(httpd_new(srv_ev, &cfg, &srv), 0);
	T_EQ_INT(httpd_listen(srv, base), 0);
	pthread_create(&th, NULL, server_main, NULL);
	usleep(1100000);
	T_EQ_INT(hclient_json(base, "GET", "/echo/c", NULL, NULL, 2000, &st, &resp), 0);
	T_EQ_INT(st, 200);
	T_EQ_STR(json_string_value(json_object_get(resp, "arg")), "c");
	json_decref(resp);
	resp = NULL;
	T_EQ_INT(hclient_json(base, "POST", "/quit", NULL, NULL, 2000, &st, &resp), 0);
	json_decref(resp);
	pthread_join(th, NULL);
	httpd_free(srv);
	srv_ev = sd_event_unref(srv_ev);
	hclient_gate_enable(NULL);
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-common.XXXXXX");
	if (!mkdtemp(tmpdir))
		return 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	t_run("common-modelcfg", test_modelcfg);
	t_run("common-model-size", test_model_size);
	t_run("common-trainparams", test_trainparams);
	t_run("common-util", test_util);
	t_run("common-bundle-tokenizer", test_bundle_tokenizer);
	t_run("common-db-migrate", test_db_migrate);
	t_run("common-http-and-outbox", test_http);
	t_run("common-hclient-gate", test_gate);
	util_rm_rf(tmpdir);
	curl_global_cleanup();
	return t_done();
}

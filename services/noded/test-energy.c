/* test-energy — node classes and energy metering: the class a GPU's NVML
 * name gives, class name validation, an interval's energy split over its
 * records (exact sums, proportional parts), RAPL counter wrap, /proc/stat
 * parsing, a rank's CPU share of the node's energy, and the energy_kwh a
 * spooled interval carries in a real noded.db. On a machine with an NVIDIA
 * GPU, also the real NVML inventory and energy counter (skipped elsewhere). */
#include "noded.h"
#include "../../tests/t.h"
#include "db.h"
#include "outbox.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static void test_class_from_name(void)
{
	static const struct {
		const char *name, *want;
	} cases[] = {
		{"NVIDIA H100 80GB HBM3", "h100"},
		{"NVIDIA H100 PCIe", "h100"},
		{"NVIDIA H100 NVL", "h100"},
		{"NVIDIA H200", "h200"},
		{"NVIDIA A100-SXM4-40GB", "a100"},
		{"NVIDIA A100-SXM4-80GB", "a100"},
		{"NVIDIA A100 80GB PCIe", "a100"},
		{"NVIDIA GeForce RTX 4090", "rtx4090"},
		{"NVIDIA GeForce RTX 3090 Ti", "rtx3090"},
		{"NVIDIA GeForce GTX 1080", "gtx1080"},
		{"Tesla V100-SXM2-16GB", "v100"},
		{"Tesla T4", "t4"},
		{"NVIDIA L40S", "l40s"},
		{"NVIDIA A10G", "a10g"},
		{"NVIDIA RTX A6000", "rtxa6000"},
		{"Quadro RTX 8000", "rtx8000"},
		{"NVIDIA GH200 480GB", "gh200"},
		{"", "gpu"},
		{"NVIDIA", "gpu"},
		{"NVIDIA \"Weird\\ Name\" 0123456789012345678901234567890123456789",
		 "01234567890123456789012345678901"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char got[NODED_CLASS_MAX + 1];

		gpu_class_from_name(cases[i].name, got, sizeof(got));
		T_CHECK(!strcmp(got, cases[i].want), "'%s': got '%s', want '%s'", cases[i].name, got,
			cases[i].want);
		T_CHECK(noded_valid_class(got), "'%s' gives '%s', not a valid class", cases[i].name,
			got);
	}
}

static void test_valid_class(void)
{
	static const struct {
		const char *s;
		int want;
	} cases[] = {
		{"cpu", 1}, {"h100", 1}, {"cpu-big", 1}, {"a.b_c-9", 1},
		{"12345678901234567890123456789012", 1}, {"123456789012345678901234567890123", 0},
		{"", 0}, {"CPU", 0}, {"cpu big", 0}, {"cpu/x", 0}, {"h100\n", 0}, {"é", 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		T_CHECK(noded_valid_class(cases[i].s) == cases[i].want, "'%s': got %d, want %d",
			cases[i].s, noded_valid_class(cases[i].s), cases[i].want);
}

static void test_split_energy(void)
{
	static const struct {
		const char *name;
		uint64_t e, q[3], want[3];
	} cases[] = {
		{"proportional", 1000, {500000, 300000, 200000}, {500, 300, 200}},
		{"remainders go where the cumulative floor says", 10, {1, 1, 1}, {3, 3, 4}},
		{"all compute", 777, {1000000, 0, 0}, {777, 0, 0}},
		{"only idle", 5, {0, 0, 3}, {0, 0, 5}},
		{"zero energy", 0, {5, 6, 7}, {0, 0, 0}},
		{"zero interval keeps the energy", 9, {0, 0, 0}, {0, 0, 9}},
		{"700 W for a day in uJ, uneven", 60480000000000ULL, {86400000000ULL - 7, 5, 2},
		 {60479999995100ULL, 3500, 1400}},
		{"products past 64 bits", UINT64_MAX / 2, {UINT64_MAX / 4, UINT64_MAX / 4, 1},
		 {UINT64_MAX / 4, UINT64_MAX / 4, 1}},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t got[3], sum = 0;

		meter_split_energy(cases[i].e, cases[i].q, 3, got);
		for (int k = 0; k < 3; k++) {
			sum += got[k];
			T_CHECK(got[k] == cases[i].want[k], "%s: part %d got %llu want %llu",
				cases[i].name, k, (unsigned long long)got[k],
				(unsigned long long)cases[i].want[k]);
		}
		T_CHECK(sum == cases[i].e, "%s: parts sum to %llu, not %llu", cases[i].name,
			(unsigned long long)sum, (unsigned long long)cases[i].e);
	}
	/* random intervals: exact sums, each part within one unit of its share */
	srand(7);
	for (int t = 0; t < 10000; t++) {
		uint64_t q[3], got[3], e = (uint64_t)rand() * (uint64_t)rand(), w = 0, sum = 0;

		for (int k = 0; k < 3; k++)
			w += q[k] = (uint64_t)(rand() % 3 ? rand() % 2000000 : 0);
		meter_split_energy(e, q, 3, got);
		for (int k = 0; k < 3; k++) {
			double share = w ? (double)e * (double)q[k] / (double)w : 0;

			sum += got[k];
			T_CHECK(!w || (double)got[k] - share < 1.5 + share * 1e-12,
				"random %d: part %d is %llu for a share of %.1f", t, k,
				(unsigned long long)got[k], share);
		}
		T_CHECK(sum == e, "random %d: parts sum to %llu, not %llu", t,
			(unsigned long long)sum, (unsigned long long)e);
	}
}

static void test_counter_delta(void)
{
	static const struct {
		const char *name;
		uint64_t prev, now, max, want;
	} cases[] = {
		{"no wrap", 1000, 1500, 262143328850ULL, 500},
		{"unchanged", 42, 42, 262143328850ULL, 0},
		{"wrapped", 262143328000ULL, 150, 262143328850ULL, 1000},
		{"wrapped exactly at the top", 262143328850ULL, 0, 262143328850ULL, 0},
		{"wrapped from the top", 262143328850ULL, 10, 262143328850ULL, 10},
		{"range unknown (max) and no wrap", 5, 9, UINT64_MAX, 4},
		{"range unknown and a wrap: not counted", 900, 100, UINT64_MAX, 0},
		{"reading above a bogus range", 100, 50, 10, 50},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t got = meter_counter_delta(cases[i].prev, cases[i].now, cases[i].max);

		T_CHECK(got == cases[i].want, "%s: got %llu want %llu", cases[i].name,
			(unsigned long long)got, (unsigned long long)cases[i].want);
	}
}

static void test_parse_proc_stat(void)
{
	static const struct {
		const char *name, *text;
		int want_r;
		uint64_t want;
	} cases[] = {
		{"linux 5.x", "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n"
			      "cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n",
		 0, 10132153ULL + 290696 + 3084719 + 0 + 25195 + 0},
		{"with steal", "cpu  100 1 20 5000 7 3 4 9 0 0\n", 0, 100 + 1 + 20 + 3 + 4 + 9},
		{"old kernel, four fields", "cpu 1 2 3 4\n", 0, 6},
		{"no newline", "cpu  1 1 1 1 1 1 1 1", 0, 6},
		{"not the cpu line first", "cpu0 1 2 3 4\n", -EBADMSG, 0},
		{"too few fields", "cpu  1 2\n", -EBADMSG, 0},
		{"garbage", "intr 1 2 3\n", -EBADMSG, 0},
		{"empty", "", -EBADMSG, 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t got = 0;
		int r = meter_parse_proc_stat(cases[i].text, strlen(cases[i].text), &got);

		T_CHECK(r == cases[i].want_r, "%s: r got %d want %d", cases[i].name, r,
			cases[i].want_r);
		T_CHECK(r < 0 || got == cases[i].want, "%s: got %llu want %llu", cases[i].name,
			(unsigned long long)got, (unsigned long long)cases[i].want);
	}
}

static void test_cpu_share(void)
{
	static const struct {
		const char *name;
		uint64_t de, dcpu, dbusy, want;
	} cases[] = {
		{"half the busy time", 1000000, 500000, 1000000, 500000},
		{"all of it", 1000000, 2000000, 2000000, 1000000},
		{"more CPU than the node counted (tick skew) is capped", 1000000, 3000000, 2000000,
		 1000000},
		{"idle rank", 1000000, 0, 2000000, 0},
		{"idle node", 1000000, 10, 0, 0},
		{"no energy", 0, 10, 100, 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t got = meter_cpu_share(cases[i].de, cases[i].dcpu, cases[i].dbusy);

		T_CHECK(got == cases[i].want, "%s: got %llu want %llu", cases[i].name,
			(unsigned long long)got, (unsigned long long)cases[i].want);
	}
}

/* A real noded.db: an interval with a known energy delta lands in the spool
 * as records whose energy_kwh sum to it and name the node class; the mark in
 * the ranks row carries the counter; an unknown counter gives no energy_kwh. */
static void test_emit_energy(void)
{
	char dir[] = "/tmp/test-noded-energy-XXXXXX";
	struct noded *n = calloc(1, sizeof(*n));
	struct job *j = calloc(1, sizeof(*j));
	struct rank rk = {0};
	struct meter_mark m;
	sqlite3_stmt *st;
	double kwh = 0;
	int recs = 0, with_energy = 0, r;
	uint64_t t0 = util_now_us();

	T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	n->state_dir = dir;
	n->spool_max = 1000;
	snprintf(n->node_class, sizeof(n->node_class), "cpu-big");
	T_CHECK((r = jobdb_open(n)) == 0, "jobdb_open: %d", r);
	T_CHECK((r = spool_open(n)) == 0, "spool_open: %d", r);
	if (t_case_failed)
		goto out;
	j->n = n;
	snprintf(j->id, sizeof(j->id), "j-energy");
	snprintf(j->tenant, sizeof(j->tenant), "acme");
	snprintf(j->user, sizeof(j->user), "alice");
	rk.job = j;
	rk.gpu = -1;
	rk.launch_mono_us = t0;
	rk.launch_wall_us = util_wall_us();
	rk.mark = (struct meter_mark){.mono_us = t0, .energy_uj = 5000000, .have_energy = 1};
	T_EQ_INT(jobdb_insert_rank(n, &rk, 1), 0);
	/* 1 s: 0.6 s compute, 0.3 s comm, 0.1 s idle; 36 J = 1e-5 kWh */
	m = (struct meter_mark){t0 + 1000000, 600000, 300000, 5000000 + 36000000, 1};
	T_EQ_INT(meter_emit(n, &rk, &m), 0);
	/* then a second with an unknown counter: no energy_kwh at all */
	m = (struct meter_mark){t0 + 2000000, 1000000, 300000, 0, 0};
	T_EQ_INT(meter_emit(n, &rk, &m), 0);
	T_EQ_INT(db_prepare(n->db, "SELECT json_extract(body, '$.energy_kwh'),"
			    " json_extract(body, '$.node_class'), json_extract(body, '$.kind')"
			    " FROM meter_spool ORDER BY seq", &st), 0);
	while (sqlite3_step(st) == SQLITE_ROW) {
		recs++;
		T_EQ_STR((const char *)sqlite3_column_text(st, 1), "cpu-big");
		if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
			with_energy++;
			kwh += sqlite3_column_double(st, 0);
		}
	}
	sqlite3_finalize(st);
	T_EQ_INT(recs, 5);
	T_EQ_INT(with_energy, 3);
	T_CHECK(kwh > 1e-5 * (1 - 1e-9) && kwh < 1e-5 * (1 + 1e-9), "energy sums to %.12g kWh, "
		"want 1e-5", kwh);
	T_EQ_INT(db_prepare(n->db, "SELECT mark_energy_uj FROM ranks WHERE job = 'j-energy'", &st),
		 0);
	T_CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == -1,
		"the mark's energy should be stored as unknown (-1)");
	sqlite3_finalize(st);
out:
	outbox_free(n->spool);
	jobdb_close(n);
	free(j);
	free(n);
	if (!getenv("KEEP")) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			printf("cannot remove %s\n", dir);
	}
}

/* The real NVML, where there is one: inventory, class, an energy counter that
 * does not go backwards. */
static void test_nvml_real(void)
{
	struct noded *n = calloc(1, sizeof(*n));
	uint64_t a = 0, b = 0;

	n->slots = 1;
	T_EQ_INT(gpu_setup(n, NULL), 0);
	if (!n->n_gpus) {
		T_EQ_STR(n->node_class, "cpu");
		t_skip("no GPU: this node is a CPU node (class cpu, checked)");
		goto out;
	}
	T_CHECK(n->slots == n->n_gpus, "slots %d, want one per GPU (%d)", n->slots, n->n_gpus);
	T_CHECK(noded_valid_class(n->node_class), "class '%s' is not valid", n->node_class);
	T_CHECK(n->gpus[0].mem_bytes > 0, "GPU 0 reports no memory");
	T_CHECK(n->gpus[0].uuid[0], "GPU 0 reports no UUID");
	if (gpu_energy_uj(n, n->gpus[0].index, &a) == 0) {
		usleep(200000);
		T_EQ_INT(gpu_energy_uj(n, n->gpus[0].index, &b), 0);
		T_CHECK(b >= a, "energy went backwards: %llu then %llu", (unsigned long long)a,
			(unsigned long long)b);
	}
	printf("# %d GPUs, GPU 0 '%s' %s, %.1f GiB, class %s, energy %llu uJ\n", n->n_gpus,
	       n->gpus[0].name, n->gpus[0].uuid, (double)n->gpus[0].mem_bytes / (1 << 30),
	       n->node_class, (unsigned long long)b);
out:
	gpu_close(n);
	free(n);
}

int main(void)
{
	t_run("gpu_class_from_name_table", test_class_from_name);
	t_run("node_class_validation_table", test_valid_class);
	t_run("meter_split_energy_exact_and_proportional", test_split_energy);
	t_run("rapl_counter_wrap_table", test_counter_delta);
	t_run("proc_stat_busy_time_table", test_parse_proc_stat);
	t_run("cpu_energy_share_table", test_cpu_share);
	t_run("emit_energy_and_class_into_spool", test_emit_energy);
	t_run("nvml_inventory_on_a_gpu_node", test_nvml_real);
	return t_done();
}

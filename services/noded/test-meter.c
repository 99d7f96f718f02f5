/* test-meter — the meter's split rule, /proc/PID/stat parsing (also of a
 * zombie inside a real sd-event child callback) and the stdout line reader. */
#include "noded.h"
#include "../../tests/t.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void test_split(void)
{
	static const struct {
		const char *name;
		uint64_t wall, cpu, comm;
		uint64_t want_compute, want_comm, want_idle;
	} cases[] = {
		{"all compute", 1000000, 1000000, 0, 1000000, 0, 0},
		{"all idle", 1000000, 0, 0, 0, 0, 1000000},
		{"mixed", 1000000, 600000, 300000, 600000, 300000, 100000},
		{"cpu over wall (threads) is capped", 1000000, 3500000, 0, 1000000, 0, 0},
		{"cpu and comm over wall: comm first", 1000000, 900000, 400000, 600000, 400000, 0},
		{"comm over wall is capped", 1000000, 0, 2000000, 0, 1000000, 0},
		{"zero interval", 0, 5, 5, 0, 0, 0},
		{"one microsecond", 1, 1, 0, 1, 0, 0},
		{"spin-wait in comm counts as comm", 1000000, 1000000, 1000000, 0, 1000000, 0},
		{"huge interval", 86400000000ULL, 1, 2, 1, 2, 86400000000ULL - 3},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct meter_split got;

		meter_split(cases[i].wall, cases[i].cpu, cases[i].comm, &got);
		T_CHECK(got.compute_us == cases[i].want_compute, "%s: compute got %llu want %llu",
			cases[i].name, (unsigned long long)got.compute_us,
			(unsigned long long)cases[i].want_compute);
		T_CHECK(got.comm_us == cases[i].want_comm, "%s: comm got %llu want %llu",
			cases[i].name, (unsigned long long)got.comm_us,
			(unsigned long long)cases[i].want_comm);
		T_CHECK(got.idle_us == cases[i].want_idle, "%s: idle got %llu want %llu",
			cases[i].name, (unsigned long long)got.idle_us,
			(unsigned long long)cases[i].want_idle);
		T_CHECK(got.compute_us + got.comm_us + got.idle_us == cases[i].wall,
			"%s: items do not sum to the wall time", cases[i].name);
	}
}

static void test_parse_stat(void)
{
	static const struct {
		const char *name, *text;
		int want_r;
		uint64_t want_ticks, want_start;
	} cases[] = {
		{"plain", "42 (bursar-train) R 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 "
			  "9999 1000 10 18446744073709551615", 0, 300, 9999},
		{"comm with spaces and parens", "7 (a) b (c)) S 1 7 7 0 -1 0 0 0 0 0 11 22 0 0 20 0 "
						"1 0 5 0 0", 0, 33, 5},
		{"zombie", "9 (x) Z 1 9 9 0 -1 4227084 0 0 0 0 7 3 0 0 20 0 1 0 77 0 0", 0, 10, 77},
		{"truncated", "9 (x) Z 1 9 9 0 -1 4227084 0 0 0 0 7", -EBADMSG, 0, 0},
		{"no parenthesis", "9 x Z 1", -EBADMSG, 0, 0},
		{"garbage field", "9 (x) Z 1 9 9 0 -1 4227084 0 0 0 0 q 3 0 0 20 0 1 0 77", -EBADMSG,
		 0, 0},
		{"empty", "", -EBADMSG, 0, 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t ticks = 0, start = 0;
		int r = meter_parse_stat(cases[i].text, strlen(cases[i].text), &ticks, &start);

		T_CHECK(r == cases[i].want_r, "%s: got r=%d want %d", cases[i].name, r,
			cases[i].want_r);
		if (r == 0 && cases[i].want_r == 0) {
			T_CHECK(ticks == cases[i].want_ticks, "%s: ticks got %llu want %llu",
				cases[i].name, (unsigned long long)ticks,
				(unsigned long long)cases[i].want_ticks);
			T_CHECK(start == cases[i].want_start, "%s: starttime got %llu want %llu",
				cases[i].name, (unsigned long long)start,
				(unsigned long long)cases[i].want_start);
		}
	}
}

/* Burns `us` of this process's CPU time (not wall time: on a loaded machine
 * the scheduler decides how long that takes). */
static uint64_t cpu_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void burn_cpu(uint64_t us)
{
	uint64_t end = cpu_now_us() + us;
	volatile uint64_t x = 0;

	while (cpu_now_us() < end)
		for (int i = 0; i < 10000; i++)
			x += i;
}

/* /proc/self/stat: CPU time read back agrees with clock_gettime's view. */
static void test_proc_self(void)
{
	struct timespec ts;
	uint64_t a, b, start, want;
	int r;

	r = meter_read_cpu(getpid(), &a, &start);
	T_EQ_INT(r, 0);
	burn_cpu(300000);
	r = meter_read_cpu(getpid(), &b, NULL);
	T_EQ_INT(r, 0);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	want = (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	T_CHECK(b >= a + 200000, "cpu advanced by %llu us while burning 300 ms",
		(unsigned long long)(b - a));
	T_CHECK(b <= want + 20000 && b + 50000 >= want, "/proc says %llu us, the clock %llu us",
		(unsigned long long)b, (unsigned long long)want);
	T_CHECK(start > 0, "starttime is 0");
	T_EQ_INT(meter_read_cpu(999999999, &a, NULL), -ENOENT);
}

struct zombie_seen {
	int r;
	uint64_t cpu;
	int code, status;
};

static int on_child(sd_event_source *s, const siginfo_t *si, void *ud)
{
	struct zombie_seen *z = ud;

	z->r = meter_read_cpu(si->si_pid, &z->cpu, NULL);
	z->code = si->si_code;
	z->status = si->si_status;
	return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* In sd-event's child callback the child is still a zombie: its final CPU time
 * is readable there, and it is reaped after the callback returns. */
static void test_zombie_in_child_callback(void)
{
	struct zombie_seen z = {.r = -1};
	sd_event_source *src = NULL;
	sd_event *ev = NULL;
	sigset_t ss;
	pid_t pid;
	int r;

	sigemptyset(&ss);
	sigaddset(&ss, SIGCHLD);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	T_EQ_INT(sd_event_new(&ev), 0);
	pid = fork();
	if (pid == 0) {
		burn_cpu(400000);
		_exit(3);
	}
	T_CHECK(pid > 0, "fork failed");
	r = sd_event_add_child(ev, &src, pid, WEXITED, on_child, &z);
	T_EQ_INT(r, 0);
	T_EQ_INT(sd_event_loop(ev), 0);
	T_EQ_INT(z.r, 0);
	T_EQ_INT(z.code, CLD_EXITED);
	T_EQ_INT(z.status, 3);
	T_CHECK(z.cpu >= 300000 && z.cpu <= 600000, "zombie cpu %llu us, want about 400000",
		(unsigned long long)z.cpu);
	T_EQ_INT(waitpid(pid, NULL, WNOHANG), -1); /* sd-event reaped it */
	sd_event_source_unref(src);
	sd_event_unref(ev);
}

struct lines {
	int n;
	char got[8][128];
};

static void collect(const char *line, size_t len, void *ud)
{
	struct lines *l = ud;

	if (l->n < 8)
		snprintf(l->got[l->n], sizeof(l->got[0]), "%zu:%.100s", len, line);
	l->n++;
}

static void test_linebuf(void)
{
	static struct linebuf lb;
	static char big[NODED_LINE_MAX + 10];
	struct lines l = {0};

	/* split across feeds, several per feed, empty line, last line without '\n' */
	linebuf_init(&lb);
	linebuf_feed(&lb, "ab", 2, collect, &l);
	linebuf_feed(&lb, "c\nd\n\nef", 7, collect, &l);
	T_EQ_INT(l.n, 3);
	linebuf_finish(&lb, collect, &l);
	T_EQ_INT(l.n, 4);
	T_EQ_STR(l.got[0], "3:abc");
	T_EQ_STR(l.got[1], "1:d");
	T_EQ_STR(l.got[2], "0:");
	T_EQ_STR(l.got[3], "2:ef");

	/* a line of exactly the cap (minus the NUL) passes; one byte more is dropped
	 * whole, even when it arrives in pieces, and the next line is intact */
	memset(&l, 0, sizeof(l));
	linebuf_init(&lb);
	memset(big, 'x', sizeof(big));
	big[NODED_LINE_MAX - 1] = '\n';
	linebuf_feed(&lb, big, NODED_LINE_MAX, collect, &l);
	T_EQ_INT(l.n, 1);
	T_CHECK(!strncmp(l.got[0], "65535:xxx", 9), "got %s", l.got[0]);
	linebuf_feed(&lb, big, 40000, collect, &l);
	linebuf_feed(&lb, big, 40000, collect, &l);
	linebuf_feed(&lb, "tail\nok\n", 8, collect, &l);
	T_EQ_INT(l.n, 2);
	T_EQ_STR(l.got[1], "2:ok");
	T_EQ_INT(lb.dropped, 1);
	/* an overlong unterminated line at EOF is dropped too */
	big[NODED_LINE_MAX - 1] = 'x';
	linebuf_feed(&lb, big, NODED_LINE_MAX + 5, collect, &l);
	linebuf_finish(&lb, collect, &l);
	T_EQ_INT(l.n, 2);
	T_EQ_INT(lb.dropped, 2);
}

int main(void)
{
	t_run("meter_split_table", test_split);
	t_run("meter_parse_stat_table", test_parse_stat);
	t_run("meter_read_cpu_proc_self", test_proc_self);
	t_run("meter_zombie_readable_in_sd_event_child_callback", test_zombie_in_child_callback);
	t_run("linebuf_lines_and_cap", test_linebuf);
	return t_done();
}

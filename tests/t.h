/* t.h — the unit-test harness: table-driven cases, one line per case
 * ("PASS name", "FAIL name: why", "SKIP name: why") that tests/run counts.
 * Header-only so each test binary is one .c file plus the code under test. */
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failed_total;
static int t_case_failed;
static const char *t_case_name;

#define T_CHECK(cond, ...)                                                                         \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			if (!t_case_failed)                                                        \
				printf("FAIL %s: ", t_case_name);                                  \
			else                                                                       \
				printf("  also: ");                                                \
			printf("%s:%d: ", __FILE__, __LINE__);                                     \
			printf(__VA_ARGS__);                                                       \
			printf("\n");                                                              \
			t_case_failed = 1;                                                         \
		}                                                                                  \
	} while (0)

#define T_EQ_INT(got, want)                                                                        \
	T_CHECK((long long)(got) == (long long)(want), "%s: got %lld, want %lld", #got,            \
		(long long)(got), (long long)(want))

#define T_EQ_STR(got, want)                                                                        \
	do {                                                                                       \
		const char *t_g_ = (got);                                                          \
		T_CHECK(t_g_ && !strcmp(t_g_, (want)), "%s: got \"%s\", want \"%s\"", #got,         \
			t_g_ ? t_g_ : "(null)", (want));                                           \
	} while (0)

/* Runs one case; a case may call t_skip() to report itself skipped. */
static int t_skipped;
static inline void t_skip(const char *why)
{
	printf("SKIP %s: %s\n", t_case_name, why);
	t_skipped = 1;
}

static inline void t_run(const char *name, void (*fn)(void))
{
	t_case_name = name;
	t_case_failed = 0;
	t_skipped = 0;
	fn();
	if (t_skipped)
		;
	else if (t_case_failed)
		t_failed_total++;
	else
		printf("PASS %s\n", name);
	fflush(stdout);
}

static inline int t_done(void)
{
	return t_failed_total ? 1 : 0;
}

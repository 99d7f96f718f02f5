/* jarena — parses an ingest body's JSON into a bump arena instead of the
 * heap. A batch of 10,000 records is ~200,000 small jansson allocations; from
 * the arena each is a pointer bump and the whole tree is dropped at once.
 *
 * jansson's allocator is process-global, so the arena is switched on only
 * around json_loadb and the final json_decref, on the single event-loop
 * thread; nothing allocated in between (replies, errors) comes from it, and
 * nothing parsed may outlive ledger_jarena_drop (callers copy values out,
 * never json_incref them). Past its capacity, and for any pointer it does not
 * own, the arena falls back to malloc/free, so it never fails a parse.
 */
#include "ledger.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Virtual size; pages are touched only as a parse needs them. */
#define JARENA_SIZE (256u << 20)
/* After a parse that touched more than this, give the pages back. */
#define JARENA_KEEP (32u << 20)

static struct {
	char *base;
	size_t used, high;
} jarena;

static void *jarena_malloc(size_t n)
{
	size_t at = (jarena.used + 15) & ~(size_t)15;

	if (!jarena.base || n > JARENA_SIZE - at)
		return malloc(n);
	jarena.used = at + n;
	return jarena.base + at;
}

static void jarena_free(void *p)
{
	if (jarena.base && (char *)p >= jarena.base && (char *)p < jarena.base + JARENA_SIZE)
		return;
	free(p);
}

static void jarena_on(void)
{
	json_set_alloc_funcs(jarena_malloc, jarena_free);
}

static void jarena_off(void)
{
	json_set_alloc_funcs(malloc, free);
}

json_t *ledger_jarena_load(const char *buf, size_t len, json_error_t *err)
{
	json_t *j;

	if (!jarena.base) {
		void *p = mmap(NULL, JARENA_SIZE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		jarena.base = p == MAP_FAILED ? NULL : p; /* NULL: plain malloc */
	}
	jarena.used = 0;
	jarena_on();
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, err);
	jarena_off();
	if (jarena.used > jarena.high)
		jarena.high = jarena.used;
	return j;
}

void ledger_jarena_drop(json_t *j)
{
	jarena_on();
	json_decref(j);
	jarena_off();
	jarena.used = 0;
	if (jarena.base && jarena.high > JARENA_KEEP) {
		madvise(jarena.base, JARENA_SIZE, MADV_DONTNEED);
		jarena.high = 0;
	}
}

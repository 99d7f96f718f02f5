/* linebuf — splits a rank's stdout into lines with a hard cap.
 *
 * A rank may print anything; the agent keeps at most NODED_LINE_MAX bytes of
 * one line. A longer line is dropped whole (counted in lb->dropped) rather
 * than cut, so a truncated JSON object can never be mistaken for a real one.
 * Owns no memory beyond its fixed buffer; never allocates.
 */
#include "noded.h"

#include <string.h>

void linebuf_init(struct linebuf *lb)
{
	lb->len = 0;
	lb->dropping = 0;
	lb->dropped = 0;
}

/* Appends n bytes (no '\n' among them) to the current line, or starts dropping. */
static void linebuf_append(struct linebuf *lb, const char *p, size_t n)
{
	if (lb->dropping)
		return;
	/* keep one byte for the NUL; a line of NODED_LINE_MAX-1 bytes plus '\n' fits */
	if (lb->len + n > NODED_LINE_MAX - 1) {
		lb->dropping = 1;
		lb->len = 0;
		return;
	}
	memcpy(lb->buf + lb->len, p, n);
	lb->len += n;
}

/* Ends the current line: delivers it, or counts it as dropped. */
static void linebuf_end(struct linebuf *lb, linebuf_fn fn, void *ud)
{
	if (lb->dropping) {
		lb->dropped++;
		lb->dropping = 0;
	} else {
		lb->buf[lb->len] = 0;
		fn(lb->buf, lb->len, ud);
	}
	lb->len = 0;
}

void linebuf_feed(struct linebuf *lb, const char *data, size_t n, linebuf_fn fn, void *ud)
{
	while (n > 0) {
		const char *nl = memchr(data, '\n', n);
		size_t k = nl ? (size_t)(nl - data) : n;

		linebuf_append(lb, data, k);
		if (!nl)
			return;
		linebuf_end(lb, fn, ud);
		data += k + 1;
		n -= k + 1;
	}
}

void linebuf_finish(struct linebuf *lb, linebuf_fn fn, void *ud)
{
	if (lb->len > 0 || lb->dropping)
		linebuf_end(lb, fn, ud);
}

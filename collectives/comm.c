/* comm — communicator setup and teardown, transport choice, and the error
 * and wire-header helpers every transport shares.
 *
 * bcoll_comm_init() listens (tcp), creates the shm segment on rank 0 when
 * shm may be used, publishes "host_h<hostid>[_s<segment>]:port" through the
 * caller's rendezvous, then picks the transport: BCOLL_TRANSPORT=shm|tcp, or
 * shm when every rank published the same host id. Every rank decides from
 * the same addresses, so they agree. Nothing here runs on the hot path.
 */
#include "bcoll_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const kind_names[] = {
	[BCOLL_K_ALLREDUCE] = "allreduce", [BCOLL_K_REDUCE_SCATTER] = "reduce_scatter",
	[BCOLL_K_ALLGATHER] = "allgather", [BCOLL_K_BROADCAST] = "broadcast",
	[BCOLL_K_REDUCE] = "reduce",	   [BCOLL_K_BARRIER] = "barrier",
};

int64_t bcoll_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int bcoll_default_timeout_ms(void)
{
	const char *s = getenv("BCOLL_TIMEOUT_MS");
	char *end;
	long v;

	if (!s || !*s)
		return BCOLL_DEFAULT_TIMEOUT_MS;
	v = strtol(s, &end, 10);
	if (*end || v < 1 || v > 86400000)
		return BCOLL_DEFAULT_TIMEOUT_MS;
	return (int)v;
}

int bcoll_fail(struct bcoll_comm *c, int r, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, sizeof(c->err), "%s #%llu: %s", c->op ? c->op : "init",
		 (unsigned long long)c->seq, msg);
	return r;
}

static const char *kind_name(uint32_t k)
{
	return k < sizeof(kind_names) / sizeof(kind_names[0]) && kind_names[k] ? kind_names[k]
									       : "?";
}

void bcoll_wire_fill(const struct bcoll_comm *c, struct bcoll_wire *w, size_t len)
{
	*w = (struct bcoll_wire){.magic = BCOLL_WIRE_MAGIC, .len = len, .seq = c->seq,
				 .d = c->cur};
}

int bcoll_wire_check(struct bcoll_comm *c, const struct bcoll_wire *w, int from, size_t rlen)
{
	const struct bcoll_desc *p = &w->d, *m = &c->cur;

	if (w->magic != BCOLL_WIRE_MAGIC)
		return bcoll_fail(c, -EPROTO, "rank %d sent something that is not a libbcoll "
				  "message", from);
	if (w->seq != c->seq || memcmp(p, m, sizeof(*m)))
		return bcoll_fail(c, -EPROTO, "rank %d is in %s #%llu (count %llu, %s, %s, root "
				  "%d) but this rank is in %s #%llu (count %llu, %s, %s, root %d)",
				  from, kind_name(p->kind), (unsigned long long)w->seq,
				  (unsigned long long)p->count, bcoll_dtype_name(p->dtype),
				  bcoll_op_name(p->op), p->root, kind_name(m->kind),
				  (unsigned long long)c->seq, (unsigned long long)m->count,
				  bcoll_dtype_name(m->dtype), bcoll_op_name(m->op), m->root);
	if (w->len != rlen)
		return bcoll_fail(c, -EPROTO, "rank %d sent %llu bytes where %zu were expected",
				  from, (unsigned long long)w->len, rlen);
	return 0;
}

/* The host id a rank published ("..._h1a2b..."), or 0. */
static uint32_t addr_host(const char *a)
{
	const char *h = strstr(a, "_h");

	return h ? (uint32_t)strtoul(h + 2, NULL, 16) : 0;
}

/* Picks and connects the transport once every address is known. */
static int choose_transport(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN],
			    const char *mode)
{
	int same = 1, r;

	for (int i = 0; i < c->size; i++) {
		addrs[i][BCOLL_ADDR_LEN - 1] = 0;
		if (addr_host(addrs[i]) != addr_host(addrs[c->rank]) || !addr_host(addrs[i]))
			same = 0;
	}
	if (!strcmp(mode, "verbs")) {
		bcoll_tp_shm.destroy(c);
		if (!bcoll_verbs_connect)
			return bcoll_fail(c, -ENOTSUP, "BCOLL_TRANSPORT=verbs but this program "
					  "was built without libbcoll-verbs (DPDK)");
		return bcoll_verbs_connect(c, addrs);
	}
	if (!strcmp(mode, "shm") && !same)
		return bcoll_fail(c, -EINVAL, "BCOLL_TRANSPORT=shm but the ranks are not all on "
				  "one host");
	if (strcmp(mode, "tcp") && same && strstr(addrs[0], "_s")) {
		r = bcoll_shm_attach(c, addrs);
		if (r < 0)
			return r;
		bcoll_tp_tcp.destroy(c);
		c->tp = &bcoll_tp_shm;
		return 0;
	}
	bcoll_tp_shm.destroy(c);
	return bcoll_tcp_connect(c, addrs);
}

static int comm_connect(struct bcoll_comm *c, const struct bcoll_rendezvous *rdv)
{
	const char *mode = getenv("BCOLL_TRANSPORT");
	char(*addrs)[BCOLL_ADDR_LEN];
	char me[BCOLL_ADDR_LEN], host[32], tag[48] = "";
	int port, r;

	if (!mode || !*mode)
		mode = "auto";
	if (strcmp(mode, "auto") && strcmp(mode, "shm") && strcmp(mode, "tcp") &&
	    strcmp(mode, "verbs"))
		return bcoll_fail(c, -EINVAL, "BCOLL_TRANSPORT must be shm, tcp, verbs or auto, not "
				  "'%.20s'", mode);
	r = bcoll_tcp_listen(c, host, sizeof(host), &port);
	if (r < 0)
		return r;
	if (c->rank == 0 && strcmp(mode, "tcp")) {
		r = bcoll_shm_create(c, tag, sizeof(tag));
		if (r < 0)
			return r;
	}
	snprintf(me, sizeof(me), "%s_h%x%s%s:%d", host, bcoll_host_id(), tag[0] ? "_" : "", tag,
		 port);
	addrs = calloc(c->size, BCOLL_ADDR_LEN);
	if (!addrs)
		return bcoll_fail(c, -ENOMEM, "out of memory");
	r = rdv->exchange(rdv->ctx, c->rank, c->size, me, addrs);
	if (r < 0)
		bcoll_fail(c, r, "rendezvous of %d ranks failed: %s", c->size, strerror(-r));
	else
		r = choose_transport(c, addrs, mode);
	free(addrs);
	return r;
}

int bcoll_comm_init_err(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
			struct bcoll_comm **out, char *errbuf, size_t errlen)
{
	struct bcoll_comm *c;
	int r = -ENOMEM;

	if (errbuf && errlen)
		errbuf[0] = 0;
	if (size < 1 || size > BCOLL_MAX_RANKS || rank < 0 || rank >= size ||
	    (size > 1 && (!rdv || !rdv->exchange))) {
		if (errbuf)
			snprintf(errbuf, errlen, "invalid communicator: rank %d of size %d "
				 "(size must be 1..%d, with a rendezvous when above 1)", rank, size,
				 BCOLL_MAX_RANKS);
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->rank = rank;
	c->size = size;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : bcoll_default_timeout_ms();
	c->scratch[0] = malloc(BCOLL_SCRATCH_BYTES);
	c->scratch[1] = malloc(BCOLL_SCRATCH_BYTES);
	c->stage = malloc(BCOLL_STAGE_BYTES);
	if (!c->scratch[0] || !c->scratch[1] || !c->stage)
		goto out_free;
	r = 0;
	if (size > 1)
		r = comm_connect(c, rdv);
	if (r == 0)
		r = bcoll_tune_init(c);
	if (r < 0)
		goto out_free;
	*out = c;
	return 0;
out_free:
	if (errbuf)
		snprintf(errbuf, errlen, "%s", c->err[0] ? c->err : strerror(-r));
	bcoll_comm_destroy(c);
	return r;
}

int bcoll_comm_init(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
		    struct bcoll_comm **out)
{
	return bcoll_comm_init_err(rank, size, rdv, timeout_ms, out, NULL, 0);
}

void bcoll_abort(struct bcoll_comm *c)
{
	if (!c)
		return;
	atomic_store(&c->aborted, 1);
	if (c->shm_priv)
		bcoll_tp_shm.abort(c);
	if (c->verbs_priv)
		c->tp->abort(c);
	if (c->tp_priv)
		bcoll_tp_tcp.abort(c);
}

void bcoll_comm_destroy(struct bcoll_comm *c)
{
	if (!c)
		return;
	bcoll_queue_free(c);
	if (c->verbs_priv)
		c->tp->destroy(c);
	bcoll_tp_tcp.destroy(c);
	bcoll_tp_shm.destroy(c);
	free(c->scratch[0]);
	free(c->scratch[1]);
	free(c->stage);
	free(c);
}

int bcoll_rank(const struct bcoll_comm *c)
{
	return c->rank;
}

int bcoll_size(const struct bcoll_comm *c)
{
	return c->size;
}

const char *bcoll_transport(const struct bcoll_comm *c)
{
	return c->tp ? c->tp->name : "self";
}

const char *bcoll_last_error(const struct bcoll_comm *c)
{
	if (!c)
		return "";
	return c->user_err[0] ? c->user_err : c->err;
}

double bcoll_comm_seconds(const struct bcoll_comm *c)
{
	return c->seconds;
}

size_t bcoll_dtype_size(enum bcoll_dtype dt)
{
	switch (dt) {
	case BCOLL_F64:
	case BCOLL_I64:
		return 8;
	case BCOLL_F16:
	case BCOLL_BF16:
		return 2;
	default:
		return 4;
	}
}

const char *bcoll_dtype_name(enum bcoll_dtype dt)
{
	static const char *const n[] = {"float", "double", "int32", "int64", "half", "bfloat16"};

	return (unsigned)dt < 6 ? n[dt] : "?";
}

const char *bcoll_op_name(enum bcoll_op op)
{
	static const char *const n[] = {"sum", "avg", "min", "max"};

	return (unsigned)op < 4 ? n[op] : "?";
}

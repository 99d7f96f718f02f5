/* bcoll_int.h — libbcoll's private state: the communicator and the transfer
 * helpers the algorithms share. Not installed; only collectives/ includes it. */
#pragma once
#include "bcoll.h"

#include <stdint.h>

#define BCOLL_SCRATCH_BYTES (1u << 20) /* largest piece received before reducing */

struct bcoll_comm {
	int rank, size;
	int fd_next;  /* we send to rank+1 on this socket */
	int fd_prev;  /* we receive from rank-1 on this socket */
	int timeout_ms;
	uint64_t seq;     /* collective calls so far, for messages */
	const char *op;   /* the collective in progress, for messages */
	void *scratch;    /* BCOLL_SCRATCH_BYTES, allocated at init */
	double seconds;   /* cumulative time inside collectives */
	char err[256];
};

/* Sends slen bytes to next while receiving rlen bytes from prev, both at
 * once so a ring never deadlocks on full socket buffers. Each wait is
 * bounded by the communicator's timeout. Returns 0 or a negative errno with
 * c->err set. */
int bcoll_sendrecv(struct bcoll_comm *c, const void *sbuf, size_t slen, void *rbuf, size_t rlen);
/* Records "op #seq: <sentence>" in c->err and returns r. */
int bcoll_fail(struct bcoll_comm *c, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

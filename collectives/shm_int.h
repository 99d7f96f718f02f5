/* shm_int.h — the shared-memory transport's private layout and wait helpers,
 * shared by shm.c (the segment, waits, the ring verb) and shm_coll.c (the
 * whole-collective fast paths over the per-rank slots). Only these two
 * files include it.
 */
#pragma once
#include "bcoll_int.h"

#include <poll.h>
#include <stddef.h>

#define SHM_CL 64
#define SHM_TINY_BYTES 96 /* allreduce payloads carried in the rank's flag lines */

/* One rank's control block. `cur` is a seqlock (cur_seq 0 while it is being
 * rewritten): the collective this rank is in, read only on the slow path of a
 * wait to tell a mismatched call from a slow peer. */
struct shm_ctl {
	atomic_uint joined;
	int32_t pid;
	atomic_ullong arrive;
	struct {
		uint64_t seq;
		struct bcoll_desc d;
	} post[2]; /* by bank: rewritten only once every rank has read it */
	atomic_llong beat;     /* bcoll_now_ms() of this rank's last idle step */
	atomic_int waiting_on; /* and the rank it was waiting on then */
	char pad0[4];
	atomic_ullong cur_seq;
	struct bcoll_desc cur;
};
_Static_assert(sizeof(struct shm_ctl) == 2 * SHM_CL, "shm_ctl is two cache lines");

/* A rank's flag and payload for the smallest allreduces, in two cache lines:
 * a peer that sees seq == its own collective's number reads desc and data
 * from the lines it just pulled in. */
struct shm_tiny {
	atomic_ullong seq;
	struct bcoll_desc d;
	char data[SHM_TINY_BYTES];
};
_Static_assert(sizeof(struct shm_tiny) == 2 * SHM_CL, "shm_tiny is two cache lines");

struct shm_hdr {
	uint32_t magic, size;
	atomic_int abort_rank, abort_by;
	uint64_t slot_bytes;
	char pad[4096 - 24];
};

struct shm {
	char name[64];
	char *base;
	size_t len, slot_bytes;
	struct shm_hdr *hdr;
	struct shm_ctl *ctl;
	struct shm_tiny *tiny; /* 2 banks x size */
	char *mb;	       /* size*size boxes of sizeof(struct shm_mb) + SHM_MB_BYTES */
	char *slots;	       /* 2 banks x size slots */
	uint64_t nchunk;       /* slot uses so far: picks the bank */
	uint64_t ntiny;	       /* tiny allreduces so far: picks the tiny bank */
	uint64_t posted;       /* the seq last written to ctl[rank].cur */
	uint64_t seen_all;     /* a phase every rank is known to have reached */
	unsigned spin_max;     /* busy polls before yielding: few when ranks > CPUs */
	struct pollfd *pfd;    /* pidfds of peers, -1 when unavailable */
};

struct shm_waiter {
	unsigned spins;
	int64_t start, deadline, next_check;
};

static inline struct shm *shm_of(struct bcoll_comm *c)
{
	return c->shm_priv;
}

static inline char *shm_slot(struct shm *s, int size, int rank, int bank)
{
	return s->slots + ((size_t)bank * size + rank) * s->slot_bytes;
}

void shm_waiter_init(struct bcoll_comm *c, struct shm_waiter *w);
/* One idle step while waiting on `peer`; a negative errno (c->err set) on
 * abort, a dead or mismatched peer, or the deadline. */
int shm_idle(struct bcoll_comm *c, struct shm_waiter *w, int peer, const char *what);
/* Publishes this rank's collective (c->seq, c->cur) for mismatch checks. */
void shm_post_cur(struct bcoll_comm *c);
/* Phases: each rank's arrive counter, equal sequences on every rank (the
 * same collectives publish the same number of phases). A rank publishes a
 * phase once it is done reading every slot of earlier phases. */
uint64_t shm_next_phase(struct bcoll_comm *c);
void shm_publish(struct bcoll_comm *c, uint64_t phase);
/* Waits until rank j has published phase. */
int shm_wait_for(struct bcoll_comm *c, int j, uint64_t phase);
/* Before writing this rank's slot: every rank has published the phase
 * before the next one (free when a full phase already showed it). */
int shm_claim(struct bcoll_comm *c);
/* Publishes the next phase and waits for every rank to publish it. */
int shm_phase(struct bcoll_comm *c);
/* Starts a slot collective: claims and posts the descriptor in the bank of
 * its first use; returns that bank or a negative errno. */
int shm_begin(struct bcoll_comm *c);
/* After the first phase: rank j (or every rank) must have posted this
 * descriptor in bank. */
int shm_check_desc(struct bcoll_comm *c, int bank, int j);
int shm_check_descs(struct bcoll_comm *c, int bank);

int shm_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		  enum bcoll_dtype dt, enum bcoll_op op);
int shm_reduce_scatter(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		       enum bcoll_dtype dt, enum bcoll_op op);
int shm_allgather(struct bcoll_comm *c, const void *send, void *recv, size_t bytes);
int shm_broadcast(struct bcoll_comm *c, void *buf, size_t bytes, int root);

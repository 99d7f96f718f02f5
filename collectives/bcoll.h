/* bcoll.h — the public interface of libbcoll, bursar's collectives library.
 *
 * Shaped like NCCL/MPI: a communicator of `size` ranks is built once from a
 * rendezvous (how ranks learn each other's addresses), then every rank calls
 * the same collectives in the same order. Two transports sit behind one
 * internal interface: `shm` (every rank on one host: a shared segment per
 * communicator) and `tcp` (a full mesh of sockets). BCOLL_TRANSPORT=shm|tcp
 * forces one; by default shm is used when all ranks share a host.
 *
 * Guarantees: every wait has a deadline (BCOLL_TIMEOUT_MS, default 30 s); a
 * dead or silent peer, a peer that calls a different collective or count, or
 * bcoll_abort() turn into a negative errno and a sentence from
 * bcoll_last_error() naming the operation, its sequence number and the rank.
 * The library never raises SIGPIPE, never prints and never exits. Collective
 * calls allocate nothing: buffers are set up by bcoll_comm_init() (and by the
 * first non-blocking call, which starts the communicator's progress thread).
 */
#pragma once
#include <stddef.h>

#define BCOLL_ADDR_LEN 64	      /* "host:port" plus NUL */
#define BCOLL_MAX_RANKS 1024
#define BCOLL_DEFAULT_TIMEOUT_MS 30000
#define BCOLL_MAX_PENDING 64	      /* non-blocking requests in flight per communicator */

/* f16 (IEEE half) and bf16 are reduced in f32 and rounded once, to nearest even. */
enum bcoll_dtype { BCOLL_F32, BCOLL_F64, BCOLL_I32, BCOLL_I64, BCOLL_F16, BCOLL_BF16 };
enum bcoll_op { BCOLL_SUM, BCOLL_AVG, BCOLL_MIN, BCOLL_MAX };

/* How ranks find each other. exchange() publishes my_addr for rank and fills
 * addrs[0..size-1] with every rank's address (index = rank); returns 0 or a
 * negative errno. The caller owns ctx. The address is "host:port" where host
 * may carry libbcoll's own suffixes ("127.0.0.1_h12ab_p345:4000"); a
 * rendezvous passes it through unchanged. */
struct bcoll_rendezvous {
	int (*exchange)(void *ctx, int rank, int size, const char *my_addr,
			char (*addrs)[BCOLL_ADDR_LEN]);
	void *ctx;
};

struct bcoll_comm;
struct bcoll_req;

/* A rendezvous through a shared directory: each rank writes dir/rank-N
 * atomically and polls until all `size` files exist (deadline: the default
 * timeout). dir is borrowed and must outlive bcoll_comm_init(). */
struct bcoll_rendezvous bcoll_rendezvous_dir(const char *dir);

/* The deadline for every wait: BCOLL_TIMEOUT_MS from the environment when it
 * is a number in [1, 86400000], else BCOLL_DEFAULT_TIMEOUT_MS. */
int bcoll_default_timeout_ms(void);

/* Builds a communicator: listens on BCOLL_ADDR (IPv4, default 127.0.0.1) on
 * an ephemeral port, exchanges addresses, then either maps a shared segment
 * (shm) or connects a full mesh of sockets with a handshake that checks rank
 * and size (tcp). timeout_ms <= 0 means the default. On failure *out is
 * untouched and, when errbuf is not NULL, a sentence explaining why is
 * written there. */
int bcoll_comm_init(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
		    struct bcoll_comm **out);
/* Same, with the failure sentence copied to errbuf. */
int bcoll_comm_init_err(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
			struct bcoll_comm **out, char *errbuf, size_t errlen);
/* Waits for pending requests (bounded by the deadline), then frees. NULL is fine. */
void bcoll_comm_destroy(struct bcoll_comm *c);
/* Makes every wait of this communicator, on this rank and (best effort) on its
 * peers, fail with -ECANCELED now. Safe from another thread; the
 * communicator is unusable afterwards except for bcoll_comm_destroy(). */
void bcoll_abort(struct bcoll_comm *c);

int bcoll_rank(const struct bcoll_comm *c);
int bcoll_size(const struct bcoll_comm *c);
/* "shm" or "tcp" (or "self" for one rank). */
const char *bcoll_transport(const struct bcoll_comm *c);

/* recv[i] = op over ranks of send[i], i < count. send == recv is allowed.
 * Every rank ends with identical bits. Algorithm: see bcoll_algo_name(). */
int bcoll_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt, enum bcoll_op op);
/* recv[0..count) = op over ranks of send[rank*count .. (rank+1)*count).
 * In place when recv == send + rank*count elements. */
int bcoll_reduce_scatter(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			 enum bcoll_dtype dt, enum bcoll_op op);
/* recv[r*count + i] = send of rank r [i]. In place when send == recv + rank*count. */
int bcoll_allgather(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt);
/* buf of root is copied to every rank. */
int bcoll_broadcast(struct bcoll_comm *c, void *buf, size_t count, enum bcoll_dtype dt, int root);
/* recv of root = op over ranks of send; recv is ignored on other ranks. */
int bcoll_reduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		 enum bcoll_dtype dt, enum bcoll_op op, int root);
/* Returns once every rank has entered the barrier. */
int bcoll_barrier(struct bcoll_comm *c);

/* Non-blocking variants: start the collective on the communicator's progress
 * thread and return at once with *req set (0) or a negative errno (-EAGAIN
 * when BCOLL_MAX_PENDING are in flight). Requests run in the order started;
 * buffers must stay untouched until the request completes. A blocking call
 * waits for every pending request first. */
int bcoll_iallreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		     enum bcoll_dtype dt, enum bcoll_op op, struct bcoll_req **req);
int bcoll_ireduce_scatter(struct bcoll_comm *c, const void *send, void *recv, size_t count,
			  enum bcoll_dtype dt, enum bcoll_op op, struct bcoll_req **req);
int bcoll_iallgather(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		     enum bcoll_dtype dt, struct bcoll_req **req);
int bcoll_ibroadcast(struct bcoll_comm *c, void *buf, size_t count, enum bcoll_dtype dt, int root,
		     struct bcoll_req **req);
/* 1 when req is done (its result in *result, req released), 0 while running. */
int bcoll_test(struct bcoll_req *req, int *result);
/* Waits for req (it always finishes: every step has a deadline), releases it
 * and returns its result: 0 or a negative errno with bcoll_last_error() set. */
int bcoll_wait(struct bcoll_req *req);

/* The sentence describing the last failure ("allreduce #12: rank 1 closed
 * the connection"), or "" when none. */
const char *bcoll_last_error(const struct bcoll_comm *c);
/* Cumulative seconds spent inside blocking collective calls and waits. */
double bcoll_comm_seconds(const struct bcoll_comm *c);
size_t bcoll_dtype_size(enum bcoll_dtype dt);
const char *bcoll_dtype_name(enum bcoll_dtype dt);
const char *bcoll_op_name(enum bcoll_op op);
/* The allreduce algorithm the selector picks for this many bytes:
 * "shm-direct", "ring", "rd" or "rabenseifner". */
const char *bcoll_algo_name(const struct bcoll_comm *c, size_t bytes);

/* bcoll.h — the public interface of libbcoll, bursar's collectives library.
 *
 * Shaped like NCCL/MPI: a communicator of `size` ranks is built once from a
 * rendezvous (how ranks learn each other's addresses), then every rank calls
 * the same collectives in the same order. This minimal version connects the
 * ranks in a TCP ring and runs ring algorithms; the full library adds shm and
 * verbs transports, more algorithms and non-blocking variants behind the
 * same calls.
 *
 * Guarantees: every blocking wait has a deadline (BCOLL_TIMEOUT_MS, default
 * 30 s); a dead or silent peer turns into a negative errno and a sentence from
 * bcoll_last_error() naming the operation, its sequence number and the peer.
 * The library never raises SIGPIPE, never prints and never exits. Collective
 * calls allocate nothing: buffers are set up by bcoll_comm_init().
 */
#pragma once
#include <stddef.h>

#define BCOLL_ADDR_LEN 64	      /* "host:port" plus NUL */
#define BCOLL_MAX_RANKS 1024
#define BCOLL_DEFAULT_TIMEOUT_MS 30000

enum bcoll_dtype { BCOLL_F32, BCOLL_F64, BCOLL_I32, BCOLL_I64 };
enum bcoll_op { BCOLL_SUM, BCOLL_AVG, BCOLL_MIN, BCOLL_MAX };

/* How ranks find each other. exchange() publishes my_addr for rank and fills
 * addrs[0..size-1] with every rank's address (index = rank); returns 0 or a
 * negative errno. The caller owns ctx. */
struct bcoll_rendezvous {
	int (*exchange)(void *ctx, int rank, int size, const char *my_addr,
			char (*addrs)[BCOLL_ADDR_LEN]);
	void *ctx;
};

struct bcoll_comm;

/* A rendezvous through a shared directory: each rank writes dir/rank-N
 * atomically and polls until all `size` files exist (deadline: the default
 * timeout). dir is borrowed and must outlive bcoll_comm_init(). */
struct bcoll_rendezvous bcoll_rendezvous_dir(const char *dir);

/* The deadline for every wait: BCOLL_TIMEOUT_MS from the environment when it
 * is a number in [1, 86400000], else BCOLL_DEFAULT_TIMEOUT_MS. */
int bcoll_default_timeout_ms(void);

/* Builds a communicator: listens on BCOLL_ADDR (IPv4, default 127.0.0.1) on
 * an ephemeral port, exchanges addresses, connects to rank+1 and accepts from
 * rank-1 with a handshake that checks rank and size. timeout_ms <= 0 means
 * the default. On failure *out is untouched and, when errbuf is not NULL, a
 * sentence explaining why is written there. */
int bcoll_comm_init(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
		    struct bcoll_comm **out);
/* Same, with the failure sentence copied to errbuf. */
int bcoll_comm_init_err(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
			struct bcoll_comm **out, char *errbuf, size_t errlen);
void bcoll_comm_destroy(struct bcoll_comm *c);

int bcoll_rank(const struct bcoll_comm *c);
int bcoll_size(const struct bcoll_comm *c);

/* recv[i] = op over ranks of send[i], i < count. send == recv is allowed.
 * Ring reduce-scatter + allgather; every rank ends with identical bits. */
int bcoll_allreduce(struct bcoll_comm *c, const void *send, void *recv, size_t count,
		    enum bcoll_dtype dt, enum bcoll_op op);
/* buf of root is copied to every rank, pipelined along the ring. */
int bcoll_broadcast(struct bcoll_comm *c, void *buf, size_t count, enum bcoll_dtype dt, int root);
/* Returns once every rank has entered the barrier. */
int bcoll_barrier(struct bcoll_comm *c);

/* The sentence describing the last failure ("allreduce #12: rank 1 closed
 * the connection"), or "" when none. */
const char *bcoll_last_error(const struct bcoll_comm *c);
/* Cumulative seconds spent inside collective calls on this communicator. */
double bcoll_comm_seconds(const struct bcoll_comm *c);
size_t bcoll_dtype_size(enum bcoll_dtype dt);

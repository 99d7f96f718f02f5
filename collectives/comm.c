/* comm — communicator setup and the one transfer primitive of libbcoll.
 *
 * Owns the ring's two TCP sockets: bcoll_comm_init() listens, exchanges
 * addresses through the caller's rendezvous, connects to rank+1, accepts
 * rank-1 and checks both ends with a handshake; bcoll_sendrecv() moves bytes
 * both ways at once under a deadline and turns EOF, resets and silence into
 * sentences that name the peer. Never raises SIGPIPE (MSG_NOSIGNAL), never
 * blocks without poll() and a timeout, never allocates after init.
 */
#include "bcoll_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BCOLL_MAGIC 0x62636f6cu /* "bcol" */

struct hello {
	uint32_t magic, rank, size;
};

static int64_t now_ms(void)
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

/* True when the peer behind fd has closed or reset (checked without waiting). */
static int peer_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static int next_rank(const struct bcoll_comm *c)
{
	return (c->rank + 1) % c->size;
}

static int prev_rank(const struct bcoll_comm *c)
{
	return (c->rank + c->size - 1) % c->size;
}

/* A closed neighbour; also names the other neighbour when it is gone too, so
 * the rank that died first is named even when we noticed its neighbour. */
static int fail_closed(struct bcoll_comm *c, int r, int who, int other_fd, int other)
{
	if (other != who && peer_gone(other_fd))
		return bcoll_fail(c, r, "rank %d closed the connection (rank %d closed too)", who,
				  other);
	return bcoll_fail(c, r, "rank %d closed the connection", who);
}

int bcoll_sendrecv(struct bcoll_comm *c, const void *sbuf, size_t slen, void *rbuf, size_t rlen)
{
	const char *s = sbuf;
	char *d = rbuf;
	size_t sent = 0, got = 0;
	int64_t deadline = now_ms() + c->timeout_ms;

	while (sent < slen || got < rlen) {
		struct pollfd p[2];
		int n = 0, is = -1, ir = -1, left, k;

		if (sent < slen) {
			p[n] = (struct pollfd){.fd = c->fd_next, .events = POLLOUT | POLLRDHUP};
			is = n++;
		}
		if (got < rlen) {
			p[n] = (struct pollfd){.fd = c->fd_prev, .events = POLLIN};
			ir = n++;
		}
		left = (int)(deadline - now_ms());
		if (left < 0)
			left = 0;
		k = poll(p, n, left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return bcoll_fail(c, -errno, "poll failed: %s", strerror(errno));
		if (k == 0) {
			if (ir >= 0)
				return bcoll_fail(c, -ETIMEDOUT, "timed out after %d ms waiting for "
						  "data from rank %d", c->timeout_ms, prev_rank(c));
			return bcoll_fail(c, -ETIMEDOUT, "timed out after %d ms waiting for rank "
					  "%d to accept data", c->timeout_ms, next_rank(c));
		}
		if (is >= 0 && p[is].revents) {
			ssize_t w;

			if (p[is].revents & (POLLRDHUP | POLLHUP | POLLERR))
				return fail_closed(c, -ECONNRESET, next_rank(c), c->fd_prev,
						   prev_rank(c));
			w = send(c->fd_next, s + sent, slen - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				return fail_closed(c, -errno, next_rank(c), c->fd_prev,
						   prev_rank(c));
			if (w > 0) {
				sent += (size_t)w;
				deadline = now_ms() + c->timeout_ms;
			}
		}
		if (ir >= 0 && p[ir].revents) {
			ssize_t g = recv(c->fd_prev, d + got, rlen - got, MSG_DONTWAIT);

			if (g == 0)
				return fail_closed(c, -ECONNRESET, prev_rank(c), c->fd_next,
						   next_rank(c));
			if (g < 0 && errno != EAGAIN && errno != EINTR)
				return fail_closed(c, -errno, prev_rank(c), c->fd_next,
						   next_rank(c));
			if (g > 0) {
				got += (size_t)g;
				deadline = now_ms() + c->timeout_ms;
			}
		}
	}
	return 0;
}

/* Blocking-style exact read or write on a non-blocking fd, until deadline. */
static int io_exact(int fd, void *buf, size_t len, int writing, int64_t deadline)
{
	size_t done = 0;

	while (done < len) {
		struct pollfd p = {.fd = fd, .events = writing ? POLLOUT : POLLIN};
		int left = (int)(deadline - now_ms()), k;
		ssize_t n;

		if (left <= 0)
			return -ETIMEDOUT;
		k = poll(&p, 1, left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -ETIMEDOUT;
		if (writing)
			n = send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		else
			n = recv(fd, (char *)buf + done, len - done, MSG_DONTWAIT);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (n > 0)
			done += (size_t)n;
	}
	return 0;
}

static int set_socket_opts(int fd)
{
	int one = 1;

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[BCOLL_ADDR_LEN];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, colon - s);
	host[colon - s] = 0;
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

/* Listens on BCOLL_ADDR:0 and writes "host:port" into addr. */
static int listen_any(char addr[BCOLL_ADDR_LEN], int *out_fd)
{
	const char *host = getenv("BCOLL_ADDR");
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	int fd, r;

	if (!host || !*host)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	set_socket_opts(fd);
	snprintf(addr, BCOLL_ADDR_LEN, "%s:%u", host, ntohs(sa.sin_port));
	*out_fd = fd;
	return 0;
}

/* Connects to the next rank, retrying refused connections until deadline. */
static int connect_next(struct bcoll_comm *c, const char *addr, int64_t deadline)
{
	struct sockaddr_in sa;
	int fd, r;

	if (parse_addr(addr, &sa) < 0)
		return bcoll_fail(c, -EINVAL, "rank %d published a malformed address '%.64s'",
				  next_rank(c), addr);
	for (;;) {
		struct pollfd p;
		socklen_t sl = sizeof(r);

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return bcoll_fail(c, -errno, "socket: %s", strerror(errno));
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
		if (r == -EINPROGRESS) {
			p = (struct pollfd){.fd = fd, .events = POLLOUT};
			int left = (int)(deadline - now_ms());
			r = poll(&p, 1, left > 0 ? left : 0) == 1 ? 0 : -ETIMEDOUT;
			if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &r, &sl) == 0)
				r = -r;
		}
		if (r == 0)
			break;
		close(fd);
		if (r != -ECONNREFUSED || now_ms() >= deadline)
			return bcoll_fail(c, r, "cannot connect to rank %d at %s: %s", next_rank(c),
					  addr, strerror(-r));
		usleep(20000);
	}
	c->fd_next = fd;
	return set_socket_opts(fd);
}

/* Accepts connections until one carries the hello of rank-1; strangers
 * (wrong magic) are dropped, a wrong rank or size is an error. */
static int accept_prev(struct bcoll_comm *c, int lfd, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		struct hello h, ack = {htonl(BCOLL_MAGIC), htonl(c->rank), htonl(c->size)};
		int left = (int)(deadline - now_ms()), fd, r;

		if (left <= 0 || poll(&p, 1, left) == 0)
			return bcoll_fail(c, -ETIMEDOUT, "rank %d did not connect within %d ms",
					  prev_rank(c), c->timeout_ms);
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue;
		set_socket_opts(fd);
		r = io_exact(fd, &h, sizeof(h), 0, deadline);
		if (r < 0 || ntohl(h.magic) != BCOLL_MAGIC) {
			close(fd);
			continue;
		}
		if (ntohl(h.size) != (uint32_t)c->size || ntohl(h.rank) != (uint32_t)prev_rank(c)) {
			close(fd);
			return bcoll_fail(c, -EPROTO, "a peer connected as rank %u of %u, expected "
					  "rank %d of %d", ntohl(h.rank), ntohl(h.size),
					  prev_rank(c), c->size);
		}
		r = io_exact(fd, &ack, sizeof(ack), 1, deadline);
		if (r < 0) {
			close(fd);
			return bcoll_fail(c, r, "handshake with rank %d failed: %s", prev_rank(c),
					  strerror(-r));
		}
		c->fd_prev = fd;
		return 0;
	}
}

static int comm_connect(struct bcoll_comm *c, const struct bcoll_rendezvous *rdv)
{
	char(*addrs)[BCOLL_ADDR_LEN] = NULL;
	char me[BCOLL_ADDR_LEN];
	struct hello h = {htonl(BCOLL_MAGIC), htonl(c->rank), htonl(c->size)}, ack;
	int64_t deadline;
	int lfd = -1, r;

	r = listen_any(me, &lfd);
	if (r < 0)
		return bcoll_fail(c, r, "cannot listen on BCOLL_ADDR '%s': %s",
				  getenv("BCOLL_ADDR") ? getenv("BCOLL_ADDR") : "127.0.0.1",
				  strerror(-r));
	addrs = calloc(c->size, BCOLL_ADDR_LEN);
	if (!addrs) {
		r = bcoll_fail(c, -ENOMEM, "out of memory");
		goto out_close;
	}
	r = rdv->exchange(rdv->ctx, c->rank, c->size, me, addrs);
	if (r < 0) {
		bcoll_fail(c, r, "rendezvous of %d ranks failed: %s", c->size, strerror(-r));
		goto out_free;
	}
	deadline = now_ms() + c->timeout_ms;
	addrs[next_rank(c)][BCOLL_ADDR_LEN - 1] = 0;
	r = connect_next(c, addrs[next_rank(c)], deadline);
	if (r < 0)
		goto out_free;
	r = io_exact(c->fd_next, &h, sizeof(h), 1, deadline);
	if (r < 0) {
		bcoll_fail(c, r, "handshake with rank %d failed: %s", next_rank(c), strerror(-r));
		goto out_free;
	}
	r = accept_prev(c, lfd, deadline);
	if (r < 0)
		goto out_free;
	r = io_exact(c->fd_next, &ack, sizeof(ack), 0, deadline);
	if (r < 0) {
		bcoll_fail(c, r, "rank %d did not answer the handshake: %s", next_rank(c),
			   strerror(-r));
		goto out_free;
	}
	if (ntohl(ack.magic) != BCOLL_MAGIC || ntohl(ack.rank) != (uint32_t)next_rank(c) ||
	    ntohl(ack.size) != (uint32_t)c->size)
		r = bcoll_fail(c, -EPROTO, "the peer at %s answered as rank %u of %u, expected "
			       "rank %d of %d", addrs[next_rank(c)], ntohl(ack.rank),
			       ntohl(ack.size), next_rank(c), c->size);
out_free:
	free(addrs);
out_close:
	close(lfd);
	return r;
}

int bcoll_comm_init_err(int rank, int size, const struct bcoll_rendezvous *rdv, int timeout_ms,
			struct bcoll_comm **out, char *errbuf, size_t errlen)
{
	struct bcoll_comm *c;
	int r;

	if (errbuf && errlen)
		errbuf[0] = 0;
	if (size < 1 || size > BCOLL_MAX_RANKS || rank < 0 || rank >= size ||
	    (size > 1 && (!rdv || !rdv->exchange))) {
		if (errbuf)
			snprintf(errbuf, errlen, "invalid communicator: rank %d of size %d "
				 "(size must be 1..%d)", rank, size, BCOLL_MAX_RANKS);
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->rank = rank;
	c->size = size;
	c->fd_next = c->fd_prev = -1;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : bcoll_default_timeout_ms();
	c->scratch = malloc(BCOLL_SCRATCH_BYTES);
	if (!c->scratch) {
		r = -ENOMEM;
		goto out_free;
	}
	if (size > 1) {
		r = comm_connect(c, rdv);
		if (r < 0)
			goto out_free;
	}
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

void bcoll_comm_destroy(struct bcoll_comm *c)
{
	if (!c)
		return;
	if (c->fd_next >= 0)
		close(c->fd_next);
	if (c->fd_prev >= 0)
		close(c->fd_prev);
	free(c->scratch);
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

const char *bcoll_last_error(const struct bcoll_comm *c)
{
	return c ? c->err : "";
}

double bcoll_comm_seconds(const struct bcoll_comm *c)
{
	return c->seconds;
}

size_t bcoll_dtype_size(enum bcoll_dtype dt)
{
	return dt == BCOLL_F64 || dt == BCOLL_I64 ? 8 : 4;
}

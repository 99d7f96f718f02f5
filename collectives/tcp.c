/* tcp — libbcoll's socket transport: a full mesh of TCP connections, one per
 * pair of ranks (rank i connects to every j > i and accepts every j < i,
 * with a hello that checks rank and size), and the sendrecv verb over it.
 * Every message carries a struct bcoll_wire header, so a peer in another
 * collective, another sequence number or with another count is an error
 * before any payload lands.
 *
 * Faults are told in band: a rank whose deadline passes while waiting on X
 * sends every peer a BLOCKED notice (a header with no payload, harmless to a
 * healthy stream: readers skip it, give the sender one more deadline and pass
 * the notice on, so the whole chain of waiters waits for the verdict),
 * waits half a deadline more, peeking at every peer for a verdict, then
 * names X and sends FAILED(X) to every peer; a rank that reads FAILED(X) or
 * sees its peer close fails naming X and forwards the verdict. So a frozen
 * rank is named by every survivor, not only by its neighbours, within about
 * 1.5x the deadline. Notices go only where the stream is at a message
 * boundary (a half-sent message is finished first, briefly). Never raises SIGPIPE (MSG_NOSIGNAL), never
 * blocks outside poll() with a deadline, never allocates after setup.
 */
#include "bcoll_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BCOLL_MAGIC 0x62636f6cu /* "bcol" */
#define NOTE_BLOCKED 0x62634f42u    /* "I am stuck waiting on rank pad" */
#define NOTE_FAILED 0x62634f46u	    /* "rank pad failed": every survivor names it */
#define NOTE_SEND_MS 200	    /* finishing a half-sent message before a notice */

struct tcp {
	int lfd;
	int64_t *blocked_at; /* by rank: when it last said it was stuck, or 0 */
	int fd[];	     /* by rank; -1 for self */
};

struct hello {
	uint32_t magic, rank, size;
};

static struct tcp *tcp_of(struct bcoll_comm *c)
{
	return c->tp_priv;
}

/* True when the peer behind fd has closed or reset (checked without waiting). */
static int peer_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	return fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* A failure involving `who`; names other closed peers too, so the rank that
 * died first is named even when we noticed a rank that quit because of it. */
static int fail_peer(struct bcoll_comm *c, int r, int who, const char *what)
{
	struct tcp *t = tcp_of(c);

	if (atomic_load(&c->aborted))
		return bcoll_fail(c, -ECANCELED, "aborted");
	for (int i = 0; i < c->size; i++)
		if (i != who && i != c->rank && peer_gone(t->fd[i]))
			return bcoll_fail(c, r, "rank %d %s (rank %d closed too)", who, what, i);
	return bcoll_fail(c, r, "rank %d %s", who, what);
}

struct cursor {
	struct iovec iov[2];
	size_t done, len;
};

static void cursor_init(struct cursor *k, void *hdr, void *buf, size_t len)
{
	k->iov[0] = (struct iovec){hdr, sizeof(struct bcoll_wire)};
	k->iov[1] = (struct iovec){buf, len};
	k->done = 0;
	k->len = sizeof(struct bcoll_wire) + len;
}

/* The not-yet-done part of k as at most two iovecs. */
static int cursor_iov(const struct cursor *k, struct iovec *v)
{
	size_t h = sizeof(struct bcoll_wire);

	if (k->done < h) {
		v[0] = (struct iovec){(char *)k->iov[0].iov_base + k->done, h - k->done};
		v[1] = k->iov[1];
		return k->iov[1].iov_len ? 2 : 1;
	}
	v[0] = (struct iovec){(char *)k->iov[1].iov_base + (k->done - h), k->len - k->done};
	return 1;
}

/* Sends a notice about rank `who` to every peer but `skip` (whose stream is
 * mid-message); best effort, never blocks. */
static void tcp_notify(struct bcoll_comm *c, uint32_t magic, int who, int skip)
{
	struct tcp *t = tcp_of(c);
	struct bcoll_wire w;

	bcoll_wire_fill(c, &w, 0);
	w.magic = magic;
	w.pad = (uint32_t)who;
	for (int i = 0; i < c->size; i++)
		if (i != c->rank && i != skip && t->fd[i] >= 0)
			(void)!send(t->fd[i], &w, sizeof(w), MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Records the verdict of a FAILED notice from rank `by` naming `who`. */
static int note_failed(struct bcoll_comm *c, uint32_t who, int by, int *culprit)
{
	if (who >= (uint32_t)c->size)
		return bcoll_fail(c, -EPROTO, "rank %d sent a notice naming rank %u", by, who);
	*culprit = (int)who;
	if ((int)who == c->rank)
		return bcoll_fail(c, -ECONNRESET, "rank %d (this rank) was reported failed by "
				  "rank %d", c->rank, by);
	return bcoll_fail(c, -ECONNRESET, "rank %d failed (reported by rank %d)", (int)who, by);
}

/* Consumes notices at the head of rank i's stream (which must be at a
 * message boundary); returns a FAILED verdict as an error, else 0. */
static int take_notices(struct bcoll_comm *c, int i, int *culprit)
{
	struct tcp *t = tcp_of(c);
	struct bcoll_wire w;

	for (int k = 0; k < 8; k++) {
		if (recv(t->fd[i], &w, sizeof(w), MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof(w))
			return 0;
		if (w.magic != NOTE_FAILED && w.magic != NOTE_BLOCKED)
			return 0;
		(void)!recv(t->fd[i], &w, sizeof(w), MSG_DONTWAIT);
		if (w.magic == NOTE_BLOCKED)
			t->blocked_at[i] = bcoll_now_ms();
		if (w.magic == NOTE_FAILED)
			return note_failed(c, w.pad, i, culprit);
	}
	return 0;
}

/* Finishes a half-sent message within NOTE_SEND_MS, so a notice can follow. */
static int finish_send(struct cursor *s, int fd)
{
	int64_t end = bcoll_now_ms() + NOTE_SEND_MS;

	while (s->done > 0 && s->done < s->len) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		struct iovec v[2];
		struct msghdr m = {.msg_iov = v, .msg_iovlen = cursor_iov(s, v)};
		int left = (int)(end - bcoll_now_ms());
		ssize_t w;

		if (left <= 0 || poll(&p, 1, left) != 1)
			return -ETIMEDOUT;
		w = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (w > 0)
			s->done += (size_t)w;
	}
	return 0;
}

static int tcp_sendrecv(struct bcoll_comm *c, int to, const void *sbuf, size_t slen, int from,
			void *rbuf, size_t rlen)
{
	struct tcp *t = tcp_of(c);
	struct bcoll_wire sh, rh;
	struct cursor s, r;
	int64_t deadline = bcoll_now_ms() + c->timeout_ms;
	int checked = 0, grace = 0, extended = 0, waited = 0, culprit = -1, e;

	bcoll_wire_fill(c, &sh, slen);
	cursor_init(&s, &sh, (void *)sbuf, to >= 0 ? slen : 0);
	cursor_init(&r, &rh, rbuf, from >= 0 ? rlen : 0);
	if (to < 0)
		s.done = s.len;
	if (from < 0)
		r.done = r.len;
	while (s.done < s.len || r.done < r.len) {
		struct pollfd p[2];
		struct iovec v[2];
		int n = 0, is = -1, ir = -1, left, k;

		if (atomic_load(&c->aborted))
			return bcoll_fail(c, -ECANCELED, "aborted");
		if (s.done < s.len) {
			p[n] = (struct pollfd){.fd = t->fd[to], .events = POLLOUT | POLLRDHUP};
			is = n++;
		}
		if (r.done < r.len) {
			p[n] = (struct pollfd){.fd = t->fd[from], .events = POLLIN};
			ir = n++;
		}
		left = (int)(deadline - bcoll_now_ms());
		if (grace && left > 20)
			left = 20;
		k = poll(p, n, left > 0 ? left : 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return bcoll_fail(c, -errno, "poll failed: %s", strerror(errno));
		if (grace) {
			/* A verdict from any peer but the one mid-message to us. */
			for (int i = 0; i < c->size; i++) {
				if (i == c->rank || (i == from && r.done > 0 && r.done < r.len))
					continue;
				e = take_notices(c, i, &culprit);
				if (e < 0)
					goto fail;
			}
		}
		if (k == 0 && bcoll_now_ms() >= deadline) {
			int suspect = ir >= 0 ? from : to;

			if (!grace) {
				/* Tell peers we are stuck (so they wait for our verdict) and
				 * listen half a deadline more for theirs. */
				grace = 1;
				tcp_notify(c, NOTE_BLOCKED, suspect,
					   s.done > 0 && s.done < s.len ? to : -1);
				deadline = bcoll_now_ms() + c->timeout_ms / 2;
				continue;
			}
			if (!waited && t->blocked_at[suspect] + 2 * c->timeout_ms > bcoll_now_ms()) {
				/* It said it is stuck too: its verdict is due first. */
				waited = 1;
				deadline = t->blocked_at[suspect] + 2 * c->timeout_ms;
				continue;
			}
			culprit = suspect;
			e = ir >= 0 ? fail_peer(c, -ETIMEDOUT, from, "sent nothing for the deadline")
				    : fail_peer(c, -ETIMEDOUT, to, "accepted nothing for the deadline");
			goto fail;
		}
		if (is >= 0 && p[is].revents) {
			struct msghdr m = {.msg_iov = v, .msg_iovlen = cursor_iov(&s, v)};
			ssize_t w;

			if (p[is].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
				/* A peer that failed tells why before it closes. */
				if (to != from || r.done == 0 || r.done == r.len) {
					e = take_notices(c, to, &culprit);
					if (e < 0)
						goto fail;
				}
				culprit = to;
				e = fail_peer(c, -ECONNRESET, to, "closed the connection");
				goto fail;
			}
			w = sendmsg(t->fd[to], &m, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				culprit = to;
				e = fail_peer(c, -errno, to, "closed the connection");
				goto fail;
			}
			if (w > 0) {
				s.done += (size_t)w;
				deadline = bcoll_now_ms() + c->timeout_ms / (grace ? 2 : 1);
			}
		}
		if (ir >= 0 && p[ir].revents) {
			struct msghdr m = {.msg_iov = v, .msg_iovlen = cursor_iov(&r, v)};
			ssize_t g;

			/* Read the header alone first so a wrong length never overruns. */
			if (!checked)
				m.msg_iovlen = 1;
			g = recvmsg(t->fd[from], &m, MSG_DONTWAIT);
			if (g == 0 || (g < 0 && errno != EAGAIN && errno != EINTR)) {
				culprit = from;
				e = fail_peer(c, g == 0 ? -ECONNRESET : -errno, from,
					      "closed the connection");
				goto fail;
			}
			if (g > 0) {
				r.done += (size_t)g;
				deadline = bcoll_now_ms() + c->timeout_ms / (grace ? 2 : 1);
			}
			if (!checked && r.done >= sizeof(rh)) {
				if (rh.magic == NOTE_BLOCKED) {
					/* Alive but stuck: give it time to send its verdict. */
					r.done = 0;
					t->blocked_at[from] = bcoll_now_ms();
					if (!extended) {
						/* And so are we: tell those waiting on us too. */
						extended = 1;
						deadline = bcoll_now_ms() + c->timeout_ms;
						if (!grace)
							tcp_notify(c, NOTE_BLOCKED, from,
								   s.done > 0 && s.done < s.len ? to : -1);
					}
					continue;
				}
				if (rh.magic == NOTE_FAILED) {
					e = note_failed(c, rh.pad, from, &culprit);
					goto fail;
				}
				e = bcoll_wire_check(c, &rh, from, rlen);
				if (e < 0)
					return e;
				checked = 1;
			}
		}
	}
	return 0;
fail:
	/* Every survivor must name the culprit: pass the verdict on. */
	if (e != -ECANCELED && e != -EPROTO && culprit >= 0 && culprit < c->size) {
		int skip = -1;

		if (to >= 0 && finish_send(&s, t->fd[to]) < 0)
			skip = to;
		tcp_notify(c, NOTE_FAILED, culprit, skip);
	}
	return e;
}

/* Blocking-style exact read or write on a non-blocking fd, until deadline. */
static int io_exact(int fd, void *buf, size_t len, int writing, int64_t deadline)
{
	size_t done = 0;

	while (done < len) {
		struct pollfd p = {.fd = fd, .events = writing ? POLLOUT : POLLIN};
		int left = (int)(deadline - bcoll_now_ms()), k;
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

static void set_socket_opts(int fd)
{
	int one = 1, buf = 4 << 20;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

/* "ip[_suffix...]:port" -> sockaddr. */
static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[BCOLL_ADDR_LEN];
	const char *colon = strrchr(s, ':');
	char *end;
	size_t hl;
	long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	hl = strcspn(s, "_:");
	memcpy(host, s, hl);
	host[hl] = 0;
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

int bcoll_tcp_listen(struct bcoll_comm *c, char *host_out, size_t hlen, int *port_out)
{
	const char *host = getenv("BCOLL_ADDR");
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	struct tcp *t;
	int fd;

	if (!host || !*host)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return bcoll_fail(c, -EINVAL, "BCOLL_ADDR '%.40s' is not an IPv4 address", host);
	t = malloc(sizeof(*t) + sizeof(int) * c->size);
	if (!t)
		return bcoll_fail(c, -ENOMEM, "out of memory");
	t->lfd = -1;
	for (int i = 0; i < c->size; i++)
		t->fd[i] = -1;
	t->blocked_at = calloc(c->size, sizeof(*t->blocked_at));
	c->tp_priv = t;
	c->tp = &bcoll_tp_tcp;
	if (!t->blocked_at)
		return bcoll_fail(c, -ENOMEM, "out of memory");
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bcoll_fail(c, -errno, "socket: %s", strerror(errno));
	t->lfd = fd;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, BCOLL_MAX_RANKS) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		return bcoll_fail(c, -errno, "cannot listen on %s: %s", host, strerror(errno));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	snprintf(host_out, hlen, "%s", host);
	*port_out = ntohs(sa.sin_port);
	return 0;
}

/* Connects to rank j, retrying refused connections until deadline, and says hello. */
static int connect_to(struct bcoll_comm *c, int j, const char *addr, int64_t deadline)
{
	struct hello h = {htonl(BCOLL_MAGIC), htonl(c->rank), htonl(c->size)};
	struct sockaddr_in sa;
	int fd, r;

	if (parse_addr(addr, &sa) < 0)
		return bcoll_fail(c, -EINVAL, "rank %d published a malformed address '%.64s'", j,
				  addr);
	for (;;) {
		socklen_t sl = sizeof(r);

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return bcoll_fail(c, -errno, "socket: %s", strerror(errno));
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
		if (r == -EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int left = (int)(deadline - bcoll_now_ms());

			r = poll(&p, 1, left > 0 ? left : 0) == 1 ? 0 : -ETIMEDOUT;
			if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &r, &sl) == 0)
				r = -r;
		}
		if (r == 0)
			break;
		close(fd);
		if (r != -ECONNREFUSED || bcoll_now_ms() >= deadline)
			return bcoll_fail(c, r, "cannot connect to rank %d at %s: %s", j, addr,
					  strerror(-r));
		usleep(20000);
	}
	tcp_of(c)->fd[j] = fd;
	set_socket_opts(fd);
	r = io_exact(fd, &h, sizeof(h), 1, deadline);
	if (r < 0)
		return bcoll_fail(c, r, "handshake with rank %d failed: %s", j, strerror(-r));
	return 0;
}

/* Accepts one connection from a lower rank; strangers (wrong magic) are
 * dropped, a wrong size, a rank out of range or a rank joining twice is an error. */
static int accept_one(struct bcoll_comm *c, int64_t deadline)
{
	struct tcp *t = tcp_of(c);

	for (;;) {
		struct pollfd p = {.fd = t->lfd, .events = POLLIN};
		struct hello h, ack = {htonl(BCOLL_MAGIC), htonl(c->rank), htonl(c->size)};
		int left = (int)(deadline - bcoll_now_ms()), fd, r;
		uint32_t hr;

		if (left <= 0 || poll(&p, 1, left) == 0) {
			int missing = 0;

			while (missing < c->rank && t->fd[missing] >= 0)
				missing++;
			return bcoll_fail(c, -ETIMEDOUT, "rank %d did not connect within %d ms",
					  missing, c->timeout_ms);
		}
		fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue;
		set_socket_opts(fd);
		r = io_exact(fd, &h, sizeof(h), 0, deadline);
		if (r < 0 || ntohl(h.magic) != BCOLL_MAGIC) {
			close(fd);
			continue;
		}
		hr = ntohl(h.rank);
		if (ntohl(h.size) != (uint32_t)c->size || hr >= (uint32_t)c->rank) {
			close(fd);
			return bcoll_fail(c, -EPROTO, "a peer connected as rank %u of %u, expected "
					  "a rank below %d of %d", hr, ntohl(h.size), c->rank,
					  c->size);
		}
		if (t->fd[hr] >= 0) {
			close(fd);
			return bcoll_fail(c, -EPROTO, "rank %u joined twice", hr);
		}
		r = io_exact(fd, &ack, sizeof(ack), 1, deadline);
		if (r < 0) {
			close(fd);
			return bcoll_fail(c, r, "handshake with rank %u failed: %s", hr,
					  strerror(-r));
		}
		t->fd[hr] = fd;
		return 0;
	}
}

int bcoll_tcp_connect(struct bcoll_comm *c, char (*addrs)[BCOLL_ADDR_LEN])
{
	struct tcp *t = tcp_of(c);
	int64_t deadline = bcoll_now_ms() + c->timeout_ms;
	int r;

	for (int j = c->rank + 1; j < c->size; j++) {
		r = connect_to(c, j, addrs[j], deadline);
		if (r < 0)
			return r;
	}
	for (int j = 0; j < c->rank; j++) {
		r = accept_one(c, deadline);
		if (r < 0)
			return r;
	}
	for (int j = c->rank + 1; j < c->size; j++) {
		struct hello ack;

		r = io_exact(t->fd[j], &ack, sizeof(ack), 0, deadline);
		if (r < 0)
			return bcoll_fail(c, r, "rank %d did not answer the handshake: %s", j,
					  strerror(-r));
		if (ntohl(ack.magic) != BCOLL_MAGIC || ntohl(ack.rank) != (uint32_t)j ||
		    ntohl(ack.size) != (uint32_t)c->size)
			return bcoll_fail(c, -EPROTO, "the peer at %s answered as rank %u of %u, "
					  "expected rank %d of %d", addrs[j], ntohl(ack.rank),
					  ntohl(ack.size), j, c->size);
	}
	close(t->lfd);
	t->lfd = -1;
	return 0;
}

static void tcp_abort(struct bcoll_comm *c)
{
	struct tcp *t = tcp_of(c);

	for (int i = 0; t && i < c->size; i++)
		if (t->fd[i] >= 0)
			shutdown(t->fd[i], SHUT_RDWR);
}

static void tcp_destroy(struct bcoll_comm *c)
{
	struct tcp *t = tcp_of(c);

	if (!t)
		return;
	for (int i = 0; i < c->size; i++)
		if (t->fd[i] >= 0)
			close(t->fd[i]);
	if (t->lfd >= 0)
		close(t->lfd);
	free(t->blocked_at);
	free(t);
	c->tp_priv = NULL;
}

const struct bcoll_tp bcoll_tp_tcp = {
	.name = "tcp",
	.sendrecv = tcp_sendrecv,
	.abort = tcp_abort,
	.destroy = tcp_destroy,
};

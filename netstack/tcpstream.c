/* tcpstream.c — bnet-tcpstream, the kernel-TCP baseline of the netstack
 * benchmark: an iperf-style stream of BYTES, REPS times, over one connection;
 * after each message the server answers one byte, so the client times from
 * its first byte out to the server holding the whole message (what an RDMA
 * WRITE's completion means). Prints the best repeat as goodput.
 *
 *   bnet-tcpstream server IP PORT
 *   bnet-tcpstream client IP PORT BYTES REPS
 *
 * Sizes are capped (1 GiB, 1000 repeats); the server serves one client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES (1ull << 30)
#define MAX_REPS 1000
#define CHUNK (1u << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int full_io(int fd, void *buf, size_t len, int out)
{
	char *p = buf;

	while (len) {
		ssize_t n = out ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int addr_of(const char *ip, const char *port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(port));
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -EINVAL;
}

/* Receives [bytes u64][reps u32], then each message, answering one byte. */
static int serve(int fd)
{
	uint64_t bytes;
	uint32_t reps;
	char *buf = malloc(CHUNK), ok = 1;
	int r;

	if (!buf)
		return -ENOMEM;
	r = full_io(fd, &bytes, sizeof(bytes), 0);
	if (r == 0)
		r = full_io(fd, &reps, sizeof(reps), 0);
	if (r == 0 && (bytes > MAX_BYTES || reps > MAX_REPS))
		r = -EMSGSIZE;
	for (uint32_t k = 0; r == 0 && k < reps; k++) {
		for (uint64_t got = 0; r == 0 && got < bytes;) {
			ssize_t n = recv(fd, buf, bytes - got < CHUNK ? bytes - got : CHUNK, 0);

			if (n < 0 && errno == EINTR)
				continue;
			r = n > 0 ? 0 : n < 0 ? -errno : -ECONNRESET;
			got += n > 0 ? (uint64_t)n : 0;
		}
		if (r == 0)
			r = full_io(fd, &ok, 1, 1);
	}
	free(buf);
	return r;
}

static int run_client(int fd, uint64_t bytes, uint32_t reps)
{
	char *buf = calloc(1, CHUNK), ack;
	uint64_t best = UINT64_MAX;
	int r;

	if (!buf)
		return -ENOMEM;
	r = full_io(fd, &bytes, sizeof(bytes), 1);
	if (r == 0)
		r = full_io(fd, &reps, sizeof(reps), 1);
	for (uint32_t k = 0; r == 0 && k < reps; k++) {
		uint64_t t0 = now_ns();

		for (uint64_t off = 0; r == 0 && off < bytes; off += CHUNK)
			r = full_io(fd, buf, bytes - off < CHUNK ? bytes - off : CHUNK, 1);
		if (r == 0)
			r = full_io(fd, &ack, 1, 0);
		if (r == 0 && now_ns() - t0 < best)
			best = now_ns() - t0;
	}
	if (r == 0)
		printf("goodput_tcp_bytes=%llu ns=%llu gbps=%.3f\n", (unsigned long long)bytes,
		       (unsigned long long)best, bytes * 8.0 / (double)best);
	free(buf);
	return r;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;
	int fd, one = 1, r;

	if (argc < 4 || (strcmp(argv[1], "server") && (strcmp(argv[1], "client") || argc < 6)) ||
	    addr_of(argv[2], argv[3], &sa) < 0) {
		fprintf(stderr, "usage: bnet-tcpstream server IP PORT | client IP PORT BYTES REPS\n");
		return 2;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (!strcmp(argv[1], "server")) {
		int c;

		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
			perror("bnet-tcpstream: bind/listen");
			return 1;
		}
		c = accept(fd, NULL, NULL);
		r = c < 0 ? -errno : serve(c);
		if (c >= 0)
			close(c);
	} else {
		unsigned long long bytes = strtoull(argv[4], NULL, 0);
		long reps = atol(argv[5]);

		if (!bytes || bytes > MAX_BYTES || reps < 1 || reps > MAX_REPS) {
			fprintf(stderr, "bnet-tcpstream: BYTES 1..%llu, REPS 1..%d\n", MAX_BYTES,
				MAX_REPS);
			return 2;
		}
		/* the server may not listen yet: a fresh socket per try */
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
		for (int t = 0; t < 50 && r < 0; t++) {
			usleep(100000);
			close(fd);
			fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd < 0)
				return 1;
			r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
		}
		if (r == 0)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (r == 0)
			r = run_client(fd, bytes, (uint32_t)reps);
	}
	close(fd);
	if (r < 0)
		fprintf(stderr, "bnet-tcpstream %s: %s\n", argv[1], strerror(-r));
	return r < 0;
}

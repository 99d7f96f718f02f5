/* peer.c — bnet-peer, two processes talking RoCEv2 over a DPDK port: the
 * server registers a buffer and checks what lands in it; the client sends
 * each size as RDMA WRITE (then a SEND marker), WRITE WITH IMM and SEND, and
 * waits for the server's verdict before the next one. Used by the tests and
 * by the benchmark (--bench: one timed WRITE stream, goodput printed).
 *
 *   bnet-peer server|client IP PEER_IP INFO_FILE SIZES [--bench] [--pmtu N]
 *             [--reps N] -- EAL args
 *
 * --bench times the WRITE of each size (--reps times, the best printed);
 * --pmtu sets the path MTU (default 1024; 4096 needs an L2 MTU above 4170;
 * net_af_xdp holds 2048 at most, with an L2 MTU of 2200..3400 on a veth).
 *
 * INFO_FILE carries the server's buffer address and rkey to the client.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "bnet.h"

#define MAX_SIZE (64u << 20)
#define MAX_SIZES 32
static uint32_t pmtu = 1024;
static int reps = 1;

static uint32_t parse_ip(const char *s)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1) {
		fprintf(stderr, "bnet-peer: bad IPv4 address '%s'\n", s);
		exit(2);
	}
	return ntohl(a.s_addr);
}

static void pattern(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		memcpy(p + i, &s, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)(i * 131 + seed);
}

struct ctx {
	struct bnet_port *port;
	struct bnet_qp *qp;
	struct bnet_cq scq, rcq;
	struct bnet_pd pd;
};

/* Polls until one completion arrives on cq; -ETIMEDOUT or -ENOTCONN. */
static int wait_wc(struct ctx *c, struct bnet_cq *cq, struct bnet_wc *wc, uint64_t timeout_ns)
{
	uint64_t end = bnet_now_ns() + timeout_ns;

	for (;;) {
		int r = bnet_port_poll(c->port);

		if (r < 0)
			return r;
		if (bnet_cq_poll(cq, wc, 1) == 1)
			return 0;
		if (bnet_now_ns() > end)
			return -ETIMEDOUT;
	}
}

static int post_and_wait(struct ctx *c, struct bnet_send_wr *wr)
{
	struct bnet_wc wc;
	int r = bnet_post_send(c->qp, wr);

	if (r < 0)
		return r;
	r = wait_wc(c, &c->scq, &wc, 60ull * 1000000000);
	if (r < 0)
		return r;
	return wc.status == BNET_WC_SUCCESS ? 0 : -EIO;
}

static const char *modes[] = { "write", "write_imm", "send" };

static int run_server(struct ctx *c, uint8_t *buf, uint32_t *sizes, int n, const char *info)
{
	uint8_t *want = malloc(MAX_SIZE);
	uint32_t verdict, idx = 0;
	struct bnet_wc wc;
	struct bnet_mr *mr;
	FILE *f;
	char tmp[4096];
	int r, fails = 0;

	if (!want)
		return -ENOMEM;
	r = bnet_reg_mr(&c->pd, buf, MAX_SIZE, &mr);
	if (r < 0)
		return r;
	snprintf(tmp, sizeof(tmp), "%s.tmp", info);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%llu %u\n", (unsigned long long)(uintptr_t)buf, mr->rkey);
	fclose(f);
	rename(tmp, info);
	for (int i = 0; i < n; i++)
		for (int m = 0; m < 3; m++, idx++) {
			bnet_post_recv(c->qp, idx, buf, MAX_SIZE);
			r = wait_wc(c, &c->rcq, &wc, 60ull * 1000000000);
			if (r < 0) {
				printf("FAIL bnet_%s_%u: no completion: %s\n", modes[m], sizes[i], strerror(-r));
				return r;
			}
			pattern(want, sizes[i], idx);
			verdict = wc.status == BNET_WC_SUCCESS && (wc.imm == idx || m == 2) &&
				  (m == 0 || wc.byte_len == sizes[i]) && !memcmp(buf, want, sizes[i]);
			if (!verdict) {
				fails++;
				printf("FAIL bnet_%s_%u: status %d imm %u len %u data %s\n", modes[m], sizes[i],
				       wc.status, wc.imm, wc.byte_len,
				       memcmp(buf, want, sizes[i]) ? "differs" : "ok");
			}
			struct bnet_send_wr wr = { .op = BNET_WR_SEND_IMM, .imm = verdict };
			r = post_and_wait(c, &wr);
			if (r < 0)
				return r;
		}
	free(want);
	return fails ? -EIO : 0;
}

static int run_client(struct ctx *c, uint8_t *buf, uint32_t *sizes, int n, const char *info,
		      int bench)
{
	unsigned long long va = 0;
	uint32_t rkey = 0, idx = 0;
	struct bnet_wc wc;
	FILE *f = NULL;
	int r;

	for (int t = 0; t < 300 && !f; t++) {
		f = fopen(info, "r");
		if (!f)
			usleep(100000);
	}
	if (!f || fscanf(f, "%llu %u", &va, &rkey) != 2)
		return -ENOENT;
	fclose(f);
	for (int i = 0; i < n; i++)
		for (int m = 0; m < 3; m++, idx++) {
			struct bnet_send_wr wr = { .addr = buf, .len = sizes[i], .remote_va = va,
						   .rkey = rkey, .imm = idx };
			uint64_t t0, best = UINT64_MAX;

			pattern(buf, sizes[i], idx);
			bnet_post_recv(c->qp, idx, NULL, 0);
			wr.op = m == 0 ? BNET_WR_WRITE : m == 1 ? BNET_WR_WRITE_IMM : BNET_WR_SEND;
			/* the timed repeats write the same bytes; the server checks once */
			for (int k = 0; k < (bench && m == 0 ? reps : 1); k++) {
				t0 = bnet_now_ns();
				r = post_and_wait(c, &wr);
				if (r < 0)
					break;
				if (bnet_now_ns() - t0 < best)
					best = bnet_now_ns() - t0;
			}
			if (r == 0 && bench && m == 0)
				printf("goodput_write_bytes=%u ns=%llu gbps=%.3f\n", sizes[i],
				       (unsigned long long)best, sizes[i] * 8.0 / (double)best);
			if (r == 0 && m == 0) { /* the marker that tells the server to look */
				struct bnet_send_wr mk = { .op = BNET_WR_SEND_IMM, .imm = idx };
				r = post_and_wait(c, &mk);
			}
			if (r == 0)
				r = wait_wc(c, &c->rcq, &wc, 60ull * 1000000000);
			if (r < 0) {
				printf("FAIL bnet_%s_%u: %s\n", modes[m], sizes[i], strerror(-r));
				return r;
			}
			if (wc.imm == 1)
				printf("PASS bnet_%s_%u\n", modes[m], sizes[i]);
			else
				printf("FAIL bnet_%s_%u: the server saw different bytes\n", modes[m], sizes[i]);
			fflush(stdout);
		}
	struct bnet_stats *s = bnet_qp_stats(c->qp);
	printf("client: %llu pkts, %llu retransmits, %llu timeouts, %llu NAKs received\n",
	       (unsigned long long)s->tx_pkts, (unsigned long long)s->retransmits,
	       (unsigned long long)s->timeouts, (unsigned long long)s->naks_rcvd);
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t sizes[MAX_SIZES];
	int n = 0, bench = 0, sep = 0, server, r;
	struct ctx c = { 0 };
	uint8_t *buf;
	char *s, *tok;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			sep = i;
			break;
		} else if (!strcmp(argv[i], "--bench")) {
			bench = 1;
		} else if (!strcmp(argv[i], "--pmtu") && i + 1 < argc) {
			pmtu = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
			if (reps < 1 || reps > 1000)
				reps = 1;
		}
	if (sep < 6) {
		fprintf(stderr, "usage: bnet-peer server|client IP PEER_IP INFO_FILE SIZES [--bench] -- EAL args\n");
		return 2;
	}
	server = !strcmp(argv[1], "server");
	for (s = argv[5]; (tok = strsep(&s, ",")) && n < MAX_SIZES;) {
		unsigned long v = strtoul(tok, NULL, 0);

		if (v > MAX_SIZE) {
			fprintf(stderr, "bnet-peer: size %lu over the limit %u\n", v, MAX_SIZE);
			return 2;
		}
		sizes[n++] = (uint32_t)v;
	}
	buf = aligned_alloc(4096, MAX_SIZE);
	if (!buf)
		return 1;
	argv[sep] = argv[0];
	r = bnet_port_open(argc - sep, argv + sep, parse_ip(argv[2]), &c.port);
	if (r < 0) {
		fprintf(stderr, "bnet-peer: cannot open the DPDK port: %s\n", strerror(-r));
		return 1;
	}
	if (pmtu > bnet_port_max_pmtu(c.port)) {
		fprintf(stderr, "bnet-peer: --pmtu %u: this port's frames hold at most %u\n", pmtu,
			bnet_port_max_pmtu(c.port));
		r = -EMSGSIZE;
		goto out;
	}
	r = bnet_port_wait_link(c.port, 30ull * 1000000000);
	if (r == 0)
		r = bnet_port_resolve(c.port, parse_ip(argv[3]), 30ull * 1000000000);
	if (r < 0) {
		fprintf(stderr, "bnet-peer: no link to the peer: %s\n", strerror(-r));
		goto out;
	}
	bnet_pd_init(&c.pd, server ? 0x5000 : 0x6000);
	bnet_cq_init(&c.scq, 256);
	bnet_cq_init(&c.rcq, 256);
	/* 100 timeouts of 20 ms without progress (2 s): a loaded 2-core test host
	 * can starve one of the two polling processes for a while */
	struct bnet_qp_attr a = {
		.qpn = server ? 0x100 : 0x200, .dest_qpn = server ? 0x200 : 0x100,
		.sq_psn = server ? 1000 : 2000, .rq_psn = server ? 2000 : 1000,
		.pmtu = pmtu, .max_send_wr = 64, .max_recv_wr = 64, .window = 256,
		.ack_every = 32, .timeout_ns = 20000000, .retry_cnt = 100,
		.pd = &c.pd, .send_cq = &c.scq, .recv_cq = &c.rcq, .tx = bnet_port_tx,
		.tx_arg = c.port,
	};
	r = bnet_qp_create(&a, &c.qp);
	if (r == 0)
		r = bnet_port_attach(c.port, c.qp);
	if (r == 0)
		r = server ? run_server(&c, buf, sizes, n, argv[4])
			   : run_client(&c, buf, sizes, n, argv[4], bench);
	if (r == 0) /* let the last ACKs reach the peer before the link goes */
		for (uint64_t end = bnet_now_ns() + 200000000; bnet_now_ns() < end;)
			if (bnet_port_poll(c.port) < 0)
				break;
	struct bnet_stats *ps = bnet_port_stats(c.port), *qs = c.qp ? bnet_qp_stats(c.qp) : NULL;
	fprintf(stderr, "bnet-peer %s: dropped frames: %llu bad icrc, %llu short, %llu oversize, %llu wrong qpn\n",
		argv[1], (unsigned long long)ps->bad_icrc, (unsigned long long)ps->short_pkts,
		(unsigned long long)ps->oversize, (unsigned long long)ps->wrong_qpn);
	if (qs)
		fprintf(stderr, "bnet-peer %s: qp: %llu out of sequence, %llu duplicates, %llu NAKs "
			"sent, %llu ACKs sent, %llu timeouts\n", argv[1],
			(unsigned long long)qs->out_of_seq, (unsigned long long)qs->dup_pkts,
			(unsigned long long)qs->naks_sent, (unsigned long long)qs->acks_sent,
			(unsigned long long)qs->timeouts);
	bnet_qp_destroy(c.qp);
	bnet_cq_destroy(&c.scq);
	bnet_cq_destroy(&c.rcq);
out:
	bnet_port_close(c.port);
	free(buf);
	return r < 0 ? 1 : 0;
}

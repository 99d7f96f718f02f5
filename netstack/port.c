/* port.c — a DPDK port for libbnet: EAL and port setup (any PMD; hugepages
 * or --no-huge), one mbuf pool made at open, ARP (answer and resolve), and the
 * polling loop that decodes frames, hands them to the attached queue pairs and
 * sends what they emit in bursts. Owns the port; never allocates on the poll
 * path beyond mbufs from its pool. The memif PMD crashes when polled after its
 * peer went away, so every poll checks the link first and a port whose link
 * dropped is never polled again (-ENOTCONN).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "bnet.h"

#define NB_MBUF 8191
/* one mbuf holds a whole frame of the largest path MTU: the memif PMD chains
 * smaller mbufs on receive (which we drop) and encode cannot split a frame */
#define MBUF_ROOM (RTE_PKTMBUF_HEADROOM + ((BNET_MAX_FRAME + 63) & ~63))
/* net_af_xdp makes the pool its umem, one chunk per mbuf, and a chunk is at
 * most a page (without hugepages); the kernel keeps 256 bytes of XDP
 * headroom in it: frames up to path MTU 2048 */
#define XDP_PMTU 2048
#define XDP_FRAME (BNET_MAX_HDRS + XDP_PMTU + BNET_ICRC_LEN)
#define MBUF_ROOM_XDP (RTE_PKTMBUF_HEADROOM + ((XDP_FRAME + 63) & ~63) + 256)
#define RX_DESC 1024
#define TX_DESC 1024
#define BURST 32
/* frames the PMD did not take yet wait here, in order, for the next flush;
 * when it is full, bnet_port_tx says -EAGAIN and the QP retries the packet
 * later (backpressure, where dropping would cost a retransmit timeout) */
#define TXQ 512
#define TX_BATCH 64
#define MAX_QPS 16

struct bnet_port {
	uint16_t port_id;
	uint32_t max_pmtu;
	struct rte_mempool *pool;
	struct rte_ether_addr mac;
	uint32_t ip;
	uint32_t peer_ip;
	uint8_t peer_mac[6];
	int peer_known, was_up, dead;
	struct bnet_qp *qps[MAX_QPS];
	int n_qps;
	struct rte_mbuf *txq[TXQ];
	int n_tx;
	struct bnet_stats st;
};

uint64_t bnet_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int bnet_eal_init(int argc, char **argv)
{
	if (rte_eal_init(argc, argv) < 0)
		return -rte_errno ? -rte_errno : -EINVAL;
	return 0;
}

void bnet_eal_cleanup(void)
{
	rte_eal_cleanup();
}

int bnet_port_start(const char *name, uint32_t ip, struct bnet_port **out)
{
	struct rte_eth_conf conf = { 0 };
	struct rte_eth_dev_info info;
	uint16_t room = MBUF_ROOM;
	struct bnet_port *p;
	char pool[32];
	uint16_t id = 0;
	int r;

	if (name) {
		if (rte_eth_dev_get_port_by_name(name, &id) < 0)
			return -ENODEV;
	} else if (rte_eth_dev_count_avail() < 1) {
		return -ENODEV;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->port_id = id;
	p->ip = ip;
	p->max_pmtu = BNET_MAX_PMTU;
	snprintf(pool, sizeof(pool), "bnet_pool%u", id);
	if (rte_eth_dev_info_get(id, &info) == 0 && info.driver_name &&
	    !strcmp(info.driver_name, "net_af_xdp")) {
		room = MBUF_ROOM_XDP;
		p->max_pmtu = XDP_PMTU;
	}
	p->pool = rte_pktmbuf_pool_create(pool, NB_MBUF, 256, 0, room,
					  (int)rte_socket_id());
	if (!p->pool) {
		r = -ENOMEM;
		goto out_free;
	}
	r = rte_eth_dev_configure(p->port_id, 1, 1, &conf);
	if (r < 0)
		goto out_pool;
	r = rte_eth_rx_queue_setup(p->port_id, 0, RX_DESC, rte_eth_dev_socket_id(p->port_id), NULL,
				   p->pool);
	if (r < 0)
		goto out_pool;
	r = rte_eth_tx_queue_setup(p->port_id, 0, TX_DESC, rte_eth_dev_socket_id(p->port_id), NULL);
	if (r < 0)
		goto out_pool;
	r = rte_eth_dev_start(p->port_id);
	if (r < 0)
		goto out_pool;
	rte_eth_promiscuous_enable(p->port_id);
	rte_eth_macaddr_get(p->port_id, &p->mac);
	*out = p;
	return 0;
out_pool:
	rte_mempool_free(p->pool);
out_free:
	free(p);
	return r;
}

int bnet_port_open(int argc, char **argv, uint32_t ip, struct bnet_port **out)
{
	int r = bnet_eal_init(argc, argv);

	return r < 0 ? r : bnet_port_start(NULL, ip, out);
}

void bnet_port_stop(struct bnet_port *p)
{
	if (!p)
		return;
	rte_pktmbuf_free_bulk(p->txq, (unsigned)p->n_tx);
	/* a memif whose peer is gone must not be touched beyond stop/close */
	rte_eth_dev_stop(p->port_id);
	rte_eth_dev_close(p->port_id);
	rte_mempool_free(p->pool);
	free(p);
}

void bnet_port_close(struct bnet_port *p)
{
	if (!p)
		return;
	bnet_port_stop(p);
	rte_eal_cleanup();
}

int bnet_port_dead(const struct bnet_port *p)
{
	return p->dead;
}

/* 1 while the link is up; once it was up and dropped, the port is dead. */
static int link_ok(struct bnet_port *p)
{
	struct rte_eth_link link;

	if (p->dead)
		return 0;
	if (rte_eth_link_get_nowait(p->port_id, &link) < 0)
		return 0;
	if (link.link_status) {
		p->was_up = 1;
		return 1;
	}
	if (p->was_up)
		p->dead = 1;
	return 0;
}

int bnet_port_wait_link(struct bnet_port *p, uint64_t timeout_ns)
{
	uint64_t end = bnet_now_ns() + timeout_ns;

	while (bnet_now_ns() < end) {
		if (link_ok(p))
			return 0;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

int bnet_port_wait_down(struct bnet_port *p, uint64_t timeout_ns)
{
	uint64_t end = bnet_now_ns() + timeout_ns;

	while (bnet_now_ns() < end) {
		if (!link_ok(p) && p->dead)
			return 0;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

/* Hands queued frames to the PMD; what it does not take (ring full: the
 * peer is slow or descheduled) stays queued, in order, for the next call. */
static void tx_flush(struct bnet_port *p)
{
	int sent = 0;

	for (int tries = 0; sent < p->n_tx && tries < 4; tries++) {
		uint16_t k = (uint16_t)(p->n_tx - sent);
		uint16_t n = rte_eth_tx_burst(p->port_id, 0, p->txq + sent, k);

		sent += n;
		if (n == k)
			tries = 0;
	}
	if (sent && sent < p->n_tx)
		memmove(p->txq, p->txq + sent, sizeof(p->txq[0]) * (size_t)(p->n_tx - sent));
	p->n_tx -= sent;
}

/* Queues a frame (the caller checked there is room); flushes every
 * TX_BATCH frames: one PMD call (af_packet: one sendto) moves them all. */
static void tx_queue(struct bnet_port *p, struct rte_mbuf *m)
{
	p->txq[p->n_tx++] = m;
	if (p->n_tx % TX_BATCH == 0)
		tx_flush(p);
}

static void put_ip(uint8_t *b, uint32_t ip)
{
	b[0] = ip >> 24;
	b[1] = ip >> 16;
	b[2] = ip >> 8;
	b[3] = (uint8_t)ip;
}

static uint32_t get_ip(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Sends an ARP request (op 1) or reply (op 2). */
static void arp_send(struct bnet_port *p, int op, const uint8_t *tha, uint32_t tip)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	struct rte_mbuf *m = p->n_tx < TXQ ? rte_pktmbuf_alloc(p->pool) : NULL;
	uint8_t *b;

	if (!m)
		return;
	b = (uint8_t *)rte_pktmbuf_append(m, 60);
	memset(b, 0, 60);
	memcpy(b, op == 1 ? bcast : tha, 6);
	memcpy(b + 6, p->mac.addr_bytes, 6);
	b[12] = 0x08, b[13] = 0x06;
	b[14] = 0, b[15] = 1, b[16] = 0x08, b[17] = 0, b[18] = 6, b[19] = 4;
	b[20] = 0, b[21] = (uint8_t)op;
	memcpy(b + 22, p->mac.addr_bytes, 6);
	put_ip(b + 28, p->ip);
	if (op == 2)
		memcpy(b + 32, tha, 6);
	put_ip(b + 38, tip);
	tx_queue(p, m);
}

static void arp_input(struct bnet_port *p, const uint8_t *b, uint32_t len)
{
	uint32_t sip, tip;

	if (len < 42 || b[14] || b[15] != 1 || b[16] != 8 || b[17] || b[18] != 6 || b[19] != 4)
		return;
	sip = get_ip(b + 28);
	tip = get_ip(b + 38);
	if (sip == p->peer_ip && p->peer_ip) {
		memcpy(p->peer_mac, b + 22, 6);
		p->peer_known = 1;
	}
	if (b[21] == 1 && tip == p->ip)
		arp_send(p, 2, b + 22, sip);
}

int bnet_port_tx(void *arg, struct bnet_hdr *h, const void *payload, uint32_t len)
{
	struct bnet_port *p = arg;
	struct rte_mbuf *m;
	char *b;
	int n;

	if (!p->peer_known || p->dead)
		return -EAGAIN;
	if (p->n_tx == TXQ) {
		tx_flush(p);
		if (p->n_tx == TXQ)
			return -EAGAIN;
	}
	m = rte_pktmbuf_alloc(p->pool);
	if (!m)
		return -EAGAIN;
	memcpy(h->src_mac, p->mac.addr_bytes, 6);
	memcpy(h->dst_mac, p->peer_mac, 6);
	h->src_ip = p->ip;
	h->dst_ip = p->peer_ip;
	b = rte_pktmbuf_mtod(m, char *);
	n = bnet_pkt_encode((uint8_t *)b, rte_pktmbuf_tailroom(m), h, payload, len);
	if (n < 0) {
		p->st.oversize++;
		rte_pktmbuf_free(m);
		return n;
	}
	if (n < 60) { /* pad to the Ethernet minimum */
		memset(b + n, 0, (size_t)(60 - n));
		n = 60;
	}
	rte_pktmbuf_append(m, (uint16_t)n);
	tx_queue(p, m);
	return 0;
}

int bnet_port_resolve(struct bnet_port *p, uint32_t peer_ip, uint64_t timeout_ns)
{
	uint64_t end = bnet_now_ns() + timeout_ns, next = 0;

	p->peer_ip = peer_ip;
	while (!p->peer_known) {
		uint64_t now = bnet_now_ns();
		int r;

		if (now > end)
			return -ETIMEDOUT;
		if (now >= next) {
			arp_send(p, 1, NULL, peer_ip);
			next = now + 100000000;
		}
		r = bnet_port_poll(p);
		if (r < 0)
			return r;
	}
	return 0;
}

int bnet_port_attach(struct bnet_port *p, struct bnet_qp *qp)
{
	if (p->n_qps == MAX_QPS)
		return -ENOSPC;
	p->qps[p->n_qps++] = qp;
	return 0;
}

uint32_t bnet_port_max_pmtu(const struct bnet_port *p)
{
	return p->max_pmtu;
}

struct bnet_stats *bnet_port_stats(struct bnet_port *p)
{
	return &p->st;
}

int bnet_port_poll(struct bnet_port *p)
{
	struct rte_mbuf *rx[BURST];
	uint64_t now;
	uint16_t n;

	if (!link_ok(p))
		return p->dead ? -ENOTCONN : 0;
	n = rte_eth_rx_burst(p->port_id, 0, rx, BURST);
	now = bnet_now_ns();
	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *b = rte_pktmbuf_mtod(rx[i], const uint8_t *);
		uint32_t len = rte_pktmbuf_data_len(rx[i]);
		struct bnet_hdr h;
		int r;

		if (rx[i]->nb_segs != 1) {
			p->st.oversize++;
		} else if (len >= 14 && b[12] == 0x08 && b[13] == 0x06) {
			arp_input(p, b, len);
		} else if ((r = bnet_pkt_decode(b, len, &h)) < 0) {
			if (r != -EPROTO) /* other IP traffic (IPv6 ND etc.) is not an error */
				bnet_stats_count_decode(&p->st, r);
		} else if (h.dst_ip == p->ip) {
			int k;

			for (k = 0; k < p->n_qps; k++)
				if (bnet_qp_num(p->qps[k]) == h.dqpn)
					break;
			if (k == p->n_qps)
				p->st.wrong_qpn++;
			else
				bnet_qp_input(p->qps[k], &h, now);
		}
		rte_pktmbuf_free(rx[i]);
	}
	for (int k = 0; k < p->n_qps; k++)
		bnet_qp_progress(p->qps[k], now, BURST);
	tx_flush(p);
	return n;
}

/* pkt.c — the RoCEv2 packet layer: Ethernet/IPv4/UDP 4791, BTH, RETH, AETH,
 * ImmDt, pad and the ICRC (IBTA Annex 17: a CRC-32 over 8 bytes of 0xff for
 * the absent LRH, then the IP, UDP and transport headers with the fields a
 * router may change masked to ones — IPv4 TOS, TTL and header checksum, the
 * UDP checksum, the BTH FECN/BECN/resv6a byte — then the payload and pad).
 * Decode trusts nothing: every length is checked against the frame before it
 * is read, and a frame is either fully valid or rejected with a reason.
 */
#include <errno.h>
#include <string.h>

#include "bnet.h"

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put24(uint8_t *p, uint32_t v)
{
	p[0] = v >> 16;
	p[1] = v >> 8;
	p[2] = v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

int bnet_op_layout(uint8_t op, int *reth, int *aeth, int *imm)
{
	*reth = *aeth = *imm = 0;
	switch (op) {
	case BNET_OP_SEND_FIRST:
	case BNET_OP_SEND_MIDDLE:
	case BNET_OP_SEND_LAST:
	case BNET_OP_SEND_ONLY:
	case BNET_OP_WRITE_MIDDLE:
	case BNET_OP_WRITE_LAST:
		return 0;
	case BNET_OP_SEND_LAST_IMM:
	case BNET_OP_SEND_ONLY_IMM:
	case BNET_OP_WRITE_LAST_IMM:
		*imm = 1;
		return 0;
	case BNET_OP_WRITE_FIRST:
	case BNET_OP_WRITE_ONLY:
		*reth = 1;
		return 0;
	case BNET_OP_WRITE_ONLY_IMM:
		*reth = *imm = 1;
		return 0;
	case BNET_OP_ACK:
		*aeth = 1;
		return 0;
	}
	return -EPROTONOSUPPORT;
}

/* CRC state after the 8 bytes of 0xff that stand for the absent LRH. */
#define ICRC_LRH_STATE 0xdebb20e3u

/* The ICRC's running state over the LRH and the masked IP, UDP and BTH. The
 * mask is applied in whole words: byte stores over a copied header, read back
 * as words, would stall every packet on failed store forwarding. */
static uint32_t icrc_hdrs(const uint8_t *ip)
{
	static const uint8_t mask[BNET_IP_HLEN + BNET_UDP_HLEN + BNET_BTH_LEN] = {
		[1] = 0xff,				/* TOS: DSCP + ECN */
		[8] = 0xff,				/* TTL */
		[10] = 0xff, [11] = 0xff,		/* IP header checksum */
		[BNET_IP_HLEN + 6] = 0xff,		/* UDP checksum */
		[BNET_IP_HLEN + 7] = 0xff,
		[BNET_IP_HLEN + BNET_UDP_HLEN + 4] = 0xff, /* BTH FECN, BECN, resv6a */
	};
	uint64_t w[sizeof(mask) / 8], m[sizeof(mask) / 8];

	memcpy(w, ip, sizeof(w));
	memcpy(m, mask, sizeof(m));
	for (size_t i = 0; i < sizeof(w) / 8; i++)
		w[i] |= m[i];
	return bnet_crc32_raw(ICRC_LRH_STATE, w, sizeof(w));
}

/* The ICRC covers everything after the Ethernet header up to the ICRC itself. */
uint32_t bnet_icrc(const uint8_t *frame, size_t len)
{
	const size_t hl = BNET_IP_HLEN + BNET_UDP_HLEN + BNET_BTH_LEN;
	const uint8_t *ip = frame + BNET_ETH_HLEN;
	size_t n = len - BNET_ETH_HLEN - BNET_ICRC_LEN;

	return ~bnet_crc32_raw(icrc_hdrs(ip), ip + hl, n - hl);
}

static uint16_t ip_csum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

int bnet_pkt_encode(uint8_t *buf, size_t cap, const struct bnet_hdr *h, const void *payload,
		    uint32_t len)
{
	int reth, aeth, imm, r;
	uint32_t pad = (4 - (len & 3)) & 3;
	size_t ext, udp_len, total;
	uint8_t *ip, *udp, *bth, *p;
	uint32_t icrc;

	r = bnet_op_layout(h->opcode, &reth, &aeth, &imm);
	if (r < 0)
		return r;
	if (len > BNET_MAX_PMTU)
		return -EOVERFLOW;
	ext = (reth ? BNET_RETH_LEN : 0) + (aeth ? BNET_AETH_LEN : 0) + (imm ? BNET_IMM_LEN : 0);
	udp_len = BNET_UDP_HLEN + BNET_BTH_LEN + ext + len + pad + BNET_ICRC_LEN;
	total = BNET_ETH_HLEN + BNET_IP_HLEN + udp_len;
	if (total > cap)
		return -ENOSPC;

	memcpy(buf, h->dst_mac, 6);
	memcpy(buf + 6, h->src_mac, 6);
	put16(buf + 12, 0x0800);

	ip = buf + BNET_ETH_HLEN;
	ip[0] = 0x45;
	ip[1] = 0;
	put16(ip + 2, (uint16_t)(BNET_IP_HLEN + udp_len));
	put16(ip + 4, 0);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = 17;
	put16(ip + 10, 0);
	put32(ip + 12, h->src_ip);
	put32(ip + 16, h->dst_ip);
	put16(ip + 10, ip_csum(ip, BNET_IP_HLEN));

	udp = ip + BNET_IP_HLEN;
	put16(udp, h->src_port);
	put16(udp + 2, BNET_UDP_PORT);
	put16(udp + 4, (uint16_t)udp_len);
	put16(udp + 6, 0); /* no UDP checksum: the ICRC covers the payload */

	bth = udp + BNET_UDP_HLEN;
	bth[0] = h->opcode;
	bth[1] = (uint8_t)((h->solicited ? 0x80 : 0) | 0x40 /* M */ | pad << 4);
	put16(bth + 2, h->pkey);
	bth[4] = 0;
	put24(bth + 5, h->dqpn & BNET_QPN_MASK);
	bth[8] = h->ackreq ? 0x80 : 0;
	put24(bth + 9, h->psn & BNET_PSN_MASK);

	p = bth + BNET_BTH_LEN;
	if (reth) {
		put32(p, (uint32_t)(h->va >> 32));
		put32(p + 4, (uint32_t)h->va);
		put32(p + 8, h->rkey);
		put32(p + 12, h->dma_len);
		p += BNET_RETH_LEN;
	}
	if (aeth) {
		p[0] = h->syndrome;
		put24(p + 1, h->msn);
		p += BNET_AETH_LEN;
	}
	if (imm) {
		put32(p, h->imm);
		p += BNET_IMM_LEN;
	}
	/* headers, then the payload checksummed as it is copied in, then pad */
	icrc = bnet_crc32_raw(icrc_hdrs(ip), bth + BNET_BTH_LEN, ext);
	if (len)
		icrc = bnet_crc32_copy(icrc, p, payload, len);
	memset(p + len, 0, pad);
	icrc = ~bnet_crc32_raw(icrc, p + len, pad);
	p += len + pad;
	p[0] = icrc; /* little-endian on the wire, as rxe and real NICs write it */
	p[1] = icrc >> 8;
	p[2] = icrc >> 16;
	p[3] = icrc >> 24;
	return (int)total;
}

int bnet_pkt_decode(const uint8_t *buf, size_t len, struct bnet_hdr *h)
{
	const size_t min = BNET_ETH_HLEN + BNET_IP_HLEN + BNET_UDP_HLEN + BNET_BTH_LEN + BNET_ICRC_LEN;
	const uint8_t *ip, *udp, *bth, *p, *end;
	uint32_t ip_len, udp_len, pad, ext, icrc;
	int reth, aeth, imm, r;
	size_t frame;

	if (len < min)
		return -EMSGSIZE;
	if (get16(buf + 12) != 0x0800)
		return -EPROTO;
	ip = buf + BNET_ETH_HLEN;
	if (ip[0] != 0x45 || ip[9] != 17 || (get16(ip + 6) & 0x3fff))
		return -EPROTO; /* not IPv4, has options, not UDP, or a fragment */
	ip_len = get16(ip + 2);
	if (ip_len < min - BNET_ETH_HLEN || BNET_ETH_HLEN + (size_t)ip_len > len)
		return -EMSGSIZE;
	if (ip_csum(ip, BNET_IP_HLEN) != 0)
		return -EBADMSG;
	udp = ip + BNET_IP_HLEN;
	if (get16(udp + 2) != BNET_UDP_PORT)
		return -EPROTO;
	udp_len = get16(udp + 4);
	if (udp_len != ip_len - BNET_IP_HLEN)
		return -EMSGSIZE;
	frame = BNET_ETH_HLEN + ip_len; /* anything after it is Ethernet padding */
	bth = udp + BNET_UDP_HLEN;
	if ((bth[1] & 0x0f) != 0)
		return -EPROTO; /* transport header version */
	r = bnet_op_layout(bth[0], &reth, &aeth, &imm);
	if (r < 0)
		return r;
	ext = (reth ? BNET_RETH_LEN : 0) + (aeth ? BNET_AETH_LEN : 0) + (imm ? BNET_IMM_LEN : 0);
	pad = (bth[1] >> 4) & 3;
	if (udp_len < BNET_UDP_HLEN + BNET_BTH_LEN + ext + pad + BNET_ICRC_LEN)
		return -EMSGSIZE;
	if (udp_len - (BNET_UDP_HLEN + BNET_BTH_LEN + ext + pad + BNET_ICRC_LEN) > BNET_MAX_PMTU)
		return -EOVERFLOW;
	end = buf + frame - BNET_ICRC_LEN;
	icrc = (uint32_t)end[0] | (uint32_t)end[1] << 8 | (uint32_t)end[2] << 16 |
	       (uint32_t)end[3] << 24;
	if (bnet_icrc(buf, frame) != icrc)
		return -EBADMSG;

	memset(h, 0, sizeof(*h));
	memcpy(h->dst_mac, buf, 6);
	memcpy(h->src_mac, buf + 6, 6);
	h->src_ip = get32(ip + 12);
	h->dst_ip = get32(ip + 16);
	h->src_port = get16(udp);
	h->opcode = bth[0];
	h->solicited = !!(bth[1] & 0x80);
	h->pkey = get16(bth + 2);
	h->dqpn = get24(bth + 5);
	h->ackreq = !!(bth[8] & 0x80);
	h->psn = get24(bth + 9);
	p = bth + BNET_BTH_LEN;
	if (reth) {
		h->va = (uint64_t)get32(p) << 32 | get32(p + 4);
		h->rkey = get32(p + 8);
		h->dma_len = get32(p + 12);
		p += BNET_RETH_LEN;
	}
	if (aeth) {
		h->syndrome = p[0];
		h->msn = get24(p + 1);
		p += BNET_AETH_LEN;
	}
	if (imm) {
		h->imm = get32(p);
		p += BNET_IMM_LEN;
	}
	h->payload = p;
	h->payload_len = (uint32_t)(end - p) - pad;
	return 0;
}

void bnet_stats_count_decode(struct bnet_stats *st, int err)
{
	switch (err) {
	case -EMSGSIZE:
		st->short_pkts++;
		break;
	case -EOVERFLOW:
		st->oversize++;
		break;
	case -EBADMSG:
		st->bad_icrc++;
		break;
	default:
		st->bad_proto++;
		break;
	}
}

/* test-bnet-pkt.c — the RoCEv2 packet layer: CRC and ICRC masking rules,
 * encode/decode round trips for every opcode, rejection of malformed frames
 * (short, oversize, bad checksums, flipped bytes) and a deterministic fuzz of
 * the decoder (bounded iterations; ASan+UBSan catch out-of-bounds reads).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "bnet.h"
#include "t.h"

static const uint8_t ops[] = {
	BNET_OP_SEND_FIRST,	BNET_OP_SEND_MIDDLE,	 BNET_OP_SEND_LAST,  BNET_OP_SEND_LAST_IMM,
	BNET_OP_SEND_ONLY,	BNET_OP_SEND_ONLY_IMM,	 BNET_OP_WRITE_FIRST, BNET_OP_WRITE_MIDDLE,
	BNET_OP_WRITE_LAST,	BNET_OP_WRITE_LAST_IMM, BNET_OP_WRITE_ONLY, BNET_OP_WRITE_ONLY_IMM,
	BNET_OP_ACK,
};

static uint8_t frame[BNET_MAX_FRAME + 64];
static uint8_t data[BNET_MAX_PMTU];

static void fill_hdr(struct bnet_hdr *h, uint8_t op)
{
	static const uint8_t a[6] = { 2, 0, 0, 0, 0, 1 }, b[6] = { 2, 0, 0, 0, 0, 2 };

	memset(h, 0, sizeof(*h));
	memcpy(h->src_mac, a, 6);
	memcpy(h->dst_mac, b, 6);
	h->src_ip = 0x0a000001;
	h->dst_ip = 0x0a000002;
	h->src_port = 0xc123;
	h->opcode = op;
	h->pkey = 0xffff;
	h->dqpn = 0x123456;
	h->psn = 0xabcdef;
	h->ackreq = 1;
	h->va = 0x1122334455667788ull;
	h->rkey = 0xdeadbeef;
	h->dma_len = 1 << 20;
	h->syndrome = BNET_AETH_NAK_PSN_SEQ;
	h->msn = 0x654321;
	h->imm = 0xcafef00d;
}

static void test_crc(void)
{
	uint8_t ff[8];

	memset(ff, 0xff, sizeof(ff));
	/* the check value of CRC-32/ISO-HDLC */
	T_EQ_INT(~bnet_crc32_raw(0xffffffffu, "123456789", 9), 0xcbf43926u);
	/* rxe_icrc.c seeds with this: CRC of 0xffffffff over the 8-byte masked LRH */
	T_EQ_INT(bnet_crc32_raw(0xffffffffu, ff, 8), 0xdebb20e3u);
}

/* One bit at a time: the definition, to hold both fast paths against. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
	}
	return crc;
}

/* Every path (512-bit and 128-bit carry-less multiply, slicing-by-8, with and
 * without the copy) agrees with the bitwise CRC at every length around the
 * 16/64/256-byte fold boundaries, any alignment, any seed. */
static void crc_paths_at(uint8_t *buf, int level)
{
	static uint8_t cp[BNET_MAX_FRAME + 64];

	for (size_t len = 0; len <= BNET_MAX_FRAME; len += len < 600 ? 1 : 61) {
		size_t off = (len * 7) % 64;
		uint32_t seed = len & 1 ? 0xffffffffu : (uint32_t)(len * 2654435761u);
		uint32_t want = crc_bitwise(seed, buf + off, len);

		T_EQ_INT(bnet_crc32_raw(seed, buf + off, len), want);
		T_EQ_INT(bnet_crc32_raw_tables(seed, buf + off, len), want);
		memset(cp, 0xa5, sizeof(cp));
		T_EQ_INT(bnet_crc32_copy(seed, cp + 1, buf + off, len), want);
		T_CHECK(!memcmp(cp + 1, buf + off, len) && cp[0] == 0xa5 && cp[len + 1] == 0xa5,
			"bnet_crc32_copy copied wrong bytes");
		if (t_case_failed) {
			printf("  at len %zu off %zu level %d\n", len, off, level);
			return;
		}
	}
}

static void test_crc_paths(void)
{
	static uint8_t buf[BNET_MAX_FRAME + 64];
	uint32_t s = 12345;
	int level = bnet_crc32_level(99);

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
	for (int l = level; l >= 0 && !t_case_failed; l--) {
		bnet_crc32_level(l);
		crc_paths_at(buf, l);
	}
	bnet_crc32_level(level);
	printf("crc: levels %d..0 checked (2: VPCLMULQDQ, 1: PCLMULQDQ, 0: tables)\n", level);
}

static void test_roundtrip(void)
{
	static const uint32_t lens[] = { 0, 1, 2, 3, 4, 5, 255, 1024, 4095, 4096 };
	struct bnet_hdr h, g;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	for (size_t o = 0; o < sizeof(ops); o++)
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
			int n, r;

			fill_hdr(&h, ops[o]);
			n = bnet_pkt_encode(frame, sizeof(frame), &h, data, lens[l]);
			T_CHECK(n > 0, "encode op %#x len %u: %d", ops[o], lens[l], n);
			if (n <= 0)
				continue;
			r = bnet_pkt_decode(frame, (size_t)n, &g);
			T_CHECK(r == 0, "decode op %#x len %u: %d", ops[o], lens[l], r);
			if (r)
				continue;
			T_EQ_INT(g.opcode, ops[o]);
			T_EQ_INT(g.payload_len, lens[l]);
			T_CHECK(!memcmp(g.payload, data, lens[l]), "payload differs");
			T_EQ_INT(g.psn, h.psn);
			T_EQ_INT(g.dqpn, h.dqpn);
			T_EQ_INT(g.ackreq, 1);
			T_EQ_INT(g.src_ip, h.src_ip);
			T_EQ_INT(g.dst_ip, h.dst_ip);
			T_EQ_INT(g.src_port, h.src_port);
			T_CHECK(!memcmp(g.src_mac, h.src_mac, 6), "src mac");
			if (ops[o] == BNET_OP_WRITE_FIRST || ops[o] == BNET_OP_WRITE_ONLY) {
				T_EQ_INT(g.va, h.va);
				T_EQ_INT(g.rkey, h.rkey);
				T_EQ_INT(g.dma_len, h.dma_len);
			}
			if (ops[o] == BNET_OP_ACK) {
				T_EQ_INT(g.syndrome, h.syndrome);
				T_EQ_INT(g.msn, h.msn);
			}
			if (ops[o] == BNET_OP_SEND_ONLY_IMM || ops[o] == BNET_OP_WRITE_LAST_IMM)
				T_EQ_INT(g.imm, h.imm);
			/* Ethernet padding after the frame is ignored */
			memset(frame + n, 0, 8);
			T_EQ_INT(bnet_pkt_decode(frame, (size_t)n + 8, &g), 0);
		}
	fill_hdr(&h, 0x0c); /* RDMA READ request: not supported */
	T_EQ_INT(bnet_pkt_encode(frame, sizeof(frame), &h, data, 0), -EPROTONOSUPPORT);
	fill_hdr(&h, BNET_OP_SEND_ONLY);
	T_EQ_INT(bnet_pkt_encode(frame, sizeof(frame), &h, data, BNET_MAX_PMTU + 1), -EOVERFLOW);
	T_EQ_INT(bnet_pkt_encode(frame, 60, &h, data, 100), -ENOSPC);
}

static void set16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = (uint8_t)v;
}

/* Recomputes the IP header checksum and the ICRC after a test edits a frame. */
static void reseal(uint8_t *f, size_t n)
{
	uint8_t *ip = f + BNET_ETH_HLEN;
	uint32_t sum = 0, icrc;

	set16(ip + 10, 0);
	for (int i = 0; i < BNET_IP_HLEN; i += 2)
		sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	set16(ip + 10, (uint16_t)~sum);
	icrc = bnet_icrc(f, n);
	memcpy(f + n - 4, &icrc, 4); /* little-endian host */
}

/* The ICRC ignores exactly the fields a router or switch may rewrite. */
static void test_icrc_masking(void)
{
	struct bnet_hdr h, g;
	int n;

	fill_hdr(&h, BNET_OP_WRITE_ONLY);
	n = bnet_pkt_encode(frame, sizeof(frame), &h, data, 100);
	uint32_t icrc = bnet_icrc(frame, (size_t)n);
	frame[BNET_ETH_HLEN + 1] = 0xb9;      /* DSCP 46, ECN CE */
	frame[BNET_ETH_HLEN + 8] = 3;	      /* TTL after hops */
	set16(frame + BNET_ETH_HLEN + 26, 0x1234); /* UDP checksum */
	frame[BNET_ETH_HLEN + 28 + 4] = 0xc0; /* FECN, BECN */
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_icrc(frame, (size_t)n), icrc);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), 0);
	frame[BNET_ETH_HLEN + 28 + 8] ^= 0x80; /* the AckReq bit is covered */
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EBADMSG);
}

static void test_malformed(void)
{
	struct bnet_hdr h, g;
	int n, bad = 0;

	fill_hdr(&h, BNET_OP_WRITE_FIRST);
	n = bnet_pkt_encode(frame, sizeof(frame), &h, data, 256);
	for (int l = 0; l < n; l++)
		if (bnet_pkt_decode(frame, (size_t)l, &g) == 0)
			bad++;
	T_EQ_INT(bad, 0);
	T_EQ_INT(bnet_pkt_decode(frame, 10, &g), -EMSGSIZE);
	/* every covered byte, flipped, makes the frame invalid */
	for (int i = 12; i < n; i++) {
		int masked = i == BNET_ETH_HLEN + 26 || i == BNET_ETH_HLEN + 27 ||
			     i == BNET_ETH_HLEN + 28 + 4;

		frame[i] ^= 0x01;
		if (!masked && bnet_pkt_decode(frame, (size_t)n, &g) == 0) {
			T_CHECK(0, "flipped byte %d accepted", i);
			break;
		}
		frame[i] ^= 0x01;
	}
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), 0);
	frame[n - 1] ^= 0xff;
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EBADMSG);
	frame[n - 1] ^= 0xff;
	/* IP options, fragments, another UDP port, transport version */
	frame[BNET_ETH_HLEN] = 0x46;
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EPROTO);
	frame[BNET_ETH_HLEN] = 0x45;
	set16(frame + BNET_ETH_HLEN + 6, 0x2000);
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EPROTO);
	set16(frame + BNET_ETH_HLEN + 6, 0x4000);
	set16(frame + BNET_ETH_HLEN + 22, 4792);
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EPROTO);
	set16(frame + BNET_ETH_HLEN + 22, BNET_UDP_PORT);
	frame[BNET_ETH_HLEN + 28] = 0x0c; /* READ request */
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EPROTONOSUPPORT);

	/* oversize: a 4100-byte payload, lengths and checksums all consistent */
	fill_hdr(&h, BNET_OP_SEND_ONLY);
	n = bnet_pkt_encode(frame, sizeof(frame), &h, data, BNET_MAX_PMTU);
	memset(frame + n, 0, 8);
	n += 4;
	set16(frame + BNET_ETH_HLEN + 2, (uint16_t)(n - BNET_ETH_HLEN));
	set16(frame + BNET_ETH_HLEN + 24, (uint16_t)(n - BNET_ETH_HLEN - BNET_IP_HLEN));
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EOVERFLOW);
	/* UDP length that disagrees with the IP length */
	set16(frame + BNET_ETH_HLEN + 24, 100);
	reseal(frame, (size_t)n);
	T_EQ_INT(bnet_pkt_decode(frame, (size_t)n, &g), -EMSGSIZE);

	struct bnet_stats st = { 0 };
	bnet_stats_count_decode(&st, -EMSGSIZE);
	bnet_stats_count_decode(&st, -EBADMSG);
	bnet_stats_count_decode(&st, -EOVERFLOW);
	bnet_stats_count_decode(&st, -EPROTO);
	T_EQ_INT(st.short_pkts + st.bad_icrc + st.oversize + st.bad_proto, 4);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Mutates valid frames (bit flips, byte sets, truncation, growth, resealed
 * or not) and random garbage; the decoder must never read outside the frame
 * (the frame is copied to an exact-size heap buffer so ASan sees overruns). */
static void test_fuzz(void)
{
	int iters = 200000, ok = 0;
	struct bnet_hdr h, g;

	for (int it = 0; it < iters; it++) {
		size_t n;
		int r;

		fill_hdr(&h, ops[rnd() % sizeof(ops)]);
		h.psn = (uint32_t)rnd();
		r = bnet_pkt_encode(frame, sizeof(frame), &h, data, (uint32_t)(rnd() % 300));
		if (r < 0) {
			T_CHECK(0, "encode failed %d", r);
			return;
		}
		n = (size_t)r;
		switch (rnd() % 5) {
		case 0:
			for (int k = 1 + rnd() % 4; k; k--)
				frame[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
			break;
		case 1:
			frame[BNET_ETH_HLEN + rnd() % 60] = (uint8_t)rnd();
			reseal(frame, n);
			break;
		case 2:
			n = rnd() % n;
			break;
		case 3:
			set16(frame + BNET_ETH_HLEN + 2 + 22 * (rnd() % 2), (uint16_t)rnd());
			reseal(frame, n);
			break;
		case 4:
			for (size_t k = 0; k < n; k++)
				frame[k] = (uint8_t)rnd();
			break;
		}
		uint8_t *buf = malloc(n ? n : 1);
		memcpy(buf, frame, n);
		if (bnet_pkt_decode(buf, n, &g) == 0) {
			ok++;
			T_CHECK(g.payload >= buf && g.payload + g.payload_len <= buf + n,
				"payload outside the frame");
		}
		free(buf);
	}
	printf("fuzz: %d iterations, %d accepted\n", iters, ok);
}

int main(void)
{
	t_run("bnet_crc32", test_crc);
	t_run("bnet_crc32_fast_paths", test_crc_paths);
	t_run("bnet_pkt_roundtrip", test_roundtrip);
	t_run("bnet_icrc_masking", test_icrc_masking);
	t_run("bnet_pkt_malformed", test_malformed);
	t_run("bnet_pkt_fuzz", test_fuzz);
	return t_done();
}

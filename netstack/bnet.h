/* bnet.h — libbnet, a userspace RoCEv2 reliable-connection stack.
 *
 * Three layers: the packet layer (Ethernet/IPv4/UDP 4791 + BTH, RETH, AETH,
 * ImmDt and the ICRC; encode and strict decode), the RC queue pair (PSNs,
 * segmentation at the path MTU, coalesced ACKs, NAK and timeout driven
 * go-back-N retransmission, a send window) and the DPDK port (bnet_port_*,
 * in libbnet-dpdk.a only) that moves the packets. The first two are pure C with
 * no I/O: a QP emits packets through a callback and is fed the packets that
 * arrive, with the time passed in, so tests can drive it over any link.
 * Functions return 0 or a negative errno; nothing here allocates after setup.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define BNET_UDP_PORT 4791
#define BNET_ETH_HLEN 14
#define BNET_IP_HLEN 20
#define BNET_UDP_HLEN 8
#define BNET_BTH_LEN 12
#define BNET_RETH_LEN 16
#define BNET_AETH_LEN 4
#define BNET_IMM_LEN 4
#define BNET_ICRC_LEN 4
/* Largest headers of any packet we send: Ethernet..BTH + RETH + ImmDt. */
#define BNET_MAX_HDRS (BNET_ETH_HLEN + BNET_IP_HLEN + BNET_UDP_HLEN + BNET_BTH_LEN + BNET_RETH_LEN + BNET_IMM_LEN)
#define BNET_MAX_PMTU 4096
#define BNET_MAX_FRAME (BNET_MAX_HDRS + BNET_MAX_PMTU + BNET_ICRC_LEN)
#define BNET_PSN_MASK 0xffffffu
#define BNET_QPN_MASK 0xffffffu

/* RC opcodes (IBA 9.2, transport 000). */
enum bnet_opcode {
	BNET_OP_SEND_FIRST = 0x00,
	BNET_OP_SEND_MIDDLE = 0x01,
	BNET_OP_SEND_LAST = 0x02,
	BNET_OP_SEND_LAST_IMM = 0x03,
	BNET_OP_SEND_ONLY = 0x04,
	BNET_OP_SEND_ONLY_IMM = 0x05,
	BNET_OP_WRITE_FIRST = 0x06,
	BNET_OP_WRITE_MIDDLE = 0x07,
	BNET_OP_WRITE_LAST = 0x08,
	BNET_OP_WRITE_LAST_IMM = 0x09,
	BNET_OP_WRITE_ONLY = 0x0a,
	BNET_OP_WRITE_ONLY_IMM = 0x0b,
	BNET_OP_ACK = 0x11,
};

/* AETH syndromes: top 3 bits say ACK (000), RNR NAK (001) or NAK (011). */
#define BNET_AETH_ACK 0x00
#define BNET_AETH_NAK_PSN_SEQ 0x60
#define BNET_AETH_NAK_INV_REQ 0x61
#define BNET_AETH_NAK_REM_ACCESS 0x62

/* One decoded (or to-be-encoded) packet. Addresses in network byte order as
 * they sit on the wire (mac bytes, ip as big-endian u32 in memory order). */
struct bnet_hdr {
	uint8_t dst_mac[6], src_mac[6];
	uint32_t src_ip, dst_ip; /* host byte order */
	uint16_t src_port;	 /* UDP source port (flow entropy) */
	uint8_t opcode;
	uint8_t solicited, ackreq;
	uint16_t pkey;
	uint32_t dqpn, psn;
	uint64_t va; /* RETH */
	uint32_t rkey, dma_len;
	uint8_t syndrome; /* AETH */
	uint32_t msn;
	uint32_t imm; /* ImmDt, host order */
	const uint8_t *payload;
	uint32_t payload_len;
};

/* Which extension headers an opcode carries; -EPROTONOSUPPORT when unknown. */
int bnet_op_layout(uint8_t opcode, int *has_reth, int *has_aeth, int *has_imm);

/* CRC-32 (IEEE, reflected) continuing from crc, without pre/post inversion
 * (carry-less multiply when the CPU has it); _tables is the portable path. */
uint32_t bnet_crc32_raw(uint32_t crc, const void *buf, size_t len);
uint32_t bnet_crc32_raw_tables(uint32_t crc, const void *buf, size_t len);
/* Sets the CRC path to at most max (0 tables, 1 128-bit PCLMULQDQ, 2 512-bit
 * VPCLMULQDQ; never above what the CPU has; for tests and measurements);
 * returns the level before. */
int bnet_crc32_level(int max);
/* bnet_crc32_raw of src while copying it to dst (one pass; no overlap). */
uint32_t bnet_crc32_copy(uint32_t crc, void *dst, const void *src, size_t len);
/* ICRC of a whole frame (Ethernet header first, ICRC last) per IBTA Annex 17. */
uint32_t bnet_icrc(const uint8_t *frame, size_t len);

/* Writes h + payload as one frame into buf; returns the frame length. */
int bnet_pkt_encode(uint8_t *buf, size_t cap, const struct bnet_hdr *h, const void *payload,
		    uint32_t len);
/* Strict decode of a frame: every length, checksum and the ICRC are checked.
 * -EBADMSG bad ICRC or IP checksum, -EMSGSIZE short or lengths that disagree,
 * -EOVERFLOW payload over BNET_MAX_PMTU, -EPROTO not
 * IPv4/UDP 4791 or a bad field, -EPROTONOSUPPORT unknown opcode. h->payload
 * points into buf. */
int bnet_pkt_decode(const uint8_t *buf, size_t len, struct bnet_hdr *h);

/* --- memory regions, completion queues, queue pairs ----------------------- */

#define BNET_MAX_MRS 64
#define BNET_MAX_MSG (1u << 30) /* largest message: 1 GiB */

struct bnet_mr {
	void *addr;
	size_t len;
	uint32_t lkey, rkey;
};

/* A protection domain: the MRs remote peers may write into. */
struct bnet_pd {
	struct bnet_mr mrs[BNET_MAX_MRS];
	int n_mrs;
	uint32_t next_key;
};

void bnet_pd_init(struct bnet_pd *pd, uint32_t key_seed);
/* Registers [addr, addr+len) for remote writes; *out points into pd. */
int bnet_reg_mr(struct bnet_pd *pd, void *addr, size_t len, struct bnet_mr **out);
int bnet_dereg_mr(struct bnet_pd *pd, struct bnet_mr *mr);

enum bnet_wc_status {
	BNET_WC_SUCCESS = 0,
	BNET_WC_LOC_LEN_ERR,	/* a SEND larger than the posted receive */
	BNET_WC_REM_ACCESS_ERR, /* bad rkey or range at the peer */
	BNET_WC_REM_INV_REQ_ERR,
	BNET_WC_RETRY_EXC_ERR, /* the peer stopped answering */
	BNET_WC_FLUSH_ERR,     /* flushed because the QP went to error */
};

enum bnet_wc_opcode {
	BNET_WC_SEND,
	BNET_WC_WRITE,
	BNET_WC_RECV,
	BNET_WC_RECV_WRITE_IMM,
};

struct bnet_wc {
	uint64_t wr_id;
	enum bnet_wc_status status;
	enum bnet_wc_opcode opcode;
	uint32_t byte_len;
	uint32_t imm;
	int has_imm;
};

#define BNET_CQ_MAX 4096
struct bnet_cq {
	struct bnet_wc *ring;
	uint32_t cap, head, tail; /* head: next to poll; tail: next to fill */
	int overflowed;
};

int bnet_cq_init(struct bnet_cq *cq, uint32_t cap);
void bnet_cq_destroy(struct bnet_cq *cq);
/* Copies up to n completions out; returns how many. */
int bnet_cq_poll(struct bnet_cq *cq, struct bnet_wc *wc, int n);

enum bnet_send_op { BNET_WR_SEND, BNET_WR_SEND_IMM, BNET_WR_WRITE, BNET_WR_WRITE_IMM };

struct bnet_send_wr {
	uint64_t wr_id;
	enum bnet_send_op op;
	const void *addr;
	uint32_t len;
	uint64_t remote_va;
	uint32_t rkey;
	uint32_t imm;
};

/* Emits one packet; h has the transport fields set, the link fills the rest. */
typedef int (*bnet_tx_fn)(void *arg, struct bnet_hdr *h, const void *payload, uint32_t len);

struct bnet_qp_attr {
	uint32_t qpn, dest_qpn;
	uint32_t sq_psn, rq_psn; /* starting PSNs: ours, and the one we expect */
	uint32_t pmtu;		 /* 256..4096, a power of two */
	uint32_t max_send_wr, max_recv_wr;
	uint32_t window;	  /* packets in flight, <= 2^22 */
	uint32_t ack_every;	  /* the responder ACKs after this many packets */
	uint64_t timeout_ns;	  /* retransmit when no progress for this long */
	uint32_t retry_cnt;	  /* timeouts in a row before RETRY_EXC */
	struct bnet_pd *pd;
	struct bnet_cq *send_cq, *recv_cq;
	bnet_tx_fn tx;
	void *tx_arg;
};

enum bnet_qp_state { BNET_QPS_RTS, BNET_QPS_ERR };

/* Counters of what a QP (or the decoder above it) dropped and why. */
struct bnet_stats {
	uint64_t tx_pkts, rx_pkts, tx_bytes, rx_payload;
	uint64_t retransmits, timeouts, naks_sent, naks_rcvd, acks_sent, acks_rcvd;
	uint64_t dup_pkts, out_of_seq, out_of_window, bad_opcode_seq, bad_rkey, bad_len;
	uint64_t short_pkts, bad_icrc, bad_proto, wrong_qpn, oversize;
};

struct bnet_qp;

int bnet_qp_create(const struct bnet_qp_attr *attr, struct bnet_qp **out);
void bnet_qp_destroy(struct bnet_qp *qp);
int bnet_post_send(struct bnet_qp *qp, const struct bnet_send_wr *wr);
int bnet_post_recv(struct bnet_qp *qp, uint64_t wr_id, void *addr, uint32_t len);
/* Feeds one decoded packet addressed to this QP. */
void bnet_qp_input(struct bnet_qp *qp, const struct bnet_hdr *h, uint64_t now_ns);
/* Sends what the window allows, coalesced ACKs, and retransmits on timeout.
 * Returns the number of packets emitted. */
int bnet_qp_progress(struct bnet_qp *qp, uint64_t now_ns, uint32_t budget);
enum bnet_qp_state bnet_qp_state(const struct bnet_qp *qp);
/* 1 while sends are queued or unacknowledged. */
int bnet_qp_busy(const struct bnet_qp *qp);
uint32_t bnet_qp_num(const struct bnet_qp *qp);
struct bnet_stats *bnet_qp_stats(struct bnet_qp *qp);
/* Counts a decode error (the -errno from bnet_pkt_decode) in st. */
void bnet_stats_count_decode(struct bnet_stats *st, int err);

/* --- the DPDK port (libbnet-dpdk.a) ---------------------------------------- */

struct bnet_port;

uint64_t bnet_now_ns(void);
/* Initialises the EAL from argv (DPDK's own options) and starts port 0 with
 * our IPv4 address ip (host order). Once per process. */
int bnet_port_open(int argc, char **argv, uint32_t ip, struct bnet_port **out);
void bnet_port_close(struct bnet_port *p);
/* Several ports in one process: the EAL once, then each port by its DPDK
 * name (NULL: the first port); bnet_port_stop leaves the EAL running. */
int bnet_eal_init(int argc, char **argv);
void bnet_eal_cleanup(void);
int bnet_port_start(const char *name, uint32_t ip, struct bnet_port **out);
void bnet_port_stop(struct bnet_port *p);
/* 1 once the link dropped after being up (the port is never polled again). */
int bnet_port_dead(const struct bnet_port *p);
int bnet_port_wait_link(struct bnet_port *p, uint64_t timeout_ns);
/* Waits until a link that was up dropped (the peer closed its end). */
int bnet_port_wait_down(struct bnet_port *p, uint64_t timeout_ns);
/* Resolves the peer's MAC by ARP (answering the peer's requests meanwhile). */
int bnet_port_resolve(struct bnet_port *p, uint32_t peer_ip, uint64_t timeout_ns);
/* The bnet_tx_fn for QPs on this port; its arg is the port. */
int bnet_port_tx(void *arg, struct bnet_hdr *h, const void *payload, uint32_t len);
int bnet_port_attach(struct bnet_port *p, struct bnet_qp *qp);
/* One turn of the loop: receive a burst, dispatch, let every QP send, flush.
 * Returns frames received, or -ENOTCONN once the link went down (never polls
 * the PMD again after that). */
int bnet_port_poll(struct bnet_port *p);
/* The largest path MTU whose frames fit the port's mbufs: BNET_MAX_PMTU, or
 * 2048 on net_af_xdp (its umem chunks are one page). */
uint32_t bnet_port_max_pmtu(const struct bnet_port *p);
struct bnet_stats *bnet_port_stats(struct bnet_port *p);

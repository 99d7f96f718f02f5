#!/usr/bin/env bash
# test-netstack — libbnet between two real processes over DPDK virtual
# devices: net_memif (WRITE, WRITE WITH IMM and SEND of 0 B..64 MiB,
# byte-exact), then net_af_packet on a veth pair between two network
# namespaces this test makes, with tc netem loss, reordering and duplication,
# while tshark captures the veth: every frame must decode as RoCEv2
# (InfiniBand over UDP 4791) with nothing malformed; and net_af_xdp on a
# second veth pair (path MTU 2048, lossless). Prints SKIP when DPDK, netns,
# XDP sockets or tshark are missing.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
PEER=$BUILD/bin/bnet-peer
T=$(mktemp -d /tmp/bnet-test.XXXXXX)
NS1=bnet-a-$$ NS2=bnet-b-$$
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	ip netns del "$NS1" 2>/dev/null
	ip netns del "$NS2" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
[ -n "${BNET_KEEP:-}" ] && trap "echo kept $T" EXIT
EAL="--no-huge -m 512 --no-pci --log-level=*:warning"
PAIR_OPTS=""

if [ ! -x "$PEER" ]; then
	echo "SKIP bnet_memif: $PEER not built (no libdpdk-dev)"
	echo "SKIP bnet_veth: $PEER not built (no libdpdk-dev)"
	exit 0
fi

# pair NAME SIZES SERVER_PREFIX CLIENT_PREFIX SERVER_EAL CLIENT_EAL: runs a
# server and a client; the client prints the PASS/FAIL lines.
pair() {
	local name=$1 sizes=$2 s_pre=$3 c_pre=$4 s_eal=$5 c_eal=$6 wait_for=${7:-}
	rm -f "$T/info"
	timeout 240 $s_pre "$PEER" server 10.77.0.1 10.77.0.2 "$T/info" "$sizes" $PAIR_OPTS -- -l 0 $EAL \
		--file-prefix "bs$$" $s_eal >"$T/$name-server.log" 2>&1 &
	local spid=$!
	pids+=("$spid")
	# a memif client does not retry a socket that is not there yet
	for _ in $(seq 100); do [ -n "$wait_for" ] && [ ! -e "$wait_for" ] && sleep 0.1; done
	timeout 240 $c_pre "$PEER" client 10.77.0.2 10.77.0.1 "$T/info" "$sizes" $PAIR_OPTS -- -l 1 $EAL \
		--file-prefix "bc$$" $c_eal >"$T/$name-client.log" 2>&1
	local crc=$?
	wait "$spid"
	local src=$?
	grep -E '^(PASS|FAIL)' "$T/$name-client.log" | sed "s/^\(PASS\|FAIL\) bnet_/\1 bnet_${name}_/"
	grep '^FAIL' "$T/$name-server.log"
	grep -E '^client:' "$T/$name-client.log"
	if [ "$crc" -ne 0 ] || [ "$src" -ne 0 ]; then
		echo "FAIL bnet_${name}_peers: client exited $crc, server exited $src"
		tail -n 5 "$T/$name-client.log" "$T/$name-server.log"
	fi
}

# 1. memif between two processes on this host
pair memif 0,1,1023,1024,1025,65536,1048577,67108864 "" "" \
	"--vdev=net_memif0,role=server,socket=$T/memif.sock,socket-abstract=no" \
	"--vdev=net_memif0,role=client,socket=$T/memif.sock,socket-abstract=no" "$T/memif.sock"

# 2. af_packet on a veth pair across two namespaces, lossy
if ! ip netns add "$NS1" 2>/dev/null || ! ip netns add "$NS2" 2>/dev/null; then
	echo "SKIP bnet_veth: cannot create network namespaces here"
	exit 0
fi
# 2a. net_af_xdp on its own veth pair: XDP on a veth needs an MTU under a
# page, and the umem chunks are one page, so path MTU 2048
if ! /usr/bin/python3 -c 'import socket; socket.socket(44, socket.SOCK_RAW).close()' 2>/dev/null; then
	echo "SKIP bnet_xdp: this kernel has no XDP sockets (AF_XDP)"
elif ip link add bnxa type veth peer name bnxb 2>/dev/null &&
	ip link set bnxa netns "$NS1" && ip link set bnxb netns "$NS2" &&
	ip -n "$NS1" link set bnxa mtu 3000 up && ip -n "$NS2" link set bnxb mtu 3000 up; then
	PAIR_OPTS="--pmtu 2048"
	pair xdp 0,1,2047,2049,65536,1048577 "ip netns exec $NS1" "ip netns exec $NS2" \
		"--vdev=net_af_xdp0,iface=bnxa" "--vdev=net_af_xdp0,iface=bnxb"
	PAIR_OPTS=""
else
	echo "SKIP bnet_xdp: cannot set up a veth pair"
fi

ip link add bnva type veth peer name bnvb 2>/dev/null || ip -n "$NS1" link add bnva type veth peer name bnvb
ip link set bnva netns "$NS1" 2>/dev/null
ip link set bnvb netns "$NS2" 2>/dev/null
ip -n "$NS1" link set bnva up && ip -n "$NS2" link set bnvb up || {
	echo "SKIP bnet_veth: cannot set up a veth pair"; exit 0; }
# netem needs the kernel's sch_netem; without it the veth run is lossless (the
# lossy cases still run in test-bnet-qp over the in-memory link)
if ip netns exec "$NS1" tc qdisc add dev bnva root netem delay 200us loss 5% duplicate 2% reorder 10% 2>"$T/tc.log" &&
	ip netns exec "$NS2" tc qdisc add dev bnvb root netem delay 200us loss 5% duplicate 2% reorder 10% 2>>"$T/tc.log"; then
	echo "veth: netem 5% loss, 2% duplication, 10% reordering on both sides"
else
	echo "SKIP bnet_veth_netem: tc netem is not available ($(head -1 "$T/tc.log")); veth runs lossless"
fi

if command -v tshark >/dev/null; then
	ip netns exec "$NS1" tshark -q -i bnva -w "$T/cap.pcapng" >"$T/tshark.log" 2>&1 &
	pids+=("$!")
	sleep 2
fi
pair veth 0,1,1025,65536,1048577 "ip netns exec $NS1" "ip netns exec $NS2" \
	"--vdev=net_af_packet0,iface=bnva" "--vdev=net_af_packet0,iface=bnvb"

if ! command -v tshark >/dev/null; then
	echo "SKIP bnet_tshark: tshark is not installed"
	exit 0
fi
sleep 1
kill "${pids[-1]}" 2>/dev/null
wait "${pids[-1]}" 2>/dev/null
roce=$(tshark -r "$T/cap.pcapng" -Y 'infiniband' 2>/dev/null | wc -l)
udp=$(tshark -r "$T/cap.pcapng" -Y 'udp.port == 4791' 2>/dev/null | wc -l)
# A frame is malformed RoCEv2 when the dissector fails inside the InfiniBand
# headers. tshark also runs payload heuristics (RPC-over-RDMA, EoIB, ...) that
# guess at our random test payloads and may fail there: listed, not counted.
tshark -r "$T/cap.pcapng" -Y '_ws.malformed || _ws.expert.severity >= error' \
	-T fields -e frame.number -e frame.protocols >"$T/malformed.txt" 2>/dev/null
malformed=$(awk '$2 ~ /(^|:)infiniband$/ || $2 !~ /infiniband/' "$T/malformed.txt" | wc -l)
guessed=$(awk '$2 ~ /infiniband:/' "$T/malformed.txt" | wc -l)
echo "captured: $udp frames on UDP 4791, $roce decoded as InfiniBand, $malformed malformed," \
	"$guessed payloads a tshark heuristic misread"
if [ "$roce" -gt 100 ] && [ "$roce" -eq "$udp" ] && [ "$malformed" -eq 0 ]; then
	echo "PASS bnet_tshark_decodes_rocev2"
else
	echo "FAIL bnet_tshark_decodes_rocev2: $udp frames, $roce InfiniBand, $malformed malformed"
	head -5 "$T/malformed.txt"
fi

#!/usr/bin/env bash
# test-profile — a node's measured profile reaches admission: the real
# bursar-noded probes its matmul FLOP/s (bursar-train --probe), its memory
# (/proc/meminfo) and the allreduce α-β between two of its ranks
# (bursar-arprobe, libbcoll) and reports them in its heartbeat; admitd stores
# them with the node and prices with them; an operator's
# POST /v1/nodes/{id}/reprobe makes the node measure again (a newer
# probed_us), and a restarted noded reuses its stored profile.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
PY=/usr/bin/python3
for b in bursar-admitd bursar-noded bursar-train bursar-arprobe; do
	[ -x "$B/$b" ] || { echo "FAIL profile_built: $B/$b is missing (run make all)"; exit 1; }
done
T=$(mktemp -d /tmp/bursar-profile-test.XXXXXX)
SOCK=$T/run/admitd.sock
APID=
NPID=
cleanup() {
	[ -n "$NPID" ] && { kill -9 "$NPID" 2>/dev/null; wait "$NPID" 2>/dev/null; }
	[ -n "$APID" ] && { kill -9 "$APID" 2>/dev/null; wait "$APID" 2>/dev/null; }
	rm -rf "$T"
}
trap cleanup EXIT
"$B/bursar-admitd" --state "$T" --listen "unix:$SOCK" >>"$T/admitd.log" 2>&1 &
APID=$!
start_noded() {
	"$B/bursar-noded" --state "$T/n" --admitd "unix:$SOCK" --ledgerd "unix:$T/none.sock" \
		--trainer "$B/bursar-train" --slots 2 --node-id node-p >>"$T/noded.log" 2>&1 &
	NPID=$!
}
start_noded
nodes() { curl -s -m 5 --unix-socket "$SOCK" http://a/v1/nodes; }
field() { nodes | "$PY" -c 'import json,sys; d=json.load(sys.stdin)["nodes"]; print(eval(sys.argv[1]) if d else None)' "$1" 2>/dev/null; }
FAILS=0
check() { # NAME GOT WANT
	if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1: got '$2', want '$3'"; FAILS=$((FAILS + 1)); fi
}
for _ in $(seq 300); do [ "$(field 'd[0]["probed_us"] is not None')" = True ] && break; sleep 0.1; done

check profile_memory "$(field "d[0]['mem_bytes'] == $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024")" True
check profile_allreduce_measured "$(field '0 < d[0]["allreduce"]["alpha_s"] < 0.1 and 1e6 < d[0]["allreduce"]["beta_bps"]')" True
check profile_flops "$(field 'd[0]["flops_per_slot"] > 1e8')" True
EST=$(curl -s -m 5 --unix-socket "$SOCK" -H 'Content-Type: application/json' --data-binary \
	'{"model":{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256},"params":{"steps":10,"batch":8,"ranks":2}}' \
	http://a/v1/estimate)
check profile_priced "$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["ranks"] == 2 and d["comm_s"] > 0)' "$EST")" True

P0=$(field 'd[0]["probed_us"]')
CODE=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST --unix-socket "$SOCK" http://a/v1/nodes/node-p/reprobe)
for _ in $(seq 100); do
	[ "$(field "d[0]['probed_us'] > $P0 and not d[0]['reprobe_pending']")" = True ] && break
	sleep 0.1
done
check reprobe_measures_again "$CODE $(field "d[0]['probed_us'] > $P0 and not d[0]['reprobe_pending']")" "202 True"

P1=$(field 'd[0]["probed_us"]')
kill "$NPID"; wait "$NPID" 2>/dev/null
S1=$(field 'd[0]["last_seen_us"]')
start_noded
for _ in $(seq 100); do [ "$(field "d[0]['last_seen_us'] > $S1")" = True ] && break; sleep 0.1; done
check restart_reuses_stored_profile "$(field "d[0]['probed_us']")" "$P1"
[ "$FAILS" -eq 0 ]

#!/usr/bin/env bash
# tests/consoled/test-nodes.sh — the cluster's nodes through consoled and
# bursarctl, against real ledgerd, admitd, noded and consoled processes
# (tests/lib.sh): an operator lists the nodes (the stack's CPU node, as admitd
# itself lists it), a user gets 403 for the list and for a reprobe, a reprobe
# is accepted for a real node and refused with a sentence for an unknown or
# malformed id, a hung admitd costs consoled one timeout and then 503s at once, and `bursarctl nodes` prints the node's row and the per-class
# totals (its --format json is admitd's table, parseable), a rate an operator
# sets prices the next estimate at once (consoled has admitd reload), and with admitd
# killed both say the admission service is unavailable.
set -u
cd "$(dirname "$0")/../.."
. tests/lib.sh
CTL=${CTL_BIN:-$BIN/bursarctl}

for b in bursar-ledgerd bursar-admitd bursar-noded bursar-train bursar-consoled bursarctl; do
	[ -x "$BIN/$b" ] || { echo "FAIL nodes_built: $BIN/$b is missing (run make)"; exit 1; }
done
stack_cases nodes
trap stack_stop EXIT

STATE=$(mktemp -d "${TMPDIR:-/tmp}/test-nodes.XXXXXX")
export STATE
for d in ledgerd admitd noded consoled; do
	stack_start_daemon "$d" || { echo "FAIL nodes_stack: $d did not start"; exit 1; }
done
ALICE=$(stack_adduser acme alice) && OP=$(stack_adduser ops root operator) ||
	{ echo "FAIL nodes_adduser"; exit 1; }
ASOCK=$STATE/run/admitd.sock

# api TOKEN METHOD PATH -> body in $OUT, status in $ST
api() {
	OUT=$(curl -s -o - -w '\n%{http_code}' -X "$2" -H "Authorization: Bearer $1" "$URL$3")
	ST=${OUT##*$'\n'}
	OUT=${OUT%$'\n'*}
}

# --- consoled routes ---
api "$OP" GET /api/v1/nodes
[ "$ST" = 200 ] && jq -e '.nodes[] | select(.id == "node-local" and .class == "cpu" and
	.device == "cpu" and .slots == 2 and .gpus == [] and (.flops_per_slot > 0))' \
	<<<"$OUT" >/dev/null && pass operator_lists || fail operator_lists "$ST $OUT"
truth=$(curl -s --unix-socket "$ASOCK" http://l/v1/nodes | jq -c '[.nodes[] | {id, class, slots}]')
[ "$(jq -c '[.nodes[] | {id, class, slots}]' <<<"$OUT" 2>/dev/null)" = "$truth" ] &&
	pass list_is_admitds || fail list_is_admitds "console $OUT, admitd $truth"
api "$ALICE" GET /api/v1/nodes
[ "$ST" = 403 ] && jq -e '.error | test("operator role") and test("alice")' <<<"$OUT" >/dev/null &&
	! grep -q node-local <<<"$OUT" && pass user_403 || fail user_403 "$ST $OUT"
curl -s -o /dev/null -w '%{http_code}' "$URL/api/v1/nodes" | grep -q 401 &&
	pass needs_token || fail needs_token "no 401 without a token"
api "$ALICE" POST /api/v1/nodes/node-local/reprobe
[ "$ST" = 403 ] && pass user_reprobe_403 || fail user_reprobe_403 "$ST $OUT"
api "$OP" POST /api/v1/nodes/no-such-node/reprobe
[ "$ST" = 404 ] && jq -e '.error | test("no such node")' <<<"$OUT" >/dev/null &&
	pass reprobe_unknown_404 || fail reprobe_unknown_404 "$ST $OUT"
api "$OP" POST '/api/v1/nodes/bad%20id%3B/reprobe'
[ "$ST" = 400 ] && jq -e '.error | test("not a node id")' <<<"$OUT" >/dev/null &&
	pass reprobe_bad_id_400 || fail reprobe_bad_id_400 "$ST $OUT"

# --- bursarctl ---
ctl() { "$CTL" --url "$URL" --token "$1" "${@:2}"; }
out=$(ctl "$OP" nodes 2>&1); rc=$?
row=$(awk '$1 == "node-local"' <<<"$out")
[ $rc = 0 ] && head -1 <<<"$out" | grep -q "^NODE  *CLASS  *DEVICE  *SLOTS  *TFLOP/S  *EFFICIENCY  *MEMORY  *STATE" &&
	grep -Eq "^node-local +cpu +cpu +[0-2]/2 +[0-9.]+ +[0-9]\.[0-9]{2} \((no jobs yet|[0-9]+ jobs?)\) .* (up|probing)$" <<<"$row" &&
	grep -Eq "^cpu: 2 slots, [0-2] in use$" <<<"$(tail -1 <<<"$out")" &&
	pass cli_table || fail cli_table "rc $rc: $out"
# speed: 3 significant digits of admitd's flops_per_slot
api "$OP" GET /api/v1/nodes
want=$(jq -r '.nodes[] | select(.id == "node-local") | .flops_per_slot' <<<"$OUT")
got=$(awk '{print $5}' <<<"$row")
/usr/bin/python3 -c "import sys; g, w = float(sys.argv[1]), float(sys.argv[2]) / 1e12
sys.exit(0 if abs(g - w) <= 0.005 * w else 1)" "$got" "$want" &&
	pass cli_speed || fail cli_speed "table says $got TFLOP/s, admitd $want FLOP/s"
out=$(ctl "$OP" nodes --format json 2>&1)
jq -e '.nodes[] | select(.id == "node-local" and .class == "cpu")' <<<"$out" >/dev/null &&
	pass cli_json || fail cli_json "$out"
out=$(ctl "$OP" nodes --format yaml 2>&1); rc=$?
[ $rc = 2 ] && grep -q "table or json" <<<"$out" && pass cli_bad_format || fail cli_bad_format "rc $rc: $out"
out=$(ctl "$ALICE" nodes 2>&1); rc=$?
[ $rc = 1 ] && grep -q "operator role" <<<"$out" && grep -q "HTTP 403" <<<"$out" &&
	pass cli_user_refused || fail cli_user_refused "rc $rc: $out"
probed() { curl -s --unix-socket "$ASOCK" http://l/v1/nodes |
	jq -r '.nodes[] | select(.id == "node-local") | .probed_us'; }
before=$(probed)
out=$(ctl "$OP" nodes reprobe node-local 2>&1); rc=$?
[ $rc = 0 ] && grep -q "node node-local will measure itself again" <<<"$out" &&
	pass cli_reprobe || fail cli_reprobe "rc $rc: $out"
# the real noded hears it in a heartbeat, measures again and reports a newer probe
if stack_wait "[ \"\$(probed)\" -gt $before ]" 60; then
	pass reprobe_reaches_node
	out=$(ctl "$OP" nodes 2>&1)
	awk '$1 == "node-local"' <<<"$out" | grep -q " up$" &&
		pass cli_state_up_after_probe || fail cli_state_up_after_probe "$out"
else
	fail reprobe_reaches_node "probed_us stayed $(probed) (was $before)"
fi
out=$(ctl "$OP" nodes reprobe nowhere 2>&1); rc=$?
[ $rc = 1 ] && grep -q "no such node: nowhere" <<<"$out" && grep -q "bursarctl nodes" <<<"$out" &&
	pass cli_reprobe_unknown || fail cli_reprobe_unknown "rc $rc: $out"
out=$(ctl "$OP" nodes reprobe '../x' 2>&1); rc=$?
[ $rc = 2 ] && grep -q "'../x' is not a node id" <<<"$out" &&
	pass cli_reprobe_bad_id || fail cli_reprobe_bad_id "rc $rc: $out"
out=$(ctl "$OP" --help 2>&1)
grep -q "nodes reprobe NODE" <<<"$out" && pass cli_usage || fail cli_usage "$out"

# --- a GPU class: a second node heartbeats as noded does on an H100 (class,
# device cuda, its GPUs, the power limit); with the ledger's rate for h100
# the table names the GPUs and the estimate
# prices both classes in one table with the chosen class marked (no admitd
# restart: consoled has it reload the rates the operator just set) ---
GPUS='[{"index":0,"name":"NVIDIA H100 80GB HBM3","uuid":"GPU-0","mem_bytes":85899345920},{"index":1,"name":"NVIDIA H100 80GB HBM3","uuid":"GPU-1","mem_bytes":85899345920}]'
gpu_hb() { curl -s -o /dev/null -w '%{http_code}' --unix-socket "$ASOCK" -H 'Content-Type: application/json' \
	--data-binary "{\"node\":\"gpu-1\",\"addr\":\"127.0.0.1\",\"slots\":2,\"flops_per_slot\":6.8e14,\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS,\"watts_per_slot\":700,\"jobs\":[]}" \
	http://l/v1/nodes/heartbeat; }
out=$(ctl "$OP" rates --set cpu=0.72 --set h100=7.2 --set kwh=0.15 2>&1) &&
	grep -Eq "^admission prices new submissions with rate version [0-9]+ now$" <<<"$out" &&
	pass rates_reach_admission || fail rates_reach_admission "$out"
code=$(gpu_hb)
out=$(ctl "$OP" nodes 2>&1)
[ "$code" = 200 ] && awk '$1 == "gpu-1"' <<<"$out" | grep -q "h100 *2x NVIDIA H100 80GB HBM3" &&
	grep -q "h100: 2 GPU slots, 0 in use" <<<"$out" &&
	pass cli_gpu_row || fail cli_gpu_row "heartbeat $code; $out"
make_sample_bundle "$STATE/bundle" 100000 >/dev/null
out=$(ctl "$ALICE" estimate "$STATE/bundle" 2>&1); rc=$?
[ $rc = 0 ] && grep -Eq "^  CLASS +RANKS +TIME" <<<"$out" && grep -Eq "^\* h100 +[12] " <<<"$out" &&
	grep -Eq "^  cpu +[12] " <<<"$out" && grep -Eq "^energy: .* kWh at 700 W per slot \(reported\)" <<<"$out" &&
	grep -q "choice: .* on h100: .*; or .* on cpu: " <<<"$out" &&
	pass cli_estimate_classes || fail cli_estimate_classes "rc $rc: $out"
out=$(ctl "$ALICE" estimate "$STATE/bundle" --set device=cpu 2>&1)
grep -Eq "^\* +[12] " <<<"$out" && ! grep -q "CLASS" <<<"$out" && ! grep -q "^energy:" <<<"$out" &&
	grep -q "not on h100: it asks for device cpu" <<<"$out" &&
	pass cli_estimate_device_cpu || fail cli_estimate_device_cpu "$out"

# admitd hung (SIGSTOP: its socket accepts, nothing answers): the first call
# waits out consoled's 5 s peer timeout and says so; the calls after it get
# their 503 at once (the peer gate, hclient.h) where each would have held
# consoled's one event loop for 5 s; the ledger's routes keep working; and
# when admitd answers again, so do its routes
kill -STOP "${STACK_PID[admitd]}"
api "$OP" GET /api/v1/nodes
[ "$ST" = 503 ] && jq -e '.error | test("admission service unavailable: timed out")' \
	<<<"$OUT" >/dev/null && pass admitd_hung_503 || fail admitd_hung_503 "$ST $OUT"
slow=
for _ in 1 2 3 4 5; do
	code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $OP" \
		"$URL/api/v1/nodes")
	[ "$code" = 503 ] || slow="$slow $code"
done
api "$ALICE" GET /api/v1/balance
[ -z "$slow" ] && [ "$ST" = 200 ] && pass admitd_hung_fails_fast ||
	fail admitd_hung_fails_fast "answers not 503 within 3 s:${slow:- none}; balance $ST"
kill -CONT "${STACK_PID[admitd]}"
stack_wait "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer $OP' \
	$URL/api/v1/nodes)\" = 200 ]" 20 && grep -q "admitd.sock answers again" "$STATE/logs/consoled.log" &&
	pass admitd_back || fail admitd_back "still not 200 after SIGCONT: $(tail -3 "$STATE/logs/consoled.log")"

# admitd gone: a 503 that names the service, never a hang or an empty table
stack_kill admitd KILL
api "$OP" GET /api/v1/nodes
[ "$ST" = 503 ] && jq -e '.error | test("admission service unavailable")' <<<"$OUT" >/dev/null &&
	pass admitd_down_503 || fail admitd_down_503 "$ST $OUT"
out=$(ctl "$OP" nodes 2>&1); rc=$?
[ $rc = 1 ] && grep -q "admission service unavailable" <<<"$out" && ! grep -q "^NODE" <<<"$out" &&
	pass cli_admitd_down || fail cli_admitd_down "rc $rc: $out"
exit $FAILED

#!/usr/bin/env bash
# test-class — the node class of bursar-noded end to end, with the real
# bursar-admitd, bursar-ledgerd and bursar-train on Unix sockets:
#   1. a bad --class is refused at start with a sentence naming the rule;
#   2. without libnvidia-ml the node says it is a CPU node;
#   3. --class cpu-big reaches admitd in the heartbeat ("class", "device")
#      and shows in noded's own /v1/health;
#   4. a job's ranks run with --device cpu and an empty CUDA_VISIBLE_DEVICES;
#   5. its meter records reach ledgerd as node_class cpu-big, priced at that
#      class's rate (set first through POST /v1/rates as the operator), with
#      no energy_kwh where the node cannot measure energy (no RAPL here).
# On a machine with an NVIDIA GPU (libnvidia-ml.so.1) cases 2-5 run with
# --cpu-only, and four more check the GPU node: the class from the GPU's name, "device"
# "cuda" and the GPUs in the heartbeat, one slot per GPU, a rank on
# CUDA_VISIBLE_DEVICES=<index> with --device cuda, and its records priced at
# the GPU class's rate with the GPU's measured energy (energy_kwh > 0).
# Prints PASS/FAIL/SKIP per case; kills everything it started on exit.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/bin
PY=/usr/bin/python3
CASES="bad_class_refused cpu_node_said class_in_heartbeat_and_health ranks_run_device_cpu
	ledger_prices_node_class"

for b in bursar-noded bursar-admitd bursar-ledgerd bursar-train; do
	if [ ! -x "$BIN/$b" ]; then
		for c in $CASES; do echo "SKIP $c: $BIN/$b is not built"; done
		exit 0
	fi
done

T=$(mktemp -d /tmp/test-class-XXXXXX)
TROOT=$T
NODE=node-class-$$
LED_SOCK=$T/ledger/run/ledgerd.sock
ADM_SOCK=$T/admitd/run/admitd.sock
ND_SOCK=$T/noded.sock
LED_DB=$T/ledger/ledgerd.db
led_pid= adm_pid= nd_pid=

. tests/noded/lib.sh

skip_rest() { # skip_rest WHY CASE...
	local why=$1 c
	shift
	for c in "$@"; do echo "SKIP $c: $why"; done
}

sql_led() { # the rows of a query, columns joined by '|' (no sqlite3 CLI needed)
	$PY -c "
import sqlite3, sys
for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):
    print('|'.join('' if v is None else str(v) for v in row))" "$LED_DB" "$1"
}

# Cases 2-5 on a GPU node: no --class, no --slots; the node says what it is.
gpu_cases() {
	local cls ngpu got id i pids p bad n classes kwh idx
	mkdir -p "$T/gpu/data"
	echo '{"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 128, "vocab_size": 256, "n_positions": 64}' >"$T/gpu/config.json"
	corpus "$T/gpu/data/a.txt"
	"$BIN/bursar-ledgerd" --state "$T/ledger" 2>>"$T/ledgerd.log" &
	led_pid=$!
	wait_sock "$LED_SOCK" 10 || { echo "FAIL setup: ledgerd did not start"; return; }
	# noded first (admitd is not up yet): its class decides the rate to set
	"$BIN/bursar-noded" --state "$T/node" --admitd "unix:$ADM_SOCK" --ledgerd "unix:$LED_SOCK" \
		--trainer "$BIN/bursar-train" --node-id "$NODE" --listen "unix:$ND_SOCK" 2>>"$T/noded.log" &
	nd_pid=$!
	wait_sock "$ND_SOCK" 120 || { echo "FAIL setup: noded did not start"; tail -5 "$T/noded.log"; return; }
	got=$(curl -s --max-time 5 --unix-socket "$ND_SOCK" http://x/v1/health)
	cls=$(json "j['class']" <<<"$got")
	ngpu=$(json "len(j['gpus'])" <<<"$got")
	idx=$(json "j['gpus'][0]['index'] if j['gpus'] else ''" <<<"$got")
	echo "# GPU node: $got"
	grep -c "NVIDIA GPUs" "$T/noded.log" | grep -qx 1 && [ "$(json "(j['device'], j['slots'])" <<<"$got")" = "('cuda', $ngpu)" ] &&
		[ "$ngpu" -ge 1 ] && pass gpu_node_said ||
		fail gpu_node_said "a GPU node should say so and offer one slot per GPU: $got; $(head -3 "$T/noded.log")"
	curl -s --unix-socket "$LED_SOCK" -o "$T/rates.json" -X POST -H 'X-Bursar-Role: operator' \
		-H 'Content-Type: application/json' \
		--data-binary "{\"rank_hour\": {\"cpu\": 0.72, \"$cls\": 3.6}, \"kwh\": 0.15}" http://l/v1/rates
	"$BIN/bursar-admitd" --state "$T/admitd" --ledgerd "unix:$LED_SOCK" 2>>"$T/admitd.log" &
	adm_pid=$!
	wait_sock "$ADM_SOCK" 10 || { echo "FAIL setup: admitd did not start"; return; }
	for ((i = 0; i < 50; i++)); do
		got=$(curl -s --max-time 5 --unix-socket "$ADM_SOCK" http://x/v1/nodes |
			json "[(x.get('class'), x.get('device'), len(x.get('gpus') or []), x['slots']) for x in j['nodes'] if x['id'] == '$NODE']" 2>/dev/null)
		[ "$got" = "[('$cls', 'cuda', $ngpu, $ngpu)]" ] && break
		sleep 0.1
	done
	[ "$got" = "[('$cls', 'cuda', $ngpu, $ngpu)]" ] && pass gpu_in_heartbeat ||
		fail gpu_in_heartbeat "admitd lists the node as $got, want [('$cls', 'cuda', $ngpu, $ngpu)]"
	# the GPU's power limit is what admission prices energy with until it has metered
	got=$(curl -s --max-time 5 --unix-socket "$ADM_SOCK" http://x/v1/nodes |
		json "[x['watts_per_slot']['reported'] for x in j['nodes'] if x['id'] == '$NODE']")
	echo "# power per slot reported: $got W"
	$PY -c "import sys; v = eval(sys.argv[1]); sys.exit(0 if v and v[0] and 50 < v[0] < 5000 else 1)" "$got" &&
		pass gpu_power_limit_reported || fail gpu_power_limit_reported "admitd has $got W per slot"
	echo "{\"steps\": 3000, \"batch\": 8, \"seq_len\": 64, \"ranks\": 1, \"device\": \"cuda\", \"node_class\": \"$cls\"}" >"$T/gpu/bursar.json"
	id=$(submit "$T/gpu") ||
		{ fail rank_on_its_gpu "submit failed"; return; }
	for ((i = 0; i < 600; i++)); do
		pids=$(rank_pids "$id")
		[ -n "$pids" ] && break
		case $(job_field "$id" state) in queued | running) ;; *) break ;; esac
		sleep 0.05
	done
	bad=
	[ -n "$pids" ] || bad="the rank of job $id never ran (state $(job_field "$id" state): $(job_field "$id" reason)$(job_field "$id" error))"
	for p in $pids; do
		tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- ' --device cuda' || bad="$bad pid $p runs '$(tr '\0' ' ' <"/proc/$p/cmdline")';"
		tr '\0' '\n' <"/proc/$p/environ" | grep -qx "CUDA_VISIBLE_DEVICES=$idx" || bad="$bad pid $p lacks CUDA_VISIBLE_DEVICES=$idx;"
	done
	[ -z "$bad" ] && pass rank_on_its_gpu || fail rank_on_its_gpu "$bad"
	wait_state "$id" any-final 180
	[ "$(job_field "$id" state)" = succeeded ] ||
		{ fail ledger_prices_gpu_class_and_energy "job $id is $(job_field "$id" state): $(job_field "$id" error)"; return; }
	wait_spool_empty 10
	got=$(sql_led "SELECT count(*), group_concat(DISTINCT node_class), sum(energy_kwh), sum(quantity) FROM entries WHERE job = '$id'")
	echo "# ledger: records, class, kWh, rank-seconds: $got"
	IFS='|' read -r n classes kwh _ <<<"$got"
	[ "$n" -gt 0 ] && [ "$classes" = "$cls" ] ||
		{ fail ledger_prices_gpu_class_and_energy "records of job $id: $got, want class $cls"; return; }
	$PY -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$kwh" ||
		{ fail ledger_prices_gpu_class_and_energy "a GPU job's records carry no energy ($kwh kWh)"; return; }
	# 3.6 USD a rank-hour is 1000 micro-USD a rank-second; 0.15 USD a kWh
	bad=$(sql_led "SELECT count(*) FROM entries WHERE job = '$id' AND
		abs(amount_micro - quantity * 1000 - energy_kwh * 150000) > 1")
	[ "$bad" = 0 ] || { fail ledger_prices_gpu_class_and_energy "$bad records are not priced at the class rate"; return; }
	pass ledger_prices_gpu_class_and_energy
	# admitd reads the bill a few seconds later and learns the GPU's real power
	for ((i = 0; i < 150; i++)); do
		n=$(curl -s --max-time 5 --unix-socket "$ADM_SOCK" http://x/v1/nodes |
			json "[x['watts_per_slot']['jobs'] for x in j['nodes'] if x['id'] == '$NODE'][0]")
		[ "$n" = 1 ] && break
		sleep 0.1
	done
	got=$(curl -s --max-time 5 --unix-socket "$ADM_SOCK" http://x/v1/nodes |
		json "[x['watts_per_slot'] for x in j['nodes'] if x['id'] == '$NODE'][0]")
	echo "# power per slot after the job: $got"
	$PY -c "import sys; v = eval(sys.argv[1]); sys.exit(0 if v['jobs'] == 1 and 1 < v['metered'] < 5000 else 1)" "$got" &&
		pass gpu_power_learned || fail gpu_power_learned "admitd's power figure for the node: $got"
}

# 1. a bad --class is refused at start
case1() {
	local out rc
	out=$("$BIN/bursar-noded" --state "$T/bad" --admitd "unix:$ADM_SOCK" --ledgerd "unix:$LED_SOCK" \
		--trainer "$BIN/bursar-train" --class 'Big Iron!' 2>&1)
	rc=$?
	[ "$rc" -ne 0 ] || { fail bad_class_refused "noded started with --class 'Big Iron!'"; return; }
	grep -q "\-\-class: 'Big Iron!' is not a node class name: use 1..32 characters of \[a-z0-9_.-\]" <<<"$out" ||
		{ fail bad_class_refused "unclear message: $out"; return; }
	out=$("$BIN/bursar-noded" --state "$T/bad" --admitd "unix:$ADM_SOCK" --ledgerd "unix:$LED_SOCK" \
		--trainer "$BIN/bursar-train" --class "$(printf 'c%.0s' {1..33})" 2>&1) &&
		{ fail bad_class_refused "noded started with a 33-character class"; return; }
	[ ! -e "$T/bad/noded.db" ] || { fail bad_class_refused "a refused start created noded.db"; return; }
	pass bad_class_refused
}
case1

GPU=0 CPU_ONLY=
if ldconfig -p 2>/dev/null | grep -q 'libnvidia-ml\.so\.1'; then
	GPU=1 CPU_ONLY=--cpu-only # the CPU cases on a GPU machine: a CPU node by flag
fi

mkdir -p "$T/short/data"
echo '{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 256, "n_positions": 64}' >"$T/short/config.json"
echo '{"steps": 2000, "batch": 2, "seq_len": 32, "ranks": 2, "node_class": "cpu-big"}' >"$T/short/bursar.json"
corpus "$T/short/data/a.txt"

"$BIN/bursar-ledgerd" --state "$T/ledger" 2>>"$T/ledgerd.log" &
led_pid=$!
wait_sock "$LED_SOCK" 10 || { echo "FAIL setup: ledgerd did not start"; exit 1; }
# the class's rate, before admitd asks the ledger for its rates
code=$(curl -s --unix-socket "$LED_SOCK" -o "$T/rates.json" -w '%{http_code}' -X POST \
	-H 'X-Bursar-Role: operator' -H 'Content-Type: application/json' \
	--data-binary '{"rank_hour": {"cpu": 0.72, "cpu-big": 1.44}, "kwh": 0.15}' http://l/v1/rates)
[ "$code" = 200 ] || { echo "FAIL setup: POST /v1/rates answered $code: $(cat "$T/rates.json")"; exit 1; }
rate_version=$(json "j['version']" <"$T/rates.json")
"$BIN/bursar-admitd" --state "$T/admitd" --ledgerd "unix:$LED_SOCK" 2>>"$T/admitd.log" &
adm_pid=$!
wait_sock "$ADM_SOCK" 10 || { echo "FAIL setup: admitd did not start"; exit 1; }
"$BIN/bursar-noded" --state "$T/node" --admitd "unix:$ADM_SOCK" --ledgerd "unix:$LED_SOCK" \
	--trainer "$BIN/bursar-train" --slots 2 --node-id "$NODE" --listen "unix:$ND_SOCK" \
	--class cpu-big $CPU_ONLY 2>>"$T/noded.log" &
nd_pid=$!
wait_sock "$ND_SOCK" 90 || { echo "FAIL setup: noded did not start"; tail -5 "$T/noded.log"; exit 1; }

# 2. no libnvidia-ml here: a CPU node, said once in a sentence
case2() {
	local n
	if [ "$GPU" = 1 ]; then
		n=$(grep -c "a CPU node by --cpu-only: this node offers 2 CPU slots (class cpu-big)" "$T/noded.log")
	else
		n=$(grep -c "no NVIDIA GPU: libnvidia-ml.so.1 not found; this node offers 2 CPU slots (class cpu-big)" "$T/noded.log")
	fi
	[ "$n" = 1 ] || { fail cpu_node_said "noded.log says it $n times: $(head -3 "$T/noded.log")"; return; }
	pass cpu_node_said
}

# 3. the heartbeat carries the class and the device; so does noded's health
case3() {
	local i got
	for ((i = 0; i < 50; i++)); do
		got=$(curl -s --max-time 5 --unix-socket "$ADM_SOCK" http://x/v1/nodes |
			json "[(x.get('class'), x.get('device'), x.get('gpus')) for x in j['nodes'] if x['id'] == '$NODE']" 2>/dev/null)
		[ "$got" = "[('cpu-big', 'cpu', [])]" ] && break
		sleep 0.1
	done
	[ "$got" = "[('cpu-big', 'cpu', [])]" ] ||
		{ fail class_in_heartbeat_and_health "admitd lists the node as $got, want [('cpu-big', 'cpu', [])]"; return; }
	got=$(curl -s --max-time 5 --unix-socket "$ND_SOCK" http://x/v1/health | json "(j['class'], j['device'], j['gpus'], j['slots'])")
	[ "$got" = "('cpu-big', 'cpu', [], 2)" ] ||
		{ fail class_in_heartbeat_and_health "noded /v1/health says $got"; return; }
	pass class_in_heartbeat_and_health
}

# 4 and 5: one 2-rank job
case45() {
	local id i pids p bad got want
	id=$(submit "$T/short") ||
		{ fail ranks_run_device_cpu "submit failed"; fail ledger_prices_node_class "submit failed"; return; }
	for ((i = 0; i < 300; i++)); do
		pids=$(rank_pids "$id")
		[ "$(wc -w <<<"$pids")" = 2 ] && break
		[ "$(job_field "$id" state)" = queued ] || [ "$(job_field "$id" state)" = running ] || break
		sleep 0.05
	done
	if [ "$(wc -w <<<"$pids")" != 2 ]; then
		fail ranks_run_device_cpu "the 2 ranks of job $id never ran together (state $(job_field "$id" state): $(job_field "$id" reason)$(job_field "$id" error))"
	else
		bad=
		for p in $pids; do
			tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- ' --device cpu' || bad="$bad pid $p runs '$(tr '\0' ' ' <"/proc/$p/cmdline")';"
			tr '\0' '\n' <"/proc/$p/environ" | grep -qx 'CUDA_VISIBLE_DEVICES=' || bad="$bad pid $p has no empty CUDA_VISIBLE_DEVICES;"
		done
		[ -z "$bad" ] && pass ranks_run_device_cpu || fail ranks_run_device_cpu "$bad"
	fi
	wait_state "$id" any-final 120
	[ "$(job_field "$id" state)" = succeeded ] ||
		{ fail ledger_prices_node_class "job $id is $(job_field "$id" state): $(job_field "$id" error)"; return; }
	wait_spool_empty 10
	got=$(sql_led "SELECT count(*), count(DISTINCT rank), group_concat(DISTINCT node_class),
		min(rate_version), max(rate_version), sum(energy_kwh) FROM entries WHERE job = '$id'")
	IFS='|' read -r n ranks classes vmin vmax kwh <<<"$got"
	[ "$n" -gt 0 ] && [ "$ranks" = 2 ] ||
		{ fail ledger_prices_node_class "ledger holds $n records of $ranks ranks of job $id"; return; }
	[ "$classes" = cpu-big ] || { fail ledger_prices_node_class "records name node classes '$classes', want cpu-big"; return; }
	[ "$vmin" = "$rate_version" ] && [ "$vmax" = "$rate_version" ] ||
		{ fail ledger_prices_node_class "records priced at rate versions $vmin..$vmax, want $rate_version"; return; }
	# no RAPL on this machine: energy is unknown, so no record carries any
	[ -d /sys/class/powercap/intel-rapl:0 ] || [ "$(printf '%.0f' "$kwh")" = 0 ] ||
		{ fail ledger_prices_node_class "records carry $kwh kWh on a node that cannot measure energy"; return; }
	# 1.44 USD a rank-hour: 400 micro-USD a rank-second, each record rounded once
	bad=$(sql_led "SELECT count(*) FROM entries WHERE job = '$id' AND
		abs(amount_micro - quantity * 400 - energy_kwh * 150000) > 1")
	[ "$bad" = 0 ] || { fail ledger_prices_node_class "$bad records of job $id are not priced at 1.44 USD/rank-hour: $(sql_led "SELECT quantity || ' s: ' || amount_micro FROM entries WHERE job = '$id' LIMIT 3")"; return; }
	pass ledger_prices_node_class
}

case2
case3
case45
if [ "$GPU" = 1 ]; then
	for p in $nd_pid $adm_pid $led_pid; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	T=$T/g
	mkdir -p "$T"
	LED_SOCK=$T/ledger/run/ledgerd.sock ADM_SOCK=$T/admitd/run/admitd.sock ND_SOCK=$T/noded.sock
	LED_DB=$T/ledger/ledgerd.db NODE=node-gpu-$$
	gpu_cases
else
	skip_rest "no GPU (libnvidia-ml.so.1 is not installed)" gpu_node_said gpu_in_heartbeat \
		gpu_power_limit_reported rank_on_its_gpu ledger_prices_gpu_class_and_energy gpu_power_learned
fi
exit $((fails > 0))

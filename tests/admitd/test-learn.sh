#!/usr/bin/env bash
# test-learn — the estimator learns from the ledger: with a real ledgerd and a
# real admitd on Unix sockets, a node (driven with curl) runs a job whose
# metered entries (ingested as noded would) say it took three times the
# predicted compute; once it is reported finished, admitd reads the bill and
# lowers that node's efficiency, so the estimate of an identical second job is
# closer to the first's metered cost, and its explanation says which
# efficiency it used and how many jobs it learned from. kill -9 of admitd
# after learning does not learn the same bill twice. Also: the node profile
# in the heartbeat (memory, allreduce α-β) is stored and shown, and an
# operator's re-probe request is flagged in the node's heartbeat replies until
# it reports a newer probe.
set -u
cd "$(dirname "$0")/../.."
NAME=learn
. tests/admitd/harness.sh
start

MODEL='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
PARAMS='{"steps":2000,"batch":8,"seq_len":64,"ranks":1}'
PROFILE='"mem_bytes":8e9,"allreduce":{"alpha_s":2e-5,"beta_bps":3e9},"probed_us":1000'
submit() { api POST /v1/jobs "{\"tenant\":\"acme\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/b-1\",\"model\":$MODEL,\"params\":$PARAMS}"; settle; }
hb() { # REPORTS [PROFILE]
	api POST /v1/nodes/heartbeat "{\"node\":\"node-a\",\"addr\":\"127.0.0.1\",\"slots\":1,\"flops_per_slot\":2e10,${2:-$PROFILE},\"jobs\":[${1:-}]}"
}
SEQ=0
# meter JOB SECONDS: ingest SECONDS rank-seconds of compute for rank 0, as noded would
meter() {
	local recs="" now t0 n=0 left=$2 q
	now=$(date +%s%6N)
	t0=$((now - ${2%.*} * 1000000 - 1000000))
	while "$PY" -c "import sys; sys.exit(0 if $left > 0 else 1)"; do
		q=$("$PY" -c "print(min(60.0, $left))")
		left=$("$PY" -c "print($left - $q)")
		SEQ=$((SEQ + 1)); n=$((n + 1))
		recs="$recs${recs:+,}{\"seq\":$SEQ,\"job\":\"$1\",\"tenant\":\"acme\",\"user\":\"alice\",\"rank\":0,\"kind\":\"compute\",\"quantity\":$q,\"unit\":\"rank_s\",\"start_us\":$t0,\"end_us\":$((t0 + 1000000))${WATTS:+,\"energy_kwh\":$("$PY" -c "print($q * $WATTS / 3.6e6)")}}"
	done
	lapi POST /v1/ingest "{\"source\":\"node-a\",\"records\":[$recs]}"
}

hb
begin node_profile_stored
api GET /v1/nodes
want "profile" "$(j 'd["nodes"][0]["mem_bytes"], d["nodes"][0]["allreduce"]["alpha_s"], d["nodes"][0]["allreduce"]["beta_bps"]')" "(8000000000.0, 2e-05, 3000000000.0)"
want "efficiency default" "$(j 'd["nodes"][0]["efficiency"], d["nodes"][0]["efficiency_jobs"]')" "(0.3, 0)"
hb "" '"mem_bytes":-5'
want "bad profile refused" "$CODE" 400
end

begin first_job_metered_slower_than_predicted
submit
J1=$(j 'd["id"]')
want state "$(j 'd["state"]')" running
P1=$(j 'd["estimate"]["amount_micro"]')
S1=$(j 'd["estimate"]["seconds"]')
C1=$(j 'd["estimate"]["compute_s"]')
wantgrep "explains the default" "$(j 'd["estimate"]["explain"]')" 'efficiency 0\.30 \(default, nothing learned yet\)'
hb "{\"job\":\"$J1\",\"state\":\"running\"}"
# the job's compute took three times what was predicted
RAN=$("$PY" -c "print(round($S1 + 2 * $C1, 3))")
meter "$J1" "$RAN"
want ingest "$LCODE" 200
hb "{\"job\":\"$J1\",\"state\":\"succeeded\"}"
api GET "/v1/jobs/$J1"
want state "$(j 'd["state"]')" succeeded
end

begin second_estimate_closer_to_metered
for _ in $(seq 80); do
	api GET /v1/nodes
	[ "$(j 'd["nodes"][0]["efficiency_jobs"]')" = 1 ] && break
	sleep 0.1
done
want "learned once" "$(j 'd["nodes"][0]["efficiency_jobs"]')" 1
lapi GET "/v1/jobs/$J1/bill"
M1=$(lj 'd["metered"]["amount_micro"]')
want "bill predicted = estimate" "$(lj 'd["predicted"]["amount_micro"] if d["predicted"] else None')" "$P1"
submit
J2=$(j 'd["id"]')
P2=$(j 'd["estimate"]["amount_micro"]')
wantgrep "explains what it learned" "$(j 'd["estimate"]["explain"]')" 'efficiency 0\.[0-9]+ learned from 1 job on node-a'
want "closer" "$("$PY" -c "print(abs($P2 - $M1) < abs($P1 - $M1), $P2 > $P1)")" "True True"
api POST "/v1/jobs/$J2/cancel"
hb "{\"job\":\"$J2\",\"state\":\"cancelled\"}"
end

begin learned_once_across_kill9
crash
start
sleep 4.5 # more than the learning delay and a few ticks
api GET /v1/nodes
want "still one job" "$(j 'd["nodes"][0]["efficiency_jobs"]')" 1
end

begin energy_priced_from_reported_then_metered_power
lapi POST /v1/rates '{"rank_hour": {"cpu": 0.72}, "kwh": 0.5}'
want rates "$LCODE" 200
crash
start # reads the new rates at start
hb "" "$PROFILE,\"watts_per_slot\":300"
api POST /v1/estimate "{\"model\":$MODEL,\"params\":$PARAMS}"
E=$(j 'd["energy_kwh"]')
want "reported power" "$(j 'd["watts_per_slot"], d["watts_source"]')" "(300.0, 'reported')"
want "energy = seconds x 300 W" "$("$PY" -c "print(abs($E - $(j 'd["seconds"]') * 300 / 3.6e6) < 1e-9)")" True
want "amount includes energy" "$("$PY" -c "print(abs($(j 'd["amount"]') - $(j 'd["seconds"]') * 0.0002 - $E * 0.5) < 1e-9)")" True
wantgrep "explained" "$(j 'd["explain"]')" "; energy [0-9.e-]+ kWh at 300 W per slot \(the node's power limit\)"
submit
J3=$(j 'd["id"]')
hb "{\"job\":\"$J3\",\"state\":\"running\"}" "$PROFILE,\"watts_per_slot\":300"
WATTS=150 meter "$J3" 30
want ingest "$LCODE" 200
hb "{\"job\":\"$J3\",\"state\":\"succeeded\"}" "$PROFILE,\"watts_per_slot\":300"
for _ in $(seq 80); do
	api GET /v1/nodes
	[ "$(j 'd["nodes"][0]["watts_per_slot"]["jobs"]')" = 1 ] && break
	sleep 0.1
done
want "metered power learned" "$(j 'round(d["nodes"][0]["watts_per_slot"]["metered"], 3), d["nodes"][0]["watts_per_slot"]["reported"]')" "(150.0, 300.0)"
api POST /v1/estimate "{\"model\":$MODEL,\"params\":$PARAMS}"
want "metered power used" "$(j 'round(d["watts_per_slot"], 3), d["watts_source"]')" "(150.0, 'metered')"
wantgrep "explained" "$(j 'd["explain"]')" "at 150 W per slot \(metered\)"
end

begin reprobe_flagged_until_new_probe
hb
want "no reprobe" "$(j 'd["reprobe"]')" False
api POST /v1/nodes/node-a/reprobe
want status "$CODE" 202
api POST /v1/nodes/nope/reprobe
want "unknown node" "$CODE" 404
hb
want "flagged" "$(j 'd["reprobe"]')" True
hb "" "$PROFILE"
want "repeated until reprobed" "$(j 'd["reprobe"]')" True
hb "" "\"mem_bytes\":8e9,\"probed_us\":$(date +%s%6N)"
want "cleared by a newer probe" "$(j 'd["reprobe"]')" False
api GET /v1/nodes
want "pending shown" "$(j 'd["nodes"][0]["reprobe_pending"]')" False
end

[ "$FAILS" -eq 0 ]

#!/usr/bin/env bash
# test-admitd — bursar-admitd end to end on a real Unix socket and a real
# SQLite file, driven with curl the way noded and consoled drive it: node
# registration, pricing, FIFO admission, launches, progress, completion,
# cancellation, rendezvous, bad input, node timeout, the per-tenant cap, and
# kill -9 + restart without losing a job or launching one twice. ledgerd is
# deliberately not configured (so budgets are not enforced: see
# test-admission.sh for holds): estimates must wait in the outbox. The queue
# runs the FIFO policy here; test-admission.sh covers bursar's.
set -u
cd "$(dirname "$0")/../.."
NAME=admitd
NODE_TIMEOUT=3
ADMITD_ARGS="--policy fifo"
LEDGERD=0
. tests/admitd/harness.sh

MODEL='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
job_body() { # PARAMS [TENANT]
	echo "{\"tenant\":\"${2:-acme}\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/bundles/b-1\",\"name\":\"tiny\",\"model\":$MODEL,\"params\":$1}"
}
submit() { api POST /v1/jobs "$(job_body "$@")"; settle; }
hb() { # NODE SLOTS REPORTS
	api POST /v1/nodes/heartbeat "{\"node\":\"$1\",\"addr\":\"127.0.0.1\",\"slots\":$2,\"flops_per_slot\":2e10,\"jobs\":[${3:-}]}"
}
rep() { # JOB STATE [EXTRA]
	echo "{\"job\":\"$1\",\"state\":\"$2\"${3:+,$3}}"
}
state() { api GET "/v1/jobs/$1"; j 'd["state"]'; }

start

begin health
api GET /v1/health
want status "$CODE" 200
want ok "$(j 'd["ok"]')" True
end

begin submit_before_any_node_waits
submit '{"steps":100,"batch":8}'
want status "$CODE" 201
J1=$(j 'd["id"]')
want state "$(j 'd["state"]')" submitted
wantgrep reason "$(j 'd["reason"]')" '^waiting for a node to register \(nothing to price against\)$'
api POST /v1/estimate "{\"model\":$MODEL}"
want "estimate without nodes" "$CODE" 409
end

begin bad_input_is_400_with_a_message
api POST /v1/jobs '{"tenant": '
want "malformed json" "$CODE" 400
wantgrep "malformed message" "$(j 'd["error"]')" 'malformed JSON'
api POST /v1/jobs "{\"user\":\"alice\",\"bundle_id\":\"b\",\"bundle_dir\":\"/x\",\"model\":$MODEL}"
want "missing tenant" "$CODE" 400
wantgrep "missing tenant message" "$(j 'd["error"]')" "'tenant' must be"
submit '{"steps":100,"batch":8,"colour":"red"}'
want "unknown param" "$CODE" 400
wantgrep "unknown param message" "$(j 'd["error"]')" "unknown key 'colour'"
api POST /v1/jobs "$(job_body '{}' | sed 's/"n_layer":2/"n_layer":0/')"
want "bad model" "$CODE" 400
wantgrep "bad model message" "$(j 'd["error"]')" "n_layer"
api POST /v1/jobs "$(job_body '{}' | sed 's|/srv/bundles/b-1|../etc|')"
want "relative bundle_dir" "$CODE" 400
api GET '/v1/jobs?limit=5000'
want "limit too large" "$CODE" 400
wantgrep "limit message" "$(j 'd["error"]')" "'limit' must be an integer in \[1, 1000\]"
api POST /v1/nodes/heartbeat '{"node":"n1","slots":-1,"flops_per_slot":1e9}'
want "negative slots" "$CODE" 400
api POST /v1/nodes/heartbeat '{"node":"n1","slots":1,"flops_per_slot":1e9,"jobs":[{"job":"j-1","state":"exploded"}]}'
want "bad report state" "$CODE" 400
api GET /v1/jobs/j-nosuch
want "unknown job" "$CODE" 404
head -c 1100000 /dev/zero | tr '\0' ' ' >"$T/big"
CODE=$(curl -s -m 10 --unix-socket "$SOCK" -o "$T/resp" -w '%{http_code}' -X POST \
	--data-binary @"$T/big" http://admitd/v1/jobs)
want "body over 1 MiB" "$CODE" 413
end

begin node_registers_prices_and_launches
hb node-a 2
want status "$CODE" 200
want "launch count" "$(j 'len(d["launch"])')" 1
want "launch job" "$(j 'd["launch"][0]["job"]')" "$J1"
want "launch ranks" "$(j 'd["launch"][0]["ranks"]')" "[0, 1]"
want "launch size" "$(j 'd["launch"][0]["size"]')" 2
want "rdv key" "$(j 'd["launch"][0]["rdv_key"]')" "$J1.1"
want "rdv base" "$(j 'd["launch"][0]["rdv"]')" "unix:$SOCK"
api GET "/v1/jobs/$J1"
want state "$(j 'd["state"]')" running
want reason "$(j 'd["reason"]')" "running on node-a ranks 0-1"
want "state history" "$(j '",".join(e["state"] for e in d["events"])')" "submitted,priced,queued,running"
wantgrep explain "$(j 'd["estimate"]["explain"]')" '^2 ranks: .* \(fastest\); 1 rank would be .*default rate \$0.0002/rank-s because ledgerd is unreachable'
want "estimate micro" "$(j 'd["estimate"]["amount_micro"] == round(d["estimate"]["amount"] * 1e6)')" True
api GET /v1/nodes
want "node listed" "$(j '[(n["id"], n["slots"], n["used"], n["down"]) for n in d["nodes"]]')" "[('node-a', 2, 2, False)]"
end

begin launch_repeats_until_reported
hb node-a 2
want "launch again" "$(j '[l["job"] for l in d["launch"]]')" "['$J1']"
end

begin fifo_waits_for_free_slots
submit '{"steps":100,"batch":8,"ranks":2}'
J2=$(j 'd["id"]')
want "J2 state" "$(j 'd["state"]')" queued
wantgrep "J2 reason" "$(j 'd["reason"]')" "^queued: next in line, needs 2 ranks \(0 free of 2\), est\. start [0-9]{2}:[0-9]{2}$"
submit '{"steps":100,"batch":8,"ranks":1}'
J3=$(j 'd["id"]')
want "J3 state" "$(j 'd["state"]')" queued
wantgrep "J3 reason" "$(j 'd["reason"]')" "^queued: 1 job ahead, est\. start [0-9]{2}:[0-9]{2}$"
end

begin too_many_ranks_rejected_at_submit
submit '{"steps":100,"batch":8,"ranks":8}'
want status "$CODE" 400
want error "$(j 'd["error"]')" "needs 8 ranks, the cluster has 2"
end

begin over_budget_rejected
submit '{"steps":100,"batch":8,"budget":0.000001}'
want status "$CODE" 201
want state "$(j 'd["state"]')" failed
wantgrep reason "$(j 'd["reason"]')" '^rejected: needs \$0\.[0-9]+, budget \$0\.0000$'
end

begin progress_report_stops_launches
hb node-a 2 "$(rep "$J1" running '"progress":{"step":10,"steps":100,"loss":4.5,"first_loss":5.6,"tokens_per_s":9000,"elapsed_s":2}')"
want "no launch" "$(j 'len(d["launch"])')" 0
want "no kill" "$(j 'len(d["kill"])')" 0
api GET "/v1/jobs/$J1"
want step "$(j 'd["progress"]["step"]')" 10
want eta "$(j 'd["progress"]["eta_s"]')" 18.0
want started "$(j 'd["started_us"] is not None')" True
end

begin rendezvous_incomplete_then_complete
api POST "/v1/rdv/$J1.1" '{"rank":1,"size":2,"addr":"127.0.0.1:40001"}'
want "post rank 1" "$CODE" 200
api GET "/v1/rdv/$J1.1"
want "incomplete" "$(j 'd["complete"]')" False
want "addrs so far" "$(j 'd["addrs"]')" "[None, '127.0.0.1:40001']"
api POST "/v1/rdv/$J1.1" '{"rank":0,"size":2,"addr":"127.0.0.1:40000"}'
api GET "/v1/rdv/$J1.1"
want "complete" "$(j 'd["complete"]')" True
want "addrs" "$(j 'd["addrs"]')" "['127.0.0.1:40000', '127.0.0.1:40001']"
api POST "/v1/rdv/$J1.1" '{"rank":2,"size":2,"addr":"127.0.0.1:40002"}'
want "rank >= size" "$CODE" 400
api POST "/v1/rdv/$J1.1" '{"rank":0,"size":3,"addr":"127.0.0.1:40002"}'
want "size mismatch" "$CODE" 409
api POST "/v1/rdv/$J1.1" '{"rank":0,"size":2,"addr":"no-port"}'
want "bad addr" "$CODE" 400
api POST "/v1/rdv/x.1" '{"rank":0,"size":2000,"addr":"h:1"}'
want "size over 1024" "$CODE" 400
end

begin completion_frees_slots_for_next_in_fifo
hb node-a 2 "$(rep "$J1" succeeded '"output_dir":"/srv/out/j1"')"
want "launches J2 only" "$(j '[l["job"] for l in d["launch"]]')" "['$J2']"
want "J2 rdv key" "$(j 'd["launch"][0]["rdv_key"]')" "$J2.1"
api GET "/v1/jobs/$J1"
want state "$(j 'd["state"]')" succeeded
want output_dir "$(j 'd["output_dir"]')" /srv/out/j1
wantgrep reason "$(j 'd["reason"]')" '^succeeded in '
F1=$(j 'd["finished_us"]')
E1=$(j 'len(d["events"])')
api GET "/v1/rdv/$J1.1"
want "rdv cleaned" "$(j 'd["size"]')" 0
want "J3 still queued" "$(state "$J3")" queued
end

begin repeated_report_is_idempotent
hb node-a 2 "$(rep "$J1" succeeded '"output_dir":"/srv/out/other"')"
api GET "/v1/jobs/$J1"
want state "$(j 'd["state"]')" succeeded
want finished_us "$(j 'd["finished_us"]')" "$F1"
want output_dir "$(j 'd["output_dir"]')" /srv/out/j1
want events "$(j 'len(d["events"])')" "$E1"
end

begin kill9_restart_keeps_jobs_and_launches_once
api GET '/v1/jobs?tenant=acme&limit=1000'
BEFORE=$(j '[(x["id"], x["state"], x["reason"]) for x in d["jobs"]]')
crash
start
api GET '/v1/jobs?tenant=acme&limit=1000'
want "jobs intact" "$(j '[(x["id"], x["state"], x["reason"]) for x in d["jobs"]]')" "$BEFORE"
# J2's launch was never acknowledged, so it is offered again, same attempt.
hb node-a 2
want "unacked launch repeated" "$(j '[(l["job"], l["rdv_key"]) for l in d["launch"]]')" "[('$J2', '$J2.1')]"
hb node-a 2 "$(rep "$J2" running)"
want "no launch once reported" "$(j 'len(d["launch"])')" 0
crash
start
hb node-a 2 "$(rep "$J2" running)"
want "no duplicate launch after restart" "$(j 'len(d["launch"])')" 0
api GET "/v1/jobs/$J2"
want "J2 attempt" "$(j 'd["attempt"]')" 1
want "J2 running" "$(j 'd["state"]')" running
want "J3 queued" "$(state "$J3")" queued
end

begin cancel_running_kills_then_settles
api POST "/v1/jobs/$J2/cancel"
want status "$CODE" 200
want state "$(j 'd["state"]')" running
want reason "$(j 'd["reason"]')" "cancelling: asked node node-a to stop the ranks"
hb node-a 2 "$(rep "$J2" running)"
want kill "$(j 'd["kill"]')" "['$J2']"
want "no launch yet" "$(j 'len(d["launch"])')" 0
hb node-a 2 "$(rep "$J2" cancelled)"
want "J3 launched" "$(j '[l["job"] for l in d["launch"]]')" "['$J3']"
want "J2 cancelled" "$(state "$J2")" cancelled
api POST "/v1/jobs/$J2/cancel"
want "cancel again" "$CODE" 200
api POST "/v1/jobs/$J1/cancel"
want "cancel finished" "$CODE" 409
end

begin cancel_queued_is_immediate
submit '{"steps":100,"batch":8,"ranks":2}'
J4=$(j 'd["id"]')
want queued "$(j 'd["state"]')" queued
api POST "/v1/jobs/$J4/cancel"
want state "$(j 'd["state"]')" cancelled
want reason "$(j 'd["reason"]')" "cancelled by request before it started"
end

begin rank_failure_fails_job
hb node-a 2 "$(rep "$J3" failed '"error":"rank 0 exited with status 3"')"
api GET "/v1/jobs/$J3"
want state "$(j 'd["state"]')" failed
want reason "$(j 'd["reason"]')" "failed: rank 0 exited with status 3"
want error "$(j 'd["error"]')" "rank 0 exited with status 3"
end

begin estimates_wait_in_outbox_while_ledgerd_is_down
N=$(sqlite3 "$T/admitd.db" 'SELECT count(*) FROM estimate_outbox')
# J1..J4 were priced; ledgerd was never reachable.
want "outbox rows" "$N" 4
want "job in outbox" "$(sqlite3 "$T/admitd.db" "SELECT count(*) FROM estimate_outbox WHERE body LIKE '%$J1%'")" 1
end

begin silent_node_fails_its_jobs
submit '{"steps":100,"batch":8,"ranks":1}'
J5=$(j 'd["id"]')
hb node-a 2
hb node-a 2 "$(rep "$J5" running)"
want "J5 running" "$(state "$J5")" running
sleep 4.5
api GET "/v1/jobs/$J5"
want state "$(j 'd["state"]')" failed
want reason "$(j 'd["reason"]')" "failed: node node-a stopped responding"
submit '{"steps":100,"batch":8,"ranks":1}'
J6=$(j 'd["id"]')
want "J6 waits for a node" "$(j 'd["reason"]')" "waiting for a node to register (nothing to price against)"
hb node-a 2 "$(rep "$J5" running)"
want "stale job killed" "$(j 'd["kill"]')" "['$J5']"
want "J6 launched" "$(j '[l["job"] for l in d["launch"]]')" "['$J6']"
end

begin sched_stats_count_passes
api GET /v1/sched
want status "$CODE" 200
want "passes timed" "$(j 'd["passes"] > 0 and 0 <= d["p50_ms"] <= d["p99_ms"] <= d["max_ms"]')" True
end

begin tenant_cap_429
api POST /v1/jobs/"$J6"/cancel
# 1000 unfinished jobs for tenant "big" (no node: they stay submitted), then one more.
crash
body=$(job_body '{"steps":1,"batch":1,"ranks":1}' big)
qbody=$(printf '%s' "$body" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')
for _ in $(seq 1000); do
	printf 'next\nunix-socket = "%s"\nurl = "http://admitd/v1/jobs"\nheader = "Content-Type: application/json"\ndata = %s\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$SOCK" "$qbody"
done | tail -n +2 >"$T/curl.cfg"
sqlite3 "$T/admitd.db" "UPDATE nodes SET down = 1"
start
CODES=$(curl -s -m 120 -K "$T/curl.cfg" | sort | uniq -c | tr -s ' ')
want "1000 accepted" "$CODES" " 1000 201"
submit '{"steps":1,"batch":1,"ranks":1}' big
want status "$CODE" 429
wantgrep message "$(j 'd["error"]')" "tenant 'big' has 1000 unfinished jobs \(limit 1000\)"
submit '{"steps":1,"batch":1,"ranks":1}' acme
want "other tenant unaffected" "$CODE" 201
api GET '/v1/jobs?tenant=big&limit=1000'
want "list capped" "$(j 'len(d["jobs"])')" 1000
end

begin job_list_pages_and_filters
# the 1000 jobs of tenant big, 300 at a time through next_before: every job
# once, newest first; a state filter; bad cursors and states refused
seen=
before=
for _ in 1 2 3 4 5; do
	api GET "/v1/jobs?tenant=big&limit=300${before:+&before=$before}"
	seen="$seen $(j '" ".join(x["id"] for x in d["jobs"])')"
	before=$(j 'd["next_before"] or ""')
	[ -n "$before" ] || break
done
want "every job once" "$(tr ' ' '\n' <<<"$seen" | grep -c .) $(tr ' ' '\n' <<<"$seen" | grep . | sort -u | wc -l)" "1000 1000"
api GET '/v1/jobs?tenant=big&limit=5&state=active'
want "active filter" "$CODE $(j 'len(d["jobs"]), set(x["state"] for x in d["jobs"]) <= {"submitted", "priced", "queued", "running", "paused"}')" "200 (5, True)"
api GET '/v1/jobs?tenant=acme&state=succeeded'
want "state filter" "$CODE $(j 'all(x["state"] == "succeeded" for x in d["jobs"])')" "200 True"
api GET '/v1/jobs?tenant=big&state=bogus'
want "bad state" "$CODE" 400
api GET '/v1/jobs?tenant=big&before=x1'
want "bad cursor" "$CODE" 400
end

echo "admitd log: $(grep -c . "$T/admitd.log") lines" >&2
[ "$FAILS" -eq 0 ]

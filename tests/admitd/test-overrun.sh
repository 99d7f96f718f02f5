#!/usr/bin/env bash
# test-overrun — a job that would overrun its budget hold, on a real admitd
# and ledgerd (Unix sockets, SQLite files): the metered spend reaches the
# hold, the tenant cannot afford an extension, so admitd asks the node to
# checkpoint the job (as a preemption) and pauses it with a sentence that
# says why; a credit lets it resume (queued, relaunched from its checkpoint
# with the next rendezvous key, same hold); a paused job can be cancelled
# (its hold released); under --overrun stop it ends failed with its
# checkpoint kept; a job that cannot checkpoint yet is stopped at once.
set -u
cd "$(dirname "$0")/../.."
NAME=overrun
. tests/admitd/harness.sh
start

MODEL='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
submit() { # TENANT
	api POST /v1/jobs "{\"tenant\":\"$1\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/b-1\",\"model\":$MODEL,\"params\":{\"steps\":1000,\"batch\":8,\"ranks\":1}}"
}
hb() { # REPORTS
	api POST /v1/nodes/heartbeat "{\"node\":\"node-a\",\"addr\":\"127.0.0.1\",\"slots\":4,\"flops_per_slot\":2e10,\"jobs\":[${1:-}]}"
}
run() { echo "{\"job\":\"$1\",\"state\":\"running\",\"progress\":{\"step\":$2,\"steps\":1000}}"; }
quiet() { echo "{\"job\":\"$1\",\"state\":\"running\"}"; }
state() { api GET "/v1/jobs/$1"; j 'd["state"]'; }
reason() { api GET "/v1/jobs/$1"; j 'd["reason"]'; }
credit() { # TENANT MICRO SEQ
	lapi POST /v1/credits "{\"source\":\"admin\",\"seq\":$3,\"tenant\":\"$1\",\"amount_micro\":$2,\"note\":\"test\"}"
}
SEQ=0
spend() { # JOB TENANT RANK_SECONDS: metered compute, as noded would send it
	local now
	now=$("$PY" -c 'import time; print(int(time.time() * 1e6))')
	SEQ=$((SEQ + 1))
	lapi POST /v1/ingest "{\"source\":\"node-a\",\"records\":[{\"seq\":$SEQ,\"job\":\"$1\",\"tenant\":\"$2\",\"user\":\"alice\",\"rank\":0,\"kind\":\"compute\",\"quantity\":$3,\"unit\":\"rank_s\",\"start_us\":$((now - 1000000)),\"end_us\":$now}]}"
}
# wait_for DESC CMD WANT: polls (heartbeats in between) for up to 10 s
wait_for() {
	local got
	for _ in $(seq 50); do
		got=$(eval "$2")
		[ "$got" = "$3" ] && break
		sleep 0.2
	done
	want "$1" "$got" "$3"
}

hb
# a job's estimate; each tenant gets it and a quarter more, so after the hold
# an extension (half the estimate) is out of reach; spending SPEND rank-seconds
# (at the default $0.0002) passes 90% of the hold
api POST /v1/estimate "{\"model\":$MODEL,\"params\":{\"steps\":1000,\"batch\":8,\"ranks\":1}}"
EST=$(j 'd["amount_micro"]')
CREDIT=$((EST + EST / 4))
SPEND=$(( (EST * 95 / 100 + 199) / 200 ))

begin overrun_checkpoints_and_pauses_then_resumes_after_a_credit
credit acme "$CREDIT" 1
submit acme
A=$(j 'd["id"]')
want "priced as estimated" "$(j 'd["estimate"]["amount_micro"]')" "$EST"
wait_for "runs" "state $A" running
hb "$(run "$A" 5)"
spend "$A" acme "$SPEND"
want ingest "$LCODE" 200
wait_for "asked to checkpoint" "hb \"\$(run $A 6)\"; j 'd[\"preempt\"]'" "['$A']"
wantgrep "says it is checkpointing" "$(reason "$A")" '^running: over its hold, checkpointing to pause$'
hb "{\"job\":\"$A\",\"state\":\"preempted\",\"progress\":{\"step\":7,\"steps\":1000,\"ckpt_step\":7}}"
want "paused" "$(state "$A")" paused
wantgrep "reason" "$(reason "$A")" "^paused: spent \\\$[0-9.]+ of its \\\$[0-9.]+ hold and the budget cannot extend it \\(tenant acme has \\\$[0-9.]+ available, job $A needs \\\$[0-9.]+ more\\); checkpointed at step 7, resumes when the tenant's budget covers the rest \\(or cancel it\\)$"
lapi GET "/v1/holds/$A"
want "hold kept" "$(lj 'd["state"]')" open
sleep 2.5
want "stays paused without funds" "$(state "$A")" paused
hb
want "no launch while paused" "$(j 'len(d["launch"])')" 0
credit acme $((EST * 2)) 2
wait_for "resumes after the credit" "state $A" running
api GET "/v1/jobs/$A"
wantgrep "resume explained" "$(j '[e["reason"] for e in d["events"] if e["state"] == "queued"][-1]')" '^queued: resumed, the budget covers the rest \(\$[0-9.]+\); waiting for its turn$'
hb
want "relaunched with the next rendezvous key" "$(j '[l["rdv_key"] for l in d["launch"]]')" "['$A.2']"
lapi GET "/v1/holds/$A"
want "the same hold, extended" "$(lj '(d["state"], d["reserved_micro"] > '"$EST"')')" "('open', True)"
end

begin paused_job_can_be_cancelled
hb "$(run "$A" 8)"
spend "$A" acme $((EST * 3 / 200))
wait_for "asked to checkpoint again" "hb \"\$(run $A 9)\"; j 'd[\"preempt\"]'" "['$A']"
hb "{\"job\":\"$A\",\"state\":\"preempted\",\"progress\":{\"step\":9,\"steps\":1000}}"
want "paused again" "$(state "$A")" paused
api POST "/v1/jobs/$A/cancel"
want "cancel answered" "$CODE" 200
want "cancelled" "$(state "$A")" cancelled
wait_for "hold released" "lapi GET /v1/holds/$A; lj 'd[\"state\"]'" released
end

begin cannot_checkpoint_yet_is_stopped_at_once
credit beta "$CREDIT" 3
submit beta
B=$(j 'd["id"]')
wait_for "runs" "state $B" running
hb "$(quiet "$B")"
spend "$B" beta "$SPEND"
wait_for "asked to stop" "hb \"\$(quiet $B)\"; j 'd[\"kill\"]'" "['$B']"
want "never asked to checkpoint" "$(j 'd["preempt"]')" "[]"
hb "{\"job\":\"$B\",\"state\":\"cancelled\"}"
want "failed" "$(state "$B")" failed
wantgrep "says why" "$(reason "$B")" '^stopped: spent \$[0-9.]+ of its \$[0-9.]+ hold and the budget cannot extend it \(.*\); it had no checkpoint yet$'
end

begin overrun_stop_policy_ends_it_checkpointed
crash
start --overrun stop
credit gamma "$CREDIT" 4
submit gamma
G=$(j 'd["id"]')
wait_for "runs" "state $G" running
hb "$(run "$G" 3)"
spend "$G" gamma "$SPEND"
wait_for "asked to checkpoint" "hb \"\$(run $G 4)\"; j 'd[\"preempt\"]'" "['$G']"
hb "{\"job\":\"$G\",\"state\":\"preempted\",\"progress\":{\"step\":4,\"steps\":1000}}"
want "failed" "$(state "$G")" failed
wantgrep "says why" "$(reason "$G")" '^stopped: spent \$[0-9.]+ of its \$[0-9.]+ hold and the budget cannot extend it \(.*\); checkpointed at step 4$'
want "error kept" "$(j 'd["error"] == d["reason"]')" True
wait_for "hold released" "lapi GET /v1/holds/$G; lj 'd[\"state\"]'" released
end

[ "$FAILS" -eq 0 ]

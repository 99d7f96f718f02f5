#!/usr/bin/env bash
# test-hung-ledger — a ledgerd that stops answering (SIGSTOP: the socket
# still accepts, nothing replies) on a real admitd with 20 running jobs.
# Each call to it would wait out its 1-2 s timeout, and admitd checks every
# running job's spend against its hold, so before the peer gate (hclient.h)
# one tick held admitd's event loop for ~40 s. Now the first timed-out call
# closes the gate: admitd keeps answering, new jobs queue with a sentence
# that says the ledger is not answering, and once ledgerd answers again
# (SIGCONT) the gate's probe reopens it and the queued job starts.
set -u
cd "$(dirname "$0")/../.."
NAME=hungledger
. tests/admitd/harness.sh
. tests/admitd/cases.sh
start

MODEL='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
submit() {
	api POST /v1/jobs "{\"tenant\":\"acme\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/b-1\",\"model\":$MODEL,\"params\":{\"steps\":1000,\"batch\":8,\"ranks\":1}}"
}
hb() { api POST /v1/nodes/heartbeat '{"node":"node-a","addr":"127.0.0.1","slots":32,"flops_per_slot":2e10,"jobs":[]}'; }
state() { api GET "/v1/jobs/$1"; j 'd["state"]'; }
# health: admitd's /v1/health within 5 s (a stalled loop misses it: one tick
# stalled ~40 s before the gate; one timeout, 2 s, is the most now)
health() { curl -s -m 5 --unix-socket "$SOCK" -o /dev/null -w '%{http_code}' http://admitd/v1/health; }
resume_ledger() { [ -n "$LPID" ] && kill -CONT "$LPID" 2>/dev/null; }
trap 'resume_ledger; cleanup' EXIT

hb
lapi POST /v1/credits '{"source":"admin","seq":1,"tenant":"acme","amount_micro":1000000000,"note":"test"}'
for _ in $(seq 20); do submit; done
api GET /v1/jobs
for _ in $(seq 50); do
	api GET /v1/jobs
	[ "$(j 'sum(1 for x in d["jobs"] if x["state"] != "queued")')" = 20 ] && break
	sleep 0.1
done

begin hung_ledgerd_does_not_stall_admitd
want "20 jobs placed before the hang" "$(j 'sum(1 for x in d["jobs"] if x["state"] != "queued")')" 20
kill -STOP "$LPID"
late=0
for _ in $(seq 16); do # ~8 s: past the first timeout and several probes
	[ "$(health)" = 200 ] || late=$((late + 1))
	hb
	sleep 0.5
done
want "health answered within 5 s every time" "$late" 0
submit
want "a submission is answered" "$CODE" 201
Q=$(j 'd["id"]')
for _ in $(seq 40); do
	api GET "/v1/jobs/$Q"
	[[ $(j 'd["reason"]') == *"ledgerd is unreachable"* ]] && break
	sleep 0.1
done
wantgrep "it says why it waits" "$(j 'd["reason"]')" 'cannot reserve its cost: ledgerd is unreachable \(timed out\)'
want "it waits" "$(j 'd["state"]')" queued
wantgrep "the gate closed once, with a sentence" "$(grep -c 'did not answer' "$T/admitd.log")" '^1$'
end

begin calls_resume_when_ledgerd_answers_again
kill -CONT "$LPID"
for _ in $(seq 100); do # the probes back off to 8 s at most
	[ "$(state "$Q")" = queued ] || break
	hb
	sleep 0.2
done
want "the queued job starts" "$(state "$Q")" running
wantgrep "admitd says the ledger is back" "$(grep 'answers again' "$T/admitd.log")" 'answers again after [0-9.]+ s \([0-9]+ calls? to it failed at once meanwhile\)'
lapi GET "/v1/holds/$Q"
want "its hold is in the ledger" "$(lj 'd["state"]')" open
end

[ "$FAILS" -eq 0 ]

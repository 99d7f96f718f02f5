#!/usr/bin/env bash
# End-to-end preemption via checkpoint, on the real stack with 2 slots: a long
# low-priority 2-rank job runs; a high-priority 2-rank job arrives and cannot
# start, so admitd asks noded to preempt the low one (SIGUSR1, checkpoint,
# exit 75, reported "preempted"); the low job goes back to the queue with its
# hold, the high one runs and succeeds, then the low one is relaunched with a
# new rendezvous key, resumes from its checkpoint (its steps continue, not
# from 1) and succeeds. One hold per job; the low job's bill equals the sum of
# its ledger entries (both runs); the chain verifies.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh

stack_cases
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
trap '[ $FAILED -ne 0 ] && KEEP_STATE=1; stack_stop' EXIT

for b in bursar-ledgerd bursar-admitd bursar-noded bursar-consoled bursar-train bursarctl; do
	[ -x "$BIN/$b" ] || { echo "FAIL preempt-build: $BIN/$b missing"; exit 1; }
done
SLOTS=2 stack_start || { echo "FAIL preempt-start: the stack did not start"; exit 1; }
ASOCK=$STATE/run/admitd.sock
adm() { curl -s --unix-socket "$ASOCK" "http://l$1" "${@:2}"; }
jstate() { adm "/v1/jobs/$1" | jq -r .state; }

make_sample_bundle "$STATE/sample" 100
out=$("$BIN/bursarctl" submit "$STATE/sample" --name low 2>&1)
low=$(echo "$out" | sed -n 's/^job \(j-[0-9a-z]*\):.*/\1/p')
check preempt-submit-low test -n "$low"
[ -n "$low" ] || { echo "$out"; exit 1; }
stack_wait "adm /v1/jobs/$low | jq -e '.state == \"running\" and (.progress.step // 0) >= 5'" 120
check preempt-low-runs test "$(jstate "$low")" = running

# The high-priority job: the same bundle, fewer steps, priority 10, submitted
# to admitd directly (consoled does not take priorities).
body=$(adm "/v1/jobs/$low" | jq -c '{tenant, user, bundle_id, bundle_dir, model,
	params: (.params | .steps = 20), priority: 10, name: "high"}')
high=$(adm /v1/jobs -X POST -H 'Content-Type: application/json' -d "$body" | jq -r '.job // .id // empty')
check preempt-submit-high test -n "$high"
[ -n "$high" ] || exit 1

stack_wait "adm /v1/jobs/$low | jq -e '[.events[] | select(.state == \"queued\" and
	(.reason | startswith(\"preempted by higher-priority job $high (priority 10); resumes from step \")))] | length == 1'" 60
check preempt-low-requeued test $? -eq 0
adm "/v1/jobs/$low" | jq -r '.events[] | select(.reason | startswith("preempted")) | "# " + .reason'
check preempt-checkpoint-written test -e "$STATE/noded/jobs/$low/ckpt/latest"
check preempt-noded-state grep -q "\"preempted\"\\|job $low preempted" "$STATE/logs/noded.log"

stack_wait "test \"\$(jstate $high)\" = succeeded" 240
check preempt-high-succeeds test "$(jstate "$high")" = succeeded
stack_wait "test \"\$(jstate $low)\" = succeeded" 400
check preempt-low-succeeds test "$(jstate "$low")" = succeeded
[ "$(jstate "$low")" = succeeded ] || { adm "/v1/jobs/$low" | jq -c .; tail -20 "$STATE/logs/noded.log"; exit 1; }
check preempt-low-attempt-2 test "$(adm "/v1/jobs/$low" | jq -r .attempt)" = 2

# rank 0's steps, both runs, in train.log: every step 1..100 exactly once (the
# relaunch continued after the checkpointed step, it did not start over), and
# the relaunch announced a start_step past 0.
steps=$(jq -r 'select(.event == "step") | .step' "$STATE/noded/jobs/$low/train.log" | tr '\n' ' ')
check preempt-step1-once test "$(echo "$steps" | tr ' ' '\n' | grep -cx 1)" = 1
check preempt-steps-continue test "$steps" = "$(seq 1 100 | tr '\n' ' ')"
check preempt-start-step grep -q '"start_step": *[1-9]' "$STATE/noded/jobs/$low/train.log"

# Billed once: one hold each, opened once; bill = sum of entries; chain ok.
stack_wait "test \"\$(sqlite3 $STATE/noded/noded.db 'SELECT count(*) FROM meter_spool')\" = 0" 20
LDB=$STATE/ledgerd/ledgerd.db
for j in "$low" "$high"; do
	check "preempt-one-hold-$([ "$j" = "$low" ] && echo low || echo high)" test \
		"$(sqlite3 "$LDB" "SELECT count(*) FROM hold_events WHERE job = '$j' AND op = 'open'")" = 1
done
bill=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$low/bill")
billed=$(echo "$bill" | jq -r '.metered.amount_micro')
summed=$("$BIN/bursarctl" ledger --job "$low" --format json | jq '[.[].amount_micro] | add')
check preempt-bill-equals-entries test "$billed" = "$summed"
check preempt-bill-nonzero test "${billed:-0}" -gt 0
check preempt-chain-verifies "$BIN/bursarctl" ledger verify
exit $FAILED

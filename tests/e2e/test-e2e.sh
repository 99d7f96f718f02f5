#!/usr/bin/env bash
# End-to-end: the demo path with assertions. Real daemons on real sockets, a
# real 2-rank training job, the real ledger file. Checks that the job
# succeeds, its loss falls, the bill equals the sum of its ledger entries, the
# chain verifies, the outputs download, tenants cannot see each other, and a
# submission's overrides of bursar.json are what trains.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh

stack_cases
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
trap '[ $FAILED -ne 0 ] && KEEP_STATE=1; stack_stop' EXIT

for b in bursar-ledgerd bursar-admitd bursar-noded bursar-consoled bursar-train bursarctl; do
	[ -x "$BIN/$b" ] || { echo "FAIL e2e-build: $BIN/$b missing"; exit 1; }
done
stack_start || { echo "FAIL e2e-start: the stack did not start"; exit 1; }
make_sample_bundle "$STATE/sample" 120

out=$("$BIN/bursarctl" submit "$STATE/sample" --name e2e 2>&1)
job=$(echo "$out" | sed -n 's/^job \(j-[0-9a-z]*\):.*/\1/p')
check e2e-submit test -n "$job"
[ -n "$job" ] || { echo "$out"; exit 1; }

timeout 300 "$BIN/bursarctl" watch "$job" >"$STATE/watch.log" 2>&1
rc=$?
check e2e-job-succeeds test "$rc" -eq 0
[ $rc -eq 0 ] || { tail -5 "$STATE/watch.log"; tail -20 "$STATE/logs/noded.log"; exit 1; }

jobjson=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$job")
first=$(echo "$jobjson" | jq -r '.progress.first_loss')
last=$(echo "$jobjson" | jq -r '.progress.loss')
check e2e-loss-falls awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.8 * a) }'
echo "# loss $first -> $last"
check e2e-estimate-shown test "$(echo "$jobjson" | jq -r '.estimate.amount > 0')" = true

# Every meter record reaches the ledger within a few seconds of the job's end.
stack_wait "test \"\$(sqlite3 $STATE/noded/noded.db 'SELECT count(*) FROM meter_spool')\" = 0" 20
bill=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$job/bill")
billed=$(echo "$bill" | jq -r '.metered.amount_micro')
summed=$("$BIN/bursarctl" ledger --job "$job" --format json | jq '[.[].amount_micro] | add')
check e2e-bill-equals-entries test "$billed" = "$summed"
check e2e-bill-nonzero test "${billed:-0}" -gt 0
check e2e-bill-predicted test "$(echo "$bill" | jq -r '.predicted.amount_micro > 0')" = true
check e2e-chain-verifies "$BIN/bursarctl" ledger verify

curl -sf -H "Authorization: Bearer $TOKEN" -o "$STATE/model.safetensors" \
	"$URL/api/v1/jobs/$job/files/model.safetensors"
check e2e-model-download /usr/bin/python3 - "$STATE/model.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
assert "wte.weight" in h and h["wte.weight"]["shape"] == [256, 128], h.get("wte.weight")
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
assert 8 + n + end == len(b), "size mismatch"
EOF

code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" "$URL/api/v1/jobs")
check e2e-wrong-token-401 test "$code" = 401
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/v1/jobs")
check e2e-missing-token-401 test "$code" = 401
other=$(stack_adduser other bob)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $other" "$URL/api/v1/jobs/$job")
check e2e-other-tenant-job-404 test "$code" = 404
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $other" "$URL/api/v1/jobs/$job/bill")
check e2e-other-tenant-bill-404 test "$code" = 404
n=$(curl -sf -H "Authorization: Bearer $other" "$URL/api/v1/jobs" | jq '.jobs | length')
check e2e-other-tenant-list-empty test "$n" = 0
n=$(curl -sf -H "Authorization: Bearer $other" "$URL/api/v1/ledger" | jq '.entries | length')
check e2e-other-tenant-ledger-empty test "$n" = 0

# what admission priced is what trains: a submission's overrides of
# bursar.json (here steps 120 -> 9) reach the trainer (noded passes the job's
# params to bursar-train), so the job runs 9 steps and is billed for them
out=$("$BIN/bursarctl" submit "$STATE/sample" --name e2e-set --set steps=9 2>&1)
job2=$(echo "$out" | sed -n 's/^job \(j-[0-9a-z]*\):.*/\1/p')
timeout 300 "$BIN/bursarctl" watch "$job2" >"$STATE/watch2.log" 2>&1
j2=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$job2")
check e2e-overrides-reach-the-trainer test \
	"$(echo "$j2" | jq -r '[.state, .params.steps, .progress.step, .progress.steps] | join(" ")')" = \
	"succeeded 9 9 9"

# the job list by state, through consoled and bursarctl
out=$("$BIN/bursarctl" jobs --state succeeded 2>&1)
check e2e-jobs-by-state test "$(grep -cE "^($job|$job2) +succeeded" <<<"$out")" = 2
out=$("$BIN/bursarctl" jobs --state running 2>&1)
check e2e-jobs-filtered test "$(grep -c "^j-" <<<"$out")" = 0
out=$("$BIN/bursarctl" jobs --state bogus 2>&1)
check e2e-jobs-bad-state grep -q "'state' must be active" <<<"$out"
exit $FAILED

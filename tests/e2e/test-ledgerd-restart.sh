#!/usr/bin/env bash
# Fault: kill -9 ledgerd while a job runs, keep it down for a while, start it
# again. The job must finish, and every meter record noded spooled must be in
# the ledger exactly once: the ledger holds seq 1..N of the node's source
# with no gap and no duplicate, N being the last seq noded ever assigned.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh

FAILED=0
check() { local name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name: $*"; FAILED=1; fi; }
trap '[ $FAILED -ne 0 ] && KEEP_STATE=1; stack_stop' EXIT

stack_start || { echo "FAIL ledgerd-restart-start: the stack did not start"; exit 1; }
make_sample_bundle "$STATE/sample" 200
out=$("$BIN/bursarctl" submit "$STATE/sample" --name fault 2>&1)
job=$(echo "$out" | sed -n 's/^job \(j-[0-9a-z]*\):.*/\1/p')
[ -n "$job" ] || { echo "FAIL ledgerd-restart-submit: $out"; exit 1; }

# Wait until the job is training and some records have reached the ledger.
stack_wait "curl -sf -H 'Authorization: Bearer $TOKEN' $URL/api/v1/jobs/$job | jq -e '.progress.step >= 5'" 120
before=$(sqlite3 "$STATE/ledgerd/ledgerd.db" "SELECT count(*) FROM entries")
stack_kill ledgerd KILL
sleep 4
spooled=$(sqlite3 "$STATE/noded/noded.db" "SELECT count(*) FROM meter_spool")
check ledgerd-restart-spool-grows test "$spooled" -gt 0
stack_start_daemon ledgerd
check ledgerd-restart-job-finishes timeout 300 "$BIN/bursarctl" watch "$job"

stack_wait "test \"\$(sqlite3 $STATE/noded/noded.db 'SELECT count(*) FROM meter_spool')\" = 0" 30
last=$(sqlite3 "$STATE/noded/noded.db" "SELECT seq FROM sqlite_sequence WHERE name = 'meter_spool'")
read -r n distinct lo hi < <(sqlite3 -separator ' ' "$STATE/ledgerd/ledgerd.db" \
	"SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM entries WHERE source = 'node-local'")
echo "# entries before kill: $before; spooled while down: $spooled; last seq $last; ledger n=$n distinct=$distinct [$lo, $hi]"
check ledgerd-restart-none-lost test "$n" = "$last" -a "$lo" = 1 -a "$hi" = "$last"
check ledgerd-restart-none-twice test "$n" = "$distinct"
check ledgerd-restart-chain-verifies "$BIN/bursarctl" ledger verify
exit $FAILED

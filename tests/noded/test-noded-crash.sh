#!/usr/bin/env bash
# test-noded-crash — kill -9 the node agent mid-job, keep it down ~2 s, start
# it again. The restarted agent meters each orphaned rank from its last
# persisted sample up to the restart, then stops the ranks and fails the job:
#   - every rank's metered rank-seconds cover launch → restart (within 1 s),
#     well past the last sample taken before the crash, and tile it with no
#     gap or overlap;
#   - no (source, seq) twice in the ledger, and `bursarctl ledger verify` ok;
#   - no rank process left, the job failed with the agent-restart message.
# (The gap arithmetic and the alive/gone/idempotent cases are unit-tested
# in services/noded/test-recover.c.)
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh

FAILED=0
check() { local name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name: $*"; FAILED=1; fi; }
trap '[ $FAILED -ne 0 ] && KEEP_STATE=1 && echo "# state kept in $STATE"; stack_stop' EXIT
now_us() { date +%s%6N; }

for b in bursar-noded bursar-admitd bursar-ledgerd bursar-consoled bursar-train bursarctl; do
	[ -x "$BIN/$b" ] || { echo "SKIP noded-crash: $BIN/$b is not built"; exit 0; }
done

stack_start || { echo "FAIL noded-crash-start: the stack did not start"; exit 1; }
make_sample_bundle "$STATE/sample" 5000
out=$("$BIN/bursarctl" submit "$STATE/sample" --name crash 2>&1)
job=$(echo "$out" | sed -n 's/^job \(j-[0-9a-z]*\):.*/\1/p')
[ -n "$job" ] || { FAILED=1; echo "FAIL noded-crash-submit: $out"; exit 1; }

LED_DB=$STATE/ledgerd/ledgerd.db ND_DB=$STATE/noded/noded.db
led() { sqlite3 "$LED_DB" "$1"; }

# Training, with a few samples metered: then the crash.
stack_wait "curl -sf -H 'Authorization: Bearer $TOKEN' $URL/api/v1/jobs/$job | jq -e '.progress.step >= 3'" 120 ||
	{ FAILED=1; echo "FAIL noded-crash-running: job $job never trained"; exit 1; }
sleep 1.5
stack_kill noded KILL
t_kill=$(now_us)
# The ranks may outlive the agent or die of SIGPIPE on their next stdout
# line (their pipe's reader is gone): both are metered up to the restart.
ranks_alive=$(pgrep -f -- "$STATE/noded/jobs/$job/" | wc -l)
last_sample=$(sqlite3 "$ND_DB" "SELECT max(mark_mono_us) FROM ranks WHERE job = '$job'")
sleep 2
t_restart=$(now_us)
stack_start_daemon noded || { FAILED=1; echo "FAIL noded-crash-restart: noded did not start again"; exit 1; }
t_ready=$(now_us)

check noded-crash-no-rank-left stack_wait "test -z \"\$(pgrep -f -- '$STATE/noded/jobs/$job/')\"" 10
check noded-crash-job-failed stack_wait "curl -sf -H 'Authorization: Bearer $TOKEN' $URL/api/v1/jobs/$job | jq -e '.state == \"failed\"'" 20
err=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$job" | jq -r .error)
check noded-crash-error-says-why grep -q "node agent restarted" <<<"$err"
gap_lines=$(grep -cE "job $job rank [01] \(pid [0-9]+\) (outlived the previous agent|was gone when the agent restarted): metering" "$STATE/logs/noded.log")
check noded-crash-gap-logged test "$gap_lines" = 2
check noded-crash-spool-delivered stack_wait "test \"\$(sqlite3 $ND_DB 'SELECT count(*) FROM meter_spool')\" = 0" 30

# Per rank: first start, last end, sum of quantities (µs).
echo "# kill at $t_kill, restart at $t_restart, ready at $t_ready (wall µs); $ranks_alive rank processes right after the kill; last mark before the crash: mono $last_sample"
while IFS='|' read -r rank first last sum n; do
	echo "# rank $rank: metered $first .. $last, $sum µs in $n records"
	check "noded-crash-rank$rank-covers-restart" test "$last" -ge $((t_restart - 1000000)) -a "$last" -le $((t_ready + 1000000))
	check "noded-crash-rank$rank-past-crash" test "$last" -ge $((t_kill + 1500000))
	check "noded-crash-rank$rank-tiles" test $((last - first - sum)) -le 20 -a $((last - first - sum)) -ge -20
done < <(led "SELECT rank, min(start_us), max(end_us), CAST(round(sum(quantity) * 1e6) AS INTEGER), count(*)
	FROM entries WHERE job = '$job' GROUP BY rank ORDER BY rank")
check noded-crash-two-ranks test "$(led "SELECT count(DISTINCT rank) FROM entries WHERE job = '$job'")" = 2
gaps=$(led "SELECT count(*) FROM entries a WHERE job = '$job' AND start_us >
	(SELECT min(start_us) FROM entries WHERE job = '$job' AND rank = a.rank) AND NOT EXISTS
	(SELECT 1 FROM entries b WHERE b.job = a.job AND b.rank = a.rank AND b.end_us = a.start_us)")
check noded-crash-no-gap test "$gaps" = 0
read -r cnt distinct < <(led "SELECT count(*), count(DISTINCT seq) FROM entries WHERE source = 'node-local'" | tr '|' ' ')
last_seq=$(sqlite3 "$ND_DB" "SELECT seq FROM sqlite_sequence WHERE name = 'meter_spool'")
check noded-crash-no-seq-twice test "$cnt" = "$distinct" -a "$cnt" = "$last_seq"
check noded-crash-ledger-verifies "$BIN/bursarctl" ledger verify
exit $FAILED

#!/usr/bin/env bash
# test-noded — bursar-noded with the real bursar-admitd, bursar-ledgerd and
# bursar-train on Unix sockets in a fresh state directory:
#   1. a 2-rank job finishes; its meter records reach the ledger and each
#      rank's quantities sum to its wall time, tiling it without gaps;
#   2. kill -9 ledgerd while a job runs, restart it: the job still finishes
#      and every spooled record (seq 1..N) is in the ledger exactly once;
#   3. a rank that crashes fails the job with an error naming the rank, and
#      the job's other rank is stopped;
#   4. SIGTERM to noded stops a running job's ranks, flushes, and a restart
#      reports the job failed without launching it again;
#   5. with ledgerd down and a tiny spool bound, the spool fills: the next
#      launch is refused with "spool full", no record is dropped, and all of
#      them (the longer intervals included) reach ledgerd once it is back.
# Prints PASS/FAIL/SKIP per case; kills everything it started on exit.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/bin
PY=/usr/bin/python3

for b in bursar-noded bursar-admitd bursar-ledgerd bursar-train; do
	if [ ! -x "$BIN/$b" ]; then
		for c in two_rank_job_metered ledgerd_kill9_exactly_once rank_crash_fails_job \
			sigterm_stops_ranks_no_relaunch spool_full_refuses_never_drops; do
			echo "SKIP $c: $BIN/$b is not built"
		done
		exit 0
	fi
done

T=$(mktemp -d /tmp/test-noded-XXXXXX)
NODE=node-test-$$
LED_SOCK=$T/ledger/run/ledgerd.sock
ADM_SOCK=$T/admitd/run/admitd.sock
ND_SOCK=$T/noded.sock
LED_DB=$T/ledger/ledgerd.db
ND_DB=$T/node/noded.db
led_pid= adm_pid= nd_pid=

. tests/noded/lib.sh

start_ledgerd() {
	"$BIN/bursar-ledgerd" --state "$T/ledger" 2>>"$T/ledgerd.log" &
	led_pid=$!
	wait_sock "$LED_SOCK" 10
}

start_noded() {
	rm -f "$ND_SOCK"
	"$BIN/bursar-noded" --state "$T/node" --admitd "unix:$ADM_SOCK" \
		--ledgerd "unix:$LED_SOCK" --trainer "$BIN/bursar-train" --slots 2 \
		--node-id "$NODE" --listen "unix:$ND_SOCK" --cpu-only "$@" 2>>"$T/noded.log" &
	nd_pid=$!
	wait_sock "$ND_SOCK" 90 # the first start probes the trainer
}

# Makes a bundle directory: steps.
make_bundle() {
	mkdir -p "$1/data"
	echo '{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 256, "n_positions": 64}' >"$1/config.json"
	echo "{\"steps\": $2, \"batch\": 2, \"seq_len\": 32, \"ranks\": 2}" >"$1/bursar.json"
	corpus "$1/data/a.txt"
}

sql_led() { sqlite3 "$LED_DB" "$1"; }

# check_rank_sums JOB NRANKS: every rank's quantities sum to its metered wall
# time and its records tile that time with no gap or overlap.
check_rank_sums() {
	local bad n
	n=$(sql_led "SELECT count(DISTINCT rank) FROM entries WHERE job = '$1'")
	[ "$n" = "$2" ] || { echo "ledger has $n ranks of job $1, want $2"; return 1; }
	bad=$(sql_led "SELECT rank || ': sum ' || sum(quantity) || ' s, wall ' ||
		((max(end_us) - min(start_us)) / 1e6) || ' s' FROM entries WHERE job = '$1'
		GROUP BY rank HAVING abs(sum(quantity) - (max(end_us) - min(start_us)) / 1e6) > 1e-5")
	[ -z "$bad" ] || { echo "quantities do not sum to wall time: rank $bad"; return 1; }
	bad=$(sql_led "SELECT count(*) FROM entries a WHERE job = '$1' AND start_us >
		(SELECT min(start_us) FROM entries WHERE job = '$1' AND rank = a.rank) AND NOT EXISTS
		(SELECT 1 FROM entries b WHERE b.job = a.job AND b.rank = a.rank AND b.end_us = a.start_us)")
	[ "$bad" = 0 ] || { echo "$bad records of job $1 do not start where another ends"; return 1; }
	bad=$(sql_led "SELECT count(*) FROM entries WHERE job = '$1' AND (unit != 'rank_s' OR
		kind NOT IN ('compute', 'comm_wait', 'idle') OR quantity <= 0 OR tenant != 'acme'
		OR user != 'alice' OR source != '$NODE')")
	[ "$bad" = 0 ] || { echo "$bad records of job $1 have a wrong field"; return 1; }
	return 0
}

make_bundle "$T/short" 300
make_bundle "$T/long" 15000 # about 10 s on an idle machine: long enough to act mid-job

start_ledgerd || { echo "FAIL setup: ledgerd did not start"; exit 1; }
"$BIN/bursar-admitd" --state "$T/admitd" --ledgerd "unix:$LED_SOCK" 2>>"$T/admitd.log" &
adm_pid=$!
wait_sock "$ADM_SOCK" 10 || { echo "FAIL setup: admitd did not start"; exit 1; }
start_noded || { echo "FAIL setup: noded did not start"; tail -5 "$T/noded.log"; exit 1; }

# 1. a 2-rank job finishes and is metered exactly
case1() {
	local id out wall
	id=$(submit "$T/short") || { fail two_rank_job_metered "submit failed"; return; }
	wait_state "$id" succeeded 60 ||
		{ fail two_rank_job_metered "job $id is $(job_field "$id" state): $(job_field "$id" error)"; return; }
	wait_spool_empty 10 || { fail two_rank_job_metered "spool still holds $(spool_pending) records"; return; }
	out=$(check_rank_sums "$id" 2) || { fail two_rank_job_metered "$out"; return; }
	out=$(job_field "$id" output_dir)
	[ "$out" = "$T/node/jobs/$id/out" ] ||
		{ fail two_rank_job_metered "output_dir '$out', want $T/node/jobs/$id/out"; return; }
	grep -q '"event": *"done"' "$T/node/jobs/$id/train.log" ||
		{ fail two_rank_job_metered "train.log has no done line"; return; }
	wall=$(job_get "$id" | json "j['progress']['first_loss'] > j['progress']['loss'] and j['progress']['step'] == 300")
	[ "$wall" = True ] || { fail two_rank_job_metered "progress is wrong: $(job_get "$id" | json "j['progress']")"; return; }
	pass two_rank_job_metered
}

# 2. ledgerd dies (kill -9) mid-job and comes back: nothing lost, nothing twice
case2() {
	local id n i pending out last
	id=$(submit "$T/long") || { fail ledgerd_kill9_exactly_once "submit failed"; return; }
	wait_state "$id" running 30 || { fail ledgerd_kill9_exactly_once "job never ran"; return; }
	for ((i = 0; i < 100; i++)); do
		n=$(sql_led "SELECT count(*) FROM entries WHERE job = '$id'")
		[ "$n" -gt 0 ] && break
		sleep 0.1
	done
	kill -9 "$led_pid"; wait "$led_pid" 2>/dev/null
	sleep 2.5
	pending=$(spool_pending)
	[ "${pending:-0}" -gt 0 ] || { fail ledgerd_kill9_exactly_once "nothing spooled while ledgerd was down"; return; }
	start_ledgerd || { fail ledgerd_kill9_exactly_once "ledgerd did not restart"; return; }
	wait_state "$id" succeeded 60 ||
		{ fail ledgerd_kill9_exactly_once "job $id is $(job_field "$id" state): $(job_field "$id" error)"; return; }
	wait_spool_empty 15 || { fail ledgerd_kill9_exactly_once "spool still holds $(spool_pending) records"; return; }
	last=$(sqlite3 "$ND_DB" "SELECT seq FROM sqlite_sequence WHERE name = 'meter_spool'")
	out=$(sql_led "SELECT count(*) || ' ' || count(DISTINCT seq) || ' ' || min(seq) || ' ' || max(seq)
		FROM entries WHERE source = '$NODE'")
	[ "$out" = "$last $last 1 $last" ] ||
		{ fail ledgerd_kill9_exactly_once "ledger has 'count distinct min max' = '$out', want '$last $last 1 $last'"; return; }
	n=$(sqlite3 "$ND_DB" "SELECT count(*) FROM meter_spool_dead")
	[ "$n" = 0 ] || { fail ledgerd_kill9_exactly_once "$n records were rejected by ledgerd"; return; }
	out=$(check_rank_sums "$id" 2) || { fail ledgerd_kill9_exactly_once "$out"; return; }
	grep -q "cannot send meter records to ledgerd" "$T/noded.log" &&
		[ "$(grep -c "cannot send meter records to ledgerd" "$T/noded.log")" = 1 ] ||
		{ fail ledgerd_kill9_exactly_once "ledgerd being down was not logged exactly once"; return; }
	pass ledgerd_kill9_exactly_once
}

# 3. a rank crashes: the job fails naming it, the other rank is stopped
case3() {
	local id pid i err out
	id=$(submit "$T/long") || { fail rank_crash_fails_job "submit failed"; return; }
	wait_state "$id" running 30 || { fail rank_crash_fails_job "job never ran"; return; }
	for ((i = 0; i < 100; i++)); do
		pid=$(rank_pids "$id" 1)
		[ -n "$pid" ] && grep -q '"step"' "$T/node/jobs/$id/train.log" 2>/dev/null && break
		sleep 0.1
	done
	[ -n "$pid" ] || { fail rank_crash_fails_job "rank 1 of $id not found"; return; }
	kill -SEGV "$pid"
	wait_state "$id" failed 30 ||
		{ fail rank_crash_fails_job "job $id is $(job_field "$id" state), want failed"; return; }
	err=$(job_field "$id" error)
	case "$err" in
	"rank 1 was killed by signal 11"*) ;;
	*) fail rank_crash_fails_job "error '$err' does not name rank 1's crash"; return ;;
	esac
	[ -z "$(rank_pids "$id")" ] || { fail rank_crash_fails_job "ranks of $id still run"; return; }
	wait_spool_empty 10 || { fail rank_crash_fails_job "spool still holds $(spool_pending) records"; return; }
	out=$(check_rank_sums "$id" 2) || { fail rank_crash_fails_job "$out"; return; }
	pass rank_crash_fails_job
}

# 4. SIGTERM to noded mid-job: ranks stopped, records flushed, no relaunch
case4() {
	local id i out
	id=$(submit "$T/long") || { fail sigterm_stops_ranks_no_relaunch "submit failed"; return; }
	wait_state "$id" running 30 || { fail sigterm_stops_ranks_no_relaunch "job never ran"; return; }
	for ((i = 0; i < 100; i++)); do
		[ "$(rank_pids "$id" | wc -l)" = 2 ] && break
		sleep 0.1
	done
	[ "$(rank_pids "$id" | wc -l)" = 2 ] || { fail sigterm_stops_ranks_no_relaunch "the 2 ranks of $id never ran"; return; }
	kill "$nd_pid"
	for ((i = 0; i < 100; i++)); do kill -0 "$nd_pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$nd_pid" 2>/dev/null; then fail sigterm_stops_ranks_no_relaunch "noded did not exit in 10 s"; return; fi
	wait "$nd_pid"
	[ -z "$(rank_pids "$id")" ] || { fail sigterm_stops_ranks_no_relaunch "ranks of $id outlived noded"; return; }
	n=$(sqlite3 "$ND_DB" "SELECT count(*) FROM meter_spool")
	[ "$n" = 0 ] || { fail sigterm_stops_ranks_no_relaunch "$n records left unflushed at exit"; return; }
	out=$(check_rank_sums "$id" 2) || { fail sigterm_stops_ranks_no_relaunch "$out"; return; }
	start_noded || { fail sigterm_stops_ranks_no_relaunch "noded did not restart"; return; }
	wait_state "$id" failed 15 ||
		{ fail sigterm_stops_ranks_no_relaunch "job $id is $(job_field "$id" state) after the restart, want failed"; return; }
	sleep 1
	[ -z "$(rank_pids "$id")" ] || { fail sigterm_stops_ranks_no_relaunch "job $id was launched again"; return; }
	pass sigterm_stops_ranks_no_relaunch
}

# 5. spool full: launches refused, records kept, all delivered later
case5() {
	local a b i out last
	# The node loses its way to the ledger; admitd still reaches it, so jobs
	# are admitted with their budget holds (admitd starts nothing unheld).
	kill "$nd_pid"; wait "$nd_pid"
	start_noded --spool-max 4 --ledgerd "unix:$T/unreachable.sock" ||
		{ fail spool_full_refuses_never_drops "noded did not restart"; return; }
	a=$(submit "$T/short") || { fail spool_full_refuses_never_drops "submit failed"; return; }
	wait_state "$a" succeeded 60 ||
		{ fail spool_full_refuses_never_drops "job $a is $(job_field "$a" state): $(job_field "$a" error)"; return; }
	for ((i = 0; i < 50; i++)); do grep -q "meter spool is full" "$T/noded.log" && break; sleep 0.1; done
	b=$(submit "$T/short") || { fail spool_full_refuses_never_drops "submit failed"; return; }
	wait_state "$b" failed 30 ||
		{ fail spool_full_refuses_never_drops "job $b is $(job_field "$b" state), want failed"; return; }
	case "$(job_field "$b" error)" in
	"spool full"*) ;;
	*) fail spool_full_refuses_never_drops "error '$(job_field "$b" error)' is not 'spool full'"; return ;;
	esac
	[ "$(spool_pending)" -le 4 ] || { fail spool_full_refuses_never_drops "spool holds $(spool_pending) > 4"; return; }
	kill "$nd_pid"; wait "$nd_pid"
	start_noded --spool-max 4 || { fail spool_full_refuses_never_drops "noded did not restart"; return; }
	wait_spool_empty 15 || { fail spool_full_refuses_never_drops "spool still holds $(spool_pending) records"; return; }
	sleep 1.2 # a final interval waiting for room goes in on the next meter tick
	wait_spool_empty 15 || { fail spool_full_refuses_never_drops "spool still holds $(spool_pending) records"; return; }
	out=$(check_rank_sums "$a" 2) || { fail spool_full_refuses_never_drops "$out"; return; }
	last=$(sqlite3 "$ND_DB" "SELECT seq FROM sqlite_sequence WHERE name = 'meter_spool'")
	out=$(sql_led "SELECT count(*) || ' ' || max(seq) FROM entries WHERE source = '$NODE'")
	[ "$out" = "$last $last" ] || { fail spool_full_refuses_never_drops "ledger 'count max' '$out', want '$last $last'"; return; }
	pass spool_full_refuses_never_drops
}

case1
case2
case3
case4
case5
if [ "$fails" -gt 0 ]; then
	echo "--- noded.log"; tail -30 "$T/noded.log"
	exit 1
fi
exit 0

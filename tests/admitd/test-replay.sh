#!/usr/bin/env bash
# test-replay — bursar-replay drives admitd's queue policy (sched.c) over a
# generated 500-job trace on a 16-slot cluster, for FIFO, backfill and
# bursar, with exact and with noisy runtime estimates, and checks the
# invariants after every pass (--check): never more ranks in use than the
# cluster has, a backfilled job never moves the head's reserved start later,
# every job runs to its end. Also: bad arguments are refused with a message.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/bin/bursar-replay
if [ ! -x "$BIN" ]; then
	echo "FAIL replay_built: $BIN is missing (run make all)"
	exit 1
fi
T=$(mktemp -d /tmp/bursar-replay-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
FAILS=0
check() { # NAME COND-MESSAGE
	if [ -z "$2" ]; then echo "PASS $1"; else echo "FAIL $1: $2"; FAILS=$((FAILS + 1)); fi
}

/usr/bin/python3 - "$T/trace.csv" <<'EOF'
import random, sys
random.seed(7)
t = 1_500_000_000
with open(sys.argv[1], "w") as f:
    f.write("timestamp,duration,num_gpus,gpu_time,cluster\n")
    for i in range(500):
        t += random.randint(0, 120)
        d = random.choice([30, 60, 600, 3600, 7200]) * random.random() + 1
        g = random.choice([1, 1, 1, 1, 2, 4, 8, 16])
        f.write(f"{t},{d:.1f},{g},{d * g:.1f},c{random.randint(0, 3)}\n")
EOF

for sigma in 0 0.5; do
	out=$("$BIN" "$T/trace.csv" --nodes 4 --gpus-per-node 4 --sigma "$sigma" --seed 3 --check 2>&1)
	rc=$?
	err=
	[ $rc -eq 0 ] || err="exit $rc: $(echo "$out" | grep 'check failed' | head -1)"
	for p in fifo backfill bursar; do
		[ -z "$err" ] && ! grep -q "^check policy=$p ok$" <<<"$out" && err="no 'check policy=$p ok'"
		[ -z "$err" ] && ! grep -qE "^policy=$p jobs=500 avg_jct_s=[0-9]+ p99_jct_s=[0-9]+ .*max_wait_s=[0-9]+ util=0\.[0-9]+" <<<"$out" && err="no summary line for $p"
	done
	[ -z "$err" ] && ! grep -q "CC BY 4.0" <<<"$out" && err="the trace attribution is missing"
	check "replay_invariants_sigma_$sigma" "$err"
done

out=$("$BIN" "$T/trace.csv" --nodes 1 --gpus-per-node 8 --policy backfill 2>&1)
err=
grep -q "(.* wider than the cluster left out)" <<<"$out" || err="no count of jobs too wide: $out"
check replay_counts_jobs_wider_than_cluster "$err"

err=
"$BIN" "$T/trace.csv" --policy lottery >"$T/o" 2>&1 && err="unknown policy accepted"
[ -z "$err" ] && ! grep -q "unknown policy 'lottery'" "$T/o" && err="message: $(cat "$T/o")"
"$BIN" "$T/trace.csv" --nodes 0 >"$T/o" 2>&1 && err="--nodes 0 accepted"
printf 'timestamp,duration,num_gpus\nyesterday,1,1\n' >"$T/bad.csv"
"$BIN" "$T/bad.csv" >"$T/o" 2>&1 && err="bad row accepted"
[ -z "$err" ] && ! grep -q "bad.csv:2: expected" "$T/o" && err="bad row message: $(cat "$T/o")"
check replay_refuses_bad_input "$err"
[ "$FAILS" -eq 0 ]

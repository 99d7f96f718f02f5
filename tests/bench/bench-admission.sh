#!/usr/bin/env bash
# bench-admission — replays the whole Philly trace (../shared/data/philly-jobs.csv:
# Microsoft Philly cluster trace, msr-fiddle/philly-traces, CC BY 4.0, as
# preprocessed for Pollux OSDI'21 by petuum/adaptdl) through admitd's queue
# policy with bursar-replay on 64 nodes x 8 GPUs, runtime estimates = duration
# x lognormal(sigma 0.5, seed 1), for FIFO, backfill and bursar; prints
# bursar's avg JCT vs backfill (target >= 30% lower) and its longest wait vs
# FIFO's (stated bound: at most the starvation threshold, 36 h, longer).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
TRACE=../shared/data/philly-jobs.csv
[ -f "$TRACE" ] || { echo "SKIP bench-admission: $TRACE is missing"; exit 0; }
out=$( { time -p "$BUILD/bin/bursar-replay" "$TRACE" --nodes 64 --gpus-per-node 8 --sigma 0.5 --seed 1; } 2>&1) || {
	echo "$out"; exit 1; }
echo "$out"
/usr/bin/python3 - "$out" <<'EOF'
import re, sys
s = {}
for m in re.finditer(r"^policy=(\S+) (.*)$", sys.argv[1], re.M):
    s[m.group(1)] = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", m.group(2))}
f, b, u = s["fifo"], s["backfill"], s["bursar"]
print(f"bursar avg JCT vs backfill: {u['avg_jct_s'] / b['avg_jct_s']:.3f}x "
      f"({100 * (1 - u['avg_jct_s'] / b['avg_jct_s']):.1f}% lower; target >= 30%)")
print(f"bursar avg JCT vs fifo:     {u['avg_jct_s'] / f['avg_jct_s']:.3f}x")
print(f"bursar max wait vs fifo:    {u['max_wait_s'] / f['max_wait_s']:.3f}x "
      f"(+{(u['max_wait_s'] - f['max_wait_s']) / 3600:.1f} h; bound +36 h)")
EOF

# ---- submissions per second through the API vs Slurm's sbatch, and the p99
# admission decision with 10,000 jobs queued ----
B=$PWD/$BUILD/bin
W=$(mktemp -d /tmp/bursar-bench-admission.XXXXXX)
APID=
SPIDS=()
bench_cleanup() {
	[ -n "$APID" ] && { kill -9 "$APID" 2>/dev/null; wait "$APID" 2>/dev/null; }
	for p in "${SPIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$W"
}
trap bench_cleanup EXIT
N=${BENCH_SUBMITS:-1000}
start_admitd() {
	"$B/bursar-admitd" --state "$W/a" --listen "unix:$W/a.sock" --node-timeout 36000 >>"$W/admitd.log" 2>&1 &
	APID=$!
	for _ in $(seq 100); do curl -s --unix-socket "$W/a.sock" http://a/v1/health >/dev/null 2>&1 && break; sleep 0.05; done
	curl -s --unix-socket "$W/a.sock" -H 'Content-Type: application/json' --data-binary \
		'{"node":"n1","addr":"127.0.0.1","slots":1,"flops_per_slot":2e10}' http://a/v1/nodes/heartbeat >/dev/null
}
mkdir -p "$W/a"
# CPU ticks (user + system) of processes, and of this shell's finished
# children: what a shared, busy machine still measures fairly, beside the
# wall-clock rates.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
child_ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }
start_admitd
a0=$(ticks "$APID"); k0=$(child_ticks)
OURS=$(/usr/bin/python3 tests/bench/admission-load.py "$W/a.sock" submit "$N") || { echo "admitd submissions failed"; exit 1; }
OURS_CPU=$(( $(ticks "$APID") - a0 + $(child_ticks) - k0 ))
echo "admitd: $N submissions over its API (one keep-alive connection): $OURS"

# Slurm 22.05 on localhost: a throwaway slurmctld + slurmd + munged in $W.
slurm_start() {
	local host conf=$W/slurm/slurm.conf
	host=$(hostname -s)
	mkdir -p "$W/slurm/state" "$W/slurm/spool" "$W/munge"
	command -v slurmctld >/dev/null && command -v munged >/dev/null || { echo "slurm-wlm or munge is not installed (make bench-deps)"; return 1; }
	[ -r /etc/munge/munge.key ] || { echo "/etc/munge/munge.key is missing"; return 1; }
	mkdir -p "$W/slurm"
	munged --socket="$W/munge/munge.sock" --pid-file="$W/munge/munged.pid" \
		--key-file=/etc/munge/munge.key --seed-file="$W/munge/seed" -f --force \
		--log-file="$W/munge/munged.log" 2>>"$W/munge/err" || { echo "munged did not start: $(tail -1 "$W/munge/err")"; return 1; }
	SPIDS+=("$(cat "$W/munge/munged.pid")")
	cat >"$conf" <<-CONF
	ClusterName=bench
	SlurmctldHost=$host
	SlurmctldPort=26817
	SlurmdPort=26818
	AuthType=auth/munge
	AuthInfo=socket=$W/munge/munge.sock
	CredType=cred/munge
	StateSaveLocation=$W/slurm/state
	SlurmdSpoolDir=$W/slurm/spool
	SlurmctldPidFile=$W/slurm/slurmctld.pid
	SlurmdPidFile=$W/slurm/slurmd.pid
	SlurmUser=root
	SlurmdUser=root
	ProctrackType=proctrack/linuxproc
	TaskPlugin=task/none
	SchedulerType=sched/backfill
	SelectType=select/cons_tres
	SelectTypeParameters=CR_Core
	MaxJobCount=100000
	ReturnToService=2
	NodeName=$host CPUs=$(nproc) State=UNKNOWN
	PartitionName=bench Nodes=$host Default=YES MaxTime=INFINITE State=UP
	CONF
	export SLURM_CONF=$conf
	slurmctld -D -f "$conf" >>"$W/slurm/slurmctld.log" 2>&1 & SPIDS+=($!)
	slurmd -D -f "$conf" >>"$W/slurm/slurmd.log" 2>&1 & SPIDS+=($!)
	for _ in $(seq 100); do
		sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc' && return 0
		sleep 0.1
	done
	echo "slurmctld/slurmd did not come up: $(tail -2 "$W/slurm/slurmctld.log" | tr '\n' ' ')"
	return 1
}
if slurm_start >"$W/slurm-why" 2>&1; then
	SN=${BENCH_SBATCH:-300}
	s0=$(ticks "${SPIDS[@]}"); k0=$(child_ticks)
	t0=$(date +%s.%N)
	ok=0
	for ((i = 0; i < SN; i++)); do sbatch -Q --output=/dev/null --wrap true >/dev/null 2>>"$W/sbatch.err" && ok=$((ok + 1)); done
	t1=$(date +%s.%N)
	SLURM_CPU=$(( $(ticks "${SPIDS[@]}") - s0 + $(child_ticks) - k0 ))
	[ "$ok" -eq "$SN" ] || { echo "FAIL sbatch: only $ok of $SN accepted: $(tail -1 "$W/sbatch.err")"; exit 1; }
	/usr/bin/python3 - "$OURS" "$SN" "$t0" "$t1" "$OURS_CPU" "$SLURM_CPU" "$(getconf CLK_TCK)" <<'PY'
import json, sys
o = json.loads(sys.argv[1]); n = int(sys.argv[2]); dt = float(sys.argv[4]) - float(sys.argv[3])
hz = float(sys.argv[7]); oc = max(1, int(sys.argv[5])) / hz; sc = max(1, int(sys.argv[6])) / hz
s = n / dt
print(f"slurm 22.05 sbatch --wrap true: {n} submissions, {s:.1f}/s")
print(f"submissions/s admitd vs sbatch: {o['per_s'] / s:.1f}x (target >= 10x)")
print(f"submissions per CPU-second: admitd + its load generator {o['n'] / oc:.0f}, "
      f"sbatch + slurmctld + slurmd + munged {n / sc:.0f}: {o['n'] / oc / (n / sc):.1f}x")
PY
else
	echo "SKIP sbatch baseline: Slurm could not be started here: $(tail -1 "$W/slurm-why")"
fi

# p99 of the admission decision with 10,000 jobs queued: the time of one
# scheduling pass over the whole queue (ordering, backfill, placement,
# reasons), as admitd measures it (GET /v1/sched). The queue is filled by
# copying one queued row in SQLite (filling it through the API would take
# minutes); then each of 200 submissions triggers one coalesced pass.
kill -9 "$APID"; wait "$APID" 2>/dev/null; APID=
sqlite3 "$W/a/admitd.db" "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 10000)
	INSERT INTO jobs (id, tenant, user, bundle_id, bundle_dir, name, state, reason, ranks, model, params,
	  estimate, created_us, updated_us, est_s, est_micro)
	SELECT 'j-q' || i, 'q' || (i % 20), user, bundle_id, bundle_dir, name, 'queued', reason, 1, model, params,
	  estimate, created_us + i, updated_us, est_s, est_micro FROM k, (SELECT * FROM jobs WHERE state = 'queued' LIMIT 1)"
start_admitd
Q=$(sqlite3 "$W/a/admitd.db" "SELECT count(*) FROM jobs WHERE state = 'queued'")
LAT=$(/usr/bin/python3 tests/bench/admission-load.py "$W/a.sock" passes 200) || { echo "submissions failed"; exit 1; }
/usr/bin/python3 - "$LAT" "$Q" <<'PY'
import json, sys
o = json.loads(sys.argv[1])
print(f"admission decision (one scheduling pass) with {sys.argv[2]} jobs queued, {o['passes']} passes: "
      f"p50 {o['p50_ms']:.2f} ms, p99 {o['p99_ms']:.2f} ms, max {o['max_ms']:.2f} ms (target p99 < 10 ms)")
print(f"  the same passes in admitd's CPU time (what a loaded machine does not inflate): "
      f"p50 {o['cpu_p50_ms']:.2f} ms, p99 {o['cpu_p99_ms']:.2f} ms, max {o['cpu_max_ms']:.2f} ms")
PY

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

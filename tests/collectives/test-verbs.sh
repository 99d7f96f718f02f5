#!/usr/bin/env bash
# test-verbs — libbcoll's verbs transport over libbnet (net_memif per rank
# pair) through real bcoll-bench processes: 2 and 3 ranks, every algorithm
# forced, several dtypes/ops/sizes with every result checked (#wrong must be
# 0), a loop of a few thousand allreduces at the sizes that used to stall, and
# a rank killed mid-run, which must fail the survivor within the deadline.
# Then libbcoll's own suite (collectives/test-bcoll.c, unchanged) over verbs:
# its fault and bad-use cases always, its correctness cases (every dtype, op,
# collective, algorithm, 2..8 ranks, 64 MiB) with BCOLL_VERBS_FULL=1 (a few
# minutes; the cases it runs over tcp run over verbs instead, see
# netstack/test-bcoll-verbs.c).
# The rdma-core provider can only be compiled here: its line is a SKIP.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BENCH=$BUILD/bin/bcoll-bench
T=$(mktemp -d /tmp/bcoll-verbs.XXXXXX)
bpid=
cleanup() {
	if [ -n "$bpid" ]; then
		for p in $(pgrep -P "$bpid"); do kill -9 "$p" 2>/dev/null; done
		kill -9 "$bpid" 2>/dev/null
	fi
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
export BCOLL_VERBS_DIR=$T BCOLL_TIMEOUT_MS=10000

if [ ! -x "$BENCH" ] || ! nm "$BENCH" 2>/dev/null | grep -q ' [TW] bcoll_verbs_connect'; then
	echo "SKIP verbs: $BENCH built without libbcoll-verbs (no libdpdk-dev)"
	exit 0
fi

# run NAME ARGS...: bcoll-bench -t verbs; PASS when it exits 0, printed a
# result line for every size and no result was wrong.
run() {
	local name=$1
	shift
	timeout 300 "$BENCH" -t verbs "$@" >"$T/$name.out" 2>"$T/$name.err"
	local rc=$?
	if [ $rc != 0 ]; then
		echo "FAIL verbs_$name: exit $rc: $(tail -n 3 "$T/$name.err" | tr '\n' ' ')"
		return
	fi
	if ! awk '!/^#/ { n++; if ($8 != 0) bad++ } END { exit !(n > 0 && !bad) }' \
		"$T/$name.out"; then
		echo "FAIL verbs_$name: wrong results: $(grep -v '^#' "$T/$name.out" | tr '\n' ' ')"
		return
	fi
	echo "PASS verbs_$name"
}

out=$(BCOLL_VERBOSE=1 timeout 60 "$BENCH" -t verbs -n 2 -b 8 -e 8 -i 1 2>&1)
case $out in
*"no RDMA device"*"using libbnet"*)
	echo "SKIP verbs_rdma_core: no RDMA device (rdma-core provider compiled, not run)" ;;
*) echo "FAIL verbs_rdma_core: no provider sentence: $(echo "$out" | head -n 3)" ;;
esac

for n in 2 3; do
	for a in ring rd rabenseifner direct; do
		BCOLL_ALGO=$a run "n${n}_$a" -n $n -b 4 -e $((4 << 20)) -f 16 -i 3
	done
done
run n2_double_max -n 2 -d double -o max -b 8 -e 262144 -f 8 -i 5
run n2_int32_min -n 2 -d int32 -o min -b 4 -e 262144 -f 8 -i 5
run n3_int64_sum -n 3 -d int64 -o sum -b 8 -e 262144 -f 8 -i 5
run n3_bf16_avg -n 3 -d bfloat16 -o avg -b 2 -e 65536 -f 8 -i 5
run n2_half_sum -n 2 -d half -o sum -b 2 -e 65536 -f 8 -i 5
# the old stall: frames over 2 KiB did not fit an mbuf (about allreduce #613)
run n2_loop -n 2 -b 1024 -e 16384 -f 2 -i 500
run n3_loop -n 3 -b 4096 -e 4096 -i 1000

# a rank killed mid-run: the survivors fail, naming it, within the deadline
BCOLL_TIMEOUT_MS=4000 "$BENCH" -t verbs -n 2 -b 65536 -e 65536 -i 100000 \
	>"$T/dead.out" 2>"$T/dead.err" &
bpid=$!
for _ in $(seq 100); do
	grep -q '^# bcoll-bench' "$T/dead.out" 2>/dev/null && break
	sleep 0.1
done
sleep 1
victim=$(pgrep -P "$bpid" | tail -n 1)
start=$(date +%s%N)
[ -n "$victim" ] && kill -9 "$victim"
for _ in $(seq 150); do
	kill -0 "$bpid" 2>/dev/null || break
	sleep 0.1
done
took=$((($(date +%s%N) - start) / 1000000))
if kill -0 "$bpid" 2>/dev/null; then
	echo "FAIL verbs_dead_peer: the survivor still runs ${took} ms after the kill"
elif [ -z "$victim" ]; then
	echo "FAIL verbs_dead_peer: no rank process to kill"
elif ! grep -q 'rank 1' "$T/dead.err"; then
	echo "FAIL verbs_dead_peer: the error does not name rank 1: $(head -c 300 "$T/dead.err")"
elif [ "$took" -gt 9000 ]; then
	echo "FAIL verbs_dead_peer: took ${took} ms (deadline 4000 ms)"
else
	echo "PASS verbs_dead_peer (${took} ms: $(grep -m1 'rank 0' "$T/dead.err" | cut -c1-120))"
fi
bpid=

# libbcoll's suite over verbs; its tcp_* cases ran over verbs: renamed
SUITE=$BUILD/bin/test-bcoll-verbs
if [ ! -x "$SUITE" ]; then
	echo "SKIP verbs_bcoll_suite: $SUITE not built"
else
	if [ -n "${BCOLL_VERBS_FULL:-}" ]; then
		timeout 1200 "$SUITE" >"$T/suite.out" 2>&1
	else
		BCOLL_TEST_FAULTS=1 timeout 600 "$SUITE" >"$T/suite.out" 2>&1
	fi
	rc=$?
	grep -E '^(PASS|FAIL|SKIP|  also)' "$T/suite.out" |
		sed -E 's/^(PASS|FAIL|SKIP) tcp_/\1 verbs_suite_/' |
		grep -v -E '^(PASS|FAIL|SKIP) (shm_|bad_args|reduce_kernels)'
	# a crash or a hang of the suite itself is a failure too
	if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$T/suite.out"; then
		echo "FAIL verbs_suite: exited $rc: $(tail -n 3 "$T/suite.out" | tr '\n' ' ')"
	fi
	[ -n "${BCOLL_VERBS_FULL:-}" ] ||
		echo "SKIP verbs_suite_correctness: BCOLL_VERBS_FULL=1 runs the suite's correctness cases over verbs too"
fi

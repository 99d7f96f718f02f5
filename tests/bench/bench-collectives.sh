#!/usr/bin/env bash
# bench-collectives — libbcoll against Open MPI on this machine, in the same
# run: 4 ranks, float sum, shared memory (Open MPI: vader) and TCP on
# loopback (Open MPI: btl tcp over lo). Allreduce at the 8-byte latency point
# and over a size sweep, then reduce_scatter, allgather and broadcast at a few
# sizes. Each measurement runs BENCH_REPEAT times (default 3), ours and MPI's
# alternating, and the table shows each side's median time per size (a shared
# machine is noisy; medians of interleaved runs are fair to both). Prints
# busbw and time side by side with the ratio (ours / MPI's busbw; MPI's / ours
# time for latency), plus one core's memcpy bandwidth as the memory-bound
# yardstick and the load average before and after.
# Issue 3 targets: 64 MiB shm busbw >= 1.5x, 8-byte latency <= MPI's, TCP >=
# 1.2x. Reports numbers; never fails on a time. BENCH_NP, BENCH_MAX,
# BENCH_REPEAT override; BENCH_COLLS=0 skips the other collectives.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
NP=${BENCH_NP:-4}
MAX=${BENCH_MAX:-64M}
REP=${BENCH_REPEAT:-3}
out=$(mktemp -d /tmp/bench-coll-XXXXXX)
trap 'rm -rf "$out"' EXIT

[ -x "$BUILD/bin/bcoll-bench" ] || { echo "bench-collectives: $BUILD/bin/bcoll-bench missing (make all)"; exit 1; }
if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
	echo "SKIP bench-collectives: no mpicc/mpirun (make bench-deps installs Open MPI)"
	exit 0
fi
mpicc -O2 -o "$out/mpi-allreduce" collectives/bench/mpi-allreduce.c || exit 1

mpi=(mpirun --allow-run-as-root --oversubscribe -np "$NP")
mpi_shm=(--mca btl vader,self)
mpi_tcp=(--mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)

echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); $REP interleaved runs per side, medians"
"$BUILD/bin/bcoll-bench" -m -n 1 -b 8 -e 8 | grep memcpy | tee "$out/memcpy"
memcpy_gbs=$(awk '{print $(NF-1)}' "$out/memcpy")

# measure TAG TP MPI-ARGS... -- BENCH-ARGS...: REP interleaved runs of both
# sides into $out/TAG-{ours,mpi}-N.
measure() {
	local tag=$1 tp=$2; shift 2
	local margs=() bargs
	while [ "$1" != -- ]; do margs+=("$1"); shift; done
	shift
	bargs=("$@")
	for r in $(seq "$REP"); do
		"$BUILD/bin/bcoll-bench" -n "$NP" -t "$tp" "${bargs[@]}" >"$out/$tag-ours-$r" || return 1
		timeout 600 "${mpi[@]}" "${margs[@]}" "$out/mpi-allreduce" "${bargs[@]}" \
			>"$out/$tag-mpi-$r" 2>>"$out/mpi.err" || { cat "$out/mpi.err"; return 1; }
	done
}

# table TAG...: per size, the median time of each side over its runs (the
# busbw printed is the one of the median run), ours' algorithm and #wrong.
table() {
	local files=()
	for tag in "$@"; do files+=("$out/$tag"-mpi-* "$out/$tag"-ours-*); done
	awk 'function med(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return a[int((n + 1) / 2)]
	     }
	     /^#/ { next }
	     { side = FILENAME ~ /-ours-/ ? "o" : "m"; k = side SUBSEP $1
	       t[k] = t[k] " " $5; bus[k, $5] = $7; seen[$1] = 1
	       if (side == "o") { algo[$1] = $9; wrong[$1] += $8 } }
	     END {
		for (s in seen) sizes[++ns] = s + 0
		for (i = 2; i <= ns; i++) for (j = i; j > 1 && sizes[j-1] > sizes[j]; j--) { x = sizes[j]; sizes[j] = sizes[j-1]; sizes[j-1] = x }
		for (i = 1; i <= ns; i++) {
			s = sizes[i]; to = med(t["o", s]); tm = med(t["m", s])
			bo = bus["o", s, to]; bm = bus["m", s, tm]
			printf "%12s %12.3f %12.3f %7.2fx %12.2f %12.2f %s%s\n", s, bo, bm,
			       (bm > 0 ? bo / bm : 0), to, tm, algo[s], (wrong[s] ? " WRONG " wrong[s] : "")
		}
	     }' "${files[@]}"
}

header() {
	printf '%12s %12s %12s %8s %12s %12s %s\n' size "bcoll busbw" "MPI busbw" ratio "bcoll us" "MPI us" "bcoll algo"
}

# run TP MPI-ARGS...: allreduce latency and sweep, then the other collectives.
run() {
	local tp=$1; shift
	measure "$tp-lat" "$tp" "$@" -- -b 8 -e 8 -f 2 -i 2000 || return 1
	measure "$tp-sweep" "$tp" "$@" -- -b 1K -e "$MAX" -f 4 || return 1
	echo "== allreduce, $tp, $NP ranks, float sum (MPI: $*)"
	header
	table "$tp-lat" "$tp-sweep" | tee "$out/table-$tp"
	awk -v tp="$tp" '$1 == 8 { printf "%s 8-byte latency: bcoll %.2f us, MPI %.2f us (MPI/bcoll %.2fx; target >= 1)\n", tp, $5, $6, $6 / $5 }' "$out/table-$tp"
	awk -v tp="$tp" -v m="$memcpy_gbs" -v tgt="$([ "$tp" = shm ] && echo 1.5 || echo 1.2)" \
		'END { printf "%s %s B: busbw ratio %.2fx (target >= %s); bcoll busbw = %.2f of one core memcpy (%.2f GB/s)\n", tp, $1, $4 + 0, tgt, $2 / m, m }' "$out/table-$tp"
	[ "${BENCH_COLLS:-1}" = 0 ] && return 0
	for coll in reduce_scatter allgather broadcast; do
		measure "$tp-$coll" "$tp" "$@" -- -c "$coll" -b 4K -e 16M -f 16 || return 1
		echo "== $coll, $tp, $NP ranks, float (size = the whole buffer)"
		header
		table "$tp-$coll"
	done
}

rc=0
run shm "${mpi_shm[@]}" || rc=1
run tcp "${mpi_tcp[@]}" || rc=1
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg) (timings on a shared machine are noisy; both sides ran interleaved in this same run)"
exit $rc

#!/usr/bin/env bash
# bench-collectives — libbcoll's allreduce against Open MPI's MPI_Allreduce on
# this machine, in the same run: 4 ranks, float sum, shared memory (Open MPI:
# vader) and TCP on loopback (Open MPI: btl tcp over lo). Prints busbw and
# time side by side with the ratio (ours / MPI's busbw; MPI's / ours time for
# latency), plus one core's memcpy bandwidth as the memory-bound yardstick.
# Issue 3 targets: 64 MiB shm busbw >= 1.5x, 8-byte latency <= MPI's, TCP >=
# 1.2x. Reports numbers; never fails on a time. BENCH_NP, BENCH_MAX override.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
NP=${BENCH_NP:-4}
MAX=${BENCH_MAX:-64M}
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
sizes=(-b 1K -e "$MAX" -f 4)

"$BUILD/bin/bcoll-bench" -m -n 1 -b 8 -e 8 | grep memcpy | tee "$out/memcpy"
memcpy_gbs=$(awk '{print $(NF-1)}' "$out/memcpy")

# run NAME: both sides at the 8-byte latency point and the size sweep.
run() {
	local tp=$1; shift
	"$BUILD/bin/bcoll-bench" -n "$NP" -t "$tp" -b 8 -e 8 -i 2000 >"$out/ours-$tp-lat" || return 1
	"$BUILD/bin/bcoll-bench" -n "$NP" -t "$tp" "${sizes[@]}" >"$out/ours-$tp" || return 1
	timeout 300 "${mpi[@]}" "$@" "$out/mpi-allreduce" -b 8 -e 8 -f 2 -i 2000 >"$out/mpi-$tp-lat" 2>"$out/mpi-$tp.err" || { cat "$out/mpi-$tp.err"; return 1; }
	timeout 600 "${mpi[@]}" "$@" "$out/mpi-allreduce" "${sizes[@]}" >"$out/mpi-$tp" 2>>"$out/mpi-$tp.err" || { cat "$out/mpi-$tp.err"; return 1; }
	echo "== $tp, $NP ranks, float sum (MPI: $*)"
	printf '%12s %12s %12s %8s %12s %12s %s\n' size "bcoll busbw" "MPI busbw" ratio "bcoll us" "MPI us" "bcoll algo"
	awk 'FNR == 1 { f++ } /^#/ { next }
	     f <= 2 { mt[$1] = $5; mb[$1] = $7; next }
	     { r = mb[$1] > 0 ? $7 / mb[$1] : 0
	       printf "%12s %12.3f %12.3f %7.2fx %12.2f %12.2f %s\n", $1, $7, mb[$1], r, $5, mt[$1], $9 }' \
		"$out/mpi-$tp-lat" "$out/mpi-$tp" "$out/ours-$tp-lat" "$out/ours-$tp" |
		tee "$out/table-$tp"
	awk -v tp="$tp" '$1 == 8 { printf "%s 8-byte latency: bcoll %.2f us, MPI %.2f us (MPI/bcoll %.2fx; target >= 1)\n", tp, $5, $6, $6 / $5 }' "$out/table-$tp"
	awk -v tp="$tp" -v m="$memcpy_gbs" -v tgt="$([ "$tp" = shm ] && echo 1.5 || echo 1.2)" \
		'END { printf "%s %s B: busbw ratio %.2fx (target >= %s); bcoll busbw = %.2f of one core memcpy (%.2f GB/s)\n", tp, $1, $4 + 0, tgt, $2 / m, m }' "$out/table-$tp"
}

rc=0
run shm "${mpi_shm[@]}" || rc=1
run tcp "${mpi_tcp[@]}" || rc=1
echo "(timings on a shared machine are noisy; both sides ran in this same run)"
exit $rc

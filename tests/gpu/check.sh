#!/bin/bash
# gpu-check — everything that needs an NVIDIA GPU, in one run of a few
# minutes (`make gpu-check`): a GPU node's burn-in, and what CI cannot run.
#   1. test-cuda: the CUDA kernels and a small GPT-2 and Llama against the CPU
#      reference (flash attention, both attention kernels, 10 AdamW steps)
#   2. test-device.sh: bursar-train --device cuda end to end (loss curve vs
#      the CPU, checkpoint and resume on the GPU)
#   3. the node agent on a GPU node (tests/noded/test-class.sh): NVML
#      inventory, class, one GPU per rank, metered GPU energy
#   4. test-hf.py: the trainer's output loads in transformers (when the
#      Python given has it)
#   5. bench-cuda.sh: GPT-2 124M training throughput, both attention kernels,
#      against PyTorch eager and torch.compile in the same run
# Prints one line per part and the closing "N passed, N failed" line.
#   GPU_CHECK_PYTHON   the Python with torch (and transformers) for 4 and 5
#   GPU_CHECK_PARTS    "cuda device node hf bench" (any subset)
set -u
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
PY=${GPU_CHECK_PYTHON:-python3}
parts=${GPU_CHECK_PARTS:-cuda device node hf bench}
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
	echo "SKIP gpu-check: no NVIDIA GPU on this machine"
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader
pass=0 fail=0 skip=0
log=$(mktemp /tmp/gpu-check.XXXXXX)
trap 'rm -f "$log"' EXIT
part() { # NAME CMD...: runs CMD, counts its PASS/FAIL/SKIP lines
	local name=$1 out rc
	shift
	echo "== $name"
	# streamed as it runs, so a run cut short still shows how far it got
	"$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	out=$(cat "$log")
	local p f s
	p=$(grep -c '^PASS' <<<"$out")
	f=$(grep -c '^FAIL' <<<"$out")
	s=$(grep -c '^SKIP' <<<"$out")
	[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
	echo "-- $name: $p passed, $f failed, $s skipped (exit $rc)"
}
for x in $parts; do
	case $x in
	cuda) part test-cuda "$BUILD/bin/test-cuda" ;;
	device) part test-device tests/trainer/test-device.sh ;;
	node) part test-class tests/noded/test-class.sh ;;
	# Python runs without the trainer's LD_LIBRARY_PATH (a Python with its own
	# libraries, e.g. PyTorch's CUDA, must not pick up others)
	hf) part test-hf env -u LD_LIBRARY_PATH BURSAR_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" \
		"$PY" tests/trainer/test-hf.py ;;
	bench) part bench-cuda env BENCH_CUDA_CHECKS=0 \
		BENCH_CUDA_PYTHON="env -u LD_LIBRARY_PATH $PY" tests/bench/bench-cuda.sh ;;
	*) echo "unknown part '$x' (cuda device node hf bench)"; exit 2 ;;
	esac
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

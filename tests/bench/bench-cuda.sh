#!/bin/bash
# bench-cuda — the CUDA backend on the GPU: its checks against the CPU
# (build/bin/test-cuda), then GPT-2 124M training throughput, B=32 T=1024 bf16,
# bursar (build/bin/bench-cuda) against PyTorch on the same GPU in the same
# run, eager and torch.compile, with the ratios. Skipped without a GPU.
#   BENCH_CUDA_STEPS=20  BENCH_CUDA_ARGS="-B 32 -T 1024"  BENCH_CUDA_TORCH=both|eager|compile|none
#   BENCH_CUDA_VARIANTS="flash2 fused"  BENCH_CUDA_CHECKS=1 (0: skip test-cuda)
#   variants: flash2 (the default kernels), fused (BURSAR_CUDA_FUSED=1: GELU and
#   bias gradients in the matmul epilogues, the one-read cross-entropy), wmma
#   (attention.cu's attention, BURSAR_CUDA_FLASH2=0)
set -u
BUILD=${BUILD:-build}
PY=${BENCH_CUDA_PYTHON:-python3}
steps=${BENCH_CUDA_STEPS:-20}
args=${BENCH_CUDA_ARGS:--B 32 -T 1024}
torch_mode=${BENCH_CUDA_TORCH:-both}
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
	echo "SKIP bench-cuda: no NVIDIA GPU on this machine"
	exit 0
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
	--format=csv,noheader
if [ "${BENCH_CUDA_CHECKS:-1}" != 0 ]; then
	echo "== checks against the CPU reference"
	"$BUILD/bin/test-cuda"
fi
variants=${BENCH_CUDA_VARIANTS:-flash2 fused}
declare -A ours
for v in $variants; do
	f2=1 fu=0
	[ "$v" = wmma ] && f2=0
	[ "$v" = fused ] && fu=1
	echo "== bursar-train's CUDA backend ($v)"
	out=$(BURSAR_CUDA_FLASH2=$f2 BURSAR_CUDA_FUSED=$fu "$BUILD/bin/bench-cuda" $args -s "$steps" 2>&1)
	echo "$out" | tail -4
	ours[$v]=$(echo "$out" | sed -n 's/^bursar_cuda tokens_per_s=\([0-9]*\).*/\1/p')
	[ -n "${ours[$v]}" ] || { echo "bench-cuda ($v) failed"; [ "$v" = flash2 ] && exit 1; continue; }
	echo "== where one step's time goes ($v; events between the calls of the second step)"
	BURSAR_CUDA_FLASH2=$f2 BURSAR_CUDA_FUSED=$fu BURSAR_CUDA_TIMING=2 "$BUILD/bin/bench-cuda" $args -s 3 2>&1 |
		grep 'cuda:' | tail -24
done
[ "$torch_mode" = none ] && exit 0
echo "== PyTorch on the same GPU"
tout=$($PY "$here/gpt2_torch_gpu.py" --mode "$torch_mode" $args --steps "$steps" 2>&1)
echo "$tout" | grep -v Warning
for mode in eager compile; do
	theirs=$(echo "$tout" | sed -n "s/^torch_$mode tokens_per_s=\([0-9]*\).*/\1/p")
	[ -n "$theirs" ] || continue
	for v in $variants; do
		[ -n "${ours[$v]:-}" ] && awk -v a="${ours[$v]}" -v b="$theirs" -v m="$mode" -v v="$v" \
			'BEGIN { printf "ratio bursar(%s)/torch_%s: %.2fx (%d vs %d tokens/s)\n", v, m, a / b, a, b }'
	done
done
exit 0

#!/usr/bin/env bash
# test-device — bursar-train's --device (and bursar.json's "device").
# Without a GPU: --device cuda refuses with a sentence that says why, auto
# trains on the CPU and says so, a bad value is refused. With a GPU (and the
# CUDA backend built): a small GPT-2 trains on it with the CPU's loss curve
# (bf16 tolerance), writes loadable weights, and a run stopped by SIGUSR1
# resumes on the GPU to the uninterrupted run's losses.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
TRAIN=$BUILD/bin/bursar-train
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/test-device-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# head size 64, T 64: the flash attention kernels' shapes
$PY tests/trainer/make-bundle.py "$tmp/b" --steps 20 --batch 8 --embd 128 --heads 2 --layers 2 \
	>/dev/null
gpu=0
if [ -e "$BUILD/lib/libbursar-cuda.so" ] && command -v nvidia-smi >/dev/null &&
	nvidia-smi -L >/dev/null 2>&1; then
	gpu=1
fi

"$TRAIN" "$tmp/b" --device tpu >/dev/null 2>"$tmp/bad.err"
if [ $? -eq 2 ] && grep -q "must be cpu, cuda or auto" "$tmp/bad.err"; then
	pass device_flag_validated
else
	fail device_flag_validated "$(tail -1 "$tmp/bad.err")"
fi
cp -r "$tmp/b" "$tmp/b2"
$PY - "$tmp/b2/bursar.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p)); d["device"] = "gpu"; json.dump(d, open(p, "w"))
PY
"$TRAIN" "$tmp/b2" >/dev/null 2>"$tmp/bad2.err"
if [ $? -eq 2 ] && grep -q "'device' must be" "$tmp/bad2.err"; then
	pass bundle_device_validated
else
	fail bundle_device_validated "$(tail -1 "$tmp/bad2.err")"
fi

if [ $gpu -eq 0 ]; then
	"$TRAIN" "$tmp/b" --steps 2 --device cuda >/dev/null 2>"$tmp/cuda.err"
	if [ $? -eq 2 ] && grep -q -- "--device cuda: " "$tmp/cuda.err"; then
		pass cuda_refused_without_gpu
	else
		fail cuda_refused_without_gpu "$(tail -1 "$tmp/cuda.err")"
	fi
	"$TRAIN" "$tmp/b" --steps 2 --device auto >"$tmp/auto.jsonl" 2>"$tmp/auto.err"
	if [ $? -eq 0 ] && grep -q '"device": "cpu"' "$tmp/auto.jsonl" &&
		grep -q "training on the CPU" "$tmp/auto.err"; then
		pass auto_falls_back_to_cpu
	else
		fail auto_falls_back_to_cpu "$(tail -1 "$tmp/auto.err")"
	fi
	echo "SKIP training on the GPU: no GPU here ($(tail -1 "$tmp/cuda.err" | sed 's/.*--device cuda: //'))"
	exit 0
fi

# losses of a run, one per line
losses() { $PY -c 'import json,sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    if o.get("event") == "step": print(o["loss"])' "$1"; }

"$TRAIN" "$tmp/b" --device cpu --out "$tmp/cpu" >"$tmp/cpu.jsonl" 2>"$tmp/cpu.err" ||
	fail cpu_run "$(tail -1 "$tmp/cpu.err")"
"$TRAIN" "$tmp/b" --device cuda --out "$tmp/gpu" >"$tmp/gpu.jsonl" 2>"$tmp/gpu.err"
if [ $? -eq 0 ] && grep -q '"device": "cuda"' "$tmp/gpu.jsonl"; then
	pass trains_on_gpu
else
	fail trains_on_gpu "$(tail -2 "$tmp/gpu.err")"
fi
worst=$(paste <(losses "$tmp/cpu.jsonl") <(losses "$tmp/gpu.jsonl") |
	awk '{d = $1 - $2; if (d < 0) d = -d; d /= $1; if (d > w) w = d} END {printf "%.4f", w}')
if [ -n "$worst" ] && awk -v w="$worst" 'BEGIN { exit !(w < 0.02) }'; then
	pass "gpu_loss_curve_matches_cpu (worst relative difference $worst)"
else
	fail gpu_loss_curve_matches_cpu "worst relative difference $worst"
fi
# the fused kernels (BURSAR_CUDA_FUSED=1: GELU and bias gradients in the
# matmul epilogues, the one-read cross-entropy; opt-in until this passes)
BURSAR_CUDA_FUSED=1 "$TRAIN" "$tmp/b" --device cuda --out "$tmp/gpuf" >"$tmp/gpuf.jsonl" \
	2>"$tmp/gpuf.err"
rc=$?
worst=$(paste <(losses "$tmp/cpu.jsonl") <(losses "$tmp/gpuf.jsonl") |
	awk '{d = $1 - $2; if (d < 0) d = -d; d /= $1; if (d > w) w = d} END {printf "%.4f", w}')
if [ $rc -eq 0 ] && [ "$(losses "$tmp/gpuf.jsonl" | wc -l)" = "$(losses "$tmp/cpu.jsonl" | wc -l)" ] &&
	[ -n "$worst" ] && awk -v w="$worst" 'BEGIN { exit !(w < 0.02) }'; then
	pass "fused_kernels_loss_curve_matches_cpu (worst relative difference $worst)"
else
	fail fused_kernels_loss_curve_matches_cpu "status $rc, worst relative difference $worst: $(tail -2 "$tmp/gpuf.err")"
fi
if $PY - "$tmp/gpu/model.safetensors" "$tmp/cpu/model.safetensors" <<'PY'; then
import json, struct, sys
def names(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return sorted(k for k in json.loads(f.read(n)) if k != "__metadata__")
sys.exit(0 if names(sys.argv[1]) == names(sys.argv[2]) else 1)
PY
	pass gpu_writes_the_same_tensors
else
	fail gpu_writes_the_same_tensors "model.safetensors differs in its tensors"
fi
# stopped by SIGUSR1 at a step boundary, resumed on the GPU: the same losses
# and the same final weights as one uninterrupted GPU run (300 steps: 20 end
# on a GPU before the signal can land)
cp -r "$tmp/b" "$tmp/b3"
$PY - "$tmp/b3/bursar.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p)); d["steps"] = 300; json.dump(d, open(p, "w"))
PY
"$TRAIN" "$tmp/b3" --device cuda --ckpt "$tmp/ck1" --out "$tmp/o1" >"$tmp/full.jsonl" 2>/dev/null
"$TRAIN" "$tmp/b3" --device cuda --ckpt "$tmp/ck2" --out "$tmp/o2" >"$tmp/part1.jsonl" \
	2>"$tmp/part1.err" &
victim=$!
for _ in $(seq 400); do grep -q '"step": 3,' "$tmp/part1.jsonl" 2>/dev/null && break; sleep 0.05; done
kill -USR1 $victim
wait $victim
rc=$?
"$TRAIN" "$tmp/b3" --device cuda --ckpt "$tmp/ck2" --out "$tmp/o2" >"$tmp/part2.jsonl" 2>/dev/null
done_steps=$(losses "$tmp/part1.jsonl" | wc -l)
if [ $rc -eq 75 ] && [ "$(losses "$tmp/full.jsonl" | tail -n +$((done_steps + 1)))" = \
	"$(losses "$tmp/part2.jsonl")" ] && cmp -s "$tmp/o1/model.safetensors" "$tmp/o2/model.safetensors"; then
	pass "gpu_resume_equals_continuous (stopped after step $done_steps)"
else
	fail gpu_resume_equals_continuous "status $rc, stopped after $done_steps steps: $(tail -1 "$tmp/part1.err")"
fi
# Llama on the GPU (opt-in, BURSAR_CUDA_LLAMA=1, until this passes): head size
# 64, GQA; the CPU's loss curve within bf16 tolerance
$PY tests/trainer/make-bundle.py "$tmp/ll" --llama 1 --steps 20 --batch 8 --embd 256 --layers 2 \
	>/dev/null
"$TRAIN" "$tmp/ll" --device cpu --out "$tmp/llcpu" >"$tmp/llcpu.jsonl" 2>"$tmp/llcpu.err" ||
	fail llama_cpu_run "$(tail -1 "$tmp/llcpu.err")"
BURSAR_CUDA_LLAMA=1 "$TRAIN" "$tmp/ll" --device cuda --out "$tmp/llgpu" >"$tmp/llgpu.jsonl" \
	2>"$tmp/llgpu.err"
rc=$?
worst=$(paste <(losses "$tmp/llcpu.jsonl") <(losses "$tmp/llgpu.jsonl") |
	awk '{d = $1 - $2; if (d < 0) d = -d; d /= $1; if (d > w) w = d} END {printf "%.4f", w}')
if [ $rc -eq 0 ] && grep -q '"device": "cuda"' "$tmp/llgpu.jsonl" && [ -n "$worst" ] &&
	[ "$(losses "$tmp/llgpu.jsonl" | wc -l)" = 20 ] && awk -v w="$worst" 'BEGIN { exit !(w < 0.03) }'; then
	pass "llama_trains_on_gpu (worst relative difference $worst)"
else
	fail llama_trains_on_gpu "status $rc, worst relative difference $worst: $(tail -2 "$tmp/llgpu.err")"
fi

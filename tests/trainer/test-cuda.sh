#!/bin/bash
# test-cuda — the CUDA backend against the CPU reference (build/bin/test-cuda:
# flash attention, a small GPT-2's loss and gradients, 10 AdamW steps).
# Every case reports itself skipped on a machine without a GPU.
BUILD=${BUILD:-build}
if [ ! -x "$BUILD/bin/test-cuda" ]; then
	echo "SKIP cuda backend: $BUILD/bin/test-cuda is not built"
	exit 0
fi
if [ ! -e "$BUILD/lib/libbursar-cuda.so" ]; then
	echo "SKIP cuda backend: not built here (no nvcc at /usr/local/cuda/bin)"
	exit 0
fi
exec "$BUILD/bin/test-cuda"

#!/usr/bin/env bash
# Issue 5's GPU checks as one prepared run, for a lent NVIDIA machine (its python3 has torch with CUDA, onnx and
# the CPU onnxruntime; no TensorRT, no onnxruntime-gpu: see docs/BENCHMARKS.md, "What a lent GPU can run in this workplace").
#
#   bash benchmarks/gpu_check.sh OUT_DIR [ITERS]
#
# Not run yet (the task that wrote it had no GPU). One device call may last 600 s: if the three steps do not fit
# (each model also compiles once for torch-compile), lower ITERS (default 60) or run the steps in two calls.
#
# Writes OUT_DIR/{machine.txt, latency-fp32.*, latency-fp16.*, kernels.*}: fd/l1 (prior and window heads) and
# aux/l1 latency ratios at 720p x4 on torch eager and torch-compile (interleaved rounds, bootstrap CIs), fp32 and
# fp16, and the profiler's kernel tables of l1 and fd on both backends (where FD's GPU time goes).
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [ITERS]}
iters=${2:-60}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
bench="$py benchmarks/bench_latency.py --device cuda --hr-size 1280x720"

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    grep -m1 'model name' /proc/cpuinfo
} 2>&1 | tee "$out/machine.txt"

# 1. fp32: both FD heads and aux against the same l1, eager and compiled
$bench --backends torch,torch-compile --variants fd,aux --fgd-head prior,window --iters "$iters" \
    --json "$out/latency-fp32.json" 2>&1 | tee "$out/latency-fp32.txt"
# 2. fp16 weights and compute (the head's prior stays float32)
$bench --precision fp16 --backends torch,torch-compile --variants fd --fgd-head prior,window --iters "$iters" \
    --json "$out/latency-fp16.json" 2>&1 | tee "$out/latency-fp16.txt"
# 3. which kernels FD adds (device time per forward), default head
$bench --backends torch,torch-compile --variants fd --iters 2 --kernels \
    --json "$out/kernels.json" 2>&1 | tee "$out/kernels.txt"

#!/usr/bin/env bash
# The GPU checks of issues 5 and 13 as one prepared run for a lent NVIDIA machine (its python3 has torch with CUDA,
# onnx and the CPU onnxruntime; no TensorRT, no onnxruntime-gpu: docs/BENCHMARKS.md, "What a lent GPU can run").
#
#   bash benchmarks/gpu_check.sh OUT_DIR [PROCESSES]
#
# Not run yet (the tasks that wrote it had no GPU). Sized for one 600 s device call (about 7-9 min: each timing
# process starts CUDA, torch-compile compiles per process with inductor's on-disk cache warm after the first):
# lower PROCESSES (default 3, the verdict's minimum) only to see whether it runs at all.
#
# Writes OUT_DIR/{machine.txt, latency.*, latency-compile.*, latency-fp16.*, upscale-parity.txt}:
#  1. fd/l1 (default head and fgd_head=window) and aux/l1 on torch eager at 720p x4 with the tool's verdict (fresh
#     processes, pooled interval), H2D / compute / D2H of the same inferences, throughput at batch 8, and the
#     per-operator profile (CUDA device time per op) grouped into trunk / FD head / Class-Module;
#  2. the same verdicts on torch-compile (fd, aux);
#  3. fd/l1 in fp16 on torch eager;
#  4. fp16 upscale parity: `fgdsr upscale --precision fp16` on onnxruntime (CPU provider here) and tensorrt (when
#     importable) against torch fp32, max grey-level difference and the share of pixels off by more than 1.
#     Written against the deploy engineer's `fgdsr upscale IMAGE --checkpoint DIR --out DIR --backend B
#     --precision P --device D` (issue 13); adjust the flags here if that CLI changed.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [PROCESSES]}
procs=${2:-3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
bench="$py benchmarks/bench_latency.py --device cuda --hr-size 1280x720 --processes $procs"

{
    date -u
    uptime
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    grep -m1 'model name' /proc/cpuinfo
} 2>&1 | tee "$out/machine.txt"

# 1. eager: verdicts, H2D/compute/D2H, throughput at batch 8, the grouped profile
$bench --backends torch --pairs fd,fd:window,aux --profile --throughput-batch 8 \
    --json "$out/latency.json" --markdown "$out/latency.md" 2>&1 | tee "$out/latency.txt"
# 2. torch-compile verdicts (inductor fuses across trunk/head: its profile is one 'fused' group, not run here)
$bench --backends torch-compile --pairs fd,aux \
    --json "$out/latency-compile.json" --markdown "$out/latency-compile.md" 2>&1 | tee "$out/latency-compile.txt"
# 3. fp16 weights and compute (the head's prior stays float32)
$bench --precision fp16 --backends torch --pairs fd \
    --json "$out/latency-fp16.json" --markdown "$out/latency-fp16.md" 2>&1 | tee "$out/latency-fp16.txt"

# 4. fp16 upscale parity against torch fp32 on two built-in photos (one odd-sized)
$py - "$out" <<'PY' 2>&1 | tee "$out/upscale-parity.txt"
import subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgdsr.checkpoint import save_model_checkpoint
from fgdsr.config import load_config
from fgdsr.data.datasets import resolve_dataset
from fgdsr.models import build_model

tmp = Path(tempfile.mkdtemp(prefix="gpu-parity-"))
cfg = load_config(Path("fgdsr/configs/lapsrn.yaml"), {"loss": "fd"})
torch.manual_seed(0)
ckpt = save_model_checkpoint(tmp / "fd", build_model(cfg), cfg)
images = []
for i, path in enumerate(resolve_dataset("builtin-eval").paths[:2]):
    img = Image.open(path).convert("RGB")
    img = img.resize((img.width // 4 + (i % 2) * 3, img.height // 4 + (i % 2)))  # an LR input, one of odd size
    images.append(tmp / f"in{i}.png")
    img.save(images[-1])


def upscale(backend, precision, device):
    dest = tmp / f"{backend}-{precision}"
    cmd = ["fgdsr", "upscale", *map(str, images), "--checkpoint", str(ckpt), "--out", str(dest),
           "--backend", backend, "--precision", precision, "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{backend} {precision}: failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return None
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(dest.glob("*.png"))}


ref = upscale("torch", "fp32", "cuda")
for backend, device in (("torch", "cuda"), ("onnxruntime", "cpu"), ("tensorrt", "cuda")):
    got = upscale(backend, "fp16", device)
    if ref is None or got is None:
        continue
    for name, a in ref.items():
        d = np.abs(a - got[name])
        print(f"{backend} fp16 vs torch fp32, {name} {a.shape}: max |diff| {d.max()} grey levels, "
              f"{(d > 1).mean():.2e} of values off by > 1 -> {'OK' if d.max() <= 1 else 'CHECK'}")
PY

#!/usr/bin/env bash
# Issue 11's Table 1 at LapSRN's real size as one prepared run for a lent NVIDIA machine (one H200, 16 cores; its
# python3 has torch with CUDA, accelerate, safetensors, scikit-image; no Ray and no MLflow, so this drives
# fgdsr.train.train directly through benchmarks/fgd_readings.py, not `fgdsr reproduce table1`):
#
#   bash benchmarks/gpu_table1.sh OUT_DIR DATA_ROOT [STEPS]
#
# NOT RUN YET: the task that wrote it had no GPU. DATA_ROOT must hold T91/ (the training pool, 9.5 MiB) and Set5/,
# Set14/ (the test sets, 6 MiB), carried with the call. BSD200 (50 MiB) does not fit the 64 MiB a call may carry
# next to them and the code, so the pool is T91 alone (POOL=T91+BSD200 where the data is on the machine).
#
# What it runs: fgdsr/configs/lapsrn.yaml (LapSRN x4, 128x128 HR patches, batch 64, Adam 1e-3; trained on
# POOL:train, validated on the POOL:val hold-out, never on a test set) for l1, cs, fd and the best CPU-screened reading
# (cs at the paper's alpha scale with the soft training decode), 3 seeds each, paired (same seed = same trunk init
# and data order). 3 runs share the GPU at a time (--jobs 3). The last checkpoint of each run is scored image by
# image on Set5 and Set14, and the summary prints the paired difference to l1 over seeds x images with its crossed
# bootstrap 95 % interval (fgdsr.metrics.compare, the statistics of `fgdsr reproduce table1`).
#
# Sizing (estimate, to be replaced by the measurement): a LapSRN x4 training step at batch 64 is of the order of
# 20-40 ms on an H200 with 3 runs packed; STEPS=3000 (default) x 12 runs / 3 at a time is then ~4-8 min plus
# start-up and scoring. Lower STEPS if the first call runs out of time; the paper trains for hundreds of
# thousands of steps, so even this run is a short-budget reading of Table 1, not a reproduction of its numbers.
#
# Writes OUT_DIR/{machine.txt, table1.txt, runs.jsonl}; the per-run folders stay on the machine (not carried back).
set -uo pipefail
out=${1:?usage: gpu_table1.sh OUT_DIR DATA_ROOT [STEPS]}
root=${2:?usage: gpu_table1.sh OUT_DIR DATA_ROOT [STEPS]}
steps=${3:-3000}
pool=${POOL:-T91}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" FGDSR_DATA_ROOT="$root"
py=${PYTHON:-python3}
work=${WORK:-/tmp/fgdsr-gpu-table1}

{
    date -u
    uptime
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    nproc
} 2>&1 | tee "$out/machine.txt"

$py benchmarks/fgd_readings.py --out "$work" --config fgdsr/configs/lapsrn.yaml --device cuda --jobs 3 \
    --seeds 0 1 2 --steps "$steps" --set workers=4 \
    --set "train_dataset=$pool:train" --set "val_dataset=$pool:val" \
    --reading cs:loss=cs --reading fd:loss=fd --reading "cs_a004_soft:loss=cs,alpha=0.004,train_decode=soft" \
    --test-set Set5 --test-set Set14 --data-root "$root" 2>&1 | tee "$out/table1.txt"
cp "$work/runs.jsonl" "$out/runs.jsonl"

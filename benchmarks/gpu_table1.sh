#!/usr/bin/env bash
# Issue 11's Table 1 at LapSRN's real size, as one prepared run for a lent NVIDIA machine (one H200, 16 cores; its
# python3 has torch with CUDA, accelerate, safetensors, scikit-image, typer, rich; no Ray and no MLflow, so this
# drives fgdsr.train.train through benchmarks/fgd_readings.py, not `fgdsr reproduce table1`):
#
#   bash benchmarks/gpu_table1.sh OUT_DIR DATA_ROOT LAPSRN_X4_MAT [STEPS]
#
# NOT RUN YET: the task that wrote it had no GPU. What travels (64 MiB at most): DATA_ROOT with T91/ (9.5 MiB, the
# training pool), Set5/ and Set14/ (5.6 MiB, the test sets), and the authors' LapSRN_x4.mat (3 MiB). Copy them
# into an ignored folder of the checkout (e.g. runs/gpu-data/, not links) and carry it. BSD200 (50 MiB) does not
# fit beside them, so the pool is T91 (POOL=T91+BSD200 where the data is on the machine).
#
# What it runs: the paper's "replace the loss" reading at a fine-tuning budget. The authors' x4 LapSRN, imported
# (`fgdsr import-weights`), is the common start (`init_from`) of l1, cs, fd, aux and the best CPU-screened reading
# (READING, default: cs at α = 0.004 ≈ 1/255 with the soft training decode), 2 seeds each (SEEDS), paired: same seed
# = same head init and data order. fgdsr/configs/lapsrn.yaml (LapSRN x4, HR 128, batch 64, Adam) at lr 2e-5 for
# STEPS (default 2000) steps, validated once at the end on the POOL:val hold-out (never on a test set). 3 runs
# share the GPU at a time. Each run's last checkpoint is scored image by image on Set5 and Set14 here, and the
# summary prints the paired Δ vs l1 over seeds × images with its crossed-bootstrap 95 % interval
# (fgdsr.metrics.compare, the statistics of `fgdsr reproduce table1`).
#
# Sizing (an estimate until measured): a LapSRN x4 step at batch 64, HR 128 is ~15-40 ms on an H200 with 3 runs
# packed; 10 runs x 2000 steps, 3 at a time, ~4-7 min, plus import, start-up and scoring: one 600 s call. Lower
# STEPS if the first try runs out of time.
#
# Brings back (8 files at most, 16 MiB each): machine.txt, table1.txt, runs.jsonl, and the 10 checkpoints (weights
# + config, 3.3 MiB each) packed 4 per tar, to be scored again on this machine:
#   tar xf ckpt-*.tar && for d in ckpt/*; do fgdsr evaluate --checkpoint $d --dataset Set5 --dataset Set14 --json; done
#
# Plumbing test on a CPU (minutes; numbers meaningless): DEVICE=cpu SEEDS=0 TESTS="--test-set Set5" \
#   EXTRA="--set batch_size=2 --set patch_size=64 --set val_max_images=1" \
#   bash benchmarks/gpu_table1.sh /tmp/gt1 ../shared/datasets ../shared/weights/lapsrn-official/LapSRN_x4.mat 2
set -uo pipefail
usage="usage: gpu_table1.sh OUT_DIR DATA_ROOT LAPSRN_X4_MAT [STEPS]"
out=${1:?$usage}
root=${2:?$usage}
mat=${3:?$usage}
steps=${4:-2000}
pool=${POOL:-T91}
seeds=${SEEDS:-0 1}
reading=${READING:-cs_a004_soft:loss=cs,alpha=0.004,train_decode=soft}
device=${DEVICE:-cuda}
tests=${TESTS:---test-set Set5 --test-set Set14}
extra=${EXTRA:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" FGDSR_DATA_ROOT="$root"
py=${PYTHON:-python3}
work=${WORK:-/tmp/fgdsr-gpu-table1}
mkdir -p "$work"

{
    date -u
    uptime
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    nproc
} 2>&1 | tee "$out/machine.txt"

$py -m orchestrator import-weights "$mat" --out "$work/official_x4" 2>&1 | tee -a "$out/machine.txt"

# shellcheck disable=SC2086  # $seeds, $tests and $extra are lists
$py benchmarks/fgd_readings.py --out "$work/runs" --config fgdsr/configs/lapsrn.yaml --device "$device" --jobs 3 \
    --seeds $seeds --steps "$steps" --set lr=2e-5 --set workers=4 --set "init_from=$work/official_x4" \
    --set "train_dataset=$pool:train" --set "val_dataset=$pool:val" \
    --reading cs:loss=cs --reading fd:loss=fd --reading aux:loss=aux --reading "$reading" \
    $tests $extra --data-root "$root" 2>&1 | tee "$out/table1.txt"
cp "$work/runs/runs.jsonl" "$out/runs.jsonl"

# the checkpoints, weights and config only (no optimizer state), 4 per tar
mkdir -p "$work/pack/ckpt"
for d in "$work"/runs/*/last; do
    name=$(basename "$(dirname "$d")")
    mkdir -p "$work/pack/ckpt/$name"
    cp "$d"/model.safetensors "$d"/config.json "$d"/meta.json "$work/pack/ckpt/$name/" 2>/dev/null
done
(cd "$work/pack" && ls -d ckpt/* | split -l 4 - part- && for p in part-*; do tar cf "$out/ckpt-${p#part-}.tar" -T "$p"; done)
ls -la "$out"

#!/usr/bin/env bash
# Issue 14's GPU training checks as one prepared run for a lent NVIDIA machine (one H200, 16 cores; its python3
# has torch with CUDA, accelerate, safetensors, scikit-image, typer, rich; no Ray and no MLflow):
#
#   bash benchmarks/gpu_train.sh OUT_DIR          # about 7-8 minutes; fits one 600 s device call
#
# NOT RUN YET: the task that wrote it had no GPU. Writes 7 files to OUT_DIR (the device tool brings back 8 at most):
#   machine.txt                 GPU, driver, torch, CPU count, load
#   steps.{txt,json}            model-only step time at batch 64, HR 128, x4, precision auto (bf16 on an H200):
#                               l1, fd, and both with channels_last; the two data paths alone (patches/s per core)
#   e2e.{txt,json}              the real training loop (fgdsr.train.train, 15 loader workers): steps/s of l1 and
#                               fd with pyramid_on loader and device
#   packing.{txt,json}          K = 1, 2, 4 trials packed on the one GPU, device path, 16/K cores each: aggregate
#                               steps/s and patches/s, and the ratio to one trial (target >= 1.5x at K = 4);
#                               K = 4 also with the loader path, for contrast
# `fgdsr tune --gpus 1 --gpus-per-trial 1|0.5|0.25` needs Ray and MLflow, which that machine lacks and which do not
# fit the 64 MiB a call may carry; what Ray does for a fractional GPU is start K trial processes that share the
# device with no isolation, each with its --cpus-per-trial cores: the packing step starts exactly those K processes
# (bench_train.py --seconds, after a file barrier, so all K time the same wall-clock window).
#
# Smoke test on a CPU (plumbing only): DEVICE=cpu BATCH=2 PATCH=32 WINDOW=2 CORES=2 \
#   EXTRA="--set depth=1 --set channels=4" bash benchmarks/gpu_train.sh /tmp/gpu-train-smoke
set -uo pipefail
out=${1:?usage: gpu_train.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
window=${WINDOW:-25}    # seconds each e2e / packed measurement lasts (after its warm-up steps)
cores=${CORES:-$(nproc)}
extra=${EXTRA:-}
bench="$py benchmarks/bench_train.py --device $device --batch ${BATCH:-64} --patch ${PATCH:-128} --set precision=auto $extra"
tmp=$(mktemp -d)

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
    echo "cores: $cores ($(grep -m1 'model name' /proc/cpuinfo))"
    uptime
} 2>&1 | tee "$out/machine.txt"

# 1. model-only steps (no loader) and the data paths alone: ~1 min
$bench --steps 10 --variant l1 --variant fd --variant "l1+cl:channels_last=true" \
    --variant "fd+cl:loss=fd,channels_last=true" --loader --samples 128 \
    --json "$out/steps.json" 2>&1 | tee "$out/steps.txt"

# 2. the real loop, one trial with all cores: l1 and fd on both data paths: ~2.5 min
$bench --seconds "$window" --warmup 10 --workers $((cores - 1)) \
    --variant "l1/loader:loss=l1,pyramid_on=loader" --variant "l1/device:loss=l1,pyramid_on=device" \
    --variant "fd/loader:loss=fd,pyramid_on=loader" --variant "fd/device:loss=fd,pyramid_on=device" \
    --json "$out/e2e.json" 2>&1 | tee "$out/e2e.txt"

# 3. K trials packed on the GPU (each a process with cores/K cores, as Ray gives --cpus-per-trial): ~3.5 min
pack() {  # pack K PATH
    local k=$1 path=$2 i w=$(($1 > 0 ? cores / $1 - 1 : 0))
    ((w < 0)) && w=0
    rm -rf "$tmp/barrier-$k-$path"
    for i in $(seq 1 "$k"); do
        $bench --seconds "$window" --warmup 10 --workers "$w" --threads 1 \
            --variant "fd/$path:loss=fd,pyramid_on=$path" --barrier "$tmp/barrier-$k-$path" --barrier-n "$k" \
            --json "$tmp/pack-$k-$path-$i.json" > "$tmp/pack-$k-$path-$i.log" 2>&1 &
    done
    wait
}
for k in 1 2 4; do pack "$k" device; done
pack 4 loader
$py - "$tmp" "$out" <<'EOF' 2>&1 | tee "$out/packing.txt"
import glob, json, os, sys
tmp, out = sys.argv[1], sys.argv[2]
rows = {}
for key in ("1-device", "2-device", "4-device", "4-loader"):
    files = sorted(glob.glob(f"{tmp}/pack-{key}-*.json"))
    runs = [json.load(open(f)) for f in files]
    rates = [next(iter(r["e2e"].values())) for r in runs]
    k = int(key.split("-")[0])
    if len(rates) != k:
        for f in sorted(glob.glob(f"{tmp}/pack-{key}-*.log")):
            print(f"--- {f}\n" + open(f).read()[-1500:])
    rows[key] = {
        "trials": k, "finished": len(rates), "data_path": key.split("-")[1],
        "steps_per_s_each": [round(r["steps_per_s"], 3) for r in rates],
        "aggregate_steps_per_s": sum(r["steps_per_s"] for r in rates),
        "aggregate_patches_per_s": sum(r["patches_per_s"] for r in rates),
        "load_after": [r["load_after"] for r in runs],
    }
one = rows["1-device"]["aggregate_steps_per_s"] or float("nan")
print("| trials | data path | steps/s per trial | aggregate steps/s | aggregate patches/s | x one trial |")
print("|---|---|---|---|---|---|")
for r in rows.values():
    r["ratio_to_one"] = r["aggregate_steps_per_s"] / one
    print(f"| {r['trials']} | {r['data_path']} | {r['steps_per_s_each']} | {r['aggregate_steps_per_s']:.2f} | "
          f"{r['aggregate_patches_per_s']:.0f} | {r['ratio_to_one']:.2f} |")
r4 = rows["4-device"]["ratio_to_one"]
print(f"target: 4 packed trials >= 1.5x one trial's throughput: {r4:.2f}x -> {'met' if r4 >= 1.5 else 'NOT met'}")
json.dump(rows, open(os.path.join(out, "packing.json"), "w"), indent=1)
EOF
uptime | tee -a "$out/machine.txt"
rm -rf "$tmp"

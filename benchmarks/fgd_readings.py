"""Screen the FGD readings (docs/LOSS.md) against l1 on a validation split, paired by seed (CPU scale).

Every run is `fgdsr.train.train` of one base config (default: the tiny LapSRN of fgdsr/configs/tiny.yaml)
with the reading's overrides; runs of one seed share the trunk's initialisation and the data order, so the
difference to l1 at the same seed is a paired comparison. Selection happens here, on `--val` (a hold-out split
of the training pool by default), never on a reported test set.

    .venv/bin/python benchmarks/fgd_readings.py --out runs/readings --seeds 0 1 2 --steps 2000 \
        --reading cs:loss=cs --reading cs_soft:loss=cs,train_decode=soft [--jobs 2]

Writes `<out>/runs.jsonl` (one line per run: reading, seed, val PSNR/SSIM, last logged loss terms, wall time)
and prints, per reading, the mean val PSNR and the paired difference to l1 with its 95 % t-interval over seeds.
Runs already in runs.jsonl are skipped (re-run to extend a screen).

With `--test-set NAME` (repeatable) each run's last checkpoint is also scored image by image on NAME (the SR
protocol: Y, shave = scale), and the summary adds per set the paired Δ vs l1 over seeds × images with the crossed
bootstrap interval of `fgdsr.metrics.compare` (the statistics of `fgdsr reproduce table1`). Needs no Ray and no
MLflow, so it is also the GPU machine's Table 1 driver (`--device cuda --jobs 3`: benchmarks/gpu_table1.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE = {
    "train_dataset": "T91+BSD200:train",
    "val_dataset": "T91+BSD200:val",
    "val_max_images": None,
}


def parse_reading(text: str) -> tuple[str, dict[str, str]]:
    """'name:k=v,k=v' -> (name, {k: v}); list values use ';' (areas=3;5;7)."""
    name, _, rest = text.partition(":")
    pairs = [p for p in rest.split(",") if p]
    return name, {k: v.replace(";", ",") for k, v in (p.split("=", 1) for p in pairs)}


class _LastTerms:
    """Callback: keep the last logged loss terms (means over the last log interval)."""

    def __init__(self) -> None:
        self.terms: dict[str, float] = {}

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        self.terms = dict(logs)


def test_scores(checkpoint: Path, sets: list[str], data_root: str | None, device: str) -> dict[str, dict]:
    """set -> image -> PSNR (dB) of a checkpoint, by the protocol of `fgdsr evaluate`."""
    from fgdsr.checkpoint import load_model
    from fgdsr.evaluate import evaluate
    from fgdsr.inference import ModelUpscaler

    model, cfg, _ = load_model(checkpoint)
    res = evaluate({"m": ModelUpscaler(model.eval(), cfg.scale, device)}, sets, [cfg.scale], data_root)
    return {r["dataset"]: {im["name"]: float(im["psnr"]) for im in r["images"]} for r in res["results"]}


def run_one(job: dict) -> dict:
    """Train one (reading, seed) and return its record (runs in a worker process; on CPU one torch thread)."""
    import torch

    if job["device"] == "cpu":
        torch.set_num_threads(1)
    from accelerate import Accelerator

    from fgdsr.config import load_config
    from fgdsr.train import train

    overrides = {**BASE, **job["base"], **job["overrides"], "seed": job["seed"], "max_steps": job["steps"]}
    overrides["val_every"] = job["steps"]
    cfg = load_config(job["config"], overrides)
    logger = _LastTerms()
    t0 = time.perf_counter()
    acc = Accelerator(cpu=job["device"] == "cpu")
    res = train(cfg, job["dir"], callbacks=[logger], accelerator=acc, progress=False)
    last = res.history[-1]
    wall = time.perf_counter() - t0
    tests = (
        test_scores(res.last_checkpoint, job["test_sets"], job["data_root"], job["device"])
        if job["test_sets"]
        else {}
    )
    return {"reading": job["reading"], "seed": job["seed"], "steps": job["steps"], "overrides": job["overrides"],
            "val_psnr": last["val_psnr"], "val_ssim": last["val_ssim"], "terms": logger.terms,
            "wall_s": wall, "tests": tests}  # fmt: skip


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of paired differences (n >= 2)."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(records: list[dict]) -> str:
    by = {}
    for r in records:
        by.setdefault(r["reading"], {})[r["seed"]] = r
    base = by.get("l1", {})
    lines = [
        f"{'reading':24s} {'n':>2s} {'val PSNR':>9s} {'Δ vs l1':>8s}  95 % CI (paired t)   bin_acc  area"
    ]
    for name, runs in by.items():
        psnr = sum(r["val_psnr"] for r in runs.values()) / len(runs)
        common = sorted(set(runs) & set(base))
        diffs = [runs[s]["val_psnr"] - base[s]["val_psnr"] for s in common]
        mean, lo, hi = t_interval(diffs) if diffs else (float("nan"),) * 3
        acc = [r["terms"].get("bin_acc") for r in runs.values() if "bin_acc" in r["terms"]]
        area = [r["terms"].get("area") for r in runs.values() if "area" in r["terms"]]
        acc_s = f"{sum(acc) / len(acc):.3f}" if acc else "-"
        area_s = f"{sum(area) / len(area):.2f}" if area else "-"
        lines.append(
            f"{name:24s} {len(runs):2d} {psnr:9.3f} {mean:+8.3f}  [{lo:+.3f}, {hi:+.3f}]   {acc_s:>7s}  {area_s}"
        )
    return "\n".join(lines + test_summary(by))


def test_summary(by: dict[str, dict[int, dict]]) -> list[str]:
    """Per test set and reading: mean PSNR and the paired Δ vs l1 over seeds × images [crossed-bootstrap 95 % CI]."""
    import numpy as np

    from fgdsr.metrics.compare import paired_delta

    base = by.get("l1", {})
    sets = sorted({ds for runs in by.values() for r in runs.values() for ds in r.get("tests", {})})
    lines = []
    for ds in sets:
        lines.append(
            f"\n{ds}: {'reading':20s} {'n':>2s} {'PSNR':>7s} {'Δ vs l1':>8s}  95 % CI (seeds × images)"
        )
        for name, runs in by.items():
            seeds = sorted(
                s
                for s, r in runs.items()
                if ds in r.get("tests", {}) and ds in base.get(s, {}).get("tests", {})
            )
            if not seeds:
                continue
            images = sorted(runs[seeds[0]]["tests"][ds])
            a = np.array([[runs[s]["tests"][ds][i] for i in images] for s in seeds])
            b = np.array([[base[s]["tests"][ds][i] for i in images] for s in seeds])
            d = paired_delta(a, b) if name != "l1" else None
            ci = f"{d.mean:+8.3f}  [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]" if d else f"{'—':>8s}"
            lines.append(f"{'':{len(ds) + 2}s}{name:20s} {len(seeds):2d} {a.mean():7.3f} {ci}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/readings")
    ap.add_argument("--config", default=None, help="base TrainConfig YAML (default: fgdsr/configs/tiny.yaml)")
    ap.add_argument(
        "--set", action="append", default=[], help="k=v for every run (e.g. max_steps is --steps)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--reading", action="append", default=[], help="name:k=v,k=v (l1 is always included)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the jobs share the GPU")
    ap.add_argument(
        "--test-set", action="append", default=[], help="score each run's last checkpoint on NAME"
    )
    ap.add_argument("--data-root", default=None, help="where the test sets live (default: FGDSR_DATA_ROOT)")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    have = {(r["reading"], r["seed"], r["steps"]) for r in done}
    base = dict(kv.split("=", 1) for kv in args.set)
    readings = [("l1", {"loss": "l1"}), *(parse_reading(r) for r in args.reading)]
    jobs = [
        {
            "reading": name,
            "overrides": ov,
            "seed": seed,
            "steps": args.steps,
            "config": args.config,
            "base": base,
            "device": args.device,
            "test_sets": args.test_set,
            "data_root": args.data_root,
            "dir": str(out / f"{name}-s{seed}-{args.steps}"),
        }  # fmt: skip
        for seed in args.seeds
        for name, ov in readings
        if (name, seed, args.steps) not in have
    ]
    if jobs and not args.summary_only:
        print(f"{len(jobs)} runs, {args.jobs} at a time (load {os.getloadavg()[0]:.1f})", flush=True)
        with ProcessPoolExecutor(args.jobs) as pool:
            for rec in pool.map(run_one, jobs):
                done.append(rec)
                with log.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"  {rec['reading']:24s} seed {rec['seed']}  {rec['val_psnr']:.3f} dB  "
                      f"{rec['wall_s']:.0f} s", flush=True)  # fmt: skip
    print(summarise([r for r in done if r["steps"] == args.steps]))


if __name__ == "__main__":
    main()

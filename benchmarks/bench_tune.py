"""Ray Tune overhead per trial: one trial through `fgdsr tune` vs plain `fgdsr.train` on the same config.

    .venv/bin/python benchmarks/bench_tune.py [--steps 150] [--config fgdsr/configs/tune-demo.yaml]

Measured in one run, in this order: (1) plain `train(cfg)` in this process (warm imports, like `fgdsr train`
after start-up), (2) a 1-trial sweep (`run_sweep`, `--gpus 0`, FIFO, no search) that starts Ray, runs the trial
in a Ray worker with MLflow logging and a Tune checkpoint per validation, then exports + registers the best.
Reported: the trial's wall time inside Tune (Ray worker start + imports + MLflow run + training + reports),
the sweep's fixed costs (Ray start/stop, MLflow store init, export), and the overhead as a share of the trial.
The fixed part of the overhead does not grow with the trial, so the share for a trial of a few minutes is
extrapolated as overhead / (overhead + T) and printed next to the measured one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "fgdsr" / "configs" / "tune-demo.yaml"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--val-every", type=int, default=50)
    args = ap.parse_args()

    import torch

    from fgdsr.config import load_config
    from fgdsr.train import train
    from orchestrator import tracking
    from orchestrator.plan import TuneOptions, make_plan
    from orchestrator.tune import run_sweep

    overrides = {"max_steps": args.steps, "val_every": args.val_every}
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        tmp = Path(tmp)
        # (1) plain training, same config, warm imports, 1 torch thread like a 1-CPU Ray trial
        # (Ray sets OMP_NUM_THREADS=1 there); run before and after the sweep to expose load drift
        torch.set_num_threads(1)

        def plain_run(tag: str) -> tuple[float, object]:
            t0 = time.perf_counter()
            res = train(cfg, tmp / f"plain-{tag}", progress=False)
            return time.perf_counter() - t0, res

        plain_before_s, plain = plain_run("before")

        # (2) the same config as a 1-trial sweep: a space with one constant field (loss) -> one trial
        (tmp / "space.yaml").write_text(f"space:\n  loss: {cfg.loss}\n")
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        t_store = time.perf_counter()
        tracking.init_experiment(uri, "bench")  # MLflow schema creation, timed on its own
        store_s = time.perf_counter() - t_store
        opts = TuneOptions(
            config=args.config,
            space=str(tmp / "space.yaml"),
            gpus=0,
            num_samples=1,
            search="random",
            scheduler="fifo",
            out=str(tmp / "tune"),
            tracking_uri=uri,
            experiment="bench",
            overrides=overrides,
            num_cpus=os.cpu_count(),
        )
        t0 = time.perf_counter()
        result = run_sweep(make_plan(opts))  # the plan (config read, space parsed) is timed too
        sweep_s = time.perf_counter() - t0
        (trial,) = result.trials
        c = tracking.client(uri)
        run = c.get_run(trial.mlflow_run_id)
        # the trial from its MLflow run's start (after the worker started and imported) to its end
        run_s = (run.info.end_time - run.info.start_time) / 1000.0
        df = None
        try:
            from ray.tune import ExperimentAnalysis

            df = ExperimentAnalysis(result.plan.experiment_path).dataframe()
        except Exception:
            pass
        trial_total_s = float(df["time_total_s"].iloc[0]) if df is not None and "time_total_s" in df else None
        plain_after_s, _ = plain_run("after")
    plain_s = (plain_before_s + plain_after_s) / 2

    overhead_trial = (trial_total_s or run_s) - plain_s
    out = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["benchmarks/bench_tune.py", *sys.argv[1:]]),
        "steps": args.steps,
        "validations": len(plain.history),
        "plain_train_before_s": round(plain_before_s, 2),
        "plain_train_after_s": round(plain_after_s, 2),
        "plain_train_mean_s": round(plain_s, 2),
        "overhead_vs_plain_sweep_s": round(sweep_s - plain_s, 2),
        "tune_trial_time_total_s": round(trial_total_s, 2) if trial_total_s else None,
        "mlflow_run_s": round(run_s, 2),
        "sweep_wall_s": round(sweep_s, 2),
        "mlflow_store_init_s": round(store_s, 2),
        "overhead_per_trial_s": round(overhead_trial, 2),
        "overhead_per_trial_pct": round(100 * overhead_trial / plain_s, 1),
        "sweep_fixed_s": round(sweep_s - (trial_total_s or run_s), 2),
        "extrapolated_pct_for_3min_trial": round(100 * overhead_trial / 180.0, 2),
        "extrapolated_pct_for_10min_trial": round(100 * overhead_trial / 600.0, 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

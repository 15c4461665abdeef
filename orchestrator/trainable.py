"""What runs inside a Ray Tune trial: `fgdsr.train` with a callback that reports to Tune and MLflow.

One GPU, a fraction of one, or none: `trial_main` trains in the trial's own process with
`Accelerator(cpu=not ray.get_gpu_ids())`. Several GPUs per trial: `trial_main` drives a Ray Train
`TorchTrainer` whose workers run Accelerate (Ray's documented Accelerate pattern); rank 0 tracks in MLflow,
and Ray's `TuneReportCallback` forwards the workers' reports to this trial.

Tune sees one report per validation (`step`, `val_psnr`, `val_ssim`, the last loss terms) carrying the
fgdsr checkpoint directory; MLflow sees every logged step. The trial's MLflow run id is written into the
checkpoint's meta.json (`mlflow_run_id`), so a trial restarted on another node, or restored by
`fgdsr tune --resume`, continues the same run (from the step after the last one it holds).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.plan import TrialContext

RUN_ID_KEY = "mlflow_run_id"


def _read_meta(ckpt_dir: Path) -> dict[str, Any]:
    meta_file = ckpt_dir / "meta.json"
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


class TuneReporter:
    """An fgdsr training callback: MLflow metrics every logged step, one Tune report per validation.

    `report(metrics, checkpoint_dir)` is `tune.report` in a trial, `ray.train.report` in a Train worker.
    A validation and its checkpoint are reported together; fgdsr calls `on_validation` then `on_checkpoint`
    for the same step, and a validation without a checkpoint is reported at the next step.
    """

    def __init__(self, run, report, rank0: bool = True) -> None:
        self.run = run  # tracking.TrialRun or None (non-zero ranks)
        self.report = report
        self.rank0 = rank0
        self.last_logs: dict[str, float] = {}
        self.pending: tuple[int, dict[str, float]] | None = None
        self.reports = 0
        self.t0 = time.perf_counter()

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        if self.pending is not None and step > self.pending[0]:
            self._send(None)
        self.last_logs = {f"train/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        if self.run is not None:
            self.run.log_metrics(step, logs)

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        if self.pending is not None:
            self._send(None)
        self.pending = (step, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        if self.run is not None:
            self.run.log_metrics(step, metrics)
            self.run.flush()  # validation is when people look at the UI

    def on_checkpoint(self, step: int, path: Path) -> None:
        path = Path(path)
        if self.pending is not None and self.pending[0] == step:
            self._send(path if self.rank0 else None)

    def finish(self) -> None:
        """Report a validation still waiting for its checkpoint."""
        if self.pending is not None:
            self._send(None)

    def _send(self, ckpt: Path | None) -> None:
        step, metrics = self.pending
        self.pending = None
        self.reports += 1
        out = {"step": step, **metrics, **self.last_logs, "trial_time_s": time.perf_counter() - self.t0}
        self.report(out, ckpt)


def _gpu_facts() -> dict[str, str]:
    import ray
    import torch

    return {
        "ray_gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "cuda_available": str(torch.cuda.is_available()),
        "node": socket.gethostname(),
        "node_ip": ray.util.get_node_ip_address(),
        "ray_node_id": ray.get_runtime_context().get_node_id(),
    }


def _restore(ckpt, work: Path) -> tuple[bool, dict[str, Any]]:
    """Put Tune's checkpoint where `fgdsr.train(resume=True)` looks; returns (resume, its meta.json)."""
    from fgdsr.train import RESUME_DIR  # "last": where train(resume=True) looks

    if ckpt is None:
        return False, {}
    target = work / RESUME_DIR
    with ckpt.as_directory() as d:
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(d, target)
    return True, _read_meta(target)


def _open_run(
    ctx: TrialContext, trial_id: str, sampled: dict[str, Any], cfg, meta: dict, tags: dict[str, str]
):
    """The trial's MLflow child run (reopened when the checkpoint or its trial tag names one)."""
    from orchestrator.tracking import TrialRun

    tags = {"variant": cfg.loss, "trial_id": trial_id, **tags}
    return TrialRun(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, trial_id, meta.get(RUN_ID_KEY),
                    run_name=ctx.run_name(sampled, cfg.loss), params=cfg.to_dict(), tags=tags)  # fmt: skip


def _train(
    cfg, work: Path, reporter: TuneReporter, resume: bool, accelerator, run_id: str | None, trial_id: str
):
    from fgdsr.train import train

    meta = {RUN_ID_KEY: run_id, "tune_trial_id": trial_id}
    train(cfg, work, callbacks=[reporter], resume=resume, accelerator=accelerator, progress=False, meta=meta)
    reporter.finish()


def trial_main(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable. `config` = this trial's sampled fields; `ctx` = the sweep's fixed context."""
    from ray import tune

    tctx = tune.get_context()
    trial_id = tctx.get_trial_id()
    if ctx.resources.workers_per_trial > 1:
        return _trial_with_torch_trainer(config, ctx, trial_id)

    import ray

    from fgdsr.train import make_accelerator
    from orchestrator import tracking
    from orchestrator.credentials import load_in_worker

    load_in_worker()  # the MLflow login, when the worker did not inherit it (orchestrator/credentials.py)
    cfg = ctx.config(config)
    work = Path(tctx.get_trial_dir()) / "train"
    resume, meta = _restore(tune.get_checkpoint(), work)
    run = _open_run(ctx, trial_id, config, cfg, meta, {"trial_name": tctx.get_trial_name(), **_gpu_facts()})
    if resume:  # restarted after a node failure or restored by `fgdsr tune --resume`
        tracking.log_batch(run.client, run.run_id, tags={"resumed_from_step": meta.get("step", "?")})

    def report(metrics: dict[str, Any], ckpt: Path | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(ckpt)) if ckpt else None)

    status = "FAILED"
    try:
        # Logical or real GPU ids from Ray -> ask for the GPU; Accelerate falls back to CPU when none is real.
        accelerator = make_accelerator(cfg, cpu=not ray.get_gpu_ids())
        tracking.log_batch(run.client, run.run_id, tags={"device": accelerator.device})
        _train(cfg, work, TuneReporter(run, report), resume, accelerator, run.run_id, trial_id)
        status = "FINISHED"
    except SystemExit:
        status = "FINISHED"  # Tune stopped the trial (ASHA) at a report: a normal end
        raise
    finally:
        run.end(status)


# ----------------------------------------------------------------------------- several GPUs per trial


def _trial_with_torch_trainer(config: dict[str, Any], ctx: TrialContext, trial_id: str) -> None:
    """Drive a Ray Train `TorchTrainer` (data parallel, Accelerate in each worker) from this trial."""
    from ray import train as ray_train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = ctx.resources
    loop_config = {
        "sampled": config,
        "ctx": ctx,
        "trial_id": trial_id,
        "trial_name": tune.get_context().get_trial_name(),
    }
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=loop_config,
        scaling_config=ray_train.ScalingConfig(
            num_workers=res.workers_per_trial,
            use_gpu=res.use_gpu,
            resources_per_worker={"CPU": float(res.cpus_per_trial), **({"GPU": 1} if res.use_gpu else {})},
        ),
        run_config=ray_train.RunConfig(
            name=f"_train-{trial_id}",  # Train's own checkpoints, on the sweep's (shared) storage
            storage_path=ctx.storage,
            callbacks=[TuneReportCallback()],
        ),
        resume_from_checkpoint=tune.get_checkpoint(),
    )
    trainer.fit()


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: Accelerate on the process group Ray set up; rank 0 logs to MLflow."""
    import ray.train as ray_train

    from fgdsr.train import make_accelerator
    from orchestrator import tracking
    from orchestrator.credentials import load_in_worker

    load_in_worker()  # the MLflow login, when the worker did not inherit it (orchestrator/credentials.py)
    ctx: TrialContext = loop_config["ctx"]
    trial_id = loop_config["trial_id"]
    rank = ray_train.get_context().get_world_rank()
    cfg = ctx.config(loop_config["sampled"])
    # each rank restores the checkpoint into its own folder (train(resume=True) reads it on every rank)
    work = Path(tempfile.gettempdir()) / f"fgdsr-{trial_id}-rank{rank}"
    resume, meta = _restore(ray_train.get_checkpoint(), work)
    run = None
    if rank == 0:
        tags = {
            "trial_name": loop_config["trial_name"],
            "workers": str(ray_train.get_context().get_world_size()),
        }
        run = _open_run(ctx, trial_id, loop_config["sampled"], cfg, meta, tags)

    def report(metrics: dict[str, Any], ckpt: Path | None) -> None:
        # every worker reports (a barrier in Ray Train); only rank 0 attaches the checkpoint
        ray_train.report(metrics, checkpoint=ray_train.Checkpoint.from_directory(str(ckpt)) if ckpt else None)

    status = "FAILED"
    try:
        # use_gpu False -> CPU workers that really synchronise through gloo (Accelerate's MULTI_CPU)
        accelerator = make_accelerator(cfg, cpu=not ctx.resources.use_gpu)
        if run is not None:  # proof that the workers form one process group (MULTI_CPU / MULTI_GPU)
            kind = getattr(accelerator.distributed_type, "value", accelerator.distributed_type)
            tracking.log_batch(
                run.client, run.run_id, tags={"accelerate": f"{kind}x{accelerator.num_processes}"}
            )
        reporter = TuneReporter(run, report, rank0=rank == 0)
        _train(cfg, work, reporter, resume, accelerator, run.run_id if run else None, trial_id)
        status = "FINISHED"
    finally:
        if run is not None:
            run.end(status)

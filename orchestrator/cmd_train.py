"""`fgdsr train` and `fgdsr upscale`: thin wrappers over fgdsr.train and fgdsr.upscale.

Nothing heavy is imported at module level (torch, accelerate come in when the command runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fgdsr.errors import UserError


def train(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML config (default: the shipped tiny CPU config on built-in data)."
    ),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        "-s",
        help="Override a config field, key=value (repeatable): --set loss=fd --set lr=2e-4.",
    ),
    out: Path = typer.Option(
        Path("runs/train"), "--out", "-o", help="Run folder: checkpoints best/ and last/."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT/last (exact: optimizer, RNG, data)."
    ),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="Start from the weights of this checkpoint (same as --set init_from=PATH)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="Track the run in MLflow (sqlite:////abs/mlflow.db, http://HOST:PORT): params, losses, "
        "validation, crop grids. Default: not tracked.",
    ),
    experiment: str | None = typer.Option(
        None, "--experiment", help="MLflow experiment (default fgdsr-train); implies tracking."
    ),
) -> None:
    """Train one config (LapSRN + l1/cs/fd/aux) with Accelerate; writes OUT/best and OUT/last.

    SIGTERM or Ctrl-C writes a training checkpoint at the next step and exits with code 75; --resume continues.
    """
    from fgdsr.config import load_config, parse_set_args

    overrides = parse_set_args(set_)
    if init_from is not None:
        if not init_from.is_dir():
            raise UserError(
                f"--init-from {init_from}: not a checkpoint directory; pass a folder like runs/x/best"
            )
        overrides["init_from"] = str(init_from)
    cfg = load_config(config, overrides)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose another --out")
    if resume and not (out / "last" / "training_state.pt").is_file():
        raise UserError(f"--out {out}: no training checkpoint in last/ to resume; run without --resume first")
    if not resume and (out / "last").exists():
        raise UserError(
            f"--out {out}: already holds a run (last/); add --resume to continue it or choose another --out"
        )

    from fgdsr.preemption import PREEMPTED_EXIT_CODE
    from fgdsr.train import train as run_train

    tracker = None
    # under `accelerate launch` every process runs this command: only rank 0 tracks
    if (tracking_uri is not None or experiment is not None) and os.environ.get("RANK", "0") == "0":
        from orchestrator.train_tracking import DEFAULT_EXPERIMENT, TrainTracker

        tracker = TrainTracker.start(tracking_uri, experiment or DEFAULT_EXPERIMENT, cfg, out, resume)
    name = config.name if config else "tiny.yaml (built-in)"
    typer.echo(f"train: {name}, loss={cfg.loss}, x{cfg.scale}, {cfg.max_steps} steps -> {out}")
    callbacks = [_SayPrecision()] + ([tracker] if tracker else [])
    status = "FAILED"
    try:
        result = run_train(
            cfg,
            out,
            callbacks=callbacks,
            resume=resume,
            progress=not quiet,
            meta=tracker.meta if tracker else None,
            handle_signals=True,
        )
        status = "KILLED" if result.preempted else "FINISHED"
    finally:
        if tracker is not None:
            tracker.end(status)
    if result.preempted:
        typer.echo(
            f"stopped by {result.preempted} at step {result.final_step}: training checkpoint {result.last_checkpoint}; "
            f"continue with --resume --out {out} (exit {PREEMPTED_EXIT_CODE})"
        )
        raise typer.Exit(PREEMPTED_EXIT_CODE)
    best = (
        f"{result.best_val_psnr:.2f} dB at step {result.best_step}"
        if result.best_val_psnr is not None
        else "-"
    )
    typer.echo(
        f"done: step {result.final_step}, best val PSNR ({cfg.val_dataset}) {best}, "
        f"{result.wall_time_s:.1f} s; best: {result.best_checkpoint}, last: {result.last_checkpoint}"
    )


class _SayPrecision:
    """A training callback: one line naming the precision the run uses and why (fgdsr/precision.py)."""

    def on_start(self, info) -> None:
        if info.main:
            typer.echo(f"precision: {info.precision.name} ({info.precision.reason}), device {info.device}")


def upscale(
    images: list[Path] = typer.Argument(..., help="Image files to upscale (PNG, JPEG, BMP, TIFF; any size)."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Checkpoint directory (for example runs/train/best)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; files are named <stem>_x<scale>.png."),
    scale: int | None = typer.Option(
        None, "--scale", help="Default: the checkpoint's scale (LapSRN on torch: or a lower level)."
    ),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | tensorrt."),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 | fp16 (fp16: bad tiles redone in fp32)."
    ),
    tile: int = typer.Option(256, "--tile", help="Tile size in LR pixels (bounds memory); 0 = whole image."),
    overlap: int = typer.Option(32, "--overlap", help="LR context pixels around each tile."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ... (tensorrt: cuda)."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Tile graphs/engines (default: <checkpoint>.deploy beside the checkpoint)."
    ),
    fp16_fallback: bool = typer.Option(
        True, "--fp16-fallback/--no-fp16-fallback", help="Recompute a non-finite/saturated fp16 tile in fp32."
    ),
) -> None:
    """Upscale photos with a trained checkpoint: colour kept (CbCr bicubic), alpha kept, 16-bit kept as TIFF."""
    from fgdsr.upscale import TileGuard, TilePlan, UpscaleJob, check_inputs, upscale_images
    from trt.tile_runner import RunnerSpec, open_runners

    check_inputs(images, TilePlan(tile, overlap))  # a typo fails before any model is loaded

    def say(text: str) -> None:
        typer.echo(f"upscale: {text}", err=True)

    spec = RunnerSpec(checkpoint, backend, precision, scale, device, cache_dir, on_event=say)
    runners = open_runners(spec)
    guard = TileGuard(
        runners.fallback if fp16_fallback else None,
        lambda bad: say(f"{bad.where}: {bad.runner} {bad.reason}; recomputed in fp32"),
    )
    plan = TilePlan(tile, overlap, runners.align)
    job = UpscaleJob(out, runners.scale, plan, guard, lambda src, dst: typer.echo(f"{src} -> {dst}"))
    try:
        upscale_images(images, runners.runner, job)
    finally:
        for r in (runners.runner, runners.fallback):
            if hasattr(r, "close"):
                r.close()

"""`fgdsr pipeline` (tune → best → ONNX → engine → benchmark → evaluate → report) and `fgdsr reproduce`.

Thin Typer layer: options are parsed here, the work happens in `orchestrator.pipeline` and
`orchestrator.reproduce`, imported inside the functions so `fgdsr --help` stays fast.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from fgdsr.errors import UserError


def pipeline(
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Pipeline YAML (train/space/tune/eval/benchmark); default: the shipped CPU demo.",
    ),
    space: Path | None = typer.Option(
        None, "--space", help="Search-space YAML replacing the config's space."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a training field: --set lr=2e-4."),
    gpus: float | None = typer.Option(None, "--gpus", help="GPUs for the sweep (0: CPU trials)."),
    gpus_per_trial: float | None = typer.Option(
        None, "--gpus-per-trial", help="GPUs per trial (fractions pack)."
    ),
    num_samples: int | None = typer.Option(
        None, "--num-samples", help="Slots: each variant runs once per slot, on the same sampled settings."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Training steps per trial."),
    search: str | None = typer.Option(None, "--search", help="optuna | random | grid."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="asha | fifo."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT."),
    storage: str | None = typer.Option(
        None, "--storage", help="Ray Tune storage (shared path or s3:// on clusters)."
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment name."),
    backend: str = typer.Option("auto", "--backend", help="auto | tensorrt | onnxruntime | torch."),
    eval_dataset: list[str] | None = typer.Option(
        None, "--eval-dataset", help="Data set(s) to evaluate on (repeat); default from the config."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder with the standard data sets."),
    out: Path = typer.Option(
        Path("runs/pipeline"), "--out", help="Output folder (report.md, figures, models)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Ray/MLflow/Optuna logs on the terminal (default: <out>/fgdsr.log)."
    ),
) -> None:
    """The whole job: tune, pick the best FGD and baseline trials, export, benchmark, evaluate, report."""
    import dataclasses

    from orchestrator.pipeline import PipelineOptions, run_pipeline
    from orchestrator.pipeline_config import load_pipeline_config

    if backend not in ("auto", "tensorrt", "onnxruntime", "torch"):
        raise UserError(f"--backend: unknown '{backend}'; use auto, tensorrt, onnxruntime or torch")
    from fgdsr.config import parse_set_args

    pcfg = load_pipeline_config(config, space=space, overrides=parse_set_args(set_))
    tune_overrides = {
        "gpus": gpus,
        "gpus_per_trial": gpus_per_trial,
        "num_samples": num_samples,
        "max_steps": max_steps,
        "search": search,
        "scheduler": scheduler,
        "address": address,
        "storage": storage,
    }
    pcfg = dataclasses.replace(
        pcfg, tune={**pcfg.tune, **{k: v for k, v in tune_overrides.items() if v is not None}}
    )
    opts = PipelineOptions(
        config=pcfg,
        out=out,
        backend=backend,
        eval_datasets=tuple(eval_dataset) if eval_dataset else None,
        data_root=str(data_root) if data_root else None,
        tracking_uri=tracking_uri,
        experiment=experiment,
        verbose=verbose,
    )
    run_pipeline(opts)


def reproduce(
    table: str = typer.Argument(..., help="table1 | table2"),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Folder with Set5/Set14/BSD100/Urban100…"
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/reproduce-<table>)."),
    budget_minutes: float | None = typer.Option(
        None, "--budget-minutes", help="table1: training minutes per run (measured speed -> steps)."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="table1: training steps per run (instead of minutes)."
    ),
    budget: str = typer.Option(
        "steps", "--budget", help="table1: steps (every arm the same steps) | time (the same minutes)."
    ),
    reading: list[str] | None = typer.Option(
        None, "--reading", help="table1: an extra arm NAME:field=value[,field=value] (repeatable)."
    ),
    test_set: list[str] | None = typer.Option(
        None, "--test-set", help="table1: an extra test set beyond Set5/Set14/BSD100/Urban100 (repeatable)."
    ),
    seeds: int = typer.Option(1, "--seeds", help="table1: seeds per variant (mean ± spread)."),
    gpus: float = typer.Option(0, "--gpus", help="table1: GPUs for the sweep (0: CPU)."),
    gpus_per_trial: float | None = typer.Option(None, "--gpus-per-trial", help="table1: GPUs per trial."),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="table1: checkpoint every run starts from."
    ),
    config: Path | None = typer.Option(None, "--config", help="table1: training YAML (default lapsrn.yaml)."),
    set_: list[str] | None = typer.Option(
        None, "--set", help="table1: override a training field (key=value)."
    ),
    train_dataset: str | None = typer.Option(
        None, "--train-dataset", help="table1: e.g. T91+BSD200 or DIV2K."
    ),
    variants: str = typer.Option("l1,cs,fd,aux", "--variants", help="table1: comma-separated loss variants."),
    resume: bool = typer.Option(False, "--resume", help="table1: finish an interrupted run in --out."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment name."),
    no_track: bool = typer.Option(False, "--no-track", help="table2: do not log to MLflow."),
    json_: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """The paper's Table 1 (ablation, trained here) or Table 2 (bicubic + complexity) next to what this code measures."""
    import json

    from orchestrator import reproduce as rep

    if table == "table2":
        result = rep.reproduce_table2(
            data_root=str(data_root) if data_root else None,
            out=out or Path("runs/reproduce-table2"),
            tracking_uri=tracking_uri,
            experiment=experiment,
            track=not no_track,
            quiet=json_,
        )
    elif table == "table1":
        if seeds < 1:
            raise UserError("--seeds: at least 1")
        from fgdsr.config import parse_set_args
        from orchestrator.table1 import Table1Options, parse_reading, reproduce_table1

        result = reproduce_table1(
            Table1Options(
                budget_minutes=budget_minutes,
                steps=steps,
                budget=budget,
                readings=tuple(parse_reading(r) for r in reading or []),
                test_sets=tuple(test_set or []),
                seeds=seeds,
                gpus=gpus,
                gpus_per_trial=gpus_per_trial,
                init_from=str(init_from) if init_from else None,
                config=config,
                overrides=parse_set_args(set_),
                train_dataset=train_dataset,
                variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
                data_root=str(data_root) if data_root else None,
                out=out or Path("runs/reproduce-table1"),
                resume=resume,
                tracking_uri=tracking_uri,
                experiment=experiment,
                quiet=json_,
                command_line=shlex.join(["fgdsr", *sys.argv[1:]]),
            )
        ).to_dict()
    else:
        raise UserError(f"reproduce: unknown table '{table}'; use table1 or table2")
    if json_:
        typer.echo(json.dumps(result, indent=2, default=str))

"""`fgdsr reproduce table1`: Baseline (l1), +CS, +FD (and aux) trained with the same budget, evaluated, reported.

plan (`plan_table1`: the variants, the budget measured as a step count on this machine, kept in
`<out>/table1-state.json` for `--resume`) → sweep (`orchestrator.tune`, grid over variant × seed, FIFO, so trials
pack on the GPUs and `--resume` finishes an interrupted run) → evaluate (every finished trial on
Set5/Set14/BSD100/Urban100, those present; every image's PSNR/SSIM kept) → `Table1Result` → render
(`table1.md`, `table1.json`, the sweep's MLflow parent run).

`Table1Result.scores` holds PSNR and SSIM per (variant, seed, data set, image): what a paired comparison over
images × seeds needs; `table` is the mean ± sample standard deviation over seeds of each trial's set mean.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.errors import UserError
from orchestrator.report import fmt_signed, md_table, write_text_atomic
from orchestrator.reproduce import PAPER_TABLE1, markdown_for_terminal, present_sets

VARIANTS = ("l1", "cs", "fd", "aux")
TABLE1_NAMES = {"l1": "Baseline", "cs": "+CS Loss", "fd": "+FD Loss", "aux": "+aux (ours)"}


@dataclass(frozen=True)
class Table1Options:
    """What `fgdsr reproduce table1` takes (CLI flags map 1:1)."""

    budget_minutes: float
    seeds: int = 1
    gpus: float = 0
    gpus_per_trial: float | None = None
    init_from: str | None = None
    config: str | Path | None = None  # None: fgdsr/configs/lapsrn.yaml
    overrides: dict[str, Any] = field(default_factory=dict)
    train_dataset: str | None = None
    variants: tuple[str, ...] = VARIANTS
    data_root: str | None = None
    out: Path = Path("runs/reproduce-table1")
    resume: bool = False
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False
    calibration_s: float = 8.0
    command_line: str = ""


@dataclass(frozen=True)
class Table1State:
    """`<out>/table1-state.json`: the budget as a step count, fixed when the run starts (a resume reuses it)."""

    max_steps: int
    steps_per_s: dict[str, float]
    budget_minutes: float
    seeds: int
    variants: tuple[str, ...]
    config: str
    overrides: dict[str, Any]
    command: str


@dataclass(frozen=True)
class ImageScore:
    """One image of one test set, scored for one trained model."""

    variant: str
    seed: int
    dataset: str
    image: str
    psnr: float  # dB, Y, shave = scale
    ssim: float
    trial_id: str = ""


@dataclass(frozen=True)
class Table1Trial:
    """One trained model (variant × seed) and its set means."""

    trial_id: str
    variant: str
    seed: int = 0
    steps: int = 0
    psnr: dict[str, float | None] = field(default_factory=dict)  # data set -> mean PSNR (dB)
    ssim: dict[str, float | None] = field(default_factory=dict)
    checkpoint: str | None = None
    mlflow_run_id: str | None = None


@dataclass(frozen=True)
class Table1Result:
    info: dict[str, Any]  # command, machine, date, wall time, data, model, budget
    sets: tuple[str, ...]
    data_root: str
    trials: tuple[Table1Trial, ...]
    scores: tuple[ImageScore, ...]  # per (variant, seed, data set, image)
    table: dict[str, dict[str, Any]]  # variant -> set -> mean, std, n, values, paper, diff
    parent_run_id: str | None = None
    tracking_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """`table1.json` (and `--json`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["trials"] = [dataclasses.asdict(t) for t in self.trials]
        out["scores"] = [dataclasses.asdict(s) for s in self.scores]
        out["sets"], out["paper"] = list(self.sets), PAPER_TABLE1
        return out


# ------------------------------------------------------------------------------------------------ plan


class _RateProbe:
    """fgdsr.train callback: records it/s from the step logs and stops training after `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.rates, self.t0 = seconds, [], None

    def on_step(self, step: int, logs: dict[str, float]) -> bool:
        self.t0 = self.t0 or time.perf_counter()
        if "it_per_s" in logs:
            self.rates.append(float(logs["it_per_s"]))
        return time.perf_counter() - self.t0 > self.seconds and len(self.rates) >= 3

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        return None

    def on_checkpoint(self, step: int, path: Path) -> None:
        return None


def calibrate_steps(base, variants, seconds: float = 8.0, threads: int | None = None) -> dict[str, float]:
    """Training speed (steps/s, median of the logged rates after the first) of each variant on this machine.

    Runs `fgdsr.train` for about `seconds` per variant in a temp folder (CPU: with `threads` torch threads, what
    one trial gets; GPU: the first GPU), so the budget in minutes maps to a step count before the sweep starts.
    """
    import tempfile

    import torch

    from fgdsr.train import train

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    rates = {}
    try:
        for v in variants:
            probe = _RateProbe(seconds)
            cfg = base.replace(
                loss=v, max_steps=10**7, log_every=5, val_every=10**7, val_max_images=1, init_from=None
            )
            with tempfile.TemporaryDirectory(prefix="fgdsr-calib-") as d:
                train(cfg, d, callbacks=[probe], progress=False)
            usable = probe.rates[1:] or probe.rates
            rates[v] = float(statistics.median(usable)) if usable else float("nan")
    finally:
        torch.set_num_threads(old)
    return rates


def _overrides(opts: Table1Options) -> dict[str, Any]:
    ovr = dict(opts.overrides)
    if opts.train_dataset:
        ovr["train_dataset"] = opts.train_dataset
    if opts.init_from:
        if not Path(opts.init_from).is_dir():
            raise UserError(f"--init-from {opts.init_from}: not a checkpoint directory")
        ovr["init_from"] = str(Path(opts.init_from).resolve())
    if opts.data_root:
        ovr["data_root"] = str(Path(opts.data_root).resolve())
    return ovr


def plan_table1(opts: Table1Options, console):
    """-> (the run's state, its base TrainConfig): read back on `--resume`, else measured and written.

    The state maps the budget to steps with the training speed measured here (`calibrate_steps`)."""
    from fgdsr.config import CONFIG_DIR, load_config

    bad = [v for v in opts.variants if v not in VARIANTS]
    if bad or not opts.variants:
        raise UserError(f"--variants: {bad or 'none'}; choose among {', '.join(VARIANTS)}")
    state_path = Path(opts.out).expanduser().resolve() / "table1-state.json"
    if opts.resume:
        if not state_path.is_file():
            raise UserError(f"--resume: {state_path} not found; run without --resume first (same --out)")
        data = json.loads(state_path.read_text())  # the interrupted run's config, budget and step count
        state = Table1State(**{**data, "variants": tuple(data["variants"])})
        return state, load_config(state.config, state.overrides)
    cfg_path = str(Path(opts.config).resolve()) if opts.config else str(CONFIG_DIR / "lapsrn.yaml")
    ovr = _overrides(opts)
    base = load_config(cfg_path, ovr)
    present_sets(opts.data_root or base.data_root)  # fail now, not after training
    if state_path.exists():
        raise UserError(
            f"--out {state_path.parent}: a table1 run exists there; add --resume to finish it or pick --out"
        )
    variants = tuple(dict.fromkeys(opts.variants))
    with console.status(
        f"measuring training speed of {', '.join(variants)} (~{opts.calibration_s:g} s each) …"
    ):
        # a CPU trial gets 1 CPU (Ray sets its thread count accordingly)
        rates = calibrate_steps(base, variants, opts.calibration_s, None if opts.gpus else 1)
    slowest = min(r for r in rates.values() if r == r)
    state = Table1State(max(1, int(opts.budget_minutes * 60 * slowest)), rates, opts.budget_minutes, opts.seeds,
                        variants, cfg_path, ovr, opts.command_line)  # fmt: skip
    write_text_atomic(state_path, json.dumps(dataclasses.asdict(state), indent=2) + "\n")
    return state, base


def sweep_plan(state: Table1State, opts: Table1Options, base):
    """The Tune sweep of Table 1: a grid over variant × seed, every run the same number of steps (FIFO)."""
    from orchestrator.plan import TuneOptions, make_plan
    from orchestrator.space import SearchSpace

    space = SearchSpace(params={"loss": ("choice", list(state.variants)), "seed": ("choice", list(range(state.seeds)))},
                        source="reproduce table1 (variant × seed)")  # fmt: skip
    val_every = max(1, min(base.val_every, state.max_steps // 4 or 1))
    return make_plan(TuneOptions(
        config=base, space=space, overrides={"max_steps": state.max_steps, "val_every": val_every}, gpus=opts.gpus, gpus_per_trial=opts.gpus_per_trial, search="grid",
        scheduler="fifo", out=str(Path(opts.out).expanduser().resolve() / "tune"), name="table1",
        resume=opts.resume, tracking_uri=opts.tracking_uri, experiment=opts.experiment or "fgdsr-table1",
        force_variants=(), register=False, command_line=state.command,
    ))  # fmt: skip


# ------------------------------------------------------------------------------------------ evaluate


def table1_evaluate(
    trials, sets, scale: int, data_root: str
) -> tuple[tuple[Table1Trial, ...], tuple[ImageScore, ...]]:
    """Each trial's checkpoint through the protocol on `sets` -> (trials with set means, every image's score)."""
    import torch

    from fgdsr.checkpoint import load_model
    from fgdsr.evaluate import evaluate
    from fgdsr.inference import ModelUpscaler

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out, scores = [], []
    for t in trials:
        model, cfg, _ = load_model(t.checkpoint_dir)
        seed = int(t.config.get("seed", cfg.seed))
        res = evaluate(
            {t.trial_id: ModelUpscaler(model.eval(), scale, device)}, list(sets), [scale], data_root
        )
        for r in res["results"]:
            scores += [ImageScore(t.variant, seed, r["dataset"], im["name"], float(im["psnr"]), float(im["ssim"]),
                                  t.trial_id) for im in r.get("images", [])]  # fmt: skip
        out.append(Table1Trial(t.trial_id, t.variant, seed, t.steps, {r["dataset"]: r["psnr"] for r in res["results"]},
                               {r["dataset"]: r["ssim"] for r in res["results"]}, t.checkpoint_dir, t.mlflow_run_id))  # fmt: skip
    return tuple(out), tuple(scores)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def table1_aggregate(trials, sets) -> dict[str, dict[str, Any]]:
    """variant -> set -> {mean, std, n, values, paper, diff}: mean ± sample std over seeds (`Table1Trial`s)."""
    out: dict[str, dict[str, Any]] = {}
    for v in VARIANTS:
        rows = [t for t in trials if t.variant == v]
        if not rows:
            continue
        out[v] = {}
        for s in sets:
            vals = [t.psnr[s] for t in rows if t.psnr.get(s) is not None]
            mean, std = _mean_std(vals)
            paper = PAPER_TABLE1.get(v, {}).get(s)
            out[v][s] = {"mean": mean, "std": std, "n": len(vals), "values": vals, "paper": paper,
                         "diff": mean - paper if paper is not None and vals else None}  # fmt: skip
    return out


# -------------------------------------------------------------------------------------------- render


def _gain_rows(agg: dict[str, dict[str, Any]], sets) -> list[list[str]]:
    rows = []
    for v, by_set in agg.items():
        if v == "l1" or "l1" not in agg:
            continue
        cells = []
        for s in sets:
            ours = by_set[s]["mean"] - agg["l1"][s]["mean"] if by_set[s]["n"] and agg["l1"][s]["n"] else None
            paper = PAPER_TABLE1[v][s] - PAPER_TABLE1["l1"][s] if v in PAPER_TABLE1 else None
            cells.append(
                f"{fmt_signed(ours)} (paper {fmt_signed(paper)})" if paper is not None else fmt_signed(ours)
            )
        rows.append([f"{TABLE1_NAMES[v]} − Baseline"] + cells)
    return rows


def table1_markdown(agg: dict[str, dict[str, Any]], sets, info: dict[str, Any]) -> str:
    """The Markdown report of `reproduce table1`: measured mean ± std next to the paper, and the gains over l1."""

    def cell(c: dict[str, Any]) -> str:
        if not c["n"]:
            return "—"
        spread = "" if math.isnan(c["std"]) else f" ± {c['std']:.2f}"
        return f"{c['mean']:.2f}{spread}"

    rows = []
    for v, by_set in agg.items():
        rows.append([TABLE1_NAMES[v]] + [cell(by_set[s]) for s in sets])
        if v in PAPER_TABLE1:
            rows.append([f"  paper {TABLE1_NAMES[v]}"] + [f"{PAPER_TABLE1[v][s]:.2f}" for s in sets])
    gains = _gain_rows(agg, sets)
    cal = ", ".join(f"{k} {v:.2f}" for k, v in info["steps_per_s"].items())
    own = " (also a test set here: its column is selected on itself, slightly optimistic for every variant)."
    return "\n\n".join([
        "# Table 1 reproduction (`fgdsr reproduce table1`)",
        f"Command: `{info['command']}`. Machine: {info['machine']}. Date: {info['date']}. Wall time: "
        f"{info['wall_s']:.0f} s. Training data: `{info['train_dataset']}`; model: {info['model']}; "
        f"×{info['scale']}; seeds: {info['seeds']}.",
        f"Budget: {info['budget_minutes']:g} min per run → **{info['max_steps']} steps for every variant** "
        f"(measured speed, steps/s: {cal}; the slowest variant sets the step count so every run fits the "
        "budget and all runs see the same number of updates). Checkpoint evaluated: the one with the best "
        f"validation PSNR on `{info['val_dataset']}`" + (own if info["val_dataset"] in sets else "."),
        "Average PSNR (dB, Y, shave = scale), mean ± sample standard deviation over seeds:",
        md_table(["variant"] + list(sets), rows),
        "Gain over the baseline (measured, and the paper's):",
        md_table(["variant"] + list(sets), gains) if gains else "_(no baseline run)_",
    ])  # fmt: skip


def _info(state: Table1State, opts: Table1Options, base, t0: float) -> dict[str, Any]:
    import os
    import platform

    return {
        "command": state.command, "machine": f"{platform.node()} ({os.cpu_count()} CPUs, gpus={opts.gpus:g})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.perf_counter() - t0,
        "train_dataset": base.train_dataset, "val_dataset": base.val_dataset,
        "model": f"{base.model} ({base.layout}, depth {base.depth}, {base.channels} channels)", "scale": base.scale,
        "seeds": state.seeds, "budget_minutes": state.budget_minutes, "max_steps": state.max_steps,
        "steps_per_s": state.steps_per_s,
    }  # fmt: skip


def write_table1(result: Table1Result, out: Path) -> Path:
    """table1.md and table1.json into `out`, both attached to the sweep's parent run under `table1/`."""
    from orchestrator import tracking

    md = write_text_atomic(out / "table1.md", table1_markdown(result.table, result.sets, result.info) + "\n")
    js = write_text_atomic(out / "table1.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    tracking.log_files(result.tracking_uri, result.parent_run_id, [md, js], "table1")
    return md


def reproduce_table1(opts: Table1Options) -> Table1Result:
    """plan → sweep (every variant × seed, same steps) → evaluate → Table1Result → table1.md/json + MLflow."""
    from rich.console import Console

    from orchestrator.tune import run_sweep

    t0 = time.perf_counter()
    console = Console(stderr=True, quiet=opts.quiet)
    out = Path(opts.out).expanduser().resolve()
    state, base = plan_table1(opts, console)
    plan = sweep_plan(state, opts, base)
    root, sets = present_sets(opts.data_root or plan.base.data_root)
    console.print(f"table1: {plan.trials} runs ({', '.join(state.variants)} × {state.seeds} seeds), "
                  f"{state.max_steps} steps each (budget {state.budget_minutes:g} min per run)")  # fmt: skip
    with console.status("training (Ray Tune, grid over variant × seed) …"):
        sweep = run_sweep(plan)
    if sweep.partial:
        raise UserError(f"table1: the sweep was interrupted; finish it with fgdsr reproduce table1 --resume --out {out} "
                        f"--budget-minutes {state.budget_minutes:g}")  # fmt: skip
    done = [t for t in sweep.trials if t.finished and t.checkpoint_dir is not None]
    with console.status(f"evaluating {len(done)} models on {', '.join(sets)} …"):
        trials, scores = table1_evaluate(done, sets, plan.base.scale, root)
    result = Table1Result(_info(state, opts, plan.base, t0), tuple(sets), root, trials, scores,
                          table1_aggregate(trials, sets), sweep.parent_run_id, sweep.tracking_uri)  # fmt: skip
    md = write_table1(result, out)
    console.print(markdown_for_terminal(md.read_text()))
    console.print(f"report: {md}")
    return result

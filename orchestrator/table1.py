"""`fgdsr reproduce table1`: Baseline (l1), +CS, +FD, aux (and any reading) trained alike, evaluated, compared.

plan (`plan_table1`: the arms — the loss variants and the named readings, each a set of TrainConfig fields —
and the budget as a step count per arm, kept in `<out>/table1-state.json` for `--resume`) → sweep
(`orchestrator.tune`, one explicit trial per arm × seed, FIFO, so trials pack on the GPUs and `--resume` finishes
an interrupted run) → evaluate (every finished trial on the test sets: Set5/Set14/BSD100/Urban100 present, plus
`test_sets`; every image's PSNR/SSIM kept) → compare (`fgdsr.metrics.compare`: per arm and test set the paired
difference to l1 over images × seeds with a crossed-bootstrap 95 % interval, and the slope of ΔPSNR against the
HR entropy, the paper's Fig. 1) → `Table1Result` → render (`table1.md`, `table1.json`, the MLflow parent run).

Fair by construction: the same seed gives every arm the same trunk initialisation and the same training batches
(fgdsr.train), so differences are paired; budgets are equal steps (the slowest arm's speed sets one step count)
or equal wall time (each arm its own steps); the checkpoint evaluated is the last one (one validation, at the
end: no test set and no validation set selects anything).
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
BUDGETS = ("steps", "time")


@dataclass(frozen=True)
class Arm:
    """One row of Table 1: a name and the TrainConfig fields that make it (a loss variant: just `loss`)."""

    name: str
    overrides: dict[str, Any]

    @property
    def label(self) -> str:
        return TABLE1_NAMES.get(self.name, self.name)


def parse_reading(text: str) -> Arm:
    """'name:k=v,k=v' -> Arm (list values with ';': areas=3;5;7); a one-line error names the bad part."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest or name in VARIANTS:
        raise UserError(
            f"--reading '{text}': expected NAME:field=value[,field=value], NAME not one of {VARIANTS}"
        )
    overrides = {}
    for pair in rest.split(","):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--reading '{text}': '{pair}' is not field=value")
        overrides[key.strip()] = value.strip().replace(";", ",")
    return Arm(name, overrides)


@dataclass(frozen=True)
class Table1Options:
    """What `fgdsr reproduce table1` takes (CLI flags map 1:1)."""

    budget_minutes: float | None = None  # per run; None with `steps`
    steps: int | None = None  # equal steps, no speed measurement
    budget: str = "steps"  # steps: every arm the same steps (the slowest sets them) | time: the same minutes
    seeds: int = 1
    gpus: float = 0
    gpus_per_trial: float | None = None
    init_from: str | None = None
    config: str | Path | None = None  # None: fgdsr/configs/lapsrn.yaml
    overrides: dict[str, Any] = field(default_factory=dict)
    train_dataset: str | None = None
    variants: tuple[str, ...] = VARIANTS
    readings: tuple[Arm, ...] = ()
    test_sets: tuple[str, ...] = ()  # beyond the standard sets present (e.g. a hold-out split T91+BSD200:val)
    data_root: str | None = None
    out: Path = Path("runs/reproduce-table1")
    resume: bool = False
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False
    calibration_s: float = 8.0
    command_line: str = ""

    def arms(self) -> tuple[Arm, ...]:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not (self.variants or self.readings):
            raise UserError(f"--variants: {bad or 'none'}; choose among {', '.join(VARIANTS)}")
        arms = [Arm(v, {"loss": v}) for v in dict.fromkeys(self.variants)] + list(self.readings)
        if len({a.name for a in arms}) != len(arms):
            raise UserError("--reading: every reading needs its own name")
        return tuple(arms)


@dataclass(frozen=True)
class Table1State:
    """`<out>/table1-state.json`: the arms and their step counts, fixed when the run starts (a resume reuses it)."""

    steps: dict[str, int]  # arm -> training steps
    steps_per_s: dict[str, float]  # measured speed (empty with explicit --steps)
    budget: str
    budget_minutes: float | None
    seeds: int
    arms: tuple[Arm, ...]
    config: str
    overrides: dict[str, Any]
    command: str

    @classmethod
    def read(cls, path: Path) -> Table1State:
        data = json.loads(path.read_text())
        data["arms"] = tuple(Arm(**a) for a in data["arms"])
        return cls(**data)


@dataclass(frozen=True)
class ImageScore:
    """One image of one test set, scored for one trained model (arm × seed)."""

    variant: str  # the arm's name
    seed: int
    dataset: str
    image: str
    psnr: float  # dB, Y, shave = scale
    ssim: float
    trial_id: str = ""
    entropy: float = float("nan")  # of the HR image's Y (bits), the paper's Fig. 1 axis


@dataclass(frozen=True)
class Table1Trial:
    """One trained model (arm × seed) and its set means."""

    trial_id: str
    variant: str  # the arm's name
    seed: int = 0
    steps: int = 0
    psnr: dict[str, float | None] = field(default_factory=dict)  # data set -> mean PSNR (dB)
    ssim: dict[str, float | None] = field(default_factory=dict)
    checkpoint: str | None = None
    mlflow_run_id: str | None = None


@dataclass(frozen=True)
class Table1Row:
    """One arm on one test set: mean PSNR over seeds × images, and the paired comparison with l1."""

    variant: str
    dataset: str
    psnr: float
    psnr_sd_seeds: float  # sample SD of the per-seed set means (nan with one seed)
    seeds: int
    images: int
    delta_vs_l1: Any | None = None  # fgdsr.metrics.compare.Delta (None for l1 itself or without l1 runs)
    entropy_slope: Any | None = None  # Delta of the ΔPSNR-vs-entropy slope (dB per bit)
    paper: float | None = None  # the paper's PSNR for this row (loss variants on its four sets)

    def to_dict(self) -> dict[str, Any]:
        d = {"variant": self.variant, "dataset": self.dataset, "psnr": self.psnr, "psnr_sd_seeds": self.psnr_sd_seeds,
             "seeds": self.seeds, "images": self.images, "paper": self.paper,
             "delta_vs_l1": self.delta_vs_l1.to_dict() if self.delta_vs_l1 else None,
             "entropy_slope": self.entropy_slope.to_dict() if self.entropy_slope else None}  # fmt: skip
        return d


@dataclass(frozen=True)
class Table1Result:
    info: dict[str, Any]  # command, machine, date, wall time, data, model, budget
    sets: tuple[str, ...]
    data_root: str
    trials: tuple[Table1Trial, ...]
    scores: tuple[ImageScore, ...]  # per (arm, seed, data set, image)
    rows: tuple[Table1Row, ...]  # per (arm, data set): the comparison
    parent_run_id: str | None = None
    tracking_uri: str | None = None

    @property
    def table(self) -> dict[str, dict[str, dict[str, Any]]]:
        """arm -> set -> {mean, n (seeds), images}: the plain means (`rows` holds the comparison)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for r in self.rows:
            out.setdefault(r.variant, {})[r.dataset] = {"mean": r.psnr, "n": r.seeds, "images": r.images}
        return out

    def to_dict(self) -> dict[str, Any]:
        """`table1.json` (and `--json`): rows (variant, dataset, psnr, delta_vs_l1 {mean, ci95}, seeds, images …)."""
        return {"rows": [r.to_dict() for r in self.rows], "info": self.info, "sets": list(self.sets),
                "data_root": self.data_root, "trials": [dataclasses.asdict(t) for t in self.trials],
                "scores": [dataclasses.asdict(s) for s in self.scores], "paper": PAPER_TABLE1,
                "parent_run_id": self.parent_run_id, "tracking_uri": self.tracking_uri}  # fmt: skip


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


def calibrate_steps(base, arms, seconds: float = 8.0, threads: int | None = None) -> dict[str, float]:
    """Training speed (steps/s, median of the logged rates after the first) of each arm on this machine.

    Runs `fgdsr.train` for about `seconds` per arm in a temp folder (CPU: with `threads` torch threads, what
    one trial gets; GPU: the first GPU), so the budget in minutes maps to step counts before the sweep starts.
    """
    import tempfile

    import torch

    from fgdsr.train import train

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    rates = {}
    try:
        for arm in arms:
            probe = _RateProbe(seconds)
            cfg = base.replace(**arm.overrides, max_steps=10**7, log_every=5, val_every=10**7, val_max_images=1,
                               init_from=None)  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="fgdsr-calib-") as d:
                train(cfg, d, callbacks=[probe], progress=False)
            usable = probe.rates[1:] or probe.rates
            rates[arm.name] = float(statistics.median(usable)) if usable else float("nan")
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


def _check_budget(opts: Table1Options) -> None:
    """The budget flags alone (before any data is looked at): one of --steps N or --budget-minutes N."""
    if opts.budget not in BUDGETS:
        raise UserError(f"--budget {opts.budget}: use steps (equal steps) or time (equal wall time)")
    if opts.steps is not None:
        if opts.steps < 1 or opts.budget != "steps":
            raise UserError("--steps N: N >= 1, and only with --budget steps (equal steps)")
    elif opts.budget_minutes is None or opts.budget_minutes <= 0:
        raise UserError("reproduce table1: give --budget-minutes N (N > 0) or --steps N")


def _budget_steps(opts: Table1Options, base, arms, console) -> tuple[dict[str, int], dict[str, float]]:
    """Steps per arm: explicit (`steps`), equal steps at the slowest arm's speed, or equal wall time."""
    _check_budget(opts)
    if opts.steps is not None:
        return {a.name: opts.steps for a in arms}, {}
    with console.status(
        f"measuring training speed of {', '.join(a.name for a in arms)} (~{opts.calibration_s:g} s each) …"
    ):
        # a CPU trial gets 1 CPU (Ray sets its thread count accordingly)
        rates = calibrate_steps(base, arms, opts.calibration_s, None if opts.gpus else 1)
    seconds = opts.budget_minutes * 60
    if opts.budget == "time":
        return {a: max(1, int(seconds * r)) for a, r in rates.items()}, rates
    slowest = min(r for r in rates.values() if r == r)
    return {a.name: max(1, int(seconds * slowest)) for a in arms}, rates


def plan_table1(opts: Table1Options, console):
    """-> (the run's state, its base TrainConfig): read back on `--resume`, else measured and written."""
    from fgdsr.config import CONFIG_DIR, load_config

    state_path = Path(opts.out).expanduser().resolve() / "table1-state.json"
    if opts.resume:
        if not state_path.is_file():
            raise UserError(f"--resume: {state_path} not found; run without --resume first (same --out)")
        state = Table1State.read(state_path)  # the interrupted run's config, arms and step counts
        return state, load_config(state.config, state.overrides)
    arms = opts.arms()
    _check_budget(opts)
    cfg_path = str(Path(opts.config).resolve()) if opts.config else str(CONFIG_DIR / "lapsrn.yaml")
    ovr = _overrides(opts)
    base = load_config(cfg_path, ovr)
    for arm in arms:
        base.replace(**arm.overrides)  # a bad reading fails now, in one line, not inside a trial
    present_sets(opts.data_root or base.data_root)  # fail now, not after training
    if state_path.exists():
        raise UserError(
            f"--out {state_path.parent}: a table1 run exists there; add --resume to finish it or pick --out"
        )
    steps, rates = _budget_steps(opts, base, arms, console)
    state = Table1State(steps, rates, opts.budget, opts.budget_minutes, opts.seeds, arms, cfg_path, ovr,
                        opts.command_line)  # fmt: skip
    write_text_atomic(state_path, json.dumps(dataclasses.asdict(state), indent=2) + "\n")
    return state, base


def _point(arm: Arm, seed: int, steps: int) -> dict[str, Any]:
    """One trial's values: the arm's fields, its seed and steps; validated once, at the end of training (so the
    checkpoint evaluated is the last one: nothing is selected on any set)."""
    from orchestrator.space import encode

    return {
        **{k: encode(v) for k, v in arm.overrides.items()},
        "seed": seed,
        "max_steps": steps,
        "val_every": steps,
    }


def sweep_plan(state: Table1State, opts: Table1Options, base):
    """The Tune sweep of Table 1: one explicit trial per arm × seed (FIFO), each with its arm's step count."""
    from orchestrator.plan import TuneOptions, make_plan
    from orchestrator.space import SearchSpace, encode

    points = tuple(_point(a, s, state.steps[a.name]) for s in range(state.seeds) for a in state.arms)
    # Tune evaluates points only over keys of its search space: every key a point sets is a choice here
    # and every point sets every key (the base config's value where its arm is silent), else Tune samples it
    keys = dict.fromkeys(k for p in points for k in p)
    points = tuple({k: p.get(k, encode(getattr(base, k))) for k in keys} for p in points)
    values = {k: sorted({p[k] for p in points if k in p}, key=str) for k in keys}
    space = SearchSpace(
        params={k: ("choice", v) for k, v in values.items()}, source="reproduce table1 (arm × seed)"
    )
    return make_plan(TuneOptions(
        config=base, space=space, points=points, gpus=opts.gpus, gpus_per_trial=opts.gpus_per_trial,
        search="random", scheduler="fifo", out=str(Path(opts.out).expanduser().resolve() / "tune"), name="table1",
        resume=opts.resume, tracking_uri=opts.tracking_uri, experiment=opts.experiment or "fgdsr-table1",
        force_variants=(), register=False, command_line=state.command,
    ))  # fmt: skip


def arm_of(config: dict[str, Any], arms: tuple[Arm, ...]) -> str:
    """The arm whose fields a trial's sampled values carry (the most specific match: readings before losses)."""
    from orchestrator.space import encode

    def matches(a: Arm) -> bool:
        return all(str(config.get(k)) == str(encode(v)) for k, v in a.overrides.items())

    hits = sorted((a for a in arms if matches(a)), key=lambda a: -len(a.overrides))
    if not hits:
        raise UserError(f"table1: a trial ({config}) matches no arm; was the state file edited?")
    return hits[0].name


# ------------------------------------------------------------------------------------------ evaluate


def table1_evaluate(
    trials, sets, scale: int, data_root: str, arms: tuple[Arm, ...]
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
        name, seed = arm_of(t.config, arms), int(t.config.get("seed", cfg.seed))
        res = evaluate(
            {t.trial_id: ModelUpscaler(model.eval(), scale, device)}, list(sets), [scale], data_root
        )
        for r in res["results"]:
            scores += [ImageScore(name, seed, r["dataset"], im["name"], float(im["psnr"]), float(im["ssim"]),
                                  t.trial_id, float(im.get("entropy", float("nan"))))
                       for im in r.get("images", [])]  # fmt: skip
        out.append(Table1Trial(t.trial_id, name, seed, t.steps, {r["dataset"]: r["psnr"] for r in res["results"]},
                               {r["dataset"]: r["ssim"] for r in res["results"]}, t.checkpoint_dir, t.mlflow_run_id))  # fmt: skip
    return tuple(out), tuple(scores)


# ------------------------------------------------------------------------------------------- compare


def _grid(scores, arm: str, dataset: str, seeds: list[int], images: list[str]):
    """PSNR as a (seeds, images) array for one arm on one set (None if any cell is missing)."""
    import numpy as np

    cell = {(s.seed, s.image): s.psnr for s in scores if s.variant == arm and s.dataset == dataset}
    if any((sd, im) not in cell for sd in seeds for im in images):
        return None
    return np.array([[cell[(sd, im)] for im in images] for sd in seeds])


def compare(scores, arms: tuple[Arm, ...], sets) -> tuple[Table1Row, ...]:
    """Per arm and set: mean PSNR, and vs l1 the paired Δ and the ΔPSNR-vs-entropy slope with 95 % intervals.

    Paired over the seeds both arms finished and the set's images (same seed = same init and data order).
    """
    from fgdsr.metrics.compare import entropy_slope, paired_delta

    rows = []
    for ds in sets:
        images = sorted({s.image for s in scores if s.dataset == ds})
        entropy = {s.image: s.entropy for s in scores if s.dataset == ds}
        base_seeds = {s.seed for s in scores if s.variant == "l1" and s.dataset == ds}
        for arm in arms:
            seeds = sorted({s.seed for s in scores if s.variant == arm.name and s.dataset == ds})
            grid = _grid(scores, arm.name, ds, seeds, images) if seeds else None
            if grid is None:
                continue
            per_seed = grid.mean(axis=1).tolist()
            sd = statistics.stdev(per_seed) if len(per_seed) > 1 else float("nan")
            delta = slope = None
            paired = sorted(set(seeds) & base_seeds)
            if arm.name != "l1" and paired:
                a, b = _grid(scores, arm.name, ds, paired, images), _grid(scores, "l1", ds, paired, images)
                delta = paired_delta(a, b)
                e = [entropy[i] for i in images]
                slope = entropy_slope(a, b, e) if all(x == x for x in e) and len(images) > 2 else None
            paper = PAPER_TABLE1.get(arm.name, {}).get(ds)
            rows.append(
                Table1Row(arm.name, ds, float(grid.mean()), sd, len(seeds), len(images), delta, slope, paper)
            )
    return tuple(rows)


# -------------------------------------------------------------------------------------------- render


def _verdict(d) -> str:
    if d is None:
        return "—"
    if not d.excludes_zero():
        return "no measurable difference"
    return "better" if d.mean > 0 else "worse"


def _paper_gain(arm: str, ds: str) -> float | None:
    if arm in PAPER_TABLE1 and ds in PAPER_TABLE1[arm] and ds in PAPER_TABLE1.get("l1", {}):
        return PAPER_TABLE1[arm][ds] - PAPER_TABLE1["l1"][ds]
    return None


def table1_markdown(result: Table1Result, arms: tuple[Arm, ...]) -> str:
    """table1.md: per arm and set the mean PSNR, the paired Δ vs l1 [95 % CI], the paper's Δ, and the slope."""
    info = result.info
    names = {a.name: a.label for a in arms}
    rows = []
    for r in result.rows:
        d, sl = r.delta_vs_l1, r.entropy_slope
        sd = "" if math.isnan(r.psnr_sd_seeds) else f" ± {r.psnr_sd_seeds:.2f}"
        paper = _paper_gain(r.variant, r.dataset)
        rows.append([names.get(r.variant, r.variant), r.dataset, f"{r.psnr:.2f}{sd}",
                     f"{fmt_signed(d.mean, 3)} [{fmt_signed(d.ci95[0], 3)}, {fmt_signed(d.ci95[1], 3)}]" if d else "—",
                     _verdict(d), f"paper {fmt_signed(paper)}" if paper is not None else "—",
                     f"{fmt_signed(sl.mean, 3)} [{fmt_signed(sl.ci95[0], 3)}, {fmt_signed(sl.ci95[1], 3)}]" if sl else "—",
                     f"{r.seeds} × {r.images}"])  # fmt: skip
    widths = [r.delta_vs_l1.half_width for r in result.rows if r.delta_vs_l1]
    detect = (f"The 95 % intervals' half-widths are {min(widths):.3f}–{max(widths):.3f} dB: a true difference smaller "
              f"than about {1.43 * max(widths):.2f} dB would be missed half the time or more (80 % power needs "
              "≈ 1.43 × the half-width)." if widths else "")  # fmt: skip
    steps = ", ".join(f"{names.get(a, a)} {n}" for a, n in info["steps"].items())
    cal = ", ".join(f"{k} {v:.2f}" for k, v in info["steps_per_s"].items()) or "not measured (--steps)"
    what = {"steps": "equal steps", "time": "equal wall time"}[info["budget"]]
    return "\n\n".join([
        "# Table 1 reproduction (`fgdsr reproduce table1`)",
        f"Command: `{info['command']}`. Machine: {info['machine']}. Wall time: "
        f"{info['wall_s']:.0f} s. Training data: `{info['train_dataset']}`; validation `{info['val_dataset']}`; "
        f"model: {info['model']}; ×{info['scale']}; seeds: {info['seeds']} (paired: same init and data order).",
        f"Budget ({what}): steps {steps} (speed, steps/s: {cal}). Checkpoint evaluated: the last one.",
        "PSNR (dB, Y, shave = scale): mean over seeds × images (± SD of the per-seed means); Δ vs Baseline = paired "
        "difference with its 95 % interval (crossed bootstrap over images and seeds); slope = ΔPSNR per bit of HR "
        "entropy (the paper's Fig. 1), with its 95 % interval:",
        md_table(["variant", "set", "PSNR", "Δ vs Baseline [95 % CI]", "reading", "paper Δ", "Δ slope / bit [95 % CI]",
                  "seeds × images"], rows),
        detect,
    ]).rstrip() + "\n"  # fmt: skip


def _info(state: Table1State, opts: Table1Options, base, t0: float) -> dict[str, Any]:
    import torch

    from trt.machine import describe_machine

    return {
        "command": state.command, "machine": describe_machine("cuda" if torch.cuda.is_available() else "cpu").line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.perf_counter() - t0,
        "train_dataset": base.train_dataset, "val_dataset": base.val_dataset,
        "model": f"{base.model} ({base.layout}, depth {base.depth}, {base.channels} channels)", "scale": base.scale,
        "seeds": state.seeds, "budget": state.budget, "budget_minutes": state.budget_minutes, "steps": state.steps,
        "max_steps": max(state.steps.values()), "steps_per_s": state.steps_per_s,
        "arms": {a.name: a.overrides for a in state.arms},
    }  # fmt: skip


def write_table1(result: Table1Result, arms: tuple[Arm, ...], out: Path) -> Path:
    """table1.md and table1.json into `out`, both attached to the sweep's parent run under `table1/`."""
    from orchestrator import tracking

    md = write_text_atomic(out / "table1.md", table1_markdown(result, arms))
    js = write_text_atomic(out / "table1.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    tracking.log_files(result.tracking_uri, result.parent_run_id, [md, js], "table1")
    return md


def reproduce_table1(opts: Table1Options) -> Table1Result:
    """plan → sweep (every arm × seed) → evaluate → compare → Table1Result → table1.md/json + MLflow."""
    from rich.console import Console

    from orchestrator.tune import run_sweep

    t0 = time.perf_counter()
    console = Console(stderr=True, quiet=opts.quiet)
    out = Path(opts.out).expanduser().resolve()
    state, base = plan_table1(opts, console)
    plan = sweep_plan(state, opts, base)
    root, sets = present_sets(opts.data_root or plan.base.data_root)
    sets = list(dict.fromkeys([*sets, *opts.test_sets]))
    console.print(f"table1: {plan.trials} runs ({', '.join(a.name for a in state.arms)} × {state.seeds} seeds), "
                  f"steps {state.steps}")  # fmt: skip
    with console.status("training (Ray Tune, one trial per arm × seed) …"):
        sweep = run_sweep(plan)
    if sweep.partial:
        raise UserError(
            f"table1: the sweep was interrupted; finish it with fgdsr reproduce table1 --resume --out {out}"
        )
    done = [t for t in sweep.trials if t.finished and t.checkpoint_dir is not None]
    with console.status(f"evaluating {len(done)} models on {', '.join(sets)} …"):
        trials, scores = table1_evaluate(done, sets, plan.base.scale, root, state.arms)
    result = Table1Result(_info(state, opts, plan.base, t0), tuple(sets), root, trials, scores,
                          compare(scores, state.arms, sets), sweep.parent_run_id, sweep.tracking_uri)  # fmt: skip
    md = write_table1(result, state.arms, out)
    console.print(markdown_for_terminal(md.read_text()))
    console.print(f"report: {md}")
    return result


__all__ = ["Arm", "Table1Options", "Table1Result", "Table1Row", "parse_reading", "reproduce_table1"]

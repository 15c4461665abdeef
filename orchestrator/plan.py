"""The plan of a sweep: every fact `fgdsr tune` needs, validated and resolved once, before Ray starts.

`make_plan(TuneOptions) -> SweepPlan` is the only place that reads the base config, the search space and the
resources; `run_sweep(plan)` and everything after it read the plan. What a trial needs travels as a
`TrialContext` derived from the plan; the state file (`<out>/state-<name>.json`) is the plan plus the MLflow ids,
and `--resume` compares the new plan with it (Tune's `Tuner.restore` would silently ignore a changed
`--num-samples`, `--space` or `--search`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.config import CONFIG_DIR, TrainConfig, config_from_dict, load_config
from fgdsr.data.datasets import default_data_root
from fgdsr.errors import UserError
from orchestrator import space as space_mod
from orchestrator import tracking

DEMO_CONFIG = CONFIG_DIR / "tune-demo.yaml"
METRIC = "val_psnr"
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "az://", "hdfs://")
SEARCHES = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "fifo")


@dataclass
class TuneOptions:
    """Everything `fgdsr tune` takes (CLI flags map 1:1); `force_variants`, `overrides`, `paired` are for callers."""

    config: str | TrainConfig | None = (
        None  # a YAML path, a loaded config, None: fgdsr/configs/tune-demo.yaml
    )
    space: str | space_mod.SearchSpace | None = (
        None  # a YAML path, a parsed space, None: fgdsr/configs/space.yaml
    )
    gpus: float = 0.0  # local cluster size, or the budget on `address`
    gpus_per_trial: float | None = None  # None: 1 when gpus > 0
    cpus_per_trial: float = 1.0
    num_samples: int | None = None  # None: 4 (optuna/random) or 1 pass over the grid; paired: slots
    search: str = "optuna"  # optuna | random | grid
    scheduler: str = "asha"  # asha | fifo
    max_steps: int | None = None
    address: str | None = None  # auto | HOST:PORT; None starts a local cluster
    storage: str | None = None  # None: <out>/ray
    tracking_uri: str | None = None
    experiment: str = "fgdsr"
    name: str = "sweep"
    out: str = "runs/tune"
    resume: bool = False
    dry_run: bool = False
    max_failures: int = 3
    force_variants: tuple[str, ...] = ("l1",)  # the baseline is always in the comparison
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields for every trial
    paired: bool = (
        False  # every loss variant on the same sampled settings, `num_samples` slots (the pipeline)
    )
    points: tuple[dict[str, Any], ...] = ()  # explicit trials (search random): each one's values (Table 1)
    num_cpus: int | None = None  # local cluster CPUs (None: all); ignored with `address`
    seed: int = 0
    register: bool = True
    verbose: bool = False  # library logs (Ray, MLflow, Optuna) on the terminal instead of <out>/fgdsr.log
    command_line: str = ""
    ray_temp_dir: str | None = None  # local cluster's temp dir (tests use it to check for stray processes)
    workers_per_trial: int | None = None  # Ray Train workers per trial; None: gpus_per_trial when > 1, else 1


@dataclass(frozen=True)
class Resources:
    """What one trial holds and how many run at once."""

    gpus: float  # the sweep's GPUs (local cluster size, or the budget on a joined cluster)
    gpus_per_trial: float  # 0: CPU trials; < 1 shares a GPU
    cpus_per_trial: float  # per worker
    workers_per_trial: int  # > 1: the trial drives a Ray Train TorchTrainer of this many workers
    concurrency: int  # trials at once

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_trial > 0


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping on validation PSNR, in training steps."""

    grace_period: int
    max_t: int
    reduction_factor: int
    metric: str = METRIC
    time_attr: str = "step"


@dataclass(frozen=True)
class SweepPlan:
    """One sweep, fully resolved (absolute paths, the tracking URI, the trials to run)."""

    name: str
    out: str  # absolute: state-<name>.json, sweep.json, best/, optuna.db, fgdsr.log
    config: str  # the base TrainConfig YAML it came from (for people)
    base: TrainConfig  # every trial starts from it (paths absolute: trials run in their own folders)
    space: space_mod.SearchSpace
    search: str
    scheduler: str
    asha: Asha | None
    num_samples: int
    trials: int
    points: tuple[dict[str, Any], ...]  # paired: every trial's sampled values, fixed here; else empty
    resources: Resources
    cluster: str  # "local" (this job starts Ray) | auto | HOST:PORT
    storage: str  # Tune's storage: an absolute path or a storage URI
    tracking_uri: str
    experiment: str
    max_failures: int = 3
    seed: int = 0
    register: bool = True
    resume: bool = False
    dry_run: bool = False
    verbose: bool = False
    command_line: str = ""
    num_cpus: int | None = None
    ray_temp_dir: str | None = None

    @property
    def experiment_path(self) -> str:
        return f"{self.storage}/{self.name}"

    @property
    def state_file(self) -> Path:
        return Path(self.out) / f"state-{self.name}.json"

    @property
    def study_storage(self) -> str:
        """The Optuna study of the sweep (`optuna-dashboard sqlite:///<out>/optuna.db`); study name = sweep name."""
        return f"sqlite:///{Path(self.out) / 'optuna.db'}"

    @property
    def log_file(self) -> Path:
        return Path(self.out) / "fgdsr.log"

    def to_dict(self) -> dict[str, Any]:
        """JSON view (the state file, plan.json on the parent run, `--json`)."""
        return {
            "name": self.name,
            "trials": self.trials,
            "num_samples": self.num_samples,
            "search": self.search,
            "scheduler": self.scheduler,
            "asha": dataclasses.asdict(self.asha) if self.asha else None,
            "resources": dataclasses.asdict(self.resources),
            "cluster": self.cluster,
            "storage": self.storage,
            "experiment_path": self.experiment_path,
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "max_failures": self.max_failures,
            "out": self.out,
            "config": self.config,
            "base_config": self.base.to_dict(),
            "space": self.space.describe(),
            "points": [dict(p) for p in self.points],
            "seed": self.seed,
            "resume": self.resume,
        }


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep receives (Ray pickles it to the workers): derived from the plan."""

    base: dict[str, Any]  # the plan's base TrainConfig as stored values
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    resources: Resources
    storage: str
    sampled: tuple[str, ...]  # the fields the search varies (what a run's name shows)

    @classmethod
    def from_plan(cls, plan: SweepPlan, experiment_id: str, parent_run_id: str) -> TrialContext:
        return cls(plan.base.to_dict(), plan.tracking_uri, experiment_id, parent_run_id, plan.resources,
                   plan.storage, space_mod.sampled_fields(plan.space))  # fmt: skip

    def run_name(self, sampled: dict[str, Any], variant: str) -> str:
        """`fd α=0.12 lr=2e-3`: the variant and the values this trial drew."""
        return space_mod.trial_label(sampled, variant, self.sampled)

    def config(self, sampled: dict[str, Any]) -> TrainConfig:
        """The trial's TrainConfig: the base with its sampled values."""
        return config_from_dict({**self.base, **sampled}, "the sweep's base config + the trial's values")


@dataclass(frozen=True)
class SweepState:
    """`<out>/state-<name>.json`: the plan as run, and the MLflow ids `--resume` continues."""

    plan: dict[str, Any]
    experiment_id: str
    parent_run_id: str

    def write(self, path: Path) -> None:
        from fgdsr.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2, default=str))

    @classmethod
    def read(cls, path: Path) -> SweepState:
        try:
            data = json.loads(path.read_text())
            return cls(data["plan"], data["experiment_id"], data["parent_run_id"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--resume: {path} is not a sweep state file ({e}); start a new sweep") from e


# ------------------------------------------------------------------------------------------------ plan


def plan_resources(opts: TuneOptions) -> Resources:
    """GPUs/CPUs per trial, workers per trial and concurrency (`gpus // gpus_per_trial`, or CPUs on `--gpus 0`)."""
    if opts.gpus < 0 or opts.cpus_per_trial <= 0:
        raise UserError("--gpus must be >= 0 and --cpus-per-trial > 0")
    gpt = opts.gpus_per_trial
    if opts.gpus == 0:
        if gpt:
            raise UserError(f"--gpus-per-trial {gpt}: needs --gpus > 0 (--gpus 0 runs CPU trials)")
        gpt = 0.0
    elif gpt is None:
        gpt = 1.0
    if opts.gpus > 0 and (gpt <= 0 or gpt > opts.gpus):
        raise UserError(f"--gpus-per-trial {gpt}: must be in (0, --gpus={opts.gpus}]")
    if gpt > 1 and not float(gpt).is_integer():
        raise UserError(
            f"--gpus-per-trial {gpt}: above 1 it must be a whole number (one Train worker per GPU)"
        )
    workers = int(gpt) if gpt > 1 else 1
    if opts.workers_per_trial is not None:
        # CPU data parallel (`--gpus 0`): each trial a TorchTrainer of CPU workers that synchronise over gloo
        if opts.workers_per_trial < 1 or (gpt > 1 and opts.workers_per_trial != workers):
            raise UserError(
                f"workers_per_trial {opts.workers_per_trial}: must be >= 1 and equal --gpus-per-trial"
            )
        workers = opts.workers_per_trial
    if opts.gpus > 0:
        concurrency = max(1, int(math.floor(opts.gpus / gpt + 1e-9)))
    else:
        cpus = opts.num_cpus or os.cpu_count() or 1
        concurrency = max(1, int(math.floor(cpus / (opts.cpus_per_trial * workers) + 1e-9)))
    return Resources(opts.gpus, float(gpt), opts.cpus_per_trial, workers, concurrency)


def _check_choices(opts: TuneOptions) -> None:
    if opts.search not in SEARCHES:
        raise UserError(f"--search {opts.search}: use optuna, random or grid")
    if opts.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {opts.scheduler}: use asha or fifo")
    if opts.num_samples is not None and opts.num_samples < 1:
        raise UserError("--num-samples must be at least 1")
    if opts.max_failures < 0:
        raise UserError("max_failures must be >= 0")
    if not opts.name or "/" in opts.name:
        raise UserError(f"--name '{opts.name}': a non-empty folder name without '/'")
    if opts.paired and opts.search == "optuna":
        raise UserError(
            "search optuna: a paired comparison runs every variant on the same sampled settings, which "
            "Optuna cannot propose; use search random or grid"
        )


def _base_config(opts: TuneOptions) -> TrainConfig:
    """The config every trial starts from, with absolute paths (trials run in their own trial folders)."""
    overrides = dict(opts.overrides)
    if opts.max_steps is not None:
        overrides["max_steps"] = opts.max_steps
    if isinstance(opts.config, TrainConfig):  # loaded by the caller (reproduce table1): not read again
        base = opts.config.replace(**overrides)
    else:
        base = load_config(opts.config or DEMO_CONFIG, overrides)
    root = Path(base.data_root).expanduser() if base.data_root else default_data_root()
    fixed: dict[str, Any] = {"data_root": str(root.resolve())}
    if base.init_from:
        fixed["init_from"] = str(Path(base.init_from).expanduser().resolve())
    return base.replace(**fixed)


def _config_source(config: str | TrainConfig | None) -> str:
    return (
        "a TrainConfig given by the caller" if isinstance(config, TrainConfig) else str(config or DEMO_CONFIG)
    )


def _space(opts: TuneOptions, base: TrainConfig) -> space_mod.SearchSpace:
    space = opts.space if isinstance(opts.space, space_mod.SearchSpace) else space_mod.load_space(opts.space)
    space = space_mod.force_variants(space, list(opts.force_variants), base)
    space_mod.validate_against(space, base)
    if opts.search == "grid":
        for name, spec in space.params.items():
            if isinstance(spec, tuple) and spec[0] != "choice":
                raise UserError(
                    f"{space.source}: field '{name}': --search grid needs 'choice' values, not '{spec[0]}'"
                )
    return space


def _storage(opts: TuneOptions) -> str:
    if opts.storage and opts.storage.startswith(REMOTE_SCHEMES):
        return opts.storage.rstrip("/")
    return str(Path(opts.storage or Path(opts.out) / "ray").expanduser().resolve())


def _trials(opts: TuneOptions, space: space_mod.SearchSpace, base: TrainConfig):
    """-> (num_samples, trials, points): how many trials, and in a paired sweep each one's values."""
    num_samples = opts.num_samples or (1 if opts.search == "grid" else 4)
    if opts.search == "grid":
        return num_samples, num_samples * space_mod.grid_size(space), ()
    if opts.points:
        if opts.search != "random" or opts.paired:
            raise UserError("explicit trial points need search random (and no paired slots)")
        return len(opts.points), len(opts.points), tuple(dict(p) for p in opts.points)
    if opts.paired:
        points = space_mod.paired_points(space, num_samples, base, opts.seed)
        return len(points), len(points), points
    return num_samples, num_samples, ()


def _stored_state(opts: TuneOptions) -> SweepState | None:
    """The state file of the sweep to resume (None for a new sweep); refuses a name already taken."""
    state_file = Path(opts.out).resolve() / f"state-{opts.name}.json"
    if opts.resume:
        if not state_file.is_file():
            raise UserError(
                f"--resume: no sweep '{opts.name}' in {opts.out} ({state_file.name} missing); "
                "check --out and --name"
            )
        return SweepState.read(state_file)
    exp_path = f"{_storage(opts)}/{opts.name}"
    if state_file.exists() or (not exp_path.startswith(REMOTE_SCHEMES) and Path(exp_path).exists()):
        raise UserError(
            f"--name {opts.name}: a sweep already exists in {opts.out}; add --resume or pick --name"
        )
    return None


def make_plan(opts: TuneOptions) -> SweepPlan:
    """Validate everything that can be checked without Ray or a network and return the sweep's plan."""
    _check_choices(opts)
    base = _base_config(opts)
    space = _space(opts, base)
    resources = plan_resources(opts)
    num_samples, n_trials, points = _trials(opts, space, base)
    stored = _stored_state(opts)
    # resuming without --tracking-uri continues in the store the sweep started in
    uri = opts.tracking_uri or (stored.plan["tracking_uri"] if stored else None)
    plan = SweepPlan(
        name=opts.name, out=str(Path(opts.out).resolve()), config=_config_source(opts.config), base=base,
        space=space, search=opts.search, scheduler=opts.scheduler,
        asha=Asha(min(space.grace_period, base.max_steps), base.max_steps, space.reduction_factor)
        if opts.scheduler == "asha" else None,
        num_samples=num_samples, trials=n_trials, points=points, resources=resources,
        cluster=opts.address or "local", storage=_storage(opts), tracking_uri=tracking.resolve_tracking_uri(uri),
        experiment=opts.experiment, max_failures=opts.max_failures, seed=opts.seed, register=opts.register,
        resume=opts.resume, dry_run=opts.dry_run, verbose=opts.verbose, command_line=opts.command_line,
        num_cpus=opts.num_cpus, ray_temp_dir=opts.ray_temp_dir,
    )  # fmt: skip
    if stored is not None:
        _refuse_changed_resume(plan, stored.plan)
    return plan


# ---------------------------------------------------------------------------------------------- resume

# What `Tuner.restore` cannot change: (what the user passes, the plan key, how to show it)
_RESUME_FIXED = (("--num-samples", "num_samples"), ("--search", "search"), ("--scheduler", "scheduler"))


def resume_difference(plan: SweepPlan, stored: dict[str, Any]) -> str | None:
    """The first difference between a resumed sweep's new plan and the stored one, as a phrase (None: same)."""
    new = json.loads(json.dumps(plan.to_dict(), default=str))
    for flag, key in _RESUME_FIXED:
        if new[key] != stored.get(key):
            return f"{flag} {new[key]} differs from the sweep's {stored.get(key)}"
    old_space, new_space = stored.get("space", {}), new["space"]
    for name in sorted(set(old_space.get("params", {})) | set(new_space["params"])):
        a, b = old_space.get("params", {}).get(name), new_space["params"].get(name)
        if a != b:
            return f"--space field '{name}' is {json.dumps(b)}, the sweep's was {json.dumps(a)}"
    if old_space.get("asha") != new_space["asha"]:
        return f"--space asha {new_space['asha']} differs from the sweep's {old_space.get('asha')}"
    old_base = stored.get("base_config", {})
    for name, value in new["base_config"].items():
        if old_base.get(name) != value:
            return f"--config field '{name}' is {value!r}, the sweep's was {old_base.get(name)!r}"
    return None


def _refuse_changed_resume(plan: SweepPlan, stored: dict[str, Any]) -> None:
    diff = resume_difference(plan, stored)
    if diff:
        raise UserError(
            f"--resume: {diff}; Ray Tune cannot change a sweep while resuming it: resume with the "
            "original options, or start a new sweep with another --name"
        )

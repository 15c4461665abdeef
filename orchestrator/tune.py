"""`fgdsr tune`: a hyperparameter sweep of `fgdsr.train` on Ray Tune, tracked in MLflow.

`run_sweep(opts) -> SweepResult` is the library entry point (the CLI and `fgdsr pipeline` call it):

1. resolve the base config, the search space (the l1 baseline forced in), resources, storage, tracking;
2. initialise the MLflow store and experiment on the driver and open the sweep's parent run;
3. start (or join) Ray, check the budget, refuse multi-node setups without shared storage / an HTTP store;
4. `tune.Tuner(...).fit()` (or `Tuner.restore(..., resume_errored=True)` with `resume=True`);
5. end stray MLflow runs, log plots + checkpoints, export the best trial to `<out>/best/`, register it.

Resources: `concurrency = gpus // gpus_per_trial` (fractional GPUs share a card); `gpus = 0` runs CPU trials
(`cpus // cpus_per_trial` at once); `gpus_per_trial > 1` runs a Ray Train `TorchTrainer` per trial.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.atomic import write_text_atomic
from fgdsr.config import CONFIG_DIR, TrainConfig, load_config
from fgdsr.errors import UserError
from orchestrator import credentials, server, tracking  # [server engineer] credentials, server
from orchestrator import space as space_mod

DEMO_CONFIG = CONFIG_DIR / "tune-demo.yaml"
METRIC = "val_psnr"
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "az://", "hdfs://")
SHARED_FS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "9p", "virtiofs"}


@dataclass
class TuneOptions:
    """Everything `fgdsr tune` takes (CLI flags map 1:1); `force_variants` and `overrides` are for callers."""

    config: str | None = None  # None: fgdsr/configs/tune-demo.yaml
    space: str | None = None  # None: fgdsr/configs/space.yaml
    gpus: float = 0.0  # local cluster size, or the budget on `address`
    gpus_per_trial: float | None = None  # None: 1 when gpus > 0
    cpus_per_trial: float = 1.0
    num_samples: int | None = None  # None: 4 (optuna/random) or 1 pass over the grid
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
    num_cpus: int | None = None  # local cluster CPUs (None: all); ignored with `address`
    seed: int = 0
    register: bool = True
    quiet: bool = False
    command_line: str = ""
    ray_temp_dir: str | None = None  # local cluster's temp dir (tests use it to check for stray processes)
    workers_per_trial: int | None = None  # Ray Train workers per trial; None: gpus_per_trial when > 1, else 1


@dataclass
class TrialSummary:
    trial_id: str
    name: str
    config: dict[str, Any]  # the sampled fields
    variant: str
    state: str  # TERMINATED (finished or early-stopped) | ERROR | RUNNING | PENDING | PAUSED
    steps: int
    val_psnr: float | None  # last reported
    val_ssim: float | None
    best_val_psnr: float | None
    best_val_ssim: float | None
    best_step: int | None
    checkpoint: str | None  # the trial's best checkpoint directory (a local path or a storage URI)
    mlflow_run_id: str | None
    error: str | None = None


@dataclass
class SweepResult:
    plan: dict[str, Any]
    trials: list[TrialSummary] = field(default_factory=list)
    best: TrialSummary | None = None
    best_dir: str | None = None  # <out>/best
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None
    experiment_path: str | None = None
    partial: bool = False  # the sweep was interrupted: some trials never finished
    dry_run: bool = False
    registered: str | None = None  # "<model name>/<version>"
    variant_dirs: dict[str, str] = field(default_factory=dict)  # variant -> <out>/best-<variant>
    wall_s: float = 0.0

    def best_of(self, variant: str) -> TrialSummary | None:
        """The trial of one loss variant with the highest validation PSNR."""
        cands = [t for t in self.trials if t.variant == variant and t.best_val_psnr is not None]
        return max(cands, key=lambda t: t.best_val_psnr) if cands else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ plan


def _resources(opts: TuneOptions) -> dict[str, Any]:
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
    return {
        "gpus": opts.gpus,
        "gpus_per_trial": gpt,
        "cpus_per_trial": opts.cpus_per_trial,
        "workers_per_trial": workers,
        "concurrency": concurrency,
    }


def _storage(opts: TuneOptions) -> str:
    if opts.storage and opts.storage.startswith(REMOTE_SCHEMES):
        return opts.storage.rstrip("/")
    return str(Path(opts.storage or Path(opts.out) / "ray").expanduser().resolve())


def _fs_type(path: str) -> str:
    """The file system type of the mount holding `path` (from /proc/mounts; '' when unknown)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    best, fstype = "", ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and (str(p) == parts[1] or str(p).startswith(parts[1].rstrip("/") + "/")):
                if len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return fstype


def is_shared_storage(storage: str) -> bool:
    if storage.startswith(REMOTE_SCHEMES):
        return True
    fstype = _fs_type(storage)
    return fstype in SHARED_FS or fstype.startswith("fuse.")


def make_plan(opts: TuneOptions) -> tuple[dict[str, Any], TrainConfig, space_mod.SearchSpace]:
    """Validate everything that can be checked without Ray and return (plan, base config, space)."""
    if opts.search not in ("optuna", "random", "grid"):
        raise UserError(f"--search {opts.search}: use optuna, random or grid")
    if opts.scheduler not in ("asha", "fifo"):
        raise UserError(f"--scheduler {opts.scheduler}: use asha or fifo")
    if opts.num_samples is not None and opts.num_samples < 1:
        raise UserError("--num-samples must be at least 1")
    if opts.max_failures < 0:
        raise UserError("max_failures must be >= 0")
    if not opts.name or "/" in opts.name:
        raise UserError(f"--name '{opts.name}': a non-empty folder name without '/'")
    overrides = dict(opts.overrides)
    if opts.max_steps is not None:
        overrides["max_steps"] = opts.max_steps
    base = load_config(opts.config or DEMO_CONFIG, overrides)
    # Trials run with the trial folder as working directory: make relative paths absolute on the driver.
    if base.data_root is None:
        base.data_root = str(Path(os.environ.get("FGDSR_DATA_ROOT") or "datasets").resolve())
    else:
        base.data_root = str(Path(base.data_root).expanduser().resolve())
    if base.init_from:
        base.init_from = str(Path(base.init_from).expanduser().resolve())
    space = space_mod.load_space(opts.space)
    space = space_mod.force_variants(space, list(opts.force_variants), base)
    space_mod.validate_against(space, base)
    if opts.search == "grid":
        for name, spec in space.params.items():
            if isinstance(spec, tuple) and spec[0] != "choice":
                raise UserError(
                    f"{space.source}: field '{name}': --search grid needs 'choice' values, not '{spec[0]}'"
                )
    res = _resources(opts)
    num_samples = opts.num_samples or (1 if opts.search == "grid" else 4)
    n_trials = num_samples * (space_mod.grid_size(space) if opts.search == "grid" else 1)
    uri = tracking.resolve_tracking_uri(opts.tracking_uri)
    storage = _storage(opts)
    grace = min(space.grace_period, base.max_steps)
    plan = {
        "name": opts.name,
        "trials": n_trials,
        "num_samples": num_samples,
        "search": opts.search,
        "scheduler": opts.scheduler,
        "asha": {
            "metric": METRIC,
            "time_attr": "step",
            "grace_period": grace,
            "max_t": base.max_steps,
            "reduction_factor": space.reduction_factor,
        }
        if opts.scheduler == "asha"
        else None,
        "resources": res,
        "cluster": opts.address or "local",
        "storage": storage,
        "experiment_path": f"{storage}/{opts.name}",
        "tracking_uri": uri,
        "experiment": opts.experiment,
        "max_failures": opts.max_failures,
        "out": str(Path(opts.out).resolve()),
        "config": str(opts.config or DEMO_CONFIG),
        "base_config": base.to_dict(),
        "space": space.describe(),
        "resume": opts.resume,
    }
    return plan, base, space


# ---------------------------------------------------------------------------------------------- ray


def _start_ray(opts: TuneOptions, res: dict[str, Any]) -> bool:
    """Start a local cluster or join one; returns True when this call started Ray (so it must stop it)."""
    import ray

    if ray.is_initialized():
        return False  # the caller's cluster (tests, notebooks): use it, and leave it running
    env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}}
    if opts.address:
        # Ray refuses num_cpus/num_gpus when joining: --gpus is a budget checked below
        ray.init(address=opts.address, runtime_env=env, log_to_driver=False)
    else:
        ray.init(
            num_cpus=opts.num_cpus or os.cpu_count(),
            num_gpus=int(math.ceil(opts.gpus)),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=env,
            _temp_dir=opts.ray_temp_dir,
        )
    return True


def _check_cluster(opts: TuneOptions, plan: dict[str, Any]) -> dict[str, Any]:
    """Budget and multi-node checks against the running cluster; returns the cluster's facts."""
    import ray

    total = ray.cluster_resources()
    hosts = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})
    res = plan["resources"]
    have_gpus = float(total.get("GPU", 0))
    if opts.gpus > have_gpus + 1e-9:
        raise UserError(f"--gpus {opts.gpus}: the Ray cluster has {have_gpus:g} GPUs; lower --gpus")
    need_cpu = res["cpus_per_trial"] * res["workers_per_trial"]
    if need_cpu > float(total.get("CPU", 0)) + 1e-9:
        raise UserError(
            f"--cpus-per-trial {opts.cpus_per_trial}: the Ray cluster has {total.get('CPU', 0):g} CPUs"
        )
    if len(hosts) > 1:
        if not is_shared_storage(plan["storage"]):
            raise UserError(
                f"--storage {plan['storage']}: a {len(hosts)}-host cluster needs shared storage; "
                "pass an NFS path or s3://bucket/prefix"
            )
        if not tracking.is_http(plan["tracking_uri"]):
            raise UserError(
                f"--tracking-uri {plan['tracking_uri']}: a {len(hosts)}-host cluster needs an MLflow server; "
                "start `fgdsr tracking-server --host 0.0.0.0` and pass --tracking-uri http://HOST:5000"
            )
    return {"resources": {k: v for k, v in total.items() if not k.startswith("node:")}, "hosts": hosts}


# ------------------------------------------------------------------------------------------- driver


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _state_file(opts: TuneOptions) -> Path:
    return Path(opts.out).resolve() / f"state-{opts.name}.json"


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def _searcher(opts: TuneOptions, space: space_mod.SearchSpace, concurrency: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    forced = [dict(p) for p in space.forced]
    if opts.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=forced or None, seed=opts.seed)
    if opts.search == "random":
        return BasicVariantGenerator(
            points_to_evaluate=forced or None, random_state=opts.seed, max_concurrent=concurrency
        )
    return BasicVariantGenerator(max_concurrent=concurrency)


def _trainable(sweep: dict[str, Any], res: dict[str, Any]):
    from ray import tune

    from orchestrator.trainable import trial_main

    if res["workers_per_trial"] > 1:
        resources = {"cpu": 0.1}  # the trial only drives a TorchTrainer; its workers hold the GPUs
    else:
        resources = {"cpu": res["cpus_per_trial"], "gpu": res["gpus_per_trial"]}
    return tune.with_resources(tune.with_parameters(trial_main, sweep=sweep), resources)


def run_sweep(opts: TuneOptions) -> SweepResult:
    """Run (or with `dry_run`, only plan) a sweep; see the module docstring."""
    t0 = time.perf_counter()
    plan, base, space = make_plan(opts)
    state_file = _state_file(opts)
    exp_path = plan["experiment_path"]
    if opts.resume:
        if not state_file.is_file():
            raise UserError(
                f"--resume: no sweep '{opts.name}' in {opts.out} ({state_file.name} missing); "
                "check --out and --name"
            )
    elif state_file.exists() or (not exp_path.startswith(REMOTE_SCHEMES) and Path(exp_path).exists()):
        raise UserError(
            f"--name {opts.name}: a sweep already exists in {opts.out}; add --resume or pick --name"
        )
    if opts.dry_run:
        return SweepResult(
            plan=plan, dry_run=True, tracking_uri=plan["tracking_uri"], experiment_path=exp_path
        )

    import ray
    from ray import tune

    res = plan["resources"]
    state = json.loads(state_file.read_text()) if opts.resume else None
    uri = state["tracking_uri"] if state and not opts.tracking_uri else plan["tracking_uri"]
    server.check_access(uri)  # [server engineer] a missing login or a dead server: one line, before Ray
    started = _start_ray(opts, res)
    shared = None  # [server engineer] the MLflow login held for remote workers
    parent_id = None
    exp_id = None
    status = "FAILED"
    result = SweepResult(plan=plan, tracking_uri=uri, experiment_path=exp_path)
    try:
        shared = credentials.share_with_workers(uri)  # [server engineer]
        cluster = _check_cluster(opts, plan)
        exp_id = tracking.init_experiment(uri, opts.experiment)
        if state:
            parent_id = state["parent_run_id"]
            tracking.retry(lambda: tracking.client(uri).update_run(parent_id, status="RUNNING"))
            sweep = state["sweep"]
        else:
            from fgdsr import __version__

            parent_id = tracking.start_parent_run(
                uri,
                exp_id,
                opts.name,
                params={
                    "search": opts.search,
                    "scheduler": opts.scheduler,
                    "trials": plan["trials"],
                    "gpus": opts.gpus,
                    "gpus_per_trial": res["gpus_per_trial"],
                    "concurrency": res["concurrency"],
                    "space": json.dumps(space.describe()["params"]),
                    **{f"base.{k}": v for k, v in base.to_dict().items()},
                },
                tags={
                    "fgdsr.sweep": opts.name,
                    "command": opts.command_line or "run_sweep",
                    "git_commit": _git_commit(),
                    "fgdsr_version": __version__,
                    "hardware": json.dumps(cluster),
                    "host": platform.node(),
                },
            )
            sweep = {
                "base": base.to_dict(),
                "tracking_uri": uri,
                "experiment_id": exp_id,
                "parent_run_id": parent_id,
                "workers_per_trial": res["workers_per_trial"],
                "use_gpu": res["gpus_per_trial"] > 0,
                "cpus_per_worker": res["cpus_per_trial"],
                "storage": plan["storage"],
            }
            _write_json(
                state_file,
                {
                    "parent_run_id": parent_id,
                    "experiment_id": exp_id,
                    "tracking_uri": uri,
                    "experiment_path": exp_path,
                    "sweep": sweep,
                    "plan": plan,
                },
            )
            _log_parent_plan(uri, parent_id, plan)
        result.parent_run_id, result.experiment_id = parent_id, exp_id
        trainable = _trainable(sweep, res)
        if opts.resume:
            if not tune.Tuner.can_restore(exp_path):
                raise UserError(f"--resume: {exp_path} holds no restorable Tune experiment")
            tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space_mod.to_param_space(space, opts.search),
                tune_config=tune.TuneConfig(
                    metric=METRIC,
                    mode="max",
                    search_alg=_searcher(opts, space, res["concurrency"]),
                    scheduler=_scheduler(opts, plan),
                    num_samples=plan["num_samples"],
                    # BasicVariantGenerator (random, grid) limits concurrency itself; Optuna needs Tune's limit
                    max_concurrent_trials=res["concurrency"] if opts.search == "optuna" else None,
                ),
                run_config=tune.RunConfig(
                    name=opts.name,
                    storage_path=plan["storage"],
                    failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                    # Keep every checkpoint: with num_to_keep, a checkpoint that the last experiment
                    # snapshot still points to can be deleted before the next snapshot, and a driver
                    # killed in between cannot be resumed ("checkpoint does not exist on storage").
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=None, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"
                    ),
                    verbose=0 if opts.quiet else 1,
                ),
            )
        grid = tuner.fit()
        _collect(grid, result, uri, exp_id, parent_id)
        if not result.partial:
            _finalise(opts, result, uri)
        status = "KILLED" if result.partial else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent_id is not None:
            try:
                tracking.retry(lambda: tracking.client(uri).set_terminated(parent_id, status=status))
            except Exception:  # never mask the sweep's own error
                pass
        credentials.stop_sharing(shared)  # [server engineer]
        if started:
            ray.shutdown()
    result.wall_s = time.perf_counter() - t0
    _write_json(Path(opts.out).resolve() / "sweep.json", result.to_dict())
    return result


def _scheduler(opts: TuneOptions, plan: dict[str, Any]):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if opts.scheduler == "fifo":
        return FIFOScheduler()
    a = plan["asha"]
    return ASHAScheduler(
        time_attr="step",
        max_t=a["max_t"],
        grace_period=a["grace_period"],
        reduction_factor=a["reduction_factor"],
    )


def _log_parent_plan(uri: str, parent_id: str, plan: dict[str, Any]) -> None:
    import tempfile

    c = tracking.client(uri)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "plan.json"
        p.write_text(json.dumps(plan, indent=2, default=str))
        tracking.retry(lambda: c.log_artifact(parent_id, str(p)))


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def _collect(grid, result: SweepResult, uri: str, exp_id: str, parent_id: str) -> None:
    """Fill `result.trials` from Tune's results and end any MLflow run Tune left RUNNING."""
    runs = {
        r.data.tags.get(tracking.TRIAL_TAG): r.info.run_id
        for r in tracking.child_runs(uri, exp_id, parent_id)
    }
    trials = {t.trial_id: t for t in grid._experiment_analysis.trials}
    status_of: dict[str, str] = {}
    for r in grid:
        tid = (r.metrics or {}).get("trial_id") or next(
            (k for k, t in trials.items() if t.path == r.path), None
        )
        trial = trials.get(tid)
        state = trial.status if trial is not None else "UNKNOWN"
        df = r.metrics_dataframe
        best_psnr = best_ssim = best_step = None
        if df is not None and METRIC in df and df[METRIC].notna().any():
            i = df[METRIC].idxmax()
            best_psnr, best_ssim = _f(df.loc[i, METRIC]), _f(df.loc[i].get("val_ssim"))
            best_step = int(df.loc[i, "step"])
        ckpt = None
        try:
            best_ckpt = r.get_best_checkpoint(METRIC, "max") if r.best_checkpoints else None
        except Exception:
            best_ckpt = None
        best_ckpt = best_ckpt or r.checkpoint
        if best_ckpt is not None:
            ckpt = best_ckpt.path
        elif (
            best_psnr is not None
            and "checkpoint_path" in df
            and isinstance(df.loc[i, "checkpoint_path"], str)
        ):
            # a TorchTrainer trial: Ray Train persisted the checkpoint and Tune only got its path
            ckpt = df.loc[i, "checkpoint_path"]
        cfg = dict(trial.config) if trial is not None else dict(r.config or {})
        result.trials.append(
            TrialSummary(
                trial_id=str(tid),
                name=str(trial) if trial is not None else str(tid),
                config=cfg,
                variant=str(cfg.get("loss", (result.plan["base_config"] or {}).get("loss"))),
                state=state,
                steps=int((r.metrics or {}).get("step", 0) or 0),
                val_psnr=_f((r.metrics or {}).get(METRIC)),
                val_ssim=_f((r.metrics or {}).get("val_ssim")),
                best_val_psnr=best_psnr,
                best_val_ssim=best_ssim,
                best_step=best_step,
                checkpoint=ckpt,
                mlflow_run_id=runs.get(tid),
                error=str(r.error).splitlines()[0][:300] if r.error else None,
            )
        )
        status_of[str(tid)] = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(state, "KILLED")
    result.partial = any(t.state not in ("TERMINATED", "ERROR") for t in result.trials)
    tracking.terminate_open_runs(uri, exp_id, parent_id, status_of)
    done = [t for t in result.trials if t.best_val_psnr is not None and t.state == "TERMINATED"]
    result.best = max(done, key=lambda t: t.best_val_psnr) if done else None


def _copy_checkpoint(src: str, dst: Path) -> None:
    """Copy a checkpoint (local path or storage URI) to `dst`, atomically replacing it."""
    from ray import tune

    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if src.startswith(REMOTE_SCHEMES):
        tune.Checkpoint(src).to_directory(str(tmp))
    else:
        shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _finalise(opts: TuneOptions, result: SweepResult, uri: str) -> None:
    """Plots and checkpoints into the child runs, `<out>/best[-<variant>]/`, the model registry."""
    out = Path(opts.out).resolve()
    c = tracking.client(uri)
    for t in result.trials:
        if t.mlflow_run_id is None:
            continue
        _log_trial_artifacts(c, t, uri)
    if result.best is None or result.best.checkpoint is None:
        return
    best_dir = out / "best"
    _copy_checkpoint(result.best.checkpoint, best_dir)
    result.best_dir = str(best_dir)
    for variant in sorted({t.variant for t in result.trials}):
        b = result.best_of(variant)
        if b is not None and b.checkpoint is not None and b.state == "TERMINATED":
            d = out / f"best-{variant}"
            _copy_checkpoint(b.checkpoint, d)
            result.variant_dirs[variant] = str(d)
    _write_json(best_dir.with_name("best.json"), dataclasses.asdict(result.best))
    if opts.register and result.best.mlflow_run_id:
        name = f"fgdsr-lapsrn-{result.best.variant}"
        version = tracking.register_model(uri, name, result.best.mlflow_run_id, "checkpoint")
        result.registered = f"{name}/{version}"
        tracking.retry(lambda: c.set_tag(result.parent_run_id, "best_trial", result.best.trial_id))
        tracking.retry(lambda: c.set_tag(result.parent_run_id, "registered_model", result.registered))
        tracking.retry(lambda: c.log_metric(result.parent_run_id, "best_val_psnr", result.best.best_val_psnr))


def _log_trial_artifacts(c, t: TrialSummary, uri: str) -> None:
    """Validation curve plot + the trial's best checkpoint, into its child run."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = tracking.retry(lambda: c.get_metric_history(t.mlflow_run_id, METRIC))
    hist_ssim = tracking.retry(lambda: c.get_metric_history(t.mlflow_run_id, "val_ssim"))
    with tempfile.TemporaryDirectory() as d:
        if hist:
            fig, ax = plt.subplots(1, 2, figsize=(8, 3))
            for a, h, label in ((ax[0], hist, "val PSNR (dB)"), (ax[1], hist_ssim, "val SSIM")):
                pts = sorted((m.step, m.value) for m in h)
                a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
                a.set_xlabel("step")
                a.set_ylabel(label)
            fig.suptitle(f"{t.name} ({t.variant})")
            fig.tight_layout()
            fig.savefig(Path(d) / "validation.png", dpi=80)
            plt.close(fig)
            tracking.retry(lambda: c.log_artifact(t.mlflow_run_id, str(Path(d) / "validation.png"), "plots"))
        if t.checkpoint is not None:
            local = Path(d) / "checkpoint"
            _copy_checkpoint(t.checkpoint, local)
            tracking.retry(lambda: c.log_artifacts(t.mlflow_run_id, str(local), "checkpoint"))

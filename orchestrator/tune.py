"""`fgdsr tune`: a hyperparameter sweep of `fgdsr.train` on Ray Tune, tracked in MLflow.

`run_sweep(plan) -> SweepResult` is the library entry point (the CLI, `fgdsr pipeline` and `fgdsr reproduce`
call it with a plan from `orchestrator.plan.make_plan`). Its stages:

1. preflight: the tracking server and the Ray address answer (seconds, before Ray starts);
2. start (or join) Ray, check the budget, refuse multi-node setups without shared storage / an HTTP store;
3. open tracking: the MLflow experiment and the sweep's parent run (new, or the stored one on `--resume`), the
   state file;
4. fit: `tune.Tuner(...).fit()` (or `Tuner.restore(..., resume_errored=True)`);
5. collect the trials (`orchestrator.trials`), end stray MLflow runs;
6. finalise: plots + checkpoints into the child runs, the best trial to `<out>/best/` (and `best-<variant>`),
   the model registry; analyse: the Optuna study, importances, parallel coordinates (`orchestrator.analysis`).

Library output (Ray, MLflow, Optuna) goes to `<out>/fgdsr.log` unless the plan is verbose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fgdsr.atomic import write_text_atomic
from fgdsr.errors import UserError
from orchestrator import credentials, server, tracking
from orchestrator import space as space_mod
from orchestrator.logs import library_output
from orchestrator.plan import METRIC, REMOTE_SCHEMES, SweepPlan, SweepState, TrialContext
from orchestrator.trials import SweepResult, TrialSummary

SHARED_FS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "9p", "virtiofs"}


@dataclass(frozen=True)
class Session:
    """The MLflow side of a running sweep."""

    experiment_id: str
    parent_run_id: str


def run_sweep(plan: SweepPlan) -> SweepResult:
    """Run (or with `plan.dry_run`, only check) a sweep; see the module docstring."""
    t0 = time.perf_counter()
    if plan.dry_run:  # the plan only: no network (a cluster's hosts need not resolve where it is planned)
        return SweepResult(plan=plan, dry_run=True)
    preflight(plan)
    with library_output(plan.log_file, plan.verbose):
        result = _run(plan, t0)
    result = dataclasses.replace(result, wall_s=time.perf_counter() - t0)
    write_text_atomic(Path(plan.out) / "sweep.json", json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _run(plan: SweepPlan, t0: float) -> SweepResult:
    import ray

    started = start_ray(plan)
    session, status, shared = None, "FAILED", None
    with DriverStop() as stop:  # after ray.init, which sets its own SIGTERM handler (sys.exit)
        try:
            shared = credentials.share_with_workers(plan.tracking_uri)  # the MLflow login for remote workers
            cluster = check_cluster(plan)
            session = open_tracking(plan, cluster)
            with stop.fitting():
                grid = fit(plan, session)
            result = dataclasses.replace(collect(grid, plan, session), stopped_by=stop.received)
            if not result.partial:
                result = dataclasses.replace(finalise(result), wall_s=time.perf_counter() - t0)
                from orchestrator.analysis import analyse_sweep

                result = dataclasses.replace(result, analysis=analyse_sweep(result).to_dict())
            status = "KILLED" if result.partial else "FINISHED"
            return result
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if session is not None:
                try:
                    tracking.end_run(plan.tracking_uri, session.parent_run_id, status)
                except Exception:  # never mask the sweep's own error
                    pass
            credentials.stop_sharing(shared)
            if started:
                ray.shutdown()


class DriverStop:
    """SIGTERM to the driver (preemption, `kill`, a Kubernetes pod ending) as Tune's own graceful stop.

    While `fit` runs, the first SIGTERM does what Ctrl-C does to Tune: it saves the experiment state once more
    and stops the trials (their MLflow runs end KILLED), and `run_sweep` returns a partial result with
    `stopped_by` set, which `fgdsr tune --resume` finishes. A second SIGTERM, or one outside `fit`, stops at
    once (KeyboardInterrupt). Installed on the main thread only (Python delivers signals there).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._in_fit = False
        self._previous = None

    def __enter__(self) -> DriverStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    @contextlib.contextmanager
    def fitting(self) -> Iterator[None]:
        self._in_fit = True
        try:
            yield
        finally:
            self._in_fit = False

    def _handle(self, signum: int, frame) -> None:
        # Tune's SIGINT/SIGUSR1 handler (ray.tune.tune._setup_signal_catching) is installed inside fit and
        # never removed: only call it while fit runs
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if self._in_fit and self.received is None and callable(tune_stop):
            self.received = signal.Signals(signum).name
            tune_stop(signum, frame)
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)


# ------------------------------------------------------------------------------------------ preflight


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) Ray address must accept a connection; Ray itself would retry for minutes."""
    if address in ("local", "auto"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(
            f"--address {address}: no Ray cluster answers ({e.strerror or e}); start one with "
            "`ray start --head` or fix the address"
        ) from None


def preflight(plan: SweepPlan) -> None:
    """What would otherwise hang for minutes: an MLflow server or a Ray cluster that is not there."""
    server.check_access(plan.tracking_uri)  # no server, or a login missing / refused: one line, before Ray
    check_ray_address(plan.cluster)


# ---------------------------------------------------------------------------------------------- ray


def start_ray(plan: SweepPlan) -> bool:
    """Start a local cluster or join one; returns True when this call started Ray (so it must stop it)."""
    import ray

    if ray.is_initialized():
        return False  # the caller's cluster (tests, notebooks): use it, and leave it running
    env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}}
    if plan.cluster != "local":
        # Ray refuses num_cpus/num_gpus when joining: --gpus is a budget checked below
        try:
            ray.init(address=plan.cluster, runtime_env=env, log_to_driver=False)
        except ConnectionError as e:
            raise UserError(f"--address {plan.cluster}: {str(e).splitlines()[0]}") from None
    else:
        ray.init(
            num_cpus=plan.num_cpus or os.cpu_count(),
            num_gpus=math.ceil(plan.resources.gpus),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=env,
            _temp_dir=plan.ray_temp_dir,
        )
    return True


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


def check_cluster(plan: SweepPlan) -> dict:
    """Budget and multi-node checks against the running cluster; returns the cluster's facts."""
    import ray

    total = ray.cluster_resources()
    hosts = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})
    res = plan.resources
    have_gpus = float(total.get("GPU", 0))
    if res.gpus > have_gpus + 1e-9:
        raise UserError(f"--gpus {res.gpus}: the Ray cluster has {have_gpus:g} GPUs; lower --gpus")
    if res.cpus_per_trial * res.workers_per_trial > float(total.get("CPU", 0)) + 1e-9:
        raise UserError(
            f"--cpus-per-trial {res.cpus_per_trial}: the Ray cluster has {total.get('CPU', 0):g} CPUs"
        )
    if len(hosts) > 1:
        if not is_shared_storage(plan.storage):
            raise UserError(
                f"--storage {plan.storage}: a {len(hosts)}-host cluster needs shared storage; "
                "pass an NFS path or s3://bucket/prefix"
            )
        if not tracking.is_http(plan.tracking_uri):
            raise UserError(
                f"--tracking-uri {plan.tracking_uri}: a {len(hosts)}-host cluster needs an MLflow server; "
                "start `fgdsr tracking-server --host 0.0.0.0` and pass --tracking-uri http://HOST:5000"
            )
    return {"resources": {k: v for k, v in total.items() if not k.startswith("node:")}, "hosts": hosts}


# ------------------------------------------------------------------------------------------ tracking


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def open_tracking(plan: SweepPlan, cluster: dict) -> Session:
    """The experiment and the parent run: new (and the state file written), or the stored ones on resume."""
    uri = plan.tracking_uri
    exp_id = tracking.init_experiment(uri, plan.experiment)
    if plan.resume:
        state = SweepState.read(plan.state_file)
        tracking.retry(lambda: tracking.client(uri).update_run(state.parent_run_id, status="RUNNING"))
        return Session(state.experiment_id, state.parent_run_id)
    from fgdsr import __version__

    res = plan.resources
    params = {"search": plan.search, "scheduler": plan.scheduler, "trials": plan.trials, "gpus": res.gpus,
              "gpus_per_trial": res.gpus_per_trial, "concurrency": res.concurrency,
              "space": json.dumps(plan.space.describe()["params"]),
              **{f"base.{k}": v for k, v in plan.base.to_dict().items()}}  # fmt: skip
    tags = {tracking.SWEEP_TAG: plan.name, "command": plan.command_line or "run_sweep",
            "git_commit": _git_commit(), "fgdsr_version": __version__, "hardware": json.dumps(cluster),
            "host": platform.node()}  # fmt: skip
    parent_id = tracking.start_parent_run(uri, exp_id, plan.name, params=params, tags=tags)
    SweepState(plan.to_dict(), exp_id, parent_id).write(plan.state_file)
    with tempfile.TemporaryDirectory() as d:
        write_text_atomic(Path(d) / "plan.json", json.dumps(plan.to_dict(), indent=2, default=str))
        tracking.log_files(uri, parent_id, [Path(d) / "plan.json"])
    return Session(exp_id, parent_id)


# ----------------------------------------------------------------------------------------------- fit


def _searcher(plan: SweepPlan):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    forced = [dict(p) for p in plan.space.forced]
    concurrency = plan.resources.concurrency
    if plan.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # the study lives in the sweep folder: `optuna-dashboard sqlite:///<out>/optuna.db`
        storage = optuna.storages.RDBStorage(plan.study_storage)
        return OptunaSearch(points_to_evaluate=forced or None, seed=plan.seed, storage=storage,
                            study_name=plan.name)  # fmt: skip
    if plan.search == "random":
        points = [dict(p) for p in plan.points] or forced
        return BasicVariantGenerator(points_to_evaluate=points or None, random_state=plan.seed,
                                     max_concurrent=concurrency)  # fmt: skip
    return BasicVariantGenerator(max_concurrent=concurrency)


def _scheduler(plan: SweepPlan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if plan.asha is None:
        return FIFOScheduler()
    a = plan.asha
    return ASHAScheduler(time_attr=a.time_attr, max_t=a.max_t, grace_period=a.grace_period,
                         reduction_factor=a.reduction_factor)  # fmt: skip


def _trainable(ctx: TrialContext):
    from ray import tune

    from orchestrator.trainable import trial_main

    if ctx.resources.workers_per_trial > 1:
        resources = {"cpu": 0.1}  # the trial only drives a TorchTrainer; its workers hold the GPUs
    else:
        resources = {"cpu": ctx.resources.cpus_per_trial, "gpu": ctx.resources.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(trial_main, ctx=ctx), resources)


def fit(plan: SweepPlan, session: Session):
    """Tune's fit (or restore and fit) -> its ResultGrid."""
    from ray import tune

    trainable = _trainable(TrialContext.from_plan(plan, session.experiment_id, session.parent_run_id))
    if plan.resume:
        if not tune.Tuner.can_restore(plan.experiment_path):
            raise UserError(f"--resume: {plan.experiment_path} holds no restorable Tune experiment")
        return tune.Tuner.restore(plan.experiment_path, trainable=trainable, resume_errored=True).fit()
    concurrency = plan.resources.concurrency
    tuner = tune.Tuner(
        trainable,
        param_space=space_mod.to_param_space(plan.space, plan.search),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=_searcher(plan),
            scheduler=_scheduler(plan),
            num_samples=plan.num_samples,
            # BasicVariantGenerator (random, grid) limits concurrency itself; Optuna needs Tune's limit
            max_concurrent_trials=concurrency if plan.search == "optuna" else None,
        ),  # fmt: skip
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            # Keep every checkpoint: with num_to_keep, a checkpoint that the last experiment snapshot still
            # points to can be deleted before the next snapshot, and a driver killed in between cannot be
            # resumed ("checkpoint does not exist on storage").
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"
            ),
            verbose=0,  # fgdsr prints its own progress; Tune's box goes to the log file anyway
        ),
    )
    return tuner.fit()


# ------------------------------------------------------------------------------------------- collect


def _f(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def _best_checkpoint(r, df, best_row) -> str | None:
    """The trial's checkpoint with the best validation PSNR (a local path or a storage URI)."""
    try:
        ckpt = r.get_best_checkpoint(METRIC, "max") if r.best_checkpoints else None
    except Exception:
        ckpt = None
    ckpt = ckpt or r.checkpoint
    if ckpt is not None:
        return ckpt.path
    if (
        best_row is not None
        and "checkpoint_path" in df
        and isinstance(df.loc[best_row, "checkpoint_path"], str)
    ):
        return df.loc[best_row, "checkpoint_path"]  # a TorchTrainer trial: Tune only got Ray Train's path
    return None


def _state(trial) -> str:
    """Tune's status of `trial`; INTERRUPTED when a stop (SIGTERM, Ctrl-C) ended `fit` while it ran: Tune then
    marks it TERMINATED in memory, but its last result is not `done` (neither finished nor stopped by the
    scheduler) and the experiment state Tune saved still has it running, so `--resume` continues it."""
    if trial is None:
        return "UNKNOWN"
    if trial.status == "TERMINATED" and not (trial.last_result or {}).get("done"):
        return "INTERRUPTED"
    return trial.status


def _summary(r, trial, tid: str, plan: SweepPlan, run_id: str | None) -> TrialSummary:
    """One Tune result as a TrialSummary."""
    df = r.metrics_dataframe
    best_row = None
    if df is not None and METRIC in df and df[METRIC].notna().any():
        best_row = df[METRIC].idxmax()
    metrics = r.metrics or {}
    cfg = dict(trial.config) if trial is not None else dict(r.config or {})
    return TrialSummary(
        trial_id=tid, name=str(trial) if trial is not None else tid, config=cfg,
        variant=str(cfg.get("loss", plan.base.loss)), state=_state(trial),
        steps=int(metrics.get("step", 0) or 0), val_psnr=_f(metrics.get(METRIC)),
        val_ssim=_f(metrics.get("val_ssim")),
        best_val_psnr=_f(df.loc[best_row, METRIC]) if best_row is not None else None,
        best_val_ssim=_f(df.loc[best_row].get("val_ssim")) if best_row is not None else None,
        best_step=int(df.loc[best_row, "step"]) if best_row is not None else None,
        checkpoint=_best_checkpoint(r, df, best_row), mlflow_run_id=run_id,
        error=str(r.error).splitlines()[0][:300] if r.error else None,
        label=space_mod.trial_label(cfg, str(cfg.get("loss", plan.base.loss)), space_mod.sampled_fields(plan.space)),
    )  # fmt: skip


def collect(grid, plan: SweepPlan, session: Session) -> SweepResult:
    """Tune's results as a SweepResult; ends any MLflow run Tune left RUNNING."""
    uri, exp_id, parent_id = plan.tracking_uri, session.experiment_id, session.parent_run_id
    runs = {
        r.data.tags.get(tracking.TRIAL_TAG): r.info.run_id
        for r in tracking.child_runs(uri, exp_id, parent_id)
    }
    trials = {t.trial_id: t for t in grid._experiment_analysis.trials}
    summaries = []
    for r in grid:
        tid = (r.metrics or {}).get("trial_id") or next(
            (k for k, t in trials.items() if t.path == r.path), None
        )
        summaries.append(_summary(r, trials.get(tid), str(tid), plan, runs.get(tid)))
    status_of = {
        t.trial_id: {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(t.state, "KILLED") for t in summaries
    }
    tracking.terminate_open_runs(uri, exp_id, parent_id, status_of)
    return SweepResult(plan=plan, trials=tuple(summaries), parent_run_id=parent_id, experiment_id=exp_id,
                       partial=any(t.state not in ("TERMINATED", "ERROR") for t in summaries))  # fmt: skip


# ------------------------------------------------------------------------------------------ finalise


def copy_checkpoint(src: str, dst: Path) -> None:
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


def export_best(result: SweepResult) -> SweepResult:
    """`<out>/best-<variant>` for each variant's best finished trial, `<out>/best` + best.json for the best."""
    out = Path(result.plan.out)
    exported = {}
    for variant in result.variants():
        b = result.best(variant)
        if b is not None and b.checkpoint is not None:
            copy_checkpoint(b.checkpoint, out / f"best-{variant}")
            exported[b.trial_id] = str(out / f"best-{variant}")
    trials = tuple(dataclasses.replace(t, exported=exported.get(t.trial_id)) for t in result.trials)
    result = dataclasses.replace(result, trials=trials)
    best = result.best()
    if best is None or best.checkpoint is None:
        return result
    copy_checkpoint(best.checkpoint_dir, out / "best")
    write_text_atomic(out / "best.json", json.dumps(dataclasses.asdict(best), indent=2, default=str))
    return dataclasses.replace(result, best_dir=str(out / "best"))


def register_best(result: SweepResult) -> SweepResult:
    """The best trial's checkpoint as a new version of `fgdsr-lapsrn-<variant>` in the model registry."""
    best = result.best()
    if not result.plan.register or best is None or best.mlflow_run_id is None or result.best_dir is None:
        return result
    uri = result.tracking_uri
    name = f"fgdsr-lapsrn-{best.variant}"
    registered = f"{name}/{tracking.register_model(uri, name, best.mlflow_run_id, 'checkpoint')}"
    tracking.log_batch(tracking.client(uri), result.parent_run_id, metrics=tracking.metric_list(
        {"best_val_psnr": best.best_val_psnr}), tags={"best_trial": best.trial_id, "registered_model": registered})  # fmt: skip
    return dataclasses.replace(result, registered=registered)


def finalise(result: SweepResult) -> SweepResult:
    """Plots and checkpoints into the child runs, the best trials exported, the best one registered."""
    for t in result.trials:
        if t.mlflow_run_id is not None:
            _log_trial_artifacts(t, result.tracking_uri)
    return register_best(export_best(result))


def _log_trial_artifacts(t: TrialSummary, uri: str) -> None:
    """Validation curve plot + the trial's best checkpoint, into its child run."""
    from orchestrator.figures import plot_validation_curves

    curves = {k: tracking.metric_history(uri, t.mlflow_run_id, k) for k in (METRIC, "val_ssim")}
    with tempfile.TemporaryDirectory() as d:
        files = []
        if curves[METRIC]:
            files.append(
                plot_validation_curves(curves, f"{t.label} ({t.trial_id})", Path(d) / "validation.png")
            )
        tracking.log_files(uri, t.mlflow_run_id, files, "plots")
        if t.checkpoint is not None:
            copy_checkpoint(t.checkpoint, Path(d) / "checkpoint")
            tracking.log_files(uri, t.mlflow_run_id, [Path(d) / "checkpoint"])

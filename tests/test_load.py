"""Load: 16 trials logging at once (`ray.init(num_gpus=4)`, 0.25 logical GPU per trial) against MLflow on
a real PostgreSQL behind `fgdsr tracking-server`, and against the sqlite default store.

Every run must end FINISHED and hold every metric point exactly once. What is expected comes from Ray, not
MLflow: each trial's Tune reports (its `result.json` in the Tune storage) name the training metrics it
logged (`train/<name>`) and the validation steps. No "database is locked" may reach the user (the driver's
output); how often it shows in the workers' logs (tracking.retry retries it silently) is printed with the
wall time and points/s (copied into docs/RELIABILITY.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from server_util import count_points, free_port, grep_tree, running_postgres, serving

from orchestrator import tracking

TRIALS = 16
STEPS = 16  # logged at every step (log_every 1); validated at VAL_EVERY and at the end
VAL_EVERY = 8
LOCKED = "database is locked"


def _sweep(tmp: Path, uri: str | None):
    """The only call into orchestrator.tune here (the lead adapts it if run_sweep's signature changes)."""
    from tune_util import tiny_opts

    from orchestrator.plan import make_plan
    from orchestrator.tune import run_sweep

    opts = tiny_opts(
        tmp,
        steps=STEPS,
        val_every=VAL_EVERY,
        tracking_uri=uri,
        gpus=4,
        gpus_per_trial=0.25,
        num_samples=TRIALS,
        num_cpus=None,  # the caller's cluster
        register=False,
    )
    t0 = time.time()
    result = run_sweep(make_plan(opts))
    return opts, result, (t0, time.time())


@pytest.fixture(scope="module")
def ray_16():
    """One local Ray for both stores: 16 logical CPUs and 4 logical GPUs on this (2-core) machine."""
    import ray

    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    ray.init(num_cpus=TRIALS, num_gpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=str(folder))
    try:
        yield folder
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def _locked_in_logs(ray_dir: Path) -> int:
    return sum(Path(p).read_text(errors="replace").count(LOCKED) for p in grep_tree(ray_dir, LOCKED))


def _check_and_report(store: str, uri: str, run: tuple, ray_dir: Path, before: int, capfd) -> None:
    """Assert that everything arrived, then print the figures. `run`: what `_sweep` returned."""
    opts, result, span = run
    assert not result.partial and len(result.trials) == TRIALS
    assert all(t.state == "TERMINATED" and t.steps == STEPS and t.error is None for t in result.trials)
    runs = tracking.child_runs(uri, result.experiment_id, result.parent_run_id)
    # all 16 were logging at the same time: every run started before the first one ended
    assert max(r.info.start_time for r in runs) < min(r.info.end_time for r in runs)
    assert result.plan.resources.concurrency == TRIALS
    n_expected, n_found = count_points(uri, result, Path(opts.out) / "ray" / opts.name, STEPS)
    assert len(runs) == TRIALS and n_found == n_expected
    out, err = capfd.readouterr()
    assert LOCKED not in out + err  # nothing surfaced to the user
    retried = _locked_in_logs(ray_dir) - before
    load = os.getloadavg()
    wall = span[1] - span[0]
    # where the time went: a run starts once its trial process has imported torch/MLflow and built the model
    starts = sorted(r.info.start_time / 1000 - span[0] for r in runs)
    ends = sorted(r.info.end_time / 1000 - span[0] for r in runs)
    logging = ends[-1] - starts[0]
    print(
        f"\nLOAD {store}: {TRIALS} trials x {STEPS} steps, runs {len(runs)}/{TRIALS} FINISHED, "
        f"points {n_found}/{n_expected}, wall {wall:.1f} s ({n_found / wall:.1f} points/s); runs started "
        f"{starts[0]:.1f}..{starts[-1]:.1f} s, ended {ends[0]:.1f}..{ends[-1]:.1f} s "
        f"({n_found / logging:.1f} points/s while logging); '{LOCKED}' in worker logs: {retried}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


@pytest.mark.slow
@pytest.mark.load
def test_16_trials_on_postgresql(ray_16, tmp_path, capfd):
    with running_postgres("load-db-password") as pg:
        port = free_port()
        args = ["tracking-server", "--port", str(port), "--backend-store-uri", pg.uri]
        args += ["--artifacts-destination", str(tmp_path / "artifacts")]
        env = {**os.environ, "PGPASSWORD": pg.password}
        with serving(args, port, env, tmp_path / "server.log") as url:
            before = _locked_in_logs(ray_16)
            run = _sweep(tmp_path / "sweep", url)
            _check_and_report("postgresql (mlflow server over HTTP)", url, run, ray_16, before, capfd)


@pytest.mark.slow
@pytest.mark.load
def test_16_trials_on_sqlite_default(ray_16, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _locked_in_logs(ray_16)
    run = _sweep(tmp_path / "sweep", None)  # the default: sqlite:///<cwd>/mlflow.db
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run[1].tracking_uri == uri
    _check_and_report("sqlite default (file, no server)", uri, run, ray_16, before, capfd)

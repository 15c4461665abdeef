"""Fault tolerance on real Ray: a worker node dies mid-sweep; the driver is SIGKILLed and `--resume`d."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tune_util import tiny_opts
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.cli import app
from orchestrator.plan import make_plan
from orchestrator.tune import run_sweep

REPO = Path(__file__).resolve().parents[1]


def _wait(cond, timeout: float, what: str, poll: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _checkpoint_of(exp_dir: Path, trial_id: str) -> list[str]:
    return glob.glob(str(exp_dir / f"*{trial_id}*" / "checkpoint_*" / "meta.json"))


def test_driver_settles_the_status_of_stopped_trials(tmp_path):
    """After fit the driver's word on each run's status wins: Tune stops a trial the same way (SystemExit at
    a report, the trial then ends its run FINISHED) for ASHA and for SIGTERM."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.init_experiment(store, "settle")
    parent = tracking.start_parent_run(store, exp, "sweep", {}, {})
    runs = {t: tracking.TrialRun(store, exp, parent, t, None, t, {}, {}) for t in ("ta", "tb", "tc", "td")}
    runs["ta"].end("FINISHED")  # stopped by the SIGTERM'd driver
    runs["tb"].end("FINISHED")  # stopped by ASHA
    runs["td"].end(
        "FAILED"
    )  # not in the sweep's trials (status_of): left alone; "tc" was killed while RUNNING
    status_of = {"ta": "KILLED", "tb": "FINISHED", "tc": "KILLED"}
    assert tracking.terminate_open_runs(store, exp, parent, status_of) == 2
    got = {r.data.tags[tracking.TRIAL_TAG]: r.info.status for r in tracking.child_runs(store, exp, parent)}
    assert got == {"ta": "KILLED", "tb": "FINISHED", "tc": "KILLED", "td": "FAILED"}


@pytest.mark.slow
def test_worker_node_dies_and_trial_resumes_elsewhere(tmp_path):
    """2-node cluster on one machine; the worker is removed after its trial's first checkpoint."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    opts = tiny_opts(tmp_path, steps=24, val_every=4, num_samples=2, max_failures=2, register=False)
    exp_dir = Path(opts.out).resolve() / "ray" / opts.name
    removed: dict[str, str] = {}

    def kill_worker_node() -> None:
        try:
            c = tracking.client(opts.tracking_uri)

            def trial_on_worker():
                exps = c.get_experiment_by_name("test")
                if exps is None:
                    return None
                for r in c.search_runs([exps.experiment_id]):
                    if r.data.tags.get("ray_node_id") == worker.node_id:
                        tid = r.data.tags[tracking.TRIAL_TAG]
                        if _checkpoint_of(exp_dir, tid):
                            return tid
                return None

            removed["trial"] = _wait(trial_on_worker, 240, "a checkpoint of the trial on the worker node")
            cluster.remove_node(worker, allow_graceful=False)
            removed["at"] = str(time.time())
        except BaseException as e:  # surfaced by the assertions below
            removed["error"] = repr(e)

    killer = threading.Thread(target=kill_worker_node, daemon=True)
    killer.start()
    try:
        result = run_sweep(make_plan(opts))
    finally:
        killer.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in removed, removed
    assert "at" in removed, "the worker node was never removed"
    assert not result.partial
    assert all(t.state == "TERMINATED" and t.steps == 24 for t in result.trials), result.trials
    runs = tracking.child_runs(opts.tracking_uri, result.experiment_id, result.parent_run_id)
    per_trial = [r.data.tags[tracking.TRIAL_TAG] for r in runs]
    assert sorted(per_trial) == sorted(t.trial_id for t in result.trials)  # exactly one run per trial
    moved = next(r for r in runs if r.data.tags[tracking.TRIAL_TAG] == removed["trial"])
    assert int(moved.data.tags["resumed_from_step"]) >= 4  # restarted from its checkpoint, not from 0
    assert moved.data.tags["ray_node_id"] != worker.node_id  # and finished on the head node
    assert moved.info.status == "FINISHED"
    steps = sorted(
        m.step for m in tracking.client(opts.tracking_uri).get_metric_history(moved.info.run_id, "lr")
    )
    assert steps[-1] == 24
    _assert_unique_increasing_steps(opts.tracking_uri, runs)


def _assert_unique_increasing_steps(uri: str, runs) -> None:
    """Every metric history of every run: unique steps, increasing in the order they were logged."""
    c = tracking.client(uri)
    for r in runs:
        for key in r.data.metrics:
            hist = sorted(c.get_metric_history(r.info.run_id, key), key=lambda m: (m.timestamp, m.step))
            steps = [m.step for m in hist]
            assert len(steps) == len(set(steps)), (r.info.run_name, key, steps)
            assert steps == sorted(steps), (r.info.run_name, key, steps)


def _descendants(pid: int) -> set[int]:
    """All live descendants of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


@pytest.mark.slow
def test_driver_killed_then_resume_finishes_without_duplicate_runs(tmp_path, monkeypatch):
    opts = tiny_opts(tmp_path, steps=16, val_every=4, num_samples=3)
    args = ["tune", "--gpus", "0", "--num-samples", "3", "--search", "random", "--scheduler", "fifo"]
    args += ["--config", opts.config, "--space", opts.space, "--out", opts.out]
    args += ["--tracking-uri", opts.tracking_uri, "--experiment", "resume"]
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # our own Ray session folder (short: socket paths)
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    exp_dir = Path(opts.out).resolve() / "ray" / "sweep"
    try:
        _wait(lambda: glob.glob(str(exp_dir / "*" / "checkpoint_*" / "meta.json")), 240, "a trial checkpoint")
        _wait(lambda: glob.glob(str(exp_dir / "experiment_state-*.json")), 60, "Tune's experiment state")
        time.sleep(2)  # let Tune snapshot the experiment with the checkpoint in it
        family = _descendants(proc.pid)
        assert proc.poll() is None, "the sweep finished before it could be killed: make it longer"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: Ray's processes must follow it
        proc.wait()
        # no stray processes: Ray's processes follow the driver that started them (raylet, GCS and trial
        # workers at once; the dashboard/runtime-env agents after Ray's 60 s GCS reconnect timeout)
        _wait(lambda: not [p for p in family if _alive(p)], 150, "Ray processes of the killed driver to exit")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        leftovers = [p for p in _descendants(proc.pid) if _alive(p)]
        for p in leftovers:  # only processes this test started
            os.kill(p, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    c = tracking.client(opts.tracking_uri)
    state = json.loads((Path(opts.out) / "state-sweep.json").read_text())
    before = tracking.child_runs(opts.tracking_uri, state["experiment_id"], state["parent_run_id"])
    assert before, "no trial had started an MLflow run before the kill"
    assert c.get_run(state["parent_run_id"]).info.status == "RUNNING"  # the driver never got to end it

    monkeypatch.chdir(tmp_path)  # the same command in the same folder (data_root defaults to ./datasets)
    r = CliRunner().invoke(app, [*args, "--resume", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert not res["partial"] and len(res["trials"]) == 3
    assert all(t["state"] == "TERMINATED" and t["steps"] == 16 for t in res["trials"])
    assert res["parent_run_id"] == state["parent_run_id"]  # the same parent run
    runs = tracking.child_runs(opts.tracking_uri, state["experiment_id"], state["parent_run_id"])
    tags = [x.data.tags[tracking.TRIAL_TAG] for x in runs]
    assert len(tags) == len(set(tags)) == 3  # no duplicate runs
    assert {x.info.run_id for x in before} <= {x.info.run_id for x in runs}  # runs continued, not replaced
    assert all(x.info.status == "FINISHED" for x in runs)
    _assert_unique_increasing_steps(opts.tracking_uri, runs)  # restored trials did not re-log their steps
    assert c.get_run(state["parent_run_id"]).info.status == "FINISHED"
    exp = c.get_experiment(state["experiment_id"])
    assert len(c.search_runs([exp.experiment_id], max_results=100)) == 4  # 1 parent + 3 children


def _count_points(uri: str, runs, exp_dir: Path, steps: int) -> tuple[int, int]:
    """(expected, found) metric points over `runs`; asserts every history holds its expected steps once.

    Expected comes from Tune (`server_util.expected_points`: each trial's result.json), with a validation
    step counted once even when a restored trial reported it again."""
    from server_util import expected_points

    c = tracking.client(uri)
    expected = expected_points(exp_dir, steps)
    n_expected = n_found = 0
    for r in runs:
        for key, want in expected[r.data.tags[tracking.TRIAL_TAG]].items():
            want = sorted(set(want))
            found = sorted(m.step for m in c.get_metric_history(r.info.run_id, key))
            assert found == want, (r.info.run_name, key, found, want)
            n_expected, n_found = n_expected + len(want), n_found + len(found)
    return n_expected, n_found


@pytest.mark.slow
def test_sigterm_to_driver_then_resume_finishes_without_duplicate_runs(tmp_path, monkeypatch):
    """SIGTERM to `fgdsr tune` while trials run: one line on stderr, exit 75, its Ray processes gone, the runs
    KILLED; the same command with --resume finishes the sweep with one FINISHED run per trial, no step twice."""
    steps = 16
    opts = tiny_opts(tmp_path, steps=steps, val_every=4, num_samples=3)
    args = ["tune", "--gpus", "0", "--num-samples", "3", "--search", "random", "--scheduler", "fifo"]
    args += ["--config", opts.config, "--space", opts.space, "--out", opts.out]
    args += ["--tracking-uri", opts.tracking_uri, "--experiment", "sigterm"]
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # our own Ray session folder (short: socket paths)
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=tmp_path, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    exp_dir = Path(opts.out).resolve() / "ray" / "sweep"
    try:
        _wait(lambda: glob.glob(str(exp_dir / "*" / "checkpoint_*" / "meta.json")), 240, "a trial checkpoint")
        _wait(lambda: glob.glob(str(exp_dir / "experiment_state-*.json")), 60, "Tune's experiment state")
        family = _descendants(proc.pid)
        assert proc.poll() is None, "the sweep finished before it could be stopped: make it longer"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` or a Kubernetes pod ending
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
        _wait(
            lambda: not [p for p in family if _alive(p)], 150, "Ray processes of the stopped driver to exit"
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in [p for p in _descendants(proc.pid) if _alive(p)]:  # only processes this test started
            os.kill(p, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 75, (proc.returncode, err[-3000:])
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "--resume" in lines[0], err[-3000:]
    assert took < 60, f"{took:.1f} s from SIGTERM to exit"
    state = json.loads((Path(opts.out) / "state-sweep.json").read_text())
    c = tracking.client(opts.tracking_uri)
    before = tracking.child_runs(opts.tracking_uri, state["experiment_id"], state["parent_run_id"])
    assert c.get_run(state["parent_run_id"]).info.status == "KILLED"
    sweep = json.loads((Path(opts.out) / "sweep.json").read_text())
    assert sweep["partial"] and sweep["stopped_by"] == "SIGTERM"
    trial_state = {t["trial_id"]: t["state"] for t in sweep["trials"]}
    assert "INTERRUPTED" in trial_state.values()
    # a trial that finished before the signal: FINISHED; one stopped by it: KILLED (none left RUNNING)
    status = {r.data.tags[tracking.TRIAL_TAG]: r.info.status for r in before}
    want = {"TERMINATED": "FINISHED", "INTERRUPTED": "KILLED"}
    assert status == {t: want[trial_state[t]] for t in status}, (status, trial_state)

    monkeypatch.chdir(tmp_path)  # the same command in the same folder (data_root defaults to ./datasets)
    r = CliRunner().invoke(app, [*args, "--resume", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert not res["partial"] and res["stopped_by"] is None and len(res["trials"]) == 3
    assert all(t["state"] == "TERMINATED" and t["steps"] == steps for t in res["trials"])
    runs = tracking.child_runs(opts.tracking_uri, state["experiment_id"], state["parent_run_id"])
    tags = [x.data.tags[tracking.TRIAL_TAG] for x in runs]
    assert len(tags) == len(set(tags)) == 3  # no duplicate runs
    assert {x.info.run_id for x in before} <= {x.info.run_id for x in runs}  # runs continued, not replaced
    assert all(x.info.status == "FINISHED" for x in runs)
    n_expected, n_found = _count_points(opts.tracking_uri, runs, exp_dir, steps)
    assert n_found == n_expected
    assert c.get_run(state["parent_run_id"]).info.status == "FINISHED"
    assert len(c.search_runs([state["experiment_id"]], max_results=100)) == 4  # 1 parent + 3 children
    print(f"\nSIGTERM: exit {proc.returncode} after {took:.1f} s; runs before resume {sorted(status.values())}, after "
          f"3/3 FINISHED; points expected {n_expected} found {n_found}; load {os.getloadavg()[0]:.2f}\n{lines[0]}")  # fmt: skip

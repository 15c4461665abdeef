"""MLflow tracking (real MLflow: a sqlite store, and an `mlflow server` over HTTP started by the test)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from fgdsr.errors import UserError
from orchestrator import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one runs MLflow's schema migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert tracking.resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    for bad in ("file:///tmp/mlruns", "./mlruns", "sqlite:///relative.db", "ftp://x"):
        with pytest.raises(UserError):
            tracking.resolve_tracking_uri(bad)


def test_trial_run_is_created_once_and_found_again(store):
    exp = tracking.init_experiment(store, "t")
    assert tracking.init_experiment(store, "t") == exp  # idempotent
    parent = tracking.start_parent_run(store, exp, "sweep", {"search": "optuna"}, {"k": "v"})
    run = tracking.TrialRun(
        store, exp, parent, "trial_a", None, "a", {"lr": 0.001, "areas": [3, 5]}, {"variant": "l1"}
    )
    assert not run.resumed
    run.log_metrics(10, {"loss": 0.5, "lr": 1e-3})
    run.log_metrics(20, {"loss": 0.25, "nan": float("nan")})
    run.end("FAILED")  # e.g. the node died
    # the retried trial has no checkpoint yet: the run is found by its trial tag, not duplicated
    again = tracking.TrialRun(store, exp, parent, "trial_a", None, "a", {"lr": 0.001}, {"node": "other"})
    assert again.resumed and again.run_id == run.run_id
    c = tracking.client(store)
    assert c.get_run(run.run_id).info.status == "RUNNING"
    again.log_metrics(30, {"loss": 0.125})
    again.end("FINISHED")
    r = c.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["lr"] == "0.001" and r.data.params["areas"] == "[3, 5]"
    assert r.data.tags["node"] == "other" and r.data.tags[tracking.PARENT_TAG] == parent
    assert [m.value for m in sorted(c.get_metric_history(run.run_id, "loss"), key=lambda m: m.step)] == [
        0.5,
        0.25,
        0.125,
    ]
    assert "nan" not in r.data.metrics
    # by run id (what the checkpoint carries)
    third = tracking.TrialRun(store, exp, parent, "trial_a", run.run_id, "a", {}, {})
    assert third.run_id == run.run_id
    third.end("FINISHED")
    assert len(tracking.child_runs(store, exp, parent)) == 1


def test_terminate_open_runs_and_register(store, tmp_path):
    exp = tracking.init_experiment(store, "t2")
    parent = tracking.start_parent_run(store, exp, "sweep", {}, {})
    a = tracking.TrialRun(store, exp, parent, "ta", None, "a", {}, {})
    b = tracking.TrialRun(store, exp, parent, "tb", None, "b", {}, {})
    b.end("FINISHED")
    assert tracking.terminate_open_runs(store, exp, parent, {"ta": "FINISHED"}) == 1
    c = tracking.client(store)
    assert c.get_run(a.run_id).info.status == "FINISHED"
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text("{}")
    c.log_artifacts(a.run_id, str(ckpt), "checkpoint")
    assert tracking.register_model(store, "fgdsr-lapsrn-test", a.run_id, "checkpoint") == "1"
    assert tracking.register_model(store, "fgdsr-lapsrn-test", a.run_id, "checkpoint") == "2"
    mv = c.get_model_version("fgdsr-lapsrn-test", "2")
    assert mv.run_id == a.run_id and mv.source.endswith("/checkpoint")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cmd: list[str], port: int):
    """Run an `fgdsr` server command until /health answers; yields its URL; stops its process group."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = (
            time.time() + 240
        )  # MLflow 3.17 starts uvicorn and its job workers: slow on a loaded machine
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "mlflow server exited"
            assert time.time() < deadline, "mlflow server did not start in 240 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: our own process group only
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture()
def mlflow_server(tmp_path):
    """`fgdsr tracking-server` on a free port on 127.0.0.1 (sqlite + proxied artifacts); stopped afterwards."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'server.db'}"
    cmd = [sys.executable, "-m", "orchestrator.cli", "tracking-server", "--backend-store-uri", db]
    cmd += ["--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(port)]
    yield from _serve(cmd, port)


@pytest.mark.slow
def test_fgdsr_ui_serves_the_local_store(tmp_path, store):
    """`fgdsr ui --port P` answers on 127.0.0.1 for the store of the current folder."""
    tracking.init_experiment(store, "t")  # idempotent: also when this test runs alone (-m slow)
    port = _free_port()
    cmd = [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port), "--tracking-uri", store]
    for url in _serve(cmd, port):
        body = urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/experiments/search?max_results=10", timeout=10
        ).read()
        assert b'"t"' in body  # the experiment in the store, read through the UI's server


@pytest.mark.slow
def test_sweep_against_http_server(mlflow_server, tmp_path):
    """The same sweep, logged over HTTP to `mlflow server` on 127.0.0.1 (artifacts proxied by the server)."""
    from tune_util import tiny_opts

    from orchestrator.plan import make_plan
    from orchestrator.tune import run_sweep

    opts = tiny_opts(tmp_path, tracking_uri=mlflow_server, num_samples=2)
    result = run_sweep(make_plan(opts))
    assert not result.partial and len(result.trials) == 2
    c = tracking.client(mlflow_server)
    runs = tracking.child_runs(mlflow_server, result.experiment_id, result.parent_run_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert c.get_run(result.parent_run_id).info.status == "FINISHED"
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)  # proxied
    best = c.get_run(result.best().mlflow_run_id)
    names = {f.path for f in c.list_artifacts(best.info.run_id, "checkpoint")}
    assert "checkpoint/model.safetensors" in names
    assert (tmp_path / "artifacts").is_dir()  # the server wrote them, not the trials
    assert result.registered and result.registered.startswith("fgdsr-lapsrn-")


def test_restarted_trial_does_not_relog_steps(store):
    """A trial restored from its step-4 checkpoint re-trains steps 5-6: MLflow keeps one value per step."""
    exp = tracking.init_experiment(store, "t3")
    assert (
        tracking.client(store).get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG]
        == "custom_model_development"
    )
    parent = tracking.start_parent_run(store, exp, "sweep", {}, {})
    first = tracking.TrialRun(store, exp, parent, "tr", None, "fd lr=1e-3", {}, {})
    for step in range(1, 7):
        first.log_metrics(step, {"loss": float(step), "lr": 1e-3})
    first.end("FAILED")  # the node died after step 6; its last checkpoint was step 4
    again = tracking.TrialRun(store, exp, parent, "tr", first.run_id, "fd lr=1e-3", {}, {})
    assert again.logged_step == 6
    for step in range(5, 9):  # the restart re-trains 5 and 6
        again.log_metrics(step, {"loss": 10.0 * step, "lr": 1e-3})
    again.end("FINISHED")
    hist = sorted(tracking.client(store).get_metric_history(first.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in hist] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [m.value for m in hist] == [1, 2, 3, 4, 5, 6, 70, 80]  # 5 and 6 as first logged, never twice
    assert tracking.client(store).get_run(first.run_id).info.run_name == "fd lr=1e-3"

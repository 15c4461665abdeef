"""`fgdsr ui`: the URL it prints is the one it serves (MLflow's model-training view), on a real sqlite store."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest
from server_util import FGDSR, REPO, free_port, http_status_or_none, stop_group
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.cli import app


def test_ui_links():
    base = "http://127.0.0.1:5001"
    assert tracking.ui_link(base) == f"{base}/#/experiments?workflowType=machine_learning"
    assert tracking.ui_link(base + "/", "7") == f"{base}/#/experiments/7?workflowType=machine_learning"
    assert (
        tracking.ui_url("http://h:5000/", "3")
        == "http://h:5000/#/experiments/3?workflowType=machine_learning"
    )
    assert tracking.ui_url("sqlite:////x/m.db", None, 5002).startswith(
        "http://127.0.0.1:5002/#/experiments/0?"
    )


def test_ui_with_an_unknown_experiment_is_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_experiment(uri, "known")
    r = CliRunner().invoke(
        app, ["ui", "--tracking-uri", uri, "--experiment", "nope", "--port", str(free_port())]
    )
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "--experiment nope" in lines[0], r.output


@pytest.mark.slow
def test_ui_prints_the_url_it_serves(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.init_experiment(uri, "sweeps")
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        cmd = [*FGDSR, "ui", "--port", str(port), "--tracking-uri", uri, "--experiment", "sweeps"]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while http_status_or_none(f"{base}/health") != 200:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        first = log.read_text().splitlines()[0]
        url = f"{base}/#/experiments/{exp}?workflowType=machine_learning"
        assert first == f"MLflow UI for {uri}: {url} (Ctrl+C to stop)", first
        with urllib.request.urlopen(url, timeout=30) as r:  # the page (the part after # is the browser's)
            assert r.status == 200 and b"<html" in r.read().lower()
        api = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
        with urllib.request.urlopen(api, timeout=30) as r:
            assert json.loads(r.read())["experiment"]["name"] == "sweeps"  # the experiment the URL names
    finally:
        stop_group(proc)

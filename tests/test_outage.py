"""A tracking-server outage: a real `fgdsr tracking-server` (sqlite store) stopped and restarted on the same port
and store, while a trial's run buffers its metric points (orchestrator.tracking.MetricWriter)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from server_util import REPO, count_points, free_port, serving

from orchestrator import tracking

KEYS = ("loss", "lr")


def _server_args(tmp: Path, port: int) -> list[str]:
    """The same store and artifact folder at every start: a restart, not a new server."""
    return ["tracking-server", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}"] + [
        "--artifacts-destination",
        str(tmp / "artifacts"),
        "--port",
        str(port),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _steps(c, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in c.get_metric_history(run_id, key))


def test_transient_and_permanent_errors():
    """What the writer retries (no answer, 5xx, locked database) and what fails at once (4xx)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    def wrapped(cause: BaseException) -> MlflowException:
        try:
            try:
                raise cause
            except Exception as e:  # as MLflow's http_request wraps the requests error
                raise MlflowException(f"API request to http://h/api failed with exception {e}") from None
        except MlflowException as outer:
            return outer

    def page(status: int) -> MlflowException:  # a non-JSON error page (a proxy, the basic-auth app)
        return MlflowException(f"API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error code "
                               f"{status} != 200. Response body: 'x'")  # fmt: skip

    transient = [
        wrapped(requests.exceptions.ConnectionError("Connection refused")),
        wrapped(requests.exceptions.RetryError("too many 503 error responses")),
        wrapped(requests.exceptions.ReadTimeout("read timed out")),
        ConnectionResetError(104, "Connection reset by peer"),
        RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}),  # 503
        RestException({"error_code": "INTERNAL_ERROR", "message": "x"}),  # 500
        page(502),
        page(429),
        MlflowException("(sqlite3.OperationalError) database is locked"),
    ]
    permanent = [
        page(401),
        page(403),
        RestException({"error_code": "UNAUTHENTICATED", "message": "x"}),
        RestException({"error_code": "PERMISSION_DENIED", "message": "x"}),
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "run is deleted"}),
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"}),
        ValueError("a bug"),
    ]
    assert [tracking.is_transient(e) for e in transient] == [True] * len(transient)
    assert [tracking.is_transient(e) for e in permanent] == [False] * len(permanent)
    assert tracking.http_status(page(401)) == 401 and tracking.http_status(transient[0]) is None


def test_chunks_end_at_step_boundaries():
    """A request holds at most BATCH - 1 points and ends where a step ends; its tag is the last whole step."""
    pts = [p for s in range(1, 40) for p in tracking.metric_list({"a": 1.0, "b": 2.0, "c": 3.0}, s)]
    chunk, step = tracking._chunk(pts)
    assert len(chunk) == 99 and step == 33 and chunk[-1].step == 33  # 33 whole steps of 3 points
    pts = [p for s in range(1, 40) for p in tracking.metric_list({f"k{i}": 1.0 for i in range(7)}, s)]
    chunk, step = tracking._chunk(pts)
    assert len(chunk) == 98 and step == 14 and pts[98].step == 15  # not 99: that would split step 15
    chunk, step = tracking._chunk(pts[:10])
    assert len(chunk) == 10 and step == 2  # all of it: step 1 (7 points) and 3 points of step 2


@pytest.mark.slow
def test_points_survive_a_server_restart(tmp_path, monkeypatch, capsys):
    """Server up: points written. Server stopped: logging returns at once, points stay buffered, in order.
    Server restarted (same port and store): end() writes them; every step once; the status set."""
    # one attempt per request (MLflow's own 7 retries off): what is tested is the writer's retrying
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    args = _server_args(tmp_path, port)
    with serving(args, port, _env(), tmp_path / "server-1.log") as uri:
        exp = tracking.init_experiment(uri, "outage")
        parent = tracking.start_parent_run(uri, exp, "sweep", {}, {})
        run = tracking.TrialRun(uri, exp, parent, "t1", None, "t1", {"lr": 1e-3}, {})
        for step in range(1, 6):
            run.log_metrics(step, {"loss": 1.0 / step, "lr": 1e-3})
        assert run.flush() and run.writer.written_step == 5
    t0 = time.monotonic()
    for step in range(6, 151):  # the server is gone: 290 points, BATCH crossed (the writer tries and fails)
        run.log_metrics(step, {"loss": 1.0 / step, "lr": 1e-3})
    assert not run.flush(wait=2.0)
    assert time.monotonic() - t0 < 10  # training was never held up for longer than the flush's wait
    assert run.writer.away_since is not None and run.writer.pending == 2 * 145
    time.sleep(3)  # a few failed attempts
    assert run.writer.pending == 2 * 145 and run.writer.written_step == 5
    with serving(args, port, _env(), tmp_path / "server-2.log") as again:
        assert again == uri
        assert run.end("FINISHED", wait=120)
        c = tracking.client(uri)
        for key in KEYS:
            assert _steps(c, run.run_id, key) == list(range(1, 151)), key  # every step exactly once
        r = c.get_run(run.run_id)
        assert r.info.status == "FINISHED" and r.data.tags[tracking.LOGGED_STEP_TAG] == "150"
        said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("fgdsr:")]
        assert len(said) == 2 and "does not take the metrics of run" in said[0] and "points kept" in said[0]
        assert "takes the metrics of run" in said[1] and " again after " in said[1], said  # one line each
        assert sorted(m.value for m in c.get_metric_history(run.run_id, "loss"))[0] == 1.0 / 150

        # a batch sent twice (its answer lost in a restart, then re-sent) is stored once
        other = tracking.TrialRun(uri, exp, parent, "t2", None, "t2", {}, {})
        points = tracking.metric_list({"loss": 0.5}, 7)
        c.log_batch(other.run_id, metrics=points)
        c.log_batch(other.run_id, metrics=points)
        assert _steps(c, other.run_id, "loss") == [7]

        late = tracking.TrialRun(uri, exp, parent, "t3", None, "t3", {}, {})  # its server goes for good below
        # a permanent error (a deleted run: HTTP 400) stops the writer and reaches the trial at once
        c.delete_run(other.run_id)
        other.log_metrics(8, {"loss": 0.25})
        t0 = time.monotonic()
        with pytest.raises(Exception, match="INVALID_PARAMETER_VALUE|deleted|not active"):
            other.flush(wait=30)
        assert time.monotonic() - t0 < 15
    late.log_metrics(1, {"loss": 1.0})
    t0 = time.monotonic()
    assert not late.end(
        "FINISHED", wait=3
    )  # the server never comes back: end() gives up, bounded, and says so
    assert time.monotonic() - t0 < 10
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("fgdsr: WARNING")]
    assert len(said) == 1 and "for 3 s: 1 metric points and its final status not written" in said[0], said


def _outage(args: list[str], port: int, tmp: Path, ready, down_s: float, record: dict, stack) -> None:
    """Stop the server once `ready()` holds, keep it down `down_s` seconds, start it again (same port and
    store); `record` gets the times (wall clock, s) or the error."""
    try:
        deadline = time.time() + 300
        while not ready():
            if time.time() > deadline:
                raise AssertionError("no trial logged within 300 s")
            time.sleep(0.3)
        stack.pop_all().close()  # stops the first server (its process group)
        record["stopped"] = time.time()
        time.sleep(down_s)
        record["restart"] = time.time()
        record["server"] = serving(args, port, _env(), tmp / "server-2.log")
        record["server"].__enter__()
        record["back"] = time.time()
    except BaseException as e:  # surfaced by the test's assertions
        record["error"] = repr(e)


def _logging_started(uri: str, trials: int):
    """True once `trials` child runs hold metric points and none has ended."""
    c = tracking.client(uri)

    def ready() -> bool:
        exp = c.get_experiment_by_name("outage")
        runs = (
            [r for r in c.search_runs([exp.experiment_id]) if tracking.TRIAL_TAG in r.data.tags]
            if exp
            else []
        )
        return len(runs) == trials and all(r.data.metrics and r.info.status == "RUNNING" for r in runs)

    return ready


@pytest.mark.slow
def test_sweep_survives_a_30s_server_outage(tmp_path):
    """2 tiny trials log over HTTP; the server is stopped for 30 s while they train and restarted on the same
    port and store: both trials FINISHED, every metric history holds every step exactly once."""
    from tune_util import tiny_opts

    from orchestrator.plan import make_plan
    from orchestrator.tune import run_sweep

    steps, down_s = 1000, 30.0  # ~40 ms a step here: both trials train through most of the outage
    port = free_port()
    args = _server_args(tmp_path, port)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # our own Ray session folder (short: socket paths)
    record: dict = {}
    with contextlib.ExitStack() as stack:
        uri = stack.enter_context(serving(args, port, _env(), tmp_path / "server-1.log"))
        opts = tiny_opts(tmp_path, steps=steps, val_every=250, tracking_uri=uri, experiment="outage",
                         register=False, ray_temp_dir=ray_tmp)  # fmt: skip
        killer = threading.Thread(
            target=_outage,
            args=(args, port, tmp_path, _logging_started(uri, 2), down_s, record, stack),
            daemon=True,
        )
        killer.start()
        t0 = time.time()
        try:
            result = run_sweep(make_plan(opts))
            wall = time.time() - t0
            killer.join(timeout=120)
            assert "error" not in record, record
            assert "back" in record, f"the server was never restarted: {record}"
            assert not result.partial and len(result.trials) == 2
            assert all(
                t.state == "TERMINATED" and t.steps == steps and t.error is None for t in result.trials
            )
            exp_dir = Path(opts.out) / "ray" / opts.name
            n_expected, n_found = count_points(uri, result, exp_dir, steps)  # asserts every step exactly once
            assert n_found == n_expected
            c = tracking.client(uri)
            during = sum(
                record["stopped"] * 1000 <= m.timestamp <= record["back"] * 1000
                for r in tracking.child_runs(uri, result.experiment_id, result.parent_run_id)
                for key in r.data.metrics
                for m in c.get_metric_history(r.info.run_id, key)
            )
            assert during > 0  # points logged (timestamped) while the server was away: the trials trained on
            print(f"\noutage: server down {record['back'] - record['stopped']:.1f} s "
                  f"({down_s:.0f} s stopped + {record['back'] - record['restart']:.1f} s restart), sweep wall "
                  f"{wall:.1f} s, runs 2/2 FINISHED, points expected {n_expected} found {n_found}, "
                  f"logged while away {during}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
        finally:
            killer.join(timeout=200)
            if "server" in record:
                record["server"].__exit__(None, None, None)
            shutil.rmtree(ray_tmp, ignore_errors=True)

"""MLflow tracking for sweeps: the store, the parent run, one child run per trial, the model registry.

Plain `MlflowClient` calls with explicit run ids (no fluent global state, no Ray MLflowLoggerCallback): a
trial runs in a Ray worker process, possibly restarted on another node, and must continue *its* run.
A trial's run is found again by its run id (kept in the checkpoint) or, before its first checkpoint, by
the tags `fgdsr.trial_id` + `mlflow.parentRunId`, so there is exactly one run per trial.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fgdsr.errors import UserError

T = TypeVar("T")
TRIAL_TAG = "fgdsr.trial_id"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "fgdsr.sweep"
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri`, else `MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db` (MLflow 3's own default store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme in ("", "file"):
        raise UserError(
            f"--tracking-uri {uri}: the MLflow file store is refused by MLflow 3; "
            "use sqlite:///ABS/PATH/mlflow.db or http://HOST:PORT"
        )
    if scheme not in (*SQL_SCHEMES, "http", "https", "databricks"):
        raise UserError(
            f"--tracking-uri {uri}: unknown scheme '{scheme}'; use sqlite:///..., http://... or postgresql://..."
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:////") and uri != "sqlite://":
        # sqlite:///relative.db would move with each Ray worker's working directory
        raise UserError(
            f"--tracking-uri {uri}: a sqlite path must be absolute (sqlite:////abs/path/mlflow.db)"
        )
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def client(uri: str):
    """An `MlflowClient` for tracking and registry on `uri`."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# HTTP statuses worth retrying (MLflow's own client retries the same set inside each request)
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
# the text of a transient database error (sqlite, PostgreSQL) raised by a store opened directly (no server)
TRANSIENT_TEXT = ("database is locked", "database is busy", "deadlock", "could not connect",
                  "connection refused", "connection reset", "server closed the connection", "timed out")  # fmt: skip
_NETWORK_ERRORS = ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "RetryError", "MaxRetryError",
                   "ProtocolError", "ChunkedEncodingError", "NewConnectionError")  # requests / urllib3  # fmt: skip
_STATUS_TEXT = re.compile(r"failed with error code (\d{3})")


def http_status(e: BaseException) -> int | None:
    """The HTTP status a tracking server answered `e` with; None when no answer came (or no server)."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(e, RestException):  # the server's JSON error
        return e.get_http_status_code()
    m = _STATUS_TEXT.search(str(e)) if isinstance(e, MlflowException) else None  # a non-JSON error page
    return int(m.group(1)) if m else None


def is_transient(e: BaseException) -> bool:
    """Worth retrying: no answer (refused, reset, timed out), a 5xx / 408 / 429, a locked or busy database.

    Not a 4xx (a login missing or refused, a deleted run, a bad request): those fail at once.
    """
    status = http_status(e)
    if status is not None:
        return status in TRANSIENT_HTTP
    seen: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and x not in seen:  # the cause chain: MLflow wraps the requests/urllib3 error
        seen.append(x)
        if isinstance(x, (ConnectionError, TimeoutError)) or type(x).__name__ in _NETWORK_ERRORS:
            return True
        if any(w in str(x).lower() for w in TRANSIENT_TEXT):
            return True
        x = x.__cause__ or x.__context__
    return False


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Call `fn`, retrying transient store errors (`is_transient`: sqlite 'database is locked' under
    concurrent trials, a server restarting) with backoff 0.2 s .. 3 s; other errors are raised at once.

    Over HTTP each attempt already includes MLflow's own retries (7, exponential backoff: minutes)."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # MlflowException / OperationalError / connection reset
            if not is_transient(e) or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# MLflow 3's value for classic model training (its UI then opens on the runs table, not the GenAI overview);
# from mlflow/server/js (ExperimentKind.CUSTOM_MODEL_DEVELOPMENT) and mlflow's onboarding skill, 3.17.
MODEL_TRAINING_KIND = "custom_model_development"
# MLflow 3.17's UI shows an experiment as GenAI or model training by its sidebar switch (the URL's `workflowType`,
# else the browser's last choice, GenAI by default), not by the tag: fgdsr's links carry the switch.
UI_WORKFLOW = "machine_learning"
LOGGED_STEP_TAG = "fgdsr.logged_step"  # the last step whose metrics are in the run (a restart skips up to it)
BATCH = 100  # entities per log_batch request (MLflow's limit for params and tags; metrics allow more)


def init_experiment(uri: str, name: str) -> str:
    """Initialise the store (schema migration runs here, once, on the driver) and get/create `name` -> id.

    The experiment is tagged as classic model training (`mlflow.experimentKind`), so `fgdsr ui` opens on it
    as a runs table.
    """
    c = client(uri)
    exp = retry(lambda: c.get_experiment_by_name(name))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise UserError(
                f"--experiment {name}: deleted in the MLflow store; restore it or pick another name"
            )
        if EXPERIMENT_KIND_TAG not in exp.tags:
            retry(lambda: c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND))
        return exp.experiment_id
    artifact_location = None
    if is_sqlite(uri):
        # An absolute artifact folder next to the database: trials run with other working directories.
        db = Path(uri[len("sqlite:///") :])
        artifact_location = (db.parent / "mlartifacts").as_uri()
    tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    return retry(lambda: c.create_experiment(name, artifact_location=artifact_location, tags=tags))


def ui_link(base: str, experiment_id: str | None = None) -> str:
    """The MLflow UI at `base` (http://HOST:PORT), in its model-training view: experiment `experiment_id`'s
    runs table, or the list of experiments."""
    page = f"/experiments/{experiment_id}" if experiment_id is not None else "/experiments"
    return f"{base.rstrip('/')}/#{page}?workflowType={UI_WORKFLOW}"


def ui_url(uri: str, experiment_id: str | None, port: int = 5000) -> str:
    """The experiment's runs table in the MLflow UI (an HTTP store serves it; else `fgdsr ui` on `port`)."""
    base = uri.rstrip("/") if is_http(uri) else f"http://127.0.0.1:{port}"
    return ui_link(base, experiment_id or "0")


def experiment_id(uri: str, name: str) -> str:
    """The id of the existing experiment `name` in `uri`; a one-line UserError if there is none."""
    exp = retry(lambda: client(uri).get_experiment_by_name(name))
    if exp is None or exp.lifecycle_stage == "deleted":
        raise UserError(f"--experiment {name}: no such experiment in {uri}; leave it out to list them all")
    return exp.experiment_id


def metric_list(metrics: dict[str, Any], step: int = 0) -> list:
    """MLflow `Metric`s of the finite numbers in `metrics` at `step` (NaN, None and non-numbers are skipped)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(k, float(v), now, int(step))
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def log_batch(c, run_id: str, metrics: list = (), params: dict[str, Any] | None = None,
              tags: dict[str, Any] | None = None) -> None:  # fmt: skip
    """The one way fgdsr writes metrics, params and tags: `BATCH` entities per retried request."""
    from mlflow.entities import Param, RunTag

    items = [*metrics, *(Param(k, _param_str(v)) for k, v in (params or {}).items())]
    items += [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
    for i in range(0, len(items), BATCH):
        chunk = items[i : i + BATCH]
        retry(lambda chunk=chunk: c.log_batch(
            run_id,
            metrics=[x for x in chunk if not isinstance(x, (Param, RunTag))],
            params=[x for x in chunk if isinstance(x, Param)],
            tags=[x for x in chunk if isinstance(x, RunTag)],
        ))  # fmt: skip


def log_files(uri: str, run_id: str, paths: list[Path], artifact_path: str | None = None) -> list[str]:
    """Files and folders as artefacts of `run_id` under `artifact_path`; returns the artefact paths."""
    c = client(uri)
    logged = []
    prefix = f"{artifact_path}/" if artifact_path else ""
    for p in map(Path, paths):
        if p.is_dir():
            retry(lambda p=p: c.log_artifacts(run_id, str(p), f"{prefix}{p.name}"))
            logged += [f"{prefix}{p.name}/{f.name}" for f in sorted(p.iterdir()) if f.is_file()]
        elif p.is_file():
            retry(lambda p=p: c.log_artifact(run_id, str(p), artifact_path))
            logged.append(f"{prefix}{p.name}")
    return logged


def start_parent_run(
    uri: str, experiment_id: str, name: str, params: dict[str, Any], tags: dict[str, str]
) -> str:
    """The sweep's parent run; returns its id."""
    c = client(uri)
    run = retry(lambda: c.create_run(experiment_id, run_name=name, tags=tags))
    log_batch(c, run.info.run_id, params=params)
    return run.info.run_id


def standalone_run(uri: str, experiment: str, name: str, tags: dict[str, str]) -> str:
    """A new top-level run in `experiment` (created if needed); returns its id."""
    exp_id = init_experiment(uri, experiment)
    return retry(lambda: client(uri).create_run(exp_id, run_name=name, tags=tags)).info.run_id


def end_run(uri: str, run_id: str, status: str) -> None:
    retry(lambda: client(uri).set_terminated(run_id, status=status))


def _param_str(v: Any) -> str:
    return str(v)[:6000]  # MLflow's param value limit


def find_trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The child run already made for `trial_id` under `parent_run_id`, if any."""
    c = client(uri)
    flt = f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    runs = retry(lambda: c.search_runs([experiment_id], filter_string=flt, max_results=5))
    return runs[0].info.run_id if runs else None


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list:
    """All child runs of a sweep (MLflow `Run` objects)."""
    c = client(uri)
    flt = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return retry(lambda: c.search_runs([experiment_id], filter_string=flt, max_results=10000))


def find_sweep_run(uri: str, experiment_id: str, sweep_name: str) -> str | None:
    """The parent run of the sweep named `sweep_name` (its `fgdsr.sweep` tag), if it exists yet."""
    flt = f"tags.`{SWEEP_TAG}` = '{sweep_name}'"
    runs = retry(lambda: client(uri).search_runs([experiment_id], filter_string=flt, max_results=1))
    return runs[0].info.run_id if runs else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric of a run, by step."""
    hist = retry(lambda: client(uri).get_metric_history(run_id, key))
    return sorted((int(m.step), float(m.value)) for m in hist)


SYNC_WAIT_S = (
    10.0  # how long `TrialRun.flush` waits for its points to be written (not while the server is away)
)
END_WAIT_S = 300.0  # how long `TrialRun.end` waits for an away tracking server before giving up (one warning)
RETRY_MAX_S = 10.0  # the longest pause between two attempts of the metric writer


def _chunk(points: list) -> tuple[list, int]:
    """The oldest points for one request (at most BATCH - 1, cut at a step boundary when one exists) and the
    last step they complete (-> `fgdsr.logged_step`)."""
    n = min(len(points), BATCH - 1)
    if n < len(points) and points[n].step == points[n - 1].step:
        k = n
        while k > 0 and points[k - 1].step == points[n].step:
            k -= 1
        n = k or n  # a single step with more points than a request holds is split
    last = points[n - 1].step
    complete = last if n == len(points) or points[n].step != last else last - 1
    return points[:n], complete


class MetricWriter:
    """The metric points of one run, buffered in step order and written by a background thread.

    `add` and `flush(wait=0)` never touch the network, so training goes on while the tracking server is away.
    The thread sends the oldest points first, each request with the tag `fgdsr.logged_step` (the last step
    it completes); a transient failure (`is_transient`: the server down or restarting, a 5xx, a timeout, a
    locked database) leaves the points at the head of the buffer and is retried with backoff until it goes
    through. A point sent again after a failure that may have landed is not doubled: MLflow's SQL stores
    keep a point once per (key, step, timestamp, value), and a point keeps its timestamp until written.
    A permanent failure (a 4xx: login refused, run deleted) stops the thread and is raised in the caller's
    thread by the next `add`, `flush` or `close`.
    """

    def __init__(self, c, run_id: str, what: str) -> None:
        self._client, self.run_id, self.what = c, run_id, what
        self._points: list = []  # logged, not yet written, oldest first; the head may be in flight
        self._cond = threading.Condition()
        self._wanted = False  # a flush asked for the buffer to be sent
        self._closing = False
        self._final: Callable[[Any], None] | None = None  # run once after the last point (the run's status)
        self._abandoned = False
        self._error: BaseException | None = None
        self.away_since: float | None = None  # monotonic time of the first failed or stuck attempt
        self.written_step = -1
        self._thread = threading.Thread(target=self._loop, name=f"fgdsr-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._points)

    def add(self, points: list) -> None:
        with self._cond:
            self._raise_error()
            self._points += points

    def flush(self, wait: float = SYNC_WAIT_S) -> bool:
        """Have the buffer sent and wait until it is written: at most `wait` s, and not at all while the
        server is known to be away (the points stay buffered). Returns whether everything is written."""
        with self._cond:
            self._raise_error()
            if not self._points:
                return True
            self._wanted = True
            self._cond.notify_all()
            if wait <= 0 or self.away_since is not None:
                return False
            deadline = time.monotonic() + wait
            while self._points and self._error is None and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            self._raise_error()
            if self._points:  # the request is stuck in MLflow's own retries: do not wait again until it lands
                self._set_away(f"no answer within {wait:.0f} s")
                return False
            return True

    def close(self, final: Callable[[Any], None] | None = None, wait: float = END_WAIT_S) -> bool:
        """Write everything, then `final(client)` (e.g. the run's status), waiting at most `wait` s for an away
        server; gives up with one warning line on stderr. Returns whether all of it was written."""
        with self._cond:
            self._closing, self._final = True, final
            self._cond.notify_all()
        self._thread.join(wait)
        with self._cond:
            if self._thread.is_alive():
                self._abandoned = True
                self._cond.notify_all()
                print(f"fgdsr: WARNING: the tracking server did not take {self.what} for {wait:.0f} s: "
                      f"{len(self._points)} metric points and its final status not written", file=sys.stderr,
                      flush=True)  # fmt: skip
                return False
            self._raise_error()
            return True

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _set_away(self, why: str) -> None:
        if self.away_since is None:
            self.away_since = time.monotonic()
            print(f"fgdsr: the tracking server does not take {self.what} ({why}); {len(self._points)} metric "
                  "points kept, sent when it answers again", file=sys.stderr, flush=True)  # fmt: skip

    def _next(self) -> tuple[list, int] | Callable[[Any], None] | None:
        """The next job (a chunk, or the final call), waiting for one; None: the thread ends."""
        with self._cond:
            while not self._abandoned and not (self._points and (self._wanted or self._closing)):
                if self._closing:
                    final, self._final = self._final, None
                    return final
                self._cond.wait()
            return None if self._abandoned else _chunk(self._points)

    def _loop(self) -> None:
        from mlflow.entities import RunTag

        delay = 0.5
        while (job := self._next()) is not None:
            try:
                if callable(job):
                    job(self._client)
                else:
                    chunk, step = job
                    tags = [RunTag(LOGGED_STEP_TAG, str(step))] if step >= 0 else []
                    self._client.log_batch(self.run_id, metrics=chunk, tags=tags)
            except Exception as e:
                with self._cond:
                    if not is_transient(e):
                        self._error = e
                        self._cond.notify_all()
                        return
                    self._set_away(str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
                    deadline = time.monotonic() + delay  # only close() giving up cuts the pause short
                    while not self._abandoned and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                    delay = min(2 * delay, RETRY_MAX_S)
                    if callable(job):
                        self._final = job  # tried again
                continue
            delay = 0.5
            with self._cond:
                if not callable(job):
                    del self._points[: len(job[0])]
                    self.written_step = max(self.written_step, job[1])
                    self._wanted = self._wanted and bool(self._points)
                if self.away_since is not None:
                    print(f"fgdsr: the tracking server takes {self.what} again after "
                          f"{time.monotonic() - self.away_since:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
                    self.away_since = None
                self._cond.notify_all()


class TrialRun:
    """One trial's child run: created once, reopened on restore, metrics buffered and written in the
    background (`MetricWriter`: a tracking-server outage delays them, it neither loses nor doubles them).

    A reopened run continues after the last step it already holds (`fgdsr.logged_step`, written with every
    batch): a trial restarted from an older checkpoint re-trains a few steps but does not log them twice.
    """

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_run_id: str,
        trial_id: str,
        run_id: str | None,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
    ) -> None:
        self.uri = uri
        self.client = client(uri)
        self.logged_step = -1  # the last step the run held when it was opened
        run_id = run_id or find_trial_run(uri, experiment_id, parent_run_id, trial_id)
        self.resumed = run_id is not None
        if run_id is None:
            all_tags = {PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, **tags}
            run = retry(lambda: self.client.create_run(experiment_id, run_name=run_name, tags=all_tags))
            run_id = run.info.run_id
            log_batch(self.client, run_id, params=params)
        else:
            run = retry(lambda: self.client.get_run(run_id))
            self.logged_step = int(run.data.tags.get(LOGGED_STEP_TAG, -1))
            retry(lambda: self.client.update_run(run_id, status="RUNNING"))
            log_batch(self.client, run_id, tags=tags)  # the node may have changed
        self.run_id = run_id
        # its own client: the writer thread's requests never share one with the trial thread's
        self.writer = MetricWriter(client(uri), run_id, f"the metrics of run {run_id} (trial {trial_id})")

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step <= self.logged_step:
            return  # already in the run from before the restart
        self.writer.add(metric_list(metrics, step))
        if self.writer.pending >= BATCH:
            self.writer.flush(wait=0)

    def flush(self, wait: float = SYNC_WAIT_S) -> bool:
        """Send the buffered points and wait until written (at most `wait` s; not while the server is away).

        Called before a checkpoint is reported, so that a trial restored from it holds every point up to it.
        """
        return self.writer.flush(wait)

    def end(self, status: str, wait: float = END_WAIT_S) -> bool:
        """Write the buffered points, then set the final status (FINISHED, FAILED or KILLED); waits at most
        `wait` s for an away server (then one warning line; the driver ends runs left RUNNING)."""
        return self.writer.close(lambda c: c.set_terminated(self.run_id, status=status), wait)


def terminate_open_runs(uri: str, experiment_id: str, parent_run_id: str, status_of: dict[str, str]) -> int:
    """Give each child run its trial's final status after `fit`: a run still RUNNING (a trial stopped between
    reports is killed before it can end its run), or one a trial ended FINISHED when Tune stopped it for a
    stop signal (Tune stops a trial the same way for ASHA and for SIGTERM; only the driver knows which).

    `status_of` maps trial id -> final MLflow status; a RUNNING run of an unknown trial gets KILLED. Returns
    how many runs changed.
    """
    c = client(uri)
    n = 0
    for run in child_runs(uri, experiment_id, parent_run_id):
        now = run.info.status
        want = status_of.get(run.data.tags.get(TRIAL_TAG, ""), "KILLED" if now == "RUNNING" else now)
        if want != now:
            retry(lambda run=run, want=want: c.set_terminated(run.info.run_id, status=want))
            n += 1
    return n


def register_model(uri: str, name: str, run_id: str, artifact_path: str) -> str:
    """Register `<run artifacts>/<artifact_path>` as a new version of model `name`; returns the version."""
    c = client(uri)
    try:
        retry(
            lambda: c.create_registered_model(
                name, description="fgdsr LapSRN checkpoint (safetensors + JSON)"
            )
        )
    except Exception as e:  # already registered
        if "already exists" not in str(e).lower() and "resource_already_exists" not in str(e).lower():
            raise
    source = f"{c.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    mv = retry(lambda: c.create_model_version(name, source=source, run_id=run_id, tags={"format": "fgdsr"}))
    return str(mv.version)

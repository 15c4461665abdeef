"""MLflow tracking for sweeps: the store, the parent run, one child run per trial, the model registry.

Plain `MlflowClient` calls with explicit run ids (no fluent global state, no Ray MLflowLoggerCallback): a
trial runs in a Ray worker process, possibly restarted on another node, and must continue *its* run.
A trial's run is found again by its run id (kept in the checkpoint) or, before its first checkpoint, by
the tags `fgdsr.trial_id` + `mlflow.parentRunId`, so there is exactly one run per trial.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fgdsr.errors import UserError

T = TypeVar("T")
TRIAL_TAG = "fgdsr.trial_id"
PARENT_TAG = "mlflow.parentRunId"
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


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Call `fn`, retrying on transient store errors (sqlite 'database is locked' under concurrent trials)."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # MlflowException / OperationalError / connection reset
            text = str(e).lower()
            transient = any(w in text for w in ("locked", "busy", "connection", "timed out", "503", "502"))
            if not transient or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


def init_experiment(uri: str, name: str) -> str:
    """Initialise the store (schema migration runs here, once, on the driver) and get/create `name` -> id."""
    c = client(uri)
    exp = retry(lambda: c.get_experiment_by_name(name))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise UserError(
                f"--experiment {name}: deleted in the MLflow store; restore it or pick another name"
            )
        return exp.experiment_id
    artifact_location = None
    if is_sqlite(uri):
        # An absolute artifact folder next to the database: trials run with other working directories.
        db = Path(uri[len("sqlite:///") :])
        artifact_location = (db.parent / "mlartifacts").as_uri()
    return retry(lambda: c.create_experiment(name, artifact_location=artifact_location))


def start_parent_run(
    uri: str, experiment_id: str, name: str, params: dict[str, Any], tags: dict[str, str]
) -> str:
    """The sweep's parent run; returns its id."""
    from mlflow.entities import Param

    c = client(uri)
    run = retry(lambda: c.create_run(experiment_id, run_name=name, tags=tags))
    batch = [Param(k, _param_str(v)) for k, v in params.items()]
    for i in range(0, len(batch), 100):
        retry(lambda i=i: c.log_batch(run.info.run_id, params=batch[i : i + 100]))
    return run.info.run_id


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


class TrialRun:
    """One trial's child run: created once, reopened on restore, metrics buffered and sent in batches."""

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
        from mlflow.entities import Param

        self.uri = uri
        self.client = client(uri)
        self._metrics: list = []
        run_id = run_id or find_trial_run(uri, experiment_id, parent_run_id, trial_id)
        self.resumed = run_id is not None
        if run_id is None:
            all_tags = {PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, **tags}
            run = retry(lambda: self.client.create_run(experiment_id, run_name=run_name, tags=all_tags))
            run_id = run.info.run_id
            batch = [Param(k, _param_str(v)) for k, v in params.items()]
            for i in range(0, len(batch), 100):
                retry(lambda i=i: self.client.log_batch(run_id, params=batch[i : i + 100]))
        else:
            retry(lambda: self.client.update_run(run_id, status="RUNNING"))
            for k, v in tags.items():  # the node may have changed
                retry(lambda k=k, v=v: self.client.set_tag(run_id, k, v))
        self.run_id = run_id

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and v == v:  # skip NaN
                self._metrics.append(Metric(k, float(v), now, int(step)))
        if len(self._metrics) >= 200:
            self.flush()

    def flush(self) -> None:
        batch, self._metrics = self._metrics, []
        for i in range(0, len(batch), 1000):  # MLflow's log_batch limit
            retry(lambda i=i: self.client.log_batch(self.run_id, metrics=batch[i : i + 1000]))

    def end(self, status: str) -> None:
        """Flush and set the final status (FINISHED, FAILED or KILLED)."""
        try:
            self.flush()
        finally:
            retry(lambda: self.client.set_terminated(self.run_id, status=status))


def terminate_open_runs(uri: str, experiment_id: str, parent_run_id: str, status_of: dict[str, str]) -> int:
    """End child runs still RUNNING after the sweep (a trial stopped by ASHA is killed between reports).

    `status_of` maps trial id -> final MLflow status; unknown trials get KILLED. Returns how many were ended.
    """
    c = client(uri)
    n = 0
    for run in child_runs(uri, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            status = status_of.get(run.data.tags.get(TRIAL_TAG, ""), "KILLED")
            retry(lambda run=run, status=status: c.set_terminated(run.info.run_id, status=status))
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

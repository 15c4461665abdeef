"""MLflow tracking for sweeps: the store, the parent run, one child run per trial, the model registry.

Plain `MlflowClient` calls with explicit run ids (no fluent global state, no Ray MLflowLoggerCallback): a
trial runs in a Ray worker process, possibly restarted on another node, and must continue *its* run.
A trial's run is found again by its run id (kept in the checkpoint) or, before its first checkpoint, by
the tags `fgdsr.trial_id` + `mlflow.parentRunId`, so there is exactly one run per trial.
"""

from __future__ import annotations

import math
import os
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


def ui_url(uri: str, experiment_id: str | None, port: int = 5000) -> str:
    """The experiment's runs table in the MLflow UI (an HTTP store serves it; else `fgdsr ui` on `port`)."""
    base = uri.rstrip("/") if is_http(uri) else f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments/{experiment_id or 0}?workflowType={UI_WORKFLOW}"


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


class TrialRun:
    """One trial's child run: created once, reopened on restore, metrics buffered and sent in batches.

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
        self._metrics: list = []
        self.logged_step = -1
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

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step <= self.logged_step:
            return  # already in the run from before the restart
        self._metrics += metric_list(metrics, step)
        if len(self._metrics) >= BATCH:
            self.flush()

    def flush(self) -> None:
        batch, self._metrics = self._metrics, []
        # chunks in step order, each with the last step it holds: a failed chunk is re-logged, never doubled
        batch.sort(key=lambda m: m.step)
        for i in range(0, len(batch), BATCH - 1):
            chunk = batch[i : i + BATCH - 1]
            log_batch(self.client, self.run_id, metrics=chunk, tags={LOGGED_STEP_TAG: chunk[-1].step})
            self.logged_step = chunk[-1].step

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

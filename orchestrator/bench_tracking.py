"""The benchmark's MLflow side: run ids -> checkpoint folders before trt runs, the result record -> a run after.

Talks to MLflow only through orchestrator.tracking (resolve_tracking_uri, client, retry, standalone_run,
log_batch, log_files, end_run), so retries, batching and URI checks are the tracking layer's; trt itself never
imports MLflow.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from fgdsr.errors import UserError

RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$|^[A-Za-z0-9_-]{8,64}$")
EXPERIMENT = "fgdsr-benchmark"
METRIC_KEYS = ("params", "weights", "mult_adds", "psnr", "ssim", "throughput_ips", "peak_memory_mb")


def resolve_model(text: str, tracking_uri: str | None, field: str) -> str:
    """A local path as given, or the checkpoint folder of MLflow run `text` (downloaded); else a one-line error."""
    if Path(text).expanduser().exists():
        return text
    if not RUN_ID.match(text) or "/" in text or "." in text:
        raise UserError(f"{field}: '{text}' is neither an existing checkpoint/.onnx/.engine path nor an MLflow run id; "
                        "check the path")  # fmt: skip
    return str(download_run_checkpoint(text, tracking_uri, field))


def download_run_checkpoint(run_id: str, tracking_uri: str | None, field: str) -> Path:
    """Download the artifacts of MLflow run `run_id` and return its checkpoint directory."""
    from orchestrator import tracking
    from trt.sources import find_checkpoint

    if tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        # no silent default store: a mistyped path must not create ./mlflow.db
        raise UserError(f"{field}: '{run_id}' is not an existing path; as an MLflow run id it needs "
                        "--tracking-uri URI (or MLFLOW_TRACKING_URI)")  # fmt: skip
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UserError(f"{field}: '{run_id}' looks like an MLflow run id but mlflow is not installed; "
                        "pip install 'fgdsr[track]' or pass a checkpoint path") from None  # fmt: skip
    uri = tracking.resolve_tracking_uri(tracking_uri)
    c = tracking.client(uri)
    try:
        tracking.retry(lambda: c.get_run(run_id))
        local = Path(tracking.retry(lambda: c.download_artifacts(run_id, "")))
    except MlflowException as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"{field}: MLflow run '{run_id}' not found at {uri} ({first}); "
                        "pass --tracking-uri or a checkpoint path") from None  # fmt: skip
    ckpt = find_checkpoint(local)
    if ckpt is None:
        raise UserError(f"{field}: MLflow run '{run_id}' has no checkpoint among its artifacts; "
                        "pick a finished trial's run id or pass a checkpoint path")  # fmt: skip
    return ckpt


def benchmark_metrics(result) -> dict[str, float]:
    """The flat metrics of a BenchmarkResult: <role>_<quantity>, <role>_latency_<stat>_ms, ratio_<quantity>."""
    out: dict[str, float] = {}
    for r in result.rows:
        for key in METRIC_KEYS:
            v = getattr(r, key)
            if v is not None:
                out[f"{r.role}_{key}"] = float(v)
        for stat, v in r.latency_ms.items():
            out[f"{r.role}_latency_{stat}_ms"] = float(v)
    for key, v in result.ratios.items():
        if v is not None:
            out[f"ratio_{key}"] = float(v)
    out["latency_ci_low"], out["latency_ci_high"] = result.latency.low, result.latency.high
    return out


def log_benchmark(result, tracking_uri: str | None, experiment: str = EXPERIMENT) -> str:
    """Log the benchmark as its own MLflow run (params, metrics, verdict tag, the report files); -> run id."""
    from orchestrator import tracking
    from trt.report import result_dict, write_report

    uri = tracking.resolve_tracking_uri(tracking_uri)
    p = result.plan
    tags = {"verdict": result.verdict.text, "verdict_kind": result.verdict.kind}
    tags |= {f"{r.role}_source": r.label for r in result.rows}
    rid = tracking.standalone_run(uri, experiment, f"benchmark-{p.backend}-{p.precision}", tags)
    method = result_dict(result)["method"]
    params = {k: v for k, v in method.items() if not isinstance(v, list | dict)}
    metrics = tracking.metric_list(benchmark_metrics(result))
    tracking.log_batch(tracking.client(uri), rid, metrics=metrics, params=params)
    with tempfile.TemporaryDirectory() as tmp:
        tracking.log_files(uri, rid, list(write_report(result, tmp).values()), "benchmark")
    tracking.end_run(uri, rid, "FINISHED")
    return rid

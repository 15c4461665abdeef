"""What a user names on the command line: a checkpoint, an MLflow run id, an ONNX file or a TensorRT engine.

`resolve_source` turns the text into a `Source` (kind + local path); MLflow is imported only for run ids.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fgdsr.errors import UserError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$|^[A-Za-z0-9_-]{8,64}$")


@dataclass(frozen=True)
class Source:
    """kind: 'checkpoint' | 'onnx' | 'engine'; path: local file or directory; label: what the user typed."""

    kind: str
    path: Path
    label: str


def _kind_of(path: Path) -> str:
    if path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "engine"
    return "checkpoint"


def find_checkpoint(root: Path) -> Path | None:
    """The checkpoint directory under `root` (a folder holding *.safetensors and a JSON); 'best' preferred."""
    dirs = sorted({p.parent for p in root.rglob("*.safetensors") if any(p.parent.glob("*.json"))})
    if not dirs:
        return None
    best = [d for d in dirs if "best" in d.name.lower()]
    return (best or dirs)[0]


def resolve_source(text: str, tracking_uri: str | None = None, field: str = "model") -> Source:
    """A local path (checkpoint dir/file, .onnx, .engine) or an MLflow run id whose artifacts hold a checkpoint."""
    path = Path(text).expanduser()
    if path.exists():
        return Source(_kind_of(path), path, text)
    if not _RUN_ID.match(text) or "/" in text or "." in text:
        raise UserError(f"{field}: '{text}' is neither an existing checkpoint/.onnx/.engine path nor an MLflow run id; "
                        "check the path")  # fmt: skip
    return Source("checkpoint", download_run_checkpoint(text, tracking_uri, field), text)


def download_run_checkpoint(run_id: str, tracking_uri: str | None, field: str = "model") -> Path:
    """Download the artifacts of MLflow run `run_id` and return its checkpoint directory (cached per run)."""
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UserError(f"{field}: '{run_id}' looks like an MLflow run id but mlflow is not installed; "
                        "pip install 'fgdsr[track]' or pass a checkpoint path") from None  # fmt: skip
    if tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        # no silent default store: a mistyped path must not create ./mlruns or ./mlflow.db
        raise UserError(f"{field}: '{run_id}' is not an existing path; as an MLflow run id it needs "
                        "--tracking-uri URI (or MLFLOW_TRACKING_URI)")  # fmt: skip
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(run_id)
        local = Path(client.download_artifacts(run_id, ""))
    except MlflowException as e:
        where = tracking_uri or mlflow.get_tracking_uri()
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"{field}: MLflow run '{run_id}' not found at {where} ({first}); "
                        "pass --tracking-uri or a checkpoint path") from None  # fmt: skip
    ckpt = find_checkpoint(local)
    if ckpt is None:
        raise UserError(f"{field}: MLflow run '{run_id}' has no checkpoint among its artifacts; "
                        "pick a finished trial's run id or pass a checkpoint path")  # fmt: skip
    return ckpt

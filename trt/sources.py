"""What a user names on the command line, once it is a local file: a checkpoint, an ONNX file or a TensorRT engine.

`resolve_source` turns a path into a `Source` (kind + local path); `find_checkpoint` finds the checkpoint inside a
downloaded folder. trt knows nothing of MLflow: run ids are resolved by the orchestrator first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fgdsr.errors import UserError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


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


def resolve_source(text: str | Path, field: str = "model", label: str | None = None) -> Source:
    """A local path (checkpoint dir/file, .onnx, .engine) -> Source; `label`: what the user typed (default: the path).

    MLflow run ids are the orchestrator's (orchestrator/bench_tracking.py turns one into its downloaded checkpoint
    folder before trt sees it, and passes the run id as the label)."""
    path = Path(text).expanduser()
    if path.exists():
        return Source(_kind_of(path), path, label or str(text))
    raise UserError(f"{field}: '{text}' is not an existing checkpoint/.onnx/.engine path; check the path")

"""Sidecar JSON files next to exported artefacts (`model.onnx.json`, `model.engine.json`), hashes, atomic writes.

A sidecar records what an artefact was made from and for (fgdsr version, source hash, scale, variant, I/O names,
precision; for engines the TensorRT version and GPU), so a loader can refuse a mismatch with one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fgdsr.atomic import write_bytes_atomic
from fgdsr.errors import UserError

SIDECAR_FORMAT = 1
# Keys every sidecar of a kind must hold; a file missing one is rejected as corrupt.
REQUIRED = {
    "onnx": ("format", "kind", "fgdsr_version", "source_sha256", "scale", "variant", "opset", "input_names",
             "output_names", "precision"),
    "engine": ("format", "kind", "fgdsr_version", "onnx_sha256", "tensorrt_version", "gpu_name",
               "compute_capability", "profile", "precision", "scale", "variant", "input_names", "output_names"),
}  # fmt: skip


def sidecar_path(artefact: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json` (the suffix is kept so an .onnx and an .engine can share a folder)."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".json")


def sha256_path(path: str | Path) -> str:
    """SHA-256 hex of a file, or of a directory's files (sorted relative names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    return write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_sidecar(artefact: str | Path, kind: str, data: dict[str, Any]) -> Path:
    """Write the sidecar of `artefact` (kind 'onnx' or 'engine'); `data` must hold REQUIRED[kind] keys."""
    full = {"format": SIDECAR_FORMAT, "kind": kind, **data}
    missing = [k for k in REQUIRED[kind] if k not in full]
    if missing:  # a programming error, not a user error
        raise ValueError(f"sidecar for {artefact}: missing keys {missing}")
    return write_json_atomic(sidecar_path(artefact), full)


def read_sidecar(artefact: str | Path, kind: str) -> dict[str, Any]:
    """Read and check the sidecar of `artefact`; a missing, unreadable or incomplete one is a UserError."""
    path = sidecar_path(artefact)
    if not path.is_file():
        raise UserError(f"{path}: sidecar missing; re-create {Path(artefact).name} with fgdsr "
                        f"({'export' if kind == 'onnx' else 'build-engine'}) so its provenance is known")  # fmt: skip
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path}: sidecar is not valid JSON ({type(e).__name__}); re-create the artefact"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise UserError(f"{path}: not an {kind} sidecar (kind={data.get('kind') if isinstance(data, dict) else None!r}); "
                        "re-create the artefact")  # fmt: skip
    missing = [k for k in REQUIRED[kind] if k not in data]
    if missing:
        raise UserError(f"{path}: sidecar lacks {', '.join(missing)}; re-create the artefact with this fgdsr")
    if data["format"] != SIDECAR_FORMAT:
        raise UserError(
            f"{path}: sidecar format {data['format']} is not {SIDECAR_FORMAT}; re-create the artefact"
        )
    return data

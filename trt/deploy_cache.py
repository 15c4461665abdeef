"""Static-shape tile graphs and engines cached beside a checkpoint, for `fgdsr upscale --backend onnxruntime|tensorrt`.

Layout: checkpoint `runs/x/best/` -> cache folder `runs/x/best.deploy/` (beside it, not inside: the checkpoint
folder's sha256 is part of every cache key, so nothing may be written into it) holding

    tile-1x1x320x320-fp32.onnx  (+ .onnx.json sidecar)     a graph of exactly that input shape
    tile-1x1x320x320-fp32.engine (+ .engine.json)          a TensorRT engine, profile min = opt = max = that shape

A cached file is reused when its sidecar matches: the checkpoint's sha256, the shape, the precision and the
versions that made it (fgdsr, torch, onnx; for engines TensorRT and the GPU), and the file's own sha256 (a
truncated or replaced file is rebuilt). Anything else is rebuilt in place (atomic writes: a reader never sees
half a file). `CacheResult.status` says which happened and why, for the CLI's line and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fgdsr
from fgdsr.errors import UserError
from trt.sidecar import sha256_path, sidecar_path


@dataclass(frozen=True)
class CacheResult:
    """path: the graph or engine; status: 'reused', 'built' (none there) or 'rebuilt (<reason>)'."""

    path: Path
    status: str


@dataclass(frozen=True)
class TileKey:
    """What a cached tile graph is for: the checkpoint folder, the NCHW input shape, the precision."""

    checkpoint: Path
    shape: tuple[int, int, int, int]
    precision: str = "fp32"

    @property
    def stem(self) -> str:
        return f"tile-{'x'.join(str(d) for d in self.shape)}-{self.precision}"


def cache_dir_for(checkpoint: str | Path) -> Path:
    """The default cache folder: `<checkpoint>.deploy` beside the checkpoint folder."""
    ckpt = Path(checkpoint).resolve()
    return ckpt.with_name(ckpt.name + ".deploy")


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"{folder}: cannot create the tile-graph cache ({e.strerror}); pass --cache-dir DIR"
        ) from None
    return folder


def _read(path: Path) -> dict[str, Any] | None:
    """The sidecar beside `path`, or None when the file or its sidecar is missing or unreadable."""
    import json

    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mismatch(meta: dict[str, Any], expect: dict[str, Any]) -> str | None:
    """The first key whose cached value differs from the expected one, as a short reason."""
    for key, want in expect.items():
        if meta.get(key) != want:
            return f"{key} {meta.get(key)!r} != {want!r}"
    return None


def onnx_expectations(key: TileKey, checkpoint_sha: str) -> dict[str, Any]:
    """Sidecar values a reusable tile graph must have."""
    import onnx
    import torch

    return {
        "source_sha256": checkpoint_sha,
        "input_dims": list(key.shape),
        "precision": key.precision,
        "io": "y",
        "fgdsr_version": fgdsr.__version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }


def tile_onnx(key: TileKey, cache_dir: str | Path | None = None, load=None) -> CacheResult:
    """The tile graph of `key`, reused or (re)exported; `load()` -> (model, cfg) is called only to export."""
    from trt.export import ExportOptions, export_onnx

    folder = _writable(Path(cache_dir) if cache_dir else cache_dir_for(key.checkpoint))
    path = folder / f"{key.stem}.onnx"
    ckpt_sha = sha256_path(key.checkpoint)
    meta = _read(path)
    reason = "none cached" if meta is None else _mismatch(meta, onnx_expectations(key, ckpt_sha))
    if reason is None and meta.get("onnx_sha256") != sha256_path(path):
        reason = "file changed since export"
    if reason is None:
        return CacheResult(path, "reused")
    if load is None:
        from fgdsr.checkpoint import load_model

        model, cfg, _ = load_model(key.checkpoint)
    else:
        model, cfg = load()
    opts = ExportOptions(precision=key.precision, static_shape=key.shape, source=str(key.checkpoint),
                         source_sha256=ckpt_sha)  # fmt: skip
    export_onnx(model, path, cfg, opts)
    return CacheResult(path, "built" if meta is None else f"rebuilt ({reason})")


def tile_engine(
    onnx: CacheResult, shape: tuple[int, int, int, int], workspace_gb: float = 4.0
) -> CacheResult:
    """The TensorRT engine of a cached tile graph (profile min = opt = max = `shape`), reused or (re)built.

    Reused only when built from this very ONNX file (sha256), by this TensorRT, for this GPU, for this shape.
    """
    from trt.engine import build_engine, gpu_identity, import_tensorrt
    from trt.shapes import Profile

    path = onnx.path.with_suffix(".engine")
    trt = import_tensorrt()
    profile = Profile(tuple(shape), tuple(shape), tuple(shape))
    expect = {"onnx_sha256": sha256_path(onnx.path), "tensorrt_version": trt.__version__,
              "profile": profile.to_dict(), **gpu_identity()}  # fmt: skip
    meta = _read(path)
    reason = "none cached" if meta is None else _mismatch(meta, expect)
    if reason is None and meta.get("engine_sha256") != sha256_path(path):
        reason = "file changed since build"
    if reason is None:
        return CacheResult(path, "reused")
    build_engine(
        onnx.path, path, profile, workspace_gb=workspace_gb, timing_cache=path.with_suffix(".timing")
    )
    return CacheResult(path, "built" if meta is None else f"rebuilt ({reason})")

"""Tile runners for `fgdsr upscale` and `fgdsr evaluate --onnx/--engine` on torch, ONNX Runtime and TensorRT.

A tile runner (`fgdsr.upscale.TileRunner`) maps `(N, 1, h, w)` float32 LR Y in [0, 1] to `(N, 1, h*s, w*s)`
float32. This module is the one place that chooses a backend for them:

- torch: the checkpoint's model (`fgdsr.upscale.TorchTileRunner`; fp16 on a CUDA GPU only);
- onnxruntime / tensorrt: `StaticShapeRunner`, one static-shape graph (and engine) per window shape, taken
  from the cache beside the checkpoint (`trt/deploy_cache.py`: exported / built once, reused while the
  checkpoint, shape, precision and versions match) and opened on first use.

Every call into `trt/backends.py` goes through `BackendRunner`, the one adapter onto its backend objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fgdsr.errors import UserError

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")


class BackendRunner:
    """The one adapter onto trt.backends: a Backend object (onnxruntime or tensorrt) as a TileRunner.

    kind: 'onnxruntime' (an .onnx file) or 'tensorrt' (an engine); shape: the NCHW input it is opened for (an
    ONNX with dynamic dims runs any shape; an engine any shape inside its profile).
    """

    def __init__(
        self, kind: str, path: Path, shape: tuple[int, ...], precision: str, device: str = "cpu", threads=None
    ) -> None:
        from trt.backends import OrtBackend, TensorRTBackend

        if kind == "onnxruntime":
            self._backend = OrtBackend(path, shape, device=device, threads=threads, precision=precision)
        elif kind == "tensorrt":
            self._backend = TensorRTBackend(path, shape)
        else:
            raise ValueError(f"BackendRunner: unknown kind {kind!r}")
        self.precision = precision
        self.label = f"{kind} {precision}"

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return self._backend.infer(np.ascontiguousarray(y, dtype=np.float32))

    def close(self) -> None:
        self._backend.close()


@dataclass(frozen=True)
class RunnerSpec:
    """What `fgdsr upscale` runs: a checkpoint folder on `backend` in `precision` at `scale` (None: the
    checkpoint's); device: cpu | cuda; cache_dir: where tile graphs go (None: beside the checkpoint);
    threads: ONNX Runtime intra-op threads (None: its default); on_event: told each export/build/reuse."""

    checkpoint: Path
    backend: str = "torch"
    precision: str = "fp32"
    scale: int | None = None
    device: str = "cpu"
    cache_dir: Path | None = None
    threads: int | None = None
    on_event: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Runners:
    """runner: the requested backend/precision; fallback: an fp32 runner for the fp16 guard (None at fp32);
    scale: the output scale; align: the tile alignment the model needs (FD: its Class-Module sub-image)."""

    runner: Any
    fallback: Any
    scale: int
    align: int


class StaticShapeRunner:
    """ONNX Runtime / TensorRT on tiles: one static-shape graph (engine) per input shape, cached, opened lazily."""

    def __init__(self, spec: RunnerSpec, precision: str, load: Callable[[], tuple[Any, Any]]) -> None:
        self.spec, self.precision, self._load = spec, precision, load
        self.label = f"{spec.backend} {precision}"
        self._by_shape: dict[tuple[int, ...], BackendRunner] = {}
        self._model = None

    def _model_and_cfg(self):
        if self._model is None:  # one checkpoint load, however many shapes need exporting
            self._model = self._load()
        return self._model

    def _open(self, shape: tuple[int, int, int, int]) -> BackendRunner:
        from trt.deploy_cache import TileKey, tile_engine, tile_onnx

        spec = self.spec
        onnx = tile_onnx(TileKey(spec.checkpoint, shape, self.precision), spec.cache_dir, self._model_and_cfg)
        self._event(f"tile graph {onnx.path.name}: {onnx.status}")
        path = onnx.path
        if spec.backend == "tensorrt":
            engine = tile_engine(onnx, shape)
            self._event(f"tile engine {engine.path.name}: {engine.status}")
            path = engine.path
        return BackendRunner(spec.backend, path, shape, self.precision, spec.device, spec.threads)

    def _event(self, text: str) -> None:
        if self.spec.on_event is not None:
            self.spec.on_event(text)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        shape = tuple(int(d) for d in y.shape)
        runner = self._by_shape.get(shape)
        if runner is None:
            runner = self._by_shape[shape] = self._open(shape)
        return runner(y)

    def close(self) -> None:
        for runner in self._by_shape.values():
            runner.close()
        self._by_shape.clear()


def _check_spec(spec: RunnerSpec, cfg) -> int:
    """Refuse, in one line, what the chosen backend cannot do here; -> the output scale."""
    if spec.backend not in BACKENDS:
        raise UserError(f"--backend '{spec.backend}': use one of {', '.join(BACKENDS)}")
    if spec.precision not in PRECISIONS:
        raise UserError(f"--precision '{spec.precision}': use fp32 or fp16")
    scale = int(spec.scale or cfg.scale)
    if spec.backend != "torch" and scale != int(cfg.scale):
        raise UserError(f"--scale {scale}: --backend {spec.backend} runs the exported x{cfg.scale} graph only; "
                        f"use --scale {cfg.scale} or --backend torch for a lower pyramid level")  # fmt: skip
    if spec.backend == "tensorrt" and not spec.device.startswith("cuda"):
        raise UserError("--backend tensorrt runs on a GPU; pass --device cuda")
    if spec.backend == "torch" and spec.precision == "fp16" and not spec.device.startswith("cuda"):
        raise UserError("--precision fp16: the torch backend runs fp16 on a CUDA GPU only; use --device cuda, "
                        "--backend onnxruntime, or --precision fp32")  # fmt: skip
    return scale


def _torch_runners(spec: RunnerSpec, scale: int) -> tuple[Any, Any]:
    import copy

    import torch

    from fgdsr.checkpoint import load_model
    from fgdsr.upscale import TorchTileRunner, model_fn

    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {spec.device}: no CUDA GPU visible here; use --device cpu")
    model, cfg, _ = load_model(spec.checkpoint, device=spec.device)
    fp32 = TorchTileRunner(model_fn(model, cfg, scale), spec.device)
    if spec.precision == "fp32":
        return fp32, None
    half = copy.deepcopy(model).half()
    return TorchTileRunner(model_fn(half, cfg, scale), spec.device, "fp16"), fp32


def open_runners(spec: RunnerSpec) -> Runners:
    """The tile runner of `spec` (and its fp32 fallback for fp16); nothing is exported until a tile needs it."""
    from fgdsr.checkpoint import read_config
    from fgdsr.upscale import class_align

    cfg = read_config(spec.checkpoint)  # one-line error for a missing/corrupt checkpoint; no torch yet
    if Path(spec.checkpoint).is_file():  # a file inside the checkpoint: key and cache belong to its folder
        spec = replace(spec, checkpoint=Path(spec.checkpoint).parent)
    scale = _check_spec(spec, cfg)
    align = class_align(cfg)
    if spec.backend == "torch":
        runner, fallback = _torch_runners(spec, scale)
        return Runners(runner, fallback, scale, align)
    from trt.export import require_onnx

    require_onnx()
    if spec.backend == "tensorrt":
        from trt.engine import import_tensorrt

        import_tensorrt()  # one line now rather than after the first tile's export

    def load():
        from fgdsr.checkpoint import load_model

        model, cfg2, _ = load_model(spec.checkpoint)
        return model, cfg2

    runner = StaticShapeRunner(spec, spec.precision, load)
    fallback = StaticShapeRunner(spec, "fp32", load) if spec.precision != "fp32" else None
    return Runners(runner, fallback, scale, align)


def open_file_runner(path: str | Path) -> tuple[BackendRunner, dict[str, Any]]:
    """A deployed model file (.onnx from fgdsr export, or a TensorRT engine) as a runner; -> (runner, sidecar).

    The .onnx runs any input shape it was exported for (dynamic dims); an engine any shape in its profile.
    """
    from trt.sources import ENGINE_SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; create it with fgdsr export (or fgdsr build-engine)")
    if path.suffix.lower() in ENGINE_SUFFIXES:
        from trt.engine import read_engine_meta

        meta = read_engine_meta(path)
        shape = tuple(meta["profile"]["opt"])
        return BackendRunner("tensorrt", path, shape, meta["precision"], "cuda"), meta
    from trt.sidecar import read_sidecar

    meta = read_sidecar(path, "onnx")
    channels = 3 if meta.get("io") == "rgb" else 1
    dims = meta.get("input_dims") or []
    shape = tuple(d if isinstance(d, int) else 8 for d in dims) if len(dims) == 4 else (1, channels, 8, 8)
    return BackendRunner("onnxruntime", path, shape, meta["precision"]), meta

"""Inference backends behind one small interface, for timing and for PSNR through the benchmarked backend.

A backend holds one model at one fixed input shape `(N, 1, h, w)` (LR Y, float32 in [0, 1]):
- `step()` runs one inference and returns (end_to_end_ms, compute_ms or None);
- `infer(x)` maps any LR Y batch (numpy float32) to SR (numpy float32), for the accuracy check;
- `peak_memory_mb()` measures one inference's peak extra memory (device memory on a GPU, RSS on the CPU).

torch / torch-compile: an SRModel (eager / `torch.compile`, fixed shapes); onnxruntime: an .onnx file;
tensorrt: an engine run with pycuda (trt/runtime.py). On the CPU, end-to-end = compute = wall clock.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fgdsr.config import config_from_dict
from fgdsr.errors import UserError

BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")


def _vm_kb(key: str) -> int | None:
    """A /proc/self/status field in kB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_peak_extra_mb(fn) -> float | None:
    """Peak RSS above the current RSS while `fn()` runs, MiB (Linux: resets VmHWM via /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak resident set size to the current one (Linux >= 4.0)
    except OSError:
        return None
    before = _vm_kb("VmRSS")
    fn()
    peak = _vm_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1024


class Backend:
    """Base: subclasses set name/precision/device/threads and implement step, infer, peak_memory_mb."""

    name = "?"
    precision = "fp32"
    device = "cpu"
    threads: int | None = None

    def step(self) -> tuple[float, float | None]:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def peak_memory_mb(self) -> float | None:
        return cpu_peak_extra_mb(self.step)

    def close(self) -> None:
        pass


class TorchBackend(Backend):
    """An SRModel in torch (eager, or `torch.compile` with fixed shapes); CUDA events on a GPU."""

    def __init__(
        self, model, shape, device: str = "cpu", precision: str = "fp32", compile: bool = False
    ) -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA GPU; use --device cpu")
        if precision == "fp16" and not device.startswith("cuda"):
            raise UserError("--precision fp16: the torch backends run fp16 on a GPU only; "
                            "use --backend onnxruntime (fp16 ONNX) or --precision fp32")  # fmt: skip
        self.torch = torch
        self.name = "torch-compile" if compile else "torch"
        self.device, self.precision = device, precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.threads = torch.get_num_threads() if device == "cpu" else None
        self.fn = torch.compile(self.model, dynamic=False, fullgraph=False) if compile else self.model
        self.shape = tuple(shape)
        gen = torch.Generator().manual_seed(0)
        host = torch.rand(self.shape, generator=gen)
        self.cuda = device.startswith("cuda")
        if self.cuda:
            # fixed shapes: let cuDNN time its algorithms per convolution once (as TensorRT times tactics) rather
            # than take its heuristic pick; the warm-up absorbs the search. Process-wide, like trtexec's build.
            torch.backends.cudnn.benchmark = True
            self.h_in = host.pin_memory()
            self.x = host.to(device, self.dtype)
            self.h_out = None
            self.start, self.stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        else:
            self.x = host.to(self.dtype)
        if compile:
            self.step()  # compile now, so neither the warm-up nor the peak-memory probe includes compilation

    def _forward(self, x):
        with self.torch.inference_mode():
            return self.fn(x)

    def step(self) -> tuple[float, float | None]:
        torch = self.torch
        if not self.cuda:
            t0 = time.perf_counter()
            self._forward(self.x)
            ms = (time.perf_counter() - t0) * 1e3
            return ms, ms
        # GPU compute alone (events around the forward), then end-to-end with pinned copies both ways
        self.start.record()
        self._forward(self.x)
        self.stop.record()
        self.stop.synchronize()
        compute = self.start.elapsed_time(self.stop)
        t0 = time.perf_counter()
        x = self.h_in.to(self.device, non_blocking=True).to(self.dtype)
        y = self._forward(x)
        if self.h_out is None:
            self.h_out = torch.empty(y.shape, dtype=torch.float32).pin_memory()
        self.h_out.copy_(y.float(), non_blocking=True)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3, compute

    def infer(self, x: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, self.dtype)
        with self.torch.inference_mode():
            y = self.model(t)  # eager for any size: a compiled fn is specialised to the benchmark shape
        return y.float().cpu().numpy()

    def peak_memory_mb(self) -> float | None:
        if not self.cuda:
            return cpu_peak_extra_mb(self.step)
        torch = self.torch
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20


class OrtBackend(Backend):
    """An .onnx file in ONNX Runtime (CPU, or CUDA when onnxruntime-gpu is installed and --device cuda)."""

    name = "onnxruntime"

    def __init__(
        self, onnx_path, shape, device: str = "cpu", threads: int | None = None, precision: str = "fp32"
    ):
        from trt.export import INPUT_NAME, OUTPUT_NAME, ort_session

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("--device cuda: onnxruntime has no CUDAExecutionProvider; "
                                "pip install onnxruntime-gpu or use --device cpu")  # fmt: skip
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.sess = ort_session(onnx_path, threads=threads, providers=providers)
        self.inp, self.out = INPUT_NAME, OUTPUT_NAME
        self.device, self.precision, self.threads = device, precision, threads
        self.x = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)

    def step(self) -> tuple[float, float | None]:
        t0 = time.perf_counter()
        self.sess.run([self.out], {self.inp: self.x})
        ms = (time.perf_counter() - t0) * 1e3
        return ms, (ms if self.device == "cpu" else None)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.out], {self.inp: np.ascontiguousarray(x, dtype=np.float32)})[0]


class TensorRTBackend(Backend):
    """A TensorRT engine with the pycuda runtime: GPU compute by CUDA events, end-to-end with pinned copies."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path, shape, cuda_graph: bool = False) -> None:
        from trt.runtime import TrtRunner

        self.runner = TrtRunner(engine_path, tuple(shape), cuda_graph=cuda_graph)
        self.precision = self.runner.meta["precision"]
        self.runner.h_in[...] = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)

    def step(self) -> tuple[float, float | None]:
        compute = self.runner.time_compute()
        return self.runner.time_end_to_end(), compute

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run(x)

    def peak_memory_mb(self) -> float | None:
        return self.runner.device_memory_mb()

    def close(self) -> None:
        self.runner.close()


def open_backend(
    source,
    backend: str,
    shape: tuple[int, int, int, int],
    *,
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    workdir: Path,
    role: str = "model",
    cuda_graph: bool = False,
) -> tuple[Backend, Any, dict[str, Any]]:
    """Open `source` (a trt.sources.Source) on `backend` at the fixed `shape`; -> (backend, cfg, info).

    A checkpoint is exported (onnxruntime) or exported and built (tensorrt) into `workdir` first, so any of
    checkpoint / run id / .onnx / .engine can be compared on the backends that can run it.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    info: dict[str, Any] = {"source": source.label, "kind": source.kind}
    if backend in ("torch", "torch-compile"):
        if source.kind != "checkpoint":
            raise UserError(f"--{role}: '{source.label}' is an {source.kind} file; the {backend} backend needs a "
                            "checkpoint or an MLflow run id (or use --backend onnxruntime/tensorrt)")  # fmt: skip
        from fgdsr.checkpoint import load_model

        model, cfg, _ = load_model(source.path)
        return TorchBackend(model, shape, device, precision, compile=backend == "torch-compile"), cfg, info
    if backend == "onnxruntime":
        onnx_path, meta = _as_onnx(source, precision, workdir, role)
        info["onnx"] = str(onnx_path)
        cfg = config_from_dict(meta.get("config", {}), f"{source.label} (sidecar config)")
        return OrtBackend(onnx_path, shape, device, threads, meta["precision"]), cfg, info
    # tensorrt
    from trt.engine import build_engine, read_engine_meta

    if source.kind == "engine":
        engine_path = source.path
        meta = read_engine_meta(engine_path)
    else:
        from trt.shapes import Profile

        onnx_path, _ = _as_onnx(source, precision, workdir, role)
        engine_path = workdir / f"{role}.engine"
        n, _, h, w = shape
        # a profile around the benchmark shape, large enough for the evaluation images
        profile = Profile((1, 1, 8, 8), tuple(shape), (n, 1, max(h, 640), max(w, 640)))
        meta = build_engine(onnx_path, engine_path, profile, timing_cache=workdir / "timing.cache")
    info["engine"] = str(engine_path)
    cfg = config_from_dict(meta.get("config", {}), f"{source.label} (sidecar config)")
    return TensorRTBackend(engine_path, shape, cuda_graph=cuda_graph), cfg, info


def _as_onnx(source, precision: str, workdir: Path, role: str) -> tuple[Path, dict[str, Any]]:
    """The .onnx for `source`: the file itself (its sidecar's precision must match) or a fresh export."""
    from trt.sidecar import read_sidecar

    if source.kind == "engine":
        raise UserError(
            f"--{role}: '{source.label}' is a TensorRT engine; it runs on --backend tensorrt only"
        )
    if source.kind == "onnx":
        meta = read_sidecar(source.path, "onnx")
        if meta["precision"] != precision:
            raise UserError(f"--precision {precision}: '{source.label}' was exported as {meta['precision']}; "
                            f"pass --precision {meta['precision']} or re-export")  # fmt: skip
        return source.path, meta
    from trt.export import export_source

    out = Path(workdir) / f"{role}-{precision}.onnx"
    return out, export_source(source, out, precision=precision)

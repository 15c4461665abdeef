"""Inference backends behind one small interface, for timing and for PSNR through the benchmarked backend.

A backend holds one model at one fixed input shape `(N, 1, h, w)` (LR Y, float32 in [0, 1]):
- `step()` runs one inference and returns a `Step` (end-to-end ms; on a GPU also H2D, compute and D2H ms of
  that same inference, from CUDA events around each part);
- `as_module()` is the model as a torch module on any LR Y batch, for the accuracy check (the torch backends
  hand out their own model: no tensor -> numpy -> tensor per call);
- `peak_memory_mb()` measures one inference's peak extra memory (device memory on a GPU, RSS on the CPU).

torch / torch-compile: an SRModel (eager / `torch.compile`, fixed shapes); onnxruntime: an .onnx file;
tensorrt: an engine run with pycuda (trt/runtime.py). On the CPU, end-to-end = compute = wall clock.
This module also owns the backend list and the one backend / device choice (`choose_backend`, `choose_device`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fgdsr.config import config_from_dict
from fgdsr.errors import UserError

BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")
TRT_HINT = "TensorRT not importable (pip install 'fgdsr[trt]' on a GPU machine)"


def _tensorrt_status() -> tuple[bool, str]:
    try:
        import tensorrt
    except ImportError:
        return False, TRT_HINT
    return True, f"TensorRT {tensorrt.__version__} importable"


def choose_backend(requested: str) -> tuple[str, str]:
    """-> (backend, reason). 'auto': TensorRT when `tensorrt` imports and a CUDA GPU is visible, else ONNX Runtime.

    A named backend is checked (tensorrt needs both) and returned with the reason 'asked for with --backend'.
    """
    if requested not in (*BACKENDS, "auto"):
        raise UserError(f"--backend: '{requested}' is not one of auto, {', '.join(BACKENDS)}")
    if requested in ("onnxruntime", "torch", "torch-compile"):
        return requested, "asked for with --backend"
    import torch

    trt_ok, trt_why = _tensorrt_status()
    gpu = torch.cuda.is_available()
    if requested == "tensorrt":
        if not (trt_ok and gpu):
            raise UserError(f"--backend tensorrt: {trt_why if not trt_ok else 'no CUDA GPU visible'}; "
                            "use --backend onnxruntime or auto")  # fmt: skip
        return "tensorrt", "asked for with --backend"
    if trt_ok and gpu:
        return "tensorrt", f"{trt_why} and GPU {torch.cuda.get_device_name(0)} visible"
    if not trt_ok:
        return "onnxruntime", trt_why
    return "onnxruntime", "TensorRT importable but no CUDA GPU visible"


def choose_device(backend: str, requested: str = "auto") -> str:
    """'cpu' | 'cuda' for `backend`: 'auto' = the GPU when this backend can use one here, else the CPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device '{requested}': expected auto, cpu or cuda")
    if backend == "tensorrt":
        if requested == "cpu":
            raise UserError("--backend tensorrt runs on --device cuda only")
        return "cuda"
    if requested != "auto":
        return requested
    if backend == "onnxruntime":
        import onnxruntime

        return "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to `n` inside the block (unchanged for None) and restored after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class Step(NamedTuple):
    """One inference, ms: end-to-end (host wall clock) and, on a GPU, its H2D copy, compute and D2H copy."""

    e2e: float
    h2d: float | None = None
    compute: float | None = None
    d2h: float | None = None


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
    """Base: subclasses set name/precision/device/threads and implement step, as_module, peak_memory_mb."""

    name = "?"
    precision = "fp32"
    device = "cpu"
    threads: int | None = None

    def step(self) -> Step:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        """LR Y (N, 1, h, w) float32 -> SR Y (N, 1, H, W) float32 (numpy in, numpy out)."""
        raise NotImplementedError

    def as_module(self):
        """A torch module (N, 1, h, w) float -> (N, 1, H, W) float32 on the CPU, for fgdsr.inference.ModelUpscaler."""
        import torch

        backend = self

        class NumpyBackendModule(torch.nn.Module):
            """A non-torch backend as a Y model: the one numpy round trip its runtime needs anyway."""

            def forward(self, y: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(backend.infer(y.detach().cpu().float().numpy()))

        return NumpyBackendModule()

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
        host = torch.rand(self.shape, generator=torch.Generator().manual_seed(0))
        self.cuda = device.startswith("cuda")
        if self.cuda:
            # fixed shapes: let cuDNN time its algorithms per convolution once (as TensorRT times tactics) rather
            # than take its heuristic pick; the warm-up absorbs the search. Process-wide, like trtexec's build.
            torch.backends.cudnn.benchmark = True
            self.h_in = host.pin_memory()
            self.h_out = None
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self.x = host.to(device, self.dtype)
        if compile:
            self.step()  # compile now, so neither the warm-up nor the peak-memory probe includes compilation

    def _forward(self, x):
        with self.torch.inference_mode():
            return self.fn(x)

    def step(self) -> Step:
        if not self.cuda:
            t0 = time.perf_counter()
            self._forward(self.x)
            ms = (time.perf_counter() - t0) * 1e3
            return Step(ms, None, ms, None)
        # one inference: pinned H2D, compute, D2H into pinned memory, CUDA events between the parts
        torch, ev = self.torch, self.events
        t0 = time.perf_counter()
        ev[0].record()
        x = self.h_in.to(self.device, non_blocking=True).to(self.dtype)
        ev[1].record()
        y = self._forward(x)
        ev[2].record()
        if self.h_out is None:
            self.h_out = torch.empty(y.shape, dtype=torch.float32).pin_memory()
        self.h_out.copy_(y.float(), non_blocking=True)
        ev[3].record()
        ev[3].synchronize()
        e2e = (time.perf_counter() - t0) * 1e3
        return Step(e2e, ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2]), ev[2].elapsed_time(ev[3]))

    def infer(self, x: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self.as_module()(t).numpy()

    def as_module(self):
        """The eager model itself on the CPU-facing side: float32 in, float32 on the CPU out (any size)."""
        torch, model, device, dtype = self.torch, self.model, self.device, self.dtype

        class EagerModule(torch.nn.Module):
            """Eager for any size: a compiled fn is specialised to the benchmark shape."""

            def forward(self, y: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return model(y.to(device, dtype)).float().cpu()

        return EagerModule()

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

        self.sess = ort_session(onnx_path, threads=threads, providers=ort_providers(device))
        self.inp, self.out = INPUT_NAME, OUTPUT_NAME
        self.device, self.precision, self.threads = device, precision, threads
        self.x = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)

    def step(self) -> Step:
        # on CUDA, ORT's run() is H2D + compute + D2H in one call: only the end-to-end time is seen from here
        t0 = time.perf_counter()
        self.sess.run([self.out], {self.inp: self.x})
        ms = (time.perf_counter() - t0) * 1e3
        return Step(ms, None, ms if self.device == "cpu" else None, None)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.out], {self.inp: np.ascontiguousarray(x, dtype=np.float32)})[0]


def ort_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for `device` (a UserError when CUDA is asked for but not built in)."""
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError("--device cuda: onnxruntime has no CUDAExecutionProvider; "
                        "pip install onnxruntime-gpu or use --device cpu")  # fmt: skip
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class TensorRTBackend(Backend):
    """A TensorRT engine with the pycuda runtime: H2D, compute and D2H of one inference by CUDA events."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path, shape, cuda_graph: bool = False) -> None:
        from trt.runtime import TrtRunner

        self.runner = TrtRunner(engine_path, tuple(shape), cuda_graph=cuda_graph)
        self.precision = self.runner.meta["precision"]
        self.runner.h_in[...] = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)
        self.events = [self.runner.cuda.Event() for _ in range(4)]

    def step(self) -> Step:
        r, ev = self.runner, self.events
        t0 = time.perf_counter()
        ev[0].record(r.stream)
        r.cuda.memcpy_htod_async(r.d_in, r.h_in, r.stream)
        ev[1].record(r.stream)
        r._execute()  # the runner's one launch (plain or CUDA graph)
        ev[2].record(r.stream)
        r.cuda.memcpy_dtoh_async(r.h_out, r.d_out, r.stream)
        ev[3].record(r.stream)
        ev[3].synchronize()
        e2e = (time.perf_counter() - t0) * 1e3
        return Step(e2e, ev[1].time_since(ev[0]), ev[2].time_since(ev[1]), ev[3].time_since(ev[2]))

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run(x)

    def peak_memory_mb(self) -> float | None:
        return self.runner.device_memory_mb()

    def close(self) -> None:
        self.runner.close()


@dataclass(frozen=True)
class BackendSpec:
    """How to run a model: backend, fixed LR input shape (N, 1, h, w), precision, device, CPU threads."""

    backend: str
    shape: tuple[int, int, int, int]
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    cuda_graph: bool = False

    def with_batch(self, batch: int) -> BackendSpec:
        n, c, h, w = self.shape
        return BackendSpec(self.backend, (batch, c, h, w), self.precision, self.device, self.threads,
                           self.cuda_graph)  # fmt: skip


@dataclass(frozen=True)
class PreparedModel:
    """A model ready for its backend: a checkpoint dir (torch), an .onnx, or an engine; its TrainConfig as a dict.

    Made once in the parent (`prepare_model`: exports / builds into the work folder), opened in every worker
    process (`open_prepared`), so fresh processes time the same files.
    """

    role: str
    label: str  # what the user named
    kind: str  # 'checkpoint' | 'onnx' | 'engine'
    path: str
    config: dict
    onnx: str | None = None  # the ONNX graph behind an engine, for the per-layer profile's grouping

    def cfg(self):
        return config_from_dict(self.config, f"{self.label} (config)")


def prepare_model(source, spec: BackendSpec, workdir: Path, role: str, max_batch: int = 1) -> PreparedModel:
    """`source` (trt.sources.Source) as the file `spec.backend` runs: export to ONNX / build an engine if needed."""
    if spec.backend not in BACKENDS:
        raise UserError(f"--backend: '{spec.backend}' is not one of {', '.join(BACKENDS)}")
    if spec.backend in ("torch", "torch-compile"):
        if source.kind != "checkpoint":
            raise UserError(f"--{role}: '{source.label}' is an {source.kind} file; the {spec.backend} backend needs "
                            "a checkpoint or an MLflow run id (or use --backend onnxruntime/tensorrt)")  # fmt: skip
        from fgdsr.checkpoint import load_model

        _, cfg, _ = load_model(source.path)
        return PreparedModel(role, source.label, "checkpoint", str(source.path), cfg.to_dict())
    if spec.backend == "onnxruntime":
        onnx_path, meta = _as_onnx(source, spec.precision, workdir, role)
        return PreparedModel(
            role, source.label, "onnx", str(onnx_path), meta.get("config", {}), str(onnx_path)
        )
    return _as_engine(source, spec, workdir, role, max_batch)


def _as_engine(source, spec: BackendSpec, workdir: Path, role: str, max_batch: int) -> PreparedModel:
    from trt.engine import build_engine, read_engine_meta

    if source.kind == "engine":
        meta = read_engine_meta(source.path)
        return PreparedModel(role, source.label, "engine", str(source.path), meta.get("config", {}),
                             meta.get("onnx"))  # fmt: skip
    from trt.shapes import Profile

    onnx_path, _ = _as_onnx(source, spec.precision, workdir, role)
    engine_path = Path(workdir) / f"{role}.engine"
    n, _, h, w = spec.shape
    # a profile around the benchmark shape, large enough for the evaluation images and the throughput batch
    profile = Profile((1, 1, 8, 8), tuple(spec.shape), (max(n, max_batch), 1, max(h, 640), max(w, 640)))
    meta = build_engine(onnx_path, engine_path, profile, timing_cache=Path(workdir) / "timing.cache")
    return PreparedModel(
        role, source.label, "engine", str(engine_path), meta.get("config", {}), str(onnx_path)
    )


def open_prepared(model: PreparedModel, spec: BackendSpec) -> Backend:
    """Open a prepared model on its backend at `spec.shape`."""
    if spec.backend in ("torch", "torch-compile"):
        from fgdsr.checkpoint import load_model

        net, _, _ = load_model(model.path)
        return TorchBackend(
            net, spec.shape, spec.device, spec.precision, compile=spec.backend == "torch-compile"
        )
    if spec.backend == "onnxruntime":
        from trt.sidecar import read_sidecar

        precision = read_sidecar(model.path, "onnx")["precision"]
        return OrtBackend(model.path, spec.shape, spec.device, spec.threads, precision)
    return TensorRTBackend(model.path, spec.shape, cuda_graph=spec.cuda_graph)


def _as_onnx(source, precision: str, workdir: Path, role: str) -> tuple[Path, dict[str, Any]]:
    """The .onnx for `source`: the file itself (its sidecar's precision must match) or a fresh export."""
    from trt.sidecar import read_sidecar

    if source.kind == "engine":
        raise UserError(
            f"--{role}: '{source.label}' is a TensorRT engine; it runs on --backend tensorrt only"
        )
    if source.kind == "onnx":
        meta = read_sidecar(source.path, "onnx")
        if meta.get("io", "y") != "y":  # the benchmark feeds a Y plane (N, 1, h, w); an --rgb graph takes RGB
            raise UserError(f"--{role}: '{source.label}' is an image-in/image-out (--rgb) export; benchmark the Y "
                            "graph: fgdsr export without --rgb")  # fmt: skip
        if meta["precision"] != precision:
            raise UserError(f"--precision {precision}: '{source.label}' was exported as {meta['precision']}; "
                            f"pass --precision {meta['precision']} or re-export")  # fmt: skip
        return source.path, meta
    from trt.export import export_source

    out = Path(workdir) / f"{role}-{precision}.onnx"
    return out, export_source(source, out, precision=precision)

"""A TensorRT engine run with pycuda (no torch in a deployment image), kept thin.

Page-locked host buffers, device buffers, one stream, `set_input_shape` + `set_tensor_address` +
`execute_async_v3`; CUDA events time the GPU compute alone, host wall-clock times the end-to-end path
(pinned host -> device, compute, device -> host). Optional CUDA-graph capture of the compute.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fgdsr.errors import UserError
from trt.engine import INSTALL_HINT, load_engine


class TrtRunner:
    """One engine, one execution context, fixed input shape `(N, 1, h, w)` float32 -> `(N, 1, H, W)` float32."""

    def __init__(self, path: str | Path, shape: tuple[int, int, int, int], cuda_graph: bool = False) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise UserError(f"pycuda is not installed; {INSTALL_HINT}") from None
        from trt.shapes import Profile

        self.cuda = cuda
        cuda.init()
        self.ctx = cuda.Device(0).retain_primary_context()
        self.ctx.push()
        self.engine, self.meta = load_engine(path)
        profile = Profile.from_dict(self.meta["profile"])
        if not profile.contains(tuple(shape)):
            raise UserError(f"{path}: input shape {tuple(shape)} is outside the engine's profile "
                            f"{profile.min}..{profile.max}; rebuild with --min/--max covering it")  # fmt: skip
        self.profile = profile
        self.context = self.engine.create_execution_context()
        self.in_name, self.out_name = self.meta["input_names"][0], self.meta["output_names"][0]
        self.shape: tuple[int, ...] = ()
        self._configure(tuple(shape))
        self.stream = cuda.Stream()
        self.start, self.stop = cuda.Event(), cuda.Event()
        self.graph_exec = None
        # One plain run first: TensorRT does shape-dependent setup there, which must not be captured.
        self._execute()
        self.stream.synchronize()
        if cuda_graph:
            self.graph_exec = self._capture()

    def _configure(self, shape: tuple[int, ...]) -> None:
        """Set the input shape and (re)allocate pinned host and device buffers for it."""
        cuda = self.cuda
        self.context.set_input_shape(self.in_name, shape)
        out_shape = tuple(self.context.get_tensor_shape(self.out_name))
        self.h_in = cuda.pagelocked_empty(shape, np.float32)
        self.h_out = cuda.pagelocked_empty(out_shape, np.float32)
        self.d_in = cuda.mem_alloc(self.h_in.nbytes)
        self.d_out = cuda.mem_alloc(self.h_out.nbytes)
        self.context.set_tensor_address(self.in_name, int(self.d_in))
        self.context.set_tensor_address(self.out_name, int(self.d_out))
        self.shape = shape

    def _execute(self) -> None:
        if self.graph_exec is not None:
            self.graph_exec.launch(self.stream)
        elif not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _capture(self):
        """Capture one execution as a CUDA graph (pycuda >= 2021.1); None (plain launches) if unsupported."""
        try:
            self.stream.begin_capture()
            self.context.execute_async_v3(self.stream.handle)
            graph = self.stream.end_capture()
            return graph.instantiate()
        except (AttributeError, self.cuda.Error):
            return None

    def run(self, x: np.ndarray) -> np.ndarray:
        """x (N, 1, h, w) float32 in [0, 1] -> SR (N, 1, H, W) float32 (a copy); any shape in the profile."""
        if tuple(x.shape) != self.shape:
            if not self.profile.contains(tuple(x.shape)):
                raise UserError(f"engine: input {tuple(x.shape)} is outside its profile "
                                f"{self.profile.min}..{self.profile.max}; rebuild with a larger --max")  # fmt: skip
            self.graph_exec = None  # a captured graph holds the old shape and addresses
            self._configure(tuple(x.shape))
        np.copyto(self.h_in, x, casting="same_kind")
        self.cuda.memcpy_htod_async(self.d_in, self.h_in, self.stream)
        self._execute()
        self.cuda.memcpy_dtoh_async(self.h_out, self.d_out, self.stream)
        self.stream.synchronize()
        return np.array(self.h_out)

    def time_compute(self) -> float:
        """Milliseconds of one execution on the GPU alone (CUDA events around the launch)."""
        self.start.record(self.stream)
        self._execute()
        self.stop.record(self.stream)
        self.stop.synchronize()
        return self.stop.time_since(self.start)

    def time_end_to_end(self) -> float:
        """Milliseconds of pinned H2D copy + execution + D2H copy, host wall clock."""
        t0 = time.perf_counter()
        self.cuda.memcpy_htod_async(self.d_in, self.h_in, self.stream)
        self._execute()
        self.cuda.memcpy_dtoh_async(self.h_out, self.d_out, self.stream)
        self.stream.synchronize()
        return (time.perf_counter() - t0) * 1e3

    def device_memory_mb(self) -> float:
        """Activation memory of the context plus the I/O buffers, MiB (weights are in the engine)."""
        size = getattr(self.engine, "device_memory_size_v2", None) or self.engine.device_memory_size
        return (size + self.h_in.nbytes + self.h_out.nbytes) / 2**20

    def close(self) -> None:
        self.ctx.pop()

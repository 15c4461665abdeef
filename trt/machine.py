"""The one description of the machine a measurement ran on (benchmark, pipeline report, BENCHMARKS.md rows)."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Machine:
    """Where and when: CPU model, cores, load average (1/5/15 min), OS, library versions, GPU (None: no GPU)."""

    host: str
    cpu: str
    cores: int
    load: tuple[float, float, float] | None
    os: str
    python: str
    torch: str | None
    onnxruntime: str | None
    tensorrt: str | None
    gpu: str | None
    date: str  # UTC, 'YYYY-MM-DD HH:MM UTC'

    def line(self) -> str:
        """One line for a report: 'host (CPU, N cores, load 1.2/1.0/0.9, GPU X), torch ..., date'."""
        load = "/".join(f"{v:.1f}" for v in self.load) if self.load else "?"
        libs = ", ".join(f"{k} {v}" for k, v in (("torch", self.torch), ("onnxruntime", self.onnxruntime),
                                                 ("tensorrt", self.tensorrt)) if v)  # fmt: skip
        gpu = f", GPU {self.gpu}" if self.gpu else ", no GPU"
        return f"{self.host} ({self.cpu}, {self.cores} cores, load {load}{gpu}), {libs}; {self.date}"

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    """The module's __version__ if it imports (torch/onnxruntime are imported only if already loaded or cheap)."""
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe_machine(device: str = "cpu") -> Machine:
    """The machine now; `device` 'cuda...' adds the GPU name (torch's view of device 0)."""
    try:
        load = tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        load = None
    return Machine(host=platform.node(), cpu=_cpu_model() or platform.machine(), cores=os.cpu_count() or 1,
                   load=load, os=platform.platform(), python=platform.python_version(), torch=_version("torch"),
                   onnxruntime=_version("onnxruntime"), tensorrt=_version("tensorrt"), gpu=_gpu_name(device),
                   date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))  # fmt: skip

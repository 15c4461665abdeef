"""Training precision: `cfg.precision` (auto | fp32 | bf16 | fp16) -> what this device can run, and why.

    choose_precision("auto", DeviceCaps("cuda", "NVIDIA GeForce RTX 2080 Ti", (7, 5)))
    -> PrecisionChoice("fp16", ..., "auto: ... sm_75 has no bf16 -> fp16 with a gradient scaler")

auto: bf16 autocast on GPUs with native bf16 (NVIDIA Ampere and later, compute capability >= 8.0); fp16 autocast
with a gradient scaler on Volta / Turing (7.x: fp16 tensor cores, no bf16; the user's 2080 Ti is sm_75); fp32
elsewhere (CPU, MPS, older GPUs). An explicit value the device cannot run is a one-line UserError: bf16 on a GPU
without native bf16 (torch would emulate it, slowly, and `torch.cuda.is_bf16_supported()` says True anyway, so
the compute capability decides), fp16 without a GPU (Accelerate would silently run fp32 on CPU). bf16 on CPU is
allowed (autocast bf16 is native there).

`choose_precision` is a pure function of (requested, DeviceCaps), unit-tested on given capabilities;
`device_caps(device)` reads them from torch. Accelerate gets `PrecisionChoice.accelerate` ("no", "bf16", "fp16").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fgdsr.errors import UserError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Old checkpoints' config.json (fgdsr <= 0.x) stored `mixed_precision: no | bf16 | fp16` (Accelerate's names).
LEGACY_MIXED_PRECISION = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
BF16_MIN_CAPABILITY = (8, 0)  # Ampere
FP16_MIN_CAPABILITY = (7, 0)  # Volta: fp16 tensor cores


@dataclass(frozen=True)
class DeviceCaps:
    """What the precision choice needs to know of a device. capability: CUDA (major, minor), else None."""

    type: str  # "cpu", "cuda", "mps", ...
    name: str = ""
    capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved precision: name (fp32 | bf16 | fp16), Accelerate's name, gradient scaler, one-line reason."""

    name: str
    accelerate: str  # Accelerator(mixed_precision=...): "no" | "bf16" | "fp16"
    grad_scaler: bool  # fp16 on a GPU: Accelerate scales the loss (torch.amp.GradScaler)
    reason: str


def _gpu(caps: DeviceCaps) -> str:
    cc = f"sm_{caps.capability[0]}{caps.capability[1]}" if caps.capability else "unknown capability"
    return f"{caps.name or caps.type} ({cc})"


def _make(name: str, reason: str) -> PrecisionChoice:
    return PrecisionChoice(name, "no" if name == "fp32" else name, name == "fp16", reason)


def choose_precision(requested: str, caps: DeviceCaps) -> PrecisionChoice:
    """Resolve `requested` (one of PRECISIONS) for a device; a value it cannot run is a one-line UserError."""
    if requested not in PRECISIONS:
        raise UserError(f"config field 'precision': unknown '{requested}' ({', '.join(PRECISIONS)})")
    cuda = caps.type == "cuda"
    cap = caps.capability or (0, 0)
    if requested == "auto":
        if cuda and cap >= BF16_MIN_CAPABILITY:
            return _make("bf16", f"auto: {_gpu(caps)} has native bf16")
        if cuda and cap >= FP16_MIN_CAPABILITY:
            return _make("fp16", f"auto: {_gpu(caps)} has no bf16 -> fp16 with a gradient scaler")
        if cuda:
            return _make("fp32", f"auto: {_gpu(caps)} has no fast fp16 or bf16 -> fp32")
        return _make("fp32", f"auto: {caps.type} -> fp32")
    if requested == "bf16" and cuda and cap < BF16_MIN_CAPABILITY:
        raise UserError(
            f"config field 'precision': bf16 needs an Ampere or newer GPU (sm_80+), {_gpu(caps)} has none; "
            "use precision: auto (fp16 with a gradient scaler here) or fp32"
        )
    if requested == "fp16" and caps.type not in ("cuda", "mps"):
        raise UserError(
            f"config field 'precision': fp16 needs a GPU, this run is on {caps.type}; use auto, fp32 or bf16"
        )
    return _make(requested, f"{requested} as configured on {_gpu(caps) if cuda else caps.type}")


def device_caps(device: torch.device) -> DeviceCaps:
    """The DeviceCaps of a torch device (reads the CUDA compute capability)."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DeviceCaps(
            "cuda", torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))
        )
    return DeviceCaps(device.type)


def from_accelerate(mixed_precision: str) -> str:
    """Accelerate's mixed_precision ("no", "bf16", "fp16", "fp8") -> this module's name (for a passed-in Accelerator)."""
    return LEGACY_MIXED_PRECISION.get(mixed_precision, mixed_precision)

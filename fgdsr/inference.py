"""Upscalers: `LR RGB (h, w, 3) -> SR RGB uint8 (h*s, w*s, 3)`, the unit `evaluate` and `upscale` work with.

An upscaler accepts the LR as uint8 (0..255) or as float in [0, 1] (the protocol's LR, made from the HR
by the MATLAB bicubic and not rounded; small overshoot outside [0, 1] possible). Use `lr_to_tensor` in
new upscalers (ONNX, TensorRT) so both forms are handled the same way.

- `BicubicUpscaler(scale)`: MATLAB bicubic on RGB, rounded to uint8 (the Bicubic rows of the tables).
- `ModelUpscaler(model, scale, device)`: a Y-channel network `(N, 1, h, w) -> (N, 1, h*s, w*s)` in [0, 1].
  LR RGB -> YCbCr (MATLAB BT.601, double formula), Y through the network, CbCr by the MATLAB bicubic,
  back to RGB, round/clip to uint8. Grayscale images (3 equal channels) take the same path: Cb = Cr =
  128/255 stay constant, so the output's 3 channels stay equal.
- `RunnerUpscaler(runner, scale)`: the same with the Y network behind a `fgdsr.upscale.TileRunner` (numpy
  float32 `(N, 1, h, w)` in and out): an ONNX Runtime session or a TensorRT engine (`trt/tile_runner.py`), so
  `fgdsr evaluate --onnx/--engine` differs from `--checkpoint` only by what the runtime computes.
- `RgbRunnerUpscaler(runner, scale)`: a whole-image RGB graph (`fgdsr export --rgb`): LR RGB float32
  `(N, 3, h, w)` in [0, 1] -> SR RGB `(N, 3, H, W)` in [0, 1], rounded (half up) to uint8.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from fgdsr.data.color import rgb2ycbcr, to_uint8, ycbcr2rgb
from fgdsr.data.imresize import imresize


class Upscaler(Protocol):
    scale: int

    def __call__(self, lr: np.ndarray) -> np.ndarray: ...


def lr_to_tensor(lr: np.ndarray, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """LR (h, w, 3) uint8 or float [0, 1] -> (1, 3, h, w) tensor in [0, 1]."""
    a = np.asarray(lr)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"upscaler: expected an (h, w, 3) LR image, got {a.shape}")
    if a.dtype == np.uint8:
        t = torch.from_numpy(a.astype(np.float64) / 255.0)
    elif np.issubdtype(a.dtype, np.floating):
        t = torch.from_numpy(a.astype(np.float64))
    else:
        raise ValueError(f"upscaler: LR must be uint8 or float in [0, 1], got {a.dtype}")
    return t.permute(2, 0, 1)[None].to(device=device, dtype=dtype)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, MATLAB rounding (half up) and clipping."""
    a = x[0].permute(1, 2, 0).detach().to("cpu", torch.float64).numpy()
    return to_uint8(a * 255.0)


class BicubicUpscaler:
    """MATLAB bicubic x`scale` of the RGB LR, in float64 on the CPU (exact), rounded to uint8."""

    def __init__(self, scale: int) -> None:
        self.scale = int(scale)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = lr_to_tensor(lr, dtype=torch.float64) * 255.0
        sr = imresize(x, scale=self.scale)[0]
        sr = sr.add_(0.5).floor_().clamp_(0.0, 255.0).to(torch.uint8)  # MATLAB's uint8(): round half up, clip
        return sr.permute(1, 2, 0).contiguous().numpy()


class ModelUpscaler:
    """A Y-channel SR network as an upscaler; CbCr by bicubic. `model(x)`: (N, 1, h, w) -> (N, 1, h*s, w*s)."""

    def __init__(self, model: torch.nn.Module, scale: int, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.scale = int(scale)
        self.device = torch.device(device)
        try:
            self.dtype = next(model.parameters()).dtype
        except StopIteration:
            self.dtype = torch.float32

    @torch.inference_mode()
    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return upscale_y(lambda y: self.model(y.to(self.device, self.dtype)), lr, self.scale)


def upscale_y(y_fn, lr: np.ndarray, scale: int) -> np.ndarray:
    """LR RGB -> SR RGB uint8 with `y_fn` ((1, 1, h, w) float64 CPU tensor -> (1, 1, h*s, w*s) tensor) on Y."""
    h, w = np.asarray(lr).shape[:2]
    ycc = rgb2ycbcr(lr_to_tensor(lr, dtype=torch.float64))  # colour maths in float64 on the CPU
    y_sr = y_fn(ycc[:, :1])
    if tuple(y_sr.shape) != (1, 1, h * scale, w * scale):
        raise ValueError(
            f"model output {tuple(y_sr.shape)} is not (1, 1, {h * scale}, {w * scale}) for a "
            f"{h}x{w} input at scale {scale}"
        )
    cbcr = imresize(ycc[:, 1:], scale=scale)
    sr = ycbcr2rgb(torch.cat([y_sr.to("cpu", torch.float64), cbcr], dim=1))
    return tensor_to_uint8(sr)


class RunnerUpscaler:
    """A Y network behind a TileRunner (numpy float32 (N, 1, h, w) -> (N, 1, h*s, w*s)) as an upscaler."""

    def __init__(self, runner, scale: int) -> None:
        self.runner, self.scale = runner, int(scale)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        def y_fn(y: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.runner(y.float().numpy()))  # float32 in, as a torch model sees it

        return upscale_y(y_fn, lr, self.scale)


class RgbRunnerUpscaler:
    """An RGB graph (N, 3, h, w) float32 [0, 1] -> (N, 3, h*s, w*s) [0, 1] as an upscaler (round half up)."""

    def __init__(self, runner, scale: int) -> None:
        self.runner, self.scale = runner, int(scale)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = lr_to_tensor(lr, dtype=torch.float32).numpy()
        return tensor_to_uint8(torch.from_numpy(self.runner(x)))

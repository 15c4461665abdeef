"""The evaluation protocol of the published SR tables, verified on Set5 and Set14 (docs/BENCHMARKS.md).

    HR uint8 -> modcrop(scale) -> LR = imresize(HR as double, 1/scale), kept as float (not rounded)
    -> SR = method(LR) -> uint8 (round, clip) -> Y of MATLAB's uint8 `rgb2ycbcr` (rounded)
    -> shave `scale` px per side -> PSNR (peak 255), SSIM (11x11 Gaussian, sigma 1.5, valid region).

Single-channel source files (Set14 'bridge') take the gray value itself as Y, as the MATLAB scripts do
(`rgb2ycbcr` is only applied to 3-channel images); that reproduces the published Set14 Bicubic row.
The variants (LR rounded to uint8, MATLAB's per-pass rounding, unrounded Y) stay available as options
and are compared in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
import torch

from fgdsr.data.color import T, rgb2y_uint8, to_uint8
from fgdsr.data.imresize import imresize, modcrop
from fgdsr.metrics.psnr import psnr
from fgdsr.metrics.ssim import ssim


def y_channel(rgb_u8: np.ndarray, gray: bool = False, rounded: bool = True) -> np.ndarray:
    """Protocol Y of an (H, W, 3) uint8 image as float64 (H, W) in 0..255.

    gray: the source file had one channel -> Y is that channel (no BT.601 studio-swing scaling).
    rounded: MATLAB uint8 `rgb2ycbcr` (default); False keeps the unrounded double Y.
    """
    if rgb_u8.dtype != np.uint8 or rgb_u8.ndim != 3 or rgb_u8.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb_u8.shape} {rgb_u8.dtype}")
    if gray:
        return rgb_u8[..., 0].astype(np.float64)
    if rounded:
        return rgb2y_uint8(rgb_u8).astype(np.float64)
    return 16.0 + (rgb_u8.astype(np.float64) @ T[0]) / 255.0


def make_lr(hr_u8: np.ndarray, scale: int, lr_uint8: bool = False, round_passes: bool = False) -> np.ndarray:
    """LR of a modcropped HR (H, W, 3) uint8: (H/s, W/s, 3) float64 in about [0, 1] (default) or uint8.

    The float LR is not clipped: bicubic overshoot (a few 1/255 at edges) stays, as in MATLAB on doubles.

    lr_uint8: round+clip the LR to uint8 (what MATLAB returns for a uint8 input);
    round_passes: additionally round after each axis pass, exactly like MATLAB's imresize on uint8.
    """
    h, w = hr_u8.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"make_lr: HR {h}x{w} is not modcropped to scale {scale}")
    x = torch.from_numpy(hr_u8.astype(np.float64)).permute(2, 0, 1)[None]
    lr = imresize(x, scale=1.0 / scale, round_passes=round_passes)[0].permute(1, 2, 0).numpy()
    if lr_uint8 or round_passes:
        return to_uint8(lr)
    return lr / 255.0


def evaluate_pair(
    sr_rgb_u8: np.ndarray, hr_rgb_u8: np.ndarray, scale: int, gray: bool = False, y_rounded: bool = True
) -> tuple[float, float]:
    """(PSNR dB, SSIM) of SR vs HR, both (H, W, 3) uint8 of equal size (HR modcropped), shave = scale."""
    if sr_rgb_u8.shape != hr_rgb_u8.shape:
        raise ValueError(f"SR {sr_rgb_u8.shape} and HR {hr_rgb_u8.shape} differ in size")
    sy = y_channel(sr_rgb_u8, gray, y_rounded)
    hy = y_channel(hr_rgb_u8, gray, y_rounded)
    return psnr(sy, hy, shave=scale), ssim(sy, hy, shave=scale)


def bicubic_row(hr_u8: np.ndarray, scale: int, gray: bool = False, **lr_options) -> tuple[float, float]:
    """The Bicubic baseline of one HR image (H, W, 3) uint8 (modcropped here): (PSNR, SSIM)."""
    hr = modcrop(hr_u8, scale)
    lr = make_lr(hr, scale, **lr_options)
    lr255 = lr.astype(np.float64) * (255.0 if lr.dtype != np.uint8 else 1.0)
    x = torch.from_numpy(np.ascontiguousarray(lr255)).permute(2, 0, 1)[None]
    sr = to_uint8(imresize(x, scale=scale)[0].permute(1, 2, 0).numpy())
    return evaluate_pair(sr, hr, scale, gray=gray)

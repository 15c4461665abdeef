"""SSIM (Wang et al. 2004, `ssim_index.m`): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
'valid' filtering (no padding), mean of the SSIM map; on single-channel 0..255 images."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fgdsr.metrics.psnr import shave_border


@lru_cache(maxsize=4)
def gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian; `fspecial('gaussian', size, sigma)` is its outer product with itself."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _shift_filter(x: torch.Tensor, g: np.ndarray) -> torch.Tensor:
    """Separable 'valid' correlation of x (..., H, W) with g (K,) along H then W, as K shifted adds per
    axis (float64 conv2d on the CPU is ~20x slower than this for an 11-tap kernel)."""
    k = len(g)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    acc = x[..., 0:h, :] * float(g[0])
    for i in range(1, k):
        acc.add_(x[..., i : i + h, :], alpha=float(g[i]))
    out = acc[..., 0:w] * float(g[0])
    for i in range(1, k):
        out.add_(acc[..., i : i + w], alpha=float(g[i]))
    return out


def _filter_valid(x: torch.Tensor, g: np.ndarray, rows: int = 32) -> torch.Tensor:
    """`_shift_filter` in blocks of `rows` output rows: the shifted adds then stay in the CPU cache
    (measured ~35% faster on 500x500 images than one pass over the whole array)."""
    k = len(g)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    if h <= 2 * rows:
        return _shift_filter(x, g)
    out = x.new_empty(x.shape[:-2] + (h, w))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        out[..., r0:r1, :] = _shift_filter(x[..., r0 : r1 + k - 1, :], g)
    return out


def ssim(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    shave: int = 0,
    peak: float = 255.0,
    k1: float = 0.01,
    k2: float = 0.03,
    win: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean SSIM of two (H, W) images with values 0..`peak`, computed in float64 on the valid region."""
    if tuple(a.shape) != tuple(b.shape) or len(a.shape) != 2:
        raise ValueError(f"ssim: expected two equal (H, W) images, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(a, np.ndarray):
        a = shave_border(a, shave)
        b = shave_border(np.asarray(b), shave)
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
        y = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))
    else:
        s = slice(shave, -shave) if shave > 0 else slice(None)
        x, y = a[s, s].double(), b[s, s].double()
    if min(x.shape) < win:
        raise ValueError(f"ssim: image {tuple(x.shape)} smaller than the {win}x{win} window")
    g = gaussian_1d(win, sigma)
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    # SSIM needs sigma_x^2 + sigma_y^2 only as a sum, so x^2 + y^2 is filtered once: 4 maps, not 5
    stack = torch.stack([x, y, x * x + y * y, x * y])
    mu_x, mu_y, sq, xy = _filter_valid(stack, g)
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_sum, s_xy = sq - mu_x2 - mu_y2, xy - mu_xy
    m = ((2 * mu_xy + c1) * (2 * s_xy + c2)) / ((mu_x2 + mu_y2 + c1) * (s_sum + c2))
    return float(m.mean())

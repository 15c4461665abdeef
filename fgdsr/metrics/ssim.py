"""SSIM (Wang et al. 2004, `ssim_index.m`): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
'valid' filtering (no padding), mean of the SSIM map; on single-channel 0..255 images."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from fgdsr.metrics.psnr import shave_border


@lru_cache(maxsize=4)
def gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian; `fspecial('gaussian', size, sigma)` is its outer product with itself."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' correlation of x (N, 1, H, W) with g (K,) along H then W."""
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1))
    return F.conv2d(x, g.view(1, 1, 1, k))


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
    g = torch.as_tensor(gaussian_1d(win, sigma), dtype=torch.float64, device=x.device)
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    stack = torch.stack([x, y, x * x, y * y, x * y])[:, None]  # (5, 1, H, W): one conv call for all moments
    mu_x, mu_y, xx, yy, xy = _filter_valid(stack, g)[:, 0]
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_x, s_y, s_xy = xx - mu_x2, yy - mu_y2, xy - mu_xy
    m = ((2 * mu_xy + c1) * (2 * s_xy + c2)) / ((mu_x2 + mu_y2 + c1) * (s_x + s_y + c2))
    return float(m.mean())

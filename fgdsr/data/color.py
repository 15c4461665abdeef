"""MATLAB-compatible BT.601 colour conversion (`rgb2ycbcr` / `ycbcr2rgb`), torch and uint8 NumPy versions.

MATLAB's definition, RGB in [0, 1] (studio swing: Y in [16, 235] / 255, Cb/Cr in [16, 240] / 255):

    Y  =  16/255 + ( 65.481 R + 128.553 G +  24.966 B) / 255
    Cb = 128/255 + (-37.797 R -  74.203 G + 112.000 B) / 255
    Cr = 128/255 + (112.000 R -  93.786 G -  18.214 B) / 255

For uint8 input MATLAB computes the same in double on 0..255 values and rounds half away from zero; that
rounded Y is what the literature's PSNR/SSIM tables are computed on (`rgb2y_uint8`).
"""

from __future__ import annotations

import numpy as np
import torch

# Rows: Y, Cb, Cr; columns: R, G, B (MATLAB's T). Offsets in 0..255 units.
T = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
)
OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
T_INV = np.linalg.inv(T)


def _mix(x: torch.Tensor, mat: np.ndarray, bias: np.ndarray) -> torch.Tensor:
    """out[:, i] = bias[i] + sum_j mat[i, j] * x[:, j] for x (N, 3, H, W)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {tuple(x.shape)}")
    m = torch.as_tensor(mat, dtype=x.dtype, device=x.device)
    b = torch.as_tensor(bias, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,njhw->nihw", m, x) + b.view(1, 3, 1, 1)


def rgb2ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) float in [0, 1] -> YCbCr (N, 3, H, W) in [0, 1] (MATLAB double convention)."""
    return _mix(x, T / 255.0, OFFSET / 255.0)


def rgb2y(x: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) float in [0, 1] -> Y (N, 1, H, W) in [16/255, 235/255] (not rounded)."""
    w = torch.as_tensor(T[0] / 255.0, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True) + OFFSET[0] / 255.0


def ycbcr2rgb(x: torch.Tensor) -> torch.Tensor:
    """YCbCr (N, 3, H, W) in [0, 1] -> RGB (N, 3, H, W) in about [0, 1] (not clipped)."""
    # rgb = 255 * T^-1 (ycbcr - offset/255)
    return _mix(x, T_INV * 255.0, -(T_INV @ OFFSET))


def round_half_up(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """MATLAB's round for non-negative values: half away from zero (numpy/torch round half to even)."""
    if isinstance(x, torch.Tensor):
        return torch.floor(x + 0.5)
    return np.floor(x + 0.5)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float 0..255 -> uint8 the MATLAB way (round half up, clip)."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def rgb2y_uint8(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> Y uint8 (H, W), MATLAB `rgb2ycbcr` on uint8 (rounded).

    A 2-D uint8 input is taken as grayscale (R = G = B).
    """
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb2y_uint8 expects uint8, got {rgb.dtype}")
    a = rgb.astype(np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    y = OFFSET[0] + (a @ T[0]) / 255.0
    return to_uint8(y)


def rgb2ycbcr_uint8(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> YCbCr uint8 (H, W, 3), MATLAB `rgb2ycbcr` on uint8 (rounded)."""
    a = rgb.astype(np.float64)
    return to_uint8(OFFSET + (a @ T.T) / 255.0)


def ycbcr2rgb_uint8(ycbcr: np.ndarray) -> np.ndarray:
    """YCbCr uint8 (H, W, 3) -> RGB uint8 (H, W, 3), MATLAB `ycbcr2rgb` on uint8 (rounded, clipped)."""
    a = ycbcr.astype(np.float64)
    return to_uint8(((a - OFFSET) @ T_INV.T) * 255.0)

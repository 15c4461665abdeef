"""PSNR the literature's way: on 0..255 images (peak 255), after shaving `shave` pixels on each side."""

from __future__ import annotations

import math

import numpy as np


def shave_border(img: np.ndarray, shave: int) -> np.ndarray:
    """Drop `shave` pixels on each side of an (H, W[, C]) array."""
    if shave <= 0:
        return img
    if img.shape[0] <= 2 * shave or img.shape[1] <= 2 * shave:
        raise ValueError(f"image {img.shape[:2]} too small to shave {shave} px per side")
    return img[shave:-shave, shave:-shave, ...]


def psnr(a: np.ndarray, b: np.ndarray, shave: int = 0, peak: float = 255.0) -> float:
    """PSNR in dB between two same-shape arrays of 0..`peak` values (uint8 or float), `inf` if identical."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    a = shave_border(np.asarray(a, dtype=np.float64), shave)
    b = shave_border(np.asarray(b, dtype=np.float64), shave)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)

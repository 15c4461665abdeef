"""Paired comparisons of two methods over test images × training seeds, with bootstrap intervals.

A difference between two SR methods measured on a few test images and a few training seeds has two sources
of noise: which images were tested and which seed trained the model. `paired_delta` takes the per-(seed,
image) PSNR of both methods (paired: same seed = same initialisation and data order, same image), and
resamples seeds and images independently (a crossed, two-way bootstrap), so both sources are inside its 95 %
interval. `entropy_slope` does the same for the paper's Fig. 1 claim: the slope of per-image ΔPSNR against the
HR image's entropy.

    d = paired_delta(psnr_fd, psnr_l1)      # arrays (seeds, images), same order
    d.mean, d.ci95, d.seeds, d.images
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000  # bootstrap resamples: the percentile interval's ends move by < 0.005 dB between runs


@dataclass(frozen=True)
class Delta:
    """A paired difference (dB): its mean over seeds × images and a 95 % percentile bootstrap interval."""

    mean: float
    ci95: tuple[float, float]
    seeds: int
    images: int

    @property
    def half_width(self) -> float:
        return (self.ci95[1] - self.ci95[0]) / 2

    def excludes_zero(self) -> bool:
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci95": [self.ci95[0], self.ci95[1]]}


def _matrix(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(
            f"paired scores must be two equal (seeds, images) arrays, got {a.shape} and {b.shape}"
        )
    return a - b


def _resample_indices(n_seeds: int, n_images: int, resamples: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_seeds, (resamples, n_seeds)), rng.integers(0, n_images, (resamples, n_images))


def paired_delta(a, b, resamples: int = RESAMPLES, seed: int = 0) -> Delta:
    """mean(a - b) over (seeds, images) with a crossed bootstrap 95 % interval (seeds and images resampled).

    a, b: (seeds, images) PSNR of the two methods, row s = training seed s, column i = test image i.
    """
    d = _matrix(a, b)
    n_s, n_i = d.shape
    si, ii = _resample_indices(n_s, n_i, resamples, seed)
    # mean over the resampled rows and columns: mean_s mean_i d[si, ii] = (row means over ii) averaged over si
    col = d[:, ii]  # (n_s, R, n_i)
    stats = col.mean(axis=2).T  # (R, n_s): each seed's mean over the resampled images
    stats = np.take_along_axis(stats, si, axis=1).mean(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Delta(float(d.mean()), (float(lo), float(hi)), n_s, n_i)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x (nan when x is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc = x - x.mean()
    den = float((xc * xc).sum())
    return float((xc * (y - y.mean())).sum() / den) if den > 0 else float("nan")


def entropy_slope(a, b, entropy, resamples: int = RESAMPLES, seed: int = 0) -> Delta:
    """Slope (dB per bit) of the per-image ΔPSNR (a - b, mean over seeds) against the HR entropy, with a
    crossed bootstrap 95 % interval (seeds and images resampled). The paper's Fig. 1: textured (high
    entropy) images are the hard ones; a loss that helps them most has a positive slope."""
    d = _matrix(a, b)
    e = np.asarray(entropy, dtype=np.float64)
    if e.shape != (d.shape[1],):
        raise ValueError(f"entropy: one value per image ({d.shape[1]}), got {e.shape}")
    n_s, n_i = d.shape
    si, ii = _resample_indices(n_s, n_i, resamples, seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        y = d[si[r]][:, ii[r]].mean(axis=0)
        stats[r] = slope(e[ii[r]], y)
    stats = stats[np.isfinite(stats)]
    lo, hi = np.percentile(stats, [2.5, 97.5]) if stats.size else (float("nan"), float("nan"))
    return Delta(slope(e, d.mean(axis=0)), (float(lo), float(hi)), n_s, n_i)

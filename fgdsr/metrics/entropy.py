"""Image entropy: Shannon entropy (bits) of the 256-bin histogram of a uint8 image (MATLAB `entropy`)."""

from __future__ import annotations

import numpy as np


def entropy(y: np.ndarray) -> float:
    """Entropy in bits (0..8) of a uint8 image (the paper's Fig. 1 axis uses the HR Y channel)."""
    if y.dtype != np.uint8:
        raise ValueError(f"entropy expects uint8, got {y.dtype}")
    counts = np.bincount(y.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / y.size
    return float(-(p * np.log2(p)).sum()) + 0.0

"""LapSRN's robust L1 (Charbonnier) loss."""

from __future__ import annotations

import torch
from torch import Tensor


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """mean(sqrt((pred - target)^2 + eps^2)) over all elements; eps = 0 is the plain mean |pred - target|.

    pred, target: same shape, images in [0, 1]; computed in float32 (safe under bf16/fp16 autocast).
    """
    diff = pred.float() - target.float()
    if eps == 0:
        return diff.abs().mean()  # sqrt(x^2) has an infinite gradient at 0: use abs
    return torch.sqrt(diff * diff + eps * eps).mean()

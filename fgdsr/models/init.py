"""Weight initialisation as the official codes do it, and optional weight normalisation.

LapSRN (phoenix104104/LapSRN, init_LapSRN.m): every 3x3 conv and the feature transposed conv draw from
N(0, sqrt(2 / (f·f·n))) with f = 3, n = 64 (the channel count, whatever `channels` is here); the input conv
from N(0, opts.init_sigma = 0.001); all biases zero; the image-branch transposed conv is a fixed 4x4 bilinear
kernel (`bilinear_u(4, 1, 1)`). The std values are standard deviations (MATLAB `sigma * randn`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LAPSRN_INPUT_STD = 1e-3  # init_opts.m: opts.init_sigma


def bilinear_kernel(size: int) -> torch.Tensor:
    """(size, size) bilinear interpolation kernel, as MatConvNet's `bilinear_u(size, 1, 1)`.

    For size 4 the 1D taps are [0.25, 0.75, 0.75, 0.25]: with stride 2 and crop 1 it doubles a signal exactly
    (linear interpolation at half-pixel offsets).
    """
    factor = (size + 1) // 2
    center = factor if size % 2 == 1 else factor + 0.5  # 1-based, as in the MATLAB code
    taps = 1.0 - torch.abs(torch.arange(1, size + 1, dtype=torch.float64) - center) / factor
    return torch.outer(taps, taps).float()


@torch.no_grad()
def init_lapsrn_(model: nn.Module) -> None:
    """Official LapSRN initialisation, in place (uses torch's global RNG: seed it for reproducibility)."""
    std = math.sqrt(2.0 / (9 * model.channels))
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            if name.endswith("img_up"):
                m.weight.copy_(bilinear_kernel(m.kernel_size[0]).expand_as(m.weight))
            elif name == "input_conv":
                m.weight.normal_(0.0, LAPSRN_INPUT_STD)
            else:
                m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()


@torch.no_grad()
def init_srcnn_(model: nn.Module) -> None:
    """SRCNN (Dong et al. 2014): N(0, 0.001) weights, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.normal_(0.0, 1e-3)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def init_vdsr_(model: nn.Module) -> None:
    """VDSR (Kim et al. 2016): He (MSRA) initialisation for ReLU, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def apply_weight_norm_(model: nn.Module) -> None:
    """Weight normalisation (Salimans & Kingma 2016) on every conv and transposed conv, in place.

    Applied after the initialisation: g starts at ||v|| so the effective weights are unchanged. The norm runs
    per output channel: dim 0 for Conv2d (out, in, kh, kw), dim 1 for ConvTranspose2d (in, out, kh, kw).
    """
    from torch.nn.utils.parametrizations import weight_norm

    for m in list(model.modules()):
        if isinstance(m, nn.ConvTranspose2d):
            weight_norm(m, name="weight", dim=1)
        elif isinstance(m, nn.Conv2d):
            weight_norm(m, name="weight", dim=0)


def remove_weight_norm_(model: nn.Module) -> None:
    """Fold weight normalisation back into plain weights (what deployment and counting want), in place."""
    from torch.nn.utils import parametrize

    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)

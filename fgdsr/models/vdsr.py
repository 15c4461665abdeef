"""VDSR (Kim, Lee, Lee, CVPR 2016): 20 3x3 conv layers of 64 channels with ReLU, learning the residual.

A reference model for the complexity table (664,704 kernel weights, 665,921 params). Same contract as
LapSRN: LR (N, 1, h, w) in [0, 1] -> SR (N, 1, h·s, w·s); the bicubic (MATLAB) upsampling is inside `forward`
and the network adds its residual to it.
"""

from __future__ import annotations

import torch
from torch import nn

from fgdsr.models.init import apply_weight_norm_, init_vdsr_
from fgdsr.models.srcnn import bicubic_upsample


class VDSR(nn.Module):
    """VDSR: conv 1->C, (layers − 2) x conv C->C, conv C->1 (all 3x3, ReLU between), + the bicubic input."""

    def __init__(
        self, scale: int = 4, channels: int = 64, layers: int = 20, weight_norm: bool = False
    ) -> None:
        super().__init__()
        self.scale = scale
        self.channels = channels
        self.feature_channels = channels
        self.num_levels = 1
        body: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.tail = nn.Conv2d(channels, 1, 3, padding=1)
        init_vdsr_(self)
        if weight_norm:
            apply_weight_norm_(self)

    def forward_pyramid(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x (N,1,h,w) -> ([SR (N,1,H,W)], [features (N,C,H,W)]): one 'level', as LapSRN's contract."""
        up = bicubic_upsample(x, self.scale)
        feat = self.body(up)
        return [up + self.tail(feat)], [feat]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,h,w) in [0,1] -> (N,1,h·s,w·s)."""
        return self.forward_pyramid(x)[0][-1]

    def finalize(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Identity (kept for the same interface as LapSRN)."""
        return y

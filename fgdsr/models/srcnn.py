"""SRCNN (Dong, Loy, He, Tang, ECCV 2014 / TPAMI 2016), the 9-5-5 variant with 64/32 filters.

A reference model for the complexity table (57,184 kernel weights, 57,281 params). It works on a bicubic
(MATLAB) upsampled Y image; here the upsampling is part of `forward`, so that the model has the same
contract as LapSRN: LR (N, 1, h, w) in [0, 1] -> SR (N, 1, h·s, w·s). Convs are zero-padded to keep the size
(the original trains on valid convs; padding changes nothing but the borders).
"""

from __future__ import annotations

import torch
from torch import nn

from fgdsr.models.init import apply_weight_norm_, init_srcnn_


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(N,1,h,w) -> (N,1,h·s,w·s) with MATLAB's bicubic (the SRCNN/VDSR input)."""
    from fgdsr.data.imresize import imresize

    h, w = x.shape[-2:]
    return imresize(x, size=(h * scale, w * scale))


class SRCNN(nn.Module):
    """SRCNN 9-5-5: conv 9x9 1->64, ReLU, conv 5x5 64->32, ReLU, conv 5x5 32->1, on the bicubic input."""

    def __init__(self, scale: int = 4, channels: int = 64, weight_norm: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.channels = channels
        self.feature_channels = channels // 2  # the 32-channel map before the last conv
        self.num_levels = 1
        self.conv1 = nn.Conv2d(1, channels, 9, padding=4)
        self.conv2 = nn.Conv2d(channels, channels // 2, 5, padding=2)
        self.conv3 = nn.Conv2d(channels // 2, 1, 5, padding=2)
        self.relu = nn.ReLU()
        init_srcnn_(self)
        if weight_norm:
            apply_weight_norm_(self)

    def forward_pyramid(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x (N,1,h,w) -> ([SR (N,1,H,W)], [features (N,32,H,W)]): one 'level', as LapSRN's contract."""
        feat = self.relu(self.conv2(self.relu(self.conv1(bicubic_upsample(x, self.scale)))))
        return [self.conv3(feat)], [feat]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,h,w) in [0,1] -> (N,1,h·s,w·s)."""
        return self.forward_pyramid(x)[0][-1]

    def finalize(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Identity (kept for the same interface as LapSRN)."""
        return y

"""An image-in, image-out graph for `fgdsr export --rgb`: RGB (N, 3, h, w) in [0, 1] -> RGB (N, 3, h*s, w*s).

What `fgdsr upscale` does, as one torch module that exports to ONNX (so chaiNNer, VideoJaNai or five lines of
plain onnxruntime can run it): BT.601 YCbCr (MATLAB's matrix, fgdsr/data/color.py), the Y network on Y, MATLAB
bicubic on CbCr, back to RGB, clamped to [0, 1]. Colour maths run in float32 in the graph (fgdsr upscale uses
float64; the difference is far below one grey level).

An integer-scale MATLAB bicubic upsampling is a fixed separable filter: output pixel s*i + p (phase p) is a
weighted sum of the input pixels i + k, k in [lo, hi], with the same weights for every i, and the image border
is symmetric padding (edge pixel repeated: MATLAB's `[1..n, n..1]` mirror). `bicubic_taps` reads those weights
from the project's own imresize tables (fgdsr.data.imresize.weight_matrix) at an interior position, so the
graph computes exactly what imresize computes (tests/test_rgb_export.py checks it against imresize).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fgdsr.data.color import OFFSET, T_INV, T
from fgdsr.data.imresize import weight_matrix


@lru_cache(maxsize=16)
def bicubic_taps(scale: int) -> tuple[int, int, np.ndarray]:
    """MATLAB bicubic x`scale` upsampling as a polyphase filter: (lo, hi, weights (scale, hi - lo + 1) float64).

    out[s*i + p] = sum_k weights[p, k] * in[i + lo + k] for k = 0 .. hi - lo, `in` symmetric-padded.
    """
    if int(scale) != scale or scale < 2:
        raise ValueError(f"bicubic_taps: integer scale >= 2 expected, got {scale}")
    scale = int(scale)
    n, i0 = 32, 16  # an interior input pixel: its output rows see no border
    m = weight_matrix(n, n * scale, float(scale))
    rows = m[i0 * scale : (i0 + 1) * scale]  # the `scale` phases of input pixel i0
    cols = np.flatnonzero(np.any(rows != 0, axis=0))
    lo, hi = int(cols[0]) - i0, int(cols[-1]) - i0
    return lo, hi, rows[:, cols[0] : cols[-1] + 1].copy()


def _symmetric_pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Pad `x` along `dim` by mirroring with the edge repeated (x[-1] = x[0], x[-2] = x[1]; MATLAB's)."""
    parts = [x.narrow(dim, k, 1) for k in reversed(range(before))]
    parts.append(x)
    n = x.shape[dim]
    parts += [x.narrow(dim, n - 1 - k, 1) for k in range(after)]
    return torch.cat(parts, dim=dim)


class BicubicUp(nn.Module):
    """MATLAB bicubic x`scale` of (N, C, h, w) -> (N, C, h*s, w*s) as two polyphase convolutions (H, then W)."""

    def __init__(self, scale: int, channels: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        lo, hi, w = bicubic_taps(scale)
        self.scale, self.channels, self.lo, self.hi = int(scale), int(channels), lo, hi
        taps = torch.tensor(w, dtype=dtype)  # (s, K)
        # one group per channel, `scale` output maps (the phases) per group
        self.register_buffer("w_h", taps.repeat(channels, 1)[:, None, :, None].contiguous(), persistent=False)
        self.register_buffer("w_w", taps.repeat(channels, 1)[:, None, None, :].contiguous(), persistent=False)

    def _axis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.scale
        x = _symmetric_pad(x, dim, -self.lo, self.hi)
        if dim == 2:
            y = F.conv2d(x, self.w_h, groups=c)  # (N, C*s, h, w): phase p of row i at channel c*s + p
            return y.reshape(n, c, s, h, w).permute(0, 1, 3, 2, 4).reshape(n, c, h * s, w)
        y = F.conv2d(x, self.w_w, groups=c)
        return y.reshape(n, c, s, h, w).permute(0, 1, 3, 4, 2).reshape(n, c, h, w * s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._axis(self._axis(x, 2), 3)  # MATLAB: rows first when both scales are equal


class RgbSR(nn.Module):
    """RGB (N, 3, h, w) in [0, 1] -> RGB (N, 3, h*s, w*s) in [0, 1]; `y_model` maps (N, 1, h, w) Y -> (N, 1, H, W)."""

    def __init__(self, y_model: nn.Module, scale: int) -> None:
        super().__init__()
        self.y_model = y_model
        self.up = BicubicUp(scale, 2)
        f = torch.float32
        self.register_buffer("to_ycc", torch.tensor(T / 255.0, dtype=f)[:, :, None, None], persistent=False)
        self.register_buffer("ycc_bias", torch.tensor(OFFSET / 255.0, dtype=f), persistent=False)
        self.register_buffer(
            "to_rgb", torch.tensor(T_INV * 255.0, dtype=f)[:, :, None, None], persistent=False
        )
        self.register_buffer("rgb_bias", torch.tensor(-(T_INV @ OFFSET), dtype=f), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        ycc = F.conv2d(rgb, self.to_ycc, self.ycc_bias)
        y = self.y_model(ycc[:, :1])
        cbcr = self.up(ycc[:, 1:])
        return F.conv2d(torch.cat([y, cbcr], dim=1), self.to_rgb, self.rgb_bias).clamp(0.0, 1.0)
